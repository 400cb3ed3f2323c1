# SPDX-License-Identifier: MIT
"""sl_proxied, the kernel's records of intercepted connections for the proxy: one map per
sandbox with a quota, keyed with the client's network namespace. A sandbox that makes records
nobody takes (it points its intercepted connections at a listener of its own, in a network
namespace it made) fills only its own map: its next intercepted connect() fails with EPERM,
another sandbox's intercepted requests go on; sandbox rm takes the records with it."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, IN_SANDBOX, Daemon, purge_pins, run_in, write_policy

QUOTA = 4096  # SL_PROXIED_PER_SANDBOX

# Outside any sandbox: a network namespace of its own with a listener on the sandbox's proxy
# port that accepts and holds every connection but is not sluiced, so it never takes a record.
# (A sandbox cannot bind that port itself: the kernel's bind guard.) Prints its pid, then runs
# until stdin closes.
HOLDER = r"""
import ctypes, os, select, socket, subprocess, sys, threading
port, limit = int(sys.argv[1]), int(sys.argv[2])
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
    sys.exit("unshare failed")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (3 * limit, 3 * limit))
lst = socket.socket()
lst.bind(("127.0.0.1", port))
lst.listen(limit)
held = []
def serve():
    while True:
        c, _ = lst.accept()
        held.append(c)
threading.Thread(target=serve, daemon=True).start()
print(os.getpid(), flush=True)
sys.stdin.read()
"""

# In the sandbox: resolve api.test through sluice (installs the intercepted address), enter the
# holder's network namespace, then connect to the intercepted address until refused, keeping
# every connection open (a closed client takes its record with it). Reports, waits for a line
# on stdin, closes everything.
FILLER = r"""
import ctypes, errno, json, os, resource, socket, sys, time
holder, limit = int(sys.argv[1]), int(sys.argv[2])
ip = socket.getaddrinfo("api.test", 443, socket.AF_INET)[0][4][0]
resource.setrlimit(resource.RLIMIT_NOFILE, (3 * limit, 3 * limit))
fd = os.open(f"/proc/{holder}/ns/net", os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
    sys.exit("setns failed")
probe = socket.socket()
cookie = probe.getsockopt(socket.SOL_SOCKET, 71, 8)  # SO_NETNS_COOKIE
held, ok, err = [], 0, None
t0 = time.monotonic()
for i in range(limit):
    c = socket.socket()
    c.settimeout(5)
    try:
        c.connect((ip, 443))
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        c.close()
        break
    held.append(c)
    ok += 1
print(json.dumps({"ip": ip, "ok": ok, "err": err, "secs": time.monotonic() - t0,
                  "cookie": int.from_bytes(cookie, "little")}), flush=True)
sys.stdin.readline()
for s in held:
    s.close()
print("released", flush=True)
"""


def holder(port, limit):
    h = subprocess.Popen([PY, "-c", HOLDER, str(port), str(limit)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = h.stdout.readline()
    assert line.strip().isdigit(), h.stderr.read()
    return h, int(line)


def stop(p):
    if p and p.poll() is None:
        p.kill()
    if p:
        p.wait()


def filler(cg, workdir, holder_pid, limit):
    return subprocess.Popen(
        [IN_SANDBOX, str(cg), str(Path(workdir) / "resolv.conf"), PY, "-c", FILLER,
         str(holder_pid), str(limit)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dns_only(dnsmasq):
    return ["--dns-upstream", f"127.0.0.1:{dnsmasq.port}", "--dns-min-ttl", "1",
            "--dns-grace", "1"]


@pytest.fixture(scope="module")
def daemon(workdir, dnsmasq):
    """A sluiced of this module's own. The proxy's accept is what these tests look at (a
    connection it took a record for and kept, or closed): no HTTPS upstream is needed."""
    d = Daemon(workdir, "proxied", extra=["--purge", *dns_only(dnsmasq)])
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def tcp_probe(cg, workdir, host, port):
    code = f"""
import errno, socket
socket.getaddrinfo("api.test", 443, socket.AF_INET)  # sluice installs the address
s = socket.socket()
s.settimeout(5)
try:
    s.connect(({host!r}, {port}))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
else:
    # Closed at once, a socket the proxy has not yet accepted takes its kernel record with it
    # (sl_sockops, TCP_CLOSE) and the proxy would find none. Half-closed, it stays until the
    # proxy has accepted it, read the end and closed its side.
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    try:
        s.recv(1)
    except OSError:
        pass
"""
    r = run_in(cg, [PY, "-c", code], workdir)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def show(daemon, name):
    r = daemon.cli("sandbox", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def inner_records(daemon, sandbox_id):
    """The (netns cookie, port) keys of a sandbox's sl_proxied map."""
    pin = f"{daemon.bpffs}/sl_proxied"
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", pin, "key",
                        *[str(b) for b in sandbox_id.to_bytes(4, "little")]],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None
    inner = json.loads(r.stdout)["value"]
    inner_id = inner if isinstance(inner, int) else int.from_bytes(
        bytes(int(x, 16) for x in inner), "little")
    r = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(inner_id)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = []
    for e in json.loads(r.stdout):
        k = bytes(int(x, 16) for x in e["key"])
        out.append((int.from_bytes(k[0:8], "little"), int.from_bytes(k[24:26], "little")))
    return out


