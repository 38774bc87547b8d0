#!/usr/bin/env python3
"""Generate a deterministic corpus of many small source-like files for benchmarks.

Usage: gen_small_files.py OUT_DIR [--files N] [--seed S]

Writes N files (default 200,000) with sizes uniform in 200..2000 bytes, about 100 per
directory, in directories nested 2 or 3 levels below OUT_DIR. Contents are source-like
lines chosen by extension (.rs .py .c .h .js .go .md .txt .json .sh). A small fraction of
files get one planted line each for markers the default rule pack looks for (TODO, FIXME,
HACK, Copyright, SPDX-License-Identifier:, and the AWS documentation's example key
AKIAIOSFODNN7EXAMPLE, which is not a real credential); the filler text never contains them,
so the planted counts printed at the end are the exact number of files per marker.

The same seed and file count always give byte-identical trees. OUT_DIR must not exist or be
empty.
"""

import argparse
import os
import random
import sys
import time

EXTENSIONS = [".rs", ".py", ".c", ".h", ".js", ".go", ".md", ".txt", ".json", ".sh"]
# Rough mix of a source tree: more code than prose.
EXT_WEIGHTS = [14, 14, 12, 6, 12, 10, 8, 8, 8, 8]

# Per-file probabilities of planting each marker (one line per planted marker).
PLANT_RATES = {
    "todo": 0.030,
    "fixme": 0.010,
    "hack": 0.004,
    "copyright": 0.020,
    "spdx": 0.020,
    "aws_key": 0.0005,
}

# Filler must never contain any of these (case-insensitively), or the planted counts lie.
FORBIDDEN = [
    "todo", "fixme", "hack", "xxx", "copyright", "spdx", "akia", "asia", "password",
    "passwd", "pwd", "secret", "license", "permission is hereby", "private key",
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat", "xox", "hooks.slack", "aiza",
    "sk_live", "rk_live", "eyj",
]

WORDS = (
    "buffer cache chunk client config context cursor decode delta digest encode entry event "
    "field frame handle header index inode batch journal kernel layout ledger limit queue "
    "manifest offset packet parser path payload pool reader record region request result "
    "schema segment session shard signal socket source stream table task token tree update "
    "value vector walker window worker writer sample metric filter router store loader "
    "bucket channel cluster cohort column commit cipher extent format grant group lease"
).split()
VERBS = (
    "read write flush open close parse build merge split load store fetch send recv apply "
    "check reset drain spawn scan sort hash pack unpack resolve emit visit insert remove"
).split()
TYPES_C = ["int", "size_t", "uint32_t", "uint64_t", "const char *", "struct node *", "void *", "bool"]
TYPES_RS = ["u32", "u64", "usize", "&str", "String", "Vec<u8>", "Option<u64>", "bool", "&[u8]"]
TYPES_GO = ["int", "int64", "string", "[]byte", "error", "bool", "uint32"]
PROSE = (
    "the of and to in is for on with as by at from that this it be are was an or which "
    "when each then will can must should all any new first last next more most other "
    "data file files tree directory record records value values run runs result results "
    "time times line lines step steps order number user users system service server"
).split()

