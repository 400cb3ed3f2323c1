# SPDX-License-Identifier: MIT
"""Escapes through the network layer (issue 13, review findings F1, F6, F7), each tried from
inside a sandbox as an unprivileged user, each paired with the allowed twin and, where the
kernel would let it through without sluice, with the same call outside the sandbox.

- Routing headers and IPv4 options: the connect/sendmsg hooks judge one address, the packet
  would leave for another. The setsockopt program refuses them (EPERM), the egress program
  drops what a control message adds per datagram, and an AF_PACKET capture on lo (outside the
  sandbox, in the test's own network namespace) must see nothing go to the routing header's
  address. The namespace holds fd00:5e::2 (the allowed address) and fd00:5e::9 (where the
  routing header points), so no packet ever leaves the machine.
- The daemon's listeners: 0.0.0.0, ::, v4-mapped and the sandbox's own address reach them as
  well as 127.0.0.1 does, and binding their ports is refused, also while sluiced is stopped.
- Inbound connections accepted by a sandboxed server keep working (they are not judged).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IN_SANDBOX, PY, RUN_ID, bpftool_map, free_port, \
    listener_port_bit, write_policy
from standin import StandIn, ip

HERE = Path(__file__).resolve().parent
ESCAPE = str(HERE / "netescape.py")
CAPTURE = str(HERE / "capture.py")
USER = "nobody"
ALLOWED6, ELSEWHERE6, ALLOWED4, PORT = "fd00:5e::2", "fd00:5e::9", "127.0.0.2", 7000
IPV6_2292RTHDR, IPV6_2292PKTOPTIONS, IPV6_RTHDR = 5, 6, 57


def inside(cg, resolv, ops, user=USER, netns=None):
    argv = [IN_SANDBOX, *(["--netns", netns] if netns else []),
            *(["--user", user] if user else []), str(cg), str(resolv), PY, ESCAPE,
            json.dumps(ops)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def outside(ops, netns=None):
    argv = [*(["nsenter", f"--net={netns}"] if netns else []), PY, ESCAPE, json.dumps(ops)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class Capture:
    """capture.py in @netns: what went out on its lo while the block ran."""

    def __init__(self, netns, sinks=(PORT,)):
        self.proc = subprocess.Popen(["nsenter", f"--net={netns}", PY, CAPTURE, "20",
                                      *map(str, sinks)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.packets = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)  # loopback delivery is immediate; this only absorbs scheduling
        out, _ = self.proc.communicate(timeout=30)
        self.packets = json.loads(out)


@pytest.fixture(scope="module")
def esc(daemon, cgroups, workdir):
    """A namespaced sandbox whose namespace holds the addresses of the routing tests."""
    files = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-esc-"))
    files.chmod(0o755)
    (files / "resolv.conf").write_text("nameserver 127.0.0.153\n")
    ct = StandIn(cgroups, files, "esc")
    try:
        for a in (ALLOWED6, ELSEWHERE6):
            ip("-n", ct.ns, "addr", "add", f"{a}/128", "dev", "lo", "nodad")
        policy = write_policy(workdir, "esc", f"""
