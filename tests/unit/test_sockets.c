// SPDX-License-Identifier: MIT
/* Loopback listeners, in our network namespace and inside another one. Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel/sockets.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static char ns_name[64];

static uint64_t netns_cookie(int fd)
{
	uint64_t c = 0;
	socklen_t l = sizeof(c);

	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &c, &l), 0);
	return c;
}

static int reachable(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), r;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return r == 0;
}

static void test_here(void **state)
{
	uint16_t port = 0;
	int fd, fd6;

	(void)state;
	fd = sl_listen_loopback(-1, AF_INET, SOCK_STREAM, 0, &port);
	assert_true(fd >= 0);
	assert_true(port > 0);
	assert_true(reachable(port));
	/* The same port on ::1, IPv6 only, as the DNS and proxy listeners pair them. */
	fd6 = sl_listen_loopback(-1, AF_INET6, SOCK_STREAM, port, NULL);
	assert_true(fd6 >= 0);
	assert_int_equal(sl_listen_loopback(-1, AF_INET, SOCK_STREAM, port, NULL), -EADDRINUSE);
	close(fd6);
	close(fd);
}

static void test_in_another_namespace(void **state)
{
	char cmd[160], path[128];
	uint16_t port = 0;
	int nsfd, fd, here;

	(void)state;
	snprintf(path, sizeof(path), "/run/netns/%s", ns_name);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(nsfd >= 0);
	fd = sl_listen_loopback(nsfd, AF_INET, SOCK_STREAM, 0, &port);
	assert_true(fd >= 0);
	here = socket(AF_INET, SOCK_STREAM, 0);
	/* It lives in the other namespace, and we are back in ours. */
	assert_int_not_equal(netns_cookie(fd), netns_cookie(here));
	assert_false(reachable(port));
	snprintf(cmd, sizeof(cmd),
		 "ip netns exec %s /usr/bin/python3 -c \"import socket; "
		 "socket.create_connection(('127.0.0.1', %u), timeout=5)\"",
		 ns_name, port);
	assert_int_equal(system(cmd), 0);
	close(here);
	close(fd);
	close(nsfd);
}

static int setup(void **state)
{
	char cmd[160];

	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_sockets creates a network namespace: run it as root\n");
		return -1;
	}
	snprintf(ns_name, sizeof(ns_name), "sl-unit-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "ip netns add %s && ip -n %s link set lo up", ns_name, ns_name);
	return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "ip netns del %s", ns_name);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_here),
		cmocka_unit_test(test_in_another_namespace),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
