#!/usr/bin/env bash
# usage: rss.sh BIN CALLS  (env WS for bare_tws). Prints RSS KiB before/at load and per call.
bin=$1; calls=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=(); case "$(basename "$bin")" in bare*) args=("127.0.0.1:$port") ;; esac
LISTEN_ADDR="127.0.0.1:$port" MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=5000 RUST_LOG=warn "$bin" "${args[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5
r0=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
/work/prof/bins/sim --target "http://127.0.0.1:$port" --calls $calls --duration 20 --expect-echo --progress 0 --max-loss-percent 100 --json > /tmp/rss-sim.json 2>/dev/null &
sim=$!
sleep 15
r1=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
wait $sim
kill -TERM $pid; wait $pid 2>/dev/null
echo "$(basename $bin) ${WS:-} calls=$calls rss0=$r0 rss=$r1 per_call=$(python3 -c "print(round(($r1-$r0)/$calls,2))")"
