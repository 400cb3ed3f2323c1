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

#define SOCK_STREAM 1
#define SOCK_DGRAM 2

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void sl_count_verdict(__u32 sandbox_id, int verdict, __u8 proto_bit)
{
	int tcp = proto_bit == SL_PROTO_TCP;

	if (verdict == SL_VERDICT_ALLOW)
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
static __always_inline int sl_redirect(struct bpf_sock_addr *ctx, __u8 family,
				       const __u32 orig[4], const __u32 new_addr[4], __u16 new_port,
				       __u8 verdict, __u32 sandbox_id)
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
	o->sandbox_id = sandbox_id;
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
				     const __u32 addr[4], __u16 port, __u64 now_ns)
{
	sl_count_verdict(sandbox_id, verdict, proto_bit);
	if (verdict != SL_VERDICT_DENY)
		return 1;
	sl_emit_deny(sandbox_id, cgid, kind, family, addr, family == AF_INET ? 4 : 16, port,
		     ctx->protocol, ctx->type, now_ns);
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

/*
 * The verdict of one connect() or sendmsg() to @addr (network order; IPv4 in addr[0]) and its
 * consequences: DNS queries and intercepted connections are rewritten to the sandbox's
 * listeners, everything not allowed fails with EPERM. Returns the hook's answer.
 */
static __always_inline int sl_judge(struct bpf_sock_addr *ctx, __u8 kind, __u8 family,
				    const __u32 addr[4], int mapped)
{
	__u64 now_ns = bpf_ktime_get_ns();
	__u8 proto_bit = sl_proto_bit(ctx->protocol);
	__u16 port = bpf_ntohs(ctx->user_port);
	int verdict = SL_VERDICT_DENY;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u32 to[4];
	__u64 cgid;

	sb = sl_current_sandbox(&cgid);
	if (!sb || !proto_bit)
		goto out;
	sandbox_id = sb->id;
	if (port == 53 && (sb->flags & SL_SB_DNS)) {
		/* Every DNS query goes to sluice, whatever resolver the sandbox names. */
		sl_listener_addr(to, family, mapped, sb->dns_ip4, sb->dns_ip6);
		if (sl_redirect(ctx, family, addr, to, sb->dns_port, SL_VERDICT_DNS, sandbox_id))
			verdict = SL_VERDICT_DNS;
		goto out;
	}
	{
		__u32 rules_id = sb->rules_id ? sb->rules_id : sandbox_id;

		if (family == AF_INET)
			verdict = sl_verdict4(rules_id, addr[0], port, proto_bit, now_ns);
		else
			verdict = sl_verdict_addr6(rules_id, addr, port, proto_bit, now_ns);
	}
	/* The daemon's own sockets are never a destination. They live on loopback only, so
	 * other destinations skip the lookup. */
	if (verdict != SL_VERDICT_DENY) {
		__u32 a4 = family == AF_INET ? addr[0] : addr[3];

		if ((family == AF_INET || mapped) ?
			    ((a4 & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) &&
			     sl_is_listener(AF_INET, &a4, (__u16)ctx->user_port)) :
			    (!addr[0] && !addr[1] && !addr[2] && addr[3] == bpf_htonl(1) &&
			     sl_is_listener(AF_INET6, addr, (__u16)ctx->user_port)))
			verdict = SL_VERDICT_DENY;
	}
	if (verdict == SL_VERDICT_PROXY) {
		/* Only TCP is intercepted; without a proxy listener there is nowhere to go. */
		sl_listener_addr(to, family, mapped, sb->proxy_ip4, sb->proxy_ip6);
		if (proto_bit != SL_PROTO_TCP || !(sb->flags & SL_SB_PROXY) ||
		    !sl_redirect(ctx, family, addr, to, sb->proxy_port, SL_VERDICT_PROXY,
				 sandbox_id))
			verdict = SL_VERDICT_DENY;
	}
out:
	return sl_finish(ctx, sandbox_id, cgid, verdict, proto_bit, kind, family, addr, port,
			 now_ns);
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

	sb = sl_current_sandbox(&cgid);
	if (sb) {
		sandbox_id = sb->id;
		if ((family == AF_INET || family == AF_INET6) &&
		    ((type == SOCK_STREAM && protocol == IPPROTO_TCP) ||
		     (type == SOCK_DGRAM && protocol == IPPROTO_UDP)))
			return 1;
	}
	sl_count(sandbox_id, SL_CTR_DENY_SOCKET);
	sl_emit_deny(sandbox_id, cgid, SL_EV_SOCKET, family, NULL, 0, 0, protocol, type,
		     bpf_ktime_get_ns());
	return 0;
}

/*
 * Proxied connections, told to the proxy. When a redirected TCP socket sends its SYN its local
 * port is known: its record is published under (local address, local port), the peer the
 * proxy sees on accept. The proxy takes the entry; if the client closes before that, the
 * state callback removes it, so nothing outlives its connection.
 */
SEC("sockops")
int sl_sockops(struct bpf_sock_ops *skops)
{
	struct sl_conn_key key = {};
	struct sl_sockorig *o;
	struct bpf_sock *sk;
	__u32 a[4];

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB && skops->op != BPF_SOCK_OPS_STATE_CB)
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
	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == BPF_TCP_CLOSE)
			bpf_map_delete_elem(&sl_proxied, &key);
		return 1;
	}
	sk = skops->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&sl_sockorig, sk, 0, 0);
	if (!o || o->verdict != SL_VERDICT_PROXY)
		return 1;
	bpf_map_update_elem(&sl_proxied, &key, o, BPF_ANY);
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}
