//! What a maintenance pass does (expire idle and old connections, report
//! leaks, refill `min_idle`) and who runs it: whoever wins one atomic flag.
//!
//! There is no maintenance thread. Three kinds of caller run passes:
//!
//! - **Busy threads, cooperatively.** Every 64th release on a thread reads
//!   the real clock (refreshing the pool's cached reading) and, if a pass is
//!   due, tries the flag; the winner runs one bounded pass, everyone else
//!   moves on. On the other 63 the hot path pays one thread-local increment.
//! - **A small Tokio task** started when a runtime is present (at `build`
//!   or the first `get`), holding only a `Weak`, runs a pass every `period`
//!   so that expiry happens without traffic. The pool stays correct if it
//!   never runs: without it, the acquire path reads the real clock instead
//!   of the cached one (see `Shared::now_for_checks`).
//! - **[`Pool::maintain`](crate::Pool::maintain)**, for callers without a
//!   runtime and for tests that drive a mock clock.
//!
//! A pass drains the inbox of new connections into the timer wheel
//! (`wheel.rs`), advances the wheel to now and handles at most
//! [`MAX_DUE_PER_PASS`] due entries, so its cost is O(entries due), not
//! O(pool): an idle deadline is checked lazily when it fires (re-scheduled
//! if the connection was used since), a lifetime deadline closes the
//! connection in place if it is idle, or leaves it to the release path if
//! it is in use. The leak scan (only with `leak_threshold`) visits every
//! slot, but at most once per half threshold.
//!
//! # Which runtime
//!
//! Background work runs on the runtime of whoever starts it, never on one
//! remembered from earlier: a pool outlives runtimes (a `static` pool
//! shared by `#[tokio::test]`s sees one per test), a handle cannot tell
//! whether its runtime is gone, and what is spawned on a runtime that is
//! gone is dropped unrun. So:
//!
//! - The background task is started on the current runtime: by `build` or
//!   a `get` that finds nothing idle, and, once the runtime it ran on has
//!   dropped it, by any pass run inside a runtime ([`Pool::maintain`], a
//!   busy thread's share): a later runtime takes over.
//! - Refills are spawned on the current runtime. A pass outside any
//!   runtime leaves them to the background task's next pass, at most one
//!   period later. With `background(false)` nothing is spawned at all.
//! - Every task owns its count from the spawn on (`Ticking` clears
//!   `ticking`, `Refilling` gives back its share of `refilling`), so a task
//!   that a runtime drops unpolled gives it back: no count leaks, and no
//!   later runtime is locked out.
//!
//! [`Pool::maintain`]: crate::Pool::maintain
//!
//! # Invariants kept
//!
//! - One pass at a time: the wheel and the pass's scratch space are touched
//!   only by the holder of `running` (Acquire on winning, Release on
//!   leaving, so consecutive passes see each other's writes).
//! - Maintenance takes a connection only through `Slots::claim_in_place`
//!   (the same CAS as any acquirer, I1) and closes it before its place is
//!   given on (I2, I3). It counts the key that claim leaves stale in the
//!   idle set *before* claiming (`close_in_place`; the stale-key invariant
//!   is in `shards.rs`), so `state().idle`, idle-timeout reaping and the
//!   `min_idle` refill never work from a drifted count.
//! - Maintenance never blocks a caller: losing the flag means skipping.

use std::future::Future;
use std::sync::Weak;
use std::task::Poll;
use std::time::Duration;

use crate::Manager;
use crate::deadlines::Sweeper;
use crate::lifetime::Owner;
use crate::pool::{Retired, Shared};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering, SegQueue, UnsafeCell};
use crate::wheel::TimerWheel;

/// The most due entries one pass handles; the rest stay due for the next.
pub(crate) const MAX_DUE_PER_PASS: usize = 256;
/// The most connects that refill `min_idle` at once.
pub(crate) const MAX_REFILL_CONNECTS: usize = 2;

/// Which deadline a timer entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// `idle_timeout` after the connection's last release (lazily checked).
    Idle,
    /// The connection's `expires_at`.
    Lifetime,
}

/// A timer entry: the connection (slot + serial) and the deadline kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) index: u32,
    pub(crate) serial: u64,
    pub(crate) kind: Deadline,
}

/// State owned by the flag holder.
struct Owned {
    wheel: TimerWheel<Entry>,
    /// Scratch space for due entries (reused: no allocation per pass).
    due: Vec<Entry>,
    /// Tick of the last leak scan.
    last_leak_scan: u64,
}

