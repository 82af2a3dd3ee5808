#!/usr/bin/env bash
# bench/experiments/poll-syscalls.sh — the system calls netwine makes per long-poll
# round trip (one 32-byte send echoed back by poll), counted by `strace -f -c`:
# a count the host's noise does not move, unlike round trips per second.
#
#   bash bench/experiments/poll-syscalls.sh                 # build-bench's netwine
#   NETWINE=/path/to/netwine bash bench/experiments/poll-syscalls.sh   # another build
#   SECS [3] BASE_PORT [19820]
#
# Prints the client's round trips and, per call, its count and count per round
# trip. strace slows netwine a lot; the counts per round trip are what it is for.
# Needs strace (apt-get install strace) and the release build; loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${SECS:-3} BASE=${BASE_PORT:-19820}
NETWINE=${NETWINE:-$ROOT/build-bench/netwine}
NWB=${NWB:-$ROOT/build-bench/bench/nwbench}
for f in "$NETWINE" "$NWB"; do [ -x "$f" ] || { echo "missing $f (build with: meson setup build-bench --buildtype=release && ninja -C build-bench)" >&2; exit 1; }; done
command -v strace >/dev/null || { echo "needs strace: apt-get install -y strace" >&2; exit 1; }
ECHO=$((BASE + 1)) NW=$((BASE + 2))
COUNTS=$(mktemp)
. "$ROOT/bench/lib.sh"
trap 'stop_all; rm -f "$COUNTS"' EXIT
start_bg echo "$ECHO" "$NWB" serve --url "tcp://127.0.0.1:$ECHO" --kind echo
# One event loop, so every call of a round trip is on the thread strace counts.
start_bg netwine "$NW" strace -f -c -o "$COUNTS" "$NETWINE" --listen "127.0.0.1:$NW" \
    --target "127.0.0.1:$ECHO" --threads 1 --access-log ''
TRACER=$LASTPID
line=$("$NWB" poll-rtt --url "http://127.0.0.1:$NW/netwine/" --target "127.0.0.1:$ECHO" -c 1 -s 32 -t "$SECS")
rounds=$(grep -oE 'rounds=[0-9]+' <<<"$line" | cut -d= -f2)
# strace writes its counts when netwine (its child) has exited.
pkill -TERM -P "$TRACER" || true
for _ in $(seq 1 100); do kill -0 "$TRACER" 2>/dev/null || break; sleep 0.1; done
[ "${rounds:-0}" -gt 0 ] || { echo "no round trips: $line" >&2; exit 1; }
echo "round trips: $rounds"
# strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall; then "total".
awk -v r="$rounds" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
    calls = $4
    if ($NF != "total" && calls / r < 0.01) next
    printf "%-14s %8d %7.2f per round trip\n", $NF, calls, calls / r }' "$COUNTS"
