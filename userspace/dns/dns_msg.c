// SPDX-License-Identifier: MIT
/*
 * DNS wire format (RFC 1035) for the DNS proxy. The proxy is where a sandbox's name lookups
 * become kernel rules, so what this module reads decides what a sandbox may reach: a query is
 * held to the one shape stub resolvers send, a name's text form must stand for exactly one
 * wire name (no dots or NULs inside labels) so that the policy and the upstream see the same
 * name, and only addresses reached from the asked name through the answer's CNAME chain come
 * out of a response. Every packet is hostile: all reads are bounds-checked against the
 * message, a compression pointer may only point back to where earlier names started (no
 * loops, no forward or out-of-message references), and a malformed message costs one
 * FORMERR or SERVFAIL, nothing else. No allocation, no state: the proxy's sockets and event
 * loop live elsewhere.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/dns_msg.h"

#define MSG_MAX 65535 /* the TCP length prefix is 16 bits (RFC 1035 §4.2.2) */

#define F_QR 0x8000
#define F_TC 0x0200
#define F_RD 0x0100
#define F_RA 0x0080
#define F_CD 0x0010
#define OPCODE(flags) (((flags) >> 11) & 0xf)

struct hdr {
	uint16_t id, flags, qd, an, ns, ar;
};

/* One resource record's fixed fields; names stay in the message. */
struct rr {
	uint16_t type, class;
	uint32_t ttl;
	size_t rdata; /* offset of RDATA */
	uint16_t rdlen;
	size_t end; /* offset after the record */
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static void read_hdr(const uint8_t *pkt, struct hdr *h)
{
	h->id = get16(pkt);
	h->flags = get16(pkt + 2);
	h->qd = get16(pkt + 4);
	h->an = get16(pkt + 6);
	h->ns = get16(pkt + 8);
	h->ar = get16(pkt + 10);
}

/*
 * Decodes the name at @off of @pkt (@len bytes) into @wire, uncompressed, lower-cased if
 * @lower_case, and sets *@wlen to its length and *@next to the offset after the name's bytes
 * at @off, which must all lie before @end. A compression pointer (RFC 1035 §4.1.4) must point
 * past the header and strictly before the start of the labels holding it: every jump goes
 * back, so that decoding ends, and names are made only of what came before them, the way any
 * compressor writes them.
 */
static int read_name(const uint8_t *pkt, size_t len, size_t off, size_t end, int lower_case,
		     uint8_t wire[SL_DNS_WIRE_MAX], size_t *wlen, size_t *next)
{
	size_t pos = off, start = off, bound = end, n = 0;
	int jumped = 0;

	for (;;) {
		uint8_t c;

		if (pos >= bound)
			return -EINVAL;
		c = pkt[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (pos + 1 >= bound)
				return -EINVAL;
			target = (size_t)(c & 0x3f) << 8 | pkt[pos + 1];
			if (target < SL_DNS_HDR_LEN || target >= start)
				return -EINVAL;
			if (!jumped)
				*next = pos + 2;
			jumped = 1;
			pos = start = target;
			bound = len;
			continue;
		}
		/* 0x40 and 0x80 prefixes: extended and reserved label types (RFC 6891 §5) */
		if (c > 63)
			return -EINVAL;
		if (!c)
			break;
		if (n + 1 + c + 1 > SL_DNS_WIRE_MAX || bound - pos - 1 < c)
			return -EINVAL;
		wire[n++] = c;
		for (size_t i = 1; i <= c; i++)
			wire[n++] = lower_case ? lower(pkt[pos + i]) : pkt[pos + i];
		pos += 1 + (size_t)c;
	}
	wire[n++] = 0;
	if (!jumped)
		*next = pos + 1;
	*wlen = n;
	return 0;
}

/* A label byte that keeps a name's text form unambiguous: printable ASCII other than '.'. */
static int text_byte(uint8_t c)
{
	return c > 0x20 && c < 0x7f && c != '.';
}

/*
 * The text form of the wire name @wire: labels joined by '.', no trailing dot, "" for the
 * root. A label holding '.' ("a.b" as one label) or a byte outside printable ASCII (a NUL
 * would cut the text short) is refused: its text would name another name in the policy and
 * the logs than the one the upstream resolves.
 */
static int wire_to_text(const uint8_t *wire, char text[SL_DNS_NAME_BUF])
{
	size_t i = 0, t = 0;

	while (wire[i]) {
		uint8_t c = wire[i++];

		if (t)
			text[t++] = '.';
		for (; c; c--, i++) {
			if (!text_byte(wire[i]))
				return -EINVAL;
			text[t++] = (char)wire[i];
		}
	}
	text[t] = 0;
	return 0;
}

/* The wire form of the text name @text (one trailing dot ignored), under the same rules. */
static int text_to_wire(const char *text, int lower_case, uint8_t wire[SL_DNS_WIRE_MAX],
			size_t *wlen)
{
	size_t tlen = strnlen(text, SL_DNS_NAME_BUF), n = 0;

	if (tlen == SL_DNS_NAME_BUF)
		return -EINVAL;
	if (tlen && text[tlen - 1] == '.')
		tlen--;
	for (size_t i = 0; tlen && i <= tlen;) {
		size_t j = i;

		while (j < tlen && text[j] != '.')
			j++;
		if (j == i || j - i > 63 || n + 1 + (j - i) + 1 > SL_DNS_WIRE_MAX)
			return -EINVAL;
		wire[n++] = (uint8_t)(j - i);
		for (; i < j; i++) {
			uint8_t c = (uint8_t)text[i];

			if (!text_byte(c))
				return -EINVAL;
			wire[n++] = lower_case ? lower(c) : c;
		}
		i = j + 1;
	}
	wire[n++] = 0;
	*wlen = n;
	return 0;
}

/*
 * Reads the record at @off: its owner name into @owner/@olen (lower-cased if @lower_case)
 * and its fixed fields into @rr, checking that its RDATA lies inside the message.
 */
static int read_rr(const uint8_t *pkt, size_t len, size_t off, int lower_case,
		   uint8_t owner[SL_DNS_WIRE_MAX], size_t *olen, struct rr *rr)
{
	size_t p;
	int err;

	err = read_name(pkt, len, off, len, lower_case, owner, olen, &p);
	if (err)
		return err;
	if (len - p < 10)
		return -EINVAL;
	rr->type = get16(pkt + p);
	rr->class = get16(pkt + p + 2);
	rr->ttl = get32(pkt + p + 4);
	rr->rdlen = get16(pkt + p + 8);
	rr->rdata = p + 10;
	if (len - rr->rdata < rr->rdlen)
		return -EINVAL;
	rr->end = rr->rdata + rr->rdlen;
	return 0;
}

/* EDNS options (RFC 6891 §6.1.2): {code, length, data} filling the RDATA exactly. */
static int opt_rdata_valid(const uint8_t *p, size_t n)
{
	while (n) {
		size_t l;

		if (n < 4)
			return 0;
		l = get16(p + 2);
		if (n - 4 < l)
			return 0;
		p += 4 + l;
		n -= 4 + l;
	}
	return 1;
}

int sl_dns_parse_query(const uint8_t *pkt, size_t len, struct sl_dns_query *q)
{
	uint8_t qname[SL_DNS_WIRE_MAX], owner[SL_DNS_WIRE_MAX];
	size_t off, qend, wlen, olen;
	struct hdr h;
	int err;

	memset(q, 0, sizeof(*q));
	if (len >= 2)
		q->id = get16(pkt);
	if (len < SL_DNS_HDR_LEN || len > MSG_MAX)
		return -EINVAL;
	read_hdr(pkt, &h);
	q->opcode = OPCODE(h.flags);
	q->rd = !!(h.flags & F_RD);
	if (h.flags & F_QR)
		return -EINVAL;
	if (q->opcode != 0)
		return -EOPNOTSUPP;
	if (h.qd != 1 || h.an || h.ns)
		return -EINVAL;
	/* The question comes first: any pointer in it would point into the header. */
	err = read_name(pkt, len, SL_DNS_HDR_LEN, len, 1, qname, &wlen, &off);
	if (err)
		return err;
	if (len - off < 4)
		return -EINVAL;
	q->qtype = get16(pkt + off);
	q->qclass = get16(pkt + off + 2);
	qend = off + 4;

	off = qend;
	for (unsigned i = 0; i < h.ar; i++) {
		struct rr rr;

		err = read_rr(pkt, len, off, 1, owner, &olen, &rr);
		if (err)
			return err;
		off = rr.end;
		if (rr.type != SL_DNS_TYPE_OPT)
			continue;
		/* one OPT, owned by the root (RFC 6891 §6.1.1) */
		if (q->edns || olen != 1 || !opt_rdata_valid(pkt + rr.rdata, rr.rdlen))
			return -EINVAL;
		q->edns = 1;
		q->edns_udp_size = rr.class;
		q->edns_version = (rr.ttl >> 16) & 0xff;
		q->edns_do = !!(rr.ttl & 0x8000);
	}
	if (off != len)
		return -EINVAL;
	err = wire_to_text(qname, q->qname);
	if (err) {
		q->qname[0] = 0;
		return err;
	}
	/* RFC 6891 §6.2.5: a size below 512 is treated as 512 */
	q->udp_max = SL_DNS_UDP_MIN;
	if (q->edns && q->edns_udp_size > SL_DNS_UDP_MIN)
		q->udp_max = q->edns_udp_size;
	q->question_len = qend - SL_DNS_HDR_LEN;
	return 0;
}

/* sl_dns_build_error(), and an EDE option (RFC 8914) when @ede_text is not NULL. */
static int build_error(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
		       uint16_t ede_code, const char *ede_text, uint8_t *out, size_t outcap)
{
	int full = q && q->question_len;
	int opt = full && q->edns;
	size_t ede_len = opt && ede_text ? strnlen(ede_text, SL_DNS_EDE_TEXT_MAX) : 0;
	size_t rdlen = opt && ede_text ? 4 + 2 + ede_len : 0;
	size_t need, n;
	uint16_t flags;

	if (!pkt || len < 2)
		return -EINVAL;
	if (len >= 3 && (pkt[2] & 0x80))
		return -EINVAL;
	if (rcode < 0 || rcode > (opt ? 0xfff : 0xf))
		return -EINVAL;
	if (full && (len < SL_DNS_HDR_LEN || q->question_len > len - SL_DNS_HDR_LEN))
		return -EINVAL;
	need = SL_DNS_HDR_LEN + (full ? q->question_len : 0) + (opt ? 11 + rdlen : 0);
	if (need > outcap)
		return -ENOSPC;

	/* opcode and RD from the query's third byte, when it has one */
	flags = F_QR | F_RA | (rcode & 0xf) | (len >= 3 ? (pkt[2] & 0x79) << 8 : 0);
	memset(out, 0, SL_DNS_HDR_LEN);
	out[0] = pkt[0];
	out[1] = pkt[1];
	put16(out + 2, flags);
	n = SL_DNS_HDR_LEN;
	if (full) {
		/* sl_dns_parse_query() accepts no pointer in the question: it copies as is */
		put16(out + 4, 1);
		memcpy(out + n, pkt + SL_DNS_HDR_LEN, q->question_len);
		n += q->question_len;
	}
	if (opt) {
		put16(out + 10, 1);
		out[n++] = 0;
		put16(out + n, SL_DNS_TYPE_OPT);
		put16(out + n + 2, SL_DNS_EDNS_UDP_SIZE);
		out[n + 4] = (uint8_t)(rcode >> 4); /* extended RCODE; version 0, no flags */
		memset(out + n + 5, 0, 5);
		put16(out + n + 8, (uint16_t)rdlen);
		n += 10;
		if (rdlen) {
			put16(out + n, SL_DNS_OPT_EDE);
			put16(out + n + 2, (uint16_t)(2 + ede_len));
			put16(out + n + 4, ede_code);
			memcpy(out + n + 6, ede_text, ede_len); /* no NUL (RFC 8914 section 2) */
			n += rdlen;
		}
	}
	return (int)n;
}

int sl_dns_build_error(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
		       uint8_t *out, size_t outcap)
{
	return build_error(q, pkt, len, rcode, 0, NULL, out, outcap);
}

int sl_dns_build_error_ede(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, int rcode,
			   uint16_t info_code, const char *text, uint8_t *out, size_t outcap)
{
	return build_error(q, pkt, len, rcode, info_code, text ? text : "", out, outcap);
}

int sl_dns_build_forward(const struct sl_dns_query *q, const uint8_t *pkt, size_t len, uint16_t id,
			 uint8_t *out, size_t outcap)
{
	size_t n = SL_DNS_HDR_LEN + (q ? q->question_len : 0);
	uint16_t udp;

	if (!q || !q->question_len || len < n)
		return -EINVAL;
	if (n + (q->edns ? 11 : 0) > outcap)
		return -ENOSPC;
	memset(out, 0, SL_DNS_HDR_LEN);
	put16(out, id);
	/* RD as asked (stubs ask for recursion), CD for a validating stub; nothing else */
	put16(out + 2, (q->rd ? F_RD : 0) | (get16(pkt + 2) & F_CD));
	put16(out + 4, 1);
	/* as parsed: one uncompressed question right after the header, letter case kept */
	memcpy(out + SL_DNS_HDR_LEN, pkt + SL_DNS_HDR_LEN, q->question_len);
	if (q->edns) {
		/* Never more than the client takes, so that the answer fits it as it comes. */
		udp = q->udp_max < SL_DNS_EDNS_UDP_SIZE ? q->udp_max : SL_DNS_EDNS_UDP_SIZE;
		out[11] = 1;
		out[n] = 0;
		put16(out + n + 1, SL_DNS_TYPE_OPT);
		put16(out + n + 3, udp);
		memset(out + n + 5, 0, 6);
		if (q->edns_do)
			out[n + 7] = 0x80; /* DO: the client validates DNSSEC itself */
		n += 11;
	}
	return (int)n;
}

int sl_dns_build_query(uint16_t id, const char *name, uint16_t qtype, int rd,
		       uint16_t edns_udp_size, uint8_t *out, size_t outcap)
{
	uint8_t wire[SL_DNS_WIRE_MAX];
	size_t wlen, n;

	if (text_to_wire(name, 0, wire, &wlen))
		return -EINVAL;
	n = SL_DNS_HDR_LEN + wlen + 4 + (edns_udp_size ? 11 : 0);
	if (n > outcap)
		return -ENOSPC;
	memset(out, 0, n);
	put16(out, id);
	put16(out + 2, rd ? F_RD : 0);
	put16(out + 4, 1);
	put16(out + 10, edns_udp_size ? 1 : 0);
	memcpy(out + SL_DNS_HDR_LEN, wire, wlen);
	put16(out + SL_DNS_HDR_LEN + wlen, qtype);
	put16(out + SL_DNS_HDR_LEN + wlen + 2, SL_DNS_CLASS_IN);
	if (edns_udp_size) {
		uint8_t *o = out + SL_DNS_HDR_LEN + wlen + 4;

		put16(o + 1, SL_DNS_TYPE_OPT);
		put16(o + 3, edns_udp_size);
	}
	return (int)n;
}

/* RFC 2181 §8: a TTL with the top bit set is 0. */
static uint32_t ttl_s(uint32_t ttl)
{
	return ttl & 0x80000000u ? 0 : ttl;
}

/* The names of a CNAME chain: [0] is the asked name, next[i] is the target of i's CNAME. */
struct chain {
	size_t n;
	uint8_t name[SL_DNS_MAX_CNAMES + 1][SL_DNS_WIRE_MAX];
	size_t len[SL_DNS_MAX_CNAMES + 1];
	int next[SL_DNS_MAX_CNAMES + 1]; /* -1: none seen */
};

static int chain_find(const struct chain *c, const uint8_t *wire, size_t wlen)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->len[i] == wlen && !memcmp(c->name[i], wire, wlen))
			return (int)i;
	return -1;
}

