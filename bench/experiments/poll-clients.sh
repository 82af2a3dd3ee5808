#!/usr/bin/env bash
# bench/experiments/poll-clients.sh — long-polling on one event loop against two,
# for clients of different shapes: N poll-rtt clients (processes) of K sessions
# each, all at once, against netwine --threads 1 and the same binary with
# --threads 2 (every loop serves HTTP; a session's requests move to its loop:
# front.hpp). Alternates the two REPS times and prints, per run, the round trips
# per second of all clients together and the server's CPU-microseconds per round
# trip, then the medians and the ratio of the medians.
#
#   bash bench/experiments/poll-clients.sh             # N [8] K [1] SECS [3] REPS [6]
#   N=2 K=4 bash bench/experiments/poll-clients.sh     # two clients of four sessions
#
# Needs bench/run.sh's release build (build-bench) or NETWINE/NWB; loopback only;
# every client is bounded by -t SECS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-8} K=${K:-1} SECS=${SECS:-3} REPS=${REPS:-6} BASE=${BASE_PORT:-19850}
NETWINE=${NETWINE:-$ROOT/build-bench/netwine}
NWB=${NWB:-$ROOT/build-bench/bench/nwbench}
for f in "$NETWINE" "$NWB"; do [ -x "$f" ] || { echo "missing $f (build with: meson setup build-bench --buildtype=release && ninja -C build-bench)" >&2; exit 1; }; done
ECHO=$((BASE + 1)) ONE=$((BASE + 10)) TWO=$((BASE + 11))
. "$ROOT/bench/lib.sh"
trap stop_all EXIT
start_bg echo "$ECHO" "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
nw() { # PORT THREADS
    start_bg "netwine-$1" "$1" "$NETWINE" --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" --threads "$2" \
        --access-log '' --max-sessions-per-client 100000 --max-sessions 100000
}
nw "$ONE" 1; P1=$LASTPID
nw "$TWO" 2; P2=$LASTPID
tick=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # clock ticks, user + system
work=$(mktemp -d)
run_case() { # NAME PORT PID: prints "NAME rtps=R us_per_rt=U"
    local c0 c1 i rounds=0 r pids=()
    c0=$(cpu_of "$3")
    for i in $(seq 1 "$N"); do
        "$NWB" poll-rtt --url "http://127.0.0.1:$2/netwine/" --target "127.0.0.1:$ECHO" -c "$K" -t "$SECS" \
            >"$work/$i" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    c1=$(cpu_of "$3")
    for i in $(seq 1 "$N"); do
        r=$(sed -n 's/.* rounds=\([0-9]*\).*/\1/p' "$work/$i")
        rounds=$((rounds + ${r:-0}))
    done
    awk -v n="$1" -v r="$rounds" -v s="$SECS" -v c=$((c1 - c0)) -v t="$tick" \
        'BEGIN { printf "%s rtps=%.0f us_per_rt=%.1f\n", n, r / s, r ? c / t / r * 1e6 : 0 }'
}
echo "netwine: $NETWINE  clients: $N x $K sessions  secs: $SECS  reps: $REPS  cpu: $(cpu_model)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
out="$work/runs"
for r in $(seq 1 "$REPS"); do
    if [ $((r % 2)) = 1 ]; then run_case one "$ONE" "$P1"; run_case two "$TWO" "$P2"; else
        run_case two "$TWO" "$P2"; run_case one "$ONE" "$P1"; fi
done | tee "$out"
median() { sed -n "s/^$1 rtps=\([0-9]*\).*/\1/p" "$out" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
m1=$(median one) m2=$(median two)
awk -v a="$m1" -v b="$m2" 'BEGIN { printf "median rtps: one loop %.0f, two loops %.0f, two/one %.2f\n", a, b, a ? b / a : 0 }'
rm -rf "$work"
