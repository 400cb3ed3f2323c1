/* SPDX-License-Identifier: MIT */
/*
 * The registry's insides, shared by the files of sandbox/ and by nobody else (sandbox.h gives
 * the rest of sluiced accessors): struct sl_registry, struct sl_box, and what each file of
 * sandbox/ offers the others.
 * Threading: the registry (its lists, ids, counts, the sweep's timer) is the main thread's;
 * a sandbox belongs to its worker (box->w, struct sb_worker), whose thread runs everything of
 * it that moves: its listeners, layer and Lua state, learned set, names file, audit records,
 * timers, switches. The main thread reads only what never changes once the sandbox is listed
 * (name, id, cgroup, cgid, container id, namespace, listener ports) and the mode (atomic); it
 * reaches the rest by posting to the worker (sl_loop_post(), sl_loop_call()). While workers
 * do not run (adoption at start, shutdown) the main thread does all of it. An add's compile
 * job (sandbox.c) builds the new sandbox's layer and writes its rule bank on the jobs thread
 * (core/jobs.h) while the sandbox is on reg->adding: nobody else reads or writes that box,
 * layer or bank meanwhile.
 * A switch's job (sb_switch.c: a handler switch, a policy reload, a mode switch) runs on its
 * worker's jobs thread (struct sb_worker.jobs) and completes on the worker: it builds and
 * compiles the new layer and writes it into the sandbox's rule bank not in force while the
 * sandbox, still in force with its old layer, has box->switching set: the worker writes only
 * the bank in force meanwhile, and notes which addresses it rewrote (sb_switch_note()).
 */
#ifndef SL_SB_INT_H
#define SL_SB_INT_H

#include <limits.h>
#include <stdint.h>

#include <jansson.h>

#include "core/jobs.h"
#include "core/list.h"
#include "core/buf.h"
#include "core/loop.h"
#include "dns/dns_msg.h"
#include "kernel/bpf_loader.h"
#include "kernel/rules.h"
#include "lua/lua_host.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_lindex.h"

/* What a sandbox in audit mode resolved and what its intercepted requests were: the inputs of
 * `policy suggest` that the kernel does not hold (sb_audit.c). Bounded; lost ones counted. */
#define SB_OBS_NAMES_MAX 4096
#define SB_OBS_HTTP_MAX 4096
#define SB_OBS_ADDRS 16
struct sb_obs_name {
	char name[SL_DNS_NAME_BUF]; /* as asked: a CNAME chain's addresses are the asked name's */
	uint64_t count;
	int64_t first_s, last_s;
	uint8_t granted; /* the policy gives the name (on some ports) */
	uint8_t naddr;
	uint8_t nblocked; /* addresses refused by the rebinding guard */
	struct {
		uint8_t family;
		uint8_t blocked;
		uint8_t addr[16];
	} a[SB_OBS_ADDRS];
};
#define SB_OBS_STATUSES 4
/* Requests at an intercepted host, one record per method, host and path prefix. */
struct sb_obs_http {
	uint32_t hash; /* of method, host and path: compared first */
	char method[16];
	char host[256];
	char path[64]; /* prefix: the first two segments, no query */
	/* The statuses the client got, the first SB_OBS_STATUSES distinct ones, with counts
	 * (the rest counted in other). */
	uint16_t status[SB_OBS_STATUSES];
	uint64_t status_n[SB_OBS_STATUSES], status_other;
	uint64_t count;
	uint64_t refused; /* of which a handler refused: audit mode let them go on */
	char why[160]; /* the last refusal: which handler, what it answered or why it failed */
	int64_t first_s, last_s;
};
/* A name used on a port without the kernel seeing it: a TLS connection the proxy relayed for
 * audit mode (its server name at an intercepted or name-checked address). */
struct sb_obs_use {
	char name[SL_DNS_NAME_BUF];
	uint16_t port;
	uint8_t proto;
	uint64_t count;
	int64_t first_s, last_s;
};
struct sb_obs {
	struct sb_obs_use *uses;
	size_t nuses, uses_cap;
	struct sb_obs_name *names;
	size_t nnames, names_cap;
	uint64_t names_lost;
	struct sb_obs_http *http;
	size_t nhttp, http_cap;
	uint64_t http_lost;
	int dirty; /* changed since last saved (sb_obs_save) */
	int64_t saved_s;
};

