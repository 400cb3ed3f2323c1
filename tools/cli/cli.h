/* SPDX-License-Identifier: MIT */
/* What the sluice CLI's commands share beyond tools/cli/main.c: a control API client whose
 * errors are returned (sluice run must clean up after any of them), `run` and `oci-hook`. */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <limits.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "core/buf.h"

/* One answer of sluiced. */
struct sl_cli_resp {
	int status;
	struct sl_buf body;
};

/*
 * Sends @method @path with @body (JSON text, or NULL) to the control socket @sock and reads
 * the whole answer into @res (the caller frees res->body). Returns 0, or -errno when sluiced
 * could not be reached or answered garbage; @err then says why.
 */
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
