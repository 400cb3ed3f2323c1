/* SPDX-License-Identifier: MIT */
/*
 * The sandboxes of one sluiced: adding, removing, adopting and describing them.
 * Threading: the registry (the list, names, ids, state files, the sweep's schedule) belongs
 * to the main thread; each sandbox belongs to one worker (struct sl_worker_env: a loop with
 * its DNS and proxy services), which runs its listeners, connections, Lua states, learned
 * names and timers, so the data path takes no lock. Calls on a sandbox (switch, reload, mode,
 * suggest, JSON, stats) run on its worker's thread: sl_box_loop() says which, and the control
 * API posts them there (sl_loop_post(), or sl_loop_call() for the short reads). An async add
 * compiles on the registry's jobs thread, opens the listeners on the worker and completes on
 * the main thread; a removal lets go on the worker and finishes on the main thread. Adoption
 * runs on the main thread before the workers start. A switch (handler, policy,
 * mode) compiles on its worker's jobs thread and completes on the worker; adopting writes
 * state files and kernel maps synchronously.
 */
#ifndef SL_SANDBOX_H
#define SL_SANDBOX_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dns/dns.h"
#include "dns/dns_msg.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "kernel/bpf_loader.h"
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

/* One sandbox. Owned by its registry; its worker's thread (see Threading above). Its fields are the registry's own
 * (sandbox/sb_int.h): others read them through the accessors below. */
struct sl_box;

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

/* A worker: the loop its sandboxes run on, and the DNS and proxy services of that loop whose
 * listeners they get (either may be NULL: no such listeners). */
struct sl_worker_env {
	struct sl_loop *loop;
	struct sl_dns *dns;
	struct sl_proxy *proxy;
};

/*
 * A registry persisting to @state_dir (created 0700 if missing), whose sandboxes are spread
 * over the @nworkers (1..64) @workers: each new or adopted sandbox goes to the one with the
 * fewest (ties: the lowest index) and stays there. Expired DNS entries are swept from the
 * kernel every second (the timer on the main thread's @loop posts each worker its share),
 * which also removes the sandboxes left with nothing to enforce: whose cgroup was removed, or
 * (with a network namespace of their own) whose cgroup is empty and whose namespace nothing
 * but sluiced holds any more. NULL and errno on failure.
 */
struct sl_registry *sl_registry_new(struct sl_bpf *bpf, const char *state_dir, struct sl_loop *loop,
				    const struct sl_worker_env *workers, unsigned nworkers,
				    const struct sl_dns_ttl *ttl);
/* What the sandboxes' Lua states get: secrets, KV, events, limits. Before adding any. */
void sl_registry_set_lua(struct sl_registry *r, const struct sl_lua_opts *o);
/* How many sandboxes in sluiced's network namespace get DNS and proxy listeners of their own;
 * those added past that share their worker's (sluiced --own-listeners). Before adopting. */
void sl_registry_set_own_listeners(struct sl_registry *r, unsigned n);
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
	int audit; /* start in audit mode (--mode audit) */
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
/*
 * The same add, answered later: what grows with the policy (loading it, compiling its rules,
 * writing them into the kernel) runs on the registry's jobs thread (core/jobs.h), so that a
 * 100,000-rule policy does not hold up the other sandboxes' DNS and proxied requests; the
 * rest runs on the loop when that is done, and then @done(@arg, box, 0, "") or
 * @done(@arg, NULL, -errno, reason) is called on the loop, once. Returns 0 when under way (or
 * done at once without a jobs thread), or -errno with a reason in @err, and no call of @done,
 * when @spec is refused at once. While under way the sandbox holds its name, cgroup and id,
 * but is not listed, found or removable. The policy's top level runs without events or KV
 * there (a sluice.log() at its top level is dropped).
 */
typedef void sl_box_added_fn(void *arg, struct sl_box *box, int err, const char *msg);
int sl_sandbox_add_async(struct sl_registry *r, const struct sl_box_spec *spec,
			 sl_box_added_fn *done, void *arg, char *err, size_t errlen);

/* What a switch did. */
struct sl_switch_result {
	size_t closed_kernel; /* passthrough flows destroyed (sock_diag) */
	size_t closed_proxy; /* intercepted connections closed by the proxy */
	size_t dns_dropped; /* resolved entries the new layer does not give */
};

