#!/usr/bin/env bash
# Installs what is missing, builds, runs every test suite, and ends with one line
# "N passed, N failed[, N skipped]" counting the real test cases of all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh --test || { echo "0 passed, 1 failed"; exit 1; }
bash tools/build.sh || { echo "0 passed, 1 failed"; exit 1; }
rm -rf build/test-reports && mkdir -p build/test-reports
# Every suite registered with meson: unit (doctest), integration (pytest), js, browser.
meson test -C build --print-errorlogs --no-rebuild
status=$?
python3 tools/summarize_junit.py build/test-reports
sum=$?
[ $status -ne 0 ] && exit $status
exit $sum
