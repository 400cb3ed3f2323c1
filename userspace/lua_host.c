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
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/crypto.h>

#include "envfile.h"
#include "events.h"
#include "http.h"
#include "kv.h"
#include "log.h"
#include "lua_host.h"
#include "policy.h"
#include "proxy.h"

#define INSN_STEP 1000
#define LOG_MAX 1024
#define SECRETS_MAX 64

#define MT_REQ "sluice.Request"
#define MT_RESP "sluice.Response"
#define MT_HDRS "sluice.Headers"
#define MT_CTX "sluice.Context"
#define MT_KV "sluice.KV"

struct secret {
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
	struct secret load_secrets[SECRETS_MAX]; /* read while the policy loaded */
	size_t nload;
};

enum wait { W_NONE, W_BODY, W_FETCH, W_RESP_BODY };

/* One request's handler run. A full userdata (the `req` handlers see), kept alive by the
 * registry while the request is in flight and by any Lua value that holds it after. */
struct lreq {
	struct sl_lua *lua;
	struct sl_px_xchg *x; /* NULL once the request has ended */
	lua_State *co;
	int co_ref, self_ref;
	long insns;
	enum wait waiting;
	int fetched;
	char handler[96];
};

enum hdrs_of { H_REQ, H_RESP, H_LOCAL };

/* A response: the one fetch() returned (its head lives in the proxy) or one made by
 * Response.new (its head here; its body is the userdata's first user value). */
struct lresp {
	int local;
	struct lreq *r; /* fetched: the request (the second user value keeps it alive) */
	int status;
	struct sl_http_msg h;
};

struct lhdrs {
	enum hdrs_of of;
	struct lreq *r;
	struct lresp *resp;
};

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
	if (nsize > osize && lim->mem + (nsize - osize) > lim->mem_max)
		return NULL;
	ptr = realloc(ptr, nsize);
	if (ptr)
		lim->mem += nsize - osize;
	return ptr;
}

static struct lreq *running_req(lua_State *L)
{
	return *(struct lreq **)lua_getextraspace(L);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	struct lreq *r = running_req(L);
	struct sl_lua_limits *lim;

	(void)ar;
	if (r) {
		r->insns += INSN_STEP;
		if (r->insns > r->lua->o.insn_max)
			luaL_error(L, "the handler ran out of its instruction budget (%I)",
				   (lua_Integer)r->lua->o.insn_max);
		return;
	}
	lua_getallocf(L, (void **)&lim);
	lim->insns += INSN_STEP;
	if (lim->insns > lim->insn_max)
		luaL_error(L, "policy runs too long (instruction limit reached)");
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

static int open_libs(lua_State *L)
{
	static const luaL_Reg libs[] = {
		{ LUA_GNAME, luaopen_base },	   { LUA_TABLIBNAME, luaopen_table },
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
	return 0;
}

lua_State *sl_lua_state_new(struct sl_lua_limits *lim)
{
	lua_State *L = lua_newstate(limited_alloc, lim);

	if (!L)
		return NULL;
	*(struct lreq **)lua_getextraspace(L) = NULL;
	lua_pushcfunction(L, open_libs);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		lua_close(L);
		return NULL;
	}
	lua_sethook(L, count_hook, LUA_MASKCOUNT, INSN_STEP);
	return L;
}

/* ---- secrets ---- */

/* A secret was read: the response must not carry it back. */
static void secret_read(lua_State *L, const char *v, size_t n)
{
	struct lreq *r = running_req(L);
	struct sl_lua *lua;

	if (n < 4)
		return;
	if (r) {
		if (r->x)
			sl_px_x_mask(r->x, v, n);
		return;
	}
	/* At load (a value kept in an upvalue): masked in every response of this policy. */
	lua_getfield(L, LUA_REGISTRYINDEX, "sluice.host");
	lua = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!lua || lua->nload == SECRETS_MAX)
		return;
	for (size_t i = 0; i < lua->nload; i++)
		if (lua->load_secrets[i].n == n && !memcmp(lua->load_secrets[i].s, v, n))
			return;
	lua->load_secrets[lua->nload].s = malloc(n);
	if (!lua->load_secrets[lua->nload].s)
		return;
	memcpy(lua->load_secrets[lua->nload].s, v, n);
	lua->load_secrets[lua->nload].n = n;
	lua->nload++;
}

static void mask_in(char *s, size_t len, const char *v, size_t n)
{
	char *q = s;

	if (n < 4)
		return;
	while ((size_t)(s + len - q) >= n && (q = memmem(q, s + len - q, v, n))) {
		memset(q, '*', n);
		q += n;
	}
}

/* Removes every secret this request could know from @s: the env file's values, those read
 * at load, and those the request read (KV values). */
static void redact(struct sl_lua *lua, struct lreq *r, char *s)
{
	size_t len = strlen(s);

	for (size_t i = 0; lua->o.env && i < sl_env_count(lua->o.env); i++) {
		const char *k, *v;

		if (!sl_env_at(lua->o.env, i, &k, &v))
			mask_in(s, len, v, strlen(v));
	}
	for (size_t i = 0; i < lua->nload; i++)
		mask_in(s, len, lua->load_secrets[i].s, lua->load_secrets[i].n);
	if (r && r->x)
		sl_px_x_redact(r->x, s, len);
}

/* ---- requests ---- */

static struct lreq *check_req(lua_State *L, int idx)
{
	struct lreq *r = luaL_checkudata(L, idx, MT_REQ);

