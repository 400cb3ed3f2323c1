/* SPDX-License-Identifier: MIT */
/* The control API's request decoders and its error body: pure functions of their input (no
 * daemon state), shared by the handlers and tests/fuzz/fuzz_control.c.
 * Threading: any thread; nothing here blocks. */
#ifndef SL_CTL_DECODE_H
#define SL_CTL_DECODE_H

#include <stddef.h>

#include <jansson.h>

#include "sandbox/sandbox.h"

/* A decoded POST /v1/sandboxes. @spec's strings point into @json and @params. */
struct sl_ctl_add {
	struct sl_box_spec spec;
	json_t *json;
	char *params; /* spec.params: the params object as compact JSON text */
};

/*
 * Decodes the body of POST /v1/sandboxes ({name, cgroup?, policy_file?, policy?, handler?,
 * params?, netns?, pid?, container_id?, allow_writable_cgroup?}, nothing else) into @add.
 * Returns 0, or -EINVAL (-ENOMEM) with the reason for a 400 in @err; either way
 * sl_ctl_add_release() frees what @add holds.
 */
int sl_ctl_decode_add(const char *body, size_t len, struct sl_ctl_add *add, char *err,
		      size_t errlen);
void sl_ctl_add_release(struct sl_ctl_add *add);

/* A params member: a JSON object (NULL if absent or null), as compact text in *@out
 * (malloc'd, NULL if absent). 0, or -EINVAL / -ENOMEM with the reason in @err. */
int sl_ctl_params_text(json_t *params, char **out, char *err, size_t errlen);

/* The body of an error answer, {"error": MSG}, @msg cut to 1 KiB and scrubbed to valid UTF-8
 * (messages quote what the client sent). NULL only when out of memory. */
json_t *sl_ctl_error_json(const char *msg);

#endif
