# SPDX-License-Identifier: MIT
"""Docker end to end through the runtime wrapper: a dockerd of the test's own (its own data
root, exec root, socket, containerd namespace and cgroup parent; --iptables=false, no bridge)
with `sluice oci-runtime` registered as the runtime "sluice" (--add-runtime, what daemon.json's
"runtimes" does), and an image `docker import`ed from a root filesystem of the host's busybox
and curl. Docker sets no OCI annotations: the policy comes from SLUICE_POLICY in the
container's environment. The container starts with --network none; the test then moves one
end of a veth into its namespace (Docker cannot join a named namespace), to servers on the
host side.

Inside: the allowed address answers, another port is EPERM, an unlisted name NXDOMAIN, the
intercepted host (trusted through the CA the hook put in the image's bundle) gets its
credential, masked in what comes back, a raw socket fails with CAP_NET_RAW (Docker's default);
docker stop removes the sandbox, a SIGKILL of the container's init too, and a container
without SLUICE_POLICY is left alone.
"""
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD, ENV_SECRETS, RUN_ID, cgroup2_root
from podman import PATH, build_rootfs, names, nc, policy_text, show, wait_for
from standin import Listener, free_subnet, ip

SECRET = ENV_SECRETS["VCS_TOKEN"]
DOCKER = "/usr/bin/docker"  # Debian's client, of the same version as its dockerd


def missing_docker():
    for cmd in ("dockerd", "containerd", "runc"):
        if not shutil.which(cmd, path=PATH):
            return f"{cmd} is not installed (docker.io; tools/install-deps installs it)"
    if not os.access(DOCKER, os.X_OK):
        return f"{DOCKER} is not installed (docker.io; tools/install-deps installs it)"
    if not shutil.which("curl", path=PATH) or not Path("/bin/busybox").exists():
        return "busybox-static or curl is not installed (tools/install-deps installs them)"
    return None


class Docker:
    def __init__(self, daemon, base):
        self.base = base
        self.sock = base / "docker.sock"
        self.policies = base / "policies"
        self.policies.mkdir()
        self.cgroup_parent = f"{RUN_ID}-docker"
        self.wrapper = base / "sluice-runc"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {BUILD / 'sluice'} --socket {daemon.socket} oci-runtime "
            f"--runtime {shutil.which('runc', path=PATH)} "
            f"--hook-arg --policy-dir={self.policies} -- \"$@\"\n")
        self.wrapper.chmod(0o755)
        self.log = open(base / "dockerd.log", "w")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
             "--pidfile", str(base / "dockerd.pid"), "-H", f"unix://{self.sock}",
             "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
             "--storage-driver", "vfs", "--cgroup-parent", self.cgroup_parent,
             "--containerd-namespace", f"{RUN_ID}-docker",
             "--containerd-plugins-namespace", f"{RUN_ID}-dockerp",
             "--add-runtime", f"sluice={self.wrapper}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, PATH=PATH))
        self.ids = []
        if not wait_for(lambda: self("version", check=False).returncode == 0
                        or self.proc.poll() is not None, timeout=60, step=0.5) \
                or self.proc.poll() is not None:
            raise RuntimeError("dockerd did not start: " +
                               (base / "dockerd.log").read_text()[-3000:])
        rootfs = base / "rootfs"
        build_rootfs(rootfs)
        with tarfile.open(base / "rootfs.tar", "w") as t:
            t.add(rootfs, arcname=".")
        self.image = f"{RUN_ID}-sluice-test:1"
        self("import", str(base / "rootfs.tar"), self.image)

    def __call__(self, *args, timeout=60, check=True):
        r = subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], capture_output=True,
                           text=True, timeout=timeout, env=dict(os.environ, PATH=PATH), cwd="/")
        if check and r.returncode:
            raise AssertionError(f"docker {' '.join(args)}: {r.returncode} {r.stderr.strip()}")
        return r

    def start(self, policy=None, extra=()):
        env = ["-e", f"SLUICE_POLICY={policy}"] if policy else []
        r = self("run", "-d", "--runtime", "sluice", "--network", "none", "--dns",
                 "127.0.0.153", *env, *extra, self.image, "sleep", "600", check=False)
        if r.returncode:
            raise AssertionError(f"docker run failed ({r.returncode}): {r.stderr.strip()}")
        cid = r.stdout.strip().splitlines()[-1]
        self.ids.append(cid)
        return cid

    def exec(self, cid, script, timeout=60):
        return self("exec", cid, "sh", "-c", script, timeout=timeout, check=False)

    def pid(self, cid):
        return int(self("inspect", "--format", "{{.State.Pid}}", cid).stdout.strip())

    def close(self):
        for cid in self.ids:
            self("rm", "-f", cid, check=False)
        if self.proc.poll() is None:
            self.proc.terminate()  # dockerd stops its own containerd
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # What dockerd may leave mounted under its roots, then its cgroup parents.
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(str(self.base))]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for h in Path("/sys/fs/cgroup").iterdir():
            for d in (h / self.cgroup_parent, Path(cgroup2_root()) / self.cgroup_parent):
                try:
                    d.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def docker(daemon):
    why = missing_docker()
    if why:
        pytest.skip(f"docker cannot run here: {why}")
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-docker-"))
    base.chmod(0o755)
    d = None
    try:
        d = Docker(daemon, base)
        yield d
    finally:
        if d:
            d.close()
        else:
            shutil.rmtree(base, ignore_errors=True)


