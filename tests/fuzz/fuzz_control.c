// SPDX-License-Identifier: MIT
/*
 * The body of POST /v1/sandboxes, read the way control.c's handle_add() reads it (that
 * function is static and needs a running daemon, so this target repeats its jansson calls
 * verbatim): json_loadb() of the body, json_unpack_ex() of { name, cgroup?, policy_file?,
 * policy?, handler?, params?, netns?, pid? } in strict mode, then the 400 answer built from
 * jansson's error text as respond_error() builds it (scrubbed to valid UTF-8). Invariants: a body either unpacks to a name (and a policy whose
 * length jansson reports) or yields an error that still makes a JSON answer: a refusal
 * never turns into the "out of memory" 500 that respond_json() sends when it cannot build
 * the body. What happens after the unpacking (sl_sandbox_add(), which quotes the name and
 * cgroup in its errors) is not reachable without a daemon and is not covered here.
 */
#include <string.h>

#include <jansson.h>

#include "core/events.h"
#include "fuzz.h"

/* respond_error(): the body of a 4xx answer carrying @msg. */
static void check_error_body(const char *msg)
{
	char text[1024];
	json_t *j;
	char *s;

	snprintf(text, sizeof(text), "%s", msg);
	sl_utf8_scrub(text);
	j = json_pack("{s:s}", "error", text);
	if (!j) {
		fprintf(stderr, "no JSON answer for the error '%s'\n", msg);
		FUZZ_CHECK(!"respond_error() would answer 500 out of memory");
	}
	s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	FUZZ_CHECK(s);
	free(s);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *name = NULL, *cgroup = NULL, *policy_file = NULL, *policy = NULL;
	const char *handler = NULL, *netns = NULL;
	json_t *params = NULL;
	int pid = 0;
	size_t policy_len = 0;
	json_error_t jerr;
	char err[512];
	json_t *j;

	j = json_loadb((const char *)data, size, 0, &jerr);
	if (!j) {
		snprintf(err, sizeof(err), "request body is not valid JSON: %s", jerr.text);
		check_error_body(err);
		return 0;
	}
	if (json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s, s?s, s?s, s?s%, s?s, s?o, s?s, s?i}",
			   "name", &name, "cgroup", &cgroup, "policy_file", &policy_file, "policy",
			   &policy, &policy_len, "handler", &handler, "params", &params, "netns",
			   &netns, "pid", &pid)) {
		snprintf(err, sizeof(err), "bad request: %s", jerr.text);
		check_error_body(err);
	} else {
		FUZZ_CHECK(name);
		FUZZ_CHECK(!policy || strlen(policy) <= policy_len);
	}
	json_decref(j);
	return 0;
}
