#!/usr/bin/env bash
# usage: run.sh BIN OUT [args]
bin=$1; out=$2; shift 2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=()
case "$(basename "$bin")" in bare*) args=("127.0.0.1:$port") ;; esac
LISTEN_ADDR="127.0.0.1:$port" MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=1000 RUST_LOG=warn \
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "${args[@]}" >/work/prof/server.log 2>&1 &
pid=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
/work/main/target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --calls 5 --duration ${DUR:-10} --expect-echo --progress 0 --max-loss-percent 100 --json > /work/prof/sim.json 2>/dev/null
kill -TERM $pid; wait $pid
python3 -c 'import json; print(json.load(open("/work/prof/sim.json"))["frames"]["echoed"])'
