/* SPDX-License-Identifier: MIT */
/* The reader of a policy table into a struct sl_policy (see lua_policy.c).
 * Threading: any thread; a Lua state is used by one thread at a time (the readers run on the
 * thread that owns @L, sl_policy_load makes and closes a state of its own). Nothing here
 * blocks: policy code runs within the state's instruction and memory caps. */
#ifndef SL_LUA_POLICY_H
#define SL_LUA_POLICY_H

#include <stddef.h>

#include "policy/policy.h"

/*
 * Runs the policy source @src (named @chunkname in messages) in a fresh Lua state with no
 * io/os/package access and bounded instructions and memory, and reads its egress table.
 * Returns a policy (free with sl_policy_free) or NULL with a one-line reason in @err.
 */
struct sl_policy *sl_policy_load(const char *chunkname, const char *src, size_t len, char *err,
				 size_t errlen);
struct lua_State;
/* Runs the policy source @src (named @chunkname) in @L, whose limits the caller set, and reads
 * the table it returns into a new policy (free with sl_policy_free). The table stays on top
 * of @L's stack, above the traceback handler, for the caller's further checks. NULL with the
 * Lua error (file:line: message) or "@chunkname: reason" in @err. */
struct sl_policy *sl_policy_run(struct lua_State *L, const char *chunkname, const char *src,
				size_t len, char *err, size_t errlen);
/* Reads the policy table at the top of @L's stack: its keys and egress. 0 or -EINVAL. */
int sl_policy_read(struct lua_State *L, struct sl_policy *p, char *err, size_t errlen);
/* Reads an egress table ({ allow, intercept, private }, or nil) at the top of @L's stack;
 * @where names it in messages ("egress", "outboundHandlers.x.egress"). */
int sl_policy_read_egress(struct lua_State *L, struct sl_policy *p, const char *where, char *err,
			  size_t errlen);

#endif
