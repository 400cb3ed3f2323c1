# SPDX-License-Identifier: MIT
"""Kernel enforcement, end to end: a real sluiced, real cgroups, real syscalls to loopback
servers. Every allowed case has its denied twin, each asserting the exact errno; the servers
listen on every port used, so EPERM can only come from sluice (outside a sandbox the same
calls succeed)."""
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import (IN_SANDBOX, PY, RUN_ID, probe, probe_outside, run_in, write_policy, PROBE,
                      bpf_links_of)


def tcp(host, port):
    return {"op": "connect", "proto": "tcp", "host": host, "port": port}


def udp(host, port, data=None):
    return {"op": "connect", "proto": "udp", "host": host, "port": port, "data": data}


def sendto(host, port, data):
    return {"op": "sendto", "host": host, "port": port, "data": data}


def sock(family, type_, proto):
    return {"op": "socket", "family": int(family), "type": int(type_), "proto": proto}


@pytest.fixture(scope="module")
def box(daemon, cgroups, servers, workdir):
    pa, pb, pc = servers.ports
    policy = write_policy(workdir, "kernel", f"""
-- the sandbox of test_kernel.py
return {{
  egress = {{
    allow = {{
      "127.0.0.1:{pa}",                   -- one port, TCP and UDP
      "127.0.1.0/24",                     -- a CIDR, any port
      "[::1]:{pa}",
      {{ "127.0.0.4:{pb}", proto = "udp" }},
      "127.0.0.6:{pb}-{pb + 1}",          -- a port range
    }},
  }},
}}
""")
    cg = cgroups.make("kernel")
    daemon.add("kernel", cg, policy)
    yield cg
    daemon.cli("sandbox", "rm", "kernel")


def test_tcp_v4_allowed_port_next_to_denied_port(box, servers, workdir):
    pa, pb, _ = servers.ports
    assert probe(box, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)], workdir) == ["OK", "EPERM"]
    assert probe_outside([tcp("127.0.0.1", pb)]) == ["OK"]


def test_tcp_socket_reconnected_after_a_disconnect_is_judged_again(box, servers, workdir):
    """A TCP connect() the rules allow leaves no record in the kernel: the socket's next
    connect(), after connect(AF_UNSPEC) took it back to unconnected, meets the hook again."""
    pa, pb, _ = servers.ports
    res = probe(box, [{"op": "reconnect", "host": "127.0.0.1", "port": pa, "then": pb,
                       "data": "re-b"},
                      {"op": "reconnect", "host": "127.0.0.1", "port": pa, "then": pa,
                       "data": "re-a"}], workdir)
    assert res == ["EPERM", "OK"]
    assert servers.got(pa, "re-a")
    assert not servers.got(pb, "re-b", wait=0.3)


def test_udp_connect_v4(box, servers, workdir):
    pa, pb, _ = servers.ports
    assert probe(box, [udp("127.0.0.1", pa, "udp-a"), udp("127.0.0.1", pb, "udp-b")],
                 workdir) == ["OK", "EPERM"]
    assert servers.got(pa, "udp-a")
    assert not servers.got(pb, "udp-b", wait=0.3)


def test_udp_sendto_unconnected(box, servers, workdir):
    pa, pb, _ = servers.ports
    assert probe(box, [sendto("127.0.0.1", pa, "st-a"), sendto("127.0.0.1", pb, "st-b")],
                 workdir) == ["OK", "EPERM"]
    assert servers.got(pa, "st-a")
    assert not servers.got(pb, "st-b", wait=0.3)


def test_ipv6_tcp_and_udp(box, servers, workdir):
    pa, pb, _ = servers.ports
    res = probe(box, [tcp("::1", pa), tcp("::1", pb), sendto("::1", pa, "v6-a"),
                      sendto("::1", pb, "v6-b")], workdir)
    assert res == ["OK", "EPERM", "OK", "EPERM"]
    assert servers.got(pa, "v6-a")
    assert not servers.got(pb, "v6-b", wait=0.3)


def test_cidr_rule(box, servers, workdir):
    _, pb, pc = servers.ports
    assert probe(box, [tcp("127.0.1.7", pb), tcp("127.0.1.250", pc), tcp("127.0.2.7", pb)],
                 workdir) == ["OK", "OK", "EPERM"]


