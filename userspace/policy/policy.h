/* SPDX-License-Identifier: MIT */
/* A sandbox's policy as data: its egress entries, their grammar, the grants and kernel rules
 * made of them (see policy.c). No Lua: lua/lua_policy.h reads a policy file into this.
 * Threading: plain data, owned by whoever read it; nothing here blocks or keeps state, and
 * a policy no longer written may be read from any thread. */
#ifndef SL_POLICY_H
#define SL_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "core/addr.h" /* sl_addr_is_public, sl_unix_str: moved there */
#include "kernel/rules.h"

#define SL_HOST_MAX 254

enum sl_entry_kind {
	SL_ENTRY_ADDR, /* address or CIDR */
	SL_ENTRY_HOST, /* exact host name */
	SL_ENTRY_WILDCARD, /* *.suffix: any name below suffix, not suffix itself */
};

/* One egress entry as written in the policy, parsed. */
struct sl_entry {
	enum sl_entry_kind kind;
	uint8_t family; /* SL_ENTRY_ADDR */
	uint8_t plen; /* SL_ENTRY_ADDR */
	uint8_t addr[16]; /* SL_ENTRY_ADDR, network order */
	char host[SL_HOST_MAX]; /* HOST: the name; WILDCARD: the suffix; lower case, no dot */
	int has_port;
	uint16_t port_lo, port_hi;
	uint8_t protos; /* SL_PROTO_* */
	int8_t sni; /* egress.allow host names: 1 sni = true, 0 sni = false, -1 unsaid (443) */
};

struct sl_entry_list {
	struct sl_entry *v;
	size_t n;
};

/* egress.unix: UNIX socket addresses, as the kernel's sl_unix keys (sandbox_id unused). */
struct sl_unix_list {
	struct sl_unix_key *v;
	size_t n;
};

struct sl_policy {
	struct sl_entry_list allow; /* egress.allow */
	struct sl_entry_list intercept; /* egress.intercept */
	struct sl_entry_list private_ranges; /* egress.private: addresses only */
	struct sl_unix_list unix_socks; /* egress.unix ("unix" is a macro in GNU C) */
	/* The positions of allow's and intercept's host and wildcard entries, in order
	 * (sl_policy_index_names()): a name's grants look at these, not at every address entry
	 * of a 100,000-entry policy. NULL: not made, every entry is looked at. */
	uint32_t *allow_names, *intercept_names;
	size_t nallow_names, nintercept_names;
	/* Those entries hashed by their name (a wildcard's by its suffix): a name's candidates
	 * are the entries of the name and of each of its parents, not all of them (50,000 names:
	 * 6 ms a query). name_head: name_nb chains (a power of two), name_next and name_ent
	 * ((list << 31) | position, list 1: intercept) per entry. NULL: not made. */
	uint32_t *name_head, *name_next, *name_ent;
	uint32_t name_nb;
};

/* Makes @p's name positions (above), once its entries are read. 0 or -ENOMEM (then none:
 * lookups look at every entry). */
int sl_policy_index_names(struct sl_policy *p);

/*
 * Parses one egress.unix entry of @len bytes: an absolute filesystem path ("/run/x.sock",
 * normalised: no "//", "/./", "/../", trailing "/") or an abstract name ("@name"). At most
 * SL_UNIX_PATH_MAX bytes as the kernel stores them, no NUL or control characters. Returns 0,
 * or -EINVAL with a reason in @err.
 */
int sl_unix_parse(const char *s, size_t len, struct sl_unix_key *k, char *err, size_t errlen);

/*
 * Parses one entry string ("10.0.0.0/8:1000-2000", "[::1]:443", "api.github.com",
 * "*.npmjs.org:443"). Returns 0, or -EINVAL with a reason in @err.
 */
int sl_entry_parse(const char *s, struct sl_entry *e, char *err, size_t errlen);

/* Frees @p and its entry lists; accepts NULL. */
void sl_policy_free(struct sl_policy *p);

/*
 * Adds the kernel rules of the policy's address entries to @rs: egress.allow addresses get
 * ALLOW on their ports (all ports if none given). Host names become rules only when they
 * resolve (see sl_policy_name_grants()). egress.intercept takes host names only (TLS needs a
 * name): an address there is refused with a clear message. Returns 0 or -EINVAL/-ENOMEM with
 * the reason in @err.
 */
int sl_policy_rules(const struct sl_policy *p, struct sl_rule_set *rs, char *err, size_t errlen);

/* What the policy grants one resolved name: a port range, protocols and a verdict. */
struct sl_grant {
	uint16_t lo, hi;
	uint8_t protos;
	uint8_t verdict;
	uint8_t sni; /* SL_VERDICT_SNI: a passthrough checked by name in the kernel */
};

/* The grants of every host entry matching @name (exact or *.suffix, see
 * sl_dns_name_match()), at most @max: egress.allow entries give ALLOW on their ports (any
 * port by default), except on their SNI-checked ports (443 unless the entry says
 * sni = true|false), which get SL_VERDICT_SNI with .sni set on TCP and nothing on UDP (no QUIC: its
 * server name cannot be checked); egress.intercept entries PROXY on TCP 443 and 80 (or
 * their ports). Returns how many: 0 means the name is denied. */
size_t sl_policy_name_grants(const struct sl_policy *p, const char *name, struct sl_grant *g,
			     size_t max);
/* The strongest verdict the policy gives @name: SL_VERDICT_PROXY (intercepted on some
 * port), _ALLOW (passed through, SNI-checked or not) or _DENY. */
int sl_policy_name_verdict(const struct sl_policy *p, const char *name);

/* What the policy does with a TCP connection to @name on @port, strongest first. */
#define SL_NAME_DENY 0
#define SL_NAME_PASS 1 /* passed through: an address grant (sni = false) */
#define SL_NAME_SNI 2 /* passed through once its TLS server name is checked */
#define SL_NAME_INTERCEPT 3 /* TLS terminated, every request judged */
int sl_policy_name_port(const struct sl_policy *p, const char *name, uint16_t port);
/* Whether any connection of the policy goes to the proxy: an intercepted name, or an
 * SNI-checked passthrough one (the kernel's sockops program is needed then). */
int sl_policy_needs_proxy(const struct sl_policy *p);
/* Whether the policy names any host at all. */
int sl_policy_has_names(const struct sl_policy *p);

/* Whether a resolved name may point at @addr: public, or inside an egress.private range. */
int sl_policy_addr_permitted(const struct sl_policy *p, uint8_t family, const uint8_t *addr);

/* Formats an entry back into its policy syntax. */
void sl_entry_str(const struct sl_entry *e, char *buf, size_t len);

#endif
