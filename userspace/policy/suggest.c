// SPDX-License-Identifier: MIT
/*
 * `sluice policy suggest`: the policy a sandbox's audit-mode records call for, in sluice's own
 * format. Host names are written with the ports and protocols they were used on, never their
 * addresses; addresses only where no name explains them; siblings collapse to `*.parent`
 * only past a threshold and never onto a registrable domain or a public suffix (libpsl). The
 * policy in force is kept whole, as the body of a function whose table the learned entries
 * are added to, so its handlers, env and KV references come along unchanged, however it is
 * written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpsl.h>

#include "policy/suggest.h"

static const psl_ctx_t *psl;
static pthread_once_t psl_once = PTHREAD_ONCE_INIT;

/* The system's list (Debian's publicsuffix package) when it is there, else the one built
 * into libpsl. */
static void psl_load(void)
{
	psl = psl_latest(NULL);
	if (!psl)
		psl = psl_builtin();
}

int sl_suggest_wildcard_ok(const char *parent)
{
	const char *reg;
	size_t lp, lr;

	pthread_once(&psl_once, psl_load);
	if (!parent || !*parent || !strchr(parent, '.'))
		return 0;
	if (!psl)
		return 0; /* no list: never collapse */
	reg = psl_registrable_domain(psl, parent);
	if (!reg)
		return 0; /* parent is a public suffix (or above one) */
	lp = strlen(parent);
	lr = strlen(reg);
	/* Strictly below: parent = "<labels>." + reg. */
	return lp > lr + 1 && parent[lp - lr - 1] == '.' && !strcmp(parent + lp - lr, reg);
}

struct out {
	char *p;
	size_t n, cap;
	int err;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->p ? o->p + o->n : NULL, o->p ? o->cap - o->n : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = EINVAL;
			return;
		}
		if (o->p && o->n + (size_t)n < o->cap) {
			o->n += (size_t)n;
			return;
		}
		{
			size_t c = o->cap ? o->cap * 2 : 4096;
			char *q;

			while (c < o->n + (size_t)n + 1)
				c *= 2;
			q = realloc(o->p, c);
			if (!q) {
				o->err = ENOMEM;
				return;
			}
			o->p = q;
			o->cap = c;
		}
	}
}

static void fmt_time(int64_t s, char *buf, size_t len)
{
	time_t t = (time_t)s;
	struct tm tm;

	if (!s || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "?");
}

static const char *proto_str(uint8_t p)
{
	return p == IPPROTO_UDP ? "udp" : "tcp";
}

/* "-- tcp; 12 connections, first ..., last ..." */
static void put_seen(struct out *o, uint8_t proto, uint64_t count, int64_t first, int64_t last,
		     const char *extra)
{
	char a[32], b[32];

	fmt_time(first, a, sizeof(a));
	fmt_time(last, b, sizeof(b));
	put(o, "      -- %s%s%llu %s, first %s, last %s%s\n", proto ? proto_str(proto) : "",
	    proto ? "; " : "", (unsigned long long)count, count == 1 ? "call" : "calls", a, b,
	    extra ? extra : "");
}

static int cmp_name(const void *x, const void *y)
{
	const struct sl_sg_name *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	if (c)
		return c;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	return (int)a->proto - (int)b->proto;
}

/* The parent of @name (after its first label), or NULL for a single label. */
static const char *parent_of(const char *name)
{
	const char *d = strchr(name, '.');

	return d && d[1] ? d + 1 : NULL;
}

/* Sort key for grouping siblings: (port, proto, parent, name). */
static int cmp_sibling(const void *x, const void *y)
{
	const struct sl_sg_name *a = x, *b = y;
	const char *pa = parent_of(a->name), *pb = parent_of(b->name);
	int c;

	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	if (a->proto != b->proto)
		return (int)a->proto - (int)b->proto;
	c = strcmp(pa ? pa : "", pb ? pb : "");
	return c ? c : strcmp(a->name, b->name);
}

/* Merges duplicates of the sorted @v in place; returns the new count. */
static size_t merge_names(struct sl_sg_name *v, size_t n)
{
	size_t w = 0;

	for (size_t i = 0; i < n; i++) {
		if (w && !cmp_name(&v[w - 1], &v[i])) {
			struct sl_sg_name *m = &v[w - 1];

			m->count += v[i].count;
			if (v[i].first_s && (!m->first_s || v[i].first_s < m->first_s))
				m->first_s = v[i].first_s;
			if (v[i].last_s > m->last_s)
				m->last_s = v[i].last_s;
			continue;
		}
		v[w++] = v[i];
	}
	return w;
}

