# SPDX-License-Identifier: MIT
"""The KV store and the env file, end to end: `sluice kv` against a real sluiced (values from
arguments and from stdin, binary and odd keys, a missing key is one clear line and exit 1),
values surviving SIGTERM and SIGKILL, nothing in the clear on disk or in the log, the key
file's mode, and --env-file refused when others could read it or when a line is malformed,
without ever showing the value."""
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, Daemon

SECRET = "sk-live-e2e-" + os.urandom(12).hex()


# The KV store and the env file need neither a resolver nor an upstream: these daemons run
# without dnsmasq and nginx (and so never wait for their ports).
@pytest.fixture(scope="module")
def daemon(workdir):
    d = Daemon(workdir, "kv", extra=["-v"])
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def fresh_daemon(workdir, request):
    """A daemon of its own, for tests that restart it or refuse to start it."""
    d = Daemon(workdir, "kv" + str(abs(hash(request.node.nodeid)) % 10**8))
    try:
        yield d
    finally:
        d.cleanup()


def files_containing(root, needle):
    """Every file under root whose bytes contain needle (str or bytes)."""
    if isinstance(needle, str):
        needle = needle.encode()
    hits = []
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath) / f
            try:
                if p.is_file() and needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def cli_bytes(daemon, *args, input=b""):
    """The CLI with bytes in and out (daemon.cli speaks text)."""
    env = dict(os.environ, SLUICE_SOCKET=daemon.socket)
    return subprocess.run([str(BUILD / "sluice"), *args], capture_output=True, env=env,
                          input=input, timeout=30)


def test_put_get_rm_through_the_cli(daemon):
    ns = "e2e-basic"
    r = daemon.cli("kv", "put", ns, "token", SECRET)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"kv {ns}/token stored ({len(SECRET)} bytes)\n"
    r = daemon.cli("kv", "get", ns, "token")
    assert r.returncode == 0 and r.stdout == SECRET and r.stderr == ""
    assert daemon.cli("kv", "put", ns, "token", "second").returncode == 0
    assert daemon.cli("kv", "get", ns, "token").stdout == "second"
    # Namespaces are separate.
    assert daemon.cli("kv", "put", ns + "-other", "token", "elsewhere").returncode == 0
    assert daemon.cli("kv", "get", ns, "token").stdout == "second"
    assert daemon.cli("kv", "ls", ns).stdout == "token\n"
    r = daemon.cli("kv", "rm", ns, "token")
    assert r.returncode == 0 and r.stdout == f"kv {ns}/token removed\n"
    for args in (("get", ns, "token"), ("rm", ns, "token")):
        r = daemon.cli("kv", *args)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == f"sluice: no key 'token' in namespace '{ns}'\n", r.stderr
    assert daemon.cli("kv", "get", ns + "-other", "token").stdout == "elsewhere"
    assert daemon.cli("kv", "ls", ns).stdout == ""
    # The daemon notes the operations, never the values (it runs with -v here).
    log = daemon.read_log()
    assert f"kv put {ns}/token" in log and f"kv rm {ns}/token" in log
    assert SECRET not in log and "second" not in log and "elsewhere" not in log


