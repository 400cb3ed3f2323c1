// SPDX-License-Identifier: MIT
/*
 * The Lua host's view of the proxy's exchanges (struct sl_lua_xchg_ops, lua_priv.h), filled
 * with the proxy's own functions. sluiced hands it to the host (sl_lua_opts.xchg); this is the
 * one file of lua/ that names them, so that what only loads policies links no proxy file.
 * Threading: none (a constant table).
 */
#include "lua/lua_priv.h"
#include "proxy/proxy.h"

const struct sl_lua_xchg_ops sl_lua_px_ops = {
	.attach = sl_px_x_attach,
	.info = sl_px_x_info,
	.req = sl_px_x_req,
	.path = sl_px_x_path,
	.set_path = sl_px_x_set_path,
	.set_method = sl_px_x_set_method,
	.read_body = sl_px_x_read_body,
	.body = sl_px_x_body,
	.set_body = sl_px_x_set_body,
	.fetch = sl_px_x_fetch,
	.resp = sl_px_x_resp,
	.read_resp_body = sl_px_x_read_resp_body,
	.resp_body = sl_px_x_resp_body,
	.set_resp_body = sl_px_x_set_resp_body,
	.send_fetched = sl_px_x_send_fetched,
	.send = sl_px_x_send,
	.fail = sl_px_x_fail,
	.count_limit = sl_px_x_count_limit,
	.mask = sl_px_x_mask,
	.cleartext_secret = sl_px_x_cleartext_secret,
	.set_handler = sl_px_x_set_handler,
	.redact = sl_px_x_redact,
	.trailers = sl_px_x_trailers,
	.set_trailers = sl_px_x_set_trailers,
};
