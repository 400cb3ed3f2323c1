// SPDX-License-Identifier: MIT
/* policy/suggest.c: the Public Suffix List bound on collapsing, and the suggestion's text. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/suggest.h"

static void test_wildcard_never_at_or_above_a_registrable_domain(void **state)
{
	(void)state;
	/* Public suffixes, ICANN and private sections. */
	assert_false(sl_suggest_wildcard_ok("co.uk"));
	assert_false(sl_suggest_wildcard_ok("github.io"));
	assert_false(sl_suggest_wildcard_ok("com"));
	assert_false(sl_suggest_wildcard_ok("s3.amazonaws.com"));
	/* Registrable domains themselves. */
	assert_false(sl_suggest_wildcard_ok("example.com"));
	assert_false(sl_suggest_wildcard_ok("example.co.uk"));
	assert_false(sl_suggest_wildcard_ok("someone.github.io"));
	/* Strictly below one. */
	assert_true(sl_suggest_wildcard_ok("cdn.example.com"));
	assert_true(sl_suggest_wildcard_ok("a.b.example.co.uk"));
	assert_true(sl_suggest_wildcard_ok("pages.someone.github.io"));
	assert_false(sl_suggest_wildcard_ok(""));
	assert_false(sl_suggest_wildcard_ok("localhost"));
}

static struct sl_sg_name nm(const char *name, uint16_t port)
{
	struct sl_sg_name n = { .port = port,
				.proto = IPPROTO_TCP,
				.count = 2,
				.first_s = 1764950400,
				.last_s = 1764950460 };

	snprintf(n.name, sizeof(n.name), "%s", name);
	return n;
}

static char *suggest(struct sl_sg_name *v, size_t n, unsigned collapse)
{
	struct sl_suggest_in in = {
		.sandbox = "t", .names = v, .nnames = n, .collapse = collapse, .now_s = 1764950500
	};
	char *s = sl_suggest_policy(&in);

	assert_non_null(s);
	return s;
}

static void test_many_names_below_a_public_suffix_never_collapse(void **state)
{
	struct sl_sg_name v[40];
	char *s;

	(void)state;
	for (int i = 0; i < 20; i++) {
		char a[64], b[64];

		snprintf(a, sizeof(a), "user%d.github.io", i);
		snprintf(b, sizeof(b), "shop%d.co.uk", i);
		v[i] = nm(a, 443);
		v[20 + i] = nm(b, 443);
	}
	s = suggest(v, 40, 3);
	assert_null(strstr(s, "*.github.io"));
	assert_null(strstr(s, "*.co.uk"));
	assert_non_null(strstr(s, "{ \"user7.github.io:443\", proto = \"tcp\" },"));
	assert_non_null(strstr(s, "{ \"shop19.co.uk:443\", proto = \"tcp\" },"));
	free(s);
}

static void test_siblings_collapse_past_the_threshold_only(void **state)
{
	struct sl_sg_name v[8];
	char *s;

	(void)state;
	for (int i = 0; i < 5; i++) {
		char a[64];

		snprintf(a, sizeof(a), "n%d.cdn.example.com", i);
		v[i] = nm(a, 443);
	}
	v[5] = nm("a.example.com", 443); /* parent example.com is registrable: never */
	v[6] = nm("b.example.com", 443);
	v[7] = nm("n0.cdn.example.com", 443); /* a duplicate: merged */
	s = suggest(v, 8, 4);
	assert_non_null(strstr(s, "{ \"*.cdn.example.com:443\", proto = \"tcp\" },"));
	assert_non_null(strstr(s, "5 names"));
	assert_null(strstr(s, "*.example.com"));
	assert_non_null(strstr(s, "{ \"a.example.com:443\", proto = \"tcp\" },"));
	free(s);
	/* At the threshold (5 names, threshold 5): each name. */
	for (int i = 0; i < 5; i++) {
		char a[64];

		snprintf(a, sizeof(a), "n%d.cdn.example.com", i);
		v[i] = nm(a, 443);
	}
	s = suggest(v, 5, 5);
	assert_null(strstr(s, "*.cdn"));
	free(s);
	/* 0: never. */
	s = suggest(v, 5, 0);
	assert_null(strstr(s, "*.cdn"));
	free(s);
}

static void test_base_policy_kept_whole(void **state)
{
	struct sl_sg_name v[1] = { nm("npm.example.org", 443) };
	struct sl_suggest_in in = {
		.sandbox = "t",
		.names = v,
		.nnames = 1,
		.now_s = 1764950500,
		.base_src = "return { egress = { intercept = { \"api.test\" } },\n"
			    "  outbound = function(req, env) return fetch(req) end }\n",
		.base_path = "/p/base.lua",
	};
	char *s;

	(void)state;
	s = sl_suggest_policy(&in);
	assert_non_null(s);
	assert_non_null(strstr(s, "outbound = function(req, env) return fetch(req) end"));
	assert_non_null(strstr(s, "(/p/base.lua)"));
	assert_non_null(strstr(s, "first 2025-12-05T16:00:00Z, last 2025-12-05T16:01:00Z"));
	assert_non_null(strstr(s, "return policy\n"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wildcard_never_at_or_above_a_registrable_domain),
		cmocka_unit_test(test_many_names_below_a_public_suffix_never_collapse),
		cmocka_unit_test(test_siblings_collapse_past_the_threshold_only),
		cmocka_unit_test(test_base_policy_kept_whole),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
