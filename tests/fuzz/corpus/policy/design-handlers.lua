return {
  egress = {
    allow     = { "registry.npmjs.org:443", "10.20.0.0/16:5432" },
    intercept = { "api.github.com", "*.internal.dev" },
  },
  outbound = function(req, env, ctx)
    sluice.log("outbound", req.method, req.url)
    if req.method ~= "GET" then return Response.new("Not Allowed", { status = 405 }) end
    return fetch(req)
  end,
  outboundByHost = {
    ["api.github.com"] = function(req, env, ctx)
      req.headers:set("authorization", "Bearer " .. env.GITHUB_TOKEN)
      return fetch(req)
    end,
  },
  outboundHandlers = {
    allowHosts = {
      egress = function(params) return { intercept = params.allowedHostnames } end,
      handle = function(req, env, ctx)
        for _, h in ipairs(ctx.params.allowedHostnames) do
          if h == req.host then return fetch(req) end
        end
        return Response.new(nil, { status = 403 })
      end,
    },
    noHttp = { egress = {}, handle = function() return Response.new(nil, { status = 403 }) end },
  },
}
