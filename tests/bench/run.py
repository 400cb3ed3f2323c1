#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""sluice's benchmarks (`sudo make bench`). Each figure is a ratio against a baseline measured
in the same run, on the same machine, with the same client; rounds alternate between the
sides so that drift hits all of them. Not a test: it reports, it does not pass or fail,
except that a measurement whose requests or syscalls end wrong (an allowed connect refused,
an HTTP error) aborts the run.

    run.py [--smoke] [--out DIR] [SECTION...]

SECTIONs: connect scale egress dns loadlat https h2 transfer splice mint (default: all), and
profile (only when named: perf profiles and system calls per request of sluiced and of the
nginx proxy under keep-alive and new-connection load, into DIR/profile-*.txt). Writes
DIR/latest.json, DIR/latest.md and DIR/*.svg; DIR: tests/bench/results for a full run,
build/bench-results for a smoke or partial one. --smoke: a few hundred requests per benchmark, to check that
every one of them runs and reports (make test does this). Environment: BENCH_PIN (CPU
pinning, see common.py), BENCH_PEERS (default direct,sluice,nginx,squid,mitmproxy),
BENCH_HTTPS (default keepalive,fixed_rate,newconn; fixed_rate runs keepalive too),
BENCH_PROFILE (newconn: only the new-connection profiles), BENCH_KEEP_PERF (keep the profiles'
perf.data), BENCH_PERF_DWARF (DWARF call graphs: through libc and libcrypto, which have no
frame pointers), BENCH_PERF_EVENTS (more events to count per request, comma-separated, e.g.
probe_libc:malloc after `perf probe -x libc.so.6 malloc`), BENCH_SLUICED_ARGS (more options
for the bench's sluiced, e.g. `--max-rules 4096`), and the sizes of common.Settings.

Everything runs on loopback addresses of this run's own (127.N.M.1-4: the upstream nginx and
the three peer proxies; 127.88.0.0/16: the names of the DNS-scale case), inside cgroups under
<cgroup2>/sluice-bench-<pid>/, with a sluiced of its own (own socket, state and pin
directory). All of it is stopped and removed at the end, whatever happens: processes by the
pid this run started, cgroups, pins, temporary files.
"""
import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BUILD, PINNING, PROXY_CPU, UPSTREAM_CPU, BenchError, Settings, busy_others, log, \
    machine, move_to_cgroup, pin, write_json, in_sandbox  # noqa: E402
from conftest import Cgroups, Daemon  # noqa: E402  (the e2e suite's helpers)
from upstreams import AddressBusy, Upstreams, check_bindable  # noqa: E402
import https  # noqa: E402
import kernel  # noqa: E402
import names  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import splice  # noqa: E402
import workers  # noqa: E402

SECTIONS = ("connect", "scale", "egress", "dns", "loadlat", "https", "h2", "workers", "transfer",
            "splice", "mint")
EXTRA = ("profile",)  # only when named: perf profiles of sluiced and the nginx proxy
RESULTS = Path(__file__).resolve().parent / "results"


def pick_addresses():
    """Four loopback addresses free on port 443: 127.N.M.1 (upstream) to .4."""
    base = os.getpid() % 250
    for i in range(250):
        n, m = 90 + (base + i) % 100, (base * 7 + i) % 250 + 1
        ips = [f"127.{n}.{m}.{k}" for k in range(1, 5)]
        try:
            check_bindable([(ip, 443) for ip in ips])
            return ips
        except (AddressBusy, RuntimeError):
            continue
    raise BenchError("no free loopback addresses on port 443")


class Direct:
    name = "direct"
    cgroup = None

    def __init__(self, ip):
        self.ip = ip


def bench_mint(s):
    out = subprocess.run([str(BUILD / "bench" / "bench_mint"), str(s.mint_names)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise BenchError(f"bench_mint failed: {out.stderr.strip()}")
    res = {}
    for line in out.stdout.splitlines():
        k, _, v = line.partition(" ")
        try:
            res[k] = float(v)
        except ValueError:
            pass
    log(f"  mint: cold p50 {res.get('mint_cold_us_p50', 0):.1f} us, cached p50 "
        f"{res.get('mint_cached_us_p50', 0):.2f} us")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("sections", nargs="*", choices=[[], *SECTIONS, *EXTRA], default=[])
    args = ap.parse_args()
    which = args.sections or list(SECTIONS)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it loads BPF programs and creates cgroups)")
    s = Settings(smoke=args.smoke)
    # Only a full run replaces the published results; a smoke or partial one goes to build/.
    full = not args.smoke and set(which) == set(SECTIONS)
    out = Path(args.out or (RESULTS if full else BUILD / "bench-results"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    result = {
        "schema": 1, "smoke": s.smoke,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(), "pinning": PINNING, "sections": which, "notes": [],
    }
    # SIGTERM (a timeout of the caller) unwinds like an exception, so cleanup still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    result["load_before"] = busy_others(os.getpgid(0))
    if result["load_before"]["busy"]:
        log(f"bench: warning: other processes are busy: {result['load_before']['busy']}")
    # This process serves too (the upstream's Python backend, /sha256 of uploads): it and
    # everything it starts without another pinning run on the server CPU.
    if UPSTREAM_CPU is not None:
        os.sched_setaffinity(0, {UPSTREAM_CPU})

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        workdir.chmod(0o711)  # Squid runs as the proxy user and needs to reach its directory
        cgroups = Cgroups()
        cgroups.root = cgroups.root.parent / f"sluice-bench-{os.getpid()}"
        stack.callback(cgroups.cleanup)
        resolv = workdir / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.153\n")
        up_ip, *peer_ips = pick_addresses()
        token = "bench-" + secrets.token_hex(16)
        envfile = workdir / "bench.env"
        envfile.write_text(f"{peers.ENV_KEY}={token}\n")
        envfile.chmod(0o600)

        dnsmasq = names.BenchDnsmasq(workdir / "dnsmasq",
                                     f"host-record=allowed.test,127.0.0.5\n"
                                     f"host-record={peers.NAME},{up_ip}\n", s.dns_names)
        stack.callback(dnsmasq.stop)

        need_up = bool({"https", "h2", "workers", "transfer", "splice", "profile"} & set(which))
        upstreams = None
        files = workdir / "upstream-files"
        check_log = workdir / "check.log"
        if need_up:
            https.make_files(files, s.transfer_bytes)
            upstreams = Upstreams(workdir / "upstreams",
                                  pki_kw={"names": (peers.NAME,), "wrong": {}, "untrusted": (),
                                          "ips": (up_ip,)},
                                  https=((up_ip, 443),), http=(),
                                  extra_http=https.CHECK_LOG_FORMAT,
                                  extra_server=https.upstream_locations(files, check_log),
                                  # direct HTTP/2 for the h2 section's baseline; ALPN
                                  # picks it only for a client that offers h2
                                  http2="h2" in which)
            stack.callback(upstreams.close)
            upstreams.start()
            move_to_cgroup(upstreams.nginx.proc.pid, cgroups.make("srv-upstream"))
            pin(upstreams.nginx.proc.pid, UPSTREAM_CPU)

        env_file = peers.has_env_file()
        extra = ["--purge", "--dns-upstream", f"127.0.0.1:{dnsmasq.port}"]
        if upstreams:
            extra += ["--upstream-ca", str(upstreams.pki.ca_pem)]
        if env_file:
            extra += ["--env-file", str(envfile)]
        else:
            result["notes"].append("this sluiced has no --env-file: its policy's handler (if "
                                   "it runs at all) finds no BENCH_TOKEN")
        extra += os.environ.get("BENCH_SLUICED_ARGS", "").split()
        daemon = Daemon(workdir, "bench", extra=extra)
        stack.callback(daemon.cleanup)
        daemon.start()
        sluiced_cg = cgroups.make("srv-sluiced")
        move_to_cgroup(daemon.proc.pid, sluiced_cg)
        pin(daemon.proc.pid, PROXY_CPU)

        def section(name, fn):
            if name not in which:
                return None
            log(f"# {name}")
            t = time.monotonic()
            res = fn()
            result.setdefault("timings_s", {})[name] = round(time.monotonic() - t, 1)
            return res

        kr = {}
        kr["connect"] = section("connect", lambda: kernel.bench_connect(s, daemon, cgroups,
                                                                         workdir))
        sc = section("scale", lambda: kernel.bench_scale(s, daemon, cgroups, workdir, dnsmasq,
                                                         resolv))
        kr["egress"] = section("egress", lambda: kernel.bench_egress(s, daemon, cgroups,
                                                                       workdir))
        cold = None
        if sc:
            kr["scale"], cold = sc
        result["kernel"] = {k: v for k, v in kr.items() if v}

        def bench_box(name, policy_text):
            """A sandbox of the bench's daemon: its cgroup, named like it."""
            cg = cgroups.make(name)
            pf = workdir / f"{name}.lua"
            pf.write_text(policy_text)
            daemon.add(name, cg, pf)
            return cg

        allowed_test = ('return { egress = { allow = { "allowed.test:443" }, '
                        'private = { "127.0.0.0/8" } } }\n')

        def dns():
            box = bench_box("dnsbench", allowed_test)
            res = names.bench_dns(s, dnsmasq, lambda a: a,
                                  lambda a: in_sandbox(box, resolv, a))
            if not cold:
                # Distinct names, each a new kernel entry: a sandbox of its own, so that
                # none is cached from an earlier section.
                cbox = bench_box("dnscold", f'return {{ egress = {{ allow = {{ '
                                 f'"*.{names.MANY_SUFFIX}:443" }}, '
                                 'private = { "127.0.0.0/8" } } }\n')
                try:
                    res["cold_names"] = names.bench_cold_names(
                        dnsmasq, lambda a: a, lambda a: in_sandbox(cbox, resolv, a))
                finally:
                    kernel.remove_sandbox(daemon, "dnscold")
            else:
                res["cold_names"] = cold
            return res

        result["dns"] = section("dns", dns)

        def loadlat():
            # Loop latency of another sandbox while a 100,000-rule policy loads: its DNS,
            # one query every 2 ms, idle and across the add (kernel.loop_latency).
            box = bench_box("llbench", allowed_test)
            try:
                return kernel.loop_latency(s, daemon, cgroups, workdir, kernel.free_port(),
                                           lambda a: in_sandbox(box, resolv, a),
                                           "allowed.test")
            finally:
                kernel.remove_sandbox(daemon, "llbench")

        result["loadlat"] = section("loadlat", loadlat)

        if need_up:
            box = cgroups.make("pxbox")
            pf = workdir / "intercept.lua"
            pf.write_text(peers.POLICY_PLAIN if os.environ.get("BENCH_SLUICE_POLICY") == "plain"
                          else peers.POLICY)
            daemon.add("px", box, pf)
            ca = workdir / "sandbox-ca.pem"
            r = daemon.cli("ca", "px")
            if r.returncode:
                raise BenchError(f"sluice ca px: {r.stderr}")
            ca.write_text(r.stdout)
            sl = peers.Sluice(daemon, box, up_ip)
            sl.cgroup = sluiced_cg
            all_peers = {"direct": Direct(up_ip), "sluice": sl}
            wanted = os.environ.get("BENCH_PEERS", "direct,sluice,nginx,squid,mitmproxy")
            wanted = wanted.split(",")
            if {"https", "profile", "h2"} & set(which):
                for cls, ip in zip((peers.NginxProxy, peers.SquidProxy, peers.MitmProxy),
                                   peer_ips):
                    if cls.name not in wanted:
                        continue
                    p = cls(ip, workdir / cls.name, cgroups.make(f"srv-{cls.name}"), up_ip,
                            upstreams.pki, token)
                    stack.callback(p.close)
                    p.start()
                    all_peers[cls.name] = p
            bench = https.Bench({"settings": s, "workdir": workdir, "peers": all_peers,
                                 "client_cg": cgroups.make("client"),
                                 "upstream_cg": cgroups.root / "srv-upstream",
                                 "sluice_argv": lambda a: in_sandbox(box, resolv, a),
                                 "sluice_cg": box,
                                 "token": token})
            names_ = [p for p in all_peers if p in wanted or p in ("direct", "sluice")]
            result["injection"] = https.check_injection(bench, names_, check_log)
            log(f"# injection seen upstream: {result['injection']}")
            if "https" in which:
                parts = os.environ.get("BENCH_HTTPS", "keepalive,fixed_rate,newconn")

                def do_https():
                    res = {"settings": {"conns": s.conns, "seconds": s.http_seconds,
                                        "rounds": s.http_rounds,
                                        "newconn_conns": s.newconn_conns,
                                        "rate_seconds": s.rate_seconds}}
                    # fixed_rate runs at a share of the keep-alive saturation it measures
                    if "keepalive" in parts or "fixed_rate" in parts:
                        ka = res["keepalive"] = bench.keepalive(names_)
                    if "fixed_rate" in parts:
                        res["fixed_rate"] = bench.fixed_rate(names_, ka)
                    if "newconn" in parts:
                        res["newconn"] = bench.newconn(names_)
                    return res
                result["https"] = section("https", do_https)

            if "h2" in which:
                result["h2"] = section("h2", lambda: bench.h2(
                    [p for p in ("direct", "sluice", "nginx") if p in names_]))

            result["workers"] = section("workers", lambda: workers.bench_workers(
                s, cgroups, workdir, resolv, extra))

            def do_profile():
                prof = {}
                for peer, pid in (("sluice", daemon.proc.pid),
                                  ("nginx", all_peers["nginx"].pids()[0])):
                    cases = (("1k", False), ("64k", False), ("1k", True))
                    if os.environ.get("BENCH_PROFILE") == "newconn":
                        cases = (("1k", True),)
                    for size, close in cases:
                        label = f"{peer}-{size}" + ("-newconn" if close else "")
                        prof[label] = https.profile(bench, peer, pid, size,
                                                    5 if not s.smoke else 1,
                                                    out / f"profile-{label}.txt", close)
                return prof
            result["profile"] = section("profile", do_profile)
            cafiles = {"direct": upstreams.pki.ca_pem, "sluice": ca}
            tr = section("transfer", lambda: bench.transfer(["direct", "sluice"], cafiles))
            if tr:
                tr["bytes"] = s.transfer_bytes
                result["transfer"] = tr
            result["splice"] = section("splice", lambda: splice.bench_splice(
                s, daemon, cgroups, workdir, resolv, upstreams.pki.ca_pem, sluiced_cg))
        result["mint"] = section("mint", lambda: bench_mint(s))

    result = {k: v for k, v in result.items() if v is not None}
    result["load_after"] = busy_others(os.getpgid(0))
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    result["targets"] = report.targets(result)
    write_json(out / "latest.json", result)
    (out / "latest.md").write_text(report.markdown(result))
    made = report.plots(result, out)
    print(report.markdown(result))
    log(f"bench: wrote {out / 'latest.json'}, {out / 'latest.md'}, "
        f"{', '.join(p.name for p in made)} in {result['duration_s']:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench: {e}")
