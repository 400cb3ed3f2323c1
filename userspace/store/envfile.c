// SPDX-License-Identifier: MIT
/*
 * The env file of sluiced (--env-file): the secrets the policies' handlers read as `env.KEY`
 * and inject into the requests they allow, so that they never enter a sandbox. The format is
 * the common denominator of Docker's --env-file, systemd's EnvironmentFile and dotenv, kept
 * strict so that a mistake is an error rather than a silently different secret. The file is
 * refused unless only its owner (root or sluiced's euid) may access it, and an error names
 * the line, never its content: a value must not reach a terminal or a log because the line
 * around it was malformed. Values are wiped from memory when the set is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "store/envfile.h"
#include "core/log.h"

struct sl_env_var {
	char *key;
	char *val;
	size_t val_len;
	unsigned line;
};

struct sl_env {
	struct sl_env_var *vars;
	size_t n, cap;
};

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int key_start(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int key_char(char c)
{
	return key_start(c) || (c >= '0' && c <= '9');
}

/* Reads the whole of the already opened and checked @fd (at most SL_ENV_FILE_MAX bytes). The
 * buffer is NUL-terminated; the caller wipes and frees it. */
static int read_all(int fd, char **out, size_t *len)
{
	size_t cap = 4096, off = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (off + 1 == cap) {
			char *bigger;

			if (cap > SL_ENV_FILE_MAX) {
				OPENSSL_cleanse(buf, off);
				free(buf);
				return -EFBIG;
			}
			/* Grown by hand so that no copy of a secret is left unwiped by realloc. */
			bigger = malloc(cap * 2);
			if (!bigger) {
				OPENSSL_cleanse(buf, off);
				free(buf);
				return -ENOMEM;
			}
			memcpy(bigger, buf, off);
			OPENSSL_cleanse(buf, off);
			free(buf);
			buf = bigger;
			cap *= 2;
		}
		n = read(fd, buf + off, cap - 1 - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			int err = -errno;

			OPENSSL_cleanse(buf, off);
			free(buf);
			return err;
		}
		if (n == 0)
			break;
		off += n;
	}
	if (off > SL_ENV_FILE_MAX) {
		OPENSSL_cleanse(buf, off);
		free(buf);
		return -EFBIG;
	}
	buf[off] = 0;
	*out = buf;
	*len = off;
	return 0;
}

static const struct sl_env_var *find(const struct sl_env *env, const char *key, size_t key_len)
{
	for (size_t i = 0; env && i < env->n; i++)
		if (strlen(env->vars[i].key) == key_len && !memcmp(env->vars[i].key, key, key_len))
			return &env->vars[i];
	return NULL;
}

/* Parses one line (@p, @len bytes, no newline) numbered @lineno into @env. */
static int parse_line(struct sl_env *env, const char *p, size_t len, unsigned lineno,
		      const char *path, char *err, size_t errlen)
{
	const char *end = p + len, *key, *val;
	const struct sl_env_var *dup;
	struct sl_env_var *v;
	size_t key_len, val_len;

	if (memchr(p, 0, len)) {
		sl_errf(err, errlen, "env file %s: line %u contains a NUL byte", path, lineno);
		return -EINVAL;
	}
	while (p < end && is_blank(*p))
		p++;
	if (p == end || *p == '#')
		return 0;
	if (end - p > 7 && !memcmp(p, "export", 6) && is_blank(p[6])) {
		p += 7;
		while (p < end && is_blank(*p))
			p++;
	}
	key = p;
	if (p < end && key_start(*p))
		while (p < end && key_char(*p))
			p++;
	key_len = p - key;
	if (!key_len || p == end || *p != '=') {
		sl_errf(err, errlen,
			"env file %s: line %u is not KEY=VALUE (KEY: letters, digits and _, not "
			"starting with a digit)",
			path, lineno);
		return -EINVAL;
	}
	if (key_len > SL_ENV_KEY_MAX) {
		sl_errf(err, errlen, "env file %s: line %u: KEY is longer than %d characters", path,
			lineno, SL_ENV_KEY_MAX);
		return -EINVAL;
	}
	val = p + 1;
	while (end > val && is_blank(end[-1]))
		end--;
	if (val < end && (*val == '"' || *val == '\'')) {
		if (end - val < 2 || end[-1] != *val) {
			sl_errf(err, errlen,
				"env file %s: line %u: the value's opening %s quote is not closed at "
				"the end of the line",
				path, lineno, *val == '"' ? "double" : "single");
			return -EINVAL;
		}
		val++;
		end--;
	} else {
		while (val < end && is_blank(*val))
			val++;
	}
	val_len = end - val;
	dup = find(env, key, key_len);
	if (dup) {
		sl_errf(err, errlen, "env file %s: line %u: %.*s is already set on line %u", path,
			lineno, (int)key_len, key, dup->line);
		return -EINVAL;
	}
	if (env->n == SL_ENV_MAX_VARS) {
		sl_errf(err, errlen, "env file %s: more than %d variables", path, SL_ENV_MAX_VARS);
		return -E2BIG;
	}
	if (env->n == env->cap) {
		size_t cap = env->cap ? env->cap * 2 : 16;
		struct sl_env_var *vars = realloc(env->vars, cap * sizeof(*vars));

		if (!vars)
			goto oom;
		env->vars = vars;
		env->cap = cap;
	}
	v = &env->vars[env->n];
	v->key = strndup(key, key_len);
	v->val = malloc(val_len + 1);
	if (!v->key || !v->val) {
		free(v->key);
		free(v->val);
		goto oom;
	}
	memcpy(v->val, val, val_len);
	v->val[val_len] = 0;
	v->val_len = val_len;
	v->line = lineno;
	env->n++;
	return 0;
oom:
	sl_errf(err, errlen, "env file %s: out of memory", path);
	return -ENOMEM;
}

