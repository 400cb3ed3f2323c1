// SPDX-License-Identifier: MIT
/*
 * HTTP/2 towards the upstream (nghttp2, client side): the upstream leg of an exchange whose
 * upstream chose "h2" by ALPN. The sibling of px_h2.c, the other way round: the exchange
 * (px_h1.c, px_xchg.c) is unchanged and still writes an HTTP/1.1 request into its upstream
 * buffer (c->u.out) and parses an HTTP/1.1 response from it (c->u.in); here that request is
 * parsed into the stream's HEADERS and DATA, and the stream's response is written back as
 * HTTP/1.1 (chunked unless it came with a Content-Length). The exchange's upstream has no
 * socket of its own (c->u.fd is -1, c->h2u set): the socket, TLS and nghttp2 session belong
 * to a struct px_h2up, shared by the streams of every exchange of the sandbox (listener) to
 * the same name and address, and kept in l->h2up while idle for POOL_IDLE_MS.
 *
 * h2 is spoken only where the upstream chose it by ALPN over TLS: cleartext upstreams get
 * HTTP/1.1 even when the sandbox spoke HTTP/2 with prior knowledge to sluice. That
 * knowledge is about sluice (which intercepts every cleartext port of the name), not the
 * origin, and a cleartext origin that does not speak h2c would fail the preface with the
 * request already gone, which cannot be retried safely.
 *
 * Limits: at most the peer's SETTINGS_MAX_CONCURRENT_STREAMS (and H2UP_MAX_STREAMS) streams
 * per connection, more exchanges open another connection; a GOAWAY from the upstream
 * retires the connection (no new streams; the streams it did not take fail with 502). Flow
 * control bounds memory: a stream's DATA waits in its buffer (at most its window,
 * H2UP_STREAM_WINDOW; all streams at most H2UP_CONN_WINDOW) and moves into the exchange only
 * while that one holds less than BUF_LIMIT; the window is given back for what moved, not
 * what arrived. A request body is taken from the exchange while less than BUF_LIMIT of it
 * waits for the peer's window.
 *
 * Re-entrancy: exchanges are pumped only outside nghttp2's calls, and nghttp2 frees a
 * stream only inside them; a stream's struct is freed when both nghttp2 closed it and its
 * exchange let go of it (px_h2up_detach()).
 *
 * Loop thread only; nothing here blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "core/log.h"
#include "proxy/px_int.h"

#define H2UP_MAX_STREAMS 100 /* per connection, whatever the peer allows */
#define H2UP_STREAM_WINDOW (256 * 1024) /* SETTINGS_INITIAL_WINDOW_SIZE we announce */
#define H2UP_CONN_WINDOW (1024 * 1024) /* the connection's receive window */

struct px_h2up;

/* What parses the exchange's HTTP/1.1 request: llhttp finds the head state first. */
struct h2up_qparse {
	struct sl_http_h1 h1;
	struct px_h2up_stream *s;
};

struct px_h2up_stream {
	struct px_h2up *u; /* NULL once its connection is gone */
	struct sl_list link; /* in u->streams */
	struct pconn *x; /* the exchange, NULL once it let go */
	int32_t id; /* 0 until submitted */
	/* the request, parsed from x->u.out */
	llhttp_t qp;
	struct h2up_qparse qx;
	struct sl_http_msg req;
	struct sl_http_msg qtrailers; /* what its chunked body ended with: a trailing HEADERS */
	struct sl_buf wbuf; /* request body waiting for DATA frames */
	unsigned req_end : 1, deferred : 1, head_req : 1;
	/* the response, written into x->u.in */
	struct sl_http_msg resp;
	struct sl_http_msg trailers; /* the response's: written as chunked trailers */
	struct sl_buf rbuf; /* response DATA not yet moved into the exchange */
	unsigned final_seen : 1, head_written : 1, chunked : 1, resp_end : 1, done : 1;
	unsigned closed : 1; /* nghttp2 closed it */
	unsigned failed : 1; /* reset or its connection failed before the response ended */
	unsigned kick : 1; /* its exchange has something to do: pump it */
	size_t head_bytes; /* of the response's heads and trailers: SL_HTTP_MAX_HEAD at most */
};

