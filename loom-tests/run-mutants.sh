#!/usr/bin/env bash
# Proves that every loom model can fail: runs each model against the bug
# (mutant) it must catch, in its own process (loom aborts on a deadlock),
# and fails unless loom reports that bug. Also runs every model with the
# mutant hooks compiled in but none switched on, which must pass.
#
# Mutants are compiled in by --cfg latchless_mutants and switched on, one
# at a time, by LATCHLESS_MUTANT=<name> (see src/sync.rs), so one build
# serves every run.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg latchless_loom --cfg latchless_mutants"
# Loom runs with debug assertions on (as .ci/loom does).
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom-mutants}"

pairs=(
  "two_threads_acquire_and_release_one_slot:relaxed_handover"
  "reservation_races_at_the_cap_with_a_failing_connect:leak_place"
  "release_races_waiter_registration:lost_wakeup"
  "waiter_cancelled_while_being_served:cancel_drops_grant"
  "waiter_cancelled_while_being_served:cancel_counted_late"
  "close_races_acquire_and_release:close_no_recheck"
  "maintenance_expires_a_slot_while_a_thread_acquires_it:claim_without_cas"
  "two_threads_race_for_the_maintenance_flag:maintenance_no_flag"
  "waiters_are_served_in_arrival_order:lifo_waiters"
  "release_races_last_pool_drop:release_without_core_ref"
  "release_to_a_waiter_races_last_pool_drop:release_without_core_ref"
  "release_races_last_pool_drop:drop_ignores_hazards"
  "release_to_a_waiter_races_last_pool_drop:drop_ignores_hazards"
  "sweeper_times_out_a_waiter_while_a_release_serves_it:sweep_unlocked"
  "sweeper_times_out_a_waiter_while_it_is_cancelled:sweep_without_cas"
  "two_releases_serve_two_waiters_through_a_deposit:deposit_unflagged"
  "two_releases_serve_two_waiters_through_a_deposit:look_skips_lock"
  "a_thread_with_an_empty_home_steals_while_the_owner_pops_and_pushes:steal_without_swap"
  "release_races_a_registration_that_compacts_a_dead_waiter:lost_wakeup"
  "a_compaction_keeps_the_order_against_a_racing_release:compact_drops_live"
  "a_waiter_at_the_head_keeps_its_turn_against_a_racing_release:compact_drops_live"
  "releases_race_a_shrink:shrink_no_recheck"
  "two_resizes_race_releases:split_cap_store"
  "two_probes_race_a_release_and_a_get_while_the_backend_is_down:two_probes"
  "an_owner_takes_back_its_parked_connection_while_another_thread_steals_it:steal_without_cas"
  "an_owner_takes_back_its_parked_connection_while_another_thread_steals_it:relaxed_handover"
  "a_parked_release_races_waiter_registration:recheck_skips_parked"
  "a_parked_release_races_waiter_registration:lost_wakeup"
  "a_parked_release_races_waiter_registration:park_without_fence"
  "release_races_waiter_registration:recheck_skips_parked"
  "a_starved_get_on_one_key_is_served_by_a_release_on_another:budget_unchecked"
  "a_starved_get_on_one_key_is_served_by_a_release_on_another:release_ignores_starved"
  "a_token_freed_while_a_get_starves_reaches_it:put_back_no_recheck"
  "two_releases_race_for_the_last_idle_place:idle_check_then_add"
  "a_keepalive_check_races_a_get_and_a_close:keepalive_put_back_blind"
  "a_keepalive_check_races_a_get_and_a_close:claim_without_cas"
)

cargo test -q -p loom-tests --release --no-run || exit 1
echo "--- models with the mutant hooks compiled in, none on (must pass)"
if ! cargo test -q -p loom-tests --release --test loom_pool; then
  echo "run-mutants.sh: a model fails without any mutant" >&2
  exit 1
fi
failed=0
for pair in "${pairs[@]}"; do
  model="${pair%%:*}"
  mutant="${pair##*:}"
  log="$(mktemp)"
  if LATCHLESS_MUTANT="$mutant" cargo test -q -p loom-tests --release --test loom_pool \
       "$model" -- --exact >"$log" 2>&1; then
    echo "MISSED  $mutant: model $model passed with the bug in (a defect)"
    failed=1
  else
    if grep -q "rt/object.rs.*\|index out of bounds" "$log"; then
      # loom followed an atomic's handle read from freed memory.
      why="use after free: loom read an atomic out of freed memory"
    elif grep -q "loom.*/arc.rs\|Arc is already released" "$log"; then
      # loom's Arc lost track of an object: a reference taken twice.
      why="use after free: loom saw an Arc's object taken after its last release"
    else
      # \b: not the `call_once` of a backtrace line. Else the message
      # under the first "panicked at".
      why=$(grep -m1 -oE "Causality violation: [^.]*|deadlock|assertion .*|[a-z ,]*\b(lost|back|once|first)\b[a-z ,]*$" "$log") ||
        why=$(grep -m1 -A1 "panicked at" "$log" | sed -n 2p)
      [ -n "$why" ] || why="test failed"
    fi
    echo "caught  $mutant by $model ($why)"
  fi
  rm -f "$log"
done
exit "$failed"
