# SPDX-License-Identifier: MIT
"""HTTP/2 towards the sandbox, end to end: curl (--http2 over TLS, --http2-prior-knowledge in
the clear), nghttp, a python3-h2 client offering only h2 and node's http2.connect each get
their answer over h2 from nginx through the same handler an HTTP/1.1 request meets (the
injected header reaches the upstream, the sandbox sees it masked); :authority must name the
TLS server name; bodies stream both ways in bounded memory; the known floods end the
attacker's connection while another sandbox's requests keep succeeding."""
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ENV_SECRETS, PY, SAN, run_in, write_policy
from upstreams import pattern, pattern_sha256

H2CLIENT = str(Path(__file__).with_name("h2client.py"))
ROOT = Path(__file__).resolve().parents[2]
SECRET = ENV_SECRETS["VCS_TOKEN"]
STARS = "*" * len(SECRET)

POLICY = """
return {
  egress = {
    intercept = { "api.test", "www.test" },
    private = { "127.0.0.0/8", "::1" },
  },
  outbound = function(req, env, ctx)
    if req.path:sub(1, 8) == "/headers" then
      req.headers:set("x-auth-token", env.VCS_TOKEN)
    end
    return fetch(req)
  end,
}
"""


def make_box(daemon, cgroups, workdir, name):
    policy = write_policy(workdir, name, POLICY)
    cg = cgroups.make(name)
    daemon.add(name, cg, policy)
    ca = Path(workdir) / f"{name}-ca.pem"
    r = daemon.cli("ca", name)
    assert r.returncode == 0
    ca.write_text(r.stdout)
    return cg, str(ca)


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, upstreams):
    yield make_box(daemon, cgroups, workdir, "h2")
    daemon.cli("sandbox", "rm", "h2")


@pytest.fixture(scope="module")
def other(daemon, cgroups, workdir, upstreams):
    yield make_box(daemon, cgroups, workdir, "h2other")
    daemon.cli("sandbox", "rm", "h2other")


