#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
out="$(dirname "$0")/bench"
for r in 5 6 7 8; do
  for b in string main-0a53b13; do
    bin=/work/prof/bins/$b; [ -d $bin ] && bin=$bin/prosaas-calls
    echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) $b run $r" >> $out/log.txt
    scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --pin --server-bin $bin --out $out/echo1000-pin-$r-$b.md > $out/echo1000-pin-$r-$b.log 2>&1
  done
done
echo "$(date -u +%T) done" >> $out/log.txt