/*
 * Switches answer later, as an add does: what grows with the policy (loading it, compiling
 * the new layer, writing it into the sandbox's rule bank not in force) runs on the registry's
 * jobs thread, so that a 100,000-rule policy does not hold up the other sandboxes; the rest
 * runs on the loop when that is done: one update of the sandbox's kernel entry makes the new
 * bank the one in force, flows the new layer does not allow are closed, DNS entries it does not
 * give removed. Then @done(@arg, box, 0, "", res) is called on the loop, once the new layer is
 * in force, or @done(@arg, NULL, -errno, reason, res) when nothing changed. Each returns 0 when
 * under way (or done at once without a jobs thread), or -errno with a reason in @err, and no
 * call of @done, when refused at once.
 *
 * One switch of a sandbox at a time: another asked for while one is under way is refused
 * with -EBUSY (the caller asks again once the first is answered). A sandbox removed while
 * its switch compiles ends it with -ENOENT. The sandbox stays in force with its old layer
 * until the switch completes; what its names resolve to meanwhile is carried into the new
 * layer. @who names the caller in the event.
 */
typedef void sl_box_switched_fn(void *arg, struct sl_box *box, int err, const char *msg,
				const struct sl_switch_result *res);

/*
 * Makes outboundHandlers[@handler] the active handler of @box with @params (JSON object or
 * NULL), or (@handler NULL) returns to the policy's own. The handler's egress function runs
 * on the loop (in the sandbox's Lua state, which its requests use); its compile does not.
 * Errors: -ENOENT unknown handler, -EINVAL bad params, the egress function raised, no
 * working policy; -EBUSY a switch is under way.
 */
int sl_sandbox_set_handler(struct sl_registry *r, struct sl_box *box, const char *handler,
			   const char *params, const char *who, sl_box_switched_fn *done, void *arg,
			   char *err, size_t errlen);
/* Replaces the policy of @box with @src (@path names it; may be NULL), keeping the active
 * handler (it must exist in the new policy). The policy loads into a new Lua state off the
 * loop (its top level runs without events or KV, as an add's). A policy with errors changes
 * nothing (-EINVAL). */
int sl_sandbox_reload(struct sl_registry *r, struct sl_box *box, const char *path, const char *src,
		      size_t len, const char *who, sl_box_switched_fn *done, void *arg, char *err,
		      size_t errlen);

/*
 * Puts @box in audit mode (@audit 1) or enforce mode (0): the mode is a flag of the sandbox's
 * kernel entry, so the switch is the handler switch's own (the layer rewritten into the other
 * rule bank, one map update); on the way to enforce, open flows the layer does not allow are
 * closed as a handler switch closes them. A switch to the mode in force changes nothing (and
 * answers at once).
 */
int sl_sandbox_set_mode(struct sl_registry *r, struct sl_box *box, int audit, const char *who,
			sl_box_switched_fn *done, void *arg, char *err, size_t errlen);

/*
 * The policy that audit mode's records of @box call for (`sluice policy suggest`, see
 * policy/suggest.h): the policy in force with the learned entries added. @collapse: siblings
 * past this many become `*.parent` (0: never). *@out is malloc'd text. Returns 0 or -errno with
 * a reason in @err.
 */
int sl_sandbox_suggest(struct sl_registry *r, struct sl_box *box, unsigned collapse, char **out,
		       char *err, size_t errlen);

/* Removes sandbox @name: detaches it (the cgroup is free again), clears its kernel state and
 * its state file. With the workers stopped only (shutdown): sl_sandbox_rm_async() otherwise.
 * Returns 0, -ENOENT, or -errno. */
int sl_sandbox_rm(struct sl_registry *r, const char *name);
/* The same, while workers run: the sandbox's worker lets go of it first (listeners, timers),
 * then the rest runs on the main thread and @done(@arg, 0) is called there (@done may be
 * NULL). From the call on, the sandbox is not found. Returns 0 under way, or -ENOENT. */
typedef void sl_box_removed_fn(void *arg, int err);
int sl_sandbox_rm_async(struct sl_registry *r, const char *name, sl_box_removed_fn *done,
			void *arg);
/* Ends the adds still compiling (cancelled: their answers say sluiced is stopping), so that
 * none goes on to a worker. Main thread, at shutdown, before the workers stop. */
void sl_registry_stop_jobs(struct sl_registry *r);
/* Ends the switches still compiling (cancelled), with the workers stopped: their completions
 * run on the calling thread (main, at shutdown). */
void sl_registry_stop_worker_jobs(struct sl_registry *r);
/* Removes every sandbox (workers stopped). */
void sl_registry_rm_all(struct sl_registry *r);

struct sl_box *sl_sandbox_find(struct sl_registry *r, const char *name);
struct sl_box *sl_sandbox_by_id(struct sl_registry *r, uint32_t id);
size_t sl_registry_count(struct sl_registry *r);

/* The registry's figures (metrics.c formats them): how many sandboxes, and the kernel's
 * counters of operations whose sandbox could not be determined (sandbox id 0). */
