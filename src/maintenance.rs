//! The housekeeper: what a maintenance pass does (expire idle and old
//! connections, report leaks) and the one atomic flag that makes passes run
//! one at a time. It knows no core type: a pass calls its owner back
//! through the small [`Household`] trait (as moka's housekeeper calls its
//! cache's `InnerSync`), which the core implements (`core.rs`). Who runs
//! passes, where and when (busy threads, the Tokio ticker,
//! `Pool::maintain`), and what else a round of housekeeping does (the
//! `min_idle` refill, probes, a health sample, serving a waiter left
//! asleep) are `background.rs`'s. Waiter deadlines are not maintenance's
//! either: they live in the waiter nodes and the background task sweeps
//! them (`waiters.rs`, "Time out").
//!
//! There is no maintenance thread. Three kinds of caller run passes:
//!
//! - **Busy threads, cooperatively.** Every 64th release on a thread reads
//!   the real clock (refreshing the pool's cached reading) and, if a pass is
//!   due, tries the flag; the winner runs one bounded pass, everyone else
//!   moves on. On the other 63 the hot path pays one thread-local increment.
//! - **A small Tokio task** started when a runtime is present (at `build`
//!   or the first `get` that misses), holding only a `Weak` between rounds,
//!   runs a pass every `period` so that expiry happens without traffic. The
//!   pool stays correct if it never runs: without it, the acquire path
//!   reads the real clock instead of the cached one
//!   (`Core::now_for_checks`).
//! - **[`Pool::maintain`](crate::Pool::maintain)**, for callers without a
//!   runtime and for tests that drive a mock clock.
//!
//! A pass files the deadlines of the slots that a new connection filled
//! since the last pass (the inbox: slot indices, each at most once) into
//! the timer wheel (`wheel.rs`), advances the wheel to now and handles at
//! most [`MAX_DUE_PER_PASS`] due entries, so its cost is O(entries due),
//! not O(pool): an idle deadline is checked lazily when it fires
//! (re-scheduled if the connection was used since), a lifetime deadline
//! closes the connection in place if it is idle, or leaves it to the
//! release path if it is in use. The leak scan (only with
//! `leak_threshold`) visits every slot, but at most once per half
//! threshold.
//!
//! Memory is bounded by the pool's size, not by how many connections it
//! opens: a slot has at most two entries in the wheel (idle, lifetime),
//! moved when a new connection fills it, and the inbox has room for each
//! slot once. An entry for a connection closed meanwhile stays until it
//! fires or its slot is refilled, and is then skipped (its serial is no
//! longer the slot's).
//!
//! # Invariants kept
//!
//! - One pass at a time: the wheel and the pass's scratch space are touched
//!   only by the holder of `running` (Acquire on winning, Release on
//!   leaving, so consecutive passes see each other's writes).
//! - Maintenance takes a connection only through
//!   [`Household::close_in_place`], which claims it with
//!   `IdleSet::claim_in_place` (the same CAS as any acquirer, IDLE or
//!   PARKED to BUSY, I1) and closes it before its place is given on (I2,
//!   I3). Claiming an IDLE slot in place leaves its key stale in the
//!   shards, and it is counted *before* the claim (the stale-key invariant
//!   is `idle.rs`'s), so `state().idle`, idle-timeout reaping and the
//!   `min_idle` refill never work from a drifted count.
//! - Idle timeouts never take the pool below `min_idle`.
//! - Maintenance never blocks a caller: losing the flag means skipping.
//! - `ticking`, `refilling` and `idle_claims` are the background
//!   tasks' counts (`background.rs`), kept here so that the core holds them
//!   without knowing the tasks.

use crate::lifetime::Retired;
use crate::slots::Life;
use crate::sync::{ArrayQueue, AtomicBool, AtomicU64, AtomicUsize, Ordering, UnsafeCell};
use crate::wheel::{TimerKey, TimerWheel};

/// The most due entries one pass handles; the rest stay due for the next.
pub(crate) const MAX_DUE_PER_PASS: usize = 256;
/// The most connects that refill `min_idle` at once.
pub(crate) const MAX_REFILL_CONNECTS: usize = 2;

/// Where a slot's idle entry sits in [`Owned::timers`].
const IDLE: usize = 0;
/// Where a slot's lifetime entry sits in [`Owned::timers`].
const LIFETIME: usize = 1;
/// Where a slot's keepalive entry sits in [`Owned::timers`].
const KEEPALIVE: usize = 2;
/// Where a slot's replacement entry sits in [`Owned::timers`].
const REPLACE: usize = 3;
/// Timer entries per slot.
const PER_SLOT: usize = 4;

