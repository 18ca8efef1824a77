#!/usr/bin/env bash
# perf record (cpu-clock) of one server pinned to CPU 0 over BURSTS 500-webhook bursts; Redis and sim on CPU 1.
cd "$(dirname "$0")/../.."  # the repository's root
source scripts/lib/ports.sh
bin=$1 bursts=$2 out=$3
sock=/tmp/pb-$$.sock
taskset -c 1 redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -f $sock' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
port=$(free_port)
if [ "$bin" = bare ]; then
  taskset -c 0 target/release/examples/bare_webhook "127.0.0.1:$port" >/dev/null 2>&1 & spid=$!
else
RUST_LOG=info REDIS_URL="redis+unix://$sock" PUBLIC_URL=https://calls.example.com MAX_CONCURRENT_CALLS=$((500 * bursts + 100)) \
  MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port taskset -c 0 "$bin" >/tmp/pb-$$.log 2>&1 & spid=$!
fi
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sleep 0.5
taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 >/dev/null
perf record -F 20000 -e cpu-clock -g -p "$spid" -o "$out" 2>/dev/null & ppid=$!
sleep 0.5
for _ in $(seq "$bursts"); do taskset -c 1 target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 | awk '/^webhook latency/ {print $7}'; done
kill -INT $ppid; wait $ppid
kill $spid; wait $spid 2>/dev/null
