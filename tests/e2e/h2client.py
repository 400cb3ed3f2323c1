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
  {"mode": "hpack_bomb" | "streams" | "big_head" | "rules", "host", "ca", "count": N}
      a refusal per stream: count streams (a header block of one 4000-byte dynamic table
      entry referenced 16,000 times; count GETs of /slow/2000 at once, over the 100 streams
      allowed; heads of 100 1 KiB fields; the malformed heads of RFC 9113 section 8) on one
      connection, then one good GET on it: {"streams": [{"status", "reset", "body"}],
      "after": the good GET's status, "goaway", "closed", "sent"}
  {"mode": "goaway", "host", "ca", "path": a slow path}
      a GET, then a GET of path during which the test switches the sandbox's handler; waits
      for that answer and a GOAWAY; then a GET on a new connection: {"first", "inflight":
      {"status", "body"}, "goaway": [error code, last stream id], "closed", "after": {"status",
      "body"}}
"""
import json
import socket
import ssl
import struct
import sys
import os
import time

import h2.config
import h2.connection
import h2.events

# Per connection's exchange; the tests pass a longer one under the sanitizers (H2CLIENT_TIMEOUT).
TIMEOUT = float(os.environ.get("H2CLIENT_TIMEOUT", "20"))


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


def hpack_int(value, prefix_bits, first=0):
    """An HPACK integer (RFC 7541 section 5.1) with @first's high bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(b):
    return hpack_int(len(b), 7) + b


def request_block(a, path=b"/bytes/10"):
    """:method GET, :scheme, :path, :authority, none of them entering the dynamic table."""
    scheme = 0x87 if a.get("tls", True) else 0x86
    return bytes([0x82, scheme]) + b"\x04" + hpack_str(path) + b"\x01" + \
        hpack_str(a["host"].encode())


class Collector:
    """What came back on a raw connection, by stream, read through a receiving h2 state
    machine that is told nothing of what was sent (frames are parsed by hand)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.decoder = __import__("hpack").Decoder()
        self.decoder.max_allowed_table_size = 65536

    def st(self, sid):
        return self.streams.setdefault(sid, {"status": None, "reset": None, "body": b"",
                                             "ended": False})

    def pump(self, until, deadline):
        self.sock.settimeout(1)
        while not until() and time.time() < deadline and not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self.buf += data
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                self.frame(ftype, flags, sid, payload)

    def frame(self, ftype, flags, sid, payload):
        if ftype == 4 and not flags & 1:  # SETTINGS: ack it
            self.sock.sendall(frame(4, 1, 0))
        elif ftype == 6 and not flags & 1:  # PING
            self.sock.sendall(frame(6, 1, 0, payload))
        elif ftype == 7:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = [code, last & 0x7FFFFFFF]
        elif ftype == 3:
            self.st(sid)["reset"] = struct.unpack(">I", payload[:4])[0]
            self.st(sid)["ended"] = True
        elif ftype == 1:
            body = payload
            if flags & 0x8:  # PADDED
                body = body[1:len(body) - body[0]]
            if flags & 0x20:  # PRIORITY
                body = body[5:]
            for k, v in self.decoder.decode(body, raw=True):
                if k == b":status":
                    self.st(sid)["status"] = int(v)
            if flags & 1:
                self.st(sid)["ended"] = True
        elif ftype == 0:
            s = self.st(sid)
            s["body"] += payload
            if payload:  # give the window back at once
                inc = struct.pack(">I", len(payload))
                self.sock.sendall(frame(8, 0, 0, inc) + frame(8, 0, sid, inc))
            if flags & 1:
                s["ended"] = True


def raw_connect(a):
    sock, alpn = connect(a)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
    return sock, alpn


def per_stream(a):
    """Refusals that must cost one stream each, not the connection: see the module's head."""
    mode, n = a["mode"], a["count"]
    deadline = time.time() + TIMEOUT
    sent, ids = 0, []
    if mode == "rules":
        return rules(a)
    sock, alpn = raw_connect(a)
    col = Collector(sock)
    sid = 1
    try:
        if mode == "hpack_bomb":
            # One entry of 4038 bytes fills the 4 KiB table the server allows...
            entry = b"\x40" + hpack_str(b"x-bomb") + hpack_str(b"b" * 4000)
            sock.sendall(frame(1, 0x5, sid, request_block(a) + entry))
            ids.append(sid)
            sid += 2
            # ... and each 1-byte reference to it (index 62) is 4 KiB more of head.
            bomb = request_block(a) + b"\xbe" * 16000
            for _ in range(n):
                sock.sendall(frame(1, 0x5, sid, bomb))
                ids.append(sid)
                sid += 2
                sent += 1
        elif mode == "streams":
            path = a.get("path", "/slow/2000").encode()
            out = b""
            for _ in range(n):
                out += frame(1, 0x5, sid, request_block(a, path))
                ids.append(sid)
                sid += 2
                sent += 1
            sock.sendall(out)
        elif mode == "big_head":
            fields = b"".join(b"\x00" + hpack_str(b"x-big-%d" % i) + hpack_str(b"v" * 1024)
                              for i in range(100))
            block = request_block(a) + fields
            for _ in range(n):
                chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
                out = frame(1, 0x1 | (0x4 if len(chunks) == 1 else 0), sid, chunks[0])
                for j, ch in enumerate(chunks[1:], 1):
                    out += frame(9, 0x4 if j == len(chunks) - 1 else 0, sid, ch)
                sock.sendall(out)
                ids.append(sid)
                sid += 2
                sent += 1
    except (ConnectionError, OSError):
        col.closed = True
    col.pump(lambda: all(col.st(i)["ended"] for i in ids), deadline)
    after = None
    if not col.closed and col.goaway is None:
        try:
            sock.sendall(frame(1, 0x5, sid, request_block(a)))
            col.pump(lambda: col.st(sid)["ended"], time.time() + TIMEOUT)
            after = col.st(sid)["status"]
        except (ConnectionError, OSError):
            col.closed = True
    sock.close()
    return {"alpn": alpn, "sent": sent, "goaway": col.goaway, "closed": col.closed,
            "after": after,
            "streams": [{"status": col.st(i)["status"], "reset": col.st(i)["reset"],
                         "body": col.st(i)["body"][:512].decode("utf-8", "replace")}
                        for i in ids]}


# Heads HTTP/2 forbids (RFC 9113 sections 8.2.1, 8.2.2, 8.3.1): each must be refused alone.
BAD_HEADS = [
    ("connection", [("connection", "keep-alive")]),
    ("keep_alive", [("keep-alive", "timeout=5")]),
    ("transfer_encoding", [("transfer-encoding", "chunked")]),
    ("upgrade", [("upgrade", "websocket")]),
    ("te_not_trailers", [("te", "gzip")]),
    ("uppercase", [("X-Upper", "1")]),
    ("missing_path", "drop:path"),
    ("missing_method", "drop:method"),
    ("unknown_pseudo", [(":protocol-x", "1")]),
    ("pseudo_after_field", "late:path"),
    ("two_paths", [(":path", "/bytes/2")]),
    ("empty_path", "empty:path"),
]


def rules(a):
    sock, alpn = connect(a)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    conn.initiate_connection()
    scheme = "https" if a.get("tls", True) else "http"
    ids = {}
    for name, extra in BAD_HEADS:
        base = [(":method", "GET"), (":scheme", scheme), (":authority", a["host"]),
                (":path", "/headers?" + name)]
        if extra == "drop:path":
            hdrs = [h for h in base if h[0] != ":path"]
        elif extra == "drop:method":
            hdrs = [h for h in base if h[0] != ":method"]
        elif extra == "late:path":
            hdrs = [h for h in base if h[0] != ":path"] + [("x-a", "1"), base[3]]
        elif extra == "empty:path":
            hdrs = base[:3] + [(":path", "")]
        else:
            hdrs = base + extra
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, hdrs, end_stream=True)
        ids[sid] = name
    sock.sendall(conn.data_to_send())
    res = {sid: {"name": n, "status": None, "reset": None, "ended": False}
           for sid, n in ids.items()}
    goaway = None
    closed = False
    deadline = time.time() + TIMEOUT

    def read_until(done):
        nonlocal goaway, closed
        while time.time() < deadline and not done() and not closed:
            data = sock.recv(65536)
            if not data:
                closed = True
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    res.setdefault(ev.stream_id, {"ended": False})["status"] = \
                        int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    res.setdefault(ev.stream_id, {})["ended"] = True
                elif isinstance(ev, h2.events.StreamReset):
                    res.setdefault(ev.stream_id, {})["reset"] = int(ev.error_code)
                    res[ev.stream_id]["ended"] = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    goaway = int(ev.error_code)
            sock.sendall(conn.data_to_send())

    read_until(lambda: all(r["ended"] for r in res.values()))
    after = None
    if not closed and goaway is None:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", scheme),
                                (":authority", a["host"]), (":path", "/bytes/10")],
                          end_stream=True)
        res[sid] = {"status": None, "ended": False}
        sock.sendall(conn.data_to_send())
        read_until(lambda: res[sid]["ended"])
        after = res[sid]["status"]
    sock.close()
    return {"alpn": alpn, "sent": len(ids), "goaway": goaway, "closed": closed, "after": after,
            "streams": [{"name": r["name"], "status": r["status"], "reset": r["reset"]}
                        for sid, r in sorted(res.items()) if sid in ids]}


