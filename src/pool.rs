//! [`Pool`]: the acquire path (`get`, `get_timeout`, `try_get`), `state()`,
//! `close()`, and the shared core that the release path in `pooled.rs`
//! returns connections to.
//!
//! # Acquire
//!
//! 1. Pop a key from the caller's home shard (stealing from the others if
//!    empty) and claim its slot with one CAS; a stale key is skipped.
//! 2. Nothing idle: reserve a place (pop a free slot) and connect, bounded
//!    by `connect_timeout`.
//! 3. At the cap: register as a waiter (or fail with `Exhausted`), re-check
//!    the idle set and free places, then park until a releaser hands over a
//!    connection or a place, the pool closes, or the deadline passes.
//!
//! Steps 1 and the return of a [`Pooled`] allocate nothing and read no
//! clock; step 3 allocates one small node.
//!
//! # Lifetime of the shared core
//!
//! `Pool` clones share one `Handle`, whose `Drop` closes the pool; the
//! handle holds one strong reference to the `Shared` core, and so does
//! every open connection (taken when it is opened, given back when it is
//! closed or detached). A [`Pooled`] therefore needs no reference count of
//! its own (saving two atomic RMWs per acquire): its connection keeps the
//! core alive. Functions that close connections return those references as
//! a [`Retired`] count, dropped only after the last use of `&Shared`.
//! Between publishing a healthy connection and its last re-check, a
//! releaser no longer owns it; its thread's hazard slot (`hazard.rs`)
//! covers that window at the cost of two plain stores, and `Drop for
//! Shared` waits until no slot names the core.
//!
//! # Invariants kept
//!
//! I1 (via `slots.rs`), I2 (a connection lives in a slot; a place is a
//! slot), I3 (every close path runs `close_quietly` once and returns the
//! place), I4 and I7 (via `waiters.rs` and [`Shared::grant`]), I5 (every
//! await point holds what it owns in a guard whose `Drop` gives it back).

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::builder::{Builder, Config};
use crate::clock::Clock;
use crate::connector::CheckGuard;
use crate::deadlines::Deadlines;
use crate::lifetime::Owner;
pub(crate) use crate::lifetime::{Retired, settle_held};
use crate::maintenance::{Maintenance, ms};
use crate::metrics::{Counters, Metrics, State, bump};
use crate::shards::Shards;
use crate::slots::Slots;
use crate::sync::{self, AtomicBool, AtomicU64, Ordering, fence, mutant};
use crate::waiters::{Grant, Node, Outcome, Waiters};
use crate::{Manager, PoolError, Pooled};

/// Drops a connection, containing a panic in its `Drop` so that a faulty
/// connection type cannot lose a place.
pub(crate) fn close_quietly<C>(conn: Option<C>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(conn)));
}

/// The state all handles, guards and waiters share.
pub(crate) struct Shared<M: Manager> {
    pub(crate) manager: M,
    pub(crate) config: Config,
    pub(crate) slots: Slots<M::Connection>,
    pub(crate) shards: Shards,
    pub(crate) waiters: Waiters,
    /// Deadlines of parked waiters, timed out by the background task.
    pub(crate) deadlines: Deadlines,
    /// Set once by `close`; SeqCst where it takes part in the re-check
    /// arguments (see `grant` and `close`).
    pub(crate) closed: AtomicBool,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    pub(crate) maintenance: Maintenance,
    /// Settings turned into clock ticks once, for the hot path.
    pub(crate) ticks: Ticks,
    /// This core's owner, for spawning background work from `&self` and
    /// for counting references with the `Arc`'s own provenance.
    pub(crate) weak: Weak<Owner<M>>,
    /// State of the jitter generator (xorshift; cold paths only).
    pub(crate) rng: AtomicU64,
}

/// Lifecycle settings in clock ticks (ms); 0 or `None` = off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticks {
    /// `max_lifetime` (0 = none).
    pub(crate) lifetime: u64,
    /// `check_after_idle` (`u64::MAX` = off).
    pub(crate) check_after_idle: u64,
    /// `leak_threshold` (0 = off).
    pub(crate) leak: u64,
    /// How early a lifetime ends so that the cached clock, at most one
    /// maintenance period behind, never lets an over-age connection out.
    pub(crate) margin: u64,
    /// Whether any setting reads the clock on acquire or release (with
    /// `idle_timeout`, `max_lifetime` and `check_after_idle` all off, the
    /// hot path never looks at time).
    pub(crate) uses_clock: bool,
}

