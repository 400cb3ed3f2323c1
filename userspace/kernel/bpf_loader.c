// SPDX-License-Identifier: MIT
/*
 * The bpf loader owns every kernel object of sluiced. Maps are pinned by name under the pin
 * directory (libbpf's pin_root_path), so that a restarted or upgraded sluiced reuses them and
 * enforcement never pauses; programs are always loaded fresh and existing cgroup links are
 * switched to them with BPF_LINK_UPDATE, which is atomic for the cgroup. Links are pinned per
 * sandbox under <pin_dir>/sandboxes/<name>/ so that they outlive the daemon (fail closed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "kernel/bpf_loader.h"
#include "core/log.h"
#include "sluice.skel.h"

/* The ABI shared with the kernel programs (sizes and offsets) is pinned in bpf_abi.c. */

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

struct sl_bpf {
	struct sluice_bpf *skel;
	struct ring_buffer *rb;
	sl_bpf_event_cb *ev_cb;
	void *ev_arg;
	char pin_dir[PATH_MAX];
	int ncpus;
	int unix_hooks; /* the UNIX socket programs are loaded (kernel >= 6.7) */
	int skb_netns; /* the egress program knows a packet's network namespace */
	uint32_t max_sandboxes, max_rules;
	/* Each sandbox id's sl_proxied inner map: px_fd (-1: none open) and px_state (enum
	 * px_state) under px_mu, held briefly; px_batch serializes the writes to the outer map
	 * (each waits for an RCU grace period, see sl_bpf_proxied_fresh()). A LIVE id's fd is
	 * read without px_mu by its sandbox's thread: only that sandbox's remover changes it. */
	int *px_fd;
	uint8_t *px_state;
	uint32_t px_nfresh; /* ids FRESH */
	pthread_mutex_t px_mu, px_batch;
	/* [max_sandboxes]: 1 where sl_sni_names may hold names of that sandbox id (found there
	 * at start, or written since): sl_bpf_drop_sni_names() walks the map only for those.
	 * An id's byte is touched by one thread at a time (its sandbox's, then its remover's). */
	uint8_t *sni_held;
	/* [2 * max_sandboxes]: the entries of each rule bank in sl_rules4 and sl_rules6 (index
	 * bank_ix()), counted at open and kept by every write: a sync that leaves none of the
	 * bank's earlier keys behind needs no walk of the whole map to prune. */
	uint32_t *bank_n;
	/* [2 * 65536]: the sl_listeners keys the programs can find, by protocol (TCP, then UDP)
	 * and port (lport_ix()), counted at open and kept by every write under ls_mu: a port's
	 * bit in sl_listener_ports is on while its count is. */
	uint32_t *ls_n;
	pthread_mutex_t ls_mu;
	/* Whole addresses found in the tries at open, where a sluiced before 7 December kept
	 * them (the hashes hold them now): sl_bpf_drop_trie_hosts() takes them out. */
	uint32_t trie_hosts;
	/* sl_bpf_learned_snapshot(): every bank's resolutions, by rules id (snap_on: taken). */
	struct snap_ent *snap;
	size_t nsnap;
	int snap_on;
};

struct snap_ent {
	uint32_t rules_id;
	struct sl_kentry e;
};

/*
 * An id's inner map moves through these; only px_batch's holder writes its outer entry.
 *   NONE   none of ours (the outer map may hold a removed or earlier sluiced's map)
 *   WANTED an add holds the id: the next batch makes its map
 *   MAKING in a batch under way
 *   FRESH  px_fd: made and in the outer map, never a sandbox's (no program writes to it)
 *   LIVE   px_fd: its sandbox's
 *   STALE  the outer map holds a removed sandbox's map: sl_bpf_proxied_reap() deletes it
 */
enum px_state { PX_NONE, PX_WANTED, PX_MAKING, PX_FRESH, PX_LIVE, PX_STALE };

/* At most this many maps are made in one batch (one grace period for all of them), and
 * PX_AHEAD per wanted one for the adds to come, while fewer than PX_FRESH_MAX wait for their
 * sandbox (65 KiB of kernel memory each, empty). */
#define PX_BATCH 64
#define PX_AHEAD 3
#define PX_FRESH_MAX 64

/* Maps sized by the capacity options (the rest keep their declared size). */
enum sl_map_size { SZ_NONE, SZ_RULES, SZ_SANDBOXES, SZ_LISTENERS };
static const struct {
	const char *name;
	enum sl_map_size size;
} sized_maps[] = {
	{ "sl_rules4", SZ_RULES },	  { "sl_rules6", SZ_RULES },
	{ "sl_hosts4", SZ_RULES },	  { "sl_hosts6", SZ_RULES },
	{ "sl_sandboxes", SZ_SANDBOXES }, { "sl_counters", SZ_SANDBOXES },
	{ "sl_evlimit", SZ_SANDBOXES },	  { "sl_pxfull", SZ_SANDBOXES },
	{ "sl_proxied", SZ_SANDBOXES },	  { "sl_listeners", SZ_LISTENERS },
	{ "sl_auditn", SZ_SANDBOXES },	  { "sl_sni_ctr", SZ_SANDBOXES },
};

/* A pinned map of another size, being replaced (see sl_bpf_open()). */
struct sl_migration {
	struct bpf_map *map; /* the new one */
	int old_fd;
	struct bpf_map_info old;
	char path[PATH_MAX];
};
#define SL_MAX_MIGRATIONS 32

/* Lines of a verifier log that sluiced's log keeps: its end, where the verifier says why it
 * refused a program (libbpf hands the whole log over as one message, often megabytes). */
#define VERIFIER_TAIL_LINES 40

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	int lvl = level == LIBBPF_WARN ? SL_LOG_WARN : SL_LOG_DEBUG;
	char *msg = NULL, *p, *line;
	int n, skip, lines = 0;

	if (level == LIBBPF_DEBUG)
		return 0;
	n = vasprintf(&msg, fmt, ap);
	if (n < 0)
		return 0;
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = 0;
	/* One log line per line: all of a short message; of a verifier log, its first line and
	 * its last VERIFIER_TAIL_LINES. */
	for (p = msg; *p; p++)
		lines += *p == '\n';
	skip = lines > VERIFIER_TAIL_LINES ? lines - VERIFIER_TAIL_LINES : 0;
	n = 0;
	for (line = strtok_r(msg, "\n", &p); line; line = strtok_r(NULL, "\n", &p), n++) {
		if (n == 1 && skip)
			sl_log(lvl, "libbpf: (%d lines of the verifier's log left out)", skip);
		if (n == 0 || n > skip)
			sl_log(lvl, "libbpf: %s", line);
	}
	free(msg);
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) == -1 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) == -1 && errno != EEXIST)
		return -errno;
	return 0;
}

/* bpffs may not be mounted on a fresh machine: mount it at /sys/fs/bpf when the pin directory
 * lives there; anywhere else the administrator chose the place and must mount it. */
static int ensure_bpffs(const char *pin_dir, char *err, size_t errlen)
{
	char probe[PATH_MAX];
	struct statfs sfs;

	snprintf(probe, sizeof(probe), "%s", pin_dir);
	for (;;) {
		char *slash;

		if (statfs(probe, &sfs) == 0)
			break;
		slash = strrchr(probe, '/');
		if (!slash || slash == probe) {
			snprintf(probe, sizeof(probe), "/");
			statfs(probe, &sfs);
			break;
		}
		*slash = 0;
	}
	if (sfs.f_type == BPF_FS_MAGIC)
		return 0;
	if (strncmp(pin_dir, "/sys/fs/bpf/", 12)) {
		sl_errf(err, errlen, "%s is not on a bpf filesystem (mount -t bpf bpf DIR)",
			pin_dir);
		return -ENOTSUP;
	}
	if (mkdir_p("/sys/fs/bpf", 0700) ||
	    mount("bpf", "/sys/fs/bpf", "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700")) {
		sl_errf(err, errlen, "mounting bpffs at /sys/fs/bpf failed: %s", strerror(errno));
		return -errno;
	}
	sl_info("mounted bpffs at /sys/fs/bpf");
	return 0;
}

/* The value of enumerator @name of enum bpf_attach_type in the running kernel's BTF, or -1
 * when the kernel has no such attach type. */
static int kernel_attach_type(const struct btf *vmlinux, const char *name)
{
	const struct btf_type *t;
	const struct btf_enum *e;
	int id;

	if (!vmlinux)
		return -1;
	id = btf__find_by_name_kind(vmlinux, "bpf_attach_type", BTF_KIND_ENUM);
	if (id <= 0)
		return -1;
	t = btf__type_by_id(vmlinux, id);
	e = btf_enum(t);
	for (int i = 0; i < btf_vlen(t); i++, e++)
		if (!strcmp(btf__name_by_offset(vmlinux, e->name_off), name))
			return (int)e->val;
	return -1;
}

/*
 * cgroup/connect_unix and cgroup/sendmsg_unix (kernel >= 6.7, commit 859051dd165e) are newer
 * than the libbpf sluice builds against, which does not know their section names: their
 * program and attach types are set here, by the values the running kernel's BTF gives (so
 * nothing is hard-coded). On an older kernel they are not loaded at all and @b->unix_hooks
 * stays 0. The kfunc they call (bpf_cast_to_kern_ctx, 6.2) must be there too.
 */
static void setup_unix_hooks(struct sl_bpf *b)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	int connect_t, sendmsg_t;

	if (libbpf_get_error(vmlinux))
		vmlinux = NULL;
	connect_t = kernel_attach_type(vmlinux, "BPF_CGROUP_UNIX_CONNECT");
	sendmsg_t = kernel_attach_type(vmlinux, "BPF_CGROUP_UNIX_SENDMSG");
	b->unix_hooks = connect_t >= 0 && sendmsg_t >= 0 && vmlinux &&
			btf__find_by_name_kind(vmlinux, "bpf_cast_to_kern_ctx", BTF_KIND_FUNC) > 0;
	if (b->unix_hooks) {
		bpf_program__set_type(b->skel->progs.sl_connect_unix,
				      BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
		bpf_program__set_expected_attach_type(b->skel->progs.sl_connect_unix,
						      (enum bpf_attach_type)connect_t);
		bpf_program__set_type(b->skel->progs.sl_sendmsg_unix,
				      BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
		bpf_program__set_expected_attach_type(b->skel->progs.sl_sendmsg_unix,
						      (enum bpf_attach_type)sendmsg_t);
	} else {
		bpf_program__set_autoload(b->skel->progs.sl_connect_unix, false);
		bpf_program__set_autoload(b->skel->progs.sl_sendmsg_unix, false);
	}
	btf__free(vmlinux);
}

int sl_bpf_unix_confined(const struct sl_bpf *b)
{
	return b->unix_hooks;
}

/*
 * A map pinned by an older sluiced whose layout this one changed would make libbpf refuse to
 * load (it reuses pins by name). For maps whose contents are short-lived and can be lost
 * without opening anything (sl_proxied: records of connections being accepted), the stale pin
 * is removed so that a new map is created; said in the log. The old programs keep their old
 * map until their links are switched to the new ones.
 */
static void drop_stale_pin(const char *pin_dir, const char *name, __u32 type, __u32 key_size,
			   __u32 value_size, const char *loss)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	char path[PATH_MAX + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", pin_dir, name);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return;
	if (!bpf_obj_get_info_by_fd(fd, &info, &len) &&
	    (info.type != type || info.key_size != key_size || info.value_size != value_size)) {
		if (unlink(path) == -1)
			sl_err("%s has an older layout and cannot be removed: %s", path,
			       strerror(errno));
		else
			sl_warn("%s was pinned by an older sluiced with another layout (type %u, key "
				"%u bytes, value %u; now %u, %u, %u): recreated it; %s",
				path, info.type, info.key_size, info.value_size, type, key_size,
				value_size, loss);
	}
	close(fd);
}

/* The capacity option that sizes map @name, SZ_NONE if none does. */
static enum sl_map_size sized_by(const char *name)
{
	for (size_t i = 0; i < sizeof(sized_maps) / sizeof(sized_maps[0]); i++)
		if (!strcmp(name, sized_maps[i].name))
			return sized_maps[i].size;
	return SZ_NONE;
}

/* Sets max_entries of the maps the capacity options size. */
static void size_maps(struct sl_bpf *b)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, b->skel->obj) {
		enum sl_map_size size = sized_by(bpf_map__name(map));

		if (size == SZ_NONE)
			continue;
		bpf_map__set_max_entries(map, size == SZ_RULES	   ? b->max_rules :
					      size == SZ_SANDBOXES ? b->max_sandboxes :
								     4 * b->max_sandboxes);
	}
}

