# SPDX-License-Identifier: MIT
"""Lua handlers, end to end: real sandboxes, curl inside them trusting only the sandbox CA,
nginx as the HTTPS upstream logging the headers it receives (x-auth-token, authorization,
x-handler) in front of a backend that echoes request headers back (/headers)."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ENV_SECRETS, PY, run_in, write_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "lua" / "examples"
RAWHTTP = str(Path(__file__).with_name("rawhttp.py"))


class Box:
    def __init__(self, daemon, cgroups, workdir, name, policy_text=None, policy_path=None):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        path = policy_path or write_policy(workdir, name, policy_text)
        self.cg = cgroups.make(name)
        daemon.add(name, self.cg, path)
        r = daemon.cli("ca", name)
        assert r.returncode == 0
        self.ca = Path(workdir) / f"{name}-ca.pem"
        self.ca.write_text(r.stdout)

    def curl(self, *args, timeout=60):
        """(status, headers dict lower-cased, body bytes) of one request from inside."""
        r = subprocess.run([str(ROOT / "tools/in-sandbox"), str(self.cg),
                            str(Path(self.workdir) / "resolv.conf"), "curl", "-sS", "-i",
                            "--max-time", "30", "--cacert", str(self.ca), *args],
                           capture_output=True, timeout=timeout, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return parse(r.stdout)

    def run(self, argv, **kw):
        return run_in(self.cg, argv, self.workdir, **kw)

    def events(self):
        return self.daemon.events(self.name)

    def remove(self):
        self.daemon.cli("sandbox", "rm", self.name)


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # interim responses
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return status, headers, body


@pytest.fixture
def boxes(daemon, cgroups, workdir, upstreams):
    made = []

    def make(name, policy_text=None, policy_path=None):
        b = Box(daemon, cgroups, workdir, name, policy_text, policy_path)
        made.append(b)
        return b

    yield make
    for b in made:
        b.remove()


def nginx_saw(upstreams, mark, n=1):
    upstreams.nginx.wait_requests(n, since=mark)
    return upstreams.nginx.requests_seen(since=mark)


def test_credential_injected_upstream_never_seen_by_the_sandbox(boxes, upstreams, daemon):
    box = boxes("inject", policy_path=EXAMPLES / "inject-by-host.lua")
    secret = ENV_SECRETS["VCS_TOKEN"]
    mark = upstreams.nginx.mark()
    status, headers, body = box.curl("https://git.internal.test/headers")
    assert status == 200, body
    seen = nginx_saw(upstreams, mark)
    assert seen[-1]["h_x_auth_token"] == secret  # it arrived upstream
    # The backend echoed the request headers back: the value is masked on the way out.
    echoed = json.loads(body)
    assert echoed["headers"]["x-auth-token"] == "*" * len(secret)
    assert secret.encode() not in body
    assert all(secret not in v for v in headers.values())
    # Not in the sandbox's environment, nor in any event or log line.
    env = box.run(["sh", "-c", "cat /proc/self/environ; env"])
    assert env.returncode == 0 and secret not in env.stdout
    ev = box.events()
    assert [e for e in ev if e.get("type") == "http" and e.get("handler")], ev
    assert secret not in json.dumps(ev)
    assert secret not in daemon.read_log()


def test_secret_split_across_reads_is_masked(boxes, upstreams):
    """A secret echoed in a body large enough to arrive in several reads, at every offset
    around a read boundary, is still masked (the proxy holds back a tail between reads)."""
    box = boxes("inject-split", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    req.headers:set("x-auth-token", env.VCS_TOKEN)
    return fetch(req)
  end,
}
""")
    secret = ENV_SECRETS["VCS_TOKEN"]
    for pad in (16380, 16383, 16384 - len(secret) // 2, 65530):
        payload = ("a" * pad + secret + "b" * 100).encode()
        path = Path(box.workdir) / "split-body"
        path.write_bytes(payload)
        status, _, body = box.curl("--data-binary", f"@{path}", "https://api.test/echo")
        assert status == 200
        assert secret.encode() not in body and len(body) == len(payload), pad
        assert body == payload.replace(secret.encode(), b"*" * len(secret))


def test_by_host_beats_outbound(boxes, upstreams):
    box = boxes("precedence", """
return {
  egress = { intercept = { "api.test", "www.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    req.headers:set("x-handler", "outbound")
    return fetch(req)
  end,
  outboundByHost = {
    ["www.test"] = function(req, env, ctx)
      req.headers:set("x-handler", "byhost")
      return fetch(req)
    end,
  },
}
""")
    mark = upstreams.nginx.mark()
    assert box.curl("https://api.test/headers")[0] == 200
    assert box.curl("https://www.test/headers")[0] == 200
    seen = nginx_saw(upstreams, mark, 2)
    assert [(s["host"], s["h_x_handler"]) for s in seen] == [("api.test", "outbound"),
                                                            ("www.test", "byhost")]


def test_get_only_blocks_other_methods_and_logs(boxes, upstreams):
    box = boxes("getonly", policy_path=EXAMPLES / "get-only.lua")
    mark = upstreams.nginx.mark()
    status, headers, body = box.curl("-d", "x=1", "https://api.test/echo")
    assert status == 405 and headers.get("allow") == "GET, HEAD"
    assert body == b"sluice: only GET and HEAD are allowed\n"
    status, _, body = box.curl("https://api.test/bytes/10")
    assert status == 200 and len(body) == 10
    seen = nginx_saw(upstreams, mark)
    assert [s["method"] for s in seen] == ["GET"]  # the POST never left
    logs = [e for e in box.events() if e.get("type") == "log"]
    assert [l["message"].split()[-2:] for l in logs] == [
        ["POST", "https://api.test/echo"], ["GET", "https://api.test/bytes/10"]]
    assert logs[0]["message"].startswith("curl ")


FAULTY = """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    if req.path == "/boom" then error("kaboom " .. env.VCS_TOKEN) end
    if req.path == "/garbage" then return 42 end
    if req.path == "/nothing" then return end
    if req.path == "/loop" then while true do end end
    if req.path == "/alloc" then
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    end
    if req.path == "/yield" then coroutine.yield() end
    return fetch(req)
  end,
}
"""


@pytest.mark.parametrize("path,reason", [
    ("/boom", "kaboom"), ("/garbage", "returned number, not a Response"),
    ("/nothing", "returned nothing"), ("/loop", "instruction budget"),
    ("/alloc", "not enough memory"), ("/yield", "yielded outside"),
])
def test_handler_failure_is_a_502_and_the_next_request_works(boxes, upstreams, path, reason):
    box = boxes("faulty", FAULTY)
    t0 = time.monotonic()
    status, _, body = box.curl(f"https://api.test{path}")
    assert status == 502, body
    assert time.monotonic() - t0 < 10
    ev = [e for e in box.events() if e.get("type") == "http"][-1]
    assert ev["status"] == 502 and reason in ev["reason"], ev
    assert ENV_SECRETS["VCS_TOKEN"] not in json.dumps(ev)  # redacted from the reason
    status, _, body = box.curl("https://api.test/bytes/5")
    assert status == 200 and len(body) == 5


def test_two_sandboxes_get_their_own_key(boxes, upstreams, daemon):
    for name, key in (("kva", "key-of-a-0123"), ("kvb", "key-of-b-4567")):
        r = daemon.cli("kv", "put", "KEYS", name, key)
        assert r.returncode == 0, r.stderr
    a = boxes("kva", policy_path=EXAMPLES / "kv-per-sandbox.lua")
    b = boxes("kvb", policy_path=EXAMPLES / "kv-per-sandbox.lua")
    c = boxes("kvc", policy_path=EXAMPLES / "kv-per-sandbox.lua")  # no key
    mark = upstreams.nginx.mark()
    sa, _, ba = a.curl("https://api.test/headers")
    sb, _, bb = b.curl("https://api.test/headers")
    sc, _, _ = c.curl("https://api.test/headers")
    assert (sa, sb, sc) == (200, 200, 403)
    seen = nginx_saw(upstreams, mark, 2)
    assert [s["h_authorization"] for s in seen] == ["Bearer key-of-a-0123",
                                                   "Bearer key-of-b-4567"]
    assert b"key-of-a-0123" not in ba and b"key-of-b-4567" not in bb
    daemon.cli("kv", "rm", "KEYS", "kva")
    daemon.cli("kv", "rm", "KEYS", "kvb")


def test_slow_upstream_does_not_hold_up_other_requests(boxes, upstreams):
    box = boxes("slow", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    local resp = fetch(req)
    resp.headers:set("x-seen-by", "sluice")
    return resp
  end,
}
""")
    out = {}

    def slow():
        out["slow"] = box.curl("https://api.test/slow/3000")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)  # the slow request's handler is waiting in fetch()
    t0 = time.monotonic()
    for _ in range(5):
        status, headers, _ = box.curl("https://api.test/bytes/10")
        assert status == 200 and headers["x-seen-by"] == "sluice"
    fast = time.monotonic() - t0
    t.join(timeout=30)
    assert out["slow"][0] == 200 and out["slow"][2] == b"slow\n"
    assert fast < 2.5, fast  # served while the slow one waited


def test_rewrite_request_and_response(boxes, upstreams):
    box = boxes("rewrite", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    if req.path == "/rewrite" then
      local body = req:text()
      req.method = "PUT"
      req.path = "/echo"
      req.body = string.upper(body)
      req.headers:add("x-handler", "one")
      req.headers:add("x-handler", "two")
      local resp = fetch(req)
      local text = resp:text()
      resp.status = 201
      resp.headers:set("x-was", tostring(#text))
      resp.body = text .. "!"
      return resp
    end
    if req.path == "/made" then
      return Response.new("made " .. req.method .. " " .. ctx.containerId .. " " .. ctx.comm,
                          { status = 418, headers = { ["x-multi"] = { "a", "b" } } })
    end
    if req.path == "/overrides" then
      return fetch(req, { path = "/headers", headers = { ["x-handler"] = "override" } })
    end
    if req.path == "/bad-header" then
      req.headers:set("x-evil", "a\\r\\nInjected: yes")
      return fetch(req)
    end
    if req.path == "/managed" then
      req.headers:set("content-length", "5")
      return fetch(req)
    end
    if req.path == "/elsewhere" then
      return fetch(req, { url = "https://www.test/headers" })
    end
    return fetch(req)
  end,
}
""")
    mark = upstreams.nginx.mark()
    status, headers, body = box.curl("-d", "hello", "https://api.test/rewrite")
    assert (status, body) == (201, b"HELLO!"), body
    assert headers["x-was"] == "5" and headers["content-length"] == "6"
    seen = nginx_saw(upstreams, mark)
    assert (seen[-1]["method"], seen[-1]["uri"]) == ("PUT", "/echo")
    assert seen[-1]["h_x_handler"] == "one, two" or seen[-1]["h_x_handler"] == "one"

    status, headers, body = box.curl("https://api.test/made")
    assert status == 418 and body == b"made GET rewrite curl"

    mark = upstreams.nginx.mark()
    status, _, body = box.curl("https://api.test/overrides")
    assert status == 200 and json.loads(body)["headers"]["x-handler"] == "override"

    for path, why in (("/bad-header", "control characters"), ("/managed", "managed by sluice"),
                      ("/elsewhere", "own host")):
        status, _, _ = box.curl(f"https://api.test{path}")
        assert status == 502, path
        ev = [e for e in box.events() if e.get("type") == "http"][-1]
        assert why in ev["reason"], ev


