// SPDX-License-Identifier: MIT
/*
 * The exchange: one request and its response as the sandbox's handler sees it (the
 * sl_px_x_*() API of proxy.h), the handler plumbing, secret masking of what goes back to the
 * client, and the request's event. Loop thread only; nothing here blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/events.h"
#include "proxy/px_int.h"

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

/* One JSON line per request: who, what, where, how it ended. No header values. In audit
 * mode the request is also recorded (sl_proxy_ops.observe), whether or not events are on. */
void px_request_event(struct pconn *c, int status, const char *verdict, const char *reason)
{
	struct sl_proxy_listener *l = c->l;
	uint64_t now = sl_now_ms();
	struct sl_jw w;
	char path[512];
	int audit;

	path_for_event(c->x.path ? c->x.path : c->x.req.target, path, sizeof(path));
	sl_px_x_redact(&c->x, path, strlen(path));
	audit = l->ops->audit && l->ops->audit(l->owner);
	if (audit && l->ops->observe)
		l->ops->observe(l->owner, c->x.req.method[0] ? c->x.req.method : "-", c->name, path,
				0, status, c->x.refused[0] ? c->x.refused : NULL);
	if (!l->px->events)
		return;
	if (c->x.refused[0] && !strcmp(verdict, "forward")) {
		/* It went on only because audit mode runs handlers dry. */
		verdict = "audit";
		reason = c->x.refused;
	}
	sl_jw_begin(&w);
	sl_jw_str(&w, "type", "http");
	sl_jw_str(&w, "sandbox", l->ops->name(l->owner));
	sl_jw_int(&w, "pid", c->orig.pid);
	sl_jw_str(&w, "comm", c->comm);
	sl_jw_str(&w, "method", c->x.req.method[0] ? c->x.req.method : "-");
	sl_jw_str(&w, "scheme", c->tls ? "https" : "http");
	sl_jw_str(&w, "proto", c->h2s ? "h2" : "h1");
	sl_jw_str(&w, "host", c->name);
	sl_jw_str(&w, "path", path);
	sl_jw_int(&w, "status", status);
	sl_jw_int(&w, "bytes_in", (long long)c->x.req_bytes);
	sl_jw_int(&w, "bytes_out", (long long)c->x.resp_bytes);
	sl_jw_int(&w, "upstream_ms",
		  c->x.t_up_ms && c->x.t_up_first_ms ?
			  (long long)(c->x.t_up_first_ms - c->x.t_up_ms) :
			  0);
	sl_jw_int(&w, "total_ms", c->x.t_req_ms ? (long long)(now - c->x.t_req_ms) : 0);
	sl_jw_str(&w, "verdict", verdict);
	if (c->x.handler[0])
		sl_jw_str(&w, "handler", c->x.handler);
	if (reason)
		sl_jw_str(&w, "reason", reason);
	if (c->x.refused[0]) {
		sl_jw_int(&w, "refused_status", c->x.refused_status);
		if (reason != c->x.refused)
			sl_jw_str(&w, "refused", c->x.refused);
	}
	if (audit)
		sl_jw_str(&w, "mode", "audit");
	sl_jw_publish(&w, l->px->events, l->ops->name(l->owner));
}

/* ---- connection life ---- */

void px_clear_masks(struct pconn *c)
{
	for (size_t i = 0; i < c->x.nmask; i++) {
		OPENSSL_cleanse(c->x.masks[i].s, c->x.masks[i].n);
		free(c->x.masks[i].s);
	}
	c->x.nmask = c->x.mask_longest = 0;
	sl_buf_reset(&c->x.mcarry);
}

/* The request ends without its handler: tell it, and forget it. */
void px_handler_abort(struct pconn *c, const char *why)
{
	const struct sl_px_handler *h = c->x.h;

	c->x.h = NULL;
	c->x.hw = HW_NONE;
	if (h)
		h->abort(c->x.hctx, why);
}

void px_dec_free(struct pconn *c)
{
	if (c->x.dec)
		sl_inflate_free(c->x.dec);
	free(c->x.dec);
	c->x.dec = NULL;
	c->x.dec_paused = 0;
}

/* ---- requests and their handlers ---- */

static void forward(struct pconn *c)
{
	c->x.rq = RQ_CONNECT;
	if (px_start_upstream(c))
		px_respond_error(c, 502, "connecting to the upstream failed", "error");
	else if (c->up == UP_READY)
		px_upstream_ready(c);
}

