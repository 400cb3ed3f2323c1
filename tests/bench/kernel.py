# SPDX-License-Identifier: MIT
"""Kernel benchmarks: what sluice's cgroup programs add to connect().

    connect     denied connect (EPERM from sl_connect4) vs a refused one with no sluice
                (RST from a closed loopback port); allowed connect with and without sluice
    scale       allowed connect with 10 / 1,000 / 100,000 rules in the sandbox, with 1,000
                sandboxes registered, and with 10,000 DNS-installed entries: the cost must
                stay flat, since one LPM lookup decides
The client (bench_connect) is pinned to the client CPU, the accepting server to the server
CPU. Each figure: the median of per-round means; each ratio: the median of per-round ratios
(adjacent runs share the machine's state of the moment, so this cancels drift).
"""
import errno
import json
import re
import socket
import subprocess
import time
from pathlib import Path

from common import BUILD, CLIENT_CPU, ROOT, UPSTREAM_CPU, BenchError, log, median, run, \
    taskset
from names import MANY_SUFFIX, bench_cold_names, many_addr


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sl_max_rules():
    """SL_MAX_RULES of bpf/sluice.h: the kernel rule maps' size, per family, all sandboxes."""
    m = re.search(r"#define SL_MAX_RULES (\d+)", (ROOT / "bpf" / "sluice.h").read_text())
    return int(m.group(1)) if m else 65536


