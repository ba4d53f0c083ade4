#!/usr/bin/env bash
# Installs the system packages ShadowSim needs when they are missing (Debian/Ubuntu).
# Lua 5.4 (library, headers and interpreter), busted (the Lua module's specs),
# chromium (the report is checked in a headless browser) and pkg-config, which SwiftPM
# uses to find Lua.
set -euo pipefail
missing=()
dpkg -s liblua5.4-dev >/dev/null 2>&1 || missing+=(liblua5.4-dev)
dpkg -s lua5.4 >/dev/null 2>&1 || missing+=(lua5.4)
dpkg -s lua-busted >/dev/null 2>&1 || missing+=(lua-busted)
dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "tools/bootstrap.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "tools/bootstrap.sh: swift is not on PATH (Swift 6 toolchain required)" >&2; exit 1; }
