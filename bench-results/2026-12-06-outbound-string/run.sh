#!/usr/bin/env bash
# As run: the binaries were copies under /work/prof/bins (main-0a53b13 = the release build of
# 0a53b13, string = the same with outbound-string.patch); the loop ran 1-4, then 5-8 in the
# order below.
out="$(cd "$(dirname "$0")" && pwd)/bench"
cd "$(dirname "$0")/../.."
for r in 5 6 7 8; do
  for b in string main-0a53b13; do
    bin=/work/prof/bins/$b; [ -d $bin ] && bin=$bin/prosaas-calls
    echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) $b run $r" >> $out/log.txt
    scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --pin --server-bin $bin --out $out/echo1000-pin-$r-$b.md > $out/echo1000-pin-$r-$b.log 2>&1
  done
done
echo "$(date -u +%T) done" >> $out/log.txt
