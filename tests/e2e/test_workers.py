# SPDX-License-Identifier: MIT
"""sluiced --workers N: sandboxes spread over worker threads (the fewest first, ties to the
lowest index), DNS and HTTPS with secret injection through sandboxes on different workers at
once, a switch, reload and removal of a sandbox on one worker while another worker's sandbox
is busy, --workers 1, a restart with another --workers adopting every sandbox, and a bad
--workers refused with a clear error."""
import json
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import (BUILD, ENV_SECRETS, SLOW, Daemon, dns_args, probe, run_in, write_env_file,
                      write_policy)

SECRET = ENV_SECRETS["VCS_TOKEN"]

POLICY = """
local private = { "127.0.0.0/8" }
return {
  egress = { intercept = { "api.test" }, private = private },
  outbound = function(req, env, ctx)
    req.headers:set("x-auth-token", env.VCS_TOKEN)
    return fetch(req)
  end,
  outboundHandlers = {
    noHttp = { egress = { intercept = { "api.test" }, private = private },
               handle = function() return Response.new(nil, { status = 403 }) end },
  },
}
"""

# The reload: api.test is no longer intercepted, so nothing of it resolves or connects.
POLICY_CLOSED = """
return {
  egress = { private = { "127.0.0.0/8" } },
  outboundHandlers = { noHttp = { egress = {}, handle = function() return nil end } },
}
"""


@pytest.fixture
def workers_daemon(workdir, request, dnsmasq, upstreams):
    """A daemon of its own with the secrets file; the test starts it with its --workers."""
    env_file = write_env_file(workdir, ENV_SECRETS)
    d = Daemon(workdir, "w" + str(abs(hash(request.node.nodeid)) % 10**8),
               extra=[*dns_args(dnsmasq, upstreams), "--env-file", env_file])
    made = []
    d.made = made
    try:
        yield d
    finally:
        if d.proc and d.proc.poll() is None:
            for name in made:
                d.cli("sandbox", "rm", name)
        d.cleanup()


