#!/usr/bin/env python3
"""Kill exoflow with SIGKILL at random moments and check that the lake ends exact.

Usage: crash_harness.py --exoflow BIN --work DIR [--files N] [--replay-kills K]
                        [--watch-kills K] [--compact-kills K] [--seed S]

Replay: two snapshots of a generated tree of N small files (benches/gen_small_files.py; the
second snapshot edits, deletes, adds and renames files) are replayed into a lake with a short
commit interval; each run is killed after a random delay until K runs were killed, then run to
the end. Watch: a directory that a mutator thread keeps changing (create, modify, delete,
rename, new directories) is watched; the watcher is killed K times at random moments (the
directory keeps changing while it is down), then run to a graceful stop once the changes stop.
Compaction: the same with commits every 50 ms and background compaction at its most eager
(--compact-fanout 2), so that kills land while a compaction is merging or swapping a table; a
kill that left a compaction's staging directory behind is counted as one during compaction.

Each lake is compared with an uninterrupted run over the same final tree (read with pyarrow):
  missing     current versions of the reference that the lake lacks or holds differently
  extra       current versions the lake holds that the reference does not
  duplicated  a path with two rows in one epoch, or a row repeating the path's previous row
  stats       stats_current differs from the reference's, or the running sum of stats_changes
              differs from stats_current (a change counted twice or lost)
  rules       file_rules counts of current versions differ from the reference's
All must be zero; the exit status is 1 otherwise.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = os.path.join(HERE, "..", "benches", "gen_small_files.py")


def parts(lake, table):
    d = os.path.join(lake, table)
    if not os.path.isdir(d):
        return []
    return sorted(
        os.path.join(d, f) for f in os.listdir(d) if f.startswith("part-") and f.endswith(".parquet")
    )


def rows(lake, table):
    out = []
    for p in parts(lake, table):
        out.extend(pq.read_table(p).to_pylist())
    return out


def key(r):
    return (r["source"], r["path_bytes"] or r["path"].encode())


def version(r):
    return (r["op"], r["size"], r["hash"], r["skip_reason"], r["lines"], r["language"])


def current(lake):
    """(source, path) -> (epoch, version) of the latest non-deleted row."""
    latest = {}
    for r in rows(lake, "files"):
        k = key(r)
        if k not in latest or latest[k][0] < r["epoch"]:
            latest[k] = (r["epoch"], version(r))
    return {k: v for k, v in latest.items() if v[1][0] == "upsert"}


def duplicated(lake):
    history = defaultdict(list)
    for r in rows(lake, "files"):
        history[key(r)].append((r["epoch"], version(r)))
    problems = []
    for k, h in history.items():
        h.sort()
        for (e1, v1), (e2, v2) in zip(h, h[1:]):
            if e1 == e2:
                problems.append(f"{k}: two rows in epoch {e1}")
            elif v1 == v2:
                problems.append(f"{k}: epochs {e1} and {e2} repeat {v1[0]}")
    return problems


def stats_current(lake):
    t = pq.read_table(os.path.join(lake, "stats_current.parquet")).to_pylist()
    return {(r["dimension"], r["key"], r["rule"], r["metric"]): r["value"] for r in t}


def stats_sum(lake):
    sums = defaultdict(int)
    for r in rows(lake, "stats_changes"):
        sums[(r["dimension"], r["key"], r["rule"], r["metric"])] += r["diff"]
    return {k: v for k, v in sums.items() if v != 0}


def rule_counts(lake, cur):
    counts = defaultdict(dict)
    for r in rows(lake, "file_rules"):
        k = (r["source"], r["path"].encode())
        if k in cur and cur[k][0] == r["epoch"]:
            counts[k][r["rule"]] = r["count"]
    return counts


def compare(name, lake, reference):
    cur, ref = current(lake), current(reference)
    missing = [k for k in ref if k not in cur or cur[k][1] != ref[k][1]]
    extra = [k for k in cur if k not in ref]
    dup = duplicated(lake)
    sc, rc = stats_current(lake), stats_current(reference)
    stats = sum(1 for k in set(sc) | set(rc) if sc.get(k) != rc.get(k))
    stats += sum(1 for k in set(sc) | set(stats_sum(lake)) if sc.get(k) != stats_sum(lake).get(k))
    rules_lake, rules_ref = rule_counts(lake, cur), rule_counts(reference, ref)
    rules = sum(1 for k in ref if rules_lake.get(k, {}) != rules_ref.get(k, {}))
    print(
        f"{name}: {len(cur)} current versions (reference {len(ref)}), "
        f"missing {len(missing)}, extra {len(extra)}, duplicated {len(dup)}, "
        f"stats {stats}, rules {rules}"
    )
    for what, items in (("missing", missing), ("extra", extra), ("duplicated", dup)):
        for item in items[:5]:
            print(f"  {what}: {item}")
    return not (missing or extra or dup or stats or rules)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)


def killed_after(cmd, delay):
    """Starts cmd and SIGKILLs it after delay seconds; True if it was killed, False if it ended."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with {proc.returncode}: {err}")
    return False


