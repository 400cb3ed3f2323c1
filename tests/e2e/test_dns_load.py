# SPDX-License-Identifier: MIT
"""The DNS listeners under a hostile sandbox, end to end: one sandbox streams length-prefixed
queries over TCP and never reads its answers (review F2, issue 14 item 1). Another sandbox's
DNS queries and proxied HTTPS requests, and the control API, keep answering fast meanwhile;
sluiced's memory stays bounded; the flooding client is cut."""
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path

from conftest import IN_SANDBOX, PY, SAN, SLOW, UnixHTTPConnection, write_policy

# Streams queries for a denied name over TCP port 53 (captured by the kernel) without ever
# reading, for at most argv[1] seconds; prints how it ended.
FLOOD = r"""
import json, socket, struct, sys, time
q = bytes.fromhex("abcd01000001000000000000") + b"\x04deny\x04test\x00\x00\x01\x00\x01"
chunk = (struct.pack("!H", len(q)) + q) * 2048
s = socket.create_connection(("127.0.0.153", 53), timeout=5)
s.settimeout(0.5)
t0, sent, how = time.time(), 0, "still open"
while time.time() < t0 + float(sys.argv[1]):
    try:
        sent += s.send(chunk)
    except (socket.timeout, BlockingIOError):
        continue
    except OSError as e:
        how = type(e).__name__
        break
print(json.dumps({"how": how, "after_s": time.time() - t0, "sent": sent}))
"""

# A well-behaved sandbox: a DNS query over UDP and an intercepted HTTPS request, in turns,
# each timed, for argv[2] seconds.
CALM = r"""
import http.client, json, socket, ssl, struct, sys, time, random
ctx = ssl.create_default_context(cafile=sys.argv[1])
end = time.time() + float(sys.argv[2])
dns, https = [], []
while time.time() < end:
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x03api\x04test\x00\x00\x01\x00\x01"
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    t0 = time.monotonic()
    try:
        u.sendto(q, ("127.0.0.153", 53))
        r = u.recv(2048)
        dns.append([time.monotonic() - t0, r[3] & 15])
    except OSError as e:
        dns.append([time.monotonic() - t0, type(e).__name__])
    u.close()
    t0 = time.monotonic()
    try:
        c = http.client.HTTPSConnection("api.test", 443, context=ctx, timeout=10)
        c.request("GET", "/bytes/64")
        r = c.getresponse()
        body = r.read()
        https.append([time.monotonic() - t0, r.status])
        c.close()
    except Exception as e:
        https.append([time.monotonic() - t0, type(e).__name__])
    time.sleep(0.02)
print(json.dumps({"dns": dns, "https": https}))
"""


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def sandbox_in(cg, workdir, argv, **kw):
    return subprocess.Popen([IN_SANDBOX, str(cg), str(Path(workdir) / "resolv.conf"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_dns_tcp_flood_leaves_other_sandboxes_and_the_api_alone(fresh_daemon, cgroups, workdir,
                                                               upstreams):
    d = fresh_daemon.start()
    flood_cg, calm_cg = cgroups.make("flood"), cgroups.make("calm")
    d.add("flood", flood_cg, write_policy(workdir, "flood", "return { egress = {} }"))
    d.add("calm", calm_cg, write_policy(workdir, "calm", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""))
    ca = Path(workdir) / "calm-ca.pem"
    ca.write_text(d.cli("ca", "calm").stdout)
    procs = []
    try:
        # Warm up: the leaf certificate minted, the address learned.
        warm = subprocess.run([IN_SANDBOX, str(calm_cg), str(Path(workdir) / "resolv.conf"),
                               PY, "-c", CALM, str(ca), "0.5"], capture_output=True, text=True,
                              timeout=60)
        assert warm.returncode == 0, warm.stderr
        rss0 = rss_kib(d.proc.pid)
        floods = [sandbox_in(flood_cg, workdir, [PY, "-c", FLOOD, "18"]) for _ in range(2)]
        procs += floods
        time.sleep(0.5)  # the flood is on before anything is measured
        calm = sandbox_in(calm_cg, workdir, [PY, "-c", CALM, str(ca), "6"])
        procs.append(calm)
        api, stop = [], threading.Event()

        def poll_api():
            while not stop.is_set():
                t0 = time.monotonic()
                conn = UnixHTTPConnection(d.socket, timeout=10)
                conn.request("GET", "/v1/sandboxes")
                r = conn.getresponse()
                r.read()
                conn.close()
                api.append([time.monotonic() - t0, r.status])
                time.sleep(0.05)

        poller = threading.Thread(target=poll_api, daemon=True)
        poller.start()
        out, err = calm.communicate(timeout=60)
        ls = d.cli("sandbox", "ls", timeout=10)
        stop.set()
        poller.join(timeout=15)
        rss1 = rss_kib(d.proc.pid)
        flood_out = [json.loads(f.communicate(timeout=40)[0]) for f in floods]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert calm.returncode == 0, err
    rows = json.loads(out)
    assert ls.returncode == 0 and "calm" in ls.stdout and "flood" in ls.stdout
    for kind, xs in (("dns", rows["dns"]), ("https", rows["https"]), ("api", api)):
        ok = [t for t, status in xs if status == (0 if kind == "dns" else 200)]
        print(f"{kind}: {len(xs)} during the flood, p50 {statistics.median(ok) * 1e3:.1f} ms, "
              f"p99 {p99(ok) * 1e3:.1f} ms, max {max(ok) * 1e3:.1f} ms")
        assert len(ok) == len(xs) and len(xs) >= 10, (kind, xs)
        # 50 ms is the goal; this shared 2-core machine gets some slack, never seconds.
        assert p99(ok) < 0.1 * SLOW, (kind, sorted(ok)[-5:])
    print(f"sluiced RSS {rss0} KiB before the flood, {rss1} KiB after; flood: {flood_out}")
    assert SAN or rss1 - rss0 < 16 * 1024  # under ASan freed memory waits in quarantine
    for f in flood_out:
        # Not reading its answers, the client is cut (after DNS_TCP_STALL_MS, 5 s).
        assert f["how"] in ("ConnectionResetError", "BrokenPipeError"), f
        assert f["after_s"] < 15, f
    pre = 'sluice_limits_reached_total{sandbox="flood",limit="dns_tcp_unread"}'
    assert d.metrics()[pre] == 2
    ev = [e for e in d.events("flood") if e.get("verdict") == "closed"]
    assert len(ev) == 2 and "does not read its answers" in ev[0]["reason"]
    d.cli("sandbox", "rm", "flood")
    d.cli("sandbox", "rm", "calm")
