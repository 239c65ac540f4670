#!/usr/bin/env bash
# Side-by-side load benchmark on 127.0.0.1: pinion, nginx and HAProxy doing the same job.
#
#   benches/load.sh [SECONDS] [CONNECTIONS]        (defaults: 10 s, 50 keep-alive connections)
#
# The job, identical for the three: TLS 1.3 from the client with an ECDSA P-256 certificate; a
# new TLS connection to one backend, verified against the backend's self-signed certificate (a
# pin for pinion, that certificate as the trusted CA and name for nginx and HAProxy); upstream
# keep-alive; X-Forwarded-For added; one worker thread or process each. The backend is an nginx
# TLS server answering "ok". wrk drives each proxy in turn, keep-alive and then with a new
# connection per request. CPU is read from /proc (utime+stime of the proxy's processes).
# Everything listens on 127.0.0.1 only. Needs: cargo, wrk, nginx, haproxy, openssl, curl.
set -euo pipefail

SECONDS_PER_RUN=${1:-10}
CONNS=${2:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-bench.XXXXXX)
PIDS=()
cleanup() {
  # SIGINT: stop at once (SIGTERM would drain for the grace period).
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx-backend.pid" ] && kill "$(cat "$WORK/nginx-backend.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx-proxy.pid" ] && kill "$(cat "$WORK/nginx-proxy.pid")" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
}
trap cleanup EXIT

for tool in wrk nginx haproxy openssl curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx haproxy openssl curl)"; exit 1; }
done
(cd "$ROOT" && cargo build --release --locked -q --bin pinion --example pingora_floor)
PINION="$ROOT/target/release/pinion"
FLOOR="$ROOT/target/release/examples/pingora_floor"

BACKEND=19443 PINION_PORT=18443 NGINX_PORT=18444 HAPROXY_PORT=18445 FLOOR_PORT=18446 ADMIN=19901
cd "$WORK"
gen() { # name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$2" -addext "subjectAltName=DNS:$2" -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
gen front localhost
gen backend backend.local
cat front.pem front.key > front-combined.pem

# --- backend ------------------------------------------------------------------------------
cat > nginx-backend.conf <<EOF
worker_processes 1;
pid $WORK/nginx-backend.pid;
error_log $WORK/nginx-backend.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$BACKEND ssl;
    ssl_certificate $WORK/backend.pem;
    ssl_certificate_key $WORK/backend.key;
    location / { return 200 "ok\n"; }
  }
}
EOF
nginx -c "$WORK/nginx-backend.conf" -p "$WORK" 2>/dev/null

# --- the three proxies --------------------------------------------------------------------
cat > pinion.yaml <<EOF
server:
  threads: 1
  pid_file: $WORK/pinion.pid
  upgrade_sock: $WORK/pinion.sock
admin:
  bind: 127.0.0.1:$ADMIN
listeners:
  - name: https
    bind: 127.0.0.1:$PINION_PORT
    tls:
      certificates: [{cert: front.pem, key: front.key}]
      min_version: "1.3"
      http2: false
pools:
  - name: backend
    servers: [127.0.0.1:$BACKEND]
    probe: false
    tls:
      sni: backend.local
      pins: [{cert: backend.pem}]
routes:
  - name: all
    pool: backend
EOF
RUST_LOG=warn "$PINION" -c pinion.yaml 2>pinion.err &
PIDS+=($!)
# The floor: the smallest Pingora proxy doing the same job (examples/pingora_floor.rs).
RUST_LOG=warn "$FLOOR" $FLOOR_PORT $BACKEND "$WORK/front.pem" "$WORK/front.key" 2>floor.err &
FLOOR_PID=$!
PIDS+=($FLOOR_PID)

cat > nginx-proxy.conf <<EOF
worker_processes 1;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/front.pem;
    ssl_certificate_key $WORK/front.key;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_ssl_server_name on;
      proxy_ssl_name backend.local;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $WORK/backend.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
nginx -c "$WORK/nginx-proxy.conf" -p "$WORK" 2>/dev/null

cat > haproxy.cfg <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT ssl crt $WORK/front-combined.pem ssl-min-ver TLSv1.3
  option forwardfor
  default_backend be
backend be
  http-reuse always
  server b 127.0.0.1:$BACKEND ssl verify required ca-file $WORK/backend.pem sni str(backend.local) verifyhost backend.local
