// SPDX-License-Identifier: MIT
/* WebSocket frames from an upstream, masked: payloads only, across fragments, reads and
 * control frames in between; frames a server must not send are refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/ws.h"

#define SECRET "SECRET-0123456789"
#define SLEN (sizeof(SECRET) - 1)

static void mask_fn(void *arg, char *p, size_t n)
{
	char *q = p;

	(void)arg;
	while ((size_t)(p + n - q) >= SLEN && (q = memmem(q, p + n - q, SECRET, SLEN))) {
		memset(q, '*', SLEN);
		q += SLEN;
	}
}

/* A server frame (unmasked) into @out; returns its length. */
static size_t frame(unsigned char *out, int fin, int op, const char *p, size_t n)
{
	size_t h = 2;

	out[0] = (unsigned char)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		out[1] = (unsigned char)n;
	} else {
		out[1] = 126;
		out[2] = (unsigned char)(n >> 8);
		out[3] = (unsigned char)n;
		h = 4;
	}
	memcpy(out + h, p, n);
	return h + n;
}

/* Feeds @in in pieces of @piece bytes; returns everything that came out, flushed. */
static struct sl_buf run(const unsigned char *in, size_t n, size_t piece)
{
	struct sl_ws_mask w = { 0 };
	struct sl_buf out = { 0 };

	for (size_t off = 0; off < n; off += piece) {
		size_t k = n - off < piece ? n - off : piece;

		assert_int_equal(sl_ws_mask_feed(&w, (const char *)in + off, k, SLEN - 1, mask_fn,
						 NULL, &out),
				 0);
	}
	assert_int_equal(sl_ws_mask_flush(&w, mask_fn, NULL, &out), 0);
	sl_ws_mask_free(&w);
	return out;
}

static void test_payloads_masked_heads_kept(void **state)
{
	unsigned char in[4096], want[4096];
	char big[600];
	size_t n = 0, wn = 0;

	(void)state;
	memset(big, 'x', sizeof(big));
	memcpy(big + 290, SECRET, SLEN);
	n += frame(in + n, 1, 1, "token " SECRET, 6 + SLEN);
	n += frame(in + n, 1, 2, big, sizeof(big));
	/* a message in two fragments, the secret cut between them, a ping in between */
	n += frame(in + n, 0, 1, "frag SECRET-01", 14);
	n += frame(in + n, 1, 9, "ping", 4);
	n += frame(in + n, 1, 0, "23456789 end", 12);
	n += frame(in + n, 1, 8,
		   "\x03\xe8"
		   "bye " SECRET,
		   6 + SLEN);

	memset(big + 290, '*', SLEN);
	wn += frame(want + wn, 1, 1, "token *****************", 6 + SLEN);
	wn += frame(want + wn, 1, 2, big, sizeof(big));
	wn += frame(want + wn, 0, 1, "frag *********", 14);
	wn += frame(want + wn, 1, 9, "ping", 4);
	wn += frame(want + wn, 1, 0, "******** end", 12);
	wn += frame(want + wn, 1, 8,
		    "\x03\xe8"
		    "bye *****************",
		    6 + SLEN);
	assert_int_equal(n, wn);
	for (size_t piece = 1; piece <= n; piece = piece * 3 + 1) {
		struct sl_buf out = run(in, n, piece);

		assert_int_equal(sl_buf_size(&out), wn);
		assert_memory_equal(sl_buf_head(&out), want, wn);
		sl_buf_free(&out);
	}
}

static void test_ended_message_goes_out_at_once(void **state)
{
	struct sl_ws_mask w = { 0 };
	struct sl_buf out = { 0 };
	unsigned char in[64];
	size_t n = frame(in, 1, 1, "hello world, no secret here", 27);

	(void)state;
	/* Whole: nothing held, the client can answer it. */
	assert_int_equal(sl_ws_mask_feed(&w, (char *)in, n, SLEN - 1, mask_fn, NULL, &out), 0);
	assert_int_equal(sl_buf_size(&out), n);
	/* A frame still arriving: all but the last (keep) payload bytes go. */
	n = frame(in, 1, 1, "0123456789abcdefghijklmnopqrstuvwxyz", 36);
	assert_int_equal(sl_ws_mask_feed(&w, (char *)in, 30, SLEN - 1, mask_fn, NULL, &out), 0);
	assert_int_equal(sl_buf_size(&out), 29 + 2 + (28 - (SLEN - 1)));
	assert_int_equal(
		sl_ws_mask_feed(&w, (char *)in + 30, n - 30, SLEN - 1, mask_fn, NULL, &out), 0);
	assert_int_equal(sl_buf_size(&out), 29 + 38);
	sl_buf_free(&out);
	sl_ws_mask_free(&w);
}

static void test_frames_a_server_must_not_send(void **state)
{
	static const struct {
		const char *bytes;
		size_t n;
	} bad[] = {
		{ "\x81\x85"
		  "abcd"
		  "hello",
		  11 }, /* masked */
		{ "\xc1\x05"
		  "hello",
		  7 }, /* RSV1: compressed, never negotiated */
		{ "\x09\x05"
		  "hello",
		  7 }, /* a fragmented ping */
		{ "\x89\x7e\x00\x80", 4 }, /* a ping of 128 bytes */
		{ "\x83\x00", 2 }, /* reserved opcode */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sl_ws_mask w = { 0 };
		struct sl_buf out = { 0 };

		assert_int_equal(sl_ws_mask_feed(&w, bad[i].bytes, bad[i].n, 4, mask_fn, NULL,
						 &out),
				 -EPROTO);
		sl_buf_free(&out);
		sl_ws_mask_free(&w);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_payloads_masked_heads_kept),
		cmocka_unit_test(test_ended_message_goes_out_at_once),
		cmocka_unit_test(test_frames_a_server_must_not_send),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
