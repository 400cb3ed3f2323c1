// SPDX-License-Identifier: MIT
/*
 * The DNS proxy. The kernel sends every DNS query of a sandbox (UDP or TCP to port 53, any
 * address) to that sandbox's listener here, so the name policy is enforced where names are
 * resolved: a name the policy does not name is answered NXDOMAIN locally and never leaves
 * the machine (no DNS tunnelling through it); an allowed name is resolved upstream and its
 * addresses are written into the sandbox's kernel rules *before* the answer is released, so
 * a connect() right after the answer never races the map update.
 *
 * Why NXDOMAIN and not REFUSED for a denied name: REFUSED makes stub resolvers try the next
 * nameserver (which is sluice again) and some report it as a server fault; NXDOMAIN is the
 * definite "no such name" every client handles at once.
 *
 * Queries go upstream over a pool of connected UDP sockets (DNS_UP_SOCKS source ports, each
 * replaced by a fresh one after DNS_UP_REUSE queries) with a random id unique on its socket,
 * so that a query costs no socket of its own (RFC 5452 section 9: the id and the port are
 * both unpredictable; the pool is how dnsmasq and unbound spend ports too). A turn of the
 * loop sends its queries on one socket of the pool (one sendmmsg()), the next turn on the
 * next. The answers one wake-up reads have their new kernel entries written together
 * (struct sl_kbatch) before any of them is released. A query from a
 * TCP client goes upstream over a TCP connection of its own. Each query is bounded by a
 * per-listener limit and a deadline. Malformed queries get FORMERR and nothing else.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "core/addr.h"
#include "core/buf.h"
#include "core/idtab.h"
#include "dns/dns.h"
#include "core/events.h"
#include "core/list.h"
#include "core/log.h"
#include "core/loop.h"
#include "kernel/bpf_loader.h"
#include "kernel/sockets.h"

#define DNS_MAX_PENDING 512 /* queries in flight per listener */
#define DNS_MAX_TCP 64 /* TCP clients per listener */
/* ... and of all listeners: each holds a descriptor, which the proxy needs too */
#define DNS_TCP_IDLE_MS 10000
#define DNS_MSG_MAX 65535
/*
 * Per wake-up work of one descriptor, so that every sandbox gets its turn on the one loop:
 * UDP 64 datagrams; a TCP client 4 reads of 8 KiB and 64 messages; a TCP listener 16 accepts.
 * A TCP client whose answers pile up unread (more than DNS_TCP_OUT_CAP) is not read any more
 * (the kernel's socket buffers then stop its writes), and is closed when it stays so for
 * DNS_TCP_STALL_MS; one with DNS_TCP_MAX_PENDING queries upstream is not read until one is
 * answered, so that its answers in flight are bounded too.
 */
#define DNS_UDP_BATCH 64
#define DNS_TCP_READS 4
#define DNS_TCP_BATCH 64
#define DNS_ACCEPT_BATCH 16
#define DNS_TCP_OUT_CAP (64 * 1024)
#define DNS_TCP_STALL_MS 5000
#define DNS_TCP_SNDBUF (64 * 1024) /* SO_SNDBUF of a TCP client's socket */
#define DNS_TCP_MAX_PENDING 16
#define DNS_UP_SOCKS 16 /* upstream UDP sockets in use */
#define DNS_UP_REUSE 512 /* queries a socket sends before a fresh port replaces it */
#define DNS_UP_BATCH 64 /* answers read per wake-up of an upstream socket */
#define DNS_CACHE_SLOTS 32 /* answers a listener keeps (direct-mapped by name and type) */
/* Finished queries kept for reuse, per worker: no malloc per query (none under ASan, which
 * must see a query used after its end) */
#if defined(__SANITIZE_ADDRESS__)
#define DNS_QUERY_KEEP 0
#else
#define DNS_QUERY_KEEP 256
#endif
/* The tail of a struct dns_query: the forwarded query, a question of at most a 255-byte name */
#define DNS_QUERY_PKT_MAX (SL_DNS_HDR_LEN + 255 + 4 + 11)
/*
 * Datagrams go in and out in batches (recvmmsg, sendmmsg): what one wake-up reads, and what a
 * turn of the loop sends, its answers to UDP clients and its queries upstream, leave together
 * when the turn's descriptors are done (a zero-delay timer), so that 32 queries in flight cost
 * a few syscalls each way, not one per datagram. A datagram of more than DNS_DGRAM_SLOT bytes
 * is sent on its own at once.
 */
#define DNS_OUT_BATCH 64
#define DNS_DGRAM_SLOT 4096

/* One upstream UDP socket of the pool: its queries in flight, matched by id. */
struct dns_up {
	struct sl_dns *dns;
	int fd;
	unsigned uses; /* queries sent on it */
	unsigned nq;
	int retired; /* replaced in the pool: closed when its last query ends */
	int reading; /* in up_cb(): closed by it, not by query_free() */
	struct sl_list queries; /* struct dns_query.up_link */
};

struct sl_dns {
	struct sl_loop *loop;
	struct sl_events *events;
	struct sl_dns_opts o;
	unsigned npending, ntcp; /* of all listeners */
	struct dns_up *up[DNS_UP_SOCKS]; /* NULL: opened when first needed */
	unsigned up_next;
	uint16_t rnd[256]; /* random ids, taken from the end, refilled by one getrandom() */
	unsigned nrnd;
	/* Scratch of the answers of one wake-up (loop thread, never re-entered): no allocation
	 * per answer. Their new kernel entries are written together (kb) before any is sent. */
	struct sl_dns_answer answer[DNS_UP_BATCH];
	uint8_t blocked[DNS_UP_BATCH][SL_DNS_MAX_ADDRS];
	struct dns_query *batch[DNS_UP_BATCH];
	const uint8_t *batch_msg[DNS_UP_BATCH];
	size_t batch_len[DNS_UP_BATCH];
	struct sl_kbatch *kb; /* NULL without kernel maps */
	uint8_t out[DNS_MSG_MAX];
	/* Datagrams of this turn not sent yet, and the scratch of the batched reads. */
	struct {
		struct mmsghdr msg[DNS_OUT_BATCH];
		struct iovec iov[DNS_OUT_BATCH];
		struct sockaddr_storage to[DNS_OUT_BATCH];
		int fd[DNS_OUT_BATCH];
		uint8_t buf[DNS_OUT_BATCH][DNS_DGRAM_SLOT];
		unsigned n;
		struct sl_timer flush;
	} pend;
	struct mmsghdr in_msg[DNS_OUT_BATCH];
	struct iovec in_iov[DNS_OUT_BATCH];
	struct sockaddr_storage in_from[DNS_OUT_BATCH];
	uint8_t in_buf[DNS_OUT_BATCH][DNS_DGRAM_SLOT];
	uint8_t in_ctl[DNS_OUT_BATCH][CMSG_SPACE(sizeof(uint32_t))];
	/* The shared listener (sl_dns_listen_shared()): its sockets, held by a listener of no
	 * sandbox, opened with the first sandbox that shares them; and that listener of each
	 * sandbox id that shares them. */
	struct sl_dns_listener *shared;
	struct sl_idtab sharers; /* the last one gone closes it */
	struct dns_query *spare; /* finished queries to reuse (DNS_QUERY_KEEP at most) */
	unsigned nspare;
};

struct dns_tcp;

/* One query in flight upstream. Owned by its listener. */
struct dns_query {
	struct sl_dns_listener *l;
	struct sl_list link; /* in l->queries */
	/* the client: a UDP peer on one of our sockets, or a TCP connection (NULL once gone) */
	int client_fd;
	struct sockaddr_storage client;
	socklen_t client_len;
	struct dns_tcp *tcp;
	struct sl_dns_query q;
	uint16_t up_id;
	struct dns_up *up; /* the pooled socket of a UDP query, NULL for TCP */
	struct sl_list up_link; /* in up->queries */
	int up_fd; /* a TCP query's own connection */
	int up_tcp;
	struct sl_buf up_out, up_in;
	struct sl_timer timer; /* the upstream's deadline */
	int audited; /* the policy does not give the name: resolved for audit mode only */
	int answered; /* its answer is being handled (a second one is not ours) */
	int spare; /* of DNS_QUERY_PKT_MAX: it may go back to dns->spare */
	struct dns_query *next_spare;
	size_t pkt_len;
	uint8_t pkt[]; /* the query as the client sent it, id replaced by up_id */
};

/* A client on TCP: length-prefixed messages both ways (RFC 1035 section 4.2.2). */
struct dns_tcp {
	struct sl_dns_listener *l;
	struct sl_list link; /* in l->tcps */
	int fd;
	struct sl_buf in, out;
	struct sl_timer idle;
	struct sl_timer stall; /* armed while the output is above DNS_TCP_OUT_CAP */
	struct sl_timer kick; /* buffered queries to answer on the next turn of the loop */
	unsigned npending; /* queries of this client upstream */
	unsigned events; /* what the loop watches for it */
	int closing;
};

