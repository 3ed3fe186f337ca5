//! The shared core ([`Core`]): the state every handle, guard, waiter and
//! background task of one pool shares, and the few judgements that read
//! it on the acquire path. What happens to a connection or a place when
//! its owner is done with it, the release protocol, is `release.rs`'s;
//! the acquire path is `pool.rs`'s.
//!
//! # Invariants kept
//!
//! - Each part keeps its own: the slot arena I1 and I2 (`slots.rs`), the
//!   idle set where an idle connection can be (`idle.rs`), the waiter queue
//!   I4 and I7 (`waiters.rs`), the lifecycle I6 (`lifecycle.rs`). The core
//!   only holds them side by side.
//! - `closed` is set once, by `close`, and read SeqCst where it takes part
//!   in a re-check argument (`release.rs`).
//! - Every close is counted by reason ([`Core::note_close`]) and logged at
//!   debug level: closes are routine.

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::{Arc, Weak};

use crate::Manager;
use crate::breaker::Breaker;
use crate::budget::Budget;
use crate::clock::TimeBase;
use crate::config::{Config, Ticks, ms};
use crate::health::Watch;
use crate::idle::IdleSet;
use crate::lifecycle::{Lifecycle, Verdict};
use crate::lifetime::{self, Retired};
use crate::maintenance::{Household, Maintenance, Started, Times};
use crate::metrics::{Counters, State, bump};
use crate::slots::{Busy, Held, Life, Place, Slots};
use crate::sync::AtomicBool;
use crate::waiters::Waiters;

/// The counted owner of a core (`lifetime.rs`).
pub(crate) type Owner<M> = lifetime::Owner<Core<M>>;

/// The state all handles, guards and waiters of one pool share.
pub(crate) struct Core<M: Manager> {
    pub(crate) manager: M,
    pub(crate) config: Config,
    /// The places: one slot each, and who owns it.
    pub(crate) slots: Slots<M::Connection>,
    /// Where idle connections are.
    pub(crate) idle: IdleSet,
    /// Parked `get`s, oldest first, and their deadlines.
    pub(crate) waiters: Waiters,
    /// In a keyed pool, the budget across its keys (`budget.rs`).
    pub(crate) budget: Option<Arc<Budget>>,
    /// Set once by `close`.
    pub(crate) closed: AtomicBool,
    pub(crate) clock: TimeBase,
    pub(crate) counters: Counters,
    pub(crate) maintenance: Maintenance,
    /// Judging connections: settings in ticks, restart epoch, jitter.
    pub(crate) lifecycle: Lifecycle,
    /// The backend as the connect path sees it (`breaker.rs`).
    pub(crate) breaker: Breaker,
    /// Notified (all waiters) when a connect that held the flight token
    /// lands: connects waiting for their turn while connects fail look
    /// again (`connector.rs`). Touched only while connects fail.
    pub(crate) landed: tokio::sync::Notify,
    /// Notified (all waiters) whenever a place is freed or a connection
    /// closed after `close`: `Pool::drain` waits on it (no polling).
    pub(crate) drained: tokio::sync::Notify,
    /// The health monitor (`health.rs`), sampled by maintenance and by
    /// `Pool::health` / `Pool::sizing`, never by `get` or a release.
    pub(crate) watch: Watch,
    /// This core's owner, for spawning background work from `&self` and
    /// for counting references with the `Arc`'s own provenance.
    pub(crate) weak: Weak<Owner<M>>,
}

impl<M: Manager> lifetime::Counted for Core<M> {
    #[inline(always)]
    fn counts(&self) -> &Weak<Owner<M>> {
        &self.weak
    }
}

impl<M: Manager> Core<M> {
    /// A core for `manager` with `config` (validated), in its own counted
    /// allocation (`lifetime.rs`). Starts nothing.
    pub(crate) fn new(
        manager: M,
        config: Config,
        clock: quanta::Clock,
        budget: Option<Arc<Budget>>,
    ) -> Arc<Owner<M>> {
        crate::hazard::survive_fork();
        let ticks = Ticks::new(&config);
        let clock = TimeBase::new(clock, ticks.uses_clock);
        let now = clock.now();
        Arc::new_cyclic(|weak: &Weak<Owner<M>>| {
            let seed = now ^ 0x9E37_79B9_7F4A_7C15 ^ (weak.as_ptr().addr() as u64);
            Owner::new(Core {
                slots: Slots::with_cap(config.limit(), config.max_size, config.max_idle.is_some()),
                idle: IdleSet::new(
                    config.shards,
                    config.limit(),
                    config.membarrier,
                    config.max_idle,
                ),
                waiters: Waiters::new(config.limit()),
                budget,
                closed: AtomicBool::new(false),
                counters: Counters::new(config.shards),
                maintenance: Maintenance::new(
                    now,
                    ticks.margin,
                    config.limit(),
                    Times {
                        idle_timeout: ticks.idle_timeout,
                        leak_threshold: ticks.leak,
                        min_idle: config.min_idle,
                        keepalive: config.keepalive.map(ms),
                        replace_lead: config
                            .replace_before_expiry
                            .zip(config.max_lifetime)
                            .map(|(lead, life)| ms(lead.min(life / 4))),
                    },
                ),
                lifecycle: Lifecycle::new(ticks, seed),
                breaker: Breaker::new(config.breaker, ms(config.connect_backoff)),
                landed: tokio::sync::Notify::new(),
                drained: tokio::sync::Notify::new(),
                watch: Watch::new(&config.name, config.wait_alert, config.churn_alert, now),
                weak: weak.clone(),
                clock,
                manager,
                config,
            })
        })
    }

