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
//!   fails, hangs, panics or is cancelled, the connection is closed (its
//!   protocol state is unknown) and its place passed on (I3, I5).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::lifetime::Owner;
use crate::maintenance::{Deadline, Entry};
use crate::metrics::bump;
use crate::pool::{Connecting, PlaceGuard, Shared, close_quietly, settle_held};
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

/// The one connect path, for `get` and the `min_idle` refill alike: opens
/// a connection into the reserved `place`, counted as connecting (not in
/// use) while it runs, retrying failures with backoff until `deadline`
/// ([`connect_with_retry`]). If the pool closed meanwhile, the new
/// connection is counted opened and closed, and closed; its place goes
/// back when `place` drops. Returns the slot, now BUSY and the caller's.
pub(crate) async fn open<M: Manager>(
    owner: &Arc<Owner<M>>,
    place: PlaceGuard<'_, M>,
    deadline: Option<Instant>,
) -> Result<u32, PoolError<M::Error>> {
    let shared: &Shared<M> = owner;
    let _connecting = Connecting::new(shared);
    let conn = connect_with_retry(shared, deadline).await?;
    if shared.closed.load(Ordering::Acquire) {
        close_quietly(Some(conn));
        bump(&shared.counters.opened);
        bump(&shared.counters.closed);
        return Err(PoolError::Closed); // `place` goes back on drop
    }
    Ok(shared.adopt(place.into_index(), conn))
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
            Some(Ok(conn)) => return Ok(conn),
            Some(Err(e)) => {
                bump(&shared.counters.connect_errors);
                last = Some(e);
            }
            None => bump(&shared.counters.connect_timeouts),
        }
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

/// An owned idle connection awaiting its pre-ping. Dropped without a
/// successful check, it closes the connection and passes its place on.
pub(crate) struct CheckGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    index: Option<u32>,
}

impl<'a, M: Manager> CheckGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, index: u32) -> Self {
        Self {
            shared,
            index: Some(index),
        }
    }

    /// Runs `Manager::check`, bounded by `connect_timeout` and `deadline`.
    /// `Some(index)` if it passed (the slot is the caller's), `None` if the
    /// connection failed and was closed.
    pub(crate) async fn check(mut self, deadline: Option<Instant>) -> Option<u32> {
        let shared = self.shared;
        let index = self.index?;
        // SAFETY: the guard owns the BUSY slot; this is the only reference
        // to its connection while the check runs.
        let conn = unsafe { shared.slots.conn_mut(index) };
        let at = limit(shared.config.connect_timeout, deadline);
        if let Some(Ok(())) = bounded(at, shared.manager.check(conn)).await {
            shared
                .slots
                .set_verified(index, shared.maintenance.next_seq());
            self.index = None;
            return Some(index);
        }
        None // `Drop` closes it
    }
}

impl<M: Manager> CheckGuard<'_, M> {
    /// Gives the connection back unchecked (the caller ran out of time
    /// before its check could start): behind the other idle ones, keeping
    /// its idle time, or to a waiter, who checks it.
    pub(crate) fn requeue(mut self) {
        if let Some(index) = self.index.take() {
            settle_held(self.shared, self.shared.requeue(index));
        }
    }
}

impl<M: Manager> Drop for CheckGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            let shared = self.shared;
            bump(&shared.counters.check_failures);
            // One failed check marks every connection opened before now
            // for a check: after a server restart that costs one failed
            // check, not one timeout per connection.
            shared.maintenance.note_failure();
            // Contain a panic from the connection's `Drop` (retire does).
            let retired = catch_unwind(AssertUnwindSafe(|| shared.retire(index)));
            if let Ok(r) = retired {
                settle_held(shared, r);
            }
        }
    }
}
