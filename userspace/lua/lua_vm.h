/* SPDX-License-Identifier: MIT */
/* The restricted Lua state policies run in (see lua_vm.c). */
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
