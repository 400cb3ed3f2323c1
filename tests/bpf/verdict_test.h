/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The input of verdict_test.bpf.c: one destination to judge, passed as packet data. */
#ifndef SLUICE_VERDICT_TEST_H
#define SLUICE_VERDICT_TEST_H

struct sl_verdict_query {
	__u32 sandbox_id;
	__u32 family; /* 4 or 6 */
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
	__u64 now_ns;
	__u16 port; /* host order */
	__u8 proto_bit; /* SL_PROTO_TCP or SL_PROTO_UDP */
	__u8 pad[5];
};

#endif
