// SPDX-License-Identifier: MIT
/*
 * The transparent proxy. The kernel rewrites a sandbox's connections to intercepted names to
 * this sandbox's listener and records where each was going; the proxy takes that record on
 * accept (a connection without one is closed), peeks at the first bytes (a TLS ClientHello or
 * plain HTTP/1.x), terminates TLS with a leaf minted by the sandbox's CA, and parses every
 * request with llhttp. Each request head goes to the sandbox's handler (sl_proxy_ops.handle,
 * the Lua host; see the sl_px_x_*() calls), then to the *original destination address* (never re-resolved: the address the kernel
 * allowed is the one used), over TLS verified against the SNI name. Bodies stream in both
 * directions with at most a few buffers per connection, so a 1 GiB upload costs what a small
 * one does. Requests on a keep-alive connection are handled one at a time, in order
 * (pipelining), each judged on its own; upstream connections are pooled per sandbox, name and
 * address. Everything runs on the loop thread and nothing blocks it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "kernel/bpf_loader.h"
#include "tls/ca.h"
#include "core/events.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/mask.h"
#include "policy/policy.h"
#include "proxy/proxy.h"
#include "kernel/sockets.h"
#include "kernel/splice.h"
#include "tls/tls.h"
#include "tls/tls_hello.h"
#include "http/ws.h"

#define BUF_LIMIT (64 * 1024) /* per direction: what is read ahead, what waits to be written */
#define PEEK_MAX SL_TLS_PEEK_MAX /* enough for any ClientHello sl_tls_parse_client_hello() takes */
#define POOL_MAX 32 /* idle upstream connections per sandbox */
#define POOL_MAX_TOTAL 1024 /* ... and of all sandboxes (each holds a descriptor) */
#define POOL_IDLE_MS 30000
#define SWEEP_MS 250
#define FLUSH_AT 16384 /* one TLS record: written at once, not held for the pump to settle */
#define LINGER_MS 2000
#define LINGER_BYTES (8u << 20)
#define IDLE_BUF_KEEP 4096 /* buffers larger than this are freed between requests */

struct sl_proxy {
	struct sl_loop *loop;
	struct sl_events *events;
	struct sl_bpf *bpf;
	struct sl_proxy_opts o;
	SSL_CTX *server_ctx, *client_ctx;
	unsigned active; /* client connections of every listener */
	unsigned nidle; /* pooled upstream connections of every listener */
	int spare_fd; /* given up to accept-and-close a connection when out of descriptors */
	struct sl_splice *splice; /* NULL: passthrough bytes are relayed here */
};

/* An idle upstream connection, kept for the next request to the same name and address. */
struct upconn {
	struct sl_proxy_listener *l;
	struct upconn *next;
	int fd;
	SSL *ssl;
	int tls;
	char host[256];
	struct sockaddr_storage dst;
	socklen_t dstlen;
	uint64_t since_ms;
};

struct pconn;

struct parse_ctx {
	struct sl_http_msg *m; /* first: http.c's callbacks find the message here */
	struct pconn *c;
};

enum cstate { C_SNIFF, C_HANDSHAKE, C_HTTP, C_TUNNEL, C_CLOSING };
enum rqstate { RQ_IDLE, RQ_HEAD, RQ_DECIDE, RQ_CONNECT, RQ_BODY, RQ_DONE };
enum upstate { UP_NONE, UP_CONNECTING, UP_HANDSHAKE, UP_READY };
/* What a request's handler waits for (see sl_px_x_*). */
enum hwait { HW_NONE, HW_REQ_BODY, HW_RESP_HEAD, HW_RESP_BODY };

#define MASK_MAX 16
#define MASK_LEN_MIN 4
#define MASK_LEN_MAX 4096

struct mask {
	char *s;
	size_t n;
};

/* One client connection and, while a request is in flight, its upstream connection. */
struct pconn {
	struct sl_proxy_listener *l;
	struct pconn *next;
	struct sl_stream c, u;
	enum cstate st;
	enum rqstate rq;
	enum upstate up;
	struct sl_sockorig orig;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	uint8_t dst_family, dst_addr[16];
	char name[256]; /* the name served: SNI, or the Host of plain HTTP */
	char comm[17];
	int tls;
	int spliced; /* TLS of a passthrough name, relayed untouched */
	/* Spliced in the kernel (splice.c): the bytes never come here. Per socket (0 client,
	 * 1 upstream): what we wrote into it ourselves, its send count when the splice began,
	 * whether its peer finished sending, whether we passed that on. */
	int ksplice;
	struct sl_splice_pair kpair; /* cookie[0] upstream, [1] client: see ksplice_start() */
	uint64_t kwrote[2], kbase[2];
	int keof[2], kshut[2];
	uint64_t kdrain_since_ms;
	struct sl_timer *ktimer;
	llhttp_t reqp, respp;
	struct parse_ctx reqx, respx;
	struct sl_http_msg req, resp;
	char *path; /* origin-form target sent upstream */
	enum sl_http_body req_body, resp_body;
	int websocket; /* the request asks for a WebSocket upgrade */
	int interim; /* the response being parsed is a 1xx */
	int to_tunnel; /* a 101 arrived: relay raw bytes from now on */
	int resp_started, resp_head_sent, resp_done;
	int close_after; /* the client does not keep the connection alive */
	int dead; /* the connection has ended */
	int lingering; /* answered and closing: draining what the client still sends */
	size_t linger_bytes;
	int busy; /* pump() frames on the stack: freeing waits for the outermost */
	int reject_status; /* set by a parser callback: answer this and close */
	const char *reject_why;
	int up_wants; /* SL_READ/SL_WRITE the upstream handshake waits for */
	uint64_t deadline_ms;
	uint64_t t_req_ms, t_up_ms, t_up_first_ms;
	uint64_t req_bytes, resp_bytes;
	/* the request's handler: see sl_px_x_*() */
	const struct sl_px_handler *h;
	void *hctx;
	enum hwait hw;
	unsigned hseq; /* bumped by every handler call: the pump looks again */
	int decided; /* the request head went to the sandbox */
	int fetched; /* the handler sent the request upstream */
	int hold_resp, resp_held; /* the response head waits for the handler */
	int req_buffer, req_complete_seen, req_discard, req_body_set;
	size_t req_max, resp_max;
	struct sl_buf reqbody;
	int resp_buffer, resp_too_big, resp_body_set;
	struct sl_buf respbody;
	int local; /* answered here: the rest of the request is read and dropped */
	struct mask masks[MASK_MAX];
	size_t nmask, mask_longest;
	struct sl_buf mcarry; /* body bytes held back until no secret can straddle them */
	/* A masked response with a content coding is decoded first (mask.c): the parser
	 * waits (dec_paused) while the decoder holds input the client has no room for. */
	struct sl_inflate *dec;
	int dec_paused, coding_seen;
	char resp_why[200]; /* why the upstream's response is refused (502), if it is */
	struct sl_ws_mask *wsm; /* a WebSocket whose handshake carried a secret: frames masked */
	size_t charged; /* bytes of this connection counted in l->stats.body_bytes */
	char handler[80];
};

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71 /* Linux 5.14 */
#endif

struct sl_proxy_listener {
	struct sl_proxy *px;
	const struct sl_proxy_ops *ops;
	void *owner;
	int fd[2];
	uint16_t port;
	uint64_t netns_cookie; /* of the namespace the listener (and its sandbox's clients) is in */
	struct pconn *conns;
	struct upconn *idle;
	unsigned nidle;
	struct sl_timer *sweep;
	struct sl_proxy_stats stats;
};

static llhttp_settings_t req_settings, resp_settings;

static void pump(struct pconn *c);
static void finish_request(struct pconn *c);
static void pool_put(struct pconn *c);
static void conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events);

/* ---- events ---- */

static void path_for_event(const char *path, char *out, size_t len)
{
	/* Queries often carry tokens: events keep the path only. */
	size_t n = path ? strcspn(path, "?#") : 0;

	if (n > len - 1)
		n = len - 1;
	memcpy(out, path ? path : "", n);
	out[n] = 0;
}

/* One JSON line per request: who, what, where, how it ended. No header values. */
static void request_event(struct pconn *c, int status, const char *verdict, const char *reason)
{
	struct sl_proxy_listener *l = c->l;
	uint64_t now = sl_now_ms();
	struct sl_jw w;
	char path[512];

	if (!l->px->events)
		return;
	path_for_event(c->path ? c->path : c->req.target, path, sizeof(path));
	sl_px_x_redact((struct sl_px_xchg *)c, path, strlen(path));
	sl_jw_begin(&w);
	sl_jw_str(&w, "type", "http");
	sl_jw_str(&w, "sandbox", l->ops->name(l->owner));
	sl_jw_int(&w, "pid", c->orig.pid);
	sl_jw_str(&w, "comm", c->comm);
	sl_jw_str(&w, "method", c->req.method[0] ? c->req.method : "-");
	sl_jw_str(&w, "scheme", c->tls ? "https" : "http");
	sl_jw_str(&w, "host", c->name);
	sl_jw_str(&w, "path", path);
	sl_jw_int(&w, "status", status);
	sl_jw_int(&w, "bytes_in", (long long)c->req_bytes);
	sl_jw_int(&w, "bytes_out", (long long)c->resp_bytes);
	sl_jw_int(&w, "upstream_ms",
		  c->t_up_ms && c->t_up_first_ms ? (long long)(c->t_up_first_ms - c->t_up_ms) : 0);
	sl_jw_int(&w, "total_ms", c->t_req_ms ? (long long)(now - c->t_req_ms) : 0);
	sl_jw_str(&w, "verdict", verdict);
	if (c->handler[0])
		sl_jw_str(&w, "handler", c->handler);
	if (reason)
		sl_jw_str(&w, "reason", reason);
	sl_jw_publish(&w, l->px->events, l->ops->name(l->owner));
}

/* A connection-level event (before any request: not redirected, TLS failed, ...). */
static void conn_event(struct sl_proxy_listener *l, const struct pconn *c, const char *verdict,
		       const char *reason)
{
	json_t *j;

	if (!l->px->events)
		return;
	j = json_pack("{s:s, s:s, s:s, s:s}", "type", "http", "sandbox", l->ops->name(l->owner),
		      "verdict", verdict, "reason", reason);
	if (j && c) {
		json_object_set_new(j, "pid", json_integer(c->orig.pid));
		json_object_set_new(j, "comm", json_string(c->comm));
		if (c->name[0])
			json_object_set_new(j, "host", json_string(c->name));
	}
	sl_events_publish(l->px->events, l->ops->name(l->owner), j);
}

/* ---- connection life ---- */

static void clear_masks(struct pconn *c)
{
	for (size_t i = 0; i < c->nmask; i++) {
		OPENSSL_cleanse(c->masks[i].s, c->masks[i].n);
		free(c->masks[i].s);
	}
	c->nmask = c->mask_longest = 0;
	sl_buf_reset(&c->mcarry);
}

/* The request ends without its handler: tell it, and forget it. */
static void handler_abort(struct pconn *c, const char *why)
{
	const struct sl_px_handler *h = c->h;

	c->h = NULL;
	c->hw = HW_NONE;
	if (h)
		h->abort(c->hctx, why);
}

static void dec_free(struct pconn *c)
{
	if (c->dec)
		sl_inflate_free(c->dec);
	free(c->dec);
	c->dec = NULL;
	c->dec_paused = 0;
}

