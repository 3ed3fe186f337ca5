# Sourced by the measuring scripts (hot-path-ab.sh, wait-ab.sh,
# keyed-ir.sh), from the repository root, with $work set to their scratch
# folder.

# prepare_tree SIDE REV: the latchless of REV (a commit, or WORKTREE for
# the checkout as it is, uncommitted changes included) in $work/tree-SIDE,
# SIDE a or b; two packages named latchless in one build need different
# versions, so a's is 0.0.1 and b's 0.0.2.
prepare_tree() {
  local side="$1" rev="$2" dir="$work/tree-$1"
  rm -rf "$dir"; mkdir -p "$dir"
  if [ "$rev" = WORKTREE ]; then
    git ls-files -co --exclude-standard | tar -cT - | tar -x -C "$dir"
  else
    git archive "$rev" | tar -x -C "$dir"
  fi
  sed -i "0,/^version = .*/s//version = \"0.0.$([ "$side" = a ] && echo 1 || echo 2)\"/" "$dir/Cargo.toml"
}

# build_harness NAME DEP...: scripts/NAME.rs built as a one-file crate in
# $work/harness, release with line tables and one codegen unit (so that
# callgrind names lines, and a build's layout moves less between runs),
# each DEP a line of its [dependencies]; sets $bin to the binary.
build_harness() {
  local name="$1"; shift
  mkdir -p "$work/harness/src"
  cp "scripts/$name.rs" "$work/harness/src/main.rs"
  {
    printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2024"\npublish = false\n' "$name"
    printf '[dependencies]\n'
    printf '%s\n' "$@"
    printf '[profile.release]\ndebug = true\ncodegen-units = 1\n[workspace]\n'
  } > "$work/harness/Cargo.toml"
  (cd "$work/harness" && cargo build --release -q)
  bin="$work/harness/target/release/$name"
}
