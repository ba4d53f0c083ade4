#!/usr/bin/env bash
# The DocC documentation of the core library's modules (X86, GuestKernel, ShadowMMU —
# with the article on writing a policy plugin — Checker, LinuxTrace and LinuxReplay). Fails on any DocC
# warning, so the documentation cannot rot. Archives land in
# Packages/ShadowSimCore/.build/plugins/Swift-DocC/outputs/.
set -euo pipefail
cd "$(dirname "$0")/../Packages/ShadowSimCore"
for target in X86 GuestKernel ShadowMMU Checker LinuxTrace LinuxReplay; do
  log=$(mktemp)
  swift package generate-documentation --target "$target" >"$log" 2>&1 || { cat "$log"; exit 1; }
  if grep -q "warning:" "$log"; then grep -A4 "warning:" "$log"; echo "tools/docs.sh: DocC warnings in $target" >&2; exit 1; fi
  echo "$target: $(tail -1 "$log" | sed 's/^ *//')"
  rm -f "$log"
done
