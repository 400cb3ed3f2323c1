/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The SNI check of checked passthrough, in the kernel, on the sandbox's own socket (README,
 * "Passthrough checked by name"; ARCHITECTURE.md, "A connection"). No second connection, no
 * proxy: the connection goes straight to its destination and the kernel holds its bytes until
 * it has read the first TLS record.
 *
 * 1. connect4/6 (sl_judge): a destination of verdict SL_VERDICT_SNI is allowed, and the socket
 *    gets an sl_sni_sk record in state PENDING (and SL_SD_SNI in its sl_sockdst).
 * 2. sockops, ACTIVE_ESTABLISHED_CB: a PENDING socket enters sl_sni_socks, the sockhash that
 *    carries the sk_msg program sl_sni_msg, so that from now on every sendmsg() runs it.
 * 3. sl_sni_msg: corks until the whole first record is there (at most 5 + 2^14 bytes), parses
 *    the ClientHello and finds its server name; refuses ECH, anything not a ClientHello, and a
 *    name that sl_sni_names does not grant at this sandbox, address and port; refuses as well
 *    if any byte was queued on the socket before the hello (write_seq != snd_una). Passed:
 *    the state becomes PASSED and the program is not run again for 4 GiB. Refused: the send
 *    fails with EACCES, the state becomes REFUSED, for good.
 * 4. cgroup_skb/egress (sl_egress): a packet WITH PAYLOAD of a socket whose state is not PASSED
 *    is dropped. That closes every way around sk_msg: Fast Open data in the SYN (it runs before
 *    the socket is in the sockhash), a thread that blocked in send() before the connection was
 *    established (it resumes inside the plain tcp_sendmsg), kTLS. Such bytes stay in the write
 *    queue, unsent, and since the check requires an empty queue (3.) the state can never become
 *    PASSED behind them: nothing queued before the hello ever leaves, retransmitted or not.
 *
 * Fails closed throughout: a socket that cannot get its record is denied at connect(), one that
 * cannot enter the sockhash stays PENDING (it can connect but never send), and a record the
 * parser cannot read is refused (the userspace parser is not a fallback).
 */
#ifndef SLUICE_SNI_H
#define SLUICE_SNI_H

#include "verdict.h"

#ifndef SK_DROP
#define SK_DROP 0
#define SK_PASS 1
#endif

#define SL_SNI_SOCKS_MAX 65536 /* checked sockets being established or open, all sandboxes */

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_sni_sk);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sni_sk SEC(".maps");

/* Sockets whose sendmsg() runs sl_sni_msg; sluiced attaches the program to this map. A socket
 * leaves it when it closes. Keyed by socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SL_SNI_SOCKS_MAX);
	__type(key, __u64);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sni_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_MAX_SNI_NAMES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_sni_key);
	__type(value, struct sl_sni_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sni_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_MAX_SANDBOXES);
	__type(key, __u32);
	__type(value, struct sl_sni_ctr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sni_ctr SEC(".maps");

static __always_inline void sl_sni_count(__u32 sandbox_id, __u32 ctr)
{
	struct sl_sni_ctr *c = bpf_map_lookup_elem(&sl_sni_ctr, &sandbox_id);

	if (c && ctr < SL_SNI_CTR_MAX)
		c->c[ctr]++;
}

/*
 * connect() of a TCP socket to a destination of verdict SL_VERDICT_SNI: the socket's record,
 * state PENDING. @addr is the destination as the packets carry it (v4-mapped as IPv4).
 * Returns 0 if it could not be made (the caller denies).
 */
static __always_inline int sl_sni_mark(struct bpf_sock_addr *ctx, __u32 sandbox_id, __u8 family,
				       const __u32 addr[4], __u16 port)
{
	struct sl_sni_sk *s;

	s = bpf_sk_storage_get(&sl_sni_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s)
		return 0;
	__builtin_memcpy(s->addr, addr, 16);
	s->sandbox_id = sandbox_id;
	s->port = port;
	s->family = family;
	s->state = SL_SNI_PENDING;
	return 1;
}