/// What an acquirer must do with a claimed idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it out.
    Ready,
    /// Past its lifetime: close it and look again.
    Expired,
    /// Run `Manager::check` first (idle too long, or older than the last
    /// failure: the server-restart epoch).
    Check,
}

impl<M: Manager> Shared<M> {
    /// Takes an idle connection: pop a key, claim its slot. Skips stale keys.
    #[inline]
    pub(crate) fn take_idle(&self) -> Option<u32> {
        while let Some(key) = self.shards.pop() {
            if self.slots.claim(key) {
                return Some(key.index());
            }
            self.forget_stale();
        }
        None
    }

    /// A popped key was stale: it has left the idle set (`shards.rs`).
    #[cold]
    fn forget_stale(&self) {
        self.shards.forget_stale();
    }

    /// Idle connections: keys queued minus stale ones (exact when quiet;
    /// the stale-key invariant is in `shards.rs`).
    pub(crate) fn idle_count(&self) -> usize {
        self.shards.idle()
    }

    /// The time lifecycle checks compare against: the cached reading while
    /// the background task keeps it fresh, the real clock otherwise.
    #[inline(always)]
    pub(crate) fn now_for_checks(&self) -> u64 {
        self.clock.hot_now()
    }

    /// Judges a claimed idle connection (I6): one load and compare for the
    /// time-based policies, one for the restart epoch; the details only
    /// when one of them says so.
    #[inline]
    pub(crate) fn judge(&self, index: u32, now: u64) -> Verdict {
        let slots = &self.slots;
        if now >= slots.fresh_until(index) {
            return self.judge_closely(index, now);
        }
        let epoch = self.maintenance.restart_epoch.load(Ordering::Relaxed);
        if epoch != 0 && slots.facts(index).verified_seq < epoch {
            return Verdict::Check;
        }
        Verdict::Ready
    }

    #[cold]
    fn judge_closely(&self, index: u32, now: u64) -> Verdict {
        if self.slots.expires_at(index) <= now {
            return Verdict::Expired;
        }
        Verdict::Check
    }

    /// Takes anything a waiter could use: an idle connection or a place.
    fn take_any(&self) -> Option<Grant> {
        match self.take_idle() {
            Some(i) => Some(Grant::Slot(i)),
            None => self.slots.reserve().map(Grant::Place),
        }
    }

