// SPDX-License-Identifier: MIT
/*
 * Batched kernel writes (struct sl_kbatch, kernel/bpf_loader.c) against the real maps of a
 * loaded sluice (pinned in a directory of the test's own): nothing staged reaches the kernel
 * before the commit, a key staged twice ends with its last value (or deleted), and an entry
 * the kernel refuses (a full map) is reported under the tags that wrote it and no other.
 * Removed sandboxes' rule banks are cleared together, and no other's entry with them.
 * And the sandboxes' sl_proxied maps, written to the map of maps in batches: an add's map is
 * made with those of the other adds under way, and is never one a sandbox had before.
 * Needs root.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <cmocka.h>

#include "kernel/bpf_loader.h"

#define MAX_RULES 16
#define BOX 5

static struct sl_bpf *b;
static char pin[64];

static struct sl_bpf *open_bpf(void)
{
	struct sl_bpf_opts o = { .pin_dir = pin, .max_rules = MAX_RULES, .max_sandboxes = 64 };
	char err[256];
	struct sl_bpf *r = sl_bpf_open(&o, err, sizeof(err));

	if (!r)
		fprintf(stderr, "sl_bpf_open: %s\n", err);
	return r;
}

static int setup(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_kbatch loads BPF programs: run it as root\n");
		return -1;
	}
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/sluice-test-kbatch-%d", (int)getpid());
	b = open_bpf();
	return b ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	sl_bpf_purge(b);
	sl_bpf_close(b);
	rmdir(pin);
	return 0;
}

static struct sl_kentry entry(unsigned i, uint16_t port)
{
	struct sl_kentry e = { .family = AF_INET, .plen = 32 };

	e.addr[0] = 10;
	e.addr[2] = (uint8_t)(i >> 8);
	e.addr[3] = (uint8_t)i;
	if (port) {
		e.val.n = 1;
		e.val.r[0] =
			(struct sl_port_range){ .lo = port, .hi = port, .verdict = 1, .protos = 1 };
	}
	return e;
}

/* The port of @box's entry at 10.0.x.i, 0 if it has none. */
static uint16_t port_at(uint32_t box, unsigned i)
{
	struct sl_kentry *v = NULL;
	size_t n = 0;
	uint16_t port = 0;
	struct sl_kentry want = entry(i, 0);

	assert_int_equal(sl_bpf_read_rules(b, box, &v, &n), 0);
	for (size_t k = 0; k < n; k++)
		if (v[k].family == AF_INET && !memcmp(v[k].addr, want.addr, 4) && v[k].val.n)
			port = v[k].val.r[0].lo;
	free(v);
	return port;
}

static void wipe(uint32_t box)
{
	for (unsigned i = 0; i < 40; i++) {
		struct sl_kentry e = entry(i, 0);

		assert_int_equal(sl_bpf_set_rule(b, box, &e, 0), 0);
	}
}

static void test_staged_entries_wait_for_the_commit_and_keep_the_last_value(void **state)
{
	struct sl_kbatch *kb = sl_kbatch_new(b);
	int err[SL_KBATCH_TAGS];

	(void)state;
	assert_non_null(kb);
	for (unsigned i = 0; i < 3; i++) {
		struct sl_kentry e = entry(i, (uint16_t)(100 + i));

		sl_kbatch_tag(kb, i);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX, &e, 1), 0);
	}
	/* a later answer rewrites the staged entry of the first: not fresh any more */
	{
		struct sl_kentry e = entry(0, 200);

		sl_kbatch_tag(kb, 3);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX, &e, 0), 0);
	}
	/* staged, then emptied: no entry */
	{
		struct sl_kentry e = entry(5, 105), gone = entry(5, 0);

		sl_kbatch_tag(kb, 4);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX, &e, 1), 0);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX, &gone, 0), 0);
	}
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(port_at(BOX, i), 0); /* nothing before the commit */
	sl_kbatch_commit(kb, err);
	for (unsigned t = 0; t < SL_KBATCH_TAGS; t++)
		assert_int_equal(err[t], 0);
	assert_int_equal(port_at(BOX, 0), 200);
	assert_int_equal(port_at(BOX, 1), 101);
	assert_int_equal(port_at(BOX, 2), 102);
	assert_int_equal(port_at(BOX, 5), 0);
	/* an entry that exists is written at once, not staged */
	{
		struct sl_kentry e = entry(1, 301);

		sl_kbatch_tag(kb, 0);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX, &e, 0), 0);
		assert_int_equal(port_at(BOX, 1), 301);
		sl_kbatch_commit(kb, err);
		assert_int_equal(err[0], 0);
	}
	sl_kbatch_free(kb);
	wipe(BOX);
}

