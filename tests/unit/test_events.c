// SPDX-License-Identifier: MIT
/*
 * Unit tests of the event history: per-sandbox rings (one sandbox's flood keeps the others'
 * lines), the total bound paid by the longest ring, replay of all sandboxes in publication
 * order, and the history of removed sandboxes kept for a bounded number of them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>

#include "core/loop.h"

#include "core/events.h"

struct seen {
	size_t n;
	char last[256];
	char first[256];
	long prev; /* the "i" of the previous line, for order */
	int ordered;
};

static void collect(const char *line, size_t len, void *arg)
{
	struct seen *s = arg;
	json_t *j = json_loadb(line, len, 0, NULL);
	long i;

	assert_non_null(j);
	assert_int_equal(line[len - 1], '\n');
	i = (long)json_integer_value(json_object_get(j, "i"));
	if (s->n && i <= s->prev)
		s->ordered = 0;
	s->prev = i;
	if (!s->n)
		snprintf(s->first, sizeof(s->first), "%.*s", (int)len, line);
	snprintf(s->last, sizeof(s->last), "%.*s", (int)len, line);
	s->n++;
	json_decref(j);
}

static struct seen replay(struct sl_events *ev, const char *sandbox)
{
	struct seen s = { .ordered = 1 };

	sl_events_replay(ev, sandbox, 0, collect, &s);
	return s;
}

static long counter;

static void pub(struct sl_events *ev, const char *sandbox)
{
	sl_events_publish(ev, sandbox,
			  json_pack("{s:s, s:I}", "sandbox", sandbox ? sandbox : "", "i",
				    (json_int_t)counter++));
}

static void test_flood_keeps_others(void **state)
{
	struct sl_events *ev = sl_events_new(100);
	struct seen s;

	(void)state;
	for (int i = 0; i < 10; i++)
		pub(ev, "b");
	for (int i = 0; i < 5000; i++)
		pub(ev, "a");
	s = replay(ev, "b");
	assert_int_equal(s.n, 10); /* all of b's, though a published 5000 after them */
	assert_true(s.ordered);
	s = replay(ev, "a");
	assert_int_equal(s.n, 100); /* a keeps its last 100 */
	assert_non_null(strstr(s.last, "\"i\":5009"));
	/* all sandboxes, in publication order */
	s = replay(ev, NULL);
	assert_int_equal(s.n, 110);
	assert_true(s.ordered);
	assert_int_equal(replay(ev, "nobody").n, 0);
	assert_true(sl_events_known(ev, "b"));
	assert_false(sl_events_known(ev, "nobody"));
	sl_events_free(ev);
}

static void test_total_bound_paid_by_the_longest(void **state)
{
	struct sl_events *ev = sl_events_new(10); /* 160 lines in all */
	char name[16];
	struct seen s;

	(void)state;
	for (int k = 0; k < 20; k++) {
		snprintf(name, sizeof(name), "s%d", k);
		for (int i = 0; i < 10; i++)
			pub(ev, name);
	}
	s = replay(ev, NULL);
	assert_int_equal(s.n, 160);
	assert_true(s.ordered);
	/* The last sandboxes came when the total was full: the longest rings gave lines, no
	 * sandbox lost everything. */
	for (int k = 0; k < 20; k++) {
		snprintf(name, sizeof(name), "s%d", k);
		assert_true(replay(ev, name).n >= 7);
	}
	/* lines of no sandbox have their own ring */
	pub(ev, NULL);
	assert_int_equal(replay(ev, NULL).n, 160);
	sl_events_free(ev);
}

/* A replay with a byte budget (the control API's cap on what one answer buffers) gives the
 * newest lines that fit, not the oldest: a history is read for what just happened. */
static void test_replay_budget_keeps_the_newest(void **state)
{
	struct sl_events *ev = sl_events_new(1000);
	struct seen all, some;
	size_t line_len, left;

	(void)state;
	counter = 0;
	for (int i = 0; i < 500; i++)
		pub(ev, i % 2 ? "x" : "y");
	all = replay(ev, NULL);
	assert_int_equal(all.n, 500);
	line_len = strlen(all.last); /* "i" of three digits: every line of i >= 100 is as long */
	some = (struct seen){ .ordered = 1 };
	left = sl_events_replay(ev, NULL, 10 * line_len, collect, &some);
	assert_int_equal(some.n, 10);
	assert_int_equal(left, 490);
	assert_true(some.ordered);
	assert_string_equal(some.last, all.last); /* the newest line is there */
	assert_non_null(strstr(some.first, "\"i\":490"));
	some = (struct seen){ .ordered = 1 };
	left = sl_events_replay(ev, "x", 3 * line_len, collect, &some);
	assert_int_equal(some.n, 3);
	assert_int_equal(left, 247);
	assert_non_null(strstr(some.last, "\"i\":499"));
	assert_int_equal(sl_events_replay(ev, "x", 0, collect, &some), 0); /* 0: all of them */
	sl_events_free(ev);
}

