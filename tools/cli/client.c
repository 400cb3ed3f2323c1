// SPDX-License-Identifier: MIT
/*
 * A small client of sluiced's control API for the CLI commands that must not die on the
 * first error: `sluice run` has a cgroup and a sandbox to remove whatever happens, and
 * `sluice oci-hook` answers a container runtime with one line and an exit status. One
 * request per connection (Connection: close), the answer read to its end, every wait
 * bounded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

#define CALL_TIMEOUT_S 30
#define ANSWER_MAX (4u << 20)

int sl_cli_call(const char *sock, const char *method, const char *path, const char *body,
		struct sl_cli_resp *res, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CALL_TIMEOUT_S };
	struct sl_buf in = { 0 }, req = { 0 };
	const char *end;
	char buf[8192];
	int fd = -1, e = 0;

	memset(res, 0, sizeof(*res));
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is too long", sock);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, sock);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		e = -errno;
		snprintf(err, errlen, "cannot reach sluiced at %s: %s (is sluiced running?)", sock,
			 strerror(-e));
		goto out;
	}
	sl_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: sluiced\r\nConnection: close\r\n", method,
		      path);
	if (body)
		sl_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
			      strlen(body));
	sl_buf_printf(&req, "\r\n%s", body ? body : "");
	for (size_t off = 0; off < sl_buf_size(&req);) {
		ssize_t w = send(fd, sl_buf_head(&req) + off, sl_buf_size(&req) - off,
				 MSG_NOSIGNAL);

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
		if (sl_buf_size(&in) + n > ANSWER_MAX || sl_buf_append(&in, buf, n)) {
			e = -EFBIG;
			snprintf(err, errlen, "sluiced's answer is too large");
			goto out;
		}
	}
	sl_buf_append(&in, "", 1); /* the head is text: strstr() stops at its end */
	end = strstr(sl_buf_head(&in), "\r\n\r\n");
	if (!end || sscanf(sl_buf_head(&in), "HTTP/1.1 %d", &res->status) != 1) {
		e = -EPROTO;
		snprintf(err, errlen, "sluiced sent a malformed answer");
		goto out;
	}
	end += 4;
	sl_buf_append(&res->body, end, sl_buf_size(&in) - 1 - (end - sl_buf_head(&in)));
out:
	if (fd >= 0)
		close(fd);
	sl_buf_free(&in);
	sl_buf_free(&req);
	return e;
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
