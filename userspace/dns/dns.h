/* SPDX-License-Identifier: MIT */
/*
 * The DNS proxy: one listener per sandbox, answering what the policy allows (see dns.c).
 *
 * Threading: a struct sl_dns and its listeners belong to the thread of the loop it was made
 * with (sluiced: one instance per worker, with its own upstream sockets, queries in flight
 * and cache), which runs every call and every sl_dns_ops callback; nothing blocks (upstream
 * queries are non-blocking, with a deadline), except sl_dns_listen() entering a network
 * namespace for its sockets.
 */
#ifndef SL_DNS_H
#define SL_DNS_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns/dns_msg.h"
#include "policy/policy.h"

struct sl_loop;
struct sl_events;
struct sl_bpf;
struct sl_kbatch;
struct sl_dns;
struct sl_dns_listener;

struct sl_dns_opts {
	struct sockaddr_storage upstream; /* where allowed names are resolved */
	socklen_t upstream_len; /* 0: no upstream, every allowed name gets SERVFAIL */
	unsigned timeout_ms; /* upstream answer deadline */
	uint32_t max_ttl_s; /* TTLs in answers are capped at this */
	/* How long an answer for an allowed name is served again from memory, at most (its
	 * smallest TTL bounds it too); 0: never. The caller passes --dns-grace, so that the
	 * kernel entries a cached answer names outlive it by the whole clamped TTL (dns.c). */
	unsigned cache_ms;
	/* The kernel maps the listeners' learn() writes (NULL: none): the answers of one
	 * wake-up write theirs together (struct sl_kbatch), then are released. */
	struct sl_bpf *bpf;
	/* Queries in flight upstream and TCP clients of all this instance's listeners together
	 * (0: SL_DNS_MAX_PENDING_TOTAL, SL_DNS_MAX_TCP_TOTAL). sluiced splits those over its
	 * workers, each of which has an instance of its own. */
	unsigned max_pending_total, max_tcp_total;
};

/* What a listener asks of the sandbox it serves. Loop thread only. */
struct sl_dns_ops {
	/* The sandbox's name, for events. */
	const char *(*name)(void *owner);
	/* The grants of the policy for @qname (0: the name is denied). */
	size_t (*grants)(void *owner, const char *qname, struct sl_grant *g, size_t max);
	/*
	 * Installs the addresses of @a (the answer for @qname) into the kernel, before the reply
	 * is released. Sets blocked[i] for each a->addr[i] that the policy refuses (rebinding
	 * guard): those are removed from the reply. Returns 0 or -errno (the reply becomes
	 * SERVFAIL: an answer whose addresses are not installed would only fail later):
	 * -EDQUOT when the sandbox holds too many resolutions, -ENOSPC when the kernel's rule
	 * map is full. With @kb (may be NULL), new kernel entries are staged in it and written
	 * by the caller's sl_kbatch_commit() before the reply goes: an error of those comes from
	 * the commit, under the tag the caller set.
	 */
	int (*learn)(void *owner, const char *qname, const struct sl_dns_answer *a,
		     uint8_t blocked[SL_DNS_MAX_ADDRS], struct sl_kbatch *kb);
	/* Whether the sandbox is in audit mode (NULL: never): a name without grants is then
	 * resolved like an allowed one (learn still runs, and the rebinding guard with it)
	 * instead of answered NXDOMAIN, and every event of the listener says "mode":"audit". */
	int (*audit)(void *owner);
};

/* Queries in flight and TCP clients of all listeners together (each holds a descriptor). */
#define SL_DNS_MAX_PENDING_TOTAL 4096
#define SL_DNS_MAX_TCP_TOTAL 1024

/* Counters of one listener. */
struct sl_dns_stats {
	uint64_t allowed; /* forwarded upstream and answered, or answered from the cache */
	uint64_t cached; /* of those, answered from the cache */
	uint64_t denied; /* NXDOMAIN for a name the policy does not name */
	uint64_t nodata; /* HTTPS/SVCB answered empty */
	uint64_t formerr; /* malformed */
	uint64_t refused; /* other classes or opcodes, or too many queries in flight */
	uint64_t servfail; /* upstream failed, timed out or answered garbage */
	uint64_t installed; /* addresses written into the kernel */
	uint64_t blocked; /* addresses refused by the rebinding guard */
	/* Bounds reached (README, Reliability), each a clear refusal: */
	uint64_t limit_pending; /* REFUSED: too many queries in flight (DNS_MAX_PENDING) */
	uint64_t limit_tcp; /* TCP clients closed at accept (DNS_MAX_TCP) */
	uint64_t limit_tcp_out; /* TCP clients closed for not reading their answers */
	uint64_t limit_learned; /* SERVFAIL: the sandbox holds SL_LEARNED_MAX resolutions */
	uint64_t limit_kernel_rules; /* SERVFAIL: the kernel rule map is full (SL_MAX_RULES) */
};

struct sl_dns *sl_dns_new(struct sl_loop *loop, struct sl_events *events,
			  const struct sl_dns_opts *opts);
/* Frees the service; its listeners must be closed first. Accepts NULL. */
void sl_dns_free(struct sl_dns *dns);

/*
 * Opens a sandbox's listener: UDP and TCP on 127.0.0.1 and ::1 (where IPv6 exists), all on
 * one port, @want_port if it is free (a restarted daemon keeps its port), else one the
 * kernel picks. With @netns_fd >= 0 the sockets are created inside that network namespace
 * (a sandbox with a network of its own). Returns NULL with a reason in @err.
 */
struct sl_dns_listener *sl_dns_listen(struct sl_dns *dns, const struct sl_dns_ops *ops, void *owner,
				      uint16_t want_port, int netns_fd, char *err, size_t errlen);
/*
 * A listener of sandbox @id (< 2^24) without sockets of its own: its queries come to the
 * worker's shared listener (on loopback of sluiced's own network namespace, opened with the
 * first such sandbox, on @want_port if that is free), which tells them from the other
 * sandboxes' by the egress program's mark (a datagram) or sl_accepts record (a connection).
 * The kernel entry of the sandbox must say SL_SB_SHARED.
 */
struct sl_dns_listener *sl_dns_listen_shared(struct sl_dns *dns, const struct sl_dns_ops *ops,
					     void *owner, uint32_t id, uint16_t want_port,
					     char *err, size_t errlen);
/* Closes the sockets and drops queries in flight. Accepts NULL. */
void sl_dns_listener_close(struct sl_dns_listener *l);
/* Forgets the cached answers: the sandbox's rules changed (a handler switch, a policy
 * reload, a mode switch), so a name's next query is judged and installed anew. */
void sl_dns_listener_flush(struct sl_dns_listener *l);
uint16_t sl_dns_listener_port(const struct sl_dns_listener *l);
const struct sl_dns_stats *sl_dns_listener_stats(const struct sl_dns_listener *l);

/* Parses "IP" or "IP:PORT" or "[IPv6]:PORT" into @opts->upstream (port 53 by default). */
int sl_dns_parse_upstream(const char *s, struct sl_dns_opts *opts);
/* The first nameserver of @resolv_conf, into @opts->upstream. Returns 0 or -ENOENT. */
int sl_dns_upstream_from_resolv(const char *resolv_conf, struct sl_dns_opts *opts);

#endif
