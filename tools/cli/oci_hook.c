// SPDX-License-Identifier: MIT
/*
 * sluice oci-hook: sluice as an OCI runtime hook (runc, crun; Podman and CRI-O run it from a
 * hooks.d file, containerd from an NRI plugin or a runtime wrapper). The runtime writes the
 * container's state JSON on stdin. At createRuntime the container's init process exists in
 * its cgroup and network namespace but has not started the container's program: the sandbox
 * is registered then, so the program's first connect() is judged already, and a failure
 * stops the container from starting (fail closed). At poststop the sandbox is removed.
 *
 * Who may create containers picks the policy through an annotation, so the annotation only
 * names a file of a directory root controls: a path from anywhere would let a container's
 * creator have sluiced read (and quote, in an error) any file.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "oci_trust.h"
#include "sandbox/sandbox.h"

#define STATE_MAX (1u << 20)
#define DEFAULT_POLICY_DIR "/etc/sluice/policies"

static const char hook_usage[] =
	"Usage: sluice oci-hook [create|delete] [--policy-dir DIR] [--policy FILE] [--no-ca]\n"
	"\n"
	"An OCI runtime hook: reads a container's state JSON (id, status, pid, annotations) on\n"
	"stdin, as runtimes pass it to their hooks. `create` (the createRuntime stage) makes the\n"
	"container a sandbox named by its id exactly, with the cgroup and the network namespace\n"
	"of its pid; `delete` (poststop) removes it: only the sandbox made for that container id,\n"
	"and only once no process is left in its cgroup. An id that is not a valid sandbox name\n"
	"(letters, digits, '_', '.', '-', at most 64) is refused, never renamed. Without a stage,\n"
	"the state's status decides (creating or created: create; stopped: delete).\n"
	"At create, the sandbox's CA is added to the system CA bundles of the container's own\n"
	"root filesystem (etc/ssl/certs/ca-certificates.crt, etc/pki/tls/certs/ca-bundle.crt,\n"
	"etc/ssl/cert.pem, etc/ssl/ca-bundle.pem: those it has), so that a stock image trusts\n"
	"its intercepted hosts.\n"
	"\n"
	"Annotations of the container:\n"
	"  io.sluice.policy    the policy: a file name in the policy directory\n"
	"  io.sluice.handler   an outboundHandlers entry, active from the start\n"
	"  io.sluice.params    its params (a JSON object)\n"
	"\n"
	"  --policy-dir DIR    where io.sluice.policy names files\n"
	"                      (default " DEFAULT_POLICY_DIR ")\n"
	"  --policy FILE       the policy of containers without the annotation (default: such\n"
	"                      containers are left alone)\n"
	"  --no-ca             leave the root filesystem as it is (the CA is given to the\n"
	"                      container another way)\n"
	"\n"
	"Exit status: 0 done (or nothing to do), 1 failed (at create the runtime then does not\n"
	"start the container), 2 usage.\n";

static int fail(const char *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char *id, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sluice oci-hook: ");
	if (id)
		fprintf(stderr, "container %s: ", id);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "sluice oci-hook: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'sluice oci-hook --help'.\n");
	return 2;
}

static json_t *read_state(char *err, size_t errlen)
{
	struct sl_buf b = { 0 };
	char chunk[16384];
	json_error_t jerr;
	json_t *j;

	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "reading the state from stdin failed: %s",
				 strerror(errno));
			sl_buf_free(&b);
			return NULL;
		}
		if (n == 0)
			break;
		if (sl_buf_size(&b) + n > STATE_MAX || sl_buf_append(&b, chunk, n)) {
			snprintf(err, errlen, "the state on stdin is larger than %u bytes",
				 STATE_MAX);
			sl_buf_free(&b);
			return NULL;
		}
	}
	j = json_loadb(sl_buf_head(&b) ? sl_buf_head(&b) : "", sl_buf_size(&b), 0, &jerr);
	sl_buf_free(&b);
	if (!j)
		snprintf(err, errlen, "the state on stdin is not JSON: %s", jerr.text);
	else if (!json_is_object(j))
		snprintf(err, errlen, "the state on stdin is not a JSON object");
	if (j && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/*
 * The sandbox of container @id is named @id, as it is: a name made up from an id (characters
 * replaced, cut at 64) would give two containers one sandbox (`job+1` and `job-1`), and one's
 * hooks would act on the other's. An id that is not a valid sandbox name is refused instead.
 * Runtimes make ids of 64 hex digits, which fit.
 */
