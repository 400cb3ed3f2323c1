# SPDX-License-Identifier: MIT
"""No secret in clear text, end to end: a handler that puts an env value on a plain-HTTP
request gets a 502 and nothing leaves (nginx on 127.0.0.20:80 sees no request), the same
handler over HTTPS works, and a policy that says cleartextSecrets = true may. The example
github.lua adds its token over HTTPS only."""
import json
from pathlib import Path

import pytest

from conftest import ENV_SECRETS, run_in, write_policy

ROOT = Path(__file__).resolve().parents[2]
SECRET = ENV_SECRETS["VCS_TOKEN"]

INJECT = """
return {{
  egress = {{ intercept = {{ "api.test" }}, private = {{ "127.0.0.0/8" }} }},
  {extra}
  outbound = function(req, env, ctx)
    req.headers:set("x-auth-token", env.VCS_TOKEN)
    return fetch(req)
  end,
}}
"""


@pytest.fixture
def box(daemon, cgroups, workdir, upstreams):
    made = []

    def make(name, text):
        cg = cgroups.make(name)
        daemon.add(name, cg, write_policy(workdir, name, text))
        ca = Path(workdir) / f"{name}-ca.pem"
        ca.write_text(daemon.cli("ca", name).stdout)
        made.append(name)

        def curl(url, *args):
            r = run_in(cg, ["curl", "-sS", "--max-time", "20", "--cacert", str(ca),
                            "-w", "\n%{http_code}", *args, url], workdir)
            assert r.returncode == 0, r.stderr
            body, _, code = r.stdout.rpartition("\n")
            return int(code), body
        return curl

    yield make
    for name in made:
        daemon.cli("sandbox", "rm", name)


def test_secret_over_cleartext_is_refused(box, upstreams, daemon):
    curl = box("clear-no", INJECT.format(extra=""))
    mark = upstreams.nginx.mark()
    status, body = curl("http://api.test/headers")
    assert status == 502, body
    assert "secret over cleartext refused" in body and SECRET not in body
    ev = [e for e in daemon.events("clear-no") if e.get("type") == "http"][-1]
    assert ev["status"] == 502 and "secret over cleartext refused" in ev["reason"]
    # Over TLS the same handler works, and only that request reached nginx.
    status, body = curl("https://api.test/headers")
    assert status == 200 and json.loads(body)["headers"]["x-auth-token"] == "*" * len(SECRET)
    seen = upstreams.nginx.wait_requests(1, since=mark)
    assert [(r["scheme"], r["h_x_auth_token"]) for r in seen] == [("https", SECRET)]


def test_cleartext_secrets_opt_in(box, upstreams, daemon):
    curl = box("clear-yes", INJECT.format(extra="cleartextSecrets = true,"))
    mark = upstreams.nginx.mark()
    status, body = curl("http://api.test/headers")
    assert status == 200, body
    assert json.loads(body)["headers"]["x-auth-token"] == "*" * len(SECRET)  # still masked
    seen = upstreams.nginx.wait_requests(1, since=mark)
    assert [(r["scheme"], r["h_x_auth_token"]) for r in seen] == [("http", SECRET)]


def test_cleartext_secrets_must_be_a_boolean(daemon, cgroups, workdir):
    cg = cgroups.make("clear-bad")
    path = write_policy(workdir, "clear-bad", INJECT.format(extra='cleartextSecrets = "yes",'))
    r = daemon.cli("sandbox", "add", "clear-bad", "--cgroup", str(cg), "--policy", str(path))
    assert r.returncode != 0 and "cleartextSecrets must be true or false" in r.stderr


def test_github_example_adds_its_token_over_https_only(box, upstreams):
    text = (ROOT / "lua/examples/github.lua").read_text()
    text = text.replace('"api.github.com"', '"api.test"').replace("GITHUB_TOKEN", "VCS_TOKEN")
    text = text.replace("egress = {", 'egress = { private = { "127.0.0.0/8" },', 1)
    curl = box("clear-gh", text)
    mark = upstreams.nginx.mark()
    assert curl("http://api.test/headers")[0] == 200
    assert curl("https://api.test/headers")[0] == 200
    seen = upstreams.nginx.wait_requests(2, since=mark)
    assert [(r["scheme"], r["h_authorization"]) for r in seen] == [
        ("http", ""), ("https", "Bearer " + SECRET)]



def test_plain_http_host_binding_survives_a_restart(fresh_daemon, cgroups, workdir, upstreams):
    """A plain-HTTP Host must be a name that resolved to the address connected to, also for
    addresses resolved before sluiced restarted (their names come back from the state
    directory): another intercepted name at that address stays a 421."""
    import signal

    d = fresh_daemon.start()
    cg = cgroups.make("rebind")
    d.add("rebind", cg, write_policy(workdir, "rebind", """
return { egress = { intercept = { "api.test", "allowed.test" }, private = { "127.0.0.0/8" } } }
"""))

    def get(host):
        r = run_in(cg, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                        "%{http_code}", "-H", f"Host: {host}", "http://127.0.0.20/bytes/1"],
                   workdir)
        return r.stdout

    r = run_in(cg, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                    "%{http_code}", "http://api.test/bytes/1"], workdir)
    assert r.stdout == "200"  # api.test resolved to 127.0.0.20 (allowed.test did not)
    assert (get("api.test"), get("allowed.test")) == ("200", "421")
    for how in (signal.SIGKILL, signal.SIGTERM):
        d.signal(how)
        d.start()
        assert "sandbox rebind adopted" in d.read_log()
        assert (get("api.test"), get("allowed.test")) == ("200", "421"), how
    d.cli("sandbox", "rm", "rebind")
    assert not list((Path(d.state) / "sandboxes").glob("rebind.*"))
