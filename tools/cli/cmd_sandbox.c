// SPDX-License-Identifier: MIT
/* sluice sandbox add|rm|ls|show|mode: the sandboxes of sluiced (POST, DELETE and GET
 * /v1/sandboxes, PUT /v1/sandboxes/NAME/mode). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

static const char sandbox_usage[] =
	"Usage: sluice sandbox add NAME --cgroup PATH --policy FILE [--handler H [--params JSON]]\n"
	"       sluice sandbox add NAME --cgroup PATH --netns NSPATH --policy FILE [...]\n"
	"       sluice sandbox add NAME --pid PID --policy FILE [...]\n"
	"       sluice sandbox add ... --allow-writable-cgroup\n"
	"       sluice sandbox add ... --mode audit|enforce\n"
	"       sluice sandbox mode NAME audit|enforce\n"
	"       sluice sandbox rm NAME\n"
	"       sluice sandbox ls [--json]\n"
	"       sluice sandbox show NAME [--json]\n"
	"\n"
	"A sandbox is a cgroup v2 directory; its processes and those of its child cgroups\n"
	"reach only what the policy names. PATH is absolute, or relative to the cgroup2 mount.\n"
	"FILE is a Lua policy (see README.md). `rm` removes all enforcement from the cgroup.\n"
	"A container has a network of its own: --netns names its namespace (/run/netns/NAME,\n"
	"/proc/PID/ns/net), where sluiced then opens the sandbox's DNS and proxy listeners;\n"
	"--pid PID takes both the cgroup and the network namespace of that process.\n"
	"\n"
	"A cgroup whose cgroup.procs (or cgroup.threads), or an ancestor's up to the cgroup2\n"
	"root, a user other than root owns or may write is refused: that user could move the\n"
	"sandbox's processes out of it. --allow-writable-cgroup adds it anyway (for a user you\n"
	"trust with that, e.g. a delegated cgroup whose processes all run as someone else).\n"
	"\n"
	"Audit mode (--mode audit, or `sandbox mode NAME audit`) enforces NOTHING the policy\n"
	"would deny: such connections, names and requests are allowed and recorded (events of\n"
	"type audit; `sluice policy suggest NAME` turns them into a policy). sluiced's own\n"
	"sockets, raw sockets and the other checks that do not come from the policy stay\n"
	"enforced. `sandbox mode NAME enforce` switches back at once (one kernel map update) and\n"
	"closes the open connections the policy does not allow. The default is enforce.\n";

void sl_cli_check_name(const char *name)
{
	if (!*name || strchr(name, '/') || strchr(name, '?') || strchr(name, '%') ||
	    strchr(name, ' '))
		sl_cli_usage_error("sandbox ", "invalid sandbox name '%s'", name);
}

/* --params JSON: an object, checked here so that a typo fails before the daemon is asked. */
json_t *sl_cli_parse_params(const char *cmd, const char *text)
{
	json_error_t jerr;
	json_t *p;

	if (!text)
		return NULL;
	p = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!p || !json_is_object(p))
		sl_cli_usage_error(cmd, "--params must be a JSON object%s%s", p ? "" : ": ",
				   p ? "" : jerr.text);
	return p;
}

