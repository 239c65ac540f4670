#!/usr/bin/env bash
# CPU per keep-alive request of two pinion builds side by side, with nginx and HAProxy, for a
# before/after that this machine's noise does not swamp: each proxy pinned to CPU 1, wrk and the
# backend to CPU 0, the proxies measured in turn, RUNS rounds, medians. Same job and
# configurations as benches/load.sh (benches/proxies.sh); everything on 127.0.0.1.
#
#   benches/compare.sh BEFORE_BINARY [SECONDS] [RUNS]     (defaults: 5 s, 10 rounds)
#
# BEFORE_BINARY is a pinion built from another commit, for example:
#   git worktree add /tmp/before <commit> && (cd /tmp/before && scripts/release.sh)
#   benches/compare.sh /tmp/before/target/release/pinion
# "after" is this tree's release build. Needs: cargo, wrk, nginx, haproxy, openssl, curl, taskset.
set -euo pipefail

BEFORE=${1:?usage: benches/compare.sh BEFORE_BINARY [SECONDS] [RUNS]}
SECONDS_PER_RUN=${2:-5}
RUNS=${3:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-compare.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "wrk nginx haproxy openssl curl util-linux" wrk nginx haproxy openssl curl taskset
[ -x "$BEFORE" ] || { echo "not an executable: $BEFORE"; exit 1; }
# The backend was started on any CPU by prepare; restart it on CPU 0.
stop_backend
for _ in $(seq 50); do [ -f "$WORK/nginx-backend.pid" ] || break; sleep 0.1; done
taskset -c 0 nginx -c "$WORK/nginx-backend.conf" -p "$WORK" 2>/dev/null

# "before" listens beside "after", with its own port, admin, pid file, socket and log.
BEFORE_PORT=18450
sed -e "s|$WORK/pinion.pid|$WORK/before.pid|" -e "s|$WORK/pinion.sock|$WORK/before.sock|" \
    -e "s|127.0.0.1:$ADMIN|127.0.0.1:19905|" -e "s|pinion-access.log|before-access.log|" \
    -e "s|127.0.0.1:$PINION_PORT|127.0.0.1:$BEFORE_PORT|" "$WORK/pinion.yaml" > "$WORK/before.yaml"
NAMES="after before nginx haproxy"
port() { case $1 in after) port_of pinion ;; before) echo $BEFORE_PORT ;; *) port_of "$1" ;; esac; }
declare -A PID
WRAP=(taskset -c 1)
for name in $NAMES; do
  case $name in
    after) run_proxy pinion 2>"$WORK/after.err" & ;;
    before) RUST_LOG=warn taskset -c 1 "$BEFORE" -c "$WORK/before.yaml" 2>"$WORK/before.err" & ;;
    *) run_proxy "$name" 2>"$WORK/$name.err" & ;;
  esac
  PID[$name]=$!
  PIDS+=($!)
done
for name in $NAMES; do
  wait_answers "$(port $name)" || { echo "$name does not answer: $(cat "$WORK/$name.err")"; exit 1; }
done

HZ=$(getconf CLK_TCK)
: >"$WORK/rows"
echo "$RUNS rounds of ${SECONDS_PER_RUN} s, wrk -t1 -c50 on CPU 0, each proxy on CPU 1"
printf '%-7s %6s %9s %8s %8s %9s %7s\n' proxy round cpu/10k user system req/s errors
for round in $(seq "$RUNS"); do
  for name in $NAMES; do
    p=${PID[$name]}
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$p/stat")
    out=$(taskset -c 0 wrk -t1 -c50 -d"${SECONDS_PER_RUN}s" "https://127.0.0.1:$(port $name)/")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$p/stat")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}'); non2xx=${non2xx:-0}
    sockerr=$(echo "$out" | awk -F'[ ,]+' '/Socket errors/{print $5+$7+$9+$11}'); sockerr=${sockerr:-0}
    row=$(awk -v hz="$HZ" -v n="$reqs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v d="$SECONDS_PER_RUN" \
      'BEGIN{printf "%.3f %.3f %.3f %.0f", (u+s)/hz/n*1e4, u/hz/n*1e4, s/hz/n*1e4, n/d}')
    echo "$name $round $row $((non2xx + sockerr))" | tee -a "$WORK/rows" | awk '{printf "%-7s %6s %9s %8s %8s %9s %7s\n", $1, $2, $3, $4, $5, $6, $7}'
  done
done

echo
echo "medians of $RUNS rounds (CPU seconds per 10k requests; errors: all rounds):"
printf '%-7s %9s %8s %8s %9s %7s\n' proxy cpu/10k user system req/s errors
declare -A CPU
for name in $NAMES; do
  line=$(awk -v n="$name" "$AWK_MEDIAN"'
    $1 == n { for (f = 3; f <= 6; f++) col[f] = col[f] " " $f; errors += $7 }
    END { printf "%.3f %.3f %.3f %.0f %d", median(col[3]), median(col[4]), median(col[5]), median(col[6]), errors }' "$WORK/rows")
  read -r cpu user sys rps errors <<<"$line"
  CPU[$name]=$cpu
  printf '%-7s %9s %8s %8s %9s %7s\n' "$name" "$cpu" "$user" "$sys" "$rps" "$errors"
done
awk -v a="${CPU[after]}" -v b="${CPU[before]}" -v n="${CPU[nginx]}" -v h="${CPU[haproxy]}" 'BEGIN{
  best = (n < h ? n : h)
  printf "after/before %.3f; against the better of nginx and HAProxy: after %.2f, before %.2f\n", a/b, a/best, b/best }'
