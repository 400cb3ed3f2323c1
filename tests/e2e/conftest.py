# SPDX-License-Identifier: MIT
"""Fixtures of sluice's end-to-end tests: a real sluiced, real cgroups, real servers.

Everything a test creates is named after this run (sluice-e2e-<pid>) and removed at the end,
even when the test fails: cgroups (their processes are ones we started), the daemon's pinned
BPF objects, its socket and state directory. Processes are only ever stopped by the pid we
started. Traffic goes to loopback only.

The whole run happens in a network namespace of its own (private_netns() below): its
loopback addresses and ports (nginx on 127.0.0.20:443, the stand-ins' servers, ...) are
this run's alone, so two runs at once (two worktrees, two CI jobs) never meet. cgroups and
BPF objects are not per network namespace: they are named after the run instead.
"""
import ctypes
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `make test SAN=1` runs the tests against build-san/ (SLUICE_BUILD) and sets SLUICE_SAN: every
# sluiced then writes sanitizer reports to files that Daemon.cleanup() checks.
BUILD = Path(os.environ.get("SLUICE_BUILD") or ROOT / "build")
SAN = os.environ.get("SLUICE_SAN", "")
# Latency bounds of the timing tests are multiplied by this: the sanitized sluiced runs several
# times slower, and that run checks memory, not speed. SLUICE_E2E_SLOW overrides it.
SLOW = float(os.environ.get("SLUICE_E2E_SLOW") or (8 if SAN else 1))
# Benchmarks under ASan measure ASan.
collect_ignore = ["test_bench_smoke.py"] if SAN else []
PY = "/usr/bin/python3"
PROBE = str(Path(__file__).with_name("probe.py"))
IN_SANDBOX = str(ROOT / "tools" / "in-sandbox")
RUN_ID = f"sluice-e2e-{os.getpid()}"


def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4].replace("\\040", " ")
    raise RuntimeError("no cgroup2 mount")


def pytest_report_header(config):
    return f"sluice binaries: {BUILD}" + (f" (sanitized: {SAN})" if SAN else "")


CLONE_NEWNET = 0x40000000


