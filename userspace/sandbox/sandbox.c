// SPDX-License-Identifier: MIT
/*
 * The sandbox registry: the daemon's view of which cgroups are sandboxes, under which policy,
 * and the bookkeeping that lets enforcement outlive the daemon. Each sandbox is recorded in
 * <state_dir>/sandboxes/<name>.json (0600) with the policy text it was added with, so that a
 * restarted sluiced rebuilds exactly the rules the kernel already holds, whatever happened to
 * the original policy file since.
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

#define POLICY_MAX_BYTES (1u << 20)
#define SWEEP_MS 1000
#define PROXIED_SWEEPS 5 /* sl_proxied records are swept every 5th sweep */
#define NETNS_CHECK_SWEEPS 5 /* namespaces are judged gone every 5th sweep (a /proc scan) */

struct sl_registry {
	struct sl_bpf *bpf;
	struct sl_loop *loop;
	struct sl_dns *dns;
	struct sl_dns_ttl ttl;
	struct sl_proxy *proxy;
	struct sl_lua_opts lua_opts;
	struct sl_timer *sweep;
	unsigned netns_sweeps; /* sweeps since namespaces were last judged */
	unsigned px_sweeps; /* sweeps since sl_proxied records were last swept */
	char state_dir[PATH_MAX];
	/* sluiced's control socket: no egress.unix may name it (also denied in the kernel). */
	char ctl_path[PATH_MAX];
	struct sl_box *head;
	size_t count;
};

static void sweep_cb(struct sl_loop *loop, void *arg);
static void reap_vanished(struct sl_registry *r);

struct sl_registry *sl_registry_new(struct sl_bpf *bpf, const char *state_dir,
				    struct sl_loop *loop, struct sl_dns *dns,
				    const struct sl_dns_ttl *ttl, struct sl_proxy *proxy)
{
	struct sl_registry *r = calloc(1, sizeof(*r));
	char dir[PATH_MAX + 16];

	if (!r)
		return NULL;
	r->bpf = bpf;
	r->loop = loop;
	r->dns = dns;
	r->ttl = *ttl;
	r->proxy = proxy;
	snprintf(r->state_dir, sizeof(r->state_dir), "%s", state_dir);
	snprintf(dir, sizeof(dir), "%s/sandboxes", state_dir);
	if ((mkdir(state_dir, 0700) == -1 && errno != EEXIST) ||
	    (mkdir(dir, 0700) == -1 && errno != EEXIST)) {
		int e = errno;

		free(r);
		errno = e;
		return NULL;
	}
	if (loop)
		r->sweep = sl_loop_add_timer(loop, SWEEP_MS, sweep_cb, r);
	return r;
}

void sl_registry_set_lua(struct sl_registry *r, const struct sl_lua_opts *o)
{
	r->lua_opts = *o;
}

int sl_registry_set_control_socket(struct sl_registry *r, const char *path, char *err,
				   size_t errlen)
{
	struct sl_unix_key k;
	int e;

	snprintf(r->ctl_path, sizeof(r->ctl_path), "%s", path);
	e = sl_unix_parse(path, strlen(path), &k, err, errlen);
	if (!e) {
		e = sl_bpf_sync_unix(r->bpf, 0, &k, 1);
		if (e)
			sl_errf(err, errlen, "writing the kernel's guard of %s failed: %s", path,
				strerror(-e));
	}
	return e;
}

/*
 * Refuses an egress.unix entry of @p that reaches sluiced's control socket: its path, or a
 * file that is that socket (a hard link, a symlink or another spelling of the path, as far as
 * it exists now). The kernel denies the path itself whatever this says.
 */
static int check_unix(struct sl_registry *r, const struct sl_policy *p, const char *where,
		      char *err, size_t errlen)
{
	struct stat ctl, st;
	int have_ctl;

	if (!p || !r->ctl_path[0])
		return 0;
	have_ctl = stat(r->ctl_path, &ctl) == 0;
	for (size_t i = 0; i < p->unix_socks.n; i++) {
		const struct sl_unix_key *k = &p->unix_socks.v[i];
		char s[SL_UNIX_PATH_MAX * 4 + 2];

		if (!k->path[0])
			continue; /* abstract: not a file */
		sl_unix_str(k, s, sizeof(s));
		if (!strcmp(s, r->ctl_path) ||
		    (have_ctl && stat(s, &st) == 0 && st.st_dev == ctl.st_dev &&
		     st.st_ino == ctl.st_ino)) {
			sl_errf(err, errlen, "%s.unix[%zu] ('%s'): sluiced's control socket is never "
					    "reachable from a sandbox", where, i + 1, s);
			return -EINVAL;
		}
	}
	return 0;
}

/* Writes the egress.unix addresses of @p (NULL: none) under rule bank @rules_id. */
static int sync_unix(struct sl_registry *r, uint32_t rules_id, const struct sl_policy *p)
{
	return sl_bpf_sync_unix(r->bpf, rules_id, p ? p->unix_socks.v : NULL,
				p ? p->unix_socks.n : 0);
}

static void box_free(struct sl_box *box)
{
	if (!box)
		return;
	sl_dns_listener_close(box->dns);
	sl_proxy_listener_close(box->proxy); /* first: it ends the handlers still running */
	if (box->netns_fd >= 0)
		close(box->netns_fd);
	sl_lua_unref(box->lua);
	sl_ca_free(box->ca);
	free(box->policy_src);
	sl_policy_free(box->base);
	sl_policy_free(box->hlayer);
	free(box->params);
	sl_rule_set_free(&box->rules);
	sl_rule_set_free(&box->learned);
	free(box->learned_names);
	free(box);
}

void sl_registry_free(struct sl_registry *r)
{
	if (!r)
		return;
	if (r->loop)
		sl_loop_cancel_timer(r->loop, r->sweep);
	while (r->head) {
		struct sl_box *b = r->head;

		r->head = b->next;
		box_free(b);
	}
	free(r);
}