/* ACTIVE_ESTABLISHED_CB of a PENDING socket: into the sockhash of the sk_msg program. */
static __always_inline void sl_sni_established(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sl_sni_sk *s;
	__u64 cookie;

	if (!sk)
		return;
	s = bpf_sk_storage_get(&sl_sni_sk, sk, 0, 0);
	if (!s || s->state != SL_SNI_PENDING)
		return;
	cookie = bpf_get_socket_cookie(skops);
	if (bpf_sock_hash_update(skops, &sl_sni_socks, &cookie, BPF_NOEXIST))
		sl_sni_count(s->sandbox_id, SL_SNI_CTR_NOMAP); /* stays PENDING: mute */
}

/*
 * The record's body is copied out of the message into this per-CPU buffer before it is read:
 * every read is then buf[off & SL_SNI_OFF_MASK], in bounds by construction, so the parser has
 * no bounds branch per byte for the verifier to walk (packet access at variable offsets made
 * it exceed the verifier's budget). Lengths are checked against the record, not the buffer.
 */
#define SL_TLS_REC_MAX (1 << 14) /* TLSPlaintext.length at most 2^14 (RFC 8446 §5.1) */
#define SL_SNI_OFF_MASK (SL_TLS_REC_MAX - 1)
struct sl_sni_buf {
	__u8 b[SL_TLS_REC_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_sni_buf);
} sl_sni_rec SEC(".maps");

static __always_inline __u32 sl_sni_b(const __u8 *b, __u32 off)
{
	return b[off & SL_SNI_OFF_MASK];
}

static __always_inline __u32 sl_sni_b16(const __u8 *b, __u32 off)
{
	return sl_sni_b(b, off) << 8 | sl_sni_b(b, off + 1);
}

#define SL_SNI_MAX_EXTS 64 /* extensions walked; a ClientHello with more is refused */

/*
 * The state of the walks over the extensions and over the name, callbacks of bpf_loop(). It
 * lives in a map, not on the stack: the verifier does not track what a map value holds, so it
 * sees each callback converge at once instead of following the offsets' ranges iteration by
 * iteration (an open-coded walk, and a walk with its state on the stack, both exceeded its
 * budget of a million instructions). Per CPU: sk_msg runs with preemption off.
 */
struct sl_sni_walk {
	__u32 off; /* next extension */
	__u32 len; /* end of the ClientHello */
	__u32 sni; /* offset of the server_name extension's body, 0: none yet */
	__u32 slen; /* its length; then the name's */
	__u32 err; /* SL_SNIR_* */
	__u32 pad;
};

struct sl_sni_scratch {
	struct sl_sni_key key; /* the lookup key: too big for the stack next to the rest */
	struct sl_sni_walk w;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_sni_scratch);
} sl_sni_scratch SEC(".maps");

static long sl_sni_ext_cb(__u32 i, void *ctx)
{
	struct sl_sni_scratch *sc;
	struct sl_sni_walk *w;
	struct sl_sni_buf *b;
	__u32 zero = 0, type, elen;

	sc = bpf_map_lookup_elem(&sl_sni_scratch, &zero);
	b = bpf_map_lookup_elem(&sl_sni_rec, &zero);
	if (!sc || !b)
		return 1;
	w = &sc->w;
	if (w->off >= w->len)
		return 1;
	if (w->off + 4 > w->len) {
		w->err = SL_SNIR_MALFORMED;
		return 1;
	}
	type = sl_sni_b16(b->b, w->off);
	elen = sl_sni_b16(b->b, w->off + 2);
	if (w->off + 4 + elen > w->len) {
		w->err = SL_SNIR_MALFORMED;
		return 1;
	}
	if (type == 0xfe0d) {
		w->err = SL_SNIR_ECH;
		return 1;
	}
	if (type == 0) {
		if (w->sni) {
			w->err = SL_SNIR_MALFORMED; /* twice */
			return 1;
		}
		w->sni = w->off + 4;
		w->slen = elen;
	}
	w->off += 4 + elen;
	return 0;
}

