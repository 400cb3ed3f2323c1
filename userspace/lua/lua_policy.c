// SPDX-License-Identifier: MIT
/*
 * The reader of a policy table: the egress section of a policy (or of an outboundHandlers
 * entry), read from a Lua state into a struct sl_policy, the data policy.c holds. The policy
 * grammar (entries, grants, rules) knows no Lua; this is the one place that reads a policy
 * through the Lua API. sl_policy_load() runs a policy file in a fresh restricted state
 * (lua_vm.c) and reads it: a policy that loops or allocates without bound is stopped
 * (instruction and memory caps) instead of hanging or exhausting the daemon.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/log.h"
#include "lua/lua_policy.h"
#include "lua/lua_vm.h"
#include "policy/policy.h"

static int check_keys(lua_State *L, int idx, const char *where, const char *const *known, char *err,
		      size_t errlen)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k;
		int ok = 0;

		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING) {
			sl_errf(err, errlen, "%s: keys must be names", where);
			lua_pop(L, 1);
			return -EINVAL;
		}
		k = lua_tostring(L, -1);
		for (const char *const *p = known; *p; p++)
			ok |= !strcmp(k, *p);
		if (!ok) {
			sl_errf(err, errlen, "%s: unknown key '%s'", where, k);
			lua_pop(L, 1);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * The length of the list at the top of the stack (not nil) into *@n: a table whose keys are
 * the indices 1..#t only. -EINVAL otherwise, with the reason in @err (@holds says what the
 * list holds: "entries").
 */
static int list_len(lua_State *L, const char *where, const char *holds, lua_Integer *n, char *err,
		    size_t errlen)
{
	if (!lua_istable(L, -1)) {
		sl_errf(err, errlen, "%s must be a list of %s", where, holds);
		return -EINVAL;
	}
	*n = luaL_len(L, -1);
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		int bad = !lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
			  lua_tointeger(L, -2) > *n;

		lua_pop(L, 1);
		if (bad) {
			lua_pop(L, 1);
			sl_errf(err, errlen, "%s must be a list (found a non-index key)", where);
			return -EINVAL;
		}
	}
	return 0;
}

/* Reads the sequence at the top of the stack into @list. */
static int read_entries(lua_State *L, const char *where, struct sl_entry_list *list, char *err,
			size_t errlen)
{
	static const char *const entry_keys[] = { "proto", "sni", NULL };
	char what[64];
	lua_Integer n;

	if (lua_isnil(L, -1))
		return 0;
	if (list_len(L, where, "entries", &n, err, errlen))
		return -EINVAL;
	if (n > 100000) {
		sl_errf(err, errlen, "%s: too many entries", where);
		return -EINVAL;
	}
	list->v = calloc(n ? n : 1, sizeof(*list->v));
	if (!list->v) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (lua_Integer i = 1; i <= n; i++) {
		struct sl_entry *e = &list->v[list->n];
		const char *s = NULL, *proto = NULL;
		int sni = -1;
		char why[256];

		snprintf(what, sizeof(what), "%s[%lld]", where, (long long)i);
		lua_geti(L, -1, i);
		if (lua_type(L, -1) == LUA_TSTRING) {
			s = lua_tostring(L, -1);
		} else if (lua_istable(L, -1)) {
			/* { "10.0.0.53:53", proto = "udp" } */
			lua_geti(L, -1, 1);
			s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
			lua_pop(L, 1);
			lua_getfield(L, -1, "proto");
			if (!lua_isnil(L, -1))
				proto = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
			lua_pop(L, 1);
			lua_getfield(L, -1, "sni");
			if (!lua_isnil(L, -1))
				sni = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : 2;
			lua_pop(L, 1);
			if (luaL_len(L, -1) != 1) {
				sl_errf(err, errlen, "%s: a table entry holds exactly one string",
					what);
				lua_pop(L, 1);
				return -EINVAL;
			}
			lua_pushnil(L);
			lua_rawseti(L, -2, 1); /* hide [1] from the key check */
			if (check_keys(L, -1, what, entry_keys, err, errlen)) {
				lua_pop(L, 1);
				return -EINVAL;
			}
		}
		if (!s) {
			sl_errf(err, errlen, "%s: an entry is a string like \"10.0.0.0/8:443\"",
				what);
			lua_pop(L, 1);
			return -EINVAL;
		}
		if (sl_entry_parse(s, e, why, sizeof(why))) {
			sl_errf(err, errlen, "%s: %s", what, why);
			lua_pop(L, 1);
			return -EINVAL;
		}
		if (proto) {
			if (!strcmp(proto, "tcp"))
				e->protos = SL_PROTO_TCP;
			else if (!strcmp(proto, "udp"))
				e->protos = SL_PROTO_UDP;
			else {
				sl_errf(err, errlen, "%s: proto must be \"tcp\" or \"udp\"", what);
				lua_pop(L, 1);
				return -EINVAL;
			}
		}
		if (sni == 2 || (sni >= 0 && e->kind == SL_ENTRY_ADDR) ||
		    (sni == 1 && e->protos == SL_PROTO_UDP)) {
			sl_errf(err, errlen,
				sni == 2 ?
					"%s: sni must be true or false" :
				e->kind == SL_ENTRY_ADDR ?
					"%s: sni applies to host names (an address or prefix is "
					"always an address grant)" :
					"%s: sni = true needs TCP (TLS); not with proto = \"udp\"",
				what);
			lua_pop(L, 1);
			return -EINVAL;
		}
		e->sni = (int8_t)sni;
		lua_pop(L, 1);
		list->n++;
	}
	return 0;
}

