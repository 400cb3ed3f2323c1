# SPDX-License-Identifier: MIT
"""A container stand-in for the end-to-end tests: what a container runtime makes, made with
iproute2. A network namespace joined to the host by a veth pair (a private 10.250.B.0/30 and
nothing routed beyond it, so an address outside it is unreachable from inside), a cgroup of
its own, processes run as an unprivileged user (nobody, with no_new_privs), TCP servers on
the host side of the veth. Everything is removed by close(), also after a failure; only
processes started here are killed (through the stand-in's own cgroup)."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import IN_SANDBOX, PROBE, PY, RUN_ID

USER = "nobody"


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def free_subnet():
    """10.250.B.0/30 with B unused on this machine (derived from our pid, so that parallel
    runs differ)."""
    used = ip("-o", "-4", "addr").stdout
    for k in range(250):
        b = (os.getpid() + k) % 250 + 1
        if f" 10.250.{b}." not in used:
            return f"10.250.{b}.1", f"10.250.{b}.2"
    raise RuntimeError("no free 10.250.B.0/30")


class Listener:
    """TCP servers on the host side of the veth: each accepts and answers 'hello'."""

    def __init__(self, host, n=2):
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            s.listen(16)
            s.settimeout(0.2)
            self.socks.append(s)
        self.ports = [s.getsockname()[1] for s in self.socks]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            for s in self.socks:
                try:
                    c, _ = s.accept()
                except OSError:
                    continue
                with c:
                    c.sendall(b"hello\n")

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for s in self.socks:
            s.close()


class Net:
    """A network namespace @ns (at .path) joined to the host by the veth pair @veth+"h" /
    @veth+"c" (a private /30 from free_subnet()), loopback up inside, and TCP servers on the
    host side (.servers, each answers 'hello'). Removed by close(), also after a failure here."""

    def __init__(self, ns, veth):
        self.ns = ns
        self.path = f"/run/netns/{ns}"
        self.veth = veth
        self.host_ip, self.ns_ip = free_subnet()
        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.veth + "h", "type", "veth", "peer", "name", self.veth + "c")
            ip("link", "set", self.veth + "c", "netns", self.ns)
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth + "h")
            ip("link", "set", self.veth + "h", "up")
            ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.veth + "c")
            ip("-n", self.ns, "link", "set", self.veth + "c", "up")
            ip("-n", self.ns, "link", "set", "lo", "up")
            self.servers = Listener(self.host_ip)
        except Exception:
            Net.close(self)
            raise

    def delete_netns(self):
        ip("link", "del", self.veth + "h", check=False)
        ip("netns", "del", self.ns, check=False)

    def close(self):
        if hasattr(self, "servers"):
            self.servers.close()
        self.delete_netns()


class StandIn(Net):
    """A container stand-in: network namespace + veth + cgroup + an unprivileged user."""

    def __init__(self, cgroups, files, tag):
        self.tag = tag
        self.procs = []
        self.files = files
        self.resolv = files / "resolv.conf"
        super().__init__(f"{RUN_ID}-{tag}", f"sl{os.getpid() % 100000}{tag[:4]}"[:14])
        self.netns = self.path
        try:
            self.cg = cgroups.make(f"ct-{tag}")
        except Exception:
            self.close()
            raise

    def argv(self, argv, user=USER, netns=None):
        return [IN_SANDBOX, "--netns", netns or self.netns, *(["--user", user] if user else []),
                str(self.cg), str(self.resolv), *argv]

    def run(self, argv, user=USER, timeout=60, netns=None):
        return subprocess.run(self.argv(argv, user, netns), capture_output=True, text=True,
                              timeout=timeout, cwd="/")

    def spawn(self, argv=("sleep", "600"), user=USER):
        """A long-lived process inside (a container's init); its pid is in the netns and the
        cgroup once this returns."""
        p = subprocess.Popen(self.argv(list(argv), user), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd="/")
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                comm = Path(f"/proc/{p.pid}/comm").read_text().strip()
                same = os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(self.netns).st_ino
            except OSError:
                comm, same = "", False
            if comm == argv[0] and same:
                return p
            time.sleep(0.02)
        raise RuntimeError(f"{argv} did not start in the stand-in")

    def probe(self, ops, **kw):
        r = self.run([PY, PROBE, json.dumps(ops)], **kw)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def kill(self):
        """Kills every process of the stand-in (all of them ours)."""
        try:
            if hasattr(self, "cg"):
                (self.cg / "cgroup.kill").write_text("1")
        except OSError:
            pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def close(self):
        self.kill()
        super().close()


@pytest.fixture
def files():
    """Files the unprivileged user reads (pytest's own temporary directories are 0700)."""
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-ct-"))
    d.chmod(0o755)
    (d / "resolv.conf").write_text("nameserver 127.0.0.153\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def standins(cgroups, files):
    """standins(tag) makes a stand-in, removed after the test."""
    made = []

    def make(tag):
        s = StandIn(cgroups, files, tag)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
