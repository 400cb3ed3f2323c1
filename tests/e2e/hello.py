# SPDX-License-Identifier: MIT
"""Sends one hand-made TLS 1.3 ClientHello (or other bytes) from inside a sandbox and says
what came back: the raw bytes a proxy sees, including an Encrypted Client Hello extension,
which no client of the test machine sends.

Usage: hello.py JSON with keys: host, port (443), sni (null for none), ech (bool), raw (a
string sent instead of a ClientHello), wait (seconds, default 3). Prints JSON:
{"got": bytes received, "first": hex of the first 5, "end": "eof", "reset", "timeout", or
"refused" (the send failed with EACCES: the kernel SNI check refused the hello)}."""
import json
import os
import socket
import struct
import sys
import time


def ext(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(sni, ech):
    exts = b""
    if sni:
        name = sni.encode()
        exts += ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    exts += ext(0x000a, struct.pack("!HH", 2, 0x001d))                     # x25519
    exts += ext(0x000d, struct.pack("!HHH", 4, 0x0403, 0x0804))           # signature algs
    exts += ext(0x002b, b"\x02\x03\x04")                                  # TLS 1.3
    exts += ext(0x0033, struct.pack("!HHH", 36, 0x001d, 32) + os.urandom(32))
    exts += ext(0x0010, b"\x00\x09\x08http/1.1")
    if ech:
        # outer ECHClientHello: type 0, HKDF-SHA256 / AES-128-GCM, config 7, enc, payload
        enc, payload = os.urandom(32), os.urandom(128)
        exts += ext(0xfe0d, struct.pack("!BHHBH", 0, 1, 1, 7, len(enc)) + enc +
                    struct.pack("!H", len(payload)) + payload)
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) +
            struct.pack("!HHH", 4, 0x1301, 0x1302) + b"\x01\x00" +
            struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def main():
    a = json.loads(sys.argv[1])
    out = {"got": 0, "first": "", "end": "timeout"}
    s = socket.create_connection((a["host"], a.get("port", 443)), timeout=5)
    try:
        s.sendall(a["raw"].encode() if "raw" in a else client_hello(a.get("sni"), a.get("ech")))
    except PermissionError:
        # the kernel SNI check refused the first record (EACCES): nothing was sent
        out["end"] = "refused"
        print(json.dumps(out))
        return
    deadline = time.monotonic() + a.get("wait", 3)
    got = b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            piece = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            out["end"] = "reset"
            break
        if not piece:
            out["end"] = "eof"
            break
        got += piece
        if a.get("stop_after_bytes") and len(got) >= a["stop_after_bytes"]:
            break
    out["got"], out["first"] = len(got), got[:5].hex()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
