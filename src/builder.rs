//! [`Builder`], [`Config`], [`BuildError`] and [`ResizeError`]: every knob
//! of the pool (and, as `KeyedBuilder`, of a keyed pool's keys), and the
//! one place where its values are validated.
//!
//! Invariant kept: a [`Config`] inside a built pool satisfies every rule
//! checked by [`Builder::build`]; the rest of the crate relies on them
//! (`max_size >= 1`, `shards >= 1`, non-zero timeouts) and never re-checks.

use std::{fmt, time::Duration};

use crate::config::{Config, MAX_POOL_SIZE, MAX_SHARDS};
use crate::{Manager, Pool};

/// A setting [`Builder::build`] refused: [`Display`](fmt::Display) names the
/// field and the rule it broke.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let err = Pool::builder(M).max_size(4).min_idle(5).build().unwrap_err();
/// assert_eq!(err.field(), "min_idle");
/// assert_eq!(err.to_string(), "min_idle (5) must not exceed max_size (4)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    field: &'static str,
    message: String,
}

impl BuildError {
    pub(crate) fn new(field: &'static str, message: String) -> Self {
        Self { field, message }
    }

    /// The name of the setter whose value was refused.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// assert_eq!(Pool::builder(M).shards(0).build().unwrap_err().field(), "shards");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// Configures and builds a [`Pool`]. Every setter takes `self` and returns
/// `Self`; nothing is checked until [`Builder::build`].
///
/// ```
/// # use latchless::{Manager, Pool};
/// # use std::time::Duration;
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M)
///     .max_size(16)
///     .acquire_timeout(Duration::from_millis(250))
///     .max_waiters(Some(1000))
///     .build()?;
/// # Ok::<(), latchless::BuildError>(())
/// ```
///
/// The same builder configures a [`KeyedPool`](crate::KeyedPool) (as
/// [`KeyedBuilder`](crate::KeyedBuilder)): every setting below then applies
/// to each key's pool, and `max_size` is the cap per key.
#[must_use = "a builder does nothing until `build()` is called"]
pub struct Builder<M> {
    pub(crate) manager: M,
    pub(crate) config: Config,
    pub(crate) clock: Option<crate::Clock>,
}

impl<M> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
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
}

impl<M> Builder<M> {
    pub(crate) fn new(manager: M) -> Self {
        Self {
            manager,
            config: Config::default(),
            clock: None,
        }
    }

    setter!(
        /// Hard cap on open connections, connecting ones included.
        /// Default 10; must be in `1..=MAX_POOL_SIZE`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// assert!(Pool::builder(M).max_size(0).build().is_err());
        /// ```
        max_size: usize
    );
    /// Ceiling for [`Pool::set_max_size`] at run time: the pool reserves
    /// this many places (128 bytes each) at build. Default: `max_size`
    /// (the pool cannot grow past its built size); must be in
    /// `max_size..=MAX_POOL_SIZE`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).max_size(4).max_size_limit(16).build().unwrap();
    /// assert!(pool.set_max_size(16).is_ok());
    /// assert_eq!(pool.max_size(), 16);
    /// let err = Pool::builder(M).max_size(4).max_size_limit(2).build().unwrap_err();
    /// assert_eq!(err.field(), "max_size_limit");
    /// ```
    pub fn max_size_limit(mut self, limit: usize) -> Self {
        self.config.max_size_limit = Some(limit);
        self
    }

