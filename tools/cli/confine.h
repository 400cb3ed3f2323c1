/* SPDX-License-Identifier: MIT */
/* What `sluice run` does to its command before exec so that the command meets what sluice
 * assumes of a sandbox: not root, no capabilities, no way back to either, no descriptors of
 * its caller, and no socket family the kernel hooks cannot judge.
 * Threading: the CLI's one thread (sl_run_confine() in the child, before exec); the user
 * lookup reads the passwd and group databases, nothing else blocks. */
#ifndef SL_CONFINE_H
#define SL_CONFINE_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#define SL_PRESERVE_FDS_MAX 1024

/* The user the command runs as. */
struct sl_run_user {
	uid_t uid;
	gid_t gid;
	char name[256]; /* "" if the uid has no passwd entry: then no supplementary groups */
	char home[PATH_MAX]; /* "" if unknown */
};

/*
 * Who the command runs as: @opt (--user NAME|UID, may be NULL), else the user who called
 * sudo (SUDO_UID, SUDO_GID, with the groups of SUDO_USER or of the uid's passwd entry).
 * Without either, and under sudo from root (SUDO_UID=0), -EPERM: plain root is never the
 * default. -ENOENT for an unknown --user, -EINVAL for a malformed SUDO_UID/SUDO_GID. @err
 * says why on failure. Before the fork: a typo fails early.
 */
int sl_run_user_pick(const char *opt, struct sl_run_user *u, char *err, size_t errlen);

/*
 * Checks that descriptors 3 .. 3+@n-1 are open (--preserve-fds @n), before sluice run opens
 * any of its own. 0, or -EBADF with the first one missing in @err.
 */
int sl_run_check_fds(int n, char *err, size_t errlen);

/*
 * In the command's process, as root, just before exec: becomes @u (groups, gid, uid) with an
 * empty bounding set and no permitted, effective, inheritable or ambient capability, sets
 * no_new_privs, closes every descriptor above 2 but 3 .. 3+@preserve_fds-1 (those lose
 * close-on-exec), and loads the seccomp filter: socket() and socketpair() only for AF_UNIX,
 * AF_INET, AF_INET6 and AF_NETLINK (else EAFNOSUPPORT), no io_uring (EPERM). Returns 0, or
 * -errno with what failed in @err; the caller must then not exec.
 */
int sl_run_confine(const struct sl_run_user *u, int preserve_fds, char *err, size_t errlen);

#endif
