// SPDX-License-Identifier: MIT
/* core/list.h: order, O(1) unlink from anywhere, idempotent delete, the safe walk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/list.h"

struct item {
	int v;
	struct sl_list link;
};

/* The values in list order, into @out; returns how many. */
static int values(struct sl_list *head, int *out, int max)
{
	struct item *it;
	int n = 0;

	sl_list_for_each(it, head, link) {
		assert_true(n < max);
		out[n++] = it->v;
	}
	return n;
}

static void test_empty(void **state)
{
	struct sl_list h = SL_LIST_INIT(h);
	struct item a = { .v = 1 }, *it;
	int n = 0;

	(void)state;
	assert_true(sl_list_empty(&h));
	sl_list_for_each(it, &h, link)
		n++;
	assert_int_equal(n, 0);
	sl_list_init(&a.link);
	assert_false(sl_list_linked(&a.link));
	sl_list_del(&a.link); /* unlinked: harmless */
	assert_false(sl_list_linked(&a.link));
}

static void test_order_and_unlink(void **state)
{
	struct sl_list h;
	struct item it[5];
	int v[8], n;

	(void)state;
	sl_list_init(&h);
	for (int i = 0; i < 5; i++)
		it[i].v = i;
	sl_list_add_tail(&h, &it[1].link);
	sl_list_add_tail(&h, &it[2].link);
	sl_list_add(&h, &it[0].link);
	sl_list_add_tail(&h, &it[3].link);
	sl_list_add_tail(&h, &it[4].link);
	n = values(&h, v, 8);
	assert_int_equal(n, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(v[i], i);
	assert_ptr_equal(sl_list_first(&h, struct item, link), &it[0]);
	assert_ptr_equal(sl_list_last(&h, struct item, link), &it[4]);

	/* middle, first, last: each without a walk */
	sl_list_del(&it[2].link);
	sl_list_del(&it[0].link);
	sl_list_del(&it[4].link);
	assert_false(sl_list_linked(&it[2].link));
	sl_list_del(&it[2].link); /* twice: harmless */
	n = values(&h, v, 8);
	assert_int_equal(n, 2);
	assert_int_equal(v[0], 1);
	assert_int_equal(v[1], 3);

	/* an unlinked node links again */
	sl_list_add(&h, &it[2].link);
	n = values(&h, v, 8);
	assert_int_equal(n, 3);
	assert_int_equal(v[0], 2);
	assert_true(sl_list_linked(&it[2].link));
	assert_false(sl_list_empty(&h));
}

static void test_safe_walk_frees(void **state)
{
	struct sl_list h = SL_LIST_INIT(h);
	struct item *it, *tmp;
	int v[16], n;

	(void)state;
	for (int i = 0; i < 10; i++) {
		it = calloc(1, sizeof(*it));
		assert_non_null(it);
		it->v = i;
		sl_list_add_tail(&h, &it->link);
	}
	/* unlink and free every odd one while walking */
	sl_list_for_each_safe(it, tmp, &h, link) {
		if (it->v % 2) {
			sl_list_del(&it->link);
			free(it);
		}
	}
	n = values(&h, v, 16);
	assert_int_equal(n, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(v[i], 2 * i);
	sl_list_for_each_safe(it, tmp, &h, link) {
		sl_list_del(&it->link);
		free(it);
	}
	assert_true(sl_list_empty(&h));
}

static void test_container_of(void **state)
{
	struct item a = { .v = 7 };

	(void)state;
	assert_ptr_equal(sl_container_of(&a.link, struct item, link), &a);
	assert_int_equal(sl_list_entry(&a.link, struct item, link)->v, 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_order_and_unlink),
		cmocka_unit_test(test_safe_walk_frees),
		cmocka_unit_test(test_container_of),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
