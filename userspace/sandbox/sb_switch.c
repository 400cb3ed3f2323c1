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
	sb_lx_for_each_at(i, &old->ix, &old->rules, family, addr) {
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
	if (sl_rules_merge_ix(&box->layer->rules, &box->layer->rules_ix, family, addr,
			      family == AF_INET ? 32 : 128, &val) ||
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

/* Calls @visit for cgroup @path and every cgroup below it, down to SL_MAX_CGROUP_DEPTH; a
 * directory gone meanwhile is skipped. Stops at the first nonzero return, which it returns. */
static int walk_cgroups(const char *path, int depth, int (*visit)(const char *dir, void *arg),
			void *arg)
{
	DIR *d;
	struct dirent *de;
	int e;

	if (depth > SL_MAX_CGROUP_DEPTH)
		return 0;
	e = visit(path, arg);
	if (e || !(d = opendir(path)))
		return e;
	while (!e && (de = readdir(d))) {
		char sub[PATH_MAX];

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= (int)sizeof(sub))
			continue;
		e = walk_cgroups(sub, depth + 1, visit, arg);
	}
	closedir(d);
	return e;
}

struct cgids {
	uint64_t *v;
	size_t n, cap;
};

static int add_cgid(const char *dir, void *arg)
{
	struct cgids *ids = arg;
	uint64_t id;

	if (sl_cgroup_id(dir, &id))
		return 0;
	if (ids->n == ids->cap) {
		size_t c = ids->cap ? ids->cap * 2 : 16;
		uint64_t *v = realloc(ids->v, c * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ids->v = v;
		ids->cap = c;
	}
	ids->v[ids->n++] = id;
	return 0;
}

/* The cgroup ids of @path and every cgroup below it (sockets carry the one they were made
 * in), in @ids (freed by the caller). */
static int subtree_cgids(const char *path, struct cgids *ids)
{
	return walk_cgroups(path, 0, add_cgid, ids);
}

/* The flows of @box's cgroups (@ids) in namespace @netns_fd that its rules deny, closed. */
static size_t kill_flows_in(struct sl_box *box, const struct sb_learned *old, int netns_fd,
			    const uint64_t *ids, size_t n)
{
	struct kill_ctx kc = { box, old };
	size_t killed = 0;
	int e;

	e = sl_sockdiag_destroy(netns_fd, ids, n, flow_condemned, &kc, &killed);
	if (e)
		sl_err("sandbox %s: closing flows the policy no longer allows failed: %s",
		       box->name, strerror(-e));
	return killed;
}

size_t sb_kill_flows(struct sl_box *box, const struct sb_learned *old)
{
	struct cgids ids = { 0 };
	size_t killed = 0;
	int e;

	e = subtree_cgids(box->cgroup, &ids);
	if (e)
		sl_err("sandbox %s: listing its cgroups failed: %s", box->name, strerror(-e));
	else if (ids.n)
		killed = kill_flows_in(box, old, box->netns_fd, ids.v, ids.n);
	free(ids.v);
	return killed;
}

#define OLDER_NETNS_MAX 64 /* namespaces judged at an add besides the sandbox's own */

/* An add's judging of older flows in the namespaces of the cgroups' processes. */
struct older {
	struct sl_box *box;
	struct cgids ids;
	struct sl_netns_id seen[OLDER_NETNS_MAX]; /* judged already, besides the sandbox's */
	size_t nseen, killed;
	int overflow; /* a namespace left unjudged: @seen was full */
};

/* Whether namespace @id is still to be judged (then it joins o->seen). */
static int netns_new(struct older *o, const struct sl_netns_id *id)
{
	const struct sl_box *box = o->box;

	if (box->netns_fd >= 0 ? id->dev == box->netns_dev && id->ino == box->netns_ino :
				 sl_netns_is_ours(id))
		return 0;
	for (size_t i = 0; i < o->nseen; i++)
		if (o->seen[i].dev == id->dev && o->seen[i].ino == id->ino)
			return 0;
	if (o->nseen == OLDER_NETNS_MAX) {
		o->overflow = 1;
		return 0;
	}
	o->seen[o->nseen++] = *id;
	return 1;
}

/* The processes of cgroup @dir (walk_cgroups() visits each of the subtree): the flows of each
 * namespace one of them is in, other than those judged already. */
static int kill_flows_of_procs(const char *dir, void *arg)
{
	struct older *o = arg;
	char path[PATH_MAX + 16], line[32];
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
		return 0;
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (!o->overflow && fgets(line, sizeof(line), f)) {
		char ns[64];
		struct sl_netns_id id;
		int fd;

		snprintf(ns, sizeof(ns), "/proc/%d/ns/net", atoi(line));
		fd = sl_netns_open(ns, &id);
		if (fd < 0)
			continue; /* gone meanwhile */
		if (netns_new(o, &id))
			o->killed += kill_flows_in(o->box, NULL, fd, o->ids.v, o->ids.n);
		close(fd);
	}
	fclose(f);
	return 0;
}

size_t sb_kill_older_flows(struct sl_box *box)
{
	struct older *o = calloc(1, sizeof(*o));
	size_t killed;
	int e;

	if (!o)
		return 0;
	o->box = box;
	e = subtree_cgids(box->cgroup, &o->ids);
	if (e) {
		sl_err("sandbox %s: listing its cgroups failed: %s", box->name, strerror(-e));
	} else if (o->ids.n) {
		o->killed = kill_flows_in(box, NULL, box->netns_fd, o->ids.v, o->ids.n);
		walk_cgroups(box->cgroup, 0, kill_flows_of_procs, o);
		if (o->overflow)
			sl_warn("sandbox %s: its processes are in more than %d network namespaces; "
				"the connections of the others were not judged",
				box->name, OLDER_NETNS_MAX);
	}
	killed = o->killed;
	free(o->ids.v);
	free(o);
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

/* ---- a switch under way ---- */

enum sw_kind { SW_HANDLER, SW_RELOAD, SW_MODE };

struct sw_addr {
	uint8_t family;
	uint8_t addr[16];
};

/*
 * A switch of one sandbox (box->switching while under way): a handler switch, a policy reload
 * or a mode switch. Its job builds and compiles the new layer and writes it into the rule bank
 * not in force, on the jobs thread; its completion, on the loop, makes that bank the one in
 * force and does the rest (the learned set, flows, events, the state file), then answers.
 */
struct sb_switching {
	struct sl_job job;
	struct sl_registry *r;
	struct sl_box *box;
	enum sw_kind kind;
	char *who;
	char old[sizeof(((struct sl_layer *)0)->handler)]; /* the handler before */
	/* The new layer: built on the loop for a handler switch (the handler's egress runs in the
	 * sandbox's Lua state, which the loop's requests use) and a mode switch (the layer in
	 * force, already compiled), by the job for a reload (a new Lua state). */
	struct sl_layer *nl;
	int compiled;
	/* A reload: the policy text (handed to the box when in force), where it came from, the
	 * handler kept and its params, the registry's Lua options without events and KV. */
	char *src, *path, *handler, *params;
	size_t len;
	char chunk[PATH_MAX];
	struct sl_lua_opts opts;
	int audit; /* a mode switch: the mode asked for */
	/* box->learned when the switch began (rules and names copied, for the job), and its
	 * generation then. */
	struct sl_addr_rule *snap;
	char (*snap_names)[SL_DNS_NAME_BUF];
	size_t nsnap;
	uint64_t snap_gen;
	/* What the job made: the learned entries the new layer keeps, and the new bank. */
	struct sb_learned learned;
	size_t dns_dropped;
	uint32_t bank;
	int e;
	char err[512];
	/* Addresses whose entry in the bank in force the loop rewrote while the job ran. */
	struct sw_addr *dirty;
	size_t ndirty, dirty_cap;
	int dirty_lost;
	sl_box_switched_fn *done;
	void *arg;
	/* In force: the old bank (cleared by retire()), what the switch did, and the state file
	 * formatted on the loop and written by @save on the jobs thread (save_e its result). */
	uint32_t old_bank;
	struct sl_switch_result res;
	struct sl_job save;
	char *state;
	int save_e, saved;
};

void sb_switch_note(struct sb_switching *s, uint8_t family, const uint8_t *addr)
{
	if (s->ndirty == s->dirty_cap) {
		size_t cap = s->dirty_cap ? 2 * s->dirty_cap : 16;
		struct sw_addr *v = realloc(s->dirty, cap * sizeof(*v));

		if (!v) {
			s->dirty_lost = 1;
			return;
		}
		s->dirty = v;
		s->dirty_cap = cap;
	}
	s->dirty[s->ndirty].family = family;
	memcpy(s->dirty[s->ndirty].addr, addr, 16);
	s->ndirty++;
}

static void switching_free(struct sb_switching *s)
{
	sb_layer_unref(s->nl);
	free(s->who);
	free(s->src);
	free(s->path);
	free(s->handler);
	free(s->params);
	free(s->snap);
	free(s->snap_names);
	sb_learned_free(&s->learned);
	free(s->dirty);
	sb_state_text_free(s->state);
	free(s);
}

/*
 * The learned entries (@v, @names: @n of them) that @layer keeps: each where the new layer
 * still gives its name, with the new layer's ports and verdicts. Into @out (empty); how many
 * it drops into *@dropped. Any thread: reads nothing but its arguments.
 */
static int learned_under(const struct sl_policy *layer, const struct sl_addr_rule *v,
			 char (*names)[SL_DNS_NAME_BUF], size_t n, struct sb_learned *out,
			 size_t *dropped)
{
	int e = 0;

	*dropped = 0;
	for (size_t i = 0; i < n && !e; i++) {
		const struct sl_addr_rule *x = &v[i];
		const char *name = names[i];
		struct sl_grant g[16];
		size_t ng = 0;

		if (name[0] && sl_policy_addr_permitted(layer, x->family, x->addr))
			ng = sl_policy_name_grants(layer, name, g, 16);
		if (!ng)
			(*dropped)++;
		for (size_t k = 0; k < ng && !e; k++) {
			struct sl_addr_rule y = *x;

			y.port_lo = g[k].lo;
			y.port_hi = g[k].hi;
			y.protos = g[k].protos;
			y.verdict = g[k].verdict;
			e = sb_learned_add(out, name, &y);
		}
	}
	return e;
}

/* A reload's new layer, on the jobs thread: the policy loaded into a new Lua state (nobody
 * else holds it), the active handler's egress run there. */
static int reload_layer(struct sb_switching *s)
{
	struct sl_policy *bp = NULL, *hl = NULL;
	struct sb_base *base = NULL;
	struct sl_lua *lua;
	int e = 0;

	lua = sl_lua_load(s->chunk, s->src, s->len, &s->opts, s->box->name, &bp, s->err,
			  sizeof(s->err));
	if (!lua)
		return -EINVAL;
	base = sb_base_new(bp);
	if (!base) {
		sl_errf(s->err, sizeof(s->err), "out of memory");
		e = -ENOMEM;
	} else if (s->handler && !sl_lua_handler_exists(lua, s->handler)) {
		sl_errf(s->err, sizeof(s->err),
			"the active handler '%s' is not in the new policy: clear it "
			"first (sluice handler clear %s)",
			s->handler, s->box->name);
		e = -EINVAL;
	} else if (s->handler) {
		e = sl_lua_handler_egress(lua, s->handler, s->params, &hl, s->err, sizeof(s->err));
	}
	if (!e) {
		s->nl = sb_layer_new(lua, base, s->handler, hl, s->params);
		if (!s->nl) {
			sl_errf(s->err, sizeof(s->err), "out of memory");
			e = -ENOMEM;
		}
	}
	sl_lua_unref(lua);
	sb_base_unref(base);
	return e;
}

/* The jobs thread: everything that grows with the policy. The box is read for its name
 * only; the new bank is the job's alone. */
static void switching_run(struct sl_job *job)
{
	struct sb_switching *s = sl_container_of(job, struct sb_switching, job);
	struct sl_kentry *ents = NULL, bad;
	size_t nents = 0;
	int e = 0;

	if (s->kind == SW_RELOAD)
		e = reload_layer(s);
	if (!e && !s->compiled) {
		e = sb_check_unix(s->r, s->nl->policy,
				  s->nl->hlayer ? "the handler's egress" : "egress", s->err,
				  sizeof(s->err));
		if (!e)
			e = sb_layer_compile(s->nl, s->err, sizeof(s->err));
	}
	/* What resolved under the old layer stays only where the new one gives the name. */
	if (!e && s->nl->policy)
		e = learned_under(s->nl->policy, s->snap, s->snap_names, s->nsnap, &s->learned,
				  &s->dns_dropped);
	if (!e)
		e = sb_compile_all(&s->nl->rules, &s->learned, &ents, &nents, &bad);
	if (e && !s->err[0])
		sl_errf(s->err, sizeof(s->err), "compiling the new rules failed: %s",
			e == -E2BIG  ? "too many port ranges for one address" :
			e == -EDQUOT ? "too many resolved addresses" :
				       strerror(-e));
	if (!e) {
		e = sl_bpf_sync_rules(s->r->bpf, s->bank, ents, nents);
		if (e)
			sl_errf(s->err, sizeof(s->err), "writing the kernel rules failed: %s",
				strerror(-e));
	}
	free(ents);
	s->e = e;
}

/* The bank a switch left, cleared on the jobs thread: as many syscalls as it has entries
 * (100,000 took 0.2-0.4 s on the loop). A later switch of the box writes that bank only
 * after (the jobs run in order), and its removal waits for it (box->jobs). The old layer
 * goes there too when nobody else holds it (a reload's: closing its Lua state and freeing a
 * 100,000-rule policy took 19 ms on the loop). */
struct sb_retire {
	struct sl_job job;
	struct sl_registry *r;
	struct sl_box *box;
	uint32_t bank;
	struct sl_layer *old; /* NULL: none, or freed */
	int e;
};

static void retire_run(struct sl_job *job)
{
	struct sb_retire *t = sl_container_of(job, struct sb_retire, job);

	t->e = sl_bpf_sync_rules(t->r->bpf, t->bank, NULL, 0);
	sb_layer_unref(t->old); /* the last reference of a layer nobody else reaches */
	t->old = NULL;
}

static void retire_done(struct sl_job *job)
{
	struct sb_retire *t = sl_container_of(job, struct sb_retire, job);
	struct sl_box *box = t->box;

	if (t->e)
		sl_warn("sandbox %s: clearing the old rule bank failed: %s", box->name,
			strerror(-t->e));
	sb_layer_unref(t->old); /* not run (cancelled) */
	free(t);
	sb_box_job_end(box);
}

/* Clears @bank of @box off the loop, and frees *@old there (taken, NULL after) if nobody
 * else holds it. */
static void retire(struct sl_registry *r, struct sl_box *box, uint32_t bank, struct sl_layer **old)
{
	struct sl_jobs *j = sb_worker_jobs(box->w);
	struct sb_retire *t = j ? calloc(1, sizeof(*t)) : NULL;
	int e;

	if (!t) {
		e = sl_bpf_sync_rules(r->bpf, bank, NULL, 0);
		if (e)
			sl_warn("sandbox %s: clearing the old rule bank failed: %s", box->name,
				strerror(-e));
		return;
	}
	t->r = r;
	t->box = box;
	t->bank = bank;
	if (*old && sb_layer_sole(*old)) {
		t->old = *old;
		*old = NULL;
	}
	t->job.run = retire_run;
	t->job.done = retire_done;
	box->jobs++;
	sl_jobs_submit(j, &t->job);
}

/*
 * The loop, once the new bank is written: what resolved while the job ran is brought into it
 * (the learned set judged again, the addresses rewritten meanwhile written again), then one
 * update of the sandbox's entry makes it the bank in force. The old bank is cleared after,
 * the layers and learned sets swapped, and the flows the new layer forbids closed. On error
 * nothing changed (the new bank is cleared).
 */
static int switch_apply(struct sb_switching *s, struct sl_switch_result *res)
{
	struct sl_registry *r = s->r;
	struct sl_box *box = s->box;
	struct sl_layer *old = box->layer, *nl = s->nl;
	const struct sl_policy *layer = nl->policy;
	struct sl_sandbox ksb;
	uint32_t bank = s->bank, old_bank = box->rules_id;
	int e = 0, was_icpt, now_icpt, old_audit = box->audit;
	char *err = s->err;
	size_t errlen = sizeof(s->err);

	res->dns_dropped = s->dns_dropped;
	if (s->dirty_lost) {
		sl_errf(err, errlen, "out of memory");
		e = -ENOMEM;
		goto fail;
	}
	if (box->learned.gen != s->snap_gen) {
		struct sb_learned now = { 0 };

		sl_rule_set_init(&now.rules);
		e = learned_under(layer, box->learned.rules.v, box->learned.names,
				  box->learned.rules.n, &now, &res->dns_dropped);
		sb_learned_free(&s->learned);
		s->learned = now;
		for (size_t i = 0; i < s->ndirty && !e; i++)
			e = sb_learned_write_addr(r, bank, nl, &s->learned, s->dirty[i].family,
						  s->dirty[i].addr, 0, NULL);
		if (e) {
			sl_errf(err, errlen, "bringing in what resolved meanwhile failed: %s",
				e == -EDQUOT ? "too many resolved addresses" : strerror(-e));
			goto fail;
		}
	}
	if (s->kind == SW_RELOAD)
		sl_lua_set_services(nl->lua, r->lua_opts.events, r->lua_opts.kv);
	e = sl_lua_set_active(nl->lua, nl->handler[0] ? nl->handler : NULL, nl->params, err,
			      errlen);
	if (e)
		goto fail;

	/* From here on the kernel follows. */
	e = sb_sync_unix(r, bank, layer);
	was_icpt = sl_policy_needs_proxy(old->policy);
	now_icpt = sl_policy_needs_proxy(layer);
	if (!e && now_icpt && !was_icpt)
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 1, NULL);
	if (!e) {
		box->rules_id = bank;
		if (s->kind == SW_MODE)
			/* a flag of the same entry: it changes with the rules */
			sb_box_set_audit(box, s->audit);
		sb_kernel_entry(r, box, &ksb);
		e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb); /* the switch */
		if (e) {
			box->rules_id = old_bank;
			sb_box_set_audit(box, old_audit);
		}
	}
	if (e) {
		sb_sync_unix(r, bank, NULL);
		sl_lua_set_active(old->lua, old->handler[0] ? old->handler : NULL, old->params, err,
				  errlen);
		sl_errf(err, errlen, "writing the kernel rules failed: %s", strerror(-e));
		goto fail;
	}
	e = sb_sync_unix(r, old_bank, NULL);
	if (e)
		sl_warn("sandbox %s: clearing the old bank's UNIX rules failed: %s", box->name,
			strerror(-e));
	if (!now_icpt && was_icpt)
		sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 0, NULL);

	/* The sandbox's own state follows: one pointer, and the learned set swapped (the old
	 * one, in s->learned from here on, judges the open flows below). */
	box->layer = nl;
	s->nl = old; /* dropped with the switch */
	{
		struct sb_learned t = box->learned;

		box->learned = s->learned;
		box->learned.gen = t.gen + 1;
		s->learned = t;
	}
	if (s->kind != SW_MODE) {
		if (nl->handler[0]) {
			if (strcmp(old->handler, nl->handler) || !box->handler_since_s)
				box->handler_since_s = time(NULL);
		} else {
			box->handler_since_s = 0;
		}
		box->switches++;
	}
	sl_dns_listener_flush(box->dns); /* answers cached under the old layer */

	/* The names the kernel SNI check accepts follow the learned entries. */
	e = sb_sni_sync(r, box);
	if (e)
		sl_warn("sandbox %s: rewriting the names of checked passthrough failed: %s",
			box->name, strerror(-e));

	/* Open flows the new layer does not allow. */
	res->closed_proxy = box->proxy ? sl_proxy_listener_revalidate(box->proxy) : 0;
	res->closed_kernel = sb_kill_flows(box, &s->learned); /* the learned entries of before */
	s->old_bank = old_bank; /* cleared by retire() after the state file is queued */
	return 0;
fail:
	sl_bpf_sync_rules(r->bpf, bank, NULL, 0);
	return e;
}

