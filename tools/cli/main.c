// SPDX-License-Identifier: MIT
/*
 * sluice: the command line of sluice, a thin client of sluiced's control API (HTTP/1.1 and
 * JSON on a unix socket). Every error is one line on stderr and a non-zero exit: 1 when the
 * daemon refused or could not be reached, 2 for a usage mistake.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "core/buf.h"
#include "cli.h"
#include "store/kv.h"

static const char main_usage[] =
	"Usage: sluice [--socket PATH] COMMAND [ARGS]\n"
	"\n"
	"Controls sluiced, which enforces each sandbox's egress policy in the kernel.\n"
	"\n"
	"Commands:\n"
	"  sandbox add NAME --cgroup PATH --policy FILE   make a cgroup a sandbox\n"
	"      [--netns NSPATH]                           ... with a network namespace of its own\n"
	"  sandbox add NAME --pid PID --policy FILE       the cgroup and network namespace of PID\n"
	"  run [--name N] --policy FILE -- CMD...         run one command in a new sandbox\n"
	"  oci-hook [create|delete]                       OCI runtime hook (state JSON on stdin)\n"
	"  oci-runtime [OPTIONS] -- RUNC-ARGS...          runc with the OCI hook added (Docker)\n"
	"  sandbox rm NAME                                stop enforcing, free the cgroup\n"
	"  sandbox ls [--json]                            list sandboxes\n"
	"  sandbox show NAME [--json]                     rules and counters of one sandbox\n"
	"  ca NAME                                        the sandbox's CA certificate (PEM)\n"
	"  events [--sandbox NAME] [--follow]             kernel, DNS and HTTP events (JSON lines)\n"
	"  stats                                          metrics (Prometheus text format)\n"
	"  handler set NAME HANDLER [--params JSON]       switch to an outboundHandlers entry\n"
	"  handler clear NAME                             back to the policy's own handlers\n"
	"  policy reload NAME [--policy FILE]             replace the sandbox's policy\n"
	"  kv put NS KEY [VALUE]                          store a value (stdin without VALUE)\n"
	"  kv get NS KEY | kv rm NS KEY | kv ls NS        read, remove, list keys\n"
	"\n"
	"Options:\n"
	"  --socket PATH   sluiced's control socket (default $SLUICE_SOCKET or\n"
	"                  /run/sluice/sluiced.sock)\n"
	"  -h, --help      help; `sluice COMMAND --help` for a command\n";

static const char sandbox_usage[] =
	"Usage: sluice sandbox add NAME --cgroup PATH --policy FILE [--handler H [--params JSON]]\n"
	"       sluice sandbox add NAME --cgroup PATH --netns NSPATH --policy FILE [...]\n"
	"       sluice sandbox add NAME --pid PID --policy FILE [...]\n"
	"       sluice sandbox add ... --allow-writable-cgroup\n"
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
	"trust with that, e.g. a delegated cgroup whose processes all run as someone else).\n";

static const char handler_usage[] =
	"Usage: sluice handler set NAME HANDLER [--params JSON]\n"
	"       sluice handler clear NAME\n"
	"\n"
	"`set` makes the policy's outboundHandlers[HANDLER] the sandbox's active handler, with\n"
	"JSON params (an object) its egress function and handler see as params/ctx.params. Its\n"
	"egress replaces the sandbox's kernel layer at once: what it does not give is denied in\n"
	"the kernel, open connections it does not allow are closed (the count is printed), and\n"
	"DNS entries it does not give are removed. `clear` returns to the policy's own egress\n"
	"and handlers. An unknown HANDLER or params its egress function rejects change nothing.\n";

static const char policy_usage[] =
	"Usage: sluice policy reload NAME [--policy FILE]\n"
	"\n"
	"Replaces the sandbox's policy with FILE (default: the file it was added with, read\n"
	"again). The switch works like `handler set`: the new kernel layer applies at once and\n"
	"connections it does not allow are closed. A policy with errors changes nothing; the\n"
	"error names the line. An active handler stays active and must exist in the new policy.\n";

static const char events_usage[] =
	"Usage: sluice events [--sandbox NAME] [--follow]\n"
	"\n"
	"Prints recent events as JSON lines: kernel denies (type deny), DNS decisions (type\n"
	"dns) and intercepted requests (type http).\n"
	"  --sandbox NAME   only this sandbox's events (also of a removed sandbox, while its\n"
	"                   history is kept: the last 64 removed)\n"
	"  -f, --follow     keep printing new events until interrupted\n";

static const char stats_usage[] =
	"Usage: sluice stats\n"
	"\n"
	"Prints sluiced's metrics in the Prometheus text format: per-sandbox counters of\n"
	"allowed and denied connections by protocol, refused sockets and deny events.\n";

static const char kv_usage[] =
	"Usage: sluice kv put NS KEY [VALUE]\n"
	"       sluice kv get NS KEY\n"
	"       sluice kv rm NS KEY\n"
	"       sluice kv ls NS\n"
	"\n"
	"The KV store of sluiced: values (secrets, typically) that the policies' handlers read\n"
	"as env.NS:get(KEY) and that never enter a sandbox. sluiced keeps them encrypted on\n"
	"disk (AES-256-GCM, STATE_DIR/kv/).\n"
	"\n"
	"  put   stores VALUE, or without VALUE everything read from stdin up to end of file,\n"
	"        byte for byte (a trailing newline is kept: use printf '%s' or echo -n).\n"
	"        Prefer stdin for secrets: a VALUE argument is visible in ps and in the\n"
	"        shell's history.\n"
	"  get   writes the value to stdout exactly, with no newline added\n"
	"  rm    removes the key\n"
	"  ls    lists the keys of NS, one per line (never values)\n"
	"\n"
	"NS: 1 to 128 of A-Z a-z 0-9 _ . : @ -. KEY: 1 to 512 printable ASCII characters.\n"
	"Values: at most 64 KiB.\n";

void sl_cli_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
}

const char *sl_cli_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

long long sl_cli_num(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

int sl_cli_has_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

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

void sl_cli_print_closed(json_t *j)
{
	json_t *c = json_object_get(j, "closed");

	printf("closed %lld open connection%s (%lld passthrough in the kernel, %lld proxied); "
	       "removed %lld DNS entr%s\n",
	       sl_cli_num(c, "kernel_flows") + sl_cli_num(c, "proxied"),
	       sl_cli_num(c, "kernel_flows") + sl_cli_num(c, "proxied") == 1 ? "" : "s",
	       sl_cli_num(c, "kernel_flows"), sl_cli_num(c, "proxied"), sl_cli_num(c, "dns_entries"),
	       sl_cli_num(c, "dns_entries") == 1 ? "y" : "ies");
}

int sl_cli_cmd_handler(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *handler = NULL, *params = NULL;
	struct sl_cli_resp res;
	char path[256];
	json_t *body = NULL, *j;
	char *s = NULL;
	int set;

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(handler_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	set = !strcmp(argv[0], "set");
	if (!set && strcmp(argv[0], "clear"))
		sl_cli_usage_error("handler ", "unknown subcommand '%s'", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (set && !strcmp(argv[i], "--params") && i + 1 < argc)
			params = argv[++i];
		else if (set && !strncmp(argv[i], "--params=", 9))
			params = argv[i] + 9;
		else if (argv[i][0] == '-')
			sl_cli_usage_error("handler ", "unknown option '%s'", argv[i]);
		else if (!name)
			name = argv[i];
		else if (set && !handler)
			handler = argv[i];
		else
			sl_cli_usage_error("handler ", "unexpected argument '%s'", argv[i]);
	}
	if (!name || (set && !handler))
		sl_cli_usage_error("handler ", set ? "handler set needs NAME and HANDLER" :
					      "handler clear needs NAME");
	sl_cli_check_name(name);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/handler", name);
	if (set) {
		json_t *p = sl_cli_parse_params("handler ", params);

		body = json_pack("{s:s}", "handler", handler);
		if (p)
			json_object_set_new(body, "params", p);
		s = json_dumps(body, JSON_COMPACT);
		json_decref(body);
	}
	sl_cli_call_or_die(sock, set ? "PUT" : "DELETE", path, s, &res);
	free(s);
	j = sl_cli_json_or_die(&res);
	if (set)
		printf("sandbox %s: handler %s active\n", name, handler);
	else
		printf("sandbox %s: back to its policy's own handlers\n", name);
	sl_cli_print_closed(j);
	json_decref(j);
	return 0;
}

/* The whole file, for the daemon (it may not see our files: a different mount namespace). */
static char *slurp(const char *file, size_t *len)
{
	FILE *f = fopen(file, "re");
	struct sl_buf b = { 0 };
	char chunk[65536];
	size_t n;

	if (!f)
		sl_cli_die("policy file %s: %s", file, strerror(errno));
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (sl_buf_append(&b, chunk, n))
			sl_cli_die("out of memory");
	if (ferror(f))
		sl_cli_die("policy file %s: %s", file, strerror(errno));
	fclose(f);
	if (sl_buf_append(&b, "", 1))
		sl_cli_die("out of memory");
	*len = sl_buf_size(&b) - 1;
	return b.data;
}