	if (!r->x)
		luaL_error(L, "the request has ended");
	return r;
}

static void check_own(lua_State *L, struct lreq *r, const char *what)
{
	if (L != r->co)
		luaL_error(L, "%s must be called from the handler itself, not a coroutine it made",
			   what);
}

static struct sl_http_msg *hdrs_msg(lua_State *L, struct lhdrs *h, int writing)
{
	struct sl_http_msg *m;

	if (h->of == H_LOCAL)
		return &h->resp->h;
	if (!h->r->x)
		luaL_error(L, "the request has ended");
	if (h->of == H_REQ) {
		if (writing && h->r->fetched)
			luaL_error(L, "the request has been sent upstream already");
		return sl_px_x_req(h->r->x);
	}
	m = sl_px_x_resp(h->r->x);
	if (!m)
		luaL_error(L, "the response has been sent already");
	return m;
}

/* Pushes a Headers object for @owner (at @owner_idx), remembered in its user value 2. */
static void push_headers(lua_State *L, int owner_idx, enum hdrs_of of, struct lreq *r,
			 struct lresp *resp)
{
	struct lhdrs *h;

	owner_idx = lua_absindex(L, owner_idx);
	if (lua_getiuservalue(L, owner_idx, 2) == LUA_TUSERDATA)
		return;
	lua_pop(L, 1);
	h = lua_newuserdatauv(L, sizeof(*h), 1);
	h->of = of;
	h->r = r;
	h->resp = resp;
	luaL_setmetatable(L, MT_HDRS);
	lua_pushvalue(L, owner_idx);
	lua_setiuservalue(L, -2, 1); /* the headers keep their owner alive */
	lua_pushvalue(L, -1);
	lua_setiuservalue(L, owner_idx, 2);
}

static const char *check_name(lua_State *L, int idx)
{
	const char *name = luaL_checkstring(L, idx);

	if (!sl_http_valid_name(name))
		luaL_error(L, "'%s' is not a header name", name);
	return name;
}

static const char *check_value(lua_State *L, int idx, const char *name)
{
	size_t len;
	const char *v = luaL_checklstring(L, idx, &len);

	if (strlen(v) != len || !sl_http_valid_value(v, len))
		luaL_error(L, "the value for header '%s' has control characters, CR/LF or "
			      "surrounding spaces", name);
	if (sl_http_managed(name))
		luaL_error(L, "header '%s' is managed by sluice", name);
	return v;
}

static int hdrs_get(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);
	const char *name = luaL_checkstring(L, 2);
	struct sl_http_msg *m = hdrs_msg(L, h, 0);
	luaL_Buffer b;
	int n = 0;

	luaL_buffinit(L, &b);
	for (size_t i = 0; i < m->nh; i++) {
		if (strcasecmp(m->h[i].name, name))
			continue;
		if (n++)
			luaL_addstring(&b, ", ");
		luaL_addstring(&b, m->h[i].value);
	}
	if (!n) {
		lua_pushnil(L);
		return 1;
	}
	luaL_pushresult(&b);
	return 1;
}

static int hdrs_get_all(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);
	const char *name = luaL_checkstring(L, 2);
	struct sl_http_msg *m = hdrs_msg(L, h, 0);
	int n = 0;

	lua_newtable(L);
	for (size_t i = 0; i < m->nh; i++) {
		if (strcasecmp(m->h[i].name, name))
			continue;
		lua_pushstring(L, m->h[i].value);
		lua_rawseti(L, -2, ++n);
	}
	return 1;
}

static int hdrs_has(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);

	lua_pushboolean(L, sl_http_get(hdrs_msg(L, h, 0), luaL_checkstring(L, 2)) != NULL);
	return 1;
}

static void hdrs_check(lua_State *L, int r)
{
	if (r == -E2BIG)
		luaL_error(L, "too many headers");
	if (r)
		luaL_error(L, "not enough memory");
}

static int hdrs_set(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);
	const char *name = check_name(L, 2);
	const char *v = check_value(L, 3, name);

	hdrs_check(L, sl_http_set(hdrs_msg(L, h, 1), name, v));
	return 0;
}

static int hdrs_add(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);
	const char *name = check_name(L, 2);
	const char *v = check_value(L, 3, name);

	hdrs_check(L, sl_http_add(hdrs_msg(L, h, 1), name, v));
	return 0;
}

static int hdrs_delete(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, 1, MT_HDRS);
	const char *name = check_name(L, 2);

	if (sl_http_managed(name))
		luaL_error(L, "header '%s' is managed by sluice", name);
	hdrs_check(L, sl_http_set(hdrs_msg(L, h, 1), name, NULL));
	return 0;
}

static int hdrs_next(lua_State *L)
{
	struct lhdrs *h = luaL_checkudata(L, lua_upvalueindex(1), MT_HDRS);
	struct sl_http_msg *m = hdrs_msg(L, h, 0);
	lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
	char name[257];
	size_t n;

	if ((size_t)i >= m->nh)
		return 0;
	lua_pushinteger(L, i + 1);
	lua_replace(L, lua_upvalueindex(2));
	n = snprintf(name, sizeof(name), "%s", m->h[i].name);
	for (size_t k = 0; k < n && k < sizeof(name); k++)
		name[k] = (char)tolower((unsigned char)name[k]);
	lua_pushstring(L, name);
	lua_pushstring(L, m->h[i].value);
	return 2;
}

