// SPDX-License-Identifier: MIT
/*
 * HTTP/2 towards the sandbox (nghttp2): a struct px_proto sibling of px_h1.c for a client
 * that chose "h2" by ALPN, or sent the HTTP/2 preface on an intercepted cleartext port.
 *
 * Every stream is one exchange through the very path an HTTP/1 request takes: the stream's
 * request head (pseudo-headers and fields, already held to RFC 9113 by nghttp2) is written
 * as an HTTP/1.1 request into a stream connection (struct pconn with h2s set, no socket of
 * its own), whose HTTP/1 parser, head checks, handler, masking, limits, upstream pool and
 * events are HTTP/1's, unchanged; what that connection answers is parsed back into the
 * stream's HEADERS and DATA. (HAProxy 1.8 bridged its first HTTP/2 the same way.)
 *
 * Memory is bounded per stream and per connection: a stream's DATA is taken into its
 * exchange only while that one's input holds less than BUF_LIMIT, and the window is given
 * back (WINDOW_UPDATE) for what the exchange took, not for what arrived; a response body
 * is taken from its exchange only while the stream's frames are not BUF_LIMIT behind.
 *
 * Re-entrancy: stream connections are pumped only outside nghttp2's calls (after
 * nghttp2_session_mem_recv() returns, or from the kick timer), and nghttp2 frees a stream
 * only inside them; a stream connection tells its session what it wrote and that it ended
 * (px_h2_stream_out(), px_h2_stream_gone()) without pumping other streams.
 *
 * Loop thread only; nothing here blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "core/list.h"
#include "core/log.h"
#include "proxy/px_h1.h"
#include "proxy/px_int.h"

#define H2_MAX_STREAMS 100 /* SETTINGS_MAX_CONCURRENT_STREAMS we announce */
#define H2_STREAM_WINDOW (256 * 1024) /* SETTINGS_INITIAL_WINDOW_SIZE we announce */
#define H2_CONN_WINDOW (1024 * 1024) /* the connection's receive window */
#define H2_RESETS_MAX 200 /* client RST_STREAMs per connection per H2_RESETS_MS ... */
#define H2_RESETS_MS 10000 /* ... before it is told to go away (rapid reset) */
#define H2_EMPTY_MAX 1000 /* empty DATA frames (no END_STREAM) per connection */
#define H2_HEAD_RESET (4 * SL_HTTP_MAX_HEAD) /* a head this far past the bound is reset */

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* What parses a stream connection's HTTP/1 answer: llhttp finds the head state first. */
struct h2_rparse {
	struct sl_http_h1 h1;
	struct px_h2_stream *s;
};

struct px_h2_stream {
	struct px_h2 *h;
	struct px_h2_stream *next;
	int32_t id;
	struct pconn *x; /* the stream connection carrying the exchange, NULL once it ended */
	/* the request head, as nghttp2 delivered it */
	char method[24], scheme[8];
	char *path, *authority, *host;
	struct sl_buf cookie; /* cookie fields, joined with "; " (RFC 9113 section 8.2.3) */
	struct sl_http_msg req; /* the other fields */
	struct sl_http_msg trailers; /* the request's trailers: its chunked body ends with them */
	size_t head_bytes;
	int bad_status; /* a head refused here: answered with this */
	const char *bad_why;
	unsigned headers_done : 1, started : 1, chunked : 1, req_end : 1, req_end_sent : 1;
	unsigned head_req : 1; /* HEAD: the answer has no body whatever it says */
	unsigned kick : 1; /* its stream connection has something to do: pump it */
	unsigned submitted : 1, resp_end : 1, interim : 1, deferred : 1, rst : 1;
	unsigned head_ready : 1; /* the answer's head parsed: submitted once the bytes at hand are */
	struct sl_buf in; /* DATA not yet taken by the exchange (bounded by the window) */
	/* the response */
	llhttp_t rp;
	struct h2_rparse rx;
	struct sl_http_msg resp;
	struct sl_http_msg rtrailers; /* the answer's chunked trailers: a trailing HEADERS */
	struct sl_buf out; /* the response body, waiting for DATA frames */
};

