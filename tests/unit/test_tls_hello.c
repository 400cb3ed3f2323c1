// SPDX-License-Identifier: MIT
/*
 * Unit tests of the ClientHello module: protocol sniffing, real ClientHellos from OpenSSL's
 * client (TLS 1.2-max and 1.3, with and without SNI and ALPN), every prefix of them, the same
 * hellos fragmented across records, hand-built hellos with one length off by one at each
 * layer, duplicate extensions, server names of every shape, ECH, size limits, and random
 * mutations of all of these. The mutations are also fed to OpenSSL's server: whatever this
 * module accepts, OpenSSL must read with the same server name, since that is the TLS stack
 * that terminates the connection the policy was decided on. Each input is handed over in a
 * heap block of exactly its size, so that AddressSanitizer or valgrind see any read past it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls/ca.h"
#include "tls/tls_hello.h"

#define ALPN_H2_H11 "\x02h2\x08http/1.1"
#define ALPN_H11 "\x08http/1.1"

/* A byte stream under construction. */
struct pb {
	uint8_t b[SL_TLS_PEEK_MAX + 4096];
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

static void pb_bytes(struct pb *p, const void *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pb_u8(p, ((const uint8_t *)d)[i]);
}

static uint32_t pb_get(const struct pb *p, size_t off, int width)
{
	uint32_t v = 0;

	for (int i = 0; i < width; i++)
		v = v << 8 | p->b[off + i];
	return v;
}

static void pb_set(struct pb *p, size_t off, int width, uint32_t v)
{
	for (int i = width - 1; i >= 0; i--, v >>= 8)
		p->b[off + i] = v & 0xff;
}

static struct pb *pb_new(void)
{
	struct pb *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	return p;
}

/* Parses @b[0..@n) from a heap block of exactly @n bytes. */
static int parse(const uint8_t *b, size_t n, struct sl_client_hello *ch)
{
	uint8_t *exact = malloc(n ? n : 1);
	int r;

	assert_non_null(exact);
	memcpy(exact, b, n);
	r = sl_tls_parse_client_hello(exact, n, ch);
	free(exact);
	return r;
}

static int sniff(const void *b, size_t n)
{
	uint8_t *exact = malloc(n ? n : 1);
	int r;

	assert_non_null(exact);
	memcpy(exact, b, n);
	r = sl_tls_sniff(exact, n);
	free(exact);
	return r;
}

/*
 * The ClientHello that OpenSSL's client sends, read out of a memory BIO after one
 * SSL_connect(): @max_version 0 is the default (TLS 1.3), @sni and @alpn (wire format) may be
 * NULL.
 */
static void openssl_hello(struct pb *p, long max_version, const char *sni, const char *alpn)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
	SSL *ssl;
	int r;

