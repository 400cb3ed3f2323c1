/* SPDX-License-Identifier: MIT */
/*
 * What the libFuzzer targets of tests/fuzz share: an invariant check that aborts with the
 * failed condition (libFuzzer then keeps the input as a crash), and a small deterministic
 * generator for choices drawn from the input's first bytes (chunk sizes, buffer sizes).
 */
#ifndef SL_FUZZ_H
#define SL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                     \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                      \
			abort();                                                             \
		}                                                                            \
	} while (0)

/* xorshift32: choices that depend on the input only, so that every crash reproduces. */
static inline uint32_t fuzz_rand(uint32_t *s)
{
	uint32_t x = *s ? *s : 0x9e3779b9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

#endif
