#!/usr/bin/env bash
# bench/profile.sh — where each relay's CPU goes, from perf samples taken in one run.
#
#   bash bench/profile.sh               # about a minute with the defaults
#   REPS=3 SECS=3 CONNS=8 bash bench/profile.sh
#
# For netwine (a plain `binary` WebSocket, so bulk threads take it), socat and the
# floor relays (bench/refrelay.c `threads` and `poll`), it runs the 64 KiB echo
# throughput test (nwbench ws-tput) while `perf record` samples every CPU, and
# splits the relay's samples into: the kernel; the relay's own code; the C
# library; libevent. Then the relay's top user-space symbols. It answers "how much
# of a relay's CPU is its own code, and how much the kernel's TCP work that every
# relay pays" with a profiler instead of guesses (docs/PERFORMANCE.md).
#
# Samples are taken system-wide (-a) and kept for the relay's processes only, so
# socat's per-connection children count. Loopback only; each run is capped by -t.
# Needs perf (Debian: linux-perf) and root (or perf_event_paranoid <= -1).
#
# Knobs: REPS [2] SECS [2] CONNS [1] SIZE [64K] FREQ [999] BUILD [build-bench]
#        BASE_PORT [19900] OUT [/tmp/nwbench-profile-<timestamp>]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-2}
SECS=${SECS:-2}
CONNS=${CONNS:-1}
SIZE=${SIZE:-64K}
FREQ=${FREQ:-999}
BUILD=${BUILD:-build-bench}
BASE=${BASE_PORT:-19900}
OUT=${OUT:-/tmp/nwbench-profile-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/nwbench-prof.XXXXXX)

command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
command -v socat >/dev/null || { echo "profile.sh: socat is missing (apt-get install socat)" >&2; exit 1; }
cd "$ROOT" || exit 1
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release >"$OUT/build.log" 2>&1 || { echo "meson setup failed: $OUT/build.log" >&2; exit 1; }
fi
meson compile -C "$BUILD" netwine nwbench >>"$OUT/build.log" 2>&1 || { echo "build failed: $OUT/build.log" >&2; exit 1; }
cp "$BUILD/netwine" "$BUILD/bench/nwbench" "$WORK/"
gcc -O2 -Wall -pthread "$ROOT/bench/refrelay.c" -o "$WORK/refrelay" >>"$OUT/build.log" 2>&1 || { echo "refrelay build failed" >&2; exit 1; }

. "$ROOT/bench/lib.sh"  # start_bg, port_busy, stop_all
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A PID URL
# start NAME PORT CMD...: start_bg, remembering NAME's pid.
start() {
    local name=$1
    start_bg "$@"
    PID[$name]=$LASTPID
}

ECHO=$BASE
start echo "$ECHO" "$WORK/nwbench" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
start netwine $((BASE + 1)) "$WORK/netwine" --listen "127.0.0.1:$((BASE + 1))" --target "127.0.0.1:$ECHO" --access-log ''
start socat $((BASE + 2)) socat -b 262144 "TCP-LISTEN:$((BASE + 2)),bind=127.0.0.1,fork,backlog=1024,reuseaddr" "TCP:127.0.0.1:$ECHO"
start ref-threads $((BASE + 3)) "$WORK/refrelay" $((BASE + 3)) "$ECHO" threads
start ref-poll $((BASE + 4)) "$WORK/refrelay" $((BASE + 4)) "$ECHO" poll
URL[netwine]="ws://127.0.0.1:$((BASE + 1))/netwine/ws?target=127.0.0.1:$ECHO"
URL[socat]="tcp://127.0.0.1:$((BASE + 2))"
URL[ref-threads]="tcp://127.0.0.1:$((BASE + 3))"
URL[ref-poll]="tcp://127.0.0.1:$((BASE + 4))"
RELAYS="netwine socat ref-threads ref-poll"

{
    echo "date: $(date -Is)  host: $(uname -srm)  cpus: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu: $(cpu_model)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)  REPS=$REPS SECS=$SECS CONNS=$CONNS SIZE=$SIZE FREQ=$FREQ"
} >"$OUT/meta.txt"

