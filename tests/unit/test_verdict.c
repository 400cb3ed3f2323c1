// SPDX-License-Identifier: MIT
/*
 * The kernel decision logic (bpf/verdict.h), run in the kernel through BPF_PROG_RUN of
 * bpf/verdict_test.bpf.c, against maps filled with rules compiled by userspace: the same
 * functions the cgroup hooks call, judged on the same LPM tries. Needs root (CAP_BPF).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kernel/rules.h"
#include "verdict_test.h"
#include "verdict_test.skel.h"

static struct verdict_test_bpf *skel;

static int setup(void **state)
{
	struct bpf_map *map;

	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_verdict loads BPF programs: run it as root\n");
		return -1;
	}
	skel = verdict_test_bpf__open();
	if (!skel)
		return -1;
	/* Private maps: never pinned, never shared with a running sluiced. */
	bpf_object__for_each_map(map, skel->obj)
		bpf_map__set_pin_path(map, NULL);
	return verdict_test_bpf__load(skel);
}

static int teardown(void **state)
{
	(void)state;
	verdict_test_bpf__destroy(skel);
	return 0;
}

static void add(struct sl_rule_set *rs, const char *addr, int plen, uint16_t lo, uint16_t hi,
		uint8_t protos, uint8_t verdict, uint64_t expires)
{
	struct sl_addr_rule r = { .plen = plen,
				  .port_lo = lo,
				  .port_hi = hi,
				  .protos = protos,
				  .verdict = verdict,
				  .expires_ns = expires };

	r.family = inet_pton(AF_INET, addr, r.addr) == 1 ? AF_INET : AF_INET6;
	if (r.family == AF_INET6)
		assert_int_equal(inet_pton(AF_INET6, addr, r.addr), 1);
	assert_int_equal(sl_rule_set_add(rs, &r), 0);
}

/* Writes the compiled rules of @rs for @sandbox_id, as sl_bpf_sync_rules() does. */
static void install(uint32_t sandbox_id, struct sl_rule_set *rs)
{
	struct sl_kentry *e;
	size_t n;

	assert_int_equal(sl_rules_compile(rs, &e, &n, NULL), 0);
	for (size_t i = 0; i < n; i++) {
		if (e[i].family == AF_INET) {
			struct sl_key4 k = { .prefixlen = 32 + e[i].plen,
					     .sandbox_id = sandbox_id };

			memcpy(k.addr, e[i].addr, 4);
			/* whole addresses in the hash, shorter prefixes in the trie */
			assert_int_equal(
				bpf_map__update_elem(e[i].plen == 32 ? skel->maps.sl_hosts4 :
								       skel->maps.sl_rules4,
						     &k, sizeof(k), &e[i].val, sizeof(e[i].val), 0),
				0);
		} else {
			struct sl_key6 k = { .prefixlen = 32 + e[i].plen,
					     .sandbox_id = sandbox_id };

			memcpy(k.addr, e[i].addr, 16);
			assert_int_equal(
				bpf_map__update_elem(e[i].plen == 128 ? skel->maps.sl_hosts6 :
									skel->maps.sl_rules6,
						     &k, sizeof(k), &e[i].val, sizeof(e[i].val), 0),
				0);
		}
	}
	free(e);
}

static int judge(uint32_t sandbox_id, const char *addr, uint16_t port, uint8_t proto_bit,
		 uint64_t now_ns)
{
	struct sl_verdict_query q = {
		.sandbox_id = sandbox_id, .port = port, .proto_bit = proto_bit, .now_ns = now_ns
	};
	unsigned char pkt[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt),
		    .repeat = 1);

	if (inet_pton(AF_INET, addr, q.addr) == 1)
		q.family = 4;
	else {
		assert_int_equal(inet_pton(AF_INET6, addr, q.addr), 1);
		q.family = 6;
	}
	memcpy(pkt, &q, sizeof(q));
	assert_int_equal(
		bpf_prog_test_run_opts(bpf_program__fd(skel->progs.sl_verdict_test), &opts), 0);
	return (int)opts.retval;
}