/* Refuses anything but a regular file that only its owner, root or our euid, may access. */
static int check_file(int fd, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) == -1) {
		sl_errf(err, errlen, "env file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		sl_errf(err, errlen, "env file %s is not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		sl_errf(err, errlen,
			"env file %s is accessible by group or others (mode %04o): it holds "
			"secrets, chmod 600 it",
			path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		sl_errf(err, errlen,
			"env file %s is owned by uid %u: only root's or uid %u's are "
			"accepted",
			path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_size > SL_ENV_FILE_MAX) {
		sl_errf(err, errlen, "env file %s is larger than %u bytes", path, SL_ENV_FILE_MAX);
		return -EFBIG;
	}
	return 0;
}

struct sl_env *sl_env_load(const char *path, char *err, size_t errlen)
{
	struct sl_env *env = NULL;
	char *buf = NULL;
	size_t len = 0;
	unsigned lineno = 0;
	int fd, r;

	/* Symbolic links are followed (secret mounts use them): the checks are of the target.
	 * O_NONBLOCK: opening a FIFO must not hang sluiced before fstat refuses it. */
	fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		r = -errno;
		sl_errf(err, errlen, "env file %s: %s", path, strerror(errno));
		goto fail;
	}
	r = check_file(fd, path, err, errlen);
	if (r)
		goto fail;
	r = read_all(fd, &buf, &len);
	if (r) {
		sl_errf(err, errlen, "env file %s: reading failed: %s", path, strerror(-r));
		goto fail;
	}
	env = calloc(1, sizeof(*env));
	if (!env) {
		r = -ENOMEM;
		sl_errf(err, errlen, "env file %s: out of memory", path);
		goto fail;
	}
	for (size_t off = 0; off < len;) {
		char *nl = memchr(buf + off, '\n', len - off);
		size_t end = nl ? (size_t)(nl - buf) : len, line_end = end;

		lineno++;
		if (line_end > off && buf[line_end - 1] == '\r') /* CRLF files */
			line_end--;
		r = parse_line(env, buf + off, line_end - off, lineno, path, err, errlen);
		if (r)
			goto fail;
		off = end + 1;
	}
	close(fd);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return env;
fail:
	if (fd != -1)
		close(fd);
	if (buf)
		OPENSSL_cleanse(buf, len);
	free(buf);
	sl_env_free(env);
	errno = -r;
	return NULL;
}

const char *sl_env_get(const struct sl_env *env, const char *key)
{
	const struct sl_env_var *v = key ? find(env, key, strlen(key)) : NULL;

	return v ? v->val : NULL;
}

size_t sl_env_count(const struct sl_env *env)
{
	return env ? env->n : 0;
}

int sl_env_at(const struct sl_env *env, size_t i, const char **key, const char **val)
{
	if (!env || i >= env->n)
		return -ERANGE;
	*key = env->vars[i].key;
	*val = env->vars[i].val;
	return 0;
}

void sl_env_free(struct sl_env *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->n; i++) {
		OPENSSL_cleanse(env->vars[i].val, env->vars[i].val_len);
		free(env->vars[i].val);
		free(env->vars[i].key);
	}
	free(env->vars);
	free(env);
}
