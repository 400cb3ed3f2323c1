// SPDX-License-Identifier: MIT
/*
 * HTTP/1: llhttp's request and response callbacks (head checks, framing), feeding the
 * parsers, and what the pump asks of a request and a response. Loop thread only; nothing here
 * blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/policy.h"
#include "proxy/px_h1.h"
#include "proxy/px_int.h"

void px_next_request(struct pconn *c)
{
	c->x.rq = RQ_IDLE;
	c->x.resp_done = 0;
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	llhttp_resume(&c->reqp);
}

/* ---- request parsing ---- */

static struct pconn *conn_of(llhttp_t *p)
{
	return ((struct parse_ctx *)p->data)->c;
}

static int req_begin(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	sl_http_msg_reset(&c->x.req);
	sl_http_msg_reset(&c->x.req_trailers);
	sl_http_msg_reset(&c->x.resp_trailers);
	sl_http_h1_reset(&c->reqx.h1);
	c->reqx.h1.m = &c->x.req;
	free(c->x.path);
	c->x.path = NULL;
	c->x.rq = RQ_HEAD;
	c->x.websocket = 0;
	px_handler_abort(c, "a new request began"); /* never: each request ends its handler */
	c->x.decided = c->x.fetched = c->x.hold_resp = c->x.resp_held = c->x.local = 0;
	c->x.req_buffer = c->x.req_complete_seen = c->x.req_discard = c->x.req_body_set = 0;
	c->x.resp_buffer = c->x.resp_too_big = c->x.resp_body_set = 0;
	sl_buf_reset(&c->x.reqbody);
	sl_buf_reset(&c->x.respbody);
	px_clear_masks(c);
	c->x.handler[0] = c->x.refused[0] = 0;
	c->x.refused_status = 0;
	c->x.req_bytes = c->x.resp_bytes = 0;
	c->x.t_req_ms = sl_now_ms();
	c->x.t_up_ms = c->x.t_up_first_ms = 0;
	/* The whole head must arrive within the header timeout, however slowly it trickles. */
	c->deadline_ms = c->x.t_req_ms + c->l->px->o.header_timeout_ms;
	return 0;
}

static int reject(struct pconn *c, int status, const char *why)
{
	c->reject_status = status;
	c->reject_why = why;
	return HPE_PAUSED;
}

/* The policy's say on a request's Host (px_h1_check_request() asks). */
static const char *host_here(void *arg, const char *host)
{
	struct pconn *c = arg;

	if (c->tls) {
		if (strcmp(host, c->name))
			return "Host differs from the TLS server name";
		return NULL;
	}
	/* Plain HTTP: Host names the host, which must be intercepted, here. */
	if (c->l->ops->name_verdict(c->l->owner, host) != SL_VERDICT_PROXY ||
	    !c->l->ops->name_at(c->l->owner, host, c->dst_family, c->dst_addr))
		return "Host is not an intercepted name at this address";
	snprintf(c->name, sizeof(c->name), "%s", host);
	return NULL;
}

/* The request head is complete: is it one we serve? */
static int req_headers_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);
	const struct px_h1_policy pol = { host_here, c };
	struct px_h1_req v;

	if (px_h1_check_request(p, &c->x.req, &pol, &v))
		return reject(c, v.status, v.why);
	c->x.websocket = v.websocket;
	c->x.te_trailers = c->h2s || sl_http_has_token(&c->x.req, "te", "trailers");
	c->reqx.h1.m = &c->x.req_trailers; /* what a chunked body ends with */
	c->x.path = strdup(v.path);
	if (!c->x.path)
		return reject(c, 500, "out of memory");
	c->close_after = v.close_after;
	c->x.req_body = v.body;
	c->x.rq = RQ_DECIDE;
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	return HPE_PAUSED;
}

static int req_body(llhttp_t *p, const char *at, size_t len)
{
	struct pconn *c = conn_of(p);

	c->x.req_bytes += len;
	if (c->x.req_discard)
		return 0;
	if (c->x.req_buffer) {
		if (sl_buf_size(&c->x.reqbody) + len > c->x.req_max) {
			c->l->stats.limit_req_body++;
			return reject(c, 413,
				      "the request body is larger than its handler may read");
		}
		if (!px_within_budget(c, len))
			return reject(c, 413, OVER_BUDGET);
		return sl_buf_append(&c->x.reqbody, at, len) ? -1 : 0;
	}
	return sl_http_write_body(&c->u.out, c->x.req_body, at, len) ? -1 : 0;
}

