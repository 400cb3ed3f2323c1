# SPDX-License-Identifier: MIT
"""Containers: sandboxes with a network namespace of their own, added by path, by pid, or by
the OCI runtime hook.

The container stand-in is what a runtime makes: a network namespace joined to the host by a
veth pair (a private /30 and nothing routed beyond it: an address outside it is unreachable
from inside), a cgroup of its own, its processes run as an unprivileged user (nobody, with
no_new_privs). The kernel rewrites the stand-in's DNS and intercepted connections to
127.0.0.1 of *its* namespace, where sluiced opens the sandbox's listeners; sluiced's upstream
connections leave from the host's namespace (nginx on 127.0.0.20 is not reachable from
inside by address). Passthrough traffic goes over the veth to servers on its host side.
Everything made here (namespaces, veths, cgroups, processes) is removed even on failure.
"""
import json
import os
import signal
import time
from pathlib import Path

from conftest import ENV_SECRETS, PY, bpf_links_of, cgroup2_root, write_policy
from standin import files, ip, standins  # noqa: F401  (fixtures)

DEADLINE_S = 15  # a vanished sandbox is gone within this


def policy_text(ct):
    return f"""
return {{
  egress = {{
    allow = {{ "{ct.host_ip}:{ct.servers.ports[0]}" }},
    intercept = {{ "git.internal.test" }},
    private = {{ "127.0.0.0/8" }},
  }},
  outboundByHost = {{
    ["git.internal.test"] = function(req, env, ctx)
      req.headers:set("x-auth-token", env.VCS_TOKEN)
      return fetch(req)
    end,
  }},
}}
"""


def show(daemon, name):
    r = daemon.cli("sandbox", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def names(daemon):
    r = daemon.cli("sandbox", "ls", "--json")
    assert r.returncode == 0, r.stderr
    return [s["name"] for s in json.loads(r.stdout)["sandboxes"]]


def wait_gone(daemon, name, timeout=DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in names(daemon):
            return time.monotonic() - (deadline - timeout)
        time.sleep(0.2)
    return None


def tcp(host, port):
    return {"op": "connect", "proto": "tcp", "host": host, "port": port}


def dns(server, name, tcp_=False):
    return {"op": "dns", "server": server, "name": name, "tcp": tcp_}


def write_ca(daemon, name, files):
    r = daemon.cli("ca", name)
    assert r.returncode == 0, r.stderr
    ca = files / f"{name}-ca.pem"
    ca.write_text(r.stdout)
    ca.chmod(0o644)
    return ca


def curl(ct, ca, url):
    r = ct.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                "--cacert", str(ca), url])
    return r.returncode, r.stdout, r.stderr


def test_container_reaches_what_its_policy_names_and_nothing_else(daemon, standins, files,
                                                                  upstreams, dnsmasq, workdir):
    ct = standins("main")
    allowed, other = ct.servers.ports
    name = "ct-main"
    r = daemon.cli("sandbox", "add", name, "--cgroup", str(ct.cg), "--netns", ct.netns,
                   "--policy", str(write_policy(workdir, name, policy_text(ct))))
    assert r.returncode == 0, r.stderr
    try:
        sb = show(daemon, name)
        assert sb["netns"] == ct.netns and sb["netns_inode"] == os.stat(ct.netns).st_ino
        # Passthrough over the veth; the twin port on the same host is EPERM, and so is the
        # host's loopback (which the namespace could not reach anyway).
        assert ct.probe([tcp(ct.host_ip, allowed), tcp(ct.host_ip, other),
                         tcp("127.0.0.20", 81)]) == ["OK", "EPERM", "EPERM"]
        # DNS to any server, UDP and TCP, reaches sluice inside the namespace: the stand-in's
        # resolver, the veth peer, an address with no route at all.
        got = ct.probe([dns("127.0.0.153", "git.internal.test"),
                        dns(ct.host_ip, "git.internal.test", tcp_=True),
                        dns("192.0.2.53", "git.internal.test"),
                        dns("127.0.0.53", "denied.test"),
                        {"op": "resolve", "name": "git.internal.test", "family": 4}])
        for g in got[:3]:
            assert g["rcode"] == 0 and g["answers"] == [["A", "127.0.0.20"]], got
        assert got[0]["from"] == ["127.0.0.153", 53]  # the reply's source is restored
        assert got[3]["rcode"] == 3 and not dnsmasq.queried("denied.test")
        assert got[4] == ["127.0.0.20"]
        # The intercepted host gets its credential, added outside the sandbox.
        ca = write_ca(daemon, name, files)
        mark = upstreams.nginx.mark()
        rc, code, err = curl(ct, ca, "https://git.internal.test/headers")
        assert rc == 0 and code == "200", err
        upstreams.nginx.wait_requests(1, since=mark)
        seen = upstreams.nginx.requests_seen(since=mark)
        assert seen[-1]["h_x_auth_token"] == ENV_SECRETS["VCS_TOKEN"]
        env = ct.run(["sh", "-c", "cat /proc/self/environ"])
        assert ENV_SECRETS["VCS_TOKEN"] not in env.stdout
        # The counters are the sandbox's (the kernel knows no namespaces).
        c = show(daemon, name)["counters"]
        assert c["allowed"]["tcp"] >= 1 and c["denied"]["tcp"] >= 2 and c["proxied"]["tcp"] >= 1
    finally:
        assert daemon.cli("sandbox", "rm", name).returncode == 0
    # Removed: the stand-in's traffic is no longer judged (the other port answers).
    assert ct.probe([tcp(ct.host_ip, other)]) == ["OK"]


