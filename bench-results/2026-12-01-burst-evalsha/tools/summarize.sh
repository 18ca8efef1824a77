#!/bin/bash
# summarize.sh DIR... : per round server/bare p99 cold/warm (ms) and ratios; counts bursts within 2x
for d in "$@"; do
  for r in 1 2 3; do
    f() { jq -r '.latency_us.p99' $d/burst-$1-$r.json 2>/dev/null; }
    sc=$(f server-cold); sw=$(f server-warm); bc=$(f bare-cold); bw=$(f bare-warm)
    [ -z "$sc" ] && continue
    lo=$(jq -r .load_before $d/burstload-server-$r.json 2>/dev/null)
    echo "$d $r $lo $sc $bc $sw $bw" | awk '{printf "%s r%s load %s  cold %.1f/%.1f = %.2fx  warm %.1f/%.1f = %.2fx\n", $1,$2,$3,$4/1000,$5/1000,$4/$5,$6/1000,$7/1000,$6/$7}'
  done
done
