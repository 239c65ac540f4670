#!/usr/bin/env bash
# What clients see when a proxy reloads its configuration under load, side by side on 127.0.0.1:
# nginx (`nginx -s reload`), HAProxy (master-worker, SIGUSR2 to the master), pinion in place
# (`pinion reload`, and SIGHUP) and pinion's hand-over to a new process (`pinion upgrade`).
#
#   benches/reload.sh [RUNS]           (default 2 runs of everything; DURATION=10 seconds each)
#
# Each run drives one proxy for DURATION seconds and reloads it at 3 s with a configuration that
# really differs (the X-Gen response header the proxy adds goes from 1 to 2; "applied" checks it
# afterwards). Loads: wrk -t1 -c20 keep-alive GETs, wrk POSTs with a 2 KiB body (Lua), and
# h2load -c20 -m10 over HTTP/2. Errors are wrk's socket errors (connect/read/write/timeout) plus
# non-2xx answers, and h2load's failed plus errored requests. The backend is the nginx TLS server
# of benches/proxies.sh; everything listens on 127.0.0.1 only.
set -euo pipefail

RUNS=${1:-2}
DURATION=${DURATION:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-reload.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "wrk nginx haproxy openssl curl nghttp2-client" wrk nginx haproxy openssl curl h2load

RELOAD_PORT=18450
PROXY_PID=""

# Configuration generation $2 of proxy $1 (the X-Gen header it adds).
write_conf() {
  local gen=$2
  case $1 in
    nginx) cat > "$WORK/nginx-reload.conf" <<CONF
worker_processes 1;
pid $WORK/nginx-reload.pid;
error_log $WORK/nginx-reload.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 128; }
  server {
    listen 127.0.0.1:$RELOAD_PORT ssl http2;
    ssl_certificate $WORK/front.pem;
    ssl_certificate_key $WORK/front.key;
    location / {
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_server_name on;
      proxy_ssl_name backend.local;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $WORK/backend.pem;
      add_header X-Gen $gen always;
    }
  }
}
CONF
    ;;
    haproxy) cat > "$WORK/haproxy-reload.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
  pidfile $WORK/haproxy-reload.pid
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$RELOAD_PORT ssl crt $WORK/front-combined.pem alpn h2,http/1.1
  http-response set-header X-Gen $gen
  default_backend be
backend be
  http-reuse always
  server b 127.0.0.1:$BACKEND ssl verify required ca-file $WORK/backend.pem sni str(backend.local) verifyhost backend.local
CONF
    ;;
    pinion*) cat > "$WORK/pinion-reload.yaml" <<CONF
server:
  threads: 1
  pid_file: $WORK/pinion-reload.pid
  upgrade_sock: $WORK/pinion-reload-upgrade.sock
  control_sock: $WORK/pinion-reload-control.sock
  grace_period_seconds: 5
  graceful_shutdown_timeout_seconds: 5
listeners:
  - name: https
    bind: 127.0.0.1:$RELOAD_PORT
    tls:
      certificates: [{cert: front.pem, key: front.key}]
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
    response_headers: {set: {X-Gen: "$gen"}}
CONF
    ;;
  esac
}

# Starts proxy $1 on generation 1 and waits until it answers; sets PROXY_PID (the process that
# stays: nginx's and HAProxy's master).
start() {
  write_conf "$1" 1
  case $1 in
    nginx)
      nginx -c "$WORK/nginx-reload.conf" -p "$WORK" 2>/dev/null
      wait_answers $RELOAD_PORT
      PROXY_PID=$(cat "$WORK/nginx-reload.pid") ;;
    haproxy)
      haproxy -W -f "$WORK/haproxy-reload.cfg" -db 2>"$WORK/haproxy-reload.err" &
      PROXY_PID=$!
      wait_answers $RELOAD_PORT ;;
    pinion*)
      RUST_LOG=warn "$PINION" -c "$WORK/pinion-reload.yaml" 2>>"$WORK/pinion-reload.err" &
      wait_answers $RELOAD_PORT
      PROXY_PID=$(cat "$WORK/pinion-reload.pid") ;;
  esac
}

