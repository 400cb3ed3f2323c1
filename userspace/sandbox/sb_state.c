// SPDX-License-Identifier: MIT
/*
 * The state a sandbox leaves on disk and what a restarted sluiced makes of it: the state
 * file (<state_dir>/sandboxes/<name>.json), the names file of its resolved addresses, and
 * adoption (re-reading both, reconciling the kernel, reopening listeners).
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

#include <openssl/crypto.h>

#include "core/file.h"
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

void sb_state_path(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.json", r->state_dir, name);
}

/*
 * The state file: everything a restart needs of the sandbox, its CA's key and certificate
 * too, in one file written whole and durably (core/file.h: mode 0600, fsync, rename, and for
 * a @fresh file, an add's, fsync of the directory). One file, not three: an add syncs twice
 * rather than five times (the CA once had a directory of its own with two files), a switch
 * once: a crash of the machine leaves its old state file or its new one.
 *
 * Formatted on the box's thread (sb_state_text()), written wherever blocking is allowed
 * (sb_state_write(): an add writes it on its worker's jobs thread).
 */
char *sb_state_text(const struct sl_box *box, int *err)
{
	char *text = NULL, *key = NULL, *cert = NULL;
	size_t key_len = 0;
	json_t *j;

	*err = 0;
	j = json_pack("{s:s, s:I, s:s, s:I, s:s, s:s%, s:I, s:i, s:i}", "name", box->name, "id",
		      (json_int_t)box->id, "cgroup", box->cgroup, "cgroup_id",
		      (json_int_t)box->cgid, "policy_path", box->policy_path, "policy",
		      box->policy_src, box->policy_len, "created", (json_int_t)box->created_s,
		      "dns_port", (int)box->dns_port, "proxy_port", (int)box->proxy_port);
	if (!j) {
		*err = -ENOMEM;
		return NULL;
	}
	if (box->layer && box->layer->handler[0]) {
		/* A restart keeps the sandbox as locked down (or open) as it was. */
		json_object_set_new(j, "handler", json_string(box->layer->handler));
		if (box->layer->params)
			json_object_set_new(j, "params", json_string(box->layer->params));
	}
	if (box->container_id[0])
		json_object_set_new(j, "container_id", json_string(box->container_id));
	if (box->audit)
		json_object_set_new(j, "mode", json_string("audit"));
	if (box->netns_fd >= 0) {
		/* The path may not outlive its process (/proc/PID/ns/net): dev and inode let a
		 * restart find the same namespace through the cgroup's processes. */
		json_object_set_new(j, "netns", json_string(box->netns));
		json_object_set_new(j, "netns_dev", json_integer((json_int_t)box->netns_dev));
		json_object_set_new(j, "netns_ino", json_integer((json_int_t)box->netns_ino));
	}
	if (box->ca) {
		/* The same CA after a restart: what the sandbox trusts stays valid. */
		*err = sl_ca_key_pem(box->ca, &key, &key_len);
		cert = *err ? NULL : sl_sandbox_ca_pem(box);
		if (!*err && !cert)
			*err = -ENOMEM;
		if (!*err && (json_object_set_new(j, "ca_key", json_stringn(key, key_len)) ||
			      json_object_set_new(j, "ca_cert", json_string(cert))))
			*err = -ENOMEM;
	}
	/* Formatted whole, then one write: json_dumpfd() writes each token on its own (over a
	 * hundred syscalls per sandbox add). */
	if (!*err && !(text = json_dumps(j, JSON_INDENT(2))))
		*err = -ENOMEM;
	if (key) {
		json_t *k = json_object_get(j, "ca_key");

		if (k) /* jansson's copy, before it goes back to the heap */
			OPENSSL_cleanse((char *)json_string_value(k), json_string_length(k));
		OPENSSL_cleanse(key, key_len);
		free(key);
	}
	free(cert);
	json_decref(j);
	return text;
}

int sb_state_write(struct sl_registry *r, const char *name, const char *text, int fresh)
{
	char dir[PATH_MAX + 16], file[SL_NAME_MAX + 8];

	snprintf(dir, sizeof(dir), "%s/sandboxes", r->state_dir);
	snprintf(file, sizeof(file), "%s.json", name);
	return sl_file_write(dir, file, text, strlen(text), 0600,
			     fresh ? SL_FILE_REPLACE : SL_FILE_UPDATE);
}

void sb_state_text_free(char *text)
{
	if (text) {
		OPENSSL_cleanse(text, strlen(text)); /* it holds the CA key */
		free(text);
	}
}

