/* SPDX-License-Identifier: MIT */
/*
 * What the files of the control API share and nobody else sees: the server and connection
 * structs, the responders, the query helpers, and each resource's route handlers (the
 * router table in control.c lists them). Threading: the main thread only; nothing here blocks
 * but a KV write's fsync (store/kv.h) and the list's and metrics' one wait per worker
 * (sl_registry_visit()). What a request does to a sandbox runs on its worker (posted), and the
 * request answers from the completion posted back (ctl_wait), as a sandbox add does.
 */
#ifndef SL_CTL_INT_H
#define SL_CTL_INT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

#include <jansson.h>
#include <llhttp.h>

#include "control/control.h"
#include "core/buf.h"
#include "core/list.h"
#include "core/loop.h"

#define CTL_STREAM_MAX_PENDING (1u << 20)

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
	struct ctl_wait *waiting; /* a request answered later: nothing more is read meanwhile */
	int dispatching; /* in a route's handler (an answer there needs no resume) */
	struct sl_buf held; /* bytes read behind that request, parsed once it is answered */
	struct sl_list link; /* in ctl->conns */
};

/*
 * A request whose answer comes later, from a completion on the loop (a sandbox add that
 * compiles off the loop): ctl_wait_begin() in the route's handler, instead of a response;
 * then, in the completion, ctl_wait_end() gives the connection back (NULL if it closed
 * meanwhile), which the completion answers, and ctl_wait_resume() goes on with it.
 */
struct ctl_wait {
	struct ctl_conn *c; /* NULL once the connection is gone */
};

/* What a route's handler gets: @arg is the sandbox name of a "*" (decoded and checked) or
 * the rest of the path at a "**". */
struct ctl_req {
	const char *method;
	char *arg;
	const char *query;
};

/* control.c */
int ctl_conn_flush(struct ctl_conn *c);
struct ctl_wait *ctl_wait_begin(struct ctl_conn *c); /* NULL: out of memory */
struct ctl_conn *ctl_wait_end(struct ctl_wait *w); /* frees @w */
void ctl_wait_resume(struct ctl_conn *c);
void ctl_respond_raw(struct ctl_conn *c, int status, const char *ctype, const char *body,
		     size_t len);
void ctl_respond_json(struct ctl_conn *c, int status, json_t *j);
void ctl_respond_error(struct ctl_conn *c, int status, const char *msg);
int ctl_pct_decode(char *s, int plus_is_space);
int ctl_query_param(const char *query, const char *key, char *out, size_t len);
int ctl_truthy(const char *v);

/* ctl_sandboxes.c */
void ctl_route_list(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_add(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_show(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_rm(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_handler(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_suggest(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_mode(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_reload(struct ctl_conn *c, const struct ctl_req *rq);
void ctl_route_ca(struct ctl_conn *c, const struct ctl_req *rq);

/* ctl_kv.c */
void ctl_route_kv(struct ctl_conn *c, const struct ctl_req *rq);

/* ctl_events.c */
void ctl_route_events(struct ctl_conn *c, const struct ctl_req *rq);

/* metrics.c */
void ctl_route_metrics(struct ctl_conn *c, const struct ctl_req *rq);

#endif
