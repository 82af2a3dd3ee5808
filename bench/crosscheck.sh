#!/usr/bin/env bash
# bench/crosscheck.sh — run the shared, neutral harness (shared/bench/run_all.sh,
# its C client wsbench) against netwine, beside its own anchors (raw TCP, a C
# WebSocket echo, socat, websockify, node-ws when available). A second opinion on
# bench/run.sh's numbers with a client that is not ours.
#
#   bash bench/crosscheck.sh            # about 3 minutes with the harness defaults
#   REPS=5 PIN=split bash bench/crosscheck.sh
# Every knob of run_all.sh (REPS, TESTS, K, PIN, TARGETS, ...) passes through.
#
# The shared dir is read-only and run_all.sh builds into its own bin/ and writes
# results/ next to itself, so the harness is copied to a temp dir first. Its
# results are moved to $OUT (default /tmp/nwbench-crosscheck-<timestamp>).
#
# netwine runs websockify-style: --default-target makes any path (the harness
# uses /) reach the echo target; --target allows that target (a default target is
# still subject to the target rules, else 403). --max-sessions-per-client is
# raised because the harness opens K=500 connections from one address (the
# default limit is 256).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
[ -d "$SHARED_BENCH" ] || SHARED_BENCH=/work/shared/bench
BUILD=${BUILD:-build-bench}
OUT=${OUT:-/tmp/nwbench-crosscheck-$(date +%Y%m%d-%H%M%S)}
WORK=$(mktemp -d /tmp/nwbench-xc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cd "$ROOT" || exit 1
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release >/dev/null || exit 1
fi
meson compile -C "$BUILD" netwine >/dev/null || { echo "build failed" >&2; exit 1; }
cp "$BUILD/netwine" "$WORK/netwine"

for p in socat websockify; do
    command -v "$p" >/dev/null || (apt-get update -qq && apt-get install -y -qq "$p") >/dev/null 2>&1 ||
        echo "warning: $p missing; the harness will report it as failed" >&2
done

mkdir -p "$WORK/bench"
(cd "$SHARED_BENCH" && tar --exclude=./results --exclude=./bin -cf - .) | tar -xf - -C "$WORK/bench"
(cd "$WORK/bench" && sh ./build.sh >/dev/null) || { echo "could not build the shared harness (gcc?)" >&2; exit 1; }
mkdir -p "$OUT"

EXTRA_NAME=netwine EXTRA_SUBPROTO=${EXTRA_SUBPROTO:-binary} OUT="$OUT" \
    "$WORK/bench/run_all.sh" "$WORK/netwine" --listen '127.0.0.1:{port}' --default-target '{target}' \
    --target '{target}' --access-log '' --max-sessions-per-client 100000
rc=$?
echo "crosscheck results: $OUT (table.md, results.txt)" >&2
exit $rc