for rep in $(seq 1 "$REPS"); do
    for r in $RELAYS; do
        data="$OUT/$r.$rep.data"
        # The relay's process group: socat's children are made per connection, later.
        perf record -q -a -F "$FREQ" -o "$data" -- sleep $((SECS + 1)) >/dev/null 2>&1 &
        perf_pid=$!
        sleep 0.3
        line=$(timeout $((SECS + 10)) "$WORK/nwbench" ws-tput --url "${URL[$r]}" -c "$CONNS" -s "$SIZE" -t "$SECS" \
            --pid "${PID[$r]}" --label "$r" 2>>"$OUT/client.err" | tail -1)
        wait "$perf_pid"
        # Every sample by process name (comm), shared object and symbol; the summary
        # keeps the relay's own (netwine, socat, refrelay: socat's per-connection
        # children and every thread included).
        perf report -i "$data" --no-children --sort comm,dso,sym -g none --stdio 2>/dev/null |
            grep '%' >"$OUT/$r.$rep.samples"
        echo "rep=$rep relay=$r $line" >>"$OUT/results.txt"
        echo "rep $rep $r: $(echo "$line" | grep -o 'MBps=[0-9.]*') $(echo "$line" | grep -o 'server_cpu_s=[0-9.]*')" >&2
        rm -f "$data"
    done
done

python3 - "$OUT" "$RELAYS" "$REPS" <<'EOF'
import os, re, statistics, sys
out, relays, reps = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
COMM = {"netwine": "netwine", "socat": "socat", "ref-threads": "refrelay", "ref-poll": "refrelay"}
def kv(line):
    return dict(p.split("=", 1) for p in line.split() if "=" in p)
runs = {}
for line in open(os.path.join(out, "results.txt")):
    d = kv(line)
    runs.setdefault(d["relay"], []).append(d)
print(open(os.path.join(out, "meta.txt")).read())
print("| relay | MB/s | CPU-s per GB | kernel % | own code % | libc % | libevent % | own code CPU-s per GB |")
print("|---|---|---|---|---|---|---|---|")
for r in relays:
    shares = {"kernel": [], "own": [], "libc": [], "libevent": []}
    for rep in range(1, reps + 1):
        path = os.path.join(out, f"{r}.{rep}.samples")
        if not os.path.exists(path):
            continue
        s = {"kernel": 0.0, "own": 0.0, "libc": 0.0, "libevent": 0.0}
        for line in open(path):
            f = line.split()
            if len(f) < 3 or not f[0].endswith("%") or f[1] != COMM[r]:
                continue
            pct, dso = float(f[0][:-1]), f[2]
            if dso.startswith("[kernel") or dso == "[unknown]":
                s["kernel"] += pct
            elif dso.startswith("libc"):
                s["libc"] += pct
            elif dso.startswith("libevent"):
                s["libevent"] += pct
            else:  # the relay's binary and its other libraries
                s["own"] += pct
        total = sum(s.values()) or 1
        s = {k: v * 100 / total for k, v in s.items()}
        for k in s:
            shares[k].append(s[k])
    ok = [d for d in runs.get(r, []) if d.get("ok") == "1" and float(d.get("bytes", 0)) > 0]
    mbps = statistics.median(float(d["MBps"]) for d in ok) if ok else 0
    gb = [float(d["server_cpu_s"]) / (float(d["bytes"]) / 1e9) for d in ok]
    cpu = statistics.median(gb) if gb else 0
    med = {k: statistics.median(v) if v else 0 for k, v in shares.items()}
    print(f"| {r} | {mbps:.0f} | {cpu:.3f} | {med['kernel']:.1f} | {med['own']:.1f} | {med['libc']:.1f} | "
          f"{med['libevent']:.1f} | {cpu * med['own'] / 100:.3f} |")
print()
for r in relays:
    path = os.path.join(out, f"{r}.1.samples")
    if not os.path.exists(path):
        continue
    rows = [line.split() for line in open(path)]
    mine = [f for f in rows if len(f) >= 5 and f[1] == COMM[r]]
    total = sum(float(f[0][:-1]) for f in mine) or 1
    user = [f for f in mine if f[3] != "[k]"][:6]
    print(f"{r}, top user-space symbols (rep 1, % of the relay's samples):")
    for f in user:
        print(f"    {float(f[0][:-1]) * 100 / total:5.2f}%  {f[2]}  {' '.join(f[4:])}")
EOF
