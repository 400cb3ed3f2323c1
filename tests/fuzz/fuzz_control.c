// SPDX-License-Identifier: MIT
/*
 * The body of POST /v1/sandboxes, decoded by the handler's own sl_ctl_decode_add()
 * (control/ctl_decode.c), and a refusal's 400 answer built by the handler's own
 * sl_ctl_error_json(). Invariants: a body either decodes to a name (and a policy whose length
 * jansson reports) or yields an error that still makes a JSON answer: a refusal never turns
 * into the "out of memory" 500 that respond_json() sends when it cannot build the body. What
 * happens after the decoding (sl_sandbox_add(), which quotes the name and cgroup in its
 * errors) is not reachable without a daemon and is not covered here.
 */
#include <string.h>

#include <jansson.h>

#include "control/ctl_decode.h"
#include "fuzz.h"

/* respond_error(): the body of a 4xx answer carrying @msg. */
static void check_error_body(const char *msg)
{
	json_t *j = sl_ctl_error_json(msg);
	char *s;

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
	struct sl_ctl_add add;
	char err[512];

	if (sl_ctl_decode_add((const char *)data, size, &add, err, sizeof(err))) {
		check_error_body(err);
	} else {
		FUZZ_CHECK(add.spec.name);
		FUZZ_CHECK(!add.spec.policy_src ||
			   strlen(add.spec.policy_src) <= add.spec.policy_len);
		FUZZ_CHECK(!add.spec.params || add.spec.params == add.params);
	}
	sl_ctl_add_release(&add);
	return 0;
}
