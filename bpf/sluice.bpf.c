// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sluice's cgroup programs. Attached with bpf_link to every sandbox cgroup (and so run for
 * its child cgroups too), they decide each connect(), each unconnected sendmsg() and each
 * socket() of the sandbox in the kernel: deny by default, pass through what the sandbox's
 * rules allow, send every DNS query (port 53, any address) to the sandbox's DNS listener. A
 * denied call fails with EPERM; userspace is never woken for it (it may later read a
 * rate-limited event).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "verdict.h"
#include "audit.h"
#include "sni.h"

#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define AF_UNIX 1
#define ENOMEM 12
#define E2BIG 7

/* kfunc of kernels >= 6.2. Weak: the object still loads where it is missing; the programs that
 * call it (the UNIX socket hooks, kernels >= 6.7) are then not loaded (bpf_loader.c). */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void sl_count_verdict(__u32 sandbox_id, int verdict, __u8 proto_bit)
{
	int tcp = proto_bit == SL_PROTO_TCP;

	if (verdict == SL_VERDICT_ALLOW || verdict == SL_VERDICT_SNI)
		sl_count(sandbox_id, tcp ? SL_CTR_ALLOW_TCP : SL_CTR_ALLOW_UDP);
	else if (verdict == SL_VERDICT_DNS)
		sl_count(sandbox_id, tcp ? SL_CTR_DNS_TCP : SL_CTR_DNS_UDP);
	else if (verdict == SL_VERDICT_PROXY)
		sl_count(sandbox_id, SL_CTR_PROXY_TCP);
	else
		sl_count(sandbox_id, tcp ? SL_CTR_DENY_TCP : SL_CTR_DENY_UDP);
}

/*
 * Remembers where @ctx was going in the socket's storage, then points it at @new_addr/@new_port
 * (16 bytes, network order; IPv4 in the first 4). Returns 0 if the record could not be made:
 * the caller denies rather than redirect what it could not later restore.
 */
