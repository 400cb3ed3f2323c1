# SPDX-License-Identifier: MIT
"""Real containers for the end-to-end tests: Debian's podman with runc, the sluice OCI hook from
a hooks.d directory the tests write, and a root filesystem built from the host's own binaries
(busybox-static, curl with its libraries, the CA bundle), so that no image registry is needed.

Everything podman keeps lives in a directory of this run (--root, --runroot, --tmpdir), so the
machine's own podman state is never touched, and the module fixture removes every container it
made (podman rm -f, by the ids it started) even after a failure. Each container gets a network
namespace made here (standin.Net: a veth to servers on its host side), named with
`--network ns:PATH`; its resolv.conf names a loopback address only (--dns).

crun is not used: it refuses this host's hybrid cgroup layout. runc puts the container in the
cgroup v2 directory /libpod_parent/libpod-<id>. The capability bounding set of the tests has
no CAP_SYS_RESOURCE, so the rlimits are lowered explicitly (--ulimit), never raised.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD, RUN_ID, cgroup2_root
import standin

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/bin/busybox"
# The busybox applets the tests run inside.
APPLETS = ("sh", "cat", "echo", "sleep", "id", "ls", "nc", "nslookup", "ping", "env", "grep",
           "wc", "tail", "head")


def missing_runtime():
    """Why podman cannot run here (a visible skip reason), or None."""
    for cmd in ("podman", "runc", "conmon"):
        if not shutil.which(cmd, path=PATH):
            return f"{cmd} is not installed (tools/install-deps installs it)"
    if not Path(BUSYBOX).exists() or not shutil.which("curl", path=PATH):
        return "busybox-static or curl is not installed (tools/install-deps installs them)"
    return None


def libraries(binary):
    """The shared objects binary loads (ldd), the loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def build_rootfs(root):
    """A root filesystem of the host's binaries: busybox (static), curl and its libraries,
    the CA bundle (which the hook extends with the sandbox's CA), passwd and group."""
    for d in ("bin", "etc/ssl/certs", "proc", "sys", "dev", "tmp", "run", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    curl = shutil.which("curl", path=PATH)
    shutil.copy2(curl, root / "bin/curl")
    for lib in libraries(curl):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "tmp").chmod(0o1777)


class Net(standin.Net):
    """A network namespace for one container (standin.Net, named for podman). Removed by
    close()."""

    def __init__(self, tag):
        super().__init__(f"{RUN_ID}-pm-{tag}", f"pm{os.getpid() % 100000}{tag[:4]}"[:13])


