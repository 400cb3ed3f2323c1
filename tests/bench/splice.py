# SPDX-License-Identifier: MIT
"""The splice section of `make bench`: a passthrough name checked by SNI (the connection goes
straight to the upstream and the kernel judges its ClientHello on the sandbox's own socket,
bpf/sni.h) against the same name as a plain address grant (`sni = false`: no check at all).
The name is historical: until the check moved into the kernel, a checked connection went to
sluiced's proxy, which spliced it to a second connection upstream. Same upstream (nginx with
the name's real certificate), same curl, rounds alternating between the two sandboxes:

    download   1 GiB (BENCH_TRANSFER_BYTES) over one connection: MB/s, and the ratio
               checked / plain (the issue's bar: >= 0.9)
    latency    connect to first byte: curl's time_starttransfer - time_namelookup for /1k on
               a new connection, median of BENCH_SPLICE_CONNS samples each; the difference
               checked - plain is what the check adds (the bar: <= 100 us)

sluiced's CPU (its cgroup's usage) during each download is reported too: the kernel carries
the bytes, so it stays near zero."""
import statistics
import time

from common import BenchError, cgroup_usage_us, in_sandbox, log, median, run
from peers import NAME

POLICY_CHECKED = ('return { egress = { allow = { "%s:443" }, private = { "127.0.0.0/8" } } }\n'
                  % NAME)
POLICY_PLAIN = ('return { egress = { allow = { { "%s:443", sni = false } }, '
                'private = { "127.0.0.0/8" } } }\n' % NAME)


def _curl(box, resolv, ca, path, fmt, timeout):
    argv = in_sandbox(box, resolv, ["curl", "-sS", "--fail", "--cacert", str(ca),
                                    "--max-time", str(timeout), "-o", "/dev/null", "-w", fmt,
                                    f"https://{NAME}{path}"])
    r = run(argv, timeout + 30)
    return r.stdout.split()


def bench_splice(s, daemon, cgroups, workdir, resolv, ca, sluiced_cg):
    boxes = {}
    for label, policy in (("checked", POLICY_CHECKED), ("plain", POLICY_PLAIN)):
        box = cgroups.make(f"splice-{label}")
        pf = workdir / f"splice-{label}.lua"
        pf.write_text(policy)
        daemon.add(f"splice-{label}", box, pf)
        boxes[label] = box
    n = s.transfer_bytes
    rounds = max(1, s.transfer_rounds)
    conns = 20 if s.smoke else 300
    out = {"bytes": n, "rounds": rounds, "latency_samples": conns}

    dl = {k: [] for k in boxes}
    cpu = {k: [] for k in boxes}
    log(f"  download {n >> 20} MiB, checked by SNI vs sni = false")
    for _ in range(rounds):
        for label, box in boxes.items():
            before = cgroup_usage_us(sluiced_cg)
            code, size, total = _curl(box, resolv, ca, "/transfer",
                                      "%{http_code} %{size_download} %{time_total}", 600)
            used = cgroup_usage_us(sluiced_cg) - before
            if code != "200" or int(float(size)) != n:
                raise BenchError(f"splice download ({label}): status {code}, {size} of {n} "
                                 "bytes")
            dl[label].append(n / float(total) / 1e6)
            cpu[label].append(used)
    out["download"] = {k: {"MBps": median(v), "sluiced_cpu_ms": median(cpu[k]) / 1000}
                       for k, v in dl.items()}
    out["download"]["ratio"] = median([c / p for c, p in zip(dl["checked"], dl["plain"])])
    log(f"    checked {out['download']['checked']['MBps']:8.0f} MB/s (sluiced "
        f"{out['download']['checked']['sluiced_cpu_ms']:.1f} ms CPU), plain "
        f"{out['download']['plain']['MBps']:8.0f} MB/s: ratio {out['download']['ratio']:.2f}")

    lat = {k: [] for k in boxes}
    log(f"  connect to first byte, {conns} new connections each")
    for _ in range(conns):
        for label, box in boxes.items():
            code, t0, t1 = _curl(box, resolv, ca, "/1k",
                                 "%{http_code} %{time_namelookup} %{time_starttransfer}", 30)
            if code != "200":
                raise BenchError(f"splice latency ({label}): status {code}")
            lat[label].append((float(t1) - float(t0)) * 1e6)
    out["latency_us"] = {k: {"p50": median(v), "p90": statistics.quantiles(v, n=10)[-1]
                             if len(v) >= 10 else max(v)} for k, v in lat.items()}
    out["latency_us"]["added_p50"] = (out["latency_us"]["checked"]["p50"] -
                                      out["latency_us"]["plain"]["p50"])
    log(f"    checked p50 {out['latency_us']['checked']['p50']:.0f} us, plain p50 "
        f"{out['latency_us']['plain']['p50']:.0f} us: added {out['latency_us']['added_p50']:.0f}"
        " us")
    for label in boxes:
        daemon.cli("sandbox", "rm", f"splice-{label}")
    time.sleep(0)
    return out