static __always_inline int sl_redirect(struct bpf_sock_addr *ctx, __u8 family, const __u32 orig[4],
				       const __u32 new_addr[4], __u16 new_port, __u8 verdict,
				       const struct sl_sandbox *sb)
{
	struct sl_sockorig *o;

	o = bpf_sk_storage_get(&sl_sockorig, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	__builtin_memcpy(o->orig_addr, orig, 16);
	__builtin_memcpy(o->new_addr, new_addr, 16);
	o->orig_port = (__u16)ctx->user_port;
	o->new_port = new_port;
	o->family = family;
	o->verdict = verdict;
	o->flags = sb->flags & SL_SB_SHARED ? SL_SO_SHARED : 0;
	o->sandbox_id = sb->id;
	o->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	if (family == AF_INET) {
		ctx->user_ip4 = new_addr[0];
	} else {
		ctx->user_ip6[0] = new_addr[0];
		ctx->user_ip6[1] = new_addr[1];
		ctx->user_ip6[2] = new_addr[2];
		ctx->user_ip6[3] = new_addr[3];
	}
	ctx->user_port = new_port;
	return 1;
}

/* Ends a judged call: counts it, emits a deny event, returns the hook's answer (1 lets the
 * call go on, 0 fails it with EPERM). */
static __always_inline int sl_finish(struct bpf_sock_addr *ctx, __u32 sandbox_id, __u64 cgid,
				     int verdict, __u8 proto_bit, __u8 kind, __u8 family,
				     const __u32 addr[4], __u16 port, __u64 *now_ns)
{
	sl_count_verdict(sandbox_id, verdict, proto_bit);
	if (verdict != SL_VERDICT_DENY)
		return 1;
	sl_emit_deny(sandbox_id, cgid, kind, family, addr, family == AF_INET ? 4 : 16, port,
		     ctx->protocol, ctx->type, sl_now(now_ns));
	return 0;
}

/* The address of a listener (@ip4 / @ip6, network order) in the form a destination of
 * @family takes: IPv4, IPv6, or v4-mapped IPv6 for an IPv6 socket talking IPv4. */
static __always_inline void sl_listener_addr(__u32 out[4], __u8 family, int mapped, __u32 ip4,
					     const __u8 ip6[16])
{
	if (family == AF_INET) {
		out[0] = ip4;
		out[1] = out[2] = out[3] = 0;
	} else if (mapped) {
		out[0] = out[1] = 0;
		out[2] = bpf_htonl(0x0000ffff);
		out[3] = ip4;
	} else {
		__builtin_memcpy(out, ip6, 16);
	}
}

/* 127.0.0.0/8, ::1, and the unspecified addresses, in IPv4, IPv6 or v4-mapped form: the
 * destinations Linux delivers to a loopback listener. */
static __always_inline int sl_is_loopback_form(__u8 family, int mapped, const __u32 addr[4])
{
	__u32 a4 = family == AF_INET ? addr[0] : addr[3];

	if (family == AF_INET || mapped)
		return (a4 & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) || !a4;
	return !addr[0] && !addr[1] && !addr[2] && (!addr[3] || addr[3] == bpf_htonl(1));
}

/*
 * Records in the socket's sl_sockdst where its packets may go after this connect() (@kind
 * SL_EV_CONNECT, also TCP Fast Open) or sendmsg(): the destination as the hook leaves it in
 * @ctx, in wire form (v4-mapped as IPv4). @redirected: it is a listener of the daemon.
 * Returns 0 if the record could not be made.
 */
static __always_inline int sl_record_dst(struct bpf_sock_addr *ctx, __u8 kind, __u8 family,
					 __u8 verdict, int redirected)
{
	struct sl_sockdst *d;
	__u32 a[4] = {};
	__u8 wire = family;

	/* A TCP socket connected where the rules allow needs no record: its packets cannot go
	 * anywhere but the peer this hook passed, the egress program judges its SYN against the
	 * rules, and connections older than the sandbox are judged when it is added
	 * (sb_install). Socket storage costs two allocations per socket, most of what the hook
	 * added to connect(). A record made earlier (a redirect, a checked name, a listener's
	 * mark) is kept up to date. */
	if (kind == SL_EV_CONNECT && verdict == SL_VERDICT_ALLOW && ctx->protocol == IPPROTO_TCP) {
		d = bpf_sk_storage_get(&sl_sockdst, ctx->sk, 0, 0);
		if (!d)
			return 1;
	} else {
		d = bpf_sk_storage_get(&sl_sockdst, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!d)
			return 0;
	}
	if (family == AF_INET) {
		a[0] = ctx->user_ip4;
	} else {
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		if (sl_is_v4mapped(a)) {
			a[0] = a[3];
			a[1] = a[2] = a[3] = 0;
			wire = AF_INET;
		}
	}
	if (kind == SL_EV_CONNECT) {
		__builtin_memcpy(d->conn_addr, a, 16);
		d->conn_port = (__u16)ctx->user_port;
		d->conn_family = wire;
		/* A socket that connects is no listener (any more): no inbound mark. */
		d->flags = (d->flags & SL_SD_MSG_REDIR) | (redirected ? SL_SD_CONN_REDIR : 0);
	} else {
		__builtin_memcpy(d->msg_addr, a, 16);
		d->msg_port = (__u16)ctx->user_port;
		d->msg_family = wire;
		d->flags = (d->flags & SL_SD_CONN_REDIR) | (redirected ? SL_SD_MSG_REDIR : 0);
	}
	return 1;
}

/*
 * A connect() of verdict SL_VERDICT_SNI (after sl_record_dst): the socket is marked PENDING
 * for the kernel SNI check (bpf/sni.h), with its destination in wire form. Returns 0 if it
 * could not be (the caller denies): an unmarked socket would not be checked.
 */
static __always_inline int sl_sni_start(struct bpf_sock_addr *ctx, __u32 sandbox_id, __u8 family,
					const __u32 addr[4], int mapped)
{
	struct sl_sockdst *d;
	__u32 a[4] = {};
	__u8 wire = family;

	if (family == AF_INET || mapped) {
		a[0] = family == AF_INET ? addr[0] : addr[3];
		wire = AF_INET;
	} else {
		a[0] = addr[0];
		a[1] = addr[1];
		a[2] = addr[2];
		a[3] = addr[3];
	}
	if (!sl_sni_mark(ctx, sandbox_id, wire, a, bpf_ntohs(ctx->user_port)))
		return 0;
	d = bpf_sk_storage_get(&sl_sockdst, ctx->sk, 0, 0);
	if (!d)
		return 0;
	d->flags |= SL_SD_SNI;
	return 1;
}

static __always_inline void sl_count_pxfull(__u32 sandbox_id)
{
	__u64 *n = bpf_map_lookup_elem(&sl_pxfull, &sandbox_id);

	if (n)
		(*n)++;
}

/*
 * Whether sandbox @sandbox_id's sl_proxied map can take one more record: a probe record (port
 * 0, which no connection has) is inserted and removed. A full map refuses it (-E2BIG); a probe
 * of another CPU in place (-EEXIST) means there was room a moment ago. No map: no room.
 */
static __always_inline int sl_proxied_room(__u32 sandbox_id)
{
	struct sl_proxied_rec rec = {};
	struct sl_conn_key probe = {};
	void *inner;
	long r;

	inner = bpf_map_lookup_elem(&sl_proxied, &sandbox_id);
	if (!inner)
		return 0;
	r = bpf_map_update_elem(inner, &probe, &rec, BPF_NOEXIST);
	if (r == -E2BIG || r == -ENOMEM)
		return 0;
	if (!r)
		bpf_map_delete_elem(inner, &probe);
	return 1;
}

/*
 * The verdict of one connect() or sendmsg() to @addr (network order; IPv4 in addr[0]) and its
 * consequences: DNS queries and intercepted connections are rewritten to the sandbox's
 * listeners, everything not allowed fails with EPERM. Returns the hook's answer.
 */
static __always_inline int sl_judge(struct bpf_sock_addr *ctx, __u8 kind, __u8 family,
				    const __u32 addr[4], int mapped)
{
	__u8 proto_bit = sl_proto_bit(ctx->protocol);
	__u16 port = bpf_ntohs(ctx->user_port);
	int verdict = SL_VERDICT_DENY, audited = 0;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 now_ns = 0; /* sl_now() */
	__u32 to[4];
	__u64 cgid;

	sb = sl_current_sandbox(&cgid);
	if (!sb || !proto_bit)
		goto out;
	sandbox_id = sb->id;
	if (port == 53 && (sb->flags & SL_SB_DNS)) {
		/* Every DNS query goes to sluice, whatever resolver the sandbox names. */
		sl_listener_addr(to, family, mapped, sb->dns_ip4, sb->dns_ip6);
		if (sl_redirect(ctx, family, addr, to, sb->dns_port, SL_VERDICT_DNS, sb))
			verdict = SL_VERDICT_DNS;
		goto out;
	}
	{
		__u32 rules_id = sb->rules_id ? sb->rules_id : sandbox_id;

		if (family == AF_INET)
			verdict = sl_verdict4(rules_id, addr[0], port, proto_bit, &now_ns);
		else
			verdict = sl_verdict_addr6(rules_id, addr, port, proto_bit, &now_ns);
	}
	/* The daemon's own sockets are never a destination. They live on loopback, which Linux
	 * also reaches through 0.0.0.0 and :: (ip_route_output_key_hash_rcu, tcp_v6_connect,
	 * ip6_datagram_connect) and their v4-mapped forms: a listener's port on any of these is
	 * refused, whatever the rules say. The host's other addresses leave through lo too; the
	 * egress program refuses a listener's port there. */
	if (verdict != SL_VERDICT_DENY && sl_is_loopback_form(family, mapped, addr) &&
	    sl_is_listener_port((__u16)ctx->user_port, ctx->protocol, bpf_get_netns_cookie(ctx)))
		verdict = SL_VERDICT_DENY;
	else if (verdict == SL_VERDICT_DENY && sl_audit_mode(sb) &&
		 !(sl_is_loopback_form(family, mapped, addr) &&
		   sl_is_listener_port((__u16)ctx->user_port, ctx->protocol,
				       bpf_get_netns_cookie(ctx)))) {
		/* Audit mode: what the rules deny passes (and is recorded below); what is
		 * refused whatever the rules say, above and after, stays refused. */
		verdict = SL_VERDICT_ALLOW;
		audited = 1;
	}
	if (verdict == SL_VERDICT_PROXY) {
		/* Only TCP is intercepted; without a proxy listener there is nowhere to go. */
		sl_listener_addr(to, family, mapped, sb->proxy_ip4, sb->proxy_ip6);
		if (proto_bit != SL_PROTO_TCP || !(sb->flags & SL_SB_PROXY)) {
			verdict = SL_VERDICT_DENY;
		} else if (!sl_proxied_room(sandbox_id)) {
			/* Its record could not be published: refuse now rather than hand the
			 * proxy a connection it must close. This sandbox's own doing. */
			sl_count_pxfull(sandbox_id);
			verdict = SL_VERDICT_DENY;
			kind = SL_EV_PROXIED_FULL;
		} else if (!sl_redirect(ctx, family, addr, to, sb->proxy_port, SL_VERDICT_PROXY,
					sb)) {
			verdict = SL_VERDICT_DENY;
		}
	}
out:
	/* What leaves must be what was decided: without its record the egress program would
	 * drop the socket's packets, so a call whose record cannot be made fails now. */
	if (verdict != SL_VERDICT_DENY &&
	    !sl_record_dst(ctx, kind, family, verdict,
			   verdict == SL_VERDICT_DNS || verdict == SL_VERDICT_PROXY))
		verdict = SL_VERDICT_DENY;
	/* Checked passthrough: TCP connect() only (a sendmsg() is UDP, which no SNI rule
	 * grants); the socket connects straight to its destination, and nothing but the
	 * handshake leaves until its ClientHello passed the kernel check. */
	if (verdict == SL_VERDICT_SNI && (kind != SL_EV_CONNECT || proto_bit != SL_PROTO_TCP ||
					  !sl_sni_start(ctx, sandbox_id, family, addr, mapped)))
		verdict = SL_VERDICT_DENY;
	if (audited && verdict != SL_VERDICT_DENY)
		sl_audit_note(sandbox_id, cgid, kind, family, addr, mapped, port, ctx->protocol,
			      ctx->type, sl_now(&now_ns));
	return sl_finish(ctx, sandbox_id, cgid, verdict, proto_bit, kind, family, addr, port,
			 &now_ns);
}

static __always_inline int sl_judge4(struct bpf_sock_addr *ctx, __u8 kind)
{
	__u32 addr[4] = { ctx->user_ip4, 0, 0, 0 };

	return sl_judge(ctx, kind, AF_INET, addr, 0);
}

static __always_inline int sl_judge6(struct bpf_sock_addr *ctx, __u8 kind)
{
	__u32 addr[4];

	/* ctx->user_ip6 allows only 4-byte loads. */
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	return sl_judge(ctx, kind, AF_INET6, addr, sl_is_v4mapped(addr));
}

/*
 * The reverse of a redirect, for what the sandbox reads back: the source of a reply
 * (recvmsg) or the peer of a connected socket (getpeername) is the listener; report the
 * destination the sandbox chose instead, so resolvers accept the answer and the application
 * sees whom it talks to. Always returns 1 (these hooks cannot fail a call).
 */
static __always_inline int sl_restore(struct bpf_sock_addr *ctx, __u8 family)
{
	struct sl_sockorig *o = bpf_sk_storage_get(&sl_sockorig, ctx->sk, 0, 0);
	__u32 a[4], want[4];

	if (!o || (__u16)ctx->user_port != o->new_port)
		return 1;
	__builtin_memcpy(want, o->new_addr, 16);
	__builtin_memcpy(a, o->orig_addr, 16);
	if (family == AF_INET6 && o->family == AF_INET) {
		/* An IPv6 socket's datagram to a v4-mapped address runs the sendmsg4 hook
		 * (udpv6_sendmsg hands it to udp_sendmsg), but its reply comes back through
		 * recvmsg6, in v4-mapped form. */
		want[3] = want[0];
		want[0] = want[1] = 0;
		want[2] = bpf_htonl(0x0000ffff);
		a[3] = a[0];
		a[0] = a[1] = 0;
		a[2] = bpf_htonl(0x0000ffff);
	} else if (o->family != family) {
		return 1;
	}
	if (family == AF_INET) {
		if (ctx->user_ip4 != want[0])
			return 1;
		ctx->user_ip4 = a[0];
	} else {
		if (ctx->user_ip6[0] != want[0] || ctx->user_ip6[1] != want[1] ||
		    ctx->user_ip6[2] != want[2] || ctx->user_ip6[3] != want[3])
			return 1;
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
	}
	ctx->user_port = o->orig_port;
	return 1;
}

SEC("cgroup/recvmsg4")
int sl_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sl_restore(ctx, AF_INET);
}