class Podman:
    """podman with a state of its own, the sluice hook of `daemon` in its hooks.d."""

    def __init__(self, daemon, base):
        self.base = base
        self.rootfs = base / "rootfs"
        self.policies = base / "policies"
        self.hooks = base / "hooks.d"
        for d in (self.rootfs, self.policies, self.hooks, base / "tmp"):
            d.mkdir(parents=True)
        build_rootfs(self.rootfs)
        # What README.md's hooks.d file says, with the test daemon's socket and policies.
        (self.hooks / "sluice.json").write_text(json.dumps({
            "version": "1.0.0",
            "hook": {"path": str(BUILD / "sluice"),
                     "args": ["sluice", "--socket", daemon.socket, "oci-hook",
                              "--policy-dir", str(self.policies)]},
            "when": {"annotations": {"^io\\.sluice\\.policy$": ".+"}},
            "stages": ["createRuntime", "poststop"],
        }, indent=2))
        # The runtime wrapper (sluice oci-runtime), as deploy/kubernetes's sluice-runc and
        # README's Docker runtime run it; with it, podman is given an empty hooks.d.
        self.no_hooks = base / "no-hooks.d"
        self.no_hooks.mkdir()
        self.wrapper = base / "sluice-runc"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {BUILD / 'sluice'} --socket {daemon.socket} oci-runtime "
            f"--runtime {shutil.which('runc', path=PATH)} "
            f"--hook-arg --policy-dir={self.policies} -- \"$@\"\n")
        self.wrapper.chmod(0o755)
        self.argv0 = ["podman", "--root", str(base / "storage"), "--runroot",
                      str(base / "run"), "--tmpdir", str(base / "tmp"),
                      "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                      "--events-backend", "file"]
        self.ids = []
        self.runtime = {}  # container id: the wrapper, for those it runs

    def __call__(self, *args, timeout=60, check=True, wrapped=False):
        hooks = self.no_hooks if wrapped else self.hooks
        r = subprocess.run([*self.argv0, "--hooks-dir", str(hooks), *args],
                           capture_output=True, text=True,
                           timeout=timeout, env=dict(os.environ, PATH=PATH), cwd="/")
        if check and r.returncode:
            raise AssertionError(f"podman {' '.join(args)}: {r.returncode} {r.stderr.strip()}")
        return r

    def start(self, net, policy=None, extra=(), argv=("sleep", "600"), wrapped=False):
        """A detached container in net, with io.sluice.policy=policy (a file name of the
        policy directory). Its id, once it runs. wrapped: run by the runtime wrapper, with
        no hooks.d."""
        ann = ["--annotation", f"io.sluice.policy={policy}"] if policy else []
        runtime = str(self.wrapper) if wrapped else "runc"
        r = self("run", "-d", "--runtime", runtime, "--ulimit", "nofile=1024:1024",
                 "--ulimit", "nproc=4096:4096", "--network", f"ns:{net.path}",
                 "--dns", "127.0.0.153", *ann, *extra, "--rootfs", f"{self.rootfs}:O", *argv,
                 check=False, wrapped=wrapped)
        if r.returncode:
            raise AssertionError(f"podman run failed ({r.returncode}): {r.stderr.strip()}")
        cid = r.stdout.strip().splitlines()[-1]
        self.ids.append(cid)
        if wrapped:
            self.runtime[cid] = True
        return cid

    def exec(self, cid, script, timeout=60):
        return self("exec", cid, "sh", "-c", script, timeout=timeout, check=False,
                    wrapped=cid in self.runtime)

    def pid(self, cid):
        return int(self("inspect", "--format", "{{.State.Pid}}", cid).stdout.strip())

    def cgroup(self, cid):
        """The container's cgroup v2 directory, relative to the cgroup2 mount."""
        for line in Path(f"/proc/{self.pid(cid)}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
        raise AssertionError("no cgroup v2 line")

    def close(self):
        for cid in self.ids:
            self("rm", "-f", "-t", "0", cid, check=False, wrapped=cid in self.runtime)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(daemon):
    """One podman state and one root filesystem for a test module (a container start costs
    about a second; building the root filesystem once saves the rest)."""
    why = missing_runtime()
    if why:
        pytest.skip(f"podman cannot run here: {why}")
    base = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-podman-"))
    base.chmod(0o755)
    # runc's parent cgroup: made by the first container, left empty by the last one.
    parent = Path(cgroup2_root()) / "libpod_parent"
    parent_was_there = parent.exists()
    p = None
    try:
        p = Podman(daemon, base)
        yield p
    finally:
        if p:
            p.close()
        else:
            shutil.rmtree(base, ignore_errors=True)
        if not parent_was_there:
            try:
                parent.rmdir()  # only if empty: another podman's containers stay
            except OSError:
                pass


@pytest.fixture
def nets():
    """nets(tag) makes a Net, removed after the test."""
    made = []

    def make(tag):
        n = Net(tag)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def wait_for(cond, timeout=15, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def policy_text(host_ip, port):
    """The container tests' policy: one address:port allowed, git.internal.test intercepted
    with the VCS token injected."""
    return f"""
return {{
  egress = {{
    allow = {{ "{host_ip}:{port}" }},
    intercept = {{ "git.internal.test" }},
    private = {{ "127.0.0.0/8" }},  -- git.internal.test is 127.0.0.20 here
  }},
  outboundByHost = {{
    ["git.internal.test"] = function(req, env, ctx)
      req.headers:set("x-auth-token", env.VCS_TOKEN)
      return fetch(req)
    end,
  }},
}}
"""


def names(daemon):
    r = daemon.cli("sandbox", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return [s["name"] for s in json.loads(r.stdout)["sandboxes"]]


def show(daemon, name):
    r = daemon.cli("sandbox", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def nc(runtime, cid, host, port):
    """'hello' from a server that answered, else busybox nc's error (podman or docker)."""
    r = runtime.exec(cid, f"nc -w 5 {host} {port} </dev/null 2>&1")
    return r.stdout.strip()
