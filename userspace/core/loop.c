// SPDX-License-Identifier: MIT
/*
 * sluiced's event loop: epoll for file descriptors and a binary min-heap for timers. Every
 * socket of the daemon (control API, ring buffer, DNS and proxy listeners) is served from
 * here, so nothing in a callback may block (the one exception, an operator's KV write and its
 * fsync, is in loop.h). Registrations carry a generation so that an event
 * already fetched for an fd that a previous callback closed (and the kernel reused) is
 * dropped instead of being delivered to the new owner.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/list.h"
#include "core/loop.h"

struct sl_fd_slot {
	sl_fd_cb *cb;
	void *arg;
	uint32_t gen;
	unsigned events;
	int active;
};

struct sl_loop {
	int epfd;
	int stop; /* atomic: sl_loop_stop() may come from another thread */
	/* Tasks posted from any thread (sl_loop_post()): a queue under @mu, and an eventfd the
	 * loop watches, written when the queue stops being empty. */
	pthread_mutex_t mu;
	struct sl_task *posted, **posted_tail;
	int efd;
	struct sl_fd_slot *fds;
	size_t nfds;
	struct sl_timer_node *heap; /* the earliest timer, the root of the heap */
	size_t nheap;
	uint64_t seq;
};

static __thread struct sl_loop *current;

static void posted_cb(struct sl_loop *loop, int fd, void *arg, unsigned events);

static struct sl_timer *timer_of(struct sl_timer_node *n)
{
	return sl_container_of(n, struct sl_timer, node);
}

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
	pthread_mutex_init(&loop->mu, NULL);
	loop->posted_tail = &loop->posted;
	loop->efd = -1;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd == -1)
		goto fail;
	loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->efd == -1)
		goto fail;
	if (sl_loop_add_fd(loop, loop->efd, SL_READ, posted_cb, NULL) < 0)
		goto fail;
	return loop;
fail : {
	int err = errno ? errno : ENOMEM;

	if (loop->efd >= 0)
		close(loop->efd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	free(loop->fds);
	pthread_mutex_destroy(&loop->mu);
	free(loop);
	errno = err;
	return NULL;
}
}