static void add_addr(struct sl_dns_answer *a, uint8_t family, const uint8_t *addr, size_t alen,
		     uint32_t ttl)
{
	struct sl_dns_addr *x;

	for (size_t i = 0; i < a->naddr; i++) {
		x = &a->addr[i];
		if (x->family == family && !memcmp(x->addr, addr, alen)) {
			if (ttl < x->ttl_s)
				x->ttl_s = ttl;
			return;
		}
	}
	if (a->naddr == SL_DNS_MAX_ADDRS) {
		a->naddr_dropped++;
		return;
	}
	x = &a->addr[a->naddr++];
	x->family = family;
	memset(x->addr, 0, sizeof(x->addr));
	memcpy(x->addr, addr, alen);
	x->ttl_s = ttl;
}

/*
 * One pass over the answer section at @ans: follows the CNAMEs whose owner is on @c. Sets
 * *@grown when a name joined the chain; the caller repeats until none does, so that records
 * may come in any order.
 */
static int chain_pass(const uint8_t *pkt, size_t len, size_t ans, unsigned an, struct chain *c,
		      uint32_t *min_ttl, int *grown)
{
	uint8_t owner[SL_DNS_WIRE_MAX], target[SL_DNS_WIRE_MAX];
	size_t off = ans, olen, tlen, p;
	int err;

	*grown = 0;
	for (unsigned i = 0; i < an; i++) {
		struct rr rr;
		int from, to;

		err = read_rr(pkt, len, off, 1, owner, &olen, &rr);
		if (err)
			return err;
		off = rr.end;
		if (rr.type != SL_DNS_TYPE_CNAME || rr.class != SL_DNS_CLASS_IN)
			continue;
		from = chain_find(c, owner, olen);
		if (from < 0)
			continue;
		err = read_name(pkt, len, rr.rdata, rr.end, 1, target, &tlen, &p);
		if (err || p != rr.end)
			return -EINVAL;
		to = chain_find(c, target, tlen);
		if (c->next[from] >= 0) {
			/* a known CNAME again, or a second one for the name (RFC 2181 §10.1) */
			if (c->next[from] != to)
				return -EINVAL;
		} else {
			if (to < 0) {
				if (c->n == SL_DNS_MAX_CNAMES + 1)
					return -ELOOP;
				to = (int)c->n++;
				memcpy(c->name[to], target, tlen);
				c->len[to] = tlen;
				c->next[to] = -1;
				*grown = 1;
			}
			c->next[from] = to;
		}
		if (ttl_s(rr.ttl) < *min_ttl)
			*min_ttl = ttl_s(rr.ttl);
	}
	return 0;
}

