// SPDX-License-Identifier: MIT
/*
 * The proxy's first look at a redirected connection: TLS or HTTP/1.x, and for TLS the server
 * name, ALPN and ECH of the ClientHello, read before any certificate is minted or upstream
 * connection made. The name read here is what the policy decides on, so it must be the name
 * the TLS stack that later terminates the connection sees too: the framing is checked at every
 * layer (records, handshake header, every vector of the hello, every extension), a hello that
 * could be read two ways (two server names, an extension sent twice, bytes left over) is
 * refused rather than guessed at, and the name is held to the host-name rules of the CA that
 * mints its certificate. All bytes are hostile and all reads bounds-checked; a bad hello costs
 * one connection. The stream is peeked, not consumed, so parsing a prefix answers -EAGAIN and
 * the proxy peeks again: no state is kept between calls, and a hello fragmented across records
 * is reassembled into a stack buffer on every call (at most SL_TLS_HELLO_MAX bytes).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "tls/tls_hello.h"

#define REC_HDR_LEN 5
#define HS_HDR_LEN 4
#define CT_HANDSHAKE 22
#define HS_CLIENT_HELLO 1

#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define EXT_PRE_SHARED_KEY 41
#define EXT_SUPPORTED_VERSIONS 43
#define EXT_ECH 0xfe0d
#define EXT_ESNI 0xffce /* encrypted_server_name of the early ESNI drafts, ECH's predecessor */
#define SNI_HOST_NAME 0
#define TLS13_VERSION 0x0304

_Static_assert(SL_TLS_PEEK_MAX >= REC_HDR_LEN + SL_TLS_HELLO_MAX, "a whole hello fits");
_Static_assert(SL_TLS_HELLO_MAX <= SL_TLS_RECORD_MAX, "a hello of any size fits in one record");

/* The unread part of a vector. */
struct rd {
	const uint8_t *p;
	size_t n;
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static int rd_u8(struct rd *r, uint8_t *v)
{
	if (r->n < 1)
		return -EINVAL;
	*v = r->p[0];
	r->p++;
	r->n--;
	return 0;
}

static int rd_u16(struct rd *r, uint16_t *v)
{
	if (r->n < 2)
		return -EINVAL;
	*v = get16(r->p);
	r->p += 2;
	r->n -= 2;
	return 0;
}

static int rd_skip(struct rd *r, size_t n)
{
	if (r->n < n)
		return -EINVAL;
	r->p += n;
	r->n -= n;
	return 0;
}

/*
 * Reads into @sub a vector with a @lenbytes (1 or 2) length prefix, whose length must lie in
 * [@min, @max] (RFC 8446 §3.4: "<floor..ceiling>").
 */
static int rd_vec(struct rd *r, int lenbytes, size_t min, size_t max, struct rd *sub)
{
	size_t n;

	if (lenbytes == 1) {
		uint8_t v;

		if (rd_u8(r, &v))
			return -EINVAL;
		n = v;
	} else {
		uint16_t v;

		if (rd_u16(r, &v))
			return -EINVAL;
		n = v;
	}
	if (n < min || n > max || r->n < n)
		return -EINVAL;
	sub->p = r->p;
	sub->n = n;
	r->p += n;
	r->n -= n;
	return 0;
}

/* A vector that is the whole of @r. */
static int rd_vec_all(struct rd *r, int lenbytes, size_t min, size_t max, struct rd *sub)
{
	if (rd_vec(r, lenbytes, min, max, sub) || r->n)
		return -EINVAL;
	return 0;
}

int sl_tls_sniff(const uint8_t *buf, size_t len)
{
	static const char *const methods[] = {
		"GET ",	    "HEAD ",  "POST ",	  "PUT ",   "DELETE ",
		"OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
	};
	int partial = 0;

	if (!len)
		return -EAGAIN;
	if (buf[0] == CT_HANDSHAKE) {
		size_t rlen;

		if ((len > 1 && buf[1] != 3) || (len > 2 && buf[2] > 4))
			return -EPROTO;
		if (len < REC_HDR_LEN)
			return -EAGAIN;
		rlen = get16(buf + 3);
		return rlen && rlen <= SL_TLS_RECORD_MAX ? SL_SNIFF_TLS : -EPROTO;
	}
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		size_t n = strlen(methods[i]);

		if (!memcmp(buf, methods[i], len < n ? len : n)) {
			if (len >= n)
				return SL_SNIFF_HTTP;
			partial = 1;
		}
	}
	return partial ? -EAGAIN : -EPROTO;
}