struct px_h2up {
	struct sl_proxy_listener *l;
	struct sl_list link; /* in l->h2up */
	struct sl_stream io;
	nghttp2_session *s;
	char host[256];
	struct sockaddr_storage dst;
	socklen_t dstlen;
	struct sl_list streams; /* of struct px_h2up_stream */
	unsigned nopen; /* streams submitted and not closed by nghttp2 */
	uint64_t idle_since_ms;
	int busy; /* in its own callback: sending and freeing wait for it */
	unsigned goaway : 1; /* no new streams: the peer said GOAWAY, or it failed */
	unsigned dead : 1; /* the connection failed or ended */
};

static void up_free(struct px_h2up *u);
static void up_send(struct px_h2up *u);

static void stream_free(struct px_h2up_stream *s)
{
	sl_list_del(&s->link);
	sl_http_msg_free(&s->req);
	sl_http_msg_free(&s->resp);
	sl_http_msg_free(&s->qtrailers);
	sl_http_msg_free(&s->trailers);
	sl_http_h1_free(&s->qx.h1);
	sl_buf_free(&s->wbuf);
	sl_buf_free(&s->rbuf);
	free(s);
}

/* ---- nghttp2's callbacks: they record, and never pump an exchange ---- */

static struct px_h2up_stream *stream_of(struct px_h2up *u, int32_t id)
{
	return nghttp2_session_get_stream_user_data(u->s, id);
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct px_h2up_stream *s = stream_of(ud, f->hd.stream_id);
	char *n, *v;
	int r;

	(void)ss;
	(void)flags;
	if (!s || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (namelen == 7 && !memcmp(name, ":status", 7) && !s->final_seen) {
		s->resp.status = 0;
		for (size_t i = 0; i < valuelen && i < 3; i++)
			s->resp.status = s->resp.status * 10 + (value[i] - '0');
		return 0;
	}
	if (name[0] == ':')
		return 0;
	s->head_bytes += namelen + valuelen + 32;
	if (s->head_bytes > SL_HTTP_MAX_HEAD || !sl_http_valid_value((const char *)value, valuelen))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
	n = strndup((const char *)name, namelen);
	v = strndup((const char *)value, valuelen);
	r = !n || !v || sl_http_add(s->final_seen ? &s->trailers : &s->resp, n, v);
	free(n);
	free(v);
	return r ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct px_h2up_stream *s = stream_of(ud, f->hd.stream_id);

	(void)ss;
	if (s && !s->final_seen)
		sl_http_msg_reset(&s->resp);
	return 0;
}

/* A response head ended: written into the exchange as HTTP/1.1 (an interim one too). */
static void write_head(struct px_h2up_stream *s)
{
	struct pconn *x = s->x;
	enum sl_http_body body = SL_BODY_CHUNKED;
	int st = s->resp.status;

	if (!x)
		return;
	s->resp.major = s->resp.minor = 1;
	if (st < 200 || st == 204 || st == 304 || s->head_req)
		body = sl_http_get(&s->resp, "content-length") ? SL_BODY_LENGTH : SL_BODY_NONE;
	else if (sl_http_get(&s->resp, "content-length"))
		body = SL_BODY_LENGTH;
	if (st < 200 || st == 204 || st == 304)
		sl_http_set(&s->resp, "content-length", NULL);
	s->chunked = body == SL_BODY_CHUNKED;
	if (sl_http_write_response(&s->resp, body, NULL, 0, &x->u.in))
		x->u.err = 1;
	x->u.rx += 1; /* something arrived: the pump looks again */
	if (st >= 200)
		s->head_written = 1;
}

static int on_frame(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct px_h2up *u = ud;
	struct px_h2up_stream *s;

	(void)ss;
	if (f->hd.type == NGHTTP2_GOAWAY) {
		/* Retired: the streams it took go on, nothing new is sent on it. */
		sl_debug("proxy: upstream %s said GOAWAY (last stream %d, error %u)", u->host,
			 f->goaway.last_stream_id, f->goaway.error_code);
		u->goaway = 1;
		return 0;
	}
	s = stream_of(u, f->hd.stream_id);
	if (!s)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && !s->final_seen) {
		if (s->resp.status >= 200 || s->resp.status < 100) {
			s->final_seen = 1;
			write_head(s);
		} else if (s->resp.status != 101) {
			write_head(s); /* 100 Continue, 103 Early Hints */
			sl_http_msg_reset(&s->resp);
		}
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->final_seen)
		s->resp_end = 1;
	s->kick = 1;
	return 0;
}

