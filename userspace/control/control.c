// SPDX-License-Identifier: MIT
/*
 * The control API of sluiced: HTTP/1.1 with JSON bodies on a unix socket, the way Docker's
 * and Firecracker's daemons are driven. Requests are parsed with llhttp (the parser the proxy
 * uses too), answered synchronously from the loop thread, and bounded in size: a bad request
 * gets a 4xx and its connection closed, never more. GET /v1/events streams JSON lines until
 * the client goes away; a follower that cannot keep up loses lines instead of stalling the
 * daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>
#include <openssl/crypto.h>

#include "kernel/bpf_loader.h"
#include "core/buf.h"
#include "core/list.h"
#include "tls/ca.h"
#include "kernel/cgroup.h"
#include "control/control.h"
#include "control/ctl_decode.h"
#include "control/ctl_int.h"
#include "dns/dns.h"
#include "http/http.h"
#include "proxy/proxy.h"
#include "core/events.h"
#include "store/kv.h"
#include "core/log.h"
#include "core/loop.h"
#include "lua/lua_host.h"
#include "sandbox/sandbox.h"

#define CTL_MAX_URL 4096
#define CTL_READS_PER_WAKEUP 16 /* of 16 KiB */
#define CTL_ACCEPTS_PER_WAKEUP 16
#define CTL_MAX_HEADERS (64 * 1024)
#define CTL_MAX_BODY (2u << 20)
#define CTL_MAX_CONNS 256

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

static llhttp_settings_t settings;

static void conn_close(struct ctl_conn *c)
{
	struct sl_control *ctl = c->ctl;
	sl_list_del(&c->link);
	ctl->nconns--;
	if (c->sub)
		sl_events_unsubscribe(ctl->d.events, c->sub);
	if (c->waiting)
		c->waiting->c = NULL; /* its completion finds nobody to answer */
	sl_buf_free(&c->held);
	sl_loop_del_fd(ctl->d.loop, c->fd);
	close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	sl_buf_free(&c->url);
	sl_buf_free(&c->body);
	sl_buf_free(&c->out);
	free(c);
}

/* Writes what it can; returns -1 if the connection was closed. */
int ctl_conn_flush(struct ctl_conn *c)
{
	while (sl_buf_size(&c->out)) {
		ssize_t n = send(c->fd, sl_buf_head(&c->out), sl_buf_size(&c->out),
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			conn_close(c);
			return -1;
		}
		sl_buf_consume(&c->out, n);
	}
	if (!sl_buf_size(&c->out) && c->closing) {
		conn_close(c);
		return -1;
	}
	sl_loop_mod_fd(c->ctl->d.loop, c->fd,
		       (c->waiting ? 0 : SL_READ) | (sl_buf_size(&c->out) ? SL_WRITE : 0));
	return 0;
}

struct ctl_wait *ctl_wait_begin(struct ctl_conn *c)
{
	struct ctl_wait *w = calloc(1, sizeof(*w));

	if (w) {
		w->c = c;
		c->waiting = w;
	}
	return w;
}

struct ctl_conn *ctl_wait_end(struct ctl_wait *w)
{
	struct ctl_conn *c = w->c;

	if (c)
		c->waiting = NULL;
	free(w);
	return c;
}

void ctl_respond_raw(struct ctl_conn *c, int status, const char *ctype, const char *body,
		     size_t len)
{
	int keep = !c->closing && llhttp_should_keep_alive(&c->parser);

	if (!keep)
		c->closing = 1;
	sl_buf_printf(&c->out,
		      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
		      sl_http_reason(status), ctype, len, keep ? "" : "Connection: close\r\n");
	sl_buf_append(&c->out, body, len);
}

