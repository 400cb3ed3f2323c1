# SPDX-License-Identifier: MIT
"""What every benchmark module shares: the run's settings (full or smoke), CPU pinning, CPU
accounting by cgroup, running a command inside a cgroup (and a mount namespace of its own),
and small statistics helpers.

CPU pinning: see PIN_MODE below; which process ran where is recorded with the results."""
import json
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The binaries measured: build/, or SLUICE_BUILD as the e2e tests take it (make e2e sets it,
# so tests/e2e/test_bench_smoke.py runs the build it was asked to test).
BUILD = Path(os.environ.get("SLUICE_BUILD") or ROOT / "build")
PY = "/usr/bin/python3"

sys.path.insert(0, str(ROOT / "tests" / "e2e"))


class BenchError(RuntimeError):
    """A measurement went wrong (errors from the client, a peer that did not start): the run
    stops, since a figure from a broken setup would be worse than none."""


def ncpus():
    return len(os.sched_getaffinity(0))


# BENCH_PIN chooses where processes run (on a machine with at least two CPUs):
#   servers (default)  clients on CPU 0; the upstream, its resolver and the proxy on CPU 1
#   upstream           clients on CPU 0, the upstream on CPU 1, the proxy wherever the
#                      scheduler puts it (it takes what the other two leave)
#   none               no pinning at all
PIN_MODE = os.environ.get("BENCH_PIN", "servers") if ncpus() > 1 else "none"
if PIN_MODE not in ("servers", "upstream", "none"):
    raise SystemExit(f"BENCH_PIN={PIN_MODE}: servers, upstream or none")
CLIENT_CPU = 0 if PIN_MODE != "none" else None
UPSTREAM_CPU = 1 if PIN_MODE != "none" else None
PROXY_CPU = 1 if PIN_MODE == "servers" else None
PINNING = {
    "mode": PIN_MODE,
    "client": {"cpus": [CLIENT_CPU], "what": "wrk, bench_load, curl, bench_connect and "
               "bench_dns clients"},
    "upstream": {"cpus": [UPSTREAM_CPU], "what": "the upstream nginx (and the bench's "
                 "Python backend), dnsmasq, the connect server"},
    "proxy": {"cpus": [PROXY_CPU], "what": "the proxy under test: sluiced, the nginx reverse "
              "proxy, Squid, mitmproxy"},
    "why": {
        "servers": "a client never competes with the server it measures, and every proxy is "
                   "measured on the same one server CPU next to the same upstream nginx: the "
                   "ratios compare the server-side CPU each setup spends per request (direct: "
                   "nginx alone; a proxy: the proxy plus nginx). Steadier: on the 2-core VM, "
                   "pinned 3-second rounds of direct keep-alive stayed within 75-79k req/s and "
                   "sluice/direct within 0.32-0.34; unpinned, direct jumped between 40k and 81k "
                   "req/s from one round to the next (wrk and nginx sharing one CPU or not) and "
                   "the ratios between 0.38 and 0.87",
        "upstream": "the client and the upstream stay on their CPUs; the proxy takes what "
                    "they leave on either",
        "none": "no pinning: the scheduler places everything",
    }[PIN_MODE],
}


class Settings:
    """Sizes of one run. smoke: a few hundred requests per benchmark, seconds each."""

    def __init__(self, smoke=False):
        e = os.environ.get
        self.smoke = smoke
        self.rounds = int(e("BENCH_ROUNDS", "3" if smoke else "11"))
        self.connects = int(e("BENCH_CONNECTS", "300" if smoke else "20000"))
        self.scale_rounds = int(e("BENCH_SCALE_ROUNDS", "2" if smoke else "7"))
        self.rule_counts = [int(x) for x in e("BENCH_RULE_COUNTS", "10,100" if smoke else
                                              "10,1000,100000,1000000").split(",")]
        self.sandboxes = int(e("BENCH_SANDBOXES", "20" if smoke else "10000"))
        self.dns_names = 200 if smoke else 10000
        self.dns_queries = int(e("BENCH_DNS_QUERIES", "300" if smoke else "5000"))
        # wrk takes whole seconds
        self.http_seconds = int(e("BENCH_HTTP_SECONDS", "1" if smoke else "3"))
        self.warmup_seconds = 0 if smoke else 1
        self.http_rounds = int(e("BENCH_HTTP_ROUNDS", "1" if smoke else "3"))
        self.rate_seconds = float(e("BENCH_RATE_SECONDS", "0.5" if smoke else "4"))
        self.transfer_bytes = int(e("BENCH_TRANSFER_BYTES", str(4 << 20 if smoke else 1 << 30)))
        self.transfer_rounds = int(e("BENCH_TRANSFER_ROUNDS", "1" if smoke else "3"))
        self.mint_names = 200 if smoke else 2000
        self.conns = 16  # keep-alive connections (wrk -c, bench_load)
        self.newconn_conns = int(e("BENCH_NEWCONN_CONNS", "8"))


def pin(pid, cpu):
    """Pins every thread of pid to cpu (None: leaves it alone)."""
    if cpu is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass


@contextmanager
def unpinned(pid):
    """Every CPU for pid's threads and the calling thread while inside, then the pinning as
    run.py set it (PROXY_CPU for pid, this thread's own): bench scale adds its sandboxes so,
    since an orchestrator's burst of adds meets sluiced on the whole machine, where the
    pinning is for the proxies' comparisons (which share one server CPU)."""
    cpus = os.sched_getaffinity(1)
    mine = os.sched_getaffinity(0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
        pin(pid, PROXY_CPU)


def taskset(cpu):
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def cgroup_usage_us(cg):
    """CPU time (user + system, every thread of every process) spent in cgroup cg so far."""
    for line in (Path(cg) / "cpu.stat").read_text().splitlines():
        k, v = line.split()
        if k == "usage_usec":
            return int(v)
    return 0


def move_to_cgroup(pid, cg):
    (Path(cg) / "cgroup.procs").write_text(str(pid))


def enter_cgroup(cg):
    """A preexec_fn: the child joins cg before it execs."""
    def enter():
        with open(os.path.join(str(cg), "cgroup.procs"), "w") as f:
            f.write("0")
    return enter


def with_hosts(hosts_file, argv):
    """argv in a private mount namespace whose /etc/hosts is hosts_file: the benchmark's names
    resolve to its own loopback addresses, never through the machine's resolver."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file), *argv]


def in_sandbox(cg, resolv, argv):
    """argv as a member of sandbox cgroup cg whose resolv.conf points at a loopback address
    (sluice captures every port-53 query of a sandbox)."""
    return [str(ROOT / "tools" / "in-sandbox"), str(cg), str(resolv), *argv]


def run(argv, timeout, cg=None, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=enter_cgroup(cg) if cg else None)
    if check and r.returncode:
        raise BenchError(f"{' '.join(map(str, argv[-8:]))} failed ({r.returncode}): "
                         f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def machine():
    """CPU model, cores, kernel, OpenSSL and the versions of every program measured."""
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    osr = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        k, _, v = line.partition("=")
        osr[k] = v.strip('"')
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))

    def first(text, pattern):
        m = re.search(pattern, text)
        return m.group(1) if m else None

    head = out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", str(ROOT), "status", "--porcelain", "--", "bpf", "userspace"])
    return {
        "sluice_commit": (head + ("+uncommitted changes" if dirty else "")) or None,
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / (1 << 20), 1),
        "hypervisor": first(out(["lscpu"]), r"Hypervisor vendor:\s+(\S+)"),
        "kernel": os.uname().release,
        "os": osr.get("PRETTY_NAME", ""),
        "openssl": out(["openssl", "version"]),
        "versions": {
            "nginx": first(out(["nginx", "-v"]), r"nginx/(\S+)"),
            "squid": first(out(["squid", "-v"]), r"Version (\S+)"),
            "mitmproxy": first(out(["mitmdump", "--version"]), r"Mitmproxy: (\S+)"),
            "wrk": first(out(["wrk", "-v"]), r"wrk (\S+)"),
            "dnsmasq": first(out(["dnsmasq", "--version"]), r"version (\S+)"),
            "sluiced": out([str(BUILD / "sluiced"), "--version"]).splitlines()[0:1] or None,
            "python": sys.version.split()[0],
        },
    }


def busy_others(exclude_pgid=None):
    """Processes not started by this run that used more than 20% of a CPU over one second:
    the benchmark shares the machine with them, and its figures say so."""
    def ticks():
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                st = (d / "stat").read_text()
                comm = st[st.index("(") + 1:st.rindex(")")]
                f = st[st.rindex(")") + 2:].split()
                out[int(d.name)] = (comm, int(f[11]) + int(f[12]), int(f[2]))
            except (OSError, ValueError, IndexError):
                pass
        return out
    a = ticks()
    time.sleep(1)
    b = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (comm, t, pgid) in b.items():
        if pid in a and pgid != exclude_pgid:
            cpu = (t - a[pid][1]) / hz
            if cpu > 0.2:
                busy.append({"pid": pid, "comm": comm, "cpu": round(cpu, 2)})
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "busy": busy}


def write_json(path, obj):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise BenchError(f"{what}: not ready after {timeout} s")