/* What follows a switch in force: the box's records, the state file, the log and events. */
static void switch_finish(struct sb_switching *s, const struct sl_switch_result *res)
{
	struct sl_registry *r = s->r;
	struct sl_box *box = s->box;
	const char *who = s->who ? s->who : "?";

	if (s->kind == SW_RELOAD) {
		free(box->policy_src);
		box->policy_src = s->src;
		box->policy_len = s->len;
		s->src = NULL;
		if (s->path && *s->path)
			snprintf(box->policy_path, sizeof(box->policy_path), "%s", s->path);
	}
	if (s->kind == SW_MODE)
		box->mode_since_s = time(NULL);
	switch (s->kind) {
	case SW_HANDLER:
		sl_info("sandbox %s: handler %s -> %s (by %s; closed %zu flows, %zu proxied)",
			box->name, s->old[0] ? s->old : "(policy)",
			box->layer->handler[0] ? box->layer->handler : "(policy)", who,
			res->closed_kernel, res->closed_proxy);
		switch_event(r, box, box->layer->handler[0] ? "set" : "clear", s->old, who, res);
		break;
	case SW_RELOAD:
		sl_info("sandbox %s: policy reloaded from %s (by %s)", box->name, s->chunk, who);
		switch_event(r, box, "reload", box->layer->handler, who, res);
		break;
	case SW_MODE:
		sl_info("sandbox %s: mode %s -> %s (by %s; closed %zu flows, %zu proxied)",
			box->name, s->audit ? "enforce" : "audit", s->audit ? "audit" : "enforce",
			who, res->closed_kernel, res->closed_proxy);
		if (r->lua_opts.events)
			sl_events_publish(r->lua_opts.events, box->name,
					  json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
						    "type", "mode", "sandbox", box->name, "mode",
						    s->audit ? "audit" : "enforce", "old",
						    s->audit ? "enforce" : "audit", "by", who,
						    "closed_kernel", (json_int_t)res->closed_kernel,
						    "closed_proxy", (json_int_t)res->closed_proxy,
						    "dns_dropped", (json_int_t)res->dns_dropped));
		break;
	}
}