static int map_each(int fd, size_t ksz, size_t vsz,
		    int (*fn)(int fd, const void *key, const void *val, void *arg), void *arg);

/* A listener key of a sluiced before 8 December (proto 0: any protocol), copied under TCP and
 * UDP for the programs of now, before any link moves to them. The old key stays for the old
 * programs still attached (an orphan's); forgetting the listener drops it. A key of cookie 0
 * (every namespace: such old keys and their copies) turns on sl_listeners_shared. */
static int listener_upgrade(int fd, const void *key, const void *val, void *arg)
{
	struct sl_listener_key k;
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	static const uint8_t none[8];
	struct sl_bpf *b = arg;

	memcpy(&k, key, sizeof(k));
	if (!memcmp(&k.addr[4], none, sizeof(none)))
		b->skel->bss->sl_listeners_shared = 1; /* a key of every namespace */
	if (k.proto)
		return 0;
	for (size_t i = 0; i < sizeof(protos); i++) {
		k.proto = protos[i];
		if (bpf_map_update_elem(fd, &k, val, BPF_NOEXIST) && errno != EEXIST)
			return -errno;
	}
	return 0;
}

#define LPORT_SLOTS (2 * 65536) /* ls_n: TCP ports, then UDP ports */

/* @k's index in ls_n if the programs can find it (127.0.0.1, TCP or UDP: not a key of before
 * 8 December), else -1. */
static long lport_ix(const struct sl_listener_key *k)
{
	static const uint8_t lo[4] = { 127, 0, 0, 1 };

	if (k->family != AF_INET || memcmp(k->addr, lo, sizeof(lo)) ||
	    (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP))
		return -1;
	return (k->proto == IPPROTO_UDP ? 65536L : 0) + ntohs(k->port);
}

static int lport_count(int fd, const void *key, const void *val, void *arg)
{
	struct sl_bpf *b = arg;
	long ix = lport_ix(key);

	(void)fd;
	(void)val;
	if (ix >= 0)
		b->ls_n[ix]++;
	return 0;
}

/* sl_listener_ports made again from the keys of sl_listeners, before any link moves to the
 * programs that read it: whatever wrote the keys (an earlier sluiced, of before the index or
 * not), each one's bit is on. A bit no key needs goes off: nothing else writes keys meanwhile. */
static int lport_rebuild(struct sl_bpf *b)
{
	int fd = bpf_map__fd(b->skel->maps.sl_listener_ports);
	__u64 words[SL_LPORT_WORDS] = { 0 };

	memset(b->ls_n, 0, LPORT_SLOTS * sizeof(*b->ls_n));
	if (map_each(bpf_map__fd(b->skel->maps.sl_listeners), sizeof(struct sl_listener_key),
		     sizeof(__u32), lport_count, b))
		return -1;
	for (long ix = 0; ix < LPORT_SLOTS; ix++) {
		uint16_t port = (uint16_t)ix;

		if (b->ls_n[ix])
			words[SL_LPORT_WORD(port, ix >= 65536 ? IPPROTO_UDP : IPPROTO_TCP)] |=
				1ULL << (port & 63);
	}
	for (__u32 w = 0; w < SL_LPORT_WORDS; w++)
		if (bpf_map_update_elem(fd, &w, &words[w], BPF_ANY))
			return -1;
	return 0;
}

/* Turns @port's bit of @proto in sl_listener_ports on or off, the rest of its word as the map
 * has it. Under ls_mu. */
static int lport_bit(struct sl_bpf *b, uint16_t port, uint8_t proto, int on)
{
	int fd = bpf_map__fd(b->skel->maps.sl_listener_ports);
	__u32 w = SL_LPORT_WORD(port, proto);
	__u64 bits;

	if (bpf_map_lookup_elem(fd, &w, &bits))
		return -errno;
	if (on)
		bits |= 1ULL << (port & 63);
	else
		bits &= ~(1ULL << (port & 63));
	return bpf_map_update_elem(fd, &w, &bits, BPF_ANY) ? -errno : 0;
}

/* Writes listener key @k (value @id): its port's bit goes on first, so that no program skips
 * the lookup that would find it. */
static int lport_put(struct sl_bpf *b, const struct sl_listener_key *k, uint32_t id)
{
	int fd = bpf_map__fd(b->skel->maps.sl_listeners), r = 0;
	long ix = lport_ix(k);

	pthread_mutex_lock(&b->ls_mu);
	if (ix >= 0 && !b->ls_n[ix])
		r = lport_bit(b, ntohs(k->port), k->proto, 1); /* no key without its bit */
	if (r)
		goto out;
	if (!bpf_map_update_elem(fd, k, &id, BPF_NOEXIST)) {
		if (ix >= 0)
			b->ls_n[ix]++;
	} else if (errno != EEXIST || bpf_map_update_elem(fd, k, &id, BPF_EXIST)) {
		r = -errno;
	} else if (ix >= 0 && !b->ls_n[ix]) {
		b->ls_n[ix] = 1; /* a key someone else wrote: counted now, its bit kept on */
	}
out:
	pthread_mutex_unlock(&b->ls_mu);
	return r;
}

/* Deletes listener key @k (none: 0); its port's bit goes off after the last key of it. A
 * count can only be too high (a key written behind sluiced's back): a bit stays on then. */
static int lport_del(struct sl_bpf *b, const struct sl_listener_key *k)
{
	int fd = bpf_map__fd(b->skel->maps.sl_listeners), r = 0;
	long ix = lport_ix(k);

	pthread_mutex_lock(&b->ls_mu);
	if (bpf_map_delete_elem(fd, k))
		r = errno == ENOENT ? 0 : -errno;
	else if (ix >= 0 && b->ls_n[ix] && !--b->ls_n[ix])
		r = lport_bit(b, ntohs(k->port), k->proto, 0);
	pthread_mutex_unlock(&b->ls_mu);
	return r;
}

/* Notes that sl_sni_names may hold names of sandbox @id (all ids beyond the array do). */
static void sni_held_set(struct sl_bpf *b, uint32_t id)
{
	if (id < b->max_sandboxes)
		b->sni_held[id] = 1;
}

static int sni_mark_held(int fd, const void *key, const void *val, void *arg)
{
	(void)fd;
	(void)val;
	sni_held_set(arg, ((const struct sl_sni_key *)key)->sandbox_id);
	return 0;
}

static uint32_t count_keys(int fd, uint32_t key_size)
{
	unsigned char *key = malloc(key_size), *next = malloc(key_size);
	void *prev = NULL;
	uint32_t n = 0;

	while (key && next && !bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, key_size);
		prev = key;
		n++;
	}
	free(key);
	free(next);
	return n;
}

/* The highest sandbox id in a pinned sl_sandboxes (0: none). */
static uint32_t max_sandbox_id(int fd)
{
	struct sl_sandbox sb;
	uint64_t key, next;
	void *prev = NULL;
	uint32_t max = 0;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (!bpf_map_lookup_elem(fd, &key, &sb) && sb.id > max)
			max = sb.id;
	}
	return max;
}

/*
 * Finds the pinned maps whose size differs from the one asked, checks that their contents fit
 * the new size, and unpins them so that libbpf creates new ones (the old stay alive through
 * @mig's fds and through the old programs' links). Nothing is unpinned when one does not fit.
 */
static int migrate_prepare(struct sl_bpf *b, struct sl_migration *mig, int *nmig, char *err,
			   size_t errlen)
{
	struct bpf_map *map;
	int n = 0, e = 0;

	*nmig = 0;
	bpf_object__for_each_map(map, b->skel->obj) {
		struct sl_migration *m = &mig[n];
		__u32 len = sizeof(m->old);
		const char *pin = bpf_map__pin_path(map);
		const char *opt = sized_by(bpf_map__name(map)) == SZ_RULES ? "--max-rules" :
									     "--max-sandboxes";
		uint32_t want = bpf_map__max_entries(map), have, top;
		int fd;

		if (!pin || n == SL_MAX_MIGRATIONS)
			continue;
		fd = bpf_obj_get(pin);
		if (fd < 0)
			continue;
		memset(&m->old, 0, sizeof(m->old));
		if (bpf_obj_get_info_by_fd(fd, &m->old, &len) ||
		    m->old.type != bpf_map__type(map) ||
		    m->old.key_size != bpf_map__key_size(map) ||
		    m->old.value_size != bpf_map__value_size(map) || m->old.max_entries == want) {
			close(fd); /* the same size, or a layout libbpf will judge */
			continue;
		}
		m->map = map;
		m->old_fd = fd;
		snprintf(m->path, sizeof(m->path), "%s", pin);
		n++;
		if (m->old.type == BPF_MAP_TYPE_ARRAY || m->old.type == BPF_MAP_TYPE_PERCPU_ARRAY)
			continue; /* slots by sandbox id: the ids are checked on sl_sandboxes */
		have = count_keys(fd, m->old.key_size);
		if (have > want) {
			sl_errf(err, errlen,
				"%s (pinned by an earlier sluiced) holds %u entries, more than %s "
				"allows (%u): start sluiced with %s %u or more, or with the earlier "
				"size and remove sandboxes first",
				pin, have, opt, want, opt, have);
			e = -ENOSPC;
			break;
		}
		top = strcmp(bpf_map__name(map), "sl_sandboxes") ? 0 : max_sandbox_id(fd);
		if (top >= b->max_sandboxes) {
			sl_errf(err, errlen,
				"%s (pinned by an earlier sluiced) holds sandbox id %u, beyond "
				"--max-sandboxes %u: start sluiced with --max-sandboxes %u or more",
				pin, top, b->max_sandboxes, top + 1);
			e = -ENOSPC;
			break;
		}
	}
	for (int i = 0; !e && i < n; i++)
		if (unlink(mig[i].path) == -1) {
			e = -errno;
			sl_errf(err, errlen, "unpinning %s failed: %s", mig[i].path,
				strerror(errno));
			/* the ones unpinned already are pinned back by migrate_undo() */
		}
	if (e) {
		for (int i = 0; i < n; i++)
			if (access(mig[i].path, F_OK))
				bpf_obj_pin(mig[i].old_fd, mig[i].path);
		for (int i = 0; i < n; i++)
			close(mig[i].old_fd);
		n = 0;
	}
	*nmig = n;
	return e;
}

/* Puts the old maps back under their pins (a start that failed after migrate_prepare()). */
static void migrate_undo(struct sl_migration *mig, int nmig)
{
	for (int i = 0; i < nmig; i++) {
		unlink(mig[i].path);
		if (bpf_obj_pin(mig[i].old_fd, mig[i].path))
			sl_err("pinning %s back failed: %s", mig[i].path, strerror(errno));
	}
}

