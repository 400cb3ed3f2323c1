/* SPDX-License-Identifier: MIT */
/*
 * The event stream: JSON lines from the kernel and the daemon, kept and fanned out.
 *
 * Threading: the rings are shared under a lock; subscribers belong to the main loop's thread,
 * where their sinks run and where alone they are added and removed. Publishing works on any
 * thread: sl_events_publish() and sl_jw_publish() on another thread (a worker's: DNS, proxy,
 * Lua, switches) format and keep the line there, and post it to the main loop
 * (sl_events_bind()) only for a subscriber that wants it; sinks must not block.
 * Publishing never waits for a subscriber; it may wait for the lock while the main thread
 * replays a history (all sandboxes' history when 65,536 lines are kept: about 4 ms here).
 * sl_event_json() is a pure function: any thread.
 */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/jsonw.h" /* struct sl_jw, sl_utf8_scrub, sl_format_mono_time: moved there */

#include <linux/types.h>
#include "sluice.h"

struct sl_events;

/* A subscriber. @line is one JSON object with its trailing newline, valid during the call
 * only. A sink may unsubscribe itself (not another subscriber). */
typedef void sl_event_sink(const char *line, size_t len, void *arg);

/* Keeps the last @keep lines of each sandbox (and of no sandbox) for replay, 16 times @keep
 * in all (see events.c). */
struct sl_events *sl_events_new(size_t keep);
void sl_events_free(struct sl_events *ev);
/* The bus belongs to @loop, run by the calling thread: lines published on other threads are
 * posted to it (unbound, every publish is direct). Before any other thread publishes. */
struct sl_loop;
void sl_events_bind(struct sl_events *ev, struct sl_loop *loop);

/* Subscribes @sink to lines of sandbox @sandbox (NULL: all). Returns a handle > 0, or -1. */
int sl_events_subscribe(struct sl_events *ev, const char *sandbox, sl_event_sink *sink, void *arg);
/* sl_events_replay() and sl_events_subscribe() at once: every line kept comes to @sink once,
 * in the replay or after it, whatever the workers publish meanwhile. @max_bytes as for the
 * replay; SL_EVENTS_NO_REPLAY: none. */
#define SL_EVENTS_NO_REPLAY SIZE_MAX
int sl_events_follow(struct sl_events *ev, const char *sandbox, size_t max_bytes,
		     sl_event_sink *sink, void *arg);
void sl_events_unsubscribe(struct sl_events *ev, int handle);
/* Calls @sink, oldest first, for the newest kept lines of @sandbox (NULL: all) that fit in
 * @max_bytes together (0: every line). Returns how many older lines were left out. */
size_t sl_events_replay(struct sl_events *ev, const char *sandbox, size_t max_bytes,
			sl_event_sink *sink, void *arg);
/* The sandbox @sandbox was removed: its lines stay for replay until EV_GONE_MAX (64) newer
 * removals (see events.c). Accepts NULL @ev. */
void sl_events_sandbox_gone(struct sl_events *ev, const char *sandbox);
/* Whether lines of @sandbox are kept (a sandbox that exists or existed). */
int sl_events_known(struct sl_events *ev, const char *sandbox);

/* Publishes @obj (reference stolen) as an event of @sandbox (NULL: none). A "ts" field is
 * added if absent. Never blocks: subscribers buffer or drop. */
void sl_events_publish(struct sl_events *ev, const char *sandbox, json_t *obj);

/* Closes the object and publishes it; the buffer is consumed. */
void sl_jw_publish(struct sl_jw *w, struct sl_events *ev, const char *sandbox);

/* The JSON form of a kernel deny record (new reference). @sandbox NULL when unknown. */
json_t *sl_event_json(const struct sl_event *kev, const char *sandbox);

#endif
