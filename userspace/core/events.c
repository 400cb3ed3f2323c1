// SPDX-License-Identifier: MIT
/*
 * Events are the audit trail of sluice: every kernel deny that passed the rate limit, and
 * everything the daemon decides. They are JSON lines, kept in a bounded ring for
 * `sluice events` and pushed to followers. Publishing never blocks the loop: a follower that
 * cannot keep up loses lines (its sink decides), the daemon does not wait for it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/addr.h"
#include "core/events.h"
#include "core/list.h"
#include "core/loop.h"

/*
 * The history is kept per sandbox, so that one sandbox's flood of events (a DNS flood is
 * thousands a second) pushes out its own lines only: each sandbox (and the sandbox-less
 * lines) has a ring of at most @keep lines, grown as it fills. All rings together hold at
 * most EV_TOTAL_RINGS_OF_KEEP times @keep lines; past that, the longest ring gives up its
 * oldest line. A removed sandbox's ring stays (`sluice events --sandbox` of a finished
 * `sluice run`) until EV_GONE_MAX newer removals push it out. Lines carry a sequence number
 * so that the history of all sandboxes replays in publication order.
 */
#define EV_TOTAL_RINGS_OF_KEEP 16
#define EV_GONE_MAX 64
#define EV_BUCKETS 256

struct kept {
	char *line;
	size_t len;
	uint64_t seq;
};

struct ring {
	char *name; /* NULL: the lines of no sandbox */
	struct kept *v; /* circular: the oldest at (head + cap - count) % cap */
	size_t cap, head, count;
	int gone; /* the sandbox was removed */
	uint64_t gone_seq; /* when (the order of removals) */
	struct sl_list hlink; /* in its hash bucket */
	struct sl_list link; /* in the list of all */
};

struct sub {
	int handle;
	char *sandbox;
	sl_event_sink *sink;
	void *arg;
	uint64_t from_seq; /* lines kept before (seq below) came in its replay, if any */
	struct sl_list link;
};

struct sl_events {
	/* The loop that owns the bus (sl_events_bind()) and its thread: the subscribers' sinks
	 * run there, and only that thread adds or removes a subscriber. */
	struct sl_loop *loop;
	pthread_t owner;
	/* The rings, the sequence and the list of subscribers: a line published on another
	 * thread (a worker's) is kept there under @mu, and posted to the bus's loop only when a
	 * subscriber wants it, so that a busy worker does not wake the main thread per turn. */
	pthread_mutex_t mu;
	size_t keep; /* lines per ring */
	size_t total, total_max; /* lines in all rings */
	uint64_t seq;
	struct sl_list buckets[EV_BUCKETS];
	struct sl_list rings;
	struct ring none; /* lines of no sandbox */
	size_t ngone;
	struct sl_list subs;
	int next_handle;
};

struct sl_events *sl_events_new(size_t keep)
{
	struct sl_events *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return NULL;
	if (pthread_mutex_init(&ev->mu, NULL)) {
		free(ev);
		return NULL;
	}
	ev->keep = keep ? keep : 1;
	ev->total_max = ev->keep * EV_TOTAL_RINGS_OF_KEEP;
	ev->next_handle = 1;
	for (size_t i = 0; i < EV_BUCKETS; i++)
		sl_list_init(&ev->buckets[i]);
	sl_list_init(&ev->rings);
	sl_list_init(&ev->subs);
	return ev;
}

static void ring_clear(struct ring *g)
{
	for (size_t i = 0; i < g->cap; i++)
		free(g->v[i].line);
	free(g->v);
	free(g->name);
}

void sl_events_free(struct sl_events *ev)
{
	struct ring *g, *gtmp;
	struct sub *s, *stmp;

	if (!ev)
		return;
	sl_list_for_each_safe(g, gtmp, &ev->rings, link) {
		ring_clear(g);
		free(g);
	}
	ring_clear(&ev->none);
	sl_list_for_each_safe(s, stmp, &ev->subs, link) {
		free(s->sandbox);
		free(s);
	}
	pthread_mutex_destroy(&ev->mu);
	free(ev);
}

static size_t bucket_of(const char *name)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % EV_BUCKETS;
}

/* The ring of @sandbox (NULL: of no sandbox); NULL if it has none. */
static struct ring *ring_find(struct sl_events *ev, const char *sandbox)
{
	struct ring *g;

