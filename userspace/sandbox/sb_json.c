// SPDX-License-Identifier: MIT
/*
 * A sandbox described as JSON for the control API.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernel/bpf_loader.h"
#include "tls/ca.h"
#include "kernel/cgroup.h"
#include "dns/dns.h"
#include "core/events.h"
#include "proxy/proxy.h"
#include "kernel/sockdiag.h"
#include "core/log.h"
#include "core/loop.h"
#include "lua/lua_host.h"
#include "kernel/netns.h"
#include "sandbox/sandbox.h"
#include "sandbox/sb_int.h"

/* One rule as {"dst", "ports", "proto", "verdict"}. */
static json_t *rule_json(const struct sl_addr_rule *ru)
{
	static const char *const verdicts[] = { "deny", "allow", "proxy", "dns", "audit", "sni" };
	char dst[64], ports[16];

	sl_prefix_str(ru->family, ru->addr, ru->plen, dst, sizeof(dst));
	if (ru->port_lo == 0 && ru->port_hi == 65535)
		snprintf(ports, sizeof(ports), "any");
	else if (ru->port_lo == ru->port_hi)
		snprintf(ports, sizeof(ports), "%u", ru->port_lo);
	else
		snprintf(ports, sizeof(ports), "%u-%u", ru->port_lo, ru->port_hi);
	return json_pack("{s:s, s:s, s:s, s:s}", "dst", dst, "ports", ports, "proto",
			 ru->protos == SL_PROTO_ANY ? "tcp,udp" :
			 ru->protos == SL_PROTO_TCP ? "tcp" :
						      "udp",
			 "verdict", verdicts[ru->verdict <= SL_VERDICT_SNI ? ru->verdict : 0]);
}

/* The static rules of layer @l (any thread: the layer is immutable). */
static json_t *rules_json(const struct sl_layer *l)
{
	json_t *arr = json_array();

	for (size_t i = 0; l && i < l->rules.n; i++)
		json_array_append_new(arr, rule_json(&l->rules.v[i]));
	return arr;
}

/* The egress.unix addresses in force, as the policy writes them. */
static json_t *unix_json(const struct sl_box *box)
{
	json_t *arr = json_array();

	for (size_t i = 0; sb_policy(box) && i < sb_policy(box)->unix_socks.n; i++) {
		char s[SL_UNIX_PATH_MAX * 4 + 2];

		sl_unix_str(&sb_policy(box)->unix_socks.v[i], s, sizeof(s));
		json_array_append_new(arr, json_string(s));
	}
	return arr;
}

/* The resolved names of @box, each with its installed addresses and their expiry. */
static json_t *names_json(const struct sl_box *box)
{
	json_t *byname = json_object(), *arr = json_array(), *v;
	uint64_t now = sl_now_ns();
	const char *k;

	for (size_t i = 0; i < box->learned.rules.n; i++) {
		const struct sl_addr_rule *ru = &box->learned.rules.v[i];
		const char *name = box->learned.names[i][0] ? box->learned.names[i] :
							      "(resolved before a restart)";
		json_t *addrs = json_object_get(byname, name), *x = rule_json(ru);

		if (!addrs) {
			addrs = json_array();
			json_object_set_new(byname, name, addrs);
		}
		json_object_set_new(
			x, "expires_in_s",
			json_integer(ru->expires_ns > now ?
					     (json_int_t)((ru->expires_ns - now + 999999999ULL) /
							  1000000000ULL) :
					     0));
		json_array_append_new(addrs, x);
	}
	json_object_foreach(byname, k, v)
		json_array_append_new(arr, json_pack("{s:s, s:O}", "name", k, "addresses", v));
	json_decref(byname);
	return arr;
}

static json_t *dns_json(const struct sl_box *box)
{
	const struct sl_dns_stats *st;

	if (!box->dns)
		return json_null();
	st = sl_dns_listener_stats(box->dns);
	return json_pack("{s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I}}", "port",
			 (int)box->dns_port, "queries", "allowed", (json_int_t)st->allowed,
			 "cached", (json_int_t)st->cached, "denied", (json_int_t)st->denied,
			 "nodata", (json_int_t)st->nodata, "formerr", (json_int_t)st->formerr,
			 "refused", (json_int_t)st->refused, "servfail", (json_int_t)st->servfail,
			 "addresses", "installed", (json_int_t)st->installed, "blocked",
			 (json_int_t)st->blocked);
}

