#!/usr/bin/env bash
# Per-thread context switches and CPU over 4 bursts of 500 (server pinned to CPU 0, sim + redis CPU 1).
cd /work/main
BIN=${BIN:-target/release/prosaas-calls}
sock=/tmp/ctx-redis.sock
taskset -c 1 redis-server --port 0 --unixsocket $sock --save "" --appendonly no >/dev/null 2>&1 & rpid=$!
sleep 0.3; port=$((10000 + RANDOM % 20000))
REDIS_URL=${NOREDIS-unix://$sock} LISTEN_ADDR=127.0.0.1:$port MEDIA_HANDLER=echo MAX_CONCURRENT_CALLS=100000 RUST_LOG=info taskset -c ${CPUS:-0} $BIN >/tmp/ctx-server.log 2>&1 & spid=$!
sleep 1
snap() { for t in /proc/$spid/task/*; do echo "$(cat $t/comm) $(awk '/^voluntary/{v=$2} /^nonvoluntary/{n=$2} END{print v, n}' $t/status) $(awk '{print $1}' $t/schedstat)"; done | sort; }
snap > /tmp/ctx-a.txt
for i in 1 2 3 4; do taskset -c 1 target/release/prosaas-calls-sim --target http://127.0.0.1:$port --burst 500 --json >/dev/null 2>&1; done
snap > /tmp/ctx-b.txt
kill $spid; wait $spid 2>/dev/null; kill $rpid
join -j1 <(awk '{print $1"#"NR, $2, $3, $4}' /tmp/ctx-a.txt) <(awk '{print $1"#"NR, $2, $3, $4}' /tmp/ctx-b.txt) | awk '{dv=$5-$2; dn=$6-$3; dt=($7-$4)/1000; if (dv+dn>0 || dt>100) printf "%-22s vol/webhook %.2f  invol/webhook %.2f  cpu us/webhook %.1f\n", $1, dv/2000, dn/2000, dt/2000}'
