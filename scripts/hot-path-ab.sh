#!/usr/bin/env bash
# Hot-path A/B of two commits in one process (scripts/hot-path-ab.rs):
# interleaved timings of try_get+drop, get().await+drop and two pools' try_get, and, when
# valgrind is installed, instructions per cycle (callgrind), which do not
# swing with the machine.
#
#   scripts/hot-path-ab.sh A B [rounds]      # e.g. 9148c30 HEAD (B may be WORKTREE)
#
# A caution learned here: at ~20 ns per cycle, code layout alone moves
# the timings by up to 30% between builds of identical code (a rename
# did it on the 2-core EPYC VM); read timings next to the instruction
# counts, and distrust a timing difference that the counts do not show.
# Under callgrind a run can pause for seconds (it runs one thread at a
# time): the `two` cycle then meets connections due for a pre-ping, which
# `try_get` leaves to `get`, so it takes a miss through `get`.
set -euo pipefail
cd "$(dirname "$0")/.."
a="$1"; b="$2"; rounds="${3:-3000}"
work="${AB_DIR:-target/hot-path-ab}"
mkdir -p "$work"
. scripts/harness.sh
prepare_tree a "$a"
prepare_tree b "$b"
build_harness hot-path-ab \
  'la = { path = "../tree-a", package = "latchless" }' \
  'lb = { path = "../tree-b", package = "latchless" }' \
  'tokio = { version = "1", features = ["rt-multi-thread", "time"] }' \
  'crossbeam-queue = "0.3"'
short() { git rev-parse --short "$1" 2>/dev/null || echo "$1"; }
echo "A = $a ($(short "$a")), B = $b ($(short "$b")), $rounds rounds"
"$bin" try "$rounds"
"$bin" get "$rounds"
"$bin" aget "$rounds"
"$bin" two "$rounds"
if command -v valgrind >/dev/null; then
  ir() { ITERS=$3 valgrind --tool=callgrind --toggle-collect='hot_path_ab::main' \
      --callgrind-out-file="$work/cg.out" "$bin" "$1" "$2" >/dev/null 2>&1
    callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; }
  for what in try get aget two; do
    for side in a b; do
      lo=$(ir "$side" "$what" 500000); hi=$(ir "$side" "$what" 2500000)
      echo "instructions per $what cycle, $side: $(( (hi - lo) / 2000000 ))"
    done
  done
fi