static json_t *proxy_json(const struct sl_box *box)
{
	const struct sl_proxy_stats *st;

	if (!box->proxy)
		return json_null();
	st = sl_proxy_listener_stats(box->proxy);
	return json_pack("{s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, "
			 "s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I}}",
			 "port", (int)box->proxy_port, "connections", "accepted",
			 (json_int_t)st->conns, "active", (json_int_t)st->active, "unredirected",
			 (json_int_t)st->unredirected, "never_accepted",
			 (json_int_t)box->proxied_swept, "refused", (json_int_t)st->refused,
			 "tls_failed", (json_int_t)st->tls_failed, "tls_resumed",
			 (json_int_t)st->tls_resumed, "passthrough", (json_int_t)st->spliced,
			 "passthrough_kernel", (json_int_t)st->spliced_kernel,
			 "passthrough_relayed", (json_int_t)st->spliced_user, "requests",
			 "forwarded", (json_int_t)st->requests, "reused", (json_int_t)st->reused,
			 "rejected", (json_int_t)st->rejected, "upstream_errors",
			 (json_int_t)st->upstream_errors, "http2", "connections",
			 (json_int_t)st->h2_conns, "active", (json_int_t)st->h2_active, "streams",
			 (json_int_t)st->h2_streams, "streams_refused", (json_int_t)st->h2_refused,
			 "floods", (json_int_t)st->h2_floods);
}

/* The JSON of @box; with @detail, its rules too unless @no_rules (then an empty array in
 * their place, for a job to fill). */
static json_t *box_json(struct sl_registry *r, const struct sl_box *box, int detail, int no_rules)
{
	json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "name", box->name, "id",
			      (json_int_t)box->id, "cgroup", box->cgroup, "policy",
			      box->policy_path, "created", (json_int_t)box->created_s);
	struct sl_counters c;

	if (!j)
		return j;
	json_object_set_new(j, "handler",
			    box->layer->handler[0] ? json_string(box->layer->handler) :
						     json_null());
	json_object_set_new(j, "mode", json_string(box->audit ? "audit" : "enforce"));
	if (box->w)
		json_object_set_new(j, "worker", json_integer(box->w->index));
	json_object_set_new(j, "listeners",
			    box->listeners == SB_SHARED ? json_string("shared") :
			    box->listeners == SB_OWN	? json_string("own") :
							  json_null());
	json_object_set_new(j, "netns", box->netns_fd >= 0 ? json_string(box->netns) : json_null());
	if (box->netns_fd >= 0)
		json_object_set_new(j, "netns_inode", json_integer((json_int_t)box->netns_ino));
	if (box->container_id[0])
		json_object_set_new(j, "container_id", json_string(box->container_id));
	if (!detail)
		return j;
	if (box->layer->handler[0]) {
		json_t *p = box->layer->params ? json_loads(box->layer->params, 0, NULL) : NULL;

		json_object_set_new(j, "params", p ? p : json_object());
		json_object_set_new(j, "handler_since", json_integer(box->handler_since_s));
	}
	json_object_set_new(j, "switches", json_integer(box->switches));
	if (box->mode_since_s)
		json_object_set_new(j, "mode_since", json_integer(box->mode_since_s));
	if (box->audit) {
		struct sl_audit_ctr a;
		uint64_t requests = 0, refused = 0;

		/* What the proxy saw: intercepted requests and how many a handler refused (audit
		 * mode let them go on). */
		for (size_t i = 0; i < box->obs.nhttp; i++) {
			requests += box->obs.http[i].count;
			refused += box->obs.http[i].refused;
		}
		if (!sl_bpf_read_audit_ctr(r->bpf, box->id, &a))
			json_object_set_new(
				j, "audit",
				json_pack("{s:I, s:I, s:I, s:I, s:I}", "audited",
					  (json_int_t)a.audited, "lost", (json_int_t)a.lost,
					  "requests", (json_int_t)requests, "requests_refused",
					  (json_int_t)refused, "records_lost",
					  (json_int_t)(box->obs.names_lost + box->obs.http_lost)));
	}
	json_object_set_new(j, "rules", no_rules ? json_array() : rules_json(box->layer));
	json_object_set_new(j, "unix", unix_json(box));
	json_object_set_new(j, "names", names_json(box));
	json_object_set_new(j, "dns", dns_json(box));
	json_object_set_new(j, "proxy", proxy_json(box));
	if (!sl_bpf_read_counters(r->bpf, box->id, &c))
		json_object_set_new(
			j, "counters",
			json_pack(
				"{s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I}, "
				"s:{s:I}, s:{s:I, s:I, s:I}}",
				"allowed", "tcp", (json_int_t)c.c[SL_CTR_ALLOW_TCP], "udp",
				(json_int_t)c.c[SL_CTR_ALLOW_UDP], "unix",
				(json_int_t)c.c[SL_CTR_ALLOW_UNIX], "denied", "tcp",
				(json_int_t)c.c[SL_CTR_DENY_TCP], "udp",
				(json_int_t)c.c[SL_CTR_DENY_UDP], "unix",
				(json_int_t)c.c[SL_CTR_DENY_UNIX], "socket",
				(json_int_t)c.c[SL_CTR_DENY_SOCKET], "setsockopt",
				(json_int_t)c.c[SL_CTR_DENY_SOCKOPT], "bind",
				(json_int_t)c.c[SL_CTR_DENY_BIND], "egress_packets",
				(json_int_t)c.c[SL_CTR_DROP_EGRESS], "dns", "tcp",
				(json_int_t)c.c[SL_CTR_DNS_TCP], "udp",
				(json_int_t)c.c[SL_CTR_DNS_UDP], "proxied", "tcp",
				(json_int_t)c.c[SL_CTR_PROXY_TCP], "events", "sent",
				(json_int_t)c.c[SL_CTR_EV_SENT], "rate_limited",
				(json_int_t)c.c[SL_CTR_EV_LIMITED], "lost",
				(json_int_t)c.c[SL_CTR_EV_LOST]));
	return j;
}