void sl_loop_free(struct sl_loop *loop)
{
	if (!loop)
		return;
	while (loop->heap) {
		struct sl_timer *t = timer_of(loop->heap);

		sl_timer_disarm(loop, t);
	}
	free(loop->fds);
	close(loop->efd);
	close(loop->epfd);
	pthread_mutex_destroy(&loop->mu);
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

int sl_loop_rebind_fd(struct sl_loop *loop, int fd, unsigned events, sl_fd_cb *cb, void *arg)
{
	int err = sl_loop_mod_fd(loop, fd, events);

	if (err)
		return err;
	loop->fds[fd].cb = cb;
	loop->fds[fd].arg = arg;
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

/*
 * The timers: a binary min-heap whose nodes live in the timers themselves (libuv's
 * heap-inl.h), a complete binary tree linked by pointers instead of an array, so that arming
 * never allocates. The last node of the bottom row is found from the count: the bits of the
 * 1-based position below its top bit are the path from the root (0 left, 1 right).
 */
static int node_less(struct sl_timer_node *na, struct sl_timer_node *nb)
{
	const struct sl_timer *a = timer_of(na), *b = timer_of(nb);

	return a->deadline_ms < b->deadline_ms ||
	       (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

/* Swaps @child with its parent @parent (their places in the tree, not their contents). */
static void node_swap(struct sl_loop *loop, struct sl_timer_node *parent,
		      struct sl_timer_node *child)
{
	struct sl_timer_node *sibling, t = *parent;

	*parent = *child;
	*child = t;
	parent->parent = child;
	if (child->left == child) {
		child->left = parent;
		sibling = child->right;
	} else {
		child->right = parent;
		sibling = child->left;
	}
	if (sibling)
		sibling->parent = child;
	if (parent->left)
		parent->left->parent = parent;
	if (parent->right)
		parent->right->parent = parent;
	if (!child->parent)
		loop->heap = child;
	else if (child->parent->left == parent)
		child->parent->left = child;
	else
		child->parent->right = child;
}

/* The link that holds (or would hold) the node at 1-based position @pos. */
static struct sl_timer_node **heap_slot(struct sl_loop *loop, size_t pos,
					struct sl_timer_node **parent)
{
	struct sl_timer_node **slot = &loop->heap;
	size_t path = 0;
	unsigned k = 0;

	*parent = NULL;
	for (; pos >= 2; k++, pos /= 2)
		path = path << 1 | (pos & 1);
	for (; k; k--, path >>= 1) {
		*parent = *slot;
		slot = path & 1 ? &(*slot)->right : &(*slot)->left;
	}
	return slot;
}

static void heap_insert(struct sl_loop *loop, struct sl_timer_node *n)
{
	struct sl_timer_node *parent, **slot = heap_slot(loop, loop->nheap + 1, &parent);

	n->left = n->right = NULL;
	n->parent = parent;
	*slot = n;
	loop->nheap++;
	while (n->parent && node_less(n, n->parent))
		node_swap(loop, n->parent, n);
}

static void heap_remove(struct sl_loop *loop, struct sl_timer_node *n)
{
	struct sl_timer_node *parent, **slot = heap_slot(loop, loop->nheap, &parent);
	struct sl_timer_node *last = *slot, *smallest;

	/* The last node takes @n's place, then sinks or rises to where it belongs. */
	*slot = NULL;
	loop->nheap--;
	if (last == n)
		return;
	last->left = n->left;
	last->right = n->right;
	last->parent = n->parent;
	if (last->left)
		last->left->parent = last;
	if (last->right)
		last->right->parent = last;
	if (!n->parent)
		loop->heap = last;
	else if (n->parent->left == n)
		n->parent->left = last;
	else
		n->parent->right = last;
	for (;;) {
		smallest = last;
		if (last->left && node_less(last->left, smallest))
			smallest = last->left;
		if (last->right && node_less(last->right, smallest))
			smallest = last->right;
		if (smallest == last)
			break;
		node_swap(loop, last, smallest);
	}
	while (last->parent && node_less(last, last->parent))
		node_swap(loop, last->parent, last);
}

void sl_timer_disarm(struct sl_loop *loop, struct sl_timer *t)
{
	if (!t->armed)
		return;
	heap_remove(loop, &t->node);
	t->armed = 0;
}

void sl_timer_arm(struct sl_loop *loop, struct sl_timer *t, uint64_t delay_ms, sl_timer_fn *fn)
{
	sl_timer_disarm(loop, t);
	t->deadline_ms = sl_now_ms() + delay_ms;
	t->seq = loop->seq++;
	t->fn = fn;
	t->armed = 1;
	heap_insert(loop, &t->node);
}

static void run_timers(struct sl_loop *loop)
{
	uint64_t now = sl_now_ms(), seq_end = loop->seq;

	/* Timers added by these callbacks wait for the next turn, after the descriptors: a
	 * zero-delay timer that re-arms itself must not hold the loop (a due timer added
	 * earlier sorts before any of them, so stopping at the first new one skips none). */
	while (loop->heap && timer_of(loop->heap)->deadline_ms <= now &&
	       timer_of(loop->heap)->seq < seq_end) {
		struct sl_timer *t = timer_of(loop->heap);

		sl_timer_disarm(loop, t);
		t->fn(loop, t);
	}
}

int sl_loop_run(struct sl_loop *loop)
{
	struct epoll_event evs[128];

	struct sl_loop *outer = current;

	__atomic_store_n(&loop->stop, 0, __ATOMIC_RELAXED);
	current = loop;
	while (!__atomic_load_n(&loop->stop, __ATOMIC_RELAXED)) {
		int timeout = -1, n;

		if (loop->heap) {
			uint64_t now = sl_now_ms(), dl = timer_of(loop->heap)->deadline_ms;

			timeout = dl <= now ? 0 : dl - now > 60000 ? 60000 : (int)(dl - now);
		}
		n = epoll_wait(loop->epfd, evs, 128, timeout);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			current = outer;
			return -errno;
		}
		for (int i = 0; i < n && !__atomic_load_n(&loop->stop, __ATOMIC_RELAXED); i++) {
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
	current = outer;
	return 0;
}

static void wake(struct sl_loop *loop)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, the loop is woken already. */
	if (write(loop->efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		abort(); /* an eventfd write fails for no other reason */
}

void sl_loop_stop(struct sl_loop *loop)
{
	__atomic_store_n(&loop->stop, 1, __ATOMIC_RELAXED);
	if (current != loop)
		wake(loop);
}

struct sl_loop *sl_loop_current(void)
{
	return current;
}

void sl_loop_post(struct sl_loop *loop, struct sl_task *t, sl_task_fn *fn)
{
	int was_empty;

	t->fn = fn;
	t->next = NULL;
	pthread_mutex_lock(&loop->mu);
	was_empty = !loop->posted;
	*loop->posted_tail = t;
	loop->posted_tail = &t->next;
	pthread_mutex_unlock(&loop->mu);
	if (was_empty)
		wake(loop);
}

/* Runs the tasks posted until now (those they post run on the next turn). Returns how many. */
static size_t run_posted(struct sl_loop *loop)
{
	struct sl_task *t;
	size_t n = 0;

	pthread_mutex_lock(&loop->mu);
	t = loop->posted;
	loop->posted = NULL;
	loop->posted_tail = &loop->posted;
	pthread_mutex_unlock(&loop->mu);
	while (t) {
		struct sl_task *next = t->next;

		t->fn(t);
		t = next;
		n++;
	}
	return n;
}

static void posted_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	uint64_t n;

	(void)arg;
	(void)events;
	/* Read first: a task posted while these run writes the eventfd again. */
	if (read(fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
		return;
	run_posted(loop);
}

int sl_loop_has_posted(struct sl_loop *loop)
{
	int r;

	pthread_mutex_lock(&loop->mu);
	r = loop->posted != NULL;
	pthread_mutex_unlock(&loop->mu);
	return r;
}

void sl_loop_drain(struct sl_loop *loop)
{
	while (run_posted(loop))
		;
}

struct call {
	struct sl_task task;
	void (*fn)(void *arg);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
};

static void call_run(struct sl_task *t)
{
	struct call *c = sl_container_of(t, struct call, task);

	c->fn(c->arg);
	pthread_mutex_lock(&c->mu);
	c->done = 1;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void sl_loop_call(struct sl_loop *loop, void (*fn)(void *arg), void *arg)
{
	struct call c = { .fn = fn, .arg = arg };

	if (current == loop) {
		fn(arg);
		return;
	}
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	sl_loop_post(loop, &c.task, call_run);
	pthread_mutex_lock(&c.mu);
	while (!c.done)
		pthread_cond_wait(&c.cv, &c.mu);
	pthread_mutex_unlock(&c.mu);
	pthread_cond_destroy(&c.cv);
	pthread_mutex_destroy(&c.mu);
}
