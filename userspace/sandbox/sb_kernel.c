// SPDX-License-Identifier: MIT
/*
 * A sandbox's policy compiled into kernel rules, and the kernel programmed for it: rules,
 * the sandbox entry, the listeners' addresses, the cgroup links; and all of it undone.
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

/*
 * Refuses an egress.unix entry of @p that reaches sluiced's control socket: its path, or a
 * file that is that socket (a hard link, a symlink or another spelling of the path, as far as
 * it exists now). The kernel denies the path itself whatever this says.
 */
int sb_check_unix(struct sl_registry *r, const struct sl_policy *p, const char *where, char *err,
		  size_t errlen)
{
	struct stat ctl, st;
	int have_ctl;

	if (!p || !r->ctl_path[0])
		return 0;
	have_ctl = stat(r->ctl_path, &ctl) == 0;
	for (size_t i = 0; i < p->unix_socks.n; i++) {
		const struct sl_unix_key *k = &p->unix_socks.v[i];
		char s[SL_UNIX_PATH_MAX * 4 + 2];

		if (!k->path[0])
			continue; /* abstract: not a file */
		sl_unix_str(k, s, sizeof(s));
		if (!strcmp(s, r->ctl_path) ||
		    (have_ctl && stat(s, &st) == 0 && st.st_dev == ctl.st_dev &&
		     st.st_ino == ctl.st_ino)) {
			sl_errf(err, errlen,
				"%s.unix[%zu] ('%s'): sluiced's control socket is never "
				"reachable from a sandbox",
				where, i + 1, s);
			return -EINVAL;
		}
	}
	return 0;
}

/* Writes the egress.unix addresses of @p (NULL: none) under rule bank @rules_id. */
int sb_sync_unix(struct sl_registry *r, uint32_t rules_id, const struct sl_policy *p)
{
	return sl_bpf_sync_unix(r->bpf, rules_id, p ? p->unix_socks.v : NULL,
				p ? p->unix_socks.n : 0);
}

/* The kernel entries of static rules @rules and learned entries @learned together. */
int sb_compile_all(const struct sl_rule_set *rules, const struct sb_learned *learned,
		   struct sl_kentry **ents, size_t *nents, struct sl_kentry *bad)
{
	struct sl_rule_set all;
	int r = 0;

	sl_rule_set_init(&all);
	for (size_t i = 0; i < rules->n && !r; i++)
		r = sl_rule_set_add(&all, &rules->v[i]);
	for (size_t i = 0; i < learned->rules.n && !r; i++)
		r = sl_rule_set_add(&all, &learned->rules.v[i]);
	if (!r)
		r = sl_rules_compile(&all, ents, nents, bad);
	sl_rule_set_free(&all);
	return r;
}

/* Loads the policy of @box with @handler (NULL: none) and @params active into a new layer,
 * which becomes box->layer, and compiles it with the learned entries into kernel entries. */
