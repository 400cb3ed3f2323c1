# SPDX-License-Identifier: MIT
"""gRPC through sluice, end to end, with Debian's python3-grpcio on both ends (generic
handlers, bytes in and out: no protoc): a client in the sandbox reaches a gRPC server over TLS
(the test CA) through interception, unary, server streaming, client streaming and
bidirectional; the policy injects `authorization` metadata from env, which the server sees
and the client never does; grpc-status and grpc-message (trailers, carried by HTTP/2 on both
legs) arrive intact, a non-zero status too; a handler answers a call itself with a gRPC
error status."""
import json
import subprocess
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from conftest import ENV_SECRETS, PY, ROOT, add_box, run_in
from upstreams import UPSTREAM_V4, UPSTREAM_V6, free_port

CLIENT = str(Path(__file__).with_name("grpcclient.py"))
SECRET = ENV_SECRETS["VCS_TOKEN"]

POLICY = """
return {{
  egress = {{
    intercept = {{ "api.test:{port}" }},
    private = {{ "127.0.0.0/8", "::1" }},
  }},
  outbound = function(req, env, ctx)
    if req.path == "/svc.Echo/Denied" then
      return Response.new("", {{ status = 200, headers = {{
        ["content-type"] = "application/grpc" }},
        trailers = {{ ["grpc-status"] = "7",
                      ["grpc-message"] = "refused by the sandbox policy" }} }})
    end
    req.headers:set("authorization", "Bearer " .. env.VCS_TOKEN)
    if req.path == "/svc.Echo/Relabel" then
      -- the upstream's trailers, read once the body was, and set again, edited
      local resp = fetch(req, {{ path = "/svc.Echo/Unary" }})
      resp:text()
      local t = resp.trailers
      t["x-upstream-status"] = t["grpc-status"]
      t["grpc-status"] = "9"
      t["grpc-message"] = "relabelled by the policy"
      resp.trailers = t
      return resp
    end
    return fetch(req)
  end,
}}
"""


