#!/usr/bin/env python3
"""Summarize bench/run.sh results.txt into one markdown table.

Usage: summarize.py results.txt [--meta meta.txt]

Each cell is the median over reps with the [min-max] range. Ratios are
netwine / socat, netwine / websockify and netwine / ref-epoll of the medians:
above 1 is better for throughput and rates, below 1 is better for latency and
memory (the row says). "netwine/socat per rep" pairs the two within each rep
(run.sh runs every target once per rep, minutes apart at most) and gives the
median [min-max] of those ratios: a host that drifts between reps moves both
sides of a pair together, so this is the steadier estimate of the two.
ref-epoll and ref-threads are bench/refrelay.c, the floor of a relay's structure
on this machine (docs/PERFORMANCE.md); netwine-1t
is netwine with --threads 1 (with it, a netwine-1t / socat column); netwine-loop is
netwine with --bulk-threads 0 (with it, a netwine-loop / socat column); netwine-b is
a second build (NETWINE_B), with netwine-b / socat and netwine / netwine-b columns.
The TLS targets (netwine-tls: wss://, netwine-mixed: ws:// to that same TLS-configured
process, socat-tls, websockify-tls) get a second table with netwine-tls / socat-tls,
netwine-tls / websockify-tls and netwine-mixed / netwine (what serving TLS on the port
costs plain WebSockets).
ref-ws (bench/refws.c) is a minimal WebSocket bridge in C, driven by the same
WebSocket client as netwine: with it, netwine / ref-ws and ref-ws / socat, both paired
per rep (the second is what the WebSocket protocol itself costs against a raw relay).
ref-evhttp (bench/refpoll.c, a minimal long-polling bridge on one evhttp loop) runs
only the polling tests; with it, the HTTP-transport table gains its column and
netwine / ref-evhttp paired per rep.
"""
import statistics
import sys
from collections import defaultdict

TARGETS = ["netwine", "netwine-b", "netwine-1t", "netwine-loop", "socat", "websockify", "ref-epoll", "ref-threads",
           "ref-ws", "raw"]
TLS_TARGETS = ["netwine-tls", "netwine-mixed", "socat-tls", "websockify-tls"]

# (label, test, key, better, transform)
ROWS = [
    ("WS 64 KiB x 1 conn, MB/s", "tput64k_c1", "MBps", "higher"),
    ("WS 64 KiB x 8 conns, MB/s", "tput64k_c8", "MBps", "higher"),
    ("WS 1 KiB x 8 conns, MB/s", "tput1k_c8", "MBps", "higher"),
    ("upstream only, 64 KiB x 1 conn to a sink, MB/s", "up64k_c1", "MBps", "higher"),
    ("downstream only, 1 conn from a source, MB/s", "down_c1", "MBps", "higher"),
    ("bridge CPU-s per GB (64 KiB x 1)", "tput64k_c1", "cpu_s_per_gb", "lower"),
    ("bridge CPU-s per GB (64 KiB x 8)", "tput64k_c8", "cpu_s_per_gb", "lower"),
    ("client+bridge+target CPU-s per GB (64 KiB x 1)", "tput64k_c1", "all_cpu_s_per_gb", "lower"),
    ("client+bridge+target CPU-s per GB (64 KiB x 8)", "tput64k_c8", "all_cpu_s_per_gb", "lower"),
    ("TCP segments sent per MB echoed (64 KiB x 8, all processes)", "tput64k_c8", "segs_per_mb", "lower"),
    ("latency p50 us (unpinned)", "lat", "p50_us", "lower"),
    ("latency p99 us (unpinned)", "lat", "p99_us", "lower"),
    ("latency p50 us (all on CPU0)", "lat_cpu0", "p50_us", "lower"),
    ("latency p99 us (all on CPU0)", "lat_cpu0", "p99_us", "lower"),
    ("new connections/s (each proven by an echo)", "conns", "connps", "higher"),
    ("KB per idle connection (tree PSS)", "conns", "tree_pss_kb_per_conn", "lower"),
    ("KB per idle connection (main VmRSS)", "conns", "kb_per_conn", "lower"),
]
NETWINE_ONLY = [
    ("streaming MB/s (POST send + stream, binary)", "stream", "MBps", "tput64k_c1"),
    ("poll round trips/s, 1 session", "poll_c1", "rtps", None),
    ("poll round trip p50 us, 1 session", "poll_c1", "p50_us", None),
    ("poll round trips/s, 8 sessions", "poll_c8", "rtps", None),
    ("idle WebSocket sessions held (of K_WS)", "hold_ws", "alive", None),
    ("idle WebSocket sessions: failed opens", "hold_ws", "failed", None),
    ("KB per idle WebSocket session at K_WS (VmRSS)", "hold_ws", "kb_per_conn", None),
    ("idle poll sessions held (of K_POLL)", "poll_idle", "alive", None),
    ("idle poll sessions: failed opens", "poll_idle", "failed", None),
    ("KB per idle poll session (VmRSS)", "poll_idle", "kb_per_conn", None),
    ("new poll sessions/s", "poll_idle", "sessps", None),
]