/* Copies every entry of the old map of @m into the new one. */
static int migrate_copy(struct sl_bpf *b, const struct sl_migration *m)
{
	const struct bpf_map_info *o = &m->old;
	int to = bpf_map__fd(m->map), percpu, e = 0;
	uint32_t vsz = o->value_size, n = 0;
	unsigned char *key = NULL, *next = NULL, *val = NULL;
	void *prev = NULL;

	percpu = o->type == BPF_MAP_TYPE_PERCPU_ARRAY || o->type == BPF_MAP_TYPE_PERCPU_HASH ||
		 o->type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	if (percpu)
		vsz = ((vsz + 7) & ~7u) * (uint32_t)b->ncpus;
	key = calloc(1, o->key_size);
	next = calloc(1, o->key_size);
	val = calloc(1, vsz < 4 ? 4 : vsz);
	if (!key || !next || !val) {
		e = -ENOMEM;
		goto cleanup;
	}
	if (o->type == BPF_MAP_TYPE_ARRAY || o->type == BPF_MAP_TYPE_PERCPU_ARRAY) {
		uint32_t top = o->max_entries < bpf_map__max_entries(m->map) ?
				       o->max_entries :
				       bpf_map__max_entries(m->map);

		for (uint32_t i = 0; i < top && !e; i++)
			if (!bpf_map_lookup_elem(m->old_fd, &i, val) &&
			    bpf_map_update_elem(to, &i, val, BPF_ANY))
				e = -errno;
		n = top;
		goto cleanup;
	}
	while (!e && !bpf_map_get_next_key(m->old_fd, prev, next)) {
		memcpy(key, next, o->key_size);
		prev = key;
		if (bpf_map_lookup_elem(m->old_fd, key, val))
			continue;
		if (o->type == BPF_MAP_TYPE_HASH_OF_MAPS || o->type == BPF_MAP_TYPE_ARRAY_OF_MAPS) {
			/* A lookup gives the inner map's id, an update wants an fd. */
			uint32_t id;
			int fd;

			memcpy(&id, val, 4);
			fd = bpf_map_get_fd_by_id(id);
			if (fd < 0)
				continue; /* gone meanwhile */
			if (bpf_map_update_elem(to, key, &fd, BPF_ANY))
				e = -errno;
			close(fd);
		} else if (bpf_map_update_elem(to, key, val, BPF_ANY)) {
			e = -errno;
		}
		n++;
	}
cleanup:
	if (e)
		sl_err("migrating %s failed: %s", m->path, strerror(-e));
	else
		sl_info("%s: %u entries moved from a map of %u entries to one of %u", m->path, n,
			o->max_entries, bpf_map__max_entries(m->map));
	free(key);
	free(next);
	free(val);
	return e;
}

static uint32_t bank_ix(const struct sl_bpf *b, uint32_t rules_id)
{
	uint32_t id = rules_id & ~SL_RULES_BANK;

	return id < b->max_sandboxes ? 2 * id + !!(rules_id & SL_RULES_BANK) : 0;
}

/* What count_banks() counts in. */
struct bank_count {
	struct sl_bpf *b;
	int trie;
	uint32_t full; /* the prefix length of a whole address */
};

static int count_bank(int fd, const void *key, const void *val, void *arg)
{
	struct bank_count *c = arg;
	uint32_t id, plen;

	(void)fd;
	(void)val;
	memcpy(&plen, key, 4);
	memcpy(&id, (const unsigned char *)key + 4, 4);
	c->b->bank_n[bank_ix(c->b, id)]++;
	if (c->trie && plen == c->full)
		c->b->trie_hosts++;
	return 0;
}

/* Counts the entries of each rule bank in rule map @map (once, at open), and the whole
 * addresses in a trie: one walk in batches (map_each()). */
static void count_banks(struct sl_bpf *b, struct bpf_map *map, size_t key_size)
{
	struct bank_count c = { b, bpf_map__type(map) == BPF_MAP_TYPE_LPM_TRIE,
				32 + 8 * (uint32_t)(key_size - 8) };

	int r = map_each(bpf_map__fd(map), key_size, sizeof(struct sl_rule), count_bank, &c);

	if (r)
		sl_warn("counting the entries of %s failed: %s", bpf_map__name(map), strerror(-r));
}

uint32_t sl_bpf_max_sandboxes(const struct sl_bpf *b)
{
	return b->max_sandboxes;
}

uint32_t sl_bpf_max_rules(const struct sl_bpf *b)
{
	return b->max_rules;
}

struct sl_bpf *sl_bpf_open(const struct sl_bpf_opts *opts, char *err, size_t errlen)
{
	LIBBPF_OPTS(bpf_object_open_opts, oopts, .pin_root_path = opts->pin_dir);
	struct sl_migration mig[SL_MAX_MIGRATIONS];
	struct bpf_program *prog;
	struct sl_bpf *b;
	char path[PATH_MAX];
	int r, nmig = 0;

	libbpf_set_print(libbpf_print);
	b = calloc(1, sizeof(*b));
	if (!b) {
		sl_errf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(b->pin_dir, sizeof(b->pin_dir), "%s", opts->pin_dir);
	b->max_rules = opts->max_rules ? opts->max_rules : SL_MAX_RULES;
	b->max_sandboxes = opts->max_sandboxes ? opts->max_sandboxes : SL_MAX_SANDBOXES;
	b->px_fd = malloc(b->max_sandboxes * sizeof(*b->px_fd));
	b->px_state = calloc(b->max_sandboxes, 1);
	pthread_mutex_init(&b->px_mu, NULL);
	pthread_mutex_init(&b->px_batch, NULL);
	pthread_mutex_init(&b->ls_mu, NULL);
	b->bank_n = calloc(2 * (size_t)b->max_sandboxes, sizeof(*b->bank_n));
	b->sni_held = calloc(b->max_sandboxes, 1);
	b->ls_n = calloc(LPORT_SLOTS, sizeof(*b->ls_n));
	if (!b->px_fd || !b->px_state || !b->bank_n || !b->sni_held || !b->ls_n) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < b->max_sandboxes; i++)
		b->px_fd[i] = -1;
	b->ncpus = libbpf_num_possible_cpus();
	if (b->ncpus <= 0) {
		sl_errf(err, errlen, "cannot count possible CPUs");
		goto fail;
	}
	if (ensure_bpffs(b->pin_dir, err, errlen))
		goto fail;
	snprintf(path, sizeof(path), "%s/sandboxes", b->pin_dir);
	r = mkdir_p(path, 0700);
	if (!r) {
		snprintf(path, sizeof(path), "%s/progs", b->pin_dir);
		r = mkdir_p(path, 0700);
	}
	if (r) {
		sl_errf(err, errlen, "creating %s failed: %s", path, strerror(-r));
		goto fail;
	}
	drop_stale_pin(b->pin_dir, "sl_proxied", BPF_MAP_TYPE_HASH_OF_MAPS, sizeof(__u32),
		       sizeof(__u32),
		       "intercepted connections not yet accepted by the proxy are closed");
	b->skel = sluice_bpf__open_opts(&oopts);
	if (!b->skel) {
		sl_errf(err, errlen, "opening the BPF object failed: %s", strerror(errno));
		goto fail;
	}
	b->skel->rodata->sl_event_limit = opts->event_limit;
	/* Where the kernel does not tell cgroup_skb programs their namespace, the branch that
	 * asks is dead code the verifier never meets, and listeners get keys of cookie 0 too. */
	b->skb_netns = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SKB, BPF_FUNC_get_netns_cookie,
					       NULL) == 1;
	b->skel->rodata->sl_skb_netns = (__u8)b->skb_netns;
	setup_unix_hooks(b);
	size_maps(b);
	if (migrate_prepare(b, mig, &nmig, err, errlen))
		goto fail;
	r = sluice_bpf__load(b->skel);
	if (r) {
		sl_errf(err, errlen,
			"loading the BPF programs failed: %s (maps pinned under %s by an "
			"incompatible sluiced? see the log)",
			strerror(-r), b->pin_dir);
		goto fail;
	}
	/* The new maps are filled before any link moves to the new programs (sl_bpf_attach()):
	 * until then the old programs decide from the old maps, which hold the same. */
	for (int i = 0; i < nmig; i++)
		if (migrate_copy(b, &mig[i])) {
			sl_errf(err, errlen, "migrating %s to the new size failed (see the log)",
				mig[i].path);
			goto fail;
		}
	for (int i = 0; i < nmig; i++)
		close(mig[i].old_fd);
	nmig = 0;
	count_banks(b, b->skel->maps.sl_rules4, sizeof(struct sl_key4));
	count_banks(b, b->skel->maps.sl_rules6, sizeof(struct sl_key6));
	count_banks(b, b->skel->maps.sl_hosts4, sizeof(struct sl_key4));
	count_banks(b, b->skel->maps.sl_hosts6, sizeof(struct sl_key6));
	if (map_each(bpf_map__fd(b->skel->maps.sl_listeners), sizeof(struct sl_listener_key),
		     sizeof(__u32), listener_upgrade, b)) {
		sl_errf(err, errlen, "upgrading the pinned sl_listeners failed: %s",
			strerror(errno));
		goto fail;
	}
	if (lport_rebuild(b)) {
		sl_errf(err, errlen, "indexing the ports of sl_listeners failed: %s",
			strerror(errno));
		goto fail;
	}
	if (map_each(bpf_map__fd(b->skel->maps.sl_sni_names), sizeof(struct sl_sni_key),
		     sizeof(struct sl_sni_val), sni_mark_held, b)) {
		sl_errf(err, errlen, "reading the pinned sl_sni_names failed: %s", strerror(errno));
		goto fail;
	}
	bpf_object__for_each_program(prog, b->skel->obj) {
		snprintf(path, sizeof(path), "%s/progs/%s", b->pin_dir, bpf_program__name(prog));
		unlink(path);
		if (!bpf_program__autoload(prog))
			continue;
		r = bpf_program__pin(prog, path);
		if (r) {
			sl_errf(err, errlen, "pinning %s failed: %s", path, strerror(-r));
			goto fail;
		}
	}
	/* The kernel SNI check (bpf/sni.h) runs on the sockets of the pinned sockhash: the
	 * map keeps the program, so it outlives sluiced like the cgroup links do; a restarted
	 * sluiced replaces it. Sockets already in the map keep the program they entered with. */
	if (bpf_prog_attach(bpf_program__fd(b->skel->progs.sl_sni_msg),
			    bpf_map__fd(b->skel->maps.sl_sni_socks), BPF_SK_MSG_VERDICT, 0)) {
		sl_errf(err, errlen, "attaching the SNI check to its sockhash failed: %s",
			strerror(errno));
		goto fail;
	}
	return b;
fail:
	migrate_undo(mig, nmig);
	for (int i = 0; i < nmig; i++)
		close(mig[i].old_fd);
	sl_bpf_close(b);
	return NULL;
}

void sl_bpf_close(struct sl_bpf *b)
{
	if (!b)
		return;
	if (b->skel && b->px_state) {
		/* Removed sandboxes' maps go, and those made for adds that never finished. */
		for (uint32_t i = 1; i < b->max_sandboxes; i++)
			if (b->px_state[i] == PX_FRESH)
				b->px_state[i] = PX_STALE;
		sl_bpf_proxied_reap(b);
	}
	for (uint32_t i = 0; b->px_fd && i < b->max_sandboxes; i++)
		if (b->px_fd[i] >= 0)
			close(b->px_fd[i]);
	free(b->px_fd);
	free(b->px_state);
	pthread_mutex_destroy(&b->px_mu);
	pthread_mutex_destroy(&b->px_batch);
	pthread_mutex_destroy(&b->ls_mu);
	free(b->bank_n);
	free(b->ls_n);
	free(b->sni_held);
	free(b->snap);
	ring_buffer__free(b->rb);
	sluice_bpf__destroy(b->skel);
	free(b);
}

/* The cgroup a link is attached to, 0 if the cgroup is gone (the link is then defunct). */
static uint64_t link_cgroup(int fd)
{
	struct bpf_link_info info = { 0 };
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len) || info.type != BPF_LINK_TYPE_CGROUP)
		return 0;
	return info.cgroup.cgroup_id;
}

static void unpin_link(const char *path)
{
	int fd = bpf_obj_get(path);

	if (fd >= 0) {
		bpf_link_detach(fd); /* effective even if someone else holds the link open */
		close(fd);
	}
	unlink(path);
}

