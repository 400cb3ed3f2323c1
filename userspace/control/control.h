/* SPDX-License-Identifier: MIT */
/* The control API: HTTP/1.1 + JSON on a unix socket (see control.c).
 * Threading: the main thread only; nothing here blocks but a KV write's fsync (store/kv.h), and
 * the list and metrics, which wait for each worker's short read (sl_registry_visit()). */
#ifndef SL_CONTROL_H
#define SL_CONTROL_H

#include <stddef.h>

struct sl_loop;
struct sl_registry;
struct sl_events;
struct sl_bpf;
struct sl_kv;
struct sl_control;

struct sl_control_deps {
	struct sl_loop *loop;
	struct sl_registry *reg;
	struct sl_events *events;
	struct sl_bpf *bpf;
	struct sl_kv *kv; /* /v1/kv: read and written from the main thread (a write fsyncs: kv.h) */
};

/* Listens on unix socket @path (mode 0600; a stale socket file is replaced, a live one is
 * an error). Returns NULL with a one-line reason in @err. */
struct sl_control *sl_control_open(const char *path, const struct sl_control_deps *deps, char *err,
				   size_t errlen);
/* Closes the listener and every connection, and removes the socket file. Accepts NULL. */
void sl_control_close(struct sl_control *c);

#endif
