// SPDX-License-Identifier: MIT
/* The policy grammar: entry strings and Lua policy files. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "lua/lua_policy.h"
#include "policy/policy.h"

static void roundtrip(const char *in, const char *want)
{
	struct sl_entry e;
	char err[256], out[300];

	if (sl_entry_parse(in, &e, err, sizeof(err)))
		fail_msg("'%s' refused: %s", in, err);
	sl_entry_str(&e, out, sizeof(out));
	if (strcmp(out, want))
		fail_msg("'%s' -> '%s', want '%s'", in, out, want);
}

static void refused(const char *in, const char *why)
{
	struct sl_entry e;
	char err[256] = "";

	if (!sl_entry_parse(in, &e, err, sizeof(err)))
		fail_msg("'%s' accepted", in);
	if (!strstr(err, why))
		fail_msg("'%s': error '%s' lacks '%s'", in, err, why);
}

static void test_entries(void **state)
{
	struct sl_entry e;
	char err[256];

	(void)state;
	roundtrip("10.0.0.1", "10.0.0.1");
	roundtrip("10.0.0.0/8", "10.0.0.0/8");
	roundtrip("10.20.0.0/16:5432", "10.20.0.0/16:5432");
	roundtrip("127.0.0.1:1000-2000", "127.0.0.1:1000-2000");
	roundtrip("::1", "::1");
	roundtrip("fd00::/8", "fd00::/8");
	roundtrip("[::1]:443", "[::1]:443");
	roundtrip("[2001:db8::/32]:443", "[2001:db8::/32]:443");
	roundtrip("[2001:db8::]/32:443", "[2001:db8::/32]:443");
	roundtrip("Registry.NPMJS.org.:443", "registry.npmjs.org:443");
	roundtrip("*.internal.dev", "*.internal.dev");
	roundtrip("_service.example.com", "_service.example.com");
	{
		/* a name of 253 characters prints whole (it was cut at 79: tests/fuzz/fuzz_entry) */
		char name[300], want[300];

		memset(name, 'a', 253);
		for (int i = 63; i < 253; i += 64)
			name[i] = '.';
		name[253] = 0;
		snprintf(want, sizeof(want), "*.%s:443", name + 2);
		roundtrip(want, want);
	}

	assert_int_equal(sl_entry_parse("*.npmjs.org:443", &e, err, sizeof(err)), 0);
	assert_int_equal(e.kind, SL_ENTRY_WILDCARD);
	assert_string_equal(e.host, "npmjs.org");
	assert_int_equal(e.port_lo, 443);
	assert_int_equal(sl_entry_parse("10.0.0.0/8", &e, err, sizeof(err)), 0);
	assert_int_equal(e.kind, SL_ENTRY_ADDR);
	assert_int_equal(e.has_port, 0);
	assert_int_equal(e.plen, 8);

	refused("10.0.0.1:0", "bad port");
	refused("10.0.0.1:0-0", "bad port"); /* printed back as ":0" (tests/fuzz/fuzz_entry) */
	refused("10.0.0.1:65536", "bad port");
	refused("10.0.0.1:20-10", "bad port");
	refused("10.0.0.1:http", "bad port");
	refused("10.0.0.0/33", "prefix length out of range");
	refused("10.0.0.1/8", "did you mean 10.0.0.0/8");
	refused("fd00::1/8", "did you mean fd00::/8");
	refused("[::1", "missing ']'");
	refused("[10.0.0.1]:80", "not an IPv6");
	refused("::1:443x", "not an IPv6");
	refused("", "empty");
	refused("exa mple.com", "not an address, prefix or host name");
	refused("-bad.com", "not an address");
	refused("10.0.0.300", "not an address");
	refused("1.2.3.4.5", "not an address");
	refused("a..b", "not an address");
	refused("*.", "not an address");
	refused("foo.*.com", "not an address");
	refused("*", "not an address");
}

static struct sl_policy *load(const char *src, char *err, size_t errlen)
{
	return sl_policy_load("t.lua", src, strlen(src), err, errlen);
}