/* The head is complete: the sandbox's handler takes the request, or it goes upstream as is. */
void px_decide(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;

	c->x.decided = 1;
	c->x.hseq++;
	if (l->ops->handle && !l->ops->handle(l->owner, &c->x))
		return;
	forward(c);
}

void px_handler_resume(struct pconn *c)
{
	c->x.hseq++;
	if (c->x.h)
		c->x.h->resume(c->x.hctx);
}

/* Ends the handler's part in the request (it called one of the endings). */
static void handler_done(struct pconn *c)
{
	c->x.h = NULL;
	c->x.hw = HW_NONE;
	c->x.hseq++;
}

static void mask_bytes(const struct pconn *c, char *p, size_t n)
{
	for (size_t i = 0; i < c->x.nmask; i++) {
		const struct mask *m = &c->x.masks[i];
		char *q = p;

		while ((size_t)(p + n - q) >= m->n && (q = memmem(q, p + n - q, m->s, m->n))) {
			memset(q, '*', m->n);
			q += m->n;
		}
	}
}

void px_mask_msg(const struct pconn *c, struct sl_http_msg *m)
{
	if (!c->x.nmask)
		return;
	for (size_t i = 0; i < m->nh; i++)
		mask_bytes(c, m->h[i].value, strlen(m->h[i].value));
	if (m->reason)
		mask_bytes(c, m->reason, strlen(m->reason));
}

/* Response body bytes to the client with every mask applied. The last (longest mask - 1)
 * bytes are held back until more arrive, so that a secret split across reads is caught. */
int px_write_masked(struct pconn *c, const char *at, size_t len, int last)
{
	size_t keep = last ? 0 : c->x.mask_longest - 1, n;
	char *d;

	if (len && sl_buf_append(&c->x.mcarry, at, len))
		return -1;
	d = (char *)sl_buf_head(&c->x.mcarry);
	n = sl_buf_size(&c->x.mcarry);
	mask_bytes(c, d, n);
	if (n <= keep)
		return 0;
	if (sl_http_write_body(&c->c.out, c->x.resp_body, d, n - keep))
		return -1;
	sl_buf_consume(&c->x.mcarry, n - keep);
	return 0;
}

void px_ws_mask_cb(void *arg, char *p, size_t n)
{
	mask_bytes(arg, p, n);
}

/* A 101 @m to a WebSocket request that holds masks: the frames the upstream sends will be
 * masked (ws.c). An extension it accepted anyway (it was not offered) would make them
 * opaque: refused, -1 with c->x.resp_why. */
int px_ws_begin(struct pconn *c, struct sl_http_msg *m)
{
	if (!c->x.nmask || c->x.wsm)
		return 0;
	if (sl_http_get(m, "sec-websocket-extensions")) {
		snprintf(c->x.resp_why, sizeof(c->x.resp_why),
			 "the upstream accepted a WebSocket extension nobody offered, on a "
			 "connection that carried a secret: refused");
		return -1;
	}
	c->x.wsm = calloc(1, sizeof(*c->x.wsm));
	if (!c->x.wsm) {
		snprintf(c->x.resp_why, sizeof(c->x.resp_why), "out of memory");
		return -1;
	}
	return 0;
}

int px_resp_coding(struct pconn *c, struct sl_http_msg *m)
{
	const char *ce = sl_http_get(m, "content-encoding");
	enum sl_coding k = sl_http_count(m, "content-encoding") > 1 ? SL_CODING_OTHER :
								      sl_coding_of(ce);

	c->x.coding_seen = 1;
	if (k == SL_CODING_IDENTITY || c->x.resp_body == SL_BODY_NONE)
		return 0;
	if (k == SL_CODING_OTHER || m->status == 206) {
		char coding[48];

		snprintf(coding, sizeof(coding), "%s", ce ? ce : "");
		for (char *q = coding; *q; q++)
			if ((unsigned char)*q < 0x20 || *q == '"' || *q == '\\')
				*q = '?';
		snprintf(c->x.resp_why, sizeof(c->x.resp_why),
			 "the upstream answered with Content-Encoding %s%s, which sluice cannot "
			 "decode to mask the secret this request carried: refused",
			 coding, m->status == 206 ? " on a range" : "");
		return -1;
	}
	c->x.dec = calloc(1, sizeof(*c->x.dec));
	if (!c->x.dec || sl_inflate_init(c->x.dec, k)) {
		snprintf(c->x.resp_why, sizeof(c->x.resp_why), "out of memory");
		return -1;
	}
	sl_http_set(m, "content-encoding", NULL);
	sl_http_set(m, "content-length", NULL);
	c->x.resp_body = SL_BODY_CHUNKED;
	return 0;
}