return {{
  egress = {{
    allow = {{
      {{ "[{ALLOWED6}]:{PORT}", proto = "udp" }},
      {{ "{ALLOWED4}:{PORT}", proto = "udp" }},
      "{ct.ns_ip}",                  -- the sandbox's own address, any port
    }},
  }},
}}
""")
        r = daemon.cli("sandbox", "add", "esc", "--cgroup", str(ct.cg), "--netns", ct.netns,
                       "--policy", str(policy))
        assert r.returncode == 0, r.stderr
        yield ct
        daemon.cli("sandbox", "rm", "esc")
    finally:
        ct.close()
        shutil.rmtree(files, ignore_errors=True)


def run_esc(ct, ops, user=USER):
    return inside(ct.cg, ct.resolv, ops, user=user, netns=ct.netns)


def show(daemon, name):
    r = daemon.cli("sandbox", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rthdr(opt, host=ALLOWED6, port=PORT):
    return {"op": "rthdr_sockopt", "opt": opt, "via": ELSEWHERE6, "host": host, "port": port}


def test_routing_header_by_setsockopt_refused(esc, daemon):
    # Without sluice the header sends the datagram to fd00:5e::9, which the policy denies.
    with Capture(esc.netns) as cap:
        assert outside([rthdr(IPV6_RTHDR)], netns=esc.netns) == [["OK", "OK"]]
    assert any(p["dst"] == ELSEWHERE6 and p["rthdr"] for p in cap.packets), cap.packets

    before = show(daemon, "esc")["counters"]["denied"]["setsockopt"]
    dns53 = {"op": "dns", "host": ALLOWED6, "port": 53, "name": "denied.test"}
    with Capture(esc.netns) as cap:
        got = run_esc(esc, [rthdr(IPV6_RTHDR), rthdr(IPV6_2292RTHDR),
                            {**dns53, "rthdr_via": ELSEWHERE6}, dns53,
                            {"op": "sendto", "host": ALLOWED6, "port": PORT, "data": "plain"}])
        # As root in the sandbox too (IPV6_2292RTHDR wants CAP_NET_RAW on older kernels;
        # IPV6_2292PKTOPTIONS sets sticky options from control messages).
        got_root = run_esc(esc, [rthdr(IPV6_2292RTHDR), rthdr(IPV6_2292PKTOPTIONS)], user=None)
    # The header is refused; the same socket's datagram without it goes where it was sent.
    assert got == [["EPERM", "OK"], ["EPERM", "OK"], "EPERM", "OK", "OK"]
    assert got_root == [["EPERM", "OK"], ["EPERM", "OK"]]
    assert not [p for p in cap.packets if p["dst"] == ELSEWHERE6 or p["rthdr"]], cap.packets
    assert [p for p in cap.packets if p["dst"] == ALLOWED6 and p["dport"] == PORT]
    sb = show(daemon, "esc")
    assert sb["counters"]["denied"]["setsockopt"] == before + 5
    evs = [e for e in daemon.events("esc") if e.get("op") == "setsockopt"]
    assert {e["option"] for e in evs} >= {"IPV6_RTHDR", "IPV6_2292RTHDR", "IPV6_2292PKTOPTIONS"}
    assert all(e["level"] == "ipv6" for e in evs)


def test_routing_header_by_control_message_goes_nowhere(esc):
    """sendmsg() with an IPV6_RTHDR control message: the per-datagram form no setsockopt
    hook sees. Kernels with Mobile IPv6 accept a type 2 header there (the egress program
    drops the datagram: EPERM); kernels without it refuse the message (EINVAL). Either way
    nothing reaches the header's address; the egress program's drop itself is checked packet
    by packet in tests/unit/test_egress.c."""
    ops = [{"op": "rthdr_cmsg", "type": t, "via": ELSEWHERE6, "host": ALLOWED6, "port": PORT}
           for t in (2, 4)]
    with Capture(esc.netns) as cap:
        got = run_esc(esc, ops) + run_esc(esc, ops, user=None)
    assert all(g in ("EPERM", "EINVAL") for g in got), got
    assert not [p for p in cap.packets if p["dst"] == ELSEWHERE6 or p["rthdr"]], cap.packets


def test_ipv4_options_refused_and_dropped(esc, daemon):
    opts = {"op": "ipopts_sockopt", "host": ALLOWED4, "port": PORT, "data": "opts"}
    cmsg = {"op": "retopts_cmsg", "host": ALLOWED4, "port": PORT, "data": "retopts"}
    with Capture(esc.netns) as cap:
        assert outside([opts, cmsg], netns=esc.netns) == [["OK", "OK"], "OK"]
    assert len([p for p in cap.packets if p["ipopts"]]) == 2, cap.packets

    before = show(daemon, "esc")["counters"]["denied"]
    with Capture(esc.netns) as cap:
        got = run_esc(esc, [opts, cmsg, {"op": "sendto", "host": ALLOWED4, "port": PORT}])
    # IP_OPTIONS by setsockopt: EPERM. IP_RETOPTS by control message: the egress program
    # drops the datagram, which udp_sendmsg reports as EPERM.
    assert got == [["EPERM", "OK"], "EPERM", "OK"]
    assert not [p for p in cap.packets if p["ipopts"]], cap.packets
    assert len([p for p in cap.packets if p["dst"] == ALLOWED4 and p["dport"] == PORT]) == 2
    after = show(daemon, "esc")["counters"]["denied"]
    assert after["setsockopt"] == before["setsockopt"] + 1
    assert after["egress_packets"] == before["egress_packets"] + 1
    ev = [e for e in daemon.events("esc") if e.get("op") == "egress"]
    assert ev and ev[-1]["reason"] == "ip_options" and ev[-1]["dst"] == f"{ALLOWED4}:{PORT}"


def test_other_socket_options_untouched(esc):
    """Only the options that reroute are refused: others reach the kernel as given, also
    past a page (the sockopt hook hands such buffers back to the kernel untouched), while
    IP_OPTIONS of that size is refused like a small one. Outside the kernel itself answers
    EINVAL (options are at most 40 bytes)."""
    op = [{"op": "other_sockopts"}]
    assert run_esc(esc, op) == [[0x10, "OK", "OK", "EPERM"]]
    assert outside(op) == [[0x10, "OK", "OK", "EINVAL"]]


def test_own_address_reaches_no_listener(esc, daemon):
    """The sandbox's own address (allowed, any port) at its DNS listener's port: the packet
    would go through lo to a local listener, and is dropped; another port of the same
    address works."""
    dns_port = show(daemon, "esc")["dns"]["port"]
    ns_ip = esc.ns_ip
    got = run_esc(esc, [{"op": "sendto", "host": ns_ip, "port": dns_port},
                        {"op": "sendto", "host": ns_ip, "port": PORT},
                        {"op": "sendto", "host": "0.0.0.0", "port": PORT}])
    # 0.0.0.0 is no address the policy names: denied by the connect hook's rules.
    assert got == ["EPERM", "OK", "EPERM"]
    ev = [e for e in daemon.events("esc") if e.get("op") == "egress"]
    assert ev[-1]["reason"] == "listener" and ev[-1]["dst"] == f"{ns_ip}:{dns_port}"


@pytest.fixture(scope="module")
def lbox(daemon, cgroups, workdir, servers):
    """A host-namespace sandbox whose policy names every loopback form, any port: only the
    listener guard stands between it and the daemon's listeners."""
    cg = cgroups.make("lguard")
    daemon.add("lguard", cg, write_policy(workdir, "lguard", """
return {
  egress = {
    allow = { "0.0.0.0", "[::]", "127.0.0.1", "[::1]" },
    intercept = { "api.test" },
  },
}
"""))
    yield cg
    daemon.cli("sandbox", "rm", "lguard")