int sb_compile_box(struct sl_box *box, const struct sl_lua_opts *o, const char *handler,
		   const char *params, struct sl_kentry **ents, size_t *nents, char *err,
		   size_t errlen)
{
	const char *chunk = box->policy_path[0] ? box->policy_path : "policy";
	struct sl_policy *bp = NULL, *hl = NULL;
	struct sl_kentry bad;
	struct sb_base *base;
	struct sl_lua *lua;
	int r;

	if (handler && strlen(handler) >= sizeof(box->layer->handler)) {
		sl_errf(err, errlen, "handler name too long");
		return -EINVAL;
	}
	lua = sl_lua_load(chunk, box->policy_src, box->policy_len, o, box->name, &bp, err, errlen);
	if (!lua)
		return -EINVAL;
	base = sb_base_new(bp);
	if (!base) {
		sl_lua_unref(lua);
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = 0;
	if (handler && *handler) {
		r = sl_lua_handler_egress(lua, handler, params, &hl, err, errlen);
		if (!r)
			r = sl_lua_set_active(lua, handler, params, err, errlen);
		if (r) {
			sl_policy_free(hl);
			hl = NULL;
		}
	}
	if (!r) {
		box->layer = sb_layer_new(lua, base, handler, hl, params);
		if (!box->layer) {
			r = -errno;
			sl_errf(err, errlen, "%s", strerror(errno));
		}
	}
	sl_lua_unref(lua);
	sb_base_unref(base);
	if (r)
		return r;
	r = sb_check_unix(box->reg, box->layer->policy,
			  box->layer->hlayer ? "the handler's egress" : "egress", err, errlen);
	if (r)
		return r;
	r = sb_layer_compile(box->layer, err, errlen);
	if (r)
		return r;
	r = sb_compile_all(&box->layer->rules, &box->learned, ents, nents, &bad);
	if (r == -E2BIG) {
		char p[64];

		sl_prefix_str(bad.family, bad.addr, bad.plen, p, sizeof(p));
		sl_errf(err, errlen, "%s: too many distinct port ranges apply to %s (max %d)",
			chunk, p, SL_MAX_PORT_RANGES);
		return -EINVAL;
	}
	if (r)
		sl_errf(err, errlen, "compiling rules failed: %s", strerror(-r));
	return r;
}

/* Which of @ports (DNS, proxy; 0: none) a sandbox other than @exclude has a listener on, as
 * bits (2 * i + p) for ports[i] in protos[p] (TCP, UDP): in network namespace @netns (*@ns)
 * and in any (*@any). One walk of the registry, which ends when every port is held in its
 * protocols in @netns (a worker's sharers: the next one in the list, as a rule). */
static void ports_held(const struct sl_registry *r, const struct sl_box *exclude, uint64_t netns,
		       const uint16_t ports[2], unsigned *ns, unsigned *any)
{
	unsigned need = (ports[0] ? 3u : 0) | (ports[1] ? 1u << 2 : 0);
	const struct sl_box *o;

	*ns = *any = 0;
	sl_list_for_each(o, &r->boxes, link) {
		unsigned m = 0;

		if (o == exclude)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!ports[i])
				continue;
			if (o->dns_port == ports[i])
				m |= 3u << (2 * i); /* TCP and UDP */
			if (o->proxy_port == ports[i])
				m |= 1u << (2 * i); /* TCP */
		}
		*any |= m;
		if (o->netns_cookie == netns)
			*ns |= m;
		if ((*ns & need) == need) {
			/* And so in any. A proxy port's UDP key (an earlier sluiced's copy)
			 * stays with its TCP key, for the port's last holder to drop. */
			if (ports[1]) {
				*ns |= 1u << 3;
				*any |= 1u << 3;
			}
			return;
		}
	}
}

static const uint8_t listener_protos[] = { IPPROTO_TCP, IPPROTO_UDP };

/* Forgets the kernel's keys of @ports (DNS: TCP and UDP; proxy: TCP, and UDP where an earlier
 * sluiced's any-protocol key was copied) in network namespace @netns that no sandbox but
 * @exclude still holds: a key of the namespace while one there has the port, a key of every
 * namespace (cookie 0) while one anywhere has it. */
static void forget_ports(struct sl_registry *r, const struct sl_box *exclude, uint64_t netns,
			 const uint16_t ports[2])
{
	unsigned held_ns, held_any;

	ports_held(r, exclude, netns, ports, &held_ns, &held_any);
	for (int i = 0; i < 2; i++) {
		if (!ports[i])
			continue;
		for (size_t p = 0; p < sizeof(listener_protos); p++) {
			uint16_t port_be = htons(ports[i]);
			unsigned bit = 1u << (2 * i + p);

			if (netns && !(held_ns & bit))
				sl_bpf_set_listener(r->bpf, netns, port_be, listener_protos[p], 0);
			if (!(held_any & bit))
				sl_bpf_set_listener(r->bpf, 0, port_be, listener_protos[p], 0);
		}
	}
}

