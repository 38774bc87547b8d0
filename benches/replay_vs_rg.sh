#!/usr/bin/env bash
# End-to-end benchmark: `exoflow replay` of a tree against ripgrep searching the same tree for
# the alternation of the same rules (the floor for "read every file and run the rules").
#
# Usage: benches/replay_vs_rg.sh [--runs N] [--exoflow PATH] [--pipeline FILE] [--workers N] TREE...
#
#   --runs N         timed runs per tool and tree (default 5)
#   --exoflow PATH   exoflow binary (default target/release/exoflow, built with
#                    `cargo build --release` when missing)
#   --pipeline FILE  rule pack for both tools (default: exoflow's built-in default pack, and
#                    pipelines/default.json for rg)
#   --workers N      pass --workers N to exoflow and -j N to rg (default: each tool's own)
#
# Per tree: one warm-up read, then N alternating runs of
#   exoflow replay TREE --out $TMP/lake-$i     (fresh lake each run, removed after)
#   rg -c -uuu --no-unicode --no-messages -e "$(benches/rules_to_rg.py PIPELINE)" TREE > /dev/null
# (--no-unicode: ASCII classes and case folding, the semantics of exoflow's rules, and rg's faster mode)
# each under /usr/bin/time -v. Prints each run's wall times, then a table with the medians,
# the median of the per-run exoflow/rg ratios, peak RSS (max over runs) and exoflow files/s.
#
# The file count is every regular file under TREE (what rg -uuu reads); exoflow honours
# .gitignore and skips binary files, so it may open fewer. Times come from GNU time, so they
# have 10 ms resolution: use trees that take well over a second.
#
# Needs ripgrep, GNU time and python3: apt-get install ripgrep time python3
set -euo pipefail

