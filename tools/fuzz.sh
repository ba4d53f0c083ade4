#!/usr/bin/env bash
# Fuzzes the shadow MMU with libFuzzer: bytes become operation sequences on several
# VMs and vCPUs, run under every policy with the architectural checker on (see
# Sources/ShadowSimFuzzKit). A checker violation, a broken MMU invariant or a trap is a
# crash; libFuzzer saves the input under .build-fuzz/findings/.
#
#   tools/fuzz.sh              # 60 seconds
#   tools/fuzz.sh 3600 -jobs=2 # an hour, two processes; any libFuzzer flag may follow
#   tools/fuzz.sh --ci         # what the test suite runs: a fixed seed and a fixed
#                              # number of inputs (at most 60 s), from the repository
#                              # corpus only, so the same inputs run everywhere
#
# Tests/FuzzCorpus seeds every run and is never written; new inputs go to
# .build-fuzz/corpus, which persists between runs. Replay a finding with
#   swift run shadowsim-fuzz --trace .build-fuzz/findings/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
ci=false
if [ "${1:-}" = "--ci" ]; then ci=true; shift; fi
seconds=60
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
swift build -c release --product shadowsim-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer -Xswiftc -DSHADOWSIM_LIBFUZZER -Xswiftc -parse-as-library
mkdir -p .build-fuzz/corpus .build-fuzz/findings
corpus=.build-fuzz/corpus
extra=()
if $ci; then
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  extra=(-seed=1 -runs=2000)
fi
# The Swift runtime's backtracer must not take SIGABRT from libFuzzer's crash handler.
SWIFT_BACKTRACE=enable=no .build-fuzz/release/shadowsim-fuzz -max_total_time="$seconds" -max_len=4096 \
  -timeout=30 -print_final_stats=1 -artifact_prefix=.build-fuzz/findings/ "${extra[@]}" "$@" \
  "$corpus" Tests/FuzzCorpus
