# Shared by benches/load.sh and benches/instructions.sh (sourced, not run): the certificates, the
# TLS backend and the configurations of pinion, the Pingora floor, nginx and HAProxy doing the
# same job. Everything listens on 127.0.0.1 only.
#
# The job, identical for all: TLS 1.3 from the client with an ECDSA P-256 certificate; a new TLS
# connection to the backend, verified against the backend's self-signed certificate (a pin for
# pinion, that certificate as the trusted CA and name for the others); upstream keep-alive;
# X-Forwarded-For added; one worker thread or process each. pinion also keeps what it always
# does on (its pin check, forwarding headers, X-Request-Id, metrics, timeouts) and writes its
# JSON access log to a file; nginx and HAProxy log nothing.

WRAP=()
# awk: median(list), the median of a space-separated list of numbers (load.sh, reload.sh).
AWK_MEDIAN='function median(list,   a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}'
PIDS=()   # proxies started in the background by the script; stopped when it exits
BACKEND=19443 PINION_PORT=18443 NGINX_PORT=18444 HAPROXY_PORT=18445 FLOOR_PORT=18446 ADMIN=19901
# pinion_h2: pinion doing the same job over HTTP/2 to the same nginx (its HTTP/2 listener).
BACKEND_H2=19444 PINION_H2_PORT=18447 ADMIN_H2=19902

# Writes certificates and configurations into $WORK.
write_setup() {
  local gen
  gen() { # name cn
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=$2" -addext "subjectAltName=DNS:$2" -keyout "$WORK/$1.key" -out "$WORK/$1.pem" 2>/dev/null
  }
  gen front localhost
  gen backend backend.local
  cat "$WORK/front.pem" "$WORK/front.key" > "$WORK/front-combined.pem"

  cat > "$WORK/nginx-backend.conf" <<CONF
worker_processes 1;
pid $WORK/nginx-backend.pid;
error_log $WORK/nginx-backend.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$BACKEND ssl;
    listen 127.0.0.1:$BACKEND_H2 ssl http2;
    ssl_certificate $WORK/backend.pem;
    ssl_certificate_key $WORK/backend.key;
    location / { return 200 "ok\n"; }
  }
}
CONF

  cat > "$WORK/pinion.yaml" <<CONF
server:
  threads: ${WORKERS:-1}
  pid_file: $WORK/pinion.pid
  upgrade_sock: $WORK/pinion.sock
admin:
  bind: 127.0.0.1:$ADMIN
access_log:
  path: $WORK/pinion-access.log
  format: json
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
CONF

  # The same pinion, its pool speaking HTTP/2 (tls.http2: true) to nginx's HTTP/2 port.
  sed -e "s|$WORK/pinion.pid|$WORK/pinion-h2.pid|" -e "s|$WORK/pinion.sock|$WORK/pinion-h2.sock|" \
      -e "s|127.0.0.1:$ADMIN|127.0.0.1:$ADMIN_H2|" -e "s|pinion-access.log|pinion-h2-access.log|" \
      -e "s|127.0.0.1:$PINION_PORT|127.0.0.1:$PINION_H2_PORT|" \
      -e "s|servers: \[127.0.0.1:$BACKEND\]|servers: [127.0.0.1:$BACKEND_H2]|" \
      -e "s|      sni: backend.local|      http2: true\n      sni: backend.local|" \
      "$WORK/pinion.yaml" > "$WORK/pinion-h2.yaml"

  cat > "$WORK/nginx-proxy.conf" <<CONF
worker_processes ${WORKERS:-1};
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err;
events { worker_connections 25000; }
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
CONF

  cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread ${WORKERS:-1}
  maxconn ${HAPROXY_MAXCONN:-4096}
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
CONF
}

# Checks the tools ($2…; $1 names the Debian packages for the message), builds pinion and the
# floor, writes the setup into $WORK and starts the backend. When the script exits, the
# proxies in PIDS get SIGINT (pinion would drain for its grace period on SIGTERM) and the
# backend stops.
prepare() {
  local packages=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install $packages)"; exit 1; }
  done
  # pinion as operators get it (`make release`: profile-guided, scripts/release.sh; PGO=0 in
  # the environment measures a plain build); the floor is a plain release build.
  (cd "$ROOT" && cargo build --release --locked -q --example pingora_floor)
  "$ROOT/scripts/release.sh" >"$WORK/release.log" 2>&1 || { tail -20 "$WORK/release.log"; exit 1; }
  PINION="$ROOT/target/release/pinion"
  FLOOR="$ROOT/target/release/examples/pingora_floor"
  trap cleanup EXIT
  write_setup
  start_backend
}

cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  # A proxy left behind would keep its port: HAProxy binds with SO_REUSEPORT, so the next run's
  # HAProxy would share its clients with a stale one whose backend is gone (errors, wrong CPU).
  local p
  for p in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  stop_backend
}

start_backend() {
  nginx -c "$WORK/nginx-backend.conf" -p "$WORK" 2>/dev/null
}