int sl_bpf_attach(struct sl_bpf *b, const char *name, const char *cgroup_path, uint64_t cgid,
		  int intercept, int *fresh)
{
	struct bpf_program *prog;
	char dir[PATH_MAX], path[PATH_MAX + 64];
	char created[32][PATH_MAX + 64];
	int ncreated = 0, cgfd, err = 0;

	if (fresh)
		*fresh = 0;
	snprintf(dir, sizeof(dir), "%s/sandboxes/%s", b->pin_dir, name);
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return -errno;
	cgfd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd == -1)
		return -errno;

	bpf_object__for_each_program(prog, b->skel->obj) {
		struct bpf_link *link;

		snprintf(path, sizeof(path), "%s/%s", dir, bpf_program__name(prog));
		if (!bpf_program__autoload(prog))
			continue; /* not supported by this kernel (the UNIX hooks) */
		if (prog == b->skel->progs.sl_sni_msg)
			continue; /* on the sockhash, not a cgroup */
		if (!intercept && prog == b->skel->progs.sl_sockops) {
			if (!access(path, F_OK))
				unpin_link(path);
			continue;
		}
		link = access(path, F_OK) ? NULL : bpf_link__open(path);
		if (link) {
			if (link_cgroup(bpf_link__fd(link)) == cgid) {
				err = bpf_link__update_program(link, prog);
				bpf_link__destroy(link); /* closes our fd; the pin keeps it */
				if (err) {
					sl_err("updating link %s failed: %s", path, strerror(-err));
					goto cleanup;
				}
				continue;
			}
			/* Attached to a cgroup that no longer exists (or another one). */
			bpf_link__destroy(link);
			unpin_link(path);
		}
		link = bpf_program__attach_cgroup(prog, cgfd);
		if (!link) {
			err = -errno;
			sl_err("attaching %s to %s failed: %s", bpf_program__name(prog),
			       cgroup_path, strerror(-err));
			goto cleanup;
		}
		/* bpf_obj_pin(), not bpf_link__pin(): that one also checks the directory is on a
		 * bpffs and makes it, two syscalls per link of every add (made above). */
		err = bpf_obj_pin(bpf_link__fd(link), path) ? -errno : 0;
		bpf_link__destroy(link);
		if (err) {
			sl_err("pinning %s failed: %s", path, strerror(-err));
			goto cleanup;
		}
		if (ncreated < (int)(sizeof(created) / sizeof(created[0])))
			snprintf(created[ncreated++], sizeof(created[0]), "%s", path);
		if (fresh && prog == b->skel->progs.sl_egress)
			*fresh = 1;
	}
cleanup:
	if (err)
		for (int i = 0; i < ncreated; i++)
			unpin_link(created[i]);
	close(cgfd);
	return err;
}

int sl_bpf_detach(struct sl_bpf *b, const char *name)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sandboxes/%s", b->pin_dir, name);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unpin_link(path);
	}
	closedir(d);
	if (rmdir(dir) == -1 && errno != ENOENT)
		return -errno;
	return 0;
}

void sl_bpf_pinned_sandboxes(struct sl_bpf *b, void (*cb)(const char *name, void *arg), void *arg)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sandboxes", b->pin_dir);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			cb(de->d_name, arg);
	closedir(d);
}

int sl_bpf_set_sandbox(struct sl_bpf *b, uint64_t cgid, const struct sl_sandbox *sb)
{
	if (bpf_map__update_elem(b->skel->maps.sl_sandboxes, &cgid, sizeof(cgid), sb, sizeof(*sb),
				 BPF_ANY))
		return -errno;
	return 0;
}

int sl_bpf_get_sandbox(struct sl_bpf *b, uint64_t cgid, struct sl_sandbox *sb)
{
	if (bpf_map__lookup_elem(b->skel->maps.sl_sandboxes, &cgid, sizeof(cgid), sb, sizeof(*sb),
				 0))
		return -errno;
	return 0;
}

int sl_bpf_del_sandbox(struct sl_bpf *b, uint64_t cgid)
{
	if (bpf_map__delete_elem(b->skel->maps.sl_sandboxes, &cgid, sizeof(cgid), 0) &&
	    errno != ENOENT)
		return -errno;
	return 0;
}

static void kentry_key4(uint32_t sandbox_id, const struct sl_kentry *e, struct sl_key4 *k)
{
	memset(k, 0, sizeof(*k));
	k->prefixlen = 32 + e->plen;
	k->sandbox_id = sandbox_id;
	memcpy(k->addr, e->addr, 4);
}

static void kentry_key6(uint32_t sandbox_id, const struct sl_kentry *e, struct sl_key6 *k)
{
	memset(k, 0, sizeof(*k));
	k->prefixlen = 32 + e->plen;
	k->sandbox_id = sandbox_id;
	memcpy(k->addr, e->addr, 16);
}

/* A rule map key of either family. */
union rule_key {
	struct sl_key4 k4;
	struct sl_key6 k6;
};

/* @e's key under @sandbox_id in *@k; returns its size. */
static size_t kentry_key(uint32_t sandbox_id, const struct sl_kentry *e, union rule_key *k)
{
	if (e->family == AF_INET) {
		kentry_key4(sandbox_id, e, &k->k4);
		return sizeof(k->k4);
	}
	kentry_key6(sandbox_id, e, &k->k6);
	return sizeof(k->k6);
}

/* The prefix length of a whole address of @family. */
static uint8_t full_plen(uint8_t family)
{
	return family == AF_INET ? 32 : 128;
}

/* Whether @plen of @family is a whole address: such an entry lives in the address hash of its
 * family, a shorter prefix in the trie (bpf/verdict.h). */
static int is_host(uint8_t family, uint8_t plen)
{
	return plen == full_plen(family);
}

/* The kernel map of a rule entry of @family and prefix length @plen. */
static struct bpf_map *rule_map(const struct sl_bpf *b, uint8_t family, uint8_t plen)
{
	if (family == AF_INET)
		return is_host(family, plen) ? b->skel->maps.sl_hosts4 : b->skel->maps.sl_rules4;
	return is_host(family, plen) ? b->skel->maps.sl_hosts6 : b->skel->maps.sl_rules6;
}

static int cmp_key4(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct sl_key4));
}

static int cmp_key6(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct sl_key6));
}

/* The rule banks a prune() is about: one (@id), or every one marked in @sel (by bank_ix()). */
struct banks {
	const struct sl_bpf *b;
	uint32_t id;
	const uint8_t *sel;
};

static int in_banks(const struct banks *w, uint32_t rules_id)
{
	uint32_t id = rules_id & ~SL_RULES_BANK;

	if (!w->sel)
		return rules_id == w->id;
	return id && id < w->b->max_sandboxes && w->sel[bank_ix(w->b, rules_id)];
}

/* Deletes @n keys of @ksz bytes from map @fd, in batches (one system call for thousands);
 * a key gone meanwhile is skipped. Key by key where the kernel has no batch deletion. Returns
 * the number deleted or -errno. */
static int delete_keys(int fd, const unsigned char *keys, size_t n, size_t ksz)
{
	size_t i = 0;
	int deleted = 0, batch = 1;

	while (i < n) {
		__u32 count = n - i > 4096 ? 4096 : (__u32)(n - i);

		if (batch && !bpf_map_delete_batch(fd, keys + i * ksz, &count, NULL)) {
			deleted += (int)count;
			i += count;
			continue;
		}
		if (batch && (errno == EINVAL || errno == EOPNOTSUPP || errno == 524) && !count) {
			batch = 0; /* ENOTSUPP (524): this map or kernel has no batch deletion */
			continue;
		}
		if (batch) {
			deleted += (int)count;
			i += count; /* the key it stopped at follows */
		} else {
			if (!bpf_map_delete_elem(fd, keys + i * ksz)) {
				deleted++;
				i++;
				continue;
			}
		}
		if (errno != ENOENT)
			return -errno;
		i++;
	}
	return deleted;
}

/* What prune() collects on its walk. */
struct prune_walk {
	const struct banks *w;
	const void *keep;
	size_t nkeep, ksz, n, cap;
	unsigned char *stale;
};

static int prune_one(int fd, const void *key, const void *val, void *arg)
{
	struct prune_walk *p = arg;
	uint32_t id;

	(void)fd;
	(void)val;
	memcpy(&id, (const unsigned char *)key + 4, 4);
	if (!in_banks(p->w, id))
		return 0;
	if (p->nkeep && bsearch(key, p->keep, p->nkeep, p->ksz,
				p->ksz == sizeof(struct sl_key4) ? cmp_key4 : cmp_key6))
		return 0;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		unsigned char *s = realloc(p->stale, cap * p->ksz);

		if (!s)
			return -ENOMEM;
		p->stale = s;
		p->cap = cap;
	}
	memcpy(p->stale + p->n++ * p->ksz, key, p->ksz);
	return 0;
}

/* Deletes the keys of the banks @w in rule map @map that @keep (sorted by memcmp) does not
 * contain: one walk of the whole map in batches (map_each(): a map of 1,000,000 entries
 * walked key by key took a system call each), whatever the number of banks. The keys are
 * collected first, then deleted in batches. Returns the number deleted or -errno. */
static int prune(struct bpf_map *map, size_t key_size, const struct banks *w, const void *keep,
		 size_t nkeep)
{
	struct prune_walk p = { w, keep, nkeep, key_size, 0, 0, NULL };
	int fd = bpf_map__fd(map), r;

	r = map_each(fd, key_size, bpf_map__value_size(map), prune_one, &p);
	if (!r)
		r = delete_keys(fd, p.stale, p.n, key_size);
	free(p.stale);
	return r;
}

/* -errno of a failed write of a rule entry: a full map is -ENOSPC whichever map it is (a trie
 * says ENOSPC, a hash E2BIG). */
static int rule_errno(void)
{
	return errno == E2BIG ? -ENOSPC : -errno;
}

/* Writes one rule entry, counting it in its bank when it is new. @likely_exists: try it as an
 * update of an existing entry first (a resolved address refreshed: one syscall). */
static int put_rule(struct sl_bpf *b, struct bpf_map *map, const void *key, size_t key_size,
		    const struct sl_rule *val, uint32_t rules_id, int likely_exists, int *added)
{
	*added = 0;
	if (likely_exists) {
		if (!bpf_map__update_elem(map, key, key_size, val, sizeof(*val), BPF_EXIST))
			return 0;
		if (errno != ENOENT)
			return rule_errno();
	}
	if (!bpf_map__update_elem(map, key, key_size, val, sizeof(*val), BPF_NOEXIST)) {
		b->bank_n[bank_ix(b, rules_id)]++;
		*added = 1;
		return 0;
	}
	if (errno != EEXIST)
		return rule_errno();
	if (bpf_map__update_elem(map, key, key_size, val, sizeof(*val), BPF_EXIST))
		return rule_errno();
	return 0;
}

/*
 * Writes the entries of @ents of @family that are whole addresses (@hosts) or shorter
 * prefixes (!@hosts) into an empty bank of their map (rule_map()) with batched updates
 * (BPF_MAP_UPDATE_BATCH: one syscall per 8,192 entries instead of one each). Returns 0,
 * -EOPNOTSUPP when the kernel has no batched update for the map (nothing written), or -errno
 * (what was written before the error is counted in the bank).
 */
static int put_batch(struct sl_bpf *b, uint32_t sandbox_id, uint8_t family, int hosts,
		     const struct sl_kentry *ents, size_t n)
{
	struct bpf_map *map = rule_map(b, family, hosts ? full_plen(family) : 0);
	/* elem_flags 0: the generic batch takes no BPF_NOEXIST, and the bank is empty anyway */
	LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = 0);
	size_t ksz = family == AF_INET ? sizeof(struct sl_key4) : sizeof(struct sl_key6);
	size_t chunk = 8192, i = 0;
	unsigned char *keys = malloc(chunk * ksz);
	struct sl_rule *vals = malloc(chunk * sizeof(*vals));
	int err = 0;

	if (!keys || !vals) {
		err = -ENOMEM;
		goto cleanup;
	}
	while (!err && i < n) {
		__u32 count = 0;

		for (; i < n && count < chunk; i++) {
			if (ents[i].family != family || is_host(family, ents[i].plen) != !!hosts)
				continue;
			if (family == AF_INET)
				kentry_key4(sandbox_id, &ents[i],
					    (struct sl_key4 *)(keys + count * ksz));
			else
				kentry_key6(sandbox_id, &ents[i],
					    (struct sl_key6 *)(keys + count * ksz));
			vals[count++] = ents[i].val;
		}
		if (!count)
			break;
		{
			__u32 done = count;

			if (bpf_map_update_batch(bpf_map__fd(map), keys, vals, &done, &bo)) {
				err = rule_errno();
				/* 524 is the kernel's ENOTSUPP: no batch op for this map type */
				if (err == -EINVAL || err == -524 || err == -EOPNOTSUPP)
					err = done ? -EIO : -EOPNOTSUPP;
				else
					b->bank_n[bank_ix(b, sandbox_id)] += done;
			} else {
				b->bank_n[bank_ix(b, sandbox_id)] += count;
			}
		}
	}
cleanup:
	free(keys);
	free(vals);
	return err;
}

/* prune() of the four rule maps: @k4 and @k6 are the IPv4 and IPv6 keys to keep (sorted),
 * whichever map each is in. Returns the number deleted or -errno. */
