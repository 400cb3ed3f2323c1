/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one header both halves of sluice include: the layout of every map key, map value and
 * ring-buffer record the kernel programs share with sluiced. Fields are fixed-width, padding
 * is explicit, nothing is a pointer, bool or enum-typed. userspace/kernel/bpf_abi.c pins the
 * size and every field offset with a _Static_assert, so that a layout change (a reordering
 * too) fails the build; pinned maps of an older size are refused at load time by libbpf
 * (value size mismatch).
 */
#ifndef SLUICE_H
#define SLUICE_H

/* Verdicts, ordered by precedence: when several rules match one destination the highest wins
 * (an intercepted name sharing an address with a passthrough one is still inspected). */
#define SL_VERDICT_DENY 0
#define SL_VERDICT_ALLOW 1
#define SL_VERDICT_PROXY 2 /* rewritten to the sandbox's proxy listener */
#define SL_VERDICT_DNS 3 /* rewritten to the sandbox's DNS listener */
/* Events only, never a rule's: a call the rules deny, allowed because the sandbox is in audit
 * mode (SL_SB_AUDIT) and recorded in sl_audit. */
#define SL_VERDICT_AUDIT 4
/* Connected straight to the destination, and nothing passes until the kernel has read the
 * first TLS record and found its server name granted at this address and port (bpf/sni.h).
 * Numbered last so that the other values keep their meaning in pinned maps; its precedence
 * is between ALLOW and PROXY: SL_VERDICT_RANK. */
#define SL_VERDICT_SNI 5
/* The precedence of a verdict: when several rules match one destination the highest rank
 * wins. DENY < ALLOW < SNI < PROXY < DNS (AUDIT is never a rule's). */
#define SL_VERDICT_RANK(v) ((v) == SL_VERDICT_SNI ? 3 : 2 * (v))

/* Protocol bits of a rule. */
#define SL_PROTO_TCP 0x1
#define SL_PROTO_UDP 0x2
#define SL_PROTO_ANY (SL_PROTO_TCP | SL_PROTO_UDP)

/* Capacity defaults. sluiced sizes the maps at load (--max-sandboxes, --max-rules; the loader
 * sets max_entries of every map declared with these, by name: a new per-sandbox map must be
 * added to its table in userspace/kernel/bpf_loader.c). */
#define SL_MAX_SANDBOXES 16384 /* ids 1..16383; id 0 counts sockets of no known sandbox */
#define SL_MAX_PORT_RANGES 16 /* per prefix, after merging the prefixes that cover it */
#define SL_MAX_RULES 1048576 /* per family, all sandboxes */
#define SL_MAX_CGROUP_DEPTH 32 /* a sandbox cgroup or its children deeper than this: denied */
#define SL_RINGBUF_BYTES (256 * 1024)

/* struct sl_sandbox.flags */
#define SL_SB_DNS 0x1 /* dns_* fields are set: port 53 goes to the DNS listener */
#define SL_SB_PROXY 0x2 /* proxy_* fields are set: PROXY rules go to the proxy listener */
/* The listeners named are its worker's shared ones (sluiced --own-listeners): the daemon tells
 * the sandbox's traffic from the others' by what the egress program adds to it, the mark of a
 * DNS datagram (SL_SHARED_MARK) and the sl_accepts record of a TCP connection. */
#define SL_SB_SHARED 0x4
#define SL_SHARED_MARK 0x5c000000u /* | sandbox id (< 2^24): skb->mark, read with SO_RCVMARK */
#define SL_SHARED_MARK_MASK 0xff000000u
/* Audit mode: what the rules deny is allowed and recorded (sl_audit, sl_audit_unix) instead.
 * Only the rules' verdict changes: the daemon's listeners and sockets, socket(), setsockopt(),
 * bind() and the egress checks stay as in enforce mode. A flag of the entry that also holds
 * rules_id, so that a mode switch is the same one map update as a handler switch. */
#define SL_SB_AUDIT 0x80

