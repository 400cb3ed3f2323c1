// SPDX-License-Identifier: MIT
/*
 * Policies are Lua files returning a table (README.md, "A policy"; the shape of Cloudflare's
 * outbound Workers). lua/lua_policy.c reads a policy's egress section into the entries
 * parsed here; this module turns them into name grants and kernel rules. It is the one
 * place that knows the entry grammar, so the CLI's errors, the daemon's and the tests' agree.
 * It knows no Lua.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dns/dns_msg.h"
#include "core/log.h"
#include "policy/policy.h"

/* "443" or "1000-2000". */
static int parse_ports(const char *s, struct sl_entry *e)
{
	unsigned long lo, hi;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	lo = strtoul(s, &end, 10);
	hi = lo;
	if (*end == '-') {
		if (!isdigit((unsigned char)end[1]))
			return -EINVAL;
		hi = strtoul(end + 1, &end, 10);
	}
	/* port 0 is not a destination: "0" and "0-0" name nothing ("0-10" names 1-10) */
	if (*end || lo > 65535 || hi > 65535 || lo > hi || hi == 0)
		return -EINVAL;
	e->has_port = 1;
	e->port_lo = (uint16_t)lo;
	e->port_hi = (uint16_t)hi;
	return 0;
}

static int parse_plen(const char *s, int max)
{
	char *end;
	long v;

	if (!isdigit((unsigned char)*s))
		return -1;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > max)
		return -1;
	return (int)v;
}

/* An IP address with an optional /plen, in @s (modifiable). */
static int parse_addr(char *s, struct sl_entry *e)
{
	char *slash = strchr(s, '/');
	int plen = -1;

	if (slash)
		*slash = 0;
	memset(e->addr, 0, sizeof(e->addr));
	if (inet_pton(AF_INET, s, e->addr) == 1)
		e->family = AF_INET;
	else if (inet_pton(AF_INET6, s, e->addr) == 1)
		e->family = AF_INET6;
	else
		return -EINVAL;
	if (slash) {
		plen = parse_plen(slash + 1, e->family == AF_INET ? 32 : 128);
		if (plen < 0)
			return -ERANGE;
	}
	e->plen = plen >= 0 ? plen : e->family == AF_INET ? 32 : 128;
	e->kind = SL_ENTRY_ADDR;
	return 0;
}

