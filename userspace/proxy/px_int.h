/* SPDX-License-Identifier: MIT */
/*
 * What the files of the proxy share and nobody else sees: the service, listener, client
 * connection and idle upstream structs, the tunables, and the functions one file of
 * userspace/proxy/ calls in another. Threading: the proxy's loop thread only (a worker's);
 * nothing here blocks.
 */
#ifndef SL_PX_INT_H
#define SL_PX_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "core/buf.h"
#include "core/idtab.h"
#include "core/list.h"
#include "core/loop.h"
#include "http/http.h"
#include "http/mask.h"
#include "http/ws.h"
#include "kernel/bpf_loader.h"
#include "kernel/sockets.h"
#include "kernel/splice.h"
#include "proxy/proxy.h"
#include "tls/tls.h"
#include "tls/tls_hello.h"

#define BUF_LIMIT (64 * 1024) /* per direction: what is read ahead, what waits to be written */
#define PEEK_MAX SL_TLS_PEEK_MAX /* enough for any ClientHello sl_tls_parse_client_hello() takes */
#define POOL_MAX \
	128 /* idle upstream connections per sandbox: above an h2 connection's 100 streams */
#define POOL_MAX_TOTAL 1024 /* ... and of all sandboxes (each holds a descriptor) */
#define POOL_IDLE_MS 30000
#define SWEEP_MS 250
#define FLUSH_AT 16384 /* one TLS record: written at once, not held for the pump to settle */
#define LINGER_MS 2000
#define LINGER_BYTES (8u << 20)
#define IDLE_BUF_KEEP 4096 /* buffers larger than this are freed between requests */

struct sl_proxy;
/* One client connection more of all sandboxes, if max_conns_total allows it: 0 taken, -1
 * full. The count may be shared with other threads' proxies: taken, then given back when
 * over, so that two threads never both pass at the last place. */
static inline int px_total_take(unsigned *total, unsigned max)
{
	if (__atomic_add_fetch(total, 1, __ATOMIC_RELAXED) <= max)
		return 0;
	__atomic_sub_fetch(total, 1, __ATOMIC_RELAXED);
	return -1;
}
static inline void px_total_put(unsigned *total)
{
	__atomic_sub_fetch(total, 1, __ATOMIC_RELAXED);
}

struct sl_proxy {
	struct sl_loop *loop;
	struct sl_events *events;
	struct sl_bpf *bpf;
	struct sl_proxy_opts o;
	SSL_CTX *server_ctx, *client_ctx;
	unsigned active; /* client connections of every listener (o.conns_total NULL) */
	unsigned *total; /* where they are counted against max_conns_total: &active or shared */
	unsigned nidle; /* pooled upstream connections of every listener */
	int spare_fd; /* given up to accept-and-close a connection when out of descriptors */
	struct sl_splice *splice; /* NULL: passthrough bytes are relayed here */
	/* The shared listener (sl_proxy_listen_shared()): its sockets, held by a listener of no
	 * sandbox, opened with the first sandbox that shares them; and that listener of each
	 * sandbox id that shares them. */
	struct sl_proxy_listener *shared;
	struct sl_idtab sharers; /* the last one gone closes it */
};

