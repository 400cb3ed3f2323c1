// SPDX-License-Identifier: MIT
/* Content codings for masking: gzip and deflate decoded in bounded steps (bombs included),
 * unknown codings named, Accept-Encoding cut to what sluice decodes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "http/mask.h"

/* @n bytes of @in compressed with zlib window bits @bits (31 gzip, 15 zlib, -15 raw). */
static unsigned char *squeeze(const void *in, size_t n, int bits, size_t *outlen)
{
	z_stream z = { 0 };
	size_t cap = compressBound(n) + 64;
	unsigned char *out = malloc(cap);

	assert_non_null(out);
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, bits, 9, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = n;
	z.next_out = out;
	z.avail_out = cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	*outlen = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

/* Decodes @enc fed in pieces of @piece bytes, runs of at most @step bytes out; the output
 * must be @want. */
static void roundtrip(enum sl_coding coding, const unsigned char *enc, size_t n, size_t piece,
		      size_t step, const char *want, size_t wantlen)
{
	struct sl_inflate d;
	char *got = malloc(wantlen + 1), *buf = malloc(step);
	size_t have = 0;

	assert_int_equal(sl_inflate_init(&d, coding), 0);
	for (size_t off = 0; off < n; off += piece) {
		size_t k = n - off < piece ? n - off : piece;
		ssize_t r;

		assert_int_equal(sl_inflate_feed(&d, enc + off, k), 0);
		do {
			r = sl_inflate_run(&d, buf, step);
			assert_true(r >= 0);
			assert_true(have + r <= wantlen);
			memcpy(got + have, buf, r);
			have += r;
		} while (sl_inflate_pending(&d));
	}
	assert_int_equal(have, wantlen);
	assert_memory_equal(got, want, wantlen);
	assert_true(sl_inflate_complete(&d));
	sl_inflate_free(&d);
	free(got);
	free(buf);
}

static void test_codings_named(void **state)
{
	(void)state;
	assert_int_equal(sl_coding_of(NULL), SL_CODING_IDENTITY);
	assert_int_equal(sl_coding_of(" identity "), SL_CODING_IDENTITY);
	assert_int_equal(sl_coding_of("GZIP"), SL_CODING_GZIP);
	assert_int_equal(sl_coding_of("x-gzip"), SL_CODING_GZIP);
	assert_int_equal(sl_coding_of("deflate"), SL_CODING_DEFLATE);
	assert_int_equal(sl_coding_of("br"), SL_CODING_OTHER);
	assert_int_equal(sl_coding_of("zstd"), SL_CODING_OTHER);
	assert_int_equal(sl_coding_of("gzip, gzip"), SL_CODING_OTHER);
	assert_int_equal(sl_coding_of("gzip2"), SL_CODING_OTHER);
}

static void test_gzip_deflate_raw_roundtrip(void **state)
{
	static const char secret[] = "token=abcd1234abcd-the-secret";
	char text[20000];
	unsigned char *g, *z, *r;
	size_t gn, zn, rn;

	(void)state;
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "abcdefghij"[i % 10] + (i / 1000) % 7;
	memcpy(text + 9000, secret, sizeof(secret) - 1);
	g = squeeze(text, sizeof(text), 31, &gn);
	z = squeeze(text, sizeof(text), 15, &zn);
	r = squeeze(text, sizeof(text), -15, &rn);
	for (size_t piece = 1; piece <= 4096; piece *= 8) {
		roundtrip(SL_CODING_GZIP, g, gn, piece, 777, text, sizeof(text));
		roundtrip(SL_CODING_DEFLATE, z, zn, piece, 16384, text, sizeof(text));
		roundtrip(SL_CODING_DEFLATE, r, rn, piece, 3, text, sizeof(text));
	}
	free(g);
	free(z);
	free(r);
}

static void test_gzip_members_concatenated(void **state)
{
	size_t an, bn;
	unsigned char *a = squeeze("hello ", 6, 31, &an), *b = squeeze("world", 5, 31, &bn);
	unsigned char *both = malloc(an + bn);

	(void)state;
	memcpy(both, a, an);
	memcpy(both + an, b, bn);
	roundtrip(SL_CODING_GZIP, both, an + bn, 5, 4, "hello world", 11);
	free(a);
	free(b);
	free(both);
}

static void test_corrupt_and_truncated(void **state)
{
	struct sl_inflate d;
	char out[256];
	size_t n;
	unsigned char *g = squeeze("some text to squeeze, some text", 31, 31, &n);

	(void)state;
	assert_int_equal(sl_inflate_init(&d, SL_CODING_GZIP), 0);
	assert_int_equal(sl_inflate_feed(&d, "not gzip at all, not at all", 27), 0);
	assert_int_equal(sl_inflate_run(&d, out, sizeof(out)), -EINVAL);
	sl_inflate_free(&d);
	/* Cut short: decodes what it can, and says the stream did not end. */
	assert_int_equal(sl_inflate_init(&d, SL_CODING_GZIP), 0);
	assert_int_equal(sl_inflate_feed(&d, g, n - 6), 0);
	assert_true(sl_inflate_run(&d, out, sizeof(out)) >= 0);
	assert_false(sl_inflate_complete(&d));
	sl_inflate_free(&d);
	sl_inflate_free(&d); /* twice: harmless */
	assert_int_equal(sl_inflate_init(&d, SL_CODING_OTHER), -EINVAL);
	free(g);
}

/* 256 MiB of zeros squeeze into about 256 KiB: decoding never holds more than a run's
 * output, however far it goes. */
static void test_bomb_is_decoded_in_bounded_steps(void **state)
{
	const size_t total = 256u << 20, chunk = 1u << 20;
	char *zeros = calloc(1, chunk), out[16384];
	z_stream z = { 0 };
	unsigned char *enc = malloc(1u << 20);
	size_t encn, got = 0, runs = 0;
	struct sl_inflate d;

	(void)state;
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_out = enc;
	z.avail_out = 1u << 20;
	for (size_t i = 0; i < total / chunk; i++) {
		z.next_in = (unsigned char *)zeros;
		z.avail_in = chunk;
		assert_int_equal(deflate(&z, i + 1 == total / chunk ? Z_FINISH : Z_NO_FLUSH),
				 i + 1 == total / chunk ? Z_STREAM_END : Z_OK);
	}
	encn = (1u << 20) - z.avail_out;
	deflateEnd(&z);
	assert_true(encn < total / 500);
	assert_int_equal(sl_inflate_init(&d, SL_CODING_GZIP), 0);
	assert_int_equal(sl_inflate_feed(&d, enc, encn), 0);
	do {
		ssize_t r = sl_inflate_run(&d, out, sizeof(out));

		assert_true(r >= 0 && (size_t)r <= sizeof(out));
		got += r;
		runs++;
	} while (sl_inflate_pending(&d) && runs < 100000);
	assert_int_equal(got, total);
	assert_true(sl_inflate_complete(&d));
	/* What the decoder holds is the compressed input, never the output. */
	assert_true(d.in.cap <= encn + 4096);
	sl_inflate_free(&d);
	free(zeros);
	free(enc);
}

static void test_accept_encoding_cut(void **state)
{
	char out[256];

	(void)state;
	assert_int_equal(sl_accept_encoding("gzip, deflate, br, zstd", out, sizeof(out)), 0);
	assert_string_equal(out, "gzip, deflate");
	assert_int_equal(sl_accept_encoding("br;q=1.0, gzip;q=0.8, *;q=0.1", out, sizeof(out)), 0);
	assert_string_equal(out, "gzip;q=0.8");
	assert_int_equal(sl_accept_encoding("br", out, sizeof(out)), 0);
	assert_string_equal(out, "identity");
	assert_int_equal(sl_accept_encoding("", out, sizeof(out)), 0);
	assert_string_equal(out, "identity");
	assert_int_equal(sl_accept_encoding(" X-GZIP ,identity;q=0", out, sizeof(out)), 0);
	assert_string_equal(out, "X-GZIP, identity;q=0");
	assert_int_equal(sl_accept_encoding("gzip, deflate", out, 6), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codings_named),
		cmocka_unit_test(test_gzip_deflate_raw_roundtrip),
		cmocka_unit_test(test_gzip_members_concatenated),
		cmocka_unit_test(test_corrupt_and_truncated),
		cmocka_unit_test(test_bomb_is_decoded_in_bounded_steps),
		cmocka_unit_test(test_accept_encoding_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
