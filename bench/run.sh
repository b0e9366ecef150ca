#!/usr/bin/env bash
# Ferry's benchmark: Ferry (buffered and unbuffered) against a bare Pingora
# passthrough, a Pingora floor (the least a proxy on Pingora's parts costs)
# and nginx as a proxy with --nginx-proxy, side by side in one run.
# Installs wrk, nginx and (for --check and --callgrind) valgrind from the
# system's packages when missing. FERRY_BENCH_BIN_DIR=DIR measures the
# binaries in DIR instead of building the checkout's; FERRY_BENCH_PORT_BASE=N
# moves the bench's ports (18000 and up) when another server holds one.
#   bench/run.sh [--seconds 5] [--rounds 3] [--nginx-proxy] [--check] [--callgrind] [--idle N] [--cache]
#                [--key-flood N] [--limits] [--grpc]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [[ " $* " == *" --check "* || " $* " == *" --callgrind "* ]]; then
  command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
fi
if [[ " $* " == *" --limits "* ]]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${FERRY_BENCH_BIN_DIR:-}" ]; then
  cargo build --release -q -p ferry -p ferry-bench -p ferry-tokio-floor
fi
exec python3 bench/run.py "$@"
