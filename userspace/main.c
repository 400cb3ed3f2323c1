// SPDX-License-Identifier: MIT
/*
 * sluiced: the daemon of sluice. It loads the kernel programs (or adopts the ones a previous
 * sluiced pinned), takes over the sandboxes of its state directory, and serves the control
 * API until SIGTERM. Enforcement lives in the kernel: killing sluiced, even with SIGKILL,
 * leaves every sandbox exactly as enforced as it was; only `sluice sandbox rm` or
 * `sluiced --purge` take it away.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernel/bpf_loader.h"
#include "control/control.h"
#include "dns/dns.h"
#include "store/envfile.h"
#include "proxy/proxy.h"
#include "core/events.h"
#include "store/kv.h"
#include "lua/lua_host.h"
#include "core/log.h"
#include "core/loop.h"
#include "sandbox/sandbox.h"

#define SLUICE_VERSION "0.1.0"
#define TRIM_MS 10000
#define TRIM_FREE_BYTES (16u << 20)
#define MAX_WORKERS 64

struct opts {
	const char *socket;
	const char *state_dir;
	const char *bpffs_dir;
	const char *log;
	int foreground;
	int purge;
	int verbose;
	unsigned event_limit;
	const char *dns_upstream;
	struct sl_dns_ttl ttl;
	const char *upstream_ca;
	const char *env_file; /* absolute: the daemon chdirs to / when it detaches */
	unsigned http_header_s, http_idle_s, http_max_conns, http_connect_s;
	unsigned http_max_conns_total;
	unsigned long long http_body_budget;
	unsigned max_rules, max_sandboxes; /* kernel map capacity (sl_bpf_opts) */
	unsigned workers; /* --workers: 1..MAX_WORKERS */
	long own_listeners; /* --own-listeners: -1 until given or sized (size_fd_limit()) */
};

/*
 * A worker: a thread with its own loop, DNS service (its upstream socket, its queries in
 * flight, its cache) and proxy (its connections, upstream pool, share of the connection
 * limit). The sandboxes placed on it (sandbox.h) run there whole; the main thread (control
 * API, registry, kernel events, jobs completions, the sweep's schedule) reaches them only by
 * posting to its loop (core/loop.h).
 */
struct worker {
	unsigned index;
	struct sl_loop *loop;
	struct sl_dns *dns;
	struct sl_proxy *proxy;
	pthread_t thread;
	int started;
	struct sl_task stop;
};

