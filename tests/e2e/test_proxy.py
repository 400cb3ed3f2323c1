# SPDX-License-Identifier: MIT
"""The intercepting proxy, end to end: nginx is the real HTTPS upstream (test CA given to
sluiced as --upstream-ca), dnsmasq resolves the names, curl inside the sandbox trusts only the
sandbox's CA (from `sluice ca`). Every allowed case has its denied twin."""
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, SAN, probe, proxied_records, run_in, write_policy
from upstreams import pattern, pattern_sha256

WSCLIENT = str(Path(__file__).with_name("wsclient.py"))
TLSRESUME = str(Path(__file__).with_name("tlsresume.py"))


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, upstreams):
    policy = write_policy(workdir, "proxy", """
return {
  egress = {
    intercept = { "api.test", "www.test", "ws.test", "v6.test", "wrongname.test",
                  "untrusted.test", "silent.test" },
    private = { "127.0.0.0/8", "::1" },
  },
}
""")
    cg = cgroups.make("proxy")
    daemon.add("proxy", cg, policy)
    ca = Path(workdir) / "proxy-ca.pem"
    r = daemon.cli("ca", "proxy")
    assert r.returncode == 0 and r.stdout.startswith("-----BEGIN CERTIFICATE-----")
    ca.write_text(r.stdout)
    yield cg, str(ca)
    daemon.cli("sandbox", "rm", "proxy")


def curl(box, workdir, *args, timeout=60):
    cg, ca = box
    return run_in(cg, ["curl", "-sS", "--max-time", "30", "--cacert", ca, *args], workdir,
                  timeout=timeout)