int sl_dns_parse_answer(const uint8_t *pkt, size_t len, const char *qname, struct sl_dns_answer *a)
{
	uint8_t owner[SL_DNS_WIRE_MAX];
	uint32_t min_ttl = UINT32_MAX;
	struct chain c;
	size_t off, ans, olen;
	struct hdr h;
	int err, grown;

	memset(a, 0, sizeof(*a));
	if (len < SL_DNS_HDR_LEN || len > MSG_MAX)
		return -EINVAL;
	read_hdr(pkt, &h);
	a->id = h.id;
	a->rcode = h.flags & 0xf;
	a->tc = !!(h.flags & F_TC);
	if (!(h.flags & F_QR) || OPCODE(h.flags) != 0)
		return -EINVAL;
	c.n = 1;
	c.next[0] = -1;
	if (text_to_wire(qname, 1, c.name[0], &c.len[0]))
		return -EINVAL;

	off = SL_DNS_HDR_LEN;
	if (h.qd > 1 || (!h.qd && a->rcode == SL_DNS_RCODE_NOERROR))
		return -EINVAL;
	if (h.qd) {
		err = read_name(pkt, len, off, len, 1, owner, &olen, &off);
		if (err)
			return err;
		if (olen != c.len[0] || memcmp(owner, c.name[0], olen) || len - off < 4)
			return -EINVAL;
		a->qtype = get16(pkt + off);
		off += 4;
	}
	if (a->tc)
		return 0;

	ans = off;
	for (unsigned i = 0; i < (unsigned)h.an + h.ns + h.ar; i++) {
		struct rr rr;

		err = read_rr(pkt, len, off, 1, owner, &olen, &rr);
		if (err)
			return err;
		off = rr.end;
	}
	if (off != len)
		return -EINVAL;

	do {
		err = chain_pass(pkt, len, ans, h.an, &c, &min_ttl, &grown);
		if (err)
			return err;
	} while (grown);

	off = ans;
	for (unsigned i = 0; i < h.an; i++) {
		size_t alen;
		struct rr rr;

		err = read_rr(pkt, len, off, 1, owner, &olen, &rr);
		if (err)
			return err;
		off = rr.end;
		if (rr.class != SL_DNS_CLASS_IN ||
		    (rr.type != SL_DNS_TYPE_A && rr.type != SL_DNS_TYPE_AAAA))
			continue;
		alen = rr.type == SL_DNS_TYPE_A ? 4 : 16;
		if (rr.rdlen != alen)
			return -EINVAL;
		if (chain_find(&c, owner, olen) < 0)
			continue;
		add_addr(a, rr.type == SL_DNS_TYPE_A ? AF_INET : AF_INET6, pkt + rr.rdata, alen,
			 ttl_s(rr.ttl));
		if (ttl_s(rr.ttl) < min_ttl)
			min_ttl = ttl_s(rr.ttl);
	}

	for (size_t i = 1; i < c.n; i++) {
		err = wire_to_text(c.name[i], a->cname[i - 1]);
		if (err)
			return err;
	}
	a->ncname = c.n - 1;
	a->min_ttl_s = min_ttl == UINT32_MAX ? 0 : min_ttl;
	return 0;
}

