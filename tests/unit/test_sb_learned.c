// SPDX-License-Identifier: MIT
/*
 * A sandbox's learned rules and their index (sandbox/sb_lindex.c): what the sweep drops is
 * exactly what expired, the entries of an address are found through the hash, and 16,384
 * entries expire one by one in O(log n) each (issue 14: the sweep must not stall the loop).
 * The kernel half of the sweep (one map write per address) is tested end to end in
 * tests/e2e/test_dns_wire.py.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>

#include "sandbox/sb_int.h"

/* CPU time of this thread: what the loop would spend, without the machine's other load. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct sl_box *box_new(void)
{
	struct sl_box *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	sl_rule_set_init(&b->learned.rules);
	return b;
}

static void box_done(struct sl_box *b)
{
	sl_rule_set_free(&b->learned.rules);
	free(b->learned.names);
	sb_lx_free(&b->learned.ix);
	free(b);
}

/* Entry @k: IPv4 10.x.y.z by k / @per (so @per entries share an address), ports by k. */
static struct sl_addr_rule entry(uint32_t k, uint32_t per, uint64_t expires)
{
	struct sl_addr_rule r = { .family = AF_INET,
				  .plen = 32,
				  .protos = SL_PROTO_TCP,
				  .verdict = SL_VERDICT_ALLOW,
				  .expires_ns = expires };
	uint32_t a = htonl(0x0a000000u + k / per);

	memcpy(r.addr, &a, 4);
	r.port_lo = r.port_hi = (uint16_t)(1 + k % per);
	return r;
}

/* Every entry is found through its address, and only there; the heap's top is the minimum. */
static void check_index(const struct sl_box *b)
{
	uint64_t min = UINT64_MAX;

	assert_int_equal(b->learned.ix.n, b->learned.rules.n);
	for (size_t i = 0; i < b->learned.rules.n; i++) {
		const struct sl_addr_rule *x = &b->learned.rules.v[i];
		int seen = 0;

		for (uint32_t k =
			     sb_lx_first_at(&b->learned.ix, &b->learned.rules, x->family, x->addr);
		     k != SB_LX_NONE; k = sb_lx_next_at(&b->learned.ix, &b->learned.rules, k)) {
			assert_true(k < b->learned.rules.n);
			assert_memory_equal(b->learned.rules.v[k].addr, x->addr, 16);
			seen += k == i;
		}
		assert_int_equal(seen, 1);
		if (x->expires_ns < min)
			min = x->expires_ns;
	}
	if (b->learned.rules.n)
		assert_int_equal(b->learned.rules.v[sb_lx_earliest(&b->learned.ix)].expires_ns,
				 min);
	else
		assert_int_equal(sb_lx_earliest(&b->learned.ix), SB_LX_NONE);
}

/* Random adds, refreshes and expiries against a plain model of what must remain. */
static void test_expire_matches_model(void **state)
{
	enum { N = 3000, PER = 3 };
	static uint64_t model[N]; /* the expiry of entry k, 0: not there */
	struct sl_box *b = box_new();
	uint64_t now = 0;

	(void)state;
	srand(7);
	memset(model, 0, sizeof(model));
	for (int round = 0; round < 40; round++) {
		struct sl_addr_rule *gone = NULL;
		size_t naddr, left = 0;

		for (int j = 0; j < 200; j++) {
			uint32_t k = (uint32_t)rand() % N;
			uint64_t exp = now + 1 + (uint64_t)(rand() % 50);
			struct sl_addr_rule r = entry(k, PER, exp);
			char name[32];

			snprintf(name, sizeof(name), "n%u.test", k / PER);
			assert_int_equal(sb_learned_add(&b->learned, name, &r), 0);
			if (exp > model[k])
				model[k] = exp;
		}
		check_index(b);
		now += 5;
		naddr = sb_learned_expire(b, now, SIZE_MAX, &gone);
		for (size_t i = 1; i < naddr; i++) /* sorted, one per address */
			assert_true(memcmp(gone[i - 1].addr, gone[i].addr, 16) < 0);
		for (uint32_t k = 0; k < N; k++) {
			struct sl_addr_rule r = entry(k, PER, 0);
			int found = 0;

			if (model[k] && model[k] <= now) {
				int listed = 0;

				for (size_t i = 0; i < naddr && !listed; i++)
					listed = !memcmp(gone[i].addr, r.addr, 16);
				assert_true(listed);
				model[k] = 0;
			}
			for (uint32_t i = sb_lx_first_at(&b->learned.ix, &b->learned.rules, AF_INET,
							 r.addr);
			     i != SB_LX_NONE;
			     i = sb_lx_next_at(&b->learned.ix, &b->learned.rules, i))
				if (b->learned.rules.v[i].port_lo == r.port_lo) {
					found++;
					assert_int_equal(b->learned.rules.v[i].expires_ns,
							 model[k]);
				}
			assert_int_equal(found, model[k] ? 1 : 0);
			left += model[k] != 0;
		}
		assert_int_equal(b->learned.rules.n, left);
		check_index(b);
		free(gone);
	}
	box_done(b);
}