static int cmd_sandbox_add(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *cgroup = NULL, *policy = NULL;
	const char *handler = NULL, *params = NULL, *netns = NULL, *pid = NULL;
	char policy_abs[PATH_MAX], netns_abs[PATH_MAX];
	struct sl_cli_resp res;
	json_t *body, *j;
	char *s;
	const char *mode = NULL;
	int writable = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode = argv[++i];
		else if (!strncmp(argv[i], "--mode=", 7))
			mode = argv[i] + 7;
		else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc)
			cgroup = argv[++i];
		else if (!strncmp(argv[i], "--cgroup=", 9))
			cgroup = argv[i] + 9;
		else if (!strcmp(argv[i], "--policy") && i + 1 < argc)
			policy = argv[++i];
		else if (!strncmp(argv[i], "--policy=", 9))
			policy = argv[i] + 9;
		else if (!strcmp(argv[i], "--handler") && i + 1 < argc)
			handler = argv[++i];
		else if (!strncmp(argv[i], "--handler=", 10))
			handler = argv[i] + 10;
		else if (!strcmp(argv[i], "--params") && i + 1 < argc)
			params = argv[++i];
		else if (!strncmp(argv[i], "--params=", 9))
			params = argv[i] + 9;
		else if (!strcmp(argv[i], "--netns") && i + 1 < argc)
			netns = argv[++i];
		else if (!strncmp(argv[i], "--netns=", 8))
			netns = argv[i] + 8;
		else if (!strcmp(argv[i], "--pid") && i + 1 < argc)
			pid = argv[++i];
		else if (!strncmp(argv[i], "--pid=", 6))
			pid = argv[i] + 6;
		else if (!strcmp(argv[i], "--allow-writable-cgroup"))
			writable = 1;
		else if (argv[i][0] == '-')
			sl_cli_usage_error("sandbox ", "unknown option '%s' for sandbox add",
					   argv[i]);
		else if (!name)
			name = argv[i];
		else
			sl_cli_usage_error("sandbox ", "unexpected argument '%s'", argv[i]);
	}
	if (!name || !policy || !cgroup == !pid)
		sl_cli_usage_error("sandbox ",
				   "sandbox add needs NAME, --cgroup PATH (or --pid PID) and "
				   "--policy FILE");
	if (pid && netns)
		sl_cli_usage_error("sandbox ",
				   "--pid names the network namespace too: no --netns with it");
	if (pid && (strspn(pid, "0123456789") != strlen(pid) || atoi(pid) <= 0))
		sl_cli_usage_error("sandbox ", "--pid takes a process id, not '%s'", pid);
	/* The daemon opens the namespace: give it an absolute path, without resolving the
	 * /proc/PID/ns/net kind of link. */
	if (netns && netns[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)) || snprintf(netns_abs, sizeof(netns_abs), "%s/%s",
							  cwd, netns) >= (int)sizeof(netns_abs))
			sl_cli_die("network namespace %s: path too long", netns);
		netns = netns_abs;
	}
	sl_cli_check_name(name);
	/* The daemon's working directory is not ours: send an absolute policy path. */
	if (!realpath(policy, policy_abs)) {
		if (errno == ENOENT)
			sl_cli_die("policy file %s: No such file or directory", policy);
		sl_cli_die("policy file %s: %s", policy, strerror(errno));
	}
	if (params && !handler)
		sl_cli_usage_error("sandbox ", "--params goes with --handler");
	if (mode && strcmp(mode, "audit") && strcmp(mode, "enforce"))
		sl_cli_usage_error("sandbox ", "--mode is audit or enforce, not '%s'", mode);
	body = json_pack("{s:s, s:s}", "name", name, "policy_file", policy_abs);
	if (cgroup)
		json_object_set_new(body, "cgroup", json_string(cgroup));
	if (netns)
		json_object_set_new(body, "netns", json_string(netns));
	if (pid)
		json_object_set_new(body, "pid", json_integer(atoi(pid)));
	if (writable)
		json_object_set_new(body, "allow_writable_cgroup", json_true());
	if (mode)
		json_object_set_new(body, "mode", json_string(mode));
	if (handler) {
		json_t *p = sl_cli_parse_params("sandbox ", params);

		json_object_set_new(body, "handler", json_string(handler));
		if (p)
			json_object_set_new(body, "params", p);
	}
	s = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	sl_cli_call_or_die(sock, "POST", "/v1/sandboxes", s, &res);
	free(s);
	j = sl_cli_json_or_die(&res);
	printf("sandbox %s added (cgroup %s%s%s)\n", sl_cli_str(j, "name"), sl_cli_str(j, "cgroup"),
	       *sl_cli_str(j, "netns") ? ", network namespace " : "", sl_cli_str(j, "netns"));
	if (!strcmp(sl_cli_str(j, "mode"), "audit"))
		fprintf(stderr,
			"sluice: sandbox %s is in AUDIT mode: nothing its policy denies is "
			"enforced\n",
			sl_cli_str(j, "name"));
	json_decref(j);
	return 0;
}

static int cmd_sandbox_mode(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;
	char path[256], body[64];
	json_t *j, *cl;

	if (argc != 2 || (strcmp(argv[1], "audit") && strcmp(argv[1], "enforce")))
		sl_cli_usage_error("sandbox ", "sandbox mode takes NAME and audit or enforce");
	sl_cli_check_name(argv[0]);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/mode", argv[0]);
	snprintf(body, sizeof(body), "{\"mode\":\"%s\"}", argv[1]);
	sl_cli_call_or_die(sock, "PUT", path, body, &res);
	j = sl_cli_json_or_die(&res);
	cl = json_object_get(j, "closed");
	printf("sandbox %s: mode %s (closed %lld flows, %lld proxied connections)\n", argv[0],
	       sl_cli_str(j, "mode"), sl_cli_num(cl, "kernel_flows"), sl_cli_num(cl, "proxied"));
	if (!strcmp(sl_cli_str(j, "mode"), "audit"))
		fprintf(stderr,
			"sluice: sandbox %s is in AUDIT mode: nothing its policy denies is "
			"enforced\n",
			argv[0]);
	json_decref(j);
	return 0;
}

