#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A minimal RFC 6455 WebSocket client (standard library only), run as its own process, e.g.
inside a sandbox's cgroup: connects, does the handshake, sends MESSAGE, prints the echo.

Usage: wsclient.py [--connect HOST[:PORT]] [--timeout S] [--binary] [--count N]
                   URL CAFILE MESSAGE

  URL        ws://host[:port]/path or wss://host[:port]/path
  CAFILE     the CA bundle that verifies a wss:// server ("-": the system's); ignored for ws://
  MESSAGE    sent as one text (--binary: binary) message, --count times on one connection
  --connect  the address to connect to instead of resolving the URL's host (which stays the
             TLS server name and the Host header)

Prints each echoed message on its own line. Exit status: 0 every echo matched; 1 connection,
TLS or protocol failure; 2 usage; 3 an echo differed; 4 the server refused the upgrade (not
101); 60 the server's certificate did not verify (like curl). Failures are explained on stderr.
"""
import argparse
import base64
import hashlib
import os
import socket
import ssl
import struct
import sys
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def mask_bytes(data, mask):
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def frame(opcode, payload):
    """A client frame: always masked."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + mask_bytes(payload, mask)


def read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) != n:
        raise Failure(1, "connection closed by the server in the middle of a frame")
    return data


def read_frame(f):
    b0, b1 = read_exact(f, 2)
    fin, opcode, length = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
    if b1 & 0x80:
        raise Failure(1, "the server sent a masked frame")
    if length == 126:
        (length,) = struct.unpack("!H", read_exact(f, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read_exact(f, 8))
    return fin, opcode, read_exact(f, length)


def split_hostport(s, default_port):
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if s.count(":") == 1:
        host, port = s.split(":")
        return host, int(port)
    return s, default_port


class WebSocket:
    def __init__(self, url, cafile, connect=None, timeout=10):
        u = urlsplit(url)
        if u.scheme not in ("ws", "wss") or not u.hostname:
            raise Failure(2, f"not a ws:// or wss:// URL: {url}")
        tls = u.scheme == "wss"
        host = u.hostname
        port = u.port or (443 if tls else 80)
        addr = split_hostport(connect, port) if connect else (host, port)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        try:
            sock = socket.create_connection(addr, timeout=timeout)
        except OSError as e:
            raise Failure(1, f"cannot connect to {addr[0]} port {addr[1]}: {e}") from None
        if tls:
            try:
                ctx = ssl.create_default_context(cafile=None if cafile in ("-", "") else cafile)
                ctx.set_alpn_protocols(["http/1.1"])
                sock = ctx.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as e:
                sock.close()
                raise Failure(60, f"certificate verification failed: {e.verify_message}") \
                    from None
            except (ssl.SSLError, OSError) as e:
                sock.close()
                raise Failure(1, f"TLS handshake failed: {e}") from None
        self.sock = sock
        self.rfile = sock.makefile("rb")
        hosthdr = f"[{host}]" if ":" in host else host
        if port != (443 if tls else 80):
            hosthdr += f":{port}"
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nUser-Agent: sluice-e2e-wsclient\r\n\r\n")
        self.send_raw(request.encode())
        status = self.rfile.readline(65537).decode("latin-1").rstrip("\r\n")
        headers = {}
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise Failure(1, f"connection closed during the handshake (status: {status!r})")
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise Failure(4, f"the server refused the upgrade: {status!r}")
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise Failure(1, "bad Sec-WebSocket-Accept in the server's answer")
        if headers.get("upgrade", "").lower() != "websocket":
            raise Failure(1, "the server's answer has no Upgrade: websocket")

    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Failure(1, f"send failed: {e}") from None

    def send(self, payload, binary=False):
        self.send_raw(frame(0x2 if binary else 0x1, payload))

    def recv(self):
        """The next message's (opcode, payload); answers pings; None once the server closed."""
        parts, op = [], None
        while True:
            try:
                fin, opcode, payload = read_frame(self.rfile)
            except OSError as e:
                raise Failure(1, f"receive failed: {e}") from None
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self.send_raw(frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                parts, op = [payload], opcode
            elif opcode == 0x0 and op is not None:
                parts.append(payload)
            else:
                raise Failure(1, f"unexpected frame opcode {opcode}")
            if fin:
                return op, b"".join(parts)

    def close(self):
        """The close handshake: sends 1000, waits (briefly) for the server's close."""
        try:
            self.send_raw(frame(0x8, struct.pack("!H", 1000)))
            self.sock.settimeout(2)
            while True:
                fin, opcode, _ = read_frame(self.rfile)
                if opcode == 0x8:
                    break
        except (Failure, OSError):
            pass
        finally:
            self.rfile.close()
            self.sock.close()


def main(argv):
    ap = argparse.ArgumentParser(description="WebSocket echo client for sluice's e2e tests")
    ap.add_argument("--connect", help="HOST[:PORT] to connect to instead of the URL's host")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--binary", action="store_true")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("url")
    ap.add_argument("cafile")
    ap.add_argument("message")
    args = ap.parse_args(argv)
    message = args.message.encode()
    try:
        ws = WebSocket(args.url, args.cafile, args.connect, args.timeout)
        try:
            for _ in range(args.count):
                ws.send(message, args.binary)
                got = ws.recv()
                if got is None:
                    raise Failure(1, "the server closed the connection instead of echoing")
                op, payload = got
                print(payload.decode(errors="replace"), flush=True)
                if payload != message or op != (0x2 if args.binary else 0x1):
                    raise Failure(3, f"the echo differs from the message "
                                     f"({len(payload)} bytes, opcode {op})")
        finally:
            ws.close()
    except Failure as e:
        print(f"wsclient: {e}", file=sys.stderr)
        return e.code
    except socket.timeout:
        print("wsclient: timed out", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"wsclient: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
