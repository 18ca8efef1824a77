#!/usr/bin/env bash
# CPU time per webhook of several server variants, alternating, in 500-webhook bursts: each
# variant pinned to CPU 0 with the Redis store (a fresh redis-server and the simulator on CPU 1),
# its log to a file as scripts/bench does, `perf stat -e task-clock` on the process over BURSTS
# bursts (the first, cold, included); also each burst's p99. A variant is
# NAME=BINARY[,VAR=VALUE...] (RUST_LOG=info unless a VAR says otherwise); the floor is NAME=bare.
# Usage: cpu-ab.sh ROUNDS BURSTS VARIANT...
cd "$(dirname "$0")/../.."
source scripts/lib/ports.sh
rounds=$1 bursts=$2; shift 2
sock=/tmp/cpu-ab-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -f $sock /tmp/cpu-ab-$$.perf /tmp/cpu-ab-$$.log' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
measure() {
  local spec=$1 name bin envs port spid ppid
  name=${spec%%=*}; bin=${spec#*=}; envs=(); IFS=, read -ra parts <<< "$bin"; bin=${parts[0]}; envs=("${parts[@]:1}")
  port=$(free_port)
  redis-cli -s "$sock" flushall >/dev/null
  if [ "$bin" = bare ]; then
    taskset -c 0 target/release/examples/bare_webhook "127.0.0.1:$port" >/dev/null 2>&1 & spid=$!
  else
    RUST_LOG=info env "${envs[@]}" REDIS_URL="redis+unix://$sock" PUBLIC_URL=https://calls.example.com MAX_CONCURRENT_CALLS=$((500 * bursts + 100)) \
      MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port taskset -c 0 "$bin" >/tmp/cpu-ab-$$.log 2>&1 & spid=$!
  fi
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  perf stat -e task-clock -x, -p "$spid" -o /tmp/cpu-ab-$$.perf & ppid=$!
  sleep 0.3
  local p99s=""
  for _ in $(seq "$bursts"); do
    p99s="$p99s $(taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 | awk '/^webhook latency/ {print $7}')"
  done
  sleep 0.3
  kill -INT "$ppid"; wait "$ppid" 2>/dev/null
  kill "$spid"; wait "$spid" 2>/dev/null
  local ms; ms=$(awk -F, '/task-clock/ {print $1}' /tmp/cpu-ab-$$.perf)
  printf '%-10s %6.1f µs CPU per webhook; p99 ms:%s\n' "$name" "$(echo "$ms * 1000 / (500 * $bursts)" | bc -l)" "$p99s"
}
echo "# cpu-ab.sh $rounds $bursts $*  ($(date -u +%FT%TZ), load $(cut -d' ' -f1 /proc/loadavg))"
for _ in $(seq "$rounds"); do
  for spec in "$@"; do measure "$spec"; done
done