def conn(proto, host, port):
    return {"op": "connect", "proto": proto, "host": host, "port": port}


def test_every_loopback_form_of_a_listener_is_refused(lbox, daemon, servers, workdir,
                                                     cgroups):
    sb = show(daemon, "lguard")
    own = [sb["dns"]["port"], sb["proxy"]["port"]]
    # Another sandbox's listener: reaching it would resolve names under that one's policy.
    daemon.add("lguard2", cgroups.make("lguard2"), write_policy(workdir, "lguard2", """
return { egress = { allow = { "*.wild.test" } } }
"""))
    others = [show(daemon, "lguard2")["dns"]["port"]]
    pa = servers.ports[0]
    forms = ["0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "127.0.0.1", "::1"]
    ops, want = [], []
    for h in forms:
        ops.append(conn("tcp", h, pa))  # the allowed twin: a server on that port
        want.append("OK")
        for p in own + others:
            ops.append(conn("tcp", h, p))
            want.append("EPERM")
    ops += [{"op": "sendto", "host": "0.0.0.0", "port": own[0]},
            {"op": "sendto", "host": "::", "port": own[0]},
            {"op": "sendto", "host": "0.0.0.0", "port": pa}]
    want += ["EPERM", "EPERM", "OK"]
    try:
        assert inside(lbox, Path(workdir) / "resolv.conf", ops) == want
    finally:
        daemon.cli("sandbox", "rm", "lguard2")
    # Outside the sandbox the same addresses reach the listener.
    assert outside([conn("tcp", "0.0.0.0", own[0]), conn("tcp", "::", own[0])]) == ["OK", "OK"]


def test_bind_of_a_listener_port_refused_even_while_sluiced_is_stopped(fresh_daemon, cgroups,
                                                                        workdir):
    d = fresh_daemon.start()
    cg = cgroups.make("squat")
    d.add("squat", cg, write_policy(workdir, "squat", """
return { egress = { allow = { "127.0.0.1" }, intercept = { "api.test" } } }
"""))
    sb = show(d, "squat")
    dns_port, proxy_port = sb["dns"]["port"], sb["proxy"]["port"]
    free = free_port()
    resolv = Path(workdir) / "resolv.conf"

    def binds():
        return [{"op": "bind", "proto": "udp", "host": "127.0.0.1", "port": dns_port},
                {"op": "bind", "proto": "udp", "host": "0.0.0.0", "port": dns_port},
                {"op": "bind", "proto": "tcp", "host": "::", "port": proxy_port},
                {"op": "bind", "proto": "tcp", "host": "::ffff:127.0.0.1", "port": dns_port},
                {"op": "bind", "proto": "tcp", "host": "127.0.0.1", "port": free},
                {"op": "bind", "proto": "udp", "host": "::1", "port": 0},
                # The proxy listens in TCP alone: its port number in UDP squats nothing.
                {"op": "bind", "proto": "udp", "host": "127.0.0.1", "port": proxy_port}]

    want = ["EPERM"] * 4 + ["OK", "OK", "OK"]
    assert inside(cg, resolv, binds()) == want
    assert show(d, "squat")["counters"]["denied"]["bind"] == 4
    ev = [e for e in d.events("squat") if e.get("op") == "bind"]
    assert len(ev) == 4 and ev[0]["addr"] == f"127.0.0.1:{dns_port}"
    d.signal(signal.SIGTERM)
    # No daemon: its ports are free (outside the sandbox they bind), and still refused
    # inside it, since the pinned maps and links stay.
    assert inside(cg, resolv, binds()) == want
    assert outside([{"op": "bind", "proto": "udp", "host": "127.0.0.1", "port": dns_port},
                    {"op": "bind", "proto": "tcp", "host": "::", "port": proxy_port}]) == \
        ["OK", "OK"]


# In a sandbox: a UDP socket on 127.0.0.1, its port chosen by the kernel (printed); then one
# datagram to 127.0.0.1:PORT for each PORT read from stdin, with the result printed.
HELD_UDP = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
for line in sys.stdin:
    try:
        s.sendto(b"x", ("127.0.0.1", int(line)))
        print("OK", flush=True)
    except OSError as e:
        print(errno.errorcode[e.errno], flush=True)
"""


def listener_key(port, proto, cookie=bytes(8)):
    """An sl_listeners key (bpf/sluice.h): 127.0.0.1 and the network namespace's cookie (8
    bytes; zeros: every namespace), the port in network order, AF_INET, the protocol; as
    bpftool's hex words."""
    k = bytes([127, 0, 0, 1]) + cookie + bytes(4) + port.to_bytes(2, "big") + bytes([2, proto])
    return k.hex(" ").split()


