/* SPDX-License-Identifier: MIT */
/* A small epoll event loop with one-shot timers (after Redis's ae.c). Loop thread only. */
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
typedef void sl_timer_cb(struct sl_loop *loop, void *arg);

struct sl_loop *sl_loop_new(void);
void sl_loop_free(struct sl_loop *loop);

/* Watches @fd for @events (SL_READ|SL_WRITE|SL_RDHUP). Returns 0 or -errno. */
int sl_loop_add_fd(struct sl_loop *loop, int fd, unsigned events, sl_fd_cb *cb, void *arg);
int sl_loop_mod_fd(struct sl_loop *loop, int fd, unsigned events);
/* Stops watching @fd; pending events for it in the current batch are dropped. Call before
 * close(). */
void sl_loop_del_fd(struct sl_loop *loop, int fd);

/* Calls @cb once after @delay_ms. The timer belongs to the loop: it is freed after it fires
 * or when cancelled. Returns NULL on allocation failure. */
struct sl_timer *sl_loop_add_timer(struct sl_loop *loop, uint64_t delay_ms, sl_timer_cb *cb,
				   void *arg);
/* Cancels a timer that has not fired yet. Accepts NULL. */
void sl_loop_cancel_timer(struct sl_loop *loop, struct sl_timer *t);

/* Runs until sl_loop_stop(). Returns 0 or -errno of a failed epoll_wait. */
int sl_loop_run(struct sl_loop *loop);
void sl_loop_stop(struct sl_loop *loop);

/* CLOCK_MONOTONIC in milliseconds and nanoseconds (the clock of bpf_ktime_get_ns). */
uint64_t sl_now_ms(void);
uint64_t sl_now_ns(void);

#endif
