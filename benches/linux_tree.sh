#!/usr/bin/env bash
# Unpack the Debian/Ubuntu linux-source tarball into a directory for benchmarks.
#
# Usage: benches/linux_tree.sh [DIR]      (default DIR: /tmp/linux)
#
# Needs the tarball from the linux-source package:  apt-get install -y linux-source
# (it lands as /usr/src/linux-source-VERSION.tar.xz; the newest one is used; set
# LINUX_SOURCE_DIR to look elsewhere than /usr/src). Does nothing when DIR already holds an
# unpacked tree. Prints the tree's file count and size. Then, e.g.:
#   benches/replay_vs_rg.sh /tmp/linux
set -euo pipefail

die() { echo "linux_tree: $*" >&2; exit 1; }

case "${1:-}" in -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac
[[ $# -le 1 ]] || die "usage: benches/linux_tree.sh [DIR]"
dir=${1:-/tmp/linux}
src_dir=${LINUX_SOURCE_DIR:-/usr/src}

if [[ -f $dir/Makefile && -d $dir/kernel ]]; then
    echo "$dir already holds a kernel tree; not unpacking again"
else
    tarball=$(find "$src_dir" -maxdepth 1 -name 'linux-source-*.tar.*' -print 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $tarball ]] ||
        die "no $src_dir/linux-source-*.tar.xz; install it with: apt-get install -y linux-source"
    if [[ -e $dir ]] && [[ -n $(ls -A "$dir") ]]; then
        die "$dir exists, is not empty and does not look like a kernel tree; remove it or pick another DIR"
    fi
    command -v xz >/dev/null || [[ $tarball != *.xz ]] || die "xz not found; install it with: apt-get install xz-utils"
    echo "unpacking $tarball into $dir"
    partial=$dir.partial.$$
    rm -rf "$partial"
    mkdir -p "$partial"
    trap 'rm -rf "$partial"' EXIT
    # The tarball holds one top directory (linux-source-VERSION/); DIR becomes that directory.
    tar -xf "$tarball" -C "$partial" --strip-components=1
    [[ -f $partial/Makefile ]] || die "$tarball did not unpack to a kernel tree"
    [[ -d $dir ]] && rmdir "$dir"
    mv "$partial" "$dir"
    trap - EXIT
fi

read -r files bytes < <(find "$dir" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { print n + 0, b + 0 }')
dirs=$(find "$dir" -type d | wc -l)
printf '%s: %d files in %d directories, %.1f MiB (%s on disk)\n' "$dir" "$files" "$dirs" \
    "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" "$(du -sh "$dir" | cut -f1)"
