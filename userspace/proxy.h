/* SPDX-License-Identifier: MIT */
/* The transparent TLS-intercepting HTTP proxy (see proxy.c). */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http.h"

struct sl_loop;
struct sl_events;
struct sl_bpf;
struct sl_ca;
struct sl_proxy;
struct sl_proxy_listener;

struct sl_proxy_opts {
	const char *upstream_ca; /* PEM bundle; NULL: the system trust store */
	unsigned header_timeout_ms; /* a request head must arrive within this (slowloris) */
	unsigned idle_timeout_ms; /* no byte moved for this long: the connection ends */
	unsigned connect_timeout_ms; /* upstream TCP and TLS handshake */
	unsigned max_conns; /* client connections per sandbox */
};

/* What a listener asks of the sandbox it serves. Loop thread only. */
struct sl_proxy_ops {
	const char *(*name)(void *owner);
	uint32_t (*id)(void *owner);
	/* The strongest verdict the policy gives @host (SL_VERDICT_*). */
	int (*name_verdict)(void *owner, const char *host);
	/* Whether intercepted @host may be served at @addr: it resolved there (or the names of
	 * @addr are unknown because they resolved before a restart). */
	int (*name_at)(void *owner, const char *host, uint8_t family, const uint8_t *addr);
	/* The single intercepted name that resolved to @addr, into @buf; 0 if none or several. */
	int (*only_name_at)(void *owner, uint8_t family, const uint8_t *addr, char *buf,
			    size_t len);
	struct sl_ca *(*ca)(void *owner);
};

/*
 * The seam where a request is judged. The proxy hands every parsed request head to the
 * decider and waits (without blocking the loop) until sl_px_decided() is called for it, now or
 * later. The decider may change @req->msg's headers before deciding. The default decider
 * forwards every request unchanged.
 */
struct sl_px_pending;

struct sl_px_request {
	const char *sandbox;
	uint32_t pid;
	const char *comm;
	const char *scheme; /* "https" or "http" */
	const char *host; /* the name served: SNI, or Host for plain HTTP */
	const char *path; /* origin-form, query included */
	struct sl_http_msg *msg; /* the request head; the decider may edit its headers */
	const struct sockaddr *dst; /* the original destination */
};

struct sl_px_decision {
	int respond; /* 0: forward upstream; 1: answer with status/body here */
	int status;
	const char *body;
	size_t body_len;
	const char *content_type;
};

typedef void sl_px_decide_fn(void *arg, struct sl_px_request *req, struct sl_px_pending *pending);
/* Ends a decision. Loop thread only; @pending is invalid afterwards. */
void sl_px_decided(struct sl_px_pending *pending, const struct sl_px_decision *d);

struct sl_proxy *sl_proxy_new(struct sl_loop *loop, struct sl_events *events, struct sl_bpf *bpf,
			      const struct sl_proxy_opts *opts, char *err, size_t errlen);
/* Frees the service; its listeners must be closed first. Accepts NULL. */
void sl_proxy_free(struct sl_proxy *px);
void sl_proxy_set_decider(struct sl_proxy *px, sl_px_decide_fn *fn, void *arg);

/* A sandbox's listener: TCP on 127.0.0.1 and ::1, one port (@want_port if free), created in
 * network namespace @netns_fd if >= 0. NULL with a reason in @err. */
struct sl_proxy_listener *sl_proxy_listen(struct sl_proxy *px, const struct sl_proxy_ops *ops,
					  void *owner, uint16_t want_port, int netns_fd,
					  char *err, size_t errlen);
/* Closes the listener and every connection it accepted. Accepts NULL. */
void sl_proxy_listener_close(struct sl_proxy_listener *l);
uint16_t sl_proxy_listener_port(const struct sl_proxy_listener *l);

struct sl_proxy_stats {
	uint64_t conns; /* accepted and redirected by the kernel */
	uint64_t unredirected; /* accepted without a kernel record: closed */
	uint64_t refused; /* over the connection limit, or protocol not TLS/HTTP */
	uint64_t tls_failed; /* client TLS handshakes that failed */
	uint64_t spliced; /* TLS for a passthrough name: relayed untouched */
	uint64_t requests; /* forwarded upstream */
	uint64_t rejected; /* answered 4xx by the proxy */
	uint64_t upstream_errors; /* answered 5xx by the proxy */
	uint64_t reused; /* requests sent on a pooled upstream connection */
	uint64_t active; /* client connections open now */
};
const struct sl_proxy_stats *sl_proxy_listener_stats(const struct sl_proxy_listener *l);

#endif
