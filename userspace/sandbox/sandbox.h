/* SPDX-License-Identifier: MIT */
/* The sandboxes of one sluiced: adding, removing, adopting and describing them. */
#ifndef SL_SANDBOX_H
#define SL_SANDBOX_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dns/dns_msg.h"
#include "policy/policy.h"
#include "kernel/rules.h"

#define SL_NAME_MAX 64
#define SL_CONTAINER_ID_MAX 255
#define SL_LEARNED_MAX 16384 /* resolved (name, address, range) entries per sandbox */

struct sl_bpf;
struct sl_ca;
struct sl_dns;
struct sl_dns_listener;
struct sl_proxy;
struct sl_proxy_listener;
struct sl_loop;
struct sl_lua;
struct sl_lua_opts;
struct sl_registry;

/* One sandbox. Owned by its registry; loop thread only. */
struct sl_box {
	char name[SL_NAME_MAX + 1];
	uint32_t id; /* kernel sandbox id, stable across restarts */
	char cgroup[PATH_MAX]; /* canonical path */
	uint64_t cgid;
	char policy_path[PATH_MAX]; /* where the policy came from ("" if given inline) */
	char *policy_src; /* the policy text as added: restarts use it, not the file */
	size_t policy_len;
	struct sl_policy *policy; /* the kernel layer in force: base, or the handler's own */
	struct sl_policy *base; /* the policy's egress */
	struct sl_policy *hlayer; /* the active handler's egress; NULL: none or it has none */
	struct sl_lua *lua; /* the policy's Lua state: its handlers run there */
	char handler[64]; /* the active outboundHandlers entry, "" for none */
	char *params; /* its params (JSON text), NULL for none */
	int64_t handler_since_s;
	unsigned switches; /* handler sets, clears and policy reloads since added */
	uint32_t rules_id; /* key id of the kernel rules in force: id, or id | SL_RULES_BANK */
	struct sl_rule_set rules; /* static rules compiled from the policy */
	struct sl_rule_set learned; /* rules of resolved names, each with its expiry */
	char (*learned_names)[SL_DNS_NAME_BUF]; /* the name of each learned rule ("" unknown) */
	uint64_t learned_next_ns; /* no learned rule expires before (a lower bound); 0: unknown */
	struct sl_dns_listener *dns; /* where the kernel sends the sandbox's DNS queries */
	uint16_t dns_port; /* kept across restarts */
	struct sl_proxy_listener *proxy; /* where the kernel sends intercepted connections */
	uint16_t proxy_port; /* kept across restarts */
	uint64_t proxied_swept; /* kernel records of intercepted connections never accepted */
	/* A sandbox with a network of its own: its listeners live in that namespace, which
	 * sluiced holds open (-1: sluiced's namespace). The path is as given (a restart tries it
	 * first); dev/ino name the namespace itself. */
	int netns_fd;
	char netns[PATH_MAX];
	uint64_t netns_dev, netns_ino;
	struct sl_ca *ca; /* the sandbox's own CA: its leaves are what the sandbox sees */
	int64_t created_s; /* wall clock */
	/* The OCI container this sandbox was made for ("" if none): only that container's
	 * poststop may remove it. */
	char container_id[SL_CONTAINER_ID_MAX + 1];
	struct sl_registry *reg;
	struct sl_box *next;
};

/*
 * How long a resolved address stays in the kernel: the answer's TTL clamped to
 * [min_s, max_s], plus grace_s for connections made just as the answer expires; every lookup
 * of the name starts it again. The reply's TTL is only capped (at max_s), never raised: an
 * honest client asks again when its cache expires, and each answer refreshes the entry.
 * time_scale (tests only, >= 1) divides these lifetimes so that an hour is tested in a minute.
 */
struct sl_dns_ttl {
	uint32_t min_s, max_s, grace_s;
	uint32_t time_scale;
};

/*
 * The default min_s: one hour, so that an address outlives the caches of the clients that
 * hold one without asking again: npm caches every lookup 5 minutes (and retries for minutes
 * after), Java 30 s, HTTP client pools keep connections and their addresses for minutes, and
 * a TTL-0 answer must still serve a tool's run of a few minutes. Cilium's DNS policy keeps
 * learned addresses at least an hour (--tofqdns-min-ttl 3600) for the same reason. The cost:
 * an address a name stops resolving to stays reachable for that sandbox up to an hour (on
 * the entry's ports only); --dns-min-ttl lowers it.
 */
#define SL_DNS_MIN_LIFE_S 3600

/*
 * A registry persisting to @state_dir (created 0700 if missing), serving DNS through @dns
 * (may be NULL: sandboxes then get no DNS listener, and host names in policies are refused).
 * Expired DNS entries are swept from the kernel by a timer on @loop, which also removes the
 * sandboxes left with nothing to enforce: whose cgroup was removed, or (with a network
 * namespace of their own) whose cgroup is empty and whose namespace nothing but sluiced holds
 * any more. NULL and errno on failure.
 */