SEC("cgroup/recvmsg6")
int sl_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sl_restore(ctx, AF_INET6);
}

SEC("cgroup/getpeername4")
int sl_getpeername4(struct bpf_sock_addr *ctx)
{
	return sl_restore(ctx, AF_INET);
}

SEC("cgroup/getpeername6")
int sl_getpeername6(struct bpf_sock_addr *ctx)
{
	return sl_restore(ctx, AF_INET6);
}

SEC("cgroup/connect4")
int sl_connect4(struct bpf_sock_addr *ctx)
{
	return sl_judge4(ctx, SL_EV_CONNECT);
}

SEC("cgroup/connect6")
int sl_connect6(struct bpf_sock_addr *ctx)
{
	return sl_judge6(ctx, SL_EV_CONNECT);
}

/* Unconnected UDP sendto()/sendmsg() with a destination. TCP Fast Open (sendto with
 * MSG_FASTOPEN) runs the connect hooks instead, through __inet_stream_connect(). */
SEC("cgroup/sendmsg4")
int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sl_judge4(ctx, SL_EV_SENDMSG);
}

SEC("cgroup/sendmsg6")
int sl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sl_judge6(ctx, SL_EV_SENDMSG);
}

/*
 * The address of a UNIX socket connect()/sendmsg() as the kernel reads it, into @k->path and
 * @k->len: a filesystem path up to its first NUL (unix_mkname_bsd() terminates it there), or an
 * abstract name (a 0 byte, then every byte up to the address length). Returns 0, or -1 when it
 * cannot be read (the caller denies).
 */