int sl_dns_is_bypass_type(uint16_t type)
{
	return type == SL_DNS_TYPE_SVCB || type == SL_DNS_TYPE_HTTPS;
}

static int bypass_rr(const uint8_t *pkt, const struct rr *rr)
{
	if (sl_dns_is_bypass_type(rr->type))
		return 1;
	/* RRSIG's first field is the type it covers (RFC 4034 §3.1) */
	return rr->type == SL_DNS_TYPE_RRSIG && rr->rdlen >= 2 &&
	       sl_dns_is_bypass_type(get16(pkt + rr->rdata));
}

/* An output buffer that notes, rather than overruns, its end. */
struct wbuf {
	uint8_t *p;
	size_t n, cap;
	int full;
};

static void w_put(struct wbuf *w, const void *src, size_t n)
{
	if (w->full || w->cap - w->n < n) {
		w->full = 1;
		return;
	}
	memcpy(w->p + w->n, src, n);
	w->n += n;
}

/*
 * Where the names sit in the RDATA of the types whose names a sender may have compressed
 * (RFC 1035 §3.3, RFC 3597 §4): @pre fixed bytes, @names names, then exactly @post bytes.
 * NAPTR's name may not be compressed (RFC 3403 §4.1); DNAME's neither (RFC 6672 §2.5), but
 * expanding an uncompressed name costs nothing. Returns 0 for the other types.
 */