/* RFC 1123 host name labels; '_' tolerated (it occurs in real service names). */
static int valid_host(const char *h)
{
	size_t len = strlen(h), label = 0;

	if (!len || len > 253)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = h[i];

		if (c == '.') {
			if (!label || h[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!(isalnum(c) || c == '-' || c == '_'))
			return 0;
		if (c == '-' && !label)
			return 0;
		if (++label > 63)
			return 0;
	}
	if (label == 0 || h[len - 1] == '-')
		return 0;
	/* An all-numeric last label is a mistyped address ("10.0.0.300"), not a name
	 * (RFC 3696 section 2: top-level domains are not all-numeric). */
	for (size_t i = len - label; i < len; i++)
		if (!isdigit((unsigned char)h[i]))
			return 1;
	return 0;
}

int sl_entry_parse(const char *s, struct sl_entry *e, char *err, size_t errlen)
{
	char buf[300], *host, *port = NULL;
	size_t len;

	memset(e, 0, sizeof(*e));
	e->protos = SL_PROTO_ANY;
	e->sni = -1;
	len = strlen(s);
	if (!len || len >= sizeof(buf)) {
		sl_errf(err, errlen, "empty or overlong entry");
		return -EINVAL;
	}
	memcpy(buf, s, len + 1);
	host = buf;

	if (buf[0] == '[') {
		/* [v6addr]:port, [v6addr/plen]:port or [v6addr]/plen:port */
		char *close = strchr(buf, ']'), *rest;

		if (!close) {
			sl_errf(err, errlen, "'%s': missing ']'", s);
			return -EINVAL;
		}
		*close = 0;
		host = buf + 1;
		rest = close + 1;
		if (*rest == '/') {
			char *colon = strchr(rest, ':');
			size_t hl = strlen(host);

			if (colon)
				*colon = 0;
			if (hl + strlen(rest) + 1 > sizeof(buf) - (host - buf)) {
				sl_errf(err, errlen, "'%s': overlong", s);
				return -EINVAL;
			}
			memmove(host + hl, rest, strlen(rest) + 1);
			port = colon ? colon + 1 : NULL;
		} else if (*rest == ':') {
			port = rest + 1;
		} else if (*rest) {
			sl_errf(err, errlen, "'%s': unexpected text after ']'", s);
			return -EINVAL;
		}
		if (parse_addr(host, e) || e->family != AF_INET6) {
			sl_errf(err, errlen, "'%s': not an IPv6 address or prefix", s);
			return -EINVAL;
		}
	} else if (strchr(buf, ':') && strchr(buf, ':') != strrchr(buf, ':')) {
		/* Bare IPv6 (two or more colons): no port possible without brackets. */
		int r = parse_addr(buf, e);

		if (r) {
			sl_errf(err, errlen,
				r == -ERANGE ?
					"'%s': prefix length out of range" :
					"'%s': not an IPv6 address (use [addr]:port for a port)",
				s);
			return -EINVAL;
		}
	} else {
		char *colon = strrchr(buf, ':');

		if (colon) {
			*colon = 0;
			port = colon + 1;
		}
		if (strchr(host, '/') ||
		    (isdigit((unsigned char)host[0]) && inet_pton(AF_INET, host, e->addr) == 1)) {
			int r = parse_addr(host, e);

			if (r || e->family != AF_INET) {
				sl_errf(err, errlen,
					r == -ERANGE ? "'%s': prefix length out of range" :
						       "'%s': not an IPv4 address or prefix",
					s);
				return -EINVAL;
			}
		} else {
			size_t hl;

			for (char *p = host; *p; p++)
				*p = (char)tolower((unsigned char)*p);
			hl = strlen(host);
			if (hl && host[hl - 1] == '.')
				host[--hl] = 0;
			e->kind = SL_ENTRY_HOST;
			if (!strncmp(host, "*.", 2)) {
				e->kind = SL_ENTRY_WILDCARD;
				host += 2;
			}
			if (!valid_host(host)) {
				sl_errf(err, errlen, "'%s': not an address, prefix or host name",
					s);
				return -EINVAL;
			}
			snprintf(e->host, sizeof(e->host), "%s", host);
		}
	}
	if (port && parse_ports(port, e)) {
		sl_errf(err, errlen, "'%s': bad port '%s' (1-65535, or a range lo-hi)", s, port);
		return -EINVAL;
	}
	if (e->kind == SL_ENTRY_ADDR) {
		uint8_t masked[16];

		memcpy(masked, e->addr, 16);
		sl_prefix_mask(masked, e->family == AF_INET ? 4 : 16, e->plen);
		if (memcmp(masked, e->addr, 16)) {
			char want[64];

			sl_prefix_str(e->family, masked, e->plen, want, sizeof(want));
			sl_errf(err, errlen, "'%s': host bits set in prefix (did you mean %s?)", s,
				want);
			return -EINVAL;
		}
	}
	return 0;
}

void sl_entry_str(const struct sl_entry *e, char *buf, size_t len)
{
	char a[SL_HOST_MAX + 2], p[16] = ""; /* "*." and a name of up to 253 */

	if (e->kind == SL_ENTRY_ADDR)
		sl_prefix_str(e->family, e->addr, e->plen, a, sizeof(a));
	else
		snprintf(a, sizeof(a), "%s%s", e->kind == SL_ENTRY_WILDCARD ? "*." : "", e->host);
	if (e->has_port && e->port_lo == e->port_hi)
		snprintf(p, sizeof(p), ":%u", e->port_lo);
	else if (e->has_port)
		snprintf(p, sizeof(p), ":%u-%u", e->port_lo, e->port_hi);
	if (e->has_port && e->kind == SL_ENTRY_ADDR && e->family == AF_INET6)
		snprintf(buf, len, "[%s]%s", a, p);
	else
		snprintf(buf, len, "%s%s", a, p);
}

int sl_unix_parse(const char *s, size_t len, struct sl_unix_key *k, char *err, size_t errlen)
{
	memset(k, 0, sizeof(*k));
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			sl_errf(err, errlen,
				"'%.*s': control characters or NUL in a UNIX socket "
				"address",
				(int)strnlen(s, len), s);
			return -EINVAL;
		}
	}
	if (len && s[0] == '@') {
		/* Abstract: sun_path[0] = 0, then the name (autobind names are abstract too, and
		 * are allowed only if listed like any other). */
		if (len < 2 || len > SL_UNIX_PATH_MAX) {
			sl_errf(err, errlen, "'%s': an abstract name is '@' and 1 to %d bytes", s,
				SL_UNIX_PATH_MAX - 1);
			return -EINVAL;
		}
		memcpy(k->path + 1, s + 1, len - 1);
		k->len = (__u32)len;
		return 0;
	}
	if (!len || s[0] != '/') {
		sl_errf(err, errlen,
			"'%s': a UNIX socket is an absolute path or '@' and an abstract "
			"name (relative paths are never allowed)",
			s);
		return -EINVAL;
	}
	if (len > SL_UNIX_PATH_MAX) {
		sl_errf(err, errlen, "'%.40s...': longer than a UNIX socket path can be (%d bytes)",
			s, SL_UNIX_PATH_MAX);
		return -EINVAL;
	}
	/* The kernel matches the exact string the sandbox passes: a path spelled another way
	 * would never match, so say so instead of accepting an entry that does nothing. */
	if (len == 1 || s[len - 1] == '/' || strstr(s, "//") || strstr(s, "/./") ||
	    strstr(s, "/../") || (len >= 2 && !strcmp(s + len - 2, "/.")) ||
	    (len >= 3 && !strcmp(s + len - 3, "/.."))) {
		sl_errf(err, errlen,
			"'%s': not a normalised path to a socket (no '//', '.', '..' or "
			"trailing '/')",
			s);
		return -EINVAL;
	}
	memcpy(k->path, s, len);
	k->len = (__u32)len;
	return 0;
}

