// SPDX-License-Identifier: MIT
/*
 * Unit tests of the DNS wire-format module: queries parsed and refused, local responses,
 * CNAME chains and the cache-poisoning guard, HTTPS/SVCB removal, policy name matching, and
 * random mutations of valid messages fed to every parser. Packets are written byte by byte
 * here (with compression pointers placed by hand), not with the module's own builder, so that
 * a mistake in one cannot hide a mistake in the other.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "dns/dns_msg.h"

/* A packet under construction. */
struct pb {
	uint8_t b[8192];
	size_t n;
};

static void pb_u8(struct pb *p, uint8_t v)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = v;
}

static void pb_u16(struct pb *p, uint16_t v)
{
	pb_u8(p, v >> 8);
	pb_u8(p, v & 0xff);
}

static void pb_u32(struct pb *p, uint32_t v)
{
	pb_u16(p, v >> 16);
	pb_u16(p, v & 0xffff);
}

static void pb_bytes(struct pb *p, const void *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pb_u8(p, ((const uint8_t *)d)[i]);
}

static void pb_set16(struct pb *p, size_t off, uint16_t v)
{
	p->b[off] = v >> 8;
	p->b[off + 1] = v & 0xff;
}

static void pb_hdr(struct pb *p, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
		   uint16_t ar)
{
	p->n = 0;
	pb_u16(p, id);
	pb_u16(p, flags);
	pb_u16(p, qd);
	pb_u16(p, an);
	pb_u16(p, ns);
	pb_u16(p, ar);
}

/* The labels of @name ("" for none), then a pointer to @ptr if non-zero, else the root.
 * Returns the offset where the name starts. */
static size_t pb_name(struct pb *p, const char *name, size_t ptr)
{
	size_t start = p->n;
	const char *s = name;

	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		pb_u8(p, (uint8_t)l);
		pb_bytes(p, s, l);
		s += l;
		if (*s == '.')
			s++;
	}
	if (ptr)
		pb_u16(p, 0xc000 | (uint16_t)ptr);
	else
		pb_u8(p, 0);
	return start;
}

/* Owner, type, class IN, TTL and a placeholder RDLENGTH; returns where the RDLENGTH is. */
static size_t pb_rr(struct pb *p, const char *owner, size_t owner_ptr, uint16_t type, uint32_t ttl)
{
	size_t at;

	pb_name(p, owner, owner_ptr);
	pb_u16(p, type);
	pb_u16(p, SL_DNS_CLASS_IN);
	pb_u32(p, ttl);
	at = p->n;
	pb_u16(p, 0);
	return at;
}

static void pb_rr_end(struct pb *p, size_t rdlen_at)
{
	pb_set16(p, rdlen_at, (uint16_t)(p->n - rdlen_at - 2));
}

static void pb_a(struct pb *p, const char *owner, size_t owner_ptr, uint32_t ttl, uint8_t a,
		 uint8_t b, uint8_t c, uint8_t d)
{
	size_t at = pb_rr(p, owner, owner_ptr, SL_DNS_TYPE_A, ttl);

	pb_u8(p, a);
	pb_u8(p, b);
	pb_u8(p, c);
	pb_u8(p, d);
	pb_rr_end(p, at);
}

/* "WWW.Example.com" A, RD, id 0xbeef; with an OPT record (4096, DO) if @edns. */
static const uint8_t query_a[] = {
	0xbe, 0xef, 0x01, 0x00, 0,   1,	  0,   0, 0,   0,   0,	 0, 3, 'W', 'W', 'W', 7,
	'E',  'x',  'a',  'm',	'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1,   0,	 1,
};

static const uint8_t query_edns[] = {
	0xbe, 0xef, 0x01, 0x00, 0,   1,	  0,	0, 0,	0,   0,	  1,  3, 'W', 'W', 'W', 7,
	'E',  'x',  'a',  'm',	'p', 'l', 'e',	3, 'c', 'o', 'm', 0,  0, 1,   0,   1,	0,
	0,    41,   0x10, 0x00, 0,   0,	  0x80, 0, 0,	4,   0,	  10, 0, 0, /* OPT, COOKIE option, empty */
};

/* A heap copy of exactly @n bytes, so that AddressSanitizer or valgrind sees any overread. */
static uint8_t *dup_exact(const void *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);

	assert_non_null(b);
	memcpy(b, p, n);
	return b;
}

static int parse(const uint8_t *pkt, size_t len)
{
	struct sl_dns_query q;

	return sl_dns_parse_query(pkt, len, &q);
}

static void test_parse_a_query(void **state)
{
	struct sl_dns_query q;

	(void)state;
	assert_int_equal(sl_dns_parse_query(query_a, sizeof(query_a), &q), 0);
	assert_int_equal(q.id, 0xbeef);
	assert_int_equal(q.opcode, 0);
	assert_int_equal(q.rd, 1);
	assert_string_equal(q.qname, "www.example.com");
	assert_int_equal(q.qtype, SL_DNS_TYPE_A);
	assert_int_equal(q.qclass, SL_DNS_CLASS_IN);
	assert_int_equal(q.question_len, 17 + 4);
	assert_int_equal(q.edns, 0);
	assert_int_equal(q.udp_max, 512);
}

static void test_parse_edns(void **state)
{
	struct sl_dns_query q;
	uint8_t pkt[sizeof(query_edns)];

	(void)state;
	assert_int_equal(sl_dns_parse_query(query_edns, sizeof(query_edns), &q), 0);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.edns_udp_size, 4096);
	assert_int_equal(q.edns_do, 1);
	assert_int_equal(q.edns_version, 0);
	assert_int_equal(q.udp_max, 4096);
	assert_int_equal(q.question_len, 21);

	/* a size below 512 counts as 512 (RFC 6891 §6.2.5) */
	memcpy(pkt, query_edns, sizeof(pkt));
	pkt[36] = 0;
	pkt[37] = 100;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), 0);
	assert_int_equal(q.edns_udp_size, 100);
	assert_int_equal(q.udp_max, 512);

	/* the version is reported, for the caller's BADVERS */
	memcpy(pkt, query_edns, sizeof(pkt));
	pkt[39] = 1;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), 0);
	assert_int_equal(q.edns_version, 1);

	/* an option overrunning the OPT RDATA */
	memcpy(pkt, query_edns, sizeof(pkt));
	pkt[sizeof(pkt) - 1] = 1;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);
}

static void test_parse_edns_malformed(void **state)
{
	struct pb p;
	size_t q;

	(void)state;
	/* OPT owned by a name other than the root */
	pb_hdr(&p, 1, 0, 1, 0, 0, 1);
	q = pb_name(&p, "a.com", 0);
	pb_u32(&p, 0x00010001);
	pb_name(&p, "", q);
	pb_u16(&p, 41);
	pb_u16(&p, 1232);
	pb_u32(&p, 0);
	pb_u16(&p, 0);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* two OPT records (RFC 6891 §6.1.1) */
	pb_hdr(&p, 1, 0, 1, 0, 0, 2);
	pb_name(&p, "a.com", 0);
	pb_u32(&p, 0x00010001);
	for (int i = 0; i < 2; i++) {
		pb_u8(&p, 0);
		pb_u16(&p, 41);
		pb_u16(&p, 1232);
		pb_u32(&p, 0);
		pb_u16(&p, 0);
	}
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* an OPT whose RDLENGTH runs past the end */
	pb_hdr(&p, 1, 0, 1, 0, 0, 1);
	pb_name(&p, "a.com", 0);
	pb_u32(&p, 0x00010001);
	pb_u8(&p, 0);
	pb_u16(&p, 41);
	pb_u16(&p, 1232);
	pb_u32(&p, 0);
	pb_u16(&p, 4);
	pb_u16(&p, 0);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* other additional records are framed and allowed (a pointer back to the question) */
	pb_hdr(&p, 1, 0, 1, 0, 0, 1);
	q = pb_name(&p, "a.com", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "", q, 0, 1, 2, 3, 4);
	assert_int_equal(parse(p.b, p.n), 0);
}