/* Sends @j (reference stolen) as the JSON body. */
void ctl_respond_json(struct ctl_conn *c, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(j);
	if (!s) {
		static const char oom[] = "{\"error\":\"out of memory\"}\n";

		ctl_respond_raw(c, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	{
		struct sl_buf b = { 0 };

		sl_buf_printf(&b, "%s\n", s);
		ctl_respond_raw(c, status, "application/json", sl_buf_head(&b), sl_buf_size(&b));
		sl_buf_free(&b);
	}
	free(s);
}

void ctl_respond_error(struct ctl_conn *c, int status, const char *msg)
{
	ctl_respond_json(c, status, sl_ctl_error_json(msg));
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes @s in place, '+' as a space when @plus_is_space (query strings; in a path a
 * '+' is itself); returns -1 on a malformed escape or an embedded NUL. */
int ctl_pct_decode(char *s, int plus_is_space)
{
	char *d = s;

	for (; *s; s++) {
		if (*s == '%') {
			int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);

			if (lo < 0 || (hi == 0 && lo == 0))
				return -1;
			*d++ = (char)(hi * 16 + lo);
			s += 2;
		} else {
			*d++ = *s == '+' && plus_is_space ? ' ' : *s;
		}
	}
	*d = 0;
	return 0;
}

/* The value of query parameter @key in @query ("a=1&b=2"), decoded into @out. */
int ctl_query_param(const char *query, const char *key, char *out, size_t len)
{
	size_t kl = strlen(key);

	while (query && *query) {
		const char *amp = strchr(query, '&');
		size_t seg = amp ? (size_t)(amp - query) : strlen(query);

		if (seg > kl && !strncmp(query, key, kl) && query[kl] == '=') {
			size_t vl = seg - kl - 1;

			if (vl >= len)
				return -1;
			memcpy(out, query + kl + 1, vl);
			out[vl] = 0;
			return ctl_pct_decode(out, 1) ? -1 : 1;
		}
		if (seg == kl && !strncmp(query, key, kl)) {
			if (len)
				out[0] = 0;
			return 1;
		}
		query = amp ? amp + 1 : NULL;
	}
	return 0;
}

int ctl_truthy(const char *v)
{
	return !*v || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
}

/* Who is at the other end of @c, read once at accept: the connecting process's pid, uid and
 * a pidfd of it. SO_PEERPIDFD names the process that connected; before Linux 6.5 a pidfd
 * opened at accept names whoever has the pid then, which is the same process unless it
 * exited and its pid was reused in between. */
static void peer_identify(struct ctl_conn *c)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);
	int fd = -1;

	c->pidfd = -1;
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == -1 || cr.pid <= 0)
		return;
	c->pid = cr.pid;
	c->uid = cr.uid;
	l = sizeof(fd);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERPIDFD, &fd, &l) == -1 || fd < 0)
		fd = (int)syscall(SYS_pidfd_open, cr.pid, 0);
	c->pidfd = fd >= 0 ? fd : -1;
	if (c->pidfd >= 0)
		fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
}

/*
 * Whether the peer of @c runs inside a sandbox (its cgroup or one below): 1 with the
 * sandbox's name in @box, 0 if not, -errno if that cannot be told (the peer is gone, its
 * cgroup unreadable): refused as well. A sandboxed process, root or not, must not change
 * its own rules. Read at every request: a process may have been moved into a sandbox since
 * it connected.
 */
static int peer_confined(struct ctl_conn *c, char *box, size_t len)
{
	char cg[PATH_MAX];
	int e;

	if (c->pid <= 0)
		return -ESRCH;
	e = sl_cgroup_of_pid(c->pid, cg, sizeof(cg));
	/* Read the cgroup first, then check the process that connected is still alive: if it
	 * is, the pid was not reused and what was read is its cgroup. */
	if (c->pidfd < 0 || syscall(SYS_pidfd_send_signal, c->pidfd, 0, NULL, 0) == -1)
		return -ESRCH;
	if (e == -EXDEV || e == -EINVAL)
		return 0; /* outside sluiced's cgroup namespace, or the root cgroup: no sandbox */
	if (e)
		return e;
	sl_registry_foreach(b, c->ctl->d.reg) {
		if (sl_cgroup_within(cg, sl_box_cgroup(b))) {
			snprintf(box, len, "%s", sl_box_name(b));
			return 1;
		}
	}
	return 0;
}

/* 403 to a peer inside a sandbox (evented on that sandbox), then the connection closes.
 * Returns 1 if refused. */
