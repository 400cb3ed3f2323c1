// SPDX-License-Identifier: MIT
/*
 * One client connection's life: the sniff (TLS or HTTP), the client TLS handshake, the pump
 * that moves bytes and drives the protocol, the lingering close, the body budget and
 * connection events. Loop thread only; nothing here blocks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>

#include "tls/ca.h"
#include "core/events.h"
#include "policy/policy.h"
#include "proxy/px_int.h"

/* A connection-level event (before any request: not redirected, TLS failed, ...). */
void px_conn_event(struct sl_proxy_listener *l, const struct pconn *c, const char *verdict,
		   const char *reason)
{
	json_t *j;

	if (!l->px->events)
		return;
	j = json_pack("{s:s, s:s, s:s, s:s}", "type", "http", "sandbox", l->ops->name(l->owner),
		      "verdict", verdict, "reason", reason);
	if (j && l->ops->audit && l->ops->audit(l->owner))
		json_object_set_new(j, "mode", json_string("audit"));
	if (j && c) {
		json_object_set_new(j, "pid", json_integer(c->orig.pid));
		json_object_set_new(j, "comm", json_string(c->comm));
		if (c->name[0])
			json_object_set_new(j, "host", json_string(c->name));
		if (c->h2 || c->h2s)
			json_object_set_new(j, "proto", json_string("h2"));
		else if (c->st == C_HTTP)
			json_object_set_new(j, "proto", json_string("h1"));
	}
	sl_events_publish(l->px->events, l->ops->name(l->owner), j);
}

void px_conn_free(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;

	px_handler_abort(c, "the connection ended");
	if (c->h2s)
		px_h2_stream_gone(c); /* its last bytes, and the end of its stream */
	if (c->ksplice)
		sl_splice_part(l->px->splice, &c->kpair);
	sl_timer_disarm(l->px->loop, &c->ktimer);
	sl_list_del(&c->link);
	l->stats.active--;
	px_total_put(l->px->total);
	l->stats.body_bytes -= c->charged;
	if (c->st == C_HTTP && c->x.rq == RQ_IDLE)
		px_pool_put(c); /* a clean idle upstream outlives its client */
	if (c->h2u)
		px_h2up_detach(c);
	if (c->c.fd >= 0)
		sl_loop_del_fd(l->px->loop, c->c.fd);
	if (c->u.fd >= 0)
		sl_loop_del_fd(l->px->loop, c->u.fd);
	sl_stream_close(&c->c);
	sl_stream_close(&c->u);
	c->proto->release(c);
	sl_http_msg_free(&c->x.req);
	sl_http_msg_free(&c->x.resp);
	sl_http_msg_free(&c->x.req_trailers);
	sl_http_msg_free(&c->x.resp_trailers);
	free(c->x.path);
	px_clear_masks(c);
	sl_buf_free(&c->x.mcarry);
	px_dec_free(c);
	if (c->x.wsm)
		sl_ws_mask_free(c->x.wsm);
	free(c->x.wsm);
	sl_buf_free(&c->x.reqbody);
	sl_buf_free(&c->x.respbody);
	free(c);
}

/* Ends the connection: now, or when the outermost px_pump() (or an HTTP/2 kick, px_h2.c)
 * on the stack returns: @c->busy counts them. Callers must not touch @c after it unless they
 * are inside px_pump() (which checks @c->dead). */
void px_conn_close(struct pconn *c)
{
	c->dead = 1;
	if (!c->busy)
		px_conn_free(c);
}

/* The body of an answer made here: a program (or the person reading its error) learns that
 * sluice answered, for which sandbox, and why; never a secret or the policy's text. */
void px_refusal_text(struct pconn *c, int status, const char *why, char *out, size_t len)
{
	const char *box = c->l->ops->name(c->l->owner);

	if (status < 500)
		snprintf(out, len, "sluice refused this request (sandbox %s): %s", box, why);
	else
		snprintf(out, len, "sluice (sandbox %s): %s", box, why);
}