int sl_cli_cmd_policy(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *file = NULL;
	char abs[PATH_MAX], path[256], *text, *s;
	struct sl_cli_resp res;
	json_t *body, *j, *cur;
	size_t len;

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(policy_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	if (strcmp(argv[0], "reload"))
		sl_cli_usage_error("policy ", "unknown subcommand '%s'", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--policy") && i + 1 < argc)
			file = argv[++i];
		else if (!strncmp(argv[i], "--policy=", 9))
			file = argv[i] + 9;
		else if (argv[i][0] == '-')
			sl_cli_usage_error("policy ", "unknown option '%s'", argv[i]);
		else if (!name)
			name = argv[i];
		else
			sl_cli_usage_error("policy ", "unexpected argument '%s'", argv[i]);
	}
	if (!name)
		sl_cli_usage_error("policy ", "policy reload needs NAME");
	sl_cli_check_name(name);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
	if (!file) {
		sl_cli_call_or_die(sock, "GET", path, NULL, &res);
		cur = sl_cli_json_or_die(&res);
		snprintf(abs, sizeof(abs), "%s", sl_cli_str(cur, "policy"));
		json_decref(cur);
		if (!abs[0] || !strcmp(abs, "-"))
			sl_cli_die("sandbox %s was added with an inline policy: give --policy FILE", name);
	} else if (!realpath(file, abs)) {
		sl_cli_die("policy file %s: %s", file, strerror(errno));
	}
	text = slurp(abs, &len);
	body = json_pack("{s:s%, s:s}", "policy", text, len, "policy_file", abs);
	free(text);
	if (!body)
		sl_cli_die("policy file %s is not valid UTF-8 text", abs);
	s = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/policy", name);
	sl_cli_call_or_die(sock, "PUT", path, s, &res);
	free(s);
	j = sl_cli_json_or_die(&res);
	printf("sandbox %s: policy reloaded from %s\n", name, abs);
	sl_cli_print_closed(j);
	json_decref(j);
	return 0;
}

static int cmd_sandbox_add(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *cgroup = NULL, *policy = NULL;
	const char *handler = NULL, *params = NULL, *netns = NULL, *pid = NULL;
	char policy_abs[PATH_MAX], netns_abs[PATH_MAX];
	struct sl_cli_resp res;
	json_t *body, *j;
	char *s;
	int writable = 0;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--cgroup") && i + 1 < argc)
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
			sl_cli_usage_error("sandbox ", "unknown option '%s' for sandbox add", argv[i]);
		else if (!name)
			name = argv[i];
		else
			sl_cli_usage_error("sandbox ", "unexpected argument '%s'", argv[i]);
	}
	if (!name || !policy || !cgroup == !pid)
		sl_cli_usage_error("sandbox ", "sandbox add needs NAME, --cgroup PATH (or --pid PID) and "
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

		if (!getcwd(cwd, sizeof(cwd)) ||
		    snprintf(netns_abs, sizeof(netns_abs), "%s/%s", cwd, netns) >=
			    (int)sizeof(netns_abs))
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
	body = json_pack("{s:s, s:s}", "name", name, "policy_file", policy_abs);
	if (cgroup)
		json_object_set_new(body, "cgroup", json_string(cgroup));
	if (netns)
		json_object_set_new(body, "netns", json_string(netns));
	if (pid)
		json_object_set_new(body, "pid", json_integer(atoi(pid)));
	if (writable)
		json_object_set_new(body, "allow_writable_cgroup", json_true());
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
			printf("%-20s %5lld  %-40s %s\n", sl_cli_str(sb, "name"), sl_cli_num(sb, "id"),
			       sl_cli_str(sb, "cgroup"), sl_cli_str(sb, "policy"));
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
	if (*sl_cli_str(j, "netns"))
		printf("netns:    %s (inode %lld)\n", sl_cli_str(j, "netns"), sl_cli_num(j, "netns_inode"));
	if (json_is_string(json_object_get(j, "handler"))) {
		char *p = json_dumps(json_object_get(j, "params"), JSON_COMPACT);

		printf("handler:  %s, params %s (since %lld); %lld switches\n", sl_cli_str(j, "handler"),
		       p ? p : "{}", sl_cli_num(j, "handler_since"), sl_cli_num(j, "switches"));
		free(p);
	} else {
		printf("handler:  none (the policy's own); %lld switches\n", sl_cli_num(j, "switches"));
	}
	rules = json_object_get(j, "rules");
	printf("rules:%s\n", json_array_size(rules) ? "" : "    none (everything is denied)");
	json_array_foreach(rules, i, r)
		printf("  %-40s %-12s %-8s %s\n", sl_cli_str(r, "dst"), sl_cli_str(r, "ports"), sl_cli_str(r, "proto"),
		       sl_cli_str(r, "verdict"));
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
		json_array_foreach(names, k, n)
		{
			printf("  %s\n", sl_cli_str(n, "name"));
			json_array_foreach(json_object_get(n, "addresses"), m, a)
				printf("    %-38s %-12s %-8s %-6s expires in %llds\n", sl_cli_str(a, "dst"),
				       sl_cli_str(a, "ports"), sl_cli_str(a, "proto"), sl_cli_str(a, "verdict"),
				       sl_cli_num(a, "expires_in_s"));
		}
	}
	dns = json_object_get(j, "dns");
	if (json_is_object(dns)) {
		json_t *q = json_object_get(dns, "queries"), *ad = json_object_get(dns, "addresses");

		printf("dns:      listener port %lld; queries allowed %lld, denied %lld, "
		       "servfail %lld, formerr %lld; addresses installed %lld, blocked %lld\n",
		       sl_cli_num(dns, "port"), sl_cli_num(q, "allowed"), sl_cli_num(q, "denied"), sl_cli_num(q, "servfail"),
		       sl_cli_num(q, "formerr"), sl_cli_num(ad, "installed"), sl_cli_num(ad, "blocked"));
	}
	px = json_object_get(j, "proxy");
	if (json_is_object(px)) {
		json_t *pc = json_object_get(px, "connections"), *pr = json_object_get(px, "requests");

		printf("proxy:    listener port %lld; connections %lld (not redirected %lld, never "
		       "accepted %lld, refused %lld, TLS failed %lld, passthrough %lld); requests "
		       "forwarded %lld, rejected %lld, upstream errors %lld\n",
		       sl_cli_num(px, "port"), sl_cli_num(pc, "accepted"), sl_cli_num(pc, "unredirected"),
		       sl_cli_num(pc, "never_accepted"),
		       sl_cli_num(pc, "refused"), sl_cli_num(pc, "tls_failed"), sl_cli_num(pc, "passthrough"),
		       sl_cli_num(pr, "forwarded"), sl_cli_num(pr, "rejected"), sl_cli_num(pr, "upstream_errors"));
	}
	c = json_object_get(j, "counters");
	if (c) {
		json_t *a = json_object_get(c, "allowed"), *d = json_object_get(c, "denied"),
		       *e = json_object_get(c, "events");

		printf("allowed:  tcp %lld, udp %lld, unix %lld; proxied tcp %lld; dns tcp %lld, "
		       "udp %lld\n",
		       sl_cli_num(a, "tcp"), sl_cli_num(a, "udp"), sl_cli_num(a, "unix"),
		       sl_cli_num(json_object_get(c, "proxied"), "tcp"),
		       sl_cli_num(json_object_get(c, "dns"), "tcp"), sl_cli_num(json_object_get(c, "dns"), "udp"));
		printf("denied:   tcp %lld, udp %lld, unix %lld, socket %lld, setsockopt %lld, "
		       "bind %lld; egress packets dropped %lld\n",
		       sl_cli_num(d, "tcp"), sl_cli_num(d, "udp"), sl_cli_num(d, "unix"), sl_cli_num(d, "socket"),
		       sl_cli_num(d, "setsockopt"), sl_cli_num(d, "bind"), sl_cli_num(d, "egress_packets"));
		printf("events:   sent %lld, rate-limited %lld, lost %lld\n", sl_cli_num(e, "sent"),
		       sl_cli_num(e, "rate_limited"), sl_cli_num(e, "lost"));
	}
	json_decref(j);
	return 0;
}