static void test_parse_truncated(void **state)
{
	const uint8_t *seeds[] = { query_a, query_edns };
	size_t lens[] = { sizeof(query_a), sizeof(query_edns) };

	(void)state;
	for (int s = 0; s < 2; s++) {
		assert_int_equal(parse(seeds[s], lens[s]), 0);
		for (size_t n = 0; n < lens[s]; n++) {
			uint8_t *buf = dup_exact(seeds[s], n);
			struct sl_dns_query q;

			assert_int_equal(sl_dns_parse_query(buf, n, &q), -EINVAL);
			assert_int_equal(q.question_len, 0);
			free(buf);
		}
	}
}

static void test_parse_trailing(void **state)
{
	uint8_t pkt[sizeof(query_a) + 1];

	(void)state;
	memcpy(pkt, query_a, sizeof(query_a));
	pkt[sizeof(query_a)] = 0;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);
}

static void test_parse_header_rules(void **state)
{
	uint8_t pkt[sizeof(query_a)];
	struct sl_dns_query q;

	(void)state;
	/* QR set: a response is not a query */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[2] |= 0x80;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);

	/* qdcount 0 and 2 */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[5] = 0;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);
	pkt[5] = 2;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);

	/* answers or authority in a query */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[7] = 1;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[9] = 1;
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);

	/* opcode STATUS (2) and UPDATE (5): NOTIMP, with id and RD known */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[2] = (2 << 3) | 1;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), -EOPNOTSUPP);
	assert_int_equal(q.id, 0xbeef);
	assert_int_equal(q.opcode, 2);
	assert_int_equal(q.rd, 1);
	assert_int_equal(q.question_len, 0);
	pkt[2] = 5 << 3;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), -EOPNOTSUPP);

	/* but QR wins over the opcode: never answer a response */
	pkt[2] = 0x80 | (5 << 3);
	assert_int_equal(parse(pkt, sizeof(pkt)), -EINVAL);
}

static void test_parse_compression(void **state)
{
	struct pb p;

	(void)state;
	/* the question pointing at itself */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "", 12);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* a label then a pointer back to its own start: a loop */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "www", 12);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* forward, into the question's own type/class */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "www", 18);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* outside the message */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "www", 0x3fff);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* into the header */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "www", 2);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* a pointer cut after its first byte */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "www", 0);
	p.n--;
	pb_u8(&p, 0xc0);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* two additional records whose owners point at each other */
	pb_hdr(&p, 1, 0, 1, 0, 0, 2);
	pb_name(&p, "a.com", 0);
	pb_u32(&p, 0x00010001);
	assert_int_equal(p.n, 23);
	pb_a(&p, "", 39, 0, 1, 2, 3, 4);
	assert_int_equal(p.n, 39);
	pb_a(&p, "", 23, 0, 1, 2, 3, 4);
	assert_int_equal(parse(p.b, p.n), -EINVAL);
}

static void test_parse_labels(void **state)
{
	char label[64], name[300];
	struct sl_dns_query q;
	struct pb p;

	(void)state;
	/* 63 is the longest label; 64 (0x40) is an extended label type */
	memset(label, 'a', 63);
	label[63] = 0;
	snprintf(name, sizeof(name), "%s.com", label);
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, name, 0);
	pb_u32(&p, 0x00010001);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	assert_string_equal(q.qname, name);
	p.b[12] = 64;
	assert_int_equal(parse(p.b, p.n), -EINVAL);
	p.b[12] = 0x80;
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* 255 bytes of wire name is the most: 3 * 64 + 62 + 1 */
	memset(name, 0, sizeof(name));
	for (int i = 0; i < 3; i++) {
		memset(name + i * 64, 'a' + i, 63);
		name[i * 64 + 63] = '.';
	}
	memset(name + 192, 'd', 61);
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, name, 0);
	assert_int_equal(p.n - 12, 255);
	pb_u32(&p, 0x00010001);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	assert_int_equal(strlen(q.qname), 253);
	assert_string_equal(q.qname, name);

	/* 256 */
	name[192 + 61] = 'd';
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, name, 0);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* 4 labels of 63: 257 */
	snprintf(name, sizeof(name), "%s.%s.%s.%s", label, label, label, label);
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, name, 0);
	pb_u32(&p, 0x00010001);
	assert_int_equal(parse(p.b, p.n), -EINVAL);

	/* a label overrunning the message */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_u8(&p, 10);
	pb_bytes(&p, "abc", 3);
	assert_int_equal(parse(p.b, p.n), -EINVAL);
}

static void test_parse_ambiguous_names(void **state)
{
	static const char *bad[] = { "a.b", "a\0b", "a b", "a\x7f", "\xc3\xa9" };
	struct sl_dns_query q;
	struct pb p;

	(void)state;
	/* one label holding "allowed.com": its text would pass for another name */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t l = i == 1 ? 3 : strlen(bad[i]);

		pb_hdr(&p, 1, 0, 1, 0, 0, 0);
		pb_u8(&p, (uint8_t)l);
		pb_bytes(&p, bad[i], l);
		pb_name(&p, "com", 0);
		pb_u32(&p, 0x00010001);
		assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), -EINVAL);
		assert_string_equal(q.qname, "");
	}

	/* the root is a name ("dig . NS"); '_' and '*' are printable */
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_u8(&p, 0);
	pb_u32(&p, 0x00020001);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	assert_string_equal(q.qname, "");
	pb_hdr(&p, 1, 0, 1, 0, 0, 0);
	pb_name(&p, "_Dmarc.*.Ex-ample.COM", 0);
	pb_u32(&p, 0x00100001);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	assert_string_equal(q.qname, "_dmarc.*.ex-ample.com");
	assert_int_equal(q.qtype, SL_DNS_TYPE_TXT);
}

