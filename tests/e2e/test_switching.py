# SPDX-License-Identifier: MIT
"""Run-time policy switching, end to end: `sluice handler set/clear` and `sluice policy
reload` reach the kernel layer, DNS and open connections at once."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, probe, run_in, write_policy, IN_SANDBOX

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
HOLD = str(HERE / "hold.py")
LOOP = str(HERE / "loop.py")

POLICY = """
local private = { "127.0.0.0/8" }
return {
  egress = { intercept = { "api.test" }, private = private },
  outboundHandlers = {
    allowHosts = {
      egress = function(params)
        if type(params.allowedHostnames) ~= "table" or #params.allowedHostnames == 0 then
          error("allowHosts wants params.allowedHostnames, a list of host names")
        end
        return { intercept = params.allowedHostnames, allow = params.passthrough or {},
                 private = private }
      end,
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
"""


class Sandbox:
    def __init__(self, daemon, cgroups, workdir, name, *add_args, policy=POLICY):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        self.policy = write_policy(workdir, name, policy)
        self.cg = cgroups.make(name)
        r = daemon.cli("sandbox", "add", name, "--cgroup", str(self.cg), "--policy",
                       self.policy, *add_args)
        assert r.returncode == 0, r.stderr
        self.ca = str(Path(workdir) / f"{name}-ca.pem")
        Path(self.ca).write_text(daemon.cli("ca", name).stdout)

    def get(self, host, path="/bytes/3"):
        """The HTTP status from inside, or curl's exit code as a negative number."""
        r = run_in(self.cg, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             "--max-time", "10", "--cacert", self.ca,
                             f"https://{host}{path}"], self.workdir)
        return int(r.stdout) if r.returncode == 0 else -r.returncode

    def probe(self, *ops):
        return probe(self.cg, list(ops), self.workdir)

    def hold(self, **op):
        p = subprocess.Popen([IN_SANDBOX, str(self.cg), str(Path(self.workdir) / "resolv.conf"),
                              PY, HOLD, json.dumps(op)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    def show(self):
        r = self.daemon.cli("sandbox", "show", self.name, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def remove(self):
        self.daemon.cli("sandbox", "rm", self.name)


def connect(host, port):
    return {"op": "connect", "proto": "tcp", "host": host, "port": port}


def resolve(name):
    return {"op": "resolve", "name": name, "family": 4}


@pytest.fixture
def sandbox(daemon, cgroups, workdir, upstreams):
    made = []

    def make(*a, **kw):
        s = Sandbox(daemon, cgroups, workdir, *a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.remove()


def ended(p, timeout=10):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return "still open"
    return out.strip()


def test_install_then_lock_down(sandbox, daemon, servers):
    port = servers.ports[0]
    params = {"allowedHostnames": ["api.test", "npm.test"], "passthrough": [f"127.0.0.5:{port}"]}
    sb = sandbox("lockdown", "--handler", "allowHosts", "--params", json.dumps(params))
    # Open: both named hosts through the proxy; the passthrough address; nothing else.
    assert sb.get("api.test") == 200
    assert sb.get("npm.test") == 200
    assert sb.get("www.test") != 200
    assert sb.probe(connect("127.0.0.5", port), connect("127.0.0.6", 443),
                    resolve("www.test")) == ["OK", "EPERM", "EAI_NONAME"]
    assert sb.show()["handler"] == "allowHosts"
    # Long-lived connections: one intercepted (TLS through the proxy), one passthrough.
    tls = sb.hold(mode="tls", host="api.test", ca=sb.ca)
    ws = sb.hold(mode="ws", host="npm.test", ca=sb.ca)
    tcp = sb.hold(mode="tcp", host="127.0.0.5", port=port)

    r = daemon.cli("handler", "set", "lockdown", "noHttp")
    assert r.returncode == 0, r.stderr
    assert "1 passthrough in the kernel, 2 proxied" in r.stdout, r.stdout
    assert ended(tls) == "closed"
    assert ended(ws) == "closed"
    assert ended(tcp) == "closed"
    # Closed in the kernel: every connect is EPERM, no name resolves.
    assert sb.probe(connect("127.0.0.20", 443), connect("127.0.0.5", port),
                    connect("127.0.0.6", 443), resolve("api.test"), resolve("npm.test")) == \
        ["EPERM", "EPERM", "EPERM", "EAI_NONAME", "EAI_NONAME"]
    show = sb.show()
    assert show["handler"] == "noHttp" and show["rules"] == [] and show["names"] == []

    r = daemon.cli("handler", "clear", "lockdown")
    assert r.returncode == 0, r.stderr
    # The policy's own layer again: api.test intercepted, npm.test and the address not.
    assert sb.get("api.test") == 200
    assert sb.probe(resolve("npm.test"), connect("127.0.0.5", port)) == ["EAI_NONAME", "EPERM"]
    ev = [e for e in daemon.events("lockdown") if e.get("type") == "handler"]
    assert [(e["action"], e.get("old"), e.get("new")) for e in ev] == [
        ("set", "allowHosts", "noHttp"), ("clear", "noHttp", None)]
    assert ev[0]["by"].startswith("uid 0") and ev[0]["closed_kernel"] == 1
    assert sb.show()["switches"] == 2


def test_lock_down_closes_the_flows_of_the_sandboxs_cgroups_only(sandbox, daemon, servers,
                                                                  cgroups):
    """The flows a switch closes are those the kernel's socket dump hands over for the
    sandbox's cgroup ids (its own and every one below it): a flow from a cgroup below the
    sandbox's is closed, one to the same address from a process outside it stays open."""
    port = servers.ports[0]
    params = {"allowedHostnames": ["api.test"], "passthrough": [f"127.0.0.5:{port}"]}
    sb = sandbox("lockcg", "--handler", "allowHosts", "--params", json.dumps(params))
    child = cgroups.make("lockcg/below")
    op = json.dumps({"mode": "tcp", "host": "127.0.0.5", "port": port, "wait": 4})
    below = subprocess.Popen([IN_SANDBOX, str(child), str(Path(sb.workdir) / "resolv.conf"),
                              PY, HOLD, op], stdout=subprocess.PIPE, text=True)
    outside = subprocess.Popen([PY, HOLD, op], stdout=subprocess.PIPE, text=True)
    try:
        assert below.stdout.readline().strip() == "ready"
        assert outside.stdout.readline().strip() == "ready"
        r = daemon.cli("handler", "set", "lockcg", "noHttp")
        assert r.returncode == 0, r.stderr
        assert "1 passthrough in the kernel" in r.stdout, r.stdout
        assert ended(below) == "closed"
        assert ended(outside) == "timeout"  # open until it gave up waiting
    finally:
        for p in (below, outside):
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_switch_under_load_never_allows_unexpectedly(sandbox, daemon, workdir):
    both = {"allowedHostnames": ["api.test", "npm.test"]}
    sb = sandbox("underload", "--handler", "allowHosts", "--params", json.dumps(both))
    loop = subprocess.Popen([IN_SANDBOX, str(sb.cg), str(Path(workdir) / "resolv.conf"), PY, LOOP,
                             json.dumps({"hosts": ["api.test", "npm.test"], "ca": sb.ca,
                                         "seconds": 4})],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    r = daemon.cli("handler", "set", "underload", "allowHosts", "--params",
                   json.dumps({"allowedHostnames": ["api.test"]}))
    switched = time.time()
    assert r.returncode == 0, r.stderr
    out, _ = loop.communicate(timeout=60)
    results = json.loads(out)
    api = [x for x in results if x[1] == "api.test"]
    npm_after = [x for x in results if x[1] == "npm.test" and x[0] > switched]
    npm_before = [x for x in results if x[1] == "npm.test" and x[0] < switched - 0.5]
    assert len(api) > 10 and npm_after and npm_before
    assert all(x[2] == 200 for x in api), [x for x in api if x[2] != 200]  # never a gap
    assert all(x[2] == 200 for x in npm_before)
    assert not [x for x in npm_after if x[2] == 200]  # never an allow after the switch


def test_invalid_switches_change_nothing(sandbox, daemon):
    sb = sandbox("invalid", "--handler", "allowHosts", "--params",
                 json.dumps({"allowedHostnames": ["api.test"]}))
    before = sb.show()
    for args, msg in ((["nosuch"], "no handler 'nosuch'"),
                      (["allowHosts", "--params", '{"allowedHostnames": 5}'],
                       "allowHosts wants params.allowedHostnames"),
                      (["allowHosts", "--params", "[1]"], "must be a JSON object"),
                      (["allowHosts", "--params", "{bad"], "must be a JSON object")):
        r = daemon.cli("handler", "set", "invalid", *args)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
    assert daemon.cli("handler", "set", "nosandbox", "noHttp").returncode != 0
    after = sb.show()
    assert (after["handler"], after["params"], after["switches"]) == \
        (before["handler"], before["params"], before["switches"])
    assert sb.get("api.test") == 200


def test_policy_reload(sandbox, daemon, workdir):
    sb = sandbox("reload")
    assert sb.get("api.test") == 200 and sb.get("www.test") != 200
    bad = write_policy(workdir, "reload-bad", "return { egress = { intercept = { 'www.test' }\n")
    r = daemon.cli("policy", "reload", "reload", "--policy", bad)
    assert r.returncode != 0 and "reload-bad.lua:2:" in r.stderr, r.stderr
    assert sb.get("api.test") == 200  # the old policy stays
    good = write_policy(workdir, "reload-good", POLICY.replace('intercept = { "api.test" }',
                                                               'intercept = { "www.test" }'))
    held = sb.hold(mode="tls", host="api.test", ca=sb.ca)
    r = daemon.cli("policy", "reload", "reload", "--policy", good)
    assert r.returncode == 0, r.stderr
    assert "1 proxied" in r.stdout
    assert ended(held) == "closed"
    assert sb.get("www.test") == 200 and sb.get("api.test") != 200
    assert sb.show()["policy"].endswith("reload-good.lua")
    # A restart keeps the reloaded policy and an active handler.
    r = daemon.cli("handler", "set", "reload", "noHttp")
    assert r.returncode == 0, r.stderr
    # reload while a handler is active keeps it; a policy without it is refused
    nohandlers = write_policy(workdir, "reload-none", "return { egress = { intercept = { 'api.test' }, private = { '127.0.0.0/8' } } }")
    r = daemon.cli("policy", "reload", "reload", "--policy", nohandlers)
    assert r.returncode != 0 and "not in the new policy" in r.stderr
    assert sb.show()["handler"] == "noHttp"


def test_handler_survives_restart(fresh_daemon, cgroups, workdir):
    d = fresh_daemon.start()
    policy = write_policy(workdir, "persist", POLICY)
    cg = cgroups.make("persist")
    r = d.cli("sandbox", "add", "persist", "--cgroup", str(cg), "--policy", policy,
              "--handler", "noHttp")
    assert r.returncode == 0, r.stderr
    assert probe(cg, [connect("127.0.0.20", 443), resolve("api.test")], workdir) == \
        ["EPERM", "EAI_NONAME"]
    d.stop()
    assert probe(cg, [connect("127.0.0.20", 443)], workdir) == ["EPERM"]  # fail closed
    d.start()
    show = json.loads(d.cli("sandbox", "show", "persist", "--json").stdout)
    assert show["handler"] == "noHttp"
    assert probe(cg, [connect("127.0.0.20", 443), resolve("api.test")], workdir) == \
        ["EPERM", "EAI_NONAME"]
    r = d.cli("handler", "clear", "persist")
    assert r.returncode == 0, r.stderr
    assert probe(cg, [resolve("api.test")], workdir) == [["127.0.0.20"]]
    # A switch answered is on disk (its state file is written off the loop, before the
    # answer): a restart comes back without the handler.
    d.stop()
    d.start()
    show = json.loads(d.cli("sandbox", "show", "persist", "--json").stdout)
    assert show["handler"] is None
    assert probe(cg, [resolve("api.test")], workdir) == [["127.0.0.20"]]
    d.cli("sandbox", "rm", "persist")


def test_removal_racing_a_switch_leaves_no_state(fresh_daemon, cgroups, workdir):
    """A removal sent while a switch completes (its state file still being written on the jobs
    thread) waits for the write: the sandbox and its state file are gone after, whichever
    answered first, and sluiced goes on."""
    import threading
    d = fresh_daemon.start("--workers", "1")
    policy = write_policy(workdir, "race", POLICY)
    sandboxes = Path(d.state) / "sandboxes"
    answers = []
    for i in range(12):
        name = f"race{i}"
        cg = cgroups.make(name)
        r = d.cli("sandbox", "add", name, "--cgroup", str(cg), "--policy", policy)
        assert r.returncode == 0, r.stderr
        out = {}
        t = threading.Thread(target=lambda: out.update(
            set=d.api("PUT", f"/v1/sandboxes/{name}/handler", {"handler": "noHttp"})))
        t.start()
        time.sleep(0.002 * (i % 4))
        out["rm"] = d.api("DELETE", f"/v1/sandboxes/{name}")
        t.join(30)
        assert not t.is_alive()
        assert out["rm"][0] == 200, out
        # the switch is in force and answered, or refused because the sandbox went away
        assert out["set"][0] in (200, 404), out
        answers.append(out["set"][0])
        assert d.api("GET", f"/v1/sandboxes/{name}")[0] == 404
        assert not (sandboxes / f"{name}.json").exists(), name
    assert d.api("GET", "/v1/sandboxes")[0] == 200
    print("switch answers:", answers)