static int prune_rules(struct sl_bpf *b, const struct banks *w, const struct sl_key4 *k4, size_t n4,
		       const struct sl_key6 *k6, size_t n6)
{
	struct {
		struct bpf_map *map;
		size_t ksz, nkeep;
		const void *keep;
	} maps[] = {
		{ b->skel->maps.sl_hosts4, sizeof(*k4), n4, k4 },
		{ b->skel->maps.sl_rules4, sizeof(*k4), n4, k4 },
		{ b->skel->maps.sl_hosts6, sizeof(*k6), n6, k6 },
		{ b->skel->maps.sl_rules6, sizeof(*k6), n6, k6 },
	};
	int total = 0;

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		int r = prune(maps[i].map, maps[i].ksz, w, maps[i].keep, maps[i].nkeep);

		if (r < 0)
			return r;
		total += r;
	}
	return total;
}

int sl_bpf_sync_rules(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *ents, size_t n)
{
	struct sl_key4 *k4 = calloc(n ? n : 1, sizeof(*k4));
	struct sl_key6 *k6 = calloc(n ? n : 1, sizeof(*k6));
	uint32_t *bank = &b->bank_n[bank_ix(b, sandbox_id)];
	struct banks one = { b, sandbox_id, NULL };
	size_t n4 = 0, n6 = 0;
	int err = 0, r;

	if (!k4 || !k6) {
		err = -ENOMEM;
		goto cleanup;
	}
	/* An empty bank (a new sandbox, a switch's other bank): every entry is new. */
	if (!*bank && n >= 64) {
		r = put_batch(b, sandbox_id, AF_INET, 1, ents, n);
		if (!r)
			r = put_batch(b, sandbox_id, AF_INET, 0, ents, n);
		if (!r)
			r = put_batch(b, sandbox_id, AF_INET6, 1, ents, n);
		if (!r)
			r = put_batch(b, sandbox_id, AF_INET6, 0, ents, n);
		if (r != -EOPNOTSUPP) {
			err = r;
			goto cleanup;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct sl_kentry *e = &ents[i];
		int added;

		if (e->family == AF_INET) {
			kentry_key4(sandbox_id, e, &k4[n4]);
			r = put_rule(b, rule_map(b, e->family, e->plen), &k4[n4++], sizeof(*k4),
				     &e->val, sandbox_id, 0, &added);
		} else {
			kentry_key6(sandbox_id, e, &k6[n6]);
			r = put_rule(b, rule_map(b, e->family, e->plen), &k6[n6++], sizeof(*k6),
				     &e->val, sandbox_id, 0, &added);
		}
		if (r) {
			err = r;
			goto cleanup;
		}
	}
	/* Every key of @ents is in the bank now; more entries than that: some are stale, and
	 * only then is the whole map walked (a new sandbox's or a cleared bank's sync is not). */
	if (*bank <= n4 + n6)
		goto cleanup;
	qsort(k4, n4, sizeof(*k4), cmp_key4);
	qsort(k6, n6, sizeof(*k6), cmp_key6);
	r = prune_rules(b, &one, k4, n4, k6, n6);
	if (r >= 0)
		*bank -= *bank > (uint32_t)r ? (uint32_t)r : *bank;
	else
		err = r;
cleanup:
	free(k4);
	free(k6);
	return err;
}

int sl_bpf_drop_trie_hosts(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *ents,
			   size_t n)
{
	uint32_t *bank = &b->bank_n[bank_ix(b, sandbox_id)];

	for (size_t i = 0; i < n && b->trie_hosts; i++) {
		const struct sl_kentry *e = &ents[i];
		union rule_key key;
		size_t ksz;
		int r;

		if (!is_host(e->family, e->plen))
			continue;
		ksz = kentry_key(sandbox_id, e, &key);
		r = bpf_map__delete_elem(rule_map(b, e->family, 0), &key, ksz, 0); /* the trie */
		if (r && errno != ENOENT)
			return -errno;
		if (!r) {
			b->trie_hosts--;
			if (*bank)
				(*bank)--;
		}
	}
	return 0;
}

int sl_bpf_clear_rules(struct sl_bpf *b, const uint32_t *rules_ids, size_t n)
{
	uint8_t *sel = calloc(2 * (size_t)b->max_sandboxes, 1);
	struct banks w = { b, 0, sel };
	size_t todo = 0;
	int r;

	if (!sel)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint32_t id = rules_ids[i] & ~SL_RULES_BANK;

		if (id && id < b->max_sandboxes && b->bank_n[bank_ix(b, rules_ids[i])]) {
			sel[bank_ix(b, rules_ids[i])] = 1;
			todo++;
		}
	}
	r = todo ? prune_rules(b, &w, NULL, 0, NULL, 0) : 0;
	for (size_t i = 0; r >= 0 && i < 2 * (size_t)b->max_sandboxes; i++)
		if (sel[i])
			b->bank_n[i] = 0;
	free(sel);
	return r < 0 ? r : 0;
}

int sl_bpf_set_rule(struct sl_bpf *b, uint32_t sandbox_id, const struct sl_kentry *e, int fresh)
{
	struct bpf_map *map = rule_map(b, e->family, e->plen);
	uint32_t *bank = &b->bank_n[bank_ix(b, sandbox_id)];
	union rule_key key;
	size_t ksz = kentry_key(sandbox_id, e, &key);
	int added;

	if (!e->val.n) {
		if (!bpf_map__delete_elem(map, &key, ksz, 0)) {
			if (*bank)
				(*bank)--;
		} else if (errno != ENOENT) {
			return -errno;
		}
		return 0;
	}
	return put_rule(b, map, &key, ksz, &e->val, sandbox_id, !fresh, &added);
}

/* ---- batched writes (struct sl_kbatch) ---- */

static int sni_key(struct sl_sni_key *k, uint32_t sandbox_id, uint8_t family, const uint8_t *addr,
		   const char *name);

#define KB_MAX 512 /* staged entries per map */

/* The staged writes of one map: keys and values side by side, as BPF_MAP_UPDATE_BATCH
 * takes them, and what the commit needs of each. */
struct kb_map {
	size_t ksz, vsz, n;
	unsigned char *keys, *vals;
	uint64_t *tags; /* the tags that wrote each entry */
	uint8_t *del; /* staged as a deletion */
	uint32_t *bank; /* rule maps: the bank counted when the entry is created, or -1 */
};

struct sl_kbatch {
	struct sl_bpf *b;
	unsigned tag;
	struct kb_map m[5]; /* by kb_ix(): sl_rules4, sl_rules6, sl_sni_names, sl_hosts4, sl_hosts6 */
};

enum { KB_RULES4, KB_RULES6, KB_SNI, KB_HOSTS4, KB_HOSTS6, KB_NMAPS };

/* The staging slot of a rule entry: that of its map (rule_map()). */
static int kb_ix(uint8_t family, uint8_t plen)
{
	if (family == AF_INET)
		return is_host(family, plen) ? KB_HOSTS4 : KB_RULES4;
	return is_host(family, plen) ? KB_HOSTS6 : KB_RULES6;
}

static int kb_map_init(struct kb_map *m, size_t ksz, size_t vsz)
{
	m->ksz = ksz;
	m->vsz = vsz;
	m->keys = calloc(KB_MAX, ksz);
	m->vals = calloc(KB_MAX, vsz);
	m->tags = calloc(KB_MAX, sizeof(*m->tags));
	m->del = calloc(KB_MAX, 1);
	m->bank = calloc(KB_MAX, sizeof(*m->bank));
	return m->keys && m->vals && m->tags && m->del && m->bank ? 0 : -ENOMEM;
}

struct sl_kbatch *sl_kbatch_new(struct sl_bpf *b)
{
	struct sl_kbatch *kb = calloc(1, sizeof(*kb));

	if (!kb)
		return NULL;
	kb->b = b;
	if (kb_map_init(&kb->m[KB_RULES4], sizeof(struct sl_key4), sizeof(struct sl_rule)) ||
	    kb_map_init(&kb->m[KB_RULES6], sizeof(struct sl_key6), sizeof(struct sl_rule)) ||
	    kb_map_init(&kb->m[KB_SNI], sizeof(struct sl_sni_key), sizeof(struct sl_sni_val)) ||
	    kb_map_init(&kb->m[KB_HOSTS4], sizeof(struct sl_key4), sizeof(struct sl_rule)) ||
	    kb_map_init(&kb->m[KB_HOSTS6], sizeof(struct sl_key6), sizeof(struct sl_rule))) {
		sl_kbatch_free(kb);
		return NULL;
	}
	return kb;
}

void sl_kbatch_free(struct sl_kbatch *kb)
{
	if (!kb)
		return;
	for (int i = 0; i < KB_NMAPS; i++) {
		free(kb->m[i].keys);
		free(kb->m[i].vals);
		free(kb->m[i].tags);
		free(kb->m[i].del);
		free(kb->m[i].bank);
	}
	free(kb);
}

void sl_kbatch_tag(struct sl_kbatch *kb, unsigned tag)
{
	kb->tag = tag % SL_KBATCH_TAGS;
}

static ssize_t kb_find(const struct kb_map *m, const void *key)
{
	for (size_t i = 0; i < m->n; i++)
		if (!memcmp(m->keys + i * m->ksz, key, m->ksz))
			return (ssize_t)i;
	return -1;
}

/* Stages @key = @val (NULL: a deletion) in @m when its key is staged already, or when @stage
 * and there is room. Returns 1 if staged, 0 if the caller writes it at once. */
static int kb_put(struct sl_kbatch *kb, struct kb_map *m, const void *key, const void *val,
		  int stage, uint32_t bank)
{
	ssize_t i = kb_find(m, key);

	if (i < 0) {
		if (!stage || m->n == KB_MAX)
			return 0;
		i = (ssize_t)m->n++;
		memcpy(m->keys + i * m->ksz, key, m->ksz);
		m->tags[i] = 0;
		m->bank[i] = bank;
	}
	m->tags[i] |= 1ULL << kb->tag;
	m->del[i] = !val;
	if (val)
		memcpy(m->vals + i * m->vsz, val, m->vsz);
	return 1;
}

int sl_kbatch_rule(struct sl_kbatch *kb, struct sl_bpf *b, uint32_t sandbox_id,
		   const struct sl_kentry *e, int fresh)
{
	union rule_key key;

	if (!kb)
		return sl_bpf_set_rule(b, sandbox_id, e, fresh);
	kentry_key(sandbox_id, e, &key);
	/* Only a creation is staged: it counts in the bank when written. */
	if (kb_put(kb, &kb->m[kb_ix(e->family, e->plen)], &key, e->val.n ? &e->val : NULL,
		   fresh && e->val.n, bank_ix(b, sandbox_id)))
		return 0;
	return sl_bpf_set_rule(b, sandbox_id, e, fresh);
}

int sl_kbatch_sni(struct sl_kbatch *kb, struct sl_bpf *b, uint32_t sandbox_id, uint8_t family,
		  const uint8_t *addr, const char *name, const struct sl_sni_val *v)
{
	struct sl_sni_key k;

	if (!kb || sni_key(&k, sandbox_id, family, addr, name))
		return sl_bpf_set_sni_name(b, sandbox_id, family, addr, name, v);
	if (v && v->n)
		sni_held_set(b, sandbox_id); /* before it can be in the map */
	if (kb_put(kb, &kb->m[KB_SNI], &k, v && v->n ? v : NULL, v && v->n, UINT32_MAX))
		return 0;
	return sl_bpf_set_sni_name(b, sandbox_id, family, addr, name, v);
}

static void kb_fail(const struct kb_map *m, size_t i, int e, int err[SL_KBATCH_TAGS])
{
	for (unsigned t = 0; t < SL_KBATCH_TAGS; t++)
		if (m->tags[i] >> t & 1 && !err[t])
			err[t] = e;
}

