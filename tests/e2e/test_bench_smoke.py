# SPDX-License-Identifier: MIT
"""A short run of every benchmark (tests/bench/run.py --smoke: a few hundred requests or
connects each), so that the benchmarks do not rot: it asserts that each one runs and that its
results are well formed, never what the figures are."""
import json
import math
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import BUILD, PY, ROOT

RUN = ROOT / "tests" / "bench" / "run.py"
PEERS = ("direct", "sluice", "nginx", "squid", "mitmproxy")
NEEDED = ("wrk", "curl", "nginx", "dnsmasq", "squid", "mitmdump", "gnuplot", "taskset")


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    missing = [p for p in NEEDED if subprocess.run(["sh", "-c", f"command -v {p}"],
                                                    capture_output=True).returncode]
    assert not missing, f"benchmark peers missing: {missing} (run tools/install-deps)"
    for b in ("bench_connect", "bench_dns", "bench_load", "bench_mint"):
        assert (BUILD / "bench" / b).exists(), f"build/bench/{b} missing: make $(BENCH_BINS)"
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run([PY, str(RUN), "--smoke", "--out", str(out)], capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, f"run.py --smoke failed:\n{r.stderr[-4000:]}"
    return out, json.loads((out / "latest.json").read_text()), r


def test_machine_recorded(smoke):
    _, j, _ = smoke
    m = j["machine"]
    assert j["smoke"] is True and j["schema"] == 1
    assert m["cpu_model"] and m["cores"] >= 1 and m["kernel"] and "OpenSSL" in m["openssl"]
    assert j["pinning"]["mode"] and j["pinning"]["why"]
    for k in ("client", "upstream", "proxy"):
        assert len(j["pinning"][k]["cpus"]) == 1
    assert positive(j["duration_s"])


def test_kernel(smoke):
    _, j, _ = smoke
    c = j["kernel"]["connect"]
    for k in ("refused_ns", "denied_ns", "plain_ns", "sluice_ns", "ratio_denied_refused",
              "ratio_allowed", "prog_ns"):
        assert positive(c[k]), k
    cases = j["kernel"]["scale"]["cases"]
    kinds = [c["case"] for c in cases]
    assert any("rules" in k for k in kinds) and any("sandboxes" in k for k in kinds)
    assert any("DNS names" in k for k in kinds)
    for case in cases:
        assert "error" not in case, case
        assert positive(case["ratio"]) and positive(case["plain_ns"]), case
    many = [c for c in cases if "sandboxes" in c["case"]][0]
    assert many["sandboxes"] == 20  # one at a time, then eight in flight: all of them added
    assert positive(many["add_ms_alone"]) and positive(many["add_ms_in_flight"]), many
    assert positive(many["restart_s"]), many  # sluiced restarted with them all in place
    dns_case = [c for c in cases if "DNS names" in c["case"]][0]
    assert dns_case["installed"] == dns_case["dns_names"]  # every name became a kernel entry


def test_dns(smoke):
    _, j, _ = smoke
    d = j["dns"]
    for label in ("latency", "throughput"):
        for side in ("dnsmasq", "sluice"):
            assert positive(d[label][side]["qps"]) and positive(d[label][side]["p99_us"])
    assert positive(d["cold_names"]["ratio_qps"])


def test_loop_latency(smoke):
    _, j, _ = smoke
    ll = j["loadlat"]
    assert list(ll) == ["idle", "during a 10000-rule add", "during 100 adds, 8 in flight"]
    for label, v in ll.items():
        # (nearly) every query answered: the other sandbox's DNS kept going across the adds
        assert v["queries"] > 1000 and v["lost"] <= v["queries"] // 100, (label, v)
        assert positive(v["p50_us"]) and positive(v["p99_us"]), (label, v)
        assert label == "idle" or positive(v["add_s"]), (label, v)


def test_https(smoke):
    _, j, _ = smoke
    h = j["https"]
    for size in ("1k", "64k"):
        for p in PEERS:
            x = h["keepalive"][size][p]
            assert positive(x["rps"]) and positive(x["p99_us"]) and positive(x["p999_us"]), p
            assert positive(x["upstream_cpu_us"]), p
            if p != "direct":
                assert positive(x["proxy_cpu_us"]), p
        fr = h["fixed_rate"][size]
        assert positive(fr["rate"])
        for p in PEERS:
            x = fr["peers"][p]
            assert x["errors"] == 0 and x["ok"] > 0 and positive(x["p99_us"]), (p, x)
        assert "sluice_added_us" in fr
    for p in PEERS:
        assert positive(h["newconn"][p]["rps"]), p


def test_injection_checked(smoke):
    """Every peer but direct sets the header, with the right value, as the upstream saw it:
    sluice through its policy's handler and the token of its --env-file. A run where sluice
    forwarded the request unchanged fails here (and its report says so)."""
    out, j, _ = smoke
    inj = j["injection"]
    assert inj["direct"]["header_seen"] is False
    for p in ("sluice", "nginx", "squid", "mitmproxy"):
        assert inj[p]["injected"] is True, (p, inj[p])
    assert "sluice did not inject" not in (out / "latest.md").read_text()


def test_egress(smoke):
    _, j, _ = smoke
    e = j["kernel"]["egress"]
    for what in ("download", "upload"):
        for k in ("with_gib_s", "without_gib_s", "ratio", "packets", "prog_ns_per_packet",
                  "prog_share"):
            assert positive(e[what][k]), (what, k)
    assert positive(e["connect"]["ratio"]) and positive(e["connect"]["sluice_ns"])


def test_transfer(smoke):
    _, j, _ = smoke
    for what in ("download", "upload"):
        for p in ("direct", "sluice"):
            assert positive(j["transfer"][what][p]["MBps"])


def test_report_and_plots(smoke):
    out, j, _ = smoke
    assert positive(j["mint"]["mint_cold_us_p50"])
    assert j["targets"] and all(isinstance(t["met"], bool) for t in j["targets"])
    md = (out / "latest.md").read_text()
    assert "| direct (nginx) |" in md and "## Targets" in md
    for svg in ("throughput.svg", "latency.svg", "connect.svg"):
        root = ET.parse(out / svg).getroot()
        assert root.tag.endswith("svg"), svg
