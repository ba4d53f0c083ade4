#!/usr/bin/env bash
# Instructions per operation of the benchmarks, counted by callgrind: stable where this
# machine's wall-clock timings are not. Only the measured work of each benchmark counts
# (its `measuredWork` calls: the warm-up and one repetition); start-up and setup do not.
#
#   tools/bench-instructions.sh                 the rows with a target, and INVLPG
#   tools/bench-instructions.sh "TEXT" ...      the benchmarks whose names contain TEXT
#
# The fork/exec rows run 20 000 operations (SHADOWSIM_BENCH_OPS) instead of 10^6.
# Prints one line per benchmark: instructions per operation, then its name.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq valgrind >/dev/null; else echo "valgrind is missing" >&2; exit 2; fi
fi
if ! command -v jq >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq jq >/dev/null; else echo "jq is missing" >&2; exit 2; fi
fi
tools/bootstrap.sh
swift build -c release --product shadowsim >&2

if [ $# -eq 0 ]; then
    set -- "tlb-hit load, Swift" "tlb-hit store, Swift" "tlb-miss + shadow walk" \
        "first-touch shadow fault" "page-table store" \
        "CR3 load, 1 unsync tables × 512 entries, reachable" "CR3 load, 16 unsync tables × 512 entries, reachable" \
        "INVLPG on a" "fork/exec + switch, 20k ops" "tlb-hit load, Lua vcpu:read"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Valgrind cannot read the release build's debug information: a stripped copy.
mkdir "$work/bin"
cp .build/release/shadowsim .build/release/libShadowSimCore.so "$work/bin/"
objcopy --strip-debug "$work/bin/shadowsim"
objcopy --strip-debug "$work/bin/libShadowSimCore.so"
for filter in "$@"; do
    # The rows the filter names and their operations, from a plain (fast) run; then each
    # row alone under callgrind, so every count is one benchmark's.
    SHADOWSIM_BENCH_OPS=20000 "$work/bin/shadowsim" bench --filter "$filter" --repetitions 1 --json "$work/bench.json" \
        >/dev/null 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
    jq -r '.results[] | select((.name | startswith("ratio") or startswith("bytes")) | not) | [.name, .operations] | @tsv' \
        "$work/bench.json" > "$work/rows"
    while IFS=$'\t' read -r name operations; do
        out="$work/cg.out"
        SHADOWSIM_BENCH_OPS=20000 valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*measuredWork*' \
            "$work/bin/shadowsim" bench --filter "$name" --repetitions 1 >/dev/null 2>"$work/log" \
            || { cat "$work/log" >&2; exit 1; }
        total=$(grep -m1 '^summary:' "$out" | awk '{print $2}')
        # measuredWork ran twice (warm-up, one repetition), or four times for the Lua rows
        # (a run and an empty run each time, the empty one being start-up only).
        awk -v t="$total" -v n="$operations" -v name="$name" 'BEGIN { printf "%12.0f  %s\n", t / (2 * n), name }'
    done < "$work/rows"
done
