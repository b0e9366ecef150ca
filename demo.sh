#!/usr/bin/env bash
# Ferry in front of local backends: builds, starts them, shows a retry past
# a failing backend (and the access-log line with both tries), then a
# reload that adds a server, seen in the next responses and in /upstreams,
# and a cached route answering from disk after its first request. Then
# keeps serving on http://127.0.0.1:8080 until Ctrl-C.
# DEMO_ONESHOT=1 stops after that (used by CI). Exits non-zero if anything
# it shows did not happen.
set -euo pipefail
cd "$(dirname "$0")"

PORTS=(8080 9180 9001 9002 9003 9004)
for p in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is taken; the demo needs ${PORTS[*]} free on 127.0.0.1" >&2
    exit 1
  fi
done

echo "demo: building Ferry and the demo backends (a first build takes minutes)"
cargo build -p ferry -p ferry-tests --bins 2>&1 | grep -E '^ *(Compiling|Finished|error|warning: unused)' || true
[ -x target/debug/ferry ] && [ -x target/debug/demo-backends ] || { echo "demo: the build failed" >&2; exit 1; }
work=$(mktemp -d)
conf="$work/ferry.yaml"
# Every file the demo makes lives in $work, removed when it ends.
sed -e "s|/tmp/ferry-demo-cache|$work/cache|" -e "s|/tmp/ferry-demo|$work/ferry-demo|g" examples/demo.yaml >"$conf"
access="$work/ferry-demo-access.log"
target/debug/demo-backends 9001 9002:fail 9003 9004 2>"$work/backends.log" &
target/debug/ferry -c "$conf" 2>"$work/ferry.log" &
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

fail() { echo "demo: FAILED: $*" >&2; echo "--- ferry log:" >&2; cat "$work/ferry.log" >&2; exit 1; }

up=
for _ in $(seq 200); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then up=1; break; fi
  sleep 0.05
done
[ -n "$up" ] || fail "Ferry did not start listening on 127.0.0.1:8080"

http() { # a tiny client: bash's /dev/tcp, so the demo needs no curl
  local port=$1 path=$2
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
  cat <&3
  exec 3<&-
}
get() { http 8080 "$1"; }
body() { get "$1" | tail -n 1; }

echo "== four requests: smooth weighted round robin over 9001 (weight 3) and 9002 (which answers 503)"
out=""
for _ in 1 2 3 4; do line=$(body /); echo "$line"; out+="$line"$'\n'; done
grep -q "backend 9002" <<<"$out" && fail "a 503 from 9002 reached the client"
[ "$(grep -c 'backend 9001' <<<"$out")" = 4 ] || fail "9001 did not answer all four"
echo
echo "== the retried request in the access log: 9002 said 503, Ferry went on to 9001"
retried=
for _ in $(seq 100); do
  retried=$(grep '"upstream_status":"503, 200"' "$access" 2>/dev/null || true)
  [ -n "$retried" ] && break
  sleep 0.05
done
[ -n "$retried" ] || fail "no access-log line with both tries"
echo "$retried"
echo
echo "== a route Ferry answers itself"
get /hello | tail -n 1
echo
echo "== reload: add 9004 to the group, then ferry -s reload"
sed -i 's|      - { addr: 127.0.0.1:9003, backup: true }|      - { addr: 127.0.0.1:9004 }\n      - { addr: 127.0.0.1:9003, backup: true }|' "$conf"
target/debug/ferry -s reload -c "$conf"
for _ in $(seq 100); do
  grep -q "is served from now on" "$work/ferry.log" && break
  sleep 0.05
done
grep -q "is served from now on" "$work/ferry.log" || fail "the reload did not finish"
out=""
for _ in 1 2 3 4 5 6 7 8; do line=$(body /); out+="$line"$'\n'; done
grep "backend 9004" <<<"$out" | head -n 2
grep -q "backend 9004" <<<"$out" || fail "9004 did not serve after the reload"
echo
echo "== GET /upstreams on the admin listener (127.0.0.1:9180)"
servers=$(http 9180 /upstreams | sed -n '/^{/,$p')
grep -E '"(addr|state|requests)"' <<<"$servers" | paste - - - | sed 's/  */ /g'
grep -q '"addr": "127.0.0.1:9004"' <<<"$servers" || fail "/upstreams does not list 9004"
echo "(9002 is still failed: the reload kept its max_fails window, as it keeps every server that stays)"
grep -A6 '"addr": "127.0.0.1:9002"' <<<"$servers" | grep -q '"state": "failed"' || fail "9002 lost its failed state"
echo
echo "== a cached route: the first request goes to a backend, the next two come from disk"
statuses=""
for _ in 1 2 3; do
  resp=$(get /cached/page)
  status=$(grep -i '^X-Cache-Status:' <<<"$resp" | tr -d '\r' | awk '{print $2}')
  echo "X-Cache-Status: $status   $(tail -n 1 <<<"$resp")"
  statuses+="$status "
done
[ "$statuses" = "MISS HIT HIT " ] || fail "the cache answered $statuses, not MISS HIT HIT"
hits=
for _ in $(seq 100); do
  hits=$(grep '"upstream_addr":"","upstream_cache_status":"HIT"' "$access" | grep -c '"uri":"/cached/page"' || true)
  [ "$hits" = 2 ] && break
  sleep 0.05
done
[ "$hits" = 2 ] || fail "the access log does not show two HITs that asked no backend"
echo "(the access log shows both HITs with no upstream_addr: no backend was asked; the entry is a file under $work/cache)"
echo
if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
echo "Ferry is serving on http://127.0.0.1:8080 (curl -i localhost:8080/; curl localhost:9180/upstreams)."
echo "Edit $conf and run: target/debug/ferry -s reload -c $conf. Ctrl-C stops it."
wait
