/* SPDX-License-Identifier: MIT */
/*
 * Address rules of one sandbox and their compilation into kernel LPM entries (see rules.c).
 *
 * Threading: a rule set belongs to its owner's thread (no lock); pure computation, nothing
 * blocks.
 */
#ifndef SL_RULES_H
#define SL_RULES_H

#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>
#include "sluice.h"

#include "core/addr.h" /* sl_prefix_mask: moved there */

/* One address rule: a prefix, a port range, protocols and a verdict. */
struct sl_addr_rule {
	uint8_t family; /* AF_INET / AF_INET6 */
	uint8_t plen;
	uint8_t protos; /* SL_PROTO_* */
	uint8_t verdict; /* SL_VERDICT_* */
	uint16_t port_lo, port_hi;
	uint8_t addr[16]; /* network order, host bits zero */
	uint64_t expires_ns; /* CLOCK_MONOTONIC, 0 = never */
};

/* One kernel map entry: a prefix and its merged ranges. */
struct sl_kentry {
	uint8_t family;
	uint8_t plen;
	uint8_t addr[16];
	struct sl_rule val;
};

struct sl_rule_set {
	struct sl_addr_rule *v;
	size_t n, cap;
};

void sl_rule_set_init(struct sl_rule_set *rs);
void sl_rule_set_free(struct sl_rule_set *rs);
/* Appends a copy of @r with its host bits cleared. Returns 0 or -ENOMEM. */
int sl_rule_set_add(struct sl_rule_set *rs, const struct sl_addr_rule *r);

/*
 * Compiles @rs into kernel entries, one per distinct prefix, each holding its own ranges and
 * those of every shorter prefix covering it, so that the kernel's single longest-prefix
 * lookup sees all rules that apply. Ranges that another range makes redundant are dropped and
 * adjacent equal ranges merged. On success *@out (malloc'd, caller frees) holds *@nout entries
 * sorted by (family, addr, plen). Returns 0, -ENOMEM, or -E2BIG when one prefix would need
 * more than SL_MAX_PORT_RANGES ranges; then @bad (if given) names that prefix.
 */
int sl_rules_compile(const struct sl_rule_set *rs, struct sl_kentry **out, size_t *nout,
		     struct sl_kentry *bad);

/* Adds rule @q's ports and verdict to @val (whether @q covers the entry is the caller's to
 * know). 0, or -E2BIG when @val holds SL_MAX_PORT_RANGES ranges already. */
int sl_rule_add_range(struct sl_rule *val, const struct sl_addr_rule *q);

/*
 * Adds to @val the ranges of every rule of @rs whose prefix covers (@family, @addr, @plen),
 * merged as sl_rules_compile() merges them. Call it once per rule set to build the kernel
 * value of one prefix from several sets. Returns 0 or -E2BIG.
 */
int sl_rules_merge(const struct sl_rule_set *rs, uint8_t family, const uint8_t *addr, uint8_t plen,
		   struct sl_rule *val);

/*
 * A sorted view of a rule set that no longer changes (a compiled layer's static rules): the
 * rules of one prefix, and those covering an address, are found by a binary search per prefix
 * length the set holds rather than a scan of every rule (100,000 rules: 1.3 ms per address
 * resolved). Read-only once built: any thread.
 */
struct sl_rule_index {
	uint32_t *ord; /* rule positions sorted by family, prefix length, address, position */
	size_t n;
	uint8_t has_plen[2][129]; /* [IPv4, IPv6][length]: the set holds rules of it */
};

/* Builds @x over @rs (which must not change while @x is used). 0 or -ENOMEM (@x empty). */
int sl_rule_index_build(struct sl_rule_index *x, const struct sl_rule_set *rs);
void sl_rule_index_free(struct sl_rule_index *x);
/* sl_rules_merge() through @x (NULL or empty: the scan): the same ranges in the same order. */
int sl_rules_merge_ix(const struct sl_rule_set *rs, const struct sl_rule_index *x, uint8_t family,
		      const uint8_t *addr, uint8_t plen, struct sl_rule *val);
/* Whether @rs holds a rule of exactly (@family, @addr, @plen), through @x (NULL: a scan). */
int sl_rules_has_prefix(const struct sl_rule_set *rs, const struct sl_rule_index *x, uint8_t family,
			const uint8_t *addr, uint8_t plen);

/* Formats a prefix as "10.0.0.0/8" or "fd00::/8" (plen omitted for a single address). */
void sl_prefix_str(uint8_t family, const uint8_t *addr, uint8_t plen, char *buf, size_t len);

#endif
