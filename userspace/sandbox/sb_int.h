/* SPDX-License-Identifier: MIT */
/*
 * The registry's own view of a sandbox: the fields of struct sl_box, shared by the files of
 * sandbox/ and by nobody else (sandbox.h gives the rest of sluiced accessors).
 * Threading: loop thread only; nothing here blocks.
 */
#ifndef SL_SB_INT_H
#define SL_SB_INT_H

#include <limits.h>
#include <stdint.h>

#include "dns/dns_msg.h"
#include "kernel/rules.h"
#include "sandbox/sandbox.h"

/* One sandbox. Owned by its registry; loop thread only. */
struct sl_box {
	char name[SL_NAME_MAX + 1];
	uint32_t id; /* kernel sandbox id, stable across restarts */
	char cgroup[PATH_MAX]; /* canonical path */
	uint64_t cgid;
	char policy_path[PATH_MAX]; /* where the policy came from ("" if given inline) */
	char *policy_src; /* the policy text as added: restarts use it, not the file */
	size_t policy_len;
	struct sl_policy *policy; /* the kernel layer in force: base, or the handler's own */
	struct sl_policy *base; /* the policy's egress */
	struct sl_policy *hlayer; /* the active handler's egress; NULL: none or it has none */
	struct sl_lua *lua; /* the policy's Lua state: its handlers run there */
	char handler[64]; /* the active outboundHandlers entry, "" for none */
	char *params; /* its params (JSON text), NULL for none */
	int64_t handler_since_s;
	unsigned switches; /* handler sets, clears and policy reloads since added */
	uint32_t rules_id; /* key id of the kernel rules in force: id, or id | SL_RULES_BANK */
	struct sl_rule_set rules; /* static rules compiled from the policy */
	struct sl_rule_set learned; /* rules of resolved names, each with its expiry */
	char (*learned_names)[SL_DNS_NAME_BUF]; /* the name of each learned rule ("" unknown) */
	uint64_t learned_next_ns; /* no learned rule expires before (a lower bound); 0: unknown */
	struct sl_dns_listener *dns; /* where the kernel sends the sandbox's DNS queries */
	uint16_t dns_port; /* kept across restarts */
	struct sl_proxy_listener *proxy; /* where the kernel sends intercepted connections */
	uint16_t proxy_port; /* kept across restarts */
	uint64_t proxied_swept; /* kernel records of intercepted connections never accepted */
	/* A sandbox with a network of its own: its listeners live in that namespace, which
	 * sluiced holds open (-1: sluiced's namespace). The path is as given (a restart tries it
	 * first); dev/ino name the namespace itself. */
	int netns_fd;
	char netns[PATH_MAX];
	uint64_t netns_dev, netns_ino;
	struct sl_ca *ca; /* the sandbox's own CA: its leaves are what the sandbox sees */
	int64_t created_s; /* wall clock */
	/* The OCI container this sandbox was made for ("" if none): only that container's
	 * poststop may remove it. */
	char container_id[SL_CONTAINER_ID_MAX + 1];
	struct sl_registry *reg;
	struct sl_box *next;
};

#endif
