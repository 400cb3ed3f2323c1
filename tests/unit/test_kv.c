// SPDX-License-Identifier: MIT
/*
 * The KV store, checked from the outside the way an attacker with the database but not the
 * key would look at it: values round-trip, namespaces are separate, a flipped byte or a
 * ciphertext moved under another name is refused (-EBADMSG), the files on disk never hold
 * a plaintext, and a key file anyone else could read is refused. Reads on another thread than
 * the opener's (sluiced's workers) see every commit and do not wait for a writer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/kv.h"

#define SECRET "ghp_s3cr3t-PLAINTEXT-that-must-never-hit-the-disk"

struct fixture {
	char dir[64];
	char err[512];
	struct sl_kv *kv;
};

static void path_of(const struct fixture *f, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", f->dir, name);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-kv-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->kv = sl_kv_open(f->dir, f->err, sizeof(f->err));
	if (!f->kv)
		fail_msg("sl_kv_open: %s", f->err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	DIR *d;
	struct dirent *e;

	sl_kv_close(f->kv);
	d = opendir(f->dir);
	while (d && (e = readdir(d))) {
		char p[512];

		if (e->d_name[0] == '.' &&
		    (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void assert_value(struct sl_kv *kv, const char *ns, const char *key, const void *want,
			 size_t want_len)
{
	char *val = NULL;
	size_t len = 0;

	assert_int_equal(sl_kv_get(kv, ns, key, &val, &len), 0);
	assert_int_equal(len, want_len);
	assert_memory_equal(val, want, want_len);
	assert_int_equal(val[len], 0);
	free(val);
}

static void assert_get_fails(struct sl_kv *kv, const char *ns, const char *key, int err)
{
	char *val = (char *)1;
	size_t len = 1;

	assert_int_equal(sl_kv_get(kv, ns, key, &val, &len), err);
	assert_null(val);
	assert_int_equal(len, 0);
}

static void test_put_get_rm(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(sl_kv_put(f->kv, "KEYS", "box1", SECRET, strlen(SECRET)), 0);
	assert_value(f->kv, "KEYS", "box1", SECRET, strlen(SECRET));
	/* Overwrite. */
	assert_int_equal(sl_kv_put(f->kv, "KEYS", "box1", "v2", 2), 0);
	assert_value(f->kv, "KEYS", "box1", "v2", 2);
	assert_int_equal(sl_kv_rm(f->kv, "KEYS", "box1"), 0);
	assert_get_fails(f->kv, "KEYS", "box1", -ENOENT);
	assert_int_equal(sl_kv_rm(f->kv, "KEYS", "box1"), -ENOENT);
}

static void test_missing(void **state)
{
	struct fixture *f = *state;

	assert_get_fails(f->kv, "KEYS", "nobody", -ENOENT);
	assert_get_fails(f->kv, "nothing-here", "x", -ENOENT);
	assert_int_equal(sl_kv_rm(f->kv, "KEYS", "nobody"), -ENOENT);
}

static void test_namespaces_are_separate(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(sl_kv_put(f->kv, "a", "k", "in-a", 4), 0);
	assert_int_equal(sl_kv_put(f->kv, "b", "k", "in-b", 4), 0);
	assert_value(f->kv, "a", "k", "in-a", 4);
	assert_value(f->kv, "b", "k", "in-b", 4);
	assert_int_equal(sl_kv_rm(f->kv, "a", "k"), 0);
	assert_get_fails(f->kv, "a", "k", -ENOENT);
	assert_value(f->kv, "b", "k", "in-b", 4);
	assert_get_fails(f->kv, "A", "k", -ENOENT); /* names are case-sensitive */
}

static void test_values_binary_empty_and_max(void **state)
{
	struct fixture *f = *state;
	static char big[SL_KV_VALUE_MAX + 1];
	const char bin[] = { 0, 1, 2, '\n', 0, (char)0xff };

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	assert_int_equal(sl_kv_put(f->kv, "ns", "bin", bin, sizeof(bin)), 0);
	assert_value(f->kv, "ns", "bin", bin, sizeof(bin));
	assert_int_equal(sl_kv_put(f->kv, "ns", "empty", NULL, 0), 0);
	assert_value(f->kv, "ns", "empty", "", 0);
	assert_int_equal(sl_kv_put(f->kv, "ns", "max", big, SL_KV_VALUE_MAX), 0);
	assert_value(f->kv, "ns", "max", big, SL_KV_VALUE_MAX);
	assert_int_equal(sl_kv_put(f->kv, "ns", "toobig", big, SL_KV_VALUE_MAX + 1), -E2BIG);
	assert_get_fails(f->kv, "ns", "toobig", -ENOENT);
}

