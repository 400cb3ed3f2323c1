# SPDX-License-Identifier: MIT
"""Runs in a sandbox: one way of getting bytes past the kernel SNI check (bpf/sni.h) to a
checked passthrough destination, and says how each send went.

Usage: snihostile.py JSON with keys: mode, host (an IPv6 address: an AF_INET6 socket), port
(443), sni. Modes:
  hello       one ClientHello for sni, in one write
  split       the ClientHello one byte per write, TCP_NODELAY (corked by the kernel)
  ech         a ClientHello with an Encrypted Client Hello extension
  garbage     bytes that are no TLS record
  huge        a record header announcing 16 KiB + 1 (more than TLS allows), then its bytes
  tfo         sendto(MSG_FASTOPEN) of junk in the SYN, then a good ClientHello
  tfo_connect TCP_FASTOPEN_CONNECT: connect(), junk in the first write, then a good hello
  hold        one ClientHello, then "ready" on stdout, then reads until the connection ends
              and prints "closed" (a flow for a switch to keep or close)
  blocked     a second thread blocked in send() of junk while connect() waits (the listener's
              accept queue is full, so the SYN is retransmitted a second later), then a good
              ClientHello from the first thread
Prints JSON: {"local": [addr, port], "sends": ["ok" | errno name, ...]}."""
import errno
import json
import socket
import sys
import threading
import time

from hello import client_hello

TCP_FASTOPEN_CONNECT = 30
TCP_FASTOPEN_NO_COOKIE = 34
MSG_FASTOPEN = 0x20000000


def send(s, data, out, flags=0):
    try:
        s.sendall(data, flags)
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))


def main():
    a = json.loads(sys.argv[1])
    addr = (a["host"], a.get("port", 443))
    mode = a["mode"]
    hello = client_hello(a.get("sni"), mode == "ech")
    sends = []
    out = {}
    s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
    s.settimeout(10)
    if mode == "tfo":
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        try:
            s.sendto(b"JUNK-IN-THE-SYN" * 8, MSG_FASTOPEN, addr)
            sends.append("ok")
        except OSError as e:
            sends.append(errno.errorcode.get(e.errno, str(e.errno)))
        time.sleep(0.3)
        send(s, hello, sends)
    elif mode == "tfo_connect":
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        s.connect(addr)
        send(s, b"JUNK-IN-THE-SYN" * 8, sends)
        time.sleep(0.3)
        send(s, hello, sends)
    elif mode == "blocked":
        s.settimeout(None)
        t = threading.Thread(target=s.connect, args=(addr,))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.3)  # the SYN went unanswered: connect() waits for its retransmission
        junk = []
        b = threading.Thread(target=send, args=(s, b"JUNK-OF-A-BLOCKED-THREAD" * 8, junk))
        b.start()
        t.join(10)
        out["connect_s"] = time.monotonic() - t0
        b.join(10)
        sends.extend(junk)
        time.sleep(0.3)
        send(s, hello, sends)
    else:
        s.connect(addr)
        if mode == "hold":
            s.sendall(hello)
            print("ready", flush=True)
            s.settimeout(None)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            print("closed", flush=True)
            return
        if mode == "split":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(hello)):
                send(s, hello[i:i + 1], sends)
                if sends[-1] != "ok":
                    break
        elif mode == "garbage":
            send(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4, sends)
        elif mode == "huge":
            body = b"\x01" + b"\x00" * ((1 << 14) + 1 - 1)
            send(s, b"\x16\x03\x01" + ((1 << 14) + 1).to_bytes(2, "big") + body, sends)
        else:
            send(s, hello, sends)
    local = list(s.getsockname())
    time.sleep(0.3)  # the upstream reads what came through before we close
    s.close()
    out.update(local=local, sends=sends)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
