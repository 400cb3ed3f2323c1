// SPDX-License-Identifier: MIT
/* Byte buffers for socket I/O: appends at the back, consumption at the front, compaction
 * when the consumed part dominates so a long-lived connection does not grow without bound. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static int reserve(struct sl_buf *b, size_t extra)
{
	size_t need, cap;
	char *d;

	if (b->off && b->off >= b->len / 2) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

int sl_buf_reserve(struct sl_buf *b, size_t n)
{
	return reserve(b, n);
}

int sl_buf_append(struct sl_buf *b, const void *p, size_t n)
{
	if (reserve(b, n))
		return -ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
	return 0;
}

int sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || reserve(b, n))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
	return 0;
}

void sl_buf_consume(struct sl_buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void sl_buf_reset(struct sl_buf *b)
{
	b->off = b->len = 0;
}

void sl_buf_free(struct sl_buf *b)
{
	if (!b->data)
		return; /* never used (most of a UDP query's): not even a call to free() */
	free(b->data);
	memset(b, 0, sizeof(*b));
}