static void test_names(void **state)
{
	struct fixture *f = *state;
	char ns[SL_KV_NS_MAX + 2], key[SL_KV_KEY_MAX + 2];
	const char *bad_ns[] = { "", "a/b", "a b", "a\nb", "é", "a%2f", "a?b" };
	const char *bad_keys[] = { "", "a\nb", "a\tb", "a\x7f", "\xc3\xa9" };
	const char *good_keys[] = { "a/b/c", "with space", "x?y=z&w", "~!@#$%^&*()[]{}\"'\\",
				    ".." };

	memset(ns, 'n', sizeof(ns));
	ns[SL_KV_NS_MAX] = 0;
	memset(key, 'k', sizeof(key));
	key[SL_KV_KEY_MAX] = 0;
	assert_int_equal(sl_kv_put(f->kv, ns, key, "v", 1), 0);
	assert_value(f->kv, ns, key, "v", 1);
	assert_true(sl_kv_ns_ok("Ab0_.:@-"));
	ns[SL_KV_NS_MAX] = 'n';
	ns[SL_KV_NS_MAX + 1] = 0;
	assert_int_equal(sl_kv_put(f->kv, ns, "k", "v", 1), -EINVAL);
	key[SL_KV_KEY_MAX] = 'k';
	key[SL_KV_KEY_MAX + 1] = 0;
	assert_int_equal(sl_kv_put(f->kv, "ns", key, "v", 1), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_ns) / sizeof(bad_ns[0]); i++) {
		assert_int_equal(sl_kv_put(f->kv, bad_ns[i], "k", "v", 1), -EINVAL);
		assert_get_fails(f->kv, bad_ns[i], "k", -EINVAL);
		assert_int_equal(sl_kv_rm(f->kv, bad_ns[i], "k"), -EINVAL);
	}
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++)
		assert_int_equal(sl_kv_put(f->kv, "ns", bad_keys[i], "v", 1), -EINVAL);
	for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]); i++) {
		assert_int_equal(sl_kv_put(f->kv, "ns", good_keys[i], good_keys[i],
					   strlen(good_keys[i])),
				 0);
		assert_value(f->kv, "ns", good_keys[i], good_keys[i], strlen(good_keys[i]));
	}
}

/* Runs @sql (with ?1 = @ns, ?2 = @key) on the database through a connection of its own, as
 * someone holding the file but not the key would. */
static void db_exec(struct fixture *f, const char *sql, const char *ns, const char *key)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *st;

	path_of(f, "kv.db", path, sizeof(path));
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
	if (key)
		sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Reads the stored blob of @ns/@key into @blob (at most @cap bytes); returns its length. */
static int db_read_blob(struct fixture *f, const char *ns, const char *key, unsigned char *blob,
			int cap)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	int n;

	path_of(f, "kv.db", path, sizeof(path));
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT val FROM kv WHERE ns = ?1 AND key = ?2", -1,
					    &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_bytes(st, 0);
	assert_true(n <= cap);
	memcpy(blob, sqlite3_column_blob(st, 0), n);
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	return n;
}

static void db_write_blob(struct fixture *f, const char *ns, const char *key,
			  const unsigned char *blob, int len)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *st;

	path_of(f, "kv.db", path, sizeof(path));
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "UPDATE kv SET val = ?3 WHERE ns = ?1 AND key = ?2",
					    -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, blob, len, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	assert_int_equal(sqlite3_changes(db), 1);
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_tampering_is_detected(void **state)
{
	struct fixture *f = *state;
	const int len = 12 + (int)strlen(SECRET) + 16;
	/* nonce || ciphertext || tag: flip one bit of each part in turn. */
	const int offsets[] = { 0, 11, 12, 12 + 7, len - 16 - 1, len - 16, len - 1 };

	for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		unsigned char blob[256];

		assert_int_equal(sl_kv_put(f->kv, "KEYS", "t", SECRET, strlen(SECRET)), 0);
		assert_int_equal(db_read_blob(f, "KEYS", "t", blob, sizeof(blob)), len);
		blob[offsets[i]] ^= 0x01;
		db_write_blob(f, "KEYS", "t", blob, len);
		assert_get_fails(f->kv, "KEYS", "t", -EBADMSG);
	}
	/* Truncated and emptied blobs. */
	db_exec(f, "UPDATE kv SET val = substr(val, 1, 20) WHERE ns = ?1 AND key = ?2", "KEYS",
		"t");
	assert_get_fails(f->kv, "KEYS", "t", -EBADMSG);
	db_exec(f, "UPDATE kv SET val = x'' WHERE ns = ?1 AND key = ?2", "KEYS", "t");
	assert_get_fails(f->kv, "KEYS", "t", -EBADMSG);
	/* A write repairs it. */
	assert_int_equal(sl_kv_put(f->kv, "KEYS", "t", "fresh", 5), 0);
	assert_value(f->kv, "KEYS", "t", "fresh", 5);
}