static int index_names(const struct sl_entry_list *l, uint32_t **out, size_t *n)
{
	size_t k = 0;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < l->n; i++)
		k += l->v[i].kind == SL_ENTRY_HOST || l->v[i].kind == SL_ENTRY_WILDCARD;
	*out = malloc((k ? k : 1) * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].kind == SL_ENTRY_HOST || l->v[i].kind == SL_ENTRY_WILDCARD)
			(*out)[(*n)++] = (uint32_t)i;
	return 0;
}

/* FNV-1a of @len bytes of @s, lower-cased (names match without regard to case). */
static uint32_t name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)tolower((unsigned char)s[i])) * 16777619u;
	return h;
}

/* The length of @s as a name key: without a trailing dot. */
static size_t key_len(const char *s)
{
	size_t n = strlen(s);

	return n && s[n - 1] == '.' ? n - 1 : n;
}

static const struct sl_entry *entry_of(const struct sl_policy *p, uint32_t ent)
{
	return ent >> 31 ? &p->intercept.v[ent & 0x7fffffffu] : &p->allow.v[ent];
}

static void free_name_hash(struct sl_policy *p)
{
	free(p->name_head);
	free(p->name_next);
	free(p->name_ent);
	p->name_head = p->name_next = p->name_ent = NULL;
	p->name_nb = 0;
}

