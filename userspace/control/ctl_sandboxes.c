// SPDX-License-Identifier: MIT
/*
 * /v1/sandboxes: list, add, show, remove a sandbox, switch its handler, reload its policy,
 * hand out its CA.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "control/ctl_decode.h"
#include "control/ctl_int.h"
#include "core/log.h"
#include "kernel/cgroup.h"
#include "sandbox/sandbox.h"

static void handle_list(struct ctl_conn *c)
{
	json_t *arr = json_array();

	sl_registry_foreach(b, c->ctl->d.reg)
		json_array_append_new(arr, sl_sandbox_json(c->ctl->d.reg, b, 0));
	ctl_respond_json(c, 200, json_pack("{s:o}", "sandboxes", arr));
}

/* Who is asking, for events: the peer's credentials on the unix socket. */
static void peer_of(struct ctl_conn *c, char *buf, size_t len)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) == -1)
		snprintf(buf, len, "control API");
	else
		snprintf(buf, len, "uid %u pid %d", (unsigned)cr.uid, (int)cr.pid);
}

static json_t *switch_json(struct sl_registry *reg, struct sl_box *box,
			   const struct sl_switch_result *res)
{
	json_t *j = sl_sandbox_json(reg, box, 0);

	if (j)
		json_object_set_new(j, "closed",
				    json_pack("{s:I, s:I, s:I}", "kernel_flows",
					      (json_int_t)res->closed_kernel, "proxied",
					      (json_int_t)res->closed_proxy, "dns_entries",
					      (json_int_t)res->dns_dropped));
	return j;
}

/* The answer of a switch (handler, policy, mode), once the new layer is in force or refused. */
static void switched(void *arg, struct sl_box *box, int e, const char *msg,
		     const struct sl_switch_result *res)
{
	struct ctl_conn *c = ctl_wait_end(arg);

	if (!c)
		return; /* the client went away; the switch happened (or not) all the same */
	if (!box)
		ctl_respond_error(c,
				  e == -ENOENT ? 404 :
				  e == -EINVAL ? 400 :
				  e == -EBUSY  ? 409 :
						 500,
				  msg);
	else
		ctl_respond_json(c, 200, switch_json(c->ctl->d.reg, box, res));
	ctl_wait_resume(c);
}

/* The connection waits for the switch's answer: its compile runs off the loop. */
static struct ctl_wait *switch_wait(struct ctl_conn *c)
{
	struct ctl_wait *w = ctl_wait_begin(c);

	if (!w)
		ctl_respond_error(c, 500, "out of memory");
	return w;
}

/* PUT /v1/sandboxes/NAME/handler {"handler": H, "params": {...}}, DELETE: back to the
 * policy's own handlers. */
static void handle_handler(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	const char *handler = NULL;
	json_t *j = NULL, *params = NULL;
	struct ctl_wait *w;
	char err[512], who[64], *ptext = NULL;
	json_error_t jerr;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	peer_of(c, who, sizeof(who));
	if (strcmp(method, "PUT") && strcmp(method, "DELETE")) {
		ctl_respond_error(c, 405, "use PUT or DELETE on /v1/sandboxes/NAME/handler");
		return;
	}
	if (!strcmp(method, "PUT")) {
		j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
		if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s, s?o}", "handler", &handler,
					 "params", &params)) {
			snprintf(err, sizeof(err),
				 "bad request: %s (want {\"handler\": NAME, \"params\": "
				 "{...}})",
				 jerr.text);
			ctl_respond_error(c, 400, err);
			goto out;
		}
		if (sl_ctl_params_text(params, &ptext, err, sizeof(err))) {
			ctl_respond_error(c, 400, err);
			goto out;
		}
	}
	w = switch_wait(c);
	if (!w)
		goto out;
	e = sl_sandbox_set_handler(c->ctl->d.reg, box, handler, ptext, who, switched, w, err,
				   sizeof(err));
	if (e)
		switched(w, NULL, e, err, NULL);
out:
	free(ptext);
	json_decref(j);
}

