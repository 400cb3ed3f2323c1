# SPDX-License-Identifier: MIT
"""Real clients under `sluice run`, exactly as the README shows it (`sluice run --policy FILE
-- CMD`, the command as an unprivileged user), against servers on loopback that this module
starts: git over smart HTTP (nginx + fcgiwrap + git-http-backend) with basic auth injected by
the policy, a static npm registry, a PEP 503 index, and a plain HTTPS site for node's fetch,
Go's http.Get, python requests and Java. Every host is intercepted, so every client must trust
the sandbox's CA through the variables sluice run sets; each allow case is paired with the
same client failing without them (or on a name the policy does not give).

The servers answer on 127.0.0.60:443 for *.clients.test (the session's dnsmasq resolves them)
with a certificate of the session's test CA, which the daemon trusts (--upstream-ca).
sluice run itself runs in a mount namespace whose /etc/resolv.conf points at loopback, so a
query sluice failed to capture would go nowhere."""
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import BUILD, ENV_SECRETS, PY, RUN_ID, write_policy

ADDR = "127.0.0.60"
BLOCKED_ADDR = "127.0.0.61"
NAMES = ("git.clients.test", "npm.clients.test", "pypi.clients.test", "web.clients.test")
NOBODY = 65534
TOKEN = ENV_SECRETS["VCS_TOKEN"]  # the git password: in sluiced's --env-file only
HELLO = "hello from web.clients.test"
NPM_PKG, NPM_VER = "sluice-demo-pkg", "1.0.0"
PY_PKG, PY_VER = "sluice-tiny", "1.0"
JAVA = shutil.which("java")

GO_MAIN = """package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(3)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, body)
}
"""

JAVA_GET = """import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Get {
    public static void main(String[] args) throws Exception {
        HttpClient c = HttpClient.newHttpClient();
        try {
            HttpResponse<String> r = c.send(HttpRequest.newBuilder(URI.create(args[0])).build(),
                                            HttpResponse.BodyHandlers.ofString());
            System.out.print(r.statusCode() + " " + r.body());
        } catch (Exception e) {
            System.out.println("ERROR " + e);
            System.exit(3);
        }
    }
}
"""

# The policy's handler injects the git password as basic auth: Lua has no base64 of its own.
LUA_B64 = """
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local q = {}
    for k = 3, 0, -1 do q[#q + 1] = B:sub(((n >> (6 * k)) & 63) + 1, ((n >> (6 * k)) & 63) + 1) end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = table.concat(q)
  end
  return table.concat(out)
end
"""


def own(path, uid=NOBODY):
    """Gives a tree to the sandbox's user (it writes there)."""
    for d, dirs, files in os.walk(path):
        os.chown(d, uid, uid)
        for f in files:
            os.chown(os.path.join(d, f), uid, uid)


def _tgz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _wheel(name, version):
    """A minimal pure-Python wheel (PEP 427): a module, METADATA, WHEEL and RECORD."""
    mod = name.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": b"GREETING = 'hello from the sluice-tiny wheel'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sluice-e2e\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for f, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{f},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f, data in files.items():
            z.writestr(f, data)
    return f"{mod}-{version}-py3-none-any.whl", buf.getvalue()