static void test_build_query(void **state)
{
	uint8_t out[600];
	struct sl_dns_query q;
	char name[300];
	int n;

	(void)state;
	n = sl_dns_build_query(0xbeef, "WWW.Example.com", SL_DNS_TYPE_A, 1, 0, out, sizeof(out));
	assert_int_equal(n, sizeof(query_a));
	assert_memory_equal(out, query_a, sizeof(query_a));

	n = sl_dns_build_query(7, "api.github.com.", SL_DNS_TYPE_AAAA, 0, 1232, out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal(sl_dns_parse_query(out, (size_t)n, &q), 0);
	assert_int_equal(q.id, 7);
	assert_int_equal(q.rd, 0);
	assert_string_equal(q.qname, "api.github.com");
	assert_int_equal(q.qtype, SL_DNS_TYPE_AAAA);
	assert_int_equal(q.edns, 1);
	assert_int_equal(q.edns_udp_size, 1232);

	assert_int_equal(sl_dns_build_query(1, "a..b", 1, 1, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(sl_dns_build_query(1, ".a", 1, 1, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(sl_dns_build_query(1, "a b.com", 1, 1, 0, out, sizeof(out)), -EINVAL);
	memset(name, 'a', 64);
	strcpy(name + 64, ".com");
	assert_int_equal(sl_dns_build_query(1, name, 1, 1, 0, out, sizeof(out)), -EINVAL);
	strcpy(name + 63, ".com");
	assert_int_equal(sl_dns_build_query(1, name, 1, 1, 0, out, sizeof(out)), 12 + 69 + 4);
	memset(name, 'a', 299);
	name[299] = 0;
	for (int i = 63; i < 299; i += 64)
		name[i] = '.';
	assert_int_equal(sl_dns_build_query(1, name, 1, 1, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(sl_dns_build_query(1, "a.com", 1, 1, 0, out, 20), -ENOSPC);
	n = sl_dns_build_query(1, ".", 2, 1, 0, out, sizeof(out));
	assert_int_equal(n, 12 + 1 + 4);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void test_build_error_echo(void **state)
{
	static const int rcodes[] = { 0, 1, 2, 3, 4, 5 };
	struct sl_dns_query q;
	struct sl_dns_answer a;
	uint8_t out[512];
	int n;

	(void)state;
	assert_int_equal(sl_dns_parse_query(query_a, sizeof(query_a), &q), 0);
	for (size_t i = 0; i < sizeof(rcodes) / sizeof(rcodes[0]); i++) {
		n = sl_dns_build_error(&q, query_a, sizeof(query_a), rcodes[i], out, sizeof(out));
		assert_int_equal(n, sizeof(query_a));
		assert_int_equal(get16(out), 0xbeef);
		assert_int_equal(get16(out + 2), 0x8000 | 0x0100 | 0x0080 | rcodes[i]);
		assert_int_equal(get16(out + 4), 1);
		assert_int_equal(get16(out + 6), 0);
		assert_int_equal(get16(out + 8), 0);
		assert_int_equal(get16(out + 10), 0);
		/* the question as sent, letter case included (0x20 randomisation) */
		assert_memory_equal(out + 12, query_a + 12, sizeof(query_a) - 12);
		/* and a resolver reads it as the answer to its query */
		assert_int_equal(sl_dns_parse_answer(out, (size_t)n, "www.example.com", &a), 0);
		assert_int_equal(a.id, 0xbeef);
		assert_int_equal(a.rcode, rcodes[i]);
		assert_int_equal(a.qtype, SL_DNS_TYPE_A);
		assert_int_equal(a.naddr, 0);
	}

	/* RD clear stays clear */
	{
		uint8_t pkt[sizeof(query_a)];

		memcpy(pkt, query_a, sizeof(pkt));
		pkt[2] = 0;
		assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), 0);
		n = sl_dns_build_error(&q, pkt, sizeof(pkt), SL_DNS_RCODE_NXDOMAIN, out,
				       sizeof(out));
		assert_int_equal(n, sizeof(pkt));
		assert_int_equal(get16(out + 2), 0x8083);
	}

	/* too small an output buffer */
	assert_int_equal(sl_dns_parse_query(query_a, sizeof(query_a), &q), 0);
	assert_int_equal(sl_dns_build_error(&q, query_a, sizeof(query_a), 5, out, 20), -ENOSPC);
	assert_int_equal(sl_dns_build_error(NULL, query_a, sizeof(query_a), 1, out, 11), -ENOSPC);
	/* rcodes beyond 4 bits need an OPT record */
	assert_int_equal(sl_dns_build_error(&q, query_a, sizeof(query_a), 16, out, sizeof(out)),
			 -EINVAL);
	assert_int_equal(sl_dns_build_error(&q, query_a, sizeof(query_a), -1, out, sizeof(out)),
			 -EINVAL);
}

static void test_build_error_edns(void **state)
{
	struct sl_dns_query q;
	uint8_t out[512];
	size_t ql = sizeof(query_edns) - 15; /* header and question */
	int n;

	(void)state;
	assert_int_equal(sl_dns_parse_query(query_edns, sizeof(query_edns), &q), 0);
	n = sl_dns_build_error(&q, query_edns, sizeof(query_edns), SL_DNS_RCODE_REFUSED, out,
			       sizeof(out));
	assert_int_equal(n, ql + 11);
	assert_int_equal(get16(out + 2), 0x8185);
	assert_int_equal(get16(out + 10), 1);
	assert_memory_equal(out + 12, query_edns + 12, ql - 12);
	assert_int_equal(out[ql], 0); /* root owner */
	assert_int_equal(get16(out + ql + 1), SL_DNS_TYPE_OPT);
	assert_int_equal(get16(out + ql + 3), SL_DNS_EDNS_UDP_SIZE);
	assert_int_equal(get16(out + ql + 9), 0);

	/* BADVERS: 16 = extended RCODE 1, header RCODE 0 */
	n = sl_dns_build_error(&q, query_edns, sizeof(query_edns), SL_DNS_RCODE_BADVERS, out,
			       sizeof(out));
	assert_int_equal(n, ql + 11);
	assert_int_equal(get16(out + 2) & 0xf, 0);
	assert_int_equal(out[ql + 5], 1);
}

static int find(const uint8_t *hay, size_t n, const void *needle, size_t m);

/* A query as a hostile sandbox sends it: EDNS client subnet, a cookie and padding in its OPT
 * record, a TXT record in the additional section, AD and CD set. */
static size_t hostile_query(struct pb *p, uint16_t udp, int edns)
{
	size_t at;

	pb_hdr(p, 0x1234, 0x0100 | 0x0020 | 0x0010, 1, 0, 0, edns ? 2 : 1);
	pb_name(p, "Api.Example.COM", 0);
	pb_u16(p, SL_DNS_TYPE_AAAA);
	pb_u16(p, SL_DNS_CLASS_IN);
	at = pb_rr(p, "leak.example", 0, SL_DNS_TYPE_TXT, 60);
	pb_u8(p, 6);
	pb_bytes(p, "secret", 6);
	pb_rr_end(p, at);
	if (edns) {
		pb_u8(p, 0); /* root */
		pb_u16(p, SL_DNS_TYPE_OPT);
		pb_u16(p, udp);
		pb_u32(p, 0x00008000); /* version 0, DO */
		at = p->n;
		pb_u16(p, 0);
		pb_u16(p, 8); /* ECS: family 1, /24 of 10.1.2.0 */
		pb_u16(p, 7);
		pb_u16(p, 1);
		pb_u8(p, 24);
		pb_u8(p, 0);
		pb_bytes(p, "\x0a\x01\x02", 3);
		pb_u16(p, 10); /* COOKIE, client part */
		pb_u16(p, 8);
		pb_bytes(p, "COOKIE!!", 8);
		pb_u16(p, 12); /* PADDING */
		pb_u16(p, 4);
		pb_bytes(p, "\0\0\0\0", 4);
		pb_rr_end(p, at);
	}
	return 12 + 17 + 4; /* header and question */
}

static void test_build_forward(void **state)
{
	struct sl_dns_query q, q2;
	struct pb p;
	uint8_t out[512];
	size_t ql;
	int n;

	(void)state;
	ql = hostile_query(&p, 4096, 1);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	n = sl_dns_build_forward(&q, p.b, p.n, 0xa55a, out, sizeof(out));
	/* header, question as sent, an empty OPT: nothing of the rest */
	assert_int_equal(n, ql + 11);
	assert_int_equal(get16(out), 0xa55a);
	assert_int_equal(get16(out + 2), 0x0100 | 0x0010); /* RD and CD only, AD dropped */
	assert_int_equal(get16(out + 4), 1);
	assert_int_equal(get16(out + 6), 0);
	assert_int_equal(get16(out + 8), 0);
	assert_int_equal(get16(out + 10), 1);
	assert_memory_equal(out + 12, p.b + 12, ql - 12); /* letter case kept */
	assert_int_equal(out[ql], 0);
	assert_int_equal(get16(out + ql + 1), SL_DNS_TYPE_OPT);
	assert_int_equal(get16(out + ql + 3), SL_DNS_EDNS_UDP_SIZE); /* not the client's 4096 */
	assert_int_equal(out[ql + 5], 0); /* extended RCODE */
	assert_int_equal(out[ql + 6], 0); /* version */
	assert_int_equal(out[ql + 7], 0x80); /* DO as asked */
	assert_int_equal(out[ql + 8], 0);
	assert_int_equal(get16(out + ql + 9), 0); /* no option at all */
	assert_int_equal(find(out, n, "secret", 6), 0);
	assert_int_equal(find(out, n, "COOKIE", 6), 0);
	/* and it is a query the parser accepts, for the same question */
	assert_int_equal(sl_dns_parse_query(out, n, &q2), 0);
	assert_string_equal(q2.qname, "api.example.com");
	assert_int_equal(q2.qtype, SL_DNS_TYPE_AAAA);
	assert_int_equal(q2.edns_udp_size, SL_DNS_EDNS_UDP_SIZE);

	/* a client taking less than our size gets no more than it takes */
	hostile_query(&p, 700, 1);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	n = sl_dns_build_forward(&q, p.b, p.n, 1, out, sizeof(out));
	assert_int_equal(get16(out + ql + 3), 700);
	/* ... and below 512 means 512 (RFC 6891 section 6.2.5) */
	hostile_query(&p, 100, 1);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	n = sl_dns_build_forward(&q, p.b, p.n, 1, out, sizeof(out));
	assert_int_equal(get16(out + ql + 3), 512);

	/* without EDNS: no OPT record either (and still not the TXT) */
	hostile_query(&p, 0, 0);
	assert_int_equal(sl_dns_parse_query(p.b, p.n, &q), 0);
	n = sl_dns_build_forward(&q, p.b, p.n, 1, out, sizeof(out));
	assert_int_equal(n, ql);
	assert_int_equal(get16(out + 10), 0);

	/* bounds */
	assert_int_equal(sl_dns_build_forward(&q, p.b, p.n, 1, out, ql - 1), -ENOSPC);
	assert_int_equal(sl_dns_build_forward(NULL, p.b, p.n, 1, out, sizeof(out)), -EINVAL);
}

/* A denied name's NXDOMAIN says who refused it, in an EDE option, to EDNS clients only. */
static void test_build_error_ede(void **state)
{
	static const char text[] = "sluice: name not in policy of sandbox agent";
	struct sl_dns_query q;
	struct sl_dns_answer a;
	uint8_t out[512], plain[512];
	size_t ql = sizeof(query_edns) - 15;
	int n, m;

	(void)state;
	assert_int_equal(sl_dns_parse_query(query_edns, sizeof(query_edns), &q), 0);
	n = sl_dns_build_error_ede(&q, query_edns, sizeof(query_edns), SL_DNS_RCODE_NXDOMAIN,
				   SL_DNS_EDE_BLOCKED, text, out, sizeof(out));
	assert_int_equal(n, ql + 11 + 4 + 2 + strlen(text));
	assert_int_equal(get16(out + 2), 0x8183);
	assert_int_equal(get16(out + 10), 1);
	assert_int_equal(get16(out + ql + 1), SL_DNS_TYPE_OPT);
	assert_int_equal(get16(out + ql + 9), 4 + 2 + strlen(text)); /* RDLENGTH */
	assert_int_equal(get16(out + ql + 11), 15); /* OPTION-CODE: EDE (RFC 8914) */
	assert_int_equal(get16(out + ql + 13), 2 + strlen(text));
	assert_int_equal(get16(out + ql + 15), 15); /* INFO-CODE: Blocked */
	assert_memory_equal(out + ql + 17, text, strlen(text)); /* no NUL after it */
	/* still a well-formed answer: no address, NXDOMAIN */
	assert_int_equal(sl_dns_parse_answer(out, n, "www.example.com", &a), 0);
	assert_int_equal(a.rcode, SL_DNS_RCODE_NXDOMAIN);
	assert_int_equal(a.naddr, 0);
	/* a too small buffer */
	assert_int_equal(sl_dns_build_error_ede(&q, query_edns, sizeof(query_edns), 3, 15, text,
						out, n - 1),
			 -ENOSPC);

	/* without EDNS in the query, no OPT, so no EDE: the plain NXDOMAIN */
	assert_int_equal(sl_dns_parse_query(query_a, sizeof(query_a), &q), 0);
	n = sl_dns_build_error_ede(&q, query_a, sizeof(query_a), SL_DNS_RCODE_NXDOMAIN,
				   SL_DNS_EDE_BLOCKED, text, out, sizeof(out));
	m = sl_dns_build_error(&q, query_a, sizeof(query_a), SL_DNS_RCODE_NXDOMAIN, plain,
			       sizeof(plain));
	assert_int_equal(n, m);
	assert_memory_equal(out, plain, m);
	assert_int_equal(get16(out + 10), 0);
}

static void test_build_error_unparsed(void **state)
{
	struct sl_dns_query q;
	uint8_t pkt[sizeof(query_a)], out[64];
	int n;

	(void)state;
	/* FORMERR for every prefix of a query: header only, id echoed when there is one */
	for (size_t len = 0; len < sizeof(query_a); len++) {
		uint8_t *buf = dup_exact(query_a, len);

		assert_int_equal(sl_dns_parse_query(buf, len, &q), -EINVAL);
		n = sl_dns_build_error(&q, buf, len, SL_DNS_RCODE_FORMERR, out, sizeof(out));
		free(buf);
		if (len < 2) {
			assert_int_equal(n, -EINVAL);
			continue;
		}
		assert_int_equal(n, 12);
		assert_int_equal(get16(out), 0xbeef);
		assert_int_equal(get16(out + 2), len >= 3 ? 0x8181 : 0x8081);
		assert_int_equal(get16(out + 4), 0);
		assert_int_equal(get16(out + 10), 0);
	}

	/* NOTIMP: header only, opcode echoed */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[2] = (2 << 3) | 1;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), -EOPNOTSUPP);
	n = sl_dns_build_error(&q, pkt, sizeof(pkt), SL_DNS_RCODE_NOTIMP, out, sizeof(out));
	assert_int_equal(n, 12);
	assert_int_equal(get16(out + 2), 0x8000 | (2 << 11) | 0x0100 | 0x0080 | 4);

	/* garbage with a question that cannot be read */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[12] = 0xc0;
	assert_int_equal(sl_dns_parse_query(pkt, sizeof(pkt), &q), -EINVAL);
	n = sl_dns_build_error(&q, pkt, sizeof(pkt), SL_DNS_RCODE_FORMERR, out, sizeof(out));
	assert_int_equal(n, 12);
	assert_int_equal(get16(out + 4), 0);

	/* a response is never answered */
	memcpy(pkt, query_a, sizeof(pkt));
	pkt[2] |= 0x80;
	assert_int_equal(sl_dns_build_error(NULL, pkt, sizeof(pkt), 1, out, sizeof(out)), -EINVAL);
	assert_int_equal(sl_dns_build_error(NULL, NULL, 0, 1, out, sizeof(out)), -EINVAL);
}

/*
 * www.example.com A: www.example.com CNAME a.cdn.net CNAME b.cdn.net CNAME c.edge.org, with
 * A and AAAA records for c.edge.org (one of them before the chain, one in upper case, one
 * repeated), an A record for a name outside the chain, and an A record for a chain name in
 * the additional section. Owners and targets are compressed wherever they can be.
 */
static void chain_answer(struct pb *p)
{
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	size_t at, c_edge, a_cdn, b_cdn;

	pb_hdr(p, 0x1234, 0x8180, 1, 8, 0, 1);
	pb_name(p, "www.example.com", 0);
	pb_u32(p, 0x00010001);

	/* 1: c.edge.org A 1.2.3.4, ahead of the CNAMEs leading to it */
	c_edge = p->n;
	pb_a(p, "c.edge.org", 0, 300, 1, 2, 3, 4);
	/* 2: www.example.com CNAME a.cdn.net */
	at = pb_rr(p, "", 12, SL_DNS_TYPE_CNAME, 600);
	a_cdn = pb_name(p, "a.cdn.net", 0);
	pb_rr_end(p, at);
	/* 3: a.cdn.net CNAME b.cdn.net, "b" + pointer to "cdn.net" */
	at = pb_rr(p, "", a_cdn, SL_DNS_TYPE_CNAME, 120);
	b_cdn = pb_name(p, "b", a_cdn + 2);
	pb_rr_end(p, at);
	/* 4: b.cdn.net CNAME c.edge.org */
	at = pb_rr(p, "", b_cdn, SL_DNS_TYPE_CNAME, 500);
	pb_name(p, "", c_edge);
	pb_rr_end(p, at);
	/* 5: c.edge.org AAAA 2001:db8::1 */
	at = pb_rr(p, "", c_edge, SL_DNS_TYPE_AAAA, 60);
	pb_bytes(p, v6, 16);
	pb_rr_end(p, at);
	/* 6: evil.org A 6.6.6.6: not on the chain */
	pb_a(p, "evil", c_edge + 7, 10, 6, 6, 6, 6);
	/* 7: C.EDGE.ORG A 5.6.7.8 */
	pb_a(p, "C.EDGE.ORG", 0, 100, 5, 6, 7, 8);
	/* 8: c.edge.org A 1.2.3.4 again, shorter TTL */
	pb_a(p, "", c_edge, 30, 1, 2, 3, 4);
	/* additional: a.cdn.net A 9.9.9.9 */
	pb_a(p, "", a_cdn, 10, 9, 9, 9, 9);
}

static void assert_v4(const struct sl_dns_addr *x, uint8_t a, uint8_t b, uint8_t c, uint8_t d,
		      uint32_t ttl)
{
	const uint8_t want[16] = { a, b, c, d };

	assert_int_equal(x->family, AF_INET);
	assert_memory_equal(x->addr, want, 16);
	assert_int_equal(x->ttl_s, ttl);
}

static void test_answer_chain(void **state)
{
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	struct sl_dns_answer a;
	struct pb p;

	(void)state;
	chain_answer(&p);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "WWW.Example.COM.", &a), 0);
	assert_int_equal(a.id, 0x1234);
	assert_int_equal(a.rcode, 0);
	assert_int_equal(a.tc, 0);
	assert_int_equal(a.qtype, SL_DNS_TYPE_A);
	assert_int_equal(a.ncname, 3);
	assert_string_equal(a.cname[0], "a.cdn.net");
	assert_string_equal(a.cname[1], "b.cdn.net");
	assert_string_equal(a.cname[2], "c.edge.org");
	assert_int_equal(a.naddr, 3);
	assert_int_equal(a.naddr_dropped, 0);
	assert_v4(&a.addr[0], 1, 2, 3, 4, 30);
	assert_int_equal(a.addr[1].family, AF_INET6);
	assert_memory_equal(a.addr[1].addr, v6, 16);
	assert_int_equal(a.addr[1].ttl_s, 60);
	assert_v4(&a.addr[2], 5, 6, 7, 8, 100);
	assert_int_equal(a.min_ttl_s, 30);

	/* every prefix is malformed */
	for (size_t n = 0; n < p.n; n++) {
		uint8_t *buf = dup_exact(p.b, n);

		assert_int_equal(sl_dns_parse_answer(buf, n, "www.example.com", &a), -EINVAL);
		free(buf);
	}
	/* and so is a trailing byte */
	p.b[p.n++] = 0;
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "www.example.com", &a), -EINVAL);
}

