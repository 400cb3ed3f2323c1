/* SPDX-License-Identifier: MIT */
/*
 * Loopback listeners of the daemon, optionally inside a sandbox's network namespace. Both
 * functions return the fd or -errno.
 *
 * Threading: any thread. With a namespace, the calling thread enters it for the socket() call
 * only (setns() is per thread) and returns before anything else runs on it; nothing blocks.
 */
#ifndef SL_SOCKETS_H
#define SL_SOCKETS_H

#include <stdint.h>

/*
 * A non-blocking socket of @type (SOCK_DGRAM or SOCK_STREAM, listening) bound to the loopback
 * address of @family (127.0.0.1 or ::1, IPv6-only) on @port (0: the kernel's pick, returned in
 * *@bound if given). With @netns_fd >= 0 the socket is created inside that network namespace
 * and keeps living there. Returns the fd or -errno.
 */
int sl_listen_loopback(int netns_fd, int family, int type, uint16_t port, uint16_t *bound);
/* socket(@domain, @type | SOCK_NONBLOCK | SOCK_CLOEXEC, @protocol) created inside network
 * namespace @netns_fd (< 0: ours). Returns the fd or -errno. */
int sl_socket_in(int netns_fd, int domain, int type, int protocol);

#endif
