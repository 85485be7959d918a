#!/usr/bin/env bash
# Before/after in one run: bench/run.sh on two binaries, alternated, so that what else the machine does hits
# both alike; then the medians side by side.
#
#   bash bench/compare.sh OLD_BINARY NEW_BINARY
#   COMPARE_RUNS=5 BENCH_ROUNDS=2 BENCH_DURATION=6s bash bench/compare.sh /tmp/passerelle-main target/release/passerelle
#
# Each run of bench/run.sh measures its own baseline (the echo upstream directly), so every figure compared
# here is either a ratio within one run (public / direct, auth / direct) or the CPU time Passerelle's proxy
# threads spent per request, the figure least sensitive to neighbours. Runs go old, new, old, new, ...
#
# Environment: COMPARE_RUNS (default 3) runs of each binary; BENCH_* are passed on to bench/run.sh.
# Writes bench/output/compare.md and keeps each run's table as bench/output/compare-{old,new}-N.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=bench/output
RUNS=${COMPARE_RUNS:-3}

[ $# -eq 2 ] || { echo "usage: bash bench/compare.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
declare -A BIN=([old]=$1 [new]=$2)
for label in old new; do
  [ -x "${BIN[$label]}" ] || { echo "compare: ${BIN[$label]} is not an executable" >&2; exit 2; }
done
mkdir -p "$OUT_DIR"

# One figure of a run's table: case (direct, public, auth, api-401) and column (rps or cpu).
figure() { # file case column
  awk -F'|' -v c="$2" -v col="$3" '$2 ~ "\\) " c " *$" { v = (col == "rps") ? $4 : $7; gsub(/ /, "", v); print v }' "$1"
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A SERIES # "label key" -> space-separated values, one per run
for run in $(seq "$RUNS"); do
  for label in old new; do
    echo "==> run $run/$RUNS: $label (${BIN[$label]})" >&2
    PASSERELLE_BIN=${BIN[$label]} bash bench/run.sh >"$OUT_DIR/compare-$label-$run.log" 2>&1 \
      || { echo "compare: bench/run.sh failed for $label, see $OUT_DIR/compare-$label-$run.log" >&2; exit 1; }
    f="$OUT_DIR/compare-$label-$run.md"
    cp "$OUT_DIR/results.md" "$f"
    direct=$(figure "$f" direct rps)
    for c in public auth api-401; do
      SERIES[$label rps-$c]+="$(awk -v a="$(figure "$f" "$c" rps)" -v d="$direct" 'BEGIN { printf "%.3f", a / d }') "
      SERIES[$label cpu-$c]+="$(figure "$f" "$c" cpu) "
    done
  done
done

{
  echo "# Passerelle before/after"
  echo
  echo "- old: ${BIN[old]} ($(stat -c %y "${BIN[old]}" | cut -d. -f1))"
  echo "- new: ${BIN[new]} ($(stat -c %y "${BIN[new]}" | cut -d. -f1))"
  echo "- $RUNS alternated runs of bench/run.sh each (BENCH_ROUNDS=${BENCH_ROUNDS:-3}, BENCH_DURATION=${BENCH_DURATION:-10s}); medians over runs"
  echo
  echo "| figure | old | new | new / old | per run (old; new) |"
  echo "|---|---:|---:|---:|---|"
  for key in rps-public rps-auth rps-api-401 cpu-public cpu-auth cpu-api-401; do
    # shellcheck disable=SC2086
    o=$(median ${SERIES[old $key]}); n=$(median ${SERIES[new $key]})
    case $key in
      rps-*) what="requests/s, ${key#rps-} / direct" ;;
      cpu-*) what="proxy CPU µs/request, ${key#cpu-}" ;;
    esac
    printf '| %s | %s | %s | %s | %s; %s |\n' "$what" "$o" "$n" \
      "$(awk -v a="$n" -v b="$o" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" "${SERIES[old $key]% }" "${SERIES[new $key]% }"
  done
  echo
  echo "requests/s ratios: higher is better; CPU per request: lower is better. A new / old within the spread of"
  echo "the per-run figures is no change."
} | tee "$OUT_DIR/compare.md"
