// SPDX-License-Identifier: MIT
/*
 * A new TLS connection per request, for tests/bench/run.py, with the client's resumption
 * chosen rather than left to the client: wrk resumes whenever the server gives it a ticket,
 * so its figure alone does not say whether a peer was measured doing full handshakes or
 * resumed ones.
 *
 *   bench_newconn HOST PORT PATH CONNS SECONDS full|resume
 *
 * CONNS threads, each a closed loop for SECONDS: connect, TLS handshake, GET PATH with
 * `Connection: close`, read the response to its end, close_notify, close. `full` offers no
 * session (a whole handshake each time: certificate and signature); `resume` offers the
 * session the thread's previous connection ended with. HOST is resolved with getaddrinfo
 * (inside a sandbox that goes through sluice's DNS) and sent as SNI and Host; the certificate
 * is not verified (as wrk does not): this measures, it does not test. Prints one JSON object:
 * requests (answered 200), errors, resumed (handshakes that resumed), seconds.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 256

struct worker {
	pthread_t t;
	long long requests, errors, resumed;
};

static SSL_CTX *ctx;
static struct addrinfo *target;
static const char *host;
static char request[2048];
static int resume;
static long long deadline_ns;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One request on a new connection, offering @*sess (if not NULL) and leaving the session it
 * ended with there. Returns 1 if answered 200 (and *reused), 0 otherwise. */
static int one(SSL_SESSION **sess, int *reused)
{
	char buf[16384], first[16] = "";
	size_t got = 0;
	int fd, ok = 0, on = 1;
	SSL *ssl = NULL;

	fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return 0;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (connect(fd, target->ai_addr, target->ai_addrlen) == -1)
		goto out;
	ssl = SSL_new(ctx);
	if (!ssl || !SSL_set_fd(ssl, fd) || !SSL_set_tlsext_host_name(ssl, host) ||
	    (*sess && !SSL_set_session(ssl, *sess)) || SSL_connect(ssl) != 1 ||
	    SSL_write(ssl, request, strlen(request)) != (int)strlen(request))
		goto out;
	*reused = SSL_session_reused(ssl);
	for (;;) {
		int n = SSL_read(ssl, buf, sizeof(buf));

		if (n <= 0)
			break;
		for (int i = 0; i < n && got < sizeof(first) - 1; i++)
			first[got++] = buf[i];
	}
	ok = !strncmp(first, "HTTP/1.1 200 ", 13);
	/* A close_notify of ours keeps the session resumable (OpenSSL drops the session of an
	 * SSL freed without one); a TLS 1.3 ticket came with the response. */
	SSL_shutdown(ssl);
	if (resume) {
		SSL_SESSION_free(*sess);
		*sess = SSL_get1_session(ssl);
	}
out:
	ERR_clear_error();
	SSL_free(ssl);
	close(fd);
	return ok;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	SSL_SESSION *sess = NULL;

	while (now_ns() < deadline_ns) {
		int reused = 0;

		if (one(&sess, &reused)) {
			w->requests++;
			w->resumed += reused;
		} else {
			w->errors++;
		}
	}
	SSL_SESSION_free(sess);
	return NULL;
}

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	static struct worker w[MAX_CONNS];
	long long requests = 0, errors = 0, resumed = 0, t0;
	int conns, seconds, e;

	if (argc != 7 || (strcmp(argv[6], "full") && strcmp(argv[6], "resume"))) {
		int help = argc == 2 && !strcmp(argv[1], "--help");

		fprintf(help ? stdout : stderr,
			"usage: bench_newconn HOST PORT PATH CONNS SECONDS full|resume\n"
			"  a new TLS connection per request; full: offer no session, resume: "
			"offer the last one\n");
		return help ? 0 : 2;
	}
	host = argv[1];
	conns = atoi(argv[4]);
	seconds = atoi(argv[5]);
	resume = !strcmp(argv[6], "resume");
	if (conns < 1 || conns > MAX_CONNS || seconds < 1) {
		fprintf(stderr, "bench_newconn: CONNS 1..%d, SECONDS >= 1\n", MAX_CONNS);
		return 2;
	}
	e = getaddrinfo(host, argv[2], &hints, &target);
	if (e) {
		fprintf(stderr, "bench_newconn: %s: %s\n", host, gai_strerror(e));
		return 1;
	}
	snprintf(request, sizeof(request),
		 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[3], host);
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return 1;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
	t0 = now_ns();
	deadline_ns = t0 + seconds * 1000000000LL;
	for (int i = 0; i < conns; i++) {
		if (pthread_create(&w[i].t, NULL, run, &w[i])) {
			fprintf(stderr, "bench_newconn: pthread_create failed\n");
			return 1;
		}
	}
	for (int i = 0; i < conns; i++) {
		pthread_join(w[i].t, NULL);
		requests += w[i].requests;
		errors += w[i].errors;
		resumed += w[i].resumed;
	}
	printf("{\"requests\": %lld, \"errors\": %lld, \"resumed\": %lld, \"seconds\": %.3f}\n",
	       requests, errors, resumed, (now_ns() - t0) / 1e9);
	freeaddrinfo(target);
	SSL_CTX_free(ctx);
	return 0;
}
