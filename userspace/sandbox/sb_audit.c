// SPDX-License-Identifier: MIT
/*
 * Audit mode's records that live in sluiced (the kernel counts connections itself, in
 * sl_audit): the names a sandbox resolved with their answers, and the requests its
 * intercepted hosts saw. `sluice policy suggest` joins the two: an address the kernel saw is
 * written as the names that resolved to it, with the port and protocol it was used on.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/log.h"
#include "core/loop.h"
#include "kernel/bpf_loader.h"
#include "policy/suggest.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

void sb_obs_free(struct sb_obs *o)
{
	free(o->uses);
	free(o->names);
	free(o->http);
	memset(o, 0, sizeof(*o));
}

/* Grows the array *@v of @size-byte items to hold one more than @n (at most @max). */
static int grow(void **v, size_t *cap, size_t n, size_t size, size_t max)
{
	size_t c;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= max)
		return -ENOSPC;
	c = *cap ? *cap * 2 : 16;
	if (c > max)
		c = max;
	p = realloc(*v, c * size);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = c;
	return 0;
}

void sb_obs_dns(struct sl_box *box, const char *qname, const struct sl_dns_answer *a,
		const uint8_t blocked[SL_DNS_MAX_ADDRS], int granted)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct sb_obs *o = &box->obs;
	struct sb_obs_name *n = NULL;
	int64_t now = time(NULL);

	for (size_t i = 0; i < o->nnames; i++)
		if (!strcmp(o->names[i].name, qname)) {
			n = &o->names[i];
			break;
		}
	if (!n) {
		if (grow((void **)&o->names, &o->names_cap, o->nnames, sizeof(*o->names),
			 SB_OBS_NAMES_MAX)) {
			o->names_lost++;
			o->dirty = 1;
			return;
		}
		n = &o->names[o->nnames++];
		memset(n, 0, sizeof(*n));
		snprintf(n->name, sizeof(n->name), "%s", qname);
		n->first_s = now;
	}
	n->count++;
	n->last_s = now;
	o->dirty = 1;
	n->granted |= !!granted;
	for (size_t i = 0; i < a->naddr; i++) {
		const struct sl_dns_addr *x = &a->addr[i];
		uint8_t family = x->family, addr[16] = { 0 };
		size_t k;

		if (family == AF_INET6 && !memcmp(x->addr, mapped, 12)) {
			family = AF_INET;
			memcpy(addr, x->addr + 12, 4);
		} else {
			memcpy(addr, x->addr, family == AF_INET ? 4 : 16);
		}
		for (k = 0; k < n->naddr; k++)
			if (n->a[k].family == family && !memcmp(n->a[k].addr, addr, 16))
				break;
		if (k < n->naddr || n->naddr >= SB_OBS_ADDRS)
			continue;
		n->a[k].family = family;
		n->a[k].blocked = blocked[i];
		memcpy(n->a[k].addr, addr, 16);
		n->naddr++;
		n->nblocked += blocked[i];
	}
}

void sb_obs_use(struct sl_box *box, const char *name, uint16_t port, uint8_t proto)
{
	struct sb_obs *o = &box->obs;
	struct sb_obs_use *u = NULL;
	int64_t now = time(NULL);

	for (size_t i = 0; i < o->nuses; i++)
		if (o->uses[i].port == port && o->uses[i].proto == proto &&
		    !strcmp(o->uses[i].name, name)) {
			u = &o->uses[i];
			break;
		}
	if (!u) {
		if (grow((void **)&o->uses, &o->uses_cap, o->nuses, sizeof(*o->uses),
			 SB_OBS_NAMES_MAX)) {
			o->names_lost++;
			o->dirty = 1;
			return;
		}
		u = &o->uses[o->nuses++];
		memset(u, 0, sizeof(*u));
		snprintf(u->name, sizeof(u->name), "%s", name);
		u->port = port;
		u->proto = proto;
		u->first_s = now;
	}
	u->count++;
	u->last_s = now;
	o->dirty = 1;
}

/* FNV-1a over the NUL-terminated strings of @v. */
static uint32_t obs_hash(const char *const *v, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		for (const char *p = v[i];; p++) {
			h = (h ^ (uint8_t)*p) * 16777619u;
			if (!*p)
				break;
		}
	return h;
}