static void test_ciphertext_moved_to_another_name(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(sl_kv_put(f->kv, "KEYS", "alice", "alice-secret", 12), 0);
	assert_int_equal(sl_kv_put(f->kv, "KEYS", "mallory", "mallory-own", 11), 0);
	assert_int_equal(sl_kv_put(f->kv, "OTHER", "alice", "other-ns", 8), 0);
	/* Mallory copies Alice's ciphertext over his own key, and over another namespace's. */
	db_exec(f,
		"UPDATE kv SET val = (SELECT val FROM kv WHERE ns = 'KEYS' AND key = 'alice') "
		"WHERE ns = ?1 AND key = ?2",
		"KEYS", "mallory");
	assert_get_fails(f->kv, "KEYS", "mallory", -EBADMSG);
	db_exec(f,
		"UPDATE kv SET val = (SELECT val FROM kv WHERE ns = 'KEYS' AND key = 'alice') "
		"WHERE ns = ?1 AND key = ?2",
		"OTHER", "alice");
	assert_get_fails(f->kv, "OTHER", "alice", -EBADMSG);
	/* Renaming the row itself does not help either. */
	db_exec(f, "DELETE FROM kv WHERE ns = ?1 AND key = ?2", "KEYS", "mallory");
	db_exec(f, "UPDATE kv SET key = 'mallory' WHERE ns = ?1 AND key = ?2", "KEYS", "alice");
	assert_get_fails(f->kv, "KEYS", "mallory", -EBADMSG);
}

/* Whether any file of the store's directory contains @needle. */
static int dir_contains(const struct fixture *f, const void *needle, size_t len)
{
	DIR *d = opendir(f->dir);
	struct dirent *e;
	int found = 0;

	assert_non_null(d);
	while (!found && (e = readdir(d))) {
		char p[512], *buf;
		struct stat st;
		FILE *fp;

		snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
		if (stat(p, &st) || !S_ISREG(st.st_mode) || !st.st_size)
			continue;
		buf = malloc(st.st_size);
		assert_non_null(buf);
		fp = fopen(p, "rb");
		assert_non_null(fp);
		assert_int_equal(fread(buf, 1, st.st_size, fp), (size_t)st.st_size);
		fclose(fp);
		found = memmem(buf, st.st_size, needle, len) != NULL;
		free(buf);
	}
	closedir(d);
	return found;
}

static void test_disk_holds_no_plaintext(void **state)
{
	struct fixture *f = *state;
	char path[256];
	struct stat st;

	assert_int_equal(sl_kv_put(f->kv, "KEYS", "box", SECRET, strlen(SECRET)), 0);
	assert_int_equal(sl_kv_put(f->kv, "KEYS", "gone", SECRET "-old", strlen(SECRET) + 4), 0);
	assert_int_equal(sl_kv_rm(f->kv, "KEYS", "gone"), 0);
	/* The names are stored in the clear (they are not secret); the values are not. */
	assert_true(dir_contains(f, "box", 3));
	assert_false(dir_contains(f, SECRET, strlen(SECRET)));
	assert_false(dir_contains(f, "PLAINTEXT", 9));
	sl_kv_close(f->kv); /* checkpoints the WAL into kv.db */
	f->kv = NULL;
	assert_false(dir_contains(f, SECRET, strlen(SECRET)));
	assert_false(dir_contains(f, "PLAINTEXT", 9));
	path_of(f, "kv.db", path, sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	path_of(f, "kv.key", path, sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 32);
	assert_int_equal(stat(f->dir, &st), 0);
	/* The values survive a reopen. */
	f->kv = sl_kv_open(f->dir, f->err, sizeof(f->err));
	assert_non_null(f->kv);
	assert_value(f->kv, "KEYS", "box", SECRET, strlen(SECRET));
	assert_get_fails(f->kv, "KEYS", "gone", -ENOENT);
}

static void test_wal_files_are_private(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "kv.db", "kv.db-wal", "kv.db-shm" };

	assert_int_equal(sl_kv_put(f->kv, "ns", "k", "v", 1), 0);
	for (size_t i = 0; i < 3; i++) {
		char path[256];
		struct stat st;

		path_of(f, names[i], path, sizeof(path));
		if (stat(path, &st) == -1) {
			assert_int_equal(errno, ENOENT);
			continue;
		}
		assert_int_equal(st.st_mode & 077, 0);
	}
}