static void test_gone_sandboxes_kept_bounded(void **state)
{
	struct sl_events *ev = sl_events_new(8);
	char name[16];

	(void)state;
	pub(ev, "run-1");
	sl_events_sandbox_gone(ev, "run-1");
	assert_true(sl_events_known(ev, "run-1"));
	assert_int_equal(replay(ev, "run-1").n, 1);
	/* a sandbox of the same name again: its history continues */
	pub(ev, "run-1");
	assert_int_equal(replay(ev, "run-1").n, 2);
	sl_events_sandbox_gone(ev, "run-1");
	/* 64 newer removals push it out; the last 64 stay */
	for (int k = 0; k < 64; k++) {
		snprintf(name, sizeof(name), "job%d", k);
		pub(ev, name);
		sl_events_sandbox_gone(ev, name);
	}
	assert_false(sl_events_known(ev, "run-1"));
	assert_int_equal(replay(ev, "run-1").n, 0);
	assert_true(sl_events_known(ev, "job0"));
	assert_true(sl_events_known(ev, "job63"));
	/* a live sandbox is never dropped for removed ones */
	pub(ev, "live");
	for (int k = 64; k < 200; k++) {
		snprintf(name, sizeof(name), "job%d", k);
		pub(ev, name);
		sl_events_sandbox_gone(ev, name);
	}
	assert_true(sl_events_known(ev, "live"));
	assert_false(sl_events_known(ev, "job135"));
	assert_true(sl_events_known(ev, "job136"));
	sl_events_sandbox_gone(ev, "never-had-events"); /* harmless */
	sl_events_sandbox_gone(NULL, "x");
	sl_events_free(ev);
}

static void sub_count(const char *line, size_t len, void *arg)
{
	(void)line;
	(void)len;
	(*(int *)arg)++;
}

static void test_subscribers_see_their_sandbox(void **state)
{
	struct sl_events *ev = sl_events_new(4);
	int a = 0, all = 0;
	int ha = sl_events_subscribe(ev, "a", sub_count, &a);
	int hall = sl_events_subscribe(ev, NULL, sub_count, &all);

	(void)state;
	pub(ev, "a");
	pub(ev, "b");
	pub(ev, NULL);
	assert_int_equal(a, 1);
	assert_int_equal(all, 3);
	sl_events_unsubscribe(ev, ha);
	sl_events_unsubscribe(ev, hall);
	pub(ev, "a");
	assert_int_equal(a, 1);
	sl_events_free(ev);
}

/* Lines published on a worker thread in one turn of its loop (posted together at the turn's
 * end) reach the bus's loop, in order, without waiting for another turn of the worker. */
static struct sl_loop *bus_loop, *worker_loop;
static struct sl_events *bus;
static struct sl_timer publish_t, check_t, stop_t;
static struct sl_task start_task, stop_task;

static void worker_publish(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	(void)t;
	for (int i = 0; i < 5; i++)
		pub(bus, "w"); /* one turn: one post */
}

static void worker_start(struct sl_task *t)
{
	(void)t;
	sl_timer_arm(worker_loop, &publish_t, 0, worker_publish);
}

static void worker_stop(struct sl_task *t)
{
	(void)t;
	sl_loop_stop(worker_loop);
}

static void *run_worker_loop(void *arg)
{
	(void)arg;
	sl_loop_run(worker_loop);
	return NULL;
}

static void bus_check(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	(void)t;
	sl_loop_stop(bus_loop);
}

/* A bus on a loop of this thread and a worker loop of its own, keeping @keep lines each. */
static void bus_setup(size_t keep)
{
	bus_loop = sl_loop_new();
	worker_loop = sl_loop_new();
	bus = sl_events_new(keep);
	assert_non_null(bus_loop);
	assert_non_null(worker_loop);
	assert_non_null(bus);
	sl_events_bind(bus, bus_loop);
}

/* Runs the bus's loop until @s saw @n lines (bounded: 5 s). */
static void bus_run_until(const struct seen *s, size_t n)
{
	sl_timer_arm(bus_loop, &stop_t, 5000, bus_check);
	while (s->n < n) {
		sl_timer_arm(bus_loop, &check_t, 10, bus_check);
		sl_loop_run(bus_loop);
		if (!sl_timer_armed(&stop_t))
			break;
	}
	sl_timer_disarm(bus_loop, &stop_t);
	sl_timer_disarm(bus_loop, &check_t);
}

