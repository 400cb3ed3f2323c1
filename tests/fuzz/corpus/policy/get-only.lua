-- Read-only access: every request is logged (`sluice events`), and only GET and HEAD go out.
return {
  egress = {
    intercept = { "api.test", "www.test" },
    private = { "127.0.0.0/8" }, -- the tests serve these names on loopback
  },
  outbound = function(req, env, ctx)
    sluice.log(ctx.comm, ctx.pid, req.method, req.url)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return Response.new("sluice: only GET and HEAD are allowed\n",
                          { status = 405, headers = { allow = "GET, HEAD" } })
    end
    return fetch(req)
  end,
}
