//! The shared core ([`Core`], ex-`Shared`) and the release / hand-off
//! protocol: what happens to a connection or a place when its owner is done
//! with it. The acquire path is in `pool.rs`; the release path starts in
//! `Drop for Pooled` (`pooled.rs`) and continues here.
//!
//! # One verb per act
//!
//! | verb | act |
//! | --- | --- |
//! | [`release`](Core::release) | a guard gives its connection back: judge it, then `publish` it or `retire` it |
//! | [`publish`](Core::publish) | the inlined common case of `pass_on` for a healthy released connection |
//! | [`pass_on`](Core::pass_on) | hand a connection or a place to the oldest waiter, else `shelve` it, then re-check |
//! | [`shelve`](Core::shelve) | put a connection into the idle set or a place into the free queue (no re-check) |
//! | [`requeue`](Core::requeue) | shelve an unchecked idle connection behind the others (`try_get`, a `get` out of time) |
//! | [`retire`](Core::retire) | close an owned connection, then `pass_on` its place |
//! | [`discard`](Core::discard) | the pool is closed: close and free, serving nobody (and wake a drainer) |
//! | [`resize`](Core::resize) | set the cap on places: trim idle surplus (shrink), serve waiters (grow) |
//! | [`trim`](Core::trim) | close idle connections while more places are taken than the cap |
//!
//! # Invariants kept
//!
//! I1 (via `slots.rs`), I2 (a connection lives in a slot; a place is a
//! slot, taken only below the run-time cap; after a shrink, a connection
//! returned while more places than the cap are taken is closed, a place
//! freed then goes to no waiter, and a releaser re-checks the cap after its
//! shelve, SeqCst, as for a lost wake-up, so that once connections are back
//! at most the cap are open), I3 (every close path runs [`close_quietly`] once, counts it, and
//! gives the place on only after), I4 and I7 (via `waiters.rs` and
//! [`Core::pass_on`]: DESIGN.md, "The lost-wake-up argument"). Every
//! function that closes connections returns their counted references as a
//! [`Retired`] count, settled by the caller after its last use of the core
//! (`lifetime.rs`).

use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::{Arc, Weak};

use crate::Manager;
use crate::asym::Asym;
use crate::breaker::Breaker;
use crate::clock::Clock;
use crate::config::{Config, Ticks, ms};
use crate::deadlines::Deadlines;
use crate::health::{Health, HealthConfig, Monitor, Observed, Sizing};
use crate::histogram::HistogramSnapshot;
use crate::lifecycle::{Lifecycle, Verdict};
use crate::lifetime::{self, Retired};
use crate::maintenance::{Household, Maintenance};
use crate::metrics::{Counters, State, bump};
use crate::shards::Shards;
use crate::slots::{Busy, Facts, Held, Place, Slots};
use crate::sync::{self, AtomicBool, Ordering, fence, mutant};
use crate::waiters::{Grant, Waiters};

/// The counted owner of a core (`lifetime.rs`).
pub(crate) type Owner<M> = lifetime::Owner<Core<M>>;

/// Carries what `held` owns into a waiter node's grant (a number: the
/// ownership travels with the node's serving CAS, `waiters.rs`).
#[inline]
pub(crate) fn into_grant(held: Held) -> Grant {
    match held {
        Held::Busy(busy) => Grant::Slot(busy.into_raw()),
        Held::Place(place) => Grant::Place(place.into_raw()),
    }
}

/// Takes back the ownership a grant carries.
///
/// # Safety
/// `grant` was made by [`into_grant`] from a token of this pool, and the
/// caller is the one party it was given to: the waiter that a node's
/// serving CAS served (and that saw it, `poll` or `cancel`), or the server
/// that `Waiters::serve` gave it back to.
#[inline]
pub(crate) unsafe fn from_grant(grant: Grant) -> Held {
    // SAFETY: per the contract, the caller is the grant's only owner.
    unsafe {
        match grant {
            Grant::Slot(i) => Held::Busy(Busy::from_raw(i)),
            Grant::Place(i) => Held::Place(Place::from_raw(i)),
        }
    }
}

/// Drops a connection, containing a panic in its `Drop` so that a faulty
/// connection type cannot lose a place.
pub(crate) fn close_quietly<C>(conn: Option<C>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(conn)));
}

