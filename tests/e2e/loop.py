# SPDX-License-Identifier: MIT
"""Requests in a loop from inside a sandbox, each on a fresh connection with a fresh DNS
lookup: prints [[start_time, host, outcome], ...] as JSON, outcome the HTTP status or the
exception's name. Usage: loop.py JSON with {"hosts": [...], "ca": FILE, "seconds": S}.
Bounded by S seconds and 3000 requests."""
import json
import socket
import ssl
import sys
import time


def fetch(host, ctx):
    addr = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    with socket.create_connection(addr, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET /bytes/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode())
            got = b""
            while True:
                piece = s.recv(4096)
                if not piece:
                    break
                got += piece
            return int(got.split(b" ", 2)[1])


def main():
    op = json.loads(sys.argv[1])
    ctx = ssl.create_default_context(cafile=op["ca"])
    out, deadline = [], time.time() + op["seconds"]
    while time.time() < deadline and len(out) < 3000:
        for host in op["hosts"]:
            t0 = time.time()
            try:
                out.append([t0, host, fetch(host, ctx)])
            except Exception as e:  # every failure is an outcome to report
                out.append([t0, host, type(e).__name__])
    print(json.dumps(out))


main()
