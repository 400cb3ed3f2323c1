// SPDX-License-Identifier: MIT
/*
 * sluice oci-runtime: a wrapper around runc for the runtimes that read no hooks.d (Docker,
 * containerd's runtime handlers). Called with runc's own command line, it adds the sluice hooks
 * (createRuntime: `sluice oci-hook create`, poststop: `sluice oci-hook delete`) to the bundle's
 * config.json of a `create` or `run`, then execs runc with the same arguments; every other
 * command goes to runc untouched.
 *
 * Docker (20.10) sets no OCI annotations, so the policy can also come from the container's
 * environment: SLUICE_POLICY, SLUICE_HANDLER and SLUICE_PARAMS become io.sluice.policy,
 * io.sluice.handler and io.sluice.params where the annotation is not set already. Whoever sets
 * a container's environment creates it and could set the annotation: no new power.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_RUNTIME "/usr/sbin/runc"
#define HOOK_ARGS_MAX 32

static const char rt_usage[] =
	"Usage: sluice [--socket PATH] oci-runtime [--runtime PATH] [--hook PATH]\n"
	"              [--hook-arg ARG]... -- RUNTIME-ARGS...\n"
	"\n"
	"A runc wrapper for runtimes without hooks.d (Docker's \"runtimes\" in daemon.json,\n"
	"containerd's BinaryName). For `create` and `run` it adds the sluice OCI hook to the\n"
	"bundle's config.json (createRuntime: `sluice oci-hook create`, poststop: `sluice\n"
	"oci-hook delete`, with --socket as given here), then execs the runtime with\n"
	"RUNTIME-ARGS as they are; other commands are passed on untouched. The environment\n"
	"variables SLUICE_POLICY, SLUICE_HANDLER and SLUICE_PARAMS of the container become the\n"
	"annotations io.sluice.policy, io.sluice.handler and io.sluice.params when those are not\n"
	"set (Docker sets no annotations).\n"
	"\n"
	"  --runtime PATH   the OCI runtime run afterwards (default " DEFAULT_RUNTIME ")\n"
	"  --hook PATH      the sluice binary the hooks run (default: this one)\n"
	"  --hook-arg ARG   an option of oci-hook (--policy-dir=DIR, --policy=FILE, --no-ca);\n"
	"                   repeatable\n"
	"\n"
	"Exit status: the runtime's; 1 if config.json could not be changed (the runtime is not\n"
	"run: a container meant for sluice never starts without its hooks), 2 usage.\n";

struct rt_opts {
	const char *runtime, *hook, *sock;
	const char *hook_args[HOOK_ARGS_MAX];
	int n_hook_args;
};

/* runc's (and crun's) global options that take a value: the command is the first argument
 * that is neither one of them, their value, nor another option. */
static int global_takes_value(const char *a)
{
	static const char *const with_value[] = { "--root", "--log",	  "--log-format",
						  "--criu", "--rootless", "--cgroup-manager" };

	for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++)
		if (!strcmp(a, with_value[i]))
			return 1;
	return 0;
}

/* The bundle directory of `create`/`run` arguments @argv (after the command), "." (runc's
 * default, the working directory) if none is given. */
static const char *find_bundle(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "--bundle") || !strcmp(argv[i], "-b")) && i + 1 < argc)
			return argv[i + 1];
		if (!strncmp(argv[i], "--bundle=", 9))
			return argv[i] + 9;
		if (!strncmp(argv[i], "-b=", 3))
			return argv[i] + 3;
	}
	return ".";
}

static json_t *hook_entry(const struct rt_opts *o, const char *stage)
{
	json_t *args = json_array();

	json_array_append_new(args, json_string("sluice"));
	json_array_append_new(args, json_string("--socket"));
	json_array_append_new(args, json_string(o->sock));
	json_array_append_new(args, json_string("oci-hook"));
	json_array_append_new(args, json_string(stage));
	for (int i = 0; i < o->n_hook_args; i++)
		json_array_append_new(args, json_string(o->hook_args[i]));
	return json_pack("{s:s, s:o}", "path", o->hook, "args", args);
}

/* Appends @entry to hooks.@stage of @cfg unless an equal one is there (a bundle created
 * twice). Steals @entry. 0 or -ENOMEM. */
static int add_hook(json_t *cfg, const char *stage, json_t *entry)
{
	json_t *hooks = json_object_get(cfg, "hooks"), *list;
	size_t i;
	json_t *h;

	if (!entry)
		return -ENOMEM;
	if (!json_is_object(hooks)) {
		hooks = json_object();
		json_object_set_new(cfg, "hooks", hooks);
	}
	list = json_object_get(hooks, stage);
	if (!json_is_array(list)) {
		list = json_array();
		json_object_set_new(hooks, stage, list);
	}
	json_array_foreach(list, i, h) {
		if (json_equal(h, entry)) {
			json_decref(entry);
			return 0;
		}
	}
	return json_array_append_new(list, entry) ? -ENOMEM : 0;
}

