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

/* Records that @name resolved to @r (or extends the expiry of the same record). */
int sb_learned_add(struct sl_box *box, const char *name, const struct sl_addr_rule *r)
{
	size_t cap = box->learned.cap;

	for (size_t i = 0; i < box->learned.n; i++) {
		if (same_rule(&box->learned.v[i], r) && !strcmp(box->learned_names[i], name)) {
			if (r->expires_ns > box->learned.v[i].expires_ns)
				box->learned.v[i].expires_ns = r->expires_ns;
			return 0;
		}
	}
	if (box->learned.n >= SL_LEARNED_MAX)
		return -EDQUOT; /* the sandbox's bound; -ENOSPC is the kernel map's */
	if (sl_rule_set_add(&box->learned, r))
		return -ENOMEM;
	if (box->learned.cap != cap || !box->learned_names) {
		char(*names)[SL_DNS_NAME_BUF] = realloc(box->learned_names,
							box->learned.cap * sizeof(*names));

		if (!names) {
			box->learned.n--;
			return -ENOMEM;
		}
		box->learned_names = names;
	}
	snprintf(box->learned_names[box->learned.n - 1], SL_DNS_NAME_BUF, "%s", name);
	if (!box->learned_next_ns || r->expires_ns < box->learned_next_ns)
		box->learned_next_ns = r->expires_ns;
	return 0;
}

/* Whether @box already knows that @name resolved to @addr. */
static int learned_knows(const struct sl_box *box, const char *name, uint8_t family,
			 const uint8_t *addr)
{
	for (size_t i = 0; i < box->learned.n; i++)
		if (box->learned.v[i].family == family && !memcmp(box->learned.v[i].addr, addr, 16) &&
		    !strcmp(box->learned_names[i], name))
			return 1;
	return 0;
}


/*
 * Rewrites the kernel entry of one address of @box from its static and learned rules: the
 * merged ranges, or no entry at all when no learned rule and no static rule of exactly this
 * address remain (a covering static prefix then answers alone).
 */
static int write_addr_from(struct sl_registry *r, struct sl_box *box, uint8_t family,
			   const uint8_t *addr, const struct sl_rule_set *learned)
{
	struct sl_kentry e = { .family = family, .plen = family == AF_INET ? 32 : 128 };
	int keep = 0, err;

	memcpy(e.addr, addr, family == AF_INET ? 4 : 16);
	for (size_t i = 0; i < learned->n && !keep; i++)
		keep = learned->v[i].family == family && !memcmp(learned->v[i].addr, e.addr, 16);
	for (size_t i = 0; i < box->rules.n && !keep; i++)
		keep = box->rules.v[i].family == family && box->rules.v[i].plen == e.plen &&
		       !memcmp(box->rules.v[i].addr, e.addr, 16);
	if (keep) {
		err = sl_rules_merge(&box->rules, family, e.addr, e.plen, &e.val);
		if (!err)
			err = sl_rules_merge(learned, family, e.addr, e.plen, &e.val);
		if (err)
			return err;
	}
	return sl_bpf_set_rule(r->bpf, box->rules_id, &e);
}

/* write_addr_from() with all the learned rules of @box (which it scans: O(learned)). */
static int write_addr(struct sl_registry *r, struct sl_box *box, uint8_t family,
		      const uint8_t *addr)
{
	return write_addr_from(r, box, family, addr, &box->learned);
}

const char *sb_dns_name(void *owner)
{
	return ((struct sl_box *)owner)->name;
}

static size_t dns_grants(void *owner, const char *qname, struct sl_grant *g, size_t max)
{
	struct sl_box *box = owner;

	return box->policy ? sl_policy_name_grants(box->policy, qname, g, max) : 0;
}

