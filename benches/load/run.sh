#!/usr/bin/env bash
# Throughput and latency of the proxy path on loopback, bounded in time.
#
#   benches/load/run.sh            # DURATION=10s CONNECTIONS=32 by default
#
# Starts nginx as the upstream (a fixed 200 answer), tokengate in front of it on an anonymous
# route, and measures with wrk (HTTP/1.1) and h2load (h2c): first nginx alone, then through
# tokengate. With taskset present, tokengate runs on CPU 0 with one worker thread and the load
# generator and nginx on CPU 1, so the figure is per gateway core. Every process started here
# is stopped by PID on exit. Needs: wrk, nginx, h2load (Debian: wrk nginx-light nghttp2-client).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REQUESTS_H2=${REQUESTS_H2:-200000}
cd "$(dirname "$0")/../.."

for tool in wrk nginx h2load; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx-light nghttp2-client)"; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

pin_gw=() pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_gw=(taskset -c 0) pin_load=(taskset -c 1)
  export TOKIO_WORKER_THREADS=1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }

upstream_port=$(free_port); gateway_port=$(free_port); admin_port=$(free_port)

cat > "$work/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$upstream_port;
    location / { return 200 "ok\n"; }
  }
}
NGINX
"${pin_load[@]}" nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
pids+=($!)

cat > "$work/tokengate.yaml" <<YAML
server:
  listen: "127.0.0.1:$gateway_port"
admin:
  listen: "127.0.0.1:$admin_port"
upstreams:
  app:
    endpoints: ["http://127.0.0.1:$upstream_port"]
routes:
  - name: bench
    match: { path_prefix: / }
    upstream: app
    auth: none
YAML
cargo build --release --quiet
RUST_LOG=warn "${pin_gw[@]}" target/release/tokengate serve --config "$work/tokengate.yaml" &
pids+=($!)
wait_port "$upstream_port"; wait_port "$gateway_port"

run_wrk() {
  local label=$1 url=$2
  echo "== $label (wrk, HTTP/1.1, $CONNECTIONS connections, $DURATION)"
  "${pin_load[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx|errors'
}
run_wrk "nginx alone" "http://127.0.0.1:$upstream_port/"
run_wrk "through tokengate" "http://127.0.0.1:$gateway_port/bench"

echo "== through tokengate (h2load, h2c prior knowledge, $CONNECTIONS connections x 10 streams, $REQUESTS_H2 requests)"
"${pin_load[@]}" h2load -n"$REQUESTS_H2" -c"$CONNECTIONS" -m10 "http://127.0.0.1:$gateway_port/bench" | grep -E 'finished in|requests:|status codes|time for request'

echo "== gateway resident memory after the runs"
grep VmRSS "/proc/${pids[1]}/status"
