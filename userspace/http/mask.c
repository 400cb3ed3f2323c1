// SPDX-License-Identifier: MIT
/*
 * Content codings, for secret masking. A response to a request whose handler read a secret is
 * masked byte for byte (proxy/px_xchg.c), which only works on the bytes the client will read: a
 * gzip'd echo of the secret matches nothing and is decoded by the client. So the proxy asks
 * upstreams only for codings it can decode (sl_accept_encoding), decodes gzip and deflate
 * responses before masking them (sl_inflate_*, zlib), and refuses the rest. Decoding streams
 * with a bounded output per call: memory never follows a compressed body's expanded size.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/mask.h"

static int ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

enum sl_coding sl_coding_of(const char *v)
{
	size_t n;

	if (!v)
		return SL_CODING_IDENTITY;
	while (ows(*v))
		v++;
	n = strlen(v);
	while (n && ows(v[n - 1]))
		n--;
	if (!n || (n == 8 && !strncasecmp(v, "identity", 8)))
		return SL_CODING_IDENTITY;
	if ((n == 4 && !strncasecmp(v, "gzip", 4)) || (n == 6 && !strncasecmp(v, "x-gzip", 6)))
		return SL_CODING_GZIP;
	if (n == 7 && !strncasecmp(v, "deflate", 7))
		return SL_CODING_DEFLATE;
	/* br, zstd, compress, "gzip, gzip" and whatever else: not decoded here. */
	return SL_CODING_OTHER;
}

int sl_inflate_init(struct sl_inflate *d, enum sl_coding coding)
{
	memset(d, 0, sizeof(*d));
	if (coding != SL_CODING_GZIP && coding != SL_CODING_DEFLATE)
		return -EINVAL;
	d->coding = coding;
	return 0;
}

int sl_inflate_feed(struct sl_inflate *d, const void *p, size_t len)
{
	d->stuck = 0; /* what waited for more input may go on */
	return len ? sl_buf_append(&d->in, p, len) : 0;
}

/* Starts zlib once the first bytes say which framing this is. Returns 1 when started, 0
 * when more bytes are needed, -errno. */
static int start(struct sl_inflate *d)
{
	int bits;

	if (d->coding == SL_CODING_GZIP) {
		bits = 15 + 16; /* gzip header and trailer */
	} else {
		const unsigned char *h = (const unsigned char *)sl_buf_head(&d->in);

		if (sl_buf_size(&d->in) < 2)
			return 0;
		/* RFC 1950: CM 8, CINFO <= 7, the header a multiple of 31. Servers that send raw
		 * deflate (RFC 1951) under "deflate" exist; browsers accept both. */
		bits = ((h[0] & 0x0f) == 8 && (h[0] >> 4) <= 7 && ((h[0] << 8) | h[1]) % 31 == 0) ?
			       15 :
			       -15;
	}
	if (inflateInit2(&d->z, bits) != Z_OK)
		return -ENOMEM;
	d->started = 1;
	return 1;
}

ssize_t sl_inflate_run(struct sl_inflate *d, char *out, size_t max)
{
	size_t produced = 0;

	d->more = 0;
	if (!d->started) {
		int r = start(d);

		if (!r)
			d->stuck = 1;
		if (r <= 0)
			return r;
	}
	while (produced < max && sl_buf_size(&d->in)) {
		size_t avail = sl_buf_size(&d->in);
		int r;

		if (d->ended) {
			if (d->coding != SL_CODING_GZIP) {
				sl_buf_reset(
					&d->in); /* after a deflate stream: nothing to decode */
				break;
			}
			/* Another gzip member follows (RFC 1952 section 2.2). */
			if (inflateReset(&d->z) != Z_OK)
				return -EINVAL;
			d->ended = 0;
		}
		d->z.next_in = (unsigned char *)sl_buf_head(&d->in);
		d->z.avail_in = avail > (1u << 30) ? 1u << 30 : (unsigned)avail;
		d->z.next_out = (unsigned char *)out + produced;
		d->z.avail_out = (unsigned)(max - produced);
		r = inflate(&d->z, Z_NO_FLUSH);
		sl_buf_consume(&d->in, avail > (1u << 30) ? (1u << 30) - d->z.avail_in :
							    avail - d->z.avail_in);
		produced = max - d->z.avail_out;
		if (r == Z_STREAM_END) {
			d->ended = 1;
			continue;
		}
		if (r == Z_BUF_ERROR) {
			d->stuck = 1; /* no progress possible: more input needed */
			break;
		}
		if (r != Z_OK)
			return r == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
	}
	d->more = produced == max;
	return (ssize_t)produced;
}

int sl_inflate_pending(const struct sl_inflate *d)
{
	return d->more || (sl_buf_size(&d->in) && !d->stuck);
}

int sl_inflate_complete(const struct sl_inflate *d)
{
	return d->ended && !sl_buf_size(&d->in);
}

void sl_inflate_free(struct sl_inflate *d)
{
	if (d->started)
		inflateEnd(&d->z);
	sl_buf_free(&d->in);
	memset(d, 0, sizeof(*d));
}

int sl_accept_encoding(const char *value, char *out, size_t len)
{
	size_t used = 0;
	int err = 0;

	out[0] = 0;
	while (*value) {
		const char *e = value + strcspn(value, ","), *t = value, *te;
		size_t n;

		while (t < e && ows(*t))
			t++;
		te = t + strcspn(t, ";, \t");
		if (te > e)
			te = e;
		n = (size_t)(te - t);
		if ((n == 4 && !strncasecmp(t, "gzip", 4)) ||
		    (n == 6 && !strncasecmp(t, "x-gzip", 6)) ||
		    (n == 7 && !strncasecmp(t, "deflate", 7)) ||
		    (n == 8 && !strncasecmp(t, "identity", 8))) {
			size_t m = (size_t)(e - t);

			while (m && ows(t[m - 1]))
				m--;
			if (used + (used ? 2 : 0) + m + 1 > len) {
				err = -ENOSPC;
				break;
			}
			if (used) {
				memcpy(out + used, ", ", 2);
				used += 2;
			}
			memcpy(out + used, t, m);
			used += m;
			out[used] = 0;
		}
		value = *e ? e + 1 : e;
	}
	if (!err && !used) {
		if (len < sizeof("identity"))
			err = -ENOSPC;
		else
			snprintf(out, len, "identity");
	}
	return err;
}