/*
 * An answer of an allowed name as it went to a client, to serve again while it is young. It
 * is kept at most --dns-grace (struct sl_dns_opts.cache_ms) and never past its smallest TTL:
 * the kernel entries it names were written when it came, to live the clamped TTL plus the
 * grace, so whoever gets it from here still has the whole clamped TTL before they expire,
 * as after a query that went upstream. Kept only for what may be asked the same way again:
 * same type, RD, CD, EDNS and DO; never a truncated answer, an audited name's, or one
 * larger than the asking client takes. A switch of the sandbox's rules empties the cache.
 */
struct dns_cached {
	char qname[SL_DNS_NAME_BUF];
	uint16_t qtype;
	uint8_t flags; /* cache_flags() of the query it answered */
	uint16_t len; /* 0: an empty slot */
	uint64_t stored_ns, expires_ns;
	/* In @mem (@cap bytes, kept when the slot empties so that the next answer stored here
	 * needs no allocation): the message (@len bytes; id and question to be replaced by the
	 * asking client's), then the JSON lists of the answer's event, for each hit's. */
	uint8_t *mem;
	size_t cap;
	char *installed, *blocked;
};

struct sl_dns_listener {
	struct sl_dns *dns;
	const struct sl_dns_ops *ops;
	void *owner;
	int udp[2], tcp[2]; /* [0] IPv4, [1] IPv6; -1 if absent */
	uint16_t port;
	struct sl_list queries;
	unsigned npending;
	struct sl_list tcps;
	unsigned ntcp;
	struct sl_timer tcp_paused; /* accepting again after running out of descriptors */
	struct dns_cached *cache; /* DNS_CACHE_SLOTS, allocated with the first answer kept */
	struct sl_dns_stats stats;
	uint32_t shared_id; /* its sandbox's id on the shared listener; 0: sockets of its own */
};

static const char *type_name(uint16_t t, char *buf, size_t len)
{
	switch (t) {
	case SL_DNS_TYPE_A:
		return "A";
	case SL_DNS_TYPE_AAAA:
		return "AAAA";
	case SL_DNS_TYPE_CNAME:
		return "CNAME";
	case SL_DNS_TYPE_MX:
		return "MX";
	case SL_DNS_TYPE_TXT:
		return "TXT";
	case SL_DNS_TYPE_PTR:
		return "PTR";
	case SL_DNS_TYPE_SRV:
		return "SRV";
	case SL_DNS_TYPE_HTTPS:
		return "HTTPS";
	case SL_DNS_TYPE_SVCB:
		return "SVCB";
	default:
		snprintf(buf, len, "TYPE%u", t);
		return buf;
	}
}

/*
 * One DNS event of the listener's sandbox, written straight into its line (core/jsonw.h): a
 * sandbox's every query has one, so a json_t built and dumped per query would cost more
 * than answering it. dns_event_begin() returns 0 when nobody takes events; otherwise the
 * caller adds its fields and ends with dns_event_end().
 */
static int dns_event_begin(struct sl_jw *w, struct sl_dns_listener *l, const struct sl_dns_query *q,
			   const char *verdict)
{
	char tbuf[16];

	if (!l->dns->events)
		return 0;
	sl_jw_begin(w);
	sl_jw_str(w, "type", "dns");
	sl_jw_str(w, "sandbox", l->ops->name(l->owner));
	sl_jw_str(w, "name", q->qname);
	sl_jw_str(w, "qtype", type_name(q->qtype, tbuf, sizeof(tbuf)));
	sl_jw_str(w, "verdict", verdict);
	if (l->ops->audit && l->ops->audit(l->owner))
		sl_jw_str(w, "mode", "audit");
	return 1;
}

static void dns_event_end(struct sl_jw *w, struct sl_dns_listener *l)
{
	sl_jw_publish(w, l->dns->events, l->ops->name(l->owner));
}

/* An event with nothing more, or a reason (may be NULL). */
static void dns_event(struct sl_dns_listener *l, const struct sl_dns_query *q, const char *verdict,
		      const char *reason)
{
	struct sl_jw w;

	if (!dns_event_begin(&w, l, q, verdict))
		return;
	if (reason)
		sl_jw_str(&w, "reason", reason);
	dns_event_end(&w, l);
}

/* An event of the listener, not of one query (a TCP client refused or closed). */
static void listener_event(struct sl_dns_listener *l, const char *verdict, const char *reason)
{
	struct sl_jw w;

	if (!l->dns->events)
		return;
	sl_jw_begin(&w);
	sl_jw_str(&w, "type", "dns");
	sl_jw_str(&w, "sandbox", l->ops->name(l->owner));
	sl_jw_str(&w, "verdict", verdict);
	sl_jw_str(&w, "reason", reason);
	if (l->ops->audit && l->ops->audit(l->owner))
		sl_jw_str(&w, "mode", "audit"); /* audit mode is loud: every event says so */
	sl_jw_publish(&w, l->dns->events, l->ops->name(l->owner));
}

/* ---- replies ---- */

static void tcp_close(struct dns_tcp *c);
static void tcp_flush(struct dns_tcp *c);
static void close_fds(struct sl_dns_listener *l);
static void close_shared(struct sl_dns *dns);

/* Sends the datagrams of this turn: one sendmmsg() per run of the same socket. A datagram
 * the kernel does not take (a full socket buffer) is dropped, as a lost one would be: UDP
 * clients retry, and a query upstream times out. */
static void dgram_flush(struct sl_dns *dns)
{
	unsigned i = 0, n = dns->pend.n;

	sl_timer_disarm(dns->loop, &dns->pend.flush);
	dns->pend.n = 0;
	dns->up_next++;
	while (i < n) {
		unsigned run = 1;
		int sent;

		while (i + run < n && dns->pend.fd[i + run] == dns->pend.fd[i])
			run++;
		sent = sendmmsg(dns->pend.fd[i], &dns->pend.msg[i], run, MSG_DONTWAIT);
		/* Past a datagram the kernel refused, try the rest once each. */
		if (sent >= 0 && (unsigned)sent < run) {
			for (unsigned k = sent + 1; k < run; k++)
				sendmsg(dns->pend.fd[i], &dns->pend.msg[i + k].msg_hdr,
					MSG_DONTWAIT);
		}
		i += run;
	}
}

static void dgram_flush_cb(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	dgram_flush(sl_container_of(t, struct sl_dns, pend.flush));
}

/* Queues a datagram to @to (NULL: the socket is connected) for the end of this turn. */
static void dgram_send(struct sl_dns *dns, int fd, const struct sockaddr *to, socklen_t tolen,
		       const uint8_t *msg, size_t len)
{
	unsigned i;

	if (len > DNS_DGRAM_SLOT || (to && tolen > sizeof(struct sockaddr_storage))) {
		sendto(fd, msg, len, MSG_DONTWAIT, to, tolen);
		return;
	}
	if (dns->pend.n == DNS_OUT_BATCH)
		dgram_flush(dns);
	i = dns->pend.n++;
	memcpy(dns->pend.buf[i], msg, len);
	dns->pend.iov[i] = (struct iovec){ dns->pend.buf[i], len };
	dns->pend.fd[i] = fd;
	memset(&dns->pend.msg[i], 0, sizeof(dns->pend.msg[i]));
	dns->pend.msg[i].msg_hdr.msg_iov = &dns->pend.iov[i];
	dns->pend.msg[i].msg_hdr.msg_iovlen = 1;
	if (to) {
		memcpy(&dns->pend.to[i], to, tolen);
		dns->pend.msg[i].msg_hdr.msg_name = &dns->pend.to[i];
		dns->pend.msg[i].msg_hdr.msg_namelen = tolen;
	}
	if (!sl_timer_armed(&dns->pend.flush))
		sl_timer_arm(dns->loop, &dns->pend.flush, 0, dgram_flush_cb);
}

/* Reads up to @max datagrams of @fd into the read scratch (with their senders if @from, and
 * their control messages if @ctl). Returns how many; their lengths are in_msg[i].msg_len,
 * MSG_TRUNC in msg_flags if cut. */
