#!/usr/bin/env bash
# The benchmark suite (issue 5), in a release build: a table on stdout, and JSON with
# --json FILE. Any `shadowsim bench` option may follow (--filter TEXT, --repetitions N).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
swift build -c release --product shadowsim
.build/release/shadowsim bench "$@"