    /// The release path for an owned connection: check it, then pass it on
    /// (healthy) or close it and pass its place on (broken).
    #[inline]
    pub(crate) fn give_back(&self, index: u32) -> Retired {
        // First, while this guard's connection still keeps the core alive:
        // every 64th release looks whether maintenance is due.
        let mut retired = if crate::clock::every_64th_op() {
            self.cooperative_tick()
        } else {
            Retired(0)
        };
        // A guard dropped while its thread panics may hold a connection in
        // an unknown state (half a transaction): close it rather than reuse.
        let broken = std::thread::panicking()
            || catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: the releasing guard owns the BUSY slot and holds no
                // other reference to the connection.
                self.manager
                    .is_broken(unsafe { self.slots.conn_mut(index) })
            }))
            .unwrap_or(true);
        if self.ticks.leak != 0 {
            self.slots.clear_taken(index);
        }
        let now = self.now_for_checks();
        // The end of its lifetime (`u64::MAX`: none).
        let last = self.slots.expires_at(index);
        retired.0 += if broken {
            self.maintenance.note_failure();
            self.retire(index).0
        } else if now >= last {
            bump(&self.counters.expired);
            self.retire(index).0
        } else {
            self.stamp_fresh(index, last, now);
            self.release(index, now).0
        };
        retired
    }

    /// Stamps until when an owned healthy connection, about to go idle at
    /// `now`, may be handed out without a closer look: the end of its
    /// lifetime `last` or when it becomes due for a check, whichever comes
    /// first. Stored before the connection is passed on, to the idle set or
    /// straight to a waiter, whose acquire judges by it.
    #[inline(always)]
    pub(crate) fn stamp_fresh(&self, index: u32, last: u64, now: u64) {
        let fresh_until = last.min(now.saturating_add(self.ticks.check_after_idle));
        self.slots.set_fresh_until(index, fresh_until);
    }

    /// A busy thread's share of maintenance (see `maintenance.rs`).
    #[cold]
    #[inline(never)]
    fn cooperative_tick(&self) -> Retired {
        let now = self.clock.now();
        if !self.maintenance.is_due(now) {
            return Retired(0);
        }
        let retired = self.maintenance.pass(self, now);
        self.refill();
        retired
    }

    /// The common case of [`grant`](Self::grant) for a healthy connection,
    /// small enough to inline into `Drop for Pooled`: no waiter, pool open,
    /// push to the home shard, and the same re-check.
    #[inline(always)]
    fn release(&self, index: u32, now: u64) -> Retired {
        if self.closed.load(Ordering::Relaxed) || self.waiters.any() {
            return self.grant(Grant::Slot(index));
        }
        // SAFETY: the releasing guard owns the BUSY slot.
        let key = unsafe { self.slots.make_idle(index, now) };
        self.shards.push(key, |k| self.slots.is_live(k));
        sync::after_publish();
        // As in `grant`: SeqCst loads after the put-back's SeqCst CAS.
        sync::sc_load_after_rmw();
        // loom mutants: close_no_recheck, lost_wakeup (run-mutants.sh)
        let closed = !mutant("close_no_recheck") && self.closed.load(Ordering::SeqCst);
        if closed || (!mutant("lost_wakeup") && self.waiters.any()) {
            return self.after_put_back();
        }
        Retired(0)
    }

    /// Closes the connection of an owned BUSY slot and passes its place on.
    pub(crate) fn retire(&self, index: u32) -> Retired {
        // SAFETY: the caller owns the BUSY slot.
        close_quietly(unsafe { self.slots.take(index) });
        bump(&self.counters.closed);
        // The connection is gone before its place goes to anyone else.
        let Retired(n) = self.grant(Grant::Place(index));
        Retired(n + 1)
    }

    /// Hands `grant` to the oldest live waiter, or puts it back in the idle
    /// set (a connection) or the free queue (a place).
    ///
    /// After putting it back, re-reads `tokens` (SeqCst): a waiter that
    /// registered meanwhile either found what was put back in its own
    /// re-check or is seen here, and then something is taken back for it.
    /// Each further round consumes a waiter token or ends, so the loop is
    /// bounded by the number of registrations it races with.
    #[inline(never)]
    pub(crate) fn grant(&self, mut grant: Grant) -> Retired {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return self.discard(grant);
            }
            if self.waiters.any() {
                match self.waiters.serve(grant) {
                    Ok(()) => return Retired(0),
                    Err(back) => grant = back,
                }
            }
            self.put_back(grant, self.now_for_checks());
            sync::after_publish();
            // The put-back ended in a SeqCst CAS (queue tail); these SeqCst
            // loads pair with `register`'s token add + fence and with
            // `close`'s store + fence.
            sync::sc_load_after_rmw();
            if self.closed.load(Ordering::SeqCst) {
                return self.close_idle();
            }
            if !self.waiters.any() {
                return Retired(0);
            }
            match self.take_any() {
                Some(next) => grant = next,
                None => return Retired(0),
            }
        }
    }

    /// The end of `grant`'s round after a put-back that raced with a
    /// waiter's registration or with `close`.
    #[cold]
    #[inline(never)]
    fn after_put_back(&self) -> Retired {
        if self.closed.load(Ordering::SeqCst) {
            return self.close_idle();
        }
        match self.take_any() {
            Some(next) => self.grant(next),
            None => Retired(0),
        }
    }

    /// Puts a grant back: a connection into the idle set (stamped as
    /// released at `now`), a place into the free queue.
    #[inline]
    pub(crate) fn put_back(&self, grant: Grant, now: u64) {
        match grant {
            Grant::Slot(i) => {
                // SAFETY: a `Grant::Slot` is an owned BUSY slot.
                let key = unsafe { self.slots.make_idle(i, now) };
                self.shards.push(key, |k| self.slots.is_live(k));
            }
            // SAFETY: a `Grant::Place` is an owned FREE slot.
            Grant::Place(i) => unsafe { self.slots.unreserve(i) },
        }
    }

    /// Puts an owned idle connection that `try_get` may not hand out (it is
    /// due for a check) back behind the others, keeping its idle time; a
    /// waiter, if any, gets it instead (and checks it).
    pub(crate) fn requeue(&self, index: u32) -> Retired {
        if self.waiters.any() || self.closed.load(Ordering::Relaxed) {
            return self.grant(Grant::Slot(index));
        }
        let since = self.slots.facts(index).released_at;
        // SAFETY: the caller owns the BUSY slot.
        let key = unsafe { self.slots.make_idle(index, since) };
        self.shards.push_back(key, |k| self.slots.is_live(k));
        // The same re-check as `grant` after a put-back.
        sync::sc_load_after_rmw();
        if self.closed.load(Ordering::SeqCst) || self.waiters.any() {
            return self.after_put_back();
        }
        Retired(0)
    }

    /// Closes what `grant` holds and frees its place (the pool is closed).
    fn discard(&self, grant: Grant) -> Retired {
        match grant {
            Grant::Slot(i) => {
                // SAFETY: an owned BUSY slot; emptied, then its place freed.
                close_quietly(unsafe { self.slots.take(i) });
                bump(&self.counters.closed);
                // SAFETY: the slot is FREE and still ours.
                unsafe { self.slots.unreserve(i) };
                Retired(1)
            }
            Grant::Place(i) => {
                // SAFETY: an owned FREE slot.
                unsafe { self.slots.unreserve(i) };
                Retired(0)
            }
        }
    }

    /// Closes every idle connection (the pool is closed).
    fn close_idle(&self) -> Retired {
        let mut n = 0;
        while let Some(i) = self.take_idle() {
            n += self.discard(Grant::Slot(i)).0;
        }
        Retired(n)
    }

    /// Stops handing out: rejects waiters, closes idle connections.
    fn close(&self) -> Retired {
        self.closed.store(true, Ordering::SeqCst);
        // Pairs with the SeqCst fence in `register` and the SeqCst loads in
        // `grant`: a waiter or an idle connection that arrives after this is
        // seen by its own side's re-check of `closed`.
        fence(Ordering::SeqCst);
        self.waiters.close_all();
        self.close_idle()
    }

    fn state(&self) -> State {
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
}

