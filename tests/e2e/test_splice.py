# SPDX-License-Identifier: MIT
"""Passthrough checked by name (README, "Passthrough checked by name"). nginx on
127.0.0.20:443 serves api.test, npm.test, www.test, ... each with its own certificate from the
test CA. A connection is relayed untouched only when its ClientHello names, in the clear, a
name the policy allows on that port that resolved to that very address for the sandbox. At an
intercepted address the proxy checks it and splices in the kernel (a sockhash); everywhere
else the kernel checks it on the sandbox's own socket (bpf/sni.h), with no proxy at all (the
hostile variants of that check are in test_sni_kernel.py). Every allowed case has its refused
twin."""
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import PY, probe, run_in, write_policy
from upstreams import pattern_sha256

HELLO = str(Path(__file__).with_name("hello.py"))
HOLD = str(Path(__file__).with_name("hold.py"))
IN_SANDBOX = str(Path(__file__).resolve().parents[2] / "tools" / "in-sandbox")


class Box:
    def __init__(self, daemon, cgroups, workdir, upstreams, name, policy):
        self.daemon, self.workdir, self.name = daemon, workdir, name
        self.test_ca = str(upstreams.pki.ca_pem)
        self.policy = write_policy(workdir, name, policy)
        self.cg = cgroups.make(name)
        daemon.add(name, self.cg, self.policy)
        self.ca = str(Path(workdir) / f"{name}-ca.pem")
        Path(self.ca).write_text(daemon.cli("ca", name).stdout)

    def curl(self, *args, ca=None):
        return run_in(self.cg, ["curl", "-sS", "--max-time", "20", "--cacert",
                                ca or self.test_ca, *args], self.workdir)

    def hello(self, **kw):
        r = run_in(self.cg, [PY, HELLO, json.dumps(kw)], self.workdir)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def rejects(self):
        return [e.get("reason") for e in self.daemon.events(self.name)
                if e.get("verdict") == "reject"]

    def metric(self, mode):
        return self.daemon.metrics().get(
            f'sluice_passthrough_connections_total{{sandbox="{self.name}",mode="{mode}"}}', 0)

    def sni_checks(self, outcome):
        return self.daemon.metrics().get(
            f'sluice_sni_checks_total{{sandbox="{self.name}",outcome="{outcome}"}}', 0)

    def accepted(self):
        return self.daemon.metrics().get(
            f'sluice_http_connections_total{{sandbox="{self.name}",outcome="accepted"}}', 0)

    def kernel_refusals(self):
        """Reasons of the kernel SNI check's refusals (deny events, op tls_hello)."""
        return [e.get("reason") for e in self.daemon.events(self.name)
                if e.get("op") == "tls_hello"]


@pytest.fixture(scope="module")
def plain443():
    """A plain TCP echo server on 127.0.0.46:443 and 127.0.0.47:443 (not TLS): the service
    an `sni = false` entry exists for."""
    socks = []
    for addr in ("127.0.0.46", "127.0.0.47"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 443))
        s.listen(16)
        socks.append(s)
    stop = threading.Event()

    def serve(ls):
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except (socket.timeout, OSError):
                continue
            with c:
                c.settimeout(5)
                try:
                    data = c.recv(4096)
                    c.sendall(b"echo:" + data)
                except OSError:
                    pass

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(5)
    for s in socks:
        s.close()


@pytest.fixture(scope="module")
def mixed(daemon, cgroups, workdir, upstreams):
    """An intercepted name and passthrough names sharing its address (127.0.0.20)."""
    box = Box(daemon, cgroups, workdir, upstreams, "splice-mixed", """
return {
  egress = {
    intercept = { "api.test" },
    allow = { "npm.test:443", "www.test:80", "down.test:443" },
    private = { "127.0.0.0/8" },
  },
}
""")
    yield box
    daemon.cli("sandbox", "rm", box.name)


@pytest.fixture(scope="module")
def sni(daemon, cgroups, workdir, upstreams, plain443):
    """Nothing intercepted: names on 443 checked by SNI, one entry opted out."""
    box = Box(daemon, cgroups, workdir, upstreams, "splice-sni", """
return {
  egress = {
    allow = { "npm.test", "down.test:443", { "plain.test:443", sni = false },
              "plainsni.test:443" },
    private = { "127.0.0.0/8" },
  },
}
""")
    yield box
    daemon.cli("sandbox", "rm", box.name)


