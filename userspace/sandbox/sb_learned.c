// SPDX-License-Identifier: MIT
/*
 * What a sandbox's names resolved to (struct sl_dns_ops): each answer's addresses become
 * rules of the sandbox in the kernel until they expire, and the sweep removes them then.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernel/bpf_loader.h"
#include "tls/ca.h"
#include "kernel/cgroup.h"
#include "dns/dns.h"
#include "core/events.h"
#include "proxy/proxy.h"
#include "kernel/sockdiag.h"
#include "core/log.h"
#include "core/loop.h"
#include "lua/lua_host.h"
#include "kernel/netns.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

/* ---- resolved names ---- */

static int same_rule(const struct sl_addr_rule *a, const struct sl_addr_rule *b)
{
	return a->family == b->family && a->plen == b->plen && !memcmp(a->addr, b->addr, 16) &&
	       a->port_lo == b->port_lo && a->port_hi == b->port_hi && a->protos == b->protos &&
	       a->verdict == b->verdict;
}

/* Records in @l that @name resolved to @r (or extends the expiry of the same record). */
int sb_learned_add(struct sb_learned *l, const char *name, const struct sl_addr_rule *r)
{
	struct sb_lindex *x = &l->ix;
	size_t cap = l->rules.cap;

	for (uint32_t i = sb_lx_first_at(x, &l->rules, r->family, r->addr); i != SB_LX_NONE;
	     i = sb_lx_next_at(x, &l->rules, i)) {
		if (same_rule(&l->rules.v[i], r) && !strcmp(l->names[i], name)) {
			if (r->expires_ns > l->rules.v[i].expires_ns) {
				l->gen++;
				l->rules.v[i].expires_ns = r->expires_ns;
				sb_lx_later(x, &l->rules, i);
			}
			return 0;
		}
	}
	if (l->rules.n >= SL_LEARNED_MAX)
		return -EDQUOT; /* the sandbox's bound; -ENOSPC is the kernel map's */
	if (sl_rule_set_add(&l->rules, r))
		return -ENOMEM;
	if (l->rules.cap != cap || !l->names) {
		char(*names)[SL_DNS_NAME_BUF] = realloc(l->names, l->rules.cap * sizeof(*names));

		if (!names || sb_lx_reserve(x, &l->rules, l->rules.cap)) {
			if (names)
				l->names = names;
			l->rules.n--;
			return -ENOMEM;
		}
		l->names = names;
	}
	{
		size_t n = strnlen(name, SL_DNS_NAME_BUF - 1);

		memcpy(l->names[l->rules.n - 1], name, n);
		l->names[l->rules.n - 1][n] = 0;
	}
	sb_lx_insert(x, &l->rules, (uint32_t)l->rules.n - 1);
	l->gen++;
	return 0;
}

void sb_learned_free(struct sb_learned *l)
{
	sl_rule_set_free(&l->rules);
	free(l->names);
	l->names = NULL;
	sb_lx_free(&l->ix);
}

/* Whether @box already knows that @name resolved to @addr. */
static int learned_knows(const struct sl_box *box, const char *name, uint8_t family,
			 const uint8_t *addr)
{
	sb_lx_for_each_at(i, &box->learned.ix, &box->learned.rules, family, addr)
		if (!strcmp(box->learned.names[i], name))
			return 1;
	return 0;
}

/*
 * Rewrites the kernel entry of one address in @bank from static @rules and @learned: the
 * merged ranges, or no entry at all when no learned rule and no static rule of exactly this
 * address remain (a covering static prefix then answers alone). The learned rules of the
 * address come from the index: O(rules of that address), not O(learned).
 */
int sb_learned_write_addr(struct sl_registry *r, uint32_t bank, const struct sl_layer *layer,
			  const struct sb_learned *learned, uint8_t family, const uint8_t *addr,
			  int fresh, struct sl_kbatch *kb)
{
	const struct sl_rule_set *rules = &layer->rules;
	struct sl_kentry e = { .family = family, .plen = family == AF_INET ? 32 : 128 };
	uint32_t first;
	int keep, err = 0;

	memcpy(e.addr, addr, family == AF_INET ? 4 : 16);
	first = sb_lx_first_at(&learned->ix, &learned->rules, family, e.addr);
	keep = first != SB_LX_NONE ||
	       sl_rules_has_prefix(rules, &layer->rules_ix, family, e.addr, e.plen);
	if (keep) {
		err = sl_rules_merge_ix(rules, &layer->rules_ix, family, e.addr, e.plen, &e.val);
		/* then the learned rules of exactly this address, in the index's order */
		for (uint32_t i = first; i != SB_LX_NONE && !err;
		     i = sb_lx_next_at(&learned->ix, &learned->rules, i))
			err = sl_rule_add_range(&e.val, &learned->rules.v[i]);
	}
	if (!err)
		err = sl_kbatch_rule(kb, r->bpf, bank, &e, fresh && keep);
	return err;
}

