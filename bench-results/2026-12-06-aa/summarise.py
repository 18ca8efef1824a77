"""Summarises run.sh's reports: each echo run's ratios, then per kind (aa: the floor against itself;
ab: the server against the floor) how many runs or bursts fall within each target.
Usage: python3 summarise.py DIR"""
import glob, re, statistics, sys

d = sys.argv[1]
cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
num = lambda c: float(c.rstrip("×"))

echo = {}
for f in sorted(glob.glob(f"{d}/echo1000-*.md"), key=lambda f: (f.split("-")[-2], int(f.split("-")[-1][:-3]))):
    kind = f.split("-")[-2]
    for line in open(f):
        c = cells(line)
        if len(c) > 16 and c[0] == "echo":
            row = dict(cpu=num(c[4]), p99=num(c[10]), p999=num(c[12]), late=c[14], verdict=c[15],
                       s_p99=float(c[8].split("/")[1]), f_p99=float(c[9]))
            echo.setdefault(kind, []).append(row)
            print(f"{f.split('/')[-1]:24} cpu {row['cpu']:.2f}×  p99 {row['s_p99']:.2f} / {row['f_p99']:.2f} ms = {row['p99']:.2f}×"
                  f"  p99.9 {row['p999']:.2f}×  late {row['late']}  {row['verdict']}")
print()
for kind, rows in sorted(echo.items()):
    ok = [r for r in rows if "saturated" not in r["verdict"]]
    q = lambda k: sorted(r[k] for r in ok)
    print(f"echo 1,000, {kind}: {len(rows)} runs, {len(ok)} not saturated; "
          f"p99 ratio within 1.2x in {sum(r['p99'] <= 1.2 for r in ok)}, median {statistics.median(q('p99')):.2f}, range {min(q('p99')):.2f}-{max(q('p99')):.2f}; "
          f"p99.9 within 1.5x in {sum(r['p999'] <= 1.5 for r in ok)}, median {statistics.median(q('p999')):.2f}, range {min(q('p999')):.2f}-{max(q('p999')):.2f}; "
          f"CPU ratio median {statistics.median(q('cpu')):.2f}, range {min(q('cpu')):.2f}-{max(q('cpu')):.2f}")

bursts = {}
for f in sorted(glob.glob(f"{d}/burst*-*.md")):
    m = re.match(r".*/burst(-pin)?-([\w.]+)-\d+\.md$", f)
    group = m.group(2) + (" pinned" if m.group(1) else " unpinned")
    section = open(f).read().split("## Webhook burst")[1].split("Ablations")[0]
    for line in section.splitlines():
        c = cells(line)
        if len(c) >= 10 and c[0].isdigit():
            p99 = lambda cell: float(cell.split("/")[1])
            bursts.setdefault(group, []).append(("cold", p99(c[2]), p99(c[3])))
            bursts.setdefault(group, []).append(("warm", p99(c[5]), p99(c[6])))
print()
for group, rows in sorted(bursts.items()):
    r = [s / b for _, s, b in rows]
    cold = [s / b for w, s, b in rows if w == "cold"]
    print(f"burst {group}: {len(rows)} bursts, within 2x {sum(x <= 2 for x in r)}, median ratio {statistics.median(r):.2f}, "
          f"range {min(r):.2f}-{max(r):.2f}, cold median {statistics.median(cold):.2f}; "
          f"'server' p99 median {statistics.median(s for _, s, _ in rows):.1f} ms, bare {statistics.median(b for _, _, b in rows):.1f} ms")
