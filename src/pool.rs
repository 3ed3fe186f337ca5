//! [`Pool`], the handle, and the acquire path (`get`, `get_timeout`,
//! `get_until`, `try_get`, `get_blocking`); `state()`, `metrics()`,
//! `close()`; what a service needs around them (`warm_up`, `drain`,
//! `max_size`). The shared core is `core.rs`'s, the release / hand-off
//! protocol `release.rs`'s; `set_max_size` is `builder.rs`'s (it returns
//! `ResizeError`).
//!
//! # Around `get`
//!
//! - `warm_up` opens through `connector::open` (the one connect path), at
//!   most 4 at a time, each into a place reserved through the cap and
//!   under a claim shared with the background refill (`IdleClaim`), so
//!   the two side by side never open more than `min_idle` while nothing is
//!   taken; the first error drops the connects in flight (their
//!   `PlaceGuard`s give the places back).
//! - `drain` registers on the core's `drained` notification before it
//!   looks at the places taken (no lost wake-up): every place freed or
//!   connection closed after `close` notifies it.
//! - `get_blocking` is `try_get` first (no runtime, no allocation); only
//!   to wait or connect does it run `acquire` on the runtime the pool was
//!   built in, as a task whose result the thread waits for (its waiter
//!   node is in the same FIFO queue as async callers'; a runtime that
//!   has shut down drops the task, and the thread gets `NoRuntime`).
//!
//! # Acquire
//!
//! 1. Take back the connection this thread parked, with one CAS on its
//!    slot; else pop a key from the caller's home shard (stealing from the
//!    others if empty) and claim its slot with one CAS, skipping a stale
//!    key; else claim a connection another thread parked (a scan of the
//!    slots). DESIGN.md, "The thread-affine fast path".
//! 2. Nothing idle: reserve a place (pop a free slot) and connect, bounded
//!    by `connect_timeout`. Straight from step 1's miss: the idle set is
//!    not searched twice in a row (step 3's re-check searches it again).
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
//! handle holds one counted reference to the core (`lifetime.rs`).
//!
//! # Invariants kept
//!
//! I4 (a waiter re-checks the idle set and free places after registering,
//! `waiters.rs`), I5 (every await point holds what it owns in a guard whose
//! `Drop` gives it back, `guards.rs`), I6 (every idle connection is judged
//! before it is handed out, `lifecycle.rs`); I1-I3 and I7 through
//! `core.rs`.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::background::{IdleClaim, housekeep, probe_if_due, sample, start_background};
use crate::budget::TokenWait;
use crate::clock::NO_DEADLINE;
use crate::config::Config;
use crate::core::{Core, Owner};
use crate::guards::{CheckGuard, PlaceGuard, WaitGuard};
use crate::health::{Health, Sizing};
use crate::lifecycle::Verdict;
use crate::lifetime::{CorePtr, Settle};
use crate::metrics::{Metrics, State, bump};
use crate::release::from_grant;
use crate::slots::{Busy, Held};
use crate::sync::{self, Ordering};
use crate::waiters::Outcome;
use crate::{Manager, PoolError, Pooled, TimeoutKind};

/// The object all `Pool` clones share; dropping the last one closes the pool.
struct Handle<M: Manager> {
    shared: Arc<Owner<M>>,
    /// The runtime the pool was built in, if any: `get_blocking` waits and
    /// connects on it.
    runtime: Option<tokio::runtime::Handle>,
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        self.shared.close(&mut Settle::new(&self.shared));
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
    /// The core, reached in one load instead of three (handle, owner,
    /// box) on the acquire path; kept alive by `handle`.
    core: CorePtr<Core<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
            core: self.core,
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
    /// Builds the pool (`Builder::build`, after validating `config`) and
    /// starts its background work if a runtime is present.
    pub(crate) fn new(manager: M, config: Config, clock: quanta::Clock) -> Self {
        Self::new_in(manager, config, clock, None)
    }