	assert_non_null(ctx);
	assert_non_null(rbio);
	assert_non_null(wbio);
	if (max_version)
		assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_set_bio(ssl, rbio, wbio);
	if (sni)
		assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
	if (alpn)
		assert_int_equal(
			SSL_set_alpn_protos(ssl, (const unsigned char *)alpn, strlen(alpn)), 0);
	r = SSL_connect(ssl);
	assert_int_equal(r, -1);
	assert_int_equal(SSL_get_error(ssl, r), SSL_ERROR_WANT_READ);
	r = BIO_read(wbio, p->b, (int)sizeof(p->b));
	assert_true(r > 0);
	p->n = (size_t)r;
	assert_int_equal(BIO_pending(wbio), 0);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

/* What OpenSSL's server made of a hello (see openssl_read()). */
struct peer_view {
	int hello_seen; /* the framing was accepted: the client hello callback ran */
	int exts_seen; /* the extensions were processed: the servername callback ran */
	int has_sni;
	char sni[512];
	char err[256]; /* why OpenSSL stopped, when not in the servername callback */
};

static SSL_CTX *server_ctx;
static struct peer_view peer;

static int peer_hello_cb(SSL *ssl, int *alert, void *arg)
{
	(void)ssl, (void)alert, (void)arg;
	peer.hello_seen = 1;
	return SSL_CLIENT_HELLO_SUCCESS;
}

static int peer_sni_cb(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)arg;
	peer.exts_seen = 1;
	if (name) {
		peer.has_sni = 1;
		snprintf(peer.sni, sizeof(peer.sni), "%s", name);
	}
	/* no certificate to go on with: stop here */
	*alert = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Feeds @b[0..@n) to an OpenSSL server (no certificate) and reports what it saw in @peer. */
static void openssl_read(const uint8_t *b, size_t n)
{
	BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
	SSL *ssl;

	if (!server_ctx) {
		server_ctx = SSL_CTX_new(TLS_server_method());
		assert_non_null(server_ctx);
		SSL_CTX_set_client_hello_cb(server_ctx, peer_hello_cb, NULL);
		SSL_CTX_set_tlsext_servername_callback(server_ctx, peer_sni_cb);
	}
	memset(&peer, 0, sizeof(peer));
	assert_non_null(rbio);
	assert_non_null(wbio);
	assert_int_equal(BIO_write(rbio, b, (int)n), (int)n);
	ssl = SSL_new(server_ctx);
	assert_non_null(ssl);
	SSL_set_bio(ssl, rbio, wbio);
	assert_true(SSL_accept(ssl) <= 0);
	ERR_error_string_n(ERR_peek_error(), peer.err, sizeof(peer.err));
	SSL_free(ssl);
	ERR_clear_error();
}

/* Offsets of the length fields of a hand-built hello (hb_*()). */
#define OFF_REC 3 /* 2 bytes */
#define OFF_HS 6 /* 3 bytes */
#define OFF_SID 43 /* 1 byte */
#define OFF_CS 76 /* 2 bytes */
#define OFF_COMP 82 /* 1 byte */
#define OFF_EXTS 84 /* 2 bytes */

/* Starts a ClientHello record: legacy_version 1.2, a session id, two suites, no compression,
 * and an extension block (when @exts) that the hb_*() helpers append to. */
static void hb_start(struct pb *p, int exts)
{
	static const uint8_t suites[] = { 0x13, 0x01, 0xc0, 0x2f };

	p->n = 0;
	pb_bytes(p, "\x16\x03\x01\x00\x00", 5);
	pb_bytes(p, "\x01\x00\x00\x00", 4);
	pb_u16(p, 0x0303);
	for (int i = 0; i < 32; i++)
		pb_u8(p, (uint8_t)(i * 7 + 1));
	pb_u8(p, 32);
	for (int i = 0; i < 32; i++)
		pb_u8(p, 0xaa);
	pb_u16(p, sizeof(suites));
	pb_bytes(p, suites, sizeof(suites));
	pb_bytes(p, "\x01\x00", 2);
	assert_int_equal(p->n, OFF_EXTS);
	if (exts)
		pb_u16(p, 0);
}

/* Fixes the lengths of the extension block (if any), the handshake header and the record. */
static void hb_finish(struct pb *p)
{
	if (p->n > OFF_EXTS)
		pb_set(p, OFF_EXTS, 2, (uint32_t)(p->n - OFF_EXTS - 2));
	pb_set(p, OFF_HS, 3, (uint32_t)(p->n - 9));
	pb_set(p, OFF_REC, 2, (uint32_t)(p->n - 5));
}

/* Appends extension @type with data @d/@n; returns the offset of its length field. */
static size_t hb_ext(struct pb *p, uint16_t type, const void *d, size_t n)
{
	size_t off;

	pb_u16(p, type);
	off = p->n;
	pb_u16(p, (uint16_t)n);
	pb_bytes(p, d, n);
	return off;
}

/* server_name with the one host_name @name/@n. */
static size_t hb_sni(struct pb *p, const void *name, size_t n)
{
	uint8_t d[1024];

	assert_true(n + 5 <= sizeof(d));
	d[0] = (uint8_t)((n + 3) >> 8), d[1] = (uint8_t)(n + 3);
	d[2] = 0;
	d[3] = (uint8_t)(n >> 8), d[4] = (uint8_t)n;
	memcpy(d + 5, name, n);
	return hb_ext(p, 0, d, n + 5);
}

/* ALPN with the protocol list @wire (wire format, @n bytes). */
static size_t hb_alpn(struct pb *p, const void *wire, size_t n)
{
	uint8_t d[1024];

	assert_true(n + 2 <= sizeof(d));
	d[0] = (uint8_t)(n >> 8), d[1] = (uint8_t)n;
	memcpy(d + 2, wire, n);
	return hb_ext(p, 16, d, n + 2);
}

static size_t hb_versions(struct pb *p, const uint16_t *v, size_t n)
{
	uint8_t d[256];

	d[0] = (uint8_t)(2 * n);
	for (size_t i = 0; i < n; i++)
		d[1 + 2 * i] = v[i] >> 8, d[2 + 2 * i] = v[i] & 0xff;
	return hb_ext(p, 43, d, 1 + 2 * n);
}

/* The length fields of hb_standard()'s hello. */
struct offs {
	size_t sni_ext, alpn_ext, sv_ext, last_ext;
};

/* A complete hello: SNI www.example.com, ALPN {h2, http/1.1}, TLS 1.3 and 1.2, and an
 * extension of unknown type last. */
static void hb_standard(struct pb *p, struct offs *o)
{
	static const uint16_t versions[] = { 0x0304, 0x0303 };
	struct offs unused;

	if (!o)
		o = &unused;
	hb_start(p, 1);
	o->sni_ext = hb_sni(p, "www.example.com", 15);
	o->alpn_ext = hb_alpn(p, ALPN_H2_H11, sizeof(ALPN_H2_H11) - 1);
	o->sv_ext = hb_versions(p, versions, 2);
	o->last_ext = hb_ext(p, 0x1234, "xyz", 3);
	hb_finish(p);
}

/* Re-frames the one-record hello @in into records of at most @k bytes. */
static void fragment(const struct pb *in, size_t k, struct pb *out)
{
	assert_int_equal(pb_get(in, OFF_REC, 2), in->n - 5);
	out->n = 0;
	for (size_t i = 5; i < in->n; i += k) {
		size_t c = in->n - i < k ? in->n - i : k;

		pb_bytes(out, in->b, 3);
		pb_u16(out, (uint16_t)c);
		pb_bytes(out, in->b + i, c);
	}
}

static void assert_same_hello(const struct sl_client_hello *a, const struct sl_client_hello *b)
{
	assert_int_equal(a->sni_present, b->sni_present);
	assert_int_equal(a->sni_ok, b->sni_ok);
	assert_string_equal(a->sni, b->sni);
	assert_int_equal(a->alpn_present, b->alpn_present);
	assert_int_equal(a->alpn, b->alpn);
	assert_int_equal(a->tls13, b->tls13);
	assert_int_equal(a->ech, b->ech);
}

static void test_sniff(void **state)
{
	static const struct {
		const char *in;
		size_t n;
		int want;
	} cases[] = {
		{ "", 0, -EAGAIN },
		{ "G", 1, -EAGAIN },
		{ "GE", 2, -EAGAIN },
		{ "GET", 3, -EAGAIN },
		{ "GET ", 4, SL_SNIFF_HTTP },
		{ "GET / HTTP/1.1\r\n", 16, SL_SNIFF_HTTP },
		{ "HEAD /", 6, SL_SNIFF_HTTP },
		{ "POST /x", 7, SL_SNIFF_HTTP },
		{ "PUT /x", 6, SL_SNIFF_HTTP },
		{ "P", 1, -EAGAIN },
		{ "PA", 2, -EAGAIN },
		{ "DELETE /", 8, SL_SNIFF_HTTP },
		{ "OPTIONS", 7, -EAGAIN },
		{ "OPTIONS * HTTP/1.1", 18, SL_SNIFF_HTTP },
		{ "PATCH /", 7, SL_SNIFF_HTTP },
		{ "CONNECT example.com:443 HTTP/1.1", 32, SL_SNIFF_HTTP },
		{ "TRACE /", 7, SL_SNIFF_HTTP },
		{ "get / HTTP/1.1", 14, -EPROTO },
		{ "GET/", 4, -EPROTO },
		{ "GETS /", 6, -EPROTO },
		{ "PROPFIND /", 10, -EPROTO },
		{ "PRI * HTTP/2.0\r\n", 16, -EPROTO },
		{ "SSH-2.0-OpenSSH", 15, -EPROTO },
		{ " GET /", 6, -EPROTO },
		{ "\x16", 1, -EAGAIN },
		{ "\x16\x03", 2, -EAGAIN },
		{ "\x16\x03\x01", 3, -EAGAIN },
		{ "\x16\x03\x01\x02", 4, -EAGAIN },
		{ "\x16\x03\x01\x02\x00", 5, SL_SNIFF_TLS },
		{ "\x16\x03\x00\x00\x01", 5, SL_SNIFF_TLS },
		{ "\x16\x03\x04\x40\x00", 5, SL_SNIFF_TLS },
		{ "\x16\x03\x03\x00\x00", 5, -EPROTO }, /* empty record */
		{ "\x16\x03\x03\x40\x01", 5, -EPROTO }, /* longer than 2^14 */
		{ "\x16\x03\x05", 3, -EPROTO },
		{ "\x16\x02", 2, -EPROTO },
		{ "\x16\x04\x01\x00\x10", 5, -EPROTO },
		{ "\x17\x03\x03\x00\x10", 5, -EPROTO }, /* application data */
		{ "\x15\x03\x03\x00\x02", 5, -EPROTO }, /* alert */
		{ "\x80\x2e\x01\x03\x01", 5, -EPROTO }, /* an SSLv2-format hello */
		{ "\x00", 1, -EPROTO },
	};
	struct pb *p = pb_new();

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = sniff(cases[i].in, cases[i].n);

		if (got != cases[i].want)
			fail_msg("case %zu (%.*s): %d, want %d", i, (int)cases[i].n, cases[i].in,
				 got, cases[i].want);
	}
	openssl_hello(p, 0, "example.com", NULL);
	for (size_t n = 0; n <= p->n; n++)
		assert_int_equal(sniff(p->b, n), n < 5 ? -EAGAIN : SL_SNIFF_TLS);
	free(p);
}

