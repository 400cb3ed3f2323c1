// SPDX-License-Identifier: MIT
/*
 * The KV store: secrets and small values that policies read as `env.NS:get(key)` and that
 * operators set with `sluice kv`. They live in an embedded SQLite database, each value sealed
 * with AES-256-GCM under a key of its own file (kv.key, 0600, never in the database): a fresh
 * random 96-bit nonce per write, stored as nonce || ciphertext || tag, and namespace and key
 * bound in as associated data, so a ciphertext copied under another name, a flipped byte or
 * a database opened with another kv.key fails to authenticate and is reported as such
 * (-EBADMSG), never returned as garbage. Names and sizes are not secret (the database holds
 * them in the clear); values are. Plaintext buffers this module owns are wiped before free.
 * Every call takes the store's mutex: any thread may use it; writes are synchronous (fsync),
 * on purpose: kv.h says who may block on them and why.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "store/kv.h"
#include "core/file.h"
#include "core/log.h"

#define KV_KEY_BYTES 32
#define KV_NONCE_BYTES 12
#define KV_TAG_BYTES 16
#define KV_OVERHEAD (KV_NONCE_BYTES + KV_TAG_BYTES)
#define KV_SCHEMA_VERSION 1
/* Domain separation of the associated data, versioned with the blob format. */
#define KV_AAD_LABEL "sluice-kv-v1"
#define KV_CHECK_LABEL "sluice-kv-key-check-v1"

struct sl_kv {
	sqlite3 *db;
	sqlite3_stmt *put, *get, *rm, *list;
	pthread_mutex_t lock;
	unsigned char key[KV_KEY_BYTES];
	/* Reads on other threads than the opener's (sluiced's workers: handlers) go through a
	 * read-only connection of their own: in WAL mode a reader sees the last commit and never
	 * waits for a writer, so a handler's read does not wait for an operator's fsync, nor one
	 * worker for another. */
	pthread_t owner;
	pthread_key_t readers; /* struct kv_reader of the calling thread */
	int readers_ok;
	char db_path[PATH_MAX];
};

struct kv_reader {
	sqlite3 *db;
	sqlite3_stmt *get;
};

static void reader_free(void *arg)
{
	struct kv_reader *rd = arg;

	sqlite3_finalize(rd->get);
	sqlite3_close(rd->db);
	free(rd);
}

/* The calling thread's read connection, opened at its first read; NULL on the opener's
 * thread, or when one cannot be opened (the reads then share the store's mutex). */
static struct kv_reader *reader_of(struct sl_kv *kv)
{
	struct kv_reader *rd;

	if (!kv->readers_ok || pthread_equal(pthread_self(), kv->owner))
		return NULL;
	rd = pthread_getspecific(kv->readers);
	if (rd)
		return rd;
	rd = calloc(1, sizeof(*rd));
	if (!rd)
		return NULL;
	if (sqlite3_open_v2(kv->db_path, &rd->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW,
			    NULL) != SQLITE_OK ||
	    (sqlite3_db_config(rd->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL),
	     sqlite3_busy_timeout(rd->db, 2000),
	     sqlite3_prepare_v3(rd->db, "SELECT val FROM kv WHERE ns = ?1 AND key = ?2", -1,
				SQLITE_PREPARE_PERSISTENT, &rd->get, NULL)) != SQLITE_OK ||
	    pthread_setspecific(kv->readers, rd)) {
		sl_warn("kv: opening a read connection failed (%s): reads share the writer's",
			rd->db ? sqlite3_errmsg(rd->db) : "out of memory");
		reader_free(rd);
		return NULL;
	}
	return rd;
}

int sl_kv_ns_ok(const char *ns)
{
	size_t n = 0;

	if (!ns)
		return 0;
	for (; ns[n]; n++) {
		char c = ns[n];

		if (n >= SL_KV_NS_MAX ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == ':' || c == '@' || c == '-'))
			return 0;
	}
	return n > 0;
}

int sl_kv_key_ok(const char *key)
{
	size_t n = 0;

	if (!key)
		return 0;
	for (; key[n]; n++)
		if (n >= SL_KV_KEY_MAX || key[n] < 0x20 || key[n] > 0x7e)
			return 0;
	return n > 0;
}

/* "label\0ns\0key": unambiguous because names hold no NUL. Returns its length. */
static size_t build_aad(unsigned char *aad, const char *ns, const char *key)
{
	size_t l = sizeof(KV_AAD_LABEL), nl = strlen(ns) + 1, kl = strlen(key) + 1;

	memcpy(aad, KV_AAD_LABEL, l);
	memcpy(aad + l, ns, nl);
	memcpy(aad + l + nl, key, kl);
	return l + nl + kl;
}

