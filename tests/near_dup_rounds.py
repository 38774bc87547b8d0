#!/usr/bin/env python3
"""Incrementality oracle for near-duplicate clusters.

Seeded random rounds of additions, deletions and modifications on a tree whose files are windows of
a few long random texts (so they form chains and clusters), each round followed by
`exoflow replay TREE --out LAKE --pipeline P` on the same lake (a continued replay commits only the
changes).  After every round the lake must agree with a from-scratch computation by
tests/minhash_reference.py over the files on disk: the current signatures, the clusters as of the
latest epoch, and the stats_current near_duplicates rows.

The rounds start with the split case: A ~ B ~ C with A and C not similar; deleting B leaves A and C
unclustered, and writing B back joins them again.  They end with a replay of the unchanged tree,
which must change no row of any table.

    python3 tests/near_dup_rounds.py EXOFLOW WORKDIR [--seed 7] [--rounds 12]
"""
import argparse
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minhash_reference as mr  # noqa: E402

PIPELINE = """{
  "name": "rounds",
  "near_duplicates": { "shingle": 4, "signature": 256, "bands": 64, "rows": 4, "threshold": 0.5,
                       "min_size": 32, "max_bucket": 100 },
  "rules": [ { "id": "todo", "pattern": "TODO" } ]
}
"""
WINDOW = 1200
FAMILY_LEN = 4000
ALPHABET = b"abcdefghijklmnopqrstuvwxyz      \n"


