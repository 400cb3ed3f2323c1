// SPDX-License-Identifier: MIT
/*
 * sluice run: one command in a sandbox of its own, the one-line way to try sluice. It makes a
 * transient cgroup, registers it with sluiced under a policy, gives the command the sandbox's
 * CA through the variables TLS clients read (tools/cli/run_trust.c), runs it there (in a network
 * namespace if asked), never as root unless asked and always confined (tools/cli/confine.c: no
 * capabilities, no_new_privs, no inherited descriptors, a socket-family filter), passes its
 * exit status through, tells what the sandbox was denied (tools/cli/run_summary.c), and removes
 * the sandbox and the cgroup afterwards, also when the command is killed.
 *
 * A run holds an flock on its cgroup directory while it lives and marks the cgroup with an
 * xattr naming the daemon's socket. If sluice run itself is killed (SIGKILL leaves it no
 * chance to clean up), its command dies with it (PR_SET_PDEATHSIG), and the next sluice run
 * with the same parent and daemon finds the marked cgroup unlocked: it kills what is left
 * there and removes the sandbox and the cgroup.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "kernel/cgroup.h"
#include "cli.h"
#include "confine.h"

#define EXIT_USAGE 2
#define EXIT_SETUP 125 /* sluice run itself failed (docker run's convention) */
#define KILL_WAIT_MS 5000
#define RUN_XATTR "trusted.sluice.run" /* on a run's cgroup: the socket of its daemon */
#define RMDIR_DEPTH 8

static const char run_usage[] =
	"Usage: sluice run [--name NAME] --policy FILE [--handler H [--params JSON]]\n"
	"       sluice run --learn [-o OUT] [--policy FILE] [...] [--] CMD [ARG...]\n"
	"                  [--netns PATH] [--user USER] [--preserve-fds N]\n"
	"                  [--cgroup-parent PATH] [--quiet] [--] CMD [ARG...]\n"
	"\n"
	"Runs CMD in a sandbox of its own: a new cgroup PARENT/NAME under FILE's policy. CMD\n"
	"trusts the sandbox's CA as well as the system's: SSL_CERT_FILE, SSL_CERT_DIR,\n"
	"CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE, PIP_CERT, npm_config_cafile, GIT_SSL_CAINFO,\n"
	"AWS_CA_BUNDLE, CARGO_HTTP_CAINFO, DENO_CERT and BUNDLE_SSL_CA_CERT name a bundle of\n"
	"both, NODE_EXTRA_CA_CERTS the sandbox CA, and where Java is installed\n"
	"JAVA_TOOL_OPTIONS a PKCS12 truststore of both. When CMD ends, whatever it left running\n"
	"in the cgroup is killed, what the sandbox was denied is printed on stderr, and the\n"
	"sandbox and the cgroup are removed. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to\n"
	"sluice run go to CMD. Needs root.\n"
	"\n"
	"CMD never runs as root unless asked: under sudo it runs as the calling user (SUDO_UID,\n"
	"SUDO_GID and that user's groups); as plain root, --user is required. Always: no\n"
	"capabilities (bounding, ambient and inheritable sets empty), no_new_privs (setuid\n"
	"binaries do not raise it), descriptors above 2 closed, and a seccomp filter: socket()\n"
	"makes only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK sockets (others fail with\n"
	"EAFNOSUPPORT) and io_uring is refused (EPERM).\n"
	"\n"
	"  --name NAME           the sandbox's name (default run-PID)\n"
	"  --policy FILE         the Lua policy\n"
	"  --handler H           make outboundHandlers[H] active from the start\n"
	"  --params JSON         its params (a JSON object)\n"
	"  --netns PATH          run CMD in this network namespace (/run/netns/NAME)\n"
	"  --user USER           run CMD as USER (name or uid), without a way back to root.\n"
	"                        --user root is allowed with a warning: a root command can\n"
	"                        leave its sandbox (it can write any cgroup.procs)\n"
	"  --preserve-fds N      pass descriptors 3 .. 3+N-1 on to CMD (as systemd-run does)\n"
	"  --cgroup-parent PATH  where the cgroup is made (default: sluice-run under the\n"
	"                        cgroup2 mount); relative paths are below the mount\n"
	"  -q, --quiet           do not print what the sandbox was denied\n"
	"  --learn               audit mode: NOTHING the policy would deny is enforced while CMD\n"
	"                        runs; what it reached beyond the policy (FILE, default none) is\n"
	"                        recorded, and when CMD ends the suggested policy (`sluice policy\n"
	"                        suggest`) is written to OUT. Then `sluice run --policy OUT`\n"
	"  -o, --output OUT      where --learn writes (default ./policy.lua, never overwritten\n"
	"                        unless named with -o)\n"
	"  --collapse N          with --learn: as `sluice policy suggest --collapse N`\n"
	"\n"
	"Exit status: CMD's; 128+N if signal N killed it; 125 if sluice run failed, 126 if CMD\n"
	"could not be executed, 127 if it was not found.\n";