struct daemon {
	struct opts o;
	struct sl_loop *loop;
	struct sl_bpf *bpf;
	struct sl_registry *reg;
	struct sl_events *events;
	struct worker *workers;
	unsigned nworkers;
	unsigned conns_total; /* intercepted connections of all workers (atomic, px_int.h) */
	struct sl_control *ctl;
	/* The secrets of --env-file (NULL without one) and the KV store (STATE_DIR/kv/): the
	 * Lua host reads both, as a handler's `env.KEY` and `env.NS:get(key)`; the control API
	 * writes the KV store (sl_control_deps.kv). Both live as long as the daemon. */
	struct sl_env *env;
	struct sl_kv *kv;
	int sigfd;
	int lockfd;
	struct sl_timer trim; /* the periodic malloc_trim look */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: sluiced [OPTIONS]\n"
		"\n"
		"The sluice daemon: enforces each sandbox's egress policy in the kernel and serves\n"
		"the control API used by the `sluice` command.\n"
		"\n"
		"Options:\n"
		"  --socket PATH       control socket (default /run/sluice/sluiced.sock)\n"
		"  --state-dir DIR     sandboxes and their policies (default /var/lib/sluice)\n"
		"  --bpffs-dir DIR     where programs, maps and links are pinned\n"
		"                      (default /sys/fs/bpf/sluice)\n"
		"  --log FILE|-        log file (default: stderr in the foreground,\n"
		"                      STATE_DIR/sluiced.log otherwise)\n"
		"  --foreground        do not detach\n"
		"  --event-limit N     deny events per sandbox per CPU per second (default 100)\n"
		"  --dns-upstream IP[:PORT]\n"
		"                      resolver for the names policies allow (default: the first\n"
		"                      nameserver of /etc/resolv.conf)\n"
		"  --dns-min-ttl S     a resolved address stays in the kernel at least S seconds\n"
		"                      (default 3600, or --dns-max-ttl if lower), refreshed by\n"
		"                      every lookup; the reply's TTL is not raised ...\n"
		"  --dns-max-ttl S     ... at most S seconds; answers' TTLs are capped to it\n"
		"                      (default 3600) ...\n"
		"  --dns-grace S       ... plus S seconds for connections made as it expires\n"
		"                      (default 30)\n"
		"  --test-time-scale K tests only: resolved addresses live 1/K of their time\n"
		"                      (default 1), so that an hour can be tested in a minute\n"
		"  --upstream-ca FILE  trust anchors (PEM) for intercepted upstreams (default: the\n"
		"                      system trust store)\n"
		"  --env-file FILE     secrets for the policies' handlers (env.KEY): KEY=VALUE\n"
		"                      lines; the file must be mode 0600 (or stricter), owned by\n"
		"                      root or the daemon's user\n"
		"  --http-header-timeout S  an intercepted request head must arrive within S\n"
		"                      seconds (default 10; slowloris guard)\n"
		"  --http-idle-timeout S    an intercepted connection moving nothing for S seconds\n"
		"                      is closed (default 60)\n"
		"  --http-connect-timeout S  upstream connect and TLS handshake (default 10)\n"
		"  --http-max-conns N  intercepted connections per sandbox (default 256)\n"
		"  --http-max-conns-total N  intercepted connections of all sandboxes together\n"
		"                      (default 16384; lowered to what the file descriptor limit\n"
		"                      allows)\n"
		"  --workers N         threads that run the sandboxes' DNS, proxy and handlers,\n"
		"                      1..64 (default: the CPUs sluiced may run on); each sandbox\n"
		"                      runs on one, so one busy sandbox uses at most one core\n"
		"  --http-body-budget BYTES  bodies a sandbox's handlers hold whole (req:text(),\n"
		"                      resp:text()), all its connections together (default\n"
		"                      67108864, 64 MiB; K, M, G suffixes); past it: 413/502\n"
		"  --max-rules N       entries of each kernel rule map (IPv4, IPv6), all sandboxes\n"
		"                      together: a prefix or resolved address of one rule layer\n"
		"                      is one entry (default 1048576; see README, Capacity)\n"
		"  --max-sandboxes N   sandboxes at most, plus one (default 16384); sizes the\n"
		"                      per-sandbox kernel maps\n"
		"  --own-listeners N   sandboxes (in sluiced's network namespace) that get DNS and\n"
		"                      proxy listeners of their own, 6 descriptors each; those\n"
		"                      added past N share their worker's (default: every one if\n"
		"                      the file descriptor limit allows, else a quarter of the\n"
		"                      limit's worth; see README, Capacity)\n"
		"  --purge             on shutdown, remove every sandbox and all pinned state\n"
		"                      (default: enforcement stays in the kernel)\n"
		"  -v, --verbose       debug logging\n"
		"  -h, --help          this text\n"
		"  --version           print the version\n"
		"\n"
		"Two daemons with different --socket, --state-dir and --bpffs-dir run side by side.\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum {
		O_SOCKET = 256,
		O_STATE,
		O_BPFFS,
		O_LOG,
		O_FG,
		O_PURGE,
		O_EVLIMIT,
		O_VERSION,
		O_DNS_UP,
		O_DNS_MIN,
		O_DNS_MAX,
		O_DNS_GRACE,
		O_TEST_TIME_SCALE,
		O_UPSTREAM_CA,
		O_HTTP_HEADER,
		O_HTTP_IDLE,
		O_HTTP_CONNS,
		O_HTTP_CONNECT,
		O_ENV_FILE,
		O_HTTP_CONNS_TOTAL,
		O_HTTP_BODY_BUDGET,
		O_MAX_RULES,
		O_MAX_SANDBOXES,
		O_WORKERS,
		O_OWN_LISTENERS,
	};
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "bpffs-dir", required_argument, NULL, O_BPFFS },
		{ "log", required_argument, NULL, O_LOG },
		{ "foreground", no_argument, NULL, O_FG },
		{ "purge", no_argument, NULL, O_PURGE },
		{ "event-limit", required_argument, NULL, O_EVLIMIT },
		{ "dns-upstream", required_argument, NULL, O_DNS_UP },
		{ "dns-min-ttl", required_argument, NULL, O_DNS_MIN },
		{ "dns-max-ttl", required_argument, NULL, O_DNS_MAX },
		{ "dns-grace", required_argument, NULL, O_DNS_GRACE },
		{ "test-time-scale", required_argument, NULL, O_TEST_TIME_SCALE },
		{ "upstream-ca", required_argument, NULL, O_UPSTREAM_CA },
		{ "http-header-timeout", required_argument, NULL, O_HTTP_HEADER },
		{ "http-idle-timeout", required_argument, NULL, O_HTTP_IDLE },
		{ "http-max-conns", required_argument, NULL, O_HTTP_CONNS },
		{ "http-connect-timeout", required_argument, NULL, O_HTTP_CONNECT },
		{ "http-max-conns-total", required_argument, NULL, O_HTTP_CONNS_TOTAL },
		{ "http-body-budget", required_argument, NULL, O_HTTP_BODY_BUDGET },
		{ "env-file", required_argument, NULL, O_ENV_FILE },
		{ "max-rules", required_argument, NULL, O_MAX_RULES },
		{ "max-sandboxes", required_argument, NULL, O_MAX_SANDBOXES },
		{ "workers", required_argument, NULL, O_WORKERS },
		{ "own-listeners", required_argument, NULL, O_OWN_LISTENERS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ 0 },
	};
	int c;

	o->socket = "/run/sluice/sluiced.sock";
	o->state_dir = "/var/lib/sluice";
	o->bpffs_dir = "/sys/fs/bpf/sluice";
	o->event_limit = 100;
	o->own_listeners = -1;
	/* min_s: UINT32_MAX until parsed, then SL_DNS_MIN_LIFE_S unless above max_s (below) */
	o->ttl = (struct sl_dns_ttl){
		.min_s = UINT32_MAX, .max_s = 3600, .grace_s = 30, .time_scale = 1
	};
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case O_SOCKET:
			o->socket = optarg;
			break;
		case O_STATE:
			o->state_dir = optarg;
			break;
		case O_BPFFS:
			o->bpffs_dir = optarg;
			break;
		case O_LOG:
			o->log = optarg;
			break;
		case O_FG:
			o->foreground = 1;
			break;
		case O_PURGE:
			o->purge = 1;
			break;
		case O_EVLIMIT: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || v > 1000000) {
				fprintf(stderr, "sluiced: --event-limit wants 0..1000000\n");
				return 2;
			}
			o->event_limit = (unsigned)v;
			break;
		}
		case O_DNS_UP:
			o->dns_upstream = optarg;
			break;
		case O_MAX_RULES:
		case O_MAX_SANDBOXES: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);
			/* Bounds: an LPM trie takes up to 2^24 - 1 entries (BPF_MAP_LPM_TRIE's own
			 * limit is memory; this keeps a typo from asking for it all). */
			unsigned long lo = c == O_MAX_RULES ? 16 : 2,
				      hi = c == O_MAX_RULES ? 16777215 : 1048576;

			if (*end || !*optarg || optarg[0] == '-' || v < lo || v > hi) {
				fprintf(stderr, "sluiced: --%s wants %lu..%lu\n",
					c == O_MAX_RULES ? "max-rules" : "max-sandboxes", lo, hi);
				return 2;
			}
			if (c == O_MAX_RULES)
				o->max_rules = (unsigned)v;
			else
				o->max_sandboxes = (unsigned)v;
			break;
		}
		case O_WORKERS: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || optarg[0] == '-' || v < 1 || v > MAX_WORKERS) {
				fprintf(stderr, "sluiced: --workers wants 1..%d (threads)\n",
					MAX_WORKERS);
				return 2;
			}
			o->workers = (unsigned)v;
			break;
		}
		case O_OWN_LISTENERS: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || optarg[0] == '-' || v > 1048576) {
				fprintf(stderr, "sluiced: --own-listeners wants 0..1048576\n");
				return 2;
			}
			o->own_listeners = (long)v;
			break;
		}
		case O_HTTP_CONNS_TOTAL: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || v == 0 || v > 1000000) {
				fprintf(stderr,
					"sluiced: --http-max-conns-total wants 1..1000000\n");
				return 2;
			}
			o->http_max_conns_total = v;
			break;
		}
		case O_HTTP_BODY_BUDGET: {
			char *end;
			unsigned long long v = strtoull(optarg, &end, 10);

			if (*end == 'K' || *end == 'k')
				v <<= 10, end++;
			else if (*end == 'M' || *end == 'm')
				v <<= 20, end++;
			else if (*end == 'G' || *end == 'g')
				v <<= 30, end++;
			if (*end || !*optarg || optarg[0] == '-' || v < 65536 ||
			    v > (64ull << 30)) {
				fprintf(stderr,
					"sluiced: --http-body-budget wants 64K..64G bytes\n");
				return 2;
			}
			o->http_body_budget = v;
			break;
		}
		case O_HTTP_HEADER:
		case O_HTTP_IDLE:
		case O_HTTP_CONNECT:
		case O_HTTP_CONNS: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || v == 0 || v > 86400) {
				fprintf(stderr, "sluiced: %s wants 1..86400\n",
					c == O_HTTP_HEADER  ? "--http-header-timeout" :
					c == O_HTTP_IDLE    ? "--http-idle-timeout" :
					c == O_HTTP_CONNECT ? "--http-connect-timeout" :
							      "--http-max-conns");
				return 2;
			}
			if (c == O_HTTP_HEADER)
				o->http_header_s = v;
			else if (c == O_HTTP_IDLE)
				o->http_idle_s = v;
			else if (c == O_HTTP_CONNECT)
				o->http_connect_s = v;
			else
				o->http_max_conns = v;
			break;
		}
		case O_UPSTREAM_CA:
			if (access(optarg, R_OK)) {
				fprintf(stderr, "sluiced: --upstream-ca %s: %s\n", optarg,
					strerror(errno));
				return 2;
			}
			o->upstream_ca = optarg;
			break;
		case O_ENV_FILE: {
			char cwd[PATH_MAX], *abs;

			/* Read in start(), after the log is open, so that a bad file is reported
			 * like any other startup failure. */
			if (!*optarg) {
				fprintf(stderr, "sluiced: --env-file wants a file\n");
				return 2;
			}
			if (optarg[0] == '/') {
				o->env_file = optarg;
				break;
			}
			if (!getcwd(cwd, sizeof(cwd)) ||
			    asprintf(&abs, "%s/%s", cwd, optarg) == -1) {
				fprintf(stderr, "sluiced: --env-file %s: %s\n", optarg,
					strerror(errno));
				return 2;
			}
			o->env_file = abs;
			break;
		}
		case O_DNS_MIN:
		case O_DNS_MAX:
		case O_DNS_GRACE:
		case O_TEST_TIME_SCALE: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (*end || !*optarg || v > 86400 * 7 ||
			    (c == O_TEST_TIME_SCALE && (v < 1 || v > 3600))) {
				fprintf(stderr, "sluiced: %s wants %s\n",
					c == O_DNS_MIN	 ? "--dns-min-ttl" :
					c == O_DNS_MAX	 ? "--dns-max-ttl" :
					c == O_DNS_GRACE ? "--dns-grace" :
							   "--test-time-scale",
					c == O_TEST_TIME_SCALE ? "a factor (1..3600)" :
								 "seconds (0..604800)");
				return 2;
			}
			if (c == O_DNS_MIN)
				o->ttl.min_s = v;
			else if (c == O_TEST_TIME_SCALE)
				o->ttl.time_scale = v;
			else if (c == O_DNS_MAX)
				o->ttl.max_s = v;
			else
				o->ttl.grace_s = v;
			break;
		}
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case O_VERSION:
			printf("sluiced %s\n", SLUICE_VERSION);
			exit(0);
		default:
			fprintf(stderr, "Try 'sluiced --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\nTry 'sluiced --help'.\n",
			argv[optind]);
		return 2;
	}
	if (o->dns_upstream) {
		struct sl_dns_opts probe = { 0 };

		if (sl_dns_parse_upstream(o->dns_upstream, &probe)) {
			fprintf(stderr,
				"sluiced: --dns-upstream wants IP, IP:PORT or [IPv6]:PORT\n");
			return 2;
		}
	}
	if (!o->workers) {
		cpu_set_t cpus;
		int n = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;

		o->workers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
	}
	if (o->ttl.min_s == UINT32_MAX)
		o->ttl.min_s = o->ttl.max_s < SL_DNS_MIN_LIFE_S ? o->ttl.max_s : SL_DNS_MIN_LIFE_S;
	if (o->ttl.max_s < o->ttl.min_s || !o->ttl.max_s) {
		fprintf(stderr, "sluiced: --dns-max-ttl must be at least --dns-min-ttl and > 0\n");
		return 2;
	}
	if (o->bpffs_dir[0] != '/' || o->state_dir[0] != '/' || o->socket[0] != '/') {
		fprintf(stderr,
			"sluiced: --socket, --state-dir and --bpffs-dir must be absolute\n");
		return 2;
	}
	return 0;
}

