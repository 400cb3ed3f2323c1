# SPDX-License-Identifier: MIT
"""The HTTPS setups the interception benchmarks compare, each doing the same work: terminate
the client's TLS, add an `x-auth-token` header holding a secret, forward the request over a
verified TLS connection to the same upstream nginx, stream the response back.

    direct     the client talks to the upstream nginx itself: the limit
    sluice     the client in a sandbox; the kernel redirects it to sluiced, whose policy's
               outboundByHost handler sets the header from --env-file
    nginx      nginx as a TLS-terminating reverse proxy, proxy_set_header (the bar to beat);
               HTTP/2 towards its clients by ALPN (wrk offers none: HTTP/1.1), HTTP/1.1 with
               keep-alive towards the upstream
    squid      Squid (squid-openssl) as a TLS accelerator, request_header_add
    mitmproxy  mitmdump in reverse mode with a header-setting addon

Every peer listens on 443 of a loopback address of its own (127.N.M.2..4; the upstream is
127.N.M.1) and resolves bench.test from a hosts file of its own, in a mount namespace of its
own: nothing reaches the machine's resolver. Each runs in a cgroup of its own, so that its
CPU time (every process and thread) can be read from cpu.stat, and is pinned to the server
CPU. close() stops what start() started, by pid, and removes its files.
"""
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from common import BUILD, PROXY_CPU, BenchError, enter_cgroup, pin, taskset, wait_for, \
    with_hosts

NAME = "bench.test"
HEADER = "x-auth-token"
ENV_KEY = "BENCH_TOKEN"

POLICY = """\
-- sluice's bench policy: credential injection by host, as in lua/examples/inject-by-host.lua.
return {
  egress = { intercept = { "bench.test" }, private = { "127.0.0.0/8" } },
  outboundByHost = {
    ["bench.test"] = function(req, env, ctx)
      req.headers:set("x-auth-token", env.BENCH_TOKEN)
      return fetch(req)
    end,
  },
}
"""

# BENCH_SLUICE_POLICY=plain: the same interception without a handler (requests forwarded
# unchanged, no Lua), to measure what the handler costs.
POLICY_PLAIN = """\
return { egress = { intercept = { "bench.test" }, private = { "127.0.0.0/8" } } }
"""

MITM_ADDON = """\
# Sets the credential header on every request (the bench's header-injecting addon).
import os

TOKEN = os.environ["BENCH_TOKEN"]


def request(flow):
    flow.request.headers["x-auth-token"] = TOKEN
"""


