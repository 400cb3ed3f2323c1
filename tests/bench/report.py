# SPDX-License-Identifier: MIT
"""From one run's results (the dict written to latest.json): the targets met or missed, the
Markdown tables (latest.md) and the figures (gnuplot, SVG)."""
import subprocess
import tempfile
from pathlib import Path

PEERS = ("direct", "sluice", "nginx", "squid", "mitmproxy")
LABEL = {"direct": "direct (nginx)", "sluice": "sluice", "nginx": "nginx reverse proxy",
         "squid": "Squid", "mitmproxy": "mitmproxy"}


def _get(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def targets(r):
    """[(what, value, target text, met)] for every target of the issue that this run measured."""
    out = []

    def add(what, value, op, bound, fmt="{:.3f}"):
        if value is None:
            return
        met = value <= bound if op == "<=" else value >= bound
        out.append({"what": what, "value": value, "target": f"{op} {bound}", "met": met,
                    "text": fmt.format(value)})

    c = _get(r, "kernel", "connect") or {}
    add("denied connect / refused connect", c.get("ratio_denied_refused"), "<=", 0.5)
    add("allowed connect, sluice / none", c.get("ratio_allowed"), "<=", 1.03)
    add("allowed connect, audit mode / enforce mode", c.get("ratio_audit_enforce"), "<=", 1.03)
    add("audited connect (rules deny, audit lets through) / enforce's allowed connect",
        c.get("ratio_audited_enforce"), "<=", 1.03)
    for case in _get(r, "kernel", "scale", "cases") or []:
        add(f"allowed connect, {case['case']}, sluice / none", case.get("ratio"), "<=", 1.03)
        if case.get("add_ms_alone") is None:
            continue
        if case["sandboxes"] >= 10000:
            add(f"{case['sandboxes'] - 1} sandboxes added (measured), s", case.get("load_s"),
                "<=", 30, "{:.1f}")
        else:
            add(f"10,000 sandboxes added (projected from {case['sandboxes'] - 1}), s",
                case.get("projected_10k_s"), "<=", 30, "{:.1f}")
    for what in ("download", "upload"):
        add(f"1 GiB passthrough {what}, egress program / none",
            _get(r, "kernel", "egress", what, "ratio"), "<=", 1.03)
    add("allowed connect, egress program / none", _get(r, "kernel", "egress", "connect", "ratio"),
        "<=", 1.03)
    for size in ("1k", "64k"):
        s = _get(r, "https", "keepalive", size, "sluice") or {}
        add(f"keep-alive {size}, sluice / direct", s.get("ratio_vs_direct"), ">=", 0.5)
        add(f"keep-alive {size}, sluice / direct, by CPU per request",
            s.get("cpu_ratio_vs_direct"), ">=", 0.5)
        add(f"keep-alive {size}, sluice / nginx reverse proxy", s.get("ratio_vs_nginx"), ">=",
            1.0)
        add(f"keep-alive {size}, sluice / mitmproxy", s.get("ratio_vs_mitmproxy"), ">=", 20,
            "{:.1f}")
        a = _get(r, "https", "fixed_rate", size, "sluice_added_us", "p99_us")
        add(f"p99 added latency at half of saturation, {size} (us)", a, "<=", 200, "{:.0f}")
    nc = _get(r, "https", "newconn") or {}
    for what, res in (("wrk", nc), ("bench_newconn resuming", nc.get("resume")),
                      ("bench_newconn, full handshakes", nc.get("full"))):
        s = (res or {}).get("sluice") or {}
        add(f"new connection per request ({what}), sluice / direct", s.get("ratio_vs_direct"),
            ">=", 0.8)
        add(f"new connection per request ({what}), sluice's CPU per connection / the nginx "
            "proxy's", s.get("proxy_cpu_vs_nginx"), "<=", 1.0)
    h2 = _get(r, "h2", "h2", "sluice") or {}
    add("h2 1k (10 conns x 10 streams), sluice / nginx reverse proxy", h2.get("ratio_vs_nginx"),
        ">=", 1.0)
    add("h2 1k, sluice's proxy CPU per request / nginx's", h2.get("proxy_cpu_vs_nginx"), "<=",
        1.0)
    add("h2 1k, sluice's proxy CPU per request / its own h1 (100 conns)",
        h2.get("proxy_cpu_vs_own_h1"), "<=", 1.0)
    add("download checked by SNI / sni = false", _get(r, "splice", "download", "ratio"), ">=",
        0.9, "{:.2f}")
    add("connect to first byte added by the SNI check (us)",
        _get(r, "splice", "latency_us", "added_p50"), "<=", 100, "{:.0f}")
    d = r.get("dns") or {}
    add("DNS, 32 in flight, one name, sluice / dnsmasq",
        _get(d, "throughput", "ratio_qps"), ">=", 0.5, "{:.2f}")
    add("DNS, 32 in flight, different names, sluice / dnsmasq",
        _get(d, "cold_names", "ratio_qps"), ">=", 0.35, "{:.2f}")
    lat = d.get("latency")
    if lat:
        add("DNS p50 added, one at a time (us)",
            lat["sluice"]["p50_us"] - lat["dnsmasq"]["p50_us"], "<=", 20, "{:.0f}")
    for label, v in (r.get("loadlat") or {}).items():
        if label.startswith("during"):
            add(f"another sandbox's DNS p99 {label} (us)", v.get("p99_us"), "<=", 10000,
                "{:.0f}")
    return out


def _f(v, fmt="{:.0f}"):
    return "–" if v is None else fmt.format(v)


def pinning_text(p):
    if p.get("mode") == "none":
        return "Pinning: none (BENCH_PIN=none): the scheduler placed every process."
    parts = []
    for k in ("client", "upstream", "proxy"):
        cpu = p[k]["cpus"][0]
        parts.append(f"{p[k]['what']} on CPU {cpu}" if cpu is not None else
                     f"{p[k]['what']} unpinned")
    return f"Pinning (taskset, BENCH_PIN={p['mode']}): " + "; ".join(parts) + \
        f". Why: {p['why']}."


def markdown(r):
    m = r["machine"]
    lines = [f"# sluice benchmarks ({'smoke run' if r.get('smoke') else 'full run'})", "",
             f"{r['started']}, {r['duration_s']:.0f} s. {m['cpu_model']}, {m['cores']} cores "
             f"({m.get('hypervisor') or 'bare metal'}), {m['memory_gib']} GiB; Linux "
             f"{m['kernel']}; {m['openssl']}; {m['os']}. nginx {m['versions']['nginx']}, Squid "
             f"{m['versions']['squid']}, mitmproxy {m['versions']['mitmproxy']}, wrk "
             f"{m['versions']['wrk']}, dnsmasq {m['versions']['dnsmasq']}. sluice "
             f"{m.get('sluice_commit') or '(no git)'}.", "",
             pinning_text(r["pinning"]), ""]
    busy = (r.get("load_before") or {}).get("busy") or []
    if busy:
        lines += ["**Other processes were busy on this machine when the run started** ("
                  + ", ".join(f"{b['comm']} {b['cpu']:.0%}" for b in busy)
                  + " of a CPU): the figures are disturbed.", ""]
    inj = r.get("injection") or {}
    if inj:
        lines += ["Credential injection, as seen by the upstream nginx (`$http_x_auth_token` of "
                  "a /check request through each peer): " + ", ".join(
                      f"{p} {'yes' if v.get('injected') else 'NO'}" for p, v in inj.items()
                      if p != "direct") + ".", ""]
        if not _get(inj, "sluice", "injected"):
            lines += ["**sluice did not inject the header in this run** (its handler did not "
                      "run, or `--env-file` lacked the token): its figures are for "
                      "forwarding unchanged.", ""]

    t = r.get("targets") or []
    if t:
        lines += ["## Targets", "", "| | measured | target | |", "|---|---|---|---|"]
        lines += [f"| {x['what']} | {x['text']} | {x['target']} | "
                  f"{'met' if x['met'] else '**missed**'} |" for x in t]
        lines.append("")

    k = _get(r, "kernel", "connect")
    if k:
        lines += ["## Kernel: `connect()`", "",
                  f"{k['rounds']} rounds of {k['connects']} connects; ns per connect(), median "
                  "of round means; ratios: median of per-round ratios.", "",
                  "| | ns | baseline ns | ratio |", "|---|---|---|---|",
                  f"| denied by sluice vs refused (closed port, no sluice) | "
                  f"{_f(k['denied_ns'])} | {_f(k['refused_ns'])} | "
                  f"{_f(k['ratio_denied_refused'], '{:.3f}')} |",
                  f"| allowed, sluice vs no sluice | {_f(k['sluice_ns'])} | "
                  f"{_f(k['plain_ns'])} | {_f(k['ratio_allowed'], '{:.3f}')} |",
                  f"| `sl_connect4` itself per call (bpf_stats) | {_f(k['prog_ns'])} | | |", ""]
        progs = k.get("programs") or {}
        if progs:
            lines += ["What each program costs one allowed connect() (socket, connect, close; "
                      "bpf_stats, which adds its own timing to each run):", "",
                      "| program | runs per connect | ns per run | ns per connect |",
                      "|---|---|---|---|"]
            lines += [f"| `{name}` | {p['runs_per_connect']:.2f} | {p['ns_per_run']:.0f} | "
                      f"{p['runs_per_connect'] * p['ns_per_run']:.0f} |"
                      for name, p in sorted(progs.items())]
            lines += [""]
    e = _get(r, "kernel", "egress")
    if e:
        lines += ["## Kernel: the egress program", "",
                  f"Two sandboxes with the same policy, one without `sl_egress` (its link "
                  f"removed by the bench), alternating; {e['rounds']} transfers of "
                  f"{e['bytes'] >> 20} MiB each way over loopback (one TCP connection, the "
                  "sandbox as client), median of per-round ratios.", "",
                  "| | with | without | ratio | packets | `sl_egress` ns/packet | its share of "
                  "the time |", "|---|---|---|---|---|---|---|"]
        for what in ("download", "upload"):
            x = e[what]
            lines.append(f"| {what}, GiB/s | {x['with_gib_s']:.2f} | {x['without_gib_s']:.2f} | "
                         f"{x['ratio']:.3f} (time) | {x['packets']} | "
                         f"{_f(x['prog_ns_per_packet'])} | {x['prog_share'] * 100:.2f}% |")
        c = e["connect"]
        lines += [f"| allowed connect(), ns | {_f(c['sluice_ns'])} | {_f(c['plain_ns'])} | "
                  f"{c['ratio']:.3f} | | | |", "",
                  "The time ratios move with the machine's load; the program's own time "
                  "(bpf_stats, per packet, times packets, over the transfer's time) is the "
                  "steadier measure of what it costs.", ""]
    sc = _get(r, "kernel", "scale")
    if sc:
        lines += ["| allowed connect, as tables grow | rules in the kernel | load time | "
                  "ns sluice | ns none | ratio |", "|---|---|---|---|---|---|"]
        for c in sc["cases"]:
            if c.get("error"):
                lines.append(f"| {c['case']} | {c['rules']} | {c['load_s']:.1f} s | failed: "
                             f"{c['error']} | | |")
                continue
            lines.append(f"| {c['case']} | {c['rules']} | {c['load_s']:.2f} s | "
                         f"{_f(c['sluice_ns'])} | {_f(c['plain_ns'])} | "
                         f"{_f(c['ratio'], '{:.3f}')} |")
        for c in sc["cases"]:
            if c.get("add_ms_alone") is not None:
                lines.append(f"- {c['case']}: an add took {c['add_ms_alone']:.2f} ms alone"
                             + (f", {c['add_ms_in_flight']:.2f} ms each with "
                                f"{c['adds_in_flight']} in flight (10,000 at that rate: "
                                f"{c['projected_10k_s']:.0f} s; the target is 30)"
                                if c.get("add_ms_in_flight") else "")
                             + f"; sluiced's RSS after them {c['rss_kib'] / 1024:.0f} MiB"
                             + (f", {c['fds']} descriptors of a limit of {c['fd_limit']}, "
                                f"{c['own_listeners']} sandboxes with listeners of their own "
                                f"(--own-listeners {c['own_listeners_max']}), the rest "
                                "sharing their worker's" if c.get("fds") is not None else "")
                             + (f"; a restart with all of them in place took "
                                f"{c['restart_s']:.1f} s until sluiced was ready (every "
                                "sandbox adopted)" if c.get("restart_s") is not None else "")
                             + (f", and removing them all one at a time after it "
                                f"{c['remove_s']:.1f} s" if c.get("remove_s") is not None
                                else ""))
        lines += [""] + [f"- {n}" for n in sc.get("notes", [])] + [""]
        if sc.get("lookup"):
            lines += ["The rule lookup alone (bench_lookup: `sl_verdict4` in BPF_PROG_RUN, whole "
                      "addresses of 10 sandboxes in maps of its own): in the address hash as "
                      "sluice keeps them, or in the prefix trie as it did before. Same address: "
                      "one looked up 1,000,000 times in one run, its path in the cache. Random: "
                      "100,000 runs of one lookup each among all entries, the cache cooled by "
                      "the system call between them, as among a host's many destinations (each "
                      "run's time includes the kernel's clock reads: compare the rows, not the "
                      "columns). Miss: random addresses no entry names (a denial).", "",
                      "| layout | entries | ns, same address | ns, random addresses | "
                      "ns, a miss |", "|---|---|---|---|---|"]
            lines += [f"| {l['layout']} | {l['entries']} | {l['same_ns']} | "
                      f"{l['random_ns']:.0f} | {l['miss_ns']:.0f} |" for l in sc["lookup"]]
            lines.append("")

    h = r.get("https") or {}
    if h.get("keepalive"):
        lines += ["## HTTPS interception with credential injection", "",
                  f"wrk, 1 thread, {h['settings']['conns']} keep-alive connections, "
                  f"{h['settings']['seconds']} s runs, median of {h['settings']['rounds']} "
                  "alternating rounds (mitmproxy: one). CPU: microseconds per request spent "
                  "in each side's cgroup (all its processes and threads). × direct by CPU: "
                  "direct's client + upstream CPU per request over the peer's client + proxy + "
                  "upstream, the throughput ratio if the whole machine were the limit, "
                  "whatever the pinning.", ""]
        for size, res in h["keepalive"].items():
            lines += [f"| keep-alive, {size} responses | req/s | × direct | × direct by CPU | "
                      "p50 µs | p99 µs | p99.9 µs | CPU µs/req: proxy | upstream | client |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for p in PEERS:
                x = res.get(p)
                if x:
                    lines.append(f"| {LABEL[p]} | {_f(x['rps'])} | "
                                 f"{_f(x.get('ratio_vs_direct'), '{:.2f}')} | "
                                 f"{_f(x.get('cpu_ratio_vs_direct'), '{:.2f}')} | "
                                 f"{_f(x['p50_us'])} | {_f(x['p99_us'])} | {_f(x['p999_us'])} | "
                                 f"{_f(x['proxy_cpu_us'], '{:.1f}')} | "
                                 f"{_f(x['upstream_cpu_us'], '{:.1f}')} | "
                                 f"{_f(x.get('client_cpu_us'), '{:.1f}')} |")
            lines.append("")
    if h.get("fixed_rate"):
        lines += ["Latency at a fixed rate (bench_load: open loop, each request timed from when "
                  "it was due, so a stall delays every request behind it): half of sluice's "
                  "keep-alive saturation for every peer faster than that, half of its own for "
                  "a slower one.", ""]
        for size, res in h["fixed_rate"].items():
            lines += [f"| fixed rate, {size} | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | "
                      "max µs | late |", "|---|---|---|---|---|---|---|---|"]
            for p in PEERS:
                x = res["peers"].get(p)
                if x:
                    lines.append(f"| {LABEL[p]} | {_f(x['rate_target'])} | {_f(x['p50_us'])} |"
                                 f" {_f(x['p90_us'])} | {_f(x['p99_us'])} | "
                                 f"{_f(x['p999_us'])} | {_f(x['max_us'])} | {x['late']} |")
            a = res.get("sluice_added_us")
            if a:
                lines.append(f"| *added by sluice* | | {_f(a['p50_us'])} | | {_f(a['p99_us'])} "
                             f"| {_f(a['p999_us'])} | | |")
            lines.append("")
    if h.get("newconn"):
        nc = h["newconn"]
        lines += [f"| new connection per request, 1k, {h['settings']['newconn_conns']} "
                  "connections | req/s | × direct | proxy CPU µs/req | resumed |",
                  "|---|---|---|---|---|"]
        for what, res in (("wrk", nc), ("bench_newconn, no session offered", nc.get("full")),
                          ("bench_newconn, the last session offered", nc.get("resume"))):
            for p in PEERS:
                x = (res or {}).get(p)
                if x:
                    share = x.get("resumed_share")
                    lines.append(f"| {what}: {LABEL[p]} | {_f(x['rps'])} | "
                                 f"{_f(x.get('ratio_vs_direct'), '{:.2f}')} | "
                                 f"{_f(x['proxy_cpu_us'], '{:.1f}')} | "
                                 f"{'' if share is None else f'{share:.0%}'} |")
        lines.append("")
    tr = r.get("transfer")
    if tr:
        n = tr.get("bytes", 0)
        size = f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"
        lines += [f"## Large transfers ({size}, curl, one connection)", "",
                  "| | direct MB/s | sluice MB/s | ratio | sluiced CPU µs/MiB |",
                  "|---|---|---|---|---|"]
        for what in ("download", "upload"):
            x = tr.get(what)
            if x:
                lines.append(f"| {what} | {_f(x['direct']['MBps'])} | "
                             f"{_f(x['sluice']['MBps'])} | "
                             f"{_f(x['sluice']['ratio_vs_direct'], '{:.2f}')} | "
                             f"{_f(x['sluice']['proxy_cpu_us_per_MiB'])} |")
        lines.append("")
    sp = r.get("splice")
    if sp:
        n = sp.get("bytes", 0)
        size = f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"
        dl, lat = sp["download"], sp["latency_us"]
        lines += [f"## Passthrough checked by SNI (in the kernel, on the sandbox's socket) vs `sni = false`", "",
                  f"| | download {size} MB/s | sluiced CPU ms | connect to first byte p50 µs "
                  "| p90 µs |", "|---|---|---|---|---|"]
        for k in ("checked", "plain"):
            lines.append(f"| {k} | {_f(dl[k]['MBps'])} | {_f(dl[k]['sluiced_cpu_ms'], '{:.1f}')}"
                         f" | {_f(lat[k]['p50'])} | {_f(lat[k]['p90'])} |")
        lines += ["", f"Ratio {_f(dl['ratio'], '{:.2f}')}; added connect to first byte "
                  f"{_f(lat['added_p50'])} µs (p50 of {sp['latency_samples']} each).", ""]
    d = r.get("dns")
    if d:
        lines += ["## DNS", "", "| A queries | dnsmasq directly | through sluice | ratio |",
                  "|---|---|---|---|"]
        lat, thr = d.get("latency"), d.get("throughput")
        if lat:
            lines.append(f"| latency p50 / p99 µs, one at a time | {_f(lat['dnsmasq']['p50_us'])}"
                         f" / {_f(lat['dnsmasq']['p99_us'])} | {_f(lat['sluice']['p50_us'])} / "
                         f"{_f(lat['sluice']['p99_us'])} | |")
        if thr:
            lines.append(f"| queries/s, 32 in flight, one name | {_f(thr['dnsmasq']['qps'])} | "
                         f"{_f(thr['sluice']['qps'])} | {_f(thr['ratio_qps'], '{:.2f}')} |")
        cold = d.get("cold_names")
        if cold:
            rounds = cold.get("rounds", 1)
            how = (f"{rounds} rounds of new names, medians; the ratio: of the rounds' ratios"
                   if rounds > 1 else "one run")
            lines.append(f"| queries/s, 32 in flight, {cold['names']} different names (each "
                         f"installs a kernel entry; {how}) | {_f(cold['dnsmasq']['qps'])} | "
                         f"{_f(cold['sluice']['qps'])} | {_f(cold['ratio_qps'], '{:.2f}')} |")
        lines.append("")
    wk = r.get("workers")
    if wk:
        lines += ["## `--workers 1` against `--workers 2`", "",
                  f"Two sluiced side by side, {wk['sandboxes']} sandboxes of each case in each "
                  "(intercepted, injection handler; the heavy case's handler also runs about a "
                  "million Lua instructions per request); two wrk clients at once, one per "
                  f"sandbox, keep-alive, 1 KiB, {wk['seconds']} s rounds alternating. sluiced and "
                  "the clients may run on either of the VM's two cores (the upstream nginx on "
                  "the server CPU), so this shows whether sluiced's work spreads over the "
                  f"cores, not a scaling factor. Workers of the sandboxes: {wk['workers_of_sandboxes']}.", "",
                  "| | req/s | sluiced CPU µs/req | CPUs sluiced used |", "|---|---|---|---|"]
        for case in ("light", "heavy"):
            c = wk.get(case)
            if not c:
                continue
            for w in (1, 2):
                v = c[f"workers{w}"]
                lines.append(f"| {case}, --workers {w} | {_f(v['rps'])} | "
                             f"{_f(v['cpu_us_per_req'], '{:.1f}')} | "
                             f"{_f(v['cpus_used'], '{:.2f}')} |")
        lines += ["", "Requests/s, --workers 2 / --workers 1: " + ", ".join(
            f"{case} {_f(wk[case]['ratio_rps'], '{:.2f}')}" for case in ("light", "heavy")
            if wk.get(case)) + ".", ""]
    ll = r.get("loadlat")
    if ll:
        lines += ["## Loop latency of another sandbox while others are added", "",
                  "One DNS query every 2 ms (open loop) from a sandbox, idle, across the "
                  "add of another sandbox with a 100,000-rule policy (compiled off the loop), "
                  "and across a burst of small adds eight in flight.", "",
                  "| | queries | lost | p50 µs | p99 µs | max µs | add s |",
                  "|---|---|---|---|---|---|---|"]
        for label, v in ll.items():
            lines.append(f"| {label} | {v['queries']} | {v['lost']} | {_f(v['p50_us'])} | "
                         f"{_f(v['p99_us'])} | {_f(v['max_us'])} | "
                         f"{_f(v['add_s'], '{:.2f}')} |")
        lines.append("")
    mi = r.get("mint")
    if mi:
        lines += ["## Leaf minting (bench_mint)", "", "| | p50 µs | p99 µs |", "|---|---|---|"]
        for k in ("mint_cold", "mint_cached"):
            if f"{k}_us_p50" in mi:
                lines.append(f"| {k.replace('_', ' ')} | {mi[k + '_us_p50']:.2f} | "
                             f"{mi[k + '_us_p99']:.2f} |")
        lines.append("")
    h2 = r.get("h2")
    if h2:
        st = h2["settings"]
        lines += ["## HTTP/2 (h2load)", "",
                  f"h2load, 1 KiB responses, {st['rounds']} rounds of {st['seconds']} s "
                  f"alternating; h2: {st['conns']} connections x {st['streams']} concurrent "
                  f"streams; h1: {st['h1_conns']} connections, one request each in flight. "
                  "Both proxies inject the header; the nginx proxy speaks HTTP/1.1 with "
                  "keep-alive to the upstream, sluice h2 (the upstream offers it in this "
                  "section, and sluice takes it since px_h2_up.c); direct is the upstream nginx "
                  "over h2. CPU: each one's cgroup (cpu.stat), per request.", "",
                  "| | protocol | req/s | / direct | proxy CPU µs/req | upstream CPU µs/req |",
                  "|---|---|---|---|---|---|"]
        for proto in ("h2", "h1"):
            for p, x in (h2.get(proto) or {}).items():
                lines.append(f"| {LABEL.get(p, p)} | {proto} | {_f(x.get('rps'))} | "
                             f"{_f(x.get('ratio_vs_direct'), '{:.3f}')} | "
                             f"{_f(x.get('proxy_cpu_us'), '{:.1f}')} | "
                             f"{_f(x.get('upstream_cpu_us'), '{:.1f}')} |")
        lines.append("")
    pr = r.get("profile")
    if pr:
        lines += ["## Profiles (perf; details in profile-*.txt)", "",
                  "| | req/s | CPU µs/req | syscalls/req | write()s/req | top binaries (self time) |",
                  "|---|---|---|---|---|---|"]
        for label, x in pr.items():
            sc = x.get("syscalls_per_request", {})
            top = ", ".join(f"{b[1].strip()} {b[0]}" for b in x.get("by_binary", [])[:3]
                            if len(b) == 2)
            lines.append(f"| {label} | {_f(x.get('rps'))} | "
                         f"{_f(x.get('cpu_us_per_request'), '{:.1f}')} | {sc.get('all', '–')} | "
                         f"{sc.get('write', '–')} | {top} |")
        lines.append("")
    for note in r.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


GNUPLOT_COMMON = """set terminal svg size 900,420 dynamic font 'sans,11' background '#ffffff'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set xtics nomirror
set bmargin 4
"""


def plots(r, outdir):
    """throughput.svg, latency.svg and connect.svg; returns the files made."""
    outdir = Path(outdir)
    made = []
    h = r.get("https") or {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scripts = []
        ka, nc = h.get("keepalive") or {}, h.get("newconn") or {}
        peers = [p for p in PEERS if p in (ka.get("1k") or {})]
        if peers:
            rows = []
            for p in peers:
                def v(d):
                    return (d or {}).get("rps") or 0
                rows.append(f'"{LABEL[p]}" {v(_get(ka, "1k", p))} {v(_get(ka, "64k", p))} '
                            f"{v(nc.get(p))}")
            (tmp / "tput.dat").write_text("\n".join(rows) + "\n")
            scripts.append(GNUPLOT_COMMON + f"""set output '{outdir / "throughput.svg"}'
set title 'HTTPS requests/s through each peer (log scale; higher is better)'
set logscale y
set ylabel 'requests/s'
plot '{tmp / "tput.dat"}' using 2:xtic(1) title 'keep-alive, 1 KiB', \\
     '' using 3 title 'keep-alive, 64 KiB', '' using 4 title 'new connection each, 1 KiB'
""")
            made.append(outdir / "throughput.svg")
        fr = h.get("fixed_rate") or {}
        if fr:
            panels = []
            for size, res in fr.items():
                rows = []
                for p in PEERS:
                    x = res["peers"].get(p)
                    if x:
                        rows.append(f'"{LABEL[p]}\\n{x["rate_target"]:.0f}/s" {x["p50_us"]} '
                                    f'{x["p99_us"]} {x["p999_us"]}')
                (tmp / f"lat{size}.dat").write_text("\n".join(rows) + "\n")
                panels.append(f"""set title 'latency at a fixed rate, {size} responses (log scale; lower is better)'
plot '{tmp / f"lat{size}.dat"}' using 2:xtic(1) title 'p50', '' using 3 title 'p99', \\
     '' using 4 title 'p99.9'
""")
            scripts.append(GNUPLOT_COMMON.replace("size 900,420", f"size 900,{400 * len(panels)}")
                           + f"""set output '{outdir / "latency.svg"}'
set key top left
set logscale y
set ylabel 'microseconds'
set multiplot layout {len(panels)},1
""" + "".join(panels) + "unset multiplot\n")
            made.append(outdir / "latency.svg")
        sc = _get(r, "kernel", "scale", "cases") or []
        k = _get(r, "kernel", "connect")
        if k and sc:
            rows = [f'"1 sandbox\\n1 rule" {k["plain_ns"]} {k["sluice_ns"]}']
            for c in sc:
                if not c.get("error"):
                    label = c["case"].split(" (")[0].replace(" ", "\\n", 1)
                    rows.append(f'"{label}" {c["plain_ns"]} {c["sluice_ns"]}')
            rows.append(f'"denied vs\\nrefused" {k["refused_ns"]} {k["denied_ns"]}')
            (tmp / "connect.dat").write_text("\n".join(rows) + "\n")
            scripts.append(GNUPLOT_COMMON + f"""set output '{outdir / "connect.svg"}'
set title 'connect() on loopback, ns per call (lower is better)'
set ylabel 'ns'
set yrange [0:*]
plot '{tmp / "connect.dat"}' using 2:xtic(1) title 'no sluice (refused, for the last pair)', \\
     '' using 3 title 'sluice (denied, for the last pair)'
""")
            made.append(outdir / "connect.svg")
        for s in scripts:
            p = subprocess.run(["gnuplot"], input=s, capture_output=True, text=True, timeout=60)
            if p.returncode:
                raise RuntimeError(f"gnuplot failed: {p.stderr}")
    return made
