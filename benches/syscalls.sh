#!/usr/bin/env bash
# System calls per keep-alive request of pinion, nginx and HAProxy doing the same job
# (benches/proxies.sh), counted by the kernel's syscall tracepoints with `perf stat` while wrk
# drives each proxy at full speed (`strace` slows a proxy so much that its batching changes).
#
#   benches/syscalls.sh [SECONDS]                  (default 4 s per proxy)
#   PROXIES="pinion floor" benches/syscalls.sh      (a subset; default: pinion nginx haproxy)
#
# Prints, per proxy, each system call made at least once per hundred requests, per request.
# One worker each, `wrk -t1 -c50`, everything on 127.0.0.1. Needs: cargo, perf (linux-perf,
# with access to tracepoints: root or kernel.perf_event_paranoid <= -1), wrk, nginx, haproxy,
# openssl, curl.
set -euo pipefail

SECONDS_PER_PROXY=${1:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-syscalls.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "linux-perf wrk nginx haproxy openssl curl" perf wrk nginx haproxy openssl curl

CALLS="read recvfrom readv write sendto writev sendmsg recvmsg epoll_wait epoll_ctl futex \
getpeername getsockname getsockopt setsockopt getpid accept4 close"
EVENTS=$(for c in $CALLS; do printf 'syscalls:sys_enter_%s,' "$c"; done)
EVENTS="${EVENTS}context-switches"

for name in ${PROXIES:-pinion nginx haproxy}; do
  run_proxy "$name" 2>"$WORK/$name.err" &
  pid=$!
  PIDS+=("$pid")
  port=$(port_of "$name")
  wait_answers "$port" || { echo "$name does not answer: $(cat "$WORK/$name.err")"; exit 1; }
  # Warm up: connections to the backend made, buffers allocated.
  wrk -t1 -c50 -d2s "https://127.0.0.1:$port/" >/dev/null
  perf stat -x, -e "$EVENTS" -p "$pid" -o "$WORK/$name.stat" -- sleep "$SECONDS_PER_PROXY" &
  stat=$!
  out=$(wrk -t1 -c50 -d"${SECONDS_PER_PROXY}s" "https://127.0.0.1:$port/")
  wait "$stat" || true
  requests=$(echo "$out" | awk '/requests in/{print $1}')
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$name: $requests requests in ${SECONDS_PER_PROXY} s"
  # perf's CSV: count,unit,event,...; a count of "<not counted>" is skipped.
  awk -F, -v n="$requests" '
    $1 ~ /^[0-9]+$/ && n > 0 {
      event = $3; sub(/^syscalls:sys_enter_/, "", event)
      per = $1 / n
      if (per >= 0.01) { printf "  %-16s %6.2f per request\n", event, per }
      if ($3 ~ /^syscalls:/) { total += per }
    }
    END { printf "  %-16s %6.2f per request\n", "system calls", total }' "$WORK/$name.stat"
done