def test_unprivileged_process_stays_in_its_cgroup_and_away_from_sluiced(daemon, standins,
                                                                       workdir):
    ct = standins("priv")
    name = "ct-priv"
    assert daemon.cli("sandbox", "add", name, "--cgroup", str(ct.cg), "--netns", ct.netns,
                      "--policy", str(write_policy(workdir, name, policy_text(ct)))
                      ).returncode == 0
    try:
        root = Path(ct.cg).parents[1]  # the cgroup2 mount or an ancestor of ours
        escape = ct.run(["sh", "-c", f"id -u; echo $$ > {root}/cgroup.procs; "
                                     f"echo $$ > {Path(ct.cg).parent}/cgroup.procs; "
                                     f"cat /proc/self/cgroup"])
        assert escape.stdout.splitlines()[0] == str(65534)
        assert escape.stderr.count("Permission denied") == 2, escape.stderr
        rel = "/" + str(Path(ct.cg).relative_to(cgroup2_root()))
        assert escape.stdout.splitlines()[-1] == "0::" + rel
        sock = ct.run([PY, "-c", f"""
import errno, socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({daemon.socket!r})
    print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])
"""])
        assert sock.stdout.strip() in ("EACCES", "EPERM"), sock
        # Nor can it reach the daemon's listeners of its own sandbox directly.
        sb = show(daemon, name)
        assert ct.probe([tcp("127.0.0.1", sb["proxy"]["port"]),
                         tcp("127.0.0.1", sb["dns"]["port"])]) == ["EPERM", "EPERM"]
    finally:
        daemon.cli("sandbox", "rm", name)


def test_pid_names_the_cgroup_and_the_namespace(daemon, standins, workdir):
    ct = standins("pid")
    init = ct.spawn()
    name = "ct-pid"
    r = daemon.cli("sandbox", "add", name, "--pid", str(init.pid), "--policy",
                   str(write_policy(workdir, name, policy_text(ct))))
    assert r.returncode == 0, r.stderr
    try:
        sb = show(daemon, name)
        assert sb["cgroup"] == str(ct.cg) and sb["netns"] == f"/proc/{init.pid}/ns/net"
        assert ct.probe([tcp(ct.host_ip, ct.servers.ports[0]), tcp(ct.host_ip, ct.servers.ports[1]),
                         dns("127.0.0.153", "git.internal.test")])[:2] == ["OK", "EPERM"]
    finally:
        daemon.cli("sandbox", "rm", name)


def test_bad_namespaces_are_refused_clearly(daemon, standins, cgroups, workdir, files):
    ct = standins("bad")
    pol = str(write_policy(workdir, "ct-bad", policy_text(ct)))
    cases = [
        (["--cgroup", str(ct.cg), "--netns", str(files / "resolv.conf")],
         "not a network namespace"),
        (["--cgroup", str(ct.cg), "--netns", "/run/netns/no-such-namespace"],
         "No such file or directory"),
        (["--pid", "999999999"], "no such process"),
    ]
    ip("netns", "add", ct.ns + "-down")
    try:
        cases.append((["--cgroup", str(ct.cg), "--netns", f"/run/netns/{ct.ns}-down"],
                      "loopback interface is down"))
        for args, message in cases:
            r = daemon.cli("sandbox", "add", "ct-bad", *args, "--policy", pol)
            assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
            assert r.stderr.count("\n") == 1
        assert bpf_links_of(ct.cg) == [] and "ct-bad" not in names(daemon)
        r = daemon.cli("sandbox", "add", "ct-bad", "--pid", "1", "--cgroup", str(ct.cg),
                       "--policy", pol)
        assert r.returncode == 2
        r = daemon.cli("sandbox", "add", "ct-bad", "--pid", "1", "--netns", ct.netns,
                       "--policy", pol)
        assert r.returncode == 2
    finally:
        ip("netns", "del", ct.ns + "-down", check=False)


