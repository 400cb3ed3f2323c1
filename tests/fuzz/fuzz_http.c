// SPDX-License-Identifier: MIT
/*
 * The proxy's HTTP path over any bytes, the way the proxy drives it: llhttp (strict) with
 * http.c's callbacks storing the head, the proxy's own head checks (px_h1_check_request()
 * and px_h1_check_response(), the functions px_h1.c calls, without a policy), the head
 * re-serialised for the other side with hop-by-hop headers dropped, the body re-framed, a
 * pause after each head and each message (pipelining), and bytes that arrive in pieces: the
 * unconsumed rest of the buffer is fed again after a pause, with @feed_end at its end, as
 * px_h1.c's feed() does.
 *
 * Input: byte 0 picks requests (bit 0 clear) or responses (set) and, with byte 1, seeds the
 * split points; the rest is the stream. With bit 1 of byte 0 set, the stream's last line,
 * split at its first ':', is also a header a Lua handler sets (bit 2) or adds to every head,
 * when http.c says a handler may (sl_http_valid_name(), _valid_value(), _managed()).
 * Responses answer a HEAD request with bit 3 set, a WebSocket upgrade with bit 4.
 *
 * Invariants:
 * - what is parsed does not depend on how the stream was split: the transcript (heads,
 *   decisions, body bytes, where it stops) of the stream fed whole equals that of the
 *   stream fed in pieces; obs-fold in particular is refused whatever the split;
 * - stored names and values hold no CR, LF or NUL, names are not empty;
 * - a re-serialised head parses again to the same method, path (or status) and headers:
 *   the ones kept, in order, then our framing; serialising that again gives the same bytes;
 *   no hop-by-hop header of the original survives; a header a handler was allowed to set
 *   cannot break the head either.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "http/http.h"
#include "proxy/px_h1.h"

struct run {
	struct sl_http_h1 h1; /* first: http.c's callbacks find the parser state here */
	struct sl_http_msg msg;
	int response;
	struct sl_buf log; /* the transcript compared across splits */
	struct sl_buf out; /* what would go to the other side */
	enum sl_http_body body;
	int websocket; /* responses: to a WebSocket request (byte 0, bit 4) */
	int head; /* responses: to a HEAD request (byte 0, bit 3) */
	int stop; /* the proxy would answer with an error and close */
	const char *inject_name, *inject_value; /* a handler's header, or NULL */
	int inject_set; /* sl_http_set() rather than sl_http_add() */
};

static llhttp_settings_t req_settings, resp_settings, reparse_req, reparse_resp;

static struct run *run_of(llhttp_t *p)
{
	return p->data;
}

static void log_bytes(struct run *r, const char *s, size_t n)
{
	FUZZ_CHECK(sl_buf_append(&r->log, s, n) == 0);
}

static void log_str(struct run *r, const char *tag, const char *s)
{
	log_bytes(r, tag, strlen(tag));
	log_bytes(r, s ? s : "(null)", s ? strlen(s) + 1 : 6);
}

static int on_begin(llhttp_t *p)
{
	struct run *r = run_of(p);

	sl_http_msg_reset(&r->msg);
	sl_http_h1_reset(&r->h1);
	r->body = SL_BODY_NONE;
	log_bytes(r, "<", 1);
	return 0;
}

static int reject(struct run *r, const char *why)
{
	log_str(r, "reject:", why);
	r->stop = 1;
	return HPE_PAUSED;
}

/* Whether any Connection header lists @name: what write_headers() must leave out. */
static int named_by_connection(const struct sl_http_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (!strcasecmp(m->h[i].name, "connection") &&
		    sl_http_has_token(m, "connection", name))
			return 1;
	return 0;
}

static int fixed_hop_by_hop(const char *name)
{
	static const char *const names[] = { "connection",
					     "keep-alive",
					     "proxy-connection",
					     "proxy-authenticate",
					     "proxy-authorization",
					     "te",
					     "trailer",
					     "transfer-encoding",
					     "upgrade",
					     "content-length" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(name, names[i]))
			return 1;
	return 0;
}

struct reparse {
	struct sl_http_h1 h1;
	struct sl_http_msg msg;
	int done;
};

static int reparse_done(llhttp_t *p)
{
	struct reparse *rp = p->data;

	rp->done = 1;
	return HPE_PAUSED;
}

/* The head @m serialised into @head (@n bytes) reads back as @m minus hop-by-hop headers. */
static void check_reparse(const struct sl_http_msg *m, const char *path, const char *head, size_t n,
			  enum sl_http_body body, const char *upgrade, int response)
{
	struct reparse rp = { 0 };
	struct sl_buf again = { 0 };
	size_t j = 0, extra;
	llhttp_t p;
	llhttp_errno_t e;

