/* SPDX-License-Identifier: MIT */
/* What the Lua host (lua_host.c) and the API it gives handlers (lua_api.c) share; nothing
 * outside lua/ includes it. Threading: the sandbox's worker only, as lua_host.h; nothing here blocks. */
#ifndef SL_LUA_PRIV_H
#define SL_LUA_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "http/http.h"
#include "lua/lua_host.h"
#include "lua/lua_vm.h"
#include "proxy/proxy.h"

/*
 * The exchange API of proxy.h (sl_px_x_*, same arguments, same contract) as a table the Lua
 * host calls through (sl_lua_opts.xchg): the host names no proxy function, so a program that
 * only loads policies links no proxy file. lua_px.c fills it with the proxy's functions.
 */
struct sl_lua_xchg_ops {
	void (*attach)(struct sl_px_xchg *x, const struct sl_px_handler *h, void *hctx);
	void (*info)(struct sl_px_xchg *x, struct sl_px_info *info);
	struct sl_http_msg *(*req)(struct sl_px_xchg *x);
	const char *(*path)(struct sl_px_xchg *x);
	int (*set_path)(struct sl_px_xchg *x, const char *path);
	int (*set_method)(struct sl_px_xchg *x, const char *method);
	int (*read_body)(struct sl_px_xchg *x, size_t max);
	const char *(*body)(struct sl_px_xchg *x, size_t *len);
	int (*set_body)(struct sl_px_xchg *x, const char *body, size_t len);
	int (*fetch)(struct sl_px_xchg *x);
	struct sl_http_msg *(*resp)(struct sl_px_xchg *x);
	int (*read_resp_body)(struct sl_px_xchg *x, size_t max);
	const char *(*resp_body)(struct sl_px_xchg *x, size_t *len);
	int (*set_resp_body)(struct sl_px_xchg *x, const char *body, size_t len);
	void (*send_fetched)(struct sl_px_xchg *x);
	void (*send)(struct sl_px_xchg *x, int status, const struct sl_http_msg *headers,
		     const char *body, size_t len);
	void (*fail)(struct sl_px_xchg *x, int status, const char *why);
	void (*count_limit)(struct sl_px_xchg *x, enum sl_px_limit which);
	int (*mask)(struct sl_px_xchg *x, const char *secret, size_t len);
	int (*cleartext_secret)(struct sl_px_xchg *x);
	void (*set_handler)(struct sl_px_xchg *x, const char *name);
	void (*redact)(struct sl_px_xchg *x, char *s, size_t len);
	const struct sl_http_msg *(*trailers)(struct sl_px_xchg *x);
	int (*set_trailers)(struct sl_px_xchg *x, const struct sl_http_msg *t);
};

#define SL_LUA_SECRETS_MAX 64
/* Idle coroutines kept for the next requests: a thread that finished normally is as good as
 * new once its stack is emptied (the Lua manual, lua_resume). */
#define SL_LUA_CO_POOL_MAX 32

#define SL_LUA_MT_REQ "sluice.Request"
#define SL_LUA_MT_RESP "sluice.Response"
#define SL_LUA_MT_HDRS "sluice.Headers"
#define SL_LUA_MT_CTX "sluice.Context"
#define SL_LUA_MT_KV "sluice.KV"

struct sl_lua_secret {
	char *s;
	size_t n;
};

struct sl_lua {
	lua_State *L;
	struct sl_lua_limits lim;
	unsigned refs;
	struct sl_lua_opts o;
	char sandbox[80];
	int policy_ref; /* the policy table */
	int env_ref; /* the env table handlers get */
	int params_ref; /* ctx.params of the active handler */
	char active[64]; /* the active outboundHandlers entry, "" for none */
	int has_outbound, has_by_host;
	int cleartext_secrets; /* the policy's cleartextSecrets = true */
	struct sl_lua_secret load_secrets[SL_LUA_SECRETS_MAX]; /* read while the policy loaded */
	size_t nload;
	struct {
		lua_State *co;
		int ref;
	} pool[SL_LUA_CO_POOL_MAX];
	int npool;
};

enum sl_lua_wait { SL_LUA_W_NONE, SL_LUA_W_BODY, SL_LUA_W_FETCH, SL_LUA_W_RESP_BODY };

/*
 * Every userdata made here starts with a tag naming its kind: the type checks on the hot path
 * read it instead of looking metatables up by name. Policies cannot make full userdata (no
 * debug library, no C modules), so only these carry tags.
 */
enum sl_lua_tag {
	SL_LUA_TAG_REQ = 0x51c0aa01,
	SL_LUA_TAG_RESP,
	SL_LUA_TAG_HDRS,
	SL_LUA_TAG_CTX,
	SL_LUA_TAG_KV,
};

/* One request's handler run. A full userdata (the `req` handlers see), kept alive by the
 * registry while the request is in flight and by any Lua value that holds it after. */
struct sl_lua_req {
	uint32_t tag;
	struct sl_lua *lua;
	struct sl_px_xchg *x; /* NULL once the request has ended */
	lua_State *co;
	int co_ref, self_ref;
	struct sl_lua_run run; /* its instruction budget (lua_vm.h) */
	size_t churn; /* bytes its handler allocated so far (bounded like instructions) */
	enum sl_lua_wait waiting;
	int fetched;
	char handler[96];
};

enum sl_lua_hdrs_of { SL_LUA_H_REQ, SL_LUA_H_RESP, SL_LUA_H_LOCAL };

/* A response: the one fetch() returned (its head lives in the proxy) or one made by
 * Response.new (its head here; its body is the userdata's first user value). */
struct sl_lua_resp {
	uint32_t tag;
	int local;
	struct sl_lua_req *r; /* fetched: the request (the second user value keeps it alive) */
	int status;
	struct sl_http_msg h;
	struct sl_http_msg t; /* Response.new's trailers */
};

struct sl_lua_hdrs {
	uint32_t tag;
	enum sl_lua_hdrs_of of;
	struct sl_lua_req *r;
	struct sl_lua_resp *resp;
};

struct sl_lua_ctx {
	uint32_t tag;
	struct sl_lua_req *r;
};

struct sl_lua_kv {
	uint32_t tag;
	char ns[];
};

/* The request whose handler runs on coroutine @L (NULL outside requests): its run is the
 * one the coroutine counts against. */
static inline struct sl_lua_req *sl_lua_running(lua_State *L)
{
	struct sl_lua_run *run = sl_lua_run_of(L);

	return run ? (struct sl_lua_req *)((char *)run - offsetof(struct sl_lua_req, run)) : NULL;
}

/* The userdata at @idx if it is of kind @tag, else NULL. */
static inline void *sl_lua_to_ud(lua_State *L, int idx, uint32_t tag)
{
	uint32_t *p;

	if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) < sizeof(*p))
		return NULL;
	p = lua_touserdata(L, idx);
	return *p == tag ? p : NULL;
}

/* Installs Response, fetch, sluice.log, the classes and env in a new state (protected:
 * call through lua_pcall with @lua as the one light userdata argument). */
int sl_lua_open_api(lua_State *L);
/* Removes every secret @r's handler could know from @s (env values, those read at load,
 * those the request read). @r may be NULL. */
void sl_lua_redact(struct sl_lua *lua, struct sl_lua_req *r, char *s);

#endif
