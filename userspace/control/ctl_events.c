// SPDX-License-Identifier: MIT
/* /v1/events: the event history, and the stream of a follower (core/events.h). */
#include <stdio.h>
#include <string.h>

#include "control/ctl_int.h"
#include "core/events.h"
#include "sandbox/sandbox.h"

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
		ctl_conn_flush(c);
}

static void handle_events(struct ctl_conn *c, const char *query)
{
	char sandbox[SL_NAME_MAX + 1] = "", follow[8] = "";
	int has_sb = ctl_query_param(query, "sandbox", sandbox, sizeof(sandbox));
	int has_follow = ctl_query_param(query, "follow", follow, sizeof(follow));
	const char *filter = has_sb > 0 ? sandbox : NULL;
	char err[160];

	if (has_sb < 0 || has_follow < 0) {
		ctl_respond_error(c, 400, "bad query parameter");
		return;
	}
	/* A removed sandbox's history is kept a while (events.c): `sluice run`'s, say. */
	if (filter && !sl_sandbox_find(c->ctl->d.reg, filter) &&
	    !sl_events_known(c->ctl->d.events, filter)) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", filter);
		ctl_respond_error(c, 404, err);
		return;
	}
	/* A stream: no length, the body ends when the connection does. */
	c->closing = has_follow > 0 && ctl_truthy(follow) ? 0 : 1;
	sl_buf_printf(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
			       "Connection: close\r\n\r\n");
	/* The newest lines that fit in what one connection may buffer: the whole history of a
	 * busy host is more, and a history is read for what just happened. A follower's replay
	 * and subscription are one step: workers keep lines meanwhile. */
	if (c->closing) {
		sl_events_replay(c->ctl->d.events, filter,
				 CTL_STREAM_MAX_PENDING - sl_buf_size(&c->out), stream_sink, c);
		return;
	}
	c->sub = sl_events_follow(c->ctl->d.events, filter,
				  CTL_STREAM_MAX_PENDING - sl_buf_size(&c->out), stream_sink, c);
	if (c->sub < 0) {
		c->sub = 0;
		c->closing = 1;
	}
}

void ctl_route_events(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_events(c, rq->query);
}
