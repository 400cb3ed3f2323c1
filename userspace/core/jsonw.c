// SPDX-License-Identifier: MIT
/*
 * A JSON writer for event lines on hot paths (bpftool has json_writer.c for the same reason),
 * the UTF-8 scrubber that keeps quoted untrusted bytes valid JSON, and the time format of
 * every event. Out of events.c, which keeps the event bus.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/jsonw.h"
#include "core/loop.h"

void sl_format_mono_time(__u64 ts_ns, char *buf, size_t len)
{
	/* The wall-clock offset and the formatted second are recomputed once a second, not
	 * for every event: a cache per thread, so that any thread may format. */
	static __thread long long offset_ms, offset_at_ms = -10000, cached_sec = -1;
	static __thread char prefix[32];
	long long mono_ms = (long long)(ts_ns / 1000000), ms, secs;

	if (mono_ms - offset_at_ms >= 1000 || mono_ms < offset_at_ms) {
		struct timespec rt, mono;

		clock_gettime(CLOCK_REALTIME, &rt);
		clock_gettime(CLOCK_MONOTONIC, &mono);
		offset_ms = (long long)rt.tv_sec * 1000 + rt.tv_nsec / 1000000 -
			    ((long long)mono.tv_sec * 1000 + mono.tv_nsec / 1000000);
		offset_at_ms = mono_ms;
	}
	ms = mono_ms + offset_ms;
	secs = ms / 1000;
	if (secs != cached_sec) {
		time_t t = secs;
		struct tm tm;

		gmtime_r(&t, &tm);
		snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
		cached_sec = secs;
	}
	{
		size_t n = strlen(prefix);
		int frac = (int)(ms % 1000);

		if (len < n + 6)
			return;
		memcpy(buf, prefix, n);
		buf[n] = '.';
		buf[n + 1] = (char)('0' + frac / 100);
		buf[n + 2] = (char)('0' + frac / 10 % 10);
		buf[n + 3] = (char)('0' + frac % 10);
		buf[n + 4] = 'Z';
		buf[n + 5] = 0;
	}
}

/* The length of the valid UTF-8 sequence at @p (RFC 3629: no overlong forms, surrogates or
 * code points past U+10FFFF), 0 if there is none. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

void sl_utf8_scrub(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n = utf8_len(p);

		if (n) {
			p += n;
		} else {
			*p++ = '?';
		}
	}
}

/* ,"key": (keys are ours: plain ASCII, no escaping needed) */
static void jw_key(struct sl_jw *w, const char *key)
{
	char k[64];
	size_t n = strlen(key), i = 0;

	if (n > sizeof(k) - 4)
		n = sizeof(k) - 4;
	if (w->n++)
		k[i++] = ',';
	k[i++] = '"';
	memcpy(k + i, key, n);
	i += n;
	k[i++] = '"';
	k[i++] = ':';
	sl_buf_append(&w->b, k, i);
}

void sl_jw_begin(struct sl_jw *w)
{
	char ts[40];

	memset(w, 0, sizeof(*w));
	sl_format_mono_time(sl_now_ns(), ts, sizeof(ts));
	sl_buf_reserve(&w->b, 480); /* most lines fit: one allocation */
	sl_buf_append(&w->b, "{", 1);
	sl_jw_str(w, "ts", ts);
}

void sl_jw_str(struct sl_jw *w, const char *key, const char *val)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)val;

	jw_key(w, key);
	sl_buf_append(&w->b, "\"", 1);
	for (; *p; p++) {
		const unsigned char *run = p;

		while (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			p++;
		if (p > run)
			sl_buf_append(&w->b, run, p - run);
		if (!*p)
			break;
		if (*p == '"' || *p == '\\') {
			char e[2] = { '\\', (char)*p };

			sl_buf_append(&w->b, e, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			char e[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };

			sl_buf_append(&w->b, e, 6);
		} else {
			/* Not ASCII: kept only as the replacement character, so that an event
			 * is valid UTF-8 whatever bytes a name carried. */
			sl_buf_append(&w->b, "\\ufffd", 6);
		}
	}
	sl_buf_append(&w->b, "\"", 1);
}

void sl_jw_int(struct sl_jw *w, const char *key, long long val)
{
	char d[24], *e = d + sizeof(d), *p = e;
	unsigned long long u = val < 0 ? -(unsigned long long)val : (unsigned long long)val;

	jw_key(w, key);
	do
		*--p = (char)('0' + u % 10);
	while (u /= 10);
	if (val < 0)
		*--p = '-';
	sl_buf_append(&w->b, p, e - p);
}

void sl_jw_raw(struct sl_jw *w, const char *key, const char *json, size_t len)
{
	jw_key(w, key);
	sl_buf_append(&w->b, json, len);
}