static __always_inline int sl_unix_addr(struct bpf_sock_addr *ctx, struct sl_unix_key *k)
{
	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	__u32 alen = sa->uaddrlen, n, i;
	__u64 uaddr = (__u64)sa->uaddr;

	/* unix_validate_addr() ran before the hook: 2 < alen <= sizeof(struct sockaddr_un). An
	 * unnamed address never reaches it (EINVAL). */
	if (alen <= 2 || alen > 2 + SL_UNIX_PATH_MAX)
		return -1;
	n = alen - 2;
	/* The kernel holds the address in a struct sockaddr_storage (connect, sendto, sendmsg and
	 * io_uring all copy it there), so all of sun_path can be read; what lies past the
	 * address length is zeroed below. */
	if (bpf_probe_read_kernel(k->path, sizeof(k->path), (const void *)(uaddr + 2)))
		return -1;
	if (k->path[0]) {
		for (i = 0; i < SL_UNIX_PATH_MAX; i++)
			if (i >= n || !k->path[i])
				break;
		n = i;
	}
	for (i = 0; i < SL_UNIX_PATH_MAX; i++)
		if (i >= n)
			k->path[i] = 0;
	k->len = n;
	return 0;
}

/* A deny event for a UNIX socket address, rate-limited like every deny event. */
static __always_inline void sl_emit_deny_unix(__u32 sandbox_id, __u64 cgid, __u8 kind,
					      const struct sl_unix_key *k, __u8 socktype,
					      __u64 now_ns)
{
	struct sl_event_unix *ev = (struct sl_event_unix *)sl_event_start(
		sandbox_id, cgid, kind, AF_UNIX, SL_VERDICT_DENY, socktype, sizeof(*ev), 1, now_ns);

	if (!ev)
		return;
	ev->path_len = k->len;
	__builtin_memcpy(ev->path, k->path, SL_UNIX_PATH_MAX);
	sl_event_submit(sandbox_id, ev);
}

/*
 * connect() and sendmsg() of a UNIX socket: allowed only to an address the sandbox's rules in
 * force name exactly (egress.unix), and never to one of sluiced's own sockets. Everything
 * else, relative paths, symlinks and other spellings of a listed path included, is EPERM:
 * the kernel resolves the path after this hook, so only the exact string is judged.
 */
static __always_inline int sl_judge_unix(struct bpf_sock_addr *ctx, __u8 kind)
{
	struct sl_unix_key k = {};
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	int allow = 0;
	__u64 cgid;

	sb = sl_current_sandbox(&cgid);
	if (sb && !sl_unix_addr(ctx, &k)) {
		sandbox_id = sb->id;
		k.sandbox_id = sb->rules_id ? sb->rules_id : sb->id;
		if (bpf_map_lookup_elem(&sl_unix, &k)) {
			k.sandbox_id = 0;
			allow = !bpf_map_lookup_elem(&sl_unix, &k);
		} else if (sl_audit_mode(sb)) {
			/* Audit mode: any address but the daemon's own sockets. */
			k.sandbox_id = 0;
			if (!bpf_map_lookup_elem(&sl_unix, &k)) {
				k.sandbox_id = sandbox_id;
				sl_audit_count(&sl_audit_unix, &k, sandbox_id, bpf_ktime_get_ns());
				allow = 1;
			}
		}
	}
	sl_count(sandbox_id, allow ? SL_CTR_ALLOW_UNIX : SL_CTR_DENY_UNIX);
	if (!allow)
		sl_emit_deny_unix(sandbox_id, cgid, kind, &k, ctx->type, bpf_ktime_get_ns());
	return allow;
}

/* Section names of kernels >= 6.7 that libbpf before 1.3 does not know: bpf_loader.c sets
 * the program type and attach type itself. */
SEC("cgroup/connect_unix")
int sl_connect_unix(struct bpf_sock_addr *ctx)
{
	return sl_judge_unix(ctx, SL_EV_CONNECT);
}

SEC("cgroup/sendmsg_unix")
int sl_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return sl_judge_unix(ctx, SL_EV_SENDMSG);
}

/*
 * socket(): only TCP and UDP sockets exist inside a sandbox. Raw sockets, SCTP, ICMP
 * ("ping") sockets, UDP-Lite and MPTCP are refused here because the sock_addr hooks either
 * do not see their traffic or were never audited for it. Runs for AF_INET and AF_INET6 only
 * (inet_create/inet6_create); kernel-internal sockets are not judged.
 */
SEC("cgroup/sock_create")
int sl_sock_create(struct bpf_sock *ctx)
{
	__u32 family = ctx->family, type = ctx->type, protocol = ctx->protocol;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 cgid;

	/* A TCP or UDP socket is judged where it sends: connect() and sendmsg() refuse a task
	 * whose sandbox is not found. No lookup here for the common socket. */
	if ((family == AF_INET || family == AF_INET6) &&
	    ((type == SOCK_STREAM && protocol == IPPROTO_TCP) ||
	     (type == SOCK_DGRAM && protocol == IPPROTO_UDP)))
		return 1;
	sb = sl_current_sandbox(&cgid);
	if (sb)
		sandbox_id = sb->id;
	sl_count(sandbox_id, SL_CTR_DENY_SOCKET);
	sl_emit_deny(sandbox_id, cgid, SL_EV_SOCKET, family, NULL, 0, 0, protocol, type,
		     bpf_ktime_get_ns());
	return 0;
}

/*
 * Proxied connections, told to the proxy. When a redirected TCP socket sends its SYN its local
 * port is known: its record is published in its sandbox's own sl_proxied map under (network
 * namespace, local address, local port), the peer the proxy sees on accept. The proxy takes the
 * entry; if the client closes before that, the state callback removes it, and sluiced sweeps
 * what neither took. A full map (the connect hook's probe raced) is counted; the proxy then
 * closes that connection.
 */