static int dgram_recv(struct sl_dns *dns, int fd, unsigned max, int from, int ctl)
{
	int n;

	if (max > DNS_OUT_BATCH)
		max = DNS_OUT_BATCH;
	for (unsigned i = 0; i < max; i++) {
		dns->in_iov[i] = (struct iovec){ dns->in_buf[i], DNS_DGRAM_SLOT };
		memset(&dns->in_msg[i], 0, sizeof(dns->in_msg[i]));
		dns->in_msg[i].msg_hdr.msg_iov = &dns->in_iov[i];
		dns->in_msg[i].msg_hdr.msg_iovlen = 1;
		if (from) {
			dns->in_msg[i].msg_hdr.msg_name = &dns->in_from[i];
			dns->in_msg[i].msg_hdr.msg_namelen = sizeof(dns->in_from[i]);
		}
		if (ctl) {
			dns->in_msg[i].msg_hdr.msg_control = dns->in_ctl[i];
			dns->in_msg[i].msg_hdr.msg_controllen = sizeof(dns->in_ctl[i]);
		}
	}
	n = recvmmsg(fd, dns->in_msg, max, MSG_DONTWAIT, NULL);
	return n < 0 ? 0 : n;
}

/* Sends @msg to the client of a UDP query or a TCP connection. */
static void reply(struct sl_dns_listener *l, int udp_fd, const struct sockaddr *to, socklen_t tolen,
		  struct dns_tcp *tcp, const uint8_t *msg, size_t len)
{
	if (tcp) {
		uint8_t pre[2] = { len >> 8, len & 0xff };

		if (tcp->closing)
			return;
		sl_buf_append(&tcp->out, pre, 2);
		sl_buf_append(&tcp->out, msg, len);
		tcp_flush(tcp);
		return;
	}
	dgram_send(l->dns, udp_fd, to, tolen, msg, len);
}

static void reply_error(struct sl_dns_listener *l, const struct sl_dns_query *q, const uint8_t *pkt,
			size_t len, int rcode, int udp_fd, const struct sockaddr *to,
			socklen_t tolen, struct dns_tcp *tcp)
{
	uint8_t out[1024];
	int n = sl_dns_build_error(q, pkt, len, rcode, out, sizeof(out));

	if (n > 0)
		reply(l, udp_fd, to, tolen, tcp, out, n);
}

/*
 * NXDOMAIN for a name the policy does not name, with an Extended DNS Error when the client
 * speaks EDNS, so that the program (or the person reading its error) can tell sluice refused
 * the name and in which sandbox. INFO-CODE 15 "Blocked" (RFC 8914 section 4.16: blocked by
 * the resolver operator's policy), not 18 "Prohibited" (section 4.19: the *client* is not
 * authorised to ask this server at all, which is what REFUSED says).
 */
static void reply_denied(struct sl_dns_listener *l, const struct sl_dns_query *q,
			 const uint8_t *pkt, size_t len, int udp_fd, const struct sockaddr *to,
			 socklen_t tolen, struct dns_tcp *tcp)
{
	uint8_t out[1024];
	char text[SL_DNS_EDE_TEXT_MAX];
	int n;

	snprintf(text, sizeof(text), "sluice: name not in policy of sandbox %s",
		 l->ops->name(l->owner));
	n = sl_dns_build_error_ede(q, pkt, len, SL_DNS_RCODE_NXDOMAIN, SL_DNS_EDE_BLOCKED, text,
				   out, sizeof(out));
	if (n > 0)
		reply(l, udp_fd, to, tolen, tcp, out, n);
}

/* ---- the answer cache (struct dns_cached) ---- */

/* What of a query its answer depends on, besides name and type (sl_dns_build_forward()). */
static uint8_t cache_flags(const struct sl_dns_query *q, const uint8_t *pkt)
{
	return (q->rd ? 1 : 0) | (pkt[3] & 0x10 ? 2 : 0) /* CD */ | (q->edns ? 4 : 0) |
	       (q->edns_do ? 8 : 0);
}

static struct dns_cached *cache_slot(struct sl_dns_listener *l, const char *qname, uint16_t qtype)
{
	uint32_t h = 2166136261u ^ qtype; /* FNV-1a */

	for (const char *p = qname; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return &l->cache[h % DNS_CACHE_SLOTS];
}

/* Empties the slot; its memory stays for the next answer stored in it. */
static void cache_drop(struct dns_cached *c)
{
	c->qname[0] = 0;
	c->len = 0;
}

void sl_dns_listener_flush(struct sl_dns_listener *l)
{
	if (!l || !l->cache)
		return;
	for (int i = 0; i < DNS_CACHE_SLOTS; i++)
		cache_drop(&l->cache[i]);
}

static void cache_free(struct sl_dns_listener *l)
{
	if (!l->cache)
		return;
	for (int i = 0; i < DNS_CACHE_SLOTS; i++)
		free(l->cache[i].mem);
	free(l->cache);
	l->cache = NULL;
}

/* Keeps @msg (@len bytes), the answer @dq got, if it may be served again (see struct
 * dns_cached). @a is its parse, @installed and @blocked its event's lists (copied). */
static void cache_put(struct dns_query *dq, const uint8_t *msg, size_t len,
		      const struct sl_dns_answer *a, const char *installed, const char *blocked)
{
	struct sl_dns_listener *l = dq->l;
	uint64_t life_ms = l->dns->o.cache_ms, now = sl_now_ns();
	uint32_t ttl = a->min_ttl_s < l->dns->o.max_ttl_s ? a->min_ttl_s : l->dns->o.max_ttl_s;
	size_t ni = strlen(installed) + 1, nb = strlen(blocked) + 1;
	struct dns_cached *c;

	if (!life_ms || dq->audited || a->tc || a->rcode || !ttl || !a->naddr ||
	    len <= SL_DNS_HDR_LEN + dq->q.question_len || (msg[2] & 0x02) /* TC */)
		return;
	if ((uint64_t)ttl * 1000 < life_ms)
		life_ms = (uint64_t)ttl * 1000;
	if (!l->cache && !(l->cache = calloc(DNS_CACHE_SLOTS, sizeof(*l->cache))))
		return;
	c = cache_slot(l, dq->q.qname, dq->q.qtype);
	cache_drop(c);
	if (c->cap < len + ni + nb) {
		size_t cap = c->cap ? c->cap : 512;
		uint8_t *mem;

		while (cap < len + ni + nb)
			cap *= 2;
		mem = realloc(c->mem, cap);
		if (!mem)
			return;
		c->mem = mem;
		c->cap = cap;
	}
	memcpy(c->mem, msg, len);
	c->installed = memcpy(c->mem + len, installed, ni);
	c->blocked = memcpy(c->mem + len + ni, blocked, nb);
	memcpy(c->qname, dq->q.qname, sizeof(c->qname)); /* both SL_DNS_NAME_BUF */
	c->qtype = dq->q.qtype;
	c->flags = cache_flags(&dq->q, dq->pkt);
	c->len = (uint16_t)len;
	c->stored_ns = now;
	c->expires_ns = now + life_ms * 1000000ULL;
}

/* Answers @q from the cache if a young enough answer to the same question is there and fits
 * the client. Returns 1 if it did. */
static int cache_serve(struct sl_dns_listener *l, const struct sl_dns_query *q, const uint8_t *pkt,
		       int udp_fd, const struct sockaddr *to, socklen_t tolen, struct dns_tcp *tcp)
{
	size_t cap = tcp ? DNS_MSG_MAX : q->udp_max;
	uint8_t *out = l->dns->out;
	struct dns_cached *c;
	struct sl_jw w;
	uint64_t now;
	uint32_t age;

	if (!l->cache)
		return 0;
	c = cache_slot(l, q->qname, q->qtype);
	if (!c->len || c->qtype != q->qtype || c->flags != cache_flags(q, pkt) ||
	    strcmp(c->qname, q->qname) || c->len > cap ||
	    c->len <= SL_DNS_HDR_LEN + q->question_len)
		return 0;
	now = sl_now_ns();
	if (now >= c->expires_ns) {
		cache_drop(c);
		return 0;
	}
	age = (uint32_t)((now - c->stored_ns) / 1000000000ULL);
	memcpy(out, c->mem, c->len);
	out[0] = q->id >> 8;
	out[1] = q->id & 0xff;
	/* the question as this client wrote it (letter case: RFC 5452's 0x20 checks) */
	memcpy(out + SL_DNS_HDR_LEN, pkt + SL_DNS_HDR_LEN, q->question_len);
	if (sl_dns_age(out, c->len, age)) {
		cache_drop(c);
		return 0;
	}
	l->stats.allowed++;
	l->stats.cached++;
	if (dns_event_begin(&w, l, q, "allow")) {
		sl_jw_int(&w, "rcode", 0);
		sl_jw_raw(&w, "installed", c->installed, strlen(c->installed));
		sl_jw_raw(&w, "blocked", c->blocked, strlen(c->blocked));
		sl_jw_raw(&w, "cached", "true", 4);
		dns_event_end(&w, l);
	}
	reply(l, udp_fd, to, tolen, tcp, out, c->len);
	return 1;
}

/* ---- queries in flight ---- */

static void tcp_update(struct dns_tcp *c);
static void up_close(struct dns_up *up);

static void query_free(struct dns_query *dq)
{
	struct sl_dns_listener *l = dq->l;
	struct dns_tcp *tcp = dq->tcp;

	sl_list_del(&dq->link);
	l->npending--;
	l->dns->npending--;
	sl_timer_disarm(l->dns->loop, &dq->timer);
	if (dq->up) {
		struct dns_up *up = dq->up;

		sl_list_del(&dq->up_link);
		up->nq--;
		if (up->retired && !up->nq && !up->reading)
			up_close(up);
	}
	if (dq->up_fd >= 0) {
		sl_loop_del_fd(l->dns->loop, dq->up_fd);
		close(dq->up_fd);
	}
	sl_buf_free(&dq->up_out);
	sl_buf_free(&dq->up_in);
	if (dq->spare && (int)l->dns->nspare < DNS_QUERY_KEEP) {
		dq->next_spare = l->dns->spare;
		l->dns->spare = dq;
		l->dns->nspare++;
	} else {
		free(dq);
	}
	if (tcp) {
		tcp->npending--;
		tcp_update(tcp); /* may read again; never re-entered from here (see tcp_update) */
	}
}

/* A zeroed query with room for @pkt_max bytes of forwarded query: a spare one when it fits. */
static struct dns_query *query_alloc(struct sl_dns *dns, size_t pkt_max)
{
	struct dns_query *dq = dns->spare;