TEMPLATES = {
    ".rs": [
        "use std::{m}::{{{W}, {W2}}};",
        "pub fn {v}_{w}(&mut self, {w2}: {t}) -> Result<{t2}, Error> {{",
        "    let {w} = self.{w2}.{v}()?;",
        "    if {w}.len() > {n} {{ return Ok({w2}); }}",
        "    for ({i}, {w}) in {w2}.iter().enumerate() {{",
        "        {w}_total += {w2}.{v}({i} as {t});",
        "    }}",
        "}}",
        "/// {Pw} the {w} before the {w2} is {v}ed.",
        "#[derive(Debug, Clone, PartialEq)]",
        "pub struct {W}{W2} {{ {w}: {t}, {w2}: {t2} }}",
        "impl {W} for {W2} {{",
        "    match {w} {{ Some(x) => x, None => {n} }},",
        "        .map(|{i}| {i} * {n})",
        "const MAX_{U}: usize = {n};",
        "",
    ],
    ".py": [
        "import {w}",
        "from {w}.{w2} import {W}{W2}",
        "def {v}_{w}(self, {w2}, {i}={n}):",
        "    {w} = self.{w2}.{v}({i})",
        "    if {w} is None or len({w2}) > {n}:",
        "        return {w2}",
        "    for {i}, {w} in enumerate({w2}):",
        "        {w}_total += {w}.{v}({i})",
        "class {W}{W2}({W}):",
        "    \"\"\"{Pw} the {w} and {v} the {w2}.\"\"\"",
        "    {w}_map = {{\"{w2}\": {n}, \"{w}\": {i}}}",
        "# {Pw} {w} {p} {p2} {w2}",
        "    raise ValueError(f\"bad {w}: {{{w2}!r}}\")",
        "",
    ],
    ".c": [
        "#include <{w}.h>",
        "#include \"{w}_{w2}.h\"",
        "static {tc} {v}_{w}({tc} {w2}, size_t {i})",
        "{{",
        "\tif ({w2} == NULL || {i} > {n})",
        "\t\treturn -{n};",
        "\tfor (size_t {i} = 0; {i} < {w}_len; {i}++)",
        "\t\t{w}[{i}] = {v}_{w2}({i});",
        "\treturn {w}->{w2};",
        "}}",
        "/* {Pw} the {w} {p} {w2}. */",
        "#define {U}_{U2} {n}",
        "\tmemcpy({w}, {w2}, sizeof(*{w}) * {n});",
        "",
    ],
    ".h": [
        "#ifndef {U}_{U2}_H",
        "#define {U}_{U2}_H",
        "#include <stdint.h>",
        "struct {w}_{w2} {{",
        "\t{tc} {w};",
        "\t{tc} {w2}_{i};",
        "}};",
        "{tc} {v}_{w}(struct {w2} *{w}, size_t {i});",
        "/* {Pw} {p} {w} {p2} {w2}. */",
        "#define {U}_MAX {n}",
        "#endif",
        "",
    ],
    ".js": [
        "import {{ {v}{W} }} from './{w}.js';",
        "const {w} = require('{w2}');",
        "export function {v}{W}({w}, {w2} = {n}) {{",
        "  const {w} = await {w2}.{v}({i});",
        "  if (!{w} || {w}.length > {n}) return {w2};",
        "  for (const {i} of {w2}) {{ {w}.push({i} * {n}); }}",
        "  return {{ {w}, {w2}: {n} }};",
        "}}",
        "// {Pw} the {w} {p} {w2}.",
        "  {w}.on('{v}', ({i}) => {w2}.{v}({i}));",
        "class {W}{W2} extends {W} {{",
        "",
    ],
    ".go": [
        "package {w}",
        "import \"{w}/{w2}\"",
        "func ({i} *{W}) {V}{W2}({w} {tg}) ({tg}, error) {{",
        "\t{w}, err := {i}.{w2}.{V}({n})",
        "\tif err != nil {{",
        "\t\treturn nil, fmt.Errorf(\"{v} {w}: %w\", err)",
        "\t}}",
        "\tfor {i}, {w} := range {w2} {{",
        "}}",
        "// {V}{W} {p} the {w} {p2} {w2}.",
        "type {W}{W2} struct {{ {W} {tg}; {W2} {tg} }}",
        "",
    ],
    ".md": [
        "# {Pw} {w} {p} {w2}",
        "## {V} the {w}",
        "The {w} {p} {p2} {w2} {p} {w}, {p2} {v} {p} {w2}.",
        "- {Pw} {p} {w2} {p2} `{v}_{w}`",
        "- See [{w}]({w2}.md) {p} {p2}.",
        "```",
        "{v} --{w} {n} {w2}/",
        "| {w} | {w2} | {n} |",
        "",
    ],
    ".txt": [
        "{Pw} {p} {w} {p2} {w2} {p} {v} {p2} {w}.",
        "{w}: {n}",
        "{Pw} {w2} {p} {p2} {w} {v} {p} {w2} {p2}.",
        "  {w2}={n} {w}={i}",
        "",
    ],
    ".json": [
        "{{",
        "  \"{w}\": {{",
        "    \"{w2}\": {n},",
        "    \"{w}_{w2}\": \"{v}\",",
        "    \"{w}s\": [{n}, {n2}, {i}],",
        "    \"enabled\": true,",
        "  }},",
        "  \"{w2}\": null,",
        "}}",
    ],
    ".sh": [
        "{w}_{w2}=\"${{{U}:-{n}}}\"",
        "if [ -z \"${w}\" ]; then",
        "  echo \"{v}: no {w}\" >&2; exit {i}",
        "fi",
        "for {i} in \"${w2}\"/*; do",
        "  {v} \"${i}\" | sort -u > \"$tmp/{w}\"",
        "done",
        "# {Pw} {p} {w} {p2} {w2}",
        "{v}_{w}() {{ {v} -n {n} \"$@\"; }}",
        "",
    ],
}

