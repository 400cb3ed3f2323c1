// SPDX-License-Identifier: MIT
/*
 * Switching a sandbox's layer (a handler set or cleared, a policy reloaded): the new rules
 * into the other rule bank, one map write to make them the ones in force, then the flows the
 * new layer forbids closed.
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

/* ---- switching layers ---- */

/* The sandbox after a switch, and its learned entries from before it (@old). */
struct kill_ctx {
	struct sl_box *box;
	const struct sb_learned *old;
};

/* Whether @box still grants, at @family/@addr on TCP @dport, every name @old granted there
 * (the names a checked passthrough flow may have presented). A name not known (resolved
 * before a restart) cannot be told: no. */
static int names_kept(const struct sl_box *box, const struct sb_learned *old, uint8_t family,
		      const uint8_t *addr, uint16_t dport)
{
	for (uint32_t i = sb_lx_first_at(&old->ix, &old->rules, family, addr); i != SB_LX_NONE;
	     i = sb_lx_next_at(&old->ix, &old->rules, i)) {
		const struct sl_addr_rule *x = &old->rules.v[i];
		int kept = 0;

		if (!sb_sni_relevant(x) || dport < x->port_lo || dport > x->port_hi)
			continue;
		if (!old->names[i][0])
			return 0;
		for (uint32_t k =
			     sb_lx_first_at(&box->learned.ix, &box->learned.rules, family, addr);
		     k != SB_LX_NONE && !kept;
		     k = sb_lx_next_at(&box->learned.ix, &box->learned.rules, k))
			kept = sb_sni_relevant(&box->learned.rules.v[k]) &&
			       dport >= box->learned.rules.v[k].port_lo &&
			       dport <= box->learned.rules.v[k].port_hi &&
			       !strcmp(box->learned.names[k], old->names[i]);
		if (!kept)
			return 0;
	}
	return 1;
}

/* Whether a flow of @box to @dst:@dport is one the kernel would no longer let through. */
static int flow_condemned(void *arg, uint8_t family, uint8_t proto, const uint8_t *dst,
			  uint16_t dport)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct kill_ctx *kc = arg;
	struct sl_box *box = kc->box;
	uint8_t addr[16] = { 0 };
	struct sl_rule val = { 0 };
	uint8_t bit = proto == IPPROTO_TCP ? SL_PROTO_TCP : SL_PROTO_UDP;
	uint64_t now = sl_now_ns();
	int verdict = SL_VERDICT_DENY;

	/* Audit mode closes nothing: the kernel lets through what the rules deny. */
	if (box->audit)
		return 0;
	if (family == AF_INET6 && !memcmp(dst, mapped, 12)) {
		family = AF_INET;
		memcpy(addr, dst + 12, 4);
	} else {
		memcpy(addr, dst, family == AF_INET ? 4 : 16);
	}
	/* Connections to the sandbox's own listeners are the proxy's and the DNS listener's
	 * (sl_proxy_listener_revalidate judges those by name). */
	if ((dport == box->dns_port || dport == box->proxy_port) &&
	    ((family == AF_INET && addr[0] == 127) ||
	     (family == AF_INET6 && !memcmp(addr, in6addr_loopback.s6_addr, 16))))
		return 0;
	if (sl_rules_merge(&box->layer->rules, family, addr, family == AF_INET ? 32 : 128, &val) ||
	    sl_rules_merge(&box->learned.rules, family, addr, family == AF_INET ? 32 : 128, &val))
		return 1; /* cannot tell: fail closed */
	for (uint32_t i = 0; i < val.n && i < SL_MAX_PORT_RANGES; i++) {
		const struct sl_port_range *pr = &val.r[i];

		if (dport >= pr->lo && dport <= pr->hi && (pr->protos & bit) &&
		    (!pr->expires_ns || pr->expires_ns > now) &&
		    SL_VERDICT_RANK(pr->verdict) > SL_VERDICT_RANK(verdict))
			verdict = pr->verdict;
	}
	/* A checked passthrough flow presented one name the kernel accepted, which it did not
	 * keep: the flow stays only if every name it could have been is still granted here. */
	if (verdict == SL_VERDICT_SNI)
		return proto != IPPROTO_TCP || !kc->old ||
		       !names_kept(box, kc->old, family, addr, dport);
	return verdict != SL_VERDICT_ALLOW;
}

/* The cgroup ids of @path and every cgroup below it (sockets carry the one they were made
 * in). */
