#!/usr/bin/env bash
# Minor page faults and RSS per burst of 500, cold then 3 warm (pinned, Redis unless NOREDIS=).
# Usage (from anywhere): faults.sh; NOREDIS= faults.sh (in-process); XENV=NAME=VALUE faults.sh (an env var for the server).
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/prosaas-calls}
sock=/tmp/flt-redis-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket $sock --save "" --appendonly no >/dev/null 2>&1 & rpid=$!
for _ in $(seq 50); do [ "$(redis-cli -s $sock ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done; port=$((10000 + RANDOM % 20000))
env ${XENV:-X=1} REDIS_URL=${NOREDIS-unix://$sock} LISTEN_ADDR=127.0.0.1:$port MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=100000 RUST_LOG=info taskset -c 0 $BIN >/tmp/flt-server.log 2>&1 & spid=$!
sleep 1
for i in 1 2 3 4; do
  f0=$(awk '{print $10}' /proc/$spid/stat)
  taskset -c 1 target/release/prosaas-calls-sim --target http://127.0.0.1:$port --burst 500 --json >/tmp/flt.json 2>/dev/null
  f1=$(awk '{print $10}' /proc/$spid/stat)
  echo "burst $i: minflt $((f1-f0)) ($(( (f1-f0)/500 )) per webhook), RSS $(awk '/VmRSS/{print $2}' /proc/$spid/status) KiB, p99 $(python3 -c "import json;print(json.load(open('/tmp/flt.json'))['latency_us']['p99']/1000)") ms"
done
kill $spid; wait $spid 2>/dev/null; kill $rpid; wait $rpid 2>/dev/null; rm -f $sock
