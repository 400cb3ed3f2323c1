// SPDX-License-Identifier: MIT
/* core/loop.c's timers: embedded timers fire in deadline order (FIFO among equals), disarm is
 * idempotent, a callback re-arms its own timer or disarms another, and the heap stays a heap
 * through thousands of random arms and disarms; a descriptor handed to another owner
 * (sl_loop_rebind_fd) wakes the new one only; tasks posted from other threads run on the loop's
 * thread in the order posted, a completion posted back reaches the poster's loop, and
 * sl_loop_call() waits for its function on a loop another thread runs. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/list.h"
#include "core/loop.h"

struct owner {
	int id;
	int fired;
	struct sl_timer t;
};

static int order[64], norder;

static void record(struct sl_loop *loop, struct sl_timer *t)
{
	struct owner *o = sl_container_of(t, struct owner, t);

	(void)loop;
	o->fired++;
	if (norder < 64)
		order[norder++] = o->id;
}

static void stop(struct sl_loop *loop, struct sl_timer *t)
{
	(void)t;
	sl_loop_stop(loop);
}

static void test_order_and_disarm(void **state)
{
	struct sl_loop *loop = sl_loop_new();
	struct owner o[5] = { { .id = 0 }, { .id = 1 }, { .id = 2 }, { .id = 3 }, { .id = 4 } };
	struct sl_timer end = { 0 };

	(void)state;
	assert_non_null(loop);
	norder = 0;
	assert_false(sl_timer_armed(&o[0].t));
	sl_timer_disarm(loop, &o[0].t); /* zeroed: disarmed, harmless */
	sl_timer_arm(loop, &o[3].t, 20, record);
	sl_timer_arm(loop, &o[1].t, 0, record);
	sl_timer_arm(loop, &o[2].t, 0, record); /* same deadline as 1: after it */
	sl_timer_arm(loop, &o[4].t, 5, record);
	sl_timer_arm(loop, &o[0].t, 1000, record);
	sl_timer_arm(loop, &o[0].t, 10, record); /* re-armed: moved, not doubled */
	assert_true(sl_timer_armed(&o[4].t));
	sl_timer_disarm(loop, &o[4].t);
	sl_timer_disarm(loop, &o[4].t); /* twice: harmless */
	assert_false(sl_timer_armed(&o[4].t));
	sl_timer_arm(loop, &end, 40, stop);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(norder, 4);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 0);
	assert_int_equal(order[3], 3);
	assert_int_equal(o[0].fired, 1);
	assert_int_equal(o[4].fired, 0);
	for (int i = 0; i < 5; i++)
		assert_false(sl_timer_armed(&o[i].t));
	sl_loop_free(loop);
}

/* A periodic timer: re-armed from its own callback, also with a zero delay (which must wait
 * for the next turn, not spin inside one). */
struct periodic {
	int n, limit;
	uint64_t delay_ms;
	struct sl_timer t;
};

static void tick(struct sl_loop *loop, struct sl_timer *t)
{
	struct periodic *p = sl_container_of(t, struct periodic, t);

	assert_false(sl_timer_armed(t)); /* disarmed before the call */
	if (++p->n < p->limit)
		sl_timer_arm(loop, t, p->delay_ms, tick);
	else
		sl_loop_stop(loop);
}

static void test_rearm_from_callback(void **state)
{
	struct sl_loop *loop = sl_loop_new();
	struct periodic p = { .limit = 5, .delay_ms = 1 }, z = { .limit = 1000, .delay_ms = 0 };

	(void)state;
	sl_timer_arm(loop, &p.t, 1, tick);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(p.n, 5);
	assert_false(sl_timer_armed(&p.t));

	sl_timer_arm(loop, &z.t, 0, tick);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(z.n, 1000);
	sl_loop_free(loop);
}

/* A callback that disarms a timer due in the same turn, and one that frees its own owner. */
struct pair {
	struct sl_timer a, b;
	int a_fired, b_fired;
};