/* Writes @m's staged entries into @fd: the updates in batches, then the deletions. */
static void kb_commit_map(struct sl_kbatch *kb, struct kb_map *m, int fd, int err[SL_KBATCH_TAGS])
{
	/* elem_flags 0: the generic batch takes no BPF_NOEXIST */
	LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = 0);
	size_t w = 0;

	/* Deletions to the end, written one by one (rare: a key staged, then emptied). */
	for (size_t i = 0; i < m->n; i++) {
		if (m->del[i]) {
			if (bpf_map_delete_elem(fd, m->keys + i * m->ksz) == 0) {
				if (m->bank[i] != UINT32_MAX && kb->b->bank_n[m->bank[i]])
					kb->b->bank_n[m->bank[i]]--;
			} else if (errno != ENOENT) {
				kb_fail(m, i, -errno, err);
			}
			continue;
		}
		if (w != i) {
			memcpy(m->keys + w * m->ksz, m->keys + i * m->ksz, m->ksz);
			memcpy(m->vals + w * m->vsz, m->vals + i * m->vsz, m->vsz);
			m->tags[w] = m->tags[i];
			m->bank[w] = m->bank[i];
		}
		w++;
	}
	for (size_t i = 0; i < w;) {
		__u32 count = (__u32)(w - i);
		int r = bpf_map_update_batch(fd, m->keys + i * m->ksz, m->vals + i * m->vsz, &count,
					     &bo);
		int e = r ? rule_errno() : 0;

		if (count > w - i)
			count = (__u32)(w - i);
		for (size_t k = i; k < i + count; k++)
			if (m->bank[k] != UINT32_MAX)
				kb->b->bank_n[m->bank[k]]++;
		i += count;
		if (!r)
			break;
		if (e == -EOPNOTSUPP || e == -EINVAL) {
			/* no batched update for this map here: one by one */
			for (; i < w; i++) {
				if (bpf_map_update_elem(fd, m->keys + i * m->ksz,
							m->vals + i * m->vsz, BPF_ANY)) {
					kb_fail(m, i, rule_errno(), err);
				} else if (m->bank[i] != UINT32_MAX) {
					kb->b->bank_n[m->bank[i]]++;
				}
			}
			break;
		}
		if (i < w)
			kb_fail(m, i++, e, err); /* the entry the kernel stopped at */
	}
	m->n = 0;
}

void sl_kbatch_commit(struct sl_kbatch *kb, int err[SL_KBATCH_TAGS])
{
	memset(err, 0, SL_KBATCH_TAGS * sizeof(*err));
	kb_commit_map(kb, &kb->m[KB_HOSTS4], bpf_map__fd(kb->b->skel->maps.sl_hosts4), err);
	kb_commit_map(kb, &kb->m[KB_HOSTS6], bpf_map__fd(kb->b->skel->maps.sl_hosts6), err);
	kb_commit_map(kb, &kb->m[KB_RULES4], bpf_map__fd(kb->b->skel->maps.sl_rules4), err);
	kb_commit_map(kb, &kb->m[KB_RULES6], bpf_map__fd(kb->b->skel->maps.sl_rules6), err);
	kb_commit_map(kb, &kb->m[KB_SNI], bpf_map__fd(kb->b->skel->maps.sl_sni_names), err);
}

/* Whether @v holds a resolution: a range that expires (a learned entry's). */
static int rule_expires(const struct sl_rule *v)
{
	for (uint32_t k = 0; k < v->n && k < SL_MAX_PORT_RANGES; k++)
		if (v->r[k].expires_ns)
			return 1;
	return 0;
}

/* What read_entries() collects: the entries of one bank, or of every bank (@all), each with
 * its bank. */
struct rules_walk {
	uint32_t rules_id;
	int all, learned_only;
	uint8_t family;
	size_t key_size;
	struct snap_ent **v;
	size_t *n, cap;
};

static int read_entry(int fd, const void *key, const void *val, void *arg)
{
	struct rules_walk *w = arg;
	const unsigned char *k = key;
	struct snap_ent *x;
	uint32_t id, plen;

	(void)fd;
	memcpy(&plen, k, 4);
	memcpy(&id, k + 4, 4);
	if ((!w->all && id != w->rules_id) || (w->learned_only && !rule_expires(val)))
		return 0;
	if (*w->n == w->cap) {
		size_t c = w->cap ? w->cap * 2 : 64;

		x = realloc(*w->v, c * sizeof(*x));
		if (!x)
			return -ENOMEM;
		*w->v = x;
		w->cap = c;
	}
	x = &(*w->v)[(*w->n)++];
	memset(x, 0, sizeof(*x));
	x->rules_id = id;
	x->e.family = w->family;
	x->e.plen = plen - 32;
	memcpy(x->e.addr, k + 8, w->key_size - 8);
	memcpy(&x->e.val, val, sizeof(x->e.val));
	return 0;
}

/* The entries of bank @rules_id (or of every bank, @all), only its resolutions if
 * @learned_only, in the four rule maps, appended to *@v (*@n of them): one walk of each in
 * batches (map_each()), keys and values together. */
static int read_entries(struct sl_bpf *b, uint32_t rules_id, int all, int learned_only,
			struct snap_ent **v, size_t *n)
{
	struct {
		struct bpf_map *map;
		uint8_t family;
		size_t ksz;
	} maps[] = {
		{ b->skel->maps.sl_hosts4, AF_INET, sizeof(struct sl_key4) },
		{ b->skel->maps.sl_rules4, AF_INET, sizeof(struct sl_key4) },
		{ b->skel->maps.sl_hosts6, AF_INET6, sizeof(struct sl_key6) },
		{ b->skel->maps.sl_rules6, AF_INET6, sizeof(struct sl_key6) },
	};
	struct rules_walk w = { .rules_id = rules_id,
				.all = all,
				.learned_only = learned_only,
				.v = v,
				.n = n,
				.cap = *n };
	int err = 0;

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]) && !err; i++) {
		w.family = maps[i].family;
		w.key_size = maps[i].ksz;
		err = map_each(bpf_map__fd(maps[i].map), maps[i].ksz, sizeof(struct sl_rule),
			       read_entry, &w);
	}
	return err;
}

static int snap_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct snap_ent *)a)->rules_id,
		 y = ((const struct snap_ent *)b)->rules_id;

	return x < y ? -1 : x > y;
}

int sl_bpf_learned_snapshot(struct sl_bpf *b)
{
	int err;

	sl_bpf_learned_snapshot_drop(b);
	err = read_entries(b, 0, 1, 1, &b->snap, &b->nsnap);
	if (err) {
		sl_bpf_learned_snapshot_drop(b);
		return err;
	}
	if (b->nsnap) /* none: b->snap is NULL, which qsort() must not be given */
		qsort(b->snap, b->nsnap, sizeof(*b->snap), snap_cmp);
	b->snap_on = 1;
	return 0;
}

void sl_bpf_learned_snapshot_drop(struct sl_bpf *b)
{
	free(b->snap);
	b->snap = NULL;
	b->nsnap = 0;
	b->snap_on = 0;
}

/* The entries @v[0..@n) as kentries in *@out (malloc'd; NULL when @n is 0). */
static int kentries(const struct snap_ent *v, size_t n, struct sl_kentry **out, size_t *nout)
{
	*out = NULL;
	*nout = 0;
	if (!n)
		return 0;
	*out = malloc(n * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		(*out)[i] = v[i].e;
	*nout = n;
	return 0;
}

/* One bank's entries by a walk of the maps (see read_entries()). */
static int read_bank(struct sl_bpf *b, uint32_t rules_id, int learned_only, struct sl_kentry **out,
		     size_t *n)
{
	struct snap_ent *v = NULL;
	size_t nv = 0;
	int err = read_entries(b, rules_id, 0, learned_only, &v, &nv);

	*out = NULL;
	*n = 0;
	if (!err)
		err = kentries(v, nv, out, n);
	free(v);
	return err;
}

int sl_bpf_read_rules(struct sl_bpf *b, uint32_t rules_id, struct sl_kentry **out, size_t *n)
{
	return read_bank(b, rules_id, 0, out, n);
}

int sl_bpf_read_learned(struct sl_bpf *b, uint32_t rules_id, struct sl_kentry **out, size_t *n)
{
	size_t lo = 0, hi = b->nsnap, end;

	if (!b->snap_on)
		return read_bank(b, rules_id, 1, out, n);
	while (lo < hi) { /* the first entry of @rules_id */
		size_t mid = lo + (hi - lo) / 2;

		if (b->snap[mid].rules_id < rules_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < b->nsnap && b->snap[end].rules_id == rules_id; end++)
		;
	return kentries(b->snap + lo, end - lo, out, n);
}

int sl_bpf_sync_unix(struct sl_bpf *b, uint32_t rules_id, const struct sl_unix_key *keys, size_t n)
{
	struct bpf_map *map = b->skel->maps.sl_unix;
	struct sl_unix_key key, next, *stale = NULL;
	size_t nstale = 0, cap = 0;
	const __u32 one = 1;
	void *prev = NULL;
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		key = keys[i];
		key.sandbox_id = rules_id;
		if (bpf_map__update_elem(map, &key, sizeof(key), &one, sizeof(one), BPF_ANY)) {
			err = -errno;
			goto cleanup;
		}
	}
	/* Then the keys of @rules_id that are not in @keys, collected first (see prune()). */
	while (!bpf_map__get_next_key(map, prev, &next, sizeof(next))) {
		int kept = 0;

		key = next;
		prev = &key;
		if (key.sandbox_id != rules_id)
			continue;
		for (size_t i = 0; i < n && !kept; i++)
			kept = key.len == keys[i].len && !memcmp(key.path, keys[i].path, key.len);
		if (kept)
			continue;
		if (nstale == cap) {
			struct sl_unix_key *v;

			cap = cap ? cap * 2 : 16;
			v = realloc(stale, cap * sizeof(*v));
			if (!v) {
				err = -ENOMEM;
				goto cleanup;
			}
			stale = v;
		}
		stale[nstale++] = key;
	}
	for (size_t i = 0; i < nstale; i++)
		if (bpf_map__delete_elem(map, &stale[i], sizeof(stale[i]), 0) && errno != ENOENT)
			err = -errno;
cleanup:
	free(stale);
	return err;
}

int sl_bpf_set_listener(struct sl_bpf *b, uint64_t netns, uint16_t port_be, uint8_t protocol,
			uint32_t sandbox_id)
{
	struct sl_listener_key k = { .port = port_be, .family = AF_INET, .proto = protocol };
	int r;

	k.addr[0] = 127;
	k.addr[3] = 1;
	memcpy(&k.addr[4], &netns, sizeof(netns));
	if (sandbox_id) {
		r = lport_put(b, &k, sandbox_id);
		if (r || (netns && b->skb_netns))
			return r;
		b->skel->bss->sl_listeners_shared = 1;
		if (!netns)
			return 0;
		memset(&k.addr[4], 0, sizeof(netns)); /* what the egress program looks up */
		return lport_put(b, &k, sandbox_id);
	}
	r = lport_del(b, &k);
	if (r || netns)
		return r;
	/* The keys of cookie 0 include an earlier sluiced's: for any protocol (0), and under ::1
	 * as well as 127.0.0.1 (the programs never looked those up). */
	for (int any = 0; any < 4; any++) {
		k.proto = any & 1 ? 0 : protocol;
		k.family = any & 2 ? AF_INET6 : AF_INET;
		if (k.family == AF_INET6)
			memcpy(k.addr, in6addr_loopback.s6_addr, 16);
		if (any && (r = lport_del(b, &k)))
			return r;
	}
	return 0;
}

/* Takes a FRESH map for @id (LIVE then). 1 if there was one. Under px_mu. */
static int px_take_fresh(struct sl_bpf *b, uint32_t id)
{
	if (b->px_state[id] != PX_FRESH)
		return 0;
	b->px_state[id] = PX_LIVE;
	b->px_nfresh--;
	return 1;
}

int sl_bpf_proxied_open(struct sl_bpf *b, uint32_t sandbox_id)
{
	int outer = bpf_map__fd(b->skel->maps.sl_proxied), fd;
	__u32 inner_id;

	if (!sandbox_id || sandbox_id >= b->max_sandboxes)
		return -EINVAL;
	pthread_mutex_lock(&b->px_mu);
	fd = b->px_fd[sandbox_id];
	if (fd >= 0 && !px_take_fresh(b, sandbox_id))
		b->px_state[sandbox_id] = PX_LIVE;
	pthread_mutex_unlock(&b->px_mu);
	if (fd >= 0)
		return 0;
	/* A restarted sluiced finds the map its predecessor made (records pending included). */
	if (!bpf_map_lookup_elem(outer, &sandbox_id, &inner_id)) {
		fd = bpf_map_get_fd_by_id(inner_id);
		if (fd >= 0) {
			pthread_mutex_lock(&b->px_mu);
			b->px_fd[sandbox_id] = fd;
			b->px_state[sandbox_id] = PX_LIVE;
			pthread_mutex_unlock(&b->px_mu);
			return 0;
		}
	}
	return sl_bpf_proxied_fresh(b, sandbox_id);
}

void sl_bpf_proxied_want(struct sl_bpf *b, uint32_t sandbox_id)
{
	if (!sandbox_id || sandbox_id >= b->max_sandboxes)
		return;
	pthread_mutex_lock(&b->px_mu);
	if (b->px_state[sandbox_id] == PX_NONE || b->px_state[sandbox_id] == PX_STALE)
		b->px_state[sandbox_id] = PX_WANTED;
	pthread_mutex_unlock(&b->px_mu);
}

/*
 * A write to a map of maps returns after an RCU grace period (the kernel's
 * maybe_wait_bpf_programs(): 13.6 ms on this 2-CPU VM), one per call. So the maps of every
 * id an add holds are made together, in one BPF_MAP_UPDATE_BATCH: eight adds in flight wait
 * once, not eight times.
 */
int sl_bpf_proxied_fresh(struct sl_bpf *b, uint32_t sandbox_id)
{
	LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_NO_PREALLOC);
	int outer = bpf_map__fd(b->skel->maps.sl_proxied), err = 0, fds[PX_BATCH], got;
	uint32_t ids[PX_BATCH], n = 0, made = 0, written = 0;

	if (!sandbox_id || sandbox_id >= b->max_sandboxes)
		return -EINVAL;
	pthread_mutex_lock(&b->px_mu);
	got = px_take_fresh(b, sandbox_id);
	if (!got && b->px_fd[sandbox_id] >= 0) {
		/* A sandbox's before (an earlier add of this id that failed): never reused. */
		close(b->px_fd[sandbox_id]);
		b->px_fd[sandbox_id] = -1;
	}
	if (!got)
		b->px_state[sandbox_id] = PX_WANTED;
	pthread_mutex_unlock(&b->px_mu);
	if (got)
		return 0;

	pthread_mutex_lock(&b->px_batch);
	pthread_mutex_lock(&b->px_mu);
	got = px_take_fresh(b, sandbox_id); /* the batch just before made it */
	if (!got) {
		ids[n++] = sandbox_id;
		b->px_state[sandbox_id] = PX_MAKING;
		for (uint32_t i = 1; i < b->max_sandboxes && n < PX_BATCH; i++) {
			if (b->px_state[i] == PX_WANTED) {
				ids[n++] = i;
				b->px_state[i] = PX_MAKING;
			}
		}
		/* Adds come in bursts (an orchestrator's): more are on their way when several
		 * are under way. Those get the lowest free ids (the registry's choice): their
		 * maps are made now too, so that they need no write of their own. */
		uint32_t ahead = n > 1 ? PX_AHEAD * n : 0;

		if (ahead > PX_FRESH_MAX - b->px_nfresh)
			ahead = PX_FRESH_MAX - b->px_nfresh;
		for (uint32_t i = 1; i < b->max_sandboxes && ahead && n < PX_BATCH; i++) {
			if (b->px_state[i] == PX_NONE) {
				ids[n++] = i;
				b->px_state[i] = PX_MAKING;
				ahead--;
			}
		}
	}
	pthread_mutex_unlock(&b->px_mu);
	for (made = 0; made < n; made++) {
		fds[made] = bpf_map_create(BPF_MAP_TYPE_HASH, "sl_proxied_sb",
					   sizeof(struct sl_conn_key),
					   sizeof(struct sl_proxied_rec), SL_PROXIED_PER_SANDBOX,
					   &mo);
		if (fds[made] < 0) {
			err = -errno;
			break;
		}
	}
	if (made) {
		__u32 count = made;

		/* The kernel writes them in order and says how many it wrote. */
		if (bpf_map_update_batch(outer, ids, fds, &count, NULL))
			err = -errno;
		written = count <= made ? count : 0;
	}
	pthread_mutex_lock(&b->px_mu);
	for (uint32_t i = 0; i < n; i++) {
		if (i < written) {
			b->px_fd[ids[i]] = fds[i];
			b->px_state[ids[i]] = i ? PX_FRESH : PX_LIVE;
			b->px_nfresh += !!i;
			continue;
		}
		if (i < made)
			close(fds[i]);
		/* Another add's id is made by its own call (or it fails there). */
		b->px_state[ids[i]] = i ? PX_WANTED : PX_NONE;
	}
	pthread_mutex_unlock(&b->px_mu);
	pthread_mutex_unlock(&b->px_batch);
	if (got || written)
		return 0;
	return err ? err : -EIO;
}

