-- One key per sandbox, from the KV store: `sluice kv put KEYS <sandbox> <key>` (the value
-- is encrypted at rest), looked up by the sandbox's name for every request.
return {
  egress = {
    intercept = { "api.test" },
    private = { "127.0.0.0/8" }, -- the tests serve api.test on loopback
  },
  outbound = function(req, env, ctx)
    local key = env.KEYS:get(ctx.containerId)
    if not key then
      return Response.new("sluice: no key for this sandbox\n", { status = 403 })
    end
    req.headers:set("authorization", "Bearer " .. key)
    return fetch(req)
  end,
}
