// SPDX-License-Identifier: MIT
/*
 * The API handlers see (README.md, "A policy"): req, Headers, Response, fetch, ctx, env
 * with its KV namespaces, and sluice.log. Objects that stand for a request in flight refer
 * to it through the proxy (sl_px_x_*): a header set here is set on the head the proxy will
 * send. Whatever a policy keeps after its request ended fails with "the request has ended"
 * instead of touching freed memory. req:text(), fetch() and resp:text() yield with a
 * continuation: the proxy resumes the coroutine when the bytes are there (lua_host.c).
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

#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>

#include "store/envfile.h"
#include "core/events.h"
#include "http/http.h"
#include "store/kv.h"
#include "lua/lua_priv.h"
#include "proxy/proxy.h"

#define LOG_MAX 1024

static void *check_ud(lua_State *L, int idx, uint32_t tag, const char *what)
{
	void *p = sl_lua_to_ud(L, idx, tag);

	if (!p)
		luaL_typeerror(L, idx, what);
	return p;
}

/* ---- secrets ---- */

/* A secret was read: the response must not carry it back. */
static void secret_read(lua_State *L, const char *v, size_t n)
{
	struct sl_lua_req *r = sl_lua_running(L);
	struct sl_lua *lua;

	if (n < 4)
		return;
	if (r) {
		if (r->x)
			r->lua->o.xchg->mask(r->x, v, n);
		return;
	}
	/* At load (a value kept in an upvalue): masked in every response of this policy. */
	lua_getfield(L, LUA_REGISTRYINDEX, "sluice.host");
	lua = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!lua || lua->nload == SL_LUA_SECRETS_MAX)
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
void sl_lua_redact(struct sl_lua *lua, struct sl_lua_req *r, char *s)
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
		r->lua->o.xchg->redact(r->x, s, len);
}

/* ---- requests ---- */

static struct sl_lua_req *check_req(lua_State *L, int idx)
{
	struct sl_lua_req *r = check_ud(L, idx, SL_LUA_TAG_REQ, "request");

	if (!r->x)
		luaL_error(L, "the request has ended");
	return r;
}

static void check_own(lua_State *L, struct sl_lua_req *r, const char *what)
{
	if (L != r->co)
		luaL_error(L, "%s must be called from the handler itself, not a coroutine it made",
			   what);
}

static struct sl_http_msg *hdrs_msg(lua_State *L, struct sl_lua_hdrs *h, int writing)
{
	struct sl_http_msg *m;

	if (h->of == SL_LUA_H_LOCAL)
		return &h->resp->h;
	if (!h->r->x)
		luaL_error(L, "the request has ended");
	if (h->of == SL_LUA_H_REQ) {
		if (writing && h->r->fetched)
			luaL_error(L, "the request has been sent upstream already");
		return h->r->lua->o.xchg->req(h->r->x);
	}
	m = h->r->lua->o.xchg->resp(h->r->x);
	if (!m)
		luaL_error(L, "the response has been sent already");
	return m;
}

/* Pushes a Headers object for @owner (at @owner_idx), remembered in its user value 2. */
static void push_headers(lua_State *L, int owner_idx, enum sl_lua_hdrs_of of, struct sl_lua_req *r,
			 struct sl_lua_resp *resp)
{
	struct sl_lua_hdrs *h;

	owner_idx = lua_absindex(L, owner_idx);
	if (lua_getiuservalue(L, owner_idx, 2) == LUA_TUSERDATA)
		return;
	lua_pop(L, 1);
	h = lua_newuserdatauv(L, sizeof(*h), 1);
	h->tag = SL_LUA_TAG_HDRS;
	h->of = of;
	h->r = r;
	h->resp = resp;
	luaL_setmetatable(L, SL_LUA_MT_HDRS);
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
		luaL_error(L,
			   "the value for header '%s' has control characters, CR/LF or "
			   "surrounding spaces",
			   name);
	if (sl_http_managed(name))
		luaL_error(L, "header '%s' is managed by sluice", name);
	return v;
}

static int hdrs_get(lua_State *L)
{
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
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
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
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
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");

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
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
	const char *name = check_name(L, 2);
	const char *v = check_value(L, 3, name);

	hdrs_check(L, sl_http_set(hdrs_msg(L, h, 1), name, v));
	return 0;
}