static void conn_free(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;

	handler_abort(c, "the connection ended");
	if (c->ksplice)
		sl_splice_part(l->px->splice, &c->kpair);
	sl_loop_cancel_timer(l->px->loop, c->ktimer);

	for (struct pconn **pp = &l->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	l->stats.active--;
	l->px->active--;
	l->stats.body_bytes -= c->charged;
	if (c->st == C_HTTP && c->rq == RQ_IDLE)
		pool_put(c); /* a clean idle upstream outlives its client */
	if (c->c.fd >= 0)
		sl_loop_del_fd(l->px->loop, c->c.fd);
	if (c->u.fd >= 0)
		sl_loop_del_fd(l->px->loop, c->u.fd);
	sl_stream_close(&c->c);
	sl_stream_close(&c->u);
	sl_http_msg_free(&c->req);
	sl_http_msg_free(&c->resp);
	free(c->path);
	clear_masks(c);
	sl_buf_free(&c->mcarry);
	dec_free(c);
	if (c->wsm)
		sl_ws_mask_free(c->wsm);
	free(c->wsm);
	sl_buf_free(&c->reqbody);
	sl_buf_free(&c->respbody);
	free(c);
}

/* Ends the connection: now, or when the outermost pump() returns, or when its pending
 * decision comes back, whichever is last. Callers must not touch @c after it unless they are
 * inside pump() (which checks @c->dead). */
static void conn_close(struct pconn *c)
{
	c->dead = 1;
	if (!c->busy)
		conn_free(c);
}

static void close_upstream(struct pconn *c)
{
	if (c->u.fd >= 0)
		sl_loop_del_fd(c->l->px->loop, c->u.fd);
	sl_stream_close(&c->u);
	c->up = UP_NONE;
}

/* The body of an answer made here: a program (or the person reading its error) learns that
 * sluice answered, for which sandbox, and why; never a secret or the policy's text. */
static void refusal_text(struct pconn *c, int status, const char *why, char *out, size_t len)
{
	const char *box = c->l->ops->name(c->l->owner);

	if (status < 500)
		snprintf(out, len, "sluice refused this request (sandbox %s): %s", box, why);
	else
		snprintf(out, len, "sluice (sandbox %s): %s", box, why);
}

/* Answers the current request here and closes the connection after it. */
static void respond_error(struct pconn *c, int status, const char *why, const char *verdict)
{
	char body[512];

	if (c->spliced) {
		/* Nothing to answer in: the client speaks TLS with the upstream itself. */
		c->l->stats.upstream_errors++;
		conn_event(c->l, c, "error", why);
		close_upstream(c);
		c->c.err = 1;
		c->st = C_CLOSING;
		return;
	}
	handler_abort(c, why);
	refusal_text(c, status, why, body, sizeof(body));
	if (c->resp_head_sent) {
		/* Too late for a status: the client sees the connection end. */
		c->c.err = 1;
	} else {
		sl_buf_reset(&c->c.out);
		sl_http_write_error(&c->c.out, status, body);
	}
	if (status >= 500)
		c->l->stats.upstream_errors++;
	else
		c->l->stats.rejected++;
	request_event(c, status, verdict, why);
	close_upstream(c);
	c->st = C_CLOSING;
}

/* ---- upstream pool ---- */

static void upconn_free(struct upconn *u)
{
	struct sl_proxy_listener *l = u->l;

	for (struct upconn **pp = &l->idle; *pp; pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			l->nidle--;
			l->px->nidle--;
			break;
		}
	}
	sl_loop_del_fd(l->px->loop, u->fd);
	SSL_free(u->ssl);
	close(u->fd);
	free(u);
}

/* An idle connection became readable. TLS 1.3 servers send session tickets after the
 * handshake, often after the first response: OpenSSL consumes those and reports WANT_READ,
 * and the connection stays pooled. Anything else (data out of turn, close_notify, EOF) ends
 * it. */
static void pool_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct upconn *u = arg;
	char b;

	(void)loop;
	if (!(events & SL_HUP) && u->ssl) {
		size_t n;

		ERR_clear_error();
		if (!SSL_read_ex(u->ssl, &b, 1, &n) &&
		    SSL_get_error(u->ssl, 0) == SSL_ERROR_WANT_READ)
			return;
	} else if (!(events & SL_HUP) && recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
		   errno == EAGAIN) {
		return;
	}
	sl_debug("proxy: pooled connection to %s closed (events %u)", u->host, events);
	upconn_free(u);
}

/* Keeps the upstream connection of @c for a later request, if it is clean. */
static void pool_put(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;
	int clean = c->u.fd >= 0 && c->up == UP_READY && !sl_buf_size(&c->u.in) &&
		    !sl_buf_size(&c->u.out) && !c->u.eof && !c->u.err &&
		    !(c->u.ssl && SSL_has_pending(c->u.ssl));
	int full = l->nidle >= POOL_MAX || l->px->nidle >= POOL_MAX_TOTAL;
	struct upconn *u;

	if (clean && full)
		l->stats.pool_full++;
	if (!clean || full || !(u = calloc(1, sizeof(*u)))) {
		sl_debug("proxy: not pooling the connection to %s (in %zu, eof %d, err %d)", c->name,
			 sl_buf_size(&c->u.in), c->u.eof, c->u.err);
		close_upstream(c);
		return;
	}
	sl_loop_del_fd(l->px->loop, c->u.fd);
	u->l = l;
	u->fd = c->u.fd;
	u->ssl = c->u.ssl;
	u->tls = c->tls;
	snprintf(u->host, sizeof(u->host), "%s", c->name);
	u->dst = c->dst;
	u->dstlen = c->dstlen;
	u->since_ms = sl_now_ms();
	if (sl_loop_add_fd(l->px->loop, u->fd, SL_READ, pool_cb, u)) {
		SSL_free(u->ssl);
		close(u->fd);
		free(u);
	} else {
		u->next = l->idle;
		l->idle = u;
		l->nidle++;
		l->px->nidle++;
	}
	c->u.fd = -1;
	c->u.ssl = NULL;
	sl_stream_close(&c->u);
	c->up = UP_NONE;
}

/* An idle connection to the same name and address, moved into @c. */
static int pool_take(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;

	for (struct upconn *u = l->idle; u; u = u->next) {
		if (u->tls != c->tls || strcmp(u->host, c->name) || u->dstlen != c->dstlen ||
		    memcmp(&u->dst, &c->dst, c->dstlen))
			continue;
		sl_loop_del_fd(l->px->loop, u->fd);
		sl_stream_init(&c->u);
		c->u.fd = u->fd;
		c->u.ssl = u->ssl;
		u->fd = -1;
		u->ssl = NULL;
		for (struct upconn **pp = &l->idle; *pp; pp = &(*pp)->next) {
			if (*pp == u) {
				*pp = u->next;
				l->nidle--;
				l->px->nidle--;
				break;
			}
		}
		free(u);
		if (sl_loop_add_fd(l->px->loop, c->u.fd, SL_READ, conn_cb, c)) {
			sl_stream_close(&c->u);
			return 0;
		}
		c->up = UP_READY;
		return 1;
	}
	return 0;
}

/* ---- upstream connection ---- */

static void upstream_ready(struct pconn *c);

static int start_upstream(struct pconn *c)
{
	struct sl_proxy *px = c->l->px;
	int fd, r;

	if (c->u.fd >= 0) {
		/* Still attached from this client's previous request: same name and address
		 * (the name of a TLS connection does not change), reuse it as is. */
		if (c->up == UP_READY && !c->u.eof && !c->u.err && !sl_buf_size(&c->u.in)) {
			c->l->stats.reused++;
			return 0;
		}
		close_upstream(c);
	}
	if (pool_take(c)) {
		c->l->stats.reused++;
		return 0;
	}
	fd = socket(c->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* Every write is a whole head, chunk or record: Nagle would only add latency. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	sl_stream_init(&c->u);
	c->u.fd = fd;
	r = connect(fd, (struct sockaddr *)&c->dst, c->dstlen);
	if (r == -1 && errno != EINPROGRESS)
		return -errno;
	if (sl_loop_add_fd(px->loop, fd, SL_WRITE, conn_cb, c))
		return -ENOMEM;
	c->up = UP_CONNECTING;
	c->deadline_ms = sl_now_ms() + px->o.connect_timeout_ms;
	return 0;
}

/* Drives the upstream connect and TLS handshake. Returns -1 if @c answered with an error. */
static int upstream_progress(struct pconn *c)
{
	char why[512];

	if (c->up == UP_CONNECTING) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		getsockopt(c->u.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			snprintf(why, sizeof(why), "connecting to the upstream failed: %s",
				 strerror(soerr));
			respond_error(c, 502, why, "error");
			return -1;
		}
		{
			struct sockaddr_storage ss;
			socklen_t l = sizeof(ss);

			if (getpeername(c->u.fd, (struct sockaddr *)&ss, &l) == -1)
				return 0; /* still connecting */
		}
		if (!c->tls) {
			c->up = UP_READY;
			return 0;
		}
		c->u.ssl = SSL_new(c->l->px->client_ctx);
		if (!c->u.ssl || !SSL_set_fd(c->u.ssl, c->u.fd) ||
		    sl_tls_set_upstream_name(c->u.ssl, c->name)) {
			respond_error(c, 502, "setting up upstream TLS failed", "error");
			return -1;
		}
		SSL_set_connect_state(c->u.ssl);
		c->up = UP_HANDSHAKE;
	}
	if (c->up == UP_HANDSHAKE) {
		int r;

		ERR_clear_error();
		r = SSL_do_handshake(c->u.ssl);
		if (r == 1) {
			c->up = UP_READY;
			c->up_wants = 0;
			return 0;
		}
		r = SSL_get_error(c->u.ssl, r);
		if (r == SSL_ERROR_WANT_READ) {
			c->up_wants = SL_READ;
			return 0;
		}
		if (r == SSL_ERROR_WANT_WRITE) {
			c->up_wants = SL_WRITE;
			return 0;
		}
		sl_tls_upstream_why(c->u.ssl, c->name, why, sizeof(why));
		respond_error(c, 502, why, "error");
		return -1;
	}
	return 0;
}

/* The upstream is ready: send the request head, then let the body flow. */
static void upstream_ready(struct pconn *c)
{
	const char *up = c->websocket ? "websocket" : NULL;

	c->t_up_ms = sl_now_ms();
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	c->l->stats.requests++;
	if (c->websocket && c->nmask)
		/* Frames of this WebSocket will be masked: they must stay plain bytes, so no
		 * permessage-deflate (RFC 7692) or other extension is offered upstream. */
		sl_http_set(&c->req, "sec-websocket-extensions", NULL);
	llhttp_init(&c->respp, HTTP_RESPONSE, &resp_settings);
	c->respp.data = &c->respx;
	sl_http_msg_reset(&c->resp);
	c->resp_started = c->resp_head_sent = c->resp_done = c->interim = 0;
	dec_free(c);
	c->coding_seen = 0;
	c->resp_why[0] = 0;
	if (c->req_body_set) {
		/* The handler read or replaced the body: it goes whole, with its length. */
		char n[24];

		snprintf(n, sizeof(n), "%zu", sl_buf_size(&c->reqbody));
		if (sl_http_set(&c->req, "content-length", n) ||
		    sl_http_write_request(&c->req, c->path, SL_BODY_LENGTH, up, &c->u.out) ||
		    sl_buf_append(&c->u.out, sl_buf_head(&c->reqbody), sl_buf_size(&c->reqbody)))
			c->u.err = 1;
		if (c->req_complete_seen) {
			c->rq = RQ_DONE; /* the parser waits at the end of the request */
			return;
		}
		c->req_discard = 1; /* what the client still sends is not what goes upstream */
	} else {
		sl_http_write_request(&c->req, c->path, c->req_body, up, &c->u.out);
	}
	c->rq = RQ_BODY;
	llhttp_resume(&c->reqp);
}

/* ---- requests and their handlers ---- */

static void forward(struct pconn *c)
{
	c->rq = RQ_CONNECT;
	if (start_upstream(c))
		respond_error(c, 502, "connecting to the upstream failed", "error");
	else if (c->up == UP_READY)
		upstream_ready(c);
}

