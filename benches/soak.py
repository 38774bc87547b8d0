#!/usr/bin/env python3
"""Soak benchmark: `exoflow watch` for a long while under a steady write load, with background
compaction on, and a reader querying the lake all the while.

A tree of --paths files is watched; a writer rewrites random paths at --rate writes per second for
--minutes, and the watch commits every --commit-interval. Every --sample seconds the benchmark
records exoflow's RSS, the part files per table and the size of `_exoflow/`; every second a reader
runs a DuckDB query over `LAKE/files/*.parquet` and checks that every row it sees belongs to a
committed epoch (its epoch is at most the newest commit record's, read after the query) and that no
(path, epoch) appears twice. At the end the watch is stopped with SIGTERM and the lake is checked:
one current version per written path, `stats_current` equal to the sum of `stats_changes`.

Prints the RSS per minute (and its spread after the first minute), the parts per table at the end,
`_exoflow/` size, and the reader's counts: queries, answers, rows of uncommitted epochs seen (must
be 0), duplicates (must be 0), queries that failed and why.

Usage: benches/soak.py [--minutes 10] [--rate 1000] [--paths 20000] [--commit-interval 2s]
                       [--exoflow target/release/exoflow] [--work DIR] [-- EXTRA WATCH ARGS]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(d, name)).st_size
            except FileNotFoundError:
                pass
    return total


def part_counts(lake):
    out = {}
    for table in ("files", "file_rules", "matches", "stats_changes"):
        d = os.path.join(lake, table)
        out[table] = len([n for n in os.listdir(d) if n.endswith(".parquet")]) if os.path.isdir(d) else 0
    return out


def head_epoch(lake):
    d = os.path.join(lake, "_exoflow", "commits")
    for _ in range(20):
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".json") and not n.startswith("."))
            if not names:
                return 0
            with open(os.path.join(d, names[-1])) as f:
                return json.load(f)["epoch"]
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.01)  # the newest record was being pruned or replaced
    raise RuntimeError("no readable commit record")


class Reader(threading.Thread):
    """Queries the lake once a second with DuckDB, as an analyst's dashboard would."""

    def __init__(self, lake):
        super().__init__(daemon=True)
        import duckdb

        self.duckdb = duckdb
        self.lake, self.stop = lake, threading.Event()
        self.queries = self.answers = self.uncommitted = self.duplicates = 0
        self.failures = {}
        self.slowest = 0.0

    def run(self):
        con = self.duckdb.connect()
        glob = os.path.join(self.lake, "files", "*.parquet")
        while not self.stop.wait(1.0):
            if not os.path.isdir(os.path.join(self.lake, "files")):
                continue
            self.queries += 1
            started = time.monotonic()
            try:
                max_epoch, rows, distinct = con.execute(
                    f"select max(epoch), count(*), count(distinct (path, epoch)) from '{glob}'"
                ).fetchone()
            except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
                kind = type(e).__name__ + (": missing file" if "No such file" in str(e) else "")
                self.failures[kind] = self.failures.get(kind, 0) + 1
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            committed = head_epoch(self.lake)
            self.answers += 1
            if max_epoch is not None and max_epoch > committed:
                self.uncommitted += 1
            self.duplicates += rows - distinct


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000, help="file writes per second")
    ap.add_argument("--paths", type=int, default=20000, help="distinct paths written at random")
    ap.add_argument("--commit-interval", default="2s")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--exoflow", default="target/release/exoflow")
    ap.add_argument("--work", help="working directory (default: a new temporary one, removed)")
    ap.add_argument("extra", nargs="*", help="more arguments for exoflow watch")
    args = ap.parse_args()
    if not os.path.exists(args.exoflow):
        sys.exit(f"{args.exoflow} not found: build it with cargo build --release")

    work = args.work or tempfile.mkdtemp(prefix="exoflow-soak-")
    tree, lake = os.path.join(work, "tree"), os.path.join(work, "lake")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    dirs = max(1, args.paths // 200)
    for i in range(args.paths):
        d = os.path.join(tree, f"d{i % dirs:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "w") as f:
            f.write(f"start {i}\n")
    proc = subprocess.Popen(
        [args.exoflow, "watch", tree, "--out", lake, "--commit-interval", args.commit_interval,
         *args.extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The watch is up once the initial scan committed.
    while head_epoch_or_none(lake) is None:
        if proc.poll() is not None:
            sys.exit(f"exoflow watch ended: {proc.communicate()}")
        time.sleep(0.1)

    reader = Reader(lake)
    reader.start()
    rng = random.Random(1)
    samples = []
    start = time.monotonic()
    next_sample = start
    written = 0
    interval = 1.0 / args.rate
    next_at = start
    duration = args.minutes * 60
    while (now := time.monotonic()) - start < duration:
        if now >= next_sample:
            samples.append((now - start, rss_kib(proc.pid), part_counts(lake),
                            du(os.path.join(lake, "_exoflow"))))
            next_sample += args.sample
        i = rng.randrange(args.paths)
        path = os.path.join(tree, f"d{i % dirs:03}", f"f{i}.txt")
        with open(path, "w") as f:
            f.write(f"TODO write {written}\n" if written % 3 == 0 else f"plain {written} of {i}\n")
        written += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    time.sleep(args.sample)
    samples.append((time.monotonic() - start, rss_kib(proc.pid), part_counts(lake),
                    du(os.path.join(lake, "_exoflow"))))
    peak = rss_kib(proc.pid, "VmHWM")
    reader.stop.set()
    reader.join()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        print(out, err)
        sys.exit(f"exoflow watch failed (exit {proc.returncode})")

    print(f"writes: {written} in {elapsed:.0f} s ({written / elapsed:.0f}/s) over {args.paths} paths, "
          f"commits every {args.commit_interval}")
    print("minute  RSS MiB  parts (files/file_rules/matches/stats_changes)  _exoflow/")
    minute = -1
    for t, rss, parts, log in samples:
        if int(t // 60) != minute or (t, rss) == samples[-1][:2]:
            minute = int(t // 60)
            counts = "/".join(str(parts[k]) for k in ("files", "file_rules", "matches", "stats_changes"))
            print(f"{t / 60:6.1f}  {rss / 1024:7.1f}  {counts:>44}  {log / 1024:.0f} KiB")
    steady = [rss for t, rss, _, _ in samples if t >= 60]
    if steady:
        lo, hi = min(steady), max(steady)
        print(f"RSS after the first minute: {lo / 1024:.1f}..{hi / 1024:.1f} MiB "
              f"(spread {100 * (hi - lo) / lo:.1f}%), peak {peak / 1024:.1f} MiB")
    most = {k: max(p[k] for _, _, p, _ in samples) for k in samples[-1][2]}
    print(f"parts per table at the end: {samples[-1][2]}; most at any sample: {most}")
    print(f"reader: {reader.queries} queries, {reader.answers} answered (slowest {reader.slowest:.2f} s), "
          f"uncommitted rows seen in {reader.uncommitted}, duplicated rows {reader.duplicates}, "
          f"failed {sum(reader.failures.values())} {reader.failures or ''}")
    check = subprocess.run(
        [sys.executable, "-c", CHECK, lake], capture_output=True, text=True
    )
    print(check.stdout.strip() or check.stderr.strip())
    if not args.work:
        shutil.rmtree(work)


def head_epoch_or_none(lake):
    try:
        return head_epoch(lake) or None
    except (FileNotFoundError, RuntimeError):
        return None


CHECK = """
import sys, duckdb
lake = sys.argv[1]
con = duckdb.connect()
cur = con.execute(f'''select count(*) from (select path, arg_max(op, epoch) as op
    from '{lake}/files/*.parquet' group by path) where op = 'upsert' ''').fetchone()[0]
total = con.execute(f'''select value from '{lake}/stats_current.parquet'
    where dimension = 'total' and metric = 'files' ''').fetchone()[0]
summed = con.execute(f'''select sum(diff) from '{lake}/stats_changes/*.parquet'
    where dimension = 'total' and metric = 'files' ''').fetchone()[0]
print(f"final lake: {cur} current paths, stats_current total/files {total}, sum of stats_changes {summed}")
"""

if __name__ == "__main__":
    main()
