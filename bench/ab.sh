#!/usr/bin/env bash
# bench/ab.sh — an interleaved A/B of two netwine builds on one nwbench mode.
#
#   bash bench/ab.sh NEW_BINARY OLD_BINARY                     # ws-up, 64 KiB, 1 conn, 10 x 2 s each
#   MODE=ws-tput SIZE=1K C=8 N=8 bash bench/ab.sh build-bench/netwine /tmp/netwine-old
#   MODE=ws-lat PIN=0 N=12 T=1 bash bench/ab.sh build-bench/netwine socat
#
# Runs A, B, A, B, ... (N each, T seconds a run) against nwbench's own sink, echo
# or source target, then prints the median [min-max] MB/s, bridge CPU-seconds per
# GB and CPU-seconds per GB of client, bridge and target together, and the ratios
# A/B. MODE=ws-lat measures round trips of 32-byte messages instead: p50 and p99 in
# microseconds and the bridge's CPU-microseconds per round trip; with PIN=CPU the
# target, both bridges and the client all run on that one CPU (run.sh's lat_cpu0).
# Either binary may be the word `socat` (socat -b 262144, as run.sh) or `ref-ws`
# (bench/refws.c, built as run.sh builds it). Quicker than run.sh's NETWINE_B for
# one question; on a noisy host, trust a ratio only when a repeat agrees.
# Knobs: MODE [ws-up] (ws-up: to a sink; ws-tput: echo; ws-down: from a source;
#        ws-lat: echo, 32 bytes) SIZE [64K] C [1] N [10] T [2] PIN [none]
#        BUILD [build-bench] NWBENCH [$BUILD/bench/nwbench] BASE_PORT [19800]
# Loopback only; every run is capped by -t and `timeout`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -eq 2 ] || { sed -n '2,21p' "$0"; exit 2; }
MODE=${MODE:-ws-up} SIZE=${SIZE:-64K} C=${C:-1} N=${N:-10} T=${T:-2} PIN=${PIN:-}
BUILD=${BUILD:-build-bench} BASE=${BASE_PORT:-19800}
NWB=${NWBENCH:-$ROOT/$BUILD/bench/nwbench}
[ -x "$NWB" ] || meson compile -C "$ROOT/$BUILD" nwbench >/dev/null
WORK=$(mktemp -d /tmp/nwab.XXXXXX)
declare -A BIN=([A]=$1 [B]=$2)
. "$ROOT/bench/lib.sh"  # build_refws, start_bg, stop_all
for x in A B; do
    case ${BIN[$x]} in
    socat) ;;
    ref-ws) build_refws "$WORK/$x" ;;
    *) cp "${BIN[$x]}" "$WORK/$x" ;;
    esac
done
trap 'stop_all; rm -rf "$WORK"' EXIT
case $MODE in
ws-up) kind=sink ;;
ws-tput) kind=echo ;;
ws-down) kind=source ;;
ws-lat) kind=echo SIZE=32 C=1 ;;
*) echo "MODE must be ws-up, ws-tput, ws-down or ws-lat" >&2; exit 2 ;;
esac
TPORT=$((BASE + 1))
pin() { [ -n "$PIN" ] && taskset -a -p -c "$PIN" "$1" >/dev/null; true; }
start_bg target $TPORT "$NWB" serve --url "tcp://127.0.0.1:$TPORT" --kind $kind
TPID=$LASTPID
pin $TPID
declare -A PID URL PORT=([A]=$((BASE + 11)) [B]=$((BASE + 12)))
for x in A B; do
    if [ "${BIN[$x]}" = socat ]; then
        start_bg "$x" "${PORT[$x]}" socat -b 262144 "TCP-LISTEN:${PORT[$x]},bind=127.0.0.1,fork,backlog=1024,reuseaddr" \
            "TCP:127.0.0.1:$TPORT"
        URL[$x]="tcp://127.0.0.1:${PORT[$x]}"
    elif [ "${BIN[$x]}" = ref-ws ]; then
        start_bg "$x" "${PORT[$x]}" "$WORK/$x" "${PORT[$x]}" "$TPORT"
        URL[$x]="ws://127.0.0.1:${PORT[$x]}/"
    else
        start_bg "$x" "${PORT[$x]}" "$WORK/$x" --listen "127.0.0.1:${PORT[$x]}" --target "127.0.0.1:$TPORT" --access-log ''
        URL[$x]="ws://127.0.0.1:${PORT[$x]}/netwine/ws?target=127.0.0.1:$TPORT"
    fi
    PID[$x]=$LASTPID
    pin $LASTPID  # socat's per-connection children inherit it
done
client=()
[ -n "$PIN" ] && client=(taskset -c "$PIN")
for i in $(seq 1 "$N"); do
    for x in A B; do
        echo "$x $(timeout $((T + 20)) "${client[@]}" "$NWB" "$MODE" --url "${URL[$x]}" \
            --proto binary -c "$C" -s "$SIZE" -t "$T" --pid "${PID[$x]}" --tpid "$TPID" --label "$x")"
    done
done >"$WORK/runs.txt"
echo "A=$1 B=$2 MODE=$MODE SIZE=$SIZE C=$C N=$N T=$T${PIN:+ PIN=$PIN}"
python3 - "$WORK/runs.txt" "$MODE" <<'PY'
import statistics as st, sys
lines = [line.split() for line in open(sys.argv[1])]
# Per mode: the figures of a run, their names and formats. The paired ratio (A
# over B within each round of the interleaving) is of the first for throughput,
# of the second (p99) for latency. Beside the bridge's own CPU per GB, throughput
# has that of client, bridge and target together (on a host they keep busy, what
# sets the rate: work a bridge moves to its peers counts); latency has the
# bridge's CPU per round trip.
if sys.argv[2] == "ws-lat":
    names, fmts, paired = ("p50 us", "p99 us", "bridge CPU-us/rt"), ("{:.1f}", "{:.1f}", "{:.2f}"), 1
    figures = lambda kv: (float(kv["p50_us"]), float(kv["p99_us"]),
                          float(kv["server_cpu_s"]) * 1e6 / int(kv["rts"]))
else:
    names, fmts, paired = ("MB/s", "bridge CPU-s/GB", "all CPU-s/GB"), ("{:.0f}", "{:.3f}", "{:.3f}"), 0
    def figures(kv):
        gb = int(kv["bytes"]) / 1e9
        every = sum(float(kv[k]) for k in ("client_cpu_s", "server_cpu_s", "target_cpu_s"))
        return float(kv["MBps"]), float(kv["server_cpu_s"]) / gb, every / gb
runs = {}
for label, *pairs in lines:
    kv = dict(p.split("=", 1) for p in pairs if "=" in p)
    if kv.get("ok") != "1" or kv.get("verify", "ok") != "ok":
        sys.exit(f"a run failed: {label} {' '.join(pairs)}")
    runs.setdefault(label, []).append(figures(kv))
med = {}
for label in ("A", "B"):
    cols = list(zip(*runs[label]))
    med[label] = [st.median(c) for c in cols]
    text = "  ".join(f"{n} {f.format(m)} [{f.format(min(c))}-{f.format(max(c))}]"
                     for n, f, m, c in zip(names, fmts, med[label], cols))
    print(f"{label}: {text}  runs {len(cols[0])}")
per = sorted(a[paired] / b[paired] for a, b in zip(runs["A"], runs["B"]))
print("A/B: " + "  ".join(f"{n} {med['A'][k] / med['B'][k]:.3f}" for k, n in enumerate(names))
      + f"  {names[paired]} per pair {st.median(per):.3f} [{per[0]:.3f}-{per[-1]:.3f}]")
PY
