// SPDX-License-Identifier: MIT
/*
 * WebSocket frames from an upstream, masked. After a 101 the proxy relays raw bytes; on a
 * connection whose handshake carried a secret, an echo endpoint would hand it back inside a
 * frame. Masking the byte stream as such would miss a secret cut by a frame head (fragments,
 * or a long frame's payload read in pieces) and could clobber a head, so the stream is parsed
 * (RFC 6455 section 5.2) and the masks see the payloads alone, joined. Server frames are
 * never masked (5.1) and, with no extension negotiated (the proxy removes the offer), never
 * compressed: anything else is a protocol error and ends the connection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/ws.h"

#define RAW_MAX (128 * 1024) /* held bytes past this go out (zero-length fragment floods) */

/* What each held byte is: the masks see data payloads joined (a message's fragments), and
 * each control frame's payload on its own (a ping may come between two fragments). */
enum { KIND_HEAD, KIND_DATA, KIND_CONTROL };

/* Appends @n bytes of one kind. */
static int hold(struct sl_ws_mask *w, const char *p, size_t n, int payload)
{
	char kinds[256];

	if (sl_buf_append(&w->raw, p, n))
		return -ENOMEM;
	memset(kinds, payload, sizeof(kinds));
	for (size_t done = 0; done < n;) {
		size_t k = n - done < sizeof(kinds) ? n - done : sizeof(kinds);

		if (sl_buf_append(&w->kind, kinds, k))
			return -ENOMEM;
		done += k;
	}
	return 0;
}

static void frame_ended(struct sl_ws_mask *w)
{
	w->in_payload = 0;
	w->hlen = 0;
	if (w->ends)
		w->boundary = sl_buf_size(&w->raw);
}

static int frame_kind(const struct sl_ws_mask *w)
{
	return w->hdr[0] & 0x8 ? KIND_CONTROL : KIND_DATA;
}

/* A complete head in w->hdr: checks it, starts its payload. */
static int head_done(struct sl_ws_mask *w)
{
	uint8_t b0 = w->hdr[0], b1 = w->hdr[1];
	unsigned op = b0 & 0x0f;
	uint64_t len = b1 & 0x7f;
	int fin = !!(b0 & 0x80), control = !!(op & 0x8);

	if (len == 126) {
		len = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
	} else if (len == 127) {
		len = 0;
		for (int i = 2; i < 10; i++)
			len = len << 8 | w->hdr[i];
	}
	if (control && (len > 125 || !fin))
		return -EPROTO;
	if (op > 0xa || (op > 0x2 && op < 0x8))
		return -EPROTO; /* reserved opcodes */
	w->left = len;
	w->ends = fin && !control; /* a message ended (control frames end none) */
	w->in_payload = 1;
	w->ctl_start = sl_buf_size(&w->raw);
	if (!len)
		frame_ended(w);
	return 0;
}

static int parse(struct sl_ws_mask *w, const char *p, size_t n)
{
	while (n) {
		if (w->in_payload) {
			size_t k = w->left < n ? (size_t)w->left : n;

			if (hold(w, p, k, frame_kind(w)))
				return -ENOMEM;
			p += k;
			n -= k;
			w->left -= k;
			if (!w->left)
				frame_ended(w);
			continue;
		}
		w->hdr[w->hlen++] = (uint8_t)*p;
		if (hold(w, p, 1, KIND_HEAD))
			return -ENOMEM;
		p++;
		n--;
		if (w->hlen == 2 && (w->hdr[1] & 0x80 || w->hdr[0] & 0x70))
			return -EPROTO; /* masked by a server, or RSV bits with no extension */
		if (w->hlen >= 2) {
			unsigned l7 = w->hdr[1] & 0x7f;
			unsigned need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);

			if (w->hlen == need) {
				int r = head_done(w);

				if (r)
					return r;
			}
		}
	}
	return 0;
}

/* Masks the held data payload bytes as one run and each control payload on its own, then
 * writes out everything before @cut. */
static int emit(struct sl_ws_mask *w, size_t cut, sl_ws_mask_fn *fn, void *arg, struct sl_buf *out)
{
	char *raw = (char *)sl_buf_head(&w->raw);
	const char *kind = sl_buf_head(&w->kind);
	size_t n = sl_buf_size(&w->raw), np = 0;
	char *pay = NULL;

	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		np += kind[i] == KIND_DATA;
	if (np) {
		size_t j = 0;

		pay = malloc(np);
		if (!pay)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			if (kind[i] == KIND_DATA)
				pay[j++] = raw[i];
		fn(arg, pay, np);
		j = 0;
		for (size_t i = 0; i < n; i++)
			if (kind[i] == KIND_DATA)
				raw[i] = pay[j++];
		free(pay);
	}
	for (size_t i = 0; i < n;) {
		size_t e = i;

		while (e < n && kind[e] == KIND_CONTROL)
			e++;
		if (e > i)
			fn(arg, raw + i, e - i);
		i = e > i ? e : i + 1;
	}
	if (cut && sl_buf_append(out, raw, cut))
		return -ENOMEM;
	sl_buf_consume(&w->raw, cut);
	sl_buf_consume(&w->kind, cut);
	w->boundary = w->boundary > cut ? w->boundary - cut : 0;
	w->ctl_start = w->ctl_start > cut ? w->ctl_start - cut : 0;
	return 0;
}

int sl_ws_mask_feed(struct sl_ws_mask *w, const char *p, size_t n, size_t keep, sl_ws_mask_fn *fn,
		    void *arg, struct sl_buf *out)
{
	const char *kind;
	size_t held, cut, seen = 0;
	int r = parse(w, p, n);

	if (r)
		return r;
	held = sl_buf_size(&w->raw);
	kind = sl_buf_head(&w->kind);
	/* Keep from the first of the last @keep data bytes of the message in progress on (a
	 * secret may straddle them and what comes next); what precedes the end of the last
	 * message goes. A control frame still arriving is kept whole. */
	cut = held;
	for (size_t i = held; i > w->boundary && seen < keep; i--) {
		if (kind[i - 1] == KIND_DATA) {
			seen++;
			cut = i - 1;
		}
	}
	if (w->in_payload && frame_kind(w) == KIND_CONTROL && w->ctl_start < cut)
		cut = w->ctl_start;
	if (held > RAW_MAX)
		cut = held;
	return emit(w, cut, fn, arg, out);
}

int sl_ws_mask_flush(struct sl_ws_mask *w, sl_ws_mask_fn *fn, void *arg, struct sl_buf *out)
{
	return emit(w, sl_buf_size(&w->raw), fn, arg, out);
}

void sl_ws_mask_free(struct sl_ws_mask *w)
{
	sl_buf_free(&w->raw);
	sl_buf_free(&w->kind);
	memset(w, 0, sizeof(*w));
}
