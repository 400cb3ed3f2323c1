// SPDX-License-Identifier: MIT
/*
 * The sandbox registry: the daemon's view of which cgroups are sandboxes, under which policy,
 * and the bookkeeping that lets enforcement outlive the daemon. Each sandbox is recorded in
 * <state_dir>/sandboxes/<name>.json (0600) with the policy text it was added with, so that a
 * restarted sluiced rebuilds exactly the rules the kernel already holds, whatever happened to
 * the original policy file since.
 *
 * This file: the registry itself, adding, removing and finding sandboxes, the periodic sweep.
 * sb_state.c state files and adoption, sb_kernel.c compiling and installing rules,
 * sb_learned.c resolved names, sb_listeners.c listeners and the CA, sb_netns.c namespaces and
 * reaping, sb_layer.c the immutable layer a sandbox enforces, sb_switch.c handler and policy
 * switches, sb_json.c the JSON view.
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
#include "core/list.h"
#include "proxy/proxy.h"
#include "kernel/sockdiag.h"
#include "core/log.h"
#include "core/jobs.h"
#include "core/loop.h"
#include "lua/lua_host.h"
#include "kernel/netns.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

#define SWEEP_MS 1000
/* A sandbox's sl_proxied records are swept every 5th sweep: each sweep takes the sandboxes of
 * one fifth of the ids, so that a worker's loop walks a fifth of its maps each second rather
 * than all of them every fifth second (one syscall at least per map: 1,300 maps took 5 ms). */
#define PROXIED_SWEEPS 5

static void sweep_cb(struct sl_loop *loop, struct sl_timer *t);

struct sl_registry *sl_registry_new(struct sl_bpf *bpf, const char *state_dir, struct sl_loop *loop,
				    const struct sl_worker_env *workers, unsigned nworkers,
				    const struct sl_dns_ttl *ttl)
{
	struct sl_registry *r = calloc(1, sizeof(*r));
	char dir[PATH_MAX + 16];

	if (!r)
		return NULL;
	if (!nworkers) {
		free(r);
		errno = EINVAL;
		return NULL;
	}
	r->bpf = bpf;
	r->loop = loop;
	r->ttl = *ttl;
	sl_list_init(&r->boxes);
	sl_list_init(&r->adding);
	r->max_ids = bpf ? sl_bpf_max_sandboxes(bpf) : SL_MAX_SANDBOXES;
	r->own_max = r->max_ids;
	r->netns_cookie = sl_netns_cookie(-1);
	r->by_id = calloc(r->max_ids, sizeof(*r->by_id));
	r->by_name = calloc(r->max_ids, sizeof(*r->by_name));
	r->by_cgroup = calloc(r->max_ids, sizeof(*r->by_cgroup));
	r->id_held = calloc(r->max_ids, 1);
	r->workers = calloc(nworkers, sizeof(*r->workers));
	if (!r->by_id || !r->by_name || !r->by_cgroup || !r->id_held || !r->workers) {
		free(r->id_held);
		free(r->by_cgroup);
		free(r->by_name);
		free(r->by_id);
		free(r->workers);
		free(r);
		errno = ENOMEM;
		return NULL;
	}
	r->nworkers = nworkers;
	for (unsigned i = 0; i < nworkers; i++) {
		struct sb_worker *w = &r->workers[i];

		w->r = r;
		w->index = i;
		w->loop = workers[i].loop;
		w->dns = workers[i].dns;
		w->proxy = workers[i].proxy;
		sl_list_init(&w->boxes);
	}
	snprintf(r->state_dir, sizeof(r->state_dir), "%s", state_dir);
	snprintf(dir, sizeof(dir), "%s/sandboxes", state_dir);
	if ((mkdir(state_dir, 0700) == -1 && errno != EEXIST) ||
	    (mkdir(dir, 0700) == -1 && errno != EEXIST)) {
		int e = errno;

		free(r->id_held);
		free(r->by_id);
		free(r->workers);
		free(r);
		errno = e;
		return NULL;
	}
	if (loop)
		sl_timer_arm(loop, &r->sweep, SWEEP_MS, sweep_cb);
	return r;
}

void sl_registry_set_lua(struct sl_registry *r, const struct sl_lua_opts *o)
{
	r->lua_opts = *o;
}