/* The head is complete: the sandbox's handler takes the request, or it goes upstream as is. */
static void decide(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;

	c->decided = 1;
	c->hseq++;
	if (l->ops->handle && !l->ops->handle(l->owner, (struct sl_px_xchg *)c))
		return;
	forward(c);
}

static void handler_resume(struct pconn *c)
{
	c->hseq++;
	if (c->h)
		c->h->resume(c->hctx);
}

/* Ends the handler's part in the request (it called one of the endings). */
static void handler_done(struct pconn *c)
{
	c->h = NULL;
	c->hw = HW_NONE;
	c->hseq++;
}

static void mask_bytes(const struct pconn *c, char *p, size_t n)
{
	for (size_t i = 0; i < c->nmask; i++) {
		const struct mask *m = &c->masks[i];
		char *q = p;

		while ((size_t)(p + n - q) >= m->n && (q = memmem(q, p + n - q, m->s, m->n))) {
			memset(q, '*', m->n);
			q += m->n;
		}
	}
}

static void mask_msg(const struct pconn *c, struct sl_http_msg *m)
{
	if (!c->nmask)
		return;
	for (size_t i = 0; i < m->nh; i++)
		mask_bytes(c, m->h[i].value, strlen(m->h[i].value));
	if (m->reason)
		mask_bytes(c, m->reason, strlen(m->reason));
}

/* Response body bytes to the client with every mask applied. The last (longest mask - 1)
 * bytes are held back until more arrive, so that a secret split across reads is caught. */
static int write_masked(struct pconn *c, const char *at, size_t len, int last)
{
	size_t keep = last ? 0 : c->mask_longest - 1, n;
	char *d;

	if (len && sl_buf_append(&c->mcarry, at, len))
		return -1;
	d = (char *)sl_buf_head(&c->mcarry);
	n = sl_buf_size(&c->mcarry);
	mask_bytes(c, d, n);
	if (n <= keep)
		return 0;
	if (sl_http_write_body(&c->c.out, c->resp_body, d, n - keep))
		return -1;
	sl_buf_consume(&c->mcarry, n - keep);
	return 0;
}

/*
 * The response @m (a final head, not yet written) of a request that holds masks: its body
 * must reach the masks as the bytes the client will read. gzip and deflate are decoded
 * (the head loses Content-Encoding and Content-Length and goes chunked); a coding sluice
 * cannot decode (br, zstd, stacked codings), or a coded range, is refused: -1 with
 * c->resp_why set. The request's Accept-Encoding asked for neither (req_headers_complete),
 * so only an upstream that ignores it lands there.
 */
/* Bytes @c holds whole for its handler: bodies read or set, and such a body queued at once
 * past the streaming bounds (a whole response written, a whole request sent). */
static size_t held_bytes(const struct pconn *c)
{
	size_t cout = sl_buf_size(&c->c.out), uout = sl_buf_size(&c->u.out);

	return sl_buf_size(&c->reqbody) + sl_buf_size(&c->respbody) +
	       (cout > 2 * BUF_LIMIT ? cout : 0) + (uout > 2 * BUF_LIMIT ? uout : 0);
}

/* Whether @more bytes on top of what @c holds stay within its sandbox's body budget: every
 * connection may read a body up to its own bound, but not all of them at once (F12). */
static int within_budget(struct pconn *c, size_t more)
{
	struct sl_proxy_listener *l = c->l;
	uint64_t others = l->stats.body_bytes - c->charged;

	if (others + held_bytes(c) + more <= l->px->o.body_budget)
		return 1;
	l->stats.limit_body_budget++;
	return 0;
}

/* Brings @c's share of its sandbox's held bytes up to date (end of every pump). */
static void account(struct pconn *c)
{
	size_t now = held_bytes(c);

	c->l->stats.body_bytes = c->l->stats.body_bytes - c->charged + now;
	c->charged = now;
}

#define OVER_BUDGET "the sandbox's handlers hold more body bytes than --http-body-budget allows"

static void ws_mask_cb(void *arg, char *p, size_t n)
{
	mask_bytes(arg, p, n);
}

/* A 101 @m to a WebSocket request that holds masks: the frames the upstream sends will be
 * masked (ws.c). An extension it accepted anyway (it was not offered) would make them
 * opaque: refused, -1 with c->resp_why. */
static int ws_begin(struct pconn *c, struct sl_http_msg *m)
{
	if (!c->nmask || c->wsm)
		return 0;
	if (sl_http_get(m, "sec-websocket-extensions")) {
		snprintf(c->resp_why, sizeof(c->resp_why),
			 "the upstream accepted a WebSocket extension nobody offered, on a "
			 "connection that carried a secret: refused");
		return -1;
	}
	c->wsm = calloc(1, sizeof(*c->wsm));
	if (!c->wsm) {
		snprintf(c->resp_why, sizeof(c->resp_why), "out of memory");
		return -1;
	}
	return 0;
}

static int resp_coding(struct pconn *c, struct sl_http_msg *m)
{
	const char *ce = sl_http_get(m, "content-encoding");
	enum sl_coding k = sl_http_count(m, "content-encoding") > 1 ? SL_CODING_OTHER :
								      sl_coding_of(ce);

	c->coding_seen = 1;
	if (k == SL_CODING_IDENTITY || c->resp_body == SL_BODY_NONE)
		return 0;
	if (k == SL_CODING_OTHER || m->status == 206) {
		char coding[48];

		snprintf(coding, sizeof(coding), "%s", ce ? ce : "");
		for (char *q = coding; *q; q++)
			if ((unsigned char)*q < 0x20 || *q == '"' || *q == '\\')
				*q = '?';
		snprintf(c->resp_why, sizeof(c->resp_why),
			 "the upstream answered with Content-Encoding %s%s, which sluice cannot "
			 "decode to mask the secret this request carried: refused",
			 coding, m->status == 206 ? " on a range" : "");
		return -1;
	}
	c->dec = calloc(1, sizeof(*c->dec));
	if (!c->dec || sl_inflate_init(c->dec, k)) {
		snprintf(c->resp_why, sizeof(c->resp_why), "out of memory");
		return -1;
	}
	sl_http_set(m, "content-encoding", NULL);
	sl_http_set(m, "content-length", NULL);
	c->resp_body = SL_BODY_CHUNKED;
	return 0;
}

/* Decodes what the decoder holds: into the handler's buffer (bounded by its maximum), or
 * masked to the client while it has room. 0 or -1 (the response fails). */
static int dec_drain(struct pconn *c)
{
	char out[16384];

	for (;;) {
		ssize_t n;

		if (!c->resp_buffer && sl_buf_size(&c->c.out) >= BUF_LIMIT)
			return 0;
		n = sl_inflate_run(c->dec, out, sizeof(out));
		if (n < 0) {
			snprintf(c->resp_why, sizeof(c->resp_why),
				 "the upstream's body is not the %s it is labelled",
				 c->dec->coding == SL_CODING_GZIP ? "gzip" : "deflate");
			return -1;
		}
		if (c->resp_buffer) {
			if (sl_buf_size(&c->respbody) + n > c->resp_max) {
				c->resp_too_big = 1;
				c->l->stats.limit_resp_body++;
				return -1;
			}
			if (!within_budget(c, (size_t)n)) {
				snprintf(c->resp_why, sizeof(c->resp_why), "%s", OVER_BUDGET);
				return -1;
			}
			if (sl_buf_append(&c->respbody, out, n))
				return -1;
		} else if (n && write_masked(c, out, n, 0)) {
			return -1;
		}
		if (!sl_inflate_pending(c->dec))
			return 0;
	}
}

/* An empty buffer that grew with a large body is not kept by an idle connection. */
static void trim(struct sl_buf *b)
{
	if (!sl_buf_size(b) && b->cap > IDLE_BUF_KEEP)
		sl_buf_free(b);
}

/* Between requests: what a large transfer grew goes back. */
static void trim_idle(struct pconn *c)
{
	trim(&c->c.in);
	trim(&c->c.out);
	trim(&c->u.in);
	trim(&c->u.out);
	trim(&c->reqbody);
	trim(&c->respbody);
	trim(&c->mcarry);
}

static void next_request(struct pconn *c)
{
	c->rq = RQ_IDLE;
	c->resp_done = 0;
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	llhttp_resume(&c->reqp);
}

void sl_px_x_attach(struct sl_px_xchg *x, const struct sl_px_handler *h, void *hctx)
{
	struct pconn *c = (struct pconn *)x;

	c->h = h;
	c->hctx = hctx;
}

void sl_px_x_info(struct sl_px_xchg *x, struct sl_px_info *info)
{
	struct pconn *c = (struct pconn *)x;

	info->sandbox = c->l->ops->name(c->l->owner);
	info->pid = c->orig.pid;
	info->comm = c->comm;
	info->scheme = c->tls ? "https" : "http";
	info->host = c->name;
	info->sni = c->tls ? c->name : "";
	info->dst = (const struct sockaddr *)&c->dst;
}

struct sl_http_msg *sl_px_x_req(struct sl_px_xchg *x)
{
	return &((struct pconn *)x)->req;
}

const char *sl_px_x_path(struct sl_px_xchg *x)
{
	return ((struct pconn *)x)->path;
}

int sl_px_x_set_path(struct sl_px_xchg *x, const char *path)
{
	struct pconn *c = (struct pconn *)x;
	char *p;

	if (c->fetched)
		return -EALREADY;
	if (path[0] != '/' || strlen(path) > 8192)
		return -EINVAL;
	for (const char *q = path; *q; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '#')
			return -EINVAL;
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	free(c->path);
	c->path = p;
	return 0;
}

int sl_px_x_set_method(struct sl_px_xchg *x, const char *method)
{
	struct pconn *c = (struct pconn *)x;

	if (c->fetched)
		return -EALREADY;
	if (strlen(method) >= sizeof(c->req.method) || !sl_http_valid_name(method) ||
	    !strcasecmp(method, "CONNECT") || !strcasecmp(method, "TRACE"))
		return -EINVAL;
	snprintf(c->req.method, sizeof(c->req.method), "%s", method);
	return 0;
}

int sl_px_x_read_body(struct sl_px_xchg *x, size_t max)
{
	struct pconn *c = (struct pconn *)x;

	if (c->req_complete_seen || c->req_body_set || c->req_body == SL_BODY_NONE)
		return 1;
	if (c->fetched)
		return -EALREADY; /* it streams upstream already */
	if (c->hw != HW_NONE)
		return -EBUSY;
	c->req_buffer = 1;
	c->req_max = max;
	c->hw = HW_REQ_BODY;
	c->hseq++;
	llhttp_resume(&c->reqp);
	return 0;
}

const char *sl_px_x_body(struct sl_px_xchg *x, size_t *len)
{
	struct pconn *c = (struct pconn *)x;

	*len = sl_buf_size(&c->reqbody);
	return *len ? sl_buf_head(&c->reqbody) : "";
}

int sl_px_x_set_body(struct sl_px_xchg *x, const char *body, size_t len)
{
	struct pconn *c = (struct pconn *)x;

	if (c->fetched)
		return -EALREADY;
	if (c->hw != HW_NONE)
		return -EBUSY;
	if (len > sl_buf_size(&c->reqbody) && !within_budget(c, len - sl_buf_size(&c->reqbody)))
		return -ENOBUFS;
	sl_buf_reset(&c->reqbody);
	if (len && sl_buf_append(&c->reqbody, body, len))
		return -ENOMEM;
	c->req_body_set = 1;
	return 0;
}

