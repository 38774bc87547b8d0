#!/usr/bin/env python3
"""Independent reference for exoflow's near-duplicate feature.

Written from the README ("Near-duplicates") alone: the MinHash scheme `exoflow-oph-1` (one
permutation hashing with optimal densification) and the clustering (nodes = distinct signatures,
LSH band buckets capped at `max_bucket`, edges by estimated Jaccard >= threshold, connected
components of two or more files).  No code is shared with the Rust implementation.

    python3 tests/minhash_reference.py check LAKE --pipeline P.json [--tree DIR [--source NAME]]
        [--min-overflow N] [--epoch E]
    python3 tests/minhash_reference.py signature FILE [--shingle 5] [--signature 256]

`check` reads the lake with pyarrow and compares:
  * with --tree: the `signatures` of the current versions against signatures computed here from
    the files on disk, bit for bit, and that files which must get none have none;
  * the clusters as of the latest epoch (sum of `near_duplicates` diffs) against clusters computed
    here from the signatures (from disk with --tree, else from the lake's own signatures), as sets
    of (source, path), with the named representative a member and every member's similarity to it;
  * the `near_duplicates/''/clusters|files|overflow_buckets` rows of `stats_current.parquet`;
  * the history: diffs are +-1, running sums stay in {0, 1} at every epoch, a representative's
    cluster id never changes and is below the id of every member known by its id.
Exit status 0 when everything agrees, 1 on a difference, 2 on usage errors.
"""
import argparse
import json
import os
import stat
import sys
from collections import defaultdict

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
EMPTY = 0xFFFFFFFF
BINARY_PROBE = 8192
DEFAULTS = {"shingle": 5, "signature": 256, "bands": 16, "rows": 8, "threshold": 0.8,
            "min_size": 64, "max_bucket": 100}


# ---------------------------------------------------------------- the signature scheme
def fmix64(x):
    """MurmurHash3's 64-bit finalizer."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    x ^= x >> 33
    return x


def shingles(content, w):
    """The set of shingles: every window of w bytes, the whole content when shorter, none when empty."""
    n = len(content)
    if n == 0:
        return set()
    if n < w:
        return {bytes(content)}
    return {content[i:i + w] for i in range(n - w + 1)}


def shingle_hash(sh):
    return fmix64((int.from_bytes(sh, "little") + len(sh) * GOLDEN) & MASK)


def signature(content, w, k):
    """exoflow-oph-1: k uint32 values, in bin order."""
    bins = [None] * k
    for sh in shingles(content, w):
        h = shingle_hash(sh)
        b = ((h >> 32) * k) >> 32
        v = h & 0xFFFFFFFF
        cur = bins[b]
        if cur is None or v < cur:
            bins[b] = v
    if all(v is None for v in bins):
        return (EMPTY,) * k
    out = []
    for i in range(k):
        v = bins[i]
        a = 1
        while v is None:
            j = ((fmix64(((i << 32) | a) & MASK) >> 32) * k) >> 32
            v = bins[j]
            a += 1
        out.append(v)
    return tuple(out)


def to_bytes(sig):
    return b"".join(v.to_bytes(4, "little") for v in sig)


def from_bytes(raw):
    return tuple(int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4))


def similarity(a, b):
    return sum(1 for x, y in zip(a, b) if x == y) / len(a)


# ---------------------------------------------------------------- pipelines and trees
def params(pipeline):
    nd = dict(DEFAULTS)
    nd.update(pipeline.get("near_duplicates") or {})
    nd["scan_binary"] = bool(pipeline.get("scan_binary", False))
    nd["max_file_bytes"] = pipeline.get("max_file_bytes", 67108864)
    return nd


def load_pipeline(path):
    with open(path) as f:
        return json.load(f)


def walk(tree):
    """(relative path bytes, absolute path bytes) of every entry that is not a directory."""
    def rec(abs_dir, rel):
        with os.scandir(abs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name != b".git":
                    yield from rec(e.path, rel + [e.name])
            else:
                yield b"/".join(rel + [e.name]), e.path
    yield from rec(os.fsencode(tree), [])


def eligible(content, p):
    """Whether a regular file's content gets a signature."""
    if len(content) < p["min_size"]:
        return False
    if b"\0" in content[:BINARY_PROBE] and not p["scan_binary"]:
        return False
    return True


