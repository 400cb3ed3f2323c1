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
#define CTL_STREAM_MAX_PENDING (1u << 20)

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

struct sl_control {
	struct sl_control_deps d;
	int fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sl_list conns; /* of struct ctl_conn */
	int nconns;
	unsigned long long events_dropped; /* event lines lost to slow followers, all of them */
	struct sl_timer paused; /* armed: accepting again after running out of descriptors */
};

struct ctl_conn {
	struct sl_control *ctl;
	int fd;
	llhttp_t parser;
	struct sl_buf url, body, out;
	size_t header_bytes;
	int too_big; /* 413/414/431 pending */
	int closing; /* close once out is flushed */
	int sub; /* events subscription handle, 0 if none */
	pid_t pid; /* the peer: the process that connected (SO_PEERCRED), 0 if unknown */
	uid_t uid;
	int pidfd; /* that process itself, so that a reused pid is never mistaken for it */
	unsigned long dropped; /* event lines lost to a slow follower */
	struct sl_list link; /* in ctl->conns */
};

static llhttp_settings_t settings;

static void conn_close(struct ctl_conn *c)
{
	struct sl_control *ctl = c->ctl;
	sl_list_del(&c->link);
	ctl->nconns--;
	if (c->sub)
		sl_events_unsubscribe(ctl->d.events, c->sub);
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
static int conn_flush(struct ctl_conn *c)
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
	sl_loop_mod_fd(c->ctl->d.loop, c->fd, SL_READ | (sl_buf_size(&c->out) ? SL_WRITE : 0));
	return 0;
}

static void respond_raw(struct ctl_conn *c, int status, const char *ctype, const char *body,
			size_t len)
{
	int keep = !c->closing && llhttp_should_keep_alive(&c->parser);

	if (!keep)
		c->closing = 1;
	sl_buf_printf(&c->out,
		      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
		      status, sl_http_reason(status), ctype, len, keep ? "" : "Connection: close\r\n");
	sl_buf_append(&c->out, body, len);
}

/* Sends @j (reference stolen) as the JSON body. */
static void respond_json(struct ctl_conn *c, int status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(j);
	if (!s) {
		static const char oom[] = "{\"error\":\"out of memory\"}\n";

		respond_raw(c, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	{
		struct sl_buf b = { 0 };

		sl_buf_printf(&b, "%s\n", s);
		respond_raw(c, status, "application/json", sl_buf_head(&b), sl_buf_size(&b));
		sl_buf_free(&b);
	}
	free(s);
}

static void respond_error(struct ctl_conn *c, int status, const char *msg)
{
	respond_json(c, status, sl_ctl_error_json(msg));
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
static int pct_decode(char *s, int plus_is_space)
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
static int query_param(const char *query, const char *key, char *out, size_t len)
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
			return pct_decode(out, 1) ? -1 : 1;
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

static int truthy(const char *v)
{
	return !*v || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
}

static void handle_list(struct ctl_conn *c)
{
	json_t *arr = json_array();

	sl_registry_foreach(b, c->ctl->d.reg)
		json_array_append_new(arr, sl_sandbox_json(c->ctl->d.reg, b, 0));
	respond_json(c, 200, json_pack("{s:o}", "sandboxes", arr));
}

/* Who is asking, for events: the peer's credentials on the unix socket. */
static void peer_of(struct ctl_conn *c, char *buf, size_t len)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == -1)
		snprintf(buf, len, "control API");
	else
		snprintf(buf, len, "uid %u pid %d", (unsigned)cr.uid, (int)cr.pid);
}

static json_t *switch_json(struct sl_registry *reg, struct sl_box *box,
			   const struct sl_switch_result *res)
{
	json_t *j = sl_sandbox_json(reg, box, 0);

	if (j)
		json_object_set_new(j, "closed",
				    json_pack("{s:I, s:I, s:I}", "kernel_flows",
					      (json_int_t)res->closed_kernel, "proxied",
					      (json_int_t)res->closed_proxy, "dns_entries",
					      (json_int_t)res->dns_dropped));
	return j;
}

/* PUT /v1/sandboxes/NAME/handler {"handler": H, "params": {...}}, DELETE: back to the
 * policy's own handlers. */
static void handle_handler(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	const char *handler = NULL;
	json_t *j = NULL, *params = NULL;
	struct sl_switch_result res;
	char err[512], who[64], *ptext = NULL;
	json_error_t jerr;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	peer_of(c, who, sizeof(who));
	if (!strcmp(method, "DELETE")) {
		e = sl_sandbox_set_handler(c->ctl->d.reg, box, NULL, NULL, who, &res, err,
					   sizeof(err));
		if (e)
			respond_error(c, 500, err);
		else
			respond_json(c, 200, switch_json(c->ctl->d.reg, box, &res));
		return;
	}
	if (strcmp(method, "PUT")) {
		respond_error(c, 405, "use PUT or DELETE on /v1/sandboxes/NAME/handler");
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s, s?o}", "handler", &handler,
				 "params", &params)) {
		snprintf(err, sizeof(err), "bad request: %s (want {\"handler\": NAME, \"params\": "
					   "{...}})", jerr.text);
		respond_error(c, 400, err);
		goto out;
	}
	if (sl_ctl_params_text(params, &ptext, err, sizeof(err))) {
		respond_error(c, 400, err);
		goto out;
	}
	e = sl_sandbox_set_handler(c->ctl->d.reg, box, handler, ptext, who, &res, err,
				   sizeof(err));
	if (e)
		respond_error(c, e == -ENOENT ? 404 : e == -EINVAL ? 400 : 500, err);
	else
		respond_json(c, 200, switch_json(c->ctl->d.reg, box, &res));