/* The 12 real hellos: TLS 1.3 and 1.2-max clients x SNI or not x three ALPN lists. */
static void test_openssl_hellos(void **state)
{
	static const long versions[] = { 0, TLS1_2_VERSION };
	static const char *const snis[] = { "www.example.com", NULL };
	static const struct {
		const char *wire;
		uint8_t bits;
	} alpns[] = {
		{ ALPN_H2_H11, SL_TLS_ALPN_H2 | SL_TLS_ALPN_HTTP11 },
		{ ALPN_H11, SL_TLS_ALPN_HTTP11 },
		{ NULL, 0 },
	};
	struct pb *p = pb_new();

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		for (size_t s = 0; s < 2; s++) {
			for (size_t a = 0; a < 3; a++) {
				struct sl_client_hello ch;

				openssl_hello(p, versions[v], snis[s], alpns[a].wire);
				assert_int_equal(sniff(p->b, p->n), SL_SNIFF_TLS);
				assert_int_equal(parse(p->b, p->n, &ch), 0);
				assert_int_equal(ch.len, p->n);
				assert_int_equal(ch.sni_present, !!snis[s]);
				assert_int_equal(ch.sni_ok, !!snis[s]);
				assert_string_equal(ch.sni, snis[s] ? snis[s] : "");
				assert_int_equal(ch.alpn_present, !!alpns[a].wire);
				assert_int_equal(ch.alpn, alpns[a].bits);
				assert_int_equal(ch.tls13, !versions[v]);
				assert_int_equal(ch.ech, 0);
				assert_true(sl_ca_name_ok(ch.sni) == !!snis[s]);

				/* OpenSSL's server reads the same name */
				openssl_read(p->b, p->n);
				assert_true(peer.exts_seen);
				assert_int_equal(peer.has_sni, !!snis[s]);
				if (snis[s])
					assert_string_equal(peer.sni, snis[s]);
			}
		}
	}
	free(p);
}

/* Names as real clients send them: letter case, a trailing dot, address literals. */
static void test_openssl_names(void **state)
{
	static const struct {
		const char *sent;
		const char *want; /* NULL: present but not a host name */
	} cases[] = {
		{ "WWW.Example.COM", "www.example.com" },
		{ "example.com.", "example.com" },
		{ "_acme-challenge.Example.org", "_acme-challenge.example.org" },
		{ "192.0.2.1", NULL },
		{ "2001:db8::1", NULL },
		{ "[2001:db8::1]", NULL },
		{ "localhost", "localhost" },
		{ "exa mple.com", NULL },
	};
	struct pb *p = pb_new();

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sl_client_hello ch;

		openssl_hello(p, 0, cases[i].sent, NULL);
		assert_int_equal(parse(p->b, p->n, &ch), 0);
		assert_int_equal(ch.sni_present, 1);
		assert_int_equal(ch.sni_ok, !!cases[i].want);
		assert_string_equal(ch.sni, cases[i].want ? cases[i].want : "");
	}
	free(p);
}

/* Every prefix of a hello asks for more bytes; what follows the hello is not looked at. */
static void test_prefixes(void **state)
{
	struct pb *p = pb_new(), *f = pb_new();
	struct sl_client_hello ch, whole;

	(void)state;
	for (int variant = 0; variant < 5; variant++) {
		switch (variant) {
		case 0:
			openssl_hello(p, 0, "www.example.com", ALPN_H2_H11);
			break;
		case 1:
			openssl_hello(p, TLS1_2_VERSION, "a.example", ALPN_H11);
			break;
		case 2:
			openssl_hello(p, 0, NULL, NULL);
			break;
		case 3:
			hb_standard(p, NULL);
			break;
		case 4: /* fragmented: prefixes end inside record headers too */
			openssl_hello(f, 0, "www.example.com", ALPN_H2_H11);
			fragment(f, 37, p);
			break;
		}
		assert_int_equal(parse(p->b, p->n, &whole), 0);
		assert_int_equal(whole.len, p->n);
		for (size_t n = 0; n < p->n; n++) {
			int r = parse(p->b, n, &ch);

			if (r != -EAGAIN)
				fail_msg("variant %d, prefix %zu of %zu: %d", variant, n, p->n, r);
		}
		/* a ChangeCipherSpec (middlebox compatibility) and early data after it */
		pb_bytes(p, "\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x02\xde\xad", 13);
		assert_int_equal(parse(p->b, p->n, &ch), 0);
		assert_int_equal(ch.len, whole.len);
		assert_same_hello(&ch, &whole);
	}
	free(p);
	free(f);
}

