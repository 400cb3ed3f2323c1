// SPDX-License-Identifier: MIT
/*
 * The one client of sluiced's control API. sl_cli_request() returns its errors, for the
 * commands that must not die on the first one: `sluice run` has a cgroup and a sandbox to
 * remove whatever happens, and `sluice oci-hook` answers a container runtime with one line
 * and an exit status. The other commands use its dying wrappers. One request per connection
 * (Connection: close), the answer read to its Content-Length or its end, every wait bounded
 * but that of a followed event stream.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

#define CALL_TIMEOUT_S 30
#define ANSWER_MAX (4u << 20)

/* The end of the head in @p (@n bytes): the offset of its blank line's end, or 0. A binary
 * body may hold NULs, so this searches bytes, not a string. */
static size_t head_end(const char *p, size_t n)
{
	const char *end = memmem(p, n, "\r\n\r\n", 4);

	return end ? (size_t)(end + 4 - p) : 0;
}

/* Content-Length of the head @p (@n bytes, ending in its blank line), or -1 if absent. */
static long head_content_length(const char *p, size_t n)
{
	static const char name[] = "\r\ncontent-length:";
	const size_t len = sizeof(name) - 1;

	for (size_t i = 0; i + len <= n; i++)
		if (!strncasecmp(p + i, name, len))
			return strtol(p + i + len, NULL, 10);
	return -1;
}

int sl_cli_request(const char *sock, const struct sl_cli_req *rq, struct sl_cli_resp *res,
		   char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CALL_TIMEOUT_S };
	struct sl_buf in = { 0 }, req = { 0 };
	size_t hdr_len = 0; /* offset of the body in @in, once the head is complete */
	long content_length = -1;
	char buf[8192];
	int fd = -1, e = 0;

	memset(res, 0, sizeof(*res));
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is too long", sock);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, sock);
	/* A stream (events --follow) waits for events as long as the user does. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    (!rq->stream && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		e = -errno;
		snprintf(err, errlen, "cannot reach sluiced at %s: %s (is sluiced running?)", sock,
			 strerror(-e));
		goto out;
	}
	sl_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: sluiced\r\nConnection: close\r\n", rq->method,
		      rq->path);
	if (rq->body)
		sl_buf_printf(&req, "Content-Type: %s\r\nContent-Length: %zu\r\n",
			      rq->ctype ? rq->ctype : "application/json", rq->body_len);
	sl_buf_printf(&req, "\r\n");
	if (rq->body && sl_buf_append(&req, rq->body, rq->body_len)) {
		e = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t off = 0; off < sl_buf_size(&req);) {
		ssize_t w =
			send(fd, sl_buf_head(&req) + off, sl_buf_size(&req) - off, MSG_NOSIGNAL);

		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			e = -errno;
			snprintf(err, errlen, "writing to sluiced failed: %s", strerror(-e));
			goto out;
		}
		off += w;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			e = -errno;
			snprintf(err, errlen, "reading from sluiced failed: %s", strerror(-e));
			goto out;
		}
		if (n == 0)
			break;
		if (hdr_len && rq->stream && res->status == 200) {
			fwrite(buf, 1, n, rq->stream);
			fflush(rq->stream);
			continue;
		}
		if (sl_buf_size(&in) + n > ANSWER_MAX || sl_buf_append(&in, buf, n)) {
			e = -EFBIG;
			snprintf(err, errlen, "sluiced's answer is too large");
			goto out;
		}
		if (!hdr_len) {
			hdr_len = head_end(sl_buf_head(&in), sl_buf_size(&in));
			if (!hdr_len)
				continue;
			if (sscanf(sl_buf_head(&in), "HTTP/1.1 %d", &res->status) != 1) {
				e = -EPROTO;
				snprintf(err, errlen, "sluiced sent a malformed response");
				goto out;
			}
			content_length = head_content_length(sl_buf_head(&in), hdr_len);
			if (rq->stream && res->status == 200) {
				fwrite(sl_buf_head(&in) + hdr_len, 1, sl_buf_size(&in) - hdr_len,
				       rq->stream);
				fflush(rq->stream);
			}
		}
		if (!rq->stream && content_length >= 0 &&
		    sl_buf_size(&in) - hdr_len >= (size_t)content_length)
			break;
	}
	if (!hdr_len) {
		e = -EPROTO;
		snprintf(err, errlen, "sluiced closed the connection without answering");
		goto out;
	}
	if ((!rq->stream || res->status != 200) &&
	    sl_buf_append(&res->body, sl_buf_head(&in) + hdr_len, sl_buf_size(&in) - hdr_len)) {
		e = -ENOMEM;
		snprintf(err, errlen, "out of memory");
	}
out:
	if (fd >= 0)
		close(fd);
	/* Both may have held a secret (kv put, kv get). */
	if (in.data)
		OPENSSL_cleanse(in.data, in.len);
	if (req.data)
		OPENSSL_cleanse(req.data, req.len);
	sl_buf_free(&in);
	sl_buf_free(&req);
	if (e)
		sl_buf_free(&res->body);
	return e;
}

