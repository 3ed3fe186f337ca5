//! Talking to the manager: opening connections with retries and backoff,
//! adopting them into a slot, and pre-ping checks of connections that sat
//! idle.
//!
//! Invariants kept:
//! - A connect or check is always bounded: by `connect_timeout` and by the
//!   caller's deadline, whichever comes first.
//! - A failed connect is retried with exponential backoff and jitter only
//!   while the caller's deadline allows another attempt; then the caller
//!   gets `Connect(last error)`, or `Timeout` if no attempt finished. In
//!   fast-fail mode the first failure is returned at once.
//! - A connection under check is owned by a [`CheckGuard`]: if the check
//!   fails, outlasts `check_timeout` or panics, the connection is closed
//!   and its place passed on (I3, I5). If its caller goes away while the
//!   check runs (cancelled, or its deadline came first), the same check
//!   finishes without it on the current runtime, bounded by
//!   `check_timeout`: a passing connection goes back to the pool, a
//!   failing one is closed; without a runtime it is closed (its protocol
//!   state is unknown), never counted as a failed check. Nothing is lost
//!   if that runtime drops the task unrun: the task's owner closes it.
//! - Evidence that the server went away (a failed check; a failed connect
//!   after a successful one) starts a restart epoch: every connection
//!   verified before it is checked before its next use. A broken
//!   connection is not such evidence: it arms a probe of one connection.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::lifetime::Owner;
use crate::maintenance::{Deadline, Entry};
use crate::metrics::bump;
use crate::pool::{Retired, Shared, settle_held};
use crate::sync::Ordering;
use crate::{Manager, PoolError};