static void on_kernel_event(const struct sl_event *kev, void *arg)
{
	struct daemon *d = arg;
	struct sl_box *box = kev->sandbox_id ? sl_sandbox_by_id(d->reg, kev->sandbox_id) : NULL;
	const char *name = box ? sl_box_name(box) : NULL;
	json_t *j = sl_event_json(kev, name);

	/* Audit mode is loud: the kernel's other events of such a sandbox (a raw socket
	 * refused, say) say so too. */
	if (j && box && sl_box_audit(box) && !json_object_get(j, "mode"))
		json_object_set_new(j, "mode", json_string("audit"));
	sl_events_publish(d->events, name, j);
}

static void events_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct daemon *d = arg;

	(void)loop;
	(void)fd;
	(void)events;
	sl_bpf_events_poll(d->bpf);
}

static void signal_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct signalfd_siginfo si;

	(void)arg;
	(void)events;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			sl_info("signal %d: shutting down", si.ssi_signo);
			sl_loop_stop(loop);
		}
	}
}

/*
 * File descriptors: every intercepted connection may hold two (client and upstream), every
 * sandbox up to eight (its DNS and proxy listeners over IPv4 and IPv6, a namespace), each
 * worker's upstream pool 1024, DNS queries in flight and DNS TCP clients their bounds (split
 * over the workers), the rest
 * (control API, log, maps) 1024. Raises
 * the limit to what --http-max-conns-total needs (root may raise the hard limit too), else
 * lowers the total to what the limit allows: the bound is met by a refusal at accept, never
 * by accept() or socket() failing.
 */
