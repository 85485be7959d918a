#!/usr/bin/env bash
# Passerelle throughput benchmark (not a test: it measures, it does not judge the build).
#
#   bash bench/run.sh                      # 10 s per measurement
#   BENCH_DURATION=30s bash bench/run.sh   # longer runs
#
# What it does, in one run of the release binary:
#   1. writes a throw-away config on free loopback ports: the built-in echo upstream, the built-in development
#      provider, a public route (/public) and a protected route (/) in front of the echo;
#   2. starts `passerelle run`, waits for the admin /ready by polling, signs in as `angela` through the
#      development provider by script (curl), and checks that the session cookie really opens the protected
#      route (200 from the echo, which received X-Auth-Sub) — it stops loudly otherwise;
#   3. measures with `wrk --latency`:
#        (a) direct      the echo upstream itself, no Passerelle (baseline)
#        (b) public      a public route through Passerelle
#        (c) auth        a protected route through Passerelle with the valid session cookie
#        (d) api-401     the protected route without a cookie, as an API client (Accept: application/json -> 401)
#        (m) apache      Apache + mod_auth_openidc (bench/apache-oidc.conf) signed in at the same development
#                        provider, client-cookie session, the same nginx upstream (skipped with BENCH_APACHE=0)
#        (e) auth-redis  the protected route on a second Passerelle (R1) with session.store = "redis" on a local
#                        redis-server, with its ticket cookie (skipped with BENCH_REDIS=0)
#      and with `h2load` (nghttp2-client) over HTTP/2 + TLS (skipped with BENCH_H2=0), both on one throw-away
#      certificate for 127.0.0.1 (a CA made with openssl in the temp dir), in front of the same nginx upstream:
#        (hn) nginx-h2   nginx terminating TLS and HTTP/2 as a bare reverse proxy (bench/nginx-h2.conf)
#        (h) auth-h2     the protected route on another Passerelle (H2) with `server.tls` (ALPN h2), signed in
#                        over https at the same development provider, with its `__Host-` session cookie; every
#                        answer must be a 2xx (h2load's "status codes"), or the run stops
#      in BENCH_ROUNDS interleaved rounds (a, b, c, d, e, hn, h, a, b, ...), so that load from other processes
#      on a shared machine hits all cases alike;
#   3b. memory per idle connection: BENCH_IDLE (default 10000) keep-alive connections held open on nginx, the
#      bare pingora and Passerelle (public, then authenticated), one request answered on each, resident memory
#      before, with them open, and after they close (bench/idle_connections.py);
#   3c. logins: BENCH_LOGINS (default 1000) sign-ins over keep-alive connections (bench/login_loop.py),
#      Passerelle's CPU per login; then one request per new session: memory per cached session;
#   3d. with Redis: times BENCH_REVOCATIONS (default 100) logouts on R1 until a third Passerelle (R2, same
#      Redis, the session cached) refuses the cookie: p50 / p99 / max;
#   4. prints a table (median requests/s, p50, p99, and the CPU time each proxy's threads spent per request)
#      with the ratios to nginx, to the bare pingora and to mod_auth_openidc (median of the per-round ratios),
#      and writes it to bench/output/results.md with the raw wrk output beside it.
#
# The measured URLs carry `?fixed`: the built-in echo then answers a constant two-byte body whatever headers it
# received, so that (b) and (c) differ only by what Passerelle does (the checks before and after the runs use
# the echo's full answer to prove the identity headers arrive).
#
# Target: auth >= 0.9 x public (decoding and checking the encrypted session cookie and injecting the identity
# headers should cost less than 10 % of a proxied request); auth-redis >= 0.9 x auth (the Redis store costs no
# round trip per request in the steady state); revocation seen by the other replica in < 1 s at p99.
#
# Environment (all optional):
#   BENCH_DURATION     wrk duration per measurement            (default 10s)
#   BENCH_ROUNDS       interleaved rounds of the four cases     (default 3; the table gives medians)
#   BENCH_CONNECTIONS  wrk connections                          (default 32)
#   BENCH_WRK_THREADS  wrk threads                              (default 1)
#   BENCH_THREADS      Passerelle's [server] threads            (default 1, see below)
#   BENCH_INSTRUCTIONS 1: count instructions per request under callgrind instead of the timed runs
#   BENCH_APACHE       1: also Apache + mod_auth_openidc (installs apache2 and the module when missing); 0: skip
#   BENCH_REDIS        1: also the Redis-store cases (installs redis-server when missing); 0: skip them
#   BENCH_H2           1: also the HTTP/2 + TLS cases (installs nghttp2-client for h2load when missing); 0: skip them
#   BENCH_H2_CLIENTS   h2load clients (connections)            (default 8)
#   BENCH_H2_STREAMS   h2load concurrent streams per client    (default 4: 8 x 4 = as many requests in flight as wrk's 32)
#   BENCH_REVOCATIONS  revocations timed                        (default 100)
#   BENCH_LOGINS       logins timed (CPU per login), then one request each (memory per cached session) (default 1000; 0 skips)
#   BENCH_IDLE         idle keep-alive connections held open per proxy for the memory figures (default 10000; 0 skips)
#   PASSERELLE_BIN     binary to measure                        (default target/release/passerelle)
#
# Before/after: bench/compare.sh OLD_BINARY NEW_BINARY runs this script on both, alternated, and puts the
# medians side by side (bench/output/compare.md).
#
# Server threads: this script sets `[server] threads = 1` by default rather than leaving Passerelle's default
# (one per core). The reference machine has 2 cores and wrk and the echo upstream (always 1 thread) run on the
# same machine; one proxy thread keeps the three from fighting over the cores and makes the figures
# comparable between runs. Set BENCH_THREADS to measure another setting; the value used is printed.
#
# Everything listens on 127.0.0.1 only; the server is stopped on exit, whatever happens.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_DIR="$ROOT/bench/output"
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
SERVER_THREADS=${BENCH_THREADS:-1}
ROUNDS=${BENCH_ROUNDS:-3}
BIN_SRC=${PASSERELLE_BIN:-$ROOT/target/release/passerelle}

die() { echo "bench: ERROR: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

# --- tools -------------------------------------------------------------------------------------------------
# need EXECUTABLE PACKAGE WHY: installs PACKAGE from apt when EXECUTABLE is missing (apt-get update only if the
# first try fails), or stops with WHY.
need() {
  local exe=$1 pkg=$2 why=$3 sudo=""
  [ -e "$exe" ] && return 0
  say "installing $pkg ($why)"
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; } \
    || die "$pkg could not be installed"
  [ -e "$exe" ] || die "$pkg is installed but $exe is missing"
}
need /usr/bin/wrk wrk "the load generator"
need /usr/sbin/nginx nginx-light "the upstream and the bare reverse proxy every target is compared with"
# BENCH_INSTRUCTIONS=1: instead of the timed runs, count the user-space instructions per request of the bare
# pingora and of Passerelle (public, authenticated) under valgrind's callgrind, which gives the same count
# whatever else the machine does: the figure to judge a change to the request path by.
INSTRUCTIONS=${BENCH_INSTRUCTIONS:-0}
UNDER=()
if [ "$INSTRUCTIONS" = 1 ]; then
  need /usr/bin/valgrind valgrind "callgrind, for BENCH_INSTRUCTIONS=1"
  UNDER=(valgrind --tool=callgrind --instr-atstart=no)
  BENCH_APACHE=0; BENCH_REDIS=0; BENCH_H2=0
fi
WITH_APACHE=${BENCH_APACHE:-1}
if [ "$WITH_APACHE" = 1 ]; then
  need /usr/sbin/apache2 apache2 "Apache httpd, the peer with mod_auth_openidc; BENCH_APACHE=0 skips it"
  need /usr/lib/apache2/modules/mod_auth_openidc.so libapache2-mod-auth-openidc "mod_auth_openidc; BENCH_APACHE=0 skips it"
fi
WITH_REDIS=${BENCH_REDIS:-1}
[ "$WITH_REDIS" = 1 ] && need /usr/bin/redis-server redis-server "the Redis-store cases; BENCH_REDIS=0 skips them"
WITH_H2=${BENCH_H2:-1}
H2_CLIENTS=${BENCH_H2_CLIENTS:-8}
H2_STREAMS=${BENCH_H2_STREAMS:-4}
if [ "$WITH_H2" = 1 ]; then
  need /usr/bin/h2load nghttp2-client "h2load, the HTTP/2 load generator; BENCH_H2=0 skips the h2 cases"
  command -v openssl >/dev/null || die "openssl is needed for the h2 cases' throw-away certificate (BENCH_H2=0 skips them)"