/// The earlier of `now + d` (if representable) and `deadline`.
fn limit(d: Duration, deadline: Option<Instant>) -> Option<Instant> {
    match (Instant::now().checked_add(d), deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `fut` until `at` (forever if `None`); `None` if it timed out.
async fn bounded<F: Future>(at: Option<Instant>, fut: F) -> Option<F::Output> {
    match at {
        Some(at) => crate::sync::timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}

impl<M: Manager> Shared<M> {
    /// A random duration in `[d/2, d]` (cold paths only).
    pub(crate) fn jitter(&self, d: Duration) -> Duration {
        let half = d / 2;
        half + half.mul_f64(self.random_below(1024) as f64 / 1023.0)
    }

    /// A random number in `0..n` (xorshift; cold paths only).
    pub(crate) fn random_below(&self, n: u64) -> u64 {
        let r = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Some(x)
            })
            .unwrap_or(1);
        r % n.max(1)
    }

    /// Puts a freshly opened connection into reserved slot `index` (owned,
    /// FREE): stamps its lifetime (shortened by up to 5% of jitter, so
    /// connections opened together do not expire together), takes its
    /// reference on the core, and schedules its deadlines. Returns `index`,
    /// now BUSY and owned by the caller.
    pub(crate) fn adopt(&self, index: u32, conn: M::Connection) -> u32 {
        let now = self.clock.now();
        let serial = self.counters.opened.fetch_add(1, Ordering::Relaxed) + 1;
        // The first tick at which it must not be handed out: its lifetime
        // less jitter (up to 5%) less the margin by which the cached clock
        // may lag.
        let expires_at = if self.ticks.lifetime == 0 {
            u64::MAX
        } else {
            let l = self.ticks.lifetime;
            now.saturating_add(l - self.random_below(l / 20 + 1))
                .saturating_sub(self.ticks.margin)
        };
        let seq = self.maintenance.next_seq();
        // SAFETY: the caller owns the reserved, FREE slot.
        unsafe { self.slots.fill(index, conn, serial, now, expires_at, seq) };
        // Fresh: no check is due, only its lifetime bounds it.
        self.slots.set_fresh_until(index, expires_at);
        // The connection's own reference on the core (`lifetime.rs`).
        self.add_reference();
        if expires_at != u64::MAX {
            self.maintenance.schedule(
                expires_at,
                Entry {
                    index,
                    serial,
                    kind: Deadline::Lifetime,
                },
            );
        }
        if let Some(idle) = self.config.idle_timeout {
            self.maintenance.schedule(
                now.saturating_add(crate::maintenance::ms(idle)),
                Entry {
                    index,
                    serial,
                    kind: Deadline::Idle,
                },
            );
        }
        index
    }
}

/// Opens a connection: attempts bounded by `connect_timeout` and
/// `deadline`, failures retried with backoff (module docs).
pub(crate) async fn connect_with_retry<M: Manager>(
    shared: &Shared<M>,
    deadline: Option<Instant>,
) -> Result<M::Connection, PoolError<M::Error>> {
    let cfg = &shared.config;
    let mut backoff = cfg.connect_backoff;
    let mut last = None;
    loop {
        let attempt = bounded(
            limit(cfg.connect_timeout, deadline),
            shared.manager.connect(),
        );
        match attempt.await {
            Some(Ok(conn)) => {
                shared.backend_down.store(false, Ordering::Relaxed);
                return Ok(conn);
            }
            Some(Err(e)) => {
                bump(&shared.counters.connect_errors);
                last = Some(e);
            }
            None => bump(&shared.counters.connect_timeouts),
        }
        // A connect that fails after earlier ones succeeded is evidence
        // that the server went away: idle connections are checked before
        // their next use.
        if shared.counters.opened.load(Ordering::Relaxed) > 0 {
            shared.maintenance.note_failure();
        }
        shared.backend_down.store(true, Ordering::Relaxed);
        if cfg.fail_fast || shared.closed.load(Ordering::Acquire) {
            break;
        }
        let pause = shared.jitter(backoff);
        backoff = backoff.saturating_mul(2).min(cfg.max_connect_backoff);
        let resume = Instant::now().checked_add(pause);
        if deadline.is_some_and(|d| resume.is_none_or(|r| r >= d)) {
            break; // no time left for another attempt
        }
        crate::sync::sleep(pause).await;
    }
    Err(last.map_or(PoolError::Timeout, PoolError::Connect))
}

/// A check in flight: `'static` (it owns a strong reference on the core and
/// reaches the connection through the slot it owns), so that it can finish
/// without its caller. One allocation per check, which is a network round
/// trip anyway; the fast path runs none.
type CheckFuture<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send>>;

/// Where a [`CheckGuard`]'s check stands.
enum Stage<E> {
    /// Not started: dropped now, the connection goes back unchecked.
    Waiting,
    /// Running, with the instant `check_timeout` ends it.
    Running(CheckFuture<E>, Option<Instant>),
    /// Failed (or timed out, or panicked): dropped now, it is closed.
    Failed,
}

/// An owned idle connection awaiting its pre-ping. Dropped before the check
/// starts, it goes back unchecked; after a failed check, it is closed and
/// its place passed on; while the check runs (the caller was cancelled or
/// its deadline passed), the check finishes without the caller on the
/// current runtime, bounded by `check_timeout`, and a passing connection
/// goes back to the pool (a cancelled check is not a failed one).
pub(crate) struct CheckGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    index: Option<u32>,
    stage: Stage<M::Error>,
}

/// Starts `Manager::check` on the connection of owned slot `index`.
fn start_check<M: Manager>(owner: Arc<Owner<M>>, index: u32) -> CheckFuture<M::Error> {
    Box::pin(async move {
        // SAFETY: the slot is owned, BUSY, by whoever owns this future (a
        // `CheckGuard`, then possibly `finish_detached`), which neither
        // touches the connection nor gives the slot away before dropping
        // the future: this is the only reference to the connection.
        let conn = unsafe { owner.slots.conn_mut(index) };
        owner.manager.check(conn).await
    })
}

/// Polls a check, catching a panic in it as a failure.
fn poll_guarded<E>(fut: &mut CheckFuture<E>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
    match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(r)) => Poll::Ready(r.map_err(drop)),
        Err(_) => Poll::Ready(Err(())),
    }
}

/// Runs a check to its end, catching a panic in it as a failure.
async fn guarded<E>(fut: &mut CheckFuture<E>) -> Result<(), ()> {
    std::future::poll_fn(|cx| poll_guarded(fut, cx)).await
}