int sb_save_state(struct sl_registry *r, const struct sl_box *box, int fresh)
{
	int err;
	char *text = sb_state_text(box, &err);

	if (text)
		err = sb_state_write(r, box->name, text, fresh);
	sb_state_text_free(text);
	return err;
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

void sb_names_path(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.names", r->state_dir, name);
}

/* "FAMILY HEX32 NAME\n" into @buf; without stdio: a line per address a sandbox resolves.
 * Returns its length, or -1 if it does not fit @len (NUL included). */
static int names_line(char *buf, size_t len, uint8_t family, const uint8_t *addr, const char *name)
{
	static const char hex[] = "0123456789abcdef";
	size_t nl = strlen(name), n = 0;
	char fam[3];
	int nf = 0;

	if (family >= 100)
		fam[nf++] = (char)('0' + family / 100);
	if (family >= 10)
		fam[nf++] = (char)('0' + family / 10 % 10);
	fam[nf++] = (char)('0' + family % 10);
	if ((size_t)nf + 1 + 32 + 1 + nl + 1 + 1 > len)
		return -1;
	memcpy(buf, fam, (size_t)nf);
	n = (size_t)nf;
	buf[n++] = ' ';
	for (int i = 0; i < 16; i++) {
		buf[n++] = hex[addr[i] >> 4];
		buf[n++] = hex[addr[i] & 15];
	}
	buf[n++] = ' ';
	memcpy(buf + n, name, nl);
	n += nl;
	buf[n++] = '\n';
	buf[n] = 0;
	return (int)n;
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

	/* the live set holds every pair noted and not yet appended */
	sl_timer_disarm(box->w->loop, &box->names_timer);
	sl_buf_reset(&box->names_pending);
	sb_names_path(r, box->name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		sl_warn("sandbox %s: writing %s failed: %s", box->name, tmp, strerror(errno));
		return;
	}
	for (size_t i = 0; i < box->learned.rules.n && ok; i++) {
		const struct sl_addr_rule *x = &box->learned.rules.v[i];
		int dup = 0;

		if (!names_ok(box->learned.names[i]))
			continue;
		/* One line per pair, whatever its ports: the first entry of the pair writes it
		 * (the address's entries come from the index, not a scan of all). */
		for (uint32_t k = sb_lx_first_at(&box->learned.ix, &box->learned.rules, x->family,
						 x->addr);
		     k != SB_LX_NONE && !dup;
		     k = sb_lx_next_at(&box->learned.ix, &box->learned.rules, k))
			dup = k < i && !strcmp(box->learned.names[k], box->learned.names[i]);
		if (dup)
			continue;
		if (names_line(line, sizeof(line), x->family, x->addr, box->learned.names[i]) < 0)
			continue;
		ok = fputs(line, f) >= 0;
	}
	if (fclose(f) || !ok || rename(tmp, path) == -1) {
		sl_warn("sandbox %s: writing %s failed: %s", box->name, path, strerror(errno));
		unlink(tmp);
	}
}

void sb_names_flush(struct sl_box *box)
{
	char path[PATH_MAX + 128];
	struct stat st;
	size_t n = sl_buf_size(&box->names_pending);
	int fd;

	if (box->w)
		sl_timer_disarm(box->w->loop, &box->names_timer);
	if (!n)
		return;
	sb_names_path(box->reg, box->name, path, sizeof(path));
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1) {
		sl_warn("sandbox %s: appending to %s failed: %s", box->name, path, strerror(errno));
	} else if (fstat(fd, &st) == 0 && st.st_size + n > NAMES_MAX_BYTES) {
		close(fd);
		names_rewrite(box->reg, box); /* the live set holds the new pairs already */
	} else {
		if (write(fd, sl_buf_head(&box->names_pending), n) != (ssize_t)n)
			sl_warn("sandbox %s: appending to %s failed", box->name, path);
		close(fd);
	}
	sl_buf_reset(&box->names_pending);
}

static void names_flush_cb(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	sb_names_flush(sl_container_of(t, struct sl_box, names_timer));
}

/* How long new lines wait for others: an open(), fstat(), write() and close() per flush was
 * 3% of sluiced's time for a burst of new names (32 in flight, make bench dns) when each turn
 * of the loop flushed its own few. */
#define NAMES_FLUSH_MS 5

/* @name resolved to @addr for @box, the first time: one line more, written with the others
 * of the next NAMES_FLUSH_MS. (A crash of sluiced loses at most those: a pair without a line
 * comes back nameless after a restart, until its name is asked again.) */
