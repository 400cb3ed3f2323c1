# SPDX-License-Identifier: MIT
"""Secret masking with no way around it, end to end: an upstream (maskup.py) that echoes the
injected x-auth-token gzip'd, deflated (zlib and raw), chunked, labelled br, in a 103 head and
in WebSocket frames (split across TLS records, fragmented, in a close reason). The sandbox
never sees the token, and still gets the right bytes otherwise; a gzip bomb costs sluiced no
memory; a request without a secret is passed on as the upstream encoded it."""
import gzip
import json
import subprocess
from pathlib import Path

import pytest

from conftest import ENV_SECRETS, PY, add_box, run_in
from maskup import MaskUpstream

ROOT = Path(__file__).resolve().parents[2]
WSRAW = str(Path(__file__).with_name("wsraw.py"))
NAME = "mask"
SECRET = ENV_SECRETS["VCS_TOKEN"]
STARS = "*" * len(SECRET)


@pytest.fixture(scope="module")
def up(upstreams):
    cert, key = upstreams.pki.issue("mask", dns=["mask.test"])
    u = MaskUpstream(cert, key)
    yield u
    u.close()


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, up):
    policy = f"""
return {{
  egress = {{ intercept = {{ "mask.test:{up.port}" }}, private = {{ "127.0.0.0/8" }} }},
  outbound = function(req, env, ctx)
    if req.path:sub(1, 10) == "/nosecret/" then
      req.path = req.path:sub(10)
      return fetch(req)
    end
    req.headers:set("x-auth-token", env.VCS_TOKEN)
    if req.path:sub(1, 6) == "/text/" then
      req.path = req.path:sub(6)
      local resp = fetch(req)
      local t = resp:text()
      resp.headers:set("x-text-length", tostring(#t))
      return resp
    end
    return fetch(req)
  end,
}}
"""
    cg, ca = add_box(daemon, cgroups, workdir, NAME, policy)
    yield cg, ca, up.port
    daemon.cli("sandbox", "rm", NAME)


def fetch(box, workdir, path, *args):
    """(status, headers lower-cased, body bytes, raw bytes) of one request from inside, over
    HTTP/1.1: the checks read its framing and its 103 (HTTP/2 streams take the same path)."""
    cg, ca, port = box
    r = subprocess.run([str(ROOT / "tools/in-sandbox"), str(cg), str(Path(workdir) / "resolv.conf"),
                        "curl", "-sS", "-i", "--http1.1", "--max-time", "30", "--cacert", ca, *args,
                        f"https://mask.test:{port}{path}"],
                       capture_output=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    raw = r.stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return int(lines[0].split()[1]), headers, body, raw


@pytest.mark.parametrize("path", ["/gzip", "/deflate", "/deflate-raw", "/gzip?chunked=1",
                                  "/deflate?chunked=1"])
def test_encoded_echo_is_decoded_and_masked(box, workdir, up, path):
    # The sandbox asks for gzip and would decode it (curl --compressed): it gets identity.
    status, headers, body, raw = fetch(box, workdir, path, "--compressed")
    assert status == 200
    assert SECRET.encode() not in raw
    assert "content-encoding" not in headers and headers.get("transfer-encoding") == "chunked"
    echoed = json.loads(body)
    assert echoed["token"] == STARS  # the right body otherwise, the token masked
    assert up.seen[-1]["headers"]["x-auth-token"] == SECRET  # it did go upstream
    # What the upstream was asked for: only codings sluice decodes.
    assert echoed["headers"]["accept-encoding"] in ("deflate, gzip", "gzip, deflate")


def test_undecodable_coding_is_refused_not_passed(box, workdir, up):
    for path in ("/br", "/br?chunked=1"):
        status, _, body, raw = fetch(box, workdir, path)
        assert status == 502, raw
        assert SECRET.encode() not in raw
        assert b"Content-Encoding br" in body and b"cannot decode" in body
    # An honest server asked for br gets asked for what sluice decodes instead.
    status, headers, body, raw = fetch(box, workdir, "/negotiate", "-H", "Accept-Encoding: br")
    assert status == 200 and "content-encoding" not in headers
    assert up.seen[-1]["headers"]["accept-encoding"] == "identity"
    assert json.loads(body)["token"] == STARS
    status, headers, body, raw = fetch(box, workdir, "/negotiate", "-H",
                                       "Accept-Encoding: br;q=1, gzip;q=0.5")
    assert up.seen[-1]["headers"]["accept-encoding"] == "gzip;q=0.5"
    assert status == 200 and "content-encoding" not in headers and SECRET.encode() not in raw
    assert json.loads(body)["token"] == STARS


def test_request_without_secret_keeps_its_encoding(box, workdir, up):
    status, headers, body, raw = fetch(box, workdir, "/nosecret/gzip")
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(body))["token"] == ""  # nothing injected, nothing masked


