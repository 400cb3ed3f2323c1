# SPDX-License-Identifier: MIT
"""Interception benchmarks: HTTPS through each peer (peers.py) against the upstream nginx.

    keepalive  wrk, 1 thread, fixed concurrency, keep-alive, 1 KiB and 64 KiB responses:
               requests/s, closed-loop latency, CPU microseconds per request of the proxy
               and of the upstream (from their cgroups' cpu.stat)
    fixed_rate bench_load (open loop, latency from each request's intended start): at half
               of sluice's saturation for every peer that can sustain it, at half of its own
               saturation for the others
    newconn    wrk with `Connection: close`: a TCP and TLS handshake per request (wrk resumes
               when the peer gives it tickets; sluice's share of resumed handshakes is read
               from its sandbox), then bench_newconn, which offers no session (full) or the
               last one (resume) and counts the handshakes that resumed
    transfer   curl, one 1 GiB download and one 1 GiB upload, sluice vs direct
    h2         h2load (nghttp2-client), HTTP/2, 10 connections x 10 concurrent streams, 1 KiB
               responses: direct (the upstream nginx speaks h2), sluice (h2 towards the
               upstream too, which offers it here) and the nginx proxy (h2 towards the
               client, HTTP/1.1 with keep-alive towards the upstream: nginx cannot proxy
               h2), plus both proxies under HTTP/1.1 with the same 100 requests in flight
               (100 connections), for each one's h1 CPU per request

Rounds alternate between the peers so that drift hits all of them; each figure is the median
of its rounds, each ratio the median of per-round ratios against direct.
"""
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

from common import BUILD, CLIENT_CPU, BenchError, cgroup_usage_us, log, median, run, \
    taskset, with_hosts
from peers import NAME

SIZES = {"1k": 1024, "64k": 65536}

WRK_SCRIPT = """\
-- Prints wrk's summary as one JSON line (latency in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"errors": %d, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "p999_us": %.1f, '
    .. '"max_us": %.1f, "mean_us": %.1f}\\n', summary.requests, summary.duration,
    summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def upstream_locations(files_dir, check_log):
    """nginx location blocks of the upstream: the bodies, and /check/, the only logged
    location, where each peer's injected header is seen (or not). Uploads go to the e2e
    Backend's /sha256 (nginx's own `return` answers before the body is in and then resets
    connections whose body is still coming)."""
    d = Path(files_dir)
    return f"""
    location = /1k {{ access_log off; alias {d}/1k.bin; }}
    location = /64k {{ access_log off; alias {d}/64k.bin; }}
    location = /transfer {{ access_log off; alias {d}/transfer.bin; }}
    location /check/ {{ access_log {check_log} bench_check; return 200 "checked\\n"; }}
