#!/usr/bin/env python3
"""End-to-end benchmark: `exoflow replay` of a tree with the default pipeline against the dedupe
pipeline (the default rules plus near-duplicate clusters), in one run, alternating, each into a
fresh lake, under GNU time. Prints every run, then the median wall time of each, the median of
the per-run dedupe/default ratios, and peak RSS (max over runs).

    python3 benches/dedupe_vs_default.py TREE [--runs 5] [--exoflow target/release/exoflow]
        [--baseline OTHER_EXOFLOW] [--device cpu|cuda|auto] [--workers N]

--baseline adds a third command: OTHER_EXOFLOW with the default pipeline (for example a build of
an earlier commit), to show what a change costs the default pipeline (ratio new/baseline).
Targets (README "Near-duplicates"): dedupe <= 2x default wall; dedupe peak RSS <= 384 MiB on the
Linux tree (benches/linux_tree.sh); the default pipeline no slower than before (<= 5%).

Needs GNU time (apt-get install time).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd):
    """(wall seconds, peak RSS KiB, stdout) of one run under /usr/bin/time -v."""
    out = subprocess.run(
        ["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", out.stderr)
    hours, minutes, seconds = wall.groups()
    wall_s = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return wall_s, rss, out.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--exoflow", default=os.path.join(ROOT, "target/release/exoflow"))
    parser.add_argument("--baseline", help="another exoflow binary, run with the default pipeline")
    parser.add_argument("--device", default=None, help="--device for the dedupe runs")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if not os.path.isdir(args.tree):
        sys.exit(f"{args.tree}: not a directory")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("/usr/bin/time not found; install GNU time with: apt-get install time")
    extra = ["--workers", str(args.workers)] if args.workers else []
    commands = {
        "default": [args.exoflow, "replay", args.tree] + extra,
        "dedupe": [
            args.exoflow,
            "replay",
            args.tree,
            "--pipeline",
            os.path.join(ROOT, "pipelines/dedupe.json"),
        ]
        + extra
        + (["--device", args.device] if args.device else []),
    }
    if args.baseline:
        commands["baseline"] = [args.baseline, "replay", args.tree] + extra
    work = tempfile.mkdtemp(prefix="exoflow-dedupe-bench-")
    results = {name: [] for name in commands}
    summaries = {}
    try:
        # Warm the page cache.
        for dirpath, _, files in os.walk(args.tree):
            for f in files:
                try:
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        while fh.read(1 << 20):
                            pass
                except OSError:
                    pass
        for run in range(args.runs):
            for name, cmd in commands.items():
                lake = os.path.join(work, f"lake-{name}")
                shutil.rmtree(lake, ignore_errors=True)
                wall, rss, stdout = timed(cmd + ["--out", lake])
                results[name].append((wall, rss))
                summaries[name] = stdout
                print(f"run {run + 1} {name:8} {wall:7.2f} s  {rss / 1024:7.1f} MiB", flush=True)
                shutil.rmtree(lake, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'pipeline':10} {'median s':>9} {'peak RSS MiB':>13}")
    for name, runs in results.items():
        print(
            f"{name:10} {statistics.median(w for w, _ in runs):9.2f} "
            f"{max(r for _, r in runs) / 1024:13.1f}"
        )
    ratio = statistics.median(
        d[0] / b[0] for d, b in zip(results["dedupe"], results["default"])
    )
    print(f"dedupe/default wall, median of per-run ratios: {ratio:.2f} (target <= 2)")
    if args.baseline:
        ratio = statistics.median(
            d[0] / b[0] for d, b in zip(results["default"], results["baseline"])
        )
        print(f"default/baseline wall, median of per-run ratios: {ratio:.3f} (target <= 1.05)")
    near = [l for l in summaries["dedupe"].splitlines() if l.startswith("near-duplicates")]
    if near:
        print(near[0])


if __name__ == "__main__":
    main()
