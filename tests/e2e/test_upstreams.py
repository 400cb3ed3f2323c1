# SPDX-License-Identifier: MIT
"""The proxy tests' upstreams (upstreams.py, wsclient.py) checked on their own, from outside any
sandbox: curl and wsclient.py, as plain processes, against nginx and the Python backend.

This module's nginx listens on free ports of 127.0.0.20 and [::1] rather than on 443/80, so it
never collides with a session fixture (or another run) holding those; test_default_listeners
checks the defaults when they are free."""
import hashlib
import http.client
import json
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from upstreams import (UPSTREAM_V4, UPSTREAM_V6, AddressBusy, Nginx, Upstreams, check_bindable,
                       free_port, iter_pattern, pattern, pattern_sha256)

WSCLIENT = str(Path(__file__).with_name("wsclient.py"))
PY = "/usr/bin/python3"


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    port = free_port((UPSTREAM_V4, UPSTREAM_V6))
    hport = free_port((UPSTREAM_V4,), avoid=(port,))
    u = Upstreams(tmp_path_factory.mktemp("upstreams") / "u",
                  https=[(UPSTREAM_V4, port), (UPSTREAM_V6, port)], http=[(UPSTREAM_V4, hport)])
    try:
        u.start()
        yield u
    finally:
        u.close()


def curl(up, *args, name="api.test", addr=UPSTREAM_V4, port=None, input=None, text=False):
    port = port or up.nginx.https_port
    a = f"[{addr}]" if ":" in addr else addr
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "20",
                           "--cacert", up.pki.ca_pem, "--resolve", f"{name}:{port}:{a}", *args],
                          capture_output=True, input=input, text=text, timeout=30)


def url(up, name, path, scheme="https"):
    return up.nginx.url(name, path, scheme)


def token():
    return uuid.uuid4().hex[:12]


def test_pattern_is_deterministic_and_prefix_stable():
    a = pattern(200_000)
    assert a == pattern(200_000) and len(a) == 200_000
    assert pattern(70_001) == a[:70_001]
    assert len(set(a[:4096])) > 200  # not a constant fill
    assert pattern_sha256(200_000) == hashlib.sha256(a).hexdigest()


@pytest.mark.parametrize("name,addr", [("api.test", UPSTREAM_V4), ("www.test", UPSTREAM_V4),
                                       ("v6.test", UPSTREAM_V6), ("api.test", UPSTREAM_V6)])
def test_bytes(up, name, addr):
    n = 300_007
    r = curl(up, "-w", "\n%{http_version} %{ssl_verify_result}",
             url(up, name, f"/bytes/{n}"), name=name, addr=addr)
    assert r.returncode == 0, r.stderr
    body, _, info = r.stdout.rpartition(b"\n")
    assert body == pattern(n)
    assert info == b"1.1 0"  # HTTP/1.1 (no h2 on these listeners), verified


def test_chunked(up):
    n = 200_000
    r = curl(up, "-D", "-", url(up, "api.test", f"/chunked/{n}"))
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-length" not in head.lower()
    assert body == pattern(n)


def test_echo(up):
    r = curl(up, "--data-binary", "hello, echo", "-H", "Content-Type: text/plain",
             url(up, "api.test", "/echo"))
    assert (r.returncode, r.stdout) == (0, b"hello, echo"), r.stderr
    body = pattern(100_000)
    r = curl(up, "-X", "PUT", "--data-binary", "@-", url(up, "api.test", "/echo"), input=body)
    assert (r.returncode, r.stdout) == (0, body), r.stderr
    # A chunked request body: nginx passes it on chunked (proxy_request_buffering off).
    t = token()
    r = curl(up, "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
             url(up, "api.test", f"/echo?{t}"), input=body)
    assert (r.returncode, r.stdout) == (0, body), r.stderr
    seen = up.backend.requests_for(f"/echo?{t}")
    assert [v for k, v in seen[0]["headers"] if k.lower() == "transfer-encoding"] == ["chunked"]


