#!/usr/bin/env bash
# CPU µs (all threads, schedstat) of redis-server, the server and the sim per 500-burst; then bare_webhook.
set -u
cd /work/main
BIN=${BIN:-target/release/prosaas-calls}
SIM=target/release/prosaas-calls-sim
cpu() { cat /proc/$1/task/*/schedstat 2>/dev/null | awk '{s+=$1} END {printf "%d", s/1000}'; }
lat() { python3 -c "import json;l=json.load(open('$1'))['latency_us'];print('p50 %.1f p99 %.1f ms'%(l['p50']/1000,l['p99']/1000))"; }
sock=/tmp/burstcpu-redis.sock
taskset -c 1 redis-server --port 0 --unixsocket $sock --save "" --appendonly no --daemonize no >/dev/null 2>&1 & rpid=$!
sleep 0.5
port=18555
burst() { # pid label
  local r0 s0 r1 s1 t0 t1
  r0=$(cpu $rpid); s0=$(cpu $1); t0=$(date +%s%N)
  taskset -c 1 $SIM --target http://127.0.0.1:$port --burst 500 --json > /tmp/burstcpu.json 2>/dev/null
  r1=$(cpu $rpid); s1=$(cpu $1); t1=$(date +%s%N)
  echo "$2: server $(( (s1-s0)/500 )) us/webhook, redis $(( (r1-r0)/500 )) us/webhook, $(lat /tmp/burstcpu.json)"
}
for round in ${ROUNDS:-1 2 3}; do
  redis-cli -s $sock FLUSHALL >/dev/null; redis-cli -s $sock SCRIPT FLUSH >/dev/null
  REDIS_URL="${NOREDIS-unix://$sock}" LISTEN_ADDR=127.0.0.1:$port MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=1100 RUST_LOG=${LOG:-info} taskset -c 0 $BIN >/tmp/burstcpu-server.log 2>&1 & spid=$!
  for i in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.05; done
  burst $spid "round $round server cold"; burst $spid "round $round server warm"
  kill $spid; wait $spid 2>/dev/null
  taskset -c 0 target/release/examples/bare_webhook 127.0.0.1:$port >/dev/null 2>&1 & bpid=$!
  for i in $(seq 100); do curl -sf -o /dev/null -X POST http://127.0.0.1:$port/twilio/voice 2>/dev/null && break; sleep 0.05; done
  sleep 0.2
  burst $bpid "round $round bare   cold"; burst $bpid "round $round bare   warm"
  kill $bpid; wait $bpid 2>/dev/null
done
kill $rpid; wait $rpid 2>/dev/null
