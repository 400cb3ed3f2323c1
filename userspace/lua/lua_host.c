// SPDX-License-Identifier: MIT
/*
 * The Lua host. Each sandbox's policy lives in its own restricted Lua state (no io, os,
 * package or debug, no bytecode, a memory cap), so that one sandbox's policy never sees
 * another's state. For every intercepted request the proxy asks sl_lua_handle(); the handler
 * chosen (the active outboundHandlers entry, else outboundByHost[host], else outbound) runs
 * in a coroutine of that state with (req, env, ctx), the shape of Cloudflare's outbound
 * Workers. req:text(), fetch() and resp:text() yield the coroutine while the proxy does the
 * I/O on the event loop (sl_px_x_*), and resume it from the loop when it is done: other
 * connections are served meanwhile. Every request has an instruction budget; a handler that
 * raises, loops, runs out of memory or returns something other than a Response costs its own
 * request a 502 and an event with the reason, nothing else.
 *
 * Secrets: env values (--env-file) and KV values a handler reads are masked in the response
 * the sandbox gets (headers and body, see sl_px_x_mask) and redacted from log lines and error
 * reasons, so an upstream that echoes request headers does not hand the credential to the
 * sandbox. Values shorter than 4 bytes are not masked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/crypto.h>

#include "core/log.h"
#include "lua/lua_policy.h"
#include "lua/lua_priv.h"
#include "lua/lua_vm.h"
#include "policy/policy.h"
#include "proxy/proxy.h"

/* ---- loading ---- */

static int check_shape(lua_State *L, char *err, size_t errlen)
{
	int t;

	t = lua_getfield(L, -1, "outbound");
	if (t != LUA_TNIL && t != LUA_TFUNCTION) {
		sl_errf(err, errlen, "outbound must be a function (got %s)", lua_typename(L, t));
		return -EINVAL;
	}
	lua_pop(L, 1);
	t = lua_getfield(L, -1, "outboundByHost");
	if (t != LUA_TNIL && t != LUA_TTABLE) {
		sl_errf(err, errlen, "outboundByHost must be a table of host = function");
		return -EINVAL;
	}
	if (t == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) != LUA_TSTRING || !lua_isfunction(L, -1)) {
				sl_errf(err, errlen,
					"outboundByHost: every entry is "
					"[\"host\"] = function(req, env, ctx)");
				return -EINVAL;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	t = lua_getfield(L, -1, "cleartextSecrets");
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
		sl_errf(err, errlen, "cleartextSecrets must be true or false (got %s)",
			lua_typename(L, t));
		return -EINVAL;
	}
	t = lua_getfield(L, -1, "outboundHandlers");
	if (t != LUA_TNIL && t != LUA_TTABLE) {
		sl_errf(err, errlen,
			"outboundHandlers must be a table of name = { egress, handle }");
		return -EINVAL;
	}
	if (t == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) :
									    NULL;
			int e, h;

			if (!name || !lua_istable(L, -1)) {
				sl_errf(err, errlen,
					"outboundHandlers: every entry is "
					"name = { egress = ..., handle = function }");
				return -EINVAL;
			}
			h = lua_getfield(L, -1, "handle");
			e = lua_getfield(L, -2, "egress");
			lua_pop(L, 2);
			if (h != LUA_TFUNCTION && h != LUA_TNIL) {
				sl_errf(err, errlen,
					"outboundHandlers.%s.handle must be a function", name);
				return -EINVAL;
			}
			if (e != LUA_TTABLE && e != LUA_TFUNCTION && e != LUA_TNIL) {
				sl_errf(err, errlen,
					"outboundHandlers.%s.egress must be a table or "
					"a function(params)",
					name);
				return -EINVAL;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return 0;
}

static void host_free(struct sl_lua *lua)
{
	if (lua->L)
		lua_close(lua->L);
	for (size_t i = 0; i < lua->nload; i++) {
		OPENSSL_cleanse(lua->load_secrets[i].s, lua->load_secrets[i].n);
		free(lua->load_secrets[i].s);
	}
	free(lua);
}