def test_sandbox_whose_container_is_gone_is_removed(daemon, standins, workdir):
    """Processes killed, namespace deleted, cgroup removed: the sandbox goes, though sluiced
    itself holds the namespace open."""
    ct = standins("gone")
    ct.spawn()
    name = "ct-gone"
    assert daemon.cli("sandbox", "add", name, "--cgroup", str(ct.cg), "--netns", ct.netns,
                      "--policy", str(write_policy(workdir, name, policy_text(ct)))
                      ).returncode == 0
    ct.kill()
    ct.delete_netns()
    Path(ct.cg).rmdir()
    assert wait_gone(daemon, name) is not None
    assert f"sandbox {name}: its cgroup was removed, removing the sandbox" in daemon.read_log()
    assert {"type": "sandbox", "sandbox": name, "action": "removed",
            "reason": "its cgroup was removed"}.items() <= \
        [e for e in daemon.events() if e.get("sandbox") == name][-1].items()


def test_sandbox_whose_namespace_is_gone_with_its_processes_is_removed(daemon, standins,
                                                                       workdir):
    """The cgroup stays (a runtime that leaves it behind), but its processes are gone and no
    process or mount holds the namespace: the sandbox goes. While the namespace is still
    mounted (ip netns), it stays."""
    ct = standins("nsgone")
    ct.spawn()
    name = "ct-nsgone"
    assert daemon.cli("sandbox", "add", name, "--cgroup", str(ct.cg), "--netns", ct.netns,
                      "--policy", str(write_policy(workdir, name, policy_text(ct)))
                      ).returncode == 0
    ct.kill()  # empty cgroup, but /run/netns still holds the namespace
    time.sleep(7)  # more than the namespace check period (5 sweeps of 1 s)
    assert name in names(daemon)
    ct.delete_netns()
    assert wait_gone(daemon, name) is not None
    assert f"sandbox {name}: its network namespace is gone" in daemon.read_log()
    assert bpf_links_of(ct.cg) == []


def test_restart_reopens_listeners_in_the_namespace(fresh_daemon, standins, workdir):
    """A restarted sluiced finds the namespace by its path, or, once the path is gone,
    through the processes of the cgroup, and listens there on the same ports."""
    d = fresh_daemon.start()
    ct = standins("restart")
    init = ct.spawn()
    name = "ct-restart"
    r = d.cli("sandbox", "add", name, "--cgroup", str(ct.cg), "--netns", ct.netns, "--policy",
              str(write_policy(workdir, name, policy_text(ct))))
    assert r.returncode == 0, r.stderr
    before = show(d, name)
    lookup = [dns("127.0.0.153", "git.internal.test"), tcp(ct.host_ip, ct.servers.ports[1])]

    for round_ in ("by path", "through the cgroup"):
        if round_ == "through the cgroup":
            ip("netns", "del", ct.ns)  # the path is gone; the init process holds the namespace
        d.signal(signal.SIGKILL)
        d.start()
        after = show(d, name)
        assert after["netns"] == ct.netns and after["netns_inode"] == before["netns_inode"]
        assert (after["dns"]["port"], after["proxy"]["port"]) == \
            (before["dns"]["port"], before["proxy"]["port"])
        got = ct.probe(lookup, netns=f"/proc/{init.pid}/ns/net")
        assert got[0]["rcode"] == 0 and got[0]["answers"] == [["A", "127.0.0.20"]], round_
        assert got[1] == "EPERM"
    assert "adopted" in d.read_log()

    # Gone while no daemon ran: the next one removes the sandbox.
    d.signal(signal.SIGKILL)
    ct.kill()
    d.start()
    assert name not in names(d)
    assert f"sandbox {name}: its network namespace is gone and its cgroup is empty" in \
        d.read_log()


# ---- the OCI runtime hook ----

def oci_state(container_id, status, pid, bundle, annotations):
    """What runc, crun and containerd write on a hook's stdin (runtime-spec, state)."""
    return json.dumps({"ociVersion": "1.2.0", "id": container_id, "status": status,
                       "pid": pid, "bundle": str(bundle), "annotations": annotations})


def hook(daemon, stdin, *args):
    return daemon.cli("oci-hook", *args, input=stdin)