def curl_bytes(box, workdir, *args):
    cg, ca = box
    r = subprocess.run(["tools/in-sandbox", str(cg), str(Path(workdir) / "resolv.conf"), "curl",
                        "-sS", "--max-time", "30", "--cacert", ca, *args],
                       capture_output=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    return r


def test_get_through_the_proxy(box, workdir, upstreams, daemon):
    r = curl_bytes(box, workdir, "https://api.test/bytes/100000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == pattern(100000)


# In a sandbox: one request with "Connection: close" on a TLS connection that reports an end
# without close_notify (suppress_ragged_eofs=False), read to the end. Prints the response's
# length and SHA-256, and how the connection ended.
CLOSE_CLIENT = r"""
import hashlib, json, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("api.test", 443), timeout=20),
                    server_hostname="api.test", suppress_ragged_eofs=False)
s.sendall(sys.argv[2].encode())
data, end = b"", "close_notify"
while True:
    try:
        b = s.recv(65536)
    except ssl.SSLEOFError:
        end = "eof without close_notify"
        break
    except ConnectionResetError:
        end = "reset"
        break
    if not b:
        break
    data += b
head, _, body = data.partition(b"\r\n\r\n")
print(json.dumps({"status": head.split(b" ")[1].decode() if head else "",
                  "length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                  "end": end}))
"""


def test_a_client_that_asks_to_close_gets_the_whole_answer_and_a_clean_end(box, workdir):
    """After a request sent whole with "Connection: close", nothing more is expected from the
    client: sluiced closes at once, without draining (as nginx does), and the client still
    reads the whole answer and its close_notify. A request whose body was refused is still
    drained (test_refused_requests); here a bodiless GET and a POST read whole."""
    cg, ca = box
    for request in ("GET /bytes/300000 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
                    "POST /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n"
                    "Content-Length: 5\r\n\r\nhello"):
        r = run_in(cg, [PY, "-c", CLOSE_CLIENT, ca, request], workdir)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        want = pattern(300000) if request.startswith("GET") else b"hello"
        assert got == {"status": "200", "length": len(want),
                       "sha256": hashlib.sha256(want).hexdigest(), "end": "close_notify"}, got


RAWHTTP = str(Path(__file__).with_name("rawhttp.py"))


def raw(box, workdir, **kw):
    cg, ca = box
    kw.setdefault("ca", ca)
    r = run_in(cg, [PY, RAWHTTP, json.dumps(kw)], workdir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def req(host, path="/bytes/10", method="GET", extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


def test_keepalive_pipelining_and_upstream_reuse(box, workdir, upstreams, daemon):
    nginx = upstreams.nginx
    mark = nginx.mark()
    res = raw(box, workdir, connect="api.test", sni="api.test", stop_after=3,
              send=[req("api.test", "/bytes/5") + req("api.test", "/bytes/6") +
                    req("api.test", "/bytes/7")])
    assert res["statuses"] == [200, 200, 200], (res, daemon.events("proxy"))
    # in order, each response its own body
    bodies = res["text"].split("HTTP/1.1 200")[1:]
    assert [b.count("Content-Length: " + str(n)) for b, n in zip(bodies, (5, 6, 7))] == [1, 1, 1]
    # (the previous test's request may be logged after the mark: nginx logs it when done)
    ours = ("/bytes/5", "/bytes/6", "/bytes/7")
    seen = nginx.wait_requests(3, since=mark, uri=lambda u: u in ours)
    assert [r["uri"] for r in seen] == list(ours)
    assert len({r["connection"] for r in seen}) == 1  # one upstream connection for all three


def direct(upstreams, *args):
    """The same fetch straight to nginx, outside any sandbox (the reference bytes)."""
    return subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert",
                           str(upstreams.pki.ca_pem), "--resolve", "api.test:443:127.0.0.20",
                           "--resolve", "v6.test:443:[::1]", *args], capture_output=True,
                          timeout=60)


def test_responses_identical_to_a_direct_fetch(box, workdir, upstreams):
    for url in ("https://api.test/bytes/1", "https://api.test/bytes/3000000",
                "https://api.test/chunked/1000000", "https://api.test/headers-missing",
                "https://v6.test/bytes/65537"):
        via = curl_bytes(box, workdir, "-i", url)
        ref = direct(upstreams, "-i", url)
        assert via.returncode == 0 and ref.returncode == 0, (url, via.stderr, ref.stderr)
        # Same status and body; the framing may differ (the proxy re-chunks what it streams).
        vs, vb = via.stdout.split(b"\r\n\r\n", 1)
        rs, rb = ref.stdout.split(b"\r\n\r\n", 1)
        # (curl speaks HTTP/2 to the proxy and HTTP/1.1 to nginx: the status, not the line)
        assert vs.split(b"\r\n")[0].split()[1] == rs.split(b"\r\n")[0].split()[1], url
        assert vb == rb, url


def test_post_small_chunked_and_expect_continue(box, workdir, upstreams):
    r = curl(box, workdir, "-d", "hello=world", "https://api.test/echo")
    assert r.returncode == 0 and r.stdout == "hello=world", r.stderr
    body = Path(workdir) / "chunked-body.txt"
    body.write_text("x" * 100000)
    r = curl(box, workdir, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
             "https://api.test/echo")
    assert r.returncode == 0 and r.stdout == "x" * 100000, r.stderr
    r = curl(box, workdir, "-H", "Expect: 100-continue", "--data-binary", f"@{body}",
             "https://api.test/sha256")
    assert json.loads(r.stdout) == {"length": 100000,
                                    "sha256": hashlib.sha256(b"x" * 100000).hexdigest()}


def sluiced_rss_hwm(daemon):
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_large_upload_and_download_stream(box, workdir, upstreams, daemon):
    """512 MiB each way through the proxy; sluiced's peak memory must not grow with it."""
    size = 512 << 20
    before = sluiced_rss_hwm(daemon)
    cg, ca = box
    r = run_in(cg, ["sh", "-c", f"head -c {size} /dev/zero | curl -sS --max-time 120 "
                    f"--cacert {ca} -T - https://api.test/sha256"], workdir, timeout=180)
    assert r.returncode == 0, r.stderr
    h = hashlib.sha256()
    zero = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(zero)
    assert json.loads(r.stdout) == {"length": size, "sha256": h.hexdigest()}
    r = run_in(cg, ["sh", "-c", f"curl -sS --max-time 120 --cacert {ca} "
                    f"https://api.test/bytes/{size} | sha256sum"], workdir, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == pattern_sha256(size)
    grown = sluiced_rss_hwm(daemon) - before
    # Under ASan, freed memory waits in its quarantine: the bound holds in plain builds.
    assert SAN or grown < 32 << 20, f"sluiced's peak RSS grew by {grown >> 20} MiB"


def test_keepalive_reuse_across_clients(box, workdir, upstreams):
    nginx = upstreams.nginx
    mark = nginx.mark()
    r = curl(box, workdir, "-o", "/dev/null", "-o", "/dev/null", "https://api.test/bytes/10",
             "https://api.test/bytes/20")
    assert r.returncode == 0, r.stderr
    r = curl(box, workdir, "-o", "/dev/null", "https://api.test/bytes/30")
    assert r.returncode == 0, r.stderr
    seen = nginx.wait_requests(3, since=mark, uri=lambda u: u.startswith("/bytes/"))
    assert [e["uri"] for e in seen] == ["/bytes/10", "/bytes/20", "/bytes/30"]
    # Three requests from two client connections, one upstream connection (pooled).
    assert len({e["connection"] for e in seen}) == 1


def test_plain_http_on_port_80(box, workdir, upstreams):
    r = curl_bytes(box, workdir, "http://api.test/bytes/4096")
    assert r.returncode == 0 and r.stdout == pattern(4096), r.stderr
    # Plain HTTP still names its host: one the policy does not intercept is refused.
    r = curl(box, workdir, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: evil.test",
             "http://api.test/bytes/1")
    assert r.stdout == "421"


def test_ipv6_upstream(box, workdir, upstreams):
    nginx = upstreams.nginx
    mark = nginx.mark()
    r = curl_bytes(box, workdir, "https://v6.test/bytes/777")
    assert r.returncode == 0 and r.stdout == pattern(777), r.stderr
    seen = nginx.wait_requests(1, since=mark, host="v6.test")
    assert seen and seen[0]["server_addr"] == "::1"


def test_sni_host_mismatch_is_421(box, workdir):
    r = curl(box, workdir, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: www.test",
             "https://api.test/bytes/1")
    assert r.stdout == "421"
    res = raw(box, workdir, connect="api.test", sni="api.test",
              send=["GET https://www.test/bytes/1 HTTP/1.1\r\nHost: api.test\r\n\r\n"])
    assert res["statuses"] == [421]
    # The matching absolute form is served.
    res = raw(box, workdir, connect="api.test", sni="api.test", stop_after=1,
              send=["GET https://api.test/bytes/1 HTTP/1.1\r\nHost: api.test\r\n\r\n"])
    assert res["statuses"] == [200]


REFUSED = [
    ("connect", "CONNECT www.test:443 HTTP/1.1\r\nHost: www.test:443\r\n\r\n", 405),
    ("trace", "TRACE / HTTP/1.1\r\nHost: api.test\r\n\r\n", 405),
    ("cl-te", "POST /echo HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\n"
              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-te", "POST /echo HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n"
              "Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400),
    ("bad-chunk", "POST /echo HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "zz\r\nab\r\n0\r\n\r\n", 400),
    ("obs-fold", "GET /bytes/1 HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r\n 2\r\n\r\n", 400),
    ("bare-lf", "GET /bytes/1 HTTP/1.1\nHost: api.test\n\n", 400),
    ("two-hosts", "GET /bytes/1 HTTP/1.1\r\nHost: api.test\r\nHost: www.test\r\n\r\n", 400),
    ("no-host", "GET /bytes/1 HTTP/1.1\r\n\r\n", 400),
    ("huge-header", "GET / HTTP/1.1\r\nHost: api.test\r\nX-Big: " + "a" * 70000 + "\r\n\r\n",
     431),
]


@pytest.mark.parametrize("name,request_text,status", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_requests(box, workdir, upstreams, daemon, name, request_text, status):
    mark = upstreams.nginx.mark()
    res = raw(box, workdir, connect="api.test", sni="api.test", send=[request_text])
    assert res["statuses"] == [status], res
    assert res["closed"]
    # Never reached the upstream.
    time.sleep(0.2)
    assert upstreams.nginx.requests_seen(since=mark) == []
    ev = [e for e in daemon.events("proxy") if e.get("type") == "http"][-1]
    assert ev["status"] == status and ev["verdict"] == "reject"


def test_upstream_certificate_failures_are_502(box, workdir, daemon):
    for host, why in (("wrongname.test", "hostname mismatch"),
                      ("untrusted.test", "unable to get local issuer certificate")):
        r = curl(box, workdir, "-w", "\n%{http_code}", f"https://{host}/bytes/1")
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "502", (host, r.stdout, r.stderr)
        assert "verification failed" in body and why in body
        ev = [e for e in daemon.events("proxy") if e.get("host") == host][-1]
        assert ev["status"] == 502 and ev["verdict"] == "error"


def test_sandbox_that_does_not_trust_its_ca_fails(box, workdir):
    cg, _ = box
    r = run_in(cg, ["curl", "-sS", "--max-time", "10", "https://api.test/bytes/1"], workdir)
    assert r.returncode == 60  # certificate problem: no silent downgrade
    # Nor does another sandbox's CA work.
    other = Path(workdir) / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null", "-subj",
                    "/CN=not sluice", "-days", "1", "-out", str(other)], check=True,
                   capture_output=True)
    r = run_in(cg, ["curl", "-sS", "--max-time", "10", "--cacert", str(other),
                    "https://api.test/bytes/1"], workdir)
    assert r.returncode == 60


def test_leaf_does_not_verify_under_another_sandboxs_ca(daemon, cgroups, workdir):
    cg = cgroups.make("proxy2")
    daemon.add("proxy2", cg, write_policy(workdir, "proxy2", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""))
    try:
        ca2 = Path(workdir) / "proxy2-ca.pem"
        ca2.write_text(daemon.cli("ca", "proxy2").stdout)
        assert ca2.read_text() != (Path(workdir) / "proxy-ca.pem").read_text()
        r = run_in(cg, ["curl", "-sS", "--max-time", "10", "--cacert",
                        str(Path(workdir) / "proxy-ca.pem"), "https://api.test/bytes/1"],
                   workdir)
        assert r.returncode == 60
        r = run_in(cg, ["curl", "-sS", "--max-time", "10", "--cacert", str(ca2), "-o",
                        "/dev/null", "https://api.test/bytes/1"], workdir)
        assert r.returncode == 0
    finally:
        daemon.cli("sandbox", "rm", "proxy2")


def resumed(daemon, name):
    show = json.loads(daemon.cli("sandbox", "show", name, "--json").stdout)
    return show["proxy"]["connections"]["tls_resumed"]


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
def test_tls_sessions_resume_in_their_own_sandbox_only(box, daemon, cgroups, workdir, tls12):
    """A client resumes its session through sluice (a ticket sealed with its sandbox's keys);
    the same client, moved into another sandbox, offers that ticket to the other sandbox's
    proxy and gets a full handshake, then resumes the session that one gave it."""
    cg, ca = box
    cg2 = cgroups.make("resume2")
    daemon.add("resume2", cg2, write_policy(workdir, "resume2", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""))
    try:
        ca2 = Path(workdir) / "resume2-ca.pem"
        ca2.write_text(daemon.cli("ca", "resume2").stdout)
        steps = ["fresh", "resume", "resume", {"cgroup": str(cg2)}, "resume", "resume"]
        before = [resumed(daemon, b) for b in ("proxy", "resume2")]
        r = run_in(cg, [PY, TLSRESUME, json.dumps({
            "host": "api.test", "path": "/bytes/10", "cafiles": [ca, str(ca2)],
            "steps": steps, "tls12": tls12})], workdir)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert [g["status"] for g in got] == [200] * 5, got
        assert {g["version"] for g in got} == {"TLSv1.2" if tls12 else "TLSv1.3"}
        assert [g["reused"] for g in got] == [False, True, True, False, True], got
        # sluiced counts them too (each resumption also renewed the ticket: the third
        # connection resumed with the second's)
        assert [resumed(daemon, b) - n for b, n in zip(("proxy", "resume2"), before)] == [2, 1]
        m = daemon.metrics()
        assert [m[f'sluice_tls_resumed_total{{sandbox="{b}"}}'] for b in ("proxy", "resume2")] \
            == [resumed(daemon, b) for b in ("proxy", "resume2")]
    finally:
        daemon.cli("sandbox", "rm", "resume2")


def test_direct_connections_to_the_proxy_port(box, daemon):
    cg, _ = box
    port = json.loads(daemon.cli("sandbox", "show", "proxy", "--json").stdout)["proxy"]["port"]
    # From the sandbox: denied by the kernel like any unlisted address.
    assert probe(cg, [{"op": "connect", "proto": "tcp", "host": "127.0.0.1", "port": port}],
                 Path(daemon.dir).parent) == ["EPERM"]
    # From outside (no kernel record): accepted, then closed without a byte.
    before = daemon.metrics()['sluice_http_connections_total{sandbox="proxy",outcome="unredirected"}']
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with our request unread: a reset, equally final
    after = daemon.metrics()['sluice_http_connections_total{sandbox="proxy",outcome="unredirected"}']
    assert after == before + 1


def test_host_not_in_policy_is_denied_in_the_kernel(box, workdir, upstreams):
    cg, ca = box
    mark = upstreams.nginx.mark()
    res = probe(cg, [{"op": "resolve", "name": "notintercepted.test"},
                     {"op": "connect", "proto": "tcp", "host": "127.0.0.21", "port": 443}],
                workdir)
    assert res == ["EAI_NONAME", "EPERM"]
    r = curl(box, workdir, "--resolve", "notintercepted.test:443:127.0.0.21",
             "https://notintercepted.test/")
    assert r.returncode == 7  # could not connect: the kernel said no
    assert upstreams.nginx.requests_seen(since=mark) == []


def test_getpeername_reports_the_original_destination(box, workdir):
    res = raw(box, workdir, connect="api.test", sni="api.test", stop_after=1,
              send=[req("api.test", "/bytes/1")])
    assert res["peer"] == ["127.0.0.20", 443]
    res = raw(box, workdir, connect="v6.test", sni="v6.test", stop_after=1,
              send=[req("v6.test", "/bytes/1")])
    assert res["peer"] == ["::1", 443]


NO_SNI = "ClientHello without SNI for an address of no single intercepted name"


def test_client_hello_without_sni(box, workdir, daemon):
    # 127.0.0.20 is the address of several intercepted names: no way to know which one. The
    # proxy refuses at the sniff, for that reason (not any failure: a crash would also close).
    # Both names resolve here first, whatever ran before: the address is theirs, not one's.
    cg, _ = box
    assert probe(cg, [{"op": "resolve", "name": "api.test"},
                      {"op": "resolve", "name": "www.test"}], workdir) == [["127.0.0.20"]] * 2
    refused = 'sluice_http_connections_total{sandbox="proxy",outcome="refused"}'
    before = daemon.metrics()[refused]
    seen = len([e for e in daemon.events("proxy") if e.get("reason") == NO_SNI])
    res = raw(box, workdir, connect="127.0.0.20", sni=None, send=[req("api.test")])
    assert res["error"] and res["statuses"] == [], res
    ev = [e for e in daemon.events("proxy") if e.get("reason") == NO_SNI]
    assert len(ev) == seen + 1, ev
    assert ev[-1]["verdict"] == "reject" and ev[-1]["comm"] == "python3"
    assert daemon.metrics()[refused] == before + 1
    # ::1 is v6.test's alone: served as v6.test.
    res = raw(box, workdir, connect="v6.test", sni=None, stop_after=1,
              send=[req("v6.test", "/bytes/3")])
    assert res["statuses"] == [200], res


def test_alpn_without_h2_or_http11_is_refused(box, workdir, daemon):
    # ALPN without h2 or http/1.1 cannot be served: the handshake ends with the
    # no_application_protocol alert (RFC 7301 section 3.2), and the proxy logs why. (h2 alone
    # is served: tests/e2e/test_h2.py.)
    failed = 'sluice_http_connections_total{sandbox="proxy",outcome="tls_failed"}'
    before = daemon.metrics()[failed]
    res = raw(box, workdir, connect="api.test", sni="api.test", alpn=["spdy/3.1"],
              send=[req("api.test")])
    assert res["statuses"] == [], res
    assert res["error"] and "no application protocol" in res["error"].lower(), res
    ev = [e for e in daemon.events("proxy") if e.get("host") == "api.test" and
          e.get("reason", "").startswith("client TLS handshake failed")]
    assert ev and "no application protocol" in ev[-1]["reason"].lower(), ev
    assert ev[-1]["verdict"] == "error" and ev[-1]["comm"] == "python3"
    assert daemon.metrics()[failed] == before + 1


def test_slow_request_head_is_408(box, workdir, upstreams):
    # The daemon under test has --http-header-timeout 2.
    res = raw(box, workdir, connect="api.test", sni="api.test", read_timeout=6,
              send=["GET /bytes/1 HTTP/1.1\r\nHo", 1.0, "st: api", 3.5, "\r\n\r\n"])
    assert res["statuses"] == [408], res


def test_websocket_echo(box, workdir, upstreams):
    cg, ca = box
    r = run_in(cg, [PY, WSCLIENT, "wss://ws.test/ws", ca, "hello through sluice"], workdir)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.strip() == "hello through sluice"


def test_one_event_per_request_without_header_values(box, workdir, daemon):
    r = curl(box, workdir, "-o", "/dev/null", "-H", "Authorization: Bearer sekrit-token",
             "https://api.test/bytes/123?token=sekrit-query")
    assert r.returncode == 0
    ev = [e for e in daemon.events("proxy") if e.get("path") == "/bytes/123"][-1]
    for k in ("sandbox", "pid", "comm", "method", "scheme", "host", "path", "status",
              "bytes_in", "bytes_out", "upstream_ms", "total_ms", "verdict"):
        assert k in ev, k
    assert ev["comm"] == "curl" and ev["method"] == "GET" and ev["scheme"] == "https"
    assert ev["status"] == 200 and ev["bytes_out"] == 123 and ev["verdict"] == "forward"
    text = daemon.cli("events", "--sandbox", "proxy").stdout
    assert "sekrit" not in text


def test_other_protocols_are_closed_and_logged(box, workdir, daemon):
    cg, _ = box
    script = ("import socket; s = socket.create_connection(('api.test', 443), timeout=5); "
              "s.sendall(b'\\x00\\x01SSH-2.0-x\\r\\n')\n"
              "try: print(repr(s.recv(100)))\n"
              "except ConnectionResetError: print('reset')")
    r = run_in(cg, [PY, "-c", script], workdir)
    assert r.returncode == 0 and r.stdout.strip() in ("b''", "reset"), (r.stdout, r.stderr)
    ev = [e for e in daemon.events("proxy") if e.get("reason") == "neither TLS nor HTTP/1.x"]
    assert ev and ev[-1]["comm"] == "python3"


def test_sockops_attached_only_with_intercept(daemon, box, cgroups, workdir):
    """The sockops program runs on every TCP connect of its cgroup: only sandboxes that
    intercept carry it."""
    from conftest import bpf_links_of

    def types(cg):
        return sorted(p["attach_type"] for p in bpf_links_of(cg))
    cg, _ = box
    assert "cgroup_sock_ops" in types(cg)
    plain = cgroups.make("nointercept")
    daemon.add("nointercept", plain, write_policy(workdir, "nointercept",
                                                  "return { egress = {} }"))
    try:
        assert "cgroup_sock_ops" not in types(plain) and "cgroup_inet4_connect" in types(plain)
    finally:
        daemon.cli("sandbox", "rm", "nointercept")


def test_ca_key_stays_private(daemon, box):
    state = Path(daemon.state) / "sandboxes" / "proxy.json"
    assert state.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in json.loads(state.read_text())["ca_key"]
    assert "PRIVATE KEY" not in daemon.read_log()
    assert "PRIVATE KEY" not in daemon.cli("ca", "proxy").stdout
    assert daemon.cli("ca", "ghost").returncode == 1


def test_alpn_on_both_legs(box, workdir, upstreams):
    mark = upstreams.nginx.mark()
    r = curl(box, workdir, "--http1.1", "-o", "/dev/null", "-w", "%{http_version}",
             "https://api.test/bytes/2")
    assert r.stdout == "1.1"
    # h2 when the client offers it (curl does by default), HTTP/1.1 upstream either way
    r = curl(box, workdir, "-o", "/dev/null", "-w", "%{http_version}", "https://api.test/bytes/2")
    assert r.stdout == "2"
    seen = upstreams.nginx.wait_requests(1, since=mark, uri="/bytes/2")
    assert seen and seen[-1]["alpn"] == "http/1.1"


def test_upstream_that_never_answers_is_504(box, workdir):
    """silent.test accepts TCP and never speaks TLS: the connect timeout (2 s here) ends it."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.22", 443))
        srv.listen(8)
        t0 = time.monotonic()
        r = curl(box, workdir, "-o", "/dev/null", "-w", "%{http_code}",
                 "https://silent.test/bytes/1")
        assert r.stdout == "504", (r.stdout, r.stderr)
        assert 1.5 < time.monotonic() - t0 < 10


def test_connection_limit_per_sandbox(fresh_daemon, cgroups, workdir, upstreams):
    d = fresh_daemon
    d.extra += ["--http-max-conns", "2"]
    d.start()
    cg = cgroups.make("limited")
    d.add("limited", cg, write_policy(workdir, "limited", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
"""))
    # Two idle connections hold the limit; a third is closed; after they go, it works again.
    script = f"""
import socket, time
held = [socket.create_connection(("api.test", 80), timeout=5) for _ in range(2)]
time.sleep(0.3)
s = socket.create_connection(("api.test", 80), timeout=5)
s.sendall(b"GET /bytes/1 HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n")
try:
    print("third:", repr(s.recv(100)[:12]))
except ConnectionResetError:
    print("third: reset")
for h in held:
    h.close()
time.sleep(0.3)
s = socket.create_connection(("api.test", 80), timeout=5)
s.sendall(b"GET /bytes/1 HTTP/1.1\\r\\nHost: api.test\\r\\nConnection: close\\r\\n\\r\\n")
print("fourth:", repr(s.recv(100)[:12]))
"""
    r = run_in(cg, [PY, "-c", script], workdir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] in ("third: b''", "third: reset"), lines
    assert lines[1] == "fourth: b'HTTP/1.1 200'", lines
    m = d.metrics()
    assert m['sluice_http_connections_total{sandbox="limited",outcome="refused"}'] == 1


def test_many_concurrent_connections_each_get_their_own_destination(box, workdir, daemon):
    """60 connections at once, each to its own path, half of them over IPv6: each gets its
    own record (destination, pid) and its own answer; no record is left in the kernel."""
    cg, ca = box
    script = f"""
import concurrent.futures, hashlib, http.client, ssl, sys
ctx = ssl.create_default_context(cafile={ca!r})
def one(i):
    host = "api.test" if i % 2 else "v6.test"
    c = http.client.HTTPSConnection(host, 443, context=ctx, timeout=20)
    c.request("GET", f"/bytes/{{1000 + i}}")
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, len(body), hashlib.sha256(body).hexdigest()
with concurrent.futures.ThreadPoolExecutor(60) as ex:
    for i, (status, n, h) in enumerate(ex.map(one, range(60))):
        print(i, status, n, h)
"""
    r = run_in(cg, [PY, "-c", script], workdir, timeout=120)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        i, status, n, h = line.split()
        assert (int(status), int(n)) == (200, 1000 + int(i))
        assert h == hashlib.sha256(pattern(1000 + int(i))).hexdigest()
    time.sleep(0.5)
    assert proxied_records(daemon.bpffs) == []
    evs = [e for e in daemon.events("proxy") if e.get("path", "").startswith("/bytes/1")
           and 1000 <= int(e["path"][7:]) < 1060]
    assert len({e["path"] for e in evs}) == 60 and all(e["comm"] == "python3" for e in evs)