    /// [`new`](Self::new), as one key's pool of a keyed pool with `budget`.
    pub(crate) fn new_in(
        manager: M,
        config: Config,
        clock: quanta::Clock,
        budget: Option<Arc<crate::budget::Budget>>,
    ) -> Self {
        let shared = Core::new(manager, config, clock, budget);
        start_background(&shared);
        Self {
            core: CorePtr::new(&shared),
            handle: Arc::new(Handle {
                shared,
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<Owner<M>> {
        &self.handle.shared
    }

    /// The core, for the acquire path (one load).
    #[inline(always)]
    pub(crate) fn core(&self) -> &Core<M> {
        // SAFETY: `self.handle` holds a strong reference to the core's
        // owner for as long as `self` lives, and the borrow is tied to
        // `&self`.
        unsafe { self.core.get() }
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
    /// a runtime. `None` on a closed pool. While `get`s are waiting it
    /// looks only at this thread's own cached connection and shard: a
    /// connection idle elsewhere then is on its way to a waiter, who asked
    /// first.
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
        self.try_get_by(Location::caller())
    }

    /// [`try_get`](Self::try_get), the holder's place given (a keyed
    /// pool's caller).
    #[inline(always)]
    pub(crate) fn try_get_by(&self, by: &'static Location<'static>) -> Option<Pooled<M>> {
        let core = self.core();
        if core.closed.load(Ordering::Relaxed) {
            return None;
        }
        let now = core.now_for_checks();
        // Connections due for a check are re-queued behind the others (and
        // left for `get`); the budget bounds the loop when all are.
        let mut budget = None;
        while let Some(mut busy) = core.take_for_try() {
            let verdict = core.judge(&mut busy, now, false);
            match verdict {
                Verdict::Ready => return Some(self.hand_out(busy, by, now, true)),
                Verdict::Expired | Verdict::Broken => drop(self.unready(busy, verdict)),
                Verdict::Check => {
                    core.requeue(busy, &mut Settle::new(self.shared()));
                    let left = budget.get_or_insert(core.slots.capacity() + core.config.shards);
                    *left -= 1;
                    if *left == 0 {
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
    /// `now`: the hot-path reading (the hold time's start); `hit`: a
    /// fast-path hit, counted in the slot (`Core::hand_out`).
    #[inline(always)]
    fn hand_out(
        &self,
        busy: Busy,
        by: &'static Location<'static>,
        now: u64,
        hit: bool,
    ) -> Pooled<M> {
        self.core().hand_out(&busy, by, now, hit);
        Pooled::new(self.core, busy)
    }

    /// `hand_out` on the slow path (a `get` that waited, connected or
    /// checked): reads the hot-path time itself; not a hit.
    fn hand_out_slow(&self, busy: Busy, by: &'static Location<'static>) -> Pooled<M> {
        self.hand_out(busy, by, self.shared().now_for_checks(), false)
    }

    /// Closes an owned connection that is past its lifetime.
    #[cold]
    fn expire(&self, busy: Busy) {
        let shared = self.shared();
        bump(&shared.counters.expired);
        shared.note_close(&shared.counters.closed_lifetime, "lifetime");
        shared.retire(busy, &mut Settle::new(shared));
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
        self.acquire(self.core().config.acquire_timeout, Location::caller())
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
    /// # use latchless::{Manager, Pool, PoolError, TimeoutKind};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).max_size(1).build().unwrap();
    /// let held = pool.get().await.unwrap();
    /// let err = pool.get_timeout(Duration::from_millis(10)).await.unwrap_err();
    /// assert!(matches!(err, PoolError::Timeout(TimeoutKind::Waiting)));
    /// # }
    /// ```
    #[track_caller]
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        self.acquire(timeout, Location::caller())
    }

    /// The future of every async acquire. Step 1 runs in its first poll
    /// as a plain call (`acquire_fast`), so the first poll inlines into
    /// its caller: an `async fn` would make the fast path pay a call, the
    /// state machine's entry, its argument moves and its candidate slot
    /// (DESIGN.md, "What the cycle does not pay for"). A miss goes on out
    /// of line (`begin`): to a wait polled by hand ([`Waiting`], what most
    /// misses at the cap come to), or to the slow future (`acquire_rest`),
    /// built in place inside this one for connects and checks.
    pub(crate) fn acquire(
        &self,
        timeout: Duration,
        by: &'static Location<'static>,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        Acquire {
            pool: self,
            timeout,
            by,
            started: false,
            rest: Self::acquire_rest,
            after: After::none(),
        }
    }

    /// Step 1: the fast path, no clock read, no allocation, no timer.
    #[inline(always)]
    fn acquire_fast(&self, by: &'static Location<'static>) -> Fast<'_, M> {
        let core = self.core();
        if core.closed.load(Ordering::Acquire) {
            return Fast::Done(Err(PoolError::Closed));
        }
        let now = core.now_for_checks();
        while let Some(mut busy) = core.take_for_get() {
            match core.judge(&mut busy, now, true) {
                Verdict::Ready => return Fast::Done(Ok(self.hand_out(busy, by, now, true))),
                Verdict::Check => return Fast::Slow(Some(CheckGuard::new(self.shared(), busy))),
                verdict => drop(self.unready(busy, verdict)),
            }
        }
        Fast::Slow(None)
    }

    /// Step 1 alone, for a keyed pool's lookup (`keyed.rs`): a ready idle
    /// connection, or nothing (a candidate due for a check goes back, for
    /// the `get` that follows to find).
    #[inline(always)]
    pub(crate) fn quick(&self, by: &'static Location<'static>) -> Quick<M> {
        match self.acquire_fast(by) {
            Fast::Done(Ok(conn)) => Quick::Hit(conn),
            Fast::Done(Err(_)) => Quick::Closed,
            Fast::Slow(candidate) => {
                if let Some(c) = candidate {
                    c.requeue();
                }
                Quick::Miss
            }
        }
    }

    /// Closes the pool now (`close` without the `async`).
    pub(crate) fn close_now(&self) {
        let shared = self.shared();
        shared.close(&mut Settle::new(shared));
    }

    /// Closes one idle connection, if there is one (a keyed pool making
    /// room for another key, `budget.rs`).
    pub(crate) fn close_one_idle(&self) -> bool {
        let shared = self.shared();
        let Some(busy) = shared.take_idle() else {
            return false;
        };
        shared.note_close(&shared.counters.closed_idle, "evicted");
        shared.retire(busy, &mut Settle::new(shared));
        true
    }

    /// After step 1's miss: the wait's clock starts; a candidate due for a
    /// check, or a free place, goes to the slow future; at the cap, the
    /// `get` registers as a waiter (step 3) and is polled by hand.
    #[cold]
    #[inline(never)]
    fn begin<'a>(
        &'a self,
        timeout: Duration,
        candidate: Option<CheckGuard<'a, M>>,
        by: &'static Location<'static>,
        cx: &mut std::task::Context<'_>,
    ) -> Next<'a, M> {
        let shared = self.shared();
        start_background(shared);
        let begun = shared.clock.now_ns();
        let at = crate::clock::TimeBase::deadline(begun, timeout);
        if let Some(c) = candidate {
            return Next::Slow(Start::Check(c), begun, at);
        }
        // Straight from the miss: the idle set is not searched twice in a
        // row (the re-check after registering searches it again).
        if let Some(place) = shared.reserve() {
            return Next::Slow(Start::Connect(PlaceGuard::new(shared, place)), begun, at);
        }
        self.enqueue(begun, at, by, cx)
    }

    /// Step 3: registers as a waiter (or fails with `Exhausted`), re-checks
    /// the idle set and free places, and polls the node once.
    fn enqueue<'a>(
        &'a self,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
        cx: &mut std::task::Context<'_>,
    ) -> Next<'a, M> {
        let shared = self.shared();
        let node = shared
            .waiters
            .register(shared.config.max_waiters, at, &mut |g| {
                // SAFETY: a deposited grant nobody took, left with this
                // registration's compaction (`waiters.rs`); its own re-check
                // below looks for it.
                shared.shelve(unsafe { from_grant(g) }, shared.now_for_checks());
            });
        let Some(node) = node else {
            bump(&shared.counters.exhausted);
            tracing::warn!(pool = %shared.config.name, max_waiters = shared.config.max_waiters, "get rejected: pool exhausted (max_waiters reached)");
            return Next::Done(Err(PoolError::Exhausted), begun);
        };
        let mut guard = WaitGuard::new(shared, node);
        // The registration's half of the asymmetric fence: a parking
        // releaser's store is visible to the re-check, or it sees the
        // count (`asym.rs`).
        shared.idle.fence_heavy();
        // The re-check after registering (waiters.rs: lost wake-ups).
        if shared.closed.load(Ordering::SeqCst) {
            let outcome = guard.withdraw().unwrap_or(Outcome::Closed);
            return self.ended(outcome, begun, at, by);
        }
        if let Some(found) = shared.take_any() {
            shared.waiters.found();
            return match guard.withdraw() {
                None => self.held(found, begun, at, by),
                // Served meanwhile: keep the older grant, give back ours.
                Some(served) => {
                    shared.pass_on(found, &mut Settle::new(shared));
                    self.ended(served, begun, at, by)
                }
            };
        }
        // Counted once the re-check found nothing: a registration whose
        // re-check succeeds (after a stale `near_only` hint, say) never
        // parked.
        shared
            .counters
            .waits
            .bump_in(crate::tid::home_index(shared.config.shards));
        // In a keyed pool, unless this key's own places are all taken (a
        // connection of its own then comes back to it, and a token is of
        // no use without a place), also wait for a token from any key, and
        // make room from another key's idle connection. Judged after the
        // re-check: a token freed since is found by `starve`'s own look.
        let mut starved = None;
        if shared.budget.is_some() && shared.slots.taken() < shared.slots.cap() {
            match self.starve(&mut guard, begun, at, by) {
                Ok(s) => starved = s,
                Err(next) => return next,
            }
        }
        let mut waiting = Waiting {
            guard,
            starved,
            begun,
            at,
            timer: None,
        };
        match self.poll_wait(&mut waiting, by, cx) {
            Poll::Ready(next) => next,
            Poll::Pending => Next::Wait(waiting),
        }
    }

    /// Registers a waiter of a keyed pool's key, already in its key's
    /// line, as starved by the budget across keys (`budget.rs`), then
    /// looks for a token once more; without one, asks for another key's
    /// idle connection to be closed. `Err` when the look found a token and
    /// the `get` goes on (to a connect, or to what its key served it
    /// meanwhile).
    #[cold]
    fn starve<'a>(
        &'a self,
        guard: &mut WaitGuard<'a, M>,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
    ) -> Result<Option<TokenWait<'a>>, Next<'a, M>> {
        let shared = self.shared();
        let Some(budget) = shared.budget.as_deref() else {
            return Ok(None);
        };
        let Some(node) = budget.starve() else {
            return Ok(None);
        };
        let starved = TokenWait::new(budget, node);
        if !budget.take() {
            budget.evict();
            return Ok(Some(starved));
        }
        // A token after all: out of the budget's line (a token served
        // meanwhile goes back as it drops), and on with this one.
        drop(starved);
        match self.with_token(guard, begun, at, by) {
            Some(next) => Err(next),
            // The key filled meanwhile: wait for it alone.
            None => {
                budget.put_back();
                Ok(None)
            }
        }
    }

    /// With a budget token in hand: reserves one of this key's places and
    /// leaves the key's line for the connect, or, if the key's line served
    /// it meanwhile, keeps that and gives place and token back. `None` if
    /// the key has no place left (the token is still the caller's).
    fn with_token<'a>(
        &'a self,
        guard: &mut WaitGuard<'a, M>,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
    ) -> Option<Next<'a, M>> {
        let shared = self.shared();
        let place = shared.slots.reserve()?;
        Some(match guard.withdraw() {
            None => Next::Slow(Start::Connect(PlaceGuard::new(shared, place)), begun, at),
            Some(served) => {
                shared.unreserve(place);
                self.ended(served, begun, at, by)
            }
        })
    }

    /// Polls a registered waiter: its outcome, else (with a deadline and no
    /// sweeper serving) its own timer. Inlined into its two callers, as
    /// `ended`, `held`, `triage` and `account` are into theirs: every
    /// served wait runs them all, all of them off the fast path, and as
    /// calls their entries, exits and moves of `Next` were a share of a
    /// waiting acquire's instructions that callgrind shows (BENCHMARKS.md,
    /// "Looking again before depositing").
    #[inline(always)]
    fn poll_wait<'a>(
        &'a self,
        w: &mut Waiting<'a, M>,
        by: &'static Location<'static>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Next<'a, M>> {
        // The node first (registering the waker), then whether a sweeper
        // serves: one that stops after the look wakes every node.
        if let Poll::Ready(outcome) = w.guard.poll(cx) {
            return Poll::Ready(self.ended(outcome, w.begun, w.at, by));
        }
        if let Some(s) = w.starved.as_mut() {
            if let Poll::Ready(outcome) = s.poll(cx) {
                let budget = s.budget;
                w.starved = None;
                if let Outcome::Granted(_) = outcome {
                    match self.with_token(&mut w.guard, w.begun, w.at, by) {
                        Some(next) => return Poll::Ready(next),
                        // The key filled meanwhile: wait for it alone.
                        None => budget.put_back(),
                    }
                }
            }
        }
        if w.at == NO_DEADLINE || self.shared().waiters.swept(w.at) {
            return Poll::Pending;
        }
        let clock = &self.shared().clock;
        let timer = w.timer.get_or_insert_with(|| {
            let at = clock
                .instant_at(w.at)
                .unwrap_or_else(tokio::time::Instant::now);
            Box::pin(sync::sleep_until(at))
        });
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Served at the last moment: keep it; otherwise it timed out.
        let outcome = w.guard.withdraw().unwrap_or(Outcome::TimedOut);
        Poll::Ready(self.ended(outcome, w.begun, w.at, by))
    }

