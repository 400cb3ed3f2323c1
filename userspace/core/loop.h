/* SPDX-License-Identifier: MIT */
/*
 * A small epoll event loop with one-shot timers embedded in their owners (after Redis's ae.c).
 *
 * Threading: a loop and everything registered with it belong to the thread that runs
 * sl_loop_run() (the loop thread); no call here is safe from another thread. Nothing here
 * blocks but sl_loop_run() itself, and no callback may block, with one exception chosen and
 * bounded: an operator's KV write (PUT or DELETE /v1/kv) commits with an fsync before its
 * answer, as Redis's appendfsync always does (store/kv.h, ARCHITECTURE.md "Threads").
 */
#ifndef SL_LOOP_H
#define SL_LOOP_H

#include <stdint.h>

#define SL_READ 0x1
#define SL_WRITE 0x2
#define SL_HUP 0x4 /* error or hang-up: delivered whatever was asked for */
/* Only the peer's end of sending (delivered as SL_READ): for sockets whose bytes the kernel
 * moves elsewhere, so that their data wakes nobody (see splice.c). */
#define SL_RDHUP 0x8

struct sl_loop;
struct sl_timer;

typedef void sl_fd_cb(struct sl_loop *loop, int fd, void *arg, unsigned events);
/* An embedded timer's callback: @t is the owner's member (sl_container_of() gets the owner),
 * already disarmed when called, so the callback may re-arm it or free its owner. */
typedef void sl_timer_fn(struct sl_loop *loop, struct sl_timer *t);

/* A timer that lives in its owner (nginx's ngx_event_t timer, libuv's uv_timer_t): arming
 * links it into the loop's heap through the node below and never allocates, so it cannot
 * fail. A zeroed struct is a disarmed timer. The members are the loop's: read none of them
 * (sl_timer_armed() says whether it is armed). An owner disarms it before freeing itself. */
struct sl_timer_node {
	struct sl_timer_node *left, *right, *parent;
};
struct sl_timer {
	struct sl_timer_node node;
	uint64_t deadline_ms;
	uint64_t seq; /* FIFO order among equal deadlines */
	sl_timer_fn *fn;
	int armed;
};

struct sl_loop *sl_loop_new(void);
/* Frees the loop; a timer still armed is left disarmed, never called. */
void sl_loop_free(struct sl_loop *loop);

/* Watches @fd for @events (SL_READ|SL_WRITE|SL_RDHUP). Returns 0 or -errno. */
int sl_loop_add_fd(struct sl_loop *loop, int fd, unsigned events, sl_fd_cb *cb, void *arg);
int sl_loop_mod_fd(struct sl_loop *loop, int fd, unsigned events);
/* Hands watched @fd to another owner: its callback, argument and @events (an epoll_ctl()
 * only if @events change). An event of the current batch not yet delivered goes to the new
 * owner. Returns 0, -ENOENT if @fd is not watched, or -errno (the old owner keeps it). */
int sl_loop_rebind_fd(struct sl_loop *loop, int fd, unsigned events, sl_fd_cb *cb, void *arg);
/* Stops watching @fd; pending events for it in the current batch are dropped. Call before
 * close(). */
void sl_loop_del_fd(struct sl_loop *loop, int fd);

/* Calls @fn(loop, @t) once, @delay_ms from now. Arming an armed timer moves its deadline
 * (and replaces @fn); cannot fail. A timer armed from a timer callback, even with a zero
 * delay, fires on a later turn of the loop, after the descriptors. O(log n). */
void sl_timer_arm(struct sl_loop *loop, struct sl_timer *t, uint64_t delay_ms, sl_timer_fn *fn);
/* Disarms @t if armed; nothing otherwise (idempotent, also on a zeroed timer). O(log n). */
void sl_timer_disarm(struct sl_loop *loop, struct sl_timer *t);
static inline int sl_timer_armed(const struct sl_timer *t)
{
	return t->armed;
}

/* Runs until sl_loop_stop(). Returns 0 or -errno of a failed epoll_wait. */
int sl_loop_run(struct sl_loop *loop);
void sl_loop_stop(struct sl_loop *loop);

/* CLOCK_MONOTONIC in milliseconds and nanoseconds (the clock of bpf_ktime_get_ns). */
uint64_t sl_now_ms(void);
uint64_t sl_now_ns(void);

#endif