/* Decodes what the decoder holds: into the handler's buffer (bounded by its maximum), or
 * masked to the client while it has room. 0 or -1 (the response fails). */
int px_dec_drain(struct pconn *c)
{
	char out[16384];

	for (;;) {
		ssize_t n;

		if (!c->x.resp_buffer && sl_buf_size(&c->c.out) >= BUF_LIMIT)
			return 0;
		n = sl_inflate_run(c->x.dec, out, sizeof(out));
		if (n < 0) {
			snprintf(c->x.resp_why, sizeof(c->x.resp_why),
				 "the upstream's body is not the %s it is labelled",
				 c->x.dec->coding == SL_CODING_GZIP ? "gzip" : "deflate");
			return -1;
		}
		if (c->x.resp_buffer) {
			if (sl_buf_size(&c->x.respbody) + n > c->x.resp_max) {
				c->x.resp_too_big = 1;
				c->l->stats.limit_resp_body++;
				return -1;
			}
			if (!px_within_budget(c, (size_t)n)) {
				snprintf(c->x.resp_why, sizeof(c->x.resp_why), "%s", OVER_BUDGET);
				return -1;
			}
			if (sl_buf_append(&c->x.respbody, out, n))
				return -1;
		} else if (n && px_write_masked(c, out, n, 0)) {
			return -1;
		}
		if (!sl_inflate_pending(c->x.dec))
			return 0;
	}
}

void sl_px_x_attach(struct sl_px_xchg *x, const struct sl_px_handler *h, void *hctx)
{
	struct pconn *c = x->conn;

	c->x.h = h;
	c->x.hctx = hctx;
}

void sl_px_x_info(struct sl_px_xchg *x, struct sl_px_info *info)
{
	struct pconn *c = x->conn;

	info->sandbox = c->l->ops->name(c->l->owner);
	info->pid = c->orig.pid;
	info->comm = c->comm;
	info->scheme = c->tls ? "https" : "http";
	info->host = c->name;
	info->sni = c->tls ? c->name : "";
	info->dst = (const struct sockaddr *)&c->dst;
	info->audit = c->l->ops->audit && c->l->ops->audit(c->l->owner);
}

struct sl_http_msg *sl_px_x_req(struct sl_px_xchg *x)
{
	return &x->req;
}

const char *sl_px_x_path(struct sl_px_xchg *x)
{
	return x->path;
}

int sl_px_x_set_path(struct sl_px_xchg *x, const char *path)
{
	struct pconn *c = x->conn;
	char *p;

	if (c->x.fetched)
		return -EALREADY;
	if (path[0] != '/' || strlen(path) > 8192)
		return -EINVAL;
	for (const char *q = path; *q; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '#')
			return -EINVAL;
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	free(c->x.path);
	c->x.path = p;
	return 0;
}

int sl_px_x_set_method(struct sl_px_xchg *x, const char *method)
{
	struct pconn *c = x->conn;

	if (c->x.fetched)
		return -EALREADY;
	if (strlen(method) >= sizeof(c->x.req.method) || !sl_http_valid_name(method) ||
	    !strcasecmp(method, "CONNECT") || !strcasecmp(method, "TRACE"))
		return -EINVAL;
	snprintf(c->x.req.method, sizeof(c->x.req.method), "%s", method);
	return 0;
}

int sl_px_x_read_body(struct sl_px_xchg *x, size_t max)
{
	struct pconn *c = x->conn;

	if (c->x.req_complete_seen || c->x.req_body_set || c->x.req_body == SL_BODY_NONE)
		return 1;
	if (c->x.fetched)
		return -EALREADY; /* it streams upstream already */
	if (c->x.hw != HW_NONE)
		return -EBUSY;
	c->x.req_buffer = 1;
	c->x.req_max = max;
	c->x.hw = HW_REQ_BODY;
	c->x.hseq++;
	c->proto->wake(&c->x, PX_REQ);
	return 0;
}

const char *sl_px_x_body(struct sl_px_xchg *x, size_t *len)
{
	struct pconn *c = x->conn;

	*len = sl_buf_size(&c->x.reqbody);
	return *len ? sl_buf_head(&c->x.reqbody) : "";
}