    /// What a wait's outcome leads to.
    // Inlined: see `poll_wait`.
    #[inline(always)]
    fn ended<'a>(
        &'a self,
        outcome: Outcome,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
    ) -> Next<'a, M> {
        match outcome {
            // SAFETY: this waiter's node was served with `g` (its poll or
            // its withdraw saw the serving CAS): the grant is its alone.
            Outcome::Granted(g) => self.held(unsafe { from_grant(g) }, begun, at, by),
            Outcome::Closed => Next::Done(Err(PoolError::Closed), begun),
            Outcome::TimedOut => Next::Done(Err(PoolError::Timeout(TimeoutKind::Waiting)), begun),
        }
    }

    /// What a connection or place in hand leads to: handed out if ready,
    /// else checked or connected by the slow future.
    // Inlined: see `poll_wait`.
    #[inline(always)]
    fn held<'a>(
        &'a self,
        held: Held,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
    ) -> Next<'a, M> {
        let start = match held {
            Held::Busy(busy) => match self.triage(busy, by) {
                Ok(p) => return Next::Done(Ok(p), begun),
                Err(Some(c)) => Start::Check(c),
                Err(None) => Start::Look,
            },
            Held::Place(place) => Start::Connect(PlaceGuard::new(self.shared(), place)),
        };
        Next::Slow(start, begun, at)
    }

    /// Counts and logs how a `get` past the fast path ended: the wait time
    /// of a success, the kind of a time-out; a failing `get` while the
    /// backend is down asks for the next probe when it is due.
    // Inlined: see `poll_wait`.
    #[inline(always)]
    fn account(
        &self,
        result: Result<Pooled<M>, PoolError<M::Error>>,
        begun: u64,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = self.shared();
        let waited = || Duration::from_nanos(shared.clock.now_ns().saturating_sub(begun));
        match &result {
            // Striped by the thread's home shard.
            Ok(_) => shared
                .counters
                .wait
                .record_duration(crate::tid::home_index(shared.config.shards), waited()),
            Err(PoolError::Timeout(kind)) => {
                bump(&shared.counters.timeouts);
                bump(match kind {
                    TimeoutKind::Waiting => &shared.counters.timeouts_waiting,
                    TimeoutKind::Connecting => &shared.counters.timeouts_connecting,
                    TimeoutKind::Checking => &shared.counters.timeouts_checking,
                });
                tracing::info!(pool = %shared.config.name, kind = kind.name(), waited_ms = waited().as_millis() as u64, "get timed out");
            }
            Err(PoolError::Unavailable { .. }) => probe_if_due(shared),
            Err(_) => {}
        }
        result
    }

    /// The slow future: a check, a connect, or another round of steps 1-3
    /// (`acquire_slow`), accounted as one `get`.
    async fn acquire_rest(
        &self,
        start: Start<'_, M>,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let mut phase = match start {
            Start::Look => TimeoutKind::Waiting,
            Start::Check(_) => TimeoutKind::Checking,
            Start::Connect(_) => TimeoutKind::Connecting,
        };
        let result = match self.acquire_slow(start, begun, at, by, &mut phase).await {
            // The kind is what the `get` did last, whichever step saw the
            // deadline pass, so that the error and its counter agree.
            Err(PoolError::Timeout(_)) => Err(PoolError::Timeout(phase)),
            other => other,
        };
        self.account(result, begun)
    }

    /// Steps 2 and 3 of the acquire path (module docs), plus checks of
    /// connections that sat idle, from `start`, until deadline `at`.
    async fn acquire_slow(
        &self,
        mut start: Start<'_, M>,
        begun: u64,
        at: u64,
        by: &'static Location<'static>,
        phase: &mut TimeoutKind,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = self.shared();
        // Checks and connects are I/O, bounded by a Tokio timer.
        let until = shared.clock.instant_at(at);
        // Passed by the pool's clock (a mock's too), or by that timer.
        let passed = || {
            at != NO_DEADLINE
                && (shared.clock.now_ns() >= at.saturating_mul(1_000_000)
                    || until.is_some_and(|u| tokio::time::Instant::now() >= u))
        };
        loop {
            // Every round follows a miss, a check, an expiry or a wake-up,
            // and a check needs time: past the deadline, stop there (an
            // unchecked candidate goes back to the idle set, not closed by
            // a check cut short before it began; a place goes back).
            if passed() {
                if let Start::Check(c) = start {
                    c.requeue();
                }
                return Err(PoolError::Timeout(*phase));
            }
            match std::mem::replace(&mut start, Start::Look) {
                Start::Check(c) => {
                    *phase = TimeoutKind::Checking;
                    // Bounded by the deadline itself (`CheckGuard::check`).
                    if let Some(busy) = c.check(until).await {
                        return Ok(self.hand_out_slow(busy, by));
                    }
                    continue;
                }
                Start::Connect(place) => {
                    *phase = TimeoutKind::Connecting;
                    bump(&shared.counters.acquire_connects);
                    let connect = crate::connector::open(shared, place, None, until);
                    let p = sync::bounded(until, connect)
                        .await
                        .unwrap_or(Err(PoolError::Timeout(TimeoutKind::Connecting)))?;
                    return Ok(self.hand_out_slow(p, by));
                }
                Start::Look => {}
            }
            if shared.closed.load(Ordering::Acquire) {
                return Err(PoolError::Closed);
            }
            if let Some(busy) = shared.take_idle() {
                match self.triage(busy, by) {
                    Ok(p) => return Ok(p),
                    Err(c) => start = c.map_or(Start::Look, Start::Check),
                }
                continue;
            }
            if let Some(place) = shared.reserve() {
                start = Start::Connect(PlaceGuard::new(shared, place));
                continue;
            }
            *phase = TimeoutKind::Waiting;
            let mut waiting = None;
            let next = std::future::poll_fn(|cx| {
                let next = match waiting.as_mut() {
                    None => self.enqueue(begun, at, by, cx),
                    Some(w) => match self.poll_wait(w, by, cx) {
                        Poll::Ready(next) => next,
                        Poll::Pending => return Poll::Pending,
                    },
                };
                match next {
                    Next::Wait(w) => {
                        waiting = Some(w);
                        Poll::Pending
                    }
                    next => Poll::Ready(next),
                }
            })
            .await;
            match next {
                Next::Done(result, _) => return result,
                Next::Slow(s, ..) => start = s,
                Next::Wait(_) => unreachable!("a wait ends in a result or a step"),
            }
        }
    }

    /// Judges an owned idle connection on the slow path: ready (handed
    /// out), expired (closed; `Err(None)`), or due for a check. Against the
    /// same reading as the fast path's (`now_for_checks`): a waiter served
    /// at the cap comes here on every acquire, and a real read that
    /// refreshes the shared cached reading would write a line every
    /// waiting thread reads.
    // Inlined: see `poll_wait`.
    #[inline(always)]
    fn triage(
        &self,
        mut busy: Busy,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, Option<CheckGuard<'_, M>>> {
        let shared = self.shared();
        match shared.judge(&mut busy, shared.now_for_checks(), true) {
            Verdict::Ready => Ok(self.hand_out_slow(busy, by)),
            verdict => Err(self.unready(busy, verdict)),
        }
    }

    /// An owned idle connection judged not ready: closed (expired or
    /// broken; `None`), or a candidate for a check. Out of line, so that
    /// the fast paths that call it keep their registers for the hit.
    #[cold]
    #[inline(never)]
    fn unready(&self, busy: Busy, verdict: Verdict) -> Option<CheckGuard<'_, M>> {
        let shared = self.shared();
        match verdict {
            Verdict::Expired => self.expire(busy),
            Verdict::Broken => shared.retire_broken(busy, &mut Settle::new(shared)),
            // `Ready` never comes here; checking it anyway is harmless.
            Verdict::Check | Verdict::Ready => return Some(CheckGuard::new(shared, busy)),
        }
        None
    }

    /// Runs one maintenance pass now: expire idle and over-age connections,
    /// report leaks, refill `min_idle`, and time out parked `get`s whose
    /// deadline passed. The pool does this on its own (a background task
    /// when a Tokio runtime is present, and busy threads in passing); call
    /// it when running without a runtime, or in tests that drive a mock
    /// clock: time on a mock clock passes only when advanced, for
    /// connection lifetimes and `get` deadlines alike.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (clock, mock) = latchless::Clock::mock();
    /// let pool = Pool::builder(M)
    ///     .idle_timeout(Some(Duration::from_secs(60)))
    ///     .clock(clock)
    ///     .build()
    ///     .unwrap();
    /// drop(pool.get().await.unwrap());
    /// mock.advance(Duration::from_secs(61));
    /// pool.maintain();
    /// assert_eq!(pool.state().size, 0, "the idle connection timed out");
    /// # }
    /// ```
    pub fn maintain(&self) {
        let shared = self.shared();
        let mut retired = Settle::new(shared);
        housekeep(shared, shared.clock.now(), &mut retired);
        // Another thread holding the waiter line is one that serves it;
        // the next pass sweeps.
        let _ = crate::background::sweep(shared, false, &mut retired);
    }

    /// The pool's health: the alerts firing over the last 30 s (samples
    /// the counters now; module docs of [`Health`] list each alert, its
    /// threshold and default). Takes a mutex that only maintenance and
    /// `health` / `sizing` take, never `get` or a release. Each alert's
    /// transition into firing logs one rate-limited `tracing` warning, its
    /// recovery an info.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).build().unwrap();
    /// assert!(pool.health().is_healthy());
    /// ```
    pub fn health(&self) -> Health {
        let core = self.core();
        sample(core, core.clock.now(), true)
            .map(|s| s.monitor.health())
            .unwrap_or_default()
    }

    /// Sizing advice from the last 30 s: connections = acquire rate × mean
    /// hold time × 1.5 ([`Sizing`]), with a verdict against `max_size`.
    /// Samples the counters now, like [`health`](Pool::health).
    ///
    /// ```
    /// # use latchless::{Manager, Pool, SizingVerdict};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).build().unwrap();
    /// assert_eq!(pool.sizing().verdict, SizingVerdict::NoData);
    /// ```
    pub fn sizing(&self) -> Sizing {
        let core = self.core();
        sample(core, core.clock.now(), true)
            .map(|s| s.monitor.sizing())
            .unwrap_or_default()
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
        let hits = shared.slots.hits();
        let mut m = shared.counters.snapshot(shared.state(), passes, hits);
        if let Some((down, _)) = shared.breaker.outage(shared.clock.now()) {
            m.backend_down = true;
            m.down_for = Duration::from_millis(down);
        }
        m
    }

    /// Acquisitions so far (`hits + waits + acquire_connects` of
    /// [`metrics`](Pool::metrics)), read from the counters in place: a
    /// keyed pool's maintenance looks at every key's on every pass, and a
    /// `Metrics` snapshot would allocate its four histograms per key.
    pub(crate) fn uses(&self) -> u64 {
        let shared = self.shared();
        let counters = &shared.counters;
        shared
            .slots
            .hits()
            .wrapping_add(counters.waits.get())
            .wrapping_add(counters.acquire_connects.load(Ordering::Relaxed))
    }

    /// Exports every counter, gauge and histogram of [`metrics`](Pool::metrics),
    /// and the alerts of [`health`](Pool::health) and the recommendation of
    /// [`sizing`](Pool::sizing), through the [`metrics`](https://docs.rs/metrics)
    /// facade to whatever recorder is installed, under stable names
    /// (`latchless_acquire_wait_seconds`, …, listed in the README, "Monitoring")
    /// with a `pool` label (`Builder::name`). Call it before each scrape
    /// or on a timer: the pool records into its own atomics and never
    /// calls the facade on its own, so the hot path never does. Feature
    /// `metrics`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).name("db").build().unwrap();
    /// pool.export_metrics(); // a no-op without an installed recorder
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export_metrics(&self) {
        let health = self.health();
        let sizing = self.sizing();
        crate::metrics::export(
            &self.config().name,
            &self.metrics(),
            &health,
            &sizing,
            self.max_size(),
        );
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
        shared.close(&mut Settle::new(shared));
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

pin_project_lite::pin_project! {
    /// The future of `get`, `get_timeout`, `get_until` (and `get_blocking`
    /// past its `try_get`). Its first poll runs the fast path as a plain
    /// call (no state machine around it); a miss puts in `after` either a
    /// wait polled by hand (most misses at the cap) or the slow future
    /// built from `rest`, and polls that from then on. Dropping it at any
    /// point drops what it holds, whose guards give it back (I5).
    struct Acquire<'a, M: Manager, F, S> {
        pool: &'a Pool<M>,
        timeout: Duration,
        by: &'static Location<'static>,
        started: bool,
        // Builds the slow future (a function item: no state).
        rest: F,
        #[pin]
        after: After<Rest<'a, M, S>>,
    }
}

