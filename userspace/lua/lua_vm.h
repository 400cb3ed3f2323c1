/* SPDX-License-Identifier: MIT */
/* The restricted Lua state policies run in (see lua_vm.c): a leaf that knows no policy,
 * request or proxy; it depends on Lua and core/log only.
 * Threading: a state and everything made in it belong to one thread at a time (Lua states are
 * not thread-safe): the one that created it, or the one it was handed over to whole (sluiced:
 * a state loaded on a jobs thread goes to its sandbox's worker); nothing here blocks. */
#ifndef SL_LUA_VM_H
#define SL_LUA_VM_H

#include <stddef.h>

#include <lua.h>

/* The limits of one Lua state: memory in bytes, instructions of the code run at load. */
struct sl_lua_limits {
	size_t mem, mem_max;
	long insns, insn_max;
	/* Bytes ever allocated, and the count past which allocations fail: work done inside C
	 * functions (string.rep, table.concat) is bounded by what it allocates, which the
	 * instruction count does not see. Set by sl_lua_state_new() for the load. */
	size_t churn, churn_stop;
};
#define SL_LUA_CHURN_PER_INSN 16 /* bytes allocated that count as one instruction */
#define SL_LUA_MEM_MAX (64u << 20) /* per state, unless its owner says otherwise */

/* The instruction budget of one run on a coroutine (a request's handler), apart from the
 * state's: while a coroutine's run is set (sl_lua_run_set), the hook counts against it and
 * raises past @insn_max, setting @out_of_insns. Coroutines made later copy the main thread's
 * (none). */
struct sl_lua_run {
	long insns, insn_max;
	int out_of_insns; /* the budget ended the run */
};

/* The run coroutine @L counts against, NULL for none (the state's budget applies). */
static inline struct sl_lua_run *sl_lua_run_of(lua_State *L)
{
	return *(struct sl_lua_run **)lua_getextraspace(L);
}

static inline void sl_lua_run_set(lua_State *L, struct sl_lua_run *run)
{
	*(struct sl_lua_run **)lua_getextraspace(L) = run;
}

/* A restricted state: base, table, string, math, utf8 and coroutine only; no io, os,
 * package or debug, no bytecode; allocations past @lim->mem_max fail, and code run outside
 * a request stops after @lim->insn_max instructions. NULL if out of memory. */
lua_State *sl_lua_state_new(struct sl_lua_limits *lim);
/* A fresh budget for code run on @L outside requests; @bounded 0 lifts the allocation
 * bound (between runs, the C side pushes what it needs). */
void sl_lua_budget_reset(lua_State *L, struct sl_lua_limits *lim, int bounded);
/* A message handler for lua_pcall: the error with a traceback. */
int sl_lua_traceback(lua_State *L);
/* The first line of the error message at the top of @L's stack, into @err. */
void sl_lua_first_line(lua_State *L, char *err, size_t errlen);

#endif
