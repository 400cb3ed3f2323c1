# SPDX-License-Identifier: MIT
"""DNS: the bench's own dnsmasq (the real upstream resolver) and the DNS benchmarks.

    latency     one query at a time for one allowed name: dnsmasq directly vs through sluice
    throughput  32 queries in flight, same name
    cold names  every query for a different allowed name (N of them, from dnsmasq's
                --addn-hosts file): through sluice each answer installs a kernel entry before
                it is released; this is the cost of that, against dnsmasq answering directly
"""
import subprocess
import time
from pathlib import Path

from common import BUILD, CLIENT_CPU, UPSTREAM_CPU, BenchError, log, median, run, taskset
from conftest import free_udp_tcp_port  # the e2e suite's (common.py puts it on the path)

MANY_SUFFIX = "many.test"


def many_addr(i):
    """The address of the i-th name: 127.88.0.0/16, one /32 each."""
    return f"127.88.{(i >> 8) & 255}.{i & 255}"


class BenchDnsmasq:
    """dnsmasq on 127.0.0.1:<free port>, answering the bench's names from its configuration
    and N generated names from an addn-hosts file, with a TTL long enough to outlive the run."""

    def __init__(self, dir, records, nnames):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "dnsmasq.log"
        self.proc = None
        self.names_file = self.dir / "names"
        hosts = self.dir / "many.hosts"
        names = [f"n{i:05d}.{MANY_SUFFIX}" for i in range(nnames)]
        hosts.write_text("".join(f"{many_addr(i)} {n}\n" for i, n in enumerate(names)))
        self.names_file.write_text("".join(n + "\n" for n in names))
        self.names = names
        self.hosts = hosts
        for attempt in range(5):  # the port can be taken between our probe and dnsmasq's bind
            self.port = free_udp_tcp_port()
            if self._start(records):
                return
        raise BenchError(f"dnsmasq did not start: {self.err}")

    def _start(self, records):
        hosts = self.hosts
        self.log.unlink(missing_ok=True)
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(f"""port={self.port}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
addn-hosts={hosts}
local-ttl=3600
cache-size=20000
log-facility={self.log}
{records}
""")
        self.proc = subprocess.Popen([*taskset(UPSTREAM_CPU), "dnsmasq", "-k", "-C", str(conf),
                                      "-u", "root", f"--pid-file={self.dir / 'pid'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.log.exists() and "read " + str(hosts) in self.log.read_text():
                return True
            if self.proc.poll() is not None:
                self.err = self.proc.stderr.read().decode().strip()
                return False
            time.sleep(0.05)
        self.stop()
        self.err = "not ready after 10 s"
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def dns_cost(argv_of, server, port, name, window, count):
    out = run(argv_of([*taskset(CLIENT_CPU), str(BUILD / "bench" / "bench_dns"), server,
                       str(port), name, str(count), str(window)]), 120).stdout
    qps, p50, p99 = map(float, out.split())
    return {"qps": qps, "p50_us": p50, "p99_us": p99}


def bench_dns(s, dnsmasq, plain_argv, box_argv, name="allowed.test"):
    """plain_argv/box_argv: argv -> argv running outside / inside the DNS sandbox."""
    rows = {}
    for label, window, count in (("latency", 1, s.dns_queries // 2),
                                 ("throughput", 32, s.dns_queries)):
        direct, sluice = [], []
        for _ in range(max(2, s.rounds // 2)):
            direct.append(dns_cost(plain_argv, "127.0.0.1", dnsmasq.port, name, window, count))
            # 127.0.0.153: nothing listens there; the kernel sends it to sluice.
            sluice.append(dns_cost(box_argv, "127.0.0.153", 53, name, window, count))
        rows[label] = {
            "dnsmasq": {k: median([x[k] for x in direct]) for k in direct[0]},
            "sluice": {k: median([x[k] for x in sluice]) for k in sluice[0]},
            "ratio_qps": median([b["qps"] / a["qps"] for a, b in zip(direct, sluice)]),
            "window": window, "queries": count, "rounds": len(direct),
        }
        d, v = rows[label]["dnsmasq"], rows[label]["sluice"]
        log(f"  dns {label}: dnsmasq {d['qps']:.0f} q/s p50 {d['p50_us']:.0f} us; sluice "
            f"{v['qps']:.0f} q/s p50 {v['p50_us']:.0f} us")
    return rows


COLD_ROUNDS = 5  # of distinct names each (with 1,000 names or more)


def bench_cold_names(dnsmasq, plain_argv, box_argv):
    """Every name once, 32 in flight: through sluice, each answer is a new kernel entry. The
    names are split into rounds that alternate between dnsmasq directly and sluice (each round
    new names for sluice; dnsmasq answers its hosts file alike), and the ratio is the median of
    the rounds' ratios: dnsmasq's own rate moves between runs on this VM (58k to 150k q/s),
    and one pair of runs took whatever the machine did then."""
    n = len(dnsmasq.names)
    rounds = COLD_ROUNDS if n >= 1000 else 1
    per = n // rounds
    direct, through, secs = [], [], 0.0
    for r in range(rounds):
        chunk = dnsmasq.names[r * per:(r + 1) * per if r < rounds - 1 else n]
        f = dnsmasq.dir / f"names-{r}"
        f.write_text("".join(x + "\n" for x in chunk))
        direct.append(dns_cost(plain_argv, "127.0.0.1", dnsmasq.port, f"@{f}", 32, len(chunk)))
        t = time.monotonic()
        through.append(dns_cost(box_argv, "127.0.0.153", 53, f"@{f}", 32, len(chunk)))
        secs += time.monotonic() - t
    d = {k: median([x[k] for x in direct]) for k in direct[0]}
    v = {k: median([x[k] for x in through]) for k in through[0]}
    ratios = [b["qps"] / a["qps"] for a, b in zip(direct, through)]
    log(f"  {n} cold names in {rounds} rounds: dnsmasq {d['qps']:.0f} q/s, sluice "
        f"{v['qps']:.0f} q/s (medians), ratio {median(ratios):.2f} "
        f"({', '.join(f'{x:.2f}' for x in ratios)})")
    return {"names": n, "rounds": rounds, "dnsmasq": d, "sluice": v,
            "ratio_qps": median(ratios), "ratios": ratios, "sluice_seconds": secs}
