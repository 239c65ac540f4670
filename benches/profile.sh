#!/usr/bin/env bash
# Where the CPU goes: a perf profile of pinion (or the Pingora floor) under keep-alive load from
# wrk, printed as the top functions and drawn as a flame graph (SVG). The setup is the load
# benchmark's (benches/proxies.sh); everything listens on 127.0.0.1.
#
#   benches/profile.sh [pinion|floor] [SECONDS]     (defaults: pinion, 10 s)
#
# Needs: perf (Debian: linux-perf), wrk, nginx, openssl, curl; for the SVG, inferno
# (`cargo install inferno`). Uses the cpu-clock event, so it also works where hardware counters
# are not available (virtual machines).
set -euo pipefail
NAME=${1:-pinion}
DURATION=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-profile.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "linux-perf wrk nginx openssl curl" perf wrk nginx openssl curl
run_proxy "$NAME" 2>"$WORK/$NAME.err" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_answers "$(port_of "$NAME")"

wrk -t1 -c50 -d$((DURATION + 2))s "https://127.0.0.1:$(port_of "$NAME")/" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
sleep 1
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$PROXY_PID" -o "$WORK/perf.data" \
  -- sleep "$DURATION" 2>"$WORK/perf.err"
wait "$WRK_PID"
grep -E "Requests/sec" "$WORK/wrk.out"
echo "by binary (% of samples; the statically linked OpenSSL counts as the proxy's own):"
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -6 || true
echo "top functions (self time, % of samples):"
perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9]' | head -30 || true
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$WORK/$NAME.svg"
  echo "flame graph: $WORK/$NAME.svg"
else
  echo "no flame graph: cargo install inferno (perf data: $WORK/perf.data)"
fi
