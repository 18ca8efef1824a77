#!/usr/bin/env bash
# System calls per webhook (`strace -f -c` on the process) over BURSTS bursts of 500, after one
# burst to warm it: each server binary with the Redis store (a fresh redis-server on a unix
# socket), then the floor. Unpinned, or with --pin on CPU 0 (one I/O thread).
# Usage: syscalls.sh [--pin] BURSTS SERVER_BIN...
cd "$(dirname "$0")/../.."
source scripts/lib/ports.sh
pre=(); [ "$1" = --pin ] && { pre=(taskset -c 0); shift; }
bursts=$1; shift
sock=/tmp/syscalls-$$.sock
redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -f $sock /tmp/syscalls-$$.txt' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
count() {
  local bin=$1 port spid stp; port=$(free_port)
  redis-cli -s "$sock" flushall >/dev/null
  if [[ $bin == *bare_webhook* ]]; then
    "${pre[@]}" "$bin" "127.0.0.1:$port" >/dev/null 2>&1 & spid=$!
  else
    REDIS_URL="redis+unix://$sock" PUBLIC_URL=https://calls.example.com MAX_CONCURRENT_CALLS=100000 MEDIA_HANDLER=echo \
      LISTEN_ADDR=127.0.0.1:$port RUST_LOG=info "${pre[@]}" "$bin" >/dev/null 2>&1 & spid=$!
  fi
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 >/dev/null
  strace -c -f -p "$spid" -o /tmp/syscalls-$$.txt & stp=$!
  sleep 1
  for _ in $(seq "$bursts"); do target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 >/dev/null; done
  sleep 0.5
  kill -INT "$stp"; wait "$stp" 2>/dev/null
  kill "$spid"; wait "$spid" 2>/dev/null
  echo "== $bin: $(awk -v n=$((500 * bursts)) '$NF == "total" {printf "%.1f", $4 / n}' /tmp/syscalls-$$.txt) per webhook"
  awk -v n=$((500 * bursts)) '$1 ~ /^[0-9.]+$/ && NF >= 5 {printf "  %-14s %6.2f\n", $NF, $4 / n}' /tmp/syscalls-$$.txt
}
echo "# syscalls.sh ${pre:+--pin }$bursts $*  ($(date -u +%FT%TZ))"
for bin in "$@"; do count "$bin"; done
