// SPDX-License-Identifier: MIT
/* sluice handler set|clear and sluice policy reload: the two ways to switch what a sandbox may
 * reach (PUT and DELETE /v1/sandboxes/NAME/handler, PUT /v1/sandboxes/NAME/policy); sluice
 * policy check (a policy file loaded here, without sluiced) and sluice policy suggest (GET
 * /v1/sandboxes/NAME/suggest: audit mode's records as a policy). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <arpa/inet.h>

#include "core/buf.h"
#include "kernel/rules.h"
#include "lua/lua_host.h"
#include "policy/policy.h"
#include "cli.h"

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
	"       sluice policy check FILE [--verbose]\n"
	"       sluice policy suggest NAME [-o FILE] [--collapse N]\n"
	"\n"
	"Replaces the sandbox's policy with FILE (default: the file it was added with, read\n"
	"again). The switch works like `handler set`: the new kernel layer applies at once and\n"
	"connections it does not allow are closed. A policy with errors changes nothing; the\n"
	"error names the line. An active handler stays active and must exist in the new policy.\n"
	"\n"
	"`check` loads FILE here, as sluiced would (no daemon needed), and prints its errors\n"
	"(exit 1) or \"ok\"; --verbose prints its entries and the kernel rules its addresses\n"
	"compile to. Names become kernel rules only when they resolve. Handlers are not run.\n"
	"\n"
	"`suggest` writes the policy that what sandbox NAME did in audit mode calls for (see\n"
	"`sluice sandbox mode`): its policy kept whole (handlers, env and KV references), with\n"
	"the names, ports and protocols it used added to egress.allow (addresses only where no\n"
	"name it resolved explains them; UNIX sockets to egress.unix), each commented with its\n"
	"count and first and last time. --collapse N writes more than N names one label below a\n"
	"common parent as *.parent, never onto a registrable domain or a public suffix (Public\n"
	"Suffix List: never *.co.uk, *.github.io or *.example.com). Default: never collapse.\n"
	"To stdout, or to FILE with -o.\n";

/* What a switch closed (handler set, policy reload). */
static void print_closed(json_t *j)
{
	json_t *c = json_object_get(j, "closed");

	printf("closed %lld open connection%s (%lld passthrough in the kernel, %lld proxied); "
	       "removed %lld DNS entr%s\n",
	       sl_cli_num(c, "kernel_flows") + sl_cli_num(c, "proxied"),
	       sl_cli_num(c, "kernel_flows") + sl_cli_num(c, "proxied") == 1 ? "" : "s",
	       sl_cli_num(c, "kernel_flows"), sl_cli_num(c, "proxied"),
	       sl_cli_num(c, "dns_entries"), sl_cli_num(c, "dns_entries") == 1 ? "y" : "ies");
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
	print_closed(j);
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

static int cmd_policy_reload(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *file = NULL;
	char abs[PATH_MAX], path[256], *text, *s;
	struct sl_cli_resp res;
	json_t *body, *j, *cur;
	size_t len;

	for (int i = 0; i < argc; i++) {
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
			sl_cli_die("sandbox %s was added with an inline policy: give --policy FILE",
				   name);
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
	print_closed(j);
	json_decref(j);
	return 0;
}

static const char *proto_names(uint8_t protos)
{
	return protos == SL_PROTO_TCP ? "tcp" : protos == SL_PROTO_UDP ? "udp" : "tcp+udp";
}

static void print_entries(const char *what, const struct sl_entry_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct sl_entry *e = &l->v[i];
		char a[INET6_ADDRSTRLEN + 8], ports[16] = "any";

		if (e->kind == SL_ENTRY_ADDR)
			sl_prefix_str(e->family, e->addr, e->plen, a, sizeof(a));
		else
			snprintf(a, sizeof(a), "%s%s", e->kind == SL_ENTRY_WILDCARD ? "*." : "",
				 e->host);
		if (e->has_port && e->port_lo == e->port_hi)
			snprintf(ports, sizeof(ports), "%u", e->port_lo);
		else if (e->has_port)
			snprintf(ports, sizeof(ports), "%u-%u", e->port_lo, e->port_hi);
		else if (!strcmp(what, "intercept"))
			snprintf(ports, sizeof(ports), "80,443");
		printf("  %-9s %-44s %-11s %-7s%s\n", what, a, ports,
		       !strcmp(what, "intercept") ? "tcp" : proto_names(e->protos),
		       e->sni > 0  ? " sni" :
		       e->sni == 0 ? " sni=false" :
				     "");
	}
}

/* sluice policy check FILE [--verbose] */
static int cmd_policy_check(int argc, char **argv, const char *sock)
{
	const char *file = NULL;
	struct sl_lua_opts opts = { 0 };
	struct sl_policy *p = NULL;
	struct sl_rule_set rs;
	struct sl_kentry *ents = NULL, bad;
	size_t len, nents = 0;
	struct sl_lua *lua;
	char err[1024], *text;
	int verbose = 0, e;

	(void)sock;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v"))
			verbose = 1;
		else if (argv[i][0] == '-')
			sl_cli_usage_error("policy ", "unknown option '%s'", argv[i]);
		else if (!file)
			file = argv[i];
		else
			sl_cli_usage_error("policy ", "unexpected argument '%s'", argv[i]);
	}
	if (!file)
		sl_cli_usage_error("policy ", "policy check needs a FILE");
	text = slurp(file, &len);
	lua = sl_lua_load(file, text, len, &opts, "check", &p, err, sizeof(err));
	free(text);
	if (!lua) {
		fprintf(stderr, "sluice: %s\n", err);
		return 1;
	}
	sl_rule_set_init(&rs);
	e = sl_policy_rules(p, &rs, err, sizeof(err));
	if (!e && sl_rules_compile(&rs, &ents, &nents, &bad))
		e = -E2BIG, snprintf(err, sizeof(err), "too many port ranges for one address");
	if (e) {
		fprintf(stderr, "sluice: %s: %s\n", file, err);
	} else if (verbose) {
		printf("%s: ok\nentries:\n", file);
		print_entries("allow", &p->allow);
		print_entries("intercept", &p->intercept);
		print_entries("private", &p->private_ranges);
		for (size_t i = 0; i < p->unix_socks.n; i++) {
			char u[SL_UNIX_PATH_MAX * 4 + 2];

			sl_unix_str(&p->unix_socks.v[i], u, sizeof(u));
			printf("  %-9s %s\n", "unix", u);
		}
		printf("kernel rules (addresses; names are added as they resolve): %zu\n", nents);
		for (size_t i = 0; i < nents; i++) {
			const struct sl_kentry *k = &ents[i];
			char a[INET6_ADDRSTRLEN + 8];

			sl_prefix_str(k->family, k->addr, k->plen, a, sizeof(a));
			for (uint32_t r = 0; r < k->val.n && r < SL_MAX_PORT_RANGES; r++)
				printf("  %-44s %5u-%-5u %-7s %s\n", a, k->val.r[r].lo,
				       k->val.r[r].hi, proto_names(k->val.r[r].protos),
				       k->val.r[r].verdict == SL_VERDICT_PROXY ? "proxy" : "allow");
		}
		printf("handlers: %s\n", sl_lua_has_handlers(lua) ? "yes" : "none");
	} else {
		printf("%s: ok\n", file);
	}
	free(ents);
	sl_rule_set_free(&rs);
	sl_policy_free(p);
	sl_lua_unref(lua);
	return e ? 1 : 0;
}