/* sl_sandboxes: cgroup id (u64) -> sandbox. Written by sluiced when a sandbox is added. */
struct sl_sandbox {
	__u32 id; /* index into the per-sandbox arrays and the rule keys */
	__u32 flags; /* SL_SB_* */
	__u32 dns_ip4; /* network order */
	__u32 proxy_ip4; /* network order */
	__u8 dns_ip6[16];
	__u8 proxy_ip6[16];
	__u16 dns_port; /* network order */
	__u16 proxy_port; /* network order */
	/* The sandbox_id of the rule keys in force (0: id). sluiced writes a new rule set under
	 * the other bank (id | SL_RULES_BANK) and flips this one field: a sandbox switches from
	 * one layer to the next in a single map update, never seeing a mix of the two. */
	__u32 rules_id;
};
#define SL_RULES_BANK 0x80000000u

/* One port range of a rule. expires_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns), 0 = never:
 * expired ranges are ignored by the kernel even if sluiced is not running to remove them. */
struct sl_port_range {
	__u64 expires_ns;
	__u16 lo; /* host order, inclusive */
	__u16 hi; /* host order, inclusive */
	__u8 verdict; /* SL_VERDICT_* */
	__u8 protos; /* SL_PROTO_* bits */
	__u8 pad[2];
};

/* Rule value: every port range that applies to the key's prefix, including those of the
 * shorter prefixes covering it (sluiced merges them), so one lookup decides: in the address
 * hash (sl_hosts4/6) for a full-length key, else in the trie (sl_rules4/6). */
struct sl_rule {
	__u32 n; /* ranges in use, <= SL_MAX_PORT_RANGES */
	__u32 pad;
	struct sl_port_range r[SL_MAX_PORT_RANGES];
};

/* sl_rules4 / sl_rules6 LPM keys, and sl_hosts4 / sl_hosts6 hash keys (prefixlen 64 / 160).
 * prefixlen counts sandbox_id (always 32 bits) plus the address prefix. */
struct sl_key4 {
	__u32 prefixlen;
	__u32 sandbox_id;
	__u8 addr[4]; /* network order */
};

struct sl_key6 {
	__u32 prefixlen;
	__u32 sandbox_id;
	__u8 addr[16]; /* network order */
};

/*
 * sl_sockorig: socket local storage of every socket whose destination the kernel rewrote (to
 * the DNS or proxy listener). recvmsg restores the source of replies from it, getpeername the
 * peer, and the proxy reads it to learn where a connection was going. It lives and dies with
 * the socket: nothing to clean up, nothing to leak.
 */
struct sl_sockorig {
	__u8 orig_addr[16]; /* network order; IPv4 in the first 4 bytes (sockaddr_in form) */
	__u8 new_addr[16]; /* the listener, same form */
	__u16 orig_port; /* network order */
	__u16 new_port; /* network order */
	__u8 family; /* AF_INET, or AF_INET6 (also for v4-mapped, as the caller wrote it) */
	__u8 verdict; /* SL_VERDICT_DNS or SL_VERDICT_PROXY */
	__u8 flags; /* SL_SO_* */
	__u8 pad;
	__u32 sandbox_id;
	__u32 pid; /* tgid of the task that connected */
	__u8 comm[16];
};

/*
 * sl_proxied: proxied TCP connections as the proxy sees them on accept. One map per sandbox
 * (an inner hash of SL_PROXIED_PER_SANDBOX records, held by the outer map under the sandbox
 * id), so that a sandbox that opens connections nobody accepts fills only its own: its next
 * intercepted connect() fails with EPERM, other sandboxes never notice. sluiced creates the
 * inner map when it adds a sandbox (replacing any map a previous sandbox of the same id left)
 * and drops it with `sandbox rm`. A record is keyed by the client's (the sandbox socket's)
 * network namespace, local address and port, written by the sockops program when the
 * connection starts and taken (lookup-and-delete) by the proxy; removed by the kernel if the
 * client closes first, and by sluiced's sweep when nobody took it in SL_PROXIED_MAX_AGE_S.
 */