int sl_sandbox_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (!n || n > SL_NAME_MAX || !isalnum((unsigned char)name[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
			return 0;
	return 1;
}

struct sl_box *sl_sandbox_find(struct sl_registry *r, const char *name)
{
	for (struct sl_box *b = r->head; b; b = b->next)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

struct sl_box *sl_sandbox_by_id(struct sl_registry *r, uint32_t id)
{
	for (struct sl_box *b = r->head; b; b = b->next)
		if (b->id == id)
			return b;
	return NULL;
}

struct sl_box *sl_registry_first(struct sl_registry *r)
{
	return r->head;
}

struct sl_box *sl_registry_next(const struct sl_box *box)
{
	return box->next;
}

const char *sl_box_name(const struct sl_box *box)
{
	return box->name;
}

uint32_t sl_box_id(const struct sl_box *box)
{
	return box->id;
}

const char *sl_box_cgroup(const struct sl_box *box)
{
	return box->cgroup;
}

const char *sl_box_container_id(const struct sl_box *box)
{
	return box->container_id;
}

const struct sl_proxy_stats *sl_box_proxy_stats(const struct sl_box *box)
{
	return box->proxy ? sl_proxy_listener_stats(box->proxy) : NULL;
}

const struct sl_dns_stats *sl_box_dns_stats(const struct sl_box *box)
{
	return box->dns ? sl_dns_listener_stats(box->dns) : NULL;
}

struct sl_ca *sl_box_ca(const struct sl_box *box)
{
	return box->ca;
}

size_t sl_box_lua_mem(const struct sl_box *box)
{
	return box->lua ? sl_lua_mem(box->lua) : 0;
}

size_t sl_registry_count(struct sl_registry *r)
{
	return r->count;
}

static uint32_t alloc_id(struct sl_registry *r)
{
	for (uint32_t id = 1; id < SL_MAX_SANDBOXES; id++)
		if (!sl_sandbox_by_id(r, id))
			return id;
	return 0;
}

static void state_path(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.json", r->state_dir, name);
}

/* Writes the state file atomically (temporary file, fsync, rename). */
static int save_state(struct sl_registry *r, const struct sl_box *box)
{
	char path[PATH_MAX + 128], tmp[PATH_MAX + 160];
	json_t *j;
	int fd, err = 0;

	state_path(r, box->name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	j = json_pack("{s:s, s:I, s:s, s:I, s:s, s:s%, s:I, s:i, s:i}", "name", box->name, "id",
		      (json_int_t)box->id, "cgroup", box->cgroup, "cgroup_id",
		      (json_int_t)box->cgid, "policy_path", box->policy_path, "policy",
		      box->policy_src, box->policy_len, "created", (json_int_t)box->created_s,
		      "dns_port", (int)box->dns_port, "proxy_port", (int)box->proxy_port);
	if (!j)
		return -ENOMEM;
	if (box->handler[0]) {
		/* A restart keeps the sandbox as locked down (or open) as it was. */
		json_object_set_new(j, "handler", json_string(box->handler));
		if (box->params)
			json_object_set_new(j, "params", json_string(box->params));
	}
	if (box->container_id[0])
		json_object_set_new(j, "container_id", json_string(box->container_id));
	if (box->netns_fd >= 0) {
		/* The path may not outlive its process (/proc/PID/ns/net): dev and inode let a
		 * restart find the same namespace through the cgroup's processes. */
		json_object_set_new(j, "netns", json_string(box->netns));
		json_object_set_new(j, "netns_dev", json_integer((json_int_t)box->netns_dev));
		json_object_set_new(j, "netns_ino", json_integer((json_int_t)box->netns_ino));
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1) {
		err = -errno;
		goto cleanup;
	}
	if (json_dumpfd(j, fd, JSON_INDENT(2)) || fsync(fd) == -1)
		err = errno ? -errno : -EIO;
	close(fd);
	if (!err && rename(tmp, path) == -1)
		err = -errno;
	if (err)
		unlink(tmp);
cleanup:
	json_decref(j);
	return err;
}

static int read_file(const char *path, char **out, size_t *len)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if (st.st_size > POLICY_MAX_BYTES) {
		close(fd);
		return -EFBIG;
	}
	buf = malloc(st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	n = read(fd, buf, st.st_size);
	close(fd);
	if (n != st.st_size) {
		free(buf);
		return n == -1 ? -errno : -EIO;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}

/* The kernel entries of @box: its static rules and what its names resolved to. */
static int compile_all(struct sl_box *box, struct sl_kentry **ents, size_t *nents,
		       struct sl_kentry *bad)
{
	struct sl_rule_set all;
	int r = 0;

	sl_rule_set_init(&all);
	for (size_t i = 0; i < box->rules.n && !r; i++)
		r = sl_rule_set_add(&all, &box->rules.v[i]);
	for (size_t i = 0; i < box->learned.n && !r; i++)
		r = sl_rule_set_add(&all, &box->learned.v[i]);
	if (!r)
		r = sl_rules_compile(&all, ents, nents, bad);
	sl_rule_set_free(&all);
	return r;
}

/* Compiles the policy of @box into its rules and kernel entries. */
static int compile_box(struct sl_box *box, struct sl_kentry **ents, size_t *nents, char *err,
		       size_t errlen)
{
	const char *chunk = box->policy_path[0] ? box->policy_path : "policy";
	struct sl_kentry bad;
	int r;

	box->lua = sl_lua_load(chunk, box->policy_src, box->policy_len, &box->reg->lua_opts,
			       box->name, &box->base, err, errlen);
	if (!box->lua)
		return -EINVAL;
	box->policy = box->base;
	if (box->handler[0]) {
		r = sl_lua_handler_egress(box->lua, box->handler, box->params, &box->hlayer, err,
					  errlen);
		if (!r)
			r = sl_lua_set_active(box->lua, box->handler, box->params, err, errlen);
		if (r)
			return r;
		if (box->hlayer)
			box->policy = box->hlayer;
	}
	r = check_unix(box->reg, box->policy, box->hlayer ? "the handler's egress" : "egress",
		       err, errlen);
	if (r)
		return r;
	r = sl_policy_rules(box->policy, &box->rules, err, errlen);
	if (r)
		return r;
	r = compile_all(box, ents, nents, &bad);
	if (r == -E2BIG) {
		char p[64];

		sl_prefix_str(bad.family, bad.addr, bad.plen, p, sizeof(p));
		sl_errf(err, errlen, "%s: too many distinct port ranges apply to %s (max %d)", chunk,
		       p, SL_MAX_PORT_RANGES);
		return -EINVAL;
	}
	if (r)
		sl_errf(err, errlen, "compiling rules failed: %s", strerror(-r));
	return r;
}

/* ---- resolved names ---- */

static int same_rule(const struct sl_addr_rule *a, const struct sl_addr_rule *b)
{
	return a->family == b->family && a->plen == b->plen && !memcmp(a->addr, b->addr, 16) &&
	       a->port_lo == b->port_lo && a->port_hi == b->port_hi && a->protos == b->protos &&
	       a->verdict == b->verdict;
}

/* Records that @name resolved to @r (or extends the expiry of the same record). */
static int learned_add(struct sl_box *box, const char *name, const struct sl_addr_rule *r)
{
	size_t cap = box->learned.cap;

	for (size_t i = 0; i < box->learned.n; i++) {
		if (same_rule(&box->learned.v[i], r) && !strcmp(box->learned_names[i], name)) {
			if (r->expires_ns > box->learned.v[i].expires_ns)
				box->learned.v[i].expires_ns = r->expires_ns;
			return 0;
		}
	}
	if (box->learned.n >= SL_LEARNED_MAX)
		return -EDQUOT; /* the sandbox's bound; -ENOSPC is the kernel map's */
	if (sl_rule_set_add(&box->learned, r))
		return -ENOMEM;
	if (box->learned.cap != cap || !box->learned_names) {
		char(*names)[SL_DNS_NAME_BUF] = realloc(box->learned_names,
							box->learned.cap * sizeof(*names));

		if (!names) {
			box->learned.n--;
			return -ENOMEM;
		}
		box->learned_names = names;
	}
	snprintf(box->learned_names[box->learned.n - 1], SL_DNS_NAME_BUF, "%s", name);
	if (!box->learned_next_ns || r->expires_ns < box->learned_next_ns)
		box->learned_next_ns = r->expires_ns;
	return 0;
}

/* ---- names across restarts ----
 *
 * The kernel keeps the addresses a sandbox resolved, not the names they were resolved for;
 * a plain-HTTP Host is judged by that binding (px_name_at), and without it a restarted
 * sluiced would take any intercepted Host at any intercepted address (review F11). So every
 * new name-address pair is appended to STATE_DIR/sandboxes/NAME.names ("family hexaddr
 * name" lines; a write() per new pair, which outlives a crash of sluiced in the page cache),
 * read back on adoption, and compacted from the live set then and whenever it grows past
 * NAMES_MAX_BYTES.
 */
#define NAMES_MAX_BYTES (4u << 20)

struct name_rec {
	uint8_t family, addr[16];
	char name[SL_DNS_NAME_BUF];
};

static void names_path(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.names", r->state_dir, name);
}

static int names_line(char *buf, size_t len, uint8_t family, const uint8_t *addr,
		      const char *name)
{
	static const char hex[] = "0123456789abcdef";
	char a[33];

	for (int i = 0; i < 16; i++) {
		a[2 * i] = hex[addr[i] >> 4];
		a[2 * i + 1] = hex[addr[i] & 15];
	}
	a[32] = 0;
	return snprintf(buf, len, "%u %s %s\n", family, a, name);
}

/* Whether @name may go in a line: a DNS name as sluice forwards it. */
static int names_ok(const char *name)
{
	if (!name[0])
		return 0;
	for (const char *q = name; *q; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
			return 0;
	return 1;
}

/* Rewrites @box's file from what it has learned now (temporary file and rename). */
static void names_rewrite(struct sl_registry *r, struct sl_box *box)
{
	char path[PATH_MAX + 128], tmp[PATH_MAX + 160], line[SL_DNS_NAME_BUF + 64];
	FILE *f;
	int fd, ok = 1;

	names_path(r, box->name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		sl_warn("sandbox %s: writing %s failed: %s", box->name, tmp, strerror(errno));
		return;
	}
	for (size_t i = 0; i < box->learned.n && ok; i++) {
		const struct sl_addr_rule *x = &box->learned.v[i];
		int dup = 0;

		if (!names_ok(box->learned_names[i]))
			continue;
		/* One line per pair, whatever its ports. */
		for (size_t k = 0; k < i && !dup; k++)
			dup = box->learned.v[k].family == x->family &&
			      !memcmp(box->learned.v[k].addr, x->addr, 16) &&
			      !strcmp(box->learned_names[k], box->learned_names[i]);
		if (dup)
			continue;
		names_line(line, sizeof(line), x->family, x->addr, box->learned_names[i]);
		ok = fputs(line, f) >= 0;
	}
	if (fclose(f) || !ok || rename(tmp, path) == -1) {
		sl_warn("sandbox %s: writing %s failed: %s", box->name, path, strerror(errno));
		unlink(tmp);
	}
}

/* @name resolved to @addr for @box, the first time: one line more. */
static void names_note(struct sl_registry *r, struct sl_box *box, const char *name,
		       uint8_t family, const uint8_t *addr)
{
	char path[PATH_MAX + 128], line[SL_DNS_NAME_BUF + 64];
	struct stat st;
	int fd, n;

	if (!names_ok(name))
		return;
	names_path(r, box->name, path, sizeof(path));
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		return;
	if (fstat(fd, &st) == 0 && st.st_size > NAMES_MAX_BYTES) {
		close(fd);
		names_rewrite(r, box); /* the live set holds the new pair already */
		return;
	}
	n = names_line(line, sizeof(line), family, addr, name);
	if (write(fd, line, n) != n)
		sl_warn("sandbox %s: appending to %s failed", box->name, path);
	close(fd);
}

/* Whether @box already knows that @name resolved to @addr. */
static int learned_knows(const struct sl_box *box, const char *name, uint8_t family,
			 const uint8_t *addr)
{
	for (size_t i = 0; i < box->learned.n; i++)
		if (box->learned.v[i].family == family && !memcmp(box->learned.v[i].addr, addr, 16) &&
		    !strcmp(box->learned_names[i], name))
			return 1;
	return 0;
}

static int name_rec_cmp(const void *a, const void *b)
{
	const struct name_rec *x = a, *y = b;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	return memcmp(x->addr, y->addr, 16);
}

/* The pairs of @box's file, sorted by address. */
static struct name_rec *names_load(struct sl_registry *r, const struct sl_box *box, size_t *n)
{
	char path[PATH_MAX + 128], line[SL_DNS_NAME_BUF + 64];
	struct name_rec *v = NULL;
	size_t cap = 0;
	FILE *f;

	*n = 0;
	names_path(r, box->name, path, sizeof(path));
	f = fopen(path, "re");
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		struct name_rec rec = { 0 };
		char a[33], name[SL_DNS_NAME_BUF];
		unsigned fam;

		if (sscanf(line, "%u %32s %254s", &fam, a, name) != 3 || strlen(a) != 32 ||
		    (fam != AF_INET && fam != AF_INET6) || !names_ok(name))
			continue; /* a line cut by a crash, or not ours */
		for (int i = 0; i < 16; i++) {
			unsigned b;

			if (sscanf(a + 2 * i, "%2x", &b) != 1)
				break;
			rec.addr[i] = (uint8_t)b;
		}
		rec.family = (uint8_t)fam;
		snprintf(rec.name, sizeof(rec.name), "%s", name);
		if (*n == cap) {
			struct name_rec *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));

			if (!nv)
				break;
			v = nv;
		}
		v[(*n)++] = rec;
	}
	fclose(f);
	if (*n)
		qsort(v, *n, sizeof(*v), name_rec_cmp);
	return v;
}


/*
 * Rewrites the kernel entry of one address of @box from its static and learned rules: the
 * merged ranges, or no entry at all when no learned rule and no static rule of exactly this
 * address remain (a covering static prefix then answers alone).
 */
static int write_addr_from(struct sl_registry *r, struct sl_box *box, uint8_t family,
			   const uint8_t *addr, const struct sl_rule_set *learned)
{
	struct sl_kentry e = { .family = family, .plen = family == AF_INET ? 32 : 128 };
	int keep = 0, err;

	memcpy(e.addr, addr, family == AF_INET ? 4 : 16);
	for (size_t i = 0; i < learned->n && !keep; i++)
		keep = learned->v[i].family == family && !memcmp(learned->v[i].addr, e.addr, 16);
	for (size_t i = 0; i < box->rules.n && !keep; i++)
		keep = box->rules.v[i].family == family && box->rules.v[i].plen == e.plen &&
		       !memcmp(box->rules.v[i].addr, e.addr, 16);
	if (keep) {
		err = sl_rules_merge(&box->rules, family, e.addr, e.plen, &e.val);
		if (!err)
			err = sl_rules_merge(learned, family, e.addr, e.plen, &e.val);
		if (err)
			return err;
	}
	return sl_bpf_set_rule(r->bpf, box->rules_id, &e);
}

/* write_addr_from() with all the learned rules of @box (which it scans: O(learned)). */
static int write_addr(struct sl_registry *r, struct sl_box *box, uint8_t family,
		      const uint8_t *addr)
{
	return write_addr_from(r, box, family, addr, &box->learned);
}

static const char *dns_name(void *owner)
{
	return ((struct sl_box *)owner)->name;
}

static size_t dns_grants(void *owner, const char *qname, struct sl_grant *g, size_t max)
{
	struct sl_box *box = owner;

	return box->policy ? sl_policy_name_grants(box->policy, qname, g, max) : 0;
}

/* The kernel half of a DNS answer (struct sl_dns_ops.learn). */
static int dns_learn(void *owner, const char *qname, const struct sl_dns_answer *a,
		     uint8_t blocked[SL_DNS_MAX_ADDRS])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct sl_box *box = owner;
	struct sl_registry *r = box->reg;
	struct sl_grant g[16];
	size_t ng = dns_grants(box, qname, g, 16);
	uint64_t now = sl_now_ns();
	int err, known;

	for (size_t i = 0; i < a->naddr; i++) {
		const struct sl_dns_addr *x = &a->addr[i];
		uint8_t family = x->family, addr[16] = { 0 };
		uint32_t ttl = x->ttl_s;

		/* The kernel judges v4-mapped destinations by the IPv4 rules. */
		if (family == AF_INET6 && !memcmp(x->addr, mapped, 12)) {
			family = AF_INET;
			memcpy(addr, x->addr + 12, 4);
		} else {
			memcpy(addr, x->addr, family == AF_INET ? 4 : 16);
		}
		if (!ng || !sl_policy_addr_permitted(box->policy, family, addr)) {
			blocked[i] = 1;
			continue;
		}
		ttl = ttl < r->ttl.min_s ? r->ttl.min_s : ttl > r->ttl.max_s ? r->ttl.max_s : ttl;
		for (size_t k = 0; k < ng; k++) {
			struct sl_addr_rule rule = {
				.family = family,
				.plen = family == AF_INET ? 32 : 128,
				.port_lo = g[k].lo,
				.port_hi = g[k].hi,
				.protos = g[k].protos,
				.verdict = g[k].verdict,
				.expires_ns = now + (uint64_t)(ttl + r->ttl.grace_s) * 1000000000ULL /
							  (r->ttl.time_scale ? r->ttl.time_scale : 1),
			};

			memcpy(rule.addr, addr, 16);
			known = k || learned_knows(box, qname, family, addr);
			err = learned_add(box, qname, &rule);
			if (!err && !known)
				names_note(r, box, qname, family, addr);
			if (err) {
				sl_err("sandbox %s: recording %s failed: %s", box->name, qname,
				       err == -EDQUOT ? "too many resolved addresses" :
							strerror(-err));
				return err;
			}
		}
		err = write_addr(r, box, family, addr);
		if (err) {
			sl_err("sandbox %s: installing an address of %s failed: %s", box->name,
			       qname, err == -ENOSPC ? "the kernel rule map is full" :
						       strerror(-err));
			return err;
		}
	}
	return 0;
}

static const struct sl_dns_ops dns_ops = {
	.name = dns_name,
	.grants = dns_grants,
	.learn = dns_learn,
};

static int cmp_rule_addr(const void *a, const void *b)
{
	const struct sl_addr_rule *x = a, *y = b;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	return memcmp(x->addr, y->addr, 16);
}

/*
 * Drops expired resolutions from memory and from the kernel (which already ignores them).
 * Nothing to do before the earliest expiry (box->learned_next_ns), so most sweeps cost
 * nothing. A sweep that drops k of n entries costs O(n + (n + k) log n): one pass that
 * compacts the survivors, then the survivors sorted by address so that each address that lost
 * an entry is rewritten from its own few rules (a binary search), not from a scan of all n
 * (review F13: 16k entries expiring together were 10^8 comparisons on the loop).
 */
static void sweep_box(struct sl_registry *r, struct sl_box *box, uint64_t now)
{
	struct sl_addr_rule *gone = NULL, *kept = NULL;
	size_t ngone = 0, n = 0, total = box->learned.n;
	uint64_t next = 0, t0 = sl_now_ns();

	if (!box->learned.n || (box->learned_next_ns && box->learned_next_ns > now))
		return;
	gone = malloc(box->learned.n * sizeof(*gone));
	kept = malloc(box->learned.n * sizeof(*kept));
	if (!gone || !kept)
		goto cleanup; /* next sweep */
	for (size_t i = 0; i < box->learned.n; i++) {
		const struct sl_addr_rule *x = &box->learned.v[i];

		if (x->expires_ns <= now) {
			gone[ngone++] = *x;
			continue;
		}
		if (!next || x->expires_ns < next)
			next = x->expires_ns;
		if (n != i) {
			box->learned.v[n] = *x;
			memcpy(box->learned_names[n], box->learned_names[i], SL_DNS_NAME_BUF);
		}
		n++;
	}
	box->learned.n = n;
	box->learned_next_ns = next;
	if (!ngone)
		goto cleanup;
	memcpy(kept, box->learned.v, n * sizeof(*kept));
	qsort(kept, n, sizeof(*kept), cmp_rule_addr);
	qsort(gone, ngone, sizeof(*gone), cmp_rule_addr);
	for (size_t k = 0; k < ngone; k++) {
		struct sl_rule_set at = { 0 };
		size_t lo = 0, hi = n;
		int err;

		if (k && !cmp_rule_addr(&gone[k - 1], &gone[k]))
			continue; /* that address is done */
		while (lo < hi) { /* the first survivor at or after this address */
			size_t mid = lo + (hi - lo) / 2;

			if (cmp_rule_addr(&kept[mid], &gone[k]) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		at.v = kept + lo;
		while (lo + at.n < n && !cmp_rule_addr(&kept[lo + at.n], &gone[k]))
			at.n++;
		at.cap = at.n;
		err = write_addr_from(r, box, gone[k].family, gone[k].addr, &at);
		if (err)
			sl_warn("sandbox %s: removing an expired entry failed: %s", box->name,
				strerror(-err));
	}
	sl_debug("sandbox %s: swept %zu of %zu resolved addresses in %llu us", box->name, ngone,
		 total, (unsigned long long)(sl_now_ns() - t0) / 1000);
cleanup:
	free(gone);
	free(kept);
}

static void sweep_cb(struct sl_loop *loop, void *arg)
{
	struct sl_registry *r = arg;
	uint64_t now = sl_now_ns();

	int px = ++r->px_sweeps >= PROXIED_SWEEPS;

	if (px)
		r->px_sweeps = 0;
	for (struct sl_box *b = r->head; b; b = b->next) {
		sweep_box(r, b, now);
		/* Records of intercepted connections nobody accepted (the sandbox aimed them at
		 * a listener of its own, or the client vanished unseen): they count against the
		 * sandbox's quota until they go. */
		if (px)
			b->proxied_swept += (uint64_t)sl_bpf_proxied_sweep(
				r->bpf, b->id, now, SL_PROXIED_MAX_AGE_S * 1000000000ULL);
	}
	reap_vanished(r);
	r->sweep = sl_loop_add_timer(loop, SWEEP_MS, sweep_cb, r);
}

/* Opens the sandbox's DNS listener (on its previous port if it had one). */
static int open_dns(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	if (!r->dns || box->dns)
		return 0;
	box->dns = sl_dns_listen(r->dns, &dns_ops, box, box->dns_port, box->netns_fd, err, errlen);
	if (!box->dns)
		return -EIO;
	box->dns_port = sl_dns_listener_port(box->dns);
	return 0;
}

/* ---- the proxy's questions ---- */

static uint32_t px_id(void *owner)
{
	return ((struct sl_box *)owner)->id;
}

static int px_name_verdict(void *owner, const char *host)
{
	struct sl_box *box = owner;

	return box->policy ? sl_policy_name_verdict(box->policy, host) : SL_VERDICT_DENY;
}

static int learned_at(const struct sl_addr_rule *r, uint8_t family, const uint8_t *addr)
{
	return r->verdict == SL_VERDICT_PROXY && r->family == family &&
	       !memcmp(r->addr, addr, family == AF_INET ? 4 : 16);
}

static int px_name_at(void *owner, const char *host, uint8_t family, const uint8_t *addr)
{
	struct sl_box *box = owner;
	int unknown = 0;

	for (size_t i = 0; i < box->learned.n; i++) {
		if (!learned_at(&box->learned.v[i], family, addr))
			continue;
		if (!strcmp(box->learned_names[i], host))
			return 1;
		unknown |= !box->learned_names[i][0];
	}
	/* Resolved before a restart: the name is not known, the policy still decides. */
	return unknown && px_name_verdict(owner, host) == SL_VERDICT_PROXY;
}

static int px_only_name_at(void *owner, uint8_t family, const uint8_t *addr, char *buf,
			   size_t len)
{
	struct sl_box *box = owner;
	const char *found = NULL;

	for (size_t i = 0; i < box->learned.n; i++) {
		if (!learned_at(&box->learned.v[i], family, addr))
			continue;
		if (!box->learned_names[i][0])
			return 0;
		if (px_name_verdict(owner, box->learned_names[i]) != SL_VERDICT_PROXY)
			continue; /* a passthrough name checked by SNI: never served without it */
		if (found && strcmp(found, box->learned_names[i]))
			return 0; /* several names share the address */
		found = box->learned_names[i];
	}
	if (!found)
		return 0;
	snprintf(buf, len, "%s", found);
	return 1;
}

static struct sl_ca *px_ca(void *owner)
{
	return ((struct sl_box *)owner)->ca;
}

static int px_handle(void *owner, struct sl_px_xchg *x)
{
	struct sl_box *box = owner;

	return box->lua ? sl_lua_handle(box->lua, x) : 1;
}

static int px_name_port(void *owner, const char *host, uint16_t port)
{
	struct sl_box *box = owner;

	return box->policy ? sl_policy_name_port(box->policy, host, port) : SL_NAME_DENY;
}

static int px_resolved_at(void *owner, const char *host, uint8_t family, const uint8_t *addr,
			  uint16_t port)
{
	struct sl_box *box = owner;
	int unknown = 0;

	for (size_t i = 0; i < box->learned.n; i++) {
		const struct sl_addr_rule *x = &box->learned.v[i];

		if (x->verdict == SL_VERDICT_DENY || x->family != family ||
		    memcmp(x->addr, addr, family == AF_INET ? 4 : 16) || port < x->port_lo ||
		    port > x->port_hi || !(x->protos & SL_PROTO_TCP))
			continue;
		if (!strcmp(box->learned_names[i], host))
			return 1;
		unknown |= !box->learned_names[i][0];
	}
	/* Resolved before a restart: the name is not known, the policy still decides. */
	return unknown && px_name_port(owner, host, port) != SL_NAME_DENY;
}

static const struct sl_proxy_ops proxy_ops = {
	.name_port = px_name_port,
	.resolved_at = px_resolved_at,
	.handle = px_handle,
	.name = dns_name,
	.id = px_id,
	.name_verdict = px_name_verdict,
	.name_at = px_name_at,
	.only_name_at = px_only_name_at,
	.ca = px_ca,
};

static void ca_dir(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.ca", r->state_dir, name);
}

/* The sandbox's CA: the one saved for it, or a new one. */
static int open_ca(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	char dir[PATH_MAX + 128];
	int e;

	if (box->ca)
		return 0;
	ca_dir(r, box->name, dir, sizeof(dir));
	box->ca = sl_ca_load(dir);
	if (box->ca)
		return 0;
	if (errno != ENOENT) {
		sl_errf(err, errlen, "the CA saved in %s cannot be used: %s", dir, strerror(errno));
		return -errno;
	}
	box->ca = sl_ca_new(box->name);
	if (!box->ca) {
		sl_errf(err, errlen, "creating the sandbox CA failed: %s", strerror(errno));
		return -errno;
	}
	e = mkdir(dir, 0700) == -1 && errno != EEXIST ? -errno : sl_ca_save(box->ca, dir);
	if (e) {
		sl_errf(err, errlen, "saving the sandbox CA in %s failed: %s", dir, strerror(-e));
		return e;
	}
	return 0;
}

static void remove_ca(struct sl_registry *r, const char *name)
{
	char dir[PATH_MAX + 128], path[PATH_MAX + 160];

	ca_dir(r, name, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	unlink(path);
	rmdir(dir);
}

/* Opens the sandbox's proxy listener (on its previous port if it had one). */
static int open_proxy(struct sl_registry *r, struct sl_box *box, char *err, size_t errlen)
{
	if (!r->proxy || box->proxy)
		return 0;
	box->proxy = sl_proxy_listen(r->proxy, &proxy_ops, box, box->proxy_port, box->netns_fd,
				     err, errlen);
	if (!box->proxy)
		return -EIO;
	box->proxy_port = sl_proxy_listener_port(box->proxy);
	return 0;
}

char *sl_sandbox_ca_pem(const struct sl_box *box)
{
	return box->ca ? sl_ca_cert_pem(box->ca) : NULL;
}

/* Registers or forgets (@sandbox_id 0) the listener addresses of @box in the kernel. */
static void set_listeners(struct sl_registry *r, const struct sl_box *box, uint32_t sandbox_id)
{
	uint32_t lo4 = htonl(INADDR_LOOPBACK);
	uint16_t ports[2] = { box->dns_port, box->proxy_port };

	for (int i = 0; i < 2; i++) {
		if (!ports[i])
			continue;
		/* Listeners in different network namespaces may share a port, and the kernel's
		 * table knows no namespaces: forget a port only when no other sandbox has it. */
		for (const struct sl_box *o = r->head; o && !sandbox_id && ports[i]; o = o->next)
			if (o != box && (o->dns_port == ports[i] || o->proxy_port == ports[i]))
				ports[i] = 0;
		if (!ports[i])
			continue;
		sl_bpf_set_listener(r->bpf, AF_INET, (const uint8_t *)&lo4, htons(ports[i]),
				    sandbox_id);
		sl_bpf_set_listener(r->bpf, AF_INET6, in6addr_loopback.s6_addr, htons(ports[i]),
				    sandbox_id);
	}
}

/* The sandbox table entry of @box; registers its listeners with the kernel. */
static void kernel_entry(struct sl_registry *r, const struct sl_box *box, struct sl_sandbox *ksb)
{
	memset(ksb, 0, sizeof(*ksb));
	ksb->id = box->id;
	ksb->rules_id = box->rules_id;
	if (box->dns) {
		ksb->flags |= SL_SB_DNS;
		ksb->dns_ip4 = htonl(INADDR_LOOPBACK);
		memcpy(ksb->dns_ip6, in6addr_loopback.s6_addr, 16);
		ksb->dns_port = htons(box->dns_port);
	}
	if (box->proxy) {
		ksb->flags |= SL_SB_PROXY;
		ksb->proxy_ip4 = htonl(INADDR_LOOPBACK);
		memcpy(ksb->proxy_ip6, in6addr_loopback.s6_addr, 16);
		ksb->proxy_port = htons(box->proxy_port);
	}
	set_listeners(r, box, box->id);
}

/* Programs the kernel for @box: rules, then the sandbox entry, then the links. */
static int install_box(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
		       size_t nents, char *err, size_t errlen)
{
	struct sl_sandbox ksb;
	int e;

	e = open_dns(r, box, err, errlen);
	if (!e)
		e = open_ca(r, box, err, errlen);
	if (!e)
		e = open_proxy(r, box, err, errlen);
	if (e)
		return e;
	e = sl_bpf_proxied_open(r->bpf, box->id);
	if (e) {
		sl_errf(err, errlen, "creating the sandbox's sl_proxied map failed: %s",
			strerror(-e));
		return e;
	}
	kernel_entry(r, box, &ksb);
	e = sl_bpf_sync_rules(r->bpf, box->rules_id, ents, nents);
	if (!e)
		e = sync_unix(r, box->rules_id, box->policy);
	if (e) {
		sl_errf(err, errlen, "writing kernel rules failed: %s",
			e == -ENOSPC || e == -E2BIG ? "the kernel rule map is full (SL_MAX_RULES "
						      "addresses, or SL_MAX_UNIX_RULES UNIX "
						      "sockets, of all sandboxes together)" :
						      strerror(-e));
		return e;
	}
	e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb);
	if (e) {
		sl_errf(err, errlen, "writing the sandbox table failed: %s", strerror(-e));
		return e;
	}
	e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid,
			  sl_policy_needs_proxy(box->policy));
	if (e) {
		sl_errf(err, errlen, "attaching to %s failed: %s", box->cgroup, strerror(-e));
		return e;
	}
	return 0;
}

/* Undoes install_box(). */
static void uninstall_box(struct sl_registry *r, struct sl_box *box)
{
	int e;

	sl_dns_listener_close(box->dns);
	box->dns = NULL;
	sl_proxy_listener_close(box->proxy);
	box->proxy = NULL;
	set_listeners(r, box, 0);
	remove_ca(r, box->name);
	e = sl_bpf_detach(r->bpf, box->name);
	if (e)
		sl_err("detaching sandbox %s failed: %s", box->name, strerror(-e));
	sl_bpf_del_sandbox(r->bpf, box->cgid);
	sl_bpf_proxied_drop(r->bpf, box->id);
	e = sl_bpf_sync_rules(r->bpf, box->id, NULL, 0);
	if (!e)
		e = sl_bpf_sync_rules(r->bpf, box->id | SL_RULES_BANK, NULL, 0);
	if (!e)
		e = sync_unix(r, box->id, NULL);
	if (!e)
		e = sync_unix(r, box->id | SL_RULES_BANK, NULL);
	if (e)
		sl_err("clearing rules of sandbox %s failed: %s", box->name, strerror(-e));
	sl_bpf_reset_slots(r->bpf, box->id);
}

static void link_box(struct sl_registry *r, struct sl_box *box)
{
	struct sl_box **pp = &r->head;

	/* Keep the list sorted by name: ls output is stable. */
	while (*pp && strcmp((*pp)->name, box->name) < 0)
		pp = &(*pp)->next;
	box->next = *pp;
	*pp = box;
	r->count++;
}

static void unlink_box(struct sl_registry *r, struct sl_box *box)
{
	for (struct sl_box **pp = &r->head; *pp; pp = &(*pp)->next) {
		if (*pp == box) {
			*pp = box->next;
			r->count--;
			return;
		}
	}
}

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
	return 0;
}

/* Where a new sandbox lives: its cgroup (given, or the process's) and its network namespace
 * (given, the process's, or sluiced's own). */
static int box_target(struct sl_box *box, const struct sl_box_spec *spec, char *err,
		      size_t errlen)
{
	struct sl_netns_id id;
	int fd, e;

	if (spec->pid > 0) {
		if ((spec->cgroup && *spec->cgroup) || (spec->netns && *spec->netns)) {
			sl_errf(err, errlen, "a pid names the cgroup and the network namespace: "
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
static int adopt_netns(struct sl_box *box, json_t *j)
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
	sl_sandbox_rm(r, copy);
}

/*
 * Removes the sandboxes left with nothing to enforce (loop thread, from the sweep): whose
 * cgroup was removed (or replaced by another of the same path) and, judged every
 * NETNS_CHECK_SWEEPS sweeps, those with a network namespace whose cgroup is empty and whose
 * namespace no process and no mount holds any more: sluiced's own fd keeps a namespace alive
 * in the kernel, so "gone" means nobody else could still use it.
 */
static void reap_vanished(struct sl_registry *r)
{
	char (*names)[SL_NAME_MAX + 1] = NULL;
	struct sl_netns_id *ids = NULL;
	uint8_t *used = NULL;
	size_t n = 0;

	for (struct sl_box *b = r->head, *next; b; b = next) {
		uint64_t now_cgid;
		int e = sl_cgroup_id(b->cgroup, &now_cgid);

		next = b->next;
		if (e != -ENOENT && (e || now_cgid == b->cgid))
			continue;
		reap(r, b->name, "its cgroup was removed");
	}
	if (++r->netns_sweeps < NETNS_CHECK_SWEEPS)
		return;
	r->netns_sweeps = 0;
	names = calloc(r->count + 1, sizeof(*names));
	ids = calloc(r->count + 1, sizeof(*ids));
	used = calloc(r->count + 1, 1);
	if (!names || !ids || !used)
		goto out;
	for (struct sl_box *b = r->head; b; b = b->next) {
		if (b->netns_fd < 0 || sl_cgroup_populated(b->cgroup) != 0)
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

struct sl_box *sl_sandbox_add(struct sl_registry *r, const struct sl_box_spec *spec, char *err,
			      size_t errlen)
{
	struct sl_kentry *ents = NULL;
	struct sl_box *box = NULL;
	size_t nents = 0;
	int e, level;

	if (!spec->name || !sl_sandbox_name_ok(spec->name)) {
		sl_errf(err, errlen, "invalid sandbox name '%s' (letters, digits, '_', '.', '-'; "
				    "at most %d)", spec->name ? spec->name : "", SL_NAME_MAX);
		e = -EINVAL;
		goto fail;
	}
	if (sl_sandbox_find(r, spec->name)) {
		sl_errf(err, errlen, "sandbox '%s' already exists", spec->name);
		e = -EEXIST;
		goto fail;
	}
	if (spec->pid <= 0 && (!spec->cgroup || !*spec->cgroup)) {
		sl_errf(err, errlen, "a cgroup path (or a pid) is required");
		e = -EINVAL;
		goto fail;
	}
	box = calloc(1, sizeof(*box));
	if (!box) {
		e = -ENOMEM;
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	box->netns_fd = -1;
	snprintf(box->name, sizeof(box->name), "%s", spec->name);
	box->reg = r;
	sl_rule_set_init(&box->rules);
	sl_rule_set_init(&box->learned);
	if (spec->container_id) {
		size_t n = strlen(spec->container_id);

		if (!n || n > SL_CONTAINER_ID_MAX ||
		    strspn(spec->container_id, "abcdefghijklmnopqrstuvwxyz"
					       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-") != n) {
			sl_errf(err, errlen, "invalid container id (letters, digits, '_', '.', "
					    "'+', '-'; at most %d)", SL_CONTAINER_ID_MAX);
			e = -EINVAL;
			goto fail;
		}
		snprintf(box->container_id, sizeof(box->container_id), "%s", spec->container_id);
	}
	e = box_target(box, spec, err, errlen);
	if (e)
		goto fail;
	if (!spec->allow_writable_cgroup) {
		char which[PATH_MAX + 32];

		e = sl_cgroup_user_writable(box->cgroup, which, sizeof(which));
		if (e > 0) {
			sl_errf(err, errlen,
				"cgroup %s: %s can be written by a user other than root, who "
				"could move processes out of the sandbox; if that user is "
				"trusted, add it with --allow-writable-cgroup (API: "
				"\"allow_writable_cgroup\": true)",
				box->cgroup, which);
			e = -EPERM;
			goto fail;
		}
		if (e < 0) {
			sl_errf(err, errlen, "cgroup %s: checking who may write it failed: %s",
			       box->cgroup, strerror(-e));
			goto fail;
		}
	}
	level = sl_cgroup_level(box->cgroup);
	if (level < 0 || level >= SL_MAX_CGROUP_DEPTH - 1) {
		sl_errf(err, errlen, "cgroup %s: nested too deep (at most %d levels)", box->cgroup,
		       SL_MAX_CGROUP_DEPTH - 2);
		e = -EINVAL;
		goto fail;
	}
	for (struct sl_box *o = r->head; o; o = o->next) {
		if (sl_cgroup_within(box->cgroup, o->cgroup) ||
		    sl_cgroup_within(o->cgroup, box->cgroup)) {
			sl_errf(err, errlen, "cgroup %s overlaps sandbox '%s' (%s)", box->cgroup,
			       o->name, o->cgroup);
			e = -EEXIST;
			goto fail;
		}
	}
	e = sl_cgroup_id(box->cgroup, &box->cgid);
	if (e) {
		sl_errf(err, errlen, "cgroup %s: reading its id failed: %s", box->cgroup,
		       strerror(-e));
		goto fail;
	}
	if (spec->policy_path)
		snprintf(box->policy_path, sizeof(box->policy_path), "%s", spec->policy_path);
	if (spec->policy_src) {
		if (spec->policy_len > POLICY_MAX_BYTES) {
			sl_errf(err, errlen, "policy too large (max %u bytes)", POLICY_MAX_BYTES);
			e = -EINVAL;
			goto fail;
		}
		box->policy_src = malloc(spec->policy_len + 1);
		if (!box->policy_src) {
			e = -ENOMEM;
			sl_errf(err, errlen, "out of memory");
			goto fail;
		}
		memcpy(box->policy_src, spec->policy_src, spec->policy_len);
		box->policy_src[spec->policy_len] = 0;
		box->policy_len = spec->policy_len;
	} else if (spec->policy_path && *spec->policy_path) {
		e = read_file(spec->policy_path, &box->policy_src, &box->policy_len);
		if (e) {
			sl_errf(err, errlen, "policy file %s: %s", spec->policy_path,
			       e == -EFBIG ? "too large" : strerror(-e));
			e = -EINVAL;
			goto fail;
		}
	} else {
		sl_errf(err, errlen, "a policy file is required");
		e = -EINVAL;
		goto fail;
	}
	if (spec->handler && *spec->handler) {
		snprintf(box->handler, sizeof(box->handler), "%s", spec->handler);
		box->params = spec->params ? strdup(spec->params) : NULL;
		box->handler_since_s = time(NULL);
	}
	e = compile_box(box, &ents, &nents, err, errlen);
	if (e) {
		e = e == -ENOMEM ? e : -EINVAL;
		goto fail;
	}
	box->id = alloc_id(r);
	if (!box->id) {
		sl_errf(err, errlen, "too many sandboxes (max %d)", SL_MAX_SANDBOXES - 1);
		e = -ENOSPC;
		goto fail;
	}
	box->rules_id = box->id;
	box->created_s = time(NULL);

	/* Nothing of this sandbox can be in the kernel yet, but a slot may hold counters of a
	 * sandbox that had the same id. */
	sl_bpf_reset_slots(r->bpf, box->id);
	/* Nor may it meet a record of that sandbox's connections: a new map. */
	sl_bpf_proxied_drop(r->bpf, box->id);
	e = install_box(r, box, ents, nents, err, errlen);
	if (!e) {
		e = save_state(r, box);
		if (e)
			sl_errf(err, errlen, "saving state failed: %s", strerror(-e));
	}
	if (e) {
		uninstall_box(r, box);
		goto fail;
	}
	link_box(r, box);
	free(ents);
	sl_info("sandbox %s added: cgroup %s (id %llu)%s%s, %zu kernel entries", box->name,
		box->cgroup, (unsigned long long)box->cgid, box->netns_fd >= 0 ? ", netns " : "",
		box->netns_fd >= 0 ? box->netns : "", nents);
	return box;
fail:
	free(ents);
	box_free(box);
	errno = -e;
	return NULL;
}

/* ---- switching layers ---- */

/* Whether a flow of @box to @dst:@dport is one the kernel would no longer let through. */
static int flow_condemned(void *arg, uint8_t family, uint8_t proto, const uint8_t *dst,
			  uint16_t dport)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct sl_box *box = arg;
	uint8_t addr[16] = { 0 };
	struct sl_rule val = { 0 };
	uint8_t bit = proto == IPPROTO_TCP ? SL_PROTO_TCP : SL_PROTO_UDP;
	uint64_t now = sl_now_ns();
	int verdict = SL_VERDICT_DENY;

	if (family == AF_INET6 && !memcmp(dst, mapped, 12)) {
		family = AF_INET;
		memcpy(addr, dst + 12, 4);
	} else {
		memcpy(addr, dst, family == AF_INET ? 4 : 16);
	}
	/* Connections to the sandbox's own listeners are the proxy's and the DNS listener's
	 * (sl_proxy_listener_revalidate judges those by name). */
	if ((dport == box->dns_port || dport == box->proxy_port) &&
	    ((family == AF_INET && addr[0] == 127) ||
	     (family == AF_INET6 && !memcmp(addr, in6addr_loopback.s6_addr, 16))))
		return 0;
	if (sl_rules_merge(&box->rules, family, addr, family == AF_INET ? 32 : 128, &val) ||
	    sl_rules_merge(&box->learned, family, addr, family == AF_INET ? 32 : 128, &val))
		return 1; /* cannot tell: fail closed */
	for (uint32_t i = 0; i < val.n && i < SL_MAX_PORT_RANGES; i++) {
		const struct sl_port_range *pr = &val.r[i];

		if (dport >= pr->lo && dport <= pr->hi && (pr->protos & bit) &&
		    (!pr->expires_ns || pr->expires_ns > now) && pr->verdict > verdict)
			verdict = pr->verdict;
	}
	return verdict != SL_VERDICT_ALLOW;
}

/* The cgroup ids of @path and every cgroup below it (sockets carry the one they were made
 * in). */
static int subtree_cgids(const char *path, uint64_t **ids, size_t *n, size_t *cap, int depth)
{
	DIR *d;
	struct dirent *de;
	uint64_t id;
	int e = 0;

	if (depth > SL_MAX_CGROUP_DEPTH || sl_cgroup_id(path, &id))
		return 0;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		uint64_t *v = realloc(*ids, c * sizeof(*v));

		if (!v)
			return -ENOMEM;
		*ids = v;
		*cap = c;
	}
	(*ids)[(*n)++] = id;
	d = opendir(path);
	if (!d)
		return 0;
	while (!e && (de = readdir(d))) {
		char sub[PATH_MAX];

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= (int)sizeof(sub))
			continue;
		e = subtree_cgids(sub, ids, n, cap, depth + 1);
	}
	closedir(d);
	return e;
}

static size_t kill_flows(struct sl_box *box)
{
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0, killed = 0;
	int e;

	e = subtree_cgids(box->cgroup, &ids, &n, &cap, 0);
	if (!e && n)
		e = sl_sockdiag_destroy(box->netns_fd, ids, n, flow_condemned, box, &killed);
	if (e)
		sl_err("sandbox %s: closing flows the policy no longer allows failed: %s",
		       box->name, strerror(-e));
	free(ids);
	return killed;
}

static void switch_event(struct sl_registry *r, const struct sl_box *box, const char *what,
			 const char *old, const char *who, const struct sl_switch_result *res)
{
	json_t *j;

	if (!r->lua_opts.events)
		return;
	j = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s, s:I, s:I, s:I}", "type", "handler",
		      "sandbox", box->name, "action", what, "old", old[0] ? old : NULL, "new",
		      box->handler[0] ? box->handler : NULL, "by", who ? who : "?",
		      "closed_kernel", (json_int_t)res->closed_kernel, "closed_proxy",
		      (json_int_t)res->closed_proxy, "dns_dropped", (json_int_t)res->dns_dropped);
	if (j && box->params) {
		json_t *p = json_loads(box->params, 0, NULL);

		if (p)
			json_object_set_new(j, "params", p);
	}
	sl_events_publish(r->lua_opts.events, box->name, j);
}

/*
 * Moves @box to the layer of (@lua, @base, @handler, @params): everything is computed first
 * (nothing changes on error), then the new rules go into the kernel under the other rule bank
 * and one update of the sandbox's entry makes them the ones in force. The old bank is
 * cleared after. On success @box owns @lua and @base.
 */
static int switch_layer(struct sl_registry *r, struct sl_box *box, struct sl_lua *lua,
			struct sl_policy *base, const char *handler, const char *params,
			struct sl_switch_result *res, char *err, size_t errlen)
{
	const struct sl_policy *old_layer = box->policy, *layer;
	struct sl_policy *hl = NULL;
	struct sl_box *nb = calloc(1, sizeof(*nb));
	struct sl_kentry *ents = NULL, bad;
	size_t nents = 0;
	struct sl_sandbox ksb;
	uint32_t bank, old_bank = box->rules_id;
	char *params_copy = NULL;
	int e = 0, was_icpt, now_icpt;

	memset(res, 0, sizeof(*res));
	if (!nb) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	sl_rule_set_init(&nb->rules);
	sl_rule_set_init(&nb->learned);
	if (handler && *handler) {
		if (strlen(handler) >= sizeof(box->handler)) {
			sl_errf(err, errlen, "handler name too long");
			e = -EINVAL;
			goto out;
		}
		e = sl_lua_handler_egress(lua, handler, params, &hl, err, errlen);
		if (e)
			goto out;
		if (params && !(params_copy = strdup(params))) {
			e = -ENOMEM;
			goto out;
		}
	}
	layer = hl ? hl : base;
	e = check_unix(r, layer, hl ? "the handler's egress" : "egress", err, errlen);
	if (e)
		goto out;
	e = sl_policy_rules(layer, &nb->rules, err, errlen);
	if (e)
		goto out;
	/* What resolved under the old layer stays only where the new one gives the name. */
	for (size_t i = 0; i < box->learned.n && !e; i++) {
		const struct sl_addr_rule *x = &box->learned.v[i];
		const char *name = box->learned_names[i];
		struct sl_grant g[16];
		size_t ng = 0;

		if (name[0] && sl_policy_addr_permitted(layer, x->family, x->addr))
			ng = sl_policy_name_grants(layer, name, g, 16);
		if (!ng)
			res->dns_dropped++;
		for (size_t k = 0; k < ng && !e; k++) {
			struct sl_addr_rule y = *x;

			y.port_lo = g[k].lo;
			y.port_hi = g[k].hi;
			y.protos = g[k].protos;
			y.verdict = g[k].verdict;
			e = learned_add(nb, name, &y);
		}
	}
	if (!e)
		e = compile_all(nb, &ents, &nents, &bad);
	if (e) {
		sl_errf(err, errlen, "compiling the new rules failed: %s",
			e == -E2BIG ? "too many port ranges for one address" :
			e == -EDQUOT ? "too many resolved addresses" : strerror(-e));
		goto out;
	}
	e = sl_lua_set_active(lua, handler && *handler ? handler : NULL, params, err, errlen);
	if (e)
		goto out;

	/* From here on the kernel follows. */
	bank = (box->rules_id & SL_RULES_BANK) ? box->id : box->id | SL_RULES_BANK;
	e = sl_bpf_sync_rules(r->bpf, bank, ents, nents);
	if (!e)
		e = sync_unix(r, bank, layer);
	was_icpt = sl_policy_needs_proxy(old_layer);
	now_icpt = sl_policy_needs_proxy(layer);
	if (!e && now_icpt && !was_icpt)
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 1);
	if (!e) {
		box->rules_id = bank;
		kernel_entry(r, box, &ksb);
		e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb); /* the switch */
		if (e)
			box->rules_id = old_bank;
	}
	if (e) {
		sl_bpf_sync_rules(r->bpf, bank, NULL, 0);
		sync_unix(r, bank, NULL);
		sl_lua_set_active(box->lua, box->handler[0] ? box->handler : NULL, box->params,
				  err, errlen);
		sl_errf(err, errlen, "writing the kernel rules failed: %s", strerror(-e));
		goto out;
	}
	e = sl_bpf_sync_rules(r->bpf, old_bank, NULL, 0);
	if (!e)
		e = sync_unix(r, old_bank, NULL);
	if (e)
		sl_warn("sandbox %s: clearing the old rule bank failed: %s", box->name,
			strerror(-e));
	e = 0;
	if (!now_icpt && was_icpt)
		sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 0);

	/* The sandbox's own state follows. */
	{
		struct sl_rule_set t = box->rules;
		char(*tn)[SL_DNS_NAME_BUF] = box->learned_names;

		box->rules = nb->rules;
		nb->rules = t;
		t = box->learned;
		box->learned = nb->learned;
		nb->learned = t;
		box->learned_names = nb->learned_names;
		nb->learned_names = tn;
		box->learned_next_ns = 0; /* unknown: the next sweep finds it */
	}
	if (lua != box->lua) {
		sl_lua_unref(box->lua);
		box->lua = lua;
	}
	if (base != box->base) {
		sl_policy_free(box->base);
		box->base = base;
	}
	sl_policy_free(box->hlayer);
	box->hlayer = hl;
	hl = NULL;
	box->policy = box->hlayer ? box->hlayer : box->base;
	if (handler && *handler) {
		if (strcmp(box->handler, handler) || !box->handler_since_s)
			box->handler_since_s = time(NULL);
		snprintf(box->handler, sizeof(box->handler), "%s", handler);
	} else {
		box->handler[0] = 0;
		box->handler_since_s = 0;
	}
	free(box->params);
	box->params = params_copy;
	params_copy = NULL;
	box->switches++;

	/* Open flows the new layer does not allow. */
	res->closed_proxy = box->proxy ? sl_proxy_listener_revalidate(box->proxy) : 0;
	res->closed_kernel = kill_flows(box);
	e = save_state(r, box);
	if (e) {
		sl_warn("sandbox %s: saving state failed: %s", box->name, strerror(-e));
		e = 0; /* in force now; a restart would come back with the previous layer */
	}
out:
	free(ents);
	free(params_copy);
	sl_policy_free(hl);
	sl_rule_set_free(&nb->rules);
	sl_rule_set_free(&nb->learned);
	free(nb->learned_names);
	free(nb);
	return e;
}

int sl_sandbox_set_handler(struct sl_registry *r, struct sl_box *box, const char *handler,
			   const char *params, const char *who, struct sl_switch_result *res,
			   char *err, size_t errlen)
{
	char old[sizeof(box->handler)];
	int e;

	if (!box->lua) {
		sl_errf(err, errlen, "sandbox %s has no working policy", box->name);
		return -EINVAL;
	}
	if (handler && !sl_lua_handler_exists(box->lua, handler)) {
		sl_errf(err, errlen, "the policy of %s has no handler '%s' in outboundHandlers",
			box->name, handler);
		return -ENOENT;
	}
	snprintf(old, sizeof(old), "%s", box->handler);
	e = switch_layer(r, box, box->lua, box->base, handler, params, res, err, errlen);
	if (e)
		return e;
	sl_info("sandbox %s: handler %s -> %s (by %s; closed %zu flows, %zu proxied)",
		box->name, old[0] ? old : "(policy)", box->handler[0] ? box->handler : "(policy)",
		who ? who : "?", res->closed_kernel, res->closed_proxy);
	switch_event(r, box, handler ? "set" : "clear", old, who, res);
	return 0;
}

int sl_sandbox_reload(struct sl_registry *r, struct sl_box *box, const char *path,
		      const char *src, size_t len, const char *who, struct sl_switch_result *res,
		      char *err, size_t errlen)
{
	const char *chunk = path && *path ? path : box->policy_path[0] ? box->policy_path : "policy";
	struct sl_policy *base = NULL;
	struct sl_lua *lua;
	char *copy;
	int e;

	if (len > POLICY_MAX_BYTES) {
		sl_errf(err, errlen, "policy too large (max %u bytes)", POLICY_MAX_BYTES);
		return -EINVAL;
	}
	copy = malloc(len + 1);
	if (!copy) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(copy, src, len);
	copy[len] = 0;
	lua = sl_lua_load(chunk, copy, len, &r->lua_opts, box->name, &base, err, errlen);
	if (!lua) {
		free(copy);
		return -EINVAL;
	}
	if (box->handler[0] && !sl_lua_handler_exists(lua, box->handler)) {
		sl_errf(err, errlen, "the active handler '%s' is not in the new policy: clear it "
				    "first (sluice handler clear %s)", box->handler, box->name);
		e = -EINVAL;
		goto fail;
	}
	e = switch_layer(r, box, lua, base, box->handler[0] ? box->handler : NULL, box->params,
			 res, err, errlen);
	if (e)
		goto fail;
	free(box->policy_src);
	box->policy_src = copy;
	box->policy_len = len;
	if (path && *path)
		snprintf(box->policy_path, sizeof(box->policy_path), "%s", path);
	e = save_state(r, box);
	if (e)
		sl_warn("sandbox %s: saving state failed: %s", box->name, strerror(-e));
	sl_info("sandbox %s: policy reloaded from %s (by %s)", box->name, chunk, who ? who : "?");
	switch_event(r, box, "reload", box->handler, who, res);
	return 0;
fail:
	sl_lua_unref(lua);
	sl_policy_free(base);
	free(copy);
	return e;
}

int sl_sandbox_rm(struct sl_registry *r, const char *name)
{
	struct sl_box *box = sl_sandbox_find(r, name);
	char path[PATH_MAX + 128];

	if (!box)
		return -ENOENT;
	uninstall_box(r, box);
	state_path(r, name, path, sizeof(path));
	if (unlink(path) == -1 && errno != ENOENT)
		sl_warn("removing %s failed: %s", path, strerror(errno));
	names_path(r, name, path, sizeof(path));
	unlink(path);
	unlink_box(r, box);
	sl_info("sandbox %s removed", name);
	sl_events_sandbox_gone(r->lua_opts.events, box->name);
	box_free(box);
	return 0;
}

void sl_registry_rm_all(struct sl_registry *r)
{
	while (r->head) {
		char name[SL_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%s", r->head->name);
		sl_sandbox_rm(r, name);
	}
}

/* The resolutions a previous sluiced installed and that have not expired: kept as they are
 * until they expire, each with the names it resolved for (from the names file; "" when no
 * name is known for its address). */
static int recover_learned(struct sl_registry *r, struct sl_box *box)
{
	struct sl_kentry *ents;
	uint64_t now = sl_now_ns();
	struct name_rec *names;
	size_t n, nnames;
	int err;

	err = sl_bpf_read_rules(r->bpf, box->rules_id, &ents, &n);
	if (err)
		return err;
	names = names_load(r, box, &nnames);
	for (size_t i = 0; i < n && !err; i++) {
		for (uint32_t k = 0; k < ents[i].val.n && k < SL_MAX_PORT_RANGES && !err; k++) {
			const struct sl_port_range *pr = &ents[i].val.r[k];
			struct sl_addr_rule rule = {
				.family = ents[i].family,
				.plen = ents[i].plen,
				.port_lo = pr->lo,
				.port_hi = pr->hi,
				.protos = pr->protos,
				.verdict = pr->verdict,
				.expires_ns = pr->expires_ns,
			};

			struct name_rec key = { .family = ents[i].family };
			struct name_rec *hit;
			int named = 0;

			if (!pr->expires_ns || pr->expires_ns <= now)
				continue;
			memcpy(rule.addr, ents[i].addr, 16);
			memcpy(key.addr, ents[i].addr, 16);
			hit = names ? bsearch(&key, names, nnames, sizeof(*names), name_rec_cmp) :
				      NULL;
			while (hit && hit > names && !name_rec_cmp(hit - 1, &key))
				hit--;
			for (; hit && hit < names + nnames && !name_rec_cmp(hit, &key) && !err;
			     hit++, named = 1)
				err = learned_add(box, hit->name, &rule);
			if (!named && !err)
				err = learned_add(box, "", &rule);
		}
	}
	free(ents);
	free(names);
	names_rewrite(r, box); /* what is left of the file: the pairs still live */
	return err;
}

/* Adoption of a sandbox whose stored policy no longer compiles: its kernel rules stay, its
 * DNS listener answers every name NXDOMAIN. */
static int adopt_without_policy(struct sl_registry *r, struct sl_box *box)
{
	struct sl_sandbox ksb;
	char err[256];
	int e;

	e = open_dns(r, box, err, sizeof(err));
	if (!e)
		e = open_ca(r, box, err, sizeof(err));
	if (!e)
		e = open_proxy(r, box, err, sizeof(err));
	if (e)
		sl_err("sandbox %s: %s", box->name, err);
	e = sl_bpf_proxied_open(r->bpf, box->id);
	if (e)
		sl_err("sandbox %s: opening its sl_proxied map failed: %s", box->name,
		       strerror(-e));
	kernel_entry(r, box, &ksb);
	e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb);
	if (!e)
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 1);
	return e;
}

