// SPDX-License-Identifier: MIT
/*
 * What the control API reads from a request body, apart from the daemon: each decoder takes
 * bytes and returns a struct or a reason, so tests/fuzz/fuzz_control.c runs the very code the
 * handlers run, without a daemon.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/ctl_decode.h"
#include "core/events.h"

int sl_ctl_params_text(json_t *params, char **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!params || json_is_null(params))
		return 0;
	if (!json_is_object(params)) {
		snprintf(err, errlen, "params must be a JSON object");
		return -EINVAL;
	}
	*out = json_dumps(params, JSON_COMPACT);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int sl_ctl_decode_add(const char *body, size_t len, struct sl_ctl_add *add, char *err,
		      size_t errlen)
{
	struct sl_box_spec *spec = &add->spec;
	const char *policy_file = NULL, *policy = NULL, *mode = NULL;
	json_t *params = NULL;
	json_error_t jerr;
	int e;

	memset(add, 0, sizeof(*add));
	add->json = json_loadb(body, len, 0, &jerr);
	if (!add->json) {
		snprintf(err, errlen, "request body is not valid JSON: %s", jerr.text);
		return -EINVAL;
	}
	if (json_unpack_ex(add->json, &jerr, JSON_STRICT,
			   "{s:s, s?s, s?s, s?s%, s?s, s?o, s?s, s?i, s?s, s?b, s?s}", "name",
			   &spec->name, "cgroup", &spec->cgroup, "policy_file", &policy_file,
			   "policy", &policy, &spec->policy_len, "handler", &spec->handler,
			   "params", &params, "netns", &spec->netns, "pid", &spec->pid,
			   "container_id", &spec->container_id, "allow_writable_cgroup",
			   &spec->allow_writable_cgroup, "mode", &mode)) {
		snprintf(err, errlen, "bad request: %s", jerr.text);
		return -EINVAL;
	}
	if (mode && strcmp(mode, "audit") && strcmp(mode, "enforce")) {
		snprintf(err, errlen, "bad request: mode must be \"audit\" or \"enforce\"");
		return -EINVAL;
	}
	spec->audit = mode && !strcmp(mode, "audit");
	spec->policy_path = policy_file;
	spec->policy_src = policy;
	e = sl_ctl_params_text(params, &add->params, err, errlen);
	spec->params = add->params;
	return e;
}

void sl_ctl_add_release(struct sl_ctl_add *add)
{
	free(add->params);
	json_decref(add->json);
	memset(add, 0, sizeof(*add));
}

json_t *sl_ctl_error_json(const char *msg)
{
	char text[1024];

	/* Messages quote what the client sent (jansson's parse errors, names), possibly cut
	 * inside a UTF-8 sequence: JSON wants valid UTF-8. */
	snprintf(text, sizeof(text), "%s", msg);
	sl_utf8_scrub(text);
	return json_pack("{s:s}", "error", text);
}
