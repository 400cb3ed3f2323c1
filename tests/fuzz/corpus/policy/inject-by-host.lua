-- Credential injection by host: requests to the internal VCS host get an x-auth-token header
-- from sluiced's --env-file (VCS_TOKEN=...). The sandbox never holds the token: it is added
-- after the request left the sandbox, and masked in whatever the host sends back.
return {
  egress = {
    intercept = { "git.internal.test" },
    -- The demo and the tests serve this name on loopback; a real internal host would be
    -- named here with its own range (e.g. "10.0.0.0/8").
    private = { "127.0.0.0/8" },
  },
  outboundByHost = {
    ["git.internal.test"] = function(req, env, ctx)
      req.headers:set("x-auth-token", env.VCS_TOKEN)
      return fetch(req)
    end,
  },
}
