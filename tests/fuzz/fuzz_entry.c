// SPDX-License-Identifier: MIT
/*
 * Egress entries and the kernel rules made of them: sl_entry_parse() on each line of the
 * input, then sl_rules_compile() on the address entries, checked against a brute-force
 * judge. Invariants:
 * - an accepted entry prints back (sl_entry_str()) to a string that parses to the same entry,
 *   and a host entry matches its own name (a wildcard: the names below it only);
 * - the compiled entries, looked up the way the kernel does (longest prefix, then the highest
 *   verdict among the unexpired ranges covering port and protocol), decide every probe
 *   exactly as the rules do when read one by one, at any time.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/dns_msg.h"
#include "fuzz.h"
#include "policy/policy.h"
#include "kernel/rules.h"

#define MAX_ENTRIES 24

static void check_roundtrip(const struct sl_entry *e)
{
	struct sl_entry back;
	char s[300], err[256], below[SL_HOST_MAX + 8];

	sl_entry_str(e, s, sizeof(s));
	if (sl_entry_parse(s, &back, err, sizeof(err))) {
		fprintf(stderr, "'%s' does not parse back: %s\n", s, err);
		FUZZ_CHECK(0);
	}
	FUZZ_CHECK(back.kind == e->kind && back.has_port == e->has_port &&
		   back.port_lo == e->port_lo && back.port_hi == e->port_hi);
	if (e->kind == SL_ENTRY_ADDR) {
		FUZZ_CHECK(back.family == e->family && back.plen == e->plen &&
			   !memcmp(back.addr, e->addr, 16));
		FUZZ_CHECK(e->plen <= (e->family == AF_INET ? 32 : 128));
		return;
	}
	FUZZ_CHECK(!strcmp(back.host, e->host));
	snprintf(below, sizeof(below), "x.%s", e->host);
	FUZZ_CHECK(sl_dns_name_match(e->host, 0, e->host) == 1);
	FUZZ_CHECK(sl_dns_name_match(e->host, 1, e->host) == 0);
	FUZZ_CHECK(sl_dns_name_match(e->host, 1, below) == 1);
}

static int covers(uint8_t family, const uint8_t *prefix, int plen, const uint8_t *addr)
{
	uint8_t m[16] = { 0 };
	int alen = family == AF_INET ? 4 : 16;

	memcpy(m, addr, alen);
	sl_prefix_mask(m, alen, plen);
	return !memcmp(m, prefix, alen);
}

/* The rules one by one. */
static int judge_rules(const struct sl_rule_set *rs, uint8_t family, const uint8_t *addr,
		       uint32_t port, uint8_t proto, uint64_t now)
{
	int v = SL_VERDICT_DENY;

	for (size_t i = 0; i < rs->n; i++) {
		const struct sl_addr_rule *r = &rs->v[i];

		if (r->family != family || !covers(family, r->addr, r->plen, addr) ||
		    port < r->port_lo || port > r->port_hi || !(r->protos & proto) ||
		    (r->expires_ns && r->expires_ns <= now))
			continue;
		if (r->verdict > v)
			v = r->verdict;
	}
	return v;
}

/* The kernel: one longest-prefix lookup, then bpf/verdict.h's sl_rule_verdict(). */
static int judge_kernel(const struct sl_kentry *ents, size_t n, uint8_t family, const uint8_t *addr,
			uint32_t port, uint8_t proto, uint64_t now)
{
	const struct sl_kentry *best = NULL;
	int v = SL_VERDICT_DENY;

	for (size_t i = 0; i < n; i++)
		if (ents[i].family == family && covers(family, ents[i].addr, ents[i].plen, addr) &&
		    (!best || ents[i].plen > best->plen))
			best = &ents[i];
	if (!best)
		return v;
	for (uint32_t i = 0; i < best->val.n; i++) {
		const struct sl_port_range *r = &best->val.r[i];

		if (port < r->lo || port > r->hi || !(r->protos & proto) ||
		    (r->expires_ns && r->expires_ns <= now))
			continue;
		if (r->verdict > v)
			v = r->verdict;
	}
	return v;
}

static void check_rules(const struct sl_rule_set *rs)
{
	static const uint64_t nows[] = { 0, 150, 250 };
	struct sl_kentry *ents = NULL, bad;
	size_t n = 0;
	int err;

	err = sl_rules_compile(rs, &ents, &n, &bad);
	FUZZ_CHECK(err == 0 || err == -E2BIG);
	if (err)
		return;
	FUZZ_CHECK(n >= 1 && n <= rs->n);
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(ents[i].val.n >= 1 && ents[i].val.n <= SL_MAX_PORT_RANGES);
		for (uint32_t j = 1; j < ents[i].val.n; j++)
			FUZZ_CHECK(ents[i].val.r[j - 1].lo <= ents[i].val.r[j].lo);
	}
	for (size_t i = 0; i < rs->n; i++) {
		const struct sl_addr_rule *r = &rs->v[i];
		uint32_t ports[] = { r->port_lo, r->port_hi, r->port_lo ? r->port_lo - 1u : 0,
				     r->port_hi < 65535 ? r->port_hi + 1u : 65535 };
		uint8_t probes[2][16];
		int alen = r->family == AF_INET ? 4 : 16;

		/* the first and the last address of the prefix */
		memcpy(probes[0], r->addr, 16);
		memcpy(probes[1], r->addr, 16);
		for (int b = r->plen; b < alen * 8; b++)
			probes[1][b / 8] |= 0x80 >> (b % 8);
		for (int a = 0; a < 2; a++)
			for (int p = 0; p < 4; p++)
				for (uint8_t proto = SL_PROTO_TCP; proto <= SL_PROTO_UDP; proto++)
					for (int t = 0; t < 3; t++)
						FUZZ_CHECK(judge_rules(rs, r->family, probes[a],
								       ports[p], proto, nows[t]) ==
							   judge_kernel(ents, n, r->family,
									probes[a], ports[p], proto,
									nows[t]));
	}
	free(ents);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t protos[] = { SL_PROTO_ANY, SL_PROTO_TCP, SL_PROTO_UDP };
	static const uint64_t expiries[] = { 0, 0, 100, 200 };
	struct sl_rule_set rs;
	char line[400], err[256];
	size_t off = 0, nent = 0;

	sl_rule_set_init(&rs);
	while (off < size && nent < MAX_ENTRIES) {
		const uint8_t *nl = memchr(data + off, '\n', size - off);
		size_t len = nl ? (size_t)(nl - data - off) : size - off;
		struct sl_entry e;

		if (len < sizeof(line)) {
			memcpy(line, data + off, len);
			line[len] = 0;
			err[0] = 0;
			if (sl_entry_parse(line, &e, err, sizeof(err)) == 0) {
				check_roundtrip(&e);
				if (e.kind == SL_ENTRY_ADDR) {
					struct sl_addr_rule r = {
						.family = e.family,
						.plen = e.plen,
						.port_lo = e.has_port ? e.port_lo : 0,
						.port_hi = e.has_port ? e.port_hi : 65535,
						.protos = protos[nent % 3],
						.verdict = 1 + nent % 3,
						.expires_ns = expiries[nent % 4],
					};

					memcpy(r.addr, e.addr, 16);
					(void)sl_addr_is_public(e.family, e.addr);
					FUZZ_CHECK(sl_rule_set_add(&rs, &r) == 0);
				}
			} else {
				FUZZ_CHECK(err[0]);
			}
			nent++;
		}
		off += len + 1;
	}
	if (rs.n)
		check_rules(&rs);
	sl_rule_set_free(&rs);
	return 0;
}
