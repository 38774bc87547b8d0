#!/usr/bin/env python3
"""Recall and precision of exoflow's near-duplicate clusters on planted pairs.

Generates a corpus of isolated pairs of files (each pair from its own random base text, so no two
pairs share content) whose exact Jaccard similarity of shingle sets is known: a variant is the base
with a controlled number of words replaced, then fine-tuned by appending a few unique bytes, until
its Jaccard similarity to the base (computed here from the two shingle sets) is at a target level
(at or just above it for levels above the threshold, at or just below it for the others).  Replays
the corpus with the pipeline (default pipelines/dedupe.json), reads the clusters as of the latest
epoch, and prints per level the fraction of pairs in one cluster, then

  recall    = pairs with J >= threshold + 0.05 that share a cluster / all such pairs
  precision = pairs with J <= threshold - 0.1 that do NOT share a cluster / all such pairs

and exits 1 when either is below its target (--min-recall, --min-precision; 0.95 by default).

    python3 benches/near_dup_quality.py [--pairs 200] [--size 8192] [--seed 1]
        [--exoflow target/release/exoflow] [--pipeline pipelines/dedupe.json] [--workdir DIR]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import minhash_reference as mr  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def shingle_set(content, w):
    return mr.shingles(content, w)


def jaccard(a, b):
    return len(a & b) / len(a | b) if a or b else 1.0


class Generator:
    def __init__(self, rng, w, size):
        self.rng, self.w, self.size = rng, w, size
        self.vocab = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 9)))
                      for _ in range(4000)]

    def words(self, n_bytes):
        words, used = [], 0
        while used < n_bytes:
            word = self.rng.choice(self.vocab)
            words.append(word)
            used += len(word) + 1
        return words

    @staticmethod
    def text(words):
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        return ("\n".join(lines) + "\n").encode()

    def pair(self, target, above):
        """(base, variant, exact J): J >= target (above) or J <= target (not above), close to it."""
        base_words = self.words(self.size)
        base = self.text(base_words)
        sa = shingle_set(base, self.w)
        order = list(range(len(base_words)))
        self.rng.shuffle(order)
        replacements = [self.rng.choice(self.vocab) for _ in order]

        def variant(c):
            ws = list(base_words)
            for i in order[:c]:
                ws[i] = replacements[i] + "q"  # 'q' makes the replaced word new for sure
            return self.text(ws)

        # The largest number of replaced words that keeps J >= target (J falls with c).
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if jaccard(sa, shingle_set(variant(mid), self.w)) >= target:
                lo = mid
            else:
                hi = mid - 1
        c = lo if above else lo + 1
        v = variant(c)
        j = jaccard(sa, shingle_set(v, self.w))
        if above:
            # Appending unique bytes only adds shingles to the variant: J comes down to the target.
            sb = shingle_set(v, self.w)
            inter, union = len(sa & sb), len(sa | sb)
            while True:
                cand = v + self.rng.choice("0123456789").encode()
                new = cand[-self.w:]
                if new in sb:
                    v = cand
                    continue
                if inter / (union + (new not in sa)) < target:
                    break
                v = cand
                sb.add(new)
                inter += new in sa
                union += new not in sa
            j = jaccard(sa, shingle_set(v, self.w))
            assert j >= target and abs(j - inter / union) < 1e-12
        return base, v, j


def read_clusters(lake):
    problems = []
    got = mr.lake_clusters(lake, problems)
    if problems:
        sys.exit("the near_duplicates table is inconsistent:\n" + "\n".join(problems))
    member_of = {}
    for cid, members in got.items():
        for f in members:
            member_of[f[1].decode()] = cid
    return got, member_of


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=200, help="pairs per similarity level")
    ap.add_argument("--size", type=int, default=8192, help="bytes per file, about")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--exoflow", default=os.path.join(ROOT, "target", "release", "exoflow"))
    ap.add_argument("--pipeline", default=os.path.join(ROOT, "pipelines", "dedupe.json"))
    ap.add_argument("--workdir")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--min-precision", type=float, default=0.95)
    args = ap.parse_args()

    pipeline = mr.load_pipeline(args.pipeline)
    p = mr.params(pipeline)
    thr, w = p["threshold"], p["shingle"]
    high = [round(thr + 0.05, 6), round(thr + 0.1, 6), round(thr + 0.15, 6)]
    low = [round(thr - 0.1, 6), round(thr - 0.2, 6), round(thr - 0.3, 6)]
    # The threshold itself (at or just above) and threshold - 0.05 (at or just below) are
    # reported, not scored.
    levels = [(t, True) for t in high + [thr]] + [(t, False) for t in low + [round(thr - 0.05, 6)]]
    levels = [(t, a) for t, a in levels if 0 < t <= 1]

    workdir = args.workdir or tempfile.mkdtemp(prefix="near-dup-quality-")
    tree, lake = os.path.join(workdir, "corpus"), os.path.join(workdir, "lake")
    for d in (tree, lake):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(tree)
    rng = random.Random(args.seed)
    gen = Generator(rng, w, args.size)
    started = time.time()
    pairs = []  # (level, exact J, name a, name b)
    for level, above in levels:
        for i in range(args.pairs):
            base, variant, j = gen.pair(level, above)
            a, b = f"l{level:.3f}/p{i:04d}a.txt", f"l{level:.3f}/p{i:04d}b.txt"
            for name, content in ((a, base), (b, variant)):
                os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
                with open(os.path.join(tree, name), "wb") as f:
                    f.write(content)
            pairs.append((level, j, a, b))
    generated = time.time() - started
    started = time.time()
    out = subprocess.run([args.exoflow, "replay", tree, "--out", lake, "--pipeline", args.pipeline],
                         capture_output=True, env=dict(os.environ, RUST_LOG="warn"))
    if out.returncode != 0:
        sys.exit(f"exoflow replay failed:\n{out.stderr.decode()}")
    replayed = time.time() - started
    got, member_of = read_clusters(lake)

    # Isolation: a cluster must not join files of two pairs (the corpus is built so it cannot
    # happen through shared content; if it does, the precision figure would be meaningless).
    pair_of = {}
    for k, (_, _, a, b) in enumerate(pairs):
        pair_of[a] = pair_of[b] = k
    crossing = sum(1 for members in got.values()
                   if len({pair_of.get(f[1].decode()) for f in members}) > 1)

    together = defaultdict(lambda: [0, 0])
    js = defaultdict(list)
    rec_n = rec_hit = prec_n = prec_ok = 0
    for level, j, a, b in pairs:
        same = a in member_of and member_of[a] == member_of.get(b)
        together[level][0] += same
        together[level][1] += 1
        js[level].append(j)
        if j >= thr + 0.05 - 1e-12:
            rec_n += 1
            rec_hit += same
        if j <= thr - 0.1 + 1e-12:
            prec_n += 1
            prec_ok += not same
    print(f"corpus: {len(pairs)} pairs ({args.pairs} per level), {2 * len(pairs)} files of about "
          f"{args.size} bytes, shingle {w}, signature {p['signature']}, bands {p['bands']} x rows "
          f"{p['rows']}, threshold {thr}; seed {args.seed}")
    print(f"time: generated in {generated:.1f} s, replayed in {replayed:.1f} s")
    print("level  exact J range        pairs  in one cluster")
    for level in sorted(together):
        hit, n = together[level]
        print(f"{level:5.3f}  [{min(js[level]):.4f}, {max(js[level]):.4f}]  {n:6d}  "
              f"{hit / n:.4f} ({hit})")
    recall = rec_hit / rec_n if rec_n else float("nan")
    precision = prec_ok / prec_n if prec_n else float("nan")
    print(f"recall (J >= {thr + 0.05:.2f}): {recall:.4f} ({rec_hit} of {rec_n} pairs)")
    print(f"precision (J <= {thr - 0.1:.2f}, not clustered): {precision:.4f} "
          f"({prec_ok} of {prec_n} pairs)")
    print(f"clusters joining two pairs: {crossing}")
    summary = {"pairs": len(pairs), "recall": recall, "precision": precision, "crossing": crossing}
    print("json", json.dumps(summary))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = recall >= args.min_recall and precision >= args.min_precision and crossing == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
