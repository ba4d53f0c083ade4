#!/usr/bin/env bash
# Fuzzes the shadow MMU with libFuzzer: bytes become a guest's operations on its page
# tables (Sources/Harnesses/ShadowSimFuzzKit), run under every policy with the architectural
# checker on. A checker violation, a broken MMU invariant or a trap is a crash;
# libFuzzer saves the input under .build-fuzz/findings/. At exit the run prints the
# sync coverage per policy (unsync events, pages synced, INVLPG resyncs, ...).
#
#   tools/fuzz.sh              # 60 seconds
#   tools/fuzz.sh 3600 -jobs=2 # an hour, two processes; any libFuzzer flag may follow
#   tools/fuzz.sh --ci         # what the test suite runs:
#                              #  0. a short libFuzzer run over the corpus (it still works);
#                              #  1. a clean pass: CLEAN_RUNS generated inputs (seed 1,
#                              #     the same on every machine), no finding allowed, the
#                              #     sync coverage held to tools/fuzz-floors.txt;
#                              #  2. the catch table: every bug of `shadowsim bugs`
#                              #     planted in turn, generated inputs until a finding
#                              #     (at most CATCH_RUNS each); the input that caught
#                              #     each is kept in .build-fuzz/catches/.
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
fuzzer=.build-fuzz/release/shadowsim-fuzz
mkdir -p .build-fuzz/corpus .build-fuzz/findings
# The Swift runtime's backtracer must not take SIGABRT from libFuzzer's crash handler.
export SWIFT_BACKTRACE=enable=no

if ! $ci; then
  exec "$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=30 -print_final_stats=1 \
    -artifact_prefix=.build-fuzz/findings/ "$@" .build-fuzz/corpus Tests/FuzzCorpus
fi

CLEAN_RUNS=${CLEAN_RUNS:-500}
CATCH_RUNS=${CATCH_RUNS:-500}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Generated inputs, not libFuzzer's mutations: libFuzzer's order depends on the order
# the file system lists its corpus, so the same seed ran different inputs on two
# clones. `--generate N --seed S` is the same N inputs everywhere.
echo "== libFuzzer smoke run: the repository corpus, 200 mutations"
"$fuzzer" -seed=1 -runs=200 -max_len=4096 -timeout=60 -artifact_prefix=.build-fuzz/findings/ \
  "$@" "$work" Tests/FuzzCorpus >"$work/smoke.log" 2>&1 \
  || { tail -n 40 "$work/smoke.log"; echo "fuzz.sh: the libFuzzer smoke run failed" >&2; exit 1; }

echo "== clean pass: $CLEAN_RUNS generated inputs (seed 1), every policy, coverage floors from tools/fuzz-floors.txt"
SHADOWSIM_FUZZ_FLOORS=tools/fuzz-floors.txt "$fuzzer" --generate "$CLEAN_RUNS" --seed 1 \
  || { echo "fuzz.sh: the clean pass failed (a finding, or a coverage floor missed)" >&2; exit 1; }

echo "== catch table: each planted bug, fuzzing alone (generated inputs, seed 1, at most $CATCH_RUNS)"
printf '%-38s %-12s %7s  %s\n' "planted bug" "policy" "inputs" "caught by"
missed=0
while read -r bug policies; do
  rm -rf .build-fuzz/findings/generated-*
  status=0
  # The group's redirection also takes bash's own "Aborted" notice for the expected crash.
  { "$fuzzer" --inject-bug "$bug" --generate "$CATCH_RUNS" --seed 1; } >"$work/catch.log" 2>&1 || status=$?
  finding=$(grep -m1 '^shadowsim-fuzz: finding in' "$work/catch.log" || true)
  if [ "$status" -eq 0 ] || [ -z "$finding" ]; then
    printf '%-38s %-12s %7s  %s\n' "$bug" "${policies%%,*}" "-" "NOT CAUGHT ($policies)"
    missed=$((missed + 1))
    continue
  fi
  mkdir -p .build-fuzz/catches
  mv .build-fuzz/findings/generated-* ".build-fuzz/catches/$bug" 2>/dev/null || true
  policy=$(sed -E 's/.*: policy ([^,]+), operation.*/\1/' <<<"$finding")
  inputs=$(sed -E 's/.*finding in input ([0-9]+) of seed.*/\1/' <<<"$finding")
  how="access check"
  case "$finding" in *"invariant broken"*|*"at the end"*) how="MMU invariant" ;; *"disagrees"*) how="verification mismatch" ;; esac
  printf '%-38s %-12s %7s  %s\n' "$bug" "$policy" "$((inputs + 1))" "$how"
done < <("$fuzzer" --list-bugs)
if [ "$missed" -gt 0 ]; then
  echo "fuzz.sh: $missed planted bug(s) not caught by the fuzzer within $CATCH_RUNS inputs" >&2
  exit 1
fi
