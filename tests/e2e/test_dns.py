# SPDX-License-Identifier: MIT
"""The DNS half, end to end: dnsmasq is the real upstream (loopback, query log), the sandbox
resolves through the resolver its resolv.conf names (127.0.0.153, where nothing listens: only
sluice's capture answers), and every allowed case has its denied twin. Names resolve to
127.0.0.0/8 and ::1, which the test policies allow explicitly with egress.private."""
import json
import os
import signal
import time

import pytest

from conftest import BUILD, HTTPServer, map_dump, probe, run_in, write_policy


def tcp(host, port):
    return {"op": "connect", "proto": "tcp", "host": host, "port": port}


def resolve(name, family=0):
    return {"op": "resolve", "name": name, "family": family}


def dns(name, qtype=1, server="127.0.0.153", tcp=False, port=53, **kw):
    return {"op": "dns", "server": server, "port": port, "tcp": tcp, "name": name,
            "qtype": qtype, **kw}


@pytest.fixture(scope="module")
def box(daemon, cgroups, servers, http_server, workdir):
    pa, pb, pc = servers.ports
    ph = http_server.port
    policy = write_policy(workdir, "dns", f"""
return {{
  egress = {{
    allow = {{
      "allowed.test:{pa}", "allowed.test:{ph}",
      "short.test:{pa}",
      "v6only.test:{pa}", "dual.test:{pa}",
      "alias1.test:{pa}",
      "*.wild.test:{pa}",
      "rebind.test", "metadata.test", "mixed.test:{pa}", "cached.test:{pa}",
    }},
    private = {{ "127.0.0.0/8", "::1" }},   -- the test's "Internet" lives on loopback
  }},
}}
""")
    cg = cgroups.make("dns")
    daemon.add("dns", cg, policy)
    yield cg
    daemon.cli("sandbox", "rm", "dns")


