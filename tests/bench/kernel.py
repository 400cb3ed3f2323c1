# SPDX-License-Identifier: MIT
"""Kernel benchmarks: what sluice's cgroup programs add to connect().

    connect     denied connect (EPERM from sl_connect4) vs a refused one with no sluice
                (RST from a closed loopback port); allowed connect with and without sluice;
                the same allowed connect from a sandbox in audit mode, and an audited one
                (the rules deny it, audit mode records it and lets it through), each next
                to enforce mode's allowed connect
    scale       allowed connect with 10 / 1,000 / 100,000 / 1,000,000 rules, with 10,000
                sandboxes registered, and with 10,000 DNS-installed entries: the cost must
                stay flat, since one hash lookup decides for an address (a trie lookup for
                a prefix); and the rule lookup alone (bench_lookup), hash against trie
The client (bench_connect) is pinned to the client CPU, the accepting server to the server
CPU. Each figure: the median of per-round means; each ratio: the median of per-round ratios
(adjacent runs share the machine's state of the moment, so this cancels drift).
"""
import errno
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from common import BUILD, CLIENT_CPU, PROXY_CPU, ROOT, UPSTREAM_CPU, BenchError, log, median, \
    move_to_cgroup, pin, run, taskset, unpinned
from conftest import cgroup2_root
from names import MANY_SUFFIX, bench_cold_names, many_addr


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sl_max_rules():
    """SL_MAX_RULES of bpf/sluice.h: the default --max-rules, per family, all sandboxes."""
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
    """What each of sluice's programs costs one allowed connect(), from the kernel's bpf_stats
    (on only meanwhile: it adds its own timing to every run of every program): for each program
    that ran, runs per connect and ns per run. "sl_connect4" is the connect hook itself."""
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    progs = sorted(Path(daemon.bpffs, "progs").iterdir())
    stats.write_text("1")
    try:
        before = {p.name: prog_stats(str(p)) for p in progs}
        connect_cost(cg, host, port, 0, n)
        after = {p.name: prog_stats(str(p)) for p in progs}
    finally:
        stats.write_text(old)
    out = {}
    for name in before:
        runs = after[name][1] - before[name][1]
        if runs:
            out[name] = {"runs_per_connect": runs / n,
                         "ns_per_run": (after[name][0] - before[name][0]) / runs}
    return out


def paired(plain, box, host, port, rounds, n):
    """Allowed connect from plain vs from box, alternating: medians and per-round ratio."""
    a, b = [], []
    for _ in range(rounds):
        a.append(connect_cost(plain, host, port, 0, n)[0])
        b.append(connect_cost(box, host, port, 0, n)[0])
    return {"plain_ns": median(a), "sluice_ns": median(b),
            "ratio": median([y / x for x, y in zip(a, b)]), "rounds": rounds, "connects": n}


def bench_connect(s, daemon, cgroups, workdir):
    open_port, closed_port, other_port = free_port(), free_port(), free_port()
    server = ConnectServer(open_port)
    other = ConnectServer(other_port)
    try:
        plain = cgroups.make("plain")
        box = cgroups.make("box")
        abox = cgroups.make("abox")
        policy = Path(workdir) / "connect.lua"
        policy.write_text(f'return {{ egress = {{ allow = {{ "127.0.0.1:{open_port}" }} }} }}\n')
        daemon.add("connect", box, policy)
        daemon.add("connect-audit", abox, policy)
        r = daemon.cli("sandbox", "mode", "connect-audit", "audit")
        if r.returncode:
            raise BenchError(f"sandbox mode audit: {r.stderr}")
        samples = {k: [] for k in ("refused", "denied", "plain", "sluice", "audit", "audited")}
        for _ in range(s.rounds):
            samples["refused"].append(connect_cost(plain, "127.0.0.1", closed_port,
                                                   errno.ECONNREFUSED, s.connects))
            samples["denied"].append(connect_cost(box, "127.0.0.1", closed_port, errno.EPERM,
                                                  s.connects))
            samples["plain"].append(connect_cost(plain, "127.0.0.1", open_port, 0, s.connects))
            samples["sluice"].append(connect_cost(box, "127.0.0.1", open_port, 0, s.connects))
            samples["audit"].append(connect_cost(abox, "127.0.0.1", open_port, 0, s.connects))
            samples["audited"].append(connect_cost(abox, "127.0.0.1", other_port, 0,
                                                   s.connects))
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
            "audit_ns": med["audit"], "audited_ns": med["audited"],
            "ratio_audit_enforce": r("audit", "sluice"),
            "ratio_audited_enforce": r("audited", "sluice"),
            "programs": program_ns(daemon, box, "127.0.0.1", open_port, s.connects),
        }
        res["prog_ns"] = res["programs"].get("sl_connect4", {}).get("ns_per_run")
        log(f"  connect: denied/refused {res['ratio_denied_refused']:.3f}, allowed "
            f"{res['ratio_allowed']:.3f}, sl_connect4 {res['prog_ns'] or 0:.0f} ns; audit/enforce "
            f"{res['ratio_audit_enforce']:.3f}, audited/enforce {res['ratio_audited_enforce']:.3f}")
        return res
    finally:
        server.close()
        other.close()


