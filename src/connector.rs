//! Talking to the manager: opening connections with retries and backoff
//! (the one connect path), one at a time while connects fail, and the
//! probes that end an outage.
//!
//! Invariants kept:
//! - A connect attempt is always bounded: by `connect_timeout` and by the
//!   caller's deadline, whichever comes first. Both are Tokio instants
//!   (a connect is I/O); a `get`'s deadline comes from the pool clock
//!   through `Clock::instant_at`, so a mocked clock's time left is what
//!   bounds it.
//! - A failed connect is retried with exponential backoff and jitter only
//!   while the caller's deadline allows another attempt and the backend
//!   is not down; then the caller gets `Connect(last error)`, or
//!   `Timeout(Connecting)` if no attempt finished. In fast-fail mode, or
//!   for an error the manager calls permanent, the first failure is
//!   returned at once.
//! - Every attempt's outcome reaches the breaker (`breaker.rs`): while the
//!   last connect failed, a connect first takes the flight token
//!   ([`admit`]), so one connect at a time meets the failure and the rest
//!   wait for it to land (`Core::landed`, registered before they look);
//!   while the backend is down, a connect fails at once with
//!   `Unavailable`, and one [`probe`] at a time tries again.
//! - Evidence that the server went away (a failed connect after a
//!   successful one here; a failed check in `CheckGuard`, `guards.rs`)
//!   starts a restart epoch (`lifecycle.rs`).
//! - One connect path: `get`, `warm_up` and the `min_idle` refill open
//!   through [`open`], and the probe makes its one attempt the same way,
//!   so all are counted as connecting while they run, all count a
//!   connection the closed pool closes at once, and all adopt it the same
//!   way (`adopt`: fill the place, stamp the lifetime with its jitter,
//!   take the connection's counted reference on the core, have maintenance
//!   file its deadlines).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Admit;
use crate::budget::Budget;
use crate::config::ms;
use crate::core::{Core, Owner};
use crate::guards::{Connecting, PlaceGuard};
use crate::lifetime::Settle;
use crate::metrics::bump;
use crate::release::close_quietly;
use crate::slots::Busy;
use crate::slots::Place;
use crate::sync::Ordering;
use crate::{Manager, PoolError, TimeoutKind};

/// The earlier of `now + d` (if representable) and `deadline`.
fn limit(d: Duration, deadline: Option<Instant>) -> Option<Instant> {
    match (Instant::now().checked_add(d), deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The flight token of a connect admitted while connects fail: dropped,
/// it gives the token back and wakes the connects waiting for their turn.
pub(crate) struct Flight<'a, M: Manager> {
    core: &'a Core<M>,
    /// Whether this connect holds the token (no token while the backend
    /// is up: nothing to give back).
    token: bool,
}

impl<M: Manager> Drop for Flight<'_, M> {
    fn drop(&mut self) {
        if self.token {
            self.core.breaker.land();
            self.core.landed.notify_waiters();
        }
    }
}

/// What keeps a connect from starting now.
pub(crate) enum Refused {
    /// Another connect is in flight against a failure.
    Busy,
    /// The backend is down: fail fast.
    Down,
}

/// Admits one connect now, or says why not (`breaker.rs`, "States").
pub(crate) fn admit<M: Manager>(core: &Core<M>) -> Result<Flight<'_, M>, Refused> {
    match core.breaker.admit() {
        Admit::Go(token) => Ok(Flight { core, token }),
        Admit::Wait => Err(Refused::Busy),
        Admit::Down => Err(Refused::Down),
    }
}

/// Admits one connect, waiting (until `deadline`) while another is in
/// flight against a failure. `Err(Refused::Down)`: the backend is down;
/// `Err(Refused::Busy)`: the deadline came first.
async fn admit_waiting<'a, M: Manager>(
    core: &'a Core<M>,
    deadline: Option<Instant>,
) -> Result<Flight<'a, M>, Refused> {
    loop {
        let landed = core.landed.notified();
        let mut landed = std::pin::pin!(landed);
        // Registered before the look: a flight that lands after it wakes
        // this caller (no lost wake-up).
        landed.as_mut().enable();
        match admit(core) {
            Err(Refused::Busy) => {
                if crate::sync::bounded(deadline, landed).await.is_none() {
                    return Err(Refused::Busy);
                }
            }
            admitted => return admitted,
        }
    }
}

/// The one connect path: opens a connection into the reserved `place`,
/// counted as connecting (not in use) while it waits for its turn and
/// runs, retrying failures with backoff until `deadline`
/// ([`connect_with_retry`]). `flight`: already admitted (the refill, the
/// probe), or `None` to be admitted here, waiting for its turn while
/// connects fail (`get`, `warm_up`). If the pool closed meanwhile, the new
/// connection is counted opened and closed, and closed; its place goes
/// back when `place` drops. Returns the claimed slot, the caller's.
pub(crate) async fn open<'a, M: Manager>(
    owner: &'a Arc<Owner<M>>,
    place: PlaceGuard<'a, M>,
    flight: Option<Flight<'a, M>>,
    deadline: Option<Instant>,
) -> Result<Busy, PoolError<M::Error>> {
    let shared: &Core<M> = owner;
    let _connecting = Connecting::new(shared);
    let conn = connect_with_retry(shared, flight, deadline).await?;
    if shared.closed.load(Ordering::Acquire) {
        close_quietly(Some(conn));
        bump(&shared.counters.opened);
        bump(&shared.counters.closed);
        return Err(PoolError::Closed); // `place` goes back on drop
    }
    Ok(adopt(shared, place.into_place(), conn))
}

