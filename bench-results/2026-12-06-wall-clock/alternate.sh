#!/usr/bin/env bash
# usage: alternate.sh OUTDIR KIND ROUNDS BUILD=BIN [BUILD=BIN...]; KIND: burst | echo | silent
out=$1; kind=$2; rounds=$3; shift 3
mkdir -p "$out"
cd /work/main
for r in $(seq 1 "$rounds"); do
  for pair in "$@"; do
    name=${pair%%=*}; bin=${pair#*=}
    echo "== $r $name $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/log.txt"
    case "$kind" in
      burst) args=(--echo-levels " " --silent-levels " " --burst-rounds 3) ;;
      echo) args=(--echo-levels "${LEVEL:-1000}" --silent-levels " " --burst 0) ;;
      silent) args=(--echo-levels " " --silent-levels 2000 --burst 0) ;;
    esac
    scripts/bench --no-build "${args[@]}" --no-admission --server-bin "$bin" --out "$out/$kind-$r-$name.md" >/dev/null 2>>"$out/log.txt" || echo "   (exit $?)" | tee -a "$out/log.txt"
  done
done