static int req_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	if (c->x.req_buffer && !c->x.req_discard) {
		/* Read for the handler: the parser waits here until the request is answered. */
		c->x.req_complete_seen = 1;
		c->x.req_body_set = 1;
		return HPE_PAUSED;
	}
	if (!c->x.req_discard && c->x.req_body == SL_BODY_CHUNKED &&
	    sl_http_write_trailers(&c->u.out, &c->x.req_trailers))
		return -1;
	c->x.rq = RQ_DONE;
	/* One request at a time: the next (pipelined) one waits for this response. */
	return HPE_PAUSED;
}

/* ---- response parsing ---- */

static int resp_begin(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	sl_http_msg_reset(&c->x.resp);
	sl_http_msg_reset(&c->x.resp_trailers);
	sl_http_h1_reset(&c->respx.h1);
	c->respx.h1.m = &c->x.resp;
	c->x.resp_started = 1;
	if (!c->x.t_up_first_ms)
		c->x.t_up_first_ms = sl_now_ms();
	return 0;
}

static int resp_headers_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);
	struct sl_http_msg *m = &c->x.resp;
	int head = !strcmp(c->x.req.method, "HEAD");
	struct px_h1_resp v;

	if (px_h1_check_response(p, m, head, c->x.websocket, &v))
		return -1;
	if (v.kind == PX_H1_RESP_SWITCH) {
		c->x.to_tunnel = 1;
		if (px_ws_begin(c, m))
			return -1;
		if (c->x.hold_resp) {
			c->x.resp_held = 1;
			return HPE_PAUSED;
		}
		px_mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, "websocket", 0, &c->c.out);
		c->x.resp_head_sent = 1;
		return 0;
	}
	if (v.kind == PX_H1_RESP_INTERIM) {
		/* 100 Continue, 103 Early Hints: relayed, masked like any head (an Early Hints
		 * Link can echo a request's header); the final response follows. */
		c->x.interim = 1;
		px_mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, NULL, 0, &c->c.out);
		return 0;
	}
	c->x.interim = 0;
	c->x.resp_body = v.body;
	c->respx.h1.m = &c->x.resp_trailers; /* what a chunked body ends with */
	if (c->x.nmask && px_resp_coding(c, m))
		return -1;
	if (c->x.hold_resp) {
		/* The handler sees the head first (sl_px_x_send_fetched writes it). */
		c->x.resp_held = 1;
		if (head)
			p->flags |= F_SKIPBODY; /* what returning 1 would have said */
		return HPE_PAUSED;
	}
	px_mask_msg(c, m);
	if (v.head_length) {
		/* A HEAD answer keeps its Content-Length: it describes the GET. */
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, c->close_after, &c->c.out);
	} else {
		sl_http_write_response(m, c->x.resp_body, NULL, c->close_after, &c->c.out);
	}
	c->x.resp_head_sent = 1;
	/* llhttp cannot know that a response to HEAD has no body: 1 tells it. */
	return head ? 1 : 0;
}

static int resp_body(llhttp_t *p, const char *at, size_t len)
{
	struct pconn *c = conn_of(p);

	c->x.resp_bytes += len;
	if (c->x.dec) {
		/* Decoded in bounded steps: what the client has no room for yet waits in the
		 * decoder, and the parser with it (resumed by handle_response). */
		if (sl_inflate_feed(c->x.dec, at, len) || px_dec_drain(c))
			return -1;
		if (sl_inflate_pending(c->x.dec)) {
			c->x.dec_paused = 1;
			return HPE_PAUSED;
		}
		return 0;
	}
	if (c->x.resp_buffer) {
		if (sl_buf_size(&c->x.respbody) + len > c->x.resp_max) {
			c->x.resp_too_big = 1;
			c->l->stats.limit_resp_body++;
			return -1;
		}
		if (!px_within_budget(c, len)) {
			snprintf(c->x.resp_why, sizeof(c->x.resp_why), "%s", OVER_BUDGET);
			return -1;
		}
		return sl_buf_append(&c->x.respbody, at, len) ? -1 : 0;
	}
	if (c->x.nmask)
		return px_write_masked(c, at, len, 0);
	return sl_http_write_body(&c->c.out, c->x.resp_body, at, len) ? -1 : 0;
}

static int resp_complete(llhttp_t *p)
{
	struct pconn *c = conn_of(p);

	if (c->x.to_tunnel)
		return HPE_PAUSED;
	if (c->x.interim) {
		c->x.interim = 0;
		return 0; /* the final response is next in the same stream */
	}
	if (!c->x.resp_buffer) {
		if (c->x.nmask && px_write_masked(c, NULL, 0, 1))
			return -1;
		if (c->x.resp_body == SL_BODY_CHUNKED) {
			/* Trailers (gRPC's status) go to a client that takes them, masked like
			 * any head. */
			px_mask_msg(c, &c->x.resp_trailers);
			if (sl_http_write_trailers(&c->c.out,
						   c->x.te_trailers ? &c->x.resp_trailers : NULL))
				return -1;
		}
	}
	c->x.resp_done = 1;
	return HPE_PAUSED;
}