static void size_fd_limit(struct opts *o)
{
	rlim_t max_sb = o->max_sandboxes ? o->max_sandboxes : SL_MAX_SANDBOXES;
	/* The sandboxes' share is asked for in full, but when the limit cannot be raised it
	 * does not squeeze the connections below what 1,024 sandboxes leave them. */
	rlim_t reserve = 8 * (max_sb < 1024 ? max_sb : 1024) + (rlim_t)o->workers * 1024 +
			 SL_DNS_MAX_PENDING_TOTAL + SL_DNS_MAX_TCP_TOTAL + 1024,
	       want;
	int given = o->http_max_conns_total != 0;
	struct rlimit rl;

	if (!given)
		o->http_max_conns_total = SL_PROXY_MAX_CONNS_TOTAL;
	want = 2 * (rlim_t)o->http_max_conns_total + reserve +
	       8 * (max_sb - (max_sb < 1024 ? max_sb : 1024));
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < want) {
		struct rlimit up = { want, rl.rlim_max > want ? rl.rlim_max : want };

		if (setrlimit(RLIMIT_NOFILE, &up) == -1) {
			up.rlim_cur = up.rlim_max = rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &up) == -1)
				up = rl;
		}
		rl = up;
	}
	if (rl.rlim_cur < want && given) {
		/* As asked: past the descriptors, accept() fails and the connection is refused
		 * (the proxy keeps one descriptor for that), an upstream connect is a 502. */
		sl_warn("file descriptor limit %llu: --http-max-conns-total %u may need more",
			(unsigned long long)rl.rlim_cur, o->http_max_conns_total);
	} else if (rl.rlim_cur < want) {
		unsigned fit = rl.rlim_cur > reserve + 2 ? (unsigned)((rl.rlim_cur - reserve) / 2) :
							   1;

		sl_info("file descriptor limit %llu: --http-max-conns-total is %u (not %u)",
			(unsigned long long)rl.rlim_cur, fit, o->http_max_conns_total);
		o->http_max_conns_total = fit;
	}
	/* Listeners of its own keep a sandbox's floods in its own socket buffers and backlog;
	 * past what the limit holds, sandboxes share their worker's and hold one descriptor
	 * each (their sl_proxied map). */
	if (o->own_listeners < 0) {
		o->own_listeners = rl.rlim_cur >= 8 * max_sb + 2 * (rlim_t)o->http_max_conns_total ?
					   (long)max_sb :
					   (long)(rl.rlim_cur / 4 / 8);
		if (o->own_listeners < (long)max_sb)
			sl_info("file descriptor limit %llu: sandboxes past the first %ld share "
				"their worker's DNS and proxy listeners (--own-listeners; raise "
				"RLIMIT_NOFILE, LimitNOFILE= in the unit, for more)",
				(unsigned long long)rl.rlim_cur, o->own_listeners);
	}
	if (rl.rlim_cur <
	    max_sb + 6 * (rlim_t)o->own_listeners + 2 * (rlim_t)o->http_max_conns_total)
		sl_warn("file descriptor limit %llu: fewer than --max-sandboxes %llu sandboxes "
			"may fit (each holds a descriptor, one with listeners of its own 7, a "
			"network namespace one more): raise RLIMIT_NOFILE (LimitNOFILE= in the "
			"unit)",
			(unsigned long long)rl.rlim_cur, (unsigned long long)max_sb);
}