/* PUT /v1/sandboxes/NAME/mode {"mode": "audit"|"enforce"} */
static void handle_mode(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	const char *mode = NULL;
	char err[512], who[64];
	struct ctl_wait *w;
	json_error_t jerr;
	json_t *j = NULL;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	if (strcmp(method, "PUT")) {
		ctl_respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/mode");
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s}", "mode", &mode) ||
	    (strcmp(mode, "audit") && strcmp(mode, "enforce"))) {
		snprintf(err, sizeof(err),
			 "bad request: %s (want {\"mode\": \"audit\" or "
			 "\"enforce\"})",
			 j && mode ? "unknown mode" : jerr.text);
		ctl_respond_error(c, 400, err);
		goto out;
	}
	peer_of(c, who, sizeof(who));
	w = switch_wait(c);
	if (!w)
		goto out;
	e = sl_sandbox_set_mode(c->ctl->d.reg, box, !strcmp(mode, "audit"), who, switched, w, err,
				sizeof(err));
	if (e)
		switched(w, NULL, e, err, NULL);
out:
	json_decref(j);
}

/* GET /v1/sandboxes/NAME/suggest[?collapse=N]: {"sandbox", "mode", "policy": TEXT} */
static void handle_suggest(struct ctl_conn *c, const char *name, const char *query)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	unsigned long collapse = 0;
	char err[512], *text = NULL;
	const char *q = query ? strstr(query, "collapse=") : NULL;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	if (q) {
		char *end;

		collapse = strtoul(q + 9, &end, 10);
		if (end == q + 9 || (*end && *end != '&') || collapse > 1000000) {
			ctl_respond_error(c, 400, "collapse takes a number of names (0: never)");
			return;
		}
	}
	e = sl_sandbox_suggest(c->ctl->d.reg, box, (unsigned)collapse, &text, err, sizeof(err));
	if (e) {
		ctl_respond_error(c, 500, err);
		return;
	}
	ctl_respond_json(c, 200,
			 json_pack("{s:s, s:s, s:s}", "sandbox", name, "mode",
				   sl_box_audit(box) ? "audit" : "enforce", "policy", text));
	free(text);
}

/* PUT /v1/sandboxes/NAME/policy {"policy": TEXT, "policy_file": PATH} */
static void handle_reload(struct ctl_conn *c, const char *method, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	const char *policy = NULL, *policy_file = NULL;
	size_t policy_len = 0;
	struct ctl_wait *w;
	char err[512], who[64];
	json_error_t jerr;
	json_t *j;
	int e;

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	if (strcmp(method, "PUT")) {
		ctl_respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/policy");
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s%, s?s}", "policy", &policy,
				 &policy_len, "policy_file", &policy_file)) {
		snprintf(err, sizeof(err), "bad request: %s (want {\"policy\": TEXT})", jerr.text);
		ctl_respond_error(c, 400, err);
		json_decref(j);
		return;
	}
	peer_of(c, who, sizeof(who));
	w = switch_wait(c);
	if (w) {
		e = sl_sandbox_reload(c->ctl->d.reg, box, policy_file, policy, policy_len, who,
				      switched, w, err, sizeof(err));
		if (e) {
			sl_info("sandbox %s: policy reload refused: %s", name, err);
			switched(w, NULL, e, err, NULL);
		}
	}
	json_decref(j);
}

/* The answer of POST /v1/sandboxes, once the sandbox is in force or refused. */
static void added(void *arg, struct sl_box *box, int e, const char *msg)
{
	struct ctl_conn *c = ctl_wait_end(arg);

	if (!c)
		return; /* the client went away; the sandbox stays (or was refused) all the same */
	if (!box) {
		int status = e == -EINVAL ? 400 :
			     e == -EEXIST ? 409 :
			     e == -EPERM  ? 403 :
			     e == -ENOSPC ? 503 :
					    500;

		ctl_respond_error(c, status, msg);
	} else {
		/* The summary, as ls lists it: the detail of a big policy (its rules) is long to
		 * write, and the other sandboxes would wait for it; GET /v1/sandboxes/NAME has
		 * it. */
		ctl_respond_json(c, 201, sl_sandbox_json(c->ctl->d.reg, box, 0));
	}
	ctl_wait_resume(c);
}