def test_oci_hook_adds_and_removes_the_container(daemon, standins, files, upstreams, workdir):
    ct = standins("oci")
    init = ct.spawn()
    policies = files / "policies"
    policies.mkdir()
    (policies / "ct.lua").write_text(policy_text(ct))
    cid = os.urandom(32).hex()
    ann = {"io.sluice.policy": "ct.lua"}
    args = ("--policy-dir", str(policies))
    r = hook(daemon, oci_state(cid, "creating", init.pid, files, ann), *args)
    assert r.returncode == 0, r.stderr
    try:
        sb = show(daemon, cid)
        assert sb["cgroup"] == str(ct.cg) and sb["netns_inode"] == os.stat(ct.netns).st_ino
        assert sb["policy"] == str(policies / "ct.lua")
        ca = write_ca(daemon, cid, files)
        assert ct.probe([tcp(ct.host_ip, ct.servers.ports[0]),
                         tcp(ct.host_ip, ct.servers.ports[1])]) == ["OK", "EPERM"]
        rc, code, err = curl(ct, ca, "https://git.internal.test/headers")
        assert rc == 0 and code == "200", err
    finally:
        # poststop: the init process is gone, the state says so.
        ct.kill()
        r = hook(daemon, oci_state(cid, "stopped", 0, files, ann), *args)
    assert r.returncode == 0, r.stderr
    assert cid not in names(daemon)
    # A second poststop (or one for a container sluice never saw) is fine.
    assert hook(daemon, oci_state(cid, "stopped", 0, files, ann), "delete").returncode == 0


def test_oci_hook_leaves_unannotated_containers_alone_and_refuses_bad_state(daemon, standins,
                                                                          files):
    ct = standins("oci2")
    init = ct.spawn()
    policies = files / "policies"
    policies.mkdir()
    (policies / "ct.lua").write_text(policy_text(ct))
    (files / "outside.lua").write_text(policy_text(ct))
    args = ("--policy-dir", str(policies))
    before = names(daemon)
    r = hook(daemon, oci_state("plain", "creating", init.pid, files, {}), *args)
    assert r.returncode == 0 and names(daemon) == before
    bad = [
        (oci_state("c1", "creating", init.pid, files, {"io.sluice.policy": "../outside.lua"}),
         "is not a file of"),
        (oci_state("c2", "creating", init.pid, files, {"io.sluice.policy": "/etc/shadow"}),
         "No such file or directory"),
        (oci_state("c3", "running", init.pid, files, {"io.sluice.policy": "ct.lua"}),
         "run the hook at createRuntime and poststop"),
        (oci_state("c4", "creating", 0, files, {"io.sluice.policy": "ct.lua"}),
         "the state has no pid"),
        (oci_state("c5", "creating", init.pid, files,
                   {"io.sluice.policy": "ct.lua", "io.sluice.handler": "x",
                    "io.sluice.params": "[1]"}), "must be a JSON object"),
        ("{not json", "not JSON"),
    ]
    for stdin, message in bad:
        r = hook(daemon, stdin, *args)
        assert r.returncode == 1 and message in r.stderr, (stdin, r.stderr)
    assert names(daemon) == before
    # The stage can be named instead of read from the status.
    r = hook(daemon, oci_state("named-stage", "running", init.pid, files,
                               {"io.sluice.policy": "ct.lua"}), "create", *args)
    assert r.returncode == 0, r.stderr
    assert "named-stage" in names(daemon)
    ct.kill()  # poststop comes after the container's processes are gone
    assert hook(daemon, oci_state("named-stage", "running", 0, files, {}),
                "delete").returncode == 0
    assert names(daemon) == before


