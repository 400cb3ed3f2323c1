-- Handlers to switch at run time (`sluice handler set NAME allowHosts --params ...`):
-- allowHosts opens exactly the hosts its params name, noHttp closes everything, in the
-- kernel too (its egress replaces the policy's while it is active).
local private = { "127.0.0.0/8" } -- the tests serve their names on loopback

return {
  egress = { intercept = { "api.test" }, private = private },
  outboundHandlers = {
    allowHosts = {
      egress = function(params)
        if type(params.allowedHostnames) ~= "table" or #params.allowedHostnames == 0 then
          error("allowHosts wants params.allowedHostnames, a list of host names")
        end
        return { intercept = params.allowedHostnames, private = private }
      end,
      handle = function(req, env, ctx)
        for _, h in ipairs(ctx.params.allowedHostnames) do
          if h == req.host then return fetch(req) end
        end
        return Response.new(nil, { status = 403 })
      end,
    },
    noHttp = {
      egress = {},
      handle = function() return Response.new(nil, { status = 403 }) end,
    },
  },
}
