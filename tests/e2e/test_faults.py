# SPDX-License-Identifier: MIT
"""Faults, end to end, each with its expected outcome asserted: sluiced SIGKILLed and restarted
under a continuous probe from inside a sandbox (denied stays denied on every attempt, passthrough
keeps working, intercepted HTTPS fails cleanly while no daemon runs and works again after);
upstreams that are down, stall, reset or answer garbage (502/504, the daemon unaffected); a Lua
state out of memory next to a sandbox that keeps working; the state directory's disk full; the
sandbox's cgroup removed under it; the kernel rule map full (a new name is refused, never
allowed)."""
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import IN_SANDBOX, PY, SAN, bpf_links_of, map_dump, probe, run_in, write_policy

FAULT_ADDRS = {"reset.test": "127.0.0.41", "garbage.test": "127.0.0.42",
               "stall.test": "127.0.0.43", "cut.test": "127.0.0.44"}


def tcp(host, port):
    return {"op": "connect", "proto": "tcp", "host": host, "port": port}


class FaultServer:
    """A TLS server on ADDR:443 with a certificate of the test PKI that misbehaves after the
    handshake, once the request head has arrived:
      reset    closes with a TCP reset before any answer
      garbage  answers bytes that are not HTTP, then closes
      stall    answers nothing and holds the connection
      cut      sends a response head and part of the body, then resets"""

    def __init__(self, addr, mode, cert, key):
        self.mode, self.stop, self.held = mode, threading.Event(), []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, 443))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if r:
                conn, _ = self.sock.accept()
                threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn):
        try:
            conn.settimeout(10)
            s = self.ctx.wrap_socket(conn, server_side=True)
            got = b""
            while b"\r\n\r\n" not in got:
                piece = s.recv(4096)
                if not piece:
                    return
                got += piece
            if self.mode == "garbage":
                s.sendall(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n" * 4)
                s.close()
            elif self.mode == "stall":
                self.held.append(s)
                self.stop.wait(60)
            elif self.mode == "cut":
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                time.sleep(0.3)
                self.reset(conn)
            else:
                self.reset(conn)
        except (OSError, ssl.SSLError):
            pass

    @staticmethod
    def reset(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for s in self.held:
            try:
                s.close()
            except OSError:
                pass
        self.sock.close()


@pytest.fixture(scope="module")
def fault_servers(upstreams):
    cert, key = upstreams.pki.issue("faults", dns=list(FAULT_ADDRS))
    servers = {}
    try:
        for name, addr in FAULT_ADDRS.items():
            servers[name] = FaultServer(addr, name.split(".")[0], cert, key)
        yield servers
    finally:
        for s in servers.values():
            s.close()


class Box:
    """A sandbox of a daemon, with curl inside trusting the sandbox's CA."""

    def __init__(self, daemon, cgroups, workdir, name, policy):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        self.cg = cgroups.make(name)
        daemon.add(name, self.cg, write_policy(workdir, name, policy))
        self.ca = str(Path(workdir) / f"{name}-ca.pem")
        Path(self.ca).write_text(daemon.cli("ca", name).stdout)

    def curl(self, url, max_time=15):
        """(HTTP status or 0, curl's exit code)."""
        r = run_in(self.cg, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             "--max-time", str(max_time), "--cacert", self.ca, url],
                   self.workdir, timeout=max_time + 30)
        return int(r.stdout or 0), r.returncode

    def last_http_event(self):
        return [e for e in self.daemon.events(self.name) if e.get("type") == "http"][-1]

    def limits(self):
        m = self.daemon.metrics()
        pre = f'sluice_limits_reached_total{{sandbox="{self.name}",limit="'
        return {k[len(pre):-2]: v for k, v in m.items() if k.startswith(pre)}


INTERCEPT_FAULTS = """
return { egress = { intercept = { "api.test", "down.test", "reset.test", "garbage.test",
                                  "cut.test", "stall.test" },
                    private = { "127.0.0.0/8" } } }
"""


@pytest.fixture(scope="module")
def faults_box(daemon, cgroups, workdir, upstreams, fault_servers):
    b = Box(daemon, cgroups, workdir, "faults", INTERCEPT_FAULTS)
    yield b
    daemon.cli("sandbox", "rm", "faults")


@pytest.mark.parametrize("host,status,reason", [
    ("down.test", 502, "Connection refused"),
    ("reset.test", 502, "upstream"),
    ("garbage.test", 502, "malformed upstream response"),
])
def test_upstream_down_resetting_or_garbage_is_502(faults_box, daemon, host, status, reason):
    status_got, rc = faults_box.curl(f"https://{host}/bytes/10")
    assert (status_got, rc) == (status, 0)
    ev = faults_box.last_http_event()
    assert ev["status"] == status and ev["host"] == host and reason in ev["reason"], ev
    # The daemon is unaffected: the same sandbox's next request works.
    assert faults_box.curl("https://api.test/bytes/5") == (200, 0)
    assert daemon.proc.poll() is None


def test_upstream_reset_mid_response_ends_the_transfer(faults_box, daemon):
    """The head already went to the client: no status can follow, the transfer ends short
    (curl: partial file or receive error), and the next request works."""
    status, rc = faults_box.curl("https://cut.test/bytes/10")
    assert rc in (18, 56, 92) and status in (0, 200), (status, rc)
    assert faults_box.curl("https://api.test/bytes/5") == (200, 0)
    assert daemon.proc.poll() is None


def test_stalled_upstream_is_504_after_the_idle_timeout(fresh_daemon, cgroups, workdir,
                                                         upstreams, fault_servers):
    d = fresh_daemon
    d.extra += ["--http-idle-timeout", "2"]
    d.start()
    box = Box(d, cgroups, workdir, "stalled", INTERCEPT_FAULTS)
    t0 = time.monotonic()
    assert box.curl("https://stall.test/bytes/10") == (504, 0)
    assert 1.5 < time.monotonic() - t0 < 8
    ev = box.last_http_event()
    assert ev["status"] == 504 and "did not answer in time" in ev["reason"], ev
    assert box.curl("https://api.test/bytes/5") == (200, 0)
    assert d.proc.poll() is None


# ---- sluiced killed and restarted under a continuous probe ----

RESTART_PROBE = r"""
import errno, json, socket, ssl, struct, sys, time
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a["ca"])

def connect(host, port, kind=socket.SOCK_STREAM):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.settimeout(2)
        try:
            if kind == socket.SOCK_DGRAM:
                s.sendto(b"x", (host, port))
            else:
                s.connect((host, port))
            return "OK"
        except OSError as e:
            return errno.errorcode.get(e.errno, type(e).__name__)

def https():
    try:
        with socket.create_connection(("127.0.0.20", 443), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="api.test") as s:
                s.sendall(b"GET /bytes/1 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
                got = b""
                while True:
                    piece = s.recv(4096)
                    if not piece:
                        break
                    got += piece
                return int(got.split(b" ", 2)[1]) if got else "EOF"
    except Exception as e:
        return type(e).__name__

def dns(name):
    q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            # Connected: with no listener, the port unreachable comes back as ECONNREFUSED.
            s.connect(("127.0.0.153", 53))
            s.send(q)
            m = s.recv(4096)
        except OSError as e:
            return type(e).__name__
        return {"rcode": m[3] & 15, "answers": struct.unpack(">H", m[6:8])[0]}

out, end = [], time.time() + a["seconds"]
while time.time() < end and len(out) < 2000:
    t0 = time.time()
    r = {"t0": t0, "denied": connect("127.0.0.1", a["denied"]),
         "denied6": connect("::1", a["denied"]),
         "unlisted": connect("127.0.0.6", a["allowed"]),
         "udp": connect("127.0.0.1", a["denied"], socket.SOCK_DGRAM),
         "allowed": connect("127.0.0.1", a["allowed"]),
         "https": https(), "dns_denied": dns("denied.test")}
    r["t1"] = time.time()
    out.append(r)
    time.sleep(0.02)
print(json.dumps(out))
"""


def test_sigkill_and_restart_under_a_continuous_probe(fresh_daemon, cgroups, servers, workdir,
                                                       upstreams):
    pa, pb, _ = servers.ports
    d = fresh_daemon.start()
    box = Box(d, cgroups, workdir, "probed", f"""
return {{ egress = {{ allow = {{ "127.0.0.1:{pa}" }}, intercept = {{ "api.test" }},
                      private = {{ "127.0.0.0/8" }} }} }}
""")
    # The name resolves once; the kernel keeps its entry (TTL 300 s) across the restart.
    assert probe(box.cg, [{"op": "resolve", "name": "api.test", "family": 4}],
                 workdir) == [["127.0.0.20"]]
    # 2.5 s before the kill, 2 down, the restart (5 to 9 s under ASan), then rounds after.
    args = json.dumps({"ca": box.ca, "seconds": 20 if SAN else 8, "denied": pb, "allowed": pa})
    p = subprocess.Popen([IN_SANDBOX, str(box.cg), str(Path(workdir) / "resolv.conf"), PY,
                          "-c", RESTART_PROBE, args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)
        t_kill = time.time()
        d.signal(signal.SIGKILL)
        time.sleep(2)
        t_restart = time.time()
        d.start()
        t_up = time.time()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    rows = json.loads(out)
    before = [r for r in rows if r["t1"] < t_kill]
    down = [r for r in rows if r["t0"] > t_kill + 0.1 and r["t1"] < t_restart]
    after = [r for r in rows if r["t0"] > t_up + 0.5]
    print(f"probe: {len(rows)} rounds, {len(before)} before, {len(down)} down, "
          f"{len(after)} after; restart took {t_up - t_restart:.2f} s")
    assert len(before) >= 10 and len(down) >= 10 and len(after) >= 10
    # The kernel's half never pauses: every single attempt, whatever the daemon does.
    for r in rows:
        assert (r["denied"], r["denied6"], r["unlisted"], r["udp"]) == ("EPERM",) * 4, r
        assert r["allowed"] == "OK", r
        # (SSLZeroReturnError: a close_notify while the restarted daemon adopts the sandbox.)
        assert r["https"] in (200, "ConnectionRefusedError", "ConnectionResetError",
                              "SSLEOFError", "SSLError", "SSLZeroReturnError", "EOF",
                              "TimeoutError"), r
        # A denied name never resolves: NXDOMAIN from sluice, or no answer at all.
        assert not isinstance(r["dns_denied"], dict) or (
            r["dns_denied"]["rcode"] == 3 and r["dns_denied"]["answers"] == 0), r
    assert all(r["https"] == 200 for r in before), [r["https"] for r in before]
    # No daemon: intercepted connections are refused at once (the listener is gone), never
    # passed through to the upstream.
    assert all(r["https"] == "ConnectionRefusedError" for r in down), [r["https"] for r in down]
    assert all(r["dns_denied"] == "ConnectionRefusedError" for r in down)
    assert all(r["https"] == 200 for r in after), [r["https"] for r in after]
    assert all(r["dns_denied"]["rcode"] == 3 for r in after)
    assert "sandbox probed adopted" in d.read_log()


# ---- one sandbox's Lua state out of memory ----

def test_lua_out_of_memory_leaves_other_sandboxes_alone(daemon, cgroups, workdir, upstreams):
    hog = Box(daemon, cgroups, workdir, "luahog", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
  end,
}
""")
    calm = Box(daemon, cgroups, workdir, "luacalm", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    req.headers:set("x-handler", "calm")
    return fetch(req)
  end,
}
""")
    script = r"""
import http.client, json, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
out, end = [], time.time() + float(sys.argv[2])
while time.time() < end:
    t0 = time.time()
    try:
        c = http.client.HTTPSConnection("api.test", 443, context=ctx, timeout=20)
        c.request("GET", "/bytes/64")
        r = c.getresponse()
        out.append([t0, time.time(), r.status, len(r.read())])
        c.close()
    except Exception as e:
        out.append([t0, time.time(), type(e).__name__, 0])
    time.sleep(0.05)  # each request is 3 events (2 DNS): the kept ones stay the hog's too
print(json.dumps(out))
"""
    try:
        calm_run = subprocess.Popen([IN_SANDBOX, str(calm.cg),
                                     str(Path(workdir) / "resolv.conf"), PY, "-c", script,
                                     calm.ca, "6"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        t_hog0 = time.time()
        hog_results = [hog.curl("https://api.test/bytes/1", max_time=30) for _ in range(3)]
        t_hog1 = time.time()
        out, err = calm_run.communicate(timeout=90)
        assert calm_run.returncode == 0, err
    finally:
        if calm_run.poll() is None:
            calm_run.kill()
            calm_run.wait()
    assert hog_results == [(502, 0)] * 3
    ev = hog.last_http_event()
    assert ev["status"] == 502 and "not enough memory" in ev["reason"], ev
    calm_rows = json.loads(out)
    assert calm_rows and all(r[2:] == [200, 64] for r in calm_rows), calm_rows
    overlapping = [r for r in calm_rows if t_hog0 <= r[0] <= t_hog1]
    print(f"calm: {len(calm_rows)} requests, {len(overlapping)} while the hog ran out of "
          f"memory ({t_hog1 - t_hog0:.2f} s)")
    assert overlapping, "the calm sandbox made no request while the other ran out of memory"
    assert hog.limits()["lua_memory"] == 3
    assert calm.limits()["lua_memory"] == 0
    m = daemon.metrics()
    assert m['sluice_lua_memory_bytes{sandbox="luacalm"}'] < 4 << 20
    assert daemon.proc.poll() is None
    daemon.cli("sandbox", "rm", "luahog")
    daemon.cli("sandbox", "rm", "luacalm")


# ---- the state directory's disk full ----

def test_disk_full_refuses_adds_cleanly_and_existing_sandboxes_keep_working(
        fresh_daemon, cgroups, servers, workdir, tmp_path):
    pa, pb, _ = servers.ports
    d = fresh_daemon
    os.makedirs(d.state, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", d.state],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    policy = write_policy(workdir, "diskfull", f"""
return {{ egress = {{ allow = {{ "127.0.0.1:{pa}", "allowed.test:{pb}" }},
                      private = {{ "127.0.0.0/8" }} }} }}
""")
    filler = Path(d.state) / "filler"
    try:
        d.start()
        old = cgroups.make("disk-old")
        d.add("disk-old", old, policy)
        # Fill the file system.
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        assert os.statvfs(d.state).f_bavail == 0

        new = cgroups.make("disk-new")
        r = d.cli("sandbox", "add", "disk-new", "--cgroup", str(new), "--policy", str(policy))
        assert r.returncode == 1 and "No space left on device" in r.stderr, r.stderr
        # Nothing of it stays: not listed, no programs on its cgroup, no pins, no state.
        assert "disk-new" not in d.cli("sandbox", "ls").stdout
        assert bpf_links_of(new) == []
        assert not os.path.exists(f"{d.bpffs}/sandboxes/disk-new")
        assert not list(Path(d.state, "sandboxes").glob("disk-new*"))
        assert probe(new, [tcp("127.0.0.1", pb)], workdir) == ["OK"]  # not half-enforced

        # The sandbox added before keeps working, names resolving and all.
        assert probe(old, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb),
                           {"op": "resolve", "name": "allowed.test", "family": 4},
                           tcp("127.0.0.5", pb), tcp("127.0.0.5", pa)],
                     workdir) == ["OK", "EPERM", ["127.0.0.5"], "OK", "EPERM"]
        assert d.proc.poll() is None

        # Space again: adds work again.
        filler.unlink()
        d.add("disk-new", new, policy)
        assert probe(new, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)],
                     workdir) == ["OK", "EPERM"]
    finally:
        d.stop()
        subprocess.run(["umount", d.state], capture_output=True)


# ---- the sandbox's cgroup removed under it ----

def empty_and_remove(cg):
    (cg / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "populated 0" in (cg / "cgroup.events").read_text():
            break
        time.sleep(0.05)
    cg.rmdir()


def log_messages(d):
    """The daemon's log lines without their time and level."""
    return [l.split(": ", 1)[-1] for l in d.read_log().splitlines()]


def names(d):
    status, body = d.api("GET", "/v1/sandboxes")
    assert status == 200
    return {b["name"] for b in body["sandboxes"]}


def test_cgroup_removed_under_a_running_daemon_or_while_it_is_down(fresh_daemon, cgroups,
                                                                   servers, workdir):
    pa, _, _ = servers.ports
    d = fresh_daemon.start()
    policy = write_policy(workdir, "vanish",
                          f'return {{ egress = {{ allow = {{ "127.0.0.1:{pa}" }} }} }}')
    keep, gone, gone2 = (cgroups.make(n) for n in ("vanish-keep", "vanish-a", "vanish-b"))
    for cg in (keep, gone, gone2):
        d.add(cg.name, cg, policy)
    # A process in it, then none, then no cgroup at all: the registry's sweep notices.
    sleeper = subprocess.Popen([IN_SANDBOX, str(gone), str(Path(workdir) / "resolv.conf"),
                                "sleep", "60"])
    try:
        time.sleep(0.3)
        empty_and_remove(gone)
    finally:
        sleeper.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "vanish-a" in names(d):
        time.sleep(0.1)
    assert names(d) == {"vanish-keep", "vanish-b"}
    assert any(l.startswith("sandbox vanish-a: ") and "cgroup" in l and "removed" in l
               for l in log_messages(d)), d.read_log()
    assert not os.path.exists(f"{d.bpffs}/sandboxes/vanish-a")
    assert not Path(d.state, "sandboxes", "vanish-a.json").exists()
    assert d.proc.poll() is None

    # Removed while no daemon runs: the restarted one does not adopt it.
    d.signal(signal.SIGKILL)
    empty_and_remove(gone2)
    d.start()
    assert names(d) == {"vanish-keep"}
    assert any(l.startswith("sandbox vanish-b: ") and "cgroup" in l and "removing" in l
               for l in log_messages(d)), d.read_log()
    assert not os.path.exists(f"{d.bpffs}/sandboxes/vanish-b")
    assert probe(keep, [tcp("127.0.0.1", pa)], workdir) == ["OK"]


# ---- the kernel rule map full ----

def filler_policy(first, n):
    """n distinct /32 allow entries in 10.200.0.0/16 and up, from index first."""
    addrs = [f'"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}:9"'
             for i in range(first, first + n)]
    return "return { egress = { allow = { " + ", ".join(addrs) + " } } }"


MAX_RULES = 4096  # the --max-rules of the full-map test: small, so that filling is quick


def test_kernel_rule_map_full_refuses_new_names_never_allows(fresh_daemon, cgroups, servers,
                                                              workdir):
    """sl_hosts4 holds --max-rules addresses of all sandboxes together (4096 here). Filled for
    real with sandboxes of 256 address rules each (then smaller ones until not one more entry
    fits), a name resolving to a new address is answered SERVFAIL, its address stays denied,
    and the refusal is counted; a sandbox add is refused whole; freeing entries ends it."""
    pa, pb, _ = servers.ports
    d = fresh_daemon.start("--max-rules", str(MAX_RULES))
    victim = cgroups.make("full-victim")
    d.add("victim", victim, write_policy(workdir, "full-victim", f"""
return {{ egress = {{ allow = {{ "full.test:{pb}", "127.0.0.1:{pa}" }},
                      private = {{ "127.0.0.0/8" }} }} }}
"""))
    fill_cg = cgroups.make("full-fill")
    t0 = time.monotonic()
    n, first, size, added = 0, 0, 256, []
    while size >= 1:
        cg = fill_cg / f"f{n}"
        cg.mkdir(exist_ok=True)
        path = write_policy(workdir, f"fill{n}", filler_policy(first, size))
        r = d.cli("sandbox", "add", f"fill{n}", "--cgroup", str(cg), "--policy", str(path))
        if r.returncode == 0:
            added.append(f"fill{n}")
            first += size
        else:
            assert "the kernel rule map is full" in r.stderr, r.stderr
            assert bpf_links_of(cg) == []  # refused whole: nothing attached
            size //= 2
        n += 1
        assert n < 200 and time.monotonic() - t0 < 120
    print(f"rule map filled with {first} filler entries by {len(added)} sandboxes "
          f"in {time.monotonic() - t0:.1f} s")
    assert MAX_RULES - 16 < first < MAX_RULES

    # A name whose address is not in the kernel yet: refused, and its address stays denied.
    out = probe(victim, [{"op": "resolve", "name": "full.test", "family": 4},
                         tcp("127.0.0.45", pb), tcp("127.0.0.1", pa)], workdir)
    assert out[0] in ("EAI_AGAIN", "EAI_NONAME", "EAI_FAIL", "EAI_-3"), out
    assert out[1:] == ["EPERM", "OK"]
    ev = [e for e in d.events("victim") if e.get("type") == "dns" and e["name"] == "full.test"]
    assert ev and ev[-1]["verdict"] == "servfail" and "rule map is full" in ev[-1]["reason"]
    m = d.metrics()
    assert m['sluice_limits_reached_total{sandbox="victim",limit="kernel_rules"}'] >= 1
    assert d.proc.poll() is None

    # Room again: the same name resolves and connects.
    assert d.cli("sandbox", "rm", added[0]).returncode == 0
    assert probe(victim, [{"op": "resolve", "name": "full.test", "family": 4},
                          tcp("127.0.0.45", pb)], workdir) == [["127.0.0.45"], "OK"]


def test_prefixes_and_addresses_fill_their_own_maps_and_fail_closed(fresh_daemon, cgroups,
                                                                      servers, workdir):
    """--max-rules bounds each rule map: the prefixes' trie and the addresses' hash of a
    family (64 here). 50 /24s and 50 addresses fit together; 70 /24s do not, and that add is
    refused whole, nothing attached and nothing of it left in the kernel, while the sandbox
    that fit keeps its rules."""
    pa, pb, _ = servers.ports
    d = fresh_daemon.start("--max-rules", "64")
    nets = [f'"10.{200 + (i >> 8)}.{i & 255}.0/24:9"' for i in range(70)]
    addrs = [f'"10.100.0.{i}:9"' for i in range(49)] + [f'"127.0.0.1:{pa}"']
    fit = cgroups.make("fit-both")
    d.add("fit", fit, write_policy(workdir, "fit-both", "return { egress = { allow = { "
                                   + ", ".join(nets[:50] + addrs) + " } } }"))
    assert probe(fit, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)], workdir) == ["OK", "EPERM"]
    over = cgroups.make("over-trie")
    path = write_policy(workdir, "over-trie", "return { egress = { allow = { "
                        + ", ".join(nets + [f'"127.0.0.2:{pa}"']) + " } } }")
    r = d.cli("sandbox", "add", "over", "--cgroup", str(over), "--policy", str(path))
    assert r.returncode != 0 and "the kernel rule map is full" in r.stderr, r.stderr
    assert bpf_links_of(over) == []

    def entries(name):
        return len(map_dump(d.bpffs, name))

    deadline = time.monotonic() + 10
    while entries("sl_rules4") != 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (entries("sl_rules4"), entries("sl_hosts4")) == (50, 50)
    assert probe(fit, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)], workdir) == ["OK", "EPERM"]
    m = d.metrics()
    assert m["sluice_sandboxes"] == 1, m.get("sluice_sandboxes")
    assert d.cli("sandbox", "rm", "fit").returncode == 0