/// What `Acquire` builds after a miss.
enum Rest<'a, M: Manager, S> {
    /// Registered as a waiter, polled by hand.
    Wait(Waiting<'a, M>),
    /// The slow future (checks, connects, further rounds).
    Slow(S),
}

/// What `Acquire` holds after a miss, in one slot. Its drop is a test
/// inlined into the caller, and a call only when there is something to
/// drop: as a plain `Option` field, the drop glue of the whole state
/// machine was an out-of-line call after every `get`, fast ones included
/// (BENCHMARKS.md, "Design decisions"). One slot for both kinds: the fast
/// path initialises and tests one word, not two.
struct After<R>(ManuallyDrop<Option<R>>);

impl<R> After<R> {
    /// Nothing built yet. (A function, not a constant: a constant of
    /// this size is copied in whole from read-only memory.)
    #[inline(always)]
    fn none() -> Self {
        Self(ManuallyDrop::new(None))
    }

    /// The pinned slot.
    #[inline(always)]
    fn slot(self: Pin<&mut Self>) -> Pin<&mut Option<R>> {
        // SAFETY: structural pinning of the one field: nothing moves the
        // `Option` out of an `After` (there is no accessor but this one,
        // and `Drop` drops it in place), and `After` is `Unpin` only if `R`
        // is.
        unsafe { self.map_unchecked_mut(|after| &mut *after.0) }
    }
}

