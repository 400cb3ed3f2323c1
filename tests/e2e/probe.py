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
  {"op": "reconnect", "host": H, "port": P, "then": P2, "data": "..."}
     one TCP socket: connect to P, disconnect (connect to AF_UNSPEC), connect to P2 and send
     data: the outcome of the second connect and its send
  {"op": "resolve", "name": N, "family": 0|4|6}
     getaddrinfo: the sorted addresses, or the EAI_* name of the failure
  {"op": "dns", "server": H, "port": P, "tcp": bool, "name": N, "qtype": T, "raw": hex}
     one DNS query by hand (or the raw bytes given): {"rcode", "answers", "from", "peer"}
     where answers are [type, data] pairs, from is the reply's source (UDP) and peer
     the connected peer (TCP, getpeername)
  {"op": "dns_burst", "server": H, "names": [N, ...]}
     every A query sent on one UDP socket before any answer is read (their answers reach
     sluice together): {name: sorted addresses} of the answers, in any order
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
    if kind == "reconnect":
        with socket.socket(family(op["host"]), socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(addr(op["host"], op["port"]))
            # connect(AF_UNSPEC): Python's connect() takes no such address; ctypes it is.
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            unspec = struct.pack("=H14x", socket.AF_UNSPEC)
            if libc.connect(s.fileno(), unspec, len(unspec)):
                raise OSError(ctypes.get_errno(), "disconnect")
            s.connect(addr(op["host"], op["then"]))
            s.send(op["data"].encode())
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


def dns_query(name, qtype, qid=0x4242):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


def dns_name(msg, off):
    labels, jumped, end = [], False, None
    for _ in range(128):
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumped = True
            continue
        if n == 0:
            return ".".join(labels), (end if jumped else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode())
        off += 1 + n
    raise ValueError("name loop")


def dns_parse(msg):
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    off, question = 12, None
    for _ in range(qd):
        name, off = dns_name(msg, off)
        question = question or name
        off += 4
    answers, ttls = [], []
    for _ in range(an):
        _, off = dns_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        ttls.append(ttl)
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 1:
            answers.append(["A", socket.inet_ntop(socket.AF_INET, rdata)])
        elif rtype == 28:
            answers.append(["AAAA", socket.inet_ntop(socket.AF_INET6, rdata)])
        elif rtype == 5:
            answers.append(["CNAME", dns_name(msg, off)[0]])
        else:
            answers.append([str(rtype), rdata.hex()])
        off += rdlen
    return {"id": qid, "rcode": flags & 0xF, "tc": bool(flags & 0x200), "answers": answers,
            "question": question, "ttls": ttls}


def dns_op(op):
    pkt = bytes.fromhex(op["raw"]) if "raw" in op else dns_query(op["name"], op.get("qtype", 1))
    fam = family(op["server"])
    dst = addr(op["server"], op.get("port", 53))
    if op.get("tcp"):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(dst)
            s.sendall(struct.pack(">H", len(pkt)) + pkt)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    break
                buf += chunk
            out = dns_parse(buf[2:])
            out["peer"] = list(s.getpeername()[:2])
            return out
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(pkt, dst)
        msg, src = s.recvfrom(65535)
        out = dns_parse(msg) if len(msg) >= 12 else {"rcode": None, "answers": []}
        if len(msg) >= 4 and len(msg) < 12:
            out["rcode"] = msg[3] & 0xF
        out["from"] = list(src[:2])
        return out


def dns_burst(op):
    names = op["names"]
    with socket.socket(family(op["server"]), socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect(addr(op["server"], op.get("port", 53)))
        for i, name in enumerate(names):
            s.send(dns_query(name, 1, qid=i + 1))
        got = {}
        for _ in names:
            msg = s.recv(65535)
            a = dns_parse(msg)
            got.setdefault(names[a["id"] - 1], set()).update(
                x[1] for x in a["answers"] if x[0] == "A")
    return {k: sorted(v) for k, v in got.items()}


def resolve(op):
    fam = {0: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[op.get("family", 0)]
    try:
        infos = socket.getaddrinfo(op["name"], None, fam, socket.SOCK_STREAM)
    except socket.gaierror as e:
        return {socket.EAI_NONAME: "EAI_NONAME", socket.EAI_AGAIN: "EAI_AGAIN",
                getattr(socket, "EAI_NODATA", -5): "EAI_NODATA"}.get(e.errno, f"EAI_{e.errno}")
    return sorted({i[4][0] for i in infos})


def main():
    out = []
    for op in json.loads(sys.argv[1]):
        try:
            if op["op"] == "resolve":
                out.append(resolve(op))
                continue
            if op["op"] == "dns":
                out.append(dns_op(op))
                continue
            if op["op"] == "dns_burst":
                out.append(dns_burst(op))
                continue
            out.append(run(op))
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "TIMEOUT")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