int sl_cli_suggest(const char *sock, const char *name, unsigned collapse, const char *out,
		   char *err, size_t errlen)
{
	struct sl_cli_resp res = { 0 };
	char path[256];
	const char *text;
	json_t *j = NULL;
	FILE *f = NULL;
	int e;

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/suggest?collapse=%u", name, collapse);
	e = sl_cli_call(sock, "GET", path, NULL, &res, err, errlen);
	if (e)
		goto out;
	if (res.status != 200) {
		sl_cli_error(&res, err, errlen);
		e = -EINVAL;
		goto out;
	}
	j = sl_cli_json(&res);
	text = json_string_value(json_object_get(j, "policy"));
	if (!text) {
		snprintf(err, errlen, "sluiced answered without a policy");
		e = -EINVAL;
		goto out;
	}
	f = out && strcmp(out, "-") ? fopen(out, "we") : stdout;
	if (!f || fputs(text, f) == EOF || (f != stdout && fclose(f))) {
		e = -errno;
		snprintf(err, errlen, "writing %s: %s", out, strerror(errno));
		if (f && f != stdout)
			fclose(f);
	} else if (f == stdout) {
		fflush(stdout);
	}
out:
	json_decref(j);
	sl_buf_free(&res.body);
	return e;
}

/* sluice policy suggest NAME [-o FILE] [--collapse N] */
static int cmd_policy_suggest(int argc, char **argv, const char *sock)
{
	const char *name = NULL, *out = NULL;
	unsigned long collapse = 0;
	char err[512];

	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			out = argv[++i];
		} else if (!strcmp(argv[i], "--collapse") && i + 1 < argc) {
			char *end;

			collapse = strtoul(argv[++i], &end, 10);
			if (*end || end == argv[i] || collapse > 1000000)
				sl_cli_usage_error("policy ", "--collapse takes a number, not '%s'",
						   argv[i]);
		} else if (argv[i][0] == '-') {
			sl_cli_usage_error("policy ", "unknown option '%s'", argv[i]);
		} else if (!name) {
			name = argv[i];
		} else {
			sl_cli_usage_error("policy ", "unexpected argument '%s'", argv[i]);
		}
	}
	if (!name)
		sl_cli_usage_error("policy ", "policy suggest needs NAME");
	sl_cli_check_name(name);
	if (sl_cli_suggest(sock, name, (unsigned)collapse, out, err, sizeof(err)))
		sl_cli_die("%s", err);
	if (out && strcmp(out, "-"))
		fprintf(stderr, "sluice: suggested policy for sandbox %s written to %s\n", name,
			out);
	return 0;
}

int sl_cli_cmd_policy(int argc, char **argv, const char *sock)
{
	static const struct sl_cli_cmd cmds[] = {
		{ "reload", cmd_policy_reload },
		{ "check", cmd_policy_check },
		{ "suggest", cmd_policy_suggest },
		{ 0 },
	};

	if (argc < 1 || sl_cli_has_help(argc, argv)) {
		fputs(policy_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	return sl_cli_select(cmds, "policy ", argc, argv, sock);
}