struct sl_lua *sl_lua_load(const char *chunkname, const char *src, size_t len,
			   const struct sl_lua_opts *o, const char *sandbox,
			   struct sl_policy **policy, char *err, size_t errlen)
{
	struct sl_lua *lua = calloc(1, sizeof(*lua));
	struct sl_policy *p = NULL;
	lua_State *L;

	*policy = NULL;
	if (!lua) {
		sl_errf(err, errlen, "out of memory");
		return NULL;
	}
	lua->refs = 1;
	lua->o = *o;
	if (!lua->o.mem_max)
		lua->o.mem_max = SL_LUA_MEM_MAX;
	if (!lua->o.insn_max)
		lua->o.insn_max = SL_LUA_INSN_MAX;
	if (!lua->o.body_max)
		lua->o.body_max = SL_LUA_BODY_MAX;
	if (!lua->o.resp_body_max)
		lua->o.resp_body_max = SL_LUA_RESP_BODY_MAX;
	snprintf(lua->sandbox, sizeof(lua->sandbox), "%s", sandbox ? sandbox : "");
	lua->lim.mem_max = lua->o.mem_max;
	lua->lim.insn_max = 10000000L; /* the policy's top level: generous, but bounded */
	lua->policy_ref = LUA_NOREF;
	L = lua->L = sl_lua_state_new(&lua->lim);
	if (!L) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	/* Requests make short-lived objects: the generational collector takes them young. */
	lua_gc(L, LUA_GCGEN, 0, 0);
	lua_pushcfunction(L, sl_lua_open_api);
	lua_pushlightuserdata(L, lua);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	p = sl_policy_run(L, chunkname, src, len, err, errlen);
	if (!p)
		goto fail;
	if (check_shape(L, err, errlen)) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s: %s", chunkname, err);
		sl_errf(err, errlen, "%s", msg);
		goto fail;
	}
	lua->has_outbound = lua_getfield(L, -1, "outbound") == LUA_TFUNCTION;
	lua_pop(L, 1);
	lua_getfield(L, -1, "cleartextSecrets");
	lua->cleartext_secrets = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (lua_getfield(L, -1, "outboundByHost") == LUA_TTABLE) {
		lua_pushnil(L);
		lua->has_by_host = lua_next(L, -2) != 0;
		if (lua->has_by_host)
			lua_pop(L, 2);
	}
	lua_pop(L, 1);
	lua->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	sl_lua_budget_reset(L, &lua->lim, 0);
	lua_settop(L, 0);
	*policy = p;
	return lua;
fail:
	sl_policy_free(p);
	host_free(lua);
	return NULL;
}

struct sl_lua *sl_lua_ref(struct sl_lua *lua)
{
	lua->refs++;
	return lua;
}

void sl_lua_unref(struct sl_lua *lua)
{
	if (lua && !--lua->refs)
		host_free(lua);
}

unsigned sl_lua_refs(const struct sl_lua *lua)
{
	return lua->refs;
}

int sl_lua_has_handlers(const struct sl_lua *lua)
{
	return lua->has_outbound || lua->has_by_host || lua->active[0];
}

void sl_lua_set_services(struct sl_lua *lua, struct sl_events *events, struct sl_kv *kv)
{
	lua->o.events = events;
	lua->o.kv = kv;
}

size_t sl_lua_mem(const struct sl_lua *lua)
{
	return lua->lim.mem;
}

const char *sl_lua_active(const struct sl_lua *lua)
{
	return lua->active;
}

/* ---- running a handler ---- */

/* @a @b @c into @out (truncated): the hot path's names, without snprintf. */
static void join3(char *out, size_t len, const char *a, const char *b, const char *c)
{
	const char *parts[3] = { a, b, c };
	size_t n = 0;

	for (int i = 0; i < 3; i++) {
		size_t k = strlen(parts[i]);

		if (k > len - 1 - n)
			k = len - 1 - n;
		memcpy(out + n, parts[i], k);
		n += k;
	}
	out[n] = 0;
}