static void test_a_full_map_fails_the_tags_that_did_not_fit(void **state)
{
	struct sl_kbatch *kb = sl_kbatch_new(b);
	int err[SL_KBATCH_TAGS], failed = 0;

	(void)state;
	assert_non_null(kb);
	for (unsigned i = 0; i < MAX_RULES + 4; i++) {
		struct sl_kentry e = entry(i, 443);

		sl_kbatch_tag(kb, i);
		assert_int_equal(sl_kbatch_rule(kb, b, BOX + 1, &e, 1), 0);
	}
	sl_kbatch_commit(kb, err);
	for (unsigned i = 0; i < MAX_RULES + 4; i++) {
		int in = port_at(BOX + 1, i) == 443;

		/* every tag either has its entry or an error that says the map is full */
		if (err[i]) {
			assert_true(err[i] == -ENOSPC || err[i] == -E2BIG);
			assert_false(in);
			failed++;
		} else {
			assert_true(in);
		}
	}
	assert_int_equal(failed, 4);
	sl_kbatch_free(kb);
	wipe(BOX + 1);
}

static int name_count(const struct sl_sni_key *k, const struct sl_sni_val *v, void *arg)
{
	(void)k;
	(void)v;
	(*(int *)arg)++;
	return 0;
}

static void test_sni_names_are_staged_too(void **state)
{
	struct sl_kbatch *kb = sl_kbatch_new(b);
	struct sl_sni_val v = { .n = 1 };
	uint8_t addr[16] = { 10, 9, 9, 9 };
	int err[SL_KBATCH_TAGS], n = 0;

	(void)state;
	v.r[0].lo = v.r[0].hi = 443;
	sl_kbatch_tag(kb, 7);
	assert_int_equal(sl_kbatch_sni(kb, b, BOX + 2, AF_INET, addr, "a.test", &v), 0);
	assert_int_equal(sl_kbatch_sni(kb, b, BOX + 2, AF_INET, addr, "b.test", &v), 0);
	assert_int_equal(sl_bpf_sni_names_each(b, BOX + 2, name_count, &n), 0);
	assert_int_equal(n, 0);
	sl_kbatch_commit(kb, err);
	assert_int_equal(err[7], 0);
	assert_int_equal(sl_bpf_sni_names_each(b, BOX + 2, name_count, &n), 0);
	assert_int_equal(n, 2);
	sl_kbatch_free(kb);
	sl_bpf_drop_sni_names(b, BOX + 2);
}

static void test_removed_banks_are_cleared_together_and_no_other(void **state)
{
	const uint32_t a = BOX + 30, c = BOX + 31, d = BOX + 32;
	struct sl_kentry ea[2] = { entry(1, 81), entry(2, 82) }, eb[1] = { entry(3, 83) },
			 ec[1] = { entry(4, 84) }, ed[2] = { entry(5, 85), entry(6, 86) };
	uint32_t gone[] = { a, a | SL_RULES_BANK, c };
	struct sl_kentry *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(sl_bpf_sync_rules(b, a, ea, 2), 0);
	assert_int_equal(sl_bpf_sync_rules(b, a | SL_RULES_BANK, eb, 1), 0);
	assert_int_equal(sl_bpf_sync_rules(b, c, ec, 1), 0);
	assert_int_equal(sl_bpf_sync_rules(b, d, ed, 2), 0);
	assert_int_equal(port_at(a, 2), 82);
	assert_int_equal(sl_bpf_clear_rules(b, gone, 3), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(sl_bpf_read_rules(b, gone[i], &v, &n), 0);
		assert_int_equal(n, 0);
	}
	assert_int_equal(port_at(d, 5), 85);
	assert_int_equal(port_at(d, 6), 86);
	/* The cleared banks count none: an id's next sandbox writes into an empty bank. */
	assert_int_equal(sl_bpf_sync_rules(b, a, ea, 1), 0);
	assert_int_equal(port_at(a, 1), 81);
	assert_int_equal(port_at(a, 2), 0);
	free(v);
	assert_int_equal(sl_bpf_sync_rules(b, a, NULL, 0), 0);
	assert_int_equal(sl_bpf_sync_rules(b, d, NULL, 0), 0);
}

/* The id of @box's inner sl_proxied map in the kernel's map of maps, 0: none. */
static uint32_t inner_of(uint32_t box)
{
	char path[128];
	uint32_t id = 0;
	int outer;

	snprintf(path, sizeof(path), "%s/sl_proxied", pin);
	outer = bpf_obj_get(path);
	assert_true(outer >= 0);
	if (bpf_map_lookup_elem(outer, &box, &id))
		id = 0;
	close(outer);
	return id;
}

