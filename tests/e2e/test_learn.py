# SPDX-License-Identifier: MIT
"""Audit mode and learning a policy, end to end: what the rules deny is allowed and recorded
(kernel, DNS, proxy), the switch to enforce is atomic and closes what enforce forbids, and
`sluice policy suggest` / `sluice run --learn` turn the records into a policy that works."""
import json
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
    sb.mode("enforce")
    switched = time.time()
    out, _ = loop.communicate(timeout=60)
    res = json.loads(out)
    before = [x for x in res if x[1] < switched - 0.2]
    after = [x for x in res if x[0] > switched]
    assert len(before) > 20 and len(after) > 20, (len(before), len(after))
    assert all(x[2] == "OK" for x in before), [x for x in before if x[2] != "OK"][:5]
    assert all(x[2] == "EPERM" for x in after), [x for x in after if x[2] != "EPERM"][:5]
