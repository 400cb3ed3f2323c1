// SPDX-License-Identifier: MIT
/*
 * Address helpers every layer needs: prefix masks, v4-mapped IPv6, sockaddr <-> bytes, whether
 * an address is on the public Internet, and the policy syntax of a UNIX socket address. One
 * copy each, instead of one per subsystem, so that they cannot drift apart (the kernel judges
 * a v4-mapped address by the IPv4 rules: a copy that forgot would decide differently).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/addr.h"

void sl_prefix_mask(uint8_t *addr, int addr_len, int plen)
{
	for (int i = 0; i < addr_len; i++) {
		int bits = plen - i * 8;

		if (bits >= 8)
			continue;
		addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
	}
}

static const struct {
	uint8_t addr[4];
	uint8_t plen;
} nonpublic4[] = {
	{ { 0, 0, 0, 0 }, 8 },	   { { 10, 0, 0, 0 }, 8 },	{ { 100, 64, 0, 0 }, 10 },
	{ { 127, 0, 0, 0 }, 8 },   { { 169, 254, 0, 0 }, 16 },	{ { 172, 16, 0, 0 }, 12 },
	{ { 192, 0, 0, 0 }, 24 },  { { 192, 0, 2, 0 }, 24 },	{ { 192, 168, 0, 0 }, 16 },
	{ { 198, 18, 0, 0 }, 15 }, { { 198, 51, 100, 0 }, 24 }, { { 203, 0, 113, 0 }, 24 },
	{ { 224, 0, 0, 0 }, 4 },   { { 240, 0, 0, 0 }, 4 },
};

static const struct {
	uint8_t addr[16];
	uint8_t plen;
} nonpublic6[] = {
	{ { 0 }, 96 }, /* ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d */
	{ { 0x01, 0x00 }, 64 }, /* 100::/64 discard */
	{ { 0x20, 0x01, 0x00, 0x00 }, 23 }, /* IETF protocol assignments (Teredo, ...) */
	{ { 0x20, 0x01, 0x0d, 0xb8 }, 32 }, /* documentation */
	{ { 0x20, 0x02 }, 16 }, /* 6to4: embeds an IPv4 address */
	{ { 0x00, 0x64, 0xff, 0x9b }, 32 }, /* NAT64 (64:ff9b::/96 and 64:ff9b:1::/48) */
	{ { 0xfc }, 7 }, /* unique local (fd00:ec2::254 is a metadata address) */
	{ { 0xfe, 0x80 }, 10 }, /* link-local */
	{ { 0xfe, 0xc0 }, 10 }, /* site-local */
	{ { 0xff }, 8 }, /* multicast */
};

int sl_addr_in_prefix(const uint8_t *addr, const uint8_t *prefix, int addr_len, int plen)
{
	uint8_t m[16];

	memcpy(m, addr, addr_len);
	sl_prefix_mask(m, addr_len, plen);
	return !memcmp(m, prefix, addr_len);
}

int sl_addr_is_v4mapped(const uint8_t *addr)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	return !memcmp(addr, mapped, 12);
}

uint8_t sl_addr_unmap(uint8_t family, const uint8_t *addr, uint8_t out[16])
{
	memset(out, 0, 16);
	if (family == AF_INET6 && sl_addr_is_v4mapped(addr)) {
		memcpy(out, addr + 12, 4);
		return AF_INET;
	}
	memcpy(out, addr, family == AF_INET ? 4 : 16);
	return family;
}

int sl_addr_from_sockaddr(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16],
			  uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memset(addr, 0, 16);
		memcpy(addr, &sin->sin_addr, 4);
		if (port)
			*port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		memcpy(addr, &sin6->sin6_addr, 16);
		if (port)
			*port = ntohs(sin6->sin6_port);
	} else {
		return -EAFNOSUPPORT;
	}
	*family = (uint8_t)sa->sa_family;
	return 0;
}

unsigned sl_addr_to_sockaddr(uint8_t family, const uint8_t *addr, uint16_t port,
			     struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		sin6->sin6_port = htons(port);
		return sizeof(*sin6);
	}
	return 0;
}

int sl_addr_is_public(uint8_t family, const uint8_t *addr)
{
	if (family == AF_INET6 && sl_addr_is_v4mapped(addr))
		return sl_addr_is_public(AF_INET, addr + 12);
	if (family == AF_INET) {
		for (size_t i = 0; i < sizeof(nonpublic4) / sizeof(nonpublic4[0]); i++)
			if (sl_addr_in_prefix(addr, nonpublic4[i].addr, 4, nonpublic4[i].plen))
				return 0;
		return 1;
	}
	for (size_t i = 0; i < sizeof(nonpublic6) / sizeof(nonpublic6[0]); i++)
		if (sl_addr_in_prefix(addr, nonpublic6[i].addr, 16, nonpublic6[i].plen))
			return 0;
	return 1;
}

void sl_unix_str(const struct sl_unix_key *k, char *buf, size_t len)
{
	size_t o = 0, n = k->len > SL_UNIX_PATH_MAX ? SL_UNIX_PATH_MAX : k->len;

	if (!len)
		return;
	buf[0] = 0;
	for (size_t i = 0; i < n && o + 5 < len; i++) {
		unsigned char c = k->path[i];

		if (i == 0 && c == 0)
			buf[o++] = '@';
		else if (c < 0x20 || c >= 0x7f || c == '\\')
			o += snprintf(buf + o, len - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	buf[o] = 0;
}

size_t sl_addr_str(uint8_t family, const uint8_t *addr, char *buf, size_t len)
{
	char t[INET_ADDRSTRLEN], *p = t;

	if (!len)
		return 0;
	buf[0] = 0;
	if (family == AF_INET6)
		return inet_ntop(AF_INET6, addr, buf, (socklen_t)len) ? strlen(buf) : 0;
	if (family != AF_INET)
		return 0;
	for (int i = 0; i < 4; i++) {
		unsigned v = addr[i];

		if (v >= 100)
			*p++ = (char)('0' + v / 100);
		if (v >= 10)
			*p++ = (char)('0' + v / 10 % 10);
		*p++ = (char)('0' + v % 10);
		*p++ = i < 3 ? '.' : 0;
	}
	if ((size_t)(p - t) > len)
		return 0;
	memcpy(buf, t, (size_t)(p - t));
	return (size_t)(p - t) - 1;
}
