// SPDX-License-Identifier: MIT
/*
 * The layout of every struct bpf/sluice.h shares with the kernel programs, pinned: the size
 * and the offset of each field. A field moved, resized or reordered fails the build here,
 * where libbpf would catch only a changed size, and only when a pinned map of the old layout
 * is reused. Change these numbers together with the BPF side, never alone: pinned maps and
 * state files of a running sluiced hold the old layout. Compiled into libsluice.a; no code.
 * Threading: none (compile-time checks only).
 */
#include <stddef.h>

#include <linux/types.h>

#include "sluice.h"

#define SL_ABI_SIZE(s, n) _Static_assert(sizeof(struct s) == (n), "bpf/sluice.h ABI: size of " #s)
#define SL_ABI_OFF(s, f, n) \
	_Static_assert(offsetof(struct s, f) == (n), "bpf/sluice.h ABI: offset of " #s "." #f)

SL_ABI_SIZE(sl_sandbox, 56);
SL_ABI_OFF(sl_sandbox, id, 0);
SL_ABI_OFF(sl_sandbox, flags, 4);
SL_ABI_OFF(sl_sandbox, dns_ip4, 8);
SL_ABI_OFF(sl_sandbox, proxy_ip4, 12);
SL_ABI_OFF(sl_sandbox, dns_ip6, 16);
SL_ABI_OFF(sl_sandbox, proxy_ip6, 32);
SL_ABI_OFF(sl_sandbox, dns_port, 48);
SL_ABI_OFF(sl_sandbox, proxy_port, 50);
SL_ABI_OFF(sl_sandbox, rules_id, 52);

SL_ABI_SIZE(sl_port_range, 16);
SL_ABI_OFF(sl_port_range, expires_ns, 0);
SL_ABI_OFF(sl_port_range, lo, 8);
SL_ABI_OFF(sl_port_range, hi, 10);
SL_ABI_OFF(sl_port_range, verdict, 12);
SL_ABI_OFF(sl_port_range, protos, 13);
SL_ABI_OFF(sl_port_range, pad, 14);

SL_ABI_SIZE(sl_rule, 264);
SL_ABI_OFF(sl_rule, n, 0);
SL_ABI_OFF(sl_rule, pad, 4);
SL_ABI_OFF(sl_rule, r, 8);

SL_ABI_SIZE(sl_key4, 12);
SL_ABI_OFF(sl_key4, prefixlen, 0);
SL_ABI_OFF(sl_key4, sandbox_id, 4);
SL_ABI_OFF(sl_key4, addr, 8);

SL_ABI_SIZE(sl_key6, 24);
SL_ABI_OFF(sl_key6, prefixlen, 0);
SL_ABI_OFF(sl_key6, sandbox_id, 4);
SL_ABI_OFF(sl_key6, addr, 8);

SL_ABI_SIZE(sl_sockorig, 64);
SL_ABI_OFF(sl_sockorig, orig_addr, 0);
SL_ABI_OFF(sl_sockorig, new_addr, 16);
SL_ABI_OFF(sl_sockorig, orig_port, 32);
SL_ABI_OFF(sl_sockorig, new_port, 34);
SL_ABI_OFF(sl_sockorig, family, 36);
SL_ABI_OFF(sl_sockorig, verdict, 37);
SL_ABI_OFF(sl_sockorig, flags, 38);
SL_ABI_OFF(sl_sockorig, pad, 39);
SL_ABI_OFF(sl_sockorig, sandbox_id, 40);
SL_ABI_OFF(sl_sockorig, pid, 44);
SL_ABI_OFF(sl_sockorig, comm, 48);

SL_ABI_SIZE(sl_conn_key, 32);
SL_ABI_OFF(sl_conn_key, netns_cookie, 0);
SL_ABI_OFF(sl_conn_key, addr, 8);
SL_ABI_OFF(sl_conn_key, port, 24);
SL_ABI_OFF(sl_conn_key, family, 26);
SL_ABI_OFF(sl_conn_key, pad, 27);

SL_ABI_SIZE(sl_accept_key, 24);
SL_ABI_OFF(sl_accept_key, addr, 0);
SL_ABI_OFF(sl_accept_key, port, 16);
SL_ABI_OFF(sl_accept_key, listener_port, 18);
SL_ABI_OFF(sl_accept_key, family, 20);
SL_ABI_OFF(sl_accept_key, pad, 21);

SL_ABI_SIZE(sl_proxied_rec, 72);
SL_ABI_OFF(sl_proxied_rec, o, 0);
SL_ABI_OFF(sl_proxied_rec, ts_ns, 64);

SL_ABI_SIZE(sl_sockdst, 40);
SL_ABI_OFF(sl_sockdst, conn_addr, 0);
SL_ABI_OFF(sl_sockdst, msg_addr, 16);
SL_ABI_OFF(sl_sockdst, conn_port, 32);
SL_ABI_OFF(sl_sockdst, msg_port, 34);
SL_ABI_OFF(sl_sockdst, conn_family, 36);
SL_ABI_OFF(sl_sockdst, msg_family, 37);
SL_ABI_OFF(sl_sockdst, flags, 38);
SL_ABI_OFF(sl_sockdst, pad, 39);

SL_ABI_SIZE(sl_listener_key, 20);
SL_ABI_OFF(sl_listener_key, addr, 0);
SL_ABI_OFF(sl_listener_key, port, 16);
SL_ABI_OFF(sl_listener_key, family, 18);
SL_ABI_OFF(sl_listener_key, proto, 19);

SL_ABI_SIZE(sl_counters, 128);
SL_ABI_OFF(sl_counters, c, 0);

SL_ABI_SIZE(sl_evlimit, 16);
SL_ABI_OFF(sl_evlimit, window_ns, 0);
SL_ABI_OFF(sl_evlimit, count, 8);

SL_ABI_SIZE(sl_event, 64);
SL_ABI_OFF(sl_event, ts_ns, 0);
SL_ABI_OFF(sl_event, cgroup_id, 8);
SL_ABI_OFF(sl_event, sandbox_id, 16);
SL_ABI_OFF(sl_event, pid, 20);
SL_ABI_OFF(sl_event, comm, 24);
SL_ABI_OFF(sl_event, addr, 40);
SL_ABI_OFF(sl_event, port, 56);
SL_ABI_OFF(sl_event, family, 58);
SL_ABI_OFF(sl_event, proto, 59);
SL_ABI_OFF(sl_event, kind, 60);
SL_ABI_OFF(sl_event, verdict, 61);
SL_ABI_OFF(sl_event, socktype, 62);
SL_ABI_OFF(sl_event, reason, 63);

SL_ABI_SIZE(sl_splice_end, 16);
SL_ABI_OFF(sl_splice_end, peer, 0);
SL_ABI_OFF(sl_splice_end, bytes, 8);

SL_ABI_SIZE(sl_unix_key, 116);
SL_ABI_OFF(sl_unix_key, sandbox_id, 0);
SL_ABI_OFF(sl_unix_key, len, 4);
SL_ABI_OFF(sl_unix_key, path, 8);

SL_ABI_SIZE(sl_event_unix, 176);
SL_ABI_OFF(sl_event_unix, ev, 0);
SL_ABI_OFF(sl_event_unix, path_len, 64);
SL_ABI_OFF(sl_event_unix, path, 68);

SL_ABI_SIZE(sl_audit_key, 24);
SL_ABI_OFF(sl_audit_key, sandbox_id, 0);
SL_ABI_OFF(sl_audit_key, port, 4);
SL_ABI_OFF(sl_audit_key, family, 6);
SL_ABI_OFF(sl_audit_key, proto, 7);
SL_ABI_OFF(sl_audit_key, addr, 8);

SL_ABI_SIZE(sl_audit_val, 24);
SL_ABI_OFF(sl_audit_val, count, 0);
SL_ABI_OFF(sl_audit_val, first_ns, 8);
SL_ABI_OFF(sl_audit_val, last_ns, 16);

SL_ABI_SIZE(sl_audit_ctr, 16);
SL_ABI_OFF(sl_audit_ctr, audited, 0);
SL_ABI_OFF(sl_audit_ctr, lost, 8);

SL_ABI_SIZE(sl_sni_sk, 24);
SL_ABI_OFF(sl_sni_sk, addr, 0);
SL_ABI_OFF(sl_sni_sk, sandbox_id, 16);
SL_ABI_OFF(sl_sni_sk, port, 20);
SL_ABI_OFF(sl_sni_sk, family, 22);
SL_ABI_OFF(sl_sni_sk, state, 23);

SL_ABI_SIZE(sl_sni_key, 280);
SL_ABI_OFF(sl_sni_key, sandbox_id, 0);
SL_ABI_OFF(sl_sni_key, family, 4);
SL_ABI_OFF(sl_sni_key, addr, 8);
SL_ABI_OFF(sl_sni_key, name, 24);

SL_ABI_SIZE(sl_sni_range, 16);
SL_ABI_OFF(sl_sni_range, expires_ns, 0);
SL_ABI_OFF(sl_sni_range, lo, 8);
SL_ABI_OFF(sl_sni_range, hi, 10);

SL_ABI_SIZE(sl_sni_val, 136);
SL_ABI_OFF(sl_sni_val, n, 0);
SL_ABI_OFF(sl_sni_val, r, 8);

SL_ABI_SIZE(sl_sni_ctr, 32);