class Veth:
    """A veth pair with two servers on its host side; attach(pid) moves the other end into a
    container's namespace (Docker cannot be given a named one)."""

    def __init__(self, tag):
        self.name = f"dk{os.getpid() % 100000}{tag[:4]}"[:13]
        self.host_ip, self.ct_ip = free_subnet()
        ip("link", "add", self.name + "h", "type", "veth", "peer", "name", self.name + "c")
        try:
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.name + "h")
            ip("link", "set", self.name + "h", "up")
            self.servers = Listener(self.host_ip)
        except Exception:
            self.close()
            raise

    def attach(self, pid):
        ip("link", "set", self.name + "c", "netns", str(pid))
        for args in (["addr", "add", f"{self.ct_ip}/30", "dev", self.name + "c"],
                     ["link", "set", self.name + "c", "up"]):
            subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", *args], check=True,
                           capture_output=True, timeout=30)

    def close(self):
        if hasattr(self, "servers"):
            self.servers.close()
        ip("link", "del", self.name + "h", check=False)


def test_docker_container_is_enforced_through_the_runtime_wrapper(daemon, docker, upstreams,
                                                                  dnsmasq):
    veth = Veth("main")
    host_ip, (allowed, other) = veth.host_ip, veth.servers.ports
    (docker.policies / "docker.lua").write_text(policy_text(host_ip, allowed))
    cid = plain = None
    try:
        cid = docker.start("docker.lua")
        sb = show(daemon, cid)
        assert sb["container_id"] == cid and sb["policy"] == str(docker.policies / "docker.lua")
        pid = docker.pid(cid)
        assert sb["netns_inode"] == os.stat(f"/proc/{pid}/ns/net").st_ino
        assert sb["cgroup"].startswith(cgroup2_root() + "/" + docker.cgroup_parent + "/")
        veth.attach(pid)

        assert nc(docker, cid, host_ip, allowed) == "hello"
        assert "Operation not permitted" in nc(docker, cid, host_ip, other)
        r = docker.exec(cid, "nslookup unlisted.test")
        assert "can't find unlisted.test: NXDOMAIN" in r.stdout, r.stdout + r.stderr
        assert not dnsmasq.queried("unlisted.test")

        mark = upstreams.nginx.mark()
        r = docker.exec(cid, "curl -sS --max-time 20 -w '\\n%{http_code}' "
                             "https://git.internal.test/headers")
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "200", r.stderr
        assert json.loads(body)["headers"]["x-auth-token"] == "*" * len(SECRET)
        upstreams.nginx.wait_requests(1, since=mark)
        assert upstreams.nginx.requests_seen(since=mark)[-1]["h_x_auth_token"] == SECRET
        assert SECRET not in docker.exec(cid, "cat /proc/1/environ; env").stdout

        before = show(daemon, cid)["counters"]["denied"]["socket"]
        r = docker.exec(cid, "ping -c 1 -W 1 127.0.0.1 2>&1")
        assert r.returncode != 0 and "permission denied" in r.stdout.lower(), r.stdout
        assert show(daemon, cid)["counters"]["denied"]["socket"] > before

        # A container without SLUICE_POLICY, through the same runtime, is left alone.
        plain = docker.start()
        assert plain not in names(daemon)

        docker("stop", "-t", "0", cid)
        assert wait_for(lambda: cid not in names(daemon)), "the sandbox outlived docker stop"
    finally:
        for c in (cid, plain):
            if c:
                docker("rm", "-f", c, check=False)
        veth.close()


def test_docker_sigkilled_container_is_reaped(daemon, docker):
    (docker.policies / "kill.lua").write_text("return { egress = {} }")
    cid = docker.start("kill.lua")
    try:
        assert cid in names(daemon)
        r = docker.exec(cid, "nslookup unlisted.test")
        assert "NXDOMAIN" in r.stdout, r.stdout + r.stderr
        os.kill(docker.pid(cid), signal.SIGKILL)
        assert wait_for(lambda: cid not in names(daemon)), "a SIGKILLed container's sandbox stayed"
    finally:
        docker("rm", "-f", cid, check=False)