class Site:
    """nginx on 127.0.0.60:443 serving the four names, and fcgiwrap for git-http-backend."""

    def __init__(self, dir, pki):
        self.dir = Path(dir)
        self.pki = pki
        self.procs = []
        self.log = self.dir / "access.log"

    def start(self):
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "tmp").mkdir(exist_ok=True)
        cert, key = self.pki.issue("clients", dns=NAMES)
        self.make_git(d / "git")
        self.make_npm(d / "npm")
        self.make_pypi(d / "pypi")
        (d / "htpasswd").write_text(f"git:{{PLAIN}}{TOKEN}\n")
        self.fcgi = d / "fcgiwrap.sock"
        self.spawn(["fcgiwrap", "-c", "2", "-s", f"unix:{self.fcgi}"], "fcgiwrap")
        conf = d / "nginx.conf"
        conf.write_text(self.config(cert, key))
        self.spawn(["/usr/sbin/nginx", "-e", str(d / "error.log"), "-p", f"{d}/", "-c",
                    str(conf), "-g", "daemon off; master_process off;"], "nginx")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((ADDR, 443), timeout=1).close()
                if self.fcgi.exists():
                    return self
            except OSError:
                pass
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited: {self.logs()}")
            time.sleep(0.05)
        raise RuntimeError(f"the clients' servers did not start: {self.logs()}")

    def spawn(self, argv, name):
        err = open(self.dir / f"{name}.stderr", "wb")
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                           stderr=err, start_new_session=True))
        err.close()

    def logs(self):
        return "\n".join(p.read_text(errors="replace")[-2000:]
                         for p in self.dir.glob("*.stderr")) + \
            (self.dir / "error.log").read_text(errors="replace")[-2000:] \
            if (self.dir / "error.log").exists() else ""

    def make_git(self, root):
        """A bare repository with one commit, made from a scratch clone."""
        root.mkdir(exist_ok=True)
        bare = root / "repo.git"
        git = ["git", "-c", "user.name=seed", "-c", "user.email=seed@clients.test",
               "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q", "--bare", str(bare)], check=True)
        subprocess.run(["git", "-C", str(bare), "config", "http.receivepack", "true"],
                       check=True)
        seed = root / "seed"
        subprocess.run([*git, "init", "-q", str(seed)], check=True)
        (seed / "README").write_text("seeded\n")
        subprocess.run([*git, "-C", str(seed), "add", "README"], check=True)
        subprocess.run([*git, "-C", str(seed), "commit", "-qm", "seed"], check=True)
        subprocess.run([*git, "-C", str(seed), "push", "-q", str(bare), "HEAD:main"],
                       check=True)
        shutil.rmtree(seed)
        self.bare = bare

    def make_npm(self, root):
        pkg = json.dumps({"name": NPM_PKG, "version": NPM_VER, "main": "index.js"}).encode()
        tgz = _tgz({"package/package.json": pkg,
                    "package/index.js": b"module.exports = 'hello from sluice-demo-pkg';\n"})
        tarball = root / NPM_PKG / "-" / f"{NPM_PKG}-{NPM_VER}.tgz"
        tarball.parent.mkdir(parents=True)
        tarball.write_bytes(tgz)
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
        packument = {
            "name": NPM_PKG, "dist-tags": {"latest": NPM_VER},
            "versions": {NPM_VER: {
                "name": NPM_PKG, "version": NPM_VER, "main": "index.js",
                "dist": {"tarball": f"https://npm.clients.test/{NPM_PKG}/-/"
                                    f"{NPM_PKG}-{NPM_VER}.tgz",
                         "shasum": hashlib.sha1(tgz).hexdigest(), "integrity": integrity}}},
        }
        (root / f"{NPM_PKG}.json").write_text(json.dumps(packument))

    def make_pypi(self, root):
        name, whl = _wheel(PY_PKG, PY_VER)
        (root / "packages").mkdir(parents=True)
        (root / "packages" / name).write_bytes(whl)
        sha = hashlib.sha256(whl).hexdigest()
        (root / "simple" / PY_PKG).mkdir(parents=True)
        (root / "simple" / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{PY_PKG}/">{PY_PKG}</a></body></html>\n')
        (root / "simple" / PY_PKG / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="../../packages/{name}#sha256={sha}">'
            f'{name}</a></body></html>\n')

    def config(self, cert, key):
        d = self.dir
        fmt = ('{"host":"$host","uri":"$request_uri","method":"$request_method",'
               '"status":"$status","user":"$remote_user"}')
        tls = f"""    listen {ADDR}:443 ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};"""
        return f"""pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    types {{ text/html html; application/json json; application/octet-stream tgz whl; }}
    default_type application/octet-stream;
    log_format clients escape=json '{fmt}';
    access_log {self.log} clients;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    client_max_body_size 0;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
{tls}
        server_name git.clients.test;
        location / {{
            auth_basic "git";
            auth_basic_user_file {d}/htpasswd;
            fastcgi_pass unix:{self.fcgi};
            fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
            fastcgi_param GIT_PROJECT_ROOT {d}/git;
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param GIT_PROTOCOL $http_git_protocol;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }}
    }}
    server {{
{tls}
        server_name npm.clients.test;
        root {d}/npm;
        location = /{NPM_PKG} {{
            default_type application/json;
            try_files /{NPM_PKG}.json =404;
        }}
    }}
    server {{
{tls}
        server_name pypi.clients.test;
        root {d}/pypi;
        index index.html;
    }}
    server {{
{tls}
        server_name web.clients.test;
        location / {{ return 200 "{HELLO}"; }}
    }}
}}
"""

    def requests(self, **match):
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            return []
        out = [json.loads(line) for line in lines]
        return [e for e in out if all(e[k] == v for k, v in match.items())]

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)  # fcgiwrap's children are in its group
                except OSError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        if not os.environ.get("SLUICE_E2E_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def site(workdir, upstreams, dnsmasq):
    s = Site(Path(workdir) / "clients-site", upstreams.pki)
    try:
        yield s.start()
    finally:
        s.close()


@pytest.fixture(scope="module")
def parent(cgroups):
    return cgroups.make("clients")


@pytest.fixture(scope="module")
def udir():
    """A directory the sandbox's user can reach (pytest's own are root's alone, 0700)."""
    d = Path(tempfile.mkdtemp(prefix=f"{RUN_ID}-clients-"))
    d.chmod(0o755)
    yield d
    if not os.environ.get("SLUICE_E2E_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def home(udir, request):
    """A HOME (and working directory) the sandbox's user owns."""
    h = udir / request.node.name[:40].replace("[", "-").replace("]", "")
    if h.exists():
        shutil.rmtree(h)
    h.mkdir(parents=True)
    own(h)
    yield h
    shutil.rmtree(h, ignore_errors=True)


def policy(workdir, name, extra=""):
    return write_policy(workdir, f"clients-{name}", f"""{LUA_B64}
return {{
  egress = {{
    intercept = {{ {", ".join(f'"{n}"' for n in NAMES)} }},
    private = {{ "127.0.0.0/8" }},
  }},
{extra}
}}
""")


def sluice_run(daemon, workdir, parent, pol, cmd, home, *opts, env=None, timeout=120):
    """`sluice run --policy FILE --user nobody -- CMD` as the README shows it, in a mount
    namespace with the loopback resolv.conf, CMD in @home with HOME=@home."""
    argv = [str(BUILD / "sluice"), "run", "--cgroup-parent", str(parent), "--policy", str(pol),
            "--user", "nobody", *opts, "--", "env", f"HOME={home}", *cmd]
    wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               'mount --bind "$0" /etc/resolv.conf && exec "$@"',
               str(Path(workdir) / "resolv.conf"), *argv]
    e = dict(os.environ, SLUICE_SOCKET=daemon.socket, **(env or {}))
    for k in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
              "NODE_EXTRA_CA_CERTS", "JAVA_TOOL_OPTIONS", "PIP_CERT", "npm_config_cafile"):
        if k not in (env or {}):
            e.pop(k, None)  # only what sluice run sets
    return subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout, cwd=home,
                          env=e)