#define KV_AAD_MAX (sizeof(KV_AAD_LABEL) + SL_KV_NS_MAX + 1 + SL_KV_KEY_MAX + 1)

/* Seals @len bytes of @pt into @out (@len + KV_OVERHEAD bytes): nonce || ciphertext || tag. */
static int seal(const unsigned char *key, const unsigned char *aad, size_t aad_len, const void *pt,
		size_t len, unsigned char *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, err = -EIO;

	if (!ctx)
		return -ENOMEM;
	if (RAND_bytes(out, KV_NONCE_BYTES) != 1)
		goto cleanup;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
		goto cleanup;
	if (len && EVP_EncryptUpdate(ctx, out + KV_NONCE_BYTES, &n, pt, (int)len) != 1)
		goto cleanup;
	if (EVP_EncryptFinal_ex(ctx, out + KV_NONCE_BYTES + len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KV_TAG_BYTES,
				out + KV_NONCE_BYTES + len) != 1)
		goto cleanup;
	err = 0;
cleanup:
	EVP_CIPHER_CTX_free(ctx);
	return err;
}

/* Opens a sealed @blob of @blob_len bytes into @pt (@blob_len - KV_OVERHEAD bytes). On
 * -EBADMSG, @pt holds nothing the caller may use (it wipes it). */
static int unseal(const unsigned char *key, const unsigned char *aad, size_t aad_len,
		  const unsigned char *blob, size_t blob_len, unsigned char *pt)
{
	size_t len = blob_len - KV_OVERHEAD;
	EVP_CIPHER_CTX *ctx;
	int n, err = -EBADMSG;

	if (blob_len < KV_OVERHEAD)
		return -EBADMSG;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, blob) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
		goto cleanup;
	if (len && EVP_DecryptUpdate(ctx, pt, &n, blob + KV_NONCE_BYTES, (int)len) != 1)
		goto cleanup;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KV_TAG_BYTES,
				(void *)(blob + KV_NONCE_BYTES + len)) != 1)
		goto cleanup;
	if (EVP_DecryptFinal_ex(ctx, pt + len, &n) == 1)
		err = 0;
cleanup:
	EVP_CIPHER_CTX_free(ctx);
	return err;
}

/* Maps a failed sqlite call to -errno and logs it once, here, with what was attempted. */
static int db_fail(struct sl_kv *kv, int rc, const char *what)
{
	sl_err("kv: %s failed: %s", what, sqlite3_errmsg(kv->db));
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	default:
		return -EIO;
	}
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Reads @path into @key after checking it is ours alone. -ENOENT if it does not exist. */
static int read_key(const char *path, unsigned char *key, char *err, size_t errlen)
{
	struct stat st;
	size_t off = 0;
	int fd, r = 0;

	/* O_NONBLOCK: a FIFO planted here must not hang the daemon before fstat refuses it. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		r = -errno;
		if (r == -ELOOP)
			sl_errf(err, errlen, "%s is a symbolic link: refusing it as the KV key",
				path);
		else if (r != -ENOENT)
			sl_errf(err, errlen, "opening %s failed: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) == -1) {
		r = -errno;
		sl_errf(err, errlen, "stat of %s failed: %s", path, strerror(-r));
	} else if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		sl_errf(err, errlen, "%s is not a regular file: refusing it as the KV key", path);
	} else if (st.st_mode & 077) {
		r = -EPERM;
		sl_errf(err, errlen,
			"%s is accessible by group or others (mode %04o): refusing the KV key; "
			"chmod 600 it if it was not exposed",
			path, (unsigned)(st.st_mode & 07777));
	} else if (st.st_uid != geteuid()) {
		r = -EPERM;
		sl_errf(err, errlen, "%s is owned by uid %u, not %u: refusing the KV key", path,
			(unsigned)st.st_uid, (unsigned)geteuid());
	} else if (st.st_size != KV_KEY_BYTES) {
		r = -EINVAL;
		sl_errf(err, errlen, "%s is %lld bytes, not %d: not a KV key", path,
			(long long)st.st_size, KV_KEY_BYTES);
	}
	while (!r && off < KV_KEY_BYTES) {
		ssize_t n = read(fd, key + off, KV_KEY_BYTES - off);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n ? -errno : -EIO;
			sl_errf(err, errlen, "reading %s failed: %s", path, strerror(-r));
			break;
		}
		off += n;
	}
	close(fd);
	return r;
}

/* Loads @dir/kv.key, creating it when neither it nor the database exists yet. */
static int load_key(struct sl_kv *kv, const char *dir, const char *db_path, char *err,
		    size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/kv.key", dir) >= sizeof(path)) {
		sl_errf(err, errlen, "KV directory path %s is too long", dir);
		return -ENAMETOOLONG;
	}
	for (int tries = 0; tries < 2; tries++) {
		r = read_key(path, kv->key, err, errlen);
		if (r != -ENOENT)
			return r;
		if (lstat(db_path, &st) == 0) {
			sl_errf(err, errlen,
				"%s is missing but %s exists: its values cannot be decrypted without "
				"it (restore the key, or remove the database to start empty)",
				path, db_path);
			return -ENOKEY;
		}
		if (RAND_bytes(kv->key, sizeof(kv->key)) != 1) {
			sl_errf(err, errlen, "no randomness for the KV key");
			return -EIO;
		}
		r = sl_file_write(dir, "kv.key", kv->key, sizeof(kv->key), 0600, SL_FILE_NEW);
		if (r != -EEXIST) {
			if (r)
				sl_errf(err, errlen, "creating %s failed: %s", path, strerror(-r));
			else
				sl_info("kv: created a new key %s", path);
			return r;
		}
		/* Someone else created it first: use theirs. */
	}
	sl_errf(err, errlen, "%s keeps appearing and vanishing", path);
	return -EAGAIN;
}

