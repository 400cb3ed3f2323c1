# SPDX-License-Identifier: MIT
"""deploy/kubernetes, offline (there is no cluster here): every manifest against a checked-in
subset of the Kubernetes API schema (kubernetes_schema.json: a misspelt or misplaced field
fails), the references between them (volumes, ConfigMaps, Secrets, labels, the kustomization),
and the DaemonSet's sluiced container as a process: its command and flags, run in a network
namespace of its own with the paths it mounts moved to a temporary directory, answer its
readiness probe, load the KV Secret through its postStart, and enforce a container stand-in
registered by the CRI-O hook of sluice-node-config with a policy of the sluice-policies
ConfigMap."""
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, ROOT, RUN_ID, purge_pins
from standin import files, ip, standins  # noqa: F401  (fixtures)

yaml = pytest.importorskip("yaml", reason="python3-yaml is not installed (tools/install-deps)")
jsonschema = pytest.importorskip("jsonschema",
                                 reason="python3-jsonschema is not installed (tools/install-deps)")

DEPLOY = ROOT / "deploy" / "kubernetes"
SCHEMA = json.loads((Path(__file__).with_name("kubernetes_schema.json")).read_text())


def manifests():
    """{file name: [objects]} of deploy/kubernetes."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
            for p in sorted(DEPLOY.glob("*.yaml"))}


def objects(kind=None):
    return [o for docs in manifests().values() for o in docs
            if kind is None or o["kind"] == kind]


def one(kind, name):
    found = [o for o in objects(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def validate(obj):
    jsonschema.Draft7Validator(SCHEMA).validate(obj)


def test_every_manifest_matches_the_api_schema():
    found = manifests()
    assert {"daemonset.yaml", "policies.yaml", "secrets.yaml", "node-config.yaml",
            "runtimeclass.yaml", "namespace.yaml", "kustomization.yaml"} <= set(found)
    for name, docs in found.items():
        for obj in docs:
            try:
                validate(obj)
            except jsonschema.ValidationError as e:
                pytest.fail(f"{name}: {obj.get('kind')}: {e.message} at {list(e.absolute_path)}")
    # The schema bites: a misspelt field, a field in the wrong place, a wrong type, a bad enum.
    ds = one("DaemonSet", "sluiced")
    spec = ds["spec"]["template"]["spec"]
    bad = [
        lambda d: d["spec"]["template"]["spec"].update(hostPid=True),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(hostPID=True),
        lambda d: d["spec"]["template"]["spec"].update(hostNetwork="yes"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0].update(
            mountPropagation="Both"),
        lambda d: d["spec"]["template"]["spec"]["volumes"][0]["hostPath"].update(type="Dir"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(
            exec="sluice sandbox ls"),
    ]
    for mutate in bad:
        d = json.loads(json.dumps(ds))
        mutate(d)
        with pytest.raises(jsonschema.ValidationError):
            validate(d)
    assert spec["hostPID"] is True and spec["hostNetwork"] is True


def test_manifests_refer_to_each_other_consistently():
    kust = objects("Kustomization")[0]
    assert sorted(kust["resources"]) == sorted(n for n in manifests() if n != "kustomization.yaml")
    for obj in objects():
        if obj["kind"] not in ("Namespace", "RuntimeClass", "Kustomization"):
            assert obj["metadata"]["namespace"] == "sluice-system", obj["metadata"]["name"]
    ds = one("DaemonSet", "sluiced")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["initContainers"] + spec["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, (c["name"], m["name"])
    for v in volumes.values():
        if "configMap" in v:
            one("ConfigMap", v["configMap"]["name"])
        if "secret" in v:
            one("Secret", v["secret"]["secretName"])
    host = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert {"/sys/fs/bpf", "/sys/fs/cgroup", "/var/lib/sluice", "/run/sluice"} <= host
    sluiced = next(c for c in spec["containers"] if c["name"] == "sluiced")
    mounts = {m["mountPath"]: m for m in sluiced["volumeMounts"]}
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "Bidirectional"
    args = sluiced["args"]
    assert args[args.index("--state-dir") + 1] == "/var/lib/sluice"
    assert args[args.index("--socket") + 1].startswith("/run/sluice/")
    assert os.path.dirname(args[args.index("--env-file") + 1]) in mounts
    assert sluiced["readinessProbe"]["exec"]["command"][:3] == \
        ["/usr/bin/sluice", "--socket", args[args.index("--socket") + 1]]
    # The CRI-O hook talks to that socket and reads the policies where sluiced reads them.
    hook = json.loads(one("ConfigMap", "sluice-node-config")["data"]["sluice.json"])
    hargs = hook["hook"]["args"]
    assert hargs[hargs.index("--socket") + 1] == args[args.index("--socket") + 1]
    assert hargs[hargs.index("--policy-dir") + 1] in mounts
    assert hook["stages"] == ["createRuntime", "poststop"]
    rc = one("RuntimeClass", "sluice")
    assert rc["handler"] == "sluice"


def moved(argv, paths):
    """argv with each path of the pod (an argument, or the value of --opt=PATH) replaced by
    its stand-in (longest first)."""
    out = []
    for a in argv:
        opt, eq, val = a.partition("=") if a.startswith("--") and "=" in a else ("", "", a)
        for src in sorted(paths, key=len, reverse=True):
            if val == src or val.startswith(src + "/"):
                val = paths[src] + val[len(src):]
                break
        out.append(opt + eq + val)
    return out


def test_daemonset_entrypoint_runs_and_enforces(standins, files):
    """The sluiced container's command and args as they are, in a network namespace, with the
    pod's mounts at temporary paths; the readiness probe and postStart as written."""
    ds = one("DaemonSet", "sluiced")
    spec = ds["spec"]["template"]["spec"]
    sluiced = next(c for c in spec["containers"] if c["name"] == "sluiced")
    base = Path(files) / "k8s"
    (base / "kv/KEYS").mkdir(parents=True)
    (base / "env").mkdir()
    (base / "policies").mkdir()
    bpffs = f"/sys/fs/bpf/{RUN_ID}-k8s"
    paths = {"/run/sluice": str(base / "run"), "/var/lib/sluice": str(base / "state"),
             "/sys/fs/bpf/sluice": bpffs, "/etc/sluice/env": str(base / "env"),
             "/etc/sluice/kv": str(base / "kv"), "/etc/sluice/policies": str(base / "policies"),
             "/usr/sbin/sluiced": str(BUILD / "sluiced"), "/usr/bin/sluice": str(BUILD / "sluice"),
             # The node's init, whose cgroup namespace the entrypoint enters: here, this
             # process's (pid 1 of a test machine may be a supervisor whose namespaces a
             # test cannot open).
             "/proc/1/ns/cgroup": f"/proc/{os.getpid()}/ns/cgroup"}
    (base / "run").mkdir(mode=0o700)
    # The Secrets and ConfigMap as the kubelet mounts them: one file per key (0400).
    env = one("Secret", "sluice-env")["stringData"]
    for k, v in env.items():
        p = base / "env" / k
        p.write_text(v)
        p.chmod(0o400)
    for k, v in one("Secret", "sluice-kv")["stringData"].items():
        (base / "kv/KEYS" / k).write_text(v)
    policies = one("ConfigMap", "sluice-policies")["data"]
    for k, v in policies.items():
        (base / "policies" / k).write_text(v)

    argv = moved(sluiced["command"] + sluiced["args"], paths)
    probe = moved(sluiced["readinessProbe"]["exec"]["command"], paths)
    ns = f"{RUN_ID}-k8s-node"
    ip("netns", "add", ns)
    p = None
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # The log (--log -) and "ready" share stdout: read raw bytes, so that a line read
        # along with the one before it is not left in a buffer select() cannot see.
        out, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline and b"\nready\n" not in b"\n" + out:
            if select.select([p.stdout], [], [], 0.2)[0]:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        assert b"\nready\n" in b"\n" + out, out.decode(errors="replace")
        r = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        # sluiced lives in the namespace it was given (hostNetwork: the node's).
        assert os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino

        post = sluiced["lifecycle"]["postStart"]["exec"]["command"]
        script = post[-1]
        for src in sorted(paths, key=len, reverse=True):
            script = script.replace(src, paths[src])
        r = subprocess.run([*post[:-1], script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        sock = paths["/run/sluice"] + "/sluiced.sock"
        got = subprocess.run([str(BUILD / "sluice"), "--socket", sock, "kv", "get", "KEYS",
                              "agent"], capture_output=True, text=True, timeout=30)
        assert got.stdout == one("Secret", "sluice-kv")["stringData"]["agent"]

        # The CRI-O hook of sluice-node-config, for a container stand-in, with each policy of
        # the ConfigMap: it compiles, and deny-all denies.
        hook = json.loads(one("ConfigMap", "sluice-node-config")["data"]["sluice.json"])
        hargs = moved(hook["hook"]["args"][1:], paths)
        ct = standins("k8s")
        init = ct.spawn()
        for policy in sorted(policies):
            cid = os.urandom(32).hex()
            state = json.dumps({"ociVersion": "1.2.0", "id": cid, "status": "creating",
                                "pid": init.pid, "bundle": str(files),
                                "annotations": {"io.sluice.policy": policy}})
            r = subprocess.run([str(BUILD / "sluice"), *hargs], input=state,
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (policy, r.stderr)
            if policy == "deny-all.lua":
                got = ct.probe([{"op": "connect", "proto": "tcp", "host": ct.host_ip,
                                 "port": ct.servers.ports[0]},
                                {"op": "dns", "server": "127.0.0.153", "name": "github.com",
                                 "tcp": False}])
                assert got[0] == "EPERM" and got[1]["rcode"] == 3, got
            r = subprocess.run([str(BUILD / "sluice"), "--socket", sock, "sandbox", "rm", cid],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr

        # SIGTERM (the kubelet's stop) ends it at once, enforcement left in place.
        p.terminate()
        assert p.wait(timeout=ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) == 0
    finally:
        if p and p.poll() is None:
            p.kill()
            p.wait()
        ip("netns", "del", ns, check=False)
        purge_pins(bpffs)
        shutil.rmtree(base, ignore_errors=True)