    /// Bookkeeping for handing out an owned, ready slot: stamps the
    /// hand-out at `now` (the caller's hot-path reading) for the hold time
    /// and counts a fast-path `hit`, in the slot's own owner-written
    /// counters (no shared read-modify-write); with leak detection on,
    /// records the taker, stamped with the real clock (the cached reading
    /// may be a period or more old).
    #[inline(always)]
    pub(crate) fn hand_out(
        &self,
        busy: &Busy,
        by: &'static Location<'static>,
        now: u64,
        hit: bool,
    ) {
        let holding = &self.slots.of(busy).holding;
        holding.handed(now, hit);
        if self.lifecycle.ticks.leak != 0 {
            holding.taken(self.clock.exact(), by);
        }
    }

    /// An idle connection, from wherever it is (`idle.rs`).
    #[inline(always)]
    pub(crate) fn take_idle(&self) -> Option<Busy> {
        self.idle.take(&self.slots)
    }

    /// [`take_idle`](Self::take_idle) for a `try_get` arriving: while
    /// others wait, it looks only at this thread's parked connection. What
    /// it skips is empty but for a moment (a release serves a waiter
    /// before it shelves), and anything idle there is on its way to a
    /// waiter, who asked first.
    #[inline(always)]
    pub(crate) fn take_for_try(&self) -> Option<Busy> {
        self.idle.take_unless(&self.slots, || self.waiters.any())
    }

    /// [`take_for_try`](Self::take_for_try) for a `get`, which also stops
    /// there while the last serve went to a waiter
    /// ([`Waiters::near_only`]): the search is the longest part of a
    /// waiting `get`'s way to its registration, and its re-check after
    /// registering searches everything (`waiters.rs`, lost wake-ups). A
    /// `try_get` has no re-check to fall back on, so a stale hint is never
    /// its rule.
    #[inline(always)]
    pub(crate) fn take_for_get(&self) -> Option<Busy> {
        self.idle
            .take_unless(&self.slots, || self.waiters.near_only())
    }

    /// Anything a waiter could use: an idle connection, else a place.
    pub(crate) fn take_any(&self) -> Option<Held> {
        match self.take_idle() {
            Some(busy) => Some(Held::Busy(busy)),
            None => self.reserve().map(Held::Place),
        }
    }

    /// Reserves a place: one of this pool's own (its cap) and, in a keyed
    /// pool, a token of the budget across keys, taken first (`budget.rs`:
    /// a place never exists without its token).
    #[inline]
    pub(crate) fn reserve(&self) -> Option<Place> {
        let Some(budget) = &self.budget else {
            return self.slots.reserve();
        };
        if !budget.take() {
            return None;
        }
        let place = self.slots.reserve();
        if place.is_none() {
            budget.put_back();
        }
        place
    }

    /// Gives a reserved, empty place back, and in a keyed pool its token
    /// (to the oldest starved `get` of any key first).
    pub(crate) fn unreserve(&self, place: Place) {
        self.slots.unreserve(place);
        if let Some(budget) = &self.budget {
            budget.put_back();
        }
    }

    /// Idle connections (exact when quiet).
    pub(crate) fn idle_count(&self) -> usize {
        self.idle.count(&self.slots)
    }

    /// The time lifecycle checks compare against: the cached reading while
    /// the background task keeps it fresh, the real clock otherwise.
    #[inline(always)]
    pub(crate) fn now_for_checks(&self) -> u64 {
        self.clock.hot_now()
    }

    /// Judges a claimed idle connection: the manager's cheap `is_broken`
    /// first (it runs at hand-out too), then the lifecycle policy
    /// (`lifecycle.rs`); `probe`: an armed probe checks this connection.
    #[inline(always)]
    pub(crate) fn judge(&self, busy: &mut Busy, now: u64, probe: bool) -> Verdict {
        if self.is_broken(busy) {
            return Verdict::Broken;
        }
        self.lifecycle.judge(&self.slots.of(busy).life, now, probe)
    }

    /// `Manager::is_broken` on an owned connection; a panic in it counts
    /// as broken.
    #[inline(always)]
    pub(crate) fn is_broken(&self, busy: &mut Busy) -> bool {
        catch_unwind(AssertUnwindSafe(|| {
            self.manager.is_broken(self.slots.conn_mut(busy))
        }))
        .unwrap_or(true)
    }

