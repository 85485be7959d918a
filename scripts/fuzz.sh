#!/usr/bin/env bash
# Long fuzzing runs of the targets in src/fuzzing.rs (CI runs them briefly through `cargo test`).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60
#
# With a nightly toolchain: coverage-guided libFuzzer runs (cargo-fuzz, installed when missing), one per
# target, seeded from the example configurations; the corpora grow in fuzz/corpus/ and any crash is kept in
# fuzz/artifacts/. Without nightly: the proptest driver with many more cases (PASSERELLE_FUZZ_CASES).
# Either way the script ends with the number of executions per target, and fails if a property broke.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets=(cookie_codec session_cookies return_url request_path config_text)

if ! command -v cmake >/dev/null 2>&1; then
  echo "fuzz: installing cmake (pingora-core builds zlib-ng)" >&2
  apt-get update -qq && apt-get install -y -qq cmake >/dev/null
fi

if cargo +nightly --version >/dev/null 2>&1; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  mkdir -p fuzz/corpus/config_text
  cp config.example.toml deploy/examples/*.toml fuzz/corpus/config_text/ 2>/dev/null || true
  summary=()
  for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log="$(mktemp)"
    echo "fuzz: $t for ${seconds}s (libFuzzer)" >&2
    if ! cargo +nightly fuzz run --release "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=8192 2>"$log"; then
      tail -60 "$log" >&2
      echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
      exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    summary+=("$t: ${runs:-?} executions in ${seconds}s (libFuzzer)")
    rm -f "$log"
  done
  printf '%s\n' "${summary[@]}"
else
  # About 20,000 proptest cases per second per target on one core; scale the cases to the time asked.
  cases=$(( seconds * 20000 ))
  echo "fuzz: no nightly toolchain; proptest driver with $cases cases per generator" >&2
  PASSERELLE_FUZZ_CASES="$cases" cargo test --release --locked --test fuzz_targets -- --nocapture --test-threads=1 2>&1 \
    | grep -E '^fuzz target [a-z_]+: |test result|panicked|minimal failing' 
fi
