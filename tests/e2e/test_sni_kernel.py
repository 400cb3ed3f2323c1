# SPDX-License-Identifier: MIT
"""The kernel SNI check of checked passthrough (bpf/sni.h), tried as a hostile sandbox would.
The upstreams are raw TCP listeners this test owns on 127.0.0.48-50:443 that count every byte
they receive: a refused case must deliver zero bytes, whatever way around the check the sandbox
tries (Fast Open data in the SYN, a thread blocked in send() during connect(), a hello split in
1-byte writes, garbage, an oversized record, ECH, a name of another address or tenant). No
connection ever reaches the proxy."""
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import PY, probe, run_in, write_policy

HOSTILE = str(Path(__file__).with_name("snihostile.py"))
IN_SANDBOX = str(Path(__file__).resolve().parents[2] / "tools" / "in-sandbox")
TCP_FASTOPEN = 23
TCP_FASTOPEN_NO_COOKIE = 34


class Upstream:
    """A listener on ADDR:443 that records, per accepted connection, its peer and its bytes."""

    def __init__(self, addr, backlog=16, tfo=False):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if tfo:
            self.ls.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 16)
            self.ls.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        self.ls.bind((addr, 443))
        self.ls.listen(backlog)
        self.ls.settimeout(0.1)
        self.conns, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.paused = threading.Event()
        self.threads = [threading.Thread(target=self.serve, daemon=True)]
        self.threads[0].start()

    def serve(self):
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            try:
                c, peer = self.ls.accept()
            except (socket.timeout, OSError):
                continue
            rec = {"peer": list(peer), "bytes": b""}
            with self.lock:
                self.conns.append(rec)
            t = threading.Thread(target=self.read, args=(c, rec), daemon=True)
            t.start()
            self.threads.append(t)

    def read(self, c, rec):
        c.settimeout(15)
        with c:
            while True:
                try:
                    b = c.recv(65536)
                except OSError:
                    return
                if not b:
                    return
                with self.lock:
                    rec["bytes"] += b

    def take(self):
        time.sleep(0.2)
        with self.lock:
            out, self.conns = self.conns, []
        return out

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(6)
        self.ls.close()


@pytest.fixture(scope="module")
def ups():
    sysctl = Path("/proc/sys/net/ipv4/tcp_fastopen")
    old = sysctl.read_text()
    sysctl.write_text("3")  # client and server: Fast Open data really travels in the SYN
    u = {"main": Upstream("127.0.0.48", tfo=True), "far": Upstream("127.0.0.49"),
         "slow": Upstream("127.0.0.50", backlog=0)}
    yield u
    for x in u.values():
        x.close()
    sysctl.write_text(old)


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, ups):
    name = "sni-kernel"
    policy = write_policy(workdir, name, """
return {
  egress = {
    allow = { "sni.k.test", "far.k.test:443", "slow.k.test:443" },
    private = { "127.0.0.0/8" },
  },
}
""")
    cg = cgroups.make(name)
    daemon.add(name, cg, policy)
    res = probe(cg, [{"op": "resolve", "name": n, "family": 4}
                     for n in ("sni.k.test", "far.k.test", "slow.k.test")], workdir)
    assert all(isinstance(r, list) for r in res), res
    yield {"cg": cg, "name": name, "workdir": workdir, "daemon": daemon}
    daemon.cli("sandbox", "rm", name)