int sl_cli_cmd_sandbox(int argc, char **argv, const char *sock)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "add", cmd_sandbox_add },
		{ "rm", cmd_sandbox_rm },
		{ "ls", cmd_sandbox_ls },
		{ "show", cmd_sandbox_show },
		{ 0 },
	};

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(sandbox_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	return sl_cli_select(cmds, "sandbox ", argc, argv, sock);
}

int sl_cli_cmd_events(int argc, char **argv, const char *sock)
{
	const char *sandbox = NULL;
	int follow = 0;
	struct sl_cli_resp res;
	char path[256];
	struct sl_cli_req rq = { .method = "GET", .path = path, .stream = stdout };

	if (sl_cli_has_help(argc, argv)) {
		fputs(events_usage, stdout);
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--sandbox") && i + 1 < argc)
			sandbox = argv[++i];
		else if (!strncmp(argv[i], "--sandbox=", 10))
			sandbox = argv[i] + 10;
		else if (!strcmp(argv[i], "--follow") || !strcmp(argv[i], "-f"))
			follow = 1;
		else
			sl_cli_usage_error("events ", "unexpected argument '%s'", argv[i]);
	}
	if (sandbox)
		sl_cli_check_name(sandbox);
	snprintf(path, sizeof(path), "/v1/events?follow=%d%s%s", follow,
		 sandbox ? "&sandbox=" : "", sandbox ? sandbox : "");
	sl_cli_request_or_die(sock, &rq, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res); /* dies with the daemon's message */
	return 0;
}