static int hdrs_add(lua_State *L)
{
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
	const char *name = check_name(L, 2);
	const char *v = check_value(L, 3, name);

	hdrs_check(L, sl_http_add(hdrs_msg(L, h, 1), name, v));
	return 0;
}

static int hdrs_delete(lua_State *L)
{
	struct sl_lua_hdrs *h = check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
	const char *name = check_name(L, 2);

	if (sl_http_managed(name))
		luaL_error(L, "header '%s' is managed by sluice", name);
	hdrs_check(L, sl_http_set(hdrs_msg(L, h, 1), name, NULL));
	return 0;
}

static int hdrs_next(lua_State *L)
{
	struct sl_lua_hdrs *h = check_ud(L, lua_upvalueindex(1), SL_LUA_TAG_HDRS, "headers");
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
	check_ud(L, 1, SL_LUA_TAG_HDRS, "headers");
	lua_pushvalue(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, hdrs_next, 2);
	return 1;
}

/* ---- Request ---- */

/* The continuation of req:text() (@k 0) and resp:text() (@k 1): the body the proxy read. */
static int body_k(lua_State *L, int status, lua_KContext k)
{
	struct sl_lua_req *r = sl_lua_running(L);
	const char *body;
	size_t len;

	(void)status;
	if (!r || !r->x)
		return luaL_error(L, "the request has ended");
	r->waiting = SL_LUA_W_NONE;
	body = k ? r->lua->o.xchg->resp_body(r->x, &len) : r->lua->o.xchg->body(r->x, &len);
	lua_pushlstring(L, body, len);
	return 1;
}

static int req_text(lua_State *L)
{
	struct sl_lua_req *r = check_req(L, 1);
	int rc;

	check_own(L, r, "req:text()");
	rc = r->lua->o.xchg->read_body(r->x, r->lua->o.body_max);
	if (rc == -EALREADY)
		return luaL_error(L, "req:text(): the body streamed upstream already (read it "
				     "before fetch)");
	if (rc < 0)
		return luaL_error(L, "req:text(): %s", strerror(-rc));
	if (rc == 1)
		return body_k(L, LUA_OK, 0);
	r->waiting = SL_LUA_W_BODY;
	return lua_yieldk(L, 0, 0, body_k);
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
	struct sl_lua_req *r = check_req(L, 1);
	const char *k = luaL_checkstring(L, 2);
	struct sl_px_info info;

	r->lua->o.xchg->info(r->x, &info);
	if (!strcmp(k, "method"))
		lua_pushstring(L, r->lua->o.xchg->req(r->x)->method);
	else if (!strcmp(k, "path"))
		lua_pushstring(L, r->lua->o.xchg->path(r->x));
	else if (!strcmp(k, "host"))
		lua_pushstring(L, info.host);
	else if (!strcmp(k, "scheme"))
		lua_pushstring(L, info.scheme);
	else if (!strcmp(k, "url"))
		lua_pushfstring(L, "%s://%s%s", info.scheme, info.host, r->lua->o.xchg->path(r->x));
	else if (!strcmp(k, "headers"))
		push_headers(L, 1, SL_LUA_H_REQ, r, NULL);
	else if (!strcmp(k, "text"))
		lua_pushcfunction(L, req_text);
	else
		lua_pushnil(L);
	return 1;
}

/* A path from a url naming this request's own scheme and host, or a path. */
static const char *url_path(lua_State *L, struct sl_lua_req *r, const char *url)
{
	struct sl_px_info info;
	size_t n;

	if (url[0] == '/')
		return url;
	r->lua->o.xchg->info(r->x, &info);
	n = strlen(info.scheme);
	if (strncmp(url, info.scheme, n) || strncmp(url + n, "://", 3))
		luaL_error(L, "url '%s': another scheme than the request's (%s)", url, info.scheme);
	url += n + 3;
	n = strlen(info.host);
	if (strncasecmp(url, info.host, n) || (url[n] && url[n] != '/'))
		luaL_error(L,
			   "url: fetch goes to the request's own host (%s); a handler cannot "
			   "send it elsewhere",
			   info.host);
	return url[n] ? url + n : "/";
}