void sl_bpf_proxied_drop(struct sl_bpf *b, uint32_t sandbox_id)
{
	if (!sandbox_id || sandbox_id >= b->max_sandboxes)
		return;
	pthread_mutex_lock(&b->px_mu);
	switch (b->px_state[sandbox_id]) {
	case PX_LIVE:
		close(b->px_fd[sandbox_id]);
		b->px_fd[sandbox_id] = -1;
		b->px_state[sandbox_id] = PX_STALE;
		break;
	case PX_WANTED:
		b->px_state[sandbox_id] = PX_NONE;
		break;
	default: /* FRESH: still nobody's, kept for the id's next sandbox; MAKING: becomes so */
		break;
	}
	pthread_mutex_unlock(&b->px_mu);
}

int sl_bpf_proxied_stale(struct sl_bpf *b)
{
	int any = 0;

	pthread_mutex_lock(&b->px_mu);
	for (uint32_t i = 1; i < b->max_sandboxes && !any; i++)
		any = b->px_state[i] == PX_STALE;
	pthread_mutex_unlock(&b->px_mu);
	return any;
}

int sl_bpf_proxied_reap(struct sl_bpf *b)
{
	int outer = bpf_map__fd(b->skel->maps.sl_proxied), err = 0;
	uint32_t *ids = NULL, n = 0;

	pthread_mutex_lock(&b->px_batch);
	pthread_mutex_lock(&b->px_mu);
	for (uint32_t i = 1; i < b->max_sandboxes; i++)
		n += b->px_state[i] == PX_STALE;
	ids = n ? malloc(n * sizeof(*ids)) : NULL;
	if (n && !ids)
		err = -ENOMEM;
	n = 0;
	for (uint32_t i = 1; ids && i < b->max_sandboxes; i++) {
		if (b->px_state[i] == PX_STALE) {
			ids[n++] = i;
			/* No map of ours; a later batch (after this one) may write a new one. */
			b->px_state[i] = PX_NONE;
		}
	}
	pthread_mutex_unlock(&b->px_mu);
	/* One grace period for all. The kernel stops at a key that is gone (ENOENT): past it,
	 * the rest go on. */
	for (uint32_t at = 0; at < n;) {
		__u32 count = n - at;

		if (!bpf_map_delete_batch(outer, ids + at, &count, NULL))
			break;
		if (errno != ENOENT || count >= n - at) {
			err = -errno;
			break;
		}
		at += count + 1;
	}
	pthread_mutex_unlock(&b->px_batch);
	free(ids);
	return err;
}

int sl_bpf_take_proxied(struct sl_bpf *b, uint32_t sandbox_id, uint64_t netns_cookie,
			uint8_t family, const uint8_t *addr, uint16_t port, struct sl_sockorig *out)
{
	struct sl_conn_key k = { .netns_cookie = netns_cookie, .port = port, .family = family };
	struct sl_proxied_rec rec;

	if (!sandbox_id || sandbox_id >= b->max_sandboxes || b->px_fd[sandbox_id] < 0 || !port)
		return -ENOENT;
	memcpy(k.addr, addr, family == AF_INET ? 4 : 16);
	if (bpf_map_lookup_and_delete_elem(b->px_fd[sandbox_id], &k, &rec))
		return -errno;
	*out = rec.o;
	return 0;
}

int sl_bpf_take_accept(struct sl_bpf *b, uint8_t family, const uint8_t *addr, uint16_t port,
		       uint16_t listener_port, uint32_t *sandbox_id)
{
	struct sl_accept_key k = { .port = port, .listener_port = listener_port, .family = family };

	if (!b || !b->skel)
		return -ENOENT;
	memcpy(k.addr, addr, family == AF_INET ? 4 : 16);
	if (bpf_map_lookup_and_delete_elem(bpf_map__fd(b->skel->maps.sl_accepts), &k, sandbox_id))
		return -errno;
	return 0;
}

int sl_bpf_proxied_sweep(struct sl_bpf *b, uint32_t sandbox_id, uint64_t now_ns,
			 uint64_t max_age_ns)
{
	struct sl_conn_key key, next, *stale = NULL;
	size_t nstale = 0, cap = 0;
	struct sl_proxied_rec rec;
	void *prev = NULL;
	int fd, n = 0;

	if (!sandbox_id || sandbox_id >= b->max_sandboxes || b->px_fd[sandbox_id] < 0)
		return 0;
	fd = b->px_fd[sandbox_id];
	/* Bounded by the map's size; collected first, as deleting restarts a walk. */
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &rec) || rec.ts_ns + max_age_ns > now_ns)
			continue;
		if (nstale == cap) {
			struct sl_conn_key *v;

			cap = cap ? cap * 2 : 64;
			v = realloc(stale, cap * sizeof(*v));
			if (!v)
				break;
			stale = v;
		}
		stale[nstale++] = key;
	}
	for (size_t i = 0; i < nstale; i++)
		n += !bpf_map_delete_elem(fd, &stale[i]);
	free(stale);
	return n;
}

int sl_bpf_read_counters(struct sl_bpf *b, uint32_t sandbox_id, struct sl_counters *sum)
{
	struct sl_counters *per = calloc(b->ncpus, sizeof(*per));
	int err = 0;

	memset(sum, 0, sizeof(*sum));
	if (!per)
		return -ENOMEM;
	if (bpf_map__lookup_elem(b->skel->maps.sl_counters, &sandbox_id, sizeof(sandbox_id), per,
				 b->ncpus * sizeof(*per), 0)) {
		err = -errno;
		goto cleanup;
	}
	for (int cpu = 0; cpu < b->ncpus; cpu++)
		for (int i = 0; i < SL_CTR_MAX; i++)
			sum->c[i] += per[cpu].c[i];
cleanup:
	free(per);
	return err;
}

int sl_bpf_read_proxied_full(struct sl_bpf *b, uint32_t sandbox_id, uint64_t *sum)
{
	uint64_t *per = calloc(b->ncpus, sizeof(*per));
	int err = 0;

	*sum = 0;
	if (!per)
		return -ENOMEM;
	if (bpf_map__lookup_elem(b->skel->maps.sl_pxfull, &sandbox_id, sizeof(sandbox_id), per,
				 b->ncpus * sizeof(*per), 0))
		err = -errno;
	for (int cpu = 0; !err && cpu < b->ncpus; cpu++)
		*sum += per[cpu];
	free(per);
	return err;
}

int sl_bpf_reset_slots(struct sl_bpf *b, uint32_t sandbox_id)
{
	size_t sz = b->ncpus * (sizeof(struct sl_counters) + sizeof(struct sl_evlimit) +
				sizeof(struct sl_sni_ctr));
	void *zero = calloc(1, sz);
	int err = 0;

	if (!zero)
		return -ENOMEM;
	if (bpf_map__update_elem(b->skel->maps.sl_counters, &sandbox_id, sizeof(sandbox_id), zero,
				 b->ncpus * sizeof(struct sl_counters), BPF_ANY) ||
	    bpf_map__update_elem(b->skel->maps.sl_evlimit, &sandbox_id, sizeof(sandbox_id), zero,
				 b->ncpus * sizeof(struct sl_evlimit), BPF_ANY) ||
	    bpf_map__update_elem(b->skel->maps.sl_pxfull, &sandbox_id, sizeof(sandbox_id), zero,
				 b->ncpus * sizeof(uint64_t), BPF_ANY) ||
	    bpf_map__update_elem(b->skel->maps.sl_sni_ctr, &sandbox_id, sizeof(sandbox_id), zero,
				 b->ncpus * sizeof(struct sl_sni_ctr), BPF_ANY))
		err = -errno;
	free(zero);
	if (!err)
		err = sl_bpf_audit_clear(b, sandbox_id);
	return err;
}