/// Which deadline a timer entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// `idle_timeout` after the connection's last release (lazily checked).
    Idle,
    /// The connection's `expires_at`.
    Lifetime,
    /// `keepalive` after the connection's last release or last keepalive
    /// check, whichever is later (lazily checked, like `Idle`).
    Keepalive,
    /// The replacement lead before `expires_at`
    /// (`Builder::replace_before_expiry`).
    Replace,
}

/// A timer entry: the connection (slot + serial) and the deadline kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) index: u32,
    pub(crate) serial: u64,
    pub(crate) kind: Deadline,
}

/// What a pass needs of the pool it keeps house for: the owner's side of
/// the housekeeper (moka's `InnerSync`, cut down). The housekeeper knows no
/// core type; the core implements this (`core.rs`).
pub(crate) trait Household {
    /// The lifecycle facts of slot `index` (a hint for a slot not owned).
    fn life(&self, index: u32) -> &Life;
    /// Whether slot `index` holds connection `serial` and is in use (a hint).
    fn is_busy_with(&self, index: u32, serial: u64) -> bool;
    /// Idle connections now.
    fn idle_count(&self) -> usize;
    /// Closes connection `serial` in slot `index` where it lies if it is
    /// still idle, adding its reference to `retired`; false if it is not
    /// idle (any more).
    fn close_in_place(&self, index: u32, serial: u64, retired: &mut Retired) -> bool;
    /// Reports connections held longer than `threshold` ticks.
    fn report_leaks(&self, threshold: u64);
    /// Starts a keepalive check of connection `serial` in slot `index` if
    /// it is idle (`offpath.rs`).
    fn keepalive(&self, index: u32, serial: u64) -> Started;
    /// Starts the replacement of connection `serial` in slot `index`,
    /// which expires soon; `used`: it is in use or was returned within the
    /// lead (`offpath.rs`).
    fn replace(&self, index: u32, serial: u64, used: bool) -> Started;
    /// Whether any connection is in use now (a hint).
    fn any_in_use(&self) -> bool;
}

/// State owned by the flag holder.
struct Owned {
    wheel: TimerWheel<Entry>,
    /// Each slot's timer entries (idle, lifetime, keepalive,
    /// replacement), rescheduled in place when a new connection fills the
    /// slot: the wheel never holds more than [`PER_SLOT`] entries per
    /// slot, however many connections the pool opens. A key may be stale
    /// (its entry fired); cancelling it is a no-op.
    timers: Box<[[Option<TimerKey>; PER_SLOT]]>,
    /// The keepalive jitter's xorshift state (never zero).
    rng: u64,
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
    /// Slots whose connection changed since the last pass (a new one
    /// opened into them), each at most once: a pass files their deadlines.
    /// Room for every slot, so a push never fails.
    inbox: ArrayQueue<u32>,
    /// Per slot: in `inbox` and not yet taken by a pass.
    queued: Box<[AtomicBool]>,
    owned: UnsafeCell<Owned>,
    /// `idle_timeout` in ticks (`None`: off).
    idle_timeout: Option<u64>,
    /// `leak_threshold` in ticks (0: off).
    leak_threshold: u64,
    /// `keepalive` in ticks (`None`: off).
    keepalive: Option<u64>,
    /// The replacement lead in ticks (`None`: off), at most a quarter of
    /// `max_lifetime`.
    replace_lead: Option<u64>,
    /// Keepalive checks in flight (at most `offpath::MAX_KEEPALIVE_CHECKS`).
    pub(crate) keepalives: AtomicUsize,
    /// `min_idle`: idle timeouts never go below it.
    min_idle: usize,
    /// Refill tasks running (at most `MAX_REFILL_CONNECTS`).
    pub(crate) refilling: AtomicUsize,
    /// Connects in flight that will leave an idle connection behind (the
    /// refill's and `warm_up`'s, `background::IdleClaim`).
    pub(crate) idle_claims: AtomicUsize,
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
    /// `max_size` sizes the wheel up front ([`PER_SLOT`] deadlines per
    /// connection), so that passes allocate nothing once the pool runs,
    /// not even the first.
    pub(crate) fn new(now: u64, period_ms: u64, max_size: usize, times: Times) -> Self {
        let Times {
            idle_timeout,
            leak_threshold,
            min_idle,
            keepalive,
            replace_lead,
        } = times;
        Self {
            running: AtomicBool::new(false),
            next_due: AtomicU64::new(now.saturating_add(period_ms)),
            inbox: ArrayQueue::new(max_size.max(1)),
            queued: (0..max_size).map(|_| AtomicBool::new(false)).collect(),
            owned: UnsafeCell::new(Owned {
                wheel: TimerWheel::with_capacity(now, max_size.saturating_mul(PER_SLOT)),
                timers: vec![[None; PER_SLOT]; max_size].into_boxed_slice(),
                rng: (0x9E37_79B9_7F4A_7C15 ^ now) | 1,
                due: Vec::with_capacity(MAX_DUE_PER_PASS),
                last_leak_scan: now,
            }),
            idle_timeout,
            leak_threshold,
            keepalive,
            replace_lead,
            keepalives: AtomicUsize::new(0),
            min_idle,
            refilling: AtomicUsize::new(0),
            idle_claims: AtomicUsize::new(0),
            ticking: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            period_ms,
        }
    }

