/* SPDX-License-Identifier: MIT */
/*
 * DNS messages (RFC 1035) as the DNS proxy needs them: parse a client's query, build the
 * responses the proxy gives locally, read the addresses out of an upstream answer and remove
 * the records that would let a client bypass the name policy. Pure functions over byte
 * buffers, no allocation: every input is assumed hostile (see dns_msg.c).
 *
 * Threading: any thread, no state; nothing blocks.
 *
 * HTTPS (65) and SVCB (64): a query of one of those types is answered NODATA locally, never
 * forwarded (sl_dns_is_bypass_type(), then sl_dns_build_error() with SL_DNS_RCODE_NOERROR).
 * The whole content of such an answer is the bypass: ECH keys that hide the real server name
 * from the proxy, alternative endpoints and address hints that were never installed in the
 * kernel. Clients fall back to A/AAAA when a name has no HTTPS record (RFC 9460 §3), which is
 * the answer they get for most names anyway. Answers to other types may still carry such
 * records (ANY, additional-section processing, RFC 9460 §4); sl_dns_strip_bypass() removes
 * them by rebuilding the message, and leaves the (common) message without any untouched.
 */
#ifndef SL_DNS_MSG_H
#define SL_DNS_MSG_H

#include <stddef.h>
#include <stdint.h>

#define SL_DNS_HDR_LEN 12
#define SL_DNS_WIRE_MAX 255 /* a name in wire form, root label included (RFC 1035 §2.3.4) */
#define SL_DNS_NAME_BUF 256 /* a name as text: at most 253 characters and the NUL */
#define SL_DNS_UDP_MIN 512 /* what a client without EDNS accepts over UDP */
#define SL_DNS_EDNS_UDP_SIZE 1232 /* what we advertise (DNS flag day 2020) */
#define SL_DNS_MAX_ADDRS 64
#define SL_DNS_MAX_CNAMES 16

#define SL_DNS_TYPE_A 1
#define SL_DNS_TYPE_NS 2
#define SL_DNS_TYPE_CNAME 5
#define SL_DNS_TYPE_SOA 6
#define SL_DNS_TYPE_PTR 12
#define SL_DNS_TYPE_MX 15
#define SL_DNS_TYPE_TXT 16
#define SL_DNS_TYPE_AAAA 28
#define SL_DNS_TYPE_SRV 33
#define SL_DNS_TYPE_OPT 41
#define SL_DNS_OPT_EDE 15 /* EDNS option: Extended DNS Error (RFC 8914) */
#define SL_DNS_EDE_BLOCKED 15 /* INFO-CODE "Blocked": the operator's policy (RFC 8914 §4.16) */
#define SL_DNS_EDE_TEXT_MAX 200
#define SL_DNS_TYPE_RRSIG 46
#define SL_DNS_TYPE_SVCB 64
#define SL_DNS_TYPE_HTTPS 65
#define SL_DNS_CLASS_IN 1

#define SL_DNS_RCODE_NOERROR 0
#define SL_DNS_RCODE_FORMERR 1
#define SL_DNS_RCODE_SERVFAIL 2
#define SL_DNS_RCODE_NXDOMAIN 3
#define SL_DNS_RCODE_NOTIMP 4
#define SL_DNS_RCODE_REFUSED 5
#define SL_DNS_RCODE_BADVERS 16 /* extended, needs an OPT record (RFC 6891 §6.1.3) */

/* A client's query, as sl_dns_parse_query() found it. */
struct sl_dns_query {
	uint16_t id;
	uint8_t opcode;
	uint8_t rd; /* recursion desired */
	char qname[SL_DNS_NAME_BUF]; /* lower case, dotted, no trailing dot; "" is the root */
	uint16_t qtype;
	uint16_t qclass;
	size_t question_len; /* bytes of the question from offset 12; 0 if it was not parsed */
	uint8_t edns; /* an OPT record is present */
	uint8_t edns_version; /* a caller answers BADVERS when it is not 0 */
	uint8_t edns_do; /* DNSSEC OK */
	uint16_t edns_udp_size; /* as advertised */
	uint16_t udp_max; /* the largest UDP response the client takes: >= 512 */
};

/* One address of an answer. */
struct sl_dns_addr {
	uint8_t family; /* AF_INET / AF_INET6 */
	uint8_t addr[16]; /* network order; AF_INET uses the first 4 bytes, the rest is zero */
	uint32_t ttl_s;
};

