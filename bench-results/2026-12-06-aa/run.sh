#!/usr/bin/env bash
# A/A against A/B: the floor against itself (scripts/bench --floor-vs-floor), alternating with the
# server against the floor, same build, same options, nothing else running. Release binaries
# must be built (scripts/bench --no-build). Usage: run.sh OUT_DIR ECHO_PAIRS BURST_PAIRS
cd "$(dirname "$0")/../.."
out=${1:?out dir}; echo_pairs=${2:-8}; burst_pairs=${3:-4}
mkdir -p "$out"
stamp() { echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) $*" >> "$out/log.txt"; }
for r in $(seq "$echo_pairs"); do
  for kind in aa ab; do
    flag=""; [[ $kind == aa ]] && flag=--floor-vs-floor
    stamp "echo1000 pin $kind $r"
    scripts/bench --no-build --echo-levels 1000 --silent-levels " " --burst 0 --no-admission --pin $flag \
      --out "$out/echo1000-pin-$kind-$r.md" > "$out/echo1000-pin-$kind-$r.log" 2>&1 || stamp "FAILED echo $kind $r"
  done
done
for r in $(seq "$burst_pairs"); do
  for pin in "" --pin; do
    for kind in aa ab; do
      flag=""; [[ $kind == aa ]] && flag=--floor-vs-floor
      name="burst${pin:+-pin}-$kind-$r"
      stamp "$name"
      scripts/bench --no-build --echo-levels " " --silent-levels " " --burst-rounds 3 --no-admission $pin $flag \
        --out "$out/$name.md" > "$out/$name.log" 2>&1 || stamp "FAILED $name"
    done
  done
done
stamp done
