# SPDX-License-Identifier: MIT
"""sluice run: one command in a transient sandbox. Every test gives its own --cgroup-parent
(below this run's cgroups), so the machine's sluice-run parent is never touched, and checks
that the sandbox, its cgroup and its CA files are gone afterwards, whatever happened to the
command (success, failure, a signal, sluice run itself killed)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, PROBE, PY, bpf_links_of, cgroup2_root, write_policy
from standin import files, standins  # noqa: F401  (fixtures)


@pytest.fixture
def parent(cgroups, request):
    return cgroups.make("run-" + request.node.name[:40].replace("[", "-").replace("]", ""))


@pytest.fixture
def policy(workdir, servers):
    allowed = servers.ports[0]
    return write_policy(workdir, "run-policy", f"""
return {{
  egress = {{
    allow = {{ "127.0.0.1:{allowed}" }},
    intercept = {{ "api.test" }},
    private = {{ "127.0.0.0/8" }},
  }},
}}
""")


# As `sudo sluice run` by nobody: the command runs as the user who called sudo.
SUDO_NOBODY = {"SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}


def run_env(daemon, sudo=SUDO_NOBODY):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    return dict(env, SLUICE_SOCKET=daemon.socket, **(sudo or {}))


def run(daemon, parent, policy, cmd, *args, timeout=60, sudo=SUDO_NOBODY, wrap=(), **kw):
    """sluice run as under sudo (@sudo: its SUDO_* variables; None: plain root); @wrap is
    put before it (a mount namespace, a shell that opens descriptors)."""
    return subprocess.run([*wrap, str(BUILD / "sluice"), "run", "--cgroup-parent", str(parent),
                           "--policy", str(policy), *args, "--", *cmd], capture_output=True,
                          text=True, env=run_env(daemon, sudo), timeout=timeout, **kw)


def names(daemon):
    r = daemon.cli("sandbox", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return [s["name"] for s in json.loads(r.stdout)["sandboxes"]]


def assert_clean(daemon, parent, name):
    assert name not in names(daemon)
    assert not (Path(parent) / name).exists()


def spawn(daemon, parent, policy, cmd, *args):
    env = run_env(daemon)
    return subprocess.Popen([str(BUILD / "sluice"), "run", "--cgroup-parent", str(parent),
                             "--policy", str(policy), *args, "--", *cmd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_populated(cg, want=True, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            populated = "populated 1" in (Path(cg) / "cgroup.events").read_text()
        except OSError:
            populated = False
        if populated == want:
            return True
        time.sleep(0.02)
    return False


def alive(pid):
    """Whether @pid runs (a zombie waiting for init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_command_runs_in_the_sandbox_and_everything_goes_after(daemon, parent, policy, servers,
                                                               upstreams, workdir):
    allowed, denied, _ = servers.ports
    ops = json.dumps([{"op": "connect", "proto": "tcp", "host": "127.0.0.1", "port": p}
                      for p in (allowed, denied)])
    # A loopback resolv.conf in a mount namespace of its own, as tools/in-sandbox does: a
    # query sluice failed to capture would go nowhere. The command has no capability to
    # mount: sluice run itself starts in that namespace.
    script = f"""
set -e
tail -n 1 /proc/self/cgroup
echo "$SLUICE_SANDBOX $SSL_CERT_FILE $CURL_CA_BUNDLE $REQUESTS_CA_BUNDLE $GIT_SSL_CAINFO"
echo "$NODE_EXTRA_CA_CERTS"
{PY} {PROBE} '{ops}'
curl -sS -o /dev/null -w "%{{http_code}}\\n" --max-time 20 https://api.test/headers
"""
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount --bind {workdir}/resolv.conf /etc/resolv.conf && exec "$@"', "sh"]
    r = run(daemon, parent, policy, ["sh", "-c", script], "--name", "r-ok", wrap=wrap)
    assert r.returncode == 0, r.stderr
    cg_line, env, node_ca, probe, code = r.stdout.splitlines()
    assert cg_line.endswith(f"/{Path(parent).name}/r-ok")
    name, *bundles = env.split()
    assert name == "r-ok" and len(set(bundles)) == 1
    assert json.loads(probe) == ["OK", "EPERM"]
    assert code == "200"  # trusted without --cacert: the bundle has the sandbox CA
    assert_clean(daemon, parent, "r-ok")
    assert not os.path.exists(bundles[0]) and not os.path.exists(node_ca)


@pytest.mark.parametrize("cmd,status", [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
    (["/nonexistent/command"], 127),
])
def test_exit_status_is_the_commands(daemon, parent, policy, cmd, status):
    r = run(daemon, parent, policy, cmd, "--name", "r-status")
    assert r.returncode == status, r.stderr
    assert_clean(daemon, parent, "r-status")


def test_what_the_command_leaves_running_is_killed(daemon, parent, policy):
    r = run(daemon, parent, policy, ["sh", "-c", "sleep 600 & echo $!; exit 3"], "--name",
            "r-left")
    assert r.returncode == 3
    pid = int(r.stdout.split()[0])
    assert not alive(pid)
    assert_clean(daemon, parent, "r-left")


def test_signals_are_passed_on(daemon, parent, policy):
    p = spawn(daemon, parent, policy, ["sleep", "600"], "--name", "r-sig")
    try:
        assert wait_populated(Path(parent) / "r-sig")
        assert "r-sig" in names(daemon)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_clean(daemon, parent, "r-sig")


def test_killed_run_is_cleaned_up_by_the_next(daemon, parent, policy):
    """SIGKILL leaves sluice run no chance: its command dies with it (parent-death signal),
    what that command started lives on, enforced, and the next run removes it all."""
    p = spawn(daemon, parent, policy, ["sh", "-c", "sleep 600 & echo $!; wait"], "--name",
              "r-orphan")
    leftover = int(p.stdout.readline())
    cg = Path(parent) / "r-orphan"
    p.kill()
    p.wait()
    try:
        assert alive(leftover) and "r-orphan" in names(daemon)
        assert str(leftover) in (cg / "cgroup.procs").read_text()
        r = run(daemon, parent, policy, ["true"], "--name", "r-next")
        assert r.returncode == 0, r.stderr
        assert "cleaning up after an earlier run" in r.stderr
        assert not alive(leftover)
        assert_clean(daemon, parent, "r-orphan")
        assert_clean(daemon, parent, "r-next")
    finally:
        if cg.exists():
            (cg / "cgroup.kill").write_text("1")


def test_user_drops_root_for_good(daemon, parent, policy):
    script = f"""
id -u
grep NoNewPrivs /proc/self/status
test -r "$SSL_CERT_FILE" && test -r "$NODE_EXTRA_CA_CERTS" && echo readable
echo $$ > {Path(parent).parent}/cgroup.procs || echo stayed
echo "$HOME $USER"
"""
    r = run(daemon, parent, policy, ["sh", "-c", script], "--name", "r-user", "--user",
            "nobody")
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[0] == "65534" and out[1].split() == ["NoNewPrivs:", "1"]
    assert out[2:4] == ["readable", "stayed"] and "Permission denied" in r.stderr
    assert out[4] == "/nonexistent nobody"
    assert_clean(daemon, parent, "r-user")


def test_run_in_a_network_namespace(daemon, parent, workdir, standins):
    ct = standins("run")
    allowed, denied = ct.servers.ports
    pol = write_policy(workdir, "run-netns", f"""
return {{ egress = {{ allow = {{ "{ct.host_ip}:{allowed}" }} }} }}
""")
    ops = json.dumps([{"op": "connect", "proto": "tcp", "host": ct.host_ip, "port": p}
                      for p in (allowed, denied)] +
                     [{"op": "dns", "server": ct.host_ip, "name": "allowed.test"}])
    r = run(daemon, parent, pol, [PY, PROBE, ops], "--name", "r-netns", "--netns", ct.netns,
            "--user", "nobody")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got[:2] == ["OK", "EPERM"]
    assert got[2]["rcode"] == 3  # answered by sluice in the namespace: not in the policy
    assert_clean(daemon, parent, "r-netns")


def test_failures_leave_nothing_behind(daemon, parent, policy, workdir, cgroups):
    bad = write_policy(workdir, "run-bad", "return { egres = {} }")
    r = run(daemon, parent, bad, ["true"], "--name", "r-bad")
    assert r.returncode == 125 and "unknown key 'egres'" in r.stderr
    assert_clean(daemon, parent, "r-bad")
    # The name of a live sandbox: refused, and that sandbox is untouched.
    cg = cgroups.make("r-taken-cg")
    assert daemon.cli("sandbox", "add", "r-taken", "--cgroup", str(cg), "--policy",
                      str(policy)).returncode == 0
    try:
        r = run(daemon, parent, policy, ["true"], "--name", "r-taken")
        assert r.returncode == 125 and "already exists" in r.stderr
        assert "r-taken" in names(daemon) and not (Path(parent) / "r-taken").exists()
    finally:
        daemon.cli("sandbox", "rm", "r-taken")
    for args, status in ((["--policy", str(policy)], 2), (["--name", "a/b", "--policy",
                                                            str(policy), "--", "true"], 2),
                         (["--policy", str(policy), "--user", "no-such-user-x", "--", "true"],
                          125)):
        r = daemon.cli("run", "--cgroup-parent", str(parent), *args)
        assert r.returncode == status, (args, r.stderr)
    r = subprocess.run([str(BUILD / "sluice"), "--socket", "/nonexistent/sock", "run",
                        "--cgroup-parent", str(parent), "--policy", str(policy), "--name",
                        "r-nodaemon", "--", "true"], capture_output=True, text=True, timeout=30,
                       env=run_env(daemon))
    assert r.returncode == 125 and "cannot reach sluiced" in r.stderr
    assert not (Path(parent) / "r-nodaemon").exists()


def test_github_example_policy_loads(daemon, parent, workdir, dnsmasq):
    """The README's one-liner policy (no GitHub here to talk to: only that it loads, and that
    its names are intercepted). While the command runs: the names it lists resolve (the
    wildcard too: the query reaches the upstream resolver) and a GitHub name it does not list
    never leaves; the sandbox's cgroup holds the sock_ops program that hands intercepted
    connections to the proxy (attached only when a policy intercepts)."""
    example = Path(__file__).resolve().parents[2] / "lua" / "examples" / "github.lua"
    ops = json.dumps([{"op": "resolve", "name": n, "family": 4}
                      for n in ("api.github.com", "raw.githubusercontent.com",
                                "gist.github.com")])
    # The probe's answer, then wait for the test to look at the sandbox (one byte on stdin).
    script = f"{PY} {PROBE} '{ops}'; head -c 1 >/dev/null"
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount --bind {workdir}/resolv.conf /etc/resolv.conf && exec "$@"', "sh"]
    p = subprocess.Popen([*wrap, str(BUILD / "sluice"), "run", "--cgroup-parent", str(parent),
                          "--policy", str(example), "--name", "r-github", "--", "sh", "-c",
                          script], env=run_env(daemon), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        resolved = json.loads(p.stdout.readline() or "null")
        cg = Path(parent) / "r-github"
        links = [x.get("attach_type", "") for x in bpf_links_of(cg)]
        p.stdin.write("x")
        p.stdin.close()
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert resolved is not None and len(resolved) == 3, resolved
    # Nothing serves these names here: the upstream is asked, and fails, for the listed ones;
    # sluice itself refuses the unlisted one.
    assert dnsmasq.queried("api.github.com") and dnsmasq.queried("raw.githubusercontent.com")
    assert not dnsmasq.queried("gist.github.com") and resolved[2].startswith("EAI_"), resolved
    assert any("sock_ops" in t for t in links), links
    assert_clean(daemon, parent, "r-github")


# ---- safe by default: who the command is, what it holds, what it can make ----

# What the command reports about itself: ids, capability sets, no_new_privs, seccomp mode,
# and whether it can move itself to the root cgroup.
WHOAMI = """
import errno, json, os
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out = {"uid": os.getresuid(), "gid": os.getresgid(), "groups": sorted(os.getgroups())}
for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    out[k] = st[k].strip()
try:
    with open(%r, "w") as f:
        f.write(str(os.getpid()))
    out["escape"] = "OK"
except OSError as e:
    out["escape"] = errno.errorcode[e.errno]
out["cgroup"] = open("/proc/self/cgroup").read().strip()
print(json.dumps(out))
""" % os.path.join(cgroup2_root(), "cgroup.procs")

NO_CAPS = {k: "0000000000000000" for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def whoami(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_under_sudo_the_command_is_the_calling_user(daemon, parent, policy):
    r = run(daemon, parent, policy, [PY, "-c", WHOAMI], "--name", "r-sudo")
    got = whoami(r)
    assert got["uid"] == [65534] * 3 and got["gid"] == [65534] * 3
    assert got["groups"] == [65534]  # root's groups are gone, nobody's are set
    assert {k: got[k] for k in NO_CAPS} == NO_CAPS
    assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2"
    assert got["escape"] == "EACCES" and got["cgroup"].endswith("/r-sudo")
    assert "warning" not in r.stderr
    assert_clean(daemon, parent, "r-sudo")


@pytest.mark.parametrize("sudo", [None, {"SUDO_UID": "0", "SUDO_GID": "0", "SUDO_USER": "root"}],
                         ids=["plain-root", "sudo-from-root"])
def test_as_root_without_user_it_refuses(daemon, parent, policy, sudo):
    r = run(daemon, parent, policy, ["true"], "--name", "r-root", sudo=sudo)
    assert r.returncode == 2 and "--user" in r.stderr and "refusing" in r.stderr, r.stderr
    assert_clean(daemon, parent, "r-root")
    # The allowed twin: the same with --user.
    r = run(daemon, parent, policy, [PY, "-c", WHOAMI], "--name", "r-root", "--user", "nobody",
            sudo=sudo)
    assert whoami(r)["uid"] == [65534] * 3
    assert_clean(daemon, parent, "r-root")


def test_user_root_warns_and_still_holds_no_capability(daemon, parent, policy):
    r = run(daemon, parent, policy, [PY, "-c", WHOAMI], "--name", "r-asroot", "--user", "root",
            sudo=None)
    got = whoami(r)
    assert "warning" in r.stderr and "can leave its sandbox" in r.stderr
    assert got["uid"] == [0, 0, 0] and {k: got[k] for k in NO_CAPS} == NO_CAPS
    assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2"
    # What the warning is about: root owns cgroup.procs, no capability needed. The command
    # moved itself out; sluice run still removes its own cgroup and sandbox.
    assert got["escape"] == "OK"
    assert_clean(daemon, parent, "r-asroot")


SOCKETS = """
import ctypes, errno, json, socket
def try_(f):
    try:
        f().close()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
out = {}
for name, fam, typ in (("unix", socket.AF_UNIX, socket.SOCK_STREAM),
                       ("inet", socket.AF_INET, socket.SOCK_STREAM),
                       ("inet6", socket.AF_INET6, socket.SOCK_DGRAM),
                       ("netlink", socket.AF_NETLINK, socket.SOCK_RAW),
                       ("packet", socket.AF_PACKET, socket.SOCK_DGRAM),
                       ("vsock", 40, socket.SOCK_STREAM),
                       ("alg", 38, socket.SOCK_SEQPACKET)):
    out[name] = try_(lambda: socket.socket(fam, typ))
out["pair_unix"] = try_(lambda: socket.socketpair(socket.AF_UNIX)[0])
libc = ctypes.CDLL(None, use_errno=True)
def sys(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "OK" if r >= 0 else errno.errorcode[ctypes.get_errno()]
# AF_PACKET (17) with bits above the int: the kernel reads 17, the filter must too.
out["packet_hi"] = sys(41, (1 << 32) | 17, socket.SOCK_DGRAM, 0)
params = ctypes.create_string_buffer(120)
out["io_uring_setup"] = sys(425, 4, ctypes.addressof(params))
out["io_uring_enter"] = sys(426, 0, 0, 0, 0)
print(json.dumps(out))
"""


@pytest.mark.parametrize("user", [None, "root"], ids=["sudo-user", "root"])
def test_socket_families_and_io_uring_are_filtered(daemon, parent, policy, user):
    args = ["--user", user] if user else []
    r = run(daemon, parent, policy, [PY, "-c", SOCKETS], "--name", "r-seccomp", *args,
            sudo=None if user else SUDO_NOBODY)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # Without the filter: packet EPERM (no CAP_NET_RAW), vsock ENODEV, io_uring works.
    assert got == {"unix": "OK", "inet": "OK", "inet6": "OK", "netlink": "OK",
                   "pair_unix": "OK", "packet": "EAFNOSUPPORT", "vsock": "EAFNOSUPPORT",
                   "alg": "EAFNOSUPPORT", "packet_hi": "EAFNOSUPPORT",
                   "io_uring_setup": "EPERM", "io_uring_enter": "EPERM"}
    assert_clean(daemon, parent, "r-seccomp")


FDS = "for fd in 3 4 5 6 7 8 9; do [ -e /proc/self/fd/$fd ] && printf '%s ' $fd; done; echo"


def test_inherited_descriptors_are_closed_unless_preserved(daemon, parent, policy):
    # The caller's descriptors 3, 4 and 7 (not close-on-exec, as a shell leaves them).
    wrap = ["sh", "-c", 'exec 3</etc/hostname 4</etc/hostname 7</etc/hostname; exec "$@"',
            "sh"]
    r = run(daemon, parent, policy, ["sh", "-c", FDS], "--name", "r-fds", wrap=wrap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == []
    r = run(daemon, parent, policy, ["sh", "-c", FDS], "--name", "r-fds", "--preserve-fds",
            "2", wrap=wrap)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "4"]
    # Descriptor 5 is not open: refused before anything is made.
    r = run(daemon, parent, policy, ["true"], "--name", "r-fds", "--preserve-fds", "3",
            wrap=wrap)
    assert r.returncode == 2 and "descriptor 5 is not open" in r.stderr
    for bad in ("-1", "x", "100000"):
        r = run(daemon, parent, policy, ["true"], "--name", "r-fds", "--preserve-fds", bad)
        assert r.returncode == 2 and "--preserve-fds" in r.stderr, (bad, r.stderr)
    assert_clean(daemon, parent, "r-fds")