class Box:
    def __init__(self, daemon, cgroups, workdir, name, policy=POLICY):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        self.cg = cgroups.make(name)
        r = daemon.cli("sandbox", "add", name, "--cgroup", str(self.cg), "--policy",
                       str(write_policy(workdir, name, policy)))
        assert r.returncode == 0, r.stderr
        daemon.made.append(name)
        self.ca = Path(workdir) / f"{name}-ca.pem"
        self.ca.write_text(daemon.cli("ca", name).stdout)

    def show(self):
        r = self.daemon.cli("sandbox", "show", self.name, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def worker(self):
        return self.show()["worker"]

    def headers(self):
        """GET https://api.test/headers from inside: (status, the headers nginx's backend
        saw, as the sandbox gets them back), or (-curl's exit code, stderr)."""
        r = run_in(self.cg, ["curl", "-sS", "--max-time", str(int(20 * SLOW)), "--cacert",
                             str(self.ca), "-w", "\n%{http_code}", "https://api.test/headers"],
                   self.workdir)
        if r.returncode:
            return -r.returncode, r.stderr
        body, _, code = r.stdout.rpartition("\n")
        return int(code), (json.loads(body)["headers"] if code == "200" else body)

    def resolve(self, name="api.test"):
        return probe(self.cg, [{"op": "resolve", "name": name, "family": 4}], self.workdir)[0]


def worker_counts(daemon):
    m = daemon.metrics()
    return {k: v for k, v in m.items() if k.startswith("sluice_worker_sandboxes")}


def assert_injected(status_headers):
    status, headers = status_headers
    assert status == 200, headers
    # The secret went upstream (the backend saw it) and came back masked.
    assert headers["x-auth-token"] == "*" * len(SECRET)


def test_spread_and_traffic_on_three_workers(workers_daemon, cgroups, workdir, upstreams):
    d = workers_daemon.start("--workers", "3")
    boxes = [Box(d, cgroups, workdir, f"wk-spread{i}") for i in range(4)]
    # The fewest sandboxes first, ties to the lowest index: 0, 1, 2, then 0 again.
    assert [b.worker() for b in boxes] == [0, 1, 2, 0]
    assert worker_counts(d) == {'sluice_worker_sandboxes{worker="0"}': 2,
                                'sluice_worker_sandboxes{worker="1"}': 1,
                                'sluice_worker_sandboxes{worker="2"}': 1}
    r = d.cli("sandbox", "ls", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    listed = listed["sandboxes"] if isinstance(listed, dict) else listed
    assert {s["name"]: s["worker"] for s in listed} == {b.name: w for b, w in
                                                        zip(boxes, [0, 1, 2, 0])}
    # DNS and HTTPS with injection through the sandboxes of the three workers at once.
    mark = upstreams.nginx.mark()
    results = {b.name: [] for b in boxes[:3]}

    def traffic(b):
        for _ in range(4):
            results[b.name].append((b.resolve(), b.headers()))

    threads = [threading.Thread(target=traffic, args=(b,)) for b in boxes[:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120 * SLOW)
    for name, rs in results.items():
        assert len(rs) == 4, name
        for addrs, got in rs:
            assert addrs == ["127.0.0.20"], (name, addrs)
            assert_injected(got)
    seen = upstreams.nginx.wait_requests(12, since=mark, host="api.test")
    assert len(seen) >= 12 and all(r["h_x_auth_token"] == SECRET for r in seen)
    # A worker's events reach the main thread's followers.
    assert boxes[2].resolve("denied.test") == "EAI_NONAME"
    evs = d.events(boxes[2].name)
    assert any(e.get("type") == "http" and e.get("status") == 200 for e in evs), evs[-5:]
    assert any(e.get("type") == "dns" and e.get("verdict") == "deny" for e in evs), evs[-5:]


def test_switch_reload_rm_on_one_worker_while_another_is_busy(workers_daemon, cgroups, workdir,
                                                              upstreams):
    d = workers_daemon.start("--workers", "3")
    busy = Box(d, cgroups, workdir, "wk-busy")
    other = Box(d, cgroups, workdir, "wk-other")
    assert (busy.worker(), other.worker()) == (0, 1)
    assert_injected(other.headers())
    stop = threading.Event()
    got = []

    def keep_busy():
        while not stop.is_set():
            got.append(busy.headers())

    t = threading.Thread(target=keep_busy)
    t.start()
    try:
        r = d.cli("handler", "set", other.name, "noHttp")
        assert r.returncode == 0, r.stderr
        assert other.show()["handler"] == "noHttp"
        assert other.headers()[0] == 403
        r = d.cli("handler", "clear", other.name)
        assert r.returncode == 0, r.stderr
        assert_injected(other.headers())
        r = d.cli("policy", "reload", other.name, "--policy",
                  str(write_policy(workdir, "wk-other-closed", POLICY_CLOSED)))
        assert r.returncode == 0, r.stderr
        assert other.resolve() == "EAI_NONAME"
        r = d.cli("sandbox", "rm", other.name)
        assert r.returncode == 0, r.stderr
        d.made.remove(other.name)
        assert d.cli("sandbox", "show", other.name).returncode != 0
        # Its worker has nothing left; the busy one still has its sandbox.
        assert worker_counts(d)['sluice_worker_sandboxes{worker="1"}'] == 0
    finally:
        stop.set()
        t.join(timeout=60 * SLOW)
    assert len(got) >= 2
    for g in got:
        assert_injected(g)


def test_one_worker(workers_daemon, cgroups, workdir, upstreams):
    d = workers_daemon.start("--workers", "1")
    a = Box(d, cgroups, workdir, "wk-one-a")
    b = Box(d, cgroups, workdir, "wk-one-b")
    assert (a.worker(), b.worker()) == (0, 0)
    assert worker_counts(d) == {'sluice_worker_sandboxes{worker="0"}': 2}
    for box in (a, b):
        assert box.resolve() == ["127.0.0.20"]
        assert_injected(box.headers())


def test_restart_with_other_workers_adopts_all(workers_daemon, cgroups, workdir, upstreams):
    d = workers_daemon.start("--workers", "3")
    boxes = [Box(d, cgroups, workdir, f"wk-re{i}") for i in range(5)]
    assert sorted(b.worker() for b in boxes) == [0, 0, 1, 1, 2]
    d.stop()
    d.start("--workers", "2")
    assert "adopted 5 sandboxes" in d.read_log()
    assert sorted(b.worker() for b in boxes) == [0, 0, 0, 1, 1]
    assert worker_counts(d) == {'sluice_worker_sandboxes{worker="0"}': 3,
                                'sluice_worker_sandboxes{worker="1"}': 2}
    for box in (boxes[0], boxes[4]):
        assert box.resolve() == ["127.0.0.20"]
        assert_injected(box.headers())
    d.stop()
    d.start("--workers", "1")
    assert {b.worker() for b in boxes} == {0}
    assert_injected(boxes[2].headers())


@pytest.mark.parametrize("value", ["0", "65", "-1", "two", ""])
def test_bad_workers_is_a_clear_error(value):
    r = subprocess.run([str(BUILD / "sluiced"), "--workers", value], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2
    assert "--workers wants 1..64" in r.stderr


def test_help_lists_workers():
    r = subprocess.run([str(BUILD / "sluiced"), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0 and "--workers N" in r.stdout
