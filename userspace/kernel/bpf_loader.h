/* SPDX-License-Identifier: MIT */
/*
 * The kernel half as sluiced sees it: loading and pinning the programs and maps, attaching
 * them to sandbox cgroups, and reading and writing the maps (see bpf_loader.c).
 *
 * Threading: sl_bpf_open(), sl_bpf_close(), the event ring and the unattributed calls belong
 * to the main thread. The calls on one sandbox (its rules, banks, sl_proxied map, counters,
 * links) may come from its worker, or the jobs thread while it is added: bpf() syscalls are
 * thread-safe, and the userspace bookkeeping they keep (a bank's entry count, a sandbox's
 * sl_proxied descriptor) is per sandbox, so two sandboxes' threads never share it. No lock.
 * sl_bpf_open() loads the programs (the verifier: tens of milliseconds) at startup; the other
 * calls are syscalls on maps and links, which do not sleep, and walks of a sandbox's entries.
 */
#ifndef SL_BPF_LOADER_H
#define SL_BPF_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>
#include "sluice.h"
#include "kernel/rules.h"

struct sl_bpf;

struct sl_bpf_opts {
	const char *pin_dir; /* bpffs directory, e.g. /sys/fs/bpf/sluice */
	uint32_t event_limit; /* deny events per sandbox per CPU per second */
	/* Capacity, fixed at load (0: the default): entries of each rule map (sl_rules4 and
	 * sl_rules6 each, all sandboxes and both banks together), and sandbox ids (ids
	 * 1..max_sandboxes-1) which size every per-sandbox map. */
	uint32_t max_rules; /* default SL_MAX_RULES */
	uint32_t max_sandboxes; /* default SL_MAX_SANDBOXES */
};

/*
 * Loads the programs, reusing the maps pinned under opts->pin_dir if a previous sluiced left
 * them (enforcement continues from their contents) or creating and pinning them. A pinned map
 * of another size than opts asks is migrated: its contents copied into a new map of the new
 * size before any cgroup link is switched to the new programs (the old programs keep the old
 * map until then, so enforcement never pauses); if its contents do not fit the new size the
 * start is refused, saying which option to raise. Mounts bpffs at /sys/fs/bpf if the pin
 * directory lies there and nothing is mounted. Returns NULL with a one-line reason in @err.
 */
struct sl_bpf *sl_bpf_open(const struct sl_bpf_opts *opts, char *err, size_t errlen);
/* The capacity in force (opts of sl_bpf_open() with the defaults applied). */
uint32_t sl_bpf_max_sandboxes(const struct sl_bpf *b);
uint32_t sl_bpf_max_rules(const struct sl_bpf *b);
/* Closes the loaded objects; pinned maps, programs and links stay. Accepts NULL. */
void sl_bpf_close(struct sl_bpf *b);

/*
 * Attaches the programs to the cgroup at @cgroup_path with bpf_link and pins the links under
 * <pin_dir>/sandboxes/@name/. If pinned links exist already (a previous sluiced attached
 * them), they are switched to the programs of this instance atomically with
 * BPF_LINK_UPDATE when they still belong to cgroup @cgid, and recreated otherwise.
 * The sockops program, which only serves interception, runs on every TCP connect of the
 * cgroup: it is attached only when @intercept is set (and detached otherwise).
 * *@fresh (if not NULL) says whether the egress program was attached anew rather than
 * updated: the cgroup's connections so far were made without the hooks of this sandbox.
 * Returns 0 or -errno; on failure nothing new stays attached.
 */
int sl_bpf_attach(struct sl_bpf *b, const char *name, const char *cgroup_path, uint64_t cgid,
		  int intercept, int *fresh);
/* Detaches and unpins the links of sandbox @name. Returns 0 or -errno. */
int sl_bpf_detach(struct sl_bpf *b, const char *name);
/* Names of sandboxes with pinned links, for reconciling with the state directory. @cb is
 * called once per name. */
void sl_bpf_pinned_sandboxes(struct sl_bpf *b, void (*cb)(const char *name, void *arg), void *arg);

