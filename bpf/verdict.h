/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel half's decision logic: which sandbox a socket belongs to, which verdict a
 * destination gets, counters and rate-limited deny events. Everything here is
 * static __always_inline and free of hook context so that tests/unit/test_verdict.c can run
 * it through BPF_PROG_RUN in a tc program, tests/bpf/verdict_test.bpf.c (sock_addr programs
 * have no test_run).
 */
#ifndef SLUICE_VERDICT_H
#define SLUICE_VERDICT_H

#include "sluice.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Maps are pinned by name under the daemon's bpffs directory so that enforcement survives
 * sluiced and a restarted sluiced adopts them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u64); /* cgroup id */
	__type(value, struct sl_sandbox);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sandboxes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_key4);
	__type(value, struct sl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_rules4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SL_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_key6);
	__type(value, struct sl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_rules6 SEC(".maps");

/* The entries of full length (an address: /32, /128) are kept apart from the tries, in hashes
 * of the same keys (prefixlen always 64 or 160) and values: one hash lookup decides for most
 * destinations (resolved names, listed addresses), whatever the number of rules, and only an
 * address no such entry names walks the trie of its family. Since an entry's value already
 * merges the ranges of every prefix covering it, the hash's answer is the trie's. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_key4);
	__type(value, struct sl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_hosts4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_key6);
	__type(value, struct sl_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_hosts6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32);
	__type(value, struct sl_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32);
	__type(value, struct sl_evlimit);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_evlimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SL_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_sockorig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sockorig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sl_sockdst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sockdst SEC(".maps");

/* Per-sandbox per-CPU count of intercepted connect()s refused because the sandbox's sl_proxied
 * map was full (SL_CTR_MAX has no slot left; a map of its own keeps sl_counters' layout). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_pxfull SEC(".maps");

/* The inner map of sl_proxied, one per sandbox; sluiced creates them with these attributes
 * (bpf_loader.c). */
struct sl_proxied_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_PROXIED_PER_SANDBOX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	/* Sizes rather than types: libbpf 1.1 cannot size the types of an inner map. */
	__uint(key_size, sizeof(struct sl_conn_key));
	__uint(value_size, sizeof(struct sl_proxied_rec));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32); /* sandbox id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sl_proxied_inner);
} sl_proxied SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SL_ACCEPTS_MAX);
	__type(key, struct sl_accept_key);
	__type(value, __u32); /* sandbox id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_accepts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * SL_MAX_SANDBOXES);
	__type(key, struct sl_listener_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_UNIX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_unix_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_unix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SL_LPORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_listener_ports SEC(".maps");

/* Deny events per sandbox per CPU per second; set by sluiced before load. */
const volatile __u32 sl_event_limit = 100;
/* Whether the kernel gives cgroup_skb programs bpf_get_netns_cookie() (newer kernels): set by
 * the loader after a probe; without it the egress program looks listeners up under cookie 0,
 * which sluiced then writes too. */
const volatile __u8 sl_skb_netns = 0;
/* Whether sl_listeners may hold keys of cookie 0 (every namespace): set by the loader when it
 * finds or writes one, so that a namespace's miss costs one lookup, not two, where none is. */
__u8 sl_listeners_shared = 0;

static __always_inline void sl_count(__u32 sandbox_id, __u32 ctr)
{
	struct sl_counters *c = bpf_map_lookup_elem(&sl_counters, &sandbox_id);

	/* Per-CPU slot: no atomics needed, and the sum over CPUs is exact. */
	if (c && ctr < SL_CTR_MAX)
		c->c[ctr]++;
}

/*
 * The sandbox of the current task: its own cgroup, or the nearest ancestor that is a sandbox
 * (child cgroups of a sandbox are the sandbox). NULL if none: the caller denies.
 * The hooks run for sockets whose cgroup is under a sandbox; the task doing the connect is
 * normally the one that created the socket. A task outside every sandbox using a socket
 * created inside one finds no sandbox here and is denied (fail closed).
 */
static __always_inline struct sl_sandbox *sl_current_sandbox(__u64 *cgid_out)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	struct sl_sandbox *sb;
	int level;

	*cgid_out = cgid;
	sb = bpf_map_lookup_elem(&sl_sandboxes, &cgid);
	if (sb)
		return sb;
	/* Level 0 is the root, never a sandbox. Walk down from the top until we reach our own
	 * cgroup (the helper returns 0 past the task's depth). */
	for (level = 1; level < SL_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id || id == cgid)
			break;
		sb = bpf_map_lookup_elem(&sl_sandboxes, &id);
		if (sb)
			return sb;
	}
	return NULL;
}

/*
 * The clock (CLOCK_MONOTONIC, bpf_ktime_get_ns) in *@now_ns, read on first use: 0 means not
 * read yet. A clock read costs a good part of an allowed connect() on some hypervisors, and
 * most calls never need one (no range with an expiry, no event).
 */