def second_snapshot(first, second, rng):
    shutil.copytree(first, second, symlinks=True)
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(second) for f in fs
    )
    for path in rng.sample(files, len(files) // 10):
        with open(path, "a") as f:
            f.write("// TODO edited in the second snapshot\n")
    for path in rng.sample(files, len(files) // 20):
        if os.path.exists(path):
            os.remove(path)
    for i in range(len(files) // 20):
        with open(os.path.join(second, f"added-{i}.md"), "w") as f:
            f.write(f"FIXME added {i}\n")
    for path in rng.sample(files, len(files) // 50):
        if os.path.exists(path):
            os.rename(path, path + ".moved")


def replay_part(args, rng):
    one, two = os.path.join(args.work, "snap1", "tree"), os.path.join(args.work, "snap2", "tree")
    run([sys.executable, GENERATOR, one, "--files", str(args.files), "--seed", str(args.seed)])
    second_snapshot(one, two, rng)
    reference, lake = os.path.join(args.work, "replay-reference"), os.path.join(args.work, "replay-lake")
    base = [args.exoflow, "replay", one, two]
    started = time.monotonic()
    run(base + ["--out", reference])
    duration = time.monotonic() - started
    cmd = base + ["--out", lake, "--commit-interval", "50ms"]
    kills, runs = 0, 0
    while kills < args.replay_kills:
        runs += 1
        if killed_after(cmd, rng.uniform(0.05, 1.0) * duration):
            kills += 1
        else:
            # It finished before its kill: start over into a new lake would lose the kills
            # already done, so keep going on this one (a finished replay re-run adds nothing).
            pass
    runs += 1
    run(cmd)
    print(f"replay: {args.files} files x 2 snapshots, uninterrupted {duration:.2f} s, "
          f"{runs} runs, {kills} killed")
    return compare("replay", lake, reference)


class Mutator(threading.Thread):
    """Keeps changing a directory until stopped."""

    def __init__(self, root, rng):
        super().__init__(daemon=True)
        self.root, self.rng, self.stop = root, rng, threading.Event()
        self.count, self.actions = 0, 0

    def files(self):
        return [os.path.join(d, f) for d, _, fs in os.walk(self.root) for f in fs]

    def run(self):
        dirs = [self.root]
        while not self.stop.is_set():
            self.actions += 1
            choice = self.rng.random()
            try:
                if choice < 0.35:
                    self.count += 1
                    path = os.path.join(self.rng.choice(dirs), f"n{self.count}.txt")
                    with open(path, "w") as f:
                        f.write("TODO " * self.rng.randint(0, 5) + f"new {self.count}\n")
                elif choice < 0.65:
                    files = self.files()
                    if files:
                        with open(self.rng.choice(files), "a") as f:
                            f.write(f"FIXME {self.actions}\n")
                elif choice < 0.8:
                    files = self.files()
                    if files:
                        os.remove(self.rng.choice(files))
                elif choice < 0.93:
                    files = self.files()
                    if files:
                        src = self.rng.choice(files)
                        self.count += 1
                        os.rename(src, os.path.join(self.rng.choice(dirs), f"r{self.count}.rs"))
                else:
                    self.count += 1
                    d = os.path.join(self.rng.choice(dirs), f"d{self.count}")
                    os.makedirs(d)
                    dirs.append(d)
            except FileNotFoundError:
                pass
            time.sleep(0.004)


def compacting(lake):
    """Whether a background compaction was under way: its staging directory is there."""
    log = os.path.join(lake, "_exoflow")
    return os.path.isdir(log) and any(n.startswith("staging-auto-") for n in os.listdir(log))


def watch_part(args, rng, name="watch", kills=None, extra=()):
    kills = args.watch_kills if kills is None else kills
    watched = os.path.join(args.work, f"{name}ed" if name == "watch" else f"{name}-watched")
    run([sys.executable, GENERATOR, watched, "--files", str(max(args.files // 10, 100)),
         "--seed", str(args.seed + 1)])
    lake = os.path.join(args.work, f"{name}-lake")
    interval = "50ms" if extra else "100ms"
    cmd = [args.exoflow, "watch", watched, "--out", lake, "--commit-interval", interval, *extra]
    mutator = Mutator(watched, random.Random(args.seed))
    mutator.start()
    during = 0
    for _ in range(kills):
        assert killed_after(cmd, rng.uniform(0.2, 1.5)), "watch ended by itself"
        during += compacting(lake)
        time.sleep(rng.uniform(0.0, 0.3))  # down: the directory keeps changing
    mutator.stop.set()
    mutator.join()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # SIGTERM only once it stops the watch gracefully: the banner follows the signal handlers.
    seen = b""
    while b"watching;" not in seen:
        line = proc.stderr.readline()
        if not line:
            sys.exit(f"the last watch ended before watching: {seen.decode(errors='replace')}")
        seen += line
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        err = (seen + err).decode(errors="replace")
        sys.exit(f"the last watch failed with {proc.returncode}: {err}")
    reference = os.path.join(args.work, f"{name}-reference")
    run([args.exoflow, "replay", watched, "--out", reference, "--source",
         os.path.basename(watched)])
    print(f"{name}: {mutator.actions} actions while {kills} watchers were killed")
    if extra:
        merged = {t: sum("compact" in p for p in parts(lake, t)) for t in ("files", "stats_changes")}
        print(f"{name}: {during} kills during a compaction; merged parts at the end: {merged}")
    return compare(name, lake, reference)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exoflow", required=True)
    ap.add_argument("--work", required=True, help="an empty or missing directory")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--replay-kills", type=int, default=20)
    ap.add_argument("--watch-kills", type=int, default=10)
    ap.add_argument("--compact-kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rng = random.Random(args.seed)
    ok = replay_part(args, rng)
    ok = watch_part(args, rng) and ok
    if args.compact_kills:
        ok = watch_part(args, rng, "compaction", args.compact_kills,
                        ("--compact-fanout", "2")) and ok
    print("OK" if ok else "DIFFERENCES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