# Reloads proxy $1 (kind) onto generation 2.
reload() {
  write_conf "$1" 2
  case $1 in
    nginx) nginx -s reload -c "$WORK/nginx-reload.conf" -p "$WORK" 2>/dev/null ;;
    haproxy) kill -USR2 "$PROXY_PID" ;;
    pinion-reload) "$PINION" reload -c "$WORK/pinion-reload.yaml" >/dev/null ;;
    pinion-sighup) kill -HUP "$PROXY_PID" ;;
    pinion-upgrade) "$PINION" upgrade -c "$WORK/pinion-reload.yaml" >/dev/null ;;
  esac
}

# The process id to compare after the run.
current_pid() {
  case $1 in
    nginx) cat "$WORK/nginx-reload.pid" ;;
    haproxy) echo "$PROXY_PID" ;;
    pinion*) cat "$WORK/pinion-reload.pid" ;;
  esac
}

stop() {
  case $1 in
    nginx) nginx -s stop -c "$WORK/nginx-reload.conf" -p "$WORK" 2>/dev/null || true ;;
    haproxy) kill -INT "$PROXY_PID" 2>/dev/null || true ;;
    pinion*) kill -INT "$(cat "$WORK/pinion-reload.pid")" 2>/dev/null || true ;;
  esac
  # The port is free again once nothing answers (a handed-over pinion drains first).
  for _ in $(seq 200); do curl -sk -m 1 "https://127.0.0.1:$RELOAD_PORT/" >/dev/null || break; sleep 0.1; done
  sleep 0.5
}

cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 2048)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# Runs load $2 against proxy $1, reloading at 3 s; prints one row.
measure() {
  local kind=$1 load=$2 out requests errors before after applied
  start "$kind"
  before=$(current_pid "$kind")
  (sleep 3; reload "$kind") &
  local reloader=$!
  case $load in
    get) out=$(wrk -t1 -c20 -d"${DURATION}s" "https://127.0.0.1:$RELOAD_PORT/" 2>&1) ;;
    post) out=$(wrk -t1 -c20 -d"${DURATION}s" -s "$WORK/post.lua" "https://127.0.0.1:$RELOAD_PORT/" 2>&1) ;;
    h2) out=$(h2load -c20 -m10 -D"$DURATION" "https://127.0.0.1:$RELOAD_PORT/" 2>&1) ;;
  esac
  wait $reloader
  after=$(current_pid "$kind")
  if [ "$load" = h2 ]; then
    requests=$(echo "$out" | awk '/^requests:/{print $6}')
    errors=$(echo "$out" | awk '/^requests:/{print $8+$10}')
  else
    requests=$(echo "$out" | awk '/requests in/{print $1}')
    errors=$(echo "$out" | awk -F'[ ,]+' '/Socket errors/{print $4+$6+$8+$10}')
    local non2xx
    non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
    errors=$(( ${errors:-0} + ${non2xx:-0} ))
  fi
  applied=no
  curl -sk -D - -o /dev/null "https://127.0.0.1:$RELOAD_PORT/" | grep -qi '^x-gen: 2' && applied=yes
  printf '%-15s %-5s %9s %8s %8s %-8s\n' "$kind" "$load" "${requests:-0}" "${errors:-0}" \
    "$([ "$before" = "$after" ] && echo same || echo new)" "$applied" | tee -a "$WORK/rows"
  stop "$kind"
}

: > "$WORK/rows"
printf '%-15s %-5s %9s %8s %8s %-8s\n' proxy load requests errors pid applied
for run in $(seq "$RUNS"); do
  for kind in nginx haproxy pinion-reload pinion-sighup pinion-upgrade; do
    for load in get post h2; do
      measure "$kind" "$load"
    done
  done
done

if [ "$RUNS" -gt 1 ]; then
  echo
  echo "medians over $RUNS runs:"
  printf '%-15s %-5s %9s %8s\n' proxy load requests errors
  sort -k1,1 -k2,2 "$WORK/rows" | awk '
    function median(list, n,   a, i, j, t) {
      split(list, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { key = $1 " " $2; req[key] = req[key] " " $3; err[key] = err[key] " " $4; n[key]++ }
    END { for (k in n) { split(k, p, " "); printf "%-15s %-5s %9s %8s\n", p[1], p[2], median(req[k], n[k]), median(err[k], n[k]) } }
  ' | sort
fi