def tree_signatures(tree, p, source):
    """{(source, path bytes): signature} for the files of a tree that get one, and the set of all
    (source, path bytes) seen (those without a signature included)."""
    sigs, seen = {}, set()
    for rel, abs_path in walk(tree):
        key = (source, rel)
        seen.add(key)
        st = os.lstat(abs_path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > p["max_file_bytes"]:
            continue
        with open(abs_path, "rb") as f:
            content = f.read()
        if eligible(content, p):
            sigs[key] = signature(content, p["shingle"], p["signature"])
    return sigs, seen


# ---------------------------------------------------------------- clusters
def clusters(sigs, p):
    """Reference clustering of {file: signature}.

    Returns (list of clusters as frozensets of files, number of overflowing buckets, edges as a set
    of frozensets of two signatures)."""
    nodes = defaultdict(list)  # signature -> files
    for f, s in sigs.items():
        nodes[s].append(f)
    bands, rows, cap, thr = p["bands"], p["rows"], p["max_bucket"], p["threshold"]
    buckets = defaultdict(set)
    for s in nodes:
        for b in range(bands):
            buckets[(b, s[b * rows:(b + 1) * rows])].add(s)
    overflow = 0
    candidates = set()
    for members in buckets.values():
        if len(members) > cap:
            overflow += 1
            continue
        ms = sorted(members)
        for i in range(len(ms)):
            for j in range(i + 1, len(ms)):
                candidates.add((ms[i], ms[j]))
    parent = {s: s for s in nodes}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges = set()
    for a, b in candidates:
        if similarity(a, b) >= thr:
            edges.add(frozenset((a, b)))
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[ra] = rb
    comps = defaultdict(list)
    for s, files in nodes.items():
        comps[find(s)].extend(files)
    out = [frozenset(files) for files in comps.values() if len(files) >= 2]
    return out, overflow, edges


# ---------------------------------------------------------------- the lake
def read_table(lake, table):
    import pyarrow.parquet as pq
    d = os.path.join(lake, table)
    if not os.path.isdir(d):
        return []
    rows = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".parquet"):
            rows += pq.read_table(os.path.join(d, name)).to_pylist()
    return rows


def key_of(row, prefix=""):
    raw = row[prefix + "path_bytes"] if (prefix + "path_bytes") in row else None
    path = raw if raw is not None else row[prefix + "path"].encode("utf-8")
    return (row[prefix + "source"], bytes(path))


def show(key):
    return f"{key[0]}:{key[1].decode('utf-8', 'replace')}"


def lake_current(lake, epoch=None):
    """{file: epoch of its current upserted version} (deleted files left out), and the max epoch."""
    latest = {}
    max_epoch = 0
    for r in read_table(lake, "files"):
        if epoch is not None and r["epoch"] > epoch:
            continue
        k = key_of(r)
        max_epoch = max(max_epoch, r["epoch"])
        if k not in latest or latest[k][0] < r["epoch"]:
            latest[k] = (r["epoch"], r["op"])
    return {k: e for k, (e, op) in latest.items() if op == "upsert"}, max_epoch


def lake_signatures(lake, k, problems, epoch=None):
    """{file: signature} of the current versions, from the signatures table."""
    current, _ = lake_current(lake, epoch)
    by_version = {}
    for r in read_table(lake, "signatures"):
        vkey = key_of(r) + (r["epoch"],)
        if vkey in by_version:
            problems.append(f"signatures: two rows for {show(vkey[:2])} at epoch {vkey[2]}")
        raw = bytes(r["signature"])
        if len(raw) != 4 * k:
            problems.append(f"signatures: {show(vkey[:2])} has {len(raw)} bytes, expected {4 * k}")
        by_version[vkey] = from_bytes(raw)
    upserts = {key_of(r) + (r["epoch"],) for r in read_table(lake, "files") if r["op"] == "upsert"}
    for vkey in by_version:
        if vkey not in upserts:
            problems.append(f"signatures: {show(vkey[:2])} at epoch {vkey[2]} is no upserted version")
    return {f: by_version[f + (e,)] for f, e in current.items() if f + (e,) in by_version}