int sl_bpf_set_sandbox(struct sl_bpf *b, uint64_t cgid, const struct sl_sandbox *sb);
int sl_bpf_get_sandbox(struct sl_bpf *b, uint64_t cgid, struct sl_sandbox *sb);
int sl_bpf_del_sandbox(struct sl_bpf *b, uint64_t cgid);

/*
 * Makes the kernel rules of @sandbox_id exactly @ents: writes every entry, then deletes the
 * sandbox's entries that are not in @ents (so a destination allowed before and after never
 * sees a gap). A whole address goes to the address hash of its family (sl_hosts4/6), a
 * shorter prefix to the trie (sl_rules4/6). Returns 0 or -errno (-ENOSPC: its map is full).
 */
int sl_bpf_sync_rules(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *ents,
		      size_t n);
/*
 * Takes the whole addresses of @ents out of the tries, where a sluiced before 7 December kept
 * them, once the rules of @sandbox_id are synced (the hashes hold them) and its links run
 * this sluiced's programs (which look in the hashes first): until then the old programs
 * decide from the tries. Nothing to do, and no system call, when none was found at open.
 * Returns 0 or -errno.
 */
int sl_bpf_drop_trie_hosts(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *ents,
			   size_t n);
/* Deletes every kernel rule of the banks @rules_ids (removed sandboxes'): one walk of each
 * rule map for all @n of them, where a sync to nothing walks it for each. Returns 0 or
 * -errno. */
int sl_bpf_clear_rules(struct sl_bpf *b, const uint32_t *rules_ids, size_t n);

/* Writes one entry of @sandbox_id's rules (deletes it when @e->val.n is 0). @fresh: the
 * caller knows of no entry at this key, so it is created first (one syscall, not two); either
 * way a wrong guess costs one more syscall, never a wrong entry. Returns 0 or -errno
 * (-ENOSPC: the map is full). */
int sl_bpf_set_rule(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *e, int fresh);
/*
 * Kernel writes held together, e.g. the addresses one DNS wake-up learned: with a batch, new
 * rule entries and SNI name entries are staged, and sl_kbatch_commit() writes them with one
 * BPF_MAP_UPDATE_BATCH per map (one syscall instead of one per entry). A write to a key
 * staged already replaces the staged value (a deletion too), so the commit writes the last
 * value; anything else (a rule entry that exists, a deletion of an unstaged key, a full
 * batch) is written at once, as without a batch. Each staged write carries the batch's
 * current tag (sl_kbatch_tag(), 0..63); the commit says per tag the first error of its
 * writes. Nothing staged is in the kernel before the commit: its caller releases nothing that
 * depends on an entry (a DNS answer) until then.
 * Threading: a batch belongs to one thread; its writes go to the maps of @b.
 */
struct sl_kbatch;
#define SL_KBATCH_TAGS 64
struct sl_kbatch *sl_kbatch_new(struct sl_bpf *b);
void sl_kbatch_free(struct sl_kbatch *kb);
void sl_kbatch_tag(struct sl_kbatch *kb, unsigned tag);
/* As sl_bpf_set_rule(), through @kb (NULL: at once). */
int sl_kbatch_rule(struct sl_kbatch *kb, struct sl_bpf *b, uint32_t sandbox_id,
		   const struct sl_kentry *e, int fresh);
/* As sl_bpf_set_sni_name(), through @kb (NULL: at once). */
int sl_kbatch_sni(struct sl_kbatch *kb, struct sl_bpf *b, uint32_t sandbox_id, uint8_t family,
		  const uint8_t *addr, const char *name, const struct sl_sni_val *v);
/* Writes what is staged and empties the batch; @err[tag]: 0, or the first -errno of the
 * tag's writes (-ENOSPC: a full map). */
void sl_kbatch_commit(struct sl_kbatch *kb, int err[SL_KBATCH_TAGS]);