static int on_data(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *ud)
{
	struct px_h2up_stream *s = stream_of(ud, id);

	(void)flags;
	if (!s || !s->x || !s->final_seen) {
		/* Nobody takes it: its window comes back at once. */
		nghttp2_session_consume(ss, id, len);
		return 0;
	}
	if (sl_buf_append(&s->rbuf, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->kick = 1;
	return 0;
}

static int on_close(nghttp2_session *ss, int32_t id, uint32_t code, void *ud)
{
	struct px_h2up *u = ud;
	struct px_h2up_stream *s = stream_of(u, id);

	(void)ss;
	if (!s)
		return 0;
	nghttp2_session_set_stream_user_data(u->s, id, NULL);
	s->closed = 1;
	u->nopen--;
	if (!s->resp_end) {
		if (code)
			sl_debug("proxy: upstream %s reset stream %d (error %u)", u->host, id,
				 code);
		s->failed = 1;
	}
	s->kick = 1;
	if (!u->nopen)
		u->idle_since_ms = sl_now_ms();
	if (!s->x)
		stream_free(s);
	return 0;
}

/* ---- the request: what the exchange wrote, parsed into frames ---- */

static ssize_t read_body(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct px_h2up_stream *s = src->ptr;
	ssize_t n = px_h2_read_buf(&s->wbuf, s->req_end, buf, len, flags);

	(void)ss;
	(void)id;
	(void)ud;
	if (n > 0)
		s->kick = 1; /* room again: the exchange may go on with the body */
	if (n == NGHTTP2_ERR_DEFERRED)
		s->deferred = 1;
	else if ((*flags & NGHTTP2_DATA_FLAG_EOF) && s->qtrailers.nh &&
		 !px_h2_submit_trailers(ss, id, &s->qtrailers))
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
	return n;
}

static struct px_h2up_stream *qstream(llhttp_t *p)
{
	return ((struct h2up_qparse *)p->data)->s;
}

static int q_headers_complete(llhttp_t *p)
{
	struct px_h2up_stream *s = qstream(p);
	struct px_h2up *u = s->u;
	struct sl_http_msg *m = &s->req;
	const char *host = sl_http_get(m, "host");
	nghttp2_nv *nv;
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_body };
	int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
	size_t n = 0;
	int32_t id;

	if (!u || !host || !m->target)
		return -1;
	nv = calloc(m->nh + 5, sizeof(*nv));
	if (!nv)
		return -1;
	snprintf(m->method, sizeof(m->method), "%s", llhttp_method_name(p->method));
	s->head_req = !strcmp(m->method, "HEAD");
#define NV(n, v) \
	((nghttp2_nv){ (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE })
	nv[n++] = NV(":method", m->method);
	nv[n++] = NV(":scheme", "https");
	nv[n++] = NV(":authority", host);
	nv[n++] = NV(":path", m->target);
	/* The proxy reads trailers (gRPC needs the peer to know that it will). */
	nv[n++] = NV("te", "trailers");
#undef NV
	n += px_h2_nv_fields(m, nv + n); /* Host became :authority */
	id = nghttp2_submit_request(u->s, NULL, nv, n, has_body ? &prd : NULL, s);
	free(nv);
	if (id < 0) {
		sl_warn("proxy: HTTP/2 request to %s failed: %s", u->host, nghttp2_strerror(id));
		return -1;
	}
	s->id = id;
	u->nopen++;
	s->qx.h1.m = &s->qtrailers; /* what a chunked body ends with */
	if (!has_body)
		s->req_end = 1;
	return 0;
}

static int q_body(llhttp_t *p, const char *at, size_t len)
{
	struct px_h2up_stream *s = qstream(p);

	if (sl_buf_append(&s->wbuf, at, len))
		return -1;
	if (s->deferred && s->u) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->u->s, s->id);
	}
	return 0;
}