/* Loads one state file into a sandbox, adopting its kernel state. */
static int adopt_one(struct sl_registry *r, const char *path)
{
	const char *name, *cgroup, *policy_path, *src, *handler = NULL, *params = NULL;
	json_int_t id, cgid, created;
	struct sl_sandbox ksb;
	int dns_port = 0, proxy_port = 0;
	size_t src_len;
	json_error_t jerr;
	struct sl_kentry *ents = NULL;
	struct sl_box *box = NULL;
	size_t nents = 0;
	char err[512];
	json_t *j;
	int e = -EINVAL;
	uint64_t now_cgid = 0;

	j = json_load_file(path, 0, &jerr);
	if (!j) {
		sl_err("state file %s unreadable: %s", path, jerr.text);
		return -EINVAL;
	}
	if (json_unpack_ex(j, &jerr, 0, "{s:s, s:I, s:s, s:I, s:s, s:s%, s:I, s?i, s?i, s?s, s?s}",
			   "name", &name, "id", &id, "cgroup", &cgroup, "cgroup_id", &cgid,
			   "policy_path", &policy_path, "policy", &src, &src_len, "created",
			   &created, "dns_port", &dns_port, "proxy_port", &proxy_port, "handler",
			   &handler, "params", &params) ||
	    !sl_sandbox_name_ok(name) || id <= 0 || id >= SL_MAX_SANDBOXES ||
	    sl_sandbox_by_id(r, (uint32_t)id) || sl_sandbox_find(r, name)) {
		sl_err("state file %s is invalid or conflicts with another sandbox", path);
		goto cleanup;
	}
	box = calloc(1, sizeof(*box));
	if (!box) {
		e = -ENOMEM;
		goto cleanup;
	}
	box->netns_fd = -1;
	snprintf(box->name, sizeof(box->name), "%s", name);
	snprintf(box->cgroup, sizeof(box->cgroup), "%s", cgroup);
	snprintf(box->policy_path, sizeof(box->policy_path), "%s", policy_path);
	box->id = (uint32_t)id;
	box->rules_id = box->id;
	box->cgid = (uint64_t)cgid;
	box->created_s = created;
	if (handler && strlen(handler) < sizeof(box->handler)) {
		snprintf(box->handler, sizeof(box->handler), "%s", handler);
		box->params = params ? strdup(params) : NULL;
	}
	{
		const char *cid = json_string_value(json_object_get(j, "container_id"));

		if (cid && strlen(cid) <= SL_CONTAINER_ID_MAX)
			snprintf(box->container_id, sizeof(box->container_id), "%s", cid);
	}
	/* The rule bank in force is the kernel's to say (a switch may have flipped it). */
	if (!sl_bpf_get_sandbox(r->bpf, box->cgid, &ksb) &&
	    (ksb.rules_id == box->id || ksb.rules_id == (box->id | SL_RULES_BANK)))
		box->rules_id = ksb.rules_id;
	box->reg = r;
	box->dns_port = dns_port > 0 && dns_port < 65536 ? (uint16_t)dns_port : 0;
	box->proxy_port = proxy_port > 0 && proxy_port < 65536 ? (uint16_t)proxy_port : 0;
	sl_rule_set_init(&box->rules);
	sl_rule_set_init(&box->learned);
	box->policy_src = strndup(src, src_len);
	box->policy_len = src_len;
	if (!box->policy_src) {
		e = -ENOMEM;
		goto cleanup;
	}

	if (sl_cgroup_id(box->cgroup, &now_cgid)) {
		/* The cgroup is gone (deleted, or the machine rebooted): nothing left to enforce. */
		sl_warn("sandbox %s: cgroup %s no longer exists, removing the sandbox", name,
			box->cgroup);
		uninstall_box(r, box);
		unlink(path);
		e = -ENOENT;
		goto cleanup;
	}
	if (now_cgid != box->cgid) {
		sl_warn("sandbox %s: cgroup %s was recreated, enforcing on the new one", name,
			box->cgroup);
		sl_bpf_del_sandbox(r->bpf, box->cgid);
		box->cgid = now_cgid;
	}
	if (adopt_netns(box, j)) {
		if (sl_cgroup_populated(box->cgroup) == 0) {
			sl_warn("sandbox %s: its network namespace is gone and its cgroup is empty, "
				"removing the sandbox", name);
			uninstall_box(r, box);
			unlink(path);
		} else {
			/* Its processes' DNS and intercepted connections go to listeners that no
			 * longer exist: they fail, nothing opens. */
			sl_err("sandbox %s: no process of cgroup %s is in its network namespace "
			       "(%s, inode %llu) any more; kernel rules left as they are, not adopted",
			       name, box->cgroup, box->netns, (unsigned long long)box->netns_ino);
		}
		e = -ENOENT;
		goto cleanup;
	}
	e = recover_learned(r, box);
	if (e)
		sl_warn("sandbox %s: reading its resolved names from the kernel failed: %s", name,
			strerror(-e));
	e = compile_box(box, &ents, &nents, err, sizeof(err));
	if (e) {
		/* Keep whatever the kernel enforces now rather than open anything; names no
		 * longer resolve (the listener answers NXDOMAIN without a policy). */
		sl_err("sandbox %s: policy no longer compiles (%s); kernel rules left as they are",
		       name, err);
		sl_policy_free(box->base);
		sl_policy_free(box->hlayer);
		box->policy = box->base = box->hlayer = NULL;
		sl_lua_unref(box->lua);
		box->lua = NULL;
		e = adopt_without_policy(r, box);
	} else {
		e = install_box(r, box, ents, nents, err, sizeof(err));
		if (e)
			sl_err("sandbox %s: %s", name, err);
	}
	if (!e)
		e = save_state(r, box);
	if (e)
		goto cleanup;
	link_box(r, box);
	box = NULL;
	sl_info("sandbox %s adopted (%zu kernel entries)", name, nents);
cleanup:
	free(ents);
	box_free(box);
	json_decref(j);
	return e;
}

