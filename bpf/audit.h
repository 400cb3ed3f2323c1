/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Audit mode (SL_SB_AUDIT): a call the rules deny is allowed, counted in sl_audit (or
 * sl_audit_unix) under its destination, and reported by a rate-limited event of verdict
 * SL_VERDICT_AUDIT. The aggregate is exact whatever the event rate: it is what `sluice policy
 * suggest` reads. Included by sluice.bpf.c after verdict.h; nothing here runs for a sandbox in
 * enforce mode beyond the test of its flag.
 */
#ifndef SLUICE_AUDIT_H
#define SLUICE_AUDIT_H

#include "verdict.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_AUDIT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_audit_key);
	__type(value, struct sl_audit_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_audit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_AUDIT_UNIX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_unix_key);
	__type(value, struct sl_audit_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_audit_unix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32);
	__type(value, struct sl_audit_ctr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_auditn SEC(".maps");

/* Whether the sandbox entry @sb is in audit mode. */
static __always_inline int sl_audit_mode(const struct sl_sandbox *sb)
{
	return sb && (sb->flags & SL_SB_AUDIT);
}

/* Counts one observation into @map under @key: a new record, or the existing one's count and
 * last time (first writer wins a race to create; the loser adds to the winner's). */
static __always_inline void sl_audit_count(void *map, const void *key, __u32 sandbox_id,
					   __u64 now_ns)
{
	struct sl_audit_ctr *c = bpf_map_lookup_elem(&sl_auditn, &sandbox_id);
	struct sl_audit_val *v, nv;

	if (c)
		c->audited++;
	v = bpf_map_lookup_elem(map, key);
	if (!v) {
		nv.count = 1;
		nv.first_ns = now_ns;
		nv.last_ns = now_ns;
		if (!bpf_map_update_elem(map, key, &nv, BPF_NOEXIST))
			return;
		v = bpf_map_lookup_elem(map, key);
		if (!v) {
			if (c)
				c->lost++;
			return;
		}
	}
	__sync_fetch_and_add(&v->count, 1);
	v->last_ns = now_ns;
}

/* A rate-limited audit event: the deny event's record, verdict SL_VERDICT_AUDIT. */
static __always_inline void sl_audit_event(__u32 sandbox_id, __u64 cgid, __u8 kind, __u8 family,
					   const void *addr, __u16 port, __u8 proto, __u8 socktype,
					   __u64 now_ns)
{
	struct sl_event *ev = sl_event_start(sandbox_id, cgid, kind, family, SL_VERDICT_AUDIT,
					     socktype, sizeof(*ev), 1, now_ns);

	if (!ev)
		return;
	__builtin_memcpy(ev->addr, addr, 16);
	ev->port = port;
	ev->proto = proto;
	sl_event_submit(sandbox_id, ev);
}

/*
 * Records a connect()/sendmsg() of sandbox @sandbox_id to @addr (network order, IPv4 in addr[0];
 * v4-mapped IPv6 when @mapped) that the rules deny and audit mode allows.
 */
static __always_inline void sl_audit_note(__u32 sandbox_id, __u64 cgid, __u8 kind, __u8 family,
					  const __u32 addr[4], int mapped, __u16 port,
					  __u32 protocol, __u32 socktype, __u64 now_ns)
{
	struct sl_audit_key k = {};

	k.sandbox_id = sandbox_id;
	k.port = port;
	k.proto = (__u8)protocol;
	if (family == AF_INET || mapped) {
		k.family = AF_INET;
		__builtin_memcpy(k.addr, family == AF_INET ? &addr[0] : &addr[3], 4);
	} else {
		k.family = AF_INET6;
		__builtin_memcpy(k.addr, addr, 16);
	}
	sl_audit_count(&sl_audit, &k, sandbox_id, now_ns);
	sl_audit_event(sandbox_id, cgid, kind, family, addr, port, (__u8)protocol, (__u8)socktype,
		       now_ns);
}

#endif /* SLUICE_AUDIT_H */