int sl_px_x_set_body(struct sl_px_xchg *x, const char *body, size_t len)
{
	struct pconn *c = x->conn;

	if (c->x.fetched)
		return -EALREADY;
	if (c->x.hw != HW_NONE)
		return -EBUSY;
	if (len > sl_buf_size(&c->x.reqbody) &&
	    !px_within_budget(c, len - sl_buf_size(&c->x.reqbody)))
		return -ENOBUFS;
	sl_buf_reset(&c->x.reqbody);
	if (len && sl_buf_append(&c->x.reqbody, body, len))
		return -ENOMEM;
	c->x.req_body_set = 1;
	return 0;
}

int sl_px_x_fetch(struct sl_px_xchg *x)
{
	struct pconn *c = x->conn;
	int r;

	if (c->x.fetched)
		return -EALREADY;
	if (c->x.hw != HW_NONE)
		return -EBUSY;
	c->x.fetched = c->x.hold_resp = 1;
	c->x.hw = HW_RESP_HEAD;
	c->x.hseq++;
	c->x.rq = RQ_CONNECT;
	r = px_start_upstream(c);
	if (r) {
		px_close_upstream(c);
		c->x.hw = HW_NONE;
		return r;
	}
	if (c->up == UP_READY)
		px_upstream_ready(c);
	return 0;
}

struct sl_http_msg *sl_px_x_resp(struct sl_px_xchg *x)
{
	struct pconn *c = x->conn;

	return c->x.resp_held ? &c->x.resp : NULL;
}

int sl_px_x_read_resp_body(struct sl_px_xchg *x, size_t max)
{
	struct pconn *c = x->conn;

	if (!c->x.resp_held)
		return -EINVAL;
	if (c->x.resp_done || c->x.resp_body == SL_BODY_NONE || c->x.to_tunnel)
		return 1;
	if (c->x.hw != HW_NONE)
		return -EBUSY;
	c->x.resp_buffer = 1;
	c->x.resp_max = max;
	c->x.hw = HW_RESP_BODY;
	c->x.hseq++;
	c->proto->wake(&c->x, PX_RESP);
	return 0;
}

const char *sl_px_x_resp_body(struct sl_px_xchg *x, size_t *len)
{
	struct pconn *c = x->conn;

	*len = sl_buf_size(&c->x.respbody);
	return *len ? sl_buf_head(&c->x.respbody) : "";
}

int sl_px_x_set_resp_body(struct sl_px_xchg *x, const char *body, size_t len)
{
	struct pconn *c = x->conn;

	if (!c->x.resp_held || c->x.to_tunnel)
		return -EINVAL;
	if (c->x.hw != HW_NONE)
		return -EBUSY;
	if (len > sl_buf_size(&c->x.respbody) &&
	    !px_within_budget(c, len - sl_buf_size(&c->x.respbody)))
		return -ENOBUFS;
	sl_buf_reset(&c->x.respbody);
	if (len && sl_buf_append(&c->x.respbody, body, len))
		return -ENOMEM;
	c->x.resp_body_set = 1;
	return 0;
}

const struct sl_http_msg *sl_px_x_trailers(struct sl_px_xchg *x)
{
	return &x->resp_trailers;
}

int sl_px_x_set_trailers(struct sl_px_xchg *x, const struct sl_http_msg *t)
{
	if (x->resp_held && !x->resp_done && !x->resp_body_set)
		return -EBUSY;
	sl_http_msg_reset(&x->resp_trailers);
	for (size_t i = 0; t && i < t->nh; i++)
		if (sl_http_add(&x->resp_trailers, t->h[i].name, t->h[i].value))
			return -ENOMEM;
	return 0;
}

/* A whole response body made or read here goes out with its length, or chunked with the
 * trailers to a client that takes them. */
static void write_whole(struct pconn *c, struct sl_http_msg *m, struct sl_buf *body, int close)
{
	char n[24];
	int nobody = !strcmp(c->x.req.method, "HEAD") || m->status == 204 || m->status == 304;

	px_mask_msg(c, m);
	mask_bytes(c, (char *)sl_buf_head(body), sl_buf_size(body));
	snprintf(n, sizeof(n), "%zu", sl_buf_size(body));
	if (!nobody && c->x.resp_trailers.nh && c->x.te_trailers) {
		px_mask_msg(c, &c->x.resp_trailers);
		sl_http_set(m, "content-length", NULL);
		sl_http_write_response(m, SL_BODY_CHUNKED, NULL, close, &c->c.out);
		sl_http_write_body(&c->c.out, SL_BODY_CHUNKED, sl_buf_head(body),
				   sl_buf_size(body));
		sl_http_write_trailers(&c->c.out, &c->x.resp_trailers);
		c->x.resp_head_sent = 1;
		c->x.resp_bytes = sl_buf_size(body);
		return;
	}
	if (m->status == 204 || m->status == 304) {
		sl_http_set(m, "content-length", NULL);
		sl_http_write_response(m, SL_BODY_NONE, NULL, close, &c->c.out);
	} else {
		sl_http_set(m, "content-length", n);
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, close, &c->c.out);
	}
	if (!nobody)
		sl_buf_append(&c->c.out, sl_buf_head(body), sl_buf_size(body));
	c->x.resp_head_sent = 1;
	c->x.resp_bytes = nobody ? 0 : sl_buf_size(body);
}

