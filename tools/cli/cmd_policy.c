// SPDX-License-Identifier: MIT
/* sluice handler set|clear and sluice policy reload: the two ways to switch what a sandbox may
 * reach (PUT and DELETE /v1/sandboxes/NAME/handler, PUT /v1/sandboxes/NAME/policy). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/buf.h"
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
	"\n"
	"Replaces the sandbox's policy with FILE (default: the file it was added with, read\n"
	"again). The switch works like `handler set`: the new kernel layer applies at once and\n"
	"connections it does not allow are closed. A policy with errors changes nothing; the\n"
	"error names the line. An active handler stays active and must exist in the new policy.\n";

/* What a switch closed (handler set, policy reload). */
static void print_closed(json_t *j)
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
	print_closed(j);
	json_decref(j);
	return 0;
}
