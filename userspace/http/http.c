// SPDX-License-Identifier: MIT
/*
 * HTTP/1.1 message heads for the intercepting proxy. llhttp (built in strict mode) does the
 * parsing; this module keeps what it found (method, target, status, headers), bounds it, and
 * writes heads back out. The proxy never forwards bytes it did not understand: each head is
 * re-serialised from the parsed form, hop-by-hop headers dropped, and bodies re-framed
 * (Content-Length copied, anything else chunked), so that a request smuggled in ambiguous
 * framing cannot reach the upstream in a form the upstream reads differently.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http.h"

void sl_http_msg_init(struct sl_http_msg *m)
{
	memset(m, 0, sizeof(*m));
}

void sl_http_msg_reset(struct sl_http_msg *m)
{
	for (size_t i = 0; i < m->nh; i++)
		free(m->h[i].name); /* the value lives in the same block (header_fill) */
	m->nh = 0;
	free(m->target);
	free(m->reason);
	m->target = m->reason = NULL;
	m->method[0] = 0;
	m->status = 0;
	m->major = m->minor = 0;
}

void sl_http_msg_free(struct sl_http_msg *m)
{
	sl_http_msg_reset(m);
	free(m->h);
	memset(m, 0, sizeof(*m));
}

/* Fills @h with copies of @name and @value in one block (h->name owns it): one allocation
 * per header, where there were two, on every message's path. */
static int header_fill(struct sl_http_header *h, const char *name, size_t nlen, const char *value,
		       size_t vlen)
{
	char *b = malloc(nlen + vlen + 2);

	if (!b)
		return -ENOMEM;
	memcpy(b, name, nlen);
	b[nlen] = 0;
	memcpy(b + nlen + 1, value, vlen);
	b[nlen + 1 + vlen] = 0;
	h->name = b;
	h->value = b + nlen + 1;
	return 0;
}

void sl_http_h1_reset(struct sl_http_h1 *h)
{
	h->head_bytes = 0;
	sl_buf_reset(&h->field);
	sl_buf_reset(&h->value);
	h->value_at_end = 0;
}

void sl_http_h1_free(struct sl_http_h1 *h)
{
	sl_buf_free(&h->field);
	sl_buf_free(&h->value);
	h->head_bytes = 0;
	h->value_at_end = 0;
}

static int hop_by_hop(const char *name, const char *connection);

static struct sl_http_h1 *h1_of(llhttp_t *p)
{
	return p->data;
}

static int count(struct sl_http_h1 *h, size_t len)
{
	h->head_bytes += len;
	return h->head_bytes > SL_HTTP_MAX_HEAD ? -1 : 0;
}

static int append_str(char **s, const char *at, size_t len)
{
	size_t old = *s ? strlen(*s) : 0;
	char *n = realloc(*s, old + len + 1);

	if (!n)
		return -1;
	memcpy(n + old, at, len);
	n[old + len] = 0;
	*s = n;
	return 0;
}

int sl_http_on_url(llhttp_t *p, const char *at, size_t len)
{
	struct sl_http_h1 *h = h1_of(p);

	if (count(h, len))
		return -1;
	return append_str(&h->m->target, at, len);
}

int sl_http_on_status(llhttp_t *p, const char *at, size_t len)
{
	struct sl_http_h1 *h = h1_of(p);

	if (count(h, len))
		return -1;
	return append_str(&h->m->reason, at, len);
}

int sl_http_on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct sl_http_h1 *h = h1_of(p);

	if (count(h, len))
		return -1;
	return sl_buf_append(&h->field, at, len) ? -1 : 0;
}

int sl_http_on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct sl_http_h1 *h = h1_of(p);

	if (count(h, len))
		return -1;
	/* llhttp delivers one span per call; within one buffer a value comes in two spans only
	 * when a line break folded it (obs-fold, RFC 9112 section 5.2): refused, since the two
	 * ends of a connection may read a folded header differently. */
	if (sl_buf_size(&h->value) && !h->value_at_end) {
		llhttp_set_error_reason(p, "obsolete line folding in a header");
		return -1;
	}
	h->value_at_end = at + len == h->feed_end;
	return sl_buf_append(&h->value, at, len) ? -1 : 0;
}

