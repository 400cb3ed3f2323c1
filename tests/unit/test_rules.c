// SPDX-License-Identifier: MIT
/* Rule compilation: merging covering prefixes, subsumption, limits. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "kernel/rules.h"

static struct sl_addr_rule rule(const char *addr, int plen, uint16_t lo, uint16_t hi,
				uint8_t protos, uint8_t verdict, uint64_t expires)
{
	struct sl_addr_rule r = { .plen = plen,
				  .port_lo = lo,
				  .port_hi = hi,
				  .protos = protos,
				  .verdict = verdict,
				  .expires_ns = expires };

	if (inet_pton(AF_INET, addr, r.addr) == 1)
		r.family = AF_INET;
	else {
		assert_int_equal(inet_pton(AF_INET6, addr, r.addr), 1);
		r.family = AF_INET6;
	}
	return r;
}

static const struct sl_kentry *find(const struct sl_kentry *e, size_t n, const char *prefix)
{
	char buf[64];

	for (size_t i = 0; i < n; i++) {
		sl_prefix_str(e[i].family, e[i].addr, e[i].plen, buf, sizeof(buf));
		if (!strcmp(buf, prefix))
			return &e[i];
	}
	fail_msg("no entry %s", prefix);
	return NULL;
}

/* Whether @e has a range covering port @p with @verdict. */
static int has(const struct sl_kentry *e, uint16_t p, uint8_t verdict)
{
	for (uint32_t i = 0; i < e->val.n; i++)
		if (e->val.r[i].lo <= p && p <= e->val.r[i].hi && e->val.r[i].verdict == verdict)
			return 1;
	return 0;
}

static void test_longer_prefix_inherits_covering_rules(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e;
	size_t n;

	(void)state;
	sl_rule_set_init(&rs);
	struct sl_addr_rule rules[] = {
		rule("10.0.0.0", 8, 22, 22, SL_PROTO_ANY, SL_VERDICT_ALLOW, 0),
		rule("10.1.0.0", 16, 80, 80, SL_PROTO_TCP, SL_VERDICT_ALLOW, 0),
		rule("10.1.2.3", 32, 443, 443, SL_PROTO_ANY, SL_VERDICT_ALLOW, 0),
		rule("192.168.0.0", 16, 53, 53, SL_PROTO_UDP, SL_VERDICT_ALLOW, 0),
	};
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(sl_rule_set_add(&rs, &rules[i]), 0);
	assert_int_equal(sl_rules_compile(&rs, &e, &n, NULL), 0);
	assert_int_equal(n, 4);
	const struct sl_kentry *h = find(e, n, "10.1.2.3");
	assert_int_equal(h->val.n, 3);
	assert_true(has(h, 22, SL_VERDICT_ALLOW) && has(h, 80, SL_VERDICT_ALLOW) &&
		    has(h, 443, SL_VERDICT_ALLOW));
	assert_false(has(h, 53, SL_VERDICT_ALLOW));
	const struct sl_kentry *m = find(e, n, "10.1.0.0/16");
	assert_int_equal(m->val.n, 2);
	assert_int_equal(find(e, n, "10.0.0.0/8")->val.n, 1);
	assert_int_equal(find(e, n, "192.168.0.0/16")->val.n, 1);
	free(e);
	sl_rule_set_free(&rs);
}