PLANT_TEXT = {
    "todo": "TODO: {v} the {w} {p} {w2}",
    "fixme": "FIXME: {w} is {v}ed twice",
    "hack": "HACK: work around {w} {w2}",
    "copyright": "Copyright (c) {year} Example {W} Authors",
    "spdx": "SPDX-License-Identifier: {lic}",
}
LICENSES = ["MIT", "Apache-2.0", "BSD-3-Clause", "MIT OR Apache-2.0", "MPL-2.0"]
COMMENT = {
    ".rs": "// {}", ".py": "# {}", ".c": "/* {} */", ".h": "/* {} */", ".js": "// {}",
    ".go": "// {}", ".md": "<!-- {} -->", ".txt": "{}", ".json": "  \"_note\": \"{}\",",
    ".sh": "# {}",
}
AWS_LINES = {
    ".py": "AWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"  # example key from the AWS docs",
    ".js": "const awsAccessKeyId = 'AKIAIOSFODNN7EXAMPLE'; // example key from the AWS docs",
    ".json": "  \"aws_access_key_id\": \"AKIAIOSFODNN7EXAMPLE\",",
    ".sh": "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
}
AWS_DEFAULT = "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"

POOL_SIZE = 600  # filler lines per extension
DIR_WORDS = (
    "core net util api io fs db auth cli web rpc sched mm crypto drivers tools lib "
    "server client proto cache store index query metrics log config test docs build"
).split()


def render(rng, template):
    w, w2 = rng.choice(WORDS), rng.choice(WORDS)
    return template.format(
        w=w, w2=w2, W=w.capitalize(), W2=w2.capitalize(), U=w.upper(), U2=w2.upper(),
        Pw=rng.choice(PROSE).capitalize(), p=rng.choice(PROSE), p2=rng.choice(PROSE),
        v=rng.choice(VERBS), V=rng.choice(VERBS).capitalize(), i=rng.choice("ijknx"),
        n=rng.randint(0, 4096), n2=rng.randint(0, 99), m=rng.choice(WORDS),
        t=rng.choice(TYPES_RS), t2=rng.choice(TYPES_RS), tc=rng.choice(TYPES_C),
        tg=rng.choice(TYPES_GO), year=rng.randint(2009, 2024), lic=rng.choice(LICENSES),
    )


def build_pools(rng):
    pools = {}
    for ext in EXTENSIONS:
        lines = []
        for _ in range(POOL_SIZE):
            line = render(rng, rng.choice(TEMPLATES[ext])) + "\n"
            low = line.lower()
            if any(bad in low for bad in FORBIDDEN):
                continue
            lines.append(line)
        pools[ext] = lines
    return pools


PAD_PREFIX = {
    ".rs": "// ", ".py": "# ", ".c": "// ", ".h": "// ", ".js": "// ", ".go": "// ",
    ".md": "", ".txt": "", ".json": "", ".sh": "# ",
}