"""


CHECK_LOG_FORMAT = "log_format bench_check '$request_uri sni=$ssl_server_name token=$http_x_auth_token';"


def make_files(files_dir, transfer_bytes):
    d = Path(files_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, n in SIZES.items():
        (d / f"{name}.bin").write_bytes(bytes((i * 7 + 13) & 0xff for i in range(n)))
    # Sparse: read from the page cache as zeros, no disk; TLS encrypts them all the same.
    with open(d / "transfer.bin", "wb") as f:
        f.truncate(transfer_bytes)
    for f in d.iterdir():
        f.chmod(0o644)
    d.chmod(0o755)


class Bench:
    """Runs clients against the peers. ctx: dict with 'sluice_argv' (argv -> argv inside the
    sandbox), 'client_cg', 'upstream_cg', 'workdir', 'settings', 'peers' (name -> peer,
    including 'direct' with ip = upstream ip)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.s = ctx["settings"]
        self.workdir = Path(ctx["workdir"])
        self.script = self.workdir / "wrk-json.lua"
        self.script.write_text(WRK_SCRIPT)
        self.hosts = {}
        for name, peer in ctx["peers"].items():
            if name != "sluice":
                h = self.workdir / f"client-hosts-{name}"
                h.write_text(f"{peer.ip} {NAME}\n")
                self.hosts[name] = h

    def client(self, peer, argv):
        """argv (pinned to the client CPU) as a client of peer: in the sandbox for sluice, with
        a hosts file naming the peer's address for bench.test otherwise."""
        argv = [*taskset(CLIENT_CPU), *argv]
        if peer == "sluice":
            return self.ctx["sluice_argv"](argv), None
        return with_hosts(self.hosts[peer], argv), self.ctx["client_cg"]

    def cpu_of(self, peer):
        p = self.ctx["peers"][peer]
        return p.cgroup

    def measured(self, peer, argv, timeout):
        """Runs a client; returns (stdout, proxy CPU us, upstream CPU us, client CPU us), each
        read from the cgroup the process runs in (the sandbox's, for sluice's client)."""
        full, cg = self.client(peer, argv)
        ccg = self.ctx["sluice_cg"] if peer == "sluice" else self.ctx["client_cg"]
        groups = [self.cpu_of(peer), self.ctx["upstream_cg"], ccg]
        before = [cgroup_usage_us(g) if g else 0 for g in groups]
        r = run(full, timeout, cg=cg)
        after = [cgroup_usage_us(g) if g else 0 for g in groups]
        return (r.stdout, *(a - b for a, b in zip(after, before)))

    def wrk(self, peer, path, conns, seconds, close=False):
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s",
                str(self.script)]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append(f"https://{NAME}{path}")
        out, pcpu, ucpu, ccpu = self.measured(peer, argv, seconds + 60)
        line = [l for l in out.splitlines() if l.startswith("{")]
        if not line:
            raise BenchError(f"wrk through {peer}: no summary: {out[-1000:]}")
        j = json.loads(line[-1])
        if j["errors"] or not j["requests"]:
            raise BenchError(f"wrk through {peer} {path}: {j['errors']} errors of "
                             f"{j['requests']} requests: {out[-1500:]}")
        n = j["requests"]
        return {"rps": n / (j["duration_us"] / 1e6), "requests": n,
                "p50_us": j["p50_us"], "p99_us": j["p99_us"], "p999_us": j["p999_us"],
                "proxy_cpu_us": pcpu / n if pcpu else 0.0, "upstream_cpu_us": ucpu / n,
                "client_cpu_us": ccpu / n}

    def h2load(self, peer, path, conns, streams, seconds, h1=False):
        """h2load through peer for seconds: requests/s and CPU microseconds per request of
        the proxy (its cgroup: every thread) and of the upstream. h1: HTTP/1.1 (ALPN
        http/1.1), one request in flight per connection."""
        argv = ["h2load", "-t1", f"-c{conns}", f"-m{streams}", "-D", str(seconds)]
        if h1:
            argv.append("--h1")
        argv.append(f"https://{NAME}{path}")
        out, pcpu, ucpu, ccpu = self.measured(peer, argv, seconds + 60)
        m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
        done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        codes = re.search(r"status codes: (\d+) 2xx", out)
        proto = re.search(r"Application protocol: (\S+)", out)
        want = "http/1.1" if h1 else "h2"
        if not (m and done and codes and proto):
            raise BenchError(f"h2load through {peer}: no summary: {out[-1500:]}")
        n, failed = int(done.group(1)), sum(int(done.group(i)) for i in (2, 3, 4))
        if proto.group(1) != want or failed or not n or int(codes.group(1)) != n:
            raise BenchError(f"h2load through {peer} {path}: protocol {proto.group(1)}, "
                             f"{n} succeeded, {failed} failed, {codes.group(1)} 2xx: "
                             f"{out[-1500:]}")
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        return {"rps": n / secs, "requests": n,
                "proxy_cpu_us": pcpu / n if pcpu else 0.0, "upstream_cpu_us": ucpu / n,
                "client_cpu_us": ccpu / n}

    def h2(self, peers):
        """The h2 section (see the module's head): {"h2": {peer: ...}, "h1": {peer: ...},
        and the ratios the targets read}."""
        s = self.s
        out = {"settings": {"conns": 10, "streams": 10, "seconds": s.http_seconds,
                            "rounds": s.http_rounds, "h1_conns": 100}}
        for p in peers if s.warmup_seconds else ():
            self.h2load(p, "/1k", 10, 10, s.warmup_seconds)
        log("  h2, 10 connections x 10 streams, 1k")
        samples = self.rounds(peers, lambda p: self.h2load(p, "/1k", 10, 10, s.http_seconds),
                              s.http_rounds)
        h2 = out["h2"] = self.summarize(samples)
        proxies = [p for p in peers if p in ("sluice", "nginx")]
        log("  h1, 100 connections, 1k (the same requests in flight)")
        h1 = out["h1"] = self.summarize(self.rounds(
            proxies, lambda p: self.h2load(p, "/1k", 100, 1, s.http_seconds, h1=True),
            s.http_rounds))
        if "sluice" in h2 and "nginx" in h2:
            h2["sluice"]["ratio_vs_nginx"] = median(
                [x["rps"] / n["rps"] for x, n in zip(samples["sluice"], samples["nginx"])])
            h2["sluice"]["proxy_cpu_vs_nginx"] = \
                h2["sluice"]["proxy_cpu_us"] / h2["nginx"]["proxy_cpu_us"]
        if "sluice" in h2 and "sluice" in h1:
            h2["sluice"]["proxy_cpu_vs_own_h1"] = \
                h2["sluice"]["proxy_cpu_us"] / h1["sluice"]["proxy_cpu_us"]
        for what, res in (("h2", h2), ("h1", h1)):
            for p, r in res.items():
                log(f"    {what} {p:10} {r['rps']:9.0f} req/s  proxy {r['proxy_cpu_us']:6.1f} "
                    f"us/req  upstream {r['upstream_cpu_us']:6.1f} us/req")
        return out

    def load(self, peer, path, rate, seconds):
        argv = [str(BUILD / "bench" / "bench_load"), NAME, "443", path, str(self.s.conns),
                f"{rate:.0f}", str(seconds)]
        out, pcpu, ucpu, _ = self.measured(peer, argv, seconds + 60)
        j = json.loads(out.strip().splitlines()[-1])
        if j["errors"]:
            raise BenchError(f"bench_load through {peer} {path}: {j['errors']} errors")
        j["proxy_cpu_us"] = pcpu / j["ok"] if j["ok"] and pcpu else 0.0
        return j

    # -- the benchmarks

    def rounds(self, peers, fn, nrounds):
        """fn(peer) for every peer, nrounds times, alternating; {peer: [results]}."""
        out = {p: [] for p in peers}
        for i in range(nrounds):
            for p in peers:
                if p == "mitmproxy" and i > 0:
                    continue  # two orders of magnitude slower and steady: one round is enough
                out[p].append(fn(p))
        return out

    @staticmethod
    def summarize(samples):
        """Medians over rounds and, per round, the ratio of requests/s against direct."""
        res = {}
        direct = samples.get("direct", [])
        for p, xs in samples.items():
            keys = xs[0].keys()
            res[p] = {k: median([x[k] for x in xs]) for k in keys}
            res[p]["rounds"] = len(xs)
            res[p]["rps_rounds"] = [round(x["rps"]) for x in xs]
            if "client_cpu_us" in res[p]:
                res[p]["total_cpu_us"] = sum(res[p][k] for k in ("client_cpu_us", "proxy_cpu_us",
                                                                  "upstream_cpu_us"))
        for p in res:
            if direct:
                rr = [x["rps"] / d["rps"] for x, d in zip(samples[p], direct)]
                res[p]["ratio_vs_direct"] = median(rr)
                res[p]["ratio_rounds"] = [round(x, 3) for x in rr]
            if direct and "total_cpu_us" in res[p]:
                # What the ratio would be if the whole machine were the limit, wherever each
                # process ran: the CPU a request costs, client and upstream included.
                res[p]["cpu_ratio_vs_direct"] = res["direct"]["total_cpu_us"] / \
                    res[p]["total_cpu_us"]
        return res

    def keepalive(self, peers):
        out = {}
        for size in SIZES:
            log(f"  keep-alive {size}")
            for p in peers if self.s.warmup_seconds else ():
                # warm-up: handshakes, leaf certificates, upstream pools
                self.wrk(p, f"/{size}", self.s.conns, self.s.warmup_seconds)
            samples = self.rounds(peers, lambda p: self.wrk(p, f"/{size}", self.s.conns,
                                                             self.s.http_seconds),
                                  self.s.http_rounds)
            out[size] = self.summarize(samples)
            if "nginx" in samples and "sluice" in samples:
                out[size]["sluice"]["ratio_vs_nginx"] = median(
                    [x["rps"] / n["rps"] for x, n in zip(samples["sluice"], samples["nginx"])])
            if "nginx" in out[size] and "sluice" in out[size]:
                out[size]["sluice"]["proxy_cpu_vs_nginx"] = \
                    out[size]["sluice"]["proxy_cpu_us"] / out[size]["nginx"]["proxy_cpu_us"]
            if "mitmproxy" in samples and "sluice" in samples:
                out[size]["sluice"]["ratio_vs_mitmproxy"] = \
                    out[size]["sluice"]["rps"] / out[size]["mitmproxy"]["rps"]
            for p in peers:
                r = out[size][p]
                log(f"    {p:10} {r['rps']:9.0f} req/s  p99 {r['p99_us']:8.0f} us  "
                    f"proxy {r['proxy_cpu_us']:6.1f} us/req")
        return out

    def fixed_rate(self, peers, keepalive):
        """Latency percentiles at a fixed request rate: half of sluice's saturation (the
        target's "half of saturation") for every peer whose own saturation is above it; a
        slower peer at half of its own saturation, so that it is not simply overloaded."""
        out = {}
        for size in SIZES:
            ka = keepalive[size]
            base = ka["sluice"]["rps"] if "sluice" in ka else ka["direct"]["rps"]
            rate = 0.5 * base
            out[size] = {"rate": rate, "peers": {}}
            log(f"  fixed rate {size}: {rate:.0f} req/s")
            for p in peers:
                own = 0.5 * ka[p]["rps"]
                r = min(rate, own)
                res = self.load(p, f"/{size}", r, self.s.rate_seconds)
                res["at"] = "common" if r == rate else "half of own saturation"
                out[size]["peers"][p] = res
                log(f"    {p:10} {r:8.0f} req/s  p50 {res['p50_us']:7.0f}  p99 "
                    f"{res['p99_us']:7.0f}  p99.9 {res['p999_us']:7.0f} us  late {res['late']}")
            d, s = out[size]["peers"].get("direct"), out[size]["peers"].get("sluice")
            if d and s:
                out[size]["sluice_added_us"] = {k: s[k] - d[k] for k in
                                                ("p50_us", "p99_us", "p999_us")}
        return out

    def sluice_handshakes(self):
        """(client connections accepted, TLS handshakes resumed) by sluice's sandbox so far."""
        sl = self.ctx["peers"]["sluice"]
        r = sl.daemon.cli("sandbox", "show", sl.sandbox, "--json")
        c = json.loads(r.stdout)["proxy"]["connections"]
        return c["accepted"], c.get("tls_resumed", 0)

    def newconn_wrk(self, peer, seconds):
        """wrk with `Connection: close`; for sluice, also the share of its handshakes that
        resumed (wrk resumes whenever the server gives it a ticket)."""
        before = self.sluice_handshakes() if peer == "sluice" else None
        res = self.wrk(peer, "/1k", self.s.newconn_conns, seconds, close=True)
        if before:
            after = self.sluice_handshakes()
            res["resumed_share"] = (after[1] - before[1]) / max(1, after[0] - before[0])
        return res

    def newconn_client(self, peer, mode, seconds):
        """bench_newconn: a new connection per request, offering no session (full) or the
        last one (resume); the share that resumed is the client's own count."""
        argv = [str(BUILD / "bench" / "bench_newconn"), NAME, "443", "/1k",
                str(self.s.newconn_conns), str(seconds), mode]
        out, pcpu, ucpu, ccpu = self.measured(peer, argv, seconds + 60)
        j = json.loads(out.strip().splitlines()[-1])
        n = j["requests"]
        if j["errors"] or not n:
            raise BenchError(f"bench_newconn {mode} through {peer}: {j}")
        return {"rps": n / j["seconds"], "requests": n, "resumed_share": j["resumed"] / n,
                "proxy_cpu_us": pcpu / n if pcpu else 0.0, "upstream_cpu_us": ucpu / n,
                "client_cpu_us": ccpu / n}

    def newconn(self, peers):
        log("  new connection per request, 1k: wrk")
        for p in peers if self.s.warmup_seconds else ():
            self.wrk(p, "/1k", self.s.newconn_conns, self.s.warmup_seconds, close=True)
        samples = self.rounds(peers, lambda p: self.newconn_wrk(p, self.s.http_seconds),
                              self.s.http_rounds)
        out = self.summarize(samples)
        if "sluice" in out and "nginx" in out and out["nginx"]["proxy_cpu_us"]:
            out["sluice"]["proxy_cpu_vs_nginx"] = \
                out["sluice"]["proxy_cpu_us"] / out["nginx"]["proxy_cpu_us"]
        for p in peers:
            log(f"    {p:10} {out[p]['rps']:9.0f} req/s  proxy {out[p]['proxy_cpu_us']:6.1f} "
                "us/req" + (f"  resumed {out[p]['resumed_share']:.0%}"
                            if "resumed_share" in out[p] else ""))
        for mode in ("full", "resume"):
            log(f"  new connection per request, 1k: bench_newconn {mode}")
            res = out[mode] = self.summarize(self.rounds(
                peers, lambda p: self.newconn_client(p, mode, self.s.http_seconds),
                self.s.http_rounds))
            if "sluice" in res and "nginx" in res and res["nginx"]["proxy_cpu_us"]:
                res["sluice"]["proxy_cpu_vs_nginx"] = \
                    res["sluice"]["proxy_cpu_us"] / res["nginx"]["proxy_cpu_us"]
            for p in peers:
                log(f"    {p:10} {res[p]['rps']:9.0f} req/s  proxy "
                    f"{res[p]['proxy_cpu_us']:6.1f} us/req  resumed {res[p]['resumed_share']:.0%}")
        return out

    def curl(self, peer, upload, cafile):
        """One transfer of the sparse file; an upload goes to the upstream's /sha256, which
        hashes what it receives, so that every byte is checked, not only counted."""
        n = self.s.transfer_bytes
        f = self.workdir / "upstream-files" / "transfer.bin"
        argv = ["curl", "-sS", "--fail", "--cacert", str(cafile), "--max-time", "600",
                "-w", "\\n%{http_code} %{size_download} %{size_upload} %{time_total}"]
        if upload:
            argv += ["-T", str(f), "-H", "Expect:", f"https://{NAME}/sha256"]
        else:
            argv += ["-o", "/dev/null", f"https://{NAME}/transfer"]
        out, pcpu, _, _ = self.measured(peer, argv, 900)
        lines = out.strip().splitlines()
        code, down, up, total = lines[-1].split()
        moved = int(float(up)) if upload else int(float(down))
        if code != "200" or moved != n:
            raise BenchError(f"curl through {peer}: status {code}, {moved} of {n} bytes")
        if upload:
            got = json.loads(lines[0])
            if got.get("length") != n or got.get("sha256") != zeros_sha256(n):
                raise BenchError(f"upload through {peer}: the upstream received {got}")
        return {"MBps": n / float(total) / 1e6, "seconds": float(total),
                "proxy_cpu_us_per_MiB": pcpu / (n / (1 << 20)) if pcpu else 0.0}

    def transfer(self, peers, cafiles):
        out = {}
        # Into the page cache first: the first read of the sparse file allocates its pages,
        # which would slow whichever side came first.
        with open(self.workdir / "upstream-files" / "transfer.bin", "rb") as f:
            while f.read(1 << 24):
                pass
        for what, upload in (("download", False), ("upload", True)):
            log(f"  {what} {self.s.transfer_bytes >> 20} MiB")
            samples = {p: [] for p in peers}
            for _ in range(self.s.transfer_rounds):
                for p in peers:
                    samples[p].append(self.curl(p, upload, cafiles[p]))
            res = {p: {k: median([x[k] for x in xs]) for k in xs[0]} for p, xs in
                   samples.items()}
            if "direct" in samples:
                for p in peers:
                    res[p]["ratio_vs_direct"] = median(
                        [x["MBps"] / d["MBps"] for x, d in zip(samples[p], samples["direct"])])
            for p in peers:
                log(f"    {p:10} {res[p]['MBps']:8.0f} MB/s")
            out[what] = res
        return out


SYSCALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "getsockopt", "setsockopt",
            "timerfd_settime", "accept4", "close", "futex")


def profile(bench, peer, pid, size, seconds, out, close=False):
    """perf record of pid (call graphs) while wrk drives keep-alive requests through peer,
    then, in a second run, perf stat of its system calls. Writes the time by binary, the flat
    profile (self time, symbols above 0.5%) and the system calls per request to out."""
    data = Path(out).with_suffix(".data")
    conns = bench.s.newconn_conns if close else bench.s.conns
    graph = ["--call-graph", "dwarf,16384"] if os.environ.get("BENCH_PERF_DWARF") else ["-g"]
    rec = subprocess.Popen(["perf", "record", "-q", *graph, "-p", str(pid), "-o", str(data),
                            "--", "sleep", str(seconds + 1)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        res = bench.wrk(peer, f"/{size}", conns, seconds, close=close)
    finally:
        rec.wait(timeout=seconds + 60)

    def report(*sort):
        return subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                               "--percent-limit", "0.5", "-g", "none", "--sort", *sort],
                              capture_output=True, text=True, timeout=300).stdout

    def table(text):
        return "\n".join(l for l in text.splitlines() if l.strip() and not l.startswith("#"))

    by_dso, by_sym = table(report("dso")), table(report("dso,sym"))
    if not os.environ.get("BENCH_KEEP_PERF"):
        data.unlink(missing_ok=True)
    events = ["raw_syscalls:sys_enter", *(f"syscalls:sys_enter_{c}" for c in SYSCALLS),
              *filter(None, os.environ.get("BENCH_PERF_EVENTS", "").split(","))]
    st = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid),
                           "--", "sleep", str(seconds + 1)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        res2 = bench.wrk(peer, f"/{size}", conns, seconds, close=close)
    finally:
        _, err = st.communicate(timeout=seconds + 60)
    calls = {}
    for line in err.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            calls[f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter",
                                                                   "all")] = int(f[0])
    per_req = {k: round(v / res2["requests"], 2) for k, v in calls.items() if v}
    Path(out).write_text(
        f"# {peer} (pid {pid}) under wrk {'new connection per request' if close else 'keep-alive'}"
        f" /{size}, {conns} connections: "
        f"{res['rps']:.0f} req/s, {res['proxy_cpu_us']:.1f} us CPU/request\n"
        f"\n## system calls per request\n{json.dumps(per_req)}\n"
        f"\n## CPU time by binary (perf record -g, self time)\n{by_dso}\n"
        f"\n## CPU time by symbol (above 0.5%)\n{by_sym}\n")
    return {"rps": res["rps"], "cpu_us_per_request": res["proxy_cpu_us"],
            "syscalls_per_request": per_req,
            "by_binary": [l.split(None, 1) for l in by_dso.splitlines()][:8]}


