// SPDX-License-Identifier: MIT
/* core/idtab.h: ids far apart grow the table and keep what it held, an id holds one entry, id 0
 * and ids past the table are nobody's, a deleted id is free again. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core/idtab.h"

static void test_put_get_del(void **state)
{
	struct sl_idtab t = { 0 };
	int a, b, c;

	(void)state;
	assert_null(sl_idtab_get(&t, 1)); /* empty: no slots at all */
	assert_int_equal(sl_idtab_put(&t, 0, &a), -EINVAL);
	assert_int_equal(sl_idtab_put(&t, 5, NULL), -EINVAL);
	assert_int_equal(sl_idtab_put(&t, 5, &a), 0);
	assert_int_equal(sl_idtab_put(&t, 5, &b), -EEXIST);
	assert_int_equal(sl_idtab_put(&t, 1000000, &b), 0); /* grows past 64, then doubling */
	assert_true(t.cap > 1000000);
	assert_int_equal(sl_idtab_put(&t, 63, &c), 0);
	assert_ptr_equal(sl_idtab_get(&t, 5), &a); /* kept across the growth */
	assert_ptr_equal(sl_idtab_get(&t, 1000000), &b);
	assert_ptr_equal(sl_idtab_get(&t, 63), &c);
	assert_null(sl_idtab_get(&t, 0));
	assert_null(sl_idtab_get(&t, 6));
	assert_null(sl_idtab_get(&t, UINT32_MAX));
	assert_int_equal(t.n, 3);
	sl_idtab_del(&t, 5);
	sl_idtab_del(&t, 5); /* twice: harmless */
	sl_idtab_del(&t, UINT32_MAX);
	assert_int_equal(t.n, 2);
	assert_null(sl_idtab_get(&t, 5));
	assert_int_equal(sl_idtab_put(&t, 5, &c), 0);
	assert_ptr_equal(sl_idtab_get(&t, 5), &c);
	free(t.v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_del),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