static void set_field(lua_State *L, struct sl_lua_req *r, const char *k, int vidx)
{
	int rc = 0;

	if (r->fetched)
		luaL_error(L, "req.%s: the request has been sent upstream already", k);
	if (!strcmp(k, "method")) {
		rc = r->lua->o.xchg->set_method(r->x, luaL_checkstring(L, vidx));
		if (rc == -EINVAL)
			luaL_error(L, "req.method: '%s' is not a method sluice forwards",
				   lua_tostring(L, vidx));
	} else if (!strcmp(k, "path") || !strcmp(k, "url")) {
		rc = r->lua->o.xchg->set_path(r->x, url_path(L, r, luaL_checkstring(L, vidx)));
		if (rc == -EINVAL)
			luaL_error(L, "req.%s: '%s' is not an origin-form path", k,
				   lua_tostring(L, vidx));
	} else if (!strcmp(k, "body")) {
		size_t len = 0;
		const char *b = lua_isnil(L, vidx) ? "" : luaL_checklstring(L, vidx, &len);

		rc = r->lua->o.xchg->set_body(r->x, b, len);
	} else {
		luaL_error(L, "req.%s cannot be set (method, path, url and body can)", k);
	}
	if (rc)
		luaL_error(L, "req.%s: %s", k, strerror(-rc));
}

static int req_newindex(lua_State *L)
{
	struct sl_lua_req *r = check_req(L, 1);

	set_field(L, r, luaL_checkstring(L, 2), 3);
	return 0;
}

/* ---- Response ---- */

static struct sl_lua_resp *check_resp(lua_State *L, int idx)
{
	struct sl_lua_resp *p = check_ud(L, idx, SL_LUA_TAG_RESP, "response");

	if (!p->local && !p->r->x)
		luaL_error(L, "the request has ended");
	return p;
}

static struct sl_http_msg *fetched_msg(lua_State *L, struct sl_lua_resp *p)
{
	struct sl_http_msg *m = p->r->lua->o.xchg->resp(p->r->x);

	if (!m)
		luaL_error(L, "the response has been sent already");
	return m;
}

static int resp_text(lua_State *L)
{
	struct sl_lua_resp *p = check_resp(L, 1);
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
	rc = p->r->lua->o.xchg->read_resp_body(p->r->x, p->r->lua->o.resp_body_max);
	if (rc < 0)
		return luaL_error(L, "resp:text(): %s", strerror(-rc));
	if (rc == 1)
		return body_k(L, LUA_OK, 1);
	p->r->waiting = SL_LUA_W_RESP_BODY;
	return lua_yieldk(L, 0, 1, body_k);
}

/* Trailer fields as a new table { name = value } (repeated names joined with ", "). */
static void push_trailers(lua_State *L, const struct sl_http_msg *t)
{
	lua_newtable(L);
	for (size_t i = 0; i < t->nh; i++) {
		if (lua_getfield(L, -1, t->h[i].name) == LUA_TSTRING) {
			lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), t->h[i].value);
			lua_remove(L, -2);
		} else {
			lua_pop(L, 1);
			lua_pushstring(L, t->h[i].value);
		}
		lua_setfield(L, -2, t->h[i].name);
	}
}

static void headers_from(lua_State *L, int idx, struct sl_http_msg *m, int replace);

static int resp_index(lua_State *L)
{
	struct sl_lua_resp *p = check_resp(L, 1);
	const char *k = luaL_checkstring(L, 2);
	int status = p->local ? p->status : fetched_msg(L, p)->status;

	if (!strcmp(k, "status"))
		lua_pushinteger(L, status);
	else if (!strcmp(k, "ok"))
		lua_pushboolean(L, status >= 200 && status < 300);
	else if (!strcmp(k, "statusText"))
		lua_pushstring(L, sl_http_reason(status));
	else if (!strcmp(k, "headers"))
		push_headers(L, 1, p->local ? SL_LUA_H_LOCAL : SL_LUA_H_RESP, p->r, p);
	else if (!strcmp(k, "text"))
		lua_pushcfunction(L, resp_text);
	else if (!strcmp(k, "trailers"))
		push_trailers(L, p->local ? &p->t : p->r->lua->o.xchg->trailers(p->r->x));
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
	struct sl_lua_resp *p = check_resp(L, 1);
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
			if (p->r->lua->o.xchg->set_resp_body(p->r->x, b, len))
				luaL_error(L, "resp.body cannot be set now");
		}
	} else if (!strcmp(k, "trailers")) {
		/* Parsed into the userdata's own message (freed with it, whatever error the
		 * table raises); a fetched response's go on to the proxy. */
		sl_http_msg_reset(&p->t);
		if (!lua_isnil(L, 3))
			headers_from(L, 3, &p->t, 0);
		if (p->local)
			return 0;
		fetched_msg(L, p);
		if (p->r->lua->o.xchg->set_trailers(p->r->x, &p->t))
			luaL_error(L, "resp.trailers can be set once the body is read "
				      "(resp:text()) or replaced");
		sl_http_msg_reset(&p->t);
	} else {
		luaL_error(L, "resp.%s cannot be set (status, body and trailers can)", k);
	}
	return 0;
}