class World:
    def __init__(self, exoflow, workdir, seed):
        self.exoflow = exoflow
        self.rng = random.Random(seed)
        self.tree = os.path.join(workdir, "tree")
        self.lake = os.path.join(workdir, "lake")
        self.pipeline_path = os.path.join(workdir, "pipeline.json")
        for p in (self.tree, self.lake):
            shutil.rmtree(p, ignore_errors=True)
        os.makedirs(self.tree)
        with open(self.pipeline_path, "w") as f:
            f.write(PIPELINE)
        self.pipeline = mr.load_pipeline(self.pipeline_path)
        self.params = mr.params(self.pipeline)
        self.families = [bytes(self.rng.choice(ALPHABET) for _ in range(FAMILY_LEN))
                         for _ in range(3)]
        self.files = {}  # relative path bytes -> content
        self.counter = 0
        self.epochs = 0

    # ------------------------------------------------------------ contents
    def window(self, family, offset):
        return self.families[family][offset:offset + WINDOW]

    def random_content(self):
        r = self.rng.random()
        if r < 0.65:
            return self.window(self.rng.randrange(3), self.rng.randrange(FAMILY_LEN - WINDOW))
        if r < 0.75:
            return bytes(self.rng.choice(ALPHABET) for _ in range(self.rng.randrange(40, 900)))
        if r < 0.87 and self.files:
            return self.files[self.rng.choice(sorted(self.files))]  # an exact copy
        if r < 0.94:
            return bytes(self.rng.choice(ALPHABET) for _ in range(self.rng.randrange(0, 32)))
        return b"\0" + self.window(self.rng.randrange(3), 0)  # binary: no signature

    def new_name(self):
        self.counter += 1
        if self.counter % 11 == 0:
            return b"odd-\xff-%d.txt" % self.counter  # not UTF-8
        if self.counter % 3 == 0:
            return b"d%d/f%d.txt" % (self.counter % 2, self.counter)
        return b"f%d.txt" % self.counter

    # ------------------------------------------------------------ the tree
    def put(self, rel, content):
        path = os.path.join(os.fsencode(self.tree), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        self.files[rel] = content

    def remove(self, rel):
        os.remove(os.path.join(os.fsencode(self.tree), rel))
        del self.files[rel]

    def replay(self, *extra):
        out = subprocess.run([self.exoflow, "replay", self.tree, "--out", self.lake,
                              "--pipeline", self.pipeline_path, *extra],
                             capture_output=True, env=dict(os.environ, RUST_LOG="warn"))
        if out.returncode != 0:
            sys.exit(f"exoflow replay failed ({out.returncode}):\n{out.stderr.decode()}")
        return out.stdout.decode()

    def check(self, label):
        problems, lines = mr.check(self.lake, self.pipeline, self.tree)
        if problems:
            print(f"{label}: the lake differs from the reference")
            for p in problems:
                print("DIFFERENCE", p)
            sys.exit(1)
        print(f"{label}: {lines[-1]}")

    def reference(self):
        sigs, _ = mr.tree_signatures(self.tree, self.params, "tree")
        return sigs, mr.clusters(sigs, self.params)


def key(rel):
    return ("tree", rel)


def split_case(w):
    """A ~ B ~ C, A and C not similar: deleting B splits the cluster."""
    a, b, c = b"chain/a.txt", b"chain/b.txt", b"chain/c.txt"
    w.put(a, w.window(0, 0))
    w.put(b, w.window(0, 270))
    w.put(c, w.window(0, 540))
    w.replay()
    sigs, (clusters, _, edges) = w.reference()
    sa, sb, sc = sigs[key(a)], sigs[key(b)], sigs[key(c)]
    assert frozenset((sa, sb)) in edges and frozenset((sb, sc)) in edges, "A~B~C needs both edges"
    assert frozenset((sa, sc)) not in edges, "A and C must not be similar"
    assert frozenset(map(key, (a, b, c))) in clusters
    w.check("split: A~B~C")
    content_b = w.files[b]
    w.remove(b)
    w.replay()
    _, (clusters, _, _) = w.reference()
    assert not any(key(a) in cl or key(c) in cl for cl in clusters), "A and C stay apart"
    w.check("split: B deleted")
    w.put(b, content_b)
    w.replay()
    w.check("split: B back")


def random_round(w, n):
    ops = []
    for _ in range(w.rng.randint(1, 5)):
        r = w.rng.random()
        names = sorted(w.files)
        if r < 0.4 or len(names) < 12:
            rel = w.new_name()
            w.put(rel, w.random_content())
            ops.append("+")
        elif r < 0.55 or len(names) > 40:
            w.remove(w.rng.choice(names))
            ops.append("-")
        elif r < 0.8:
            w.put(w.rng.choice(names), w.random_content())
            ops.append("~")
        elif r < 0.9:
            # a rename: the content leaves one path and appears at another
            old = w.rng.choice(names)
            content = w.files[old]
            w.remove(old)
            w.put(w.new_name(), content)
            ops.append(">")
        else:
            # a small edit in the middle of a file: it moves a little along its chain
            rel = w.rng.choice(names)
            content = bytearray(w.files[rel])
            if len(content) > 40:
                i = w.rng.randrange(len(content) - 20)
                content[i:i + 20] = bytes(w.rng.choice(ALPHABET) for _ in range(20))
            w.put(rel, bytes(content))
            ops.append("e")
    extra = []
    if n % 4 == 3:
        extra = ["--checkpoint-rows", "1"]  # checkpoint the tracked state, signatures included
    extra += ["--workers", str(1 + n % 3)]
    w.replay(*extra)
    w.check(f"round {n} ({''.join(ops)}, {len(w.files)} files)")


def table_snapshot(lake):
    out = {}
    for t in ("files", "signatures", "near_duplicates", "stats_changes"):
        out[t] = sorted(repr(sorted(r.items())) for r in mr.read_table(lake, t))
    import pyarrow.parquet as pq
    out["stats_current"] = sorted(
        repr(sorted((k, v) for k, v in r.items() if k != "epoch"))  # the epoch it was written at
        for r in pq.read_table(os.path.join(lake, "stats_current.parquet")).to_pylist())
    return out


def unchanged_rerun(w):
    before = table_snapshot(w.lake)
    text = w.replay()
    after = table_snapshot(w.lake)
    for t in before:
        if before[t] != after[t]:
            print(f"restart: the unchanged tree changed table {t}: "
                  f"{len(before[t])} rows before, {len(after[t])} after")
            sys.exit(1)
    if "0 upserts, 0 deletes" not in text:
        print(f"restart: the unchanged tree was not all unchanged:\n{text}")
        sys.exit(1)
    w.check("restart: unchanged tree, no rows changed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exoflow")
    ap.add_argument("workdir")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    w = World(args.exoflow, args.workdir, args.seed)
    split_case(w)
    for n in range(args.rounds):
        random_round(w, n)
    unchanged_rerun(w)
    # After the restart, a change still clusters against the restored signatures.
    random_round(w, args.rounds)
    print("all rounds agree with the reference")


if __name__ == "__main__":
    main()
