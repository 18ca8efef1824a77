"""Cold and warm bursts apart: python3 cold_warm.py bench > cold-warm.txt"""
import glob, re, statistics, sys

res = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/burst-*.md")):
    build = re.match(r".*/burst-\d+-(.+)\.md$", f).group(1)
    section = open(f).read().split("## Webhook burst")[1].split("Ablations")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0].isdigit():
            p99 = lambda cell: float(cell.split("/")[1])
            res.setdefault((build, "cold"), []).append((p99(cells[2]), p99(cells[3])))
            res.setdefault((build, "warm"), []).append((p99(cells[5]), p99(cells[6])))
print("# python3 cold_warm.py bench: per build and phase: server p99 median (range), bare p99 median, bursts within 2x")
for (build, phase), rows in sorted(res.items()):
    server = [s for s, _ in rows]
    bare = [b for _, b in rows]
    print(f"{build:12} {phase}: server p99 median {statistics.median(server):.1f} ms "
          f"({min(server):.1f}-{max(server):.1f}), bare {statistics.median(bare):.1f} ms, "
          f"within 2x {sum(s / b <= 2 for s, b in rows)}/{len(rows)}")