static void fire_a(struct sl_loop *loop, struct sl_timer *t)
{
	struct pair *p = sl_container_of(t, struct pair, a);

	p->a_fired++;
	sl_timer_disarm(loop, &p->b);
}

static void fire_b(struct sl_loop *loop, struct sl_timer *t)
{
	struct pair *p = sl_container_of(t, struct pair, b);

	(void)loop;
	p->b_fired++;
}

static void free_self(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	free(sl_container_of(t, struct owner, t));
}

static void test_disarm_and_free_from_callback(void **state)
{
	struct sl_loop *loop = sl_loop_new();
	struct pair p = { 0 };
	struct owner *o = calloc(1, sizeof(*o));
	struct sl_timer end = { 0 };

	(void)state;
	assert_non_null(o);
	sl_timer_arm(loop, &p.a, 0, fire_a);
	sl_timer_arm(loop, &p.b, 0, fire_b);
	sl_timer_arm(loop, &o->t, 0, free_self);
	sl_timer_arm(loop, &end, 20, stop);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(p.a_fired, 1);
	assert_int_equal(p.b_fired, 0);
	sl_loop_free(loop);
}

/* Thousands of timers armed, re-armed and disarmed at random: every one still armed fires,
 * in deadline order, and none that was disarmed does. */
#define N 3000
static struct owner many[N];
static uint64_t last_deadline;
static int nfired, out_of_order;

static void check_order(struct sl_loop *loop, struct sl_timer *t)
{
	struct owner *o = sl_container_of(t, struct owner, t);

	(void)loop;
	if (t->deadline_ms < last_deadline)
		out_of_order++;
	last_deadline = t->deadline_ms;
	o->fired++;
	nfired++;
}

static void test_random_heap(void **state)
{
	struct sl_loop *loop = sl_loop_new();
	struct sl_timer end = { 0 };
	int armed = 0;

	(void)state;
	srand(42);
	for (int round = 0; round < 4 * N; round++) {
		struct owner *o = &many[rand() % N];

		if (rand() % 3)
			sl_timer_arm(loop, &o->t, rand() % 50, check_order);
		else
			sl_timer_disarm(loop, &o->t);
	}
	for (int i = 0; i < N; i++)
		armed += sl_timer_armed(&many[i].t);
	sl_timer_arm(loop, &end, 200, stop);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(nfired, armed);
	assert_int_equal(out_of_order, 0);
	for (int i = 0; i < N; i++) {
		assert_true(many[i].fired <= 1);
		assert_false(sl_timer_armed(&many[i].t));
	}
	sl_loop_free(loop);
}

static int woke[2];

static void wake_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	char b[8];

	(void)events;
	woke[*(int *)arg]++;
	assert_true(read(fd, b, sizeof(b)) > 0);
	sl_loop_stop(loop);
}