static int hash_names(struct sl_policy *p)
{
	size_t n = p->nallow_names + p->nintercept_names, k = 0;
	uint32_t nb = 16;

	while (nb < 2 * n && nb < (1u << 30))
		nb *= 2;
	p->name_head = malloc(nb * sizeof(*p->name_head));
	p->name_next = malloc((n ? n : 1) * sizeof(*p->name_next));
	p->name_ent = malloc((n ? n : 1) * sizeof(*p->name_ent));
	if (!p->name_head || !p->name_next || !p->name_ent || n >= 0x7fffffffu) {
		free_name_hash(p);
		return -ENOMEM;
	}
	p->name_nb = nb;
	memset(p->name_head, 0xff, nb * sizeof(*p->name_head));
	for (int list = 0; list < 2; list++) {
		size_t m = list ? p->nintercept_names : p->nallow_names;

		/* Backwards, each at its chain's head: a chain lists its entries in order. */
		for (size_t i = m; i-- > 0;) {
			uint32_t ent = list ? (1u << 31) | p->intercept_names[i] :
					      p->allow_names[i];
			const char *h = entry_of(p, ent)->host;
			uint32_t b = name_hash(h, key_len(h)) & (nb - 1);

			p->name_ent[k] = ent;
			p->name_next[k] = p->name_head[b];
			p->name_head[b] = (uint32_t)k++;
		}
	}
	return 0;
}

int sl_policy_index_names(struct sl_policy *p)
{
	free(p->allow_names);
	free(p->intercept_names);
	free_name_hash(p);
	if (index_names(&p->allow, &p->allow_names, &p->nallow_names) ||
	    index_names(&p->intercept, &p->intercept_names, &p->nintercept_names)) {
		free(p->allow_names);
		free(p->intercept_names);
		p->allow_names = p->intercept_names = NULL;
		return -ENOMEM;
	}
	return hash_names(p); /* failed: the positions answer */
}

#define NAME_CANDIDATES 64 /* entries of one name and its parents beyond this: the scan */

