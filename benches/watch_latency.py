#!/usr/bin/env python3
"""Watch benchmark: drives N file writes per second into a watched directory for a while, then stops
`exoflow watch` with SIGTERM and reports the event-to-statistics latency it measured (p50/p99/max),
its peak RSS (from /usr/bin/time -v) and whether the final lake matches what was written.

Usage: benches/watch_latency.py [--rate 1000] [--seconds 30] [--exoflow target/release/exoflow]
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1000, help="file writes per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to write")
    ap.add_argument("--files", type=int, default=2000, help="distinct paths written in turn")
    ap.add_argument("--exoflow", default="target/release/exoflow")
    ap.add_argument("--latency-ms", default="20")
    args = ap.parse_args()
    if not os.path.exists(args.exoflow):
        sys.exit(f"{args.exoflow} not found: build it with cargo build --release")
    if not os.path.exists("/usr/bin/time"):
        sys.exit("/usr/bin/time not found: apt-get install time")

    tmp = tempfile.mkdtemp(prefix="exoflow-watch-bench-")
    tree, lake = os.path.join(tmp, "tree"), os.path.join(tmp, "lake")
    for d in range(20):
        os.makedirs(os.path.join(tree, f"d{d:02}"))
    proc = subprocess.Popen(
        ["/usr/bin/time", "-v", args.exoflow, "watch", tree, "--out", lake,
         "--latency-ms", args.latency_ms],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)
    interval = 1.0 / args.rate
    start = time.monotonic()
    written = 0
    next_at = start
    while time.monotonic() - start < args.seconds:
        i = written % args.files
        path = os.path.join(tree, f"d{i % 20:02}", f"f{i}.txt")
        with open(path, "w") as f:
            f.write(f"TODO write {written}\n" if written % 3 == 0 else f"plain {written}\n")
        written += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    # /usr/bin/time forwards nothing: signal exoflow itself.
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    text = out + err
    latency = re.search(r"latency over (\d+) events: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if proc.returncode != 0 or not latency:
        print(text)
        sys.exit(f"exoflow watch failed (exit {proc.returncode})")
    print(f"writes: {written} in {elapsed:.1f} s ({written / elapsed:.0f}/s) over {args.files} paths")
    print(f"events measured: {latency.group(1)}")
    print(f"event-to-statistics latency: p50 {latency.group(2)} ms, p99 {latency.group(3)} ms, max {latency.group(4)} ms")
    print(f"exoflow peak RSS: {int(rss.group(1)) / 1024:.1f} MiB" if rss else "peak RSS: unknown")
    stats = subprocess.run([args.exoflow, "stats", lake, "--dimension", "total"], capture_output=True, text=True).stdout
    files = re.search(r"total\s+''\s+-\s+files\s+(\d+)", stats)
    print(f"final lake: total/files = {files.group(1) if files else '?'} (expected {min(written, args.files)})")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
