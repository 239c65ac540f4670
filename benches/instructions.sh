#!/usr/bin/env bash
# Instructions per request of pinion, the Pingora floor, nginx and HAProxy doing the same job
# (benches/proxies.sh), counted by valgrind's callgrind. A count, not a time: it does not move
# with what else the machine is doing, so small differences between runs and between proxies
# are real. It leaves out the kernel (syscalls, TCP on loopback), which wrk's CPU seconds in
# benches/load.sh include.
#
#   benches/instructions.sh [REQUESTS]     (default 2000; new-connection runs use REQUESTS/10)
#   PROXIES="pinion floor" MODES=keepalive benches/instructions.sh     (a subset)
#
# Each proxy runs twice per mode under callgrind, with REQUESTS and 2×REQUESTS requests; the
# difference divided by REQUESTS is the cost of one request, without start-up and shutdown.
# Keep-alive: h2load over HTTP/1.1, 10 connections. New connection: rounds of 10 clients with one
# request each. Then the keep-alive cost of pinion and of the floor is split by where the
# instructions are spent (OpenSSL, Pingora, tokio, the allocator and libc, pinion, other Rust)
# and the functions where pinion spends more than the floor are listed.
# Needs: cargo, valgrind, h2load (nghttp2-client), nginx, haproxy, openssl, curl, python3.
set -euo pipefail

N=${1:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pinion-instr.XXXXXX)
. "$ROOT/benches/proxies.sh"
prepare "valgrind nghttp2-client nginx haproxy openssl curl python3" \
  valgrind callgrind_annotate h2load nginx haproxy openssl curl python3

# Runs proxy $1 under callgrind, sends it $3 requests in mode $2, stops it; prints the file.
count() {
  local name=$1 mode=$2 n=$3 port out pid
  port=$(port_of "$name")
  out="$WORK/callgrind.$name.$mode.$n"
  WRAP=(valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no --compress-strings=no)
  run_proxy "$name" 2>"$WORK/$name.$mode.$n.err" &
  pid=$!
  # count runs in a command substitution, a subshell: the script's own cleanup cannot see this
  # proxy, so the subshell stops it when it ends, finished or failed.
  trap "kill -INT $pid 2>/dev/null || true" EXIT
  wait_answers "$port" 600 || { echo "$name does not answer under valgrind" >&2; exit 1; }
  if [ "$mode" = keepalive ]; then
    h2load --h1 -n "$n" -c 10 "https://127.0.0.1:$port/" >"$WORK/h2load.out" 2>&1
  else
    for _ in $(seq $((n / 10))); do h2load --h1 -n 10 -c 10 "https://127.0.0.1:$port/" >"$WORK/h2load.out" 2>&1; done
  fi
  grep -q "10 succeeded\|$n succeeded" "$WORK/h2load.out" || { echo "$name: failed requests: $(grep requests: "$WORK/h2load.out")" >&2; exit 1; }
  if [ "$name" = pinion ]; then
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/pinion_backend_connections_total/{k=$1; sub(/.*kind="/,"",k); sub(/".*/,"",k); s[k]+=$2} END{printf "backend connections opened %d, reused %d\n", s["opened"], s["reused"]}' >&2
  fi
  kill -INT "$pid"
  [ "$name" = haproxy ] && kill -USR1 "$pid" 2>/dev/null || true
  wait "$pid" || true
  echo "$out"
}

total() { awk '/^(summary|totals):/{print $2; exit}' "$1"; }

declare -A PER
printf '%-8s %-10s %18s\n' proxy mode instructions/request
MODES=${MODES:-keepalive newconn}
PROXIES=${PROXIES:-pinion floor nginx haproxy}
for mode in $MODES; do
  n=$N; [ "$mode" = newconn ] && n=$((N / 10))
  for name in $PROXIES; do
    one=$(count "$name" "$mode" "$n")
    two=$(count "$name" "$mode" $((2 * n)))
    PER[$name-$mode]=$(( ($(total "$two") - $(total "$one")) / n ))
    printf '%-8s %-10s %18s\n' "$name" "$mode" "${PER[$name-$mode]}"
    [ "$mode" = keepalive ] && { cp "$one" "$WORK/$name.one"; cp "$two" "$WORK/$name.two"; }
  done