static void test_answer_chain_reversed(void **state)
{
	struct sl_dns_answer a;
	size_t at;
	struct pb p;

	(void)state;
	/* the chain written backwards: each pass over the section finds one more link */
	pb_hdr(&p, 9, 0x8180, 1, 4, 0, 0);
	pb_name(&p, "q.example", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "z.example", 0, 50, 10, 0, 0, 1);
	at = pb_rr(&p, "y.example", 0, SL_DNS_TYPE_CNAME, 40);
	pb_name(&p, "z.example", 0);
	pb_rr_end(&p, at);
	at = pb_rr(&p, "x.example", 0, SL_DNS_TYPE_CNAME, 30);
	pb_name(&p, "Y.example", 0);
	pb_rr_end(&p, at);
	at = pb_rr(&p, "q.example", 0, SL_DNS_TYPE_CNAME, 20);
	pb_name(&p, "x.example", 0);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "q.example", &a), 0);
	assert_int_equal(a.ncname, 3);
	assert_string_equal(a.cname[0], "x.example");
	assert_string_equal(a.cname[1], "y.example");
	assert_string_equal(a.cname[2], "z.example");
	assert_int_equal(a.naddr, 1);
	assert_v4(&a.addr[0], 10, 0, 0, 1, 50);
	assert_int_equal(a.min_ttl_s, 20);
}

