# SPDX-License-Identifier: MIT
"""An AF_PACKET capture on lo, run outside the sandbox (in the test's network namespace):
every IPv4/IPv6 packet seen, as JSON. Usage: capture.py SECONDS [SINK_PORT...]

Prints "ready" once capturing, then, when stdin closes or SECONDS pass (whichever first), a
JSON list of {"family", "dst", "dport", "proto", "rthdr", "ipopts"}. Also binds a UDP sink on
[::]:SINK_PORT for each port given, so that datagrams sent there draw no ICMP error."""
import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def parse(frame):
    eth_type = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if eth_type == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0xF) * 4
        proto = ip[9]
        l4 = ip[ihl:]
        dport = struct.unpack("!H", l4[2:4])[0] if proto in (6, 17) and len(l4) >= 4 else 0
        return {"family": 4, "dst": socket.inet_ntop(socket.AF_INET, ip[16:20]), "dport": dport,
                "proto": proto, "rthdr": False, "ipopts": ihl > 20}
    if eth_type == 0x86DD and len(ip) >= 40:
        nh, off, rthdr = ip[6], 40, False
        for _ in range(8):
            if nh not in (0, 43, 44, 51, 60, 135) or len(ip) < off + 2:
                break
            rthdr = rthdr or nh == 43
            hl = 8 if nh == 44 else (ip[off + 1] + 2) * 4 if nh == 51 else (ip[off + 1] + 1) * 8
            nh, off = ip[off], off + hl
        l4 = ip[off:]
        dport = struct.unpack("!H", l4[2:4])[0] if nh in (6, 17) and len(l4) >= 4 else 0
        return {"family": 6, "dst": socket.inet_ntop(socket.AF_INET6, ip[24:40]), "dport": dport,
                "proto": nh, "rthdr": rthdr, "ipopts": False}
    return None


def main():
    seconds = float(sys.argv[1])
    sinks = []
    for p in sys.argv[2:]:
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind(("::", int(p)))
        sinks.append(u)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind(("lo", 0))
    print("ready", flush=True)
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(seen) < 10000:
        r, _, _ = select.select([s, sys.stdin] + sinks, [], [], 0.1)
        for u in sinks:
            if u in r:
                u.recvfrom(65535)
        if s in r:
            frame, meta = s.recvfrom(65535)
            # lo shows each packet twice (outgoing and incoming): keep the outgoing copy.
            if meta[2] == socket.PACKET_OUTGOING:
                p = parse(frame)
                if p:
                    seen.append(p)
        if sys.stdin in r and not sys.stdin.readline():
            break
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
