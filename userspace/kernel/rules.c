// SPDX-License-Identifier: MIT
/*
 * Rule compilation. The kernel decides a destination with one LPM lookup, which returns only
 * the longest matching prefix; a rule on 10.0.0.0/8 port 22 must therefore also be present in
 * the entry for 10.1.2.3/32 port 443, or 10.1.2.3:22 would be denied. Prefixes are nested or
 * disjoint, so every prefix containing a destination that is shorter than the longest match
 * also contains that longest match: merging each entry with the prefixes that cover it gives
 * the kernel the complete answer in one lookup.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel/rules.h"

void sl_rule_set_init(struct sl_rule_set *rs)
{
	memset(rs, 0, sizeof(*rs));
}

void sl_rule_set_free(struct sl_rule_set *rs)
{
	if (!rs)
		return;
	free(rs->v);
	memset(rs, 0, sizeof(*rs));
}

int sl_rule_set_add(struct sl_rule_set *rs, const struct sl_addr_rule *r)
{
	struct sl_addr_rule *c;

	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 16;
		struct sl_addr_rule *v = realloc(rs->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		rs->v = v;
		rs->cap = cap;
	}
	c = &rs->v[rs->n++];
	*c = *r;
	if (c->family == AF_INET)
		memset(c->addr + 4, 0, 12);
	sl_prefix_mask(c->addr, c->family == AF_INET ? 4 : 16, c->plen);
	return 0;
}

static int addr_len(uint8_t family)
{
	return family == AF_INET ? 4 : 16;
}

/* Whether prefix (@fam, @a, @alen) covers prefix (@fam, @b, @blen). */
static int covers(const struct sl_addr_rule *q, const struct sl_addr_rule *p)
{
	uint8_t masked[16];

	if (q->family != p->family || q->plen > p->plen)
		return 0;
	memcpy(masked, p->addr, 16);
	sl_prefix_mask(masked, addr_len(p->family), q->plen);
	return !memcmp(masked, q->addr, addr_len(p->family));
}

static int cmp_prefix(const void *a, const void *b)
{
	const struct sl_addr_rule *x = a, *y = b;
	int c;

	if (x->family != y->family)
		return x->family - y->family;
	c = memcmp(x->addr, y->addr, 16);
	if (c)
		return c;
	return x->plen - y->plen;
}

/* Whether range @a makes range @b redundant: it matches everything @b matches, with at least
 * @b's verdict, for at least as long. */
static int subsumes(const struct sl_port_range *a, const struct sl_port_range *b)
{
	return a->lo <= b->lo && a->hi >= b->hi && (a->protos & b->protos) == b->protos &&
	       SL_VERDICT_RANK(a->verdict) >= SL_VERDICT_RANK(b->verdict) &&
	       (a->expires_ns == 0 || (b->expires_ns != 0 && a->expires_ns >= b->expires_ns));
}

/* Adds @r to @val, merging it with an equal-attribute range it touches. */
static int add_range(struct sl_rule *val, struct sl_port_range r)
{
	for (;;) {
		int merged = 0;

		for (uint32_t i = 0; i < val->n; i++) {
			struct sl_port_range *x = &val->r[i];

			if (subsumes(x, &r))
				return 0;
			if (subsumes(&r, x) || (x->verdict == r.verdict && x->protos == r.protos &&
						x->expires_ns == r.expires_ns &&
						(uint32_t)x->lo <= (uint32_t)r.hi + 1 &&
						(uint32_t)r.lo <= (uint32_t)x->hi + 1)) {
				if (!subsumes(&r, x)) {
					r.lo = x->lo < r.lo ? x->lo : r.lo;
					r.hi = x->hi > r.hi ? x->hi : r.hi;
				}
				val->r[i] = val->r[--val->n];
				merged = 1;
				break;
			}
		}
		if (!merged)
			break;
	}
	if (val->n >= SL_MAX_PORT_RANGES)
		return -E2BIG;
	val->r[val->n++] = r;
	return 0;
}

int sl_rule_add_range(struct sl_rule *val, const struct sl_addr_rule *q)
{
	struct sl_port_range r = {
		.expires_ns = q->expires_ns,
		.lo = q->port_lo,
		.hi = q->port_hi,
		.verdict = q->verdict,
		.protos = q->protos,
	};

	return add_range(val, r);
}

