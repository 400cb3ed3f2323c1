// SPDX-License-Identifier: MIT
/*
 * The confinement of `sluice run`'s command. sluice's kernel hooks judge the sockets of a
 * cgroup; they hold only if what runs in the cgroup cannot leave it (root can write its pid
 * into any cgroup.procs), cannot change the rules (CAP_NET_ADMIN, CAP_SYS_ADMIN, sluiced's
 * control socket), and cannot make sockets the hooks never see (AF_PACKET, AF_VSOCK and the
 * rest, io_uring's own socket operations). So the command runs as an ordinary user with no
 * capability and no_new_privs (no setuid binary leads back to root), with none of its
 * caller's descriptors (a socket opened outside the sandbox would be judged by nobody), and
 * under a seccomp filter on socket families, the way systemd's RestrictAddressFamilies= and
 * Docker's default profile do it.
 *
 * Other ABIs: the filter covers x86-64, i386 and x32 alike (on x86-64). i386 programs that
 * create sockets through the socketcall(2) multiplexer cannot be judged by family (the
 * arguments are in memory seccomp cannot read), so socketcall's SOCKET and SOCKETPAIR fail
 * with EAFNOSUPPORT there (libseccomp maps the socket rules to it): fail closed. The direct
 * socket syscall of i386 (Linux >= 4.3) and x32 are filtered like x86-64's.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "confine.h"

/* The socket families a sandboxed command may create: those the cgroup hooks judge
 * (inet), UNIX sockets (judged where the kernel has connect_unix), and netlink, which
 * glibc's getaddrinfo and `ip` need and which reaches only the local kernel. */
static const int allowed_families[] = { AF_UNIX, AF_INET, AF_INET6, AF_NETLINK };

static int family_allowed(int f)
{
	for (size_t i = 0; i < sizeof(allowed_families) / sizeof(allowed_families[0]); i++)
		if (allowed_families[i] == f)
			return 1;
	return 0;
}

/* A uid or gid given as decimal text; -1 if @s is not one. */
static long long parse_id(const char *s)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v >= (uid_t)-1)
		return -1;
	return (long long)v;
}

static void from_passwd(struct sl_run_user *u, const struct passwd *pw)
{
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
	snprintf(u->name, sizeof(u->name), "%s", pw->pw_name);
	snprintf(u->home, sizeof(u->home), "%s", pw->pw_dir);
}

int sl_run_user_pick(const char *opt, struct sl_run_user *u, char *err, size_t errlen)
{
	const char *su = getenv("SUDO_UID"), *sg = getenv("SUDO_GID"), *sn = getenv("SUDO_USER");
	struct passwd *pw = NULL;
	long long uid, gid;

	memset(u, 0, sizeof(*u));
	if (opt) {
		uid = parse_id(opt);
		pw = uid >= 0 ? getpwuid((uid_t)uid) : getpwnam(opt);
		if (!pw) {
			snprintf(err, errlen, "no user '%s'", opt);
			return -ENOENT;
		}
		from_passwd(u, pw);
		return 0;
	}
	if (su && *su) {
		uid = parse_id(su);
		gid = sg && *sg ? parse_id(sg) : -2;
		if (uid < 0 || gid == -1) {
			snprintf(err, errlen, "SUDO_UID/SUDO_GID are not numeric ids ('%s', '%s')",
				 su, sg ? sg : "");
			return -EINVAL;
		}
		if (uid > 0) {
			/* The groups of the user sudo was called by: SUDO_USER's if that name is
			 * still this uid, else whatever passwd says the uid is. */
			pw = sn && *sn ? getpwnam(sn) : NULL;
			if (!pw || pw->pw_uid != (uid_t)uid)
				pw = getpwuid((uid_t)uid);
			if (pw)
				from_passwd(u, pw);
			u->uid = (uid_t)uid;
			if (gid >= 0)
				u->gid = (gid_t)gid;
			else if (!pw)
				u->gid = (gid_t)uid;
			return 0;
		}
	}
	snprintf(err, errlen,
		 "refusing to run the command as root: a root command can leave its "
		 "sandbox. Give --user USER (under sudo the calling user is the "
		 "default; --user root runs it as root anyway)");
	return -EPERM;
}

int sl_run_check_fds(int n, char *err, size_t errlen)
{
	for (int fd = 3; fd < 3 + n; fd++) {
		if (fcntl(fd, F_GETFD) == -1) {
			snprintf(err, errlen, "--preserve-fds %d: descriptor %d is not open", n,
				 fd);
			return -EBADF;
		}
	}
	return 0;
}