def map_max_entries(d, name):
    r = subprocess.run(["bpftool", "-j", "map", "show", "pinned", f"{d.bpffs}/{name}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["max_entries"]


def test_capacity_change_on_restart_migrates_or_refuses(fresh_daemon, cgroups, servers,
                                                        workdir):
    """The maps pinned by a sluiced of one --max-rules/--max-sandboxes are taken over by a
    sluiced of another: moved into maps of the new size while the old programs still decide
    (the sandbox's allowed and denied destinations stay so throughout), or, when they hold
    more than the new size, the start is refused saying which option to raise, and the old
    maps stay in force untouched."""
    pa, pb, _ = servers.ports
    d = fresh_daemon.start("--max-rules", "4096", "--max-sandboxes", "64")
    assert map_max_entries(d, "sl_hosts4") == 4096
    assert map_max_entries(d, "sl_sandboxes") == 64
    cg = cgroups.make("cap-box")
    d.add("cap", cg, write_policy(workdir, "cap", filler_policy(0, 100).replace(
        "allow = {", f'allow = {{ "127.0.0.1:{pa}", ')))
    want = [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)]
    assert probe(cg, want, workdir) == ["OK", "EPERM"]
    d.stop()
    d.start("--max-rules", "8192", "--max-sandboxes", "128")
    log = d.read_log()
    assert "sl_hosts4: 101 entries moved from a map of 4096 entries to one of 8192" in log, log
    assert map_max_entries(d, "sl_hosts4") == 8192
    for per_sandbox in ("sl_sandboxes", "sl_counters", "sl_evlimit", "sl_pxfull", "sl_proxied",
                        "sl_auditn", "sl_sni_ctr"):
        assert map_max_entries(d, per_sandbox) == 128, per_sandbox
    assert map_max_entries(d, "sl_listeners") == 4 * 128
    assert probe(cg, want, workdir) == ["OK", "EPERM"]
    d.stop()

    # Too small for what is in force: refused, nothing moved, enforcement as it was.
    with pytest.raises(RuntimeError) as exc:
        d.start("--max-rules", "64")
    assert "holds 101 entries, more than --max-rules allows (64): start sluiced with " \
           "--max-rules 101 or more" in str(exc.value), str(exc.value)
    assert map_max_entries(d, "sl_hosts4") == 8192
    assert probe(cg, want, workdir) == ["OK", "EPERM"]
    d.start("--max-rules", "101", "--max-sandboxes", "128")
    assert map_max_entries(d, "sl_hosts4") == 101
    assert probe(cg, want, workdir) == ["OK", "EPERM"]
    assert d.cli("sandbox", "rm", "cap").returncode == 0


# ---- bounds: each a clear refusal, counted ----

RAWHTTP = str(Path(__file__).with_name("rawhttp.py"))

DNS_TCP_CLIENTS = r"""
import json, socket, sys, time
n = int(sys.argv[1])
socks = [socket.create_connection(("127.0.0.153", 53), timeout=5) for _ in range(n)]
time.sleep(0.5)
closed = 0
for s in socks:
    s.settimeout(0.05)
    try:
        closed += s.recv(1) == b""
    except socket.timeout:
        pass
    except OSError:
        closed += 1
print(json.dumps({"closed": closed}))
"""


def test_bounds_are_refused_and_counted(daemon, cgroups, workdir, upstreams):
    """Heads over 64 KiB (431), req:text() over 1 MiB (413), resp:text() over 8 MiB (502),
    DNS over TCP past 64 clients (closed at accept): each answered, with an event, and
    counted in sluice_limits_reached_total; the daemon serves the next request."""
    box = Box(daemon, cgroups, workdir, "bounds", """
return {
  egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    if req.path == "/read" then return Response.new(tostring(#req:text())) end
    if req.path:sub(1, 7) == "/bytes/" then
      local r = fetch(req)
      return Response.new(tostring(#r:text()))
    end
    return fetch(req)
  end,
}
""")
    try:
        before = box.limits()
        r = run_in(box.cg, [PY, RAWHTTP, json.dumps({
            "connect": "api.test", "sni": "api.test", "ca": box.ca,
            "send": ["GET / HTTP/1.1\r\nHost: api.test\r\nX-Big: " + "a" * 70000 + "\r\n\r\n"]})],
            workdir)
        assert json.loads(r.stdout)["statuses"] == [431], r.stdout
        big = Path(workdir) / "bounds-body"
        big.write_bytes(b"z" * ((1 << 20) + 1))
        r = run_in(box.cg, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                            box.ca, "--data-binary", f"@{big}", "https://api.test/read"], workdir)
        assert r.stdout == "413", r.stderr
        assert box.curl(f"https://api.test/bytes/{(8 << 20) + 1}", max_time=30) == (502, 0)
        assert "larger than its handler may read" in box.last_http_event()["reason"]
        r = run_in(box.cg, [PY, "-c", DNS_TCP_CLIENTS, "70"], workdir)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["closed"] >= 6
        after = box.limits()
        grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert grew["http_head"] == 1 and grew["req_body"] == 1 and grew["resp_body"] == 1
        assert grew["dns_tcp"] >= 6
        assert any(e.get("reason") == "too many DNS clients over TCP"
                   for e in daemon.events("bounds"))
        assert box.curl("https://api.test/bytes/5") == (200, 0)
        assert daemon.proc.poll() is None
    finally:
        daemon.cli("sandbox", "rm", "bounds")