void sl_px_x_send_fetched(struct sl_px_xchg *x)
{
	struct pconn *c = x->conn;
	struct sl_http_msg *m = &c->x.resp;

	handler_done(c);
	if (!c->x.resp_held) {
		px_respond_error(c, 502, "the handler returned a response it did not fetch",
				 "error");
		return;
	}
	c->x.resp_held = c->x.hold_resp = 0;
	if (c->x.nmask && !c->x.coding_seen && !c->x.to_tunnel && !c->x.resp_body_set) {
		/* The handler read a secret after the head arrived: the body must still be
		 * masked as the client will read it. */
		if (c->x.resp_done ?
			    sl_coding_of(sl_http_get(m, "content-encoding")) != SL_CODING_IDENTITY :
			    px_resp_coding(c, m)) {
			px_respond_error(c, 502,
					 c->x.resp_why[0] ? c->x.resp_why :
							    "the response is encoded and was read "
							    "before a secret: refused",
					 "error");
			return;
		}
	}
	if (c->x.to_tunnel) {
		if (px_ws_begin(c, m)) {
			px_respond_error(c, 502, c->x.resp_why, "error");
			return;
		}
		px_mask_msg(c, m);
		sl_http_write_response(m, SL_BODY_NONE, "websocket", 0, &c->c.out);
		c->x.resp_head_sent = 1;
		c->proto->wake(&c->x, PX_RESP);
		return;
	}
	if (c->x.resp_body_set || c->x.resp_done) {
		if (!c->x.resp_done)
			px_close_upstream(c); /* the rest of the upstream's body is not wanted */
		write_whole(c, m, &c->x.respbody, c->close_after);
		sl_buf_free(&c->x.respbody); /* it waits in c->c.out now (and counts there) */
		px_finish_request(c);
		return;
	}
	px_mask_msg(c, m);
	if (c->x.resp_body == SL_BODY_NONE && sl_http_get(m, "content-length") &&
	    !strcmp(c->x.req.method, "HEAD"))
		sl_http_write_response(m, SL_BODY_LENGTH, NULL, c->close_after, &c->c.out);
	else
		sl_http_write_response(m, c->x.resp_body, NULL, c->close_after, &c->c.out);
	c->x.resp_head_sent = 1;
	c->proto->wake(&c->x, PX_RESP);
}

/*
 * Audit mode's dry run (proxy.h): the handler of @c refused its request, answering @status
 * itself or failing (@why). The refusal is recorded in the request's event and audit record,
 * and the request goes on as the handler left it (its edits and injected credentials
 * included): upstream now, or, if the handler fetched it already, with the response it got.
 * Returns 1 if it went on, 0 if the refusal stands (enforce mode; no handler; the fetch itself
 * failed; a secret the handler read would go out in clear text, which audit mode never lets
 * through).
 */
static int dry_run(struct pconn *c, int status, const char *why)
{
	struct sl_proxy_listener *l = c->l;

	if (!c->x.h || !l->ops->audit || !l->ops->audit(l->owner))
		return 0;
	if ((c->x.fetched && !c->x.resp_held) || sl_px_x_cleartext_secret(&c->x))
		return 0;
	snprintf(c->x.refused, sizeof(c->x.refused), "%s", why);
	mask_bytes(c, c->x.refused, strlen(c->x.refused));
	c->x.refused_status = status;
	if (c->x.resp_held) {
		sl_px_x_send_fetched(&c->x);
		return 1;
	}
	handler_done(c);
	forward(c);
	return 1;
}