/*
 * Memory freed after a peak (10,000 connections closed, sandboxes removed) goes back to the
 * system: glibc gives back only the top of its heap by itself, and a heap that served many
 * connections is fragmented. Looked at every TRIM_MS, trimmed when much is free (a walk of
 * the free chunks: about a millisecond for a few hundred MiB).
 */
static void trim_cb(struct sl_loop *loop, struct sl_timer *t)
{
	struct mallinfo2 mi = mallinfo2();

	if (mi.fordblks > TRIM_FREE_BYTES) {
		uint64_t t0 = sl_now_ns();

		malloc_trim(0);
		sl_debug("malloc_trim: %zu MiB free, %llu us", mi.fordblks >> 20,
			 (unsigned long long)(sl_now_ns() - t0) / 1000);
	}
	sl_timer_arm(loop, t, TRIM_MS, trim_cb); /* cannot fail: it never stops */
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];
	int r;

	snprintf(name, sizeof(name), "sluiced-w%u", w->index);
	pthread_setname_np(pthread_self(), name);
	r = sl_loop_run(w->loop);
	if (r)
		sl_err("worker %u: event loop failed: %s", w->index, strerror(-r));
	return NULL;
}

static void worker_stop(struct sl_task *t)
{
	(void)t;
	sl_loop_stop(sl_loop_current());
}