def show(daemon, name):
    r = daemon.cli("sandbox", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_allowed_name_resolves_and_connects(box, servers, workdir, dnsmasq):
    pa, pb, _ = servers.ports
    res = probe(box, [resolve("allowed.test", 4), tcp("127.0.0.5", pa), tcp("127.0.0.5", pb)],
                workdir)
    # Resolved, installed on its port; the port the entry does not give stays denied.
    assert res == [["127.0.0.5"], "OK", "EPERM"]
    assert dnsmasq.queried("allowed.test")


def test_denied_name_never_resolves_and_never_leaves(box, daemon, servers, workdir, dnsmasq):
    pa, _, _ = servers.ports
    metric = 'sluice_dns_queries_total{sandbox="dns",result="denied"}'
    before = daemon.metrics()[metric]
    res = probe(box, [resolve("denied.test"), dns("denied.test"), tcp("127.0.0.6", pa)],
                workdir)
    assert res[0] == "EAI_NONAME"
    assert res[1]["rcode"] == 3 and res[1]["answers"] == []  # NXDOMAIN, answered locally
    assert res[2] == "EPERM"  # its address, connected to directly
    assert not dnsmasq.queried("denied.test")
    assert daemon.metrics()[metric] >= before + 2
    ev = [e for e in daemon.events("dns") if e.get("name") == "denied.test"]
    assert ev and ev[-1]["type"] == "dns" and ev[-1]["verdict"] == "deny"


def test_names_answered_together_install_every_grant(daemon, cgroups, servers, workdir):
    """Answers that reach sluice in one wake-up have their kernel entries written in one
    batch: names at one address with different ports, each asked several times at once
    (later answers rewrite an entry staged by an earlier one), must leave one entry with
    every port, and none they do not give. Whether the answers share a wake-up is the
    scheduler's: tests/unit/test_kbatch.c covers the staging itself deterministically."""
    pa, pb, pc = servers.ports
    policy = write_policy(workdir, "burst", f"""
return {{ egress = {{ allow = {{ "api.test:{pa}", "www.test:{pb}" }},
                      private = {{ "127.0.0.0/8" }} }} }}
""")
    cg = cgroups.make("burst")
    daemon.add("burst", cg, policy)
    try:
        before = probe(cg, [tcp("127.0.0.20", pa), tcp("127.0.0.20", pb)], workdir)
        assert before == ["EPERM", "EPERM"]
        names = ["api.test", "www.test"] * 8
        res = probe(cg, [{"op": "dns_burst", "server": "127.0.0.153", "names": names},
                         tcp("127.0.0.20", pa), tcp("127.0.0.20", pb), tcp("127.0.0.20", pc)],
                    workdir)
        assert res[0] == {"api.test": ["127.0.0.20"], "www.test": ["127.0.0.20"]}, res
        assert res[1:] == ["OK", "OK", "EPERM"], res
    finally:
        daemon.cli("sandbox", "rm", "burst")


def test_getent_and_curl(box, http_server, workdir):
    r = run_in(box, ["getent", "hosts", "allowed.test"], workdir)
    assert r.returncode == 0 and r.stdout.split()[:2] == ["127.0.0.5", "allowed.test"]
    r = run_in(box, ["getent", "hosts", "denied.test"], workdir)
    assert r.returncode == 2 and r.stdout == ""
    r = run_in(box, ["curl", "-sS", "--max-time", "10",
                     f"http://allowed.test:{http_server.port}/"], workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == HTTPServer.BODY
    r = run_in(box, ["curl", "-sS", "--max-time", "10",
                     f"http://denied.test:{http_server.port}/"], workdir)
    assert r.returncode == 6 and "resolve" in r.stderr.lower()  # CURLE_COULDNT_RESOLVE_HOST


def test_any_resolver_address_is_captured(box, workdir, dnsmasq):
    """Queries to addresses where nothing listens still reach sluice, and the answer comes
    back from the address the sandbox asked (recvmsg restores it)."""
    res = probe(box, [dns("allowed.test", server="127.0.0.153"),
                      dns("allowed.test", server="127.9.9.9"),
                      dns("allowed.test", server="::1"),
                      dns("allowed.test", server="::ffff:127.0.0.154")], workdir)
    for r, src in zip(res, ["127.0.0.153", "127.9.9.9", "::1", "::ffff:127.0.0.154"]):
        assert r["rcode"] == 0 and ["A", "127.0.0.5"] in r["answers"], r
        assert r["from"] == [src, 53]


def test_dns_over_tcp(box, servers, workdir, dnsmasq):
    pa, _, _ = servers.ports
    res = probe(box, [dns("allowed.test", tcp=True), dns("denied.test", tcp=True),
                      dns("v6only.test", qtype=28, tcp=True, server="::1")], workdir)
    assert res[0]["rcode"] == 0 and res[0]["answers"] == [["A", "127.0.0.5"]]
    assert res[0]["peer"] == ["127.0.0.153", 53]  # getpeername restored too
    assert res[1]["rcode"] == 3 and res[1]["answers"] == []
    assert res[2]["rcode"] == 0 and res[2]["answers"] == [["AAAA", "::1"]]
    assert res[2]["peer"] == ["::1", 53]
    assert not dnsmasq.queried("denied.test")


def test_aaaa(box, servers, workdir):
    pa, pb, _ = servers.ports
    res = probe(box, [resolve("v6only.test", 6), tcp("::1", pa), tcp("::1", pb),
                      resolve("dual.test")], workdir)
    assert res[0] == ["::1"]
    assert res[1:3] == ["OK", "EPERM"]
    assert res[3] == ["127.0.0.8", "::1"]


def test_cname_chain(box, servers, workdir, dnsmasq):
    pa, _, _ = servers.ports
    res = probe(box, [dns("alias1.test"), tcp("127.0.0.9", pa), resolve("target.test")],
                workdir)
    assert [a for a in res[0]["answers"] if a[0] == "CNAME"] == [
        ["CNAME", "alias2.test"], ["CNAME", "alias3.test"], ["CNAME", "target.test"]]
    assert ["A", "127.0.0.9"] in res[0]["answers"]
    assert res[1] == "OK"  # the chain's address is installed for the name asked
    assert res[2] == "EAI_NONAME"  # the target itself is not in the policy
    assert not dnsmasq.queried("target.test")


def test_wildcard_entry(box, servers, workdir, dnsmasq):
    pa, _, _ = servers.ports
    res = probe(box, [resolve("a.wild.test", 4), resolve("x.y.wild.test", 4),
                      resolve("wild.test"), resolve("evilwild.test"), resolve("wild.test.evil"),
                      resolve("A.WILD.TEST.", 4), tcp("127.0.0.10", pa), tcp("127.0.0.12", pa)],
                workdir)
    assert res[:6] == [["127.0.0.10"], ["127.0.0.11"], "EAI_NONAME", "EAI_NONAME",
                       "EAI_NONAME", ["127.0.0.10"]]
    assert res[6:] == ["OK", "EPERM"]
    for name in ("wild.test", "evilwild.test", "wild.test.evil"):
        assert not dnsmasq.queried(name)


def test_rebinding_answers_are_not_installed(box, daemon, servers, workdir):
    pa, _, _ = servers.ports
    # (10.1.2.3 itself is never connected to: tests only send to loopback.)
    res = probe(box, [dns("rebind.test"), dns("metadata.test"), dns("mixed.test"),
                      tcp("127.0.0.15", pa)], workdir)
    # Private and link-local (metadata) answers are removed from the reply...
    assert res[0]["rcode"] == 0 and res[0]["answers"] == []
    assert res[1]["rcode"] == 0 and res[1]["answers"] == []
    # ...the loopback address the policy allows is kept and installed, the private one not.
    assert res[2]["answers"] == [["A", "127.0.0.15"]]
    assert res[3] == "OK"
    s = show(daemon, "dns")
    installed = {a["dst"] for n in s["names"] for a in n["addresses"]}
    assert "10.1.2.3" not in installed and "169.254.169.254" not in installed
    assert "10.1.2.4" not in installed and "127.0.0.15" in installed
    evs = [e for e in daemon.events("dns") if e.get("name") == "mixed.test"]
    assert evs and evs[-1]["blocked"] == ["10.1.2.4"] and evs[-1]["installed"] == ["127.0.0.15"]


def test_loopback_answers_need_private(daemon, cgroups, servers, workdir, dnsmasq):
    """The same allowed name without egress.private: its loopback answer is a rebinding."""
    pa, _, _ = servers.ports
    cg = cgroups.make("noprivate")
    daemon.add("noprivate", cg, write_policy(workdir, "noprivate", f"""
return {{ egress = {{ allow = {{ "allowed.test:{pa}" }} }} }}
"""))
    try:
        res = probe(cg, [dns("allowed.test"), tcp("127.0.0.5", pa)], workdir)
        assert res[0]["rcode"] == 0 and res[0]["answers"] == []
        assert res[1] == "EPERM"
    finally:
        daemon.cli("sandbox", "rm", "noprivate")


def test_entry_expires_after_its_ttl(box, daemon, servers, workdir):
    pa, _, _ = servers.ports
    assert probe(box, [resolve("short.test", 4), tcp("127.0.0.7", pa)], workdir) == [
        ["127.0.0.7"], "OK"]
    names = {n["name"]: n for n in show(daemon, "dns")["names"]}
    assert names["short.test"]["addresses"][0]["expires_in_s"] <= 3
    # TTL 1 s (the upstream's), plus 1 s of grace, then the sweep (every second).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if probe(box, [tcp("127.0.0.7", pa)], workdir) == ["EPERM"]:
            break
        time.sleep(0.5)
    assert probe(box, [tcp("127.0.0.7", pa)], workdir) == ["EPERM"]
    # Cleaned up, not just ignored: gone from the daemon and from the kernel map (an address
    # is kept in the address hash).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "short.test" in {
            n["name"] for n in show(daemon, "dns")["names"]}:
        time.sleep(0.2)
    assert "short.test" not in {n["name"] for n in show(daemon, "dns")["names"]}
    sid = show(daemon, "dns")["id"]
    keys = [k for k, _ in map_dump(daemon.bpffs, "sl_hosts4")]
    assert not [k for k in keys if int.from_bytes(k[4:8], "little") == sid and k[8:12] ==
                bytes([127, 0, 0, 7])]


def test_allowed_answers_are_cached_for_the_grace_only(box, daemon, servers, workdir,
                                                       dnsmasq):
    """An allowed name's answer is served again from memory for at most --dns-grace (1 s
    here) and its smallest TTL, aged, with the asking client's letter case. Every answer
    served again names an entry the kernel still holds."""
    pa, _, _ = servers.ports

    def upstream():
        return sum("query[a] cached.test from" in line.lower()
                   for line in dnsmasq.log.read_text().splitlines())

    def hits():
        return daemon.metrics()['sluice_dns_cache_hits_total{sandbox="dns"}']

    n0, h0 = upstream(), hits()
    first, again, mixed, conn = probe(box, [dns("cached.test"), dns("cached.test"),
                                            dns("CaChEd.TeSt"), tcp("127.0.0.16", pa)], workdir)
    for r in (first, again, mixed):
        assert r["rcode"] == 0 and r["answers"] == [["A", "127.0.0.16"]], r
    assert conn == "OK"
    assert mixed["question"] == "CaChEd.TeSt"  # the client's own case (0x20 checks)
    assert again["ttls"][0] <= first["ttls"][0] <= 300
    assert upstream() == n0 + 1 and hits() == h0 + 2
    ev = [e for e in daemon.events("dns") if e.get("name") == "cached.test"][-3:]
    assert [e.get("cached", False) for e in ev] == [False, True, True], ev
    assert all(e["installed"] == ["127.0.0.16"] for e in ev), ev

    # Older than the grace: asked upstream again.
    time.sleep(1.5)
    assert probe(box, [dns("cached.test")], workdir)[0]["rcode"] == 0
    assert upstream() == n0 + 2


def test_a_reload_forgets_cached_answers(fresh_daemon, cgroups, servers, workdir, dnsmasq):
    """With a grace of a minute, answers stay cached until the sandbox's rules change: a
    policy reload that no longer names the name refuses it at once, and one that names it
    again asks the upstream again."""
    pa, _, _ = servers.ports
    d = fresh_daemon.start("--dns-grace", "60")
    cg = cgroups.make("dnscache")
    allow = write_policy(workdir, "dnscache", f"""
return {{ egress = {{ allow = {{ "cached.test:{pa}" }}, private = {{ "127.0.0.0/8" }} }} }}""")
    deny = write_policy(workdir, "dnscache-no", "return { egress = { allow = {} } }")
    d.add("dnscache", cg, allow)

    def upstream():
        return sum("query[a] cached.test from" in line.lower()
                   for line in dnsmasq.log.read_text().splitlines())

    n0 = upstream()
    assert [r["rcode"] for r in probe(cg, [dns("cached.test")] * 3, workdir)] == [0, 0, 0]
    assert upstream() == n0 + 1
    assert d.cli("policy", "reload", "dnscache", "--policy", deny).returncode == 0
    refused, conn = probe(cg, [dns("cached.test"), tcp("127.0.0.16", pa)], workdir)
    assert refused["rcode"] == 3 and refused["answers"] == [] and conn == "EPERM"
    assert d.cli("policy", "reload", "dnscache", "--policy", allow).returncode == 0
    assert probe(cg, [dns("cached.test")], workdir)[0]["rcode"] == 0
    assert upstream() == n0 + 2
    d.cli("sandbox", "rm", "dnscache")


def test_https_and_svcb_answered_empty_and_not_forwarded(box, workdir, dnsmasq):
    before = dnsmasq.log.read_text().count("query[type=65]") + \
        dnsmasq.log.read_text().count("query[HTTPS]")
    res = probe(box, [dns("allowed.test", qtype=65), dns("allowed.test", qtype=64)], workdir)
    assert [(r["rcode"], r["answers"]) for r in res] == [(0, []), (0, [])]
    text = dnsmasq.log.read_text()
    assert text.count("query[type=65]") + text.count("query[HTTPS]") == before
    assert "query[type=64]" not in text and "query[SVCB]" not in text


def test_malformed_queries_get_formerr(box, workdir):
    garbage = "4242" + "0100" + "0001" + "0000" + "0000" + "0000" + "3f41"  # label cut short
    res = probe(box, [dns("", raw=garbage), dns("", raw="ffff"), dns("", raw="ff"),
                      dns("allowed.test")], workdir)
    assert res[0]["rcode"] == 1 and res[0]["id"] == 0x4242  # FORMERR
    assert res[1]["rcode"] == 1 and res[1]["id"] == 0xffff  # an id is enough to answer to
    assert res[2] == "TIMEOUT"  # one byte: nothing to answer to, and nothing else happens
    assert res[3]["rcode"] == 0  # the listener is still serving


def test_listener_cannot_be_reached_directly(box, daemon, cgroups, servers, workdir):
    """Even a policy allowing all of 127.0.0.0/8 cannot talk to sluice's listeners; port 53
    still reaches it through the capture."""
    pa, _, _ = servers.ports
    cg = cgroups.make("open")
    daemon.add("open", cg, write_policy(workdir, "open", """
return { egress = { allow = { "127.0.0.0/8", "::1" } } }
"""))
    try:
        port = show(daemon, "open")["dns"]["port"]
        other = show(daemon, "dns")["dns"]["port"]
        res = probe(cg, [tcp("127.0.0.1", port), tcp("::1", port), tcp("127.0.0.1", other),
                         {"op": "sendto", "host": "127.0.0.1", "port": port, "data": "x"},
                         tcp("127.0.0.1", pa), dns("denied.test", server="127.0.0.1")], workdir)
        assert res[:4] == ["EPERM"] * 4
        assert res[4] == "OK"
        assert res[5]["rcode"] == 3
    finally:
        daemon.cli("sandbox", "rm", "open")


def test_show_lists_names_addresses_and_expiry(box, daemon, servers, http_server, workdir):
    probe(box, [resolve("allowed.test", 4)], workdir)
    s = show(daemon, "dns")
    names = {n["name"]: n["addresses"] for n in s["names"]}
    assert {a["dst"] for a in names["allowed.test"]} == {"127.0.0.5"}
    assert {a["ports"] for a in names["allowed.test"]} == {str(servers.ports[0]),
                                                           str(http_server.port)}
    assert all(0 < a["expires_in_s"] <= 301 for a in names["allowed.test"])
    assert s["dns"]["queries"]["denied"] >= 1
    text = daemon.cli("sandbox", "show", "dns").stdout
    assert "allowed.test" in text and "expires in" in text


def test_restart_keeps_resolved_names(fresh_daemon, cgroups, servers, workdir):
    pa, _, _ = servers.ports
    d = fresh_daemon.start()
    cg = cgroups.make("dnsrestart")
    d.add("dnsrestart", cg, write_policy(workdir, "dnsrestart", f"""
return {{ egress = {{ allow = {{ "allowed.test:{pa}" }}, private = {{ "127.0.0.0/8" }} }} }}
"""))
    assert probe(cg, [resolve("allowed.test", 4)], workdir) == [["127.0.0.5"]]
    port = show(d, "dnsrestart")["dns"]["port"]
    d.signal(signal.SIGKILL)
    # No daemon: the resolved address stays allowed, new names cannot resolve (fail closed).
    res = probe(cg, [tcp("127.0.0.5", pa), dns("allowed.test")], workdir)
    assert res[0] == "OK" and res[1] in ("TIMEOUT", "ECONNREFUSED")
    d.start()
    s = show(d, "dnsrestart")
    assert s["dns"]["port"] == port
    assert [a["dst"] for n in s["names"] for a in n["addresses"]] == ["127.0.0.5"]
    assert probe(cg, [tcp("127.0.0.5", pa), resolve("allowed.test", 4)], workdir) == [
        "OK", ["127.0.0.5"]]


def test_restart_gives_each_sandbox_back_its_own_resolutions(fresh_daemon, cgroups, servers,
                                                              workdir):
    """An adoption reads every sandbox's resolutions back from one walk of the kernel's maps
    (sl_bpf_learned_snapshot()): each sandbox gets its own and only its own, whatever the
    others resolved, and what each resolved stays reachable for it alone."""
    pa, _, _ = servers.ports
    d = fresh_daemon.start()
    names = {"rs1": ("allowed.test", "127.0.0.5"), "rs2": ("target.test", "127.0.0.9"),
             "rs3": ("cached.test", "127.0.0.16")}
    cgs = {}
    for box, (name, _) in names.items():
        cgs[box] = cgroups.make(box)
        d.add(box, cgs[box], write_policy(workdir, box, f"""
return {{ egress = {{ allow = {{ "{name}:{pa}" }}, private = {{ "127.0.0.0/8" }} }} }}
"""))
    for box, (name, addr) in names.items():
        assert probe(cgs[box], [resolve(name, 4)], workdir) == [[addr]]
    # The names file takes new lines within 5 ms (NAMES_FLUSH_MS); a crash sooner loses them,
    # their addresses coming back nameless (documented).
    time.sleep(0.1)
    d.signal(signal.SIGKILL)
    d.start()
    for box, (name, addr) in names.items():
        s = show(d, box)
        assert [(n["name"], [a["dst"] for a in n["addresses"]]) for n in s["names"]] == \
            [(name, [addr])], (box, s["names"])
        others = [a for b, (_, a) in names.items() if b != box]
        assert probe(cgs[box], [tcp(addr, pa)] + [tcp(a, pa) for a in others], workdir) == \
            ["OK", "EPERM", "EPERM"]