#define SL_PROXIED_PER_SANDBOX 4096
#define SL_PROXIED_MAX_AGE_S 10
struct sl_conn_key {
	__u64 netns_cookie; /* bpf_get_netns_cookie() / SO_NETNS_COOKIE of the listener */
	__u8 addr[16]; /* network order, IPv4 in the first 4 bytes */
	__u16 port; /* host order; 0 is no connection's (the connect hook's room probe) */
	__u8 family; /* AF_INET / AF_INET6 (v4-mapped sockets are AF_INET) */
	__u8 pad[5];
};

/*
 * sl_accepts: the sandbox of each TCP connection to a shared listener (SL_SB_SHARED), keyed by
 * the connection (the client's address and port and the listener's port: the listener's
 * address is loopback's, so no two live connections share a key, even when the kernel gives
 * two clients one port towards different listeners), written by the egress program as the SYN
 * leaves and taken by sluiced on accept. An LRU: what no accept took (the client gave up) ages
 * out; a record pushed out by a flood of SYNs fails its connection, which sluiced then refuses
 * as not redirected.
 */
#define SL_ACCEPTS_MAX 65536
#define SL_SO_SHARED 0x1 /* struct sl_sockorig.flags: redirected to a shared listener */

struct sl_accept_key {
	__u8 addr[16]; /* the client's, network order, IPv4 in the first 4 bytes */
	__u16 port; /* the client's, host order */
	__u16 listener_port; /* host order */
	__u8 family; /* AF_INET / AF_INET6 (v4-mapped clients are AF_INET) */
	__u8 pad[3];
};

struct sl_proxied_rec {
	struct sl_sockorig o;
	__u64 ts_ns; /* CLOCK_MONOTONIC when the connection started */
};

/*
 * sl_sockdst: socket local storage of every sandbox socket whose connect() or sendmsg() was
 * allowed: the destination decided there, in the form it takes on the wire (after a redirect
 * to a listener; v4-mapped as IPv4). The egress program lets a packet leave only towards it,
 * so that no later step of the kernel (a routing header, IP options) can send it elsewhere.
 * A TCP connect() the rules allow makes none (two allocations, most of the hook's cost): a
 * TCP socket's packets all go to its peer; the egress program judges its SYN against the
 * rules instead, and sluiced judges connections older than the sandbox when it adds it.
 * Cloned to accepted children (BPF_F_CLONE): a listener is marked SL_SD_INBOUND when it
 * answers its first SYN, and the connections it accepts inherit the mark.
 */
#define SL_SD_INBOUND 0x1 /* a TCP listener of the sandbox or a connection it accepted */
#define SL_SD_CONN_REDIR 0x2 /* conn_* is a listener of the daemon (DNS, proxy) */
#define SL_SD_MSG_REDIR 0x4 /* msg_* is a listener of the daemon (DNS) */
#define SL_SD_SNI 0x8 /* connected under SL_VERDICT_SNI: sl_sni_sk says whether it passed */

struct sl_sockdst {
	__u8 conn_addr[16]; /* connect(); network order, IPv4 in the first 4 bytes */
	__u8 msg_addr[16]; /* the last sendmsg() with an address, same form */
	__u16 conn_port; /* network order */
	__u16 msg_port; /* network order */
	__u8 conn_family; /* 0 (none), AF_INET or AF_INET6: the family of the packets */
	__u8 msg_family;
	__u8 flags; /* SL_SD_* */
	__u8 pad;
};

/* sl_listeners: every DNS and proxy listener of the daemon, so that a sandbox connecting to
 * one directly is denied like any address its policy does not name. Value: sandbox id. A port
 * is a listener's under its own protocol only (DNS: TCP and UDP; proxy: TCP): a sandbox's UDP
 * socket the kernel gave a proxy's port number squats nothing. And in its own network
 * namespace only: the key is 127.0.0.1 followed by the namespace's cookie (8 bytes, host
 * order; sl_is_listener_port()), the rest of the address zero. Cookie 0 holds in every
 * namespace. Keys of a sluiced before 8 December have cookie 0 and proto 0 (any protocol), and
 * ::1 twins: sl_bpf_open() copies them under both protocols. */