/* What a sandbox's names resolved to: rules, each with its expiry, and the name of each.
 * Unlike the layer it changes with every DNS answer: it stays with the sandbox, and a switch
 * builds the set the new layer keeps and swaps it in. Loop thread only. */
struct sb_learned {
	struct sl_rule_set rules;
	uint64_t gen; /* changes with every change of rules (a switch's job compares it) */
	char (*names)[SL_DNS_NAME_BUF]; /* the name of each rule ("" unknown) */
	struct sb_lindex ix; /* the rules by expiry (a heap) and by address (a hash) */
};

/*
 * A sandbox's layer: the policy's egress, the active handler's egress and params, the static
 * rules compiled from whichever is in force, and the policy's Lua state. Built whole
 * (sb_layer_new(), then sb_layer_compile()), immutable once published, shared by reference:
 * a handler switch, a policy reload or a mode change builds a new one and swaps box->layer,
 * and the old one is freed when its last holder (the sandbox, a compile job) drops it.
 * The Lua state is shared with the requests running in it through its own count
 * (sl_lua_ref()); which of its handlers is active is the state's, set at the swap.
 * Threading: a layer not yet published belongs to whoever builds it, and sb_layer_compile()
 * may run on a worker thread (it reads the policies and writes the rules, nothing shared);
 * references are taken and dropped on the loop thread only (a plain counter), but for a
 * layer that nobody else reaches any more (sb_layer_sole(): its last reference, its Lua
 * state's and its base's), which its holder may free on any thread.
 */
struct sb_base; /* the policy's egress, shared by the layers of one policy */
struct sb_switching; /* a switch under way (sb_switch.c) */
struct sl_layer {
	unsigned refs;
	struct sl_lua *lua; /* a reference; NULL: the policy no longer loads (adopted so) */
	struct sb_base *base; /* a reference; NULL with lua */
	struct sl_policy *hlayer; /* the handler's egress (owned); NULL: none or it has none */
	const struct sl_policy *policy; /* in force: hlayer, else the base's; NULL with lua */
	char handler[64]; /* the active outboundHandlers entry, "" for none */
	char *params; /* its params (JSON text), NULL for none */
	struct sl_rule_set rules; /* static rules compiled from policy */
	struct sl_rule_index rules_ix; /* their sorted view, built with them */
};

/* A worker as the registry sees it (see Threading above). */
struct sb_worker {
	struct sl_registry *r;
	unsigned index;
	struct sl_loop *loop;
	struct sl_dns *dns; /* NULL: no DNS listeners */
	struct sl_proxy *proxy; /* NULL: no proxy listeners */
	/* The main thread's: sandboxes placed here (adds under way and removals included), and
	 * whether this worker's sweep is under way. */
	size_t nboxes;
	int sweeping;
	struct sl_task sweep_back;
	/* The worker's: its sandboxes (struct sl_box.wlink), its sweep's task and inputs. */
	struct sl_list boxes;
	struct sl_task sweep;
	struct sl_jobs *jobs; /* its switches' compile thread (sb_worker_jobs()) */
	uint64_t sweep_now;
	int64_t sweep_now_s;
	unsigned sweep_px; /* the sl_proxied records of the ids equal to it modulo 5 */
};

