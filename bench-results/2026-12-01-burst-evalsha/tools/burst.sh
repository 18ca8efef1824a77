#!/bin/bash
# burst.sh PORT SERVERPID : one 500 burst, prints p50/p99 and CPU ticks of server, redis, sim
R="redis-cli -s /tmp/burst-w/redis.sock"
rp=$(cat /tmp/burst-w/redis.pid)
b=$(/tmp/burst-w/cpu.sh $2 $rp)
$R config resetstat >/dev/null
/usr/bin/time -f "sim %U+%S s" /work/wt/burst/target/release/prosaas-calls-sim --target http://127.0.0.1:$1 --burst ${N:-500} --json > /tmp/burst-w/last.json 2>/tmp/burst-w/sim.time
a=$(/tmp/burst-w/cpu.sh $2 $rp)
read s1 r1 <<<"$b"; read s2 r2 <<<"$a"; echo "load $(cut -d" " -f1 /proc/loadavg) p50 $(jq .latency_us.p50 /tmp/burst-w/last.json) p99 $(jq .latency_us.p99 /tmp/burst-w/last.json) adm $(jq .admitted /tmp/burst-w/last.json) server_cpu_ms $(( (s2-s1)/1000000 )) redis_cpu_ms $(( (r2-r1)/1000000 )) $(tail -1 /tmp/burst-w/sim.time) evalsha $($R info commandstats | grep evalsha | cut -d, -f2,3)"
