import sys, glob, re, statistics
d = sys.argv[1]
res = {}
for f in sorted(glob.glob(f"{d}/burst-*-*.md")):
    build = f.rsplit('-',1)[1][:-3]
    text = open(f).read()
    sec = text.split("## Webhook burst")[1] if "## Webhook burst" in text else ""
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) >= 10 and cells[0].isdigit():
            sp = lambda c: [float(x) for x in c.split('/')]
            cold_s, cold_b, warm_s, warm_b = sp(cells[2])[1], sp(cells[3])[1], sp(cells[5])[1], sp(cells[6])[1]
            res.setdefault(build, []).append(("cold", cold_s, cold_b))
            res.setdefault(build, []).append(("warm", warm_s, warm_b))
for b, rows in res.items():
    ratios = [s/bb for _, s, bb in rows]
    over = [(k, round(s/bb,2)) for k, s, bb in rows if s/bb > 2]
    print(f"{b}: bursts {len(rows)}, within 2x {sum(r<=2 for r in ratios)}, median ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f}, "
          f"over: cold {sum(1 for k,_ in over if k=='cold')} warm {sum(1 for k,_ in over if k=='warm')}; "
          f"server p99 median {statistics.median([s for _,s,_ in rows]):.1f} ms, bare p99 median {statistics.median([bb for _,_,bb in rows]):.1f} ms")