/* An idle upstream connection, kept for the next request to the same name and address. */
struct upconn {
	struct sl_proxy_listener *l;
	struct sl_list link; /* in l->idle, most recent first */
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
	struct sl_http_h1 h1; /* first: http.c's callbacks find the parser state here */
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

/*
 * The exchange: one request and its response, what its handler sees through sl_px_x_*()
 * (proxy.h's opaque struct sl_px_xchg is this struct: no casts). HTTP/1 has one at a time,
 * embedded in its connection and reset by each request; a protocol with several streams
 * would give each its own. The request state machine, the heads, the bodies a handler holds,
 * the masks of the secrets it read and the decoder they need, the event's figures.
 */
struct sl_px_xchg {
	struct pconn *conn; /* the connection it arrived on */
	enum rqstate rq;
	struct sl_http_msg req, resp;
	/* Trailer fields of a chunked body (from an HTTP/2 stream, bridged as chunked
	 * trailers): passed on with the body's end, to a client that takes them (te_trailers). */
	struct sl_http_msg req_trailers, resp_trailers;
	char *path; /* origin-form target sent upstream */
	enum sl_http_body req_body, resp_body;
	unsigned websocket : 1; /* the request asks for a WebSocket upgrade */
	unsigned te_trailers : 1; /* the client takes response trailers (HTTP/2, TE: trailers) */
	unsigned interim : 1; /* the response being parsed is a 1xx */
	unsigned to_tunnel : 1; /* a 101 arrived: relay raw bytes from now on */
	unsigned resp_started : 1, resp_head_sent : 1, resp_done : 1;
	unsigned decided : 1; /* the request head went to the sandbox */
	unsigned fetched : 1; /* the handler sent the request upstream */
	unsigned hold_resp : 1, resp_held : 1; /* the response head waits for the handler */
	unsigned req_buffer : 1, req_complete_seen : 1, req_discard : 1, req_body_set : 1;
	unsigned resp_buffer : 1, resp_too_big : 1, resp_body_set : 1;
	unsigned local : 1; /* answered here: the rest of the request is read and dropped */
	unsigned dec_paused : 1, coding_seen : 1; /* see dec */
	uint64_t t_req_ms, t_up_ms, t_up_first_ms;
	uint64_t req_bytes, resp_bytes;
	/* the request's handler: see sl_px_x_*() */
	const struct sl_px_handler *h;
	void *hctx;
	enum hwait hw;
	unsigned hseq; /* bumped by every handler call: the pump looks again */
	size_t req_max, resp_max;
	struct sl_buf reqbody;
	struct sl_buf respbody;
	struct mask masks[MASK_MAX];
	size_t nmask, mask_longest;
	struct sl_buf mcarry; /* body bytes held back until no secret can straddle them */
	/* A masked response with a content coding is decoded first (mask.c): the parser
	 * waits (dec_paused) while the decoder holds input the client has no room for. */
	struct sl_inflate *dec;
	char resp_why[200]; /* why the upstream's response is refused (502), if it is */
	struct sl_ws_mask *wsm; /* a WebSocket whose handshake carried a secret: frames masked */
	char handler[80];
	/* Audit mode's dry run: the handler refused the request (it answered refused_status
	 * itself, or failed: refused_status 502) and the request went on anyway; refused says
	 * how, for its event and its record. "" if it did not refuse. */
	char refused[200];
	int refused_status;
};

/* Which parser a handler's call lets go on: the request's or the response's. */
enum px_side { PX_REQ, PX_RESP };

/*
 * A protocol the client speaks, as the connection drives it (HAProxy's mux_ops): the pump
 * does the I/O, TLS and deadlines and calls these for everything HTTP, so that it never names
 * a parser. HTTP/1 (px_h1.c) and HTTP/2 (px_h2.c, whose streams are HTTP/1 exchanges on
 * stream connections).
 */
struct px_proto {
	const char *name; /* "h1" */
	void (*init)(struct pconn *c); /* at accept: the request parser */
	void (*recv)(struct pconn *c); /* client bytes -> exchange(s) */
	void (*send)(struct pconn *c); /* upstream bytes -> client */
	void (*resp_begin)(struct sl_px_xchg *x); /* the request went upstream: parse its answer */
	void (*wake)(struct sl_px_xchg *x, enum px_side side); /* a paused parser goes on */
	void (*release)(struct pconn *c); /* the connection ends: what init and parsing hold */
};

extern const struct px_proto px_h1_proto;
extern const struct px_proto px_h2_proto;

struct px_h2;
struct px_h2_stream;
struct px_h2up_stream;

/* One client connection and, while a request is in flight, its upstream connection. */
struct pconn {
	const struct px_proto *proto;
	struct sl_proxy_listener *l;
	struct sl_list link; /* in l->conns, newest first */
	struct sl_stream c, u;
	enum cstate st;
	enum upstate up;
	struct sl_sockorig orig;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	uint8_t dst_family, dst_addr[16];
	char name[256]; /* the name served: SNI, or the Host of plain HTTP */
	char comm[17];
	unsigned tls : 1;
	unsigned spliced : 1; /* TLS of a passthrough name, relayed untouched */
	unsigned close_after : 1; /* the client does not keep the connection alive */
	unsigned dead : 1; /* the connection has ended */
	unsigned lingering : 1; /* answered and closing: draining what the client still sends */
	unsigned drained : 1; /* closing after a whole request, nothing more expected */
	/* Spliced in the kernel (splice.c): the bytes never come here. Per socket (0 client,
	 * 1 upstream): what we wrote into it ourselves, its send count when the splice began,
	 * whether its peer finished sending, whether we passed that on. */
	unsigned ksplice : 1;
	struct sl_splice_pair kpair; /* cookie[0] upstream, [1] client: see ksplice_start() */
	uint64_t kwrote[2], kbase[2];
	int keof[2], kshut[2];
	uint64_t kdrain_since_ms;
	struct sl_timer ktimer; /* polls a drain the kernel does not wake us for */
	llhttp_t reqp, respp;
	struct parse_ctx reqx, respx;
	size_t linger_bytes;
	int busy; /* px_pump() frames on the stack: freeing waits for the outermost */
	int reject_status; /* set by a parser callback: answer this and close */
	const char *reject_why;
	int up_wants; /* SL_READ/SL_WRITE the upstream handshake waits for */
	uint64_t deadline_ms;
	size_t charged; /* bytes of this connection counted in l->stats.body_bytes */
	struct px_h2 *h2; /* an HTTP/2 connection's session (px_h2.c) */
	/* A stream connection: the exchange of one HTTP/2 stream. Its client leg is that stream,
	 * not a socket (c.fd is -1): px_h2.c fills c.in and takes c.out. */
	struct px_h2_stream *h2s;
	/* An upstream leg that is a stream of an HTTP/2 connection (px_h2_up.c): u.fd is -1,
	 * px_h2up_pump() takes u.out and fills u.in. */
	struct px_h2up_stream *h2u;
	struct sl_px_xchg x; /* the request in flight (HTTP/1: one at a time) */
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
	struct sl_list conns; /* of struct pconn */
	struct sl_list idle; /* of struct upconn */
	struct sl_list h2up; /* of struct px_h2up: HTTP/2 upstream connections (px_h2_up.c) */
	unsigned nidle;
	struct sl_timer sweep; /* embedded: re-arming cannot fail, so the sweep never stops */
	struct sl_proxy_stats stats;
	uint32_t shared_id; /* its sandbox's id on the shared listener; 0: sockets of its own */
};

#define OVER_BUDGET "the sandbox's handlers hold more body bytes than --http-body-budget allows"

/* px_conn.c */
void px_conn_event(struct sl_proxy_listener *l, const struct pconn *c, const char *verdict,
		   const char *reason);
void px_conn_free(struct pconn *c);
void px_conn_close(struct pconn *c);
void px_refusal_text(struct pconn *c, int status, const char *why, char *out, size_t len);
void px_respond_error(struct pconn *c, int status, const char *why, const char *verdict);
int px_within_budget(struct pconn *c, size_t more);
void px_pump(struct pconn *c);
void px_conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events);