/// The object all `Pool` clones share; dropping the last one closes the pool.
struct Handle<M: Manager> {
    shared: Arc<Owner<M>>,
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        let retired = self.shared.close();
        settle_held(&self.shared, retired);
    }
}

/// A pool of connections made by a [`Manager`]. Cheap to clone: clones share
/// one pool, and dropping the last clone closes it.
///
/// ```
/// use latchless::{Manager, Pool};
///
/// struct Numbers;
/// impl Manager for Numbers {
///     type Connection = u32;
///     type Error = std::io::Error;
///     async fn connect(&self) -> Result<u32, std::io::Error> { Ok(7) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(Numbers).max_size(2).build().unwrap();
/// let conn = pool.get().await.unwrap();
/// assert_eq!(*conn, 7);
/// drop(conn); // back to the idle set
/// assert!(pool.try_get().is_some());
/// # }
/// ```
pub struct Pool<M: Manager> {
    handle: Arc<Handle<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("state", &self.state())
            .field("closed", &self.is_closed())
            .field("config", &self.shared().config)
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Pool<M> {
    /// Starts configuring a pool for `manager`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).max_size(8).build().unwrap();
    /// ```
    pub fn builder(manager: M) -> Builder<M> {
        Builder::new(manager)
    }

    pub(crate) fn from_parts(manager: M, config: Config, clock: quanta::Clock) -> Self {
        let period = maintenance_period(&config);
        let ticks = Ticks {
            lifetime: config.max_lifetime.map_or(0, ms),
            check_after_idle: config
                .check_after_idle
                .map_or(u64::MAX, |d| if d.is_zero() { 0 } else { ms(d) }),
            leak: config.leak_threshold.map_or(0, ms),
            margin: ms(period),
            uses_clock: config.idle_timeout.is_some()
                || config.max_lifetime.is_some()
                || config.check_after_idle.is_some(),
        };
        let clock = Clock::new(clock, ticks.uses_clock);
        let now = clock.now();
        let shared = Arc::new_cyclic(|weak| {
            Owner::new(Shared {
                slots: Slots::new(config.max_size),
                shards: Shards::new(
                    config.shards,
                    Shards::room_per_shard(config.max_size, config.shards),
                ),
                waiters: Waiters::new(),
                deadlines: Deadlines::new(),
                closed: AtomicBool::new(false),
                counters: Counters::default(),
                maintenance: Maintenance::new(now, ms(period), config.max_size),
                ticks,
                weak: weak.clone(),
                rng: AtomicU64::new(now ^ 0x9E37_79B9_7F4A_7C15 ^ (weak.as_ptr().addr() as u64)),
                clock,
                manager,
                config,
            })
        });
        shared.start_background();
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    #[inline(always)]
    fn shared(&self) -> &Arc<Owner<M>> {
        &self.handle.shared
    }

    /// The settings the pool was built with.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// assert_eq!(Pool::builder(M).max_size(3).build().unwrap().config().max_size, 3);
    /// ```
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// The manager the pool was built with.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M(u8); impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// assert_eq!(Pool::builder(M(9)).build().unwrap().manager().0, 9);
    /// ```
    pub fn manager(&self) -> &M {
        &self.shared().manager
    }

    /// An idle connection now, or `None`. Never connects, never waits,
    /// never locks, never allocates; works on any thread, inside or outside
    /// a runtime. `None` on a closed pool.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).build().unwrap();
    /// assert!(pool.try_get().is_none(), "nothing opened yet");
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_get(&self) -> Option<Pooled<M>> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Relaxed) {
            return None;
        }
        let by = Location::caller();
        let now = shared.now_for_checks();
        // Connections due for a check are re-queued behind the others (and
        // left for `get`); the budget bounds the loop when all are.
        let mut budget = shared.slots.capacity() + shared.shards.count();
        while let Some(i) = shared.take_idle() {
            match shared.judge(i, now) {
                Verdict::Ready => return Some(self.hand_out(i, by)),
                Verdict::Expired => self.expire(i),
                Verdict::Check => {
                    settle_held(shared, shared.requeue(i));
                    budget -= 1;
                    if budget == 0 {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Wraps an owned, ready slot in a guard (recording the taker for leak
    /// detection when that is on: stamped with the real clock, one read,
    /// since the cached reading may be a period or more old; `clock.rs`).
    #[inline(always)]
    fn hand_out(&self, index: u32, by: &'static Location<'static>) -> Pooled<M> {
        let shared = self.shared();
        if shared.ticks.leak != 0 {
            shared.slots.set_taken(index, shared.clock.exact(), by);
        }
        Pooled::new(shared, index)
    }

    /// Closes an owned connection that is past its lifetime.
    #[cold]
    fn expire(&self, index: u32) {
        let shared = self.shared();
        bump(&shared.counters.expired);
        settle_held(shared, shared.retire(index));
    }

    /// A connection, waiting at most `acquire_timeout` (connecting
    /// included).
    ///
    /// An idle connection is returned without allocating, reading a clock
    /// or touching the timer; otherwise the pool connects if it is below
    /// `max_size`, or waits for a connection to be returned. Cancel-safe:
    /// dropping the future at any point loses no connection, place or
    /// waiter.
    ///
    /// # Errors
    /// [`PoolError::Timeout`], [`PoolError::Closed`],
    /// [`PoolError::Exhausted`] (`max_waiters` reached) or
    /// [`PoolError::Connect`] (the manager's error).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let conn = pool.get().await.unwrap();
    /// assert_eq!(pool.state().in_use, 1);
    /// # }
    /// ```
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        self.acquire(self.shared().config.acquire_timeout, Location::caller())
    }

    /// [`get`](Pool::get) with a per-call deadline instead of
    /// `acquire_timeout`. `Duration::ZERO` tries once without waiting for a
    /// release (it may still connect; it does not run a pre-ping check, so
    /// a connection due for one stays idle).
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    ///
    /// ```
    /// # use latchless::{Manager, Pool, PoolError};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).max_size(1).build().unwrap();
    /// let held = pool.get().await.unwrap();
    /// let err = pool.get_timeout(Duration::from_millis(10)).await.unwrap_err();
    /// assert!(matches!(err, PoolError::Timeout));
    /// # }
    /// ```
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        self.acquire(timeout, Location::caller())
    }

    async fn acquire(
        &self,
        timeout: Duration,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        // Step 1, the fast path: no clock read, no allocation, no timer.
        let mut candidate = None;
        let now = shared.now_for_checks();
        while let Some(i) = shared.take_idle() {
            match shared.judge(i, now) {
                Verdict::Ready => return Ok(self.hand_out(i, by)),
                Verdict::Expired => self.expire(i),
                Verdict::Check => {
                    candidate = Some(CheckGuard::new(shared, i));
                    break;
                }
            }
        }
        shared.start_background();
        // `Duration::MAX` means no deadline: no clock read, no timer.
        let deadline = if timeout == Duration::MAX {
            None
        } else {
            tokio::time::Instant::now().checked_add(timeout)
        };
        let result = self.acquire_slow(deadline, candidate, by).await;
        if matches!(result, Err(PoolError::Timeout)) {
            bump(&shared.counters.timeouts);
        }
        result
    }

    /// Steps 2 and 3 of the acquire path (module docs), plus checks of
    /// connections that sat idle.
    async fn acquire_slow(
        &self,
        deadline: Option<tokio::time::Instant>,
        mut candidate: Option<CheckGuard<'_, M>>,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = self.shared();
        let mut first = true;
        loop {
            // Every round after the first follows a check, an expiry or a
            // wake-up, and a check needs time: past the deadline, stop
            // there (an unchecked candidate goes back to the idle set, not
            // closed by a check cut short before it began).
            if (!std::mem::take(&mut first) || candidate.is_some())
                && deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
            {
                if let Some(c) = candidate.take() {
                    c.requeue();
                }
                return Err(PoolError::Timeout);
            }
            if let Some(c) = candidate.take() {
                // Bounded by `deadline` itself (`CheckGuard::check`).
                if let Some(index) = c.check(deadline).await {
                    return Ok(self.hand_out(index, by));
                }
                continue;
            }
            if shared.closed.load(Ordering::Acquire) {
                return Err(PoolError::Closed);
            }
            if let Some(i) = shared.take_idle() {
                match self.triage(i, by) {
                    Ok(p) => return Ok(p),
                    Err(c) => {
                        candidate = c;
                        continue;
                    }
                }
            }
            if let Some(place) = shared.slots.reserve() {
                let connect = self.connect(PlaceGuard::new(shared, place), deadline);
                let p = bounded(deadline, connect).await?;
                return Ok(self.hand_out(p, by));
            }
            let outcome = self.wait(deadline).await?;
            match outcome {
                Grant::Slot(i) => match self.triage(i, by) {
                    Ok(p) => return Ok(p),
                    Err(c) => candidate = c,
                },
                Grant::Place(i) => {
                    let connect = self.connect(PlaceGuard::new(shared, i), deadline);
                    let p = bounded(deadline, connect).await?;
                    return Ok(self.hand_out(p, by));
                }
            }
        }
    }

    /// Judges an owned idle connection on the slow path: ready (handed
    /// out), expired (closed; `Err(None)`), or due for a check.
    fn triage(
        &self,
        index: u32,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, Option<CheckGuard<'_, M>>> {
        let shared = self.shared();
        match shared.judge(index, shared.clock.now()) {
            Verdict::Ready => Ok(self.hand_out(index, by)),
            Verdict::Expired => {
                self.expire(index);
                Err(None)
            }
            Verdict::Check => Err(Some(CheckGuard::new(shared, index))),
        }
    }

    /// Step 3: parks as a waiter until served with a connection or a place.
    async fn wait(
        &self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Grant, PoolError<M::Error>> {
        let shared = self.shared();
        let Some(node) = shared.waiters.register(shared.config.max_waiters) else {
            bump(&shared.counters.exhausted);
            return Err(PoolError::Exhausted);
        };
        bump(&shared.counters.waits);
        let mut wait = WaitGuard {
            shared,
            node,
            done: false,
            tracked: None,
        };
        // The re-check after registering (waiters.rs: lost wake-ups).
        let outcome = if shared.closed.load(Ordering::SeqCst) {
            wait.withdraw().unwrap_or(Outcome::Closed)
        } else if let Some(found) = shared.take_any() {
            match wait.withdraw() {
                None => Outcome::Granted(found),
                // Served meanwhile: keep the older grant, give back ours.
                Some(served) => {
                    settle_held(shared, shared.grant(found));
                    served
                }
            }
        } else {
            park(&mut wait, deadline).await
        };
        match outcome {
            Outcome::Granted(g) => Ok(g),
            Outcome::Closed => Err(PoolError::Closed),
            Outcome::TimedOut => Err(PoolError::Timeout),
        }
    }

    /// Opens a connection into a reserved place (`connector::open`, the
    /// one connect path) and returns its slot.
    async fn connect(
        &self,
        place: PlaceGuard<'_, M>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<u32, PoolError<M::Error>> {
        crate::connector::open(self.shared(), place, deadline).await
    }

    /// Runs one maintenance pass now: expire idle and over-age connections,
    /// report leaks, refill `min_idle`. The pool does this on its own (a
    /// background task when a Tokio runtime is present, and busy threads in
    /// passing); call it when running without a runtime, or in tests that
    /// drive a mock clock.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (clock, mock) = quanta::Clock::mock();
    /// let pool = Pool::builder(M)
    ///     .idle_timeout(Some(Duration::from_secs(60)))
    ///     .clock(clock)
    ///     .build()
    ///     .unwrap();
    /// drop(pool.get().await.unwrap());
    /// mock.increment(Duration::from_secs(61));
    /// pool.maintain();
    /// assert_eq!(pool.state().size, 0, "the idle connection timed out");
    /// # }
    /// ```
    pub fn maintain(&self) {
        let shared = self.shared();
        let now = shared.clock.now();
        settle_held(shared, shared.maintenance.pass(shared, now));
        shared.refill();
    }

    /// A snapshot of sizes and waiters.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let c = pool.get().await.unwrap();
    /// assert_eq!(pool.state().size, 1);
    /// assert_eq!(pool.state().in_use, 1);
    /// drop(c);
    /// assert_eq!(pool.state().idle, 1);
    /// # }
    /// ```
    pub fn state(&self) -> State {
        self.shared().state()
    }

    /// Counters since the pool was built, with the current [`State`].
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).build().unwrap();
    /// assert_eq!(pool.metrics().opened, 0);
    /// ```
    pub fn metrics(&self) -> Metrics {
        let shared = self.shared();
        let passes = shared.maintenance.passes.load(Ordering::Relaxed);
        shared.counters.snapshot(shared.state(), passes)
    }

    /// Stops handing out connections: waiters get [`PoolError::Closed`],
    /// idle connections close now, in-use ones when returned. Returns once
    /// waiters are rejected and idle connections closed. Idempotent.
    ///
    /// ```
    /// # use latchless::{Manager, Pool, PoolError};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// pool.close().await;
    /// assert!(pool.is_closed());
    /// assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    /// # }
    /// ```
    pub async fn close(&self) {
        let shared = self.shared();
        settle_held(shared, shared.close());
    }

    /// Whether [`close`](Pool::close) was called (or the last handle dropped).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// assert!(!Pool::builder(M).build().unwrap().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared().closed.load(Ordering::Acquire)
    }
}

/// A reserved place held across the connect's await: dropped unused, it is
/// given back (to a waiter, or to the free queue).
pub(crate) struct PlaceGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    index: Option<u32>,
}

impl<'a, M: Manager> PlaceGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, index: u32) -> Self {
        Self {
            shared,
            index: Some(index),
        }
    }

