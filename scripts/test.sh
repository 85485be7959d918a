#!/usr/bin/env bash
# Runs every test of Passerelle: Rust unit tests, then the integration tests that start the real binary
# against a real OpenID provider (the npm package oidc-provider), and a real-browser sign-in in Debian's Chromium.
# Installs what it needs (cmake, node, chromium, nginx, redis from apt; npm packages from tests/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)          # pingora-core builds zlib-ng
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v openssl >/dev/null || need_apt+=(openssl)     # throw-away CAs: the CONNECT tunnel, TLS upstreams, Redis TLS
command -v unshare >/dev/null || need_apt+=(util-linux)  # a private /etc/hosts for the DNS-change test (upstreams.test.mjs)
command -v curl >/dev/null || need_apt+=(curl)           # curl --http2 / --http1.1 against the TLS listener (h2.test.mjs)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)          # the real-browser test (tests/browser/), via playwright-core
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)         # forward-auth through a real nginx auth_request (tests/integration/boundary.test.mjs)
[ -x /usr/bin/redis-server ] || need_apt+=(redis-server)  # shared sessions (tests/integration/sessions*.test.mjs)
[ -x /usr/bin/redis-sentinel ] || need_apt+=(redis-sentinel)
[ -x /usr/bin/redis-cli ] || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "==> building (release)"
cargo build --release --locked

echo "==> unit tests"
cargo test --release --locked

echo "==> integration tests"
bash tests/run-integration.sh