/* One sandbox. Owned by its registry; its worker's thread (see Threading above). */
struct sl_box {
	char name[SL_NAME_MAX + 1];
	uint32_t id; /* kernel sandbox id, stable across restarts */
	char cgroup[PATH_MAX]; /* canonical path */
	uint64_t cgid;
	char policy_path[PATH_MAX]; /* where the policy came from ("" if given inline) */
	char *policy_src; /* the policy text as added: restarts use it, not the file */
	size_t policy_len;
	/* The layer in force (a reference): policy, handler, compiled rules, Lua state. Never
	 * NULL once the sandbox is added or adopted; a switch replaces it whole. */
	struct sl_layer *layer;
	int64_t handler_since_s;
	unsigned switches; /* handler sets, clears and policy reloads since added */
	/* Audit mode: the kernel allows and records what the rules deny, DNS resolves names the
	 * policy does not give, the proxy records what handlers refuse (SL_SB_AUDIT). */
	int audit;
	int64_t mode_since_s; /* wall clock of the last mode switch (0: since added) */
	struct sb_obs obs; /* what audit mode saw in DNS and the proxy (sb_audit.c) */
	uint32_t rules_id; /* key id of the kernel rules in force: id, or id | SL_RULES_BANK */
	struct sb_learned learned; /* what its names resolved to; changes with every answer */
	/* Lines for the names file not yet written: the pairs of one turn of the loop go out
	 * in one append (sb_names_note()), not an open, write and close each. */
	struct sl_buf names_pending;
	struct sl_timer names_timer;
	struct sl_dns_listener *dns; /* where the kernel sends the sandbox's DNS queries */
	uint16_t dns_port; /* kept across restarts */
	struct sl_proxy_listener *proxy; /* where the kernel sends intercepted connections */
	uint16_t proxy_port; /* kept across restarts */
	/* Its listeners: 0 not placed yet (sb_place_listeners()), SB_OWN sockets of its own (in
	 * the registry's count of those), SB_SHARED its worker's shared ones. */
	int listeners;
	uint64_t proxied_swept; /* kernel records of intercepted connections never accepted */
	/* A sandbox with a network of its own: its listeners live in that namespace, which
	 * sluiced holds open (-1: sluiced's namespace). The path is as given (a restart tries it
	 * first); dev/ino name the namespace itself. */
	int netns_fd;
	char netns[PATH_MAX];
	uint64_t netns_dev, netns_ino;
	uint64_t netns_cookie; /* the kernel's name of it (sl_netns_cookie()), for sl_listeners */
	struct sl_ca *ca; /* the sandbox's own CA: its leaves are what the sandbox sees */
	int64_t created_s; /* wall clock */
	/* The OCI container this sandbox was made for ("" if none): only that container's
	 * poststop may remove it. */
	char container_id[SL_CONTAINER_ID_MAX + 1];
	struct sl_registry *reg;
	struct sl_list link; /* in reg->boxes, or reg->adding while its layer compiles */
	int adding; /* an add under way (sl_sandbox_add_async()): holds its id, nothing else */
	struct sb_switching *switching; /* a switch under way (sb_switch.c), NULL: none */
	/* The worker's: jobs of its own under way besides a switch (a GET's, holding a reference
	 * to its layer; a switch's old rule bank being cleared): its removal waits for them. */
	unsigned jobs;
	/* The worker's: removed while its switch compiled or a GET's job ran; the last of those
	 * completions goes on with the removal (sb_rm_resume()). */
	int removed;
	struct sb_rm *rm_after_switch;
	int removing; /* main: a removal under way (its worker lets go first): not found */
	struct sb_worker *w; /* its worker: NULL until placed */
	struct sl_list wlink; /* in w->boxes: the worker's */
	size_t nents; /* kernel entries when added (for the log line) */
};

#define POLICY_MAX_BYTES (1u << 20)

/* The sandboxes of one sluiced (sandbox.h). The main thread's, but for what is read-only once
 * workers run (bpf, ttl, lua_opts, state_dir, ctl_path, workers' loops and services). */