/* Registers (@sandbox_id) the listener ports of @box in the kernel, in its network
 * namespace: its DNS port in TCP and UDP, its proxy port in TCP; or forgets (0) them
 * (forget_ports()): sandboxes sharing their worker's listeners share the keys. */
static void set_listeners(struct sl_registry *r, const struct sl_box *box, uint32_t sandbox_id)
{
	uint16_t ports[2] = { box->dns_port, box->proxy_port }; /* DNS first */

	if (!sandbox_id) {
		forget_ports(r, box, box->netns_cookie, ports);
		return;
	}
	for (int i = 0; i < 2; i++)
		for (size_t p = 0; ports[i] && p < sizeof(listener_protos); p++)
			if (i == 0 || listener_protos[p] == IPPROTO_TCP)
				sl_bpf_set_listener(r->bpf, box->netns_cookie, htons(ports[i]),
						    listener_protos[p], sandbox_id);
}

static int moved_cmp(const void *a, const void *b)
{
	const struct sb_moved_port *x = a, *y = b;

	if (x->netns != y->netns)
		return x->netns < y->netns ? -1 : 1;
	return (int)x->port - (int)y->port;
}

void sb_forget_moved_ports(struct sl_registry *r, struct sb_moved_port *v, size_t n)
{
	if (!n)
		return; /* and v may be NULL, which qsort() must not be given */
	qsort(v, n, sizeof(*v), moved_cmp);
	for (size_t i = 0; i < n; i++) {
		uint16_t ports[2] = { v[i].port, 0 };

		if (!i || moved_cmp(&v[i], &v[i - 1]))
			forget_ports(r, NULL, v[i].netns, ports);
	}
}

/* The sandbox table entry of @box; registers its listeners with the kernel. */
void sb_kernel_entry(struct sl_registry *r, const struct sl_box *box, struct sl_sandbox *ksb)
{
	memset(ksb, 0, sizeof(*ksb));
	ksb->id = box->id;
	ksb->rules_id = box->rules_id;
	if (box->audit)
		ksb->flags |= SL_SB_AUDIT;
	if (box->dns) {
		ksb->flags |= SL_SB_DNS;
		ksb->dns_ip4 = htonl(INADDR_LOOPBACK);
		memcpy(ksb->dns_ip6, in6addr_loopback.s6_addr, 16);
		ksb->dns_port = htons(box->dns_port);
	}
	if ((box->dns || box->proxy) && box->listeners == SB_SHARED)
		ksb->flags |= SL_SB_SHARED;
	if (box->proxy) {
		ksb->flags |= SL_SB_PROXY;
		ksb->proxy_ip4 = htonl(INADDR_LOOPBACK);
		memcpy(ksb->proxy_ip6, in6addr_loopback.s6_addr, 16);
		ksb->proxy_port = htons(box->proxy_port);
	}
	set_listeners(r, box, box->id);
}

/* Writes @ents into the rule bank of @box not yet in force (a new sandbox's): on the loop, or
 * on the jobs thread by an add's compile job, which alone writes that bank meanwhile. */
int sb_write_rules(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
		   size_t nents, char *err, size_t errlen)
{
	int e = sl_bpf_sync_rules(r->bpf, box->rules_id, ents, nents);

	if (e)
		sl_errf(err, errlen, "writing kernel rules failed: %s",
			e == -ENOSPC || e == -E2BIG ? "the kernel rule map is full (sluiced "
						      "--max-rules addresses of all sandboxes "
						      "together)" :
						      strerror(-e));
	return e;
}

/* @box's sl_proxied map: a new one (@fresh: an add's), or the one it has. */
int sb_open_proxied(struct sl_registry *r, struct sl_box *box, int fresh, char *err, size_t errlen)
{
	int e = fresh ? sl_bpf_proxied_fresh(r->bpf, box->id) :
			sl_bpf_proxied_open(r->bpf, box->id);

	if (e)
		sl_errf(err, errlen, "creating the sandbox's sl_proxied map failed: %s",
			strerror(-e));
	return e;
}