class ConnectServer:
    def __init__(self, port, addr="127.0.0.1"):
        self.proc = subprocess.Popen([*taskset(UPSTREAM_CPU), str(BUILD / "bench" / "bench_connect"),
                                      "server", str(port), addr], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "listening":
            self.close()
            raise BenchError(f"bench_connect server on {addr}:{port} did not start")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connect_cost(cg, host, port, want, n):
    out = run([*taskset(CLIENT_CPU), str(BUILD / "bench" / "bench_connect"), "client", host,
               str(port), str(n), str(want)], 600, cg=cg).stdout
    conn_ns, iter_ns = map(float, out.split())
    return conn_ns, iter_ns


def prog_stats(pinned):
    r = subprocess.run(["bpftool", "-j", "prog", "show", "pinned", pinned], capture_output=True,
                       text=True, timeout=30)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    return j.get("run_time_ns", 0), j.get("run_cnt", 0)


def program_ns(daemon, cg, host, port, n):
    """sl_connect4's own time per call, from the kernel's bpf_stats (on only meanwhile: it
    adds its own timing to every run of every program)."""
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    prog = f"{daemon.bpffs}/progs/sl_connect4"
    stats.write_text("1")
    try:
        before = prog_stats(prog)
        connect_cost(cg, host, port, 0, n)
        after = prog_stats(prog)
    finally:
        stats.write_text(old)
    runs = after[1] - before[1]
    return (after[0] - before[0]) / runs if runs else None


def paired(plain, box, host, port, rounds, n):
    """Allowed connect from plain vs from box, alternating: medians and per-round ratio."""
    a, b = [], []
    for _ in range(rounds):
        a.append(connect_cost(plain, host, port, 0, n)[0])
        b.append(connect_cost(box, host, port, 0, n)[0])
    return {"plain_ns": median(a), "sluice_ns": median(b),
            "ratio": median([y / x for x, y in zip(a, b)]), "rounds": rounds, "connects": n}


def bench_connect(s, daemon, cgroups, workdir):
    open_port, closed_port = free_port(), free_port()
    server = ConnectServer(open_port)
    try:
        plain = cgroups.make("plain")
        box = cgroups.make("box")
        policy = Path(workdir) / "connect.lua"
        policy.write_text(f'return {{ egress = {{ allow = {{ "127.0.0.1:{open_port}" }} }} }}\n')
        daemon.add("connect", box, policy)
        samples = {k: [] for k in ("refused", "denied", "plain", "sluice")}
        for _ in range(s.rounds):
            samples["refused"].append(connect_cost(plain, "127.0.0.1", closed_port,
                                                   errno.ECONNREFUSED, s.connects))
            samples["denied"].append(connect_cost(box, "127.0.0.1", closed_port, errno.EPERM,
                                                  s.connects))
            samples["plain"].append(connect_cost(plain, "127.0.0.1", open_port, 0, s.connects))
            samples["sluice"].append(connect_cost(box, "127.0.0.1", open_port, 0, s.connects))
        med = {k: median(c for c, _ in v) for k, v in samples.items()}

        def r(k, base, i=0):
            return median(x[i] / y[i] for x, y in zip(samples[k], samples[base]))

        res = {
            "rounds": s.rounds, "connects": s.connects,
            "refused_ns": med["refused"], "denied_ns": med["denied"],
            "ratio_denied_refused": r("denied", "refused"),
            "plain_ns": med["plain"], "sluice_ns": med["sluice"],
            "ratio_allowed": r("sluice", "plain"),
            "ratio_allowed_iteration": r("sluice", "plain", 1),
            "prog_ns": program_ns(daemon, box, "127.0.0.1", open_port, s.connects),
        }
        log(f"  connect: denied/refused {res['ratio_denied_refused']:.3f}, allowed "
            f"{res['ratio_allowed']:.3f}, sl_connect4 {res['prog_ns'] or 0:.0f} ns")
        return res
    finally:
        server.close()


def rules_policy(path, port, n):
    """A policy of n rules: 127.0.0.1:port (the one measured) and n - 1 other /32s."""
    Path(path).write_text(
        f'local a = {{ "127.0.0.1:{port}" }}\n'
        f"for i = 1, {n - 1} do\n"
        "  a[#a + 1] = string.format('10.%d.%d.%d:443', (i >> 16) & 255, (i >> 8) & 255,"
        " i & 255)\n"
        "end\n"
        "return { egress = { allow = a } }\n")


def add_sandbox(daemon, name, cg, policy=None, policy_file=None, timeout=600):
    """POST /v1/sandboxes with a long timeout: big policies take a while to compile."""
    from conftest import UnixHTTPConnection
    body = {"name": name, "cgroup": str(cg)}
    body.update({"policy": policy} if policy is not None else {"policy_file": str(policy_file)})
    conn = UnixHTTPConnection(daemon.socket, timeout=timeout)
    try:
        conn.request("POST", "/v1/sandboxes", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    if resp.status >= 300:
        try:
            text = json.loads(text).get("error", text)
        except ValueError:
            pass
    return resp.status, text


def remove_sandbox(daemon, name):
    status, _ = daemon.api("DELETE", f"/v1/sandboxes/{name}")
    return status


def bench_scale(s, daemon, cgroups, workdir, dnsmasq, sluice_resolv):
    """Allowed connect() cost as the kernel's tables grow. Every case alternates with the same
    connect from a plain cgroup, so each ratio is against a baseline of the same moment."""
    port = free_port()
    server = ConnectServer(port)
    plain = cgroups.make("plain")
    cases, notes = [], []
    cap = sl_max_rules()
    try:
        for n in s.rule_counts:
            load = n
            if n > cap - 100:
                # The kernel's rule tries hold SL_MAX_RULES entries per family for all
                # sandboxes together: more is refused (ENOSPC) after the whole policy has
                # been compiled. Measure the largest round size that fits instead.
                load = (cap * 9 // 10) // 10000 * 10000
                notes.append(f"{n} rules do not fit the kernel's rule map (SL_MAX_RULES = "
                             f"{cap} per family, all sandboxes together; sluiced answers 503 "
                             f"'No space left on device'): measured at {load}")
            label = f"{load} rules" + (f" ({n} do not fit)" if load != n else "")
            cg = cgroups.make(f"rules{n}")
            pf = Path(workdir) / f"rules{n}.lua"
            rules_policy(pf, port, load)
            t = time.monotonic()
            status, text = add_sandbox(daemon, f"rules{n}", cg, policy_file=pf)
            load_s = time.monotonic() - t
            if status >= 300:
                notes.append(f"{load} rules: sandbox add failed ({status}): {text}")
                cases.append({"case": label, "rules": load, "requested": n,
                              "sandboxes": 1, "error": text, "load_s": load_s})
                continue
            res = paired(plain, cg, "127.0.0.1", port, s.scale_rounds, s.connects)
            res.update({"case": label, "rules": load, "requested": n, "sandboxes": 1,
                        "load_s": load_s})
            cases.append(res)
            log(f"  {load} rules (loaded in {load_s:.1f} s): ratio {res['ratio']:.3f}")
            remove_sandbox(daemon, f"rules{n}")

        # Many sandboxes: the measured one has 10 rules, every other one 10 rules too.
        t = time.monotonic()
        others = []
        for i in range(s.sandboxes - 1):
            cg = cgroups.make(f"many/{i}")
            pol = ("return { egress = { allow = { "
                   + ", ".join(f'"10.{i >> 8 & 255}.{i & 255}.{j}:443"' for j in range(10))
                   + " } } }")
            status, text = add_sandbox(daemon, f"many{i}", cg, policy=pol)
            if status >= 300:
                notes.append(f"sandbox {i + 2}: add failed ({status}): {text}")
                break
            others.append(f"many{i}")
        add_s = time.monotonic() - t
        cg = cgroups.make("manybox")
        pf = Path(workdir) / "manybox.lua"
        rules_policy(pf, port, 10)
        status, text = add_sandbox(daemon, "manybox", cg, policy_file=pf)
        if status >= 300:
            raise BenchError(f"sandbox add after {len(others)} others failed: {text}")
        res = paired(plain, cg, "127.0.0.1", port, s.scale_rounds, s.connects)
        res.update({"case": f"{len(others) + 1} sandboxes", "rules": 10,
                    "sandboxes": len(others) + 1, "load_s": add_s,
                    "add_ms_per_sandbox": add_s / max(1, len(others)) * 1e3})
        cases.append(res)
        log(f"  {len(others) + 1} sandboxes (added in {add_s:.1f} s): ratio {res['ratio']:.3f}")
        t = time.monotonic()
        for name in ["manybox", *others]:
            remove_sandbox(daemon, name)
        res["remove_s"] = time.monotonic() - t
    finally:
        server.close()

    # DNS-installed entries: every name of the bench resolver resolved through sluice.
    names = dnsmasq.names
    target = many_addr(len(names) - 1)
    port = free_port(target)
    server = ConnectServer(port, target)
    try:
        cg = cgroups.make("dnsentries")
        pf = Path(workdir) / "dnsentries.lua"
        pf.write_text(f'return {{ egress = {{ allow = {{ "*.{MANY_SUFFIX}:{port}" }}, '
                      'private = { "127.0.0.0/8" } } }\n')
        daemon.add("dnsentries", cg, pf)

        def box_argv(argv):
            return [str(ROOT / "tools" / "in-sandbox"), str(cg), str(sluice_resolv), *argv]

        cold = bench_cold_names(dnsmasq, lambda a: a, box_argv)
        status, show = daemon.api("GET", "/v1/sandboxes/dnsentries")
        installed = None
        if status == 200 and isinstance(show, dict) and isinstance(show.get("names"), list):
            installed = sum(len(x.get("addresses", [])) for x in show["names"])
        res = paired(plain, cg, target, port, s.scale_rounds, s.connects)
        res.update({"case": f"{len(names)} DNS names", "rules": len(names), "sandboxes": 1,
                    "dns_names": len(names), "installed": installed,
                    "load_s": cold["sluice_seconds"]})
        cases.append(res)
        log(f"  {len(names)} DNS-installed names ({installed} listed): ratio {res['ratio']:.3f}")
        remove_sandbox(daemon, "dnsentries")
    finally:
        server.close()
    return {"cases": cases, "notes": notes, "sl_max_rules": cap}, cold
