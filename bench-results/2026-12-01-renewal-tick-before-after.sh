#!/usr/bin/env bash
# The before/after of a81be5a in docs/benchmarks.md ("Renewal tick"), as it was run (twice each,
# alternating the two builds). usage: SCRIPT SERVER_BIN CALLS -> prints evalsha usec_per_call over 30 s of steady streaming (renew ticks only)
set -u
server=$1; calls=$2
sim="$(dirname "$0")/../target/release/prosaas-calls-sim"
work=$(mktemp -d)
sock=$work/redis.sock
redis-server --port 0 --unixsocket $sock --unixsocketperm 700 --save "" --appendonly no --dir $work --logfile $work/redis.log &
rpid=$!
for _ in $(seq 50); do [[ "$(redis-cli -s $sock ping 2>/dev/null)" == PONG ]] && break; sleep 0.1; done
port=$((21000 + RANDOM % 5000))
ulimit -n $(ulimit -Hn)
REDIS_URL="redis+unix://$sock" MAX_CONCURRENT_CALLS=$((calls+100)) MEDIA_HANDLER=echo RENEW_INTERVAL_SECS=1 LISTEN_ADDR=127.0.0.1:$port RUST_LOG=warn $server > $work/server.log 2>&1 &
spid=$!
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
$sim --target http://127.0.0.1:$port --calls $calls --ramp 2 --duration 45 --json > $work/sim.json &
simpid=$!
sleep 10
redis-cli -s $sock config resetstat >/dev/null
redis-cli -s $sock config set slowlog-log-slower-than 0 >/dev/null
redis-cli -s $sock slowlog reset >/dev/null
sleep 30
echo "calls=$calls $(redis-cli -s $sock info commandstats | tr -d '\r' | grep -E '^cmdstat_evalsha')  load=$(cut -d' ' -f1 /proc/loadavg)"
redis-cli -s $sock slowlog get 100 | awk 'NR%2==0' >/dev/null
wait $simpid
kill $spid; wait $spid 2>/dev/null
kill $rpid; wait $rpid 2>/dev/null
rm -rf $work