impl<'a, M: Manager> CheckGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, index: u32) -> Self {
        Self {
            shared,
            index: Some(index),
            stage: Stage::Waiting,
        }
    }

    /// Runs `Manager::check`, bounded by `check_timeout` and `deadline`.
    /// `Some(index)` if it passed (the slot is the caller's); `None` if the
    /// connection failed (closed when this guard drops) or the caller's
    /// deadline came first (the check goes on without the caller).
    pub(crate) async fn check(mut self, deadline: Option<Instant>) -> Option<u32> {
        let shared = self.shared;
        let index = self.index?;
        let until = Instant::now().checked_add(shared.config.check_timeout);
        // Kept in the guard while it runs: if this future is dropped at the
        // await below, the guard's `Drop` finds it running and detaches it.
        self.stage = Stage::Running(start_check(Arc::clone(shared), index), until);
        let bound = match (until, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stage = &mut self.stage;
        let run = std::future::poll_fn(|cx| match stage {
            Stage::Running(fut, _) => poll_guarded(fut, cx),
            _ => Poll::Ready(Err(())),
        });
        match bounded(bound, run).await {
            Some(Ok(())) => {
                self.stage = Stage::Waiting; // drops the future first
                shared.passed_check(index);
                self.index = None;
                Some(index)
            }
            // `check_timeout` ran out, or the check failed or panicked.
            None if until.is_none_or(|u| Instant::now() < u) => {
                // The caller's deadline came first: `Drop` detaches the
                // check, which goes on without the caller.
                None
            }
            _ => {
                self.stage = Stage::Failed; // drops the future first
                None
            }
        }
    }

    /// Gives the connection back unchecked (the caller ran out of time
    /// before its check could start): behind the other idle ones, keeping
    /// its idle time, or to a waiter, who checks it.
    pub(crate) fn requeue(mut self) {
        if let Some(index) = self.index.take() {
            settle_held(self.shared, self.shared.requeue(index));
        }
    }
}

impl<M: Manager> Shared<M> {
    /// A check of owned slot `index` passed: stamp it verified now.
    fn passed_check(&self, index: u32) {
        self.slots.set_verified(index, self.maintenance.next_seq());
        self.maintenance.note_alive(self.clock.hot_now());
    }

    /// A check of owned slot `index` failed: close it, and since a failed
    /// check is evidence that the server went away, every connection
    /// verified before now is checked before its next use (after a server
    /// restart that costs one failed check per connection, not one failed
    /// request or timeout per connection).
    fn failed_check(&self, index: u32) -> Retired {
        bump(&self.counters.check_failures);
        self.maintenance.note_failure();
        // Contain a panic from the connection's `Drop` (retire does).
        catch_unwind(AssertUnwindSafe(|| self.retire(index))).unwrap_or_default()
    }
}

/// A check whose caller went away, owned by the task that finishes it.
/// Dropped unfinished (its runtime shut down before it ran), it closes the
/// connection and passes its place on: nothing is lost.
struct Detached<M: Manager> {
    owner: Arc<Owner<M>>,
    index: Option<u32>,
    fut: Option<CheckFuture<M::Error>>,
}

impl<M: Manager> Drop for Detached<M> {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            // The future borrows the connection: gone before it closes.
            self.fut = None;
            let retired = catch_unwind(AssertUnwindSafe(|| self.owner.retire(index)));
            settle_held(&self.owner, retired.unwrap_or_default());
        }
    }
}

/// Finishes a check whose caller went away, bounded by `until`.
async fn finish_detached<M: Manager>(mut d: Detached<M>, until: Option<Instant>) {
    let result = match d.fut.as_mut() {
        Some(fut) => bounded(until, guarded(fut)).await,
        None => None,
    };
    d.fut = None;
    let Some(index) = d.index.take() else { return };
    let retired = match result {
        Some(Ok(())) => {
            d.owner.passed_check(index);
            // Straight to a waiter if one is parked, else idle.
            d.owner.grant(crate::waiters::Grant::Slot(index))
        }
        _ => d.owner.failed_check(index),
    };
    settle_held(&d.owner, retired);
}

impl<M: Manager> Drop for CheckGuard<'_, M> {
    fn drop(&mut self) {
        let Some(index) = self.index.take() else {
            return;
        };
        let shared = self.shared;
        match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::Waiting => settle_held(shared, shared.requeue(index)),
            Stage::Failed => settle_held(shared, shared.failed_check(index)),
            Stage::Running(fut, until) => {
                bump(&shared.counters.checks_detached);
                let detached = Detached {
                    owner: Arc::clone(shared),
                    index: Some(index),
                    fut: Some(fut),
                };
                // No runtime to finish it on: `Detached`'s drop closes the
                // connection (its protocol state is unknown), but not as a
                // failed check.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(finish_detached(detached, until));
                }
            }
        }
    }
}
