import sys, glob, statistics, re
# usage: bsum.py DIR ; files burst-R-BUILD[-pin].md ; groups by BUILD[-pin]
res = {}
abl = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/burst-*.md")):
    m = re.match(r".*/burst-\d+-(.+)\.md$", f)
    build = m.group(1)
    text = open(f).read()
    sec = text.split("## Webhook burst")[1]
    parts = sec.split("Ablations")
    for line in parts[0].splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) >= 10 and cells[0].isdigit():
            sp = lambda c: [float(x) for x in c.split('/')]
            res.setdefault(build, []).append(("cold", sp(cells[2])[1], sp(cells[3])[1]))
            res.setdefault(build, []).append(("warm", sp(cells[5])[1], sp(cells[6])[1]))
    for line in parts[1].splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 5 and cells[0].isdigit():
            for i, k in enumerate(["redis_info", "redis_warn", "memory_info", "bare"]):
                abl.setdefault(build, {}).setdefault(k, []).extend(float(x) for x in cells[i+1].split('/'))
for b, rows in sorted(res.items()):
    ratios = [s/bb for _, s, bb in rows]
    print(f"{b}: bursts {len(rows)}, within 2x {sum(r<=2 for r in ratios)}, median ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f}; "
          f"server p99 median {statistics.median([s for _,s,_ in rows]):.1f} ms, bare {statistics.median([bb for _,_,bb in rows]):.1f} ms; "
          + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in abl[b].items()))