static void test_an_adds_proxied_map_is_made_with_the_others_wanted(void **state)
{
	uint32_t a = BOX + 10, c = BOX + 11, d = BOX + 12, made_c;

	(void)state;
	sl_bpf_proxied_want(b, a);
	sl_bpf_proxied_want(b, c);
	assert_int_equal(inner_of(c), 0);
	assert_int_equal(sl_bpf_proxied_fresh(b, a), 0);
	/* One write made both; the other add finds its own made and writes nothing. */
	assert_int_not_equal(inner_of(a), 0);
	made_c = inner_of(c);
	assert_int_not_equal(made_c, 0);
	/* Two under way: a burst. The ids the next adds get (the lowest free) are made too,
	 * PX_AHEAD (3) for each wanted one, and no more. */
	for (uint32_t id = 1; id <= 6; id++)
		assert_int_not_equal(inner_of(id), 0);
	assert_int_equal(inner_of(7), 0);
	assert_int_equal(inner_of(d), 0);
	assert_int_equal(sl_bpf_proxied_fresh(b, c), 0);
	assert_int_equal(inner_of(c), made_c);
	sl_bpf_proxied_drop(b, a);
	sl_bpf_proxied_drop(b, c);
	assert_int_equal(sl_bpf_proxied_reap(b), 0);
	assert_int_equal(inner_of(a), 0);
	assert_int_equal(inner_of(c), 0);
}

static void test_a_removed_sandboxs_map_is_reaped_and_never_handed_on(void **state)
{
	struct sl_conn_key k = { .netns_cookie = 1, .port = 4000, .family = AF_INET };
	struct sl_proxied_rec rec = { 0 };
	struct sl_sockorig o;
	uint32_t a = BOX + 20, first;
	int fd;

	(void)state;
	k.addr[0] = 127;
	k.addr[3] = 1;
	assert_int_equal(sl_bpf_proxied_fresh(b, a), 0);
	first = inner_of(a);
	fd = bpf_map_get_fd_by_id(first);
	assert_true(fd >= 0);
	/* A record the kernel wrote for the sandbox, never taken. */
	assert_int_equal(bpf_map_update_elem(fd, &k, &rec, BPF_ANY), 0);
	close(fd);
	sl_bpf_proxied_drop(b, a);
	assert_true(sl_bpf_proxied_stale(b));
	assert_int_equal(sl_bpf_take_proxied(b, a, 1, AF_INET, k.addr, 4000, &o), -ENOENT);
	/* The id's next sandbox: a new map, without the record. */
	sl_bpf_proxied_want(b, a);
	assert_int_equal(sl_bpf_proxied_fresh(b, a), 0);
	assert_int_not_equal(inner_of(a), first);
	assert_int_equal(sl_bpf_take_proxied(b, a, 1, AF_INET, k.addr, 4000, &o), -ENOENT);
	assert_false(sl_bpf_proxied_stale(b));
	/* Removed again: out of the kernel at the reap. */
	sl_bpf_proxied_drop(b, a);
	assert_int_not_equal(inner_of(a), 0);
	assert_int_equal(sl_bpf_proxied_reap(b), 0);
	assert_int_equal(inner_of(a), 0);
	assert_false(sl_bpf_proxied_stale(b));
}

/* An orchestrator's adds and removals on two threads, the reaps on a third: every add gets a
 * map that is in the kernel while it lives, and never one another add had. */
#define CHURN_ROUNDS 4
#define CHURN_IDS 6

struct churn {
	uint32_t lo;
	uint32_t got[CHURN_ROUNDS * CHURN_IDS]; /* the kernel's id of each add's map */
	int bad;
};

static void *churn(void *arg)
{
	struct churn *c = arg;
	int k = 0;

	for (int round = 0; round < CHURN_ROUNDS; round++) {
		for (uint32_t id = c->lo; id < c->lo + CHURN_IDS; id++)
			sl_bpf_proxied_want(b, id);
		for (uint32_t id = c->lo; id < c->lo + CHURN_IDS; id++) {
			c->bad += sl_bpf_proxied_fresh(b, id) != 0;
			c->got[k] = inner_of(id);
			c->bad += !c->got[k++];
		}
		for (uint32_t id = c->lo; id < c->lo + CHURN_IDS; id++)
			sl_bpf_proxied_drop(b, id);
	}
	return NULL;
}

