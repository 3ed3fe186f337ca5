//! [`Config`], the settings of a pool as validated by the builder, and the
//! same settings turned into clock ticks once ([`Ticks`]) for the hot path.
//!
//! Invariant kept: a [`Config`] inside a built pool satisfies every rule
//! that `Builder::build` checks (`builder.rs`); the rest of the crate relies
//! on them (`max_size >= 1`, `shards >= 1`, non-zero timeouts) and never
//! re-checks. This module imports nothing of the crate.

use std::time::Duration;

/// The largest `max_size` accepted: 65,536 (more connections than one
/// client address has ports; each place costs a 128-byte slot).
///
/// ```
/// # use latchless::{Manager, Pool, MAX_POOL_SIZE};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// assert!(Pool::builder(M).max_size(MAX_POOL_SIZE + 1).build().is_err());
/// ```
pub const MAX_POOL_SIZE: usize = 1 << 16;
/// The largest `shards` accepted (`Builder::shards` documents it).
pub(crate) const MAX_SHARDS: usize = 1024;

/// The settings of a pool, as validated by [`Builder::build`](crate::Builder::build).
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).max_size(4).build().unwrap();
/// assert_eq!(pool.config().max_size, 4);
/// assert_eq!(pool.config().min_idle, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Hard cap on open connections, connecting ones included. Default 10.
    /// The size at build: after [`Pool::set_max_size`](crate::Pool::set_max_size),
    /// [`Pool::max_size`](crate::Pool::max_size) is the current one.
    pub max_size: usize,
    /// Ceiling for [`Pool::set_max_size`](crate::Pool::set_max_size):
    /// the pool's slot arena has this many places. Default `None`: the
    /// same as `max_size` (no growing past the built size).
    pub max_size_limit: Option<usize>,
    /// Connections kept open even when unused. Default 0.
    pub min_idle: usize,
    /// At most this many idle connections: a return that would leave more
    /// closes the connection instead, unless a waiter takes it
    /// ([`Builder::max_idle`](crate::Builder::max_idle)). Default `None`:
    /// keep every returned connection.
    pub max_idle: Option<usize>,
    /// Default wait bound for [`Pool::get`](crate::Pool::get). Default 30 s.
    pub acquire_timeout: Duration,
    /// Bound on one [`Manager::connect`](crate::Manager::connect). Default 10 s.
    pub connect_timeout: Duration,
    /// Bound on one [`Manager::check`](crate::Manager::check) (pre-ping).
    /// Default 5 s.
    pub check_timeout: Duration,
    /// Close connections idle this long (above `min_idle`). Default 10 min.
    pub idle_timeout: Option<Duration>,
    /// Never hand out a connection older than this. Default 30 min.
    pub max_lifetime: Option<Duration>,
    /// Run [`Manager::check`](crate::Manager::check) on connections idle at least this long.
    /// Default 500 ms.
    pub check_after_idle: Option<Duration>,
    /// Check connections idle this long in the background
    /// ([`Builder::keepalive`](crate::Builder::keepalive)). Default off.
    pub keepalive: Option<Duration>,
    /// How long before `max_lifetime` a connection of a pool in use is
    /// replaced in the background
    /// ([`Builder::replace_before_expiry`](crate::Builder::replace_before_expiry)).
    /// Default 30 s, at most a quarter of `max_lifetime`.
    pub replace_before_expiry: Option<Duration>,
    /// Report a connection held longer than this. Default off.
    pub leak_threshold: Option<Duration>,
    /// At most this many waiting `get`s. Default unbounded.
    pub max_waiters: Option<usize>,
    /// Number of idle-set shards. Default: available cores.
    pub shards: usize,
    /// First pause before retrying a failed connect (then doubled, with
    /// jitter). Default 25 ms.
    pub connect_backoff: Duration,
    /// Longest pause between connect retries. Default 1 s.
    pub max_connect_backoff: Duration,
    /// Return the first connect failure at once instead of retrying until
    /// the deadline. Default `false`.
    pub fail_fast: bool,
    /// Consecutive failed connects after which the backend counts as down
    /// and `get`s that would connect fail fast
    /// ([`Builder::breaker`](crate::Builder::breaker)). Default `Some(5)`.
    pub breaker: Option<u32>,
    /// Start the background maintenance task (and `min_idle` refills) when
    /// a Tokio runtime is present. Default `true`.
    pub background: bool,
    /// Let a release that keeps its connection for its own thread skip the
    /// atomic read-modify-write, and have the first waiter after a quiet
    /// second pay a Linux `membarrier(2)` call instead (DESIGN.md, "One
    /// read-modify-write"). Default `true`; ignored (as `false`) where the
    /// call is unavailable.
    pub membarrier: bool,
    /// The pool's name, the `pool` field of its `tracing` events.
    /// Default `"latchless"`.
    pub name: String,
    /// The acquire-wait p99 above which the
    /// [`AcquireWait`](crate::AlertKind::AcquireWait) alert fires (over at
    /// least 100 acquisitions in the 30 s window). Default 100 ms;
    /// `Duration::MAX` turns it off.
    pub wait_alert: Duration,
    /// The churn alert ([`Churn`](crate::AlertKind::Churn)) fires when the
    /// pool opens connections faster than `max_size` per this time, over
    /// the 30 s window. Default 10 s; `Duration::MAX` turns it off.
    pub churn_alert: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_size: 10,
            max_size_limit: None,
            min_idle: 0,
            max_idle: None,
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            check_after_idle: Some(Duration::from_millis(500)),
            keepalive: None,
            replace_before_expiry: Some(Duration::from_secs(30)),
            leak_threshold: None,
            max_waiters: None,
            shards: crate::sync::cpus(),
            connect_backoff: Duration::from_millis(25),
            max_connect_backoff: Duration::from_secs(1),
            fail_fast: false,
            breaker: Some(5),
            background: true,
            membarrier: true,
            name: String::from("latchless"),
            wait_alert: Duration::from_millis(100),
            churn_alert: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The ceiling for `set_max_size`: `max_size_limit`, or `max_size`.
    pub(crate) fn limit(&self) -> usize {
        self.max_size_limit.unwrap_or(self.max_size)
    }
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
    /// `idle_timeout` (`None` = off).
    pub(crate) idle_timeout: Option<u64>,
    /// How early a lifetime ends so that the cached clock, at most one
    /// maintenance period behind, never lets an over-age connection out.
    /// Also the period of background maintenance passes.
    pub(crate) margin: u64,
    /// Whether any setting reads the clock on acquire or release (with
    /// `idle_timeout`, `max_lifetime` and `check_after_idle` all off, the
    /// hot path never looks at time).
    pub(crate) uses_clock: bool,
}

impl Ticks {
    /// `c`'s lifecycle settings in ticks.
    pub(crate) fn new(c: &Config) -> Self {
        Self {
            lifetime: c.max_lifetime.map_or(0, ms),
            check_after_idle: c
                .check_after_idle
                .map_or(u64::MAX, |d| if d.is_zero() { 0 } else { ms(d) }),
            leak: c.leak_threshold.map_or(0, ms),
            idle_timeout: c.idle_timeout.map(ms),
            margin: ms(maintenance_period(c)),
            uses_clock: c.idle_timeout.is_some()
                || c.max_lifetime.is_some()
                || c.check_after_idle.is_some()
                || c.keepalive.is_some(),
        }
    }
}

/// A duration in whole clock ticks (ms), at least 1.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How often the background task runs a pass: often enough that the cached
/// clock it refreshes stays well inside every lifecycle setting, and at
/// most once a second. Also the margin by which lifetimes end early.
pub(crate) fn maintenance_period(c: &Config) -> Duration {
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
    if let Some(d) = c.keepalive {
        p = p.min(d / 2);
    }
    p.max(Duration::from_millis(5))
}