int sl_http_on_header_value_complete(llhttp_t *p)
{
	struct sl_http_h1 *ps = h1_of(p);
	struct sl_http_msg *m = ps->m;
	struct sl_http_header *h;

	/* llhttp 8 reads a line that starts with ':' as a header without a name. A field-name
	 * is a token, never empty (RFC 9110 section 5.1); written out again, that line would
	 * reach the other side as something it may read differently. */
	if (!sl_buf_size(&ps->field)) {
		llhttp_set_error_reason(p, "empty header name");
		return -1;
	}
	if (m->nh >= SL_HTTP_MAX_HEADERS)
		return -1;
	if (m->nh == m->caph) {
		size_t cap = m->caph ? m->caph * 2 : 16;

		h = realloc(m->h, cap * sizeof(*h));
		if (!h)
			return -1;
		m->h = h;
		m->caph = cap;
	}
	h = &m->h[m->nh];
	if (header_fill(h, sl_buf_head(&ps->field), sl_buf_size(&ps->field),
			sl_buf_size(&ps->value) ? sl_buf_head(&ps->value) : "",
			sl_buf_size(&ps->value)))
		return -1;
	sl_buf_reset(&ps->field);
	sl_buf_reset(&ps->value);
	ps->value_at_end = 0;
	/* Trailing whitespace of a value is not part of it (RFC 9110 section 5.5). */
	for (size_t n = strlen(h->value); n && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t');)
		h->value[--n] = 0;
	m->nh++;
	return 0;
}

const char *sl_http_get(const struct sl_http_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (!strcasecmp(m->h[i].name, name))
			return m->h[i].value;
	return NULL;
}

size_t sl_http_count(const struct sl_http_msg *m, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nh; i++)
		n += !strcasecmp(m->h[i].name, name);
	return n;
}

static int list_has(const char *v, const char *tok)
{
	size_t tl = strlen(tok);

	while (*v) {
		const char *end;
		size_t l;

		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		end = v;
		while (*end && *end != ',')
			end++;
		l = end - v;
		while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
			l--;
		if (l == tl && !strncasecmp(v, tok, tl))
			return 1;
		v = end;
	}
	return 0;
}

int sl_http_has_token(const struct sl_http_msg *m, const char *name, const char *tok)
{
	for (size_t i = 0; i < m->nh; i++)
		if (!strcasecmp(m->h[i].name, name) && list_has(m->h[i].value, tok))
			return 1;
	return 0;
}

/* One more header at the end of @m. */
static int append_header(struct sl_http_msg *m, const char *name, const char *value)
{
	struct sl_http_header *h;

	if (m->nh == m->caph) {
		size_t cap = m->caph ? m->caph * 2 : 16;

		h = realloc(m->h, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		m->h = h;
		m->caph = cap;
	}
	if (header_fill(&m->h[m->nh], name, strlen(name), value, strlen(value)))
		return -ENOMEM;
	m->nh++;
	return 0;
}

int sl_http_set(struct sl_http_msg *m, const char *name, const char *value)
{
	size_t j = 0;
	int done = 0;

	for (size_t i = 0; i < m->nh; i++) {
		if (strcasecmp(m->h[i].name, name)) {
			m->h[j++] = m->h[i];
			continue;
		}
		if (value && !done) {
			struct sl_http_header nh;

			if (header_fill(&nh, m->h[i].name, strlen(m->h[i].name), value,
					strlen(value)))
				return -ENOMEM;
			free(m->h[i].name);
			m->h[j++] = nh;
			done = 1;
			continue;
		}
		free(m->h[i].name);
	}
	m->nh = j;
	return value && !done ? append_header(m, name, value) : 0;
}

int sl_http_add(struct sl_http_msg *m, const char *name, const char *value)
{
	if (m->nh >= SL_HTTP_MAX_HEADERS)
		return -E2BIG;
	return append_header(m, name, value);
}

int sl_http_valid_name(const char *name)
{
	/* RFC 9110 section 5.6.2: a token. */
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	if (!*name || strlen(name) > 256)
		return 0;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(tchar, *p))
			return 0;
	return 1;
}

