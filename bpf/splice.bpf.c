// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The kernel splice of SNI-checked passthrough connections. Once the proxy has read a
 * connection's ClientHello and judged its server name, it puts the sandbox's socket and its
 * own upstream socket in sl_splice_socks; from then on every byte either receives is sent out
 * of the other by this stream verdict program, in softirq and workqueue context, without ever
 * waking sluiced (a sockmap redirect, as in the kernel's selftests test_sockmap_kern.h and
 * Cilium's bpf/sockops). sluiced keeps both descriptors, watches them only for hang-ups, and
 * reads the byte counts of sl_splice_ends to forward a half-close after the last byte.
 * Kept apart from sluice.bpf.c: nothing here is pinned or attached to a cgroup, and it lives
 * and dies with the daemon's descriptors.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "sluice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SL_SPLICE_MAX 65536 /* sockets: twice the proxy's connections of all sandboxes */

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SL_SPLICE_MAX);
	__type(key, __u64); /* socket cookie */
	__type(value, __u64); /* the socket (a descriptor when written from userspace) */
} sl_splice_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_SPLICE_MAX);
	__type(key, __u64); /* socket cookie */
	__type(value, struct sl_splice_end);
} sl_splice_ends SEC(".maps");

/*
 * Runs for every skb a spliced socket receives (verdict-only mode: no stream parser, each
 * skb as it comes). A socket whose end is gone (sluiced is tearing the pair down) drops: it
 * is being closed anyway.
 */
SEC("sk_skb/stream_verdict")
int sl_splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sl_splice_end *e = bpf_map_lookup_elem(&sl_splice_ends, &cookie);
	__u64 peer;
	int r;

	if (!e)
		return SK_DROP;
	peer = e->peer;
	r = bpf_sk_redirect_hash(skb, &sl_splice_socks, &peer, 0);
	if (r == SK_PASS)
		__sync_fetch_and_add(&e->bytes, skb->len);
	return r;
}