/* A request's path as recorded: up to its second segment, without the query. Enough to say
 * what a job fetches, without the tokens some put in paths further down. */
static void obs_prefix(const char *path, char *out, size_t len)
{
	size_t n = 0;
	int seg = 0;

	for (const char *p = path && *path ? path : "/"; *p && *p != '?' && *p != '#'; p++) {
		if (*p == '/' && n && ++seg == 2)
			break;
		if (n + 1 >= len)
			break;
		out[n++] = *p;
	}
	out[n] = 0;
}

/*
 * Aggregated per method, host and path prefix, so that a busy job grows a record's counts,
 * not the records: at most SB_OBS_HTTP_MAX of them (what does not fit is counted in
 * http_lost). Lookups compare a hash first; the scan is over at most SB_OBS_HTTP_MAX words.
 */
void sb_obs_http(struct sl_box *box, const char *method, const char *host, const char *path,
		 int status, const char *refused)
{
	struct sb_obs *o = &box->obs;
	struct sb_obs_http *h = NULL;
	char prefix[sizeof(h->path)];
	const char *key[3];
	int64_t now = time(NULL);
	uint32_t hash;
	size_t k;

	obs_prefix(path, prefix, sizeof(prefix));
	key[0] = method;
	key[1] = host;
	key[2] = prefix;
	hash = obs_hash(key, 3);
	for (size_t i = 0; i < o->nhttp; i++) {
		struct sb_obs_http *x = &o->http[i];

		if (x->hash == hash && !strcmp(x->method, method) && !strcmp(x->host, host) &&
		    !strcmp(x->path, prefix)) {
			h = x;
			break;
		}
	}
	if (!h) {
		if (grow((void **)&o->http, &o->http_cap, o->nhttp, sizeof(*o->http),
			 SB_OBS_HTTP_MAX)) {
			o->http_lost++;
			o->dirty = 1;
			return;
		}
		h = &o->http[o->nhttp++];
		memset(h, 0, sizeof(*h));
		h->hash = hash;
		snprintf(h->method, sizeof(h->method), "%s", method);
		snprintf(h->host, sizeof(h->host), "%s", host);
		snprintf(h->path, sizeof(h->path), "%s", prefix);
		h->first_s = now;
	}
	for (k = 0; k < SB_OBS_STATUSES && h->status_n[k]; k++)
		if (h->status[k] == status)
			break;
	if (k < SB_OBS_STATUSES) {
		h->status[k] = (uint16_t)status;
		h->status_n[k]++;
	} else {
		h->status_other++;
	}
	h->count++;
	if (refused) {
		h->refused++;
		snprintf(h->why, sizeof(h->why), "%s", refused);
	}
	h->last_s = now;
	o->dirty = 1;
}

/* ---- across restarts ----
 *
 * The kernel keeps its audit counts in a pinned map, which outlives sluiced; these records
 * live in sluiced's memory, so they are written to STATE_DIR/sandboxes/NAME.audit (JSON): by
 * the registry's sweep at most every SB_OBS_SAVE_S seconds when they changed, and when
 * sluiced stops. A temporary file and a rename, without fsync (like the names file): what was
 * written outlives a crash of sluiced in the page cache; a crash loses at most the last
 * SB_OBS_SAVE_S seconds. Adoption reads the file back; `sandbox rm` deletes it.
 */

void sb_obs_path(struct sl_registry *r, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sandboxes/%s.audit", r->state_dir, name);
}

static json_t *addr_json(uint8_t family, const uint8_t *addr)
{
	char a[INET6_ADDRSTRLEN];

	if (!inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, a, sizeof(a)))
		return json_string("");
	return json_string(a);
}

