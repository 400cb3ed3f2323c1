// SPDX-License-Identifier: MIT
/*
 * The rule compile alone (sl_rules_compile), for rule counts a policy's Lua cannot reach (a
 * policy's top level is bounded to 10,000,000 instructions and 64 MiB): N /32 allow rules of
 * one port under a /8 of another port (every entry inherits the /8's range), compiled once.
 *
 *     bench_compile N     prints "ENTRIES SECONDS"
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "kernel/rules.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sl_addr_rule r = { .family = AF_INET,
				  .plen = 8,
				  .port_lo = 22,
				  .port_hi = 22,
				  .protos = SL_PROTO_TCP,
				  .verdict = SL_VERDICT_ALLOW };
	struct sl_kentry *ents = NULL;
	struct sl_rule_set rs;
	size_t n, nents = 0;
	double t;
	int err;

	if (argc != 2 || (n = strtoul(argv[1], NULL, 10)) == 0 || n > (1u << 24)) {
		fprintf(stderr, "usage: bench_compile N (1..16777216)\n");
		return 2;
	}
	sl_rule_set_init(&rs);
	r.addr[0] = 10;
	if (sl_rule_set_add(&rs, &r))
		return 1;
	r.plen = 32;
	r.port_lo = r.port_hi = 443;
	for (size_t i = 0; i < n - 1; i++) {
		r.addr[1] = (uint8_t)(i >> 16);
		r.addr[2] = (uint8_t)(i >> 8);
		r.addr[3] = (uint8_t)i;
		if (sl_rule_set_add(&rs, &r))
			return 1;
	}
	t = now_s();
	err = sl_rules_compile(&rs, &ents, &nents, NULL);
	t = now_s() - t;
	if (err) {
		fprintf(stderr, "bench_compile: %d\n", err);
		return 1;
	}
	printf("%zu %.3f\n", nents, t);
	free(ents);
	sl_rule_set_free(&rs);
	return 0;
}
