# SPDX-License-Identifier: MIT
"""sluiced --own-listeners N: the sandboxes added past N share their worker's DNS and proxy
listeners. Each sandbox's queries and connections are still its own: answered under its own
policy (the egress program marks its datagrams and records its SYNs), injected with its own
secrets, counted in its own statistics, over UDP and TCP, IPv4 and IPv6, on two workers, and
across a restart. What reaches a shared listener without the kernel's mark or record (a host
process aiming at the port) is nobody's and gets nothing; a sandbox aiming at the port
directly is refused like at any listener."""
import socket
import struct
import threading

import pytest

from conftest import SLOW, probe
from test_workers import POLICY, Box, assert_injected, workers_daemon  # noqa: F401

# Another sandbox's policy: a name of its own, none of the intercepting ones'.
POLICY_OTHER = """
return { egress = { allow = { "allowed.test:80" }, private = { "127.0.0.0/8" } } }
"""


def dns_query(name, qid=0x1234):
    q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0\0\1\0\1"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q


def ports(box):
    s = box.show()
    return s["dns"]["port"], s["proxy"]["port"]


def test_shared_listeners_keep_each_sandbox_its_own(workers_daemon, cgroups, workdir,
                                                    upstreams):
    d = workers_daemon.start("--workers", "2", "--own-listeners", "1")
    own = Box(d, cgroups, workdir, "sh-own")
    a = Box(d, cgroups, workdir, "sh-a")
    b = Box(d, cgroups, workdir, "sh-b", POLICY_OTHER)
    c = Box(d, cgroups, workdir, "sh-c")
    assert [x.worker() for x in (own, a, b, c)] == [0, 1, 0, 1]
    # One set of listeners per worker for the sandboxes past the first: a and c (worker 1)
    # share one, b (worker 0) shares the other, own has its own.
    assert ports(a) == ports(c)
    assert len({ports(own), ports(a), ports(b)}) == 3
    assert [x.show()["listeners"] for x in (own, a, b, c)] == ["own"] + ["shared"] * 3
    assert "shared DNS and proxy listeners" in d.cli("sandbox", "show", a.name).stdout
    assert "listeners:" not in d.cli("sandbox", "show", own.name).stdout
    m = d.metrics()
    assert (m['sluice_own_listeners{state="used"}'], m['sluice_own_listeners{state="max"}']) \
        == (1, 1)

    # Each sandbox's names under its own policy, over the same sockets.
    assert a.resolve() == ["127.0.0.20"]
    assert c.resolve() == ["127.0.0.20"]
    assert b.resolve() == "EAI_NONAME"
    assert b.resolve("allowed.test") == ["127.0.0.5"]
    assert a.resolve("allowed.test") == "EAI_NONAME"
    # Over TCP and IPv6 too (the server named is redirected, whatever it is).
    for server, tcp in (("127.0.0.1", True), ("::1", False), ("::1", True)):
        r = probe(a.cg, [{"op": "dns", "server": server, "name": "api.test", "tcp": tcp}],
                  workdir)[0]
        assert isinstance(r, dict) and r["rcode"] == 0, (server, tcp, r)
        assert ["A", "127.0.0.20"] in r["answers"], (server, tcp, r)
        r = probe(b.cg, [{"op": "dns", "server": server, "name": "api.test", "tcp": tcp}],
                  workdir)[0]
        assert isinstance(r, dict) and r["rcode"] == 3, (server, tcp, r)
    assert a.show()["dns"]["queries"]["allowed"] >= 4
    assert c.show()["dns"]["queries"]["denied"] == 0
    assert b.show()["dns"]["queries"]["denied"] >= 4

    # HTTPS with the secret injected, through both sandboxes of one shared listener at once
    # and the one with its own; each connection counted by its sandbox.
    results = {x.name: [] for x in (own, a, c)}

    def traffic(x):
        for _ in range(3):
            results[x.name].append(x.headers())

    threads = [threading.Thread(target=traffic, args=(x,)) for x in (own, a, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120 * SLOW)
    for name, rs in results.items():
        assert len(rs) == 3, name
        for got in rs:
            assert_injected(got)
    for x in (a, c):
        assert x.show()["proxy"]["connections"]["accepted"] == 3, x.name
    assert b.show()["proxy"]["connections"]["accepted"] == 0

    # A sandbox aiming at the shared ports directly is refused in the kernel.
    dns_port, proxy_port = ports(a)
    got = probe(a.cg, [{"op": "connect", "proto": "tcp", "host": "127.0.0.1", "port": proxy_port},
                       {"op": "connect", "proto": "tcp", "host": "127.0.0.1", "port": dns_port},
                       {"op": "sendto", "host": "127.0.0.1", "port": dns_port, "data": "x"}],
                workdir)
    assert got == ["EPERM"] * 3, got
    # A host process at the shared ports: no mark, no record, nobody's. Its datagram gets
    # no answer, its connection is closed unanswered.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.5)
        s.sendto(dns_query("api.test"), ("127.0.0.1", dns_port))
        with pytest.raises(socket.timeout):
            s.recvfrom(512)
    for port in (proxy_port, dns_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass

    # A shared sandbox removed: the others on its listener go on.
    r = d.cli("sandbox", "rm", c.name)
    assert r.returncode == 0, r.stderr
    d.made.remove(c.name)
    assert a.resolve() == ["127.0.0.20"]
    assert_injected(a.headers())


def test_shared_listeners_across_a_restart(workers_daemon, cgroups, workdir, upstreams):
    d = workers_daemon.start("--workers", "1", "--own-listeners", "0")
    a = Box(d, cgroups, workdir, "shr-a")
    b = Box(d, cgroups, workdir, "shr-b", POLICY_OTHER)
    before = ports(a)
    assert ports(b) == before
    assert_injected(a.headers())
    d.stop()
    d.start("--workers", "1", "--own-listeners", "0")
    # Adopted on the ports they had, and each still under its own policy.
    assert ports(a) == before and ports(b) == before
    assert a.resolve() == ["127.0.0.20"]
    assert b.resolve() == "EAI_NONAME"
    assert b.resolve("allowed.test") == ["127.0.0.5"]
    assert_injected(a.headers())
    # The last sandbox on it gone, the shared sockets go too.
    for x in (a, b):
        r = d.cli("sandbox", "rm", x.name)
        assert r.returncode == 0, r.stderr
        d.made.remove(x.name)
    for port in before:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
