// SPDX-License-Identifier: MIT
/* /v1/kv: the KV store's keys and values (store/kv.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "control/ctl_decode.h"
#include "control/ctl_int.h"
#include "core/log.h"
#include "store/kv.h"

static int kv_list_key(const char *key, void *arg)
{
	return json_array_append_new(arg, json_string(key)) ? -ENOMEM : 0;
}

/*
 * /v1/kv/NS/KEY, the KV store. The value travels as the raw body, not wrapped in JSON, so
 * that any bytes (at most SL_KV_VALUE_MAX) need no encoding: PUT stores the request body and
 * answers {"ns", "key", "bytes"}; GET answers the value as application/octet-stream; DELETE
 * answers {"ns", "key", "removed": true}. GET /v1/kv/NS answers {"ns", "keys": [...]}, never
 * values. NS and KEY are percent-decoded ('+' stays a plus); KEY is everything after NS and
 * its slash, slashes included. Values never reach the log: it notes "kv put NS/KEY".
 */
static void handle_kv(struct ctl_conn *c, const char *method, char *path)
{
	struct sl_kv *kv = c->ctl->d.kv;
	char *ns = path, *key = strchr(path, '/'), msg[SL_KV_KEY_MAX + SL_KV_NS_MAX + 128];
	char *val = NULL;
	size_t len = 0;
	int r = 0;

	if (key)
		*key++ = 0;
	if (ctl_pct_decode(ns, 0) || !sl_kv_ns_ok(ns)) {
		ctl_respond_error(c, 400, "invalid namespace: 1 to 128 of A-Z a-z 0-9 _ . : @ -");
		return;
	}
	if (key && (ctl_pct_decode(key, 0) || !sl_kv_key_ok(key))) {
		ctl_respond_error(c, 400, "invalid key: 1 to 512 printable ASCII characters");
		return;
	}
	if (!kv) {
		ctl_respond_error(c, 503, "the KV store is not open");
		return;
	}
	if (!key) {
		json_t *keys = json_array();

		if (strcmp(method, "GET")) {
			ctl_respond_error(c, 405, "use GET on /v1/kv/NS");
			json_decref(keys);
			return;
		}
		r = keys ? sl_kv_list(kv, ns, kv_list_key, keys) : -ENOMEM;
		if (!r) {
			ctl_respond_json(c, 200, json_pack("{s:s, s:o}", "ns", ns, "keys", keys));
			return;
		}
		json_decref(keys);
	} else if (!strcmp(method, "PUT")) {
		len = sl_buf_size(&c->body);
		r = sl_kv_put(kv, ns, key, sl_buf_head(&c->body), len);
		/* The body was a secret: do not leave it in the connection's buffer. */
		if (c->body.data)
			OPENSSL_cleanse(c->body.data, c->body.len);
		sl_buf_reset(&c->body);
		if (!r) {
			sl_info("kv put %s/%s", ns, key);
			ctl_respond_json(c, 200,
					 json_pack("{s:s, s:s, s:I}", "ns", ns, "key", key, "bytes",
						   (json_int_t)len));
			return;
		}
	} else if (!strcmp(method, "GET")) {
		r = sl_kv_get(kv, ns, key, &val, &len);
		if (!r) {
			sl_debug("kv get %s/%s", ns, key);
			ctl_respond_raw(c, 200, "application/octet-stream", val, len);
			OPENSSL_cleanse(val, len);
			free(val);
			return;
		}
	} else if (!strcmp(method, "DELETE")) {
		r = sl_kv_rm(kv, ns, key);
		if (!r) {
			sl_info("kv rm %s/%s", ns, key);
			ctl_respond_json(c, 200,
					 json_pack("{s:s, s:s, s:b}", "ns", ns, "key", key,
						   "removed", 1));
			return;
		}
	} else {
		ctl_respond_error(c, 405, "use GET, PUT or DELETE on /v1/kv/NS/KEY");
		return;
	}
	switch (r) {
	case -ENOENT:
		snprintf(msg, sizeof(msg), "no key '%s' in namespace '%s'", key, ns);
		ctl_respond_error(c, 404, msg);
		break;
	case -E2BIG:
		snprintf(msg, sizeof(msg), "the value is larger than %d bytes", SL_KV_VALUE_MAX);
		ctl_respond_error(c, 413, msg);
		break;
	case -EBADMSG:
		snprintf(msg, sizeof(msg),
			 "the stored value of %s/%s does not authenticate (tampered with, or "
			 "written under another key): put it again",
			 ns, key);
		ctl_respond_error(c, 500, msg);
		break;
	default:
		snprintf(msg, sizeof(msg), "KV store: %s", strerror(-r));
		ctl_respond_error(c, 500, msg);
	}
}

void ctl_route_kv(struct ctl_conn *c, const struct ctl_req *rq)
{
	handle_kv(c, rq->method, rq->arg);
}
