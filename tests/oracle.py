#!/usr/bin/env python3
"""Independent test oracle for the exoflow replay tests.

Given a corpus directory and a pipeline JSON, this module recomputes the rows
that `exoflow` should write into the `files`, `file_rules` and `matches`
tables, using only Python's `re`, `xxhash` and `math` -- no code is shared with
the Rust implementation.  It then reads the lake that exoflow actually wrote,
once with pyarrow and once with duckdb, and compares both against the
expectation as multisets of rows (row order and the `epoch` column are
ignored; `language` is not compared, entropy is compared to within 1e-9).

    python3 tests/oracle.py CORPUS_DIR LAKE_DIR --pipeline PIPELINE.json \
        [--source NAME] [--no-readers duckdb]

Exit status: 0 when every table matches for every reader, 1 on any
difference, 2 on usage errors.  `expected_rows(corpus, pipeline, source)` can
also be imported and used directly.
"""
import argparse
import json
import math
import os
import re
import stat
import sys
from collections import Counter

import xxhash

COLUMNS = {
    "files": ["source", "path", "path_bytes", "op", "size", "hash", "lines",
              "entropy", "is_binary", "skip_reason"],
    "file_rules": ["source", "path", "path_bytes", "rule", "count"],
    "matches": ["source", "path", "path_bytes", "rule", "line", "column", "offset", "excerpt"],
}
# Accepted pyarrow types per column (the lake contract), checked on the pyarrow read.
TYPES = {"source": "string", "path": "string", "op": "string", "language": "string",
         "skip_reason": "string", "rule": "string", "excerpt": "string",
         "path_bytes": "binary", "hash": "fixed_size_binary[16]", "entropy": "double",
         "is_binary": "bool", "size": "uint64", "lines": "uint64", "count": "uint64",
         "line": "uint64", "column": "uint64", "offset": "uint64", "epoch": "uint64"}
TYPE_ALIASES = {"large_string": "string", "string_view": "string",
                "large_binary": "binary", "binary_view": "binary"}
EXCERPT_MAX = 200
MAX_DIFF_ROWS = 20
EPS = 1e-9


