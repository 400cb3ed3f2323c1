// SPDX-License-Identifier: MIT
/*
 * DNS resolution cost, for tests/bench/run.py.
 *   bench_dns SERVER PORT NAME COUNT WINDOW
 * Sends COUNT A queries for NAME over one connected UDP socket, keeping WINDOW in flight
 * (WINDOW 1: one at a time, for latency). NAME @FILE: the names of FILE (one a line), each in
 * turn, so that every query is for a name not yet cached (COUNT = the number of names).
 * Every answer must be NOERROR with an answer record.
 * Prints: queries per second, p50 and p99 round-trip microseconds.
 */
#include <arpa/inet.h>
#include <errno.h>
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

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

static size_t build(unsigned char *q, unsigned id, const char *name)
{
	size_t n = 12;
	const char *s = name;

	memset(q, 0, 12);
	q[0] = id >> 8;
	q[1] = id;
	q[2] = 1; /* RD */
	q[5] = 1; /* QDCOUNT */
	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		q[n++] = l;
		memcpy(q + n, s, l);
		n += l;
		s += l + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0;
	q[n++] = 1; /* A */
	q[n++] = 0;
	q[n++] = 1; /* IN */
	return n;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	long count, window, sent = 0, done = 0;
	long long *rtt, *sent_at, t0;
	unsigned char q[512], r[4096];
	char **names = NULL;
	long nnames = 0;
	int fd;

	if (argc != 6) {
		fprintf(stderr, "usage: bench_dns SERVER PORT NAME COUNT WINDOW\n");
		return 2;
	}
	inet_pton(AF_INET, argv[1], &sa.sin_addr);
	sa.sin_port = htons(atoi(argv[2]));
	count = atol(argv[4]);
	window = atol(argv[5]);
	if (argv[3][0] == '@') {
		FILE *f = fopen(argv[3] + 1, "r");
		char line[300];
		long cap = 0;

		if (!f) {
			perror(argv[3] + 1);
			return 1;
		}
		while (fgets(line, sizeof(line), f)) {
			line[strcspn(line, "\r\n")] = 0;
			if (!line[0])
				continue;
			if (nnames == cap) {
				cap = cap ? cap * 2 : 1024;
				names = realloc(names, cap * sizeof(*names));
				if (!names)
					return 1;
			}
			names[nnames++] = strdup(line);
		}
		fclose(f);
		if (!nnames) {
			fprintf(stderr, "bench_dns: no names in %s\n", argv[3] + 1);
			return 1;
		}
	}
	rtt = calloc(count, sizeof(*rtt));
	sent_at = calloc(65536, sizeof(*sent_at));
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("bench_dns");
		return 1;
	}
	t0 = now_ns();
	while (done < count) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		while (sent < count && sent - done < window) {
			unsigned id = sent & 0xffff;
			size_t n = build(q, id, names ? names[sent % nnames] : argv[3]);

			sent_at[id] = now_ns();
			if (send(fd, q, n, 0) != (ssize_t)n) {
				perror("send");
				return 1;
			}
			sent++;
		}
		if (poll(&p, 1, 5000) != 1) {
			fprintf(stderr, "bench_dns: no answer within 5 s (%ld of %ld done)\n", done,
				count);
			return 1;
		}
		for (;;) {
			ssize_t n = recv(fd, r, sizeof(r), MSG_DONTWAIT);
			unsigned id;

			if (n < 0)
				break;
			if (n < 12 || (r[3] & 0xf) != 0 || (r[6] == 0 && r[7] == 0)) {
				fprintf(stderr, "bench_dns: bad answer (rcode %d)\n",
					n >= 4 ? r[3] & 0xf : -1);
				return 1;
			}
			id = r[0] << 8 | r[1];
			rtt[done++] = now_ns() - sent_at[id];
			if (done == count)
				break;
		}
	}
	{
		double secs = (now_ns() - t0) / 1e9;

		qsort(rtt, count, sizeof(*rtt), cmp_ll);
		printf("%.0f %.1f %.1f\n", count / secs, rtt[count / 2] / 1e3,
		       rtt[count * 99 / 100] / 1e3);
	}
	return 0;
}
