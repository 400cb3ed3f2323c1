# SPDX-License-Identifier: MIT
"""A WebSocket client that only listens (runs inside a sandbox): handshake over TLS, then
every frame the server sends until its close, printed as JSON lines {"fin", "op", "len",
"payload" (latin-1)}; the handshake's response head first as {"head": ...}.

Usage: wsraw.py HOST PORT CAFILE PATH [EXTENSIONS]"""
import base64
import json
import os
import socket
import ssl
import struct
import sys


def main():
    host, port, ca, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ext = sys.argv[5] if len(sys.argv) > 5 else ""
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10),
                        server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n" +
               (f"Sec-WebSocket-Extensions: {ext}\r\n" if ext else "") + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    print(json.dumps({"head": head.decode("latin-1")}), flush=True)
    if not head.startswith(b"HTTP/1.1 101"):
        return
    while True:
        while True:
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
                if len(buf) >= hl:
                    if n == 126:
                        n = struct.unpack("!H", buf[2:4])[0]
                    elif n == 127:
                        n = struct.unpack("!Q", buf[2:10])[0]
                    if len(buf) >= hl + n:
                        break
            d = s.recv(65536)
            if not d:
                return
            buf += d
        fin, op = bool(buf[0] & 0x80), buf[0] & 0x0F
        payload, buf = buf[hl:hl + n], buf[hl + n:]
        print(json.dumps({"fin": fin, "op": op, "len": n,
                          "payload": payload.decode("latin-1")}), flush=True)
        if op == 0x8:
            return


if __name__ == "__main__":
    main()
