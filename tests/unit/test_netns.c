// SPDX-License-Identifier: MIT
/* Network namespaces of sandboxes: opening, naming, the loopback check, "still in use", and
 * the cgroup of a pid. Needs root (it makes a namespace with ip netns). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel/cgroup.h"
#include "kernel/netns.h"

static char ns_name[64], ns_path[128];

static int sh(const char *fmt, const char *arg)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), fmt, arg, arg);
	return system(cmd);
}

static void test_open_and_name(void **state)
{
	struct sl_netns_id ours, other, again;
	int a, b, c;

	(void)state;
	a = sl_netns_open("/proc/self/ns/net", &ours);
	assert_true(a >= 0);
	assert_true(sl_netns_is_ours(&ours));
	b = sl_netns_open(ns_path, &other);
	assert_true(b >= 0);
	assert_false(sl_netns_is_ours(&other));
	assert_true(other.ino != ours.ino);
	c = sl_netns_open(ns_path, &again);
	assert_true(c >= 0);
	assert_true(again.dev == other.dev && again.ino == other.ino);
	/* Not namespaces at all, or another kind. */
	assert_int_equal(sl_netns_open("/etc/hostname", &again), -EINVAL);
	assert_int_equal(sl_netns_open("/proc/self/ns/mnt", &again), -EINVAL);
	assert_int_equal(sl_netns_open("/nonexistent", &again), -ENOENT);
	close(a);
	close(b);
	close(c);
}

static void test_loopback_up(void **state)
{
	struct sl_netns_id id;
	int fd;

	(void)state;
	fd = sl_netns_open(ns_path, &id);
	assert_true(fd >= 0);
	assert_int_equal(sl_netns_loopback_up(fd), 0); /* ip netns add leaves it down */
	assert_int_equal(sh("ip -n %s link set lo up", ns_name), 0);
	assert_int_equal(sl_netns_loopback_up(fd), 1);
	close(fd);
}

static void test_in_use_until_the_mount_goes(void **state)
{
	struct sl_netns_id ids[2];
	uint8_t used[2];
	int fd, ours;

	(void)state;
	ours = sl_netns_open("/proc/self/ns/net", &ids[0]);
	fd = sl_netns_open(ns_path, &ids[1]);
	assert_true(ours >= 0 && fd >= 0);
	assert_int_equal(sl_netns_in_use(ids, 2, used), 0);
	assert_int_equal(used[0], 1); /* other processes live here */
	assert_int_equal(used[1], 1); /* the /run/netns bind mount */
	/* Only our fd holds it now: gone, as far as a sandbox is concerned. */
	assert_int_equal(sh("ip netns del %s", ns_name), 0);
	assert_int_equal(sl_netns_in_use(ids, 2, used), 0);
	assert_int_equal(used[0], 1);
	assert_int_equal(used[1], 0);
	close(fd);
	close(ours);
	assert_int_equal(sh("ip netns add %s", ns_name), 0);
}

static void test_of_pid(void **state)
{
	struct sl_netns_id id;
	char cg[PATH_MAX], want[PATH_MAX + 8], line[PATH_MAX];
	FILE *f;
	int fd;

	(void)state;
	f = fopen("/proc/self/cgroup", "re");
	assert_non_null(f);
	want[0] = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::/", 4)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(want, sizeof(want), "%s%s", sl_cgroup_root(), line + 3);
		}
	fclose(f);
	fd = sl_netns_of_pid(getpid(), cg, sizeof(cg), &id);
	if (fd == -EINVAL) { /* we run in the root cgroup, which cannot be a sandbox */
		char root[PATH_MAX + 8];

		snprintf(root, sizeof(root), "%s/", sl_cgroup_root());
		assert_string_equal(want, root);
	} else {
		assert_true(fd >= 0);
		assert_true(sl_netns_is_ours(&id));
		assert_string_equal(cg, want);
		assert_int_equal(sl_cgroup_populated(cg), 1);
		close(fd);
	}
	assert_int_equal(sl_netns_of_pid(0, cg, sizeof(cg), &id), -EINVAL);
	assert_int_equal(sl_netns_of_pid(INT_MAX, cg, sizeof(cg), &id), -ESRCH);
}

static int setup(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_netns creates a network namespace: run it as root\n");
		return -1;
	}
	snprintf(ns_name, sizeof(ns_name), "sl-unit-ns-%d", (int)getpid());
	snprintf(ns_path, sizeof(ns_path), "/run/netns/%s", ns_name);
	return sh("ip netns add %s", ns_name) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return sh("ip netns del %s", ns_name) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_and_name),
		cmocka_unit_test(test_loopback_up),
		cmocka_unit_test(test_in_use_until_the_mount_goes),
		cmocka_unit_test(test_of_pid),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