	rp.h1.m = &rp.msg;
	sl_http_msg_init(&rp.msg);
	llhttp_init(&p, response ? HTTP_RESPONSE : HTTP_REQUEST,
		    response ? &reparse_resp : &reparse_req);
	p.data = &rp;
	rp.h1.feed_end = head + n;
	e = llhttp_execute(&p, head, n);
	if (e != HPE_PAUSED || !rp.done) {
		fprintf(stderr, "re-serialised head does not parse (%s: %s):\n%.*s\n",
			llhttp_errno_name(e), llhttp_get_error_reason(&p), (int)n, head);
		FUZZ_CHECK(0);
	}
	FUZZ_CHECK(llhttp_get_error_pos(&p) == head + n);
	if (response) {
		/* llhttp 8 takes a status of 0 to 2 digits ("HTTP/1.1 \r\n" is 0): written as 500 */
		int want = m->status >= 100 && m->status <= 999 ? m->status : 500;

		if (p.status_code != want)
			fprintf(stderr, "status %d written as:\n%.*s\n", m->status, (int)n, head);
		FUZZ_CHECK(p.status_code == want);
		rp.msg.status = p.status_code;
	} else {
		snprintf(rp.msg.method, sizeof(rp.msg.method), "%s", llhttp_method_name(p.method));
		FUZZ_CHECK(!strcmp(rp.msg.method, m->method));
		FUZZ_CHECK(rp.msg.target && !strcmp(rp.msg.target, path));
	}
	/* the kept headers, in order and unchanged */
	for (size_t i = 0; i < m->nh; i++) {
		if (fixed_hop_by_hop(m->h[i].name) || named_by_connection(m, m->h[i].name))
			continue;
		FUZZ_CHECK(j < rp.msg.nh);
		FUZZ_CHECK(!strcmp(m->h[i].name, rp.msg.h[j].name));
		FUZZ_CHECK(!strcmp(m->h[i].value, rp.msg.h[j].value));
		j++;
	}
	/* then ours: framing, Upgrade or close */
	extra = (body == SL_BODY_LENGTH || body == SL_BODY_CHUNKED) + (upgrade ? 2 : 0);
	FUZZ_CHECK(rp.msg.nh == j + extra);
	if (body == SL_BODY_LENGTH)
		FUZZ_CHECK(!strcasecmp(rp.msg.h[j].name, "content-length") &&
			   !strcmp(rp.msg.h[j].value, sl_http_get(m, "content-length")));
	if (body == SL_BODY_CHUNKED)
		FUZZ_CHECK(!strcasecmp(rp.msg.h[j].name, "transfer-encoding") &&
			   !strcmp(rp.msg.h[j].value, "chunked"));

	/* serialising what was read gives the same bytes */
	if (response)
		FUZZ_CHECK(sl_http_write_response(&rp.msg, body, upgrade, 0, &again) == 0);
	else
		FUZZ_CHECK(sl_http_write_request(&rp.msg, path, body, upgrade, &again) == 0);
	FUZZ_CHECK(sl_buf_size(&again) == n && !memcmp(sl_buf_head(&again), head, n));
	sl_buf_free(&again);
	sl_http_h1_free(&rp.h1);
	sl_http_msg_free(&rp.msg);
}

static void check_stored(const struct sl_http_msg *m)
{
	FUZZ_CHECK(m->nh <= SL_HTTP_MAX_HEADERS);
	for (size_t i = 0; i < m->nh; i++) {
		FUZZ_CHECK(m->h[i].name[0]);
		FUZZ_CHECK(!strpbrk(m->h[i].name, "\r\n:"));
		FUZZ_CHECK(!strpbrk(m->h[i].value, "\r\n"));
	}
}

/* What a Lua handler may do to a head before it is written (lua_api.c's checks). */
static void inject(struct run *r)
{
	if (!r->inject_name)
		return;
	if (r->inject_set)
		FUZZ_CHECK(sl_http_set(&r->msg, r->inject_name, r->inject_value) == 0);
	else if (r->msg.nh < SL_HTTP_MAX_HEADERS)
		FUZZ_CHECK(sl_http_add(&r->msg, r->inject_name, r->inject_value) == 0);
}

static void log_head(struct run *r)
{
	char n[32];

	log_str(r, "method:", r->msg.method);
	log_str(r, "target:", r->msg.target);
	snprintf(n, sizeof(n), "%d %zu", r->msg.status, r->msg.nh);
	log_str(r, "status/nh:", n);
	for (size_t i = 0; i < r->msg.nh; i++) {
		log_str(r, "h:", r->msg.h[i].name);
		log_str(r, "v:", r->msg.h[i].value);
	}
}