class Results(defaultdict):
    """(target, test, key) -> [values, in file order]; .by_rep[(target, test, key)]
    -> {rep: value} for pairing targets within a rep."""

    def __init__(self):
        super().__init__(list)
        self.by_rep = defaultdict(dict)
        self.rep = None  # the rep of the line being parsed

    def add(self, key, value):
        self[key].append(value)
        if self.rep is not None:
            self.by_rep[key][self.rep] = value


def parse(path):
    data = Results()
    errors = defaultdict(int)
    with open(path) as f:
        for line in f:
            kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
            t, test = kv.get("target"), kv.get("test")
            if kv.get("rc") != "0" or kv.get("ok") != "1":
                errors[(t, test)] += 1
                continue
            data.rep = kv.get("rep")
            for k, v in kv.items():
                try:
                    data.add((t, test, k), float(v))
                except ValueError:
                    pass
            if "server_cpu_s" in kv and "bytes" in kv and float(kv["bytes"]) > 0:
                data.add((t, test, "cpu_s_per_gb"), float(kv["server_cpu_s"]) / (float(kv["bytes"]) / 1e9))
            # Loopback TCP work (segmenting, delivery, ACKs) runs in whichever process's
            # system call or softirq triggers it, so it moves between client, bridge and
            # target with timing; the sum over all three is what relaying a GB costs the
            # machine. For raw (no bridge) it is the client and target alone.
            if "client_cpu_s" in kv and "target_cpu_s" in kv and float(kv.get("bytes", 0)) > 0:
                total = sum(float(kv.get(k, 0)) for k in ("client_cpu_s", "server_cpu_s", "target_cpu_s"))
                data.add((t, test, "all_cpu_s_per_gb"), total / (float(kv["bytes"]) / 1e9))
            if kv.get("tcp_out_segs", "").isdigit() and float(kv.get("bytes", 0)) > 0:
                data.add((t, test, "segs_per_mb"), int(kv["tcp_out_segs"]) / (float(kv["bytes"]) / 1e6))
    return data, errors


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(vals):
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(vals))}-{fmt(max(vals))}]"