/// One probe while the backend is down (`breaker.rs`), claimed by the
/// caller (`Probe::Run`: it holds the flight token): one connect attempt,
/// bounded by `connect_timeout`, into a free place. Success ends the
/// outage, and the new connection goes to the oldest waiter or the idle
/// set; failure (or no free place) schedules the next probe.
pub(crate) async fn probe<M: Manager>(owner: Arc<Owner<M>>) {
    /// Ends the claim on every path, a runtime that drops the task
    /// unpolled included: the next probe is scheduled.
    struct Claim<'a, M: Manager> {
        core: &'a Core<M>,
        ok: bool,
    }
    impl<M: Manager> Drop for Claim<'_, M> {
        fn drop(&mut self) {
            let core = self.core;
            let cfg = &core.config;
            core.breaker.probe_ended(
                self.ok,
                core.clock.now(),
                ms(cfg.max_connect_backoff),
                |b| ms(core.lifecycle.jitter(std::time::Duration::from_millis(b))),
                ms(cfg.connect_backoff),
            );
            core.landed.notify_waiters();
        }
    }
    let core: &Core<M> = &owner;
    let mut claim = Claim { core, ok: false };
    bump(&core.counters.probes);
    if core.closed.load(Ordering::Acquire) {
        return;
    }
    let Some(place) = core.reserve() else {
        return; // every place taken: the next probe tries again
    };
    let place = PlaceGuard::new(&owner, place);
    let _connecting = Connecting::new(core);
    let deadline = Instant::now().checked_add(core.config.connect_timeout);
    let Ok(conn) = attempt(core, deadline).await else {
        return;
    };
    claim.ok = true;
    if core.closed.load(Ordering::Acquire) {
        close_quietly(Some(conn));
        bump(&core.counters.opened);
        bump(&core.counters.closed);
        return;
    }
    let busy = adopt(core, place.into_place(), conn);
    core.put_back_fresh(busy, &mut Settle::new(&owner));
}

/// Puts a freshly opened connection into a reserved place: stamps its
/// lifetime (shortened by up to 5% of jitter, so that connections opened
/// together do not expire together) and its freshness, takes its
/// reference on the core, and has maintenance file its deadlines. Returns
/// the claimed slot, the caller's.
pub(crate) fn adopt<M: Manager>(core: &Core<M>, place: Place, conn: M::Connection) -> Busy {
    let now = core.clock.now();
    let serial = core.counters.opened.fetch_add(1, Ordering::Relaxed) + 1;
    let expires_at = core.lifecycle.expires_at(now);
    let seq = core.lifecycle.next_seq();
    let busy = core.slots.fill(place, conn, serial, now, expires_at, seq);
    // The connection's own reference on the core (`lifetime.rs`).
    crate::lifetime::add_reference(&core.weak);
    let idle_at = core
        .lifecycle
        .ticks
        .idle_timeout
        .map_or(u64::MAX, |t| now.saturating_add(t));
    // Keepalive alone (no idle timeout, no lifetime) has deadlines to file
    // too: without them its checks would never come due.
    let keepalive_at = core
        .config
        .keepalive
        .map_or(u64::MAX, |k| now.saturating_add(crate::config::ms(k)));
    let earliest = idle_at.min(expires_at).min(keepalive_at);
    if earliest != u64::MAX {
        core.maintenance.schedule(busy.index(), earliest);
    }
    busy
}

/// `Manager::is_permanent`, a panic in it counting as "no".
fn is_permanent<M: Manager>(shared: &Core<M>, e: &M::Error) -> bool {
    catch_unwind(AssertUnwindSafe(|| shared.manager.is_permanent(e))).unwrap_or(false)
}

