#!/usr/bin/env bash
# Soak test on 127.0.0.1: CONNECTIONS concurrent keep-alive TLS clients through pinion for
# SECONDS, with pinion's RSS and open descriptors sampled every 10 s.
#
#   benches/soak.sh [SECONDS] [CONNECTIONS]      (defaults: 600 s, 5000 connections)
#   benches/soak.sh 60 1000                      (the short version)
#
# Passes (exit 0) with zero errors, RSS growth under 10 % from the first sample after warm-up
# to the last, and open descriptors back within 16 of the idle baseline once the clients are
# gone. Needs: cargo, wrk, nginx (the TLS backend), openssl, curl.
set -euo pipefail

DURATION=${1:-600}
CONNS=${2:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-soak.XXXXXX)
PINION_PID=""
cleanup() {
  [ -n "$PINION_PID" ] && kill -INT "$PINION_PID" 2>/dev/null || true
  [ -f "$WORK/backend.pid" ] && kill "$(cat "$WORK/backend.pid")" 2>/dev/null || true
}
trap cleanup EXIT
for tool in wrk nginx openssl curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(cd "$ROOT" && cargo build --release --locked -q --bin pinion)
cd "$WORK"
for n in front:localhost backend:backend.local; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=${n#*:}" \
    -addext "subjectAltName=DNS:${n#*:}" -keyout "${n%%:*}.key" -out "${n%%:*}.pem" 2>/dev/null
done
cat > backend.conf <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/backend.pid;
error_log $WORK/backend.err;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:19543 ssl; ssl_certificate $WORK/backend.pem; ssl_certificate_key $WORK/backend.key;
           location / { return 200 "ok\n"; } } }
EOF
nginx -c "$WORK/backend.conf" -p "$WORK"
cat > pinion.yaml <<EOF
server: {threads: 2, pid_file: $WORK/pinion.pid, upgrade_sock: $WORK/pinion.sock}
admin: {bind: "127.0.0.1:19902"}
listeners:
  - name: https
    bind: 127.0.0.1:18543
    tls: {certificates: [{cert: front.pem, key: front.key}], http2: false}
pools:
  - name: backend
    servers: [127.0.0.1:19543]
    probe: {interval_seconds: 5}
    timeouts: {idle_seconds: 5}        # pooled backend connections close soon after the load
    tls: {sni: backend.local, pins: [{cert: backend.pem}]}
routes: [{name: all, pool: backend}]
EOF
RUST_LOG=warn "$ROOT/target/release/pinion" -c pinion.yaml 2>pinion.err &
PINION_PID=$!
for _ in $(seq 100); do curl -skf https://127.0.0.1:18543/ >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' "/proc/$PINION_PID/status"; }
fds() { ls "/proc/$PINION_PID/fd" | wc -l; }
BASE_FDS=$(fds)
echo "idle: rss $(rss) kB, fds $BASE_FDS"

wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s https://127.0.0.1:18543/ > wrk.out 2>&1 &
WRK=$!
samples=()
while kill -0 "$WRK" 2>/dev/null; do
  sleep 10
  kill -0 "$WRK" 2>/dev/null || break
  samples+=("$(rss)")
  echo "t=$(( ${#samples[@]} * 10 ))s rss $(rss) kB fds $(fds)"
done
wait "$WRK" || true
cat wrk.out
sleep 8   # client connections closed, pooled backend connections past idle_seconds
END_FDS=$(fds)

errors=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' wrk.out)
first=${samples[1]:-${samples[0]:-0}}   # skip the first sample (warm-up)
last=${samples[-1]:-0}
growth=$(awk -v a="$first" -v b="$last" 'BEGIN{ if (a>0) printf "%.1f", (b-a)*100/a; else print 0 }')
echo "errors: $errors; rss first $first kB, last $last kB (growth $growth %); fds idle $BASE_FDS, after $END_FDS"
ok=1
[ "$errors" -eq 0 ] || { echo "FAIL: errors"; ok=0; }
awk -v g="$growth" 'BEGIN{exit !(g < 10)}' || { echo "FAIL: RSS grew $growth %"; ok=0; }
[ "$END_FDS" -le $((BASE_FDS + 16)) ] || { echo "FAIL: descriptors $BASE_FDS -> $END_FDS"; ok=0; }
[ $ok -eq 1 ] && echo "soak passed"
[ $ok -eq 1 ]