/* px_xchg.c */
void px_request_event(struct pconn *c, int status, const char *verdict, const char *reason);
void px_clear_masks(struct pconn *c);
void px_handler_abort(struct pconn *c, const char *why);
void px_dec_free(struct pconn *c);
void px_decide(struct pconn *c);
void px_handler_resume(struct pconn *c);
void px_mask_msg(const struct pconn *c, struct sl_http_msg *m);
int px_write_masked(struct pconn *c, const char *at, size_t len, int last);
void px_ws_mask_cb(void *arg, char *p, size_t n);
int px_ws_begin(struct pconn *c, struct sl_http_msg *m);
int px_resp_coding(struct pconn *c, struct sl_http_msg *m);
int px_dec_drain(struct pconn *c);

/* px_h1.c */
void px_next_request(struct pconn *c);
void px_finish_request(struct pconn *c);

/* px_h2.c */
void px_h2_begin(struct pconn *c);
int px_h2_preface(const uint8_t *buf, size_t n);
int px_h2_goaway(struct pconn *c);
/* The streams of @c still open (0 when @c is not HTTP/2): its own idle deadline waits for
 * them, each of which keeps deadlines of its own. */
int px_h2_streams(struct pconn *c);
size_t px_h2_stream_out(struct pconn *x);
void px_h2_stream_gone(struct pconn *x);

/* px_h2_nv.c: what both HTTP/2 legs share */
/* Whether @name is a field HTTP/2 forbids (RFC 9113 section 8.2.2) or HTTP/1 framing. */
int px_h2_conn_specific(const char *name);
/* @m's fields as name-value pairs into @nv (room for m->nh), minus the connection-specific
 * ones and Host, names lower-cased in place. Returns how many. */
size_t px_h2_nv_fields(struct sl_http_msg *m, nghttp2_nv *nv);
/* nghttp2's data provider over @b: up to @len bytes taken, EOF once @b is empty and @end,
 * NGHTTP2_ERR_DEFERRED when empty and not @end. */
ssize_t px_h2_read_buf(struct sl_buf *b, int end, uint8_t *buf, size_t len, uint32_t *flags);
/* Submits @t's fields (px_h2_nv_fields()) as stream @id's trailing HEADERS. 0, or -EINVAL
 * when none is left, -ENOMEM, -EIO. */
int px_h2_submit_trailers(nghttp2_session *ss, int32_t id, struct sl_http_msg *t);

/* px_h2_up.c */
int px_h2up_take(struct pconn *c);
int px_h2up_chosen(const struct pconn *c);
int px_h2up_begin(struct pconn *c);
void px_h2up_pump(struct pconn *c);
void px_h2up_detach(struct pconn *c);
void px_h2up_sweep(struct sl_proxy_listener *l, uint64_t now, int all);

/* px_upstream.c */
void px_close_upstream(struct pconn *c);
void px_upconn_free(struct upconn *u);
void px_pool_put(struct pconn *c);
int px_start_upstream(struct pconn *c);
int px_upstream_progress(struct pconn *c);
void px_upstream_ready(struct pconn *c);

/* px_tunnel.c */
int px_handle_tunnel(struct pconn *c);
void px_ksplice_begin(struct pconn *c);
void px_ksplice_pump(struct pconn *c);
int px_start_splice(struct pconn *c);

#endif