static void test_fragmented(void **state)
{
	static const size_t sizes[] = { 1, 2, 3, 4, 5, 6, 7, 64, 100, 511 };
	struct pb *p = pb_new(), *f = pb_new();
	struct sl_client_hello ch, whole;
	size_t mlen;

	(void)state;
	openssl_hello(p, 0, "www.example.com", ALPN_H2_H11);
	assert_int_equal(parse(p->b, p->n, &whole), 0);
	mlen = p->n - 5;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fragment(p, sizes[i], f);
		assert_int_equal(f->n, mlen + 5 * ((mlen + sizes[i] - 1) / sizes[i]));
		assert_int_equal(parse(f->b, f->n, &ch), 0);
		assert_int_equal(ch.len, f->n);
		assert_same_hello(&ch, &whole);
	}

	/* two records, split inside the extensions */
	fragment(p, mlen - 40, f);
	assert_int_equal(pb_get(f, 3, 2), mlen - 40);
	assert_int_equal(parse(f->b, f->n, &ch), 0);
	assert_same_hello(&ch, &whole);

	/* the second record is of another type, empty, too long, or of another version */
	f->b[mlen - 40 + 5] = 0x17;
	assert_int_equal(parse(f->b, f->n, &ch), -EINVAL);
	f->b[mlen - 40 + 5] = 0x15;
	assert_int_equal(parse(f->b, f->n, &ch), -EINVAL);
	assert_int_equal(parse(f->b, mlen - 40 + 6, &ch), -EINVAL);
	f->b[mlen - 40 + 5] = 0x16;
	f->b[mlen - 40 + 7] = 0x05;
	assert_int_equal(parse(f->b, f->n, &ch), -EINVAL);
	f->b[mlen - 40 + 7] = 0x03;
	pb_set(f, mlen - 40 + 8, 2, 0);
	assert_int_equal(parse(f->b, f->n, &ch), -EINVAL);
	pb_set(f, mlen - 40 + 8, 2, 41);
	pb_u8(f, 0);
	assert_int_equal(parse(f->b, f->n, &ch), -EINVAL);

	/* the handshake header itself split across records */
	fragment(p, 2, f);
	assert_int_equal(parse(f->b, f->n, &ch), 0);
	assert_same_hello(&ch, &whole);
	free(p);
	free(f);
}

static void test_not_a_client_hello(void **state)
{
	static const uint8_t server_hello[] = {
		0x16, 0x03, 0x03, 0x00, 0x2a, 0x02, 0x00, 0x00, 0x26, 0x03, 0x03,
	};
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	/* a ServerHello is refused from its type byte on */
	assert_int_equal(parse(server_hello, 5, &ch), -EAGAIN);
	for (size_t n = 6; n <= sizeof(server_hello); n++)
		assert_int_equal(parse(server_hello, n, &ch), -EPROTO);

	hb_standard(p, NULL);
	p->b[5] = 2;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	p->b[5] = 11; /* Certificate */
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	p->b[5] = 1;

	/* records that are not handshakes */
	p->b[0] = 0x17;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	assert_int_equal(parse(p->b, 1, &ch), -EPROTO);
	p->b[0] = 0x15;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	p->b[0] = 0x14;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	p->b[0] = 0x16;

	/* record versions outside 3.0..3.4 */
	p->b[2] = 5;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	assert_int_equal(parse(p->b, 3, &ch), -EPROTO);
	p->b[2] = 1;
	p->b[1] = 2;
	assert_int_equal(parse(p->b, p->n, &ch), -EPROTO);
	assert_int_equal(parse(p->b, 2, &ch), -EPROTO);
	p->b[1] = 3;
	assert_int_equal(parse(p->b, p->n, &ch), 0);

	assert_int_equal(parse((const uint8_t *)"GET / HTTP/1.1\r\n", 16, &ch), -EPROTO);
	assert_int_equal(parse((const uint8_t *)"\x80\x2e\x01\x03\x01", 5, &ch), -EPROTO);
	free(p);
}

/* One length field of the hand-built hello, nudged by +-1. */
static void test_length_off_by_one(void **state)
{
	struct offs o;
	struct pb *p = pb_new(), *m = pb_new();
	struct sl_client_hello ch;
	struct {
		const char *what;
		size_t off;
		int width;
	} fields[10];
	size_t nf = 0;

	(void)state;
	hb_standard(p, &o);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_string_equal(ch.sni, "www.example.com");
	assert_int_equal(ch.alpn, SL_TLS_ALPN_H2 | SL_TLS_ALPN_HTTP11);
	assert_int_equal(ch.tls13, 1);

	/* record +1: it would hold a byte after the hello, known before that byte comes */
	*m = *p;
	pb_set(m, OFF_REC, 2, pb_get(m, OFF_REC, 2) + 1);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	pb_u8(m, 0);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	assert_int_equal(parse(m->b, 9, &ch), -EAGAIN);
	/* record -1: the hello goes on in a "record" that starts with its last byte */
	*m = *p;
	pb_set(m, OFF_REC, 2, pb_get(m, OFF_REC, 2) - 1);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);

	/* message +1: the rest is due in another record; when it comes, it is trailing garbage
	 * inside the ClientHello */
	*m = *p;
	pb_set(m, OFF_HS, 3, pb_get(m, OFF_HS, 3) + 1);
	assert_int_equal(parse(m->b, m->n, &ch), -EAGAIN);
	pb_bytes(m, "\x16\x03\x03\x00\x01\x00", 6);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	/* the same garbage inside one record */
	*m = *p;
	pb_u8(m, 0);
	pb_set(m, OFF_HS, 3, pb_get(m, OFF_HS, 3) + 1);
	pb_set(m, OFF_REC, 2, pb_get(m, OFF_REC, 2) + 1);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	/* message -1: the record holds a byte after the hello */
	*m = *p;
	pb_set(m, OFF_HS, 3, pb_get(m, OFF_HS, 3) - 1);
	assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	assert_int_equal(parse(m->b, 9, &ch), -EAGAIN);

	/* everything inside the message: -EINVAL, whichever way */
#define FIELD(w, o, n) fields[nf].what = w, fields[nf].off = o, fields[nf++].width = n
	FIELD("session id", OFF_SID, 1);
	FIELD("cipher suites", OFF_CS, 2);
	FIELD("compression methods", OFF_COMP, 1);
	FIELD("extension block", OFF_EXTS, 2);
	FIELD("server_name extension", o.sni_ext, 2);
	FIELD("server name list", o.sni_ext + 2, 2);
	FIELD("host name", o.sni_ext + 5, 2);
	FIELD("ALPN extension", o.alpn_ext, 2);
	FIELD("ALPN list", o.alpn_ext + 2, 2);
	FIELD("ALPN protocol", o.alpn_ext + 4, 1);
