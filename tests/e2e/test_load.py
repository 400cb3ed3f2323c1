# SPDX-License-Identifier: MIT
"""Load, end to end, with sluiced's memory and descriptors measured: 1,000 sandboxes added and
removed, 10,000 concurrent idle TLS connections to the proxy opened and closed, then sustained
keep-alive request load (wrk) through the proxy to nginx. Memory must stay bounded under the
load and come back when the sandboxes and connections go; no descriptor may leak.

Bounded to about a minute. SLUICE_LOAD_LONG=1 runs the sustained load for 5 minutes
(SLUICE_LOAD_SECONDS overrides). Run with -s to see the figures (the README's come from here)."""
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from conftest import IN_SANDBOX, PY, SAN, probe, run_in, write_policy

LONG = os.environ.get("SLUICE_LOAD_LONG", "") not in ("", "0")
SUSTAIN_S = int(os.environ.get("SLUICE_LOAD_SECONDS") or (300 if LONG else 20))
# Under ASan a tenth, for leaks and errors: its allocator (quarantine, shadow memory) makes the
# memory figures meaningless and every operation slower.
N_SANDBOXES = 100 if SAN else 1000
N_CONNS = 1000 if SAN else 10000
CONNS = str(Path(__file__).with_name("conns.py"))
MIB = 1 << 20

POLICY = 'return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }'


def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(d, seconds=1.5):
    """Lets the loop finish closing what went away (sweeps run every 250 ms to 1 s)."""
    time.sleep(seconds)
    return rss(d.proc.pid), nfds(d.proc.pid)


def settle_memory(d, bound, timeout=15):
    """sluiced's RSS once it is under bound, or after timeout: freed memory goes back to the
    system at sluiced's next heap trim (every 10 s)."""
    deadline = time.monotonic() + timeout
    while rss(d.proc.pid) > bound and time.monotonic() < deadline:
        time.sleep(0.5)
    return rss(d.proc.pid)


class Sampler:
    """sluiced's RSS every 0.5 s while a phase runs."""

    def __init__(self, pid):
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        t0 = time.monotonic()
        while not self.stop.wait(0.5):
            self.samples.append((time.monotonic() - t0, rss(self.pid)))

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        return self.samples


def add_sandboxes(d, parent, n):
    for i in range(n):
        cg = parent / f"s{i}"
        cg.mkdir(exist_ok=True)
        status, body = d.api("POST", "/v1/sandboxes",
                             {"name": f"many{i}", "cgroup": str(cg), "policy": POLICY})
        assert status == 201, body