static void test_answer_out_of_chain(void **state)
{
	struct sl_dns_answer a;
	size_t at;
	struct pb p;

	(void)state;
	/* only other names' addresses, in every section: nothing to install */
	pb_hdr(&p, 9, 0x8180, 1, 3, 1, 1);
	pb_name(&p, "allowed.com", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "evil.com", 0, 50, 6, 6, 6, 6);
	pb_a(&p, "allowed.com.evil", 0, 50, 6, 6, 6, 7);
	/* a CNAME from a name off the chain to a name on it adds nothing either */
	at = pb_rr(&p, "evil.com", 0, SL_DNS_TYPE_CNAME, 30);
	pb_name(&p, "", 12);
	pb_rr_end(&p, at);
	pb_a(&p, "", 12, 50, 6, 6, 6, 8); /* authority */
	pb_a(&p, "", 12, 50, 6, 6, 6, 9); /* additional */
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "allowed.com", &a), 0);
	assert_int_equal(a.naddr, 0);
	assert_int_equal(a.ncname, 0);
	assert_int_equal(a.min_ttl_s, 0);

	/* CNAME to a name whose address is absent: the chain, no address */
	pb_hdr(&p, 9, 0x8180, 1, 2, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 30);
	pb_name(&p, "b.example", 0);
	pb_rr_end(&p, at);
	pb_a(&p, "c.example", 0, 50, 6, 6, 6, 6);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.naddr, 0);
	assert_int_equal(a.ncname, 1);
	assert_string_equal(a.cname[0], "b.example");
	assert_int_equal(a.min_ttl_s, 30);
}

/* q.example, then @n CNAMEs n0 -> n1 -> ... and an A record at the end. */
static void cname_chain(struct pb *p, int n)
{
	char from[32], to[32];
	size_t at;

	pb_hdr(p, 1, 0x8180, 1, (uint16_t)n + 1, 0, 0);
	pb_name(p, "q.example", 0);
	pb_u32(p, 0x00010001);
	strcpy(to, "q.example");
	for (int i = 0; i < n; i++) {
		strcpy(from, to);
		snprintf(to, sizeof(to), "n%d.example", i + 1);
		at = pb_rr(p, from, 0, SL_DNS_TYPE_CNAME, 60);
		pb_name(p, to, 0);
		pb_rr_end(p, at);
	}
	pb_a(p, to, 0, 60, 10, 0, 0, 1);
}

static void test_answer_limits(void **state)
{
	struct sl_dns_answer a;
	size_t at;
	struct pb p;

	(void)state;
	cname_chain(&p, SL_DNS_MAX_CNAMES);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "q.example", &a), 0);
	assert_int_equal(a.ncname, SL_DNS_MAX_CNAMES);
	assert_string_equal(a.cname[SL_DNS_MAX_CNAMES - 1], "n16.example");
	assert_int_equal(a.naddr, 1);
	cname_chain(&p, SL_DNS_MAX_CNAMES + 1);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "q.example", &a), -ELOOP);

	/* a CNAME loop is no harm: two names, no address */
	pb_hdr(&p, 1, 0x8180, 1, 2, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "b.example", 0);
	pb_rr_end(&p, at);
	at = pb_rr(&p, "b.example", 0, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "", 12);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.ncname, 1);
	assert_int_equal(a.naddr, 0);

	/* a name with two different CNAMEs (RFC 2181 §10.1) */
	pb_hdr(&p, 1, 0x8180, 1, 2, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "b.example", 0);
	pb_rr_end(&p, at);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "c.example", 0);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);

	/* 70 addresses: 64 kept, 6 counted; a TTL with the top bit set is 0 */
	pb_hdr(&p, 1, 0x8180, 1, 70, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	for (int i = 0; i < 70; i++)
		pb_a(&p, "", 12, i == 5 ? 0x80000001u : 100, 10, 0, 0, (uint8_t)i);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.naddr, SL_DNS_MAX_ADDRS);
	assert_int_equal(a.naddr_dropped, 6);
	assert_v4(&a.addr[63], 10, 0, 0, 63, 100);
	assert_int_equal(a.addr[5].ttl_s, 0);
	assert_int_equal(a.min_ttl_s, 0);
}