/* The answer to a switch (@e: refused, or not in force), and the end of it. */
static void switch_answer(struct sb_switching *s, int e)
{
	struct sl_box *box = s->box;

	if (e && s->kind == SW_RELOAD)
		sl_info("sandbox %s: policy reload refused: %s", box->name, s->err);
	s->done(s->arg, e ? NULL : box, e, s->err, &s->res);
	switching_free(s);
}

static void save_run(struct sl_job *job)
{
	struct sb_switching *s = sl_container_of(job, struct sb_switching, save);

	s->save_e = sb_state_write(s->r, s->box->name, s->state, 0);
	s->saved = 1;
}

static void save_warn(struct sb_switching *s)
{
	if (s->save_e) /* in force now; a restart would come back with the previous layer */
		sl_warn("sandbox %s: saving state failed: %s", s->box->name, strerror(-s->save_e));
}

static void save_done(struct sl_job *job)
{
	struct sb_switching *s = sl_container_of(job, struct sb_switching, save);
	struct sl_box *box = s->box;

	if (!s->saved) /* sluiced is stopping: written here, the switch is in force */
		save_run(job);
	save_warn(s);
	switch_answer(s, 0);
	sb_box_job_end(box); /* a removal waiting for it goes on */
}

/*
 * The state file of a switch in force: formatted here, written and fsynced on the jobs thread
 * (an fsync every sandbox of the worker waited for on the loop: 0.2-0.3 ms on an idle disk,
 * 4-18 ms measured on a busy one), before the old bank is cleared there. The answer waits for it, so that a switch
 * answered is one a restart comes back with; a removal waits too (box->jobs: it unlinks the
 * file). 1 if the answer is the job's, 0 if the file was written (or failed) here.
 */