static void test_policy_load(void **state)
{
	char err[512];
	struct sl_policy *p;

	(void)state;
	p = load("local ports = { 80, 443 }\n"
		 "local allow = {}\n"
		 "for _, port in ipairs(ports) do allow[#allow + 1] = '10.0.0.1:' .. port end\n"
		 "allow[#allow + 1] = { '10.0.0.53:53', proto = 'udp' }\n"
		 "return { egress = { allow = allow, intercept = { 'api.github.com' },\n"
		 "                    private = { '127.0.0.0/8' } },\n"
		 "         outbound = function(req) return nil end }\n",
		 err, sizeof(err));
	assert_non_null(p);
	assert_int_equal(p->allow.n, 3);
	assert_int_equal(p->allow.v[2].protos, SL_PROTO_UDP);
	assert_int_equal(p->intercept.n, 1);
	assert_int_equal(p->private_ranges.n, 1);
	sl_policy_free(p);

	p = load("return {}", err, sizeof(err));
	assert_non_null(p);
	assert_int_equal(p->allow.n, 0);
	sl_policy_free(p);
}

static void load_fails(const char *src, const char *why)
{
	char err[512] = "";
	struct sl_policy *p = load(src, err, sizeof(err));

	if (p)
		fail_msg("policy accepted: %s", src);
	if (!strstr(err, why))
		fail_msg("error '%s' lacks '%s'", err, why);
	if (strchr(err, '\n'))
		fail_msg("error is not one line: %s", err);
}

static void test_policy_errors(void **state)
{
	(void)state;
	load_fails("return {", "t.lua:1:");
	load_fails("return 1", "must return a table");
	load_fails("return { egress = 'all' }", "egress must be a table");
	load_fails("return { egress = { allowed = {} } }", "unknown key 'allowed'");
	load_fails("return { egress = { allow = '10.0.0.1' } }", "must be a list");
	load_fails("return { egress = { allow = { x = '10.0.0.1' } } }", "must be a list");
	load_fails("return { egress = { allow = { '10.0.0.1', '10.0.0.300' } } }",
		   "egress.allow[2]");
	load_fails("return { egress = { allow = { { '10.0.0.1', proto = 'icmp' } } } }",
		   "proto must be");
	load_fails("return { egress = { allow = { { '10.0.0.1', port = 80 } } } }",
		   "unknown key 'port'");
	load_fails("return { egress = { private = { 'example.com' } } }", "egress.private[1]");
	load_fails("while true do end", "instruction limit");
	load_fails("local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(1000) .. i end",
		   "not enough memory");
	load_fails("return io.open('/etc/shadow')", "io");
	load_fails("return os.execute('true')", "os");
	load_fails("return loadfile('/etc/passwd')", "loadfile");
	load_fails("return assert(load(string.dump(function() end)))",
		   "attempt to load a binary chunk");
	/* The policy's metamethods run while its table is read: an error there, or memory
	 * running out, is the policy's error, not a Lua panic (found by tests/fuzz/fuzz_policy). */
	load_fails("return setmetatable({}, { __index = function() error('no egress here') end })",
		   "no egress here");
	load_fails("return { egress = { allow = setmetatable({}, { __len = function() return 'x' "
		   "end }) } }",
		   "integer");
	load_fails("return setmetatable({}, { __index = function() local t = {} "
		   "for i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end end })",
		   "not enough memory");
}

static void unix_roundtrip(const char *in, size_t want_len, int abstract)
{
	struct sl_unix_key k;
	char err[256], out[SL_UNIX_PATH_MAX * 4 + 2];

	if (sl_unix_parse(in, strlen(in), &k, err, sizeof(err)))
		fail_msg("'%s' refused: %s", in, err);
	assert_int_equal(k.len, want_len);
	assert_int_equal(k.path[0] == 0, abstract);
	for (size_t i = k.len; i < SL_UNIX_PATH_MAX; i++)
		if (k.path[i])
			fail_msg("'%s': byte %zu past the address is not zero", in, i);
	sl_unix_str(&k, out, sizeof(out));
	if (strcmp(out, in))
		fail_msg("'%s' -> '%s'", in, out);
}

static void unix_refused(const char *in, size_t len, const char *why)
{
	struct sl_unix_key k;
	char err[256] = "";

	if (!sl_unix_parse(in, len, &k, err, sizeof(err)))
		fail_msg("'%s' accepted", in);
	if (!strstr(err, why))
		fail_msg("'%s': error '%s' lacks '%s'", in, err, why);
}

