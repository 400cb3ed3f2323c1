// SPDX-License-Identifier: MIT
/*
 * The env file: the accepted syntax (comments, `export`, quotes, CRLF), every malformed line
 * refused with its line number and without its value in the message, and files that others
 * could read, or that are not regular files of root or ours, refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/envfile.h"

struct fixture {
	char dir[64];
	char path[128];
	char err[512];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-env-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/secrets.env", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char p[256];

	unlink(f->path);
	snprintf(p, sizeof(p), "%s/link.env", f->dir);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Writes @len bytes of @text to the fixture's file with @mode (replacing it). */
static void write_file(struct fixture *f, const char *text, size_t len, mode_t mode)
{
	int fd;

	unlink(f->path);
	fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static struct sl_env *load_text(struct fixture *f, const char *text)
{
	write_file(f, text, strlen(text), 0600);
	f->err[0] = 0;
	return sl_env_load(f->path, f->err, sizeof(f->err));
}

static void test_syntax(void **state)
{
	struct fixture *f = *state;
	const char *key, *val;
	struct sl_env *env = load_text(f, "# a comment\n"
					  "\n"
					  "   \t\n"
					  "  # an indented comment\n"
					  "PLAIN=value\n"
					  "export EXPORTED=yes\n"
					  "export\tTABBED=tab\n"
					  "DOUBLE=\"  spaced value  \"\n"
					  "SINGLE='it has \"quotes\" and $dollars'\n"
					  "EMPTY=\n"
					  "EMPTY_QUOTED=\"\"\n"
					  "EQUALS=a=b=c\n"
					  "HASH=abc#not-a-comment\n"
					  "TRIMMED=   around   \t\n"
					  "CRLF=windows\r\n"
					  "_under_score9=1\n"
					  "  INDENTED=ok\n"
					  "export=not the prefix\n"
					  "LAST=no newline at the end");

	if (!env)
		fail_msg("sl_env_load: %s", f->err);
	assert_int_equal(sl_env_count(env), 15);
	assert_string_equal(sl_env_get(env, "PLAIN"), "value");
	assert_string_equal(sl_env_get(env, "EXPORTED"), "yes");
	assert_string_equal(sl_env_get(env, "TABBED"), "tab");
	assert_string_equal(sl_env_get(env, "DOUBLE"), "  spaced value  ");
	assert_string_equal(sl_env_get(env, "SINGLE"), "it has \"quotes\" and $dollars");
	assert_string_equal(sl_env_get(env, "EMPTY"), "");
	assert_string_equal(sl_env_get(env, "EMPTY_QUOTED"), "");
	assert_string_equal(sl_env_get(env, "EQUALS"), "a=b=c");
	assert_string_equal(sl_env_get(env, "HASH"), "abc#not-a-comment");
	assert_string_equal(sl_env_get(env, "TRIMMED"), "around");
	assert_string_equal(sl_env_get(env, "CRLF"), "windows");
	assert_string_equal(sl_env_get(env, "_under_score9"), "1");
	assert_string_equal(sl_env_get(env, "INDENTED"), "ok");
	assert_string_equal(sl_env_get(env, "export"), "not the prefix");
	assert_string_equal(sl_env_get(env, "LAST"), "no newline at the end");
	assert_null(sl_env_get(env, "MISSING"));
	assert_null(sl_env_get(env, "plain")); /* case-sensitive */
	assert_null(sl_env_get(env, "PLAI"));

	/* File order. */
	assert_int_equal(sl_env_at(env, 0, &key, &val), 0);
	assert_string_equal(key, "PLAIN");
	assert_string_equal(val, "value");
	assert_int_equal(sl_env_at(env, 14, &key, &val), 0);
	assert_string_equal(key, "LAST");
	assert_int_equal(sl_env_at(env, 15, &key, &val), -ERANGE);
	sl_env_free(env);
}

static void test_empty_file_and_null(void **state)
{
	struct fixture *f = *state;
	const char *key, *val;
	struct sl_env *env = load_text(f, "");

	assert_non_null(env);
	assert_int_equal(sl_env_count(env), 0);
	sl_env_free(env);
	env = load_text(f, "# only comments\n\n");
	assert_non_null(env);
	assert_int_equal(sl_env_count(env), 0);
	sl_env_free(env);
	/* No env file at all: the daemon keeps NULL and asks the same questions. */
	assert_int_equal(sl_env_count(NULL), 0);
	assert_null(sl_env_get(NULL, "X"));
	assert_int_equal(sl_env_at(NULL, 0, &key, &val), -ERANGE);
	sl_env_free(NULL);
}

static void test_bad_lines(void **state)
{
	struct fixture *f = *state;
	/* Each: the file, and what the message must say. The secret is "hunter2" throughout and
	 * must never appear in the message. */
	static const struct {
		const char *text;
		const char *says;
	} cases[] = {
		{ "OK=1\nhunter2\n", "line 2 is not KEY=VALUE" },
		{ "OK=1\n\n# c\n1KEY=hunter2\n", "line 4 is not KEY=VALUE" },
		{ "KEY-X=hunter2\n", "line 1 is not KEY=VALUE" },
		{ "KEY =hunter2\n", "line 1 is not KEY=VALUE" },
		{ "KEY: hunter2\n", "line 1 is not KEY=VALUE" },
		{ "=hunter2\n", "line 1 is not KEY=VALUE" },
		{ "export hunter2\n", "line 1 is not KEY=VALUE" },
		{ "export  \n", "line 1 is not KEY=VALUE" },
		{ "K\xc3\xa9Y=hunter2\n", "line 1 is not KEY=VALUE" },
		{ "A=1\nKEY=\"hunter2\n",
		  "line 2: the value's opening double quote is not closed" },
		{ "KEY='hunter2\"\n", "line 1: the value's opening single quote is not closed" },
		{ "KEY=\"\n", "line 1: the value's opening double quote" },
		{ "KEY=\"hunter2\" # comment\n", "line 1: the value's opening double quote" },
		{ "KEY=x\nOTHER=y\nKEY=hunter2\n", "line 3: KEY is already set on line 1" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sl_env *env = load_text(f, cases[i].text);

		if (env)
			fail_msg("case %zu was accepted", i);
		assert_int_equal(errno, EINVAL);
		if (!strstr(f->err, cases[i].says))
			fail_msg("case %zu: '%s' does not say '%s'", i, f->err, cases[i].says);
		if (strstr(f->err, "hunter2"))
			fail_msg("case %zu: the message shows the value: '%s'", i, f->err);
		assert_non_null(strstr(f->err, f->path));
	}
}

static void test_nul_byte(void **state)
{
	struct fixture *f = *state;
	static const char text[] = "A=1\nB=hun\0ter2\n";

	write_file(f, text, sizeof(text) - 1, 0600);
	assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(f->err, "line 2 contains a NUL byte"));
}

static void test_long_key_and_many_vars(void **state)
{
	struct fixture *f = *state;
	char *text = malloc(SL_ENV_MAX_VARS * 16 + 512);
	size_t off = 0;
	struct sl_env *env;

	assert_non_null(text);
	memset(text, 'K', SL_ENV_KEY_MAX + 1);
	strcpy(text + SL_ENV_KEY_MAX + 1, "=v\n");
	assert_null(load_text(f, text));
	assert_non_null(strstr(f->err, "line 1: KEY is longer than"));
	text[SL_ENV_KEY_MAX] = 0;
	strcat(text, "=v\n");
	env = load_text(f, text);
	assert_non_null(env);
	sl_env_free(env);

	for (int i = 0; i < SL_ENV_MAX_VARS; i++)
		off += sprintf(text + off, "V%d=%d\n", i, i);
	env = load_text(f, text);
	assert_non_null(env);
	assert_int_equal(sl_env_count(env), SL_ENV_MAX_VARS);
	assert_string_equal(sl_env_get(env, "V4095"), "4095");
	sl_env_free(env);
	sprintf(text + off, "ONE_MORE=1\n");
	assert_null(load_text(f, text));
	assert_int_equal(errno, E2BIG);
	free(text);
}

static void test_too_big(void **state)
{
	struct fixture *f = *state;
	size_t len = SL_ENV_FILE_MAX + 1;
	char *text = malloc(len);

	assert_non_null(text);
	memset(text, '#', len);
	write_file(f, text, len, 0600);
	assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
	assert_int_equal(errno, EFBIG);
	free(text);
}

static void test_modes_refused(void **state)
{
	struct fixture *f = *state;
	static const mode_t bad[] = { 0644, 0640, 0604, 0620, 0602, 0610, 0666, 0660 };
	static const mode_t good[] = { 0600, 0400, 0700 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[32];

		write_file(f, "TOKEN=hunter2\n", 14, bad[i]);
		assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
		assert_int_equal(errno, EPERM);
		snprintf(want, sizeof(want), "(mode %04o)", (unsigned)bad[i]);
		assert_non_null(strstr(f->err, want));
		assert_non_null(strstr(f->err, "accessible by group or others"));
		assert_null(strstr(f->err, "hunter2"));
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct sl_env *env;

		write_file(f, "TOKEN=hunter2\n", 14, good[i]);
		env = sl_env_load(f->path, f->err, sizeof(f->err));
		if (!env)
			fail_msg("mode %04o refused: %s", (unsigned)good[i], f->err);
		assert_string_equal(sl_env_get(env, "TOKEN"), "hunter2");
		sl_env_free(env);
	}
}

static void test_owner_refused(void **state)
{
	struct fixture *f = *state;

	if (geteuid() != 0)
		skip();
	write_file(f, "TOKEN=hunter2\n", 14, 0600);
	assert_int_equal(chown(f->path, 12345, 12345), 0);
	assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
	assert_int_equal(errno, EPERM);
	assert_non_null(strstr(f->err, "owned by uid 12345"));
}

static void test_not_regular_files(void **state)
{
	struct fixture *f = *state;
	char link[256];
	struct sl_env *env;

	assert_null(sl_env_load(f->dir, f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "not a regular file"));
	/* A FIFO is refused without waiting for a writer. */
	assert_int_equal(mkfifo(f->path, 0600), 0);
	assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "not a regular file"));
	unlink(f->path);
	assert_null(sl_env_load(f->path, f->err, sizeof(f->err)));
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(f->err, "No such file"));
	assert_null(sl_env_load("/dev/null", f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "not a regular file"));
	/* A symbolic link (as secret mounts use) is judged by its target. */
	write_file(f, "TOKEN=linked\n", 13, 0600);
	snprintf(link, sizeof(link), "%s/link.env", f->dir);
	assert_int_equal(symlink(f->path, link), 0);
	env = sl_env_load(link, f->err, sizeof(f->err));
	assert_non_null(env);
	assert_string_equal(sl_env_get(env, "TOKEN"), "linked");
	sl_env_free(env);
	assert_int_equal(chmod(f->path, 0644), 0);
	assert_null(sl_env_load(link, f->err, sizeof(f->err)));
	assert_int_equal(errno, EPERM);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_syntax, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file_and_null, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_key_and_many_vars, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_modes_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_regular_files, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