static int resp_gc(lua_State *L)
{
	struct sl_lua_resp *p = check_ud(L, 1, SL_LUA_TAG_RESP, "response");

	if (p->local)
		sl_http_msg_free(&p->h);
	sl_http_msg_free(&p->t);
	return 0;
}

/* Headers from a table { name = value | { values } } or a Headers object, into @m; with
 * @replace, each name given replaces that header of @m. */
static void headers_from(lua_State *L, int idx, struct sl_http_msg *m, int replace)
{
	idx = lua_absindex(L, idx);
	if (sl_lua_to_ud(L, idx, SL_LUA_TAG_HDRS)) {
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

/* Response.new(body [, { status = 200, headers = {...}, trailers = {...} }]) */
static int response_new(lua_State *L)
{
	struct sl_lua_resp *p;

	lua_settop(L, 2); /* the new userdata goes to 3 */
	if (!lua_isnoneornil(L, 1) && !lua_isstring(L, 1))
		return luaL_error(L, "Response.new: the body is a string or nil");
	p = lua_newuserdatauv(L, sizeof(*p), 2);
	memset(p, 0, sizeof(*p));
	p->tag = SL_LUA_TAG_RESP;
	p->local = 1;
	p->status = 200;
	sl_http_msg_init(&p->h);
	sl_http_msg_init(&p->t);
	luaL_setmetatable(L, SL_LUA_MT_RESP);
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
		if (lua_getfield(L, 2, "trailers") != LUA_TNIL)
			headers_from(L, -1, &p->t, 0);
		lua_pop(L, 1);
	} else if (!lua_isnoneornil(L, 2)) {
		return luaL_error(L, "Response.new: the second argument is { status=, headers=, "
				     "trailers= }");
	}
	return 1;
}

/* ---- fetch ---- */

static int fetch_k(lua_State *L, int status, lua_KContext k)
{
	struct sl_lua_req *r = sl_lua_running(L);
	struct sl_lua_resp *p;

	(void)status;
	(void)k;
	if (!r || !r->x)
		return luaL_error(L, "the request has ended");
	r->waiting = SL_LUA_W_NONE;
	p = lua_newuserdatauv(L, sizeof(*p), 2);
	memset(p, 0, sizeof(*p));
	p->tag = SL_LUA_TAG_RESP;
	p->r = r;
	luaL_setmetatable(L, SL_LUA_MT_RESP);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->self_ref);
	lua_setiuservalue(L, -2, 1);
	return 1;
}

/* fetch(req [, { method=, path=, url=, headers=, body= }]): the request goes to its original
 * destination (the address the kernel allowed, TLS verified for its name); the coroutine
 * waits for the response head. */
static int l_fetch(lua_State *L)
{
	struct sl_lua_req *r = sl_lua_to_ud(L, 1, SL_LUA_TAG_REQ);
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
			headers_from(L, -1, r->lua->o.xchg->req(r->x), 1); /* each named replaces */
		}
		lua_pop(L, 1);
	} else if (!lua_isnoneornil(L, 2)) {
		return luaL_error(L, "fetch: overrides are a table");
	}
	if (!r->lua->cleartext_secrets && r->lua->o.xchg->cleartext_secret(r->x))
		/* A secret on the wire in clear text is anyone's on the path (F11): refused
		 * unless the policy says otherwise. The request fails (502), nothing is sent. */
		return luaL_error(L, "fetch: secret over cleartext refused: this plain-HTTP "
				     "request carries an env or KV value (use https, or set "
				     "cleartextSecrets = true in the policy)");
	rc = r->lua->o.xchg->fetch(r->x);
	if (rc)
		return luaL_error(L, "fetch: the upstream connection could not start: %s",
				  strerror(-rc));
	r->fetched = 1;
	r->waiting = SL_LUA_W_FETCH;
	return lua_yieldk(L, 0, 0, fetch_k);
}