/* Runs on this thread what is still posted between the loops (the workers' and the main
 * one), with the workers stopped, so that nothing posted is lost or left half done. */
static void drain_loops(struct daemon *d)
{
	int more = 1;

	while (more) {
		more = 0;
		for (unsigned i = 0; i < d->nworkers; i++)
			if (d->workers[i].loop)
				sl_loop_drain(d->workers[i].loop);
		if (d->loop) {
			sl_loop_drain(d->loop);
			for (unsigned i = 0; i < d->nworkers && !more; i++)
				more = d->workers[i].loop && sl_loop_has_posted(d->workers[i].loop);
		}
	}
}

/* Stops the workers (a posted stop: what was posted before it runs first), then ends the
 * switches still compiling on their jobs threads (cancelled: their completions run here). */
static void stop_workers(struct daemon *d)
{
	for (unsigned i = 0; i < d->nworkers; i++)
		if (d->workers[i].started)
			sl_loop_post(d->workers[i].loop, &d->workers[i].stop, worker_stop);
	for (unsigned i = 0; i < d->nworkers; i++) {
		if (d->workers[i].started)
			pthread_join(d->workers[i].thread, NULL);
		d->workers[i].started = 0;
	}
	drain_loops(d);
	if (d->reg)
		sl_registry_stop_worker_jobs(d->reg);
	drain_loops(d);
}

/* One daemon per state directory. */
static int take_lock(struct daemon *d, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/sluiced.lock", d->o.state_dir);
	d->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lockfd == -1) {
		snprintf(err, errlen, "opening %s failed: %s", path, strerror(errno));
		return -1;
	}
	if (flock(d->lockfd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(err, errlen, "another sluiced uses state directory %s", d->o.state_dir);
		return -1;
	}
	return 0;
}

