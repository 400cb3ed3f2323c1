/* SPDX-License-Identifier: MIT */
/*
 * Network namespaces of sandboxes: opening one, knowing it again, noticing it is gone.
 *
 * Threading: any thread, no state. The calls read /proc and nsfs; sl_netns_find_in_cgroup()
 * and sl_netns_in_use() walk processes' /proc entries (milliseconds for thousands), and
 * sl_netns_loopback_up() enters the namespace on the calling thread for one socket().
 */
#ifndef SL_NETNS_H
#define SL_NETNS_H

#include <stddef.h>
#include <stdint.h>

/* What names a network namespace across processes and restarts: its nsfs inode. */
struct sl_netns_id {
	uint64_t dev, ino;
};

/*
 * Opens the network namespace at @path: a /proc/PID/ns/net link or a bind mount of one
 * (/run/netns/NAME). Returns an O_CLOEXEC fd and its identity in *@id, or -errno (-EINVAL:
 * @path is not a network namespace).
 */
int sl_netns_open(const char *path, struct sl_netns_id *id);

/*
 * The network namespace of process @pid (an fd, as sl_netns_open()) and the canonical path of
 * its cgroup v2 directory in @cgroup. Both are read while a pidfd holds the process, so a pid
 * reused meanwhile is noticed (-ESRCH). -errno on failure.
 */
int sl_netns_of_pid(int pid, char *cgroup, size_t len, struct sl_netns_id *id);

/* Whether @id is the namespace sluiced itself lives in. */
int sl_netns_is_ours(const struct sl_netns_id *id);

/*
 * The cookie of namespace @fd (< 0: sluiced's own), the number the kernel's programs know it
 * by (bpf_get_netns_cookie(), SO_NETNS_COOKIE: Linux 5.14). 0 if the kernel does not tell.
 */
uint64_t sl_netns_cookie(int fd);

/* Whether the loopback interface of namespace @fd is up: 1, 0, or -errno. */
int sl_netns_loopback_up(int fd);

/*
 * Opens namespace @id again through a process of cgroup @cgroup or of one of its children
 * (after a restart, when the path it was added with names it no more). Returns the fd, or
 * -ENOENT if no such process is in it.
 */
int sl_netns_find_in_cgroup(const char *cgroup, const struct sl_netns_id *id);

/*
 * Whether anything but sluiced's own fds keeps each of the @n namespaces of @ids alive: a
 * process in it (its /proc/PID/ns/net) or a bind mount of it in sluiced's mount namespace.
 * Sets @used[i] to 1 or 0. One pass over /proc for all of them. Returns 0 or -errno.
 */
int sl_netns_in_use(const struct sl_netns_id *ids, size_t n, uint8_t *used);

#endif