def lake_clusters(lake, problems, epoch=None, notes=None):
    """The clusters as of `epoch` (default: all) from near_duplicates: {cluster id: {file: (rep, sim)}},
    checking the history on the way."""
    notes = notes if notes is not None else defaultdict(int)
    rows = [r for r in read_table(lake, "near_duplicates") if epoch is None or r["epoch"] <= epoch]
    by_epoch = defaultdict(list)
    for r in rows:
        by_epoch[r["epoch"]].append(r)
    sums = defaultdict(int)
    rep_id = {}
    for e in sorted(by_epoch):
        seen = {}
        for r in by_epoch[e]:
            if r["diff"] not in (1, -1):
                problems.append(f"near_duplicates: diff {r['diff']} at epoch {e}")
            m = (key_of(r), r["cluster"], (r["representative_source"], r["representative_path"]),
                 r["similarity"])
            if m in seen:
                if seen[m] == r["diff"]:
                    problems.append(f"near_duplicates: {show(m[0])} twice with diff {r['diff']} "
                                    f"at epoch {e}")
                else:
                    # Two rows that cancel: the membership as the table shows it did not change.
                    notes["cancelling"] += 1
                    problems.append(f"near_duplicates: {show(m[0])} in {m[1]} with similarity "
                                    f"{m[3]} added and removed at epoch {e}")
            seen[m] = r["diff"]
            sums[m] += r["diff"]
            rep = m[2]
            if rep_id.setdefault(rep, r["cluster"]) != r["cluster"]:
                problems.append(f"near_duplicates: representative {rep} has ids {rep_id[rep]} and "
                                f"{r['cluster']}")
            c = r["cluster"]
            if len(c) != 32 or any(ch not in "0123456789abcdef" for ch in c):
                problems.append(f"near_duplicates: cluster id {c!r} is not 32 lowercase hex digits")
        for m, v in sums.items():
            if v not in (0, 1):
                problems.append(f"near_duplicates: membership {show(m[0])} in {m[1]} sums to {v} "
                                f"at epoch {e}")
    ids = defaultdict(set)
    for rep, c in rep_id.items():
        ids[c].add(rep)
    for c, reps in ids.items():
        if len(reps) > 1:
            problems.append(f"near_duplicates: cluster id {c} names representatives {sorted(reps)}")
    out = defaultdict(dict)
    for (f, c, rep, sim), v in sums.items():
        if v == 1:
            if f in out[c]:
                problems.append(f"near_duplicates: {show(f)} twice in cluster {c}")
            out[c][f] = (rep, sim)
    # The representative is the member with the least path id: below every member whose id is known.
    known = {(src, path): c for (src, path), c in rep_id.items()}
    for c, members in out.items():
        for f in members:
            fid = known.get((f[0], f[1].decode("utf-8", "replace")))
            if fid is not None and fid < c:
                problems.append(f"near_duplicates: cluster {c} has member {show(f)} with the "
                                f"smaller id {fid}")
    return dict(out)


def stats_near(lake):
    import pyarrow.parquet as pq
    path = os.path.join(lake, "stats_current.parquet")
    out = {"clusters": 0, "files": 0, "overflow_buckets": 0}
    if not os.path.exists(path):
        return out
    for r in pq.read_table(path).to_pylist():
        if r["dimension"] == "near_duplicates" and r["key"] == "":
            out[r["metric"]] = r["value"]
    return out


