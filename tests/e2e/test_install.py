# SPDX-License-Identifier: MIT
"""`make install`: what it installs, that systemd-analyze accepts the unit, and that sluiced runs
with exactly the capabilities the unit leaves it (setpriv stands in for systemd, which is not
PID 1 on every machine that runs these tests): it enforces a container stand-in added by pid
(setns into its namespace, /proc of a process of another user)."""
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, RUN_ID, purge_pins, write_policy
from standin import files, standins  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`make install PREFIX=<tmp>/usr`: the paths in the unit are real, so systemd-analyze can
    check that its commands exist; and a DESTDIR install, to check both variables."""
    base = tmp_path_factory.mktemp("install")
    prefix = base / "usr"
    # The binaries under test: `make test SAN=1` runs these tests against build-san/.
    build = os.environ.get("SLUICE_BUILD")
    out = ["SAN=1"] if os.environ.get("SLUICE_SAN") else []
    if build:
        out.append("OUTPUT=" + os.path.relpath(build, ROOT))
    for args in ([f"PREFIX={prefix}"], [f"DESTDIR={base / 'dest'}", "PREFIX=/usr"]):
        r = subprocess.run(["make", "-s", "install", *args, *out], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
    return base


def test_install_lays_out_binaries_unit_hook_and_policies(installed):
    prefix = installed / "usr"
    for f in ("bin/sluice", "sbin/sluiced"):
        assert os.access(prefix / f, os.X_OK), f
    unit = (prefix / "lib/systemd/system/sluiced.service").read_text()
    assert f"ExecStart={prefix}/sbin/sluiced --foreground" in unit and "@" not in unit
    hook = json.loads((prefix / "etc/containers/oci/hooks.d/sluice.json").read_text())
    assert hook["hook"]["path"] == f"{prefix}/bin/sluice"
    assert hook["stages"] == ["createRuntime", "poststop"]
    assert hook["hook"]["args"][-2:] == ["--policy-dir", f"{prefix}/etc/sluice/policies"]
    assert (prefix / "etc/sluice/policies").is_dir()
    assert (prefix / "share/sluice/policies/github.lua").exists()
    # DESTDIR with PREFIX=/usr: the files under DESTDIR, the paths in them without it, the
    # configuration under /etc.
    dest = installed / "dest"
    unit = (dest / "usr/lib/systemd/system/sluiced.service").read_text()
    assert "ExecStart=/usr/sbin/sluiced " in unit and str(dest) not in unit
    hook = json.loads((dest / "etc/containers/oci/hooks.d/sluice.json").read_text())
    assert hook["hook"]["path"] == "/usr/bin/sluice"
    assert hook["hook"]["args"][-1] == "/etc/sluice/policies"
    assert "/run/sluice/sluiced.sock" in hook["hook"]["args"]


def test_systemd_analyze_verifies_the_unit(installed):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (package systemd; tools/install-deps)")
    unit = installed / "usr/lib/systemd/system/sluiced.service"
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    text = unit.read_text()
    for line in ("RuntimeDirectory=sluice", "StateDirectory=sluice", "NoNewPrivileges=yes",
                 "ProtectSystem=strict"):
        assert line in text.splitlines(), line
    # The check is a real one: the same unit with a command that does not exist fails.
    broken = installed / "broken.service"
    broken.write_text(text.replace(f"{installed}/usr/sbin/sluiced", "/nonexistent/sluiced"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "nonexistent" in r.stderr


def unit_capabilities(unit):
    m = re.search(r"^CapabilityBoundingSet=(.*)$", unit.read_text(), re.M)
    return m.group(1).split()


class Capped:
    """The installed sluiced under setpriv: the capability bounding set caps, no_new_privs, no
    inheritable capabilities (what systemd makes of the unit's CapabilityBoundingSet= and
    NoNewPrivileges=)."""

    def __init__(self, prefix, caps, d):
        d.mkdir()
        self.dir = d
        self.sock, self.bpffs = str(d / "sluiced.sock"), f"/sys/fs/bpf/{RUN_ID}-{d.name}"
        bounding = "-all," + ",".join("+" + c[4:].lower() for c in caps)
        argv = ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs",
                str(prefix / "sbin/sluiced"), "--foreground", "--socket", self.sock,
                "--state-dir", str(d / "state"), "--bpffs-dir", self.bpffs, "--log",
                str(d / "log"), "--purge"]
        self.cli = [str(prefix / "bin/sluice"), "--socket", self.sock]
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        line, deadline = "", time.monotonic() + 20
        while time.monotonic() < deadline and line.strip() != "ready" and self.p.poll() is None:
            if select.select([self.p.stdout], [], [], 0.2)[0]:
                line = self.p.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise AssertionError(f"sluiced did not start: {self.log()}")

    def log(self):
        try:
            return (self.dir / "log").read_text()
        except OSError:
            return ""

    def add(self, name, *args):
        return subprocess.run([*self.cli, "sandbox", "add", name, *args], capture_output=True,
                              text=True, timeout=30)

    def close(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        purge_pins(self.bpffs)


def test_sluiced_runs_with_the_units_capabilities_only(installed, standins, workdir):
    prefix = installed / "usr"
    caps = unit_capabilities(prefix / "lib/systemd/system/sluiced.service")
    assert "CAP_SYS_ADMIN" in caps and "CAP_SYS_RESOURCE" not in caps
    ct = standins("inst")
    init = ct.spawn()  # runs as nobody: its /proc/PID/ns/net needs CAP_SYS_PTRACE
    pol = write_policy(workdir, "inst", f'return {{ egress = {{ allow = '
                                        f'{{ "{ct.host_ip}:{ct.servers.ports[0]}" }} }} }}')
    d = Capped(prefix, caps, workdir / "installed")
    try:
        status = Path(f"/proc/{d.p.pid}/status").read_text()
        bnd = int(re.search(r"CapBnd:\s*(\w+)", status).group(1), 16)
        assert bin(bnd).count("1") == len(caps)
        r = d.add("inst", "--pid", str(init.pid), "--policy", str(pol))
        assert r.returncode == 0, r.stderr + d.log()
        got = ct.probe([{"op": "connect", "proto": "tcp", "host": ct.host_ip, "port": port}
                        for port in ct.servers.ports] +
                       [{"op": "dns", "server": "127.0.0.153", "name": "unlisted.test",
                         "tcp": False}])
        assert got[:2] == ["OK", "EPERM"] and got[2]["rcode"] == 3, got
        assert subprocess.run([*d.cli, "sandbox", "rm", "inst"], capture_output=True,
                              timeout=30).returncode == 0
    finally:
        d.close()
    # And each of them is needed: without CAP_SYS_PTRACE a container of another user cannot
    # be added by pid; without CAP_SYS_ADMIN (and so without CAP_BPF too) no program loads.
    d = Capped(prefix, [c for c in caps if c != "CAP_SYS_PTRACE"], workdir / "no-ptrace")
    try:
        r = d.add("inst", "--pid", str(init.pid), "--policy", str(pol))
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    finally:
        d.close()
    with pytest.raises(AssertionError, match="loading the BPF programs failed"):
        Capped(prefix, [c for c in caps if c != "CAP_SYS_ADMIN"], workdir / "no-sysadmin")
