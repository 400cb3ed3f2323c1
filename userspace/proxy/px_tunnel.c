// SPDX-License-Identifier: MIT
/*
 * Raw relays: a WebSocket after its 101 and a name-checked TLS passthrough, which the
 * kernel carries when it can (sockhash splice) and sluiced relays otherwise. Loop thread only;
 * nothing here blocks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "proxy/px_int.h"

/* Raw bytes both ways (WebSocket after 101, or a spliced TLS passthrough). */
int px_handle_tunnel(struct pconn *c)
{
	size_t n = 0;

	if (sl_buf_size(&c->c.in) && sl_buf_size(&c->u.out) < BUF_LIMIT) {
		n += sl_buf_size(&c->c.in);
		sl_buf_append(&c->u.out, sl_buf_head(&c->c.in), sl_buf_size(&c->c.in));
		sl_buf_reset(&c->c.in);
	}
	if (sl_buf_size(&c->u.in) && sl_buf_size(&c->c.out) < BUF_LIMIT) {
		n += sl_buf_size(&c->u.in);
		if (c->x.wsm) {
			if (sl_ws_mask_feed(c->x.wsm, sl_buf_head(&c->u.in), sl_buf_size(&c->u.in),
					    c->x.mask_longest - 1, px_ws_mask_cb, c, &c->c.out))
				return -1; /* not frames a server sends: the connection ends */
		} else {
			sl_buf_append(&c->c.out, sl_buf_head(&c->u.in), sl_buf_size(&c->u.in));
		}
		sl_buf_reset(&c->u.in);
	}
	if (c->c.eof && !sl_buf_size(&c->c.in))
		sl_stream_shutdown(&c->u);
	if (c->u.eof && !sl_buf_size(&c->u.in)) {
		if (c->x.wsm && sl_ws_mask_flush(c->x.wsm, px_ws_mask_cb, c, &c->c.out))
			return -1;
		sl_stream_shutdown(&c->c);
	}
	if ((c->c.eof && c->u.eof && !sl_buf_size(&c->c.out) && !sl_buf_size(&c->u.out)) ||
	    c->c.err || c->u.err)
		return -1;
	return n ? 1 : 0;
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

static void ksplice_timer_cb(struct sl_loop *loop, struct sl_timer *t)
{
	struct pconn *c = sl_container_of(t, struct pconn, ktimer);

	(void)loop;
	px_pump(c);
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
	return queued - c->kbase[i] >=
	       c->kwrote[i] + sl_splice_moved(c->l->px->splice, &c->kpair, i);
}

/*
 * Hands a checked passthrough connection to the kernel. The client's first bytes (its
 * ClientHello) are read here; then the upstream socket and the client's go into the
 * sockhash, in that order; only then is the ClientHello written upstream, so that the
 * server's answer cannot land on a socket whose bytes are not redirected yet. Bytes the
 * client sends after our read and before its socket is in the map stay queued and are
 * redirected, in order, with the next ones. Returns 0 when the kernel carries the
 * connection, or -errno with nothing changed but the read bytes in @c->c.in (the caller
 * relays it itself then, as px_handle_tunnel() always did).
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
void px_ksplice_begin(struct pconn *c)
{
	char why[200];
	int err = ksplice_start(c);

	if (!err) {
		c->l->stats.spliced_kernel++;
		px_conn_event(c->l, c, "passthrough",
			      "TLS server name checked; spliced in the kernel");
		return;
	}
	c->l->stats.spliced_user++;
	snprintf(why, sizeof(why),
		 "TLS server name checked; relayed by sluiced (the kernel "
		 "splice failed: %s)",
		 strerror(-err));
	sl_warn("sandbox %s: %s", c->l->ops->name(c->l->owner), why);
	px_conn_event(c->l, c, "passthrough", why);
}

/*
 * A kernel-spliced connection woke us: a hang-up, or a write of ours that was pending. A
 * side whose peer finished sending has its FIN passed on once its bytes are through; when
 * both directions are finished, or on an error, both sockets close. Loop thread; may end @c.
 */
void px_ksplice_pump(struct pconn *c)
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
		px_conn_close(c);
		return;
	}
	if (!waiting) {
		c->kdrain_since_ms = 0;
	} else if (!c->kdrain_since_ms) {
		c->kdrain_since_ms = sl_now_ms();
	} else if (sl_now_ms() - c->kdrain_since_ms > KDRAIN_MS) {
		px_conn_event(c->l, c, "error", "spliced bytes still in flight after 5 s: closed");
		px_conn_close(c);
		return;
	}
	if (waiting && !sl_timer_armed(&c->ktimer))
		sl_timer_arm(loop, &c->ktimer, KDRAIN_POLL_MS, ksplice_timer_cb);
	/* Hang-ups only: the data of these sockets wakes nobody. A socket both of whose
	 * directions are done would report EPOLLHUP forever: it is not watched any more. */
	for (int i = 0; i < 2; i++) {
		struct sl_stream *s = kside(c, i);

		if (c->keof[i] && c->kshut[i])
			sl_loop_del_fd(loop, s->fd);
		else
			sl_loop_mod_fd(loop, s->fd,
				       (c->keof[i] ? 0 : SL_RDHUP) |
					       (sl_buf_size(&s->out) ? SL_WRITE : 0));
	}
}

/* ---- accepting and sniffing ---- */

int px_start_splice(struct pconn *c)
{
	/* A passthrough name whose server name was checked: relay its TLS untouched (the
	 * peeked ClientHello is still in the socket). Once the upstream is connected the
	 * kernel takes over if it can (ksplice_begin). */
	c->tls = 0;
	c->spliced = 1;
	c->st = C_TUNNEL;
	c->x.rq = RQ_DONE;
	c->l->stats.spliced++;
	return px_start_upstream(c);
}
