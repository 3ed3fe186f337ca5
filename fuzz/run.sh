#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each:
#   fuzz/run.sh 1200
# Needs the nightly toolchain; installs cargo-fuzz if it is missing.
# New corpus entries stay in fuzz/corpus/<target>/ (commit the useful
# ones); a crash is saved under fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
targets="${FUZZ_TARGETS:-pool_ops wheel builder}"
for t in $targets; do
  echo "=== fuzz $t for ${secs}s"
  # A scratch copy of the corpus keeps the checked-in seeds unchanged by
  # short CI runs; FUZZ_KEEP=1 writes new inputs into the corpus itself.
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then corpus="corpus/$t"; else
    corpus="$(mktemp -d)"; cp corpus/"$t"/* "$corpus"/; fi
  log="$(mktemp)"
  status=0
  cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "^#[0-9]+ +(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss)|cov: " "$log" | tail -n 6 || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz/run.sh: $t failed (exit $status); see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
