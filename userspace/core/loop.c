// SPDX-License-Identifier: MIT
/*
 * sluiced's event loop: epoll for file descriptors and a binary min-heap for timers. Every
 * socket of the daemon (control API, ring buffer, DNS and proxy listeners) is served from
 * here, so nothing in a callback may block. Registrations carry a generation so that an event
 * already fetched for an fd that a previous callback closed (and the kernel reused) is
 * dropped instead of being delivered to the new owner.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"

struct sl_fd_slot {
	sl_fd_cb *cb;
	void *arg;
	uint32_t gen;
	unsigned events;
	int active;
};

struct sl_timer {
	uint64_t deadline_ms;
	uint64_t seq; /* FIFO order among equal deadlines */
	sl_timer_cb *cb;
	void *arg;
	size_t idx;
};

struct sl_loop {
	int epfd;
	int stop;
	struct sl_fd_slot *fds;
	size_t nfds;
	struct sl_timer **heap;
	size_t nheap, capheap;
	uint64_t seq;
};

uint64_t sl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

uint64_t sl_now_ms(void)
{
	return sl_now_ns() / 1000000ULL;
}

struct sl_loop *sl_loop_new(void)
{
	struct sl_loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd == -1) {
		int err = errno;

		free(loop);
		errno = err;
		return NULL;
	}
	return loop;
}

void sl_loop_free(struct sl_loop *loop)
{
	if (!loop)
		return;
	for (size_t i = 0; i < loop->nheap; i++)
		free(loop->heap[i]);
	free(loop->heap);
	free(loop->fds);
	close(loop->epfd);
	free(loop);
}

static uint32_t to_epoll(unsigned events)
{
	return (events & SL_READ ? EPOLLIN | EPOLLRDHUP : 0) | (events & SL_WRITE ? EPOLLOUT : 0) |
	       (events & SL_RDHUP ? EPOLLRDHUP : 0);
}

static int grow_fds(struct sl_loop *loop, int fd)
{
	size_t n = loop->nfds ? loop->nfds : 64;
	struct sl_fd_slot *fds;

	while (n <= (size_t)fd)
		n *= 2;
	if (n == loop->nfds)
		return 0;
	fds = realloc(loop->fds, n * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	memset(fds + loop->nfds, 0, (n - loop->nfds) * sizeof(*fds));
	loop->fds = fds;
	loop->nfds = n;
	return 0;
}

int sl_loop_add_fd(struct sl_loop *loop, int fd, unsigned events, sl_fd_cb *cb, void *arg)
{
	struct epoll_event ev = { 0 };
	struct sl_fd_slot *s;
	int err;

	if (fd < 0)
		return -EBADF;
	err = grow_fds(loop, fd);
	if (err)
		return err;
	s = &loop->fds[fd];
	if (s->active)
		return -EEXIST;
	s->gen++;
	ev.events = to_epoll(events);
	ev.data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
		return -errno;
	s->cb = cb;
	s->arg = arg;
	s->events = events;
	s->active = 1;
	return 0;
}

int sl_loop_mod_fd(struct sl_loop *loop, int fd, unsigned events)
{
	struct epoll_event ev = { 0 };
	struct sl_fd_slot *s;

	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return -ENOENT;
	s = &loop->fds[fd];
	if (s->events == events)
		return 0;
	ev.events = to_epoll(events);
	ev.data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) == -1)
		return -errno;
	s->events = events;
	return 0;
}

void sl_loop_del_fd(struct sl_loop *loop, int fd)
{
	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->fds[fd].active = 0;
	loop->fds[fd].cb = NULL;
	loop->fds[fd].arg = NULL;
}

static int timer_less(const struct sl_timer *a, const struct sl_timer *b)
{
	return a->deadline_ms < b->deadline_ms ||
	       (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

static void heap_swap(struct sl_loop *loop, size_t i, size_t j)
{
	struct sl_timer *t = loop->heap[i];

	loop->heap[i] = loop->heap[j];
	loop->heap[j] = t;
	loop->heap[i]->idx = i;
	loop->heap[j]->idx = j;
}

static void heap_up(struct sl_loop *loop, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (!timer_less(loop->heap[i], loop->heap[p]))
			break;
		heap_swap(loop, i, p);
		i = p;
	}
}

static void heap_down(struct sl_loop *loop, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < loop->nheap && timer_less(loop->heap[l], loop->heap[m]))
			m = l;
		if (r < loop->nheap && timer_less(loop->heap[r], loop->heap[m]))
			m = r;
		if (m == i)
			break;
		heap_swap(loop, i, m);
		i = m;
	}
}

static void heap_remove(struct sl_loop *loop, size_t i)
{
	loop->nheap--;
	if (i == loop->nheap)
		return;
	loop->heap[i] = loop->heap[loop->nheap];
	loop->heap[i]->idx = i;
	heap_down(loop, i);
	heap_up(loop, i);
}

struct sl_timer *sl_loop_add_timer(struct sl_loop *loop, uint64_t delay_ms, sl_timer_cb *cb,
				   void *arg)
{
	struct sl_timer *t;

	if (loop->nheap == loop->capheap) {
		size_t cap = loop->capheap ? loop->capheap * 2 : 64;
		struct sl_timer **h = realloc(loop->heap, cap * sizeof(*h));

		if (!h)
			return NULL;
		loop->heap = h;
		loop->capheap = cap;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->deadline_ms = sl_now_ms() + delay_ms;
	t->seq = loop->seq++;
	t->cb = cb;
	t->arg = arg;
	t->idx = loop->nheap;
	loop->heap[loop->nheap++] = t;
	heap_up(loop, t->idx);
	return t;
}

void sl_loop_cancel_timer(struct sl_loop *loop, struct sl_timer *t)
{
	if (!t)
		return;
	heap_remove(loop, t->idx);
	free(t);
}

static void run_timers(struct sl_loop *loop)
{
	uint64_t now = sl_now_ms(), seq_end = loop->seq;

	/* Timers added by these callbacks wait for the next turn, after the descriptors: a
	 * zero-delay timer that re-arms itself must not hold the loop (a due timer added
	 * earlier sorts before any of them, so stopping at the first new one skips none). */
	while (loop->nheap && loop->heap[0]->deadline_ms <= now && loop->heap[0]->seq < seq_end) {
		struct sl_timer *t = loop->heap[0];

		heap_remove(loop, 0);
		t->cb(loop, t->arg);
		free(t);
	}
}

int sl_loop_run(struct sl_loop *loop)
{
	struct epoll_event evs[128];

	loop->stop = 0;
	while (!loop->stop) {
		int timeout = -1, n;

		if (loop->nheap) {
			uint64_t now = sl_now_ms(), dl = loop->heap[0]->deadline_ms;

			timeout = dl <= now ? 0 : dl - now > 60000 ? 60000 : (int)(dl - now);
		}
		n = epoll_wait(loop->epfd, evs, 128, timeout);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !loop->stop; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			uint32_t gen = evs[i].data.u64 >> 32;
			struct sl_fd_slot *s;
			unsigned events = 0;

			if ((size_t)fd >= loop->nfds)
				continue;
			s = &loop->fds[fd];
			if (!s->active || s->gen != gen)
				continue; /* closed by an earlier callback of this batch */
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP))
				events |= SL_READ;
			if (evs[i].events & EPOLLOUT)
				events |= SL_WRITE;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				events |= SL_HUP;
			s->cb(loop, fd, s->arg, events);
		}
		run_timers(loop);
	}
	return 0;
}

void sl_loop_stop(struct sl_loop *loop)
{
	loop->stop = 1;
}