void sl_px_x_send(struct sl_px_xchg *x, int status, const struct sl_http_msg *headers,
		  const char *body, size_t len)
{
	struct pconn *c = x->conn;
	int keep = !c->close_after && !c->c.eof &&
		   (c->x.req_complete_seen || c->x.rq == RQ_DONE ||
		    (c->x.req_body == SL_BODY_NONE && !c->x.req_body_set));
	struct sl_http_msg m;
	struct sl_buf b = { 0 };

	if (status >= 400) {
		char why[160];

		snprintf(why, sizeof(why), "the policy's handler %s answered %d", c->x.handler,
			 status);
		if (dry_run(c, status, why))
			return;
	}
	handler_done(c);
	if (c->x.fetched && !(c->x.resp_done && c->x.rq == RQ_DONE))
		px_close_upstream(c); /* mid-exchange: it cannot be reused */
	c->x.resp_held = c->x.hold_resp = 0;
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
			 c->x.handler[0] ? c->x.handler : "", status);
		px_refusal_text(c, status, why, text, sizeof(text));
		sl_buf_printf(&b, "%s\n", text);
		if (!sl_http_get(&m, "content-type"))
			sl_http_add(&m, "content-type", "text/plain; charset=utf-8");
	}
	write_whole(c, &m, &b, !keep);
	sl_http_msg_free(&m);
	sl_buf_free(&b);
	px_request_event(c, status, "respond", NULL);
	if (!keep) {
		c->st = C_CLOSING;
		return;
	}
	if (c->x.req_complete_seen || c->x.rq == RQ_DONE) {
		px_next_request(c);
		return;
	}
	/* The request's end (a GET's completion, a body being sent) is still to be parsed:
	 * read and drop it, then take the next request. */
	c->x.local = c->x.req_discard = 1;
	if (c->x.rq < RQ_BODY)
		c->proto->wake(&c->x, PX_REQ);
	c->x.rq = RQ_BODY;
}

void sl_px_x_fail(struct sl_px_xchg *x, int status, const char *why)
{
	struct pconn *c = x->conn;

	if (dry_run(c, status, why))
		return;
	handler_done(c);
	px_respond_error(c, status, why, "error");
}

void sl_px_x_count_limit(struct sl_px_xchg *x, enum sl_px_limit which)
{
	struct sl_proxy_stats *st = &x->conn->l->stats;

	if (which == SL_PX_LIMIT_LUA_MEM)
		st->limit_lua_mem++;
	else
		st->limit_lua_insns++;
}

int sl_px_x_mask(struct sl_px_xchg *x, const char *secret, size_t len)
{
	struct pconn *c = x->conn;
	struct mask *m;

	if (len < MASK_LEN_MIN || len > MASK_LEN_MAX)
		return 0;
	for (size_t i = 0; i < c->x.nmask; i++)
		if (c->x.masks[i].n == len && !memcmp(c->x.masks[i].s, secret, len))
			return 0;
	if (c->x.nmask == MASK_MAX)
		return -ENOSPC;
	m = &c->x.masks[c->x.nmask];
	m->s = malloc(len);
	if (!m->s)
		return -ENOMEM;
	memcpy(m->s, secret, len);
	m->n = len;
	c->x.nmask++;
	if (len > c->x.mask_longest)
		c->x.mask_longest = len;
	return 0;
}

static int has_mask(const struct pconn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < c->x.nmask; i++)
		if (n >= c->x.masks[i].n && memmem(p, n, c->x.masks[i].s, c->x.masks[i].n))
			return 1;
	return 0;
}

int sl_px_x_cleartext_secret(struct sl_px_xchg *x)
{
	struct pconn *c = x->conn;
	const struct sl_http_msg *m = &c->x.req;
	int found;

	if (c->tls || !c->x.nmask)
		return 0;
	found = has_mask(c, m->method, strlen(m->method)) ||
		(c->x.path && has_mask(c, c->x.path, strlen(c->x.path))) ||
		(c->x.req_body_set &&
		 has_mask(c, sl_buf_head(&c->x.reqbody), sl_buf_size(&c->x.reqbody)));
	for (size_t i = 0; i < m->nh && !found; i++)
		found = has_mask(c, m->h[i].name, strlen(m->h[i].name)) ||
			has_mask(c, m->h[i].value, strlen(m->h[i].value));
	return found;
}

void sl_px_x_set_handler(struct sl_px_xchg *x, const char *name)
{
	struct pconn *c = x->conn;
	size_t n = strlen(name);

	if (n >= sizeof(c->x.handler))
		n = sizeof(c->x.handler) - 1;
	memcpy(c->x.handler, name, n);
	c->x.handler[n] = 0;
}

void sl_px_x_redact(struct sl_px_xchg *x, char *s, size_t len)
{
	mask_bytes(x->conn, s, len);
}