    setter!(
        /// Connections kept idle even when unused (refilled in the
        /// background). Default 0; must not exceed `max_size`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// assert!(Pool::builder(M).max_size(2).min_idle(2).build().is_ok());
        /// ```
        min_idle: usize
    );
    setter!(
        /// At most this many idle connections: a connection returned while
        /// `max_idle` are idle is closed instead (counted in
        /// [`Metrics::closed_overflow`](crate::Metrics::closed_overflow),
        /// reason `overflow`), unless a `get` is waiting, which takes it.
        /// A burst may open up to `max_size`; once it ends the pool keeps
        /// `max_idle` and closes the rest at once, instead of holding them
        /// until `idle_timeout`. Default `None`: keep every returned
        /// connection. Must satisfy `min_idle <= max_idle <= max_size`.
        ///
        /// [`Pool::set_max_size`] below `max_idle` is allowed: the bound
        /// then does not bind (never more are idle than are open) until the
        /// pool grows again.
        ///
        /// Costs a pool without it nothing; with it, a return reads and
        /// writes one shared count, and so does a hand-out of an idle
        /// connection.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).max_size(8).max_idle(Some(2)).build().unwrap();
        /// assert_eq!(pool.config().max_idle, Some(2));
        /// let err = Pool::builder(M).max_size(8).max_idle(Some(9)).build().unwrap_err();
        /// assert_eq!(err.to_string(), "max_idle (9) must be in min_idle (0)..=max_size (8)");
        /// ```
        max_idle: Option<usize>
    );
    setter!(
        /// Default wait bound for [`Pool::get`] (connecting included).
        /// Default 30 s; must be non-zero (use [`Pool::try_get`] not to wait).
        ///
        /// A `get` that finds a connection idle reads no clock and arms no
        /// timer; one that has to wait hands its deadline to the pool's
        /// background task (a slot it claims and clears itself), or, without
        /// that task, arms a Tokio timer of its own. Connects and checks are
        /// bounded by a Tokio timer. `Duration::MAX` means no deadline and
        /// arms nothing: such a `get` waits until it is served or the pool
        /// closes.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).acquire_timeout(Duration::from_millis(50)).build().unwrap();
        /// ```
        acquire_timeout: Duration
    );
    setter!(
        /// Bound on one [`Manager::connect`]; a connect that takes longer is
        /// dropped and counts as a timeout. Default 10 s; must be non-zero.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// assert!(Pool::builder(M).connect_timeout(Duration::ZERO).build().is_err());
        /// ```
        connect_timeout: Duration
    );
    setter!(
        /// Bound on one [`Manager::check`] (the pre-ping before handing out
        /// a connection that sat idle). A check that takes longer fails:
        /// the connection is closed and the caller gets another one. Never
        /// longer than the caller's own deadline: a `get` whose deadline
        /// comes first returns `Timeout`, and the check finishes without it
        /// (a passing connection goes back to the pool). Default 5 s; must
        /// be non-zero.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).check_timeout(Duration::from_millis(200)).build().unwrap();
        /// assert_eq!(pool.config().check_timeout, Duration::from_millis(200));
        /// assert!(Pool::builder(M).check_timeout(Duration::ZERO).build().is_err());
        /// ```
        check_timeout: Duration
    );
    setter!(
        /// Close connections idle this long, keeping `min_idle`. Default
        /// `Some(10 min)`; `None` never closes idle connections; `Some(ZERO)`
        /// is refused.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).idle_timeout(None).build().unwrap();
        /// ```
        idle_timeout: Option<Duration>
    );
    setter!(
        /// Never hand out a connection older than this (jitter only
        /// shortens it). Default `Some(30 min)`; `Some(ZERO)` is refused.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).max_lifetime(Some(Duration::from_secs(60))).build().unwrap();
        /// ```
        max_lifetime: Option<Duration>
    );
    setter!(
        /// Run [`Manager::check`] on connections idle at least this long.
        /// Default `Some(500 ms)`; `Some(ZERO)` checks every hand-out,
        /// `None` never checks.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).check_after_idle(Some(Duration::ZERO)).build().unwrap();
        /// ```
        check_after_idle: Option<Duration>
    );
    setter!(
        /// Check connections idle at least this long in the background
        /// ([`Manager::check`], bounded by `check_timeout`, counted in
        /// `check_time`), so that the request path meets neither a
        /// connection that a firewall, a NAT or the server's own idle
        /// timeout killed, nor the pre-ping's round trip. A connection
        /// being checked is never handed out; one that passes is stamped
        /// fresh (no pre-ping before `check_after_idle` has passed again)
        /// and keeps its idle time (keepalive does not hold off
        /// `idle_timeout`); one that fails is closed, and `min_idle`
        /// refills. Checks are jittered (up to a tenth earlier) and run a
        /// few at a time, on the Tokio runtime of whoever runs
        /// housekeeping. Default `None` (off); `Some(ZERO)` is refused.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).keepalive(Some(Duration::from_secs(30))).build().unwrap();
        /// assert_eq!(pool.config().keepalive, Some(Duration::from_secs(30)));
        /// assert!(Pool::builder(M).keepalive(Some(Duration::ZERO)).build().is_err());
        /// ```
        keepalive: Option<Duration>
    );
    setter!(
        /// Replace a connection this long before its `max_lifetime` ends,
        /// in the background, while the pool is in use, so that steady
        /// traffic across a lifetime boundary connects nothing on the
        /// request path. Make before break: with a free place, a successor
        /// is opened first and the old connection closes at its lifetime;
        /// at `max_size`, an idle old connection is set aside while its
        /// successor connects into its place, and closed once the successor
        /// is open (it goes back unchanged if the connect fails). The pool
        /// never goes above `max_size`. The lead used is at most a quarter
        /// of `max_lifetime`. Default `Some(30 s)`; `None` is off (a
        /// connection closes at its lifetime and the next `get` that needs
        /// one connects); `Some(ZERO)` is refused.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M)
        ///     .max_lifetime(Some(Duration::from_secs(600)))
        ///     .replace_before_expiry(Some(Duration::from_secs(20)))
        ///     .build()
        ///     .unwrap();
        /// assert!(Pool::builder(M).replace_before_expiry(Some(Duration::ZERO)).build().is_err());
        /// ```
        replace_before_expiry: Option<Duration>
    );
    setter!(
        /// Report a connection held longer than this, with the location of
        /// the `get` that took it and the time held so far, and report it
        /// again each time its holding has doubled since the last report
        /// (about 1, 2, 4, 8 … times the threshold) while it is still held.
        /// Default `None` (off); `Some(ZERO)` is refused.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// assert!(Pool::builder(M).leak_threshold(Some(Duration::ZERO)).build().is_err());
        /// ```
        leak_threshold: Option<Duration>
    );
    setter!(
        /// At most this many `get`s wait at once; past it `get` fails at once
        /// with [`PoolError::Exhausted`](crate::PoolError::Exhausted).
        /// Default `None` (unbounded); `Some(0)` means never wait.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).max_waiters(Some(0)).build().unwrap();
        /// ```
        max_waiters: Option<usize>
    );
    setter!(
        /// Number of idle-set shards. Default: one per available core; must
        /// be in `1..=1024`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).shards(1).build().unwrap();
        /// ```
        shards: usize
    );