static void req_release(struct sl_lua_req *r)
{
	struct sl_lua *lua = r->lua;
	lua_State *L = lua->L;

	r->x = NULL;
	if (r->co) {
		lua_State *co = r->co;

		sl_lua_run_set(co, NULL);
		if (lua_status(co) == LUA_OK && lua->npool < SL_LUA_CO_POOL_MAX) {
			lua_settop(co, 0);
			lua->pool[lua->npool].co = co;
			lua->pool[lua->npool].ref = r->co_ref;
			lua->npool++;
			r->co_ref = LUA_NOREF;
		} else {
			/* Closes what a stopped coroutine holds (to-be-closed variables). */
			lua_resetthread(co);
		}
		r->co = NULL;
	}
	luaL_unref(L, LUA_REGISTRYINDEX, r->co_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, r->self_ref);
	r->co_ref = r->self_ref = LUA_NOREF;
	sl_lua_unref(lua);
}

/* The reason of a failed run, first line only and without secrets; the traceback goes to
 * the daemon's debug log. Runs protected: tracebacks allocate. */
static int error_text(lua_State *L)
{
	lua_State *co = lua_touserdata(L, 1);
	char *out = lua_touserdata(L, 2);
	struct sl_lua_req *r = lua_touserdata(L, 3);
	const char *msg = lua_tostring(co, -1);
	char *tb;

	luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
	tb = strdup(lua_tostring(L, -1));
	if (tb) {
		sl_lua_redact(r->lua, r, tb);
		sl_debug("sandbox %s: handler %s failed: %s", r->lua->sandbox, r->handler, tb);
		free(tb);
	}
	snprintf(out, 400, "handler %s failed: %s", r->handler,
		 msg ? msg : "(error object is not a string)");
	if (strchr(out, '\n'))
		*strchr(out, '\n') = 0;
	sl_lua_redact(r->lua, r, out);
	return 0;
}

static void finish_error(struct sl_lua_req *r, int status)
{
	lua_State *L = r->lua->L;
	char why[400];

	if (status == LUA_ERRMEM || r->run.out_of_insns)
		r->lua->o.xchg->count_limit(r->x, status == LUA_ERRMEM ? SL_PX_LIMIT_LUA_MEM :
									 SL_PX_LIMIT_LUA_INSNS);
	if (status == LUA_ERRMEM &&
	    r->churn >= (size_t)r->lua->o.insn_max * SL_LUA_CHURN_PER_INSN) {
		snprintf(why, sizeof(why),
			 "handler %s failed: it ran out of its work budget "
			 "(%zu MiB allocated)",
			 r->handler, r->churn >> 20);
		r->lua->o.xchg->fail(r->x, 502, why);
		return;
	}
	if (status == LUA_ERRMEM) {
		/* Nothing more can be allocated now: no traceback. What the handler held is
		 * garbage once its coroutine is released. */
		snprintf(why, sizeof(why),
			 "handler %s failed: not enough memory (its policy's "
			 "Lua state may use %zu MiB)",
			 r->handler, r->lua->o.mem_max >> 20);
		r->lua->o.xchg->fail(r->x, 502, why);
		return;
	}
	lua_pushcfunction(L, error_text);
	lua_pushlightuserdata(L, r->co);
	lua_pushlightuserdata(L, why);
	lua_pushlightuserdata(L, r);
	if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
		snprintf(why, sizeof(why), "handler %s failed (%s)", r->handler,
			 status == LUA_ERRMEM ? "out of memory" : "error");
		lua_pop(L, 1);
	}
	r->lua->o.xchg->fail(r->x, 502, why);
}

/* The handler returned: what it returned is the answer. */
static void finish_ok(struct sl_lua_req *r, int nres)
{
	lua_State *co = r->co;
	struct sl_lua_resp *p = nres ? sl_lua_to_ud(co, -nres, SL_LUA_TAG_RESP) : NULL;
	char why[200];

	if (!p) {
		snprintf(why, sizeof(why), "handler %s returned %s, not a Response", r->handler,
			 nres ? luaL_typename(co, -nres) : "nothing");
		r->lua->o.xchg->fail(r->x, 502, why);
		return;
	}
	if (!p->local) {
		if (p->r != r || !r->lua->o.xchg->resp(r->x)) {
			r->lua->o.xchg->fail(r->x, 502,
					     "the handler returned a response it did not fetch");
			return;
		}
		r->lua->o.xchg->send_fetched(r->x);
		return;
	}
	{
		size_t len = 0;
		const char *body = NULL;

		if (lua_getiuservalue(co, -nres, 1) == LUA_TSTRING)
			body = lua_tolstring(co, -1, &len);
		if (r->lua->o.xchg->set_trailers(r->x, &p->t)) {
			lua_pop(co, 1);
			r->lua->o.xchg->fail(r->x, 500,
					     "the handler's response trailers could not be kept");
			return;
		}
		r->lua->o.xchg->send(r->x, p->status, &p->h, body, len);
		lua_pop(co, 1);
	}
}

