# SPDX-License-Identifier: MIT
"""Runs socket operations from inside a sandbox and reports each outcome as an errno name.

Usage: probe.py JSON, where JSON is a list of operations:
  {"op": "connect", "proto": "tcp"|"udp", "host": H, "port": P}
  {"op": "sendto", "host": H, "port": P, "data": "..."}          unconnected UDP datagram
  {"op": "tfo", "host": H, "port": P, "data": "..."}             TCP Fast Open (MSG_FASTOPEN)
  {"op": "socket", "family": F, "type": T, "proto": N}
  {"op": "connect_after_move", "host": H, "port": P, "cgroup": DIR}
     creates a TCP socket here, moves this process into DIR, then connects
  {"op": "connect_many", "host": H, "port": P, "count": N}
     N TCP connects that must all fail with EPERM
Hosts containing ':' use AF_INET6. Prints a JSON list: "OK" or the errno name per operation.
Every socket has a 5 s timeout, so a probe never hangs.
"""
import errno
import json
import os
import socket
import struct
import sys

MSG_FASTOPEN = 0x20000000


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def addr(host, port):
    return (host, port, 0, 0) if ":" in host else (host, port)


def run(op):
    kind = op["op"]
    if kind == "socket":
        s = socket.socket(op["family"], op["type"], op["proto"])
        s.close()
        return "OK"
    if kind == "connect":
        t = socket.SOCK_STREAM if op["proto"] == "tcp" else socket.SOCK_DGRAM
        with socket.socket(family(op["host"]), t) as s:
            s.settimeout(5)
            s.connect(addr(op["host"], op["port"]))
            if op["proto"] == "udp" and op.get("data"):
                s.send(op["data"].encode())
            return "OK"
    if kind == "sendto":
        with socket.socket(family(op["host"]), socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(op["data"].encode(), addr(op["host"], op["port"]))
            return "OK"
    if kind == "tfo":
        with socket.socket(family(op["host"]), socket.SOCK_STREAM) as s:
            # A kernel-blocking socket (Python's settimeout would make the first Fast Open
            # return EINPROGRESS), bounded by SO_SNDTIMEO instead.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
            s.sendto(op["data"].encode(), MSG_FASTOPEN, addr(op["host"], op["port"]))
            return "OK"
    if kind == "connect_after_move":
        with socket.socket(family(op["host"]), socket.SOCK_STREAM) as s:
            s.settimeout(5)
            with open(os.path.join(op["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            s.connect(addr(op["host"], op["port"]))
            return "OK"
    if kind == "connect_many":
        # A deny storm: every result must be the same; the first other one is reported.
        for _ in range(op["count"]):
            with socket.socket(family(op["host"]), socket.SOCK_STREAM) as s:
                s.settimeout(5)
                try:
                    s.connect(addr(op["host"], op["port"]))
                except OSError as e:
                    if e.errno != errno.EPERM:
                        raise
                    continue
                return "OK"
        return "EPERM"
    raise ValueError("unknown op " + kind)


def main():
    out = []
    for op in json.loads(sys.argv[1]):
        try:
            out.append(run(op))
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "TIMEOUT")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
