# SPDX-License-Identifier: MIT
"""A big policy does not stall the other sandboxes (issue 18): while a 100,000-rule policy
loads (a sandbox add), another sandbox's DNS queries and intercepted HTTPS requests keep
answering fast, because the policy is loaded, compiled and written into the kernel on
sluiced's jobs thread, and only the rest of the add runs on the loop. Bounded: one query every
5 ms and one request at a time, for the length of the load plus a second, at most 120 s."""
import json
import subprocess
import threading
import time
from pathlib import Path

from conftest import IN_SANDBOX, PY, SLOW, UnixHTTPConnection, add_box

N_RULES = 100000

# In a sandbox: DNS queries for api.test (one every 5 ms, open loop) on one thread, HTTPS
# requests to api.test (one at a time; /static, which nginx answers itself: the Python backend
# runs in pytest's process, whose pauses are not sluice's) on another, until stdin closes or
# 120 s pass. Prints {"dns": [[seconds, rcode or error], ...], "https": [[seconds, status or
# error], ...]}.
CLIENT = r"""
import http.client, json, random, select, socket, ssl, struct, sys, threading, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
end = time.monotonic() + 120
stop = threading.Event()
dns, https = [], []

def query():
    # Open loop: one query every 5 ms whatever is outstanding, so that a stall counts for
    # every query it holds up, not once.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("127.0.0.153", 53))
    u.setblocking(False)
    sent, i, nxt = {}, 0, time.monotonic()
    while True:
        now = time.monotonic()
        done = stop.is_set() or now >= end
        if done and (not sent or now >= nxt + 5):
            break
        if not done and now >= nxt:
            i = (i + 1) & 0xffff
            u.send(struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) +
                   b"\x03api\x04test\x00\x00\x01\x00\x01")
            sent[i] = now
            nxt += 0.005
        if select.select([u], [], [], 0.05 if done else max(0.0, min(0.05, nxt - now)))[0]:
            while True:
                try:
                    r = u.recv(2048)
                except BlockingIOError:
                    break
                t0 = sent.pop(struct.unpack("!H", r[:2])[0], None)
                if t0 is not None:
                    dns.append([time.monotonic() - t0, r[3] & 15])
    dns.extend([5.0, "lost"] for _ in sent)

def fetch():
    while not stop.is_set() and time.monotonic() < end:
        t0 = time.monotonic()
        try:
            c = http.client.HTTPSConnection("api.test", 443, context=ctx, timeout=10)
            c.request("GET", "/static")
            r = c.getresponse()
            r.read()
            https.append([time.monotonic() - t0, r.status])
            c.close()
        except Exception as e:
            https.append([time.monotonic() - t0, type(e).__name__])
        time.sleep(0.01)

ts = [threading.Thread(target=f) for f in (query, fetch)]
for t in ts:
    t.start()
print("started", flush=True)
while time.monotonic() < end and not select.select([sys.stdin], [], [], 0.1)[0]:
    pass
stop.set()
for t in ts:
    t.join()
print(json.dumps({"dns": dns, "https": https}))
"""


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def rules_policy(path, n, port=443):
    """n /32 rules in 10.0.0.0/8 on @port, and a handler "narrow" whose egress is one name."""
    Path(path).write_text(
        "local a = {}\n"
        f"for i = 1, {n} do\n"
        f"  a[#a + 1] = string.format('10.%d.%d.%d:{port}', (i >> 16) & 255, (i >> 8) & 255,"
        " i & 255)\n"
        "end\n"
        "return { egress = { allow = a },\n"
        "  outboundHandlers = { narrow = { egress = function() return { intercept ="
        " { 'api.test' } } end, handle = function(req) return fetch(req) end } } }\n")
    return path