struct sl_registry {
	struct sl_bpf *bpf;
	struct sl_loop *loop; /* the main thread's */
	struct sl_dns_ttl ttl;
	struct sb_worker *workers;
	unsigned nworkers;
	struct sl_lua_opts lua_opts;
	struct sl_timer sweep; /* embedded: re-arming cannot fail, so the sweep never stops */
	unsigned netns_sweeps; /* sweeps since namespaces were last judged */
	unsigned px_sweeps; /* sweeps so far: which fifth of the ids sweeps its sl_proxied */
	char state_dir[PATH_MAX];
	/* sluiced's control socket: no egress.unix may name it (also denied in the kernel). */
	char ctl_path[PATH_MAX];
	struct sl_list boxes; /* of struct sl_box, sorted by name: ls output is stable */
	/* The same boxes by name and by cgroup path, sorted (room for max_ids: a box holds an
	 * id): a lookup by name, the place of a new box and the cgroup overlap check of an add
	 * take a binary search, not a walk of every sandbox (sb_link(), cgroup_taken()). */
	struct sl_box **by_name, **by_cgroup;
	size_t nindexed;
	size_t cgroup_cursor; /* in by_name: where the sweep's next cgroup check begins */
	struct sl_list adding; /* of struct sl_box being added: their names and cgroups are taken */
	struct sl_jobs *jobs; /* the compile jobs' thread, started by the first async add */
	int jobs_stopped; /* sluiced stops: no job is submitted any more */
	/* The removals' job (sb_removed_later()), on a jobs thread of its own: deletes the kernel rules
	 * of removed sandboxes (a walk of the rule maps: once for all removed since) and their
	 * sl_proxied maps (a write that waits for a grace period). Queued while rm_queued; it
	 * clears rm_running, the removals that come meanwhile wait in rm_pending. */
	struct sl_job rmjob;
	struct sl_jobs *rm_jobs; /* its thread, started by the first removal */
	int rm_queued, rm_reap_failed; /* failed: the next removal tries again */
	struct sb_ids {
		uint32_t *v; /* rules ids (banks) */
		size_t n, cap;
	} rm_pending, rm_running;
	uint8_t *id_held; /* [max_ids]: 1 while a removed sandbox's rules are being cleared */
	size_t count;
	struct sl_box **by_id; /* [max_ids]: the sandbox of each kernel id, NULL: free */
	uint32_t max_ids; /* --max-sandboxes: ids are 1..max_ids-1 */
	/* Sandboxes in sluiced's network namespace with listeners of their own, and how many may
	 * have them (--own-listeners, default: every one). Counted by the workers (atomic). */
	unsigned own_used, own_max;
	uint64_t netns_cookie; /* of sluiced's own namespace (0: the kernel does not tell) */
};

#define SB_OWN 1
#define SB_SHARED 2

/* sandbox.c: the registry's list, and its jobs thread. */
void sb_box_free(struct sl_box *box);
void sb_link(struct sl_registry *r, struct sl_box *box);

/* The registry's jobs thread (adds: completions on the main thread), started at the first
 * call; NULL: none (no loop, or it could not start: the work is then done on the loop). */
struct sl_jobs *sb_jobs(struct sl_registry *r);
/* Main thread: @box is removed; its kernel rules and its sl_proxied map are deleted by the
 * removals' job, with those of other removals, and its id is not given out before (NULL:
 * only what is left to do). */
void sb_removed_later(struct sl_registry *r, struct sl_box *box);
/* @w's jobs thread (switches: completions on the worker), started at the first call, on the
 * worker; NULL: none (the work is then done on the worker's loop). */
struct sl_jobs *sb_worker_jobs(struct sb_worker *w);
/* A removal that waited for the switch of its sandbox goes on (the worker, once the switch's
 * completion answered). */
struct sb_rm;
void sb_rm_resume(struct sl_box *box);
/* One of box->jobs ended (worker): a removal that waited for it goes on. */
void sb_box_job_end(struct sl_box *box);

/* sb_switch.c: a switch under way. */
/* The kernel entry of @family/@addr was rewritten while @s compiled (sb_learned.c): its
 * entry in the new bank is rewritten too when the switch completes. */
void sb_switch_note(struct sb_switching *s, uint8_t family, const uint8_t *addr);
/* Closes the open flows of @box's cgroups that its rules no longer let through (@old: the
 * learned entries of before, which a checked passthrough flow may have been granted by; NULL:
 * none). Returns how many were closed. */
size_t sb_kill_flows(struct sl_box *box, const struct sb_learned *old);
/* The same at an add, for the connections @box's cgroups opened before it: those of the
 * sandbox's network namespace and of every other namespace one of its processes is in. */
size_t sb_kill_older_flows(struct sl_box *box);

/* Places @box on the worker with the fewest sandboxes (ties: the lowest index). Main. */
void sb_place(struct sl_registry *r, struct sl_box *box);
/* On @box's worker (or with workers stopped): it lets go of what moves (listeners, names
 * timer) and leaves the worker's list; the rest of it can then go on the main thread. */
void sb_box_detach(struct sl_box *box);
static inline int sb_box_audit(const struct sl_box *box)
{
	return __atomic_load_n(&box->audit, __ATOMIC_RELAXED);
}
static inline void sb_box_set_audit(struct sl_box *box, int audit)
{
	__atomic_store_n(&box->audit, audit, __ATOMIC_RELAXED);
}