/// The maintenance machinery of one pool.
pub(crate) struct Maintenance {
    /// Held by the pass in progress.
    running: AtomicBool,
    /// Tick at which the next pass is due (a hint for cooperative callers).
    next_due: AtomicU64,
    /// Entries scheduled by creators, drained into the wheel by a pass.
    inbox: SegQueue<(u64, Entry)>,
    owned: UnsafeCell<Owned>,
    /// Event sequence: opens, passed checks and failures each take the
    /// next number, so "verified before the last failure" is exact even
    /// within one clock tick.
    seq: AtomicU64,
    /// Sequence number of the latest failed check or broken connection
    /// (0 = none): connections verified before it are checked before their
    /// next use (the server-restart epoch).
    pub(crate) restart_epoch: AtomicU64,
    /// Refill tasks running (at most `MAX_REFILL_CONNECTS`).
    pub(crate) refilling: AtomicUsize,
    /// Refill connects in flight (counted towards `min_idle`).
    pub(crate) refill_connects: AtomicUsize,
    /// Whether the background task runs (then the cached clock is fresh).
    pub(crate) ticking: AtomicBool,
    /// Passes run (for tests and metrics).
    pub(crate) passes: AtomicU64,
    /// Milliseconds between background passes.
    pub(crate) period_ms: u64,
}

// SAFETY: `owned` is accessed only by the holder of `running` (module
// invariants); everything else is atomic or a concurrent queue.
unsafe impl Sync for Maintenance {}

impl Maintenance {
    /// `max_size` sizes the wheel up front (two deadlines per connection:
    /// idle and lifetime), so that passes allocate nothing once the pool
    /// runs, not even the first.
    pub(crate) fn new(now: u64, period_ms: u64, max_size: usize) -> Self {
        Self {
            running: AtomicBool::new(false),
            next_due: AtomicU64::new(now.saturating_add(period_ms)),
            inbox: SegQueue::new(),
            owned: UnsafeCell::new(Owned {
                wheel: TimerWheel::with_capacity(now, max_size.saturating_mul(2)),
                due: Vec::with_capacity(MAX_DUE_PER_PASS),
                last_leak_scan: now,
            }),
            seq: AtomicU64::new(1),
            restart_epoch: AtomicU64::new(0),
            refilling: AtomicUsize::new(0),
            refill_connects: AtomicUsize::new(0),
            ticking: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            period_ms,
        }
    }

    /// Schedules `entry` at `deadline` (any thread; applied by the next pass).
    pub(crate) fn schedule(&self, deadline: u64, entry: Entry) {
        self.inbox.push((deadline, entry));
        self.next_due.fetch_min(deadline, Ordering::Relaxed);
    }

    /// Whether a pass is due at `now` (one relaxed load).
    #[inline(always)]
    pub(crate) fn is_due(&self, now: u64) -> bool {
        now >= self.next_due.load(Ordering::Relaxed)
    }

    /// The next event sequence number (for an open or a passed check).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks that a check failed or a connection broke: every connection
    /// verified before now is checked before its next use.
    pub(crate) fn note_failure(&self) {
        let s = self.next_seq();
        self.restart_epoch.fetch_max(s, Ordering::Relaxed);
    }

    /// Runs one bounded pass if no other is running.
    pub(crate) fn pass<M: Manager>(&self, shared: &Shared<M>, now: u64) -> Retired {
        // Acquire pairs with the Release at the end of the previous pass.
        // loom mutant: maintenance_no_flag, see loom-tests/run-mutants.sh
        if !crate::sync::mutant("maintenance_no_flag")
            && self
                .running
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return Retired(0);
        }
        // SAFETY: we hold `running`, so nobody else touches `owned`.
        let retired = self
            .owned
            .with_mut(|o| unsafe { self.run(&mut *o, shared, now) });
        self.running.store(false, Ordering::Release);
        self.passes.fetch_add(1, Ordering::Relaxed);
        retired
    }

    fn run<M: Manager>(&self, o: &mut Owned, shared: &Shared<M>, now: u64) -> Retired {
        let cfg = &shared.config;
        while let Some((deadline, entry)) = self.inbox.pop() {
            o.wheel.insert(deadline, entry);
        }
        o.due.clear();
        let due = &mut o.due;
        o.wheel
            .advance(now, MAX_DUE_PER_PASS, |_, _, e| due.push(e));
        let mut retired = 0;
        let idle_timeout = cfg.idle_timeout.map(ms);
        for &entry in o.due.iter() {
            let facts = shared.slots.facts(entry.index);
            if facts.serial != entry.serial {
                continue; // that connection is gone
            }
            match entry.kind {
                Deadline::Lifetime => {
                    // In use: the release path closes it (it is past
                    // `expires_at`). Idle: close it here.
                    retired += close_in_place(shared, entry).unwrap_or(0);
                }
                Deadline::Idle => {
                    let Some(timeout) = idle_timeout else {
                        continue;
                    };
                    let idle_since = facts.released_at;
                    let expires = idle_since.saturating_add(timeout);
                    let busy = shared.slots.is_busy_with(entry.index, entry.serial);
                    if !busy && now >= expires && shared.idle_count() > cfg.min_idle {
                        if let Some(n) = close_in_place(shared, entry) {
                            retired += n;
                            continue;
                        }
                    }
                    // Used since, in use, or kept for `min_idle`: look again
                    // one timeout after its last release (or from now).
                    let next = if expires > now {
                        expires
                    } else {
                        now.saturating_add(timeout)
                    };
                    o.wheel.insert(next, entry);
                }
            }
        }
        if let Some(threshold) = cfg.leak_threshold.map(ms) {
            if now.saturating_sub(o.last_leak_scan) >= (threshold / 2).max(1) {
                o.last_leak_scan = now;
                shared.report_leaks(threshold);
            }
        }
        let next = o
            .wheel
            .next_deadline()
            .unwrap_or(u64::MAX)
            .min(now.saturating_add(self.period_ms));
        self.next_due.store(next, Ordering::Relaxed);
        Retired(retired)
    }
}