/* Answers the current request here and closes the connection after it. */
void px_respond_error(struct pconn *c, int status, const char *why, const char *verdict)
{
	char body[512];

	if (c->spliced) {
		/* Nothing to answer in: the client speaks TLS with the upstream itself. */
		c->l->stats.upstream_errors++;
		px_conn_event(c->l, c, "error", why);
		px_close_upstream(c);
		c->c.err = 1;
		c->st = C_CLOSING;
		return;
	}
	px_handler_abort(c, why);
	px_refusal_text(c, status, why, body, sizeof(body));
	if (c->x.resp_head_sent) {
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
	px_request_event(c, status, verdict, why);
	px_close_upstream(c);
	c->st = C_CLOSING;
}

/*
 * The response @m (a final head, not yet written) of a request that holds masks: its body
 * must reach the masks as the bytes the client will read. gzip and deflate are decoded
 * (the head loses Content-Encoding and Content-Length and goes chunked); a coding sluice
 * cannot decode (br, zstd, stacked codings), or a coded range, is refused: -1 with
 * c->x.resp_why set. The request's Accept-Encoding asked for neither (req_headers_complete),
 * so only an upstream that ignores it lands there.
 */
/* Bytes @c holds whole for its handler: bodies read or set, and such a body queued at once
 * past the streaming bounds (a whole response written, a whole request sent). */
static size_t held_bytes(const struct pconn *c)
{
	size_t cout = sl_buf_size(&c->c.out), uout = sl_buf_size(&c->u.out);

	return sl_buf_size(&c->x.reqbody) + sl_buf_size(&c->x.respbody) +
	       (cout > 2 * BUF_LIMIT ? cout : 0) + (uout > 2 * BUF_LIMIT ? uout : 0);
}

/* Whether @more bytes on top of what @c holds stay within its sandbox's body budget: every
 * connection may read a body up to its own bound, but not all of them at once (F12). */
int px_within_budget(struct pconn *c, size_t more)
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
	trim(&c->x.reqbody);
	trim(&c->x.respbody);
	trim(&c->x.mcarry);
}

static int client_handshake(struct pconn *c)
{
	int r;

	ERR_clear_error();
	r = SSL_accept(c->c.ssl);
	if (r == 1) {
		const unsigned char *alpn;
		unsigned alen;

		c->st = C_HTTP;
		sl_stream_accepted(&c->c);
		if (SSL_session_reused(c->c.ssl))
			c->l->stats.tls_resumed++;
		SSL_get0_alpn_selected(c->c.ssl, &alpn, &alen);
		if (alen == 2 && !memcmp(alpn, "h2", 2))
			px_h2_begin(c);
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
		px_conn_event(c->l, c, "error", why);
	}
	return -1;
}

static void update_events(struct pconn *c)
{
	struct sl_loop *loop = c->l->px->loop;
	unsigned ce = 0, ue = 0;

	if (c->ksplice)
		return; /* px_ksplice_pump() decides */
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
	if (c->c.fd >= 0)
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

/*
 * After the answer that ends a connection: our direction is closed (close_notify, FIN) and
 * what the client still sends, typically the rest of a body we refused, is read and dropped
 * until it closes too, for at most LINGER_MS and LINGER_BYTES. Closing with unread bytes
 * would make the kernel answer them with a reset, which can destroy our answer before the
 * client reads it (what nginx's lingering_close is for), unless the client asked to close
 * after a request it sent whole (c->drained). Returns whether to go on.
 */
static int linger(struct pconn *c)
{
	if (!c->lingering) {
		if (c->c.eof)
			return 0;
		if (c->drained) {
			/* Nothing will come (px_finish_request()): close_notify, and close() sends
			 * the FIN. Saves a shutdown() and a wake-up for the client's FIN (about
			 * 1% of a new connection's CPU). */
			sl_stream_close_notify(&c->c);
			return 0;
		}
		c->lingering = 1;
		sl_stream_shutdown(&c->c);
		c->deadline_ms = sl_now_ms() + LINGER_MS;
	}
	sl_stream_read(&c->c, BUF_LIMIT);
	c->linger_bytes += sl_buf_size(&c->c.in);
	sl_buf_reset(&c->c.in);
	return !c->c.eof && !c->c.err && c->linger_bytes < LINGER_BYTES;
}

/* Writes what the client is owed: to its socket, or, for an HTTP/2 stream connection, to
 * its stream (which takes what it has room for). */
static void flush_client(struct pconn *c)
{
	if (c->h2s) {
		px_h2_stream_out(c);
	} else if (c->c.fd < 0) {
		/* a stream connection whose stream ended: nobody to answer */
		sl_buf_reset(&c->c.out);
		c->c.err = 1;
	} else {
		sl_stream_flush(&c->c);
	}
}

/* Moves everything that can move; runs until nothing does. May end @c. */
void px_pump(struct pconn *c)
{
	c->busy++;
	for (int round = 0; round < 64 && !c->dead; round++) {
		uint64_t before = c->c.rx + c->c.tx + c->u.rx + c->u.tx;
		unsigned hseq = c->x.hseq;
		enum cstate st = c->st;
		enum rqstate rq = c->x.rq;
		enum upstate up = c->up;

		if (c->ksplice) {
			px_ksplice_pump(c);
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
				px_conn_close(c);
				break;
			}
			if (!r)
				break;
		}
		if (c->st == C_CLOSING) {
			flush_client(c);
			if (c->c.fd < 0) {
				/* a stream connection: done once its stream took the answer */
				if (c->c.err || !sl_buf_size(&c->c.out))
					px_conn_close(c);
				break;
			}
			if (c->c.err || (!sl_buf_size(&c->c.out) && !linger(c)))
				px_conn_close(c);
			break;
		}
		if (c->up == UP_CONNECTING || c->up == UP_HANDSHAKE) {
			if (px_upstream_progress(c))
				continue;
			if (c->up == UP_READY && c->st == C_HTTP && c->x.rq == RQ_CONNECT)
				px_upstream_ready(c);
			if (c->up == UP_READY && c->spliced) {
				px_ksplice_begin(c);
				continue;
			}
		}
		sl_stream_read(&c->c, BUF_LIMIT);
		if (c->u.fd >= 0 && c->up == UP_READY)
			sl_stream_read(&c->u, BUF_LIMIT);
		else if (c->h2u)
			px_h2up_pump(c);
		if (c->st == C_TUNNEL) {
			if (px_handle_tunnel(c) < 0) {
				px_conn_close(c);
				break;
			}
		} else {
			c->proto->recv(c);
			if (c->st == C_HTTP)
				c->proto->send(c);
		}
		if (c->dead)
			break;
		if (c->u.fd >= 0 && c->up == UP_READY)
			sl_stream_flush(&c->u);
		else if (c->h2u)
			px_h2up_pump(c);
		/* The client's bytes go out when the pump settles (below), so that a response's
		 * head and body share a TLS record and a write(), unless a record's worth is
		 * waiting already. */
		if (sl_buf_size(&c->c.out) >= FLUSH_AT)
			flush_client(c);
		if (c->st == C_HTTP) {
			/* The client went away: nothing left to answer (a response in flight
			 * to a half-closed client is still delivered). */
			if (c->c.err ||
			    (c->c.eof && c->x.rq <= RQ_HEAD && !sl_buf_size(&c->c.in))) {
				px_conn_close(c);
				break;
			}
			if (c->u.err && c->x.rq >= RQ_BODY) {
				px_respond_error(c, 502, "the upstream connection failed", "error");
				continue;
			}
			if (c->c.eof && c->x.rq > RQ_HEAD && c->x.rq < RQ_DONE &&
			    !sl_buf_size(&c->c.in)) {
				px_conn_close(c); /* the request body was cut short */
				break;
			}
		}
		if (c->st == C_HTTP && c->x.rq <= RQ_HEAD && c->u.fd >= 0 &&
		    (c->u.eof || c->u.err || sl_buf_size(&c->u.in)))
			px_close_upstream(c); /* the idle upstream closed, or spoke out of turn */
		if (c->c.rx + c->c.tx + c->u.rx + c->u.tx != before) {
			if (c->x.rq >= RQ_BODY || c->st == C_TUNNEL)
				c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
			continue;
		}
		if (c->st == st && c->x.rq == rq && c->up == up && c->x.hseq == hseq)
			break;
	}
	if (c->busy == 1 && !c->dead && !c->ksplice && c->st != C_SNIFF && c->st != C_HANDSHAKE) {
		flush_client(c);
		if (c->c.err)
			c->dead = 1;
	}
	if (--c->busy)
		return;
	if (c->dead) {
		px_conn_free(c);
		return;
	}
	if (c->st == C_HTTP && c->x.rq == RQ_IDLE)
		trim_idle(c);
	account(c);
	update_events(c);
}

