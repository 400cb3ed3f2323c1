/* SPDX-License-Identifier: MIT */
/* The transparent TLS-intercepting HTTP proxy (see proxy.c and ARCHITECTURE.md).
 * Threading: the thread of the loop passed to sl_proxy_new() only (sluiced: one proxy per
 * worker, with its own connections, upstream pool, TLS contexts, splice and share of
 * max_conns_total; a sandbox's listener is on its worker's); nothing here blocks: sockets
 * are non-blocking, and a handler's waits (body, upstream fetch) end in its resume(). */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http/http.h"

struct sl_loop;
struct sl_events;
struct sl_bpf;
struct sl_ca;
struct sl_proxy;
struct sl_proxy_listener;
struct sl_px_xchg;

#define SL_PROXY_MAX_CONNS_TOTAL 16384 /* default of --http-max-conns-total */
#define SL_PROXY_BODY_BUDGET (64u << 20) /* default of --http-body-budget */

struct sl_proxy_opts {
	const char *upstream_ca; /* PEM bundle; NULL: the system trust store */
	unsigned header_timeout_ms; /* a request head must arrive within this (slowloris) */
	unsigned idle_timeout_ms; /* no byte moved for this long: the connection ends */
	unsigned connect_timeout_ms; /* upstream TCP and TLS handshake */
	unsigned max_conns; /* client connections per sandbox */
	unsigned max_conns_total; /* client connections of all sandboxes together */
	/* Where they are counted: NULL, in this proxy; else a counter shared by the proxies of
	 * several threads (sluiced's workers), changed atomically. */
	unsigned *conns_total;
	/* Bytes of bodies held whole for handlers (req:text(), resp:text(), and such a body
	 * waiting to be written) per sandbox, all connections together. */
	size_t body_budget;
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
	/* What the policy does with TCP to @host on @port: SL_NAME_* (policy.h). */
	int (*name_port)(void *owner, const char *host, uint16_t port);
	/* Whether @host resolved to @addr for this sandbox with a grant of TCP @port (or the
	 * names of @addr are unknown, resolved before a restart, and the policy allows it). */
	int (*resolved_at)(void *owner, const char *host, uint8_t family, const uint8_t *addr,
			   uint16_t port);
	/* The single intercepted name that resolved to @addr, into @buf; 0 if none or several. */
	int (*only_name_at)(void *owner, uint8_t family, const uint8_t *addr, char *buf,
			    size_t len);
	struct sl_ca *(*ca)(void *owner);
	/* A request head arrived: 0 if the sandbox's handler took it (see sl_px_x_attach), 1 to
	 * forward it unchanged. NULL: always forward. */
	int (*handle)(void *owner, struct sl_px_xchg *x);
	/* Whether the sandbox is in audit mode (NULL: never): a connection the proxy would
	 * refuse for the policy's sake is relayed untouched to its original destination
	 * instead, and recorded through observe(). */
	int (*audit)(void *owner);
	/* Audit mode's records (NULL: none): a request as it ended (@method set: its host, its
	 * path without the query, status, and @refused, how its handler refused it, or NULL),
	 * or a connection relayed for audit mode (@method NULL: @host, the TLS server name or
	 * "", and @port). */
	void (*observe)(void *owner, const char *method, const char *host, const char *path,
			uint16_t port, int status, const char *refused);
};

/*
 * A request in flight, as its handler sees it (lua_host.c is the handler). The proxy hands
 * every parsed request head to the sandbox (sl_proxy_ops.handle). A handler that takes it
 * works through the sl_px_x_*() calls below and ends it with exactly one of
 * sl_px_x_send_fetched(), sl_px_x_send() or sl_px_x_fail(). The asynchronous calls
 * (read_body, fetch, read_resp_body) return 0 and later call the handler's resume() from the
 * loop, never from inside the call; 1 means "already done, no wait". If the request ends
 * otherwise (client gone, timeout, bound exceeded: the proxy answers itself), the proxy calls
 * abort() instead and forgets the handler. Loop thread only.
 *
 * Audit mode (ops->audit) runs handlers dry: a refusal, sl_px_x_send() with a status of 400 or
 * more or sl_px_x_fail(), does not end the request. It is recorded (the request's event says
 * "verdict":"audit", the refusal and "refused_status"; observe() gets it), and the request
 * goes on as the handler left it: its edits, injected credentials included, go upstream, or
 * the response it fetched goes to the client. A secret in a cleartext request stays refused.
 */
struct sl_px_xchg;

struct sl_px_handler {
	void (*resume)(void *hctx);
	void (*abort)(void *hctx, const char *why);
};