	if (pkt_max > DNS_QUERY_PKT_MAX)
		return calloc(1, sizeof(*dq) + pkt_max);
	if (!dq) {
		dq = malloc(sizeof(*dq) + DNS_QUERY_PKT_MAX);
		if (!dq)
			return NULL;
	} else {
		dns->spare = dq->next_spare;
		dns->nspare--;
	}
	memset(dq, 0, sizeof(*dq)); /* the packet is written whole by sl_dns_build_forward() */
	dq->spare = 1;
	return dq;
}

static void query_fail(struct dns_query *dq, const char *why)
{
	struct sl_dns_listener *l = dq->l;

	l->stats.servfail++;
	sl_debug("dns %s: %s: %s", l->ops->name(l->owner), dq->q.qname, why);
	dns_event(l, &dq->q, "servfail", why);
	/* The client's own id goes back in the header the error echoes. */
	dq->pkt[0] = dq->q.id >> 8;
	dq->pkt[1] = dq->q.id & 0xff;
	reply_error(l, &dq->q, dq->pkt, dq->pkt_len, SL_DNS_RCODE_SERVFAIL, dq->client_fd,
		    (struct sockaddr *)&dq->client, dq->client_len, dq->tcp);
	query_free(dq);
}

struct blocked_set {
	const struct sl_dns_answer *a;
	const uint8_t *blocked;
};

static int drop_blocked(uint8_t family, const uint8_t *addr, void *arg)
{
	const struct blocked_set *b = arg;

	for (size_t i = 0; i < b->a->naddr; i++) {
		const struct sl_dns_addr *x = &b->a->addr[i];

		if (b->blocked[i] && x->family == family &&
		    !memcmp(x->addr, addr, family == AF_INET ? 4 : 16))
			return 1;
	}
	return 0;
}

/* The addresses of @a that are (@want_blocked 0) or are not installed, as a JSON list. */
static void addr_list(const struct sl_dns_answer *a, const uint8_t *blocked, int want_blocked,
		      char *out, size_t len)
{
	size_t n = 0;

	out[n++] = '[';
	for (size_t i = 0; i < a->naddr; i++) {
		if (!!blocked[i] != want_blocked || len - n < INET6_ADDRSTRLEN + 4)
			continue;
		if (n > 1)
			out[n++] = ',';
		out[n++] = '"';
		n += sl_addr_str(a->addr[i].family, a->addr[i].addr, out + n, len - n);
		out[n++] = '"';
	}
	out[n++] = ']';
	out[n] = 0;
}

/* A query whose addresses could not be installed: SERVFAIL, with the reason. */
static void learn_failed(struct dns_query *dq, int err)
{
	struct sl_dns_listener *l = dq->l;

	if (err == -EDQUOT) {
		l->stats.limit_learned++;
		query_fail(dq, "the sandbox holds too many resolved addresses");
	} else if (err == -ENOSPC || err == -E2BIG) {
		l->stats.limit_kernel_rules++;
		query_fail(dq, "the kernel rule map is full");
	} else {
		query_fail(dq, "installing the addresses failed");
	}
}

/*
 * The upstream answered @resp (@len bytes), the first half: parse it into @a and learn its
 * addresses, the new kernel entries staged in @kb (NULL: written at once). Returns 0, or -1
 * when the query failed (answered and freed).
 */
static int query_learn(struct dns_query *dq, const uint8_t *resp, size_t len,
		       struct sl_dns_answer *a, uint8_t blocked[SL_DNS_MAX_ADDRS],
		       struct sl_kbatch *kb)
{
	struct sl_dns_listener *l = dq->l;
	int err;

	memset(blocked, 0, SL_DNS_MAX_ADDRS);
	err = sl_dns_parse_answer(resp, len, dq->q.qname, a);
	if (err) {
		query_fail(dq, "malformed upstream answer");
		return -1;
	}
	if (!a->tc) {
		err = l->ops->learn(l->owner, dq->q.qname, a, blocked, kb);
		if (err) {
			learn_failed(dq, err);
			return -1;
		}
	}
	return 0;
}

/* The second half, once the kernel holds the addresses of @a: filter and relay. */
static void query_answer(struct dns_query *dq, const uint8_t *resp, size_t len,
			 const struct sl_dns_answer *a, const uint8_t blocked[SL_DNS_MAX_ADDRS])
{
	struct sl_dns_listener *l = dq->l;
	struct blocked_set bs;
	/* the event's lists: every address quoted, at most SL_DNS_MAX_ADDRS of them */
	char installed[SL_DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 3) + 3];
	char blocked_j[sizeof(installed)];
	struct sl_jw w;
	size_t cap = dq->tcp ? DNS_MSG_MAX : dq->q.udp_max;
	uint8_t *out = l->dns->out;
	size_t nblocked = 0;
	int n;

	for (size_t i = 0; i < a->naddr; i++)
		nblocked += blocked[i];
	bs.a = a;
	bs.blocked = blocked;
	n = sl_dns_rewrite(resp, len, out, cap, drop_blocked, &bs, l->dns->o.max_ttl_s);
	if (n < 0) {
		query_fail(dq, "malformed upstream answer");
		return;
	}
	if (n == 0) {
		if (len > cap) {
			/* Cannot happen with a conforming upstream; never send more than asked. */
			query_fail(dq, "upstream answer too large");
			return;
		}
		memcpy(out, resp, len);
		n = (int)len;
	}
	out[0] = dq->q.id >> 8;
	out[1] = dq->q.id & 0xff;
	l->stats.allowed++;
	l->stats.installed += a->naddr - nblocked;
	l->stats.blocked += nblocked;
	addr_list(a, blocked, 0, installed, sizeof(installed));
	addr_list(a, blocked, 1, blocked_j, sizeof(blocked_j));
	if (dns_event_begin(&w, l, &dq->q, dq->audited ? "audit" : "allow")) {
		sl_jw_int(&w, "rcode", a->rcode);
		sl_jw_raw(&w, "installed", installed, strlen(installed));
		sl_jw_raw(&w, "blocked", blocked_j, strlen(blocked_j));
		sl_jw_int(&w, "ttl", a->min_ttl_s);
		dns_event_end(&w, l);
	}
	cache_put(dq, out, n, a, installed, blocked_j);
	if (nblocked)
		sl_warn("dns %s: %s resolves to %zu address(es) outside the public Internet that "
			"egress.private does not allow: not installed",
			l->ops->name(l->owner), dq->q.qname, nblocked);
	reply(l, dq->client_fd, (struct sockaddr *)&dq->client, dq->client_len, dq->tcp, out, n);
	query_free(dq);
}

/* One answer on its own (a TCP upstream): install, filter, relay. */
static void query_complete(struct dns_query *dq, uint8_t *resp, size_t len)
{
	struct sl_dns *dns = dq->l->dns;
	uint8_t blocked[SL_DNS_MAX_ADDRS];

	if (!query_learn(dq, resp, len, &dns->answer[0], blocked, NULL))
		query_answer(dq, resp, len, &dns->answer[0], blocked);
}

static void query_timeout(struct sl_loop *loop, struct sl_timer *t)
{
	struct dns_query *dq = sl_container_of(t, struct dns_query, timer);

	(void)loop;
	query_fail(dq, "upstream timed out");
}