SEC("sockops")
int sl_sockops(struct bpf_sock_ops *skops)
{
	struct sl_conn_key key = {};
	struct sl_proxied_rec rec;
	struct sl_sockorig *o;
	struct bpf_sock *sk;
	void *inner;
	__u32 a[4];

	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		sl_sni_established(skops);
		return 1;
	}
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB && skops->op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (skops->op == BPF_SOCK_OPS_STATE_CB && skops->args[1] != BPF_TCP_CLOSE)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&sl_sockorig, sk, 0, 0);
	if (!o || o->verdict != SL_VERDICT_PROXY)
		return 1;
	/* Only the socket's own sandbox's map: a sandbox can neither fill nor empty another's. */
	inner = bpf_map_lookup_elem(&sl_proxied, &o->sandbox_id);
	if (!inner)
		return 1;
	a[0] = skops->local_ip6[0];
	a[1] = skops->local_ip6[1];
	a[2] = skops->local_ip6[2];
	a[3] = skops->local_ip6[3];
	if (skops->family == AF_INET) {
		key.family = AF_INET;
		a[0] = skops->local_ip4;
		__builtin_memcpy(key.addr, a, 4);
	} else if (sl_is_v4mapped(a)) {
		key.family = AF_INET; /* the proxy accepts it on its IPv4 listener */
		__builtin_memcpy(key.addr, &a[3], 4);
	} else {
		key.family = AF_INET6;
		__builtin_memcpy(key.addr, a, 16);
	}
	key.port = (__u16)skops->local_port;
	key.netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		bpf_map_delete_elem(inner, &key);
		return 1;
	}
	__builtin_memcpy(&rec.o, o, sizeof(rec.o));
	rec.ts_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(inner, &key, &rec, BPF_ANY)) {
		sl_count_pxfull(o->sandbox_id);
		return 1;
	}
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}

/* Socket options that change where a packet goes after the connect/sendmsg hooks judged its
 * destination (include/uapi/linux/in.h, in6.h). */
#define SOL_IP 0
#define SOL_IPV6 41
#define IP_OPTIONS 4
#define IPV6_2292RTHDR 5
#define IPV6_2292PKTOPTIONS 6
#define IPV6_RTHDR 57

/*
 * setsockopt(): a routing header (IPV6_RTHDR; IPV6_2292RTHDR; IPV6_2292PKTOPTIONS, whose
 * control messages can carry one) or IPv4 options (IP_OPTIONS: source routing) make the
 * kernel send a socket's packets to an address the hooks never judged (fl6_update_dst after
 * the sendmsg6/connect6 hook; ipc.opt->opt.faddr in udp_sendmsg). Setting one fails with
 * EPERM; clearing one (an empty value) is allowed. optval is never read: the decision needs
 * optlen only. Every other option goes to the kernel untouched: optlen 0 tells it to use the
 * caller's buffer, which is also what the hook requires of options longer than a page
 * (Documentation/bpf/prog_cgroup_sockopt.rst).
 */
SEC("cgroup/setsockopt")
int sl_setsockopt(struct bpf_sockopt *ctx)
{
	int level = ctx->level, optname = ctx->optname;
	struct bpf_sock *sk = ctx->sk;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 cgid;

	if (ctx->optlen <= 0 ||
	    !((level == SOL_IPV6 && (optname == IPV6_RTHDR || optname == IPV6_2292RTHDR ||
				     optname == IPV6_2292PKTOPTIONS)) ||
	      (level == SOL_IP && optname == IP_OPTIONS))) {
		ctx->optlen = 0;
		return 1;
	}
	/* The option is refused whoever sets it; the sandbox is looked up for the counters. */
	sb = sl_current_sandbox(&cgid);
	if (sb)
		sandbox_id = sb->id;
	sl_count(sandbox_id, SL_CTR_DENY_SOCKOPT);
	sl_emit_deny(sandbox_id, cgid, SL_EV_SETSOCKOPT, sk ? sk->family : 0, NULL, 0,
		     (__u16)optname, (__u8)level, sk ? sk->type : 0, bpf_ktime_get_ns());
	return 0;
}

/* Counts and reports a refused bind() of a listener's port. */
static __always_inline int sl_deny_bind(__u8 family, const __u32 addr[4], __u16 port_be,
					__u32 protocol, __u32 type)
{
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 cgid;

	sb = sl_current_sandbox(&cgid);
	if (sb)
		sandbox_id = sb->id;
	sl_count(sandbox_id, SL_CTR_DENY_BIND);
	sl_emit_deny(sandbox_id, cgid, SL_EV_BIND, family, addr, family == AF_INET ? 4 : 16,
		     bpf_ntohs(port_be), protocol, type, bpf_ktime_get_ns());
	return 0;
}

/*
 * bind(): the daemon's listener ports are not a sandbox's to bind, on any address, in the
 * listener's protocol. The kernel keeps redirecting to them while sluiced is away (restart,
 * crash); a sandbox holding one then would receive other sandboxes' queries and connections.
 * The maps and links stay pinned while sluiced is stopped, so this holds then too.
 */
SEC("cgroup/bind4")
int sl_bind4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4] = { ctx->user_ip4, 0, 0, 0 };

	if (!sl_is_listener_port((__u16)ctx->user_port, ctx->protocol, bpf_get_netns_cookie(ctx)))
		return 1;
	return sl_deny_bind(AF_INET, addr, (__u16)ctx->user_port, ctx->protocol, ctx->type);
}

SEC("cgroup/bind6")
int sl_bind6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];

	if (!sl_is_listener_port((__u16)ctx->user_port, ctx->protocol, bpf_get_netns_cookie(ctx)))
		return 1;
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	return sl_deny_bind(AF_INET6, addr, (__u16)ctx->user_port, ctx->protocol, ctx->type);
}

/* After bind(): port 0 lets the kernel choose, and while sluiced is away its ports are free
 * to be chosen. The bind is undone with EPERM (__inet_bind, __inet6_bind). */
static __always_inline int sl_post_bind(struct bpf_sock *sk, __u8 family)
{
	__u16 port_be = bpf_htons((__u16)sk->src_port);
	__u32 addr[4] = {};

	if (!sl_is_listener_port(port_be, sk->protocol, bpf_get_netns_cookie(sk)))
		return 1;
	if (family == AF_INET) {
		addr[0] = sk->src_ip4;
	} else {
		addr[0] = sk->src_ip6[0];
		addr[1] = sk->src_ip6[1];
		addr[2] = sk->src_ip6[2];
		addr[3] = sk->src_ip6[3];
	}
	return sl_deny_bind(family, addr, port_be, sk->protocol, sk->type);
}