static long sl_sni_name_cb(__u32 i, void *ctx)
{
	struct sl_sni_scratch *sc;
	struct sl_sni_buf *b;
	__u32 zero = 0, c;

	sc = bpf_map_lookup_elem(&sl_sni_scratch, &zero);
	b = bpf_map_lookup_elem(&sl_sni_rec, &zero);
	if (!sc || !b)
		return 1;
	c = sl_sni_b(b->b, sc->w.sni + i);
	if (c - 'A' < 26)
		c += 'a' - 'A';
	sc->key.name[i & (SL_SNI_NAME_MAX - 1)] = i < sc->w.slen ? (__u8)c : 0;
	return 0;
}

/*
 * Reads the ClientHello that is the whole body (@len bytes, the record header stripped) of
 * the first record, in @b, and writes its server name into the scratch key's name (lower
 * case, one trailing dot dropped, zero past its end). Returns 0 or an SL_SNIR_* reason.
 */
static __always_inline int sl_sni_parse(const __u8 *b, __u32 len, struct sl_sni_walk *w)
{
	__u32 off, l, sni, slen;

	/* Handshake header: type 1 (client_hello), 24-bit length, the whole of the record (a
	 * hello split over records is refused, as sl_tls_parse_client_hello does). */
	if (sl_sni_b(b, 0) != 1)
		return SL_SNIR_NOT_HELLO;
	if (sl_sni_b(b, 1) != 0 || sl_sni_b16(b, 2) + 4 != len)
		return SL_SNIR_MALFORMED;
	/* legacy_version (2), random (32), session id (at most 32). */
	off = 4 + 2 + 32;
	l = sl_sni_b(b, off);
	if (l > 32)
		return SL_SNIR_MALFORMED;
	off += 1 + l;
	if (off + 2 > len)
		return SL_SNIR_MALFORMED;
	l = sl_sni_b16(b, off); /* cipher suites */
	if (l < 2 || (l & 1))
		return SL_SNIR_MALFORMED;
	off += 2 + l;
	if (off + 1 > len)
		return SL_SNIR_MALFORMED;
	l = sl_sni_b(b, off); /* compression methods */
	if (l < 1)
		return SL_SNIR_MALFORMED;
	off += 1 + l;
	if (off == len)
		return SL_SNIR_NO_SNI; /* no extensions at all */
	if (off + 2 > len || off + 2 + sl_sni_b16(b, off) != len)
		return SL_SNIR_MALFORMED;
	w->off = off + 2;
	w->len = len;
	w->sni = w->slen = w->err = 0;
	bpf_loop(SL_SNI_MAX_EXTS, sl_sni_ext_cb, NULL, 0);
	if (w->err)
		return w->err;
	if (w->off < w->len)
		return SL_SNIR_MALFORMED; /* more extensions than we walk */
	sni = w->sni;
	slen = w->slen;
	if (!sni)
		return SL_SNIR_NO_SNI;
	/* ServerNameList of exactly one host_name (type 0), as tls_hello.c reads it. */
	if (slen < 5 || sl_sni_b16(b, sni) + 2 != slen || sl_sni_b(b, sni + 2) != 0)
		return SL_SNIR_MALFORMED;
	l = sl_sni_b16(b, sni + 3);
	if (l < 1 || l + 5 != slen)
		return SL_SNIR_MALFORMED;
	sni += 5;
	if (sl_sni_b(b, sni + l - 1) == '.')
		l--;
	if (l < 1 || l > SL_SNI_NAME_MAX - 1)
		return SL_SNIR_NAME;
	w->sni = sni;
	w->slen = l;
	bpf_loop(SL_SNI_NAME_MAX, sl_sni_name_cb, NULL, 0);
	return 0;
}

/* Whether @v grants @port now. */
static __always_inline int sl_sni_port_ok(const struct sl_sni_val *v, __u16 port, __u64 now_ns)
{
	__u32 i;

	for (i = 0; i < SL_SNI_RANGES; i++) {
		const struct sl_sni_range *r = &v->r[i];

		if (i >= v->n)
			break;
		if (port >= r->lo && port <= r->hi && (!r->expires_ns || r->expires_ns > now_ns))
			return 1;
	}
	return 0;
}