done
echo
[ "$PROXIES" = "pinion floor nginx haproxy" ] && for mode in $MODES; do
  awk -v m=$mode -v p="${PER[pinion-$mode]}" -v n="${PER[nginx-$mode]}" -v h="${PER[haproxy-$mode]}" -v f="${PER[floor-$mode]}" \
    'BEGIN{printf "  %-10s pinion/nginx %.2f, pinion/haproxy %.2f, pinion/floor %.2f, floor/nginx %.2f\n", m, p/n, p/h, p/f, f/n}'
done

# Where one keep-alive request's instructions go, pinion and the floor (when both were counted).
[ -f "$WORK/pinion.one" ] && [ -f "$WORK/floor.one" ] || exit 0
for name in pinion floor; do
  callgrind_annotate --threshold=100 --inclusive=no "$WORK/$name.one" >"$WORK/$name.one.txt"
  callgrind_annotate --threshold=100 --inclusive=no "$WORK/$name.two" >"$WORK/$name.two.txt"
done
python3 - "$WORK" "$N" <<'PY'
import re, sys
work, n = sys.argv[1], int(sys.argv[2])

def functions(path):
    out = {}
    for line in open(path, errors="replace"):
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
        if not m or ":" not in m.group(2):
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(2).split(":", 1)[1].split(" [")[0].strip()
        out[fn] = out.get(fn, 0) + ir
    return out

OPENSSL = re.compile(r"^(ossl_|OSSL_|EVP_|evp_|SSL_|ssl|tls|BIO_|bio_|ERR_|err_|CRYPTO_|OPENSSL_|openssl_|BN_|bn_|EC_|ec_|ecp_|ECDSA|aes|AES|gcm|GCM|sha|SHA|x25519|X25519|X509|x509|ASN1|asn1|OBJ_|RAND_|rand_|HMAC|hmac|chacha|ChaCha|poly1305|Poly1305|lh_|OPENSSL_sk|sk_|PACKET|WPACKET|kdf_|KDF|drbg|ctr_|CTR_|md_|EVP|OPENSSL|PROV|prov|provider|cipher_|ossl|ssl3|dtls|ecx|ECX|mac_|kmac|hkdf|tls13|final_|init_|do_|ctrl_)")
def category(fn):
    if re.search(r"(^|[^a-z_])(malloc|free|realloc|calloc|_int_malloc|_int_free|memcpy|memmove|memset|memcmp|strlen|__libc|_dl_|pthread|cfree|__memcpy|__memset|__memmove|__memcmp|__strlen|sysmalloc|malloc_consolidate|unlink_chunk|tcache)", fn):
        return "allocator and libc"
    if fn.startswith("pinion::") or "<pinion::" in fn or fn.startswith("<pinion"):
        return "pinion"
    if "pingora" in fn:
        return "Pingora"
    if "tokio" in fn or "mio::" in fn:
        return "tokio"
    if OPENSSL.match(fn) or "openssl" in fn:
        return "OpenSSL"
    return "other Rust (std, http, bytes, …) and the rest"

cats = {}
per_fn = {}
for name in ("pinion", "floor"):
    one = functions(f"{work}/{name}.one.txt")
    two = functions(f"{work}/{name}.two.txt")
    fns = {f: (two.get(f, 0) - one.get(f, 0)) / n for f in set(one) | set(two)}
    per_fn[name] = fns
    c = {}
    for f, v in fns.items():
        c[category(f)] = c.get(category(f), 0) + v
    cats[name] = c
print("\nkeep-alive, instructions per request by where they are spent (from functions over 0.01 %):")
print(f"  {'':44} {'pinion':>10} {'floor':>10}")
for k in sorted(set(cats["pinion"]) | set(cats["floor"]), key=lambda k: -cats["pinion"].get(k, 0)):
    print(f"  {k:44} {cats['pinion'].get(k, 0):>10.0f} {cats['floor'].get(k, 0):>10.0f}")
print("\nfunctions where pinion spends the most over the floor (instructions per keep-alive request):")
diff = {f: per_fn["pinion"].get(f, 0) - per_fn["floor"].get(f, 0) for f in set(per_fn["pinion"]) | set(per_fn["floor"])}
for f, v in sorted(diff.items(), key=lambda kv: -kv[1])[:25]:
    print(f"  {v:>8.0f}  {f[:120]}")
PY
