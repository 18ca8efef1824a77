#!/bin/bash
ulimit -n $(ulimit -Hn)
valgrind --tool=callgrind --callgrind-out-file=/tmp/burst-w/cgs/bare.%p.out --dump-instr=no /work/wt/burst/target/release/examples/bare_webhook 127.0.0.1:29513 > /tmp/burst-w/cgs/bare.log 2>&1 &
vpid=$!
sleep 3
/work/wt/burst/target/release/prosaas-calls-sim --target http://127.0.0.1:29513 --burst 100 --json > /dev/null
for r in 1 2 3; do
  callgrind_control -z $vpid > /dev/null
  /work/wt/burst/target/release/prosaas-calls-sim --target http://127.0.0.1:29513 --burst 200 --json > /tmp/burst-w/cgs/bare-$r.json
  callgrind_control -d $vpid > /dev/null
  last=$(ls -t /tmp/burst-w/cgs/bare.$vpid.out.* | head -1)
  ir=$(grep -E "^(summary|totals):" $last | head -1 | awk '{print $2}')
  echo "bare round $r admitted $(jq .admitted /tmp/burst-w/cgs/bare-$r.json) Ir/webhook $((ir / 200))"
done
kill $vpid; wait $vpid 2>/dev/null
