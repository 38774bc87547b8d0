#!/usr/bin/env bash
# API load benchmark: the throughput and latency of /api/v1/stats under wrk.
#
# Starts `exoflow watch TREE --out LAKE --http 127.0.0.1:0` on a generated tree (--files files in
# several languages, some with rule matches), waits for /readyz 200, then runs
# `wrk --latency -t THREADS -c CONNECTIONS -d DURATION` against `/api/v1/stats` and
# `/api/v1/stats?dimension=language`, with --threads and, unless that is already 1, with one wrk
# thread too. Prints requests/s, p50/p99 (wrk's latency distribution), non-2xx answers and socket
# errors for each, the watch's peak RSS and the load average, then stops the watch (SIGTERM).
#
# wrk runs on the same machine as the server and shares its cores: the figures are those of the
# server and the load generator together.
#
# Usage: benches/api_load.sh [--duration 20s] [--connections 32] [--threads 2] [--files 300]
#                            [--exoflow target/release/exoflow]
# Needs wrk (Debian: apt-get update && apt-get install -y wrk) and curl.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

duration=20s connections=32 threads=2 files=300 exoflow=target/release/exoflow
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --files) files=$2; shift 2 ;;
        --exoflow) exoflow=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if ! command -v wrk >/dev/null; then
    echo "wrk not found: apt-get update && apt-get install -y wrk" >&2
    usage >&2
    exit 2
fi
command -v curl >/dev/null || { echo "curl not found: apt-get install -y curl" >&2; exit 2; }
[ -x "$exoflow" ] || { echo "$exoflow not found: build it with cargo build --release" >&2; exit 2; }

work=$(mktemp -d /tmp/exoflow-api-load-XXXXXX)
watch_pid=
cleanup() {
    if [ -n "$watch_pid" ] && kill -0 "$watch_pid" 2>/dev/null; then
        kill -TERM "$watch_pid"
        wait "$watch_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The tree: files in a few languages, a third with a TODO, some exact duplicates.
tree=$work/tree
for ((i = 0; i < files; i++)); do
    dir=$tree/d$((i % 10))
    mkdir -p "$dir"
    case $((i % 5)) in
        0) printf 'fn f%d() -> u32 {\n    // TODO: tune\n    %d\n}\n' "$i" "$i" >"$dir/f$i.rs" ;;
        1) printf 'def f%d():\n    return %d\n' "$i" "$i" >"$dir/f$i.py" ;;
        2) printf 'function f%d() { return %d; } // TODO\n' "$i" "$i" >"$dir/f$i.js" ;;
        3) printf '# Note %d\n\nSome text.\n' "$i" >"$dir/f$i.md" ;;
        4) printf 'same content in every fifth file\n' >"$dir/f$i.txt" ;;
    esac
done

"$exoflow" watch "$tree" --out "$work/lake" --http 127.0.0.1:0 >"$work/watch.log" 2>&1 &
watch_pid=$!
addr=
for _ in $(seq 600); do
    addr=$(grep -o 'serving on http://[0-9.:]*' "$work/watch.log" | head -1 | sed 's/serving on //') || true
    if [ -n "$addr" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$addr/readyz")" = 200 ]; then
        break
    fi
    kill -0 "$watch_pid" 2>/dev/null || { cat "$work/watch.log"; echo "exoflow watch exited" >&2; exit 1; }
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$addr/readyz")" = 200 ] || { cat "$work/watch.log"; echo "not ready" >&2; exit 1; }
# Until every file is in the statistics.
for _ in $(seq 300); do
    n=$(curl -s "$addr/api/v1/stats?dimension=total&metric=files" | grep -o '"value":[0-9]*' | cut -d: -f2) || true
    [ "${n:-0}" -ge "$files" ] && break
    sleep 0.1
done

echo "exoflow watch on $files files at $addr (pid $watch_pid): $exoflow"
for path in "/api/v1/stats" "/api/v1/stats?dimension=language"; do
    echo "  GET $path: $(curl -s -o /dev/null -w '%{http_code}, %{size_download} bytes' "$addr$path")"
done
echo "cores: $(nproc); wrk and the server share them (the figures are of both together)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# wrk's latency in milliseconds: 512.00us, 1.23ms, 2.00s.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

results=()
thread_counts=("$threads")
[ "$threads" != 1 ] && thread_counts+=(1)
for t in "${thread_counts[@]}"; do
    c=$connections
    [ "$c" -lt "$t" ] && c=$t
    for path in "/api/v1/stats" "/api/v1/stats?dimension=language"; do
        echo
        echo "\$ wrk --latency -t $t -c $c -d $duration '$addr$path'"
        out=$(wrk --latency -t "$t" -c "$c" -d "$duration" "$addr$path")
        echo "$out"
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
        errors=$(awk '/Socket errors:/ {sub(/.*Socket errors: /, ""); print}' <<<"$out")
        results+=("$(printf '%-34s %3s %4s %12s %9s %9s %8s  %s' "$path" "$t" "$c" "$rps" \
            "$(to_ms "$p50")" "$(to_ms "$p99")" "${non2xx:-0}" "${errors:-none}")")
    done
done

hwm=$(awk '/^VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$watch_pid/status")
echo
echo "== /api/v1/stats under wrk ($duration each, $(nproc) cores shared by wrk and the server)"
printf '%-34s %3s %4s %12s %9s %9s %8s  %s\n' "route" "thr" "conn" "requests/s" "p50 ms" "p99 ms" "non-2xx" "socket errors"
printf '%s\n' "${results[@]}"
echo "watch peak RSS (VmHWM): $hwm; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "target: >= 5000 requests/s with p99 <= 20 ms on 2 cores"
kill -TERM "$watch_pid"
if wait "$watch_pid"; then
    echo "exoflow watch stopped (exit 0)"
else
    echo "exoflow watch exited with $?" >&2
    tail -5 "$work/watch.log" >&2
    exit 1
fi
watch_pid=
