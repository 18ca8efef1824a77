#!/usr/bin/env bash
# dhat of the server over N 500-webhook bursts (Redis on a unix socket), after one warm-up burst.
cd "$(dirname "$0")/../.."  # the repository's root
source scripts/lib/ports.sh
bin=$1 bursts=$2 out=$3
sock=/tmp/db-$$.sock
redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no --maxclients 10000 >/dev/null 2>&1 & rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -f $sock' EXIT
for _ in $(seq 50); do [ "$(redis-cli -s "$sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
port=$(free_port)
if [ "$bin" = bare ]; then
  valgrind --tool=dhat --dhat-out-file="$out" target/release/examples/bare_webhook "127.0.0.1:$port" >/dev/null 2>"$out.log" & spid=$!
else
RUST_LOG=info REDIS_URL="redis+unix://$sock" PUBLIC_URL=https://calls.example.com MAX_CONCURRENT_CALLS=10000 \
  MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$port valgrind --tool=dhat --dhat-out-file="$out" "$bin" >/dev/null 2>"$out.log" & spid=$!
fi
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
sleep 1
for _ in $(seq $((bursts + 1))); do target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --burst 500 --threads 1 2>&1| grep -E 'FAILED|^webhook latency' | head -2; done
kill -TERM $spid; wait $spid 2>/dev/null
grep -E 'Total:' "$out.log"