def test_oci_hook_names_are_the_ids_and_only_their_container_removes_them(daemon, standins,
                                                                        files):
    """F10: `job+1` and `job-1` once mapped to one sandbox, and the failed container's
    poststop removed the running one's. Names are now the ids as they are (an id that is no
    valid name is refused), and poststop removes only the sandbox made for that container id,
    once its processes are gone."""
    ct = standins("oci3")
    init = ct.spawn()
    policies = files / "policies"
    policies.mkdir()
    (policies / "ct.lua").write_text(policy_text(ct))
    args = ("--policy-dir", str(policies))
    ann = {"io.sluice.policy": "ct.lua"}
    job = f"job-{os.getpid()}"
    other = job.replace("-", "+")
    r = hook(daemon, oci_state(job, "creating", init.pid, files, ann), *args)
    assert r.returncode == 0, r.stderr
    try:
        assert show(daemon, job)["container_id"] == job
        allowed, denied = ct.servers.ports
        assert ct.probe([tcp(ct.host_ip, allowed), tcp(ct.host_ip, denied)]) == ["OK", "EPERM"]
        # The colliding id: refused at create (runc then runs its poststop), and that
        # poststop touches nothing.
        r = hook(daemon, oci_state(other, "creating", init.pid, files, ann), *args)
        assert r.returncode == 1 and "cannot be a sandbox name" in r.stderr, r.stderr
        assert hook(daemon, oci_state(other, "stopped", 0, files, ann), *args).returncode == 0
        # A sandbox of the same name not made for this container (added by hand) is not
        # the hook's to remove.
        cg = ct.cg.parent / f"hand-{os.getpid()}"
        cg.mkdir()
        try:
            hand = f"hand-{os.getpid()}"
            daemon.add(hand, cg, policies / "ct.lua")
            r = hook(daemon, oci_state(hand, "stopped", 0, files, ann), *args)
            assert r.returncode == 1 and "not made for container" in r.stderr, r.stderr
            assert hand in names(daemon)
            daemon.cli("sandbox", "rm", hand)
        finally:
            cg.rmdir()
        # The container's own poststop while its processes still run (a stray or early
        # delete): refused, enforcement stays.
        r = hook(daemon, oci_state(job, "stopped", 0, files, ann), *args)
        assert r.returncode == 1 and "processes still run" in r.stderr, r.stderr
        assert job in names(daemon)
        assert ct.probe([tcp(ct.host_ip, allowed), tcp(ct.host_ip, denied)]) == ["OK", "EPERM"]
    finally:
        ct.kill()
        r = hook(daemon, oci_state(job, "stopped", 0, files, ann), *args)
    assert r.returncode == 0, r.stderr
    assert job not in names(daemon)


def test_oci_hook_adds_the_ca_inside_the_root_filesystem_only(daemon, standins, files):
    """The hook (root on the host) writes the sandbox CA into the bundles of the container's
    root filesystem, resolving the image's symbolic links inside it: an absolute link to a
    host file reaches the root filesystem's own path (absent here) and the host file stays as
    it was; a relative link to a bundle done already (Alpine's cert.pem) is not done twice; a
    file with two links is left alone; a second create replaces the block."""
    ct = standins("ocica")
    init = ct.spawn()
    policies = files / "policies"
    policies.mkdir()
    (policies / "ct.lua").write_text(policy_text(ct))
    bundle = files / "bundle"
    root = bundle / "rootfs"
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/pki/tls/certs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.2.0",
                                                    "root": {"path": "rootfs"}}))
    system = "-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----\n"
    (root / "etc/ssl/certs/ca-certificates.crt").write_text(system)
    (root / "etc/ssl/cert.pem").symlink_to("certs/ca-certificates.crt")
    victim = files / "host-file.pem"
    victim.write_text("host\n")
    (root / "etc/pki/tls/certs/ca-bundle.crt").symlink_to(str(victim))  # leads out
    (root / "etc/ssl/ca-bundle.pem").write_text(system)
    os.link(root / "etc/ssl/ca-bundle.pem", files / "outside-link.pem")  # two links
    args = ("--policy-dir", str(policies))
    cid = os.urandom(32).hex()
    ann = {"io.sluice.policy": "ct.lua"}
    try:
        for round_ in (1, 2):
            r = hook(daemon, oci_state(cid, "creating", init.pid, bundle, ann), *args)
            assert r.returncode == 0, r.stderr
            ca = daemon.cli("ca", cid).stdout
            text = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
            assert text == (system + "# BEGIN sluice sandbox CA\n" + ca +
                            "# END sluice sandbox CA\n"), round_
            assert "ca-bundle.pem is not a regular file of one link" in r.stderr
            if round_ == 1:  # a container started again: a new sandbox, a new CA
                ct.kill()
                assert hook(daemon, oci_state(cid, "stopped", 0, bundle, ann),
                            *args).returncode == 0
                init = ct.spawn()
        assert victim.read_text() == "host\n"
        assert (root / "etc/ssl/ca-bundle.pem").read_text() == system
        assert not (root / str(victim).lstrip("/")).exists()
    finally:
        ct.kill()
        hook(daemon, oci_state(cid, "stopped", 0, bundle, ann), *args)
    # --no-ca leaves the root filesystem alone.
    init = ct.spawn()
    before = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    r = hook(daemon, oci_state(cid, "creating", init.pid, bundle, ann), "--no-ca", *args)
    assert r.returncode == 0, r.stderr
    ct.kill()
    assert hook(daemon, oci_state(cid, "stopped", 0, bundle, ann), *args).returncode == 0
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_text() == before
