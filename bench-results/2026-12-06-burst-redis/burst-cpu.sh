#!/usr/bin/env bash
# CPU time per webhook in 500-webhook bursts, by `perf stat -e task-clock` on the process: the
# server with Redis, the server with the in-process store, and the floor (bare_webhook). Each
# pinned to CPU 0 (redis-server and the simulator on CPU 1); BURSTS bursts each (the first, cold,
# included). Usage: burst-cpu.sh [SERVER_BIN] [BURSTS]
cd "$(dirname "$0")/../.."
source scripts/lib/ports.sh
bin=${1:-target/release/prosaas-calls}; bursts=${2:-6}
sock=/tmp/burst-cpu-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
measure() {
  local name=$1; shift
  local port; port=$(free_port)
  if [ "$name" = bare ]; then
    taskset -c 0 target/release/examples/bare_webhook "127.0.0.1:$port" >/dev/null 2>&1 & spid=$!
  else
    env "$@" MAX_CONCURRENT_CALLS=$((500 * bursts + 100)) MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port RUST_LOG=info \
      taskset -c 0 "$bin" >/dev/null 2>&1 & spid=$!
  fi
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  perf stat -e task-clock -x, -p "$spid" -o /tmp/burst-cpu-$$.perf & ppid=$!
  sleep 0.3
  local p99s=""
  for _ in $(seq "$bursts"); do
    p99s="$p99s $(taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 | awk '/^webhook latency/ {print $7}')"
  done
  sleep 0.3
  kill -INT "$ppid"; wait "$ppid" 2>/dev/null
  kill "$spid"; wait "$spid" 2>/dev/null
  local ms; ms=$(awk -F, '/task-clock/ {print $1}' /tmp/burst-cpu-$$.perf)
  printf '%-8s %6.1f µs CPU per webhook (%s ms over %d bursts); p99 ms:%s\n' "$name" "$(echo "$ms * 1000 / (500 * $bursts)" | bc -l)" "$ms" "$bursts" "$p99s"
}
redis-cli -s "$sock" flushall >/dev/null
measure redis REDIS_URL="redis+unix://$sock"
measure memory REDIS_URL=
measure bare
kill "$rpid"; wait "$rpid" 2>/dev/null; rm -f "$sock" /tmp/burst-cpu-$$.perf