stop_backend() {
  [ -f "$WORK/nginx-backend.pid" ] && kill "$(cat "$WORK/nginx-backend.pid")" 2>/dev/null || true
}

# Becomes proxy $1, one process in the foreground, under the command in the WRAP array when set
# (benches/instructions.sh puts valgrind there). Call it in the background, `run_proxy NAME &`,
# so that $! is the proxy's process id.
run_proxy() {
  export RUST_LOG=warn
  case $1 in
    pinion) exec "${WRAP[@]}" "$PINION" -c "$WORK/pinion.yaml" ;;
    pinion_h2) exec "${WRAP[@]}" "$PINION" -c "$WORK/pinion-h2.yaml" ;;
    floor) exec "${WRAP[@]}" "$FLOOR" $FLOOR_PORT $BACKEND "$WORK/front.pem" "$WORK/front.key" "${WORKERS:-1}" ;;
    nginx)
      # One worker: a single process. More: the master and its workers (the master is idle).
      local master="master_process off;"
      [ "${WORKERS:-1}" -gt 1 ] && master="master_process on;"
      exec "${WRAP[@]}" nginx -c "$WORK/nginx-proxy.conf" -p "$WORK" -g "daemon off; $master" ;;
    haproxy) exec "${WRAP[@]}" haproxy -f "$WORK/haproxy.cfg" -db ;;
  esac
}

port_of() {
  case $1 in pinion) echo $PINION_PORT ;; pinion_h2) echo $PINION_H2_PORT ;; floor) echo $FLOOR_PORT ;; nginx) echo $NGINX_PORT ;; haproxy) echo $HAPROXY_PORT ;; esac
}

# Waits until the proxy on port $1 answers through the backend (deadline: $2 tenths of a second).
wait_answers() {
  for _ in $(seq "${2:-100}"); do curl -skf "https://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done
  curl -skf "https://127.0.0.1:$1/" >/dev/null
}

# Reloadable variants, for benches/reload.sh: the configurations above (same ports, job and
# files), plus HTTP/2 offered by ALPN (h2, http/1.1) and one response header the proxy adds,
# X-Gen: $2, so that a reload from generation 1 to 2 really changes what clients get. pinion
# also gets its own control socket. Call after write_setup; rewrites $WORK/*-reload.*.
write_reload_conf() { # name generation
  local gen=$2 out
  case $1 in
    nginx)
      out="$WORK/nginx-reload.conf"
      sed -e "s|listen 127.0.0.1:$NGINX_PORT ssl;|listen 127.0.0.1:$NGINX_PORT ssl http2;|" \
          -e "s|^    location / {|    add_header X-Gen $gen always;\n    location / {|" \
          "$WORK/nginx-proxy.conf" > "$out" ;;
    haproxy)
      out="$WORK/haproxy-reload.cfg"
      sed -e "s|ssl-min-ver TLSv1.3|ssl-min-ver TLSv1.3 alpn h2,http/1.1|" \
          -e "s|^  option forwardfor|  option forwardfor\n  http-response set-header X-Gen $gen|" \
          "$WORK/haproxy.cfg" > "$out" ;;
    pinion)
      out="$WORK/pinion-reload.yaml"
      sed -e "s|^  upgrade_sock: .*|&\n  control_sock: $WORK/pinion-control.sock|" \
          -e "s|http2: false|http2: true|" \
          -e "s|^    pool: backend|&\n    response_headers: {set: {X-Gen: \"$gen\"}}|" \
          "$WORK/pinion.yaml" > "$out" ;;
  esac
  # Every edit must have applied (a changed base configuration must not silently measure
  # something else): count the lines the edits produce.
  local edited want=2
  case $1 in
    nginx) edited=$(grep -c -e "X-Gen $gen always" -e "ssl http2;" "$out") ;;
    haproxy) edited=$(grep -c -e "X-Gen $gen\$" -e "alpn h2,http/1.1" "$out") ;;
    pinion) edited=$(grep -c -e "X-Gen: \"$gen\"" -e "http2: true" -e control_sock "$out"); want=3 ;;
  esac
  [ "$edited" = $want ] || { echo "write_reload_conf: could not derive $out from the base configuration"; exit 1; }
}

# Becomes reloadable proxy $1 in the foreground (call it as `run_reloadable NAME &`): nginx
# with its master process (`nginx -s reload`), HAProxy in master-worker mode (-W; SIGUSR2 to
# the master reloads), pinion (SIGHUP, `pinion reload`, `pinion upgrade`). $! is the process
# a reload is sent to.
run_reloadable() {
  export RUST_LOG=warn
  case $1 in
    pinion) exec "$PINION" -c "$WORK/pinion-reload.yaml" ;;
    nginx) exec nginx -c "$WORK/nginx-reload.conf" -p "$WORK" -g "daemon off;" ;;
    haproxy) exec haproxy -W -f "$WORK/haproxy-reload.cfg" -db ;;
  esac
}