#undef FIELD
	for (size_t i = 0; i < nf; i++) {
		for (int d = -1; d <= 1; d += 2) {
			int r;

			*m = *p;
			pb_set(m, fields[i].off, fields[i].width,
			       pb_get(m, fields[i].off, fields[i].width) + (uint32_t)d);
			r = parse(m->b, m->n, &ch);
			if (r != -EINVAL)
				fail_msg("%s %+d: %d", fields[i].what, d, r);
		}
	}
	for (int d = -1; d <= 1; d += 2) {
		*m = *p;
		pb_set(m, o.sv_ext, 2, pb_get(m, o.sv_ext, 2) + (uint32_t)d);
		assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
		*m = *p;
		m->b[o.sv_ext + 2] += (uint8_t)d;
		assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
		*m = *p;
		pb_set(m, o.last_ext, 2, pb_get(m, o.last_ext, 2) + (uint32_t)d);
		assert_int_equal(parse(m->b, m->n, &ch), -EINVAL);
	}
	free(p);
	free(m);
}

/* RFC 8446 §4.2: no extension type twice, known or not. */
static void test_duplicate_extensions(void **state)
{
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	hb_start(p, 1);
	hb_sni(p, "a.example", 9);
	hb_ext(p, 0x1234, "", 0);
	hb_sni(p, "a.example", 9);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	hb_start(p, 1);
	hb_sni(p, "a.example", 9);
	hb_sni(p, "b.example", 9);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	hb_start(p, 1);
	hb_alpn(p, ALPN_H11, 9);
	hb_alpn(p, "\x02h2", 3);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	hb_start(p, 1);
	hb_ext(p, 0xfe0d, "\x00", 1);
	hb_ext(p, 0xfe0d, "\x00", 1);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	hb_start(p, 1);
	hb_ext(p, 0x0a0a, "", 0);
	hb_ext(p, 0x1a1a, "\x00", 1);
	hb_ext(p, 0x0a0a, "", 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	/* distinct GREASE types are fine */
	hb_start(p, 1);
	hb_ext(p, 0x0a0a, "", 0);
	hb_ext(p, 0xfafa, "\x00", 1);
	hb_ext(p, 0xffff, "", 0);
	hb_ext(p, 0x0017, "", 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);

	/* pre_shared_key last, and not last (RFC 8446 §4.2.11) */
	hb_start(p, 1);
	hb_sni(p, "a.example", 9);
	hb_ext(p, 41, "\x00\x00", 2);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	hb_start(p, 1);
	hb_ext(p, 41, "\x00\x00", 2);
	hb_sni(p, "a.example", 9);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	free(p);
}

static void test_sni_names(void **state)
{
	static char l63[64], l64[65], n253[254], n254[255], n254dot[256];
	static const struct {
		const char *name;
		size_t n; /* 0: strlen */
		const char *want; /* NULL: present but not a host name */
	} fixed[] = {
		{ "example.com", 0, "example.com" },
		{ "Example.COM", 0, "example.com" },
		{ "example.com.", 0, "example.com" },
		{ "example.com..", 0, NULL },
		{ ".", 0, NULL },
		{ ".example.com", 0, NULL },
		{ "a..com", 0, NULL },
		{ "a", 0, "a" },
		{ "xn--bcher-kva.example", 0, "xn--bcher-kva.example" },
		{ "_dmarc.example.com", 0, "_dmarc.example.com" },
		{ "a_b.c-d.e", 0, "a_b.c-d.e" },
		{ "-a.com", 0, NULL },
		{ "a-.com", 0, NULL },
		{ "a.com-", 0, NULL },
		{ "123.com", 0, "123.com" },
		{ "com.123", 0, NULL },
		{ "123", 0, NULL },
		{ "10.0.0.1", 0, NULL },
		{ "10.0.0.1.", 0, NULL },
		{ "::1", 0, NULL },
		{ "[::1]", 0, NULL },
		{ "fe80::1%eth0", 0, NULL },
		{ "exa\0mple.com", 12, NULL },
		{ "example.com\0", 12, NULL },
		{ "\0", 1, NULL },
		{ "a b.com", 0, NULL },
		{ "a/b.com", 0, NULL },
		{ "a*.com", 0, NULL },
		{ "*.example.com", 0, NULL },
		{ "b\xc3\xbc"
		  "cher.example",
		  0, NULL },
		{ "example.com\r\n", 0, NULL },
	};
	struct pb *p = pb_new();
	struct sl_client_hello ch;
	struct {
		const char *name;
		size_t n;
		const char *want;
	} cases[sizeof(fixed) / sizeof(fixed[0]) + 5];
	size_t nc = 0;

	(void)state;
	memset(l63, 'a', 63);
	memset(l64, 'a', 64);
	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
	snprintf(n253, sizeof(n253), "%s.%s.%s.%.*s", l63, l63, l63, 61, l63);
	snprintf(n254, sizeof(n254), "%s.%s.%s.%.*s", l63, l63, l63, 62, l63);
	snprintf(n254dot, sizeof(n254dot), "%s.", n253);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		cases[nc].name = fixed[i].name;
		cases[nc].n = fixed[i].n ? fixed[i].n : strlen(fixed[i].name);
		cases[nc++].want = fixed[i].want;
	}
	cases[nc].name = l63, cases[nc].n = 63, cases[nc++].want = l63;
	cases[nc].name = l64, cases[nc].n = 64, cases[nc++].want = NULL;
	cases[nc].name = n253, cases[nc].n = 253, cases[nc++].want = n253;
	cases[nc].name = n254, cases[nc].n = 254, cases[nc++].want = NULL;
	cases[nc].name = n254dot, cases[nc].n = 254, cases[nc++].want = n253;

	for (size_t i = 0; i < nc; i++) {
		int r;

		hb_start(p, 1);
		hb_sni(p, cases[i].name, cases[i].n);
		hb_finish(p);
		r = parse(p->b, p->n, &ch);
		if (r || !ch.sni_present || ch.sni_ok != !!cases[i].want ||
		    strcmp(ch.sni, cases[i].want ? cases[i].want : ""))
			fail_msg("case %zu (%.*s): %d, present %d ok %d \"%s\"", i, (int)cases[i].n,
				 cases[i].name, r, ch.sni_present, ch.sni_ok, ch.sni);
		/* the CA mints a leaf for every name accepted here */
		if (ch.sni_ok)
			assert_true(sl_ca_name_ok(ch.sni));
	}

	/* framing: an empty name, an empty list, another name type, two names, no data */
	hb_start(p, 1);
	hb_sni(p, "", 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	hb_start(p, 1);
	hb_ext(p, 0, "\x00\x00", 2);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	hb_start(p, 1);
	hb_ext(p, 0, "\x00\x04\x01\x00\x01x", 6);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	hb_start(p, 1);
	hb_ext(p, 0, "\x00\x08\x00\x00\x01x\x00\x00\x01y", 10);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	hb_start(p, 1);
	hb_ext(p, 0, "", 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	free(p);
}

static void test_alpn(void **state)
{
	static const struct {
		const char *wire;
		size_t n;
		int want; /* bits, or -errno */
	} cases[] = {
		{ "\x02h2", 3, SL_TLS_ALPN_H2 },
		{ "\x08http/1.1", 9, SL_TLS_ALPN_HTTP11 },
		{ "\x08http/1.0", 9, SL_TLS_ALPN_HTTP10 },
		{ "\x08http/1.1\x02h2", 12, SL_TLS_ALPN_HTTP11 | SL_TLS_ALPN_H2 },
		{ "\x02h3\x03"
		  "dot",
		  7, SL_TLS_ALPN_OTHER },
		{ "\x03h2c", 4, SL_TLS_ALPN_OTHER },
		{ "\x02H2", 3, SL_TLS_ALPN_OTHER },
		{ "\x09http/1.11", 10, SL_TLS_ALPN_OTHER },
		{ "\x02\x0a\x0a\x02h2", 6, SL_TLS_ALPN_OTHER | SL_TLS_ALPN_H2 },
		{ "\x02h2\x00", 4, -EINVAL },
		{ "\x00\x02h2", 4, -EINVAL },
		{ "\x02h", 2, -EINVAL },
		{ "", 0, -EINVAL },
	};
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;

		hb_start(p, 1);
		hb_alpn(p, cases[i].wire, cases[i].n);
		hb_finish(p);
		r = parse(p->b, p->n, &ch);
		if (cases[i].want < 0)
			assert_int_equal(r, cases[i].want);
		else if (r || !ch.alpn_present || ch.alpn != cases[i].want)
			fail_msg("case %zu: %d, alpn %#x", i, r, ch.alpn);
	}
	hb_start(p, 1);
	hb_ext(p, 16, "", 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	free(p);
}

static void test_supported_versions(void **state)
{
	static const struct {
		uint16_t v[4];
		size_t n;
		int tls13;
	} cases[] = {
		{ { 0x0304, 0x0303 }, 2, 1 },	      { { 0x0304 }, 1, 1 },
		{ { 0x0303, 0x0302 }, 2, 0 },	      { { 0x7f1c }, 1, 0 }, /* a TLS 1.3 draft */
		{ { 0x3a3a, 0x0304, 0x0303 }, 3, 1 }, /* GREASE first */
	};
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hb_start(p, 1);
		hb_versions(p, cases[i].v, cases[i].n);
		hb_finish(p);
		assert_int_equal(parse(p->b, p->n, &ch), 0);
		assert_int_equal(ch.tls13, cases[i].tls13);
	}
	hb_start(p, 1);
	hb_versions(p, NULL, 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	hb_start(p, 1);
	hb_ext(p, 43, "\x03\x03\x04\x03", 4);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	/* a ServerHello's form (one version, no list) in a ClientHello */
	hb_start(p, 1);
	hb_ext(p, 43, "\x03\x04", 2);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);
	free(p);
}

static void test_ech(void **state)
{
	static const uint8_t ech_outer[] = {
		0x00, /* outer */
		0x00, 0x01, 0x00, 0x01, /* HKDF-SHA256, AES-128-GCM */
		0x42, /* config_id */
		0x00, 0x04, 0xde, 0xad, 0xbe, 0xef, /* enc */
		0x00, 0x03, 0x01, 0x02, 0x03, /* payload */
	};
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	hb_start(p, 1);
	hb_sni(p, "public.example", 14);
	hb_ext(p, 0xfe0d, ech_outer, sizeof(ech_outer));
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.ech, 1);
	assert_int_equal(ch.sni_ok, 1);
	assert_string_equal(ch.sni, "public.example");

	/* the draft ESNI, which went without a clear SNI */
	hb_start(p, 1);
	hb_ext(p, 0xffce, "\x13\x01\x00\x1d", 4);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.ech, 1);
	assert_int_equal(ch.sni_present, 0);

	/* neighbouring code points are not ECH */
	hb_start(p, 1);
	hb_ext(p, 0xfe0c, "", 0);
	hb_ext(p, 0xfe0e, "", 0);
	hb_ext(p, 0xfd00, "", 0); /* ech_outer_extensions, inner hellos only */
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.ech, 0);

	/* OpenSSL's client sends no ECH */
	openssl_hello(p, 0, "www.example.com", ALPN_H2_H11);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.ech, 0);
	free(p);
}