static int rdata_names(uint16_t type, size_t *pre, int *names, size_t *post)
{
	*pre = 0;
	*names = 1;
	*post = 0;
	switch (type) {
	case 2: /* NS */
	case 3: /* MD */
	case 4: /* MF */
	case 5: /* CNAME */
	case 7: /* MB */
	case 8: /* MG */
	case 9: /* MR */
	case 12: /* PTR */
	case 39: /* DNAME */
		return 1;
	case 14: /* MINFO */
	case 17: /* RP */
		*names = 2;
		return 1;
	case 6: /* SOA: mname, rname, serial, refresh, retry, expire, minimum */
		*names = 2;
		*post = 20;
		return 1;
	case 15: /* MX */
	case 18: /* AFSDB */
	case 21: /* RT */
	case 36: /* KX */
		*pre = 2;
		return 1;
	case 26: /* PX */
		*pre = 2;
		*names = 2;
		return 1;
	case 33: /* SRV: priority, weight, port, target */
		*pre = 6;
		return 1;
	}
	return 0;
}

/*
 * The TTL to write for @rr: at most @max_ttl_s, and 0 when the top bit is set (RFC 2181 §8),
 * which is how sl_dns_parse_answer() reads it for the kernel: capping 0x80000000 at
 * @max_ttl_s instead would have the client cache for longer than the rule it was given
 * lives. OPT's TTL field holds flags, not a TTL.
 */