/// The state all handles, guards and waiters share.
pub(crate) struct Core<M: Manager> {
    pub(crate) manager: M,
    pub(crate) config: Config,
    /// This pool's identity for the threads' private caches of parked keys
    /// (`tid.rs`): unique in the process, never reused (an address could
    /// be, by a later pool).
    pub(crate) id: u64,
    pub(crate) slots: Slots<M::Connection>,
    pub(crate) shards: Shards,
    pub(crate) waiters: Waiters,
    /// Deadlines of parked waiters, timed out by the background task.
    pub(crate) deadlines: Deadlines,
    /// Set once by `close`; SeqCst where it takes part in the re-check
    /// arguments (see `pass_on` and `close`).
    pub(crate) closed: AtomicBool,
    /// The parking release's asymmetric fence (`asym.rs`): whether
    /// releasers fence after parking, armed by waiters, `close` and shrinks.
    pub(crate) asym: Asym,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    pub(crate) maintenance: Maintenance,
    /// Judging connections: settings in ticks, restart epoch, jitter.
    pub(crate) lifecycle: Lifecycle,
    /// Notified (all waiters) whenever a place is freed or a connection
    /// closed after `close`: `Pool::drain` waits on it (no polling).
    pub(crate) drained: tokio::sync::Notify,
    /// The backend as the connect path sees it: failures, the single
    /// flight, the breaker (`breaker.rs`).
    pub(crate) breaker: Breaker,
    /// Notified (all waiters) when a connect that held the flight token
    /// lands: connects waiting for their turn while connects fail look
    /// again (`connector.rs`). Touched only while connects fail.
    pub(crate) landed: tokio::sync::Notify,
    /// This core's owner, for spawning background work from `&self` and
    /// for counting references with the `Arc`'s own provenance.
    pub(crate) weak: Weak<Owner<M>>,
    /// The health monitor and its snapshot buffers, taken only by
    /// maintenance (`try_lock`) and `Pool::health` / `Pool::sizing`,
    /// never by `get` or a release.
    pub(crate) watch: std::sync::Mutex<Watch>,
    /// When maintenance last sampled the monitor (ticks; `u64::MAX`:
    /// never), so that it samples at most once a second.
    last_sample: std::sync::atomic::AtomicU64,
}

/// The monitor and the buffers a sample reads into (no allocation per
/// sample).
#[derive(Debug)]
pub(crate) struct Watch {
    monitor: Monitor,
    wait: HistogramSnapshot,
    hold: HistogramSnapshot,
    /// When the asymmetric fence was last offered a relax (ticks).
    relaxed_at: u64,
}

/// The next [`Core::id`] (0 is never used: a thread's empty cache).
static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Maintenance samples the monitor at most this often (ticks).
const SAMPLE_EVERY_MS: u64 = 1_000;

impl<M: Manager> lifetime::Counted for Core<M> {
    #[inline(always)]
    fn counts(&self) -> &Weak<Owner<M>> {
        &self.weak
    }
}

impl<M: Manager> Core<M> {
    /// A core for `manager` with `config` (validated), in its own counted
    /// allocation (`lifetime.rs`). Starts nothing.
    pub(crate) fn new(manager: M, config: Config, clock: quanta::Clock) -> Arc<Owner<M>> {
        crate::hazard::survive_fork();
        let ticks = Ticks::new(&config);
        let clock = Clock::new(clock, ticks.uses_clock);
        let now = clock.now();
        Arc::new_cyclic(|weak: &Weak<Owner<M>>| {
            let seed = now ^ 0x9E37_79B9_7F4A_7C15 ^ (weak.as_ptr().addr() as u64);
            Owner::new(Core {
                id: NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                slots: Slots::with_cap(config.limit(), config.max_size),
                shards: Shards::new(
                    config.shards,
                    Shards::room_per_shard(config.limit(), config.shards),
                ),
                waiters: Waiters::new(),
                drained: tokio::sync::Notify::new(),
                breaker: Breaker::new(config.breaker, ms(config.connect_backoff)),
                landed: tokio::sync::Notify::new(),
                deadlines: Deadlines::new(),
                closed: AtomicBool::new(false),
                asym: Asym::new(config.membarrier),
                counters: Counters::new(config.shards),
                watch: std::sync::Mutex::new(Watch {
                    monitor: Monitor::new(
                        &config.name,
                        HealthConfig {
                            wait_p99_ns: Some(
                                u64::try_from(config.wait_alert.as_nanos()).unwrap_or(u64::MAX),
                            ),
                            ..HealthConfig::default()
                        },
                        now,
                    ),
                    wait: HistogramSnapshot::default(),
                    hold: HistogramSnapshot::default(),
                    relaxed_at: now,
                }),
                last_sample: std::sync::atomic::AtomicU64::new(u64::MAX),
                maintenance: Maintenance::new(
                    now,
                    ticks.margin,
                    config.limit(),
                    ticks.idle_timeout,
                    ticks.leak,
                    config.min_idle,
                ),
                lifecycle: Lifecycle::new(ticks, seed),
                weak: weak.clone(),
                clock,
                manager,
                config,
            })
        })
    }

