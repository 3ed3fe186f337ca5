//! Errors returned by the pool: [`PoolError`] for acquiring a connection.
//!
//! Invariant kept: every error path of the pool returns one of these values
//! and gives back whatever it held (connection, place, waiter entry) before
//! returning; no error is reported by panicking.

use std::{error::Error, fmt};

/// Why [`Pool::get`](crate::Pool::get) (or `get_timeout`) returned no connection.
///
/// ```
/// use latchless::PoolError;
/// let e: PoolError<std::io::Error> = PoolError::Timeout;
/// assert_eq!(e.to_string(), "timed out waiting for a connection: raise acquire_timeout or max_size, or return connections sooner");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError<E> {
    /// The deadline (`acquire_timeout` or the per-call timeout) passed before a
    /// connection was available, or a connect exceeded `connect_timeout`.
    Timeout,
    /// The pool was closed (by [`Pool::close`](crate::Pool::close) or by
    /// dropping its last handle) before or while waiting.
    Closed,
    /// `max_waiters` callers were already waiting; this call failed at once.
    Exhausted,
    /// [`Manager::connect`](crate::Manager::connect) failed; the error is the manager's.
    Connect(E),
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
            Self::Timeout => f.write_str(
                "timed out waiting for a connection: raise acquire_timeout or max_size, or return connections sooner",
            ),
            Self::Closed => f.write_str("the pool is closed"),
            Self::Exhausted => f.write_str(
                "too many callers are already waiting for a connection (max_waiters reached)",
            ),
            Self::Connect(e) => write!(f, "could not open a connection: {e}"),
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
