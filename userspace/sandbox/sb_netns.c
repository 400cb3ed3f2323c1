// SPDX-License-Identifier: MIT
/*
 * Where a sandbox lives: its cgroup and network namespace, found when it is added or
 * adopted; and the reaping of sandboxes left with nothing to enforce.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernel/bpf_loader.h"
#include "tls/ca.h"
#include "kernel/cgroup.h"
#include "dns/dns.h"
#include "core/events.h"
#include "proxy/proxy.h"
#include "kernel/sockdiag.h"
#include "core/log.h"
#include "core/loop.h"
#include "lua/lua_host.h"
#include "kernel/netns.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

#define NETNS_CHECK_SWEEPS 5 /* namespaces are judged gone every 5th sweep (a /proc scan) */
/* Cgroups looked up per sweep (a path walk each, 4-7 us): every sandbox's each second up to
 * this many, and in turns beyond (16,384 sandboxes: each within 8 s), so that a sweep holds
 * the main loop for about 10 ms at most rather than growing with the sandboxes. */
#define CGROUP_CHECKS 2048

static const char *cgroup_error(int e)
{
	switch (e) {
	case -ENOENT:
		return "no such directory";
	case -ENOTDIR:
		return "not a directory";
	case -EMEDIUMTYPE:
		return "not a cgroup v2 directory";
	case -EINVAL:
		return "the root cgroup cannot be a sandbox";
	default:
		return strerror(-e);
	}
}

/* ---- network namespaces ---- */

/* Takes namespace @fd (@id) for @box, whose listeners will open inside it. Sluiced's own
 * namespace makes an ordinary sandbox. */
static int take_netns(struct sl_box *box, int fd, const struct sl_netns_id *id, char *err,
		      size_t errlen)
{
	int up;

	if (sl_netns_is_ours(id)) {
		close(fd);
		box->netns[0] = 0;
		return 0;
	}
	/* 127.0.0.1 can be bound while lo is down, but nothing would reach it. */
	up = sl_netns_loopback_up(fd);
	if (up <= 0) {
		sl_errf(err, errlen, "network namespace %s: %s", box->netns,
			up ? strerror(-up) :
			     "its loopback interface is down (ip link set lo up in it)");
		close(fd);
		return -EINVAL;
	}
	box->netns_fd = fd;
	box->netns_dev = id->dev;
	box->netns_ino = id->ino;
	box->netns_cookie = sl_netns_cookie(fd);
	return 0;
}

/* Where a new sandbox lives: its cgroup (given, or the process's) and its network namespace
 * (given, the process's, or sluiced's own). */
int sb_netns_target(struct sl_box *box, const struct sl_box_spec *spec, char *err, size_t errlen)
{
	struct sl_netns_id id;
	int fd, e;

	if (spec->pid > 0) {
		if ((spec->cgroup && *spec->cgroup) || (spec->netns && *spec->netns)) {
			sl_errf(err, errlen,
				"a pid names the cgroup and the network namespace: "
				"give neither with it");
			return -EINVAL;
		}
		fd = sl_netns_of_pid(spec->pid, box->cgroup, sizeof(box->cgroup), &id);
		if (fd < 0) {
			sl_errf(err, errlen, "process %d: %s", spec->pid,
				fd == -ESRCH ? "no such process" :
				fd == -EXDEV ? "its cgroup is outside sluiced's cgroup namespace" :
					       cgroup_error(fd));
			return -EINVAL;
		}
		snprintf(box->netns, sizeof(box->netns), "/proc/%d/ns/net", spec->pid);
		return take_netns(box, fd, &id, err, errlen);
	}
	e = sl_cgroup_resolve(spec->cgroup, box->cgroup, sizeof(box->cgroup));
	if (e) {
		sl_errf(err, errlen, "cgroup %s: %s", spec->cgroup, cgroup_error(e));
		return -EINVAL;
	}
	if (!spec->netns || !*spec->netns)
		return 0;
	if (spec->netns[0] != '/' || strlen(spec->netns) >= sizeof(box->netns)) {
		sl_errf(err, errlen, "network namespace %s: not an absolute path", spec->netns);
		return -EINVAL;
	}
	fd = sl_netns_open(spec->netns, &id);
	if (fd < 0) {
		sl_errf(err, errlen, "network namespace %s: %s", spec->netns,
			fd == -EINVAL ? "not a network namespace" : strerror(-fd));
		return -EINVAL;
	}
	snprintf(box->netns, sizeof(box->netns), "%s", spec->netns);
	return take_netns(box, fd, &id, err, errlen);
}

