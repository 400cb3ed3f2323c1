/* SPDX-License-Identifier: MIT */
/*
 * cgroup v2 paths: where the hierarchy is mounted, validating a sandbox path, cgroup ids.
 *
 * Threading: any thread, no state but the mount point found once. Every call reads /proc or
 * cgroupfs (quick filesystem reads, no network).
 */
#ifndef SL_CGROUP_H
#define SL_CGROUP_H

#include <stddef.h>
#include <stdint.h>

/* The cgroup2 mount point, found from /proc/self/mountinfo (it may be /sys/fs/cgroup or
 * /sys/fs/cgroup/unified) on the first call, once for the process. Returns a static string,
 * or NULL with errno = ENOENT (then for good: a cgroup2 mounted later is not seen). */
const char *sl_cgroup_root(void);

/*
 * Resolves @path (absolute, or relative to the cgroup2 root) into the canonical absolute path
 * of an existing cgroup v2 directory in @out. Returns 0, -ENOENT (no such path), -ENOTDIR, or
 * -EMEDIUMTYPE (exists but is not on cgroup v2). The root cgroup itself is refused (-EINVAL).
 */
int sl_cgroup_resolve(const char *path, char *out, size_t len);

/* The kernel's id of the cgroup at @path (what bpf_get_current_cgroup_id() returns). */
int sl_cgroup_id(const char *path, uint64_t *id);

/* Depth of @path below the cgroup2 root (the root is level 0). */
int sl_cgroup_level(const char *path);

/* Whether @a is @b or lies below it. Both canonical. */
int sl_cgroup_within(const char *a, const char *b);

/* The canonical path of the cgroup v2 directory of process @pid (its "0::" line in
 * /proc/PID/cgroup, joined with the cgroup2 mount). Returns 0 or -errno. */
int sl_cgroup_of_pid(int pid, char *out, size_t len);

/*
 * Whether a user other than root could move a process out of cgroup @path (canonical):
 * cgroup.procs or cgroup.threads of @path or of an ancestor up to the cgroup2 root is owned
 * by a non-root user or group/other-writable. 1 (the file in @which), 0, or -errno.
 */
int sl_cgroup_user_writable(const char *path, char *which, size_t len);

/* Whether any process lives in @path or below it (cgroup.events "populated"): 1, 0 or -errno. */
int sl_cgroup_populated(const char *path);

#endif
