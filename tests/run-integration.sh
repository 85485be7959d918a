#!/usr/bin/env bash
# Integration tests: Passerelle (target/release/passerelle) against a real OpenID Provider (oidc-provider),
# a recording upstream and a scripted person, all on 127.0.0.1; then a real browser (tests/browser/: Debian's
# Chromium driven by playwright-core) signing in through a ProConnect-like provider.
#
#   cargo build --release && tests/run-integration.sh [extra node --test args, e.g. --test-name-pattern='\(a\)']
#
# PASSERELLE_BIN overrides the binary. Node's test runner ends with a summary (tests / pass / fail).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f tests/package-lock.json ]; then
  npm ci --prefix tests --no-audit --no-fund
else
  npm install --prefix tests --no-audit --no-fund
fi

bin="${PASSERELLE_BIN:-target/release/passerelle}"
if [ ! -x "$bin" ]; then
  echo "run-integration: $bin not found or not executable; build it first (cargo build --release)" >&2
  exit 1
fi

# The scenarios run on Node 22 LTS, which oidc-provider supports, installed from the npm registry with the other
# packages (npm package `node`): the system's node (Debian's 18 or 20) only runs npm.
node=tests/node_modules/.bin/node
[ -x "$node" ] || { echo "run-integration: $node missing after npm ci" >&2; exit 1; }

mkdir -p tests/output
# One run, one summary: the integration scenarios, then the real-browser test (Chromium at /usr/bin/chromium;
# skipped with a message when it is absent, except with CI=true where it fails).
exec "$node" --test --test-reporter=spec "$@" tests/integration/*.test.mjs tests/browser/*.test.mjs