/*
 * After a restart: reopens the namespace the state file @j names, through its path if that
 * still is the same namespace, else through a process of the sandbox's cgroup. Returns 0
 * (also for a sandbox without one) or -ENOENT.
 */
int sb_netns_adopt(struct sl_box *box, json_t *j)
{
	const char *path = json_string_value(json_object_get(j, "netns"));
	struct sl_netns_id want, got;
	int fd;

	if (!path || !*path)
		return 0;
	snprintf(box->netns, sizeof(box->netns), "%s", path);
	want.dev = (uint64_t)json_integer_value(json_object_get(j, "netns_dev"));
	want.ino = (uint64_t)json_integer_value(json_object_get(j, "netns_ino"));
	box->netns_dev = want.dev;
	box->netns_ino = want.ino;
	fd = sl_netns_open(path, &got);
	if (fd >= 0 && (got.dev != want.dev || got.ino != want.ino)) {
		close(fd); /* another namespace now has that path */
		fd = -ENOENT;
	}
	if (fd < 0)
		fd = sl_netns_find_in_cgroup(box->cgroup, &want);
	if (fd < 0)
		return -ENOENT;
	box->netns_fd = fd;
	box->netns_cookie = sl_netns_cookie(fd);
	return 0;
}

/* Removes sandbox @name, which has nothing left to enforce, saying why (log and event). */
static void reap(struct sl_registry *r, const char *name, const char *why)
{
	char copy[SL_NAME_MAX + 1];

	snprintf(copy, sizeof(copy), "%s", name); /* @name may be the sandbox's own */
	sl_warn("sandbox %s: %s, removing the sandbox", copy, why);
	if (r->lua_opts.events)
		sl_events_publish(r->lua_opts.events, copy,
				  json_pack("{s:s, s:s, s:s, s:s}", "type", "sandbox", "sandbox",
					    copy, "action", "removed", "reason", why));
	sl_sandbox_rm_async(r, copy, NULL, NULL);
}

/*
 * Removes the sandboxes left with nothing to enforce (loop thread, from the sweep): whose
 * cgroup was removed (or replaced by another of the same path) and, judged every
 * NETNS_CHECK_SWEEPS sweeps, those with a network namespace whose cgroup is empty and whose
 * namespace no process and no mount holds any more: sluiced's own fd keeps a namespace alive
 * in the kernel, so "gone" means nobody else could still use it.
 */
void sb_reap_vanished(struct sl_registry *r)
{
	char(*names)[SL_NAME_MAX + 1] = NULL;
	struct sl_netns_id *ids = NULL;
	uint8_t *used = NULL;
	size_t n = 0, ngone = 0, todo = r->nindexed < CGROUP_CHECKS ? r->nindexed : CGROUP_CHECKS;
	struct sl_box *b;

	/* The next @todo sandboxes by name from where the last sweep stopped; reaped after the
	 * walk, which a removal would shift. */
	names = calloc(todo + 1, sizeof(*names));
	for (size_t k = 0; names && k < todo; k++) {
		uint64_t now_cgid;
		int e;

		if (r->cgroup_cursor >= r->nindexed)
			r->cgroup_cursor = 0;
		b = r->by_name[r->cgroup_cursor++];
		if (b->removing)
			continue;
		e = sl_cgroup_id(b->cgroup, &now_cgid);
		if (e != -ENOENT && (e || now_cgid == b->cgid))
			continue;
		snprintf(names[ngone++], sizeof(names[0]), "%s", b->name);
	}
	for (size_t i = 0; i < ngone; i++)
		reap(r, names[i], "its cgroup was removed");
	free(names);
	names = NULL;
	if (++r->netns_sweeps < NETNS_CHECK_SWEEPS)
		return;
	r->netns_sweeps = 0;
	names = calloc(r->count + 1, sizeof(*names));
	ids = calloc(r->count + 1, sizeof(*ids));
	used = calloc(r->count + 1, 1);
	if (!names || !ids || !used)
		goto out;
	sl_list_for_each(b, &r->boxes, link) {
		if (b->removing || b->netns_fd < 0 || sl_cgroup_populated(b->cgroup) != 0)
			continue;
		snprintf(names[n], sizeof(names[n]), "%s", b->name);
		ids[n++] = (struct sl_netns_id){ .dev = b->netns_dev, .ino = b->netns_ino };
	}
	if (!n || sl_netns_in_use(ids, n, used))
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (!used[i])
			reap(r, names[i], "its network namespace is gone and its cgroup is empty");
	}
out:
	free(names);
	free(ids);
	free(used);
}