int sl_px_x_fetch(struct sl_px_xchg *x)
{
	struct pconn *c = (struct pconn *)x;
	int r;

	if (c->fetched)
		return -EALREADY;
	if (c->hw != HW_NONE)
		return -EBUSY;
	c->fetched = c->hold_resp = 1;
	c->hw = HW_RESP_HEAD;
	c->hseq++;
	c->rq = RQ_CONNECT;
	r = start_upstream(c);
	if (r) {
		close_upstream(c);
		c->hw = HW_NONE;
		return r;
	}
	if (c->up == UP_READY)
		upstream_ready(c);
	return 0;
}

struct sl_http_msg *sl_px_x_resp(struct sl_px_xchg *x)
{
	struct pconn *c = (struct pconn *)x;

	return c->resp_held ? &c->resp : NULL;
}

int sl_px_x_read_resp_body(struct sl_px_xchg *x, size_t max)
{
	struct pconn *c = (struct pconn *)x;

	if (!c->resp_held)
		return -EINVAL;
	if (c->resp_done || c->resp_body == SL_BODY_NONE || c->to_tunnel)
		return 1;
	if (c->hw != HW_NONE)
		return -EBUSY;
	c->resp_buffer = 1;
	c->resp_max = max;
	c->hw = HW_RESP_BODY;
	c->hseq++;
	llhttp_resume(&c->respp);
	return 0;
}

const char *sl_px_x_resp_body(struct sl_px_xchg *x, size_t *len)
{
	struct pconn *c = (struct pconn *)x;

	*len = sl_buf_size(&c->respbody);
	return *len ? sl_buf_head(&c->respbody) : "";
}

int sl_px_x_set_resp_body(struct sl_px_xchg *x, const char *body, size_t len)
{
	struct pconn *c = (struct pconn *)x;

	if (!c->resp_held || c->to_tunnel)
		return -EINVAL;
	if (c->hw != HW_NONE)
		return -EBUSY;
	if (len > sl_buf_size(&c->respbody) && !within_budget(c, len - sl_buf_size(&c->respbody)))
		return -ENOBUFS;
	sl_buf_reset(&c->respbody);
	if (len && sl_buf_append(&c->respbody, body, len))
		return -ENOMEM;
	c->resp_body_set = 1;
	return 0;
}

/* A whole response body made or read here goes out with its length. */
static void write_whole(struct pconn *c, struct sl_http_msg *m, struct sl_buf *body, int close)
{
	char n[24];
	int nobody = !strcmp(c->req.method, "HEAD") || m->status == 204 || m->status == 304;

	mask_msg(c, m);
	mask_bytes(c, (char *)sl_buf_head(body), sl_buf_size(body));
	snprintf(n, sizeof(n), "%zu", sl_buf_size(body));
	if (m->status == 204 || m->status == 304) {
		sl_http_set(m, "content-length", NULL);
		sl_http_write_response(m, SL_BODY_NONE, NULL, close, &c->c.out);
	} else {
		sl_http_set(m, "content-length", n);
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, close, &c->c.out);
	}
	if (!nobody)
		sl_buf_append(&c->c.out, sl_buf_head(body), sl_buf_size(body));
	c->resp_head_sent = 1;
	c->resp_bytes = nobody ? 0 : sl_buf_size(body);
}

void sl_px_x_send_fetched(struct sl_px_xchg *x)
{
	struct pconn *c = (struct pconn *)x;
	struct sl_http_msg *m = &c->resp;

	handler_done(c);
	if (!c->resp_held) {
		respond_error(c, 502, "the handler returned a response it did not fetch", "error");
		return;
	}
	c->resp_held = c->hold_resp = 0;
	if (c->nmask && !c->coding_seen && !c->to_tunnel && !c->resp_body_set) {
		/* The handler read a secret after the head arrived: the body must still be
		 * masked as the client will read it. */
		if (c->resp_done ? sl_coding_of(sl_http_get(m, "content-encoding")) !=
					   SL_CODING_IDENTITY :
				   resp_coding(c, m)) {
			respond_error(c, 502,
				      c->resp_why[0] ? c->resp_why :
						       "the response is encoded and was read "
						       "before a secret: refused",
				      "error");
			return;
		}
	}
	if (c->to_tunnel) {
		if (ws_begin(c, m)) {
			respond_error(c, 502, c->resp_why, "error");
			return;
		}
		mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, "websocket", 0, &c->c.out);
		c->resp_head_sent = 1;
		llhttp_resume(&c->respp);
		return;
	}
	if (c->resp_body_set || c->resp_done) {
		if (!c->resp_done)
			close_upstream(c); /* the rest of the upstream's body is not wanted */
		write_whole(c, m, &c->respbody, c->close_after);
		sl_buf_free(&c->respbody); /* it waits in c->c.out now (and counts there) */
		finish_request(c);
		return;
	}
	mask_msg(c, m);
	if (c->resp_body == SL_BODY_NONE && sl_http_get(m, "content-length") &&
	    !strcmp(c->req.method, "HEAD"))
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, c->close_after, &c->c.out);
	else
		sl_http_write_response(m, c->resp_body, NULL, c->close_after, &c->c.out);
	c->resp_head_sent = 1;
	llhttp_resume(&c->respp);
}

void sl_px_x_send(struct sl_px_xchg *x, int status, const struct sl_http_msg *headers,
		  const char *body, size_t len)
{
	struct pconn *c = (struct pconn *)x;
	int keep = !c->close_after && !c->c.eof &&
		   (c->req_complete_seen || c->rq == RQ_DONE ||
		    (c->req_body == SL_BODY_NONE && !c->req_body_set));
	struct sl_http_msg m;
	struct sl_buf b = { 0 };

	handler_done(c);
	if (c->fetched && !(c->resp_done && c->rq == RQ_DONE))
		close_upstream(c); /* mid-exchange: it cannot be reused */
	c->resp_held = c->hold_resp = 0;
	sl_http_msg_init(&m);
	m.status = status;
	for (size_t i = 0; headers && i < headers->nh; i++)
		if (!sl_http_managed(headers->h[i].name))
			sl_http_add(&m, headers->h[i].name, headers->h[i].value);
	if (len) {
		sl_buf_append(&b, body, len);
	} else if (status >= 400) {
		/* A refusal the handler made without words: the program that gets it (or the
		 * person reading its error) learns that sluice's policy answered, not the host. */
		char why[160], text[512];

		snprintf(why, sizeof(why), "the policy's handler %s answered %d",
			 c->handler[0] ? c->handler : "", status);
		refusal_text(c, status, why, text, sizeof(text));
		sl_buf_printf(&b, "%s\n", text);
		if (!sl_http_get(&m, "content-type"))
			sl_http_add(&m, "content-type", "text/plain; charset=utf-8");
	}
	write_whole(c, &m, &b, !keep);
	sl_http_msg_free(&m);
	sl_buf_free(&b);
	request_event(c, status, "respond", NULL);
	if (!keep) {
		c->st = C_CLOSING;
		return;
	}
	if (c->req_complete_seen || c->rq == RQ_DONE) {
		next_request(c);
		return;
	}
	/* The request's end (a GET's completion, a body being sent) is still to be parsed:
	 * read and drop it, then take the next request. */
	c->local = c->req_discard = 1;
	if (c->rq < RQ_BODY)
		llhttp_resume(&c->reqp);
	c->rq = RQ_BODY;
}

void sl_px_x_fail(struct sl_px_xchg *x, int status, const char *why)
{
	struct pconn *c = (struct pconn *)x;

	handler_done(c);
	respond_error(c, status, why, "error");
}

void sl_px_x_count_limit(struct sl_px_xchg *x, enum sl_px_limit which)
{
	struct sl_proxy_stats *st = &((struct pconn *)x)->l->stats;

	if (which == SL_PX_LIMIT_LUA_MEM)
		st->limit_lua_mem++;
	else
		st->limit_lua_insns++;
}

int sl_px_x_mask(struct sl_px_xchg *x, const char *secret, size_t len)
{
	struct pconn *c = (struct pconn *)x;
	struct mask *m;

	if (len < MASK_LEN_MIN || len > MASK_LEN_MAX)
		return 0;
	for (size_t i = 0; i < c->nmask; i++)
		if (c->masks[i].n == len && !memcmp(c->masks[i].s, secret, len))
			return 0;
	if (c->nmask == MASK_MAX)
		return -ENOSPC;
	m = &c->masks[c->nmask];
	m->s = malloc(len);
	if (!m->s)
		return -ENOMEM;
	memcpy(m->s, secret, len);
	m->n = len;
	c->nmask++;
	if (len > c->mask_longest)
		c->mask_longest = len;
	return 0;
}

static int has_mask(const struct pconn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < c->nmask; i++)
		if (n >= c->masks[i].n && memmem(p, n, c->masks[i].s, c->masks[i].n))
			return 1;
	return 0;
}

int sl_px_x_cleartext_secret(struct sl_px_xchg *x)
{
	struct pconn *c = (struct pconn *)x;
	const struct sl_http_msg *m = &c->req;
	int found;

	if (c->tls || !c->nmask)
		return 0;
	found = has_mask(c, m->method, strlen(m->method)) ||
		(c->path && has_mask(c, c->path, strlen(c->path))) ||
		(c->req_body_set && has_mask(c, sl_buf_head(&c->reqbody), sl_buf_size(&c->reqbody)));
	for (size_t i = 0; i < m->nh && !found; i++)
		found = has_mask(c, m->h[i].name, strlen(m->h[i].name)) ||
			has_mask(c, m->h[i].value, strlen(m->h[i].value));
	return found;
}

void sl_px_x_set_handler(struct sl_px_xchg *x, const char *name)
{
	struct pconn *c = (struct pconn *)x;
	size_t n = strlen(name);

	if (n >= sizeof(c->handler))
		n = sizeof(c->handler) - 1;
	memcpy(c->handler, name, n);
	c->handler[n] = 0;
}

void sl_px_x_redact(struct sl_px_xchg *x, char *s, size_t len)
{
	mask_bytes((struct pconn *)x, s, len);
}

/* ---- request parsing ---- */

static struct pconn *conn_of(llhttp_t *p)
{
	return ((struct parse_ctx *)p->data)->c;
}

static int req_begin(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	sl_http_msg_reset(&c->req);
	free(c->path);
	c->path = NULL;
	c->rq = RQ_HEAD;
	c->websocket = 0;
	handler_abort(c, "a new request began"); /* never: each request ends its handler */
	c->decided = c->fetched = c->hold_resp = c->resp_held = c->local = 0;
	c->req_buffer = c->req_complete_seen = c->req_discard = c->req_body_set = 0;
	c->resp_buffer = c->resp_too_big = c->resp_body_set = 0;
	sl_buf_reset(&c->reqbody);
	sl_buf_reset(&c->respbody);
	clear_masks(c);
	c->handler[0] = 0;
	c->req_bytes = c->resp_bytes = 0;
	c->t_req_ms = sl_now_ms();
	c->t_up_ms = c->t_up_first_ms = 0;
	/* The whole head must arrive within the header timeout, however slowly it trickles. */
	c->deadline_ms = c->t_req_ms + c->l->px->o.header_timeout_ms;
	return 0;
}

static int reject(struct pconn *c, int status, const char *why)
{
	c->reject_status = status;
	c->reject_why = why;
	return HPE_PAUSED;
}