static int q_complete(llhttp_t *p)
{
	struct px_h2up_stream *s = qstream(p);

	s->req_end = 1;
	if (s->deferred && s->u) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->u->s, s->id);
	}
	return HPE_PAUSED; /* one request per stream */
}

static const llhttp_settings_t qsettings = {
	.on_url = sl_http_on_url,
	.on_header_field = sl_http_on_header_field,
	.on_header_value = sl_http_on_header_value,
	.on_header_value_complete = sl_http_on_header_value_complete,
	.on_headers_complete = q_headers_complete,
	.on_body = q_body,
	.on_message_complete = q_complete,
};

/* ---- the connection ---- */

/* Ends @u's use for new streams; the streams still open fail, their exchanges are told. */
static void up_fail(struct px_h2up *u, const char *why)
{
	struct px_h2up_stream *s;

	if (u->dead)
		return;
	sl_debug("proxy: HTTP/2 upstream %s ends: %s", u->host, why);
	u->dead = u->goaway = 1;
	sl_list_for_each(s, &u->streams, link) {
		if (!s->resp_end)
			s->failed = 1;
		s->kick = 1;
	}
}

/* Pumps the exchanges of kicked streams: one at a time from the start, since a pump may
 * free a stream that let go (never the one being pumped, which is attached). */
static void kick_streams(struct px_h2up *u)
{
	for (;;) {
		struct px_h2up_stream *s, *found = NULL;

		sl_list_for_each(s, &u->streams, link) {
			if (s->kick && s->x) {
				found = s;
				break;
			}
		}
		if (!found)
			return;
		found->kick = 0;
		found->x->u.readable = 1;
		px_pump(found->x);
	}
}

static void up_update_events(struct px_h2up *u)
{
	unsigned ev = SL_READ;

	if (u->dead) {
		/* what is left is its exchanges letting go: nothing to read */
		sl_loop_mod_fd(u->l->px->loop, u->io.fd, 0);
		return;
	}
	if (sl_buf_size(&u->io.out) || u->io.ssl_wants_write)
		ev |= SL_WRITE;
	sl_loop_mod_fd(u->l->px->loop, u->io.fd, ev);
}

/* What nghttp2 has to say goes out (while it fits in BUF_LIMIT). Not inside nghttp2's
 * calls: up_cb() sends once its exchanges are pumped. */
static void up_send(struct px_h2up *u)
{
	if (u->dead)
		return;
	while (sl_buf_size(&u->io.out) < BUF_LIMIT) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(u->s, &data);

		if (n < 0) {
			up_fail(u, nghttp2_strerror((int)n));
			break;
		}
		if (!n)
			break;
		if (sl_buf_append(&u->io.out, data, (size_t)n)) {
			up_fail(u, "out of memory");
			break;
		}
	}
	sl_stream_flush(&u->io);
	if (u->io.err)
		up_fail(u, "writing failed");
}

/* The exchange-less end of @u: when it failed, or is retired and idle. */
static int up_finished(struct px_h2up *u)
{
	return sl_list_empty(&u->streams) &&
	       (u->dead || (u->goaway && !u->nopen) ||
		(!nghttp2_session_want_read(u->s) && !nghttp2_session_want_write(u->s)));
}

static void up_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct px_h2up *u = arg;

	(void)loop;
	(void)fd;
	if (events & (SL_READ | SL_HUP))
		u->io.readable = 1;
	u->busy++;
	for (int round = 0; round < 16 && !u->dead; round++) {
		size_t n;

		sl_stream_read(&u->io, BUF_LIMIT);
		n = sl_buf_size(&u->io.in);
		if (n) {
			ssize_t r = nghttp2_session_mem_recv(
				u->s, (const uint8_t *)sl_buf_head(&u->io.in), n);

			sl_buf_consume(&u->io.in, n);
			if (r < 0)
				up_fail(u, nghttp2_strerror((int)r));
		}
		if (u->io.err || u->io.eof)
			up_fail(u, u->io.err ? "reading failed" :
					       "the upstream closed the connection");
		if (!n)
			break;
	}
	kick_streams(u);
	up_send(u);
	kick_streams(u); /* what sending freed up (window, a stream's room) */
	up_send(u);
	u->busy--;
	if (up_finished(u)) {
		up_free(u);
		return;
	}
	up_update_events(u);
}