EOF
haproxy -f haproxy.cfg -D -p "$WORK/haproxy.pid" 2>haproxy.err

for port in $PINION_PORT $NGINX_PORT $HAPROXY_PORT $FLOOR_PORT; do
  for _ in $(seq 100); do curl -skf "https://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
  curl -skf "https://127.0.0.1:$port/" >/dev/null || { echo "proxy on $port does not answer"; exit 1; }
done

pids_of() { # name -> the processes to measure
  case $1 in
    pinion) cat "$WORK/pinion.pid" ;;
    floor) echo $FLOOR_PID ;;
    nginx) m=$(cat "$WORK/nginx-proxy.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')" ;;
    haproxy) cat "$WORK/haproxy.pid" ;;
  esac
}
cpu_ticks() { local t=0; for p in $*; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
peak_rss_kb() { local t=0; for p in $*; do t=$((t + $(awk '/VmHWM/{print $2}' "/proc/$p/status"))); done; echo $t; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else {sub(/s$/,"",v); print v*1000} }'; }

HZ=$(getconf CLK_TCK)
printf '%-8s %-10s %10s %9s %9s %14s %10s %7s\n' proxy mode req/s p50_ms p99_ms cpu_s/10k_req peak_rss_MB errors
declare -A CPU P99
for mode in keepalive newconn; do
  for name in pinion floor nginx haproxy; do
    case $name in pinion) port=$PINION_PORT ;; floor) port=$FLOOR_PORT ;; nginx) port=$NGINX_PORT ;; haproxy) port=$HAPROXY_PORT ;; esac
    extra=()
    [ "$mode" = newconn ] && extra=(-H "Connection: close")
    procs=$(pids_of $name)
    before=$(cpu_ticks $procs)
    out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency "${extra[@]}" "https://127.0.0.1:$port/")
    after=$(cpu_ticks $procs)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
    non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}'); non2xx=${non2xx:-0}
    sockerr=$(echo "$out" | awk -F'[ ,]+' '/Socket errors/{print $4+$6+$8+$10}'); sockerr=${sockerr:-0}
    cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.3f", d/hz/n*10000}')
    rss=$(awk -v k="$(peak_rss_kb $procs)" 'BEGIN{printf "%.1f", k/1024}')
    CPU[$name-$mode]=$cpu; P99[$name-$mode]=$p99
    printf '%-8s %-10s %10s %9s %9s %14s %10s %7s\n' $name $mode "$rps" "$p50" "$p99" "$cpu" "$rss" $((non2xx + sockerr))
  done
done

echo
echo "ratios (below 1: pinion uses less):"
for mode in keepalive newconn; do
  awk -v m=$mode -v pc="${CPU[pinion-$mode]}" -v nc="${CPU[nginx-$mode]}" -v hc="${CPU[haproxy-$mode]}" \
      -v fc="${CPU[floor-$mode]}" -v pp="${P99[pinion-$mode]}" -v np="${P99[nginx-$mode]}" -v hp="${P99[haproxy-$mode]}" \
      'BEGIN{printf "  %-10s cpu/request pinion/nginx %.2f, pinion/haproxy %.2f, pinion/pingora-floor %.2f; p99 pinion/nginx %.2f, pinion/haproxy %.2f\n", m, pc/nc, pc/hc, pc/fc, pp/np, pp/hp}'
done

# Backend connection reuse over the keep-alive run, from pinion's metrics.
metrics=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
opened=$(echo "$metrics" | awk -F' ' '/pinion_backend_connections_total.*kind="opened"/{s+=$2} END{print s+0}')
reused=$(echo "$metrics" | awk -F' ' '/pinion_backend_connections_total.*kind="reused"/{s+=$2} END{print s+0}')
echo "pinion backend connections: $opened opened, $reused reused ($(awk -v o="$opened" -v r="$reused" 'BEGIN{printf "%.3f", 100*o/(o+r)}')% new)"

# Memory with 1,000 open client connections.
wrk -t1 -c1000 -d5s "https://127.0.0.1:$PINION_PORT/" >/dev/null 2>&1 || true
echo "pinion peak RSS after 1,000 concurrent connections: $(awk -v k="$(peak_rss_kb "$(cat "$WORK/pinion.pid")")" 'BEGIN{printf "%.1f", k/1024}') MB"