static void test_rebind_fd(void **state)
{
	struct sl_loop *loop = sl_loop_new();
	int p[2], who[2] = { 0, 1 };

	(void)state;
	assert_non_null(loop);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(sl_loop_add_fd(loop, p[0], SL_READ, wake_cb, &who[0]), 0);
	assert_int_equal(sl_loop_rebind_fd(loop, p[0], SL_READ, wake_cb, &who[1]), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(sl_loop_run(loop), 0);
	assert_int_equal(woke[0], 0);
	assert_int_equal(woke[1], 1);
	assert_int_equal(sl_loop_rebind_fd(loop, p[1], SL_READ, wake_cb, &who[0]), -ENOENT);
	sl_loop_del_fd(loop, p[0]);
	close(p[0]);
	close(p[1]);
	sl_loop_free(loop);
}

/* Tasks across threads: a worker loop on its own thread, a main loop here. */
#define NPOSTERS 3
#define NTASKS 2000

struct ptask {
	struct sl_task task;
	struct sl_loop *back; /* where the completion goes */
	int poster, seq;
	pthread_t ran_on;
};

static struct sl_loop *worker_loop, *main_loop;
static int last_seq[NPOSTERS], out_of_order, ran_elsewhere, completed;
static pthread_t worker_thread;

static void completion(struct sl_task *t)
{
	(void)t;
	if (++completed == NPOSTERS * NTASKS)
		sl_loop_stop(main_loop);
}

static void on_worker(struct sl_task *t)
{
	struct ptask *p = sl_container_of(t, struct ptask, task);

	if (sl_loop_current() != worker_loop || !pthread_equal(pthread_self(), worker_thread))
		ran_elsewhere++;
	if (p->seq != last_seq[p->poster] + 1)
		out_of_order++;
	last_seq[p->poster] = p->seq;
	sl_loop_post(p->back, &p->task, completion);
}

static void *run_worker(void *arg)
{
	(void)arg;
	sl_loop_run(worker_loop);
	return NULL;
}

struct poster {
	int id;
	struct ptask *tasks;
};

static void *run_poster(void *arg)
{
	struct poster *p = arg;

	for (int i = 0; i < NTASKS; i++) {
		p->tasks[i] = (struct ptask){ .back = main_loop, .poster = p->id, .seq = i + 1 };
		sl_loop_post(worker_loop, &p->tasks[i].task, on_worker);
	}
	return NULL;
}

static void read_count(void *arg)
{
	*(int *)arg = sl_loop_current() == worker_loop ? last_seq[0] : -1;
}

static void stop_task(struct sl_task *t)
{
	(void)t;
	sl_loop_stop(sl_loop_current());
}

static void test_post_across_threads(void **state)
{
	struct poster posters[NPOSTERS];
	pthread_t pt[NPOSTERS];
	struct sl_task stop = { 0 };
	int seen = 0;

	(void)state;
	worker_loop = sl_loop_new();
	main_loop = sl_loop_new();
	assert_non_null(worker_loop);
	assert_non_null(main_loop);
	assert_null(sl_loop_current());
	assert_int_equal(pthread_create(&worker_thread, NULL, run_worker, NULL), 0);
	for (int i = 0; i < NPOSTERS; i++) {
		posters[i] =
			(struct poster){ .id = i, .tasks = calloc(NTASKS, sizeof(struct ptask)) };
		assert_non_null(posters[i].tasks);
		assert_int_equal(pthread_create(&pt[i], NULL, run_poster, &posters[i]), 0);
	}
	for (int i = 0; i < NPOSTERS; i++)
		pthread_join(pt[i], NULL);
	assert_int_equal(sl_loop_run(main_loop), 0); /* until the last completion */
	assert_int_equal(completed, NPOSTERS * NTASKS);
	assert_int_equal(out_of_order, 0);
	assert_int_equal(ran_elsewhere, 0);
	/* A call waits for its function, which runs on the worker's thread. */
	sl_loop_call(worker_loop, read_count, &seen);
	assert_int_equal(seen, NTASKS);
	/* A loop stopped by a task posted to it; one stopped from here (another thread). */
	sl_loop_post(worker_loop, &stop, stop_task);
	pthread_join(worker_thread, NULL);
	assert_int_equal(pthread_create(&worker_thread, NULL, run_worker, NULL), 0);
	sl_loop_call(worker_loop, read_count, &seen); /* it runs again */
	sl_loop_stop(worker_loop);
	pthread_join(worker_thread, NULL);
	/* Posted to a loop nobody runs: drained here. */
	completed = 0;
	posters[0].tasks[0].back = main_loop;
	sl_loop_post(worker_loop, &posters[0].tasks[0].task, completion);
	sl_loop_drain(worker_loop);
	assert_int_equal(completed, 1);
	for (int i = 0; i < NPOSTERS; i++)
		free(posters[i].tasks);
	sl_loop_free(worker_loop);
	sl_loop_free(main_loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_disarm),
		cmocka_unit_test(test_rearm_from_callback),
		cmocka_unit_test(test_disarm_and_free_from_callback),
		cmocka_unit_test(test_random_heap),
		cmocka_unit_test(test_rebind_fd),
		cmocka_unit_test(test_post_across_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