static int refuse_confined(struct ctl_conn *c, const char *method, const char *path)
{
	char box[SL_NAME_MAX + 1] = "", shown[256];
	int r = peer_confined(c, box, sizeof(box));

	if (!r)
		return 0;
	snprintf(shown, sizeof(shown), "%s", path);
	sl_utf8_scrub(shown);
	sl_info("control API: %s %s from pid %d uid %u refused: %s", method, shown, (int)c->pid,
		(unsigned)c->uid, r > 0 ? "it runs in a sandbox" : "its cgroup cannot be told");
	sl_events_publish(c->ctl->d.events, r > 0 ? box : NULL,
			  json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s}", "type", "control",
				    "verdict", "refused", "method", method, "path", shown, "pid",
				    (int)c->pid, "uid", (int)c->uid, "reason",
				    r > 0 ? "peer runs in a sandbox" : "peer unknown"));
	c->closing = 1;
	ctl_respond_error(c, 403,
			  r > 0 ? "the control API is not for processes in a sandbox" :
				  "the control API could not tell where the caller runs");
	return 1;
}

static void route_health(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	ctl_respond_json(c, 200,
			 json_pack("{s:b, s:I}", "ok", 1, "sandboxes",
				   (json_int_t)sl_registry_count(c->ctl->d.reg)));
}

static void route_not_found(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	ctl_respond_error(c, 404, "no such endpoint");
}

/*
 * The control API. A pattern is matched segment by segment: "*" is one segment (a sandbox
 * name), a final "**" the rest of the path. The first route whose pattern matches decides:
 * its method, or another route of the same pattern's, or a 405 that names them; a route
 * without a method takes every method and answers the wrong ones itself.
 */
static const struct ctl_route {
	const char *method;
	const char *pattern;
	void (*fn)(struct ctl_conn *c, const struct ctl_req *rq);
} routes[] = {
	{ "GET", "/v1/sandboxes", ctl_route_list },
	{ "POST", "/v1/sandboxes", ctl_route_add },
	{ "GET", "/v1/sandboxes/*", ctl_route_show },
	{ "DELETE", "/v1/sandboxes/*", ctl_route_rm },
	{ NULL, "/v1/sandboxes/*/handler", ctl_route_handler }, /* PUT, DELETE */
	{ NULL, "/v1/sandboxes/*/policy", ctl_route_reload }, /* PUT */
	{ NULL, "/v1/sandboxes/*/mode", ctl_route_mode }, /* PUT */
	{ "GET", "/v1/sandboxes/*/suggest", ctl_route_suggest },
	{ "GET", "/v1/sandboxes/*/ca", ctl_route_ca },
	{ NULL, "/v1/sandboxes/*/**", route_not_found },
	{ NULL, "/v1/kv/**", ctl_route_kv }, /* GET, PUT, DELETE */
	{ "GET", "/v1/events", ctl_route_events },
	{ "GET", "/v1/metrics", ctl_route_metrics },
	{ NULL, "/v1/health", route_health },
};

/* Whether @path matches @pat; @arg (@arg_len) is what its "*" matched, else its "**". */
static int route_match(const char *pat, char *path, char **arg, size_t *arg_len)
{
	*arg = NULL;
	*arg_len = 0;
	while (*pat) {
		if (pat[0] == '*' && pat[1] == '*') {
			if (!*arg) {
				*arg = path;
				*arg_len = strlen(path);
			}
			return 1;
		}
		if (*pat == '*') {
			size_t n = strcspn(path, "/");

			*arg = path;
			*arg_len = n;
			path += n;
			pat++;
			continue;
		}
		if (*pat++ != *path++)
			return 0;
	}
	return !*path;
}

/* Whether @pat has a "*" segment (a sandbox name), not only a "**". */
static int route_has_name(const char *pat)
{
	const char *p = strchr(pat, '*');

	return p && p[1] != '*';
}