def test_git_clone_and_push_with_injected_basic_auth(daemon, workdir, parent, site, home):
    inject = policy(workdir, "git", """
  outboundByHost = {
    ["git.clients.test"] = function(req, env, ctx)
      req.headers:set("authorization", "Basic " .. b64("git:" .. env.VCS_TOKEN))
      return fetch(req)
    end,
  },""")
    script = """set -e
git clone -q https://git.clients.test/repo.git work
cd work
cat README
echo pushed > PUSHED
git add PUSHED
git -c user.name=agent -c user.email=agent@clients.test commit -qm 'from the sandbox'
git push -q origin HEAD:main
echo ENVIRON; env
echo CONFIG; git config --list --show-origin; cat ~/.gitconfig .git/config 2>/dev/null || true
echo FILES; cat ~/.git-credentials 2>/dev/null || true; grep -r . .git/config .git/FETCH_HEAD || true
"""
    r = sluice_run(daemon, workdir, parent, inject, ["sh", "-c", script], home,
                   "--name", "cl-git", env={"GIT_TERMINAL_PROMPT": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("seeded\n")
    # The push arrived, as the user the injected credential names.
    log = subprocess.run(["git", "-C", str(site.bare), "log", "-1", "--format=%s", "main"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert log == "from the sandbox"
    pushes = site.requests(host="git.clients.test", uri="/repo.git/git-receive-pack")
    assert pushes and all(p["user"] == "git" and p["status"] == "200" for p in pushes)
    # The credential is nowhere the sandbox could read: environment, git config, output.
    basic = base64.b64encode(f"git:{TOKEN}".encode()).decode()
    for secret in (TOKEN, basic):
        assert secret not in r.stdout and secret not in r.stderr
    assert not any(secret in p.read_bytes().decode(errors="replace")
                   for p in home.rglob("*") if p.is_file() for secret in (TOKEN, basic))

    # Without the handler's injection the server refuses the sandbox: 401, git fails.
    bare = policy(workdir, "git-noauth")
    r = sluice_run(daemon, workdir, parent, bare,
                   ["git", "clone", "-q", "https://git.clients.test/repo.git", "again"], home,
                   "--name", "cl-git-deny", env={"GIT_TERMINAL_PROMPT": "0"})
    assert r.returncode == 128
    assert "could not read Username" in r.stderr or "Authentication failed" in r.stderr, r.stderr
    assert site.requests(host="git.clients.test", uri="/repo.git/info/refs?service=git-upload-pack",
                         status="401")


def test_npm_install_wins_over_an_npmrc_cafile(daemon, workdir, parent, site, home):
    """npm's cafile replaces Node's CA store, so NODE_EXTRA_CA_CERTS alone is not enough;
    sluice run's npm_config_cafile (the system store plus the sandbox CA) wins over the
    global npmrc's cafile, which names a file without the sandbox CA."""
    npmrc = home / "global-npmrc"
    npmrc.write_text("cafile=/etc/ssl/certs/ca-certificates.crt\n"
                     "registry=https://npm.clients.test/\nfetch-retries=0\naudit=false\n"
                     "fund=false\nupdate-notifier=false\n")
    (home / "package.json").write_text('{"name": "app", "version": "0.0.0"}\n')
    own(home)
    env = {"npm_config_globalconfig": str(npmrc), "npm_config_cache": str(home / "npm-cache")}
    pol = policy(workdir, "npm")
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", f"npm install {NPM_PKG} && node -p \"require('{NPM_PKG}')\""],
                   home, "--name", "cl-npm", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("hello from sluice-demo-pkg")
    assert (home / "node_modules" / NPM_PKG / "index.js").exists()
    assert site.requests(host="npm.clients.test", uri=f"/{NPM_PKG}/-/{NPM_PKG}-{NPM_VER}.tgz",
                         status="200")

    # The npmrc's cafile alone (sluice run's variable removed): the sandbox CA is not
    # trusted and npm fails on the certificate (a cache of its own: nothing comes from the
    # first install's).
    shutil.rmtree(home / "node_modules")
    env["npm_config_cache"] = str(home / "npm-cache-2")
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", f"unset npm_config_cafile; npm install {NPM_PKG}"], home,
                   "--name", "cl-npm-deny", "--quiet", env=env)
    assert r.returncode != 0
    assert "SELF_SIGNED_CERT_IN_CHAIN" in r.stdout + r.stderr or \
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in r.stdout + r.stderr or \
        "UNABLE_TO_GET_ISSUER_CERT" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (home / "node_modules" / NPM_PKG).exists()


def test_pip_install_from_a_pep503_index(daemon, workdir, parent, site, home):
    pol = policy(workdir, "pip")
    pip = [PY, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
           "--retries", "0", "--index-url", "https://pypi.clients.test/simple/",
           "--target", str(home / "lib"), PY_PKG]
    check = f"import sys; sys.path.insert(0, '{home}/lib'); import sluice_tiny; " \
            "print(sluice_tiny.GREETING)"
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", " ".join(f"'{a}'" for a in pip) + f' && {PY} -c "{check}"'],
                   home, "--name", "cl-pip")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("hello from the sluice-tiny wheel")
    assert site.requests(host="pypi.clients.test", uri=f"/simple/{PY_PKG}/", status="200")

    # pip trusts PIP_CERT / REQUESTS_CA_BUNDLE, not SSL_CERT_FILE: without them it fails.
    shutil.rmtree(home / "lib")
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", "unset PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; " +
                    " ".join(f"'{a}'" for a in pip)], home, "--name", "cl-pip-deny", "--quiet")
    assert r.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in r.stdout + r.stderr, r.stdout + r.stderr