static int subtree_cgids(const char *path, uint64_t **ids, size_t *n, size_t *cap, int depth)
{
	DIR *d;
	struct dirent *de;
	uint64_t id;
	int e = 0;

	if (depth > SL_MAX_CGROUP_DEPTH || sl_cgroup_id(path, &id))
		return 0;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		uint64_t *v = realloc(*ids, c * sizeof(*v));

		if (!v)
			return -ENOMEM;
		*ids = v;
		*cap = c;
	}
	(*ids)[(*n)++] = id;
	d = opendir(path);
	if (!d)
		return 0;
	while (!e && (de = readdir(d))) {
		char sub[PATH_MAX];

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= (int)sizeof(sub))
			continue;
		e = subtree_cgids(sub, ids, n, cap, depth + 1);
	}
	closedir(d);
	return e;
}

static size_t kill_flows(struct sl_box *box, const struct sb_learned *old)
{
	struct kill_ctx kc = { box, old };
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0, killed = 0;
	int e;

	e = subtree_cgids(box->cgroup, &ids, &n, &cap, 0);
	if (!e && n)
		e = sl_sockdiag_destroy(box->netns_fd, ids, n, flow_condemned, &kc, &killed);
	if (e)
		sl_err("sandbox %s: closing flows the policy no longer allows failed: %s",
		       box->name, strerror(-e));
	free(ids);
	return killed;
}

static void switch_event(struct sl_registry *r, const struct sl_box *box, const char *what,
			 const char *old, const char *who, const struct sl_switch_result *res)
{
	json_t *j;

	if (!r->lua_opts.events)
		return;
	j = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s, s:I, s:I, s:I}", "type", "handler",
		      "sandbox", box->name, "action", what, "old", old[0] ? old : NULL, "new",
		      box->layer->handler[0] ? box->layer->handler : NULL, "by", who ? who : "?",
		      "closed_kernel", (json_int_t)res->closed_kernel, "closed_proxy",
		      (json_int_t)res->closed_proxy, "dns_dropped", (json_int_t)res->dns_dropped);
	if (j && box->audit)
		json_object_set_new(j, "mode", json_string("audit"));
	if (j && box->layer->params) {
		json_t *p = json_loads(box->layer->params, 0, NULL);

		if (p)
			json_object_set_new(j, "params", p);
	}
	sl_events_publish(r->lua_opts.events, box->name, j);
}

/*
 * The layer of (@lua, @base) with outboundHandlers[@handler] active (NULL or "": none) and
 * @params: the handler's egress run for them (in the sandbox's Lua state: loop thread),
 * checked and compiled. Into *@out (a new reference). 0 or -errno with the reason in @err.
 */
static int build_layer(struct sl_registry *r, struct sl_lua *lua, struct sb_base *base,
		       const char *handler, const char *params, struct sl_layer **out, char *err,
		       size_t errlen)
{
	struct sl_policy *hl = NULL;
	struct sl_layer *l;
	int e;

	*out = NULL;
	if (handler && *handler) {
		if (strlen(handler) >= sizeof(l->handler)) {
			sl_errf(err, errlen, "handler name too long");
			return -EINVAL;
		}
		e = sl_lua_handler_egress(lua, handler, params, &hl, err, errlen);
		if (e)
			return e;
	} else {
		handler = NULL;
		params = NULL;
	}
	l = sb_layer_new(lua, base, handler, hl, params);
	if (!l) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e = sb_check_unix(r, l->policy, l->hlayer ? "the handler's egress" : "egress", err, errlen);
	if (!e)
		e = sb_layer_compile(l, err, errlen);
	if (e) {
		sb_layer_unref(l);
		return e;
	}
	*out = l;
	return 0;
}

/*
 * Moves @box to layer @nl (the reference is taken, whatever the outcome): what resolved under
 * the old layer is kept where the new one gives the name, the kernel entries are compiled
 * (nothing changes on error), then they go into the kernel under the other rule bank and one
 * update of the sandbox's entry makes them the ones in force. The old bank is cleared after,
 * the old layer dropped, and the flows the new one forbids closed.
 */
static int switch_layer(struct sl_registry *r, struct sl_box *box, struct sl_layer *nl,
			struct sl_switch_result *res, char *err, size_t errlen)
{
	struct sl_layer *old = box->layer;
	const struct sl_policy *layer = nl->policy;
	struct sb_learned learned = { 0 };
	struct sl_kentry *ents = NULL, bad;
	size_t nents = 0;
	struct sl_sandbox ksb;
	uint32_t bank, old_bank = box->rules_id;
	int e = 0, was_icpt, now_icpt;