static uint32_t capped_ttl(const struct rr *rr, uint32_t max_ttl_s)
{
	uint32_t t = ttl_s(rr->ttl);

	if (rr->type == SL_DNS_TYPE_OPT)
		return rr->ttl;
	return t <= max_ttl_s ? t : max_ttl_s;
}

/* Writes the record @rr, owned by @owner, with every name uncompressed and its TTL capped at
 * @max_ttl_s. */
static int write_rr(const uint8_t *pkt, size_t len, const struct rr *rr, const uint8_t *owner,
		    size_t olen, uint32_t max_ttl_s, struct wbuf *w)
{
	uint8_t name[SL_DNS_WIRE_MAX], rdlen[2], ttl[4];
	uint32_t t = capped_ttl(rr, max_ttl_s);
	size_t pre, post, nlen, p, lenpos;
	int names, err;

	ttl[0] = t >> 24;
	ttl[1] = t >> 16;
	ttl[2] = t >> 8;
	ttl[3] = t;
	w_put(w, owner, olen);
	w_put(w, pkt + rr->rdata - 10, 4); /* type, class */
	w_put(w, ttl, 4);
	if (!rdata_names(rr->type, &pre, &names, &post)) {
		w_put(w, pkt + rr->rdata - 2, 2 + (size_t)rr->rdlen);
		return 0;
	}
	if (rr->rdlen < pre)
		return -EINVAL;
	lenpos = w->n;
	w_put(w, "\0", 2);
	w_put(w, pkt + rr->rdata, pre);
	p = rr->rdata + pre;
	for (int i = 0; i < names; i++) {
		err = read_name(pkt, len, p, rr->end, 0, name, &nlen, &p);
		if (err)
			return err;
		w_put(w, name, nlen);
	}
	if (rr->end - p != post)
		return -EINVAL;
	w_put(w, pkt + p, post);
	if (!w->full) {
		put16(rdlen, (uint16_t)(w->n - lenpos - 2));
		memcpy(w->p + lenpos, rdlen, 2);
	}
	return 0;
}