static __always_inline __u64 sl_now(__u64 *now_ns)
{
	if (!*now_ns)
		*now_ns = bpf_ktime_get_ns();
	return *now_ns;
}

/* Highest verdict among the unexpired ranges of @rule that cover @port/@proto_bit. The clock
 * (*@now_ns, sl_now()) is read only for a covering range that has an expiry. */
static __always_inline int sl_rule_verdict(const struct sl_rule *rule, __u16 port, __u8 proto_bit,
					   __u64 *now_ns)
{
	int verdict = SL_VERDICT_DENY;
	__u32 i;

	for (i = 0; i < SL_MAX_PORT_RANGES; i++) {
		const struct sl_port_range *r;

		if (i >= rule->n)
			break;
		r = &rule->r[i];
		if (port < r->lo || port > r->hi || !(r->protos & proto_bit))
			continue;
		if (r->expires_ns && r->expires_ns <= sl_now(now_ns))
			continue;
		if (SL_VERDICT_RANK(r->verdict) > SL_VERDICT_RANK(verdict))
			verdict = r->verdict;
	}
	return verdict;
}

static __always_inline int sl_verdict4(__u32 sandbox_id, __u32 addr_be, __u16 port, __u8 proto_bit,
				       __u64 *now_ns)
{
	struct sl_key4 key = { .prefixlen = 64, .sandbox_id = sandbox_id };
	struct sl_rule *rule;

	__builtin_memcpy(key.addr, &addr_be, 4);
	rule = bpf_map_lookup_elem(&sl_hosts4, &key);
	if (!rule)
		rule = bpf_map_lookup_elem(&sl_rules4, &key);
	if (!rule)
		return SL_VERDICT_DENY;
	return sl_rule_verdict(rule, port, proto_bit, now_ns);
}

static __always_inline int sl_verdict6(__u32 sandbox_id, const __u32 addr_be[4], __u16 port,
				       __u8 proto_bit, __u64 *now_ns)
{
	struct sl_key6 key = { .prefixlen = 160, .sandbox_id = sandbox_id };
	struct sl_rule *rule;

	__builtin_memcpy(key.addr, addr_be, 16);
	rule = bpf_map_lookup_elem(&sl_hosts6, &key);
	if (!rule)
		rule = bpf_map_lookup_elem(&sl_rules6, &key);
	if (!rule)
		return SL_VERDICT_DENY;
	return sl_rule_verdict(rule, port, proto_bit, now_ns);
}

/* ::ffff:a.b.c.d: the kernel connects such a destination over IPv4 without running the v4
 * hooks, so the v6 hooks judge it by the v4 rules. */
static __always_inline int sl_is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* The verdict for an IPv6 destination, v4-mapped ones by the v4 rules. */
static __always_inline int sl_verdict_addr6(__u32 sandbox_id, const __u32 addr_be[4], __u16 port,
					    __u8 proto_bit, __u64 *now_ns)
{
	if (sl_is_v4mapped(addr_be))
		return sl_verdict4(sandbox_id, addr_be[3], port, proto_bit, now_ns);
	return sl_verdict6(sandbox_id, addr_be, port, proto_bit, now_ns);
}

static __always_inline __u8 sl_proto_bit(__u32 protocol)
{
	if (protocol == IPPROTO_TCP)
		return SL_PROTO_TCP;
	if (protocol == IPPROTO_UDP)
		return SL_PROTO_UDP;
	return 0;
}

/* Whether sl_listener_ports marks @port_be (network order) for @protocol: 0 means that no
 * listener key of this port and protocol exists in any namespace, and no lookup is needed. */
static __always_inline int sl_lport_marked(__u16 port_be, __u32 protocol)
{
	__u16 port = bpf_ntohs(port_be);
	__u32 word = SL_LPORT_WORD(port, protocol);
	__u64 *bits;

	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 1;
	bits = bpf_map_lookup_elem(&sl_listener_ports, &word);
	return !bits || ((*bits >> (port & 63)) & 1);
}

/* Whether sl_listeners holds @port_be/@protocol under namespace cookie @netns, or under the
 * cookie every namespace shares (0). */
static __always_inline int sl_listener_key(__u16 port_be, __u32 protocol, __u64 netns)
{
	struct sl_listener_key k = { .port = port_be, .family = AF_INET, .proto = protocol };

	k.addr[0] = 127;
	k.addr[3] = 1;
	if (netns) {
		__builtin_memcpy(&k.addr[4], &netns, sizeof(netns));
		if (bpf_map_lookup_elem(&sl_listeners, &k))
			return 1;
		if (!sl_listeners_shared)
			return 0;
		__builtin_memset(&k.addr[4], 0, sizeof(netns));
	}
	return bpf_map_lookup_elem(&sl_listeners, &k) != NULL;
}