def attack(box, **kw):
    kw.setdefault("host", "127.0.0.48")
    r = run_in(box["cg"], [PY, HOSTILE, json.dumps(kw)], box["workdir"], timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def metric(box, name, **labels):
    lab = ",".join([f'sandbox="{box["name"]}"'] + [f'{k}="{v}"' for k, v in labels.items()])
    return box["daemon"].metrics().get(f"{name}{{{lab}}}", 0)


def refusals(box):
    return [e.get("reason") for e in box["daemon"].events(box["name"])
            if e.get("op") == "tls_hello"]


def test_allowed_name_goes_straight_to_the_upstream(box, ups):
    from hello import client_hello  # noqa: F401  (the same bytes snihostile.py sends)
    before = metric(box, "sluice_sni_checks_total", outcome="passed")
    r = attack(box, mode="hello", sni="sni.k.test")
    assert r["sends"] == ["ok"], r
    conns = ups["main"].take()
    assert len(conns) == 1, conns
    # the upstream's peer is the sandbox's own socket: no second connection, no proxy
    assert conns[0]["peer"] == r["local"], (conns, r)
    assert conns[0]["bytes"][:3] == b"\x16\x03\x01" and b"sni.k.test" in conns[0]["bytes"]
    assert metric(box, "sluice_sni_checks_total", outcome="passed") == before + 1
    assert metric(box, "sluice_http_connections_total", outcome="accepted") == 0
    # upper case and a trailing dot are the same name
    r = attack(box, mode="hello", sni="SNI.K.Test.")
    assert r["sends"] == ["ok"], r
    assert len(ups["main"].take()) == 1


@pytest.mark.parametrize("case,kw,why", [
    ("another tenant of the address", dict(mode="hello", sni="tenant.k.test"),
     "did not resolve to this address"),
    ("an allowed name resolved elsewhere", dict(mode="hello", sni="far.k.test"),
     "did not resolve to this address"),
    ("no SNI", dict(mode="hello", sni=None), "without SNI"),
    ("ECH", dict(mode="ech", sni="sni.k.test"), "Encrypted Client Hello"),
    ("garbage", dict(mode="garbage"), "not a TLS ClientHello"),
    ("a record over 16 KiB", dict(mode="huge"), "longer than 16 KiB"),
    ("a bad name in 1-byte writes", dict(mode="split", sni="tenant.k.test"),
     "did not resolve to this address"),
])
def test_refused_sends_nothing(box, ups, case, kw, why):
    r = attack(box, **kw)
    assert r["sends"][-1] == "EACCES", (case, r)
    assert all(s == "ok" for s in r["sends"][:-1]), (case, r)  # corked, not sent
    conns = ups["main"].take()
    assert len(conns) == 1 and conns[0]["bytes"] == b"", (case, conns)
    assert any(why in x for x in refusals(box)), (case, refusals(box))


def test_v4_mapped_destination_is_checked_alike(box, ups):
    r = attack(box, mode="hello", host="::ffff:127.0.0.48", sni="sni.k.test")
    assert r["sends"] == ["ok"], r
    conns = ups["main"].take()
    assert len(conns) == 1 and b"sni.k.test" in conns[0]["bytes"], conns
    r = attack(box, mode="hello", host="::ffff:127.0.0.48", sni="tenant.k.test")
    assert r["sends"] == ["EACCES"], r
    conns = ups["main"].take()
    assert len(conns) == 1 and conns[0]["bytes"] == b"", conns


def test_split_hello_passes(box, ups):
    r = attack(box, mode="split", sni="sni.k.test")
    assert set(r["sends"]) == {"ok"}, r
    conns = ups["main"].take()
    assert len(conns) == 1 and b"sni.k.test" in conns[0]["bytes"], conns
    assert conns[0]["bytes"][:3] == b"\x16\x03\x01"


@pytest.mark.parametrize("mode", ["tfo", "tfo_connect"])
def test_fast_open_data_never_leaves(box, ups, mode):
    r = attack(box, mode=mode, sni="sni.k.test")
    # the junk was queued (or sent in the SYN and dropped); the hello behind it is refused
    assert r["sends"][-1] == "EACCES", r
    conns = ups["main"].take()
    assert len(conns) == 1 and conns[0]["bytes"] == b"", conns
    assert any("before the ClientHello" in x for x in refusals(box))


def test_thread_blocked_in_send_during_connect_gets_nothing_out(box, ups):
    slow = ups["slow"]
    # fill the listener's accept queue (backlog 0: one) so that the sandbox's SYN is dropped
    # and retransmitted a second later; free it meanwhile
    slow.paused.set()
    time.sleep(0.3)  # the accept loop is asleep, not in accept()
    filler = socket.create_connection(("127.0.0.50", 443))
    try:
        threading.Timer(0.6, slow.paused.clear).start()
        r = attack(box, mode="blocked", host="127.0.0.50", sni="slow.k.test")
    finally:
        filler.close()
    assert r["connect_s"] >= 0.5, r  # the blocked send() really waited for the connection
    assert r["sends"][0] == "ok" and r["sends"][-1] == "EACCES", r
    every, deadline = [], time.monotonic() + 5
    while time.monotonic() < deadline and not any(c["peer"] == r["local"] for c in every):
        every += slow.take()
    conns = [c for c in every if c["peer"] == r["local"]]
    assert len(conns) == 1 and conns[0]["bytes"] == b"", (every, r)


def test_switch_keeps_a_flow_only_while_every_name_of_its_address_stays(box, ups, workdir):
    """The kernel keeps no record of which name a flow presented: a reload that still grants
    the address but drops one of its names closes the flows to that address."""
    daemon = box["daemon"]
    both = write_policy(workdir, "sni-kernel-both", """
return { egress = { allow = { "sni.k.test", "tenant.k.test:443", "far.k.test:443",
                              "slow.k.test:443" }, private = { "127.0.0.0/8" } } }
""")
    only_tenant = write_policy(workdir, "sni-kernel-tenant", """
return { egress = { allow = { "tenant.k.test:443" }, private = { "127.0.0.0/8" } } }
""")
    original = Path(workdir) / "sni-kernel.lua"
    hold = None
    try:
        assert daemon.cli("policy", "reload", box["name"], "--policy", str(both)).returncode == 0
        res = probe(box["cg"], [{"op": "resolve", "name": n, "family": 4}
                                for n in ("sni.k.test", "tenant.k.test")], workdir)
        assert all(isinstance(r, list) for r in res), res
        hold = subprocess.Popen([IN_SANDBOX, str(box["cg"]), str(Path(workdir) / "resolv.conf"),
                                 PY, HOSTILE, json.dumps({"mode": "hold", "host": "127.0.0.48",
                                                          "sni": "sni.k.test"})],
                                stdout=subprocess.PIPE, text=True)
        assert hold.stdout.readline().strip() == "ready"
        # the same policy again: every name stays, so does the flow
        assert daemon.cli("policy", "reload", box["name"], "--policy", str(both)).returncode == 0
        with pytest.raises(subprocess.TimeoutExpired):
            hold.communicate(timeout=1)
        # 127.0.0.48:443 is still a checked passthrough (tenant.k.test), but sni.k.test is gone
        r = daemon.cli("policy", "reload", box["name"], "--policy", str(only_tenant))
        assert r.returncode == 0, r.stderr
        out, _ = hold.communicate(timeout=10)
        assert out.strip() == "closed"
    finally:
        if hold and hold.poll() is None:
            hold.kill()
            hold.wait()
        ups["main"].take()
        daemon.cli("policy", "reload", box["name"], "--policy", str(original))


def sni_name_owners(bpffs):
    """The sandbox id of every entry of the pinned sl_sni_names map."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", f"{bpffs}/sl_sni_names"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [int.from_bytes(bytes(int(x, 16) for x in e["key"][:4]), "little")
            for e in json.loads(r.stdout)]


def test_names_follow_the_sandbox(daemon, cgroups, workdir, ups):
    name = "sni-kernel-rm"
    cg = cgroups.make(name)
    daemon.add(name, cg, write_policy(workdir, name, """
return { egress = { allow = { "sni.k.test", "tenant.k.test:443" },
                    private = { "127.0.0.0/8" } } }
"""))
    sid = json.loads(daemon.cli("sandbox", "show", name, "--json").stdout)["id"]
    res = probe(cg, [{"op": "resolve", "name": n, "family": 4}
                     for n in ("sni.k.test", "tenant.k.test")], workdir)
    assert all(isinstance(r, list) for r in res), res
    assert sni_name_owners(daemon.bpffs).count(sid) == 2
    daemon.cli("sandbox", "rm", name)
    assert sid not in sni_name_owners(daemon.bpffs)


def test_names_left_in_the_kernel_never_reach_the_next_sandbox_of_their_id(fresh_daemon, cgroups,
                                                                          workdir, ups):
    """sluiced walks the kernel's name map for a sandbox id only where it may hold names: ids
    written since it started, and those it found in the pinned map at start. A sandbox whose
    names stayed in the kernel (its state file gone, as after a removal cut short) must not
    hand them to the next sandbox of its id; a restart keeps an adopted sandbox's names."""
    d = fresh_daemon
    d.start()
    pol = """
return { egress = { allow = { "sni.k.test", "tenant.k.test:443" },
                    private = { "127.0.0.0/8" } } }
"""
    old_cg = cgroups.make("sni-left")
    d.add("sni-left", old_cg, write_policy(workdir, "sni-left", pol))
    sid = json.loads(d.cli("sandbox", "show", "sni-left", "--json").stdout)["id"]
    res = probe(old_cg, [{"op": "resolve", "name": n, "family": 4}
                         for n in ("sni.k.test", "tenant.k.test")], workdir)
    assert all(isinstance(r, list) for r in res), res
    d.stop()
    d.start()
    assert sni_name_owners(d.bpffs).count(sid) == 2  # adopted with its names
    d.stop()
    Path(d.state, "sandboxes", "sni-left.json").unlink()
    d.start()
    assert sni_name_owners(d.bpffs).count(sid) == 2  # nobody's now, still in the kernel
    cg = cgroups.make("sni-next")
    d.add("sni-next", cg, write_policy(workdir, "sni-next", pol))
    assert json.loads(d.cli("sandbox", "show", "sni-next", "--json").stdout)["id"] == sid
    assert sid not in sni_name_owners(d.bpffs)  # the add found them and dropped them
    d.cli("sandbox", "rm", "sni-next")