/* POST /v1/sandboxes: answered when the sandbox is in force; its policy compiles off the
 * loop meanwhile (sl_sandbox_add_async()). */
static void handle_add(struct ctl_conn *c)
{
	struct sl_ctl_add add;
	struct ctl_wait *w;
	char err[512];
	int e;

	if (sl_ctl_decode_add(sl_buf_head(&c->body), sl_buf_size(&c->body), &add, err,
			      sizeof(err))) {
		ctl_respond_error(c, 400, err);
		goto out;
	}
	w = ctl_wait_begin(c);
	if (!w) {
		ctl_respond_error(c, 500, "out of memory");
		goto out;
	}
	e = sl_sandbox_add_async(c->ctl->d.reg, &add.spec, added, w, err, sizeof(err));
	if (e) {
		sl_info("sandbox %s refused: %s", add.spec.name, err);
		added(w, NULL, e, err);
	}
out:
	sl_ctl_add_release(&add);
}

static void handle_show(struct ctl_conn *c, const char *name)
{
	struct sl_box *b = sl_sandbox_find(c->ctl->d.reg, name);
	char err[128];

	if (!b) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	ctl_respond_json(c, 200, sl_sandbox_json(c->ctl->d.reg, b, 1));
}

/*
 * DELETE /v1/sandboxes/NAME[?container_id=ID]. With a container id (the OCI hook's poststop)
 * the sandbox goes only if it was made for that container and no process is left in its
 * cgroup: whoever can create containers must not end another container's enforcement.
 */
static void handle_rm(struct ctl_conn *c, const char *name, const char *query)
{
	char err[PATH_MAX + 512], cid[SL_CONTAINER_ID_MAX + 2];
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	int r = box && query ? ctl_query_param(query, "container_id", cid, sizeof(cid)) : 0;

	if (r < 0) {
		ctl_respond_error(c, 400, "invalid container_id");
		return;
	}
	if (r > 0) {
		if (strcmp(cid, sl_box_container_id(box))) {
			snprintf(err, sizeof(err), "sandbox '%s' was not made for container %s",
				 name, cid);
			ctl_respond_error(c, 409, err);
			return;
		}
		if (sl_cgroup_populated(sl_box_cgroup(box)) > 0) {
			snprintf(err, sizeof(err),
				 "sandbox '%s': processes still run in %s; it is removed once "
				 "they are gone",
				 name, sl_box_cgroup(box));
			ctl_respond_error(c, 409, err);
			return;
		}
	}
	r = sl_sandbox_rm(c->ctl->d.reg, name);
	if (r == -ENOENT) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	if (r) {
		snprintf(err, sizeof(err), "removing '%s' failed: %s", name, strerror(-r));
		ctl_respond_error(c, 500, err);
		return;
	}
	ctl_respond_json(c, 200, json_pack("{s:s}", "removed", name));
}

static void handle_ca(struct ctl_conn *c, const char *name)
{
	struct sl_box *b = sl_sandbox_find(c->ctl->d.reg, name);
	char err[128], *pem;

	if (!b) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return;
	}
	pem = sl_sandbox_ca_pem(b);
	if (!pem) {
		ctl_respond_error(c, 500, "the sandbox has no CA");
		return;
	}
	ctl_respond_raw(c, 200, "application/x-pem-file", pem, strlen(pem));
	free(pem);
}

void ctl_route_list(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_list(c);
}

void ctl_route_add(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_add(c);
}

void ctl_route_show(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_show(c, rq->arg);
}

void ctl_route_rm(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_rm(c, rq->arg, rq->query);
}

void ctl_route_handler(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_handler(c, rq->method, rq->arg);
}

void ctl_route_suggest(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_suggest(c, rq->arg, rq->query);
}

void ctl_route_mode(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_mode(c, rq->method, rq->arg);
}

void ctl_route_reload(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_reload(c, rq->method, rq->arg);
}

void ctl_route_ca(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_ca(c, rq->arg);
}