/* The request head is complete: is it one we serve? */
static int req_headers_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);
	struct sl_http_msg *m = &c->req;
	const char *hosthdr, *path = NULL, *upgrade;
	char host[256], thost[256], scheme[8];

	snprintf(m->method, sizeof(m->method), "%s", llhttp_method_name(p->method));
	m->major = p->http_major;
	m->minor = p->http_minor;
	if (p->method == HTTP_CONNECT || p->method == HTTP_TRACE)
		return reject(c, 405, "CONNECT and TRACE are not served");
	if (!m->target || sl_http_split_target(m->target, scheme, sizeof(scheme), thost,
					       sizeof(thost), &path))
		return reject(c, 400, "unsupported request target");
	hosthdr = sl_http_get(m, "host");
	if (sl_http_count(m, "host") != 1 || sl_http_host_only(hosthdr, host, sizeof(host)))
		return reject(c, 400, "exactly one valid Host header is required");
	if (thost[0] && strcmp(thost, host))
		return reject(c, 421, "the absolute-form target names another host than Host");
	if (c->tls) {
		if (strcmp(host, c->name))
			return reject(c, 421, "Host differs from the TLS server name");
	} else {
		/* Plain HTTP: Host names the host, which must be intercepted, here. */
		if (c->l->ops->name_verdict(c->l->owner, host) != SL_VERDICT_PROXY ||
		    !c->l->ops->name_at(c->l->owner, host, c->dst_family, c->dst_addr))
			return reject(c, 421, "Host is not an intercepted name at this address");
		snprintf(c->name, sizeof(c->name), "%s", host);
	}
	upgrade = sl_http_get(m, "upgrade");
	if (upgrade && sl_http_has_token(m, "upgrade", "h2c") &&
	    !sl_http_has_token(m, "upgrade", "websocket")) {
		/* An h2c upgrade is the server's to ignore (RFC 9113 section 3.1 and RFC 9110
		 * section 7.8): dropped with its settings (Connection and what it names never go
		 * upstream), and the request served over HTTP/1.1. llhttp must then go on
		 * parsing HTTP/1.1 after this request, not stop for another protocol. */
		sl_http_set(m, "upgrade", NULL);
		sl_http_set(m, "http2-settings", NULL);
		p->upgrade = 0;
		upgrade = NULL;
	}
	if (upgrade) {
		if (strcasecmp(upgrade, "websocket"))
			return reject(c, 400, "only WebSocket upgrades are relayed");
		c->websocket = 1;
	}
	if (sl_http_get(m, "accept-encoding")) {
		/* Every intercepted request asks only for codings sluice can decode: a handler
		 * may read a secret after this head went to it (or the policy read one at load),
		 * and its response must then be masked as the client reads it. br or zstd
		 * would leave a 502 as the only safe answer; gzip costs some ratio, nothing else. */
		char ae[256];

		if (sl_accept_encoding(sl_http_get(m, "accept-encoding"), ae, sizeof(ae)))
			snprintf(ae, sizeof(ae), "identity");
		if (sl_http_set(m, "accept-encoding", ae))
			return reject(c, 500, "out of memory");
	}
	c->path = strdup(path);
	if (!c->path)
		return reject(c, 500, "out of memory");
	c->close_after = !llhttp_should_keep_alive(p);
	if (p->flags & F_CHUNKED)
		c->req_body = SL_BODY_CHUNKED;
	else if (p->flags & F_CONTENT_LENGTH)
		c->req_body = SL_BODY_LENGTH;
	else
		c->req_body = SL_BODY_NONE;
	c->rq = RQ_DECIDE;
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	return HPE_PAUSED;
}

static int req_body(llhttp_t *p, const char *at, size_t len)
{
	struct pconn *c = conn_of(p);

	c->req_bytes += len;
	if (c->req_discard)
		return 0;
	if (c->req_buffer) {
		if (sl_buf_size(&c->reqbody) + len > c->req_max) {
			c->l->stats.limit_req_body++;
			return reject(c, 413, "the request body is larger than its handler may read");
		}
		if (!within_budget(c, len))
			return reject(c, 413, OVER_BUDGET);
		return sl_buf_append(&c->reqbody, at, len) ? -1 : 0;
	}
	return sl_http_write_body(&c->u.out, c->req_body, at, len) ? -1 : 0;
}

static int req_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	if (c->req_buffer && !c->req_discard) {
		/* Read for the handler: the parser waits here until the request is answered. */
		c->req_complete_seen = 1;
		c->req_body_set = 1;
		return HPE_PAUSED;
	}
	if (!c->req_discard && c->req_body == SL_BODY_CHUNKED &&
	    sl_http_write_last_chunk(&c->u.out))
		return -1;
	c->rq = RQ_DONE;
	/* One request at a time: the next (pipelined) one waits for this response. */
	return HPE_PAUSED;
}

/* ---- response parsing ---- */

static int resp_begin(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	sl_http_msg_reset(&c->resp);
	c->resp_started = 1;
	if (!c->t_up_first_ms)
		c->t_up_first_ms = sl_now_ms();
	return 0;
}

static int resp_headers_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);
	struct sl_http_msg *m = &c->resp;
	int head = !strcmp(c->req.method, "HEAD");

	m->status = p->status_code;
	m->major = p->http_major;
	m->minor = p->http_minor;
	if (m->status < 100 || m->status > 599)
		return -1; /* llhttp takes "HTTP/1.1 7": not a status to relay */
	if (m->status == 101) {
		if (!c->websocket)
			return -1; /* an upgrade nobody asked for */
		c->to_tunnel = 1;
		if (ws_begin(c, m))
			return -1;
		if (c->hold_resp) {
			c->resp_held = 1;
			return HPE_PAUSED;
		}
		mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, "websocket", 0, &c->c.out);
		c->resp_head_sent = 1;
		return 0;
	}
	if (m->status >= 100 && m->status < 200) {
		/* 100 Continue, 103 Early Hints: relayed, masked like any head (an Early Hints
		 * Link can echo a request's header); the final response follows. */
		c->interim = 1;
		mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, NULL, 0, &c->c.out);
		return 0;
	}
	c->interim = 0;
	if (head || m->status == 204 || m->status == 304)
		c->resp_body = SL_BODY_NONE;
	else if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED))
		c->resp_body = SL_BODY_LENGTH;
	else
		c->resp_body = SL_BODY_CHUNKED; /* chunked, or delimited by the close */
	if (c->nmask && resp_coding(c, m))
		return -1;
	if (c->hold_resp) {
		/* The handler sees the head first (sl_px_x_send_fetched writes it). */
		c->resp_held = 1;
		if (head)
			p->flags |= F_SKIPBODY; /* what returning 1 would have said */
		return HPE_PAUSED;
	}
	mask_msg(c, m);
	if (c->resp_body == SL_BODY_NONE && (p->flags & F_CONTENT_LENGTH) && head) {
		/* A HEAD answer keeps its Content-Length: it describes the GET. */
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, c->close_after, &c->c.out);
	} else {
		sl_http_write_response(m, c->resp_body, NULL, c->close_after, &c->c.out);
	}
	c->resp_head_sent = 1;
	/* llhttp cannot know that a response to HEAD has no body: 1 tells it. */
	return head ? 1 : 0;
}

static int resp_body(llhttp_t *p, const char *at, size_t len)
{
	struct pconn *c = conn_of(p);

	c->resp_bytes += len;
	if (c->dec) {
		/* Decoded in bounded steps: what the client has no room for yet waits in the
		 * decoder, and the parser with it (resumed by handle_response). */
		if (sl_inflate_feed(c->dec, at, len) || dec_drain(c))
			return -1;
		if (sl_inflate_pending(c->dec)) {
			c->dec_paused = 1;
			return HPE_PAUSED;
		}
		return 0;
	}
	if (c->resp_buffer) {
		if (sl_buf_size(&c->respbody) + len > c->resp_max) {
			c->resp_too_big = 1;
			c->l->stats.limit_resp_body++;
			return -1;
		}
		if (!within_budget(c, len)) {
			snprintf(c->resp_why, sizeof(c->resp_why), "%s", OVER_BUDGET);
			return -1;
		}
		return sl_buf_append(&c->respbody, at, len) ? -1 : 0;
	}
	if (c->nmask)
		return write_masked(c, at, len, 0);
	return sl_http_write_body(&c->c.out, c->resp_body, at, len) ? -1 : 0;
}

static int resp_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	if (c->to_tunnel)
		return HPE_PAUSED;
	if (c->interim) {
		c->interim = 0;
		return 0; /* the final response is next in the same stream */
	}
	if (!c->resp_buffer) {
		if (c->nmask && write_masked(c, NULL, 0, 1))
			return -1;
		if (c->resp_body == SL_BODY_CHUNKED && sl_http_write_last_chunk(&c->c.out))
			return -1;
	}
	c->resp_done = 1;
	return HPE_PAUSED;
}

/* The response is complete: account, keep the upstream if it may be reused, and let the
 * next pipelined request through. */
static void finish_request(struct pconn *c)
{
	request_event(c, c->resp.status, "forward", NULL);
	/* A reusable upstream stays with this client for its next request (no loop changes
	 * at all), or goes to the pool when this client is done: a client that closes after
	 * each request must not cost a TLS handshake upstream each time. */
	if (c->rq != RQ_DONE || !llhttp_should_keep_alive(&c->respp))
		close_upstream(c);
	else if (c->close_after)
		pool_put(c);
	if (c->rq != RQ_DONE || c->close_after) {
		/* The response ended before the request did, or the client is done: close. */
		c->st = C_CLOSING;
		return;
	}
	next_request(c);
}

/* ---- the pump ---- */

/* Feeds @p (parsing @m) the unconsumed bytes of @in; returns the llhttp result. */
static llhttp_errno_t feed(llhttp_t *p, struct sl_http_msg *m, struct sl_buf *in, size_t max)
{
	size_t n = sl_buf_size(in) < max ? sl_buf_size(in) : max;
	const char *data = n ? sl_buf_head(in) : "";
	llhttp_errno_t e;

	/* Even without bytes: a parser resumed after a pause may still owe callbacks (a GET's
	 * message completion follows its headers without consuming anything). */
	m->feed_end = data + n;
	e = llhttp_execute(p, data, n);
	if (e == HPE_OK) {
		sl_buf_consume(in, n);
	} else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		sl_buf_consume(in, llhttp_get_error_pos(p) - data);
	}
	return e;
}

static void handle_requests(struct pconn *c)
{
	llhttp_errno_t e;

	if (c->rq != RQ_IDLE && c->rq != RQ_HEAD && c->rq != RQ_BODY &&
	    !(c->rq == RQ_DECIDE && c->hw == HW_REQ_BODY))
		return;
	if (c->rq == RQ_BODY && sl_buf_size(&c->u.out) >= BUF_LIMIT)
		return;
	e = feed(&c->reqp, &c->req, &c->c.in, c->rq == RQ_BODY ? BUF_LIMIT : SIZE_MAX);
	if (e == HPE_OK || e == HPE_PAUSED_UPGRADE)
		return;
	if (e == HPE_PAUSED) {
		if (c->reject_status) {
			char body[512];

			handler_abort(c, c->reject_why);
			request_event(c, c->reject_status, "reject", c->reject_why);
			c->l->stats.rejected++;
			refusal_text(c, c->reject_status, c->reject_why, body, sizeof(body));
			sl_buf_reset(&c->c.out);
			sl_http_write_error(&c->c.out, c->reject_status, body);
			c->reject_status = 0;
			c->st = C_CLOSING;
			return;
		}
		if (c->rq == RQ_DECIDE && !c->decided) {
			decide(c);
			/* Sent upstream at once (a pooled connection): parse the body before the
			 * head is flushed, so that a malformed body never reaches the upstream. */
			if (c->rq == RQ_BODY && c->st == C_HTTP && !c->dead)
				handle_requests(c);
		} else if (c->rq == RQ_DECIDE && c->hw == HW_REQ_BODY && c->req_complete_seen) {
			c->hw = HW_NONE;
			handler_resume(c);
		} else if (c->rq == RQ_DONE && c->local) {
			c->local = 0; /* answered here, and now read to its end */
			next_request(c);
		}
		return;
	}
	/* Malformed: bad framing (CL and TE, invalid chunks), obs-fold, bare LF, oversize. */
	{
		char why[256];
		int status = c->req.head_bytes > SL_HTTP_MAX_HEAD ? 431 : 400;

		if (status == 431)
			c->l->stats.limit_head++;

		snprintf(why, sizeof(why), "malformed request: %s",
			 llhttp_get_error_reason(&c->reqp) ? llhttp_get_error_reason(&c->reqp) :
							     llhttp_errno_name(e));
		if (c->rq == RQ_BODY && c->resp_head_sent) {
			request_event(c, 400, "reject", why);
			c->c.err = 1;
			return;
		}
		respond_error(c, status, why, "reject");
	}
}

