#!/usr/bin/env bash
# record-linux-trace.sh — record a real Linux page-table/TLB event trace of one
# command's whole process tree, in the raw tracefs text format that ShadowSim's
# trace replay reads.
#
# Usage: tools/record-linux-trace.sh [-o FILE.gz] [--extra-events LIST] [--keep-text] -- COMMAND [ARGS...]
#
# See usage() below and traces/README.md / traces/formats/FORMATS.md.
set -euo pipefail

PROG=${0##*/}
TRACEFS=/sys/kernel/tracing
BUFFER_KB=${SHADOWSIM_TRACE_BUFFER_KB:-65536}   # 64 MiB per CPU (env override for tests)

# The default event list; --extra-events appends to it.
EVENTS=(
  sched:sched_switch
  sched:sched_process_fork
  sched:sched_process_exec
  sched:sched_process_exit
  sched:sched_migrate_task
  task:task_newtask
  exceptions:page_fault_user
  exceptions:page_fault_kernel
  tlb:tlb_flush
)
for sc in mmap munmap mprotect mremap brk madvise; do
  EVENTS+=("syscalls:sys_enter_$sc" "syscalls:sys_exit_$sc")
done

usage() {
  cat <<EOF
Usage: $PROG [-o FILE.gz] [--extra-events GROUP:EVENT[,GROUP:EVENT...]] [--plain] [--dat FILE.dat] -- COMMAND [ARGS...]

Runs COMMAND (with its whole process tree followed via set_event_pid and
options/event-fork) under tracefs, with these events enabled:
$(echo "${EVENTS[*]}" | fold -s -w 74 | sed 's/^/  /')
and writes the raw tracefs 'trace' text, preceded by one header line
  # shadowsim-trace kernel=... cpus=... page_size=... date=... command=...
to FILE.gz (default: trace.txt.gz), gzip-compressed.

Options:
  -o, --output FILE   output file (default trace.txt.gz). With --plain it is
                      written uncompressed.
  --extra-events LIST comma-separated extra events, e.g.
                      syscalls:sys_enter_openat,syscalls:sys_exit_openat
  --plain             write plain text instead of gzip
  --dat FILE.dat      also save the same ring buffer with 'trace-cmd extract'
                      (binary; print it with 'trace-cmd report -i FILE.dat')
  -h, --help          show this help

Environment: SHADOWSIM_TRACE_BUFFER_KB overrides the per-CPU ring buffer size
(default 65536 KiB), e.g. to provoke lost events in tests.

Needs root (tracefs). Every tracing setting the script touches is restored
afterwards (also on error or Ctrl-C); the trace ring buffer is cleared.
EOF
}

die_usage() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }

OUT=trace.txt.gz
PLAIN=0
DAT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -o|--output)
      [[ $# -ge 2 && -n $2 ]] || die_usage "option $1 needs a file name"
      OUT=$2; shift 2 ;;
    --extra-events)
      [[ $# -ge 2 && -n $2 ]] || die_usage "option $1 needs an event list"
      IFS=',' read -r -a extra <<<"$2"
      for e in "${extra[@]}"; do
        e=${e//\//:}
        [[ $e =~ ^[A-Za-z0-9_]+:[A-Za-z0-9_]+$ ]] || die_usage "bad event name '$e' (want GROUP:EVENT)"
        EVENTS+=("$e")
      done
      shift 2 ;;
    --plain) PLAIN=1; shift ;;
    --dat)
      [[ $# -ge 2 && -n $2 ]] || die_usage "option $1 needs a file name"
      DAT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) die_usage "missing '--' before the command '$1'" ;;
  esac
done
[[ $# -ge 1 ]] || die_usage "no command given (put it after '--')"

if [[ -n $DAT ]] && ! command -v trace-cmd >/dev/null; then
  echo "$PROG: --dat needs trace-cmd (Debian: apt-get install trace-cmd)" >&2
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "$PROG: sorry, recording kernel tracepoints needs root (tracefs is root-only)." >&2
  echo "$PROG: please re-run with sudo: sudo $0 ..." >&2
  exit 1
fi

# Build the header now (before anything is changed).
CMDLINE=$(printf '%q ' "$@"); CMDLINE=${CMDLINE% }
HEADER="# shadowsim-trace kernel=$(uname -r) cpus=$(nproc) page_size=$(getconf PAGESIZE) date=$(date -u +%Y-%m-%dT%H:%M:%SZ) command=$CMDLINE"

# ---------------------------------------------------------------- tracefs ---
MOUNTED_BY_US=0
if [[ ! -e $TRACEFS/trace ]]; then
  mount -t tracefs nodev "$TRACEFS" || { echo "$PROG: cannot mount tracefs at $TRACEFS" >&2; exit 1; }
  MOUNTED_BY_US=1
fi

for e in "${EVENTS[@]}"; do
  f=$TRACEFS/events/${e%%:*}/${e#*:}/enable
  if [[ ! -w $f ]]; then
    echo "$PROG: event $e is not available on this kernel ($f missing)" >&2
    [[ $MOUNTED_BY_US -eq 1 ]] && umount "$TRACEFS" 2>/dev/null || true
    exit 1
  fi
done

# ---------------------------------------------------------- save state ---
declare -A SAVED_ENABLE=()
SAVED_TRACING_ON=$(<"$TRACEFS/tracing_on")
SAVED_TRACER=$(<"$TRACEFS/current_tracer")
# buffer_size_kb reads e.g. "1408" or, before first use, "7 (expanded: 1408)".
# Restoring the expanded size gives back the size the buffer would have had.
bs=$(<"$TRACEFS/buffer_size_kb")
if [[ $bs =~ expanded:\ ([0-9]+) ]]; then SAVED_BUFFER_KB=${BASH_REMATCH[1]}
elif [[ $bs =~ ^([0-9]+)$ ]]; then SAVED_BUFFER_KB=$bs
else SAVED_BUFFER_KB=""   # per-CPU sizes differ ("X"): leave as we found... best effort
fi
SAVED_EVENT_PID=$(tr '\n' ' ' <"$TRACEFS/set_event_pid")
SAVED_EVENT_FORK=$(<"$TRACEFS/options/event-fork")
for e in "${EVENTS[@]}"; do
  v=$(<"$TRACEFS/events/${e%%:*}/${e#*:}/enable")
  SAVED_ENABLE[$e]=${v:0:1}
done
if [[ -n $(tr -d ' \n' <"$TRACEFS/set_event_notrace_pid" 2>/dev/null) ]]; then
  echo "$PROG: warning: set_event_notrace_pid is not empty; those pids stay untraced" >&2
fi

RESTORED=0
restore() {
  [[ $RESTORED -eq 1 ]] && return 0
  RESTORED=1
  set +e
  echo 0 >"$TRACEFS/tracing_on"
  for e in "${!SAVED_ENABLE[@]}"; do
    echo "${SAVED_ENABLE[$e]}" >"$TRACEFS/events/${e%%:*}/${e#*:}/enable"
  done
  echo "$SAVED_EVENT_FORK" >"$TRACEFS/options/event-fork"
  # Opening with O_TRUNC (">") clears the pid list; then re-add the saved pids.
  if [[ -n ${SAVED_EVENT_PID// /} ]]; then
    echo "$SAVED_EVENT_PID" >"$TRACEFS/set_event_pid" 2>/dev/null ||
      { : >"$TRACEFS/set_event_pid"
        for p in $SAVED_EVENT_PID; do echo "$p" >>"$TRACEFS/set_event_pid" 2>/dev/null; done; }
  else
    : >"$TRACEFS/set_event_pid"
  fi
  echo "$SAVED_TRACER" >"$TRACEFS/current_tracer"
  : >"$TRACEFS/trace"                      # don't leave our events behind
  [[ -n $SAVED_BUFFER_KB ]] && echo "$SAVED_BUFFER_KB" >"$TRACEFS/buffer_size_kb"
  echo "$SAVED_TRACING_ON" >"$TRACEFS/tracing_on"
  if [[ $MOUNTED_BY_US -eq 1 ]]; then umount "$TRACEFS" 2>/dev/null; fi
  set -e
}

on_signal() {
  local sig=$1
  echo "$PROG: interrupted (SIG$sig); restoring tracing state, no trace written" >&2
  restore
  trap - "$sig"
  kill -s "$sig" $$
}
trap restore EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# ---------------------------------------------------------- set up ---
echo 0 >"$TRACEFS/tracing_on"
echo nop >"$TRACEFS/current_tracer"
: >"$TRACEFS/set_event_pid"
echo 0 >"$TRACEFS/options/event-fork"
echo "$BUFFER_KB" >"$TRACEFS/buffer_size_kb"
for e in "${EVENTS[@]}"; do
  echo 1 >"$TRACEFS/events/${e%%:*}/${e#*:}/enable"
done
: >"$TRACEFS/trace"                        # clear the ring buffer

# ---------------------------------------------------------- run ---
# The child shell puts its own pid in set_event_pid (event-fork then adds every
# descendant on fork), switches tracing on and execs the command, so the trace
# starts at the exec of COMMAND.
# It runs in the foreground so that Ctrl-C reaches the command as usual; the
# INT trap then restores the tracing state.
set +e
(
  echo "$BASHPID" >"$TRACEFS/set_event_pid"
  echo 1 >"$TRACEFS/options/event-fork"
  echo 1 >"$TRACEFS/tracing_on"
  exec "$@"
)
STATUS=$?
set -e
echo 0 >"$TRACEFS/tracing_on"

# ---------------------------------------------------------- save trace ---
TMP=$(mktemp "${TMPDIR:-/tmp}/shadowsim-trace.XXXXXX")
trap 'rm -f "$TMP"; restore' EXIT
{ echo "$HEADER"; cat "$TRACEFS/trace"; } >"$TMP"

# trace-cmd extract reads the per-CPU raw buffers (consuming), so it runs
# after the text 'trace' file has been read.
if [[ -n $DAT ]]; then
  trace-cmd extract -o "$DAT" >/dev/null 2>&1 ||
    echo "$PROG: warning: 'trace-cmd extract -o $DAT' failed" >&2
fi

if [[ $PLAIN -eq 1 ]]; then
  cat "$TMP" >"$OUT"
else
  gzip -c -9 "$TMP" >"$OUT"
fi

# ---------------------------------------------------------- report ---
stats=$(awk '
  /^#/ {
    if (match($0, /entries-in-buffer\/entries-written: [0-9]+\/[0-9]+/)) {
      split(substr($0, RSTART + 35, RLENGTH - 35), a, "/"); inbuf = a[1]; written = a[2]
    }
    next
  }
  /LOST [0-9]+ EVENTS/ { lost++ ; next }
  match($0, /[0-9]+\.[0-9]+: [A-Za-z0-9_]+(:|\(| ->)/) {
    s = substr($0, RSTART, RLENGTH); sub(/^[0-9.]+: /, "", s)
    if (s ~ /\($/)        { sub(/\($/, "", s); sub(/^sys_/, "sys_enter_", s) }
    else if (s ~ / ->$/)  { sub(/ ->$/, "", s); sub(/^sys_/, "sys_exit_", s) }
    else                  { sub(/:$/, "", s) }
    n[s]++; total++
  }
  END {
    printf "TOTAL %d %s %s %d\n", total, (inbuf == "" ? -1 : inbuf), (written == "" ? -1 : written), lost
    for (k in n) printf "%s %d\n", k, n[k]
  }' "$TMP")
read -r _ total inbuf written lost <<<"$(head -n1 <<<"$stats")"

echo "$PROG: command exited with status $STATUS" >&2
echo "$PROG: recorded $total events (entries-in-buffer/entries-written: $inbuf/$written) -> $OUT ($(stat -c %s "$OUT") bytes)" >&2
tail -n +2 <<<"$stats" | sort -k2,2nr | awk '{ printf "  %-28s %10d\n", $1, $2 }' >&2
if [[ $written -gt $inbuf ]]; then
  echo "$PROG: WARNING: $((written - inbuf)) events were lost (ring buffer overwritten); use a shorter run" >&2
fi
if [[ $lost -gt 0 ]]; then
  echo "$PROG: WARNING: the trace has $lost 'LOST n EVENTS' markers" >&2
fi
rm -f "$TMP"
exit "$STATUS"
