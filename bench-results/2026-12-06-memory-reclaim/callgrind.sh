#!/usr/bin/env bash
# Instructions per in-process admit + release with LIVE calls held (default "10000 50000"):
# callgrind totals of two runs of the memory_admission bench binary (100 and 1,100 pairs, one
# round), difference / 1,000, so holding the calls and start-up cancel out. The bench's own
# per-call set-up (the SID's formatting, a reserved CallState with its timestamp) stays in.
#
#   bench-results/2026-12-06-memory-reclaim/callgrind.sh target/release/deps/memory_admission-HASH
set -euo pipefail
bin="$1"
for live in ${LIVE:-10000 50000}; do
  declare -A ir
  for n in 100 1100; do
    out=$(mktemp /tmp/memory-admission-cg.XXXXXX)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --live "$live" --admissions "$n" --rounds 1 >/dev/null 2>"$out.log"
    ir[$n]=$(grep -m1 '^summary:' "$out" | awk '{print $2}')
    rm -f "$out" "$out.log"
  done
  echo "live $live: $(( (ir[1100] - ir[100]) / 1000 )) instructions per admit+release (totals ${ir[100]} / ${ir[1100]})"
done