def api(d, method, path, body=None, timeout=300):
    conn = UnixHTTPConnection(d.socket, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def measured(d, calm_cg, workdir, ca, work):
    """Runs CLIENT in calm_cg around work(); returns (its rows, work's seconds)."""
    cl = subprocess.Popen([IN_SANDBOX, str(calm_cg), str(Path(workdir) / "resolv.conf"), PY,
                           "-c", CLIENT, str(ca)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cl.stdout.readline().strip() == "started", cl.stderr.read()
        time.sleep(0.5)
        t0 = time.monotonic()
        work()
        took = time.monotonic() - t0
        time.sleep(0.5)
        out, err = cl.communicate(input="", timeout=150)
    finally:
        if cl.poll() is None:
            cl.kill()
            cl.wait()
    assert cl.returncode == 0, err
    return json.loads(out), took


def check(rows, what):
    figures = {}
    for kind, ok_status in (("dns", 0), ("https", 200)):
        xs = rows[kind]
        ok = [t for t, status in xs if status == ok_status]
        assert len(ok) == len(xs) and len(xs) >= 10, (what, kind, xs[-5:])
        figures[kind] = p99(ok)
        print(f"{what}: {kind} {len(xs)} answers, p99 {p99(ok) * 1e3:.1f} ms, "
              f"max {max(ok) * 1e3:.1f} ms")
    return figures


def test_another_sandbox_keeps_answering_while_a_100k_rule_policy_loads(fresh_daemon, cgroups,
                                                                         workdir, upstreams):
    d = fresh_daemon.start()
    calm_cg, ca = add_box(d, cgroups, workdir, "calmload", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
""")
    big_cg = cgroups.make("bigload")
    big = rules_policy(Path(workdir) / "big.lua", N_RULES)

    def add():
        status, text = api(d, "POST", "/v1/sandboxes",
                           {"name": "big", "cgroup": str(big_cg), "policy_file": str(big)})
        assert status == 201, text

    idle, _ = measured(d, calm_cg, workdir, ca, lambda: time.sleep(1))
    p_idle = check(idle, "idle")
    during_add, add_s = measured(d, calm_cg, workdir, ca, add)
    # The add answered when its rules were in force.
    status, show = d.api("GET", "/v1/sandboxes/big")
    assert status == 200 and len(show["rules"]) == N_RULES
    p_add = check(during_add, f"during a {N_RULES}-rule add ({add_s:.2f} s)")
    d.cli("sandbox", "rm", "big")
    d.cli("sandbox", "rm", "calmload")
    # The contract is a p99 under 10 ms. This shared 2-core VM, loaded by other runs, is slower
    # than that even idle at times: the add may add at most 50 ms to the p99 measured idle in
    # the same run (a compile on the loop added 1-3 s).
    for kind, v in p_add.items():
        assert v < p_idle[kind] + 0.05 * SLOW, (kind, v, p_idle[kind])


def in_thread(fn):
    """Runs fn() on a thread: (thread, a list that gets its result)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def test_one_switch_at_a_time_and_a_removal_ends_a_switch(fresh_daemon, cgroups, workdir):
    """A switch compiles off the loop: a second switch of the same sandbox asked for meanwhile
    is refused (409, ask again), and a sandbox removed meanwhile ends its switch cleanly (404),
    its name, cgroup and id free again afterwards."""
    d = fresh_daemon.start()
    cg = cgroups.make("bigswitch")
    big = rules_policy(Path(workdir) / "bigswitch.lua", N_RULES)
    other = rules_policy(Path(workdir) / "bigswitch2.lua", N_RULES, port=8443).read_text()
    status, text = api(d, "POST", "/v1/sandboxes",
                       {"name": "bigswitch", "cgroup": str(cg), "policy_file": str(big)})
    assert status == 201, text

    t, out = in_thread(lambda: api(d, "PUT", "/v1/sandboxes/bigswitch/policy",
                                   {"policy": other}))
    time.sleep(0.05)  # the reload compiles for a few hundred ms: a second switch meets it
    status, text = api(d, "PUT", "/v1/sandboxes/bigswitch/mode", {"mode": "audit"})
    t.join(300)
    assert status == 409 and "under way" in text, (status, text)
    assert out and out[0][0] == 200, out
    # In force when answered: the new rules, and the refused switch changed nothing.
    status, show = d.api("GET", "/v1/sandboxes/bigswitch")
    assert status == 200 and show["mode"] == "enforce" and show["switches"] == 1
    assert len(show["rules"]) == N_RULES and show["rules"][0]["ports"] == "8443"
    # Asked again once answered, it goes through.
    status, text = api(d, "PUT", "/v1/sandboxes/bigswitch/mode", {"mode": "audit"})
    assert status == 200 and json.loads(text)["mode"] == "audit", text

    # A removal while a reload compiles (a few hundred ms for 100,000 rules): at most three
    # tries, should a reload of an idle machine win the race.
    for policy in (big.read_text(), other, big.read_text()):
        t, out = in_thread(lambda: api(d, "PUT", "/v1/sandboxes/bigswitch/policy",
                                       {"policy": policy}))
        time.sleep(0.05)
        status, text = api(d, "DELETE", "/v1/sandboxes/bigswitch")
        t.join(300)
        assert status == 200, text
        assert out and out[0][0] in (200, 404), out
        if out[0][0] == 404:
            break
        status, text = api(d, "POST", "/v1/sandboxes", {"name": "bigswitch", "cgroup": str(cg),
                                                         "policy_file": str(big)})
        assert status == 201, text
    assert "removed while its switch compiled" in out[0][1], out
    status, _ = d.api("GET", "/v1/sandboxes/bigswitch")
    assert status == 404
    # Name, cgroup and id are free again, and the new sandbox gets its own rules.
    status, text = api(d, "POST", "/v1/sandboxes",
                       {"name": "bigswitch", "cgroup": str(cg), "policy_file": str(big)})
    assert status == 201, text
    status, show = d.api("GET", "/v1/sandboxes/bigswitch")
    assert len(show["rules"]) == N_RULES and show["rules"][0]["ports"] == "443"
    # A removal while a GET's job writes the rules: the GET still gets them all (its job holds
    # the layer), and the removal goes on after it.
    t, out = in_thread(lambda: api(d, "GET", "/v1/sandboxes/bigswitch"))
    time.sleep(0.02)
    status, text = api(d, "DELETE", "/v1/sandboxes/bigswitch")
    t.join(300)
    assert status == 200, text
    assert out and out[0][0] in (200, 404), out
    if out[0][0] == 200:
        assert len(json.loads(out[0][1])["rules"]) == N_RULES
    status, _ = d.api("GET", "/v1/sandboxes/bigswitch")
    assert status == 404


def test_another_sandbox_keeps_answering_while_a_100k_rule_sandbox_switches(
        fresh_daemon, cgroups, workdir, upstreams):
    """The same bound while a 100,000-rule sandbox switches handler (to a small layer and back
    to its 100,000 rules), reloads its policy (100,000 other rules), and is shown in full
    (GET, 100,000 rules as JSON). One worker: both sandboxes share its loop, so that whatever a
    switch or a GET did there, the other sandbox's queries would wait for it."""
    d = fresh_daemon.start("--workers", "1")
    calm_cg, ca = add_box(d, cgroups, workdir, "calmswitch", """
return { egress = { intercept = { "api.test" }, private = { "127.0.0.0/8" } } }
""")
    big_cg = cgroups.make("bigsw")
    big = rules_policy(Path(workdir) / "bigsw.lua", N_RULES)
    other = rules_policy(Path(workdir) / "bigsw2.lua", N_RULES, port=8443).read_text()
    status, text = api(d, "POST", "/v1/sandboxes",
                       {"name": "big", "cgroup": str(big_cg), "policy_file": str(big)})
    assert status == 201, text

    def call(method, path, body=None):
        status, text = api(d, method, path, body)
        assert status == 200, (method, path, status, text[:300])
        return json.loads(text)

    def switch():
        assert call("PUT", "/v1/sandboxes/big/handler", {"handler": "narrow"})["handler"] \
            == "narrow"
        assert call("DELETE", "/v1/sandboxes/big/handler")["handler"] is None

    def reload():
        call("PUT", "/v1/sandboxes/big/policy", {"policy": other})

    def show():
        # Counted as bytes, not decoded nor parsed, while measuring: 10 MB of JSON would take
        # the test's CPU from the client measured on these 2 cores (checked whole after).
        for _ in range(3):
            conn = UnixHTTPConnection(d.socket, timeout=300)
            try:
                conn.request("GET", "/v1/sandboxes/big")
                r = conn.getresponse()
                body = r.read()
            finally:
                conn.close()
            assert r.status == 200 and body.count(b'"dst":') == N_RULES, body[:300]

    idle, _ = measured(d, calm_cg, workdir, ca, lambda: time.sleep(1))
    p_idle = check(idle, "idle")
    results = {}
    for what, work in (("handler set and clear", switch), ("reload", reload),
                       ("3 GETs", show)):
        rows, took = measured(d, calm_cg, workdir, ca, work)
        results[what] = check(rows, f"during {what} of {N_RULES} rules ({took:.2f} s)")
    # Each was in force when answered.
    show_now = call("GET", "/v1/sandboxes/big")
    assert show_now["switches"] == 3 and show_now["rules"][0]["ports"] == "8443"
    assert len(show_now["rules"]) == N_RULES
    d.cli("sandbox", "rm", "big")
    d.cli("sandbox", "rm", "calmswitch")
    # The same bound as the add's (above): at most 50 ms over the idle p99 of the same run.
    for what, p in results.items():
        for kind, v in p.items():
            assert v < p_idle[kind] + 0.05 * SLOW, (what, kind, v, p_idle[kind])