static void upstream_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct dns_query *dq = arg;
	uint8_t buf[DNS_MSG_MAX];

	(void)loop;
	if (!dq->up_tcp) {
		for (;;) {
			ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n < 0) {
				query_fail(dq, "upstream unreachable");
				return;
			}
			/* The socket is connected: only the upstream can send here. Still, an
			 * answer to another id is not ours (RFC 5452 section 9.1). */
			if (n >= SL_DNS_HDR_LEN && buf[0] == dq->up_id >> 8 &&
			    buf[1] == (dq->up_id & 0xff) && (buf[2] & 0x80)) {
				query_complete(dq, buf, n);
				return;
			}
		}
	}
	if (events & SL_WRITE) {
		while (sl_buf_size(&dq->up_out)) {
			ssize_t n = send(fd, sl_buf_head(&dq->up_out), sl_buf_size(&dq->up_out),
					 MSG_DONTWAIT | MSG_NOSIGNAL);

			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n < 0) {
				query_fail(dq, "upstream unreachable");
				return;
			}
			sl_buf_consume(&dq->up_out, n);
		}
		sl_loop_mod_fd(dq->l->dns->loop, fd,
			       SL_READ | (sl_buf_size(&dq->up_out) ? SL_WRITE : 0));
	}
	if (events & (SL_READ | SL_HUP)) {
		for (;;) {
			ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			size_t have;

			if (n == -1 && (errno == EAGAIN || errno == EINTR))
				return;
			if (n <= 0) {
				query_fail(dq, n == 0 ? "upstream closed the connection" :
							"upstream unreachable");
				return;
			}
			sl_buf_append(&dq->up_in, buf, n);
			have = sl_buf_size(&dq->up_in);
			if (have >= 2) {
				const uint8_t *p = (const uint8_t *)sl_buf_head(&dq->up_in);
				size_t want = (size_t)p[0] << 8 | p[1];

				if (have >= 2 + want) {
					if (want < SL_DNS_HDR_LEN || p[2] != dq->up_id >> 8 ||
					    p[3] != (dq->up_id & 0xff)) {
						query_fail(dq, "upstream answered another query");
						return;
					}
					memcpy(buf, p + 2, want);
					query_complete(dq, buf, want);
					return;
				}
			}
		}
	}
}

/* ---- the upstream socket pool ---- */

static void up_close(struct dns_up *up)
{
	dgram_flush(up->dns); /* nothing queued may outlive its descriptor */
	sl_loop_del_fd(up->dns->loop, up->fd);
	close(up->fd);
	free(up);
}

/* Answers on a pooled socket: each to the query of its id, if still in flight. */
static void up_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct dns_up *up = arg;
	struct sl_dns *dns = up->dns;
	/* EAGAIN, or an ICMP error: 0 (the queries time out) */
	int got = dgram_recv(dns, fd, DNS_UP_BATCH, 0, 0), nb = 0;
	int kerr[SL_KBATCH_TAGS];

	(void)loop;
	(void)events;
	up->reading = 1;
	/* First every answer's addresses, staged ... */
	for (int i = 0; i < got; i++) {
		uint8_t *buf = dns->in_buf[i];
		size_t n = dns->in_msg[i].msg_len;
		struct dns_query *dq = NULL, *x;
		uint16_t id;

		/* More than we advertised (SL_DNS_EDNS_UDP_SIZE) is not a conforming answer. */
		if (n < SL_DNS_HDR_LEN || (dns->in_msg[i].msg_hdr.msg_flags & MSG_TRUNC) ||
		    !(buf[2] & 0x80))
			continue;
		id = (uint16_t)(buf[0] << 8 | buf[1]);
		sl_list_for_each(x, &up->queries, up_link) {
			if (x->up_id == id) {
				dq = x;
				break;
			}
		}
		/* A late answer (its query timed out) or another id: not ours (RFC 5452 9.1). */
		if (!dq || dq->answered)
			continue;
		dq->answered = 1;
		if (dns->kb)
			sl_kbatch_tag(dns->kb, (unsigned)nb);
		if (query_learn(dq, buf, n, &dns->answer[nb], dns->blocked[nb], dns->kb))
			continue;
		dns->batch[nb] = dq;
		dns->batch_msg[nb] = buf;
		dns->batch_len[nb] = n;
		nb++;
	}
	/* ... then written to the kernel in one go, and only then the answers go out. */
	if (dns->kb)
		sl_kbatch_commit(dns->kb, kerr);
	for (int k = 0; k < nb; k++) {
		if (dns->kb && kerr[k])
			learn_failed(dns->batch[k], kerr[k]);
		else
			query_answer(dns->batch[k], dns->batch_msg[k], dns->batch_len[k],
				     &dns->answer[k], dns->blocked[k]);
	}
	up->reading = 0;
	if (up->retired && !up->nq)
		up_close(up);
}

static uint16_t random_id(struct sl_dns *dns)
{
	if (!dns->nrnd) {
		if (getrandom(dns->rnd, sizeof(dns->rnd), 0) != sizeof(dns->rnd)) {
			for (unsigned i = 0; i < 256; i++)
				dns->rnd[i] = (uint16_t)(sl_now_ns() * 2654435761u >> (i & 15));
		}
		dns->nrnd = 256;
	}
	return dns->rnd[--dns->nrnd];
}

/* A socket of the pool for one more query, a fresh one in place of a worn one. */
static struct dns_up *up_pick(struct sl_dns *dns)
{
	/* One socket per turn of the loop (dgram_flush() moves on), so that a turn's queries
	 * leave in one sendmmsg(). */
	unsigned slot = dns->up_next % DNS_UP_SOCKS;
	struct dns_up *up = dns->up[slot];
	int fd;