static int cmd_sandbox_rm(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;
	char path[256];
	json_t *j;

	if (argc != 1)
		sl_cli_usage_error("sandbox ", "sandbox rm takes exactly one NAME");
	sl_cli_check_name(argv[0]);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", argv[0]);
	sl_cli_call_or_die(sock, "DELETE", path, NULL, &res);
	j = sl_cli_json_or_die(&res);
	printf("sandbox %s removed\n", argv[0]);
	json_decref(j);
	return 0;
}

static int cmd_sandbox_ls(int argc, char **argv, const char *sock)
{
	int as_json = argc == 1 && !strcmp(argv[0], "--json");
	struct sl_cli_resp res;
	json_t *j, *arr, *sb;
	size_t i;

	if (argc && !as_json)
		sl_cli_usage_error("sandbox ", "sandbox ls takes only --json");
	sl_cli_call_or_die(sock, "GET", "/v1/sandboxes", NULL, &res);
	j = sl_cli_json_or_die(&res);
	if (as_json) {
		sl_cli_print_json(j);
	} else {
		arr = json_object_get(j, "sandboxes");
		printf("%-20s %5s  %-40s %s\n", "NAME", "ID", "CGROUP", "POLICY");
		json_array_foreach(arr, i, sb)
			printf("%-20s %5lld  %-40s %s\n", sl_cli_str(sb, "name"),
			       sl_cli_num(sb, "id"), sl_cli_str(sb, "cgroup"),
			       sl_cli_str(sb, "policy"));
	}
	json_decref(j);
	return 0;
}

