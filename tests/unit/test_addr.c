// SPDX-License-Identifier: MIT
/* core/addr.c: v4-mapped addresses, sockaddr <-> bytes, prefixes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "core/addr.h"

static void pton6(const char *s, uint8_t a[16])
{
	assert_int_equal(inet_pton(AF_INET6, s, a), 1);
}

static void test_v4mapped(void **state)
{
	uint8_t a[16], out[16], want[16] = { 127, 0, 0, 1 };

	(void)state;
	pton6("::ffff:127.0.0.1", a);
	assert_true(sl_addr_is_v4mapped(a));
	memset(out, 0xaa, sizeof(out));
	assert_int_equal(sl_addr_unmap(AF_INET6, a, out), AF_INET);
	assert_memory_equal(out, want, 16);

	pton6("::1", a);
	assert_false(sl_addr_is_v4mapped(a));
	assert_int_equal(sl_addr_unmap(AF_INET6, a, out), AF_INET6);
	assert_memory_equal(out, a, 16);
	pton6("::127.0.0.1", a); /* IPv4-compatible, not mapped */
	assert_false(sl_addr_is_v4mapped(a));

	memset(a, 0xbb, sizeof(a));
	memcpy(a, want, 4);
	assert_int_equal(sl_addr_unmap(AF_INET, a, out), AF_INET);
	assert_memory_equal(out, want, 16); /* zero past the 4 bytes */
}

static void test_sockaddr_round_trip(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	uint8_t a4[16] = { 127, 0, 0, 20 }, a6[16], addr[16], family = 0;
	uint16_t port = 0;

	(void)state;
	assert_int_equal(sl_addr_to_sockaddr(AF_INET, a4, 443, &ss), sizeof(*sin));
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 443);
	assert_int_equal(sin->sin_addr.s_addr, htonl(0x7f000014));
	assert_int_equal(sl_addr_from_sockaddr((struct sockaddr *)&ss, &family, addr, &port), 0);
	assert_int_equal(family, AF_INET);
	assert_int_equal(port, 443);
	assert_memory_equal(addr, a4, 16);

	pton6("::ffff:127.0.0.20", a6); /* stays IPv6 */
	assert_int_equal(sl_addr_to_sockaddr(AF_INET6, a6, 53, &ss), sizeof(*sin6));
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 53);
	assert_int_equal(sl_addr_from_sockaddr((struct sockaddr *)&ss, &family, addr, NULL), 0);
	assert_int_equal(family, AF_INET6);
	assert_memory_equal(addr, a6, 16);

	assert_int_equal(sl_addr_to_sockaddr(AF_UNIX, a6, 1, &ss), 0);
	ss.ss_family = AF_UNIX;
	family = 0;
	assert_int_equal(sl_addr_from_sockaddr((struct sockaddr *)&ss, &family, addr, &port),
			 -EAFNOSUPPORT);
	assert_int_equal(family, 0);
}

static void test_prefix(void **state)
{
	uint8_t a[4] = { 10, 1, 2, 3 }, p8[4] = { 10 }, p16[4] = { 10, 2 };
	uint8_t m[4] = { 192, 168, 255, 255 };

	(void)state;
	assert_true(sl_addr_in_prefix(a, p8, 4, 8));
	assert_false(sl_addr_in_prefix(a, p16, 4, 16));
	assert_true(sl_addr_in_prefix(a, p8, 4, 14)); /* 10.0.0.0/14 holds 10.1 */
	sl_prefix_mask(m, 4, 20);
	assert_int_equal(m[2], 0xf0);
	assert_int_equal(m[3], 0);
	assert_false(sl_addr_is_public(AF_INET, a));
}

/* sl_addr_str() writes what inet_ntop() writes, for every kind of IPv4 octet, and refuses a
 * buffer one byte short rather than truncate. */
static void test_addr_str(void **state)
{
	static const uint8_t v4[][4] = { { 0, 0, 0, 0 },     { 127, 0, 0, 1 },
					 { 9, 10, 99, 100 }, { 255, 255, 255, 255 },
					 { 10, 200, 1, 50 }, { 1, 2, 3, 4 } };
	char buf[INET6_ADDRSTRLEN], want[INET6_ADDRSTRLEN];
	uint8_t a6[16];

	(void)state;
	for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
		size_t n = sl_addr_str(AF_INET, v4[i], buf, sizeof(buf));

		inet_ntop(AF_INET, v4[i], want, sizeof(want));
		assert_string_equal(buf, want);
		assert_int_equal(n, strlen(want));
		assert_int_equal(sl_addr_str(AF_INET, v4[i], buf, n), 0);
		assert_string_equal(buf, "");
		assert_int_equal(sl_addr_str(AF_INET, v4[i], buf, n + 1), n);
	}
	pton6("2001:db8::1", a6);
	assert_int_equal(sl_addr_str(AF_INET6, a6, buf, sizeof(buf)), strlen("2001:db8::1"));
	assert_string_equal(buf, "2001:db8::1");
	assert_int_equal(sl_addr_str(AF_UNIX, a6, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v4mapped),
		cmocka_unit_test(test_sockaddr_round_trip),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_addr_str),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