# ---------------------------------------------------------------- expectation
def walk(corpus):
    """Yield (relative path bytes, absolute path bytes) for every non-directory entry."""
    def rec(abs_dir, rel_parts):
        with os.scandir(abs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name != b".git":
                    yield from rec(e.path, rel_parts + [e.name])
            else:
                yield b"/".join(rel_parts + [e.name]), e.path
    yield from rec(os.fsencode(corpus), [])


def entropy(content):
    n = len(content)
    if n == 0:
        return 0.0
    h = 0.0
    for b in range(256):
        c = content.count(bytes((b,)))
        if c:
            p = c / n
            h -= p * math.log2(p)
    return h


def compile_rules(pipeline):
    rules = []
    for r in pipeline.get("rules", []):
        pat = r["pattern"].encode("utf-8")
        if not r.get("regex", False):
            pat = re.escape(pat)
        flags = re.IGNORECASE if r.get("case_insensitive", False) else 0
        rules.append((r["id"], re.compile(pat, flags), bool(r.get("secret", False))))
    return rules


def trim_incomplete_tail(window):
    """Drop a trailing UTF-8 sequence whose lead byte announces more bytes than remain."""
    i = len(window) - 1
    while i >= 0 and window[i] & 0xC0 == 0x80:
        i -= 1
    if i < 0:
        return window
    lead = window[i]
    need = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
    return window[:i] if need > len(window) - i else window


def excerpt(masked, offset):
    line_start = masked.rfind(b"\n", 0, offset) + 1
    line_end = masked.find(b"\n", offset)
    line = masked[line_start:len(masked) if line_end < 0 else line_end]
    if line.endswith(b"\r"):
        line = line[:-1]
    window = line
    if len(line) > EXCERPT_MAX:
        col0 = offset - line_start
        ws = min(max(0, col0 - 40), len(line) - EXCERPT_MAX)
        window = line[ws:ws + EXCERPT_MAX]
        while window and window[0] & 0xC0 == 0x80 and ws > 0:
            window = window[1:]
        if ws + EXCERPT_MAX < len(line):
            window = trim_incomplete_tail(window)
    text = window.decode("utf-8", errors="replace")
    if len(text.encode("utf-8")) > EXCERPT_MAX:
        out, used = [], 0
        for ch in text:
            k = len(ch.encode("utf-8"))
            if used + k > EXCERPT_MAX:
                break
            out.append(ch)
            used += k
        text = "".join(out)
    return text


def scan(content, rules, max_matches):
    """Return ([(rule, count)], [(rule, line, column, offset, excerpt)]) for one file."""
    found = [(rid, list(rx.finditer(content)), secret) for rid, rx, secret in rules]
    masked = bytearray(content)
    for _, ms, secret in found:
        if secret:
            for m in ms:
                # Newlines stay, so lines are the same in the masked copy.
                for i in range(m.start() + 4, m.end()):
                    if masked[i] != 0x0A:
                        masked[i] = 0x2A
    masked = bytes(masked)
    counts, matches = [], []
    for rid, ms, _ in found:
        if ms:
            counts.append((rid, len(ms)))
        for m in ms[:max_matches]:
            off = m.start()
            line = 1 + content.count(b"\n", 0, off)
            column = off - (content.rfind(b"\n", 0, off) + 1) + 1
            matches.append((rid, line, column, off, excerpt(masked, off)))
    return counts, matches


def expected_rows(corpus, pipeline, source=None):
    """Compute {table: [row dict]} for a corpus directory and a parsed pipeline."""
    if source is None:
        source = os.path.basename(os.path.normpath(corpus))
    max_bytes = pipeline.get("max_file_bytes", 67108864)
    max_matches = pipeline.get("max_matches_per_rule", 100)
    scan_binary = pipeline.get("scan_binary", False)
    rules = compile_rules(pipeline)
    out = {t: [] for t in COLUMNS}
    for rel, abs_path in walk(corpus):
        try:
            rel.decode("utf-8")
            path_bytes = None
        except UnicodeDecodeError:
            path_bytes = rel
        path = rel.decode("utf-8", errors="replace")
        row = dict(source=source, path=path, path_bytes=path_bytes, op="upsert", size=None,
                   hash=None, lines=None, entropy=None, is_binary=None, skip_reason=None)
        out["files"].append(row)
        st = os.lstat(abs_path)
        if stat.S_ISLNK(st.st_mode):
            row["skip_reason"] = "symlink"
            continue
        if not stat.S_ISREG(st.st_mode):
            row["skip_reason"] = "not_regular"
            continue
        if st.st_size > max_bytes:
            row.update(size=st.st_size, skip_reason="too_large")
            continue
        with open(abs_path, "rb") as f:
            content = f.read()
        row.update(size=len(content), hash=xxhash.xxh3_128_digest(content),
                   lines=content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0),
                   entropy=entropy(content), is_binary=b"\0" in content[:8192])
        if row["is_binary"] and not scan_binary:
            continue
        counts, matches = scan(content, rules, max_matches)
        for rid, n in counts:
            out["file_rules"].append(dict(source=source, path=path, path_bytes=path_bytes,
                                         rule=rid, count=n))
        for rid, line, column, off, exc in matches:
            out["matches"].append(dict(source=source, path=path, path_bytes=path_bytes, rule=rid,
                                       line=line, column=column, offset=off, excerpt=exc))
    return out


# ---------------------------------------------------------------- lake readers
def parquet_files(lake, table):
    found = []
    for d, _, names in os.walk(os.path.join(lake, table)):
        found += [os.path.join(d, n) for n in names if n.endswith(".parquet")]
    return sorted(found)


def read_pyarrow(lake, table, cols):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    files = parquet_files(lake, table)
    if not files:
        return [], []
    problems = []
    for f in files:  # check every file: a dataset only reports the first file's schema
        schema = pq.read_schema(f)
        for c in cols + ["epoch"]:
            if c not in schema.names:
                problems.append(f"{f}: missing column {c!r}")
                continue
            t = schema.field(c).type
            t = getattr(t, "value_type", t)  # dictionary-encoded columns
            if TYPE_ALIASES.get(str(t), str(t)) != TYPES[c]:
                problems.append(f"{f}: column {c!r} has type {t}, expected {TYPES[c]}")
    dataset = ds.dataset(files, format="parquet")
    return [tuple(r[c] for c in cols) for r in dataset.to_table(columns=cols).to_pylist()], problems


