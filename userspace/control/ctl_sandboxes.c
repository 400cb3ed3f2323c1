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

/* GET /v1/sandboxes: each sandbox's summary made on its worker (one wait per worker). */
struct list_ctx {
	struct sl_registry *reg;
	json_t **v;
};

static void list_one(struct sl_box *box, size_t i, void *arg)
{
	struct list_ctx *l = arg;

	l->v[i] = sl_sandbox_json(l->reg, box, 0);
}

static void handle_list(struct ctl_conn *c)
{
	size_t n = sl_registry_count(c->ctl->d.reg);
	json_t *arr = json_array(), **v = calloc(n + 1, sizeof(*v));
	struct list_ctx l = { c->ctl->d.reg, v };

	if (!arr || !v) {
		json_decref(arr);
		free(v);
		ctl_respond_error(c, 500, "out of memory");
		return;
	}
	sl_registry_visit(c->ctl->d.reg, list_one, &l);
	for (size_t i = 0; i < n; i++)
		if (v[i])
			json_array_append_new(arr, v[i]);
	free(v);
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

/*
 * A request on one sandbox: decoded on the main thread, run on the sandbox's worker (which
 * owns everything of it that moves), answered on the main thread from what the worker made
 * (ctl_wait: the main loop never waits for a worker). Ops posted to a worker run in order,
 * and a removal frees the sandbox only after its worker has run what was posted before it.
 */
struct box_op {
	struct sl_task task; /* to the worker, and back */
	struct ctl_wait *w;
	struct sl_loop *main;
	struct sl_registry *reg;
	struct sl_box *box;
	/* On the worker: sets status and body, or err, then op_answer() (a switch: from its
	 * completion, on the worker too). */
	void (*run)(struct box_op *op);
	char who[64];
	char *handler, *params, *policy, *policy_file; /* the op's own copies */
	size_t policy_len;
	unsigned long n; /* audit (mode), collapse (suggest), detail (show) */
	int status;
	json_t *body;
	char *text; /* or the body as text already (a sandbox's detail, written off the loop) */
	size_t len;
	char err[512];
};

static void op_free(struct box_op *op)
{
	json_decref(op->body);
	free(op->text);
	free(op->handler);
	free(op->params);
	free(op->policy);
	free(op->policy_file);
	free(op);
}

static void op_back(struct sl_task *t)
{
	struct box_op *op = sl_container_of(t, struct box_op, task);
	struct ctl_conn *c = ctl_wait_end(op->w);

	if (c) {
		if (op->text)
			ctl_respond_raw(c, op->status, "application/json", op->text, op->len);
		else if (op->body)
			ctl_respond_json(c, op->status, op->body);
		else
			ctl_respond_error(c, op->status, op->err);
		op->body = NULL;
		ctl_wait_resume(c);
	}
	op_free(op);
}

/* On the worker: @op is done, its answer goes to the main thread. */
static void op_answer(struct box_op *op)
{
	sl_loop_post(op->main, &op->task, op_back);
}

static void op_run(struct sl_task *t)
{
	struct box_op *op = sl_container_of(t, struct box_op, task);

	op->run(op); /* it calls op_answer(), now or from a completion on the worker */
}

static struct box_op *op_new(struct ctl_conn *c, const char *name)
{
	struct sl_box *box = sl_sandbox_find(c->ctl->d.reg, name);
	struct box_op *op;
	char err[128];

	if (!box) {
		snprintf(err, sizeof(err), "no sandbox named '%s'", name);
		ctl_respond_error(c, 404, err);
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		ctl_respond_error(c, 500, "out of memory");
		return NULL;
	}
	op->box = box;
	op->reg = c->ctl->d.reg;
	op->main = c->ctl->d.loop;
	op->status = 500;
	peer_of(c, op->who, sizeof(op->who));
	return op;
}

/* Hands @op (owned from here) to its sandbox's worker; the answer comes from op_back(). */
static void op_start(struct ctl_conn *c, struct box_op *op, void (*run)(struct box_op *op))
{
	op->run = run;
	op->w = ctl_wait_begin(c);
	if (!op->w) {
		ctl_respond_error(c, 500, "out of memory");
		op_free(op);
		return;
	}
	sl_loop_post(sl_box_loop(op->box), &op->task, op_run);
}

/* The answer of a switch (handler, policy, mode), on the worker, once the new layer is in
 * force or refused. */
static void switched(void *arg, struct sl_box *box, int e, const char *msg,
		     const struct sl_switch_result *res)
{
	struct box_op *op = arg;

	if (!box) {
		op->status = e == -ENOENT ? 404 : e == -EINVAL ? 400 : e == -EBUSY ? 409 : 500;
		if (msg != op->err)
			snprintf(op->err, sizeof(op->err), "%s", msg);
	} else {
		op->status = 200;
		op->body = switch_json(op->reg, box, res);
		if (!op->body) {
			op->status = 500;
			snprintf(op->err, sizeof(op->err), "out of memory");
		}
	}
	op_answer(op);
}

static void run_handler(struct box_op *op)
{
	int e = sl_sandbox_set_handler(op->reg, op->box, op->handler, op->params, op->who, switched,
				       op, op->err, sizeof(op->err));

	if (e)
		switched(op, NULL, e, op->err, NULL);
}

/* PUT /v1/sandboxes/NAME/handler {"handler": H, "params": {...}}, DELETE: back to the
 * policy's own handlers. */
static void handle_handler(struct ctl_conn *c, const char *method, const char *name)
{
	const char *handler = NULL;
	json_t *j = NULL, *params = NULL;
	struct box_op *op;
	char err[512];
	json_error_t jerr;

	if (strcmp(method, "DELETE") && strcmp(method, "PUT")) {
		if (!sl_sandbox_find(c->ctl->d.reg, name)) {
			snprintf(err, sizeof(err), "no sandbox named '%s'", name);
			ctl_respond_error(c, 404, err);
		} else {
			ctl_respond_error(c, 405,
					  "use PUT or DELETE on /v1/sandboxes/NAME/handler");
		}
		return;
	}
	op = op_new(c, name);
	if (!op)
		return;
	if (!strcmp(method, "DELETE")) {
		op_start(c, op, run_handler);
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s, s?o}", "handler", &handler, "params",
				 &params)) {
		snprintf(err, sizeof(err),
			 "bad request: %s (want {\"handler\": NAME, \"params\": "
			 "{...}})",
			 jerr.text);
		ctl_respond_error(c, 400, err);
		goto fail;
	}
	if (sl_ctl_params_text(params, &op->params, err, sizeof(err))) {
		ctl_respond_error(c, 400, err);
		goto fail;
	}
	op->handler = strdup(handler);
	if (!op->handler) {
		ctl_respond_error(c, 500, "out of memory");
		goto fail;
	}
	json_decref(j);
	op_start(c, op, run_handler);
	return;