HOLD_CONNS = r"""
import socket, sys, time
held = [socket.create_connection(("127.0.0.20", 80), timeout=5) for _ in range(int(sys.argv[1]))]
time.sleep(float(sys.argv[2]))
"""


def test_total_connection_cap_across_sandboxes(fresh_daemon, cgroups, workdir, upstreams):
    """--http-max-conns-total 3: two connections held in one sandbox and one in another fill
    it; a fourth, in either, is closed at accept (counted for its sandbox), and works again
    once one goes."""
    d = fresh_daemon
    d.extra += ["--http-max-conns-total", "3", "--http-header-timeout", "30"]
    d.start()
    a = Box(d, cgroups, workdir, "total-a", INTERCEPT_FAULTS)
    b = Box(d, cgroups, workdir, "total-b", INTERCEPT_FAULTS)
    for box in (a, b):
        assert probe(box.cg, [{"op": "resolve", "name": "api.test", "family": 4}],
                     workdir) == [["127.0.0.20"]]
    resolv = str(Path(workdir) / "resolv.conf")
    holders = [subprocess.Popen([IN_SANDBOX, str(a.cg), resolv, PY, "-c", HOLD_CONNS, "2", "6"]),
               subprocess.Popen([IN_SANDBOX, str(b.cg), resolv, PY, "-c", HOLD_CONNS, "1", "6"])]
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(
                v for k, v in d.metrics().items()
                if k.startswith("sluice_http_connections_active")) < 3:
            time.sleep(0.1)
        status, rc = b.curl("http://api.test/bytes/1")
        assert status == 0 and rc in (52, 56), (status, rc)  # closed: empty reply or reset
        assert b.limits()["http_conns_total"] == 1 and a.limits()["http_conns_total"] == 0
        ev = [e for e in d.events("total-b") if e.get("verdict") == "reject"][-1]
        assert "--http-max-conns-total" in ev["reason"], ev
    finally:
        for h in holders:
            h.wait(timeout=15)
    assert b.curl("http://api.test/bytes/1") == (200, 0)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_refuses_without_spinning(fresh_daemon, cgroups, workdir, upstreams):
    """sluiced with 128 descriptors and a connection bound above that: connections past the
    descriptors are accepted and closed at once (counted), the loop does not spin on the
    listener, and once connections go the sandbox is served again."""
    d = fresh_daemon
    d.extra += ["--http-max-conns-total", "1000", "--http-max-conns", "1000",
                "--http-header-timeout", "30"]
    plain_argv = d.argv
    d.argv = lambda *more: ["prlimit", "--nofile=128:128", "--", *plain_argv(*more)]
    d.start()
    box = Box(d, cgroups, workdir, "fds", INTERCEPT_FAULTS)
    assert probe(box.cg, [{"op": "resolve", "name": "api.test", "family": 4}],
                 workdir) == [["127.0.0.20"]]
    holder = subprocess.Popen(
        [IN_SANDBOX, str(box.cg), str(Path(workdir) / "resolv.conf"), PY,
         str(Path(__file__).with_name("conns.py")),
         json.dumps({"addr": "127.0.0.20", "port": 80, "count": 200, "parallel": 200})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        opened = json.loads(holder.stdout.readline() or "{}")
        assert opened.get("open") == 200, (opened, holder.stderr.read())
        time.sleep(0.5)
        cpu0 = cpu_seconds(d.proc.pid)
        time.sleep(2)
        spent = cpu_seconds(d.proc.pid) - cpu0
        assert spent < 0.5, f"sluiced used {spent:.2f} s of CPU in 2 s while out of descriptors"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # (The control API itself waits for a descriptor meanwhile: asked once they are back.)
    time.sleep(0.5)
    refused = box.limits()["fds"]
    assert 200 - 128 <= refused < 200
    ev = [e for e in d.events("fds") if e.get("verdict") == "reject"]
    assert any("out of file descriptors" in e["reason"] for e in ev)
    assert box.curl("http://api.test/bytes/1") == (200, 0)
    assert d.proc.poll() is None
