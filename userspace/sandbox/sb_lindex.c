// SPDX-License-Identifier: MIT
/*
 * The expiry heap and address hash of a sandbox's learned rules (sb_lindex.h): what lets the
 * sweep drop an expired resolution in O(log n) and rebuild its address's kernel entry from
 * that address's few rules.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sb_lindex.h"

static uint32_t addr_hash(uint8_t family, const uint8_t *addr)
{
	uint32_t h = 2166136261u ^ family; /* FNV-1a */

	for (int i = 0; i < 16; i++)
		h = (h ^ addr[i]) * 16777619u;
	return h;
}

static uint32_t bucket_of(const struct sb_lindex *x, const struct sl_addr_rule *r)
{
	return addr_hash(r->family, r->addr) & (x->nbucket - 1);
}

static int same_addr(const struct sl_addr_rule *r, uint8_t family, const uint8_t *addr)
{
	return r->family == family && !memcmp(r->addr, addr, 16);
}

static uint64_t key(const struct sl_rule_set *rs, const struct sb_lindex *x, size_t h)
{
	return rs->v[x->heap[h]].expires_ns;
}

static void heap_set(struct sb_lindex *x, size_t h, uint32_t i)
{
	x->heap[h] = i;
	x->pos[i] = (uint32_t)h;
}

static void sift_up(struct sb_lindex *x, const struct sl_rule_set *rs, size_t h)
{
	uint32_t i = x->heap[h];
	uint64_t k = rs->v[i].expires_ns;

	while (h && key(rs, x, (h - 1) / 2) > k) {
		heap_set(x, h, x->heap[(h - 1) / 2]);
		h = (h - 1) / 2;
	}
	heap_set(x, h, i);
}

static void sift_down(struct sb_lindex *x, const struct sl_rule_set *rs, size_t h)
{
	uint32_t i = x->heap[h];
	uint64_t k = rs->v[i].expires_ns;

	for (;;) {
		size_t c = 2 * h + 1;

		if (c >= x->n)
			break;
		if (c + 1 < x->n && key(rs, x, c + 1) < key(rs, x, c))
			c++;
		if (key(rs, x, c) >= k)
			break;
		heap_set(x, h, x->heap[c]);
		h = c;
	}
	heap_set(x, h, i);
}

void sb_lx_free(struct sb_lindex *x)
{
	free(x->heap);
	free(x->pos);
	free(x->next);
	free(x->bucket);
	memset(x, 0, sizeof(*x));
}

static void chain_add(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i)
{
	uint32_t b = bucket_of(x, &rs->v[i]);

	x->next[i] = x->bucket[b];
	x->bucket[b] = i;
}

int sb_lx_reserve(struct sb_lindex *x, const struct sl_rule_set *rs, size_t cap)
{
	uint32_t *heap, *pos, *next, *bucket, nb = x->nbucket ? x->nbucket : 64;

	if (cap <= x->cap)
		return 0;
	while (nb < 2 * cap)
		nb *= 2;
	/* Each realloc that succeeds keeps the index valid: only cap changes the contract. */
	heap = realloc(x->heap, cap * sizeof(*heap));
	if (!heap)
		return -ENOMEM;
	x->heap = heap;
	pos = realloc(x->pos, cap * sizeof(*pos));
	if (!pos)
		return -ENOMEM;
	x->pos = pos;
	next = realloc(x->next, cap * sizeof(*next));
	if (!next)
		return -ENOMEM;
	x->next = next;
	if (nb != x->nbucket) {
		bucket = malloc(nb * sizeof(*bucket));
		if (!bucket)
			return -ENOMEM;
		free(x->bucket);
		x->bucket = bucket;
		x->nbucket = nb;
		memset(bucket, 0xff, nb * sizeof(*bucket)); /* SB_LX_NONE */
		for (uint32_t i = 0; i < x->n; i++)
			chain_add(x, rs, i);
	}
	x->cap = cap;
	return 0;
}

void sb_lx_insert(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i)
{
	chain_add(x, rs, i);
	x->heap[x->n] = i;
	x->pos[i] = (uint32_t)x->n;
	x->n++;
	sift_up(x, rs, x->n - 1);
}

void sb_lx_later(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i)
{
	sift_down(x, rs, x->pos[i]);
}

uint32_t sb_lx_earliest(const struct sb_lindex *x)
{
	return x->n ? x->heap[0] : SB_LX_NONE;
}

static uint32_t match_from(const struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i,
			   uint8_t family, const uint8_t *addr)
{
	while (i != SB_LX_NONE && !same_addr(&rs->v[i], family, addr))
		i = x->next[i];
	return i;
}

uint32_t sb_lx_first_at(const struct sb_lindex *x, const struct sl_rule_set *rs, uint8_t family,
			const uint8_t *addr)
{
	if (!x->n)
		return SB_LX_NONE;
	return match_from(x, rs, x->bucket[addr_hash(family, addr) & (x->nbucket - 1)], family,
			  addr);
}

uint32_t sb_lx_next_at(const struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i)
{
	return match_from(x, rs, x->next[i], rs->v[i].family, rs->v[i].addr);
}

/* Points whatever links to entry @from in its chain at @to instead (@to takes its place). */
static void chain_replace(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t from,
			  uint32_t to)
{
	uint32_t *p = &x->bucket[bucket_of(x, &rs->v[from])];

	while (*p != from)
		p = &x->next[*p];
	*p = to == SB_LX_NONE ? x->next[from] : to;
	if (to != SB_LX_NONE)
		x->next[to] = x->next[from];
}

void sb_lx_remove(struct sb_lindex *x, struct sl_rule_set *rs, char (*names)[SL_DNS_NAME_BUF],
		  uint32_t i)
{
	uint32_t last = (uint32_t)rs->n - 1;
	size_t h = x->pos[i];

	/* Out of the heap: the heap's last slot fills the hole, then finds its place. */
	chain_replace(x, rs, i, SB_LX_NONE);
	x->n--;
	if (h != x->n) {
		uint32_t e = x->heap[x->n];

		heap_set(x, h, e);
		sift_down(x, rs, h);
		if (x->pos[e] == h)
			sift_up(x, rs, h);
	}
	/* Out of the array: the last entry moves into position i. */
	if (i != last) {
		chain_replace(x, rs, last, i);
		rs->v[i] = rs->v[last];
		memcpy(names[i], names[last], SL_DNS_NAME_BUF);
		heap_set(x, x->pos[last], i);
	}
	rs->n--;
}
