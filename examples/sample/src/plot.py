#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Copyright (c) 2023-2024 The Tidepool Authors
"""Render a tide-gauge log as an SVG line chart, one line per station."""

import argparse
import csv
import sys
from collections import defaultdict

WIDTH, HEIGHT, MARGIN = 800, 300, 40
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def load(path):
    series = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["station"].startswith("#"):
                continue
            series[row["station"]].append((int(row["time"]), float(row["level_cm"])))
    return {name: sorted(points) for name, points in series.items()}


def scale(points, t0, t1, lo, hi):
    sx = (WIDTH - 2 * MARGIN) / max(t1 - t0, 1)
    sy = (HEIGHT - 2 * MARGIN) / max(hi - lo, 1e-9)
    return [(MARGIN + (t - t0) * sx, HEIGHT - MARGIN - (v - lo) * sy) for t, v in points]


def render(series):
    all_points = [p for points in series.values() for p in points]
    if not all_points:
        raise ValueError("no readings to plot")
    t0, t1 = min(t for t, _ in all_points), max(t for t, _ in all_points)
    lo, hi = min(v for _, v in all_points), max(v for _, v in all_points)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">']
    for i, (name, points) in enumerate(sorted(series.items())):
        xy = " ".join(f"{x:.1f},{y:.1f}" for x, y in scale(points, t0, t1, lo, hi))
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'  <polyline fill="none" stroke="{colour}" points="{xy}"><title>{name}</title></polyline>')
    # HACK: the dashboard's CSS expects a legend group even when it is empty.
    out.append('  <g class="legend"></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("log")
    ap.add_argument("--out", default="-", help="SVG file to write (default: stdout)")
    args = ap.parse_args(argv)
    svg = render(load(args.log))
    if args.out == "-":
        sys.stdout.write(svg)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
