/* SPDX-License-Identifier: MIT */
/* The KV store: namespaced secrets, encrypted at rest, in SQLite (see kv.c).
 * Threading: any thread. Writes and lists take the store's mutex; sl_kv_put() and sl_kv_rm()
 * block on an fsync (PRAGMA synchronous = FULL: 3 ms on average, up to ~30 ms). sl_kv_get()
 * on the thread that opened the store takes the mutex too; on any other thread (sluiced's
 * workers: handlers read the KV there) it reads through a read-only connection of that
 * thread's own (WAL: it sees the last commit and never waits for a writer or another reader),
 * closed when the thread ends: such threads end before sl_kv_close(). sluiced calls the
 * writers on its main thread, for the control API's PUT and DELETE /v1/kv only (an
 * operator's `sluice kv put|rm`; Lua and the sandboxes' traffic only read): the one exception
 * to "nothing in a callback blocks", taken so that a 200 means the value is on disk
 * (ARCHITECTURE.md, Threads). */
#ifndef SL_KV_H
#define SL_KV_H

#include <stddef.h>

#define SL_KV_NS_MAX 128
#define SL_KV_KEY_MAX 512
#define SL_KV_VALUE_MAX (64 * 1024)

struct sl_kv;

/* Called by sl_kv_list() for each key, in byte order; a non-zero return stops the walk and
 * becomes sl_kv_list()'s result. It must not call into the same store. */
typedef int sl_kv_key_cb(const char *key, void *arg);

/* Opens (creating) @dir/kv.db and @dir/kv.key; @dir is created 0700 if missing. The key file
 * holds 32 random bytes; it is refused if it is not a regular file of our euid, if group or
 * others may access it, or if its size is wrong, and a missing key next to an existing
 * database is an error (its values could never be read again). Returns NULL with errno set
 * and a one-line reason in @err. */
struct sl_kv *sl_kv_open(const char *dir, char *err, size_t errlen);
/* Closes the database and wipes the key. Accepts NULL. */
void sl_kv_close(struct sl_kv *kv);

/* A namespace is 1..SL_KV_NS_MAX of [A-Za-z0-9_.:@-]; a key is 1..SL_KV_KEY_MAX bytes of
 * printable ASCII (space to '~'). */
int sl_kv_ns_ok(const char *ns);
int sl_kv_key_ok(const char *key);

/* Stores @len bytes of @val (at most SL_KV_VALUE_MAX, may be 0) under @ns/@key, replacing any
 * previous value. Returns 0, -EINVAL (bad name), -E2BIG (too large), -EIO (database). */
int sl_kv_put(struct sl_kv *kv, const char *ns, const char *key, const void *val, size_t len);
/* Reads the value of @ns/@key into a malloc'd buffer, NUL-terminated after its @len bytes;
 * the caller owns *@val and should OPENSSL_cleanse() it before free(). Returns 0, -ENOENT,
 * -EINVAL, -EBADMSG (the stored value does not authenticate: tampered with, moved to another
 * key, or encrypted under another kv.key), -ENOMEM, -EIO. */
int sl_kv_get(struct sl_kv *kv, const char *ns, const char *key, char **val, size_t *len);
/* Removes @ns/@key. Returns 0, -ENOENT, -EINVAL, -EIO. */
int sl_kv_rm(struct sl_kv *kv, const char *ns, const char *key);
/* Calls @cb for each key of @ns (never values). Returns 0, -EINVAL, -EIO or @cb's result. */
int sl_kv_list(struct sl_kv *kv, const char *ns, sl_kv_key_cb *cb, void *arg);

#endif
