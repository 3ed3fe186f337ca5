//! What the pool can tell about itself: the [`State`] snapshot and the
//! [`Metrics`] counters.
//!
//! Invariant kept: counters are bumped only on cold paths (connect, close,
//! wait, error), never on the uncontended acquire/release path, so
//! observability costs the hot path nothing. Every counter only grows.

// Plain std atomics even under loom: counters order nothing, and keeping
// them out of the model keeps its state space to the protocol.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A cheap snapshot of the pool. Exact when the pool is quiescent; under
/// concurrency each field is read separately and may be off by the
/// operations in flight.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).build().unwrap();
/// let s = pool.state();
/// assert_eq!((s.size, s.idle, s.in_use, s.waiting), (0, 0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// Places taken: open connections plus connects in flight.
    pub size: usize,
    /// Connections in the idle set.
    pub idle: usize,
    /// Connections handed out (or being handed over or checked).
    pub in_use: usize,
    /// Callers parked in `get`.
    pub waiting: usize,
}

/// Counters since the pool was built, and the current [`State`].
///
/// `opened == closed + detached + state.size` (connects in flight aside)
/// when the pool is quiescent.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(M).build().unwrap();
/// drop(pool.get().await.unwrap());
/// let m = pool.metrics();
/// assert_eq!(m.opened, 1);
/// assert_eq!(m.state.idle, 1);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The current snapshot.
    pub state: State,
    /// Connections opened by `Manager::connect`.
    pub opened: u64,
    /// Connections closed by the pool (broken, expired, failed a check,
    /// closed pool).
    pub closed: u64,
    /// Connections taken out with [`Pooled::detach`](crate::Pooled::detach).
    pub detached: u64,
    /// `connect` calls that returned an error.
    pub connect_errors: u64,
    /// `connect` calls that exceeded `connect_timeout`.
    pub connect_timeouts: u64,
    /// `get`s that parked as waiters.
    pub waits: u64,
    /// `get`s that returned `Timeout`.
    pub timeouts: u64,
    /// Of those, parked `get`s timed out by the pool's background task
    /// (no Tokio timer armed). The others ran out of time connecting or
    /// checking, or waited with a timer of their own (`background(false)`,
    /// or before the task's first run).
    pub timeouts_swept: u64,
    /// `get`s refused with `Exhausted`.
    pub exhausted: u64,
    /// Connections closed for `idle_timeout` or `max_lifetime`.
    pub expired: u64,
    /// `Manager::check` calls that failed, hung past `check_timeout` or
    /// panicked (each closed its connection).
    pub check_failures: u64,
    /// Checks whose caller went away (cancelled, or its deadline passed)
    /// before they finished: they finish without it, and a passing
    /// connection goes back to the pool. Not failures.
    pub checks_detached: u64,
    /// Connections closed because they were broken: returned broken
    /// ([`Manager::is_broken`](crate::Manager::is_broken),
    /// [`Pooled::mark_broken`](crate::Pooled::mark_broken), a panic while
    /// held) or found broken by `is_broken` when handed out from the idle
    /// set. One broken connection closes that connection only.
    pub broken: u64,
    /// Connections reported as held past `leak_threshold`.
    pub leaks: u64,
    /// Maintenance passes run.
    pub maintenance_passes: u64,
}

/// The pool's counters (all relaxed: they order nothing).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connecting: AtomicUsize,
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) detached: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) connect_timeouts: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) timeouts_swept: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) check_failures: AtomicU64,
    pub(crate) checks_detached: AtomicU64,
    pub(crate) broken: AtomicU64,
    pub(crate) leaks: AtomicU64,
}

/// Bumps a counter by one.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, state: State, passes: u64) -> Metrics {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            state,
            opened: r(&self.opened),
            closed: r(&self.closed),
            detached: r(&self.detached),
            connect_errors: r(&self.connect_errors),
            connect_timeouts: r(&self.connect_timeouts),
            waits: r(&self.waits),
            timeouts: r(&self.timeouts),
            timeouts_swept: r(&self.timeouts_swept),
            exhausted: r(&self.exhausted),
            expired: r(&self.expired),
            check_failures: r(&self.check_failures),
            checks_detached: r(&self.checks_detached),
            broken: r(&self.broken),
            leaks: r(&self.leaks),
            maintenance_passes: passes,
        }
    }
}
