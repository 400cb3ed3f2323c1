# SPDX-License-Identifier: MIT
"""`--workers 1` against `--workers 2`: two sluiced side by side (own socket, state and pin
directory), each with two sandboxes that intercept bench.test with the injection handler; in
alternating rounds, two wrk clients (one per sandbox, keep-alive, 1 KiB) drive one daemon at
once. Reported: requests/s of both clients together, sluiced's CPU per request (its
/proc/PID/stat), and how much of a CPU sluiced used (above 1.0 only with more than one
thread busy).

What this can show on the 2-core VM: whether a host's sandboxes spread over the workers, so
that sluiced uses more than one core. What it cannot: a scaling factor. sluiced and the two
wrk clients may run on either core here (the upstream nginx stays on the server CPU), so the
machine itself is the limit long before two workers are in the light case; the heavy case's
handler makes sluiced the limit.
"""
import json
import os
import subprocess
import time
from pathlib import Path

from common import BenchError, in_sandbox, log, median
from conftest import Daemon
import https
import peers

SANDBOXES = 2

# The same interception with a handler that spends CPU (about 1,000,000 Lua instructions per
# request, a fifth of the per-request budget): sluiced, not the clients or nginx, is then what
# limits, and a second worker has something to take.
POLICY_HEAVY = peers.POLICY.replace(
    'req.headers:set("x-auth-token", env.BENCH_TOKEN)',
    'local x = 0\n      for i = 1, 300000 do x = x + i % 7 end\n'
    '      req.headers:set("x-auth-token", env.BENCH_TOKEN)')
assert POLICY_HEAVY != peers.POLICY


ALL_CPUS = sorted(os.sched_getaffinity(1)) if os.path.exists("/proc/1") else [0]
ANY_CPU = ["taskset", "-c", ",".join(map(str, ALL_CPUS))]


def unpin(pid):
    """Every thread of pid may run on any CPU (the bench process pins what it starts to the
    server CPU; here the point is whether sluiced spreads)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), ALL_CPUS)
        except ProcessLookupError:
            pass


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime, stime


def bench_workers(s, cgroups, workdir, resolv, extra):
    """extra: sluiced's options (upstream resolver and CA, env file) as the main daemon's."""
    tick = os.sysconf("SC_CLK_TCK")
    script = Path(workdir) / "wrk-json-workers.lua"
    script.write_text(https.WRK_SCRIPT)
    daemons, boxes = {}, {}
    try:
        for w in (1, 2):
            d = Daemon(workdir, f"workers{w}", extra=[*extra, "--workers", str(w)])
            d.start()
            unpin(d.proc.pid)
            daemons[w] = d
            boxes[w] = []
            for i in range(SANDBOXES):
                cg = cgroups.make(f"workers{w}-{i}")
                pf = Path(workdir) / f"workers{w}-{i}.lua"
                pf.write_text(peers.POLICY)
                d.add(f"w{w}box{i}", cg, pf)
                boxes[w].append(cg)
            for i in range(SANDBOXES):
                cg = cgroups.make(f"workers{w}-heavy{i}")
                pf = Path(workdir) / f"workers{w}-heavy{i}.lua"
                pf.write_text(POLICY_HEAVY)
                d.add(f"w{w}heavy{i}", cg, pf)
                boxes[(w, "heavy")] = boxes.get((w, "heavy"), []) + [cg]
        placed = {}
        for w, d in daemons.items():
            status, body = d.api("GET", "/v1/sandboxes")
            items = body if isinstance(body, list) else (body or {}).get("sandboxes", [])
            placed[w] = sorted(x.get("worker") for x in items if isinstance(x, dict))
        seconds = s.http_seconds
        res = {"sandboxes": SANDBOXES, "seconds": seconds, "workers_of_sandboxes": placed}
        for case in ("light", "heavy"):
            res[case] = run_case(s, daemons, boxes, case, resolv, script, seconds, tick)
        return res
    finally:
        for w, d in daemons.items():
            for i in range(SANDBOXES):
                d.cli("sandbox", "rm", f"w{w}box{i}")
                d.cli("sandbox", "rm", f"w{w}heavy{i}")
            d.cleanup()


def run_case(s, daemons, boxes, case, resolv, script, seconds, tick):
    """Alternating rounds of both daemons: two wrk clients at once, one per sandbox."""
    rounds = {1: [], 2: []}
    for r in range(max(2, s.http_rounds)):
        for w in (1, 2) if r % 2 == 0 else (2, 1):
            d = daemons[w]
            argv = [*ANY_CPU, "wrk", "-t1", f"-c{s.conns // SANDBOXES}", f"-d{seconds}s",
                    "--timeout", "10s", "-s", str(script), f"https://{peers.NAME}/1k"]
            c0, t0 = cpu_ticks(d.proc.pid), time.monotonic()
            procs = [subprocess.Popen(in_sandbox(cg, resolv, argv), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
                     for cg in (boxes[w] if case == "light" else boxes[(w, "heavy")])]
            outs = [p.communicate(timeout=seconds + 60)[0] for p in procs]
            c1, t1 = cpu_ticks(d.proc.pid), time.monotonic()
            n = 0
            for out in outs:
                line = [x for x in out.splitlines() if x.startswith("{")]
                if not line:
                    raise BenchError(f"wrk through sluice --workers {w}: {out[-800:]}")
                j = json.loads(line[-1])
                if j["errors"] or not j["requests"]:
                    raise BenchError(f"wrk through sluice --workers {w}: {j}")
                n += j["requests"]
            cpu_s = (c1 - c0) / tick
            rounds[w].append({"rps": n / seconds, "requests": n,
                              "cpu_us_per_req": cpu_s * 1e6 / n,
                              "cpus_used": cpu_s / (t1 - t0)})
    res = {}
    for w in (1, 2):
        res[f"workers{w}"] = {k: median([x[k] for x in rounds[w]])
                              for k in ("rps", "cpu_us_per_req", "cpus_used")}
        res[f"workers{w}"]["rounds"] = rounds[w]
    res["ratio_rps"] = median([b["rps"] / a["rps"] for a, b in zip(rounds[1], rounds[2])])
    for w in (1, 2):
        v = res[f"workers{w}"]
        log(f"  {case}, --workers {w}: {v['rps']:.0f} req/s, {v['cpu_us_per_req']:.1f} us "
            f"of sluiced CPU per request, {v['cpus_used']:.2f} CPUs used")
    return res