static void test_host_bits_cleared_and_duplicates_merged(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e;
	size_t n;

	(void)state;
	sl_rule_set_init(&rs);
	struct sl_addr_rule a = rule("10.9.9.9", 8, 1, 100, SL_PROTO_ANY, SL_VERDICT_ALLOW, 0);
	struct sl_addr_rule b = rule("10.0.0.0", 8, 101, 200, SL_PROTO_ANY, SL_VERDICT_ALLOW, 0);
	struct sl_addr_rule c = rule("10.0.0.0", 8, 50, 60, SL_PROTO_TCP, SL_VERDICT_ALLOW, 0);
	assert_int_equal(sl_rule_set_add(&rs, &a), 0);
	assert_int_equal(sl_rule_set_add(&rs, &b), 0);
	assert_int_equal(sl_rule_set_add(&rs, &c), 0);
	assert_int_equal(sl_rules_compile(&rs, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	/* 1-100 and 101-200 are adjacent with equal attributes: one range; 50-60/tcp is inside. */
	assert_int_equal(e[0].val.n, 1);
	assert_int_equal(e[0].val.r[0].lo, 1);
	assert_int_equal(e[0].val.r[0].hi, 200);
	free(e);
	sl_rule_set_free(&rs);
}

static void test_higher_verdict_and_expiry_kept_apart(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e;
	size_t n;

	(void)state;
	sl_rule_set_init(&rs);
	struct sl_addr_rule a = rule("10.0.0.5", 32, 443, 443, SL_PROTO_TCP, SL_VERDICT_ALLOW, 0);
	struct sl_addr_rule b = rule("10.0.0.5", 32, 443, 443, SL_PROTO_TCP, SL_VERDICT_PROXY, 0);
	struct sl_addr_rule c = rule("10.0.0.5", 32, 80, 80, SL_PROTO_TCP, SL_VERDICT_ALLOW, 1000);
	struct sl_addr_rule d = rule("10.0.0.5", 32, 80, 80, SL_PROTO_TCP, SL_VERDICT_ALLOW, 5000);
	assert_int_equal(sl_rule_set_add(&rs, &a), 0);
	assert_int_equal(sl_rule_set_add(&rs, &b), 0);
	assert_int_equal(sl_rule_set_add(&rs, &c), 0);
	assert_int_equal(sl_rule_set_add(&rs, &d), 0);
	assert_int_equal(sl_rules_compile(&rs, &e, &n, NULL), 0);
	assert_int_equal(n, 1);
	/* PROXY subsumes ALLOW on 443; the later expiry subsumes the earlier on 80. */
	assert_int_equal(e[0].val.n, 2);
	assert_true(has(&e[0], 443, SL_VERDICT_PROXY));
	assert_false(has(&e[0], 443, SL_VERDICT_ALLOW));
	for (uint32_t i = 0; i < e[0].val.n; i++)
		if (e[0].val.r[i].lo == 80)
			assert_int_equal(e[0].val.r[i].expires_ns, 5000);
	free(e);
	sl_rule_set_free(&rs);
}

static void test_too_many_ranges_named(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e, bad;
	size_t n;
	char buf[64];

	(void)state;
	sl_rule_set_init(&rs);
	for (int i = 0; i <= SL_MAX_PORT_RANGES; i++) {
		struct sl_addr_rule r = rule("2001:db8::", 32, 1000 + 2 * i, 1000 + 2 * i,
					     SL_PROTO_ANY, SL_VERDICT_ALLOW, 0);
		assert_int_equal(sl_rule_set_add(&rs, &r), 0);
	}
	assert_int_equal(sl_rules_compile(&rs, &e, &n, &bad), -E2BIG);
	sl_prefix_str(bad.family, bad.addr, bad.plen, buf, sizeof(buf));
	assert_string_equal(buf, "2001:db8::/32");
	sl_rule_set_free(&rs);
}

static void test_families_do_not_mix(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e;
	size_t n;

	(void)state;
	sl_rule_set_init(&rs);
	struct sl_addr_rule a = rule("0.0.0.0", 0, 1, 65535, SL_PROTO_ANY, SL_VERDICT_ALLOW, 0);
	struct sl_addr_rule b = rule("::1", 128, 8080, 8080, SL_PROTO_TCP, SL_VERDICT_ALLOW, 0);
	assert_int_equal(sl_rule_set_add(&rs, &a), 0);
	assert_int_equal(sl_rule_set_add(&rs, &b), 0);
	assert_int_equal(sl_rules_compile(&rs, &e, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_int_equal(find(e, n, "::1")->val.n, 1);
	assert_int_equal(find(e, n, "0.0.0.0/0")->val.n, 1);
	free(e);
	sl_rule_set_free(&rs);
}

/* The verdict of @port/@bit at @addr (IPv4, 4 bytes) by brute force over every rule. */
static int brute_verdict(const struct sl_rule_set *rs, const uint8_t *addr, uint16_t port,
			 uint8_t bit)
{
	int v = SL_VERDICT_DENY;

	for (size_t i = 0; i < rs->n; i++) {
		const struct sl_addr_rule *r = &rs->v[i];
		uint8_t m[16] = { 0 };

		memcpy(m, addr, 4);
		sl_prefix_mask(m, 4, r->plen);
		if (memcmp(m, r->addr, 4) || port < r->port_lo || port > r->port_hi ||
		    !(r->protos & bit))
			continue;
		if (r->verdict > v)
			v = r->verdict;
	}
	return v;
}

/* ... and by the compiled entries, as the kernel decides: the longest prefix's value. */
static int lpm_verdict(const struct sl_kentry *e, size_t n, const uint8_t *addr, uint16_t port,
		       uint8_t bit)
{
	const struct sl_kentry *best = NULL;
	int v = SL_VERDICT_DENY;

	for (size_t i = 0; i < n; i++) {
		uint8_t m[16] = { 0 };

		memcpy(m, addr, 4);
		sl_prefix_mask(m, 4, e[i].plen);
		if (e[i].family == AF_INET && !memcmp(m, e[i].addr, 4) &&
		    (!best || e[i].plen > best->plen))
			best = &e[i];
	}
	for (uint32_t i = 0; best && i < best->val.n; i++) {
		const struct sl_port_range *r = &best->val.r[i];

		if (port >= r->lo && port <= r->hi && (r->protos & bit) && r->verdict > v)
			v = r->verdict;
	}
	return v;
}

/* Nested and overlapping prefixes at random (a narrow address space, so that they nest a lot):
 * the compiled entries decide every destination as all the rules together do. */
static void test_compiled_matches_brute_force(void **state)
{
	struct sl_rule_set rs;
	struct sl_kentry *e = NULL;
	size_t n = 0;
	unsigned seed = 12345;

	(void)state;
	for (int round = 0; round < 50; round++) {
		int err;

		sl_rule_set_init(&rs);
		for (int i = 0; i < 40; i++) {
			struct sl_addr_rule r = { .family = AF_INET };
			uint16_t lo = (uint16_t)(rand_r(&seed) % 8);

			r.addr[0] = 10;
			r.addr[1] = (uint8_t)(rand_r(&seed) % 2);
			r.addr[2] = (uint8_t)(rand_r(&seed) % 4);
			r.addr[3] = (uint8_t)(rand_r(&seed) % 4);
			r.plen = (uint8_t)(8 + rand_r(&seed) % 25);
			r.port_lo = lo;
			r.port_hi = (uint16_t)(lo + rand_r(&seed) % 3);
			r.protos = (uint8_t)(1 + rand_r(&seed) % 3);
			r.verdict = (uint8_t)(1 + rand_r(&seed) % 2);
			assert_int_equal(sl_rule_set_add(&rs, &r), 0);
		}
		err = sl_rules_compile(&rs, &e, &n, NULL);
		if (err == -E2BIG) { /* too many ranges on one prefix: a legal refusal */
			sl_rule_set_free(&rs);
			continue;
		}
		assert_int_equal(err, 0);
		for (int a = 0; a < 2 * 4 * 4; a++) {
			uint8_t addr[4] = { 10, (uint8_t)(a / 16), (uint8_t)(a / 4 % 4),
					    (uint8_t)(a % 4) };

			for (uint16_t port = 0; port < 11; port++)
				for (uint8_t bit = 1; bit <= 2; bit++)
					assert_int_equal(lpm_verdict(e, n, addr, port, bit),
							 brute_verdict(&rs, addr, port, bit));
		}
		free(e);
		e = NULL;
		sl_rule_set_free(&rs);
	}
}

/* The sorted view answers as the scan does: the same ranges in the same order for every
 * address and prefix length, and the same exact prefixes, IPv4 and IPv6 mixed. */
static void test_index_matches_the_scan(void **state)
{
	unsigned seed = 777;

	(void)state;
	for (int round = 0; round < 30; round++) {
		struct sl_rule_set rs;
		struct sl_rule_index x;

		sl_rule_set_init(&rs);
		for (int i = 0; i < 60; i++) {
			struct sl_addr_rule r = { .family = rand_r(&seed) % 3 ? AF_INET :
										AF_INET6 };
			uint16_t lo = (uint16_t)(rand_r(&seed) % 8);

			r.addr[0] = 10;
			r.addr[1] = (uint8_t)(rand_r(&seed) % 2);
			r.addr[2] = (uint8_t)(rand_r(&seed) % 4);
			r.addr[3] = (uint8_t)(rand_r(&seed) % 4);
			r.plen = (uint8_t)(rand_r(&seed) % (r.family == AF_INET ? 33 : 129));
			r.port_lo = lo;
			r.port_hi = (uint16_t)(lo + rand_r(&seed) % 3);
			r.protos = (uint8_t)(1 + rand_r(&seed) % 3);
			r.verdict = (uint8_t)(1 + rand_r(&seed) % 2);
			assert_int_equal(sl_rule_set_add(&rs, &r), 0);
		}
		assert_int_equal(sl_rule_index_build(&x, &rs), 0);
		for (int a = 0; a < 2 * 2 * 4 * 4; a++) {
			uint8_t addr[16] = { 10, (uint8_t)(a / 16 % 2), (uint8_t)(a / 4 % 4),
					     (uint8_t)(a % 4) };
			uint8_t family = a < 32 ? AF_INET : AF_INET6;

			for (int plen = 0; plen <= (family == AF_INET ? 32 : 128); plen += 4) {
				struct sl_rule v1 = { 0 }, v2 = { 0 };
				int e1 = sl_rules_merge(&rs, family, addr, (uint8_t)plen, &v1),
				    e2 = sl_rules_merge_ix(&rs, &x, family, addr, (uint8_t)plen,
							   &v2);

				assert_int_equal(e1, e2);
				assert_int_equal(v1.n, v2.n);
				assert_memory_equal(v1.r, v2.r, v1.n * sizeof(v1.r[0]));
				assert_int_equal(sl_rules_has_prefix(&rs, &x, family, addr,
								     (uint8_t)plen),
						 sl_rules_has_prefix(&rs, NULL, family, addr,
								     (uint8_t)plen));
			}
		}
		sl_rule_index_free(&x);
		sl_rule_set_free(&rs);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_longer_prefix_inherits_covering_rules),
		cmocka_unit_test(test_host_bits_cleared_and_duplicates_merged),
		cmocka_unit_test(test_higher_verdict_and_expiry_kept_apart),
		cmocka_unit_test(test_too_many_ranges_named),
		cmocka_unit_test(test_families_do_not_mix),
		cmocka_unit_test(test_compiled_matches_brute_force),
		cmocka_unit_test(test_index_matches_the_scan),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