class EchoServer:
    """A gRPC server (grpcio, TLS with the test CA's api.test certificate) on the upstream
    addresses: svc.Echo's Unary, ServerStream, ClientStream, Bidi and Fail, each recording
    the metadata it was called with."""

    def __init__(self, pki, port):
        self.seen = []
        self.lock = threading.Lock()
        cert, key = pki.server_cert("api.test")
        creds = grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        h = grpc.method_handlers_generic_handler("svc.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
        })
        self.server.add_generic_rpc_handlers((h,))
        for host in (UPSTREAM_V4, f"[{UPSTREAM_V6}]"):
            assert self.server.add_secure_port(f"{host}:{port}", creds) == port
        self.server.start()

    def record(self, method, context):
        with self.lock:
            self.seen.append((method, dict(context.invocation_metadata())))

    def unary(self, req, context):
        self.record("Unary", context)
        return b"echo:" + req

    def server_stream(self, req, context):
        self.record("ServerStream", context)
        for i in range(5):
            yield b"%s:%d" % (req, i)

    def client_stream(self, reqs, context):
        self.record("ClientStream", context)
        return b"+".join(reqs)

    def bidi(self, reqs, context):
        self.record("Bidi", context)
        for r in reqs:
            yield r.upper()

    def fail(self, req, context):
        self.record("Fail", context)
        context.set_trailing_metadata((("x-detail", "kept"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode())

    def close(self):
        self.server.stop(None)


@pytest.fixture(scope="module")
def grpc_server(upstreams):
    port = free_port()
    s = EchoServer(upstreams.pki, port)
    try:
        yield s, port
    finally:
        s.close()


@pytest.fixture(scope="module")
def box(daemon, cgroups, workdir, grpc_server):
    _, port = grpc_server
    cg, ca = add_box(daemon, cgroups, workdir, "grpc", POLICY.format(port=port))
    yield cg, ca, port
    daemon.cli("sandbox", "rm", "grpc")


def call(box, workdir, kind, method, *messages):
    cg, ca, port = box
    r = run_in(cg, [PY, CLIENT, json.dumps({"target": f"api.test:{port}", "ca": ca,
                                            "call": kind, "method": method,
                                            "messages": list(messages)})], workdir)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout  # never the client's, in any message or metadata
    return json.loads(r.stdout)


def last_seen(server, method):
    with server.lock:
        got = [m for name, m in server.seen if name == method]
    assert got, server.seen
    return got[-1]


def test_unary_with_injected_metadata(box, workdir, grpc_server):
    server, _ = grpc_server
    res = call(box, workdir, "unary", "/svc.Echo/Unary", "hello")
    assert res["code"] == "OK" and res["replies"] == ["echo:hello"], res
    assert last_seen(server, "Unary")["authorization"] == f"Bearer {SECRET}"
    assert all(k != "authorization" for k, _ in res["initial"] + res["trailing"]), res


def test_server_streaming(box, workdir, grpc_server):
    server, _ = grpc_server
    res = call(box, workdir, "server_stream", "/svc.Echo/ServerStream", "n")
    assert res["code"] == "OK", res
    assert res["replies"] == [f"n:{i}" for i in range(5)], res
    assert last_seen(server, "ServerStream")["authorization"] == f"Bearer {SECRET}"


def test_client_streaming(box, workdir, grpc_server):
    server, _ = grpc_server
    res = call(box, workdir, "client_stream", "/svc.Echo/ClientStream", "a", "b", "c")
    assert res["code"] == "OK" and res["replies"] == ["a+b+c"], res
    assert last_seen(server, "ClientStream")["authorization"] == f"Bearer {SECRET}"


def test_bidirectional(box, workdir, grpc_server):
    server, _ = grpc_server
    msgs = [f"m{i}" for i in range(20)]
    res = call(box, workdir, "bidi", "/svc.Echo/Bidi", *msgs)
    assert res["code"] == "OK" and res["replies"] == [m.upper() for m in msgs], res
    assert last_seen(server, "Bidi")["authorization"] == f"Bearer {SECRET}"


def test_non_zero_status_and_trailers_intact(box, workdir, grpc_server):
    server, _ = grpc_server
    res = call(box, workdir, "unary", "/svc.Echo/Fail", "x")
    assert res["code"] == "NOT_FOUND", res
    assert res["details"] == "no such thing: x", res
    assert ["x-detail", "kept"] in res["trailing"], res
    assert last_seen(server, "Fail")["authorization"] == f"Bearer {SECRET}"


def test_handler_answers_with_a_grpc_error(box, workdir, grpc_server):
    server, _ = grpc_server
    before = len(server.seen)
    res = call(box, workdir, "unary", "/svc.Echo/Denied", "x")
    assert res["code"] == "PERMISSION_DENIED", res
    assert res["details"] == "refused by the sandbox policy", res
    assert len(server.seen) == before  # answered by the handler: never reached the server


def test_handler_reads_and_sets_trailers(box, workdir, grpc_server):
    res = call(box, workdir, "unary", "/svc.Echo/Relabel", "y")
    assert res["code"] == "FAILED_PRECONDITION", res
    assert res["details"] == "relabelled by the policy", res
    assert ["x-upstream-status", "0"] in res["trailing"], res


def grpc_frame(msg):
    return b"\0" + len(msg).to_bytes(4, "big") + msg


def test_http1_client_gets_trailers_only_when_it_asks(box, workdir, grpc_server):
    """An HTTP/1.1 client of a gRPC (h2) upstream: the response trailers come as chunked
    trailers with TE: trailers, and not without."""
    cg, ca, port = box
    body = Path(workdir) / "grpc-unary.bin"
    body.write_bytes(grpc_frame(b"raw"))
    for te, want in ((["-H", "TE: trailers"], True), ([], False)):
        r = subprocess.run([str(ROOT / "tools/in-sandbox"), str(cg),
                            str(Path(workdir) / "resolv.conf"), "curl", "-sS", "--http1.1",
                            "--raw", "--max-time", "20", "--cacert", ca, *te,
                            "-H", "content-type: application/grpc",
                            "--data-binary", f"@{body}", f"https://api.test:{port}/svc.Echo/Unary"],
                           capture_output=True, timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert grpc_frame(b"echo:raw") in r.stdout, r.stdout
        assert r.stdout.endswith(b"\r\n\r\n") and b"0\r\n" in r.stdout, r.stdout
        assert (b"grpc-status: 0\r\n" in r.stdout) == want, r.stdout