static const char ca_usage[] =
	"Usage: sluice ca NAME\n"
	"\n"
	"Prints the certificate (PEM) of the sandbox's own CA. sluice intercepts the TLS of the\n"
	"names in the policy's egress.intercept with certificates this CA signs: put it in the\n"
	"sandbox's trust store (e.g. curl --cacert, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE).\n"
	"Its key never leaves sluiced.\n";

int sl_cli_cmd_ca(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;
	char path[256];

	if (sl_cli_has_help(argc, argv)) {
		fputs(ca_usage, stdout);
		return 0;
	}
	if (argc != 1)
		sl_cli_usage_error("ca ", "ca takes exactly one sandbox NAME");
	sl_cli_check_name(argv[0]);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca", argv[0]);
	sl_cli_call_or_die(sock, "GET", path, NULL, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res);
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	sl_buf_free(&res.body);
	return 0;
}

int sl_cli_cmd_stats(int argc, char **argv, const char *sock)
{
	struct sl_cli_resp res;

	if (sl_cli_has_help(argc, argv)) {
		fputs(stats_usage, stdout);
		return 0;
	}
	if (argc)
		sl_cli_usage_error("stats ", "stats takes no arguments");
	sl_cli_call_or_die(sock, "GET", "/v1/metrics", NULL, &res);
	if (res.status != 200)
		sl_cli_json_or_die(&res);
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	sl_buf_free(&res.body);
	return 0;
}

