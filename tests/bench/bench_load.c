// SPDX-License-Identifier: MIT
/*
 * An open-loop HTTPS load generator, for tests/bench/run.py: requests leave at a fixed rate
 * whatever the server does, so a slow response cannot hide behind the next request not being
 * sent (the closed-loop "coordinated omission" of wrk and ab). Each request has an intended
 * start time, t0 + i / RATE; its latency is counted from that time, not from when a free
 * connection finally sent it, so the time a request spent waiting behind a slow one counts.
 *
 *   bench_load HOST PORT PATH CONNS RATE SECONDS [HEADER]...
 *
 * HOST is resolved with getaddrinfo (inside a sandbox that goes through sluice's DNS) and sent
 * as SNI and Host. CONNS keep-alive TLS connections carry at most one request each (HTTP/1.1
 * without pipelining, like a browser or an SDK); a due request waits for the first idle one.
 * The run sends RATE * SECONDS requests and waits at most 10 s more for the last answers.
 * Requests still unsent or unanswered then are counted as late, with the time they had waited
 * so far as their latency (a lower bound): an overloaded server shows up in the percentiles.
 * The certificate is not verified (as wrk does not): this measures, it does not test.
 *
 * Prints one JSON object: requests, ok, errors, late, the target and achieved rate, and latency
 * percentiles in microseconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 1024
#define DRAIN_NS (10LL * 1000000000LL)
#define RBUF 65536

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_IDLE, C_BUSY, C_DEAD };

struct conn {
	int fd;
	SSL *ssl;
	enum conn_state state;
	long long req; /* index of the request in flight */
	size_t wlen, woff; /* request bytes to write */
	/* response parsing */
	char head[8192];
	size_t hlen;
	int in_body;
	int chunked;
	long long body_left; /* Content-Length mode: bytes left; chunked: bytes left in chunk */
	int chunk_state; /* 0 size line, 1 data, 2 CRLF after data, 3 trailers */
	char line[64];
	size_t llen;
	int status;
};

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

static char request[16384];
static size_t request_len;
static long long *lat_ns, *due_ns;
static long long nreq, next_req, done_ok, done_err, answered;
static struct addrinfo *target;
static SSL_CTX *ctx;
static const char *host;
static int epfd;

static long long due(long long i, long long t0, double rate)
{
	return t0 + (long long)(i * 1e9 / rate);
}

static int conn_open(struct conn *c)
{
	int one = 1;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c };

	memset(c, 0, sizeof(*c));
	c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd == -1)
		return -errno;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, target->ai_addr, target->ai_addrlen) == -1 && errno != EINPROGRESS)
		return -errno;
	c->ssl = SSL_new(ctx);
	SSL_set_fd(c->ssl, c->fd);
	SSL_set_tlsext_host_name(c->ssl, host);
	SSL_set_connect_state(c->ssl);
	c->state = C_HANDSHAKE;
	c->req = -1;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1)
		return -errno;
	return 0;
}

static void conn_kill(struct conn *c)
{
	if (c->state == C_DEAD)
		return;
	if (c->req >= 0) {
		done_err++;
		answered++;
		lat_ns[c->req] = -1;
		c->req = -1;
	}
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	SSL_free(c->ssl);
	close(c->fd);
	c->ssl = NULL;
	c->state = C_DEAD;
}

/* Feeds response bytes to the parser; returns 1 when the response is complete, 0 if more is
 * needed, -1 on a malformed response. */