/* egress.unix: exact absolute paths and @abstract names, as the kernel compares them. */
static void test_unix_entries(void **state)
{
	char longest[SL_UNIX_PATH_MAX + 2], err[512];
	struct sl_policy *p;

	(void)state;
	unix_roundtrip("/run/postgresql/.s.PGSQL.5432", 29, 0);
	unix_roundtrip("/x", 2, 0);
	unix_roundtrip("@some-abstract-name", 19, 1); /* the 0 byte, then 18 */
	unix_roundtrip("@a", 2, 1);
	unix_roundtrip("@/with/slashes", 14, 1);
	/* sun_path holds 108 bytes; a path may fill it without a NUL */
	memset(longest, 'a', sizeof(longest));
	longest[0] = '/';
	longest[SL_UNIX_PATH_MAX] = 0;
	unix_roundtrip(longest, SL_UNIX_PATH_MAX, 0);
	longest[0] = '@';
	unix_roundtrip(longest, SL_UNIX_PATH_MAX, 1);
	longest[SL_UNIX_PATH_MAX] = 'a';
	longest[SL_UNIX_PATH_MAX + 1] = 0;
	unix_refused(longest, strlen(longest), "abstract name");
	longest[0] = '/';
	unix_refused(longest, strlen(longest), "longer than");

	unix_refused("relative.sock", 13, "absolute path");
	unix_refused("./x.sock", 8, "absolute path");
	unix_refused("", 0, "absolute path");
	unix_refused("@", 1, "abstract name");
	unix_refused("/", 1, "normalised");
	unix_refused("/run//x.sock", 12, "normalised");
	unix_refused("/run/./x.sock", 13, "normalised");
	unix_refused("/run/../x.sock", 14, "normalised");
	unix_refused("/run/x/", 7, "normalised");
	unix_refused("/run/x/..", 9, "normalised");
	unix_refused("/run/x/.", 8, "normalised");
	unix_refused("/run/a\nb", 8, "control characters");
	unix_refused("@a\0b", 4, "control characters"); /* a Lua string may hold a NUL */

	p = load("return { egress = { unix = { '/run/a.sock', '@b', '/run/a.sock' } } }", err,
		 sizeof(err));
	assert_non_null(p);
	assert_int_equal(p->unix_socks.n, 2); /* each address once */
	assert_int_equal(p->unix_socks.v[1].len, 2);
	sl_policy_free(p);
	p = load("return { egress = { allow = { '10.0.0.1' } } }", err, sizeof(err));
	assert_non_null(p);
	assert_int_equal(p->unix_socks.n, 0); /* nothing named: every UNIX socket denied */
	sl_policy_free(p);
	load_fails("return { egress = { unix = '/run/a.sock' } }", "egress.unix must be a list");
	load_fails("return { egress = { unix = { s = '/run/a.sock' } } }", "must be a list");
	load_fails("return { egress = { unix = { 'a.sock' } } }", "egress.unix[1]: 'a.sock'");
	load_fails("return { egress = { unix = { { '/run/a.sock' } } } }", "egress.unix[1]");
	load_fails("return { egress = { unix = { '/run/a.sock', 42 } } }", "egress.unix[2]");
	load_fails("return { egress = { unix = { '/run/a\\0.sock' } } }", "control characters");
	load_fails("local t = {} for i = 1, 257 do t[i] = '/s' .. i end "
		   "return { egress = { unix = t } }",
		   "too many entries");
}

static void test_policy_rules(void **state)
{
	char err[512];
	struct sl_rule_set rs;
	struct sl_policy *p;

	(void)state;
	p = load("return { egress = { allow = { '10.0.0.0/8', '[::1]:80-81' } } }", err,
		 sizeof(err));
	assert_non_null(p);
	sl_rule_set_init(&rs);
	assert_int_equal(sl_policy_rules(p, &rs, err, sizeof(err)), 0);
	assert_int_equal(rs.n, 2);
	assert_int_equal(rs.v[0].port_lo, 0);
	assert_int_equal(rs.v[0].port_hi, 65535);
	assert_int_equal(rs.v[0].verdict, SL_VERDICT_ALLOW);
	assert_int_equal(rs.v[1].family, AF_INET6);
	assert_int_equal(rs.v[1].port_lo, 80);
	assert_int_equal(rs.v[1].port_hi, 81);
	sl_rule_set_free(&rs);
	sl_policy_free(p);
}