static void warn_orphan(const char *name, void *arg)
{
	struct sl_registry *r = arg;

	if (!sl_sandbox_find(r, name))
		sl_warn("pinned links of unknown sandbox '%s' left in place (sluiced --purge "
			"removes them)",
			name);
}

int sl_registry_adopt(struct sl_registry *r)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 300];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sandboxes", r->state_dir);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l < 6 || strcmp(de->d_name + l - 5, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!adopt_one(r, path))
			n++;
	}
	closedir(d);
	sl_bpf_pinned_sandboxes(r->bpf, warn_orphan, r);
	return n;
}

/* One rule as {"dst", "ports", "proto", "verdict"}. */
static json_t *rule_json(const struct sl_addr_rule *ru)
{
	static const char *const verdicts[] = { "deny", "allow", "proxy", "dns" };
	char dst[64], ports[16];

	sl_prefix_str(ru->family, ru->addr, ru->plen, dst, sizeof(dst));
	if (ru->port_lo == 0 && ru->port_hi == 65535)
		snprintf(ports, sizeof(ports), "any");
	else if (ru->port_lo == ru->port_hi)
		snprintf(ports, sizeof(ports), "%u", ru->port_lo);
	else
		snprintf(ports, sizeof(ports), "%u-%u", ru->port_lo, ru->port_hi);
	return json_pack("{s:s, s:s, s:s, s:s}", "dst", dst, "ports", ports, "proto",
			 ru->protos == SL_PROTO_ANY ? "tcp,udp" :
			 ru->protos == SL_PROTO_TCP ? "tcp" :
						      "udp",
			 "verdict", verdicts[ru->verdict & 3]);
}

