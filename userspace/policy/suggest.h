/* SPDX-License-Identifier: MIT */
/*
 * A policy written from what a sandbox did in audit mode (`sluice policy suggest`): pure text
 * generation from observations, so that tests/unit/test_suggest.c checks it without a daemon.
 * Threading: none of its own (pure functions); nothing blocks but the one-time load of the
 * Public Suffix List (a file read) on the first call.
 */
#ifndef SL_SUGGEST_H
#define SL_SUGGEST_H

#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

/* A name used on a port and protocol (a connection to an address the name resolved to). */
struct sl_sg_name {
	char name[SL_HOST_MAX]; /* lower case, no trailing dot: the name asked (CNAMEs reduced) */
	uint16_t port;
	uint8_t proto; /* IPPROTO_TCP / IPPROTO_UDP */
	uint64_t count;
	int64_t first_s, last_s; /* wall clock */
};

/* An address reached that no observed name explains. */
struct sl_sg_addr {
	uint8_t family;
	uint8_t addr[16]; /* network order */
	uint16_t port;
	uint8_t proto;
	uint64_t count;
	int64_t first_s, last_s;
};

/* A UNIX socket address reached. */
struct sl_sg_unix {
	struct sl_unix_key k;
	uint64_t count;
	int64_t first_s, last_s;
};

struct sl_suggest_in {
	const char *sandbox;
	/* The policy in force: its text is kept whole (handlers, env and KV references, its own
	 * entries), the learned entries are added to its egress. NULL or "": none. */
	const char *base_src;
	const char *base_path; /* for the comment; may be NULL */
	struct sl_sg_name *names; /* sorted and merged here */
	size_t nnames;
	struct sl_sg_addr *addrs;
	size_t naddrs;
	struct sl_sg_unix *unix_socks;
	size_t nunix;
	const char *const *notes; /* comment lines for the end (no newline) */
	size_t nnotes;
	/* More than this many names one label below a common parent, on one port and protocol,
	 * become `*.parent` (never where parent is at or above a registrable domain). 0: never. */
	unsigned collapse;
	int64_t now_s;
};

/* The policy's text (malloc'd, NUL-terminated; caller frees), NULL with errno. */
char *sl_suggest_policy(struct sl_suggest_in *in);

/*
 * Whether `*.@parent` may be suggested: @parent is strictly below its registrable domain
 * (one label or more), by the Public Suffix List (libpsl): never `*.co.uk`, `*.github.io`
 * nor `*.example.com`, but `*.cdn.example.com`. A name the list knows nothing of is judged by
 * its default rule (the last label is the public suffix).
 */
int sl_suggest_wildcard_ok(const char *parent);

#endif
