/* SPDX-License-Identifier: MIT */
/* Masking secrets in the WebSocket frames an upstream sends (see ws.c).
 * Threading: any thread, each struct sl_ws_mask owned by its caller (no shared state); nothing
 * blocks. */
#ifndef SL_WS_H
#define SL_WS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Replaces every secret in @p (@n bytes, frame payload only) by '*'. */
typedef void sl_ws_mask_fn(void *arg, char *p, size_t n);

/*
 * The server-to-client direction of one WebSocket (RFC 6455), parsed frame by frame so that
 * masks apply to payloads only, never to headers, and across frame boundaries of a
 * fragmented message and across reads. Bytes are held back only while a secret could still
 * straddle them: the last (@keep) data bytes of a message whose last fragment has not come
 * (and what follows them), or a control frame still arriving; a frame that ends a message
 * goes out whole at once. Zeroed is ready; loop thread only.
 */
struct sl_ws_mask {
	uint8_t hdr[14]; /* the frame head being read */
	unsigned hlen;
	uint64_t left; /* payload bytes of the current frame still to come */
	int in_payload, ends; /* reading a payload; the current frame ends a message */
	struct sl_buf raw; /* held bytes, heads and payloads as they came */
	struct sl_buf kind; /* one byte per held byte: head, data or control payload */
	size_t boundary; /* raw offset where the last message ended: what precedes may go */
	size_t ctl_start; /* raw offset of the current frame's payload */
};

/* Takes @n bytes from the upstream, appends what may go to the client to @out (masked by
 * @fn). Returns 0, -EPROTO for frames a server must not send (masked, reserved bits without
 * an extension, a fragmented or long control frame), -ENOMEM. */
int sl_ws_mask_feed(struct sl_ws_mask *w, const char *p, size_t n, size_t keep, sl_ws_mask_fn *fn,
		    void *arg, struct sl_buf *out);
/* Everything held (the connection is ending), masked. */
int sl_ws_mask_flush(struct sl_ws_mask *w, sl_ws_mask_fn *fn, void *arg, struct sl_buf *out);
void sl_ws_mask_free(struct sl_ws_mask *w);

#endif
