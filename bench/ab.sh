#!/usr/bin/env bash
# bench/ab.sh — an interleaved A/B of two netwine builds on one nwbench mode.
#
#   bash bench/ab.sh NEW_BINARY OLD_BINARY                     # ws-up, 64 KiB, 1 conn, 10 x 2 s each
#   MODE=ws-tput SIZE=1K C=8 N=8 bash bench/ab.sh build-bench/netwine /tmp/netwine-old
#
# Runs A, B, A, B, ... (N each, T seconds a run) against nwbench's own sink, echo
# or source target, then prints the median [min-max] MB/s and bridge CPU-seconds
# per GB of each, and the ratios A/B. Quicker than run.sh's NETWINE_B for one
# question; on a noisy host, trust a ratio only when a repeat agrees.
# Knobs: MODE [ws-up] (ws-up: to a sink; ws-tput: echo; ws-down: from a source)
#        SIZE [64K] C [1] N [10] T [2] BUILD [build-bench] BASE_PORT [19800]
# Loopback only; every run is capped by -t and `timeout`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -eq 2 ] || { sed -n '2,13p' "$0"; exit 2; }
MODE=${MODE:-ws-up} SIZE=${SIZE:-64K} C=${C:-1} N=${N:-10} T=${T:-2}
BUILD=${BUILD:-build-bench} BASE=${BASE_PORT:-19800}
NWB=$ROOT/$BUILD/bench/nwbench
[ -x "$NWB" ] || meson compile -C "$ROOT/$BUILD" nwbench >/dev/null
WORK=$(mktemp -d /tmp/nwab.XXXXXX)
cp "$1" "$WORK/A"
cp "$2" "$WORK/B"
. "$ROOT/bench/lib.sh"  # start_bg, stop_all
trap 'stop_all; rm -rf "$WORK"' EXIT
case $MODE in
ws-up) kind=sink ;;
ws-tput) kind=echo ;;
ws-down) kind=source ;;
*) echo "MODE must be ws-up, ws-tput or ws-down" >&2; exit 2 ;;
esac
start_bg target $((BASE + 1)) "$NWB" serve --url "tcp://127.0.0.1:$((BASE + 1))" --kind $kind
declare -A PID PORT=([A]=$((BASE + 11)) [B]=$((BASE + 12)))
for x in A B; do
    start_bg "$x" "${PORT[$x]}" "$WORK/$x" --listen "127.0.0.1:${PORT[$x]}" --target "127.0.0.1:$((BASE + 1))" \
        --access-log ''
    PID[$x]=$LASTPID
done
for i in $(seq 1 "$N"); do
    for x in A B; do
        echo "$x $(timeout $((T + 20)) "$NWB" "$MODE" --url "ws://127.0.0.1:${PORT[$x]}/netwine/ws?target=127.0.0.1:$((BASE + 1))" \
            --proto binary -c "$C" -s "$SIZE" -t "$T" --pid "${PID[$x]}" --label "$x")"
    done
done >"$WORK/runs.txt"
echo "A=$1 B=$2 MODE=$MODE SIZE=$SIZE C=$C N=$N T=$T"
python3 - "$WORK/runs.txt" <<'PY'
import statistics as st, sys
runs = {}
for line in open(sys.argv[1]):
    label, *pairs = line.split()
    kv = dict(p.split("=", 1) for p in pairs if "=" in p)
    if kv.get("ok") != "1" or kv.get("verify", "ok") != "ok":
        sys.exit(f"a run failed: {line.strip()}")
    runs.setdefault(label, []).append((float(kv["MBps"]), float(kv["server_cpu_s"]) / (int(kv["bytes"]) / 1e9)))
med = {}
for label in ("A", "B"):
    mb = [m for m, _ in runs[label]]
    cpu = [c for _, c in runs[label]]
    med[label] = (st.median(mb), st.median(cpu))
    print(f"{label}: MB/s {med[label][0]:.0f} [{min(mb):.0f}-{max(mb):.0f}]  "
          f"bridge CPU-s/GB {med[label][1]:.3f} [{min(cpu):.3f}-{max(cpu):.3f}]  runs {len(mb)}")
print(f"A/B: MB/s {med['A'][0] / med['B'][0]:.3f}  CPU-s/GB {med['A'][1] / med['B'][1]:.3f}")
PY
