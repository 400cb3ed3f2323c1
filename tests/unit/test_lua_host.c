// SPDX-License-Identifier: MIT
/*
 * The Lua/C boundary of the Lua host: loading and checking policies, outboundHandlers'
 * egress and params, the Headers and Response API, the sandboxed state and its limits
 * (env and KV are exercised end to end in tests/e2e/test_handlers.py). Code that
 * needs the handler API runs inside an egress function (it runs in the same state with the
 * same API), so these tests need no proxy: they assert from Lua and report through errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/http.h"
#include "lua/lua_host.h"
#include "policy/policy.h"

static struct sl_lua *load(const char *src, const struct sl_lua_opts *o, char *err, size_t errlen)
{
	struct sl_lua_opts none = { 0 };
	struct sl_policy *p = NULL;
	struct sl_lua *lua =
		sl_lua_load("t.lua", src, strlen(src), o ? o : &none, "box", &p, err, errlen);

	sl_policy_free(p);
	return lua;
}

/* Runs @body (Lua statements, `params` in scope) as an egress function: 0 if it returned
 * normally, else the error in @err. */
static int run_lua(const char *body, const struct sl_lua_opts *o, char *err, size_t errlen)
{
	char src[8192];
	struct sl_lua *lua;
	struct sl_policy *p = NULL;
	int r;

	snprintf(src, sizeof(src),
		 "return { outboundHandlers = { t = { egress = function(params)\n%s\nreturn {} "
		 "end, handle = function() end } } }",
		 body);
	lua = load(src, o, err, errlen);
	if (!lua)
		fail_msg("policy refused: %s", err);
	r = sl_lua_handler_egress(lua, "t",
				  "{\"n\": 3, \"list\": [\"a\", \"b\"], \"o\": {\"x\": true}}", &p,
				  err, errlen);
	sl_policy_free(p);
	sl_lua_unref(lua);
	return r;
}

static void ok_lua(const char *body)
{
	char err[512];

	if (run_lua(body, NULL, err, sizeof(err)))
		fail_msg("%s", err);
}