SEC("cgroup/post_bind4")
int sl_post_bind4(struct bpf_sock *sk)
{
	return sl_post_bind(sk, AF_INET);
}

SEC("cgroup/post_bind6")
int sl_post_bind6(struct bpf_sock *sk)
{
	return sl_post_bind(sk, AF_INET6);
}

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define NEXTHDR_HOP 0 /* IPv6 extension headers (include/net/ipv6.h) */
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135
#define LOOPBACK_IFINDEX 1 /* lo in every network namespace (net/core/dev.c) */
#define SL_MAX_EXTHDRS 8

/* What the egress program reads of a packet. */
struct sl_pkt {
	__u32 daddr[4]; /* network order, IPv4 in daddr[0] */
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u8 family;
	__u8 proto;
	__u16 l4off; /* the transport header's offset */
};

/*
 * Reads the network header of @skb (egress: skb->data is the network header, and the packet
 * is whole: fragmentation comes later, in __ip_finish_output / ip6_fragment). Returns 0 or
 * the SL_DROP_* reason to drop it for: IPv4 options, an IPv6 routing header anywhere in the
 * extension chain, a chain longer than we walk, or a transport we do not judge.
 */
/* The headers of the common packet, read in place by sl_parse_pkt(). */
struct sl_hdr4 {
	struct iphdr ip;
	__u16 ports[2];
};

struct sl_hdr6 {
	struct ipv6hdr ip6;
	__u16 ports[2];
};

/*
 * The common packet read in place, without a helper call: an IPv4 header without options or an
 * IPv6 header without extension headers, then TCP or UDP, all in the linear part of @skb.
 * Returns 1 if @p is filled (what the full parse below would find), 0 to take the full parse.
 */
static __always_inline int sl_parse_pkt_fast(struct __sk_buff *skb, struct sl_pkt *p)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct sl_hdr4 *h = data;

		if ((void *)(h + 1) > end || h->ip.ihl != 5 ||
		    (h->ip.protocol != IPPROTO_TCP && h->ip.protocol != IPPROTO_UDP))
			return 0;
		p->family = AF_INET;
		p->daddr[0] = h->ip.daddr;
		p->proto = h->ip.protocol;
		p->l4off = sizeof(h->ip);
		p->sport = h->ports[0];
		p->dport = h->ports[1];
		return 1;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct sl_hdr6 *h = data;

		if ((void *)(h + 1) > end ||
		    (h->ip6.nexthdr != IPPROTO_TCP && h->ip6.nexthdr != IPPROTO_UDP))
			return 0;
		p->family = AF_INET6;
		__builtin_memcpy(p->daddr, &h->ip6.daddr, 16);
		p->proto = h->ip6.nexthdr;
		p->l4off = sizeof(h->ip6);
		p->sport = h->ports[0];
		p->dport = h->ports[1];
		return 1;
	}
	return 0;
}

static __always_inline int sl_parse_pkt(struct __sk_buff *skb, struct sl_pkt *p)
{
	__u32 off;
	__u8 nh;

	if (sl_parse_pkt_fast(skb, p))
		return 0;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return SL_DROP_PROTO;
		p->family = AF_INET;
		p->daddr[0] = ip.daddr;
		p->daddr[1] = p->daddr[2] = p->daddr[3] = 0;
		p->proto = ip.protocol;
		if (ip.ihl != 5) {
			/* Ports only for the event. */
			bpf_skb_load_bytes(skb, (__u32)ip.ihl * 4, &p->sport, 4);
			return SL_DROP_IPOPTS;
		}
		nh = ip.protocol;
		off = sizeof(ip);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		int i;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return SL_DROP_PROTO;
		p->family = AF_INET6;
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		nh = ip6.nexthdr;
		p->proto = nh;
		off = sizeof(ip6);
		for (i = 0; i < SL_MAX_EXTHDRS; i++) {
			__u8 h[2];

			if (nh == NEXTHDR_ROUTING)
				return SL_DROP_RTHDR;
			if (nh != NEXTHDR_HOP && nh != NEXTHDR_DEST && nh != NEXTHDR_FRAGMENT &&
			    nh != NEXTHDR_AUTH && nh != NEXTHDR_MOBILITY)
				break;
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
				return SL_DROP_PROTO;
			if (nh == NEXTHDR_FRAGMENT)
				off += 8;
			else if (nh == NEXTHDR_AUTH)
				off += ((__u32)h[1] + 2) * 4;
			else
				off += ((__u32)h[1] + 1) * 8;
			nh = h[0];
		}
		if (i == SL_MAX_EXTHDRS)
			return SL_DROP_RTHDR;
	} else {
		return SL_DROP_PROTO;
	}
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
		return SL_DROP_PROTO;
	p->proto = nh;
	p->l4off = (__u16)off;
	/* Source and destination port lead both the TCP and the UDP header. */
	if (bpf_skb_load_bytes(skb, off, &p->sport, 4))
		return SL_DROP_PROTO;
	return 0;
}

/* Whether the packet goes to @addr:@port_be of family @family (a record slot). An unspecified
 * address was decided: the kernel sends it to the host itself (127.0.0.1, ::1, or the bound
 * source address), so any packet through lo matches it. */
static __always_inline int sl_pkt_is(const struct sl_pkt *p, __u32 ifindex, __u8 family,
				     const __u8 addr[16], __u16 port_be)
{
	__u32 a[4];

	if (!family || port_be != p->dport)
		return 0;
	__builtin_memcpy(a, addr, 16);
	if (!a[0] && !a[1] && !a[2] && !a[3])
		return ifindex == LOOPBACK_IFINDEX;
	return family == p->family && a[0] == p->daddr[0] && a[1] == p->daddr[1] &&
	       a[2] == p->daddr[2] && a[3] == p->daddr[3];
}

