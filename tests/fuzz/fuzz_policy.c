// SPDX-License-Identifier: MIT
/*
 * Policy files: sl_policy_load() and lua_host.c's sl_lua_load() (the daemon's two ways in) on
 * any source, then what sluiced does with a loaded policy (kernel rules, name grants). A policy runs as Lua in a restricted state with instruction
 * and memory caps, so every input must come back, quickly enough, with a policy or a one-line
 * reason: no crash, no hang (libFuzzer's -timeout), no leak. Invariants: a refusal says why;
 * every entry of a loaded policy prints back (sl_entry_str()) to a string that parses to the
 * same entry; every host entry grants its own name; the rules compile or are refused as too
 * many ranges.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "lua/lua_host.h"
#include "lua/lua_policy.h"
#include "policy/policy.h"
#include "kernel/rules.h"

static void check_entries(const struct sl_entry_list *l, int is_private)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct sl_entry *e = &l->v[i];
		struct sl_entry back;
		char s[300], err[256];

		sl_entry_str(e, s, sizeof(s));
		FUZZ_CHECK(sl_entry_parse(s, &back, err, sizeof(err)) == 0);
		back.protos = e->protos;
		FUZZ_CHECK(back.kind == e->kind && back.has_port == e->has_port &&
			   back.port_lo == e->port_lo && back.port_hi == e->port_hi);
		if (e->kind == SL_ENTRY_ADDR)
			FUZZ_CHECK(back.family == e->family && back.plen == e->plen &&
				   !memcmp(back.addr, e->addr, 16));
		else
			FUZZ_CHECK(!strcmp(back.host, e->host));
		FUZZ_CHECK(!is_private || (e->kind == SL_ENTRY_ADDR && !e->has_port));
	}
}

static void check_grants(const struct sl_policy *p, const struct sl_entry_list *l)
{
	struct sl_grant g[16];
	char name[SL_HOST_MAX + 8];

	for (size_t i = 0; i < l->n && i < 64; i++) {
		const struct sl_entry *e = &l->v[i];

		if (e->kind == SL_ENTRY_ADDR)
			continue;
		snprintf(name, sizeof(name), "%s%s", e->kind == SL_ENTRY_WILDCARD ? "x." : "",
			 e->host);
		FUZZ_CHECK(sl_policy_name_grants(p, name, g, 16) >= 1);
		FUZZ_CHECK(sl_policy_name_verdict(p, name) != SL_VERDICT_DENY);
		FUZZ_CHECK(sl_policy_has_names(p));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_kentry *ents = NULL, bad;
	struct sl_rule_set rs;
	struct sl_policy *p;
	char err[512] = "";
	size_t n = 0;
	int r;

	{
		struct sl_lua_opts o = { 0 };
		struct sl_policy *lp = NULL;
		struct sl_lua *lua;

		lua = sl_lua_load("fuzz.lua", (const char *)data, size, &o, "fuzz", &lp, err,
				  sizeof(err));
		FUZZ_CHECK(!lua == !lp);
		if (!lua)
			FUZZ_CHECK(err[0] && strlen(err) < sizeof(err));
		else
			(void)sl_lua_has_handlers(lua);
		sl_lua_unref(lua);
		sl_policy_free(lp);
	}
	err[0] = 0;
	p = sl_policy_load("fuzz.lua", (const char *)data, size, err, sizeof(err));
	if (!p) {
		FUZZ_CHECK(err[0] && strlen(err) < sizeof(err));
		return 0;
	}
	check_entries(&p->allow, 0);
	check_entries(&p->intercept, 0);
	check_entries(&p->private_ranges, 1);
	check_grants(p, &p->allow);
	check_grants(p, &p->intercept);

	sl_rule_set_init(&rs);
	err[0] = 0;
	r = sl_policy_rules(p, &rs, err, sizeof(err));
	FUZZ_CHECK(r == 0 || (r == -EINVAL && err[0]));
	if (!r) {
		r = sl_rules_compile(&rs, &ents, &n, &bad);
		FUZZ_CHECK(r == 0 || r == -E2BIG);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(ents[i].val.n >= 1 && ents[i].val.n <= SL_MAX_PORT_RANGES);
		free(ents);
	}
	sl_rule_set_free(&rs);
	sl_policy_free(p);
	return 0;
}