/* px_h1.c's req_headers_complete(): the proxy's own check, without a policy (any Host). */
static int req_headers_complete(llhttp_t *p)
{
	struct run *r = run_of(p);
	struct sl_http_msg *m = &r->msg;
	const char *upgrade;
	struct px_h1_req v;
	size_t start;
	int err;

	check_stored(m);
	err = px_h1_check_request(p, m, NULL, &v);
	log_head(r);
	if (err) {
		FUZZ_CHECK(v.status >= 400 && v.status <= 599 && v.why);
		return reject(r, v.why);
	}
	FUZZ_CHECK(v.path && v.path[0] == '/');
	FUZZ_CHECK(v.host[0] && strlen(v.host) < sizeof(v.host));
	/* an h2c upgrade was dropped: llhttp goes on with HTTP/1.1, nothing is relayed */
	FUZZ_CHECK(!sl_http_has_token(m, "upgrade", "h2c") || v.websocket);
	log_str(r, "host:", v.host);
	log_str(r, "path:", v.path);
	r->websocket = v.websocket;
	upgrade = v.websocket ? "websocket" : NULL;
	r->body = v.body;
	log_str(r, "body:",
		r->body == SL_BODY_CHUNKED ? "chunked" :
		r->body == SL_BODY_LENGTH  ? "length" :
					     "none");
	inject(r);
	start = sl_buf_size(&r->out);
	FUZZ_CHECK(sl_http_write_request(m, v.path, r->body, upgrade, &r->out) == 0);
	check_reparse(m, v.path, sl_buf_head(&r->out) + start, sl_buf_size(&r->out) - start,
		      r->body, upgrade, 0);
	return HPE_PAUSED; /* the proxy decides, then resumes */
}

/* px_h1.c's resp_headers_complete(): the proxy's own check and framing of the response
 * relayed to the client, for a request that was HEAD or a WebSocket upgrade (byte 0). */
static int resp_headers_complete(llhttp_t *p)
{
	struct run *r = run_of(p);
	struct sl_http_msg *m = &r->msg;
	const char *upgrade = NULL;
	struct px_h1_resp v;
	size_t start;

	check_stored(m);
	if (px_h1_check_response(p, m, r->head, r->websocket, &v)) {
		log_head(r);
		return reject(r, "status");
	}
	log_head(r);
	FUZZ_CHECK(m->status >= 100 && m->status <= 599);
	if (v.kind == PX_H1_RESP_SWITCH)
		upgrade = "websocket";
	r->body = v.body;
	inject(r);
	start = sl_buf_size(&r->out);
	FUZZ_CHECK(sl_http_write_response(m, v.head_length ? SL_BODY_LENGTH : r->body, upgrade, 0,
					  &r->out) == 0);
	check_reparse(m, NULL, sl_buf_head(&r->out) + start, sl_buf_size(&r->out) - start,
		      v.head_length ? SL_BODY_LENGTH : r->body, upgrade, 1);
	/* llhttp cannot know that a response to HEAD has no body: 1 tells it (as px_h1.c). */
	return v.kind == PX_H1_RESP_FINAL && r->head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct run *r = run_of(p);

	log_bytes(r, at, len);
	return sl_http_write_body(&r->out, r->body, at, len) ? -1 : 0;
}

static int on_complete(llhttp_t *p)
{
	struct run *r = run_of(p);

	log_bytes(r, ">", 1);
	if (r->body == SL_BODY_CHUNKED && sl_http_write_last_chunk(&r->out))
		return -1;
	return r->response ? 0 : HPE_PAUSED; /* one request at a time */
}

static void init_settings(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	llhttp_settings_init(&req_settings);
	req_settings.on_message_begin = on_begin;
	req_settings.on_url = sl_http_on_url;
	req_settings.on_header_field = sl_http_on_header_field;
	req_settings.on_header_value = sl_http_on_header_value;
	req_settings.on_header_value_complete = sl_http_on_header_value_complete;
	req_settings.on_headers_complete = req_headers_complete;
	req_settings.on_body = on_body;
	req_settings.on_message_complete = on_complete;
	resp_settings = req_settings;
	resp_settings.on_url = NULL;
	resp_settings.on_status = sl_http_on_status;
	resp_settings.on_headers_complete = resp_headers_complete;

	llhttp_settings_init(&reparse_req);
	reparse_req.on_url = sl_http_on_url;
	reparse_req.on_header_field = sl_http_on_header_field;
	reparse_req.on_header_value = sl_http_on_header_value;
	reparse_req.on_header_value_complete = sl_http_on_header_value_complete;
	reparse_req.on_headers_complete = reparse_done;
	reparse_resp = reparse_req;
	reparse_resp.on_url = NULL;
	reparse_resp.on_status = sl_http_on_status;
}

/*
 * Feeds @data (@size bytes) arriving in pieces (@seed 0: all at once) to a fresh parser, as
 * px_h1.c does, and leaves the transcript in @r->log.
 */