/* Appends @s to @b percent-encoded: everything but RFC 3986's unreserved characters. */
static void append_pct(struct sl_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = *s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '.' || ch == '_' || ch == '~')
			sl_buf_append(b, s, 1);
		else
			sl_buf_printf(b, "%%%02X", ch);
	}
}

/* "/v1/kv/NS[/KEY]", checked and encoded; a bad name is a usage error. */
static void kv_path(struct sl_buf *b, const char *ns, const char *key)
{
	if (!sl_kv_ns_ok(ns))
		sl_cli_usage_error("kv ", "invalid namespace '%s': 1 to 128 of A-Z a-z 0-9 _ . : @ -",
			    ns);
	if (key && !sl_kv_key_ok(key))
		sl_cli_usage_error("kv ", "invalid key: 1 to 512 printable ASCII characters");
	sl_buf_printf(b, "/v1/kv/");
	append_pct(b, ns);
	if (key) {
		sl_buf_printf(b, "/");
		append_pct(b, key);
	}
}

/* Reads stdin to its end, at most SL_KV_VALUE_MAX bytes, into @b. */
static void read_stdin_value(struct sl_buf *b)
{
	char buf[4096];

	if (isatty(STDIN_FILENO))
		fprintf(stderr, "sluice: reading the value from stdin (end it with Ctrl-D)\n");
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			sl_cli_die("reading the value from stdin failed: %s", strerror(errno));
		if (n == 0)
			break;
		if (sl_buf_size(b) + n > SL_KV_VALUE_MAX) {
			OPENSSL_cleanse(buf, sizeof(buf));
			sl_cli_die("the value is larger than %d bytes", SL_KV_VALUE_MAX);
		}
		sl_buf_append(b, buf, n);
	}
	OPENSSL_cleanse(buf, sizeof(buf));
}

