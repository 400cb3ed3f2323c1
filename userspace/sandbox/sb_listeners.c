// SPDX-License-Identifier: MIT
/*
 * A sandbox's listeners, DNS and proxy, and its CA; and the questions the proxy asks the
 * registry about a sandbox (struct sl_proxy_ops).
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
 * Whether @box gets listeners of its own or shares its worker's, decided when it opens its
 * first: a sandbox with a network namespace of its own has them there; one in sluiced's
 * namespace has its own while fewer than --own-listeners do (r->own_max), else it shares.
 */
static void sb_place_listeners(struct sl_registry *r, struct sl_box *box)
{
	if (box->listeners)
		return;
	box->listeners = SB_OWN;
	if (box->netns_fd >= 0)
		return;
	if (__atomic_add_fetch(&r->own_used, 1, __ATOMIC_RELAXED) > r->own_max) {
		__atomic_sub_fetch(&r->own_used, 1, __ATOMIC_RELAXED);
		box->listeners = SB_SHARED;
	}
}

/* Undoes sb_place_listeners(), its listeners closed. */
void sb_unplace_listeners(struct sl_registry *r, struct sl_box *box)
{
	if (box->listeners == SB_OWN && box->netns_fd < 0)
		__atomic_sub_fetch(&r->own_used, 1, __ATOMIC_RELAXED);
	box->listeners = 0;
}

/* Opens the sandbox's DNS listener (on its previous port if it had one). */
int sb_open_dns(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	if (!box->w->dns || box->dns)
		return 0;
	sb_place_listeners(r, box);
	if (box->listeners == SB_SHARED)
		box->dns = sl_dns_listen_shared(box->w->dns, &sb_dns_ops, box, box->id,
						box->dns_port, err, errlen);
	else
		box->dns = sl_dns_listen(box->w->dns, &sb_dns_ops, box, box->dns_port,
					 box->netns_fd, err, errlen);
	if (!box->dns)
		return -EIO;
	box->dns_port = sl_dns_listener_port(box->dns);
	return 0;
}

/* ---- the proxy's questions ---- */

static uint32_t px_id(void *owner)
{
	return ((struct sl_box *)owner)->id;
}

static int px_name_verdict(void *owner, const char *host)
{
	struct sl_box *box = owner;

	return sb_policy(box) ? sl_policy_name_verdict(sb_policy(box), host) : SL_VERDICT_DENY;
}

/*
 * The learned entries at one address come from the learned set's index (sandbox/sb_lindex.h),
 * not a scan of the set: each intercepted connection asks (name_at, only_name_at), and a
 * checked passthrough too (resolved_at), and a sandbox may hold 16,384 entries.
 */
#define for_each_learned_at(box, i, family, addr) \
	sb_lx_for_each_at(i, &(box)->learned.ix, &(box)->learned.rules, family, addr)

static int px_name_at(void *owner, const char *host, uint8_t family, const uint8_t *addr)
{
	struct sl_box *box = owner;
	int unknown = 0;

	for_each_learned_at(box, i, family, addr) {
		if (box->learned.rules.v[i].verdict != SL_VERDICT_PROXY)
			continue;
		if (!strcmp(box->learned.names[i], host))
			return 1;
		unknown |= !box->learned.names[i][0];
	}
	/* Resolved before a restart: the name is not known, the policy still decides. */
	return unknown && px_name_verdict(owner, host) == SL_VERDICT_PROXY;
}

static int px_only_name_at(void *owner, uint8_t family, const uint8_t *addr, char *buf, size_t len)
{
	struct sl_box *box = owner;
	const char *found = NULL;

	for_each_learned_at(box, i, family, addr) {
		if (box->learned.rules.v[i].verdict != SL_VERDICT_PROXY)
			continue;
		if (!box->learned.names[i][0])
			return 0;
		if (px_name_verdict(owner, box->learned.names[i]) != SL_VERDICT_PROXY)
			continue; /* a passthrough name checked by SNI: never served without it */
		if (found && strcmp(found, box->learned.names[i]))
			return 0; /* several names share the address */
		found = box->learned.names[i];
	}
	if (!found)
		return 0;
	snprintf(buf, len, "%s", found);
	return 1;
}