/* Reads every kernel entry of rule bank @rules_id into *@out (malloc'd, caller frees). */
int sl_bpf_read_rules(struct sl_bpf *b, uint32_t rules_id, struct sl_kentry **out, size_t *n);
/* Reads the kernel entries of rule bank @rules_id that hold a resolution (a range that
 * expires: what DNS answers installed) into *@out (malloc'd, caller frees): from the snapshot
 * while one is taken, else one walk of the maps. */
int sl_bpf_read_learned(struct sl_bpf *b, uint32_t rules_id, struct sl_kentry **out, size_t *n);
/* Takes (or drops) a snapshot of every bank's resolutions: one walk of the maps for all the
 * sandboxes an adoption reads, instead of one per sandbox (400 sandboxes of 250 rules: 19 s
 * of walks, 81 s key by key). */
int sl_bpf_learned_snapshot(struct sl_bpf *b);
void sl_bpf_learned_snapshot_drop(struct sl_bpf *b);
/*
 * Makes the UNIX socket addresses allowed under rule bank @rules_id exactly @keys (their
 * sandbox_id is ignored; path zero-padded past len): writes every key, then deletes the others
 * of @rules_id. @rules_id 0 holds sluiced's own sockets, denied to every sandbox. Returns 0
 * or -errno (-E2BIG or -ENOSPC: the map is full).
 */
int sl_bpf_sync_unix(struct sl_bpf *b, uint32_t rules_id, const struct sl_unix_key *keys, size_t n);
/* Whether the kernel runs sluice's UNIX socket hooks (connect_unix/sendmsg_unix, Linux >= 6.7):
 * if not, UNIX sockets of sandboxes are not confined. */
int sl_bpf_unix_confined(const struct sl_bpf *b);

/* Registers (@sandbox_id > 0) or forgets (0) a listener of the daemon on 127.0.0.1 and ::1,
 * of @protocol (IPPROTO_TCP or IPPROTO_UDP), in the network namespace of cookie @netns
 * (SO_NETNS_COOKIE; 0: unknown, every namespace): the kernel denies a sandbox of that
 * namespace that connects to it directly or binds its port in that protocol. Forgetting
 * under cookie 0 also drops the keys an earlier sluiced wrote (any protocol, ::1); the caller
 * forgets there only when no listener of any namespace has the port. */
int sl_bpf_set_listener(struct sl_bpf *b, uint64_t netns, uint16_t port_be, uint8_t protocol,
			uint32_t sandbox_id);

/*
 * Sandbox @sandbox_id's own sl_proxied map (see sluice.h). Each call is thread-safe.
 *   _want: an add holds the id (the loop that reserved it): its map is made with the next
 *	batch, and the add's _fresh finds it made.
 *   _fresh: a new, empty map for the id, never a sandbox's before: an add's, off the loops
 *	(it may wait for a grace period). It makes those of every wanted id in the same write.
 *   _open: a restored sandbox's, the map a previous sluiced left for its id (records pending
 *	included), or a new one.
 *   _drop: the sandbox is removed: its map is out of its hands at once, out of the kernel's
 *	at the next _reap (the jobs thread's: a grace period for all removed since).
 *   _stale: whether a removed sandbox's map waits for _reap.
 * Return 0 or -errno.
 */
int sl_bpf_proxied_open(struct sl_bpf *b, uint32_t sandbox_id);
void sl_bpf_proxied_want(struct sl_bpf *b, uint32_t sandbox_id);
int sl_bpf_proxied_fresh(struct sl_bpf *b, uint32_t sandbox_id);
void sl_bpf_proxied_drop(struct sl_bpf *b, uint32_t sandbox_id);
int sl_bpf_proxied_stale(struct sl_bpf *b);
int sl_bpf_proxied_reap(struct sl_bpf *b);
/* Takes the kernel's record of the proxied connection of sandbox @sandbox_id whose client is
 * @addr:@port (host order) in the network namespace @netns_cookie, removing it. Returns 0, or
 * -ENOENT when the kernel did not redirect it (for this sandbox). */
int sl_bpf_take_proxied(struct sl_bpf *b, uint32_t sandbox_id, uint64_t netns_cookie,
			uint8_t family, const uint8_t *addr, uint16_t port,
			struct sl_sockorig *out);
