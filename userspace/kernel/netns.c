// SPDX-License-Identifier: MIT
/*
 * A container is a cgroup plus a network namespace. The kernel rewrites a sandbox's DNS and
 * intercepted connections to 127.0.0.1:PORT of the namespace the connecting socket lives in,
 * so a sandbox with a network of its own needs sluiced's listeners inside that namespace.
 * This module opens such a namespace (by path or through a process), names it by its nsfs
 * inode so that a restarted sluiced finds the same one again, and tells whether anything
 * but sluiced still holds it: sluiced keeps an fd of every sandbox's namespace, so the kernel
 * never frees one while its sandbox exists, and "gone" has to be judged from the outside.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/nsfs.h>

#include "kernel/cgroup.h"
#include "kernel/netns.h"
#include "kernel/sockets.h"

#define CGROUP_SCAN_DEPTH 8 /* child cgroups searched below a sandbox, after a restart */

int sl_netns_open(const char *path, struct sl_netns_id *id)
{
	struct stat st;
	int fd, type, e;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	type = ioctl(fd, NS_GET_NSTYPE);
	if (type != CLONE_NEWNET || fstat(fd, &st) == -1) {
		e = type == -1 && errno != ENOTTY ? -errno : -EINVAL;
		close(fd);
		return e;
	}
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return fd;
}

int sl_netns_of_pid(int pid, char *cgroup, size_t len, struct sl_netns_id *id)
{
	char path[64];
	struct pollfd p;
	int pidfd, fd = -1, e;

	if (pid <= 0)
		return -EINVAL;
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (pidfd == -1)
		return -errno;
	e = sl_cgroup_of_pid(pid, cgroup, len);
	if (e)
		goto out;
	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	fd = sl_netns_open(path, id);
	if (fd < 0) {
		e = fd;
		goto out;
	}
	/* A pidfd turns readable when its process exits: if it still is not, both reads above
	 * were of that process, not of one that got its pid afterwards. */
	p = (struct pollfd){ .fd = pidfd, .events = POLLIN };
	if (poll(&p, 1, 0) != 0)
		e = -ESRCH;
out:
	close(pidfd);
	if (e && fd >= 0)
		close(fd);
	return e ? e : fd;
}

int sl_netns_is_ours(const struct sl_netns_id *id)
{
	struct stat st;

	return stat("/proc/self/ns/net", &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

uint64_t sl_netns_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);
	int s = sl_socket_in(fd, AF_INET, SOCK_DGRAM, 0);

	if (s < 0)
		return 0;
	if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == -1 ||
	    len != sizeof(cookie))
		cookie = 0;
	close(s);
	return cookie;
}

int sl_netns_loopback_up(int fd)
{
	struct ifreq ifr = { 0 };
	int s, e = 0;

	s = sl_socket_in(fd, AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return s;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == -1)
		e = -errno;
	close(s);
	if (e)
		return e == -ENODEV ? 0 : e;
	return !!(ifr.ifr_flags & IFF_UP);
}

static int same_ns(const char *path, const struct sl_netns_id *id)
{
	struct stat st;

	return stat(path, &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino;
}

/* Searches the processes of @dir and its children (to @depth) for one in namespace @id. */
static int find_in(const char *dir, const struct sl_netns_id *id, int depth)
{
	char path[PATH_MAX + 32], ns[64];
	struct dirent *de;
	int fd = -ENOENT;
	FILE *f;
	DIR *d;
	long pid;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "re");
	if (f) {
		while (fd < 0 && fscanf(f, "%ld", &pid) == 1) {
			struct sl_netns_id got;
			int nfd;

			snprintf(ns, sizeof(ns), "/proc/%ld/ns/net", pid);
			if (!same_ns(ns, id))
				continue;
			nfd = sl_netns_open(ns, &got);
			if (nfd >= 0 && (got.dev != id->dev || got.ino != id->ino)) {
				close(nfd); /* the process moved meanwhile */
				continue;
			}
			if (nfd >= 0)
				fd = nfd;
		}
		fclose(f);
	}
	if (fd >= 0 || depth <= 0)
		return fd;
	d = opendir(dir);
	if (!d)
		return fd;
	while (fd < 0 && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = find_in(path, id, depth - 1);
	}
	closedir(d);
	return fd;
}

int sl_netns_find_in_cgroup(const char *cgroup, const struct sl_netns_id *id)
{
	return find_in(cgroup, id, CGROUP_SCAN_DEPTH);
}

static void mark(const struct sl_netns_id *ids, size_t n, uint8_t *used, uint64_t dev, uint64_t ino)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i].dev == dev && ids[i].ino == ino)
			used[i] = 1;
}

/* Bind mounts of namespaces in our mount namespace: nsfs entries whose root is
 * "net:[INODE]" (ip netns add makes them). */
static void mark_mounts(const struct sl_netns_id *ids, size_t n, uint8_t *used)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	while (getline(&line, &cap, f) != -1) {
		unsigned maj, min;
		unsigned long long ino;
		char *sep = strstr(line, " - ");

		/* id parent major:minor root mountpoint ... - fstype ... */
		if (!sep || strncmp(sep + 3, "nsfs ", 5))
			continue;
		if (sscanf(line, "%*s %*s %u:%u net:[%llu]", &maj, &min, &ino) != 3)
			continue;
		mark(ids, n, used, makedev(maj, min), ino);
	}
	free(line);
	fclose(f);
}

int sl_netns_in_use(const struct sl_netns_id *ids, size_t n, uint8_t *used)
{
	char path[64];
	struct dirent *de;
	pid_t self = getpid();
	DIR *d;

	memset(used, 0, n);
	if (!n)
		return 0;
	d = opendir("/proc");
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct stat st;

		if (!isdigit((unsigned char)de->d_name[0]) || atoi(de->d_name) == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/ns/net", de->d_name);
		if (stat(path, &st) == 0)
			mark(ids, n, used, st.st_dev, st.st_ino);
	}
	closedir(d);
	mark_mounts(ids, n, used);
	return 0;
}
