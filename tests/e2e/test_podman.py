# SPDX-License-Identifier: MIT
"""Podman end to end: real containers (podman + runc) registered by the sluice OCI hook from a
hooks.d directory, as README.md's "OCI runtime hook" describes, with nothing of sluice in the
image: the hook adds the sandbox's CA to the container's own bundle (the root filesystem is
an overlay, `--rootfs DIR:O`, so the shared directory stays as it was).

Inside a container: the allowed address answers, the intercepted host gets its credential
(added outside, masked in what comes back), another port of the same host is EPERM, a name the
policy does not list is NXDOMAIN, a raw socket fails even with CAP_NET_RAW. podman stop and
podman rm remove the sandbox (poststop), so does a SIGKILL of the container's init, and two
containers at once each get their own policy.
"""
import json
import os
import signal
from pathlib import Path

from conftest import ENV_SECRETS, cgroup2_root
from podman import names, nc, nets, podman, policy_text, show, wait_for  # noqa: F401  (fixtures)

SECRET = ENV_SECRETS["VCS_TOKEN"]


def test_podman_container_is_enforced_through_the_hook(daemon, podman, nets, upstreams,
                                                       dnsmasq):
    net = nets("main")
    allowed, other = net.servers.ports
    (podman.policies / "main.lua").write_text(policy_text(net.host_ip, allowed))
    # Root in the container, with CAP_NET_RAW added: the raw socket is refused by sluice's
    # kernel hooks, not by a missing capability.
    cid = podman.start(net, "main.lua", extra=["--cap-add", "NET_RAW"])
    try:
        sb = show(daemon, cid)
        assert sb["container_id"] == cid and sb["policy"] == str(podman.policies / "main.lua")
        assert sb["cgroup"] == cgroup2_root() + podman.cgroup(cid)
        assert sb["netns_inode"] == os.stat(net.path).st_ino

        assert nc(podman, cid, net.host_ip, allowed) == "hello"
        assert "Operation not permitted" in nc(podman, cid, net.host_ip, other)

        r = podman.exec(cid, "nslookup unlisted.test; nslookup denied.test 127.0.0.53")
        for name in ("unlisted.test", "denied.test"):
            assert f"can't find {name}: NXDOMAIN" in r.stdout, r.stdout + r.stderr
        assert not dnsmasq.queried("unlisted.test")

        # No --cacert: curl reads the image's bundle, where the hook put the sandbox CA.
        mark = upstreams.nginx.mark()
        r = podman.exec(cid, "curl -sS --max-time 20 -w '\\n%{http_code}' "
                             "https://git.internal.test/headers")
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "200", r.stderr
        assert json.loads(body)["headers"]["x-auth-token"] == "*" * len(SECRET)
        upstreams.nginx.wait_requests(1, since=mark)
        assert upstreams.nginx.requests_seen(since=mark)[-1]["h_x_auth_token"] == SECRET
        env = podman.exec(cid, "cat /proc/1/environ /proc/self/environ; env")
        assert SECRET not in env.stdout
        bundle = podman.exec(cid, "grep -c 'BEGIN sluice sandbox CA' "
                                  "/etc/ssl/certs/ca-certificates.crt").stdout.strip()
        assert bundle == "1"
        # The shared root filesystem is untouched: the CA went to this container's layer.
        assert b"sluice" not in (podman.rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()

        before = show(daemon, cid)["counters"]["denied"]["socket"]
        r = podman.exec(cid, "ping -c 1 -W 1 127.0.0.1 2>&1")
        assert r.returncode != 0 and "permission denied" in r.stdout.lower(), r.stdout
        assert show(daemon, cid)["counters"]["denied"]["socket"] > before

        # podman stop: conmon's cleanup runs the poststop hook.
        podman("stop", "-t", "0", cid)
        assert wait_for(lambda: cid not in names(daemon)), "the sandbox outlived podman stop"
        # The container starts again: a new sandbox, the CA block replaced, not doubled.
        podman("start", cid)
        assert cid in names(daemon)
        assert nc(podman, cid, net.host_ip, allowed) == "hello"
        assert podman.exec(cid, "grep -c 'BEGIN sluice sandbox CA' "
                                "/etc/ssl/certs/ca-certificates.crt").stdout.strip() == "1"
        r = podman.exec(cid, "curl -sS -o /dev/null --max-time 20 -w '%{http_code}' "
                             "https://git.internal.test/headers")
        assert r.stdout == "200", r.stderr
    finally:
        podman("rm", "-f", "-t", "0", cid, check=False)
    assert wait_for(lambda: cid not in names(daemon)), "the sandbox outlived podman rm"


def test_podman_two_containers_own_policies_and_sigkill_is_reaped(daemon, podman, nets):
    a, b = nets("a"), nets("b")
    (podman.policies / "a.lua").write_text(policy_text(a.host_ip, a.servers.ports[0]))
    (podman.policies / "b.lua").write_text(policy_text(b.host_ip, b.servers.ports[1]))
    plain = None
    ca = podman.start(a, "a.lua")
    cb = podman.start(b, "b.lua", extra=["--user", "65534:65534"])
    try:
        assert show(daemon, ca)["policy"].endswith("/a.lua")
        assert show(daemon, cb)["policy"].endswith("/b.lua")
        assert nc(podman, ca, a.host_ip, a.servers.ports[0]) == "hello"
        assert "Operation not permitted" in nc(podman, ca, a.host_ip, a.servers.ports[1])
        assert nc(podman, cb, b.host_ip, b.servers.ports[1]) == "hello"
        assert "Operation not permitted" in nc(podman, cb, b.host_ip, b.servers.ports[0])
        # A container without the annotation is none of sluice's business.
        plain = podman.start(a)
        assert plain not in names(daemon)
        assert nc(podman, plain, a.host_ip, a.servers.ports[1]) == "hello"

        # SIGKILL of a's init from outside: the sandbox goes, b's stays enforced.
        os.kill(podman.pid(ca), signal.SIGKILL)
        assert wait_for(lambda: ca not in names(daemon)), "a SIGKILLed container's sandbox stayed"
        assert cb in names(daemon)
        assert "Operation not permitted" in nc(podman, cb, b.host_ip, b.servers.ports[0])
    finally:
        for cid in (ca, cb, plain):
            if cid:
                podman("rm", "-f", "-t", "0", cid, check=False)
    assert wait_for(lambda: cb not in names(daemon))


def test_runtime_wrapper_adds_the_hooks_without_hooks_d(daemon, podman, nets):
    """sluice oci-runtime in place of runc (Docker's and containerd's way), podman given an
    empty hooks.d: the wrapper's hooks register the container, the policy taken from
    SLUICE_POLICY in its environment (Docker sets no annotations), and runc's own poststop
    (at podman rm) removes it. A container without SLUICE_POLICY runs as it is."""
    net = nets("wrap")
    (podman.policies / "wrap.lua").write_text(policy_text(net.host_ip, net.servers.ports[0]))
    cid = podman.start(net, extra=["-e", "SLUICE_POLICY=wrap.lua"], wrapped=True)
    plain = None
    try:
        sb = show(daemon, cid)
        assert sb["container_id"] == cid and sb["policy"].endswith("/wrap.lua")
        assert nc(podman, cid, net.host_ip, net.servers.ports[0]) == "hello"
        assert "Operation not permitted" in nc(podman, cid, net.host_ip, net.servers.ports[1])
        r = podman.exec(cid, "curl -sS -o /dev/null --max-time 20 -w '%{http_code}' "
                             "https://git.internal.test/headers")
        assert r.stdout == "200", r.stderr
        plain = podman.start(net, wrapped=True)
        assert plain not in names(daemon)
        assert nc(podman, plain, net.host_ip, net.servers.ports[1]) == "hello"
        # The wrapper wrote both stages into the bundle runc ran. (Which of the poststop hook
        # and sluiced's sweep of gone cgroups removes the sandbox first is a race: runc runs
        # poststop after the cgroup is gone.)
        conf = json.loads(Path(podman("inspect", "--format", "{{.OCIConfigPath}}", cid,
                                      wrapped=True).stdout.strip()).read_text())
        for stage in ("createRuntime", "poststop"):
            assert any("oci-hook" in " ".join(h.get("args", []))
                       for h in conf["hooks"][stage]), (stage, conf["hooks"])
        podman("rm", "-f", "-t", "0", cid, wrapped=True)
        assert wait_for(lambda: cid not in names(daemon)), "the sandbox outlived podman rm"
    finally:
        for c in (cid, plain):
            if c:
                podman("rm", "-f", "-t", "0", c, check=False, wrapped=True)