#define TCP SL_PROTO_TCP
#define UDP SL_PROTO_UDP
#define ALLOW SL_VERDICT_ALLOW
#define DENY SL_VERDICT_DENY
#define PROXY SL_VERDICT_PROXY
#define SNI SL_VERDICT_SNI

static void test_v4_ports_prefixes_protocols(void **state)
{
	struct sl_rule_set rs;

	(void)state;
	sl_rule_set_init(&rs);
	add(&rs, "10.0.0.0", 8, 22, 22, SL_PROTO_ANY, ALLOW, 0);
	add(&rs, "10.1.2.3", 32, 443, 443, SL_PROTO_ANY, ALLOW, 0);
	add(&rs, "10.1.2.3", 32, 8000, 8100, UDP, ALLOW, 0);
	install(7, &rs);
	sl_rule_set_free(&rs);

	assert_int_equal(judge(7, "10.1.2.3", 443, TCP, 1), ALLOW);
	assert_int_equal(judge(7, "10.1.2.3", 22, TCP, 1), ALLOW); /* from the covering /8 */
	assert_int_equal(judge(7, "10.9.9.9", 22, UDP, 1), ALLOW);
	assert_int_equal(judge(7, "10.1.2.3", 80, TCP, 1), DENY);
	assert_int_equal(judge(7, "10.1.2.3", 8050, UDP, 1), ALLOW);
	assert_int_equal(judge(7, "10.1.2.3", 8050, TCP, 1), DENY);
	assert_int_equal(judge(7, "10.1.2.4", 443, TCP, 1), DENY);
	assert_int_equal(judge(7, "11.0.0.1", 22, TCP, 1), DENY);
	/* Another sandbox has none of these rules. */
	assert_int_equal(judge(8, "10.1.2.3", 443, TCP, 1), DENY);
}

static void test_v6_and_v4_mapped(void **state)
{
	struct sl_rule_set rs;

	(void)state;
	sl_rule_set_init(&rs);
	add(&rs, "2001:db8::", 32, 443, 443, TCP, ALLOW, 0);
	add(&rs, "192.0.2.0", 24, 0, 65535, SL_PROTO_ANY, ALLOW, 0);
	install(9, &rs);
	sl_rule_set_free(&rs);

	assert_int_equal(judge(9, "2001:db8::1", 443, TCP, 1), ALLOW);
	assert_int_equal(judge(9, "2001:db8::1", 80, TCP, 1), DENY);
	assert_int_equal(judge(9, "2001:db9::1", 443, TCP, 1), DENY);
	assert_int_equal(judge(9, "::ffff:192.0.2.77", 9, UDP, 1), ALLOW);
	assert_int_equal(judge(9, "::ffff:192.0.3.77", 9, UDP, 1), DENY);
	/* Not v4-mapped: the v4 rule does not apply to an IPv4-compatible address. */
	assert_int_equal(judge(9, "::192.0.2.77", 9, UDP, 1), DENY);
}

static void test_expiry_and_precedence(void **state)
{
	struct sl_rule_set rs;

	(void)state;
	sl_rule_set_init(&rs);
	add(&rs, "198.51.100.1", 32, 443, 443, TCP, ALLOW, 1000);
	add(&rs, "198.51.100.2", 32, 443, 443, TCP, ALLOW, 0);
	add(&rs, "198.51.100.2", 32, 443, 443, TCP, PROXY, 0);
	install(11, &rs);
	sl_rule_set_free(&rs);

	assert_int_equal(judge(11, "198.51.100.1", 443, TCP, 999), ALLOW);
	assert_int_equal(judge(11, "198.51.100.1", 443, TCP, 1000), DENY);
	assert_int_equal(judge(11, "198.51.100.2", 443, TCP, 5), PROXY);
}

