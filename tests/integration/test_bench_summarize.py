"""bench/summarize.py, which turns bench/run.sh's result lines into the README's
table: its ratios are what the targets are judged by."""
import subprocess
import sys

from conftest import ROOT

SUMMARIZE = ROOT / "bench" / "summarize.py"


def line(rep, target, mbps):
    return (f"rep={rep} target={target} test=tput64k_c1 rc=0 ok=1 bytes={int(mbps * 3e6)} "
            f"MBps={mbps} server_cpu_s=1.0\n")


def table_row(tmp_path, lines, label="WS 64 KiB x 1 conn, MB/s"):
    results = tmp_path / "results.txt"
    results.write_text("".join(lines))
    out = subprocess.run([sys.executable, str(SUMMARIZE), str(results)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    rows = [r for r in out.splitlines() if r.startswith("| ")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    for r in rows[1:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        if cells[0] == label:
            return dict(zip(head, cells))
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_per_rep_ratio_pairs_the_targets_within_each_rep(tmp_path):
    # The host's speed differs rep by rep (100, 300, 200, 400, 50 MB/s for socat);
    # netwine is 1.10x socat in every rep: both estimates agree.
    socat = [100, 300, 200, 400, 50]
    netwine = [s * 1.1 for s in socat]
    lines = [line(i + 1, "socat", s) for i, s in enumerate(socat)]
    lines += [line(i + 1, "netwine", n) for i, n in enumerate(netwine)]
    row = table_row(tmp_path, lines)
    assert row["netwine/socat per rep"] == "1.10 [1.10-1.10]"
    assert row["netwine/socat"] == "1.10"


def test_per_rep_ratio_differs_from_the_ratio_of_medians_when_the_host_drifts(tmp_path):
    # The host speeds up rep by rep; netwine is 1.05x socat in four reps and had one
    # bad rep (0.2x). Its median lands on another rep than socat's: the ratio of
    # medians reads 0.70, the pairs 1.05 with the bad rep as their minimum.
    socat = [100, 200, 300, 400, 500]
    netwine = [105, 210, 315, 420, 100]
    lines = [line(i + 1, "socat", s) for i, s in enumerate(socat)]
    lines += [line(i + 1, "netwine", n) for i, n in enumerate(netwine)]
    row = table_row(tmp_path, lines)
    assert row["netwine/socat"] == "0.70"
    assert row["netwine/socat per rep"] == "1.05 [0.20-1.05]"
    # A rep socat has no result for is not paired.
    row = table_row(tmp_path, lines + [line(6, "netwine", 10000)])
    assert row["netwine/socat per rep"] == "1.05 [0.20-1.05]"


def test_failed_runs_are_neither_in_the_medians_nor_paired(tmp_path):
    lines = [line(1, "socat", 100), line(1, "netwine", 120), line(2, "socat", 100),
             line(2, "netwine", 50).replace("ok=1", "ok=0")]
    row = table_row(tmp_path, lines)
    assert row["netwine/socat per rep"] == "1.20"
    assert row["netwine"] == "120"


def http_table(tmp_path, lines):
    """The HTTP-transport table: {row label: {column: cell}}."""
    results = tmp_path / "results.txt"
    results.write_text("".join(lines))
    out = subprocess.run([sys.executable, str(SUMMARIZE), str(results)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    rows = [r for r in out.splitlines() if r.startswith("| ")]
    start = next(i for i, r in enumerate(rows) if r.startswith("| netwine only (HTTP transports)"))
    head = [c.strip() for c in rows[start].strip("|").split("|")]
    table = {}
    for r in rows[start + 1:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        table[cells[0]] = dict(zip(head, cells))
    return table


def poll_line(rep, target, rtps):
    return f"rep={rep} target={target} test=poll_c8 rc=0 ok=1 rtps={rtps} p50_us=100\n"


def test_the_reference_long_polling_bridge_gets_its_column_and_a_paired_ratio(tmp_path):
    # ref-evhttp (bench/refpoll.c) runs only the polling tests: its figures sit beside
    # netwine's in the HTTP-transport table, paired per rep (the host slows down rep
    # by rep; netwine is 1.2x the reference in each).
    ref = [20000, 15000, 10000]
    lines = [poll_line(i + 1, "ref-evhttp", r) for i, r in enumerate(ref)]
    lines += [poll_line(i + 1, "netwine", r * 1.2) for i, r in enumerate(ref)]
    row = http_table(tmp_path, lines)["poll round trips/s, 8 sessions"]
    assert row["ref-evhttp"] == "15000 [10000-20000]"
    assert row["netwine/ref-evhttp per rep"] == "1.20 [1.20-1.20]"
    # Without the reference the table keeps its two columns.
    row = http_table(tmp_path, lines[len(ref):])["poll round trips/s, 8 sessions"]
    assert list(row) == ["netwine only (HTTP transports)", "median [min-max]"]


def test_the_reference_websocket_bridge_gets_paired_ratios_with_netwine_and_socat(tmp_path):
    # Per rep: socat 100/200/300, ref-ws 0.9x socat, netwine 1.1x ref-ws.
    socat = [100, 200, 300]
    lines = [line(i + 1, "socat", s) for i, s in enumerate(socat)]
    lines += [line(i + 1, "ref-ws", s * 0.9) for i, s in enumerate(socat)]
    lines += [line(i + 1, "netwine", s * 0.9 * 1.1) for i, s in enumerate(socat)]
    row = table_row(tmp_path, lines)
    assert row["ref-ws"] == "180 [90.0-270]"
    assert row["netwine/ref-ws per rep"] == "1.10 [1.10-1.10]"
    assert row["ref-ws/socat per rep"] == "0.90 [0.90-0.90]"