fail:
	json_decref(j);
	op_free(op);
}

static void run_mode(struct box_op *op)
{
	int e = sl_sandbox_set_mode(op->reg, op->box, (int)op->n, op->who, switched, op, op->err,
				    sizeof(op->err));

	if (e)
		switched(op, NULL, e, op->err, NULL);
}

/* PUT /v1/sandboxes/NAME/mode {"mode": "audit"|"enforce"} */
static void handle_mode(struct ctl_conn *c, const char *method, const char *name)
{
	struct box_op *op;
	const char *mode = NULL;
	char err[512];
	json_error_t jerr;
	json_t *j = NULL;

	op = op_new(c, name);
	if (!op)
		return;
	if (strcmp(method, "PUT")) {
		ctl_respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/mode");
		op_free(op);
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
		json_decref(j);
		op_free(op);
		return;
	}
	op->n = !strcmp(mode, "audit");
	json_decref(j);
	op_start(c, op, run_mode);
}

static void run_suggest(struct box_op *op)
{
	char *text = NULL;
	int e = sl_sandbox_suggest(op->reg, op->box, (unsigned)op->n, &text, op->err,
				   sizeof(op->err));

	if (!e) {
		op->body = json_pack("{s:s, s:s, s:s}", "sandbox", sl_box_name(op->box), "mode",
				     sl_box_audit(op->box) ? "audit" : "enforce", "policy", text);
		op->status = op->body ? 200 : 500;
		if (!op->body)
			snprintf(op->err, sizeof(op->err), "out of memory");
		free(text);
	}
	op_answer(op);
}

/* GET /v1/sandboxes/NAME/suggest[?collapse=N]: {"sandbox", "mode", "policy": TEXT} */
static void handle_suggest(struct ctl_conn *c, const char *name, const char *query)
{
	unsigned long collapse = 0;
	const char *q = query ? strstr(query, "collapse=") : NULL;
	struct box_op *op = op_new(c, name);

	if (!op)
		return;
	if (q) {
		char *end;

		collapse = strtoul(q + 9, &end, 10);
		if (end == q + 9 || (*end && *end != '&') || collapse > 1000000) {
			ctl_respond_error(c, 400, "collapse takes a number of names (0: never)");
			op_free(op);
			return;
		}
	}
	op->n = collapse;
	op_start(c, op, run_suggest);
}

