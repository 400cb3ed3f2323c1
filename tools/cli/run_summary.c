// SPDX-License-Identifier: MIT
/*
 * The exit summary of `sluice run`: what the sandbox was denied, told to the person (or agent)
 * who ran the command, because a program's own error ("Could not resolve host", EPERM, a 403)
 * does not say that sluice did it. Read from sluiced before the transient sandbox is removed:
 * the sandbox's events (denied names, connections, sockets, refused requests) itemised and
 * counted, and its exact kernel counters for what the rate-limited events left out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define MAX_KEYS 512 /* distinct items kept per kind; more are only counted */
#define MAX_SHOWN 20 /* items printed per kind */
#define DRAIN_TRIES 15 /* waits for kernel events still in the ring buffer */
#define DRAIN_WAIT_MS 20

struct item {
	char *key;
	unsigned long n;
};

struct tally {
	const char *label;
	struct item *v;
	size_t n;
	unsigned long dropped; /* items past MAX_KEYS */
};

enum { K_NAME, K_CONNECT, K_SOCKET, K_REQUEST, K_MAX };

static void tally_add(struct tally *t, const char *key)
{
	struct item *v;

	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].key, key)) {
			t->v[i].n++;
			return;
		}
	if (t->n >= MAX_KEYS || !(v = realloc(t->v, (t->n + 1) * sizeof(*v)))) {
		t->dropped++;
		return;
	}
	t->v = v;
	t->v[t->n].key = strdup(key);
	if (!t->v[t->n].key) {
		t->dropped++;
		return;
	}
	t->v[t->n++].n = 1;
}

static void tally_free(struct tally *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].key);
	free(t->v);
	t->v = NULL;
	t->n = t->dropped = 0;
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* An http event that is a refusal: sluice's own (reject, error, closed) or the policy's
 * handler answering with an error status itself. A forwarded request is the upstream's
 * business, whatever its status. */
static int refused(json_t *ev, int *status)
{
	const char *v = str(ev, "verdict");

	*status = (int)json_integer_value(json_object_get(ev, "status"));
	if (!strcmp(v, "reject") || !strcmp(v, "error") || !strcmp(v, "closed"))
		return 1;
	return !strcmp(v, "respond") && *status >= 400;
}

/* Files one event under its kind. Returns 1 for a kernel deny event, else 0. */
static int file_event(struct tally *t, json_t *ev)
{
	const char *type = str(ev, "type");
	char key[640];
	int status;

	if (!strcmp(type, "deny")) {
		const char *op = str(ev, "op");

		if (!strcmp(op, "socket")) {
			snprintf(key, sizeof(key), "%s %s (protocol %lld)", str(ev, "family"),
				 str(ev, "socktype"),
				 (long long)json_integer_value(json_object_get(ev, "protocol")));
			tally_add(&t[K_SOCKET], key);
		} else if (!strcmp(op, "setsockopt")) {
			json_t *opt = json_object_get(ev, "option");

			if (json_is_string(opt))
				snprintf(key, sizeof(key), "setsockopt %s", json_string_value(opt));
			else
				snprintf(key, sizeof(key), "setsockopt %s option %lld",
					 str(ev, "level"), (long long)json_integer_value(opt));
			tally_add(&t[K_SOCKET], key);
		} else {
			json_t *proto = json_object_get(ev, "proto");
			char pbuf[24];

			if (json_is_string(proto))
				snprintf(pbuf, sizeof(pbuf), "%s", json_string_value(proto));
			else
				snprintf(pbuf, sizeof(pbuf), "proto %lld",
					 (long long)json_integer_value(proto));
			/* bind names its local address; a dropped packet says why. */
			if (!strcmp(op, "bind"))
				snprintf(key, sizeof(key), "bind %s %s", pbuf, str(ev, "addr"));
			else if (!strcmp(op, "egress"))
				snprintf(key, sizeof(key), "%s %s (packet dropped: %s)", pbuf,
					 str(ev, "dst"), str(ev, "reason"));
			else
				snprintf(key, sizeof(key), "%s %s", pbuf, str(ev, "dst"));
			tally_add(&t[K_CONNECT], key);
		}
		return 1;
	}
	if (!strcmp(type, "dns") && !strcmp(str(ev, "verdict"), "deny")) {
		tally_add(&t[K_NAME], str(ev, "name"));
	} else if (!strcmp(type, "http") && refused(ev, &status)) {
		const char *method = str(ev, "method"), *reason = str(ev, "reason");

		if (*method && strcmp(method, "-"))
			snprintf(key, sizeof(key), "%s %s://%s%s: %d%s%s%s", method,
				 str(ev, "scheme"), str(ev, "host"), str(ev, "path"), status,
				 *reason ? " (" :
				 !strcmp(str(ev, "verdict"), "respond") ?
					   " (answered by the policy)" :
					   "",
				 reason, *reason ? ")" : "");
		else
			snprintf(key, sizeof(key), "%s%s%s", str(ev, "host"),
				 *str(ev, "host") ? ": " : "",
				 *reason ? reason : str(ev, "verdict"));
		tally_add(&t[K_REQUEST], key);
	}
	return 0;
}