/* for name, value in req.headers:pairs() (or pairs(req.headers)): every header line, names
 * in lower case, in order; a name given twice comes twice. */
static int hdrs_pairs(lua_State *L)
{
	luaL_checkudata(L, 1, MT_HDRS);
	lua_pushvalue(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, hdrs_next, 2);
	return 1;
}

static int hdrs_index(lua_State *L)
{
	luaL_checkudata(L, 1, MT_HDRS);
	luaL_getmetafield(L, 1, "methods");
	lua_getfield(L, -1, luaL_checkstring(L, 2));
	return 1;
}

/* ---- Request ---- */

static int req_text_k(lua_State *L, int status, lua_KContext k)
{
	struct lreq *r = running_req(L);
	const char *body;
	size_t len;

	(void)status;
	(void)k;
	if (!r || !r->x)
		return luaL_error(L, "the request has ended");
	r->waiting = W_NONE;
	body = sl_px_x_body(r->x, &len);
	lua_pushlstring(L, body, len);
	return 1;
}

static int req_text(lua_State *L)
{
	struct lreq *r = check_req(L, 1);
	int rc;

	check_own(L, r, "req:text()");
	rc = sl_px_x_read_body(r->x, r->lua->o.body_max);
	if (rc == -EALREADY)
		return luaL_error(L, "req:text(): the body streamed upstream already (read it "
				     "before fetch)");
	if (rc < 0)
		return luaL_error(L, "req:text(): %s", strerror(-rc));
	if (rc == 1)
		return req_text_k(L, LUA_OK, 0);
	r->waiting = W_BODY;
	return lua_yieldk(L, 0, 0, req_text_k);
}

static void push_dst(lua_State *L, const struct sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;

		inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
		lua_pushfstring(L, "%s:%d", ip, ntohs(s->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const void *)sa;

		inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
		lua_pushfstring(L, "[%s]:%d", ip, ntohs(s->sin6_port));
	}
}

static int req_index(lua_State *L)
{
	struct lreq *r = check_req(L, 1);
	const char *k = luaL_checkstring(L, 2);
	struct sl_px_info info;

	sl_px_x_info(r->x, &info);
	if (!strcmp(k, "method"))
		lua_pushstring(L, sl_px_x_req(r->x)->method);
	else if (!strcmp(k, "path"))
		lua_pushstring(L, sl_px_x_path(r->x));
	else if (!strcmp(k, "host"))
		lua_pushstring(L, info.host);
	else if (!strcmp(k, "scheme"))
		lua_pushstring(L, info.scheme);
	else if (!strcmp(k, "url"))
		lua_pushfstring(L, "%s://%s%s", info.scheme, info.host, sl_px_x_path(r->x));
	else if (!strcmp(k, "headers"))
		push_headers(L, 1, H_REQ, r, NULL);
	else if (!strcmp(k, "text"))
		lua_pushcfunction(L, req_text);
	else
		lua_pushnil(L);
	return 1;
}

/* A path from a url naming this request's own scheme and host, or a path. */
static const char *url_path(lua_State *L, struct lreq *r, const char *url)
{
	struct sl_px_info info;
	size_t n;

	if (url[0] == '/')
		return url;
	sl_px_x_info(r->x, &info);
	n = strlen(info.scheme);
	if (strncmp(url, info.scheme, n) || strncmp(url + n, "://", 3))
		luaL_error(L, "url '%s': another scheme than the request's (%s)", url, info.scheme);
	url += n + 3;
	n = strlen(info.host);
	if (strncasecmp(url, info.host, n) || (url[n] && url[n] != '/'))
		luaL_error(L, "url: fetch goes to the request's own host (%s); a handler cannot "
			      "send it elsewhere", info.host);
	return url[n] ? url + n : "/";
}

static void set_field(lua_State *L, struct lreq *r, const char *k, int vidx)
{
	int rc = 0;

	if (r->fetched)
		luaL_error(L, "req.%s: the request has been sent upstream already", k);
	if (!strcmp(k, "method")) {
		rc = sl_px_x_set_method(r->x, luaL_checkstring(L, vidx));
		if (rc == -EINVAL)
			luaL_error(L, "req.method: '%s' is not a method sluice forwards",
				   lua_tostring(L, vidx));
	} else if (!strcmp(k, "path") || !strcmp(k, "url")) {
		rc = sl_px_x_set_path(r->x, url_path(L, r, luaL_checkstring(L, vidx)));
		if (rc == -EINVAL)
			luaL_error(L, "req.%s: '%s' is not an origin-form path", k,
				   lua_tostring(L, vidx));
	} else if (!strcmp(k, "body")) {
		size_t len = 0;
		const char *b = lua_isnil(L, vidx) ? "" : luaL_checklstring(L, vidx, &len);

		rc = sl_px_x_set_body(r->x, b, len);
	} else {
		luaL_error(L, "req.%s cannot be set (method, path, url and body can)", k);
	}
	if (rc)
		luaL_error(L, "req.%s: %s", k, strerror(-rc));
}

static int req_newindex(lua_State *L)
{
	struct lreq *r = check_req(L, 1);

	set_field(L, r, luaL_checkstring(L, 2), 3);
	return 0;
}

/* ---- Response ---- */

static struct lresp *check_resp(lua_State *L, int idx)
{
	struct lresp *p = luaL_checkudata(L, idx, MT_RESP);

	if (!p->local && !p->r->x)
		luaL_error(L, "the request has ended");
	return p;
}

