#!/bin/bash
# cgserver.sh BINARY PORT LABEL : instructions per webhook of BINARY (Redis mode) under callgrind, bursts of 200 after a warm-up
R="redis-cli -s /tmp/burst-w/redis.sock"
ulimit -n $(ulimit -Hn)
mkdir -p /tmp/burst-w/cgs
REDIS_URL=redis+unix:///tmp/burst-w/redis.sock MAX_CONCURRENT_CALLS=100000 MEDIA_HANDLER=echo LISTEN_ADDR=127.0.0.1:$2 RUST_LOG=info \
  valgrind --tool=callgrind --callgrind-out-file=/tmp/burst-w/cgs/$3.%p.out --dump-instr=no $1 > /tmp/burst-w/cgs/$3.log 2>&1 &
vpid=$!
for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:$2/healthz && break; sleep 0.3; done
/work/wt/burst/target/release/prosaas-calls-sim --target http://127.0.0.1:$2 --burst 100 --json > /dev/null
for r in 1 2 3; do
  callgrind_control -z $vpid > /dev/null
  /work/wt/burst/target/release/prosaas-calls-sim --target http://127.0.0.1:$2 --burst 200 --json > /tmp/burst-w/cgs/$3-$r.json
  callgrind_control -d $vpid > /dev/null
  last=$(ls -t /tmp/burst-w/cgs/$3.$vpid.out.* | head -1)
  ir=$(grep -E "^(summary|totals):" $last | head -1 | awk '{print $2}')
  echo "$3 round $r admitted $(jq .admitted /tmp/burst-w/cgs/$3-$r.json) Ir/webhook $((ir / 200))"
done
echo $last
kill $vpid; wait $vpid 2>/dev/null
