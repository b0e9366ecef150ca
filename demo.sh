#!/usr/bin/env bash
# Ferry in front of three local backends: builds, starts them, sends a few
# requests, then keeps serving on http://127.0.0.1:8080 until Ctrl-C.
# DEMO_ONESHOT=1 stops after the requests (used by CI).
set -euo pipefail
cd "$(dirname "$0")"
cargo build -q -p ferry -p ferry-tests --bins
target/debug/demo-backends 9001 9002 9003 &
target/debug/ferry -c examples/demo.yaml &
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT

for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done

get() { # a tiny client: bash's /dev/tcp, so the demo needs no curl
  exec 3<>/dev/tcp/127.0.0.1/8080
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$1" >&3
  cat <&3
  exec 3<&-
}

echo "== six requests: smooth weighted round robin over 9001 (weight 3) and 9002"
for _ in 1 2 3 4 5 6; do get / | tail -n 1; done
echo
echo "== a route Ferry answers itself"
get /hello
echo
if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
echo "Ferry is serving on http://127.0.0.1:8080 (curl -i localhost:8080/). Ctrl-C stops it."
wait