def private_netns():
    """Moves this process into a new network namespace with only lo, up (what `unshare -n`
    does), before any fixture binds or starts anything: every thread and process the tests
    start later inherits it, and it goes away with the last of them. The namespace holds the
    fixed loopback addresses the fixtures bind, so parallel runs cannot collide
    (AddressBusy). Nothing here can reach another network namespace but the ones tests make."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise pytest.UsageError(f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    r = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                       timeout=30)
    if r.returncode:
        raise pytest.UsageError(f"ip link set lo up in the test namespace: {r.stderr.strip()}")


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("sluice's end-to-end tests load BPF programs: run them as root")
    for b in ("sluiced", "sluice"):
        if not (BUILD / b).exists():
            raise pytest.UsageError(f"{BUILD / b} is missing: run make first")
    private_netns()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("sluiced", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Daemon:
    """One sluiced with its own socket, state directory and pin directory."""

    def __init__(self, workdir, name, extra=()):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "sluiced.sock")
        self.state = str(self.dir / "state")
        self.bpffs = f"/sys/fs/bpf/{RUN_ID}-{name}"
        self.log = str(self.dir / "sluiced.log")
        self.extra = list(extra)
        self.proc = None

    def argv(self, *more):
        return [str(BUILD / "sluiced"), "--foreground", "--socket", self.socket,
                "--state-dir", self.state, "--bpffs-dir", self.bpffs, "--log", self.log,
                *self.extra, *more]

    def san_env(self):
        """The environment of a sanitized sluiced: reports go to files (DIR/san.<pid>), never
        to a pipe nobody reads."""
        if not SAN:
            return None
        log = str(self.dir / "san")
        return dict(os.environ,
                    ASAN_OPTIONS=f"detect_leaks=1:log_path={log}:abort_on_error=0",
                    UBSAN_OPTIONS=f"print_stacktrace=1:log_path={log}")

    def san_reports(self):
        """Sanitizer reports of every sluiced this object started (SAN builds only): a file
        appears only when there is something to report ("ERROR: AddressSanitizer",
        "ERROR: LeakSanitizer", "runtime error:", or a sanitizer that could not run)."""
        out = []
        for p in sorted(self.dir.glob("san.*")):
            text = p.read_text(errors="replace")
            if text.strip():
                out.append(f"{p.name}:\n{text}")
        return out

    def start(self, *more, timeout=20):
        self.proc = subprocess.Popen(self.argv(*more), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=self.san_env())
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                line = self.proc.stdout.readline()
                if line.strip() == "ready" or not line:
                    break
            if self.proc.poll() is not None:
                break
        if line.strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"sluiced did not start: {self.read_log()}")
        return self

    def read_log(self):
        try:
            return Path(self.log).read_text()
        except OSError:
            return "(no log)"

    def signal(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args, input=None, timeout=30):
        env = dict(os.environ, SLUICE_SOCKET=self.socket)
        return subprocess.run([str(BUILD / "sluice"), *args], capture_output=True, text=True,
                              env=env, input=input, timeout=timeout)

    def api(self, method, path, body=None, raw=None):
        conn = UnixHTTPConnection(self.socket)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def add(self, name, cgroup, policy_path):
        r = self.cli("sandbox", "add", name, "--cgroup", str(cgroup), "--policy", str(policy_path))
        assert r.returncode == 0, r.stderr
        return r

    def metrics(self):
        status, text = self.api("GET", "/v1/metrics")
        assert status == 200
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = int(v)
        return out

    def events(self, sandbox=None):
        args = ["events"] + (["--sandbox", sandbox] if sandbox else [])
        r = self.cli(*args)
        assert r.returncode == 0, r.stderr
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def cleanup(self):
        self.stop()
        purge_pins(self.bpffs)
        reports = self.san_reports() if SAN else []
        if not os.environ.get("SLUICE_E2E_KEEP") and not reports:  # keep what shows a failure
            shutil.rmtree(self.dir, ignore_errors=True)
        # A leak report is written when sluiced exits (SIGTERM above); a SIGKILLed one has none.
        assert not reports, "sanitizer reports of sluiced:\n" + "\n".join(reports)


def purge_pins(path):
    """Unpinning a link with no other reference detaches it."""
    if not os.path.isdir(path):
        return
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for f in filenames:
            try:
                os.unlink(os.path.join(dirpath, f))
            except OSError:
                pass
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


class Cgroups:
    """cgroups under <cgroup2>/sluice-e2e-<pid>/, removed at the end."""

    def __init__(self):
        self.root = Path(cgroup2_root()) / RUN_ID
        self.made = []

    def make(self, rel):
        p = self.root / rel
        p.mkdir(parents=True, exist_ok=True)
        self.made.append(p)
        return p

    def cleanup(self):
        if not self.root.exists():
            return
        dirs = sorted((Path(d) for d, _, _ in os.walk(self.root)), key=lambda p: -len(p.parts))
        for d in dirs:
            # Only processes this run put there: probes and servers started by the tests.
            try:
                (d / "cgroup.kill").write_text("1")
            except OSError:
                pass
        for d in dirs:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sluice")
    (d / "resolv.conf").write_text("nameserver 127.0.0.153\n")
    return d


@pytest.fixture(scope="session")
def cgroups():
    c = Cgroups()
    yield c
    c.cleanup()


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_tcp_port():
    """A port of 127.0.0.1 free for UDP and TCP at once (dnsmasq listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no port free for both UDP and TCP")


# The names the test resolver knows. 127.0.0.0/8 and ::1 stand in for the Internet; 10.1.2.3
# for a private address a rebinding attack would point at.
DNS_RECORDS = """
host-record=allowed.test,127.0.0.5
host-record=denied.test,127.0.0.6
host-record=short.test,127.0.0.7,1
host-record=v6only.test,::1
host-record=dual.test,127.0.0.8,::1
host-record=target.test,127.0.0.9
cname=alias1.test,alias2.test
cname=alias2.test,alias3.test
cname=alias3.test,target.test
host-record=a.wild.test,127.0.0.10
host-record=x.y.wild.test,127.0.0.11
host-record=wild.test,127.0.0.12
host-record=evilwild.test,127.0.0.13
host-record=wild.test.evil,127.0.0.14
host-record=rebind.test,10.1.2.3
host-record=metadata.test,169.254.169.254
host-record=mixed.test,127.0.0.15
host-record=mixed.test,10.1.2.4
host-record=cached.test,127.0.0.16
host-record=api.test,127.0.0.20
host-record=www.test,127.0.0.20
host-record=ws.test,127.0.0.20
host-record=v6.test,::1
host-record=wrongname.test,127.0.0.20
host-record=untrusted.test,127.0.0.20
host-record=nosan.test,127.0.0.20
host-record=mask.test,127.0.0.1
host-record=notintercepted.test,127.0.0.20
host-record=git.internal.test,127.0.0.20
host-record=npm.test,127.0.0.20
host-record=silent.test,127.0.0.22
host-record=down.test,127.0.0.40
host-record=reset.test,127.0.0.41
host-record=garbage.test,127.0.0.42
host-record=stall.test,127.0.0.43
host-record=cut.test,127.0.0.44
host-record=full.test,127.0.0.45
host-record=git.clients.test,127.0.0.60
host-record=npm.clients.test,127.0.0.60
host-record=pypi.clients.test,127.0.0.60
host-record=web.clients.test,127.0.0.60
host-record=blocked.clients.test,127.0.0.61
host-record=plain.test,127.0.0.46
host-record=plainsni.test,127.0.0.47
host-record=sni.k.test,127.0.0.48
host-record=tenant.k.test,127.0.0.48
host-record=far.k.test,127.0.0.49
host-record=slow.k.test,127.0.0.50
host-record=learnme.test,127.0.0.32
address=/github.io/127.0.0.30
address=/co.uk/127.0.0.30
address=/cdn.learn.test/127.0.0.33
"""


class Dnsmasq:
    """dnsmasq as the real upstream resolver, on loopback, with query logging."""

    def __init__(self, workdir):
        self.dir = Path(workdir) / "dnsmasq"
        self.dir.mkdir(exist_ok=True)
        self.log = self.dir / "queries.log"
        # The port can be taken between the probe and dnsmasq's bind: then another.
        for _ in range(5):
            if self.start(free_udp_tcp_port()):
                return
        raise RuntimeError("dnsmasq found no free port")

    def start(self, port):
        """Starts dnsmasq on port: True, or False if the port was taken."""
        self.port = port
        self.log.unlink(missing_ok=True)  # "started" is looked for in this start's log
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(f"""port={self.port}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-negcache
log-queries
log-facility={self.log}
local-ttl=300
{DNS_RECORDS}""")
        self.proc = subprocess.Popen(["dnsmasq", "-k", "-C", str(conf), "-u", "root",
                                      f"--pid-file={self.dir / 'pid'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.log.exists() and "started" in self.log.read_text():
                return True
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()
                if "Address already in use" in err:
                    return False
                raise RuntimeError(f"dnsmasq failed: {err}")
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("dnsmasq did not start")

    def queried(self, name):
        """Whether dnsmasq ever saw a query for name."""
        return any(f"] {name} from" in line for line in self.log.read_text().splitlines()
                   if "query[" in line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def dnsmasq(workdir):
    d = Dnsmasq(workdir)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def upstreams(workdir):
    """nginx as the real HTTPS upstream (127.0.0.20:443, [::1]:443, 127.0.0.20:80) with a
    test CA, in front of a Python backend (echo, hashes, WebSocket)."""
    from upstreams import Upstreams

    u = Upstreams(Path(workdir) / "upstreams")
    try:
        u.start()
        yield u
    finally:
        u.close()


def dns_args(dnsmasq, upstreams):
    return ["--dns-upstream", f"127.0.0.1:{dnsmasq.port}", "--dns-min-ttl", "1",
            "--dns-grace", "1", "--upstream-ca", str(upstreams.pki.ca_pem),
            "--http-header-timeout", "2", "--http-connect-timeout", "2"]


# The secrets the session daemon holds (--env-file): tests check they reach upstreams and
# never the sandbox. Random per run, so no file or log can hold them by accident.
ENV_SECRETS = {"VCS_TOKEN": "vcs-" + secrets.token_hex(16)}


def write_env_file(workdir, values):
    path = Path(workdir) / "sluiced.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# secrets for the policies' handlers\n")
        for k, v in values.items():
            f.write(f"{k}={v}\n")
    return str(path)


# Two workers whatever the machine's CPUs (sluiced's default is one per CPU): the suites of DNS,
# the proxy, switching and restarts meet sandboxes on different threads. A test that wants
# another count passes its own --workers to start(), which comes last and wins.
WORKERS = ["--workers", "2"]


@pytest.fixture(scope="session")
def daemon(workdir, dnsmasq, upstreams):
    d = Daemon(workdir, "main", extra=["--purge", "-v", *WORKERS, *dns_args(dnsmasq, upstreams),
                                       "--env-file", write_env_file(workdir, ENV_SECRETS)])
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def fresh_daemon(workdir, request, dnsmasq, upstreams):
    """A daemon of its own, for tests that kill or restart it."""
    d = Daemon(workdir, "t" + str(abs(hash(request.node.nodeid)) % 10**8),
               extra=[*WORKERS, *dns_args(dnsmasq, upstreams)])
    try:
        yield d
    finally:
        d.cleanup()


def run_in(cgroup, argv, workdir, timeout=60, **kw):
    """Runs argv as a member of cgroup, with a loopback-only resolv.conf."""
    return subprocess.run([IN_SANDBOX, str(cgroup), str(Path(workdir) / "resolv.conf"), *argv],
                          capture_output=True, text=True, timeout=timeout, **kw)


def probe(cgroup, ops, workdir):
    r = run_in(cgroup, [PY, PROBE, json.dumps(ops)], workdir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def probe_outside(ops):
    r = subprocess.run([PY, PROBE, json.dumps(ops)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class Servers:
    """Dual-stack TCP and UDP servers on [::]:port for each port: they answer 127.0.0.0/8,
    0.0.0.0, v4-mapped and ::1 alike, so a denied connect fails only because of sluice."""

    def __init__(self, nports=3):
        self.stop = threading.Event()
        self.tcp, self.udp, self.ports = [], [], []
        self.received = {}  # port -> list of payloads (UDP datagrams and TCP data)
        self.lock = threading.Lock()
        for _ in range(nports):
            t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.setsockopt(socket.IPPROTO_TCP, 23, 16)  # TCP_FASTOPEN queue
            t.bind(("::", 0))
            t.listen(128)
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            u.bind(("::", port))
            self.tcp.append(t)
            self.udp.append(u)
            self.ports.append(port)
            self.received[port] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        socks = self.tcp + self.udp
        conns = {}
        while not self.stop.is_set():
            r, _, _ = select.select(socks + list(conns), [], [], 0.1)
            for s in r:
                if s in self.tcp:
                    c, _ = s.accept()
                    conns[c] = s.getsockname()[1]
                elif s in self.udp:
                    data, _ = s.recvfrom(65535)
                    with self.lock:
                        self.received[s.getsockname()[1]].append(data.decode(errors="replace"))
                else:
                    try:
                        data = s.recv(65535)
                    except OSError:
                        data = b""
                    if data:
                        with self.lock:
                            self.received[conns[s]].append(data.decode(errors="replace"))
                    else:
                        conns.pop(s)
                        s.close()
        for s in socks + list(conns):
            s.close()

    def got(self, port, payload, wait=2.0):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.lock:
                if payload in self.received[port]:
                    return True
            time.sleep(0.02)
        return False

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


class HTTPServer:
    """A plain HTTP server on [::]:port (dual-stack) answering every GET with a fixed body."""

    BODY = b"hello from the test server\n"

    def __init__(self):
        import http.server

        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6

            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                super().server_bind()

        self.server = Server(("::", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def http_server():
    s = HTTPServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def servers():
    s = Servers()
    yield s
    s.close()


def add_box(daemon, cgroups, workdir, name, policy_text):
    """Sandbox @name: a cgroup, the policy @policy_text, and its CA certificate written to
    WORKDIR/NAME-ca.pem for the clients inside. Returns (cgroup path, CA path); the caller
    removes the sandbox (the cgroups fixture removes the cgroup)."""
    cg = cgroups.make(name)
    daemon.add(name, cg, write_policy(workdir, name, policy_text))
    r = daemon.cli("ca", name)
    assert r.returncode == 0 and r.stdout.startswith("-----BEGIN CERTIFICATE-----"), r.stderr
    ca = Path(workdir) / f"{name}-ca.pem"
    ca.write_text(r.stdout)
    return cg, str(ca)


def write_policy(workdir, name, text):
    p = Path(workdir) / f"{name}.lua"
    p.write_text(text)
    return p


def progs_bpftool_lists(bpffs):
    """The programs of a daemon that `bpftool cgroup show` can list: bpftool 7.1 (Debian 12)
    does not know the UNIX socket attach types (Linux 6.7) and leaves their links out; the
    kernel SNI check's sk_msg program is attached to its sockhash, not to cgroups."""
    return [p for p in os.listdir(f"{bpffs}/progs")
            if not p.endswith("_unix") and p != "sl_sni_msg"]


def bpftool_map(*args):
    """bpftool map ARGS (update, delete, ...), which must succeed."""
    r = subprocess.run(["bpftool", "map", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def listener_port_bit(bpffs, port, proto, on=None):
    """The bit of @port and @proto (6, 17) in the daemon's sl_listener_ports (bpf/sluice.h:
    some sl_listeners key may hold the port); with @on, set to that first. Returns the bit as
    it was."""
    table = f"{bpffs}/sl_listener_ports"
    word = (1024 if proto == 17 else 0) + (port >> 6)
    key = word.to_bytes(4, "little").hex(" ").split()
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned", table, "key", "hex", *key],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    bits = int.from_bytes(bytes(int(x, 16) for x in json.loads(r.stdout)["value"]), "little")
    was = (bits >> (port & 63)) & 1
    if on is not None:
        bits = bits | (1 << (port & 63)) if on else bits & ~(1 << (port & 63))
        bpftool_map("update", "pinned", table, "key", "hex", *key, "value", "hex",
                    *bits.to_bytes(8, "little").hex(" ").split())
    return was


def map_dump(bpffs, name):
    """(key bytes, value bytes) of every entry of the daemon's pinned map name."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", f"{bpffs}/{name}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [(bytes(int(x, 16) for x in e["key"]), bytes(int(x, 16) for x in e["value"]))
            for e in json.loads(r.stdout)]


def proxied_records(bpffs):
    """Every record of every sandbox's sl_proxied map (an inner map per sandbox)."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", f"{bpffs}/sl_proxied"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = []
    for e in json.loads(r.stdout):
        v = e["value"]
        inner = v if isinstance(v, int) else int.from_bytes(bytes(int(x, 16) for x in v),
                                                              "little")
        d = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(inner)],
                           capture_output=True, text=True, timeout=60)
        assert d.returncode == 0, d.stderr
        out += json.loads(d.stdout)
    return out


def bpf_links_of(cgroup):
    """Program ids attached to a cgroup (effective or not), from bpftool."""
    r = subprocess.run(["bpftool", "-j", "cgroup", "show", str(cgroup)], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return json.loads(r.stdout)