	memset(res, 0, sizeof(*res));
	sl_rule_set_init(&learned.rules);
	/* What resolved under the old layer stays only where the new one gives the name. */
	for (size_t i = 0; i < box->learned.rules.n && !e; i++) {
		const struct sl_addr_rule *x = &box->learned.rules.v[i];
		const char *name = box->learned.names[i];
		struct sl_grant g[16];
		size_t ng = 0;

		if (name[0] && sl_policy_addr_permitted(layer, x->family, x->addr))
			ng = sl_policy_name_grants(layer, name, g, 16);
		if (!ng)
			res->dns_dropped++;
		for (size_t k = 0; k < ng && !e; k++) {
			struct sl_addr_rule y = *x;

			y.port_lo = g[k].lo;
			y.port_hi = g[k].hi;
			y.protos = g[k].protos;
			y.verdict = g[k].verdict;
			e = sb_learned_add(&learned, name, &y);
		}
	}
	if (!e)
		e = sb_compile_all(&nl->rules, &learned, &ents, &nents, &bad);
	if (e) {
		sl_errf(err, errlen, "compiling the new rules failed: %s",
			e == -E2BIG  ? "too many port ranges for one address" :
			e == -EDQUOT ? "too many resolved addresses" :
				       strerror(-e));
		goto out;
	}
	e = sl_lua_set_active(nl->lua, nl->handler[0] ? nl->handler : NULL, nl->params, err,
			      errlen);
	if (e)
		goto out;

	/* From here on the kernel follows. */
	bank = (box->rules_id & SL_RULES_BANK) ? box->id : box->id | SL_RULES_BANK;
	e = sl_bpf_sync_rules(r->bpf, bank, ents, nents);
	if (!e)
		e = sb_sync_unix(r, bank, layer);
	was_icpt = sl_policy_needs_proxy(old->policy);
	now_icpt = sl_policy_needs_proxy(layer);
	if (!e && now_icpt && !was_icpt)
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 1);
	if (!e) {
		box->rules_id = bank;
		sb_kernel_entry(r, box, &ksb);
		e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb); /* the switch */
		if (e)
			box->rules_id = old_bank;
	}
	if (e) {
		sl_bpf_sync_rules(r->bpf, bank, NULL, 0);
		sb_sync_unix(r, bank, NULL);
		sl_lua_set_active(old->lua, old->handler[0] ? old->handler : NULL, old->params, err,
				  errlen);
		sl_errf(err, errlen, "writing the kernel rules failed: %s", strerror(-e));
		goto out;
	}
	e = sl_bpf_sync_rules(r->bpf, old_bank, NULL, 0);
	if (!e)
		e = sb_sync_unix(r, old_bank, NULL);
	if (e)
		sl_warn("sandbox %s: clearing the old rule bank failed: %s", box->name,
			strerror(-e));
	e = 0;
	if (!now_icpt && was_icpt)
		sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 0);

	/* The sandbox's own state follows: one pointer, and the learned set swapped (the old
	 * one, in @learned from here on, judges the open flows below). */
	box->layer = nl;
	nl = old;
	{
		struct sb_learned t = box->learned;

		box->learned = learned;
		learned = t;
	}
	if (box->layer->handler[0]) {
		if (strcmp(old->handler, box->layer->handler) || !box->handler_since_s)
			box->handler_since_s = time(NULL);
	} else {
		box->handler_since_s = 0;
	}
	box->switches++;
	sl_dns_listener_flush(box->dns); /* answers cached under the old layer */

	/* The names the kernel SNI check accepts follow the learned entries. */
	e = sb_sni_sync(r, box);
	if (e) {
		sl_warn("sandbox %s: rewriting the names of checked passthrough failed: %s",
			box->name, strerror(-e));
		e = 0;
	}

	/* Open flows the new layer does not allow. */
	res->closed_proxy = box->proxy ? sl_proxy_listener_revalidate(box->proxy) : 0;
	res->closed_kernel = kill_flows(box, &learned); /* the learned entries of before */
	e = sb_save_state(r, box);
	if (e) {
		sl_warn("sandbox %s: saving state failed: %s", box->name, strerror(-e));
		e = 0; /* in force now; a restart would come back with the previous layer */
	}
out:
	free(ents);
	sb_layer_unref(nl); /* the old layer after a switch, the new one if none happened */
	sb_learned_free(&learned);
	return e;
}

int sl_sandbox_set_handler(struct sl_registry *r, struct sl_box *box, const char *handler,
			   const char *params, const char *who, struct sl_switch_result *res,
			   char *err, size_t errlen)
{
	char old[sizeof(box->layer->handler)];
	struct sl_layer *nl;
	int e;

	memset(res, 0, sizeof(*res));
	if (!sb_lua(box)) {
		sl_errf(err, errlen, "sandbox %s has no working policy", box->name);
		return -EINVAL;
	}
	if (handler && !sl_lua_handler_exists(sb_lua(box), handler)) {
		sl_errf(err, errlen, "the policy of %s has no handler '%s' in outboundHandlers",
			box->name, handler);
		return -ENOENT;
	}
	snprintf(old, sizeof(old), "%s", box->layer->handler);
	e = build_layer(r, sb_lua(box), box->layer->base, handler, params, &nl, err, errlen);
	if (!e)
		e = switch_layer(r, box, nl, res, err, errlen);
	if (e)
		return e;
	sl_info("sandbox %s: handler %s -> %s (by %s; closed %zu flows, %zu proxied)", box->name,
		old[0] ? old : "(policy)",
		box->layer->handler[0] ? box->layer->handler : "(policy)", who ? who : "?",
		res->closed_kernel, res->closed_proxy);
	switch_event(r, box, handler ? "set" : "clear", old, who, res);
	return 0;
}

