/* SPDX-License-Identifier: MIT */
/*
 * The JSON writer of event lines, the UTF-8 scrubber and the events' time format.
 *
 * Threading: any thread (a writer belongs to its caller, the time format's cache is per
 * thread); nothing here blocks.
 */
#ifndef SL_JSONW_H
#define SL_JSONW_H

#include <stddef.h>

#include <linux/types.h>

#include "core/buf.h"

/* Replaces every byte of @s that does not belong to valid UTF-8 by '?', in place, so that
 * text quoting untrusted bytes (a parser's error, a truncated message) can go into JSON. */
void sl_utf8_scrub(char *s);

/*
 * A JSON object written straight into a buffer, for events on hot paths (one per proxied
 * request) where building a json_t and dumping it would cost more than the request.
 * sl_jw_begin() opens the object with the "ts" field; strings are escaped (RFC 8259).
 */
struct sl_jw {
	struct sl_buf b;
	int n;
};
void sl_jw_begin(struct sl_jw *w);
void sl_jw_str(struct sl_jw *w, const char *key, const char *val);
void sl_jw_int(struct sl_jw *w, const char *key, long long val);
/* A value already written as JSON (@len bytes of @json: a list, true, null): not checked. */
void sl_jw_raw(struct sl_jw *w, const char *key, const char *json, size_t len);

/* Formats @ts_ns (CLOCK_MONOTONIC) as an RFC 3339 UTC time with milliseconds. */
void sl_format_mono_time(__u64 ts_ns, char *buf, size_t len);

#endif