/* The same for the bank in force of @box, with the names the kernel SNI check accepts there;
 * a switch under way rewrites the address in its new bank when it completes. */
static int write_addr(struct sl_registry *r, struct sl_box *box, uint8_t family,
		      const uint8_t *addr, int fresh, struct sl_kbatch *kb)
{
	int err = sb_learned_write_addr(r, box->rules_id, box->layer, &box->learned, family, addr,
					fresh, kb);

	if (box->switching)
		sb_switch_note(box->switching, family, addr);
	if (!err)
		err = sb_sni_write_addr(r, box, family, addr, kb);
	return err;
}

const char *sb_dns_name(void *owner)
{
	return ((struct sl_box *)owner)->name;
}

static size_t dns_grants(void *owner, const char *qname, struct sl_grant *g, size_t max)
{
	struct sl_box *box = owner;

	return sb_policy(box) ? sl_policy_name_grants(sb_policy(box), qname, g, max) : 0;
}

static int dns_audit(void *owner)
{
	return ((struct sl_box *)owner)->audit;
}

/* The kernel half of a DNS answer (struct sl_dns_ops.learn). */
static int dns_learn(void *owner, const char *qname, const struct sl_dns_answer *a,
		     uint8_t blocked[SL_DNS_MAX_ADDRS], struct sl_kbatch *kb)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct sl_box *box = owner;
	struct sl_registry *r = box->reg;
	struct sl_grant g[16];
	size_t ng = dns_grants(box, qname, g, 16);
	uint64_t now = sl_now_ns();
	int err, known, fresh;

	if (box->audit && !ng) {
		/* Recorded with its answer (the name asked, CNAMEs reduced to it). A name the
		 * policy does not give is resolved but not installed: the kernel lets audit mode's
		 * connections through and counts each with its port, which an installed entry would
		 * hide. The rebinding guard still applies to it. */
		for (size_t i = 0; i < a->naddr; i++) {
			const struct sl_dns_addr *x = &a->addr[i];
			uint8_t addr[16] = { 0 }, family = x->family;

			if (family == AF_INET6 && !memcmp(x->addr, mapped, 12)) {
				family = AF_INET;
				memcpy(addr, x->addr + 12, 4);
			} else {
				memcpy(addr, x->addr, family == AF_INET ? 4 : 16);
			}
			blocked[i] = !sl_policy_addr_permitted(sb_policy(box), family, addr);
		}
		sb_obs_dns(box, qname, a, blocked, 0);
		return 0;
	}

	for (size_t i = 0; i < a->naddr; i++) {
		const struct sl_dns_addr *x = &a->addr[i];
		uint8_t family = x->family, addr[16] = { 0 };
		uint32_t ttl = x->ttl_s;

		/* The kernel judges v4-mapped destinations by the IPv4 rules. */
		if (family == AF_INET6 && !memcmp(x->addr, mapped, 12)) {
			family = AF_INET;
			memcpy(addr, x->addr + 12, 4);
		} else {
			memcpy(addr, x->addr, family == AF_INET ? 4 : 16);
		}
		if (!ng || !sl_policy_addr_permitted(sb_policy(box), family, addr)) {
			blocked[i] = 1;
			continue;
		}
		ttl = ttl < r->ttl.min_s ? r->ttl.min_s : ttl > r->ttl.max_s ? r->ttl.max_s : ttl;
		/* No learned rule at the address yet: its kernel entry is new (unless a static
		 * rule of exactly this address wrote one; that guess costs a syscall). */
		fresh = sb_lx_first_at(&box->learned.ix, &box->learned.rules, family, addr) ==
			SB_LX_NONE;
		for (size_t k = 0; k < ng; k++) {
			struct sl_addr_rule rule = {
				.family = family,
				.plen = family == AF_INET ? 32 : 128,
				.port_lo = g[k].lo,
				.port_hi = g[k].hi,
				.protos = g[k].protos,
				.verdict = g[k].verdict,
				.expires_ns =
					now + (uint64_t)(ttl + r->ttl.grace_s) * 1000000000ULL /
						      (r->ttl.time_scale ? r->ttl.time_scale : 1),
			};

			memcpy(rule.addr, addr, 16);
			known = k || learned_knows(box, qname, family, addr);
			err = sb_learned_add(&box->learned, qname, &rule);
			if (!err && !known)
				sb_names_note(r, box, qname, family, addr);
			if (err) {
				sl_err("sandbox %s: recording %s failed: %s", box->name, qname,
				       err == -EDQUOT ? "too many resolved addresses" :
							strerror(-err));
				return err;
			}
		}
		err = write_addr(r, box, family, addr, fresh, kb);
		if (err) {
			sl_err("sandbox %s: installing an address of %s failed: %s", box->name,
			       qname,
			       err == -ENOSPC ? "the kernel rule map is full" : strerror(-err));
			return err;
		}
	}
	if (box->audit)
		sb_obs_dns(box, qname, a, blocked, 1);
	return 0;
}

