// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Test harness for verdict.h: cgroup sock_addr programs cannot be run with BPF_PROG_RUN, so
 * this tc program runs the very same decision functions on a query passed as packet data and
 * returns the verdict. tests/unit/test_verdict.c fills the maps and checks the answers.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "verdict.h"
#include "verdict_test.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sl_verdict_test(struct __sk_buff *skb)
{
	struct sl_verdict_query q;
	__u32 a[4];

	if (bpf_skb_load_bytes(skb, 0, &q, sizeof(q)))
		return -1;
	__builtin_memcpy(a, q.addr, 16);
	if (q.family == 4)
		return sl_verdict4(q.sandbox_id, a[0], q.port, q.proto_bit, &q.now_ns);
	return sl_verdict_addr6(q.sandbox_id, a, q.port, q.proto_bit, &q.now_ns);
}