static int parse(struct conn *c, const char *p, size_t n)
{
	while (n) {
		if (!c->in_body) {
			char *end, *cl, *te;

			if (c->hlen + 1 >= sizeof(c->head))
				return -1;
			c->head[c->hlen++] = *p++;
			n--;
			c->head[c->hlen] = 0;
			if (c->hlen < 4 || memcmp(c->head + c->hlen - 4, "\r\n\r\n", 4))
				continue;
			if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1)
				return -1;
			for (end = c->head; *end; end++)
				if (*end >= 'A' && *end <= 'Z')
					*end += 'a' - 'A';
			cl = strstr(c->head, "\r\ncontent-length:");
			te = strstr(c->head, "\r\ntransfer-encoding:");
			c->in_body = 1;
			if (te && strstr(te, "chunked") &&
			    strstr(te, "chunked") < strstr(te + 2, "\r\n")) {
				c->chunked = 1;
				c->chunk_state = 0;
				c->llen = 0;
			} else if (cl) {
				c->body_left = strtoll(cl + 17, NULL, 10);
				if (c->body_left == 0)
					return 1;
			} else if (c->status == 204 || c->status == 304) {
				return 1;
			} else {
				return -1; /* body until close: not keep-alive */
			}
			continue;
		}
		if (!c->chunked) {
			size_t k = (long long)n < c->body_left ? n : (size_t)c->body_left;

			c->body_left -= k;
			p += k;
			n -= k;
			if (c->body_left == 0)
				return n ? -1 : 1;
			continue;
		}
		switch (c->chunk_state) {
		case 0:
		case 2:
		case 3:
			if (c->llen + 1 >= sizeof(c->line))
				return -1;
			c->line[c->llen++] = *p++;
			n--;
			if (c->llen < 2 || c->line[c->llen - 2] != '\r' ||
			    c->line[c->llen - 1] != '\n')
				continue;
			c->line[c->llen] = 0;
			if (c->chunk_state == 2) {
				c->chunk_state = 0;
			} else if (c->chunk_state == 3) {
				if (c->llen == 2)
					return n ? -1 : 1;
			} else {
				c->body_left = strtoll(c->line, NULL, 16);
				c->chunk_state = c->body_left ? 1 : 3;
			}
			c->llen = 0;
			break;
		case 1: {
			size_t k = (long long)n < c->body_left ? n : (size_t)c->body_left;

			c->body_left -= k;
			p += k;
			n -= k;
			if (!c->body_left)
				c->chunk_state = 2;
			break;
		}
		}
	}
	return 0;
}

static void start_request(struct conn *c, long long i)
{
	c->req = i;
	c->woff = 0;
	c->wlen = request_len;
	c->hlen = 0;
	c->in_body = 0;
	c->chunked = 0;
	c->body_left = 0;
	c->status = 0;
	c->state = C_BUSY;
}

/* Drives one connection as far as it goes without blocking. */
static void conn_step(struct conn *c)
{
	static char buf[RBUF];

	for (;;) {
		int r;

		if (c->state == C_HANDSHAKE) {
			r = SSL_do_handshake(c->ssl);
			if (r == 1) {
				c->state = C_IDLE;
				return;
			}
		} else if (c->state == C_BUSY && c->woff < c->wlen) {
			r = SSL_write(c->ssl, request + c->woff, c->wlen - c->woff);
			if (r > 0) {
				c->woff += r;
				continue;
			}
		} else if (c->state == C_BUSY || c->state == C_IDLE) {
			r = SSL_read(c->ssl, buf, sizeof(buf));
			if (r > 0) {
				int k;

				if (c->state == C_IDLE) {
					conn_kill(c); /* bytes nobody asked for */
					return;
				}
				k = parse(c, buf, r);
				if (k < 0) {
					conn_kill(c);
					return;
				}
				if (k == 1) {
					lat_ns[c->req] = now_ns() - due_ns[c->req];
					if (c->status >= 200 && c->status < 300)
						done_ok++;
					else
						done_err++;
					answered++;
					c->req = -1;
					c->state = C_IDLE;
					return;
				}
				continue;
			}
		} else {
			return;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return;
		default:
			conn_kill(c);
			return;
		}
	}
}