static struct sl_http_msg *fetched_msg(lua_State *L, struct lresp *p)
{
	struct sl_http_msg *m = sl_px_x_resp(p->r->x);

	if (!m)
		luaL_error(L, "the response has been sent already");
	return m;
}

static int resp_text_k(lua_State *L, int status, lua_KContext k)
{
	struct lreq *r = running_req(L);
	const char *body;
	size_t len;

	(void)status;
	(void)k;
	if (!r || !r->x)
		return luaL_error(L, "the request has ended");
	r->waiting = W_NONE;
	body = sl_px_x_resp_body(r->x, &len);
	lua_pushlstring(L, body, len);
	return 1;
}

static int resp_text(lua_State *L)
{
	struct lresp *p = check_resp(L, 1);
	int rc;

	if (p->local) {
		if (lua_getiuservalue(L, 1, 1) != LUA_TSTRING) {
			lua_pop(L, 1);
			lua_pushliteral(L, "");
		}
		return 1;
	}
	check_own(L, p->r, "resp:text()");
	fetched_msg(L, p);
	rc = sl_px_x_read_resp_body(p->r->x, p->r->lua->o.resp_body_max);
	if (rc < 0)
		return luaL_error(L, "resp:text(): %s", strerror(-rc));
	if (rc == 1)
		return resp_text_k(L, LUA_OK, 0);
	p->r->waiting = W_RESP_BODY;
	return lua_yieldk(L, 0, 0, resp_text_k);
}

static int resp_index(lua_State *L)
{
	struct lresp *p = check_resp(L, 1);
	const char *k = luaL_checkstring(L, 2);
	int status = p->local ? p->status : fetched_msg(L, p)->status;

	if (!strcmp(k, "status"))
		lua_pushinteger(L, status);
	else if (!strcmp(k, "ok"))
		lua_pushboolean(L, status >= 200 && status < 300);
	else if (!strcmp(k, "statusText"))
		lua_pushstring(L, sl_http_reason(status));
	else if (!strcmp(k, "headers"))
		push_headers(L, 1, p->local ? H_LOCAL : H_RESP, p->r, p);
	else if (!strcmp(k, "text"))
		lua_pushcfunction(L, resp_text);
	else
		lua_pushnil(L);
	return 1;
}

static int check_status(lua_State *L, int idx)
{
	lua_Integer s = luaL_checkinteger(L, idx);

	if (s < 200 || s > 599)
		luaL_error(L, "status %d: a handler answers with 200 to 599", (int)s);
	return (int)s;
}

static int resp_newindex(lua_State *L)
{
	struct lresp *p = check_resp(L, 1);
	const char *k = luaL_checkstring(L, 2);

	if (!strcmp(k, "status")) {
		int s = check_status(L, 3);

		if (p->local) {
			p->status = s;
		} else {
			struct sl_http_msg *m = fetched_msg(L, p);

			m->status = s;
			free(m->reason);
			m->reason = NULL;
		}
	} else if (!strcmp(k, "body")) {
		size_t len = 0;
		const char *b = lua_isnil(L, 3) ? "" : luaL_checklstring(L, 3, &len);

		if (p->local) {
			lua_pushvalue(L, 3);
			lua_setiuservalue(L, 1, 1);
		} else {
			fetched_msg(L, p);
			if (sl_px_x_set_resp_body(p->r->x, b, len))
				luaL_error(L, "resp.body cannot be set now");
		}
	} else {
		luaL_error(L, "resp.%s cannot be set (status and body can)", k);
	}
	return 0;
}

static int resp_gc(lua_State *L)
{
	struct lresp *p = luaL_checkudata(L, 1, MT_RESP);

	if (p->local)
		sl_http_msg_free(&p->h);
	return 0;
}

/* Headers from a table { name = value | { values } } or a Headers object, into @m; with
 * @replace, each name given replaces that header of @m. */
static void headers_from(lua_State *L, int idx, struct sl_http_msg *m, int replace)
{
	idx = lua_absindex(L, idx);
	if (luaL_testudata(L, idx, MT_HDRS)) {
		struct sl_http_msg *src = hdrs_msg(L, lua_touserdata(L, idx), 0);

		for (size_t i = 0; i < src->nh; i++)
			if (!sl_http_managed(src->h[i].name))
				hdrs_check(L, sl_http_add(m, src->h[i].name, src->h[i].value));
		return;
	}
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *name;

		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "headers: names must be strings");
		name = check_name(L, -2);
		if (replace)
			hdrs_check(L, sl_http_set(m, name, NULL));
		if (lua_istable(L, -1)) {
			for (lua_Integer i = 1; lua_geti(L, -1, i) != LUA_TNIL; i++) {
				hdrs_check(L, sl_http_add(m, name, check_value(L, -1, name)));
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		} else {
			hdrs_check(L, sl_http_add(m, name, check_value(L, -1, name)));
		}
		lua_pop(L, 1);
	}
}