static int switch_save(struct sb_switching *s)
{
	struct sl_jobs *j = sb_worker_jobs(s->box->w);

	s->state = sb_state_text(s->box, &s->save_e);
	if (!s->state)
		return 0;
	if (!j) {
		save_run(&s->save);
		return 0;
	}
	s->save.run = save_run;
	s->save.done = save_done;
	s->box->jobs++;
	sl_jobs_submit(j, &s->save);
	return 1;
}

/* The sandbox's worker: the switch applied (or not), and the answer. */
static void switching_done(struct sl_job *job)
{
	struct sb_switching *s = sl_container_of(job, struct sb_switching, job);
	struct sl_registry *r = s->r;
	struct sl_box *box = s->box;
	int e = s->e, later = 0;

	box->switching = NULL;
	if (job->cancelled) {
		e = -ECANCELED;
		sl_errf(s->err, sizeof(s->err), "sluiced is stopping");
	} else if (box->removed) {
		e = -ENOENT;
		sl_errf(s->err, sizeof(s->err), "sandbox %s was removed while its switch compiled",
			box->name);
	}
	if (e)
		sl_bpf_sync_rules(r->bpf, s->bank, NULL, 0); /* what the job wrote */
	else
		e = switch_apply(s, &s->res);
	if (!e) {
		switch_finish(s, &s->res);
		later = switch_save(s);
		retire(r, box, s->old_bank, &s->nl); /* s->nl: the old layer */
		if (!later)
			save_warn(s);
	}
	if (!later)
		switch_answer(s, e);
	if (box->removed)
		sb_rm_resume(box); /* after the answer: the removal frees the box (or waits for
				    * its jobs: sb_box_job_end()) */
}

