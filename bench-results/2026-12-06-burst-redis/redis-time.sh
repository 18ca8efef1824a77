#!/usr/bin/env bash
# Redis' own time in a webhook burst: the release server (Redis mode, RUST_LOG=warn) pinned to
# CPU 0, redis-server and the simulator on CPU 1; ROUNDS bursts of 500 webhooks, each followed by
# INFO commandstats (after CONFIG RESETSTAT) and the server's admission batches.
# Usage: redis-time.sh [SERVER_BIN] [ROUNDS]
cd "$(dirname "$0")/../.."
source scripts/lib/ports.sh
bin=${1:-target/release/prosaas-calls}; rounds=${2:-4}
sock=/tmp/redis-time-$$.sock; port=$(free_port)
taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
REDIS_URL="redis+unix://$sock" MAX_CONCURRENT_CALLS=$((500 * rounds + 100)) MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port \
  RUST_LOG=warn taskset -c 0 "$bin" >/tmp/redis-time-$$.log 2>&1 & spid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
for r in $(seq "$rounds"); do
  redis-cli -s "$sock" config resetstat >/dev/null
  taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 2>&1 | grep "^burst\|^webhook latency"
  redis-cli -s "$sock" info commandstats | tr -d '\r' | grep -E "cmdstat_(evalsha|zscore|get|set|zadd|zcard|incr|time|zrangebyscore|hincrby|incrby|exists)[:]" | sed 's/^/  /'
done
curl -s "http://127.0.0.1:$port/metrics" | grep -E "^calls_admission_batch|admission_batch" | head -8
kill "$spid"; wait "$spid" 2>/dev/null; kill "$rpid"; wait "$rpid" 2>/dev/null; rm -f "$sock" /tmp/redis-time-$$.log
