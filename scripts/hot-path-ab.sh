#!/usr/bin/env bash
# Hot-path A/B of two commits in one process (scripts/hot-path-ab.rs):
# interleaved timings of try_get+drop, get().await+drop and two pools' try_get, and, when
# valgrind is installed, instructions per cycle (callgrind), which do not
# swing with the machine.
#
#   scripts/hot-path-ab.sh A B [rounds]      # e.g. 9148c30 HEAD
#
# A caution learned here: at ~20 ns per cycle, code layout alone moves
# the timings by up to 30% between builds of identical code (a rename
# did it on the 2-core EPYC VM); read timings next to the instruction
# counts, and distrust a timing difference that the counts do not show.
set -euo pipefail
cd "$(dirname "$0")/.."
a="$1"; b="$2"; rounds="${3:-3000}"
work="${AB_DIR:-target/hot-path-ab}"
mkdir -p "$work"
for side in a b; do
  rev=$([ "$side" = a ] && echo "$a" || echo "$b")
  dir="$work/tree-$side"
  rm -rf "$dir"; mkdir -p "$dir"
  git archive "$rev" | tar -x -C "$dir"
  # Two packages named latchless in one build need different versions.
  sed -i "0,/^version = .*/s//version = \"0.0.$([ "$side" = a ] && echo 1 || echo 2)\"/" "$dir/Cargo.toml"
done
mkdir -p "$work/harness/src"
cp scripts/hot-path-ab.rs "$work/harness/src/main.rs"
cat > "$work/harness/Cargo.toml" <<TOML
[package]
name = "hot-path-ab"
version = "0.0.0"
edition = "2024"
publish = false
[dependencies]
la = { path = "../tree-a", package = "latchless" }
lb = { path = "../tree-b", package = "latchless" }
tokio = { version = "1", features = ["rt-multi-thread", "time"] }
crossbeam-queue = "0.3"
[profile.release]
debug = true
codegen-units = 1
[workspace]
TOML
(cd "$work/harness" && cargo build --release -q)
bin="$work/harness/target/release/hot-path-ab"
echo "A = $a ($(git rev-parse --short "$a")), B = $b ($(git rev-parse --short "$b")), $rounds rounds"
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
