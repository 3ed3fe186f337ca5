//! Errors returned by the pool: [`PoolError`] for acquiring a connection,
//! and [`TimeoutKind`], what a `get` that timed out was doing.
//!
//! Invariant kept: every error path of the pool returns one of these values
//! and gives back whatever it held (connection, place, waiter entry) before
//! returning; no error is reported by panicking.

use std::{error::Error, fmt};

/// What a `get` was doing when its deadline passed: the kind of a
/// [`PoolError::Timeout`]. Its `Display` gives the advice that fits.
///
/// ```
/// use latchless::TimeoutKind;
/// assert!(TimeoutKind::Waiting.to_string().contains("max_size"));
/// assert!(TimeoutKind::Connecting.to_string().contains("connect_timeout"));
/// assert!(TimeoutKind::Checking.to_string().contains("check_timeout"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Waiting for a connection to be returned: every connection was in
    /// use. The pool is too small for the load, or connections are held
    /// too long.
    Waiting,
    /// Connecting (or waiting for the one connect that runs while
    /// connects fail): the server did not complete a connect in time.
    Connecting,
    /// Checking an idle connection before handing it out (the pre-ping):
    /// the server did not answer the check in time.
    Checking,
}

impl TimeoutKind {
    /// A stable snake_case name, as in the `timeouts{kind}` metric.
    ///
    /// ```
    /// assert_eq!(latchless::TimeoutKind::Checking.name(), "checking");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Connecting => "connecting",
            Self::Checking => "checking",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Waiting => {
                "timed out waiting for a connection to be returned (all were in use): raise max_size or acquire_timeout, or hold connections for less time"
            }
            Self::Connecting => {
                "timed out connecting: the server did not complete a connect in time; check that it is up and reachable at the address configured, or raise connect_timeout"
            }
            Self::Checking => {
                "timed out checking an idle connection (pre-ping): the server did not answer in time; check the server, or lower check_timeout to give up on it sooner"
            }
        })
    }
}

