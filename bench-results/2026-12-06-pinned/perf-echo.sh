#!/usr/bin/env bash
# perf profile (flat) of the server or the floor, pinned to CPU 0, 1,000 echo calls for 12 s.
# Usage: perf-echo.sh server|floor (release builds in target/release; needs perf, redis-server, taskset). Prints the simulator's CPU line and the kernel / user split.
cd "$(dirname "$0")/../.."
what=$1
sock=/tmp/pe-redis-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket $sock --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
for _ in $(seq 50); do [ "$(redis-cli -s $sock ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
port=$((10000 + RANDOM % 20000)); ulimit -n $(ulimit -Hn)
if [ $what = server ]; then
  REDIS_URL=redis+unix://$sock MAX_CONCURRENT_CALLS=2100 MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port RUST_LOG=info taskset -c 0 target/release/prosaas-calls >/tmp/pe-server.log 2>&1 & spid=$!
else
  taskset -c 0 target/release/examples/bare_echo 127.0.0.1:$port echo >/tmp/pe-floor.log 2>&1 & spid=$!
fi
sleep 1
taskset -c 1 target/release/prosaas-calls-sim --target http://127.0.0.1:$port --calls 1000 --ramp 1 --duration 12 --server-pid $spid --threads 1 --expect-echo --progress 0 > /tmp/pe-sim-$what.txt 2>&1 &
simpid=$!
sleep 4; perf record -F 2999 -o /tmp/perf-echo-$what.data -p $spid -- sleep 6 2>/dev/null
wait $simpid
kill -INT $spid; sleep 1; kill $spid 2>/dev/null; wait $spid 2>/dev/null; kill $rpid; wait $rpid 2>/dev/null; rm -f $sock
grep "server\|late" /tmp/pe-sim-$what.txt | tail -2
perf report -i /tmp/perf-echo-$what.data --sort dso --stdio 2>/dev/null | grep -v "^#" | grep -v "^$" | head -5