int sl_cli_call(const char *sock, const char *method, const char *path, const char *body,
		struct sl_cli_resp *res, char *err, size_t errlen)
{
	struct sl_cli_req rq = {
		.method = method,
		.path = path,
		.body = body,
		.body_len = body ? strlen(body) : 0,
	};

	return sl_cli_request(sock, &rq, res, err, errlen);
}

void sl_cli_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sluice: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void sl_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sluice: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'sluice %s--help'.\n", cmd);
	exit(2);
}

void sl_cli_request_or_die(const char *sock, const struct sl_cli_req *rq, struct sl_cli_resp *res)
{
	char err[512];

	if (sl_cli_request(sock, rq, res, err, sizeof(err)))
		sl_cli_die("%s", err);
}

void sl_cli_call_or_die(const char *sock, const char *method, const char *path, const char *body,
			struct sl_cli_resp *res)
{
	char err[512];

	if (sl_cli_call(sock, method, path, body, res, err, sizeof(err)))
		sl_cli_die("%s", err);
}

json_t *sl_cli_json_or_die(struct sl_cli_resp *res)
{
	json_error_t jerr;
	json_t *j = json_loadb(sl_buf_head(&res->body), sl_buf_size(&res->body), 0, &jerr);

	if (res->status >= 400) {
		const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
		char copy[1024];

		snprintf(copy, sizeof(copy), "%s", msg ? msg : "sluiced refused the request");
		json_decref(j);
		sl_buf_free(&res->body);
		sl_cli_die("%s", copy);
	}
	if (!j)
		sl_cli_die("sluiced sent invalid JSON: %s", jerr.text);
	sl_buf_free(&res->body);
	return j;
}

json_t *sl_cli_json(const struct sl_cli_resp *res)
{
	if (!sl_buf_size(&res->body))
		return NULL;
	return json_loadb(sl_buf_head(&res->body), sl_buf_size(&res->body), 0, NULL);
}

void sl_cli_error(const struct sl_cli_resp *res, char *err, size_t errlen)
{
	json_t *j = sl_cli_json(res);
	const char *msg = json_string_value(json_object_get(j, "error"));

	if (msg)
		snprintf(err, errlen, "%s", msg);
	else
		snprintf(err, errlen, "sluiced refused the request (HTTP %d)", res->status);
	json_decref(j);
}

int sl_cli_add_sandbox(const char *sock, json_t *spec, char *err, size_t errlen)
{
	struct sl_cli_resp res;
	char *s = json_dumps(spec, JSON_COMPACT);
	int e;

	json_decref(spec);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e = sl_cli_call(sock, "POST", "/v1/sandboxes", s, &res, err, errlen);
	free(s);
	if (!e && res.status != 201) {
		sl_cli_error(&res, err, errlen);
		e = res.status == 409 ? -EEXIST : -EINVAL;
	}
	sl_buf_free(&res.body);
	return e;
}

int sl_cli_rm_sandbox(const char *sock, const char *name, char *err, size_t errlen)
{
	struct sl_cli_resp res;
	char path[128];
	int e;

	snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
	e = sl_cli_call(sock, "DELETE", path, NULL, &res, err, errlen);
	if (!e && res.status != 200) {
		sl_cli_error(&res, err, errlen);
		e = res.status == 404 ? -ENOENT : -EIO;
	}
	sl_buf_free(&res.body);
	return e;
}
