#!/usr/bin/env bash
# What keep-alive clients see when a proxy reloads its configuration under load, side by side on
# 127.0.0.1 (issue 10):
#
#   nginx    nginx -s reload              new workers, the master stays
#   haproxy  SIGUSR2 to the master (-W)   master-worker mode: new worker, the master stays
#   pinion   pinion reload -c FILE        in place, same process (same listening socket)
#   pinion   kill -HUP PID                in place, the same from the signal
#   pinion   pinion upgrade -c FILE       hand-over to a new process
#
#   benches/reload.sh [RUNS]       (default 2 runs of everything; medians printed when RUNS > 1)
#   ONLY="pinion-upgrade haproxy-usr2" LOADS=h2 benches/reload.sh 5   (some kinds and loads only)
#
# Each measurement starts the proxy on configuration generation 1, puts it under load for
# DURATION seconds (default 10) and reloads it at AT seconds (default 3) onto generation 2: the
# response header X-Gen the proxy adds goes from 1 to 2, so every reload really changes the
# configuration. After the load (and at least 6 s after the reload), one curl on a new
# connection checks that X-Gen is 2 ("applied"). Loads, each on a freshly started proxy:
#   get   wrk -t1 -c20, keep-alive HTTP/1.1 GETs
#   post  the same with 1 KiB POST bodies (a wrk Lua script)
#   h2    h2load -c20 -m10, HTTP/2 (20 connections, 10 streams each)
# wrk's socket errors are listed as it reports them (connect, read, write, timeout), then its
# responses that are not 2xx/3xx; h2load's are its failed streams, split by its per-stream log
# into those written to the proxy ("sent") and those its own nghttp2 refused before writing them
# when a GOAWAY came ("unsent"), then timed-out requests and responses that are not 2xx. "pid changed" compares the process a reload is sent to (nginx's
# and HAProxy's master, pinion; for pinion the one its pid file names) before and after.
#
# The certificates, the TLS backend and the proxies' configurations are benches/proxies.sh's
# (the same job as benches/load.sh), with HTTP/2 offered and the X-Gen header added. Everything
# started is stopped when the script exits. Needs: cargo, wrk, h2load (nghttp2-client), nginx,
# haproxy, openssl, curl.
set -euo pipefail

RUNS=${1:-2}
DURATION=${DURATION:-10}
AT=${AT:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-reload.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "wrk nghttp2-client nginx haproxy openssl curl" wrk h2load nginx haproxy openssl curl

MAIN=""       # the proxy being measured (the process started; nginx's and HAProxy's master)
PROXY=""      # its name
RELOADER=""   # the background job that reloads at $AT seconds

# The pid file a proxy names (pinion's changes on a hand-over).
pid_file_of() {
  case $1 in nginx) echo "$WORK/nginx-proxy.pid" ;; pinion) echo "$WORK/pinion.pid" ;; *) echo "" ;; esac
}

# The process id to compare before and after the reload.
current_pid() {
  local file
  file=$(pid_file_of "$1")
  if [ -n "$file" ]; then cat "$file" 2>/dev/null || echo none; else echo "$MAIN"; fi
}

# Stops the proxy being measured at once (SIGINT: nginx's fast shutdown, HAProxy's master stops
# its workers, pinion without draining), a handed-over pinion included, and waits until its
# port refuses connections.
stop_proxy() {
  [ -n "$PROXY" ] || return 0
  local pids=("$MAIN") file p
  file=$(pid_file_of "$PROXY")
  [ -n "$file" ] && [ -f "$file" ] && pids+=("$(cat "$file")")
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$MAIN" 2>/dev/null || true
  for _ in $(seq 100); do
    curl -sk -m 1 -o /dev/null "https://127.0.0.1:$(port_of "$PROXY")/" || break
    sleep 0.1
  done
  [ -n "$file" ] && rm -f "$file"
  PROXY="" MAIN=""
}

# On exit: the proxy being measured (not PIDS: the processes of earlier measurements are gone,
# and their ids may belong to others by now) and the backend.
finish() {
  [ -n "$RELOADER" ] && kill "$RELOADER" 2>/dev/null || true
  stop_proxy
  cleanup
}
trap finish EXIT
trap 'exit 130' INT TERM

# Reload kind $1 of proxy $2 onto generation 2 (in the background at $AT seconds).
reload_proxy() {
  write_reload_conf "$2" 2
  case $1 in
    nginx-s-reload) nginx -s reload -c "$WORK/nginx-reload.conf" -p "$WORK" ;;
    haproxy-usr2) kill -USR2 "$MAIN" ;;
    pinion-reload) "$PINION" reload -c "$WORK/pinion-reload.yaml" ;;
    pinion-hup) kill -HUP "$(cat "$WORK/pinion.pid")" ;;
    pinion-upgrade) "$PINION" upgrade -c "$WORK/pinion-reload.yaml" ;;
  esac
}