static void test_no_extensions(void **state)
{
	struct pb *p = pb_new();
	struct sl_client_hello ch;

	(void)state;
	hb_start(p, 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.len, p->n);
	assert_int_equal(ch.sni_present + ch.sni_ok + ch.alpn_present + ch.alpn + ch.tls13 + ch.ech,
			 0);
	assert_string_equal(ch.sni, "");
	/* one byte of an extension block is not one */
	pb_u8(p, 0);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	hb_start(p, 1);
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);

	/* no session id; an empty handshake body */
	hb_start(p, 0);
	memmove(p->b + OFF_SID + 1, p->b + OFF_SID + 33, p->n - OFF_SID - 33);
	p->b[OFF_SID] = 0;
	p->n -= 32;
	hb_finish(p);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(parse((const uint8_t *)"\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9, &ch),
			 -EINVAL);
	free(p);
}

/* Adds a padding extension (21) that brings the message to @mlen bytes, header included. */
static void pad_to(struct pb *p, size_t mlen)
{
	static uint8_t zeros[SL_TLS_HELLO_MAX];
	size_t cur = p->n - 5;

	assert_true(mlen >= cur + 4);
	hb_ext(p, 21, zeros, mlen - cur - 4);
	hb_finish(p);
	assert_int_equal(p->n - 5, mlen);
}