def test_node_fetch(daemon, workdir, parent, site, home):
    script = """
const show = (p) => p.then(r => r.text()).then(t => 'OK ' + t, e => 'ERR ' + (e.cause && e.cause.code));
(async () => {
  console.log(await show(fetch('https://web.clients.test/')));
  console.log(await show(fetch('https://blocked.clients.test/')));
})();
"""
    pol = policy(workdir, "node")
    r = sluice_run(daemon, workdir, parent, pol, ["node", "-e", script], home,
                   "--name", "cl-node", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"OK {HELLO}", "ERR ENOTFOUND"]
    # Node's own store without NODE_EXTRA_CA_CERTS does not know the sandbox CA.
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", 'unset NODE_EXTRA_CA_CERTS; exec node -e "$0"', script], home,
                   "--name", "cl-node-deny", "--quiet")
    assert r.stdout.splitlines()[0] == "ERR UNABLE_TO_VERIFY_LEAF_SIGNATURE", r.stdout + r.stderr


@pytest.fixture(scope="module")
def go_get(udir):
    """A Go program doing one http.Get, built once (no network: it imports nothing but the
    standard library; its own caches in a temporary directory)."""
    d = udir / "go"
    d.mkdir(exist_ok=True)
    (d / "go.mod").write_text("module sluiceget\n\ngo 1.19\n")
    (d / "main.go").write_text(GO_MAIN)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOCACHE=str(d / "cache"), GOPATH=str(d / "gopath"),
               GOPROXY="off", CGO_ENABLED="0", HOME=str(d))
    subprocess.run(["go", "build", "-o", str(d / "get"), "."], cwd=d, env=env, check=True,
                   capture_output=True, timeout=300)
    os.chmod(d / "get", 0o755)
    yield str(d / "get")
    shutil.rmtree(d / "cache", ignore_errors=True)
    subprocess.run(["chmod", "-R", "u+w", str(d)], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def test_go_http_get(daemon, workdir, parent, site, home, go_get):
    pol = policy(workdir, "go")
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", f"{go_get} https://web.clients.test/; echo; "
                                f"{go_get} https://blocked.clients.test/; true"],
                   home, "--name", "cl-go", "--quiet")
    assert r.returncode == 0, r.stderr
    ok, denied = r.stdout.splitlines()
    assert ok == f"200 {HELLO}"
    assert denied.startswith("ERROR") and "no such host" in denied
    # Go reads SSL_CERT_FILE and SSL_CERT_DIR: without them, the system store only.
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", f"unset SSL_CERT_FILE SSL_CERT_DIR; {go_get} "
                                "https://web.clients.test/"],
                   home, "--name", "cl-go-deny", "--quiet")
    assert r.returncode == 3 and "x509: certificate signed by unknown authority" in r.stdout, \
        r.stdout