	if (!sandbox)
		return &ev->none;
	sl_list_for_each(g, &ev->buckets[bucket_of(sandbox)], hlink)
		if (!strcmp(g->name, sandbox))
			return g;
	return NULL;
}

/* Frees @g and its lines (not the sandbox-less ring). */
static void ring_drop(struct sl_events *ev, struct ring *g)
{
	sl_list_del(&g->hlink);
	sl_list_del(&g->link);
	ev->total -= g->count;
	ev->ngone -= !!g->gone;
	ring_clear(g);
	free(g);
}

static struct kept *ring_at(struct ring *g, size_t i) /* i-th oldest */
{
	return &g->v[(g->head + g->cap - g->count + i) % g->cap];
}

static void ring_pop_oldest(struct sl_events *ev, struct ring *g)
{
	struct kept *k = ring_at(g, 0);

	free(k->line);
	k->line = NULL;
	g->count--;
	ev->total--;
}

/* Room for one more line in @g: grown up to @ev->keep slots, else its oldest line goes. */
static int ring_make_room(struct sl_events *ev, struct ring *g)
{
	size_t ncap;
	struct kept *v;

	if (g->count < g->cap)
		return 0;
	if (g->cap >= ev->keep) {
		ring_pop_oldest(ev, g);
		return 0;
	}
	ncap = g->cap ? g->cap * 2 : 16;
	if (ncap > ev->keep)
		ncap = ev->keep;
	v = calloc(ncap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < g->count; i++)
		v[i] = *ring_at(g, i);
	free(g->v);
	g->v = v;
	g->cap = ncap;
	g->head = g->count;
	return 0;
}

/* Keeps @line (owned from here) in the ring of @sandbox, making it if needed. */
static void keep_line(struct sl_events *ev, const char *sandbox, char *line, size_t len)
{
	struct ring *g = ring_find(ev, sandbox);
	struct kept *k;

	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g || !(g->name = strdup(sandbox))) {
			free(g);
			free(line);
			return;
		}
		sl_list_add(&ev->buckets[bucket_of(sandbox)], &g->hlink);
		sl_list_add(&ev->rings, &g->link);
	}
	if (g->gone) { /* a sandbox of that name again: its history continues */
		g->gone = 0;
		ev->ngone--;
	}
	if (ring_make_room(ev, g)) {
		free(line);
		return;
	}
	if (ev->total >= ev->total_max) {
		/* The longest history pays: a loud sandbox, never the quiet ones. */
		struct ring *big = g->count ? g : NULL, *x;

		sl_list_for_each(x, &ev->rings, link)
			if (!big || x->count > big->count)
				big = x;
		if (!big || ev->none.count > big->count)
			big = &ev->none;
		if (big->count)
			ring_pop_oldest(ev, big);
	}
	k = &g->v[g->head];
	k->line = line;
	k->len = len;
	k->seq = ev->seq++;
	g->head = (g->head + 1) % g->cap;
	g->count++;
	ev->total++;
}

void sl_events_sandbox_gone(struct sl_events *ev, const char *sandbox)
{
	struct ring *g;

	if (!ev || !sandbox)
		return;
	pthread_mutex_lock(&ev->mu);
	g = ring_find(ev, sandbox);
	if (!g || g->gone) {
		pthread_mutex_unlock(&ev->mu);
		return;
	}
	g->gone = 1;
	g->gone_seq = ev->seq++;
	ev->ngone++;
	while (ev->ngone > EV_GONE_MAX) {
		struct ring *oldest = NULL, *x;

		sl_list_for_each(x, &ev->rings, link)
			if (x->gone && (!oldest || x->gone_seq < oldest->gone_seq))
				oldest = x;
		ring_drop(ev, oldest);
	}
	pthread_mutex_unlock(&ev->mu);
}

int sl_events_known(struct sl_events *ev, const char *sandbox)
{
	struct ring *g;
	int known;

	pthread_mutex_lock(&ev->mu);
	g = ring_find(ev, sandbox);
	known = g && g->count;
	pthread_mutex_unlock(&ev->mu);
	return known;
}

static size_t replay_locked(struct sl_events *ev, const char *sandbox, size_t max_bytes,
			    sl_event_sink *sink, void *arg);