    /// Bookkeeping for handing out an owned, ready slot: records
    /// the taker for leak detection when that is on (stamped with the real
    /// clock, one read, since the cached reading may be a period or more
    /// old; `clock.rs`).
    ///
    /// Stamps the hand-out at `now` (the caller's hot-path reading) for
    /// the hold time, and counts a fast-path `hit`, in the slot's own
    /// owner-written counters (`slots.rs`, `SlotStats`): no shared
    /// read-modify-write.
    #[inline(always)]
    pub(crate) fn hand_out(
        &self,
        busy: &Busy,
        by: &'static Location<'static>,
        now: u64,
        hit: bool,
    ) {
        self.slots.note_handed(busy, now, hit);
        if self.lifecycle.ticks.leak != 0 {
            self.slots.set_taken(busy, self.clock.exact(), by);
        }
    }

    /// Takes an idle connection: the one this thread parked, if it is still
    /// there (one CAS, `tid.rs`); else pop a key and claim its slot,
    /// skipping stale keys; else steal a connection parked by another
    /// thread (DESIGN.md, "The thread-affine fast path").
    #[inline(always)]
    pub(crate) fn take_idle(&self) -> Option<Busy> {
        if let Some(key) = crate::tid::unpark(self.id) {
            if let Some(busy) = self.slots.claim_parked(key) {
                return Some(busy);
            }
        }
        self.take_shared()
    }

    /// [`take_idle`](Self::take_idle) past this thread's parked
    /// connection: the shards, then the other threads' parked ones.
    #[inline(never)]
    fn take_shared(&self) -> Option<Busy> {
        while let Some(key) = self.shards.pop() {
            if let Some(busy) = self.slots.claim(key) {
                return Some(busy);
            }
            self.forget_stale();
        }
        self.steal_parked()
    }

    /// The scan of [`take_idle`](Self::take_idle) for parked connections
    /// (each thread starts at its own point, so stealers spread out).
    #[cold]
    #[inline(never)]
    fn steal_parked(&self) -> Option<Busy> {
        // loom mutant: recheck_skips_parked (a taker, a waiter's re-check
        // among them, misses parked connections), see
        // loom-tests/run-mutants.sh
        if mutant("recheck_skips_parked") {
            return None;
        }
        // Under loom the scan starts at slot 0: a thread's home comes from
        // a process-wide counter that grows across loom's executions, so a
        // home-dependent order would differ between the replays of one path.
        let start = if cfg!(latchless_loom) {
            0
        } else {
            crate::tid::home_index(self.slots.capacity())
        };
        self.slots.steal_parked(start)
    }

    /// A popped key was stale: it has left the idle set (`shards.rs`).
    #[cold]
    fn forget_stale(&self) {
        self.shards.forget_stale();
    }

