// SPDX-License-Identifier: MIT
/*
 * sluice: the command line of sluice, a thin client of sluiced's control API (HTTP/1.1 and
 * JSON on a unix socket). Every error is one line on stderr and a non-zero exit: 1 when the
 * daemon refused or could not be reached, 2 for a usage mistake. This file: the global
 * options, the table of commands and the helpers they share; each command object is a
 * cmd_*.c of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

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
	"  policy check FILE [--verbose]                  load a policy: its errors or its rules\n"
	"  policy suggest NAME [-o FILE]                  a policy from what audit mode saw\n"
	"  sandbox mode NAME audit|enforce                audit: allow and record, enforce nothing\n"
	"  kv put NS KEY [VALUE]                          store a value (stdin without VALUE)\n"
	"  kv get NS KEY | kv rm NS KEY | kv ls NS        read, remove, list keys\n"
	"\n"
	"Options:\n"
	"  --socket PATH   sluiced's control socket (default $SLUICE_SOCKET or\n"
	"                  /run/sluice/sluiced.sock)\n"
	"  -h, --help      help; `sluice COMMAND --help` for a command\n";

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