struct sl_px_info {
	const char *sandbox;
	uint32_t pid;
	const char *comm;
	const char *scheme; /* "https" or "http" */
	const char *host; /* the name served: SNI, or Host for plain HTTP */
	const char *sni; /* "" for plain HTTP */
	const struct sockaddr *dst; /* the original destination */
	int audit; /* the sandbox is in audit mode: the request's handler runs dry */
};

void sl_px_x_attach(struct sl_px_xchg *x, const struct sl_px_handler *h, void *hctx);
void sl_px_x_info(struct sl_px_xchg *x, struct sl_px_info *info);
/* The request head: its headers may be edited (sl_http_set/add), not its framing. */
struct sl_http_msg *sl_px_x_req(struct sl_px_xchg *x);
const char *sl_px_x_path(struct sl_px_xchg *x);
/* Origin-form path ("/..."), validated. -EINVAL or -ENOMEM. */
int sl_px_x_set_path(struct sl_px_xchg *x, const char *path);
/* A method token other than CONNECT/TRACE. -EINVAL. */
int sl_px_x_set_method(struct sl_px_xchg *x, const char *method);
/* Buffers the whole request body, up to @max bytes (the proxy answers 413 past it). */
int sl_px_x_read_body(struct sl_px_xchg *x, size_t max);
const char *sl_px_x_body(struct sl_px_xchg *x, size_t *len);
/* Replaces the request body sent upstream (what the client sends is read and dropped). */
int sl_px_x_set_body(struct sl_px_xchg *x, const char *body, size_t len);
/* Sends the request upstream (to the original destination) and waits for the response
 * head, which sl_px_x_resp() then returns. -errno if it cannot start, or -EALREADY. */
int sl_px_x_fetch(struct sl_px_xchg *x);
struct sl_http_msg *sl_px_x_resp(struct sl_px_xchg *x);
/* Buffers the whole response body, up to @max bytes (502 past it). */
int sl_px_x_read_resp_body(struct sl_px_xchg *x, size_t max);
const char *sl_px_x_resp_body(struct sl_px_xchg *x, size_t *len);
int sl_px_x_set_resp_body(struct sl_px_xchg *x, const char *body, size_t len);
/* The trailer fields the response ends with: the fetched response's (complete once its body
 * was read), or those sl_px_x_set_trailers() gave. Never NULL. */
const struct sl_http_msg *sl_px_x_trailers(struct sl_px_xchg *x);
/* Replaces them (@t NULL: none), for the fetched response or for the one sl_px_x_send() is
 * about to make. They reach a client that takes trailers (HTTP/2, or TE: trailers): the body
 * then goes chunked. -EBUSY while a fetched response's body streams (neither read nor
 * replaced), -ENOMEM. */
int sl_px_x_set_trailers(struct sl_px_xchg *x, const struct sl_http_msg *t);
/* Ends the request with the fetched response (status and headers as edited). */
void sl_px_x_send_fetched(struct sl_px_xchg *x);
/* Ends the request with a response made here; @headers may be NULL. */
void sl_px_x_send(struct sl_px_xchg *x, int status, const struct sl_http_msg *headers,
		  const char *body, size_t len);
/* Ends the request with an error answer (a 5xx) and @why in its event. */
void sl_px_x_fail(struct sl_px_xchg *x, int status, const char *why);
/* Counts a bound the handler ran into (before it fails the request): its sandbox's
 * sluice_limits_reached_total. */
enum sl_px_limit { SL_PX_LIMIT_LUA_MEM, SL_PX_LIMIT_LUA_INSNS };
void sl_px_x_count_limit(struct sl_px_xchg *x, enum sl_px_limit which);
/* Bytes that must never reach the client in this request's response (an injected secret):
 * replaced by '*' in the headers and the body, across reads. Shorter than 4 bytes: ignored. */
int sl_px_x_mask(struct sl_px_xchg *x, const char *secret, size_t len);
/* Whether @x is plain HTTP and what would go upstream (method, path, header names and
 * values, a body the handler set) holds one of its masks (a secret it read). */
int sl_px_x_cleartext_secret(struct sl_px_xchg *x);
/* The handler's name, for the request's event. */
void sl_px_x_set_handler(struct sl_px_xchg *x, const char *name);
/* Replaces every mask of the request in @s (for log lines about it). */
void sl_px_x_redact(struct sl_px_xchg *x, char *s, size_t len);

struct sl_proxy *sl_proxy_new(struct sl_loop *loop, struct sl_events *events, struct sl_bpf *bpf,
			      const struct sl_proxy_opts *opts, char *err, size_t errlen);