/* Takes the sandbox of the TCP connection from @addr:@port to the shared listener on
 * @listener_port (ports in host order), as the egress program recorded it (sl_accepts),
 * removing the record. Returns 0, or -ENOENT when the kernel recorded none. */
int sl_bpf_take_accept(struct sl_bpf *b, uint8_t family, const uint8_t *addr, uint16_t port,
		       uint16_t listener_port, uint32_t *sandbox_id);
/* Removes the records of @sandbox_id older than @max_age_ns (CLOCK_MONOTONIC @now_ns): their
 * connections were never accepted. Returns how many. */
int sl_bpf_proxied_sweep(struct sl_bpf *b, uint32_t sandbox_id, uint64_t now_ns,
			 uint64_t max_age_ns);

/* Sums the per-CPU counters of @sandbox_id. */
int sl_bpf_read_counters(struct sl_bpf *b, uint32_t sandbox_id, struct sl_counters *sum);
/* Sums the per-CPU count of @sandbox_id's intercepted connects refused for a full sl_proxied. */
int sl_bpf_read_proxied_full(struct sl_bpf *b, uint32_t sandbox_id, uint64_t *sum);
/* Zeroes the per-sandbox slots (counters, event limiter) of @sandbox_id. */
int sl_bpf_reset_slots(struct sl_bpf *b, uint32_t sandbox_id);

/*
 * Audit mode's records of sandbox @sandbox_id (bpf/audit.h): what its calls reached that its
 * rules deny, with counts and first/last times. _read copies them into *@out (malloc'd, caller
 * frees); _clear removes them and zeroes the sandbox's audit counters (sl_bpf_reset_slots does
 * too). Return 0 or -errno. O(records of every sandbox) each.
 */
struct sl_audit_rec {
	struct sl_audit_key k;
	struct sl_audit_val v;
};
struct sl_audit_unix_rec {
	struct sl_unix_key k;
	struct sl_audit_val v;
};
int sl_bpf_audit_read(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_rec **out, size_t *n);
int sl_bpf_audit_unix_read(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_unix_rec **out,
			   size_t *n);
int sl_bpf_audit_clear(struct sl_bpf *b, uint32_t sandbox_id);
/* Sums the per-CPU audit counters of @sandbox_id. */
int sl_bpf_read_audit_ctr(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_ctr *sum);

/* Deny events: @cb is called for each record. Returns the ring buffer's epoll fd. */
typedef void sl_bpf_event_cb(const struct sl_event *ev, void *arg);
int sl_bpf_events_fd(struct sl_bpf *b, sl_bpf_event_cb *cb, void *arg);
/* Consumes available records. Loop thread only. */
int sl_bpf_events_poll(struct sl_bpf *b);

/* Removes every pin under the pin directory (programs, maps, links): enforcement ends for
 * every sandbox of this daemon. */
int sl_bpf_purge(struct sl_bpf *b);

/*
 * The names sandbox @sandbox_id may present as TLS server name at @addr (@family, network
 * order) on a checked passthrough (bpf/sni.h): @v's port ranges, or no entry if @v is NULL or
 * empty. @name: lower case, no trailing dot. Returns 0 or -errno.
 */
int sl_bpf_set_sni_name(struct sl_bpf *b, uint32_t sandbox_id, uint8_t family, const uint8_t *addr,
			const char *name, const struct sl_sni_val *v);
/* Calls @cb for every name entry of @sandbox_id until it returns non-zero (returned). */
int sl_bpf_sni_names_each(struct sl_bpf *b, uint32_t sandbox_id,
			  int (*cb)(const struct sl_sni_key *k, const struct sl_sni_val *v,
				    void *arg),
			  void *arg);
/* Deletes every name entry of @sandbox_id. */
int sl_bpf_drop_sni_names(struct sl_bpf *b, uint32_t sandbox_id);
/* The kernel SNI check's counters of @sandbox_id, summed over CPUs. */
int sl_bpf_read_sni_counters(struct sl_bpf *b, uint32_t sandbox_id, struct sl_sni_ctr *sum);

#endif