def resolve(box, *names):
    """Resolves names in the sandbox: what the kernel installs is what resolved."""
    res = probe(box.cg, [{"op": "resolve", "name": n, "family": 4} for n in names],
                box.workdir)
    assert all(isinstance(r, list) for r in res), res


# -- at an intercepted address (item 2 of issue 14)

def test_intercepted_address_splices_only_a_name_resolved_there(mixed):
    # api.test resolved makes 127.0.0.20:443 an intercepted address for this sandbox
    resolve(mixed, "api.test", "npm.test", "www.test", "down.test")
    before = mixed.metric("kernel")
    # npm.test resolved to 127.0.0.20 with port 443: relayed untouched, nginx's own
    # certificate (the test CA verifies it; the sandbox CA is not involved).
    r = mixed.curl("-o", "/dev/null", "-w", "%{http_code}", "https://npm.test/bytes/10")
    assert r.returncode == 0 and r.stdout == "200", r.stderr
    assert mixed.metric("kernel") == before + 1
    # The intercepted name itself is still terminated by sluice (its CA).
    r = mixed.curl("-o", "/dev/null", "-w", "%{http_code}", "https://api.test/bytes/10",
                   ca=mixed.ca)
    assert r.returncode == 0 and r.stdout == "200", r.stderr
    # www.test is allowed, resolved to 127.0.0.20, but on port 80 only.
    r = mixed.curl("--resolve", "www.test:443:127.0.0.20", "https://www.test/")
    assert r.returncode == 35, (r.returncode, r.stderr)
    # down.test is allowed on 443 but resolved to 127.0.0.40, not here.
    r = mixed.curl("--resolve", "down.test:443:127.0.0.20", "https://down.test/")
    assert r.returncode == 35, (r.returncode, r.stderr)
    reasons = mixed.rejects()
    assert reasons == ["TLS server name neither intercepted nor allowed on this port",
                       "passthrough refused: the TLS server name did not resolve to this "
                       "address and port for this sandbox"], reasons


def test_intercepted_address_refuses_ech(mixed):
    resolve(mixed, "api.test", "npm.test")
    ok = mixed.hello(host="127.0.0.20", sni="npm.test", stop_after_bytes=5)
    assert ok["got"] >= 5 and ok["first"].startswith("16"), ok  # nginx's ServerHello
    ech = mixed.hello(host="127.0.0.20", sni="npm.test", ech=True)
    assert ech["got"] == 0 and ech["end"] in ("eof", "reset"), ech
    assert any("Encrypted Client Hello" in r for r in mixed.rejects())


# -- SNI-checked passthrough (item 3)

def test_sni_checked_passthrough_download(sni):
    before = sni.sni_checks("passed")
    r = sni.curl("-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
                 "https://npm.test/bytes/5000000")
    assert r.returncode == 0 and r.stdout == "200 0", r.stderr
    # the sandbox sees nginx's certificate: with only the sandbox's CA it fails
    r = sni.curl("https://npm.test/bytes/1", ca=sni.ca)
    assert r.returncode == 60, (r.returncode, r.stderr)
    # bytes both ways, exact: a 3 MB upload hashed by the upstream, a 20 MB download hashed here
    body = Path(sni.workdir) / "splice-upload.bin"
    body.write_bytes(os.urandom(3 << 20))
    r = sni.curl("--data-binary", f"@{body}", "https://npm.test/sha256")
    assert r.returncode == 0 and hashlib.sha256(body.read_bytes()).hexdigest() in r.stdout, \
        (r.returncode, r.stdout, r.stderr)
    r = run_in(sni.cg, ["sh", "-c", f"curl -sS --max-time 20 --cacert {sni.test_ca} "
                                    "https://npm.test/bytes/20000000 | sha256sum"], sni.workdir)
    assert r.returncode == 0 and r.stdout.split()[0] == pattern_sha256(20000000), r.stderr
    # judged in the kernel on the sandbox's own socket: the proxy never saw a connection
    assert sni.sni_checks("passed") >= before + 4
    assert sni.accepted() == 0
    assert sni.metric("kernel") == 0 and sni.metric("userspace") == 0