impl<R> Drop for After<R> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_after(&mut self.0);
        }
    }
}

/// Drops what a miss built, in place (pinning allows it: dropped, never
/// moved).
#[cold]
#[inline(never)]
fn drop_after<R>(slot: &mut Option<R>) {
    *slot = None;
}

impl<'a, M, F, S> Future for Acquire<'a, M, F, S>
where
    M: Manager,
    F: Fn(&'a Pool<M>, Start<'a, M>, u64, u64, &'static Location<'static>) -> S,
    S: Future<Output = Result<Pooled<M>, PoolError<M::Error>>>,
{
    type Output = Result<Pooled<M>, PoolError<M::Error>>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.started {
            *this.started = true;
            match this.pool.acquire_fast(this.by) {
                Fast::Done(done) => return Poll::Ready(done),
                Fast::Slow(candidate) => {
                    let next = this.pool.begin(*this.timeout, candidate, this.by, cx);
                    return go_on(next, this.after.slot(), this.rest, this.pool, this.by, cx);
                }
            }
        }
        poll_after(this.after.slot(), this.rest, this.pool, this.by, cx)
    }
}

/// Polls what an earlier poll of `Acquire` built after its miss.
#[inline(never)]
fn poll_after<'a, M, F, S>(
    mut slot: Pin<&mut Option<Rest<'a, M, S>>>,
    rest: &F,
    pool: &'a Pool<M>,
    by: &'static Location<'static>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<Pooled<M>, PoolError<M::Error>>>