/* What an upstream answer says about one name, as sl_dns_parse_answer() found it. */
struct sl_dns_answer {
	uint16_t id;
	uint16_t qtype; /* of the echoed question; 0 when the answer had none */
	int rcode; /* header RCODE, 0..15 */
	int tc; /* truncated: nothing else was read, the client must retry over TCP */
	size_t naddr;
	size_t naddr_dropped; /* chain addresses beyond SL_DNS_MAX_ADDRS: not in @addr */
	struct sl_dns_addr addr[SL_DNS_MAX_ADDRS];
	size_t ncname;
	char cname[SL_DNS_MAX_CNAMES][SL_DNS_NAME_BUF]; /* the chain after qname, in order */
	uint32_t min_ttl_s; /* over the chain's CNAME and address records; 0 if none */
};

/*
 * Parses the query @pkt (@len bytes) of a client into @q. The message must be a QUERY with
 * QR clear, exactly one question, no answer or authority records, at most one OPT record
 * (owner: the root) among its additional records, and nothing after them. The question name
 * must be uncompressed, its labels 1..63 bytes of printable ASCII other than '.', 255 bytes
 * at most in wire form, so that its text form names exactly one wire name.
 * Returns 0; -EOPNOTSUPP for an opcode other than QUERY (answer NOTIMP; @q then holds id,
 * opcode and rd only); -EINVAL for anything else malformed (answer FORMERR). On error @q
 * holds whatever was read before the fault, and @q->question_len is 0. Never reads outside
 * @pkt[0..@len).
 */
int sl_dns_parse_query(const uint8_t *pkt, size_t len, struct sl_dns_query *q);

/*
 * Builds in @out (@outcap bytes) the response to the query @pkt/@len with RCODE @rcode and
 * no answers (NOERROR is then NODATA). When @q is the result of a successful
 * sl_dns_parse_query() on the same @pkt, the response echoes id, opcode, RD and the question
 * exactly as sent (letter case included), and carries an OPT record if the query had one.
 * Otherwise (@q NULL or @q->question_len 0, e.g. FORMERR or NOTIMP) it is a 12-byte header
 * echoing the id and, when present, opcode and RD. QR and RA are set, AA, TC, AD, CD clear.
 * @rcode is 0..15, or up to 4095 when an OPT record is sent (BADVERS).
 * Returns the response's length; -EINVAL when there is nothing to answer to (fewer than 2
 * bytes, or @pkt is itself a response: answering it could start a loop) or @rcode is out of
 * range; -ENOSPC when @outcap is too small.
 */
int sl_dns_build_error(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
		       uint8_t *out, size_t outcap);

/*
 * sl_dns_build_error() with an Extended DNS Error (RFC 8914, EDNS option 15) carrying
 * @info_code and @text (UTF-8, at most SL_DNS_EDE_TEXT_MAX bytes are sent, no NUL) in its OPT
 * record. The option goes only where an OPT record does: when the query had one (RFC 6891
 * section 7: no OPT in the answer to a query without). Same returns as sl_dns_build_error().
 */
int sl_dns_build_error_ede(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
			   uint16_t info_code, const char *text, uint8_t *out, size_t outcap);

/*
 * Builds in @out (@outcap bytes) the query that goes upstream for the client's query @pkt
 * (@len bytes) that sl_dns_parse_query() read into @q: id @id, the header's RD and CD as the
 * client set them and no other flag, the one question exactly as sent, and, when the client
 * used EDNS, an OPT record of sluice's own (version 0, the DO bit as asked, a UDP size of
 * at most SL_DNS_EDNS_UDP_SIZE and what the client takes, no options). Nothing else the
 * client sent goes upstream: no additional records, no EDNS options (client subnet,
 * cookies, padding, ...), no other header bits. Returns the length, -EINVAL when @q has no
 * question, -ENOSPC when @outcap is too small (SL_DNS_HDR_LEN + question + 11 always fits).
 */
int sl_dns_build_forward(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, uint16_t id,
			 uint8_t *out, size_t outcap);

/*
 * Builds in @out (@outcap bytes) a query for @name (dotted text, trailing dot optional, case
 * kept) of type @qtype, class IN, with RD if @rd, and an OPT record advertising
 * @edns_udp_size if it is not 0. Returns the query's length, -EINVAL for a name that
 * sl_dns_parse_query() would refuse, or -ENOSPC.
 */
