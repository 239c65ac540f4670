#!/usr/bin/env bash
# Side-by-side load benchmark on 127.0.0.1: pinion, nginx and HAProxy doing the same job.
#
#   benches/load.sh [SECONDS] [CONNECTIONS]        (defaults: 10 s, 50 keep-alive connections)
#   RUNS=3 WORKERS=2 IDLE=none benches/load.sh       (3 runs and their medians, the default; 2
#                                                    worker threads/processes each; no idle part)
#
# The job and the configurations are in benches/proxies.sh; `floor` is examples/pingora_floor.rs,
# the smallest Pingora proxy doing the job. The backend is an nginx TLS server answering "ok".
# wrk drives each proxy in turn, keep-alive and then with a new
# connection per request. CPU is read from /proc (utime+stime of the proxy's processes). Then
# memory per idle client connection (IDLE="1000 10000" connections by default).
# Everything listens on 127.0.0.1 only. Needs: cargo, wrk, nginx, haproxy, openssl, curl.
set -euo pipefail

SECONDS_PER_RUN=${1:-10}
CONNS=${2:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-bench.XXXXXX)
. "$ROOT/benches/proxies.sh"
# 10,000 idle connections need as many descriptors in each proxy and in the client, and
# HAProxy refuses to start unless it has two per connection (maxconn) plus a few.
ulimit -n "$(ulimit -Hn)"
LARGE=10000
if [ "$(ulimit -n)" -lt $((2 * (LARGE + 50) + 100)) ]; then
  LARGE=$(( ($(ulimit -n) - 100) / 2 - 50 )); LARGE=$((LARGE / 100 * 100))
  echo "open-file limit $(ulimit -n) (cannot be raised here): the large idle measurement uses $LARGE connections"
fi
HAPROXY_MAXCONN=$((LARGE + 50))
prepare "wrk nginx haproxy openssl curl python3" wrk nginx haproxy openssl curl python3
declare -A PID
LOADED="pinion pinion_h2 floor nginx haproxy"
for name in $LOADED; do
  run_proxy $name 2>"$WORK/$name.err" &
  PID[$name]=$!
  PIDS+=($!)
done
for name in $LOADED; do
  wait_answers "$(port_of $name)" || { echo "$name does not answer: $(cat "$WORK/$name.err")"; exit 1; }
done