struct sl_listener_key {
	__u8 addr[16]; /* 127.0.0.1, the netns cookie, 4 zero bytes (::1 in keys of before) */
	__u16 port; /* network order */
	__u8 family; /* AF_INET (AF_INET6 in keys of before) */
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
};

/*
 * sl_listener_ports: the port numbers some sl_listeners key may hold, in any namespace, a bit
 * per port and protocol, so that a connect or packet to a local port no listener has (nearly
 * all of them) costs an array read rather than a hash lookup. Word SL_LPORT_WORD() of the
 * array, bit (port & 63). Only sluiced writes it, under one rule: a port's bit is set before the
 * first key of that port and protocol goes in, and cleared only after the last one is gone
 * (sl_bpf_set_listener()); at start it is made again from the keys there are, before any link
 * moves to the programs that read it.
 */
#define SL_LPORT_WORDS 2048 /* 65536 ports, TCP and UDP, 64 per word */
#define SL_LPORT_WORD(port, proto) (((proto) == IPPROTO_UDP ? 1024u : 0u) + ((port) >> 6))

/* Per-sandbox per-CPU counters (sl_counters, indexed by sandbox id). Exact: every verdict
 * is counted whether or not an event is emitted. */
#define SL_CTR_ALLOW_TCP 0
#define SL_CTR_ALLOW_UDP 1
#define SL_CTR_DENY_TCP 2
#define SL_CTR_DENY_UDP 3
#define SL_CTR_DENY_SOCKET 4 /* socket() refused: raw, SCTP, ICMP, ... */
#define SL_CTR_PROXY_TCP 5
#define SL_CTR_DNS_TCP 6
#define SL_CTR_DNS_UDP 7
#define SL_CTR_EV_SENT 8 /* deny events written to the ring buffer */
#define SL_CTR_EV_LIMITED 9 /* deny events suppressed by the per-sandbox rate limit */
#define SL_CTR_EV_LOST 10 /* deny events lost because the ring buffer was full */
#define SL_CTR_DENY_SOCKOPT 11 /* setsockopt() refused: routing header, IPv4 options */
#define SL_CTR_DROP_EGRESS 12 /* packets dropped by the egress program (SL_DROP_*) */
#define SL_CTR_DENY_BIND 13 /* bind() to a port of the daemon's listeners refused */
#define SL_CTR_ALLOW_UNIX 14 /* connect()/sendmsg() to a UNIX socket the policy names */
#define SL_CTR_DENY_UNIX 15 /* ... to any other UNIX socket */
#define SL_CTR_MAX 16

struct sl_counters {
	__u64 c[SL_CTR_MAX];
};

/* Per-sandbox per-CPU event rate limit window (sl_evlimit). */
struct sl_evlimit {
	__u64 window_ns;
	__u64 count;
};

/* struct sl_event.kind */
#define SL_EV_CONNECT 1
#define SL_EV_SENDMSG 2
#define SL_EV_SOCKET 3
#define SL_EV_SETSOCKOPT 4 /* proto holds the option's level, port its name */
#define SL_EV_EGRESS 5 /* a dropped packet: addr/port its wire destination, reason SL_DROP_* */
#define SL_EV_BIND 6
#define SL_EV_PROXIED_FULL 7 /* connect() to an intercepted address: sl_proxied quota reached */
#define SL_EV_SNI 8 /* a first TLS record refused by the kernel SNI check, reason SL_SNIR_* */