/* ---- audit mode's records (bpf/audit.h) ---- */

int sl_bpf_read_audit_ctr(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_ctr *sum)
{
	struct sl_audit_ctr *per = calloc(b->ncpus, sizeof(*per));
	int err = 0;

	memset(sum, 0, sizeof(*sum));
	if (!per)
		return -ENOMEM;
	if (bpf_map__lookup_elem(b->skel->maps.sl_auditn, &sandbox_id, sizeof(sandbox_id), per,
				 b->ncpus * sizeof(*per), 0))
		err = -errno;
	for (int cpu = 0; !err && cpu < b->ncpus; cpu++) {
		sum->audited += per[cpu].audited;
		sum->lost += per[cpu].lost;
	}
	free(per);
	return err;
}

/*
 * Calls @fn(key, value, @arg) for every entry of hash map @fd (@ksz-byte keys, @vsz-byte
 * values) until @fn returns non-zero (returned then). BPF_MAP_LOOKUP_BATCH reads up to 256
 * entries a syscall where get_next_key() and a lookup took two per entry: an add walks the
 * SNI and audit maps of all sandboxes for leftovers of its id, and 10,000 names of another
 * sandbox had it wait 20-30 ms on its worker's loop. @fn may delete the entry it is given
 * (the walk goes by bucket, from copies). A map without batch operations is walked key by key.
 */
static int map_each(int fd, size_t ksz, size_t vsz,
		    int (*fn)(int fd, const void *key, const void *val, void *arg), void *arg)
{
	uint8_t *keys = NULL, *vals = NULL, *key, *next;
	__u32 batch = 256, count, in_tok = 0, out_tok = 0;
	int first = 1, more = 1, r = 0;
	void *prev = NULL;

	while (more && !r) {
		uint8_t *k2 = realloc(keys, batch * ksz), *v2;

		if (k2)
			keys = k2;
		if (!k2 || !(v2 = realloc(vals, batch * vsz))) {
			r = -ENOMEM; /* never a walk cut short as if it were whole */
			break;
		}
		vals = v2;
		count = batch;
		if (bpf_map_lookup_batch(fd, first ? NULL : &in_tok, &out_tok, keys, vals, &count,
					 NULL)) {
			if (errno == ENOSPC && !count && batch < 65536) {
				batch *= 2; /* a bucket holds more than a batch */
				continue;
			}
			if (errno != ENOENT) {
				if (!first)
					r = -errno;
				break; /* no batch operations: key by key below, from the start */
			}
			more = 0;
		}
		first = 0;
		in_tok = out_tok;
		for (__u32 i = 0; i < count && !r; i++)
			r = fn(fd, keys + i * ksz, vals + i * vsz, arg);
	}
	free(keys);
	free(vals);
	if (!first || r)
		return r;
	key = malloc(2 * ksz);
	vals = malloc(vsz);
	next = key ? key + ksz : NULL;
	while (key && vals && !r && !bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, ksz);
		prev = key;
		if (!bpf_map_lookup_elem(fd, key, vals))
			r = fn(fd, key, vals, arg);
	}
	free(key);
	free(vals);
	return r;
}

/* What audit_walk() keeps, and where. */
struct audit_walk {
	uint32_t sandbox_id;
	size_t ksz, rsz, voff, cap, n;
	uint8_t *out;
	int keep; /* copy into out; else delete */
};

static int audit_walk_one(int fd, const void *key, const void *val, void *arg)
{
	struct audit_walk *w = arg;
	uint32_t id;

	memcpy(&id, key, sizeof(id));
	if (id != w->sandbox_id)
		return 0;
	if (!w->keep)
		return bpf_map_delete_elem(fd, key) && errno != ENOENT ? -errno : 0;
	if (w->n == w->cap) {
		size_t c = w->cap ? w->cap * 2 : 64;
		uint8_t *p = realloc(w->out, c * w->rsz);

		if (!p)
			return -ENOMEM;
		w->out = p;
		w->cap = c;
	}
	memcpy(w->out + w->n * w->rsz, key, w->ksz);
	memcpy(w->out + w->n * w->rsz + w->voff, val, sizeof(struct sl_audit_val));
	w->n++;
	return 0;
}

/*
 * Walks map @fd (keys of @ksz bytes whose first 4 are a sandbox id, values struct sl_audit_val)
 * and keeps the records of @sandbox_id: copied into *@out (@rsz bytes each: the key, then the
 * value at @voff) when @out is set, deleted otherwise.
 */
static int audit_walk(int fd, size_t ksz, uint32_t sandbox_id, void **out, size_t *n, size_t rsz,
		      size_t voff)
{
	struct audit_walk w = {
		.sandbox_id = sandbox_id, .ksz = ksz, .rsz = rsz, .voff = voff, .keep = !!out
	};
	int err = map_each(fd, ksz, sizeof(struct sl_audit_val), audit_walk_one, &w);

	if (err)
		free(w.out);
	if (out) {
		*out = err ? NULL : w.out;
		*n = err ? 0 : w.n;
	}
	return err;
}

int sl_bpf_audit_read(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_rec **out, size_t *n)
{
	return audit_walk(bpf_map__fd(b->skel->maps.sl_audit), sizeof(struct sl_audit_key),
			  sandbox_id, (void **)out, n, sizeof(**out),
			  offsetof(struct sl_audit_rec, v));
}

int sl_bpf_audit_unix_read(struct sl_bpf *b, uint32_t sandbox_id, struct sl_audit_unix_rec **out,
			   size_t *n)
{
	return audit_walk(bpf_map__fd(b->skel->maps.sl_audit_unix), sizeof(struct sl_unix_key),
			  sandbox_id, (void **)out, n, sizeof(**out),
			  offsetof(struct sl_audit_unix_rec, v));
}

int sl_bpf_audit_clear(struct sl_bpf *b, uint32_t sandbox_id)
{
	size_t sz = b->ncpus * sizeof(struct sl_audit_ctr);
	void *zero = calloc(1, sz);
	int err;

	if (!zero)
		return -ENOMEM;
	err = audit_walk(bpf_map__fd(b->skel->maps.sl_audit), sizeof(struct sl_audit_key),
			 sandbox_id, NULL, NULL, 0, 0);
	if (!err)
		err = audit_walk(bpf_map__fd(b->skel->maps.sl_audit_unix),
				 sizeof(struct sl_unix_key), sandbox_id, NULL, NULL, 0, 0);
	if (!err && bpf_map__update_elem(b->skel->maps.sl_auditn, &sandbox_id, sizeof(sandbox_id),
					 zero, sz, BPF_ANY))
		err = -errno;
	free(zero);
	return err;
}

static int on_sample(void *ctx, void *data, size_t size)
{
	struct sl_bpf *b = ctx;

	if (size >= sizeof(struct sl_event) &&
	    (((const struct sl_event *)data)->family != AF_UNIX ||
	     size >= sizeof(struct sl_event_unix)))
		b->ev_cb(data, b->ev_arg);
	return 0;
}

int sl_bpf_events_fd(struct sl_bpf *b, sl_bpf_event_cb *cb, void *arg)
{
	b->ev_cb = cb;
	b->ev_arg = arg;
	b->rb = ring_buffer__new(bpf_map__fd(b->skel->maps.sl_events), on_sample, b, NULL);
	if (!b->rb)
		return -errno;
	return ring_buffer__epoll_fd(b->rb);
}

int sl_bpf_events_poll(struct sl_bpf *b)
{
	int n = ring_buffer__consume(b->rb);

	return n < 0 ? n : 0;
}

static void purge_one(const char *name, void *arg)
{
	sl_bpf_detach(arg, name);
}

int sl_bpf_purge(struct sl_bpf *b)
{
	struct bpf_program *prog;
	struct bpf_map *map;
	char path[PATH_MAX + 64];

	sl_bpf_pinned_sandboxes(b, purge_one, b);
	bpf_object__for_each_program(prog, b->skel->obj) {
		snprintf(path, sizeof(path), "%s/progs/%s", b->pin_dir, bpf_program__name(prog));
		unlink(path);
	}
	bpf_object__for_each_map(map, b->skel->obj)
		if (bpf_map__is_pinned(map))
			bpf_map__unpin(map, NULL);
	snprintf(path, sizeof(path), "%s/sandboxes", b->pin_dir);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/progs", b->pin_dir);
	rmdir(path);
	if (rmdir(b->pin_dir) == -1 && errno != ENOENT)
		return -errno;
	return 0;
}

/* The key of @name (lower case, no trailing dot) at @addr for @sandbox_id. */
static int sni_key(struct sl_sni_key *k, uint32_t sandbox_id, uint8_t family, const uint8_t *addr,
		   const char *name)
{
	size_t n = strlen(name);

	memset(k, 0, sizeof(*k));
	if (!n || n >= sizeof(k->name))
		return -EINVAL;
	k->sandbox_id = sandbox_id;
	k->family = family;
	memcpy(k->addr, addr, family == AF_INET ? 4 : 16);
	memcpy(k->name, name, n);
	return 0;
}

int sl_bpf_set_sni_name(struct sl_bpf *b, uint32_t sandbox_id, uint8_t family, const uint8_t *addr,
			const char *name, const struct sl_sni_val *v)
{
	struct sl_sni_key k;
	int r = sni_key(&k, sandbox_id, family, addr, name);

	if (r)
		return r;
	if (!v || !v->n) {
		r = bpf_map_delete_elem(bpf_map__fd(b->skel->maps.sl_sni_names), &k);
	} else {
		sni_held_set(b, sandbox_id); /* before it can be in the map */
		r = bpf_map_update_elem(bpf_map__fd(b->skel->maps.sl_sni_names), &k, v, BPF_ANY);
	}
	if (r && errno == ENOENT)
		return 0;
	return r ? -errno : 0;
}

struct sni_walk {
	uint32_t sandbox_id;
	/* NULL: the names are deleted */
	int (*cb)(const struct sl_sni_key *k, const struct sl_sni_val *v, void *arg);
	void *arg;
};

static int sni_walk_one(int fd, const void *key, const void *val, void *arg)
{
	const struct sl_sni_key *k = key;
	struct sni_walk *w = arg;

	if (k->sandbox_id != w->sandbox_id)
		return 0;
	if (!w->cb)
		return bpf_map_delete_elem(fd, k) && errno != ENOENT ? -errno : 0;
	return w->cb(k, val, w->arg);
}

int sl_bpf_sni_names_each(struct sl_bpf *b, uint32_t sandbox_id,
			  int (*cb)(const struct sl_sni_key *k, const struct sl_sni_val *v,
				    void *arg),
			  void *arg)
{
	struct sni_walk w = { sandbox_id, cb, arg };

	return map_each(bpf_map__fd(b->skel->maps.sl_sni_names), sizeof(struct sl_sni_key),
			sizeof(struct sl_sni_val), sni_walk_one, &w);
}

int sl_bpf_drop_sni_names(struct sl_bpf *b, uint32_t sandbox_id)
{
	struct sni_walk w = { sandbox_id, NULL, NULL };
	int r;

	/* A walk of every sandbox's names (10,000 of one sandbox: 1-2 ms even in batches) only
	 * where this id may have some: an add's id usually has none. */
	if (sandbox_id < b->max_sandboxes && !b->sni_held[sandbox_id])
		return 0;
	r = map_each(bpf_map__fd(b->skel->maps.sl_sni_names), sizeof(struct sl_sni_key),
		     sizeof(struct sl_sni_val), sni_walk_one, &w);
	if (!r && sandbox_id < b->max_sandboxes)
		b->sni_held[sandbox_id] = 0;
	return r;
}

int sl_bpf_read_sni_counters(struct sl_bpf *b, uint32_t sandbox_id, struct sl_sni_ctr *sum)
{
	struct sl_sni_ctr *per = calloc((size_t)b->ncpus, sizeof(*per));
	int r = 0;

	memset(sum, 0, sizeof(*sum));
	if (!per)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(b->skel->maps.sl_sni_ctr), &sandbox_id, per)) {
		r = -errno;
	} else {
		for (int c = 0; c < b->ncpus; c++)
			for (int i = 0; i < SL_SNI_CTR_MAX; i++)
				sum->c[i] += per[c].c[i];
	}
	free(per);
	return r;
}