void sb_names_note(struct sl_registry *r, struct sl_box *box, const char *name, uint8_t family,
		   const uint8_t *addr)
{
	char line[SL_DNS_NAME_BUF + 64];
	int n;

	(void)r;
	if (!names_ok(name))
		return;
	n = names_line(line, sizeof(line), family, addr, name);
	if (n <= 0 || sl_buf_append(&box->names_pending, line, n))
		return;
	if (!sl_timer_armed(&box->names_timer))
		sl_timer_arm(box->w->loop, &box->names_timer, NAMES_FLUSH_MS, names_flush_cb);
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
	sb_names_path(r, box->name, path, sizeof(path));
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

	err = sl_bpf_read_learned(r->bpf, box->rules_id, &ents, &n);
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
				err = sb_learned_add(&box->learned, hit->name, &rule);
			if (!named && !err)
				err = sb_learned_add(&box->learned, "", &rule);
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

	e = sb_open_dns(r, box, err, sizeof(err));
	if (!e)
		e = sb_open_ca(r, box, err, sizeof(err));
	if (!e)
		e = sb_open_proxy(r, box, err, sizeof(err));
	if (e)
		sl_err("sandbox %s: %s", box->name, err);
	e = sl_bpf_proxied_open(r->bpf, box->id);
	if (e)
		sl_err("sandbox %s: opening its sl_proxied map failed: %s", box->name,
		       strerror(-e));
	sb_kernel_entry(r, box, &ksb);
	e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb);
	if (!e)
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid, 1, NULL);
	return e;
}

/*
 * The sandbox's CA from its state file (@j, read from @path), when it holds one: a key in a
 * file that group or others may read, or of another owner, is refused (as sl_ca_load() refuses
 * such a ca.key). A state file without one (written before 7 December) leaves the CA to
 * sb_open_ca(), which reads the CA's own directory.
 */
