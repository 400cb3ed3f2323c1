# SPDX-License-Identifier: MIT
"""The real upstreams of the proxy tests: a test PKI, a Python backend and nginx in front of it.

    TestPKI   a test CA (EC P-256) and one server certificate per name, made with openssl(1)
    Backend   plain HTTP/1.1 on 127.0.0.1 (ThreadingHTTPServer): /bytes/N, /chunked/N, /echo,
              /sha256, /headers, /ws (WebSocket echo), 404 otherwise
    Nginx     a private nginx (its own prefix, config, pid, logs; never /etc/nginx) terminating
              TLS with SNI on 127.0.0.20:443 and [::1]:443, plain HTTP on 127.0.0.20:80, and
              proxying everything but /static (answered by nginx itself, no Backend and no
              Python in the way: for latency figures), unbuffered, to the Backend; its JSON
              access log lets tests count requests and TCP connections
    Upstreams the three together, started in order and closed in reverse, even half-started

Every class has start() (returns self) and close() (idempotent, safe after a failed start):
close() stops what it started (by the pid it started, never by name) and removes the files and
directories it created. Set SLUICE_E2E_KEEP=1 to keep the files for post-mortems.

The body of /bytes/N and /chunked/N is the first N bytes of one fixed pseudo-random stream
(pattern(), iter_pattern(), pattern_sha256()), so tests can check any length without storing it.
"""
import base64
import errno
import hashlib
import http.server
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

NGINX = "/usr/sbin/nginx"
OPENSSL = "/usr/bin/openssl"

# The address that stands in for "the Internet" in the proxy tests, and the IPv6 one.
UPSTREAM_V4 = "127.0.0.20"
UPSTREAM_V6 = "::1"

DEFAULT_NAMES = ("api.test", "www.test", "ws.test", "v6.test", "git.internal.test", "npm.test")
# served name -> the name its (CA-signed) certificate is for: verification must fail.
DEFAULT_WRONG = {"wrongname.test": "other.test"}
# served with a certificate from a CA that is not in ca.pem: verification must fail.
DEFAULT_UNTRUSTED = ("untrusted.test",)
# served with a certificate of the trusted CA that names the host only in its subject CN (no
# subjectAltName): refused, as browsers and Go refuse it.
DEFAULT_NOSAN = ("nosan.test",)


def _keep():
    return os.environ.get("SLUICE_E2E_KEEP", "") not in ("", "0")