/* Reads egress.unix, the sequence of strings at the top of the stack, into @list (each
 * address once). */
static int read_unix(lua_State *L, const char *where, struct sl_unix_list *list, char *err,
		     size_t errlen)
{
	lua_Integer n;

	if (lua_isnil(L, -1))
		return 0;
	if (list_len(L, where, "socket paths and @abstract names", &n, err, errlen))
		return -EINVAL;
	if (n > SL_MAX_UNIX_PER_LAYER) {
		sl_errf(err, errlen, "%s: too many entries (max %d)", where, SL_MAX_UNIX_PER_LAYER);
		return -EINVAL;
	}
	list->v = calloc(n ? n : 1, sizeof(*list->v));
	if (!list->v) {
		sl_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (lua_Integer i = 1; i <= n; i++) {
		struct sl_unix_key *k = &list->v[list->n];
		const char *s;
		char why[256];
		size_t len;
		int dup = 0;

		lua_geti(L, -1, i);
		if (lua_type(L, -1) != LUA_TSTRING) {
			sl_errf(err, errlen,
				"%s[%lld]: an entry is a string like \"/run/x.sock\" or "
				"\"@name\"",
				where, (long long)i);
			lua_pop(L, 1);
			return -EINVAL;
		}
		s = lua_tolstring(L, -1, &len);
		if (sl_unix_parse(s, len, k, why, sizeof(why))) {
			sl_errf(err, errlen, "%s[%lld]: %s", where, (long long)i, why);
			lua_pop(L, 1);
			return -EINVAL;
		}
		lua_pop(L, 1);
		for (size_t j = 0; j < list->n && !dup; j++)
			dup = list->v[j].len == k->len && !memcmp(list->v[j].path, k->path, k->len);
		if (!dup)
			list->n++;
	}
	return 0;
}

static int read_egress(lua_State *L, struct sl_policy *p, const char *where, char *err,
		       size_t errlen)
{
	static const char *const egress_keys[] = { "allow", "intercept", "private", "unix", NULL };
	const struct {
		const char *key;
		struct sl_entry_list *list;
	} lists[] = { { "allow", &p->allow },
		      { "intercept", &p->intercept },
		      { "private", &p->private_ranges } };
	char what[96];
	int err_;

	if (lua_isnil(L, -1))
		return 0; /* nothing named: everything denied */
	if (!lua_istable(L, -1)) {
		sl_errf(err, errlen, "%s must be a table", where);
		return -EINVAL;
	}
	if (check_keys(L, -1, where, egress_keys, err, errlen))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		snprintf(what, sizeof(what), "%s.%s", where, lists[i].key);
		lua_getfield(L, -1, lists[i].key);
		err_ = read_entries(L, what, lists[i].list, err, errlen);
		lua_pop(L, 1);
		if (err_)
			return err_;
	}
	snprintf(what, sizeof(what), "%s.unix", where);
	lua_getfield(L, -1, "unix");
	err_ = read_unix(L, what, &p->unix_socks, err, errlen);
	lua_pop(L, 1);
	if (err_)
		return err_;
	for (size_t i = 0; i < p->private_ranges.n; i++) {
		if (p->private_ranges.v[i].kind != SL_ENTRY_ADDR ||
		    p->private_ranges.v[i].has_port) {
			sl_errf(err, errlen,
				"%s.private[%zu]: must be an address or prefix "
				"without port",
				where, i + 1);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < p->intercept.n; i++) {
		if (p->intercept.v[i].sni >= 0) {
			sl_errf(err, errlen,
				"%s.intercept[%zu]: sni is an egress.allow setting "
				"(intercepted names are always judged by name)",
				where, i + 1);
			return -EINVAL;
		}
	}
	return 0;
}

static int read_policy(lua_State *L, struct sl_policy *p, char *err, size_t errlen)
{
	static const char *const top_keys[] = { "egress",	    "outbound",
						"outboundByHost",   "outboundHandlers",
						"cleartextSecrets", NULL };
	int r;

	if (!lua_istable(L, -1)) {
		sl_errf(err, errlen, "a policy must return a table (got %s)", luaL_typename(L, -1));
		return -EINVAL;
	}
	if (check_keys(L, -1, "policy", top_keys, err, errlen))
		return -EINVAL;
	lua_getfield(L, -1, "egress");
	r = read_egress(L, p, "egress", err, errlen);
	lua_pop(L, 1);
	return r;
}

/* What read_guarded() runs, and what it returns. */
struct read_args {
	struct sl_policy *p;
	const char *where; /* an egress table named so; NULL: a whole policy */
	char *err;
	size_t errlen;
	int ret;
};

static int read_protected(lua_State *L)
{
	struct read_args *a = lua_touserdata(L, 1);

	a->ret = a->where ? read_egress(L, a->p, a->where, a->err, a->errlen) :
			    read_policy(L, a->p, a->err, a->errlen);
	return 0;
}

/*
 * Runs @a's read of the value at the top of @L's stack in protected mode, and leaves the stack
 * as it was. The policy's tables are read through the Lua API, so their metamethods (__index,
 * __len) run policy code that may raise, and any allocation past the memory cap raises too:
 * unprotected, such an error is a Lua panic, which aborts the daemon. Entries read before the
 * error stay in @a->p (its owner frees them). The error object is not converted to a string
 * here: that could allocate, and raise, again.
 */
static int read_guarded(lua_State *L, struct read_args *a)
{
	const char *msg, *nl;

	if (!lua_checkstack(L, 3)) {
		sl_errf(a->err, a->errlen, "out of memory");
		return -ENOMEM;
	}
	lua_pushcfunction(L, read_protected);
	lua_pushlightuserdata(L, a);
	lua_pushvalue(L, -3);
	if (lua_pcall(L, 2, 0, 0) == LUA_OK) {
		/* Read whole: the positions of its names (a failure only costs lookups time). */
		if (!a->ret)
			sl_policy_index_names(a->p);
		return a->ret;
	}
	msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) :
					       "reading the policy raised a non-string error";
	nl = strchr(msg, '\n');
	sl_errf(a->err, a->errlen, "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
	lua_pop(L, 1);
	return -EINVAL;
}

int sl_policy_read_egress(lua_State *L, struct sl_policy *p, const char *where, char *err,
			  size_t errlen)
{
	struct read_args a = { p, where, err, errlen, 0 };

	return read_guarded(L, &a);
}

int sl_policy_read(lua_State *L, struct sl_policy *p, char *err, size_t errlen)
{
	struct read_args a = { p, NULL, err, errlen, 0 };

	return read_guarded(L, &a);
}

struct sl_policy *sl_policy_run(lua_State *L, const char *chunkname, const char *src, size_t len,
				char *err, size_t errlen)
{
	struct sl_policy *p;
	char name[256];
	int r;

	lua_pushcfunction(L, sl_lua_traceback);
	snprintf(name, sizeof(name), "@%s", chunkname);
	r = luaL_loadbufferx(L, src, len, name, "t");
	if (r == LUA_OK)
		r = lua_pcall(L, 0, 1, 1);
	if (r != LUA_OK) {
		sl_lua_first_line(L, err, errlen);
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		sl_errf(err, errlen, "out of memory");
		return NULL;
	}
	if (sl_policy_read(L, p, err, errlen)) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s: %s", chunkname, err);
		sl_errf(err, errlen, "%s", msg);
		sl_policy_free(p);
		return NULL;
	}
	return p;
}

struct sl_policy *sl_policy_load(const char *chunkname, const char *src, size_t len, char *err,
				 size_t errlen)
{
	struct sl_lua_limits lim = { .mem_max = SL_LUA_MEM_MAX, .insn_max = 10000000L };
	struct sl_policy *p;
	lua_State *L;

	L = sl_lua_state_new(&lim);
	if (!L) {
		sl_errf(err, errlen, "out of memory");
		return NULL;
	}
	p = sl_policy_run(L, chunkname, src, len, err, errlen);
	lua_close(L);
	return p;
}
