/* SPDX-License-Identifier: MIT */
/*
 * The HTTP/1 head checks of the proxy, pure: what a request or response head must be to be
 * served, and how its body is framed. No connection, socket or global state: px_h1.c calls
 * them from llhttp's on_headers_complete, and tests/fuzz/fuzz_http.c calls the very same
 * functions (px_h1_check.c links with http/ alone). Threading: any thread; nothing blocks.
 */
#ifndef SL_PX_H1_H
#define SL_PX_H1_H

#include <llhttp.h>

#include "http/http.h"

/* The policy's say on a request's Host: NULL to serve it, or why not (answered 421). */
struct px_h1_policy {
	const char *(*host)(void *arg, const char *host);
	void *arg;
};

/* A request head as the proxy will serve it, or why it will not. */
struct px_h1_req {
	int status; /* refused: the answer (400, 405, 421, 500); 0: served */
	const char *why; /* refused: a static reason, for the answer and the event */
	char host[256]; /* Host: lower case, no port */
	const char *path; /* origin-form path: into the head's target, or a static "/" */
	enum sl_http_body body; /* how the request body is framed */
	int websocket; /* a WebSocket upgrade, to be relayed */
	int close_after; /* the client does not keep the connection alive */
};

/*
 * Checks the request head @m that @p (an HTTP_REQUEST parser, in on_headers_complete) just
 * parsed: method, target, exactly one valid Host, the absolute form's host, @pol's say on
 * the Host (@pol may be NULL), upgrades. Fills @m's method and version and makes the edits
 * every served head gets: an h2c upgrade is dropped (and @p told to go on with HTTP/1.1),
 * Accept-Encoding asks only for codings sluice can decode. Returns 0 with @v filled, or
 * -EINVAL (-ENOMEM) with @v->status and @v->why.
 */
int px_h1_check_request(llhttp_t *p, struct sl_http_msg *m, const struct px_h1_policy *pol,
			struct px_h1_req *v);

enum px_h1_resp_kind {
	PX_H1_RESP_FINAL,
	PX_H1_RESP_INTERIM, /* 1xx other than 101: relayed, the final response follows */
	PX_H1_RESP_SWITCH, /* 101 to a WebSocket request: raw bytes from now on */
};

struct px_h1_resp {
	enum px_h1_resp_kind kind;
	enum sl_http_body body; /* how the response body is framed to the client */
	int head_length; /* an answer to HEAD keeps its Content-Length: it describes the GET */
};

/*
 * Checks the response head @m that @p (an HTTP_RESPONSE parser, in on_headers_complete)
 * just parsed, for a request that was HEAD (@head) or a WebSocket upgrade (@websocket).
 * Fills @m's status and version. Returns 0 with @v filled, or -EINVAL for a status not to
 * relay (outside 100-599, or a 101 nobody asked for).
 */
int px_h1_check_response(const llhttp_t *p, struct sl_http_msg *m, int head, int websocket,
			 struct px_h1_resp *v);

#endif