static void up_free(struct px_h2up *u)
{
	struct sl_proxy_listener *l = u->l;
	struct px_h2up_stream *s, *n;

	sl_list_for_each_safe(s, n, &u->streams, link) {
		s->u = NULL;
		if (!s->resp_end)
			s->failed = 1;
		sl_list_del(&s->link);
		sl_list_init(&s->link);
		if (s->x) {
			s->x->u.err = s->failed;
			s->x->u.rx++;
		} else {
			stream_free(s);
		}
	}
	sl_list_del(&u->link);
	sl_loop_del_fd(l->px->loop, u->io.fd);
	nghttp2_session_del(u->s);
	sl_stream_close(&u->io);
	free(u);
}

/* ---- what the exchange calls ---- */

static int up_has_room(struct px_h2up *u)
{
	uint32_t max =
		nghttp2_session_get_remote_settings(u->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	unsigned attached = 0;
	struct px_h2up_stream *s;

	if (max > H2UP_MAX_STREAMS)
		max = H2UP_MAX_STREAMS;
	sl_list_for_each(s, &u->streams, link)
		attached += !s->closed;
	return !u->dead && !u->goaway && attached < max &&
	       nghttp2_session_check_request_allowed(u->s);
}

static int attach(struct px_h2up *u, struct pconn *c)
{
	struct px_h2up_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->u = u;
	s->x = c;
	sl_http_msg_init(&s->req);
	sl_http_msg_init(&s->resp);
	s->qx.h1.m = &s->req;
	s->qx.s = s;
	llhttp_init(&s->qp, HTTP_REQUEST, &qsettings);
	s->qp.data = &s->qx;
	sl_list_add_tail(&u->streams, &s->link);
	sl_stream_init(&c->u);
	c->h2u = s;
	c->up = UP_READY;
	return 0;
}

int px_h2up_take(struct pconn *c)
{
	struct px_h2up *u;

	if (!c->tls || c->x.websocket)
		return 0;
	sl_list_for_each(u, &c->l->h2up, link) {
		if (strcmp(u->host, c->name) || u->dstlen != c->dstlen ||
		    memcmp(&u->dst, &c->dst, c->dstlen) || !up_has_room(u))
			continue;
		return attach(u, c) ? 0 : 1;
	}
	return 0;
}

int px_h2up_chosen(const struct pconn *c)
{
	const unsigned char *alpn;
	unsigned alen = 0;

	if (!c->u.ssl)
		return 0;
	SSL_get0_alpn_selected(c->u.ssl, &alpn, &alen);
	return alen == 2 && !memcmp(alpn, "h2", 2);
}

int px_h2up_begin(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;
	struct px_h2up *u = calloc(1, sizeof(*u));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2UP_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SL_HTTP_MAX_HEAD },
	};
	int r = -ENOMEM;

	if (!u)
		return -ENOMEM;
	u->l = l;
	sl_list_init(&u->link);
	sl_list_init(&u->streams);
	sl_stream_init(&u->io);
	if (nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
		goto out;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
	/* Window updates follow what the exchanges took (px_h2up_pump()), not what arrived. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* The peer's answers are bounded as a client's requests are (px_h2.c). */
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	nghttp2_option_set_max_settings(opt, 32);
	nghttp2_option_set_max_continuations(opt, 8);
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	if (nghttp2_session_client_new2(&u->s, cbs, u, opt))
		goto out;
	if (nghttp2_submit_settings(u->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) ||
	    nghttp2_session_set_local_window_size(u->s, NGHTTP2_FLAG_NONE, 0, H2UP_CONN_WINDOW))
		goto out;
	/* The socket moves from the exchange to the connection. */
	sl_loop_del_fd(l->px->loop, c->u.fd);
	u->io.fd = c->u.fd;
	u->io.ssl = c->u.ssl;
	c->u.fd = -1;
	c->u.ssl = NULL;
	sl_stream_close(&c->u);
	snprintf(u->host, sizeof(u->host), "%s", c->name);
	u->dst = c->dst;
	u->dstlen = c->dstlen;
	u->idle_since_ms = sl_now_ms();
	if (sl_loop_add_fd(l->px->loop, u->io.fd, SL_READ | SL_WRITE, up_cb, u)) {
		sl_stream_close(&u->io);
		goto out;
	}
	sl_list_add(&l->h2up, &u->link);
	r = attach(u, c);
	if (r) {
		up_fail(u, "out of memory");
		r = -ENOMEM;
	}
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	return r;
out:
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	nghttp2_session_del(u->s);
	free(u);
	return r;
}

