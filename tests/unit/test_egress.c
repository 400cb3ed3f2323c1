// SPDX-License-Identifier: MIT
/*
 * The egress program (sl_egress in bpf/sluice.bpf.c), run in the kernel through BPF_PROG_RUN
 * on hand-made packets: IPv4 options, IPv6 routing headers at any place of the extension
 * chain, chains too long to walk and transports no sandbox socket uses are dropped with their
 * reason; a clean packet is parsed through to the rules (which, with no sandbox for the test's
 * socket, drop it as "rules": the reason tells how far the parse went). The per-datagram
 * control-message forms of a routing header (IPV6_RTHDR cmsg, type 2) need a kernel with
 * Mobile IPv6 to be sent at all, so this is where their drop is tested. Needs root.
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

#include "sluice.h"
#include "sluice.skel.h"

static struct sluice_bpf *skel;
static struct ring_buffer *rb;
static struct sl_event last;
static int nevents;

static int on_event(void *ctx, void *data, size_t size)
{
	(void)ctx;
	if (size >= sizeof(last))
		memcpy(&last, data, sizeof(last));
	nevents++;
	return 0;
}

static int setup(void **state)
{
	struct bpf_map *map;

	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_egress loads BPF programs: run it as root\n");
		return -1;
	}
	skel = sluice_bpf__open();
	if (!skel)
		return -1;
	/* Private maps: never pinned, never shared with a running sluiced. */
	bpf_object__for_each_map(map, skel->obj)
		bpf_map__set_pin_path(map, NULL);
	/* The UNIX socket hooks need their types set by bpf_loader.c (libbpf 1.1 does not know
	 * their sections); nothing here runs them. */
	bpf_program__set_autoload(skel->progs.sl_connect_unix, false);
	bpf_program__set_autoload(skel->progs.sl_sendmsg_unix, false);
	if (sluice_bpf__load(skel))
		return -1;
	rb = ring_buffer__new(bpf_map__fd(skel->maps.sl_events), on_event, NULL, NULL);
	return rb ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ring_buffer__free(rb);
	sluice_bpf__destroy(skel);
	return 0;
}

struct pkt {
	unsigned char b[512];
	size_t len;
};

static void put(struct pkt *p, const void *data, size_t n)
{
	assert_true(p->len + n <= sizeof(p->b));
	memcpy(p->b + p->len, data, n);
	p->len += n;
}

/* BPF_PROG_RUN of a cgroup_skb program takes an Ethernet frame (eth_type_trans). */
static void eth(struct pkt *p, uint16_t type)
{
	unsigned char h[14] = { 0 };

	h[12] = type >> 8;
	h[13] = type & 0xff;
	p->len = 0;
	put(p, h, sizeof(h));
}

static void ipv4(struct pkt *p, int ihl, uint8_t proto)
{
	unsigned char h[60] = { 0 };

	eth(p, 0x0800);
	h[0] = 0x40 | ihl;
	h[3] = 20 + 8 + (ihl - 5) * 4; /* total length */
	h[8] = 64;
	h[9] = proto;
	inet_pton(AF_INET, "127.0.0.2", h + 12);
	inet_pton(AF_INET, "127.0.0.9", h + 16);
	for (int i = 20; i < ihl * 4; i++)
		h[i] = 1; /* NOP options */
	put(p, h, ihl * 4);
}

static void ipv6(struct pkt *p, uint8_t nexthdr)
{
	unsigned char h[40] = { 0 };

	eth(p, 0x86DD);
	h[0] = 0x60;
	h[6] = nexthdr;
	h[7] = 64;
	inet_pton(AF_INET6, "fd00:5e::2", h + 8);
	inet_pton(AF_INET6, "fd00:5e::9", h + 24);
	put(p, h, sizeof(h));
}

/* An 8-byte extension header (hop-by-hop, destination options, or a routing header). */
static void ext(struct pkt *p, uint8_t next)
{
	unsigned char h[8] = { next, 0 };

	put(p, h, sizeof(h));
}

/* A type 2 routing header (what an IPV6_RTHDR control message carries): 24 bytes. */
static void rh2(struct pkt *p, uint8_t next)
{
	unsigned char h[24] = { next, 2, 2, 1 };

	inet_pton(AF_INET6, "fd00:5e::9", h + 8);
	put(p, h, sizeof(h));
}

static void udp(struct pkt *p)
{
	unsigned char h[8] = { 0x9c, 0x40, 0x1b, 0x58, 0, 8, 0, 0 }; /* 40000 -> 7000 */

	put(p, h, sizeof(h));
}

/* Runs sl_egress on @p: returns the program's answer, and the drop reason of the event it
 * emitted (0 if none) in *@reason. */
static int run(struct pkt *p, int *reason)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = p->len);
	int before = nevents;

	assert_int_equal(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.sl_egress), &o), 0);
	ring_buffer__consume(rb);
	*reason = nevents > before ? last.reason : 0;
	if (*reason)
		assert_int_equal(last.kind, SL_EV_EGRESS);
	return (int)o.retval;
}

static void test_ipv4_options_dropped(void **state)
{
	struct pkt p;
	int reason;

	(void)state;
	ipv4(&p, 6, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_IPOPTS);
	assert_int_equal(last.port, 7000);
	ipv4(&p, 15, 6);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_IPOPTS);
	/* No options: parsed through to the rules. */
	ipv4(&p, 5, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RULES);
	assert_int_equal(last.port, 7000);
}

static void test_ipv6_routing_header_anywhere_dropped(void **state)
{
	struct pkt p;
	int reason;

	(void)state;
	ipv6(&p, 43);
	rh2(&p, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RTHDR);
	/* Behind hop-by-hop and destination options. */
	ipv6(&p, 0);
	ext(&p, 60);
	ext(&p, 43);
	rh2(&p, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RTHDR);
	/* The same chain without the routing header reaches the rules. */
	ipv6(&p, 0);
	ext(&p, 60);
	ext(&p, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RULES);
	assert_int_equal(last.port, 7000);
	ipv6(&p, 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RULES);
}

static void test_ipv6_chain_too_long_or_other_transport_dropped(void **state)
{
	struct pkt p;
	int reason;

	(void)state;
	ipv6(&p, 60);
	for (int i = 0; i < 9; i++)
		ext(&p, i < 8 ? 60 : 17);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_RTHDR);
	ipv6(&p, 58); /* ICMPv6: no sandbox socket sends it */
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_PROTO);
	ipv4(&p, 5, 1);
	udp(&p);
	assert_int_equal(run(&p, &reason), 0);
	assert_int_equal(reason, SL_DROP_PROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_options_dropped),
		cmocka_unit_test(test_ipv6_routing_header_anywhere_dropped),
		cmocka_unit_test(test_ipv6_chain_too_long_or_other_transport_dropped),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