static int cmp_ent(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/*
 * The entries that may match @name, in the policy's order (allow's, then intercept's): those
 * keyed by the name itself or by one of its parents ("b.c" and "c" of "a.b.c"). Each still
 * has to match (name_matches()). -1: no hash, or more than @max.
 */
static int name_candidates(const struct sl_policy *p, const char *name, uint32_t *out, int max)
{
	size_t len = key_len(name);
	int n = 0;

	if (!p->name_head)
		return -1;
	for (size_t at = 0; at <= len; at++) {
		const char *key = name + at;
		size_t klen = len - at;

		if (at && name[at - 1] != '.')
			continue;
		for (uint32_t i = p->name_head[name_hash(key, klen) & (p->name_nb - 1)];
		     i != UINT32_MAX; i = p->name_next[i]) {
			const char *h = entry_of(p, p->name_ent[i])->host;

			if (key_len(h) != klen || strncasecmp(h, key, klen))
				continue;
			if (n == max)
				return -1;
			out[n++] = p->name_ent[i];
		}
	}
	if (n > 1)
		qsort(out, (size_t)n, sizeof(*out), cmp_ent);
	return n;
}

void sl_policy_free(struct sl_policy *p)
{
	if (!p)
		return;
	free(p->allow_names);
	free(p->intercept_names);
	free_name_hash(p);
	free(p->unix_socks.v);
	free(p->allow.v);
	free(p->intercept.v);
	free(p->private_ranges.v);
	free(p);
}

int sl_policy_rules(const struct sl_policy *p, struct sl_rule_set *rs, char *err, size_t errlen)
{
	char s[300];

	for (size_t i = 0; i < p->intercept.n; i++) {
		const struct sl_entry *e = &p->intercept.v[i];

		if (e->kind == SL_ENTRY_ADDR || e->protos != SL_PROTO_ANY) {
			sl_entry_str(e, s, sizeof(s));
			sl_errf(err, errlen,
				"egress.intercept[%zu] ('%s'): only host names are intercepted (TLS "
				"needs a name); allow addresses in egress.allow",
				i + 1, s);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < p->allow.n; i++) {
		const struct sl_entry *e = &p->allow.v[i];
		struct sl_addr_rule r = { 0 };

		if (e->kind != SL_ENTRY_ADDR)
			continue; /* names become rules when they resolve (sl_policy_name_grants) */
		r.family = e->family;
		r.plen = e->plen;
		memcpy(r.addr, e->addr, 16);
		r.port_lo = e->has_port ? e->port_lo : 0;
		r.port_hi = e->has_port ? e->port_hi : 65535;
		r.protos = e->protos;
		r.verdict = SL_VERDICT_ALLOW;
		if (sl_rule_set_add(rs, &r)) {
			sl_errf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

static int name_matches(const struct sl_entry *e, const char *name)
{
	if (e->kind == SL_ENTRY_HOST)
		return sl_dns_name_match(e->host, 0, name);
	if (e->kind == SL_ENTRY_WILDCARD)
		return sl_dns_name_match(e->host, 1, name);
	return 0;
}

/* The TLS port whose connections to an allowed name are checked by name unless the entry
 * says sni = false (README, "Passthrough checked by name"). */
#define SNI_PORT 443

/*
 * The grants of one egress.allow host entry, into @g (room for 3): its ports as ALLOW, less
 * its SNI-checked ports, which are SL_VERDICT_SNI (TCP) with .sni set. UDP on a checked port is not
 * granted at all: QUIC carries its server name encrypted, so it could not be checked.
 */
static size_t allow_grants(const struct sl_entry *e, struct sl_grant *g)
{
	uint16_t lo = e->has_port ? e->port_lo : 0, hi = e->has_port ? e->port_hi : 65535;
	uint16_t slo = lo, shi = hi;
	size_t n = 0;

	if (e->sni == 0 || (e->sni < 0 && (SNI_PORT < lo || SNI_PORT > hi)) ||
	    !(e->protos & SL_PROTO_TCP)) {
		g[0] = (struct sl_grant){ lo, hi, e->protos, SL_VERDICT_ALLOW, 0 };
		return 1;
	}
	if (e->sni < 0)
		slo = shi = SNI_PORT;
	if (slo > lo)
		g[n++] = (struct sl_grant){ lo, slo - 1, e->protos, SL_VERDICT_ALLOW, 0 };
	g[n++] = (struct sl_grant){ slo, shi, SL_PROTO_TCP, SL_VERDICT_SNI, 1 };
	if (shi < hi)
		g[n++] = (struct sl_grant){ shi + 1, hi, e->protos, SL_VERDICT_ALLOW, 0 };
	return n;
}

/* Adds to @g (@n used of @max) the grants of entry @e of allow (@intercept 0) or intercept.
 * Intercepted names: TCP only, 80 and 443 unless the entry names ports. */
static size_t entry_grants(const struct sl_entry *e, int intercept, struct sl_grant *g, size_t n,
			   size_t max)
{
	struct sl_grant eg[3];
	size_t k = 0, ne;

	if (!intercept) {
		ne = allow_grants(e, eg);
		while (k < ne && n < max)
			g[n++] = eg[k++];
		return n;
	}
	if (e->has_port) {
		g[n++] = (struct sl_grant){ e->port_lo, e->port_hi, SL_PROTO_TCP, SL_VERDICT_PROXY,
					    0 };
		return n;
	}
	g[n++] = (struct sl_grant){ 443, 443, SL_PROTO_TCP, SL_VERDICT_PROXY, 0 };
	if (n < max)
		g[n++] = (struct sl_grant){ 80, 80, SL_PROTO_TCP, SL_VERDICT_PROXY, 0 };
	return n;
}

size_t sl_policy_name_grants(const struct sl_policy *p, const char *name, struct sl_grant *g,
			     size_t max)
{
	uint32_t cand[NAME_CANDIDATES];
	int nc = name_candidates(p, name, cand, NAME_CANDIDATES);
	/* Else the name entries only, when the policy has their positions (it has once read). */
	size_t n = 0, na = p->allow_names ? p->nallow_names : p->allow.n,
	       ni = p->intercept_names ? p->nintercept_names : p->intercept.n;

	for (int i = 0; i < nc && n < max; i++) {
		const struct sl_entry *e = entry_of(p, cand[i]);

		if (name_matches(e, name))
			n = entry_grants(e, (int)(cand[i] >> 31), g, n, max);
	}
	if (nc >= 0)
		return n;
	for (size_t i = 0; i < na && n < max; i++) {
		const struct sl_entry *e = &p->allow.v[p->allow_names ? p->allow_names[i] : i];

		if (name_matches(e, name))
			n = entry_grants(e, 0, g, n, max);
	}
	for (size_t i = 0; i < ni && n < max; i++) {
		const struct sl_entry *e =
			&p->intercept.v[p->intercept_names ? p->intercept_names[i] : i];

		if (name_matches(e, name))
			n = entry_grants(e, 1, g, n, max);
	}
	return n;
}

int sl_policy_name_verdict(const struct sl_policy *p, const char *name)
{
	struct sl_grant g[16];
	size_t n = sl_policy_name_grants(p, name, g, 16);
	int v = SL_VERDICT_DENY;

	for (size_t i = 0; i < n; i++) {
		int gv = g[i].sni ? SL_VERDICT_ALLOW : g[i].verdict;

		if (gv > v)
			v = gv;
	}
	return v;
}

int sl_policy_name_port(const struct sl_policy *p, const char *name, uint16_t port)
{
	struct sl_grant g[16];
	size_t n = sl_policy_name_grants(p, name, g, 16);
	int v = SL_NAME_DENY;

	for (size_t i = 0; i < n; i++) {
		int gv;

		if (port < g[i].lo || port > g[i].hi || !(g[i].protos & SL_PROTO_TCP))
			continue;
		gv = g[i].sni			      ? SL_NAME_SNI :
		     g[i].verdict != SL_VERDICT_PROXY ? SL_NAME_PASS :
							SL_NAME_INTERCEPT;
		if (gv > v)
			v = gv;
	}
	return v;
}

int sl_policy_needs_proxy(const struct sl_policy *p)
{
	struct sl_grant g[3];

	if (!p)
		return 0;
	if (p->intercept.n)
		return 1;
	for (size_t i = 0; i < p->allow.n; i++) {
		const struct sl_entry *e = &p->allow.v[i];
		size_t n;

		if (e->kind == SL_ENTRY_ADDR)
			continue;
		n = allow_grants(e, g);
		for (size_t k = 0; k < n; k++)
			if (g[k].sni)
				return 1;
	}
	return 0;
}

int sl_policy_has_names(const struct sl_policy *p)
{
	for (size_t i = 0; i < p->allow.n; i++)
		if (p->allow.v[i].kind != SL_ENTRY_ADDR)
			return 1;
	return p->intercept.n > 0;
}

/* Ranges that are not the public Internet: loopback, private, shared, link-local (cloud
 * metadata lives at 169.254.169.254), documentation and benchmarking nets, multicast and
 * reserved (RFC 6890). A name that resolves into one of them may be a rebinding attack. */
int sl_policy_addr_permitted(const struct sl_policy *p, uint8_t family, const uint8_t *addr)
{
	if (sl_addr_is_public(family, addr))
		return 1;
	for (size_t i = 0; i < p->private_ranges.n; i++) {
		const struct sl_entry *e = &p->private_ranges.v[i];

		if (e->family == family &&
		    sl_addr_in_prefix(addr, e->addr, family == AF_INET ? 4 : 16, e->plen))
			return 1;
	}
	return 0;
}