/* Response.new(body [, { status = 200, headers = {...} }]) */
static int response_new(lua_State *L)
{
	struct lresp *p;

	lua_settop(L, 2); /* the new userdata goes to 3 */
	if (!lua_isnoneornil(L, 1) && !lua_isstring(L, 1))
		return luaL_error(L, "Response.new: the body is a string or nil");
	p = lua_newuserdatauv(L, sizeof(*p), 2);
	memset(p, 0, sizeof(*p));
	p->local = 1;
	p->status = 200;
	sl_http_msg_init(&p->h);
	luaL_setmetatable(L, MT_RESP);
	if (lua_isstring(L, 1)) {
		lua_pushvalue(L, 1);
		lua_tolstring(L, -1, NULL); /* numbers become their text */
		lua_setiuservalue(L, -2, 1);
	}
	if (lua_istable(L, 2)) {
		if (lua_getfield(L, 2, "status") != LUA_TNIL)
			p->status = check_status(L, -1);
		lua_pop(L, 1);
		if (lua_getfield(L, 2, "headers") != LUA_TNIL)
			headers_from(L, -1, &p->h, 0);
		lua_pop(L, 1);
	} else if (!lua_isnoneornil(L, 2)) {
		return luaL_error(L, "Response.new: the second argument is { status=, headers= }");
	}
	return 1;
}

/* ---- fetch ---- */

static int fetch_k(lua_State *L, int status, lua_KContext k)
{
	struct lreq *r = running_req(L);
	struct lresp *p;

	(void)status;
	(void)k;
	if (!r || !r->x)
		return luaL_error(L, "the request has ended");
	r->waiting = W_NONE;
	p = lua_newuserdatauv(L, sizeof(*p), 2);
	memset(p, 0, sizeof(*p));
	p->r = r;
	luaL_setmetatable(L, MT_RESP);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->self_ref);
	lua_setiuservalue(L, -2, 1);
	return 1;
}

/* fetch(req [, { method=, path=, url=, headers=, body= }]): the request goes to its original
 * destination (the address the kernel allowed, TLS verified for its name); the coroutine
 * waits for the response head. */
static int l_fetch(lua_State *L)
{
	struct lreq *r = luaL_testudata(L, 1, MT_REQ);
	int rc;

	if (!r)
		return luaL_error(L, "fetch(req [, overrides]) takes the intercepted request");
	if (!r->x)
		return luaL_error(L, "the request has ended");
	check_own(L, r, "fetch()");
	if (r->fetched)
		return luaL_error(L, "fetch: one upstream request per intercepted request");
	if (lua_istable(L, 2)) {
		static const char *const fields[] = { "method", "url", "path", "body" };

		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
			if (lua_getfield(L, 2, fields[i]) != LUA_TNIL)
				set_field(L, r, fields[i], lua_gettop(L));
			lua_pop(L, 1);
		}
		if (lua_getfield(L, 2, "headers") != LUA_TNIL) {
			luaL_checktype(L, -1, LUA_TTABLE);
			headers_from(L, -1, sl_px_x_req(r->x), 1); /* each named replaces */
		}
		lua_pop(L, 1);
	} else if (!lua_isnoneornil(L, 2)) {
		return luaL_error(L, "fetch: overrides are a table");
	}
	rc = sl_px_x_fetch(r->x);
	if (rc)
		return luaL_error(L, "fetch: the upstream connection could not start: %s",
				  strerror(-rc));
	r->fetched = 1;
	r->waiting = W_FETCH;
	return lua_yieldk(L, 0, 0, fetch_k);
}

/* ---- ctx, env, KV, sluice.log ---- */

static int ctx_index(lua_State *L)
{
	struct lreq *r = *(struct lreq **)luaL_checkudata(L, 1, MT_CTX);
	const char *k = luaL_checkstring(L, 2);
	struct sl_px_info info;

	if (!r->x)
		return luaL_error(L, "the request has ended");
	sl_px_x_info(r->x, &info);
	if (!strcmp(k, "containerId"))
		lua_pushstring(L, info.sandbox);
	else if (!strcmp(k, "params"))
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->lua->params_ref);
	else if (!strcmp(k, "handler") && r->lua->active[0])
		lua_pushstring(L, r->lua->active);
	else if (!strcmp(k, "pid"))
		lua_pushinteger(L, info.pid);
	else if (!strcmp(k, "comm"))
		lua_pushstring(L, info.comm);
	else if (!strcmp(k, "dst"))
		push_dst(L, info.dst);
	else if (!strcmp(k, "sni"))
		lua_pushstring(L, info.sni);
	else
		lua_pushnil(L);
	return 1;
}

static struct sl_lua *host_of(lua_State *L)
{
	struct sl_lua *lua;

	lua_getfield(L, LUA_REGISTRYINDEX, "sluice.host");
	lua = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return lua;
}

static int kv_get(lua_State *L)
{
	const char *ns = luaL_checkudata(L, 1, MT_KV);
	size_t klen;
	const char *key = luaL_checklstring(L, 2, &klen);
	struct sl_lua *lua = host_of(L);
	char *v = NULL;
	size_t len = 0;
	int rc;

	if (strlen(key) != klen) {
		lua_pushnil(L); /* no key holds a NUL */
		return 1;
	}

	if (!lua->o.kv)
		return luaL_error(L, "%s:get(): sluiced has no KV store", ns);
	if (!sl_kv_key_ok(key)) {
		lua_pushnil(L);
		return 1;
	}
	rc = sl_kv_get(lua->o.kv, ns, key, &v, &len);
	if (rc == -ENOENT) {
		lua_pushnil(L);
		return 1;
	}
	if (rc)
		return luaL_error(L, "%s:get(): %s", ns, strerror(-rc));
	secret_read(L, v, len);
	lua_pushlstring(L, v, len);
	OPENSSL_cleanse(v, len);
	free(v);
	return 1;
}