static void handle_response(struct pconn *c)
{
	llhttp_errno_t e;

	if (c->up != UP_READY || c->rq < RQ_BODY || c->resp_done ||
	    (c->resp_held && c->hw != HW_RESP_BODY))
		return;
	if (sl_buf_size(&c->c.out) >= BUF_LIMIT)
		return;
	if (c->dec_paused) {
		if (dec_drain(c)) {
			respond_error(c, 502, c->resp_why[0] ? c->resp_why : "decoding failed",
				      "error");
			return;
		}
		if (sl_inflate_pending(c->dec))
			return;
		c->dec_paused = 0;
		llhttp_resume(&c->respp);
	}
	e = feed(&c->respp, &c->resp, &c->u.in, BUF_LIMIT);
	if (e == HPE_OK && c->u.eof && !sl_buf_size(&c->u.in)) {
		if (c->resp_started && llhttp_message_needs_eof(&c->respp))
			e = llhttp_finish(&c->respp);
		else {
			respond_error(c, 502, "the upstream closed the connection mid-response",
				      "error");
			return;
		}
	}
	if (e == HPE_PAUSED && c->resp_held && c->hw == HW_RESP_HEAD) {
		c->hw = HW_NONE;
		handler_resume(c);
		return;
	}
	if (e == HPE_PAUSED && c->to_tunnel) {
		/* 101 Switching Protocols: from now on both directions are raw. */
		request_event(c, 101, "forward", NULL);
		c->st = C_TUNNEL;
		return;
	}
	if (e == HPE_PAUSED && c->resp_done) {
		if (c->hw == HW_RESP_BODY) {
			c->hw = HW_NONE;
			handler_resume(c);
			return;
		}
		finish_request(c);
		return;
	}
	if (e != HPE_OK && e != HPE_PAUSED) {
		char why[256];

		if (c->resp_too_big)
			snprintf(why, sizeof(why),
				 "the upstream response body is larger than its handler may read");
		else if (c->resp_why[0])
			snprintf(why, sizeof(why), "%s", c->resp_why);
		else
			snprintf(why, sizeof(why), "malformed upstream response: %s",
				 llhttp_errno_name(e));
		respond_error(c, 502, why, "error");
	}
}

/* Raw bytes both ways (WebSocket after 101, or a spliced TLS passthrough). */
static int handle_tunnel(struct pconn *c)
{
	size_t n = 0;

	if (sl_buf_size(&c->c.in) && sl_buf_size(&c->u.out) < BUF_LIMIT) {
		n += sl_buf_size(&c->c.in);
		sl_buf_append(&c->u.out, sl_buf_head(&c->c.in), sl_buf_size(&c->c.in));
		sl_buf_reset(&c->c.in);
	}
	if (sl_buf_size(&c->u.in) && sl_buf_size(&c->c.out) < BUF_LIMIT) {
		n += sl_buf_size(&c->u.in);
		if (c->wsm) {
			if (sl_ws_mask_feed(c->wsm, sl_buf_head(&c->u.in), sl_buf_size(&c->u.in),
					    c->mask_longest - 1, ws_mask_cb, c, &c->c.out))
				return -1; /* not frames a server sends: the connection ends */
		} else {
			sl_buf_append(&c->c.out, sl_buf_head(&c->u.in), sl_buf_size(&c->u.in));
		}
		sl_buf_reset(&c->u.in);
	}
	if (c->c.eof && !sl_buf_size(&c->c.in))
		sl_stream_shutdown(&c->u);
	if (c->u.eof && !sl_buf_size(&c->u.in)) {
		if (c->wsm && sl_ws_mask_flush(c->wsm, ws_mask_cb, c, &c->c.out))
			return -1;
		sl_stream_shutdown(&c->c);
	}
	if ((c->c.eof && c->u.eof && !sl_buf_size(&c->c.out) && !sl_buf_size(&c->u.out)) ||
	    c->c.err || c->u.err)
		return -1;
	return n ? 1 : 0;
}

static int client_handshake(struct pconn *c)
{
	int r;

	ERR_clear_error();
	r = SSL_accept(c->c.ssl);
	if (r == 1) {
		c->st = C_HTTP;
		return 1;
	}
	r = SSL_get_error(c->c.ssl, r);
	if (r == SSL_ERROR_WANT_READ) {
		c->c.ssl_wants_write = 0;
		return 0;
	}
	if (r == SSL_ERROR_WANT_WRITE) {
		c->c.ssl_wants_write = 1;
		return 0;
	}
	{
		char err[256], why[320];

		if (sl_tls_client_distrust(c->c.ssl))
			snprintf(why, sizeof(why),
				 "client TLS handshake failed: the client does not trust this "
				 "sandbox's CA: see `sluice ca %s`",
				 c->l->ops->name(c->l->owner));
		else
			snprintf(why, sizeof(why), "client TLS handshake failed: %s",
				 sl_tls_error(err, sizeof(err)));
		c->l->stats.tls_failed++;
		conn_event(c->l, c, "error", why);
	}
	return -1;
}

static void update_events(struct pconn *c)
{
	struct sl_loop *loop = c->l->px->loop;
	unsigned ce = 0, ue = 0;

	if (c->ksplice)
		return; /* ksplice_pump() decides */
	switch (c->st) {
	case C_SNIFF:
		ce = SL_READ;
		break;
	case C_HANDSHAKE:
		ce = c->c.ssl_wants_write ? SL_WRITE : SL_READ;
		break;
	case C_HTTP:
	case C_TUNNEL:
		ce = sl_stream_events(&c->c, !c->c.eof && sl_buf_size(&c->c.in) < BUF_LIMIT);
		break;
	case C_CLOSING:
		ce = sl_stream_events(&c->c, c->lingering);
		break;
	}
	sl_loop_mod_fd(loop, c->c.fd, ce);
	if (c->u.fd < 0)
		return;
	if (c->up == UP_CONNECTING)
		ue = SL_WRITE;
	else if (c->up == UP_HANDSHAKE)
		ue = c->up_wants;
	else
		ue = sl_stream_events(&c->u, !c->u.eof && sl_buf_size(&c->u.in) < BUF_LIMIT);
	sl_loop_mod_fd(loop, c->u.fd, ue);
}

static void sniff(struct pconn *c);
static void ksplice_begin(struct pconn *c);
static void ksplice_pump(struct pconn *c);

/*
 * After the answer that ends a connection: our direction is closed (close_notify, FIN) and
 * what the client still sends, typically the rest of a body we refused, is read and dropped
 * until it closes too, for at most LINGER_MS and LINGER_BYTES. Closing with unread bytes
 * would make the kernel answer them with a reset, which can destroy our answer before the
 * client reads it (what nginx's lingering_close is for). Returns whether to go on.
 */
static int linger(struct pconn *c)
{
	if (!c->lingering) {
		if (c->c.eof)
			return 0;
		c->lingering = 1;
		sl_stream_shutdown(&c->c);
		c->deadline_ms = sl_now_ms() + LINGER_MS;
	}
	sl_stream_read(&c->c, BUF_LIMIT);
	c->linger_bytes += sl_buf_size(&c->c.in);
	sl_buf_reset(&c->c.in);
	return !c->c.eof && !c->c.err && c->linger_bytes < LINGER_BYTES;
}

/* Moves everything that can move; runs until nothing does. May end @c. */
static void pump(struct pconn *c)
{
	c->busy++;
	for (int round = 0; round < 64 && !c->dead; round++) {
		uint64_t before = c->c.rx + c->c.tx + c->u.rx + c->u.tx;
		unsigned hseq = c->hseq;
		enum cstate st = c->st;
		enum rqstate rq = c->rq;
		enum upstate up = c->up;

		if (c->ksplice) {
			ksplice_pump(c);
			break;
		}
		if (c->st == C_SNIFF) {
			sniff(c);
			if (c->st == C_SNIFF)
				break;
			continue;
		}
		if (c->st == C_HANDSHAKE) {
			int r = client_handshake(c);

			if (r < 0) {
				conn_close(c);
				break;
			}
			if (!r)
				break;
		}
		if (c->st == C_CLOSING) {
			sl_stream_flush(&c->c);
			if (c->c.err || (!sl_buf_size(&c->c.out) && !linger(c)))
				conn_close(c);
			break;
		}
		if (c->up == UP_CONNECTING || c->up == UP_HANDSHAKE) {
			if (upstream_progress(c))
				continue;
			if (c->up == UP_READY && c->st == C_HTTP && c->rq == RQ_CONNECT)
				upstream_ready(c);
			if (c->up == UP_READY && c->spliced) {
				ksplice_begin(c);
				continue;
			}
		}
		sl_stream_read(&c->c, BUF_LIMIT);
		if (c->u.fd >= 0 && c->up == UP_READY)
			sl_stream_read(&c->u, BUF_LIMIT);
		if (c->st == C_TUNNEL) {
			if (handle_tunnel(c) < 0) {
				conn_close(c);
				break;
			}
		} else {
			handle_requests(c);
			if (c->st == C_HTTP)
				handle_response(c);
		}
		if (c->dead)
			break;
		if (c->u.fd >= 0 && c->up == UP_READY)
			sl_stream_flush(&c->u);
		/* The client's bytes go out when the pump settles (below), so that a response's
		 * head and body share a TLS record and a write(), unless a record's worth is
		 * waiting already. */
		if (sl_buf_size(&c->c.out) >= FLUSH_AT)
			sl_stream_flush(&c->c);
		if (c->st == C_HTTP) {
			/* The client went away: nothing left to answer (a response in flight
			 * to a half-closed client is still delivered). */
			if (c->c.err || (c->c.eof && c->rq <= RQ_HEAD && !sl_buf_size(&c->c.in))) {
				conn_close(c);
				break;
			}
			if (c->u.err && c->rq >= RQ_BODY) {
				respond_error(c, 502, "the upstream connection failed", "error");
				continue;
			}
			if (c->c.eof && c->rq > RQ_HEAD && c->rq < RQ_DONE && !sl_buf_size(&c->c.in)) {
				conn_close(c); /* the request body was cut short */
				break;
			}
		}
		if (c->st == C_HTTP && c->rq <= RQ_HEAD && c->u.fd >= 0 &&
		    (c->u.eof || c->u.err || sl_buf_size(&c->u.in)))
			close_upstream(c); /* the idle upstream closed, or spoke out of turn */
		if (c->c.rx + c->c.tx + c->u.rx + c->u.tx != before) {
			if (c->rq >= RQ_BODY || c->st == C_TUNNEL)
				c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
			continue;
		}
		if (c->st == st && c->rq == rq && c->up == up && c->hseq == hseq)
			break;
	}
	if (c->busy == 1 && !c->dead && !c->ksplice && c->st != C_SNIFF && c->st != C_HANDSHAKE) {
		sl_stream_flush(&c->c);
		if (c->c.err)
			c->dead = 1;
	}
	if (--c->busy)
		return;
	if (c->dead) {
		conn_free(c);
		return;
	}
	if (c->st == C_HTTP && c->rq == RQ_IDLE)
		trim_idle(c);
	account(c);
	update_events(c);
}

static void conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct pconn *c = arg;

	(void)loop;
	if (events & (SL_READ | SL_HUP)) {
		if (fd == c->c.fd)
			c->c.readable = 1;
		else if (fd == c->u.fd)
			c->u.readable = 1;
	}
	pump(c);
}