static int start(struct daemon *d, char *err, size_t errlen)
{
	struct sl_bpf_opts bo = { .pin_dir = d->o.bpffs_dir,
				  .event_limit = d->o.event_limit,
				  .max_rules = d->o.max_rules,
				  .max_sandboxes = d->o.max_sandboxes };
	/* Cached answers live at most the grace: see struct dns_cached (dns/dns.c). */
	struct sl_dns_opts dopts = { .max_ttl_s = d->o.ttl.max_s,
				     .cache_ms = d->o.ttl.grace_s * 1000u /
						 (d->o.ttl.time_scale ? d->o.ttl.time_scale : 1) };
	struct sl_control_deps deps;
	sigset_t mask;
	int fd, n;

	if (mkdir(d->o.state_dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "creating %s failed: %s", d->o.state_dir, strerror(errno));
		return -1;
	}
	if (take_lock(d, err, errlen))
		return -1;
	size_fd_limit(&d->o);
	if (d->o.env_file) {
		d->env = sl_env_load(d->o.env_file, err, errlen);
		if (!d->env)
			return -1;
		n = (int)sl_env_count(d->env);
		sl_info("env file %s: %d variable%s", d->o.env_file, n, n == 1 ? "" : "s");
	}
	{
		char kvdir[PATH_MAX];

		snprintf(kvdir, sizeof(kvdir), "%s/kv", d->o.state_dir);
		d->kv = sl_kv_open(kvdir, err, errlen);
		if (!d->kv) {
			char why[512];

			snprintf(why, sizeof(why), "%s", err);
			snprintf(err, errlen, "KV store: %s", why);
			return -1;
		}
	}
	d->loop = sl_loop_new();
	d->events = sl_events_new(4096);
	if (!d->loop || !d->events) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sl_events_bind(d->events, d->loop);
	/* Each worker's DNS instance gets its share of the bounds. */
	dopts.max_pending_total = (SL_DNS_MAX_PENDING_TOTAL + d->o.workers - 1) / d->o.workers;
	dopts.max_tcp_total = (SL_DNS_MAX_TCP_TOTAL + d->o.workers - 1) / d->o.workers;
	if (d->o.dns_upstream)
		sl_dns_parse_upstream(d->o.dns_upstream, &dopts);
	else if (sl_dns_upstream_from_resolv("/etc/resolv.conf", &dopts))
		sl_warn("no nameserver in /etc/resolv.conf and no --dns-upstream: allowed names "
			"will not resolve");
	d->bpf = sl_bpf_open(&bo, err, errlen);
	if (!d->bpf)
		return -1;
	dopts.bpf = d->bpf; /* each worker's DNS writes its answers' kernel entries */
	d->workers = calloc(d->o.workers, sizeof(*d->workers));
	if (!d->workers) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	d->nworkers = d->o.workers;
	{
		struct sl_worker_env env[MAX_WORKERS];
		struct sl_proxy_opts po = {
			.upstream_ca = d->o.upstream_ca,
			.header_timeout_ms = d->o.http_header_s * 1000,
			.idle_timeout_ms = d->o.http_idle_s * 1000,
			.connect_timeout_ms = d->o.http_connect_s * 1000,
			.max_conns = d->o.http_max_conns,
			/* The limit of all sandboxes together: one count that every worker's
			 * proxy takes from atomically at accept. */
			.max_conns_total = d->o.http_max_conns_total,
			.conns_total = &d->conns_total,
			.body_budget = (size_t)d->o.http_body_budget,
		};

		for (unsigned i = 0; i < d->nworkers; i++) {
			struct worker *w = &d->workers[i];

			w->index = i;
			w->loop = sl_loop_new();
			w->dns = w->loop ? sl_dns_new(w->loop, d->events, &dopts) : NULL;
			if (!w->dns) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			w->proxy = sl_proxy_new(w->loop, d->events, d->bpf, &po, err, errlen);
			if (!w->proxy)
				return -1;
			env[i] = (struct sl_worker_env){ w->loop, w->dns, w->proxy };
		}
		d->reg = sl_registry_new(d->bpf, d->o.state_dir, d->loop, env, d->nworkers,
					 &d->o.ttl);
	}
	if (!d->reg) {
		snprintf(err, errlen, "state directory %s: %s", d->o.state_dir, strerror(errno));
		return -1;
	}
	sl_registry_set_lua(d->reg, &(struct sl_lua_opts){ .env = d->env,
							   .kv = d->kv,
							   .events = d->events,
							   .xchg = &sl_lua_px_ops });
	sl_registry_set_own_listeners(d->reg, (unsigned)d->o.own_listeners);
	if (sl_registry_set_control_socket(d->reg, d->o.socket, err, errlen))
		return -1;
	if (!sl_bpf_unix_confined(d->bpf))
		sl_warn("this kernel has no cgroup/connect_unix and sendmsg_unix hooks (Linux >= "
			"6.7): UNIX sockets of sandboxes are NOT confined (egress.unix has no "
			"effect; any socket file permissions allow is reachable)");
	n = sl_registry_adopt(d->reg);
	if (n)
		sl_info("adopted %d sandbox%s", n, n == 1 ? "" : "es");

	fd = sl_bpf_events_fd(d->bpf, on_kernel_event, d);
	if (fd < 0 || sl_loop_add_fd(d->loop, fd, SL_READ, events_cb, d)) {
		snprintf(err, errlen, "watching the event ring buffer failed");
		return -1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	d->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->sigfd == -1 || sl_loop_add_fd(d->loop, d->sigfd, SL_READ, signal_cb, d)) {
		snprintf(err, errlen, "signalfd failed: %s", strerror(errno));
		return -1;
	}
	/* After adoption (which opened the adopted sandboxes' listeners on the workers' loops
	 * from here) and with the signals blocked, which the threads inherit. */
	for (unsigned i = 0; i < d->nworkers; i++) {
		int e = pthread_create(&d->workers[i].thread, NULL, worker_main, &d->workers[i]);

		if (e) {
			snprintf(err, errlen, "starting worker %u failed: %s", i, strerror(e));
			return -1;
		}
		d->workers[i].started = 1;
	}
	deps = (struct sl_control_deps){
		.loop = d->loop,
		.reg = d->reg,
		.events = d->events,
		.bpf = d->bpf,
		.kv = d->kv,
	};
	d->ctl = sl_control_open(d->o.socket, &deps, err, errlen);
	if (!d->ctl)
		return -1;
	/* Events that were waiting in the ring buffer while no daemon ran. */
	sl_bpf_events_poll(d->bpf);
	sl_timer_arm(d->loop, &d->trim, TRIM_MS, trim_cb);
	return 0;
}