static void run_stream(struct run *r, int response, int flags, const char *const *inj,
		       int inject_set, const uint8_t *data, size_t size, uint32_t seed)
{
	const char *base = (const char *)data;
	size_t arrived = 0, consumed = 0;
	llhttp_t p;

	memset(r, 0, sizeof(*r));
	r->response = response;
	r->head = response && (flags & 8);
	r->websocket = response && (flags & 16);
	r->inject_name = inj[0];
	r->inject_value = inj[1];
	r->inject_set = inject_set;
	r->h1.m = &r->msg;
	sl_http_msg_init(&r->msg);
	llhttp_init(&p, r->response ? HTTP_RESPONSE : HTTP_REQUEST,
		    r->response ? &resp_settings : &req_settings);
	p.data = r;
	while (arrived < size && !r->stop) {
		size_t piece = size - arrived;

		if (seed) {
			uint32_t x = fuzz_rand(&seed);

			/* mostly small pieces, sometimes one byte, sometimes large */
			piece = x & 0x100 ? 1 + (x & 7) : 1 + (x & 0xff);
			if (!(x & 0x7000))
				piece = 1;
			if (piece > size - arrived)
				piece = size - arrived;
		}
		arrived += piece;
		for (;;) {
			const char *at = base + consumed;
			size_t n = arrived - consumed;
			llhttp_errno_t e;

			r->h1.feed_end = at + n;
			e = llhttp_execute(&p, at, n);
			if (e == HPE_OK) {
				consumed = arrived;
				break;
			}
			if (e == HPE_PAUSED) {
				consumed = llhttp_get_error_pos(&p) - base;
				FUZZ_CHECK(consumed <= arrived);
				if (r->stop)
					break;
				llhttp_resume(&p);
				continue; /* a resumed parser may owe callbacks even without bytes */
			}
			if (e == HPE_PAUSED_UPGRADE) {
				log_bytes(r, "|upgrade", 8);
				r->stop = 1;
				break;
			}
			/* not the errno: a limit crossed by a partial span and a bad byte after it
			 * are both a refusal */
			log_bytes(r, "|error", 6);
			r->stop = 1;
			break;
		}
	}
	if (!r->stop)
		log_bytes(r, "|eof", 4);
	sl_http_h1_free(&r->h1);
	sl_http_msg_free(&r->msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char line[512];
	const char *inj[2] = { NULL, NULL };
	struct run whole, split;
	uint32_t seed;
	int response, inject_set, flags;

	if (size < 2)
		return 0;
	init_settings();
	seed = (uint32_t)data[0] << 8 | data[1] | 1;
	response = data[0] & 1;
	flags = data[0];
	inject_set = data[0] & 4;
	if (data[0] & 2) {
		const uint8_t *nl = memrchr(data + 2, '\n', size - 2);
		size_t off = nl ? (size_t)(nl + 1 - data) : 2, n = size - off;
		char *colon;

		if (n < sizeof(line)) {
			memcpy(line, data + off, n);
			line[n] = 0;
			colon = strchr(line, ':');
			if (colon) {
				*colon = 0;
				if (sl_http_valid_name(line) && !sl_http_managed(line) &&
				    sl_http_valid_value(colon + 1, strlen(colon + 1))) {
					inj[0] = line;
					inj[1] = colon + 1;
				}
			}
		}
	}
	data += 2;
	size -= 2;

	run_stream(&whole, response, flags, inj, inject_set, data, size, 0);
	run_stream(&split, response, flags, inj, inject_set, data, size, seed);
	if (sl_buf_size(&whole.log) != sl_buf_size(&split.log) ||
	    memcmp(sl_buf_head(&whole.log), sl_buf_head(&split.log), sl_buf_size(&whole.log))) {
		fputs("whole: ", stderr);
		fwrite(sl_buf_head(&whole.log), 1, sl_buf_size(&whole.log), stderr);
		fputs("\nsplit: ", stderr);
		fwrite(sl_buf_head(&split.log), 1, sl_buf_size(&split.log), stderr);
		fputs("\n", stderr);
		FUZZ_CHECK(!"the stream reads differently when split");
	}
	if (getenv("SL_FUZZ_DEBUG")) { /* what a reproduced input did; NUL separates fields */
		fputs("transcript: ", stderr);
		fwrite(sl_buf_head(&whole.log), 1, sl_buf_size(&whole.log), stderr);
		fputs("\nout: ", stderr);
		fwrite(sl_buf_head(&whole.out), 1, sl_buf_size(&whole.out), stderr);
		fputs("\n", stderr);
	}
	sl_buf_free(&whole.log);
	sl_buf_free(&whole.out);
	sl_buf_free(&split.log);
	sl_buf_free(&split.out);
	return 0;
}
