#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan and runs each for a bounded
# time (FUZZ_SECONDS, default 20) from its seed corpus in tests/fuzz/corpus/NAME.
# Writes build-fuzz/fuzz.xml (JUnit, one case per target); exits 1 on any finding.
# Run longer: FUZZ_SECONDS=3600 bash tools/fuzz.sh   (new inputs go to build-fuzz/corpus/)
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
out=${FUZZ_REPORT:-build-fuzz/fuzz.xml}
if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    --buildtype=debugoptimized >/dev/null || exit 1
fi
meson compile -C build-fuzz || exit 1
mkdir -p "$(dirname "$out")"
cases="" failed=0 total=0
for t in fuzz_ws_frame fuzz_codec fuzz_path fuzz_access fuzz_config; do
  total=$((total + 1))
  work="build-fuzz/corpus/$t"
  mkdir -p "$work"
  log="build-fuzz/$t.log"
  if UBSAN_OPTIONS=halt_on_error=1 ./build-fuzz/tests/fuzz/$t -max_total_time="$secs" -max_len=4096 \
       -artifact_prefix="build-fuzz/$t-" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    echo "fuzz $t: ok ($(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}') runs)"
    cases="$cases<testcase classname=\"fuzz\" name=\"$t\"/>"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FINDING — see $log and build-fuzz/$t-*"
    tail -30 "$log"
    cases="$cases<testcase classname=\"fuzz\" name=\"$t\"><failure message=\"finding\"/></testcase>"
  fi
done
echo "<testsuite name=\"fuzz\" tests=\"$total\" failures=\"$failed\">$cases</testsuite>" > "$out"
[ $failed -eq 0 ]
