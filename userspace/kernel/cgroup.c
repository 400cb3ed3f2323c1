// SPDX-License-Identifier: MIT
/*
 * A sandbox is a cgroup v2 directory. This module finds the cgroup2 mount (never assumed:
 * hybrid systems mount it at /sys/fs/cgroup/unified), checks that a path a user gave is a
 * cgroup v2 directory, and reads cgroup ids the way the kernel reports them to BPF: the
 * kernfs node id, which is also the file handle of the directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "kernel/cgroup.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* mountinfo escapes spaces and friends as \ooo. */
static void unescape(char *s)
{
	char *d = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*d++ = *s++;
		}
	}
	*d = 0;
}

/* The cgroup2 mount point, written once by find_root() under pthread_once(): read-only after
 * that, from any thread. Empty if there is none. */
static char root[PATH_MAX];
static pthread_once_t root_once = PTHREAD_ONCE_INIT;

static void find_root(void)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) != -1) {
		char *sep = strstr(line, " - ");
		char mnt[PATH_MAX], fstype[64];

		/* id parent major:minor root mountpoint ... - fstype source options */
		if (!sep || sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2"))
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1)
			continue;
		unescape(mnt);
		snprintf(root, sizeof(root), "%s", mnt);
		break;
	}
	free(line);
	fclose(f);
}

const char *sl_cgroup_root(void)
{
	pthread_once(&root_once, find_root);
	if (!root[0]) {
		errno = ENOENT;
		return NULL;
	}
	return root;
}

int sl_cgroup_resolve(const char *path, char *out, size_t len)
{
	const char *root = sl_cgroup_root();
	char joined[PATH_MAX], real[PATH_MAX];
	struct statfs sfs;
	struct stat st;

	if (!path || !*path)
		return -EINVAL;
	if (path[0] == '/' || !root)
		snprintf(joined, sizeof(joined), "%s", path);
	else
		snprintf(joined, sizeof(joined), "%s/%s", root, path);
	if (!realpath(joined, real))
		return -errno;
	if (stat(real, &st) == -1)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (statfs(real, &sfs) == -1)
		return -errno;
	if (sfs.f_type != CGROUP2_SUPER_MAGIC)
		return -EMEDIUMTYPE;
	if (root && !strcmp(real, root))
		return -EINVAL;
	if (strlen(real) >= len)
		return -ENAMETOOLONG;
	strcpy(out, real);
	return 0;
}

int sl_cgroup_id(const char *path, uint64_t *id)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h;
	int mount_id;

	h.fh.handle_bytes = sizeof(h.id);
	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) == -1)
		return -errno;
	if (h.fh.handle_bytes != sizeof(uint64_t))
		return -EOPNOTSUPP;
	memcpy(id, h.fh.f_handle, sizeof(*id));
	return 0;
}

int sl_cgroup_level(const char *path)
{
	const char *root = sl_cgroup_root();
	size_t rl;
	int level = 0;

	if (!root)
		return -ENOENT;
	rl = strlen(root);
	if (strncmp(path, root, rl) || (path[rl] && path[rl] != '/'))
		return -EINVAL;
	for (const char *p = path + rl; *p; p++)
		if (*p == '/' && p[1])
			level++;
	return level;
}

int sl_cgroup_within(const char *a, const char *b)
{
	size_t bl = strlen(b);

	return !strncmp(a, b, bl) && (a[bl] == 0 || a[bl] == '/');
}

int sl_cgroup_of_pid(int pid, char *out, size_t len)
{
	const char *root = sl_cgroup_root();
	char path[64], *line = NULL, joined[PATH_MAX];
	size_t cap = 0;
	int e = -ENOENT;
	FILE *f;

	if (!root)
		return -ENOENT;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (getline(&line, &cap, f) != -1) {
		size_t n = strlen(line);

		if (strncmp(line, "0::/", 4))
			continue;
		if (n && line[n - 1] == '\n')
			line[--n] = 0;
		/* A path outside our cgroup namespace reads "/../..": not ours to resolve. */
		if (strstr(line, "/..")) {
			e = -EXDEV;
			break;
		}
		snprintf(joined, sizeof(joined), "%s%s", root, line + 3);
		e = sl_cgroup_resolve(joined, out, len);
		break;
	}
	free(line);
	fclose(f);
	return e;
}

int sl_cgroup_populated(const char *path)
{
	char p[PATH_MAX + 16], *line = NULL;
	size_t cap = 0;
	int v = -ENOENT;
	FILE *f;

	snprintf(p, sizeof(p), "%s/cgroup.events", path);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) != -1)
		if (sscanf(line, "populated %d", &v) == 1)
			break;
	free(line);
	fclose(f);
	return v < 0 ? v : !!v;
}

/* Whether someone other than root may write @file: its owner is not root (an owner can
 * always chmod), or its group or other write bit is set. 1, 0, or -errno. */
static int others_may_write(const char *file)
{
	struct stat st;

	if (stat(file, &st) == -1)
		return errno == ENOENT ? 0 : -errno;
	return st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) ? 1 : 0;
}

int sl_cgroup_user_writable(const char *path, char *which, size_t len)
{
	static const char *const files[] = { "cgroup.procs", "cgroup.threads" };
	const char *root = sl_cgroup_root();
	char dir[PATH_MAX], file[PATH_MAX + 32];
	size_t rootlen;

	if (!root)
		return -ENOENT;
	rootlen = strlen(root);
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	if (strncmp(dir, root, rootlen) || (dir[rootlen] && dir[rootlen] != '/'))
		return -EINVAL;
	/* Moving a process needs write access to cgroup.procs of the common ancestor of where
	 * it is and where it goes: any writable one from here to the root is a way out. */
	for (;;) {
		char *slash;

		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			int w;

			snprintf(file, sizeof(file), "%s/%s", dir, files[i]);
			w = others_may_write(file);
			if (w) {
				if (w > 0)
					snprintf(which, len, "%s", file);
				return w;
			}
		}
		if (strlen(dir) <= rootlen)
			return 0;
		slash = strrchr(dir, '/');
		if (!slash || (size_t)(slash - dir) < rootlen)
			return 0;
		*slash = 0;
		if ((size_t)(slash - dir) == 0)
			return 0;
	}
}
