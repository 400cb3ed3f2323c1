// SPDX-License-Identifier: MIT
/*
 * A sandbox's layer (struct sl_layer, sb_int.h): what a sandbox enforces and runs, built
 * whole, immutable once published, and reference-counted, so that a switch builds a new one
 * beside the one in force and swaps a pointer, and so that building it (the compile of a big
 * policy) needs nothing that the loop is using.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "lua/lua_host.h"
#include "policy/policy.h"
#include "sandbox/sb_int.h"

/* The policy's egress: shared by every layer of one loaded policy (a handler switch keeps
 * the policy and its Lua state). */
struct sb_base {
	unsigned refs;
	struct sl_policy *p;
};

struct sb_base *sb_base_new(struct sl_policy *p)
{
	struct sb_base *b = calloc(1, sizeof(*b));

	if (!b) {
		sl_policy_free(p);
		return NULL;
	}
	b->refs = 1;
	b->p = p;
	return b;
}

struct sb_base *sb_base_ref(struct sb_base *b)
{
	if (b)
		b->refs++;
	return b;
}

void sb_base_unref(struct sb_base *b)
{
	if (!b || --b->refs)
		return;
	sl_policy_free(b->p);
	free(b);
}

const struct sl_policy *sb_base_policy(const struct sb_base *b)
{
	return b ? b->p : NULL;
}

struct sl_layer *sb_layer_new(struct sl_lua *lua, struct sb_base *base, const char *handler,
			      struct sl_policy *hlayer, const char *params)
{
	struct sl_layer *l;

	if (handler && strlen(handler) >= sizeof(l->handler)) {
		sl_policy_free(hlayer);
		errno = EINVAL;
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (!l || (params && !(l->params = strdup(params)))) {
		free(l);
		sl_policy_free(hlayer);
		errno = ENOMEM;
		return NULL;
	}
	l->refs = 1;
	l->lua = lua ? sl_lua_ref(lua) : NULL;
	l->base = sb_base_ref(base);
	l->hlayer = hlayer;
	l->policy = hlayer ? hlayer : sb_base_policy(base);
	snprintf(l->handler, sizeof(l->handler), "%s", handler ? handler : "");
	sl_rule_set_init(&l->rules);
	return l;
}

int sb_layer_compile(struct sl_layer *l, char *err, size_t errlen)
{
	int e = l->policy ? sl_policy_rules(l->policy, &l->rules, err, errlen) : 0;

	/* The sorted view each resolved address asks (a failure leaves the scans). */
	if (!e)
		sl_rule_index_build(&l->rules_ix, &l->rules);
	return e;
}

struct sl_layer *sb_layer_ref(struct sl_layer *l)
{
	if (l)
		l->refs++;
	return l;
}

int sb_layer_sole(const struct sl_layer *l)
{
	return l->refs == 1 && (!l->lua || sl_lua_refs(l->lua) == 1) &&
	       (!l->base || l->base->refs == 1);
}

void sb_layer_unref(struct sl_layer *l)
{
	if (!l || --l->refs)
		return;
	sl_lua_unref(l->lua);
	sb_base_unref(l->base);
	sl_policy_free(l->hlayer);
	free(l->params);
	sl_rule_index_free(&l->rules_ix);
	sl_rule_set_free(&l->rules);
	free(l);
}