	if (up && up->uses < DNS_UP_REUSE)
		return up;
	if (up) {
		up->retired = 1;
		dns->up[slot] = NULL;
		if (!up->nq)
			up_close(up);
	}
	fd = socket(dns->o.upstream.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return NULL;
	up = calloc(1, sizeof(*up));
	if (!up || connect(fd, (struct sockaddr *)&dns->o.upstream, dns->o.upstream_len) == -1 ||
	    sl_loop_add_fd(dns->loop, fd, SL_READ, up_cb, up)) {
		free(up);
		close(fd);
		return NULL;
	}
	up->dns = dns;
	up->fd = fd;
	sl_list_init(&up->queries);
	dns->up[slot] = up;
	return up;
}

/* An id no other query in flight on @up has. */
static uint16_t up_fresh_id(struct sl_dns *dns, struct dns_up *up)
{
	for (;;) {
		uint16_t id = random_id(dns);
		struct dns_query *x;
		int taken = 0;

		sl_list_for_each(x, &up->queries, up_link) {
			if (x->up_id == id) {
				taken = 1;
				break;
			}
		}
		if (!taken)
			return id;
	}
}

/* Sends the client's query upstream, over TCP when the client used TCP. */
static int query_start(struct dns_query *dq)
{
	struct sl_dns *dns = dq->l->dns;
	int type = dq->up_tcp ? SOCK_STREAM : SOCK_DGRAM;
	int fd, r;

	if (!dns->o.upstream_len)
		return -EHOSTUNREACH;
	if (dq->up) {
		/* A full send buffer: the query times out, as a lost datagram would. */
		dgram_send(dns, dq->up->fd, NULL, 0, dq->pkt, dq->pkt_len);
		return 0;
	}
	fd = socket(dns->o.upstream.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	dq->up_fd = fd;
	r = connect(fd, (struct sockaddr *)&dns->o.upstream, dns->o.upstream_len);
	if (r == -1 && errno != EINPROGRESS)
		return -errno;
	if (dq->up_tcp) {
		uint8_t pre[2] = { dq->pkt_len >> 8, dq->pkt_len & 0xff };

		sl_buf_append(&dq->up_out, pre, 2);
		sl_buf_append(&dq->up_out, dq->pkt, dq->pkt_len);
		return sl_loop_add_fd(dns->loop, fd, SL_READ | SL_WRITE, upstream_cb, dq);
	}
	if (send(fd, dq->pkt, dq->pkt_len, MSG_DONTWAIT) != (ssize_t)dq->pkt_len)
		return -errno;
	return sl_loop_add_fd(dns->loop, fd, SL_READ, upstream_cb, dq);
}

/* Answers or forwards one query. @tcp is the client's connection, or NULL for UDP. */
static void handle_query(struct sl_dns_listener *l, const uint8_t *pkt, size_t len, int udp_fd,
			 const struct sockaddr *from, socklen_t fromlen, struct dns_tcp *tcp)
{
	struct sl_grant grants[8];
	struct dns_query *dq;
	struct sl_dns_query q;
	int r, audited = 0;

	r = sl_dns_parse_query(pkt, len, &q);
	if (r == -EOPNOTSUPP) {
		l->stats.refused++;
		reply_error(l, NULL, pkt, len, SL_DNS_RCODE_NOTIMP, udp_fd, from, fromlen, tcp);
		return;
	}
	if (r) {
		l->stats.formerr++;
		reply_error(l, NULL, pkt, len, SL_DNS_RCODE_FORMERR, udp_fd, from, fromlen, tcp);
		return;
	}
	if (q.edns && q.edns_version) {
		l->stats.formerr++;
		reply_error(l, &q, pkt, len, SL_DNS_RCODE_BADVERS, udp_fd, from, fromlen, tcp);
		return;
	}
	if (q.qclass != SL_DNS_CLASS_IN) {
		l->stats.refused++;
		reply_error(l, &q, pkt, len, SL_DNS_RCODE_REFUSED, udp_fd, from, fromlen, tcp);
		return;
	}
	if (l->ops->grants(l->owner, q.qname, grants, 8)) {
		/* the policy gives the name: resolved below */
	} else if (l->ops->audit && l->ops->audit(l->owner)) {
		/* Audit mode: what the policy would refuse is resolved and recorded. */
		audited = 1;
	} else {
		/* Answered here, never forwarded: the name carries nothing out. */
		l->stats.denied++;
		dns_event(l, &q, "deny", NULL);
		reply_denied(l, &q, pkt, len, udp_fd, from, fromlen, tcp);
		return;
	}
	if (sl_dns_is_bypass_type(q.qtype)) {
		/* HTTPS/SVCB carry ECH keys and other endpoints: the name has none (dns_msg.h). */
		l->stats.nodata++;
		reply_error(l, &q, pkt, len, SL_DNS_RCODE_NOERROR, udp_fd, from, fromlen, tcp);
		return;
	}
	if (!audited && cache_serve(l, &q, pkt, udp_fd, from, fromlen, tcp))
		return;
	if (l->npending >= DNS_MAX_PENDING || l->dns->npending >= l->dns->o.max_pending_total) {
		l->stats.refused++;
		l->stats.limit_pending++;
		dns_event(l, &q, "refused", "too many queries in flight");
		reply_error(l, &q, pkt, len, SL_DNS_RCODE_REFUSED, udp_fd, from, fromlen, tcp);
		return;
	}
	dq = query_alloc(l->dns, SL_DNS_HDR_LEN + q.question_len + 11);
	if (!dq) {
		l->stats.servfail++;
		reply_error(l, &q, pkt, len, SL_DNS_RCODE_SERVFAIL, udp_fd, from, fromlen, tcp);
		return;
	}
	dq->l = l;
	dq->q = q;
	dq->audited = audited;
	dq->up_fd = -1;
	dq->client_fd = udp_fd;
	dq->tcp = tcp;
	dq->up_tcp = tcp != NULL;
	if (tcp)
		tcp->npending++;
	if (from) {
		memcpy(&dq->client, from, fromlen);
		dq->client_len = fromlen;
	}
	sl_list_init(&dq->up_link);
	/* A fresh id upstream: the client's is not ours to expose (RFC 5452 section 9.2). */
	if (!tcp && l->dns->o.upstream_len) {
		dq->up = up_pick(l->dns);
		if (dq->up) {
			dq->up_id = up_fresh_id(l->dns, dq->up);
			sl_list_add(&dq->up->queries, &dq->up_link);
			dq->up->nq++;
			dq->up->uses++;
		}
	}
	if (!dq->up)
		dq->up_id = random_id(l->dns);
	/* Rebuilt, never relayed: the sandbox's additional records and EDNS options (client
	 * subnet, cookies, padding) would reach the resolver's operator (review F14.1). */
	r = sl_dns_build_forward(&q, pkt, len, dq->up_id, dq->pkt,
				 SL_DNS_HDR_LEN + q.question_len + 11);
	dq->pkt_len = r > 0 ? (size_t)r : 0;
	sl_list_add(&l->queries, &dq->link);
	l->npending++;
	l->dns->npending++;
	sl_timer_arm(l->dns->loop, &dq->timer, l->dns->o.timeout_ms, query_timeout);
	r = dq->pkt_len ? query_start(dq) : -EINVAL;
	if (r)
		query_fail(dq, r == -EHOSTUNREACH ? "no upstream resolver configured" :
						    "cannot reach the upstream resolver");
}

/* ---- UDP and TCP clients ---- */

/* The query of datagram @i of the read scratch, read from @fd, to @l. */
static void udp_query(struct sl_dns_listener *l, int fd, int i)
{
	struct sl_dns *dns = l->dns;

	if (dns->in_msg[i].msg_hdr.msg_flags & MSG_TRUNC) {
		l->stats.formerr++; /* no query is that long */
		return;
	}
	handle_query(l, dns->in_buf[i], dns->in_msg[i].msg_len, fd,
		     (struct sockaddr *)&dns->in_from[i], dns->in_msg[i].msg_hdr.msg_namelen, NULL);
}

static void udp_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct sl_dns_listener *l = arg;
	/* Bounded per wake-up so that one busy sandbox cannot starve the loop. */
	int got = dgram_recv(l->dns, fd, DNS_UDP_BATCH, 1, 0);

	(void)loop;
	(void)events;
	for (int i = 0; i < got; i++)
		udp_query(l, fd, i);
}

/* The listener of sandbox @id on the shared listener, or NULL. */
static struct sl_dns_listener *shared_listener(struct sl_dns *dns, uint32_t id)
{
	return sl_idtab_get(&dns->sharers, id);
}

/* The sandbox listener that datagram @i of the read scratch is for: the egress program marked
 * it with the sandbox's id (SL_SHARED_MARK). A datagram without that mark came from no
 * sandbox (a host process aiming at the port): nobody's, dropped. */
static struct sl_dns_listener *dgram_owner(struct sl_dns *dns, int i)
{
	struct msghdr *m = &dns->in_msg[i].msg_hdr;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		uint32_t mark;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_MARK ||
		    c->cmsg_len < CMSG_LEN(sizeof(mark)))
			continue;
		memcpy(&mark, CMSG_DATA(c), sizeof(mark));
		if ((mark & SL_SHARED_MARK_MASK) != SL_SHARED_MARK)
			return NULL;
		return shared_listener(dns, mark & ~SL_SHARED_MARK_MASK);
	}
	return NULL;
}

/* The shared listener's datagrams, each to its sandbox's listener. Bounded per wake-up like a
 * listener of one sandbox: the sandboxes that share it share that turn. */
static void shared_udp_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct sl_dns *dns = arg;
	int got = dgram_recv(dns, fd, DNS_UDP_BATCH, 1, 1);

	(void)loop;
	(void)events;
	for (int i = 0; i < got; i++) {
		struct sl_dns_listener *l = dgram_owner(dns, i);

		if (l)
			udp_query(l, fd, i);
	}
}

static void tcp_idle(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	tcp_close(sl_container_of(t, struct dns_tcp, idle));
}

static void tcp_close(struct dns_tcp *c)
{
	struct sl_dns_listener *l = c->l;
	struct dns_query *q;

	sl_list_for_each(q, &l->queries, link)
		if (q->tcp == c)
			q->tcp = NULL, q->client_fd = -1; /* answered into the void */
	sl_timer_disarm(l->dns->loop, &c->stall);
	sl_timer_disarm(l->dns->loop, &c->kick);
	sl_list_del(&c->link);
	l->ntcp--;
	l->dns->ntcp--;
	sl_timer_disarm(l->dns->loop, &c->idle);
	sl_loop_del_fd(l->dns->loop, c->fd);
	close(c->fd);
	sl_buf_free(&c->in);
	sl_buf_free(&c->out);
	free(c);
}