static void test_size_limits(void **state)
{
	struct pb *p = pb_new(), *f = pb_new();
	struct sl_client_hello ch;

	(void)state;
	/* the largest hello, in one record and in two */
	hb_standard(p, NULL);
	pad_to(p, SL_TLS_HELLO_MAX);
	assert_int_equal(parse(p->b, p->n, &ch), 0);
	assert_int_equal(ch.len, SL_TLS_HELLO_MAX + 5);
	assert_string_equal(ch.sni, "www.example.com");
	fragment(p, 8192, f);
	assert_int_equal(parse(f->b, f->n, &ch), 0);
	assert_int_equal(ch.len, SL_TLS_HELLO_MAX + 10);

	/* one byte more: known to be too big from the handshake header on */
	pb_set(p, OFF_HS, 3, SL_TLS_HELLO_MAX - 4 + 1);
	assert_int_equal(parse(p->b, 9, &ch), -EMSGSIZE);
	assert_int_equal(parse(p->b, 8, &ch), -EAGAIN);
	pb_set(p, OFF_HS, 3, 0xffffff);
	assert_int_equal(parse(p->b, p->n, &ch), -EMSGSIZE);

	/* a record longer than 2^14 */
	hb_standard(p, NULL);
	pb_set(p, OFF_REC, 2, SL_TLS_RECORD_MAX + 1);
	assert_int_equal(parse(p->b, p->n, &ch), -EINVAL);

	/* 4000 bytes in 1-byte records: 24000 stream bytes, more than SL_TLS_PEEK_MAX */
	hb_standard(p, NULL);
	pad_to(p, 4000);
	fragment(p, 1, f);
	assert_int_equal(f->n, 24000);
	assert_int_equal(parse(f->b, f->n, &ch), -EMSGSIZE);
	for (size_t n = SL_TLS_PEEK_MAX - 64; n <= f->n; n++) {
		int r = parse(f->b, n, &ch);

		assert_true(r == -EMSGSIZE || (r == -EAGAIN && n < SL_TLS_PEEK_MAX));
	}
	/* 3000 bytes the same way fit */
	hb_standard(p, NULL);
	pad_to(p, 3000);
	fragment(p, 1, f);
	assert_int_equal(parse(f->b, f->n, &ch), 0);
	assert_int_equal(ch.len, 18000);

	/* a peek of SL_TLS_PEEK_MAX bytes always gets an answer, whatever the framing */
	for (size_t k = 1; k <= 64; k++) {
		size_t mlen = (SL_TLS_PEEK_MAX + 1000 * (k % 3)) * k / (k + 5);

		hb_standard(p, NULL);
		pad_to(p, mlen < SL_TLS_HELLO_MAX ? mlen : SL_TLS_HELLO_MAX);
		fragment(p, k, f);
		if (f->n >= SL_TLS_PEEK_MAX)
			assert_int_not_equal(parse(f->b, SL_TLS_PEEK_MAX, &ch), -EAGAIN);
		else
			assert_int_equal(parse(f->b, f->n, &ch), 0);
	}
	free(p);
	free(f);
}

/*
 * The offset in @msg (a ClientHello message, header included, whose framing the module
 * accepted) of the data of extension @type, and its length in *@len; 0 when there is none.
 * Written apart from the module, trusting only the framing it checked.
 */
static size_t ext_at(const uint8_t *msg, size_t mlen, uint16_t type, size_t *len)
{
	size_t i = 4 + 2 + 32; /* header, legacy_version, random */

	i += 1 + msg[i];
	i += 2 + ((size_t)msg[i] << 8 | msg[i + 1]);
	i += 1 + msg[i];
	if (i == mlen)
		return 0;
	for (i += 2; i + 4 <= mlen; i += 4 + *len) {
		*len = (size_t)msg[i + 2] << 8 | msg[i + 3];
		if ((msg[i] << 8 | msg[i + 1]) == type)
			return i + 4;
	}
	return 0;
}

/* Whether the hello accepted at @b (@n bytes, any number of records) carries @type. */
static int hello_has_ext(const uint8_t *b, size_t n, uint16_t type)
{
	static uint8_t msg[SL_TLS_HELLO_MAX];
	size_t m = 0, need = 4, len;

	for (size_t pos = 0; m < need; pos += 5) {
		size_t rl = (size_t)b[pos + 3] << 8 | b[pos + 4];

		assert_true(pos + 5 + rl <= n && m + rl <= sizeof(msg));
		memcpy(msg + m, b + pos + 5, rl);
		m += rl;
		pos += rl;
		if (m >= 4)
			need = 4 + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]);
	}
	return ext_at(msg, need, type, &len) != 0;
}

/* Replaces the random parts of the one-record OpenSSL hello @p (client random, session id,
 * an X25519 key share) with fixed bytes, so that the mutations of a run can be replayed. */
static void pin_randomness(struct pb *p)
{
	uint8_t *msg = p->b + 5;
	size_t off, len;

	assert_int_equal(pb_get(p, OFF_REC, 2), p->n - 5);
	memset(msg + 6, 0x5a, 32);
	memset(msg + 39, 0xa5, msg[38]);
	off = ext_at(msg, p->n - 5, 51, &len);
	if (off && len == 2 + 2 + 2 + 32)
		memset(msg + off + 6, 0x33, 32);
}

/*
 * OpenSSL's server parses whatever is accepted here, and reads the same name. One exception:
 * OpenSSL refuses use_srtp (14) outside DTLS (RFC 5764), which is its policy, not framing.
 */
/* Counts of check_against_openssl() */
struct diff_stats {
	size_t accepted; /* accepted here and given to OpenSSL */
	size_t srtp; /* ... refused by OpenSSL for use_srtp */
	size_t named; /* ... on which OpenSSL got as far as the server name: all agree */
};

static void check_against_openssl(const uint8_t *b, size_t n, int r,
				  const struct sl_client_hello *ch, struct diff_stats *st)
{
	openssl_read(b, n);
	if (r)
		return;
	st->accepted++;
	/* whatever is accepted here parses in OpenSSL too */
	if (!peer.hello_seen) {
		if (hello_has_ext(b, n, 14)) {
			st->srtp++;
			return;
		}
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "%02x%s", b[i], i % 32 == 31 ? "\n" : "");
		fail_msg("accepted here, refused by OpenSSL (%zu bytes): %s", n, peer.err);
	}
	if (!peer.exts_seen)
		return;
	if (ch->sni_ok) {
		size_t l = strlen(peer.sni);

		assert_true(peer.has_sni);
		if (l && peer.sni[l - 1] == '.')
			peer.sni[--l] = 0;
		if (strcasecmp(peer.sni, ch->sni))
			fail_msg("SNI: here \"%s\", OpenSSL \"%s\"", ch->sni, peer.sni);
	} else if (!ch->sni_present) {
		assert_false(peer.has_sni);
	}
	st->named++;
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
	int k = 1 + rnd() % 3;

	for (int i = 0; i < k && n; i++) {
		size_t at = rnd() % n, len;

		switch (rnd() % 8) {
		case 0:
			b[at] = (uint8_t)rnd();
			break;
		case 1:
			b[at] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 2: /* a length nudged */
			b[at] += rnd() % 2 ? 1 : 0xff;
			break;
		case 3:
			n = at;
			break;
		case 4: /* a byte inserted */
			if (n < cap) {
				memmove(b + at + 1, b + at, n - at);
				b[at] = (uint8_t)rnd();
				n++;
			}
			break;
		case 5: /* a byte removed */
			memmove(b + at, b + at + 1, n - at - 1);
			n--;
			break;
		case 6: /* a small 16-bit field: lengths, extension types */
			if (at + 1 < n) {
				b[at] = 0;
				b[at + 1] = (uint8_t)(rnd() % 48);
			}
			break;
		case 7: /* a run of bytes repeated: extensions twice, sometimes */
			len = 1 + rnd() % 48;
			if (at + len <= n && n + len <= cap) {
				size_t to = rnd() % (n + 1);

				memmove(b + to + len, b + to, n - to);
				memmove(b + to, b + at + (to <= at ? len : 0), len);
				n += len;
			}
			break;
		}
	}
	return n;
}