    /// A new connection filled slot `index` (any thread): the next pass
    /// files its deadlines, the earliest of which is `earliest`.
    pub(crate) fn schedule(&self, index: u32, earliest: u64) {
        // AcqRel pairs with the pass's swap in `refile`: either this swap
        // comes first and the pass, which reads the slot after its own,
        // sees the new connection's facts, or it reads `false` and the
        // index goes into the inbox again.
        if !self.queued[index as usize].swap(true, Ordering::AcqRel) {
            let pushed = self.inbox.push(index);
            debug_assert!(pushed.is_ok(), "the inbox has room for every slot");
        }
        self.next_due.fetch_min(earliest, Ordering::Relaxed);
    }

    /// Whether a pass is due at `now` (one relaxed load).
    #[inline(always)]
    pub(crate) fn is_due(&self, now: u64) -> bool {
        now >= self.next_due.load(Ordering::Relaxed)
    }

    /// Runs one bounded pass if no other is running; what it closes adds
    /// to `retired`.
    pub(crate) fn pass(&self, house: &impl Household, now: u64, retired: &mut Retired) {
        // Acquire pairs with the Release at the end of the previous pass.
        // loom mutant: maintenance_no_flag, see loom-tests/run-mutants.sh
        if !crate::sync::mutant("maintenance_no_flag")
            && self
                .running
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // SAFETY: we hold `running`, so nobody else touches `owned`.
        self.owned
            .with_mut(|o| unsafe { self.run(&mut *o, house, now, retired) });
        self.running.store(false, Ordering::Release);
        self.passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Files the deadlines of the connection now in slot `index`, in
    /// place of the slot's earlier entries.
    fn refile(&self, o: &mut Owned, house: &impl Household, index: u32) {
        self.queued[index as usize].swap(false, Ordering::AcqRel);
        let life = house.life(index);
        let serial = life.serial();
        let keys = &mut o.timers[index as usize];
        for key in keys.iter_mut() {
            if let Some(k) = key.take() {
                o.wheel.cancel(k);
            }
        }
        if serial == 0 {
            return; // closed already
        }
        let entry = |kind| Entry {
            index,
            serial,
            kind,
        };
        if let Some(timeout) = self.idle_timeout {
            let at = life.released_at().saturating_add(timeout);
            keys[IDLE] = Some(o.wheel.insert(at, entry(Deadline::Idle)));
        }
        if let Some(keepalive) = self.keepalive {
            let at = life.released_at().saturating_add(keepalive);
            keys[KEEPALIVE] = Some(o.wheel.insert(at, entry(Deadline::Keepalive)));
        }
        let expires = life.expires_at();
        if expires != u64::MAX {
            keys[LIFETIME] = Some(o.wheel.insert(expires, entry(Deadline::Lifetime)));
            if let Some(lead) = self.replace_lead {
                let at = expires.saturating_sub(lead);
                keys[REPLACE] = Some(o.wheel.insert(at, entry(Deadline::Replace)));
            }
        }
    }

    fn run(&self, o: &mut Owned, house: &impl Household, now: u64, retired: &mut Retired) {
        while let Some(index) = self.inbox.pop() {
            self.refile(o, house, index);
        }
        o.due.clear();
        let due = &mut o.due;
        o.wheel
            .advance(now, MAX_DUE_PER_PASS, |_, _, e| due.push(e));
        let idle_timeout = self.idle_timeout;
        for &entry in o.due.iter() {
            let life = house.life(entry.index);
            if life.serial() != entry.serial {
                continue; // that connection is gone
            }
            match entry.kind {
                Deadline::Lifetime => {
                    // In use: the release path closes it (it is past
                    // `expires_at`). Idle: close it here.
                    house.close_in_place(entry.index, entry.serial, retired);
                }
                Deadline::Idle => {
                    let Some(timeout) = idle_timeout else {
                        continue;
                    };
                    let idle_since = life.released_at();
                    let expires = idle_since.saturating_add(timeout);
                    let busy = house.is_busy_with(entry.index, entry.serial);
                    if !busy
                        && now >= expires
                        && house.idle_count() > self.min_idle
                        && house.close_in_place(entry.index, entry.serial, retired)
                    {
                        continue;
                    }
                    // Used since, in use, or kept for `min_idle`: look again
                    // one timeout after its last release (or from now).
                    let next = if expires > now {
                        expires
                    } else {
                        now.saturating_add(timeout)
                    };
                    o.timers[entry.index as usize][IDLE] = Some(o.wheel.insert(next, entry));
                }
                Deadline::Keepalive => {
                    let Some(keepalive) = self.keepalive else {
                        continue;
                    };
                    // The entry fired: the last check (when it was filed)
                    // is at least `keepalive` ago. Idle that long too?
                    let due = life.released_at().saturating_add(keepalive);
                    let next = if house.is_busy_with(entry.index, entry.serial) {
                        now.saturating_add(keepalive)
                    } else if due > now {
                        due
                    } else {
                        match house.keepalive(entry.index, entry.serial) {
                            // Up to a tenth early, so that connections
                            // checked together drift apart.
                            Started::Yes => {
                                let spread = (keepalive / 10).max(1);
                                now.saturating_add(keepalive - next_random(&mut o.rng) % spread)
                            }
                            Started::Later => now.saturating_add(self.period_ms),
                            Started::NotIdle => now.saturating_add(keepalive),
                            Started::No => continue,
                        }
                    };
                    o.timers[entry.index as usize][KEEPALIVE] = Some(o.wheel.insert(next, entry));
                }
                Deadline::Replace => {
                    let Some(lead) = self.replace_lead else {
                        continue;
                    };
                    let busy = house.is_busy_with(entry.index, entry.serial);
                    let used = busy
                        || house.any_in_use()
                        || now.saturating_sub(life.released_at()) <= lead;
                    let retry = match house.replace(entry.index, entry.serial, used) {
                        Started::Later => true,
                        Started::Yes | Started::NotIdle | Started::No => false,
                    };
                    // No place and the old one in use: look again each
                    // period until it expires (then the release path or
                    // the lifetime entry closes it).
                    let at = now.saturating_add(self.period_ms);
                    if retry && at < life.expires_at() {
                        o.timers[entry.index as usize][REPLACE] = Some(o.wheel.insert(at, entry));
                    }
                }
            }
        }
        let threshold = self.leak_threshold;
        if threshold != 0 && now.saturating_sub(o.last_leak_scan) >= (threshold / 2).max(1) {
            o.last_leak_scan = now;
            house.report_leaks(threshold);
        }
        let next = o
            .wheel
            .next_deadline()
            .unwrap_or(u64::MAX)
            .min(now.saturating_add(self.period_ms));
        self.next_due.store(next, Ordering::Relaxed);
    }
}

/// What a pass's request for off-path work (`offpath.rs`) came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Started {
    /// A task took it on.
    Yes,
    /// The connection is in use (or gone): nothing to do now.
    NotIdle,
    /// Not now (no runtime, too many checks in flight, no free place and
    /// nothing idle to replace): ask again at a later pass.
    Later,
    /// Not wanted (the pool is closed or unused, the backend down).
    No,
}

/// What a pass needs to know of the pool's times, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Times {
    /// `idle_timeout` (`None`: off).
    pub(crate) idle_timeout: Option<u64>,
    /// `leak_threshold` (0: off).
    pub(crate) leak_threshold: u64,
    /// `min_idle`: idle timeouts never go below it.
    pub(crate) min_idle: usize,
    /// `keepalive` (`None`: off).
    pub(crate) keepalive: Option<u64>,
    /// How long before `expires_at` a connection is replaced (`None`: off).
    pub(crate) replace_lead: Option<u64>,
}

/// One step of a xorshift64 generator (`state` never zero).
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("next_due", &self.next_due.load(Ordering::Relaxed))
            .field("passes", &self.passes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
