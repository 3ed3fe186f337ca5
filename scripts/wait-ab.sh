#!/usr/bin/env bash
# Waiting-path A/B of two commits and the fair-semaphore floor in one
# process (scripts/wait-ab.rs): per-acquire latency percentiles with more
# tasks than connections, rounds interleaved in random order, and, when
# valgrind is installed, instructions per waiting acquire (callgrind, on a
# current-thread runtime), which do not swing with the machine.
#
#   scripts/wait-ab.sh A B [TASKS/POOL] [rounds] [ops]   # e.g. HEAD~1 HEAD 4/2 (B may be WORKTREE)
set -euo pipefail
cd "$(dirname "$0")/.."
a="$1"; b="$2"; tp="${3:-4/2}"; rounds="${4:-20}"; ops="${5:-5000}"
work="${AB_DIR:-target/wait-ab}"
mkdir -p "$work"
. scripts/harness.sh
prepare_tree a "$a"
prepare_tree b "$b"
build_harness wait-ab \
  'la = { path = "../tree-a", package = "latchless" }' \
  'lb = { path = "../tree-b", package = "latchless" }' \
  'tokio = { version = "1", features = ["rt-multi-thread", "time", "sync"] }'
echo "A = $a, B = $b"
"$bin" "$tp" "$rounds" "$ops"
if command -v valgrind >/dev/null; then
  ir() { ITERS=$2 valgrind --tool=callgrind --toggle-collect='wait_ab::main' \
      --callgrind-out-file="$work/cg.out" "$bin" "$1" "$tp" >/dev/null 2>&1
    callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; }
  t=${tp%/*}
  for side in floor floor-timer a b; do
    lo=$(ir "$side" 20000); hi=$(ir "$side" 100000)
    echo "instructions per acquire (current thread, $tp), $side: $(( (hi - lo) / (80000 * t) ))"
  done
fi