where
    M: Manager,
    F: Fn(&'a Pool<M>, Start<'a, M>, u64, u64, &'static Location<'static>) -> S,
    S: Future<Output = Result<Pooled<M>, PoolError<M::Error>>>,
{
    // SAFETY: the `Slow` variant is pinned structurally (below, never
    // moved out: replaced only through `set`, which drops it in place);
    // `Wait` is not pinned, and only borrowed here.
    let next = match unsafe { slot.as_mut().get_unchecked_mut() } {
        Some(Rest::Wait(w)) => match pool.poll_wait(w, by, cx) {
            Poll::Ready(next) => next,
            Poll::Pending => return Poll::Pending,
        },
        // SAFETY: see above; `f` stays where it is until dropped in place.
        Some(Rest::Slow(f)) => return unsafe { Pin::new_unchecked(f) }.poll(cx),
        // As an `async fn`'s future: polling after completion is a bug in
        // the caller (the fast path handed out its connection).
        None => panic!("`get`'s future polled after it completed"),
    };
    go_on(next, slot, rest, pool, by, cx)
}
/// What [`Pool::quick`] found.
pub(crate) enum Quick<M: Manager> {
    /// A ready connection.
    Hit(Pooled<M>),
    /// Nothing ready: wait or connect.
    Miss,
    /// The pool is closed.
    Closed,
}

/// What the fast path (`Pool::acquire_fast`) ends in.
enum Fast<'a, M: Manager> {
    /// A connection, or the pool is closed.
    Done(Result<Pooled<M>, PoolError<M::Error>>),
    /// Go on to the slow path, with a candidate due for a check if one was
    /// found.
    Slow(Option<CheckGuard<'a, M>>),
}

/// A `get` registered in the waiter queue, polled by hand (not inside the
/// slow future): what a miss at the cap comes to.
struct Waiting<'a, M: Manager> {
    /// The node; dropped before its outcome, it withdraws (I5).
    guard: WaitGuard<'a, M>,
    /// In a keyed pool at its budget, its node in the budget's line.
    starved: Option<TokenWait<'a>>,
    /// When the `get` began (pool clock, ns).
    begun: u64,
    /// Its deadline (pool clock ticks), or `NO_DEADLINE`.
    at: u64,
    /// Its own timer, armed only while no sweeper serves.
    timer: Option<Pin<Box<sync::Sleep>>>,
}

