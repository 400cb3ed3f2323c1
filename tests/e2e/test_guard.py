# SPDX-License-Identifier: MIT
"""What keeps a sandbox from undoing its own confinement outside the kernel hooks: the
control API refuses a caller that runs inside a sandbox (root or not), and `sandbox add`
refuses a cgroup that a user other than root could move processes out of."""
import json
import os
import subprocess

from conftest import BUILD, IN_SANDBOX, PY, write_policy
from standin import files  # noqa: F401  (fixture)

# Connects to the control socket from outside any sandbox, asks once (allowed), moves itself
# into the sandbox's cgroup and asks again on the same connection, then connects anew from
# inside. Prints each answer's status (or the errno of a refused connect).
CLIENT = r"""
import errno, http.client, json, os, socket, sys

class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("sluiced", timeout=10)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)

def ask(c, method, path):
    try:
        c.request(method, path)
        r = c.getresponse()
        return [r.status, json.loads(r.read() or b"null")]
    except OSError as e:
        return [errno.errorcode.get(e.errno, str(e)), None]

sock, procs, name = sys.argv[1:4]
out = []
c = Conn(sock)
out.append(ask(c, "GET", "/v1/sandboxes/" + name))
with open(procs, "w") as f:
    f.write(str(os.getpid()))
out.append(ask(c, "DELETE", "/v1/sandboxes/" + name))
out.append(ask(Conn(sock), "DELETE", "/v1/sandboxes/" + name))
print(json.dumps({"pid": os.getpid(), "answers": out}))
"""


def policy(workdir, servers):
    return write_policy(workdir, "guard", f"""
return {{ egress = {{ allow = {{ "127.0.0.1:{servers.ports[0]}" }} }} }}
""")


def names(daemon):
    r = daemon.cli("sandbox", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return [s["name"] for s in json.loads(r.stdout)["sandboxes"]]


def test_control_api_refuses_a_caller_inside_a_sandbox(daemon, cgroups, workdir, servers):
    cg = cgroups.make("guard-ctl")
    sub = cgroups.make("guard-ctl/sub")  # a child cgroup is the same sandbox
    daemon.add("g-ctl", cg, policy(workdir, servers))
    try:
        r = subprocess.run([PY, "-c", CLIENT, daemon.socket, str(sub / "cgroup.procs"), "g-ctl"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        before, after, inside = got["answers"]
        assert before[0] == 200 and before[1]["name"] == "g-ctl"  # the allowed twin
        # Root, but in the sandbox now: refused on the connection it opened outside...
        assert after[0] == 403 and "sandbox" in after[1]["error"]
        # ...and on one opened inside (refused by the kernel first where sluice confines
        # UNIX sockets, else by the API).
        assert inside[0] in (403, "EPERM", "EACCES"), inside
        assert "g-ctl" in names(daemon)
        ev = [e for e in daemon.events("g-ctl") if e.get("type") == "control"]
        assert ev and ev[0]["verdict"] == "refused" and ev[0]["pid"] == got["pid"]
        assert ev[0]["method"] == "DELETE" and ev[0]["uid"] == 0
        # The CLI from inside (in-sandbox runs it as root in the cgroup) fails clearly.
        r = subprocess.run([IN_SANDBOX, str(cg), str(workdir / "resolv.conf"),
                            str(BUILD / "sluice"), "--socket", daemon.socket, "sandbox", "rm",
                            "g-ctl"], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "g-ctl" in names(daemon)
        assert ("not for processes in a sandbox" in r.stderr or
                "cannot reach sluiced" in r.stderr), r.stderr
    finally:
        daemon.cli("sandbox", "rm", "g-ctl")


def add(daemon, name, cg, pol, *extra):
    return daemon.cli("sandbox", "add", name, "--cgroup", str(cg), "--policy", str(pol), *extra)


def test_sandbox_add_refuses_a_cgroup_a_user_could_leave(daemon, cgroups, workdir, servers,
                                                         files):
    pol = policy(workdir, servers)
    # Delegated to nobody: its cgroup.procs is nobody's.
    own = cgroups.make("guard-own")
    os.chown(own / "cgroup.procs", 65534, 65534)
    # An ancestor whose cgroup.procs anyone may write.
    up = cgroups.make("guard-up")
    child = cgroups.make("guard-up/child")
    os.chmod(up / "cgroup.procs", 0o666)
    ok = cgroups.make("guard-ok")
    added = []
    try:
        for name, cg, which in (("g-own", own, own), ("g-up", child, up)):
            r = add(daemon, name, cg, pol)
            assert r.returncode != 0 and name not in names(daemon), r.stdout
            assert f"{which}/cgroup.procs can be written by a user other than root" in r.stderr
            assert "--allow-writable-cgroup" in r.stderr
            status, body = daemon.api("POST", "/v1/sandboxes", {
                "name": name, "cgroup": str(cg), "policy_file": str(pol)})
            assert status == 403 and "allow_writable_cgroup" in body["error"]
        # The allowed twins: a root-only cgroup as it is; the others with the override.
        assert add(daemon, "g-ok", ok, pol).returncode == 0
        added.append("g-ok")
        r = add(daemon, "g-own", own, pol, "--allow-writable-cgroup")
        assert r.returncode == 0, r.stderr
        added.append("g-own")
        status, body = daemon.api("POST", "/v1/sandboxes", {
            "name": "g-up", "cgroup": str(child), "policy_file": str(pol),
            "allow_writable_cgroup": True})
        assert status == 201, body
        added.append("g-up")
        # Why it is refused by default: nobody, confined in the child, moves itself into
        # the writable ancestor, out of the sandbox.
        script = f"""
import errno, os
try:
    open({str(up / "cgroup.procs")!r}, "w").write(str(os.getpid()))
    print(open("/proc/self/cgroup").read().strip())
except OSError as e:
    print(errno.errorcode[e.errno])
"""
        r = subprocess.run([IN_SANDBOX, "--user", "nobody", str(child), str(files / "resolv.conf"),
                            PY, "-c", script], capture_output=True, text=True, timeout=30,
                           cwd="/")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("/guard-up"), r.stdout
    finally:
        for name in added:
            daemon.cli("sandbox", "rm", name)
