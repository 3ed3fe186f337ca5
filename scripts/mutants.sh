#!/usr/bin/env bash
# Mutation testing with cargo-mutants (installed from crates.io if
# missing): how many small breakages of the code the tests notice.
# CONTRIBUTING.md, "Mutation testing", has the scores and the argued
# survivors. Not in CI: a file takes minutes to hours on two cores.
#
#   scripts/mutants.sh src/lifecycle.rs src/connector.rs   # mutants in these files
#   scripts/mutants.sh --diff main                          # in the lines changed since main
#   scripts/mutants.sh --list src/tid.rs                    # list them, run nothing
#
# Environment:
#   MUTANTS_TESTS     the test targets run against each mutant (cargo test
#                     arguments; default: the unit tests and the integration
#                     tests of the lifecycle, faults, refill, accounting,
#                     errors, invariants, outages and strength files, no doc
#                     tests)
#   MUTANTS_FEATURES  features to build with (e.g. tcp,tls for the managers)
#   MUTANTS_OUT       where cargo-mutants writes mutants.out (default
#                     target/mutants, ignored by git)
#   MUTANTS_TIMEOUT   seconds a mutant's tests may run (default: cargo-mutants
#                     derives it from the unmutated baseline run)
#   MUTANTS_ARGS      anything else for cargo-mutants (e.g. "--re judge")
#   MUTANTS_TARGET    the target directory of the mutants' builds (default
#                     target/mutants-build): its own, so that a run does not
#                     hold the lock on yours; the dependencies are built
#                     into it once, and reused by every later run
#
# Each mutant is built in a copy of the tree and tested with the selected
# targets, one at a time (`-j 1`: a second job only fights the first for
# two cores). The baseline (the tests on the unmutated
# tree) always runs: it sets the timeout and proves the selection passes,
# without which every mutant would count as caught.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

out="${MUTANTS_OUT:-target/mutants}"
export CARGO_TARGET_DIR="${MUTANTS_TARGET:-$PWD/target/mutants-build}"
tests="${MUTANTS_TESTS:---lib --test lifecycle --test faults --test refill --test accounting --test errors --test invariants --test outages --test strength}"
args=(--test-tool cargo -j 1 --output "$out")
mkdir -p "$out" # cargo-mutants creates mutants.out, not its parents
[ -n "${MUTANTS_FEATURES:-}" ] && args+=(--features "$MUTANTS_FEATURES")
[ -n "${MUTANTS_TIMEOUT:-}" ] && args+=(--timeout "$MUTANTS_TIMEOUT")

list=0
case "${1:-}" in
  --diff)
    base="${2:?usage: scripts/mutants.sh --diff COMMIT}"
    git diff "$base" -- src > "$out/in.diff"
    if [ ! -s "$out/in.diff" ]; then echo "no change under src/ since $base"; exit 0; fi
    args+=(--in-diff "$out/in.diff")
    ;;
  --list)
    list=1; shift
    ;&
  *)
    [ $# -gt 0 ] || { sed -n 2,11p "$0"; exit 2; }
    for f in "$@"; do args+=(-f "$f"); done
    ;;
esac
# shellcheck disable=SC2206 # word splitting is wanted
args+=(${MUTANTS_ARGS:-})

if [ $list = 1 ]; then
  exec cargo mutants --list "${args[@]}"
fi

start=$(date +%s)
# The targets go to every cargo command (`--cargo-arg`), the build
# included: after `--` they would only narrow the test run, and each
# mutant would still build every test target of the crate.
for a in $tests; do args+=(--cargo-arg="$a"); done
cargo mutants "${args[@]}" || true # 2 = some missed, 3 = some timed out
secs=$(( $(date +%s) - start ))

# The score, per file and in all, from cargo-mutants' lists.
mo="$out/mutants.out"
[ -f "$mo/outcomes.json" ] || { echo "no outcomes in $mo (the baseline failed? see $mo/log)"; exit 1; }
echo
echo "score (viable = caught + timeout + missed; unviable: does not build)"
printf '%-28s %7s %7s %7s %9s %9s\n' file caught timeout missed unviable caught%
for f in $( (cat "$mo"/caught.txt "$mo"/missed.txt "$mo"/timeout.txt "$mo"/unviable.txt 2>/dev/null || true) | cut -d: -f1 | sort -u) ALL; do
  count() {
    if [ "$f" = ALL ]; then (cat "$mo/$1.txt" 2>/dev/null || true) | grep -c . || true
    else (cat "$mo/$1.txt" 2>/dev/null || true) | grep -c "^$f:" || true; fi
  }
  c=$(count caught); t=$(count timeout); m=$(count missed); u=$(count unviable)
  v=$((c + t + m))
  pct=$([ $v -gt 0 ] && echo "$(( (100 * (c + t)) / v ))%" || echo -)
  printf '%-28s %7s %7s %7s %9s %9s\n' "$f" "$c" "$t" "$m" "$u" "$pct"
done
echo "took ${secs}s; survivors in $mo/missed.txt, each mutant's log in $mo/log/"
