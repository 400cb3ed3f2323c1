/* SPDX-License-Identifier: MIT */
/*
 * A small epoll event loop with one-shot timers embedded in their owners (after Redis's ae.c).
 *
 * Threading: a loop and everything registered with it belong to the thread that runs
 * sl_loop_run() (the loop thread); no call here is safe from another thread but
 * sl_loop_post(), sl_loop_call() and sl_loop_stop(), the one way between threads: a task
 * posted to a loop runs on its thread (a queue under a mutex and an eventfd the loop watches).
 * sluiced runs several loops: the main thread's (control API, registry, kernel events) and one
 * per worker (the sandboxes placed there: their listeners, connections, Lua states, timers).
 * The rule that keeps this free of deadlock: sl_loop_call() waits, so only the main thread
 * calls it, and a worker never waits on the main thread (it posts). Nothing here blocks but
 * sl_loop_run() and sl_loop_call(), and no callback may block, with one exception chosen and
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
/* Any thread: sl_loop_run() returns after the callback running now. */
void sl_loop_stop(struct sl_loop *loop);

/* A task for another loop's thread, embedded in its owner like a timer (posting never
 * allocates, so it cannot fail). From posting until fn() is called the task is the loop's:
 * post it again only after that (fn() may). */
struct sl_task;
typedef void sl_task_fn(struct sl_task *t);
struct sl_task {
	sl_task_fn *fn;
	struct sl_task *next; /* the loop's */
};
/* Any thread: runs @fn(@t) on @loop's thread, after the callback running now, in the order
 * posted (tasks of one poster keep their order). A task posted to a loop that no thread runs
 * waits for sl_loop_run() or sl_loop_drain(). */
void sl_loop_post(struct sl_loop *loop, struct sl_task *t, sl_task_fn *fn);
/* Runs the tasks posted to @loop on the calling thread, until none is left: for a loop that no
 * thread runs any more (shutdown, after its thread was joined). */
void sl_loop_drain(struct sl_loop *loop);
/* Whether a task waits in @loop's queue (any thread; true only for that instant). */
int sl_loop_has_posted(struct sl_loop *loop);
/* Runs @fn(@arg) on @loop's thread and waits for it: at once if that is the calling thread.
 * Main thread only, on a loop some thread runs (see Threading above: a worker never waits on
 * the main thread, so this cannot deadlock). For short reads of a worker's objects. */
void sl_loop_call(struct sl_loop *loop, void (*fn)(void *arg), void *arg);
/* The loop the calling thread is running (inside sl_loop_run()), NULL if none. */
struct sl_loop *sl_loop_current(void);

/* CLOCK_MONOTONIC in milliseconds and nanoseconds (the clock of bpf_ktime_get_ns). */
uint64_t sl_now_ms(void);
uint64_t sl_now_ns(void);

#endif