fi
command -v curl >/dev/null || die "curl is needed"
command -v ss >/dev/null || die "ss (iproute2) is needed to find free ports"

# --- workspace and cleanup ------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/passerelle-bench.XXXXXX")
SERVER_PID=""
EXTRA_PIDS=()   # the Redis-store replicas and redis-server
cleanup() {
  local rc=$? pid
  for pid in "${EXTRA_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${EXTRA_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # SIGINT is pingora's fast shutdown; SIGKILL only if it is still there after 15 s.
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "---- last lines of the server log ----" >&2
    tail -n 20 "$WORK/server.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The binary may be rebuilt while we run: wait for it (bounded), then measure a private copy.
for _ in $(seq 300); do [ -x "$BIN_SRC" ] && break; sleep 1; done
[ -x "$BIN_SRC" ] || die "no binary at $BIN_SRC (cargo build --release first)"
cp "$BIN_SRC" "$WORK/passerelle"
BIN="$WORK/passerelle"

# --- free ports -----------------------------------------------------------------------------------------------
used_ports() { ss -Htan | awk '{n=split($4,a,":"); print a[n]}' | sort -u; }
USED=$(used_ports)
PICKED=""
pick_port() {
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! grep -qx "$p" <<<"$USED" && ! grep -qw "$p" <<<"$PICKED"; then
      PICKED="$PICKED $p"; echo "$p"; return 0
    fi
  done
  die "no free port found"
}
PROXY_PORT=$(pick_port); PICKED="$PICKED $PROXY_PORT"
DEV_PORT=$(pick_port);   PICKED="$PICKED $DEV_PORT"
ECHO_PORT=$(pick_port);  PICKED="$PICKED $ECHO_PORT"
ADMIN_PORT=$(pick_port); PICKED="$PICKED $ADMIN_PORT"
REDIS_PORT=$(pick_port); PICKED="$PICKED $REDIS_PORT"
UP_PORT=$(pick_port); PICKED="$PICKED $UP_PORT"
NGINX_PORT=$(pick_port); PICKED="$PICKED $NGINX_PORT"
BARE_PORT=$(pick_port); PICKED="$PICKED $BARE_PORT"
APACHE_PORT=$(pick_port); PICKED="$PICKED $APACHE_PORT"
R1_PORT=$(pick_port); PICKED="$PICKED $R1_PORT"
R1_ADMIN=$(pick_port); PICKED="$PICKED $R1_ADMIN"
R2_PORT=$(pick_port); PICKED="$PICKED $R2_PORT"
R2_ADMIN=$(pick_port); PICKED="$PICKED $R2_ADMIN"
H2_PORT=$(pick_port); PICKED="$PICKED $H2_PORT"
H2_ADMIN=$(pick_port); PICKED="$PICKED $H2_ADMIN"
NGINX_H2_PORT=$(pick_port); PICKED="$PICKED $NGINX_H2_PORT"
PROXY="http://127.0.0.1:$PROXY_PORT"
DEV="http://127.0.0.1:$DEV_PORT"
ECHO="http://127.0.0.1:$ECHO_PORT"
UP="http://127.0.0.1:$UP_PORT"
NGINX="http://127.0.0.1:$NGINX_PORT"
BARE="http://127.0.0.1:$BARE_PORT"
APACHE="http://127.0.0.1:$APACHE_PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
H2_PROXY="https://127.0.0.1:$H2_PORT"
NGINX_H2="https://127.0.0.1:$NGINX_H2_PORT"

# --- config ---------------------------------------------------------------------------------------------------
KEY=$("$BIN" keygen | tr -d '[:space:]')
CONFIG="$WORK/bench.toml"
cat >"$CONFIG" <<EOF
# Written by bench/run.sh; deleted at exit.
[server]
listen = ["127.0.0.1:$PROXY_PORT"]
public_url = "$PROXY"
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = $SERVER_THREADS
log_format = "json"

[session]
keys = ["$KEY"]
idle_timeout = "30m"
max_lifetime = "12h"

[providers.dev]
kind = "dev"
listen = "127.0.0.1:$DEV_PORT"
client_id = "passerelle-bench"
client_secret = "bench-secret"
display_name = "Identités de test"
scopes = ["openid", "email", "given_name", "usual_name", "siret"]

[echo]
listen = "127.0.0.1:$ECHO_PORT"

# Protected: the same shape as config.example.toml. The measured routes proxy to the nginx upstream every
# target shares; /verify and /verify-public, to the echo, prove that identity headers arrive (or do not).
[[route]]
path = "/"
upstream = "$UP"
auth = "required"
providers = ["dev"]
scopes = ["email", "given_name", "usual_name", "siret"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Given-Name" = "given_name"
"X-Auth-Family-Name" = "family_name"
"X-Auth-Siret" = "siret"

# Public: no session needed, identity headers still stripped.
[[route]]
path = "/public"
upstream = "$UP"
auth = "public"

[[route]]
path = "/verify"
upstream = "$ECHO"
auth = "required"
providers = ["dev"]
scopes = ["email", "given_name", "usual_name", "siret"]
[route.headers]
"X-Auth-Sub" = "sub"
"X-Auth-Email" = "email"
"X-Auth-Given-Name" = "given_name"
"X-Auth-Family-Name" = "family_name"
"X-Auth-Siret" = "siret"

[[route]]
path = "/verify-public"
upstream = "$ECHO"
auth = "public"
EOF
"$BIN" check --config "$CONFIG" >&2 || die "the generated config does not pass \`passerelle check\`"

# --- the peers: nginx as the upstream and as a bare reverse proxy, a bare pingora proxy ------------------------
# Every measured target proxies to the same nginx upstream (a short text body). The bare pingora proxy is built
# from this repository's lock file (examples/bare_pingora.rs), with the same thread count as Passerelle.
for conf in upstream proxy; do
  sed -e "s#@WORK@#$WORK#g" -e "s#@UPSTREAM@#127.0.0.1:$UP_PORT#g" -e "s#@WORKERS@#$SERVER_THREADS#g" \
      -e "s#@PORT@#$([ $conf = upstream ] && echo "$UP_PORT" || echo "$NGINX_PORT")#g" \
      "$ROOT/bench/nginx-$conf.conf" >"$WORK/nginx-$conf.conf"
  /usr/sbin/nginx -c "$WORK/nginx-$conf.conf" -e "$WORK/nginx-$conf.error.log" >"$WORK/nginx-$conf.log" 2>&1 &
  EXTRA_PIDS+=($!)
  declare "NGINX_${conf^^}_PID=$!"
done
BARE_BIN=${BARE_PINGORA_BIN:-$ROOT/target/release/examples/bare_pingora}
if [ ! -x "$BARE_BIN" ]; then
  say "building the bare pingora proxy (cargo build --release --locked --example bare_pingora)"
  (cd "$ROOT" && cargo build --release --locked --example bare_pingora >&2) || die "cannot build examples/bare_pingora.rs"
fi
cp "$BARE_BIN" "$WORK/bare_pingora"
${UNDER[@]+"${UNDER[@]}"} ${UNDER[@]+--callgrind-out-file="$WORK/callgrind.bare"} \
  "$WORK/bare_pingora" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" "$SERVER_THREADS" >"$WORK/bare.log" 2>&1 &
EXTRA_PIDS+=($!)
BARE_PID=$!

# HTTP/2 over TLS: a throw-away CA and a certificate for 127.0.0.1 (ECDSA P-256), served by both nginx-h2 and
# Passerelle H2 (started after the login below); curl checks them against the CA, h2load does not check.
if [ "$WITH_H2" = 1 ]; then
  TLS="$WORK/tls"
  mkdir -p "$TLS"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Passerelle bench CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
      -keyout "$TLS/ca.key" -out "$TLS/ca.pem" \
    && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$TLS/server.key" -out "$TLS/server.csr" \
    && printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth" \
      "keyUsage=critical,digitalSignature" >"$TLS/server.ext" \
    && openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
      -extfile "$TLS/server.ext" -out "$TLS/server.pem"
  } >"$TLS/openssl.log" 2>&1 || die "openssl could not make the bench certificate: $(tail -n 5 "$TLS/openssl.log")"
  # `listen ... ssl http2` until nginx 1.25.1, `http2 on;` from then on (the old form is deprecated there).
  NGINX_VERSION=$(/usr/sbin/nginx -v 2>&1 | sed -n 's#^.*nginx/\([0-9.]*\).*$#\1#p')
  if printf '%s\n' 1.25.1 "$NGINX_VERSION" | sort -V -C; then h2_listen=""; h2_on="http2 on;"
  else h2_listen=" http2"; h2_on=""; fi
  sed -e "s#@WORK@#$WORK#g" -e "s#@UPSTREAM@#127.0.0.1:$UP_PORT#g" -e "s#@WORKERS@#$SERVER_THREADS#g" \
      -e "s#@PORT@#$NGINX_H2_PORT#g" -e "s#@LISTEN_HTTP2@#$h2_listen#g" -e "s#@HTTP2_ON@#$h2_on#g" \
      -e "s#@CERT@#$TLS/server.pem#g" -e "s#@KEY@#$TLS/server.key#g" \
      "$ROOT/bench/nginx-h2.conf" >"$WORK/nginx-h2.conf"
  /usr/sbin/nginx -c "$WORK/nginx-h2.conf" -e "$WORK/nginx-h2.error.log" >"$WORK/nginx-h2.log" 2>&1 &
  EXTRA_PIDS+=($!)
  NGINX_H2_PID=$!
fi

# --- start and wait -------------------------------------------------------------------------------------------
say "starting Passerelle (threads = $SERVER_THREADS) on $PROXY, admin $ADMIN, echo $ECHO, dev provider $DEV"
${UNDER[@]+"${UNDER[@]}"} ${UNDER[@]+--callgrind-out-file="$WORK/callgrind.passerelle"} \
  "$BIN" run --config "$CONFIG" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Poll (never a fixed sleep): until $1 answers 2xx, the server dies, or 30 s pass.
wait_for() {
  local url=$1 pid=${2:-$SERVER_PID}
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || die "a server exited during start-up ($url)"
    curl -sf -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  die "$url did not answer within 30 s"
}
wait_for "$ADMIN/ready"
# /ready comes from the admin listener; also make sure the proxy and the echo themselves answer.
wait_for "$PROXY/public"
wait_for "$ECHO/"
wait_for "$UP/" "$NGINX_UPSTREAM_PID"
wait_for "$NGINX/" "$NGINX_PROXY_PID"
wait_for "$BARE/" "$BARE_PID"
[ "$WITH_H2" = 1 ] && CURL_CA_BUNDLE="$TLS/ca.pem" wait_for "$NGINX_H2/" "$NGINX_H2_PID"

# Apache + mod_auth_openidc against the same development provider (bench/apache-oidc.conf), one process.
APACHE_PID=""
if [ "$WITH_APACHE" = 1 ]; then
  mkdir -p "$WORK/apache"
  sed -e "s#@WORK@#$WORK/apache#g" -e "s#@PORT@#$APACHE_PORT#g" -e "s#@UPSTREAM@#127.0.0.1:$UP_PORT#g" \
      -e "s#@ECHO@#127.0.0.1:$ECHO_PORT#g" -e "s#@DEV@#$DEV#g" "$ROOT/bench/apache-oidc.conf" >"$WORK/apache.conf"
  [ "$(id -u)" -eq 0 ] && chown -R www-data "$WORK/apache" 2>/dev/null || true
  /usr/sbin/apache2 -f "$WORK/apache.conf" -DFOREGROUND >"$WORK/apache.log" 2>&1 &
  EXTRA_PIDS+=($!)
  APACHE_PID=$!
  wait_for "$APACHE/bench/ready" "$APACHE_PID"   # 302 to the provider: mod_auth_openidc answers
fi

# --- scripted login -------------------------------------------------------------------------------------------
# login_on PROXY JAR: signs in as angela through the development provider by script, prints the session
# Cookie header value. The session cookie(s) only: `passerelle`, and `passerelle.1`, ... when a large session
# is split. Not the login-flow cookies: curl's jar keeps those although the callback deletes them (Max-Age=0),
# as a browser would not.
login_on() {
  local proxy=$1 jar=$2 authorize request callback back
  local c=(curl -sS --max-time 10 -b "$jar" -c "$jar")
  authorize=$("${c[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Accept: text/html' "$proxy/bench/start")
  [ "${authorize%% *}" = 302 ] || die "GET $proxy/bench/start (navigation) answered ${authorize%% *}, expected 302 to the provider"
  authorize=${authorize#* }
  case "$authorize" in "$DEV"/authorize*) ;; *) die "login redirect goes to '$authorize', not to $DEV/authorize" ;; esac
  request=$("${c[@]}" "$authorize" | grep -o 'name="request" value="[^"]*"' | head -n1 | sed 's/.*value="//; s/"$//')
  [ -n "$request" ] || die "no hidden 'request' field on the provider's authorize page"
  callback=$("${c[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' \
    --data-urlencode "request=$request" --data-urlencode "identity=angela" "$DEV/authorize/approve")
  [ "${callback%% *}" = 302 ] || die "approve answered ${callback%% *}, expected 302 to the callback"
  callback=${callback#* }
  case "$callback" in "$proxy"/.passerelle/callback*) ;; *) die "approve redirects to '$callback', not to Passerelle's callback" ;; esac
  back=$("${c[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' "$callback")
  [ "${back%% *}" = 302 ] || die "callback answered ${back%% *}, expected 302 back to the application"
  awk -F'\t' 'NF>=7 && $6 ~ /^(__Host-)?passerelle(\.[0-9]+)?$/ && $7!="" {printf "%s%s=%s", sep, $6, $7; sep="; "}' "$jar"
}
say "signing in as angela through the development provider"
COOKIE=$(login_on "$PROXY" "$WORK/cookies.txt")
[ -n "$COOKIE" ] || die "no session cookie after the callback"
say "session cookie obtained (${#COOKIE} bytes in the Cookie header)"

# --- verify what we are going to measure -----------------------------------------------------------------------
J='Accept: application/json'
check_status() { # name expected url [curl args...]
  local name=$1 expected=$2 url=$3; shift 3
  local got
  got=$(curl -sS --max-time 5 -o "$WORK/body" -w '%{http_code}' "$@" "$url")
  [ "$got" = "$expected" ] || die "($name) $url answered $got, expected $expected: $(head -c 300 "$WORK/body")"
}
verify_auth() {
  check_status auth 200 "$PROXY/verify/app" -H "$J" -H "Cookie: $COOKIE"
  grep -q '"x-auth-sub"' "$WORK/body" \
    || die "(auth) 200 but the echo did not receive X-Auth-Sub — not an authenticated request: $(head -c 300 "$WORK/body")"
  check_status auth 200 "$PROXY/app" -H "$J" -H "Cookie: $COOKIE"
}
check_status direct 200 "$UP/public" -H "$J"
check_status nginx 200 "$NGINX/public" -H "$J"
check_status bare-pingora 200 "$BARE/public" -H "$J"
check_status public 200 "$PROXY/verify-public" -H "$J"
grep -q '"x-auth-' "$WORK/body" && die "(public) identity headers reached the upstream on a public route"
check_status public 200 "$PROXY/public" -H "$J"
verify_auth
check_status api-401 401 "$PROXY/app" -H "$J"
say "checked: direct 200, public 200, auth 200 with X-Auth-Sub at the echo, api without cookie 401"
APACHE_COOKIE=""
if [ -n "$APACHE_PID" ]; then
  APACHE_COOKIE=$(python3 "$ROOT/bench/login_loop.py" "$APACHE" 1 /bench/start angela 'mod_auth_openidc_session.*') \
    || die "could not sign in through Apache + mod_auth_openidc (see $WORK/apache/apache-error.log)"
  check_status apache 200 "$APACHE/verify/app" -H "$J" -H "Cookie: $APACHE_COOKIE"
  grep -qi '"x-auth-sub"' "$WORK/body" || die "(apache) 200 but the echo did not receive X-Auth-sub: $(head -c 300 "$WORK/body")"
  check_status apache 200 "$APACHE/app?fixed" -H "$J" -H "Cookie: $APACHE_COOKIE"
  say "Apache + mod_auth_openidc: session cookie ${#APACHE_COOKIE} bytes, the identity reaches the echo"
fi

# --- Redis store: two more replicas on one redis-server ------------------------------------------------------
# R1 and R2 serve the same routes with session.store = "redis", signing in at the same development provider
# (as an ordinary OIDC provider). R1 is measured like (c); R2 is the "other replica" of the revocation timing.
REDIS_COOKIE=""
if [ "$WITH_REDIS" = 1 ]; then
  /usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
  EXTRA_PIDS+=($!)
  # The bench config, with the replica's ports, store = "redis" and the dev provider as a plain OIDC provider.
  for r in 1 2; do
    port_var="R${r}_PORT"; admin_var="R${r}_ADMIN"
    {
      sed -n '1,/^\[session\]/p' "$CONFIG" | sed -e "s/127.0.0.1:$PROXY_PORT/127.0.0.1:${!port_var}/g" \
        -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:${!admin_var}/g" -e "s#$PROXY#http://127.0.0.1:${!port_var}#g"
      echo 'store = "redis"'
      echo 'recheck_interval = "30s"'
      sed -n '/^\[session\]/,/^$/p' "$CONFIG" | sed '1d'
      echo '[session.redis]'
      echo "url = \"redis://127.0.0.1:$REDIS_PORT\""
      echo
      sed -n '/^\[providers.dev\]/,$p' "$CONFIG" \
        | sed -e '/^\[echo\]/,/^$/d' -e 's/^kind = "dev"/kind = "oidc"/' -e "s#^listen = \"127.0.0.1:$DEV_PORT\"#issuer = \"$DEV\"#"
    } >"$WORK/replica$r.toml"
    "$BIN" check --config "$WORK/replica$r.toml" >&2 || die "the Redis replica config does not pass \`passerelle check\`"
    "$BIN" run --config "$WORK/replica$r.toml" >"$WORK/replica$r.log" 2>&1 &
    EXTRA_PIDS+=($!)
    declare "R${r}_PID=$!"
  done
  wait_for "http://127.0.0.1:$R1_ADMIN/ready" "$R1_PID"
  wait_for "http://127.0.0.1:$R2_ADMIN/ready" "$R2_PID"
  R1="http://127.0.0.1:$R1_PORT"; R2="http://127.0.0.1:$R2_PORT"
  REDIS_COOKIE=$(login_on "$R1" "$WORK/cookies-redis.txt")
  [ -n "$REDIS_COOKIE" ] || die "no session ticket from the Redis replica"
  check_status auth-redis 200 "$R2/verify/app" -H "$J" -H "Cookie: $REDIS_COOKIE"
  grep -q '"x-auth-sub"' "$WORK/body" || die "(auth-redis) the echo did not receive X-Auth-Sub through R2"
  say "Redis store: ticket cookie ${#REDIS_COOKIE} bytes, opens R2 too"
fi

# --- HTTP/2 over TLS: another Passerelle (H2) with server.tls --------------------------------------------------
# The bench config with H2's ports, an https public_url, `server.tls` on the bench certificate, and the
# development provider as a plain OIDC provider (as the Redis replicas have it). Its session cookie is minted by
# a real sign-in over https (`__Host-passerelle`, Secure), then checked over HTTP/2 like (c) is.
H2_COOKIE=""
H2J='accept: application/json'   # HTTP/2 header names are lower case
h2_check() { # name url [curl args...]: must answer 200 over HTTP/2
  local name=$1 url=$2 got; shift 2
  got=$(curl -sS --max-time 5 --http2 --cacert "$TLS/ca.pem" -o "$WORK/body" -w '%{http_code} %{http_version}' "$@" "$url") \
    || die "($name) curl --http2 $url failed"
  [ "$got" = "200 2" ] || die "($name) $url answered '$got' (status, HTTP version), expected '200 2': $(head -c 300 "$WORK/body")"
}
verify_h2() {
  h2_check nginx-h2 "$NGINX_H2/public?fixed" -H "$H2J"
  h2_check auth-h2 "$H2_PROXY/verify/app" -H "$H2J" -H "cookie: $H2_COOKIE"
  grep -q '"x-auth-sub"' "$WORK/body" \
    || die "(auth-h2) 200 but the echo did not receive X-Auth-Sub — not an authenticated request: $(head -c 300 "$WORK/body")"
  h2_check auth-h2 "$H2_PROXY/app?fixed" -H "$H2J" -H "cookie: $H2_COOKIE"
}
if [ "$WITH_H2" = 1 ]; then
  {
    sed -n '1,/^\[session\]/p' "$CONFIG" | sed '$d' \
      | sed -e "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$H2_PORT/g" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$H2_ADMIN/g" \
            -e "s#^public_url = .*#public_url = \"$H2_PROXY\"#" \
            -e "/^\[server\]/a tls = { cert = \"$TLS/server.pem\", key = \"$TLS/server.key\" }"
    sed -n '/^\[session\]/,$p' "$CONFIG" \
      | sed -e '/^\[echo\]/,/^$/d' -e 's/^kind = "dev"/kind = "oidc"/' -e "s#^listen = \"127.0.0.1:$DEV_PORT\"#issuer = \"$DEV\"#"
  } >"$WORK/h2.toml"
  "$BIN" check --config "$WORK/h2.toml" >&2 || die "the h2 config (server.tls) does not pass \`passerelle check\`"
  "$BIN" run --config "$WORK/h2.toml" >"$WORK/h2.log" 2>&1 &
  EXTRA_PIDS+=($!)
  H2_PID=$!
  wait_for "http://127.0.0.1:$H2_ADMIN/ready" "$H2_PID"
  CURL_CA_BUNDLE="$TLS/ca.pem" wait_for "$H2_PROXY/public?fixed" "$H2_PID"
  H2_COOKIE=$(CURL_CA_BUNDLE="$TLS/ca.pem" login_on "$H2_PROXY" "$WORK/cookies-h2.txt")
  [ -n "$H2_COOKIE" ] || die "no session cookie from the h2 Passerelle after the callback: $(tail -n 5 "$WORK/h2.log")"
  verify_h2
  say "HTTP/2 + TLS: nginx-h2 and Passerelle H2 answer over h2; session cookie ${#H2_COOKIE} bytes (${H2_COOKIE%%=*}), the identity reaches the echo"
fi

# --- measure --------------------------------------------------------------------------------------------------
to_ms() { # wrk latency (e.g. 669.00us, 1.49ms, 2.00s) -> milliseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}
# CPU time (clock ticks) used so far by Passerelle's proxy worker threads (named "passerelle"; the echo,
# development provider and admin threads have their own names). Divided by the requests served, it gives the
# proxy's own cost per request: less sensitive than requests/s to what else runs on the machine (not immune:
# contention adds context switches).
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# For the peers (nginx, bare pingora) every thread of the process and of its children (nginx's workers) counts.
proxy_ticks() { # pid [mode: passerelle | all]
  local t total=0 f pid=${1:-$SERVER_PID} mode=${2:-passerelle} p pids
  pids="$pid $(cat /proc/"$pid"/task/*/children 2>/dev/null)"
  [ "$mode" = passerelle ] && pids=$pid
  for p in $pids; do
    for t in /proc/"$p"/task/*; do
      [ "$mode" = passerelle ] && [ "$(cat "$t/comm" 2>/dev/null)" != passerelle ] && continue
      f=$(sed 's/^.*) //' "$t/stat" 2>/dev/null) || continue
      total=$((total + $(awk '{print $12 + $13}' <<<"$f")))
    done
  done
  echo "$total"
}
declare -A RPS P50 P99 NON2XX ERRS CPU   # keyed "case#round"
run_wrk() { # name round url [wrk args...]; the CPU is counted on $WRK_PID (default: the main server)
  local name=$1 round=$2 url=$3; shift 3
  local k="$name#$round" out="$WORK/wrk-$name-$round.txt" t0 t1 n pid=${WRK_PID:-$SERVER_PID} mode=${WRK_CPU:-passerelle}
  say "round $round/$ROUNDS: wrk ($name) $url  [-t$WRK_THREADS -c$CONNECTIONS -d$DURATION]"
  t0=$(proxy_ticks "$pid" "$mode")
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency "$@" "$url" >"$out" 2>&1 \
    || die "wrk ($name) failed: $(cat "$out")"
  t1=$(proxy_ticks "$pid" "$mode")
  cp "$out" "$OUT_DIR/"
  n=$(awk '/requests in/ {print $1}' "$out")
  CPU[$k]=$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }')
  RPS[$k]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
  P50[$k]=$(to_ms "$(awk '$1=="50%" {print $2}' "$out")")
  P99[$k]=$(to_ms "$(awk '$1=="99%" {print $2}' "$out")")
  NON2XX[$k]=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  NON2XX[$k]=${NON2XX[$k]:-0}
  ERRS[$k]=$(awk '/Socket errors:/ {gsub(",", ""); print $4+$6+$8+$10}' "$out")
  ERRS[$k]=${ERRS[$k]:-0}
  [ -n "${RPS[$k]}" ] || die "could not read wrk's output for ($name)"
}
# run_h2load NAME ROUND URL PID CPU-MODE [h2load args...]: the same as run_wrk with h2load over HTTP/2 + TLS, the
# same duration and threads, H2_CLIENTS connections of H2_STREAMS concurrent streams each. h2load gives no
# percentiles: MEAN is its mean time per request. Stops unless h2 was negotiated and every request done got a
# 2xx (a 401 would mean the session cookie was refused).
declare -A MEAN DONE H2_TLS
run_h2load() {
  local name=$1 round=$2 url=$3 pid=$4 mode=$5; shift 5
  local k="$name#$round" out="$WORK/h2load-$name-$round.txt" t0 t1 total done ok failed errored timeout s2xx
  say "round $round/$ROUNDS: h2load ($name) $url  [-t$WRK_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION]"
  t0=$(proxy_ticks "$pid" "$mode")
  h2load -t"$WRK_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" "$@" "$url" >"$out" 2>&1 \
    || die "h2load ($name) failed: $(tail -n 20 "$out")"
  t1=$(proxy_ticks "$pid" "$mode")
  cp "$out" "$OUT_DIR/"
  grep -q '^Application protocol: h2$' "$out" \
    || die "($name) h2load did not speak HTTP/2 over TLS (see $OUT_DIR/h2load-$name-$round.txt): $(grep -m1 -i 'protocol' "$out")"
  # requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout
  read -r total done ok failed errored timeout < <(awk '/^requests:/ {gsub(",", ""); print $2, $6, $8, $10, $12, $14}' "$out")
  s2xx=$(awk '/^status codes:/ {print $3}' "$out")
  [ "${done:-0}" -gt 0 ] && [ "$total" = "$done" ] && [ "$s2xx" = "$done" ] && [ "$ok" = "$done" ] && [ "$failed" = 0 ] \
    && [ "$errored" = 0 ] && [ "$timeout" = 0 ] \
    || die "($name) round $round: not every request got a 2xx over h2 — h2load: $(grep -E '^(requests|status codes):' "$out" | tr '\n' ' ') (see $OUT_DIR/h2load-$name-$round.txt)"
  RPS[$k]=$(awk '/^finished in/ {gsub(",", ""); printf "%.0f", $4}' "$out")
  MEAN[$k]=$(to_ms "$(awk '/^time for request:/ {print $6}' "$out")")
  CPU[$k]=$(awk -v d=$((t1 - t0)) -v n="$done" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
  NON2XX[$k]=0; ERRS[$k]=0; DONE[$k]=$done
  H2_TLS[$name]="$(awk -F': ' '/^TLS Protocol:/ {p=$2} /^Cipher:/ {c=$2} /^Server Temp Key:/ {t=$2} END {print p ", " c ", " t}' "$out")"
  [ -n "${RPS[$k]}" ] || die "could not read h2load's output for ($name)"
}
# How busy the machine is before we start (other builds or tests skew every figure): CPU use over 1 s.
cpu_busy() {
  local a b
  a=($(awk '/^cpu / {print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)); sleep 1
  b=($(awk '/^cpu / {print $2+$3+$4+$6+$7+$8, $5}' /proc/stat))
  awk -v u=$((b[0] - a[0])) -v i=$((b[1] - a[1])) 'BEGIN { t = u + i; printf "%.0f", (t > 0 ? 100 * u / t : 0) }'
}
if [ "$INSTRUCTIONS" = 1 ]; then
  mkdir -p "$OUT_DIR"
  # count NAME PID DUMP URL [wrk args]: instructions per request over an 8 s wrk run (4 connections). callgrind
  # writes each dump as DUMP.1, DUMP.2, ...: the newest is this run's.
  count() {
    local name=$1 pid=$2 dump=$3 url=$4 n total; shift 4
    say "instructions: ($name) $url under callgrind"
    callgrind_control -z "$pid" >/dev/null 2>&1 && callgrind_control -i on "$pid" >/dev/null 2>&1
    wrk -t1 -c4 -d8s "$@" "$url" >"$WORK/wrk-instr-$name.txt"
    callgrind_control -i off "$pid" >/dev/null 2>&1 && callgrind_control -d "$name" "$pid" >/dev/null 2>&1
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk-instr-$name.txt")
    total=$(callgrind_annotate "$(ls -t "$dump".* 2>/dev/null | head -n1)" 2>/dev/null \
      | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    [ -n "$total" ] && [ "${n:-0}" -gt 0 ] || die "no callgrind count for ($name)"
    INSTR[$name]=$((total / n)); INSTR_N[$name]=$n
  }
  declare -A INSTR INSTR_N
  count bare-pingora "$BARE_PID" "$WORK/callgrind.bare" "$BARE/public?fixed" -H "$J"
  count public "$SERVER_PID" "$WORK/callgrind.passerelle" "$PROXY/public?fixed" -H "$J"
  count auth "$SERVER_PID" "$WORK/callgrind.passerelle" "$PROXY/app?fixed" -H "$J" -H "Cookie: $COOKIE"
  {
    echo "# Instructions per request (callgrind, user space, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
    echo
    echo "| target | instructions per request | / bare pingora | requests counted |"
    echo "|---|---:|---:|---:|"
    for n in bare-pingora public auth; do
      awk -v n="$n" -v i="${INSTR[$n]}" -v b="${INSTR[bare-pingora]}" -v c="${INSTR_N[$n]}" \
        'BEGIN { printf "| %s | %d | %.2f | %d |\n", n, i, i / b, c }'
    done
  } | tee "$OUT_DIR/instructions.md"
  exit 0
fi
BUSY_BEFORE=$(cpu_busy)
if [ "$BUSY_BEFORE" -gt 20 ]; then
  say "warning: the machine is already ${BUSY_BEFORE}% busy before the run; figures will be skewed"
fi
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/wrk-*.txt "$OUT_DIR"/h2load-*.txt
CASES=(direct nginx bare-pingora public auth api-401)
[ -n "$REDIS_COOKIE" ] && CASES+=(auth-redis)
[ -n "$APACHE_COOKIE" ] && CASES+=(apache)
# Interleaved rounds: each round measures the four cases back to back, so a neighbour's load that comes and
# goes hits the cases of a round alike; the ratios are taken within each round, then the median over rounds.
for round in $(seq "$ROUNDS"); do
  # `?fixed`: the echo answers the same two bytes to every case, so the cases differ only by Passerelle's work.
  run_wrk direct  "$round" "$UP/public?fixed" -H "$J"
  WRK_PID=$NGINX_PROXY_PID WRK_CPU=all run_wrk nginx "$round" "$NGINX/public?fixed" -H "$J"
  WRK_PID=$BARE_PID WRK_CPU=all run_wrk bare-pingora "$round" "$BARE/public?fixed" -H "$J"
  run_wrk public  "$round" "$PROXY/public?fixed" -H "$J"
  run_wrk auth    "$round" "$PROXY/app?fixed" -H "$J" -H "Cookie: $COOKIE"
  run_wrk api-401 "$round" "$PROXY/app?fixed" -H "$J"
  if [ -n "$APACHE_COOKIE" ]; then
    WRK_PID=$APACHE_PID WRK_CPU=all run_wrk apache "$round" "$APACHE/app?fixed" -H "$J" -H "Cookie: $APACHE_COOKIE"
  fi
  if [ -n "$REDIS_COOKIE" ]; then
    WRK_PID=$R1_PID run_wrk auth-redis "$round" "$R1/app?fixed" -H "$J" -H "Cookie: $REDIS_COOKIE"
  fi
  if [ -n "$H2_COOKIE" ]; then
    run_h2load nginx-h2 "$round" "$NGINX_H2/public?fixed" "$NGINX_H2_PID" all -H "$H2J"
    run_h2load auth-h2 "$round" "$H2_PROXY/app?fixed" "$H2_PID" passerelle -H "$H2J" -H "cookie: $H2_COOKIE"
  fi
done

# wrk counts 3xx as successes: check again after the run that the cookie still opens the route, and that the
# runs that should be all-2xx were.
verify_auth
[ -n "$H2_COOKIE" ] && verify_h2
ERR_TOTAL=0
for round in $(seq "$ROUNDS"); do
  for n in "${CASES[@]}"; do
    [ "$n" = api-401 ] && continue
    [ "${NON2XX[$n#$round]}" = 0 ] \
      || die "($n) round $round: ${NON2XX[$n#$round]} responses were not 2xx/3xx (see $OUT_DIR/wrk-$n-$round.txt)"
  done
  for n in "${CASES[@]}"; do ERR_TOTAL=$((ERR_TOTAL + ERRS[$n#$round])); done
done

# --- memory per idle connection ------------------------------------------------------------------------------
# For each proxy: BENCH_IDLE keep-alive connections (default 10000; 0 skips) each get one answered request and
# then stay silent (bench/idle_connections.py). Resident memory (the process and its children: nginx's
# workers) is read before, while they are all open (and one more client is served meanwhile), and after they
# closed and 2 s of ordinary traffic (an idle allocator returns freed pages on its next use, not on a timer).
IDLE_N=${BENCH_IDLE:-10000}
declare -A IDLE_BEFORE IDLE_OPEN IDLE_AFTER IDLE_PER IDLE_OTHER
rss_kb() { # pid: resident KB of the process and its children
  local p t=0
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    t=$((t + $(awk '/^VmRSS/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)))
  done
  echo "$t"
}
idle_memory() { # name port path pid [header]
  local name=$1 port=$2 path=$3 pid=$4 header=${5:-} line got code
  say "memory: $IDLE_N idle keep-alive connections on ($name)"
  IDLE_BEFORE[$name]=$(rss_kb "$pid")
  coproc IDLE_CLIENT { python3 "$ROOT/bench/idle_connections.py" 127.0.0.1 "$port" "$path" "$IDLE_N" "$J" ${header:+"$header"}; }
  read -r line <&"${IDLE_CLIENT[0]}" || die "($name) the idle-connection client stopped"
  got=${line#open }
  [ "$got" = "$IDLE_N" ] || die "($name) only $got of $IDLE_N idle connections got a 2xx answer"
  IDLE_OPEN[$name]=$(rss_kb "$pid")
  code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "$J" ${header:+-H "$header"} "http://127.0.0.1:$port$path")
  IDLE_OTHER[$name]=$code
  echo close >&"${IDLE_CLIENT[1]}"
  read -r line <&"${IDLE_CLIENT[0]}"   # dropped N
  [ "$line" = "dropped 0" ] || die "($name) the server closed idle connections while they were held: $line"
  read -r line <&"${IDLE_CLIENT[0]}"   # closed
  wait "$IDLE_CLIENT_PID" 2>/dev/null || true
  wrk -t1 -c8 -d2s -H "$J" ${header:+-H "$header"} "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
  IDLE_AFTER[$name]=$(rss_kb "$pid")
  IDLE_PER[$name]=$(( (IDLE_OPEN[$name] - IDLE_BEFORE[$name]) * 1024 / IDLE_N ))
}
if [ "$IDLE_N" -gt 0 ]; then
  # Each process (client, proxy) holds one descriptor per connection: the limit is per process.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE_N + 500)) ] \
    || die "the open-file limit ($(ulimit -n)) is too low for BENCH_IDLE=$IDLE_N connections (lower BENCH_IDLE)"
  command -v python3 >/dev/null || die "python3 is needed for the idle-connection client"
  idle_memory nginx "$NGINX_PORT" "/public?fixed" "$NGINX_PROXY_PID"
  idle_memory bare-pingora "$BARE_PORT" "/public?fixed" "$BARE_PID"
  idle_memory public "$PROXY_PORT" "/public?fixed" "$SERVER_PID"
  idle_memory auth "$PROXY_PORT" "/app?fixed" "$SERVER_PID" "Cookie: $COOKIE"
fi

# --- logins: CPU per completed login, memory per cached session ----------------------------------------------
# BENCH_LOGINS sign-ins (default 1000; 0 skips) through the development provider, by bench/login_loop.py over
# keep-alive connections as a browser keeps them. CPU: the time
# Passerelle's proxy threads spent (schedstat, in ns) over them, divided by their number: the redirect to the
# provider and the callback (code exchange, id_token signature and claims checks, userinfo, the sealed cookie);
# the provider's own work runs on its own thread and is not counted. Memory: each new session then makes one
# authenticated request (one curl, keep-alive), which decodes it into the session cache; the resident memory
# before and after that pass, divided by the number of sessions.
LOGINS_N=${BENCH_LOGINS:-1000}
proxy_cpu_ns() { # pid: CPU ns of the threads named "passerelle" (the proxy's)
  local t total=0
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = passerelle ] || continue
    total=$((total + $(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
proxy_user_ticks() { # pid: user-space CPU ticks of the threads named "passerelle"
  local t total=0
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = passerelle ] || continue
    total=$((total + $(sed 's/^.*) //' "$t/stat" | awk '{print $12}')))
  done
  echo "$total"
}
LOGIN_CPU_US=""; LOGIN_USER_US=""; SESSION_BYTES=""
if [ "$LOGINS_N" -gt 0 ]; then
  say "timing $LOGINS_N logins"
  c0=$(proxy_cpu_ns "$SERVER_PID"); u0=$(proxy_user_ticks "$SERVER_PID")
  python3 "$ROOT/bench/login_loop.py" "$PROXY" "$LOGINS_N" >"$WORK/sessions.txt" || die "the login loop failed"
  c1=$(proxy_cpu_ns "$SERVER_PID"); u1=$(proxy_user_ticks "$SERVER_PID")
  [ "$(wc -l <"$WORK/sessions.txt")" = "$LOGINS_N" ] || die "the login loop gave $(wc -l <"$WORK/sessions.txt") sessions, not $LOGINS_N"
  LOGIN_CPU_US=$(awk -v d=$((c1 - c0)) -v n="$LOGINS_N" 'BEGIN { printf "%.0f", d / 1000 / n }')
  LOGIN_USER_US=$(awk -v d=$((u1 - u0)) -v n="$LOGINS_N" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", d * 1e6 / hz / n }')
  {
    first=1
    while read -r c; do
      [ $first = 1 ] || echo next
      first=0
      echo "url = \"$PROXY/app?fixed\""
      echo "header = \"$J\""
      echo "header = \"Cookie: $c\""
      echo 'output = "/dev/null"'
      echo 'write-out = "%{http_code}\n"'
    done <"$WORK/sessions.txt"
  } >"$WORK/cache-pass.curl"
  m0=$(rss_kb "$SERVER_PID")
  curl -sS -K "$WORK/cache-pass.curl" >"$WORK/cache-pass.codes" || die "the session-cache pass failed"
  m1=$(rss_kb "$SERVER_PID")
  ok=$(grep -c '^200$' "$WORK/cache-pass.codes" || true)
  [ "$ok" = "$LOGINS_N" ] || die "only $ok of $LOGINS_N new sessions opened the protected route"
  SESSION_BYTES=$(( (m1 - m0) * 1024 / LOGINS_N ))
fi

# --- revocation seen by the other replica ----------------------------------------------------------------------
# For each of BENCH_REVOCATIONS sessions: sign in on R1, let R2 cache the session (one 200), log out on R1, then
# poll R2 until it refuses the cookie. The time counts from the logout request to R2's first refusal.
REVOKE_MS=()
if [ -n "$REDIS_COOKIE" ]; then
  say "timing ${BENCH_REVOCATIONS:-100} revocations as seen by the other replica"
  for i in $(seq "${BENCH_REVOCATIONS:-100}"); do
    rm -f "$WORK/rev.txt"
    c=$(login_on "$R1" "$WORK/rev.txt")
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -H "Cookie: $c" "$R2/app?fixed")" = 200 ] \
      || die "revocation $i: R2 does not serve the new session"
    t0=$(date +%s%N)
    curl -s -o /dev/null -H "Cookie: $c" "$R1/.passerelle/logout"
    refused=""
    for _ in $(seq 2000); do
      if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -H "Cookie: $c" "$R2/app?fixed")" != 200 ]; then
        refused=1; break
      fi
    done
    [ -n "$refused" ] || die "revocation $i: R2 still serves the session after 2000 polls"
    t1=$(date +%s%N)
    REVOKE_MS+=("$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.1f", d / 1e6 }')")
  done
fi
percentile() { # p values...
  local p=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v p="$p" '{v[NR] = $1} END { i = int((p / 100) * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "0" }'; }
declare -A MRPS MP50 MP99 MCPU SUM_NON2XX SUM_ERRS
for n in "${CASES[@]}"; do
  r=(); l50=(); l99=(); cpu=(); SUM_NON2XX[$n]=0; SUM_ERRS[$n]=0
  for round in $(seq "$ROUNDS"); do
    r+=("${RPS[$n#$round]}"); l50+=("${P50[$n#$round]}"); l99+=("${P99[$n#$round]}"); cpu+=("${CPU[$n#$round]}")
    SUM_NON2XX[$n]=$((SUM_NON2XX[$n] + NON2XX[$n#$round])); SUM_ERRS[$n]=$((SUM_ERRS[$n] + ERRS[$n#$round]))
  done
  MRPS[$n]=$(median "${r[@]}" | awk '{printf "%.0f", $1}')
  MP50[$n]=$(median "${l50[@]}" | awk '{printf "%.3f", $1}')
  MP99[$n]=$(median "${l99[@]}" | awk '{printf "%.3f", $1}')
  MCPU[$n]=$(median "${cpu[@]}" | awk '{printf "%.1f", $1}')
done
ap=(); pd=(); pb=(); ab=(); pn=(); an=(); bn=(); PER_ROUND=""
for round in $(seq "$ROUNDS"); do
  a=$(ratio "${RPS[auth#$round]}" "${RPS[public#$round]}"); p=$(ratio "${RPS[public#$round]}" "${RPS[direct#$round]}")
  ap+=("$a"); pd+=("$p")
  pb+=("$(ratio "${RPS[public#$round]}" "${RPS[bare-pingora#$round]}")"); ab+=("$(ratio "${RPS[auth#$round]}" "${RPS[bare-pingora#$round]}")")
  pn+=("$(ratio "${RPS[public#$round]}" "${RPS[nginx#$round]}")"); an+=("$(ratio "${RPS[auth#$round]}" "${RPS[nginx#$round]}")")
  bn+=("$(ratio "${RPS[bare-pingora#$round]}" "${RPS[nginx#$round]}")")
  PER_ROUND="$PER_ROUND| $round | ${RPS[direct#$round]} | ${RPS[nginx#$round]} | ${RPS[bare-pingora#$round]} | ${RPS[public#$round]} | ${RPS[auth#$round]} | ${RPS[api-401#$round]} | $(printf '%.2f' "$a") | $(printf '%.2f' "${an[-1]}") |
"
done
R_PUBLIC_BARE=$(median "${pb[@]}" | awk '{printf "%.2f", $1}'); R_AUTH_BARE=$(median "${ab[@]}" | awk '{printf "%.2f", $1}')
R_PUBLIC_NGINX=$(median "${pn[@]}" | awk '{printf "%.2f", $1}'); R_AUTH_NGINX=$(median "${an[@]}" | awk '{printf "%.2f", $1}')
R_BARE_NGINX=$(median "${bn[@]}" | awk '{printf "%.2f", $1}')
if [ -n "$APACHE_COOKIE" ]; then
  am=(); mn=()
  for round in $(seq "$ROUNDS"); do
    am+=("$(ratio "${RPS[auth#$round]}" "${RPS[apache#$round]}")"); mn+=("$(ratio "${RPS[apache#$round]}" "${RPS[nginx#$round]}")")
  done
  R_AUTH_APACHE=$(median "${am[@]}" | awk '{printf "%.2f", $1}'); R_APACHE_NGINX=$(median "${mn[@]}" | awk '{printf "%.2f", $1}')
  R_CPU_APACHE=$(awk -v a="${MCPU[auth]}" -v b="${MCPU[apache]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')
fi

if [ -n "$H2_COOKIE" ]; then
  declare -A MMEAN SUM_DONE
  for n in nginx-h2 auth-h2; do
    r=(); m=(); cpu=(); SUM_DONE[$n]=0
    for round in $(seq "$ROUNDS"); do
      r+=("${RPS[$n#$round]}"); m+=("${MEAN[$n#$round]}"); cpu+=("${CPU[$n#$round]}")
      SUM_DONE[$n]=$((SUM_DONE[$n] + DONE[$n#$round]))
    done
    MRPS[$n]=$(median "${r[@]}" | awk '{printf "%.0f", $1}')
    MMEAN[$n]=$(median "${m[@]}" | awk '{printf "%.3f", $1}')
    MCPU[$n]=$(median "${cpu[@]}" | awk '{printf "%.1f", $1}')
  done
  hn=(); H2_PER_ROUND=""
  for round in $(seq "$ROUNDS"); do
    hn+=("$(ratio "${RPS[auth-h2#$round]}" "${RPS[nginx-h2#$round]}")")
    H2_PER_ROUND="$H2_PER_ROUND| $round | ${RPS[nginx-h2#$round]} | ${RPS[auth-h2#$round]} | $(printf '%.2f' "${hn[-1]}") |
"
  done
  R_H2_NGINX=$(median "${hn[@]}" | awk '{printf "%.2f", $1}')
  R_H2_CPU=$(awk -v a="${MCPU[auth-h2]}" -v b="${MCPU[nginx-h2]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')
fi

# --- report ---------------------------------------------------------------------------------------------------
R_AUTH_PUBLIC=$(median "${ap[@]}" | awk '{printf "%.2f", $1}')
R_PUBLIC_DIRECT=$(median "${pd[@]}" | awk '{printf "%.2f", $1}')
R_CPU=$(awk -v a="${MCPU[auth]}" -v b="${MCPU[public]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')
MET=$(awk -v r="$R_AUTH_PUBLIC" 'BEGIN { print (r + 0 >= 0.9) ? "met" : "NOT met" }')
if [ -n "$REDIS_COOKIE" ]; then
  rc=()
  for round in $(seq "$ROUNDS"); do rc+=("$(ratio "${RPS[auth-redis#$round]}" "${RPS[auth#$round]}")"); done
  R_REDIS_COOKIE=$(median "${rc[@]}" | awk '{printf "%.2f", $1}')
  R_REDIS_CPU=$(awk -v a="${MCPU[auth-redis]}" -v b="${MCPU[auth]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')
  MET_REDIS=$(awk -v r="$R_REDIS_COOKIE" 'BEGIN { print (r + 0 >= 0.9) ? "met" : "NOT met" }')
  REV_P50=$(percentile 50 "${REVOKE_MS[@]}"); REV_P99=$(percentile 99 "${REVOKE_MS[@]}"); REV_MAX=$(percentile 100 "${REVOKE_MS[@]}")
  MET_REV=$(awk -v r="$REV_P99" 'BEGIN { print (r + 0 < 1000) ? "met" : "NOT met" }')
fi
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)

{
  echo "# Passerelle benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit ${REV}${DIRTY}"
  echo "- machine: $(nproc) CPU ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)), CPU busy just before the run: ${BUSY_BEFORE}% (load average at the end: $(cut -d" " -f1-3 /proc/loadavg))"
  echo "- wrk: -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS round(s), Accept: application/json; every proxy $SERVER_THREADS thread(s); nginx upstream 1 worker; all on 127.0.0.1"
  echo "- session Cookie header: ${#COOKIE} bytes"
  echo
  echo "| case | what | requests/s | p50 (ms) | p99 (ms) | proxy CPU (µs/req) | non-2xx/3xx | socket errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  echo "| (a) direct | the nginx upstream itself, no proxy | ${MRPS[direct]} | ${MP50[direct]} | ${MP99[direct]} | ${MCPU[direct]} | ${SUM_NON2XX[direct]} | ${SUM_ERRS[direct]} |"
  echo "| (n) nginx | nginx as a bare reverse proxy (keepalive 64) | ${MRPS[nginx]} | ${MP50[nginx]} | ${MP99[nginx]} | ${MCPU[nginx]} | ${SUM_NON2XX[nginx]} | ${SUM_ERRS[nginx]} |"
  echo "| (p) bare-pingora | a bare pingora proxy (examples/bare_pingora.rs) | ${MRPS[bare-pingora]} | ${MP50[bare-pingora]} | ${MP99[bare-pingora]} | ${MCPU[bare-pingora]} | ${SUM_NON2XX[bare-pingora]} | ${SUM_ERRS[bare-pingora]} |"
  echo "| (b) public | public route through Passerelle | ${MRPS[public]} | ${MP50[public]} | ${MP99[public]} | ${MCPU[public]} | ${SUM_NON2XX[public]} | ${SUM_ERRS[public]} |"
  echo "| (c) auth | protected route, valid session cookie | ${MRPS[auth]} | ${MP50[auth]} | ${MP99[auth]} | ${MCPU[auth]} | ${SUM_NON2XX[auth]} | ${SUM_ERRS[auth]} |"
  echo "| (d) api-401 | protected route, no cookie, API client (401) | ${MRPS[api-401]} | ${MP50[api-401]} | ${MP99[api-401]} | ${MCPU[api-401]} | ${SUM_NON2XX[api-401]} (expected: all) | ${SUM_ERRS[api-401]} |"
  if [ -n "$APACHE_COOKIE" ]; then
    echo "| (m) apache | Apache + mod_auth_openidc, authenticated (client-cookie session, ${#APACHE_COOKIE}-byte cookie) | ${MRPS[apache]} | ${MP50[apache]} | ${MP99[apache]} | ${MCPU[apache]} | ${SUM_NON2XX[apache]} | ${SUM_ERRS[apache]} |"
  fi
  if [ -n "$REDIS_COOKIE" ]; then
    echo "| (e) auth-redis | protected route, session in Redis (ticket cookie), another process | ${MRPS[auth-redis]} | ${MP50[auth-redis]} | ${MP99[auth-redis]} | ${MCPU[auth-redis]} | ${SUM_NON2XX[auth-redis]} | ${SUM_ERRS[auth-redis]} |"
  fi
  echo
  echo "Medians over $ROUNDS interleaved round(s); non-2xx/3xx and socket errors are totals. proxy CPU: CPU time"
  echo "per request of the proxy's own threads (Passerelle's proxy threads; every thread of nginx's workers and of the"
  echo "bare pingora; not the upstream's, not wrk's); 0 for (a). Every proxy runs $SERVER_THREADS thread(s)/worker(s)."
  echo
  echo "- public / bare pingora = **$R_PUBLIC_BARE**, auth / bare pingora = **$R_AUTH_BARE** (target >= 0.95: Passerelle's own cost)"
  echo "- public / nginx = **$R_PUBLIC_NGINX**, auth / nginx = **$R_AUTH_NGINX**, bare pingora / nginx = **$R_BARE_NGINX** (target: auth >= 0.8, aim 1.0)"
  echo
  if [ -n "$APACHE_COOKIE" ]; then
    echo "- auth / Apache + mod_auth_openidc = **$R_AUTH_APACHE** requests/s, **$R_CPU_APACHE** proxy CPU per request; Apache / nginx = **$R_APACHE_NGINX**"
  fi
  echo "- auth / public = **$R_AUTH_PUBLIC** (target: authenticated >= 0.9 x public — $MET)"
  echo "- public / direct = **$R_PUBLIC_DIRECT** (cost of the proxy hop itself)"
  echo "- proxy CPU per request, auth / public = **$R_CPU** (what authentication adds to Passerelle's own work)"
  if [ -n "$REDIS_COOKIE" ]; then
    echo "- Redis store / cookie store (authenticated) = **$R_REDIS_COOKIE** requests/s, **$R_REDIS_CPU** proxy CPU per request (target: >= 0.9 — $MET_REDIS); Redis ticket cookie: ${#REDIS_COOKIE} bytes"
    echo "- revocation seen by the other replica, ${#REVOKE_MS[@]} logouts: p50 **${REV_P50} ms**, p99 **${REV_P99} ms**, max ${REV_MAX} ms (target: p99 < 1 s — $MET_REV)"
  fi
  echo
  if [ -n "$H2_COOKIE" ]; then
    echo "HTTP/2 over TLS: h2load -t$WRK_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION, Accept: application/json, in the same rounds;"
    echo "one ECDSA P-256 certificate for 127.0.0.1 on both; TLS to Passerelle: ${H2_TLS[auth-h2]}; to nginx $NGINX_VERSION: ${H2_TLS[nginx-h2]};"
    echo "both proxy over pooled HTTP/1.1 to the same nginx upstream."
    echo
    echo "| case | what | requests/s | mean request time (ms) | proxy CPU (µs/req) | requests (all 2xx) |"
    echo "|---|---|---:|---:|---:|---:|"
    echo "| (hn) nginx-h2 | nginx terminating TLS + HTTP/2, bare reverse proxy | ${MRPS[nginx-h2]} | ${MMEAN[nginx-h2]} | ${MCPU[nginx-h2]} | ${SUM_DONE[nginx-h2]} |"
    echo "| (h) auth-h2 | Passerelle server.tls, HTTP/2, protected route, valid session cookie (${#H2_COOKIE} bytes) | ${MRPS[auth-h2]} | ${MMEAN[auth-h2]} | ${MCPU[auth-h2]} | ${SUM_DONE[auth-h2]} |"
    echo
    echo "- auth-h2 / nginx-h2 = **$R_H2_NGINX** requests/s, **$R_H2_CPU** proxy CPU per request (Passerelle authenticated over HTTP/2 vs nginx over HTTP/2, median of the per-round ratios)"
    echo
    echo "| round | nginx-h2 | auth-h2 | auth-h2/nginx-h2 |"
    echo "|---:|---:|---:|---:|"
    printf '%s' "$H2_PER_ROUND"
    echo
  fi
  if [ "$IDLE_N" -gt 0 ]; then
    echo "Memory per idle keep-alive connection ($IDLE_N connections, one request answered on each, then silent):"
    echo
    echo "| target | RSS before (MB) | with $IDLE_N idle (MB) | per idle connection | other client meanwhile | after close + 2 s of traffic (MB) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for n in nginx bare-pingora public auth; do
      awk -v n="$n" -v b="${IDLE_BEFORE[$n]}" -v o="${IDLE_OPEN[$n]}" -v p="${IDLE_PER[$n]}" -v c="${IDLE_OTHER[$n]}" -v a="${IDLE_AFTER[$n]}" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.1f KB | %s | %.1f |\n", n, b / 1024, o / 1024, p / 1024, c, a / 1024 }'
    done
    echo
    echo "(public and auth are the same Passerelle process, measured one after the other.)"
    echo
  fi
  if [ -n "$LOGIN_CPU_US" ]; then
    echo "- a completed login ($LOGINS_N, one after the other, keep-alive connections as a browser keeps them): **$LOGIN_CPU_US µs** of Passerelle's CPU each, of which $LOGIN_USER_US µs in user space (redirect to the provider + callback; target < 1000 µs; the rest is the kernel's loopback TCP work, which counts the receiving side's too)"
    echo "- a decoded session in the cache: **$SESSION_BYTES bytes** of resident memory each ($LOGINS_N sessions of a ${#COOKIE}-byte cookie)"
    echo
  fi
  echo "Per round (requests/s):"
  echo
  echo "| round | direct | nginx | bare pingora | public | auth | api-401 | auth/public | auth/nginx |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s' "$PER_ROUND"
  if [ "$ERR_TOTAL" -gt 0 ]; then
    echo "- note: $ERR_TOTAL socket errors in total (see wrk-*.txt)"
  fi
  echo
  echo "Raw wrk output: bench/output/wrk-CASE-ROUND.txt${H2_COOKIE:+ (h2load: h2load-CASE-ROUND.txt)}. Figures from a shared 2-core machine"
  echo "with wrk, Passerelle and the echo on the same cores: compare ratios, not absolute numbers."
} | tee "$OUT_DIR/results.md"