SO_NETNS_COOKIE = 71


def netns_cookie(netns=None):
    """The kernel's cookie of @netns (a path; None: ours), as a key's 8 bytes."""
    code = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"sys.stdout.write(s.getsockopt(socket.SOL_SOCKET, {SO_NETNS_COOKIE}, 8).hex())")
    argv = [*(["nsenter", f"--net={netns}"] if netns else []), PY, "-c", code]
    return bytes.fromhex(subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                        check=True).stdout)


class HeldUdp:
    """HELD_UDP in sandbox @cg: .port, send() (one datagram from it: "OK" or the errno name),
    register(proto, cookie) (its port as a listener's in the kernel table), unregister(i) (the
    i-th key registered); close() removes the keys and ends the process."""

    def __init__(self, cg, daemon, workdir):
        self.bpffs = daemon.bpffs
        self.table = daemon.bpffs + "/sl_listeners"
        self.keys = []
        self.bits = {}  # protocol: its bit in sl_listener_ports before register()
        self.p = subprocess.Popen([IN_SANDBOX, "--user", USER, str(cg), str(Path(workdir) /
                                   "resolv.conf"), PY, "-c", HELD_UDP], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd="/")
        try:
            self.port = int(self.p.stdout.readline())
        except ValueError:
            self.close()
            raise

    def send(self):
        self.p.stdin.write(f"{free_port()}\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def register(self, proto, cookie):
        # As sluiced writes a key: its port's bit in the index first (kept on until close()).
        if proto not in self.bits:
            self.bits[proto] = listener_port_bit(self.bpffs, self.port, proto, on=1)
        self.keys.append(listener_key(self.port, proto, cookie))
        bpftool_map("update", "pinned", self.table, "key", "hex", *self.keys[-1],
                    "value", "hex", "01", "00", "00", "00")

    def unregister(self, i):
        bpftool_map("delete", "pinned", self.table, "key", "hex", *self.keys[i])

    def close(self):
        for k in self.keys:
            subprocess.run(["bpftool", "map", "delete", "pinned", self.table, "key", "hex", *k],
                           capture_output=True, timeout=30)
        for proto, was in self.bits.items():
            listener_port_bit(self.bpffs, self.port, proto, on=was)
        self.p.stdin.close()
        self.p.wait(timeout=10)


def test_a_udp_socket_on_a_tcp_listeners_port_number_keeps_sending(lbox, daemon, workdir):
    """The kernel hands out ephemeral ports per protocol: a sandbox's UDP socket may hold the
    number sluiced's proxy listens on in TCP (a later sandbox's listener took it), and squats
    nothing. Its datagrams leave; only a UDP listener on that port makes it a squatter, whose
    datagrams the egress program drops. Staged by registering the socket's port as a
    listener's in the kernel table, first in TCP, then in UDP."""
    ours = netns_cookie()
    h = HeldUdp(lbox, daemon, workdir)
    try:
        assert h.send() == "OK"
        h.register(6, ours)  # TCP: the number is the proxy's, the socket is no squatter
        assert h.send() == "OK"
        h.register(17, ours)  # UDP: now it holds a listener's port
        assert h.send() == "EPERM"
        h.unregister(1)
        assert h.send() == "OK"
    finally:
        h.close()


def test_a_listener_port_is_its_namespaces_alone(esc, lbox, daemon, workdir):
    """A listener port is a number in one network namespace: the kernel hands the same number
    to sockets of every other namespace, and a sandbox there that gets it squats nothing. A
    container sandbox's listener ports stay refused inside its namespace, and bind on the host
    (from a host sandbox), in both protocols."""
    sb = show(daemon, "esc")
    ports = [sb["dns"]["port"]] + ([sb["proxy"]["port"]] if sb.get("proxy") else [])
    ops = [{"op": "bind", "proto": proto, "host": "127.0.0.1", "port": ports[0]}
           for proto in ("udp", "tcp")]
    ops += [{"op": "bind", "proto": "tcp", "host": "127.0.0.1", "port": p} for p in ports[1:]]
    assert run_esc(esc, ops) == ["EPERM"] * len(ops)
    # The host's own listeners (the session's other sandboxes') may hold one of the numbers:
    # those stay refused on the host, rightly.
    host = set()
    status, body = daemon.api("GET", "/v1/sandboxes")
    assert status == 200, body
    for b in body["sandboxes"]:
        x = show(daemon, b["name"])
        if not x.get("netns"):
            host |= {p for p in ((x.get("dns") or {}).get("port"),
                                 (x.get("proxy") or {}).get("port")) if p}
    want = ["EPERM" if o["port"] in host else "OK" for o in ops]
    assert inside(lbox, Path(workdir) / "resolv.conf", ops) == want


def test_a_udp_socket_on_a_port_of_another_namespaces_listener_keeps_sending(lbox, daemon,
                                                                              workdir):
    """The egress program's side of the same: a host sandbox's UDP socket whose port is a
    listener's of another namespace keeps sending; a listener of its own namespace on that
    port makes it a squatter. Staged by registering the socket's port in the kernel table
    under another namespace's cookie (a namespace made here), then under the host's."""
    ns = f"{RUN_ID}-ck"
    ip("netns", "add", ns)
    try:
        other, ours = netns_cookie(f"/run/netns/{ns}"), netns_cookie()
        assert other != ours and other != bytes(8)
        h = HeldUdp(lbox, daemon, workdir)
        try:
            assert h.send() == "OK"
            h.register(17, other)  # another namespace's UDP listener: not this socket's
            assert h.send() == "OK"
            h.register(17, ours)  # one of its own namespace: now it squats
            assert h.send() == "EPERM"
            h.unregister(1)
            assert h.send() == "OK"
        finally:
            h.close()
    finally:
        ip("netns", "del", ns, check=False)


SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET)
if sys.argv[2] == "bind":
    s.bind(("::1" if sys.argv[1] == "6" else "127.0.0.1", 0))