void px_conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct pconn *c = arg;

	(void)loop;
	if (events & (SL_READ | SL_HUP)) {
		if (fd == c->c.fd)
			c->c.readable = 1;
		else if (fd == c->u.fd)
			c->u.readable = 1;
	}
	px_pump(c);
}

/* Refuses @c at the sniff with @why. */
static void sniff_refuse(struct pconn *c, const char *why)
{
	struct sl_proxy_listener *l = c->l;

	if (l->ops->audit && l->ops->audit(l->owner)) {
		/* Audit mode: what the policy refuses here goes on, relayed untouched to where
		 * the sandbox was going (the peeked bytes are still in the socket). */
		px_conn_event(l, c, "audit", why);
		if (l->ops->observe)
			l->ops->observe(l->owner, NULL, c->name, NULL, ntohs(c->orig.orig_port), 0,
					NULL);
		if (px_start_splice(c))
			px_conn_close(c);
		return;
	}
	c->l->stats.refused++;
	px_conn_event(c->l, c, "reject", why);
	px_conn_close(c);
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
		px_conn_close(c);
		return;
	}
	if (n < 0)
		return;
	/* HTTP/2 with prior knowledge (RFC 9113 section 3.3) on an intercepted cleartext port:
	 * the preface, then frames; each stream's :authority is judged as a Host would be. */
	r = px_h2_preface(buf, n);
	if (r == -EAGAIN)
		return;
	if (r == 1) {
		c->st = C_HTTP;
		c->tls = 0;
		px_h2_begin(c);
		return;
	}
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
		else if (!l->ops->resolved_at(l->owner, c->name, c->dst_family, c->dst_addr, port))
			sniff_refuse(c, "passthrough refused: the TLS server name did not resolve "
					"to this address and port for this sandbox");
		else if (px_start_splice(c))
			px_conn_close(c);
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
		px_conn_event(l, c, "error", "minting a certificate failed");
		px_conn_close(c);
		return;
	}
	sl_tls_watch_client(c->c.ssl);
	SSL_set_accept_state(c->c.ssl);
	c->st = C_HANDSHAKE;
}