/* sb_state.c: the state file and the names file. */
void sb_state_path(struct sl_registry *r, const char *name, char *buf, size_t len);
/* The state file (sb_state.c): sb_save_state() formats and writes it in one call; an add
 * formats it on its worker and writes it on that worker's jobs thread. */
int sb_save_state(struct sl_registry *r, const struct sl_box *box, int fresh);
char *sb_state_text(const struct sl_box *box, int *err);
int sb_state_write(struct sl_registry *r, const char *name, const char *text, int fresh);
void sb_state_text_free(char *text);
void sb_names_path(struct sl_registry *r, const char *name, char *buf, size_t len);
void sb_names_note(struct sl_registry *r, struct sl_box *box, const char *name, uint8_t family,
		   const uint8_t *addr);
/* Writes what sb_names_note() holds for @box now (at shutdown; the loop does it otherwise). */
void sb_names_flush(struct sl_box *box);

/* sb_layer.c: layers. */
/* A new unpublished layer of @lua and @base (references taken; both NULL: a layer without a
 * policy) with the handler @handler (NULL or "": none), its egress @hlayer (owned from here on,
 * may be NULL) and @params (copied). Its rules are empty until sb_layer_compile(). NULL on
 * failure (ENOMEM, or EINVAL: handler name too long; @hlayer freed either way). */
struct sl_layer *sb_layer_new(struct sl_lua *lua, struct sb_base *base, const char *handler,
			      struct sl_policy *hlayer, const char *params);
/* The base of a freshly loaded policy: takes @p. NULL (ENOMEM) frees it. */
struct sb_base *sb_base_new(struct sl_policy *p);
struct sb_base *sb_base_ref(struct sb_base *b);
void sb_base_unref(struct sb_base *b); /* accepts NULL */
const struct sl_policy *sb_base_policy(const struct sb_base *b);
/* Compiles the static rules of @l's policy into @l->rules, once, before it is published: any
 * thread. 0 or -EINVAL/-ENOMEM with the reason in @err. */
int sb_layer_compile(struct sl_layer *l, char *err, size_t errlen);
struct sl_layer *sb_layer_ref(struct sl_layer *l);
void sb_layer_unref(struct sl_layer *l); /* accepts NULL */
/* Whether the caller's reference to @l is the last one, and @l the last holder of its Lua
 * state and base: then freeing it touches nothing anybody else holds (loop thread). */
int sb_layer_sole(const struct sl_layer *l);
/* The policy in force for @box (NULL: none) and its Lua state (NULL: none). */
static inline const struct sl_policy *sb_policy(const struct sl_box *box)
{
	return box->layer ? box->layer->policy : NULL;
}
static inline struct sl_lua *sb_lua(const struct sl_box *box)
{
	return box->layer ? box->layer->lua : NULL;
}

/* sb_kernel.c: policy to rules, rules to the kernel. */
int sb_check_unix(struct sl_registry *r, const struct sl_policy *p, const char *where, char *err,
		  size_t errlen);
int sb_sync_unix(struct sl_registry *r, uint32_t rules_id, const struct sl_policy *p);
int sb_compile_all(const struct sl_rule_set *rules, const struct sb_learned *learned,
		   struct sl_kentry **ents, size_t *nents, struct sl_kentry *bad);
int sb_compile_box(struct sl_box *box, const struct sl_lua_opts *o, const char *handler,
		   const char *params, struct sl_kentry **ents, size_t *nents, char *err,
		   size_t errlen);
void sb_kernel_entry(struct sl_registry *r, const struct sl_box *box, struct sl_sandbox *ksb);
/* A listener port an adopted sandbox had under an earlier sluiced (its state file's) and
 * has no more: its kernel keys would refuse whatever socket gets the number next. Once every
 * sandbox is adopted, sb_forget_moved_ports() drops those no sandbox holds now. */
struct sb_moved_port {
	uint64_t netns; /* cookie */
	uint16_t port;
};
void sb_forget_moved_ports(struct sl_registry *r, struct sb_moved_port *v, size_t n);
int sb_write_rules(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
		   size_t nents, char *err, size_t errlen);