static void test_name_grants(void **state)
{
	char err[512];
	struct sl_grant g[8];
	struct sl_policy *p;

	(void)state;
	p = load("return { egress = { allow = { 'api.github.com:443', 'api.github.com:80',\n"
		 "  '*.npmjs.org', { 'ntp.example:123', proto = 'udp' }, '10.0.0.1' } } }",
		 err, sizeof(err));
	assert_non_null(p);
	assert_true(sl_policy_has_names(p));
	assert_int_equal(sl_policy_name_grants(p, "api.github.com", g, 8), 2);
	assert_int_equal(g[0].lo, 443);
	assert_int_equal(g[1].lo, 80);
	/* 443 of a name is checked by SNI by default, in the kernel: SNI on TCP, no QUIC */
	assert_int_equal(g[0].verdict, SL_VERDICT_SNI);
	assert_int_equal(g[0].sni, 1);
	assert_int_equal(g[0].protos, SL_PROTO_TCP);
	assert_int_equal(g[1].verdict, SL_VERDICT_ALLOW);
	assert_int_equal(sl_policy_name_grants(p, "API.GitHub.com.", g, 8), 2);
	/* any port: every port but 443 an address grant, 443 checked */
	assert_int_equal(sl_policy_name_grants(p, "registry.npmjs.org", g, 8), 3);
	assert_int_equal(g[0].lo, 0);
	assert_int_equal(g[0].hi, 442);
	assert_int_equal(g[0].verdict, SL_VERDICT_ALLOW);
	assert_int_equal(g[1].lo, 443);
	assert_int_equal(g[1].hi, 443);
	assert_int_equal(g[1].sni, 1);
	assert_int_equal(g[2].lo, 444);
	assert_int_equal(g[2].hi, 65535);
	assert_int_equal(g[2].protos, SL_PROTO_ANY);
	assert_int_equal(sl_policy_name_grants(p, "ntp.example", g, 8), 1);
	assert_int_equal(g[0].protos, SL_PROTO_UDP);
	/* no partial-label or suffix tricks */
	assert_int_equal(sl_policy_name_grants(p, "npmjs.org", g, 8), 0);
	assert_int_equal(sl_policy_name_grants(p, "evilnpmjs.org", g, 8), 0);
	assert_int_equal(sl_policy_name_grants(p, "api.github.com.evil", g, 8), 0);
	assert_int_equal(sl_policy_name_grants(p, "xapi.github.com", g, 8), 0);
	assert_int_equal(sl_policy_name_grants(p, "10.0.0.1", g, 8), 0);
	/* at most max */
	assert_int_equal(sl_policy_name_grants(p, "api.github.com", g, 1), 1);
	sl_policy_free(p);
}

