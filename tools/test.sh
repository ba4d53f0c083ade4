#!/usr/bin/env bash
# The whole test suite: Swift unit tests, every Lua scenario in scripts/ and examples/
# (run by the ScenarioTests target), the reference walker's own self-test, the Lua C
# module's busted specs, the DocC build, the shipped Linux traces replayed whole under
# every policy (release build, checker on, held to agreement floors), and a bounded
# fuzzing pass of the shadow MMU (tools/fuzz.sh --ci).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
echo "== reference walker self-test (lua5.4)"
lua5.4 scripts/lib/x86_ref_selftest.lua
echo "== swift test"
swift build --build-tests
swift test --skip-build "$@"
echo "== the Lua C module under lua5.4 (busted specs)"
LUA_CPATH="$(tools/lua-module.sh)/?.so;;" busted --lua=lua5.4 Tests/busted
echo "== DocC documentation of the core (no warnings allowed)"
tools/docs.sh
echo "== the shipped traces replayed whole under every policy, checker on (release build)"
swift build -c release --product shadowsim
.build/release/shadowsim replay traces/*.txt.gz --min-fault-agreement 99 --min-flush-agreement 85 --format markdown \
  -o .build/trace-replays.md
echo "agreement floors met (the tables: .build/trace-replays.md)"
echo "== fuzzing (libFuzzer): a fixed-seed pass under every policy held to coverage floors, then every planted bug caught by fuzzing alone"
tools/fuzz.sh --ci