static void run_reload(struct box_op *op)
{
	int e = sl_sandbox_reload(op->reg, op->box, op->policy_file, op->policy, op->policy_len,
				  op->who, switched, op, op->err, sizeof(op->err));

	if (e) {
		sl_info("sandbox %s: policy reload refused: %s", sl_box_name(op->box), op->err);
		switched(op, NULL, e, op->err, NULL);
	}
}

/* PUT /v1/sandboxes/NAME/policy {"policy": TEXT, "policy_file": PATH} */
static void handle_reload(struct ctl_conn *c, const char *method, const char *name)
{
	const char *policy = NULL, *policy_file = NULL;
	size_t policy_len = 0;
	struct box_op *op;
	char err[512];
	json_error_t jerr;
	json_t *j;

	op = op_new(c, name);
	if (!op)
		return;
	if (strcmp(method, "PUT")) {
		ctl_respond_error(c, 405, "use PUT on /v1/sandboxes/NAME/policy");
		op_free(op);
		return;
	}
	j = json_loadb(sl_buf_head(&c->body), sl_buf_size(&c->body), 0, &jerr);
	if (!j || json_unpack_ex(j, &jerr, JSON_STRICT, "{s:s%, s?s}", "policy", &policy,
				 &policy_len, "policy_file", &policy_file)) {
		snprintf(err, sizeof(err), "bad request: %s (want {\"policy\": TEXT})", jerr.text);
		ctl_respond_error(c, 400, err);
		json_decref(j);
		op_free(op);
		return;
	}
	op->policy = malloc(policy_len + 1);
	if (op->policy) {
		memcpy(op->policy, policy, policy_len);
		op->policy[policy_len] = 0;
		op->policy_len = policy_len;
	}
	if (!op->policy || (policy_file && !(op->policy_file = strdup(policy_file)))) {
		ctl_respond_error(c, 500, "out of memory");
		json_decref(j);
		op_free(op);
		return;
	}
	json_decref(j);
	op_start(c, op, run_reload);
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

/* The sandbox's detail written (on the worker, from its jobs thread's completion). */
static void shown(void *arg, char *text, size_t len)
{
	struct box_op *op = arg;

	op->text = text;
	op->len = len;
	op->status = text ? 200 : 500;
	if (!text)
		snprintf(op->err, sizeof(op->err), "out of memory");
	op_answer(op);
}

/* The rules of a big policy are long to write: a job writes them, not the worker's loop. */
static void run_show(struct box_op *op)
{
	if (sl_sandbox_json_async(op->reg, op->box, JSON_COMPACT | JSON_PRESERVE_ORDER, shown, op))
		shown(op, NULL, 0);
}

static void handle_show(struct ctl_conn *c, const char *name)
{
	struct box_op *op = op_new(c, name);

	if (op)
		op_start(c, op, run_show);
}

/* The answer of DELETE /v1/sandboxes/NAME, once its worker let go and it is gone. */
struct rm_wait {
	struct ctl_wait *w;
	char name[];
};

static void removed(void *arg, int e)
{
	struct rm_wait *a = arg;
	struct ctl_conn *c = ctl_wait_end(a->w);
	char err[SL_NAME_MAX + 128];

	if (c) {
		if (e == -ENOENT) {
			snprintf(err, sizeof(err), "no sandbox named '%s'", a->name);
			ctl_respond_error(c, 404, err);
		} else if (e) {
			snprintf(err, sizeof(err), "removing '%s' failed: %s", a->name,
				 strerror(-e));
			ctl_respond_error(c, 500, err);
		} else {
			ctl_respond_json(c, 200, json_pack("{s:s}", "removed", a->name));
		}
		ctl_wait_resume(c);
	}
	free(a);
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
	struct rm_wait *a;
	struct ctl_wait *w;
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
	a = calloc(1, sizeof(*a) + strlen(name) + 1);
	w = a ? ctl_wait_begin(c) : NULL;
	if (!w) {
		free(a);
		ctl_respond_error(c, 500, "out of memory");
		return;
	}
	a->w = w;
	memcpy(a->name, name, strlen(name) + 1);
	r = sl_sandbox_rm_async(c->ctl->d.reg, name, removed, a);
	if (r)
		removed(a, r);
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
