#!/usr/bin/env python3
"""The cost of the network exchange: a tree split into two halves, replayed by one process with
two workers, and by two processes with one worker each on loopback (a cluster of two).

Usage: benches/cluster_split.py TREE [--runs 5] [--exoflow PATH] [--work DIR]

The tree's top-level entries are dealt alternately into WORK/split/h0 and WORK/split/h1 (hard
links, or copies where the filesystem has none). Then, alternating, each run replays into a fresh
lake:

  one process:    exoflow replay WORK/split --workers 2
  two processes:  exoflow replay WORK/split/h0 --workers 1 --processes 2 --process 0 --hostfile H
                  exoflow replay WORK/split/h1 --workers 1 --processes 2 --process 1 --hostfile H

Both read the same files and run the same kernels; the cluster exchanges its versions, progress
and statistics over TCP. Prints each run's wall time (the cluster's: from the start of both
processes to the end of the last), the medians, the median of the per-run ratios
cluster/single, and peak RSS (the cluster's is the sum of its two processes), and checks that
both lakes hold the same number of files rows. Needs GNU time (apt-get install time).
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split(tree, work):
    halves = [os.path.join(work, "split", f"h{i}") for i in range(2)]
    for half in halves:
        shutil.rmtree(half, ignore_errors=True)
        os.makedirs(half)
    for i, name in enumerate(sorted(os.listdir(tree))):
        source = os.path.join(tree, name)
        target = os.path.join(halves[i % 2], name)
        if subprocess.run(["cp", "-al", source, target], stderr=subprocess.DEVNULL).returncode:
            subprocess.run(["cp", "-a", source, target], check=True)
    return os.path.join(work, "split"), halves


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def peak_rss_kb(time_file):
    with open(time_file) as f:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
    return int(match.group(1)) if match else 0


def start(exoflow, args, prefix):
    return subprocess.Popen(
        ["/usr/bin/time", "-v", "-o", prefix + ".time", exoflow, *args],
        stdout=open(prefix + ".out", "w"),
        stderr=open(prefix + ".err", "w"),
    )


def finish(procs, prefixes):
    for proc, prefix in zip(procs, prefixes):
        if proc.wait() != 0:
            sys.stderr.write(open(prefix + ".err").read()[-2000:])
            sys.exit(f"cluster_split: {prefix} exited with {proc.returncode}")


def files_rows(out_file):
    match = re.search(r"files (\d+) rows", open(out_file).read())
    return int(match.group(1)) if match else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--exoflow", default=os.path.join(ROOT, "target/release/exoflow"))
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    if not os.path.isdir(args.tree):
        sys.exit(f"cluster_split: {args.tree} is not a directory")
    if not os.access(args.exoflow, os.X_OK):
        sys.exit(f"cluster_split: {args.exoflow} is not an executable (cargo build --release)")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("cluster_split: GNU time is missing: apt-get install time")
    work = args.work or tempfile.mkdtemp(prefix="exoflow-cluster.")
    whole, halves = split(os.path.abspath(args.tree), work)
    print(f"exoflow: {args.exoflow}")
    print(f"tree:    {args.tree} split into {halves[0]} and {halves[1]}")
    single, cluster = [], []
    for run in range(1, args.runs + 1):
        lake = os.path.join(work, "lake-single")
        shutil.rmtree(lake, ignore_errors=True)
        prefix = os.path.join(work, "single")
        began = time.monotonic()
        proc = start(args.exoflow, ["replay", whole, "--out", lake, "--workers", "2"], prefix)
        finish([proc], [prefix])
        single.append((time.monotonic() - began, peak_rss_kb(prefix + ".time"),
                       files_rows(prefix + ".out")))

        lake = os.path.join(work, "lake-cluster")
        shutil.rmtree(lake, ignore_errors=True)
        hosts = os.path.join(work, "hosts.txt")
        with open(hosts, "w") as f:
            f.writelines(f"127.0.0.1:{p}\n" for p in free_ports(2))
        prefixes = [os.path.join(work, f"process{i}") for i in range(2)]
        began = time.monotonic()
        procs = [
            start(args.exoflow, ["replay", halves[i], "--out", lake, "--workers", "1",
                                 "--processes", "2", "--process", str(i),
                                 "--hostfile", hosts], prefixes[i])
            for i in range(2)
        ]
        finish(procs, prefixes)
        cluster.append((time.monotonic() - began,
                        sum(peak_rss_kb(p + ".time") for p in prefixes),
                        sum(files_rows(p + ".out") for p in prefixes)))
        print(f"  run {run}/{args.runs}  one process {single[-1][0]:7.2f} s"
              f"  two processes {cluster[-1][0]:7.2f} s")
    if single[-1][2] != cluster[-1][2]:
        sys.exit(f"cluster_split: the lakes differ: {single[-1][2]} files rows from one process, "
                 f"{cluster[-1][2]} from two")
    ratios = [c[0] / s[0] for s, c in zip(single, cluster)]
    print()
    print(f"files rows:            {single[-1][2]:,} (both)")
    print(f"1 process x 2 workers: median {statistics.median(s[0] for s in single):.2f} s,"
          f" peak RSS {max(s[1] for s in single) / 1024:.0f} MiB")
    print(f"2 processes x 1 worker: median {statistics.median(c[0] for c in cluster):.2f} s,"
          f" peak RSS {max(c[1] for c in cluster) / 1024:.0f} MiB (both processes)")
    print(f"cluster/single: median of per-run ratios {statistics.median(ratios):.2f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
