# SPDX-License-Identifier: MIT
"""The proxy's TLS and HTTP edges, end to end: upstream certificates without a SAN refused,
TLS 1.2 towards the sandbox AEAD-only, h2c upgrades ignored (served over HTTP/1.1), refusals
with a body that says sluice refused and why, and the event of a client that does not trust
its sandbox's CA. Each allowed case next to its refused twin."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PY, add_box, run_in

ROOT = Path(__file__).resolve().parents[2]
RAWHTTP = str(Path(__file__).with_name("rawhttp.py"))
NAME = "guard"


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, upstreams):
    policy = """
return {
  egress = { intercept = { "api.test", "www.test", "nosan.test" }, private = { "127.0.0.0/8" } },
  outbound = function(req, env, ctx)
    if req.path == "/deny" then return Response.new(nil, { status = 403 }) end
    if req.path == "/deny-words" then return Response.new("not today\\n", { status = 403 }) end
    return fetch(req)
  end,
}
"""
    yield add_box(daemon, cgroups, workdir, NAME, policy)
    daemon.cli("sandbox", "rm", NAME)


def curl(box, workdir, *args):
    cg, ca = box
    return run_in(cg, ["curl", "-sS", "--max-time", "20", "--cacert", ca, *args], workdir)


def status_body(r):
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def http_events(daemon):
    return [e for e in daemon.events(NAME) if e.get("type") == "http"]


def test_upstream_certificate_without_san_is_refused(box, workdir, daemon):
    r = curl(box, workdir, "-w", "\n%{http_code}", "https://nosan.test/bytes/3")
    code, body = status_body(r)
    assert code == 502, r
    assert "no subjectAltName" in body and "subject CN is refused" in body, body
    ev = [e for e in http_events(daemon) if e.get("host") == "nosan.test"][-1]
    assert ev["status"] == 502 and "no subjectAltName" in ev["reason"]
    # The same CA, a certificate with the name in its SAN: served.
    r = curl(box, workdir, "-o", "/dev/null", "-w", "%{http_code}", "https://api.test/bytes/3")
    assert r.stdout == "200", r


@pytest.mark.parametrize("cipher,ok", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
    ("ECDHE-ECDSA-AES128-SHA", False),       # CBC
    ("ECDHE-ECDSA-AES256-SHA384", False),    # CBC
])
def test_tls12_towards_the_sandbox_is_aead_only(box, workdir, cipher, ok):
    r = curl(box, workdir, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", cipher,
             "-o", "/dev/null", "-w", "%{http_code}", "https://api.test/bytes/3")
    if ok:
        assert r.returncode == 0 and r.stdout == "200", r
    else:
        assert r.returncode == 35, r  # SSL connect error: no shared cipher


def test_h2c_upgrade_is_ignored_and_served_over_http11(box, workdir, upstreams):
    # curl --http2 on http:// sends Upgrade: h2c with HTTP2-Settings.
    r = curl(box, workdir, "--http2", "-i", "http://api.test/headers")
    assert r.returncode == 0, r
    head, _, body = r.stdout.partition("\n\n")  # (text mode: CRLF read as LF)
    assert head.startswith("HTTP/1.1 200"), head
    seen = json.loads(body)["headers"]
    assert "upgrade" not in seen and "http2-settings" not in seen, seen
    assert "h2c" not in seen.get("connection", "").lower()
    # Over TLS too, and the connection goes on with the next request (not another protocol).
    cg, ca = box
    req = ("GET /bytes/2 HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
           "GET /bytes/3 HTTP/1.1\r\nHost: api.test\r\n\r\n")
    r = run_in(cg, [PY, RAWHTTP, json.dumps({"connect": "api.test", "sni": "api.test", "ca": ca,
                                             "stop_after": 2, "send": [req]})], workdir)
    res = json.loads(r.stdout)
    assert res["statuses"] == [200, 200], res
    # A WebSocket upgrade is still an upgrade, and an unknown protocol still refused.
    bad = ("GET /bytes/2 HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\n"
           "Upgrade: foo/1\r\n\r\n")
    r = run_in(cg, [PY, RAWHTTP, json.dumps({"connect": "api.test", "sni": "api.test", "ca": ca,
                                             "send": [bad]})], workdir)
    assert json.loads(r.stdout)["statuses"] == [400]


def test_refusals_say_sluice_refused_and_why(box, workdir, daemon):
    # A refusal of the proxy itself (Host does not match the TLS name).
    r = curl(box, workdir, "-w", "\n%{http_code}", "-H", "Host: www.test",
             "https://api.test/bytes/1")
    code, body = status_body(r)
    assert code == 421
    assert body.strip() == (f"sluice refused this request (sandbox {NAME}): "
                            "Host differs from the TLS server name"), body
    # A handler's refusal without a body gets one; one with its own keeps it.
    r = curl(box, workdir, "-i", "-w", "\n%{http_code}", "https://api.test/deny")
    code, body = status_body(r)
    assert code == 403
    head, _, text = body.partition("\n\n")
    assert "content-type: text/plain" in head.lower()
    assert text.strip() == (f"sluice refused this request (sandbox {NAME}): "
                            "the policy's handler outbound answered 403"), text
    r = curl(box, workdir, "-w", "\n%{http_code}", "https://api.test/deny-words")
    assert status_body(r) == (403, "not today\n")
    # An answer that is not a refusal is untouched.
    r = curl(box, workdir, "-w", "\n%{http_code}", "https://api.test/nothing-here")
    assert status_body(r) == (404, "not found\n")


def test_client_that_does_not_trust_the_sandbox_ca_is_named_in_the_event(box, workdir, daemon,
                                                                         upstreams):
    cg, ca = box
    before = len(http_events(daemon))
    r = run_in(cg, ["curl", "-sS", "--max-time", "10", "https://api.test/bytes/1"], workdir)
    assert r.returncode == 60, r  # the client refused our certificate
    # Python's ssl module, trusting another CA, closes with an alert too.
    code = ("import socket, ssl, sys\n"
            "s = socket.create_connection(('api.test', 443), timeout=10)\n"
            "try:\n"
            "    ssl.create_default_context(cafile=sys.argv[1]).wrap_socket(\n"
            "        s, server_hostname='api.test')\n"
            "except ssl.SSLError as e:\n"
            "    print('refused', e.reason)\n")
    r = run_in(cg, [PY, "-c", code, str(upstreams.pki.ca_pem)], workdir)
    assert r.stdout.startswith("refused"), r
    want = f"the client does not trust this sandbox's CA: see `sluice ca {NAME}`"
    for _ in range(50):  # the event follows the client's alert, published by the loop
        new = http_events(daemon)[before:]
        distrust = [e for e in new if want in e.get("reason", "")]
        if len(distrust) >= 2:
            break
        time.sleep(0.1)
    assert len(distrust) == 2, (new, r.stdout)
    assert all(e["verdict"] == "error" and e["host"] == "api.test" for e in distrust)
    # A client that trusts it: no such event. One that breaks off for another reason (no
    # shared cipher) is not blamed on the CA.
    before = len(http_events(daemon))
    assert curl(box, workdir, "-o", "/dev/null", "https://api.test/bytes/1").returncode == 0
    r = curl(box, workdir, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-SHA",
             "https://api.test/bytes/1")
    assert r.returncode == 35
    new = http_events(daemon)[before:]
    assert not [e for e in new if "does not trust" in e.get("reason", "")], new