/*
 * A switch of @box begun on the loop: refused while another is under way, then the learned
 * entries copied for the job. NULL with -errno in *@e and the reason in @err.
 */
static struct sb_switching *switching_new(struct sl_registry *r, struct sl_box *box,
					  enum sw_kind kind, const char *who,
					  sl_box_switched_fn *done, void *arg, int *e, char *err,
					  size_t errlen)
{
	struct sb_switching *s;
	size_t n = box->learned.rules.n;

	if (box->switching) {
		sl_errf(err, errlen,
			"sandbox %s: a switch (handler, policy or mode) is under way; ask again "
			"once it is answered",
			box->name);
		*e = -EBUSY;
		return NULL;
	}
	if (kind != SW_RELOAD && !sb_lua(box)) { /* a reload is how it gets one */
		sl_errf(err, errlen, "sandbox %s has no working policy", box->name);
		*e = -EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || (who && !(s->who = strdup(who))) ||
	    (n && (!(s->snap = malloc(n * sizeof(*s->snap))) ||
		   !(s->snap_names = malloc(n * sizeof(*s->snap_names)))))) {
		if (s)
			switching_free(s);
		sl_errf(err, errlen, "out of memory");
		*e = -ENOMEM;
		return NULL;
	}
	if (n) {
		memcpy(s->snap, box->learned.rules.v, n * sizeof(*s->snap));
		memcpy(s->snap_names, box->learned.names, n * sizeof(*s->snap_names));
	}
	s->nsnap = n;
	s->snap_gen = box->learned.gen;
	sl_rule_set_init(&s->learned.rules);
	s->r = r;
	s->box = box;
	s->kind = kind;
	snprintf(s->old, sizeof(s->old), "%s", box->layer->handler);
	s->bank = box->rules_id ^ SL_RULES_BANK;
	s->done = done;
	s->arg = arg;
	s->job.run = switching_run;
	s->job.done = switching_done;
	return s;
}