static void stop(struct daemon *d)
{
	sl_control_close(d->ctl);
	/* Adds compiling end now (cancelled), before the workers they would go to stop. */
	if (d->reg)
		sl_registry_stop_jobs(d->reg);
	stop_workers(d);
	if (d->o.purge && d->reg && d->bpf) {
		sl_registry_rm_all(d->reg);
		sl_bpf_purge(d->bpf);
		sl_info("purged: no sandbox is enforced any more");
	}
	sl_registry_free(d->reg);
	for (unsigned i = 0; d->workers && i < d->nworkers; i++) {
		sl_proxy_free(d->workers[i].proxy);
		sl_dns_free(d->workers[i].dns);
		sl_loop_free(d->workers[i].loop);
	}
	free(d->workers);
	sl_bpf_close(d->bpf);
	sl_events_free(d->events);
	if (d->loop)
		sl_timer_disarm(d->loop, &d->trim);
	sl_loop_free(d->loop);
	sl_kv_close(d->kv);
	sl_env_free(d->env);
	if (d->sigfd > 0)
		close(d->sigfd);
	if (d->lockfd > 0)
		close(d->lockfd);
}

/* Detaches; the parent exits only when the child is serving (0) or has failed (1), so that
 * `sluiced && sluice ...` never races the socket. Returns the pipe to report on in the child. */
static int daemonize(void)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) == -1)
		return -1;
	pid = fork();
	if (pid == -1)
		return -1;
	if (pid > 0) {
		char msg[600];
		ssize_t n;

		close(p[1]);
		n = read(p[0], msg, sizeof(msg) - 1);
		if (n > 0 && msg[0] == 0)
			exit(0);
		if (n > 0) {
			msg[n] = 0;
			fprintf(stderr, "sluiced: %s\n", msg);
		} else {
			fprintf(stderr, "sluiced: the daemon exited during startup\n");
		}
		exit(1);
	}
	close(p[0]);
	setsid();
	if (fork() > 0)
		_exit(0);
	{
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
	}
	if (chdir("/"))
		(void)0;
	return p[1];
}

int main(int argc, char **argv)
{
	struct daemon d = { .sigfd = -1, .lockfd = -1 };
	char err[512] = "";
	int report = -1, r;

	r = parse_opts(argc, argv, &d.o);
	if (r)
		return r;
	if (geteuid() != 0) {
		fprintf(stderr, "sluiced: must run as root (it loads BPF programs)\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!d.o.foreground) {
		char logpath[PATH_MAX + 16];

		if (!d.o.log) {
			mkdir(d.o.state_dir, 0700);
			snprintf(logpath, sizeof(logpath), "%s/sluiced.log", d.o.state_dir);
			d.o.log = strdup(logpath);
		}
		report = daemonize();
		if (report < 0) {
			fprintf(stderr, "sluiced: daemonizing failed: %s\n", strerror(errno));
			return 1;
		}
	}
	r = sl_log_open(d.o.log);
	if (r) {
		snprintf(err, sizeof(err), "log %s: %s", d.o.log, strerror(-r));
		goto fail;
	}
	if (d.o.verbose)
		sl_log_set_level(SL_LOG_DEBUG);
	if (start(&d, err, sizeof(err)))
		goto fail;
	sl_info("sluiced %s serving %s (state %s, pins %s)", SLUICE_VERSION, d.o.socket,
		d.o.state_dir, d.o.bpffs_dir);
	if (report >= 0) {
		char ok = 0;

		if (write(report, &ok, 1) != 1)
			(void)0;
		close(report);
	} else {
		/* Foreground: tell whoever waits on stdout that the socket is up. */
		printf("ready\n");
		fflush(stdout);
	}
	r = sl_loop_run(d.loop);
	if (r)
		sl_err("event loop failed: %s", strerror(-r));
	stop(&d);
	sl_info("sluiced stopped");
	return r ? 1 : 0;
fail:
	sl_err("%s", err);
	if (report >= 0) {
		if (write(report, err, strlen(err)) == -1)
			(void)0;
	} else if (d.o.log && strcmp(d.o.log, "-")) {
		fprintf(stderr, "sluiced: %s\n", err);
	}
	stop(&d);
	return 1;
}