/* Makes sure the database file and its WAL companions exist as regular files with mode
 * 0600: SQLite would create the database with 0644 and gives the WAL files its mode. */
static int prepare_db_files(const char *db_path, char *err, size_t errlen)
{
	static const char *const suffix[] = { "", "-wal", "-shm" };

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		char path[PATH_MAX];
		struct stat st;
		int fd, flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

		snprintf(path, sizeof(path), "%s%s", db_path, suffix[i]);
		fd = open(path, i == 0 ? flags | O_CREAT : flags, 0600);
		if (fd == -1 && errno == ENOENT && i > 0)
			continue;
		if (fd == -1) {
			sl_errf(err, errlen, "opening %s failed: %s", path, strerror(errno));
			return -errno;
		}
		if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
			sl_errf(err, errlen, "%s is not a regular file of uid %u", path,
				(unsigned)geteuid());
			close(fd);
			return -EINVAL;
		}
		if ((st.st_mode & 077) && fchmod(fd, 0600) == -1) {
			sl_errf(err, errlen, "chmod 600 %s failed: %s", path, strerror(errno));
			close(fd);
			return -EPERM;
		}
		close(fd);
	}
	return 0;
}

/* The key check: an empty plaintext sealed under a fixed label, written when the database is
 * new. Opening a database with another kv.key then fails at once, with a clear reason,
 * instead of every later read failing one by one. */