/* Header and @qd questions of @pkt, uncompressed, into @w. *@off: after the questions. */
static int write_questions(const uint8_t *pkt, size_t len, unsigned qd, struct wbuf *w, size_t *off)
{
	uint8_t name[SL_DNS_WIRE_MAX];
	size_t nlen;
	int err;

	*off = SL_DNS_HDR_LEN;
	w_put(w, pkt, SL_DNS_HDR_LEN);
	for (unsigned i = 0; i < qd; i++) {
		err = read_name(pkt, len, *off, len, 0, name, &nlen, off);
		if (err)
			return err;
		if (len - *off < 4)
			return -EINVAL;
		w_put(w, name, nlen);
		w_put(w, pkt + *off, 4);
		*off += 4;
	}
	return 0;
}

/* The header and questions of @pkt with TC set and no records (RFC 2181 §9). */
static int write_truncated(const uint8_t *pkt, size_t len, unsigned qd, uint8_t *out, size_t outcap)
{
	struct wbuf w = { .p = out, .cap = outcap };
	size_t off;
	int err;

	err = write_questions(pkt, len, qd, &w, &off);
	if (err)
		return err;
	if (w.full)
		return -ENOSPC;
	out[2] |= F_TC >> 8;
	memset(out + 6, 0, 6);
	return (int)w.n;
}

/* Whether the rewrite drops @rr: a bypass record, or an address @drop_addr refuses. */
static int drop_rr(const uint8_t *pkt, const struct rr *rr, sl_dns_addr_filter *drop_addr,
		   void *arg)
{
	if (bypass_rr(pkt, rr))
		return 1;
	if (!drop_addr || rr->class != SL_DNS_CLASS_IN)
		return 0;
	if (rr->type == SL_DNS_TYPE_A && rr->rdlen == 4)
		return drop_addr(AF_INET, pkt + rr->rdata, arg);
	if (rr->type == SL_DNS_TYPE_AAAA && rr->rdlen == 16)
		return drop_addr(AF_INET6, pkt + rr->rdata, arg);
	return 0;
}

int sl_dns_strip_bypass(const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap)
{
	return sl_dns_rewrite(pkt, len, out, outcap, NULL, NULL, UINT32_MAX);
}

