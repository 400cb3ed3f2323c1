// SPDX-License-Identifier: MIT
/*
 * A sandbox's DNS query, as the DNS proxy reads it: sl_dns_parse_query() on any bytes, then
 * what the proxy does with the result. Invariants: an accepted query's name rebuilt with
 * sl_dns_build_query() parses back to the same name and type; the locally built responses
 * (NODATA, REFUSED, NXDOMAIN, FORMERR, BADVERS) fit the buffer they were given, and an
 * answer to an accepted query is one sl_dns_parse_answer() and sl_dns_rewrite() accept for
 * that name; the policy's name matching agrees with itself on the name.
 */
#include <errno.h>
#include <string.h>

#include "dns/dns_msg.h"
#include "fuzz.h"

static void check_matching(const char *name)
{
	const char *dot;

	/* a parsed name has no empty label: it matches itself, and is below each suffix */
	FUZZ_CHECK(sl_dns_name_match(name, 0, name) == 1);
	FUZZ_CHECK(sl_dns_name_match(name, 1, name) == 0);
	for (dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
		FUZZ_CHECK(sl_dns_name_match(dot + 1, 1, name) == 1);
		FUZZ_CHECK(sl_dns_name_match(dot + 1, 0, name) == 0);
	}
}

static void check_response(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
			   size_t cap)
{
	uint8_t out[1024];
	struct sl_dns_answer a;
	int n;

	n = sl_dns_build_error(q, pkt, len, rcode, out, cap);
	if (n == -ENOSPC || n == -EINVAL)
		return;
	FUZZ_CHECK(n >= SL_DNS_HDR_LEN && (size_t)n <= cap);
	FUZZ_CHECK(out[0] == pkt[0] && out[1] == pkt[1] && (out[2] & 0x80));
	if (!q || !q->question_len)
		return;
	/* the proxy's own answer must pass its own upstream checks */
	FUZZ_CHECK(sl_dns_parse_answer(out, n, q->qname, &a) == 0);
	FUZZ_CHECK(a.naddr == 0 && a.ncname == 0 && a.rcode == (rcode & 0xf));
	FUZZ_CHECK(sl_dns_rewrite(out, n, out + 512, 512, NULL, NULL, 0) >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_dns_query q, q2;
	uint8_t rebuilt[600];
	int err, n;
	size_t cap = size ? 12 + data[size - 1] % 64 : 0;

	err = sl_dns_parse_query(data, size, &q);
	FUZZ_CHECK(err == 0 || err == -EINVAL || err == -EOPNOTSUPP);
	/* what the proxy answers to a refused query: FORMERR or NOTIMP, header only */
	if (err) {
		FUZZ_CHECK(q.question_len == 0);
		check_response(&q, data, size,
			       err == -EOPNOTSUPP ? SL_DNS_RCODE_NOTIMP : SL_DNS_RCODE_FORMERR,
			       512);
		check_response(NULL, data, size, SL_DNS_RCODE_FORMERR, cap);
		return 0;
	}

	FUZZ_CHECK(q.question_len >= 5 && q.question_len <= size - SL_DNS_HDR_LEN);
	FUZZ_CHECK(strlen(q.qname) < SL_DNS_NAME_BUF);
	FUZZ_CHECK(q.udp_max >= SL_DNS_UDP_MIN);
	for (const char *c = q.qname; *c; c++)
		FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'));

	check_response(&q, data, size, SL_DNS_RCODE_NOERROR, 1024);
	check_response(&q, data, size, SL_DNS_RCODE_NXDOMAIN, 1024);
	check_response(&q, data, size, SL_DNS_RCODE_REFUSED, cap);
	check_response(&q, data, size, SL_DNS_RCODE_BADVERS, 1024);
	if (q.qname[0])
		check_matching(q.qname);

	/* the name's text form stands for exactly one wire name: the rebuilt query is the same */
	n = sl_dns_build_query(q.id, q.qname, q.qtype, q.rd, q.edns ? SL_DNS_EDNS_UDP_SIZE : 0,
			       rebuilt, sizeof(rebuilt));
	FUZZ_CHECK(n > 0);
	FUZZ_CHECK(sl_dns_parse_query(rebuilt, n, &q2) == 0);
	FUZZ_CHECK(!strcmp(q.qname, q2.qname) && q.qtype == q2.qtype && q.id == q2.id &&
		   q.rd == q2.rd && q.edns == q2.edns && q.question_len == q2.question_len);

	/* what goes upstream: the same question, nothing of the rest, within what we allot */
	n = sl_dns_build_forward(&q, data, size, 0x5a5a, rebuilt,
				 SL_DNS_HDR_LEN + q.question_len + 11);
	FUZZ_CHECK(n == (int)(SL_DNS_HDR_LEN + q.question_len + (q.edns ? 11 : 0)));
	FUZZ_CHECK(sl_dns_parse_query(rebuilt, n, &q2) == 0);
	FUZZ_CHECK(!strcmp(q.qname, q2.qname) && q.qtype == q2.qtype && q2.id == 0x5a5a &&
		   q.rd == q2.rd && q.edns == q2.edns && q.edns_do == q2.edns_do &&
		   q2.udp_max <= SL_DNS_EDNS_UDP_SIZE && q2.udp_max <= q.udp_max);
	FUZZ_CHECK(!memcmp(rebuilt + SL_DNS_HDR_LEN, data + SL_DNS_HDR_LEN, q.question_len));
	return 0;
}