int sl_http_valid_value(const char *value, size_t len)
{
	/* Visible characters, spaces and tabs, obs-text: never CR, LF or NUL (no header
	 * injection), no leading or trailing whitespace. */
	if (len > 16384)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = value[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return !len || (value[0] != ' ' && value[0] != '\t' && value[len - 1] != ' ' &&
			value[len - 1] != '\t');
}

int sl_http_managed(const char *name)
{
	return hop_by_hop(name, NULL) || !strcasecmp(name, "host");
}

int sl_http_host_only(const char *value, char *out, size_t len)
{
	const char *end;
	size_t n;

	while (*value == ' ')
		value++;
	if (*value == '[') {
		end = strchr(value, ']');
		if (!end)
			return -EINVAL;
		value++;
		n = end - value;
		if (end[1] && end[1] != ':')
			return -EINVAL;
	} else {
		end = strchr(value, ':');
		n = end ? (size_t)(end - value) : strlen(value);
		if (end && strchr(end + 1, ':'))
			return -EINVAL;
	}
	if (end && *end == ':') {
		for (const char *p = end + 1; *p; p++)
			if (!isdigit((unsigned char)*p))
				return -EINVAL;
	}
	if (!n || n >= len)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = value[i];

		if (c <= ' ' || c == '/' || c == '@' || c == '?' || c == '#' || c >= 0x7f)
			return -EINVAL;
		out[i] = (char)tolower(c);
	}
	out[n] = 0;
	if (out[n - 1] == '.')
		out[n - 1] = 0; /* a trailing dot names the same host */
	return out[0] ? 0 : -EINVAL;
}

int sl_http_split_target(const char *target, char *scheme, size_t schemelen, char *host,
			 size_t hostlen, const char **path)
{
	const char *p, *auth, *slash;
	char authority[300];
	size_t sl;

	host[0] = 0;
	if (schemelen)
		scheme[0] = 0;
	if (target[0] == '/') {
		*path = target;
		return 0;
	}
	p = strstr(target, "://");
	if (!p)
		return -EINVAL;
	sl = p - target;
	if (sl >= schemelen)
		return -EINVAL;
	for (size_t i = 0; i < sl; i++)
		scheme[i] = (char)tolower((unsigned char)target[i]);
	scheme[sl] = 0;
	if (strcmp(scheme, "http") && strcmp(scheme, "https"))
		return -EINVAL;
	auth = p + 3;
	slash = strpbrk(auth, "/?#");
	if (!slash)
		slash = auth + strlen(auth);
	if ((size_t)(slash - auth) >= sizeof(authority) || memchr(auth, '@', slash - auth))
		return -EINVAL; /* userinfo in a request-target: refused */
	memcpy(authority, auth, slash - auth);
	authority[slash - auth] = 0;
	if (sl_http_host_only(authority, host, hostlen))
		return -EINVAL;
	*path = *slash == '/' ? slash : "/";
	return 0;
}

static int hop_by_hop(const char *name, const char *connection)
{
	static const char *const fixed[] = { "connection",
					     "keep-alive",
					     "proxy-connection",
					     "proxy-authenticate",
					     "proxy-authorization",
					     "te",
					     "trailer",
					     "transfer-encoding",
					     "upgrade",
					     "content-length" };
	char c = (char)(name[0] | 0x20);

	/* Every fixed name starts with one of these letters: most headers are decided here. */
	if (c == 'c' || c == 'k' || c == 'p' || c == 't' || c == 'u') {
		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			if (!strcasecmp(name, fixed[i]))
				return 1;
	}
	/* Whatever the Connection header names is hop-by-hop too. */
	return connection && list_has(connection, name);
}

