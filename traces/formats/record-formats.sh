#!/usr/bin/env bash
# record-formats.sh — record the tiny workload (../src/tiny.c) in the three text
# formats that ShadowSim's trace replay must parse:
#   tiny.tracefs.txt    raw tracefs 'trace' text (tools/record-linux-trace.sh --plain)
#   tiny.trace-cmd.txt  'trace-cmd report' of the SAME ring buffer (trace-cmd extract)
#   tiny.perf.txt       'perf script' of a separate 'perf record -- ./tiny' run
# Needs root, gcc, trace-cmd (apt-get install trace-cmd) and perf.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "record-formats.sh: needs root" >&2; exit 1; }
command -v trace-cmd >/dev/null || { echo "record-formats.sh: needs trace-cmd" >&2; exit 1; }
command -v perf >/dev/null || { echo "record-formats.sh: needs perf" >&2; exit 1; }

make -s -C "$root/traces/src" tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root/traces/src"

# 1 + 2: one run, read as tracefs text and extracted for trace-cmd.
"$root/tools/record-linux-trace.sh" --plain -o "$here/tiny.tracefs.txt" --dat "$tmp/tiny.dat" -- ./tiny
trace-cmd report -i "$tmp/tiny.dat" >"$here/tiny.trace-cmd.txt"

# 3: perf, same event list (perf follows the command's children by itself).
ev=()
for e in sched:sched_switch sched:sched_process_fork sched:sched_process_exec \
         sched:sched_process_exit sched:sched_migrate_task task:task_newtask \
         exceptions:page_fault_user exceptions:page_fault_kernel tlb:tlb_flush; do
  ev+=(-e "$e")
done
for sc in mmap munmap mprotect mremap brk madvise; do
  ev+=(-e "syscalls:sys_enter_$sc" -e "syscalls:sys_exit_$sc")
done
perf record -q -o "$tmp/perf.data" "${ev[@]}" -- ./tiny
perf script -i "$tmp/perf.data" >"$here/tiny.perf.txt"
ls -l "$here"/tiny.*.txt