/* Off to the jobs thread (or run here when there is none). */
static void switching_start(struct sb_switching *s)
{
	struct sl_jobs *j = sb_worker_jobs(s->box->w);

	s->box->switching = s;
	if (j) {
		sl_jobs_submit(j, &s->job);
		return;
	}
	switching_run(&s->job);
	s->job.cancelled = 0;
	switching_done(&s->job);
}

int sl_sandbox_set_handler(struct sl_registry *r, struct sl_box *box, const char *handler,
			   const char *params, const char *who, sl_box_switched_fn *done, void *arg,
			   char *err, size_t errlen)
{
	struct sl_policy *hl = NULL;
	struct sb_switching *s;
	int e;

	s = switching_new(r, box, SW_HANDLER, who, done, arg, &e, err, errlen);
	if (!s)
		return e;
	if (handler && !sl_lua_handler_exists(sb_lua(box), handler)) {
		sl_errf(err, errlen, "the policy of %s has no handler '%s' in outboundHandlers",
			box->name, handler);
		e = -ENOENT;
		goto fail;
	}
	if (handler && strlen(handler) >= sizeof(box->layer->handler)) {
		sl_errf(err, errlen, "handler name too long");
		e = -EINVAL;
		goto fail;
	}
	/* The handler's egress runs in the sandbox's Lua state, here on the loop; its compile
	 * does not. */
	if (handler) {
		e = sl_lua_handler_egress(sb_lua(box), handler, params, &hl, err, errlen);
		if (e)
			goto fail;
	} else {
		params = NULL;
	}
	s->nl = sb_layer_new(sb_lua(box), box->layer->base, handler, hl, params);
	if (!s->nl) {
		sl_errf(err, errlen, "out of memory");
		e = -ENOMEM;
		goto fail;
	}
	switching_start(s);
	return 0;
fail:
	switching_free(s);
	return e;
}