static void reopen_expect_failure(struct fixture *f, int want_errno, const char *want_msg)
{
	sl_kv_close(f->kv);
	f->err[0] = 0;
	f->kv = sl_kv_open(f->dir, f->err, sizeof(f->err));
	assert_null(f->kv);
	assert_int_equal(errno, want_errno);
	if (!strstr(f->err, want_msg))
		fail_msg("error '%s' does not say '%s'", f->err, want_msg);
}

static void test_key_file_refused(void **state)
{
	struct fixture *f = *state;
	char path[256], other[256];
	unsigned char junk[32] = { 1 };
	int fd;

	assert_int_equal(sl_kv_put(f->kv, "ns", "k", "v", 1), 0);
	path_of(f, "kv.key", path, sizeof(path));

	assert_int_equal(chmod(path, 0644), 0);
	reopen_expect_failure(f, EPERM, "accessible by group or others (mode 0644)");
	assert_int_equal(chmod(path, 0640), 0);
	reopen_expect_failure(f, EPERM, "mode 0640");
	assert_int_equal(chmod(path, 0600), 0);
	f->kv = sl_kv_open(f->dir, f->err, sizeof(f->err));
	assert_non_null(f->kv);
	assert_value(f->kv, "ns", "k", "v", 1);

	/* A symbolic link, even to a good key, is refused. */
	path_of(f, "kv.key.real", other, sizeof(other));
	assert_int_equal(rename(path, other), 0);
	assert_int_equal(symlink(other, path), 0);
	reopen_expect_failure(f, ELOOP, "symbolic link");
	assert_int_equal(unlink(path), 0);

	/* Not a regular file. */
	assert_int_equal(mkfifo(path, 0600), 0);
	reopen_expect_failure(f, EINVAL, "not a regular file");
	assert_int_equal(unlink(path), 0);

	/* Wrong size. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, 16), 16);
	close(fd);
	reopen_expect_failure(f, EINVAL, "16 bytes, not 32");
	assert_int_equal(unlink(path), 0);

	/* Missing while the database exists: never silently replaced by a new key. */
	reopen_expect_failure(f, ENOKEY, "is missing but");
	{
		struct stat st;

		assert_int_equal(stat(path, &st), -1);
	}

	/* Another key: the database says so at once. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, 32), 32);
	close(fd);
	reopen_expect_failure(f, EBADMSG, "was written under another key");

	/* The right key again. */
	assert_int_equal(rename(other, path), 0);
	f->kv = sl_kv_open(f->dir, f->err, sizeof(f->err));
	assert_non_null(f->kv);
	assert_value(f->kv, "ns", "k", "v", 1);
}

static void test_fresh_store_files(void **state)
{
	struct fixture *f = *state;
	char sub[128];
	struct sl_kv *kv;
	struct stat st;

	/* The directory is created 0700 when missing. */
	snprintf(sub, sizeof(sub), "%s/kvsub", f->dir);
	kv = sl_kv_open(sub, f->err, sizeof(f->err));
	assert_non_null(kv);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(sl_kv_put(kv, "ns", "k", "v", 1), 0);
	sl_kv_close(kv);
	{
		const char *names[] = { "kv.db", "kv.db-wal", "kv.db-shm", "kv.key", NULL };

		for (int i = 0; names[i]; i++) {
			char p[256];

			snprintf(p, sizeof(p), "%s/%s", sub, names[i]);
			unlink(p);
		}
		rmdir(sub);
	}
	/* A file where the directory should be. */
	snprintf(sub, sizeof(sub), "%s/kv.key", f->dir);
	assert_null(sl_kv_open(sub, f->err, sizeof(f->err)));
	assert_non_null(strstr(f->err, "not a directory"));
}

struct keys {
	char list[8][32];
	int n;
};

static int collect(const char *key, void *arg)
{
	struct keys *k = arg;

	assert_true(k->n < 8);
	snprintf(k->list[k->n++], sizeof(k->list[0]), "%s", key);
	return 0;
}

static int stop_at_two(const char *key, void *arg)
{
	struct keys *k = arg;

	(void)key;
	return ++k->n == 2 ? 42 : 0;
}