    /// `Manager::is_broken`, then (if not broken) `Manager::needs_cleanup`,
    /// on a returned connection: `(broken, needs cleaning)`. One guarded
    /// call for both, so that the default `needs_cleanup` (a constant
    /// `false`) costs the release nothing; a panic in either counts as
    /// broken.
    #[inline(always)]
    pub(crate) fn judge_return(&self, busy: &mut Busy) -> (bool, bool) {
        catch_unwind(AssertUnwindSafe(|| {
            let conn = self.slots.conn_mut(busy);
            let broken = self.manager.is_broken(conn);
            (broken, !broken && self.manager.needs_cleanup(conn))
        }))
        .unwrap_or((true, false))
    }

    /// A check of `busy`'s connection passed: stamp it verified now, and
    /// the server known alive (no probe for a period).
    pub(crate) fn passed_check(&self, busy: &Busy) {
        self.slots
            .of(busy)
            .life
            .set_verified(self.lifecycle.next_seq());
        self.lifecycle.note_alive(self.clock.hot_now());
    }

    /// The error of a `get` that would connect while the backend is down:
    /// how long it has been down, when the next probe is due, the last
    /// connect error. Counted (`Metrics::unavailable`).
    #[cold]
    pub(crate) fn unavailable(&self) -> crate::PoolError<M::Error> {
        bump(&self.counters.unavailable);
        let (down, next) = self.breaker.outage(self.clock.now()).unwrap_or((0, 0));
        crate::PoolError::Unavailable(crate::Outage::new(
            std::time::Duration::from_millis(down),
            std::time::Duration::from_millis(next),
            self.breaker.last_error(),
        ))
    }

    /// Counts a close for `reason` and logs it (debug: closes are routine).
    #[cold]
    pub(crate) fn note_close(&self, counter: &std::sync::atomic::AtomicU64, reason: &'static str) {
        bump(counter);
        tracing::debug!(pool = %self.config.name, reason, "connection closed");
    }

    /// A snapshot of sizes and waiters (`Pool::state`).
    pub(crate) fn state(&self) -> State {
        let size = self.slots.taken();
        let idle = self.idle_count().min(size);
        let connecting = self
            .counters
            .connecting
            .load(std::sync::atomic::Ordering::Relaxed);
        State {
            size,
            idle,
            in_use: size.saturating_sub(idle + connecting),
            waiting: self.waiters.live(),
        }
    }
}

impl<M: Manager> Household for Core<M> {
    fn life(&self, index: u32) -> &Life {
        &self.slots.at(index).life
    }

    fn is_busy_with(&self, index: u32, serial: u64) -> bool {
        self.slots.is_busy_with(index, serial)
    }

    fn idle_count(&self) -> usize {
        Core::idle_count(self)
    }

    fn close_in_place(&self, index: u32, serial: u64, retired: &mut Retired) -> bool {
        let Some(busy) = self.idle.claim_in_place(&self.slots, index, serial) else {
            return false;
        };
        bump(&self.counters.expired);
        // Lifetime if it is past it (the pass refreshed the cached
        // reading), else the idle timeout.
        if self.clock.hot_now() >= self.slots.of(&busy).life.expires_at() {
            self.note_close(&self.counters.closed_lifetime, "lifetime");
        } else {
            self.note_close(&self.counters.closed_idle, "idle_timeout");
        }
        self.retire(busy, retired);
        true
    }

    fn keepalive(&self, index: u32, serial: u64) -> Started {
        self.start_keepalive(index, serial)
    }

    fn replace(&self, index: u32, serial: u64, used: bool) -> Started {
        self.start_replacement(index, serial, used)
    }

    fn any_in_use(&self) -> bool {
        self.state().in_use > 0
    }

    /// Reports connections held longer than `threshold` ticks: first once
    /// past it, then again each time the holding has doubled since its last
    /// report (about 1, 2, 4, 8 … times the threshold), each report stating
    /// the time held so far, so that a stuck holder stays visible for as
    /// long as it is stuck. `Metrics::leaks` counts connections (their
    /// first report).
    ///
    /// Compares a real clock reading taken here (not the cached one, nor
    /// the pass's `now`) with the real stamp taken at hand-out
    /// (`Core::hand_out`), so `held_ms` is the true hold time at the scan,
    /// within a millisecond (scans run every half threshold, rounded up to
    /// the next pass, so a report comes at most that late). Ticks are whole
    /// milliseconds, so a stamp and a reading `threshold` ticks apart may be
    /// up to 1 ms less apart in truth: a holding is reported from
    /// `threshold + 1` ticks, never before the threshold has really passed.
    fn report_leaks(&self, threshold: u64) {
        let now = self.clock.exact();
        let from = threshold.saturating_add(1);
        for index in 0..self.slots.capacity() as u32 {
            if let Some((serial, held, by, first)) = self.slots.leak(index, now, from) {
                if first {
                    bump(&self.counters.leaks);
                }
                tracing::warn!(
                    target: "latchless",
                    connection = serial,
                    held_ms = held,
                    taken_at = %by,
                    repeated = !first,
                    "connection held longer than leak_threshold ({threshold} ms): {held} ms so far; taken by the `get` at {by}"
                );
            }
        }
    }
}
