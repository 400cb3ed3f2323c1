// SPDX-License-Identifier: MIT
/*
 * The HTTP/1 head checks (px_h1.h): which request and response heads the proxy serves and
 * how their bodies are framed. Kept apart from px_h1.c, which drives connections, so that
 * the fuzzer links these with http/ alone and checks the code that runs, not a copy of it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/mask.h"
#include "proxy/px_h1.h"

static int refuse(struct px_h1_req *v, int status, const char *why, int err)
{
	v->status = status;
	v->why = why;
	return err;
}

int px_h1_check_request(llhttp_t *p, struct sl_http_msg *m, const struct px_h1_policy *pol,
			struct px_h1_req *v)
{
	const char *hosthdr, *upgrade, *why;
	char thost[256], scheme[8];

	memset(v, 0, sizeof(*v));
	snprintf(m->method, sizeof(m->method), "%s", llhttp_method_name(p->method));
	m->major = p->http_major;
	m->minor = p->http_minor;
	if (p->method == HTTP_CONNECT || p->method == HTTP_TRACE)
		return refuse(v, 405, "CONNECT and TRACE are not served", -EINVAL);
	if (!m->target ||
	    sl_http_split_target(m->target, scheme, sizeof(scheme), thost, sizeof(thost), &v->path))
		return refuse(v, 400, "unsupported request target", -EINVAL);
	hosthdr = sl_http_get(m, "host");
	if (sl_http_count(m, "host") != 1 || sl_http_host_only(hosthdr, v->host, sizeof(v->host)))
		return refuse(v, 400, "exactly one valid Host header is required", -EINVAL);
	if (thost[0] && strcmp(thost, v->host))
		return refuse(v, 421, "the absolute-form target names another host than Host",
			      -EINVAL);
	if (pol && (why = pol->host(pol->arg, v->host)))
		return refuse(v, 421, why, -EINVAL);
	upgrade = sl_http_get(m, "upgrade");
	if (upgrade && sl_http_has_token(m, "upgrade", "h2c") &&
	    !sl_http_has_token(m, "upgrade", "websocket")) {
		/* An h2c upgrade is the server's to ignore (RFC 9113 section 3.1 and RFC 9110
		 * section 7.8): dropped with its settings (Connection and what it names never go
		 * upstream), and the request served over HTTP/1.1. llhttp must then go on
		 * parsing HTTP/1.1 after this request, not stop for another protocol. */
		sl_http_set(m, "upgrade", NULL);
		sl_http_set(m, "http2-settings", NULL);
		p->upgrade = 0;
		upgrade = NULL;
	}
	if (upgrade) {
		if (strcasecmp(upgrade, "websocket"))
			return refuse(v, 400, "only WebSocket upgrades are relayed", -EINVAL);
		v->websocket = 1;
	}
	if (sl_http_get(m, "accept-encoding")) {
		/* Every intercepted request asks only for codings sluice can decode: a handler
		 * may read a secret after this head went to it (or the policy read one at load),
		 * and its response must then be masked as the client reads it. br or zstd
		 * would leave a 502 as the only safe answer; gzip costs some ratio, nothing else. */
		char ae[256];

		if (sl_accept_encoding(sl_http_get(m, "accept-encoding"), ae, sizeof(ae)))
			snprintf(ae, sizeof(ae), "identity");
		if (sl_http_set(m, "accept-encoding", ae))
			return refuse(v, 500, "out of memory", -ENOMEM);
	}
	v->close_after = !llhttp_should_keep_alive(p);
	if (p->flags & F_CHUNKED)
		v->body = SL_BODY_CHUNKED;
	else if (p->flags & F_CONTENT_LENGTH)
		v->body = SL_BODY_LENGTH;
	else
		v->body = SL_BODY_NONE;
	return 0;
}

int px_h1_check_response(const llhttp_t *p, struct sl_http_msg *m, int head, int websocket,
			 struct px_h1_resp *v)
{
	memset(v, 0, sizeof(*v));
	m->status = p->status_code;
	m->major = p->http_major;
	m->minor = p->http_minor;
	if (m->status < 100 || m->status > 599)
		return -EINVAL; /* llhttp takes "HTTP/1.1 7": not a status to relay */
	if (m->status == 101) {
		if (!websocket)
			return -EINVAL; /* an upgrade nobody asked for */
		v->kind = PX_H1_RESP_SWITCH;
		v->body = SL_BODY_NONE;
		return 0;
	}
	if (m->status >= 100 && m->status < 200) {
		v->kind = PX_H1_RESP_INTERIM;
		v->body = SL_BODY_NONE;
		return 0;
	}
	v->kind = PX_H1_RESP_FINAL;
	if (head || m->status == 204 || m->status == 304)
		v->body = SL_BODY_NONE;
	else if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED))
		v->body = SL_BODY_LENGTH;
	else
		v->body = SL_BODY_CHUNKED; /* chunked, or delimited by the close */
	v->head_length = head && (p->flags & F_CONTENT_LENGTH);
	return 0;
}