struct sl_registry_stats {
	size_t sandboxes;
	struct sl_counters unattributed;
	int unattributed_ok; /* 0: the kernel's counters could not be read */
};
void sl_registry_get_stats(struct sl_registry *r, struct sl_registry_stats *st);

/* The loop of @box's worker, where every call on it but the accessors above runs, and the
 * worker's index. */
struct sl_loop *sl_box_loop(const struct sl_box *box);
unsigned sl_box_worker(const struct sl_box *box);
/* Workers, and how many sandboxes each has (main thread). */
unsigned sl_registry_workers(const struct sl_registry *r);
size_t sl_registry_worker_count(const struct sl_registry *r, unsigned worker);
/* Sandboxes with listeners of their own now (@used) and at most (@max, --own-listeners). */
void sl_registry_own_listeners(const struct sl_registry *r, unsigned *used, unsigned *max);
/* Main thread: calls @fn(box, i, @arg) for every listed sandbox on its worker's thread, i its
 * position in the registry's order (< sl_registry_count()), one sl_loop_call() per worker
 * (the main thread waits: for short reads, the JSON of a list, the stats of metrics). */
typedef void sl_box_visit_fn(struct sl_box *box, size_t i, void *arg);
void sl_registry_visit(struct sl_registry *r, sl_box_visit_fn *fn, void *arg);

/* The sandboxes in the registry's order: the first (NULL if none), the one after @box (NULL
 * after the last). Adding or removing a sandbox ends a walk: restart it from the first. */
struct sl_box *sl_registry_first(struct sl_registry *r);
struct sl_box *sl_registry_next(const struct sl_box *box);
/* for (each sandbox @b of registry @r): declares @b, a struct sl_box *. The body must not add
 * or remove sandboxes. */
#define sl_registry_foreach(b, r) \
	for (struct sl_box *b = sl_registry_first(r); b; b = sl_registry_next(b))

/* What the rest of sluiced reads of a sandbox, on any thread that holds it (the main thread
 * or its worker's); pointers live as long as the sandbox. */
const char *sl_box_name(const struct sl_box *box);
uint32_t sl_box_id(const struct sl_box *box); /* the kernel's sandbox id */
const char *sl_box_cgroup(const struct sl_box *box); /* canonical path */
const char *sl_box_container_id(const struct sl_box *box); /* "" if none */
int sl_box_audit(const struct sl_box *box); /* 1: audit mode, 0: enforce */

/* One sandbox's figures, each subsystem's own stats copied at one moment (metrics.c formats
 * them, and reaches into none of the subsystems itself). A struct whose _ok is 0 could not be
 * read from the kernel: its metrics are left out. */
struct sl_box_stats {
	struct sl_proxy_stats proxy; /* its proxy listener's; zero if it has none */
	struct sl_dns_stats dns; /* its DNS listener's; zero if it has none */
	struct sl_counters kernel; /* the kernel's verdict counters of the sandbox */
	int kernel_ok;
	struct sl_audit_ctr audited; /* what audit mode let through */
	int audited_ok;
	struct sl_sni_ctr sni; /* the kernel's SNI checks of checked passthrough */
	int sni_ok;
	uint64_t proxied_full; /* intercepted connects refused for a full sl_proxied */
	uint64_t leaf_evictions; /* of its CA's leaf cache */
	size_t lua_mem; /* bytes of its Lua state; 0 if none */
	int audit; /* 1: audit mode, 0: enforce */
};
void sl_box_get_stats(struct sl_registry *r, const struct sl_box *box, struct sl_box_stats *st);

/* Whether @name is a valid sandbox name: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
int sl_sandbox_name_ok(const char *name);

/* The PEM of the sandbox's CA certificate (malloc'd; caller frees), NULL on failure. */
char *sl_sandbox_ca_pem(const struct sl_box *box);

/* The sandbox as JSON (new reference). @detail adds rules and counters. */
json_t *sl_sandbox_json(struct sl_registry *r, const struct sl_box *box, int detail);
/*
 * The detailed JSON of @box (sl_sandbox_json() with @detail) as text, written by json_dumps()
 * with @flags and a newline, off the loop: the rules of a big policy are long to write (1-3 s
 * for 100,000 on the loop). On @box's worker: what is not the rules is read now; the rules are
 * the layer's in force now (a reference keeps it), written on the worker's jobs thread.
 * @done(@arg, text, len) follows on the worker
 * (@text malloc'd, the callee's to free; NULL: out of memory, or sluiced is stopping).
 * Returns 0, or -ENOMEM and no call of @done.
 */
typedef void sl_box_json_fn(void *arg, char *text, size_t len);
int sl_sandbox_json_async(struct sl_registry *r, struct sl_box *box, size_t flags,
			  sl_box_json_fn *done, void *arg);

#endif