static struct sl_ca *px_ca(void *owner)
{
	return ((struct sl_box *)owner)->ca;
}

static int px_handle(void *owner, struct sl_px_xchg *x)
{
	struct sl_box *box = owner;

	return sb_lua(box) ? sl_lua_handle(sb_lua(box), x) : 1;
}

static int px_name_port(void *owner, const char *host, uint16_t port)
{
	struct sl_box *box = owner;

	return sb_policy(box) ? sl_policy_name_port(sb_policy(box), host, port) : SL_NAME_DENY;
}

static int px_resolved_at(void *owner, const char *host, uint8_t family, const uint8_t *addr,
			  uint16_t port)
{
	struct sl_box *box = owner;
	int unknown = 0;

	for_each_learned_at(box, i, family, addr) {
		const struct sl_addr_rule *x = &box->learned.rules.v[i];

		if (x->verdict == SL_VERDICT_DENY || port < x->port_lo || port > x->port_hi ||
		    !(x->protos & SL_PROTO_TCP))
			continue;
		if (!strcmp(box->learned.names[i], host))
			return 1;
		unknown |= !box->learned.names[i][0];
	}
	/* Resolved before a restart: the name is not known, the policy still decides. */
	return unknown && px_name_port(owner, host, port) != SL_NAME_DENY;
}

static int px_audit(void *owner)
{
	return ((struct sl_box *)owner)->audit;
}

static void px_observe(void *owner, const char *method, const char *host, const char *path,
		       uint16_t port, int status, const char *refused)
{
	if (method)
		sb_obs_http(owner, method, host, path, status, refused);
	else if (host && *host)
		sb_obs_use(owner, host, port, IPPROTO_TCP);
}

static const struct sl_proxy_ops proxy_ops = {
	.audit = px_audit,
	.observe = px_observe,
	.name_port = px_name_port,
	.resolved_at = px_resolved_at,
	.handle = px_handle,
	.name = sb_dns_name,
	.id = px_id,
	.name_verdict = px_name_verdict,
	.name_at = px_name_at,
	.only_name_at = px_only_name_at,
	.ca = px_ca,
};

static void ca_dir(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.ca", r->state_dir, name);
}

/*
 * The sandbox's CA: the one its state file held (adopt_ca(), sb_state.c), the one saved in a
 * directory of its own by a sluiced before 7 December, or a new one, which the state file
 * keeps (sb_save_state()).
 */
int sb_open_ca(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	char dir[PATH_MAX + 128];

	if (box->ca)
		return 0;
	ca_dir(r, box->name, dir, sizeof(dir));
	box->ca = sl_ca_load(dir);
	if (box->ca)
		return 0;
	if (errno != ENOENT) {
		sl_errf(err, errlen, "the CA saved in %s cannot be used: %s", dir, strerror(errno));
		return -errno;
	}
	box->ca = sl_ca_new(box->name);
	if (!box->ca) {
		sl_errf(err, errlen, "creating the sandbox CA failed: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

void sb_remove_ca(struct sl_registry *r, const char *name)
{
	char dir[PATH_MAX + 128], path[PATH_MAX + 160];

	ca_dir(r, name, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	unlink(path);
	rmdir(dir);
}

/* Opens the sandbox's proxy listener (on its previous port if it had one). */
int sb_open_proxy(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	if (!box->w->proxy || box->proxy)
		return 0;
	sb_place_listeners(r, box);
	if (box->listeners == SB_SHARED)
		box->proxy = sl_proxy_listen_shared(box->w->proxy, &proxy_ops, box, box->id,
						    box->proxy_port, err, errlen);
	else
		box->proxy = sl_proxy_listen(box->w->proxy, &proxy_ops, box, box->proxy_port,
					     box->netns_fd, err, errlen);
	if (!box->proxy)
		return -EIO;
	box->proxy_port = sl_proxy_listener_port(box->proxy);
	return 0;
}

char *sl_sandbox_ca_pem(const struct sl_box *box)
{
	return box->ca ? sl_ca_cert_pem(box->ca) : NULL;
}
