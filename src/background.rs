//! The pool's background work on Tokio: the ticker task (a maintenance
//! pass every period, and the deadline sweep of parked waiters), the
//! `min_idle` refill, and a busy thread's cooperative share of
//! maintenance. What a pass does is `maintenance.rs`'s; this module decides
//! who runs it, where, and when.
//!
//! # Which runtime
//!
//! Background work runs on the runtime of whoever starts it, never on one
//! remembered from earlier: a pool outlives runtimes (a `static` pool
//! shared by `#[tokio::test]`s sees one per test), a handle cannot tell
//! whether its runtime is gone, and what is spawned on a runtime that is
//! gone is dropped unrun. So:
//!
//! - The ticker is started on the current runtime: by `build` or a `get`
//!   that finds nothing idle, and, once the runtime it ran on has dropped
//!   it, by any pass run inside a runtime (`Pool::maintain`, a busy
//!   thread's share): a later runtime takes over.
//! - Refills are spawned on the current runtime. A pass outside any
//!   runtime leaves them to the ticker's next pass, at most one period
//!   later. With `background(false)` nothing is spawned at all.
//! - Every task owns its count from the spawn on ([`Ticking`] clears
//!   `ticking`, [`Refilling`] gives back its share of `refilling`), so a
//!   task that a runtime drops unpolled gives it back: no count leaks, and
//!   no later runtime is locked out.
//!
//! # Invariants kept
//!
//! - The ticker holds no strong reference to the core across an await.
//! - A refill opens through the one connect path (`connector::open`), so
//!   it is counted as connecting, counts what it closes, and stamps what it
//!   opens for `check_after_idle` like any connection going idle.
//! - Refills and `warm_up`, side by side, never open more than `min_idle`
//!   while nothing is taken: each connect holds an [`IdleClaim`], and
//!   claims count as idle-to-be for every claimer.
//! - A refill connect that fails, times out or panics backs off like any
//!   failed connect; a panic costs neither a place nor the refill task.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use crate::Manager;
use crate::breaker::Probe;
use crate::connector::admit;
use crate::core::{Core, Owner};
use crate::guards::PlaceGuard;
use crate::health::{Observed, Sampling};
use crate::lifetime::{Retired, Settle};
use crate::maintenance::MAX_REFILL_CONNECTS;
use crate::sync::{AtomicUsize, Ordering};

/// A busy thread's share of maintenance (every 64th release on a thread,
/// `Drop for Pooled`): reads the real clock and, if a pass is due, runs
/// one, then starts what the pass calls for on the current runtime.
#[cold]
#[inline(never)]
pub(crate) fn cooperative_tick<M: Manager>(core: &Core<M>, retired: &mut Retired) {
    let now = core.clock.now();
    if core.maintenance.is_due(now) {
        housekeep(core, now, retired);
    }
}

/// One round of housekeeping at `now`, whoever runs it (the ticker, a busy
/// thread, `Pool::maintain`): a maintenance pass, a rescue (`Core::rescue`), the
/// `min_idle` refill and a health sample.
pub(crate) fn housekeep<M: Manager>(core: &Core<M>, now: u64, retired: &mut Retired) {
    core.maintenance.pass(core, now, retired);
    core.rescue(retired);
    probe_if_due(core);
    refill(core);
    drop(sample(core, now, false));
}

