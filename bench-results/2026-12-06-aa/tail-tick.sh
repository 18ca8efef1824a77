#!/usr/bin/env bash
# Does the renewal tick set the echo p99.9 at 1,000 pinned calls? The release server (Redis mode)
# on CPU 0, redis-server and the simulator on CPU 1, as scripts/bench --pin; "default" ticks every
# 10 s (lease 30 s), "no-tick" has a 300 s interval, so no tick falls in the 15 s run. Alternating,
# RUNS runs each. REDIS_NICE=N runs redis-server at that nice value. Usage: tail-tick.sh [RUNS]
cd "$(dirname "$0")/../.."
source scripts/lib/ports.sh
runs=${1:-3}
ulimit -n "$(ulimit -Hn)"
sock=/tmp/tail-tick-$$.sock
${REDIS_NICE:+nice -n $REDIS_NICE} taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
one() {
  local name=$1; shift
  local port; port=$(free_port)
  redis-cli -s "$sock" flushall >/dev/null
  env "$@" REDIS_URL="redis+unix://$sock" MAX_CONCURRENT_CALLS=2100 MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port RUST_LOG=info \
    taskset -c 0 target/release/prosaas-calls >/dev/null 2>&1 & spid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
  taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --calls 1000 --ramp 1 --duration 15 \
    --server-pid "$spid" --threads 1 --expect-echo --progress 0 | awk -v n="$name" '/^steady state/ {s=1} s && /echo latency/ {print n, $0} s && /late frames/ {print n, $0}'
  kill "$spid"; wait "$spid" 2>/dev/null
}
for _ in $(seq "$runs"); do
  one default
  one no-tick CALL_LEASE_SECS=900 RENEW_INTERVAL_SECS=300 CALL_LOCK_TTL_SECS=600
done
kill "$rpid"; wait "$rpid" 2>/dev/null; rm -f "$sock"