def connections_after(daemon, name, accepted):
    """The proxy's connection counters once it has accepted `accepted` connections (or 10 s
    passed): the kernel completes a handshake from the listen queue, and sluiced's loop
    accepts it on a later turn, possibly after the client has already returned."""
    deadline = time.monotonic() + 10
    while True:
        c = show(daemon, name)["proxy"]["connections"]
        if c["accepted"] >= accepted or time.monotonic() > deadline:
            return c
        time.sleep(0.05)


def host_netns_cookie():
    import socket
    with socket.socket() as s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), "little")


def test_a_sandbox_over_its_quota_hurts_only_itself(daemon, cgroups, workdir):
    policy = """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""
    cga, cgb = cgroups.make("pxfill"), cgroups.make("pxother")
    daemon.add("pxfill", cga, write_policy(workdir, "pxfill", policy))
    daemon.add("pxother", cgb, write_policy(workdir, "pxother", policy))
    sa = show(daemon, "pxfill")
    fill = hold = None
    try:
        hold, hpid = holder(sa["proxy"]["port"], QUOTA + 50)
        fill = filler(cga, workdir, hpid, QUOTA + 50)
        line = fill.stdout.readline()
        assert line, fill.stderr.read()
        st = json.loads(line)
        # Every record it made is its own, in its own namespace: the quota, then EPERM.
        assert st["ok"] == QUOTA and st["err"] == "EPERM", st
        assert st["secs"] < 8, st  # before sluiced's sweep could free anything
        recs = inner_records(daemon, sa["id"])
        assert len(recs) == QUOTA
        assert {c for c, _ in recs} == {st["cookie"]} and st["cookie"] != host_netns_cookie()

        # The other sandbox: its intercepted connection is redirected, and the proxy finds
        # its record and keeps it (a connection without one is closed as not redirected).
        before = show(daemon, "pxother")["proxy"]["connections"]
        assert tcp_probe(cgb, workdir, st["ip"], 443) == "OK"
        after = connections_after(daemon, "pxother", before["accepted"] + 1)
        assert after["accepted"] == before["accepted"] + 1
        assert after["unredirected"] == before["unredirected"] == 0
        # The filler's own sandbox, back in the host namespace: refused in the kernel.
        assert tcp_probe(cga, workdir, st["ip"], 443) == "EPERM"
        m = daemon.metrics()
        assert m['sluice_limits_reached_total{sandbox="pxfill",limit="proxied"}'] >= 2
        assert m['sluice_limits_reached_total{sandbox="pxother",limit="proxied"}'] == 0
        evs = [e for e in daemon.events("pxfill") if "sl_proxied quota" in e.get("reason", "")]
        assert evs and evs[-1]["op"] == "connect" and evs[-1]["dst"] == f"{st['ip']}:443"

        # Its connections closed, the records go with them and it works again.
        fill.stdin.write("go\n")
        fill.stdin.flush()
        assert fill.stdout.readline().strip() == "released"
        fill.wait(timeout=30)
        stop(hold)
        # Each close removes its record (sockops, TCP_CLOSE); a socket the kernel still
        # closes in the background goes at the latest with the sweep.
        deadline = time.monotonic() + 20
        while len(inner_records(daemon, sa["id"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inner_records(daemon, sa["id"]) == []
        assert tcp_probe(cga, workdir, st["ip"], 443) == "OK"
    finally:
        stop(fill)
        stop(hold)
        daemon.cli("sandbox", "rm", "pxfill")
        daemon.cli("sandbox", "rm", "pxother")
    # Gone with the sandbox.
    assert inner_records(daemon, sa["id"]) is None


def test_records_nobody_takes_are_swept_and_go_with_rm(daemon, cgroups, workdir):
    policy = """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""
    cg = cgroups.make("pxsweep")
    daemon.add("pxsweep", cg, write_policy(workdir, "pxsweep", policy))
    sb = show(daemon, "pxsweep")
    hold, hpid = holder(sb["proxy"]["port"], 20)
    fill = filler(cg, workdir, hpid, 20)
    try:
        st = json.loads(fill.stdout.readline())
        assert st["ok"] == 20 and st["err"] is None
        assert len(inner_records(daemon, sb["id"])) == 20
        # Older than SL_PROXIED_MAX_AGE_S (10 s), swept within the next 5 s, while the
        # connections are still open.
        deadline = time.monotonic() + 20
        while inner_records(daemon, sb["id"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert inner_records(daemon, sb["id"]) == []
        assert show(daemon, "pxsweep")["proxy"]["connections"]["never_accepted"] == 20
    finally:
        stop(fill)
        stop(hold)
        daemon.cli("sandbox", "rm", "pxsweep")


def test_a_client_gone_before_the_accept_is_not_called_unredirected(daemon, cgroups, workdir):
    """A client that connects and closes while sluiced has not yet accepted: the kernel
    completes both handshakes on its own and removes the record with the closed socket. The
    proxy, accepting later, closes the connection quietly: it is no connection that bypassed
    the kernel. sluiced is stopped (SIGSTOP) to hold the accept back."""
    import os
    import signal
    policy = """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""
    cg = cgroups.make("pxgone")
    daemon.add("pxgone", cg, write_policy(workdir, "pxgone", policy))
    sb = show(daemon, "pxgone")
    code = """
import socket, sys
ip = socket.getaddrinfo("api.test", 443, socket.AF_INET)[0][4][0]
print(ip, flush=True)
sys.stdin.readline()
s = socket.create_connection((ip, 443), timeout=5)
s.close()
print("closed", flush=True)
"""
    p = subprocess.Popen([IN_SANDBOX, str(cg), str(Path(workdir) / "resolv.conf"), PY, "-c",
                          code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        ip = p.stdout.readline().strip()
        assert ip == "127.0.0.20", p.stderr.read()
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        stopped = True
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "closed", p.stderr.read()
        p.wait(timeout=10)
        # The kernel acknowledged the client's FIN for the queued socket and dropped the record.
        deadline = time.monotonic() + 10
        while inner_records(daemon, sb["id"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inner_records(daemon, sb["id"]) == []
        os.kill(daemon.proc.pid, signal.SIGCONT)
        stopped = False
        # The proxy has taken the queued connection once a later one is counted.
        assert tcp_probe(cg, workdir, "127.0.0.20", 443) == "OK"
        c = connections_after(daemon, "pxgone", 1)
        assert c["accepted"] == 1 and c["unredirected"] == 0, c
        assert not [e for e in daemon.events("pxgone")
                    if "not redirected" in e.get("reason", "")]
    finally:
        if stopped:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        stop(p)
        daemon.cli("sandbox", "rm", "pxgone")


def test_older_pinned_sl_proxied_is_recreated(cgroups, workdir, dnsmasq):
    """A sluiced that pinned the old global map (key without a network namespace) leaves it
    under the pin directory: the next start replaces it, says so, and interception works."""
    import os
    d = Daemon(workdir, "pxold", extra=["--purge", *dns_only(dnsmasq)])
    try:
        os.makedirs(d.bpffs, exist_ok=True)
        r = subprocess.run(["bpftool", "map", "create", f"{d.bpffs}/sl_proxied", "type", "hash",
                            "key", "20", "value", "64", "entries", "65536", "name",
                            "sl_proxied"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        d.start()
        assert "sl_proxied was pinned by an older sluiced" in d.read_log()
        cg = cgroups.make("pxold")
        d.add("pxold", cg, write_policy(workdir, "pxold", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""))
        assert tcp_probe(cg, workdir, "127.0.0.20", 443) == "OK"
        c = connections_after(d, "pxold", 1)
        assert c["accepted"] == 1 and c["unredirected"] == 0
        d.cli("sandbox", "rm", "pxold")
    finally:
        d.cleanup()