/// Samples the health monitor at `now` (ticks): when `force`d
/// (`Pool::health` / `Pool::sizing`, which wait for the lock), else at
/// most once a second and only if the lock is free (maintenance). Offers
/// the asymmetric fence a relax at most once a second either way.
pub(crate) fn sample<M: Manager>(
    core: &Core<M>,
    now: u64,
    force: bool,
) -> Option<std::sync::MutexGuard<'_, Sampling>> {
    use std::sync::atomic::Ordering as O;
    let mut sampling = core.watch.lock(now, force)?;
    if sampling.relax_due(now) {
        // A pool that had no waiter since the last look goes back to
        // releases without a fence (`asym.rs`).
        core.idle.relax();
    }
    let hits = core.slots.hits();
    let state = core.state();
    let Sampling {
        monitor,
        wait,
        hold,
        ..
    } = &mut *sampling;
    core.counters
        .wait_and_hold_into(hits, state.in_use, wait, hold);
    let r = |c: &std::sync::atomic::AtomicU64| c.load(O::Relaxed);
    let c = &core.counters;
    monitor.sample(
        now,
        &Observed {
            in_use: state.in_use,
            max_size: core.slots.cap(),
            wait,
            hold_count: hold.count(),
            hold_sum_ns: hold.sum(),
            failed_acquires: r(&c.timeouts) + r(&c.exhausted),
            connects: r(&c.opened),
            connect_failures: r(&c.connect_errors) + r(&c.connect_timeouts),
            // The restart epoch moves on a failed check (a failed connect
            // counts as a connect failure already).
            restart_epoch: r(&c.check_failures),
            down_after: if core.breaker.is_down() {
                core.breaker.failures().max(1)
            } else {
                0
            },
        },
    );
    Some(sampling)
}

/// Starts the next probe on the current runtime if the backend is down
/// and the probe is due (`breaker.rs`): from housekeeping, so that an
/// outage ends without traffic, and from a `get` that failed fast. Outside
/// a runtime it does nothing (the next caller inside one starts it).
pub(crate) fn probe_if_due<M: Manager>(core: &Core<M>) {
    if !core.breaker.is_down() || core.closed.load(Ordering::Relaxed) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(owner) = core.weak.upgrade() else {
        return;
    };
    if core.breaker.claim_probe(core.clock.now()) == Probe::Run {
        handle.spawn(crate::connector::probe(owner));
    }
}

/// Ends the background task's duties when it ends or its runtime drops
/// it: stops sweeping waiter deadlines (waiters arm their own timers),
/// then clears `ticking`, so that the next `get` or pass on a live runtime
/// starts a new task and, until then, checks read the real clock.
///
/// Made before the spawn and moved into the task's future, so that a
/// runtime that drops the task without ever polling it (one that is
/// shutting down, or shut down while its handle lives on) still clears
/// `ticking`: otherwise no later runtime could take over, and the hot path
/// would keep trusting a cached clock that nobody refreshes.
struct Ticking<M: Manager> {
    weak: Weak<Owner<M>>,
    /// Whether it has started sweeping waiter deadlines.
    sweeping: bool,
}

impl<M: Manager> Drop for Ticking<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.weak.upgrade() {
            if self.sweeping {
                let mut retired = Settle::new(&shared);
                shared.waiters.stop_sweeping(&mut spare(&shared));
                shared.rescue(&mut retired);
            }
            shared.maintenance.ticking.store(false, Ordering::Relaxed);
            if shared.lifecycle.ticks.uses_clock {
                shared.clock.cache(false);
            }
        }
    }
}

