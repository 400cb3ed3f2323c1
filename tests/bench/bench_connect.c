// SPDX-License-Identifier: MIT
/*
 * connect() cost, for tests/bench/run.py.
 *   bench_connect server PORT [ADDR]   accept and close on ADDR:PORT (default 127.0.0.1) until
 *                                      stdin closes
 *   bench_connect client HOST PORT N ERRNO
 *       N times: socket, connect (must end with ERRNO, 0 = success), close with an RST
 *       (SO_LINGER 0: no TIME_WAIT, so the ephemeral ports never run out). Prints the mean
 *       nanoseconds spent in connect() alone and in the whole iteration.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int server(int port, const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct pollfd p[2];

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return 2;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		perror("bench_connect server");
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	p[0] = (struct pollfd){ .fd = fd, .events = POLLIN };
	p[1] = (struct pollfd){ .fd = 0, .events = POLLIN };
	for (;;) {
		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents)
			return 0; /* stdin closed: the runner is done */
		for (;;) {
			int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK);

			if (c < 0)
				break;
			close(c);
		}
	}
}

static int client(const char *host, int port, long n, int want)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	long long in_connect = 0, t0;

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return 2;
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0), r, e;
		long long a;

		if (fd < 0) {
			perror("socket");
			return 1;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		a = now_ns();
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		in_connect += now_ns() - a;
		e = r ? errno : 0;
		close(fd);
		if (e != want) {
			fprintf(stderr, "connect %s:%d: got %s, want %s\n", host, port, strerror(e),
				strerror(want));
			return 1;
		}
	}
	printf("%.1f %.1f\n", (double)in_connect / n, (double)(now_ns() - t0) / n);
	return 0;
}

int main(int argc, char **argv)
{
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "server"))
		return server(atoi(argv[2]), argc == 4 ? argv[3] : "127.0.0.1");
	if (argc == 6 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atol(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: bench_connect server PORT [ADDR] | client HOST PORT N ERRNO\n");
	return 2;
}