int sl_dns_rewrite(const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
		   sl_dns_addr_filter *drop_addr, void *arg, uint32_t max_ttl_s)
{
	uint8_t owner[SL_DNS_WIRE_MAX];
	struct wbuf w = { .p = out, .cap = outcap < MSG_MAX ? outcap : MSG_MAX };
	size_t off, ans, olen;
	uint16_t count[3];
	int err, found = 0;
	struct hdr h;

	if (len < SL_DNS_HDR_LEN || len > MSG_MAX)
		return -EINVAL;
	read_hdr(pkt, &h);
	if (!(h.flags & F_QR))
		return -EINVAL;
	if (h.flags & F_TC)
		return write_truncated(pkt, len, h.qd, out, w.cap);

	/* first pass: validate, and look for a record to remove */
	off = SL_DNS_HDR_LEN;
	for (unsigned i = 0; i < h.qd; i++) {
		err = read_name(pkt, len, off, len, 0, owner, &olen, &off);
		if (err)
			return err;
		if (len - off < 4)
			return -EINVAL;
		off += 4;
	}
	ans = off;
	for (unsigned i = 0; i < (unsigned)h.an + h.ns + h.ar; i++) {
		struct rr rr;

		err = read_rr(pkt, len, off, 0, owner, &olen, &rr);
		if (err)
			return err;
		found |= drop_rr(pkt, &rr, drop_addr, arg) || capped_ttl(&rr, max_ttl_s) != rr.ttl;
		off = rr.end;
	}
	if (off != len)
		return -EINVAL;
	if (!found)
		return 0;

	/* rebuild; keep going when out is full, so that a malformed record is still found */
	err = write_questions(pkt, len, h.qd, &w, &off);
	if (err)
		return err;
	off = ans;
	count[0] = h.an;
	count[1] = h.ns;
	count[2] = h.ar;
	for (int s = 0; s < 3; s++) {
		unsigned n = count[s];

		for (unsigned i = 0; i < n; i++) {
			struct rr rr;

			err = read_rr(pkt, len, off, 0, owner, &olen, &rr);
			if (err)
				return err;
			off = rr.end;
			if (drop_rr(pkt, &rr, drop_addr, arg)) {
				count[s]--;
				continue;
			}
			err = write_rr(pkt, len, &rr, owner, olen, max_ttl_s, &w);
			if (err)
				return err;
		}
	}
	if (w.full)
		return write_truncated(pkt, len, h.qd, out, w.cap);
	put16(out + 6, count[0]);
	put16(out + 8, count[1]);
	put16(out + 10, count[2]);
	return (int)w.n;
}

int sl_dns_age(uint8_t *msg, size_t len, uint32_t age_s)
{
	uint8_t owner[SL_DNS_WIRE_MAX];
	size_t off = SL_DNS_HDR_LEN, olen;
	struct hdr h;
	int err;

	if (len < SL_DNS_HDR_LEN || len > MSG_MAX)
		return -EINVAL;
	read_hdr(msg, &h);
	for (unsigned i = 0; i < h.qd; i++) {
		err = read_name(msg, len, off, len, 0, owner, &olen, &off);
		if (err)
			return err;
		if (len - off < 4)
			return -EINVAL;
		off += 4;
	}
	for (unsigned i = 0; i < (unsigned)h.an + h.ns + h.ar; i++) {
		struct rr rr;
		uint32_t t;

		err = read_rr(msg, len, off, 0, owner, &olen, &rr);
		if (err)
			return err;
		if (rr.type != SL_DNS_TYPE_OPT) {
			t = ttl_s(rr.ttl);
			t = t > age_s ? t - age_s : 0;
			msg[rr.rdata - 6] = t >> 24;
			msg[rr.rdata - 5] = t >> 16;
			msg[rr.rdata - 4] = t >> 8;
			msg[rr.rdata - 3] = t;
		}
		off = rr.end;
	}
	return off == len ? 0 : -EINVAL;
}

/* @a and @b (@n bytes) equal, ASCII letters matching either case. */
static int eq_nocase(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower((uint8_t)a[i]) != lower((uint8_t)b[i]))
			return 0;
	return 1;
}

/* Whether the @n bytes of @s form a dotted name without an empty label. */
static int labels_ok(const char *s, size_t n)
{
	if (!n || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 1; i < n; i++)
		if (s[i] == '.' && s[i - 1] == '.')
			return 0;
	return 1;
}

int sl_dns_name_match(const char *pattern_host, int wildcard, const char *name)
{
	size_t plen = strlen(pattern_host), nlen = strlen(name);

	if (plen && pattern_host[plen - 1] == '.')
		plen--;
	if (nlen && name[nlen - 1] == '.')
		nlen--;
	if (!labels_ok(pattern_host, plen) || !labels_ok(name, nlen))
		return 0;
	if (!wildcard)
		return nlen == plen && eq_nocase(name, pattern_host, plen);
	return nlen > plen + 1 && name[nlen - plen - 1] == '.' &&
	       eq_nocase(name + nlen - plen, pattern_host, plen);
}