# ---------------------------------------------------------------- comparison
def compare_clusters(expected, sigs, got, problems):
    """expected: list of frozensets of files; got: {id: {file: (rep, sim)}}."""
    exp = {c: None for c in expected}
    got_sets = {}
    for cid, members in got.items():
        files = frozenset(members)
        if files in got_sets:
            problems.append(f"clusters: two ids for the same members {cid}, {got_sets[files]}")
        got_sets[files] = cid
        reps = {rep for rep, _ in members.values()}
        if len(reps) != 1:
            problems.append(f"clusters: {cid} names several representatives {sorted(reps)}")
            continue
        rep = reps.pop()
        rep_files = [f for f in files if f[0] == rep[0] and f[1].decode("utf-8", "replace") == rep[1]]
        if len(rep_files) != 1:
            problems.append(f"clusters: {cid}'s representative {rep} is not one of its members")
            continue
        rep_file = rep_files[0]
        for f, (_, sim) in members.items():
            if f not in sigs or rep_file not in sigs:
                problems.append(f"clusters: {cid} member {show(f)} has no current signature")
                continue
            want = similarity(sigs[f], sigs[rep_file])
            if abs(want - sim) > 1e-12:
                problems.append(f"clusters: {show(f)} similarity {sim} to {show(rep_file)}, "
                                f"expected {want}")
    missing = [c for c in exp if c not in got_sets]
    extra = [c for c in got_sets if c not in exp]
    for c in missing[:10]:
        problems.append(f"clusters: expected {sorted(show(f) for f in c)}, not in the lake")
    for c in extra[:10]:
        problems.append(f"clusters: the lake has {sorted(show(f) for f in c)}, not expected")
    if len(missing) + len(extra) > 20:
        problems.append(f"clusters: {len(missing)} missing, {len(extra)} extra in all")


def check(lake, pipeline, tree=None, source=None, epoch=None, min_overflow=0):
    p = params(pipeline)
    problems = []
    lake_sigs = lake_signatures(lake, p["signature"], problems, epoch)
    lines = []
    if tree is not None:
        if source is None:
            source = os.path.basename(os.path.normpath(tree))
        sigs, seen = tree_signatures(tree, p, source)
        current, _ = lake_current(lake, epoch)
        for f in sorted(seen - set(current)):
            problems.append(f"files: {show(f)} is on disk but has no current version in the lake")
        bad = 0
        for f in sorted(set(sigs) | set(lake_sigs)):
            a, b = sigs.get(f), lake_sigs.get(f)
            if a != b:
                bad += 1
                if bad <= 10:
                    if a is None:
                        problems.append(f"signatures: {show(f)} must have none, the lake has one")
                    elif b is None:
                        problems.append(f"signatures: {show(f)} has none in the lake")
                    else:
                        first = next(i for i in range(len(a)) if a[i] != b[i])
                        problems.append(f"signatures: {show(f)} differs at {first}: expected "
                                        f"{a[first]:#010x}, lake {b[first]:#010x} "
                                        f"({similarity(a, b):.3f} equal)")
        if bad > 10:
            problems.append(f"signatures: {bad} differ in all")
        lines.append(f"signatures: {len(sigs)} of {len(seen)} files have one; "
                     f"{len(sigs) - bad if bad <= len(sigs) else 0} equal the lake's")
    else:
        sigs = lake_sigs
    expected, overflow, _ = clusters(sigs, p)
    notes = defaultdict(int)
    got = lake_clusters(lake, problems, epoch, notes)
    compare_clusters(expected, sigs, got, problems)
    want_stats = {"clusters": len(expected), "files": sum(len(c) for c in expected),
                  "overflow_buckets": overflow}
    if epoch is None:
        have = stats_near(lake)
        if have != want_stats:
            problems.append(f"stats_current: near_duplicates {have}, expected {want_stats}")
    if overflow < min_overflow:
        problems.append(f"reference: {overflow} overflowing buckets, the case needs {min_overflow}")
    lines.append(f"clusters: {want_stats['clusters']} of {want_stats['files']} files, "
                 f"{overflow} overflowing buckets; the lake has {len(got)}")
    return problems, lines


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("lake")
    c.add_argument("--pipeline", required=True)
    c.add_argument("--tree")
    c.add_argument("--source")
    c.add_argument("--epoch", type=int)
    c.add_argument("--min-overflow", type=int, default=0)
    s = sub.add_parser("signature")
    s.add_argument("file")
    s.add_argument("--shingle", type=int, default=5)
    s.add_argument("--signature", type=int, default=256)
    args = ap.parse_args(argv)
    if args.cmd == "signature":
        with open(args.file, "rb") as f:
            print(to_bytes(signature(f.read(), args.shingle, args.signature)).hex())
        return 0
    problems, lines = check(args.lake, load_pipeline(args.pipeline), args.tree, args.source,
                            args.epoch, args.min_overflow)
    for line in lines:
        print(line)
    for pr in problems:
        print("DIFFERENCE", pr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