/// Closes the connection of `entry` where it lies if it is still idle, and
/// returns the references retired; `None` if it is not idle (any more).
/// Its key stays in the idle set, stale: counted before the claim that
/// makes it so (the stale-key invariant in `shards.rs`).
fn close_in_place<M: Manager>(shared: &Shared<M>, entry: Entry) -> Option<usize> {
    shared.shards.count_stale();
    if !shared.slots.claim_in_place(entry.index, entry.serial) {
        shared.shards.uncount_stale();
        return None;
    }
    crate::metrics::bump(&shared.counters.expired);
    Some(shared.retire(entry.index).0)
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("next_due", &self.next_due.load(Ordering::Relaxed))
            .field("passes", &self.passes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A duration in whole clock ticks (ms), at least 1.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Ends the background task's duties when it ends or its runtime drops
/// it: stops its deadline sweeper (tracked waiters arm their own timers),
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
    sweeper: Option<Sweeper>,
}

impl<M: Manager> Drop for Ticking<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.weak.upgrade() {
            if let Some(sweeper) = self.sweeper.as_mut() {
                shared.deadlines.stop(sweeper);
            }
            shared.maintenance.ticking.store(false, Ordering::Relaxed);
            if shared.ticks.uses_clock {
                shared.clock.cache(false);
            }
        }
    }
}