/* The sandbox's sl_proxied map: @fresh, a new one (an add's, off the worker's loop: writing
 * the outer map waits for an RCU grace period); else the one it has, or the one in the
 * kernel for its id (a restart adopts it with its pending records). */
int sb_open_proxied(struct sl_registry *r, struct sl_box *box, int fresh, char *err, size_t errlen);
int sb_install(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
	       size_t nents, int written, char *err, size_t errlen);
void sb_uninstall(struct sl_registry *r, struct sl_box *box);

/* sb_learned.c: resolved names. */
extern const struct sl_dns_ops sb_dns_ops;
const char *sb_dns_name(void *owner);
int sb_learned_add(struct sb_learned *l, const char *name, const struct sl_addr_rule *r);
/* Writes the kernel entry of one address into rule bank @bank from static @rules and @learned
 * (no entry when neither has that exact address: a covering prefix then answers alone).
 * @fresh: no entry is known at that key (sl_bpf_set_rule()); @kb: staged there when not NULL
 * (sl_kbatch_rule()). */
int sb_learned_write_addr(struct sl_registry *r, uint32_t bank, const struct sl_layer *layer,
			  const struct sb_learned *learned, uint8_t family, const uint8_t *addr,
			  int fresh, struct sl_kbatch *kb);
void sb_learned_free(struct sb_learned *l);
void sb_learned_sweep(struct sl_registry *r, struct sl_box *box, uint64_t now);
/* Drops from memory the learned entries of @box expired at @now, at most @max of them, the
 * earliest first (the kernel is not written): returns how many addresses lost one, each
 * once, sorted, in *@gone (malloc'd; caller frees). O(log n) per entry dropped. */
size_t sb_learned_expire(struct sl_box *box, uint64_t now, size_t max, struct sl_addr_rule **gone);

/* sb_sni.c: the names the kernel SNI check accepts (bpf/sni.h). */
int sb_sni_relevant(const struct sl_addr_rule *x);
/* Writes the kernel entries of every name learned at @family/@addr. */
int sb_sni_write_addr(struct sl_registry *r, struct sl_box *box, uint8_t family,
		      const uint8_t *addr, struct sl_kbatch *kb);
/* Learned entry @x of @name is being dropped: its name's kernel entry goes (write_addr()
 * writes back what remains of the name there). */
void sb_sni_forget(struct sl_box *box, const struct sl_addr_rule *x, const char *name);
/* Rewrites all of @box's kernel entries from its learned entries (after a switch). */
int sb_sni_sync(struct sl_registry *r, struct sl_box *box);
/* Deletes all of them. */
void sb_sni_drop(struct sl_registry *r, struct sl_box *box);

/* sb_audit.c: audit mode's records. */
void sb_obs_dns(struct sl_box *box, const char *qname, const struct sl_dns_answer *a,
		const uint8_t blocked[SL_DNS_MAX_ADDRS], int granted);
void sb_obs_http(struct sl_box *box, const char *method, const char *host, const char *path,
		 int status, const char *refused);
void sb_obs_use(struct sl_box *box, const char *name, uint16_t port, uint8_t proto);
void sb_obs_free(struct sb_obs *o);
/* Across restarts: STATE_DIR/sandboxes/NAME.audit. _save writes @box's records if they changed
 * since it last did (0, or -errno, logged); _load reads them back at adoption (a missing or
 * unreadable file: none, not an error). */
#define SB_OBS_SAVE_S 5
void sb_obs_path(struct sl_registry *r, const char *name, char *buf, size_t len);
int sb_obs_save(struct sl_registry *r, struct sl_box *box, int64_t now_s);
int sb_obs_load(struct sl_registry *r, struct sl_box *box);

/* sb_listeners.c: listeners and the CA. */
int sb_open_dns(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen);
int sb_open_ca(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen);
void sb_remove_ca(struct sl_registry *r, const char *name);
int sb_open_proxy(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen);
void sb_unplace_listeners(struct sl_registry *r, struct sl_box *box);

/* sb_netns.c: cgroup, network namespace, reaping. */
int sb_netns_target(struct sl_box *box, const struct sl_box_spec *spec, char *err, size_t errlen);
int sb_netns_adopt(struct sl_box *box, json_t *j);
void sb_reap_vanished(struct sl_registry *r);

#endif
