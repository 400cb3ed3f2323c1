/* SPDX-License-Identifier: MIT */
/* The Lua host: a sandbox's policy loaded in its own Lua state, and its handlers run for
 * every intercepted request (see lua_host.c).
 * Threading: the thread of the loop its sandbox runs on (its worker's) only, but for a state
 * loaded off it (the jobs thread, adoption on the main thread before the workers start: then
 * handed over whole, sl_lua_set_services()). "The loop thread" below is that thread.
 * A struct sl_lua, its Lua state and its reference count (a
 * plain unsigned, not atomic: sl_lua_ref/sl_lua_unref are safe only on the one thread) belong
 * to the loop thread, as do the requests that hold references. Handlers wait for no I/O
 * (fetch() and body reads yield to the loop) and stop at their instruction and allocation
 * budgets; a handler's KV read (ns:get()) reads SQLite on the loop thread through its own
 * read connection (store/kv.h: reads never fsync nor wait for a write). */
#ifndef SL_LUA_HOST_H
#define SL_LUA_HOST_H

#include <stddef.h>

#include <lua.h>

#include "lua/lua_vm.h"

struct sl_env;
struct sl_events;
struct sl_kv;
struct sl_policy;
struct sl_px_xchg;
struct sl_lua_xchg_ops;

#define SL_LUA_INSN_MAX 5000000L /* per request */
#define SL_LUA_BODY_MAX (1u << 20) /* req:text() */
#define SL_LUA_RESP_BODY_MAX (8u << 20) /* resp:text() */

struct sl_lua_opts {
	const struct sl_env *env; /* --env-file secrets; may be NULL */
	struct sl_kv *kv; /* KV namespaces; may be NULL */
	struct sl_events *events; /* sluice.log() lines; may be NULL */
	size_t mem_max; /* 0: the defaults above */
	long insn_max;
	size_t body_max, resp_body_max;
	/* How handlers work on an exchange (lua_priv.h): &sl_lua_px_ops, the proxy's. May be NULL
	 * where no request is ever handled (the CLI's checks, the fuzzers, unit tests of loading). */
	const struct sl_lua_xchg_ops *xchg;
};

/* The proxy's exchange API as the Lua host calls it (lua_px.c). Only what runs requests
 * links it: a program that only loads policies (fuzz_policy) links no proxy file. */
extern const struct sl_lua_xchg_ops sl_lua_px_ops;

struct sl_lua;

/*
 * Runs the policy source @src (named @chunkname in messages) in a new restricted state and
 * checks its shape: egress entries (into *@policy, owned by the caller), outbound a function,
 * outboundByHost a table of functions, outboundHandlers a table of { egress, handle }.
 * NULL with the Lua error (file:line: message) or the shape error in @err.
 */
struct sl_lua *sl_lua_load(const char *chunkname, const char *src, size_t len,
			   const struct sl_lua_opts *o, const char *sandbox,
			   struct sl_policy **policy, char *err, size_t errlen);
/* References: in-flight requests keep a state alive after its sandbox let go of it. */
struct sl_lua *sl_lua_ref(struct sl_lua *lua);
void sl_lua_unref(struct sl_lua *lua); /* accepts NULL */
/* How many references @lua has now (1: the caller's is the only one; nobody else can take
 * one then but through it). */
unsigned sl_lua_refs(const struct sl_lua *lua);

/* Whether the policy has a handler for some request (outbound, outboundByHost, or an active
 * outboundHandlers entry). */
int sl_lua_has_handlers(const struct sl_lua *lua);

/* The proxy's question for every request head (sl_proxy_ops.handle): 0 if a handler took
 * the request, 1 to forward it unchanged. Only for a state loaded with sl_lua_opts.xchg set. */
int sl_lua_handle(struct sl_lua *lua, struct sl_px_xchg *x);

/* Whether outboundHandlers[@name] exists. */
int sl_lua_handler_exists(struct sl_lua *lua, const char *name);
/*
 * The kernel layer of outboundHandlers[@name] with @params_json (a JSON object or NULL for
 * none): its egress table, or what its egress function returns for the params. Into
 * *@policy (caller owns; NULL when the handler has no egress: the policy's own applies).
 * -EINVAL with the reason (unknown handler, bad params, the function raised) in @err.
 */
int sl_lua_handler_egress(struct sl_lua *lua, const char *name, const char *params_json,
			  struct sl_policy **policy, char *err, size_t errlen);
/* Makes outboundHandlers[@name] the active handler with @params_json (NULL @name: none,
 * back to the policy's own handlers). Its egress is not run again: callers validate the
 * params with sl_lua_handler_egress() first. Requests already running keep theirs. */
int sl_lua_set_active(struct sl_lua *lua, const char *name, const char *params_json, char *err,
		      size_t errlen);
const char *sl_lua_active(const struct sl_lua *lua); /* "" if none */

/* Bytes in use by the state (for metrics). */
size_t sl_lua_mem(const struct sl_lua *lua);

/*
 * A state loaded off the loop thread (by a compile job: sl_lua_load() and the handler's
 * egress may run on any thread for a state nobody else holds yet) is loaded with no events
 * and no KV in its options, so that its top level touches nothing the loop owns (a
 * sluice.log() there is dropped). This gives it sluiced's: loop thread, once the state is
 * handed over, before its first request.
 */
void sl_lua_set_services(struct sl_lua *lua, struct sl_events *events, struct sl_kv *kv);

#endif