def test_sha256_of_50_mib_streamed(up):
    n = 50 << 20
    body = pattern(n)
    want = {"length": n, "sha256": hashlib.sha256(body).hexdigest()}
    # Content-Length (curl also sends Expect: 100-continue for bodies this big)...
    t = token()
    r = curl(up, "--data-binary", "@-", url(up, "api.test", f"/sha256?{t}"), input=body)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == want
    (e,) = up.nginx.wait_requests(1, uri=f"/sha256?{t}")
    assert e["h_content_length"] == str(n) and e["h_expect"] == "100-continue"
    # ...and chunked from a pipe (upload of unknown size).
    t = token()
    r = curl(up, "-X", "POST", "-T", "-", url(up, "api.test", f"/sha256?{t}"), input=body)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == want
    (e,) = up.nginx.wait_requests(1, uri=f"/sha256?{t}")
    assert e["h_transfer_encoding"] == "chunked" and e["request_length"] > n


def test_backend_streams_request_bodies(up):
    """256 MiB into /sha256 directly, chunked, while the peak RSS of this process (the
    backend's threads included) stays far below the body size."""
    n = 256 << 20
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM)
    conn = http.client.HTTPConnection("127.0.0.1", up.backend.port, timeout=60)
    conn.request("POST", "/sha256", body=iter_pattern(n))
    resp = conn.getresponse()
    got = json.loads(resp.read())
    conn.close()
    assert got == {"length": n, "sha256": pattern_sha256(n)}
    hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines()
               if l.startswith("VmHWM:"))
    assert hwm * 1024 < n // 2, f"peak RSS {hwm} kB while streaming {n} bytes"


def test_headers_as_forwarded(up):
    r = curl(up, "-H", "X-Sluice-Test: 42", url(up, "www.test", "/headers"), name="www.test")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["method"] == "GET" and got["path"] == "/headers"
    assert got["headers"]["host"] == "www.test"
    assert got["headers"]["x-sluice-test"] == "42"


def test_not_found(up):
    r = curl(up, "-w", "%{http_code}", "-o", "/dev/null", url(up, "api.test", "/nope"))
    assert (r.returncode, r.stdout) == (0, b"404"), r.stderr


def test_keepalive_reuse_is_one_connection(up):
    t = token()
    urls = [url(up, "api.test", f"/bytes/{1000 + i}?ka={t}") for i in range(3)]
    r = curl(up, "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", *urls)
    assert r.returncode == 0, r.stderr
    seen = up.nginx.wait_requests(3, uri=lambda u: u.endswith(f"?ka={t}"))
    assert len(seen) == 3
    assert len(up.nginx.connections_seen(uri=lambda u: u.endswith(f"?ka={t}"))) == 1
    assert [e["connection_requests"] for e in seen] == [1, 2, 3]
    # The control: one curl per request is one connection per request.
    t2 = token()
    for i in range(2):
        assert curl(up, "-o", "/dev/null", url(up, "api.test", f"/bytes/1?nk={t2}")).returncode == 0
    up.nginx.wait_requests(2, uri=f"/bytes/1?nk={t2}")
    assert len(up.nginx.connections_seen(uri=f"/bytes/1?nk={t2}")) == 2