static void dispatch(struct ctl_conn *c)
{
	const char *method = llhttp_method_name(c->parser.method);
	char *path = c->url.data ? c->url.data : "", *query = strchr(path, '?');
	const struct ctl_route *matched = NULL;
	struct ctl_req rq = { .method = method };
	struct sl_buf allowed = { 0 };
	size_t arg_len;

	if (query)
		*query++ = 0;
	rq.query = query;
	if (refuse_confined(c, method, path))
		return;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct ctl_route *r = &routes[i];

		if (matched && strcmp(r->pattern, matched->pattern))
			continue;
		if (!matched) {
			if (!route_match(r->pattern, path, &rq.arg, &arg_len))
				continue;
			matched = r;
			/* A sandbox name is checked before its method (400 before 405). */
			if (route_has_name(r->pattern)) {
				rq.arg[arg_len] = 0;
				if (ctl_pct_decode(rq.arg, 1) || !sl_sandbox_name_ok(rq.arg)) {
					ctl_respond_error(c, 400, "invalid sandbox name");
					goto out;
				}
			}
		}
		if (!r->method || !strcmp(r->method, method)) {
			r->fn(c, &rq);
			goto out;
		}
		sl_buf_printf(&allowed, "%s%s", sl_buf_size(&allowed) ? " or " : "", r->method);
	}
	if (!matched) {
		ctl_respond_error(c, 404, "no such endpoint");
	} else {
		struct sl_buf msg = { 0 };

		sl_buf_printf(&msg, "use %s on ", sl_buf_head(&allowed));
		for (const char *p = matched->pattern; *p; p++) {
			if (*p == '*')
				sl_buf_printf(&msg, "NAME");
			else
				sl_buf_append(&msg, p, 1);
		}
		ctl_respond_error(c, 405, sl_buf_head(&msg));
		sl_buf_free(&msg);
	}
out:
	sl_buf_free(&allowed);
}

static int on_message_begin(llhttp_t *p)
{
	struct ctl_conn *c = p->data;

	sl_buf_reset(&c->url);
	sl_buf_reset(&c->body);
	c->header_bytes = 0;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct ctl_conn *c = p->data;

	if (sl_buf_size(&c->url) + len > CTL_MAX_URL) {
		c->too_big = 414;
		return -1;
	}
	return sl_buf_append(&c->url, at, len) ? -1 : 0;
}

static int on_header_data(llhttp_t *p, const char *at, size_t len)
{
	struct ctl_conn *c = p->data;

	(void)at;
	c->header_bytes += len;
	if (c->header_bytes > CTL_MAX_HEADERS) {
		c->too_big = 431;
		return -1;
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct ctl_conn *c = p->data;

	if (sl_buf_size(&c->body) + len > CTL_MAX_BODY) {
		c->too_big = 413;
		return -1;
	}
	return sl_buf_append(&c->body, at, len) ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct ctl_conn *c = p->data;

	c->dispatching = 1;
	dispatch(c);
	c->dispatching = 0;
	/* A stream or a closing connection takes no further requests; one waiting for its
	 * answer takes the next after it. */
	return c->closing || c->sub || c->waiting ? HPE_PAUSED : 0;
}

/* Parses @n bytes of requests; what follows a request that waits for its answer is held. */
static void conn_feed(struct ctl_conn *c, const char *buf, size_t n)
{
	llhttp_errno_t e;

	if (c->closing || c->sub)
		return; /* no more requests on this connection: discard */
	if (c->waiting) {
		sl_buf_append(&c->held, buf, n);
		return;
	}
	e = llhttp_execute(&c->parser, buf, n);
	if (e == HPE_PAUSED) {
		if (c->waiting) {
			const char *at = llhttp_get_error_pos(&c->parser);

			if (at >= buf && at < buf + n)
				sl_buf_append(&c->held, at, buf + n - at);
		}
		return;
	}
	if (e != HPE_OK) {
		c->closing = 1;
		if (c->too_big)
			ctl_respond_error(c, c->too_big, sl_http_reason(c->too_big));
		else
			ctl_respond_error(c, 400, llhttp_get_error_reason(&c->parser));
	}
}

void ctl_wait_resume(struct ctl_conn *c)
{
	if (c->dispatching)
		return; /* answered at once, inside the parser: it goes on by itself */
	if (!c->closing && !c->sub) {
		llhttp_resume(&c->parser);
		if (sl_buf_size(&c->held)) {
			struct sl_buf b = c->held;

			c->held = (struct sl_buf){ 0 };
			conn_feed(c, sl_buf_head(&b), sl_buf_size(&b));
			sl_buf_free(&b);
		}
	}
	ctl_conn_flush(c);
}

static void conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct ctl_conn *c = arg;
	char buf[16384];

	(void)loop;
	if (events & SL_WRITE) {
		if (ctl_conn_flush(c))
			return;
	}
	if (!(events & (SL_READ | SL_HUP)))
		return;
	if (c->waiting) {
		/* Nothing is read until the answer; a peer that hangs up meanwhile is gone. */
		if (events & SL_HUP)
			conn_close(c);
		return;
	}
	/* Bounded per wake-up like every reader of the loop: the rest waits for its turn. */
	for (int i = 0; i < CTL_READS_PER_WAKEUP && !c->waiting; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		conn_feed(c, buf, n);
	}
	ctl_conn_flush(c);
}

