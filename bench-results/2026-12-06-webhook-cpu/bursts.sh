#!/usr/bin/env bash
# scripts/bench's 500-webhook bursts (3 rounds, each cold then warm, against the floor in the same
# round), for several server binaries, alternating, unpinned then pinned, ROUNDS times. Reports go
# to OUT/burst[-pin]-KIND-N.md; summarise with ../2026-12-06-aa/summarise.py OUT.
# KIND=floor runs the floor in the server's place (--floor-vs-floor, an A/A run).
# Usage: bursts.sh OUT ROUNDS KIND=BINARY...
cd "$(dirname "$0")/../.."
out=${1:?out dir}; rounds=${2:?rounds}; shift 2
mkdir -p "$out"
stamp() { echo "$(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg) $*" >> "$out/log.txt"; }
for r in $(seq "$rounds"); do
  for pin in "" --pin; do
    for spec in "$@"; do
      kind=${spec%%=*}; bin=${spec#*=}
      name="burst${pin:+-pin}-$kind-$r"
      stamp "$name $bin"
      which=(--server-bin "$bin"); [[ $bin == floor ]] && which=(--floor-vs-floor)
      scripts/bench --no-build --echo-levels " " --silent-levels " " --burst-rounds 3 --no-admission $pin \
        "${which[@]}" --out "$out/$name.md" > "$out/$name.log" 2>&1 || stamp "FAILED $name"
    done
  done
done
stamp done