/* The sandbox of the socket that sent @skb (its cgroup or the nearest sandbox above it). */
static __always_inline struct sl_sandbox *sl_skb_sandbox(struct __sk_buff *skb, __u64 *cgid_out)
{
	__u64 cgid = bpf_skb_cgroup_id(skb);
	struct sl_sandbox *sb;
	int level;

	*cgid_out = cgid;
	sb = bpf_map_lookup_elem(&sl_sandboxes, &cgid);
	if (sb)
		return sb;
	for (level = 1; level < SL_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, level);

		if (!id || id == cgid)
			break;
		sb = bpf_map_lookup_elem(&sl_sandboxes, &id);
		if (sb)
			return sb;
	}
	return NULL;
}

/*
 * A packet of @sk to the daemon's listener it was redirected to: if that is a shared listener
 * (SL_SO_SHARED), the packet names its sandbox to the daemon, a datagram in its mark (read
 * with SO_RCVMARK), a connection's SYN as a sl_accepts record under the connection's
 * addresses and ports. Only this program writes either: a sandbox reaches a listener's port through the
 * redirect alone, and its own mark needs CAP_NET_ADMIN, which this overwrites anyway.
 */
static __always_inline void sl_shared_tag(struct __sk_buff *skb, struct bpf_sock *sk,
					  const struct sl_pkt *p)
{
	struct sl_sockorig *o = bpf_sk_storage_get(&sl_sockorig, sk, 0, 0);
	struct sl_accept_key key = {};
	__u8 tcp_flags;
	__u32 id;

	if (!o || !(o->flags & SL_SO_SHARED))
		return;
	id = o->sandbox_id;
	if (p->proto == IPPROTO_UDP) {
		skb->mark = SL_SHARED_MARK | (id & ~SL_SHARED_MARK_MASK);
		return;
	}
	/* A SYN (retransmits too), not the rest of the connection. */
	if (bpf_skb_load_bytes(skb, p->l4off + 13, &tcp_flags, 1) || (tcp_flags & 0x12) != 0x02)
		return;
	if (p->family == AF_INET) {
		if (bpf_skb_load_bytes(skb, 12, key.addr, 4))
			return;
	} else if (bpf_skb_load_bytes(skb, 8, key.addr, 16)) {
		return;
	}
	key.family = p->family;
	key.port = bpf_ntohs(p->sport);
	key.listener_port = bpf_ntohs(p->dport);
	bpf_map_update_elem(&sl_accepts, &key, &id, BPF_ANY);
}

/* The network namespace of @skb's socket, for the listener table: 0 (the keys every
 * namespace shares) where the kernel does not tell cgroup_skb programs (sl_skb_netns). */
static __always_inline __u64 sl_skb_netns_cookie(struct __sk_buff *skb)
{
	return sl_skb_netns ? bpf_get_netns_cookie(skb) : 0;
}

/*
 * A packet of a socket that has no record (it predates the egress program, or it is a TCP
 * child of a listener that never answered through it): it may leave to what the rules allow
 * (passthrough), or to the listener a redirect recorded in sl_sockorig. Returns 0 or the
 * SL_DROP_* reason.
 */
static __always_inline int sl_judge_unrecorded(struct __sk_buff *skb, struct bpf_sock *sk,
					       const struct sl_pkt *p)
{
	struct sl_sockorig *o = bpf_sk_storage_get(&sl_sockorig, sk, 0, 0);
	struct sl_sandbox *sb;
	__u64 cgid;
	int verdict;

	if (o && sl_pkt_is(p, skb->ifindex,
			   o->family == AF_INET6 && sl_is_v4mapped((void *)o->new_addr) ? AF_INET :
											  o->family,
			   o->new_addr, o->new_port)) {
		sl_shared_tag(skb, sk, p);
		return 0;
	}
	sb = sl_skb_sandbox(skb, &cgid);
	if (!sb)
		return SL_DROP_RULES;
	{
		__u32 rules_id = sb->rules_id ? sb->rules_id : sb->id;
		__u8 bit = p->proto == IPPROTO_TCP ? SL_PROTO_TCP : SL_PROTO_UDP;
		__u64 now_ns = 0;

		if (p->family == AF_INET)
			verdict = sl_verdict4(rules_id, p->daddr[0], bpf_ntohs(p->dport), bit,
					      &now_ns);
		else
			verdict = sl_verdict_addr6(rules_id, p->daddr, bpf_ntohs(p->dport), bit,
						   &now_ns);
	}
	/* Audit mode passes what the rules deny, as the connect/sendmsg hooks do. */
	if (verdict != SL_VERDICT_ALLOW && !(verdict == SL_VERDICT_DENY && sl_audit_mode(sb)))
		return SL_DROP_RULES;
	if (skb->ifindex == LOOPBACK_IFINDEX &&
	    sl_is_listener_port(p->dport, p->proto, sl_skb_netns_cookie(skb)))
		return SL_DROP_LISTENER;
	return 0;
}

/*
 * The second line, for every packet a sandbox socket sends (cgroup_skb/egress runs in
 * ip_finish_output / ip6_finish_output, after routing, before fragmentation): the packet must
 * carry no IPv4 options and no IPv6 routing header (the per-datagram control-message forms,
 * IP_RETOPTS and IPV6_RTHDR, never meet the setsockopt hook), and must go where the
 * connect/sendmsg hook decided (sl_sockdst). Per packet that is two header reads and one
 * socket-storage compare; loopback packets also check the listener table. Inbound TCP
 * connections accepted by a sandboxed server are not judged (documented): they carry the
 * listener's inbound mark. Returns 1 to pass, 0 to drop (the sender sees EPERM where the
 * stack reports it: UDP sendmsg; TCP retransmits, then times out).
 */