def _fmt(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Dir:
    """A directory an object owns: created if missing; close() removes it if it created it,
    otherwise only the paths registered with own()."""

    def __init__(self, path):
        self.path = Path(path)
        self.created = False
        self.owned = []

    def make(self):
        if not self.path.exists():
            self.path.mkdir(parents=True)
            self.created = True
        return self.path

    def own(self, p):
        self.owned.append(Path(p))
        return Path(p)

    def remove(self):
        if _keep():
            return
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            for p in reversed(self.owned):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        p.unlink()
                    except OSError:
                        pass
        self.created = False
        self.owned = []


# ---------------------------------------------------------------------------------------------
# The byte pattern


PATTERN_BLOCK = 1 << 16
_PATTERN_SEED = b"sluice-e2e-pattern-v1:"


def _pattern_block(i):
    return hashlib.shake_256(_PATTERN_SEED + i.to_bytes(8, "big")).digest(PATTERN_BLOCK)


def iter_pattern(n):
    """The first n bytes of the stream, in pieces of at most 64 KiB (about 500 MB/s)."""
    for i in itertools.count():
        if n <= 0:
            return
        block = _pattern_block(i)
        if n < PATTERN_BLOCK:
            block = block[:n]
        n -= len(block)
        yield block


def pattern(n):
    """The first n bytes of the stream (the body of /bytes/n and /chunked/n)."""
    return b"".join(iter_pattern(n))


def pattern_sha256(n):
    h = hashlib.sha256()
    for piece in iter_pattern(n):
        h.update(piece)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# TestPKI

_CA_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = {san}
"""


class TestPKI:
    """A test CA and server certificates, made with openssl in dir.

    After start():
      ca_pem, ca_key         the CA (EC P-256) that tests and sluiced (--upstream-ca) trust
      server_cert(name)      (cert, key) paths of what nginx presents for SNI name
      names                  names with a valid certificate (DNS SAN = the name)
      wrong                  {served name: name in its certificate}, e.g. wrongname.test is
                             served with a valid certificate for other.test
      untrusted              names served with a certificate of another CA (other-ca.pem)
      nosan                  names served with a certificate whose only name is its subject
                             CN (no subjectAltName)
      default                (cert, key) for connections without SNI / unknown names:
                             DNS default.test and IP SANs (127.0.0.20, ::1 by default)
    issue(label, dns=(), ips=(), ca="ca", san=True) makes more certificates.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, dir, names=DEFAULT_NAMES, wrong=None, untrusted=DEFAULT_UNTRUSTED,
                 ips=(UPSTREAM_V4, UPSTREAM_V6), days=30, nosan=DEFAULT_NOSAN):
        self.dir = _Dir(dir)
        self.names = tuple(names)
        self.wrong = dict(DEFAULT_WRONG if wrong is None else wrong)
        self.untrusted = tuple(untrusted)
        self.nosan = tuple(nosan)
        self.ips = tuple(ips)
        self.days = days
        self.certs = {}  # label -> (cert, key)
        self.served = {}  # SNI name -> label
        self.ca_pem = self.ca_key = None
        self.default = None

    @property
    def path(self):
        return self.dir.path

    def _run(self, *argv):
        r = subprocess.run([OPENSSL, *argv], capture_output=True, text=True, timeout=30,
                           cwd=self.dir.path)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(argv)} failed: {r.stderr.strip()}")

    def _make_ca(self, label, cn):
        d = self.dir.path
        cnf = self.dir.own(d / f"{label}.cnf")
        cnf.write_text(_CA_CNF)
        key, pem = self.dir.own(d / f"{label}.key"), self.dir.own(d / f"{label}.pem")
        self._run("req", "-x509", "-new", "-config", str(cnf), "-extensions", "v3_ca",
                  "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", str(key), "-out", str(pem), "-days", str(self.days), "-sha256",
                  "-subj", f"/O=sluice e2e/CN={cn}")
        return str(pem), str(key)

    def start(self):
        try:
            self.dir.make()
            self.ca_pem, self.ca_key = self._make_ca("ca", "sluice e2e test CA")
            if self.untrusted:
                self._make_ca("other-ca", "sluice e2e untrusted CA")
            jobs = [("default", ["default.test"], self.ips, "ca")]
            jobs += [(n, [n], (), "ca") for n in self.names]
            jobs += [(f"{n}-wrong", [cert_name], (), "ca") for n, cert_name in self.wrong.items()]
            jobs += [(f"{n}-untrusted", [n], (), "other-ca") for n in self.untrusted]
            jobs += [(f"{n}-nosan", [n], (), "ca", False) for n in self.nosan]
            threads = [threading.Thread(target=self._issue_job, args=j) for j in jobs]
            self._errors = []
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self._errors:
                raise self._errors[0]
            self.default = self.certs["default"]
            self.served = {n: n for n in self.names}
            self.served.update({n: f"{n}-wrong" for n in self.wrong})
            self.served.update({n: f"{n}-untrusted" for n in self.untrusted})
            self.served.update({n: f"{n}-nosan" for n in self.nosan})
        except BaseException:
            self.close()
            raise
        return self

    def _issue_job(self, *args):
        try:
            self.issue(*args)
        except Exception as e:  # reported by start()
            self._errors.append(e)

    def issue(self, label, dns=(), ips=(), ca="ca", san=True):
        """A P-256 server certificate signed by ca ("ca" or "other-ca") with these SANs
        (san=False: none, the first name only in the subject CN)."""
        d = self.dir.path
        names = ",".join([f"DNS:{n}" for n in dns] + [f"IP:{i}" for i in ips])
        cnf = self.dir.own(d / f"{label}.cnf")
        text = _LEAF_CNF.format(san=names)
        if not san:
            text = text.replace(f"subjectAltName = {names}\n", "")
        cnf.write_text(text)
        key, csr, crt = (self.dir.own(d / f"{label}.{e}") for e in ("key", "csr", "pem"))
        cn = (list(dns) + list(ips))[0]
        self._run("req", "-new", "-config", str(cnf), "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
                  "-subj", f"/O=sluice e2e/CN={cn}")
        self._run("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"), "-CAkey",
                  str(d / f"{ca}.key"), "-set_serial", "0x" + secrets.token_hex(16),
                  "-days", str(self.days), "-sha256", "-extfile", str(cnf), "-extensions", "leaf",
                  "-out", str(crt))
        self.certs[label] = (str(crt), str(key))
        return self.certs[label]

    def server_cert(self, name):
        """(cert, key) nginx presents for SNI name (the default one for unknown names)."""
        label = self.served.get(name.lower().rstrip("."))
        return self.certs[label] if label else self.default

    def close(self):
        self.dir.remove()