static json_t *obs_json(const struct sb_obs *o)
{
	json_t *j = json_object(), *names = json_array(), *uses = json_array(),
	       *http = json_array();

	if (!j || !names || !uses || !http)
		goto nomem;
	for (size_t i = 0; i < o->nnames; i++) {
		const struct sb_obs_name *n = &o->names[i];
		json_t *a = json_array(), *x;

		for (size_t k = 0; a && k < n->naddr; k++)
			json_array_append_new(a, json_pack("{s:o, s:b}", "addr",
							   addr_json(n->a[k].family, n->a[k].addr),
							   "blocked", n->a[k].blocked));
		x = json_pack("{s:s, s:I, s:I, s:I, s:b, s:o*}", "name", n->name, "count",
			      (json_int_t)n->count, "first", (json_int_t)n->first_s, "last",
			      (json_int_t)n->last_s, "granted", n->granted, "addrs", a);
		if (!x || json_array_append_new(names, x))
			goto nomem;
	}
	for (size_t i = 0; i < o->nuses; i++) {
		const struct sb_obs_use *u = &o->uses[i];
		json_t *x = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I}", "name", u->name, "port",
				      (int)u->port, "proto", (int)u->proto, "count",
				      (json_int_t)u->count, "first", (json_int_t)u->first_s, "last",
				      (json_int_t)u->last_s);

		if (!x || json_array_append_new(uses, x))
			goto nomem;
	}
	for (size_t i = 0; i < o->nhttp; i++) {
		const struct sb_obs_http *h = &o->http[i];
		json_t *st = json_array(), *x;

		for (size_t k = 0; st && k < SB_OBS_STATUSES && h->status_n[k]; k++)
			json_array_append_new(st, json_pack("[i, I]", (int)h->status[k],
							    (json_int_t)h->status_n[k]));
		x = json_pack("{s:s, s:s, s:s, s:o*, s:I, s:I, s:I, s:s, s:I, s:I}", "method",
			      h->method, "host", h->host, "path", h->path, "statuses", st,
			      "status_other", (json_int_t)h->status_other, "count",
			      (json_int_t)h->count, "refused", (json_int_t)h->refused, "why",
			      h->why, "first", (json_int_t)h->first_s, "last",
			      (json_int_t)h->last_s);
		if (!x || json_array_append_new(http, x))
			goto nomem;
	}
	if (json_object_set_new(j, "names", names) || json_object_set_new(j, "uses", uses) ||
	    json_object_set_new(j, "http", http)) {
		names = uses = http = NULL;
		goto nomem;
	}
	json_object_set_new(j, "names_lost", json_integer((json_int_t)o->names_lost));
	json_object_set_new(j, "http_lost", json_integer((json_int_t)o->http_lost));
	return j;
nomem:
	json_decref(names);
	json_decref(uses);
	json_decref(http);
	json_decref(j);
	return NULL;
}