/* ---- passthrough spliced in the kernel ---- */

#define KDRAIN_MS 5000 /* a half-close waits at most this long for bytes still in flight */
#define KDRAIN_POLL_MS 1
#define KSPLICE_SNDBUF (4 << 20)

/* Socket @i of a kernel-spliced connection: 0 the client's, 1 the upstream's. */
static struct sl_stream *kside(struct pconn *c, int i)
{
	return i ? &c->u : &c->c;
}

static void ksplice_timer_cb(struct sl_loop *loop, void *arg)
{
	struct pconn *c = arg;

	(void)loop;
	c->ktimer = NULL;
	pump(c);
}

/*
 * Whether everything meant for socket @i is in its send queue: what we wrote into it, and
 * what the kernel redirected into it (the bytes taken from the other socket; kpair.cookie[i]
 * is the *other* socket of @i, see ksplice_start()). Until then a FIN would overtake them.
 */
static int kdrained(struct pconn *c, int i)
{
	uint64_t queued;

	if (sl_buf_size(&kside(c, i)->out) || sl_tcp_queued(kside(c, i)->fd, &queued))
		return 0;
	return queued - c->kbase[i] >= c->kwrote[i] + sl_splice_moved(c->l->px->splice,
								       &c->kpair, i);
}

/*
 * Hands a checked passthrough connection to the kernel. The client's first bytes (its
 * ClientHello) are read here; then the upstream socket and the client's go into the
 * sockhash, in that order; only then is the ClientHello written upstream, so that the
 * server's answer cannot land on a socket whose bytes are not redirected yet. Bytes the
 * client sends after our read and before its socket is in the map stay queued and are
 * redirected, in order, with the next ones. Returns 0 when the kernel carries the
 * connection, or -errno with nothing changed but the read bytes in @c->c.in (the caller
 * relays it itself then, as handle_tunnel() always did).
 */
static int ksplice_start(struct pconn *c)
{
	struct sl_proxy *px = c->l->px;
	int fds[2] = { c->u.fd, c->c.fd };
	int err = 0;

	if (!px->splice)
		return -EOPNOTSUPP;
	for (int i = 0; i < 2 && !err; i++)
		err = sl_tcp_queued(kside(c, i)->fd, &c->kbase[i]);
	if (err)
		return err;
	while (sl_buf_size(&c->c.in) < BUF_LIMIT) {
		char b[16384];
		ssize_t n = recv(c->c.fd, b, sizeof(b), MSG_DONTWAIT);

		if (n == 0)
			c->keof[0] = 1;
		if (n <= 0)
			break;
		if (sl_buf_append(&c->c.in, b, (size_t)n))
			return -ENOMEM;
	}
	/* The kernel's redirect queues what the other side's send buffer cannot take yet and
	 * retries from a workqueue: room for a few windows keeps it from stalling. */
	for (int i = 0; i < 2; i++)
		setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &(int){ KSPLICE_SNDBUF }, sizeof(int));
	err = sl_splice_join(px->splice, fds, &c->kpair);
	if (err)
		return err;
	c->ksplice = 1;
	c->kwrote[1] = sl_buf_size(&c->c.in);
	sl_buf_append(&c->u.out, sl_buf_head(&c->c.in), sl_buf_size(&c->c.in));
	sl_buf_reset(&c->c.in);
	c->deadline_ms = UINT64_MAX; /* like any passthrough: no idle timeout */
	return 0;
}

/* The upstream of a spliced connection is connected: the kernel takes over, or we relay. */
static void ksplice_begin(struct pconn *c)
{
	char why[200];
	int err = ksplice_start(c);

	if (!err) {
		c->l->stats.spliced_kernel++;
		conn_event(c->l, c, "passthrough", "TLS server name checked; spliced in the kernel");
		return;
	}
	c->l->stats.spliced_user++;
	snprintf(why, sizeof(why), "TLS server name checked; relayed by sluiced (the kernel "
				   "splice failed: %s)", strerror(-err));
	sl_warn("sandbox %s: %s", c->l->ops->name(c->l->owner), why);
	conn_event(c->l, c, "passthrough", why);
}

/*
 * A kernel-spliced connection woke us: a hang-up, or a write of ours that was pending. A
 * side whose peer finished sending has its FIN passed on once its bytes are through; when
 * both directions are finished, or on an error, both sockets close. Loop thread; may end @c.
 */
static void ksplice_pump(struct pconn *c)
{
	struct sl_loop *loop = c->l->px->loop;
	int waiting = 0;

	if (sl_buf_size(&c->u.out))
		sl_stream_flush(&c->u);
	for (int i = 0; i < 2; i++) {
		struct sl_stream *s = kside(c, i);
		char b[16384];
		ssize_t n;

		if (c->keof[i] || s->err)
			continue;
		n = recv(s->fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
		if (n == 0) {
			c->keof[i] = 1;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			s->err = 1;
		} else if (n > 0) {
			/* Queued before the socket went into the map and seen by no verdict
			 * since: passed on here, behind everything the kernel moved already. */
			if (!kdrained(c, !i)) {
				waiting = 1;
				continue;
			}
			n = recv(s->fd, b, sizeof(b), MSG_DONTWAIT);
			if (n > 0) {
				c->kwrote[!i] += (uint64_t)n;
				sl_buf_append(&kside(c, !i)->out, b, (size_t)n);
				sl_stream_flush(kside(c, !i));
			}
		}
	}
	for (int i = 0; i < 2; i++) {
		if (!c->keof[!i] || c->kshut[i])
			continue;
		if (!kdrained(c, i)) {
			waiting = 1;
			continue;
		}
		shutdown(kside(c, i)->fd, SHUT_WR);
		c->kshut[i] = 1;
	}
	if (c->c.err || c->u.err || (c->kshut[0] && c->kshut[1])) {
		conn_close(c);
		return;
	}
	if (!waiting) {
		c->kdrain_since_ms = 0;
	} else if (!c->kdrain_since_ms) {
		c->kdrain_since_ms = sl_now_ms();
	} else if (sl_now_ms() - c->kdrain_since_ms > KDRAIN_MS) {
		conn_event(c->l, c, "error", "spliced bytes still in flight after 5 s: closed");
		conn_close(c);
		return;
	}
	if (waiting && !c->ktimer)
		c->ktimer = sl_loop_add_timer(loop, KDRAIN_POLL_MS, ksplice_timer_cb, c);
	/* Hang-ups only: the data of these sockets wakes nobody. A socket both of whose
	 * directions are done would report EPOLLHUP forever: it is not watched any more. */
	for (int i = 0; i < 2; i++) {
		struct sl_stream *s = kside(c, i);

		if (c->keof[i] && c->kshut[i])
			sl_loop_del_fd(loop, s->fd);
		else
			sl_loop_mod_fd(loop, s->fd, (c->keof[i] ? 0 : SL_RDHUP) |
						    (sl_buf_size(&s->out) ? SL_WRITE : 0));
	}
}

/* ---- accepting and sniffing ---- */

static int start_splice(struct pconn *c)
{
	/* A passthrough name whose server name was checked: relay its TLS untouched (the
	 * peeked ClientHello is still in the socket). Once the upstream is connected the
	 * kernel takes over if it can (ksplice_begin). */
	c->tls = 0;
	c->spliced = 1;
	c->st = C_TUNNEL;
	c->rq = RQ_DONE;
	c->l->stats.spliced++;
	return start_upstream(c);
}

/* Refuses @c at the sniff with @why. */
static void sniff_refuse(struct pconn *c, const char *why)
{
	c->l->stats.refused++;
	conn_event(c->l, c, "reject", why);
	conn_close(c);
}

/* Decides what the client speaks from its first bytes, without consuming them. */
static void sniff(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;
	uint16_t port = ntohs(c->orig.orig_port);
	uint8_t buf[PEEK_MAX];
	struct sl_client_hello ch;
	ssize_t n;
	int kind, r, how;

	n = recv(c->c.fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (n < 0)
		return;
	kind = sl_tls_sniff(buf, n);
	if (kind == -EAGAIN)
		return;
	if (kind == SL_SNIFF_HTTP) {
		c->st = C_HTTP;
		c->tls = 0;
		return;
	}
	if (kind != SL_SNIFF_TLS) {
		sniff_refuse(c, "neither TLS nor HTTP/1.x");
		return;
	}
	r = sl_tls_parse_client_hello(buf, n, &ch);
	if (r == -EAGAIN && (size_t)n < sizeof(buf))
		return;
	if (r) {
		sniff_refuse(c, "malformed TLS ClientHello");
		return;
	}
	c->tls = 1;
	if (ch.sni_ok) {
		snprintf(c->name, sizeof(c->name), "%s", ch.sni);
	} else if (!l->ops->only_name_at(l->owner, c->dst_family, c->dst_addr, c->name,
					 sizeof(c->name))) {
		sniff_refuse(c, "ClientHello without SNI for an address of no single intercepted "
				"name");
		return;
	}
	how = l->ops->name_port(l->owner, c->name, port);
	if (how == SL_NAME_PASS || how == SL_NAME_SNI) {
		/* Relayed untouched: only for a name given in the clear, allowed on this port,
		 * that resolved to this very address for this sandbox. Anything less would make
		 * an allowed name a key to every tenant of a shared address (or to an
		 * intercepted host without its handler). Encrypted Client Hello hides the real
		 * server name behind the one checked here, so it is refused. */
		if (!ch.sni_ok)
			sniff_refuse(c, "passthrough refused: ClientHello without SNI");
		else if (ch.ech)
			sniff_refuse(c, "passthrough refused: ClientHello with Encrypted Client "
					"Hello (the real server name is hidden)");
		else if (!l->ops->resolved_at(l->owner, c->name, c->dst_family, c->dst_addr,
					      port))
			sniff_refuse(c, "passthrough refused: the TLS server name did not resolve "
					"to this address and port for this sandbox");
		else if (start_splice(c))
			conn_close(c);
		return;
	}
	if (how != SL_NAME_INTERCEPT) {
		sniff_refuse(c, "TLS server name neither intercepted nor allowed on this port");
		return;
	}
	if (!l->ops->name_at(l->owner, c->name, c->dst_family, c->dst_addr)) {
		sniff_refuse(c, "TLS server name not intercepted at this address");
		return;
	}
	c->c.ssl = SSL_new(l->px->server_ctx);
	if (!c->c.ssl || !SSL_set_fd(c->c.ssl, c->c.fd) ||
	    sl_ca_use_leaf(l->ops->ca(l->owner), c->c.ssl, c->name)) {
		conn_event(l, c, "error", "minting a certificate failed");
		conn_close(c);
		return;
	}
	sl_tls_watch_client(c->c.ssl);
	SSL_set_accept_state(c->c.ssl);
	c->st = C_HANDSHAKE;
}

static void sockaddr_from(struct pconn *c)
{
	const struct sl_sockorig *o = &c->orig;

	memset(&c->dst, 0, sizeof(c->dst));
	/* The original destination as the sandbox wrote it; v4-mapped becomes IPv4. */
	if (o->family == AF_INET6 && !memcmp(o->orig_addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&c->dst;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, o->orig_addr + 12, 4);
		sin->sin_port = o->orig_port;
		c->dstlen = sizeof(*sin);
	} else if (o->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&c->dst;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, o->orig_addr, 4);
		sin->sin_port = o->orig_port;
		c->dstlen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c->dst;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, o->orig_addr, 16);
		sin6->sin6_port = o->orig_port;
		c->dstlen = sizeof(*sin6);
	}
	c->dst_family = c->dst.ss_family;
	memset(c->dst_addr, 0, 16);
	if (c->dst_family == AF_INET)
		memcpy(c->dst_addr, &((struct sockaddr_in *)&c->dst)->sin_addr, 4);
	else
		memcpy(c->dst_addr, &((struct sockaddr_in6 *)&c->dst)->sin6_addr, 16);
}

