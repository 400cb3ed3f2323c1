/* SPDX-License-Identifier: MIT */
/*
 * An index over a sandbox's learned rules (the addresses its names resolved to): a min-heap
 * of the entries by expiry, so that the sweep finds the expired ones in O(log n) each instead
 * of scanning all n, and a hash of their addresses, so that the entries of one address (the
 * kernel entry of that address is rebuilt from them) are found without a scan either.
 * 16,384 entries (SL_LEARNED_MAX) expiring one by one used to cost a sort of all of them per
 * sweep; issue 14 asked for O(log n) per expiry.
 *
 * The index does not own the rules: it names entries by their position in the rule set, and
 * sb_lx_remove() moves the last entry into the freed position (with its name) and tells the
 * index.
 * Threading: the owning sandbox's worker thread only; nothing here blocks.
 */
#ifndef SL_SB_LINDEX_H
#define SL_SB_LINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "dns/dns_msg.h"
#include "kernel/rules.h"

#define SB_LX_NONE UINT32_MAX

struct sb_lindex {
	uint32_t *heap; /* entry positions, heap[0] expires first */
	uint32_t *pos; /* pos[i]: where entry i sits in heap */
	uint32_t *next; /* next[i]: the next entry in entry i's hash bucket, SB_LX_NONE at the end */
	uint32_t *bucket; /* per bucket: its first entry, SB_LX_NONE if empty */
	uint32_t nbucket; /* 0, or a power of two at least twice cap */
	size_t cap; /* entries heap, pos and next can hold */
	size_t n; /* entries indexed (= the rule set's n between calls) */
};

/* Frees the index's memory (the rules are not its own); leaves it empty. Accepts an empty one. */
void sb_lx_free(struct sb_lindex *x);
/* Makes room for @cap entries of @rs (rehashing what is indexed). 0 or -ENOMEM (index as
 * it was). */
int sb_lx_reserve(struct sb_lindex *x, const struct sl_rule_set *rs, size_t cap);
/* Indexes entry @rs->v[@i], just appended (@i == x->n; room reserved). */
void sb_lx_insert(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i);
/* Entry @i's expiry grew: moves it in the heap. */
void sb_lx_later(struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i);
/* The entry that expires first, SB_LX_NONE if there is none. O(1). */
uint32_t sb_lx_earliest(const struct sb_lindex *x);
/* The first entry at @family/@addr (16 bytes, as in struct sl_addr_rule), then the next one
 * after @i: SB_LX_NONE after the last. */
uint32_t sb_lx_first_at(const struct sb_lindex *x, const struct sl_rule_set *rs, uint8_t family,
			const uint8_t *addr);
uint32_t sb_lx_next_at(const struct sb_lindex *x, const struct sl_rule_set *rs, uint32_t i);
/* Each entry @i (declared here, uint32_t) of @rs at @family/@addr, through index @x. */
#define sb_lx_for_each_at(i, x, rs, family, addr)                               \
	for (uint32_t i = sb_lx_first_at(x, rs, family, addr); i != SB_LX_NONE; \
	     i = sb_lx_next_at(x, rs, i))
/* Removes entry @i from @rs, @names and the index: the last entry (and its name) moves into
 * position @i. O(log n) plus the length of two hash chains. */
void sb_lx_remove(struct sb_lindex *x, struct sl_rule_set *rs, char (*names)[SL_DNS_NAME_BUF],
		  uint32_t i);

#endif
