// SPDX-License-Identifier: MIT
/*
 * The restricted Lua state every policy runs in: base, table, string, math, utf8 and
 * coroutine only (no io, os, package or debug), text chunks only (no bytecode), an allocator
 * that caps memory and counts what is allocated, an instruction budget, and string patterns
 * refused when their worst case is out of the budget's sight.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "core/log.h"
#include "lua/lua_vm.h"

#define INSN_STEP 1000

/* ---- the restricted state ---- */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct sl_lua_limits *lim = ud;

	if (!ptr)
		osize = 0;
	if (nsize == 0) {
		lim->mem -= osize;
		free(ptr);
		return NULL;
	}
	if (nsize > osize && (lim->mem + (nsize - osize) > lim->mem_max ||
			      lim->churn + (nsize - osize) > lim->churn_stop))
		return NULL;
	ptr = realloc(ptr, nsize);
	if (ptr) {
		lim->mem += nsize - osize;
		if (nsize > osize)
			lim->churn += nsize - osize;
	}
	return ptr;
}

/*
 * The instruction budget. Past it, the hook fires on every instruction and raises each time:
 * a pcall that catches the first error cannot buy more time, because the very next
 * instruction raises again.
 */
static void count_hook(lua_State *L, lua_Debug *ar)
{
	struct sl_lua_run *run = sl_lua_run_of(L);
	struct sl_lua_limits *lim;

	(void)ar;
	if (run) {
		run->insns += INSN_STEP;
		if (run->insns > run->insn_max) {
			run->out_of_insns = 1;
			lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
			luaL_error(L, "the handler ran out of its instruction budget (%I)",
				   (lua_Integer)run->insn_max);
		}
		return;
	}
	lua_getallocf(L, (void **)&lim);
	lim->insns += INSN_STEP;
	if (lim->insns > lim->insn_max) {
		lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
		luaL_error(L, "policy runs too long (instruction limit reached)");
	}
}

void sl_lua_budget_reset(lua_State *L, struct sl_lua_limits *lim, int bounded)
{
	lim->insns = 0;
	lim->churn_stop = bounded ? lim->churn + (size_t)lim->insn_max * SL_LUA_CHURN_PER_INSN :
				    SIZE_MAX;
	lua_sethook(L, count_hook, LUA_MASKCOUNT, INSN_STEP);
}

int sl_lua_traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}

void sl_lua_first_line(lua_State *L, char *err, size_t errlen)
{
	const char *msg = lua_tostring(L, -1);
	const char *nl = msg ? strchr(msg, '\n') : NULL;

	/* The first line says what and where; a traceback goes to the log only. */
	sl_errf(err, errlen, "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg ? msg : ""),
		msg ? msg : "error (not a string)");
}

/* load() restricted to text chunks: precompiled bytecode is unverified and can corrupt the
 * interpreter (the Lua manual, section 4.6, "load"). */
static int safe_load(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, s);

	if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	if (!lua_isnone(L, 4)) {
		lua_pushvalue(L, 4);
		if (!lua_setupvalue(L, -2, 1))
			lua_pop(L, 1);
	}
	return 1;
}

/*
 * Pattern matching is one instruction that can take exponential time ("a*a*a*...b" on a
 * string of a's backtracks through every split), out of the instruction budget's sight. A
 * match is refused when its worst case, about n^(q+1) steps for q repetitions (*, +, -) on
 * a subject of n bytes (n^q when anchored) and a factor 2 per '?', passes 10^8: linear
 * patterns on large bodies stay allowed, nested backtracking on long subjects does not.
 */
#define PATTERN_LOG10_MAX 8.0

static int pattern_too_costly(const char *p, size_t plen, size_t n)
{
	double logn = n > 1 ? log10((double)n) : 0, cost = 0;
	size_t i = 0;

	if (plen && p[0] == '^')
		i = 1;
	else
		cost = logn;
	while (i < plen) {
		size_t start = i;

		if (p[i] == '%' && i + 1 < plen) {
			if (p[i + 1] == 'b') {
				i += 4; /* %bxy: balanced, linear */
				continue;
			}
			if (p[i + 1] == 'f') {
				i += 2; /* %f[set]: a frontier, then its set */
				if (i < plen && p[i] == '[') {
					for (i++; i < plen && p[i] != ']'; i++)
						if (p[i] == '%')
							i++;
					i++;
				}
				continue;
			}
			i += 2;
		} else if (p[i] == '[') {
			i++;
			if (i < plen && p[i] == '^')
				i++;
			if (i < plen && p[i] == ']')
				i++;
			for (; i < plen && p[i] != ']'; i++)
				if (p[i] == '%')
					i++;
			i++;
		} else {
			i++;
		}
		if (i < plen && i > start && (p[i] == '*' || p[i] == '+' || p[i] == '-')) {
			cost += logn;
			i++;
		} else if (i < plen && p[i] == '?') {
			cost += 0.30103;
			i++;
		}
	}
	return cost > PATTERN_LOG10_MAX;
}

/* string.find/match/gmatch/gsub with that bound (the original is upvalue 1). */
static int guarded_match(lua_State *L)
{
	size_t n, plen;
	const char *pat;

	luaL_checklstring(L, 1, &n);
	pat = luaL_checklstring(L, 2, &plen);
	/* string.find(s, p, init, plain): a plain find is a substring search. */
	if (!(lua_toboolean(L, lua_upvalueindex(2)) && lua_toboolean(L, 4)) &&
	    pattern_too_costly(pat, plen, n))
		return luaL_error(L,
				  "pattern '%s' may take too long on %I bytes (too many "
				  "repetitions for a subject this long)",
				  pat, (lua_Integer)n);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

static void guard_patterns(lua_State *L)
{
	static const char *const fns[] = { "find", "match", "gmatch", "gsub" };

	lua_getglobal(L, LUA_STRLIBNAME);
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		lua_getfield(L, -1, fns[i]);
		lua_pushboolean(L, i == 0); /* find has a plain mode */
		lua_pushcclosure(L, guarded_match, 2);
		lua_setfield(L, -2, fns[i]);
	}
	lua_pop(L, 1);
}

static int open_libs(lua_State *L)
{
	static const luaL_Reg libs[] = {
		{ LUA_GNAME, luaopen_base },	    { LUA_TABLIBNAME, luaopen_table },
		{ LUA_STRLIBNAME, luaopen_string }, { LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 },  { LUA_COLIBNAME, luaopen_coroutine },
	};

	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		luaL_requiref(L, libs[i].name, libs[i].func, 1);
		lua_pop(L, 1);
	}
	lua_pushnil(L);
	lua_setglobal(L, "dofile");
	lua_pushnil(L);
	lua_setglobal(L, "loadfile");
	lua_pushcfunction(L, safe_load);
	lua_setglobal(L, "load");
	guard_patterns(L);
	return 0;
}

lua_State *sl_lua_state_new(struct sl_lua_limits *lim)
{
	lua_State *L;

	lim->churn_stop = lim->churn + (size_t)lim->insn_max * SL_LUA_CHURN_PER_INSN;
	L = lua_newstate(limited_alloc, lim);

	if (!L)
		return NULL;
	sl_lua_run_set(L, NULL); /* coroutines copy it: none runs a handler yet */
	lua_pushcfunction(L, open_libs);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		lua_close(L);
		return NULL;
	}
	lua_sethook(L, count_hook, LUA_MASKCOUNT, INSN_STEP);
	return L;
}