int sl_sandbox_reload(struct sl_registry *r, struct sl_box *box, const char *path, const char *src,
		      size_t len, const char *who, struct sl_switch_result *res, char *err,
		      size_t errlen)
{
	const char *chunk = path && *path	? path :
			    box->policy_path[0] ? box->policy_path :
						  "policy";
	const char *handler = box->layer->handler[0] ? box->layer->handler : NULL;
	struct sl_policy *bp = NULL;
	struct sl_layer *nl = NULL;
	struct sb_base *base = NULL;
	struct sl_lua *lua;
	char *copy;
	int e;

	memset(res, 0, sizeof(*res));
	if (len > POLICY_MAX_BYTES) {
		sl_errf(err, errlen, "policy too large (max %u bytes)", POLICY_MAX_BYTES);
		return -EINVAL;
	}
	copy = malloc(len + 1);
	if (!copy) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(copy, src, len);
	copy[len] = 0;
	lua = sl_lua_load(chunk, copy, len, &r->lua_opts, box->name, &bp, err, errlen);
	if (!lua) {
		free(copy);
		return -EINVAL;
	}
	base = sb_base_new(bp);
	if (!base) {
		sl_errf(err, errlen, "out of memory");
		e = -ENOMEM;
		goto fail;
	}
	if (handler && !sl_lua_handler_exists(lua, handler)) {
		sl_errf(err, errlen,
			"the active handler '%s' is not in the new policy: clear it "
			"first (sluice handler clear %s)",
			handler, box->name);
		e = -EINVAL;
		goto fail;
	}
	e = build_layer(r, lua, base, handler, box->layer->params, &nl, err, errlen);
	if (!e)
		e = switch_layer(r, box, nl, res, err, errlen);
	if (e)
		goto fail;
	sl_lua_unref(lua);
	sb_base_unref(base);
	free(box->policy_src);
	box->policy_src = copy;
	box->policy_len = len;
	if (path && *path)
		snprintf(box->policy_path, sizeof(box->policy_path), "%s", path);
	e = sb_save_state(r, box);
	if (e)
		sl_warn("sandbox %s: saving state failed: %s", box->name, strerror(-e));
	sl_info("sandbox %s: policy reloaded from %s (by %s)", box->name, chunk, who ? who : "?");
	switch_event(r, box, "reload", box->layer->handler, who, res);
	return 0;
fail:
	sl_lua_unref(lua);
	sb_base_unref(base);
	free(copy);
	return e;
}

int sl_sandbox_set_mode(struct sl_registry *r, struct sl_box *box, int audit, const char *who,
			struct sl_switch_result *res, char *err, size_t errlen)
{
	int old = box->audit, e;
	json_t *j;

	memset(res, 0, sizeof(*res));
	audit = !!audit;
	if (audit == old)
		return 0;
	if (!sb_lua(box)) {
		sl_errf(err, errlen, "sandbox %s has no working policy", box->name);
		return -EINVAL;
	}
	/* The flag rides in the sandbox entry that switch_layer() writes once: the rules and the
	 * mode change together, and leaving audit closes what the layer forbids. The layer is
	 * the same one, written into the other bank: it cannot have changed. */
	box->audit = audit;
	e = switch_layer(r, box, sb_layer_ref(box->layer), res, err, errlen);
	if (e) {
		box->audit = old;
		return e;
	}
	box->switches--; /* a mode switch is not a layer switch */
	box->mode_since_s = time(NULL);
	e = sb_save_state(r, box);
	if (e)
		sl_warn("sandbox %s: saving state failed: %s", box->name, strerror(-e));
	sl_info("sandbox %s: mode %s -> %s (by %s; closed %zu flows, %zu proxied)", box->name,
		old ? "audit" : "enforce", audit ? "audit" : "enforce", who ? who : "?",
		res->closed_kernel, res->closed_proxy);
	if (r->lua_opts.events) {
		j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "type", "mode", "sandbox",
			      box->name, "mode", audit ? "audit" : "enforce", "old",
			      old ? "audit" : "enforce", "by", who ? who : "?", "closed_kernel",
			      (json_int_t)res->closed_kernel, "closed_proxy",
			      (json_int_t)res->closed_proxy, "dns_dropped",
			      (json_int_t)res->dns_dropped);
		sl_events_publish(r->lua_opts.events, box->name, j);
	}
	return 0;
}