static void test_list(void **state)
{
	struct fixture *f = *state;
	struct keys k = { 0 };

	assert_int_equal(sl_kv_put(f->kv, "L", "b", "1", 1), 0);
	assert_int_equal(sl_kv_put(f->kv, "L", "a", "2", 1), 0);
	assert_int_equal(sl_kv_put(f->kv, "L", "c/d", "3", 1), 0);
	assert_int_equal(sl_kv_put(f->kv, "M", "zzz", "4", 1), 0);
	assert_int_equal(sl_kv_list(f->kv, "L", collect, &k), 0);
	assert_int_equal(k.n, 3);
	assert_string_equal(k.list[0], "a");
	assert_string_equal(k.list[1], "b");
	assert_string_equal(k.list[2], "c/d");
	k.n = 0;
	assert_int_equal(sl_kv_list(f->kv, "L", stop_at_two, &k), 42);
	/* The statement was reset: the store still works. */
	assert_value(f->kv, "L", "a", "2", 1);
	k.n = 0;
	assert_int_equal(sl_kv_list(f->kv, "empty", collect, &k), 0);
	assert_int_equal(k.n, 0);
	assert_int_equal(sl_kv_list(f->kv, "bad/ns", collect, &k), -EINVAL);
}

/* Two writes of one value never produce the same ciphertext (fresh nonce per write). */
static void test_nonce_is_fresh(void **state)
{
	struct fixture *f = *state;
	unsigned char first[64], second[64];
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *st;

	path_of(f, "kv.db", path, sizeof(path));
	for (int round = 0; round < 2; round++) {
		assert_int_equal(sl_kv_put(f->kv, "n", "k", "same", 4), 0);
		assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "SELECT val FROM kv WHERE ns = 'n'", -1,
						    &st, NULL),
				 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_int_equal(sqlite3_column_bytes(st, 0), 4 + 28);
		memcpy(round ? second : first, sqlite3_column_blob(st, 0), 32);
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	assert_memory_not_equal(first, second, 12);
	assert_memory_not_equal(first + 12, second + 12, 4);
}

/* Reads on a thread of their own, as a worker's handler makes them. */
struct reader_job {
	struct sl_kv *kv;
	int r;
	char val[64];
	uint64_t took_ms;
};

static void *read_on_thread(void *arg)
{
	struct reader_job *j = arg;
	struct timespec a, b;
	char *v = NULL;
	size_t len = 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	j->r = sl_kv_get(j->kv, "KEYS", "box1", &v, &len);
	clock_gettime(CLOCK_MONOTONIC, &b);
	j->took_ms = (uint64_t)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	if (!j->r)
		snprintf(j->val, sizeof(j->val), "%.*s", (int)len, v);
	free(v);
	return NULL;
}

static struct reader_job read_elsewhere(struct sl_kv *kv)
{
	struct reader_job j = { .kv = kv, .r = 1 };
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, read_on_thread, &j), 0);
	pthread_join(t, NULL);
	return j;
}

static void test_reads_on_other_threads(void **state)
{
	struct fixture *f = *state;
	char db[128];
	struct reader_job j;
	sqlite3 *w = NULL;

	assert_int_equal(sl_kv_put(f->kv, "KEYS", "box1", "v1", 2), 0);
	j = read_elsewhere(f->kv);
	assert_int_equal(j.r, 0);
	assert_string_equal(j.val, "v1");
	assert_int_equal(sl_kv_put(f->kv, "KEYS", "box1", "v2", 2), 0);
	j = read_elsewhere(f->kv);
	assert_string_equal(j.val, "v2");
	/* A writer in the middle of a transaction (another connection, as sluiced's own writer
	 * would be during its fsync) holds the write lock: the reader sees the last commit at
	 * once, it does not wait for the busy timeout. */
	path_of(f, "kv.db", db, sizeof(db));
	assert_int_equal(sqlite3_open(db, &w), SQLITE_OK);
	assert_int_equal(sqlite3_exec(w, "BEGIN IMMEDIATE; DELETE FROM kv;", NULL, NULL, NULL),
			 SQLITE_OK);
	j = read_elsewhere(f->kv);
	assert_int_equal(j.r, 0);
	assert_string_equal(j.val, "v2");
	assert_true(j.took_ms < 1000);
	assert_int_equal(sqlite3_exec(w, "ROLLBACK;", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(w);
	assert_int_equal(sl_kv_rm(f->kv, "KEYS", "box1"), 0);
	j = read_elsewhere(f->kv);
	assert_int_equal(j.r, -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get_rm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespaces_are_separate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_values_binary_empty_and_max, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampering_is_detected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ciphertext_moved_to_another_name, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_disk_holds_no_plaintext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wal_files_are_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fresh_store_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nonce_is_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reads_on_other_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