static int cmd_sandbox_show(int argc, char **argv, const char *sock)
{
	const char *name = NULL;
	int as_json = 0;
	struct sl_cli_resp res;
	char path[256];
	json_t *j, *rules, *r, *c, *names, *dns, *px;
	size_t i;

	for (int k = 0; k < argc; k++) {
		if (!strcmp(argv[k], "--json"))
			as_json = 1;
		else if (argv[k][0] == '-' || name)
			sl_cli_usage_error("sandbox ", "unexpected argument '%s'", argv[k]);
		else
			name = argv[k];
	}
	if (!name)
		sl_cli_usage_error("sandbox ", "sandbox show needs a NAME");
	sl_cli_check_name(name);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
	sl_cli_call_or_die(sock, "GET", path, NULL, &res);
	j = sl_cli_json_or_die(&res);
	if (as_json) {
		sl_cli_print_json(j);
		json_decref(j);
		return 0;
	}
	printf("name:     %s\nid:       %lld\ncgroup:   %s\npolicy:   %s\n", sl_cli_str(j, "name"),
	       sl_cli_num(j, "id"), sl_cli_str(j, "cgroup"), sl_cli_str(j, "policy"));
	if (!strcmp(sl_cli_str(j, "mode"), "audit")) {
		json_t *au = json_object_get(j, "audit");

		printf("mode:     AUDIT (nothing the policy denies is enforced); %lld calls audited, "
		       "%lld not recorded; %lld intercepted requests, %lld of them refused by a "
		       "handler and let through\n",
		       sl_cli_num(au, "audited"), sl_cli_num(au, "lost"),
		       sl_cli_num(au, "requests"), sl_cli_num(au, "requests_refused"));
	} else {
		printf("mode:     enforce\n");
	}
	if (*sl_cli_str(j, "netns"))
		printf("netns:    %s (inode %lld)\n", sl_cli_str(j, "netns"),
		       sl_cli_num(j, "netns_inode"));
	if (!strcmp(sl_cli_str(j, "listeners"), "shared"))
		printf("listeners: its worker's shared DNS and proxy listeners (past sluiced "
		       "--own-listeners)\n");
	if (json_is_string(json_object_get(j, "handler"))) {
		char *p = json_dumps(json_object_get(j, "params"), JSON_COMPACT);

		printf("handler:  %s, params %s (since %lld); %lld switches\n",
		       sl_cli_str(j, "handler"), p ? p : "{}", sl_cli_num(j, "handler_since"),
		       sl_cli_num(j, "switches"));
		free(p);
	} else {
		printf("handler:  none (the policy's own); %lld switches\n",
		       sl_cli_num(j, "switches"));
	}
	rules = json_object_get(j, "rules");
	printf("rules:%s\n", json_array_size(rules) ? "" : "    none (everything is denied)");
	json_array_foreach(rules, i, r)
		printf("  %-40s %-12s %-8s %s\n", sl_cli_str(r, "dst"), sl_cli_str(r, "ports"),
		       sl_cli_str(r, "proto"), sl_cli_str(r, "verdict"));
	printf("unix:%s\n", json_array_size(json_object_get(j, "unix")) ?
				    "" :
				    "     none (every UNIX socket is denied)");
	json_array_foreach(json_object_get(j, "unix"), i, r)
		printf("  %s\n", json_string_value(r));
	names = json_object_get(j, "names");
	if (json_array_size(names)) {
		json_t *n, *a;
		size_t k, m;

		printf("names:\n");
		json_array_foreach(names, k, n) {
			printf("  %s\n", sl_cli_str(n, "name"));
			json_array_foreach(json_object_get(n, "addresses"), m, a)
				printf("    %-38s %-12s %-8s %-6s expires in %llds\n",
				       sl_cli_str(a, "dst"), sl_cli_str(a, "ports"),
				       sl_cli_str(a, "proto"), sl_cli_str(a, "verdict"),
				       sl_cli_num(a, "expires_in_s"));
		}
	}
	dns = json_object_get(j, "dns");
	if (json_is_object(dns)) {
		json_t *q = json_object_get(dns, "queries"),
		       *ad = json_object_get(dns, "addresses");

		printf("dns:      listener port %lld; queries allowed %lld, denied %lld, "
		       "servfail %lld, formerr %lld; addresses installed %lld, blocked %lld\n",
		       sl_cli_num(dns, "port"), sl_cli_num(q, "allowed"), sl_cli_num(q, "denied"),
		       sl_cli_num(q, "servfail"), sl_cli_num(q, "formerr"),
		       sl_cli_num(ad, "installed"), sl_cli_num(ad, "blocked"));
	}
	px = json_object_get(j, "proxy");
	if (json_is_object(px)) {
		json_t *pc = json_object_get(px, "connections"),
		       *pr = json_object_get(px, "requests");

		printf("proxy:    listener port %lld; connections %lld (not redirected %lld, never "
		       "accepted %lld, refused %lld, TLS failed %lld, passthrough %lld); requests "
		       "forwarded %lld, rejected %lld, upstream errors %lld\n",
		       sl_cli_num(px, "port"), sl_cli_num(pc, "accepted"),
		       sl_cli_num(pc, "unredirected"), sl_cli_num(pc, "never_accepted"),
		       sl_cli_num(pc, "refused"), sl_cli_num(pc, "tls_failed"),
		       sl_cli_num(pc, "passthrough"), sl_cli_num(pr, "forwarded"),
		       sl_cli_num(pr, "rejected"), sl_cli_num(pr, "upstream_errors"));
		pc = json_object_get(px, "http2");
		if (json_is_object(pc))
			printf("http2:    connections %lld (open %lld); streams %lld, refused %lld; "
			       "connections ended for a flood %lld\n",
			       sl_cli_num(pc, "connections"), sl_cli_num(pc, "active"),
			       sl_cli_num(pc, "streams"), sl_cli_num(pc, "streams_refused"),
			       sl_cli_num(pc, "floods"));
	}
	c = json_object_get(j, "counters");
	if (c) {
		json_t *a = json_object_get(c, "allowed"), *d = json_object_get(c, "denied"),
		       *e = json_object_get(c, "events");

		printf("allowed:  tcp %lld, udp %lld, unix %lld; proxied tcp %lld; dns tcp %lld, "
		       "udp %lld\n",
		       sl_cli_num(a, "tcp"), sl_cli_num(a, "udp"), sl_cli_num(a, "unix"),
		       sl_cli_num(json_object_get(c, "proxied"), "tcp"),
		       sl_cli_num(json_object_get(c, "dns"), "tcp"),
		       sl_cli_num(json_object_get(c, "dns"), "udp"));
		printf("denied:   tcp %lld, udp %lld, unix %lld, socket %lld, setsockopt %lld, "
		       "bind %lld; egress packets dropped %lld\n",
		       sl_cli_num(d, "tcp"), sl_cli_num(d, "udp"), sl_cli_num(d, "unix"),
		       sl_cli_num(d, "socket"), sl_cli_num(d, "setsockopt"), sl_cli_num(d, "bind"),
		       sl_cli_num(d, "egress_packets"));
		printf("events:   sent %lld, rate-limited %lld, lost %lld\n", sl_cli_num(e, "sent"),
		       sl_cli_num(e, "rate_limited"), sl_cli_num(e, "lost"));
	}
	json_decref(j);
	return 0;
}

int sl_cli_cmd_sandbox(int argc, char **argv, const char *sock)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "add", cmd_sandbox_add },   { "rm", cmd_sandbox_rm },
		{ "ls", cmd_sandbox_ls },     { "show", cmd_sandbox_show },
		{ "mode", cmd_sandbox_mode }, { 0 },
	};

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(sandbox_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	return sl_cli_select(cmds, "sandbox ", argc, argv, sock);
}
