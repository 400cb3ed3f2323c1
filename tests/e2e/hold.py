# SPDX-License-Identifier: MIT
"""Holds one connection open from inside a sandbox and says how it ended.

Usage: hold.py JSON with {"mode": "tls", "host": H, "ca": FILE} (an HTTPS request on a
keep-alive connection, then waiting), {"mode": "ws", "host": H, "ca": FILE} (a WebSocket
upgrade on /ws, then waiting) or {"mode": "tcp", "host": IP, "port": P}. Prints "ready"
once the connection carries data, then one of "closed" (EOF or reset), "timeout" (still open
after "wait" seconds, default 20)."""
import json
import socket
import ssl
import sys


def main():
    op = json.loads(sys.argv[1])
    wait = op.get("wait", 20)
    if op["mode"] in ("tls", "ws"):
        ctx = ssl.create_default_context(cafile=op["ca"])
        raw = socket.create_connection((op["host"], 443), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname=op["host"])
        if op["mode"] == "ws":
            s.sendall(f"GET /ws HTTP/1.1\r\nHost: {op['host']}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got:
                piece = s.recv(4096)
                if not piece:
                    break
                got += piece
            if not got.startswith(b"HTTP/1.1 101"):
                print("bad", got[:100])
                return
            print("ready", flush=True)
            wait_end(s, wait)
            return
        s.sendall(f"GET /bytes/1 HTTP/1.1\r\nHost: {op['host']}\r\n\r\n".encode())
        got = b""
        while True:
            piece = s.recv(4096)
            if not piece:
                break
            got += piece
            _, sep, body = got.partition(b"\r\n\r\n")
            if sep and len(body) >= 1:
                break
        if not got.startswith(b"HTTP/1.1 200"):
            print("bad", got[:100])
            return
    else:
        s = socket.create_connection((op["host"], op["port"]), timeout=10)
        s.sendall(b"hold")
    print("ready", flush=True)
    wait_end(s, wait)


def wait_end(s, wait):
    s.settimeout(wait)
    try:
        while True:
            if not s.recv(4096):
                print("closed", flush=True)
                return
    except socket.timeout:
        print("timeout", flush=True)
    except (OSError, ssl.SSLError):
        print("closed", flush=True)


main()