proxy_of() { case $1 in nginx*) echo nginx ;; haproxy*) echo haproxy ;; *) echo pinion ;; esac; }
label_of() {
  case $1 in
    nginx-s-reload) echo "nginx -s reload" ;;
    haproxy-usr2) echo "USR2 to master (-W)" ;;
    pinion-reload) echo "pinion reload (in place)" ;;
    pinion-hup) echo "kill -HUP (in place)" ;;
    pinion-upgrade) echo "pinion upgrade (hand-over)" ;;
  esac
}

cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

header_gen() { # port: the X-Gen value one new connection gets
  curl -sk -m 5 -D - -o /dev/null "https://127.0.0.1:$1/" 2>/dev/null |
    awk 'tolower($1) == "x-gen:" { gsub(/\r/, "", $2); print $2 }' || true
}

# One measurement: run $1, reload kind $2, load $3. Appends one row to $WORK/h1 or $WORK/h2.
measure() {
  local run=$1 kind=$2 load=$3 port out before after changed applied rc
  PROXY=$(proxy_of "$kind")
  port=$(port_of "$PROXY")
  write_reload_conf "$PROXY" 1
  run_reloadable "$PROXY" 2>>"$WORK/$PROXY-reload.err" &
  MAIN=$!
  wait_answers "$port" || { echo "$PROXY does not answer: $(tail -5 "$WORK/$PROXY-reload.err")"; exit 1; }
  [ "$(header_gen "$port")" = 1 ] || { echo "$PROXY does not add X-Gen: 1"; exit 1; }
  before=$(current_pid "$PROXY")

  (sleep "$AT"; rc=0; reload_proxy "$kind" "$PROXY" >"$WORK/reload.out" 2>&1 || rc=$?; echo $rc >"$WORK/reload.rc") &
  RELOADER=$!
  case $load in
    get) out=$(wrk -t1 -c20 -d"${DURATION}s" "https://127.0.0.1:$port/" 2>&1 || true) ;;
    post) out=$(wrk -t1 -c20 -d"${DURATION}s" -s "$WORK/post.lua" "https://127.0.0.1:$port/" 2>&1 || true) ;;
    h2)
      rm -f "$WORK/h2load.log"
      out=$(h2load -c20 -m10 -D"$DURATION" --log-file="$WORK/h2load.log" "https://127.0.0.1:$port/" 2>&1 || true) ;;
  esac
  wait "$RELOADER" || true
  RELOADER=""
  rc=$(cat "$WORK/reload.rc")
  { echo "== run $run $kind $load: reload exit $rc"; cat "$WORK/reload.out"; echo "$out"; } >>"$WORK/log"
  [ "$rc" = 0 ] || echo "  $(label_of "$kind") ($load): the reload command failed (exit $rc): $(head -3 "$WORK/reload.out" || true)" >&2

  # The check comes at least 6 s after the reload began: in a hand-over, pinion's old process
  # keeps accepting new connections beside the new one for 5 s (Pingora's overlap), on its old
  # configuration. Only shorter runs than the default wait here.
  [ $((DURATION - AT)) -lt 6 ] && sleep $((6 - DURATION + AT))
  after=$(current_pid "$PROXY")
  changed=$([ "$before" = "$after" ] && echo no || echo yes)
  applied=$([ "$(header_gen "$port")" = 2 ] && echo yes || echo no)

  if [ "$load" = h2 ]; then
    # "requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout" and
    # "status codes: A 2xx, B 3xx, C 4xx, D 5xx". h2load's --log-file has one line per stream
    # ("start-time-us<TAB>status<TAB>duration-us", status -1 when the stream ended without a
    # response). The start time is set when the request's HEADERS frame is written, so a failed
    # stream with start 0 was never sent: the client's nghttp2 refused it itself (REFUSED_STREAM,
    # "the application can send the request again") because a GOAWAY arrived while the request
    # was still queued. "sent" are the failed streams that were written.
    local sent_lost unsent
    read -r sent_lost unsent < <(awk -F'\t' '$2 == -1 { if ($1 + 0 > 0) s++; else u++ } END { print s + 0, u + 0 }' "$WORK/h2load.log" 2>/dev/null || echo "0 0")
    echo "$out" | awk -v run="$run" -v kind="$kind" -v pid="$changed" -v ok="$applied" -v lost="$sent_lost" -v unsent="$unsent" '
      /^finished in/ { rps = $4 }
      /^requests:/ { done = $6; failed = $10; timeout = $14 }
      /^status codes:/ { non2xx = $5 + $7 + $9 }
      END { print run, kind, "h2", done + 0, rps + 0, failed + 0, lost + 0, unsent + 0, timeout + 0, non2xx + 0, pid, ok }
    ' >>"$WORK/h2"
  else
    echo "$out" | awk -F'[ ,]+' -v run="$run" -v kind="$kind" -v load="$load" -v pid="$changed" -v ok="$applied" '
      /requests in/ { requests = $2 }
      /^Requests\/sec/ { rps = $2 }
      /Socket errors/ { connect = $5; read = $7; write = $9; timeout = $11 }
      /Non-2xx/ { non2xx = $NF }
      END { print run, kind, load, requests + 0, rps + 0, connect + 0, read + 0, write + 0, timeout + 0, non2xx + 0, pid, ok }
    ' >>"$WORK/h1"
  fi
  stop_proxy
}

