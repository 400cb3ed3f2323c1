# SPDX-License-Identifier: MIT
"""HTTPS requests on new connections, each offering the TLS session of the one before (Python's
ssl with session=), from inside a sandbox: says whether each resumed.

Usage: tlsresume.py JSON with keys: host, path, cafiles (list: every CA the client trusts),
tls12 (bool: at most TLS 1.2), steps (list of: "fresh" a connection offering no session, "resume" one offering the last
session, or {"cgroup": PATH} to move this process into the cgroup PATH before the next
connection: the same client, with the same sessions, becomes another sandbox's).
Prints JSON: a list, per connection, of {"status": HTTP status, "reused": session_reused,
"version": TLS version}."""
import json
import os
import socket
import ssl
import sys


def request(ctx, host, path, session):
    with socket.create_connection((host, 443), timeout=10) as raw:
        s = ctx.wrap_socket(raw, server_hostname=host, session=session)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        got = {"status": int(data.split(b" ", 2)[1]), "reused": s.session_reused,
               "version": s.version()}
        # A TLS 1.3 ticket arrives after the handshake: the session is read after the
        # response. The close_notify keeps it resumable (OpenSSL marks the session of a
        # connection freed without one as not resumable).
        session = s.session
        try:
            s.unwrap()
        except (OSError, ssl.SSLError):
            pass
        return got, session


def main():
    a = json.loads(sys.argv[1])
    ctx = ssl.create_default_context(cafile=a["cafiles"][0])
    for f in a["cafiles"][1:]:
        ctx.load_verify_locations(cafile=f)
    if a.get("tls12"):
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    out, session = [], None
    for step in a["steps"]:
        if isinstance(step, dict):
            with open(os.path.join(step["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            continue
        got, session = request(ctx, a["host"], a["path"], session if step == "resume" else None)
        out.append(got)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