/// The background task: a maintenance pass every `period`, and the
/// deadlines of parked waiters (`deadlines.rs`), while the pool lives.
/// Holds no strong reference across an await.
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
            let sweeper = ticking
                .sweeper
                .get_or_insert_with(|| shared.deadlines.start());
            let now = tokio::time::Instant::now();
            if now >= next_tick {
                let retired = shared.maintenance.pass(&shared, shared.clock.now());
                crate::pool::settle_held(&shared, retired);
                shared.refill();
                next_tick = now + period;
            }
            let wake_at = shared.deadlines.sweep(
                sweeper,
                &shared.waiters,
                now,
                next_tick,
                &shared.counters.timeouts_swept,
            );
            sleep.as_mut().reset(wake_at);
        }
        std::future::poll_fn(|cx| {
            let Some(shared) = weak.upgrade() else {
                return Poll::Ready(());
            };
            if shared.deadlines.kicked(cx) {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }
}

impl<M: Manager> Shared<M> {
    /// Starts the background task (and the `min_idle` refill) if a Tokio
    /// runtime is present and it is not running yet. Cheap when it runs.
    pub(crate) fn start_background(&self) {
        if !self.config.background
            || self.maintenance.ticking.load(Ordering::Relaxed)
            || self.closed.load(Ordering::Relaxed)
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.start_ticker(&handle);
        self.spawn_refills(&handle);
    }

    /// Spawns the background task on `handle` unless one runs.
    fn start_ticker(&self, handle: &tokio::runtime::Handle) {
        if self.maintenance.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        // From now on the task keeps the hot path's reading fresh.
        if self.ticks.uses_clock {
            self.clock.cache(true);
        }
        // Owned by the task from here: dropped unpolled, it clears
        // `ticking` (and the caching) again.
        let ticking = Ticking {
            weak: self.weak.clone(),
            sweeper: None,
        };
        let period = Duration::from_millis(self.maintenance.period_ms);
        handle.spawn(ticker(ticking, period));
    }

    /// A pass's follow-up, on the current runtime: restarts the background
    /// task if its runtime dropped it, and starts `min_idle` refills
    /// (module docs, "Which runtime"). Outside a runtime, or with
    /// `background(false)`, it does nothing.
    pub(crate) fn refill(&self) {
        if !self.config.background || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.maintenance.ticking.load(Ordering::Relaxed) {
            self.start_ticker(&handle);
        }
        self.spawn_refills(&handle);
    }

    /// Starts refill connects on `handle` (at most [`MAX_REFILL_CONNECTS`]
    /// at once) while fewer than `min_idle` connections are idle and places
    /// are free. Spawns at most that many per call, so a runtime that drops
    /// its tasks at once (shutting down) cannot keep it spinning.
    fn spawn_refills(&self, handle: &tokio::runtime::Handle) {
        let min = self.config.min_idle;
        let mut spawned = 0;
        while min != 0 && spawned < MAX_REFILL_CONNECTS {
            let inflight = self.maintenance.refilling.load(Ordering::Relaxed);
            let connecting = self.maintenance.refill_connects.load(Ordering::Relaxed);
            if inflight >= MAX_REFILL_CONNECTS
                || self.idle_count() + connecting >= min
                || self.slots.taken() >= self.slots.capacity()
            {
                return;
            }
            if self
                .maintenance
                .refilling
                .compare_exchange(inflight, inflight + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let Some(me) = self.weak.upgrade() else {
                self.maintenance.refilling.fetch_sub(1, Ordering::Relaxed);
                return;
            };
            // The count belongs to the task from here: a runtime that drops
            // it unpolled gives it back (it used to leak, and after
            // `MAX_REFILL_CONNECTS` such spawns refills stopped for good).
            handle.spawn(refill_task(Refilling(me)));
            spawned += 1;
        }
    }

    /// Reports (once each) connections held longer than `threshold` ticks.
    ///
    /// Compares a real clock reading taken here (not the cached one, nor
    /// the pass's `now`, whoever computed it) with the real stamp taken at
    /// hand-out (`Pool::hand_out`), so `held_ms` is the true hold time at
    /// the scan, within a millisecond (scans run every half threshold,
    /// rounded up to the next pass, so a report comes at most that late).
    /// Ticks are whole milliseconds, so a stamp and a reading `threshold`
    /// ticks apart may be up to 1 ms less apart in truth: a holding is
    /// reported from `threshold + 1` ticks, never before the threshold has
    /// really passed.
    pub(crate) fn report_leaks(&self, threshold: u64) {
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

/// One refill task's share of `refilling`, taken before the spawn and
/// given back when the task ends or is dropped, polled or not.
struct Refilling<M: Manager>(std::sync::Arc<Owner<M>>);

impl<M: Manager> Drop for Refilling<M> {
    fn drop(&mut self) {
        self.0.maintenance.refilling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One refill connect in flight (see `refill_task`).
struct RefillConnect<'a, M: Manager> {
    shared: &'a Shared<M>,
    /// Refill connects in flight besides this one.
    others: usize,
}

impl<'a, M: Manager> RefillConnect<'a, M> {
    fn new(shared: &'a Shared<M>) -> Self {
        let others = shared
            .maintenance
            .refill_connects
            .fetch_add(1, Ordering::Relaxed);
        Self { shared, others }
    }
}

impl<M: Manager> Drop for RefillConnect<'_, M> {
    fn drop(&mut self) {
        self.shared
            .maintenance
            .refill_connects
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens connections into free places until `min_idle` are idle.
async fn refill_task<M: Manager>(guard: Refilling<M>) {
    let shared = &guard.0;
    let mut backoff = shared.config.connect_backoff;
    loop {
        // Claim one connect of the shortfall; connects in flight count as
        // idle-to-be, so concurrent refills never overshoot `min_idle`.
        let claim = RefillConnect::new(shared);
        if shared.closed.load(Ordering::Acquire)
            || shared.idle_count() + claim.others >= shared.config.min_idle
        {
            return;
        }
        let Some(index) = shared.slots.reserve() else {
            return;
        };
        let place = crate::pool::PlaceGuard::new(shared, index);
        // One round of the connect path `get` uses (counted as connecting,
        // attempts bounded by `connect_timeout`); between rounds the place
        // goes back, so a `get` may take it.
        let deadline = tokio::time::Instant::now().checked_add(shared.config.connect_timeout);
        match crate::connector::open(shared, place, deadline).await {
            Ok(index) => {
                // Stamped like any connection going idle (`check_after_idle`).
                let now = shared.now_for_checks();
                shared.stamp_fresh(index, shared.slots.expires_at(index), now);
                // Straight to a waiter if one is parked, else idle.
                let retired = shared.grant(crate::waiters::Grant::Slot(index));
                crate::pool::settle_held(shared, retired);
                backoff = shared.config.connect_backoff;
            }
            Err(crate::PoolError::Closed) => return,
            Err(_) => {
                tokio::time::sleep(shared.jitter(backoff)).await;
                backoff = backoff
                    .saturating_mul(2)
                    .min(shared.config.max_connect_backoff);
            }
        }
    }
}