int main(int argc, char **argv)
{
	static struct conn conns[MAX_CONNS];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	long long t0, end_send, i, late = 0;
	int nconns, port, err;
	double rate, secs;
	size_t n;

	if (argc < 7) {
		fprintf(stderr,
			"usage: bench_load HOST PORT PATH CONNS RATE SECONDS [HEADER]...\n");
		return 2;
	}
	host = argv[1];
	port = atoi(argv[2]);
	nconns = atoi(argv[4]);
	rate = atof(argv[5]);
	secs = atof(argv[6]);
	if (nconns < 1 || nconns > MAX_CONNS || rate <= 0 || secs <= 0 || port <= 0) {
		fprintf(stderr, "bench_load: bad arguments\n");
		return 2;
	}
	err = getaddrinfo(host, argv[2], &hints, &target);
	if (err) {
		fprintf(stderr, "bench_load: %s: %s\n", host, gai_strerror(err));
		return 1;
	}
	n = snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: %s\r\n", argv[3], host);
	for (int a = 7; a < argc && n < sizeof(request); a++)
		n += snprintf(request + n, sizeof(request) - n, "%s\r\n", argv[a]);
	n += snprintf(request + n, sizeof(request) - n, "\r\n");
	if (n >= sizeof(request))
		return 2;
	request_len = n;
	nreq = (long long)(rate * secs);
	if (nreq < 1)
		nreq = 1;
	lat_ns = calloc(nreq, sizeof(*lat_ns));
	due_ns = calloc(nreq, sizeof(*due_ns));
	if (!lat_ns || !due_ns)
		return 1;
	/* Wake-ups a few microseconds apart need a timer slack below the default 50 us. */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
	epfd = epoll_create1(0);
	for (int k = 0; k < nconns; k++) {
		err = conn_open(&conns[k]);
		if (err) {
			fprintf(stderr, "bench_load: connect: %s\n", strerror(-err));
			return 1;
		}
	}
	/* Handshakes first, outside the measurement: this is the keep-alive case. */
	{
		long long deadline = now_ns() + 10000000000LL;
		int ready = 0;

		while (ready < nconns && now_ns() < deadline) {
			struct epoll_event evs[64];
			int k = epoll_wait(epfd, evs, 64, 100);

			for (int e = 0; e < k; e++)
				conn_step(evs[e].data.ptr);
			ready = 0;
			for (int c = 0; c < nconns; c++) {
				if (conns[c].state == C_DEAD) {
					fprintf(stderr, "bench_load: TLS handshake failed\n");
					ERR_print_errors_fp(stderr);
					return 1;
				}
				ready += conns[c].state == C_IDLE;
			}
		}
		if (ready < nconns) {
			fprintf(stderr, "bench_load: handshakes did not finish in 10 s\n");
			return 1;
		}
	}
	t0 = now_ns() + 1000000;
	for (i = 0; i < nreq; i++)
		due_ns[i] = due(i, t0, rate);
	end_send = due_ns[nreq - 1] + DRAIN_NS;
	next_req = 0;
	while (answered < nreq) {
		struct epoll_event evs[64];
		long long now = now_ns(), wait_ns;
		struct timespec ts;
		int k, alive = 0;

		if (now > end_send)
			break;
		/* Hand every due request to an idle connection, oldest first. */
		for (int c = 0; c < nconns && next_req < nreq && due_ns[next_req] <= now; c++) {
			if (conns[c].state == C_DEAD && conn_open(&conns[c]) != 0)
				continue;
			if (conns[c].state != C_IDLE)
				continue;
			start_request(&conns[c], next_req++);
			conn_step(&conns[c]);
		}
		for (int c = 0; c < nconns; c++)
			alive += conns[c].state != C_DEAD;
		if (!alive) {
			fprintf(stderr, "bench_load: every connection failed\n");
			break;
		}
		wait_ns = next_req < nreq ? due_ns[next_req] - now_ns() : 1000000;
		if (wait_ns < 0)
			wait_ns = 0;
		if (wait_ns > 1000000)
			wait_ns = 1000000;
		ts.tv_sec = 0;
		ts.tv_nsec = wait_ns;
		k = epoll_pwait2(epfd, evs, 64, &ts, NULL);
		for (int e = 0; e < k; e++)
			conn_step(evs[e].data.ptr);
	}
	{
		long long end = now_ns(), m = 0, *v = calloc(nreq, sizeof(*v));
		double sum = 0, span;

		/* Never answered: their wait so far is a lower bound of their latency. */
		for (i = 0; i < nreq; i++) {
			if (lat_ns[i] == 0) {
				lat_ns[i] = end - due_ns[i] > 0 ? end - due_ns[i] : 1;
				late++;
			}
			if (lat_ns[i] > 0) {
				v[m++] = lat_ns[i];
				sum += lat_ns[i];
			}
		}
		qsort(v, m, sizeof(*v), cmp_ll);
		span = (end - t0) / 1e9;
#define PCT(p) (m ? v[(long long)((m - 1) * (p))] / 1e3 : 0)
		printf("{\"requests\": %lld, \"ok\": %lld, \"errors\": %lld, \"late\": %lld, "
		       "\"rate_target\": %.1f, \"rate_achieved\": %.1f, \"conns\": %d, "
		       "\"mean_us\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
		       "\"p999_us\": %.1f, \"max_us\": %.1f}\n",
		       nreq, done_ok, done_err, late, rate, span > 0 ? done_ok / span : 0, nconns,
		       m ? sum / m / 1e3 : 0, PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999),
		       m ? v[m - 1] / 1e3 : 0);
		free(v);
	}
	for (int c = 0; c < nconns; c++)
		conn_kill(&conns[c]);
	return 0;
}
