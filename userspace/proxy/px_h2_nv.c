// SPDX-License-Identifier: MIT
/*
 * What both HTTP/2 legs of the proxy share (px_h2.c towards the sandbox, px_h2_up.c towards
 * the upstream): an HTTP/1 head's fields as nghttp2 name-value pairs, and a buffered body
 * as nghttp2's data provider reads it. Loop thread only; nothing here blocks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/px_int.h"

int px_h2_conn_specific(const char *name)
{
	/* RFC 9113 section 8.2.2, and the fields an HTTP/1 head frames itself with */
	static const char *const names[] = { "connection",	 "keep-alive",
					     "proxy-connection", "transfer-encoding",
					     "upgrade",		 "te",
					     "trailer" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcasecmp(name, names[i]))
			return 1;
	return 0;
}

size_t px_h2_nv_fields(struct sl_http_msg *m, nghttp2_nv *nv)
{
	size_t n = 0;

	for (size_t i = 0; i < m->nh; i++) {
		if (px_h2_conn_specific(m->h[i].name) || !strcasecmp(m->h[i].name, "host"))
			continue;
		/* nghttp2 writes names as given: HTTP/2 wants them lower case. */
		for (char *q = m->h[i].name; *q; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q += 'a' - 'A';
		nv[n++] = (nghttp2_nv){ (uint8_t *)m->h[i].name, (uint8_t *)m->h[i].value,
					strlen(m->h[i].name), strlen(m->h[i].value),
					NGHTTP2_NV_FLAG_NONE };
	}
	return n;
}

ssize_t px_h2_read_buf(struct sl_buf *b, int end, uint8_t *buf, size_t len, uint32_t *flags)
{
	size_t n = sl_buf_size(b);

	if (n > len)
		n = len;
	if (n) {
		memcpy(buf, sl_buf_head(b), n);
		sl_buf_consume(b, n);
	}
	if (!sl_buf_size(b) && end) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
}

int px_h2_submit_trailers(nghttp2_session *ss, int32_t id, struct sl_http_msg *t)
{
	nghttp2_nv *nv = calloc(t->nh, sizeof(*nv));
	size_t n;
	int r;

	if (!nv)
		return -ENOMEM;
	n = px_h2_nv_fields(t, nv);
	r = n ? nghttp2_submit_trailer(ss, id, nv, n) : -EINVAL;
	free(nv);
	return r ? -EIO : 0;
}