static int cmd_kv_put(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 }, val = { 0 };
	struct sl_cli_req rq = { .method = "PUT", .ctype = "application/octet-stream" };
	struct sl_cli_resp res;
	json_t *j;

	if (argc != 2 && argc != 3)
		sl_cli_usage_error("kv ", "kv put takes NS KEY and an optional VALUE");
	kv_path(&path, argv[0], argv[1]);
	if (argc == 3)
		sl_buf_append(&val, argv[2], strlen(argv[2]));
	else
		read_stdin_value(&val);
	if (sl_buf_size(&val) > SL_KV_VALUE_MAX)
		sl_cli_die("the value is larger than %d bytes", SL_KV_VALUE_MAX);
	rq.path = path.data;
	rq.body = val.data ? val.data : "";
	rq.body_len = sl_buf_size(&val);
	sl_cli_request_or_die(sock, &rq, &res);
	if (val.data)
		OPENSSL_cleanse(val.data, val.len);
	sl_buf_free(&val);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	printf("kv %s/%s stored (%lld bytes)\n", argv[0], argv[1], sl_cli_num(j, "bytes"));
	json_decref(j);
	return 0;
}

static int cmd_kv_get(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;

	if (argc != 2)
		sl_cli_usage_error("kv ", "kv get takes NS KEY");
	kv_path(&path, argv[0], argv[1]);
	sl_cli_call_or_die(sock, "GET", path.data, NULL, &res);
	sl_buf_free(&path);
	if (res.status != 200)
		sl_cli_json_or_die(&res); /* dies with the daemon's message */
	fwrite(sl_buf_head(&res.body), 1, sl_buf_size(&res.body), stdout);
	if (res.body.data)
		OPENSSL_cleanse(res.body.data, res.body.len);
	sl_buf_free(&res.body);
	if (fflush(stdout) == EOF)
		sl_cli_die("writing the value failed: %s", strerror(errno));
	return 0;
}

