# SPDX-License-Identifier: MIT
"""An upstream that hands a request's secret back every way a response can carry it, for the
masking tests: a TLS server (certificate from the test PKI) on 127.0.0.1, one thread per
connection, one request per connection. It echoes the request's x-auth-token:

    /gzip, /deflate, /deflate-raw, /br   the request's headers as JSON, with that
                                          Content-Encoding whatever Accept-Encoding said
                                          (br: the JSON unencoded but labelled br, as a
                                          careless upstream would); ?chunked=1 chunked
    /negotiate                            br if Accept-Encoding has br, else gzip if it has
                                          gzip, else identity (what an honest server does)
    /early                                a 103 whose Link carries the token, then 200
    /bomb?mib=N                           N MiB of zeros, gzip'd (about 1 KiB per MiB)
    /ws                                   a WebSocket that sends the token in a text frame,
                                          a binary frame written in pieces (TLS records
                                          apart), a message fragmented across frames with
                                          the token cut in two, a close frame carrying it

seen: the heads of the requests it got, newest last. close() stops it (the thread it made).
"""
import gzip
import json
import socket
import ssl
import struct
import threading
import time
import zlib

from upstreams import ws_accept, ws_frame


class MaskUpstream:
    def __init__(self, cert, key, host="127.0.0.1"):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.stop = threading.Event()
        self.bombs = {}
        self.thread = threading.Thread(target=self.serve, daemon=True, name="maskup")
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, raw):
        try:
            raw.settimeout(20)
            s = self.ctx.wrap_socket(raw, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                d = s.recv(4096)
                if not d:
                    return
                head += d
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            self.seen.append({"method": method, "target": target, "headers": headers})
            self.route(s, target, headers)
            # Close only once the client has: a socket closed with bytes still queued for a
            # reader that is slow on purpose (backpressure) is reset by the kernel later.
            s.settimeout(60)
            while s.recv(4096):
                pass
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                raw.close()
            except OSError:
                pass

    @staticmethod
    def send_head(s, status, headers):
        s.sendall((f"HTTP/1.1 {status} X\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode())

    def body(self, s, data, headers, chunked):
        if chunked:
            self.send_head(s, 200, [*headers, ("Transfer-Encoding", "chunked"),
                                    ("Connection", "close")])
            for i in range(0, len(data), 7):  # odd chunks, each its own TLS record
                piece = data[i:i + 7]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            s.sendall(b"0\r\n\r\n")
        else:
            self.send_head(s, 200, [*headers, ("Content-Length", str(len(data))),
                                    ("Connection", "close")])
            s.sendall(data)

    def route(self, s, target, headers):
        path, _, query = target.partition("?")
        echo = json.dumps({"headers": headers, "token": headers.get("x-auth-token", "")},
                          sort_keys=True).encode() + b"\n"
        chunked = "chunked=1" in query
        ctype = ("Content-Type", "application/json")
        if path == "/negotiate":
            ae = headers.get("accept-encoding", "").lower()
            path = "/br" if "br" in ae else "/gzip" if "gzip" in ae else "/identity"
        if path == "/identity":
            return self.body(s, echo, [ctype], chunked)
        if path == "/gzip":
            return self.body(s, gzip.compress(echo), [ctype, ("Content-Encoding", "gzip")],
                             chunked)
        if path == "/deflate":
            return self.body(s, zlib.compress(echo), [ctype, ("Content-Encoding", "deflate")],
                             chunked)
        if path == "/deflate-raw":
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            return self.body(s, c.compress(echo) + c.flush(),
                             [ctype, ("Content-Encoding", "deflate")], chunked)
        if path == "/br":
            return self.body(s, echo, [ctype, ("Content-Encoding", "br")], chunked)
        if path == "/early":
            self.send_head(s, 103, [("Link", f"</style.css?t={headers.get('x-auth-token')}>; "
                                             "rel=preload")])
            return self.body(s, b"after the hints\n", [("Content-Type", "text/plain")], False)
        if path == "/bomb":
            mib = int(query.partition("mib=")[2] or 1)
            if mib not in self.bombs:
                c = zlib.compressobj(9, zlib.DEFLATED, 31)
                zero = bytes(1 << 20)
                self.bombs[mib] = b"".join(c.compress(zero) for _ in range(mib)) + c.flush()
            return self.body(s, self.bombs[mib], [("Content-Encoding", "gzip")], False)
        if path == "/ws":
            return self.websocket(s, headers)
        self.body(s, b"not found\n", [], False)

    def websocket(self, s, headers):
        token = headers.get("x-auth-token", "").encode()
        self.send_head(s, 101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                ("Sec-WebSocket-Accept",
                                 ws_accept(headers.get("sec-websocket-key", "")))])
        # 1. whole, in a text frame
        s.sendall(ws_frame(0x1, b"token " + token))
        # 2. a binary frame (126-length form) written in three pieces, records apart
        frame = ws_frame(0x2, b"x" * 200 + token + b"y" * 50)
        for a, b in ((0, 3), (3, 205), (205, len(frame))):
            s.sendall(frame[a:b])
            time.sleep(0.05)
        # 3. one message in three frames, the token cut across the first two, a ping between
        half = len(token) // 2
        s.sendall(ws_frame(0x1, b"frag " + token[:half], fin=False))
        time.sleep(0.05)
        s.sendall(ws_frame(0x9, b"ping"))
        s.sendall(ws_frame(0x0, token[half:], fin=False))
        s.sendall(ws_frame(0x0, b" end", fin=True))
        # 4. what the handshake asked for, then a close whose reason carries the token
        s.sendall(ws_frame(0x1, json.dumps(
            {"extensions": headers.get("sec-websocket-extensions", "")}).encode()))
        s.sendall(ws_frame(0x8, struct.pack("!H", 1000) + b"bye " + token))
        time.sleep(0.5)