struct run {
	const char *sock;
	const char *policy, *handler, *params, *netns, *user;
	char **cmd;
	char name[72];
	char policy_abs[PATH_MAX];
	char parent[PATH_MAX];
	char cgroup[PATH_MAX];
	struct sl_run_trust trust; /* trust.dir "" until made */
	int cgfd; /* its flock says the run is alive */
	int netns_fd;
	int added; /* the sandbox exists */
	int quiet; /* no summary of what was denied */
	int learn; /* --learn: audit mode, then the suggestion into @out */
	const char *out;
	unsigned collapse;
	int ran; /* the command was started */
	int preserve_fds;
	struct sl_run_user u; /* who CMD runs as */
	pid_t self;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sluice run: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "sluice run: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'sluice run --help'.\n");
	return EXIT_USAGE;
}

/* --flag VALUE or --flag=VALUE at argv[*i]: 1 and *@val set, 0 if not this flag, -1 if the
 * value is missing. */
static int opt(int argc, char **argv, int *i, const char *flag, const char **val)
{
	size_t n = strlen(flag);

	if (strncmp(argv[*i], flag, n))
		return 0;
	if (argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	if (argv[*i][n])
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 64 ||
	    !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int write_file(const char *path, const char *data, size_t len, int flags, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC | flags, mode), e = 0;

	if (fd == -1)
		return -errno;
	while (len) {
		ssize_t w = write(fd, data, len);

		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			e = -errno;
			break;
		}
		data += w;
		len -= w;
	}
	if (close(fd) == -1 && !e)
		e = -errno;
	return e;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Kills every process of @cgroup and below, and waits (bounded) until none is left.
 * Returns 0, or -EBUSY if some would not die. */
static int kill_all(const char *cgroup)
{
	char path[PATH_MAX + 32];
	int have_kill;

	snprintf(path, sizeof(path), "%s/cgroup.kill", cgroup);
	have_kill = write_file(path, "1", 1, 0, 0) == 0;
	for (int waited = 0; waited <= KILL_WAIT_MS; waited += 10) {
		int pop = sl_cgroup_populated(cgroup);

		if (pop <= 0)
			return pop == 0 || pop == -ENOENT ? 0 : pop;
		if (!have_kill) {
			/* Before Linux 5.14: one process at a time (this cgroup only). */
			FILE *f;
			long pid;

			snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
			f = fopen(path, "re");
			while (f && fscanf(f, "%ld", &pid) == 1)
				kill((pid_t)pid, SIGKILL);
			if (f)
				fclose(f);
		}
		sleep_ms(10);
	}
	return -EBUSY;
}

/* Removes @dir and the cgroups a command may have made below it, deepest first. */
static int rmdir_tree(const char *dir, int depth)
{
	struct dirent *de;
	DIR *d;

	if (depth > 0 && (d = opendir(dir))) {
		while ((de = readdir(d))) {
			char sub[PATH_MAX];

			if (de->d_type != DT_DIR || de->d_name[0] == '.')
				continue;
			if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) < (int)sizeof(sub))
				rmdir_tree(sub, depth - 1);
		}
		closedir(d);
	}
	/* An emptied cgroup may take a moment to be removable. */
	for (int i = 0; i < 100; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
		if (errno != EBUSY && errno != ENOTEMPTY)
			return -errno;
		sleep_ms(10);
	}
	return -EBUSY;
}

