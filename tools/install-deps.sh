#!/usr/bin/env bash
# Installs what netwine needs to build, run and test on Debian 12, skipping what
# is already there. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_PKGS="g++ meson ninja-build pkg-config libevent-dev libssl-dev nlohmann-json3-dev doctest-dev libgoogle-perftools-dev"
TEST_PKGS="clang libclang-rt-14-dev python3 python3-pytest python3-websockets curl socat websockify chromium nodejs npm openssl procps iproute2 xvfb x11vnc novnc x11-xserver-utils"

want="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && want="$want $TEST_PKGS"

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# nodejs/npm may come from elsewhere than Debian (the machine image has its own).
if [ "${1:-}" = "--test" ] && command -v node >/dev/null && command -v npm >/dev/null; then
  missing=$(echo "$missing" | tr ' ' '\n' | grep -vx -e nodejs -e npm | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ "${1:-}" = "--test" ] && [ -f tests/package-lock.json ]; then
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