struct sl_registry *sl_registry_new(struct sl_bpf *bpf, const char *state_dir,
				    struct sl_loop *loop, struct sl_dns *dns,
				    const struct sl_dns_ttl *ttl, struct sl_proxy *proxy);
/* What the sandboxes' Lua states get: secrets, KV, events, limits. Before adding any. */
void sl_registry_set_lua(struct sl_registry *r, const struct sl_lua_opts *o);
/* sluiced's control socket at @path (absolute): denied to every sandbox in the kernel, and no
 * policy may name it. Before adopting. Returns 0 or -errno with a reason in @err. */
int sl_registry_set_control_socket(struct sl_registry *r, const char *path, char *err,
				   size_t errlen);
/* Frees memory only: kernel state and state files stay. Accepts NULL. */
void sl_registry_free(struct sl_registry *r);

/* Takes over the sandboxes of the state directory: re-reads their policies, reconciles their
 * kernel rules and switches their links to the programs now loaded, and reopens listeners in
 * the network namespaces of those that have one. A sandbox whose cgroup is gone, or whose
 * namespace is gone with every process of its cgroup, is removed. Returns the number
 * adopted. */
int sl_registry_adopt(struct sl_registry *r);

/* The parameters of a new sandbox. policy_src may be NULL: policy_path is then read. */
struct sl_box_spec {
	const char *name;
	const char *cgroup;
	const char *policy_path;
	const char *policy_src;
	size_t policy_len;
	const char *handler; /* optional: active from the start */
	const char *params; /* JSON object */
	const char *netns; /* optional: path of the sandbox's network namespace */
	int pid; /* optional (> 0): cgroup and network namespace are this process's */
	const char *container_id; /* optional: the OCI container the sandbox is for */
	/* A cgroup that a non-root user can move processes out of is refused unless this is
	 * set (that user is trusted not to). */
	int allow_writable_cgroup;
};

/*
 * Adds a sandbox: validates everything first, then fills the kernel maps and attaches the
 * programs; on any failure nothing stays attached. Returns the new sandbox, or NULL with
 * errno (EINVAL bad input, EEXIST name or cgroup taken, EPERM a non-root user can write the
 * cgroup's cgroup.procs or an ancestor's, ENOSPC no free id, other: system)
 * and a one-line reason in @err.
 */
struct sl_box *sl_sandbox_add(struct sl_registry *r, const struct sl_box_spec *spec, char *err,
			      size_t errlen);
/* What a switch did. */
struct sl_switch_result {
	size_t closed_kernel; /* passthrough flows destroyed (sock_diag) */
	size_t closed_proxy; /* intercepted connections closed by the proxy */
	size_t dns_dropped; /* resolved entries the new layer does not give */
};

/*
 * Makes outboundHandlers[@handler] the active handler of @box with @params (JSON object or
 * NULL), or (@handler NULL) returns to the policy's own. The handler's egress replaces the
 * kernel layer at once (a new rule bank, then one map update), flows the new layer does not
 * allow are closed, and DNS entries it does not give removed. @who names the caller in the
 * event. On error (-EINVAL unknown handler, bad params, the egress function raised) nothing
 * changed; the reason is in @err.
 */
int sl_sandbox_set_handler(struct sl_registry *r, struct sl_box *box, const char *handler,
			   const char *params, const char *who, struct sl_switch_result *res,
			   char *err, size_t errlen);
/* Replaces the policy of @box with @src (@path names it; may be NULL), keeping the active
 * handler (it must exist in the new policy). A policy with errors changes nothing. */
int sl_sandbox_reload(struct sl_registry *r, struct sl_box *box, const char *path,
		      const char *src, size_t len, const char *who, struct sl_switch_result *res,
		      char *err, size_t errlen);

/* Removes sandbox @name: detaches it (the cgroup is free again), clears its kernel state and
 * its state file. Returns 0, -ENOENT, or -errno. */
int sl_sandbox_rm(struct sl_registry *r, const char *name);
/* Removes every sandbox. */
void sl_registry_rm_all(struct sl_registry *r);

struct sl_box *sl_sandbox_find(struct sl_registry *r, const char *name);
struct sl_box *sl_sandbox_by_id(struct sl_registry *r, uint32_t id);
struct sl_box *sl_registry_first(struct sl_registry *r);
size_t sl_registry_count(struct sl_registry *r);

/* Whether @name is a valid sandbox name: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
int sl_sandbox_name_ok(const char *name);

/* The PEM of the sandbox's CA certificate (malloc'd; caller frees), NULL on failure. */
char *sl_sandbox_ca_pem(const struct sl_box *box);

/* The sandbox as JSON (new reference). @detail adds rules and counters. */
json_t *sl_sandbox_json(struct sl_registry *r, const struct sl_box *box, int detail);

#endif