/* io.sluice.* annotations from SLUICE_* of process.env, where not set already. */
static void env_annotations(json_t *cfg)
{
	static const char *const map[][2] = {
		{ "SLUICE_POLICY=", "io.sluice.policy" },
		{ "SLUICE_HANDLER=", "io.sluice.handler" },
		{ "SLUICE_PARAMS=", "io.sluice.params" },
	};
	json_t *env = json_object_get(json_object_get(cfg, "process"), "env");
	json_t *ann = json_object_get(cfg, "annotations");
	size_t i;
	json_t *v;

	json_array_foreach(env, i, v) {
		const char *s = json_string_value(v);

		for (size_t k = 0; s && k < sizeof(map) / sizeof(map[0]); k++) {
			if (strncmp(s, map[k][0], strlen(map[k][0])))
				continue;
			if (!json_is_object(ann)) {
				ann = json_object();
				json_object_set_new(cfg, "annotations", ann);
			}
			if (!json_object_get(ann, map[k][1]))
				json_object_set_new(ann, map[k][1],
						    json_string(s + strlen(map[k][0])));
		}
	}
}

/* Rewrites @bundle/config.json with the hooks (a new file renamed over the old one, same
 * mode). 0 or 1 with a message on stderr. */
static int edit_config(const struct rt_opts *o, const char *bundle)
{
	char path[PATH_MAX], tmp[PATH_MAX + 16];
	json_t *cfg = NULL;
	json_error_t jerr;
	struct stat st;
	int fd = -1, r = 1;
	FILE *f = NULL;

	snprintf(path, sizeof(path), "%s/config.json", bundle);
	snprintf(tmp, sizeof(tmp), "%s.sluice.tmp", path);
	if (stat(path, &st) == -1) {
		fprintf(stderr, "sluice oci-runtime: %s: %s\n", path, strerror(errno));
		goto out;
	}
	cfg = json_load_file(path, 0, &jerr);
	if (!json_is_object(cfg)) {
		fprintf(stderr, "sluice oci-runtime: %s: %s\n", path,
			cfg ? "not a JSON object" : jerr.text);
		goto out;
	}
	env_annotations(cfg);
	if (add_hook(cfg, "createRuntime", hook_entry(o, "create")) ||
	    add_hook(cfg, "poststop", hook_entry(o, "delete"))) {
		fprintf(stderr, "sluice oci-runtime: out of memory\n");
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777);
	if (fd == -1 || !(f = fdopen(fd, "w"))) {
		fprintf(stderr, "sluice oci-runtime: %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (json_dumpf(cfg, f, JSON_COMPACT) || fflush(f) || fsync(fileno(f)) == -1) {
		fprintf(stderr, "sluice oci-runtime: writing %s failed: %s\n", tmp,
			strerror(errno));
		goto out;
	}
	if (rename(tmp, path) == -1) {
		fprintf(stderr, "sluice oci-runtime: %s: %s\n", path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (f)
		fclose(f);
	if (fd != -1)
		close(fd);
	if (r)
		unlink(tmp);
	json_decref(cfg);
	return r;
}

int sl_cli_oci_runtime(int argc, char **argv, const char *sock)
{
	struct rt_opts o = { .runtime = DEFAULT_RUNTIME, .sock = sock };
	char self[PATH_MAX];
	const char *cmd = NULL;
	int i = 0, c;

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(rt_usage, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--runtime") && i + 1 < argc) {
			o.runtime = argv[++i];
		} else if (!strcmp(argv[i], "--hook") && i + 1 < argc) {
			o.hook = argv[++i];
		} else if (!strcmp(argv[i], "--hook-arg") && i + 1 < argc) {
			if (o.n_hook_args == HOOK_ARGS_MAX) {
				fprintf(stderr, "sluice oci-runtime: more than %d --hook-arg\n",
					HOOK_ARGS_MAX);
				return 2;
			}
			o.hook_args[o.n_hook_args++] = argv[++i];
		} else {
			fprintf(stderr,
				"sluice oci-runtime: unknown option '%s' (the runtime's "
				"arguments go after --)\nTry 'sluice oci-runtime --help'.\n",
				argv[i]);
			return 2;
		}
	}
	if (i >= argc || strcmp(argv[i - 1], "--")) {
		fprintf(stderr, "sluice oci-runtime: no runtime arguments (they go after --)\n"
				"Try 'sluice oci-runtime --help'.\n");
		return 2;
	}
	if (!o.hook) {
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n <= 0) {
			fprintf(stderr, "sluice oci-runtime: /proc/self/exe: %s (give --hook)\n",
				strerror(errno));
			return 1;
		}
		self[n] = 0;
		o.hook = self;
	}
	for (c = i; c < argc; c++) {
		if (argv[c][0] != '-') {
			cmd = argv[c];
			break;
		}
		if (global_takes_value(argv[c]))
			c++;
	}
	if (cmd && (!strcmp(cmd, "create") || !strcmp(cmd, "run")) &&
	    edit_config(&o, find_bundle(argc - c - 1, argv + c + 1)))
		return 1;
	/* argv[i - 1] is "--": the runtime's argv[0] goes there. */
	argv[i - 1] = (char *)o.runtime;
	execv(o.runtime, argv + i - 1);
	fprintf(stderr, "sluice oci-runtime: %s: %s\n", o.runtime, strerror(errno));
	return 127;
}
