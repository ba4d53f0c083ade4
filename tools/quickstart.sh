#!/usr/bin/env bash
# Builds ShadowSim and runs the quickstart scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
swift build -c release --product shadowsim >&2
exec .build/release/shadowsim run examples/quickstart.lua "$@"