_ZEROS = {}


def zeros_sha256(n):
    if n not in _ZEROS:
        h, block = hashlib.sha256(), bytes(1 << 20)
        for i in range(0, n, len(block)):
            h.update(block[:min(len(block), n - i)])
        _ZEROS[n] = h.hexdigest()
    return _ZEROS[n]


def check_injection(bench, peers, check_log):
    """Sends one request per peer to /check/<peer>, then reads what the upstream saw: whether
    the credential header arrived, with the right value, and the SNI the proxy used."""
    seen = {}
    for p in peers:
        argv = ["curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}",
                f"https://{NAME}/check/{p}"]
        full, cg = bench.client(p, argv)
        r = run(full, 60, cg=cg)
        if r.stdout.strip() != "200":
            raise BenchError(f"/check through {p}: status {r.stdout.strip()}")
    token = bench.ctx["token"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = Path(check_log).read_text().splitlines() if Path(check_log).exists() else []
        if len(lines) >= len(peers):
            break
        time.sleep(0.05)
    for line in lines:
        m = re.match(r"/check/(\S+) sni=(\S*) token=(.*)$", line)
        if m:
            seen[m.group(1)] = {"injected": m.group(3) == token,
                                "header_seen": m.group(3) not in ("", "-"),
                                "upstream_sni": m.group(2)}
    return {p: seen.get(p, {"injected": False, "header_seen": False}) for p in peers}
