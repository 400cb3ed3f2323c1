/* SPDX-License-Identifier: MIT */
/* What the sluice CLI's files share: the one control API client (errors returned, for `run`
 * and `oci-hook`, which must clean up after any of them, and its dying wrappers for the
 * other commands), the command table, the commands, and `run`'s trust files and summary.
 * Threading: the CLI's one thread; every call blocks on the control socket (each wait
 * bounded but a followed event stream's) or on files. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "core/buf.h"

/* One request to sluiced. */
struct sl_cli_req {
	const char *method, *path;
	const void *body; /* NULL: none */
	size_t body_len;
	const char *ctype; /* of the body; NULL: application/json */
	FILE *stream; /* a 200's body is copied here as it arrives (GET /v1/events) */
};

/* One answer of sluiced. */
struct sl_cli_resp {
	int status;
	struct sl_buf body; /* empty when @stream took it */
};

/*
 * Sends @rq to the control socket @sock and reads the answer into @res (the caller frees
 * res->body). Returns 0, or -errno when sluiced could not be reached or answered garbage;
 * @err then says why. The request and the buffers it read into are wiped: a KV value is a
 * secret.
 */
int sl_cli_request(const char *sock, const struct sl_cli_req *rq, struct sl_cli_resp *res,
		   char *err, size_t errlen);
/* sl_cli_request() of @method @path with @body (JSON text, or NULL). */
int sl_cli_call(const char *sock, const char *method, const char *path, const char *body,
		struct sl_cli_resp *res, char *err, size_t errlen);

/* The answer's body as JSON (new reference, NULL if it is not). */
json_t *sl_cli_json(const struct sl_cli_resp *res);

/* The message of a failed answer ({"error": ...}), copied into @err. */
void sl_cli_error(const struct sl_cli_resp *res, char *err, size_t errlen);

/* POST /v1/sandboxes with @spec (stolen). 0, or -errno with the reason in @err. */
int sl_cli_add_sandbox(const char *sock, json_t *spec, char *err, size_t errlen);
/* DELETE /v1/sandboxes/NAME. 0, -ENOENT (no such sandbox), or -errno with @err. */
int sl_cli_rm_sandbox(const char *sock, const char *name, char *err, size_t errlen);

/*
 * The dying side, for commands that have nothing to clean up: an error is one line on
 * stderr and exit status 1 (sluiced refused or could not be reached), 2 for a usage mistake
 * (with a pointer to `sluice @cmd--help`).
 */
void sl_cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void sl_cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
/* sl_cli_request(), dying on an error. */
void sl_cli_request_or_die(const char *sock, const struct sl_cli_req *rq, struct sl_cli_resp *res);
/* sl_cli_call(), dying on an error. */
void sl_cli_call_or_die(const char *sock, const char *method, const char *path, const char *body,
			struct sl_cli_resp *res);
/* The answer's JSON (frees res->body); a 4xx/5xx dies with sluiced's error message. */
json_t *sl_cli_json_or_die(struct sl_cli_resp *res);

/* One command, or one subcommand of an object (bpftool's struct cmd): @func gets the
 * arguments after its name and the control socket; it returns the exit status. */
struct sl_cli_cmd {
	const char *name;
	int (*func)(int argc, char **argv, const char *sock);
};
/* Runs the entry of @cmds (ended by a NULL name) that argv[0] names; an unknown name is a
 * usage error, "unknown @what" "command" (@what is "" or the object and a space). */
int sl_cli_select(const struct sl_cli_cmd *cmds, const char *what, int argc, char **argv,
		  const char *sock);

/* Small helpers of the commands (cmd_*.c). */
int sl_cli_has_help(int argc, char **argv);
void sl_cli_check_name(const char *name); /* a sandbox name in a URL path; else usage error */
json_t *sl_cli_parse_params(const char *cmd, const char *text); /* --params JSON, or NULL */
void sl_cli_print_json(json_t *j);
const char *sl_cli_str(json_t *o, const char *key); /* "" when absent */
long long sl_cli_num(json_t *o, const char *key);

/* The command objects, one file each: cmd_sandbox.c, cmd_policy.c (handler and policy),
 * cmd_kv.c, cmd_events.c (events, ca, stats). */
int sl_cli_cmd_sandbox(int argc, char **argv, const char *sock);
int sl_cli_cmd_handler(int argc, char **argv, const char *sock);
int sl_cli_cmd_policy(int argc, char **argv, const char *sock);
/* GET /v1/sandboxes/@name/suggest into the file @out ("-" or NULL: stdout). 0, or -errno with
 * @err. */
int sl_cli_suggest(const char *sock, const char *name, unsigned collapse, const char *out,
		   char *err, size_t errlen);
int sl_cli_cmd_kv(int argc, char **argv, const char *sock);
int sl_cli_cmd_events(int argc, char **argv, const char *sock);
int sl_cli_cmd_ca(int argc, char **argv, const char *sock);
int sl_cli_cmd_stats(int argc, char **argv, const char *sock);

/* sluice run ARGS (tools/cli/run.c) and sluice oci-hook ARGS (tools/cli/oci_hook.c): the exit
 * status. */
int sl_cli_run(int argc, char **argv, const char *sock);
int sl_cli_oci_hook(int argc, char **argv, const char *sock);
/* sluice oci-runtime ARGS (tools/cli/oci_runtime.c): runc with the hooks added; returns only on
 * failure (the exit status). */
int sl_cli_oci_runtime(int argc, char **argv, const char *sock);

/*
 * The trust files of a sluice run (tools/cli/run_trust.c): the sandbox CA alone, the system store
 * plus the sandbox CA, a hashed directory with the sandbox CA, a PKCS12 truststore for Java
 * ("" when no Java is there), all in @dir.
 */
struct sl_run_trust {
	char dir[PATH_MAX - 64];
	char ca[PATH_MAX], bundle[PATH_MAX], certdir[PATH_MAX], hashed[PATH_MAX], p12[PATH_MAX];
	char certpath[2 * PATH_MAX]; /* SSL_CERT_DIR: certdir, then the system's directory */
};

/* Makes the trust files for the sandbox CA @ca_pem under $TMPDIR. 0, or -errno with the reason
 * in @err; what was made is removed by sl_run_trust_remove() either way. */
int sl_run_trust_write(struct sl_run_trust *t, const char *ca_pem, size_t ca_len, char *err,
		       size_t errlen);
/* Points every variable a TLS client reads at them (the command's side of the fork). */
int sl_run_trust_env(const struct sl_run_trust *t);
void sl_run_trust_remove(struct sl_run_trust *t);

/* Prints to @out what sandbox @name was denied, from its counters and events (nothing if
 * nothing was). Called before the sandbox is removed. 0 or -errno (nothing printed). */
int sl_run_summary(const char *sock, const char *name, FILE *out);

#endif