def test_stdin_binary_and_odd_keys(daemon):
    ns = "e2e-stdin"
    key = "path/to it?x=1&y=%41+b#frag"
    value = SECRET + "\n"
    r = daemon.cli("kv", "put", ns, key, input=value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(f"({len(value)} bytes)\n")
    r = daemon.cli("kv", "get", ns, key)
    assert r.returncode == 0 and r.stdout == value  # byte for byte, newline kept
    assert daemon.cli("kv", "ls", ns).stdout == key + "\n"
    # Not the same key under another spelling.
    assert daemon.cli("kv", "get", ns, "path/to it?x=1&y=A b#frag").returncode == 1

    binary = bytes(range(256)) * 4
    assert cli_bytes(daemon, "kv", "put", ns, "bin", input=binary).returncode == 0
    r = cli_bytes(daemon, "kv", "get", ns, "bin")
    assert r.returncode == 0 and r.stdout == binary
    assert cli_bytes(daemon, "kv", "put", ns, "empty", input=b"").returncode == 0
    r = cli_bytes(daemon, "kv", "get", ns, "empty")
    assert r.returncode == 0 and r.stdout == b""

    biggest = os.urandom(64 * 1024)
    assert cli_bytes(daemon, "kv", "put", ns, "big", input=biggest).returncode == 0
    assert cli_bytes(daemon, "kv", "get", ns, "big").stdout == biggest
    r = cli_bytes(daemon, "kv", "put", ns, "big", input=biggest + b"x")
    assert r.returncode == 1 and r.stderr == b"sluice: the value is larger than 65536 bytes\n"
    assert cli_bytes(daemon, "kv", "get", ns, "big").stdout == biggest
    for k in (key, "bin", "empty", "big"):
        assert daemon.cli("kv", "rm", ns, k).returncode == 0


def test_api(daemon):
    status, body = daemon.api("PUT", "/v1/kv/e2e-api/k%2Fslash", raw="raw value")
    assert status == 200 and body == {"ns": "e2e-api", "key": "k/slash", "bytes": 9}
    assert daemon.api("GET", "/v1/kv/e2e-api/k/slash") == (200, "raw value")
    assert daemon.api("GET", "/v1/kv/e2e-api") == (200, {"ns": "e2e-api", "keys": ["k/slash"]})
    status, body = daemon.api("GET", "/v1/kv/e2e-api/nope")
    assert status == 404 and body == {"error": "no key 'nope' in namespace 'e2e-api'"}
    status, body = daemon.api("PUT", "/v1/kv/e2e-api/big", raw="x" * (64 * 1024 + 1))
    assert status == 413 and "larger than 65536" in body["error"]
    for path in ("/v1/kv/bad%2Fns/k", "/v1/kv/bad%20ns/k", "/v1/kv//k", "/v1/kv/"):
        status, body = daemon.api("GET", path)
        assert status == 400 and "invalid namespace" in body["error"], path
    for path in ("/v1/kv/ns/", "/v1/kv/ns/a%0Ab", "/v1/kv/ns/a%00b", "/v1/kv/ns/" + "k" * 513):
        status, body = daemon.api("GET", path)
        assert status == 400 and "invalid key" in body["error"], path
    assert daemon.api("PATCH", "/v1/kv/e2e-api/k")[0] == 405
    assert daemon.api("PUT", "/v1/kv/e2e-api")[0] == 405
    status, body = daemon.api("DELETE", "/v1/kv/e2e-api/k%2Fslash")
    assert status == 200 and body["removed"] is True
    assert daemon.api("DELETE", "/v1/kv/e2e-api/k%2Fslash")[0] == 404
    assert daemon.api("GET", "/v1/health")[0] == 200


def test_cli_usage_errors_and_help(daemon):
    for args in (["kv", "--help"], ["kv", "put", "--help"], ["kv", "get", "-h"]):
        r = daemon.cli(*args)
        assert r.returncode == 0 and "Usage: sluice kv put NS KEY [VALUE]" in r.stdout, args
        assert "stdin" in r.stdout
    assert "kv put NS KEY" in daemon.cli("--help").stdout
    for args, message in ((["kv"], "Usage:"),
                          (["kv", "put", "ns"], "kv put takes NS KEY"),
                          (["kv", "get", "ns", "k", "extra"], "kv get takes NS KEY"),
                          (["kv", "rm"], "kv rm takes NS KEY"),
                          (["kv", "frob", "ns", "k"], "unknown kv command 'frob'"),
                          (["kv", "get", "bad/ns", "k"], "invalid namespace 'bad/ns'"),
                          (["kv", "put", "ns", "bad\nkey", "v"], "invalid key")):
        r = daemon.cli(*args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    env = dict(os.environ, SLUICE_SOCKET="/nonexistent/sluiced.sock")
    r = subprocess.run([str(BUILD / "sluice"), "kv", "get", "ns", "k"], capture_output=True,
                       text=True, env=env, timeout=10)
    assert r.returncode == 1 and "cannot reach sluiced" in r.stderr


def test_values_survive_restarts_and_never_hit_the_disk_in_clear(fresh_daemon):
    d = fresh_daemon.start()
    ns = "e2e-restart"
    assert d.cli("kv", "put", ns, "token", input=SECRET).returncode == 0
    kvdir = Path(d.state) / "kv"
    assert stat.S_IMODE(kvdir.stat().st_mode) == 0o700
    key = kvdir / "kv.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    assert stat.S_IMODE((kvdir / "kv.db").stat().st_mode) == 0o600
    for extra in ("kv.db-wal", "kv.db-shm"):
        if (kvdir / extra).exists():
            assert stat.S_IMODE((kvdir / extra).stat().st_mode) == 0o600
    # While it runs (the value is in the WAL), and after a clean stop (checkpointed).
    assert files_containing(d.dir, SECRET) == []
    d.signal(signal.SIGTERM)
    assert files_containing(d.dir, SECRET) == []
    d.start()
    assert d.cli("kv", "get", ns, "token").stdout == SECRET
    # A write acknowledged before a SIGKILL is on disk (synchronous commits).
    assert d.cli("kv", "put", ns, "late", input="written-" + SECRET).returncode == 0
    d.signal(signal.SIGKILL)
    d.start()
    assert d.cli("kv", "get", ns, "late").stdout == "written-" + SECRET
    assert d.cli("kv", "get", ns, "token").stdout == SECRET
    assert files_containing(d.dir, SECRET) == []
    assert SECRET not in d.read_log()


def test_key_file_readable_by_others_is_refused(fresh_daemon):
    d = fresh_daemon.start()
    assert d.cli("kv", "put", "e2e-mode", "k", "v").returncode == 0
    d.signal(signal.SIGTERM)
    key = Path(d.state) / "kv" / "kv.key"
    key.chmod(0o644)
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("sluiced: KV store: ") and r.stderr.count("\n") == 1
    assert f"{key} is accessible by group or others (mode 0644)" in r.stderr, r.stderr
    key.chmod(0o600)
    d.start()
    assert d.cli("kv", "get", "e2e-mode", "k").stdout == "v"


def write_env(path, text, mode):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_env_file_mode_decides_whether_sluiced_starts(fresh_daemon):
    d = fresh_daemon
    env = write_env(Path(d.dir) / "secrets.env",
                    f"# tokens\nexport GITHUB_TOKEN={SECRET}\nOTHER='a b'\n", 0o644)
    r = subprocess.run(d.argv("--env-file", str(env)), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"sluiced: env file {env} is accessible by group or others "
                        "(mode 0644): it holds secrets, chmod 600 it\n"), r.stderr
    assert not os.path.exists(d.bpffs)  # refused before anything was loaded
    # A relative path is the caller's, not the daemon's working directory's.
    r = subprocess.run(d.argv("--env-file", "secrets.env"), capture_output=True, text=True,
                       timeout=30, cwd=d.dir)
    assert r.returncode == 1 and f"env file {env} is accessible" in r.stderr, r.stderr
    for mode in (0o640, 0o604, 0o660):
        env.chmod(mode)
        r = subprocess.run(d.argv("--env-file", str(env)), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and f"(mode {mode:04o})" in r.stderr, (mode, r.stderr)
    r = subprocess.run(d.argv("--env-file", str(Path(d.dir) / "missing.env")),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "missing.env: No such file or directory" in r.stderr

    env.chmod(0o600)
    d.extra += ["--env-file", str(env)]
    d.start()
    log = d.read_log()
    assert f"env file {env}: 2 variables" in log
    assert SECRET not in log
    assert d.api("GET", "/v1/health")[0] == 200


def test_env_file_bad_line_names_the_line_not_the_value(fresh_daemon):
    d = fresh_daemon
    env = write_env(Path(d.dir) / "bad.env", f"OK=1\n\n# comment\n{SECRET}\n", 0o600)
    r = subprocess.run(d.argv("--env-file", str(env)), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith(f"sluiced: env file {env}: line 4 is not KEY=VALUE")
    assert r.stderr.count("\n") == 1
    assert SECRET not in r.stderr and SECRET not in d.read_log()
    write_env(env, f"TOKEN=\"{SECRET}\nOTHER=x\n", 0o600)
    r = subprocess.run(d.argv("--env-file", str(env)), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "line 1: the value's opening double quote" in r.stderr
    assert SECRET not in r.stderr and SECRET not in d.read_log()


def test_sluiced_help_names_env_file():
    r = subprocess.run([str(BUILD / "sluiced"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--env-file FILE" in r.stdout
