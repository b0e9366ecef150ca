#!/usr/bin/env python3
"""Ferry's benchmark, side by side in one run.

Proxies (each pinned to CPU 0, one worker thread):
  pingora     a bare Pingora 0.9 passthrough (bench/src/bin/pingora-passthrough.rs)
  floor       the least a proxy on Pingora's HTTP/1 sessions, pool and server
              costs: header and body copied, nothing else (bench/src/bin/pingora-floor.rs)
  tokio-floor a one-thread tokio + httparse passthrough, one upstream
              connection per client, bytes forwarded as they are (bench/tokio-floor)
  ferry       Ferry with default settings (buffering on, retries on)
  ferry-unbuf Ferry with buffering: false
  nginx       nginx as a proxy (proxy_buffering on), when --nginx-proxy is given
  ferry-log   Ferry writing its JSON access log to a file (with --check)
  nginx-log   nginx with its access log on (with --check)
  ferry-cache Ferry with a cache on the route, every request a HIT (--cache, --check)
  nginx-cache nginx with proxy_cache on the location, every request a HIT (--cache, --check)
The backend is nginx serving static files; it and wrk share CPU 1.

  --check     everything in one run: callgrind counts, the tables below with
              access logs, the cache HITs, 5,000 and 10,000 idle HTTP/1
              clients, 2,000 idle HTTP/2 connections, the gRPC rows; then
              each performance goal (issue 30) with its ratio to nginx;
              exit status 1 when one is missed
  --callgrind only user-space instructions per 1 KB keepalive GET under
              callgrind (ferry, nginx in one process, tokio-floor), proxied,
              as cache HITs and with the access log on (ferry-log,
              nginx-log): each proxy fresh under callgrind for 20
              warm-up GETs then 300, and again then 1,300, on one keepalive
              connection; (I(1300) - I(300)) / 1000; and the same GETs
              over HTTP/2 and TLS (ferry-h2, nginx-h2; h2load -c1 -m1,
              when h2load is installed)
  --idle N    only the idle measurement: KiB per idle keepalive client (N of
              them), and per idle HTTP/2 connection over TLS (at most 2,000)
  --ab A B    only an A/B of two ferry binaries (CPU per request; --ab-path /1m
              for 1 MB responses, --ab-log with the access log on both sides,
              --ab-log-new on NEW only: --ab B B --ab-log-new is the log's cost;
              --ab-h2: HTTP/2 over TLS with h2load instead of HTTP/1.1)
  --cache     only the cache: CPU per 1 KB and per GB of 1 MB HITs, Ferry
              against nginx, both caching on disk, interleaved rounds
  --limits    only the limits: CPU per 1 KB request on the same route without
              a limit (ferry), with a local limit_req (ferry-limit) and with
              the zone in Redis (ferry-redis; redis-server on CPU 1), the
              rate high enough that every request passes, interleaved rounds
  --grpc      only gRPC to an HTTP/2 upstream: unary calls over h2c through
              Ferry (ferry-grpc: an h2c listener, http_version "2") and
              nginx (nginx-grpc: grpc_pass) to the same echo server
              (bench/src/bin/grpc-echo.rs on CPU 1, beside h2load): CPU per
              call with one stream in flight per connection (-c32 -m1) and
              with 16 (-c4 -m16), interleaved rounds; --check reports them

For each proxy and response size, interleaved over rounds: req/s, MB/s,
p50/p99 latency, and the proxy's own CPU time (utime+stime of its process
from /proc before and after the run) per request and per GB. Medians over
rounds. The same for HTTP/2 to the client over TLS (h2load, 1 KB), when
h2load is installed. Then, each in a fresh process: peak RSS (VmHWM) while
200 slow clients download 4 MB each, and RSS with 1,000 idle keepalive
client connections that have each made one request.
"""

import argparse
import resource
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binaries measured: the checkout's release build, or FERRY_BENCH_BIN_DIR.
REL = os.environ.get("FERRY_BENCH_BIN_DIR") or os.path.join(ROOT, "target", "release")
# Every port is BASE plus an offset; FERRY_BENCH_PORT_BASE moves them all
# (main() refuses to start when one is taken).
BASE = int(os.environ.get("FERRY_BENCH_PORT_BASE") or 18000)
BACKEND = BASE
PORTS = {name: BASE + offset for name, offset in {
    "pingora": 90, "floor": 84, "ferry": 81, "ferry-unbuf": 82, "nginx": 83, "ferry-log": 86, "nginx-log": 85,
    "ferry-cache": 87, "nginx-cache": 88, "ferry-limit": 91, "ferry-redis": 92, "ferry-grpc": 95,
    "nginx-grpc": 96, "tokio-floor": 97}.items()}
REDIS = BASE + 93
GRPC_BACKEND = BASE + 94
# h2load's connections and streams in flight per connection for each gRPC row.
GRPC_ROWS = [(32, 1), (4, 16)]
GRPC_MESSAGE = 100  # bytes of protobuf in each call, each way
TLS_PORTS = {name: port + 100 for name, port in PORTS.items()}
TICK = os.sysconf("SC_CLK_TCK")


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def ports_free():
    """Exits when another process listens on one of the bench's ports: its
    answers would be measured as ours."""
    for port in [BACKEND, REDIS, GRPC_BACKEND] + list(PORTS.values()) + list(TLS_PORTS.values()):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                sys.exit(f"port {port} is taken (another bench or server?); "
                         f"set FERRY_BENCH_PORT_BASE to move the bench's ports from {BASE}")


def cpu_ticks(pid):
    """utime + stime of a process and its threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_kb(pid):
    return status_kb(pid, "VmHWM")


def nginx_conf(work, proxy, name="nginx", single=False):
    files = os.path.join(work, "files")
    server = f"""
    server {{
        listen 127.0.0.1:{BACKEND};
        root {files};
        keepalive_requests 1000000;
    }}"""
    cache_path = ""
    cache_on = ""
    if name == "nginx-cache":
        cache_path = f"proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=c:10m max_size=1g inactive=10m;"
        cache_on = "proxy_cache c; proxy_cache_valid 200 10m; add_header X-Cache-Status $upstream_cache_status;"
    if proxy:
        server = f"""
    upstream app {{ server 127.0.0.1:{BACKEND}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{PORTS[name]};
        listen 127.0.0.1:{TLS_PORTS[name]} ssl http2;
        {f"access_log {work}/{name}-access.log;" if name == "nginx-log" else ""}
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_temp_path {work}/nginx-temp;
            {cache_on}
        }}
    }}"""
    # single: one process that serves (no master), for callgrind to measure it whole.
    return f"""
