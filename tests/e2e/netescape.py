# SPDX-License-Identifier: MIT
"""Ways out of a sandbox through the network layer, tried from inside (test_escape_net.py).

Usage: netescape.py JSON, a list of operations; prints a JSON list with one result each: "OK"
or the errno name, or a list of those for operations with several steps.
  {"op": "rthdr_sockopt", "opt": 57|5|6, "via": A, "host": H, "port": P, "data": D}
     UDP6 socket; setsockopt(IPPROTO_IPV6, opt) with a routing header whose next hop is A
     (57 IPV6_RTHDR: a type 4 segment routing header; 5 IPV6_2292RTHDR: the same; 6
     IPV6_2292PKTOPTIONS: an IPV6_RTHDR control message of type 2), then sendto(H:P, D):
     [setsockopt result, sendto result]
  {"op": "rthdr_cmsg", "type": 2|4, "via": A, "host": H, "port": P, "data": D}
     sendmsg(H:P, D) with an IPV6_RTHDR control message whose next hop is A
  {"op": "ipopts_sockopt", "host": H, "port": P, "data": D}
     setsockopt(IPPROTO_IP, IP_OPTIONS, 4 NOPs), then sendto: [setsockopt, sendto]
  {"op": "retopts_cmsg", "host": H, "port": P, "data": D}
     sendmsg with an IP_RETOPTS control message (4 NOPs: IPv4 options on this datagram)
  {"op": "sendto", "host": H, "port": P, "data": D}                a plain datagram
  {"op": "dns", "host": H, "port": P, "name": N, "rthdr_via": A|null}
     a DNS query for N over UDP (with a routing header by setsockopt if rthdr_via):
     "OK" when an answer came back
  {"op": "other_sockopts"}
     options the kernel must see untouched: IP_TOS set and read back, IPV6_V6ONLY, and
     SO_SNDBUF with a 5000-byte buffer (more than a page: the sockopt hook's special case);
     then IP_OPTIONS with 5000 bytes: [tos read back, v6only, sndbuf, big IP_OPTIONS]
  {"op": "bind", "proto": "tcp"|"udp", "host": H, "port": P}        bind() only
  {"op": "connect", "proto": "tcp"|"udp", "host": H, "port": P}     connect() only
Every socket has a 3 s timeout.
"""
import errno
import json
import socket
import struct
import sys

IPV6_2292RTHDR = 5
IPV6_2292PKTOPTIONS = 6
IPV6_RTHDR = 57
IP_OPTIONS = 4
IP_RETOPTS = 7
NOPS = bytes([1, 1, 1, 1])


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def addr(host, port):
    return (host, port, 0, 0) if ":" in host else (host, port)


def srh(via):
    """A type 4 segment routing header (RFC 8754) with two segments: the kernel sends the
    packet to segments[segments_left] = via, and writes the sendto() address as segments[0]."""
    segs = socket.inet_pton(socket.AF_INET6, "::") + socket.inet_pton(socket.AF_INET6, via)
    # nexthdr, hdrlen (8-octet units after the first 8), type 4, segments_left 1,
    # last_entry 1, flags, tag
    return struct.pack("!BBBBBBH", 0, len(segs) // 8, 4, 1, 1, 0, 0) + segs


def rh2(via):
    """A type 2 routing header (Mobile IPv6, RFC 6275): one address, the next hop."""
    return struct.pack("!BBBB4x", 0, 2, 2, 1) + socket.inet_pton(socket.AF_INET6, via)


def cmsg_space(n):
    return socket.CMSG_SPACE(n)


def result(fn):
    try:
        fn()
        return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def udp(host):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(3)
    return s


def dns_query(name):
    q = struct.pack("!HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)


def run(op):
    kind = op["op"]
    data = op.get("data", "x").encode()
    dst = addr(op["host"], op["port"]) if "host" in op else None
    if kind == "rthdr_sockopt":
        with udp(op["host"]) as s:
            hdr = srh(op["via"])
            if op["opt"] == IPV6_2292PKTOPTIONS:
                hdr = struct.pack("iii", socket.CMSG_LEN(len(rh2(op["via"]))),
                                  socket.IPPROTO_IPV6, IPV6_2292RTHDR) + rh2(op["via"])
            first = result(lambda: s.setsockopt(socket.IPPROTO_IPV6, op["opt"], hdr))
            return [first, result(lambda: s.sendto(data, dst))]
    if kind == "rthdr_cmsg":
        hdr = srh(op["via"]) if op["type"] == 4 else rh2(op["via"])
        with udp(op["host"]) as s:
            return result(lambda: s.sendmsg([data], [(socket.IPPROTO_IPV6, IPV6_RTHDR, hdr)],
                                            0, dst))
    if kind == "ipopts_sockopt":
        with udp(op["host"]) as s:
            first = result(lambda: s.setsockopt(socket.IPPROTO_IP, IP_OPTIONS, NOPS))
            return [first, result(lambda: s.sendto(data, dst))]
    if kind == "retopts_cmsg":
        with udp(op["host"]) as s:
            return result(lambda: s.sendmsg([data], [(socket.IPPROTO_IP, IP_RETOPTS, NOPS)],
                                            0, dst))
    if kind == "sendto":
        with udp(op["host"]) as s:
            return result(lambda: s.sendto(data, dst))
    if kind == "dns":
        with udp(op["host"]) as s:
            if op.get("rthdr_via"):
                r = result(lambda: s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR,
                                                srh(op["rthdr_via"])))
                if r != "OK":
                    return r

            def ask():
                s.sendto(dns_query(op["name"]), dst)
                s.recvfrom(4096)
            return result(ask)
    if kind == "other_sockopts":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s4, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
            s4.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
            tos = s4.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
            v6 = result(lambda: s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1))
            big = struct.pack("i", 65536) + bytes(4996)
            sndbuf = result(lambda: s4.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, big))
            opts = result(lambda: s4.setsockopt(socket.IPPROTO_IP, IP_OPTIONS, bytes(5000)))
            return [tos, v6, sndbuf, opts]
    if kind in ("bind", "connect"):
        t = socket.SOCK_STREAM if op["proto"] == "tcp" else socket.SOCK_DGRAM
        with socket.socket(family(op["host"]), t) as s:
            s.settimeout(3)
            return result(lambda: (s.bind if kind == "bind" else s.connect)(dst))
    raise ValueError(f"unknown op {kind}")


def main():
    print(json.dumps([run(op) for op in json.loads(sys.argv[1])]))


if __name__ == "__main__":
    main()
