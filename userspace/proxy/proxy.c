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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include "core/log.h"
#include "policy/policy.h"
#include "proxy/px_int.h"

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

/*
 * Whether the client of a connection still in the listen queue has closed it: its kernel record
 * went with it (sl_sockops removes it on TCP_CLOSE, which an orphaned socket reaches as soon as
 * its FIN is acknowledged), so a missing record is no sign of a connection the kernel did not
 * redirect. Nobody is left to answer.
 */
static int client_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void close_shared(struct sl_proxy *px);

/* The listener of sandbox @id on the shared listener, or NULL. */
static struct sl_proxy_listener *shared_listener(struct sl_proxy *px, uint32_t id)
{
	return sl_idtab_get(&px->sharers, id);
}

/* Accepts the connections waiting on @fd, a socket of @arg: a sandbox's listener, or the holder
 * of the shared sockets, whose connections go each to the listener of the sandbox the egress
 * program recorded for its SYN (sl_accepts). */
static void accept_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct sl_proxy_listener *h = arg;
	int shared = h == h->px->shared;

	(void)events;
	for (int i = 0; i < 64; i++) {
		struct sl_proxy_listener *l = h;
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		struct sl_sockorig orig;
		uint8_t addr[16] = { 0 };
		uint32_t id = 0;
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
			if (cfd < 0 || shared)
				return; /* a shared listener's connection is nobody's to report */
			l->stats.limit_fds++;
			px_conn_event(l, NULL, "reject", "sluiced is out of file descriptors");
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
		if (shared &&
		    (sl_bpf_take_accept(h->px->bpf, peer.ss_family, addr, port, h->port, &id) ||
		     !(l = shared_listener(h->px, id)))) {
			close(cfd); /* the kernel sent it no sandbox's way */
			continue;
		}
		/* Only what the kernel redirected, for this sandbox, is served. */
		if (sl_bpf_take_proxied(l->px->bpf, l->ops->id(l->owner), l->netns_cookie,
					peer.ss_family, addr, port, &orig) ||
		    orig.sandbox_id != l->ops->id(l->owner)) {
			if (!client_gone(cfd)) {
				l->stats.unredirected++;
				px_conn_event(l, NULL, "reject",
					      "connection not redirected by the kernel");
			}
			close(cfd);
			continue;
		}
		if (l->stats.active >= l->px->o.max_conns) {
			l->stats.refused++;
			l->stats.limit_conns++;
			px_conn_event(l, NULL, "reject",
				      "too many connections for this sandbox (--http-max-conns)");
			close(cfd);
			continue;
		}
		if (px_total_take(l->px->total, l->px->o.max_conns_total)) {
			l->stats.refused++;
			l->stats.limit_conns_total++;
			px_conn_event(l, NULL, "reject",
				      "too many connections of all sandboxes "
				      "(--http-max-conns-total)");
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			px_total_put(l->px->total);
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		c->l = l;
		sl_list_init(&c->link);
		c->x.conn = c;
		sl_stream_init(&c->c);
		sl_stream_init(&c->u);
		c->c.fd = cfd;
		c->orig = orig;
		memcpy(c->comm, orig.comm, 16);
		for (char *p = c->comm; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				*p = '?';
		sockaddr_from(c);
		sl_http_msg_init(&c->x.req);
		sl_http_msg_init(&c->x.resp);
		c->proto = &px_h1_proto;
		c->proto->init(c);
		c->deadline_ms = sl_now_ms() + l->px->o.header_timeout_ms;
		if (sl_loop_add_fd(loop, cfd, SL_READ, px_conn_cb, c)) {
			px_total_put(l->px->total);
			close(cfd);
			free(c);
			continue;
		}
		sl_list_add(&l->conns, &c->link);
		l->stats.conns++;
		l->stats.active++;
		/* The client writes its first bytes right after connect(): they are often here
		 * already, and a name-checked passthrough should not wait a loop turn for them. */
		c->c.readable = 1;
		px_pump(c);
	}
}

/* Deadlines: slow heads (408), upstream connects (504), stalled transfers, idle pool. */
static void sweep_cb(struct sl_loop *loop, struct sl_timer *t)
{
	struct sl_proxy_listener *l = sl_container_of(t, struct sl_proxy_listener, sweep);
	uint64_t now = sl_now_ms();
	struct pconn *c, *next;
	struct upconn *u, *un;

	sl_list_for_each_safe(c, next, &l->conns, link) {
		if (c->dead || now < c->deadline_ms)
			continue;
		if (c->st == C_HTTP && c->x.rq == RQ_HEAD && !c->x.resp_head_sent) {
			px_respond_error(c, 408, "the request head did not arrive in time",
					 "reject");
			px_pump(c);
		} else if (c->st == C_HTTP && c->x.rq == RQ_CONNECT) {
			px_respond_error(c, 504,
					 "the upstream did not answer the connection in time",
					 "error");
			px_pump(c);
		} else if (c->st == C_HTTP && c->x.rq == RQ_DONE && c->up == UP_READY &&
			   !c->x.resp_head_sent && !c->x.resp_done) {
			/* The request went out whole and nothing came back for the idle
			 * timeout: the client still gets an answer. */
			px_respond_error(c, 504, "the upstream did not answer in time", "error");
			px_pump(c);
		} else if (px_h2_streams(c)) {
			/* Quiet while its streams wait for their upstreams: each stream answers
			 * its own timeout (a 504), which this connection must still carry. */
			c->deadline_ms = now + l->px->o.idle_timeout_ms;
		} else {
			px_conn_close(c);
		}
	}
	sl_list_for_each_safe(u, un, &l->idle, link) {
		if (now - u->since_ms > POOL_IDLE_MS)
			px_upconn_free(u);
	}
	px_h2up_sweep(l, now, 0);
	sl_timer_arm(loop, &l->sweep, SWEEP_MS, sweep_cb);
}

struct sl_proxy *sl_proxy_new(struct sl_loop *loop, struct sl_events *events, struct sl_bpf *bpf,
			      const struct sl_proxy_opts *opts, char *err, size_t errlen)
{
	struct sl_proxy *px = calloc(1, sizeof(*px));

	if (!px) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
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
	px->total = px->o.conns_total ? px->o.conns_total : &px->active;
	if (!px->o.body_budget)
		px->o.body_budget = SL_PROXY_BODY_BUDGET;
	px->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	{
		char why[256];

		px->splice = sl_splice_open(why, sizeof(why));
		if (!px->splice)
			sl_warn("passthrough connections will be relayed by sluiced, not the "
				"kernel: %s",
				why);
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
	close_shared(px); /* its sandboxes' listeners are closed */
	free(px->sharers.v);
	if (px->spare_fd >= 0)
		close(px->spare_fd);
	free(px);
}

static struct sl_proxy_listener *listener_new(struct sl_proxy *px, const struct sl_proxy_ops *ops,
					      void *owner)
{
	struct sl_proxy_listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->px = px;
	l->ops = ops;
	l->owner = owner;
	l->fd[0] = l->fd[1] = -1;
	sl_list_init(&l->conns);
	sl_list_init(&l->idle);
	sl_list_init(&l->h2up);
	return l;
}

/* Binds and watches @l's sockets, on @want_port if it is free. Returns 0 or -errno. */
static int open_sockets(struct sl_proxy_listener *l, uint16_t want_port, int netns_fd)
{
	int r = -EADDRINUSE;

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
	for (int i = 0; !r && i < 2; i++)
		if (l->fd[i] >= 0 && sl_loop_add_fd(l->px->loop, l->fd[i], SL_READ, accept_cb, l))
			r = -EIO;
	if (r) {
		for (int i = 0; i < 2; i++) {
			if (l->fd[i] >= 0) {
				sl_loop_del_fd(l->px->loop, l->fd[i]);
				close(l->fd[i]);
			}
			l->fd[i] = -1;
		}
	}
	return r;
}

struct sl_proxy_listener *sl_proxy_listen(struct sl_proxy *px, const struct sl_proxy_ops *ops,
					  void *owner, uint16_t want_port, int netns_fd, char *err,
					  size_t errlen)
{
	struct sl_proxy_listener *l = listener_new(px, ops, owner);
	int r;

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r = open_sockets(l, want_port, netns_fd);
	if (r) {
		snprintf(err, errlen, "opening the proxy listener failed: %s", strerror(-r));
		free(l);
		return NULL;
	}
	sl_timer_arm(px->loop, &l->sweep, SWEEP_MS, sweep_cb);
	return l;
}

/* The shared sockets, on loopback of sluiced's own network namespace, with the backlog of many
 * sandboxes; held by a listener of no sandbox. Returns 0 or -errno. */
static int open_shared(struct sl_proxy *px, uint16_t want_port)
{
	struct sl_proxy_listener *h = listener_new(px, NULL, NULL);
	int r;

	if (!h)
		return -ENOMEM;
	r = open_sockets(h, want_port, -1);
	if (r) {
		free(h);
		return r;
	}
	for (int i = 0; i < 2; i++)
		if (h->fd[i] >= 0)
			listen(h->fd[i], 4096);
	px->shared = h;
	return 0;
}

/* Closes the shared sockets (their last sandbox went, or sluiced stops). */
static void close_shared(struct sl_proxy *px)
{
	sl_proxy_listener_close(px->shared);
	px->shared = NULL;
}

struct sl_proxy_listener *sl_proxy_listen_shared(struct sl_proxy *px,
						 const struct sl_proxy_ops *ops, void *owner,
						 uint32_t id, uint16_t want_port, char *err,
						 size_t errlen)
{
	struct sl_proxy_listener *l;
	int r;

	if (!id) {
		snprintf(err, errlen, "sandbox id 0 cannot share the proxy listener");
		return NULL;
	}
	l = listener_new(px, ops, owner);
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!px->shared && (r = open_shared(px, want_port))) {
		snprintf(err, errlen, "opening the shared proxy listener failed: %s", strerror(-r));
	} else if ((r = sl_idtab_put(&px->sharers, id, l))) {
		snprintf(err, errlen, "sandbox id %u cannot join the shared proxy listener: %s", id,
			 strerror(-r));
		if (!px->sharers.n)
			close_shared(px);
	}
	if (r) {
		free(l);
		return NULL;
	}
	l->port = px->shared->port;
	l->netns_cookie = px->shared->netns_cookie;
	l->shared_id = id;
	sl_timer_arm(px->loop, &l->sweep, SWEEP_MS, sweep_cb);
	return l;
}

void sl_proxy_listener_close(struct sl_proxy_listener *l)
{
	if (!l)
		return;
	while (!sl_list_empty(&l->conns)) {
		struct pconn *c = sl_list_first(&l->conns, struct pconn, link);

		px_conn_free(c); /* a handler waiting for it is told (abort) */
	}
	while (!sl_list_empty(&l->idle))
		px_upconn_free(sl_list_first(&l->idle, struct upconn, link));
	px_h2up_sweep(l, 0, 1);
	for (int i = 0; i < 2; i++) {
		if (l->fd[i] >= 0) {
			sl_loop_del_fd(l->px->loop, l->fd[i]);
			close(l->fd[i]);
		}
	}
	sl_timer_disarm(l->px->loop, &l->sweep);
	if (l->shared_id) {
		sl_idtab_del(&l->px->sharers, l->shared_id);
		if (!l->px->sharers.n)
			close_shared(l->px);
	}
	free(l);
}

size_t sl_proxy_listener_revalidate(struct sl_proxy_listener *l)
{
	size_t closed = 0;
	struct pconn *c, *next;
	struct upconn *u, *un;

	sl_list_for_each_safe(c, next, &l->conns, link) {
		int v;

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
			/* Still served, but an HTTP/2 connection's next stream must meet the new
			 * handler on a connection that never saw the old one: GOAWAY lets the
			 * streams in flight finish and sends the client to a new connection
			 * (RFC 9113 section 6.8). HTTP/1 takes the handler per request. */
			if (c->h2 && px_h2_goaway(c))
				px_conn_event(l, c, "goaway",
					      "the sandbox's handler or policy changed");
			continue;
		}
		px_conn_event(l, c, "closed", "the sandbox's policy no longer allows this host");
		closed++;
		px_conn_close(c);
	}
	sl_list_for_each_safe(u, un, &l->idle, link) {
		if (l->ops->name_verdict(l->owner, u->host) != SL_VERDICT_PROXY)
			px_upconn_free(u);
	}
	px_h2up_sweep(l, sl_now_ms(), 0);
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