    setter!(
        /// First pause before retrying a failed connect; each retry doubles
        /// it (up to `max_connect_backoff`) and draws the actual pause at
        /// random from its upper half. Retries stop at the caller's
        /// deadline. Default 25 ms; must be non-zero.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).connect_backoff(Duration::from_millis(5)).build().unwrap();
        /// ```
        connect_backoff: Duration
    );
    setter!(
        /// Longest pause between connect retries. Default 1 s; must not be
        /// below `connect_backoff`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # use std::time::Duration;
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).max_connect_backoff(Duration::from_millis(200)).build().unwrap();
        /// ```
        max_connect_backoff: Duration
    );
    setter!(
        /// Fast-fail mode: a `get` that must connect returns the first
        /// connect failure at once (`PoolError::Connect`) instead of
        /// retrying until its deadline, so callers learn that the backend is
        /// down without queueing for the whole timeout. Default `false`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).fail_fast(true).build().unwrap();
        /// ```
        fail_fast: bool
    );
    setter!(
        /// The breaker: after this many consecutive failed connects (errors
        /// or timeouts, with no success between them), or one error the
        /// manager calls permanent ([`Manager::is_permanent`]), the backend
        /// is *down*. While it is down, a `get` that finds an idle
        /// connection is served as usual, and one that would have to
        /// connect fails at once with [`PoolError::Unavailable`] (the last
        /// connect error's text, how long the backend has been down, when
        /// the next probe is due) instead of waiting out its deadline; one
        /// probe connect at a time runs in the background, after a jittered
        /// pause that doubles from `connect_backoff` to
        /// `max_connect_backoff`; the first probe that connects ends the
        /// outage and the pool serves again. The `min_idle` refill pauses,
        /// [`Pool::warm_up`] fails with `Unavailable`, [`Pool::health`]
        /// fires `backend_down`, and one `tracing` warning and one info
        /// mark the two transitions.
        ///
        /// Default `Some(5)`: a blip of a few failed connects (a server
        /// restart that takes a second) is retried as before, a real outage
        /// fails fast after about half a second. `Some(0)` is refused;
        /// `None` turns the breaker off (connects are still serialised
        /// while they fail, one at a time, so a dead backend never sees
        /// `max_size` connects at once).
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).breaker(Some(3)).build().unwrap();
        /// assert_eq!(pool.config().breaker, Some(3));
        /// assert!(Pool::builder(M).breaker(Some(0)).build().is_err());
        /// ```
        ///
        /// [`PoolError::Unavailable`]: crate::PoolError::Unavailable
        breaker: Option<u32>
    );

    setter!(
        /// Whether the pool starts its background task (periodic
        /// maintenance and `min_idle` refills) when a Tokio runtime is
        /// present. Default `true`. With `false`, maintenance runs only in
        /// passing (busy threads) and through [`Pool::maintain`], the hot
        /// path reads the real clock (exact expiry without the task), and
        /// `min_idle` is not refilled: for deterministic simulations and
        /// callers that drive maintenance themselves.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).background(false).build().unwrap();
        /// ```
        background: bool
    );

    setter!(
        /// Whether a release that keeps its connection for its own thread
        /// may skip the atomic read-modify-write (Linux; DESIGN.md, "One
        /// read-modify-write"). Default `true`: such a release costs one
        /// plain store, and the first `get` that has to wait after a quiet
        /// second makes one `membarrier(2)` call (microseconds, longer while
        /// a hypervisor keeps a vCPU away: BENCHMARKS.md has the figures;
        /// the waiter is served meanwhile if a connection comes back).
        /// `false`: every such release fences (a few nanoseconds more per
        /// uncontended cycle) and no waiter ever makes the call. Where
        /// `membarrier` is unavailable (other systems, old kernels, seccomp)
        /// the pool behaves as with `false`.
        ///
        /// ```
        /// # use latchless::{Manager, Pool};
        /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
        /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
        /// let pool = Pool::builder(M).membarrier(false).build().unwrap();
        /// ```
        membarrier: bool
    );

    /// The pool's name: the `pool` field of every `tracing` event it emits
    /// (health alerts, connect and check failures, closes, timeouts).
    /// Default `"latchless"`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).name("orders-db").build().unwrap();
    /// assert_eq!(pool.config().name, "orders-db");
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = name.to_owned();
        self
    }

    /// The acquire-wait p99 above which [`Pool::health`] reports the
    /// [`AcquireWait`](crate::AlertKind::AcquireWait) alert (judged over the
    /// 30 s window once it holds at least 100 acquisitions). Default
    /// 100 ms; `Duration::MAX` turns the alert off.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).wait_alert(Duration::from_millis(20)).build().unwrap();
    /// assert_eq!(pool.config().wait_alert, Duration::from_millis(20));
    /// ```
    pub fn wait_alert(mut self, threshold: Duration) -> Self {
        self.config.wait_alert = threshold;
        self
    }

    /// When [`Pool::health`] reports the
    /// [`Churn`](crate::AlertKind::Churn) alert: the pool opens
    /// connections faster than `max_size` per `period`, over the 30 s
    /// window (value and threshold in opens per second). Default 10 s: a
    /// pool of 10 fires above one open a second, 30 in the window, which a
    /// cold start (10 opens) or a `max_lifetime` of minutes never reaches,
    /// and an `idle_timeout` shorter than the gaps between requests, a
    /// `max_lifetime` of seconds or a middlebox killing sessions does.
    /// `Duration::MAX` turns the alert off; must be non-zero.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).churn_alert(Duration::from_secs(60)).build().unwrap();
    /// assert_eq!(pool.config().churn_alert, Duration::from_secs(60));
    /// assert!(Pool::builder(M).churn_alert(Duration::ZERO).build().is_err());
    /// ```
    pub fn churn_alert(mut self, period: Duration) -> Self {
        self.config.churn_alert = period;
        self
    }

    /// The clock the pool reads: for idle times, lifetimes, pre-ping due
    /// times and leak reports. Default: [`Clock::real`](crate::Clock::real);
    /// tests pass [`Clock::mock`](crate::Clock::mock) and move its time
    /// with the [`MockClock`](crate::MockClock).
    ///
    /// ```
    /// # use latchless::{Clock, Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let (clock, _mock) = Clock::mock();
    /// let pool = Pool::builder(M).clock(clock).build().unwrap();
    /// ```
    pub fn clock(mut self, clock: crate::Clock) -> Self {
        self.clock = Some(clock);
        self
    }
}