/*
 * The decision on a PENDING socket's first record: 0 pass, -1 not complete yet (corked; the
 * egress program holds whatever might leak meanwhile), or an SL_SNIR_* reason to refuse.
 */
static __always_inline int sl_sni_judge(struct sk_msg_md *msg, struct sl_sni_sk *s)
{
	struct bpf_sock *sk = msg->sk;
	struct sl_sni_scratch *sc;
	struct sl_sni_val *v;
	struct sl_sni_key *k;
	struct sl_sni_buf *b;
	struct tcp_sock *tp;
	__u32 zero = 0, rlen;
	void *data, *end;
	int r;

	/* Nothing may have been queued before this hello: Fast Open data, or bytes of a thread
	 * that was blocked in send() while the socket connected. Neither went out (the egress
	 * program dropped them); they must never go out behind an accepted hello. */
	if (!sk)
		return SL_SNIR_MALFORMED;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->write_seq != tp->snd_una)
		return SL_SNIR_EARLY;
	if (msg->size < 5) {
		bpf_msg_cork_bytes(msg, 5);
		return -1;
	}
	if (bpf_msg_pull_data(msg, 0, 5, 0))
		return SL_SNIR_MALFORMED;
	data = msg->data;
	end = msg->data_end;
	if (data + 5 > end)
		return SL_SNIR_MALFORMED;
	if (((__u8 *)data)[0] != 22 || ((__u8 *)data)[1] != 3)
		return SL_SNIR_NOT_HELLO;
	rlen = (__u32)((__u8 *)data)[3] << 8 | ((__u8 *)data)[4];
	if (rlen > SL_TLS_REC_MAX)
		return SL_SNIR_TOO_BIG;
	if (rlen < 4 + 2 + 32 + 1 + 2 + 2 + 1 + 1)
		return SL_SNIR_MALFORMED;
	rlen += 5;
	if (msg->size < rlen) {
		bpf_msg_cork_bytes(msg, rlen);
		return -1;
	}
	if (bpf_msg_pull_data(msg, 0, rlen, 0))
		return SL_SNIR_MALFORMED;
	sc = bpf_map_lookup_elem(&sl_sni_scratch, &zero);
	b = bpf_map_lookup_elem(&sl_sni_rec, &zero);
	if (!sc || !b)
		return SL_SNIR_MALFORMED;
	k = &sc->key;
	data = msg->data;
	end = msg->data_end;
	rlen -= 5;
	if (rlen > SL_TLS_REC_MAX || data + 5 + rlen > end)
		return SL_SNIR_MALFORMED;
	if (bpf_probe_read_kernel(b->b, rlen, data + 5))
		return SL_SNIR_MALFORMED;
	r = sl_sni_parse(b->b, rlen, &sc->w);
	if (r)
		return r;
	k->sandbox_id = s->sandbox_id;
	k->family = s->family;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	__builtin_memcpy(k->addr, s->addr, 16);
	v = bpf_map_lookup_elem(&sl_sni_names, k);
	if (!v || !sl_sni_port_ok(v, s->port, bpf_ktime_get_ns()))
		return SL_SNIR_NAME;
	return 0;
}

/* Whether the TCP segment at @l4off of @skb carries payload. */
static __always_inline int sl_tcp_has_payload(struct __sk_buff *skb, __u32 l4off)
{
	__u8 doff;

	if (bpf_skb_load_bytes(skb, l4off + 12, &doff, 1))
		return 1; /* cannot tell: treat as data */
	return skb->len > l4off + (__u32)(doff >> 4) * 4;
}

/* The egress guard of a checked socket: 0 to let the packet go on to the other checks, or
 * SL_DROP_SNI. Only data is held; the handshake, ACKs, FIN and RST go. */
static __always_inline int sl_sni_egress(struct __sk_buff *skb, struct bpf_sock *sk, __u32 l4off)
{
	struct sl_sni_sk *s = bpf_sk_storage_get(&sl_sni_sk, sk, 0, 0);

	if (s && s->state == SL_SNI_PASSED)
		return 0;
	return sl_tcp_has_payload(skb, l4off) ? SL_DROP_SNI : 0;
}

#endif /* SLUICE_SNI_H */
