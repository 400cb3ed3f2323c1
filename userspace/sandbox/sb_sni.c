// SPDX-License-Identifier: MIT
/*
 * The names the kernel SNI check accepts (bpf/sni.h, sl_sni_names): for each address a
 * sandbox's names resolved to, the names granted there as passthrough on TCP (learned entries
 * of verdict SL_VERDICT_SNI or SL_VERDICT_ALLOW) with their ports and expiry. This is what
 * px_resolved_at() answers in userspace, written where the kernel can read it; kept in step
 * with the learned entries: written with each address's rule (write_addr), deleted as entries
 * expire, rewritten whole after a switch, dropped with the sandbox.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "kernel/bpf_loader.h"
#include "core/log.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

/* Whether learned entry @x is one a checked passthrough may present its name for. */
int sb_sni_relevant(const struct sl_addr_rule *x)
{
	return (x->verdict == SL_VERDICT_SNI || x->verdict == SL_VERDICT_ALLOW) &&
	       (x->protos & SL_PROTO_TCP);
}

/* The kernel value of @name at @family/@addr from @box's learned entries (n 0: none). */
static void name_value(const struct sl_box *box, uint8_t family, const uint8_t *addr,
		       const char *name, struct sl_sni_val *v)
{
	memset(v, 0, sizeof(*v));
	sb_lx_for_each_at(i, &box->learned.ix, &box->learned.rules, family, addr) {
		const struct sl_addr_rule *x = &box->learned.rules.v[i];

		if (!sb_sni_relevant(x) || strcmp(box->learned.names[i], name))
			continue;
		if (v->n == SL_SNI_RANGES) {
			/* More port ranges than the value holds: the name is refused on the
			 * ones left out (fail closed), said once per write. */
			sl_warn("sandbox %s: %s has more than %d port ranges at one address; "
				"the kernel SNI check keeps %d",
				box->name, name, SL_SNI_RANGES, SL_SNI_RANGES);
			break;
		}
		v->r[v->n].lo = x->port_lo;
		v->r[v->n].hi = x->port_hi;
		v->r[v->n].expires_ns = x->expires_ns;
		v->n++;
	}
}

int sb_sni_write_addr(struct sl_registry *r, struct sl_box *box, uint8_t family,
		      const uint8_t *addr, struct sl_kbatch *kb)
{
	int err = 0;

	if (!r->bpf)
		return 0;
	for (uint32_t i = sb_lx_first_at(&box->learned.ix, &box->learned.rules, family, addr);
	     i != SB_LX_NONE && !err; i = sb_lx_next_at(&box->learned.ix, &box->learned.rules, i)) {
		const char *name = box->learned.names[i];
		struct sl_sni_val v;
		int seen = 0;

		if (!name[0] || !sb_sni_relevant(&box->learned.rules.v[i]))
			continue;
		/* Each name once: skip it if an earlier entry of the chain had it. */
		for (uint32_t k =
			     sb_lx_first_at(&box->learned.ix, &box->learned.rules, family, addr);
		     k != i && !seen; k = sb_lx_next_at(&box->learned.ix, &box->learned.rules, k))
			seen = sb_sni_relevant(&box->learned.rules.v[k]) &&
			       !strcmp(box->learned.names[k], name);
		if (seen)
			continue;
		name_value(box, family, addr, name, &v);
		err = sl_kbatch_sni(kb, r->bpf, box->id, family, addr, name, &v);
	}
	return err;
}

void sb_sni_forget(struct sl_box *box, const struct sl_addr_rule *x, const char *name)
{
	struct sl_registry *r = box->reg;

	if (!r || !r->bpf || !name[0] || !sb_sni_relevant(x))
		return;
	/* Entries of the name left at the address are written back by write_addr(). */
	sl_bpf_set_sni_name(r->bpf, box->id, x->family, x->addr, name, NULL);
}

struct sync_ctx {
	struct sl_box *box;
	struct sl_sni_key *stale;
	size_t n, cap;
};

/* Collects the kernel entries no learned entry of the box backs any more. */
static int collect_stale(const struct sl_sni_key *k, const struct sl_sni_val *v, void *arg)
{
	struct sync_ctx *c = arg;
	struct sl_sni_val want;
	char name[SL_SNI_NAME_MAX];

	(void)v;
	memcpy(name, k->name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	name_value(c->box, k->family, k->addr, name, &want);
	if (want.n)
		return 0;
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct sl_sni_key *s = realloc(c->stale, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		c->stale = s;
		c->cap = cap;
	}
	c->stale[c->n++] = *k;
	return 0;
}

int sb_sni_sync(struct sl_registry *r, struct sl_box *box)
{
	struct sync_ctx c = { .box = box };
	int err;

	if (!r->bpf)
		return 0;
	err = sl_bpf_sni_names_each(r->bpf, box->id, collect_stale, &c);
	for (size_t i = 0; i < c.n; i++) {
		char name[SL_SNI_NAME_MAX];

		memcpy(name, c.stale[i].name, sizeof(name));
		name[sizeof(name) - 1] = 0;
		sl_bpf_set_sni_name(r->bpf, box->id, c.stale[i].family, c.stale[i].addr, name,
				    NULL);
	}
	free(c.stale);
	/* Each address once: from the first entry of its chain. */
	for (size_t i = 0; i < box->learned.rules.n && !err; i++) {
		const struct sl_addr_rule *x = &box->learned.rules.v[i];

		if (sb_lx_first_at(&box->learned.ix, &box->learned.rules, x->family, x->addr) == i)
			err = sb_sni_write_addr(r, box, x->family, x->addr, NULL);
	}
	return err;
}

void sb_sni_drop(struct sl_registry *r, struct sl_box *box)
{
	if (r->bpf)
		sl_bpf_drop_sni_names(r->bpf, box->id);
}
