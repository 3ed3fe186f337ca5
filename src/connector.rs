//! Talking to the manager: opening connections with retries and backoff
//! (the one connect path).
//!
//! Invariants kept:
//! - A connect or check is always bounded: by `connect_timeout` and by the
//!   caller's deadline, whichever comes first.
//! - A failed connect is retried with exponential backoff and jitter only
//!   while the caller's deadline allows another attempt; then the caller
//!   gets `Connect(last error)`, or `Timeout` if no attempt finished. In
//!   fast-fail mode the first failure is returned at once.
//! - Evidence that the server went away (a failed check; a failed connect
//!   after a successful one) starts a restart epoch (`lifecycle.rs`).
//!   Checks themselves run in `CheckGuard` (`guards.rs`).
//! - One connect path: `get` and the `min_idle` refill both open through
//!   [`open`], so both are counted as connecting while they run, both count
//!   a connection the closed pool closes at once, and both adopt the same
//!   way (`Core::adopt`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::{Core, Owner, close_quietly};
use crate::guards::{Connecting, PlaceGuard};
use crate::metrics::bump;
use crate::slots::Busy;
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

/// The one connect path, for `get` and the `min_idle` refill alike: opens
/// a connection into the reserved `place`, counted as connecting (not in
/// use) while it runs, retrying failures with backoff until `deadline`
/// ([`connect_with_retry`]). If the pool closed meanwhile, the new
/// connection is counted opened and closed, and closed; its place goes
/// back when `place` drops. Returns the claimed slot, the caller's.
pub(crate) async fn open<M: Manager>(
    owner: &Arc<Owner<M>>,
    place: PlaceGuard<'_, M>,
    deadline: Option<Instant>,
) -> Result<Busy, PoolError<M::Error>> {
    let shared: &Core<M> = owner;
    let _connecting = Connecting::new(shared);
    let conn = connect_with_retry(shared, deadline).await?;
    if shared.closed.load(Ordering::Acquire) {
        close_quietly(Some(conn));
        bump(&shared.counters.opened);
        bump(&shared.counters.closed);
        return Err(PoolError::Closed); // `place` goes back on drop
    }
    Ok(shared.adopt(place.into_place(), conn))
}

/// `Manager::is_permanent`, a panic in it counting as "no".
fn is_permanent<M: Manager>(shared: &Core<M>, e: &M::Error) -> bool {
    catch_unwind(AssertUnwindSafe(|| shared.manager.is_permanent(e))).unwrap_or(false)
}

/// Opens a connection: attempts bounded by `connect_timeout` and
/// `deadline`, failures retried with backoff (module docs).
pub(crate) async fn connect_with_retry<M: Manager>(
    shared: &Core<M>,
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
        let start = Instant::now();
        match attempt.await {
            Some(Ok(conn)) => {
                shared.counters.connect.record_duration(0, start.elapsed());
                return Ok(conn);
            }
            Some(Err(e)) => {
                bump(&shared.counters.connect_errors);
                if is_permanent(shared, &e) {
                    bump(&shared.counters.permanent_errors);
                    tracing::warn!(pool = %cfg.name, error = %e, "connect failed, not retried: the manager calls the error permanent");
                    return Err(PoolError::Connect(e));
                }
                tracing::warn!(pool = %cfg.name, error = %e, "connect failed");
                last = Some(e);
            }
            None => {
                bump(&shared.counters.connect_timeouts);
                tracing::warn!(
                    pool = %cfg.name,
                    timeout_ms = cfg.connect_timeout.as_millis() as u64,
                    "connect timed out"
                );
            }
        }
        // A connect that fails after earlier ones succeeded is evidence
        // that the server went away: idle connections are checked before
        // their next use.
        if shared.counters.opened.load(Ordering::Relaxed) > 0 {
            shared.lifecycle.note_failure();
        }
        if cfg.fail_fast || shared.closed.load(Ordering::Acquire) {
            break;
        }
        let pause = shared.lifecycle.jitter(backoff);
        backoff = backoff.saturating_mul(2).min(cfg.max_connect_backoff);
        let resume = Instant::now().checked_add(pause);
        if deadline.is_some_and(|d| resume.is_none_or(|r| r >= d)) {
            break; // no time left for another attempt
        }
        crate::sync::sleep(pause).await;
    }
    Err(last.map_or(PoolError::Timeout, PoolError::Connect))
}