int sl_dns_build_query(uint16_t id, const char *name, uint16_t qtype, int rd,
		       uint16_t edns_udp_size, uint8_t *out, size_t outcap);

/*
 * Reads the upstream response @pkt (@len bytes) to a query for @qname (text, any case,
 * trailing dot optional) into @a. Checks QR, opcode QUERY and that the question, when there
 * is one, is @qname (it may be absent only with an RCODE other than NOERROR); matching the id
 * against the query's is the caller's job. Follows the CNAME chain of the answer section from
 * @qname (names compared case-insensitively, records in any order, loops harmless) and
 * collects the IN A and AAAA records whose owner is on that chain, deduplicated, with their
 * TTLs (RFC 2181 §8: a TTL with the top bit set counts as 0). Records of other owners, and
 * anything in the authority and additional sections, are ignored: an upstream does not get
 * to install addresses for names the client did not ask about. A truncated response (TC) is
 * read up to its question only (RFC 2181 §9).
 * Returns 0; -ELOOP when the chain has more than SL_DNS_MAX_CNAMES names; -EINVAL for a
 * malformed message (framing, compression, an A/AAAA of the wrong size, a name on the chain
 * with two different CNAMEs (RFC 2181 §10.1) or one that has no unambiguous text form,
 * trailing bytes). On error, @a holds id, rcode and tc at most and must not be used for rules.
 * Never reads outside @pkt[0..@len).
 */
int sl_dns_parse_answer(const uint8_t *pkt, size_t len, const char *qname, struct sl_dns_answer *a);

/* Whether a record or query type carries endpoints that bypass the name policy (SVCB, HTTPS). */
int sl_dns_is_bypass_type(uint16_t type);

/*
 * Removes from the upstream response @pkt (@len bytes) every SVCB and HTTPS record, and the
 * RRSIGs covering them, in all three sections, and writes a TTL with the top bit set as 0
 * (RFC 2181 §8). Returns 0 when there is nothing to change and @pkt is not truncated: @pkt
 * can then be relayed as is (@out untouched). Otherwise writes in @out
 * (@outcap bytes: pass what the client accepts) the same message without them and returns
 * its length: same header with fixed counts, question and other records in order, every
 * name written out uncompressed (moving records breaks the offsets that compression pointers
 * hold; the names inside the RDATA of the types that may be compressed, RFC 3597 §4, are
 * rewritten too). When that does not fit, or when @pkt is truncated (TC: its records must not
 * be used, RFC 2181 §9), the result is the header and question only with TC set, so that the
 * client retries over TCP. Returns -EINVAL for a malformed message (same rules as
 * sl_dns_parse_answer()), and -ENOSPC when not even header and question fit.
 */
int sl_dns_strip_bypass(const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap);

/* Whether to drop the address record @addr (network order, 4 or 16 bytes by @family). */
typedef int sl_dns_addr_filter(uint8_t family, const uint8_t *addr, void *arg);

/*
 * sl_dns_strip_bypass(), and also: drops the IN A/AAAA records for which @drop_addr (may be
 * NULL) returns 1, and caps every TTL (OPT's excepted) at @max_ttl_s, a TTL with the top bit
 * set counting as 0 (RFC 2181 §8, as sl_dns_parse_answer() reads it). Returns 0 when nothing
 * needs changing (@pkt can be relayed as is), else the rewritten length in @out, with the
 * same errors and truncation rules as sl_dns_strip_bypass().
 */
int sl_dns_rewrite(const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
		   sl_dns_addr_filter *drop_addr, void *arg, uint32_t max_ttl_s);

/*
 * Ages the answer @msg (@len bytes, in place) by @age_s seconds: every record's TTL (OPT's
 * excepted) less @age_s, never below 0, as a cache serving it again must (RFC 1035 §7.4).
 * Returns 0, or -EINVAL for a malformed message (which it then leaves partly aged).
 */
int sl_dns_age(uint8_t *msg, size_t len, uint32_t age_s);

/*
 * Whether @name (text, any case, one trailing dot ignored) matches a policy host: equal to
 * @pattern_host when @wildcard is 0, strictly below it when @wildcard is 1 (the policy entry
 * "*.example.com" passes "example.com" and 1: "a.example.com" and "x.y.example.com" match,
 * "example.com" and "xexample.com" do not). Only whole labels match, case-insensitively. A
 * name with an empty label never matches. Returns 1 or 0.
 */
int sl_dns_name_match(const char *pattern_host, int wildcard, const char *name);

#endif