/*
 * The end of a run in @cgroup: its processes are killed first (nothing may run unenforced),
 * then, with @summary, what sandbox @name was denied is printed, then the sandbox (@name NULL:
 * unknown) is removed, then the cgroup. If processes remain, everything stays: they are
 * still enforced. Returns 0 or -errno.
 */
static int end_run(const char *sock, const char *cgroup, const char *name, int summary)
{
	char err[512];
	int e;

	e = kill_all(cgroup);
	if (e) {
		say("processes of %s would not die: sandbox %s left in place", cgroup,
		    name ? name : "(unknown)");
		return e;
	}
	if (name && summary) {
		e = sl_run_summary(sock, name, stderr);
		if (e)
			say("reading what sandbox %s was denied failed: %s", name, strerror(-e));
	}
	if (name) {
		e = sl_cli_rm_sandbox(sock, name, err, sizeof(err));
		if (e && e != -ENOENT)
			say("removing sandbox %s failed: %s", name, err);
	}
	e = rmdir_tree(cgroup, RMDIR_DEPTH);
	if (e)
		say("removing cgroup %s failed: %s", cgroup, strerror(-e));
	return e;
}

/* The sandbox of sluiced whose cgroup is @cgroup, in @list (GET /v1/sandboxes). */
static const char *sandbox_of(json_t *list, const char *cgroup)
{
	json_t *sb;
	size_t i;

	json_array_foreach(json_object_get(list, "sandboxes"), i, sb) {
		const char *cg = json_string_value(json_object_get(sb, "cgroup"));

		if (cg && !strcmp(cg, cgroup))
			return json_string_value(json_object_get(sb, "name"));
	}
	return NULL;
}

/* Ends the runs of this daemon under our parent whose sluice run is gone (no flock). Called
 * with the parent locked, so that no run is between mkdir and flock. */
static void sweep_stale(struct run *rn)
{
	struct sl_cli_resp res = { 0 };
	json_t *list = NULL;
	struct dirent *de;
	char err[512];
	DIR *d;

	d = opendir(rn->parent);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[PATH_MAX], mark[PATH_MAX];
		ssize_t n;
		int fd;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", rn->parent, de->d_name) >=
		    (int)sizeof(path))
			continue;
		n = getxattr(path, RUN_XATTR, mark, sizeof(mark) - 1);
		if (n < 0)
			continue; /* not a run's cgroup */
		mark[n] = 0;
		if (strcmp(mark, rn->sock))
			continue; /* another daemon's run */
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd == -1)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			if (!list && !sl_cli_call(rn->sock, "GET", "/v1/sandboxes", NULL, &res, err,
						  sizeof(err)))
				list = sl_cli_json(&res);
			say("cleaning up after an earlier run whose sluice run was killed (%s)",
			    path);
			end_run(rn->sock, path, sandbox_of(list, path), 0);
		}
		close(fd);
	}
	closedir(d);
	json_decref(list);
	sl_buf_free(&res.body);
}

