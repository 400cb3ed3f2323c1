/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 messages for the proxy: headers, framing, serialisation (see http.c).
 * Threading: any thread, each message and parser owned by its caller (no shared state); nothing
 * here blocks. */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "core/buf.h"

#define SL_HTTP_MAX_HEAD (64 * 1024) /* request line/status line and headers */
#define SL_HTTP_MAX_HEADERS 256

/* One header: @name owns one block holding both strings, @value points into it. */
struct sl_http_header {
	char *name;
	char *value;
};

/* One request or response head, as parsed (or made). Owns its strings. Protocol-neutral:
 * what a parser accumulates on the way lives in the parser's state (struct sl_http_h1). */
struct sl_http_msg {
	char method[24]; /* requests */
	char *target; /* requests: the request-target as sent */
	int status; /* responses */
	char *reason; /* responses */
	uint8_t major, minor;
	struct sl_http_header *h;
	size_t nh, caph;
};

/* llhttp's accumulation state while it fills the head @m: one per parser, reset with
 * sl_http_h1_reset() when a message begins. */
struct sl_http_h1 {
	struct sl_http_msg *m; /* the head being filled */
	size_t head_bytes; /* counted against SL_HTTP_MAX_HEAD */
	/* accumulation of the field or value being parsed */
	struct sl_buf field, value;
	/* obs-fold detection: the caller sets @feed_end to the end of the bytes it passes to
	 * llhttp_execute(); a value continued after a chunk that did not end there was folded */
	const char *feed_end;
	int value_at_end;
};

/* How a body is framed on the wire we write. */
enum sl_http_body {
	SL_BODY_NONE,
	SL_BODY_LENGTH, /* Content-Length: copied through */
	SL_BODY_CHUNKED, /* re-chunked as it streams */
	SL_BODY_TUNNEL, /* after a 101: raw bytes both ways */
};

void sl_http_msg_init(struct sl_http_msg *m);
void sl_http_msg_reset(struct sl_http_msg *m);
void sl_http_msg_free(struct sl_http_msg *m);

void sl_http_h1_reset(struct sl_http_h1 *h);
void sl_http_h1_free(struct sl_http_h1 *h);

/* llhttp callbacks that fill a message; @p->data must point to a struct whose first member
 * is the struct sl_http_h1 (its @m the message being parsed). They return -1 (an llhttp error) when
 * the head grows past SL_HTTP_MAX_HEAD or SL_HTTP_MAX_HEADERS, for a folded value (obs-fold)
 * and for a header without a name. */
int sl_http_on_url(llhttp_t *p, const char *at, size_t len);
int sl_http_on_status(llhttp_t *p, const char *at, size_t len);
int sl_http_on_header_field(llhttp_t *p, const char *at, size_t len);
int sl_http_on_header_value(llhttp_t *p, const char *at, size_t len);
int sl_http_on_header_value_complete(llhttp_t *p);

/* The first header named @name (case-insensitive), or NULL. */
const char *sl_http_get(const struct sl_http_msg *m, const char *name);
/* How many headers are named @name. */
size_t sl_http_count(const struct sl_http_msg *m, const char *name);
/* Whether the comma-separated header @name contains the token @tok (case-insensitive). */
int sl_http_has_token(const struct sl_http_msg *m, const char *name, const char *tok);
/* Replaces every @name header by one with @value (NULL: removes them). Returns 0/-ENOMEM. */
int sl_http_set(struct sl_http_msg *m, const char *name, const char *value);

/* Appends one more @name header (multi-valued). Returns 0, -E2BIG past SL_HTTP_MAX_HEADERS
 * or -ENOMEM. */
int sl_http_add(struct sl_http_msg *m, const char *name, const char *value);
/* Whether @name is a header name (a token), and @value a value that cannot break the head
 * (no CR, LF, NUL or other controls; no surrounding whitespace). */
int sl_http_valid_name(const char *name);
int sl_http_valid_value(const char *value, size_t len);
/* Whether sluice writes @name itself (framing, connection management, Host): handlers may
 * not set it. */
int sl_http_managed(const char *name);

/*
 * Splits a request-target: origin-form ("/path?q") leaves @host empty; absolute-form
 * ("https://host:port/path") fills @host (lower case, no port) and @scheme. *@path points
 * into @target ("/" when the absolute form has none: then it is a static string). Returns 0,
 * or -EINVAL for the other forms (authority-form belongs to CONNECT, asterisk to OPTIONS *,
 * which the proxy answers itself).
 */
int sl_http_split_target(const char *target, char *scheme, size_t schemelen, char *host,
			 size_t hostlen, const char **path);
/* The host part of a Host header value (lower case, no port, brackets kept off IPv6).
 * Returns 0 or -EINVAL for an empty or malformed value. */
int sl_http_host_only(const char *value, char *out, size_t len);

/*
 * Writes the head of a request to the upstream: "METHOD path HTTP/1.1", the headers minus
 * the hop-by-hop ones (RFC 9110 section 7.6.1: Connection and what it names, Keep-Alive,
 * Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade unless @upgrade), and our own framing
 * for @body. Returns 0 or -ENOMEM.
 */
int sl_http_write_request(const struct sl_http_msg *m, const char *path, enum sl_http_body body,
			  const char *upgrade, struct sl_buf *out);
/* The same for a response to the client; @close adds "Connection: close". */
int sl_http_write_response(const struct sl_http_msg *m, enum sl_http_body body, const char *upgrade,
			   int close, struct sl_buf *out);
/* Appends @n body bytes framed by @body to @out. */
int sl_http_write_body(struct sl_buf *out, enum sl_http_body body, const char *p, size_t n);
/* Ends a chunked body. */
int sl_http_write_last_chunk(struct sl_buf *out);
/* Ends a chunked body with the trailer fields of @t (NULL: none), less those that framing,
 * routing or connection management would read (RFC 9110 section 6.5.1). */
int sl_http_write_trailers(struct sl_buf *out, const struct sl_http_msg *t);
/* A complete response made here: status, text body, Connection: close. */
int sl_http_write_error(struct sl_buf *out, int status, const char *body);
const char *sl_http_reason(int status);

#endif