/* The response is complete: account, keep the upstream if it may be reused, and let the
 * next pipelined request through. */
void px_finish_request(struct pconn *c)
{
	px_request_event(c, c->x.resp.status, "forward", NULL);
	/* A reusable upstream stays with this client for its next request (no loop changes
	 * at all), or goes to the pool when this client is done: a client that closes after
	 * each request must not cost a TLS handshake upstream each time. */
	if (c->x.rq != RQ_DONE || !llhttp_should_keep_alive(&c->respp))
		px_close_upstream(c);
	else if (c->close_after)
		px_pool_put(c);
	if (c->x.rq != RQ_DONE || c->close_after) {
		/* The response ended before the request did, or the client is done: close. A
		 * client that asked to close after a request it sent whole has nothing more to
		 * send (as nginx judges for its lingering close): no draining. */
		c->drained = c->x.rq == RQ_DONE && !sl_buf_size(&c->c.in);
		if (c->drained)
			sl_stream_cork(&c->c); /* the rest of the answer, close_notify, FIN */
		c->st = C_CLOSING;
		return;
	}
	px_next_request(c);
}

/* ---- the pump ---- */

/* Feeds @p (its state @h) the unconsumed bytes of @in; returns the llhttp result. */
static llhttp_errno_t feed(llhttp_t *p, struct sl_http_h1 *h, struct sl_buf *in, size_t max)
{
	size_t n = sl_buf_size(in) < max ? sl_buf_size(in) : max;
	const char *data = n ? sl_buf_head(in) : "";
	llhttp_errno_t e;

	/* Even without bytes: a parser resumed after a pause may still owe callbacks (a GET's
	 * message completion follows its headers without consuming anything). */
	h->feed_end = data + n;
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

	if (c->x.rq != RQ_IDLE && c->x.rq != RQ_HEAD && c->x.rq != RQ_BODY &&
	    !(c->x.rq == RQ_DECIDE && c->x.hw == HW_REQ_BODY))
		return;
	if (c->x.rq == RQ_BODY && sl_buf_size(&c->u.out) >= BUF_LIMIT)
		return;
	e = feed(&c->reqp, &c->reqx.h1, &c->c.in, c->x.rq == RQ_BODY ? BUF_LIMIT : SIZE_MAX);
	if (e == HPE_OK || e == HPE_PAUSED_UPGRADE)
		return;
	if (e == HPE_PAUSED) {
		if (c->reject_status) {
			char body[512];

			px_handler_abort(c, c->reject_why);
			px_request_event(c, c->reject_status, "reject", c->reject_why);
			c->l->stats.rejected++;
			px_refusal_text(c, c->reject_status, c->reject_why, body, sizeof(body));
			sl_buf_reset(&c->c.out);
			sl_http_write_error(&c->c.out, c->reject_status, body);
			c->reject_status = 0;
			c->st = C_CLOSING;
			return;
		}
		if (c->x.rq == RQ_DECIDE && !c->x.decided) {
			px_decide(c);
			/* Sent upstream at once (a pooled connection): parse the body before the
			 * head is flushed, so that a malformed body never reaches the upstream. */
			if (c->x.rq == RQ_BODY && c->st == C_HTTP && !c->dead)
				handle_requests(c);
		} else if (c->x.rq == RQ_DECIDE && c->x.hw == HW_REQ_BODY &&
			   c->x.req_complete_seen) {
			c->x.hw = HW_NONE;
			px_handler_resume(c);
		} else if (c->x.rq == RQ_DONE && c->x.local) {
			c->x.local = 0; /* answered here, and now read to its end */
			px_next_request(c);
		}
		return;
	}
	/* Malformed: bad framing (CL and TE, invalid chunks), obs-fold, bare LF, oversize. */
	{
		char why[256];
		int status = c->reqx.h1.head_bytes > SL_HTTP_MAX_HEAD ? 431 : 400;

		if (status == 431)
			c->l->stats.limit_head++;

		snprintf(why, sizeof(why), "malformed request: %s",
			 llhttp_get_error_reason(&c->reqp) ? llhttp_get_error_reason(&c->reqp) :
							     llhttp_errno_name(e));
		if (c->x.rq == RQ_BODY && c->x.resp_head_sent) {
			px_request_event(c, 400, "reject", why);
			c->c.err = 1;
			return;
		}
		px_respond_error(c, status, why, "reject");
	}
}

