// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sluice's cgroup programs. Attached with bpf_link to every sandbox cgroup (and so run for
 * its child cgroups too), they decide each connect(), each unconnected sendmsg() and each
 * socket() of the sandbox in the kernel: deny by default, pass through what the sandbox's
 * rules allow. A denied call fails with EPERM; userspace is never woken for it (it may later
 * read a rate-limited event).
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
	else
		sl_count(sandbox_id, tcp ? SL_CTR_DENY_TCP : SL_CTR_DENY_UDP);
}

/* Returns the hook's answer: 1 lets the call go on, 0 fails it with EPERM. */
static __always_inline int sl_judge4(struct bpf_sock_addr *ctx, __u8 kind)
{
	__u64 now_ns = bpf_ktime_get_ns();
	__u8 proto_bit = sl_proto_bit(ctx->protocol);
	__u32 addr = ctx->user_ip4;
	__u16 port = bpf_ntohs(ctx->user_port);
	int verdict = SL_VERDICT_DENY;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u64 cgid;

	sb = sl_current_sandbox(&cgid);
	if (sb) {
		sandbox_id = sb->id;
		if (proto_bit)
			verdict = sl_verdict4(sandbox_id, addr, port, proto_bit, now_ns);
	}
	/* PROXY and DNS rewrites are not wired yet: anything but ALLOW is refused. */
	if (verdict != SL_VERDICT_ALLOW)
		verdict = SL_VERDICT_DENY;
	sl_count_verdict(sandbox_id, verdict, proto_bit);
	if (verdict == SL_VERDICT_ALLOW)
		return 1;
	sl_emit_deny(sandbox_id, cgid, kind, AF_INET, &addr, 4, port, ctx->protocol, ctx->type,
		     now_ns);
	return 0;
}

static __always_inline int sl_judge6(struct bpf_sock_addr *ctx, __u8 kind)
{
	__u64 now_ns = bpf_ktime_get_ns();
	__u8 proto_bit = sl_proto_bit(ctx->protocol);
	__u16 port = bpf_ntohs(ctx->user_port);
	int verdict = SL_VERDICT_DENY;
	struct sl_sandbox *sb;
	__u32 sandbox_id = 0;
	__u32 addr[4];
	__u64 cgid;

	/* ctx->user_ip6 allows only 4-byte loads. */
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];

	sb = sl_current_sandbox(&cgid);
	if (sb) {
		sandbox_id = sb->id;
		if (proto_bit)
			verdict = sl_verdict_addr6(sandbox_id, addr, port, proto_bit, now_ns);
	}
	if (verdict != SL_VERDICT_ALLOW)
		verdict = SL_VERDICT_DENY;
	sl_count_verdict(sandbox_id, verdict, proto_bit);
	if (verdict == SL_VERDICT_ALLOW)
		return 1;
	sl_emit_deny(sandbox_id, cgid, kind, AF_INET6, addr, 16, port, ctx->protocol, ctx->type,
		     now_ns);
	return 0;
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