static void tcp_flush(struct dns_tcp *c)
{
	while (sl_buf_size(&c->out)) {
		ssize_t n = send(c->fd, sl_buf_head(&c->out), sl_buf_size(&c->out),
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (n < 0) {
			c->closing = 1;
			sl_buf_reset(&c->out);
			break;
		}
		sl_buf_consume(&c->out, n);
	}
	tcp_update(c);
}

/* Whether the buffered input holds a whole message. */
static int tcp_has_msg(struct dns_tcp *c)
{
	const uint8_t *p = (const uint8_t *)sl_buf_head(&c->in);
	size_t have = sl_buf_size(&c->in);

	return have >= 2 && have >= 2 + ((size_t)p[0] << 8 | p[1]);
}

/* Whether the client may have another query answered now (its output and queries bounded). */
static int tcp_can_answer(struct dns_tcp *c)
{
	return !c->closing && sl_buf_size(&c->out) < DNS_TCP_OUT_CAP &&
	       c->npending < DNS_TCP_MAX_PENDING;
}

static void tcp_stalled(struct sl_loop *loop, struct sl_timer *t)
{
	struct dns_tcp *c = sl_container_of(t, struct dns_tcp, stall);
	struct sl_dns_listener *l = c->l;

	(void)loop;
	l->stats.limit_tcp_out++;
	listener_event(l, "closed", "DNS client over TCP does not read its answers");
	tcp_close(c);
}

static void tcp_process(struct dns_tcp *c);

static void tcp_kicked(struct sl_loop *loop, struct sl_timer *t)
{
	struct dns_tcp *c = sl_container_of(t, struct dns_tcp, kick);

	(void)loop;
	if (c->closing) {
		tcp_close(c);
		return;
	}
	tcp_process(c);
}

/*
 * Sets what the loop watches for @c from its state: input only while it may be answered and
 * nothing whole waits in @c->in, output while some is left. Whatever has to happen next that
 * no event will announce (buffered queries, a close) is left to a zero-delay timer, so that
 * this never re-enters the query path it is called from (reply, query_free).
 */
static void tcp_update(struct dns_tcp *c)
{
	struct sl_loop *loop = c->l->dns->loop;
	int can = tcp_can_answer(c), msg = tcp_has_msg(c);
	unsigned ev = (can && !msg ? SL_READ : 0) | (sl_buf_size(&c->out) ? SL_WRITE : 0);

	if (ev != c->events && !sl_loop_mod_fd(loop, c->fd, ev))
		c->events = ev;
	if (sl_buf_size(&c->out) >= DNS_TCP_OUT_CAP && !c->closing) {
		if (!sl_timer_armed(&c->stall))
			sl_timer_arm(loop, &c->stall, DNS_TCP_STALL_MS, tcp_stalled);
	} else {
		sl_timer_disarm(loop, &c->stall);
	}
	if ((c->closing || (can && msg)) && !sl_timer_armed(&c->kick))
		sl_timer_arm(loop, &c->kick, 0, tcp_kicked);
}

/* Answers at most DNS_TCP_BATCH whole messages of @c->in, while @c may be answered. */
static void tcp_process(struct dns_tcp *c)
{
	struct sl_dns_listener *l = c->l;

	for (int i = 0; i < DNS_TCP_BATCH && tcp_can_answer(c) && tcp_has_msg(c); i++) {
		const uint8_t *p = (const uint8_t *)sl_buf_head(&c->in);
		size_t want = (size_t)p[0] << 8 | p[1];
		uint8_t msg[DNS_MSG_MAX];

		memcpy(msg, p + 2, want);
		sl_buf_consume(&c->in, 2 + want);
		handle_query(l, msg, want, -1, NULL, 0, c);
	}
	tcp_update(c);
}

static void tcp_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct dns_tcp *c = arg;
	uint8_t buf[8192];

	if (events & SL_WRITE)
		tcp_flush(c);
	if (c->closing) {
		tcp_close(c);
		return;
	}
	if (!(events & (SL_READ | SL_HUP)))
		return;
	if (!tcp_can_answer(c) || tcp_has_msg(c)) {
		/* Not reading it now (see tcp_update). An error or a peer gone for good is
		 * reported whatever is watched: nobody is left to answer. */
		if (events & SL_HUP)
			tcp_close(c);
		return;
	}
	sl_timer_arm(loop, &c->idle, DNS_TCP_IDLE_MS, tcp_idle);
	for (int i = 0; i < DNS_TCP_READS && !tcp_has_msg(c); i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (n <= 0) {
			tcp_close(c);
			return;
		}
		if (sl_buf_size(&c->in) + n > 2 + DNS_MSG_MAX + sizeof(buf)) {
			tcp_close(c);
			return;
		}
		sl_buf_append(&c->in, buf, n);
	}
	tcp_process(c);
	if (c->closing && !sl_timer_armed(&c->kick))
		tcp_close(c);
}

static void tcp_resume(struct sl_loop *loop, struct sl_timer *t)
{
	struct sl_dns_listener *l = sl_container_of(t, struct sl_dns_listener, tcp_paused);

	for (int i = 0; i < 2; i++)
		if (l->tcp[i] >= 0)
			sl_loop_mod_fd(loop, l->tcp[i], SL_READ);
}

/* The sandbox listener of a connection accepted on the shared listener: the egress program
 * recorded its SYN's sandbox under the client's address and port (sl_accepts). NULL: none. */
static struct sl_dns_listener *accepted_owner(struct sl_dns *dns,
					      const struct sockaddr_storage *peer)
{
	const uint8_t *addr;
	uint16_t port;
	uint32_t id;

	if (peer->ss_family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
		port = ntohs(((const struct sockaddr_in *)peer)->sin_port);
	} else if (peer->ss_family == AF_INET6) {
		addr = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
		port = ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
	} else {
		return NULL;
	}
	if (sl_bpf_take_accept(dns->o.bpf, peer->ss_family, addr, port, dns->shared->port, &id))
		return NULL;
	return shared_listener(dns, id);
}

/* Accepts the connections waiting on @fd, a socket of @sock (a sandbox's listener, or the
 * holder of the shared sockets, whose connections go each to its sandbox's listener). */
static void accept_on(struct sl_loop *loop, int fd, struct sl_dns_listener *sock)
{
	int shared = sock == sock->dns->shared;

	for (int i = 0; i < DNS_ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		struct sl_dns_listener *l = sock;
		struct dns_tcp *c;
		int cfd;

		cfd = accept4(fd, shared ? (struct sockaddr *)&peer : NULL, shared ? &plen : NULL,
			      SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1 && (errno == EMFILE || errno == ENFILE)) {
			/* Level-triggered: the listener stays readable. Nothing to accept with,
			 * so the client waits in the backlog (and retries over UDP) rather than
			 * the loop spinning; the UDP side keeps answering meanwhile. */
			sl_loop_mod_fd(loop, fd, 0);
			if (!sl_timer_armed(&sock->tcp_paused))
				sl_timer_arm(loop, &sock->tcp_paused, 100, tcp_resume);
			return;
		}
		if (cfd == -1)
			return;
		if (shared && !(l = accepted_owner(sock->dns, &peer))) {
			close(cfd); /* the kernel sent it no sandbox's way */
			continue;
		}
		if (l->ntcp >= DNS_MAX_TCP || l->dns->ntcp >= l->dns->o.max_tcp_total) {
			l->stats.refused++;
			l->stats.limit_tcp++;
			close(cfd);
			listener_event(l, "refused", "too many DNS clients over TCP");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		/* A fixed send buffer: the kernel's autotuning would otherwise let a client
		 * that never reads take megabytes of answers (tens of thousands of queries
		 * served) before its output reaches DNS_TCP_OUT_CAP and the stall clock starts.
		 * A whole message still fits; the kernel doubles what is set here. */
		setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &(int){ DNS_TCP_SNDBUF }, sizeof(int));
		c->l = l;
		c->fd = cfd;
		c->events = SL_READ;
		if (sl_loop_add_fd(loop, cfd, SL_READ, tcp_cb, c)) {
			close(cfd);
			free(c);
			continue;
		}
		sl_timer_arm(loop, &c->idle, DNS_TCP_IDLE_MS, tcp_idle);
		sl_list_add(&l->tcps, &c->link);
		l->ntcp++;
		l->dns->ntcp++;
	}
}

static void accept_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	(void)events;
	accept_on(loop, fd, arg);
}

/* ---- listeners ---- */

struct sl_dns *sl_dns_new(struct sl_loop *loop, struct sl_events *events,
			  const struct sl_dns_opts *opts)
{
	struct sl_dns *dns = calloc(1, sizeof(*dns));

	if (!dns)
		return NULL;
	dns->loop = loop;
	dns->events = events;
	dns->o = *opts;
	if (opts->bpf && !(dns->kb = sl_kbatch_new(opts->bpf))) {
		free(dns);
		return NULL;
	}
	if (!dns->o.timeout_ms)
		dns->o.timeout_ms = 4000;
	if (!dns->o.max_pending_total)
		dns->o.max_pending_total = SL_DNS_MAX_PENDING_TOTAL;
	if (!dns->o.max_tcp_total)
		dns->o.max_tcp_total = SL_DNS_MAX_TCP_TOTAL;
	if (!dns->o.max_ttl_s)
		dns->o.max_ttl_s = 3600;
	return dns;
}

void sl_dns_free(struct sl_dns *dns)
{
	if (!dns)
		return;
	/* The listeners (and their queries) are gone: only the pool's own sockets remain, and
	 * the shared listener's. */
	for (int i = 0; i < DNS_UP_SOCKS; i++)
		if (dns->up[i])
			up_close(dns->up[i]);
	dgram_flush(dns);
	close_shared(dns);
	free(dns->sharers.v);
	sl_kbatch_free(dns->kb);
	while (dns->spare) {
		struct dns_query *dq = dns->spare;

		dns->spare = dq->next_spare;
		free(dq);
	}
	free(dns);
}