static json_t *rules_json(const struct sl_box *box)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < box->rules.n; i++)
		json_array_append_new(arr, rule_json(&box->rules.v[i]));
	return arr;
}

/* The egress.unix addresses in force, as the policy writes them. */
static json_t *unix_json(const struct sl_box *box)
{
	json_t *arr = json_array();

	for (size_t i = 0; box->policy && i < box->policy->unix_socks.n; i++) {
		char s[SL_UNIX_PATH_MAX * 4 + 2];

		sl_unix_str(&box->policy->unix_socks.v[i], s, sizeof(s));
		json_array_append_new(arr, json_string(s));
	}
	return arr;
}

/* The resolved names of @box, each with its installed addresses and their expiry. */
static json_t *names_json(const struct sl_box *box)
{
	json_t *byname = json_object(), *arr = json_array(), *v;
	uint64_t now = sl_now_ns();
	const char *k;

	for (size_t i = 0; i < box->learned.n; i++) {
		const struct sl_addr_rule *ru = &box->learned.v[i];
		const char *name = box->learned_names[i][0] ? box->learned_names[i] :
							      "(resolved before a restart)";
		json_t *addrs = json_object_get(byname, name), *x = rule_json(ru);

		if (!addrs) {
			addrs = json_array();
			json_object_set_new(byname, name, addrs);
		}
		json_object_set_new(x, "expires_in_s",
				    json_integer(ru->expires_ns > now ?
							 (json_int_t)((ru->expires_ns - now +
								       999999999ULL) /
								      1000000000ULL) :
							 0));
		json_array_append_new(addrs, x);
	}
	json_object_foreach(byname, k, v)
		json_array_append_new(arr, json_pack("{s:s, s:O}", "name", k, "addresses", v));
	json_decref(byname);
	return arr;
}