/// One connect attempt, bounded by `connect_timeout` and `deadline`, its
/// outcome counted and reported to the breaker. `Err(None)`: it timed
/// out.
pub(crate) async fn attempt<M: Manager>(
    shared: &Core<M>,
    deadline: Option<Instant>,
) -> Result<M::Connection, Option<M::Error>> {
    let cfg = &shared.config;
    let start = Instant::now();
    let outcome = crate::sync::bounded(
        limit(cfg.connect_timeout, deadline),
        shared.manager.connect(),
    )
    .await;
    match outcome {
        Some(Ok(conn)) => {
            shared.counters.connect.record_duration(0, start.elapsed());
            shared.breaker.succeeded(&cfg.name, shared.clock.now());
            Ok(conn)
        }
        Some(Err(e)) => {
            bump(&shared.counters.connect_errors);
            let permanent = is_permanent(shared, &e);
            if permanent {
                bump(&shared.counters.permanent_errors);
                tracing::warn!(pool = %cfg.name, error = %e, "connect failed, not retried: the manager calls the error permanent");
            } else {
                tracing::warn!(pool = %cfg.name, error = %e, "connect failed");
            }
            failed(shared, &e.to_string(), permanent);
            Err(Some(e))
        }
        None => {
            bump(&shared.counters.connect_timeouts);
            tracing::warn!(
                pool = %cfg.name,
                timeout_ms = cfg.connect_timeout.as_millis() as u64,
                "connect timed out"
            );
            failed(shared, "connect timed out", false);
            Err(None)
        }
    }
}

/// A failed attempt's evidence: for the breaker, and (after an earlier
/// success) for the restart epoch.
fn failed<M: Manager>(shared: &Core<M>, error: &str, permanent: bool) {
    let cfg = &shared.config;
    shared.breaker.failed(
        &cfg.name,
        error,
        permanent,
        shared.clock.now(),
        ms(shared.lifecycle.jitter(cfg.connect_backoff)),
    );
    // A connect that fails after earlier ones succeeded is evidence that
    // the server went away: idle connections are checked before their
    // next use.
    if shared.counters.opened.load(Ordering::Relaxed) > 0 {
        shared.lifecycle.note_failure();
    }
}

/// A connect's budget token, lent back while it sleeps between attempts
/// (a keyed pool, `budget.rs`). Dropped before it is taken again (the
/// deadline passed, or the `get` was cancelled mid-sleep), it takes one
/// on credit, so that the place's release, which gives one back, stays
/// balanced.
struct Lent<'a> {
    budget: &'a Budget,
    again: bool,
}

impl<'a> Lent<'a> {
    fn new(budget: &'a Budget) -> Self {
        budget.put_back();
        Self {
            budget,
            again: false,
        }
    }

    /// Waits for a token in turn until `deadline`; whether it got one.
    async fn take_again(&mut self, deadline: Option<Instant>) -> bool {
        self.again = self.budget.take_within(deadline).await;
        self.again
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if !self.again {
            self.budget.credit();
        }
    }
}

/// Opens a connection: attempts bounded by `connect_timeout` and
/// `deadline`, failures retried with backoff (module docs) until the
/// deadline, unless the error is permanent, the pool is in fast-fail mode
/// or closed, or the backend is now down. Every attempt is admitted: an
/// attempt made while connects fail holds the flight token (`flight`, if
/// given, is the first attempt's admission), so retries of a connect that
/// began while the backend was up wait their turn too.
pub(crate) async fn connect_with_retry<'a, M: Manager>(
    shared: &'a Core<M>,
    mut flight: Option<Flight<'a, M>>,
    deadline: Option<Instant>,
) -> Result<M::Connection, PoolError<M::Error>> {
    let cfg = &shared.config;
    let mut backoff = cfg.connect_backoff;
    let mut last = None;
    loop {
        if !flight.as_ref().is_some_and(|f| f.token) {
            // A token-less admission is good for one attempt.
            flight.take();
            match admit_waiting(shared, deadline).await {
                Ok(f) => flight = Some(f),
                // Down since this connect's last attempt: its own error
                // says more than `Unavailable`.
                Err(Refused::Down) => {
                    return Err(match last {
                        Some(e) => PoolError::Connect(e),
                        None => shared.unavailable(),
                    });
                }
                Err(Refused::Busy) => break,
            }
        }
        match attempt(shared, deadline).await {
            Ok(conn) => return Ok(conn),
            Err(Some(e)) => {
                if is_permanent(shared, &e) {
                    return Err(PoolError::Connect(e));
                }
                last = Some(e);
            }
            Err(None) => {}
        }
        if cfg.fail_fast || shared.closed.load(Ordering::Acquire) || shared.breaker.is_down() {
            break;
        }
        let pause = shared.lifecycle.jitter(backoff);
        backoff = backoff.saturating_mul(2).min(cfg.max_connect_backoff);
        let resume = Instant::now().checked_add(pause);
        if deadline.is_some_and(|d| resume.is_none_or(|r| r >= d)) {
            break; // no time left for another attempt
        }
        // In a keyed pool, the budget token goes back while this connect
        // sleeps (no connection exists meanwhile) and is taken again, in
        // turn, before the next attempt: a key whose connects fail does
        // not hold other keys' share of `max_total` (`budget.rs`).
        let mut lent = shared.budget.as_deref().map(Lent::new);
        crate::sync::sleep(pause).await;
        if let Some(lent) = lent.as_mut() {
            if !lent.take_again(deadline).await {
                break; // no token before the deadline
            }
        }
    }
    Err(last.map_or(
        PoolError::Timeout(TimeoutKind::Connecting),
        PoolError::Connect,
    ))
}
