#!/usr/bin/env python3
"""Print one ripgrep regex that matches wherever any rule of an exoflow pipeline matches.

Usage: rules_to_rg.py PIPELINE.json

Each rule becomes one branch of a top-level alternation:
  - literal rules (the default) have every regex meta character escaped, as Rust's
    regex_syntax::escape does, so the branch matches exactly the literal bytes;
  - regex rules are wrapped as (?:...) so their own alternations stay inside the branch;
  - case-insensitive rules are additionally wrapped as (?i:...).

Used by benches/replay_vs_rg.sh as `rg -e "$(python3 benches/rules_to_rg.py FILE)"`.
Differences that do not matter for timing: exoflow's case folding is ASCII-only and its
regexes use bytes syntax, while ripgrep folds Unicode case and matches classes as Unicode.
"""

import json
import sys

# The characters regex_syntax::is_meta_character treats as meta (Rust regex crate).
# '#', '&', '-' and '~' only matter in verbose mode or character-class set operations,
# but escaping them is always allowed and always harmless.
META = set("\\.+*?()|[]{}^$#&-~")


def escape(literal: str) -> str:
    return "".join("\\" + c if c in META else c for c in literal)


def rule_branch(rule: dict) -> str:
    pattern = rule["pattern"]
    if rule.get("regex", False):
        branch = "(?:" + pattern + ")"
    else:
        branch = escape(pattern)
    if rule.get("case_insensitive", False):
        branch = "(?i:" + branch + ")"
    return branch


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        pipeline = json.load(f)
    rules = pipeline.get("rules", [])
    if not rules:
        print(f"{argv[1]}: the pipeline has no rules", file=sys.stderr)
        return 1
    print("|".join(rule_branch(r) for r in rules))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