static int adopt_ca(struct sl_box *box, json_t *j, const char *path)
{
	json_t *key = json_object_get(j, "ca_key"), *cert = json_object_get(j, "ca_cert");
	struct stat st;

	if (!key && !cert)
		return 0;
	if (!json_is_string(key) || !json_is_string(cert)) {
		sl_err("sandbox %s: state file %s holds half a CA", box->name, path);
		return -EINVAL;
	}
	if (stat(path, &st) == -1)
		return -errno;
	if ((st.st_mode & 077) || st.st_uid != geteuid()) {
		sl_err("sandbox %s: state file %s holds the CA key but is %s (mode %04o, uid %u): "
		       "refusing it; chmod 600 it if it was not exposed, or remove the sandbox",
		       box->name, path,
		       (st.st_mode & 077) ? "open to group or others" : "owned by another user",
		       (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
		return -EPERM;
	}
	box->ca = sl_ca_from_pem(json_string_value(key), json_string_length(key),
				 json_string_value(cert), json_string_length(cert), path);
	OPENSSL_cleanse((char *)json_string_value(key), json_string_length(key));
	return box->ca ? 0 : -errno;
}

/* The listener ports adopted sandboxes moved off (sb_forget_moved_ports()). */
struct moved {
	struct sb_moved_port *v;
	size_t n, cap;
};

/* Notes that @box had @was (0: none) before its adoption, if it has another port now. */
static void note_moved(struct moved *mv, const struct sl_box *box, uint16_t was)
{
	if (!was || was == box->dns_port || was == box->proxy_port)
		return;
	if (mv->n == mv->cap) {
		size_t c = mv->cap ? 2 * mv->cap : 64;
		struct sb_moved_port *v = realloc(mv->v, c * sizeof(*v));

		if (!v) {
			sl_warn("out of memory: the kernel keeps listener port %u refused", was);
			return;
		}
		mv->v = v;
		mv->cap = c;
	}
	mv->v[mv->n++] = (struct sb_moved_port){ .netns = box->netns_cookie, .port = was };
}

/* Loads one state file into a sandbox, adopting its kernel state; notes in @mv the listener
 * ports it left. */
static int adopt_one(struct sl_registry *r, const char *path, struct moved *mv)
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
	    !sl_sandbox_name_ok(name) || id <= 0 || id >= r->max_ids ||
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
	box->netns_cookie = r->netns_cookie;
	snprintf(box->name, sizeof(box->name), "%s", name);
	snprintf(box->cgroup, sizeof(box->cgroup), "%s", cgroup);
	snprintf(box->policy_path, sizeof(box->policy_path), "%s", policy_path);
	box->id = (uint32_t)id;
	box->rules_id = box->id;
	box->cgid = (uint64_t)cgid;
	box->created_s = created;
	if (handler && strlen(handler) >= sizeof(((struct sl_layer *)0)->handler))
		handler = params = NULL;
	{
		const char *cid = json_string_value(json_object_get(j, "container_id"));

		if (cid && strlen(cid) <= SL_CONTAINER_ID_MAX)
			snprintf(box->container_id, sizeof(box->container_id), "%s", cid);
		cid = json_string_value(json_object_get(j, "mode"));
		sb_box_set_audit(box, cid && !strcmp(cid, "audit"));
	}
	sb_obs_load(r, box); /* what audit mode saw before the restart */
	/* The rule bank in force is the kernel's to say (a switch may have flipped it). */
	if (!sl_bpf_get_sandbox(r->bpf, box->cgid, &ksb) &&
	    (ksb.rules_id == box->id || ksb.rules_id == (box->id | SL_RULES_BANK)))
		box->rules_id = ksb.rules_id;
	box->reg = r;
	sl_list_init(&box->link);
	sl_list_init(&box->wlink);
	box->dns_port = dns_port > 0 && dns_port < 65536 ? (uint16_t)dns_port : 0;
	box->proxy_port = proxy_port > 0 && proxy_port < 65536 ? (uint16_t)proxy_port : 0;
	sl_rule_set_init(&box->learned.rules);
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
		sb_uninstall(r, box);
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
	if (sb_netns_adopt(box, j)) {
		if (sl_cgroup_populated(box->cgroup) == 0) {
			sl_warn("sandbox %s: its network namespace is gone and its cgroup is empty, "
				"removing the sandbox",
				name);
			sb_uninstall(r, box);
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
	e = adopt_ca(box, j, path);
	if (e)
		goto cleanup;
	sb_place(r, box); /* before anything opens on its worker's loop (not running yet) */
	e = recover_learned(r, box);
	if (e)
		sl_warn("sandbox %s: reading its resolved names from the kernel failed: %s", name,
			strerror(-e));
	e = sb_compile_box(box, &r->lua_opts, handler, params, &ents, &nents, err, sizeof(err));
	if (e) {
		/* Keep whatever the kernel enforces now rather than open anything; names no
		 * longer resolve (the listener answers NXDOMAIN without a policy). The layer
		 * keeps only the handler, for the state file. */
		sl_err("sandbox %s: policy no longer compiles (%s); kernel rules left as they are",
		       name, err);
		sb_layer_unref(box->layer);
		box->layer = sb_layer_new(NULL, NULL, handler, NULL, params);
		e = box->layer ? adopt_without_policy(r, box) : -ENOMEM;
	} else {
		e = sb_install(r, box, ents, nents, 0, err, sizeof(err));
		if (e)
			sl_err("sandbox %s: %s", name, err);
	}
	/* Written again (its ports, its CA); the directory synced too when the CA came from a
	 * directory of its own (before 7 December), which goes once the file holding it is sure. */
	if (!e)
		e = sb_save_state(r, box, !json_object_get(j, "ca_key"));
	if (e)
		goto cleanup;
	sb_remove_ca(r, box->name);
	note_moved(mv, box, dns_port > 0 && dns_port < 65536 ? (uint16_t)dns_port : 0);
	note_moved(mv, box, proxy_port > 0 && proxy_port < 65536 ? (uint16_t)proxy_port : 0);
	sb_link(r, box);
	sl_list_add_tail(&box->w->boxes, &box->wlink);
	box = NULL;
	sl_info("sandbox %s adopted (%zu kernel entries)", name, nents);
cleanup:
	free(ents);
	if (box && box->w)
		box->w->nboxes--;
	sb_box_free(box);
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
	struct moved mv = { 0 };
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sandboxes", r->state_dir);
	d = opendir(dir);
	if (!d)
		return 0;
	/* Every sandbox reads its resolutions back: from one walk of the maps for all. */
	if (sl_bpf_learned_snapshot(r->bpf))
		sl_warn("reading resolved addresses from the kernel in one pass failed: each "
			"sandbox reads its own");
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l < 6 || strcmp(de->d_name + l - 5, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!adopt_one(r, path, &mv))
			n++;
	}
	closedir(d);
	/* Every sandbox's entry points at its listeners of now: the ports they moved off are
	 * nobody's unless another sandbox took one. */
	sb_forget_moved_ports(r, mv.v, mv.n);
	free(mv.v);
	sl_bpf_learned_snapshot_drop(r->bpf);
	sl_bpf_pinned_sandboxes(r->bpf, warn_orphan, r);
	return n;
}