/*
 * SL_LEARNED_MAX entries, each expiring at its own time: a sweep per expiry, as when a
 * sandbox's 16k names were resolved over a while. The worst sweep is what the loop waits
 * for; with a scan (or a sort) of all entries per sweep it grew with n.
 */
static void test_16k_expire_one_by_one(void **state)
{
	struct sl_box *b = box_new();
	uint64_t t0, worst = 0, all;
	size_t total = 0;

	(void)state;
	for (uint32_t k = 0; k < SL_LEARNED_MAX; k++) {
		/* expiries shuffled over 1..16384 */
		struct sl_addr_rule r = entry(k, 1, 1 + (k * 7919u) % SL_LEARNED_MAX);

		assert_int_equal(sb_learned_add(&b->learned, "many.test", &r), 0);
	}
	assert_int_equal(b->learned.rules.n, SL_LEARNED_MAX);
	t0 = cpu_ns();
	for (uint64_t now = 1; now <= SL_LEARNED_MAX; now++) {
		struct sl_addr_rule *gone = NULL;
		uint64_t t = cpu_ns();
		size_t n = sb_learned_expire(b, now, SIZE_MAX, &gone);

		t = cpu_ns() - t;
		if (t > worst)
			worst = t;
		assert_int_equal(n, 1);
		total += n;
		free(gone);
	}
	all = cpu_ns() - t0;
	assert_int_equal(total, SL_LEARNED_MAX);
	assert_int_equal(b->learned.rules.n, 0);
	printf("# %d entries expired one sweep each: %.1f ms CPU in all, %.2f us a sweep, the "
	       "slowest %.1f us\n",
	       SL_LEARNED_MAX, all / 1e6, all / 1e3 / SL_LEARNED_MAX, worst / 1e3);
	/* O(log n) each: microseconds; the bound leaves room for a loaded machine. */
	assert_true(all / SL_LEARNED_MAX < 20000);
	box_done(b);
}

/* All 16k at once (they were resolved together): one sweep, bounded by n log n. */
static void test_16k_expire_together(void **state)
{
	struct sl_box *b = box_new();
	struct sl_addr_rule *gone = NULL;
	uint64_t t;
	size_t n;

	(void)state;
	for (uint32_t k = 0; k < SL_LEARNED_MAX; k++) {
		struct sl_addr_rule r = entry(k, 2, 100 + k % 3);

		assert_int_equal(sb_learned_add(&b->learned, "many.test", &r), 0);
	}
	t = cpu_ns();
	n = sb_learned_expire(b, 1000, SIZE_MAX, &gone);
	t = cpu_ns() - t;
	printf("# %d entries (%zu addresses) expired in one sweep: %.2f ms CPU\n", SL_LEARNED_MAX,
	       n, t / 1e6);
	assert_int_equal(n, SL_LEARNED_MAX / 2);
	assert_int_equal(b->learned.rules.n, 0);
	assert_true(t < 200000000ULL);
	free(gone);
	box_done(b);
}

/* A sweep drops at most its batch, the earliest first; the next one goes on from there. */
static void test_expire_in_batches(void **state)
{
	struct sl_box *b = box_new();
	struct sl_addr_rule *gone = NULL;

	(void)state;
	for (uint32_t k = 0; k < 100; k++) {
		struct sl_addr_rule r = entry(k, 1, 1000 - k);

		assert_int_equal(sb_learned_add(&b->learned, "many.test", &r), 0);
	}
	assert_int_equal(sb_learned_expire(b, 2000, 30, &gone), 30);
	assert_int_equal(b->learned.rules.n, 70);
	for (size_t i = 0; i < b->learned.rules.n; i++) /* the 30 earliest went */
		assert_true(b->learned.rules.v[i].expires_ns > 1000 - 100 + 30);
	free(gone);
	assert_int_equal(sb_learned_expire(b, 2000, 100, &gone), 70);
	assert_int_equal(b->learned.rules.n, 0);
	check_index(b);
	free(gone);
	box_done(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expire_matches_model),
		cmocka_unit_test(test_16k_expire_one_by_one),
		cmocka_unit_test(test_16k_expire_together),
		cmocka_unit_test(test_expire_in_batches),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
