// SPDX-License-Identifier: MIT
/*
 * /v1/metrics: the Prometheus text of every sandbox's figures. Each subsystem keeps its own
 * stats struct (proxy, DNS, kernel counters, the registry's): the registry copies them into
 * a struct sl_box_stats per sandbox and this file only formats them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "control/ctl_int.h"
#include "sandbox/sandbox.h"

/* One sandbox's figures, read once for every family below. */
struct snap {
	const char *name;
	struct sl_box_stats st;
};

/* One gather per worker (sl_registry_visit()): each sandbox's stats read on its worker. */
struct gather {
	struct sl_registry *reg;
	struct snap *sn;
};

static void gather_one(struct sl_box *box, size_t i, void *arg)
{
	struct gather *g = arg;

	g->sn[i].name = sl_box_name(box);
	sl_box_get_stats(g->reg, box, &g->sn[i].st);
}

static void metric_sandbox(struct sl_buf *m, const char *metric, const struct snap *s,
			   const char *labels, unsigned long long v)
{
	sl_buf_printf(m, "%s{sandbox=\"%s\"%s%s} %llu\n", metric, s->name, labels[0] ? "," : "",
		      labels, v);
}

/* Every bound of the daemon that was reached, per sandbox (README, Reliability), and the
 * gauges that show how close the others are. */
