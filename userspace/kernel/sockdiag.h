/* SPDX-License-Identifier: MIT */
/*
 * Open flows of a sandbox, closed when its policy stops allowing them (see sockdiag.c).
 *
 * Threading: any thread, no state (each call has its own netlink socket and buffer). It blocks
 * on the kernel's socket dump: milliseconds for thousands of sockets, at most 2 s per
 * netlink read before it gives up with -ETIMEDOUT; the judge runs on the calling thread.
 */
#ifndef SL_SOCKDIAG_H
#define SL_SOCKDIAG_H

#include <stddef.h>
#include <stdint.h>

/* Whether the flow to @dst (network order, IPv4 in the first 4 bytes) port @dport (host
 * order) over @proto (IPPROTO_TCP/UDP) must be closed. */
typedef int sl_flow_judge(void *arg, uint8_t family, uint8_t proto, const uint8_t *dst,
			  uint16_t dport);

/*
 * Destroys every TCP socket (connecting or connected) and connected UDP socket of network
 * namespace @netns_fd (< 0: ours) whose cgroup id is in @cgids and which @judge condemns.
 * *@destroyed counts them. Returns 0 or -errno (-EOPNOTSUPP: no CONFIG_INET_DIAG_DESTROY).
 */
int sl_sockdiag_destroy(int netns_fd, const uint64_t *cgids, size_t ncg, sl_flow_judge *judge,
			void *arg, size_t *destroyed);

#endif
