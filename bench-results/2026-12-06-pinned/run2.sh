#!/usr/bin/env bash
cd /work/main
out=/work/prof/pin
for r in 5 6 7 8 9 10; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) echo1000 pin run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --pin --out $out/echo1000-pin-$r.md > $out/echo1000-pin-$r.log 2>&1
done
for r in 3 4; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) echo1000 unpinned run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --out $out/echo1000-$r.md > $out/echo1000-$r.log 2>&1
done
for r in 1 2; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) burst run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels " " --silent-levels " " --burst-rounds 3 --no-admission --out $out/burst-$r-main.md > $out/burst-$r.log 2>&1
  scripts/bench --no-build --echo-levels " " --silent-levels " " --burst-rounds 3 --no-admission --pin --out $out/burst-$r-main-pin.md > $out/burst-$r-pin.log 2>&1
done
echo "$(date -u +%T) done2" >> $out/log.txt
