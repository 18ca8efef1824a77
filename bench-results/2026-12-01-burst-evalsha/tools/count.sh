#!/bin/bash
# count.sh DIR... : bursts (cold and warm) whose server p99 <= 2x the bare p99 of the same round
n=0; k=0; rs=""
for d in "$@"; do for r in 1 2 3; do for t in cold warm; do
  s=$(jq -r .latency_us.p99 $d/burst-server-$t-$r.json 2>/dev/null); b=$(jq -r .latency_us.p99 $d/burst-bare-$t-$r.json 2>/dev/null)
  [ -z "$s" -o -z "$b" -o "$s" = null -o "$b" = null ] && continue
  n=$((n+1)); rs="$rs $(echo "$s $b" | awk '{printf "%.2f", $1/$2}')"; [ $((s)) -le $((2*b)) ] && k=$((k+1))
done; done; done
echo "$k of $n within 2x; ratios sorted: $(echo $rs | tr ' ' '\n' | sort -n | paste -sd' ')"
