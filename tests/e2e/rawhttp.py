# SPDX-License-Identifier: MIT
"""Sends raw bytes over TLS (or plain TCP) and reports what came back, for tests that need
requests curl will not send (smuggling, obs-fold, absolute-form to another host, pipelining,
a slow head). Runs inside a sandbox.

Usage: rawhttp.py JSON with keys: connect (host, resolved normally), port, tls (bool), sni
(server name, or null for none), ca (CA file), send (list of strings, sent in order, each
after "pause" seconds), read_timeout. Prints JSON: {"statuses": [...], "closed": bool,
"text": first 4 KiB, "error": str or null, "peer": [host, port]}."""
import json
import re
import socket
import ssl
import sys
import time


def main():
    a = json.loads(sys.argv[1])
    out = {"statuses": [], "closed": False, "text": "", "error": None, "peer": None}
    try:
        s = socket.create_connection((a["connect"], a.get("port", 443)), timeout=10)
        out["peer"] = list(s.getpeername()[:2])
        if a.get("tls", True):
            ctx = ssl.create_default_context(cafile=a.get("ca"))
            if a.get("sni") is None:
                ctx.check_hostname = False
            ctx.set_alpn_protocols(a.get("alpn", ["http/1.1"]))
            s = ctx.wrap_socket(s, server_hostname=a.get("sni"))
        for chunk in a.get("send", []):
            if isinstance(chunk, (int, float)):
                time.sleep(chunk)
                continue
            s.sendall(chunk.encode("latin-1"))
        s.settimeout(a.get("read_timeout", 10))
        data = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    out["closed"] = True
                    break
                data += b
                if a.get("stop_after") and data.count(b"HTTP/1.1 ") >= a["stop_after"] and \
                        data.endswith(b"\n"):
                    break
        except socket.timeout:
            pass
        except (ConnectionResetError, ssl.SSLError) as e:
            out["closed"] = True
            out["error"] = str(e)
        text = data.decode("latin-1")
        out["statuses"] = [int(m) for m in re.findall(r"HTTP/1\.1 (\d{3}) ", text)]
        out["text"] = text[:4096]
    except (OSError, ssl.SSLError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