/*
 * Copies the host name @s (@n bytes, from the wire) into @out, lower-cased and without one
 * trailing dot, if it is one: the rules of sl_ca_leaf() (ca.c), so that a name accepted here
 * can be given a certificate. A last label of digits only is an IPv4 literal, or could be
 * read as one (RFC 3696 §2); any other literal has a ':' or a '%', which no label holds.
 */
static int host_name(const uint8_t *s, size_t n, char out[SL_TLS_SNI_BUF])
{
	size_t label = 0;
	int digits = 1;

	if (n && s[n - 1] == '.')
		n--;
	if (!n || n > SL_TLS_SNI_BUF - 1)
		return -EINVAL;
	for (size_t i = 0; i <= n; i++) {
		uint8_t c = i < n ? s[i] : '.';

		if (c == '.') {
			if (!label || label > 63 || s[i - 1] == '-')
				return -EINVAL;
			if (i == n && digits)
				return -EINVAL;
			out[i] = '.';
			label = 0;
			digits = 1;
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		if (c == '-' ? !label :
			       !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return -EINVAL;
		if (c < '0' || c > '9')
			digits = 0;
		out[i] = (char)c;
		label++;
	}
	out[n] = 0;
	return 0;
}

/*
 * server_name (RFC 6066 §3): a ServerNameList of exactly one entry, a host_name. The RFC
 * allows one name per type and no other type was ever defined; OpenSSL's server reads only
 * the first entry and only that type, so anything more is refused to keep both readings equal.
 */
static int ext_server_name(struct rd *ext, struct sl_client_hello *ch)
{
	struct rd list, name;
	uint8_t type;

	if (rd_vec_all(ext, 2, 1, UINT16_MAX, &list) || rd_u8(&list, &type) ||
	    type != SNI_HOST_NAME || rd_vec_all(&list, 2, 1, UINT16_MAX, &name))
		return -EINVAL;
	ch->sni_present = 1;
	ch->sni_ok = !host_name(name.p, name.n, ch->sni);
	if (!ch->sni_ok)
		ch->sni[0] = 0;
	return 0;
}

/* ALPN (RFC 7301 §3.1): a list of 1..255-byte protocol names, none empty. */
static int ext_alpn(struct rd *ext, struct sl_client_hello *ch)
{
	struct rd list, proto;

	if (rd_vec_all(ext, 2, 2, UINT16_MAX, &list))
		return -EINVAL;
	while (list.n) {
		if (rd_vec(&list, 1, 1, UINT8_MAX, &proto))
			return -EINVAL;
		if (proto.n == 8 && !memcmp(proto.p, "http/1.1", 8))
			ch->alpn |= SL_TLS_ALPN_HTTP11;
		else if (proto.n == 8 && !memcmp(proto.p, "http/1.0", 8))
			ch->alpn |= SL_TLS_ALPN_HTTP10;
		else if (proto.n == 2 && !memcmp(proto.p, "h2", 2))
			ch->alpn |= SL_TLS_ALPN_H2;
		else
			ch->alpn |= SL_TLS_ALPN_OTHER;
	}
	ch->alpn_present = 1;
	return 0;
}

/* supported_versions in a ClientHello (RFC 8446 §4.2.1): 1..127 versions. */
static int ext_supported_versions(struct rd *ext, struct sl_client_hello *ch)
{
	struct rd list;
	uint16_t v;

	if (rd_vec_all(ext, 1, 2, 254, &list) || list.n % 2)
		return -EINVAL;
	while (!rd_u16(&list, &v))
		if (v == TLS13_VERSION)
			ch->tls13 = 1;
	return 0;
}

/* The body of a ClientHello message (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2). */
static int parse_body(struct rd *r, struct sl_client_hello *ch)
{
	uint8_t seen[(UINT16_MAX + 1) / 8];
	struct rd v, exts;

	/* legacy_version and random, then session id, cipher suites, compression methods */
	if (rd_skip(r, 2 + 32) || rd_vec(r, 1, 0, 32, &v) || rd_vec(r, 2, 2, UINT16_MAX - 1, &v) ||
	    v.n % 2 || rd_vec(r, 1, 1, UINT8_MAX, &v))
		return -EINVAL;
	/* an SSL 3.0 / TLS 1.0 hello may end here: no extensions, so no name */
	if (!r->n)
		return 0;
	if (rd_vec_all(r, 2, 0, UINT16_MAX, &exts))
		return -EINVAL;
	memset(seen, 0, sizeof(seen));
	while (exts.n) {
		struct rd ext;
		uint16_t type;
		int err = 0;

		if (rd_u16(&exts, &type) || rd_vec(&exts, 2, 0, UINT16_MAX, &ext))
			return -EINVAL;
		if (seen[type / 8] & (1u << (type % 8)))
			return -EINVAL;
		/* its binders cover the hello up to it: nothing may follow (RFC 8446 §4.2.11) */
		if (type == EXT_PRE_SHARED_KEY && exts.n)
			return -EINVAL;
		seen[type / 8] |= 1u << (type % 8);
		switch (type) {
		case EXT_SERVER_NAME:
			err = ext_server_name(&ext, ch);
			break;
		case EXT_ALPN:
			err = ext_alpn(&ext, ch);
			break;
		case EXT_SUPPORTED_VERSIONS:
			err = ext_supported_versions(&ext, ch);
			break;
		case EXT_ECH:
		case EXT_ESNI:
			ch->ech = 1;
			break;
		}
		if (err)
			return err;
	}
	return 0;
}

/*
 * Records (RFC 8446 §5.1) are walked from the start of @buf, and the fragments of the hello
 * copied into @msg, until the message is whole. Checks come as early as the bytes allow, so
 * that a ServerHello, an alert or a record of the wrong size is refused from its first bytes
 * and only a prefix of what may still be a valid hello gets -EAGAIN. Every byte index asked
 * for lies below SL_TLS_PEEK_MAX (-EMSGSIZE otherwise), which keeps the promise that a peek
 * of that size gets an answer.
 */
int sl_tls_parse_client_hello(const uint8_t *buf, size_t len, struct sl_client_hello *ch)
{
	uint8_t msg[SL_TLS_HELLO_MAX];
	size_t pos = 0, have = 0, need = HS_HDR_LEN;
	struct rd body;

	memset(ch, 0, sizeof(*ch));
	while (have < need) {
		int first = !pos;
		size_t rlen, avail;

		if (pos + REC_HDR_LEN > SL_TLS_PEEK_MAX)
			return -EMSGSIZE;
		if (len - pos < 1)
			return -EAGAIN;
		/* handshake messages are not interleaved with other records (RFC 8446 §5.1) */
		if (buf[pos] != CT_HANDSHAKE)
			return first ? -EPROTO : -EINVAL;
		if (len - pos < 3) {
			if (len - pos == 2 && buf[pos + 1] != 3)
				return first ? -EPROTO : -EINVAL;
			return -EAGAIN;
		}
		if (buf[pos + 1] != 3 || buf[pos + 2] > 4)
			return first ? -EPROTO : -EINVAL;
		if (len - pos < REC_HDR_LEN)
			return -EAGAIN;
		/* zero-length handshake fragments are forbidden (RFC 8446 §5.1) */
		rlen = get16(buf + pos + 3);
		if (!rlen || rlen > SL_TLS_RECORD_MAX)
			return -EINVAL;
		pos += REC_HDR_LEN;
		if (pos + rlen > SL_TLS_PEEK_MAX)
			return -EMSGSIZE;
		avail = len - pos < rlen ? len - pos : rlen;
		for (size_t i = 0; i < avail;) {
			size_t take = avail - i < need - have ? avail - i : need - have;

			/* the hello is whole and its record goes on */
			if (!take)
				return -EINVAL;
			memcpy(msg + have, buf + pos + i, take);
			have += take;
			i += take;
			if (msg[0] != HS_CLIENT_HELLO)
				return -EPROTO;
			if (need == HS_HDR_LEN && have == HS_HDR_LEN) {
				size_t mlen = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];

				if (mlen > SL_TLS_HELLO_MAX - HS_HDR_LEN)
					return -EMSGSIZE;
				need += mlen;
			}
		}
		if (avail < rlen)
			return have == need ? -EINVAL : -EAGAIN;
		pos += rlen;
	}
	ch->len = pos;
	body.p = msg + HS_HDR_LEN;
	body.n = need - HS_HDR_LEN;
	return parse_body(&body, ch);
}