int sb_obs_save(struct sl_registry *r, struct sl_box *box, int64_t now_s)
{
	char path[PATH_MAX + 128], tmp[PATH_MAX + 160];
	json_t *j;
	int fd, e = 0;

	if (!box->obs.dirty)
		return 0;
	j = obs_json(&box->obs);
	if (!j)
		return -ENOMEM;
	sb_obs_path(r, box->name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* 0600 like the state file: the records say what the job reached. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		e = -errno;
	else if (json_dumpfd(j, fd, JSON_COMPACT))
		e = errno ? -errno : -EIO;
	if (fd != -1)
		close(fd);
	if (!e && rename(tmp, path) == -1)
		e = -errno;
	if (e) {
		unlink(tmp);
		sl_warn("sandbox %s: saving its audit records to %s failed: %s", box->name, path,
			strerror(-e));
	} else {
		box->obs.dirty = 0;
	}
	box->obs.saved_s = now_s; /* a failure is tried again SB_OBS_SAVE_S later, not each sweep */
	json_decref(j);
	return e;
}

static void str_field(json_t *o, const char *key, char *buf, size_t len)
{
	const char *v = json_string_value(json_object_get(o, key));

	snprintf(buf, len, "%s", v ? v : "");
}

static uint64_t u64_field(json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

/* Appends to @v (items of @size bytes, at most @max) one zeroed item; NULL when full. */
static void *load_slot(void **v, size_t *cap, size_t *n, size_t size, size_t max)
{
	char *p;

	if (grow(v, cap, *n, size, max))
		return NULL;
	p = (char *)*v + (*n)++ * size;
	memset(p, 0, size);
	return p;
}

int sb_obs_load(struct sl_registry *r, struct sl_box *box)
{
	char path[PATH_MAX + 128];
	struct sb_obs *o = &box->obs;
	json_error_t jerr;
	json_t *j, *x;
	size_t i;

	sb_obs_path(r, box->name, path, sizeof(path));
	j = json_load_file(path, 0, &jerr);
	if (!j) {
		if (access(path, F_OK) == 0)
			sl_warn("sandbox %s: its audit records %s are unreadable (%s): starting "
				"without them",
				box->name, path, jerr.text);
		return 0;
	}
	json_array_foreach(json_object_get(j, "names"), i, x) {
		struct sb_obs_name *n = load_slot((void **)&o->names, &o->names_cap, &o->nnames,
						  sizeof(*n), SB_OBS_NAMES_MAX);
		json_t *a;
		size_t k;

		if (!n)
			break;
		str_field(x, "name", n->name, sizeof(n->name));
		n->count = u64_field(x, "count");
		n->first_s = (int64_t)u64_field(x, "first");
		n->last_s = (int64_t)u64_field(x, "last");
		n->granted = json_is_true(json_object_get(x, "granted"));
		json_array_foreach(json_object_get(x, "addrs"), k, a) {
			const char *s = json_string_value(json_object_get(a, "addr"));
			uint8_t *d = n->a[n->naddr].addr;

			if (n->naddr >= SB_OBS_ADDRS || !s)
				break;
			memset(d, 0, 16);
			if (inet_pton(AF_INET, s, d) == 1)
				n->a[n->naddr].family = AF_INET;
			else if (inet_pton(AF_INET6, s, d) == 1)
				n->a[n->naddr].family = AF_INET6;
			else
				continue;
			n->a[n->naddr].blocked = json_is_true(json_object_get(a, "blocked"));
			n->nblocked += n->a[n->naddr].blocked;
			n->naddr++;
		}
	}
	json_array_foreach(json_object_get(j, "uses"), i, x) {
		struct sb_obs_use *u = load_slot((void **)&o->uses, &o->uses_cap, &o->nuses,
						 sizeof(*u), SB_OBS_NAMES_MAX);

		if (!u)
			break;
		str_field(x, "name", u->name, sizeof(u->name));
		u->port = (uint16_t)u64_field(x, "port");
		u->proto = (uint8_t)u64_field(x, "proto");
		u->count = u64_field(x, "count");
		u->first_s = (int64_t)u64_field(x, "first");
		u->last_s = (int64_t)u64_field(x, "last");
	}
	json_array_foreach(json_object_get(j, "http"), i, x) {
		struct sb_obs_http *h = load_slot((void **)&o->http, &o->http_cap, &o->nhttp,
						  sizeof(*h), SB_OBS_HTTP_MAX);
		const char *key[3];
		json_t *st;
		size_t k;

		if (!h)
			break;
		str_field(x, "method", h->method, sizeof(h->method));
		str_field(x, "host", h->host, sizeof(h->host));
		str_field(x, "path", h->path, sizeof(h->path));
		str_field(x, "why", h->why, sizeof(h->why));
		key[0] = h->method;
		key[1] = h->host;
		key[2] = h->path;
		h->hash = obs_hash(key, 3);
		json_array_foreach(json_object_get(x, "statuses"), k, st) {
			if (k >= SB_OBS_STATUSES)
				break;
			h->status[k] = (uint16_t)json_integer_value(json_array_get(st, 0));
			h->status_n[k] = (uint64_t)json_integer_value(json_array_get(st, 1));
		}
		h->status_other = u64_field(x, "status_other");
		h->count = u64_field(x, "count");
		h->refused = u64_field(x, "refused");
		h->first_s = (int64_t)u64_field(x, "first");
		h->last_s = (int64_t)u64_field(x, "last");
	}
	o->names_lost = u64_field(j, "names_lost");
	o->http_lost = u64_field(j, "http_lost");
	json_decref(j);
	return 0;
}

/* A kernel time (CLOCK_MONOTONIC ns) on the wall clock. */
static int64_t wall_of(uint64_t ns, uint64_t now_ns, int64_t now_s)
{
	return ns && ns <= now_ns ? now_s - (int64_t)((now_ns - ns) / 1000000000ULL) : now_s;
}

struct sg_build {
	struct sl_sg_name *names;
	size_t nnames, names_cap;
	struct sl_sg_addr *addrs;
	size_t naddrs, addrs_cap;
	char **notes;
	size_t nnotes, notes_cap;
	uint8_t *used; /* per obs name: an audited connection went to one of its addresses */
};

static int add_name(struct sg_build *b, const char *name, const struct sl_audit_rec *rec,
		    uint64_t now_ns, int64_t now_s)
{
	struct sl_sg_name *n;

	if (grow((void **)&b->names, &b->names_cap, b->nnames, sizeof(*b->names), SIZE_MAX / 2))
		return -ENOMEM;
	n = &b->names[b->nnames++];
	memset(n, 0, sizeof(*n));
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->port = rec->k.port;
	n->proto = rec->k.proto;
	n->count = rec->v.count;
	n->first_s = wall_of(rec->v.first_ns, now_ns, now_s);
	n->last_s = wall_of(rec->v.last_ns, now_ns, now_s);
	return 0;
}

static int add_note(struct sg_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_note(struct sg_build *b, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	if (grow((void **)&b->notes, &b->notes_cap, b->nnotes, sizeof(*b->notes), 100000))
		return -ENOMEM;
	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	b->notes[b->nnotes++] = s;
	return 0;
}

/* The names of @box whose answers held @family/@addr; returns how many were added. */
static int names_of(struct sl_box *box, struct sg_build *b, const struct sl_audit_rec *rec,
		    uint64_t now_ns, int64_t now_s, size_t *found)
{
	const struct sb_obs *o = &box->obs;
	int e = 0;

	*found = 0;
	for (size_t i = 0; i < o->nnames && !e; i++) {
		const struct sb_obs_name *n = &o->names[i];

		for (size_t k = 0; k < n->naddr; k++) {
			if (n->a[k].blocked || n->a[k].family != rec->k.family ||
			    memcmp(n->a[k].addr, rec->k.addr, 16))
				continue;
			e = add_name(b, n->name, rec, now_ns, now_s);
			b->used[i] = 1;
			(*found)++;
			break;
		}
	}
	/* Names resolved before audit mode began: the sandbox's learned entries at the address
	 * (the learned set's index; the record's address is zero-padded as theirs are). */
	sb_lx_for_each_at(i, &box->learned.ix, &box->learned.rules, rec->k.family, rec->k.addr) {
		int dup = 0;

		if (e)
			break;
		if (!box->learned.names[i][0])
			continue;
		for (size_t j = b->nnames - *found; j < b->nnames; j++)
			dup |= !strcmp(b->names[j].name, box->learned.names[i]);
		if (dup)
			continue;
		e = add_name(b, box->learned.names[i], rec, now_ns, now_s);
		(*found)++;
	}
	return e;
}

static int cmp_http(const void *x, const void *y)
{
	const struct sb_obs_http *a = *(const struct sb_obs_http *const *)x;
	const struct sb_obs_http *b = *(const struct sb_obs_http *const *)y;
	int c = strcmp(a->host, b->host);

	if (!c)
		c = strcmp(a->path, b->path);
	return c ? c : strcmp(a->method, b->method);
}

/*
 * The requests intercepted hosts saw, as comments: the policy format has no per-path grammar,
 * and the hosts' intercept entries and handlers are the policy's own, kept whole. Requests
 * a handler refused are marked: the kept handler refuses them again once enforced.
 */
static int http_notes(struct sl_box *box, struct sg_build *b)
{
	const struct sb_obs *o = &box->obs;
	const struct sb_obs_http **v;
	int e = 0;

	if (!o->nhttp)
		return 0;
	v = malloc(o->nhttp * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < o->nhttp; i++)
		v[i] = &o->http[i];
	qsort(v, o->nhttp, sizeof(*v), cmp_http);
	e = add_note(b, "-- Requests at intercepted hosts (their intercept entries and handlers "
			"are the policy's own, kept above); path prefixes, no queries:");
	for (size_t i = 0; i < o->nhttp && !e; i++) {
		const struct sb_obs_http *h = v[i];
		char st[96] = "", f[32], l[32];
		size_t n = 0;
		time_t t;
		struct tm tm;

		for (size_t k = 0; k < SB_OBS_STATUSES && h->status_n[k] && n < sizeof(st); k++)
			n += (size_t)snprintf(st + n, sizeof(st) - n, "%s%u x%llu", k ? ", " : "",
					      h->status[k], (unsigned long long)h->status_n[k]);
		if (h->status_other && n < sizeof(st))
			snprintf(st + n, sizeof(st) - n, ", other x%llu",
				 (unsigned long long)h->status_other);
		t = (time_t)h->first_s;
		gmtime_r(&t, &tm);
		strftime(f, sizeof(f), "%Y-%m-%dT%H:%M:%SZ", &tm);
		t = (time_t)h->last_s;
		gmtime_r(&t, &tm);
		strftime(l, sizeof(l), "%Y-%m-%dT%H:%M:%SZ", &tm);
		e = add_note(b, "--   %s %s%s: %llu %s (%s), first %s, last %s", h->method, h->host,
			     h->path, (unsigned long long)h->count,
			     h->count == 1 ? "request" : "requests", st, f, l);
		if (!e && h->refused)
			e = add_note(b,
				     "--     REFUSED %llu of them when enforced: %s; the handler "
				     "is kept, change it if the job needs these",
				     (unsigned long long)h->refused, h->why);
	}
	free(v);
	return e;
}

int sl_sandbox_suggest(struct sl_registry *r, struct sl_box *box, unsigned collapse, char **out,
		       char *err, size_t errlen)
{
	struct sl_audit_rec *recs = NULL;
	struct sl_audit_unix_rec *urecs = NULL;
	struct sl_sg_unix *us = NULL;
	struct sg_build b = { 0 };
	struct sl_suggest_in in = { 0 };
	struct sl_audit_ctr ctr = { 0 };
	size_t nrecs = 0, nurecs = 0, nus = 0;
	uint64_t now_ns = sl_now_ns();
	int64_t now_s = time(NULL);
	int e;

	*out = NULL;
	e = sl_bpf_audit_read(r->bpf, box->id, &recs, &nrecs);
	if (!e)
		e = sl_bpf_audit_unix_read(r->bpf, box->id, &urecs, &nurecs);
	if (e) {
		sl_errf(err, errlen, "reading the kernel's audit records failed: %s", strerror(-e));
		goto out;
	}
	sl_bpf_read_audit_ctr(r->bpf, box->id, &ctr);
	b.used = calloc(box->obs.nnames + 1, 1);
	us = calloc(nurecs + 1, sizeof(*us));
	if (!b.used || !us) {
		e = -ENOMEM;
		goto nomem;
	}
	for (size_t i = 0; i < nrecs && !e; i++) {
		const struct sl_audit_rec *rec = &recs[i];
		struct sl_sg_addr *a;
		size_t found;

		e = names_of(box, &b, rec, now_ns, now_s, &found);
		if (e || found)
			continue;
		e = grow((void **)&b.addrs, &b.addrs_cap, b.naddrs, sizeof(*b.addrs), SIZE_MAX / 2);
		if (e)
			break;
		a = &b.addrs[b.naddrs++];
		memset(a, 0, sizeof(*a));
		a->family = rec->k.family;
		memcpy(a->addr, rec->k.addr, 16);
		a->port = rec->k.port;
		a->proto = rec->k.proto;
		a->count = rec->v.count;
		a->first_s = wall_of(rec->v.first_ns, now_ns, now_s);
		a->last_s = wall_of(rec->v.last_ns, now_ns, now_s);
	}
	for (size_t i = 0; i < nurecs; i++) {
		static const char *const resolvers[] = { "/var/run/nscd/socket", "/run/nscd/socket",
							 "/run/systemd/resolve/io.systemd.Resolve" };
		int resolver = 0;

		for (size_t k = 0; k < sizeof(resolvers) / sizeof(resolvers[0]); k++)
			resolver |= urecs[i].k.len == strlen(resolvers[k]) &&
				    !memcmp(urecs[i].k.path, resolvers[k], urecs[i].k.len);
		if (resolver) {
			/* A resolver socket answers any name, past the policy: never suggested;
			 * glibc falls back to DNS without it (README, UNIX sockets). */
			e = add_note(&b,
				     "-- %s (a name resolver outside the policy) was reached but "
				     "is not suggested: glibc falls back to DNS without it",
				     resolvers[0][0] ? (const char *)urecs[i].k.path : "");
			continue;
		}
		us[nus].k = urecs[i].k;
		us[nus].count = urecs[i].v.count;
		us[nus].first_s = wall_of(urecs[i].v.first_ns, now_ns, now_s);
		us[nus].last_s = wall_of(urecs[i].v.last_ns, now_ns, now_s);
		nus++;
	}
	for (size_t i = 0; i < box->obs.nuses && !e; i++) {
		const struct sb_obs_use *u = &box->obs.uses[i];
		struct sl_sg_name *n;

		e = grow((void **)&b.names, &b.names_cap, b.nnames, sizeof(*b.names), SIZE_MAX / 2);
		if (e)
			break;
		n = &b.names[b.nnames++];
		memset(n, 0, sizeof(*n));
		snprintf(n->name, sizeof(n->name), "%s", u->name);
		n->port = u->port;
		n->proto = u->proto;
		n->count = u->count;
		n->first_s = u->first_s;
		n->last_s = u->last_s;
		for (size_t k = 0; k < box->obs.nnames; k++)
			if (!strcmp(box->obs.names[k].name, u->name))
				b.used[k] = 1;
	}
	/* What the entries cannot say, as comments. */
	for (size_t i = 0; i < box->obs.nnames && !e; i++) {
		const struct sb_obs_name *n = &box->obs.names[i];

		if (n->nblocked) {
			char list[256] = "";
			size_t len = 0;

			for (size_t k = 0; k < n->naddr && len < sizeof(list) - 48; k++) {
				char a[INET6_ADDRSTRLEN];

				if (!n->a[k].blocked)
					continue;
				inet_ntop(n->a[k].family, n->a[k].addr, a, sizeof(a));
				len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
							len ? " " : "", a);
			}
			e = add_note(&b,
				     "-- %s resolved to addresses outside the public Internet that "
				     "egress.private does not allow (withheld from the sandbox: "
				     "add them to egress.private if they are meant): %s",
				     n->name, list);
		}
		if (!e && !n->granted && !b.used[i] && n->nblocked < n->naddr)
			e = add_note(&b,
				     "-- %s was resolved (%llu times) but never connected to: no "
				     "entry (add one with its port if the job needs it)",
				     n->name, (unsigned long long)n->count);
	}
	if (!e)
		e = http_notes(box, &b);
	if (!e && box->layer && box->layer->hlayer)
		/* Its egress, not the policy's, was the kernel layer: the learned entries go in
		 * the policy's egress, which that handler replaces while it is active. */
		e = add_note(&b,
			     "-- NOTE: handler %s was active, and its egress replaces the "
			     "policy's while it is: the entries above apply without it, or "
			     "once added to outboundHandlers.%s.egress",
			     box->layer->handler, box->layer->handler);
	if (!e && (ctr.lost || box->obs.names_lost || box->obs.http_lost))
		e = add_note(&b,
			     "-- NOT COMPLETE: %llu connections, %llu names and %llu requests "
			     "were not recorded (the records were full)",
			     (unsigned long long)ctr.lost, (unsigned long long)box->obs.names_lost,
			     (unsigned long long)box->obs.http_lost);
	if (e)
		goto nomem;
	in.sandbox = box->name;
	in.base_src = box->policy_src;
	in.base_path = box->policy_path;
	in.names = b.names;
	in.nnames = b.nnames;
	in.addrs = b.addrs;
	in.naddrs = b.naddrs;
	in.unix_socks = us;
	in.nunix = nus;
	in.notes = (const char *const *)b.notes;
	in.nnotes = b.nnotes;
	in.collapse = collapse;
	in.now_s = now_s;
	*out = sl_suggest_policy(&in);
	if (!*out)
		e = -errno;
nomem:
	if (e)
		sl_errf(err, errlen, "writing the suggestion failed: %s", strerror(-e));
out:
	for (size_t i = 0; i < b.nnotes; i++)
		free(b.notes[i]);
	free(b.notes);
	free(b.names);
	free(b.addrs);
	free(b.used);
	free(us);
	free(recs);
	free(urecs);
	return e;
}