/* ---- ctx, env, KV, sluice.log ---- */

static int ctx_index(lua_State *L)
{
	struct sl_lua_req *r = ((struct sl_lua_ctx *)check_ud(L, 1, SL_LUA_TAG_CTX, "context"))->r;
	const char *k = luaL_checkstring(L, 2);
	struct sl_px_info info;

	if (!r->x)
		return luaL_error(L, "the request has ended");
	r->lua->o.xchg->info(r->x, &info);
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
	const char *ns = ((struct sl_lua_kv *)check_ud(L, 1, SL_LUA_TAG_KV, "KV namespace"))->ns;
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
	struct sl_lua_kv *ns;
	size_t klen;

	if (v) {
		secret_read(L, v, strlen(v));
		lua_pushstring(L, v);
		return 1;
	}
	if (!sl_kv_ns_ok(k)) {
		lua_pushnil(L);
		return 1;
	}
	klen = strlen(k);
	ns = lua_newuserdatauv(L, sizeof(*ns) + klen + 1, 0);
	ns->tag = SL_LUA_TAG_KV;
	memcpy(ns->ns, k, klen + 1);
	luaL_setmetatable(L, SL_LUA_MT_KV);
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
	struct sl_lua_req *r = sl_lua_running(L);
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
	sl_lua_redact(lua, r, msg);
	if (!lua->o.events)
		return 0;
	sl_jw_begin(&w);
	sl_jw_str(&w, "type", "log");
	sl_jw_str(&w, "sandbox", lua->sandbox);
	if (r && r->x) {
		struct sl_px_info info;

		r->lua->o.xchg->info(r->x, &info);
		sl_jw_str(&w, "handler", r->handler);
		sl_jw_str(&w, "host", info.host);
		sl_jw_int(&w, "pid", info.pid);
		if (info.audit)
			sl_jw_str(&w, "mode", "audit");
	}
	sl_jw_str(&w, "message", msg);
	sl_jw_publish(&w, lua->o.events, lua->sandbox);
	return 0;
}

static void new_class(lua_State *L, const char *name, lua_CFunction index, lua_CFunction newindex,
		      lua_CFunction gc)
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

/* The API handlers see: Response, fetch, sluice.log, and the classes behind req/ctx/env. */
int sl_lua_open_api(lua_State *L)
{
	static const luaL_Reg hdrs_methods[] = {
		{ "get", hdrs_get },	 { "getAll", hdrs_get_all },
		{ "has", hdrs_has },	 { "set", hdrs_set },
		{ "add", hdrs_add },	 { "delete", hdrs_delete },
		{ "pairs", hdrs_pairs }, { NULL, NULL },
	};
	struct sl_lua *lua = lua_touserdata(L, 1);

	lua_pushlightuserdata(L, lua);
	lua_setfield(L, LUA_REGISTRYINDEX, "sluice.host");
	new_class(L, SL_LUA_MT_REQ, req_index, req_newindex, NULL);
	new_class(L, SL_LUA_MT_RESP, resp_index, resp_newindex, resp_gc);
	new_class(L, SL_LUA_MT_CTX, ctx_index, NULL, NULL);
	/* Headers and KV namespaces index a table of methods: no C call to find one. */
	luaL_newmetatable(L, SL_LUA_MT_KV);
	lua_newtable(L);
	lua_pushcfunction(L, kv_get);
	lua_setfield(L, -2, "get");
	lua_setfield(L, -2, "__index");
	lua_pushboolean(L, 0);
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
	luaL_newmetatable(L, SL_LUA_MT_HDRS);
	luaL_newlib(L, hdrs_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, hdrs_pairs);
	lua_setfield(L, -2, "__pairs");
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