static void *reaper(void *arg)
{
	int *stop = arg;

	while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE))
		sl_bpf_proxied_reap(b);
	return NULL;
}

static void test_adds_removals_and_reaps_at_once(void **state)
{
	struct churn c[2] = { { .lo = 30 }, { .lo = 40 } };
	uint32_t all[2 * CHURN_ROUNDS * CHURN_IDS];
	pthread_t t[2], reap;
	int stop = 0;
	size_t n = 0;

	(void)state;
	pthread_create(&reap, NULL, reaper, &stop);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, &c[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(reap, NULL);
	assert_int_equal(c[0].bad + c[1].bad, 0);
	for (int i = 0; i < 2; i++)
		for (size_t k = 0; k < CHURN_ROUNDS * CHURN_IDS; k++)
			all[n++] = c[i].got[k];
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			assert_int_not_equal(all[i], all[j]);
	/* Removed: out of the kernel (an id may hold a new map made ahead for the next add). */
	assert_int_equal(sl_bpf_proxied_reap(b), 0);
	assert_false(sl_bpf_proxied_stale(b));
}

/* The pinned map @name of the test's sluice. */
static int pinned(const char *name)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", pin, name);
	fd = bpf_obj_get(path);
	assert_true(fd >= 0);
	return fd;
}

/* A whole address a sluiced of before kept in the IPv4 trie (the hash holds them now): the
 * sluiced that takes the pins over writes it to the hash at the bank's sync and leaves the
 * trie's entry for the old programs, until sl_bpf_drop_trie_hosts() (its links switched)
 * takes it out; the bank's prefixes stay in the trie, and the bank's count stays exact. */
static void test_addresses_leave_the_trie_after_the_switch(void **state)
{
	const uint32_t box = BOX + 3;
	struct sl_kentry e = entry(7, 443), p = entry(0, 22);
	struct sl_key4 k = { .prefixlen = 64, .sandbox_id = box };
	int trie = pinned("sl_rules4"), hosts = pinned("sl_hosts4");
	struct sl_kentry ents[2];
	struct sl_kentry *v;
	struct sl_rule got;
	size_t n;

	(void)state;
	memcpy(k.addr, e.addr, 4);
	assert_int_equal(bpf_map_update_elem(trie, &k, &e.val, BPF_NOEXIST), 0);
	sl_bpf_close(b); /* the restart: the new one counts what it finds */
	b = open_bpf();
	assert_non_null(b);
	p.plen = 16;
	e.val.r[0].lo = e.val.r[0].hi = 444;
	ents[0] = p;
	ents[1] = e;
	assert_int_equal(sl_bpf_sync_rules(b, box, ents, 2), 0);
	assert_int_equal(bpf_map_lookup_elem(hosts, &k, &got), 0);
	assert_int_equal(got.r[0].lo, 444);
	assert_int_equal(bpf_map_lookup_elem(trie, &k, &got), 0);
	assert_int_equal(got.r[0].lo, 443); /* the old programs' until the switch */

	assert_int_equal(sl_bpf_drop_trie_hosts(b, box, ents, 2), 0);
	assert_int_equal(bpf_map_lookup_elem(trie, &k, &got), 0);
	assert_int_equal(got.r[0].lo, 22); /* the longest match is the /16 now */
	assert_int_equal(sl_bpf_read_rules(b, box, &v, &n), 0);
	assert_int_equal(n, 2);
	free(v);
	/* the bank counted 3 and holds 2: a sync to one entry walks and prunes */
	assert_int_equal(sl_bpf_sync_rules(b, box, ents + 1, 1), 0);
	assert_int_equal(sl_bpf_read_rules(b, box, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(v[0].plen, 32);
	free(v);
	assert_int_equal(sl_bpf_clear_rules(b, &box, 1), 0);
	assert_int_equal(sl_bpf_read_rules(b, box, &v, &n), 0);
	assert_int_equal(n, 0);
	free(v);
	close(trie);
	close(hosts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_staged_entries_wait_for_the_commit_and_keep_the_last_value),
		cmocka_unit_test(test_a_full_map_fails_the_tags_that_did_not_fit),
		cmocka_unit_test(test_sni_names_are_staged_too),
		cmocka_unit_test(test_removed_banks_are_cleared_together_and_no_other),
		cmocka_unit_test(test_an_adds_proxied_map_is_made_with_the_others_wanted),
		cmocka_unit_test(test_a_removed_sandboxs_map_is_reaped_and_never_handed_on),
		cmocka_unit_test(test_adds_removals_and_reaps_at_once),
		cmocka_unit_test(test_addresses_leave_the_trie_after_the_switch),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
