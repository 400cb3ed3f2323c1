# SPDX-License-Identifier: MIT
"""A gRPC client (Debian's python3-grpcio) for test_grpc.py, run inside a sandbox: one JSON
argument, one JSON result on stdout. Generic calls with bytes in and out (no protoc).

  {"target": "api.test:PORT", "ca": PEM, "call": "unary" | "server_stream" |
   "client_stream" | "bidi", "method": "/svc.Echo/Unary", "messages": ["..."]}
      -> {"code": "OK" | status name, "details": str, "replies": ["..."],
          "initial": [[k, v]], "trailing": [[k, v]]}
"""
import json
import sys

import grpc

TIMEOUT = 20


def meta(m):
    return [[k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in (m or [])]


def main():
    a = json.loads(sys.argv[1])
    creds = grpc.ssl_channel_credentials(root_certificates=open(a["ca"], "rb").read())
    msgs = [m.encode() for m in a.get("messages", [])]
    out = {"replies": [], "initial": [], "trailing": []}
    with grpc.secure_channel(a["target"], creds) as ch:
        kind = a["call"]
        try:
            if kind == "unary":
                fn = ch.unary_unary(a["method"])
                reply, call = fn.with_call(msgs[0], timeout=TIMEOUT)
                out["replies"] = [reply.decode()]
            elif kind == "client_stream":
                fn = ch.stream_unary(a["method"])
                reply, call = fn.with_call(iter(msgs), timeout=TIMEOUT)
                out["replies"] = [reply.decode()]
            else:
                fn = (ch.unary_stream if kind == "server_stream" else ch.stream_stream)(
                    a["method"])
                call = fn(msgs[0] if kind == "server_stream" else iter(msgs), timeout=TIMEOUT)
                out["replies"] = [r.decode() for r in call]
            out["code"] = call.code().name
            out["details"] = call.details() or ""
        except grpc.RpcError as e:
            call = e
            out["code"] = e.code().name
            out["details"] = e.details() or ""
        out["initial"] = meta(call.initial_metadata())
        out["trailing"] = meta(call.trailing_metadata())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
