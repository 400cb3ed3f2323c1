# SPDX-License-Identifier: MIT
"""An HTTP/2 client (python3-h2) for the h2 tests, run inside a sandbox: one JSON argument,
one JSON result on stdout.

  {"mode": "get", "host": NAME, "ca": PEM, "path": "/x", "authority": NAME, "headers": [[k, v]],
   "tls": true, "port": 443, "n": 1}
      n concurrent GETs on one connection, offering ALPN h2 only (or prior knowledge when
      tls is false): {"alpn", "responses": [{"status", "headers", "body_len", "body"}]}
  {"mode": "rapid_reset" | "ping_flood" | "settings_flood" | "empty_data" | "continuation",
   "host", "ca", "count": N}
      an attack on one connection, bounded in count and time: {"goaway": error code or None,
      "closed": whether the connection ended, "sent": frames sent}
"""
import json
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events

TIMEOUT = 20


def connect(a):
    port = a.get("port", 443 if a.get("tls", True) else 80)
    sock = socket.create_connection((a["host"], port), timeout=TIMEOUT)
    alpn = None
    if a.get("tls", True):
        ctx = ssl.create_default_context(cafile=a["ca"])
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=a["host"])
        alpn = sock.selected_alpn_protocol()
    return sock, alpn


def h2conn(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                 header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return conn


def get(a):
    sock, alpn = connect(a)
    conn = h2conn(sock)
    scheme = "https" if a.get("tls", True) else "http"
    ids = []
    for _ in range(a.get("n", 1)):
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", a.get("method", "GET")), (":scheme", scheme),
                (":authority", a.get("authority", a["host"])), (":path", a.get("path", "/")),
                *[tuple(h) for h in a.get("headers", [])]]
        conn.send_headers(sid, hdrs, end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    resp = {sid: {"status": None, "headers": {}, "body": b"", "ended": False} for sid in ids}
    reset = {}
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and not all(r["ended"] for r in resp.values()):
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                hd = dict(ev.headers)
                resp[ev.stream_id]["status"] = int(hd.pop(":status"))
                resp[ev.stream_id]["headers"] = hd
            elif isinstance(ev, h2.events.DataReceived):
                resp[ev.stream_id]["body"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                resp[ev.stream_id]["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                reset[ev.stream_id] = ev.error_code
                resp[ev.stream_id]["ended"] = True
        sock.sendall(conn.data_to_send())
    sock.close()
    out = []
    for sid in ids:
        r = resp[sid]
        out.append({"status": r["status"], "headers": r["headers"], "body_len": len(r["body"]),
                    "body": r["body"][:4096].decode("utf-8", "replace"),
                    "reset": reset.get(sid)})
    return {"alpn": alpn, "responses": out}


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def attack(a):
    """Raw frames after a proper preface and SETTINGS (h2's state machine would refuse to
    build some of them)."""
    sock, alpn = connect(a)
    conn = h2conn(sock)
    n = a["count"]
    sent = 0
    closed = False
    goaway = None
    deadline = time.time() + TIMEOUT
    scheme = "https" if a.get("tls", True) else "http"
    hdrs = [(":method", "GET"), (":scheme", scheme), (":authority", a["host"]),
            (":path", "/bytes/10")]
    try:
        for i in range(n):
            if time.time() > deadline:
                break
            mode = a["mode"]
            if mode == "rapid_reset":
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, hdrs, end_stream=True)
                conn.reset_stream(sid)
                data = conn.data_to_send()
            elif mode == "ping_flood":
                data = frame(6, 0, 0, struct.pack(">Q", i))
            elif mode == "settings_flood":
                data = frame(4, 0, 0, struct.pack(">HI", 3, 100))
            elif mode == "empty_data":
                if i == 0:
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, [(":method", "POST"), *hdrs[1:]])
                    sock.sendall(conn.data_to_send())
                data = frame(0, 0, 1, b"")
            elif mode == "continuation":
                if i == 0:
                    # HEADERS without END_HEADERS, then CONTINUATION frames for ever
                    sock.sendall(frame(1, 0x1, 1, b"\x82\x87\x84"))
                data = frame(9, 0, 1, b"\x40\x03abc\x03def")
            sock.sendall(data)
            sent += 1
    except (ConnectionError, OSError):
        closed = True
    # What came back: a GOAWAY, and the end of the connection.
    sock.settimeout(5)
    try:
        while time.time() < deadline + 5:
            data = sock.recv(65536)
            if not data:
                closed = True
                break
            try:
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        goaway = ev.error_code
            except Exception:  # h2 may disagree with frames it did not make: look raw
                if b"\x07\x00\x00\x00\x00\x00" in data:
                    goaway = goaway if goaway is not None else -1
    except (ConnectionError, OSError, socket.timeout):
        closed = closed or True
    return {"goaway": None if goaway is None else int(goaway), "closed": closed, "sent": sent,
            "alpn": alpn}


def main():
    a = json.loads(sys.argv[1])
    res = get(a) if a["mode"] == "get" else attack(a)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