def test_v4_mapped_ipv6_judged_by_v4_rules(box, servers, workdir):
    pa, _, pc = servers.ports
    res = probe(box, [tcp("::ffff:127.0.0.1", pa), tcp("::ffff:127.0.0.3", pa),
                      tcp("::ffff:127.0.1.9", pc), sendto("::ffff:127.0.0.3", pa, "mapped-deny"),
                      sendto("::ffff:127.0.0.1", pa, "mapped-ok")], workdir)
    assert res == ["OK", "EPERM", "OK", "EPERM", "OK"]
    assert servers.got(pa, "mapped-ok")
    assert not servers.got(pa, "mapped-deny", wait=0.3)


def test_zero_address_and_other_loopback_addresses_are_destinations(box, servers, workdir):
    pa, _, _ = servers.ports
    res = probe(box, [tcp("0.0.0.0", pa), tcp("127.0.0.2", pa), tcp("127.255.255.254", pa),
                      tcp("::", pa), tcp("127.0.0.1", pa)], workdir)
    assert res == ["EPERM", "EPERM", "EPERM", "EPERM", "OK"]
    assert probe_outside([tcp("0.0.0.0", pa), tcp("127.0.0.2", pa)]) == ["OK", "OK"]


def test_protocol_specific_rule(box, servers, workdir):
    _, pb, _ = servers.ports
    res = probe(box, [sendto("127.0.0.4", pb, "udp-only"), tcp("127.0.0.4", pb)], workdir)
    assert res == ["OK", "EPERM"]
    assert servers.got(pb, "udp-only")


def test_port_range_rule(box, servers, workdir):
    pa, pb, _ = servers.ports
    # pb is in the range and listens; pb + 2 is outside it (EPERM, not ECONNREFUSED).
    res = probe(box, [tcp("127.0.0.6", pb), tcp("127.0.0.6", pb + 2)], workdir)
    assert res == ["OK", "EPERM"]
    assert probe_outside([tcp("127.0.0.6", pb + 2)])[0] in ("ECONNREFUSED", "OK")


def test_tcp_fast_open(box, servers, workdir):
    pa, pb, _ = servers.ports
    res = probe(box, [{"op": "tfo", "host": "127.0.0.1", "port": pa, "data": "tfo-a"},
                      {"op": "tfo", "host": "127.0.0.1", "port": pb, "data": "tfo-b"}], workdir)
    assert res == ["OK", "EPERM"]
    assert servers.got(pa, "tfo-a")
    assert not servers.got(pb, "tfo-b", wait=0.3)


def test_raw_and_unjudgeable_sockets_refused(box, workdir):
    AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
    ops = [sock(AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
           sock(AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
           sock(AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
           sock(AF_INET, socket.SOCK_DGRAM, 136),   # UDP-Lite
           sock(AF_INET, socket.SOCK_STREAM, 262),  # MPTCP
           sock(AF_INET, socket.SOCK_STREAM, 0), sock(AF_INET6, socket.SOCK_DGRAM, 0)]
    assert probe(box, ops, workdir) == ["EPERM"] * 5 + ["OK", "OK"]
    assert probe_outside(ops) == ["OK"] * 7


def test_icmp_ping_socket_refused(box, workdir):
    # Ping sockets need ping_group_range, which is per network namespace: open it in a
    # namespace of this probe's own so the host's setting is untouched.
    op = [sock(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)]
    script = ('sysctl -qw net.ipv4.ping_group_range="0 2147483647" && '
              f'exec {PY} {PROBE} \'{json.dumps(op)}\'')
    inside = run_in(box, ["unshare", "-n", "sh", "-c", script], workdir)
    assert inside.returncode == 0, inside.stderr
    assert json.loads(inside.stdout) == ["EPERM"]
    outside = __import__("subprocess").run(["unshare", "-n", "sh", "-c", script],
                                           capture_output=True, text=True, timeout=30)
    assert json.loads(outside.stdout) == ["OK"]


def test_child_cgroup_is_the_sandbox(box, servers, workdir, cgroups):
    pa, pb, _ = servers.ports
    child = cgroups.make("kernel/child/grandchild")
    assert probe(child, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb),
                         sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)],
                 workdir) == ["OK", "EPERM", "EPERM"]


def test_process_outside_any_sandbox_unaffected(box, servers, workdir, cgroups):
    pa, pb, _ = servers.ports
    plain = cgroups.make("plain")
    ops = [tcp("127.0.0.1", pb), tcp("127.0.2.7", pb), sock(socket.AF_INET, socket.SOCK_RAW, 1)]
    assert probe(plain, ops, workdir) == ["OK", "OK", "OK"]
    assert probe(box, ops, workdir) == ["EPERM", "EPERM", "EPERM"]