json_t *sl_sandbox_json(struct sl_registry *r, const struct sl_box *box, int detail)
{
	return box_json(r, box, detail, 0);
}

/* A GET's JSON under way: the sandbox's view built on the loop without its rules, and the
 * layer whose rules the job writes into it before writing it all as text. */
struct sb_showing {
	struct sl_job job;
	json_t *j; /* the job's from submit to done */
	struct sl_box *box; /* its removal waits for this (box->jobs) */
	struct sl_layer *layer; /* a reference, taken and dropped on the loop */
	size_t flags;
	char *text;
	size_t len;
	sl_box_json_fn *done;
	void *arg;
};

/* The jobs thread: the rules and the text (their length grows with the policy). */
static void showing_run(struct sl_job *job)
{
	struct sb_showing *s = sl_container_of(job, struct sb_showing, job);
	char *t;

	json_object_set_new(s->j, "rules", rules_json(s->layer)); /* in the placeholder's place */
	t = json_dumps(s->j, s->flags);
	json_decref(s->j);
	s->j = NULL;
	if (!t)
		return;
	s->len = strlen(t);
	s->text = realloc(t, s->len + 2);
	if (!s->text) {
		free(t);
		return;
	}
	s->text[s->len++] = '\n';
	s->text[s->len] = 0;
}

static void showing_done(struct sl_job *job)
{
	struct sb_showing *s = sl_container_of(job, struct sb_showing, job);

	struct sl_box *box = s->box;

	json_decref(s->j); /* not run (cancelled) */
	sb_layer_unref(s->layer);
	s->done(s->arg, s->text, s->text ? s->len : 0);
	free(s);
	sb_box_job_end(box);
}

int sl_sandbox_json_async(struct sl_registry *r, struct sl_box *box, size_t flags,
			  sl_box_json_fn *done, void *arg)
{
	struct sb_showing *s = calloc(1, sizeof(*s));
	struct sl_jobs *jobs;

	if (!s || !(s->j = box_json(r, box, 1, 1))) {
		free(s);
		return -ENOMEM;
	}
	s->box = box;
	box->jobs++;
	s->layer = sb_layer_ref(box->layer);
	s->flags = flags;
	s->done = done;
	s->arg = arg;
	s->job.run = showing_run;
	s->job.done = showing_done;
	jobs = sb_worker_jobs(box->w);
	if (jobs) {
		sl_jobs_submit(jobs, &s->job);
		return 0;
	}
	showing_run(&s->job);
	showing_done(&s->job);
	return 0;
}