    /// Idle connections: keys queued minus stale ones (exact when quiet;
    /// the stale-key invariant is in `shards.rs`), plus parked ones (a
    /// scan of the state words: O(capacity), off the hot path).
    pub(crate) fn idle_count(&self) -> usize {
        self.shards.idle() + self.slots.parked()
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
    #[inline]
    pub(crate) fn judge(&self, busy: &mut Busy, now: u64, probe: bool) -> Verdict {
        if self.is_broken(busy) {
            return Verdict::Broken;
        }
        self.lifecycle.judge(&self.slots, busy, now, probe)
    }

    /// `Manager::is_broken` on an owned connection; a panic in it counts
    /// as broken.
    #[inline(always)]
    fn is_broken(&self, busy: &mut Busy) -> bool {
        catch_unwind(AssertUnwindSafe(|| {
            self.manager.is_broken(self.slots.conn_mut(busy))
        }))
        .unwrap_or(true)
    }

    /// A check of `busy`'s connection passed: stamp it verified now, and
    /// the server known alive (no probe for a period).
    pub(crate) fn passed_check(&self, busy: &Busy) {
        self.slots.set_verified(busy, self.lifecycle.next_seq());
        self.lifecycle.note_alive(self.clock.hot_now());
    }

    /// A check of `busy`'s connection failed: close it; and since a failed
    /// check is evidence that the server went away, every connection
    /// verified before now is checked before its next use (after a server
    /// restart that costs one failed check per connection, not one failed
    /// request or timeout per connection).
    pub(crate) fn failed_check(&self, busy: Busy) -> Retired {
        self.note_close(&self.counters.check_failures, "check_failed");
        self.lifecycle.note_failure();
        // Contain a panic from the connection's `Drop` (retire does).
        catch_unwind(AssertUnwindSafe(|| self.retire(busy))).unwrap_or_default()
    }

    /// `retire` for a broken connection: closes it (counted in
    /// `Metrics::broken`) and arms a probe of one other idle connection,
    /// not a pool-wide check: one broken connection is not evidence that
    /// the server went away (`lifecycle.rs`).
    #[cold]
    pub(crate) fn retire_broken(&self, busy: Busy) -> Retired {
        self.note_close(&self.counters.broken, "broken");
        self.lifecycle.suspect(self.clock.now());
        self.retire(busy)
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

    /// Takes anything a waiter could use: an idle connection or a place.
    pub(crate) fn take_any(&self) -> Option<Held> {
        match self.take_idle() {
            Some(busy) => Some(Held::Busy(busy)),
            None => self.slots.reserve().map(Held::Place),
        }
    }

    /// `release`: a guard gives its connection back (the release path):
    /// check it, then pass it on (healthy) or close it and pass its place
    /// on (broken: marked so by its holder, `is_broken`, or a panic; or
    /// past its lifetime).
    #[inline]
    pub(crate) fn release(&self, mut busy: Busy) -> Retired {
        // A guard dropped while its thread panics may hold a connection in
        // an unknown state (half a transaction): close it rather than reuse.
        let broken =
            self.slots.is_marked(&busy) || std::thread::panicking() || self.is_broken(&mut busy);
        if self.lifecycle.ticks.leak != 0 {
            self.slots.clear_taken(&busy);
        }
        let now = self.now_for_checks();
        let held = self.slots.held_for(&busy, now);
        if held != 0 {
            self.record_hold(&busy, held);
        }
        // The end of its lifetime (`u64::MAX`: none).
        let last = self.slots.expires_at_of(&busy);
        if broken {
            self.retire_broken(busy)
        } else if now >= last {
            bump(&self.counters.expired);
            self.note_close(&self.counters.closed_lifetime, "lifetime");
            self.retire(busy)
        } else if self.slots.over_cap() {
            // A shrink is under way (`resize`): surplus closes on return.
            self.retire(busy)
        } else {
            self.stamp_fresh(&busy, last, now);
            self.publish(busy, now)
        }
    }

    /// Records a holding of `ticks` (≥ 1) ms in the hold histogram.
    #[cold]
    #[inline(never)]
    fn record_hold(&self, busy: &Busy, ticks: u64) {
        self.counters
            .hold
            .record_in(busy.index() as usize, ticks.saturating_mul(1_000_000));
    }

    /// Counts a close for `reason` and logs it (debug: closes are routine).
    #[cold]
    pub(crate) fn note_close(&self, counter: &std::sync::atomic::AtomicU64, reason: &'static str) {
        bump(counter);
        tracing::debug!(pool = %self.config.name, reason, "connection closed");
    }

    /// Samples the health monitor at `now` (ticks): when `force`d
    /// (`Pool::health` / `Pool::sizing`, which wait for the lock), else at
    /// most once a second and only if the lock is free (maintenance).
    pub(crate) fn observe(
        &self,
        now: u64,
        force: bool,
    ) -> Option<std::sync::MutexGuard<'_, Watch>> {
        use std::sync::atomic::Ordering as O;
        let mut watch = if force {
            // A panic while sampling leaves nothing half-done that matters.
            self.watch.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            let last = self.last_sample.load(O::Relaxed);
            if last != u64::MAX && now.saturating_sub(last) < SAMPLE_EVERY_MS {
                return None;
            }
            self.watch.try_lock().ok()?
        };
        self.last_sample.store(now, O::Relaxed);
        let Watch {
            monitor,
            wait,
            hold,
            relaxed_at,
        } = &mut *watch;
        // At most once a second, however often `health()` / `sizing()` are
        // called: a pool that had no waiter since the last look goes back
        // to releases without a fence (`asym.rs`), and the next waiter
        // pays a membarrier. A metrics scrape must not make every waiter
        // pay it.
        if now.saturating_sub(*relaxed_at) >= SAMPLE_EVERY_MS {
            *relaxed_at = now;
            self.asym.relax();
        }
        let hits = self.slots.hits();
        let state = self.state();
        self.counters
            .wait_and_hold_into(hits, state.in_use, wait, hold);
        let r = |c: &std::sync::atomic::AtomicU64| c.load(O::Relaxed);
        let c = &self.counters;
        monitor.sample(
            now,
            &Observed {
                in_use: state.in_use,
                max_size: self.slots.cap(),
                wait,
                hold_count: hold.count(),
                hold_sum_ns: hold.sum(),
                failed_acquires: r(&c.timeouts) + r(&c.exhausted),
                connects: r(&c.opened),
                connect_failures: r(&c.connect_errors) + r(&c.connect_timeouts),
                // The restart epoch moves on a failed check (a failed
                // connect counts as a connect failure already).
                restart_epoch: r(&c.check_failures),
                down_after: if self.breaker.is_down() {
                    self.breaker.failures().max(1)
                } else {
                    0
                },
            },
        );
        Some(watch)
    }

    /// `Pool::health`: samples now, then reads the alerts.
    pub(crate) fn health(&self) -> Health {
        let now = self.clock.now();
        self.observe(now, true)
            .map(|w| w.monitor.health())
            .unwrap_or_default()
    }

    /// `Pool::sizing`: samples now, then applies the sizing rule.
    pub(crate) fn sizing(&self) -> Sizing {
        let now = self.clock.now();
        self.observe(now, true)
            .map(|w| w.monitor.sizing())
            .unwrap_or_default()
    }

    /// Stamps until when an owned healthy connection, about to go idle at
    /// `now`, may be handed out without a closer look: the end of its
    /// lifetime `last` or when it becomes due for a check, whichever comes
    /// first. Stored before the connection is passed on, to the idle set or
    /// straight to a waiter, whose acquire judges by it.
    #[inline(always)]
    pub(crate) fn stamp_fresh(&self, busy: &Busy, last: u64, now: u64) {
        let fresh_until = self.lifecycle.fresh_until(last, now);
        self.slots.set_fresh_until(busy, fresh_until);
    }

    /// Puts an owned healthy connection that did not come from a holder
    /// (just opened by warm-up or the refill, or just passed a check whose
    /// caller left) where the next taker finds it: stamped fresh until its
    /// lifetime ends or its next check is due, then passed on, to the
    /// oldest waiter or the idle set. A release stamps in `release`; every
    /// other way into the idle set goes through here, so no connection
    /// goes idle with a stale stamp.
    pub(crate) fn put_back_fresh(&self, busy: Busy) -> Retired {
        let now = self.now_for_checks();
        self.stamp_fresh(&busy, self.slots.expires_at_of(&busy), now);
        self.pass_on(Held::Busy(busy))
    }

    /// `publish`: the common case of [`pass_on`](Self::pass_on) for a
    /// healthy released connection, small enough to inline into `Drop for
    /// Pooled`: no waiter, pool open, push to the home shard, and the same
    /// re-check.
    #[inline(always)]
    fn publish(&self, busy: Busy, now: u64) -> Retired {
        if self.closed.load(Ordering::Relaxed) || self.waiters.any() {
            return self.pass_on(Held::Busy(busy));
        }
        // Park it for this thread's next acquire if the thread's cache is
        // free (DESIGN.md, "The thread-affine fast path"), else into the
        // idle set. The cache is private: only the slot's state word is
        // shared, so the order of the two writes does not matter.
        let key = self.slots.next_key(&busy);
        if crate::tid::park(self.id, key) {
            self.slots.park(busy, key, now);
            // loom mutant: park_without_fence (run-mutants.sh)
            if !mutant("park_without_fence") {
                self.asym.light();
            }
        } else {
            let key = self.slots.make_idle(busy, now);
            self.shards.push(key, |k| self.slots.is_live(k));
            // The push ends in a SeqCst operation of ours (the hot word's
            // CAS, or a fence after a queue push, `shards.rs`); the SeqCst
            // loads below follow it. (Parking ends in the asymmetric
            // fence's light side instead: a SeqCst fence, or, relaxed, a
            // membarrier on the other side; `asym.rs`.)
            sync::sc_load_after_rmw();
        }
        sync::after_publish();
        // loom mutants: close_no_recheck, lost_wakeup (run-mutants.sh)
        let closed = !mutant("close_no_recheck") && self.closed.load(Ordering::SeqCst);
        if closed || (!mutant("lost_wakeup") && self.waiters.any()) {
            return self.after_shelve();
        }
        // loom mutant: shrink_no_recheck (run-mutants.sh)
        if !mutant("shrink_no_recheck") && self.slots.over_cap_sc() {
            return self.trim();
        }
        Retired(0)
    }

    /// `retire`: closes the connection of an owned BUSY slot and passes its
    /// place on.
    pub(crate) fn retire(&self, busy: Busy) -> Retired {
        let (conn, place) = self.slots.take(busy);
        close_quietly(conn);
        bump(&self.counters.closed);
        // The connection is gone before its place goes to anyone else.
        let Retired(n) = self.pass_on(Held::Place(place));
        Retired(n + 1)
    }

    /// `pass_on`: hands `grant` to the oldest live waiter, or shelves it:
    /// into the idle set (a connection) or the free queue (a place).
    ///
    /// After putting it back, re-reads `tokens` (SeqCst): a waiter that
    /// registered meanwhile either found what was put back in its own
    /// re-check or is seen here, and then something is taken back for it.
    /// Each further round consumes a waiter token or ends, so the loop is
    /// bounded by the number of registrations it races with.
    #[inline(never)]
    pub(crate) fn pass_on(&self, mut held: Held) -> Retired {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return self.discard(held);
            }
            // A place above the cap (a shrink under way) goes to no waiter:
            // it is shelved, and the re-check below reserves through the
            // cap (`Slots::reserve`).
            let surplus = matches!(held, Held::Place(_)) && self.slots.over_cap();
            if !surplus && self.waiters.any() {
                match self.waiters.serve(into_grant(held)) {
                    Ok(()) => return Retired(0),
                    // SAFETY: `serve` gave back the grant made just above,
                    // which no waiter took.
                    Err(back) => held = unsafe { from_grant(back) },
                }
            }
            let shelved_busy = matches!(held, Held::Busy(_));
            self.shelve(held, self.now_for_checks());
            sync::after_publish();
            // The shelve ended in a SeqCst operation of ours (`shelve`);
            // these SeqCst loads follow it in S and pair with `register`'s
            // token add + fence and with `close`'s store + fence (DESIGN.md,
            // "The lost-wake-up argument").
            sync::sc_load_after_rmw();
            if self.closed.load(Ordering::SeqCst) {
                self.drained.notify_waiters();
                return self.close_idle();
            }
            if shelved_busy && self.slots.over_cap_sc() {
                return self.trim();
            }
            if !self.waiters.any() {
                return Retired(0);
            }
            match self.take_any() {
                Some(next) => held = next,
                None => return Retired(0),
            }
        }
    }

    /// The end of `pass_on`'s round after a shelve that raced with a
    /// waiter's registration or with `close`.
    #[cold]
    #[inline(never)]
    fn after_shelve(&self) -> Retired {
        if self.closed.load(Ordering::SeqCst) {
            return self.close_idle();
        }
        match self.take_any() {
            Some(next) => self.pass_on(next),
            None => Retired(0),
        }
    }

    /// `shelve`: puts a grant where the next taker looks: a connection into
    /// the idle set (stamped as released at `now`), a place into the free
    /// queue. Serves nobody and re-checks nothing (see `pass_on`). Ends in a
    /// SeqCst operation of ours: the idle set's push does (`shards.rs`); a
    /// place's push onto the free queue is crossbeam's, whose orderings are
    /// not ours to rely on, so a SeqCst fence follows it.
    #[inline]
    pub(crate) fn shelve(&self, held: Held, now: u64) {
        match held {
            Held::Busy(busy) => {
                let key = self.slots.make_idle(busy, now);
                self.shards.push(key, |k| self.slots.is_live(k));
            }
            Held::Place(place) => {
                self.slots.unreserve(place);
                fence(Ordering::SeqCst);
            }
        }
    }

    /// `requeue`: puts an owned idle connection that `try_get` may not hand
    /// out (it is due for a check) back behind the others, keeping its idle time; a
    /// waiter, if any, gets it instead (and checks it).
    pub(crate) fn requeue(&self, busy: Busy) -> Retired {
        if self.waiters.any() || self.closed.load(Ordering::Relaxed) {
            return self.pass_on(Held::Busy(busy));
        }
        let since = self.slots.facts(busy.index()).released_at;
        let key = self.slots.make_idle(busy, since);
        self.shards.push_back(key, |k| self.slots.is_live(k));
        // The same re-check as `publish` (`push_back` ends in our fence).
        sync::sc_load_after_rmw();
        if self.closed.load(Ordering::SeqCst) || self.waiters.any() {
            return self.after_shelve();
        }
        Retired(0)
    }

    /// `discard`: closes what `grant` holds and frees its place, serving
    /// nobody (the pool is closed).
    fn discard(&self, held: Held) -> Retired {
        match held {
            Held::Busy(busy) => {
                // Emptied (closed) first, then its place freed.
                let (conn, place) = self.slots.take(busy);
                close_quietly(conn);
                bump(&self.counters.closed);
                self.note_close(&self.counters.closed_pool_closed, "pool_closed");
                self.slots.unreserve(place);
                self.drained.notify_waiters();
                Retired(1)
            }
            Held::Place(place) => {
                self.slots.unreserve(place);
                self.drained.notify_waiters();
                Retired(0)
            }
        }
    }

    /// Closes every idle connection (the pool is closed).
    fn close_idle(&self) -> Retired {
        let mut n = 0;
        while let Some(busy) = self.take_idle() {
            n += self.discard(Held::Busy(busy)).0;
        }
        Retired(n)
    }

    /// Stops handing out: rejects waiters, closes idle connections.
    pub(crate) fn close(&self) -> Retired {
        self.closed.store(true, Ordering::SeqCst);
        // Pairs with the SeqCst fence in `register` and the SeqCst loads in
        // `grant`: a waiter or an idle connection that arrives after this is
        // seen by its own side's re-check of `closed`.
        fence(Ordering::SeqCst);
        // And with a parking releaser's light side (`asym.rs`).
        self.asym.heavy();
        self.waiters.close_all();
        self.close_idle()
    }

    /// `Pool::set_max_size`: sets the cap on places (`1 <= n <=
    /// limit`, `n >= min_idle`, checked by the caller). Growing serves
    /// parked waiters with the new places at once; shrinking closes idle
    /// connections above the new cap now (in-use ones close on return,
    /// `release`, and freed places above it go to no waiter, `pass_on`).
    pub(crate) fn resize(&self, n: usize) -> Retired {
        self.slots.set_cap(n);
        // Pairs with a releaser's shelve + `over_cap_sc` re-check (`publish`,
        // `pass_on`), as in the lost-wake-up argument: either the trim
        // below pops the connection it shelved, or its re-check sees the
        // new cap and trims itself.
        fence(Ordering::SeqCst);
        // And with a parking releaser's light side (`asym.rs`).
        self.asym.heavy();
        let Retired(mut retired) = self.trim();
        // Grow: parked waiters connect at once. Bounded by the new cap
        // (each round takes a place; `pass_on` re-checks on its own).
        for _ in 0..n {
            if !self.waiters.any() || self.closed.load(Ordering::Acquire) {
                break;
            }
            let Some(place) = self.slots.reserve() else {
                break;
            };
            retired += self.pass_on(Held::Place(place)).0;
        }
        Retired(retired)
    }

    /// Closes idle connections while more places are taken than the cap
    /// (a shrink, `resize`). Bounded: each round closes one connection,
    /// and it stops when the idle set is empty.
    #[cold]
    fn trim(&self) -> Retired {
        let mut retired = 0;
        while self.slots.over_cap() {
            let Some(busy) = self.take_idle() else { break };
            retired += self.retire(busy).0;
        }
        Retired(retired)
    }

    /// A snapshot of sizes and waiters (`Pool::state`).
    pub(crate) fn state(&self) -> State {
        let size = self.slots.taken();
        let idle = self.idle_count().min(size);
        let connecting = self.counters.connecting.load(Ordering::Relaxed);
        State {
            size,
            idle,
            in_use: size.saturating_sub(idle + connecting),
            waiting: self.waiters.live(),
        }
    }

    /// Puts a freshly opened connection into a reserved place: stamps its
    /// lifetime (shortened by up to 5% of jitter, so connections opened
    /// together do not expire together), takes its reference on the core,
    /// and schedules its deadlines. Returns the claimed slot, the caller's.
    pub(crate) fn adopt(&self, place: Place, conn: M::Connection) -> Busy {
        let now = self.clock.now();
        let serial = self.counters.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_at = self.lifecycle.expires_at(now);
        let seq = self.lifecycle.next_seq();
        let busy = self.slots.fill(place, conn, serial, now, expires_at, seq);
        let index = busy.index();
        // Fresh: no check is due, only its lifetime bounds it.
        self.slots.set_fresh_until(&busy, expires_at);
        // The connection's own reference on the core (`lifetime.rs`).
        crate::lifetime::add_reference(&self.weak);
        let idle_at = self
            .lifecycle
            .ticks
            .idle_timeout
            .map_or(u64::MAX, |t| now.saturating_add(t));
        if idle_at != u64::MAX || expires_at != u64::MAX {
            self.maintenance.schedule(index, idle_at.min(expires_at));
        }
        busy
    }
}

