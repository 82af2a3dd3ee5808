#!/usr/bin/env bash
# bench/experiments/http-two-loops.sh — would a second event loop for the HTTP
# transports (SO_REUSEPORT, sessions pinned to the loop that made them) help
# long-polling on this machine? An upper bound, measured without building it:
#
#   one:  two poll-rtt clients (C sessions each) against ONE netwine event loop
#   two:  the same two clients, each against its OWN netwine (--threads 1), i.e.
#         two loops that never forward a request to each other: the best any
#         session-affinity design could do, with no cross-thread hand-off cost
#
# Same clients, same target, same sessions in both cases; only the number of
# server loops differs. Alternates the two cases REPS times (order flipped each
# rep) and prints round trips per second and the CPU each side used.
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
ECHO=$((BASE + 1)) A=$((BASE + 10)) B=$((BASE + 11))
. "$ROOT/bench/lib.sh"
trap stop_all EXIT
nw() { # PORT
    start_bg "netwine-$1" "$1" "$NETWINE" --listen "127.0.0.1:$1" --target "127.0.0.1:$ECHO" --threads 1 --access-log '' \
        --max-sessions-per-client 100000 --max-sessions 100000
}
start_bg echo "$ECHO" "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
nw "$A"; PA=$LASTPID
nw "$B"; PB=$LASTPID
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # clock ticks, user + system
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
tick=$(getconf CLK_TCK)
# client PORT: one poll-rtt client; prints its round trips per second.
client() {
    "$NWB" poll-rtt --url "http://127.0.0.1:$1/netwine/" --target "127.0.0.1:$ECHO" -c "$C" -t "$SECS" |
        sed -n 's/.* rtps=\([0-9.]*\).*/\1/p'
}
run_case() { # one|two
    local pa=$A pb=$A
    [ "$1" = two ] && pb=$B
    local a0 b0 s0 s1 o1 o2
    a0=$(cpu_of "$PA"); b0=$(cpu_of "$PB"); s0=$(busy)
    o1=$(mktemp) o2=$(mktemp)
    local t0 t1
    t0=$(date +%s.%N)
    client "$pa" >"$o1" & local c1=$!
    client "$pb" >"$o2" & local c2=$!
    wait "$c1" "$c2"
    t1=$(date +%s.%N)
    s1=$(busy)
    local srv=$(( $(cpu_of "$PA") - a0 + $(cpu_of "$PB") - b0 ))
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
    if [ $((r % 2)) = 1 ]; then run_case one; run_case two; else run_case two; run_case one; fi
done