out:
	free(ptext);
	json_decref(j);
}

/* PUT /v1/sandboxes/NAME/mode {"mode": "audit"|"enforce"} */
static void handle_mode(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	struct sl_switch_result res;
	const char *mode = NULL;
	char err[512], who[64];
	json_error_t jerr;
	json_t *j = NULL;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	if (strcmp(method, "PUT")) {
		respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/mode");
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s}", "mode", &mode) ||
	    (strcmp(mode, "audit") && strcmp(mode, "enforce"))) {
		snprintf(err, sizeof(err), "bad request: %s (want {\"mode\": \"audit\" or "
					   "\"enforce\"})", j && mode ? "unknown mode" : jerr.text);
		respond_error(c, 400, err);
		goto out;
	}
	peer_of(c, who, sizeof(who));
	e = sl_sandbox_set_mode(c->ctl->d.reg, box, !strcmp(mode, "audit"), who, &res, err,
				sizeof(err));
	if (e)
		respond_error(c, e == -EINVAL ? 400 : 500, err);
	else
		respond_json(c, 200, switch_json(c->ctl->d.reg, box, &res));
out:
	json_decref(j);
}

/* GET /v1/sandboxes/NAME/suggest[?collapse=N]: {"sandbox", "mode", "policy": TEXT} */
static void handle_suggest(struct ctl_conn *c, const char *name, const char *query)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	unsigned long collapse = 0;
	char err[512], *text = NULL;
	const char *q = query ? strstr(query, "collapse=") : NULL;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	if (q) {
		char *end;

		collapse = strtoul(q + 9, &end, 10);
		if (end == q + 9 || (*end && *end != '&') || collapse > 1000000) {
			respond_error(c, 400, "collapse takes a number of names (0: never)");
			return;
		}
	}
	e = sl_sandbox_suggest(c->ctl->d.reg, box, (unsigned)collapse, &text, err, sizeof(err));
	if (e) {
		respond_error(c, 500, err);
		return;
	}
	respond_json(c, 200, json_pack("{s:s, s:s, s:s}", "sandbox", name, "mode",
				       sl_box_audit(box) ? "audit" : "enforce", "policy", text));
	free(text);
}

/* PUT /v1/sandboxes/NAME/policy {"policy": TEXT, "policy_file": PATH} */
static void handle_reload(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	const char *policy = NULL, *policy_file = NULL;
	size_t policy_len = 0;
	struct sl_switch_result res;
	char err[512], who[64];
	json_error_t jerr;
	json_t *j;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	if (strcmp(method, "PUT")) {
		respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/policy");
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s%, s?s}", "policy", &policy,
				 &policy_len, "policy_file", &policy_file)) {
		snprintf(err, sizeof(err), "bad request: %s (want {\"policy\": TEXT})", jerr.text);
		respond_error(c, 400, err);
		json_decref(j);
		return;
	}
	peer_of(c, who, sizeof(who));
	e = sl_sandbox_reload(c->ctl->d.reg, box, policy_file, policy, policy_len, who, &res, err,
			      sizeof(err));
	if (e) {
		sl_info("sandbox %s: policy reload refused: %s", name, err);
		respond_error(c, e == -EINVAL ? 400 : 500, err);
	} else {
		respond_json(c, 200, switch_json(c->ctl->d.reg, box, &res));
	}
	json_decref(j);
}