static void close_fds(struct sl_dns_listener *l)
{
	dgram_flush(l->dns); /* nothing queued may outlive its descriptor */
	for (int i = 0; i < 2; i++) {
		if (l->udp[i] >= 0) {
			sl_loop_del_fd(l->dns->loop, l->udp[i]);
			close(l->udp[i]);
		}
		if (l->tcp[i] >= 0) {
			sl_loop_del_fd(l->dns->loop, l->tcp[i]);
			close(l->tcp[i]);
		}
		l->udp[i] = l->tcp[i] = -1;
	}
}

/* Closes the shared listener's sockets (its last sandbox went, or sluiced stops). */
static void close_shared(struct sl_dns *dns)
{
	if (!dns->shared)
		return;
	sl_timer_disarm(dns->loop, &dns->shared->tcp_paused);
	close_fds(dns->shared);
	free(dns->shared);
	dns->shared = NULL;
}

/* Binds the four sockets on @port (0: the kernel's pick for the first, then the same). */
static int bind_all(struct sl_dns_listener *l, uint16_t port, int netns_fd)
{
	int fd;

	fd = sl_listen_loopback(netns_fd, AF_INET, SOCK_DGRAM, port, &l->port);
	if (fd < 0)
		return fd;
	l->udp[0] = fd;
	fd = sl_listen_loopback(netns_fd, AF_INET, SOCK_STREAM, l->port, NULL);
	if (fd < 0)
		return fd;
	l->tcp[0] = fd;
	fd = sl_listen_loopback(netns_fd, AF_INET6, SOCK_DGRAM, l->port, NULL);
	if (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT)
		return 0; /* no IPv6 here: IPv4 only */
	if (fd < 0)
		return fd;
	l->udp[1] = fd;
	fd = sl_listen_loopback(netns_fd, AF_INET6, SOCK_STREAM, l->port, NULL);
	if (fd < 0)
		return fd;
	l->tcp[1] = fd;
	return 0;
}

static struct sl_dns_listener *listener_new(struct sl_dns *dns, const struct sl_dns_ops *ops,
					    void *owner)
{
	struct sl_dns_listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->dns = dns;
	l->ops = ops;
	l->owner = owner;
	l->udp[0] = l->udp[1] = l->tcp[0] = l->tcp[1] = -1;
	sl_list_init(&l->queries);
	sl_list_init(&l->tcps);
	return l;
}

/* Binds @l's sockets, on @want_port if it is free. Returns 0 or -errno. */
static int open_sockets(struct sl_dns_listener *l, uint16_t want_port, int netns_fd)
{
	int r = -EADDRINUSE;

	if (want_port) {
		r = bind_all(l, want_port, netns_fd);
		if (r)
			close_fds(l);
	}
	/* A kernel-picked UDP port may be taken for TCP or IPv6: try a few. */
	for (int tries = 0; r && tries < 16; tries++) {
		r = bind_all(l, 0, netns_fd);
		if (r)
			close_fds(l);
	}
	return r;
}

struct sl_dns_listener *sl_dns_listen(struct sl_dns *dns, const struct sl_dns_ops *ops, void *owner,
				      uint16_t want_port, int netns_fd, char *err, size_t errlen)
{
	struct sl_dns_listener *l = listener_new(dns, ops, owner);
	int r;

	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r = open_sockets(l, want_port, netns_fd);
	if (r) {
		snprintf(err, errlen, "opening the DNS listener failed: %s", strerror(-r));
		free(l);
		return NULL;
	}
	for (int i = 0; i < 2; i++) {
		if ((l->udp[i] >= 0 && sl_loop_add_fd(dns->loop, l->udp[i], SL_READ, udp_cb, l)) ||
		    (l->tcp[i] >= 0 &&
		     sl_loop_add_fd(dns->loop, l->tcp[i], SL_READ, accept_cb, l))) {
			snprintf(err, errlen, "watching the DNS listener failed");
			close_fds(l);
			free(l);
			return NULL;
		}
	}
	return l;
}

/*
 * The shared sockets, on loopback of sluiced's own network namespace: each datagram must say
 * its mark (SO_RCVMARK), the receive buffer is that of many sandboxes (SO_RCVBUFFORCE, as
 * sluiced has CAP_NET_ADMIN; else what net.core.rmem_max allows), and so is the TCP backlog.
 */
static int open_shared(struct sl_dns *dns, uint16_t want_port)
{
	struct sl_dns_listener *h = listener_new(dns, NULL, NULL);
	int r, buf = 4 << 20;

	if (!h)
		return -ENOMEM;
	r = open_sockets(h, want_port, -1);
	for (int i = 0; !r && i < 2; i++) {
		if (h->udp[i] >= 0 &&
		    (setsockopt(h->udp[i], SOL_SOCKET, SO_RCVMARK, &(int){ 1 }, sizeof(int)) ||
		     sl_loop_add_fd(dns->loop, h->udp[i], SL_READ, shared_udp_cb, dns)))
			r = errno ? -errno : -EIO;
		if (h->udp[i] >= 0 &&
		    setsockopt(h->udp[i], SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)))
			setsockopt(h->udp[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
		if (!r && h->tcp[i] >= 0 &&
		    (listen(h->tcp[i], 4096) ||
		     sl_loop_add_fd(dns->loop, h->tcp[i], SL_READ, accept_cb, h)))
			r = errno ? -errno : -EIO;
	}
	if (r) {
		close_fds(h);
		free(h);
		return r;
	}
	dns->shared = h;
	return 0;
}

struct sl_dns_listener *sl_dns_listen_shared(struct sl_dns *dns, const struct sl_dns_ops *ops,
					     void *owner, uint32_t id, uint16_t want_port,
					     char *err, size_t errlen)
{
	struct sl_dns_listener *l;
	int r;

	if (!id || id & SL_SHARED_MARK_MASK) {
		snprintf(err, errlen, "sandbox id %u cannot share the DNS listener", id);
		return NULL;
	}
	l = listener_new(dns, ops, owner);
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r = dns->shared ? 0 : open_shared(dns, want_port);
	if (r) {
		snprintf(err, errlen, "opening the shared DNS listener failed: %s", strerror(-r));
	} else if ((r = sl_idtab_put(&dns->sharers, id, l))) {
		snprintf(err, errlen, "sandbox id %u cannot join the shared DNS listener: %s", id,
			 strerror(-r));
		if (!dns->sharers.n)
			close_shared(dns);
	}
	if (r) {
		free(l);
		return NULL;
	}
	l->port = dns->shared->port;
	l->shared_id = id;
	return l;
}

void sl_dns_listener_close(struct sl_dns_listener *l)
{
	if (!l)
		return;
	while (!sl_list_empty(&l->tcps))
		tcp_close(sl_list_first(&l->tcps, struct dns_tcp, link));
	while (!sl_list_empty(&l->queries))
		query_free(sl_list_first(&l->queries, struct dns_query, link));
	sl_timer_disarm(l->dns->loop, &l->tcp_paused);
	close_fds(l);
	if (l->shared_id) {
		struct sl_dns *dns = l->dns;

		sl_idtab_del(&dns->sharers, l->shared_id);
		if (!dns->sharers.n)
			close_shared(dns);
	}
	cache_free(l);
	free(l);
}

uint16_t sl_dns_listener_port(const struct sl_dns_listener *l)
{
	return l->port;
}

const struct sl_dns_stats *sl_dns_listener_stats(const struct sl_dns_listener *l)
{
	return &l->stats;
}

int sl_dns_parse_upstream(const char *s, struct sl_dns_opts *o)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port = NULL;
	unsigned long p = 53;
	struct sockaddr_in *sin = (struct sockaddr_in *)&o->upstream;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&o->upstream;

	memset(&o->upstream, 0, sizeof(o->upstream));
	o->upstream_len = 0;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || (size_t)(close - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, close - s - 1);
		host[close - s - 1] = 0;
		if (close[1] == ':')
			port = close + 2;
		else if (close[1])
			return -EINVAL;
	} else {
		const char *colon = strchr(s, ':');

		if (colon && strchr(colon + 1, ':'))
			colon = NULL; /* bare IPv6 */
		if (strlen(s) >= sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%s", s);
		if (colon) {
			host[colon - s] = 0;
			port = colon + 1;
		}
	}
	if (port) {
		char *end;

		p = strtoul(port, &end, 10);
		if (!*port || *end || p == 0 || p > 65535)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(p);
		o->upstream_len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(p);
		o->upstream_len = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

int sl_dns_upstream_from_resolv(const char *resolv_conf, struct sl_dns_opts *o)
{
	char line[512], ns[64];
	FILE *f = fopen(resolv_conf, "re");
	int r = -ENOENT;

	if (!f)
		return -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " nameserver %63s", ns) == 1 && !sl_dns_parse_upstream(ns, o)) {
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}
