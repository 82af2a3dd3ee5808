#!/usr/bin/env bash
# Installs what is missing, builds, runs every test suite, and ends with one line
# "N passed, N failed[, N skipped]" counting the real test cases of all suites:
#   1. meson suites in build/ (unit: doctest; integration: pytest; js; browser)
#   2. unit, integration, browser and interop again under AddressSanitizer/UBSan (build-asan/)
#   3. the thread-crossing integration tests under ThreadSanitizer (build-tsan/)
#   4. each libFuzzer target for FUZZ_SECONDS (build-fuzz/)
# NETWINE_QUICK=1 skips 2 to 4.
set -uo pipefail
cd "$(dirname "$0")/.."
reports=build/test-reports
fail_early() { mkdir -p "$reports"; echo "0 passed, 1 failed"; exit 1; }
bash tools/install-deps.sh --test || fail_early
bash tools/build.sh || fail_early
rm -rf "$reports" && mkdir -p "$reports"
status=0

meson test -C build --print-errorlogs --no-rebuild || status=1

if [ "${NETWINE_QUICK:-0}" != 1 ]; then
  # Sanitizers: leaks, overflows, use-after-free and UB anywhere the suites reach.
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || status=1
  fi
  if meson compile -C build-asan >/dev/null; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C build-asan --print-errorlogs --suite unit --suite integration --suite browser --suite interop || status=1
    for f in build-asan/test-reports/*.xml; do
      [ -f "$f" ] && cp "$f" "$reports/asan-$(basename "$f")"
    done
  else
    echo "sanitizer build failed"; status=1
    echo '<testsuite name="asan"><testcase name="asan-build"><failure message="build failed"/></testcase></testsuite>' \
      > "$reports/asan-build.xml"
  fi
  # Threads (--threads): the suites whose sessions cross threads (TLS ones too), on a
  # ThreadSanitizer build of the server; any report fails the test (conftest.py).
  if [ ! -f build-tsan/build.ninja ]; then
    meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null || status=1
  fi
  if meson compile -C build-tsan netwine >/dev/null; then
    # Bounded like the meson suites (~2 min normally): a hang fails, it does not stall CI.
    (cd tests/integration && NETWINE_BIN="$PWD/../../build-tsan/netwine" \
      TSAN_OPTIONS="halt_on_error=0 history_size=7 suppressions=$PWD/../../tools/tsan.supp" \
      timeout 1800 /usr/bin/python3 -m pytest -q -p no:cacheprovider test_threads.py test_loops.py test_tunnel_http.py test_bulk.py test_websocket.py test_foundation.py test_tls.py \
      --junitxml="$PWD/../../$reports/tsan-integration.xml") || status=1
  else
    echo "thread sanitizer build failed"; status=1
    echo '<testsuite name="tsan"><testcase name="tsan-build"><failure message="build failed"/></testcase></testsuite>' \
      > "$reports/tsan-build.xml"
  fi
  FUZZ_REPORT="$reports/fuzz.xml" bash tools/fuzz.sh || status=1
fi

python3 tools/summarize_junit.py "$reports"
sum=$?
[ $status -ne 0 ] && exit 1
exit $sum