# ---------------------------------------------------------------------------------------------
# WebSocket frames (server side; wsclient.py has the client side)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX_MESSAGE = 16 << 20


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.strip().encode() + WS_GUID).digest()).decode()


def ws_mask(data, mask):
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def _read_exact(rfile, n):
    data = rfile.read(n)
    if data is None or len(data) != n:
        raise ConnectionError("connection closed in the middle of a WebSocket frame")
    return data


def ws_read_frame(rfile, require_mask=True):
    """(fin, opcode, payload) of the next frame."""
    b0, b1 = _read_exact(rfile, 2)
    fin, opcode, masked, length = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if b0 & 0x70:
        raise ValueError("reserved bits set")
    if require_mask and not masked:
        raise ValueError("unmasked client frame")
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(rfile, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(rfile, 8))
    if length > WS_MAX_MESSAGE:
        raise ValueError("frame too large")
    mask = _read_exact(rfile, 4) if masked else None
    payload = _read_exact(rfile, length)
    return bool(fin), opcode, ws_mask(payload, mask) if mask else payload


def ws_frame(opcode, payload, fin=True, mask=None):
    head = bytes([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([mbit | n])
    elif n < 1 << 16:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        return head + mask + ws_mask(payload, mask)
    return head + payload


def ws_echo(rfile, sock):
    """Echoes every text and binary message (fragmented ones reassembled), answers pings,
    returns after the close handshake (the close frame echoed)."""
    message, msg_op = None, None
    while True:
        try:
            fin, op, payload = ws_read_frame(rfile)
        except ValueError:
            sock.sendall(ws_frame(0x8, struct.pack("!H", 1002)))
            return
        except (ConnectionError, OSError):
            return
        if op == 0x8:
            code = payload[:2] if len(payload) >= 2 else b""
            sock.sendall(ws_frame(0x8, code))
            return
        if op == 0x9:
            sock.sendall(ws_frame(0xA, payload))
        elif op == 0xA:
            pass
        elif op in (0x1, 0x2):
            message, msg_op = [payload], op
        elif op == 0x0 and message is not None:
            message.append(payload)
        else:
            sock.sendall(ws_frame(0x8, struct.pack("!H", 1002)))
            return
        if op in (0x0, 0x1, 0x2) and fin:
            sock.sendall(ws_frame(msg_op, b"".join(message)))
            message = None


# ---------------------------------------------------------------------------------------------
# Backend

ECHO_MAX = 64 << 20
_CHUNK_SIZES = (1, 13, 4096, 65536)  # /chunked/N cycles through these chunk sizes


def _reslice(pieces, sizes):
    """The bytes of pieces, re-cut into chunks of the given sizes (cycled)."""
    buf = bytearray()
    sizes = itertools.cycle(sizes)
    want = next(sizes)
    for p in pieces:
        buf += p
        while len(buf) >= want:
            yield bytes(buf[:want])
            del buf[:want]
            want = next(sizes)
    if buf:
        yield bytes(buf)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-e2e-backend"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 600  # idle keep-alive connections (nginx's pool) do not pin a thread forever

    def setup(self):
        super().setup()
        self.server.track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.route()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- bodies

    def body(self, bufsize=1 << 20):
        """The request body in pieces, Content-Length or chunked, never all in memory."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise ConnectionError("bad chunk size line")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    d = self.rfile.read(min(size, bufsize))
                    if not d:
                        raise ConnectionError("connection closed in a chunk")
                    size -= len(d)
                    yield d
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise ConnectionError("bad chunk end")
        else:
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                d = self.rfile.read(min(n, bufsize))
                if not d:
                    raise ConnectionError("connection closed in the body")
                n -= len(d)
                yield d

    def drain(self):
        for _ in self.body():
            pass

    def respond(self, status, body=b"", ctype="application/octet-stream", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def respond_json(self, obj, status=200):
        self.respond(status, json.dumps(obj).encode() + b"\n", "application/json")

    # -- routes

    def route(self):
        path = urlsplit(self.path).path
        self.server.backend.record(self)
        parts = path.strip("/").split("/")
        try:
            if parts[0] in ("bytes", "chunked") and len(parts) == 2 and \
                    self.command in ("GET", "HEAD"):
                self.drain()
                try:
                    n = int(parts[1])
                    if n < 0:
                        raise ValueError
                except ValueError:
                    return self.respond(400, b"bad length\n", "text/plain")
                return self.send_pattern(n, chunked=parts[0] == "chunked")
            if parts[0] == "slow" and len(parts) == 2:
                # /slow/MS: answers after MS milliseconds (at most 10 s)
                self.drain()
                time.sleep(min(int(parts[1]), 10000) / 1000)
                return self.respond(200, b"slow\n", "text/plain")
            if path == "/echo" and self.command in ("POST", "PUT", "PATCH"):
                return self.echo()
            if path == "/sha256" and self.command in ("POST", "PUT"):
                h, n = hashlib.sha256(), 0
                for piece in self.body():
                    h.update(piece)
                    n += len(piece)
                return self.respond_json({"length": n, "sha256": h.hexdigest()})
            if path == "/headers":
                self.drain()
                return self.respond_json({
                    "method": self.command, "path": self.path, "version": self.request_version,
                    "headers": {k.lower(): ", ".join(self.headers.get_all(k))
                                for k in dict.fromkeys(self.headers.keys())},
                    "raw": [[k, v] for k, v in self.headers.items()]})
            if path == "/ws" and self.command == "GET":
                return self.websocket()
            self.drain()
            self.respond(404, b"not found\n", "text/plain")
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True

    def send_pattern(self, n, chunked):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not chunked:
            for piece in iter_pattern(n):
                self.wfile.write(piece)
            return
        out = bytearray()
        for piece in _reslice(iter_pattern(n), _CHUNK_SIZES):
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
            if len(out) >= 1 << 16:
                self.wfile.write(bytes(out))
                out.clear()
        out += b"0\r\n\r\n"
        self.wfile.write(bytes(out))

    def echo(self):
        data = bytearray()
        for piece in self.body():
            data += piece
            if len(data) > ECHO_MAX:
                self.drain()
                return self.respond(413, b"echo body too large\n", "text/plain")
        self.respond(200, bytes(data), self.headers.get("Content-Type",
                                                        "application/octet-stream"),
                     headers=[("X-Echo-Length", str(len(data)))])

    def websocket(self):
        h = self.headers
        key = h.get("Sec-WebSocket-Key", "")
        conn_tokens = [t.strip().lower() for t in h.get("Connection", "").split(",")]
        if "websocket" not in h.get("Upgrade", "").lower() or "upgrade" not in conn_tokens \
                or h.get("Sec-WebSocket-Version", "").strip() != "13" or not key.strip():
            self.drain()
            return self.respond(400, b"not a WebSocket handshake\n", "text/plain")
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(key))
        self.end_headers()
        self.close_connection = True
        self.server.backend.websockets += 1
        ws_echo(self.rfile, self.connection)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, backend):
        self.address_family = _family(addr[0])
        self.backend = backend
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def track(self, sock, add):
        with self.conns_lock:
            if add:
                self.conns.add(sock)
                self.backend.connections += 1
            else:
                self.conns.discard(sock)


class Backend:
    """The plain HTTP/1.1 origin behind nginx, on host:port (port 0: any free one).

    Routes: GET|HEAD /bytes/N (Content-Length) and /chunked/N (chunked, odd chunk sizes): the
    first N bytes of pattern(); POST|PUT /echo: the body back (Content-Length or chunked
    request; X-Echo-Length); POST|PUT /sha256: {"length", "sha256"} of the streamed body;
    /headers: {"method", "path", "version", "headers": {lowercased name: value},
    "raw": [[name, value], ...]}; GET /ws: WebSocket echo; anything else 404.

    requests: the last requests seen, newest last: {"method", "path", "headers": [[k, v]...],
    "client"}; connections: TCP connections accepted; websockets: handshakes completed.
    """

    def __init__(self, host="127.0.0.1", port=0):
        self.host, self.port = host, port
        self.server = self.thread = None
        self.requests = deque(maxlen=10000)
        self.connections = 0
        self.websockets = 0
        self.lock = threading.Lock()

    pattern = staticmethod(pattern)
    iter_pattern = staticmethod(iter_pattern)
    pattern_sha256 = staticmethod(pattern_sha256)

    def start(self):
        self.server = _Server((self.host, self.port), self)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True,
                                       name="upstreams-backend")
        self.thread.start()
        return self

    @property
    def address(self):
        return _fmt(self.host, self.port)

    def url(self, path="/"):
        return f"http://{self.address}{path}"

    def record(self, handler):
        with self.lock:
            self.requests.append({"method": handler.command, "path": handler.path,
                                  "headers": [[k, v] for k, v in handler.headers.items()],
                                  "client": handler.client_address[:2]})

    def requests_for(self, path_prefix):
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]

    def close(self):
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.server.conns_lock:
            conns = list(self.server.conns)
        for s in conns:  # keep-alive and WebSocket connections still open
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)
        self.server = None


# ---------------------------------------------------------------------------------------------
# Nginx


class AddressBusy(RuntimeError):
    pass


def check_bindable(addrs):
    """Raises AddressBusy (a RuntimeError) naming the first (host, port) something else
    listens on, or RuntimeError if it cannot be bound at all."""
    for host, port in addrs:
        s = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise AddressBusy(f"{_fmt(host, port)} is busy: something else (another nginx, "
                                  "another test run?) listens there; pass other listen "
                                  "addresses/ports") from None
            if e.errno == errno.EACCES:
                raise RuntimeError(f"cannot listen on {_fmt(host, port)}: ports below 1024 "
                                   "need root") from None
            raise RuntimeError(f"cannot listen on {_fmt(host, port)}: {e.strerror}") from None
        finally:
            s.close()


def free_port(hosts=(UPSTREAM_V4, UPSTREAM_V6), avoid=()):
    """A TCP port free on every one of hosts at once (not in avoid)."""
    for _ in range(100):
        first = socket.socket(_family(hosts[0]), socket.SOCK_STREAM)
        try:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            if port in avoid:
                continue
            check_bindable([(h, port) for h in hosts[1:]])
            return port
        except RuntimeError:
            continue
        finally:
            first.close()
    raise RuntimeError(f"no port free on all of {hosts}")


# One JSON object per request. $connection is nginx's serial number of the TCP connection,
# $connection_requests how many requests it has carried so far. The h_* fields are request
# headers as the client (sluice's proxy) sent them: nginx itself rewrites hop-by-hop headers
# before the Backend sees them, so they can only be checked here.
_LOG_FIELDS = [
    ("time", "$time_iso8601"), ("connection", "$connection"),
    ("connection_requests", "$connection_requests"), ("remote_addr", "$remote_addr"),
    ("remote_port", "$remote_port"), ("server_addr", "$server_addr"),
    ("server_port", "$server_port"), ("scheme", "$scheme"), ("method", "$request_method"),
    ("uri", "$request_uri"), ("protocol", "$server_protocol"), ("status", "$status"),
    ("host", "$host"), ("http_host", "$http_host"), ("sni", "$ssl_server_name"),
    ("ssl_protocol", "$ssl_protocol"), ("alpn", "$ssl_alpn_protocol"),
    ("request_length", "$request_length"), ("bytes_sent", "$bytes_sent"),
    ("body_bytes_sent", "$body_bytes_sent"), ("request_time", "$request_time"),
    ("upstream_status", "$upstream_status"), ("user_agent", "$http_user_agent"),
    ("h_connection", "$http_connection"), ("h_keep_alive", "$http_keep_alive"),
    ("h_proxy_connection", "$http_proxy_connection"), ("h_te", "$http_te"),
    ("h_trailer", "$http_trailer"), ("h_upgrade", "$http_upgrade"),
    ("h_transfer_encoding", "$http_transfer_encoding"),
    ("h_content_length", "$http_content_length"), ("h_expect", "$http_expect"),
    ("h_proxy_authorization", "$http_proxy_authorization"),
    ("h_x_auth_token", "$http_x_auth_token"), ("h_authorization", "$http_authorization"),
    ("h_x_handler", "$http_x_handler"),
]
_LOG_INTS = ("connection", "connection_requests", "remote_port", "server_port", "status",
             "request_length", "bytes_sent", "body_bytes_sent")

_ROUTES = """\
location = /static {{
    default_type text/plain;
    return 200 "answered by nginx itself\\n";
}}
location / {{
    proxy_pass http://sluice_backend;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_connect_timeout 5s;
    proxy_send_timeout {timeout}s;
    proxy_read_timeout {timeout}s;
}}
location = /ws {{
    proxy_pass http://sluice_backend;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection "upgrade";
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_connect_timeout 5s;
    proxy_send_timeout 3600s;
    proxy_read_timeout 3600s;
}}
"""


class Nginx:
    """A private nginx in dir: TLS with SNI on the https addresses, plain HTTP on the http
    ones, everything but /static (nginx's own answer) proxied unbuffered over HTTP/1.1 to
    backend.

    https, http: [(host, port), ...]; by default 127.0.0.20:443 and [::1]:443, and
    127.0.0.20:80. start() raises AddressBusy if one is taken, with its address in the message.
    Servers: one per pki name with its certificate, pki.wrong and pki.untrusted names with
    their bad ones, and a default server (no or unknown SNI) with pki.default.

    requests_seen(since=0): the access log as dicts (see _LOG_FIELDS), from byte offset since;
    mark(): the current offset; connections_seen(...): the distinct $connection numbers;
    wait_requests(n, ...): polls until n requests match (nginx logs a request once it is
    finished, which can be a moment after the client has its response).
    """

    def __init__(self, dir, pki, backend, https=((UPSTREAM_V4, 443), (UPSTREAM_V6, 443)),
                 http=((UPSTREAM_V4, 80),), body_timeout=600, extra_http="", extra_server="",
                 http2=False):
        self.dir = _Dir(dir)
        self.http2 = http2  # HTTP/2 on the https addresses (ALPN h2, http/1.1)
        self.pki, self.backend = pki, backend
        self.https = [tuple(a) for a in https]
        self.http = [tuple(a) for a in http]
        self.body_timeout = body_timeout
        self.extra_http, self.extra_server = extra_http, extra_server
        self.proc = None
        p = self.dir.path
        self.conf = p / "nginx.conf"
        self.pid_file = p / "nginx.pid"
        self.access_log = p / "access.log"
        self.error_log = p / "error.log"
        self.stderr_log = p / "stderr.log"

    @property
    def https_port(self):
        return self.https[0][1] if self.https else None

    @property
    def http_port(self):
        return self.http[0][1] if self.http else None

    def url(self, name, path="/", scheme="https"):
        port = self.https_port if scheme in ("https", "wss") else self.http_port
        default = 443 if scheme in ("https", "wss") else 80
        host = f"[{name}]" if ":" in name else name
        return f"{scheme}://{host}{'' if port == default else f':{port}'}{path}"

    def _listen(self, addrs, ssl, default):
        opts = (" ssl" if ssl else "") + (" http2" if ssl and self.http2 else "") + \
            (" default_server" if default else "")
        out = []
        for host, port in addrs:
            # ipv6only only matters for [::], where it is on by default (and stays on, so a
            # wildcard [::] listener never takes IPv4 connections from 0.0.0.0 ones).
            extra = " ipv6only=on" if default and host == "::" else ""
            out.append(f"    listen {_fmt(host, port)}{opts}{extra};")
        return "\n".join(out)

    def _server(self, names, cert, addrs, ssl, default=False):
        lines = ["server {", self._listen(addrs, ssl, default),
                 f"    server_name {' '.join(names) if names else '_'};"]
        if ssl:
            lines += [f"    ssl_certificate {cert[0]};", f"    ssl_certificate_key {cert[1]};"]
        lines += ["    include routes.conf;", self.extra_server, "}"]
        return "\n".join(lines)

    def config(self):
        p = self.dir.path
        fmt = "{" + ",".join(f'"{k}":"{v}"' for k, v in _LOG_FIELDS) + "}"
        servers = []
        if self.https:
            servers.append(self._server([], self.pki.default, self.https, True, default=True))
            for name in [*self.pki.names, *self.pki.wrong, *self.pki.untrusted,
                         *self.pki.nosan]:
                servers.append(self._server([name], self.pki.server_cert(name), self.https,
                                            True))
        if self.http:
            servers.append(self._server([], None, self.http, False, default=True))
        tmp = p / "tmp"
        return f"""# sluice e2e: a private nginx (started with -p {p}/ -c {self.conf})
pid {self.pid_file};
lock_file {p}/nginx.lock;
error_log {self.error_log} info;
worker_rlimit_nofile 8192;
events {{
    worker_connections 4096;
}}
http {{
    default_type application/octet-stream;
    log_format sluice escape=json '{fmt}';
    access_log {self.access_log} sluice;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_max_body_size 0;
    client_body_timeout {self.body_timeout}s;
    send_timeout {self.body_timeout}s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    upstream sluice_backend {{
        server {self.backend.address};
        keepalive 32;
    }}
{self.extra_http}
{chr(10).join(servers)}
}}
"""

    def start(self, timeout=10):
        if self.proc is not None:
            raise RuntimeError("nginx already started")
        check_bindable(self.https + self.http)
        p = self.dir.make()
        for f in (self.conf, self.pid_file, self.access_log, self.error_log, self.stderr_log,
                  p / "routes.conf", p / "tmp", p / "nginx.lock"):
            self.dir.own(f)
        (p / "tmp").mkdir(exist_ok=True)
        (p / "routes.conf").write_text(_ROUTES.format(timeout=self.body_timeout))
        self.conf.write_text(self.config())
        for f in (self.pid_file, self.access_log):
            if f.exists():
                f.unlink()
        self.access_log.touch()
        with open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-e", str(self.error_log), "-p", f"{p}/", "-c", str(self.conf),
                 "-g", "daemon off; master_process off;"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = list(self.https + self.http)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                ready = int(self.pid_file.read_text().strip()) == self.proc.pid
            except (OSError, ValueError):
                ready = False
            while ready and pending:
                host, port = pending[0]
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    pending.pop(0)
                except OSError:
                    break
            if ready and not pending:
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not start in {timeout}s:\n{self.logs()}")

    def logs(self):
        out = []
        for f in (self.stderr_log, self.error_log):
            try:
                out.append(f.read_text(errors="replace")[-4000:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self):
        """Fast shutdown (SIGTERM) of the nginx this object started; SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        self.dir.remove()

    # -- the access log

    def mark(self):
        try:
            return self.access_log.stat().st_size
        except OSError:
            return 0

    def requests_seen(self, since=0):
        try:
            with open(self.access_log, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:  # a last line without its newline is unfinished
            e = json.loads(line)
            for k in _LOG_INTS:
                try:
                    e[k] = int(e[k])
                except (ValueError, KeyError):
                    pass
            out.append(e)
        return out

    @staticmethod
    def _match(e, match):
        return all((v(e[k]) if callable(v) else e[k] == v) for k, v in match.items())

    def matching(self, since=0, **match):
        """Requests whose fields equal the given values (or satisfy given callables), e.g.
        matching(uri=lambda u: u.startswith("/bytes/"), host="api.test")."""
        return [e for e in self.requests_seen(since) if self._match(e, match)]

    def connections_seen(self, since=0, **match):
        """The distinct TCP connections (nginx's $connection) of the matching requests."""
        return sorted({e["connection"] for e in self.matching(since, **match)})

    def wait_requests(self, n, since=0, timeout=5, **match):
        deadline = time.monotonic() + timeout
        while True:
            got = self.matching(since, **match)
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------


class Upstreams:
    """TestPKI in dir/pki, a Backend, Nginx in dir/nginx: started in that order; close() stops
    them in reverse, whatever was started. kw goes to Nginx (https=, http=, ...)."""

    def __init__(self, dir, pki_kw=None, **nginx_kw):
        self.dir = _Dir(dir)
        self.pki = TestPKI(self.dir.path / "pki", **(pki_kw or {}))
        self.backend = Backend()
        self.nginx = Nginx(self.dir.path / "nginx", self.pki, self.backend, **nginx_kw)

    def start(self):
        try:
            self.dir.make()
            self.pki.start()
            self.backend.start()
            self.nginx.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        errors = []
        for part in (self.nginx, self.backend, self.pki):
            try:
                part.close()
            except Exception as e:  # close the others anyway
                errors.append(e)
        if not errors and self.dir.created and not _keep():
            try:
                self.dir.path.rmdir()  # empty unless someone else put files there
                self.dir.created = False
            except OSError:
                pass
        if errors:
            raise errors[0]