/* The parent cgroup (made if missing), then ours, locked, marked. */
static int make_cgroup(struct run *rn)
{
	const char *root = sl_cgroup_root();
	char given[PATH_MAX];
	int plock, e;

	if (!root) {
		say("no cgroup2 mount found in /proc/self/mountinfo");
		return -ENOENT;
	}
	if (!rn->parent[0])
		snprintf(given, sizeof(given), "%s/sluice-run", root);
	else if (rn->parent[0] == '/')
		snprintf(given, sizeof(given), "%s", rn->parent);
	else
		snprintf(given, sizeof(given), "%s/%s", root, rn->parent);
	if (mkdir(given, 0755) == -1 && errno != EEXIST) {
		e = -errno;
		say("cgroup parent %s: %s", given, strerror(-e));
		return e;
	}
	e = sl_cgroup_resolve(given, rn->parent, sizeof(rn->parent));
	if (e == -EINVAL) { /* the cgroup2 root itself */
		snprintf(rn->parent, sizeof(rn->parent), "%s", root);
		e = 0;
	}
	if (e) {
		say("cgroup parent %s: %s", given,
		    e == -EMEDIUMTYPE ? "not a cgroup v2 directory" : strerror(-e));
		return e;
	}
	if (snprintf(rn->cgroup, sizeof(rn->cgroup), "%s/%s", rn->parent, rn->name) >=
	    (int)sizeof(rn->cgroup))
		return -ENAMETOOLONG;
	plock = open(rn->parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (plock == -1 || flock(plock, LOCK_EX) == -1) {
		e = -errno;
		say("locking %s failed: %s", rn->parent, strerror(-e));
		if (plock >= 0)
			close(plock);
		return e;
	}
	sweep_stale(rn);
	if (mkdir(rn->cgroup, 0755) == -1) {
		e = -errno;
		say("cgroup %s: %s", rn->cgroup,
		    e == -EEXIST ? "already exists (is another run of that name alive?)" :
				   strerror(-e));
		close(plock);
		return e;
	}
	rn->cgfd = open(rn->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rn->cgfd == -1 || flock(rn->cgfd, LOCK_EX) == -1) {
		e = -errno;
		say("locking %s failed: %s", rn->cgroup, strerror(-e));
		if (rn->cgfd >= 0)
			close(rn->cgfd);
		rn->cgfd = -1;
		rmdir(rn->cgroup);
		close(plock);
		return e;
	}
	/* Without the mark (no xattrs on this cgroupfs) a leftover is never swept: harmless. */
	setxattr(rn->cgroup, RUN_XATTR, rn->sock, strlen(rn->sock), 0);
	close(plock);
	return 0;
}

/* The sandbox's CA, from sluiced, and the trust files made of it (tools/cli/run_trust.c). */
static int write_ca(struct run *rn)
{
	struct sl_cli_resp res;
	char path[128], err[512];
	int e;

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca", rn->name);
	e = sl_cli_call(rn->sock, "GET", path, NULL, &res, err, sizeof(err));
	if (!e && res.status != 200) {
		sl_cli_error(&res, err, sizeof(err));
		e = -EIO;
	}
	if (!e)
		e = sl_run_trust_write(&rn->trust, sl_buf_head(&res.body), sl_buf_size(&res.body),
				       err, sizeof(err));
	if (e)
		say("%s", err);
	sl_buf_free(&res.body);
	return e;
}

static int add_sandbox(struct run *rn)
{
	json_t *spec, *p = NULL;
	char err[512];
	int e;

	if (rn->params) {
		p = json_loads(rn->params, JSON_REJECT_DUPLICATES, NULL);
		if (!json_is_object(p)) {
			json_decref(p);
			say("--params must be a JSON object");
			return -EINVAL;
		}
	}
	if (rn->policy)
		spec = json_pack("{s:s, s:s, s:s}", "name", rn->name, "cgroup", rn->cgroup,
				 "policy_file", rn->policy_abs);
	else /* --learn without a policy: everything is beyond it */
		spec = json_pack("{s:s, s:s, s:s}", "name", rn->name, "cgroup", rn->cgroup,
				 "policy", "return { egress = {} }\n");
	if (!spec) {
		json_decref(p);
		return -ENOMEM;
	}
	if (rn->netns)
		json_object_set_new(spec, "netns", json_string(rn->netns));
	if (rn->handler)
		json_object_set_new(spec, "handler", json_string(rn->handler));
	if (rn->learn)
		json_object_set_new(spec, "mode", json_string("audit"));
	if (p)
		json_object_set_new(spec, "params", p);
	e = sl_cli_add_sandbox(rn->sock, spec, err, sizeof(err));
	if (e)
		say("%s", err);
	else
		rn->added = 1;
	return e;
}

static void child_fail(const char *what, int e) __attribute__((noreturn));
static void child_fail(const char *what, int e)
{
	if (e)
		say("%s: %s", what, strerror(e));
	else
		say("%s", what);
	_exit(EXIT_SETUP);
}

/* The command's side of the fork: into the cgroup first (from then on every socket it makes
 * is judged), then the network namespace, then the user; exec. Never returns. */
static void child(struct run *rn, const sigset_t *mask)
{
	char path[PATH_MAX + 32], pid[24], err[512];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());

	snprintf(path, sizeof(path), "%s/cgroup.procs", rn->cgroup);
	n = write_file(path, pid, n, 0, 0);
	if (n)
		child_fail("joining the sandbox's cgroup failed", -n);
	if (rn->netns_fd >= 0 && setns(rn->netns_fd, CLONE_NEWNET) == -1)
		child_fail("entering the network namespace failed", errno);
	n = sl_run_trust_env(&rn->trust);
	if (n || setenv("SLUICE_SANDBOX", rn->name, 1))
		child_fail("setting the environment failed", n ? -n : errno);
	if (rn->u.home[0])
		setenv("HOME", rn->u.home, 1);
	if (rn->u.name[0]) {
		setenv("USER", rn->u.name, 1);
		setenv("LOGNAME", rn->u.name, 1);
	}
	if (sl_run_confine(&rn->u, rn->preserve_fds, err, sizeof(err)))
		child_fail(err, 0);
	/* Set after the user change, which clears it. If sluice run is already gone, stop. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1 || getppid() != rn->self)
		_exit(EXIT_SETUP);
	sigprocmask(SIG_SETMASK, mask, NULL);
	execvp(rn->cmd[0], rn->cmd);
	n = errno;
	say("%s: %s", rn->cmd[0], strerror(n));
	_exit(n == ENOENT ? 127 : 126);
}

/* Waits for @pid, passing on the signals sluice run is sent. A signal the terminal sent
 * (Ctrl-C) reached the command already: it is in the same process group. */
static int wait_child(pid_t pid, const sigset_t *set)
{
	int status;

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(set, &si);

		if (sig == -1)
			continue; /* EINTR */
		if (sig != SIGCHLD) {
			if (si.si_code != SI_KERNEL)
				kill(pid, sig);
			continue;
		}
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* --learn: once nothing runs in the sandbox any more, its records as a policy. */
static void write_learned(struct run *rn)
{
	char err[512];

	if (kill_all(rn->cgroup))
		return; /* end_run() says so */
	if (sl_cli_suggest(rn->sock, rn->name, rn->collapse, rn->out, err, sizeof(err)))
		say("writing the suggested policy failed: %s", err);
	else
		say("suggested policy written to %s (check it: sluice policy check %s --verbose; "
		    "use it: sluice run --policy %s -- ...)",
		    rn->out, rn->out, rn->out);
}

static void cleanup(struct run *rn)
{
	if (rn->learn && rn->ran && rn->added && rn->cgroup[0] && rn->cgfd >= 0)
		write_learned(rn);
	if (rn->cgroup[0] && rn->cgfd >= 0) /* the cgroup is ours: we made it */
		end_run(rn->sock, rn->cgroup, rn->added ? rn->name : NULL, rn->ran && !rn->quiet);
	sl_run_trust_remove(&rn->trust);
	if (rn->cgfd >= 0)
		close(rn->cgfd);
	if (rn->netns_fd >= 0)
		close(rn->netns_fd);
}

int sl_cli_run(int argc, char **argv, const char *sock)
{
	struct run rn = { .sock = sock, .cgfd = -1, .netns_fd = -1, .self = getpid() };
	const char *name = NULL, *parent = NULL, *fds = NULL, *collapse = NULL;
	char err[512];
	sigset_t set, old;
	int i, r, status = EXIT_SETUP;
	pid_t pid;

	for (i = 0; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (a[0] != '-')
			break;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(run_usage, stdout);
			return 0;
		}
		if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			rn.quiet = 1;
			continue;
		}
		if (!strcmp(a, "--learn")) {
			rn.learn = 1;
			continue;
		}
		if ((r = opt(argc, argv, &i, "--name", &name)) ||
		    (r = opt(argc, argv, &i, "--policy", &rn.policy)) ||
		    (r = opt(argc, argv, &i, "--handler", &rn.handler)) ||
		    (r = opt(argc, argv, &i, "--params", &rn.params)) ||
		    (r = opt(argc, argv, &i, "--netns", &rn.netns)) ||
		    (r = opt(argc, argv, &i, "--user", &rn.user)) ||
		    (r = opt(argc, argv, &i, "--preserve-fds", &fds)) ||
		    (r = opt(argc, argv, &i, "--cgroup-parent", &parent)) ||
		    (r = opt(argc, argv, &i, "--output", &rn.out)) ||
		    (r = opt(argc, argv, &i, "-o", &rn.out)) ||
		    (r = opt(argc, argv, &i, "--collapse", &collapse))) {
			if (r < 0)
				return usage("option '%s' needs a value", a);
			continue;
		}
		return usage("unknown option '%s'", a);
	}
	if (i >= argc)
		return usage("no command to run%s", "");
	rn.cmd = argv + i;
	if (!rn.policy && !rn.learn)
		return usage("--policy FILE is required%s", "");
	if ((rn.out || collapse) && !rn.learn)
		return usage("-o and --collapse go with --learn%s", "");
	if (collapse) {
		char *end;
		unsigned long n = strtoul(collapse, &end, 10);

		if (!*collapse || *end || n > 1000000)
			return usage("--collapse takes a number of names, not '%s'", collapse);
		rn.collapse = (unsigned)n;
	}
	if (rn.learn && !rn.out) {
		rn.out = "policy.lua";
		if (access(rn.out, F_OK) == 0)
			return usage("%s exists: name the output with -o (it is then replaced)",
				     rn.out);
	}
	if (rn.params && !rn.handler)
		return usage("--params goes with --handler%s", "");
	if (name)
		snprintf(rn.name, sizeof(rn.name), "%s", name);
	else
		snprintf(rn.name, sizeof(rn.name), "run-%d", (int)rn.self);
	if (!name_ok(rn.name))
		return usage("invalid sandbox name '%s' (letters, digits, '_', '.', '-'; at most "
			     "64, starting with a letter or digit)",
			     rn.name);
	if (parent)
		snprintf(rn.parent, sizeof(rn.parent), "%s", parent);
	if (fds) {
		char *end;
		long n = strtol(fds, &end, 10);

		if (!*fds || *end || n < 0 || n > SL_PRESERVE_FDS_MAX)
			return usage("--preserve-fds takes a count of descriptors, not '%s'", fds);
		rn.preserve_fds = (int)n;
		/* Before sluice run opens anything of its own there. */
		if (sl_run_check_fds(rn.preserve_fds, err, sizeof(err)))
			return usage("%s", err);
	}
	if (geteuid() != 0) {
		say("needs root: it makes a cgroup and moves the command into it");
		return EXIT_SETUP;
	}
	if (rn.policy && !realpath(rn.policy, rn.policy_abs)) {
		say("policy file %s: %s", rn.policy, strerror(errno));
		return EXIT_SETUP;
	}
	r = sl_run_user_pick(rn.user, &rn.u, err, sizeof(err));
	if (r == -EPERM)
		return usage("%s", err);
	if (r) {
		say("%s", err);
		return EXIT_SETUP;
	}
	if (rn.u.uid == 0)
		say("warning: CMD runs as root, which can leave its sandbox (write its pid into "
		    "another cgroup's cgroup.procs) and is then no longer confined");
	if (rn.netns) {
		rn.netns_fd = open(rn.netns, O_RDONLY | O_CLOEXEC);
		if (rn.netns_fd == -1 || rn.netns[0] != '/') {
			say("network namespace %s: %s", rn.netns,
			    rn.netns_fd == -1 ? strerror(errno) : "give an absolute path");
			cleanup(&rn);
			return EXIT_SETUP;
		}
	}

	/* From here on everything made is undone by cleanup(). Signals wait until the command
	 * runs: then they are passed on to it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	if (make_cgroup(&rn) || add_sandbox(&rn) || write_ca(&rn))
		goto out;
	if (rn.learn)
		say("LEARN MODE: sandbox %s is in audit mode, NOTHING its policy would deny is "
		    "enforced while the command runs; the suggested policy goes to %s",
		    rn.name, rn.out);
	fflush(NULL);
	pid = fork();
	if (pid == -1) {
		say("fork failed: %s", strerror(errno));
		goto out;
	}
	if (pid == 0)
		child(&rn, &old);
	rn.ran = 1;
	status = wait_child(pid, &set);
out:
	cleanup(&rn);
	return status;
}