/// What [`PoolError::Unavailable`] knows of the outage: how long the
/// backend has been down, when the next probe connect is due, and the last
/// connect error's text. One pointer wide, so that a `PoolError` stays
/// small on every path that returns one.
///
/// ```
/// # use latchless::{Manager, Pool, PoolError};
/// # struct Down; impl Manager for Down { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Err(std::io::Error::other("refused")) }
/// #   fn is_permanent(&self, _: &std::io::Error) -> bool { true } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(Down).build().unwrap();
/// let _ = pool.get().await; // a permanent error: the backend is down
/// if let Err(PoolError::Unavailable(outage)) = pool.get().await {
///     assert_eq!(outage.last_error(), "refused");
///     assert!(outage.down_for() < std::time::Duration::from_secs(1));
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage(Box<OutageFacts>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct OutageFacts {
    down_for: std::time::Duration,
    next_probe_in: std::time::Duration,
    last_error: String,
}

impl Outage {
    pub(crate) fn new(
        down_for: std::time::Duration,
        next_probe_in: std::time::Duration,
        last_error: String,
    ) -> Self {
        Self(Box::new(OutageFacts {
            down_for,
            next_probe_in,
            last_error,
        }))
    }

    /// How long the backend had been down when the `get` failed.
    ///
    /// ```
    /// # fn f(o: &latchless::Outage) { let _ = o.down_for(); }
    /// ```
    pub fn down_for(&self) -> std::time::Duration {
        self.0.down_for
    }

    /// How long until the next probe connect was due (zero: due now, or
    /// running).
    ///
    /// ```
    /// # fn f(o: &latchless::Outage) { let _ = o.next_probe_in(); }
    /// ```
    pub fn next_probe_in(&self) -> std::time::Duration {
        self.0.next_probe_in
    }

    /// The last connect error, as text.
    ///
    /// ```
    /// # fn f(o: &latchless::Outage) { println!("{}", o.last_error()); }
    /// ```
    pub fn last_error(&self) -> &str {
        &self.0.last_error
    }
}

/// Why [`Pool::get`](crate::Pool::get) (or `get_timeout`) returned no connection.
///
/// ```
/// use latchless::{PoolError, TimeoutKind};
/// let e: PoolError<std::io::Error> = PoolError::Timeout(TimeoutKind::Connecting);
/// assert!(e.to_string().starts_with("timed out connecting"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError<E> {
    /// The deadline (`acquire_timeout` or the per-call timeout) passed;
    /// the kind says what the `get` was doing then.
    Timeout(TimeoutKind),
    /// The pool was closed (by [`Pool::close`](crate::Pool::close) or by
    /// dropping its last handle) before or while waiting.
    Closed,
    /// `max_waiters` callers were already waiting; this call failed at once.
    Exhausted,
    /// [`Manager::connect`](crate::Manager::connect) failed; the error is the
    /// manager's. Returned at once for an error the manager calls permanent
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent)) or with
    /// `fail_fast`, else after retrying until the deadline.
    Connect(E),
    /// The backend is down ([`Builder::breaker`](crate::Builder::breaker)):
    /// this `get` found no idle connection and would have had to connect,
    /// so it failed at once instead of waiting out its deadline. One probe
    /// connect at a time runs in the background; the first that succeeds
    /// ends the outage. The [`Outage`] says for how long the backend has
    /// been down, when the next probe is due, and the last connect error.
    Unavailable(Outage),
    /// [`Pool::get_blocking`](crate::Pool::get_blocking) had to wait or
    /// connect, but the pool was built outside a Tokio runtime, or the
    /// runtime it was built in has shut down, so there is none to run the
    /// wait or the connect on.
    NoRuntime,
    /// [`Pool::get_blocking`](crate::Pool::get_blocking) had to wait or
    /// connect on a thread that is inside a Tokio runtime, where blocking
    /// would stall the executor; use [`Pool::get`](crate::Pool::get) there.
    BlockingInRuntime,
}

impl<E: fmt::Display> fmt::Display for PoolError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(kind) => kind.fmt(f),
            Self::Closed => f.write_str("the pool is closed"),
            Self::Exhausted => f.write_str(
                "too many callers are already waiting for a connection (max_waiters reached)",
            ),
            Self::Connect(e) => write!(f, "could not open a connection: {e}"),
            Self::Unavailable(outage) => write!(
                f,
                "the backend is down (for {:?}; next probe connect in {:?}), failing fast instead of connecting; last connect error: {}",
                outage.down_for(),
                outage.next_probe_in(),
                outage.last_error()
            ),
            Self::NoRuntime => f.write_str(
                "get_blocking must wait or connect, but the pool was built outside a Tokio runtime or that runtime has shut down: build it inside one that outlives its use",
            ),
            Self::BlockingInRuntime => f.write_str(
                "get_blocking must wait or connect, but was called inside a Tokio runtime, where blocking stalls the executor: use get().await",
            ),
        }
    }
}

impl<E: Error + 'static> Error for PoolError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> PoolError<E> {
    /// The manager's error, if this is [`PoolError::Connect`].
    ///
    /// ```
    /// use latchless::PoolError;
    /// let e = PoolError::Connect(std::io::Error::other("refused"));
    /// assert_eq!(e.connect_error().unwrap().to_string(), "refused");
    /// ```
    pub fn connect_error(&self) -> Option<&E> {
        match self {
            Self::Connect(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `get` returns a `Result` holding this error: as small as the
    /// manager's error and a tag, so that the result of a fast `get` stays
    /// in registers (the outage's facts are boxed).
    #[test]
    fn a_pool_error_is_two_words() {
        assert!(
            std::mem::size_of::<PoolError<std::io::Error>>() <= 2 * std::mem::size_of::<usize>()
        );
    }
}