def test_sni_checked_passthrough_refusals(sni):
    resolve(sni, "npm.test", "down.test")
    # another tenant of the same address
    r = sni.curl("--resolve", "api.test:443:127.0.0.20", "https://api.test/")
    assert r.returncode == 35, (r.returncode, r.stderr)
    # an allowed name that resolved elsewhere
    r = sni.curl("--resolve", "down.test:443:127.0.0.20", "https://down.test/")
    assert r.returncode == 35, (r.returncode, r.stderr)
    # no SNI (an address in the URL), and ECH
    r = sni.curl("-k", "https://127.0.0.20/")
    assert r.returncode == 35, (r.returncode, r.stderr)
    ok = sni.hello(host="127.0.0.20", sni="npm.test", stop_after_bytes=5)
    assert ok["got"] >= 5, ok
    ech = sni.hello(host="127.0.0.20", sni="npm.test", ech=True)
    assert ech["got"] == 0 and ech["end"] == "refused", ech
    reasons = sni.kernel_refusals()
    assert "passthrough refused: ClientHello without SNI" in reasons, reasons
    assert any("Encrypted Client Hello" in x for x in reasons), reasons
    assert sum("did not resolve to this address" in x for x in reasons) >= 2, reasons
    assert sni.accepted() == 0
    # QUIC cannot be checked: UDP 443 of an SNI-checked name is denied in the kernel
    r = run_in(sni.cg, [PY, "-c", "import socket,errno\ns=socket.socket(socket.AF_INET,"
                        "socket.SOCK_DGRAM)\ntry:\n s.connect(('127.0.0.20',443));print('OK')\n"
                        "except OSError as e:print(errno.errorcode[e.errno])"], sni.workdir)
    assert r.stdout.strip() == "EPERM", r.stdout + r.stderr


def test_sni_false_entry_is_an_address_grant(sni):
    resolve(sni, "plain.test", "plainsni.test")
    # sni = false: a non-TLS protocol on 443 works, untouched by the proxy
    r = sni.hello(host="plain.test", raw="hello", wait=3)
    assert r["got"] == len("echo:hello"), r
    # the same bytes to a name checked by SNI: closed, with an event
    r = sni.hello(host="plainsni.test", raw="hello", wait=3)
    assert r["got"] == 0 and r["end"] == "refused", r
    assert any("not a TLS ClientHello" in x for x in sni.kernel_refusals())


def test_kernel_splice_keeps_bytes_out_of_sluiced(sni, daemon):
    """100 MB through a kernel splice costs sluiced next to nothing (2.5 ms of CPU measured;
    relayed by sluiced, 100-140 ms): it never reads a byte of it."""
    pid = daemon.proc.pid

    def cpu_s():
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9

    before = cpu_s()
    r = run_in(sni.cg, ["sh", "-c", f"curl -sS --max-time 60 --cacert {sni.test_ca} "
                                    "https://npm.test/bytes/100000000 | sha256sum"], sni.workdir,
               timeout=90)
    assert r.returncode == 0 and r.stdout.split()[0] == pattern_sha256(100000000), r.stderr
    used = cpu_s() - before
    assert used < 0.03, f"sluiced used {used:.2f} s of CPU for a spliced 100 MB transfer"


def test_reload_closes_a_kernel_splice_the_new_policy_refuses(sni, daemon, workdir):
    hold = subprocess.Popen([IN_SANDBOX, str(sni.cg), str(Path(workdir) / "resolv.conf"), PY,
                             HOLD, json.dumps({"mode": "tls", "host": "npm.test",
                                               "ca": sni.test_ca})],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "ready"
        keep = write_policy(workdir, "splice-sni-keep", Path(sni.policy).read_text())
        r = daemon.cli("policy", "reload", sni.name, "--policy", str(keep))
        assert r.returncode == 0, r.stderr
        with pytest.raises(subprocess.TimeoutExpired):
            hold.communicate(timeout=1)  # same policy: the splice stays
        drop = write_policy(workdir, "splice-sni-drop", """
return { egress = { allow = { "down.test:443" }, private = { "127.0.0.0/8" } } }
""")
        r = daemon.cli("policy", "reload", sni.name, "--policy", str(drop))
        assert r.returncode == 0, r.stderr
        out, _ = hold.communicate(timeout=10)
        assert out.strip() == "closed"
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
        daemon.cli("policy", "reload", sni.name, "--policy", sni.policy)