/// Where the slow future starts.
enum Start<'a, M: Manager> {
    /// Search again (a connection handed over turned out expired or
    /// broken).
    Look,
    /// Check this candidate first.
    Check(CheckGuard<'a, M>),
    /// Connect into this place.
    Connect(PlaceGuard<'a, M>),
}

/// What a step of the acquire path after the fast path comes to.
enum Next<'a, M: Manager> {
    /// The result, and when the `get` began (for `Pool::account`).
    Done(Result<Pooled<M>, PoolError<M::Error>>, u64),
    /// Parked as a waiter.
    Wait(Waiting<'a, M>),
    /// On to the slow future, from `Start`, begun at and due by.
    Slow(Start<'a, M>, u64, u64),
}

/// Acts on `next` for `Acquire`: the result, a wait kept in its slot, or
/// the slow future built in place and polled. Out of line: only a miss
/// comes here.
#[cold]
#[inline(never)]
fn go_on<'a, M, F, S>(
    next: Next<'a, M>,
    mut slot: Pin<&mut Option<Rest<'a, M, S>>>,
    rest: &F,
    pool: &'a Pool<M>,
    by: &'static Location<'static>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<Pooled<M>, PoolError<M::Error>>>
where
    M: Manager,
    F: Fn(&'a Pool<M>, Start<'a, M>, u64, u64, &'static Location<'static>) -> S,
    S: Future<Output = Result<Pooled<M>, PoolError<M::Error>>>,
{
    match next {
        Next::Done(result, begun) => {
            slot.set(None);
            Poll::Ready(pool.account(result, begun))
        }
        Next::Wait(w) => {
            slot.set(Some(Rest::Wait(w)));
            Poll::Pending
        }
        Next::Slow(start, begun, at) => {
            slot.set(Some(Rest::Slow(rest(pool, start, begun, at, by))));
            poll_after(slot, rest, pool, by, cx)
        }
    }
}

/// How many connects [`Pool::warm_up`] runs at once.
const WARM_UP_CONNECTS: usize = 4;

/// What a service needs around `get`: warm-up at start, a graceful drain at
/// shutdown, run-time resizing (`Pool::set_max_size` is `builder.rs`'s, with
/// `ResizeError`), per-request deadlines, and a blocking acquire for
/// threads outside the runtime.
impl<M: Manager> Pool<M> {
    /// The current cap on open connections: `max_size` as built, or as last
    /// set by [`set_max_size`](Pool::set_max_size).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).max_size(3).max_size_limit(6).build().unwrap();
    /// assert_eq!(pool.max_size(), 3);
    /// pool.set_max_size(5).unwrap();
    /// assert_eq!(pool.max_size(), 5);
    /// ```
    pub fn max_size(&self) -> usize {
        self.shared().slots.cap()
    }

    /// Sets the cap (validated by `set_max_size`, `builder.rs`).
    pub(crate) fn resize(&self, n: usize) {
        let shared = self.shared();
        shared.resize(n, &mut Settle::new(shared));
    }

    /// Opens connections until `min_idle` are idle (at least one, to prove
    /// the target is reachable), up to 4 at a time, within the current
    /// `max_size` and `acquire_timeout`; returns how many it opened. Call it
    /// before a service starts taking traffic.
    ///
    /// # Errors
    /// The first connect error as [`PoolError::Connect`] (with `fail_fast`
    /// at once, otherwise after retrying until `acquire_timeout`), so that a
    /// service can refuse to start; [`PoolError::Timeout`] if no connect
    /// finished in time; [`PoolError::Closed`]. Connections opened before
    /// the error stay idle in the pool.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).max_size(8).min_idle(3).build().unwrap();
    /// let opened = pool.warm_up().await.unwrap();
    /// assert!(pool.state().idle >= 3);
    /// assert!(opened <= 3);
    /// # }
    /// ```
    pub async fn warm_up(&self) -> Result<usize, PoolError<M::Error>> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        let target = shared.config.min_idle.max(1);
        let deadline = tokio::time::Instant::now().checked_add(shared.config.acquire_timeout);
        // Each connect holds a claim towards `target`, shared with the
        // background refill (`IdleClaim`), so the two side by side open no
        // more than `target` while nothing is taken.
        let open = |place, claim| {
            // The guard is made now, not at the future's first poll: a
            // future dropped unpolled must give its place back too.
            let connect =
                crate::connector::open(shared, PlaceGuard::new(shared, place), None, deadline);
            Box::pin(async move { (connect.await, claim) })
        };
        let mut inflight = Vec::with_capacity(WARM_UP_CONNECTS);
        let mut opened = 0;
        loop {
            while inflight.len() < WARM_UP_CONNECTS {
                let Some(claim) = IdleClaim::new(shared, target) else {
                    break;
                };
                let Some(place) = shared.reserve() else {
                    break;
                };
                inflight.push(open(place, claim));
            }
            if inflight.is_empty() {
                return Ok(opened);
            }
            let (done, claim) = std::future::poll_fn(|cx| {
                for i in 0..inflight.len() {
                    if let Poll::Ready(r) = inflight[i].as_mut().poll(cx) {
                        drop(inflight.swap_remove(i));
                        return Poll::Ready(r);
                    }
                }
                Poll::Pending
            })
            .await;
            // On an error the connects still in flight are dropped with
            // their places (`PlaceGuard`) and claims.
            let busy = done?;
            shared.put_back_fresh(busy, &mut Settle::new(shared));
            drop(claim);
            opened += 1;
        }
    }

    /// Closes the pool as [`close`](Pool::close) does (waiters get
    /// [`PoolError::Closed`], idle connections close now), then waits until
    /// every connection in use has come back and been closed, or `timeout`
    /// passed. Returns how many places were still taken then (connections
    /// in use or connecting): 0 means a clean shutdown. No polling: the
    /// last place given back wakes the drainer.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let conn = pool.get().await.unwrap();
    /// let returner = tokio::spawn(async move {
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    ///     drop(conn);
    /// });
    /// assert_eq!(pool.drain(Duration::from_secs(5)).await, 0);
    /// assert_eq!(pool.state().size, 0);
    /// # returner.await.unwrap();
    /// # }
    /// ```
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.close().await;
        let shared = self.shared();
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let notified = shared.drained.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the look, so a place freed after it wakes us.
            notified.as_mut().enable();
            let out = shared.slots.taken();
            if out == 0 {
                return 0;
            }
            match deadline {
                Some(d) => {
                    if sync::timeout_at(d, notified).await.is_err() {
                        return shared.slots.taken();
                    }
                }
                None => notified.await,
            }
        }
    }

    /// [`get`](Pool::get) with an absolute deadline instead of
    /// `acquire_timeout` (the path of [`get_timeout`](Pool::get_timeout),
    /// with the time left; a deadline already past tries once without
    /// waiting). A Tokio `Instant` converts with `into_std()`.
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::{Duration, Instant};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let request_deadline = Instant::now() + Duration::from_millis(250);
    /// let conn = pool.get_until(request_deadline).await.unwrap();
    /// # }
    /// ```
    #[track_caller]
    pub fn get_until(
        &self,
        deadline: std::time::Instant,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.acquire(left, Location::caller())
    }

    /// A connection for an OS thread outside the runtime, waiting at most
    /// `timeout`.
    ///
    /// Served from the idle set like [`try_get`](Pool::try_get) (no
    /// runtime, no allocation, no lock). When it must wait or connect, it
    /// runs the ordinary acquire path as a task on the runtime the pool was
    /// built in, and the thread parks until the task hands it the result:
    /// the task's waiter node sits in the same FIFO queue as async callers,
    /// so blocking and async waiters are served in arrival order. That
    /// runtime must be a multi-threaded one, or a current-thread one driven
    /// by another thread (its timers and I/O run there); one that nothing
    /// drives makes the call wait its timeout plus a second, then return
    /// `Timeout`. The returned [`Pooled`] may be dropped on any thread.
    ///
    /// # Errors
    /// As [`get`](Pool::get), and: [`PoolError::NoRuntime`] if it must wait
    /// or connect but the pool was built outside a runtime, or the runtime
    /// it was built in has shut down;
    /// [`PoolError::BlockingInRuntime`] if it must wait or connect on a
    /// thread inside a runtime (a worker, or a `spawn_blocking` thread:
    /// use `get().await`, or `Handle::block_on(pool.get())` there).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = u8; type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<u8, std::io::Error> { Ok(1) } }
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 1)] async fn main() {
    /// let pool = Pool::builder(M).max_size(1).build().unwrap();
    /// let for_thread = pool.clone();
    /// let worker = std::thread::spawn(move || {
    ///     let conn = for_thread.get_blocking(Duration::from_secs(5)).unwrap();
    ///     *conn
    /// });
    /// # let v = tokio::task::spawn_blocking(move || worker.join().unwrap()).await.unwrap();
    /// # assert_eq!(v, 1);
    /// # }
    /// ```
    #[inline]
    #[track_caller]
    pub fn get_blocking(&self, timeout: Duration) -> Result<Pooled<M>, PoolError<M::Error>> {
        match self.try_get() {
            Some(p) => Ok(p),
            None => self.get_blocking_slow(timeout, Location::caller()),
        }
    }

    /// `get_blocking` past the idle set: the acquire runs as a task on the
    /// pool's runtime, and this thread parks until the task sends its
    /// result. A runtime that has shut down drops the task unrun, which
    /// closes the channel: the thread gets `NoRuntime`, never a panic from
    /// inside Tokio. One allocation (the task), on this slow path only.
    #[cold]
    #[inline(never)]
    fn get_blocking_slow(
        &self,
        timeout: Duration,
        by: &'static Location<'static>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        use std::sync::mpsc::RecvTimeoutError;
        if self.is_closed() {
            return Err(PoolError::Closed);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(PoolError::BlockingInRuntime);
        }
        let Some(runtime) = &self.handle.runtime else {
            return Err(PoolError::NoRuntime);
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.clone();
        runtime.spawn(async move {
            let got = pool.acquire(timeout, by).await;
            // If this thread stopped waiting, the connection inside the
            // failed send is dropped here: back to the pool.
            let _ = tx.send(got);
        });
        let outcome = match timeout.checked_add(BLOCKING_GRACE) {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match outcome {
            Ok(got) => got,
            Err(RecvTimeoutError::Disconnected) => Err(PoolError::NoRuntime),
            // The runtime lives but nothing drives it (a current-thread
            // runtime whose thread does not run it).
            Err(RecvTimeoutError::Timeout) => Err(PoolError::Timeout(TimeoutKind::Waiting)),
        }
    }
}

/// How much longer than its own deadline `get_blocking` waits for the
/// acquire task's answer before it concludes that the runtime is not
/// being driven.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::marker::PhantomPinned;
    use std::rc::Rc;
    use std::task::{Context, Waker};

    /// A future that must not move once polled: its first poll notes its
    /// address, its drop checks it and counts.
    struct Pinned {
        at: Cell<usize>,
        drops: Rc<Cell<u32>>,
        _pin: PhantomPinned,
    }

    impl Future for Pinned {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.at.set(std::ptr::from_ref(&*self).addr());
            Poll::Pending
        }
    }

    impl Drop for Pinned {
        fn drop(&mut self) {
            let here = std::ptr::from_ref(&*self).addr();
            assert!(
                self.at.get() == 0 || self.at.get() == here,
                "moved after its first poll"
            );
            self.drops.set(self.drops.get() + 1);
        }
    }

    struct Unit;
    impl Manager for Unit {
        type Connection = ();
        type Error = std::io::Error;
        async fn connect(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
    }

    /// A metrics scrape (`health()`, `sizing()`, `export_metrics`) keeps
    /// the once-a-second rule for relaxing the asymmetric fence: a pool
    /// armed by a waiter stays armed however often it is scraped within
    /// the second: a scrape that relaxed it would make the next waiter
    /// pay a `membarrier` after every scrape.
    #[test]
    fn scrapes_relax_the_fence_at_most_once_a_second() {
        let (clock, mock) = crate::Clock::mock();
        let pool = Pool::builder(Unit)
            .background(false)
            .clock(clock)
            .build()
            .unwrap();
        let idle = &pool.core().idle;
        if idle.releasers_fence() {
            return; // no membarrier here: releasers always fence
        }
        idle.fence_heavy();
        assert!(idle.releasers_fence(), "armed by a waiter");
        for _ in 0..5 {
            drop(pool.health());
            let _ = pool.sizing();
        }
        assert!(idle.releasers_fence(), "a scrape relaxed the fence");
        // A second later, two quiet looks relax it (`Asym::relax`).
        for _ in 0..2 {
            mock.advance(Duration::from_millis(1_001));
            drop(pool.health());
        }
        assert!(!idle.releasers_fence(), "quiet for two seconds");
    }

    /// `After`'s own drop (the `ManuallyDrop` turns the field's off): an
    /// empty one drops nothing, a built and polled future is dropped
    /// exactly once, where it was pinned. Run under miri by `.ci/run`.
    #[test]
    fn after_drops_a_built_future_once_in_place_and_nothing_else() {
        let drops = Rc::new(Cell::new(0));
        let pinned = || Pinned {
            at: Cell::new(0),
            drops: Rc::clone(&drops),
            _pin: PhantomPinned,
        };
        drop(After::<Pinned>::none());
        let mut unpolled = Box::pin(After::none());
        unpolled.as_mut().slot().set(Some(pinned()));
        drop(unpolled);
        assert_eq!(drops.get(), 1, "a built, unpolled future is dropped");
        let mut slow = Box::pin(After::none());
        slow.as_mut().slot().set(Some(pinned()));
        let fut = slow.as_mut().slot().as_pin_mut().expect("built");
        assert!(
            fut.poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        drop(slow);
        assert_eq!(drops.get(), 2, "a polled one too, once, in place");
    }
}