int sl_events_follow(struct sl_events *ev, const char *sandbox, size_t max_bytes,
		     sl_event_sink *sink, void *arg)
{
	struct sub *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	if (sandbox && !(s->sandbox = strdup(sandbox))) {
		free(s);
		return -1;
	}
	s->sink = sink;
	s->arg = arg;
	/* One hold: a line kept by a worker meanwhile is in the replay or comes after it. */
	pthread_mutex_lock(&ev->mu);
	if (max_bytes != SL_EVENTS_NO_REPLAY)
		replay_locked(ev, sandbox, max_bytes, sink, arg);
	s->handle = ev->next_handle++;
	s->from_seq = ev->seq;
	sl_list_add(&ev->subs, &s->link);
	pthread_mutex_unlock(&ev->mu);
	return s->handle;
}

int sl_events_subscribe(struct sl_events *ev, const char *sandbox, sl_event_sink *sink, void *arg)
{
	return sl_events_follow(ev, sandbox, SL_EVENTS_NO_REPLAY, sink, arg);
}

void sl_events_unsubscribe(struct sl_events *ev, int handle)
{
	struct sub *s;

	pthread_mutex_lock(&ev->mu);
	sl_list_for_each(s, &ev->subs, link) {
		if (s->handle == handle) {
			sl_list_del(&s->link);
			pthread_mutex_unlock(&ev->mu);
			free(s->sandbox);
			free(s);
			return;
		}
	}
	pthread_mutex_unlock(&ev->mu);
}

static int matches(const char *want, const char *have)
{
	return !want || (have && !strcmp(want, have));
}

