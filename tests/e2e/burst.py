# SPDX-License-Identifier: MIT
"""TCP connects from inside a sandbox, for the audit mode tests.

Usage: burst.py JSON with
  {"mode": "burst", "dsts": [[host, port], ...], "count": N}
      N connects spread over the destinations as fast as they go; prints {"ok": n, "errors": {}}
  {"mode": "loop", "dst": [host, port], "seconds": S}
      connects until S seconds passed (at most 20,000), each closed at once; prints
      [[start_time, end_time, outcome], ...] with outcome "OK" or the errno name
Every socket has a 2 s timeout; both are bounded in count and time.
"""
import errno
import json
import socket
import sys
import time


def one(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    finally:
        s.close()


def main():
    op = json.loads(sys.argv[1])
    if op["mode"] == "burst":
        dsts, ok, errors = op["dsts"], 0, {}
        deadline = time.time() + 120
        for i in range(min(op["count"], 20000)):
            if time.time() > deadline:
                break
            host, port = dsts[i % len(dsts)]
            r = one(host, port)
            if r == "OK":
                ok += 1
            else:
                errors[r] = errors.get(r, 0) + 1
        print(json.dumps({"ok": ok, "errors": errors}))
        return
    out, deadline = [], time.time() + op["seconds"]
    host, port = op["dst"]
    print("ready", flush=True)
    while time.time() < deadline and len(out) < 20000:
        t0 = time.time()
        r = one(host, port)
        out.append([t0, time.time(), r])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