/* @n bytes of @s's DATA were taken (or dropped): the peer may send as much again. */
static void give_back(struct px_h2up_stream *s, size_t n)
{
	if (!s->u || !n)
		return;
	if (s->closed)
		nghttp2_session_consume_connection(s->u->s, n);
	else
		nghttp2_session_consume(s->u->s, s->id, n);
}

/* Moves what can move between the exchange @c and its stream: request bytes from c->u.out
 * into frames, response bytes into c->u.in. */
void px_h2up_pump(struct pconn *c)
{
	struct px_h2up_stream *s = c->h2u;
	struct px_h2up *u = s->u;
	size_t n;

	/* the request */
	n = sl_buf_size(&c->u.out);
	if (u && n && !s->req_end && sl_buf_size(&s->wbuf) < BUF_LIMIT) {
		const char *data = sl_buf_head(&c->u.out);
		llhttp_errno_t e;

		s->qx.h1.feed_end = data + n;
		e = llhttp_execute(&s->qp, data, n);
		if (e != HPE_OK && e != HPE_PAUSED) {
			sl_warn("proxy: the request for the HTTP/2 upstream %s did not parse: %s",
				u->host, llhttp_errno_name(e));
			c->u.err = 1;
		}
		sl_buf_consume(&c->u.out, n);
		c->u.tx += n;
	} else if (s->req_end && n) {
		sl_buf_reset(&c->u.out); /* nothing is sent after the request's end */
	}
	/* the response */
	n = sl_buf_size(&s->rbuf);
	if (n && s->head_written && sl_buf_size(&c->u.in) < BUF_LIMIT) {
		if (n > BUF_LIMIT)
			n = BUF_LIMIT;
		if (sl_http_write_body(&c->u.in, s->chunked ? SL_BODY_CHUNKED : SL_BODY_LENGTH,
				       sl_buf_head(&s->rbuf), n))
			c->u.err = 1;
		sl_buf_consume(&s->rbuf, n);
		c->u.rx += n;
		give_back(s, n);
	}
	if (s->resp_end && !s->done && !sl_buf_size(&s->rbuf)) {
		s->done = 1;
		if (s->chunked && sl_http_write_trailers(&c->u.in, &s->trailers))
			c->u.err = 1;
		c->u.rx++;
	}
	if (s->failed && !s->done)
		c->u.err = 1;
	if (u && !u->busy) {
		up_send(u);
		up_update_events(u);
	}
}

void px_h2up_detach(struct pconn *c)
{
	struct px_h2up_stream *s = c->h2u;
	struct px_h2up *u = s->u;

	give_back(s, sl_buf_size(&s->rbuf));
	sl_buf_reset(&s->rbuf);
	c->h2u = NULL;
	s->x = NULL;
	sl_buf_reset(&c->u.in);
	sl_buf_reset(&c->u.out);
	if (!u) {
		stream_free(s);
		return;
	}
	if (s->closed || !s->id) {
		stream_free(s);
	} else if (!s->done || !s->req_end) {
		/* Mid-exchange: the peer stops sending it. */
		nghttp2_submit_rst_stream(u->s, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
	}
	if (u->busy)
		return;
	up_send(u);
	if (up_finished(u))
		up_free(u);
	else
		up_update_events(u);
}

void px_h2up_sweep(struct sl_proxy_listener *l, uint64_t now, int all)
{
	struct px_h2up *u, *n;

	sl_list_for_each_safe(u, n, &l->h2up, link) {
		if (all || (sl_list_empty(&u->streams) && now - u->idle_since_ms > POOL_IDLE_MS) ||
		    (sl_list_empty(&u->streams) &&
		     l->ops->name_verdict(l->owner, u->host) != SL_VERDICT_PROXY))
			up_free(u);
	}
}