static int become(const struct sl_run_user *u, char *err, size_t errlen)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	uid_t r, e, s;
	int cap;

	if (u->name[0] ? initgroups(u->name, u->gid) == -1 : setgroups(1, &u->gid) == -1) {
		snprintf(err, errlen, "setting the groups of uid %u failed: %s", (unsigned)u->uid,
			 strerror(errno));
		return -errno;
	}
	if (setresgid(u->gid, u->gid, u->gid) == -1) {
		snprintf(err, errlen, "setgid(%u) failed: %s", (unsigned)u->gid, strerror(errno));
		return -errno;
	}
	/* The bounding set goes while CAP_SETPCAP is still held; an empty one also keeps a
	 * root command's exec from regaining any capability. */
	for (cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1) {
			snprintf(err, errlen, "dropping capability %d failed: %s", cap,
				 strerror(errno));
			return -errno;
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL) {
		snprintf(err, errlen, "clearing ambient capabilities failed: %s", strerror(errno));
		return -errno;
	}
	if (setresuid(u->uid, u->uid, u->uid) == -1) {
		snprintf(err, errlen, "setuid(%u) failed: %s", (unsigned)u->uid, strerror(errno));
		return -errno;
	}
	/* setuid away from root empties permitted and effective, not inheritable; as root
	 * nothing is emptied: clear all three. */
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &h, d) == -1) {
		snprintf(err, errlen, "clearing capabilities failed: %s", strerror(errno));
		return -errno;
	}
	/* Verify rather than trust: no capability left, and no way back to root. */
	if (syscall(SYS_capget, &h, d) == -1 || d[0].effective || d[0].permitted ||
	    d[0].inheritable || d[1].effective || d[1].permitted || d[1].inheritable ||
	    getresuid(&r, &e, &s) == -1 || r != u->uid || e != u->uid || s != u->uid ||
	    (u->uid != 0 && setuid(0) == 0)) {
		snprintf(err, errlen, "dropping privileges did not hold");
		return -EPERM;
	}
	return 0;
}

static int close_fds(int keep, char *err, size_t errlen)
{
	for (int fd = 3; fd < 3 + keep; fd++) {
		if (fcntl(fd, F_SETFD, 0) == -1) {
			snprintf(err, errlen, "keeping descriptor %d failed: %s", fd,
				 strerror(errno));
			return -errno;
		}
	}
	if (close_range(3 + keep, ~0U, 0) == -1) {
		/* Before Linux 5.9: one at a time. */
		long max = sysconf(_SC_OPEN_MAX);

		for (long fd = 3 + keep; fd < (max > 0 ? max : 65536); fd++)
			close((int)fd);
	}
	return 0;
}

static int load_filter(char *err, size_t errlen)
{
	static const int socket_calls[] = { SCMP_SYS(socket), SCMP_SYS(socketpair) };
	static const int uring_calls[] = { SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter),
					   SCMP_SYS(io_uring_register) };
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int e = 0, max = 0;

	if (!ctx) {
		snprintf(err, errlen, "seccomp_init failed");
		return -ENOMEM;
	}
	/* The other ABIs a process of this machine can call the kernel through: without them
	 * a 32-bit syscall would be outside the filter (libseccomp kills it instead). */
#if defined(__x86_64__)
	if ((e = seccomp_arch_add(ctx, SCMP_ARCH_X86)) && e != -EEXIST)
		goto out;
	if ((e = seccomp_arch_add(ctx, SCMP_ARCH_X32)) && e != -EEXIST)
		goto out;
#elif defined(__aarch64__)
	if ((e = seccomp_arch_add(ctx, SCMP_ARCH_ARM)) && e != -EEXIST)
		goto out;
#endif
	e = 0;
	for (size_t i = 0; i < sizeof(allowed_families) / sizeof(allowed_families[0]); i++)
		if (allowed_families[i] > max)
			max = allowed_families[i];
	for (size_t i = 0; i < sizeof(socket_calls) / sizeof(socket_calls[0]) && !e; i++) {
		/* The family is an int: compare its low 32 bits, what the kernel reads; above
		 * the largest allowed family everything is refused, whatever the high bits. */
		for (int f = 0; f <= max && !e; f++)
			if (!family_allowed(f))
				e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT),
						     socket_calls[i], 1,
						     SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, f));
		if (!e)
			e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), socket_calls[i], 1,
					     SCMP_A0(SCMP_CMP_GT, (scmp_datum_t)max));
	}
	/* io_uring's IORING_OP_SOCKET makes sockets no seccomp filter sees (Docker's default
	 * profile refuses io_uring for the same reason). */
	for (size_t i = 0; i < sizeof(uring_calls) / sizeof(uring_calls[0]) && !e; i++)
		e = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), uring_calls[i], 0);
	if (!e)
		e = seccomp_load(ctx);
out:
	if (e)
		snprintf(err, errlen, "loading the seccomp filter failed: %s", strerror(-e));
	seccomp_release(ctx);
	return e;
}

int sl_run_confine(const struct sl_run_user *u, int preserve_fds, char *err, size_t errlen)
{
	int e;

	e = become(u, err, errlen);
	if (e)
		return e;
	/* No setuid or file-capability binary (sudo, su, ping) leads back to privileges. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		snprintf(err, errlen, "setting no_new_privs failed: %s", strerror(errno));
		return -errno;
	}
	e = close_fds(preserve_fds, err, errlen);
	if (!e)
		e = load_filter(err, errlen);
	return e;
}