static void accept_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct sl_proxy_listener *l = arg;

	(void)events;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		struct sl_sockorig orig;
		uint8_t addr[16] = { 0 };
		uint16_t port;
		struct pconn *c;
		int cfd;

		cfd = accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1 && (errno == EMFILE || errno == ENFILE)) {
			/* The listener stays readable (level-triggered): refuse the connection
			 * rather than spin on it, with the descriptor kept for this. */
			if (l->px->spare_fd < 0)
				return;
			close(l->px->spare_fd);
			cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
			if (cfd >= 0)
				close(cfd);
			l->px->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (cfd < 0)
				return;
			l->stats.limit_fds++;
			conn_event(l, NULL, "reject", "sluiced is out of file descriptors");
			continue;
		}
		if (cfd == -1)
			return;
		if (peer.ss_family == AF_INET) {
			memcpy(addr, &((struct sockaddr_in *)&peer)->sin_addr, 4);
			port = ntohs(((struct sockaddr_in *)&peer)->sin_port);
		} else {
			memcpy(addr, &((struct sockaddr_in6 *)&peer)->sin6_addr, 16);
			port = ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
		}
		/* Only what the kernel redirected, for this sandbox, is served. */
		if (sl_bpf_take_proxied(l->px->bpf, l->ops->id(l->owner), l->netns_cookie,
					peer.ss_family, addr, port, &orig) ||
		    orig.sandbox_id != l->ops->id(l->owner)) {
			l->stats.unredirected++;
			conn_event(l, NULL, "reject", "connection not redirected by the kernel");
			close(cfd);
			continue;
		}
		if (l->stats.active >= l->px->o.max_conns) {
			l->stats.refused++;
			l->stats.limit_conns++;
			conn_event(l, NULL, "reject",
				   "too many connections for this sandbox (--http-max-conns)");
			close(cfd);
			continue;
		}
		if (l->px->active >= l->px->o.max_conns_total) {
			l->stats.refused++;
			l->stats.limit_conns_total++;
			conn_event(l, NULL, "reject", "too many connections of all sandboxes "
						      "(--http-max-conns-total)");
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		c->l = l;
		sl_stream_init(&c->c);
		sl_stream_init(&c->u);
		c->c.fd = cfd;
		c->orig = orig;
		memcpy(c->comm, orig.comm, 16);
		for (char *p = c->comm; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				*p = '?';
		sockaddr_from(c);
		sl_http_msg_init(&c->req);
		sl_http_msg_init(&c->resp);
		c->reqx = (struct parse_ctx){ &c->req, c };
		c->respx = (struct parse_ctx){ &c->resp, c };
		llhttp_init(&c->reqp, HTTP_REQUEST, &req_settings);
		c->reqp.data = &c->reqx;
		c->deadline_ms = sl_now_ms() + l->px->o.header_timeout_ms;
		if (sl_loop_add_fd(loop, cfd, SL_READ, conn_cb, c)) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = l->conns;
		l->conns = c;
		l->stats.conns++;
		l->stats.active++;
		l->px->active++;
		/* The client writes its first bytes right after connect(): they are often here
		 * already, and a name-checked passthrough should not wait a loop turn for them. */
		c->c.readable = 1;
		pump(c);
	}
}

/* Deadlines: slow heads (408), upstream connects (504), stalled transfers, idle pool. */
static void sweep_cb(struct sl_loop *loop, void *arg)
{
	struct sl_proxy_listener *l = arg;
	uint64_t now = sl_now_ms();
	struct pconn *c, *next;

	for (c = l->conns; c; c = next) {
		next = c->next;
		if (c->dead || now < c->deadline_ms)
			continue;
		if (c->st == C_HTTP && c->rq == RQ_HEAD && !c->resp_head_sent) {
			respond_error(c, 408, "the request head did not arrive in time", "reject");
			pump(c);
		} else if (c->st == C_HTTP && c->rq == RQ_CONNECT) {
			respond_error(c, 504, "the upstream did not answer the connection in time",
				      "error");
			pump(c);
		} else if (c->st == C_HTTP && c->rq == RQ_DONE && c->up == UP_READY &&
			   !c->resp_head_sent && !c->resp_done) {
			/* The request went out whole and nothing came back for the idle
			 * timeout: the client still gets an answer. */
			respond_error(c, 504, "the upstream did not answer in time", "error");
			pump(c);
		} else {
			conn_close(c);
		}
	}
	for (struct upconn *u = l->idle, *un; u; u = un) {
		un = u->next;
		if (now - u->since_ms > POOL_IDLE_MS)
			upconn_free(u);
	}
	l->sweep = sl_loop_add_timer(loop, SWEEP_MS, sweep_cb, l);
}

/* ---- service and listeners ---- */

static void init_settings(void)
{
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = req_begin;
	req_settings.on_url = sl_http_on_url;
	req_settings.on_header_field = sl_http_on_header_field;
	req_settings.on_header_value = sl_http_on_header_value;
	req_settings.on_header_value_complete = sl_http_on_header_value_complete;
	req_settings.on_headers_complete = req_headers_complete;
	req_settings.on_body = req_body;
	req_settings.on_message_complete = req_complete;

	llhttp_settings_init(&resp_settings);
	resp_settings.on_message_begin = resp_begin;
	resp_settings.on_status = sl_http_on_status;
	resp_settings.on_header_field = sl_http_on_header_field;
	resp_settings.on_header_value = sl_http_on_header_value;
	resp_settings.on_header_value_complete = sl_http_on_header_value_complete;
	resp_settings.on_headers_complete = resp_headers_complete;
	resp_settings.on_body = resp_body;
	resp_settings.on_message_complete = resp_complete;
}

struct sl_proxy *sl_proxy_new(struct sl_loop *loop, struct sl_events *events, struct sl_bpf *bpf,
			      const struct sl_proxy_opts *opts, char *err, size_t errlen)
{
	struct sl_proxy *px = calloc(1, sizeof(*px));

	if (!px) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	init_settings();
	px->loop = loop;
	px->events = events;
	px->bpf = bpf;
	px->o = *opts;
	if (!px->o.header_timeout_ms)
		px->o.header_timeout_ms = 10000;
	if (!px->o.idle_timeout_ms)
		px->o.idle_timeout_ms = 60000;
	if (!px->o.connect_timeout_ms)
		px->o.connect_timeout_ms = 10000;
	if (!px->o.max_conns)
		px->o.max_conns = 256;
	if (!px->o.max_conns_total)
		px->o.max_conns_total = SL_PROXY_MAX_CONNS_TOTAL;
	if (!px->o.body_budget)
		px->o.body_budget = SL_PROXY_BODY_BUDGET;
	px->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	{
		char why[256];

		px->splice = sl_splice_open(why, sizeof(why));
		if (!px->splice)
			sl_warn("passthrough connections will be relayed by sluiced, not the "
				"kernel: %s", why);
	}
	px->server_ctx = sl_tls_server_ctx(err, errlen);
	if (px->server_ctx)
		px->client_ctx = sl_tls_client_ctx(px->o.upstream_ca, err, errlen);
	if (!px->server_ctx || !px->client_ctx) {
		sl_proxy_free(px);
		return NULL;
	}
	return px;
}

void sl_proxy_free(struct sl_proxy *px)
{
	if (!px)
		return;
	SSL_CTX_free(px->server_ctx);
	SSL_CTX_free(px->client_ctx);
	sl_splice_close(px->splice);
	if (px->spare_fd >= 0)
		close(px->spare_fd);
	free(px);
}

struct sl_proxy_listener *sl_proxy_listen(struct sl_proxy *px, const struct sl_proxy_ops *ops,
					  void *owner, uint16_t want_port, int netns_fd,
					  char *err, size_t errlen)
{
	struct sl_proxy_listener *l = calloc(1, sizeof(*l));
	int r = -EADDRINUSE;

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->px = px;
	l->ops = ops;
	l->owner = owner;
	l->fd[0] = l->fd[1] = -1;
	for (int tries = 0; tries < 16 && r; tries++) {
		uint16_t port = tries == 0 ? want_port : 0;

		if (tries == 0 && !want_port)
			continue;
		r = sl_listen_loopback(netns_fd, AF_INET, SOCK_STREAM, port, &l->port);
		if (r < 0)
			continue;
		l->fd[0] = r;
		r = sl_listen_loopback(netns_fd, AF_INET6, SOCK_STREAM, l->port, NULL);
		if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT) {
			r = 0; /* IPv4 only here */
			break;
		}
		if (r < 0) {
			close(l->fd[0]);
			l->fd[0] = -1;
			continue;
		}
		l->fd[1] = r;
		r = 0;
	}
	if (!r) {
		/* The kernel's records of redirected connections are keyed by the client's
		 * network namespace: the one the listener lives in. */
		socklen_t len = sizeof(l->netns_cookie);

		if (getsockopt(l->fd[0], SOL_SOCKET, SO_NETNS_COOKIE, &l->netns_cookie, &len) == -1)
			r = -errno;
	}
	if (r) {
		snprintf(err, errlen, "opening the proxy listener failed: %s", strerror(-r));
		for (int i = 0; i < 2; i++)
			if (l->fd[i] >= 0)
				close(l->fd[i]);
		free(l);
		return NULL;
	}
	for (int i = 0; i < 2; i++) {
		if (l->fd[i] >= 0 && sl_loop_add_fd(px->loop, l->fd[i], SL_READ, accept_cb, l)) {
			snprintf(err, errlen, "watching the proxy listener failed");
			sl_proxy_listener_close(l);
			return NULL;
		}
	}
	l->sweep = sl_loop_add_timer(px->loop, SWEEP_MS, sweep_cb, l);
	return l;
}

void sl_proxy_listener_close(struct sl_proxy_listener *l)
{
	if (!l)
		return;
	while (l->conns) {
		struct pconn *c = l->conns;

		conn_free(c); /* a handler waiting for it is told (abort) */
	}
	while (l->idle)
		upconn_free(l->idle);
	for (int i = 0; i < 2; i++) {
		if (l->fd[i] >= 0) {
			sl_loop_del_fd(l->px->loop, l->fd[i]);
			close(l->fd[i]);
		}
	}
	sl_loop_cancel_timer(l->px->loop, l->sweep);
	free(l);
}

size_t sl_proxy_listener_revalidate(struct sl_proxy_listener *l)
{
	size_t closed = 0;

	for (struct pconn *c = l->conns, *next; c; c = next) {
		int v;

		next = c->next;
		if (c->dead || !c->name[0])
			continue; /* no name yet: judged under the new policy once it has one */
		if (c->spliced) {
			uint16_t port = ntohs(c->orig.orig_port);

			v = l->ops->name_port(l->owner, c->name, port);
			if ((v == SL_NAME_PASS || v == SL_NAME_SNI) &&
			    l->ops->resolved_at(l->owner, c->name, c->dst_family, c->dst_addr,
						port))
				continue;
		} else if (l->ops->name_verdict(l->owner, c->name) == SL_VERDICT_PROXY) {
			continue;
		}
		conn_event(l, c, "closed", "the sandbox's policy no longer allows this host");
		closed++;
		conn_close(c);
	}
	for (struct upconn *u = l->idle, *un; u; u = un) {
		un = u->next;
		if (l->ops->name_verdict(l->owner, u->host) != SL_VERDICT_PROXY)
			upconn_free(u);
	}
	return closed;
}

uint16_t sl_proxy_listener_port(const struct sl_proxy_listener *l)
{
	return l->port;
}

const struct sl_proxy_stats *sl_proxy_listener_stats(const struct sl_proxy_listener *l)
{
	return &l->stats;
}