static void metrics_limits(struct sl_buf *m, const struct snap *sn, size_t n,
			   unsigned long long events_dropped)
{
	sl_buf_printf(m, "# HELP sluice_limits_reached_total Requests, connections and queries "
			 "refused because a bound was reached.\n"
			 "# TYPE sluice_limits_reached_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		const struct sl_proxy_stats *p = &s->st.proxy;
		const struct sl_dns_stats *d = &s->st.dns;
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "limit=\"proxied\"", s->st.proxied_full },
			{ "limit=\"http_conns\"", p->limit_conns },
			{ "limit=\"http_conns_total\"", p->limit_conns_total },
			{ "limit=\"fds\"", p->limit_fds },
			{ "limit=\"http_head\"", p->limit_head },
			{ "limit=\"req_body\"", p->limit_req_body },
			{ "limit=\"resp_body\"", p->limit_resp_body },
			{ "limit=\"body_budget\"", p->limit_body_budget },
			{ "limit=\"lua_memory\"", p->limit_lua_mem },
			{ "limit=\"lua_instructions\"", p->limit_lua_insns },
			{ "limit=\"upstream_pool\"", p->pool_full },
			{ "limit=\"dns_pending\"", d->limit_pending },
			{ "limit=\"dns_tcp\"", d->limit_tcp },
			{ "limit=\"dns_tcp_unread\"", d->limit_tcp_out },
			{ "limit=\"dns_learned\"", d->limit_learned },
			{ "limit=\"kernel_rules\"", d->limit_kernel_rules },
			{ "limit=\"leaf_cache\"", s->st.leaf_evictions },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(m, "sluice_limits_reached_total", s, q[i].labels, q[i].v);
	}
	sl_buf_printf(m, "# HELP sluice_http_connections_active Intercepted connections open "
			 "now.\n# TYPE sluice_http_connections_active gauge\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(m, "sluice_http_connections_active", s, "", s->st.proxy.active);
	sl_buf_printf(m, "# HELP sluice_lua_memory_bytes Memory of each sandbox's Lua state.\n"
			 "# TYPE sluice_lua_memory_bytes gauge\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(m, "sluice_lua_memory_bytes", s, "", s->st.lua_mem);
	sl_buf_printf(m, "# HELP sluice_sandbox_audit_mode 1 if the sandbox is in audit mode "
			 "(nothing its rules deny is refused), 0 in enforce mode.\n"
			 "# TYPE sluice_sandbox_audit_mode gauge\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(m, "sluice_sandbox_audit_mode", s, "", (uint64_t)s->st.audit);
	sl_buf_printf(m, "# HELP sluice_audited_total connect(), sendmsg() and UNIX socket calls "
			 "the rules deny that audit mode let through (outcome lost: not recorded, "
			 "the audit map was full).\n"
			 "# TYPE sluice_audited_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		if (!s->st.audited_ok)
			continue;
		metric_sandbox(m, "sluice_audited_total", s, "outcome=\"recorded\"",
			       s->st.audited.audited - s->st.audited.lost);
		metric_sandbox(m, "sluice_audited_total", s, "outcome=\"lost\"",
			       s->st.audited.lost);
	}
	sl_buf_printf(m,
		      "# HELP sluice_events_dropped_total Event lines a follower (GET "
		      "/v1/events?follow=1) lost because it did not keep up.\n"
		      "# TYPE sluice_events_dropped_total counter\n"
		      "sluice_events_dropped_total %llu\n",
		      events_dropped);
}

/* The families of the kernel's per-sandbox counters with one value each (no labels). */
static const struct {
	const char *metric, *help;
	int ctr;
} kernel_one[] = {
	{ "sluice_sockets_denied_total",
	  "socket() calls refused in the kernel (raw, SCTP, "
	  "ICMP, ...).",
	  SL_CTR_DENY_SOCKET },
	{ "sluice_sockopts_denied_total",
	  "setsockopt() calls refused in the kernel (routing "
	  "header, IPv4 options).",
	  SL_CTR_DENY_SOCKOPT },
	{ "sluice_binds_denied_total",
	  "bind() calls refused in the kernel (a port of sluiced's "
	  "listeners).",
	  SL_CTR_DENY_BIND },
	{ "sluice_egress_dropped_total",
	  "Packets dropped by the egress program (IP options, "
	  "routing header, destination not the one decided).",
	  SL_CTR_DROP_EGRESS },
};

static void handle_metrics(struct ctl_conn *c)
{
	static const struct {
		const char *labels;
		int ctr;
	} conns[] = {
		{ "verdict=\"allow\",proto=\"tcp\"", SL_CTR_ALLOW_TCP },
		{ "verdict=\"allow\",proto=\"udp\"", SL_CTR_ALLOW_UDP },
		{ "verdict=\"deny\",proto=\"tcp\"", SL_CTR_DENY_TCP },
		{ "verdict=\"deny\",proto=\"udp\"", SL_CTR_DENY_UDP },
		{ "verdict=\"allow\",proto=\"unix\"", SL_CTR_ALLOW_UNIX },
		{ "verdict=\"deny\",proto=\"unix\"", SL_CTR_DENY_UNIX },
	}, evs[] = {
		{ "outcome=\"sent\"", SL_CTR_EV_SENT },
		{ "outcome=\"rate_limited\"", SL_CTR_EV_LIMITED },
		{ "outcome=\"lost\"", SL_CTR_EV_LOST },
	};
	struct sl_registry *reg = c->ctl->d.reg;
	struct sl_registry_stats rs;
	struct sl_buf m = { 0 };
	struct snap *sn;
	size_t n = 0;

	sl_registry_get_stats(reg, &rs);
	sn = calloc(rs.sandboxes + 1, sizeof(*sn));
	if (!sn) {
		ctl_respond_error(c, 500, "out of memory");
		return;
	}
	{
		struct gather g = { reg, sn };

		sl_registry_visit(reg, gather_one, &g);
	}
	for (size_t i = 0; i < rs.sandboxes; i++) /* compact: removals under way left holes */
		if (sn[i].name)
			sn[n++] = sn[i];
	sl_buf_printf(&m,
		      "# HELP sluice_sandboxes Sandboxes managed by this sluiced.\n"
		      "# TYPE sluice_sandboxes gauge\nsluice_sandboxes %zu\n",
		      rs.sandboxes);
	sl_buf_printf(&m, "# HELP sluice_worker_sandboxes Sandboxes placed on each worker thread.\n"
			  "# TYPE sluice_worker_sandboxes gauge\n");
	for (unsigned w = 0; w < sl_registry_workers(reg); w++)
		sl_buf_printf(&m, "sluice_worker_sandboxes{worker=\"%u\"} %zu\n", w,
			      sl_registry_worker_count(reg, w));
	{
		unsigned used, max;

		sl_registry_own_listeners(reg, &used, &max);
		sl_buf_printf(
			&m,
			"# HELP sluice_own_listeners Sandboxes with DNS and proxy listeners of "
			"their own (used), and how many may have them (max, --own-listeners); "
			"the others share their worker's.\n# TYPE sluice_own_listeners gauge\n"
			"sluice_own_listeners{state=\"used\"} %u\n"
			"sluice_own_listeners{state=\"max\"} %u\n",
			used, max);
	}
	sl_buf_printf(
		&m,
		"# HELP sluice_connections_total connect() and sendmsg() calls "
		"judged in the kernel (proto unix: UNIX sockets).\n# TYPE sluice_connections_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		if (!s->st.kernel_ok)
			continue;
		for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++)
			metric_sandbox(&m, "sluice_connections_total", s, conns[i].labels,
				       s->st.kernel.c[conns[i].ctr]);
	}
	for (size_t k = 0; k < sizeof(kernel_one) / sizeof(kernel_one[0]); k++) {
		sl_buf_printf(&m, "# HELP %s %s\n# TYPE %s counter\n", kernel_one[k].metric,
			      kernel_one[k].help, kernel_one[k].metric);
		for (const struct snap *s = sn; s < sn + n; s++)
			if (s->st.kernel_ok)
				metric_sandbox(&m, kernel_one[k].metric, s, "",
					       s->st.kernel.c[kernel_one[k].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_deny_events_total Deny events by outcome (the deny "
			  "itself is always counted above).\n"
			  "# TYPE sluice_deny_events_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		if (!s->st.kernel_ok)
			continue;
		for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
			metric_sandbox(&m, "sluice_deny_events_total", s, evs[i].labels,
				       s->st.kernel.c[evs[i].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_queries_total DNS queries of sandboxes, by outcome.\n"
			  "# TYPE sluice_dns_queries_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		const struct sl_dns_stats *st = &s->st.dns;
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "result=\"allowed\"", st->allowed },
			{ "result=\"denied\"", st->denied },
			{ "result=\"nodata\"", st->nodata },
			{ "result=\"formerr\"", st->formerr },
			{ "result=\"refused\"", st->refused },
			{ "result=\"servfail\"", st->servfail },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_dns_queries_total", s, q[i].labels, q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_cache_hits_total Allowed DNS queries answered from "
			  "the answers kept for --dns-grace (counted in result=\"allowed\" too).\n"
			  "# TYPE sluice_dns_cache_hits_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(&m, "sluice_dns_cache_hits_total", s, "", s->st.dns.cached);
	sl_buf_printf(&m, "# HELP sluice_dns_addresses_total Addresses of DNS answers: installed "
			  "in the kernel, or blocked by the rebinding guard.\n"
			  "# TYPE sluice_dns_addresses_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		metric_sandbox(&m, "sluice_dns_addresses_total", s, "outcome=\"installed\"",
			       s->st.dns.installed);
		metric_sandbox(&m, "sluice_dns_addresses_total", s, "outcome=\"blocked\"",
			       s->st.dns.blocked);
	}
	sl_buf_printf(&m, "# HELP sluice_http_connections_total Connections to the intercepting "
			  "proxy, by outcome.\n# TYPE sluice_http_connections_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		const struct sl_proxy_stats *st = &s->st.proxy;
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "outcome=\"accepted\"", st->conns },
			{ "outcome=\"unredirected\"", st->unredirected },
			{ "outcome=\"refused\"", st->refused },
			{ "outcome=\"tls_failed\"", st->tls_failed },
			{ "outcome=\"passthrough\"", st->spliced },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_http_connections_total", s, q[i].labels, q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_tls_resumed_total Intercepted connections whose TLS "
			  "handshake with the sandbox resumed a session (a ticket of its sandbox), "
			  "of those accepted.\n# TYPE sluice_tls_resumed_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(&m, "sluice_tls_resumed_total", s, "", s->st.proxy.tls_resumed);
	sl_buf_printf(&m, "# HELP sluice_http2_connections_total Intercepted connections that "
			  "spoke HTTP/2, by outcome (floods: ended for a flood of resets, "
			  "frames or acks).\n# TYPE sluice_http2_connections_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		metric_sandbox(&m, "sluice_http2_connections_total", s, "outcome=\"accepted\"",
			       s->st.proxy.h2_conns);
		metric_sandbox(&m, "sluice_http2_connections_total", s, "outcome=\"flood\"",
			       s->st.proxy.h2_floods);
	}
	sl_buf_printf(&m, "# HELP sluice_http2_connections_active Intercepted HTTP/2 "
			  "connections open now.\n# TYPE sluice_http2_connections_active gauge\n");
	for (const struct snap *s = sn; s < sn + n; s++)
		metric_sandbox(&m, "sluice_http2_connections_active", s, "", s->st.proxy.h2_active);
	sl_buf_printf(&m, "# HELP sluice_http2_streams_total HTTP/2 streams, by outcome: an "
			  "exchange (a request), or refused alone (malformed, over a limit).\n"
			  "# TYPE sluice_http2_streams_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		metric_sandbox(&m, "sluice_http2_streams_total", s, "outcome=\"exchange\"",
			       s->st.proxy.h2_streams);
		metric_sandbox(&m, "sluice_http2_streams_total", s, "outcome=\"refused\"",
			       s->st.proxy.h2_refused);
	}
	sl_buf_printf(&m, "# HELP sluice_passthrough_connections_total Passthrough TLS connections "
			  "whose server name the proxy checked, by who carried their bytes: the "
			  "kernel (sockhash splice) or sluiced (the splice failed).\n"
			  "# TYPE sluice_passthrough_connections_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		metric_sandbox(&m, "sluice_passthrough_connections_total", s, "mode=\"kernel\"",
			       s->st.proxy.spliced_kernel);
		metric_sandbox(&m, "sluice_passthrough_connections_total", s, "mode=\"userspace\"",
			       s->st.proxy.spliced_user);
	}
	sl_buf_printf(&m, "# HELP sluice_sni_checks_total Checked passthrough connections whose "
			  "first TLS record the kernel judged on the sandbox's own socket, by "
			  "outcome (unchecked: the socket could not enter the check's sockhash and "
			  "can send nothing).\n# TYPE sluice_sni_checks_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		if (!s->st.sni_ok)
			continue;
		metric_sandbox(&m, "sluice_sni_checks_total", s, "outcome=\"passed\"",
			       s->st.sni.c[SL_SNI_CTR_PASSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", s, "outcome=\"refused\"",
			       s->st.sni.c[SL_SNI_CTR_REFUSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", s, "outcome=\"unchecked\"",
			       s->st.sni.c[SL_SNI_CTR_NOMAP]);
	}
	sl_buf_printf(&m, "# HELP sluice_http_requests_total Intercepted requests, by outcome.\n"
			  "# TYPE sluice_http_requests_total counter\n");
	for (const struct snap *s = sn; s < sn + n; s++) {
		const struct sl_proxy_stats *st = &s->st.proxy;

		metric_sandbox(&m, "sluice_http_requests_total", s, "outcome=\"forwarded\"",
			       st->requests);
		metric_sandbox(&m, "sluice_http_requests_total", s, "outcome=\"rejected\"",
			       st->rejected);
		metric_sandbox(&m, "sluice_http_requests_total", s, "outcome=\"upstream_error\"",
			       st->upstream_errors);
	}
	if (rs.unattributed_ok)
		sl_buf_printf(&m,
			      "# HELP sluice_unattributed_denied_total Operations denied "
			      "because their sandbox could not be determined.\n"
			      "# TYPE sluice_unattributed_denied_total counter\n"
			      "sluice_unattributed_denied_total %llu\n",
			      (unsigned long long)(rs.unattributed.c[SL_CTR_DENY_TCP] +
						   rs.unattributed.c[SL_CTR_DENY_UDP] +
						   rs.unattributed.c[SL_CTR_DENY_SOCKET] +
						   rs.unattributed.c[SL_CTR_DENY_UNIX] +
						   rs.unattributed.c[SL_CTR_DENY_SOCKOPT] +
						   rs.unattributed.c[SL_CTR_DENY_BIND] +
						   rs.unattributed.c[SL_CTR_DROP_EGRESS]));
	metrics_limits(&m, sn, n, c->ctl->events_dropped);
	free(sn);
	ctl_respond_raw(c, 200, "text/plain; version=0.0.4", sl_buf_head(&m), sl_buf_size(&m));
	sl_buf_free(&m);
}

void ctl_route_metrics(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_metrics(c);
}
