// SPDX-License-Identifier: MIT
/*
 * An upstream DNS response, as the DNS proxy reads and relays it: sl_dns_parse_answer()
 * (the addresses that become kernel rules), sl_dns_strip_bypass() and sl_dns_rewrite() (the
 * message the sandbox gets). Input: one byte of options, then the message. The asked name is
 * the message's own question name when there is one (options bit 0 picks "example.com").
 *
 * Invariants: a parsed answer is well-formed (address families, zeroed v4 tails, TTLs not
 * below the minimum, names that are text); a rewritten message that is not truncated reads
 * back to the same answer minus the addresses the filter dropped, with every TTL capped, and
 * rewriting it again changes nothing (no bypass record, no dropped address, no TTL left over).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/dns_msg.h"
#include "fuzz.h"

/* The question name at offset 12 as text (it can hold no pointer: nothing precedes it). */
static void question_name(const uint8_t *pkt, size_t len, char *out)
{
	size_t off = SL_DNS_HDR_LEN, t = 0;

	out[0] = 0;
	while (off < len && pkt[off] && pkt[off] < 64) {
		size_t l = pkt[off++];

		if (len - off < l || t + l + 2 > SL_DNS_NAME_BUF)
			break;
		if (t)
			out[t++] = '.';
		memcpy(out + t, pkt + off, l);
		t += l;
		off += l;
	}
	out[t] = 0;
}

/* Drops the addresses whose last byte is odd, when enabled. */
static int drop_odd(uint8_t family, const uint8_t *addr, void *arg)
{
	(void)arg;
	return addr[family == AF_INET ? 3 : 15] & 1;
}

static int same_addr(const struct sl_dns_addr *x, const struct sl_dns_addr *y)
{
	return x->family == y->family && !memcmp(x->addr, y->addr, 16);
}

static void check_answer(const struct sl_dns_answer *a)
{
	static const uint8_t zero[12];

	FUZZ_CHECK(a->naddr <= SL_DNS_MAX_ADDRS && a->ncname <= SL_DNS_MAX_CNAMES);
	for (size_t i = 0; i < a->naddr; i++) {
		const struct sl_dns_addr *x = &a->addr[i];

		FUZZ_CHECK(x->family == AF_INET || x->family == AF_INET6);
		FUZZ_CHECK(x->family == AF_INET6 || !memcmp(x->addr + 4, zero, 12));
		FUZZ_CHECK(x->ttl_s >= a->min_ttl_s && x->ttl_s < 0x80000000u);
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(!same_addr(x, &a->addr[j]));
	}
	for (size_t i = 0; i < a->ncname; i++)
		FUZZ_CHECK(strlen(a->cname[i]) < SL_DNS_NAME_BUF); /* "" is the root */
}

/* @b (from the rewritten message) is @a minus the dropped addresses, TTLs capped. */
static void check_same(const struct sl_dns_answer *a, const struct sl_dns_answer *b, int filter,
		       uint32_t max_ttl_s)
{
	size_t kept = 0;

	FUZZ_CHECK(a->id == b->id && a->rcode == b->rcode && a->qtype == b->qtype);
	FUZZ_CHECK(a->ncname == b->ncname);
	for (size_t i = 0; i < a->ncname; i++)
		FUZZ_CHECK(!strcmp(a->cname[i], b->cname[i]));
	if (a->naddr_dropped || b->naddr_dropped)
		return; /* which 64 were kept depends on the order of records */
	for (size_t i = 0; i < a->naddr; i++) {
		const struct sl_dns_addr *x = &a->addr[i];
		int found = 0;

		if (filter && drop_odd(x->family, x->addr, NULL))
			continue;
		kept++;
		for (size_t j = 0; j < b->naddr; j++) {
			if (!same_addr(x, &b->addr[j]))
				continue;
			found = 1;
			FUZZ_CHECK(b->addr[j].ttl_s ==
				   (x->ttl_s < max_ttl_s ? x->ttl_s : max_ttl_s));
		}
		FUZZ_CHECK(found);
	}
	FUZZ_CHECK(kept == b->naddr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[65536], again[65536];
	static const uint32_t ttls[] = { UINT32_MAX, 0, 1, 300, 0x7fffffff, 0x80000000u };
	struct sl_dns_answer a, b;
	char qname[SL_DNS_NAME_BUF];
	const uint8_t *pkt;
	size_t len, cap;
	uint32_t max_ttl_s;
	int filter, parsed, n, m;

	if (size < 1)
		return 0;
	pkt = data + 1;
	len = size - 1;
	filter = data[0] & 2;
	max_ttl_s = ttls[(data[0] >> 2) % 6];
	/* bit 5: what a UDP client without EDNS takes; bits 6-7: tight caps */
	cap = data[0] & 0x20 ? SL_DNS_UDP_MIN : sizeof(out);
	if ((data[0] >> 6) == 3)
		cap = len / 2;
	if (data[0] & 1)
		strcpy(qname, "example.com");
	else
		question_name(pkt, len, qname);

	parsed = sl_dns_parse_answer(pkt, len, qname, &a) == 0;
	if (parsed)
		check_answer(&a);

	/* stripping alone */
	n = sl_dns_strip_bypass(pkt, len, out, cap);
	FUZZ_CHECK(n >= 0 || n == -EINVAL || n == -ENOSPC);
	FUZZ_CHECK(n <= (int)cap);
	if (n > 0 && !(out[2] & 0x02)) {
		FUZZ_CHECK(sl_dns_strip_bypass(out, n, again, sizeof(again)) == 0);
		if (parsed) {
			FUZZ_CHECK(sl_dns_parse_answer(out, n, qname, &b) == 0);
			check_same(&a, &b, 0, UINT32_MAX);
		}
	}

	/* what the proxy relays: bypass records stripped, private addresses dropped, TTLs capped */
	n = sl_dns_rewrite(pkt, len, out, cap, filter ? drop_odd : NULL, NULL, max_ttl_s);
	FUZZ_CHECK(n >= 0 || n == -EINVAL || n == -ENOSPC);
	FUZZ_CHECK(n <= (int)cap);
	if (n == 0 && parsed) {
		/* relayed as is: nothing to drop, no TTL above the cap */
		for (size_t i = 0; i < a.naddr; i++) {
			FUZZ_CHECK(!filter || !drop_odd(a.addr[i].family, a.addr[i].addr, NULL));
			FUZZ_CHECK(a.addr[i].ttl_s <= max_ttl_s);
		}
	}
	if (n > 0 && !(out[2] & 0x02)) {
		m = sl_dns_rewrite(out, n, again, sizeof(again), filter ? drop_odd : NULL, NULL,
				   max_ttl_s);
		FUZZ_CHECK(m == 0);
		if (parsed) {
			FUZZ_CHECK(sl_dns_parse_answer(out, n, qname, &b) == 0);
			check_answer(&b);
			check_same(&a, &b, filter, max_ttl_s);
		}
	}
	if (n > 0 && (out[2] & 0x02)) {
		/* truncated: header and question only, and the client retries over TCP */
		FUZZ_CHECK(out[6] == 0 && out[7] == 0 && out[8] == 0 && out[9] == 0 &&
			   out[10] == 0 && out[11] == 0);
	}
	return 0;
}
