-- GitHub, and nothing else: the API, the web (git over HTTPS) and downloads, every request
-- seen by sluice. Requests to the API carry sluiced's token (`sluiced --env-file` with
-- GITHUB_TOKEN=...), added after they left the sandbox: the sandbox never holds it. Without
-- a token they go out unauthenticated. The token is added over HTTPS only: a plain-HTTP
-- request (`curl http://api.github.com/`) goes out without it (and sluice would refuse to
-- send it in clear text anyway, unless the policy said cleartextSecrets = true).
--
--   sudo sluice run --policy lua/examples/github.lua -- curl https://api.github.com/
return {
  egress = {
    intercept = {
      "api.github.com",
      "github.com",
      "codeload.github.com",
      "uploads.github.com",
      "*.githubusercontent.com", -- raw., objects., avatars.
    },
  },
  outboundByHost = {
    ["api.github.com"] = function(req, env, ctx)
      if req.scheme == "https" and env.GITHUB_TOKEN then
        req.headers:set("authorization", "Bearer " .. env.GITHUB_TOKEN)
      end
      return fetch(req)
    end,
  },
}