def _listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Peer:
    """A TLS-terminating proxy in front of the upstream, on ip:443."""

    name = "?"

    def __init__(self, ip, dir, cgroup, upstream_ip, pki, token):
        self.ip = ip
        self.dir = Path(dir)
        self.cgroup = cgroup
        self.upstream_ip = upstream_ip
        self.pki = pki
        self.token = token
        self.proc = None
        self.hosts = self.dir / "hosts"  # how the proxy itself finds the upstream

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hosts.write_text(f"{self.upstream_ip} {NAME}\n")
        self.hosts.chmod(0o644)
        argv, env = self.command()
        self.log = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(with_hosts(self.hosts, [*taskset(PROXY_CPU), *argv]),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=env, start_new_session=True,
                                     preexec_fn=enter_cgroup(self.cgroup))
        try:
            wait_for(lambda: self._ready(), 30, f"{self.name} on {self.ip}:443")
        except BenchError:
            raise BenchError(f"{self.name} did not start: {self.logs()}")
        for pid in self.pids():
            pin(pid, PROXY_CPU)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.proc.returncode}): {self.logs()}")
        return _listening(self.ip, 443)

    def pids(self):
        try:
            return [int(p) for p in (Path(self.cgroup) / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def logs(self):
        out = []
        for f in sorted(self.dir.glob("*.log")):
            try:
                out.append(f"{f.name}: {f.read_text(errors='replace')[-1500:]}")
            except OSError:
                pass
        return "\n".join(out)

    def close(self):
        _stop(self.proc)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


class NginxProxy(Peer):
    name = "nginx"

    def command(self):
        d = self.dir
        cert, key = self.pki.server_cert(NAME)
        (d / "tmp").mkdir(exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(f"""# sluice bench: nginx as a TLS-terminating reverse proxy injecting a credential
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    ssl_protocols TLSv1.2 TLSv1.3;
    upstream bench_up {{
        server {self.upstream_ip}:443;
        keepalive 64;
    }}
    server {{
        listen {self.ip}:443 ssl http2;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass https://bench_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header {HEADER} "{self.token}";
            proxy_ssl_server_name on;
            proxy_ssl_name {NAME};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {self.pki.ca_pem};
            proxy_ssl_session_reuse on;
            proxy_max_temp_file_size 0;
            client_max_body_size 0;
            proxy_request_buffering off;
        }}
    }}
}}
""")
        return ["/usr/sbin/nginx", "-e", f"{d}/error.log", "-p", f"{d}/", "-c", str(conf),
                "-g", "daemon off; master_process off;"], None


class SquidProxy(Peer):
    name = "squid"

    def command(self):
        d = self.dir
        cert, key = self.pki.server_cert(NAME)
        # Squid drops to cache_effective_user (proxy) after reading its configuration: it
        # needs its own directory and the files it opens later.
        for f in (cert, key, self.pki.ca_pem):
            shutil.copy(f, d)
        conf = d / "squid.conf"
        conf.write_text(f"""# sluice bench: Squid as a TLS accelerator (reverse proxy) injecting a credential
https_port {self.ip}:443 accel tls-cert={d / Path(cert).name} tls-key={d / Path(key).name} \
defaultsite={NAME}
cache_peer {NAME} parent 443 0 no-query no-digest originserver tls \
tls-cafile={d / Path(self.pki.ca_pem).name} ssldomain={NAME} name=up
acl bench dstdomain {NAME}
http_access allow bench
http_access deny all
cache_peer_access up allow bench
never_direct allow all
request_header_add {HEADER} "{self.token}" all
cache deny all
cache_mem 8 MB
maximum_object_size_in_memory 1 MB
access_log none
cache_store_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
visible_hostname sluice-bench-squid
pinger_enable off
netdb_filename none
shutdown_lifetime 0 seconds
max_filedescriptors 8192
client_persistent_connections on
server_persistent_connections on
workers 1
""")
        os.chmod(d, 0o755)
        for p in [d, *d.iterdir()]:
            shutil.chown(p, "proxy", "proxy")
        return ["/usr/sbin/squid", "-N", "-f", str(conf)], None

    def close(self):
        _stop(self.proc, signal.SIGINT, timeout=15)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


class MitmProxy(Peer):
    name = "mitmproxy"

    def command(self):
        d = self.dir
        addon = d / "inject.py"
        addon.write_text(MITM_ADDON)
        env = dict(os.environ, BENCH_TOKEN=self.token, HOME=str(d))
        return ["mitmdump", "-q", "--mode", f"reverse:https://{NAME}:443",
                "--listen-host", self.ip, "--listen-port", "443",
                "--set", f"confdir={d / 'conf'}",
                "--set", f"ssl_verify_upstream_trusted_ca={self.pki.ca_pem}",
                "--set", "keep_host_header=true",
                "--set", "stream_large_bodies=1m",
                "-s", str(addon)], env


class Sluice:
    """sluiced as a peer: its proxy is reached by a client in a sandbox, where the kernel
    sends connections to bench.test's address to it."""

    name = "sluice"

    def __init__(self, daemon, box, ip, sandbox="px"):
        self.daemon = daemon
        self.box = box
        self.sandbox = sandbox  # its name, for `sluice sandbox show`
        self.ip = ip
        self.cgroup = None

    def pids(self):
        return [self.daemon.proc.pid]


def has_env_file():
    """Whether this sluiced takes --env-file (the Lua handler runtime's secrets)."""
    r = subprocess.run([str(BUILD / "sluiced"), "--help"], capture_output=True, text=True,
                       timeout=30)
    return "--env-file" in (r.stdout + r.stderr)