impl<M: Manager> Builder<M> {
    /// Checks every setting and builds the pool. Works outside a Tokio
    /// runtime; never panics.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first setting that breaks a rule.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let err = Pool::builder(M).max_size(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "max_size (0) must be at least 1");
    /// ```
    pub fn build(self) -> Result<Pool<M>, BuildError> {
        validate(&self.config)?;
        Ok(Pool::new(
            self.manager,
            self.config,
            self.clock.unwrap_or_default().into_inner(),
        ))
    }
}

/// Why [`Pool::set_max_size`] refused a size: `Display` names the rule
/// broken. The pool is unchanged.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).max_size(2).max_size_limit(8).build().unwrap();
/// let err = pool.set_max_size(9).unwrap_err();
/// assert_eq!(err.to_string(), "max_size (9) must be in 1..=max_size_limit (8)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResizeError {
    message: String,
}

impl fmt::Display for ResizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ResizeError {}

impl<M: Manager> Pool<M> {
    /// Resizes the pool at run time, within the ceiling fixed at build
    /// ([`Builder::max_size_limit`]). Lock-free like the rest of the pool.
    /// Growing lets parked waiters connect at once; shrinking closes idle
    /// connections above `n` now and in-use ones above it when they are
    /// returned, so once they are back at most `n` are open (connects
    /// already under way finish and count towards that). [`state`](Pool::state),
    /// [`metrics`](Pool::metrics) and [`max_size`](Pool::max_size) reflect
    /// the new size.
    ///
    /// # Errors
    /// A [`ResizeError`] unless `1 <= n <= max_size_limit` and
    /// `n >= min_idle`; the pool is unchanged then.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let pool = Pool::builder(M).max_size(2).max_size_limit(8).build().unwrap();
    /// pool.set_max_size(8).unwrap();
    /// assert_eq!(pool.max_size(), 8);
    /// let err = pool.set_max_size(9).unwrap_err();
    /// assert_eq!(err.to_string(), "max_size (9) must be in 1..=max_size_limit (8)");
    /// ```
    pub fn set_max_size(&self, n: usize) -> Result<(), ResizeError> {
        let c = self.config();
        let limit = c.limit();
        let refuse = |message| Err(ResizeError { message });
        if n == 0 || n > limit {
            return refuse(format!(
                "max_size ({n}) must be in 1..=max_size_limit ({limit})"
            ));
        }
        if n < c.min_idle {
            return refuse(format!(
                "max_size ({n}) must not be below min_idle ({})",
                c.min_idle
            ));
        }
        self.resize(n);
        Ok(())
    }
}