static void bus_teardown(void)
{
	sl_events_free(bus);
	sl_loop_free(worker_loop);
	sl_loop_free(bus_loop);
}

static void test_lines_from_a_worker_reach_the_bus_in_order(void **state)
{
	struct seen live = { .ordered = 1 };
	pthread_t th;

	(void)state;
	bus_setup(64);
	assert_true(sl_events_subscribe(bus, "w", collect, &live) >= 0);
	assert_int_equal(pthread_create(&th, NULL, run_worker_loop, NULL), 0);
	sl_loop_post(worker_loop, &start_task, worker_start);
	bus_run_until(&live, 5);
	sl_loop_post(worker_loop, &stop_task, worker_stop);
	pthread_join(th, NULL);
	assert_int_equal(live.n, 5);
	assert_true(live.ordered);
	bus_teardown();
}

/* A worker's lines with no subscriber are kept on the worker itself: the bus's loop is never
 * woken for them (it does not even run here), and a replay shows them at once. */
static void worker_publish_quiet(struct sl_loop *loop, struct sl_timer *t)
{
	(void)loop;
	(void)t;
	for (int i = 0; i < 5; i++)
		pub(bus, "quiet");
	sl_loop_stop(worker_loop);
}

static void worker_start_quiet(struct sl_task *t)
{
	(void)t;
	sl_timer_arm(worker_loop, &publish_t, 0, worker_publish_quiet);
}

static void test_lines_nobody_follows_are_kept_without_the_bus(void **state)
{
	pthread_t th;
	struct seen s;

	(void)state;
	bus_setup(64);
	sl_loop_post(worker_loop, &start_task, worker_start_quiet);
	assert_int_equal(pthread_create(&th, NULL, run_worker_loop, NULL), 0);
	pthread_join(th, NULL);
	s = replay(bus, "quiet");
	assert_int_equal(s.n, 5);
	assert_true(s.ordered);
	bus_teardown();
}

/* A follower that starts while a worker publishes gets every line once, in order: those kept
 * before in its replay, the rest live. */
#define FOLLOW_LINES 3000
#define FOLLOW_PER_TURN 10
static int follow_turns;

static void worker_publish_many(struct sl_loop *loop, struct sl_timer *t)
{
	for (int i = 0; i < FOLLOW_PER_TURN; i++)
		pub(bus, "f");
	if (++follow_turns < FOLLOW_LINES / FOLLOW_PER_TURN)
		sl_timer_arm(loop, t, 0, worker_publish_many);
}

static void worker_start_many(struct sl_task *t)
{
	(void)t;
	sl_timer_arm(worker_loop, &publish_t, 0, worker_publish_many);
}

static void test_follow_sees_each_line_once_while_a_worker_publishes(void **state)
{
	struct seen live = { .ordered = 1 };
	long base = counter;
	pthread_t th;
	int h;

	(void)state;
	follow_turns = 0;
	bus_setup(2 * FOLLOW_LINES);
	assert_int_equal(pthread_create(&th, NULL, run_worker_loop, NULL), 0);
	sl_loop_post(worker_loop, &start_task, worker_start_many);
	while (!sl_events_known(bus, "f")) /* the worker has begun */
		sched_yield();
	h = sl_events_follow(bus, "f", 0, collect, &live);
	assert_true(h > 0);
	bus_run_until(&live, FOLLOW_LINES);
	sl_loop_post(worker_loop, &stop_task, worker_stop);
	pthread_join(th, NULL);
	assert_int_equal(live.n, FOLLOW_LINES);
	assert_true(live.ordered); /* increasing: no line twice */
	assert_int_equal(live.prev, base + FOLLOW_LINES - 1); /* and none missing */
	sl_events_unsubscribe(bus, h);
	bus_teardown();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flood_keeps_others),
		cmocka_unit_test(test_total_bound_paid_by_the_longest),
		cmocka_unit_test(test_replay_budget_keeps_the_newest),
		cmocka_unit_test(test_gone_sandboxes_kept_bounded),
		cmocka_unit_test(test_subscribers_see_their_sandbox),
		cmocka_unit_test(test_lines_from_a_worker_reach_the_bus_in_order),
		cmocka_unit_test(test_lines_nobody_follows_are_kept_without_the_bus),
		cmocka_unit_test(test_follow_sees_each_line_once_while_a_worker_publishes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