/* struct sl_event.reason of SL_EV_EGRESS */
#define SL_DROP_IPOPTS 1 /* IPv4 header with options (source routing, ...) */
#define SL_DROP_RTHDR 2 /* IPv6 routing header, or an extension chain too long to walk */
#define SL_DROP_DST 3 /* the wire destination is not the one connect()/sendmsg() decided */
#define SL_DROP_LISTENER 4 /* a daemon listener's port on a local address, not redirected */
#define SL_DROP_RULES 5 /* a socket with no decision whose destination the rules deny */
#define SL_DROP_PROTO 6 /* neither TCP nor UDP (no sandbox socket sends anything else) */
#define SL_DROP_SNI 7 /* payload of a socket whose TLS server name was not (yet) accepted */

/* Ring buffer record: one denied operation. */
struct sl_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u32 sandbox_id; /* 0: the socket's sandbox could not be determined */
	__u32 pid; /* tgid, in the initial pid namespace */
	__u8 comm[16];
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
	__u16 port; /* host order */
	__u8 family; /* AF_INET / AF_INET6 (AF_INET6 also for v4-mapped destinations) */
	__u8 proto; /* IPPROTO_* */
	__u8 kind; /* SL_EV_* */
	__u8 verdict; /* SL_VERDICT_* */
	__u8 socktype; /* SOCK_* of the socket */
	__u8 reason; /* SL_EV_EGRESS: SL_DROP_*; 0 otherwise */
};

/*
 * sl_splice_ends (bpf/splice.bpf.c): one end of a TLS passthrough connection that the proxy
 * spliced in the kernel, keyed by the socket's cookie (SO_COOKIE). The stream verdict program
 * sends every byte received on that socket to the egress of socket @peer and counts it, so
 * that sluiced knows when a half-close may follow the bytes (README, "Passthrough checked by
 * name"). Written by sluiced, counted by the kernel, never pinned.
 */
struct sl_splice_end {
	__u64 peer; /* cookie of the socket the bytes go out of */
	__u64 bytes; /* bytes redirected so far */
};

/*
 * sl_unix: the UNIX socket addresses a sandbox may connect() or sendmsg() to (egress.unix),
 * exact strings. Keyed by the rule bank (sl_sandbox.rules_id), like the address rules, so that
 * a handler switch flips them with the same one map update. sandbox_id 0 holds sluiced's own
 * sockets: never allowed, whatever a policy says. Value: 1.
 */
#define SL_UNIX_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */
#define SL_MAX_UNIX_RULES 16384 /* all sandboxes and banks together */
#define SL_MAX_UNIX_PER_LAYER 256 /* egress.unix entries of one policy or handler layer */
struct sl_unix_key {
	__u32 sandbox_id; /* a rules_id; 0: the daemon's own sockets */
	__u32 len; /* bytes of path in use, 1..SL_UNIX_PATH_MAX */
	/* A filesystem path (no NUL), or an abstract name: a 0 byte, then the name's bytes.
	 * Zero past len. */
	__u8 path[SL_UNIX_PATH_MAX];
};

/* Ring buffer record of a denied UNIX socket connect()/sendmsg(): the common record (family
 * AF_UNIX, no addr/port) followed by the address the sandbox named. */
struct sl_event_unix {
	struct sl_event ev;
	__u32 path_len; /* bytes of path in use (the sun_path as the kernel reads it) */
	__u8 path[SL_UNIX_PATH_MAX]; /* as in struct sl_unix_key */
};

/*
 * sl_audit: what a sandbox in audit mode did that its rules deny, one record per (sandbox,
 * destination, port, protocol), counted by the kernel on every call, so that nothing is lost to
 * the event rate limit however busy the sandbox is. Read by `sluice policy suggest`; cleared
 * when a sandbox is removed or a new one takes its id. A full map counts the calls it could not
 * record (sl_auditn.lost).
 */
#define SL_MAX_AUDIT 65536 /* records, all sandboxes */
struct sl_audit_key {
	__u32 sandbox_id; /* the sandbox's id (never a rule bank) */
	__u16 port; /* host order */
	__u8 family; /* AF_INET / AF_INET6 (v4-mapped destinations as AF_INET) */
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
};