def curl(box, workdir, *args, timeout=60):
    cg, ca = box
    return subprocess.run([str(ROOT / "tools/in-sandbox"), str(cg), str(Path(workdir) / "resolv.conf"),
                           "curl", "-sS", "--max-time", "30", "--cacert", ca, *args],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def h2client(box, workdir, **kw):
    cg, ca = box
    kw.setdefault("ca", ca)
    kw.setdefault("host", "api.test")
    r = run_in(cg, [PY, H2CLIENT, json.dumps(kw)], workdir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_curl_http2_over_tls(box, workdir):
    r = curl(box, workdir, "--http2", "-w", "\n%{http_version}", "https://api.test/bytes/100000")
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition(b"\n")
    assert version == b"2" and body == pattern(100000)


def test_curl_prior_knowledge_in_the_clear(box, workdir):
    r = curl(box, workdir, "--http2-prior-knowledge", "-w", "\n%{http_version}",
             "http://api.test/bytes/4096")
    assert r.returncode == 0, r.stderr
    body, _, version = r.stdout.rpartition(b"\n")
    assert version == b"2" and body == pattern(4096)
    # In the clear, each stream's :authority names the host, which must be intercepted.
    r = curl(box, workdir, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "Host: evil.test", "http://api.test/bytes/1")
    assert r.stdout == b"421", r.stderr


def test_injected_header_reaches_upstream_masked_for_the_sandbox(box, workdir, upstreams):
    mark = upstreams.nginx.mark()
    r = curl(box, workdir, "--http2", "https://api.test/headers")
    assert r.returncode == 0, r.stderr
    assert SECRET.encode() not in r.stdout
    seen = json.loads(r.stdout)["headers"]
    assert seen["x-auth-token"] == STARS
    logged = upstreams.nginx.wait_requests(1, since=mark, uri="/headers")
    assert logged and logged[-1]["h_x_auth_token"] == SECRET
    assert logged[-1]["alpn"] == "http/1.1"  # the upstream leg stays HTTP/1.1 today


def test_h2_only_alpn_client_and_concurrent_streams(box, workdir):
    res = h2client(box, workdir, mode="get", path="/bytes/70000", n=8)
    assert res["alpn"] == "h2"
    assert [r["status"] for r in res["responses"]] == [200] * 8, res
    assert all(r["body_len"] == 70000 for r in res["responses"]), res
    # pseudo-headers and headers arrive as HTTP/2 wants them: lower case, no Connection
    hdrs = res["responses"][0]["headers"]
    assert "connection" not in hdrs and "transfer-encoding" not in hdrs, hdrs


def test_authority_must_name_the_sni(box, workdir):
    res = h2client(box, workdir, mode="get", path="/bytes/1", authority="www.test")
    assert res["responses"][0]["status"] == 421, res
    r = curl(box, workdir, "--http2", "-o", "/dev/null", "-w", "%{http_code}", "-H",
             "Host: www.test", "https://api.test/bytes/1")
    assert r.stdout == b"421"


def test_nghttp(box, workdir):
    cg, ca = box
    r = run_in(cg, ["nghttp", "-n", "-s", "-v", "-m", "3",
                    "https://api.test/bytes/1000"], workdir)
    # nghttp does not verify the certificate: the point is its protocol handling.
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(":status: 200") == 3, r.stdout[-2000:]


def test_node_http2_connect(box, workdir):
    cg, ca = box
    script = f"""
const http2 = require('http2');
const fs = require('fs');
const s = http2.connect('https://api.test', {{ ca: fs.readFileSync({json.dumps(ca)}) }});
const r = s.request({{ ':path': '/headers' }});
let body = '';
r.setEncoding('utf8');
r.on('response', (h) => {{ body += h[':status'] + '\\n'; }});
r.on('data', (d) => {{ body += d; }});
r.on('end', () => {{ console.log(body); s.close(); }});
r.on('error', (e) => {{ console.error(e); process.exit(1); }});
r.end();
"""
    r = run_in(cg, ["node", "-e", script], workdir)
    assert r.returncode == 0, r.stderr
    status, _, body = r.stdout.partition("\n")
    assert status == "200"
    assert json.loads(body)["headers"]["x-auth-token"] == STARS


def sluiced_rss_hwm(daemon):
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmHWM")


def test_large_upload_and_download_stream_in_bounded_memory(box, workdir, daemon):
    size = 256 << 20
    cg, ca = box
    before = sluiced_rss_hwm(daemon)
    r = run_in(cg, ["sh", "-c", f"head -c {size} /dev/zero | curl -sS --http2 --max-time 120 "
                    f"--cacert {ca} -T - https://api.test/sha256"], workdir, timeout=180)
    assert r.returncode == 0, r.stderr
    h = hashlib.sha256()
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(zero)
    assert json.loads(r.stdout) == {"length": size, "sha256": h.hexdigest()}
    r = run_in(cg, ["sh", "-c", f"curl -sS --http2 --max-time 120 --cacert {ca} "
                    f"https://api.test/bytes/{size} | sha256sum"], workdir, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == pattern_sha256(size)
    grown = sluiced_rss_hwm(daemon) - before
    assert SAN or grown < 32 << 20, f"sluiced's peak RSS grew by {grown >> 20} MiB"


@pytest.mark.parametrize("mode,count", [("rapid_reset", 2000), ("ping_flood", 20000),
                                        ("settings_flood", 20000), ("empty_data", 5000),
                                        ("continuation", 20000)])
def test_attack_ends_the_connection_others_go_on(box, other, workdir, mode, count):
    stop = threading.Event()
    ok, bad = [], []

    def victim():
        while not stop.is_set() and len(ok) + len(bad) < 200:
            r = curl(other, workdir, "--http2", "-o", "/dev/null", "-w", "%{http_code}",
                     "https://api.test/bytes/100")
            (ok if r.stdout == b"200" else bad).append(r.stdout + r.stderr)

    t = threading.Thread(target=victim)
    t.start()
    try:
        res = h2client(box, workdir, mode=mode, count=count)
    finally:
        time.sleep(0.5)
        stop.set()
        t.join(60)
    assert res["alpn"] == "h2"
    assert res["closed"] or res["goaway"] is not None, res
    assert res["sent"] <= count
    assert ok and not bad, bad[:3]
