#!/usr/bin/env bash
# usage: cpusplit.sh BIN CALLS -> user and system CPU seconds of BIN over 10 s of steady echo load
bin=$1; calls=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=(); case "$(basename "$bin")" in bare*) args=("127.0.0.1:$port") ;; esac
LISTEN_ADDR="127.0.0.1:$port" MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=5000 RUST_LOG=warn "$bin" "${args[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
/work/main/target/release/prosaas-calls-sim --target "http://127.0.0.1:$port" --calls $calls --duration 20 --expect-echo --progress 0 --max-loss-percent 100 --json > /tmp/cpusplit.json 2>/dev/null &
sim=$!
sleep 5
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
sleep 10
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
wait $sim
kill -KILL $pid; wait $pid 2>/dev/null
tck=$(getconf CLK_TCK)
python3 -c "u=($u1-$u0)/$tck; s=($s1-$s0)/$tck; print(f'$(basename $bin) calls=$calls user {u:.2f} s, system {s:.2f} s, user share {u/(u+s):.0%}, per frame {(u+s)/($calls*500)*1e6:.2f} us')"