    pub(crate) fn into_index(mut self) -> u32 {
        // Always `Some` until here: only this consumes it.
        self.index.take().unwrap_or_default()
    }
}

impl<M: Manager> Drop for PlaceGuard<'_, M> {
    fn drop(&mut self) {
        // loom mutant: leak_place, see loom-tests/run-mutants.sh
        if mutant("leak_place") {
            return;
        }
        if let Some(i) = self.index.take() {
            settle_held(self.shared, self.shared.grant(Grant::Place(i)));
        }
    }
}

/// Counts a connect in flight for `State::in_use`.
pub(crate) struct Connecting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Connecting<'a> {
    pub(crate) fn new<M: Manager>(shared: &'a Shared<M>) -> Self {
        shared.counters.connecting.fetch_add(1, Ordering::Relaxed);
        Self(&shared.counters.connecting)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bounds `fut` by `deadline` (a Tokio timer, armed only if `fut` is
/// pending): connects, whose deadline the pool does not sweep.
async fn bounded<T, E>(
    deadline: Option<tokio::time::Instant>,
    fut: impl Future<Output = Result<T, PoolError<E>>>,
) -> Result<T, PoolError<E>> {
    match deadline {
        Some(d) => sync::timeout_at(d, fut)
            .await
            .unwrap_or(Err(PoolError::Timeout)),
        None => fut.await,
    }
}

/// Waits for a registered waiter's outcome until `deadline`: timed out by
/// the pool's sweeper while one serves (`deadlines.rs`), else by a Tokio
/// timer of its own.
async fn park<M: Manager>(
    wait: &mut WaitGuard<'_, M>,
    deadline: Option<tokio::time::Instant>,
) -> Outcome {
    let Some(d) = deadline else {
        return wait.await;
    };
    let deadlines = &wait.shared.deadlines;
    if let Some(tracked) = deadlines.track(d, &wait.node) {
        let epoch = tracked.epoch;
        wait.tracked = Some(tracked);
        // Poll the node first (registering the waker), then look whether
        // the sweeper still serves: a sweeper that stops after the look
        // wakes this task (`Deadlines::stop`).
        let swept = std::future::poll_fn(|cx| match Pin::new(&mut *wait).poll(cx) {
            Poll::Ready(o) => Poll::Ready(Some(o)),
            Poll::Pending if deadlines.serving(epoch) => Poll::Pending,
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        if let Some(outcome) = swept {
            return outcome;
        }
    }
    match sync::timeout_at(d, &mut *wait).await {
        Ok(outcome) => outcome,
        // Served at the last moment: keep it; otherwise it timed out.
        Err(()) => wait.withdraw().unwrap_or(Outcome::TimedOut),
    }
}

/// A registered waiter. Polling it waits for the outcome; dropping it
/// before that withdraws the node and gives back anything it was served.
struct WaitGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    node: sync::Arc<Node>,
    done: bool,
    /// Its slot with the pool's deadline sweeper, if it took one.
    tracked: Option<crate::deadlines::Tracked>,
}

impl<M: Manager> WaitGuard<'_, M> {
    /// Leaves the queue now: `None` if still waiting, else what was served
    /// (now the caller's).
    fn withdraw(&mut self) -> Option<Outcome> {
        self.done = true;
        self.shared.waiters.cancel(&self.node)
    }
}

impl<M: Manager> Future for WaitGuard<'_, M> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let outcome = self.node.poll(cx);
        if outcome.is_ready() {
            self.done = true;
        }
        outcome
    }
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(tracked) = self.tracked.take() {
            self.shared.deadlines.untrack(&tracked);
        }
        if self.done {
            return;
        }
        if let Some(Outcome::Granted(grant)) = self.withdraw() {
            // loom mutant: cancel_drops_grant, see loom-tests/run-mutants.sh
            if mutant("cancel_drops_grant") {
                return;
            }
            settle_held(self.shared, self.shared.grant(grant));
        }
    }
}

/// How often the background task runs a pass: often enough that the cached
/// clock it refreshes stays well inside every lifecycle setting, and at
/// most once a second. Also the margin by which lifetimes end early.
fn maintenance_period(c: &Config) -> Duration {
    let mut p = Duration::from_secs(1);
    if let Some(d) = c.idle_timeout {
        p = p.min(d / 4);
    }
    if let Some(d) = c.max_lifetime {
        p = p.min(d / 20);
    }
    if let Some(d) = c.check_after_idle.filter(|d| !d.is_zero()) {
        p = p.min(d / 2);
    }
    if let Some(d) = c.leak_threshold {
        p = p.min(d / 2);
    }
    p.max(Duration::from_millis(5))
}