int sl_sandbox_reload(struct sl_registry *r, struct sl_box *box, const char *path, const char *src,
		      size_t len, const char *who, sl_box_switched_fn *done, void *arg, char *err,
		      size_t errlen)
{
	const char *handler = box->layer->handler[0] ? box->layer->handler : NULL;
	struct sb_switching *s;
	int e;

	if (len > POLICY_MAX_BYTES) {
		sl_errf(err, errlen, "policy too large (max %u bytes)", POLICY_MAX_BYTES);
		return -EINVAL;
	}
	s = switching_new(r, box, SW_RELOAD, who, done, arg, &e, err, errlen);
	if (!s)
		return e;
	if (!(s->src = malloc(len + 1)) || (path && !(s->path = strdup(path))) ||
	    (handler && !(s->handler = strdup(handler))) ||
	    (box->layer->params && !(s->params = strdup(box->layer->params))))
		goto oom;
	memcpy(s->src, src, len);
	s->src[len] = 0;
	s->len = len;
	snprintf(s->chunk, sizeof(s->chunk), "%s",
		 path && *path	     ? path :
		 box->policy_path[0] ? box->policy_path :
				       "policy");
	s->opts = r->lua_opts;
	s->opts.events = NULL; /* given when the state is handed over (sl_lua_set_services) */
	s->opts.kv = NULL;
	switching_start(s);
	return 0;
oom:
	sl_errf(err, errlen, "out of memory");
	switching_free(s);
	return -ENOMEM;
}

int sl_sandbox_set_mode(struct sl_registry *r, struct sl_box *box, int audit, const char *who,
			sl_box_switched_fn *done, void *arg, char *err, size_t errlen)
{
	struct sl_switch_result res = { 0 };
	struct sb_switching *s;
	int e;

	audit = !!audit;
	if (audit == box->audit && !box->switching) {
		done(arg, box, 0, "", &res); /* the mode in force: nothing changes */
		return 0;
	}
	/* The flag rides in the sandbox entry that the switch writes once: the rules and the
	 * mode change together, and leaving audit closes what the layer forbids. The layer is
	 * the same one, written into the other bank: it cannot have changed. */
	s = switching_new(r, box, SW_MODE, who, done, arg, &e, err, errlen);
	if (!s)
		return e;
	s->audit = audit;
	s->nl = sb_layer_ref(box->layer);
	s->compiled = 1;
	switching_start(s);
	return 0;
}