/* Headers and our framing, then the blank line. */
static int write_headers(const struct sl_http_msg *m, enum sl_http_body body, const char *upgrade,
			 int close, struct sl_buf *out)
{
	size_t nconn = sl_http_count(m, "connection");
	const char *connection = nconn == 1 ? sl_http_get(m, "connection") : NULL;
	int err = 0;

	for (size_t i = 0; i < m->nh && !err; i++) {
		size_t nl, vl;
		char *p;

		if (hop_by_hop(m->h[i].name, connection) ||
		    (nconn > 1 && sl_http_has_token(m, "connection", m->h[i].name)))
			continue;
		/* One reservation per line: heads are written for every request. */
		nl = strlen(m->h[i].name);
		vl = strlen(m->h[i].value);
		err = sl_buf_reserve(out, nl + vl + 4);
		if (err)
			break;
		p = out->data + out->len;
		memcpy(p, m->h[i].name, nl);
		memcpy(p + nl, ": ", 2);
		memcpy(p + nl + 2, m->h[i].value, vl);
		memcpy(p + nl + 2 + vl, "\r\n", 2);
		out->len += nl + vl + 4;
	}
	if (!err && body == SL_BODY_LENGTH) {
		const char *cl = sl_http_get(m, "content-length");

		err = sl_buf_append(out, "Content-Length: ", 16) ||
		      sl_buf_append(out, cl ? cl : "0", strlen(cl ? cl : "0")) ||
		      sl_buf_append(out, "\r\n", 2);
	}
	if (!err && body == SL_BODY_CHUNKED)
		err = sl_buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
	if (!err && upgrade)
		err = sl_buf_printf(out, "Connection: Upgrade\r\nUpgrade: %s\r\n", upgrade);
	else if (!err && close)
		err = sl_buf_printf(out, "Connection: close\r\n");
	if (!err)
		err = sl_buf_append(out, "\r\n", 2);
	return err;
}

int sl_http_write_request(const struct sl_http_msg *m, const char *path, enum sl_http_body body,
			  const char *upgrade, struct sl_buf *out)
{
	if (sl_buf_append(out, m->method, strlen(m->method)) || sl_buf_append(out, " ", 1) ||
	    sl_buf_append(out, path, strlen(path)) || sl_buf_append(out, " HTTP/1.1\r\n", 11))
		return -ENOMEM;
	return write_headers(m, body, upgrade, 0, out);
}

int sl_http_write_response(const struct sl_http_msg *m, enum sl_http_body body, const char *upgrade,
			   int close, struct sl_buf *out)
{
	const char *reason = m->reason && *m->reason ? m->reason : sl_http_reason(m->status);
	char line[16] = "HTTP/1.1 000 ";
	int st = m->status >= 100 && m->status <= 999 ? m->status : 500;

	line[9] = (char)('0' + st / 100);
	line[10] = (char)('0' + st / 10 % 10);
	line[11] = (char)('0' + st % 10);
	if (sl_buf_append(out, line, 13) || sl_buf_append(out, reason, strlen(reason)) ||
	    sl_buf_append(out, "\r\n", 2))
		return -ENOMEM;
	return write_headers(m, body, upgrade, close, out);
}

int sl_http_write_body(struct sl_buf *out, enum sl_http_body body, const char *p, size_t n)
{
	if (!n)
		return 0;
	if (body == SL_BODY_CHUNKED) {
		static const char hex[] = "0123456789abcdef";
		char size[20], *e = size + sizeof(size), *q = e;

		*--q = '\n';
		*--q = '\r';
		for (size_t v = n; v; v >>= 4)
			*--q = hex[v & 15];
		if (sl_buf_append(out, q, e - q) || sl_buf_append(out, p, n) ||
		    sl_buf_append(out, "\r\n", 2))
			return -ENOMEM;
		return 0;
	}
	return sl_buf_append(out, p, n);
}

int sl_http_write_last_chunk(struct sl_buf *out)
{
	return sl_buf_append(out, "0\r\n\r\n", 5);
}

int sl_http_write_trailers(struct sl_buf *out, const struct sl_http_msg *t)
{
	if (sl_buf_append(out, "0\r\n", 3))
		return -ENOMEM;
	for (size_t i = 0; t && i < t->nh; i++) {
		const struct sl_http_header *h = &t->h[i];

		/* framing and routing never come from a trailer (RFC 9110 section 6.5.1) */
		if (sl_http_managed(h->name) || !strcasecmp(h->name, "content-length") ||
		    !sl_http_valid_name(h->name) ||
		    !sl_http_valid_value(h->value, strlen(h->value)))
			continue;
		if (sl_buf_printf(out, "%s: %s\r\n", h->name, h->value))
			return -ENOMEM;
	}
	return sl_buf_append(out, "\r\n", 2);
}

const char *sl_http_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 421:
		return "Misdirected Request";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

int sl_http_write_error(struct sl_buf *out, int status, const char *body)
{
	size_t n = strlen(body);

	return sl_buf_printf(out,
			     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
			     status, sl_http_reason(status), n + 1, body);
}
