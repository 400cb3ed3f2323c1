// SPDX-License-Identifier: MIT
/*
 * The upstream side: connecting to the original destination, the upstream TLS handshake
 * verified against the served name, and the per-sandbox idle pool. Loop thread only; nothing
 * here blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <openssl/err.h>

#include "core/log.h"
#include "proxy/px_int.h"

void px_close_upstream(struct pconn *c)
{
	if (c->h2u)
		px_h2up_detach(c);
	if (c->u.fd >= 0)
		sl_loop_del_fd(c->l->px->loop, c->u.fd);
	sl_stream_close(&c->u);
	c->up = UP_NONE;
}

/* ---- upstream pool ---- */

void px_upconn_free(struct upconn *u)
{
	struct sl_proxy_listener *l = u->l;

	if (sl_list_linked(&u->link)) {
		sl_list_del(&u->link);
		l->nidle--;
		l->px->nidle--;
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
	px_upconn_free(u);
}

/* Keeps the upstream connection of @c for a later request, if it is clean. */
void px_pool_put(struct pconn *c)
{
	struct sl_proxy_listener *l = c->l;
	int clean = c->u.fd >= 0 && c->up == UP_READY && !sl_buf_size(&c->u.in) &&
		    !sl_buf_size(&c->u.out) && !c->u.eof && !c->u.err &&
		    !(c->u.ssl && SSL_has_pending(c->u.ssl));
	int full = l->nidle >= POOL_MAX || l->px->nidle >= POOL_MAX_TOTAL;
	struct upconn *u;

	if (c->h2u) {
		px_close_upstream(c); /* its stream ended; its connection stays in l->h2up */
		return;
	}
	if (clean && full)
		l->stats.pool_full++;
	if (!clean || full || !(u = calloc(1, sizeof(*u)))) {
		sl_debug("proxy: not pooling the connection to %s (in %zu, eof %d, err %d)",
			 c->name, sl_buf_size(&c->u.in), c->u.eof, c->u.err);
		px_close_upstream(c);
		return;
	}
	u->l = l;
	sl_list_init(&u->link);
	u->fd = c->u.fd;
	u->ssl = c->u.ssl;
	u->tls = c->tls;
	snprintf(u->host, sizeof(u->host), "%s", c->name);
	u->dst = c->dst;
	u->dstlen = c->dstlen;
	u->since_ms = sl_now_ms();
	/* The descriptor stays in epoll, its owner changes: taking and returning a pooled
	 * connection is no system call (an HTTP/2 stream does both). */
	if (sl_loop_rebind_fd(l->px->loop, u->fd, SL_READ, pool_cb, u)) {
		sl_loop_del_fd(l->px->loop, u->fd);
		SSL_free(u->ssl);
		close(u->fd);
		free(u);
	} else {
		sl_list_add(&l->idle, &u->link);
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
	struct upconn *u;

	sl_list_for_each(u, &l->idle, link) {
		if (u->tls != c->tls || strcmp(u->host, c->name) || u->dstlen != c->dstlen ||
		    memcmp(&u->dst, &c->dst, c->dstlen))
			continue;
		sl_stream_init(&c->u);
		c->u.fd = u->fd;
		c->u.ssl = u->ssl;
		u->fd = -1;
		u->ssl = NULL;
		sl_list_del(&u->link);
		l->nidle--;
		l->px->nidle--;
		free(u);
		if (sl_loop_rebind_fd(l->px->loop, c->u.fd, SL_READ, px_conn_cb, c)) {
			sl_loop_del_fd(l->px->loop, c->u.fd);
			sl_stream_close(&c->u);
			return 0;
		}
		c->up = UP_READY;
		return 1;
	}
	return 0;
}

/* ---- upstream connection ---- */

int px_start_upstream(struct pconn *c)
{
	struct sl_proxy *px = c->l->px;
	int fd, r;

	if (c->h2u)
		px_close_upstream(c); /* the previous request's stream */
	if (c->u.fd >= 0) {
		/* Still attached from this client's previous request: same name and address
		 * (the name of a TLS connection does not change), reuse it as is. */
		if (c->up == UP_READY && !c->u.eof && !c->u.err && !sl_buf_size(&c->u.in)) {
			c->l->stats.reused++;
			return 0;
		}
		px_close_upstream(c);
	}
	if (px_h2up_take(c) || pool_take(c)) {
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
	if (sl_loop_add_fd(px->loop, fd, SL_WRITE, px_conn_cb, c))
		return -ENOMEM;
	c->up = UP_CONNECTING;
	c->deadline_ms = sl_now_ms() + px->o.connect_timeout_ms;
	return 0;
}

/* Drives the upstream connect and TLS handshake. Returns -1 if @c answered with an error. */
int px_upstream_progress(struct pconn *c)
{
	char why[512];

	if (c->up == UP_CONNECTING) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		getsockopt(c->u.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			snprintf(why, sizeof(why), "connecting to the upstream failed: %s",
				 strerror(soerr));
			px_respond_error(c, 502, why, "error");
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
			px_respond_error(c, 502, "setting up upstream TLS failed", "error");
			return -1;
		}
		/* A WebSocket handshake is HTTP/1.1's (no extended CONNECT here): h2 is not
		 * offered for it. */
		if (c->x.websocket)
			SSL_set_alpn_protos(c->u.ssl, (const unsigned char *)"\x08http/1.1", 9);
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
			/* The upstream chose h2: the socket becomes a shared HTTP/2 connection
			 * and this exchange its first stream. */
			if (px_h2up_chosen(c) && px_h2up_begin(c)) {
				px_respond_error(c, 502, "setting up HTTP/2 to the upstream failed",
						 "error");
				return -1;
			}
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
		px_respond_error(c, 502, why, "error");
		return -1;
	}
	return 0;
}

/* The upstream is ready: send the request head, then let the body flow. */
void px_upstream_ready(struct pconn *c)
{
	const char *up = c->x.websocket ? "websocket" : NULL;

	c->x.t_up_ms = sl_now_ms();
	c->deadline_ms = sl_now_ms() + c->l->px->o.idle_timeout_ms;
	c->l->stats.requests++;
	if (c->x.websocket && c->x.nmask)
		/* Frames of this WebSocket will be masked: they must stay plain bytes, so no
		 * permessage-deflate (RFC 7692) or other extension is offered upstream. */
		sl_http_set(&c->x.req, "sec-websocket-extensions", NULL);
	c->proto->resp_begin(&c->x);
	sl_http_msg_reset(&c->x.resp);
	c->x.resp_started = c->x.resp_head_sent = c->x.resp_done = c->x.interim = 0;
	px_dec_free(c);
	c->x.coding_seen = 0;
	c->x.resp_why[0] = 0;
	if (c->x.req_body_set) {
		/* The handler read or replaced the body: it goes whole, with its length. */
		char n[24];

		snprintf(n, sizeof(n), "%zu", sl_buf_size(&c->x.reqbody));
		if (sl_http_set(&c->x.req, "content-length", n) ||
		    sl_http_write_request(&c->x.req, c->x.path, SL_BODY_LENGTH, up, &c->u.out) ||
		    sl_buf_append(&c->u.out, sl_buf_head(&c->x.reqbody),
				  sl_buf_size(&c->x.reqbody)))
			c->u.err = 1;
		if (c->x.req_complete_seen) {
			c->x.rq = RQ_DONE; /* the parser waits at the end of the request */
			return;
		}
		c->x.req_discard = 1; /* what the client still sends is not what goes upstream */
	} else {
		sl_http_write_request(&c->x.req, c->x.path, c->x.req_body, up, &c->u.out);
	}
	c->x.rq = RQ_BODY;
	c->proto->wake(&c->x, PX_REQ);
}
