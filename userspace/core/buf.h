/* SPDX-License-Identifier: MIT */
/*
 * A growable byte buffer with a read offset.
 *
 * Threading: a buffer belongs to its owner's thread (no lock); nothing here blocks.
 */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <stddef.h>

struct sl_buf {
	char *data;
	size_t off; /* consumed bytes at the front */
	size_t len; /* bytes in use, including consumed ones */
	size_t cap;
};

/* Makes room for @n more bytes (and a NUL). Returns 0 or -ENOMEM. */
int sl_buf_reserve(struct sl_buf *b, size_t n);
/* Appends @n bytes. Returns 0 or -ENOMEM. */
int sl_buf_append(struct sl_buf *b, const void *p, size_t n);
int sl_buf_printf(struct sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Unconsumed bytes; NULL for a buffer that never held any (NULL + 0 is undefined in C). */
static inline const char *sl_buf_head(const struct sl_buf *b)
{
	return b->data ? b->data + b->off : NULL;
}
static inline size_t sl_buf_size(const struct sl_buf *b)
{
	return b->len - b->off;
}
/* Drops @n bytes from the front. */
void sl_buf_consume(struct sl_buf *b, size_t n);
void sl_buf_reset(struct sl_buf *b);
void sl_buf_free(struct sl_buf *b);

#endif