s.listen(4)  # without bind(): the kernel picks the port
s.settimeout(20)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(20)
req = c.recv(100)
c.sendall(req + b" " + b"x" * 200000)
c.close()
"""


CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:
    c.sendall(b"hello-inbound")
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
print(n)
"""


@pytest.mark.parametrize("fam,how", [("4", "bind"), ("6", "bind"), ("4", "listen")])
def test_inbound_connection_to_a_sandboxed_server_works(lbox, servers, workdir, fam, how):
    """Inbound connections are not judged (README: threat model): a server in the sandbox
    answers a client outside, a large answer included, while the same sandbox's outbound
    connect to a port its policy does not name fails."""
    p = subprocess.Popen([IN_SANDBOX, "--user", USER, str(lbox), str(Path(workdir) /
                          "resolv.conf"), PY, "-c", SERVER, fam, how],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        port = int(p.stdout.readline())
        host = "::1" if fam == "6" else "127.0.0.1"
        with socket.create_connection((host, port), timeout=10) as c:
            c.sendall(b"hello-inbound")
            got = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += b
        assert got.startswith(b"hello-inbound ") and len(got) == len(b"hello-inbound ") + 200000
        assert p.wait(timeout=10) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # A client in the same sandbox reaches it too (both ends judged as the policy says).
    p = subprocess.Popen([IN_SANDBOX, "--user", USER, str(lbox), str(Path(workdir) /
                          "resolv.conf"), PY, "-c", SERVER, fam, how],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        port = int(p.stdout.readline())
        host = "::1" if fam == "6" else "127.0.0.1"
        r = subprocess.run([IN_SANDBOX, "--user", USER, str(lbox), str(Path(workdir) /
                            "resolv.conf"), PY, "-c", CLIENT, host, str(port)],
                           capture_output=True, text=True, timeout=30, cwd="/")
        assert r.returncode == 0 and r.stdout.strip() == str(len(b"hello-inbound ") + 200000), \
            r.stderr
        assert p.wait(timeout=10) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # The outbound twin: a tcp port the policy does not name (it names only loopback forms,
    # and no sandbox may reach 127.0.0.2).
    assert inside(lbox, Path(workdir) / "resolv.conf",
                  [conn("tcp", "127.0.0.2", servers.ports[0])]) == ["EPERM"]
