#!/usr/bin/env bash
# Quick start: install what is missing, build, and run netwine with its demo on
# http://localhost:8080/ (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
echo "netwine demo: open http://localhost:8080/"
exec build/netwine --demo --listen 127.0.0.1:8080 "$@"