static void fails_lua(const char *body, const char *want)
{
	char err[512] = "";

	if (!run_lua(body, NULL, err, sizeof(err)))
		fail_msg("no error for: %s", body);
	if (!strstr(err, want))
		fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_load_and_shape(void **state)
{
	char err[512];
	struct sl_lua *lua;

	(void)state;
	lua = load("return { outbound = function(req, env, ctx) return fetch(req) end }", NULL, err,
		   sizeof(err));
	assert_non_null(lua);
	assert_true(sl_lua_has_handlers(lua));
	sl_lua_unref(lua);
	lua = load("return { egress = { allow = { '10.0.0.0/8' } } }", NULL, err, sizeof(err));
	assert_non_null(lua);
	assert_false(sl_lua_has_handlers(lua)); /* requests go straight through */
	sl_lua_unref(lua);

	static const struct {
		const char *src, *want;
	} bad[] = {
		{ "return {\n outbound = function(req)\n return fetch(req\n end }", "t.lua:4:" },
		{ "return { outbound = 1 }", "outbound must be a function" },
		{ "return { outboundByHost = { 'x' } }", "outboundByHost" },
		{ "return { outboundByHost = { ['a.test'] = 'no' } }", "outboundByHost" },
		{ "return { outboundHandlers = { x = 1 } }", "outboundHandlers" },
		{ "return { outboundHandlers = { x = { egress = 'all' } } }",
		  "outboundHandlers.x.egress must be a table or a function" },
		{ "return { outboundHandlers = { x = { handle = {} } } }",
		  "outboundHandlers.x.handle must be a function" },
		{ "return { egress = { deny = {} } }", "unknown key 'deny'" },
		{ "while true do end", "instruction limit" },
		{ "error('nope')", "nope" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		lua = load(bad[i].src, NULL, err, sizeof(err));
		if (lua || !strstr(err, bad[i].want))
			fail_msg("'%s': got '%s', want '%s'", bad[i].src, lua ? "(loaded)" : err,
				 bad[i].want);
	}
}

static void test_handler_egress_and_params(void **state)
{
	const char *src =
		"return { egress = { intercept = { 'a.test' } }, outboundHandlers = {\n"
		"  fixed = { egress = { allow = { '10.1.0.0/16:5432' } }, handle = function() end },\n"
		"  open = { egress = function(p) return { intercept = p.hosts } end,\n"
		"           handle = function() end },\n"
		"  none = { handle = function() end },\n"
		"  broken = { egress = function(p) return 5 end, handle = function() end },\n"
		"} }";
	struct sl_policy *p = NULL;
	char err[512];
	struct sl_lua *lua = load(src, NULL, err, sizeof(err));

	(void)state;
	assert_non_null(lua);
	assert_true(sl_lua_handler_exists(lua, "open"));
	assert_false(sl_lua_handler_exists(lua, "closed"));
	assert_int_equal(sl_lua_handler_egress(lua, "fixed", NULL, &p, err, sizeof(err)), 0);
	assert_non_null(p);
	assert_int_equal(p->allow.n, 1);
	assert_int_equal(p->allow.v[0].port_lo, 5432);
	sl_policy_free(p);
	assert_int_equal(sl_lua_handler_egress(lua, "open", "{\"hosts\": [\"x.test\", \"y.test\"]}",
					       &p, err, sizeof(err)),
			 0);
	assert_int_equal(p->intercept.n, 2);
	assert_string_equal(p->intercept.v[1].host, "y.test");
	sl_policy_free(p);
	/* No egress: the policy's own layer applies (NULL). */
	assert_int_equal(sl_lua_handler_egress(lua, "none", NULL, &p, err, sizeof(err)), 0);
	assert_null(p);
	/* Errors leave nothing behind. */
	assert_int_equal(sl_lua_handler_egress(lua, "open", "{\"hosts\": [\"bad host\"]}", &p, err,
					       sizeof(err)),
			 -EINVAL);
	assert_null(p);
	assert_non_null(strstr(err, "outboundHandlers.open.egress.intercept[1]"));
	assert_int_equal(sl_lua_handler_egress(lua, "broken", NULL, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "returned number"));
	assert_int_equal(sl_lua_handler_egress(lua, "open", "[1, 2]", &p, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "params must be a JSON object"));
	assert_int_equal(sl_lua_handler_egress(lua, "nosuch", NULL, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no handler 'nosuch'"));
	/* Activation. */
	assert_string_equal(sl_lua_active(lua), "");
	assert_int_equal(
		sl_lua_set_active(lua, "open", "{\"hosts\": [\"x.test\"]}", err, sizeof(err)), 0);
	assert_string_equal(sl_lua_active(lua), "open");
	assert_true(sl_lua_has_handlers(lua));
	assert_int_equal(sl_lua_set_active(lua, NULL, NULL, err, sizeof(err)), 0);
	assert_string_equal(sl_lua_active(lua), "");
	sl_lua_unref(lua);
}

static void test_params_reach_lua(void **state)
{
	(void)state;
	ok_lua("assert(params.n == 3 and math.type(params.n) == 'integer')\n"
	       "assert(params.list[1] == 'a' and params.list[2] == 'b' and #params.list == 2)\n"
	       "assert(params.o.x == true)");
}

static void test_headers_api(void **state)
{
	(void)state;
	ok_lua("local r = Response.new('hi', { status = 201, headers = {\n"
	       "  ['Content-Type'] = 'text/plain', ['X-Multi'] = { 'a', 'b' } } })\n"
	       "assert(r.status == 201 and r.ok and r:text() == 'hi')\n"
	       "local h = r.headers\n"
	       "assert(h:get('content-type') == 'text/plain')\n"
	       "assert(h:get('x-multi') == 'a, b')\n"
	       "local all = h:getAll('X-MULTI'); assert(#all == 2 and all[2] == 'b')\n"
	       "assert(h:has('X-Multi') and not h:has('nope') and h:get('nope') == nil)\n"
	       "h:add('x-multi', 'c'); assert(h:get('x-multi') == 'a, b, c')\n"
	       "h:set('X-Multi', 'z'); assert(h:get('x-multi') == 'z' and #h:getAll('x-multi') == 1)\n"
	       "h:delete('x-multi'); assert(not h:has('x-multi'))\n"
	       "h:set('x-num', 42); assert(h:get('x-num') == '42')\n"
	       "local seen = {}\n"
	       "for k, v in h:pairs() do seen[#seen + 1] = k .. '=' .. v end\n"
	       "assert(table.concat(seen, ';') == 'content-type=text/plain;x-num=42', table.concat(seen, ';'))\n"
	       "local n = 0; for k, v in pairs(h) do n = n + 1 end; assert(n == 2)\n"
	       "r.status = 404; assert(r.status == 404 and not r.ok)\n"
	       "r.body = 'new'; assert(r:text() == 'new')\n"
	       "assert(Response.new().status == 200 and Response.new():text() == '')\n"
	       "assert(Response.new(7):text() == '7')");
	fails_lua("Response.new('x').headers:set('x-evil', 'a\\r\\nInjected: 1')", "CR/LF");
	fails_lua("Response.new('x').headers:set('x-evil', 'a\\nb')", "CR/LF");
	fails_lua("Response.new('x').headers:set('bad name', 'v')", "not a header name");
	fails_lua("Response.new('x').headers:set('Content-Length', '5')", "managed by sluice");
	fails_lua("Response.new('x').headers:set('transfer-encoding', 'chunked')",
		  "managed by sluice");
	fails_lua("Response.new('x').headers:delete('connection')", "managed by sluice");
	fails_lua("Response.new('x', { status = 99 })", "200 to 599");
	fails_lua("Response.new('x', { status = 600 })", "200 to 599");
	fails_lua("Response.new({})", "string or nil");
	fails_lua("Response.new('x', 5)", "{ status=, headers=, trailers= }");
	fails_lua("Response.new('x').headers = {}", "cannot be set");
	fails_lua("fetch('https://example.com/')", "takes the intercepted request");
	fails_lua("assert(getmetatable(Response.new('x')) == false); error('hidden')", "hidden");
}

static void test_sandboxed_state(void **state)
{
	(void)state;
	ok_lua("assert(io == nil and os == nil and package == nil and debug == nil)\n"
	       "assert(require == nil and dofile == nil and loadfile == nil)\n"
	       "assert(load(string.dump(function() end)) == nil)\n"
	       "assert(load('return 1')() == 1)");
	fails_lua("local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i end",
		  "not enough memory");
	fails_lua("while true do end", "instruction limit");
}

static void test_http_header_helpers(void **state)
{
	struct sl_http_msg m;

	(void)state;
	sl_http_msg_init(&m);
	assert_int_equal(sl_http_add(&m, "X-A", "1"), 0);
	assert_int_equal(sl_http_add(&m, "x-a", "2"), 0);
	assert_int_equal(sl_http_count(&m, "X-a"), 2);
	assert_int_equal(sl_http_set(&m, "x-A", "3"), 0);
	assert_int_equal(sl_http_count(&m, "x-a"), 1);
	assert_string_equal(sl_http_get(&m, "X-A"), "3");
	for (int i = 0; i < SL_HTTP_MAX_HEADERS; i++)
		sl_http_add(&m, "x-many", "v");
	assert_int_equal(sl_http_add(&m, "x-one-more", "v"), -E2BIG);
	sl_http_msg_free(&m);

	assert_true(sl_http_valid_name("x-auth-token"));
	assert_false(sl_http_valid_name(""));
	assert_false(sl_http_valid_name("a b"));
	assert_false(sl_http_valid_name("a:b"));
	assert_true(sl_http_valid_value("Bearer abc", 10));
	assert_true(sl_http_valid_value("", 0));
	assert_false(sl_http_valid_value("a\r\nb", 4));
	assert_false(sl_http_valid_value("a\0b", 3));
	assert_false(sl_http_valid_value(" lead", 5));
	assert_true(sl_http_managed("Content-Length"));
	assert_true(sl_http_managed("host"));
	assert_true(sl_http_managed("Upgrade"));
	assert_false(sl_http_managed("authorization"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_and_shape),
		cmocka_unit_test(test_handler_egress_and_params),
		cmocka_unit_test(test_params_reach_lua),
		cmocka_unit_test(test_headers_api),
		cmocka_unit_test(test_sandboxed_state),
		cmocka_unit_test(test_http_header_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
