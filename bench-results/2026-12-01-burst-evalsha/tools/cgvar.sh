#!/bin/bash
# cgvar.sh FILE... : instructions (Ir) Redis under callgrind spends per EVALSHA admit, per script file
R="redis-cli -s /tmp/burst-w/cg.sock"
pid=$(cat /tmp/burst-w/cg/pid)
STATE='{"call_sid":"CA0123456789abcdef0123456789abcdef","status":"reserved","replica_id":"replica-abc","created_at":1764600000000,"updated_at":1764600000000,"from":"+15005550006","to":"+15005550001","account_sid":"AC0123456789abcdef0123456789abcdef","stream_url":"ws://127.0.0.1:12345/twilio/stream","resumes":0,"frames_in":0,"frames_out":0}'
N=${N:-1000}
for f in "$@"; do
  sha=$($R script load "$(cat $f)")
  $R flushall >/dev/null
  # warm up: 100 calls (fills the set a little, as mid-burst)
  redis-benchmark -s /tmp/burst-w/cg.sock -n 100 -c 50 -r 100000000 -q EVALSHA $sha 6 calls:slots calls:active_count calls:stats:started calls:stats:rejected_max_concurrent calls:epoch calls:state:CA__rand_int__ CA__rand_int__ 100000 60000 take 10000 "$STATE" 3600 "" 0 "" "" >/dev/null
  callgrind_control -z $pid >/dev/null
  redis-benchmark -s /tmp/burst-w/cg.sock -n $N -c 50 -r 100000000 -q EVALSHA $sha 6 calls:slots calls:active_count calls:stats:started calls:stats:rejected_max_concurrent calls:epoch calls:state:CA__rand_int__ CA__rand_int__ 100000 60000 take 10000 "$STATE" 3600 "" 0 "" "" >/dev/null
  callgrind_control -d $pid >/dev/null
  last=$(ls -t /tmp/burst-w/cg/redis.$pid.out.* | head -1)
  ir=$(grep -E "^(summary|totals):" $last | head -1 | awk '{print $2}')
  echo "$f Ir/call $((ir / N))"
  [ -n "$KEEP" ] || rm -f $last; [ -n "$KEEP" ] && echo $last
done
