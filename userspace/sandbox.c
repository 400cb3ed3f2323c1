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

#include "bpf_loader.h"
#include "cgroup.h"
#include "log.h"
#include "sandbox.h"

#define POLICY_MAX_BYTES (1u << 20)

struct sl_registry {
	struct sl_bpf *bpf;
	char state_dir[PATH_MAX];
	struct sl_box *head;
	size_t count;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct sl_registry *sl_registry_new(struct sl_bpf *bpf, const char *state_dir)
{
	struct sl_registry *r = calloc(1, sizeof(*r));
	char dir[PATH_MAX + 16];

	if (!r)
		return NULL;
	r->bpf = bpf;
	snprintf(r->state_dir, sizeof(r->state_dir), "%s", state_dir);
	snprintf(dir, sizeof(dir), "%s/sandboxes", state_dir);
	if ((mkdir(state_dir, 0700) == -1 && errno != EEXIST) ||
	    (mkdir(dir, 0700) == -1 && errno != EEXIST)) {
		int e = errno;

		free(r);
		errno = e;
		return NULL;
	}
	return r;
}

static void box_free(struct sl_box *box)
{
	if (!box)
		return;
	free(box->policy_src);
	sl_policy_free(box->policy);
	sl_rule_set_free(&box->rules);
	free(box);
}

void sl_registry_free(struct sl_registry *r)
{
	if (!r)
		return;
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
	j = json_pack("{s:s, s:I, s:s, s:I, s:s, s:s%, s:I}", "name", box->name, "id",
		      (json_int_t)box->id, "cgroup", box->cgroup, "cgroup_id",
		      (json_int_t)box->cgid, "policy_path", box->policy_path, "policy",
		      box->policy_src, box->policy_len, "created", (json_int_t)box->created_s);
	if (!j)
		return -ENOMEM;
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

/* Compiles the policy of @box into its rules and kernel entries. */
static int compile_box(struct sl_box *box, struct sl_kentry **ents, size_t *nents, char *err,
		       size_t errlen)
{
	const char *chunk = box->policy_path[0] ? box->policy_path : "policy";
	struct sl_kentry bad;
	int r;

	box->policy = sl_policy_load(chunk, box->policy_src, box->policy_len, err, errlen);
	if (!box->policy)
		return -EINVAL;
	r = sl_policy_rules(box->policy, &box->rules, err, errlen);
	if (r)
		return r;
	r = sl_rules_compile(&box->rules, ents, nents, &bad);
	if (r == -E2BIG) {
		char p[64];

		sl_prefix_str(bad.family, bad.addr, bad.plen, p, sizeof(p));
		seterr(err, errlen, "%s: too many distinct port ranges apply to %s (max %d)", chunk,
		       p, SL_MAX_PORT_RANGES);
		return -EINVAL;
	}
	if (r)
		seterr(err, errlen, "compiling rules failed: %s", strerror(-r));
	return r;
}

/* Programs the kernel for @box: rules, then the sandbox entry, then the links. */
static int install_box(struct sl_registry *r, struct sl_box *box, const struct sl_kentry *ents,
		       size_t nents, char *err, size_t errlen)
{
	struct sl_sandbox ksb = { .id = box->id };
	int e;

	e = sl_bpf_sync_rules(r->bpf, box->id, ents, nents);
	if (e) {
		seterr(err, errlen, "writing kernel rules failed: %s", strerror(-e));
		return e;
	}
	e = sl_bpf_set_sandbox(r->bpf, box->cgid, &ksb);
	if (e) {
		seterr(err, errlen, "writing the sandbox table failed: %s", strerror(-e));
		return e;
	}
	e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid);
	if (e) {
		seterr(err, errlen, "attaching to %s failed: %s", box->cgroup, strerror(-e));
		return e;
	}
	return 0;
}

/* Undoes install_box(). */
static void uninstall_box(struct sl_registry *r, const struct sl_box *box)
{
	int e;

	e = sl_bpf_detach(r->bpf, box->name);
	if (e)
		sl_err("detaching sandbox %s failed: %s", box->name, strerror(-e));
	sl_bpf_del_sandbox(r->bpf, box->cgid);
	e = sl_bpf_sync_rules(r->bpf, box->id, NULL, 0);
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

struct sl_box *sl_sandbox_add(struct sl_registry *r, const struct sl_box_spec *spec, char *err,
			      size_t errlen)
{
	struct sl_kentry *ents = NULL;
	struct sl_box *box = NULL;
	size_t nents = 0;
	int e, level;

	if (!spec->name || !sl_sandbox_name_ok(spec->name)) {
		seterr(err, errlen, "invalid sandbox name '%s' (letters, digits, '_', '.', '-'; "
				    "at most %d)", spec->name ? spec->name : "", SL_NAME_MAX);
		e = -EINVAL;
		goto fail;
	}
	if (sl_sandbox_find(r, spec->name)) {
		seterr(err, errlen, "sandbox '%s' already exists", spec->name);
		e = -EEXIST;
		goto fail;
	}
	if (!spec->cgroup || !*spec->cgroup) {
		seterr(err, errlen, "a cgroup path is required");
		e = -EINVAL;
		goto fail;
	}
	box = calloc(1, sizeof(*box));
	if (!box) {
		e = -ENOMEM;
		seterr(err, errlen, "out of memory");
		goto fail;
	}
	snprintf(box->name, sizeof(box->name), "%s", spec->name);
	sl_rule_set_init(&box->rules);
	e = sl_cgroup_resolve(spec->cgroup, box->cgroup, sizeof(box->cgroup));
	if (e) {
		seterr(err, errlen, "cgroup %s: %s", spec->cgroup, cgroup_error(e));
		e = -EINVAL;
		goto fail;
	}
	level = sl_cgroup_level(box->cgroup);
	if (level < 0 || level >= SL_MAX_CGROUP_DEPTH - 1) {
		seterr(err, errlen, "cgroup %s: nested too deep (at most %d levels)", box->cgroup,
		       SL_MAX_CGROUP_DEPTH - 2);
		e = -EINVAL;
		goto fail;
	}
	for (struct sl_box *o = r->head; o; o = o->next) {
		if (sl_cgroup_within(box->cgroup, o->cgroup) ||
		    sl_cgroup_within(o->cgroup, box->cgroup)) {
			seterr(err, errlen, "cgroup %s overlaps sandbox '%s' (%s)", box->cgroup,
			       o->name, o->cgroup);
			e = -EEXIST;
			goto fail;
		}
	}
	e = sl_cgroup_id(box->cgroup, &box->cgid);
	if (e) {
		seterr(err, errlen, "cgroup %s: reading its id failed: %s", box->cgroup,
		       strerror(-e));
		goto fail;
	}
	if (spec->policy_path)
		snprintf(box->policy_path, sizeof(box->policy_path), "%s", spec->policy_path);
	if (spec->policy_src) {
		if (spec->policy_len > POLICY_MAX_BYTES) {
			seterr(err, errlen, "policy too large (max %u bytes)", POLICY_MAX_BYTES);
			e = -EINVAL;
			goto fail;
		}
		box->policy_src = malloc(spec->policy_len + 1);
		if (!box->policy_src) {
			e = -ENOMEM;
			seterr(err, errlen, "out of memory");
			goto fail;
		}
		memcpy(box->policy_src, spec->policy_src, spec->policy_len);
		box->policy_src[spec->policy_len] = 0;
		box->policy_len = spec->policy_len;
	} else if (spec->policy_path && *spec->policy_path) {
		e = read_file(spec->policy_path, &box->policy_src, &box->policy_len);
		if (e) {
			seterr(err, errlen, "policy file %s: %s", spec->policy_path,
			       e == -EFBIG ? "too large" : strerror(-e));
			e = -EINVAL;
			goto fail;
		}
	} else {
		seterr(err, errlen, "a policy file is required");
		e = -EINVAL;
		goto fail;
	}
	e = compile_box(box, &ents, &nents, err, errlen);
	if (e) {
		e = e == -ENOMEM ? e : -EINVAL;
		goto fail;
	}
	box->id = alloc_id(r);
	if (!box->id) {
		seterr(err, errlen, "too many sandboxes (max %d)", SL_MAX_SANDBOXES - 1);
		e = -ENOSPC;
		goto fail;
	}
	box->created_s = time(NULL);

	/* Nothing of this sandbox can be in the kernel yet, but a slot may hold counters of a
	 * sandbox that had the same id. */
	sl_bpf_reset_slots(r->bpf, box->id);
	e = install_box(r, box, ents, nents, err, errlen);
	if (!e) {
		e = save_state(r, box);
		if (e)
			seterr(err, errlen, "saving state failed: %s", strerror(-e));
	}
	if (e) {
		uninstall_box(r, box);
		goto fail;
	}
	link_box(r, box);
	free(ents);
	sl_info("sandbox %s added: cgroup %s (id %llu), %zu kernel entries", box->name,
		box->cgroup, (unsigned long long)box->cgid, nents);
	return box;
fail:
	free(ents);
	box_free(box);
	errno = -e;
	return NULL;
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
	unlink_box(r, box);
	sl_info("sandbox %s removed", name);
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

/* Loads one state file into a sandbox, adopting its kernel state. */
static int adopt_one(struct sl_registry *r, const char *path)
{
	const char *name, *cgroup, *policy_path, *src;
	json_int_t id, cgid, created;
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
	if (json_unpack_ex(j, &jerr, 0, "{s:s, s:I, s:s, s:I, s:s, s:s%, s:I}", "name", &name,
			   "id", &id, "cgroup", &cgroup, "cgroup_id", &cgid, "policy_path",
			   &policy_path, "policy", &src, &src_len, "created", &created) ||
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
	snprintf(box->name, sizeof(box->name), "%s", name);
	snprintf(box->cgroup, sizeof(box->cgroup), "%s", cgroup);
	snprintf(box->policy_path, sizeof(box->policy_path), "%s", policy_path);
	box->id = (uint32_t)id;
	box->cgid = (uint64_t)cgid;
	box->created_s = created;
	sl_rule_set_init(&box->rules);
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
	e = compile_box(box, &ents, &nents, err, sizeof(err));
	if (e) {
		/* Keep whatever the kernel enforces now rather than open anything. */
		sl_err("sandbox %s: policy no longer compiles (%s); kernel state left as is", name,
		       err);
		sl_rule_set_free(&box->rules);
		sl_rule_set_init(&box->rules);
		e = sl_bpf_attach(r->bpf, box->name, box->cgroup, box->cgid);
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

static json_t *rules_json(const struct sl_box *box)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < box->rules.n; i++) {
		const struct sl_addr_rule *ru = &box->rules.v[i];
		static const char *const verdicts[] = { "deny", "allow", "proxy", "dns" };
		char dst[64], ports[16];

		sl_prefix_str(ru->family, ru->addr, ru->plen, dst, sizeof(dst));
		if (ru->port_lo == 0 && ru->port_hi == 65535)
			snprintf(ports, sizeof(ports), "any");
		else if (ru->port_lo == ru->port_hi)
			snprintf(ports, sizeof(ports), "%u", ru->port_lo);
		else
			snprintf(ports, sizeof(ports), "%u-%u", ru->port_lo, ru->port_hi);
		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:s, s:s}", "dst", dst, "ports", ports, "proto",
				       ru->protos == SL_PROTO_ANY ? "tcp,udp" :
				       ru->protos == SL_PROTO_TCP ? "tcp" :
								    "udp",
				       "verdict", verdicts[ru->verdict & 3]));
	}
	return arr;
}

json_t *sl_sandbox_json(struct sl_registry *r, const struct sl_box *box, int detail)
{
	json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "name", box->name, "id",
			      (json_int_t)box->id, "cgroup", box->cgroup, "policy",
			      box->policy_path, "created", (json_int_t)box->created_s);
	struct sl_counters c;

	if (!j || !detail)
		return j;
	json_object_set_new(j, "rules", rules_json(box));
	if (!sl_bpf_read_counters(r->bpf, box->id, &c))
		json_object_set_new(
			j, "counters",
			json_pack("{s:{s:I, s:I}, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}}",
				  "allowed", "tcp", (json_int_t)c.c[SL_CTR_ALLOW_TCP], "udp",
				  (json_int_t)c.c[SL_CTR_ALLOW_UDP], "denied", "tcp",
				  (json_int_t)c.c[SL_CTR_DENY_TCP], "udp",
				  (json_int_t)c.c[SL_CTR_DENY_UDP], "socket",
				  (json_int_t)c.c[SL_CTR_DENY_SOCKET], "events", "sent",
				  (json_int_t)c.c[SL_CTR_EV_SENT], "rate_limited",
				  (json_int_t)c.c[SL_CTR_EV_LIMITED], "lost",
				  (json_int_t)c.c[SL_CTR_EV_LOST]));
	return j;
}
