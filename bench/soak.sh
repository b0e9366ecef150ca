#!/usr/bin/env bash
# A soak: Ferry under mixed load (small requests, slow readers, aborts
# mid-response, a backend that closes early, uploads) for N seconds, its
# RSS, open fds and temp files sampled every 2 s. Exits 1 when they are not
# flat at the end: fds and temp files back to the idle figure, the last
# loaded RSS within 10% of the first loaded sample after warm-up.
#   bench/soak.sh [--seconds 60] [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
profile=debug
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --release) profile=release; shift ;;
    *) echo "usage: bench/soak.sh [--seconds N] [--release]" >&2; exit 2 ;;
  esac
done
flags=()
[ "$profile" = release ] && flags+=(--release)
cargo build -q "${flags[@]}" -p ferry --bin ferry -p ferry-bench --bin soak
exec "target/$profile/soak" "target/$profile/ferry" --seconds "$seconds"
