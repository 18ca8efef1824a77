#!/usr/bin/env bash
# Alternates redis-time.sh over two or more server binaries, PAIRS times, and prints per burst the
# webhook p99 and EVALSHA's total time in Redis (µs per admission). Usage: compare.sh PAIRS BIN...
cd "$(dirname "$0")"
pairs=$1; shift
for r in $(seq "$pairs"); do
  for b in "$@"; do
    ./redis-time.sh "$b" 4 | awk -v b="$(basename "$b")" '
      /^webhook latency/ { p99 = $7 }
      /cmdstat_evalsha/ { split($0, a, "usec="); split(a[2], u, ","); split($0, c, "calls="); split(c[2], n, ",");
                          printf "%s p99 %s ms  evalsha %d calls, %.2f µs per admission\n", b, p99, n[1], u[1] / 500 }'
  done
done