def test_sandboxes_connections_and_sustained_load(fresh_daemon, cgroups, workdir, upstreams):
    d = fresh_daemon
    d.extra += ["--http-max-conns", str(N_CONNS + 100),
                "--http-max-conns-total", str(N_CONNS + 100),
                "--http-header-timeout", "300", "--http-idle-timeout", "300"]
    d.start()
    pid = d.proc.pid
    fig = {}
    cg = cgroups.make("load")
    d.add("load", cg, write_policy(workdir, "load", POLICY))
    ca = Path(workdir) / "load-ca.pem"
    ca.write_text(d.cli("ca", "load").stdout)
    # Warm: the name resolved (kernel entry), the leaf minted, TLS contexts in use.
    assert probe(cg, [{"op": "resolve", "name": "api.test", "family": 4}],
                 workdir) == [["127.0.0.20"]]
    r = run_in(cg, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                    str(ca), "https://api.test/bytes/10"], workdir)
    assert r.stdout == "200", r.stderr
    base_rss, base_fds = settle(d)
    fig["baseline"] = (base_rss, base_fds)

    # 1,000 sandboxes (ids 1..1023: with "load", 1,001 here).
    many = cgroups.make("load-many")
    t0 = time.monotonic()
    add_sandboxes(d, many, N_SANDBOXES)
    fig["add_s"] = time.monotonic() - t0
    sb_rss, sb_fds = settle(d)
    fig["per_sandbox"] = ((sb_rss - base_rss) / N_SANDBOXES, (sb_fds - base_fds) / N_SANDBOXES)
    status, body = d.api("GET", "/v1/sandboxes")
    assert len(body["sandboxes"]) == N_SANDBOXES + 1

    # 10,000 concurrent idle TLS connections, with the 1,000 sandboxes still there.
    holder = subprocess.Popen(
        [IN_SANDBOX, str(cg), str(Path(workdir) / "resolv.conf"), PY, CONNS,
         json.dumps({"addr": "127.0.0.20", "port": 443, "count": N_CONNS, "tls": True,
                     "name": "api.test", "ca": str(ca), "parallel": 128})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line, holder.stderr.read()
        opened = json.loads(line)
        assert opened["open"] == N_CONNS, opened
        time.sleep(1)
        c_rss, c_fds = rss(pid), nfds(pid)
        m = d.metrics()
        assert m['sluice_http_connections_active{sandbox="load"}'] == N_CONNS
        fig["conns_open_s"] = opened["seconds"]
        fig["per_conn"] = ((c_rss - sb_rss) / N_CONNS, (c_fds - sb_fds) / N_CONNS)
        holder.stdin.close()
        assert holder.stdout.readline().strip() == "closed"
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            d.metrics()['sluice_http_connections_active{sandbox="load"}']:
        time.sleep(0.2)
    after_rss, after_fds = settle(d)
    assert d.metrics()['sluice_http_connections_active{sandbox="load"}'] == 0
    assert after_fds <= sb_fds + 2, (sb_fds, after_fds)  # every connection's descriptor back
    if not SAN:  # the memory of the connections goes back
        after_rss = settle_memory(d, sb_rss + 0.1 * (c_rss - sb_rss))
        assert after_rss <= sb_rss + 0.1 * (c_rss - sb_rss), (sb_rss, c_rss, after_rss)
    fig["after_conns"] = (after_rss, after_fds)

    # Sustained keep-alive load through the proxy to nginx.
    sampler = Sampler(pid)
    try:
        r = run_in(cg, ["wrk", "-t2", "-c32", f"-d{SUSTAIN_S}s", "--timeout", "5s",
                        "https://api.test/bytes/1024"], workdir, timeout=SUSTAIN_S + 60)
    finally:
        samples = sampler.close()
    assert r.returncode == 0, r.stderr
    reqs = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    assert "Non-2xx" not in r.stdout and "Socket errors" not in r.stdout, r.stdout
    half = [s for t, s in samples if t >= SUSTAIN_S / 2]
    first = [s for t, s in samples if 2 <= t < SUSTAIN_S / 2]
    fig["load"] = (reqs, reqs / SUSTAIN_S, max(first), max(half), samples[-1][1])
    # Bounded: no growth from the first half of the run to the second.
    assert SAN or max(half) <= max(first) + 8 * MIB, (max(first), max(half))
    load_rss, load_fds = settle(d, 3)
    assert load_fds <= after_fds + 40, (after_fds, load_fds)  # the idle upstream pool at most

    # The 1,000 sandboxes go: descriptors back to the baseline, memory near it.
    for i in range(N_SANDBOXES):
        status, body = d.api("DELETE", f"/v1/sandboxes/many{i}")
        assert status == 200, body
    end_rss, end_fds = settle(d)
    if not SAN:
        end_rss = settle_memory(d, base_rss + 16 * MIB)
    fig["end"] = (end_rss, end_fds)
    print_figures(fig)
    assert end_fds <= base_fds + 40, (base_fds, end_fds)
    assert SAN or end_rss <= base_rss + 16 * MIB, fig
    assert d.proc.poll() is None


def print_figures(f):
    b_rss, b_fds = f["baseline"]
    print(f"\nsluiced baseline: RSS {b_rss / MIB:.1f} MiB, {b_fds} fds")
    print(f"{N_SANDBOXES} sandboxes added in {f['add_s']:.1f} s: "
          f"{f['per_sandbox'][0] / 1024:.1f} KiB and {f['per_sandbox'][1]:.1f} fds each")
    print(f"{N_CONNS} idle TLS connections opened in {f['conns_open_s']:.1f} s: "
          f"{f['per_conn'][0]:.0f} bytes and {f['per_conn'][1]:.2f} fds each")
    print(f"after they closed: RSS {f['after_conns'][0] / MIB:.1f} MiB, "
          f"{f['after_conns'][1]} fds")
    reqs, rate, first, second, last = f["load"]
    print(f"sustained load {SUSTAIN_S} s: {reqs} requests ({rate:.0f}/s); RSS max "
          f"{first / MIB:.1f} MiB (first half), {second / MIB:.1f} MiB (second half), "
          f"{last / MIB:.1f} MiB at the end")
    print(f"sandboxes removed: RSS {f['end'][0] / MIB:.1f} MiB, {f['end'][1]} fds")