/* The sandbox's events into @t. Returns the number of kernel deny events, or -errno. */
static long read_events(const char *sock, const char *name, struct tally *t)
{
	struct sl_cli_resp res = { 0 };
	char path[128], err[256];
	long denies = 0;
	const char *p, *end;
	int e;

	snprintf(path, sizeof(path), "/v1/events?sandbox=%s", name);
	e = sl_cli_call(sock, "GET", path, NULL, &res, err, sizeof(err));
	if (!e && res.status != 200)
		e = -EIO;
	if (e)
		goto out;
	p = sl_buf_head(&res.body);
	end = p + sl_buf_size(&res.body);
	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		json_t *ev = n ? json_loadb(p, n, 0, NULL) : NULL;

		if (ev && file_event(t, ev))
			denies++;
		json_decref(ev);
		p += n + 1;
	}
out:
	sl_buf_free(&res.body);
	return e ? e : denies;
}

static json_int_t get_int(json_t *o, const char *a, const char *b)
{
	return json_integer_value(json_object_get(json_object_get(o, a), b));
}

static void print_kind(FILE *out, const char *label, const struct tally *t)
{
	size_t shown = t->n < MAX_SHOWN ? t->n : MAX_SHOWN;
	unsigned long rest = t->dropped;

	for (size_t i = 0; i < shown; i++) {
		if (t->v[i].n > 1)
			fprintf(out, "  %-9s %s (%lu times)\n", label, t->v[i].key, t->v[i].n);
		else
			fprintf(out, "  %-9s %s\n", label, t->v[i].key);
	}
	for (size_t i = shown; i < t->n; i++)
		rest += t->v[i].n;
	if (rest)
		fprintf(out, "  %-9s ... and %lu more\n", label, rest);
}

int sl_run_summary(const char *sock, const char *name, FILE *out)
{
	static const char *const labels[K_MAX] = { "name", "connect", "socket", "request" };
	struct tally t[K_MAX] = { 0 };
	struct sl_cli_resp res = { 0 };
	json_int_t kernel = 0, sent = 0;
	json_t *show = NULL, *ctr;
	char path[128], err[256];
	long denies = 0;
	int e;

	/* The kernel's counters are exact; its events pass through a ring buffer that sluiced
	 * may not have emptied yet when the command has just exited: wait (bounded) until
	 * every event the kernel sent for this sandbox has arrived. */
	snprintf(path, sizeof(path), "/v1/sandboxes/%s", name);
	e = sl_cli_call(sock, "GET", path, NULL, &res, err, sizeof(err));
	if (!e && (res.status != 200 || !(show = sl_cli_json(&res))))
		e = -EIO;
	if (e)
		goto out;
	ctr = json_object_get(show, "counters");
	kernel = get_int(ctr, "denied", "tcp") + get_int(ctr, "denied", "udp") +
		 get_int(ctr, "denied", "socket") + get_int(ctr, "denied", "setsockopt") +
		 get_int(ctr, "denied", "bind") + get_int(ctr, "denied", "egress_packets");
	sent = get_int(ctr, "events", "sent");
	for (int i = 0; i < DRAIN_TRIES; i++) {
		struct timespec ts = { 0, DRAIN_WAIT_MS * 1000000L };

		for (int k = 0; k < K_MAX; k++)
			tally_free(&t[k]);
		denies = read_events(sock, name, t);
		if (denies < 0) {
			e = (int)denies;
			goto out;
		}
		if (denies >= sent)
			break;
		nanosleep(&ts, NULL);
	}
	if (!kernel && !t[K_NAME].n && !t[K_REQUEST].n)
		goto out;
	fprintf(out, "sluice run: sandbox %s was denied:\n", name);
	for (int k = 0; k < K_MAX; k++)
		print_kind(out, labels[k], &t[k]);
	if (kernel > denies)
		fprintf(out,
			"  and %lld more denied calls and packets, not itemised "
			"(events rate-limited or lost; see `sluice stats`)\n",
			(long long)(kernel - denies));
	fflush(out);
out:
	for (int k = 0; k < K_MAX; k++)
		tally_free(&t[k]);
	json_decref(show);
	sl_buf_free(&res.body);
	return e;
}