static void test_answer_rejects(void **state)
{
	struct sl_dns_answer a;
	struct pb p;
	size_t at;

	(void)state;
	chain_answer(&p);
	/* QR clear */
	p.b[2] &= 0x7f;
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "www.example.com", &a), -EINVAL);
	/* the answer to another question */
	chain_answer(&p);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "www.example.org", &a), -EINVAL);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a..b", &a), -EINVAL);
	/* an A record of 5 bytes */
	pb_hdr(&p, 1, 0x8180, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_A, 60);
	pb_bytes(&p, "\1\2\3\4\5", 5);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);
	/* a CNAME whose RDATA holds more than the name */
	pb_hdr(&p, 1, 0x8180, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "b.example", 0);
	pb_u8(&p, 0);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);
	/* a chain through a name with no unambiguous text */
	pb_hdr(&p, 1, 0x8180, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_u8(&p, 3);
	pb_bytes(&p, "b.c", 3);
	pb_u8(&p, 0);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);
	/* an owner pointer looping on itself in the answer section */
	pb_hdr(&p, 1, 0x8180, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "", p.n, 60, 1, 2, 3, 4);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);
	/* no question and NOERROR */
	pb_hdr(&p, 1, 0x8180, 0, 0, 0, 0);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), -EINVAL);
	/* but SERVFAIL without a question is an answer */
	pb_hdr(&p, 1, 0x8182, 0, 0, 0, 0);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.rcode, SL_DNS_RCODE_SERVFAIL);
	assert_int_equal(a.qtype, 0);
	/* NXDOMAIN after a CNAME: the chain, the rcode */
	pb_hdr(&p, 1, 0x8183, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	at = pb_rr(&p, "", 12, SL_DNS_TYPE_CNAME, 60);
	pb_name(&p, "gone.example", 0);
	pb_rr_end(&p, at);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.rcode, SL_DNS_RCODE_NXDOMAIN);
	assert_int_equal(a.ncname, 1);
	/* truncated: nothing past the question is read */
	chain_answer(&p);
	p.b[2] |= 0x02;
	p.n = 12 + 17 + 4 + 5; /* cut inside the first record */
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "www.example.com", &a), 0);
	assert_int_equal(a.tc, 1);
	assert_int_equal(a.naddr, 0);
}

/* Walks @pkt's records, which must have uncompressed names, noting types per section. */
static void walk_uncompressed(const uint8_t *pkt, size_t len, uint16_t *types, size_t *ntypes)
{
	size_t off = 12, total;

	for (unsigned i = 0; i < get16(pkt + 4); i++) {
		while (pkt[off])
			off += 1 + pkt[off];
		off += 5;
	}
	total = (size_t)get16(pkt + 6) + get16(pkt + 8) + get16(pkt + 10);
	for (size_t i = 0; i < total; i++) {
		assert_true(off < len);
		while (pkt[off]) {
			assert_true(pkt[off] <= 63);
			off += 1 + pkt[off];
			assert_true(off < len);
		}
		off++;
		types[i] = get16(pkt + off);
		off += 10 + get16(pkt + off + 8);
	}
	assert_int_equal(off, len);
	*ntypes = total;
}

/*
 * Www.Example.com A: answers HTTPS, CNAME edge.example.com (compressed), A; authority SOA
 * with compressed names; additional SVCB, RRSIG over HTTPS, RRSIG over A, MX with a
 * compressed exchange, OPT.
 */
static void bypass_answer(struct pb *p, uint16_t qtype)
{
	static const uint8_t svc[] = { 0, 1, 0, 0, 1, 0, 3, 2, 'h', '2' };
	size_t at, edge;

	pb_hdr(p, 0x4242, 0x8180, 1, 3, 1, 5);
	pb_name(p, "Www.Example.com", 0);
	pb_u16(p, qtype);
	pb_u16(p, 1);
	at = pb_rr(p, "", 12, SL_DNS_TYPE_HTTPS, 300);
	pb_bytes(p, svc, sizeof(svc));
	pb_rr_end(p, at);
	at = pb_rr(p, "", 12, SL_DNS_TYPE_CNAME, 300);
	edge = pb_name(p, "edge", 16);
	pb_rr_end(p, at);
	pb_a(p, "", edge, 300, 1, 2, 3, 4);
	at = pb_rr(p, "", 16, SL_DNS_TYPE_SOA, 300);
	pb_name(p, "ns1", 16);
	pb_name(p, "host", 16);
	for (int i = 0; i < 5; i++)
		pb_u32(p, (uint32_t)i + 1);
	pb_rr_end(p, at);
	at = pb_rr(p, "", edge, SL_DNS_TYPE_SVCB, 300);
	pb_bytes(p, svc, sizeof(svc));
	pb_rr_end(p, at);
	at = pb_rr(p, "", 12, SL_DNS_TYPE_RRSIG, 300);
	pb_u16(p, SL_DNS_TYPE_HTTPS);
	pb_bytes(p, "sig", 3);
	pb_rr_end(p, at);
	at = pb_rr(p, "", edge, SL_DNS_TYPE_RRSIG, 300);
	pb_u16(p, SL_DNS_TYPE_A);
	pb_bytes(p, "sig", 3);
	pb_rr_end(p, at);
	at = pb_rr(p, "", 16, SL_DNS_TYPE_MX, 300);
	pb_u16(p, 10);
	pb_name(p, "mail", 16);
	pb_rr_end(p, at);
	pb_u8(p, 0);
	pb_u16(p, SL_DNS_TYPE_OPT);
	pb_u16(p, 1232);
	pb_u32(p, 0);
	pb_u16(p, 0);
}

/* "Example.com" as the question spells it: names are copied with their letter case */
static const uint8_t example_com[] = { 7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0 };

static int find(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++)
		if (!memcmp(hay + i, needle, m))
			return 1;
	return 0;
}

static void test_strip_bypass(void **state)
{
	static const uint16_t want[] = { SL_DNS_TYPE_CNAME, SL_DNS_TYPE_A,  SL_DNS_TYPE_SOA,
					 SL_DNS_TYPE_RRSIG, SL_DNS_TYPE_MX, SL_DNS_TYPE_OPT };
	uint8_t out[4096], soa[64], mx[32];
	struct sl_dns_answer a, b;
	uint16_t types[16];
	size_t ntypes, n;
	struct pb p;
	int r;

	(void)state;
	assert_int_equal(sl_dns_is_bypass_type(SL_DNS_TYPE_HTTPS), 1);
	assert_int_equal(sl_dns_is_bypass_type(SL_DNS_TYPE_SVCB), 1);
	assert_int_equal(sl_dns_is_bypass_type(SL_DNS_TYPE_A), 0);
	assert_int_equal(sl_dns_is_bypass_type(SL_DNS_TYPE_AAAA), 0);
	assert_int_equal(sl_dns_is_bypass_type(SL_DNS_TYPE_CNAME), 0);

	bypass_answer(&p, SL_DNS_TYPE_A);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "www.example.com", &a), 0);
	r = sl_dns_strip_bypass(p.b, p.n, out, sizeof(out));
	assert_true(r > 12);
	n = (size_t)r;
	/* header as it was, counts fixed, question as sent */
	assert_memory_equal(out, p.b, 6);
	assert_int_equal(get16(out + 6), 2);
	assert_int_equal(get16(out + 8), 1);
	assert_int_equal(get16(out + 10), 3);
	assert_memory_equal(out + 12, p.b + 12, 17 + 4);
	walk_uncompressed(out, n, types, &ntypes);
	assert_int_equal(ntypes, 6);
	assert_memory_equal(types, want, sizeof(want));
	/* the names inside SOA and MX RDATA written out */
	n = 0;
	soa[n++] = 3;
	memcpy(soa + n, "ns1", 3);
	n += 3;
	memcpy(soa + n, example_com, sizeof(example_com));
	n += sizeof(example_com);
	soa[n++] = 4;
	memcpy(soa + n, "host", 4);
	n += 4;
	memcpy(soa + n, example_com, sizeof(example_com));
	n += sizeof(example_com);
	memcpy(soa + n, "\0\0\0\1\0\0\0\2\0\0\0\3\0\0\0\4\0\0\0\5", 20);
	n += 20;
	assert_true(find(out, (size_t)r, soa, n));
	memcpy(mx, "\0\x14\0\x0a\4mail", 9);
	memcpy(mx + 9, example_com, sizeof(example_com));
	assert_true(find(out, (size_t)r, mx, 9 + sizeof(example_com)));
	/* nothing left to strip, and the same addresses come out */
	assert_int_equal(sl_dns_strip_bypass(out, (size_t)r, out + 2048, 2048), 0);
	assert_int_equal(sl_dns_parse_answer(out, (size_t)r, "www.example.com", &b), 0);
	assert_int_equal(b.naddr, 1);
	assert_v4(&b.addr[0], 1, 2, 3, 4, 300);
	assert_int_equal(b.ncname, 1);
	assert_string_equal(b.cname[0], "edge.example.com");
	assert_int_equal(a.naddr, b.naddr);
	assert_memory_equal(&a.addr[0], &b.addr[0], sizeof(a.addr[0]));

	/* the answer to an HTTPS query itself: NODATA */
	bypass_answer(&p, SL_DNS_TYPE_HTTPS);
	r = sl_dns_strip_bypass(p.b, p.n, out, sizeof(out));
	assert_true(r > 0);
	walk_uncompressed(out, (size_t)r, types, &ntypes);
	assert_int_equal(ntypes, 6);
	for (size_t i = 0; i < ntypes; i++)
		assert_false(sl_dns_is_bypass_type(types[i]));

	/* no bypass record: relay as is */
	chain_answer(&p);
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(sl_dns_strip_bypass(p.b, p.n, out, sizeof(out)), 0);
	assert_int_equal(out[0], 0xaa);
}