PER_POLICY = 100000  # rules per sandbox in the scale cases of more than that


def rss_of(daemon):
    """sluiced's resident set, KiB."""
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def fd_count(daemon):
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def fd_limit(daemon):
    """sluiced's soft RLIMIT_NOFILE."""
    for line in open(f"/proc/{daemon.proc.pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 1 << 20


def own_listeners(daemon):
    """sluiced's (used, max) sandboxes with listeners of their own (--own-listeners)."""
    m = daemon.metrics()
    return (int(m.get('sluice_own_listeners{state="used"}', 0)),
            int(m.get('sluice_own_listeners{state="max"}', 0)))


def rules_policy(path, port, n, base=0):
    """A policy of n rules: 127.0.0.1:port (the one measured) and n - 1 other /32s in
    10.0.0.0/8, from index base + 1 (so that several such policies name distinct ones)."""
    Path(path).write_text(
        f'local a = {{ "127.0.0.1:{port}" }}\n'
        f"for i = {base + 1}, {base + n - 1} do\n"
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


def restart(daemon):
    """Kills sluiced and starts it again with the same options: the seconds until it is ready,
    every sandbox adopted (its state read, policy compiled, listeners opened, kernel entries
    read back). The new process goes where the old one was (its cgroup; PROXY_CPU)."""
    def count():
        status, body = daemon.api("GET", "/v1/sandboxes")
        if status != 200:
            raise BenchError(f"listing the sandboxes failed ({status}): {body}")
        return len(body["sandboxes"])

    rel = Path(f"/proc/{daemon.proc.pid}/cgroup").read_text().strip().split("::", 1)[1]
    before = count()
    # Killed, not stopped: the bench's sluiced runs with --purge, whose clean stop takes every
    # sandbox away. A crash leaves them to the next one, as an upgrade's restart would.
    daemon.signal(signal.SIGKILL)
    t = time.monotonic()
    daemon.start(timeout=900)
    took = time.monotonic() - t
    move_to_cgroup(daemon.proc.pid, Path(cgroup2_root()) / rel.lstrip("/"))
    pin(daemon.proc.pid, PROXY_CPU)
    after = count()
    if after != before:
        raise BenchError(f"a restart adopted {after} of {before} sandboxes: "
                         f"{daemon.read_log()[-2000:]}")
    return took


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
                # The kernel's rule tries hold --max-rules entries per family for all
                # sandboxes together: more is refused (ENOSPC) after the whole policy has
                # been compiled. Measure the largest round size that fits instead.
                load = (cap * 9 // 10) // 10000 * 10000
                notes.append(f"{n} rules do not fit the kernel's rule map (--max-rules = "
                             f"{cap} per family, all sandboxes together; sluiced answers 503 "
                             f"'No space left on device'): measured at {load}")
            # One policy's top level is bounded (10,000,000 Lua instructions, 64 MiB): more
            # than PER_POLICY rules go in as several sandboxes, the measured one last.
            whole = (load - 1) // PER_POLICY
            parts = [PER_POLICY] * whole + [load - whole * PER_POLICY]
            label = f"{load} rules" + (f" ({n} do not fit)" if load != n else "") + \
                (f" ({len(parts)} sandboxes)" if len(parts) > 1 else "")
            t = time.monotonic()
            added, error = [], None
            for k, part in enumerate(parts):
                name = f"rules{n}" + (f"-{k}" if k < len(parts) - 1 else "")
                cg = cgroups.make(name)
                pf = Path(workdir) / f"{name}.lua"
                rules_policy(pf, port, part, base=k * PER_POLICY)
                status, text = add_sandbox(daemon, name, cg, policy_file=pf)
                if status >= 300:
                    error = text
                    break
                added.append(name)
            load_s = time.monotonic() - t
            if error is not None:
                notes.append(f"{load} rules: sandbox add failed ({status}): {error}")
                cases.append({"case": label, "rules": load, "requested": n,
                              "sandboxes": len(parts), "error": error, "load_s": load_s})
                for name in added:
                    remove_sandbox(daemon, name)
                continue
            res = paired(plain, cg, "127.0.0.1", port, s.scale_rounds, s.connects)
            res.update({"case": label, "rules": load, "requested": n,
                        "sandboxes": len(parts), "load_s": load_s})
            cases.append(res)
            log(f"  {label} (loaded in {load_s:.1f} s): ratio {res['ratio']:.3f}")
            for name in added:
                remove_sandbox(daemon, name)

        # Many sandboxes: the measured one has 10 rules, every other one 10 rules too. The
        # first SEQ are added one at a time (the time of one add alone), the rest ADD_CONC
        # at a time, as a host's orchestrator adds them (an add's stages run on different
        # threads of sluiced, and its syncs overlap with another's compile).
        SEQ, ADD_CONC = (10 if s.smoke else 100), 8

        def many_policy(i):
            return ("return { egress = { allow = { "
                    + ", ".join(f'"10.{i >> 8 & 255}.{i & 255}.{j}:443"' for j in range(10))
                    + " } } }")

        # The adds run with sluiced and this client on every CPU (common.unpinned()).
        with unpinned(daemon.proc.pid):
            t = time.monotonic()
            others, failed = [], []
            want = s.sandboxes - 1
            fds0 = fd_count(daemon)
            seq_s = None
            for i in range(min(SEQ, want)):
                if i == 20:
                    # Each sandbox holds descriptors: with listeners of its own (measured
                    # here: the first ones have them) its DNS and proxy listeners and its
                    # sl_proxied map, sharing its worker's listeners (past --own-listeners,
                    # which sluiced sizes from its descriptor limit) the map alone. Past
                    # sluiced's RLIMIT_NOFILE an add fails: measure as many as fit, say so.
                    per = max(1.0, (fd_count(daemon) - fds0) / 20)
                    used, cap = own_listeners(daemon)
                    avail = fd_limit(daemon) - fd_count(daemon) - 512
                    own_more = max(0, min(cap - used, want - 20))
                    if own_more * per >= avail:
                        fit = 20 + int(avail / per)
                    else:
                        fit = 20 + own_more + int(avail - own_more * per)
                    if fit < want:
                        want = fit
                        notes.append(
                            f"{s.sandboxes} sandboxes do not fit sluiced's file descriptor limit "
                            f"({fd_limit(daemon)}; a sandbox with listeners of its own holds "
                            f"{per:.1f} descriptors here, one sharing its worker's 1, and this "
                            "VM has no CAP_SYS_RESOURCE to raise the hard limit): measured at "
                            f"{fit + 1}")
                cg = cgroups.make(f"many/{i}")
                status, text = add_sandbox(daemon, f"many{i}", cg, policy=many_policy(i))
                if status >= 300:
                    failed.append(f"sandbox {i + 2}: add failed ({status}): {text}")
                    break
                others.append(f"many{i}")
            seq_n = len(others)
            seq_s = time.monotonic() - t
            if not failed and want > seq_n:
                from concurrent.futures import ThreadPoolExecutor
                cgs = {i: cgroups.make(f"many/{i}") for i in range(seq_n, want)}

                def add_one(i):
                    status, text = add_sandbox(daemon, f"many{i}", cgs[i], policy=many_policy(i))
                    return i, status, text

                t2 = time.monotonic()
                with ThreadPoolExecutor(ADD_CONC) as ex:
                    for i, status, text in ex.map(add_one, range(seq_n, want)):
                        if status >= 300:
                            if not failed:
                                failed.append(f"sandbox {i + 2}: add failed ({status}): {text}")
                        else:
                            others.append(f"many{i}")
                conc_n, conc_s = len(others) - seq_n, time.monotonic() - t2
            else:
                conc_n, conc_s = 0, 0.0
        notes.extend(failed)
        add_s = time.monotonic() - t
        rss_kib = rss_of(daemon)
        fds_many = fd_count(daemon)
        own_used, own_max = own_listeners(daemon)
        cg = cgroups.make("manybox")
        pf = Path(workdir) / "manybox.lua"
        rules_policy(pf, port, 10)
        status, text = add_sandbox(daemon, "manybox", cg, policy_file=pf)
        if status >= 300:
            raise BenchError(f"sandbox add after {len(others)} others failed: {text}")
        res = paired(plain, cg, "127.0.0.1", port, s.scale_rounds, s.connects)
        per_conc = conc_s / conc_n if conc_n else None
        res.update({"case": f"{len(others) + 1} sandboxes", "rules": 10,
                    "sandboxes": len(others) + 1, "load_s": add_s,
                    "add_ms_per_sandbox": add_s / max(1, len(others)) * 1e3,
                    "add_ms_alone": seq_s / max(1, seq_n) * 1e3,
                    "add_ms_in_flight": per_conc * 1e3 if per_conc else None,
                    "adds_in_flight": ADD_CONC,
                    "projected_10k_s": 10000 * per_conc if per_conc else None,
                    "rss_kib": rss_kib, "fds": fds_many, "fd_limit": fd_limit(daemon),
                    "own_listeners": own_used, "own_listeners_max": own_max})
        cases.append(res)
        log(f"  {len(others) + 1} sandboxes (added in {add_s:.1f} s: "
            f"{res['add_ms_alone']:.2f} ms each alone, "
            + (f"{per_conc * 1e3:.2f} ms each with {ADD_CONC} in flight, 10,000 at that rate "
               f"{10000 * per_conc:.0f} s; " if per_conc else "")
            + f"sluiced RSS {rss_kib / 1024:.0f} MiB, {fds_many} descriptors, {own_used} "
            f"sandboxes with listeners of their own): ratio {res['ratio']:.3f}")
        res["restart_s"] = restart(daemon)
        log(f"  restart with {len(others) + 1} sandboxes in place (adopted, ready): "
            f"{res['restart_s']:.1f} s")
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
        loop = loop_latency(s, daemon, cgroups, workdir, port, box_argv, names[0])
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
    cold["loop_latency"] = loop
    compile = []
    for n in (100000, 1000000) if not s.smoke else (10000,):
        out = run([str(BUILD / "bench" / "bench_compile"), str(n)], 600).stdout.split()
        compile.append({"rules": n, "entries": int(out[0]), "seconds": float(out[1])})
        log(f"  compile alone (bench_compile): {n} rules in {float(out[1]):.2f} s")
    lookup = []
    for n in (10, 1000000) if not s.smoke else (10, 10000):
        for line in run([str(BUILD / "bench" / "bench_lookup"), str(n)], 600).stdout.splitlines():
            layout, entries, same, rnd, miss = line.split()
            lookup.append({"layout": layout, "entries": int(entries), "same_ns": int(same),
                           "random_ns": float(rnd), "miss_ns": float(miss)})
            log(f"  rule lookup alone (bench_lookup), {layout} of {entries}: {same} ns same "
                f"address, {float(rnd):.0f} ns random ones, {float(miss):.0f} ns a miss")
    return {"cases": cases, "notes": notes, "sl_max_rules": cap, "compile": compile,
            "lookup": lookup}, cold


# Open-loop DNS client (in a sandbox): one A query every GAP seconds for SECS seconds over one
# UDP socket, whatever is outstanding; prints the latencies (us) of the answers as JSON, and
# how many never came back within 5 s of the end.
PACED_DNS = r"""
import json, random, select, socket, struct, sys, time
server, name, secs, gap = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0\0\1\0\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
s.setblocking(False)
sent, lat, i = {}, [], 0
start = time.monotonic()
nxt, end = start, start + secs
while True:
    now = time.monotonic()
    if now >= end + 5 or (now >= end and not sent):
        break
    if now >= nxt and now < end:
        i = (i + 1) & 0xffff
        s.send(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + q)
        sent[i] = now
        nxt += gap
    r, _, _ = select.select([s], [], [], max(0.0, min(nxt, end + 5) - now))
    if r:
        while True:
            try:
                msg = s.recv(4096)
            except BlockingIOError:
                break
            t0 = sent.pop(struct.unpack("!H", msg[:2])[0], None)
            if t0 is not None:
                lat.append((time.monotonic() - t0) * 1e6)
print(json.dumps({"lat_us": lat, "lost": len(sent)}))
"""


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else None


def loop_latency(s, daemon, cgroups, workdir, port, box_argv, name):
    """Another sandbox's DNS while a 100,000-rule policy loads, and while many small
    sandboxes are added eight at a time (an orchestrator's burst): one query every 2 ms (open
    loop) through the sandbox of box_argv, first idle, then across each. Whatever an add does
    on the loop of the worker that sandbox shares, the queries wait for."""
    n = 10000 if s.smoke else 100000
    burst = 100 if s.smoke else 500
    out = {}
    for label in ("idle", f"during a {n}-rule add", f"during {burst} adds, 8 in flight"):
        proc = subprocess.Popen(box_argv(["/usr/bin/python3", "-c", PACED_DNS, "127.0.0.153",
                                          name, "6", "0.002"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        add_s, added = None, []
        try:
            if label.startswith(f"during a {n}"):
                time.sleep(1)
                cg = cgroups.make("loadrules")
                pf = Path(workdir) / "loadrules.lua"
                rules_policy(pf, port, n)
                t = time.monotonic()
                status, text = add_sandbox(daemon, "loadrules", cg, policy_file=pf)
                add_s = time.monotonic() - t
                if status >= 300:
                    raise BenchError(f"loop latency: the {n}-rule add failed: {text}")
                added.append("loadrules")
            elif label != "idle":
                from concurrent.futures import ThreadPoolExecutor
                cgs = [cgroups.make(f"burst/{i}") for i in range(burst)]
                pol = f'return {{ egress = {{ allow = {{ "127.0.0.1:{port}" }} }} }}'

                def add_one(i):
                    return i, *add_sandbox(daemon, f"burst{i}", cgs[i], policy=pol)

                time.sleep(1)
                t = time.monotonic()
                failed = []
                with ThreadPoolExecutor(8) as ex:
                    for i, status, text in ex.map(add_one, range(burst)):
                        if status < 300:
                            added.append(f"burst{i}")
                        else:
                            failed.append(f"burst{i}: {text}")
                add_s = time.monotonic() - t
                if failed:
                    raise BenchError(f"loop latency: {len(failed)} adds of the burst failed, "
                                     f"the first {failed[0]}")
            out_s, err_s = proc.communicate(timeout=60)
            if proc.returncode:
                raise BenchError(f"loop latency, {label}: the sandbox's DNS client failed "
                                 f"(exit {proc.returncode}): {err_s.strip()[-2000:]}")
            res = json.loads(out_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for box in added:
                remove_sandbox(daemon, box)
        lat = res["lat_us"]
        out[label] = {"queries": len(lat) + res["lost"], "lost": res["lost"],
                      "p50_us": pct(lat, 0.5), "p99_us": pct(lat, 0.99),
                      "max_us": max(lat) if lat else None, "add_s": add_s}
        log(f"  another sandbox's DNS, {label}: p50 {out[label]['p50_us'] or 0:.0f} us, p99 "
            f"{out[label]['p99_us'] or 0:.0f} us, max {out[label]['max_us'] or 0:.0f} us"
            + (f" (adds took {add_s:.2f} s)" if add_s else ""))
    return out


# A stream peer for the egress benchmark: the server (outside any sandbox) answers each
# connection's 9-byte request ("D" or "U", then a 64-bit size): D sends that many bytes, U
# reads them and sends one byte back. The client (in a sandbox cgroup) times one transfer
# from connect() to the last byte and prints the nanoseconds.
STREAM_SERVER = r"""
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    with c:
        req = b""
        while len(req) < 9:
            req += c.recv(9 - len(req))
        kind, n = req[:1], struct.unpack("!Q", req[1:])[0]
        if kind == b"D":
            view = memoryview(buf)
            while n > 0:
                n -= c.send(view[:min(n, len(buf))])
        else:
            while n > 0:
                n -= c.recv_into(buf, min(n, len(buf)))
            c.sendall(b"k")
"""

STREAM_CLIENT = r"""
import socket, struct, sys, time
port, kind, n = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
buf = bytearray(1 << 20)
t = time.monotonic_ns()
c = socket.create_connection(("127.0.0.1", port))
c.sendall(kind + struct.pack("!Q", n))
left = n
if kind == b"D":
    while left > 0:
        got = c.recv_into(buf, min(left, len(buf)))
        if not got:
            sys.exit("short download")
        left -= got
else:
    view = memoryview(buf)
    while left > 0:
        left -= c.send(view[:min(left, len(buf))])
    if c.recv(1) != b"k":
        sys.exit("no ack")
print(time.monotonic_ns() - t)
"""


def _egress_link(daemon, name):
    return Path(daemon.bpffs) / "sandboxes" / name / "sl_egress"


def bench_egress(s, daemon, cgroups, workdir):
    """The egress program's cost (cgroup_skb/egress on every packet a sandbox sends): two
    sandboxes with the same policy, one of them with its sl_egress link removed here (the
    bench only: unpinning the link, which nothing else holds, detaches it), alternating.
    A 1 GiB passthrough download and upload over loopback, and the allowed connect()."""
    from common import in_sandbox
    resolv = Path(workdir) / "resolv.conf"
    srv = subprocess.Popen([*taskset(UPSTREAM_CPU), "/usr/bin/python3", "-c", STREAM_SERVER],
                           stdout=subprocess.PIPE, text=True)
    cport = free_port()
    cserver = ConnectServer(cport)
    try:
        port = int(srv.stdout.readline())
        pol = Path(workdir) / "egress.lua"
        pol.write_text(f'return {{ egress = {{ allow = {{ "127.0.0.1:{port}", '
                       f'"127.0.0.1:{cport}" }} }} }}\n')
        with_cg, without_cg = cgroups.make("egress-on"), cgroups.make("egress-off")
        daemon.add("egress-on", with_cg, pol)
        daemon.add("egress-off", without_cg, pol)
        link = _egress_link(daemon, "egress-off")
        if not link.exists():
            raise BenchError(f"{link} missing: is sl_egress attached?")
        link.unlink()
        if not _egress_link(daemon, "egress-on").exists():
            raise BenchError("the egress program is not attached to the measured sandbox")

        def transfer(cg, kind):
            out = run([*taskset(CLIENT_CPU), *in_sandbox(cg, resolv, [
                "/usr/bin/python3", "-c", STREAM_CLIENT, str(port), kind,
                str(s.transfer_bytes)])], 600).stdout
            return int(out.split()[-1])

        res = {"bytes": s.transfer_bytes, "rounds": s.transfer_rounds * 2 + 1}
        stats = Path("/proc/sys/kernel/bpf_stats_enabled")
        for kind, label in (("D", "download"), ("U", "upload")):
            on, off = [], []
            for i in range(res["rounds"]):
                # Alternate which side goes first, so that drift hits both.
                pair = [(with_cg, on), (without_cg, off)]
                for cg, acc in (pair if i % 2 == 0 else pair[::-1]):
                    acc.append(transfer(cg, kind))
            ratio = median([a / b for a, b in zip(on, off)])
            res[label] = {"with_s": median(on) / 1e9, "without_s": median(off) / 1e9,
                          "with_gib_s": s.transfer_bytes / (1 << 30) / (median(on) / 1e9),
                          "without_gib_s": s.transfer_bytes / (1 << 30) / (median(off) / 1e9),
                          "ratio": ratio}
            # The program's own time per packet (bpf_stats, on only for this one transfer).
            old = stats.read_text().strip()
            prog = f"{daemon.bpffs}/progs/sl_egress"
            stats.write_text("1")
            try:
                before = prog_stats(prog)
                transfer(with_cg, kind)
                after = prog_stats(prog)
            finally:
                stats.write_text(old)
            runs = after[1] - before[1]
            res[label]["packets"] = runs
            res[label]["prog_ns_per_packet"] = (after[0] - before[0]) / runs if runs else None
            # The program's share of the transfer's time: steadier than the time ratio on a
            # busy machine (bpf_stats' own timing included, so an upper bound).
            res[label]["prog_share"] = (after[0] - before[0]) / median(on)
            log(f"  {label} {s.transfer_bytes >> 20} MiB: with/without egress {ratio:.3f} "
                f"({res[label]['with_gib_s']:.2f} vs {res[label]['without_gib_s']:.2f} GiB/s), "
                f"{runs} packets, {res[label]['prog_ns_per_packet'] or 0:.0f} ns each, "
                f"{res[label]['prog_share'] * 100:.2f}% of the transfer time")
        res["connect"] = paired(without_cg, with_cg, "127.0.0.1", cport, s.scale_rounds,
                                s.connects)
        log(f"  allowed connect with/without egress: {res['connect']['ratio']:.3f}")
        remove_sandbox(daemon, "egress-on")
        remove_sandbox(daemon, "egress-off")
        return res
    finally:
        cserver.close()
        srv.kill()
        srv.wait()