# Prints the rows of $1 (h1 or h2) for run $2, or their medians over all runs when $2 is
# "median": numbers as medians; pid changed/applied as "yes", "no" or K/N (K of N runs said yes).
table() {
  local file=$WORK/$1 which=$2
  [ -s "$file" ] || return 0
  if [ "$1" = h1 ]; then
    printf '%-8s %-27s %-5s %9s %9s %8s %6s %6s %8s %8s %12s %8s\n' \
      proxy reload load requests req/s connect read write timeout non-2xx "pid changed" applied
  else
    printf '%-8s %-27s %-5s %9s %9s %7s %7s %7s %7s %7s %12s %8s\n' \
      proxy reload load requests req/s failed sent unsent timeout non-2xx "pid changed" applied
  fi
  awk -v which="$which" -v runs="$RUNS" "$AWK_MEDIAN"'
    function yes(list,   a, n, i, y) {
      n = split(list, a, " "); y = 0
      for (i = 1; i <= n; i++) if (a[i] == "yes") y++
      return y == n ? "yes" : y == 0 ? "no" : y "/" n
    }
    which != "median" && $1 != which { next }
    {
      key = $2 " " $3
      if (!(key in seen)) { seen[key] = 1; order[++keys] = key }
      for (f = 4; f <= NF; f++) col[key, f] = col[key, f] " " $f
      nf = NF
    }
    END {
      for (k = 1; k <= keys; k++) {
        key = order[k]; line = key
        for (f = 4; f <= nf - 2; f++) {
          v = median(col[key, f])
          line = line " " (f <= 5 ? sprintf("%.0f", v) : v)
        }
        print line, yes(col[key, nf - 1]), yes(col[key, nf])
      }
    }
  ' "$file" | while read -r kind load rest; do
    # shellcheck disable=SC2086
    set -- $rest
    if [ $# = 9 ]; then
      printf '%-8s %-27s %-5s %9s %9s %8s %6s %6s %8s %8s %12s %8s\n' \
        "$(proxy_of "$kind")" "$(label_of "$kind")" "$load" "$@"
    else
      printf '%-8s %-27s %-5s %9s %9s %7s %7s %7s %7s %7s %12s %8s\n' \
        "$(proxy_of "$kind")" "$(label_of "$kind")" "$load" "$@"
    fi
  done
}

KINDS=(nginx-s-reload haproxy-usr2)
if "$PINION" reload --help >/dev/null 2>&1 && "$PINION" upgrade --help >/dev/null 2>&1; then
  KINDS+=(pinion-reload pinion-hup pinion-upgrade)
else
  echo "this pinion has no \`reload\`/\`upgrade\` command: its rows are left out" >&2
fi
# ONLY="pinion-upgrade nginx-s-reload" and LOADS="h2" narrow a run to some reload kinds and loads.
[ -n "${ONLY:-}" ] && read -r -a KINDS <<<"$ONLY"
read -r -a LOAD_KINDS <<<"${LOADS:-get post h2}"

: >"$WORK/h1"
: >"$WORK/h2"
echo "reload at ${AT} s of ${DURATION} s; wrk -t1 -c20 (HTTP/1.1 keep-alive), h2load -c20 -m10 (HTTP/2); $RUNS run(s); log: $WORK/log"
for run in $(seq "$RUNS"); do
  for kind in "${KINDS[@]}"; do
    for load in "${LOAD_KINDS[@]}"; do
      measure "$run" "$kind" "$load"
    done
  done
  echo
  echo "run $run, HTTP/1.1 (wrk; socket errors as wrk counts them, non-2xx = not 2xx/3xx):"
  table h1 "$run"
  echo
  echo "run $run, HTTP/2 (h2load; failed = streams without a 2xx/3xx answer; of them, sent = written to"
  echo "the proxy, unsent = refused by the client's own nghttp2 at a GOAWAY before it wrote them;"
  echo "h2load neither resends nor reconnects after a GOAWAY):"
  table h2 "$run"
done

if [ "$RUNS" -gt 1 ]; then
  echo
  echo "medians over $RUNS runs, HTTP/1.1:"
  table h1 median
  echo
  echo "medians over $RUNS runs, HTTP/2 (h2load):"
  table h2 median
fi