static void handle_add(struct ctl_conn *c)
{
	struct sl_ctl_add add;
	struct sl_box *box;
	char err[512];

	if (sl_ctl_decode_add(sl_buf_head(&c->body), sl_buf_size(&c->body), &add, err,
			      sizeof(err))) {
		respond_error(c, 400, err);
		goto out;
	}
	box = sl_sandbox_add(c->ctl->d.reg, &add.spec, err, sizeof(err));
	if (!box) {
		int status = errno == EINVAL ? 400 : errno == EEXIST ? 409 :
				       errno == EPERM	 ? 403 :
				       errno == ENOSPC	 ? 503 :
							   500;

		sl_info("sandbox %s refused: %s", add.spec.name, err);
		respond_error(c, status, err);
		goto out;
	}
	respond_json(c, 201, sl_sandbox_json(c->ctl->d.reg, box, 1));
out:
	sl_ctl_add_release(&add);
}

static void handle_show(struct ctl_conn *c, const char *name)
{
	struct sl_box *b = sl_sandbox_find(c->ctl->d.reg, name);
	char err[128];

	if (!b) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	respond_json(c, 200, sl_sandbox_json(c->ctl->d.reg, b, 1));
}

/*
 * DELETE /v1/sandboxes/NAME[?container_id=ID]. With a container id (the OCI hook's poststop)
 * the sandbox goes only if it was made for that container and no process is left in its
 * cgroup: whoever can create containers must not end another container's enforcement.
 */
static void handle_rm(struct ctl_conn *c, const char *name, const char *query)
{
	char err[PATH_MAX + 512], cid[SL_CONTAINER_ID_MAX + 2];
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	int r = box && query ? query_param(query, "container_id", cid, sizeof(cid)) : 0;

	if (r < 0) {
		respond_error(c, 400, "invalid container_id");
		return;
	}
	if (r > 0) {
		if (strcmp(cid, sl_box_container_id(box))) {
			snprintf(err, sizeof(err), "sandbox '%s' was not made for container %s",
				 name, cid);
			respond_error(c, 409, err);
			return;
		}
		if (sl_cgroup_populated(sl_box_cgroup(box)) > 0) {
			snprintf(err, sizeof(err),
				 "sandbox '%s': processes still run in %s; it is removed once "
				 "they are gone",
				 name, sl_box_cgroup(box));
			respond_error(c, 409, err);
			return;
		}
	}
	r = sl_sandbox_rm(c->ctl->d.reg, name);
	if (r == -ENOENT) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	if (r) {
		snprintf(err, sizeof(err), "removing '%s' failed: %s", name, strerror(-r));
		respond_error(c, 500, err);
		return;
	}
	respond_json(c, 200, json_pack("{s:s}", "removed", name));
}

static void handle_ca(struct ctl_conn *c, const char *name)
{
	struct sl_box *b = sl_sandbox_find(c->ctl->d.reg, name);
	char err[128], *pem;

	if (!b) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		respond_error(c, 404, err);
		return;
	}
	pem = sl_sandbox_ca_pem(b);
	if (!pem) {
		respond_error(c, 500, "the sandbox has no CA");
		return;
	}
	respond_raw(c, 200, "application/x-pem-file", pem, strlen(pem));
	free(pem);
}

static void stream_sink(const char *line, size_t len, void *arg)
{
	struct ctl_conn *c = arg;

	if (sl_buf_size(&c->out) + len > CTL_STREAM_MAX_PENDING) {
		c->dropped++;
		c->ctl->events_dropped++;
		return;
	}
	sl_buf_append(&c->out, line, len);
	if (c->sub) /* live: push now; during replay the caller flushes once */
		conn_flush(c);
}