def test_python_requests(daemon, workdir, parent, site, home):
    script = """
import requests
for url in ("https://web.clients.test/", "https://blocked.clients.test/"):
    try:
        r = requests.get(url, timeout=20)
        print("OK", r.status_code, r.text)
    except requests.exceptions.ConnectionError as e:
        print("ERR", "resolution" if "NameResolutionError" in repr(e) or
              "Name or service not known" in repr(e) else repr(e))
"""
    pol = policy(workdir, "requests")
    r = sluice_run(daemon, workdir, parent, pol, [PY, "-c", script], home, "--name", "cl-req",
                   "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"OK 200 {HELLO}", "ERR resolution"]
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", f"unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; exec {PY} -c "
                                "'import requests; requests.get(\"https://web.clients.test/\")'"],
                   home, "--name", "cl-req-deny", "--quiet")
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr


@pytest.mark.skipif(not JAVA, reason="no java on this machine (sluice run sets "
                                     "JAVA_TOOL_OPTIONS only where Java is present)")
def test_java_trusts_the_pkcs12_truststore(daemon, workdir, parent, site, home):
    (home / "Get.java").write_text(JAVA_GET)
    own(home)
    pol = policy(workdir, "java")
    r = sluice_run(daemon, workdir, parent, pol,
                   ["java", "Get.java", "https://web.clients.test/"], home, "--name", "cl-java",
                   "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == f"200 {HELLO}"
    assert "Picked up JAVA_TOOL_OPTIONS: -Djavax.net.ssl.trustStore=" in r.stderr
    r = sluice_run(daemon, workdir, parent, pol,
                   ["sh", "-c", "unset JAVA_TOOL_OPTIONS; exec java Get.java "
                                "https://web.clients.test/"],
                   home, "--name", "cl-java-deny", "--quiet")
    assert r.returncode == 3 and "PKIX path building failed" in r.stdout, r.stdout + r.stderr


def test_run_summary_lists_what_was_denied(daemon, workdir, parent, site, home, servers):
    pol = policy(workdir, "summary", """
  outboundByHost = {
    ["web.clients.test"] = function(req, env, ctx)
      if req.path == "/admin" then return Response.new("no", { status = 403 }) end
      return fetch(req)
    end,
  },""")
    port = servers.ports[1]
    script = f"""
getent hosts blocked.clients.test || echo no-name
curl -sS -o /dev/null --max-time 5 http://{BLOCKED_ADDR}:{port}/ || true
curl -sS -o /dev/null --max-time 5 http://{BLOCKED_ADDR}:{port}/ || true
curl -sS -o /dev/null -w '%{{http_code}}\\n' --max-time 20 https://web.clients.test/admin
curl -sS --max-time 20 https://web.clients.test/
"""
    r = sluice_run(daemon, workdir, parent, pol, ["sh", "-c", script], home,
                   "--name", "cl-summary")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["no-name", "403", HELLO]
    lines = r.stderr.splitlines()
    at = lines.index("sluice run: sandbox cl-summary was denied:")
    summary = lines[at + 1:]
    # getent asks A and AAAA: two denied queries of one name.
    assert "  name      blocked.clients.test (2 times)" in summary
    assert f"  connect   tcp {BLOCKED_ADDR}:{port} (2 times)" in summary
    assert "  request   GET https://web.clients.test/admin: 403 (answered by the policy)" \
        in summary
    assert not any("web.clients.test/ " in l or l.endswith("web.clients.test/") for l in summary)

    # --quiet: the same denials, nothing said; nothing denied: nothing said either.
    r = sluice_run(daemon, workdir, parent, pol, ["sh", "-c", script], home,
                   "--name", "cl-quiet", "--quiet")
    assert r.returncode == 0 and "was denied" not in r.stderr, r.stderr
    r = sluice_run(daemon, workdir, parent, pol,
                   ["curl", "-sS", "--max-time", "20", "https://web.clients.test/"], home,
                   "--name", "cl-clean")
    assert r.returncode == 0 and r.stdout == HELLO and "sluice run:" not in r.stderr, r.stderr