/* Runs the handler until it returns, fails or waits. @r holds a reference on its state
 * until req_release(), so a policy replaced meanwhile stays alive for it. */
static void run(struct sl_lua_req *r, int nargs)
{
	struct sl_lua_limits *lim = &r->lua->lim;
	size_t budget = (size_t)r->lua->o.insn_max * SL_LUA_CHURN_PER_INSN, before = lim->churn;
	int nres = 0, status;

	/* What the handler allocates is bounded per request too: one instruction can make a
	 * 32 MB string. */
	lim->churn_stop = before + (r->churn < budget ? budget - r->churn : 0);
	status = lua_resume(r->co, r->lua->L, nargs, &nres);
	r->churn += lim->churn - before;
	lim->churn_stop = SIZE_MAX;
	if (status == LUA_YIELD && r->waiting != SL_LUA_W_NONE)
		return;
	if (status == LUA_YIELD)
		r->lua->o.xchg->fail(r->x, 502, "the handler yielded outside fetch() or text()");
	else if (status == LUA_OK)
		finish_ok(r, nres);
	else
		finish_error(r, status);
	req_release(r);
}

static void on_resume(void *hctx)
{
	struct sl_lua_req *r = hctx;

	if (r->x)
		run(r, 0);
}

static void on_abort(void *hctx, const char *why)
{
	struct sl_lua_req *r = hctx;

	sl_debug("sandbox %s: handler %s stopped: %s", r->lua->sandbox, r->handler, why);
	req_release(r);
}

static const struct sl_px_handler px_handler = {
	.resume = on_resume,
	.abort = on_abort,
};

struct start {
	struct sl_lua *lua;
	struct sl_px_xchg *x;
	struct sl_lua_req *r;
	const char *host;
};

/* Finds the handler for the request and sets up its coroutine: (function, req, env, ctx) on
 * the coroutine's stack. Protected (allocates); returns 0 with nothing to run. */