static void handle_events(struct ctl_conn *c, const char *query)
{
	char sandbox[SL_NAME_MAX + 1] = "", follow[8] = "";
	int has_sb = query_param(query, "sandbox", sandbox, sizeof(sandbox));
	int has_follow = query_param(query, "follow", follow, sizeof(follow));
	const char *filter = has_sb > 0 ? sandbox : NULL;
	char err[160];

	if (has_sb < 0 || has_follow < 0) {
		respond_error(c, 400, "bad query parameter");
		return;
	}
	/* A removed sandbox's history is kept a while (events.c): `sluice run`'s, say. */
	if (filter && !sl_sandbox_find(c->ctl->d.reg, filter) &&
	    !sl_events_known(c->ctl->d.events, filter)) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", filter);
		respond_error(c, 404, err);
		return;
	}
	/* A stream: no length, the body ends when the connection does. */
	c->closing = has_follow > 0 && truthy(follow) ? 0 : 1;
	sl_buf_printf(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
			       "Connection: close\r\n\r\n");
	sl_events_replay(c->ctl->d.events, filter, stream_sink, c);
	if (!c->closing) {
		c->sub = sl_events_subscribe(c->ctl->d.events, filter, stream_sink, c);
		if (c->sub < 0) {
			c->sub = 0;
			c->closing = 1;
		}
	}
}

static void metric_sandbox(struct sl_buf *m, const char *metric, const struct sl_box *b,
			   const char *labels, unsigned long long v)
{
	const char *name = sl_box_name(b);

	sl_buf_printf(m, "%s{sandbox=\"%s\"%s%s} %llu\n", metric, name, labels[0] ? "," : "",
		      labels, v);
}

static uint64_t leaf_evictions(struct sl_ca *ca)
{
	struct sl_ca_stats st = { 0 };

	if (ca)
		sl_ca_get_stats(ca, &st);
	return st.evictions;
}

/* Every bound of the daemon that was reached, per sandbox (README, Reliability), and the
 * gauges that show how close the others are. */
static void metrics_limits(struct sl_buf *m, struct sl_registry *reg, struct sl_bpf *bpf,
			   unsigned long long events_dropped)
{
	sl_buf_printf(m, "# HELP sluice_limits_reached_total Requests, connections and queries "
			 "refused because a bound was reached.\n"
			 "# TYPE sluice_limits_reached_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *p = sl_box_proxy_stats(b);
		const struct sl_dns_stats *d = sl_box_dns_stats(b);
		uint64_t pxfull = 0;
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "limit=\"proxied\"",
			  sl_bpf_read_proxied_full(bpf, sl_box_id(b), &pxfull) ? 0 : pxfull },
			{ "limit=\"http_conns\"", p ? p->limit_conns : 0 },
			{ "limit=\"http_conns_total\"", p ? p->limit_conns_total : 0 },
			{ "limit=\"fds\"", p ? p->limit_fds : 0 },
			{ "limit=\"http_head\"", p ? p->limit_head : 0 },
			{ "limit=\"req_body\"", p ? p->limit_req_body : 0 },
			{ "limit=\"resp_body\"", p ? p->limit_resp_body : 0 },
			{ "limit=\"body_budget\"", p ? p->limit_body_budget : 0 },
			{ "limit=\"lua_memory\"", p ? p->limit_lua_mem : 0 },
			{ "limit=\"lua_instructions\"", p ? p->limit_lua_insns : 0 },
			{ "limit=\"upstream_pool\"", p ? p->pool_full : 0 },
			{ "limit=\"dns_pending\"", d ? d->limit_pending : 0 },
			{ "limit=\"dns_tcp\"", d ? d->limit_tcp : 0 },
			{ "limit=\"dns_tcp_unread\"", d ? d->limit_tcp_out : 0 },
			{ "limit=\"dns_learned\"", d ? d->limit_learned : 0 },
			{ "limit=\"kernel_rules\"", d ? d->limit_kernel_rules : 0 },
			{ "limit=\"leaf_cache\"", leaf_evictions(sl_box_ca(b)) },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(m, "sluice_limits_reached_total", b, q[i].labels,
				       q[i].v);
	}
	sl_buf_printf(m, "# HELP sluice_http_connections_active Intercepted connections open "
			 "now.\n# TYPE sluice_http_connections_active gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_http_connections_active", b, "",
			       sl_box_proxy_stats(b) ? sl_box_proxy_stats(b)->active : 0);
	sl_buf_printf(m, "# HELP sluice_lua_memory_bytes Memory of each sandbox's Lua state.\n"
			 "# TYPE sluice_lua_memory_bytes gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_lua_memory_bytes", b, "",
			       sl_box_lua_mem(b));
	sl_buf_printf(m, "# HELP sluice_sandbox_audit_mode 1 if the sandbox is in audit mode "
			 "(nothing its rules deny is refused), 0 in enforce mode.\n"
			 "# TYPE sluice_sandbox_audit_mode gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_sandbox_audit_mode", b, "", (uint64_t)sl_box_audit(b));
	sl_buf_printf(m, "# HELP sluice_audited_total connect(), sendmsg() and UNIX socket calls "
			 "the rules deny that audit mode let through (outcome lost: not recorded, "
			 "the audit map was full).\n"
			 "# TYPE sluice_audited_total counter\n");
	sl_registry_foreach(b, reg) {
		struct sl_audit_ctr a;

		if (sl_bpf_read_audit_ctr(bpf, sl_box_id(b), &a))
			continue;
		metric_sandbox(m, "sluice_audited_total", b, "outcome=\"recorded\"",
			       a.audited - a.lost);
		metric_sandbox(m, "sluice_audited_total", b, "outcome=\"lost\"", a.lost);
	}
	sl_buf_printf(m, "# HELP sluice_events_dropped_total Event lines a follower (GET "
			 "/v1/events?follow=1) lost because it did not keep up.\n"
			 "# TYPE sluice_events_dropped_total counter\n"
			 "sluice_events_dropped_total %llu\n", events_dropped);
}

