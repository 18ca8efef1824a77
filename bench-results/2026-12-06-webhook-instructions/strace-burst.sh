#!/usr/bin/env bash
# usage: strace-burst.sh BIN OUT [BURSTS]: strace -f -c of BIN over BURSTS bursts of 200 webhooks
bin=$1; out=$2; n=${3:-2}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=(); case "$(basename "$bin")" in bare*) args=("127.0.0.1:$port") ;; esac
LISTEN_ADDR="127.0.0.1:$port" MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=100000 RUST_LOG=info \
  strace -f -c -o "$out" "$bin" "${args[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 1 $n); do /work/prof/bins/sim --target "http://127.0.0.1:$port" --burst 200 --json >/dev/null 2>&1; done
sleep 0.5
# The traced server, by PID (strace's child); SIGKILL: its drain would wait for the reserved calls.
kill -KILL "$(pgrep -P $pid)"; wait $pid 2>/dev/null
head -20 "$out"
