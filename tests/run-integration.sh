#!/usr/bin/env bash
# Integration tests: Passerelle (target/release/passerelle) against a real OpenID Provider (oidc-provider),
# a recording upstream and a scripted person, all on 127.0.0.1.
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

mkdir -p tests/output
exec node --test --test-reporter=spec "$@" tests/integration/