def test_two_sandboxes_side_by_side(box, daemon, servers, workdir, cgroups):
    pa, pb, _ = servers.ports
    other = cgroups.make("other")
    daemon.add("other", other, write_policy(workdir, "other", f"""
return {{ egress = {{ allow = {{ "127.0.0.1:{pb}" }} }} }}
"""))
    try:
        assert probe(box, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)], workdir) == ["OK", "EPERM"]
        assert probe(other, [tcp("127.0.0.1", pa), tcp("127.0.0.1", pb)], workdir) == ["EPERM", "OK"]
    finally:
        assert daemon.cli("sandbox", "rm", "other").returncode == 0


def test_socket_whose_sandbox_cannot_be_determined_is_denied(box, daemon, servers, workdir,
                                                             cgroups):
    """A socket created in the sandbox, connected by a task that left it: the sandbox's
    programs run (the socket belongs to its cgroup) but the task's cgroup names no sandbox."""
    pa, _, _ = servers.ports
    plain = cgroups.make("plain2")
    before = daemon.metrics().get("sluice_unattributed_denied_total", 0)
    res = probe(box, [{"op": "connect_after_move", "host": "127.0.0.1", "port": pa,
                       "cgroup": str(plain)}], workdir)
    assert res == ["EPERM"]
    assert daemon.metrics()["sluice_unattributed_denied_total"] == before + 1
    # The same move with the connect done before it is allowed (the control).
    assert probe(box, [tcp("127.0.0.1", pa)], workdir) == ["OK"]


# Holds a TCP connection to each port given (argv: host, ports) from inside a cgroup, says
# "ready", and at each line on stdin sends on every one of them, printing OK or the errno's name
# per connection.
HOLDER = r"""
import errno, socket, sys
conns = [socket.create_connection((sys.argv[1], int(p)), timeout=5) for p in sys.argv[2:]]
for i, s in enumerate(conns):
    s.sendall(b"pre-%d" % i)
print("ready", flush=True)
for n, line in enumerate(sys.stdin):
    out = []
    for i, s in enumerate(conns):
        try:
            s.sendall(b"post%d-%d" % (n, i))
            out.append("OK")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
    print(" ".join(out), flush=True)
"""


@pytest.mark.parametrize("where", ["own", "other"])
def test_connections_older_than_the_sandbox_are_judged_when_it_is_added(daemon, cgroups,
                                                                        servers, workdir, where):
    """The kernel keeps no record of a TCP connection its connect hook passed, and lets the
    rest of a connection follow its first packet: connections a cgroup opened before it
    became a sandbox are judged when it is added. The one its policy denies is closed (the
    next send fails, nothing more reaches the server), the one it allows carries on. "other":
    the process is in a network namespace that is not the sandbox's (it reaches the servers
    over a veth): its connections are judged there."""
    import standin
    pa, pb, _ = servers.ports
    cg = cgroups.make(f"older-{where}")
    net = standin.Net(f"{RUN_ID}-older", f"slo{os.getpid() % 100000}") if where == "other" else None
    host = net.host_ip if net else "127.0.0.1"
    policy = write_policy(workdir, "older", f"""
return {{ egress = {{ allow = {{ "{host}:{pa}" }} }} }}
""")
    netns = ["--netns", net.path] if net else []
    p = subprocess.Popen([IN_SANDBOX, *netns, str(cg), str(Path(workdir) / "resolv.conf"), PY,
                          "-c", HOLDER, host, str(pa), str(pb)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    added = False
    try:
        assert p.stdout.readline().strip() == "ready"
        assert servers.got(pa, "pre-0") and servers.got(pb, "pre-1")
        daemon.add("older", cg, policy)
        added = True
        p.stdin.write("go\n")
        p.stdin.flush()
        first = p.stdout.readline().split()
        assert first[0] == "OK"
        # The closed one fails at once, or (the send raced the close) at the next send.
        if first[1] == "OK":
            p.stdin.write("go\n")
            p.stdin.flush()
            second = p.stdout.readline().split()
            assert second[0] == "OK"
            assert second[1] in ("ECONNABORTED", "EPIPE", "ECONNRESET")
        else:
            assert first[1] in ("ECONNABORTED", "EPIPE", "ECONNRESET")
        assert servers.got(pa, "post0-0")
        assert not servers.got(pb, "post0-1", wait=0.3)
        # New connections of that process's cgroup are judged as always.
        if not net:
            assert probe(cg, [tcp(host, pa), tcp(host, pb)], workdir) == ["OK", "EPERM"]
    finally:
        p.kill()
        p.wait()
        if added:
            assert daemon.cli("sandbox", "rm", "older").returncode == 0
        if net:
            net.close()
