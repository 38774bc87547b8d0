#!/usr/bin/env bash
# GPU checks and benchmarks from executables built elsewhere (a GPU machine needs CUDA's driver,
# NVRTC and Python, not Rust).
#
# Usage:
#   benches/gpu.sh --collect DIR    on the build machine (needs cargo): builds the release
#                                   exoflow binary, the integration test executable and the
#                                   criterion bench executable, and copies them into DIR as
#                                   DIR/exoflow, DIR/integration, DIR/kernels
#   benches/gpu.sh DIR [CORPUS]     on the GPU machine, from the repository root
#
# --collect runs what one would run by hand:
#   cargo build --release
#   cargo test --release --no-run       (prints target/release/deps/integration-HASH)
#   cargo bench --no-run --bench kernels (prints target/release/deps/kernels-HASH)
#
# On the GPU machine it then:
#   1. runs the GPU parity tests (every column of random and edge-case batches, CUDA == CPU; and
#      the kernel stage's file versions), failing if they were skipped for want of a device;
#   2. runs the kernel benchmarks (CPU on one core vs CUDA, same batch) and prints the ratios;
#   3. replays CORPUS (default: /tmp/linux when it holds a kernel tree, else a generated corpus of
#      small files) with a pipeline that computes MinHash signatures, with --device cpu and then
#      --device cuda, each under /usr/bin/time -v, printing wall time and peak RSS, and checks
#      that both lakes hold the same statistics.
# NVRTC is looked for on the loader path, in the nvidia-cuda-nvrtc-cu12 wheel when Python has
# it, and under /usr/local/cuda.
set -euo pipefail

die() { echo "gpu.sh: $*" >&2; exit 1; }

case "${1:-}" in -h | --help | "") sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)

# The executable cargo built for a target, from its JSON messages on stdin.
executable_of() {
    python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])
' "$1" | tail -n 1
}

if [[ $1 == --collect ]]; then
    [[ $# -eq 2 ]] || die "usage: benches/gpu.sh --collect DIR"
    out=$2
    mkdir -p "$out"
    cd "$repo"
    cargo build --release --bin exoflow
    integration=$(cargo test --release --no-run --test integration --message-format=json | executable_of integration)
    kernels=$(cargo bench --no-run --bench kernels --message-format=json | executable_of kernels)
    [[ -n $integration && -n $kernels ]] || die "cargo reported no test or bench executable"
    cp target/release/exoflow "$out/exoflow"
    cp "$integration" "$out/integration"
    cp "$kernels" "$out/kernels"
    ls -l "$out"
    exit 0
fi

[[ $# -le 2 ]] || die "usage: benches/gpu.sh DIR [CORPUS]"
bin=$(cd "$1" && pwd)
corpus=${2:-}
for exe in exoflow integration kernels; do
    [[ -x $bin/$exe ]] || die "$bin/$exe is missing: build it with benches/gpu.sh --collect $1"
done
cd "$repo"

# Where NVRTC may be: the wheel, then a toolkit.
nvrtc_dirs=()
if wheel=$(python3 -c 'import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null); then
    nvrtc_dirs+=("$wheel")
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && nvrtc_dirs+=("$d")
done
for d in "${nvrtc_dirs[@]}"; do
    LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export LD_LIBRARY_PATH
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. GPU parity tests"
# Only tests that need neither the repository's path at build time nor the exoflow binary.
"$bin/integration" --nocapture --test-threads 1 \
    cuda::cuda_columns_equal_the_cpu_columns cuda::the_cuda_kernel_stage_writes 2>&1 | tee "$work/parity.log"
if grep -q '^skipped:' "$work/parity.log"; then
    die "the parity tests were skipped: CUDA did not start (see above)"
fi
grep -q ' 2 passed' "$work/parity.log" || die "the two parity tests did not both run and pass"

echo "== 2. Kernel benchmarks (CPU on one core vs CUDA, the same batch)"
export CRITERION_HOME=$work/criterion
"$bin/kernels" --bench '^features(_and_minhash_k256)?/' 2>&1 | tee "$work/bench.log"
python3 - "$CRITERION_HOME" <<'EOF'
import json, os, sys
home = sys.argv[1]
def mean_ns(group, function):
    path = os.path.join(home, group, function, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"]
for group in ["features", "features_and_minhash_k256"]:
    cpu, cuda = mean_ns(group, "cpu"), mean_ns(group, "cuda")
    if cpu is None or cuda is None:
        sys.exit(f"gpu.sh: no criterion estimates for {group} (cpu {cpu}, cuda {cuda})")
    print(f"{group}: one CPU core {cpu / 1e6:.2f} ms, CUDA {cuda / 1e6:.2f} ms per batch: "
          f"CUDA is {cpu / cuda:.1f}x one CPU core")
EOF

echo "== 3. Replay with MinHash signatures: --device cpu vs --device cuda"
if [[ -z $corpus ]]; then
    if [[ -f /tmp/linux/Makefile && -d /tmp/linux/kernel ]]; then
        corpus=/tmp/linux
    else
        corpus=$work/corpus
        python3 benches/gen_small_files.py "$corpus" --files 100000 >/dev/null
    fi
fi
pipeline=pipelines/dedupe.json
if [[ ! -f $pipeline ]]; then
    # The default rules with a near_duplicates section (default parameters).
    pipeline=$work/dedupe.json
    python3 - pipelines/default.json "$pipeline" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["name"] = "dedupe"
spec["near_duplicates"] = {}
json.dump(spec, open(sys.argv[2], "w"), indent=2)
EOF
fi
echo "corpus $corpus ($(find "$corpus" -type f | wc -l) files), pipeline $pipeline"

# Runs a command, printing its wall time and peak RSS.
measured() {
    local label=$1
    shift
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v "$@" >"$work/$label.out" 2>"$work/$label.err" ||
            { cat "$work/$label.err" >&2; die "$label failed"; }
        local wall rss
        wall=$(sed -n 's/^\s*Elapsed (wall clock) time.*: //p' "$work/$label.err")
        rss=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$work/$label.err")
        echo "$label: wall $wall, peak RSS $((rss / 1024)) MiB"
    else
        python3 - "$work/$label" "$label" "$@" <<'EOF'
import resource, subprocess, sys, time
prefix, label, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
start = time.monotonic()
with open(prefix + ".out", "w") as out, open(prefix + ".err", "w") as err:
    code = subprocess.call(cmd, stdout=out, stderr=err)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
if code != 0:
    sys.exit(f"gpu.sh: {label} failed with {code}; see {prefix}.err")
print(f"{label}: wall {wall:.2f} s, peak RSS {rss} MiB")
EOF
    fi
    grep '^kernels:' "$work/$label.out" || die "$label printed no kernels line"
}

for device in cpu cuda; do
    measured "replay-$device" "$bin/exoflow" replay "$corpus" --out "$work/lake-$device" \
        --pipeline "$pipeline" --device "$device"
done
"$bin/exoflow" stats "$work/lake-cpu" --json >"$work/stats-cpu.json"
"$bin/exoflow" stats "$work/lake-cuda" --json >"$work/stats-cuda.json"
if cmp -s "$work/stats-cpu.json" "$work/stats-cuda.json"; then
    echo "the cpu and cuda lakes hold the same statistics"
else
    diff "$work/stats-cpu.json" "$work/stats-cuda.json" | head -20
    die "the cpu and cuda lakes differ"
fi