SEC("cgroup_skb/egress")
int sl_egress(struct __sk_buff *skb)
{
	struct sl_sockdst *d = NULL;
	struct bpf_sock *sk, *full;
	struct sl_pkt p = {};
	int reason;

	reason = sl_parse_pkt(skb, &p);
	if (reason)
		goto drop;
	sk = skb->sk;
	if (!sk)
		return 1;
	full = bpf_sk_fullsock(sk);
	if (!full) {
		/* A request socket: the SYN-ACK of a listener of the sandbox. A listener on a
		 * daemon port is a squatter (it bound while sluiced was away, without bind()):
		 * it completes no handshake. Otherwise the listener is marked, and the
		 * connections it accepts inherit the mark (BPF_F_CLONE). */
		struct bpf_sock *l = bpf_get_listener_sock(sk);

		if (!l)
			return 1;
		if (sl_is_listener_port(bpf_htons((__u16)l->src_port), IPPROTO_TCP,
					sl_skb_netns_cookie(skb))) {
			reason = SL_DROP_LISTENER;
			goto drop;
		}
		d = bpf_sk_storage_get(&sl_sockdst, l, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (d)
			d->flags |= SL_SD_INBOUND;
		return 1;
	}
	d = bpf_sk_storage_get(&sl_sockdst, full, 0, 0);
	if (!d && p.proto == IPPROTO_TCP && full->state == BPF_TCP_SYN_RECV) {
		/* A Fast Open child, created before its listener sent any SYN-ACK: passive. */
		d = bpf_sk_storage_get(&sl_sockdst, full, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (d)
			d->flags |= SL_SD_INBOUND;
		if (sl_is_listener_port(p.sport, p.proto, sl_skb_netns_cookie(skb))) {
			reason = SL_DROP_LISTENER;
			goto drop;
		}
		return 1;
	}
	if (!d) {
		/* A TCP connection the connect hook passed has no record (sl_record_dst): its
		 * SYN is judged against the rules here, the rest of it goes to that same peer.
		 * Connections older than the sandbox were judged when it was added. */
		if (p.proto == IPPROTO_TCP && full->state != BPF_TCP_SYN_SENT &&
		    !(skb->ifindex == LOOPBACK_IFINDEX &&
		      sl_is_listener_port(p.dport, p.proto, sl_skb_netns_cookie(skb))))
			return 1;
		reason = sl_judge_unrecorded(skb, full, &p);
		if (reason)
			goto drop;
		return 1;
	}
	if ((d->flags & SL_SD_SNI) && p.proto == IPPROTO_TCP) {
		reason = sl_sni_egress(skb, full, p.l4off);
		if (reason)
			goto drop;
	}
	if (d->flags & SL_SD_INBOUND)
		return 1;
	if (sl_pkt_is(&p, skb->ifindex, d->conn_family, d->conn_addr, d->conn_port)) {
		if (d->flags & SL_SD_CONN_REDIR)
			sl_shared_tag(skb, full, &p);
		else if (skb->ifindex == LOOPBACK_IFINDEX &&
			 sl_is_listener_port(p.dport, p.proto, sl_skb_netns_cookie(skb)))
			reason = SL_DROP_LISTENER;
	} else if (p.proto == IPPROTO_UDP &&
		   sl_pkt_is(&p, skb->ifindex, d->msg_family, d->msg_addr, d->msg_port)) {
		if (d->flags & SL_SD_MSG_REDIR)
			sl_shared_tag(skb, full, &p);
		else if (skb->ifindex == LOOPBACK_IFINDEX &&
			 sl_is_listener_port(p.dport, p.proto, sl_skb_netns_cookie(skb)))
			reason = SL_DROP_LISTENER;
	} else {
		reason = SL_DROP_DST;
	}
	/* A UDP socket answering from a listener's port squats it (it was autobound there
	 * while sluiced was away). */
	if (!reason && p.proto == IPPROTO_UDP && skb->ifindex == LOOPBACK_IFINDEX &&
	    sl_is_listener_port(p.sport, p.proto, sl_skb_netns_cookie(skb)))
		reason = SL_DROP_LISTENER;
	if (!reason)
		return 1;
drop : {
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 cgid;

	sb = sl_skb_sandbox(skb, &cgid);
	if (sb)
		sandbox_id = sb->id;
	sl_count(sandbox_id, SL_CTR_DROP_EGRESS);
	sl_emit_deny_reason(sandbox_id, cgid, SL_EV_EGRESS, p.family, p.daddr,
			    p.family == AF_INET ? 4 : 16, bpf_ntohs(p.dport), p.proto, 0,
			    (__u8)reason, bpf_ktime_get_ns());
}
	return 0;
}

/* A refusal of the kernel SNI check, as a deny event (rate-limited like every one). sk_msg has
 * neither the task's comm nor a cgroup helper that names the socket's own cgroup: the sending
 * task's cgroup is reported. */
static __always_inline void sl_sni_refused(const struct sl_sni_sk *s, int reason)
{
	struct sl_event *ev;

	sl_sni_count(s->sandbox_id, SL_SNI_CTR_REFUSED);
	ev = sl_event_start(s->sandbox_id, bpf_get_current_cgroup_id(), SL_EV_SNI, s->family,
			    SL_VERDICT_DENY, SOCK_STREAM, sizeof(*ev), 0, bpf_ktime_get_ns());
	if (!ev)
		return;
	__builtin_memcpy(ev->addr, s->addr, 16);
	ev->port = s->port;
	ev->proto = IPPROTO_TCP;
	ev->reason = (__u8)reason;
	sl_event_submit(s->sandbox_id, ev);
}

/*
 * Every sendmsg() of a socket in sl_sni_socks (bpf/sni.h): the kernel SNI check of its first
 * TLS record. Only PENDING sockets are judged; a PASSED one is let through for 4 GiB at a time
 * (bpf_msg_apply_bytes), a REFUSED one never sends again (EACCES).
 */
SEC("sk_msg")
int sl_sni_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct sl_sni_sk *s;
	int r;

	if (!sk)
		return SK_DROP;
	s = bpf_sk_storage_get(&sl_sni_sk, sk, 0, 0);
	if (!s)
		return SK_DROP;
	if (s->state == SL_SNI_PASSED) {
		bpf_msg_apply_bytes(msg, 0xffffffffu);
		return SK_PASS;
	}
	if (s->state != SL_SNI_PENDING)
		return SK_DROP;
	r = sl_sni_judge(msg, s);
	if (r < 0)
		return SK_PASS; /* corked: held until the record is whole */
	if (r) {
		s->state = SL_SNI_REFUSED;
		sl_sni_refused(s, r);
		return SK_DROP;
	}
	s->state = SL_SNI_PASSED;
	sl_sni_count(s->sandbox_id, SL_SNI_CTR_PASSED);
	bpf_msg_apply_bytes(msg, 0xffffffffu);
	return SK_PASS;
}