static int start_request(lua_State *L)
{
	struct start *s = lua_touserdata(L, 1);
	struct sl_lua *lua = s->lua;
	char handler[96] = "";
	struct sl_lua_req *r;
	struct sl_lua_ctx *ctx;
	lua_State *co;

	lua_rawgeti(L, LUA_REGISTRYINDEX, lua->policy_ref);
	if (lua->active[0]) {
		lua_getfield(L, -1, "outboundHandlers");
		lua_getfield(L, -1, lua->active);
		lua_getfield(L, -1, "handle");
		join3(handler, sizeof(handler), "outboundHandlers.", lua->active, "");
	} else {
		if (lua->has_by_host) {
			lua_getfield(L, -1, "outboundByHost");
			lua_getfield(L, -1, s->host);
			join3(handler, sizeof(handler), "outboundByHost[", s->host, "]");
		}
		if (!lua_isfunction(L, -1) && lua->has_outbound) {
			lua_getfield(L, 2, "outbound");
			join3(handler, sizeof(handler), "outbound", "", "");
		}
	}
	if (!lua_isfunction(L, -1)) {
		lua_pushboolean(L, 0);
		return 1;
	}
	r = lua_newuserdatauv(L, sizeof(*r), 2);
	memset(r, 0, sizeof(*r));
	r->tag = SL_LUA_TAG_REQ;
	r->co_ref = r->self_ref = LUA_NOREF;
	luaL_setmetatable(L, SL_LUA_MT_REQ);
	memcpy(r->handler, handler, sizeof(r->handler));
	r->lua = sl_lua_ref(lua);
	r->x = s->x;
	s->r = r; /* from here on the caller releases it if this raises */
	if (lua->npool) {
		lua->npool--;
		co = lua->pool[lua->npool].co;
		r->co_ref = lua->pool[lua->npool].ref;
	} else {
		co = lua_newthread(L);
		r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	r->co = co;
	r->run.insn_max = lua->o.insn_max;
	sl_lua_run_set(co, &r->run);
	lua_pushvalue(L, -1);
	r->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	/* function, req, env, ctx */
	lua_pushvalue(L, -2);
	lua_pushvalue(L, -2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lua->env_ref);
	ctx = lua_newuserdatauv(L, sizeof(*ctx), 1);
	ctx->tag = SL_LUA_TAG_CTX;
	ctx->r = r;
	luaL_setmetatable(L, SL_LUA_MT_CTX);
	lua_pushvalue(L, -3);
	lua_setiuservalue(L, -2, 1);
	luaL_checkstack(co, 8, "handler stack");
	lua_xmove(L, co, 4);
	lua_pushboolean(L, 1);
	return 1;
}

int sl_lua_handle(struct sl_lua *lua, struct sl_px_xchg *x)
{
	lua_State *L = lua->L;
	struct sl_px_info info;
	struct start s = { .lua = lua, .x = x };
	int ok;

	if (!sl_lua_has_handlers(lua))
		return 1;
	lua->o.xchg->info(x, &info);
	s.host = info.host;
	lua_settop(L, 0);
	lua_pushcfunction(L, start_request);
	lua_pushlightuserdata(L, &s);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		/* Out of memory setting up: this request fails, nothing else. */
		lua_settop(L, 0);
		if (s.r)
			req_release(s.r);
		lua->o.xchg->fail(x, 502,
				  "the handler could not start: the policy's Lua state is out "
				  "of memory");
		return 0;
	}
	ok = lua_toboolean(L, -1);
	lua_settop(L, 0);
	if (!ok)
		return 1; /* no handler for this host: forwarded unchanged */
	lua->o.xchg->attach(x, &px_handler, s.r);
	lua->o.xchg->set_handler(x, s.r->handler);
	for (size_t i = 0; i < lua->nload; i++)
		lua->o.xchg->mask(x, lua->load_secrets[i].s, lua->load_secrets[i].n);
	run(s.r, 3);
	return 0;
}

/* ---- outboundHandlers ---- */

/* Pushes the JSON value @j as Lua. */
static void push_json(lua_State *L, json_t *j, int depth)
{
	luaL_checkstack(L, 4, "params");
	if (depth > 32)
		luaL_error(L, "params nest too deep");
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		const char *k;
		json_t *v;

		lua_createtable(L, 0, (int)json_object_size(j));
		json_object_foreach(j, k, v) {
			push_json(L, v, depth + 1);
			lua_setfield(L, -2, k);
		}
		break;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *v;

		lua_createtable(L, (int)json_array_size(j), 0);
		json_array_foreach(j, i, v) {
			push_json(L, v, depth + 1);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	}
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, json_integer_value(j));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(j));
		break;
	case JSON_TRUE:
		lua_pushboolean(L, 1);
		break;
	case JSON_FALSE:
		lua_pushboolean(L, 0);
		break;
	default:
		lua_pushnil(L);
	}
}

struct egress_call {
	struct sl_lua *lua;
	const char *name;
	json_t *params;
	struct sl_policy *p;
	int set_active;
	char *err;
	size_t errlen;
};

/* outboundHandlers[name]: its kernel layer for the params, and (set_active) make it the
 * active one. Protected: runs the egress function. */