static void handle_response(struct pconn *c)
{
	llhttp_errno_t e;

	if (c->up != UP_READY || c->x.rq < RQ_BODY || c->x.resp_done ||
	    (c->x.resp_held && c->x.hw != HW_RESP_BODY))
		return;
	if (sl_buf_size(&c->c.out) >= BUF_LIMIT)
		return;
	if (c->x.dec_paused) {
		if (px_dec_drain(c)) {
			px_respond_error(c, 502,
					 c->x.resp_why[0] ? c->x.resp_why : "decoding failed",
					 "error");
			return;
		}
		if (sl_inflate_pending(c->x.dec))
			return;
		c->x.dec_paused = 0;
		llhttp_resume(&c->respp);
	}
	e = feed(&c->respp, &c->respx.h1, &c->u.in, BUF_LIMIT);
	if (e == HPE_OK && c->u.eof && !sl_buf_size(&c->u.in)) {
		if (c->x.resp_started && llhttp_message_needs_eof(&c->respp))
			e = llhttp_finish(&c->respp);
		else {
			px_respond_error(c, 502, "the upstream closed the connection mid-response",
					 "error");
			return;
		}
	}
	if (e == HPE_PAUSED && c->x.resp_held && c->x.hw == HW_RESP_HEAD) {
		c->x.hw = HW_NONE;
		px_handler_resume(c);
		return;
	}
	if (e == HPE_PAUSED && c->x.to_tunnel) {
		/* 101 Switching Protocols: from now on both directions are raw. */
		px_request_event(c, 101, "forward", NULL);
		c->st = C_TUNNEL;
		return;
	}
	if (e == HPE_PAUSED && c->x.resp_done) {
		if (c->x.hw == HW_RESP_BODY) {
			c->x.hw = HW_NONE;
			px_handler_resume(c);
			return;
		}
		px_finish_request(c);
		return;
	}
	if (e != HPE_OK && e != HPE_PAUSED) {
		char why[256];

		if (c->x.resp_too_big)
			snprintf(why, sizeof(why),
				 "the upstream response body is larger than its handler may read");
		else if (c->x.resp_why[0])
			snprintf(why, sizeof(why), "%s", c->x.resp_why);
		else
			snprintf(why, sizeof(why), "malformed upstream response: %s",
				 llhttp_errno_name(e));
		px_respond_error(c, 502, why, "error");
	}
}

/* ---- llhttp's settings ---- */

/* Constant: llhttp only reads them, and every parser of every thread may share them. */
static const llhttp_settings_t req_settings = {
	.on_message_begin = req_begin,
	.on_url = sl_http_on_url,
	.on_header_field = sl_http_on_header_field,
	.on_header_value = sl_http_on_header_value,
	.on_header_value_complete = sl_http_on_header_value_complete,
	.on_headers_complete = req_headers_complete,
	.on_body = req_body,
	.on_message_complete = req_complete,
};

static const llhttp_settings_t resp_settings = {
	.on_message_begin = resp_begin,
	.on_status = sl_http_on_status,
	.on_header_field = sl_http_on_header_field,
	.on_header_value = sl_http_on_header_value,
	.on_header_value_complete = sl_http_on_header_value_complete,
	.on_headers_complete = resp_headers_complete,
	.on_body = resp_body,
	.on_message_complete = resp_complete,
};

/* ---- the protocol table ---- */

static void h1_init(struct pconn *c)
{
	c->reqx = (struct parse_ctx){ { .m = &c->x.req }, c };
	c->respx = (struct parse_ctx){ { .m = &c->x.resp }, c };
	llhttp_init(&c->reqp, HTTP_REQUEST, &req_settings);
	c->reqp.data = &c->reqx;
}

static void h1_resp_begin(struct sl_px_xchg *x)
{
	struct pconn *c = x->conn;

	llhttp_init(&c->respp, HTTP_RESPONSE, &resp_settings);
	c->respp.data = &c->respx;
	sl_http_h1_reset(&c->respx.h1);
}

static void h1_wake(struct sl_px_xchg *x, enum px_side side)
{
	llhttp_resume(side == PX_REQ ? &x->conn->reqp : &x->conn->respp);
}

static void h1_release(struct pconn *c)
{
	sl_http_h1_free(&c->reqx.h1);
	sl_http_h1_free(&c->respx.h1);
}

const struct px_proto px_h1_proto = {
	.name = "h1",
	.init = h1_init,
	.recv = handle_requests,
	.send = handle_response,
	.resp_begin = h1_resp_begin,
	.wake = h1_wake,
	.release = h1_release,
};