static json_t *dns_json(const struct sl_box *box)
{
	const struct sl_dns_stats *st;

	if (!box->dns)
		return json_null();
	st = sl_dns_listener_stats(box->dns);
	return json_pack("{s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I}}", "port",
			 (int)box->dns_port, "queries", "allowed", (json_int_t)st->allowed,
			 "denied", (json_int_t)st->denied, "nodata", (json_int_t)st->nodata,
			 "formerr", (json_int_t)st->formerr, "refused", (json_int_t)st->refused,
			 "servfail", (json_int_t)st->servfail, "addresses", "installed",
			 (json_int_t)st->installed, "blocked", (json_int_t)st->blocked);
}

static json_t *proxy_json(const struct sl_box *box)
{
	const struct sl_proxy_stats *st;

	if (!box->proxy)
		return json_null();
	st = sl_proxy_listener_stats(box->proxy);
	return json_pack("{s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
			 "s:{s:I, s:I, s:I, s:I}}",
			 "port", (int)box->proxy_port, "connections", "accepted",
			 (json_int_t)st->conns, "active", (json_int_t)st->active, "unredirected",
			 (json_int_t)st->unredirected, "never_accepted",
			 (json_int_t)box->proxied_swept, "refused", (json_int_t)st->refused,
			 "tls_failed", (json_int_t)st->tls_failed, "passthrough",
			 (json_int_t)st->spliced, "passthrough_kernel", (json_int_t)st->spliced_kernel,
			 "passthrough_relayed", (json_int_t)st->spliced_user, "requests", "forwarded",
			 (json_int_t)st->requests, "reused", (json_int_t)st->reused, "rejected",
			 (json_int_t)st->rejected, "upstream_errors", (json_int_t)st->upstream_errors);
}

