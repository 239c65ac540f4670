#!/usr/bin/env bash
# The training run of the release build (scripts/release.sh): drives an instrumented pinion
# through what a gateway does all day, so that the compiler lays out and inlines its code for
# that work (profile-guided optimization). The instrumented binary writes its counts where
# LLVM_PROFILE_FILE says when it exits.
#
#   scripts/pgo-train.sh INSTRUMENTED_PINION [SECONDS_PER_PHASE]     (default 4)
#
# One pinion, its JSON access log to a file and its admin listener on, in front of an nginx TLS
# backend (HTTP/1.1 and HTTP/2 ports, pinned keys): keep-alive HTTP/1.1 and HTTP/2 clients, a
# new connection per request, request bodies, 64 KB responses, both pools, the admin endpoints.
# Everything listens on 127.0.0.1, on ports the kernel reports free. Needs: openssl, nginx, wrk,
# h2load (nghttp2-client), curl.
set -euo pipefail

PINION=${1:?usage: scripts/pgo-train.sh INSTRUMENTED_PINION [SECONDS_PER_PHASE]}
T=${2:-4}
for tool in openssl nginx wrk h2load curl; do
  command -v "$tool" >/dev/null || { echo "pgo-train: missing $tool" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/pinion-pgo.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "pgo-train: $*" >&2; exit 1; }

# A port nothing listens on, from the range 20000-29999, not one handed out before.
TAKEN=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 10000))
    case $TAKEN in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then TAKEN="$TAKEN$p "; echo "$p"; return; fi
  done
  fail "no free port in 20000-29999"
}
B1=$(free_port) B2=$(free_port) FRONT=$(free_port) ADMIN=$(free_port)

gen() { # name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$2" \
    -addext "subjectAltName=DNS:$2" -keyout "$WORK/$1.key" -out "$WORK/$1.pem" 2>/dev/null
}
gen front localhost
gen backend backend.local
head -c 65536 /dev/zero | tr '\0' 'x' >"$WORK/big.txt"
head -c 16384 /dev/zero | tr '\0' 'y' >"$WORK/body.txt"

cat >"$WORK/nginx.conf" <<CONF
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$B1 ssl;
    listen 127.0.0.1:$B2 ssl http2;
    ssl_certificate $WORK/backend.pem;
    ssl_certificate_key $WORK/backend.key;
    location / { return 200 "ok\n"; }
    location /h2/big { alias $WORK/big.txt; }
    location /big { alias $WORK/big.txt; }
  }
}
CONF

cat >"$WORK/pinion.yaml" <<CONF
server:
  threads: 1
  pid_file: $WORK/pinion.pid
  upgrade_sock: $WORK/pinion.sock
admin:
  bind: 127.0.0.1:$ADMIN
access_log:
  path: $WORK/access.log
  format: json
listeners:
  - name: https
    bind: 127.0.0.1:$FRONT
    tls:
      certificates: [{cert: front.pem, key: front.key}]
      http2: true
pools:
  - name: h1
    servers: [127.0.0.1:$B1]
    tls:
      sni: backend.local
      pins: [{cert: backend.pem}]
  - name: h2
    servers: [127.0.0.1:$B2]
    tls:
      http2: true
      sni: backend.local
      pins: [{cert: backend.pem}]
routes:
  - name: h2
    paths: ["/h2/*"]
    pool: h2
  - name: h1
    pool: h1
CONF

# nginx as one process in the foreground (no master): as root it then keeps root, so it reads
# the files above without changing their modes.
nginx -c "$WORK/nginx.conf" -p "$WORK" -g "daemon off; master_process off;" 2>"$WORK/nginx.out" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
RUST_LOG=warn "$PINION" -c "$WORK/pinion.yaml" 2>"$WORK/pinion.err" &
PINION_PID=$!
PIDS+=($PINION_PID)
URL="https://127.0.0.1:$FRONT"
for _ in $(seq 300); do
  curl -skf "$URL/" >/dev/null && curl -skf "$URL/h2/" >/dev/null && break
  kill -0 $PINION_PID 2>/dev/null || fail "pinion exited: $(tail -5 "$WORK/pinion.err")"
  sleep 0.1
done
curl -skf "$URL/" >/dev/null && curl -skf "$URL/h2/" >/dev/null || fail "no answer through pinion: $(tail -5 "$WORK/pinion.err")"

# Each phase must have succeeded: a training run of errors would optimize the error paths.
wrk_phase() { # wrk arguments...
  local out
  out=$(wrk -t1 -d"${T}s" "$@")
  echo "$out" | grep -q "Non-2xx\|Socket errors" && fail "wrk $*: $(echo "$out" | grep "Non-2xx\|Socket errors")"
  echo "$out" | awk '/requests in/{n=$1} END{exit !(n > 0)}' || fail "wrk $*: no requests"
  echo "  wrk $*: $(echo "$out" | awk '/requests in/{print $1}') requests"
}
h2load_phase() { # h2load arguments...
  local out
  out=$(h2load "$@" 2>&1)
  echo "$out" | grep -q " 0 failed, 0 errored" || fail "h2load $*: $(echo "$out" | grep "requests:")"
  echo "  h2load $*: $(echo "$out" | awk '/^requests:/{print $8}') succeeded"
}
echo "pgo-train: training $PINION ($T s per phase)"
wrk_phase -c50 "$URL/"
wrk_phase -c50 "$URL/h2/"
wrk_phase -c50 -H "Connection: close" "$URL/"
wrk_phase -c10 "$URL/big"
wrk_phase -c10 "$URL/h2/big"
h2load_phase -D "$T" -c20 -m10 "$URL/"
h2load_phase -D "$T" -c20 -m10 "$URL/h2/"
h2load_phase -D "$T" --h1 -c10 -d "$WORK/body.txt" "$URL/"
# Request bodies go to the HTTP/1.1 pool only: nginx answers `return 200` before it reads a body,
# which over HTTP/2 ends the connection with a GOAWAY. pinion replays the streams it refused
# (same server, another connection), but about 3 in 10,000 fail in ways no client may replay: a
# stream nginx accepted and then dropped with the connection, or a replay whose new stream
# closed before its body could be sent (502). Every phase here must succeed.
h2load_phase -D "$T" -c10 -m4 -d "$WORK/body.txt" "$URL/"
for _ in $(seq 20); do
  curl -sf "http://127.0.0.1:$ADMIN/metrics" >/dev/null || fail "admin /metrics"
  curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null || fail "admin /healthz"
done
# SIGINT: pinion exits at once, through exit(), which writes the profile.
kill -INT $PINION_PID
wait $PINION_PID || true
PIDS=($NGINX_PID)
echo "pgo-train: done"