struct px_h2 {
	struct pconn *c;
	nghttp2_session *s;
	struct px_h2_stream *streams;
	unsigned nstreams;
	struct sl_timer kick; /* pumps kicked stream connections, then the connection */
	uint64_t resets_since_ms;
	unsigned resets, empty;
	int fatal; /* the session failed: what nghttp2 queued (GOAWAY) goes out, then close */
	int closing; /* GOAWAY sent by us: no new streams, close once they are done */
};

static struct px_h2 *h2_of(struct pconn *c)
{
	return c->h2;
}

int px_h2_streams(struct pconn *c)
{
	return c->h2 ? (int)c->h2->nstreams : 0;
}

static struct px_h2_stream *stream_of(struct px_h2 *h, int32_t id)
{
	return nghttp2_session_get_stream_user_data(h->s, id);
}

static void kick_cb(struct sl_loop *loop, struct sl_timer *t);

/* Asks for the kick timer: the next loop turn pumps what was marked. */
static void want_kick(struct px_h2 *h)
{
	if (!sl_timer_armed(&h->kick))
		sl_timer_arm(h->c->l->px->loop, &h->kick, 0, kick_cb);
}

/* ---- nghttp2's callbacks: they record, and never pump a stream connection ---- */

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct px_h2 *h = ud;
	struct px_h2_stream *s;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (h->closing) {
		h->c->l->stats.h2_refused++;
		return nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id,
						 NGHTTP2_REFUSED_STREAM) ?
			       NGHTTP2_ERR_CALLBACK_FAILURE :
			       0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->h = h;
	s->id = f->hd.stream_id;
	sl_http_msg_init(&s->req);
	sl_http_msg_init(&s->resp);
	s->next = h->streams;
	h->streams = s;
	h->nstreams++;
	nghttp2_session_set_stream_user_data(ss, s->id, s);
	return 0;
}

static void bad(struct px_h2_stream *s, int status, const char *why)
{
	if (!s->bad_status) {
		s->bad_status = status;
		s->bad_why = why;
	}
}