json_t *sl_sandbox_json(struct sl_registry *r, const struct sl_box *box, int detail)
{
	json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "name", box->name, "id",
			      (json_int_t)box->id, "cgroup", box->cgroup, "policy",
			      box->policy_path, "created", (json_int_t)box->created_s);
	struct sl_counters c;

	if (!j)
		return j;
	json_object_set_new(j, "handler", box->handler[0] ? json_string(box->handler) : json_null());
	json_object_set_new(j, "netns", box->netns_fd >= 0 ? json_string(box->netns) : json_null());
	if (box->netns_fd >= 0)
		json_object_set_new(j, "netns_inode", json_integer((json_int_t)box->netns_ino));
	if (box->container_id[0])
		json_object_set_new(j, "container_id", json_string(box->container_id));
	if (!detail)
		return j;
	if (box->handler[0]) {
		json_t *p = box->params ? json_loads(box->params, 0, NULL) : NULL;

		json_object_set_new(j, "params", p ? p : json_object());
		json_object_set_new(j, "handler_since", json_integer(box->handler_since_s));
	}
	json_object_set_new(j, "switches", json_integer(box->switches));
	json_object_set_new(j, "rules", rules_json(box));
	json_object_set_new(j, "unix", unix_json(box));
	json_object_set_new(j, "names", names_json(box));
	json_object_set_new(j, "dns", dns_json(box));
	json_object_set_new(j, "proxy", proxy_json(box));
	if (!sl_bpf_read_counters(r->bpf, box->id, &c))
		json_object_set_new(
			j, "counters",
			json_pack("{s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I}, "
				  "s:{s:I}, s:{s:I, s:I, s:I}}",
				  "allowed", "tcp", (json_int_t)c.c[SL_CTR_ALLOW_TCP], "udp",
				  (json_int_t)c.c[SL_CTR_ALLOW_UDP], "unix",
				  (json_int_t)c.c[SL_CTR_ALLOW_UNIX], "denied", "tcp",
				  (json_int_t)c.c[SL_CTR_DENY_TCP], "udp",
				  (json_int_t)c.c[SL_CTR_DENY_UDP], "unix",
				  (json_int_t)c.c[SL_CTR_DENY_UNIX], "socket",
				  (json_int_t)c.c[SL_CTR_DENY_SOCKET], "setsockopt",
				  (json_int_t)c.c[SL_CTR_DENY_SOCKOPT], "bind",
				  (json_int_t)c.c[SL_CTR_DENY_BIND], "egress_packets",
				  (json_int_t)c.c[SL_CTR_DROP_EGRESS], "dns", "tcp",
				  (json_int_t)c.c[SL_CTR_DNS_TCP], "udp",
				  (json_int_t)c.c[SL_CTR_DNS_UDP], "proxied", "tcp",
				  (json_int_t)c.c[SL_CTR_PROXY_TCP], "events", "sent",
				  (json_int_t)c.c[SL_CTR_EV_SENT], "rate_limited",
				  (json_int_t)c.c[SL_CTR_EV_LIMITED], "lost",
				  (json_int_t)c.c[SL_CTR_EV_LOST]));
	return j;
}