/* env.NAME: the --env-file secret NAME, or else the KV namespace NAME. */
static int env_index(lua_State *L)
{
	struct sl_lua *lua = host_of(L);
	const char *k = luaL_checkstring(L, 2);
	const char *v = lua->o.env ? sl_env_get(lua->o.env, k) : NULL;
	char *ns;

	if (v) {
		secret_read(L, v, strlen(v));
		lua_pushstring(L, v);
		return 1;
	}
	if (!sl_kv_ns_ok(k)) {
		lua_pushnil(L);
		return 1;
	}
	ns = lua_newuserdatauv(L, strlen(k) + 1, 0);
	memcpy(ns, k, strlen(k) + 1);
	luaL_setmetatable(L, MT_KV);
	return 1;
}

static int env_newindex(lua_State *L)
{
	return luaL_error(L, "env is read-only");
}

/* sluice.log(...): one event line with the handler's words, secrets redacted. */
static int l_log(lua_State *L)
{
	struct sl_lua *lua = host_of(L);
	struct lreq *r = running_req(L);
	int n = lua_gettop(L);
	char msg[LOG_MAX];
	size_t len = 0;
	struct sl_jw w;

	msg[0] = 0;
	for (int i = 1; i <= n && len < sizeof(msg) - 1; i++) {
		const char *s = luaL_tolstring(L, i, NULL);

		len += snprintf(msg + len, sizeof(msg) - len, "%s%s", i > 1 ? " " : "", s);
		lua_pop(L, 1);
	}
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	redact(lua, r, msg);
	if (!lua->o.events)
		return 0;
	sl_jw_begin(&w);
	sl_jw_str(&w, "type", "log");
	sl_jw_str(&w, "sandbox", lua->sandbox);
	if (r && r->x) {
		struct sl_px_info info;

		sl_px_x_info(r->x, &info);
		sl_jw_str(&w, "handler", r->handler);
		sl_jw_str(&w, "host", info.host);
		sl_jw_int(&w, "pid", info.pid);
	}
	sl_jw_str(&w, "message", msg);
	sl_jw_publish(&w, lua->o.events, lua->sandbox);
	return 0;
}

static void new_class(lua_State *L, const char *name, lua_CFunction index,
		      lua_CFunction newindex, lua_CFunction gc)
{
	luaL_newmetatable(L, name);
	lua_pushcfunction(L, index);
	lua_setfield(L, -2, "__index");
	if (newindex) {
		lua_pushcfunction(L, newindex);
		lua_setfield(L, -2, "__newindex");
	}
	if (gc) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable"); /* getmetatable() reveals nothing */
	lua_pop(L, 1);
}

static int kv_index(lua_State *L)
{
	const char *k = luaL_checkstring(L, 2);

	if (!strcmp(k, "get")) {
		lua_pushcfunction(L, kv_get);
		return 1;
	}
	lua_pushnil(L);
	return 1;
}