pub(crate) fn validate(c: &Config) -> Result<(), BuildError> {
    let err = |field, message: String| Err(BuildError::new(field, message));
    if c.max_size == 0 {
        return err(
            "max_size",
            format!("max_size ({}) must be at least 1", c.max_size),
        );
    }
    if c.max_size > MAX_POOL_SIZE {
        return err(
            "max_size",
            format!("max_size ({}) must not exceed {MAX_POOL_SIZE}", c.max_size),
        );
    }
    if let Some(limit) = c.max_size_limit {
        if limit < c.max_size || limit > MAX_POOL_SIZE {
            return err(
                "max_size_limit",
                format!(
                    "max_size_limit ({limit}) must be in max_size ({})..={MAX_POOL_SIZE}",
                    c.max_size
                ),
            );
        }
    }
    if c.min_idle > c.max_size {
        return err(
            "min_idle",
            format!(
                "min_idle ({}) must not exceed max_size ({})",
                c.min_idle, c.max_size
            ),
        );
    }
    if let Some(max_idle) = c.max_idle {
        if max_idle < c.min_idle || max_idle > c.max_size {
            return err(
                "max_idle",
                format!(
                    "max_idle ({max_idle}) must be in min_idle ({})..=max_size ({})",
                    c.min_idle, c.max_size
                ),
            );
        }
    }
    if c.shards == 0 || c.shards > MAX_SHARDS {
        return err(
            "shards",
            format!("shards ({}) must be in 1..={MAX_SHARDS}", c.shards),
        );
    }
    if c.acquire_timeout.is_zero() {
        return err(
            "acquire_timeout",
            "acquire_timeout must be non-zero (use try_get() not to wait)".into(),
        );
    }
    if c.connect_timeout.is_zero() {
        return err("connect_timeout", "connect_timeout must be non-zero".into());
    }
    if c.check_timeout.is_zero() {
        return err("check_timeout", "check_timeout must be non-zero".into());
    }
    if c.connect_backoff.is_zero() {
        return err("connect_backoff", "connect_backoff must be non-zero".into());
    }
    if c.max_connect_backoff < c.connect_backoff {
        return err(
            "max_connect_backoff",
            format!(
                "max_connect_backoff ({:?}) must not be below connect_backoff ({:?})",
                c.max_connect_backoff, c.connect_backoff
            ),
        );
    }
    if c.churn_alert.is_zero() {
        return err(
            "churn_alert",
            "churn_alert must be non-zero (Duration::MAX turns the alert off)".into(),
        );
    }
    if c.breaker == Some(0) {
        return err(
            "breaker",
            "breaker must be None (off) or at least Some(1), not Some(0)".into(),
        );
    }
    for (field, value) in [
        ("idle_timeout", c.idle_timeout),
        ("max_lifetime", c.max_lifetime),
        ("leak_threshold", c.leak_threshold),
        ("keepalive", c.keepalive),
        ("replace_before_expiry", c.replace_before_expiry),
    ] {
        if value.is_some_and(|d| d.is_zero()) {
            return err(
                field,
                format!("{field} must be None (off) or non-zero, not Some(0)"),
            );
        }
    }
    Ok(())
}
