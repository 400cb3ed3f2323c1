# SPDX-License-Identifier: MIT
"""UNIX sockets from a sandbox: denied unless egress.unix names the exact path or abstract name
(cgroup/connect_unix and cgroup/sendmsg_unix, Linux >= 6.7). Every listener here is made by the
test outside the sandbox and answers a connect from outside, so each EPERM is sluice's."""
import errno
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import PY, RUN_ID, Daemon, run_in, write_policy

# Runs in the sandbox: each op is [kind, address] with kind "stream" (connect, then read the
# listener's greeting) or "dgram" (sendto an unconnected datagram socket). Prints one result
# per op: "OK" or the errno name. A leading "@" is an abstract name.
UNIX_PROBE = r"""
import errno, json, os, socket, sys
out = []
for kind, addr in json.loads(sys.argv[1]):
    a = "\0" + addr[1:] if addr.startswith("@") else addr
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        if kind == "stream":
            s.connect(a)
            out.append("OK" if s.recv(16) == b"hi" else "NOGREETING")
        else:
            s.sendto(b"ping", a)
            out.append("OK")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
    finally:
        s.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def daemon(workdir, dnsmasq):
    """A sluiced of this module's own: no HTTPS upstream is needed here."""
    d = Daemon(workdir, "unix", extra=["--purge", "--dns-upstream", f"127.0.0.1:{dnsmasq.port}",
                                       "--dns-min-ttl", "1", "--dns-grace", "1"])
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def unix_probe(cg, ops, workdir, cwd=None):
    r = run_in(cg, [PY, "-c", UNIX_PROBE, json.dumps(ops)], workdir, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def unix_probe_outside(ops, cwd=None):
    r = subprocess.run([PY, "-c", UNIX_PROBE, json.dumps(ops)], capture_output=True, text=True,
                       timeout=30, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class UnixServers:
    """Stream listeners (each greets with "hi") and datagram sockets at filesystem paths and
    abstract names; records what reached each."""

    def __init__(self, d):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socks = []
        self.accepted = {}
        self.datagrams = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _addr(self, addr):
        return "\0" + addr[1:] if addr.startswith("@") else addr

    def stream(self, addr):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self._addr(addr))
        s.listen(16)
        self.socks.append((s, "stream", addr))
        self.accepted[addr] = 0
        return addr

    def dgram(self, addr):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(self._addr(addr))
        self.socks.append((s, "dgram", addr))
        self.datagrams[addr] = 0
        return addr

    def start(self):
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        return self

    def serve(self):
        import select
        by = {s: (kind, addr) for s, kind, addr in self.socks}
        while not self.stop.is_set():
            r, _, _ = select.select(list(by), [], [], 0.1)
            for s in r:
                kind, addr = by[s]
                if kind == "stream":
                    c, _ = s.accept()
                    c.sendall(b"hi")
                    c.close()
                    with self.lock:
                        self.accepted[addr] += 1
                else:
                    s.recv(64)
                    with self.lock:
                        self.datagrams[addr] += 1

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for s, _, _ in self.socks:
            s.close()


@pytest.fixture(scope="module")
def usrv(workdir):
    d = Path(workdir) / "unix"
    u = UnixServers(d)
    tag = RUN_ID
    u.listed = u.stream(str(d / "listed.sock"))
    u.other = u.stream(str(d / "other.sock"))
    u.abs_listed = u.stream(f"@{tag}-listed")
    u.abs_other = u.stream(f"@{tag}-other")
    u.dg_listed = u.dgram(str(d / "dg-listed.sock"))
    u.dg_other = u.dgram(str(d / "dg-other.sock"))
    u.abs_dg_listed = u.dgram(f"@{tag}-dg-listed")
    u.abs_dg_other = u.dgram(f"@{tag}-dg-other")
    u.h_only = u.stream(str(d / "handler-only.sock"))
    u.link = str(d / "link-to-listed.sock")
    os.symlink(u.listed, u.link)
    u.start()
    yield u
    u.close()


@pytest.fixture(scope="module")
def ubox(daemon, cgroups, usrv, workdir):
    policy = write_policy(workdir, "unixbox", f"""
return {{
  egress = {{
    unix = {{ "{usrv.listed}", "{usrv.abs_listed}", "{usrv.dg_listed}", "{usrv.abs_dg_listed}" }},
  }},
  outboundHandlers = {{
    onlyHandler = {{ egress = {{ unix = {{ "{usrv.h_only}" }} }},
                    handle = function() return Response.new(nil, {{ status = 403 }}) end }},
    closed = {{ egress = {{}}, handle = function() return Response.new(nil, {{ status = 403 }}) end }},
  }},
}}
""")
    cg = cgroups.make("unixbox")
    daemon.add("unixbox", cg, policy)
    yield cg
    daemon.cli("sandbox", "rm", "unixbox")


def test_every_listener_answers_outside_a_sandbox(usrv):
    ops = [["stream", usrv.listed], ["stream", usrv.other], ["stream", usrv.link],
           ["stream", usrv.abs_listed], ["stream", usrv.abs_other], ["dgram", usrv.dg_listed],
           ["dgram", usrv.dg_other], ["dgram", usrv.abs_dg_listed], ["dgram", usrv.abs_dg_other]]
    assert unix_probe_outside(ops) == ["OK"] * len(ops)
    assert unix_probe_outside([["stream", "listed.sock"]], cwd=str(Path(usrv.listed).parent)) == ["OK"]


def test_stream_listed_path_and_abstract_name_only(ubox, usrv, workdir):
    before = dict(usrv.accepted)
    assert unix_probe(ubox, [["stream", usrv.listed], ["stream", usrv.other],
                             ["stream", usrv.link], ["stream", usrv.abs_listed],
                             ["stream", usrv.abs_other]], workdir) == \
        ["OK", "EPERM", "EPERM", "OK", "EPERM"]
    assert usrv.accepted[usrv.other] == before[usrv.other]
    assert usrv.accepted[usrv.abs_other] == before[usrv.abs_other]


def test_relative_path_to_a_listed_socket_is_denied(ubox, usrv, workdir):
    d = str(Path(usrv.listed).parent)
    assert unix_probe(ubox, [["stream", "listed.sock"], ["stream", "./listed.sock"],
                             ["stream", d + "//listed.sock"], ["stream", usrv.listed]],
                      workdir, cwd=d) == ["EPERM", "EPERM", "EPERM", "OK"]


def test_dgram_sendto_listed_only(ubox, usrv, workdir):
    time.sleep(0.2)  # what earlier tests sent has arrived
    before = dict(usrv.datagrams)
    assert unix_probe(ubox, [["dgram", usrv.dg_listed], ["dgram", usrv.dg_other],
                             ["dgram", usrv.abs_dg_listed], ["dgram", usrv.abs_dg_other]],
                      workdir) == ["OK", "EPERM", "OK", "EPERM"]
    deadline = time.monotonic() + 2
    while usrv.datagrams[usrv.dg_listed] == before[usrv.dg_listed] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert usrv.datagrams[usrv.dg_listed] == before[usrv.dg_listed] + 1
    assert usrv.datagrams[usrv.abs_dg_listed] == before[usrv.abs_dg_listed] + 1
    assert usrv.datagrams[usrv.dg_other] == before[usrv.dg_other]
    assert usrv.datagrams[usrv.abs_dg_other] == before[usrv.abs_dg_other]


def test_control_socket_is_denied(ubox, daemon, usrv, workdir):
    # Root in the sandbox, and the file is there: only the kernel says no.
    assert unix_probe(ubox, [["stream", daemon.socket], ["stream", usrv.listed]], workdir) == \
        ["EPERM", "OK"]


def test_denials_are_counted_and_evented(ubox, daemon, usrv, workdir):
    unix_probe(ubox, [["stream", usrv.other], ["dgram", usrv.abs_dg_other]], workdir)
    evs = [e for e in daemon.events("unixbox") if e.get("family") == "unix"]
    assert any(e["dst"] == usrv.other and e["op"] == "connect" and e["socktype"] == "stream"
               for e in evs), evs
    assert any(e["dst"] == usrv.abs_dg_other and e["op"] == "sendmsg" and e["socktype"] == "dgram"
               for e in evs), evs
    m = daemon.metrics()
    assert m['sluice_connections_total{sandbox="unixbox",verdict="deny",proto="unix"}'] >= 2
    assert m['sluice_connections_total{sandbox="unixbox",verdict="allow",proto="unix"}'] >= 1


def test_show_lists_the_unix_entries(ubox, daemon, usrv):
    r = daemon.cli("sandbox", "show", "unixbox", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["unix"] == [usrv.listed, usrv.abs_listed, usrv.dg_listed,
                                            usrv.abs_dg_listed]
    r = daemon.cli("sandbox", "show", "unixbox")
    assert usrv.abs_listed in r.stdout and "unix:" in r.stdout


def test_unix_rules_follow_the_handler(ubox, daemon, usrv, workdir):
    ops = [["stream", usrv.listed], ["stream", usrv.h_only]]
    assert unix_probe(ubox, ops, workdir) == ["OK", "EPERM"]
    try:
        assert daemon.cli("handler", "set", "unixbox", "onlyHandler").returncode == 0
        assert unix_probe(ubox, ops, workdir) == ["EPERM", "OK"]
        assert daemon.cli("handler", "set", "unixbox", "closed").returncode == 0
        assert unix_probe(ubox, ops, workdir) == ["EPERM", "EPERM"]
    finally:
        assert daemon.cli("handler", "clear", "unixbox").returncode == 0
    assert unix_probe(ubox, ops, workdir) == ["OK", "EPERM"]


def unix_keys(daemon):
    """(sandbox_id, path) of every key of the daemon's sl_unix map."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", f"{daemon.bpffs}/sl_unix"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    keys = []
    for e in json.loads(r.stdout):
        raw = bytes(int(x, 16) for x in e["key"])
        sid = int.from_bytes(raw[0:4], "little")
        n = int.from_bytes(raw[4:8], "little")
        keys.append((sid, raw[8:8 + n]))
    return keys


def unix_key_hex(sandbox_id, path):
    raw = path.encode() if not path.startswith("@") else b"\0" + path[1:].encode()
    key = sandbox_id.to_bytes(4, "little") + len(raw).to_bytes(4, "little") + raw.ljust(108, b"\0")
    return [f"0x{b:02x}" for b in key]


def test_rules_go_with_rm_and_the_kernel_guards_the_control_socket(daemon, cgroups, usrv,
                                                                   workdir):
    cg = cgroups.make("unixrm")
    policy = write_policy(workdir, "unixrm", f'return {{ egress = {{ unix = {{ "{usrv.listed}" }} }} }}')
    daemon.add("unixrm", cg, policy)
    sb = json.loads(daemon.cli("sandbox", "show", "unixrm", "--json").stdout)
    assert (sb["id"], usrv.listed.encode()) in unix_keys(daemon)
    # The daemon's socket is in the kernel's guard (id 0): even an entry written straight into
    # the sandbox's own bank, past the policy compiler, does not open it.
    assert (0, daemon.socket.encode()) in unix_keys(daemon)
    for path in (daemon.socket, usrv.other):
        r = subprocess.run(["bpftool", "map", "update", "pinned", f"{daemon.bpffs}/sl_unix",
                            "key", *unix_key_hex(sb["id"], path), "value", "1", "0", "0", "0"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    assert unix_probe(cg, [["stream", daemon.socket], ["stream", usrv.other]], workdir) == \
        ["EPERM", "OK"]
    assert daemon.cli("sandbox", "rm", "unixrm").returncode == 0
    assert not [k for k in unix_keys(daemon) if k[0] & 0x7fffffff == sb["id"]]


@pytest.mark.parametrize("entry,why", [
    ("relative.sock", "absolute path"),
    ("/run//x.sock", "normalised"),
    ("/run/../x.sock", "normalised"),
    ("/run/x/", "normalised"),
    ("@", "abstract name"),
    ("/" + "x" * 108, "longer than"),
])
def test_bad_entries_are_refused(daemon, cgroups, workdir, entry, why):
    cg = cgroups.make("unixbad")
    policy = write_policy(workdir, "unixbad", f'return {{ egress = {{ unix = {{ "{entry}" }} }} }}')
    r = daemon.cli("sandbox", "add", "unixbad", "--cgroup", str(cg), "--policy", str(policy))
    assert r.returncode == 1 and why in r.stderr, r.stderr


def test_the_control_socket_cannot_be_listed(daemon, cgroups, workdir):
    cg = cgroups.make("unixctl")
    link = Path(workdir) / "ctl-link.sock"
    if not link.is_symlink():
        link.symlink_to(daemon.socket)
    for entry in (daemon.socket, str(link)):
        policy = write_policy(workdir, "unixctl", f'return {{ egress = {{ unix = {{ "{entry}" }} }} }}')
        r = daemon.cli("sandbox", "add", "unixctl", "--cgroup", str(cg), "--policy", str(policy))
        assert r.returncode == 1 and "control socket" in r.stderr, r.stderr
    # Nor through a handler's egress.
    policy = write_policy(workdir, "unixctl", f"""
return {{ outboundHandlers = {{ h = {{ egress = {{ unix = {{ "{daemon.socket}" }} }},
                                    handle = function() return Response.new("x") end }} }} }}""")
    assert daemon.cli("sandbox", "add", "unixctl", "--cgroup", str(cg), "--policy",
                      str(policy)).returncode == 0
    try:
        r = daemon.cli("handler", "set", "unixctl", "h")
        assert r.returncode == 1 and "control socket" in r.stderr, r.stderr
    finally:
        daemon.cli("sandbox", "rm", "unixctl")


# glibc asks nscd (/var/run/nscd/socket) before DNS; refused, it falls back to DNS, which sluice
# answers. The sandbox gets a private /run (its mount namespace) holding an nscd-like listener
# that would answer anything.
NSCD_PROBE = r"""
import json, socket, subprocess, sys
subprocess.run(["mount", "--bind", sys.argv[1], "/run"], check=True)
out = {}
try:
    out["addrs"] = sorted({a[4][0] for a in socket.getaddrinfo("allowed.test", 80, socket.AF_INET)})
except OSError as e:
    out["addrs"] = str(e)
try:
    out["denied"] = sorted({a[4][0] for a in socket.getaddrinfo("denied.test", 80, socket.AF_INET)})
except OSError as e:
    out["denied"] = type(e).__name__
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/var/run/nscd/socket")
    out["nscd"] = "OK"
except OSError as e:
    out["nscd"] = e.errno
print(json.dumps(out))
"""


def test_getaddrinfo_falls_back_to_sluice_dns_when_nscd_is_refused(daemon, cgroups, workdir):
    run = Path(workdir) / "fake-run"
    (run / "nscd").mkdir(parents=True, exist_ok=True)
    nscd_path = run / "nscd" / "socket"
    if nscd_path.exists():
        nscd_path.unlink()
    srv = UnixServers(run)
    srv.stream(str(nscd_path))
    srv.start()
    cg = cgroups.make("unixnscd")
    policy = write_policy(workdir, "unixnscd", """
return { egress = { allow = { "allowed.test:80" }, private = { "127.0.0.0/8" } } }""")
    daemon.add("unixnscd", cg, policy)
    try:
        # The listener answers outside a sandbox.
        assert unix_probe_outside([["stream", str(nscd_path)]]) == ["OK"]
        accepted = srv.accepted[str(nscd_path)]
        r = run_in(cg, [PY, "-c", NSCD_PROBE, str(run)], workdir)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out == {"addrs": ["127.0.0.5"], "denied": "gaierror", "nscd": errno.EPERM}, out
        assert srv.accepted[str(nscd_path)] == accepted
        # glibc did ask nscd first, and was refused.
        evs = [e for e in daemon.events("unixnscd") if e.get("family") == "unix"]
        assert any(e["dst"] == "/var/run/nscd/socket" for e in evs), evs
    finally:
        srv.close()
        daemon.cli("sandbox", "rm", "unixnscd")