static int check_key(struct sl_kv *kv, const char *db_path, char *err, size_t errlen)
{
	static const char sel[] = "SELECT val FROM meta WHERE name = 'key_check'";
	static const char ins[] = "INSERT INTO meta (name, val) VALUES ('key_check', ?)";
	unsigned char blob[KV_OVERHEAD], pt[1];
	sqlite3_stmt *st = NULL;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(kv->db, sel, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto db_error;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (unseal(kv->key, (const unsigned char *)KV_CHECK_LABEL, sizeof(KV_CHECK_LABEL),
			   sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0), pt)) {
			sl_errf(err, errlen,
				"%s was written under another key than the kv.key next to it: "
				"refusing it (restore its key, or remove it to start empty)",
				db_path);
			r = -EBADMSG;
		}
		goto cleanup;
	}
	if (rc != SQLITE_DONE)
		goto db_error;
	sqlite3_finalize(st);
	st = NULL;
	r = seal(kv->key, (const unsigned char *)KV_CHECK_LABEL, sizeof(KV_CHECK_LABEL), NULL, 0,
		 blob);
	if (r) {
		sl_errf(err, errlen, "sealing the KV key check failed");
		goto cleanup;
	}
	rc = sqlite3_prepare_v2(kv->db, ins, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto db_error;
	sqlite3_bind_blob(st, 1, blob, sizeof(blob), SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		goto db_error;
	goto cleanup;
db_error:
	sl_errf(err, errlen, "KV database: %s", sqlite3_errmsg(kv->db));
	r = -EIO;
cleanup:
	sqlite3_finalize(st);
	return r;
}

static int open_db(struct sl_kv *kv, const char *db_path, char *err, size_t errlen)
{
	static const char schema[] =
		"PRAGMA journal_mode = WAL;"
		"PRAGMA synchronous = FULL;"
		"PRAGMA secure_delete = ON;"
		"PRAGMA trusted_schema = OFF;"
		"BEGIN IMMEDIATE;"
		"CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL,"
		" val BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;"
		"CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, val BLOB NOT NULL);"
		"COMMIT;";
	const struct {
		sqlite3_stmt **st;
		const char *sql;
	} stmts[] = {
		{ &kv->put, "INSERT INTO kv (ns, key, val) VALUES (?1, ?2, ?3)"
			    " ON CONFLICT (ns, key) DO UPDATE SET val = excluded.val" },
		{ &kv->get, "SELECT val FROM kv WHERE ns = ?1 AND key = ?2" },
		{ &kv->rm, "DELETE FROM kv WHERE ns = ?1 AND key = ?2" },
		{ &kv->list, "SELECT key FROM kv WHERE ns = ?1 ORDER BY key" },
	};
	sqlite3_stmt *version = NULL;
	int rc, r;

	r = prepare_db_files(db_path, err, errlen);
	if (r)
		return r;
	rc = sqlite3_open_v2(db_path, &kv->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK)
		goto db_error;
	sqlite3_db_config(kv->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_busy_timeout(kv->db, 2000);
	rc = sqlite3_prepare_v2(kv->db, "PRAGMA user_version", -1, &version, NULL);
	if (rc != SQLITE_OK || sqlite3_step(version) != SQLITE_ROW)
		goto db_error;
	if (sqlite3_column_int(version, 0) > KV_SCHEMA_VERSION) {
		sl_errf(err, errlen, "%s was written by a newer sluice (schema %d)", db_path,
			sqlite3_column_int(version, 0));
		sqlite3_finalize(version);
		return -EPROTO;
	}
	sqlite3_finalize(version);
	version = NULL;
	rc = sqlite3_exec(kv->db, schema, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto db_error;
	rc = sqlite3_exec(kv->db, "PRAGMA user_version = 1", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto db_error;
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		rc = sqlite3_prepare_v3(kv->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
					stmts[i].st, NULL);
		if (rc != SQLITE_OK)
			goto db_error;
	}
	return check_key(kv, db_path, err, errlen);
db_error:
	sl_errf(err, errlen, "KV database %s: %s", db_path,
		kv->db ? sqlite3_errmsg(kv->db) : sqlite3_errstr(rc));
	sqlite3_finalize(version);
	return -EIO;
}

struct sl_kv *sl_kv_open(const char *dir, char *err, size_t errlen)
{
	char db_path[PATH_MAX];
	struct sl_kv *kv = NULL;
	struct stat st;
	int r;

	if ((size_t)snprintf(db_path, sizeof(db_path), "%s/kv.db", dir) >= sizeof(db_path)) {
		sl_errf(err, errlen, "KV directory path %s is too long", dir);
		r = -ENAMETOOLONG;
		goto fail;
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		r = -errno;
		sl_errf(err, errlen, "creating %s failed: %s", dir, strerror(errno));
		goto fail;
	}
	if (lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		r = -ENOTDIR;
		sl_errf(err, errlen, "%s is not a directory", dir);
		goto fail;
	}
	kv = calloc(1, sizeof(*kv));
	if (!kv) {
		r = -ENOMEM;
		sl_errf(err, errlen, "out of memory");
		goto fail;
	}
	pthread_mutex_init(&kv->lock, NULL);
	kv->owner = pthread_self();
	snprintf(kv->db_path, sizeof(kv->db_path), "%s", db_path);
	r = load_key(kv, dir, db_path, err, errlen);
	if (!r)
		r = open_db(kv, db_path, err, errlen);
	if (!r) {
		kv->readers_ok = !pthread_key_create(&kv->readers, reader_free);
		return kv;
	}
fail:
	sl_kv_close(kv);
	errno = -r;
	return NULL;
}

void sl_kv_close(struct sl_kv *kv)
{
	if (!kv)
		return;
	sqlite3_finalize(kv->put);
	sqlite3_finalize(kv->get);
	sqlite3_finalize(kv->rm);
	sqlite3_finalize(kv->list);
	sqlite3_close(kv->db);
	/* The readers' threads have ended (each closed its connection then). */
	if (kv->readers_ok)
		pthread_key_delete(kv->readers);
	pthread_mutex_destroy(&kv->lock);
	OPENSSL_cleanse(kv->key, sizeof(kv->key));
	free(kv);
}

static int bind_names(sqlite3_stmt *st, const char *ns, const char *key)
{
	int rc = sqlite3_bind_text(st, 1, ns, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK && key)
		rc = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
	return rc;
}

int sl_kv_put(struct sl_kv *kv, const char *ns, const char *key, const void *val, size_t len)
{
	unsigned char aad[KV_AAD_MAX], *blob;
	size_t aad_len;
	int rc, r;

	if (!sl_kv_ns_ok(ns) || !sl_kv_key_ok(key))
		return -EINVAL;
	if (len > SL_KV_VALUE_MAX)
		return -E2BIG;
	blob = malloc(len + KV_OVERHEAD);
	if (!blob)
		return -ENOMEM;
	aad_len = build_aad(aad, ns, key);
	r = seal(kv->key, aad, aad_len, val, len, blob);
	if (r)
		goto cleanup;
	pthread_mutex_lock(&kv->lock);
	rc = bind_names(kv->put, ns, key);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(kv->put, 3, blob, (int)(len + KV_OVERHEAD), SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(kv->put);
	if (rc != SQLITE_DONE)
		r = db_fail(kv, rc, "put");
	stmt_done(kv->put);
	pthread_mutex_unlock(&kv->lock);
cleanup:
	free(blob); /* ciphertext only */
	return r;
}

int sl_kv_get(struct sl_kv *kv, const char *ns, const char *key, char **val, size_t *len)
{
	unsigned char aad[KV_AAD_MAX], *pt = NULL;
	struct kv_reader *rd;
	sqlite3_stmt *get;
	size_t aad_len, blob_len;
	const void *blob;
	int rc, r = 0;

	*val = NULL;
	*len = 0;
	if (!sl_kv_ns_ok(ns) || !sl_kv_key_ok(key))
		return -EINVAL;
	aad_len = build_aad(aad, ns, key);
	rd = reader_of(kv);
	get = rd ? rd->get : kv->get;
	if (!rd)
		pthread_mutex_lock(&kv->lock);
	rc = bind_names(get, ns, key);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(get);
	if (rc == SQLITE_DONE) {
		r = -ENOENT;
		goto cleanup;
	}
	if (rc != SQLITE_ROW) {
		r = rd ? -EIO : db_fail(kv, rc, "get");
		if (rd)
			sl_err("kv: get failed: %s", sqlite3_errmsg(rd->db));
		goto cleanup;
	}
	blob = sqlite3_column_blob(get, 0);
	blob_len = sqlite3_column_bytes(get, 0);
	if (blob_len < KV_OVERHEAD || blob_len > SL_KV_VALUE_MAX + KV_OVERHEAD || !blob) {
		r = -EBADMSG;
		goto cleanup;
	}
	pt = malloc(blob_len - KV_OVERHEAD + 1);
	if (!pt) {
		r = -ENOMEM;
		goto cleanup;
	}
	r = unseal(kv->key, aad, aad_len, blob, blob_len, pt);
	if (r) {
		OPENSSL_cleanse(pt, blob_len - KV_OVERHEAD);
		free(pt);
		pt = NULL;
		goto cleanup;
	}
	pt[blob_len - KV_OVERHEAD] = 0;
	*val = (char *)pt;
	*len = blob_len - KV_OVERHEAD;
cleanup:
	stmt_done(get);
	if (!rd)
		pthread_mutex_unlock(&kv->lock);
	if (r == -EBADMSG)
		sl_warn("kv: the value of %s/%s does not authenticate (tampered with, or written "
			"under another name or key)",
			ns, key);
	return r;
}

int sl_kv_rm(struct sl_kv *kv, const char *ns, const char *key)
{
	int rc, r = 0;

	if (!sl_kv_ns_ok(ns) || !sl_kv_key_ok(key))
		return -EINVAL;
	pthread_mutex_lock(&kv->lock);
	rc = bind_names(kv->rm, ns, key);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(kv->rm);
	if (rc != SQLITE_DONE)
		r = db_fail(kv, rc, "rm");
	else if (sqlite3_changes(kv->db) == 0)
		r = -ENOENT;
	stmt_done(kv->rm);
	pthread_mutex_unlock(&kv->lock);
	return r;
}

int sl_kv_list(struct sl_kv *kv, const char *ns, sl_kv_key_cb *cb, void *arg)
{
	int rc, r = 0;

	if (!sl_kv_ns_ok(ns))
		return -EINVAL;
	pthread_mutex_lock(&kv->lock);
	rc = bind_names(kv->list, ns, NULL);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(kv->list);
		if (rc == SQLITE_ROW) {
			r = cb((const char *)sqlite3_column_text(kv->list, 0), arg);
			if (r)
				break;
		}
	}
	if (!r && rc != SQLITE_DONE)
		r = db_fail(kv, rc, "list");
	stmt_done(kv->list);
	pthread_mutex_unlock(&kv->lock);
	return r;
}