static void put_names(struct out *o, struct sl_sg_name *v, size_t n, unsigned collapse)
{
	qsort(v, n, sizeof(*v), cmp_sibling);
	for (size_t i = 0; i < n;) {
		const char *parent = parent_of(v[i].name);
		size_t j = i + 1;

		while (j < n && v[j].port == v[i].port && v[j].proto == v[i].proto && parent &&
		       parent_of(v[j].name) && !strcmp(parent_of(v[j].name), parent))
			j++;
		if (collapse && parent && j - i > collapse && sl_suggest_wildcard_ok(parent)) {
			uint64_t count = 0;
			int64_t first = 0, last = 0;
			char extra[160];

			for (size_t k = i; k < j; k++) {
				count += v[k].count;
				if (v[k].first_s && (!first || v[k].first_s < first))
					first = v[k].first_s;
				if (v[k].last_s > last)
					last = v[k].last_s;
			}
			put(o, "    { \"*.%s:%u\", proto = \"%s\" },\n", parent, v[i].port,
			    proto_str(v[i].proto));
			snprintf(extra, sizeof(extra), "; %zu names, e.g. %s", j - i, v[i].name);
			put_seen(o, 0, count, first, last, extra);
			i = j;
			continue;
		}
		for (; i < j; i++) {
			put(o, "    { \"%s:%u\", proto = \"%s\" },\n", v[i].name, v[i].port,
			    proto_str(v[i].proto));
			put_seen(o, 0, v[i].count, v[i].first_s, v[i].last_s, NULL);
		}
	}
}

static void put_addrs(struct out *o, const struct sl_sg_addr *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char a[INET6_ADDRSTRLEN];

		inet_ntop(v[i].family, v[i].addr, a, sizeof(a));
		if (v[i].family == AF_INET6)
			put(o, "    { \"[%s]:%u\", proto = \"%s\" },\n", a, v[i].port,
			    proto_str(v[i].proto));
		else
			put(o, "    { \"%s:%u\", proto = \"%s\" },\n", a, v[i].port,
			    proto_str(v[i].proto));
		put_seen(o, 0, v[i].count, v[i].first_s, v[i].last_s, "; no name seen for it");
	}
}

/* A Lua string literal of @s (@len bytes). */
static void put_lua_str(struct out *o, const uint8_t *s, size_t len)
{
	put(o, "\"");
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			put(o, "\\%c", s[i]);
		else if (s[i] < 0x20 || s[i] >= 0x7f)
			put(o, "\\%u", s[i]);
		else
			put(o, "%c", s[i]);
	}
	put(o, "\"");
}

static void put_unix(struct out *o, const struct sl_sg_unix *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t len = v[i].k.len > SL_UNIX_PATH_MAX ? SL_UNIX_PATH_MAX : v[i].k.len;

		put(o, "    ");
		if (len && !v[i].k.path[0]) {
			uint8_t at[SL_UNIX_PATH_MAX];

			/* Abstract: "@name", as egress.unix writes it. */
			at[0] = '@';
			memcpy(at + 1, v[i].k.path + 1, len - 1);
			put_lua_str(o, at, len);
		} else {
			put_lua_str(o, v[i].k.path, len);
		}
		put(o, ",\n");
		put_seen(o, 0, v[i].count, v[i].first_s, v[i].last_s, NULL);
	}
}

char *sl_suggest_policy(struct sl_suggest_in *in)
{
	struct out o = { 0 };
	int base = in->base_src && *in->base_src;
	char now[32];
	size_t nn;

	qsort(in->names, in->nnames, sizeof(*in->names), cmp_name);
	nn = merge_names(in->names, in->nnames);
	fmt_time(in->now_s, now, sizeof(now));
	put(&o,
	    "-- Suggested by `sluice policy suggest` for sandbox %s at %s, from what it did\n"
	    "-- in audit mode beyond its policy. Check it: `sluice policy check FILE --verbose`.\n",
	    in->sandbox, now);
	if (!nn && !in->naddrs && !in->nunix)
		put(&o, "-- Nothing was observed beyond the policy: it is the policy unchanged.\n");
	put(&o, "local learned = {\n  allow = {\n");
	put_names(&o, in->names, nn, in->collapse);
	put_addrs(&o, in->addrs, in->naddrs);
	put(&o, "  },\n");
	if (in->nunix) {
		put(&o, "  unix = {\n");
		put_unix(&o, in->unix_socks, in->nunix);
		put(&o, "  },\n");
	}
	put(&o, "}\n\n");
	if (base) {
		size_t bl = strlen(in->base_src);

		if (in->base_path && *in->base_path)
			put(&o, "-- The policy in force (%s), unchanged:", in->base_path);
		else
			put(&o, "-- The policy in force, unchanged:");
		put(&o, " its handlers, env and KV references are kept.\n"
			"local policy = (function(...)\n");
		put(&o, "%s%s", in->base_src, bl && in->base_src[bl - 1] == '\n' ? "" : "\n");
		put(&o, "end)(...)\n\n");
	} else {
		put(&o, "local policy = { egress = {} }\n\n");
	}
	put(&o, "-- The learned entries, beside the policy's own.\n"
		"policy.egress = policy.egress or {}\n"
		"for _, key in ipairs({ \"allow\", \"unix\" }) do\n"
		"  if learned[key] and #learned[key] > 0 then\n"
		"    local t = {}\n"
		"    for _, e in ipairs(policy.egress[key] or {}) do t[#t + 1] = e end\n"
		"    for _, e in ipairs(learned[key]) do t[#t + 1] = e end\n"
		"    policy.egress[key] = t\n"
		"  end\n"
		"end\n");
	for (size_t i = 0; i < in->nnotes; i++)
		put(&o, "%s%s\n", i ? "" : "\n", in->notes[i]);
	put(&o, "return policy\n");
	if (o.err) {
		free(o.p);
		errno = o.err;
		return NULL;
	}
	return o.p;
}