def read_duckdb(lake, table, cols):
    import duckdb
    if not parquet_files(lake, table):
        return [], []
    glob = os.path.join(lake, table, "**", "*.parquet").replace("'", "''")
    sel = ", ".join(f'"{c}"' for c in cols)
    con = duckdb.connect()
    try:
        rows = con.execute(f"SELECT {sel} FROM read_parquet('{glob}', hive_partitioning=false)").fetchall()
    finally:
        con.close()
    return [tuple(r) for r in rows], []


READERS = {"pyarrow": read_pyarrow, "duckdb": read_duckdb}


# ---------------------------------------------------------------- comparison
def normalize(row, cols):
    vals = []
    for c, v in zip(cols, row):
        if c == "hash" and v is not None:
            v = bytes(v).hex()
        elif isinstance(v, (bytes, bytearray, memoryview)):
            v = bytes(v)
        vals.append(v)
    return tuple(vals)


def key(row):
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def close(a, b):
    return len(a) == len(b) and all(
        abs(x - y) <= EPS if isinstance(x, float) and isinstance(y, float) else x == y
        for x, y in zip(a, b))


def diff(expected, actual):
    """Return (missing, extra): rows only in expected / only in actual (multiset)."""
    raw = {}
    for r in expected + actual:
        raw.setdefault(key(r), r)
    ce, ca = Counter(map(key, expected)), Counter(map(key, actual))
    missing = [raw[k] for k, n in (ce - ca).items() for _ in range(n)]
    extra = [raw[k] for k, n in (ca - ce).items() for _ in range(n)]
    for m in list(missing):  # pair up rows whose floats differ only within EPS
        for e in extra:
            if close(m, e):
                missing.remove(m)
                extra.remove(e)
                break
    return missing, extra


def fmt(row, cols):
    return " ".join(f"{c}={v!r}" for c, v in zip(cols, row))


def sort_key(row):
    return tuple((v is None, type(v).__name__, 0 if v is None else v) for v in row)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("lake")
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--source")
    ap.add_argument("--no-readers", action="append", default=[],
                    help="comma-separated readers to skip: pyarrow, duckdb")
    args = ap.parse_args(argv)
    skip = {r.strip() for s in args.no_readers for r in s.split(",") if r.strip()}
    if skip - set(READERS):
        ap.error(f"unknown reader(s): {', '.join(sorted(skip - set(READERS)))}")
    if not os.path.isdir(args.corpus):
        ap.error(f"corpus is not a directory: {args.corpus}")
    try:
        with open(args.pipeline, encoding="utf-8") as f:
            pipeline = json.load(f)
    except (OSError, ValueError) as e:
        ap.error(f"cannot read pipeline {args.pipeline}: {e}")
    readers = [r for r in READERS if r not in skip]

    expected = expected_rows(args.corpus, pipeline, args.source)
    ok = True
    for table, cols in COLUMNS.items():
        exp = [normalize(tuple(r[c] for c in cols), cols) for r in expected[table]]
        counts, status = {}, []
        for name in readers:
            try:
                rows, problems = READERS[name](args.lake, table, cols)
            except Exception as e:  # unreadable lake, missing column, ...
                print(f"{table} [{name}]: read failed: {type(e).__name__}: {e}")
                counts[name], ok = "?", False
                status.append(f"{name} unreadable")
                continue
            act = [normalize(r, cols) for r in rows]
            counts[name] = len(act)
            for p in problems:
                print(f"{table} [{name}]: {p}")
            missing, extra = diff(exp, act)
            if missing or extra or problems:
                ok = False
                status.append(f"{name} differs")
            if missing or extra:
                print(f"{table} [{name}]: {len(missing)} expected rows missing, "
                      f"{len(extra)} unexpected rows (showing up to {MAX_DIFF_ROWS})")
                both = [("-", r) for r in missing] + [("+", r) for r in extra]
                for sign, r in sorted(both, key=lambda x: sort_key(x[1]))[:MAX_DIFF_ROWS]:
                    print(f"  {sign} {fmt(r, cols)}")
        known = {n: c for n, c in counts.items() if c != "?"}
        if len(set(known.values())) > 1:
            ok = False
            status.append("readers disagree on row count")
        got = ", ".join(f"{counts[n]} {n}" for n in readers)
        print(f"{table}: {len(exp)} rows expected{', ' + got if got else ''}, "
              f"{'; '.join(status) if status else 'OK'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
