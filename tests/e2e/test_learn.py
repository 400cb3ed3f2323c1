# SPDX-License-Identifier: MIT
"""Audit mode and learning a policy, end to end: what the rules deny is allowed and recorded
(kernel, DNS, proxy), the switch to enforce is atomic and closes what enforce forbids, and
`sluice policy suggest` / `sluice run --learn` turn the records into a policy that works."""
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, IN_SANDBOX, probe, run_in, write_policy

HERE = Path(__file__).parent
HOLD = str(HERE / "hold.py")


def connect(host, port, proto="tcp"):
    return {"op": "connect", "proto": proto, "host": host, "port": port}


class Box:
    def __init__(self, daemon, cgroups, workdir, name, policy, *add_args):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        self.policy = write_policy(workdir, name, policy)
        self.cg = cgroups.make(name)
        r = daemon.cli("sandbox", "add", name, "--cgroup", str(self.cg), "--policy",
                       self.policy, *add_args)
        assert r.returncode == 0, r.stderr
        self.added_stderr = r.stderr

    def probe(self, *ops):
        return probe(self.cg, list(ops), self.workdir)

    def show(self):
        r = self.daemon.cli("sandbox", "show", self.name, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def mode(self, mode):
        r = self.daemon.cli("sandbox", "mode", self.name, mode)
        assert r.returncode == 0, r.stderr
        return r

    def hold(self, **op):
        p = subprocess.Popen([IN_SANDBOX, str(self.cg), str(Path(self.workdir) / "resolv.conf"),
                              PY, HOLD, json.dumps(op)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    def remove(self):
        self.daemon.cli("sandbox", "rm", self.name)


@pytest.fixture
def box(daemon, cgroups, workdir, upstreams):
    made = []

    def make(*a, **kw):
        b = Box(daemon, cgroups, workdir, *a, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.remove()


def ended(p, timeout=10):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return "still open"
    return out.strip()


def test_audit_allows_and_records_what_the_rules_deny(box, daemon, servers):
    port = servers.ports[0]
    sb = box("audit1", f'return {{ egress = {{ allow = {{ "127.0.0.5:{port}" }} }} }}\n',
             "--mode", "audit")
    assert "AUDIT mode" in sb.added_stderr
    show = sb.show()
    assert show["mode"] == "audit"
    dns_port = show["dns"]["port"]
    # Denied by the rules, allowed in audit mode: TCP, UDP, another port, IPv6.
    assert sb.probe(connect("127.0.0.5", port), connect("127.0.0.6", port),
                    connect("127.0.0.6", servers.ports[1]),
                    {"op": "sendto", "host": "127.0.0.7", "port": port, "data": "audited"},
                    connect("::1", port)) == ["OK"] * 5
    assert servers.got(port, "audited")
    # What no policy decides stays refused: sluiced's listeners, raw sockets.
    assert sb.probe(connect("127.0.0.1", dns_port), connect("0.0.0.0", dns_port),
                    {"op": "socket", "family": 2, "type": 3, "proto": 1}) == ["EPERM"] * 3
    show = sb.show()
    assert show["audit"]["audited"] >= 4 and show["audit"]["lost"] == 0
    ev = [e for e in daemon.events("audit1") if e.get("type") == "audit"]
    dsts = {(e["op"], e["dst"], e["proto"]) for e in ev}
    assert ("connect", f"127.0.0.6:{port}", "tcp") in dsts
    assert ("sendmsg", f"127.0.0.7:{port}", "udp") in dsts
    assert all(e["mode"] == "audit" for e in ev)
    # Loud: every event of the sandbox says so, the kernel's refusals of what no policy
    # decides (the listeners, the raw socket) included.
    every = daemon.events("audit1")
    assert sum(e.get("type") == "deny" for e in every) >= 3, every
    assert all(e.get("mode") == "audit" for e in every), \
        [e for e in every if e.get("mode") != "audit"]
    assert ("connect", f"127.0.0.5:{port}", "tcp") not in dsts  # allowed by the rules
    m = daemon.metrics()
    assert m['sluice_sandbox_audit_mode{sandbox="audit1"}'] == 1
    assert m['sluice_audited_total{sandbox="audit1",outcome="recorded"}'] >= 4

    # To enforce: what the rules deny is refused again and open flows of it are closed.
    held = sb.hold(mode="tcp", host="127.0.0.6", port=port)
    kept = sb.hold(mode="tcp", host="127.0.0.5", port=port)
    r = sb.mode("enforce")
    assert "mode enforce" in r.stdout and "closed 1 flows" in r.stdout, r.stdout
    assert ended(held) == "closed"
    assert sb.probe(connect("127.0.0.6", port), connect("127.0.0.5", port)) == ["EPERM", "OK"]
    assert sb.show()["mode"] == "enforce"
    kept.kill()
    kept.communicate()
    ev = [e for e in daemon.events("audit1") if e.get("type") == "mode"]
    assert [(e["old"], e["mode"]) for e in ev] == [("audit", "enforce")]
    assert daemon.metrics()['sluice_sandbox_audit_mode{sandbox="audit1"}'] == 0
    # And back: the same switch.
    sb.mode("audit")
    assert sb.probe(connect("127.0.0.6", port)) == ["OK"]


def test_mode_errors(box, daemon):
    sb = box("modeerr", "return { egress = {} }\n")
    for args, msg in ((["modeerr", "loose"], "audit or enforce"),
                      (["modeerr"], "audit or enforce")):
        r = daemon.cli("sandbox", "mode", *args)
        assert r.returncode != 0 and msg in r.stderr, r.stderr
    assert daemon.cli("sandbox", "mode", "nosuchbox", "audit").returncode != 0
    r = daemon.api("PUT", "/v1/sandboxes/modeerr/mode", {"mode": "half"})
    assert r[0] == 400, r
    assert daemon.cli("sandbox", "mode", "--help").returncode == 0
    assert sb.show()["mode"] == "enforce"


def test_switch_busy_sandbox_to_enforce_leaves_no_window(box, daemon, servers, workdir):
    """A sandbox connecting as fast as it can to a destination only audit mode lets through:
    once `sandbox mode NAME enforce` has returned, not one connect of it succeeds."""
    port = servers.ports[0]
    sb = box("busy", "return { egress = {} }\n", "--mode", "audit")
    loop = subprocess.Popen([IN_SANDBOX, str(sb.cg), str(Path(workdir) / "resolv.conf"), PY,
                             str(HERE / "burst.py"),
                             json.dumps({"mode": "loop", "dst": ["127.0.0.9", port],
                                         "seconds": 3})],
                            stdout=subprocess.PIPE, text=True)
    assert loop.stdout.readline().strip() == "ready"
    time.sleep(1)
    asked = time.time()
    sb.mode("enforce")
    switched = time.time()
    out, _ = loop.communicate(timeout=60)
    res = json.loads(out)
    # Between the ask and the answer the kernel flips (the answer follows what the switch
    # does after it: flows closed, the state file): a connect then may pass, be refused, or
    # be cut (ECONNABORTED) by the switch's closing of flows. Before the ask, audit lets all
    # through; once answered, nothing passes.
    before = [x for x in res if x[1] < asked]
    after = [x for x in res if x[0] > switched]
    assert len(before) > 20 and len(after) > 20, (len(before), len(after))
    assert all(x[2] == "OK" for x in before), [x for x in before if x[2] != "OK"][:5]
    assert all(x[2] == "EPERM" for x in after), [x for x in after if x[2] != "EPERM"][:5]


# ---- the user's loop: learn, then enforce what was learned ----

from test_clients import (LUA_B64, NPM_PKG, TOKEN, home, own, parent,  # noqa: E402,F401
                          site, sluice_run, udir)
from conftest import BUILD  # noqa: E402

JOB = """set -e
git clone -q https://git.clients.test/repo.git work
cat work/README
npm install --no-audit --no-fund {pkg} >/dev/null
node -p "require('{pkg}')"
{py} -c '
import socket, sys
for a in sys.argv[1:]:
    h, p = a.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((h, int(p)))
        print("connect", a, "OK")
    except OSError as e:
        print("connect", a, e.strerror)
    s.close()
' {dsts}
"""


def job(dsts, home, ca):
    """The job: clone from the git server (intercepted: the base policy's handler injects
    its credential), install from the npm registry (not in the base policy), connect to
    addresses directly."""
    script = JOB.format(pkg=NPM_PKG, py=PY, dsts=" ".join(dsts))
    # npm talks to the registry itself (passthrough): it trusts the test CA.
    return ["env", f"npm_config_cafile={ca}", "npm_config_registry=https://npm.clients.test/",
            f"npm_config_cache={home}/npm-cache", "npm_config_update_notifier=false",
            "GIT_TERMINAL_PROMPT=0", "sh", "-c", script]


def test_learn_then_enforce_the_learned_policy(daemon, workdir, parent, site, home, servers,
                                               upstreams):
    port = servers.ports[0]
    ca = home / "test-ca.pem"
    ca.write_text(Path(upstreams.pki.ca_pem).read_text())
    (home / "package.json").write_text('{"name": "app", "version": "0.0.0"}\n')
    own(home)
    base = write_policy(workdir, "learn-base", LUA_B64 + """
return {
  egress = { intercept = { "git.clients.test" }, private = { "127.0.0.0/8" } },
  outboundByHost = {
    ["git.clients.test"] = function(req, env, ctx)
      req.headers:set("authorization", "Basic " .. b64("git:" .. env.VCS_TOKEN))
      return fetch(req)
    end,
  },
}
""")
    out = home / "p.lua"
    r = sluice_run(daemon, workdir, parent, base, job([f"127.0.0.9:{port}"], home, ca), home,
                   "--name", "learn1", "--learn", "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LEARN MODE" in r.stderr and "NOTHING" in r.stderr
    assert f"connect 127.0.0.9:{port} OK" in r.stdout
    assert "seeded" in r.stdout and "hello from sluice-demo-pkg" in r.stdout
    text = out.read_text()
    # Names with their ports, not their addresses; the address no name explains; the
    # base policy whole (its handler and env reference), each entry with its counts.
    assert '{ "npm.clients.test:443", proto = "tcp" },' in text, text
    assert f'{{ "127.0.0.9:{port}", proto = "tcp" }},' in text, text
    assert '"127.0.0.60' not in text, text  # the registry's address is never an entry
    assert "env.VCS_TOKEN" in text and '"git.clients.test"' in text
    assert "first 20" in text and "last 20" in text
    assert TOKEN not in text
    chk = subprocess.run([str(BUILD / "sluice"), "policy", "check", str(out), "--verbose"],
                         capture_output=True, text=True, timeout=30)
    assert chk.returncode == 0, chk.stderr
    assert "npm.clients.test" in chk.stdout and f"127.0.0.9" in chk.stdout

    # Enforced: the same job succeeds under the learned policy ...
    for d in ("work", "node_modules", "npm-cache"):
        subprocess.run(["rm", "-rf", str(home / d)], check=True)
    r = sluice_run(daemon, workdir, parent, out, job([f"127.0.0.9:{port}"], home, ca), home,
                   "--name", "learn2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hello from sluice-demo-pkg" in r.stdout and "seeded" in r.stdout
    # ... and one more destination is denied, exactly that one.
    for d in ("work", "node_modules", "npm-cache"):
        subprocess.run(["rm", "-rf", str(home / d)], check=True)
    r = sluice_run(daemon, workdir, parent, out,
                   job([f"127.0.0.9:{port}", f"127.0.0.10:{port}"], home, ca), home,
                   "--name", "learn3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"connect 127.0.0.9:{port} OK" in r.stdout
    assert f"connect 127.0.0.10:{port} Operation not permitted" in r.stdout
    assert "seeded" in r.stdout and "hello from sluice-demo-pkg" in r.stdout


def test_burst_loses_no_destination(box, daemon, servers, workdir):
    """5,000 connects to 50 destinations as fast as they go: the event rate limit drops most
    events, the kernel's records drop none, and every destination is in the suggestion."""
    dsts = [[f"127.0.1.{i % 25 + 1}", servers.ports[i // 25]] for i in range(50)]
    sb = box("burst", "return { egress = {} }\n", "--mode", "audit")
    r = run_in(sb.cg, [PY, str(HERE / "burst.py"),
                       json.dumps({"mode": "burst", "dsts": dsts, "count": 5000})],
               workdir, timeout=180)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ok"] == 5000, res
    show = sb.show()
    assert show["audit"]["audited"] >= 5000 and show["audit"]["lost"] == 0
    assert show["counters"]["events"]["rate_limited"] > 0  # the events did not keep up
    r = daemon.cli("policy", "suggest", "burst")
    assert r.returncode == 0, r.stderr
    for host, port in dsts:
        assert f'{{ "{host}:{port}", proto = "tcp" }},' in r.stdout, (host, port)
    assert "100 calls" in r.stdout


# ---- handlers run dry in audit mode; the records survive a restart ----

from conftest import ENV_SECRETS  # noqa: E402

ROOT = HERE.parents[1]

REFUSING = """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outboundByHost = {
    ["api.test"] = function(req, env, ctx)
      req.headers:set("x-auth-token", env.VCS_TOKEN)
      sluice.log("seen", req.method, req.path)
      if req.method ~= "GET" then return Response.new("no writes", { status = 405 }) end
      if req.path:find("^/boom") then error("no booms here") end
      return fetch(req)
    end,
  },
}
"""


def curl(daemon, cg, name, workdir, *args):
    """(status, body) of one request from inside sandbox @name, trusting its CA."""
    ca = Path(workdir) / f"{name}-ca.pem"
    if not ca.exists():
        r = daemon.cli("ca", name)
        assert r.returncode == 0, r.stderr
        ca.write_text(r.stdout)
    r = subprocess.run([str(ROOT / "tools/in-sandbox"), str(cg), str(Path(workdir) / "resolv.conf"),
                        "curl", "-sS", "--max-time", "20", "--cacert", str(ca),
                        "-o", "-", "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def test_handler_refusal_goes_on_in_audit_mode_and_is_recorded(box, daemon, workdir,
                                                                 upstreams):
    """A handler's refusal (a Response it makes with a 4xx, an error it raises) is recorded
    and the request goes upstream as the handler left it (its injected credential too);
    enforce mode refuses the same requests. The suggestion keeps the handler and the
    intercept entry, and lists the requests with their counts."""
    secret = ENV_SECRETS["VCS_TOKEN"]
    sb = box("dry", REFUSING, "--mode", "audit")
    mark = upstreams.nginx.mark()
    assert curl(daemon, sb.cg, "dry", workdir, "https://api.test/headers")[0] == 200
    code, body = curl(daemon, sb.cg, "dry", workdir, "-d", "hello", "https://api.test/echo")
    assert code == 200 and "hello" in body, body  # refused by the handler, went on
    assert curl(daemon, sb.cg, "dry", workdir, "-d", "again", "https://api.test/echo")[0] == 200
    code, body = curl(daemon, sb.cg, "dry", workdir, "https://api.test/boom/1?t=x")
    assert code == 404 and "not found" in body, body  # the handler raised; the backend's 404
    upstreams.nginx.wait_requests(4, since=mark)
    seen = upstreams.nginx.requests_seen(since=mark)
    assert len(seen) == 4
    assert all(s["h_x_auth_token"] == secret for s in seen)  # injected, refused or not
    every = daemon.events("dry")
    assert [e for e in every if e.get("type") == "log"], every
    assert all(e.get("mode") == "audit" for e in every), \
        [e for e in every if e.get("mode") != "audit"]
    ev = [e for e in every if e.get("type") == "http"]
    audited = [e for e in ev if e["verdict"] == "audit"]
    assert sorted((e["method"], e["path"], e["status"], e["refused_status"]) for e in audited) \
        == [("GET", "/boom/1", 404, 502), ("POST", "/echo", 200, 405),
            ("POST", "/echo", 200, 405)], audited
    assert all(e["handler"] == "outboundByHost[api.test]" for e in audited)
    assert any("answered 405" in e["reason"] for e in audited)
    assert any("no booms here" in e["reason"] for e in audited)
    assert secret not in json.dumps(ev)
    au = sb.show()["audit"]
    assert (au["requests"], au["requests_refused"], au["records_lost"]) == (4, 3, 0), au
    r = daemon.cli("sandbox", "show", "dry")
    assert "4 intercepted requests, 3 of them refused by a handler" in r.stdout, r.stdout

    r = daemon.cli("policy", "suggest", "dry")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert 'outboundByHost' in text and 'intercept = { "api.test" }' in text, text
    assert "--   GET api.test/headers: 1 request (200 x1)" in text, text
    assert "--   POST api.test/echo: 2 requests (200 x2)" in text, text
    assert "--   GET api.test/boom/1: 1 request (404 x1)" in text, text
    assert "--     REFUSED 2 of them when enforced: the policy's handler " \
           "outboundByHost[api.test] answered 405" in text, text
    assert "REFUSED 1 of them when enforced: handler outboundByHost[api.test] failed" in text
    assert "t=x" not in text and secret not in text
    p = Path(workdir) / "dry-suggested.lua"
    p.write_text(text)
    chk = subprocess.run([str(BUILD / "sluice"), "policy", "check", str(p)],
                         capture_output=True, text=True, timeout=30)
    assert chk.returncode == 0, chk.stdout + chk.stderr

    # Enforced: the handler's answers stand.
    sb.mode("enforce")
    code, body = curl(daemon, sb.cg, "dry", workdir, "-d", "hello", "https://api.test/echo")
    assert code == 405 and body == "no writes", body
    assert curl(daemon, sb.cg, "dry", workdir, "https://api.test/boom/1")[0] == 502
    assert curl(daemon, sb.cg, "dry", workdir, "https://api.test/headers")[0] == 200


def test_restart_keeps_audit_records(fresh_daemon, cgroups, servers, workdir, upstreams):
    """What audit mode saw in DNS and the proxy survives a restart of sluiced, a clean stop
    (SIGTERM) and a crash (SIGKILL after the sweep wrote the records), as the kernel's counts
    do: the suggestion still names what was resolved, not its address, and the requests."""
    port = servers.ports[0]
    d = fresh_daemon.start()
    cg = cgroups.make("kept")
    pol = write_policy(workdir, "kept", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
""")
    r = d.cli("sandbox", "add", "kept", "--cgroup", str(cg), "--policy", pol, "--mode", "audit")
    assert r.returncode == 0, r.stderr
    assert probe(cg, [{"op": "resolve", "name": "learnme.test", "family": 4},
                      connect("127.0.0.32", port)], workdir) == [["127.0.0.32"], "OK"]
    assert curl(d, cg, "kept", workdir, "https://api.test/headers")[0] == 200
    before = d.cli("policy", "suggest", "kept").stdout
    assert f'{{ "learnme.test:{port}", proto = "tcp" }},' in before, before
    assert "--   GET api.test/headers: 1 request (200 x1)" in before, before

    d.signal(signal.SIGTERM)
    d.start()
    assert "sandbox kept adopted" in d.read_log()
    after = d.cli("policy", "suggest", "kept").stdout
    assert f'{{ "learnme.test:{port}", proto = "tcp" }},' in after, after
    assert "127.0.0.32" not in after  # the name explains the address, as before
    assert "--   GET api.test/headers: 1 request (200 x1)" in after, after

    # A crash: what the sweep wrote (within seconds) is what the next sluiced knows.
    assert curl(d, cg, "kept", workdir, "https://api.test/headers")[0] == 200
    saved = Path(d.state) / "sandboxes" / "kept.audit"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if saved.exists() and [h["count"] for h in json.loads(saved.read_text())["http"]] == [2]:
            break
        time.sleep(0.2)
    d.signal(signal.SIGKILL)
    d.start()
    after = d.cli("policy", "suggest", "kept").stdout
    assert "--   GET api.test/headers: 2 requests (200 x2)" in after, after
    assert f'{{ "learnme.test:{port}", proto = "tcp" }},' in after, after
    # Removing the sandbox removes its records.
    assert d.cli("sandbox", "rm", "kept").returncode == 0
    assert not saved.exists()


def test_suggestion_never_collapses_onto_a_public_suffix(box, daemon, servers, workdir):
    """Many names below github.io and co.uk (public suffixes), each used, stay one entry each
    however low the collapse threshold; siblings below a registrable domain do collapse."""
    port = servers.ports[0]
    sb = box("psl", 'return { egress = { private = { "127.0.0.0/8" } } }\n', "--mode", "audit")
    names = [f"user{i}.github.io" for i in range(6)] + [f"shop{i}.co.uk" for i in range(6)] \
        + [f"{x}.cdn.learn.test" for x in "abc"]
    res = sb.probe(*[{"op": "resolve", "name": n, "family": 4} for n in names],
                   connect("127.0.0.30", port), connect("127.0.0.33", port))
    assert res == [["127.0.0.30"]] * 12 + [["127.0.0.33"]] * 3 + ["OK", "OK"], res
    r = daemon.cli("policy", "suggest", "psl", "--collapse", "2")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "*.github.io" not in text and "*.co.uk" not in text, text
    for n in names[:12]:
        assert f'{{ "{n}:{port}", proto = "tcp" }},' in text, (n, text)
    assert f'{{ "*.cdn.learn.test:{port}", proto = "tcp" }},' in text, text
    assert "a.cdn.learn.test:" not in text
    assert "127.0.0.30" not in text  # the names explain the address
    p = Path(workdir) / "psl-suggested.lua"
    p.write_text(text)
    chk = subprocess.run([str(BUILD / "sluice"), "policy", "check", str(p)],
                         capture_output=True, text=True, timeout=30)
    assert chk.returncode == 0, chk.stdout + chk.stderr


def test_names_resolved_before_audit_mode_explain_its_records(box, daemon, servers):
    """A name resolved while enforcing (a learned entry, found by its address through the
    learned set's index) names what audit mode then records at that address on another port;
    an address no name resolved to stays an address."""
    port, other = servers.ports[0], servers.ports[1]
    sb = box("prior", f'return {{ egress = {{ allow = {{ "allowed.test:{port}" }}, '
                      'private = { "127.0.0.0/8" } } }\n')
    assert sb.probe({"op": "resolve", "name": "allowed.test", "family": 4},
                    connect("127.0.0.5", other)) == [["127.0.0.5"], "EPERM"]
    sb.mode("audit")
    assert sb.probe(connect("127.0.0.5", other), connect("127.0.0.31", other)) == ["OK", "OK"]
    r = daemon.cli("policy", "suggest", "prior")
    assert r.returncode == 0, r.stderr
    assert f'{{ "allowed.test:{other}", proto = "tcp" }},' in r.stdout, r.stdout
    assert f'"127.0.0.31:{other}"' in r.stdout and "127.0.0.5:" not in r.stdout, r.stdout


MANY = r"""
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
c = http.client.HTTPSConnection("api.test", 443, context=ctx, timeout=20)
codes = {}
paths = [f"/files/x/{i}?token={i}" for i in range(300)] + [f"/p{i}" for i in range(4200)]
for p in paths:
    c.request("GET", p)
    r = c.getresponse()
    r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
print(codes)
"""


def test_busy_job_grows_counts_not_records(fresh_daemon, cgroups, workdir, upstreams):
    """Requests are aggregated per method, host and path prefix (queries and deeper segments
    dropped), and the records are bounded: past 4,096 of them a request is counted as lost
    and the suggestion says it is not complete."""
    d = fresh_daemon.start()
    cg = cgroups.make("many")
    pol = write_policy(workdir, "many", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
""")
    r = d.cli("sandbox", "add", "many", "--cgroup", str(cg), "--policy", pol, "--mode", "audit")
    assert r.returncode == 0, r.stderr
    ca = Path(workdir) / "many-ca.pem"
    ca.write_text(d.cli("ca", "many").stdout)
    t0 = time.monotonic()
    r = run_in(cg, [PY, "-c", MANY, str(ca)], workdir, timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{404: 4500}", r.stdout
    took = time.monotonic() - t0
    text = d.cli("policy", "suggest", "many").stdout
    assert "--   GET api.test/files/x: 300 requests (404 x300)" in text, text[:3000]
    assert "token" not in text
    lines = [l for l in text.splitlines() if l.startswith("--   GET api.test/p")]
    assert len(lines) == 4096 - 1, (len(lines), took)  # one record is /files/x
    assert "NOT COMPLETE: 0 connections, 0 names and 105 requests were not recorded" in text
    assert d.cli("sandbox", "rm", "many").returncode == 0


def test_suggestion_under_an_active_handler_says_where_entries_apply(box, daemon, servers):
    """A handler whose egress replaces the policy's was active while audit mode recorded:
    the suggestion keeps the handler and says the learned entries are for the policy's
    egress, which the handler replaces while it is active."""
    port = servers.ports[0]
    sb = box("hlearn", """
return {
  egress = {},
  outboundHandlers = {
    closed = { egress = { allow = { "127.0.0.5:1" } }, handle = function() end },
  },
}
""", "--mode", "audit", "--handler", "closed")
    assert sb.probe(connect("127.0.0.9", port)) == ["OK"]
    r = daemon.cli("policy", "suggest", "hlearn")
    assert r.returncode == 0, r.stderr
    assert f'{{ "127.0.0.9:{port}", proto = "tcp" }},' in r.stdout, r.stdout
    assert "outboundHandlers" in r.stdout
    assert "-- NOTE: handler closed was active" in r.stdout, r.stdout
    assert "outboundHandlers.closed.egress" in r.stdout
