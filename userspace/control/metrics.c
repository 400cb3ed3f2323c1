// SPDX-License-Identifier: MIT
/* /v1/metrics: the Prometheus text of every sandbox's counters. */
#include <stdint.h>
#include <stdio.h>

#include "control/ctl_int.h"
#include "dns/dns.h"
#include "kernel/bpf_loader.h"
#include "proxy/proxy.h"
#include "sandbox/sandbox.h"
#include "tls/ca.h"

static void metric_sandbox(struct sl_buf *m, const char *metric, const struct sl_box *b,
			   const char *labels, unsigned long long v)
{
	const char *name = sl_box_name(b);

	sl_buf_printf(m, "%s{sandbox=\"%s\"%s%s} %llu\n", metric, name, labels[0] ? "," : "",
		      labels, v);
}

static uint64_t leaf_evictions(struct sl_ca *ca)
{
	struct sl_ca_stats st = { 0 };

	if (ca)
		sl_ca_get_stats(ca, &st);
	return st.evictions;
}

/* Every bound of the daemon that was reached, per sandbox (README, Reliability), and the
 * gauges that show how close the others are. */
static void metrics_limits(struct sl_buf *m, struct sl_registry *reg, struct sl_bpf *bpf,
			   unsigned long long events_dropped)
{
	sl_buf_printf(m, "# HELP sluice_limits_reached_total Requests, connections and queries "
			 "refused because a bound was reached.\n"
			 "# TYPE sluice_limits_reached_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *p = sl_box_proxy_stats(b);
		const struct sl_dns_stats *d = sl_box_dns_stats(b);
		uint64_t pxfull = 0;
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "limit=\"proxied\"",
			  sl_bpf_read_proxied_full(bpf, sl_box_id(b), &pxfull) ? 0 : pxfull },
			{ "limit=\"http_conns\"", p ? p->limit_conns : 0 },
			{ "limit=\"http_conns_total\"", p ? p->limit_conns_total : 0 },
			{ "limit=\"fds\"", p ? p->limit_fds : 0 },
			{ "limit=\"http_head\"", p ? p->limit_head : 0 },
			{ "limit=\"req_body\"", p ? p->limit_req_body : 0 },
			{ "limit=\"resp_body\"", p ? p->limit_resp_body : 0 },
			{ "limit=\"body_budget\"", p ? p->limit_body_budget : 0 },
			{ "limit=\"lua_memory\"", p ? p->limit_lua_mem : 0 },
			{ "limit=\"lua_instructions\"", p ? p->limit_lua_insns : 0 },
			{ "limit=\"upstream_pool\"", p ? p->pool_full : 0 },
			{ "limit=\"dns_pending\"", d ? d->limit_pending : 0 },
			{ "limit=\"dns_tcp\"", d ? d->limit_tcp : 0 },
			{ "limit=\"dns_tcp_unread\"", d ? d->limit_tcp_out : 0 },
			{ "limit=\"dns_learned\"", d ? d->limit_learned : 0 },
			{ "limit=\"kernel_rules\"", d ? d->limit_kernel_rules : 0 },
			{ "limit=\"leaf_cache\"", leaf_evictions(sl_box_ca(b)) },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(m, "sluice_limits_reached_total", b, q[i].labels,
				       q[i].v);
	}
	sl_buf_printf(m, "# HELP sluice_http_connections_active Intercepted connections open "
			 "now.\n# TYPE sluice_http_connections_active gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_http_connections_active", b, "",
			       sl_box_proxy_stats(b) ? sl_box_proxy_stats(b)->active : 0);
	sl_buf_printf(m, "# HELP sluice_lua_memory_bytes Memory of each sandbox's Lua state.\n"
			 "# TYPE sluice_lua_memory_bytes gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_lua_memory_bytes", b, "",
			       sl_box_lua_mem(b));
	sl_buf_printf(m, "# HELP sluice_sandbox_audit_mode 1 if the sandbox is in audit mode "
			 "(nothing its rules deny is refused), 0 in enforce mode.\n"
			 "# TYPE sluice_sandbox_audit_mode gauge\n");
	sl_registry_foreach(b, reg)
		metric_sandbox(m, "sluice_sandbox_audit_mode", b, "", (uint64_t)sl_box_audit(b));
	sl_buf_printf(m, "# HELP sluice_audited_total connect(), sendmsg() and UNIX socket calls "
			 "the rules deny that audit mode let through (outcome lost: not recorded, "
			 "the audit map was full).\n"
			 "# TYPE sluice_audited_total counter\n");
	sl_registry_foreach(b, reg) {
		struct sl_audit_ctr a;

		if (sl_bpf_read_audit_ctr(bpf, sl_box_id(b), &a))
			continue;
		metric_sandbox(m, "sluice_audited_total", b, "outcome=\"recorded\"",
			       a.audited - a.lost);
		metric_sandbox(m, "sluice_audited_total", b, "outcome=\"lost\"", a.lost);
	}
	sl_buf_printf(m, "# HELP sluice_events_dropped_total Event lines a follower (GET "
			 "/v1/events?follow=1) lost because it did not keep up.\n"
			 "# TYPE sluice_events_dropped_total counter\n"
			 "sluice_events_dropped_total %llu\n", events_dropped);
}

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
	struct sl_buf m = { 0 };
	struct sl_counters cnt, unknown;

	sl_buf_printf(&m, "# HELP sluice_sandboxes Sandboxes managed by this sluiced.\n"
			  "# TYPE sluice_sandboxes gauge\nsluice_sandboxes %zu\n",
		      sl_registry_count(reg));
	sl_buf_printf(&m, "# HELP sluice_connections_total connect() and sendmsg() calls "
			  "judged in the kernel (proto unix: UNIX sockets).\n# TYPE sluice_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		if (sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			continue;
		for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++)
			metric_sandbox(&m, "sluice_connections_total", b, conns[i].labels,
				       cnt.c[conns[i].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_sockets_denied_total socket() calls refused in the "
			  "kernel (raw, SCTP, ICMP, ...).\n"
			  "# TYPE sluice_sockets_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_sockets_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_SOCKET]);
	sl_buf_printf(&m, "# HELP sluice_sockopts_denied_total setsockopt() calls refused in the "
			  "kernel (routing header, IPv4 options).\n"
			  "# TYPE sluice_sockopts_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_sockopts_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_SOCKOPT]);
	sl_buf_printf(&m, "# HELP sluice_binds_denied_total bind() calls refused in the kernel "
			  "(a port of sluiced's listeners).\n"
			  "# TYPE sluice_binds_denied_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_binds_denied_total", b, "",
				       cnt.c[SL_CTR_DENY_BIND]);
	sl_buf_printf(&m, "# HELP sluice_egress_dropped_total Packets dropped by the egress "
			  "program (IP options, routing header, destination not the one "
			  "decided).\n# TYPE sluice_egress_dropped_total counter\n");
	sl_registry_foreach(b, reg)
		if (!sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			metric_sandbox(&m, "sluice_egress_dropped_total", b, "",
				       cnt.c[SL_CTR_DROP_EGRESS]);
	sl_buf_printf(&m, "# HELP sluice_deny_events_total Deny events by outcome (the deny "
			  "itself is always counted above).\n"
			  "# TYPE sluice_deny_events_total counter\n");
	sl_registry_foreach(b, reg) {
		if (sl_bpf_read_counters(c->ctl->d.bpf, sl_box_id(b), &cnt))
			continue;
		for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
			metric_sandbox(&m, "sluice_deny_events_total", b, evs[i].labels,
				       cnt.c[evs[i].ctr]);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_queries_total DNS queries of sandboxes, by outcome.\n"
			  "# TYPE sluice_dns_queries_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_dns_stats *st = sl_box_dns_stats(b);
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "result=\"allowed\"", st ? st->allowed : 0 },
			{ "result=\"denied\"", st ? st->denied : 0 },
			{ "result=\"nodata\"", st ? st->nodata : 0 },
			{ "result=\"formerr\"", st ? st->formerr : 0 },
			{ "result=\"refused\"", st ? st->refused : 0 },
			{ "result=\"servfail\"", st ? st->servfail : 0 },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_dns_queries_total", b, q[i].labels, q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_dns_addresses_total Addresses of DNS answers: installed "
			  "in the kernel, or blocked by the rebinding guard.\n"
			  "# TYPE sluice_dns_addresses_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_dns_stats *st = sl_box_dns_stats(b);

		metric_sandbox(&m, "sluice_dns_addresses_total", b, "outcome=\"installed\"",
			       st ? st->installed : 0);
		metric_sandbox(&m, "sluice_dns_addresses_total", b, "outcome=\"blocked\"",
			       st ? st->blocked : 0);
	}
	sl_buf_printf(&m, "# HELP sluice_http_connections_total Connections to the intercepting "
			  "proxy, by outcome.\n# TYPE sluice_http_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);
		const struct {
			const char *labels;
			uint64_t v;
		} q[] = {
			{ "outcome=\"accepted\"", st ? st->conns : 0 },
			{ "outcome=\"unredirected\"", st ? st->unredirected : 0 },
			{ "outcome=\"refused\"", st ? st->refused : 0 },
			{ "outcome=\"tls_failed\"", st ? st->tls_failed : 0 },
			{ "outcome=\"passthrough\"", st ? st->spliced : 0 },
		};

		for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
			metric_sandbox(&m, "sluice_http_connections_total", b, q[i].labels,
				       q[i].v);
	}
	sl_buf_printf(&m, "# HELP sluice_passthrough_connections_total Passthrough TLS connections "
			  "whose server name the proxy checked, by who carried their bytes: the "
			  "kernel (sockhash splice) or sluiced (the splice failed).\n"
			  "# TYPE sluice_passthrough_connections_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);

		metric_sandbox(&m, "sluice_passthrough_connections_total", b,
			       "mode=\"kernel\"", st ? st->spliced_kernel : 0);
		metric_sandbox(&m, "sluice_passthrough_connections_total", b,
			       "mode=\"userspace\"", st ? st->spliced_user : 0);
	}
	sl_buf_printf(&m, "# HELP sluice_sni_checks_total Checked passthrough connections whose "
			  "first TLS record the kernel judged on the sandbox's own socket, by "
			  "outcome (unchecked: the socket could not enter the check's sockhash and "
			  "can send nothing).\n# TYPE sluice_sni_checks_total counter\n");
	sl_registry_foreach(b, reg) {
		struct sl_sni_ctr sc;

		if (sl_bpf_read_sni_counters(c->ctl->d.bpf, sl_box_id(b), &sc))
			continue;
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"passed\"",
			       sc.c[SL_SNI_CTR_PASSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"refused\"",
			       sc.c[SL_SNI_CTR_REFUSED]);
		metric_sandbox(&m, "sluice_sni_checks_total", b, "outcome=\"unchecked\"",
			       sc.c[SL_SNI_CTR_NOMAP]);
	}
	sl_buf_printf(&m, "# HELP sluice_http_requests_total Intercepted requests, by outcome.\n"
			  "# TYPE sluice_http_requests_total counter\n");
	sl_registry_foreach(b, reg) {
		const struct sl_proxy_stats *st = sl_box_proxy_stats(b);

		metric_sandbox(&m, "sluice_http_requests_total", b, "outcome=\"forwarded\"",
			       st ? st->requests : 0);
		metric_sandbox(&m, "sluice_http_requests_total", b, "outcome=\"rejected\"",
			       st ? st->rejected : 0);
		metric_sandbox(&m, "sluice_http_requests_total", b,
			       "outcome=\"upstream_error\"", st ? st->upstream_errors : 0);
	}
	if (!sl_bpf_read_counters(c->ctl->d.bpf, 0, &unknown))
		sl_buf_printf(&m, "# HELP sluice_unattributed_denied_total Operations denied "
				  "because their sandbox could not be determined.\n"
				  "# TYPE sluice_unattributed_denied_total counter\n"
				  "sluice_unattributed_denied_total %llu\n",
			      (unsigned long long)(unknown.c[SL_CTR_DENY_TCP] +
						   unknown.c[SL_CTR_DENY_UDP] +
						   unknown.c[SL_CTR_DENY_SOCKET] +
						   unknown.c[SL_CTR_DENY_UNIX] +
						   unknown.c[SL_CTR_DENY_SOCKOPT] +
						   unknown.c[SL_CTR_DENY_BIND] +
						   unknown.c[SL_CTR_DROP_EGRESS]));
	metrics_limits(&m, reg, c->ctl->d.bpf, c->ctl->events_dropped);
	ctl_respond_raw(c, 200, "text/plain; version=0.0.4", sl_buf_head(&m), sl_buf_size(&m));
	sl_buf_free(&m);
}

void ctl_route_metrics(struct ctl_conn *c, const struct ctl_req *rq)
{
	(void)rq;
	handle_metrics(c);
}
