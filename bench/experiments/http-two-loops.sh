#!/usr/bin/env bash
# bench/experiments/http-two-loops.sh — what a second event loop does for the
# HTTP transports (long-polling) on this machine:
#
#   one:     two poll-rtt clients (C sessions each) against ONE netwine event loop
#   two:     the same two clients, each against its OWN netwine (--threads 1), i.e.
#            two loops that never pass a request to each other: the upper bound
#            of any session-affinity design, with no cross-thread cost
#   threads: the same two clients against one netwine with --threads 2: its
#            loops take connections in turn, and a request that lands on the
#            loop its session does not live on moves its connection there
#            (front.hpp); what netwine does
#
# Same clients, same target, same sessions in every case; only the server side
# differs. Runs the cases REPS times (order rotated each rep) and prints round
# trips per second and the CPU each side used.
#
#   bash bench/experiments/http-two-loops.sh        # REPS [6] C [4] SECS [3]
#   NETWINE=/path/to/netwine bash bench/experiments/http-two-loops.sh
#
# Needs bench/run.sh's release build (build-bench) or NETWINE; loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REPS=${REPS:-6} C=${C:-4} SECS=${SECS:-3} BASE=${BASE_PORT:-19800}
NETWINE=${NETWINE:-$ROOT/build-bench/netwine}
NWB=${NWB:-$ROOT/build-bench/bench/nwbench}
for f in "$NETWINE" "$NWB"; do [ -x "$f" ] || { echo "missing $f (build with: meson setup build-bench --buildtype=release && ninja -C build-bench)" >&2; exit 1; }; done
ECHO=$((BASE + 1)) A=$((BASE + 10)) B=$((BASE + 11)) T=$((BASE + 12))
. "$ROOT/bench/lib.sh"
trap stop_all EXIT
nw() { # PORT [THREADS]
    start_bg "netwine-$1" "$1" "$NETWINE" --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" --threads "${2:-1}" --access-log '' \
        --max-sessions-per-client 100000 --max-sessions 100000
}
start_bg echo "$ECHO" "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
nw "$A"; PA=$LASTPID
nw "$B"; PB=$LASTPID
nw "$T" 2; PT=$LASTPID
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # clock ticks, user + system
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
tick=$(getconf CLK_TCK)
# client PORT: one poll-rtt client; prints its round trips per second.
client() {
    "$NWB" poll-rtt --url "http://127.0.0.1:$1/netwine/" --target "127.0.0.1:$ECHO" -c "$C" -t "$SECS" |
        sed -n 's/.* rtps=\([0-9.]*\).*/\1/p'
}
run_case() { # one|two|threads
    local pa=$A pb=$A
    [ "$1" = two ] && pb=$B
    [ "$1" = threads ] && pa=$T pb=$T
    local a0 b0 t0c s0 s1 o1 o2
    a0=$(cpu_of "$PA"); b0=$(cpu_of "$PB"); t0c=$(cpu_of "$PT"); s0=$(busy)
    o1=$(mktemp) o2=$(mktemp)
    local t0 t1
    t0=$(date +%s.%N)
    client "$pa" >"$o1" & local c1=$!
    client "$pb" >"$o2" & local c2=$!
    wait "$c1" "$c2"
    t1=$(date +%s.%N)
    s1=$(busy)
    local srv=$(( $(cpu_of "$PA") - a0 + $(cpu_of "$PB") - b0 + $(cpu_of "$PT") - t0c ))
    local r1 r2
    r1=$(cat "$o1") r2=$(cat "$o2")
    rm -f "$o1" "$o2"
    awk -v c="$1" -v r1="$r1" -v r2="$r2" -v srv="$srv" -v tick="$tick" -v s0="$s0" -v s1="$s1" -v t0="$t0" -v t1="$t1" 'BEGIN {
        split(s0, a, " "); split(s1, b, " "); used = b[1] - a[1]; idle = b[2] - a[2];
        printf "%s rt_per_s=%.0f (%s + %s) server_cpu=%.0f%% machine_busy=%.0f%% (over the clients whole run)\n", c, r1 + r2, r1, r2,
            srv / tick / (t1 - t0) * 100, used / (used + idle) * 100 }'
}
echo "netwine: $NETWINE  sessions: 2 x $C  secs: $SECS  reps: $REPS  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$REPS"); do
    case $((r % 3)) in
        1) run_case one; run_case two; run_case threads ;;
        2) run_case two; run_case threads; run_case one ;;
        0) run_case threads; run_case one; run_case two ;;
    esac
done
