#!/usr/bin/env python3
"""Measure what a restart costs and how big the lake's metadata grows.

Usage: restart_cost.py [--exoflow target/release/exoflow] [--tree /tmp/linux] [--commits 1000]
                       [--work DIR] [--runs 3]

1. Restart time: replays TREE into a new lake, then replays it again RUNS times (nothing changed,
   so nothing is written) and prints the median time to restore the committed state (from the
   "restored the committed state" log line), the median wall time of the whole re-run, and its
   peak RSS (/usr/bin/time -v).
2. Metadata after many commits: watches an empty directory with --commit-interval 5ms while
   writing a file every few milliseconds (each commit has rows), until the lake's newest commit
   record has sequence COMMITS; then prints the size of _exoflow/ (every file in it), the number of
   commit records and checkpoints, and the restore time of that lake.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def du(path):
    total, count = 0, 0
    for d, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(d, f))
            count += 1
    return total, count


def head(lake):
    commits = os.path.join(lake, "_exoflow", "commits")
    names = sorted(n for n in os.listdir(commits) if n.endswith(".json")) if os.path.isdir(commits) else []
    if not names:
        return None
    with open(os.path.join(commits, names[-1])) as f:
        return json.load(f)


def rerun(exoflow, tree, lake, extra=()):
    """Replays tree into lake again; returns (restore seconds, wall seconds, peak RSS MiB)."""
    cmd = ["/usr/bin/time", "-v", exoflow, "replay", tree, "--out", lake, *extra]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RUST_LOG": "exoflow=info", "NO_COLOR": "1"})
    wall = time.monotonic() - started
    if out.returncode != 0:
        sys.exit(f"replay failed: {out.stderr[-2000:]}")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stderr)
    restore = re.search(r"restored the committed state .*seconds=([0-9.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return (float(restore.group(1)) if restore else 0.0, wall, int(rss.group(1)) / 1024)


def restart_time(args, work):
    lake = os.path.join(work, "tree-lake")
    subprocess.run([args.exoflow, "replay", args.tree, "--out", lake], check=True, stdout=subprocess.DEVNULL)
    results = [rerun(args.exoflow, args.tree, lake) for _ in range(args.runs)]
    h = head(lake)
    print(f"restart on a lake of {args.tree} (epoch {h['epoch']}): "
          f"restore median {statistics.median(r[0] for r in results):.2f} s, "
          f"re-run wall median {statistics.median(r[1] for r in results):.2f} s, "
          f"peak RSS median {statistics.median(r[2] for r in results):.0f} MiB ({args.runs} runs)")


def many_commits(args, work):
    watched, lake = os.path.join(work, "watched"), os.path.join(work, "watch-lake")
    os.makedirs(watched)
    proc = subprocess.Popen(
        [args.exoflow, "watch", watched, "--out", lake, "--commit-interval", "5ms", "--latency-ms", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    i, started = 0, time.monotonic()
    try:
        while True:
            i += 1
            with open(os.path.join(watched, f"f{i % 500}.txt"), "w") as f:
                f.write(f"TODO version {i}\n")
            time.sleep(0.004)
            if i % 50 == 0:
                h = head(lake)
                if h and h["sequence"] >= args.commits:
                    break
            if time.monotonic() - started > 600:
                sys.exit("gave up after 10 minutes")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    h = head(lake)
    size, files = du(os.path.join(lake, "_exoflow"))
    records = len(os.listdir(os.path.join(lake, "_exoflow", "commits")))
    checkpoints = [n for n in os.listdir(os.path.join(lake, "_exoflow")) if n.startswith("checkpoint-")]
    parts = sum(1 for _ in os.scandir(os.path.join(lake, "files")))
    print(f"after {h['sequence']} commits ({i} file writes, {parts} files parts): _exoflow/ holds "
          f"{files} files, {size / 1024:.1f} KiB: {records} commit records, "
          f"{len(checkpoints)} checkpoint(s) {checkpoints}")
    restore, wall, rss = rerun(args.exoflow, watched, lake, ["--source", "watched"])
    print(f"restart of that lake: restore {restore * 1000:.0f} ms, re-run wall {wall:.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exoflow", default="target/release/exoflow")
    ap.add_argument("--tree", default="/tmp/linux")
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="exoflow-restart-")
    if os.path.isdir(args.tree):
        restart_time(args, work)
    else:
        print(f"{args.tree} missing: restart time skipped (benches/linux_tree.sh unpacks it)")
    many_commits(args, work)


if __name__ == "__main__":
    main()