int sl_rules_merge(const struct sl_rule_set *rs, uint8_t family, const uint8_t *addr, uint8_t plen,
		   struct sl_rule *val)
{
	struct sl_addr_rule p = { .family = family, .plen = plen };

	memcpy(p.addr, addr, family == AF_INET ? 4 : 16);
	sl_prefix_mask(p.addr, addr_len(family), plen);
	for (size_t j = 0; j < rs->n; j++) {
		int err;

		if (!covers(&rs->v[j], &p))
			continue;
		err = sl_rule_add_range(val, &rs->v[j]);
		if (err)
			return err;
	}
	return 0;
}

/* ---- the sorted view ---- */

/* The key of a prefix: family, length, address (canonical: host bits and IPv4's tail zero). */
static int key_cmp(const struct sl_addr_rule *r, uint8_t family, uint8_t plen, const uint8_t *addr)
{
	if (r->family != family)
		return r->family < family ? -1 : 1;
	if (r->plen != plen)
		return r->plen < plen ? -1 : 1;
	return memcmp(r->addr, addr, addr_len(family));
}

static int cmp_pos(const void *a, const void *b, void *arg)
{
	const struct sl_rule_set *rs = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	const struct sl_addr_rule *y = &rs->v[j];
	int c = key_cmp(&rs->v[i], y->family, y->plen, y->addr);

	return c ? c : (i > j) - (i < j);
}

int sl_rule_index_build(struct sl_rule_index *x, const struct sl_rule_set *rs)
{
	memset(x, 0, sizeof(*x));
	if (!rs->n)
		return 0;
	x->ord = malloc(rs->n * sizeof(*x->ord));
	if (!x->ord)
		return -ENOMEM;
	for (size_t i = 0; i < rs->n; i++) {
		x->ord[i] = (uint32_t)i;
		if (rs->v[i].plen <= (rs->v[i].family == AF_INET ? 32 : 128))
			x->has_plen[rs->v[i].family != AF_INET][rs->v[i].plen] = 1;
	}
	qsort_r(x->ord, rs->n, sizeof(*x->ord), cmp_pos, (void *)rs);
	x->n = rs->n;
	return 0;
}

void sl_rule_index_free(struct sl_rule_index *x)
{
	free(x->ord);
	memset(x, 0, sizeof(*x));
}