daemon off;
{"master_process off;" if single else ""}
worker_processes 1;
worker_rlimit_nofile 65536;
pid {work}/{name + '-proxy' if proxy else 'nginx-backend'}.pid;
error_log {work}/{name + '-proxy' if proxy else 'nginx-backend'}.err warn;
events {{ worker_connections 20480; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    sendfile on;
    {cache_path}
    {server}
}}
"""


def nginx_grpc_conf(work):
    """nginx as a gRPC proxy: h2c with prior knowledge on its port, grpc_pass
    to the echo server over kept-alive connections (nginx sends one call at a
    time on each)."""
    return f"""
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {work}/nginx-grpc.pid;
error_log {work}/nginx-grpc.err warn;
events {{ worker_connections 20480; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    upstream grpcapp {{ server 127.0.0.1:{GRPC_BACKEND}; keepalive 128; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{PORTS["nginx-grpc"]} http2;
        keepalive_requests 1000000;
        location / {{ grpc_pass grpc://grpcapp; }}
    }}
}}
"""


def ferry_grpc_conf(work):
    """Ferry as a gRPC proxy: an h2c listener, HTTP/2 to the echo server,
    neither body buffered (what a gRPC route of every kind wants)."""
    port = PORTS["ferry-grpc"]
    return f"""
server: {{ threads: 1, pid_file: {work}/ferry-{port}.pid, upgrade_sock: {work}/ferry-{port}.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listen:
  - {{ addr: "127.0.0.1:{port}", h2c: true }}
upstreams:
  grpc:
    servers: [ {{ addr: 127.0.0.1:{GRPC_BACKEND} }} ]
    keepalive: 128
    keepalive_requests: 1000000
routes:
  - upstream: grpc
    proxy: {{ http_version: "2", request_buffering: false, buffering: false }}
"""


def ferry_conf(work, port, buffering, access_log=None, cache=False, limit=None):
    log = f"access_log: {access_log}\n" if access_log else ""
    route_limit = ""
    if limit:
        store = f"redis://127.0.0.1:{REDIS}" if limit == "redis" else "local"
        log += ("limit_req_zones: { one: { key: $binary_remote_addr, rate: 1000000000r/s, "
                f"store: \"{store}\" }} }}\n")
        route_limit = "    limit_req: { zone: one, burst: 1000 }\n"
    if cache:
        log += f"caches: {{ c: {{ path: {work}/ferry-cache }} }}\n"
    route_cache = "    cache: { zone: c, valid: { 200: 10m } }\n" if cache else ""
    add = ", add_headers: { X-Cache-Status: $upstream_cache_status }" if cache else ""
    return log + f"""
server: {{ threads: 1, pid_file: {work}/ferry-{port}.pid, upgrade_sock: {work}/ferry-{port}.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listen:
  - 127.0.0.1:{port}
  - {{ addr: "127.0.0.1:{port + 100}", tls: {{ cert: {work}/cert.pem, key: {work}/key.pem }} }}
upstreams:
  app:
    servers: [ {{ addr: 127.0.0.1:{BACKEND} }} ]
routes:
  - upstream: app
    proxy: {{ buffering: {str(buffering).lower()}, temp_path: {work}/ferry-temp{add} }}
{route_cache}{route_limit}"""


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, cmd, cpu, log):
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdout=log, stderr=log)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=5):
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
        self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def proxy_cmd(name, work, single=False):
    """The command line of proxy `name`, its configuration written to `work`;
    `single`: nginx in one process (master_process off)."""
    if name == "pingora":
        return [os.path.join(REL, "pingora-passthrough"), f"127.0.0.1:{PORTS[name]}", f"127.0.0.1:{BACKEND}",
                f"127.0.0.1:{TLS_PORTS[name]}", f"{work}/cert.pem", f"{work}/key.pem"]
    if name == "floor":
        return [os.path.join(REL, "pingora-floor"), f"127.0.0.1:{PORTS[name]}", f"127.0.0.1:{BACKEND}"]
    if name == "tokio-floor":
        return [os.path.join(REL, "tokio-floor"), f"127.0.0.1:{PORTS[name]}", f"127.0.0.1:{BACKEND}"]
    if name == "ferry-grpc":
        conf, text = os.path.join(work, f"{name}.yaml"), ferry_grpc_conf(work)
    elif name == "nginx-grpc":
        conf, text = os.path.join(work, f"{name}.conf"), nginx_grpc_conf(work)
    elif name.startswith("ferry"):
        log_file = f"{work}/ferry-access.log" if name == "ferry-log" else None
        limit = {"ferry-limit": "local", "ferry-redis": "redis"}.get(name)
        conf = os.path.join(work, f"{name}.yaml")
        text = ferry_conf(work, PORTS[name], name != "ferry-unbuf", log_file, name == "ferry-cache", limit)
    else:
        conf, text = os.path.join(work, f"{name}-proxy.conf"), nginx_conf(work, True, name, single)
    with open(conf, "w") as f:
        f.write(text)
    return [os.path.join(REL, "ferry"), "-c", conf] if name.startswith("ferry") else ["nginx", "-c", conf, "-p", work]


def start_proxy(procs, name, work, log):
    p = procs.start(proxy_cmd(name, work), 0, log)
    wait_port(PORTS[name])
    return p


def proxy_pids(p, name):
    """The processes whose CPU counts: nginx's master and its worker."""
    if not name.startswith("nginx"):
        return [p.pid]
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    return [p.pid] + [int(x) for x in out]


UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, u = float(m.group(1)), m.group(2)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n


def wrk(port, path, seconds, conns):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True).stdout
    reqs = re.search(r"(\d+) requests in ([\d.]+)s, ([\d.]+)(B|KB|MB|GB) read", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not reqs:
        sys.exit(f"wrk failed:\n{out}")
    n, secs = int(reqs.group(1)), float(reqs.group(2))
    nbytes = float(reqs.group(3)) * UNITS[reqs.group(4)]
    return {"requests": n, "secs": secs, "bytes": nbytes, "p50": to_ms(lat["50"]), "p99": to_ms(lat["99"]),
            "bad": int(errors.group(1)) if errors else 0}


def h2load(port, path, seconds, conns):
    """HTTP/2 over TLS to the proxy: h2load, 4 streams per connection."""
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", "-t1", f"-c{conns}", "-m4", f"-D{seconds:g}",
         f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rate = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if not (done and rate and mean):
        sys.exit(f"h2load failed:\n{out}")
    return {"requests": int(done.group(2)), "secs": float(rate.group(1)), "rps": float(rate.group(2)),
            "mean": to_ms(mean.group(1)), "bad": int(done.group(1)) - int(done.group(2))}


def grpc_call_file(work):
    """A unary call's request body: one uncompressed gRPC message (the 5-byte
    prefix, then protobuf field 1, bytes) of GRPC_MESSAGE bytes; the echo
    server sends the same bytes back. Returns (path, its length)."""
    payload = b"x" * (GRPC_MESSAGE - 2)
    message = bytes([0x0A, len(payload)]) + payload
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    path = os.path.join(work, "grpc-call.bin")
    with open(path, "wb") as f:
        f.write(body)
    return path, len(body)


def grpc_counts():
    """The echo server's calls answered with grpc-status 0, its open
    connections and the connections it has accepted."""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{GRPC_BACKEND}/count"],
                         capture_output=True, text=True).stdout
    if not re.fullmatch(r"\d+ \d+ \d+", out):
        sys.exit(f"the gRPC echo server's /count answered {out!r}")
    return [int(x) for x in out.split()]


def h2load_grpc(port, call, seconds, conns, streams):
    """Unary gRPC calls over h2c (h2load POSTs the call's body on each
    stream). A call counts as answered when its status is 2xx, it carried
    the echoed message, and the echo server counted it; `bad` is every
    call that was not."""
    path, size = call
    before = grpc_counts()
    out = subprocess.run(
        ["taskset", "-c", "1", "h2load", "-t1", f"-c{conns}", f"-m{streams}", f"-D{seconds:g}", "-d", path,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}/bench.Echo/Unary"],
        capture_output=True, text=True).stdout
    after = grpc_counts()
    server = after[0] - before[0]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     out)
    rate = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    data = re.search(r"traffic: .*?\((\d+)\) data", out)
    if not (done and rate and mean and data):
        sys.exit(f"h2load failed:\n{out}")
    ok = int(done.group(2))
    failed = int(done.group(1)) - ok
    no_message = max(ok - int(data.group(1)) // size, 0)  # 2xx without the echo: Ferry's own answer
    unseen = max(ok - server, 0)  # 2xx the echo server never answered
    return {"requests": ok, "secs": float(rate.group(1)), "rps": float(rate.group(2)),
            "mean": to_ms(mean.group(1)), "failed": failed, "no_message": no_message, "unseen": unseen,
            "bad": failed + max(no_message, unseen), "server": server, "raw": out,
            "upstream_new": after[2] - before[2]}


def upstream_conns(pids):
    """The connections the processes `pids` hold to the gRPC echo server."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{GRPC_BACKEND}"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if any(f"pid={p}," in line for p in pids))


def idle_keepalive_rss(pid, port, conns):
    """RSS (MB) of a proxy holding `conns` idle keepalive client connections,
    each after one 1 KB request."""
    socks = []
    try:
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 1024:
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit(f"port {port} closed an idle keepalive connection early")
                got += chunk
            socks.append(s)
        time.sleep(1)  # let the proxy settle its buffers
        return sum(status_kb(p, "VmRSS") for p in pid) / 1024
    finally:
        for s in socks:
            s.close()


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# GET https://bench/1k, HPACK from the static table and two literals.
H2_GET = b"\x82\x87\x44\x03/1k\x41\x05bench"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def h2_one_request(port):
    """A TLS connection speaking HTTP/2 that has made one request (GET /1k)
    and read its whole answer."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench")
    if s.selected_alpn_protocol() != "h2":
        sys.exit(f"port {port} did not choose h2")
    frame = len(H2_GET).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big")
    s.sendall(H2_PREFACE + frame + H2_GET)
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"port {port} closed an HTTP/2 connection early")
            buf += chunk
        n, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + n:]
        if kind == 4 and not flags & 1:
            s.sendall(H2_SETTINGS_ACK)
        if stream == 1 and kind in (0, 1) and flags & 1:
            return s


def idle_h2_rss(pid, port, conns):
    """RSS (MB) of a proxy holding `conns` idle HTTP/2 (TLS) connections, each
    after one 1 KB request."""
    socks = []
    try:
        for _ in range(conns):
            socks.append(h2_one_request(port))
        time.sleep(1)
        return sum(status_kb(p, "VmRSS") for p in pid) / 1024
    finally:
        for s in socks:
            s.close()


# callgrind: user-space instructions per request, which this machine's noise
# cannot move. Each proxy runs fresh under callgrind for CG_WARM + n
# keepalive GETs, n = CG_LO and n = CG_HI; the difference over CG_HI - CG_LO
# requests leaves out start-up, warm-up and shut-down.
CG_WARM, CG_LO, CG_HI = 20, 300, 1300
# (row, column): the proxy measured; the "hit" column's proxies cache.
CG_ROWS = {("ferry", "get"): "ferry", ("nginx", "get"): "nginx", ("tokio-floor", "get"): "tokio-floor",
           ("ferry", "hit"): "ferry-cache", ("nginx", "hit"): "nginx-cache",
           ("ferry", "log"): "ferry-log", ("nginx", "log"): "nginx-log",
           ("ferry", "h2"): "ferry", ("nginx", "h2"): "nginx"}
# The "h2" column: GETs of /1k over one HTTP/2 connection over TLS (h2load
# -c1 -m1), one connection for the warm-up and one for the n measured; its
# runs are labelled NAME-h2 (for FERRY_BENCH_CG_ONLY and the kept files).
# For profiling: FERRY_BENCH_CG_ONLY=ferry,ferry-cache measures only those
# proxies; FERRY_BENCH_CG_KEEP=DIR keeps each callgrind.out there, for
# callgrind_annotate.
CG_ONLY = [n for n in os.environ.get("FERRY_BENCH_CG_ONLY", "").split(",") if n]
CG_KEEP = os.environ.get("FERRY_BENCH_CG_KEEP")


def keepalive_get(sock, path, buf, want_hit):
    """One GET on a keepalive connection, its response read to the end of
    its Content-Length body and required to be a 200 (and a cache HIT when
    `want_hit`); returns what was read past that response."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    while b"\r\n\r\n" not in buf:
        buf += recv_some(sock)
    head, buf = buf.split(b"\r\n\r\n", 1)
    head = head.decode("latin1").lower()
    length = re.search(r"^content-length:\s*(\d+)", head, re.M)
    if not head.startswith("http/1.1 200") or not length:
        sys.exit(f"not a 200 with a Content-Length:\n{head}")
    if want_hit and "x-cache-status: hit" not in head:
        sys.exit(f"not a cache HIT:\n{head}")
    while len(buf) < int(length.group(1)):
        buf += recv_some(sock)
    return buf[int(length.group(1)):]


def recv_some(sock):
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit("the proxy closed a keepalive connection")
    return chunk


def fresh_cache_dirs(work):
    """Empty cache directories for ferry-cache and nginx-cache."""
    for d in ["ferry-cache", "nginx-cache"]:
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    os.makedirs(f"{work}/nginx-cache")
    os.chmod(f"{work}/nginx-cache", 0o777)  # nginx's workers run as nobody


def h2_gets(port, n):
    """n GETs of /1k over one HTTP/2 connection over TLS, one at a time
    (h2load -c1 -m1, on CPU 1); every one must succeed."""
    out = subprocess.run(["taskset", "-c", "1", "h2load", "-n", str(n), "-c1", "-m1",
                          f"https://127.0.0.1:{port}/1k"], capture_output=True, text=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not done or int(done.group(1)) != n:
        sys.exit(f"h2load: not {n} GETs succeeded on port {port}:\n{out}")


def callgrind_total(procs, log, name, work, n, h2=False):
    """All instructions (Ir) proxy `name` executes, started fresh under
    callgrind, serving CG_WARM + n GETs of /1k on one keepalive connection
    from this process (`h2`: CG_WARM on one HTTP/2 connection over TLS,
    then n on another), then stopped with SIGINT."""
    out = os.path.join(work, "callgrind", f"{name}{'-h2' if h2 else ''}-{n}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    fresh_cache_dirs(work)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out"]
    p = procs.start(cmd + proxy_cmd(name, work, single=True), 0, log)
    try:
        wait_port(PORTS[name], 60)  # valgrind starts slowly
        if h2:
            wait_port(TLS_PORTS[name], 60)
            h2_gets(TLS_PORTS[name], CG_WARM)
            h2_gets(TLS_PORTS[name], n)
        else:
            with socket.create_connection(("127.0.0.1", PORTS[name])) as s:
                s.settimeout(60)
                buf = b""
                for i in range(CG_WARM + n):
                    buf = keepalive_get(s, "/1k", buf, name.endswith("-cache") and i >= CG_WARM)
        time.sleep(0.5)  # let the proxy see the close
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            procs.stop(p, 60)
        else:
            procs.procs.remove(p)
    total = 0
    for f in os.listdir(out):  # nginx may write one file per process: callgrind.out.<pid>
        with open(os.path.join(out, f)) as fh:
            m = re.search(r"^(?:summary|totals): (\d+)", fh.read(), re.M)
        if not m:
            sys.exit(f"no instruction total in {out}/{f}")
        total += int(m.group(1))
    if not total:
        sys.exit(f"callgrind wrote nothing for {name}; see {work}/procs.log")
    return total


def callgrind_rows(procs, work, log):
    """Instructions per 1 KB keepalive GET for each of CG_ROWS: prints the
    table and returns {(row, column): instructions}."""
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    cg = {}
    h2load_here = shutil.which("h2load") is not None
    for (row, column), name in CG_ROWS.items():
        h2 = column == "h2"
        if (CG_ONLY and name + ("-h2" if h2 else "") not in CG_ONLY) or (h2 and not h2load_here):
            continue
        lo = callgrind_total(procs, log, name, work, CG_LO, h2)
        hi = callgrind_total(procs, log, name, work, CG_HI, h2)
        cg[(row, column)] = (hi - lo) / (CG_HI - CG_LO)
    print(f"\ncallgrind: user-space instructions per 1 KB keepalive GET, one client, fresh process each, "
          f"(I({CG_HI}) - I({CG_LO})) / {CG_HI - CG_LO} after {CG_WARM} warm-up GETs; proxy on CPU 0, "
          "nginx backend on CPU 1; nginx in one process (master_process off); HTTP/2: one TLS connection "
          "(h2load -c1 -m1), Ferry's rustls against nginx's OpenSSL")
    columns = ["get", "hit", "log", "h2"]
    print(f"{'proxy':<14}{'proxied GET':>13}{'cache HIT':>11}{'GET, access log':>17}{'the log':>9}"
          f"{'HTTP/2, TLS':>13}")
    for row in ["ferry", "nginx", "tokio-floor"]:
        cells = [f"{cg[(row, c)]:,.0f}" if (row, c) in cg else "-" for c in columns]
        added = f"{cg[(row, 'log')] - cg[(row, 'get')]:+,.0f}" if (row, "log") in cg and (row, "get") in cg else "-"
        print(f"{row:<14}{cells[0]:>13}{cells[1]:>11}{cells[2]:>17}{added:>9}{cells[3]:>13}")
    if not CG_ONLY:
        ratios = [f"{cg[('ferry', c)] / cg[('nginx', c)]:.2f}x" if ("ferry", c) in cg else "-"
                  for c in ["get", "hit", "h2"]]
        print(f"{'ferry/nginx':<14}{ratios[0]:>13}{ratios[1]:>11}{'':>26}{ratios[2]:>13}")
        print(f"{'ferry/tokio':<14}{cg[('ferry', 'get')] / cg[('tokio-floor', 'get')]:>12.2f}x{'-':>11}")
    if CG_KEEP:
        shutil.copytree(os.path.join(work, "callgrind"), CG_KEEP, dirs_exist_ok=True)
    shutil.rmtree(os.path.join(work, "callgrind"), ignore_errors=True)
    return cg


def check(table, h2, idle, peak, grpc, cg, cache, args):
    """Each performance goal (issue 30) with Ferry's figure over nginx's from
    this run; returns 1 when one is missed."""
    med = statistics.median
    us = lambda n: table[(n, "1k")]["us_req"]
    gb = lambda n: table[(n, "1m")]["ms_gb"]
    h2us = lambda n: med([x["cpu_s"] * 1e6 / max(x["requests"], 1) for x in h2[n]]) if h2.get(n) else float("nan")
    hit_gb = lambda n: cache[(n, "1m")]["ms_gb"]
    h1, h2n = args.idle_conns, min(args.idle_conns, 2000)

    def against(text, limit, ferry, nginx, unit, fmt=".1f", more=""):
        """A goal on Ferry's figure over nginx's (nan, so missed, when nginx's is not positive)."""
        r = ferry / nginx if nginx > 0 else float("nan")
        return (text, r, limit, f"{r:.2f}x ({ferry:,{fmt}} against {nginx:,{fmt}} {unit}{more})")

    goals = [
        against("user-space instructions per proxied 1 KB keepalive GET (callgrind) <= 1.5x nginx", 1.5,
                cg[("ferry", "get")], cg[("nginx", "get")], "instructions", ".0f",
                f"; tokio floor {cg[('tokio-floor', 'get')]:,.0f}"),
        against("the same for a 1 KB cache HIT <= 1.5x nginx's proxy_cache", 1.5,
                cg[("ferry", "hit")], cg[("nginx", "hit")], "instructions", ".0f"),
        against("CPU per 1 KB request <= 1.25x nginx", 1.25, us("ferry"), us("nginx"), "us",
                more=f"; tokio floor {us('tokio-floor'):.1f}, Pingora floor {us('floor'):.1f}"),
        against("CPU per GB of 1 MB responses <= 0.8x nginx", 0.8, gb("ferry"), gb("nginx"), "ms/GB", ".0f"),
        against("CPU per GB of 1 MB cache HITs <= 1.0x nginx", 1.0,
                hit_gb("ferry-cache"), hit_gb("nginx-cache"), "ms/GB", ".0f"),
        against("HTTP/2 over TLS: CPU per request <= 1.0x nginx", 1.0, h2us("ferry"), h2us("nginx"), "us",
                more=(f"; under callgrind {cg[('ferry', 'h2')]:,.0f} against {cg[('nginx', 'h2')]:,.0f} "
                      "instructions" if ("ferry", "h2") in cg else "")),
    ]
    for kind, conns in [("", 5000), ("", h1), ("h2-", h2n)]:
        what = "an idle HTTP/2 connection over TLS" if kind else "an idle HTTP/1 keepalive client"
        goals.append(against(f"{what} <= 1.5x nginx's RSS per connection ({conns:,})", 1.5,
                             idle[(kind + "ferry", conns)], idle[(kind + "nginx", conns)], "KiB", ".2f"))
    log_us = us("ferry-log") - us("ferry")
    log_cg = [cg[(p, "log")] - cg[(p, "get")] for p in ["ferry", "nginx"]]
    goals += [
        ("the JSON access log costs <= 1 us per request (ferry-log minus ferry)", log_us, 1.0,
         f"{log_us:+.1f} us (nginx's access log: {us('nginx-log') - us('nginx'):+.1f} us); under callgrind "
         f"{log_cg[0]:+,.0f} instructions per request, writer thread included (nginx {log_cg[1]:+,.0f})"),
        ("peak RSS with 200 slow clients: no regression on the recorded 64.4 MB (+10%)", peak["ferry"], 70.8,
         f"{peak['ferry']:.1f} MB"),
    ]
    print(f"\nreported (no goal): bare Pingora holds {idle[('pingora', h1)]:.2f} KiB per idle HTTP/1 client, "
          f"{idle[('h2-pingora', h2n)]:.2f} KiB per idle HTTP/2 connection over TLS")
    for (conns, streams), (ferry, nginx) in grpc.items():
        print(f"reported (no goal): unary gRPC over h2c to an HTTP/2 upstream, h2load -c{conns} -m{streams}: "
              f"CPU per call {ferry / nginx:.2f}x nginx's grpc_pass ({ferry:.1f} against {nginx:.1f} us)")
    print("\ngoals")
    missed = 0
    for text, value, limit, shown in goals:
        ok = value <= limit
        missed += not ok
        print(f"  {'met   ' if ok else 'MISSED'}  {text}: {shown}")
    return 1 if missed else 0


def ab(procs, work, log, args):
    """Two ferry binaries, one at a time on CPU 0, 1 KB through the nginx
    backend, 2 x rounds interleaved (old new new old ...): CPU per request."""
    runs = {"old": [], "new": []}
    order = []
    for r in range(args.rounds):
        order += ["old", "new"] if r % 2 == 0 else ["new", "old"]
    binaries = {"old": args.ab[0], "new": args.ab[1]}
    tool = "h2load -m4 over TLS" if args.ab_h2 else "wrk"
    print(f"A/B: old={binaries['old']} new={binaries['new']}; {args.ab_path}, {tool} -t1 -c{args.conns} "
          f"-d{args.seconds:g}s; proxy on CPU 0, backend and {tool} on CPU 1")
    if args.ab_h2:
        load = lambda secs: h2load(TLS_PORTS["ferry"], args.ab_path, secs, args.conns)
    else:
        load = lambda secs: wrk(PORTS["ferry"], args.ab_path, secs, args.conns)
    for which in order:
        conf = os.path.join(work, f"ab-{which}.yaml")
        with open(conf, "w") as f:
            logs = args.ab_log or (args.ab_log_new and which == "new")
            access_log = f"{work}/ab-access.log" if logs else None
            f.write(ferry_conf(work, PORTS["ferry"], True, access_log))
        p = procs.start([binaries[which], "-c", conf], 0, log)
        wait_port(PORTS["ferry"])
        load(1)  # warm the pools
        before = cpu_ticks(p.pid)
        res = load(args.seconds)
        us = (cpu_ticks(p.pid) - before) / TICK * 1e6 / max(res["requests"], 1)
        runs[which].append(us)
        print(f"{which} {us:.1f} us/req {res['requests'] / res['secs']:.0f} req/s")
        procs.stop(p)
    for which in ["old", "new"]:
        print(f"{which} median {statistics.median(runs[which]):.1f} us/req")


def measured(proc, name, run):
    """`run()`'s result, with the proxy's CPU seconds over it as `cpu_s`."""
    before = {p: cpu_ticks(p) for p in proxy_pids(proc, name)}
    res = run()
    # nginx's cache loader exits once it has read the cache: count the
    # processes that lived through the run.
    after = {p: cpu_ticks(p) for p in before if os.path.exists(f"/proc/{p}/stat")}
    res["cpu_s"] = sum(after[p] - before[p] for p in after) / TICK
    return res


def cache_only(procs, work, log, args):
    """Ferry and nginx answering every request from their disk cache: CPU
    per 1 KB HIT and per GB of 1 MB HITs, interleaved rounds."""
    fresh_cache_dirs(work)
    names = ["ferry-cache", "nginx-cache"]
    running = {n: start_proxy(procs, n, work, log) for n in names}
    for name in names:  # fill the entries, then warm
        for size in ["1k", "1m"]:
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{PORTS[name]}/{size}"])
        if wrk(PORTS[name], "/1k", 1, args.conns)["bad"]:
            sys.exit(f"{name} answers errors; see {work}/procs.log")
    for name in names:  # both must answer from their cache
        for size in ["1k", "1m"]:
            head = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", f"http://127.0.0.1:{PORTS[name]}/{size}"],
                                  capture_output=True, text=True).stdout
            if "X-Cache-Status: HIT" not in head:
                sys.exit(f"{name} does not answer /{size} from its cache:\n{head}")
    results = {(n, s): [] for n in names for s in ["1k", "1m"]}
    for r in range(args.rounds):
        for size in ["1k", "1m"]:
            for name in (names if r % 2 == 0 else list(reversed(names))):
                res = measured(running[name], name, lambda: wrk(PORTS[name], f"/{size}", args.seconds, args.conns))
                results[(name, size)].append(res)
    med = statistics.median
    print(f"\ncache HITs: {args.rounds} rounds x {args.seconds:g}s, {args.conns} connections, wrk -t1; "
          "proxies on CPU 0, wrk on CPU 1; medians")
    print(f"{'proxy':<12}{'size':>5}{'req/s':>10}{'MB/s':>9}{'CPU us/req':>12}{'CPU ms/GB':>11}{'non-2xx':>8}")
    table = {}
    for (name, size), rs in results.items():
        row = {"rps": med([x["requests"] / x["secs"] for x in rs]),
               "mbs": med([x["bytes"] / x["secs"] / (1 << 20) for x in rs]),
               "us_req": med([x["cpu_s"] * 1e6 / x["requests"] for x in rs]),
               "ms_gb": med([x["cpu_s"] * 1e3 / (x["bytes"] / 1e9) for x in rs]),
               "bad": sum(x["bad"] for x in rs)}
        table[(name, size)] = row
        print(f"{name:<12}{size:>5}{row['rps']:>10.0f}{row['mbs']:>9.1f}{row['us_req']:>12.1f}"
              f"{row['ms_gb']:>11.0f}{row['bad']:>8}")
    r1 = table[("ferry-cache", "1k")]["us_req"] / table[("nginx-cache", "1k")]["us_req"]
    r2 = table[("ferry-cache", "1m")]["ms_gb"] / table[("nginx-cache", "1m")]["ms_gb"]
    print(f"ferry/nginx: CPU per 1 KB HIT {r1:.2f}x, CPU per GB of 1 MB HITs {r2:.2f}x")
    for p in running.values():
        procs.stop(p)
    return table


def limits_only(procs, work, log, args):
    """The same route without a limit, with a local limit_req, and with its
    zone in Redis: CPU per 1 KB request (Ferry's, and Redis's beside it)."""
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    redis = procs.start(["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS), "--save", "",
                         "--appendonly", "no", "--dir", work], 1, log)
    wait_port(REDIS)
    names = ["ferry", "ferry-limit", "ferry-redis"]
    running = {n: start_proxy(procs, n, work, log) for n in names}
    for name in names:  # warm; every request must pass the limit
        if wrk(PORTS[name], "/1k", 1, args.conns)["bad"]:
            sys.exit(f"{name} answers errors; see {work}/procs.log")
    results = {n: [] for n in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else list(reversed(names))):
            redis_before = cpu_ticks(redis.pid)
            res = measured(running[name], name, lambda: wrk(PORTS[name], "/1k", args.seconds, args.conns))
            res["redis_s"] = (cpu_ticks(redis.pid) - redis_before) / TICK
            results[name].append(res)
    med = statistics.median
    print(f"\nlimits: {args.rounds} rounds x {args.seconds:g}s, {args.conns} connections, wrk -t1, 1 KB; "
          "proxies on CPU 0, backend, wrk and redis-server on CPU 1; medians")
    print(f"{'proxy':<12}{'req/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU us/req':>12}{'redis us/req':>13}{'non-2xx':>8}")
    base = None
    for name, rs in results.items():
        us = med([x["cpu_s"] * 1e6 / x["requests"] for x in rs])
        base = base or us
        print(f"{name:<12}{med([x['requests'] / x['secs'] for x in rs]):>10.0f}{med([x['p50'] for x in rs]):>8.2f}"
              f"{med([x['p99'] for x in rs]):>8.2f}{us:>12.1f}"
              f"{med([x['redis_s'] * 1e6 / x['requests'] for x in rs]):>13.1f}{sum(x['bad'] for x in rs):>8}"
              f"   ({us / base:.2f}x ferry)")
    for p in running.values():
        procs.stop(p)
    procs.stop(redis)


FLOOD_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/1k?k=" .. counter)
end
"""


def grpc_rows(procs, work, log, args):
    """Unary gRPC calls through ferry-grpc and nginx-grpc to one echo server,
    each row of GRPC_ROWS in interleaved rounds: prints the table and
    returns {(conns, streams): (ferry us/call, nginx us/call)}."""
    backend = procs.start([os.path.join(REL, "grpc-echo"), f"127.0.0.1:{GRPC_BACKEND}"], 1, log)
    wait_port(GRPC_BACKEND)
    call = grpc_call_file(work)
    names = ["ferry-grpc", "nginx-grpc"]
    running = {n: start_proxy(procs, n, work, log) for n in names}
    for name in names:  # warm the upstream connections; every call must succeed
        for conns, streams in GRPC_ROWS:
            res = h2load_grpc(PORTS[name], call, 1, conns, streams)
            if res["bad"] or not res["requests"]:
                sys.exit(f"{name} fails gRPC calls (-c{conns} -m{streams}); see {work}/procs.log\n{res['raw']}")
    results = {(n, row): [] for row in GRPC_ROWS for n in names}
    for r in range(args.rounds):
        for conns, streams in GRPC_ROWS:
            for name in (names if r % 2 == 0 else list(reversed(names))):
                res = measured(running[name], name,
                               lambda: h2load_grpc(PORTS[name], call, args.seconds, conns, streams))
                res["upstream_open"] = upstream_conns(proxy_pids(running[name], name))
                results[(name, (conns, streams))].append(res)
    med = statistics.median
    print(f"\ngRPC unary calls over h2c to an HTTP/2 upstream (grpc-echo, {call[1]}-byte calls echoed): "
          f"{args.rounds} rounds x {args.seconds:g}s, h2load -t1; proxies on CPU 0, grpc-echo and h2load "
          "on CPU 1; medians; failed = failed or non-2xx; no echo = 2xx without the message; unseen = 2xx "
          "grpc-echo did not answer; upstream conns: the proxy's to grpc-echo after a round / opened during one (max)")
    print(f"{'h2load':<11}{'proxy':<12}{'calls/s':>9}{'mean ms':>9}{'CPU us/call':>13}"
          f"{'calls':>9}{'failed':>8}{'no echo':>8}{'unseen':>8}{'upstream conns':>16}")
    us = {}
    for (name, (conns, streams)), rs in results.items():
        us[(name, (conns, streams))] = med([x["cpu_s"] * 1e6 / max(x["requests"], 1) for x in rs])
        print(f"{f'-c{conns} -m{streams}':<11}{name:<12}{med([x['rps'] for x in rs]):>9.0f}"
              f"{med([x['mean'] for x in rs]):>9.2f}{us[(name, (conns, streams))]:>13.1f}"
              f"{sum(x['requests'] for x in rs):>9}{sum(x['failed'] for x in rs):>8}"
              f"{sum(x['no_message'] for x in rs):>8}{sum(x['unseen'] for x in rs):>8}"
              f"{' / '.join(str(max(x[k] for x in rs)) for k in ('upstream_open', 'upstream_new')):>16}")
    rows = {row: (us[("ferry-grpc", row)], us[("nginx-grpc", row)]) for row in GRPC_ROWS}
    print("ferry/nginx CPU per call: " + ", ".join(f"-c{c} -m{m} {f / n:.2f}x" for (c, m), (f, n) in rows.items()))
    for p in running.values():
        procs.stop(p)
    procs.stop(backend)
    return rows


def key_flood(procs, work, log, args):
    """A flood of unique query strings on a cached route: the RSS of Ferry
    (max_keys 80,000, the default) and nginx (a 10m keys zone) before and
    after the same number of distinct keys, each stored."""
    os.makedirs(f"{work}/nginx-cache", exist_ok=True)
    os.chmod(f"{work}/nginx-cache", 0o777)  # nginx's workers run as nobody
    script = os.path.join(work, "flood.lua")
    with open(script, "w") as f:
        f.write(FLOOD_LUA)
    print(f"key flood: {args.key_flood} unique keys on a cached route, wrk -c8; RSS in MB")
    print(f"{'proxy':<12}{'before':>8}{'after':>8}{'added':>8}{'keys sent':>10}")
    for name in ["ferry-cache", "nginx-cache"]:
        p = start_proxy(procs, name, work, log)
        pids = proxy_pids(p, name)
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{PORTS[name]}/1k"])
        before = sum(status_kb(x, "VmRSS") for x in pids) / 1024
        sent = 0
        while sent < args.key_flood:
            out = subprocess.run(["wrk", "-t1", "-c8", "-d5s", "-s", script, f"http://127.0.0.1:{PORTS[name]}/"],
                                 capture_output=True, text=True).stdout
            m = re.search(r"(\d+) requests in", out)
            sent += int(m.group(1)) if m else 0
            if not m:
                break
        after = sum(status_kb(x, "VmRSS") for x in pids) / 1024
        print(f"{name:<12}{before:>8.1f}{after:>8.1f}{after - before:>8.1f}{sent:>10}")
        procs.stop(p)


def idle_kib(procs, name, work, log, conns, h2=False):
    """(KiB per idle connection above the proxy's own RSS, loaded MB, base MB):
    a fresh process, one request first so that pools and lazily made state
    exist before the base is read."""
    p = start_proxy(procs, name, work, log)
    try:
        pids = proxy_pids(p, name)
        rss, port = (idle_h2_rss, TLS_PORTS[name]) if h2 else (idle_keepalive_rss, PORTS[name])
        rss(pids, port, 1)
        base = sum(status_kb(x, "VmRSS") for x in pids) / 1024
        mb = rss(pids, port, conns)
        return (mb - base) * 1024 / conns, mb, base
    finally:
        procs.stop(p)


def idle_only(procs, work, log, conns):
    """RSS per idle connection, HTTP/1.1 and HTTP/2, above the proxy's own."""
    h2conns = min(conns, 2000)
    for h2, n, what in [(False, conns, "HTTP/1.1 keepalive clients"), (True, h2conns, "HTTP/2 connections over TLS")]:
        print(f"{n} idle {what}, each after one 1 KB request; fresh process each")
        print(f"{'proxy':<12}{'at start MB':>12}{'loaded MB':>11}{'KiB/conn':>10}")
        for name in ["ferry", "pingora", "nginx"]:
            kib, mb, base = idle_kib(procs, name, work, log, n, h2)
            print(f"{name:<12}{base:>12.1f}{mb:>11.1f}{kib:>10.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--nginx-proxy", action="store_true", help="also measure nginx as a proxy")
    ap.add_argument("--slow-clients", type=int, default=200)
    ap.add_argument("--idle-conns", type=int, default=1000)
    ap.add_argument("--check", action="store_true",
                    help="also nginx and the access-log rows; print each goal with its ratio, exit 1 if one is missed")
    ap.add_argument("--ab", nargs=2, metavar=("OLD", "NEW"),
                    help="only an A/B of two ferry binaries: CPU per 1 KB request, interleaved rounds")
    ap.add_argument("--ab-log", action="store_true", help="with --ab: both write the JSON access log to a file")
    ap.add_argument("--ab-path", default="/1k", help="with --ab: what is fetched (/1k or /1m)")
    ap.add_argument("--ab-h2", action="store_true", help="with --ab: HTTP/2 over TLS (h2load -m4), not HTTP/1.1")
    ap.add_argument("--ab-log-new", action="store_true",
                    help="with --ab: only NEW writes the access log (--ab B B: what the log costs)")
    ap.add_argument("--cache", action="store_true",
                    help="only the cache: Ferry and nginx answering from disk (CPU per 1 KB and per GB of 1 MB HITs)")
    ap.add_argument("--limits", action="store_true",
                    help="only the limits: CPU per request without a limit, with a local limit_req, with Redis")
    ap.add_argument("--grpc", action="store_true",
                    help="only gRPC: unary calls over h2c through Ferry and nginx's grpc_pass to one HTTP/2 server")
    ap.add_argument("--key-flood", type=int, metavar="N",
                    help="only the key flood: RSS before and after N unique cached keys, Ferry and nginx")
    ap.add_argument("--callgrind", action="store_true",
                    help="only instructions per 1 KB keepalive GET under callgrind: Ferry, nginx, the tokio floor, "
                         "proxied and as cache HITs")
    ap.add_argument("--idle", type=int, metavar="N",
                    help="only the idle measurement: N keepalive clients, KiB per connection")
    args = ap.parse_args()
    if args.check:
        args.nginx_proxy = True
        args.idle = args.idle or 0
        args.idle_conns = max(args.idle_conns, 10000)
    if args.idle or args.check:
        # Every client socket and every proxy connection is a descriptor.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 2 * max(args.idle, args.idle_conns) + 1024)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    ports_free()
    work = tempfile.mkdtemp(prefix="ferry-bench-")
    os.chmod(work, 0o755)  # nginx's workers run as nobody
    files = os.path.join(work, "files")
    os.makedirs(files)
    for name, size in [("1k", 1 << 10), ("1m", 1 << 20), ("4m", 4 << 20)]:
        with open(os.path.join(files, name), "wb") as f:
            f.write(os.urandom(size))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem"],
                   check=True, capture_output=True)
    has_h2load = shutil.which("h2load") is not None
    log = open(os.path.join(work, "procs.log"), "w")
    procs = Procs()
    try:
        conf = os.path.join(work, "nginx-backend.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(work, False))
        procs.start(["nginx", "-c", conf, "-p", work], 1, log)
        wait_port(BACKEND)
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{BACKEND}/1k"], capture_output=True, text=True).stdout
        if probe and probe != "200":
            sys.exit(f"the nginx backend answers {probe} for /1k")

        if args.idle:
            idle_only(procs, work, log, args.idle)
            return
        if args.callgrind:
            callgrind_rows(procs, work, log)
            return
        if args.ab:
            ab(procs, work, log, args)
            return
        if args.cache:
            cache_only(procs, work, log, args)
            return
        if args.key_flood:
            key_flood(procs, work, log, args)
            return
        if args.limits:
            limits_only(procs, work, log, args)
            return
        if args.grpc:
            grpc_rows(procs, work, log, args)
            return
        cg = callgrind_rows(procs, work, log) if args.check else {}
        names = ["pingora", "floor", "tokio-floor", "ferry", "ferry-unbuf"] + (["nginx"] if args.nginx_proxy else [])
        if args.check:
            names += ["ferry-log", "nginx-log"]
        running = {n: start_proxy(procs, n, work, log) for n in names}
        results = {(n, s): [] for n in names for s in ["1k", "1m"]}
        h2 = {n: [] for n in names if not n.endswith("floor")}  # the floors speak HTTP/1 only
        for name in names:  # warm pools and caches; every proxy must answer 200
            if wrk(PORTS[name], "/1k", 1, args.conns)["bad"]:
                sys.exit(f"{name} answers errors; see {work}/procs.log")
        for r in range(args.rounds):
            for size in ["1k", "1m"]:
                for name in (names if r % 2 == 0 else list(reversed(names))):
                    res = measured(running[name], name,
                                   lambda: wrk(PORTS[name], f"/{size}", args.seconds, args.conns))
                    results[(name, size)].append(res)
            for name in (list(h2) if r % 2 == 0 else list(reversed(h2))) if has_h2load else []:
                res = measured(running[name], name, lambda: h2load(TLS_PORTS[name], "/1k", args.seconds, args.conns))
                h2[name].append(res)

        med = lambda xs: statistics.median(xs)
        table = {}
        print(f"\n{args.rounds} rounds x {args.seconds:g}s, {args.conns} connections, wrk -t1; "
              "proxies on CPU 0, backend (nginx) and wrk on CPU 1; medians\n")
        print(f"{'proxy':<12}{'size':>5}{'req/s':>10}{'MB/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'CPU us/req':>12}{'CPU ms/GB':>11}{'non-2xx':>8}")
        for (name, size), rs in results.items():
            row = {
                "rps": med([x["requests"] / x["secs"] for x in rs]),
                "mbs": med([x["bytes"] / x["secs"] / (1 << 20) for x in rs]),
                "p50": med([x["p50"] for x in rs]),
                "p99": med([x["p99"] for x in rs]),
                "us_req": med([x["cpu_s"] * 1e6 / x["requests"] for x in rs]),
                "ms_gb": med([x["cpu_s"] * 1e3 / (x["bytes"] / 1e9) for x in rs]),
                "bad": sum(x["bad"] for x in rs),
            }
            table[(name, size)] = row
            print(f"{name:<12}{size:>5}{row['rps']:>10.0f}{row['mbs']:>9.1f}{row['p50']:>8.2f}{row['p99']:>8.2f}"
                  f"{row['us_req']:>12.1f}{row['ms_gb']:>11.0f}{row['bad']:>8}")

        print("\nratios (CPU per unit of work; lower is better for Ferry)")
        for other in [n for n in names if not n.startswith("ferry")]:
            for ferry in ["ferry", "ferry-unbuf"]:
                r1 = table[(ferry, "1k")]["us_req"] / table[(other, "1k")]["us_req"]
                r2 = table[(ferry, "1m")]["ms_gb"] / table[(other, "1m")]["ms_gb"]
                print(f"  {ferry}/{other}: CPU per 1 KB request {r1:.2f}x, CPU per GB of 1 MB responses {r2:.2f}x")

        if has_h2load:
            print(f"\nHTTP/2 over TLS to the client, 1 KB (h2load -c{args.conns} -m4), HTTP/1.1 to the backend")
            print(f"{'proxy':<12}{'req/s':>10}{'mean ms':>9}{'CPU us/req':>12}{'failed':>8}")
            for name, rs in h2.items():
                print(f"{name:<12}{med([x['rps'] for x in rs]):>10.0f}{med([x['mean'] for x in rs]):>9.2f}"
                      f"{med([x['cpu_s'] * 1e6 / max(x['requests'], 1) for x in rs]):>12.1f}"
                      f"{sum(x['bad'] for x in rs):>8}")
        else:
            print("\n(h2load not installed: no HTTP/2 run; apt-get install nghttp2-client)")

        for p in running.values():
            procs.stop(p)

        idle = {}
        rows = [(args.idle_conns, ["ferry", "pingora", "nginx"] if args.check else names, False)]
        if args.check:  # bare Pingora's ~100 KiB a client is measured once
            h2conns = min(args.idle_conns, 2000)
            rows = [(5000, ["ferry", "nginx"], False)] + rows + [(h2conns, ["ferry", "pingora", "nginx"], True)]
        for conns, who, is_h2 in rows:
            what = "HTTP/2 connections over TLS" if is_h2 else "keepalive client connections"
            print(f"\nRSS with {conns} idle {what} (one 1 KB request each), fresh process")
            for name in who:
                kib, mb, base = idle_kib(procs, name, work, log, conns, is_h2)
                idle[("h2-" if is_h2 else "") + name, conns] = kib
                print(f"  {name:<12} RSS {mb:7.1f} MB (after one request {base:.1f} MB), {kib:.2f} KiB per connection")

        print(f"\npeak RSS with {args.slow_clients} slow clients downloading 4 MB each "
              "(16 KiB receive buffer, 200 KB/s, 5 s), fresh process")
        peak = {}
        for name in ["pingora", "ferry", "ferry-unbuf"]:
            p = start_proxy(procs, name, work, log)
            base = peak_rss_kb(p.pid)
            subprocess.run([os.path.join(REL, "slow-clients"), f"127.0.0.1:{PORTS[name]}", "/4m",
                            str(args.slow_clients), "200000", "5"], capture_output=True)
            peak[name] = peak_rss_kb(p.pid) / 1024
            print(f"  {name:<12} peak RSS {peak[name]:7.1f} MB (at start {base / 1024:.1f} MB)")
            procs.stop(p)

        if args.check:
            cache = cache_only(procs, work, log, args)
            sys.exit(check(table, h2, idle, peak, grpc_rows(procs, work, log, args), cg, cache, args))
    finally:
        procs.stop_all()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