/* The API handlers see: Response, fetch, sluice.log, and the classes behind req/ctx/env. */
static int open_api(lua_State *L)
{
	static const luaL_Reg hdrs_methods[] = {
		{ "get", hdrs_get },	   { "getAll", hdrs_get_all }, { "has", hdrs_has },
		{ "set", hdrs_set },	   { "add", hdrs_add },	       { "delete", hdrs_delete },
		{ "pairs", hdrs_pairs }, { NULL, NULL },
	};
	struct sl_lua *lua = lua_touserdata(L, 1);

	lua_pushlightuserdata(L, lua);
	lua_setfield(L, LUA_REGISTRYINDEX, "sluice.host");
	new_class(L, MT_REQ, req_index, req_newindex, NULL);
	new_class(L, MT_RESP, resp_index, resp_newindex, resp_gc);
	new_class(L, MT_CTX, ctx_index, NULL, NULL);
	new_class(L, MT_KV, kv_index, NULL, NULL);
	luaL_newmetatable(L, MT_HDRS);
	lua_pushcfunction(L, hdrs_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, hdrs_pairs);
	lua_setfield(L, -2, "__pairs");
	luaL_newlib(L, hdrs_methods);
	lua_setfield(L, -2, "methods");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);

	lua_newtable(L); /* Response */
	lua_pushcfunction(L, response_new);
	lua_setfield(L, -2, "new");
	lua_setglobal(L, "Response");
	lua_pushcfunction(L, l_fetch);
	lua_setglobal(L, "fetch");
	lua_newtable(L); /* sluice */
	lua_pushcfunction(L, l_log);
	lua_setfield(L, -2, "log");
	lua_setglobal(L, "sluice");

	lua_newtable(L); /* env: reads go through env_index, so secrets read are known */
	lua_newtable(L);
	lua_pushcfunction(L, env_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, env_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_setmetatable(L, -2);
	lua->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_newtable(L);
	lua->params_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

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
				sl_errf(err, errlen, "outboundByHost: every entry is "
						    "[\"host\"] = function(req, env, ctx)");
				return -EINVAL;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	t = lua_getfield(L, -1, "outboundHandlers");
	if (t != LUA_TNIL && t != LUA_TTABLE) {
		sl_errf(err, errlen, "outboundHandlers must be a table of name = { egress, handle }");
		return -EINVAL;
	}
	if (t == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
			int e, h;

			if (!name || !lua_istable(L, -1)) {
				sl_errf(err, errlen, "outboundHandlers: every entry is "
						    "name = { egress = ..., handle = function }");
				return -EINVAL;
			}
			h = lua_getfield(L, -1, "handle");
			e = lua_getfield(L, -2, "egress");
			lua_pop(L, 2);
			if (h != LUA_TFUNCTION && h != LUA_TNIL) {
				sl_errf(err, errlen, "outboundHandlers.%s.handle must be a function",
					name);
				return -EINVAL;
			}
			if (e != LUA_TTABLE && e != LUA_TFUNCTION && e != LUA_TNIL) {
				sl_errf(err, errlen, "outboundHandlers.%s.egress must be a table or "
						    "a function(params)", name);
				return -EINVAL;
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return 0;
}

static void lua_free(struct sl_lua *lua)
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
	char name[256];
	lua_State *L;
	int r;

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
	lua->lim.insn_max = 50000000L; /* the policy's top level: generous, but bounded */
	lua->policy_ref = LUA_NOREF;
	L = lua->L = sl_lua_state_new(&lua->lim);
	if (!L) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	lua_pushcfunction(L, open_api);
	lua_pushlightuserdata(L, lua);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	lua_pushcfunction(L, sl_lua_traceback);
	snprintf(name, sizeof(name), "@%s", chunkname);
	r = luaL_loadbufferx(L, src, len, name, "t");
	if (r == LUA_OK)
		r = lua_pcall(L, 0, 1, 1);
	if (r != LUA_OK) {
		sl_lua_first_line(L, err, errlen);
		goto fail;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	if (sl_policy_read(L, p, err, errlen) || check_shape(L, err, errlen)) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s: %s", chunkname, err);
		sl_errf(err, errlen, "%s", msg);
		goto fail;
	}
	lua->has_outbound = lua_getfield(L, -1, "outbound") == LUA_TFUNCTION;
	lua_pop(L, 1);
	if (lua_getfield(L, -1, "outboundByHost") == LUA_TTABLE) {
		lua_pushnil(L);
		lua->has_by_host = lua_next(L, -2) != 0;
		if (lua->has_by_host)
			lua_pop(L, 2);
	}
	lua_pop(L, 1);
	lua->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_settop(L, 0);
	*policy = p;
	return lua;
fail:
	sl_policy_free(p);
	lua_free(lua);
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
		lua_free(lua);
}

int sl_lua_has_handlers(const struct sl_lua *lua)
{
	return lua->has_outbound || lua->has_by_host || lua->active[0];
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

static void req_release(struct lreq *r)
{
	struct sl_lua *lua = r->lua;
	lua_State *L = lua->L;

	r->x = NULL;
	if (r->co) {
		/* Closes what the coroutine holds (to-be-closed variables) and lets it go. */
		lua_resetthread(r->co);
		*(struct lreq **)lua_getextraspace(r->co) = NULL;
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
	struct lreq *r = lua_touserdata(L, 3);
	const char *msg = lua_tostring(co, -1);
	char *tb;

	luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
	tb = strdup(lua_tostring(L, -1));
	if (tb) {
		redact(r->lua, r, tb);
		sl_debug("sandbox %s: handler %s failed: %s", r->lua->sandbox, r->handler, tb);
		free(tb);
	}
	snprintf(out, 400, "handler %s failed: %s", r->handler,
		 msg ? msg : "(error object is not a string)");
	if (strchr(out, '\n'))
		*strchr(out, '\n') = 0;
	redact(r->lua, r, out);
	return 0;
}

static void finish_error(struct lreq *r, int status)
{
	lua_State *L = r->lua->L;
	char why[400];

	if (status == LUA_ERRMEM) {
		/* Nothing more can be allocated now: no traceback. What the handler held is
		 * garbage once its coroutine is released. */
		snprintf(why, sizeof(why), "handler %s failed: not enough memory (its policy's "
					   "Lua state may use %zu MiB)", r->handler,
			 r->lua->o.mem_max >> 20);
		sl_px_x_fail(r->x, 502, why);
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
	sl_px_x_fail(r->x, 502, why);
}

/* The handler returned: what it returned is the answer. */
static void finish_ok(struct lreq *r, int nres)
{
	lua_State *co = r->co;
	struct lresp *p = nres ? luaL_testudata(co, -nres, MT_RESP) : NULL;
	char why[200];

	if (!p) {
		snprintf(why, sizeof(why), "handler %s returned %s, not a Response", r->handler,
			 nres ? luaL_typename(co, -nres) : "nothing");
		sl_px_x_fail(r->x, 502, why);
		return;
	}
	if (!p->local) {
		if (p->r != r || !sl_px_x_resp(r->x)) {
			sl_px_x_fail(r->x, 502, "the handler returned a response it did not fetch");
			return;
		}
		sl_px_x_send_fetched(r->x);
		return;
	}
	{
		size_t len = 0;
		const char *body = NULL;

		if (lua_getiuservalue(co, -nres, 1) == LUA_TSTRING)
			body = lua_tolstring(co, -1, &len);
		sl_px_x_send(r->x, p->status, &p->h, body, len);
		lua_pop(co, 1);
	}
}

/* Runs the handler until it returns, fails or waits. @r holds a reference on its state
 * until req_release(), so a policy replaced meanwhile stays alive for it. */
static void run(struct lreq *r, int nargs)
{
	int nres = 0, status;

	status = lua_resume(r->co, r->lua->L, nargs, &nres);
	if (status == LUA_YIELD && r->waiting != W_NONE)
		return;
	if (status == LUA_YIELD)
		sl_px_x_fail(r->x, 502, "the handler yielded outside fetch() or text()");
	else if (status == LUA_OK)
		finish_ok(r, nres);
	else
		finish_error(r, status);
	req_release(r);
}

static void on_resume(void *hctx)
{
	struct lreq *r = hctx;

	if (r->x)
		run(r, 0);
}

static void on_abort(void *hctx, const char *why)
{
	struct lreq *r = hctx;

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
	struct lreq *r;
	const char *host;
};

/* Finds the handler for the request and sets up its coroutine: (function, req, env, ctx) on
 * the coroutine's stack. Protected (allocates); returns 0 with nothing to run. */
static int start_request(lua_State *L)
{
	struct start *s = lua_touserdata(L, 1);
	struct sl_lua *lua = s->lua;
	char handler[96] = "";
	struct lreq *r, **ctx;
	lua_State *co;

	lua_rawgeti(L, LUA_REGISTRYINDEX, lua->policy_ref);
	if (lua->active[0]) {
		lua_getfield(L, -1, "outboundHandlers");
		lua_getfield(L, -1, lua->active);
		lua_getfield(L, -1, "handle");
		snprintf(handler, sizeof(handler), "outboundHandlers.%s", lua->active);
	} else {
		if (lua->has_by_host) {
			lua_getfield(L, -1, "outboundByHost");
			lua_getfield(L, -1, s->host);
			snprintf(handler, sizeof(handler), "outboundByHost[%s]", s->host);
		}
		if (!lua_isfunction(L, -1) && lua->has_outbound) {
			lua_getfield(L, 2, "outbound");
			snprintf(handler, sizeof(handler), "outbound");
		}
	}
	if (!lua_isfunction(L, -1)) {
		lua_pushboolean(L, 0);
		return 1;
	}
	r = lua_newuserdatauv(L, sizeof(*r), 2);
	memset(r, 0, sizeof(*r));
	r->co_ref = r->self_ref = LUA_NOREF;
	luaL_setmetatable(L, MT_REQ);
	snprintf(r->handler, sizeof(r->handler), "%s", handler);
	co = lua_newthread(L);
	r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	r->co = co;
	*(struct lreq **)lua_getextraspace(co) = r;
	lua_pushvalue(L, -1);
	r->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	r->lua = lua;
	r->x = s->x;
	sl_lua_ref(lua);
	s->r = r;
	/* function, req, env, ctx */
	lua_pushvalue(L, -2);
	lua_pushvalue(L, -2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, lua->env_ref);
	ctx = lua_newuserdatauv(L, sizeof(*ctx), 1);
	*ctx = r;
	luaL_setmetatable(L, MT_CTX);
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
	sl_px_x_info(x, &info);
	s.host = info.host;
	lua_settop(L, 0);
	lua_pushcfunction(L, start_request);
	lua_pushlightuserdata(L, &s);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		/* Out of memory setting up: this request fails, nothing else. */
		lua_settop(L, 0);
		if (s.r)
			req_release(s.r);
		sl_px_x_fail(x, 502, "the handler could not start: the policy's Lua state is out "
				     "of memory");
		return 0;
	}
	ok = lua_toboolean(L, -1);
	lua_settop(L, 0);
	if (!ok)
		return 1; /* no handler for this host: forwarded unchanged */
	sl_px_x_attach(x, &px_handler, s.r);
	sl_px_x_set_handler(x, s.r->handler);
	for (size_t i = 0; i < lua->nload; i++)
		sl_px_x_mask(x, lua->load_secrets[i].s, lua->load_secrets[i].n);
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
		json_object_foreach (j, k, v) {
			push_json(L, v, depth + 1);
			lua_setfield(L, -2, k);
		}
		break;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *v;

		lua_createtable(L, (int)json_array_size(j), 0);
		json_array_foreach (j, i, v) {
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
	t = lua_getfield(L, -2, "egress");
	if (t == LUA_TFUNCTION) {
		lua_pushvalue(L, -2);
		lua_call(L, 1, 1); /* raises: the caller's pcall reports it */
		t = lua_type(L, -1);
		if (t != LUA_TTABLE && t != LUA_TNIL) {
			sl_errf(e->err, e->errlen, "outboundHandlers.%s.egress(params) returned %s, "
						   "not a table", e->name, lua_typename(L, t));
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
	lua_pop(L, 1);
	if (e->set_active) {
		lua_rawseti(L, LUA_REGISTRYINDEX, e->lua->params_ref); /* the params table */
		snprintf(e->lua->active, sizeof(e->lua->active), "%s", e->name);
	}
	lua_pushinteger(L, 0);
	return 1;
}

static int handler_run(struct sl_lua *lua, const char *name, const char *params_json,
		       struct sl_policy **policy, int set_active, char *err, size_t errlen)
{
	struct egress_call e = { .lua = lua, .name = name, .set_active = set_active,
				 .err = err, .errlen = errlen };
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
			sl_errf(err, errlen, "params must be a JSON object%s%s", e.params ? "" : ": ",
				e.params ? "" : jerr.text);
			json_decref(e.params);
			return -EINVAL;
		}
	}
	lua_settop(L, 0);
	lua_pushcfunction(L, sl_lua_traceback);
	lua_pushcfunction(L, handler_call);
	lua_pushlightuserdata(L, &e);
	lua->lim.insns = 0;
	r = lua_pcall(L, 1, 1, 1);
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