/*
 * Whether @port_be (network order) is the port of one of the daemon's @protocol listeners in
 * network namespace @netns (its cookie, bpf_get_netns_cookie()), whatever the address. A
 * port number is a namespace's own: sluiced registers each listener under its namespace's
 * cookie (in the key's address, after 127.0.0.1), so that a listener in a container leaves
 * the number free to every other namespace's sockets. A key of cookie 0 holds in every
 * namespace: an earlier sluiced's, or one written where the egress program cannot learn the
 * namespace (sl_skb_netns). Listener ports are never a sandbox's to connect to on a local
 * address, nor to bind, in the listener's protocol and namespace; the other protocol's port
 * of that number is any socket's (the kernel hands it out as an ephemeral port).
 * A macro, so that @netns (a helper call) is evaluated only for a port sl_listener_ports
 * marks: most connects and packets to loopback never need it. @port_be and @protocol are
 * evaluated twice: pass plain reads.
 */
#define sl_is_listener_port(port_be, protocol, netns) \
	(sl_lport_marked((port_be), (protocol)) && sl_listener_key((port_be), (protocol), (netns)))

/* Fixed one-second window per CPU: the deny path never waits and never takes a lock. */
static __always_inline int sl_event_allowed(__u32 sandbox_id, __u64 now_ns)
{
	struct sl_evlimit *l = bpf_map_lookup_elem(&sl_evlimit, &sandbox_id);

	if (!l)
		return 0;
	if (now_ns - l->window_ns >= 1000000000ULL) {
		l->window_ns = now_ns;
		l->count = 0;
	}
	if (l->count >= sl_event_limit)
		return 0;
	l->count++;
	return 1;
}

/*
 * The start of every event record (deny, audit, UNIX deny, SNI refusal): NULL, counted, when
 * the sandbox's rate is spent or the ring is full; otherwise a zeroed record of @size bytes (a
 * constant after inlining: the ring and the verifier want one) that begins with a struct
 * sl_event whose common fields are filled. @comm 0 leaves the comm empty, for program types
 * without bpf_get_current_comm() (sk_msg): a constant too, so that the call is compiled out.
 * The caller fills the rest and calls sl_event_submit().
 */
static __always_inline struct sl_event *sl_event_start(__u32 sandbox_id, __u64 cgid, __u8 kind,
						       __u8 family, __u8 verdict, __u8 socktype,
						       __u32 size, int comm, __u64 now_ns)
{
	struct sl_event *ev;

	if (!sl_event_allowed(sandbox_id, now_ns)) {
		sl_count(sandbox_id, SL_CTR_EV_LIMITED);
		return NULL;
	}
	ev = bpf_ringbuf_reserve(&sl_events, size, 0);
	if (!ev) {
		sl_count(sandbox_id, SL_CTR_EV_LOST);
		return NULL;
	}
	__builtin_memset(ev, 0, size);
	ev->ts_ns = now_ns;
	ev->cgroup_id = cgid;
	ev->sandbox_id = sandbox_id;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	if (comm)
		bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->family = family;
	ev->kind = kind;
	ev->verdict = verdict;
	ev->socktype = socktype;
	return ev;
}

static __always_inline void sl_event_submit(__u32 sandbox_id, void *ev)
{
	bpf_ringbuf_submit(ev, 0);
	sl_count(sandbox_id, SL_CTR_EV_SENT);
}

/* Emit a deny event for @sandbox_id if its rate allows. @addr is network order; @reason is
 * the SL_DROP_* of an SL_EV_EGRESS event, 0 otherwise. */
static __always_inline void sl_emit_deny_reason(__u32 sandbox_id, __u64 cgid, __u8 kind,
						__u8 family, const void *addr, __u32 addr_len,
						__u16 port, __u8 proto, __u8 socktype, __u8 reason,
						__u64 now_ns)
{
	struct sl_event *ev = sl_event_start(sandbox_id, cgid, kind, family, SL_VERDICT_DENY,
					     socktype, sizeof(*ev), 1, now_ns);

	if (!ev)
		return;
	if (addr_len == 4)
		__builtin_memcpy(ev->addr, addr, 4);
	else if (addr_len == 16)
		__builtin_memcpy(ev->addr, addr, 16);
	ev->port = port;
	ev->proto = proto;
	ev->reason = reason;
	sl_event_submit(sandbox_id, ev);
}

static __always_inline void sl_emit_deny(__u32 sandbox_id, __u64 cgid, __u8 kind, __u8 family,
					 const void *addr, __u32 addr_len, __u16 port, __u8 proto,
					 __u8 socktype, __u64 now_ns)
{
	sl_emit_deny_reason(sandbox_id, cgid, kind, family, addr, addr_len, port, proto, socktype,
			    0, now_ns);
}

#endif /* SLUICE_VERDICT_H */