die() { echo "replay_vs_rg: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=5
exoflow=""
pipeline=""
workers=""
trees=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) [[ $# -ge 2 ]] || die "--runs needs a value"; runs=$2; shift 2 ;;
        --runs=*) runs=${1#*=}; shift ;;
        --exoflow) [[ $# -ge 2 ]] || die "--exoflow needs a value"; exoflow=$2; shift 2 ;;
        --exoflow=*) exoflow=${1#*=}; shift ;;
        --pipeline) [[ $# -ge 2 ]] || die "--pipeline needs a value"; pipeline=$2; shift 2 ;;
        --pipeline=*) pipeline=${1#*=}; shift ;;
        --workers) [[ $# -ge 2 ]] || die "--workers needs a value"; workers=$2; shift 2 ;;
        --workers=*) workers=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; trees+=("$@"); break ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) trees+=("$1"); shift ;;
    esac
done
[[ ${#trees[@]} -gt 0 ]] || die "no TREE given (see --help)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, not '$runs'"
[[ -z $workers || $workers =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer"

command -v rg >/dev/null || die "ripgrep (rg) not found; install it with: apt-get install ripgrep"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found; install GNU time with: apt-get install time"
/usr/bin/time -v true >/dev/null 2>&1 ||
    die "/usr/bin/time does not take -v (not GNU time?); install it with: apt-get install time"
command -v python3 >/dev/null || die "python3 not found; install it with: apt-get install python3"

# Resolve every path before anything changes directory.
abs_trees=()
for t in "${trees[@]}"; do
    [[ -e $t ]] || die "$t: no such file or directory"
    [[ -d $t ]] || die "$t: not a directory (rg cannot search inside archives; unpack it first)"
    abs_trees+=("$(cd "$t" && pwd)")
done
if [[ -n $pipeline ]]; then
    [[ -f $pipeline ]] || die "$pipeline: no such pipeline file"
    pipeline=$(cd "$(dirname "$pipeline")" && pwd)/$(basename "$pipeline")
fi
if [[ -z $exoflow ]]; then
    exoflow=$root/target/release/exoflow
    if [[ ! -x $exoflow ]]; then
        echo "building $exoflow (cargo build --release)" >&2
        (cd "$root" && cargo build --release) || die "cargo build --release failed"
    fi
elif [[ $exoflow != */* ]]; then
    exoflow=$(type -P "$exoflow") || die "$exoflow: not found in PATH"
else
    exoflow=$(cd "$(dirname "$exoflow")" && pwd)/$(basename "$exoflow")
fi
[[ -x $exoflow ]] || die "$exoflow: not an executable"

pattern=$(python3 "$root/benches/rules_to_rg.py" "${pipeline:-$root/pipelines/default.json}") ||
    die "cannot turn the pipeline into an rg pattern"
rg_check=0
rg --no-config -q -e "$pattern" /dev/null || rg_check=$?
[[ $rg_check -le 1 ]] || die "rg rejects the rule pattern: $pattern"

exo_args=()
rg_args=(--no-config -c -uuu --no-unicode --no-messages)
[[ -n $pipeline ]] && exo_args+=(--pipeline "$pipeline")
[[ -n $workers ]] && { exo_args+=(--workers "$workers"); rg_args+=(-j "$workers"); }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/exoflow-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
results=$TMP/results.tsv
: >"$results"

# timed OUT_PREFIX CMD... : runs CMD under GNU time; sets wall (seconds), rss_kb and rc.
timed() {
    local prefix=$1
    shift
    rc=0
    /usr/bin/time -v -o "$prefix.time" "$@" >"$prefix.out" 2>"$prefix.err" || rc=$?
    read -r wall rss_kb < <(awk '
        /Elapsed \(wall clock\) time/ {
            v = $NF; n = split(v, p, ":"); s = 0
            for (i = 1; i <= n; i++) s = s * 60 + p[i]
            wall = s
        }
        /Maximum resident set size/ { rss = $NF }
        END { if (wall == "" || rss == "") exit 1; printf "%.2f %d\n", wall, rss }
    ' "$prefix.time") || die "cannot parse /usr/bin/time output: $(cat "$prefix.time")"
}

echo "exoflow: $exoflow${exo_args[*]+ ${exo_args[*]}}"
echo "rg:      $(rg --version | head -n1)${workers:+ (-j $workers)}"
echo "rules:   ${pipeline:-built-in default pack (rg: pipelines/default.json)}"
echo "runs:    $runs per tool and tree"

rg_errors=0
for tree in "${abs_trees[@]}"; do
    read -r nfiles nbytes < <(find "$tree" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { print n + 0, b + 0 }')
    echo
    printf '%s: %d files, %.1f MiB\n' "$tree" "$nfiles" "$(awk -v b="$nbytes" 'BEGIN { print b / 1048576 }')"
    # Warm-up: read every file once so all runs see the same (warm) page cache.
    rg --no-config -c -uuu --no-messages x "$tree" >/dev/null 2>&1 || true
    for ((i = 1; i <= runs; i++)); do
        lake=$TMP/lake-$i
        rm -rf "$lake"
        timed "$TMP/exoflow" "$exoflow" replay "$tree" --out "$lake" ${exo_args[@]+"${exo_args[@]}"}
        if [[ $rc -ne 0 ]]; then
            tail -n 20 "$TMP/exoflow.err" >&2
            die "exoflow exited with status $rc on $tree (run $i)"
        fi
        ex_wall=$wall ex_rss=$rss_kb
        rm -rf "$lake"

        timed "$TMP/rg" rg "${rg_args[@]}" -e "$pattern" "$tree"
        # 0: matches, 1: no match (fine), 2: some error (unreadable files; reported at the end).
        if [[ $rc -eq 2 ]]; then
            rg_errors=1
        elif [[ $rc -gt 2 ]]; then
            tail -n 20 "$TMP/rg.err" >&2
            die "rg exited with status $rc on $tree (run $i)"
        fi
        rg_wall=$wall rg_rss=$rss_kb

        printf '  run %d/%d  exoflow %7.2f s  rg %7.2f s\n' "$i" "$runs" "$ex_wall" "$rg_wall"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tree" "$nfiles" "$nbytes" "$i" \
            "$ex_wall" "$ex_rss" "$rg_wall" "$rg_rss" >>"$results"
    done
done

echo
python3 - "$results" <<'EOF'
import statistics
import sys

trees = {}
for line in open(sys.argv[1]):
    tree, nfiles, nbytes, _run, ex_wall, ex_rss, rg_wall, rg_rss = line.rstrip("\n").split("\t")
    t = trees.setdefault(tree, {"files": int(nfiles), "bytes": int(nbytes), "runs": []})
    t["runs"].append((float(ex_wall), int(ex_rss), float(rg_wall), int(rg_rss)))

header = ("tree", "files", "MiB", "runs", "exoflow s", "rg s", "exo/rg", "exo RSS MiB",
          "rg RSS MiB", "exo files/s")
rows = []
for tree, t in trees.items():
    runs = t["runs"]
    ex_med = statistics.median(r[0] for r in runs)
    rg_med = statistics.median(r[2] for r in runs)
    ratios = [r[0] / r[2] for r in runs if r[2] > 0]
    ratio = f"{statistics.median(ratios):.2f}" if len(ratios) == len(runs) else "n/a"
    fps = f"{t['files'] / ex_med:,.0f}" if ex_med > 0 else "n/a"
    rows.append((tree, f"{t['files']:,}", f"{t['bytes'] / 2**20:.1f}", str(len(runs)),
                 f"{ex_med:.2f}", f"{rg_med:.2f}", ratio,
                 f"{max(r[1] for r in runs) / 1024:.1f}", f"{max(r[3] for r in runs) / 1024:.1f}",
                 fps))

widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
def fmt(cells):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
print(fmt(header))
print("  ".join("-" * w for w in widths))
for r in rows:
    print(fmt(r))
print("\nwall times are medians over runs; exo/rg is the median of the per-run ratios;"
      " RSS is the peak over runs")
EOF
if [[ $rg_errors -ne 0 ]]; then
    echo "note: rg exited with status 2 in some runs (files it could not read; --no-messages hides which)" >&2
fi