static void accept_resume(struct sl_loop *loop, struct sl_timer *t)
{
	struct sl_control *ctl = sl_container_of(t, struct sl_control, paused);

	sl_loop_mod_fd(loop, ctl->fd, SL_READ);
}

static void accept_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct sl_control *ctl = arg;

	(void)events;
	for (int i = 0; i < CTL_ACCEPTS_PER_WAKEUP; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ctl_conn *c;

		if (cfd == -1 && (errno == EMFILE || errno == ENFILE)) {
			/* Level-triggered: wait for descriptors rather than spin (and log) on a
			 * listener that stays readable. */
			if (!sl_timer_armed(&ctl->paused)) {
				sl_warn("control accept failed: %s", strerror(errno));
				sl_loop_mod_fd(loop, fd, 0);
				sl_timer_arm(loop, &ctl->paused, 100, accept_resume);
			}
			return;
		}
		if (cfd == -1) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				sl_warn("control accept failed: %s", strerror(errno));
			return;
		}
		if (ctl->nconns >= CTL_MAX_CONNS) {
			close(cfd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->ctl = ctl;
		c->fd = cfd;
		sl_list_init(&c->link);
		peer_identify(c);
		llhttp_init(&c->parser, HTTP_REQUEST, &settings);
		c->parser.data = c;
		if (sl_loop_add_fd(loop, cfd, SL_READ, conn_cb, c)) {
			close(cfd);
			if (c->pidfd >= 0)
				close(c->pidfd);
			free(c);
			continue;
		}
		sl_list_add(&ctl->conns, &c->link);
		ctl->nconns++;
	}
}

struct sl_control *sl_control_open(const char *path, const struct sl_control_deps *deps, char *err,
				   size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sl_control *ctl;
	char dir[sizeof(sa.sun_path)], *slash;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is too long", path);
		return NULL;
	}
	llhttp_settings_init(&settings);
	settings.on_message_begin = on_message_begin;
	settings.on_url = on_url;
	settings.on_header_field = on_header_data;
	settings.on_header_value = on_header_data;
	settings.on_body = on_body;
	settings.on_message_complete = on_message_complete;

	strcpy(sa.sun_path, path);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0755) == -1 && errno != EEXIST) {
			snprintf(err, errlen, "creating %s failed: %s", dir, strerror(errno));
			return NULL;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	/* A live daemon answers a connect; a stale file from a killed one does not. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN) {
		snprintf(err, errlen, "another sluiced is serving %s", path);
		close(fd);
		return NULL;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	unlink(path);
	{
		mode_t old = umask(0177); /* the socket is born 0600: no window for others */
		int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));

		umask(old);
		if (r == -1 || listen(fd, 64) == -1) {
			snprintf(err, errlen, "listening on %s failed: %s", path, strerror(errno));
			close(fd);
			return NULL;
		}
	}
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctl->d = *deps;
	ctl->fd = fd;
	sl_list_init(&ctl->conns);
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	if (sl_loop_add_fd(deps->loop, fd, SL_READ, accept_cb, ctl)) {
		snprintf(err, errlen, "watching %s failed", path);
		close(fd);
		unlink(path);
		free(ctl);
		return NULL;
	}
	return ctl;
}

void sl_control_close(struct sl_control *ctl)
{
	if (!ctl)
		return;
	while (!sl_list_empty(&ctl->conns))
		conn_close(sl_list_first(&ctl->conns, struct ctl_conn, link));
	sl_timer_disarm(ctl->d.loop, &ctl->paused);
	sl_loop_del_fd(ctl->d.loop, ctl->fd);
	close(ctl->fd);
	unlink(ctl->path);
	free(ctl);
}