static void test_sni_entries(void **state)
{
	char err[512];
	struct sl_grant g[8];
	struct sl_policy *p;

	(void)state;
	p = load("return { egress = { allow = { { 'raw.test:443', sni = false },\n"
		 "  { 'tls.test:8000-8999', sni = true }, 'web.test:80', 'both.test:400-500',\n"
		 "  '10.0.0.0/8:443' }, intercept = { 'api.test' } } }",
		 err, sizeof(err));
	assert_non_null(p);
	/* sni = false: an address grant on 443, TCP and UDP */
	assert_int_equal(sl_policy_name_grants(p, "raw.test", g, 8), 1);
	assert_int_equal(g[0].verdict, SL_VERDICT_ALLOW);
	assert_int_equal(g[0].protos, SL_PROTO_ANY);
	assert_int_equal(sl_policy_name_port(p, "raw.test", 443), SL_NAME_PASS);
	/* sni = true: every port of the entry checked */
	assert_int_equal(sl_policy_name_grants(p, "tls.test", g, 8), 1);
	assert_int_equal(g[0].lo, 8000);
	assert_int_equal(g[0].hi, 8999);
	assert_int_equal(g[0].sni, 1);
	assert_int_equal(sl_policy_name_port(p, "tls.test", 8443), SL_NAME_SNI);
	assert_int_equal(sl_policy_name_port(p, "tls.test", 443), SL_NAME_DENY);
	/* no 443 among the ports: nothing checked */
	assert_int_equal(sl_policy_name_port(p, "web.test", 80), SL_NAME_PASS);
	assert_int_equal(sl_policy_name_port(p, "web.test", 443), SL_NAME_DENY);
	/* a range around 443: split in three */
	assert_int_equal(sl_policy_name_grants(p, "both.test", g, 8), 3);
	assert_int_equal(sl_policy_name_port(p, "both.test", 442), SL_NAME_PASS);
	assert_int_equal(sl_policy_name_port(p, "both.test", 443), SL_NAME_SNI);
	assert_int_equal(sl_policy_name_port(p, "both.test", 444), SL_NAME_PASS);
	/* intercepted names stay intercepted; name_verdict sees passthrough as ALLOW */
	assert_int_equal(sl_policy_name_port(p, "api.test", 443), SL_NAME_INTERCEPT);
	assert_int_equal(sl_policy_name_verdict(p, "api.test"), SL_VERDICT_PROXY);
	assert_int_equal(sl_policy_name_verdict(p, "both.test"), SL_VERDICT_ALLOW);
	assert_true(sl_policy_needs_proxy(p));
	sl_policy_free(p);

	/* names checked by SNI need the proxy even with nothing intercepted; sni = false and
	 * addresses do not */
	p = load("return { egress = { allow = { 'x.test:443' } } }", err, sizeof(err));
	assert_non_null(p);
	assert_true(sl_policy_needs_proxy(p));
	sl_policy_free(p);
	p = load("return { egress = { allow = { { 'x.test:443', sni = false }, '10.0.0.1:443',\n"
		 "  'y.test:80' } } }",
		 err, sizeof(err));
	assert_non_null(p);
	assert_false(sl_policy_needs_proxy(p));
	sl_policy_free(p);

	/* refused: sni on an address, on intercept, not a boolean, with UDP only */
	assert_null(load("return { egress = { allow = { { '10.0.0.1:443', sni = true } } } }", err,
			 sizeof(err)));
	assert_non_null(strstr(err, "sni applies to host names"));
	assert_null(load("return { egress = { intercept = { { 'a.test', sni = false } } } }", err,
			 sizeof(err)));
	assert_non_null(strstr(err, "sni is an egress.allow setting"));
	assert_null(load("return { egress = { allow = { { 'a.test', sni = 'yes' } } } }", err,
			 sizeof(err)));
	assert_non_null(strstr(err, "sni must be true or false"));
	assert_null(load("return { egress = { allow = { { 'a.test:443', proto = 'udp', sni = true "
			 "} } } }",
			 err, sizeof(err)));
	assert_non_null(strstr(err, "sni = true needs TCP"));
}

static int public4(const char *a)
{
	uint8_t b[16] = { 0 };

	assert_int_equal(inet_pton(AF_INET, a, b), 1);
	return sl_addr_is_public(AF_INET, b);
}

static int public6(const char *a)
{
	uint8_t b[16];

	assert_int_equal(inet_pton(AF_INET6, a, b), 1);
	return sl_addr_is_public(AF_INET6, b);
}

static void test_public_and_private_addresses(void **state)
{
	char err[512];
	struct sl_policy *p;
	uint8_t a[16] = { 0 };

	(void)state;
	assert_true(public4("8.8.8.8"));
	assert_true(public4("1.1.1.1"));
	assert_true(public4("100.63.255.255"));
	assert_true(public4("172.32.0.1"));
	const char *private4[] = { "127.0.0.1",	      "10.1.2.3",   "172.16.0.1",     "192.168.1.1",
				   "169.254.169.254", "100.64.0.1", "0.0.0.0",	      "192.0.2.2",
				   "198.18.0.1",      "224.0.0.1",  "255.255.255.255" };
	for (size_t i = 0; i < sizeof(private4) / sizeof(private4[0]); i++)
		if (public4(private4[i]))
			fail_msg("%s judged public", private4[i]);
	assert_true(public6("2606:4700::1111"));
	const char *private6[] = { "::1",
				   "::",
				   "fe80::1",
				   "fd00:ec2::254",
				   "fc00::1",
				   "ff02::1",
				   "::ffff:10.0.0.1",
				   "::ffff:127.0.0.1",
				   "2001:db8::1",
				   "64:ff9b::a00:1",
				   "2002:a00:1::1" };
	for (size_t i = 0; i < sizeof(private6) / sizeof(private6[0]); i++)
		if (public6(private6[i]))
			fail_msg("%s judged public", private6[i]);
	assert_true(public6("::ffff:8.8.8.8"));

	p = load("return { egress = { private = { '127.0.0.0/8', 'fd00::/8' } } }", err,
		 sizeof(err));
	assert_non_null(p);
	inet_pton(AF_INET, "127.0.0.5", a);
	assert_true(sl_policy_addr_permitted(p, AF_INET, a));
	inet_pton(AF_INET, "10.0.0.5", a);
	assert_false(sl_policy_addr_permitted(p, AF_INET, a));
	inet_pton(AF_INET, "8.8.4.4", a);
	assert_true(sl_policy_addr_permitted(p, AF_INET, a));
	inet_pton(AF_INET6, "fd00:ec2::254", a);
	assert_true(sl_policy_addr_permitted(p, AF_INET6, a));
	inet_pton(AF_INET6, "fe80::1", a);
	assert_false(sl_policy_addr_permitted(p, AF_INET6, a));
	sl_policy_free(p);
}