const struct sl_dns_ops sb_dns_ops = {
	.name = sb_dns_name,
	.grants = dns_grants,
	.learn = dns_learn,
	.audit = dns_audit,
};

static int cmp_rule_addr(const void *a, const void *b)
{
	const struct sl_addr_rule *x = a, *y = b;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	return memcmp(x->addr, y->addr, 16);
}

#define SWEEP_BATCH 2048 /* learned entries dropped per sandbox and sweep, at most */

size_t sb_learned_expire(struct sl_box *box, uint64_t now, size_t max, struct sl_addr_rule **gone)
{
	struct sb_lindex *x = &box->learned.ix;
	struct sl_addr_rule *v = NULL;
	size_t n = 0, cap = 0, k = 0;
	uint32_t i;

	while (n < max && (i = sb_lx_earliest(x)) != SB_LX_NONE &&
	       box->learned.rules.v[i].expires_ns <= now) {
		if (n == cap) {
			struct sl_addr_rule *nv =
				realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));

			if (!nv)
				break; /* the rest at the next sweep */
			v = nv;
		}
		v[n++] = box->learned.rules.v[i];
		sb_sni_forget(box, &box->learned.rules.v[i], box->learned.names[i]);
		sb_lx_remove(x, &box->learned.rules, box->learned.names, i);
		box->learned.gen++;
	}
	if (n > 1) {
		qsort(v, n, sizeof(*v), cmp_rule_addr);
		for (size_t j = 1; j < n; j++) /* one per address */
			if (cmp_rule_addr(&v[k], &v[j]))
				v[++k] = v[j];
	}
	*gone = v;
	return n ? k + 1 : 0;
}

/*
 * Drops expired resolutions from memory and from the kernel (which already ignores them).
 * The expiry heap says which: nothing to do before the earliest expiry, so most sweeps cost
 * O(1), and each expired entry costs O(log n) to find and drop, plus a rewrite of its
 * address's kernel entry from that address's own rules (review F13, issue 14: 16k entries
 * were a sort of all of them per sweep that dropped any). The kernel map writes, a syscall
 * each, are what remains costly: at most SWEEP_BATCH entries go per sweep, the rest at the
 * next ones (the kernel ignores an expired range until then), so that 16k entries expiring
 * together do not hold the loop for the length of 16k syscalls.
 */
void sb_learned_sweep(struct sl_registry *r, struct sl_box *box, uint64_t now)
{
	uint32_t first = sb_lx_earliest(&box->learned.ix);
	struct sl_addr_rule *gone = NULL;
	size_t total = box->learned.rules.n, naddr;
	uint64_t t0;

	if (first == SB_LX_NONE || box->learned.rules.v[first].expires_ns > now)
		return;
	t0 = sl_now_ns();
	naddr = sb_learned_expire(box, now, SWEEP_BATCH, &gone);
	for (size_t k = 0; k < naddr; k++) {
		int err = write_addr(r, box, gone[k].family, gone[k].addr, 0, NULL);

		if (err)
			sl_warn("sandbox %s: removing an expired entry failed: %s", box->name,
				strerror(-err));
	}
	sl_debug("sandbox %s: swept %zu of %zu resolved addresses in %llu us", box->name,
		 total - box->learned.rules.n, total,
		 (unsigned long long)(sl_now_ns() - t0) / 1000);
	free(gone);
}