impl<M: Manager> Household for Core<M> {
    fn facts(&self, index: u32) -> Facts {
        self.slots.facts(index)
    }

    fn expires_at(&self, index: u32) -> u64 {
        self.slots.expires_at(index)
    }

    fn is_busy_with(&self, index: u32, serial: u64) -> bool {
        self.slots.is_busy_with(index, serial)
    }

    fn idle_count(&self) -> usize {
        Core::idle_count(self)
    }

    /// An IDLE slot's key stays in the idle set, stale: counted before the
    /// claim that makes it so (the stale-key invariant in `shards.rs`); a
    /// parked one's is in no shared structure.
    fn close_in_place(&self, index: u32, serial: u64) -> Option<Retired> {
        let busy = self.slots.claim_in_place(index, serial, |queued| {
            if queued {
                self.shards.count_stale();
            } else {
                self.shards.uncount_stale();
            }
        })?;
        bump(&self.counters.expired);
        // Lifetime if it is past it (the pass refreshed the cached
        // reading), else the idle timeout.
        if self.clock.hot_now() >= self.slots.expires_at(index) {
            self.note_close(&self.counters.closed_lifetime, "lifetime");
        } else {
            self.note_close(&self.counters.closed_idle, "idle_timeout");
        }
        Some(self.retire(busy))
    }

    /// Reports (once each) connections held longer than `threshold` ticks.
    ///
    /// Compares a real clock reading taken here (not the cached one, nor
    /// the pass's `now`, whoever computed it) with the real stamp taken at
    /// hand-out (`Core::hand_out`), so `held_ms` is the true hold time at
    /// the scan, within a millisecond (scans run every half threshold,
    /// rounded up to the next pass, so a report comes at most that late).
    /// Ticks are whole milliseconds, so a stamp and a reading `threshold`
    /// ticks apart may be up to 1 ms less apart in truth: a holding is
    /// reported from `threshold + 1` ticks, never before the threshold has
    /// really passed.
    fn report_leaks(&self, threshold: u64) {
        let now = self.clock.exact();
        let from = threshold.saturating_add(1);
        for index in 0..self.slots.capacity() as u32 {
            if let Some((serial, held, by)) = self.slots.leak(index, now, from) {
                crate::metrics::bump(&self.counters.leaks);
                tracing::warn!(
                    target: "latchless",
                    connection = serial,
                    held_ms = held,
                    taken_at = %by,
                    "connection held longer than leak_threshold ({threshold} ms); taken by the `get` at {by}"
                );
            }
        }
    }
}