/// The background task: a maintenance pass every `period`, and the
/// deadlines of parked waiters (`waiters.rs`, "Time out"), while the pool
/// lives. Holds no strong reference across an await.
async fn ticker<M: Manager>(mut ticking: Ticking<M>, period: Duration) {
    let weak = ticking.weak.clone();
    let mut next_tick = tokio::time::Instant::now() + period;
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(next_tick));
    loop {
        {
            let Some(shared) = weak.upgrade() else { return };
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            if !std::mem::replace(&mut ticking.sweeping, true) {
                shared.waiters.start_sweeping();
            }
            let now = tokio::time::Instant::now();
            let mut retired = Settle::new(&shared);
            if now >= next_tick {
                housekeep(&shared, shared.clock.now(), &mut retired);
                next_tick = now + period;
            }
            let wake_at = match sweep(&shared, true, &mut retired) {
                Some(next) => shared.clock.instant_at(next).unwrap_or(next_tick),
                // Another thread holds the line for a moment: look again.
                None => now + Duration::from_millis(1),
            };
            sleep.as_mut().reset(wake_at.min(next_tick));
        }
        std::future::poll_fn(|cx| {
            let Some(shared) = weak.upgrade() else {
                return Poll::Ready(());
            };
            if shared.waiters.kicked(cx) {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }
}

/// One sweep of waiter deadlines at the pool clock's time (`waiters.rs`,
/// "Time out"), by the sweeper (`arm`) or a one-off pass; the earliest
/// deadline left, or `None` if another thread held the line.
pub(crate) fn sweep<M: Manager>(core: &Core<M>, arm: bool, retired: &mut Retired) -> Option<u64> {
    let swept = &core.counters.timeouts_swept;
    let next = core
        .waiters
        .sweep(core.clock.now(), swept, arm, &mut spare(core))?;
    core.rescue(retired);
    Some(next)
}

/// Where grants that nobody waits for go when the sweeper holds the
/// waiter line: back to the idle set or the free places, followed by a
/// rescue (`Core::rescue`: the re-check a shelve needs).
fn spare<M: Manager>(core: &Core<M>) -> impl FnMut(crate::waiters::Grant) + '_ {
    |g| {
        // SAFETY: a deposited grant nobody took is the serving thread's to
        // dispose of (`waiters.rs`).
        let held = unsafe { crate::release::from_grant(g) };
        core.shelve(held, core.now_for_checks());
    }
}

/// Starts the background task (and the `min_idle` refill) if a Tokio
/// runtime is present and it is not running yet. Cheap when it runs.
pub(crate) fn start_background<M: Manager>(core: &Core<M>) {
    if !core.config.background
        || core.maintenance.ticking.load(Ordering::Relaxed)
        || core.closed.load(Ordering::Relaxed)
    {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    start_ticker(core, &handle);
    spawn_refills(core, &handle);
}

/// Spawns the background task on `handle` unless one runs.
fn start_ticker<M: Manager>(core: &Core<M>, handle: &tokio::runtime::Handle) {
    if core.maintenance.ticking.swap(true, Ordering::AcqRel) {
        return;
    }
    // From now on the task keeps the hot path's reading fresh.
    if core.lifecycle.ticks.uses_clock {
        core.clock.cache(true);
    }
    // Owned by the task from here: dropped unpolled, it clears
    // `ticking` (and the caching) again.
    let ticking = Ticking {
        weak: core.weak.clone(),
        sweeping: false,
    };
    let period = Duration::from_millis(core.maintenance.period_ms);
    handle.spawn(ticker(ticking, period));
}

/// A pass's follow-up, on the current runtime: restarts the background
/// task if its runtime dropped it, and starts `min_idle` refills
/// (module docs, "Which runtime"). Outside a runtime, or with
/// `background(false)`, it does nothing.
pub(crate) fn refill<M: Manager>(core: &Core<M>) {
    if !core.config.background || core.closed.load(Ordering::Relaxed) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if !core.maintenance.ticking.load(Ordering::Relaxed) {
        start_ticker(core, &handle);
    }
    spawn_refills(core, &handle);
}

/// Starts refill connects on `handle` (at most [`MAX_REFILL_CONNECTS`]
/// at once) while fewer than `min_idle` connections are idle and places
/// are free. Spawns at most that many per call, so a runtime that drops
/// its tasks at once (shutting down) cannot keep it spinning.
fn spawn_refills<M: Manager>(core: &Core<M>, handle: &tokio::runtime::Handle) {
    let min = if core.breaker.is_down() {
        0 // the probe connects while the backend is down
    } else {
        core.config.min_idle
    };
    let mut spawned = 0;
    while min != 0 && spawned < MAX_REFILL_CONNECTS {
        let inflight = core.maintenance.refilling.load(Ordering::Relaxed);
        let connecting = core.maintenance.idle_claims.load(Ordering::Relaxed);
        if inflight >= MAX_REFILL_CONNECTS
            || core.idle_count() + connecting >= min
            || core.slots.taken() >= core.slots.cap()
        {
            return;
        }
        if core
            .maintenance
            .refilling
            .compare_exchange(inflight, inflight + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        let Some(me) = core.weak.upgrade() else {
            core.maintenance.refilling.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        // The count belongs to the task from here: a runtime that drops
        // it unpolled gives it back (a count leaked by each of
        // `MAX_REFILL_CONNECTS` dropped tasks would stop refills for good).
        handle.spawn(refill_task(Refilling(me)));
        spawned += 1;
    }
}

/// One refill task's share of `refilling`, taken before the spawn and
/// given back when the task ends or is dropped, polled or not.
struct Refilling<M: Manager>(Arc<Owner<M>>);

impl<M: Manager> Drop for Refilling<M> {
    fn drop(&mut self) {
        self.0.maintenance.refilling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connect in flight that will leave an idle connection behind: a
/// refill's or `warm_up`'s. Both count towards the same `idle_claims`, so
/// that together they never open more than their target: a claimer adds
/// its claim first, then looks at idle connections plus the claims before
/// its own, and gives the claim back if that already reaches the target.
pub(crate) struct IdleClaim<'a> {
    claims: &'a AtomicUsize,
}

impl<'a> IdleClaim<'a> {
    /// A claim towards `target` idle connections, or `None` if idle ones
    /// and the connects already claimed reach it.
    pub(crate) fn new<M: Manager>(core: &'a Core<M>, target: usize) -> Option<Self> {
        let claims = &core.maintenance.idle_claims;
        let claim = Self { claims };
        let others = claims.fetch_add(1, Ordering::Relaxed);
        // Dropped on the way out: the claim is given back.
        (core.idle_count() + others < target).then_some(claim)
    }
}

impl Drop for IdleClaim<'_> {
    fn drop(&mut self) {
        self.claims.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `fut`, turning a panic inside it into `None` (its locals, the
/// place guard among them, are dropped by the unwinding).
pub(crate) async fn caught<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(None),
        },
    )
    .await
}

/// Opens connections into free places until `min_idle` are idle. A
/// connect that fails, times out or panics is retried after a backoff
/// (`connect_backoff`, doubling up to `max_connect_backoff`, jittered).
async fn refill_task<M: Manager>(guard: Refilling<M>) {
    let shared = &guard.0;
    let mut backoff = shared.config.connect_backoff;
    loop {
        let Some(claim) = IdleClaim::new(shared, shared.config.min_idle) else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        // While connects fail, a refill connects only if it is the one
        // connect in flight; down, not at all (the probe does).
        let Ok(flight) = admit(shared) else {
            return;
        };
        let Some(place) = shared.reserve() else {
            return;
        };
        let place = PlaceGuard::new(shared, place);
        // One round of the connect path `get` uses (counted as connecting,
        // attempts bounded by `connect_timeout`); between rounds the place
        // goes back, so a `get` may take it.
        let deadline = tokio::time::Instant::now().checked_add(shared.config.connect_timeout);
        match caught(crate::connector::open(
            shared,
            place,
            Some(flight),
            deadline,
        ))
        .await
        {
            Some(Ok(busy)) => {
                // Straight to a waiter if one is parked, else idle.
                shared.put_back_fresh(busy, &mut Settle::new(shared));
                backoff = shared.config.connect_backoff;
            }
            Some(Err(crate::PoolError::Closed)) => return,
            Some(Err(_)) | None => {
                drop(claim);
                tokio::time::sleep(shared.lifecycle.jitter(backoff)).await;
                backoff = backoff
                    .saturating_mul(2)
                    .min(shared.config.max_connect_backoff);
            }
        }
    }
}
