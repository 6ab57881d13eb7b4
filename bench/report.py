#!/usr/bin/env python3
"""Table and SVG chart from bench/run.sh results (one JSON object per line). No dependencies.

usage: bench/report.py results.json chart.svg
"""
import json
import math
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [r for r in rows if not r.get("soak")]
soak = [r for r in rows if r.get("soak")]


def key(r):
    return (r["connections"], r["keepalive"])


floor = {key(r): r for r in runs if r["server"] == "floor"}
hook = {key(r): r for r in runs if r["server"] == "webhook"}

print("| run | server | requests/s | p50 ms | p99 ms | p99.9 ms | CPU us/request | peak RSS MiB | vs floor |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for k in sorted(floor, key=lambda k: (not k[1], k[0])):
    for name, table in (("floor", floor), ("gpu-slicer", hook)):
        r = table.get(k)
        if not r:
            continue
        label = f"{k[0]} conn" + ("" if k[1] else ", new TLS connection per request")
        ratio = ""
        if name == "gpu-slicer" and k in floor:
            f = floor[k]
            ratio = (f"{r['rps'] / f['rps']:.2f}x throughput, {r['p99_us'] / max(f['p99_us'], 1):.2f}x p99, "
                     f"{r['cpu_us_per_req'] / max(f['cpu_us_per_req'], 1e-9):.2f}x CPU")
        print(f"| {label} | {name} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
              f"{r['p999_us'] / 1000:.2f} | {r['cpu_us_per_req']:.1f} | {r['rss_kib'] / 1024:.1f} | {ratio} |")
for s in soak:
    growth = (s["rss_after_kib"] - s["rss_before_kib"]) / max(s["rss_before_kib"], 1) * 100
    print(f"\nSoak: {s['requests']:,} requests at 16 connections; RSS {s['rss_before_kib'] / 1024:.1f} MiB -> "
          f"{s['rss_after_kib'] / 1024:.1f} MiB ({growth:+.1f}%).")
errors = sum(r["errors"] + r["non2xx"] for r in runs)
print(f"\nErrors and non-2xx answers across all runs: {errors}.")

# Chart: throughput and p99 vs keep-alive connections, floor beside gpu-slicer.
W, H, PAD = 360, 240, 48
conns = sorted({k[0] for k in floor if k[1]} | {k[0] for k in hook if k[1]})


def panel(x0, title, metric, scale, unit):
    vals = [t[(c, True)][metric] * scale for t in (floor, hook) for c in conns if (c, True) in t]
    top = max(vals) * 1.15 if vals else 1
    out = [f'<g transform="translate({x0},0)">',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#444"/>',
           f'<line x1="{PAD}" y1="30" x2="{PAD}" y2="{H - PAD}" stroke="#444"/>']
    xs = {c: PAD + (W - PAD - 20) * (i / max(len(conns) - 1, 1)) for i, c in enumerate(conns)}
    for c, x in xs.items():
        out.append(f'<text x="{x}" y="{H - PAD + 16}" text-anchor="middle" font-size="11">{c}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">keep-alive connections</text>')
    for i in range(5):
        v = top * i / 4
        y = H - PAD - (H - PAD - 30) * i / 4
        out.append(f'<text x="{PAD - 4}" y="{y + 4}" text-anchor="end" font-size="10">{v:,.0f}{unit}</text>')
    for table, color, name in ((floor, "#888", "floor"), (hook, "#0a7", "gpu-slicer")):
        pts = [(xs[c], H - PAD - (H - PAD - 30) * (table[(c, True)][metric] * scale) / top)
               for c in conns if (c, True) in table]
        if pts:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                       % (color, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    out.append("</g>")
    return "\n".join(out)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W + 20}" height="{H + 24}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>',
       panel(0, "requests/s (server on one core)", "rps", 1, ""),
       panel(W + 20, "p99 latency (ms)", "p99_us", 1 / 1000, ""),
       f'<g font-size="11"><rect x="{W - 60}" y="{H + 6}" width="10" height="10" fill="#888"/>'
       f'<text x="{W - 46}" y="{H + 15}">floor (static answer)</text>'
       f'<rect x="{W + 80}" y="{H + 6}" width="10" height="10" fill="#0a7"/>'
       f'<text x="{W + 94}" y="{H + 15}">gpu-slicer</text></g>',
       "</svg>"]
open(sys.argv[2], "w").write("\n".join(svg) + "\n")
