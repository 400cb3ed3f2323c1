/* SPDX-License-Identifier: MIT */
/*
 * Address helpers: prefix masks, v4-mapped IPv6, sockaddr <-> bytes, the public Internet, UNIX
 * socket names in policy syntax.
 *
 * Threading: pure functions of their arguments; any thread, nothing blocks.
 */
#ifndef SL_ADDR_H
#define SL_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include <linux/types.h>
#include "sluice.h"

struct sockaddr;
struct sockaddr_storage;

/* Zeroes the bits of @addr beyond @plen. */
void sl_prefix_mask(uint8_t *addr, int addr_len, int plen);
/* Whether @addr (@addr_len bytes) lies in @prefix/@plen. */
int sl_addr_in_prefix(const uint8_t *addr, const uint8_t *prefix, int addr_len, int plen);

/* Whether the 16 bytes at @addr are an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
int sl_addr_is_v4mapped(const uint8_t *addr);
/* @addr of @family (4 or 16 bytes, network order) as the kernel judges it: a v4-mapped IPv6
 * address becomes its IPv4 address (the cgroup programs apply the IPv4 rules to it). Writes
 * 16 bytes to @out, zero past the 4 of IPv4, and returns the family of @out. */
uint8_t sl_addr_unmap(uint8_t family, const uint8_t *addr, uint8_t out[16]);

/* The address of an AF_INET or AF_INET6 @sa: its family, 16 bytes in @addr (network order,
 * zero past the 4 of IPv4) and its port in host order (@port may be NULL). Returns 0, or
 * -EAFNOSUPPORT (nothing written) for another family. */
int sl_addr_from_sockaddr(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16],
			  uint16_t *port);
/* The sockaddr of @addr (network order) of @family and @port (host order) in @ss, zeroed
 * first; a v4-mapped IPv6 address stays IPv6 (sl_addr_unmap() first to connect over IPv4).
 * Returns its length, or 0 for another family than AF_INET and AF_INET6. */
unsigned sl_addr_to_sockaddr(uint8_t family, const uint8_t *addr, uint16_t port,
			     struct sockaddr_storage *ss);

/* Whether @addr (network order; 4 or 16 bytes) is on the public Internet: not loopback,
 * private, shared, link-local (metadata), documentation, multicast or reserved. v4-mapped
 * IPv6 is judged as IPv4. */
int sl_addr_is_public(uint8_t family, const uint8_t *addr);

/* @addr of @family (network order) as text into @buf (INET6_ADDRSTRLEN bytes hold any), as
 * inet_ntop() writes it; IPv4 without stdio, for the DNS path's every answer. Returns the
 * length, or 0 (buf "") if it does not fit or @family is neither AF_INET nor AF_INET6. */
size_t sl_addr_str(uint8_t family, const uint8_t *addr, char *buf, size_t len);

/* Formats a UNIX socket address back into its policy syntax ("/path" or "@name"); bytes an
 * abstract name may hold that are not printable show as \xHH. */
void sl_unix_str(const struct sl_unix_key *k, char *buf, size_t len);

#endif
