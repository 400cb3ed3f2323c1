/* SPDX-License-Identifier: MIT */
/* Content codings for secret masking: what a response is encoded with, stream decoding of
 * gzip and deflate with bounded memory, and the Accept-Encoding sluice can honour (mask.c).
 * Threading: any thread, each decoder owned by its caller (no shared state); nothing here
 * blocks. */
#ifndef SL_MASK_H
#define SL_MASK_H

#include <stddef.h>
#include <sys/types.h>

#include <zlib.h>

#include "core/buf.h"

enum sl_coding {
	SL_CODING_IDENTITY, /* none, or "identity" */
	SL_CODING_GZIP, /* gzip, x-gzip (RFC 9110 section 8.4.1.3) */
	SL_CODING_DEFLATE, /* deflate: zlib-wrapped (RFC 9110 8.4.1.2), or raw as some send */
	SL_CODING_OTHER, /* br, zstd, compress, several codings stacked, anything unknown */
};

/* The coding of a Content-Encoding value (NULL: identity). */
enum sl_coding sl_coding_of(const char *content_encoding);

/*
 * A streaming decoder. Input is appended to @in as it arrives; sl_inflate_run() turns it into
 * at most @max bytes of output per call, so that a decompression bomb costs one 32 KiB window
 * and what the caller lets through, never its expanded size. Concatenated gzip members are
 * decoded one after the other; bytes after the end of a deflate stream are dropped.
 */
struct sl_inflate {
	z_stream z;
	enum sl_coding coding;
	int started; /* inflateInit2 ran (deflate: once the header told zlib from raw) */
	int ended; /* a stream (member) ended and no byte followed yet */
	int more; /* the last run filled its output: zlib may hold more */
	int stuck; /* the last run needs more input than there is to go on */
	struct sl_buf in;
};

/* @coding is SL_CODING_GZIP or SL_CODING_DEFLATE. 0 or -EINVAL. */
int sl_inflate_init(struct sl_inflate *d, enum sl_coding coding);
/* Appends @len encoded bytes. 0 or -ENOMEM. */
int sl_inflate_feed(struct sl_inflate *d, const void *p, size_t len);
/* Decodes into @out (at most @max bytes): returns the bytes produced, or -EINVAL for data
 * that is not what the coding says, -ENOMEM. */
ssize_t sl_inflate_run(struct sl_inflate *d, char *out, size_t max);
/* Whether a run would produce more now: output left over, or input not yet decoded. */
int sl_inflate_pending(const struct sl_inflate *d);
/* Whether what was fed ends where a stream ends (a truncated body does not). */
int sl_inflate_complete(const struct sl_inflate *d);
/* Frees the stream; accepts a zeroed or freed decoder. */
void sl_inflate_free(struct sl_inflate *d);

/*
 * The Accept-Encoding to send upstream for the client's @value: its list with only the codings sluice can decode kept (gzip, x-gzip, deflate,
 * identity and their q-values); "identity" when nothing is left. Returns 0, or -ENOSPC.
 */
int sl_accept_encoding(const char *value, char *out, size_t len);

#endif