/* A name's grants come from the policy's hash of its names (or, without it, their positions):
 * the same as from every entry, in the same order, among thousands of entries, whatever the
 * case or a trailing dot. */
static void test_name_positions(void **state)
{
	static const char *const names[] = { "api.github.com",	 "x.npmjs.org",	  "npmjs.org",
					     "a.b.npmjs.org",	 "other.test",	  "api.test",
					     "API.Test.",	 "X.Y.NPMJS.org", "h77.names.test",
					     "a.h77.names.test", "names.test",	  "" };
	const char *src =
		"local a = { 'api.github.com', '*.npmjs.org:443', { 'api.test:8443', sni = false } }\n"
		"for i = 1, 5000 do a[#a + 1] = string.format('10.0.%d.%d:443', i >> 8, i & 255) end\n"
		"for i = 1, 3000 do a[#a + 1] = string.format('h%d.names.test:%d', i, 1000 + i) end\n"
		"a[#a + 1] = 'api.github.com:22'\n"
		"a[#a + 1] = '*.h77.names.test'\n"
		"return { egress = { allow = a, intercept = { 'api.test', '*.github.com:8080' } } }";
	char err[256];
	struct sl_policy *p = load(src, err, sizeof(err));

	(void)state;
	assert_non_null(p);
	assert_non_null(p->allow_names);
	assert_non_null(p->name_head);
	assert_int_equal(p->nallow_names, 3005);
	assert_int_equal(p->nintercept_names, 2);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct sl_grant a[16], b[16], c[16];
		size_t na = sl_policy_name_grants(p, names[i], a, 16), nb, nc;
		uint32_t *an = p->allow_names, *in = p->intercept_names, *head = p->name_head;

		p->name_head = NULL; /* the positions */
		nb = sl_policy_name_grants(p, names[i], b, 16);
		p->allow_names = p->intercept_names = NULL; /* every entry */
		nc = sl_policy_name_grants(p, names[i], c, 16);
		p->allow_names = an;
		p->intercept_names = in;
		p->name_head = head;
		assert_int_equal(na, nb);
		assert_int_equal(na, nc);
		for (size_t k = 0; k < na; k++) {
			assert_int_equal(a[k].lo, c[k].lo);
			assert_int_equal(a[k].hi, c[k].hi);
			assert_int_equal(a[k].protos, c[k].protos);
			assert_int_equal(a[k].verdict, c[k].verdict);
			assert_int_equal(a[k].sni, c[k].sni);
			assert_int_equal(b[k].lo, c[k].lo);
			assert_int_equal(b[k].verdict, c[k].verdict);
		}
		assert_int_equal(sl_policy_name_verdict(p, names[i]) == SL_VERDICT_DENY,
				 !strcmp(names[i], "other.test") ||
					 !strcmp(names[i], "npmjs.org") ||
					 !strcmp(names[i], "names.test") || !names[i][0]);
	}
	assert_int_equal(sl_policy_name_port(p, "h77.names.test", 1077), SL_NAME_PASS);
	assert_int_equal(sl_policy_name_port(p, "h77.names.test", 1078), SL_NAME_DENY);
	assert_int_equal(sl_policy_name_port(p, "A.H77.names.test", 443), SL_NAME_SNI);
	sl_policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entries),
		cmocka_unit_test(test_policy_load),
		cmocka_unit_test(test_name_positions),
		cmocka_unit_test(test_policy_errors),
		cmocka_unit_test(test_unix_entries),
		cmocka_unit_test(test_policy_rules),
		cmocka_unit_test(test_name_grants),
		cmocka_unit_test(test_sni_entries),
		cmocka_unit_test(test_public_and_private_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