static int cmd_kv_rm(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;
	json_t *j;

	if (argc != 2)
		sl_cli_usage_error("kv ", "kv rm takes NS KEY");
	kv_path(&path, argv[0], argv[1]);
	sl_cli_call_or_die(sock, "DELETE", path.data, NULL, &res);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	printf("kv %s/%s removed\n", argv[0], argv[1]);
	json_decref(j);
	return 0;
}

static int cmd_kv_ls(int argc, char **argv, const char *sock)
{
	struct sl_buf path = { 0 };
	struct sl_cli_resp res;
	json_t *j, *k;
	size_t i;

	if (argc != 1)
		sl_cli_usage_error("kv ", "kv ls takes NS");
	kv_path(&path, argv[0], NULL);
	sl_cli_call_or_die(sock, "GET", path.data, NULL, &res);
	sl_buf_free(&path);
	j = sl_cli_json_or_die(&res);
	json_array_foreach(json_object_get(j, "keys"), i, k)
		printf("%s\n", json_string_value(k));
	json_decref(j);
	return 0;
}

int sl_cli_cmd_kv(int argc, char **argv, const char *sock)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "put", cmd_kv_put },
		{ "get", cmd_kv_get },
		{ "rm", cmd_kv_rm },
		{ "ls", cmd_kv_ls },
		{ 0 },
	};

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(kv_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	return sl_cli_select(cmds, "kv ", argc, argv, sock);
}

int sl_cli_select(const struct sl_cli_cmd *cmds, const char *what, int argc, char **argv,
		  const char *sock)
{
	for (const struct sl_cli_cmd *c = cmds; c->name; c++)
		if (!strcmp(argv[0], c->name))
			return c->func(argc - 1, argv + 1, sock);
	sl_cli_usage_error(what, "unknown %scommand '%s'", what, argv[0]);
}

static int cmd_help(int argc, char **argv, const char *sock)
{
	(void)argc, (void)argv, (void)sock;
	fputs(main_usage, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "sandbox", sl_cli_cmd_sandbox },
		{ "events", sl_cli_cmd_events },
		{ "stats", sl_cli_cmd_stats },
		{ "ca", sl_cli_cmd_ca },
		{ "kv", sl_cli_cmd_kv },
		{ "handler", sl_cli_cmd_handler },
		{ "policy", sl_cli_cmd_policy },
		{ "run", sl_cli_run },
		{ "oci-hook", sl_cli_oci_hook },
		{ "oci-runtime", sl_cli_oci_runtime },
		{ "help", cmd_help },
		{ 0 },
	};
	const char *env = getenv("SLUICE_SOCKET");
	const char *sock = "/run/sluice/sluiced.sock";
	int i = 1;

	if (env && *env)
		sock = env;
	/* Global options come before the command. */
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			sock = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			sock = argv[i] + 9;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(main_usage, stdout);
			return 0;
		} else
			sl_cli_usage_error("", "unknown option '%s'", argv[i]);
	}
	if (i >= argc) {
		fputs(main_usage, stderr);
		return 2;
	}
	return sl_cli_select(cmds, "", argc - i, argv + i, sock);
}