static void handle_metrics(struct ctl_conn *c)
{
	static const struct {
		const char *labels;
		int ctr;
	} conns[] = {
		{ "verdict=\"allow\",proto=\"tcp\"", SL_CTR_ALLOW_TCP },
		{ "verdict=\"allow\",proto=\"udp\"", SL_CTR_ALLOW_UDP },
		{ "verdict=\"deny\",proto=\"tcp\"", SL_CTR_DENY_TCP },
		{ "verdict=\"deny\",proto=\"udp\"", SL_CTR_DENY_UDP },
		{ "verdict=\"allow\",proto=\"unix\"", SL_CTR_ALLOW_UNIX },
		{ "verdict=\"deny\",proto=\"unix\"", SL_CTR_DENY_UNIX },
	}, evs[] = {
		{ "outcome=\"sent\"", SL_CTR_EV_SENT },
		{ "outcome=\"rate_limited\"", SL_CTR_EV_LIMITED },
		{ "outcome=\"lost\"", SL_CTR_EV_LOST },
	};
	struct sl_registry *reg = c->ctl->d.reg;
	struct sl_buf m = { 0 };
	struct sl_counters cnt, unknown;

	sl_buf_printf(&m, "# HELP sluice_sandboxes Sandboxes managed by this sluiced.\n"
			  "# TYPE sluice_sandboxes gauge\nsluice_sandboxes %zu\n",
		      sl_registry_count(reg));
	sl_buf_printf(&m, "# HELP sluice_connections_total connect() and sendmsg() calls "
			  "judged in the kernel (proto unix: UNIX sockets).\n# TYPE sluice_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		if (sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			continue;
		for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++)
			metric_sandbox(&m, "sluice_connections_total", b, conns[i].labels,
				       cnt.c[conns[i].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_sockets_denied_total socket() calls refused in the "
			  "kernel (raw, SCTP, ICMP, ...).\n"
			  "# TYPE sluice_sockets_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_sockets_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_SOCKET]);
	sl_buf_printf(&m, "# HELP sluice_sockopts_denied_total setsockopt() calls refused in the "
			  "kernel (routing header, IPv4 options).\n"
			  "# TYPE sluice_sockopts_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_sockopts_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_SOCKOPT]);
	sl_buf_printf(&m, "# HELP sluice_binds_denied_total bind() calls refused in the kernel "
			  "(a port of sluiced's listeners).\n"
			  "# TYPE sluice_binds_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_binds_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_BIND]);
	sl_buf_printf(&m, "# HELP sluice_egress_dropped_total Packets dropped by the egress "
			  "program (IP options, routing header, destination not the one "
			  "decided).\n# TYPE sluice_egress_dropped_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_egress_dropped_total", b, "",
				       cnt.c[SL_CTR_DROP_EGRESS]);
	sl_buf_printf(&m, "# HELP sluice_deny_events_total Deny events by outcome (the deny "
			  "itself is always counted above).\n"
			  "# TYPE sluice_deny_events_total counter\n");
	sl_registry_foreach(b, reg) {
		if (sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			continue;
		for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
			metric_sandbox(&m, "sluice_deny_events_total", b, evs[i].labels,
				       cnt.c[evs[i].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_queries_total DNS queries of sandboxes, by outcome.\n"
			  "# TYPE sluice_dns_queries_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_dns_stats *st = sl_box_dns_stats(b);
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "result=\"allowed\"", st ? st->allowed : 0 },
			{ "result=\"denied\"", st ? st->denied : 0 },
			{ "result=\"nodata\"", st ? st->nodata : 0 },
			{ "result=\"formerr\"", st ? st->formerr : 0 },
			{ "result=\"refused\"", st ? st->refused : 0 },
			{ "result=\"servfail\"", st ? st->servfail : 0 },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_dns_queries_total", b, q[i].labels, q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_addresses_total Addresses of DNS answers: installed "
			  "in the kernel, or blocked by the rebinding guard.\n"
			  "# TYPE sluice_dns_addresses_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_dns_stats *st = sl_box_dns_stats(b);

		metric_sandbox(&m, "sluice_dns_addresses_total", b, "outcome=\"installed\"",
			       st ? st->installed : 0);
		metric_sandbox(&m, "sluice_dns_addresses_total", b, "outcome=\"blocked\"",
			       st ? st->blocked : 0);
	}
	sl_buf_printf(&m, "# HELP sluice_http_connections_total Connections to the intercepting "
			  "proxy, by outcome.\n# TYPE sluice_http_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "outcome=\"accepted\"", st ? st->conns : 0 },
			{ "outcome=\"unredirected\"", st ? st->unredirected : 0 },
			{ "outcome=\"refused\"", st ? st->refused : 0 },
			{ "outcome=\"tls_failed\"", st ? st->tls_failed : 0 },
			{ "outcome=\"passthrough\"", st ? st->spliced : 0 },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_http_connections_total", b, q[i].labels,
				       q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_passthrough_connections_total Passthrough TLS connections "
			  "whose server name the proxy checked, by who carried their bytes: the "
			  "kernel (sockhash splice) or sluiced (the splice failed).\n"
			  "# TYPE sluice_passthrough_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);

		metric_sandbox(&m, "sluice_passthrough_connections_total", b,
			       "mode=\"kernel\"", st ? st->spliced_kernel : 0);
		metric_sandbox(&m, "sluice_passthrough_connections_total", b,
			       "mode=\"userspace\"", st ? st->spliced_user : 0);
	}
	sl_buf_printf(&m, "# HELP sluice_sni_checks_total Checked passthrough connections whose "
			  "first TLS record the kernel judged on the sandbox's own socket, by "
			  "outcome (unchecked: the socket could not enter the check's sockhash and "
			  "can send nothing).\n# TYPE sluice_sni_checks_total counter\n");
	sl_registry_foreach(b, reg) {
		struct sl_sni_ctr sc;

		if (sl_bpf_read_sni_counters(c->ctl->d.bpf, sl_box_id(b), &sc))
			continue;
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"passed\"",
			       sc.c[SL_SNI_CTR_PASSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"refused\"",
			       sc.c[SL_SNI_CTR_REFUSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"unchecked\"",
			       sc.c[SL_SNI_CTR_NOMAP]);
	}
	sl_buf_printf(&m, "# HELP sluice_http_requests_total Intercepted requests, by outcome.\n"
			  "# TYPE sluice_http_requests_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);

		metric_sandbox(&m, "sluice_http_requests_total", b, "outcome=\"forwarded\"",
			       st ? st->requests : 0);
		metric_sandbox(&m, "sluice_http_requests_total", b, "outcome=\"rejected\"",
			       st ? st->rejected : 0);
		metric_sandbox(&m, "sluice_http_requests_total", b,
			       "outcome=\"upstream_error\"", st ? st->upstream_errors : 0);
	}
	if (!sl_bpf_read_counters(c->ctl->d.bpf, 0, &unknown))
		sl_buf_printf(&m, "# HELP sluice_unattributed_denied_total Operations denied "
				  "because their sandbox could not be determined.\n"
				  "# TYPE sluice_unattributed_denied_total counter\n"
				  "sluice_unattributed_denied_total %llu\n",
			      (unsigned long long)(unknown.c[SL_CTR_DENY_TCP] +
						   unknown.c[SL_CTR_DENY_UDP] +
						   unknown.c[SL_CTR_DENY_SOCKET] +
						   unknown.c[SL_CTR_DENY_UNIX] +
						   unknown.c[SL_CTR_DENY_SOCKOPT] +
						   unknown.c[SL_CTR_DENY_BIND] +
						   unknown.c[SL_CTR_DROP_EGRESS]));
	metrics_limits(&m, reg, c->ctl->d.bpf, c->ctl->events_dropped);
	respond_raw(c, 200, "text/plain; version=0.0.4", sl_buf_head(&m), sl_buf_size(&m));
	sl_buf_free(&m);
}

static int kv_list_key(const char *key, void *arg)
{
	return json_array_append_new(arg, json_string(key)) ? -ENOMEM : 0;
}

/*
 * /v1/kv/NS/KEY, the KV store. The value travels as the raw body, not wrapped in JSON, so
 * that any bytes (at most SL_KV_VALUE_MAX) need no encoding: PUT stores the request body and
 * answers {"ns", "key", "bytes"}; GET answers the value as application/octet-stream; DELETE
 * answers {"ns", "key", "removed": true}. GET /v1/kv/NS answers {"ns", "keys": [...]}, never
 * values. NS and KEY are percent-decoded ('+' stays a plus); KEY is everything after NS and
 * its slash, slashes included. Values never reach the log: it notes "kv put NS/KEY".
 */
static void handle_kv(struct ctl_conn *c, const char *method, char *path)
{
	struct sl_kv *kv = c->ctl->d.kv;
	char *ns = path, *key = strchr(path, '/'), msg[SL_KV_KEY_MAX + SL_KV_NS_MAX + 128];
	char *val = NULL;
	size_t len = 0;
	int r = 0;

	if (key)
		*key++ = 0;
	if (pct_decode(ns, 0) || !sl_kv_ns_ok(ns)) {
		respond_error(c, 400, "invalid namespace: 1 to 128 of A-Z a-z 0-9 _ . : @ -");
		return;
	}
	if (key && (pct_decode(key, 0) || !sl_kv_key_ok(key))) {
		respond_error(c, 400, "invalid key: 1 to 512 printable ASCII characters");
		return;
	}
	if (!kv) {
		respond_error(c, 503, "the KV store is not open");
		return;
	}
	if (!key) {
		json_t *keys = json_array();

		if (strcmp(method, "GET")) {
			respond_error(c, 405, "use GET on /v1/kv/NS");
			json_decref(keys);
			return;
		}
		r = keys ? sl_kv_list(kv, ns, kv_list_key, keys) : -ENOMEM;
		if (!r) {
			respond_json(c, 200, json_pack("{s:s, s:o}", "ns", ns, "keys", keys));
			return;
		}
		json_decref(keys);
	} else if (!strcmp(method, "PUT")) {
		len = sl_buf_size(&c->body);
		r = sl_kv_put(kv, ns, key, sl_buf_head(&c->body), len);
		/* The body was a secret: do not leave it in the connection's buffer. */
		if (c->body.data)
			OPENSSL_cleanse(c->body.data, c->body.len);
		sl_buf_reset(&c->body);
		if (!r) {
			sl_info("kv put %s/%s", ns, key);
			respond_json(c, 200, json_pack("{s:s, s:s, s:I}", "ns", ns, "key", key,
						       "bytes", (json_int_t)len));
			return;
		}
	} else if (!strcmp(method, "GET")) {
		r = sl_kv_get(kv, ns, key, &val, &len);
		if (!r) {
			sl_debug("kv get %s/%s", ns, key);
			respond_raw(c, 200, "application/octet-stream", val, len);
			OPENSSL_cleanse(val, len);
			free(val);
			return;
		}
	} else if (!strcmp(method, "DELETE")) {
		r = sl_kv_rm(kv, ns, key);
		if (!r) {
			sl_info("kv rm %s/%s", ns, key);
			respond_json(c, 200, json_pack("{s:s, s:s, s:b}", "ns", ns, "key", key,
						       "removed", 1));
			return;
		}
	} else {
		respond_error(c, 405, "use GET, PUT or DELETE on /v1/kv/NS/KEY");
		return;
	}
	switch (r) {
	case -ENOENT:
		snprintf(msg, sizeof(msg), "no key '%s' in namespace '%s'", key, ns);
		respond_error(c, 404, msg);
		break;
	case -E2BIG:
		snprintf(msg, sizeof(msg), "the value is larger than %d bytes", SL_KV_VALUE_MAX);
		respond_error(c, 413, msg);
		break;
	case -EBADMSG:
		snprintf(msg, sizeof(msg),
			 "the stored value of %s/%s does not authenticate (tampered with, or "
			 "written under another key): put it again",
			 ns, key);
		respond_error(c, 500, msg);
		break;
	default:
		snprintf(msg, sizeof(msg), "KV store: %s", strerror(-r));
		respond_error(c, 500, msg);
	}
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
	respond_error(c, 403, r > 0 ? "the control API is not for processes in a sandbox" :
				      "the control API could not tell where the caller runs");
	return 1;
}

/* What a route's handler gets: @arg is the sandbox name of a "*" (decoded and checked) or
 * the rest of the path at a "**". */
struct ctl_req {
	const char *method;
	char *arg;
	const char *query;
};

static void route_list(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_list(c);
}

static void route_add(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_add(c);
}

static void route_show(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_show(c, rq->arg);
}

static void route_rm(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_rm(c, rq->arg, rq->query);
}

static void route_handler(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_handler(c, rq->method, rq->arg);
}

static void route_suggest(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_suggest(c, rq->arg, rq->query);
}

static void route_mode(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_mode(c, rq->method, rq->arg);
}

static void route_reload(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_reload(c, rq->method, rq->arg);
}

static void route_ca(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_ca(c, rq->arg);
}

static void route_kv(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_kv(c, rq->method, rq->arg);
}

static void route_events(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_events(c, rq->query);
}

static void route_metrics(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_metrics(c);
}

static void route_health(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	respond_json(c, 200, json_pack("{s:b, s:I}", "ok", 1, "sandboxes",
				       (json_int_t)sl_registry_count(c->ctl->d.reg)));
}

static void route_not_found(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	respond_error(c, 404, "no such endpoint");
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
	{ "GET", "/v1/sandboxes", route_list },
	{ "POST", "/v1/sandboxes", route_add },
	{ "GET", "/v1/sandboxes/*", route_show },
	{ "DELETE", "/v1/sandboxes/*", route_rm },
	{ NULL, "/v1/sandboxes/*/handler", route_handler }, /* PUT, DELETE */
	{ NULL, "/v1/sandboxes/*/policy", route_reload }, /* PUT */
	{ NULL, "/v1/sandboxes/*/mode", route_mode }, /* PUT */
	{ "GET", "/v1/sandboxes/*/suggest", route_suggest },
	{ "GET", "/v1/sandboxes/*/ca", route_ca },
	{ NULL, "/v1/sandboxes/*/**", route_not_found },
	{ NULL, "/v1/kv/**", route_kv }, /* GET, PUT, DELETE */
	{ "GET", "/v1/events", route_events },
	{ "GET", "/v1/metrics", route_metrics },
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
				if (pct_decode(rq.arg, 1) || !sl_sandbox_name_ok(rq.arg)) {
					respond_error(c, 400, "invalid sandbox name");
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
		respond_error(c, 404, "no such endpoint");
	} else {
		struct sl_buf msg = { 0 };

		sl_buf_printf(&msg, "use %s on ", sl_buf_head(&allowed));
		for (const char *p = matched->pattern; *p; p++) {
			if (*p == '*')
				sl_buf_printf(&msg, "NAME");
			else
				sl_buf_append(&msg, p, 1);
		}
		respond_error(c, 405, sl_buf_head(&msg));
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

	dispatch(c);
	/* A stream or a closing connection takes no further requests. */
	return c->closing || c->sub ? HPE_PAUSED : 0;
}

static void conn_cb(struct sl_loop *loop, int fd, void *arg, unsigned events)
{
	struct ctl_conn *c = arg;
	char buf[16384];

	(void)loop;
	if (events & SL_WRITE) {
		if (conn_flush(c))
			return;
	}
	if (!(events & (SL_READ | SL_HUP)))
		return;
	/* Bounded per wake-up like every reader of the loop: the rest waits for its turn. */
	for (int i = 0; i < CTL_READS_PER_WAKEUP; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		llhttp_errno_t e;

		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
			conn_close(c);
			return;
		}
		if (n == -1) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (c->closing || c->sub)
			continue; /* no more requests on this connection: discard */
		e = llhttp_execute(&c->parser, buf, n);
		if (e == HPE_PAUSED)
			continue;
		if (e != HPE_OK) {
			c->closing = 1;
			if (c->too_big)
				respond_error(c, c->too_big, sl_http_reason(c->too_big));
			else
				respond_error(c, 400, llhttp_get_error_reason(&c->parser));
		}
	}
	conn_flush(c);
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

struct sl_control *sl_control_open(const char *path, const struct sl_control_deps *deps,
				   char *err, size_t errlen)
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