def goaway_on_switch(a):
    """See the module's head: the test switches the handler while the slow GET is in
    flight."""
    sock, alpn = raw_connect(a)
    col = Collector(sock)
    deadline = time.time() + TIMEOUT
    sock.sendall(frame(1, 0x5, 1, request_block(a)))
    col.pump(lambda: col.st(1)["ended"], deadline)
    sock.sendall(frame(1, 0x5, 3, request_block(a, a["path"].encode())))
    col.pump(lambda: col.st(3)["ended"] and col.goaway, deadline)
    col.pump(lambda: False, min(deadline, time.time() + 5))  # then the connection ends
    sock.close()
    res = get(dict(a, mode="get", path="/bytes/10"))
    return {"alpn": alpn, "first": col.st(1)["status"],
            "inflight": {"status": col.st(3)["status"], "body": col.st(3)["body"].decode()},
            "goaway": col.goaway, "closed": col.closed,
            "after": {"status": res["responses"][0]["status"],
                      "body": res["responses"][0]["body"]}}


def main():
    a = json.loads(sys.argv[1])
    if a["mode"] == "get":
        res = get(a)
    elif a["mode"] == "goaway":
        res = goaway_on_switch(a)
    elif a["mode"] in ("hpack_bomb", "streams", "big_head", "rules"):
        res = per_stream(a)
    else:
        res = attack(a)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
