#!/usr/bin/env bash
# Pinned media runs of the current build (main), one scripts/bench per level, in sequence.
cd /work/main
out=/work/prof/pin
for r in 1 2 3 4; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) echo1000 pin run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --pin --out $out/echo1000-pin-$r.md > $out/echo1000-pin-$r.log 2>&1
done
for r in 1 2; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) silent2000 pin run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels " " --silent-levels 2000 --burst 0 --no-admission --pin --out $out/silent2000-pin-$r.md > $out/silent2000-pin-$r.log 2>&1
done
echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) echo2000 pin" >> $out/log.txt
scripts/bench --no-build --echo-levels 2000 --silent-levels " " --burst 0 --no-admission --pin --out $out/echo2000-pin-1.md > $out/echo2000-pin-1.log 2>&1
for r in 1 2; do
  echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) echo1000 unpinned run $r" >> $out/log.txt
  scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --out $out/echo1000-$r.md > $out/echo1000-$r.log 2>&1
done
echo "$(date -u +%T) done" >> $out/log.txt