struct sl_audit_val {
	__u64 count;
	__u64 first_ns; /* CLOCK_MONOTONIC */
	__u64 last_ns;
};

/* sl_audit_unix: the same for UNIX socket addresses; the key is a struct sl_unix_key whose
 * sandbox_id is the sandbox's id. */
#define SL_MAX_AUDIT_UNIX 4096

/* Per-sandbox per-CPU audit counters (sl_auditn, indexed by sandbox id). */
struct sl_audit_ctr {
	__u64 audited; /* calls allowed by audit mode (recorded or not) */
	__u64 lost; /* of those, not recorded: sl_audit or sl_audit_unix was full */
};

/* struct sl_event.reason of SL_EV_SNI */
#define SL_SNIR_NOT_HELLO 1 /* the first record is not a TLS handshake ClientHello */
#define SL_SNIR_TOO_BIG 2 /* a record longer than TLS allows (2^14 bytes) */
#define SL_SNIR_MALFORMED 3 /* the ClientHello does not parse */
#define SL_SNIR_NO_SNI 4 /* no server_name extension */
#define SL_SNIR_ECH 5 /* Encrypted Client Hello: the real name is hidden */
#define SL_SNIR_NAME 6 /* the name is not granted at this address and port */
#define SL_SNIR_EARLY 7 /* bytes were queued before the ClientHello (Fast Open, a 2nd thread) */

/* sl_sni_ctr (per CPU, indexed by sandbox id): what the kernel SNI check decided. */
#define SL_SNI_CTR_PASSED 0
#define SL_SNI_CTR_REFUSED 1
#define SL_SNI_CTR_NOMAP 2 /* the socket could not enter sl_sni_socks: it stays closed */
#define SL_SNI_CTR_MAX 4
struct sl_sni_ctr {
	__u64 c[SL_SNI_CTR_MAX];
};

/*
 * The kernel check of SNI-checked passthrough (bpf/sni.h, README "Passthrough checked by
 * name"). sl_sni_sk: socket local storage of a socket connected under SL_VERDICT_SNI, what the
 * check needs and where it stands.
 */
#define SL_SNI_PENDING 0 /* nothing may leave but the handshake until the ClientHello passes */
#define SL_SNI_PASSED 1 /* the first record was a ClientHello of a granted name */
#define SL_SNI_REFUSED 2 /* it was not: nothing will ever leave this socket */
struct sl_sni_sk {
	__u8 addr[16]; /* the destination, network order, IPv4 (also v4-mapped) in the first 4 */
	__u32 sandbox_id;
	__u16 port; /* host order */
	__u8 family; /* AF_INET / AF_INET6 of the packets */
	__u8 state; /* SL_SNI_* */
};

/*
 * sl_sni_names: the names a sandbox may present as TLS server name at an address, written by
 * sluiced from its resolved names (learned entries of verdict ALLOW or SNI on TCP): exactly
 * what px_resolved_at() asks in userspace. The name is lower-case without a trailing dot,
 * zero past its end. The value holds the name's port ranges at the address with their
 * expiry (CLOCK_MONOTONIC; the kernel ignores expired ones, sluiced deletes them).
 */
#define SL_SNI_NAME_MAX 256 /* a DNS name is at most 253 bytes in this form */
#define SL_SNI_RANGES 8
#define SL_MAX_SNI_NAMES 65536 /* all sandboxes together */
struct sl_sni_key {
	__u32 sandbox_id;
	__u8 family; /* AF_INET / AF_INET6 */
	__u8 pad[3];
	__u8 addr[16]; /* network order, IPv4 in the first 4 bytes */
	__u8 name[SL_SNI_NAME_MAX];
};

struct sl_sni_range {
	__u64 expires_ns; /* 0: never */
	__u16 lo, hi; /* host order, inclusive */
	__u32 pad;
};

struct sl_sni_val {
	__u32 n; /* ranges in use */
	__u32 pad;
	struct sl_sni_range r[SL_SNI_RANGES];
};

#endif /* SLUICE_H */