/* The first place in @x's order whose rule is not below the key. */
static size_t ix_lower(const struct sl_rule_set *rs, const struct sl_rule_index *x, uint8_t family,
		       uint8_t plen, const uint8_t *addr)
{
	size_t lo = 0, hi = x->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (key_cmp(&rs->v[x->ord[mid]], family, plen, addr) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

	return (i > j) - (i < j);
}

#define IX_MATCHES 64 /* rules covering one address beyond this: the scan answers */

int sl_rules_merge_ix(const struct sl_rule_set *rs, const struct sl_rule_index *x, uint8_t family,
		      const uint8_t *addr, uint8_t plen, struct sl_rule *val)
{
	uint32_t pos[IX_MATCHES];
	size_t npos = 0;
	int maxlen = family == AF_INET ? 32 : 128;

	if (!x || x->n != rs->n || !x->n || plen > maxlen)
		return sl_rules_merge(rs, family, addr, plen, val);
	for (int len = 0; len <= plen; len++) {
		uint8_t key[16] = { 0 };

		if (!x->has_plen[family != AF_INET][len])
			continue;
		memcpy(key, addr, addr_len(family));
		sl_prefix_mask(key, addr_len(family), (uint8_t)len);
		for (size_t i = ix_lower(rs, x, family, (uint8_t)len, key);
		     i < x->n && !key_cmp(&rs->v[x->ord[i]], family, (uint8_t)len, key); i++) {
			if (npos == IX_MATCHES)
				return sl_rules_merge(rs, family, addr, plen, val);
			pos[npos++] = x->ord[i];
		}
	}
	/* In the set's order, as the scan adds them. */
	qsort(pos, npos, sizeof(pos[0]), cmp_u32);
	for (size_t k = 0; k < npos; k++) {
		int err = sl_rule_add_range(val, &rs->v[pos[k]]);

		if (err)
			return err;
	}
	return 0;
}

int sl_rules_has_prefix(const struct sl_rule_set *rs, const struct sl_rule_index *x, uint8_t family,
			const uint8_t *addr, uint8_t plen)
{
	uint8_t key[16] = { 0 };
	size_t i;

	memcpy(key, addr, addr_len(family));
	sl_prefix_mask(key, addr_len(family), plen);
	if (!x || x->n != rs->n || !x->n) {
		for (i = 0; i < rs->n; i++)
			if (!key_cmp(&rs->v[i], family, plen, key))
				return 1;
		return 0;
	}
	i = ix_lower(rs, x, family, plen, key);
	return i < x->n && !key_cmp(&rs->v[x->ord[i]], family, plen, key);
}

static int cmp_range(const void *a, const void *b)
{
	const struct sl_port_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo - y->lo;
	if (x->hi != y->hi)
		return x->hi - y->hi;
	return x->verdict - y->verdict;
}

static int same_prefix(const struct sl_addr_rule *a, const struct sl_addr_rule *b)
{
	return a->family == b->family && a->plen == b->plen && !memcmp(a->addr, b->addr, 16);
}

/* Whether the compiled entry @q covers prefix @p. */
static int entry_covers(const struct sl_kentry *q, const struct sl_addr_rule *p)
{
	struct sl_addr_rule x = { .family = q->family, .plen = q->plen };

	memcpy(x.addr, q->addr, 16);
	return covers(&x, p);
}

/*
 * In (family, address, plen) order a prefix comes before every prefix it covers, and those
 * follow it without a gap: a stack of the entries covering the current prefix (at most one per
 * length, 129 for IPv6) gives each prefix its nearest covering entry, whose value already holds
 * the ranges of every shorter prefix covering both. Each entry is that value plus its own
 * rules: O(n log n) for the sort, then O(1) merges per rule (SL_MAX_PORT_RANGES bounds each).
 */
int sl_rules_compile(const struct sl_rule_set *rs, struct sl_kentry **out, size_t *nout,
		     struct sl_kentry *bad)
{
	struct sl_addr_rule *sorted = NULL;
	struct sl_kentry *ents = NULL;
	size_t stack[130], top = 0, n = 0;
	int err = 0;

	*out = NULL;
	*nout = 0;
	if (!rs->n)
		return 0;
	sorted = malloc(rs->n * sizeof(*sorted));
	ents = calloc(rs->n, sizeof(*ents)); /* fresh pages: zero without a write */
	if (!sorted || !ents) {
		err = -ENOMEM;
		goto cleanup;
	}
	memcpy(sorted, rs->v, rs->n * sizeof(*sorted));
	qsort(sorted, rs->n, sizeof(*sorted), cmp_prefix);

	for (size_t i = 0; i < rs->n;) {
		const struct sl_addr_rule *p = &sorted[i];
		struct sl_kentry *e = &ents[n];

		while (top && !entry_covers(&ents[stack[top - 1]], p))
			top--;
		e->family = p->family;
		e->plen = p->plen;
		memcpy(e->addr, p->addr, 16);
		if (top) {
			const struct sl_rule *pv = &ents[stack[top - 1]].val;

			e->val.n = pv->n;
			memcpy(e->val.r, pv->r, pv->n * sizeof(pv->r[0]));
		}
		for (; i < rs->n && same_prefix(&sorted[i], p); i++) {
			err = sl_rule_add_range(&e->val, &sorted[i]);
			if (err) {
				if (bad)
					*bad = *e;
				goto cleanup;
			}
		}
		qsort(e->val.r, e->val.n, sizeof(e->val.r[0]), cmp_range);
		if (top < sizeof(stack) / sizeof(stack[0]))
			stack[top++] = n;
		n++;
	}
	*out = ents;
	*nout = n;
	ents = NULL;
cleanup:
	free(sorted);
	free(ents);
	return err;
}

void sl_prefix_str(uint8_t family, const uint8_t *addr, uint8_t plen, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	inet_ntop(family, addr, a, sizeof(a));
	if (plen == (family == AF_INET ? 32 : 128))
		snprintf(buf, len, "%s", a);
	else
		snprintf(buf, len, "%s/%u", a, plen);
}
