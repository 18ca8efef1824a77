"""The report of scripts/bench-timeline: echo latency per 100 ms bucket beside the replica's
renewal ticks (its debug line per tick) and its other log lines, for the server and the floor.

    python3 scripts/lib/timeline_report.py WORK_DIR DURATION_SECS
"""

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

# A bucket counts as "at a tick" from one bucket before the tick began to two after it ended.
BEFORE_MS = 100
AFTER_MS = 200


def load_timeline(path):
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (int(float(v)) if k not in ("t_s",) and v != "" else (float(v) if v != "" else None))
                         for k, v in row.items()})
    return rows


def unix_ms(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def load_log(path):
    """(ticks as (start_ms, end_ms, took_us, live)), and every log line's time."""
    ticks, lines = [], []
    if not path.exists():
        return ticks, lines
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        at = unix_ms(entry["timestamp"])
        fields = entry.get("fields", {})
        if fields.get("message") == "renewal tick":
            took = int(fields.get("took_us", 0))
            ticks.append((at - took / 1000, at, took, fields))
        else:
            lines.append(at)
    return ticks, lines


def steady(rows, calls):
    """Buckets where every call streams (the simulator's steady state): no ramp, no hang-up."""
    return [r for r in rows if r["streaming"] >= calls and r["echoed"] > 0]


def near(bucket, ticks):
    end = bucket["unix_ms"]
    start = end - 100
    return any(start <= t_end + AFTER_MS and end >= t_start - BEFORE_MS for t_start, t_end, _, _ in ticks)


def quantile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f}"


def report(work, name, calls):
    timeline = work / f"{name}.timeline.csv"
    if not timeline.exists():
        print(f"({name}: no timeline)\n")
        return
    rows = load_timeline(timeline)
    ticks, lines = load_log(work / "server.log") if name == "server" else ([], [])
    sim = json.loads((work / f"{name}.json").read_text())
    load = (work / f"{name}.load").read_text().split()
    window = sim.get("window") or {}
    lat = window.get("echo_latency_us") or {}
    busy = window.get("machine_busy_cores")
    print(f"## {name}\n")
    print(f"- load average (1 min) before / after: {' / '.join(load)}; machine busy cores in the "
          f"window: {busy:.2f}" if busy is not None else f"- load before / after: {' / '.join(load)}")
    print(f"- window echo p50 / p99 / p99.9 / max ms: {ms(lat.get('p50'))} / {ms(lat.get('p99'))} / "
          f"{ms(lat.get('p999'))} / {ms(lat.get('max'))}; late % {window.get('late_percent', '-')}; "
          f"lost {sim['frames']['lost']}; failed calls {sim['calls']['failed']}")
    rows = steady(rows, calls)
    if not rows:
        print("- no steady-state bucket\n")
        return
    at_tick = [r for r in rows if near(r, ticks)]
    away = [r for r in rows if not near(r, ticks)]

    def summary(group):
        if not group:
            return "- | - | - | -"
        p99s = [r["p99_us"] for r in group]
        maxes = [r["max_us"] for r in group]
        return (f"{len(group)} | {ms(quantile(p99s, 0.5))} | {ms(max(p99s))} | {ms(max(maxes))}")

    print()
    print("| buckets (100 ms, steady state) | n | median bucket p99 ms | worst bucket p99 ms | worst bucket max ms |")
    print("|---|---:|---:|---:|---:|")
    if ticks:
        print(f"| at a renewal tick (-{BEFORE_MS} ms .. +{AFTER_MS} ms) | {summary(at_tick)} |")
        print(f"| away from ticks | {summary(away)} |")
    print(f"| all | {summary(rows)} |")
    print()
    if ticks:
        print("Renewal ticks (the replica's debug line): start relative to the run, wall length, time")
        print("inside its polls (on a worker thread of the frames' runtime), longest single poll, live calls")
        print()
        t0 = rows[0]["unix_ms"] - rows[0]["t_s"] * 1000
        for start, end, took, f in ticks:
            print(f"- t = {(start - t0) / 1000:.2f} s: {took / 1000:.2f} ms wall, "
                  f"{ms(f.get('busy_us'))} ms in {f.get('polls', '-')} polls, longest poll "
                  f"{ms(f.get('longest_poll_us'))} ms, {f.get('live')} live calls")
        print()
        print("Buckets around each tick in the steady state (t s: p99 / max ms, frames echoed):")
        print()
        for start, end, took, live in ticks:
            around = [r for r in rows if start - 600 <= r["unix_ms"] <= end + 900]
            if not around:
                continue
            cells = ", ".join(f"{r['t_s']:.1f}: {ms(r['p99_us'])} / {ms(r['max_us'])} ({r['echoed']})" for r in around)
            print(f"- tick at {(start - t0) / 1000:.2f} s → {cells}")
        print()
    worst = sorted(rows, key=lambda r: r["max_us"], reverse=True)[:8]
    print("Worst buckets by max (t s, p99 / max ms, echoed, late, replica log lines in the bucket, nearest tick):")
    print()
    for r in worst:
        end = r["unix_ms"]
        logged = sum(1 for at in lines if end - 100 <= at <= end)
        nearest = min((abs(end - 50 - (s + e) / 2) for s, e, _, _ in ticks), default=None)
        nearest = "-" if nearest is None else f"{nearest / 1000:.2f} s away"
        print(f"- {r['t_s']:.1f}: {ms(r['p99_us'])} / {ms(r['max_us'])}, {r['echoed']}, {r['late']}, "
              f"{logged}, tick {nearest}")
    print()


def main():
    work = Path(sys.argv[1])
    calls = None
    for name in ("server", "floor"):
        path = work / f"{name}.json"
        if path.exists():
            sim = json.loads(path.read_text())
            calls = calls or sim["calls"]["launched"]
            report(work, name, sim["calls"]["launched"])


if __name__ == "__main__":
    main()