/* The kernel half of a DNS answer (struct sl_dns_ops.learn). */
static int dns_learn(void *owner, const char *qname, const struct sl_dns_answer *a,
		     uint8_t blocked[SL_DNS_MAX_ADDRS])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct sl_box *box = owner;
	struct sl_registry *r = box->reg;
	struct sl_grant g[16];
	size_t ng = dns_grants(box, qname, g, 16);
	uint64_t now = sl_now_ns();
	int err, known;

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
		if (!ng || !sl_policy_addr_permitted(box->policy, family, addr)) {
			blocked[i] = 1;
			continue;
		}
		ttl = ttl < r->ttl.min_s ? r->ttl.min_s : ttl > r->ttl.max_s ? r->ttl.max_s : ttl;
		for (size_t k = 0; k < ng; k++) {
			struct sl_addr_rule rule = {
				.family = family,
				.plen = family == AF_INET ? 32 : 128,
				.port_lo = g[k].lo,
				.port_hi = g[k].hi,
				.protos = g[k].protos,
				.verdict = g[k].verdict,
				.expires_ns = now + (uint64_t)(ttl + r->ttl.grace_s) * 1000000000ULL /
							  (r->ttl.time_scale ? r->ttl.time_scale : 1),
			};

			memcpy(rule.addr, addr, 16);
			known = k || learned_knows(box, qname, family, addr);
			err = sb_learned_add(box, qname, &rule);
			if (!err && !known)
				sb_names_note(r, box, qname, family, addr);
			if (err) {
				sl_err("sandbox %s: recording %s failed: %s", box->name, qname,
				       err == -EDQUOT ? "too many resolved addresses" :
							strerror(-err));
				return err;
			}
		}
		err = write_addr(r, box, family, addr);
		if (err) {
			sl_err("sandbox %s: installing an address of %s failed: %s", box->name,
			       qname, err == -ENOSPC ? "the kernel rule map is full" :
						       strerror(-err));
			return err;
		}
	}
	return 0;
}

const struct sl_dns_ops sb_dns_ops = {
	.name = sb_dns_name,
	.grants = dns_grants,
	.learn = dns_learn,
};

static int cmp_rule_addr(const void *a, const void *b)
{
	const struct sl_addr_rule *x = a, *y = b;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	return memcmp(x->addr, y->addr, 16);
}

/*
 * Drops expired resolutions from memory and from the kernel (which already ignores them).
 * Nothing to do before the earliest expiry (box->learned_next_ns), so most sweeps cost
 * nothing. A sweep that drops k of n entries costs O(n + (n + k) log n): one pass that
 * compacts the survivors, then the survivors sorted by address so that each address that lost
 * an entry is rewritten from its own few rules (a binary search), not from a scan of all n
 * (review F13: 16k entries expiring together were 10^8 comparisons on the loop).
 */
void sb_learned_sweep(struct sl_registry *r, struct sl_box *box, uint64_t now)
{
	struct sl_addr_rule *gone = NULL, *kept = NULL;
	size_t ngone = 0, n = 0, total = box->learned.n;
	uint64_t next = 0, t0 = sl_now_ns();

	if (!box->learned.n || (box->learned_next_ns && box->learned_next_ns > now))
		return;
	gone = malloc(box->learned.n * sizeof(*gone));
	kept = malloc(box->learned.n * sizeof(*kept));
	if (!gone || !kept)
		goto cleanup; /* next sweep */
	for (size_t i = 0; i < box->learned.n; i++) {
		const struct sl_addr_rule *x = &box->learned.v[i];

		if (x->expires_ns <= now) {
			gone[ngone++] = *x;
			continue;
		}
		if (!next || x->expires_ns < next)
			next = x->expires_ns;
		if (n != i) {
			box->learned.v[n] = *x;
			memcpy(box->learned_names[n], box->learned_names[i], SL_DNS_NAME_BUF);
		}
		n++;
	}
	box->learned.n = n;
	box->learned_next_ns = next;
	if (!ngone)
		goto cleanup;
	memcpy(kept, box->learned.v, n * sizeof(*kept));
	qsort(kept, n, sizeof(*kept), cmp_rule_addr);
	qsort(gone, ngone, sizeof(*gone), cmp_rule_addr);
	for (size_t k = 0; k < ngone; k++) {
		struct sl_rule_set at = { 0 };
		size_t lo = 0, hi = n;
		int err;

		if (k && !cmp_rule_addr(&gone[k - 1], &gone[k]))
			continue; /* that address is done */
		while (lo < hi) { /* the first survivor at or after this address */
			size_t mid = lo + (hi - lo) / 2;

			if (cmp_rule_addr(&kept[mid], &gone[k]) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		at.v = kept + lo;
		while (lo + at.n < n && !cmp_rule_addr(&kept[lo + at.n], &gone[k]))
			at.n++;
		at.cap = at.n;
		err = write_addr_from(r, box, gone[k].family, gone[k].addr, &at);
		if (err)
			sl_warn("sandbox %s: removing an expired entry failed: %s", box->name,
				strerror(-err));
	}
	sl_debug("sandbox %s: swept %zu of %zu resolved addresses in %llu us", box->name, ngone,
		 total, (unsigned long long)(sl_now_ns() - t0) / 1000);
cleanup:
	free(gone);
	free(kept);
}