void sl_registry_set_own_listeners(struct sl_registry *r, unsigned n)
{
	r->own_max = n;
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

void sb_box_free(struct sl_box *box)
{
	if (!box)
		return;
	sl_dns_listener_close(box->dns);
	sl_proxy_listener_close(box->proxy); /* first: it ends the handlers still running */
	if (sl_list_linked(&box->wlink))
		sl_list_del(&box->wlink);
	if (box->netns_fd >= 0)
		close(box->netns_fd);
	sb_layer_unref(box->layer);
	sl_ca_free(box->ca);
	free(box->policy_src);
	sb_learned_free(&box->learned);
	sb_obs_free(&box->obs);
	if (box->w)
		sl_timer_disarm(box->w->loop, &box->names_timer);
	sl_buf_free(&box->names_pending); /* unwritten: sl_registry_free() flushes first */
	free(box);
}

void sb_box_detach(struct sl_box *box)
{
	sl_dns_listener_close(box->dns);
	box->dns = NULL;
	sl_proxy_listener_close(box->proxy); /* it ends the handlers still running */
	box->proxy = NULL;
	sb_unplace_listeners(box->reg, box);
	sb_names_flush(box);
	if (sl_list_linked(&box->wlink))
		sl_list_del(&box->wlink);
	sl_list_init(&box->wlink);
}

void sb_place(struct sl_registry *r, struct sl_box *box)
{
	struct sb_worker *best = &r->workers[0];

	for (unsigned i = 1; i < r->nworkers; i++)
		if (r->workers[i].nboxes < best->nboxes)
			best = &r->workers[i];
	box->w = best;
	best->nboxes++;
}

/* A box leaves its worker's count (main). */
static void unplace(struct sl_box *box)
{
	if (box->w)
		box->w->nboxes--;
}

static void removed_now(struct sl_registry *r);

void sl_registry_free(struct sl_registry *r)
{
	if (!r)
		return;
	r->jobs_stopped = 1;
	sl_jobs_free(r->jobs); /* adds under way end (cancelled) before anything goes */
	sl_jobs_free(r->rm_jobs);
	sl_registry_stop_worker_jobs(r); /* and switches */
	if (r->loop)
		sl_timer_disarm(r->loop, &r->sweep);
	while (!sl_list_empty(&r->boxes)) {
		struct sl_box *b = sl_list_first(&r->boxes, struct sl_box, link);

		sb_obs_save(r, b, time(NULL)); /* what audit mode saw, for the next sluiced */
		sb_names_flush(b);
		sl_list_del(&b->link);
		sb_box_free(b);
	}
	removed_now(r);
	free(r->rm_pending.v);
	free(r->rm_running.v);
	free(r->id_held);
	free(r->by_cgroup);
	free(r->by_name);
	free(r->by_id);
	free(r->workers);
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

/* The first place in @v (@n boxes sorted by name, or by cgroup path if @by_cgroup) whose key
 * is not below @key. */
static size_t index_at(struct sl_box *const *v, size_t n, const char *key, int by_cgroup)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(by_cgroup ? v[mid]->cgroup : v[mid]->name, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void index_put(struct sl_box **v, size_t n, size_t at, struct sl_box *box)
{
	memmove(&v[at + 1], &v[at], (n - at) * sizeof(*v));
	v[at] = box;
}

static void index_drop(struct sl_box **v, size_t n, struct sl_box *box, int by_cgroup)
{
	size_t at = index_at(v, n, by_cgroup ? box->cgroup : box->name, by_cgroup);

	while (at < n && v[at] != box) /* keys are unique; a box is found where its key is */
		at++;
	if (at < n)
		memmove(&v[at], &v[at + 1], (n - at - 1) * sizeof(*v));
}

/* Also a sandbox being removed: its name and files are still its own. */
static struct sl_box *find_any(struct sl_registry *r, const char *name)
{
	size_t at = index_at(r->by_name, r->nindexed, name, 0);

	return at < r->nindexed && !strcmp(r->by_name[at]->name, name) ? r->by_name[at] : NULL;
}

struct sl_box *sl_sandbox_find(struct sl_registry *r, const char *name)
{
	struct sl_box *b = find_any(r, name);

	return b && !b->removing ? b : NULL;
}

/* The sandbox of the registry whose cgroup is @cgroup, above it or below it (a removal under
 * way included); NULL: none. */
static struct sl_box *cgroup_taken(struct sl_registry *r, const char *cgroup)
{
	size_t n = strlen(cgroup), at;
	char key[PATH_MAX + 2];

	if (!n || n >= PATH_MAX)
		return NULL;
	/* Above it or the same (sl_cgroup_within()): each prefix that ends before a '/'. */
	for (size_t i = 1; i <= n; i++) {
		if (i < n && cgroup[i] != '/')
			continue;
		memcpy(key, cgroup, i);
		key[i] = 0;
		at = index_at(r->by_cgroup, r->nindexed, key, 1);
		if (at < r->nindexed && !strcmp(r->by_cgroup[at]->cgroup, key))
			return r->by_cgroup[at];
	}
	/* Below it: the paths that begin with "@cgroup/" come one after the other, from the
	 * first that is not below that string. */
	memcpy(key, cgroup, n);
	key[n] = '/';
	key[n + 1] = 0;
	at = index_at(r->by_cgroup, r->nindexed, key, 1);
	return at < r->nindexed && !strncmp(r->by_cgroup[at]->cgroup, key, n + 1) ?
		       r->by_cgroup[at] :
		       NULL;
}

struct sl_loop *sl_box_loop(const struct sl_box *box)
{
	return box->w->loop;
}

unsigned sl_box_worker(const struct sl_box *box)
{
	return box->w->index;
}

unsigned sl_registry_workers(const struct sl_registry *r)
{
	return r->nworkers;
}

size_t sl_registry_worker_count(const struct sl_registry *r, unsigned worker)
{
	return worker < r->nworkers ? r->workers[worker].nboxes : 0;
}

void sl_registry_own_listeners(const struct sl_registry *r, unsigned *used, unsigned *max)
{
	*used = __atomic_load_n(&r->own_used, __ATOMIC_RELAXED);
	*max = r->own_max;
}

struct visit {
	struct sl_registry *r;
	struct sb_worker *w;
	sl_box_visit_fn *fn;
	void *arg;
};

/* On worker v->w: the main thread waits in sl_loop_call(), so its list holds still. */
static void visit_run(void *arg)
{
	struct visit *v = arg;
	struct sl_box *b;
	size_t i = 0;

	sl_list_for_each(b, &v->r->boxes, link) {
		if (b->w == v->w && !b->removing)
			v->fn(b, i, v->arg);
		i++;
	}
}

void sl_registry_visit(struct sl_registry *r, sl_box_visit_fn *fn, void *arg)
{
	for (unsigned k = 0; k < r->nworkers; k++) {
		struct visit v = { .r = r, .w = &r->workers[k], .fn = fn, .arg = arg };

		if (r->workers[k].nboxes)
			sl_loop_call(r->workers[k].loop, visit_run, &v);
	}
}

struct sl_box *sl_sandbox_by_id(struct sl_registry *r, uint32_t id)
{
	return id < r->max_ids && r->by_id[id] && !r->by_id[id]->adding ? r->by_id[id] : NULL;
}

struct sl_box *sl_registry_first(struct sl_registry *r)
{
	return sl_list_empty(&r->boxes) ? NULL : sl_list_first(&r->boxes, struct sl_box, link);
}

struct sl_box *sl_registry_next(const struct sl_box *box)
{
	return box->link.next == &box->reg->boxes ?
		       NULL :
		       sl_list_entry(box->link.next, struct sl_box, link);
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

int sl_box_audit(const struct sl_box *box)
{
	return sb_box_audit(box);
}

void sl_box_get_stats(struct sl_registry *r, const struct sl_box *box, struct sl_box_stats *st)
{
	struct sl_ca_stats ca = { 0 };

	memset(st, 0, sizeof(*st));
	if (box->proxy)
		st->proxy = *sl_proxy_listener_stats(box->proxy);
	if (box->dns)
		st->dns = *sl_dns_listener_stats(box->dns);
	st->kernel_ok = !sl_bpf_read_counters(r->bpf, box->id, &st->kernel);
	st->audited_ok = !sl_bpf_read_audit_ctr(r->bpf, box->id, &st->audited);
	st->sni_ok = !sl_bpf_read_sni_counters(r->bpf, box->id, &st->sni);
	if (sl_bpf_read_proxied_full(r->bpf, box->id, &st->proxied_full))
		st->proxied_full = 0;
	if (box->ca)
		sl_ca_get_stats(box->ca, &ca);
	st->leaf_evictions = ca.evictions;
	st->lua_mem = sb_lua(box) ? sl_lua_mem(sb_lua(box)) : 0;
	st->audit = sb_box_audit(box);
}

void sl_registry_get_stats(struct sl_registry *r, struct sl_registry_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->sandboxes = r->count;
	st->unattributed_ok = !sl_bpf_read_counters(r->bpf, 0, &st->unattributed);
}

size_t sl_registry_count(struct sl_registry *r)
{
	return r->count;
}

static struct sl_box *adding_find(struct sl_registry *r, const char *name);

static uint32_t alloc_id(struct sl_registry *r)
{
	for (uint32_t id = 1; id < r->max_ids; id++)
		if (!r->by_id[id] && !r->id_held[id])
			return id;
	return 0;
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

/* The main thread: the sweep's result is back from worker @t's. */
static void sweep_back(struct sl_task *t)
{
	sl_container_of(t, struct sb_worker, sweep_back)->sweeping = 0;
}

/* On a worker: its sandboxes' expired names, audit records, stale proxied records. */
static void sweep_worker(struct sl_task *t)
{
	struct sb_worker *w = sl_container_of(t, struct sb_worker, sweep);
	struct sl_registry *r = w->r;
	struct sl_box *b;

	sl_list_for_each(b, &w->boxes, wlink) {
		sb_learned_sweep(r, b, w->sweep_now);
		if (b->obs.dirty && w->sweep_now_s - b->obs.saved_s >= SB_OBS_SAVE_S)
			sb_obs_save(r, b, w->sweep_now_s);
		/* Records of intercepted connections nobody accepted (the sandbox aimed them at
		 * a listener of its own, or the client vanished unseen): they count against the
		 * sandbox's quota until they go. */
		if (b->id % PROXIED_SWEEPS == w->sweep_px)
			b->proxied_swept += (uint64_t)sl_bpf_proxied_sweep(
				r->bpf, b->id, w->sweep_now, SL_PROXIED_MAX_AGE_S * 1000000000ULL);
	}
	sl_loop_post(r->loop, &w->sweep_back, sweep_back);
}

static void sweep_cb(struct sl_loop *loop, struct sl_timer *t)
{
	struct sl_registry *r = sl_container_of(t, struct sl_registry, sweep);
	unsigned px = r->px_sweeps++ % PROXIED_SWEEPS;

	/* Each worker sweeps its own sandboxes; one still at it skips this round. */
	for (unsigned i = 0; i < r->nworkers; i++) {
		struct sb_worker *w = &r->workers[i];

		if (w->sweeping || !w->nboxes)
			continue;
		w->sweeping = 1;
		w->sweep_now = sl_now_ns();
		w->sweep_now_s = time(NULL);
		w->sweep_px = px;
		sl_loop_post(w->loop, &w->sweep, sweep_worker);
	}
	sb_reap_vanished(r);
	sl_timer_arm(loop, &r->sweep, SWEEP_MS, sweep_cb);
}

void sb_link(struct sl_registry *r, struct sl_box *box)
{
	size_t at = index_at(r->by_name, r->nindexed, box->name, 0);

	/* Keep the list sorted by name: ls output is stable. A box holds an id below max_ids,
	 * so the indexes have room (its id is taken before it is linked). */
	sl_list_add_tail(at < r->nindexed ? &r->by_name[at]->link : &r->boxes,
			 &box->link); /* before it */
	index_put(r->by_name, r->nindexed, at, box);
	index_put(r->by_cgroup, r->nindexed, index_at(r->by_cgroup, r->nindexed, box->cgroup, 1),
		  box);
	r->nindexed++;
	r->count++;
	if (box->id < r->max_ids)
		r->by_id[box->id] = box;
}

static void unlink_box(struct sl_registry *r, struct sl_box *box)
{
	if (sl_list_linked(&box->link)) {
		sl_list_del(&box->link);
		index_drop(r->by_name, r->nindexed, box, 0);
		index_drop(r->by_cgroup, r->nindexed, box, 1);
		r->nindexed--;
		r->count--;
		if (box->id < r->max_ids && r->by_id[box->id] == box)
			r->by_id[box->id] = NULL;
	}
}

/*
 * An add's first part, on the loop: validates @spec (name and cgroup free, among the sandboxes
 * and the adds under way), reads the policy, and takes a kernel id. The box is on none of the
 * registry's lists yet. NULL and errno with the reason in @err.
 */
static struct sl_box *add_prepare(struct sl_registry *r, const struct sl_box_spec *spec, char *err,
				  size_t errlen)
{
	struct sl_box *box = NULL, *o;
	int e, level;

	if (!spec->name || !sl_sandbox_name_ok(spec->name)) {
		sl_errf(err, errlen,
			"invalid sandbox name '%s' (letters, digits, '_', '.', '-'; "
			"at most %d)",
			spec->name ? spec->name : "", SL_NAME_MAX);
		e = -EINVAL;
		goto fail;
	}
	if (find_any(r, spec->name) || adding_find(r, spec->name)) {
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
	box->netns_cookie = r->netns_cookie;
	snprintf(box->name, sizeof(box->name), "%s", spec->name);
	box->reg = r;
	sl_list_init(&box->link);
	sl_list_init(&box->wlink);
	sl_rule_set_init(&box->learned.rules);
	if (spec->container_id) {
		size_t n = strlen(spec->container_id);

		if (!n || n > SL_CONTAINER_ID_MAX ||
		    strspn(spec->container_id, "abcdefghijklmnopqrstuvwxyz"
					       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-") != n) {
			sl_errf(err, errlen,
				"invalid container id (letters, digits, '_', '.', "
				"'+', '-'; at most %d)",
				SL_CONTAINER_ID_MAX);
			e = -EINVAL;
			goto fail;
		}
		snprintf(box->container_id, sizeof(box->container_id), "%s", spec->container_id);
	}
	e = sb_netns_target(box, spec, err, errlen);
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
	/* The sandboxes by their sorted paths; the adds under way (a few) one by one. */
	o = cgroup_taken(r, box->cgroup);
	if (!o) {
		struct sl_box *a;

		sl_list_for_each(a, &r->adding, link) {
			if (sl_cgroup_within(box->cgroup, a->cgroup) ||
			    sl_cgroup_within(a->cgroup, box->cgroup)) {
				o = a;
				break;
			}
		}
	}
	if (o) {
		sl_errf(err, errlen, "cgroup %s overlaps sandbox '%s' (%s)", box->cgroup, o->name,
			o->cgroup);
		e = -EEXIST;
		goto fail;
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
	sb_box_set_audit(box, !!spec->audit);
	if (spec->handler && *spec->handler)
		box->handler_since_s = time(NULL);
	box->id = alloc_id(r);
	if (!box->id) {
		sl_errf(err, errlen, "too many sandboxes (max %u: sluiced --max-sandboxes)",
			r->max_ids - 1);
		e = -ENOSPC;
		goto fail;
	}
	box->rules_id = box->id;
	return box;
fail:
	sb_box_free(box);
	errno = -e;
	return NULL;
}

/*
 * An add's second part: the policy loaded with @o (the handler @handler active, NULL: none)
 * into the box's layer, compiled, and written into the box's rule bank; the CA opened. On the loop, or on the
 * jobs thread for an async add (the box is its job's alone then). 0 or -errno with @err.
 */
static int add_build(struct sl_registry *r, struct sl_box *box, const struct sl_lua_opts *o,
		     const char *handler, const char *params, char *err, size_t errlen)
{
	struct sl_kentry *ents = NULL;
	size_t nents = 0;
	int e;

	e = sb_compile_box(box, o, handler, params, &ents, &nents, err, errlen);
	if (e) {
		e = e == -ENOMEM ? e : -EINVAL;
		goto out;
	}
	/* The sandbox's CA (a key to generate if new; the state file saves it) is its own and
	 * nobody else's yet. */
	e = sb_open_ca(r, box, err, errlen);
	if (e)
		goto out;
	box->nents = nents;
	e = sb_write_rules(r, box, ents, nents, err, errlen);
	if (!e) {
		/* Its own sl_proxied map, never a record of an earlier sandbox of this id: made
		 * here, off the worker's loop (a write to the map of maps waits for a grace
		 * period, which the worker's other sandboxes would wait for too), with those of
		 * the other adds under way (sl_bpf_proxied_want()). */
		e = sb_open_proxied(r, box, 1, err, errlen);
	}
	if (e) {
		sl_bpf_proxied_drop(r->bpf, box->id);
		sl_bpf_sync_rules(r->bpf, box->rules_id, NULL, 0);
		sb_remove_ca(r, box->name);
	}
out:
	free(ents);
	return e;
}

/* An add's last part but one, on the box's worker: the rest of the kernel, the listeners,
 * and the state file if @save (an async add has it written on the worker's jobs thread). On
 * failure its listeners are closed again (sb_uninstall() on the main thread undoes the
 * kernel's part). */
static int add_install(struct sl_registry *r, struct sl_box *box, int save, char *err,
		       size_t errlen)
{
	int e;

	box->created_s = time(NULL);
	/* Nothing of this sandbox can be in the kernel yet but its rules, but a slot may hold
	 * counters of a sandbox that had the same id. */
	sl_bpf_reset_slots(r->bpf, box->id);
	/* (Its new sl_proxied map was made by add_build().) */
	sb_sni_drop(r, box); /* names that sandbox's checked connections could present */
	e = sb_install(r, box, NULL, 0, 1, err, errlen);
	if (!e && save) {
		e = sb_save_state(r, box, 1);
		if (e)
			sl_errf(err, errlen, "saving state failed: %s", strerror(-e));
	}
	if (e) {
		sb_box_detach(box);
		return e;
	}
	sl_list_add_tail(&box->w->boxes, &box->wlink);
	return 0;
}

/* An add's last part, on the main thread: the box into the registry, or (@e) what the kernel
 * holds of it undone. */
static int add_link(struct sl_registry *r, struct sl_box *box, int e)
{
	if (e) {
		sb_uninstall(r, box);
		return e;
	}
	sb_link(r, box);
	sl_info("sandbox %s added on worker %u: cgroup %s (id %llu)%s%s, %zu kernel entries",
		box->name, box->w->index, box->cgroup, (unsigned long long)box->cgid,
		box->netns_fd >= 0 ? ", netns " : "", box->netns_fd >= 0 ? box->netns : "",
		box->nents);
	return 0;
}

struct add_call {
	struct sl_registry *r;
	struct sl_box *box;
	int e;
	char *err;
	size_t errlen;
};

static void add_install_call(void *arg)
{
	struct add_call *c = arg;

	c->e = add_install(c->r, c->box, 1, c->err, c->errlen);
}

struct sl_box *sl_sandbox_add(struct sl_registry *r, const struct sl_box_spec *spec, char *err,
			      size_t errlen)
{
	struct sl_box *box = add_prepare(r, spec, err, errlen);
	int e;

	if (!box)
		return NULL;
	r->by_id[box->id] = box; /* the id is taken (sb_link() keeps it so) */
	e = add_build(r, box, &r->lua_opts, spec->handler, spec->params, err, errlen);
	if (!e) {
		struct add_call c = { r, box, 0, err, errlen };

		sb_place(r, box);
		sl_loop_call(box->w->loop, add_install_call, &c);
		e = add_link(r, box, c.e);
	}
	if (e) {
		r->by_id[box->id] = NULL;
		unplace(box);
		sb_box_free(box);
		errno = -e;
		return NULL;
	}
	return box;
}

/* The removals' job: the kernel rules of the banks handed to it, and the removed sandboxes'
 * sl_proxied maps, in one walk and one grace period for all the removals since the last. */
static void removed_run(struct sl_job *job)
{
	struct sl_registry *r = sl_container_of(job, struct sl_registry, rmjob);
	int e = r->rm_running.n ? sl_bpf_clear_rules(r->bpf, r->rm_running.v, r->rm_running.n) : 0;

	if (e)
		sl_warn("clearing removed sandboxes' kernel rules failed: %s", strerror(-e));
	e = sl_bpf_proxied_reap(r->bpf);
	r->rm_reap_failed = !!e;
	if (e)
		sl_warn("deleting removed sandboxes' sl_proxied maps failed: %s", strerror(-e));
}

/* The banks @s hold are cleared (@clear: here, now): their ids are free again. Had clearing
 * failed, their entries are still counted in their banks: the id's next sandbox's first sync
 * deletes them. */
static void ids_release(struct sl_registry *r, struct sb_ids *s, int clear)
{
	if (clear && s->n)
		sl_bpf_clear_rules(r->bpf, s->v, s->n);
	for (size_t i = 0; i < s->n; i++)
		r->id_held[s->v[i] & ~SL_RULES_BANK] = 0;
	s->n = 0;
}

static void removed_done(struct sl_job *job)
{
	struct sl_registry *r = sl_container_of(job, struct sl_registry, rmjob);

	ids_release(r, &r->rm_running, job->cancelled); /* stopping: now, before the ids go */
	r->rm_queued = 0;
	if (!job->cancelled &&
	    (r->rm_pending.n || (!r->rm_reap_failed && sl_bpf_proxied_stale(r->bpf))))
		sb_removed_later(r, NULL); /* removed while this one ran */
}

/* Hands the removals so far to the removals' job (one at a time). */
static void removed_submit(struct sl_registry *r)
{
	struct sl_jobs *j;
	struct sb_ids t;

	/* Stopping: sl_registry_rm_all() and sl_registry_free() clear them at once. */
	if (r->rm_queued || r->jobs_stopped)
		return;
	/* A thread of its own: a walk of a big rule map takes seconds, and adds need not wait
	 * for it (the ids it frees are held until it is done). */
	if (!r->rm_jobs && r->loop && !(r->rm_jobs = sl_jobs_new(r->loop)))
		sl_warn("starting the removals' thread failed (%s): on the compile thread",
			strerror(errno));
	j = r->rm_jobs ? r->rm_jobs : sb_jobs(r);
	if (!j)
		return;
	t = r->rm_running; /* empty: its buffer is reused */
	r->rm_running = r->rm_pending;
	r->rm_pending = t;
	r->rm_pending.n = 0;
	r->rm_queued = 1;
	r->rmjob.run = removed_run;
	r->rmjob.done = removed_done;
	sl_jobs_submit(j, &r->rmjob);
}

void sb_removed_later(struct sl_registry *r, struct sl_box *box)
{
	/* The bank not in force is a switch's while one is under way (box->switching): its
	 * completion clears it. */
	uint32_t banks[2] = { box ? box->rules_id : 0, box ? box->rules_id ^ SL_RULES_BANK : 0 };
	size_t n = !box ? 0 : box->switching ? 1 : 2;

	if (n && r->rm_pending.n + n > r->rm_pending.cap) {
		size_t c = r->rm_pending.cap ? 2 * r->rm_pending.cap : 64;
		uint32_t *v = realloc(r->rm_pending.v, c * sizeof(*v));

		if (!v) {
			sl_bpf_clear_rules(r->bpf, banks, n); /* now, then: a walk for this one */
			n = 0;
		} else {
			r->rm_pending.v = v;
			r->rm_pending.cap = c;
		}
	}
	for (size_t i = 0; i < n; i++)
		r->rm_pending.v[r->rm_pending.n++] = banks[i];
	if (n)
		r->id_held[box->id] = 1; /* no new sandbox gets the id before they are gone */
	removed_submit(r);
}

/* Stopping (no jobs any more): what removals left, at once. */
static void removed_now(struct sl_registry *r)
{
	ids_release(r, &r->rm_pending, 1);
}

struct sl_jobs *sb_jobs(struct sl_registry *r)
{
	if (!r->jobs && r->loop && !(r->jobs = sl_jobs_new(r->loop)))
		sl_warn("starting the compile thread failed (%s): compiling on the loop",
			strerror(errno));
	return r->jobs;
}

/* An add under way: its compile job, its worker's part, and whom to tell. */
struct sb_adding {
	struct sl_job job;
	struct sl_job save; /* the state file, on the worker's jobs thread */
	char *state; /* its text (with the CA key: cleared when freed) */
	struct sl_task task; /* to the worker, and back */
	struct sl_registry *r;
	struct sl_box *box; /* on r->adding */
	struct sl_lua_opts opts; /* the registry's, without events and KV (sl_lua_set_services) */
	char *handler, *params;
	int e;
	char err[512];
	sl_box_added_fn *done;
	void *arg;
};

static struct sl_box *adding_find(struct sl_registry *r, const char *name)
{
	struct sl_box *b;

	sl_list_for_each(b, &r->adding, link)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

/* The jobs thread: everything that grows with the policy. */
static void adding_run(struct sl_job *job)
{
	struct sb_adding *a = sl_container_of(job, struct sb_adding, job);

	a->e = add_build(a->r, a->box, &a->opts, a->handler, a->params, a->err, sizeof(a->err));
}

/* The main thread, last: the box into the registry or gone, and the answer. */
static void adding_end(struct sb_adding *a, int e)
{
	struct sl_registry *r = a->r;
	struct sl_box *box = a->box;

	if (e) {
		r->by_id[box->id] = NULL;
		unplace(box);
		sb_box_free(box);
		box = NULL;
		sl_info("sandbox add refused: %s", a->err);
	}
	a->done(a->arg, box, e, a->err);
	free(a->handler);
	free(a->params);
	free(a);
}

static void adding_linked(struct sl_task *t)
{
	struct sb_adding *a = sl_container_of(t, struct sb_adding, task);

	sl_list_del(&a->box->link);
	sl_list_init(&a->box->link);
	a->box->adding = 0;
	adding_end(a, add_link(a->r, a->box, a->e));
}

/* The worker's jobs thread: the state file's write and syncs, off the worker's loop. */
static void adding_save_run(struct sl_job *job)
{
	struct sb_adding *a = sl_container_of(job, struct sb_adding, save);

	a->e = sb_state_write(a->r, a->box->name, a->state, 1);
}

/* The state file's write done (@on_worker), or given up with sluiced stopping (on the main
 * thread): its text freed, the box's listeners closed if it failed, the rest to the main
 * thread. */
static void adding_save_end(struct sb_adding *a, int on_worker)
{
	sb_state_text_free(a->state);
	a->state = NULL;
	if (a->e) {
		sl_errf(a->err, sizeof(a->err), "saving state failed: %s", strerror(-a->e));
		if (on_worker)
			sb_box_detach(a->box);
	}
	if (on_worker)
		sl_loop_post(a->r->loop, &a->task, adding_linked);
	else
		adding_linked(&a->task);
}

/* The box's worker again, or the main thread when sluiced stops first (written there). */
static void adding_saved(struct sl_job *job)
{
	struct sb_adding *a = sl_container_of(job, struct sb_adding, save);

	if (job->cancelled)
		a->e = sb_state_write(a->r, a->box->name, a->state, 1);
	adding_save_end(a, !job->cancelled);
}

/* The box's worker: its Lua state gets events and KV, its listeners open; its state file is
 * formatted here and written on the worker's jobs thread. */
static void adding_install(struct sl_task *t)
{
	struct sb_adding *a = sl_container_of(t, struct sb_adding, task);
	struct sl_registry *r = a->r;
	struct sl_box *box = a->box;
	struct sl_jobs *jobs = sb_worker_jobs(box->w);

	if (sb_lua(box))
		sl_lua_set_services(sb_lua(box), r->lua_opts.events, r->lua_opts.kv);
	a->e = add_install(r, box, !jobs, a->err, sizeof(a->err));
	if (a->e || !jobs) {
		sl_loop_post(r->loop, &a->task, adding_linked);
		return;
	}
	a->state = sb_state_text(box, &a->e);
	if (!a->state) {
		adding_save_end(a, 1);
		return;
	}
	a->save.run = adding_save_run;
	a->save.done = adding_saved;
	sl_jobs_submit(jobs, &a->save);
}

/* The main thread: the compile is done; the rest of the add goes to the box's worker. */
static void adding_done(struct sl_job *job)
{
	struct sb_adding *a = sl_container_of(job, struct sb_adding, job);
	struct sl_registry *r = a->r;
	struct sl_box *box = a->box;
	int e = a->e;

	sl_list_del(&box->link);
	sl_list_init(&box->link);
	box->adding = 0;
	if (job->cancelled) {
		e = -ECANCELED;
		snprintf(a->err, sizeof(a->err), "sluiced is stopping");
		sl_bpf_sync_rules(r->bpf, box->rules_id, NULL, 0);
		if (box->ca)
			sb_remove_ca(r, box->name);
	}
	if (e) {
		adding_end(a, e);
		return;
	}
	/* Its name is kept by the main list from here: linked there only at the end, it
	 * would be free for another add meanwhile (add_prepare() looks at r->adding too). */
	box->adding = 1;
	sl_list_add_tail(&r->adding, &box->link);
	sb_place(r, box);
	sl_loop_post(box->w->loop, &a->task, adding_install);
}

int sl_sandbox_add_async(struct sl_registry *r, const struct sl_box_spec *spec,
			 sl_box_added_fn *done, void *arg, char *err, size_t errlen)
{
	struct sb_adding *a = NULL;
	struct sl_box *box;

	if (!sb_jobs(r))
		goto sync;
	a = calloc(1, sizeof(*a));
	if (!a || (spec->handler && !(a->handler = strdup(spec->handler))) ||
	    (spec->params && !(a->params = strdup(spec->params)))) {
		sl_errf(err, errlen, "out of memory");
		goto oom;
	}
	box = add_prepare(r, spec, err, errlen);
	if (!box) {
		int e = -errno;

		free(a->handler);
		free(a->params);
		free(a);
		return e;
	}
	box->adding = 1;
	r->by_id[box->id] = box; /* its id is taken; sl_sandbox_by_id() does not show it */
	sl_bpf_proxied_want(r->bpf, box->id);
	sl_list_add_tail(&r->adding, &box->link);
	a->r = r;
	a->box = box;
	a->opts = r->lua_opts;
	a->opts.events = NULL;
	a->opts.kv = NULL;
	a->done = done;
	a->arg = arg;
	a->job.run = adding_run;
	a->job.done = adding_done;
	sl_jobs_submit(r->jobs, &a->job);
	return 0;
oom:
	if (a) {
		free(a->handler);
		free(a->params);
		free(a);
	}
	return -ENOMEM;
sync:
	box = sl_sandbox_add(r, spec, err, errlen);
	done(arg, box, box ? 0 : -errno, err);
	return 0;
}

/* The main thread's part of a removal, after the worker let go (sb_box_detach()). */
static void rm_finish(struct sl_registry *r, struct sl_box *box)
{
	char path[PATH_MAX + 128];

	sb_uninstall(r, box);
	sb_state_path(r, box->name, path, sizeof(path));
	if (unlink(path) == -1 && errno != ENOENT)
		sl_warn("removing %s failed: %s", path, strerror(errno));
	sb_names_path(r, box->name, path, sizeof(path));
	unlink(path);
	sb_obs_path(r, box->name, path, sizeof(path));
	unlink(path);
	unlink_box(r, box);
	unplace(box);
	sl_info("sandbox %s removed", box->name);
	sl_events_sandbox_gone(r->lua_opts.events, box->name);
	sb_box_free(box);
}

int sl_sandbox_rm(struct sl_registry *r, const char *name)
{
	struct sl_box *box = sl_sandbox_find(r, name);

	if (!box)
		return -ENOENT;
	sb_box_detach(box);
	rm_finish(r, box);
	return 0;
}

struct sb_rm {
	struct sl_task task; /* to the worker, and back */
	struct sl_registry *r;
	struct sl_box *box;
	sl_box_removed_fn *done;
	void *arg;
};

static void rm_back(struct sl_task *t)
{
	struct sb_rm *m = sl_container_of(t, struct sb_rm, task);

	rm_finish(m->r, m->box);
	if (m->done)
		m->done(m->arg, 0);
	free(m);
}

static void rm_detach(struct sl_task *t)
{
	struct sb_rm *m = sl_container_of(t, struct sb_rm, task);

	if (m->box->switching || m->box->jobs) {
		/* Its switch's job may be writing its other rule bank: the switch's completion
		 * clears that bank, answers (404), and then goes on with this (sb_rm_resume()).
		 * Other jobs of the box (box->jobs) hold its layer or clear its old bank: the last
		 * one's completion goes on (sb_box_job_end()). */
		m->box->removed = 1;
		m->box->rm_after_switch = m;
		return;
	}
	sb_box_detach(m->box);
	sl_loop_post(m->r->loop, &m->task, rm_back);
}

void sb_rm_resume(struct sl_box *box)
{
	struct sb_rm *m = box->rm_after_switch;

	box->rm_after_switch = NULL;
	box->removed = 0;
	if (m)
		rm_detach(&m->task);
}

void sb_box_job_end(struct sl_box *box)
{
	if (!--box->jobs && box->removed && !box->switching)
		sb_rm_resume(box); /* after the answer: the removal frees the box */
}

struct sl_jobs *sb_worker_jobs(struct sb_worker *w)
{
	if (!w->jobs && w->loop && !(w->jobs = sl_jobs_new(w->loop)))
		sl_warn("worker %u: starting its compile thread failed (%s): compiling on the loop",
			w->index, strerror(errno));
	return w->jobs;
}

void sl_registry_stop_worker_jobs(struct sl_registry *r)
{
	for (unsigned i = 0; i < r->nworkers; i++) {
		sl_jobs_free(r->workers[i].jobs);
		r->workers[i].jobs = NULL;
	}
}

int sl_sandbox_rm_async(struct sl_registry *r, const char *name, sl_box_removed_fn *done, void *arg)
{
	struct sl_box *box = sl_sandbox_find(r, name);
	struct sb_rm *m;

	if (!box)
		return -ENOENT;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*m = (struct sb_rm){ .r = r, .box = box, .done = done, .arg = arg };
	/* Whatever was posted to its worker before runs first: the box is freed only after
	 * the worker has run this one, and its answer came back. */
	box->removing = 1;
	sl_loop_post(box->w->loop, &m->task, rm_detach);
	return 0;
}

void sl_registry_stop_jobs(struct sl_registry *r)
{
	r->jobs_stopped = 1;
	sl_jobs_free(r->jobs);
	r->jobs = NULL;
	sl_jobs_free(r->rm_jobs);
	r->rm_jobs = NULL;
}

void sl_registry_rm_all(struct sl_registry *r)
{
	/* Adds and switches under way end first (cancelled): none writes the kernel after this. */
	r->jobs_stopped = 1;
	sl_jobs_free(r->jobs);
	r->jobs = NULL;
	sl_jobs_free(r->rm_jobs);
	r->rm_jobs = NULL;
	sl_registry_stop_worker_jobs(r);
	while (!sl_list_empty(&r->boxes)) {
		char name[SL_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%s",
			 sl_list_first(&r->boxes, struct sl_box, link)->name);
		sl_sandbox_rm(r, name);
	}
	removed_now(r); /* every removal's rules in one walk */
}