static int handler_call(lua_State *L)
{
	struct egress_call *e = lua_touserdata(L, 1);
	char where[96];
	int t;

	lua_rawgeti(L, LUA_REGISTRYINDEX, e->lua->policy_ref);
	if (lua_getfield(L, -1, "outboundHandlers") != LUA_TTABLE ||
	    lua_getfield(L, -1, e->name) != LUA_TTABLE) {
		sl_errf(e->err, e->errlen, "the policy has no handler '%s' in outboundHandlers",
			e->name);
		lua_pushinteger(L, -ENOENT);
		return 1;
	}
	if (e->params)
		push_json(L, e->params, 0);
	else
		lua_newtable(L);
	if (e->set_active) {
		/* Its egress ran already (sl_lua_handler_egress, which the callers call first):
		 * activating only keeps the params. */
		lua_rawseti(L, LUA_REGISTRYINDEX, e->lua->params_ref);
		snprintf(e->lua->active, sizeof(e->lua->active), "%s", e->name);
		lua_pushinteger(L, 0);
		return 1;
	}
	t = lua_getfield(L, -2, "egress");
	if (t == LUA_TFUNCTION) {
		lua_pushvalue(L, -2);
		lua_call(L, 1, 1); /* raises: the caller's pcall reports it */
		t = lua_type(L, -1);
		if (t != LUA_TTABLE && t != LUA_TNIL) {
			sl_errf(e->err, e->errlen,
				"outboundHandlers.%s.egress(params) returned %s, "
				"not a table",
				e->name, lua_typename(L, t));
			lua_pushinteger(L, -EINVAL);
			return 1;
		}
	}
	if (t != LUA_TNIL) {
		e->p = calloc(1, sizeof(*e->p));
		if (!e->p)
			return luaL_error(L, "not enough memory");
		snprintf(where, sizeof(where), "outboundHandlers.%s.egress", e->name);
		if (sl_policy_read_egress(L, e->p, where, e->err, e->errlen)) {
			lua_pushinteger(L, -EINVAL);
			return 1;
		}
	}
	lua_pop(L, 2); /* egress, params */
	lua_pushinteger(L, 0);
	return 1;
}

static int handler_run(struct sl_lua *lua, const char *name, const char *params_json,
		       struct sl_policy **policy, int set_active, char *err, size_t errlen)
{
	struct egress_call e = {
		.lua = lua, .name = name, .set_active = set_active, .err = err, .errlen = errlen
	};
	lua_State *L = lua->L;
	json_error_t jerr;
	int r;

	if (policy)
		*policy = NULL;
	if (strlen(name) >= sizeof(lua->active)) {
		sl_errf(err, errlen, "handler name too long");
		return -EINVAL;
	}
	if (params_json && *params_json) {
		e.params = json_loads(params_json, JSON_REJECT_DUPLICATES, &jerr);
		if (!e.params || !json_is_object(e.params)) {
			sl_errf(err, errlen, "params must be a JSON object%s%s",
				e.params ? "" : ": ", e.params ? "" : jerr.text);
			json_decref(e.params);
			return -EINVAL;
		}
	}
	lua_settop(L, 0);
	lua_pushcfunction(L, sl_lua_traceback);
	lua_pushcfunction(L, handler_call);
	lua_pushlightuserdata(L, &e);
	sl_lua_budget_reset(L, &lua->lim, 1);
	r = lua_pcall(L, 1, 1, 1);
	sl_lua_budget_reset(L, &lua->lim, 0); /* coroutines made from now on inherit the hook */
	if (r != LUA_OK) {
		char msg[400];

		sl_lua_first_line(L, msg, sizeof(msg));
		sl_errf(err, errlen, "outboundHandlers.%s.egress(params) failed: %s", name, msg);
		r = -EINVAL;
	} else {
		r = (int)lua_tointeger(L, -1);
		if (r == -ENOENT)
			r = -EINVAL;
	}
	lua_settop(L, 0);
	json_decref(e.params);
	if (r || !policy)
		sl_policy_free(e.p);
	else
		*policy = e.p;
	return r;
}

int sl_lua_handler_exists(struct sl_lua *lua, const char *name)
{
	lua_State *L = lua->L;
	int ok;

	lua_rawgeti(L, LUA_REGISTRYINDEX, lua->policy_ref);
	ok = lua_getfield(L, -1, "outboundHandlers") == LUA_TTABLE &&
	     lua_getfield(L, -1, name) == LUA_TTABLE;
	lua_settop(L, 0);
	return ok;
}

int sl_lua_handler_egress(struct sl_lua *lua, const char *name, const char *params_json,
			  struct sl_policy **policy, char *err, size_t errlen)
{
	return handler_run(lua, name, params_json, policy, 0, err, errlen);
}

int sl_lua_set_active(struct sl_lua *lua, const char *name, const char *params_json, char *err,
		      size_t errlen)
{
	if (!name) {
		lua->active[0] = 0;
		return 0;
	}
	return handler_run(lua, name, params_json, NULL, 1, err, errlen);
}