def pad(rng, ext, gap):
    """A final line of exactly `gap` bytes (newline included): a comment of prose words."""
    prefix = PAD_PREFIX[ext]
    if gap < len(prefix) + 4:
        return "\n" * gap
    words = []
    length = len(prefix)
    while length < gap:
        word = rng.choice(PROSE)
        words.append(word)
        length += len(word) + 1
    text = prefix + " ".join(words)
    return text[: gap - 1] + "\n"


def leaf_dirs(rng, count):
    """`count` distinct relative directory paths, 2 or 3 levels deep."""
    leaves = []
    top = 0
    while len(leaves) < count:
        top_name = f"{DIR_WORDS[top % len(DIR_WORDS)]}{top // len(DIR_WORDS) or ''}"
        top += 1
        for mid in range(rng.randint(8, 20)):
            mid_name = f"{rng.choice(DIR_WORDS)}_{mid}"
            if rng.random() < 0.5:
                leaves.append(f"{top_name}/{mid_name}")
            else:
                for sub in range(rng.randint(2, 5)):
                    leaves.append(f"{top_name}/{mid_name}/{rng.choice(DIR_WORDS)}_{sub}")
    return leaves[:count]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--files", type=int, default=200_000, help="number of files (default 200000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args()
    if args.files < 0:
        ap.error("--files must be >= 0")
    if os.path.exists(args.out_dir) and os.listdir(args.out_dir):
        ap.error(f"{args.out_dir} exists and is not empty")

    start = time.monotonic()
    rng = random.Random(args.seed)
    pools = build_pools(rng)
    avg_len = {ext: sum(map(len, lines)) / len(lines) for ext, lines in pools.items()}

    # Directory sizes: about 100 files each (60..140), last one takes the remainder.
    sizes = []
    left = args.files
    while left > 0:
        n = min(left, rng.randint(60, 140))
        sizes.append(n)
        left -= n
    dirs = leaf_dirs(rng, len(sizes))

    planted = dict.fromkeys(list(PLANT_RATES), 0)
    total_bytes = 0
    written = 0
    os.makedirs(args.out_dir, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    choices, randint, random_ = rng.choices, rng.randint, rng.random
    for rel, n in zip(dirs, sizes):
        d = os.path.join(args.out_dir, rel)
        os.makedirs(d, exist_ok=True)
        exts = choices(EXTENSIONS, EXT_WEIGHTS, k=n)
        for k, ext in enumerate(exts):
            size = randint(200, 2000)
            extra = []
            for marker, rate in PLANT_RATES.items():
                if random_() < rate:
                    planted[marker] += 1
                    if marker == "aws_key":
                        extra.append(AWS_LINES.get(ext, AWS_DEFAULT) + "\n")
                    else:
                        text = render(rng, PLANT_TEXT[marker])
                        extra.append(COMMENT[ext].format(text) + "\n")
            head = "#!/bin/sh\n" if ext == ".sh" else ""
            budget = size - len(head) - sum(map(len, extra))
            pool = pools[ext]
            parts = choices(pool, k=int(budget / avg_len[ext]) + 4)
            while sum(map(len, parts)) < budget:
                parts += choices(pool, k=8)
            used = m = 0
            for part in parts:
                if used + len(part) > budget:
                    break
                used += len(part)
                m += 1
            lines = parts[:m]
            gap = budget - used
            if gap > 0:
                lines.append(pad(rng, ext, gap))
            for line in extra:
                lines.insert(randint(0, len(lines)), line)
            body = head + "".join(lines)
            data = body.encode("ascii")
            name = f"{rng.choice(WORDS)}_{k:03d}{ext}"
            fd = os.open(os.path.join(d, name), flags, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            total_bytes += len(data)
            written += 1

    elapsed = time.monotonic() - start
    print(f"wrote {written} files, {total_bytes} bytes ({total_bytes / 2**20:.1f} MiB) "
          f"in {len(dirs)} directories under {args.out_dir} in {elapsed:.1f} s (seed {args.seed})")
    print("files with planted markers: " + ", ".join(f"{k}={v}" for k, v in planted.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