static int copy_str(char **dst, const uint8_t *v, size_t n)
{
	char *p = strndup((const char *)v, n);

	if (!p)
		return -ENOMEM;
	free(*dst);
	*dst = p;
	return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct px_h2_stream *s = stream_of(ud, f->hd.stream_id);
	const char *n = (const char *)name;
	int r = 0;

	(void)ss;
	(void)flags;
	if (s && f->headers.cat == NGHTTP2_HCAT_HEADERS && name[0] != ':') {
		/* The request's trailers (nghttp2 refused pseudo-headers in them): they end its
		 * chunked body, within the same bound as the head. */
		char *nm, *val;

		s->head_bytes += namelen + valuelen + 32;
		if (s->head_bytes > SL_HTTP_MAX_HEAD ||
		    !sl_http_valid_value((const char *)value, valuelen))
			return 0;
		nm = strndup(n, namelen);
		val = strndup((const char *)value, valuelen);
		if (nm && val)
			sl_http_add(&s->trailers, nm, val);
		free(nm);
		free(val);
		return nm && val ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (!s || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* SETTINGS_MAX_HEADER_LIST_SIZE is advice to the client: this is the bound. What is
	 * past it is not kept, and the stream is answered 431 once its head has ended. A head
	 * far past it is an HPACK bomb (one dynamic table entry referenced by the byte: 4 KiB
	 * per byte of the frame), whose every field nghttp2 would still check before this
	 * callback: the stream is reset instead (INTERNAL_ERROR), and nghttp2 decodes the
	 * rest of the block without emitting it. */
	s->head_bytes += namelen + valuelen + 32;
	if (s->head_bytes > SL_HTTP_MAX_HEAD) {
		if (s->bad_status != 431)
			s->h->c->l->stats.limit_head++;
		bad(s, 431, "the request head is larger than sluice accepts");
		if (s->head_bytes <= H2_HEAD_RESET)
			return 0;
		s->h->c->l->stats.h2_refused++;
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (!sl_http_valid_value((const char *)value, valuelen)) {
		bad(s, 400, "a header value that HTTP/1.1 cannot carry");
		return 0;
	}
	if (namelen == 7 && !memcmp(n, ":method", 7)) {
		if (valuelen >= sizeof(s->method))
			bad(s, 400, "the request method is too long");
		else
			snprintf(s->method, sizeof(s->method), "%.*s", (int)valuelen, value);
	} else if (namelen == 7 && !memcmp(n, ":scheme", 7)) {
		snprintf(s->scheme, sizeof(s->scheme), "%.*s", (int)valuelen, value);
	} else if (namelen == 5 && !memcmp(n, ":path", 5)) {
		r = copy_str(&s->path, value, valuelen);
	} else if (namelen == 10 && !memcmp(n, ":authority", 10)) {
		r = copy_str(&s->authority, value, valuelen);
	} else if (n[0] == ':') {
		bad(s, 400, "a pseudo-header sluice does not serve");
	} else if (namelen == 4 && !memcmp(n, "host", 4)) {
		if (s->host)
			bad(s, 400, "more than one Host header");
		r = copy_str(&s->host, value, valuelen);
	} else if (namelen == 6 && !memcmp(n, "cookie", 6)) {
		if (sl_buf_size(&s->cookie))
			r = sl_buf_append(&s->cookie, "; ", 2);
		if (!r)
			r = sl_buf_append(&s->cookie, value, valuelen);
	} else if (namelen == 2 && !memcmp(n, "te", 2)) {
		/* "trailers" only (nghttp2 checked): an HTTP/1 exchange has no trailers */
	} else {
		char *nm = strndup(n, namelen), *val = strndup((const char *)value, valuelen);

		if (!nm || !val)
			r = -ENOMEM;
		else if (sl_http_add(&s->req, nm, val))
			bad(s, 431, "the request has more headers than sluice accepts");
		free(nm);
		free(val);
	}
	return r ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

static int on_data(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		   void *ud)
{
	struct px_h2_stream *s = stream_of(ud, id);

	(void)flags;
	if (!s || s->bad_status || (s->started && !s->x)) {
		/* Nobody takes it: its window comes back at once. */
		nghttp2_session_consume(ss, id, len);
		return 0;
	}
	if (sl_buf_append(&s->in, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->kick = 1;
	return 0;
}

static int on_frame(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct px_h2 *h = ud;
	struct px_h2_stream *s = stream_of(h, f->hd.stream_id);

	(void)ss;
	if (f->hd.type == NGHTTP2_RST_STREAM) {
		uint64_t now = sl_now_ms();

		/* Rapid reset (CVE-2023-44487): a stream opened and reset at once costs us a
		 * head and, if it got that far, an exchange. nghttp2 limits the rate too
		 * (nghttp2_option_set_stream_reset_rate_limit); this is the per-connection
		 * count that the stats show. */
		if (now - h->resets_since_ms > H2_RESETS_MS) {
			h->resets_since_ms = now;
			h->resets = 0;
		}
		if (++h->resets > H2_RESETS_MAX) {
			h->c->l->stats.h2_floods++;
			nghttp2_session_terminate_session(ss, NGHTTP2_ENHANCE_YOUR_CALM);
		}
		return 0;
	}
	if (f->hd.type == NGHTTP2_DATA && !f->hd.length &&
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) && ++h->empty > H2_EMPTY_MAX) {
		h->c->l->stats.h2_floods++;
		nghttp2_session_terminate_session(ss, NGHTTP2_ENHANCE_YOUR_CALM);
		return 0;
	}
	if (!s)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		s->headers_done = 1;
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		s->req_end = 1;
	s->kick = 1;
	return 0;
}

/* nghttp2 refused a frame: for a stream (a malformed head by RFC 9113 section 8.1.1, over
 * SETTINGS_MAX_CONCURRENT_STREAMS) it reset that stream alone, which the stats count. */
static int on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int lib_error, void *ud)
{
	struct px_h2 *h = ud;

	(void)ss;
	(void)lib_error;
	if (f->hd.stream_id && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_PRIORITY))
		h->c->l->stats.h2_refused++;
	return 0;
}

static void stream_free(struct px_h2_stream *s)
{
	struct px_h2 *h = s->h;

	if (s->x) {
		struct pconn *x = s->x;

		/* The client is gone from the stream: the exchange ends as if its connection
		 * had (its handler is told, its upstream closed or pooled). */
		x->h2s = NULL;
		s->x = NULL;
		x->c.err = 1;
		px_conn_close(x);
	}
	for (struct px_h2_stream **pp = &h->streams; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	h->nstreams--;
	free(s->path);
	free(s->authority);
	free(s->host);
	sl_buf_free(&s->cookie);
	sl_buf_free(&s->in);
	sl_buf_free(&s->out);
	sl_http_msg_free(&s->req);
	sl_http_msg_free(&s->resp);
	sl_http_msg_free(&s->trailers);
	sl_http_msg_free(&s->rtrailers);
	sl_http_h1_free(&s->rx.h1);
	free(s);
}

static int on_close(nghttp2_session *ss, int32_t id, uint32_t error_code, void *ud)
{
	struct px_h2_stream *s = stream_of(ud, id);

	(void)error_code;
	if (s) {
		nghttp2_session_set_stream_user_data(ss, id, NULL);
		stream_free(s);
	}
	return 0;
}

/* ---- the response: what the stream connection wrote, parsed back into frames ---- */

static ssize_t read_body(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct px_h2_stream *s = src->ptr;
	ssize_t n = px_h2_read_buf(&s->out, s->resp_end, buf, len, flags);

	(void)ss;
	(void)id;
	(void)ud;
	if (n > 0 && s->x) {
		/* Room again: its stream connection may go on with the body. */
		s->kick = 1;
		want_kick(s->h);
	}
	if (n == NGHTTP2_ERR_DEFERRED)
		s->deferred = 1;
	else if ((*flags & NGHTTP2_DATA_FLAG_EOF) && s->rtrailers.nh &&
		 !px_h2_submit_trailers(ss, id, &s->rtrailers))
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
	return n;
}

static int submit_head(struct px_h2_stream *s)
{
	struct sl_http_msg *m = &s->resp;
	nghttp2_nv *nv = calloc(m->nh + 1, sizeof(*nv));
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_body };
	/* An answer that ended with its head is one HEADERS with END_STREAM: gRPC's
	 * Trailers-Only form (a status without a message) stays what it was. */
	int bare = s->resp_end && !sl_buf_size(&s->out) && !s->rtrailers.nh;
	char status[4];
	size_t n = 0;
	int r;

	if (!nv)
		return -ENOMEM;
	snprintf(status, sizeof(status), "%03d", m->status % 1000);
	nv[n++] =
		(nghttp2_nv){ (uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE };
	n += px_h2_nv_fields(m, nv + n);
	r = nghttp2_submit_response(s->h->s, s->id, nv, n, bare ? NULL : &prd);
	free(nv);
	if (!r)
		s->submitted = 1;
	return r ? -EIO : 0;
}

static struct px_h2_stream *rstream(llhttp_t *p)
{
	return ((struct h2_rparse *)p->data)->s;
}

static int r_begin(llhttp_t *p)
{
	struct px_h2_stream *s = rstream(p);

	sl_http_msg_reset(&s->resp);
	sl_http_msg_reset(&s->rtrailers);
	sl_http_h1_reset(&s->rx.h1);
	s->rx.h1.m = &s->resp;
	return 0;
}

static int r_headers_complete(llhttp_t *p)
{
	struct px_h2_stream *s = rstream(p);

	s->resp.status = p->status_code;
	if (p->status_code < 200) {
		/* 100 Continue, 103 Early Hints: not relayed; the final response follows. */
		s->interim = 1;
		return 0;
	}
	s->head_ready = 1; /* submitted by parse_answer(), which may see the end too */
	s->rx.h1.m = &s->rtrailers; /* what a chunked body ends with */
	return s->head_req ? 1 : 0;
}

static int r_body(llhttp_t *p, const char *at, size_t len)
{
	struct px_h2_stream *s = rstream(p);

	return sl_buf_append(&s->out, at, len) ? -1 : 0;
}

static int r_complete(llhttp_t *p)
{
	struct px_h2_stream *s = rstream(p);

	if (s->interim) {
		s->interim = 0;
		return 0;
	}
	s->resp_end = 1;
	return HPE_PAUSED; /* nothing follows: the stream connection closes after it */
}

static const llhttp_settings_t rsettings = {
	.on_message_begin = r_begin,
	.on_status = sl_http_on_status,
	.on_header_field = sl_http_on_header_field,
	.on_header_value = sl_http_on_header_value,
	.on_header_value_complete = sl_http_on_header_value_complete,
	.on_headers_complete = r_headers_complete,
	.on_body = r_body,
	.on_message_complete = r_complete,
};

static void stream_reset(struct px_h2_stream *s, uint32_t code)
{
	if (!s->rst && !nghttp2_submit_rst_stream(s->h->s, NGHTTP2_FLAG_NONE, s->id, code))
		s->rst = 1;
}

/* Parses @n bytes of @x's HTTP/1 answer into @s's frames. */
static void parse_answer(struct px_h2_stream *s, const char *data, size_t n)
{
	llhttp_errno_t e;

	if (s->resp_end || s->rst)
		return;
	s->rx.h1.feed_end = data + n;
	e = llhttp_execute(&s->rp, data, n);
	if (e != HPE_OK && e != HPE_PAUSED) {
		sl_warn("h2 stream %d: the exchange's answer did not parse: %s", s->id,
			llhttp_errno_name(e));
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	if (s->head_ready && !s->submitted && submit_head(s)) {
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	if (s->deferred && (sl_buf_size(&s->out) || s->resp_end)) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->h->s, s->id);
	}
}

/* The stream connection @x wrote its answer into x->c.out: taken while the stream has room
 * (its sl_stream_flush()). Returns the bytes taken. */
size_t px_h2_stream_out(struct pconn *x)
{
	struct px_h2_stream *s = x->h2s;
	size_t n = sl_buf_size(&x->c.out);
	struct pconn *c;

	c = s->h->c;
	if (sl_buf_size(&x->c.in) < BUF_LIMIT &&
	    (sl_buf_size(&s->in) || (s->req_end && !s->req_end_sent))) {
		/* It took what it had: more of the body (and a window update) is due. */
		s->kick = 1;
		want_kick(s->h);
	}
	if (!n || sl_buf_size(&s->out) >= BUF_LIMIT)
		return 0;
	parse_answer(s, sl_buf_head(&x->c.out), n);
	sl_buf_consume(&x->c.out, n);
	x->c.tx += n;
	/* A busy connection is in its pump (its recv pumped this stream connection, or the
	 * kick did): it sends what this added when that returns. Otherwise the kick sends it
	 * after this loop turn's events: the answers of every stream whose upstream spoke in
	 * it leave in one TLS write, not one each (a third of the CPU of a 1 KiB request was
	 * write()s). */
	if (!c->busy)
		want_kick(s->h);
	return n;
}

/* The stream connection @x ends (px_conn_free()): its last words, then the stream ends. */
void px_h2_stream_gone(struct pconn *x)
{
	struct px_h2_stream *s = x->h2s;
	size_t n = sl_buf_size(&x->c.out);

	x->h2s = NULL;
	s->x = NULL;
	if (n)
		parse_answer(s, sl_buf_head(&x->c.out), n);
	if (!s->resp_end && !s->rst && !s->interim && llhttp_message_needs_eof(&s->rp) &&
	    s->submitted) {
		llhttp_finish(&s->rp);
	}
	if (s->head_ready && !s->submitted && !s->rst && submit_head(s))
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
	if (!s->resp_end)
		stream_reset(s, NGHTTP2_INTERNAL_ERROR); /* too late for a status */
	else if (s->deferred) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->h->s, s->id);
	}
	want_kick(s->h);
}

/* ---- starting and feeding a stream's exchange ---- */

/* Answers @s here (a head refused before any exchange): status and a short text. */
static void answer_here(struct px_h2 *h, struct px_h2_stream *s, int status, const char *why)
{
	struct pconn *c = h->c;
	char text[512];

	px_refusal_text(c, status, why, text, sizeof(text));
	px_conn_event(c->l, c, "reject", why);
	c->l->stats.rejected++;
	c->l->stats.h2_refused++;
	sl_http_msg_reset(&s->resp);
	s->resp.status = status;
	sl_http_add(&s->resp, "content-type", "text/plain; charset=utf-8");
	sl_buf_reset(&s->out);
	sl_buf_printf(&s->out, "%s\n", text);
	s->resp_end = 1;
	if (submit_head(s))
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
}

static int valid_token(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* The HTTP/1.1 request that carries @s's head into its exchange. */
static int write_head(struct px_h2_stream *s, struct sl_buf *b)
{
	const char *host = s->authority ? s->authority : s->host;
	int r;

	r = sl_buf_printf(b, "%s %s HTTP/1.1\r\nhost: %s\r\n", s->method, s->path, host);
	for (size_t i = 0; !r && i < s->req.nh; i++) {
		/* connection-specific fields were refused by nghttp2 already; what HTTP/1
		 * would read as framing is ours to write */
		if (!strcasecmp(s->req.h[i].name, "transfer-encoding"))
			continue;
		r = sl_buf_printf(b, "%s: %s\r\n", s->req.h[i].name, s->req.h[i].value);
	}
	if (!r && sl_buf_size(&s->cookie))
		r = sl_buf_printf(b, "cookie: %.*s\r\n", (int)sl_buf_size(&s->cookie),
				  sl_buf_head(&s->cookie));
	/* A body without a length is chunked, also one whose every DATA frame (or trailers)
	 * came with the head (a gRPC call's one message does). */
	if (!r && !sl_http_get(&s->req, "content-length") &&
	    (!s->req_end || sl_buf_size(&s->in) || s->trailers.nh)) {
		s->chunked = 1;
		r = sl_buf_printf(b, "transfer-encoding: chunked\r\n");
	}
	/* One request per stream connection: it closes after the answer (its upstream is
	 * pooled all the same). */
	if (!r)
		r = sl_buf_printf(b, "connection: close\r\n\r\n");
	return r;
}

/* The head of @s is complete: check what HTTP/1 would not, then start its exchange. */
static void stream_start(struct px_h2 *h, struct px_h2_stream *s)
{
	struct pconn *c = h->c, *x;
	struct sl_proxy_listener *l = c->l;
	const char *host = s->authority ? s->authority : s->host;

	s->started = 1;
	if (!s->bad_status) {
		if (!host)
			bad(s, 400, "the request names no host (:authority)");
		else if (s->authority && s->host && strcmp(s->authority, s->host))
			bad(s, 400, "Host differs from :authority");
		else if (!s->path || !valid_token(s->path) || !valid_token(s->method))
			bad(s, 400, "malformed :path or :method");
		else if (strcmp(s->scheme, c->tls ? "https" : "http"))
			bad(s, 400, ":scheme differs from the connection's");
	}
	if (s->bad_status) {
		answer_here(h, s, s->bad_status, s->bad_why);
		return;
	}
	if (l->stats.active >= l->px->o.max_conns ||
	    px_total_take(l->px->total, l->px->o.max_conns_total)) {
		l->stats.limit_conns++;
		l->stats.h2_refused++;
		stream_reset(s, NGHTTP2_REFUSED_STREAM);
		return;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		px_total_put(l->px->total);
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	x->l = l;
	sl_list_init(&x->link);
	x->x.conn = x;
	sl_stream_init(&x->c);
	sl_stream_init(&x->u);
	x->orig = c->orig;
	memcpy(x->comm, c->comm, sizeof(x->comm));
	x->dst = c->dst;
	x->dstlen = c->dstlen;
	x->dst_family = c->dst_family;
	memcpy(x->dst_addr, c->dst_addr, sizeof(x->dst_addr));
	memcpy(x->name, c->name, sizeof(x->name));
	x->tls = c->tls;
	x->st = C_HTTP;
	sl_http_msg_init(&x->x.req);
	sl_http_msg_init(&x->x.resp);
	x->proto = &px_h1_proto;
	x->proto->init(x);
	x->deadline_ms = sl_now_ms() + l->px->o.header_timeout_ms;
	x->h2s = s;
	s->head_req = !strcmp(s->method, "HEAD");
	s->rx.s = s;
	s->rx.h1.m = &s->resp;
	llhttp_init(&s->rp, HTTP_RESPONSE, &rsettings);
	s->rp.data = &s->rx;
	if (write_head(s, &x->c.in)) {
		c->l->stats.upstream_errors++;
		sl_stream_close(&x->c);
		x->proto->release(x);
		free(x);
		px_total_put(l->px->total);
		stream_reset(s, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	s->x = x;
	sl_list_add(&l->conns, &x->link);
	l->stats.active++;
	l->stats.h2_streams++;
}

/* Gives @s's exchange the DATA it has room for; the window follows what it took. */
static void stream_feed(struct px_h2 *h, struct px_h2_stream *s)
{
	struct pconn *x = s->x;
	size_t n = sl_buf_size(&s->in);

	if (n && sl_buf_size(&x->c.in) < BUF_LIMIT) {
		if (n > BUF_LIMIT)
			n = BUF_LIMIT;
		if (s->chunked)
			sl_buf_printf(&x->c.in, "%zx\r\n", n);
		sl_buf_append(&x->c.in, sl_buf_head(&s->in), n);
		if (s->chunked)
			sl_buf_append(&x->c.in, "\r\n", 2);
		sl_buf_consume(&s->in, n);
		nghttp2_session_consume(h->s, s->id, n);
	}
	if (s->req_end && !sl_buf_size(&s->in) && !s->req_end_sent) {
		s->req_end_sent = 1;
		if (s->chunked)
			sl_http_write_trailers(&x->c.in, &s->trailers);
	}
}

/* After nghttp2 took the client's bytes: start the heads that completed, feed the bodies,
 * pump the stream connections that have something to do. */
static void streams_run(struct px_h2 *h)
{
	struct px_h2_stream *s;

	for (s = h->streams; s; s = s->next) {
		if (!s->kick)
			continue;
		if (!s->started && s->headers_done)
			stream_start(h, s);
		if (s->x)
			stream_feed(h, s);
	}
	/* Pumping may end a stream connection (never a stream: only nghttp2 frees those, and
	 * it is not running), so the list holds still. */
	for (s = h->streams; s; s = s->next) {
		if (!s->kick)
			continue;
		s->kick = 0;
		if (s->x) {
			s->x->c.readable = 0;
			px_pump(s->x);
		}
	}
}

static void kick_cb(struct sl_loop *loop, struct sl_timer *t)
{
	struct px_h2 *h = sl_container_of(t, struct px_h2, kick);
	struct pconn *c = h->c;

	(void)loop;
	c->busy++;
	for (struct px_h2_stream *s = h->streams; s; s = s->next)
		if (s->x)
			stream_feed(h, s);
	streams_run(h);
	if (--c->busy == 0 && c->dead) {
		px_conn_free(c);
		return;
	}
	px_pump(c);
}

/* ---- the protocol table ---- */

static void h2_send(struct pconn *c);

static void h2_recv(struct pconn *c)
{
	struct px_h2 *h = h2_of(c);
	size_t n = sl_buf_size(&c->c.in);

	if (n && !h->fatal) {
		ssize_t r =
			nghttp2_session_mem_recv(h->s, (const uint8_t *)sl_buf_head(&c->c.in), n);

		if (r < 0) {
			char why[160];

			snprintf(why, sizeof(why), "HTTP/2: %s", nghttp2_strerror((int)r));
			px_conn_event(c->l, c, "reject", why);
			if (r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
				c->l->stats.h2_floods += r == NGHTTP2_ERR_FLOODED;
			h->fatal = 1;
		}
		sl_buf_consume(&c->c.in, n);
		c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	} else if (h->fatal) {
		sl_buf_reset(&c->c.in);
	}
	if (!h->fatal)
		streams_run(h);
}

static void h2_send(struct pconn *c)
{
	struct px_h2 *h = h2_of(c);

	while (sl_buf_size(&c->c.out) < BUF_LIMIT) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(h->s, &data);

		if (n < 0) {
			h->fatal = 1;
			break;
		}
		if (!n)
			break;
		sl_buf_append(&c->c.out, data, (size_t)n);
	}
	if (h->nstreams)
		c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	if (h->fatal || (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s)) ||
	    (h->closing && !h->nstreams)) {
		c->close_after = 1;
		c->st = C_CLOSING;
	}
}

static void h2_init(struct pconn *c)
{
	struct px_h2 *h = calloc(1, sizeof(*h));
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_option *opt = NULL;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SL_HTTP_MAX_HEAD },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	int r = -ENOMEM;

	c->h2 = h;
	if (!h || nghttp2_session_callbacks_new(&cbs) || nghttp2_option_new(&opt))
		goto out;
	h->c = c;
	c->l->stats.h2_conns++;
	c->l->stats.h2_active++;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
	/* Window updates follow what the exchanges took (stream_feed()), not what arrived. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* The floods: queued SETTINGS/PING acks the client does not read, SETTINGS entries,
	 * CONTINUATION frames of one head, resets (CVE-2023-44487, CVE-2024-27316). */
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	nghttp2_option_set_max_settings(opt, 32);
	nghttp2_option_set_max_continuations(opt, 8);
	nghttp2_option_set_stream_reset_rate_limit(opt, 200, 20);
	/* The decoder's dynamic table is ours to bound (HPACK bombs): 4 KiB as announced. */
	nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
	if (nghttp2_session_server_new2(&h->s, cbs, h, opt))
		goto out;
	if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) ||
	    nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW))
		goto out;
	r = 0;
out:
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	if (r && h) {
		nghttp2_session_del(h->s);
		h->s = NULL;
		h->fatal = 1;
	}
	if (r)
		c->st = C_CLOSING;
}

static void h2_release(struct pconn *c)
{
	struct px_h2 *h = h2_of(c);

	if (!h)
		return;
	while (h->streams) {
		struct px_h2_stream *s = h->streams;

		if (h->s)
			nghttp2_session_set_stream_user_data(h->s, s->id, NULL);
		stream_free(s);
	}
	sl_timer_disarm(c->l->px->loop, &h->kick);
	nghttp2_session_del(h->s);
	c->l->stats.h2_active--;
	free(h);
	c->h2 = NULL;
}

/* No exchange lives on an HTTP/2 connection itself: its streams' are HTTP/1's. */
static void h2_resp_begin(struct sl_px_xchg *x)
{
	(void)x;
}

static void h2_wake(struct sl_px_xchg *x, enum px_side side)
{
	(void)x;
	(void)side;
}

const struct px_proto px_h2_proto = {
	.name = "h2",
	.init = h2_init,
	.recv = h2_recv,
	.send = h2_send,
	.resp_begin = h2_resp_begin,
	.wake = h2_wake,
	.release = h2_release,
};

void px_h2_begin(struct pconn *c)
{
	c->proto->release(c);
	c->proto = &px_h2_proto;
	c->proto->init(c);
}

int px_h2_preface(const uint8_t *buf, size_t n)
{
	size_t m = sizeof(preface) - 1;

	if (memcmp(buf, preface, n < m ? n : m))
		return 0;
	return n < m ? -EAGAIN : 1;
}

/* Ends @c gracefully: GOAWAY (NO_ERROR) naming the last stream it took, whose streams
 * finish; a new stream gets REFUSED_STREAM and the connection closes once the last one
 * ended. Sent from the kick timer, so that it may be called from anywhere on the loop
 * thread (no pump runs here). Returns 1 if a GOAWAY was queued, 0 if not (not HTTP/2, or
 * ending already). */
int px_h2_goaway(struct pconn *c)
{
	struct px_h2 *h = h2_of(c);

	if (!h || !h->s || h->closing || h->fatal)
		return 0;
	if (nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE,
				  nghttp2_session_get_last_proc_stream_id(h->s), NGHTTP2_NO_ERROR,
				  NULL, 0))
		return 0;
	h->closing = 1;
	want_kick(h);
	return 1;
}