static void test_strip_truncation(void **state)
{
	uint8_t out[4096];
	struct pb p;
	int r;

	(void)state;
	/* too big for the client: header and question with TC */
	bypass_answer(&p, SL_DNS_TYPE_A);
	r = sl_dns_strip_bypass(p.b, p.n, out, 100);
	assert_int_equal(r, 12 + 17 + 4);
	assert_int_equal(get16(out), 0x4242);
	assert_int_equal(get16(out + 2), 0x8180 | 0x0200);
	assert_int_equal(get16(out + 4), 1);
	assert_int_equal(get16(out + 6) | get16(out + 8) | get16(out + 10), 0);
	assert_memory_equal(out + 12, p.b + 12, 17 + 4);
	assert_int_equal(sl_dns_strip_bypass(p.b, p.n, out, 20), -ENOSPC);

	/* a truncated upstream answer is never relayed with its records */
	chain_answer(&p);
	p.b[2] |= 0x02;
	r = sl_dns_strip_bypass(p.b, p.n, out, sizeof(out));
	assert_int_equal(r, 12 + 17 + 4);
	assert_int_equal(get16(out + 6), 0);

	/* an SOA with one byte more than its names and 20 bytes (its RDATA is rewritten) */
	pb_hdr(&p, 1, 0x8180, 1, 1, 1, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "", 12, 60, 1, 2, 3, 4);
	{
		size_t at = pb_rr(&p, "", 12, SL_DNS_TYPE_HTTPS, 60);

		pb_u16(&p, 1);
		pb_u8(&p, 0);
		pb_rr_end(&p, at);
	}
	assert_true(sl_dns_strip_bypass(p.b, p.n, out, sizeof(out)) > 0);
	pb_set16(&p, 8, 2);
	{
		size_t at = pb_rr(&p, "", 14, SL_DNS_TYPE_SOA, 60);

		pb_name(&p, "ns", 14);
		pb_name(&p, "", 14);
		for (int i = 0; i < 21; i++)
			pb_u8(&p, 0);
		pb_rr_end(&p, at);
	}
	assert_int_equal(sl_dns_strip_bypass(p.b, p.n, out, sizeof(out)), -EINVAL);

	/* malformed */
	bypass_answer(&p, SL_DNS_TYPE_A);
	p.b[p.n++] = 0;
	assert_int_equal(sl_dns_strip_bypass(p.b, p.n, out, sizeof(out)), -EINVAL);
	assert_int_equal(sl_dns_strip_bypass(query_a, sizeof(query_a), out, sizeof(out)), -EINVAL);
	for (size_t n = 0; n + 1 < p.n; n++) {
		uint8_t *buf = dup_exact(p.b, n);

		assert_int_equal(sl_dns_strip_bypass(buf, n, out, sizeof(out)), -EINVAL);
		free(buf);
	}
}

/* Drops 5.6.7.8 and 2001:db8::1. */
static int drop_some(uint8_t family, const uint8_t *addr, void *arg)
{
	static const uint8_t v4[4] = { 5, 6, 7, 8 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };

	(*(int *)arg)++;
	return family == AF_INET ? !memcmp(addr, v4, 4) : !memcmp(addr, v6, 16);
}

static void test_rewrite_drops_addresses_and_caps_ttls(void **state)
{
	struct sl_dns_answer a;
	uint8_t out[4096];
	struct pb p;
	int n, calls = 0;

	(void)state;
	chain_answer(&p);
	/* Nothing to drop, every TTL under the cap: relay as is. */
	assert_int_equal(sl_dns_rewrite(p.b, p.n, out, sizeof(out), NULL, NULL, 600), 0);

	n = sl_dns_rewrite(p.b, p.n, out, sizeof(out), drop_some, &calls, 100);
	assert_true(n > 0);
	assert_true(calls >= 5); /* every A/AAAA record was offered */
	assert_int_equal(get16(out + 6), 6); /* 8 answers, 2 dropped */
	assert_int_equal(get16(out + 10), 1);
	assert_int_equal(sl_dns_parse_answer(out, n, "www.example.com", &a), 0);
	assert_int_equal(a.ncname, 3);
	assert_int_equal(a.naddr, 1);
	assert_v4(&a.addr[0], 1, 2, 3, 4, 30);
	/* The CNAMEs' 600, 120 and 500 are now at most 100. */
	assert_int_equal(a.min_ttl_s, 30);
	assert_int_equal(sl_dns_rewrite(out, n, p.b, sizeof(p.b), NULL, NULL, 100), 0);

	/* A TTL with the top bit set is 0 (RFC 2181 §8) for the client too, not the cap: the
	 * kernel rule it got lives as long as a TTL of 0 (found by tests/fuzz/fuzz_dns_answer). */
	pb_hdr(&p, 1, 0x8180, 1, 1, 0, 0);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "", 12, 0x80000000u, 192, 0, 2, 1);
	n = sl_dns_rewrite(p.b, p.n, out, sizeof(out), NULL, NULL, 300);
	assert_true(n > 0);
	assert_int_equal(sl_dns_parse_answer(out, n, "a.example", &a), 0);
	assert_v4(&a.addr[0], 192, 0, 2, 1, 0);
	assert_int_equal(out[n - 10] | out[n - 9] | out[n - 8] | out[n - 7], 0);
}

/* A cached answer served again: every TTL less its age, never below 0, OPT's flags kept. */
static void test_age(void **state)
{
	struct sl_dns_answer a;
	struct pb p;
	size_t at;

	(void)state;
	pb_hdr(&p, 1, 0x8180, 1, 2, 0, 1);
	pb_name(&p, "a.example", 0);
	pb_u32(&p, 0x00010001);
	pb_a(&p, "", 12, 300, 192, 0, 2, 1);
	pb_a(&p, "", 12, 20, 192, 0, 2, 2);
	pb_u8(&p, 0); /* OPT: owner root, DO set in its TTL field */
	pb_u16(&p, SL_DNS_TYPE_OPT);
	pb_u16(&p, 1232);
	pb_u32(&p, 0x00008000);
	pb_u16(&p, 0);
	at = p.n;
	assert_int_equal(sl_dns_age(p.b, p.n, 30), 0);
	assert_int_equal(sl_dns_parse_answer(p.b, p.n, "a.example", &a), 0);
	assert_int_equal(a.naddr, 2);
	assert_v4(&a.addr[0], 192, 0, 2, 1, 270);
	assert_v4(&a.addr[1], 192, 0, 2, 2, 0);
	assert_int_equal(get16(p.b + at - 4), 0x8000); /* OPT's flags, not a TTL */
	assert_int_equal(sl_dns_age(p.b, p.n, 0), 0);
	assert_v4(&a.addr[0], 192, 0, 2, 1, 270);
	/* malformed: a record past the end */
	assert_int_equal(sl_dns_age(p.b, p.n - 1, 1), -EINVAL);
	assert_int_equal(sl_dns_age(p.b, 5, 1), -EINVAL);
}