/* Frees the service; its listeners must be closed first. Accepts NULL. */
void sl_proxy_free(struct sl_proxy *px);

/* A sandbox's listener: TCP on 127.0.0.1 and ::1, one port (@want_port if free), created in
 * network namespace @netns_fd if >= 0. NULL with a reason in @err. */
struct sl_proxy_listener *sl_proxy_listen(struct sl_proxy *px, const struct sl_proxy_ops *ops,
					  void *owner, uint16_t want_port, int netns_fd, char *err,
					  size_t errlen);
/* A listener of sandbox @id without sockets of its own: its connections come to the worker's
 * shared listener (on loopback of sluiced's own network namespace, opened with the first such
 * sandbox, on @want_port if that is free), which finds each one's sandbox in the record the
 * egress program made of its SYN (sl_accepts). The kernel entry must say SL_SB_SHARED. */
struct sl_proxy_listener *sl_proxy_listen_shared(struct sl_proxy *px,
						 const struct sl_proxy_ops *ops, void *owner,
						 uint32_t id, uint16_t want_port, char *err,
						 size_t errlen);
/* Closes the listener and every connection it accepted. Accepts NULL. */
void sl_proxy_listener_close(struct sl_proxy_listener *l);
uint16_t sl_proxy_listener_port(const struct sl_proxy_listener *l);
/* After the sandbox's policy or handler changed: closes every connection (WebSockets and
 * spliced TLS included) whose host the policy no longer intercepts (or, spliced, allows on
 * that port at that address), and pooled upstream connections of such hosts; ends the HTTP/2
 * connections it keeps with GOAWAY (their streams in flight finish, new ones go to a new
 * connection). Returns how many client connections were closed. */
size_t sl_proxy_listener_revalidate(struct sl_proxy_listener *l);

struct sl_proxy_stats {
	uint64_t conns; /* accepted and redirected by the kernel */
	uint64_t unredirected; /* accepted without a kernel record: closed */
	uint64_t refused; /* over the connection limit, or protocol not TLS/HTTP */
	uint64_t tls_failed; /* client TLS handshakes that failed */
	uint64_t tls_resumed; /* client TLS handshakes that resumed a session (a ticket) */
	uint64_t spliced; /* TLS for a passthrough name: relayed untouched */
	uint64_t spliced_kernel; /* ... of which carried by the kernel (sockhash redirect) */
	uint64_t spliced_user; /* ... of which relayed by sluiced (the kernel splice failed) */
	uint64_t requests; /* forwarded upstream */
	uint64_t rejected; /* answered 4xx by the proxy */
	uint64_t upstream_errors; /* answered 5xx by the proxy */
	uint64_t reused; /* requests sent on a pooled upstream connection */
	uint64_t active; /* client connections open now */
	/* Bounds reached (README, Reliability), each a clear refusal: */
	uint64_t limit_conns; /* over --http-max-conns: closed at accept */
	uint64_t limit_conns_total; /* over --http-max-conns-total: closed at accept */
	uint64_t limit_fds; /* sluiced out of file descriptors: closed at accept */
	uint64_t limit_head; /* request head over SL_HTTP_MAX_HEAD: 431 */
	uint64_t limit_req_body; /* req:text() body over its bound: 413 */
	uint64_t limit_resp_body; /* resp:text() body over its bound: 502 */
	uint64_t limit_lua_mem; /* a handler out of its state's Lua memory: 502 */
	uint64_t limit_lua_insns; /* a handler out of its instruction budget: 502 */
	uint64_t pool_full; /* idle upstream connections closed, the pool being full */
	uint64_t limit_body_budget; /* a handler's body over --http-body-budget: 413/502 */
	uint64_t body_bytes; /* bytes of handler-held bodies now (against the budget) */
	uint64_t h2_conns; /* client connections that spoke HTTP/2 */
	uint64_t h2_active; /* ... open now */
	uint64_t h2_streams; /* HTTP/2 streams that became an exchange */
	/* HTTP/2 streams refused alone, the connection going on: malformed heads (RFC 9113
	 * section 8.1.1: connection-specific or upper-case fields, pseudo-header rules), over
	 * SETTINGS_MAX_CONCURRENT_STREAMS, over the head bound (431), over a limit */
	uint64_t h2_refused;
	uint64_t h2_floods; /* HTTP/2 connections ended for a flood (resets, empty frames, acks) */
};
const struct sl_proxy_stats *sl_proxy_listener_stats(const struct sl_proxy_listener *l);

#endif