def test_request_body_read_is_bounded(boxes, upstreams, workdir):
    box = boxes("bounded", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    local b = req:text()
    return Response.new(tostring(#b))
  end,
}
""")
    big = Path(workdir) / "big-body"
    big.write_bytes(b"z" * (2 << 20))
    status, _, body = box.curl("--data-binary", f"@{big}", "https://api.test/echo")
    assert status == 413
    status, _, body = box.curl("--data-binary", "small", "https://api.test/echo")
    assert (status, body) == (200, b"5")


def test_body_not_read_streams_untouched(boxes, upstreams, workdir):
    box = boxes("stream", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    req.headers:set("x-handler", "stream")
    return fetch(req)
  end,
}
""")
    big = Path(workdir) / "stream-body"
    data = os.urandom(3 << 20)
    big.write_bytes(data)
    status, _, body = box.curl("--data-binary", f"@{big}", "https://api.test/sha256")
    import hashlib
    assert status == 200
    assert json.loads(body) == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_policy_errors_are_refused_with_line(daemon, cgroups, workdir):
    cg = cgroups.make("badpolicy")
    for text, want in (("return {\n  outbound = function(req)\n    return fetch(req\n  end,\n}\n",
                        ":4:"),
                       ("return { outbound = 5 }", "outbound must be a function"),
                       ("return { outboundByHost = { ['a.test'] = 1 } }", "outboundByHost"),
                       ("return { outboundHandlers = { x = { handle = 1 } } }",
                        "outboundHandlers.x.handle must be a function")):
        path = write_policy(workdir, "badpolicy", text)
        r = daemon.cli("sandbox", "add", "badpolicy", "--cgroup", str(cg), "--policy", path)
        assert r.returncode != 0 and want in r.stderr, (text, r.stderr)
    assert daemon.cli("sandbox", "show", "badpolicy").returncode != 0


def test_pipelined_requests_each_run_the_handler(boxes, upstreams):
    box = boxes("pipeline", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    if req.path == "/local" then
      return Response.new("local " .. req.headers:get("x-n"), { status = 200 })
    end
    req.headers:set("x-handler", "n" .. req.headers:get("x-n"))
    return fetch(req)
  end,
}
""")
    mark = upstreams.nginx.mark()
    reqs = "".join(f"GET {p} HTTP/1.1\r\nHost: api.test\r\nX-N: {n}\r\n\r\n"
                   for n, p in enumerate(["/bytes/5", "/local", "/bytes/6", "/local",
                                          "/bytes/7"]))
    r = box.run([PY, RAWHTTP, json.dumps({"connect": "api.test", "sni": "api.test",
                                          "ca": str(box.ca), "send": [reqs],
                                          "stop_after": 5})])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["statuses"] == [200] * 5, res
    assert "local 1" in res["text"] and "local 3" in res["text"]
    seen = nginx_saw(upstreams, mark, 3)
    assert [s["h_x_handler"] for s in seen] == ["n0", "n2", "n4"]
    assert len({s["connection"] for s in seen}) == 1  # one upstream connection kept
