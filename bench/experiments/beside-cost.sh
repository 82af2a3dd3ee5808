#!/usr/bin/env bash
# bench/experiments/beside-cost.sh — what relaying through netwine or socat costs
# the processes on either side of it: for each (alternating, REPS times), the 64 KiB
# echo test (nwbench ws-tput, C connections, T seconds) with the CPU-seconds per GB
# of the load client, the relay and the echo target, and the relay's and target's
# voluntary context switches per MB in the middle second of the run (every switch
# is a sleep that someone's write had to wake).
#
#   bash bench/experiments/beside-cost.sh            # REPS=3 C=8 T=3
#
# Knobs: REPS [3] C [8] T [3] SIZE [64K] BUILD [build-bench] BASE_PORT [19100]
#        DEBUG=1 prints the raw switch counts. The switch counts swing several-fold
#        from run to run on this host (whether a process finds data already there
#        when it asks); read them over several reps, or not at all.
# Loopback only; every run is capped by -t. Not part of run.sh: a question asked
# once (docs/PERFORMANCE.md, "Another kind of host").
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REPS=${REPS:-3} C=${C:-8} T=${T:-3} SIZE=${SIZE:-64K}
BUILD=${BUILD:-build-bench} BASE=${BASE_PORT:-19100}
NWB=$ROOT/$BUILD/bench/nwbench
NW=$ROOT/$BUILD/netwine
[ -x "$NWB" ] && [ -x "$NW" ] || meson compile -C "$ROOT/$BUILD" >/dev/null
. "$ROOT/bench/lib.sh"  # start_bg, stop_all
trap stop_all EXIT
ECHO=$((BASE + 1)) NWP=$((BASE + 2)) SOP=$((BASE + 3))
start_bg echo $ECHO "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
TPID=$LASTPID
start_bg netwine $NWP "$NW" --listen "127.0.0.1:$NWP" --target "127.0.0.1:$ECHO" --access-log ''
NPID=$LASTPID
start_bg socat $SOP socat -b 262144 "TCP-LISTEN:$SOP,bind=127.0.0.1,fork,backlog=1024,reuseaddr" "TCP:127.0.0.1:$ECHO"
SPID=$LASTPID
# Voluntary switches of every thread of a process and its children.
switches() {
    local tot=0 p t v
    for p in $1 $(pgrep -P "$1"); do
        for t in /proc/"$p"/task/*; do
            v=$(awk '/^voluntary_ctxt/{print $2}' "$t/status" 2>/dev/null)
            tot=$((tot + ${v:-0}))
        done
    done
    echo "$tot"
}
echo "relay    MB/s  client_s/GB relay_s/GB target_s/GB  relay_sw/MB target_sw/MB"
for rep in $(seq 1 "$REPS"); do
    for r in netwine socat; do
        if [ $r = netwine ]; then url="ws://127.0.0.1:$NWP/netwine/ws?target=127.0.0.1:$ECHO" pid=$NPID
        else url="tcp://127.0.0.1:$SOP" pid=$SPID; fi
        out=$(mktemp)
        "$NWB" ws-tput --url "$url" -c "$C" -s "$SIZE" -t "$T" --pid "$pid" --tpid "$TPID" >"$out" 2>&1 &
        cl=$!
        sleep "$(echo "$T / 2 - 0.5" | bc -l)"
        r0=$(switches "$pid") t0=$(switches "$TPID") s0=$(date +%s.%N)
        sleep 1
        r1=$(switches "$pid") t1=$(switches "$TPID") s1=$(date +%s.%N)
        [ -n "${DEBUG:-}" ] && echo "r=$r pid=$pid r0=$r0 r1=$r1 children=$(pgrep -P "$pid" | wc -l)" >&2
        wait $cl
        awk -v r="$r" -v r0="$r0" -v r1="$r1" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" '
          { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
          END {
            gb = f["bytes"] / 1e9; mb_s = f["MBps"]; dt = s1 - s0
            if (gb <= 0 || mb_s <= 0) { print r ": no result"; exit }
            printf "%-8s %5.0f  %10.3f %10.3f %11.3f  %11.2f %12.2f\n", r, mb_s,
              f["client_cpu_s"] / gb, f["server_cpu_s"] / gb, f["target_cpu_s"] / gb,
              (r1 - r0) / (mb_s * dt), (t1 - t0) / (mb_s * dt)
          }' "$out"
        rm -f "$out"
    done
done