def test_plain_http(up):
    port = up.nginx.http_port
    t = token()
    r = curl(up, url(up, "api.test", f"/bytes/5000?{t}", scheme="http"), port=port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pattern(5000)
    (e,) = up.nginx.wait_requests(1, uri=f"/bytes/5000?{t}")
    assert (e["scheme"], e["host"], e["sni"], e["status"]) == ("http", "api.test", "", 200)


def test_access_log_fields(up):
    t = token()
    mark = up.nginx.mark()
    r = curl(up, "-o", "/dev/null", url(up, "v6.test", f"/bytes/10?{t}"), name="v6.test",
             addr=UPSTREAM_V6)
    assert r.returncode == 0, r.stderr
    (e,) = up.nginx.wait_requests(1, since=mark)
    assert (e["method"], e["uri"], e["status"], e["host"], e["sni"], e["server_addr"],
            e["ssl_protocol"]) == ("GET", f"/bytes/10?{t}", 200, "v6.test", "v6.test", "::1",
                                   "TLSv1.3")


def test_tls12_accepted(up):
    r = curl(up, "--tls-max", "1.2", "-w", "%{http_code}", "-o", "/dev/null",
             url(up, "api.test", "/bytes/1"))
    assert (r.returncode, r.stdout) == (0, b"200"), r.stderr


def test_by_ip_without_sni(up):
    for addr in (UPSTREAM_V4, UPSTREAM_V6):
        host = f"[{addr}]" if ":" in addr else addr
        r = curl(up, f"https://{host}:{up.nginx.https_port}/bytes/100")
        assert (r.returncode, r.stdout) == (0, pattern(100)), r.stderr


def test_wrong_name_fails_verification(up):
    r = curl(up, url(up, "wrongname.test", "/bytes/1"), name="wrongname.test")
    assert r.returncode == 60, (r.returncode, r.stderr)
    # The server is there and serves a valid certificate, for another name.
    r = curl(up, "-kv", "-o", "/dev/null", url(up, "wrongname.test", "/bytes/1"),
             name="wrongname.test", text=True)
    assert r.returncode == 0, r.stderr
    assert "CN=other.test" in r.stderr


def test_untrusted_ca_fails_verification(up):
    r = curl(up, url(up, "untrusted.test", "/bytes/1"), name="untrusted.test")
    assert r.returncode == 60, (r.returncode, r.stderr)


def wsclient(*args):
    return subprocess.run([PY, WSCLIENT, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("addr", [UPSTREAM_V4, UPSTREAM_V6])
def test_websocket_over_tls(up, addr):
    port = up.nginx.https_port
    a = f"[{addr}]" if ":" in addr else addr
    r = wsclient("--connect", f"{a}:{port}", "--count", "3", url(up, "ws.test", "/ws", "wss"),
                 up.pki.ca_pem, "hello through nginx")
    assert (r.returncode, r.stdout) == (0, "hello through nginx\n" * 3), r.stderr
    big = "x" * 70_000  # a 64-bit length frame
    r = wsclient("--connect", f"{a}:{port}", url(up, "ws.test", "/ws", "wss"), up.pki.ca_pem,
                 big)
    assert (r.returncode, r.stdout) == (0, big + "\n"), r.stderr


def test_websocket_plain_and_failures(up):
    r = wsclient("--connect", f"{UPSTREAM_V4}:{up.nginx.http_port}", "--binary",
                 url(up, "ws.test", "/ws", scheme="ws"), "-", "binary hello")
    assert (r.returncode, r.stdout) == (0, "binary hello\n"), r.stderr
    r = wsclient("--connect", f"{UPSTREAM_V4}:{up.nginx.https_port}",
                 url(up, "wrongname.test", "/ws", "wss"), up.pki.ca_pem, "x")
    assert r.returncode == 60, r.stderr
    r = wsclient("--connect", f"{UPSTREAM_V4}:{up.nginx.https_port}",
                 url(up, "ws.test", "/nope", "wss"), up.pki.ca_pem, "x")
    assert r.returncode == 4 and "404" in r.stderr, r.stderr


def test_busy_address_is_a_clear_error(up, tmp_path):
    port = free_port((UPSTREAM_V4,))
    with socket.socket() as s:
        s.bind((UPSTREAM_V4, port))
        s.listen()
        n = Nginx(tmp_path / "busy", up.pki, up.backend, https=[(UPSTREAM_V4, port)], http=[])
        with pytest.raises(AddressBusy, match=rf"127\.0\.0\.20:{port} is busy"):
            n.start()
        n.close()
    assert not (tmp_path / "busy").exists()


def test_default_listeners(upstreams):
    """The defaults, 127.0.0.20:443, [::1]:443 and 127.0.0.20:80: the session's instance
    (the one the proxy tests use) serves on them."""
    n = upstreams.nginx
    for addr, name in ((UPSTREAM_V4, "api.test"), (UPSTREAM_V6, "v6.test")):
        r = curl(upstreams, n.url(name, "/bytes/321"), name=name, addr=addr, port=443)
        assert (r.returncode, r.stdout) == (0, pattern(321)), r.stderr
    r = curl(upstreams, n.url("api.test", "/bytes/123", "http"), port=80)
    assert (r.returncode, r.stdout) == (0, pattern(123)), r.stderr
    with pytest.raises(AddressBusy):
        check_bindable([(UPSTREAM_V4, 443), (UPSTREAM_V6, 443), (UPSTREAM_V4, 80)])
