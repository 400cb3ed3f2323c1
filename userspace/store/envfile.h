/* SPDX-License-Identifier: MIT */
/*
 * sluiced --env-file: secrets for the policies' handlers, KEY=VALUE lines (see envfile.c).
 *
 * Threading: sl_env_load() reads the file (blocking) at startup; the loaded set is read-only
 * after, so its getters may run on any thread, until sl_env_free().
 */
#ifndef SL_ENVFILE_H
#define SL_ENVFILE_H

#include <stddef.h>

#define SL_ENV_FILE_MAX (1u << 20)
#define SL_ENV_MAX_VARS 4096
#define SL_ENV_KEY_MAX 256

struct sl_env;

/* Loads @path: it must be a regular file owned by root or our euid that neither group nor
 * others may access. Lines are `KEY=VALUE` with KEY matching [A-Za-z_][A-Za-z0-9_]*,
 * optionally prefixed by `export `; a value in single or double quotes is taken literally
 * (no escapes), an unquoted one loses its surrounding blanks; blank lines and lines starting
 * with `#` are skipped; a KEY set twice is an error. Returns NULL with errno set and a
 * one-line reason in @err that may name the line and the KEY, never the value. */
struct sl_env *sl_env_load(const char *path, char *err, size_t errlen);
/* The value of @key, or NULL. The string belongs to @env. @env may be NULL (no env file). */
const char *sl_env_get(const struct sl_env *env, const char *key);
/* Number of variables (0 for a NULL @env), and the @i-th one in file order: 0, or -ERANGE.
 * The strings belong to @env. */
size_t sl_env_count(const struct sl_env *env);
int sl_env_at(const struct sl_env *env, size_t i, const char **key, const char **val);
/* Wipes the values and frees. Accepts NULL. */
void sl_env_free(struct sl_env *env);

#endif
