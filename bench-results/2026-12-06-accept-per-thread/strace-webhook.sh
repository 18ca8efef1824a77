#!/usr/bin/env bash
# usage: strace-webhook.sh NAME BIN -> syscalls of the process over 2 bursts of 200 webhooks (in-process state)
set -u
cd /work/main
name=$1 bin=$2
port=$((10000 + RANDOM % 20000))
args=()
case "$(basename $bin)" in bare_webhook*) args=(127.0.0.1:$port);; esac
LISTEN_ADDR=127.0.0.1:$port MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=100000 RUST_LOG=info strace -f -c -o /tmp/stw.$name.txt "$bin" "${args[@]}" >/dev/null 2>&1 &
sp=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
for i in 1 2; do target/release/prosaas-calls-sim --target http://127.0.0.1:$port --burst 200 --json >/dev/null 2>&1; done
kill -INT $(pgrep -P $sp) 2>/dev/null; sleep 1; kill $sp 2>/dev/null; wait $sp 2>/dev/null
head -16 /tmp/stw.$name.txt