# A proxy's processes: the one started and its children (nginx's workers when WORKERS > 1).
procs_of() { echo "$1" $(pgrep -P "$1" || true); }
cpu_ticks() { local t=0; for p in $*; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
# The sum of a /proc/PID/status field (kB) over processes: status_kb VmHWM|VmRSS PID...
status_kb() { local field=$1 t=0 p; shift; for p in "$@"; do t=$((t + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status"))); done; echo $t; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v} else {sub(/s$/,"",v); print v*1000} }'; }

HZ=$(getconf CLK_TCK)
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-1}
ROW='%-9s %-10s %10s %9s %9s %14s %10s %7s\n'
: >"$WORK/rows"
echo "$RUNS run(s) of ${SECONDS_PER_RUN} s, wrk -t$WORKERS -c$CONNS, $WORKERS worker(s) each"
for run in $(seq "$RUNS"); do
  echo
  echo "run $run:"
  printf "$ROW" proxy mode req/s p50_ms p99_ms cpu_s/10k_req peak_rss_MB errors
  for mode in keepalive newconn; do
    for name in $LOADED; do
      port=$(port_of $name)
      extra=()
      [ "$mode" = newconn ] && extra=(-H "Connection: close")
      procs=$(procs_of "${PID[$name]}")
      before=$(cpu_ticks $procs)
      out=$(wrk -t"$WORKERS" -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency "${extra[@]}" "https://127.0.0.1:$port/")
      after=$(cpu_ticks $procs)
      reqs=$(echo "$out" | awk '/requests in/{print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
      p50=$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")
      p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
      non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}'); non2xx=${non2xx:-0}
      sockerr=$(echo "$out" | awk -F'[ ,]+' '/Socket errors/{print $5+$7+$9+$11}'); sockerr=${sockerr:-0}
      cpu=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.3f", d/hz/n*10000}')
      rss=$(awk -v k="$(status_kb VmHWM $procs)" 'BEGIN{printf "%.1f", k/1024}')
      printf "$ROW" $name $mode "$rps" "$p50" "$p99" "$cpu" "$rss" $((non2xx + sockerr))
      echo "$name $mode $rps $p50 $p99 $cpu $rss $((non2xx + sockerr))" >>"$WORK/rows"
    done
  done
done

# Medians over the runs (errors: the sum), then the ratios of the medians.
declare -A CPU P99
echo
echo "medians of $RUNS run(s) (errors: all runs):"
printf "$ROW" proxy mode req/s p50_ms p99_ms cpu_s/10k_req peak_rss_MB errors
while read -r name mode rps p50 p99 cpu rss errors; do
  printf "$ROW" "$name" "$mode" "$rps" "$p50" "$p99" "$cpu" "$rss" "$errors"
  CPU[$name-$mode]=$cpu; P99[$name-$mode]=$p99
done < <(awk "$AWK_MEDIAN"'
  {
    key = $1 " " $2
    if (!(key in seen)) { seen[key] = 1; order[++keys] = key }
    for (f = 3; f <= 7; f++) col[key, f] = col[key, f] " " $f
    errors[key] += $8
  }
  END {
    for (k = 1; k <= keys; k++) {
      key = order[k]
      printf "%s %.2f %.2f %.2f %.3f %.1f %d\n", key, median(col[key, 3]), median(col[key, 4]), median(col[key, 5]), median(col[key, 6]), median(col[key, 7]), errors[key]
    }
  }' "$WORK/rows")

echo
echo "ratios of the medians (below 1: pinion uses less):"
for mode in keepalive newconn; do
  awk -v m=$mode -v pc="${CPU[pinion-$mode]}" -v nc="${CPU[nginx-$mode]}" -v hc="${CPU[haproxy-$mode]}" \
      -v fc="${CPU[floor-$mode]}" -v pp="${P99[pinion-$mode]}" -v np="${P99[nginx-$mode]}" -v hp="${P99[haproxy-$mode]}" \
      'BEGIN{b = (nc < hc ? nc : hc); printf "  %-10s cpu/request pinion/nginx %.2f, pinion/haproxy %.2f, pinion/better-of-both %.2f, pinion/pingora-floor %.2f; p99 pinion/nginx %.2f, pinion/haproxy %.2f\n", m, pc/nc, pc/hc, pc/b, pc/fc, pp/np, pp/hp}'
done

echo
echo "HTTP/2 to the backend (pinion_h2) against HTTP/1.1 (pinion), ratios of the medians:"
for mode in keepalive newconn; do
  awk -v m=$mode -v h1="${CPU[pinion-$mode]}" -v h2="${CPU[pinion_h2-$mode]}" \
      -v p1="${P99[pinion-$mode]}" -v p2="${P99[pinion_h2-$mode]}" \
      'BEGIN{printf "  %-10s cpu/request h2/h1 %.2f; p99 h2/h1 %.2f\n", m, h2/h1, p2/p1}'
done

# Backend connection reuse over the keep-alive run, from pinion's metrics.
metrics=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
opened=$(echo "$metrics" | awk -F' ' '/pinion_backend_connections_total.*kind="opened"/{s+=$2} END{print s+0}')
reused=$(echo "$metrics" | awk -F' ' '/pinion_backend_connections_total.*kind="reused"/{s+=$2} END{print s+0}')
echo "pinion backend connections: $opened opened, $reused reused ($(awk -v o="$opened" -v r="$reused" 'BEGIN{printf "%.3f", 100*o/(o+r)}')% new)"

# Memory per idle client connection: IDLE (default "1000 10000") TLS connections that each made
# one keep-alive request and then wait (benches/idle_clients.py), each proxy in turn; the
# proxy's RSS with them open minus its RSS just before, divided by their number.
echo
echo "memory per idle TLS client connection (each made one request, then waits):"
printf '%-8s %12s %14s %14s\n' proxy connections rss_before_MB per_conn_KB
IDLE=${IDLE:-1000 $LARGE}
[ "$IDLE" = none ] && IDLE=""
for n in $IDLE; do
  for name in pinion floor nginx haproxy; do
    before=$(status_kb VmRSS $(procs_of "${PID[$name]}"))
    coproc CLIENTS { python3 "$ROOT/benches/idle_clients.py" "$(port_of $name)" "$n"; }
    ready=""
    read -r ready <&"${CLIENTS[0]}" || true
    if [ "${ready%% *}" != ready ]; then
      echo "$name: the idle clients failed"; wait "$CLIENTS_PID" || true; continue
    fi
    sleep 1
    after=$(status_kb VmRSS $(procs_of "${PID[$name]}"))
    printf '%-8s %12s %14s %14s\n' "$name" "$n" "$(awk -v k="$before" 'BEGIN{printf "%.1f", k/1024}')" \
      "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN{printf "%.1f", (a-b)*1024/n/1000}')"
    echo >&"${CLIENTS[1]}"
    wait "$CLIENTS_PID" || true
    # Let the proxy see the closes before the next one is measured.
    sleep 2
  done
done