/* Programs the kernel for @box: rules (unless @written: sb_write_rules() did), then the
 * sandbox entry, then the links. */
int sb_install(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
	       size_t nents, int written, char *err, size_t errlen)
{
	struct sl_sandbox ksb;
	int e, fresh;

	e = sb_open_dns(r, box, err, errlen);
	if (!e)
		e = sb_open_ca(r, box, err, errlen);
	if (!e)
		e = sb_open_proxy(r, box, err, errlen);
	if (!e)
		e = sb_open_proxied(r, box, 0, err, errlen); /* made already by an add */
	if (e)
		return e;
	sb_kernel_entry(r, box, &ksb);
	e = written ? 0 : sb_write_rules(r, box, ents, nents, err, errlen);
	if (e)
		return e;
	e = sb_sync_unix(r, box->rules_id, sb_policy(box));
	if (e) {
		sl_errf(err, errlen, "writing kernel rules failed: %s",
			e == -ENOSPC || e == -E2BIG ? "the kernel's UNIX socket map is full "
						      "(SL_MAX_UNIX_RULES of all sandboxes "
						      "together)" :
						      strerror(-e));
		return e;
	}
	e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb);
	if (e) {
		sl_errf(err, errlen, "writing the sandbox table failed: %s", strerror(-e));
		return e;
	}
	e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid,
			  sl_policy_needs_proxy(sb_policy(box)), &fresh);
	if (e) {
		sl_errf(err, errlen, "attaching to %s failed: %s", box->cgroup, strerror(-e));
		return e;
	}
	/* Its links run this sluiced's programs now, which find its addresses in the hashes. */
	e = sl_bpf_drop_trie_hosts(r->bpf, box->rules_id, ents, nents);
	if (e)
		sl_warn("sandbox %s: taking its addresses out of the prefix trie failed: %s",
			box->name, strerror(-e));
	/* The kernel keeps no record of a TCP connection the connect hook passed, and lets the
	 * rest of a connection go where its first packet went: connections opened before the
	 * hooks were there are judged now, and those the rules deny are closed. A cgroup with
	 * no process (a new sandbox's, as a rule) has none to judge: no socket dump per add. */
	if (fresh && sl_cgroup_populated(box->cgroup) != 0) {
		size_t n = sb_kill_older_flows(box);

		if (n)
			sl_info("sandbox %s: closed %zu connection%s opened before it was added "
				"that its policy does not allow",
				box->name, n, n == 1 ? "" : "s");
	}
	return 0;
}

/* Undoes sb_install(). */
void sb_uninstall(struct sl_registry *r, struct sl_box *box)
{
	int e;

	sl_dns_listener_close(box->dns);
	box->dns = NULL;
	sl_proxy_listener_close(box->proxy);
	box->proxy = NULL;
	sb_unplace_listeners(r, box);
	set_listeners(r, box, 0);
	sb_remove_ca(r, box->name);
	e = sl_bpf_detach(r->bpf, box->name);
	if (e)
		sl_err("detaching sandbox %s failed: %s", box->name, strerror(-e));
	sl_bpf_del_sandbox(r->bpf, box->cgid);
	sl_bpf_proxied_drop(r->bpf, box->id);
	sb_sni_drop(r, box);
	sb_removed_later(r, box); /* its rules (a walk of every sandbox's) and sl_proxied map */
	e = sb_sync_unix(r, box->id, NULL);
	if (!e)
		e = sb_sync_unix(r, box->id | SL_RULES_BANK, NULL);
	if (e)
		sl_err("clearing rules of sandbox %s failed: %s", box->name, strerror(-e));
	sl_bpf_reset_slots(r->bpf, box->id);
}
