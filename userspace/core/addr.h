/* SPDX-License-Identifier: MIT */
/*
 * Address helpers: prefix masks, the public Internet, UNIX socket names in policy syntax.
 *
 * Threading: pure functions of their arguments; any thread, nothing blocks.
 */
#ifndef SL_ADDR_H
#define SL_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>
#include "sluice.h"

/* Zeroes the bits of @addr beyond @plen. */
void sl_prefix_mask(uint8_t *addr, int addr_len, int plen);

/* Whether @addr (network order; 4 or 16 bytes) is on the public Internet: not loopback,
 * private, shared, link-local (metadata), documentation, multicast or reserved. v4-mapped
 * IPv6 is judged as IPv4. */
int sl_addr_is_public(uint8_t family, const uint8_t *addr);

/* Formats a UNIX socket address back into its policy syntax ("/path" or "@name"); bytes an
 * abstract name may hold that are not printable show as \xHH. */
void sl_unix_str(const struct sl_unix_key *k, char *buf, size_t len);

#endif