/* SL_VERDICT_SNI is numbered after the others but ranks between ALLOW and PROXY: a name checked
 * by SNI sharing an address with an address grant is checked; with an intercepted one, it is
 * intercepted (the proxy then checks the SNI). The merge keeps the same order. */
static void test_sni_rank(void **state)
{
	struct sl_rule_set rs;

	(void)state;
	sl_rule_set_init(&rs);
	add(&rs, "203.0.113.1", 32, 443, 443, TCP, ALLOW, 0);
	add(&rs, "203.0.113.1", 32, 443, 443, TCP, SNI, 0);
	add(&rs, "203.0.113.2", 32, 443, 443, TCP, SNI, 0);
	add(&rs, "203.0.113.2", 32, 443, 443, TCP, PROXY, 0);
	add(&rs, "203.0.113.3", 32, 0, 65535, TCP, ALLOW, 0);
	add(&rs, "203.0.113.3", 32, 443, 443, TCP, SNI, 0);
	install(12, &rs);
	sl_rule_set_free(&rs);

	assert_int_equal(judge(12, "203.0.113.1", 443, TCP, 1), SNI);
	assert_int_equal(judge(12, "203.0.113.2", 443, TCP, 1), PROXY);
	assert_int_equal(judge(12, "203.0.113.3", 443, TCP, 1), SNI);
	assert_int_equal(judge(12, "203.0.113.3", 444, TCP, 1), ALLOW);
	assert_int_equal(judge(12, "203.0.113.3", 443, UDP, 1), DENY);
}

/* A whole address is looked up in its family's address hash, anything else in the trie: a
 * /128 under a covering prefix carries that prefix's ranges too (merged by the compiler), and
 * a whole address a sluiced of before left in the trie decides until the hash names it. */
static void test_hosts_then_trie(void **state)
{
	struct sl_rule val = { .n = 1,
			       .r[0] = { .lo = 80, .hi = 80, .verdict = ALLOW, .protos = TCP } };
	struct sl_key4 k = { .prefixlen = 64, .sandbox_id = 13, .addr = { 10, 7, 7, 7 } };
	struct sl_rule_set rs;

	(void)state;
	sl_rule_set_init(&rs);
	add(&rs, "2001:db8:1::", 48, 22, 22, TCP, ALLOW, 0);
	add(&rs, "2001:db8:1::5", 128, 443, 443, TCP, ALLOW, 0);
	install(13, &rs);
	sl_rule_set_free(&rs);

	assert_int_equal(judge(13, "2001:db8:1::5", 443, TCP, 1), ALLOW);
	assert_int_equal(judge(13, "2001:db8:1::5", 22, TCP, 1), ALLOW); /* the /48's */
	assert_int_equal(judge(13, "2001:db8:1::5", 80, TCP, 1), DENY);
	assert_int_equal(judge(13, "2001:db8:1::6", 22, TCP, 1), ALLOW);
	assert_int_equal(judge(13, "2001:db8:1::6", 443, TCP, 1), DENY);

	assert_int_equal(
		bpf_map__update_elem(skel->maps.sl_rules4, &k, sizeof(k), &val, sizeof(val), 0), 0);
	assert_int_equal(judge(13, "10.7.7.7", 80, TCP, 1), ALLOW);
	val.r[0].lo = val.r[0].hi = 81;
	assert_int_equal(
		bpf_map__update_elem(skel->maps.sl_hosts4, &k, sizeof(k), &val, sizeof(val), 0), 0);
	assert_int_equal(judge(13, "10.7.7.7", 80, TCP, 1), DENY);
	assert_int_equal(judge(13, "10.7.7.7", 81, TCP, 1), ALLOW);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v4_ports_prefixes_protocols),
		cmocka_unit_test(test_v6_and_v4_mapped),
		cmocka_unit_test(test_expiry_and_precedence),
		cmocka_unit_test(test_sni_rank),
		cmocka_unit_test(test_hosts_then_trie),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