static int cmp_kept(const void *a, const void *b)
{
	const struct kept *x = *(const struct kept *const *)a, *y = *(const struct kept *const *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

size_t sl_events_replay(struct sl_events *ev, const char *sandbox, size_t max_bytes,
			sl_event_sink *sink, void *arg)
{
	size_t left;

	pthread_mutex_lock(&ev->mu);
	left = replay_locked(ev, sandbox, max_bytes, sink, arg);
	pthread_mutex_unlock(&ev->mu);
	return left;
}

static size_t replay_locked(struct sl_events *ev, const char *sandbox, size_t max_bytes,
			    sl_event_sink *sink, void *arg)
{
	struct kept **all;
	struct ring *g;
	size_t n = 0, first, bytes = 0;

	if (sandbox) {
		g = ring_find(ev, sandbox);
		n = g ? g->count : 0;
		all = malloc((n ? n : 1) * sizeof(*all));
		if (!all)
			return n;
		for (size_t i = 0; i < n; i++)
			all[i] = ring_at(g, i);
	} else {
		/* Every ring, merged in publication order. */
		all = malloc((ev->total ? ev->total : 1) * sizeof(*all));
		if (!all)
			return ev->total;
		for (size_t i = 0; i < ev->none.count; i++)
			all[n++] = ring_at(&ev->none, i);
		sl_list_for_each(g, &ev->rings, link)
			for (size_t i = 0; i < g->count; i++)
				all[n++] = ring_at(g, i);
		qsort(all, n, sizeof(*all), cmp_kept);
	}
	/* The newest lines that fit: a history is read for what just happened. */
	for (first = n; first > 0 && (!max_bytes || bytes + all[first - 1]->len <= max_bytes);
	     first--)
		bytes += all[first - 1]->len;
	for (size_t i = first; i < n; i++)
		sink(all[i]->line, all[i]->len, arg);
	free(all);
	return first;
}

/* A kept line on its way from another thread to the bus's subscribers: a copy (the ring may
 * drop the original meanwhile), its sequence number, and the sandbox's name after it. */
struct posted_line {
	struct sl_task task; /* the first of a batch's: runs them all */
	struct posted_line *next; /* the batch's next line */
	struct sl_events *ev;
	uint64_t seq;
	size_t len;
	int has_sandbox;
	char *line;
	char sandbox[];
};

/* On the bus's thread: @line to the subscribers of @sandbox that did not get it in their
 * replay (it was kept at @seq). The list changes on this thread only: no lock to read it. */
static void deliver(struct sl_events *ev, const char *sandbox, const char *line, size_t len,
		    uint64_t seq)
{
	struct sub *s, *next;

	sl_list_for_each_safe(s, next, &ev->subs, link) { /* a sink may unsubscribe itself */
		if (matches(s->sandbox, sandbox) && seq >= s->from_seq)
			s->sink(line, len, s->arg);
	}
}

static void posted_line_run(struct sl_task *t)
{
	struct posted_line *p = sl_container_of(t, struct posted_line, task);

	while (p) {
		struct posted_line *next = p->next;

		deliver(p->ev, p->has_sandbox ? p->sandbox : NULL, p->line, p->len, p->seq);
		free(p);
		p = next;
	}
}

/*
 * The lines a thread other than the bus's published for subscribers in this turn of its loop:
 * posted to the bus's loop together when the turn's descriptors are done (a zero-delay
 * timer), so that a worker answering 32 DNS queries wakes the main thread once, not 32 times.
 * A thread without a loop posts each line at once.
 */
static __thread struct {
	struct posted_line *head, **tail;
	struct sl_events *ev;
	struct sl_loop *loop;
	struct sl_timer flush;
} batch;

static void batch_flush(void)
{
	struct posted_line *head = batch.head;

	batch.head = NULL;
	batch.tail = &batch.head;
	if (batch.loop)
		sl_timer_disarm(batch.loop, &batch.flush);
	if (head)
		sl_loop_post(head->ev->loop, &head->task, posted_line_run);
}

static void batch_flush_cb(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	(void)t;
	batch_flush();
}

void sl_events_bind(struct sl_events *ev, struct sl_loop *loop)
{
	ev->loop = loop;
	ev->owner = pthread_self();
}

static void post_line(struct posted_line *p)
{
	struct sl_events *ev = p->ev;

	if (!sl_loop_current()) {
		sl_loop_post(ev->loop, &p->task, posted_line_run);
		return;
	}
	if (batch.ev != ev || batch.loop != sl_loop_current())
		batch_flush(); /* another bus or loop than the pending lines' */
	if (!batch.tail)
		batch.tail = &batch.head;
	batch.ev = ev;
	batch.loop = sl_loop_current();
	*batch.tail = p;
	batch.tail = &p->next;
	if (!sl_timer_armed(&batch.flush))
		sl_timer_arm(batch.loop, &batch.flush, 0, batch_flush_cb);
}

/* Under @ev->mu: whether a subscriber wants lines of @sandbox. */
static int wanted(struct sl_events *ev, const char *sandbox)
{
	struct sub *s;

	sl_list_for_each(s, &ev->subs, link)
		if (matches(s->sandbox, sandbox))
			return 1;
	return 0;
}

/* Under @ev->mu: a copy of @line to post, with the sequence number keep_line() gives it next.
 * NULL if out of memory: lost, as a line a slow subscriber drops (it is kept all the same). */
static struct posted_line *posted_copy(struct sl_events *ev, const char *sandbox, const char *line,
				       size_t len)
{
	size_t n = sandbox ? strlen(sandbox) + 1 : 1;
	struct posted_line *p = malloc(sizeof(*p) + n + len + 1);

	if (!p)
		return NULL;
	p->ev = ev;
	p->next = NULL;
	p->seq = ev->seq;
	p->len = len;
	p->has_sandbox = !!sandbox;
	memcpy(p->sandbox, sandbox ? sandbox : "", n);
	p->line = p->sandbox + n;
	memcpy(p->line, line, len + 1);
	return p;
}

/* Keeps @line (malloc'd, newline-terminated, owned from here) and hands it to subscribers. */
static void publish_line(struct sl_events *ev, const char *sandbox, char *line, size_t len)
{
	struct posted_line *p = NULL;

	if (!ev->loop || pthread_equal(pthread_self(), ev->owner)) {
		/* The bus's own thread: the sinks now, then the ring. */
		deliver(ev, sandbox, line, len, UINT64_MAX);
		pthread_mutex_lock(&ev->mu);
		keep_line(ev, sandbox, line, len);
		pthread_mutex_unlock(&ev->mu);
		return;
	}
	pthread_mutex_lock(&ev->mu);
	if (wanted(ev, sandbox))
		p = posted_copy(ev, sandbox, line, len);
	keep_line(ev, sandbox, line, len); /* last: it may free @line */
	pthread_mutex_unlock(&ev->mu);
	if (p)
		post_line(p);
}

void sl_events_publish(struct sl_events *ev, const char *sandbox, json_t *obj)
{
	char *line;
	size_t len;

	if (!obj)
		return;
	if (!json_object_get(obj, "ts")) {
		/* "ts" first, as in every event line. */
		char ts[40];
		json_t *o = json_object();

		sl_format_mono_time(sl_now_ns(), ts, sizeof(ts));
		json_object_set_new(o, "ts", json_string(ts));
		json_object_update(o, obj);
		json_decref(obj);
		obj = o;
	}
	line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	if (!line)
		return;
	len = strlen(line);
	{
		char *l2 = realloc(line, len + 2);

		if (!l2) {
			free(line);
			return;
		}
		line = l2;
	}
	line[len++] = '\n';
	line[len] = 0;
	publish_line(ev, sandbox, line, len);
}

void sl_jw_publish(struct sl_jw *w, struct sl_events *ev, const char *sandbox)
{
	size_t len;
	char *line;

	if (sl_buf_append(&w->b, "}\n", 2)) {
		sl_buf_free(&w->b);
		return;
	}
	/* The buffer becomes the line (nothing was consumed from it; append left room for
	 * the NUL). */
	len = sl_buf_size(&w->b);
	line = w->b.data;
	line[len] = 0;
	memset(&w->b, 0, sizeof(w->b));
	publish_line(ev, sandbox, line, len);
}

static const char *proto_name(unsigned p)
{
	switch (p) {
	case 6:
		return "tcp";
	case 17:
		return "udp";
	case 1:
		return "icmp";
	case 58:
		return "icmpv6";
	case 132:
		return "sctp";
	case 136:
		return "udplite";
	case 255:
		return "raw";
	case 262:
		return "mptcp";
	default:
		return NULL;
	}
}

static const char *socktype_name(unsigned t)
{
	switch (t) {
	case 1:
		return "stream";
	case 2:
		return "dgram";
	case 3:
		return "raw";
	case 5:
		return "seqpacket";
	default:
		return "other";
	}
}

static const char *kind_name(unsigned kind)
{
	switch (kind) {
	case SL_EV_CONNECT:
	case SL_EV_PROXIED_FULL:
		return "connect";
	case SL_EV_SENDMSG:
		return "sendmsg";
	case SL_EV_SETSOCKOPT:
		return "setsockopt";
	case SL_EV_EGRESS:
		return "egress";
	case SL_EV_BIND:
		return "bind";
	case SL_EV_SNI:
		return "tls_hello";
	default:
		return "socket";
	}
}

/* The option a setsockopt event names (only those the kernel refuses are reported). */
static const char *sockopt_name(unsigned level, unsigned optname)
{
	if (level == 0 && optname == 4)
		return "IP_OPTIONS";
	if (level == 41 && optname == 57)
		return "IPV6_RTHDR";
	if (level == 41 && optname == 5)
		return "IPV6_2292RTHDR";
	if (level == 41 && optname == 6)
		return "IPV6_2292PKTOPTIONS";
	return NULL;
}

static const char *drop_reason(unsigned reason)
{
	switch (reason) {
	case SL_DROP_IPOPTS:
		return "ip_options";
	case SL_DROP_RTHDR:
		return "routing_header";
	case SL_DROP_DST:
		return "destination_changed";
	case SL_DROP_LISTENER:
		return "listener";
	case SL_DROP_RULES:
		return "rules";
	case SL_DROP_PROTO:
		return "protocol";
	case SL_DROP_SNI:
		return "tls_server_name_unchecked";
	default:
		return "other";
	}
}

/* Why the kernel SNI check refused a connection's first TLS record (SL_EV_SNI). */
static const char *sni_reason(unsigned reason)
{
	switch (reason) {
	case SL_SNIR_NOT_HELLO:
		return "passthrough refused: the first bytes are not a TLS ClientHello";
	case SL_SNIR_TOO_BIG:
		return "passthrough refused: a TLS record longer than 16 KiB";
	case SL_SNIR_MALFORMED:
		return "passthrough refused: malformed TLS ClientHello";
	case SL_SNIR_NO_SNI:
		return "passthrough refused: ClientHello without SNI";
	case SL_SNIR_ECH:
		return "passthrough refused: ClientHello with Encrypted Client Hello (the real "
		       "server name is hidden)";
	case SL_SNIR_NAME:
		return "passthrough refused: the TLS server name did not resolve to this address "
		       "and port for this sandbox";
	case SL_SNIR_EARLY:
		return "passthrough refused: bytes were sent before the ClientHello";
	default:
		return "passthrough refused";
	}
}

json_t *sl_event_json(const struct sl_event *kev, const char *sandbox)
{
	char ts[40], comm[17], addr[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN + 10];
	const char *proto = proto_name(kev->proto);
	json_t *j;

	sl_format_mono_time(kev->ts_ns, ts, sizeof(ts));
	memcpy(comm, kev->comm, 16);
	comm[16] = 0;
	/* A task names itself: keep the JSON valid whatever bytes it chose. */
	for (char *p = comm; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	/* Audit mode's record: allowed, what enforce mode would have denied. */
	j = json_pack("{s:s, s:s, s:o, s:s}", "ts", ts, "type",
		      kev->verdict == SL_VERDICT_AUDIT ? "audit" : "deny", "sandbox",
		      sandbox ? json_string(sandbox) : json_null(), "op", kind_name(kev->kind));
	if (!j)
		return NULL;
	if (kev->verdict == SL_VERDICT_AUDIT)
		json_object_set_new(j, "mode", json_string("audit"));
	if (kev->kind == SL_EV_PROXIED_FULL)
		json_object_set_new(j, "reason",
				    json_string("too many intercepted connections not yet accepted "
						"(sl_proxied quota of the sandbox)"));
	if (kev->family == AF_UNIX) {
		/* The record is a struct sl_event_unix (checked by sl_bpf_events_poll()). */
		const struct sl_event_unix *u = (const struct sl_event_unix *)kev;
		struct sl_unix_key k = { .len = u->path_len };
		char path[SL_UNIX_PATH_MAX * 4 + 2];

		memcpy(k.path, u->path, sizeof(k.path));
		sl_unix_str(&k, path, sizeof(path));
		json_object_set_new(j, "family", json_string("unix"));
		json_object_set_new(j, "socktype", json_string(socktype_name(kev->socktype)));
		json_object_set_new(j, "dst", json_string(path));
	} else if (kev->kind == SL_EV_SOCKET || kev->kind == SL_EV_SETSOCKOPT) {
		json_object_set_new(j, "family",
				    json_string(kev->family == AF_INET	? "inet" :
						kev->family == AF_INET6 ? "inet6" :
									  "other"));
		json_object_set_new(j, "socktype", json_string(socktype_name(kev->socktype)));
	}
	if (kev->family == AF_UNIX) {
		/* its address is above */
	} else if (kev->kind == SL_EV_SOCKET) {
		json_object_set_new(j, "protocol", json_integer(kev->proto));
	} else if (kev->kind == SL_EV_SETSOCKOPT) {
		const char *opt = sockopt_name(kev->proto, kev->port);

		json_object_set_new(j, "level", json_string(kev->proto == 0 ? "ip" : "ipv6"));
		json_object_set_new(j, "option", opt ? json_string(opt) : json_integer(kev->port));
	} else {
		inet_ntop(kev->family == AF_INET ? AF_INET : AF_INET6, kev->addr, addr,
			  sizeof(addr));
		if (kev->family == AF_INET)
			snprintf(dst, sizeof(dst), "%s:%u", addr, kev->port);
		else
			snprintf(dst, sizeof(dst), "[%s]:%u", addr, kev->port);
		json_object_set_new(j, "proto",
				    proto ? json_string(proto) : json_integer(kev->proto));
		/* A bind names the local address it wanted, not a destination. */
		json_object_set_new(j, kev->kind == SL_EV_BIND ? "addr" : "dst", json_string(dst));
		if (kev->kind == SL_EV_EGRESS)
			json_object_set_new(j, "reason", json_string(drop_reason(kev->reason)));
		if (kev->kind == SL_EV_SNI)
			json_object_set_new(j, "reason", json_string(sni_reason(kev->reason)));
	}
	json_object_set_new(j, "pid", json_integer(kev->pid));
	json_object_set_new(j, "comm", json_string(comm));
	if (!sandbox)
		json_object_set_new(j, "cgroup_id", json_integer((json_int_t)kev->cgroup_id));
	return j;
}