static void test_name_match(void **state)
{
	static const struct {
		const char *pattern;
		int wildcard;
		const char *name;
		int match;
	} cases[] = {
		{ "allowed.com", 0, "allowed.com", 1 },
		{ "allowed.com", 0, "allowed.com.", 1 },
		{ "allowed.com", 0, "ALLOWED.Com", 1 },
		{ "allowed.com", 0, "allowed.com.evil", 0 },
		{ "allowed.com", 0, "evilallowed.com", 0 },
		{ "allowed.com", 0, "a.allowed.com", 0 },
		{ "allowed.com", 0, "allowed.co", 0 },
		{ "allowed.com", 0, "allowed.com..", 0 },
		{ "allowed.com", 0, "", 0 },
		{ "allowed.com", 0, ".", 0 },
		{ "allowed.com", 0, ".allowed.com", 0 },
		{ "allowed.com", 1, "a.allowed.com", 1 },
		{ "allowed.com", 1, "x.y.allowed.com", 1 },
		{ "allowed.com", 1, "A.Allowed.COM.", 1 },
		{ "allowed.com", 1, "allowed.com", 0 },
		{ "allowed.com", 1, "allowed.com.", 0 },
		{ "allowed.com", 1, "xallowed.com", 0 },
		{ "allowed.com", 1, ".allowed.com", 0 },
		{ "allowed.com", 1, "a..allowed.com", 0 },
		{ "allowed.com", 1, "a.allowed.com.evil", 0 },
		{ "allowed.com", 1, "a.allowed.comx", 0 },
		{ "allowed.com", 1, "com", 0 },
		{ "Allowed.COM", 1, "a.allowed.com", 1 },
		{ "com", 1, "allowed.com", 1 },
		{ "localhost", 0, "localhost", 1 },
		{ "localhost", 0, "localhost.localdomain", 0 },
		{ "", 0, "", 0 },
		{ "", 1, "a", 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = sl_dns_name_match(cases[i].pattern, cases[i].wildcard, cases[i].name);

		if (got != cases[i].match)
			fail_msg("%s%s vs %s: %d", cases[i].wildcard ? "*." : "", cases[i].pattern,
				 cases[i].name, got);
	}
}

/* xorshift64*: the same mutations on every run */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return (uint32_t)((rnd_state * 0x2545f4914f6cdd1dull) >> 32);
}

static size_t mutate(uint8_t *b, size_t n, size_t cap)
{
	int k = 1 + rnd() % 4;

	for (int i = 0; i < k && n; i++) {
		size_t at = rnd() % n;

		switch (rnd() % 7) {
		case 0:
			b[at] = (uint8_t)rnd();
			break;
		case 1:
			b[at] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 2: /* a compression pointer somewhere */
			if (at + 1 < n) {
				b[at] = 0xc0 | (rnd() % 2 ? 0 : rnd() % 0x40);
				b[at + 1] = (uint8_t)rnd();
			}
			break;
		case 3: /* counts */
			b[4 + rnd() % 8] = (uint8_t)(rnd() % 4);
			break;
		case 4:
			n = at;
			break;
		case 5: /* a small label length */
			b[at] = (uint8_t)(rnd() % 70);
			break;
		case 6: /* a byte inserted */
			if (n < cap) {
				memmove(b + at + 1, b + at, n - at);
				b[at] = (uint8_t)rnd();
				n++;
			}
			break;
		}
	}
	return n;
}

static void fuzz_one(const uint8_t *b, size_t n, const char *qname)
{
	static uint8_t out[4096], out2[4096];
	static struct sl_dns_answer a, a2;
	struct sl_dns_query q;
	size_t cap;
	int r, r2;

	r = sl_dns_parse_query(b, n, &q);
	assert_true(r == 0 || r == -EINVAL || r == -EOPNOTSUPP);
	r2 = sl_dns_build_error(r ? NULL : &q, b, n, SL_DNS_RCODE_REFUSED, out, sizeof(out));
	assert_true(r2 == -EINVAL || (r2 >= 12 && r2 <= (int)sizeof(out)));
	if (!r) {
		assert_true(strlen(q.qname) <= 253);
		assert_true(q.question_len >= 5 && q.question_len <= n - 12);
		/* the local answer reads back as the answer to that question */
		assert_true(r2 > 12);
		assert_int_equal(sl_dns_parse_answer(out, (size_t)r2, q.qname, &a), 0);
		assert_int_equal(a.id, q.id);
		assert_int_equal(a.rcode, SL_DNS_RCODE_REFUSED);
	}

	r = sl_dns_parse_answer(b, n, qname, &a);
	assert_true(r == 0 || r == -EINVAL || r == -ELOOP);
	if (!r) {
		assert_true(a.naddr <= SL_DNS_MAX_ADDRS && a.ncname <= SL_DNS_MAX_CNAMES);
		for (size_t i = 0; i < a.ncname; i++)
			assert_true(strlen(a.cname[i]) <= 253);
	}

	cap = rnd() % 4 ? sizeof(out) : rnd() % 200;
	r2 = sl_dns_strip_bypass(b, n, out, cap);
	assert_true(r2 >= 0 || r2 == -EINVAL || r2 == -ENOSPC);
	assert_true(r2 <= (int)cap);
	if (r2 > 0 && !(out[2] & 0x02)) {
		/* stripped for good, and the addresses are the same */
		assert_int_equal(sl_dns_strip_bypass(out, (size_t)r2, out2, sizeof(out2)), 0);
		if (!r) {
			assert_int_equal(sl_dns_parse_answer(out, (size_t)r2, qname, &a2), 0);
			assert_int_equal(a2.naddr, a.naddr);
			assert_int_equal(a2.ncname, a.ncname);
			assert_memory_equal(a2.addr, a.addr, a.naddr * sizeof(a.addr[0]));
		}
	}
}

static void test_fuzz(void **state)
{
	struct pb chain, bypass;
	struct {
		const uint8_t *b;
		size_t n;
		const char *qname;
	} seeds[4];
	uint8_t buf[sizeof(chain.b) + 64];

	(void)state;
	chain_answer(&chain);
	bypass_answer(&bypass, SL_DNS_TYPE_A);
	seeds[0].b = query_a, seeds[0].n = sizeof(query_a), seeds[0].qname = "www.example.com";
	seeds[1].b = query_edns, seeds[1].n = sizeof(query_edns), seeds[1].qname = seeds[0].qname;
	seeds[2].b = chain.b, seeds[2].n = chain.n, seeds[2].qname = "www.example.com";
	seeds[3].b = bypass.b, seeds[3].n = bypass.n, seeds[3].qname = "www.example.com";

	for (int i = 0; i < 200000; i++) {
		int s = rnd() % 4;
		size_t n;

		uint8_t *exact;

		memcpy(buf, seeds[s].b, seeds[s].n);
		n = mutate(buf, seeds[s].n, sizeof(buf));
		exact = dup_exact(buf, n);
		fuzz_one(exact, n, seeds[s].qname);
		free(exact);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_a_query),
		cmocka_unit_test(test_parse_edns),
		cmocka_unit_test(test_parse_edns_malformed),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_parse_trailing),
		cmocka_unit_test(test_parse_header_rules),
		cmocka_unit_test(test_parse_compression),
		cmocka_unit_test(test_parse_labels),
		cmocka_unit_test(test_parse_ambiguous_names),
		cmocka_unit_test(test_build_query),
		cmocka_unit_test(test_build_error_echo),
		cmocka_unit_test(test_build_error_edns),
		cmocka_unit_test(test_build_error_unparsed),
		cmocka_unit_test(test_build_forward),
		cmocka_unit_test(test_build_error_ede),
		cmocka_unit_test(test_answer_chain),
		cmocka_unit_test(test_answer_chain_reversed),
		cmocka_unit_test(test_answer_out_of_chain),
		cmocka_unit_test(test_answer_limits),
		cmocka_unit_test(test_answer_rejects),
		cmocka_unit_test(test_strip_bypass),
		cmocka_unit_test(test_strip_truncation),
		cmocka_unit_test(test_rewrite_drops_addresses_and_caps_ttls),
		cmocka_unit_test(test_age),
		cmocka_unit_test(test_name_match),
		cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