static int id_is_name(const char *id)
{
	return sl_sandbox_name_ok(id);
}

/* poststop: DELETE ?container_id=ID, which sluiced honours only for the sandbox made for that
 * container, once no process is left in its cgroup. 0 (removed, or nothing to remove), 1. */
static int hook_delete(const char *sock, const char *id)
{
	struct sl_cli_resp res = { 0 };
	char path[256], err[512];
	int e, r = 0;

	if (!id_is_name(id))
		return 0; /* its create was refused: there is no sandbox of this container */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s?container_id=%s", id, id);
	e = sl_cli_call(sock, "DELETE", path, NULL, &res, err, sizeof(err));
	if (!e && res.status != 200 && res.status != 404) {
		sl_cli_error(&res, err, sizeof(err));
		e = -EIO;
	}
	if (e)
		r = fail(id, "%s", err);
	sl_buf_free(&res.body);
	return r;
}

/* @name resolved inside @dir: the annotation may name a file there, and nothing else. */
static int policy_in_dir(const char *dir, const char *name, char *out, char *err, size_t errlen)
{
	char real_dir[PATH_MAX], joined[PATH_MAX * 2];
	size_t n;

	if (!realpath(dir, real_dir)) {
		snprintf(err, errlen, "policy directory %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(joined, sizeof(joined), "%s/%s", real_dir, name);
	if (!realpath(joined, out)) {
		snprintf(err, errlen, "policy %s: %s in %s", name, strerror(errno), real_dir);
		return -1;
	}
	n = strlen(real_dir);
	if (strncmp(out, real_dir, n) || out[n] != '/') {
		snprintf(err, errlen, "policy %s is not a file of %s", name, real_dir);
		return -1;
	}
	return 0;
}

/* The sandbox's CA into the container's root filesystem (tools/cli/oci_trust.c). 0 or 1. */
static int hook_trust(const char *sock, json_t *state, const char *id, const char *name)
{
	const char *bundle = json_string_value(json_object_get(state, "bundle"));
	struct sl_cli_resp res = { 0 };
	char path[256], err[512];
	int e;

	if (!bundle || !*bundle) {
		fprintf(stderr,
			"sluice oci-hook: container %s: the state has no bundle: the "
			"sandbox CA is not added to its root filesystem\n",
			id);
		return 0;
	}
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/ca", name);
	e = sl_cli_call(sock, "GET", path, NULL, &res, err, sizeof(err));
	if (!e && res.status != 200) {
		sl_cli_error(&res, err, sizeof(err));
		e = -EIO;
	}
	if (!e)
		e = sl_oci_trust_rootfs(bundle,
					sl_buf_head(&res.body) ? sl_buf_head(&res.body) : "",
					sl_buf_size(&res.body), stderr, err, sizeof(err));
	sl_buf_free(&res.body);
	/* The sandbox stays: the runtime does not start the container and its poststop
	 * removes the sandbox once the init process is gone. */
	return e ? fail(id, "%s", err) : 0;
}

static int hook_create(const char *sock, json_t *state, const char *id, const char *name,
		       const char *dir, const char *default_policy, int trust)
{
	json_t *ann = json_object_get(state, "annotations");
	const char *policy = json_string_value(json_object_get(ann, "io.sluice.policy"));
	const char *handler = json_string_value(json_object_get(ann, "io.sluice.handler"));
	const char *params = json_string_value(json_object_get(ann, "io.sluice.params"));
	json_int_t pid = json_integer_value(json_object_get(state, "pid"));
	char path[PATH_MAX], err[512];
	json_t *spec, *p = NULL;

	if (!policy && !default_policy)
		return 0; /* not for sluice */
	if (pid <= 0 || pid > INT_MAX)
		return fail(id, "the state has no pid: run the hook at createRuntime");
	if (policy) {
		if (policy_in_dir(dir, policy, path, err, sizeof(err)))
			return fail(id, "%s", err);
	} else if (!realpath(default_policy, path)) {
		return fail(id, "policy file %s: %s", default_policy, strerror(errno));
	}
	if (params && !handler)
		return fail(id, "io.sluice.params goes with io.sluice.handler");
	if (params) {
		p = json_loads(params, JSON_REJECT_DUPLICATES, NULL);
		if (!json_is_object(p)) {
			json_decref(p);
			return fail(id, "io.sluice.params must be a JSON object");
		}
	}
	spec = json_pack("{s:s, s:I, s:s, s:s}", "name", name, "pid", pid, "policy_file", path,
			 "container_id", id);
	if (!spec) {
		json_decref(p);
		return fail(id, "out of memory");
	}
	if (handler)
		json_object_set_new(spec, "handler", json_string(handler));
	if (p)
		json_object_set_new(spec, "params", p);
	if (sl_cli_add_sandbox(sock, spec, err, sizeof(err)))
		return fail(id, "%s", err);
	if (trust && hook_trust(sock, state, id, name))
		return 1;
	printf("sluice: container %s is sandbox %s (policy %s)\n", id, name, path);
	return 0;
}

int sl_cli_oci_hook(int argc, char **argv, const char *sock)
{
	const char *stage = NULL, *dir = DEFAULT_POLICY_DIR, *default_policy = NULL;
	const char *id, *status;
	char err[512];
	json_t *state;
	int r, create, trust = 1;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(hook_usage, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--policy-dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strncmp(argv[i], "--policy-dir=", 13))
			dir = argv[i] + 13;
		else if (!strcmp(argv[i], "--policy") && i + 1 < argc)
			default_policy = argv[++i];
		else if (!strncmp(argv[i], "--policy=", 9))
			default_policy = argv[i] + 9;
		else if (!strcmp(argv[i], "--no-ca"))
			trust = 0;
		else if (argv[i][0] == '-')
			return usage("unknown option '%s'", argv[i]);
		else if (!stage)
			stage = argv[i];
		else
			return usage("unexpected argument '%s'", argv[i]);
	}
	if (stage && strcmp(stage, "create") && strcmp(stage, "createRuntime") &&
	    strcmp(stage, "delete") && strcmp(stage, "poststop"))
		return usage("unknown stage '%s' (create or delete)", stage);
	state = read_state(err, sizeof(err));
	if (!state)
		return fail(NULL, "%s", err);
	id = json_string_value(json_object_get(state, "id"));
	status = json_string_value(json_object_get(state, "status"));
	if (!id || !*id) {
		json_decref(state);
		return fail(NULL, "the state has no container id");
	}
	if (stage) {
		create = !strncmp(stage, "create", 6);
	} else if (status && (!strcmp(status, "creating") || !strcmp(status, "created"))) {
		create = 1;
	} else if (status && !strcmp(status, "stopped")) {
		create = 0;
	} else {
		r = fail(id,
			 "status '%s': run the hook at createRuntime and poststop, or name "
			 "the stage (create, delete)",
			 status ? status : "");
		json_decref(state);
		return r;
	}
	if (create && !id_is_name(id) &&
	    (json_object_get(json_object_get(state, "annotations"), "io.sluice.policy") ||
	     default_policy))
		r = fail(id,
			 "the id cannot be a sandbox name as it is (letters, digits, '_', '.', "
			 "'-'; at most %d, starting with a letter or digit): refused rather "
			 "than renamed, since a renamed id could collide with another's",
			 SL_NAME_MAX);
	else if (create)
		r = hook_create(sock, state, id, id, dir, default_policy, trust);
	else
		r = hook_delete(sock, id);
	json_decref(state);
	return r;
}
