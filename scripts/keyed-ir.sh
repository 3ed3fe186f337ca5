#!/usr/bin/env bash
# Instructions per keyed hit (callgrind; they do not swing with the
# machine as times do): `try_get` + drop over K keys of one `KeyedPool` in
# turn, against K plain `Pool`s in turn, on one thread, for K = 1, 2, 6
# and 12 (a thread keeps its last four keys, `last_key.rs`: six and twelve
# go through the map). The checkout as it is (scripts/keyed-ir.rs).
#
#   scripts/keyed-ir.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "keyed-ir: needs valgrind" >&2; exit 1; }
work="${IR_DIR:-target/keyed-ir}"
. scripts/harness.sh
build_harness keyed-ir \
  "latchless = { path = \"$PWD\" }" \
  'tokio = { version = "1", features = ["rt", "time"] }'
ir() { ITERS=$3 valgrind --tool=callgrind --toggle-collect='keyed_ir::keys' \
    --toggle-collect='keyed_ir::pools_in_turn' --callgrind-out-file="$work/cg.out" \
    "$bin" "$1" "$2" >/dev/null 2>&1
  callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; }
for k in 1 2 6 12; do
  for what in pools keys; do
    lo=$(ir "$what" "$k" 20000); hi=$(ir "$what" "$k" 100000)
    echo "instructions per try_get + drop, $k $what in turn: $(( (hi - lo) / (80000 * k) ))"
  done
done