def med(data, t, test, key):
    v = data.get((t, test, key))
    return statistics.median(v) if v else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def paired(data, a, b, test, key):
    """a / b within each rep that has both: median [min-max] of those ratios."""
    ra, rb = data.by_rep.get((a, test, key), {}), data.by_rep.get((b, test, key), {})
    r = [ra[k] / rb[k] for k in ra if k in rb and rb[k] != 0]
    if not r:
        return "-"
    m = statistics.median(r)
    return f"{m:.2f}" if len(r) == 1 else f"{m:.2f} [{min(r):.2f}-{max(r):.2f}]"


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    data, errors = parse(sys.argv[1])
    if "--meta" in sys.argv:
        with open(sys.argv[sys.argv.index("--meta") + 1]) as f:
            for line in f:
                print("    " + line.rstrip())
        print()
    present = [t for t in TARGETS if any(k[0] == t for k in data)]
    head = ["metric", "better"] + present + ["netwine/socat", "netwine/socat per rep", "netwine/websockify"]
    with_ref = "ref-epoll" in present
    if with_ref:
        head.append("netwine/ref-epoll")
    with_ws = "ref-ws" in present
    if with_ws:
        head += ["netwine/ref-ws per rep", "ref-ws/socat per rep"]
    with_1t = "netwine-1t" in present
    if with_1t:
        head.append("netwine-1t/socat")
    with_loop = "netwine-loop" in present
    if with_loop:
        head.append("netwine-loop/socat")
    with_b = "netwine-b" in present
    if with_b:
        head += ["netwine-b/socat", "netwine/netwine-b"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, test, key, better in ROWS:
        cells = [cell(data.get((t, test, key), [])) for t in present]
        if all(c == "-" for c in cells):
            continue
        n = med(data, "netwine", test, key)
        row = [label, better] + cells + [ratio(n, med(data, "socat", test, key)),
                                         paired(data, "netwine", "socat", test, key),
                                         ratio(n, med(data, "websockify", test, key))]
        if with_ref:
            row.append(ratio(n, med(data, "ref-epoll", test, key)))
        if with_ws:
            row += [paired(data, "netwine", "ref-ws", test, key), paired(data, "ref-ws", "socat", test, key)]
        if with_1t:
            row.append(ratio(med(data, "netwine-1t", test, key), med(data, "socat", test, key)))
        if with_loop:
            row.append(ratio(med(data, "netwine-loop", test, key), med(data, "socat", test, key)))
        if with_b:
            row.append(ratio(med(data, "netwine-b", test, key), med(data, "socat", test, key)))
            row.append(ratio(n, med(data, "netwine-b", test, key)))
        print("| " + " | ".join(row) + " |")
    tls_present = [t for t in TLS_TARGETS if any(k[0] == t for k in data)]
    if tls_present:
        head = ["over TLS", "better"] + tls_present + ["netwine-tls/socat-tls", "netwine-tls/socat-tls per rep",
                                                       "netwine-tls/websockify-tls", "netwine-mixed/netwine"]
        print()
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for label, test, key, better in ROWS:
            if test == "tput64k_c8" and key == "segs_per_mb":
                continue
            cells = [cell(data.get((t, test, key), [])) for t in tls_present]
            if all(c == "-" for c in cells):
                continue
            n = med(data, "netwine-tls", test, key)
            row = [label, better] + cells + [ratio(n, med(data, "socat-tls", test, key)),
                                             paired(data, "netwine-tls", "socat-tls", test, key),
                                             ratio(n, med(data, "websockify-tls", test, key)),
                                             ratio(med(data, "netwine-mixed", test, key), med(data, "netwine", test, key))]
            print("| " + " | ".join(row) + " |")
    lines = []
    with_evhttp = any(k[0] == "ref-evhttp" for k in data)
    for label, test, key, vs in NETWINE_ONLY:
        vals = data.get(("netwine", test, key), [])
        if not vals:
            continue
        extra = ""
        if vs:
            extra = f" (x{ratio(statistics.median(vals), med(data, 'netwine', vs, 'MBps'))} of netwine's WS 64 KiB x 1)"
        line = f"| {label} | {cell(vals)}{extra} |"
        if with_evhttp:
            ref = data.get(("ref-evhttp", test, key), [])
            line += f" {cell(ref)} | {paired(data, 'netwine', 'ref-evhttp', test, key) if ref else '-'} |"
        lines.append(line)
    if lines:
        print()
        if with_evhttp:
            print("| netwine only (HTTP transports) | median [min-max] | ref-evhttp | netwine/ref-evhttp per rep |")
            print("|---|---|---|---|")
        else:
            print("| netwine only (HTTP transports) | median [min-max] |")
            print("|---|---|")
        print("\n".join(lines))
    if errors:
        print()
        print("failed runs (not in the medians): " +
              ", ".join(f"{t}/{test} x{n}" for (t, test), n in sorted(errors.items())))


if __name__ == "__main__":
    main()