def test_handler_reading_an_encoded_body_reads_it_decoded(box, workdir, up):
    status, headers, body, raw = fetch(box, workdir, "/text/gzip", "--compressed")
    assert status == 200 and SECRET.encode() not in raw
    assert "content-encoding" not in headers
    assert int(headers["x-text-length"]) == len(body)  # resp:text() was the decoded JSON
    assert json.loads(body)["token"] == STARS


def test_early_hints_are_masked(box, workdir, up):
    status, _, body, raw = fetch(box, workdir, "/early")
    assert raw.startswith(b"HTTP/1.1 103")
    assert SECRET.encode() not in raw and f"t={STARS}>".encode() in raw
    assert status == 200 and body == b"after the hints\n"


def vm(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(field)


def test_gzip_bomb_stays_bounded(box, workdir, up, daemon):
    cg, ca, port = box
    pid = daemon.proc.pid
    up.bombs.clear()
    fetch_url = f"https://mask.test:{port}/bomb?mib=512"
    hwm = vm(pid, "VmHWM")
    r = run_in(cg, ["curl", "-sS", "--max-time", "120", "--cacert", ca, "-o", "/dev/null",
                    "-w", "%{http_code} %{size_download}", fetch_url], workdir, timeout=150)
    assert r.returncode == 0, (r.stderr, json.dumps(daemon.events(NAME)[-1]))
    assert r.stdout == f"200 {512 << 20}"  # all of it decoded, streamed through
    assert vm(pid, "VmHWM") - hwm < 24 * 1024, (hwm, vm(pid, "VmHWM"))  # kB
    # A handler that reads it whole gets its bound (8 MiB), not the bomb.
    status, _, body, _ = fetch(box, workdir, "/text/bomb?mib=64")
    assert status == 502 and b"larger than its handler may read" in body
    assert vm(pid, "VmHWM") - hwm < 40 * 1024


def ws_frames(box, workdir, ext="", path="/ws"):
    cg, ca, port = box
    r = run_in(cg, [PY, WSRAW, "mask.test", str(port), ca, path, *([ext] if ext else [])],
               workdir)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    return out[0]["head"], out[1:]


def test_websocket_frames_from_the_upstream_are_masked(box, workdir, up):
    head, frames = ws_frames(box, workdir, "permessage-deflate; client_max_window_bits")
    assert head.startswith("HTTP/1.1 101"), head
    assert up.seen[-1]["headers"]["x-auth-token"] == SECRET
    text = json.dumps(frames)
    assert SECRET not in text
    # Every frame kept its framing; the token became stars wherever it was.
    assert [(f["op"], f["fin"]) for f in frames] == [
        (1, True), (2, True), (1, False), (9, True), (0, False), (0, True), (1, True),
        (8, True)]
    assert frames[0]["payload"] == "token " + STARS
    assert frames[1]["payload"] == "x" * 200 + STARS + "y" * 50  # written in three pieces
    half = len(SECRET) // 2
    assert frames[2]["payload"] == "frag " + "*" * half  # cut across fragments
    assert frames[4]["payload"] == "*" * (len(SECRET) - half)
    assert frames[3]["payload"] == "ping" and frames[5]["payload"] == " end"
    # permessage-deflate was not offered upstream: frames stay plain bytes to mask.
    assert json.loads(frames[6]["payload"]) == {"extensions": ""}
    assert frames[7]["payload"][2:] == "bye " + STARS


def test_websocket_without_secret_is_relayed_as_is(box, workdir, up):
    head, frames = ws_frames(box, workdir, "permessage-deflate", path="/nosecret/ws")
    assert head.startswith("HTTP/1.1 101")
    assert "x-auth-token" not in up.seen[-1]["headers"]
    # Nothing to mask: the offer went upstream untouched, the frames came back as sent.
    assert json.loads(frames[6]["payload"]) == {"extensions": "permessage-deflate"}
    assert frames[0]["payload"] == "token "
