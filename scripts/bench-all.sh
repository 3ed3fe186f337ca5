#!/usr/bin/env bash
# Runs the comparison benches of the latchless-benches crate
# (benches/benches/{peers,e2e_tcp,tail}.rs), records the machine and
# toolchain, and regenerates the results section of BENCHMARKS.md and the
# plot docs/bench.svg with its bench-report binary
# (benches/src/bin/bench-report.rs).
#
#   scripts/bench-all.sh              # full run (roughly 5-10 min on 2 cores)
#   QUICK=1 scripts/bench-all.sh      # smoke run (~2 min): short criterion
#                                     # times, fewer tail-latency samples
#   TAIL_THREADS=1,2,4,8,16 TAIL_WORKERS=match scripts/bench-all.sh
#                                     # scaling curve on a bigger machine
#
# Results: target/criterion/ (criterion), target/bench-results/ (tail.json,
# env.txt, skipped-*.txt). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK="${QUICK:-0}"
TAIL_THREADS="${TAIL_THREADS:-1,2,4,8}"
TAIL_WORKERS="${TAIL_WORKERS:-2}"
results=target/bench-results

if [[ "$QUICK" == 1 ]]; then
    criterion_args=(--warm-up-time 0.2 --measurement-time 0.5 --sample-size 10)
    tail_ops=2000
else
    criterion_args=()
    tail_ops=20000
fi

# Only this run's results may reach the report.
rm -rf target/criterion/{peers_uncontended,contended_below,contended_above,threads_below,threads_above,e2e_tcp,e2e_tcp_concurrent} "$results"
mkdir -p "$results"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "quick: $QUICK"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "criterion_args: ${criterion_args[*]:-(defaults set in the benches)}"
    echo "tail_args: --threads $TAIL_THREADS --workers $TAIL_WORKERS --ops $tail_ops"
} > "$results/env.txt"

cargo bench -p latchless-benches --bench peers -- "${criterion_args[@]}"
cargo bench -p latchless-benches --bench e2e_tcp -- "${criterion_args[@]}"
cargo bench -p latchless-benches --bench tail -- --threads "$TAIL_THREADS" --workers "$TAIL_WORKERS" --ops "$tail_ops"

# The bench profile: reuses the library the benches were just built with.
cargo run --profile bench -q -p latchless-benches --bin bench-report