/* Properties that hold for any input. */
static void fuzz_one(const uint8_t *b, size_t n, int *res, struct diff_stats *st)
{
	struct sl_client_hello ch, again;
	int r, s;

	r = parse(b, n, &ch);
	s = sniff(b, n);
	assert_true(s == SL_SNIFF_TLS || s == SL_SNIFF_HTTP || s == -EAGAIN || s == -EPROTO);
	if (n >= SL_SNIFF_MAX)
		assert_int_not_equal(s, -EAGAIN);
	switch (r) {
	case 0:
		res[0]++;
		assert_int_equal(s, SL_SNIFF_TLS);
		/* version, random, empty session id, one suite, one compression method */
		assert_true(ch.len >= 5 + 4 + 2 + 32 + 1 + 4 + 2 && ch.len <= n);
		assert_true(strlen(ch.sni) <= 253);
		assert_true(ch.sni_present || !ch.sni_ok);
		assert_true(ch.sni_ok || !ch.sni[0]);
		if (ch.sni_ok) {
			assert_true(sl_ca_name_ok(ch.sni));
			for (const char *c = ch.sni; *c; c++)
				assert_false(*c >= 'A' && *c <= 'Z');
		}
		assert_true(!(ch.alpn & ~0xf) && (ch.alpn_present || !ch.alpn));
		/* the hello is exactly ch.len bytes: one less is a prefix */
		assert_int_equal(parse(b, ch.len, &again), 0);
		assert_same_hello(&again, &ch);
		assert_int_equal(parse(b, ch.len - 1, &again), -EAGAIN);
		break;
	case -EAGAIN:
		res[1]++;
		assert_true(n < SL_TLS_PEEK_MAX);
		/* and so is every shorter prefix */
		assert_int_equal(parse(b, rnd() % (n + 1), &again), -EAGAIN);
		break;
	case -EINVAL:
		res[2]++;
		break;
	case -EPROTO:
		res[3]++;
		break;
	case -EMSGSIZE:
		res[4]++;
		break;
	default:
		fail_msg("unexpected %d", r);
	}
	if (st)
		check_against_openssl(b, n, r, &ch, st);
}

static void test_fuzz(void **state)
{
	enum { NSEED = 9, ROUNDS = 200000 };
	struct pb *seeds[NSEED], *buf = pb_new();
	int res[5] = { 0 };
	struct diff_stats st = { 0 };

	(void)state;
	for (int i = 0; i < NSEED; i++)
		seeds[i] = pb_new();
	openssl_hello(seeds[0], 0, "www.example.com", ALPN_H2_H11);
	openssl_hello(seeds[1], TLS1_2_VERSION, "www.example.com", ALPN_H11);
	openssl_hello(seeds[2], 0, NULL, NULL);
	openssl_hello(seeds[3], TLS1_2_VERSION, "Mixed.Case.example.", ALPN_H2_H11);
	for (int i = 0; i < 4; i++)
		pin_randomness(seeds[i]);
	fragment(seeds[0], 50, seeds[4]);
	fragment(seeds[1], 3, seeds[5]);
	hb_standard(seeds[6], NULL);
	hb_start(seeds[7], 1);
	hb_sni(seeds[7], "public.example", 14);
	hb_ext(seeds[7], 0xfe0d, "\x00\x00\x01\x00\x01\x42\x00\x01\x00\x00\x01\x00", 12);
	hb_alpn(seeds[7], "\x02h3\x08http/1.0", 12);
	hb_finish(seeds[7]);
	hb_start(seeds[8], 0);
	hb_finish(seeds[8]);

	for (int i = 0; i < ROUNDS; i++) {
		const struct pb *s = seeds[rnd() % NSEED];

		memcpy(buf->b, s->b, s->n);
		buf->n = mutate(buf->b, s->n, s->n + 256);
		/* OpenSSL's server costs more: every fourth input */
		fuzz_one(buf->b, buf->n, res, i % 4 ? NULL : &st);
	}
	print_message("%d mutations: %d accepted, %d need more, %d malformed, %d not a hello, "
		      "%d too big\n",
		      ROUNDS, res[0], res[1], res[2], res[3], res[4]);
	print_message("OpenSSL's server: %zu accepted here, all parsed there but %zu with "
		      "use_srtp; %zu got as far as the server name, the same one\n",
		      st.accepted, st.srtp, st.named);
	assert_true(res[0] > ROUNDS / 20 && res[1] > 0 && res[2] > ROUNDS / 20 && res[3] > 0);
	assert_true(st.named > st.accepted / 2);
	for (int i = 0; i < NSEED; i++)
		free(seeds[i]);
	free(buf);
}

static int teardown(void **state)
{
	(void)state;
	SSL_CTX_free(server_ctx);
	server_ctx = NULL;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sniff),
		cmocka_unit_test(test_openssl_hellos),
		cmocka_unit_test(test_openssl_names),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_fragmented),
		cmocka_unit_test(test_not_a_client_hello),
		cmocka_unit_test(test_length_off_by_one),
		cmocka_unit_test(test_duplicate_extensions),
		cmocka_unit_test(test_sni_names),
		cmocka_unit_test(test_alpn),
		cmocka_unit_test(test_supported_versions),
		cmocka_unit_test(test_ech),
		cmocka_unit_test(test_no_extensions),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, teardown);
}
