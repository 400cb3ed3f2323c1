#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""sluice's benchmarks (make bench). Each figure is a ratio against a baseline measured in
the same run, on the same machine, with the same client; rounds alternate between the two
sides so that drift hits both. Not a test: it reports, it does not pass or fail, except that
a measurement whose syscalls end wrong (an allowed connect refused, say) aborts the run."""
import errno
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
RUN_ID = f"sluice-bench-{os.getpid()}"

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import Cgroups, Daemon, Dnsmasq  # noqa: E402  (the e2e suite's helpers)
from upstreams import Upstreams  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "11"))
CONNECTS = int(os.environ.get("BENCH_CONNECTS", "20000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_cgroup(cg, argv, cpu=None):
    def enter():
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write("0")
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    r = subprocess.run(argv, preexec_fn=enter, capture_output=True, text=True, timeout=600)
    if r.returncode:
        sys.exit(f"bench: {' '.join(argv)} failed: {r.stderr.strip()}")
    return r.stdout


def connect_cost(cg, port, want):
    out = in_cgroup(str(cg), [str(BUILD / "bench" / "bench_connect"), "client", "127.0.0.1",
                              str(port), str(CONNECTS), str(want)], cpu=0)
    conn_ns, iter_ns = map(float, out.split())
    return conn_ns, iter_ns


def prog_stats(pinned):
    """(run_time_ns, run_cnt) of a pinned program, from bpftool."""
    import json
    r = subprocess.run(["bpftool", "-j", "prog", "show", "pinned", pinned], capture_output=True,
                       text=True, timeout=30)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    return j.get("run_time_ns", 0), j.get("run_cnt", 0)


def report(name, value, unit=""):
    print(f"{name:<44} {value:>12.3f} {unit}")


def bench_connect(daemon, cgroups, workdir):
    open_port, closed_port = free_port(), free_port()
    server = subprocess.Popen(["taskset", "-c", "1", str(BUILD / "bench" / "bench_connect"),
                               "server", str(open_port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        plain = cgroups.make("plain")
        box = cgroups.make("box")
        policy = Path(workdir) / "bench.lua"
        policy.write_text(f'return {{ egress = {{ allow = {{ "127.0.0.1:{open_port}" }} }} }}\n')
        daemon.add("bench", box, policy)

        samples = {k: [] for k in ("refused", "denied", "plain", "sluice")}
        for _ in range(ROUNDS):
            samples["refused"].append(connect_cost(plain, closed_port, errno.ECONNREFUSED))
            samples["denied"].append(connect_cost(box, closed_port, errno.EPERM))
            samples["plain"].append(connect_cost(plain, open_port, 0))
            samples["sluice"].append(connect_cost(box, open_port, 0))
        med = {k: (statistics.median(c for c, _ in v), statistics.median(i for _, i in v))
               for k, v in samples.items()}
        # Adjacent runs share the machine's state of the moment: the median of per-round
        # ratios cancels drift that a ratio of medians would keep.
        ratio = {k: statistics.median(s[0] / b[0] for s, b in zip(samples[k], samples[base]))
                 for k, base in (("denied", "refused"), ("sluice", "plain"))}
        iter_ratio = statistics.median(s[1] / b[1] for s, b in zip(samples["sluice"],
                                                                   samples["plain"]))
        # The program's own time, measured apart: the kernel's bpf_stats timing adds to
        # every run of the program while it is on.
        stats = Path("/proc/sys/kernel/bpf_stats_enabled")
        old_stats = stats.read_text().strip()
        prog = f"{daemon.bpffs}/progs/sl_connect4"
        stats.write_text("1")
        try:
            before = prog_stats(prog)
            connect_cost(box, open_port, 0)
            after = prog_stats(prog)
        finally:
            stats.write_text(old_stats)
        print(f"# connect(): {ROUNDS} rounds x {CONNECTS} connects; times: median of round "
              "means; ratios: median of per-round ratios")
        report("refused connect, no sluice (ns)", med["refused"][0])
        report("denied connect, sluice (ns)", med["denied"][0])
        report("ratio denied / refused (target <= 0.5)", ratio["denied"])
        report("allowed connect, no sluice (ns)", med["plain"][0])
        report("allowed connect, sluice (ns)", med["sluice"][0])
        report("ratio allowed sluice / none (target <= 1.03)", ratio["sluice"])
        report("ratio full iteration allowed (socket..close)", iter_ratio)
        runs = after[1] - before[1]
        if runs:
            report("sl_connect4 program time per call (ns)", (after[0] - before[0]) / runs)
    finally:
        server.stdin.close()
        server.wait(timeout=10)


DNS_QUERIES = int(os.environ.get("BENCH_DNS_QUERIES", "5000"))


def dns_cost(cg, server, port, window, count):
    out = in_cgroup(str(cg), [str(BUILD / "bench" / "bench_dns"), server, str(port),
                              "allowed.test", str(count), str(window)], cpu=0)
    qps, p50, p99 = map(float, out.split())
    return qps, p50, p99


def bench_dns(daemon, cgroups, workdir, dnsmasq):
    plain = cgroups.make("plain")
    box = cgroups.make("dnsbox")
    policy = Path(workdir) / "dns.lua"
    policy.write_text('return { egress = { allow = { "allowed.test:443" }, '
                      'private = { "127.0.0.0/8" } } }\n')
    daemon.add("dnsbench", box, policy)
    rows = {}
    for label, window, count in (("latency", 1, DNS_QUERIES // 2), ("throughput", 32, DNS_QUERIES)):
        direct, sluice = [], []
        for _ in range(max(3, ROUNDS // 2)):
            direct.append(dns_cost(plain, "127.0.0.1", dnsmasq.port, window, count))
            # 127.0.0.153: nothing listens there; the kernel sends it to sluice.
            sluice.append(dns_cost(box, "127.0.0.153", 53, window, count))
        rows[label] = ([statistics.median(x[i] for x in direct) for i in range(3)],
                       [statistics.median(x[i] for x in sluice) for i in range(3)])
    print(f"# DNS: A queries for an allowed name, dnsmasq directly vs through sluice")
    (d, s) = rows["latency"]
    report("resolution latency p50, dnsmasq (us)", d[1])
    report("resolution latency p50, sluice (us)", s[1])
    report("resolution latency p99, dnsmasq (us)", d[2])
    report("resolution latency p99, sluice (us)", s[2])
    (d, s) = rows["throughput"]
    report("queries/s (32 in flight), dnsmasq", d[0])
    report("queries/s (32 in flight), sluice", s[0])
    report("ratio queries/s sluice / dnsmasq", s[0] / d[0])


PROXY_SECONDS = int(os.environ.get("BENCH_PROXY_SECONDS", "5"))
STATIC = "x" * 1024  # the response body: nginx answers it itself, no backend in the way


def wrk(argv_prefix, url, conns, close=False):
    argv = [*argv_prefix, "wrk", "-t1", f"-c{conns}",
            f"-d{PROXY_SECONDS}s", "--latency", url]
    if close:
        argv[-1:-1] = ["-H", "Connection: close"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=PROXY_SECONDS + 60)
    if r.returncode:
        sys.exit(f"bench: wrk failed: {r.stderr.strip() or r.stdout.strip()}")
    out = {"rps": 0.0}
    for line in r.stdout.splitlines():
        f = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(f[1])
        elif len(f) == 2 and f[0] in ("50%", "99%"):
            v = f[1]
            scale = 1e3 if v.endswith("ms") else 1e6 if v.endswith("s") and not \
                v.endswith("us") else 1.0
            out[f[0]] = float(v.rstrip("usm")) * (1 if v.endswith("us") else scale)
        elif "Non-2xx" in line or "Socket errors" in line:
            out["errors"] = line.strip()
    if out.get("errors") or not out["rps"]:
        sys.exit(f"bench: wrk saw errors: {r.stdout}")
    return out


def cpu_s(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bench_proxy(daemon, cgroups, workdir, upstreams):
    plain = cgroups.make("pxplain")
    box = cgroups.make("pxbox")
    policy = Path(workdir) / "proxy.lua"
    policy.write_text('return { egress = { intercept = { "api.test" }, '
                      'private = { "127.0.0.0/8" } } }\n')
    daemon.add("pxbench", box, policy)
    hosts = Path(workdir) / "hosts"
    hosts.write_text("127.0.0.20 api.test\n")
    inside = [str(ROOT / "tools" / "in-sandbox"), str(box), str(Path(workdir) / "resolv.conf")]
    # The direct run resolves api.test from a hosts file of its own (never the machine's DNS).
    direct = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount --bind {hosts} /etc/hosts && exec "$@"', "sh"]
    url = "https://api.test/static"
    rows = {}
    pids = (daemon.proc.pid, upstreams.nginx.proc.pid)

    def measured(prefix, conns, close):
        before = [cpu_s(p) for p in pids]
        r = wrk(prefix, url, conns, close)
        n = r["rps"] * PROXY_SECONDS
        r["sluiced_us"], r["nginx_us"] = ((cpu_s(p) - b) / n * 1e6 for p, b in zip(pids, before))
        return r

    for label, conns, close in (("keepalive", 16, False), ("newconn", 8, True)):
        d, v = [], []
        for _ in range(3):
            d.append(measured(direct, conns, close))
            v.append(measured(inside, conns, close))
        keys = ("rps", "50%", "99%", "sluiced_us", "nginx_us")
        rows[label] = ({k: statistics.median(x[k] for x in d) for k in keys},
                       {k: statistics.median(x[k] for x in v) for k in keys})
    print(f"# HTTPS through the proxy vs directly to nginx: wrk, 1 thread, {PROXY_SECONDS} s "
          "runs, median of 3; client, proxy and nginx share this machine's CPUs")
    d, v = rows["keepalive"]
    report("keep-alive req/s (16 conns), direct", d["rps"])
    report("keep-alive req/s (16 conns), sluice", v["rps"])
    report("ratio keep-alive sluice / direct (target >= 0.5)", v["rps"] / d["rps"])
    report("keep-alive p50 latency direct / sluice (us)", d["50%"])
    report("", v["50%"])
    report("keep-alive p99 latency direct / sluice (us)", d["99%"])
    report("", v["99%"])
    report("keep-alive CPU per request: nginx direct (us)", d["nginx_us"])
    report("keep-alive CPU per request: sluiced, nginx (us)", v["sluiced_us"])
    report("", v["nginx_us"])
    d, v = rows["newconn"]
    report("new-connection req/s (8 conns), direct", d["rps"])
    report("new-connection req/s (8 conns), sluice", v["rps"])
    report("ratio new-connection sluice / direct", v["rps"] / d["rps"])
    report("new-connection CPU per request: nginx direct (us)", d["nginx_us"])
    report("new-connection CPU per request: sluiced, nginx (us)", v["sluiced_us"])
    report("", v["nginx_us"])
    out = subprocess.run([str(BUILD / "bench" / "bench_mint")], capture_output=True, text=True,
                         timeout=300)
    print("# leaf minting (tests/bench/bench_mint.c; target cold <= 60 us)")
    for line in out.stdout.splitlines():
        k, _, val = line.partition(" ")
        if k in ("mint_cold_us_p50", "mint_cold_us_p99", "mint_cached_us_p50",
                 "mint_cached_us_p99"):
            report(k, float(val), "us")


def main():
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it loads BPF programs and creates cgroups)")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    cgroups = Cgroups()
    cgroups.root = cgroups.root.parent / RUN_ID
    (workdir / "resolv.conf").write_text("nameserver 127.0.0.153\n")
    dnsmasq = Dnsmasq(workdir)
    upstreams = Upstreams(workdir / "upstreams",
                          extra_server=f'    location = /static {{ return 200 "{STATIC}"; }}')
    daemon = None
    try:
        upstreams.start()
        daemon = Daemon(workdir, "bench", extra=["--purge", "--dns-upstream",
                                                 f"127.0.0.1:{dnsmasq.port}", "--upstream-ca",
                                                 str(upstreams.pki.ca_pem)])
        daemon.start()
        which = sys.argv[1:] or ["connect", "dns", "proxy"]
        if "connect" in which:
            bench_connect(daemon, cgroups, workdir)
        if "dns" in which:
            bench_dns(daemon, cgroups, workdir, dnsmasq)
        if "proxy" in which:
            bench_proxy(daemon, cgroups, workdir, upstreams)
    finally:
        if daemon:
            daemon.cleanup()
        upstreams.close()
        dnsmasq.stop()
        cgroups.cleanup()


if __name__ == "__main__":
    main()
