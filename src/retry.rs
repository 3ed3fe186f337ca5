//! Request retries on a fresh connection: [`RetryPolicy`], [`RetryError`],
//! and the loop behind [`Pool::retry`](crate::Pool::retry) and
//! [`KeyedPool::retry`](crate::KeyedPool::retry).
//!
//! # Invariants kept
//!
//! - An attempt is retried only when its connection was lost: after the
//!   operation failed, the holder marked the guard broken
//!   (`Pooled::mark_broken`) or the manager's `is_broken` says so (the
//!   ready-made managers record a lost session on the connection, e.g.
//!   `PgConnection::observe`). Any other error is returned at once.
//! - A lost connection is closed (dropped broken) before the next attempt
//!   takes a connection, so a retry never reuses it.
//! - At most `1 + max_retries` attempts; none starts, and no connection is
//!   waited for, past the policy's deadline; an attempt still running at
//!   the deadline is cancelled and its connection closed (its state is
//!   unknown).

use std::future::Future;
use std::ops::DerefMut;
use std::panic::Location;
use std::time::{Duration, Instant};

use crate::{KeyedManager, KeyedPool, KeyedPooled, Manager, Pool, PoolError, Pooled};

/// How [`Pool::retry`](crate::Pool::retry) retries an operation whose
/// connection was lost: at most `max_retries` more attempts, each on a
/// fresh connection, all within an optional deadline.
///
/// Default: 3 retries (4 attempts), no deadline (each `get` waits at most
/// the pool's `acquire_timeout`).
///
/// ```
/// use latchless::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new(2).timeout(Duration::from_millis(500));
/// assert_eq!(policy.max_retries(), 2);
/// assert!(policy.deadline().is_some());
/// assert_eq!(RetryPolicy::default().max_retries(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: usize,
    deadline: Option<Instant>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(3)
    }
}

impl RetryPolicy {
    /// Up to `max_retries` attempts after the first (0: never retry), no
    /// deadline.
    ///
    /// ```
    /// assert_eq!(latchless::RetryPolicy::new(0).max_retries(), 0);
    /// ```
    pub const fn new(max_retries: usize) -> Self {
        Self {
            max_retries,
            deadline: None,
        }
    }

    /// No attempt starts, and no connection is waited for, after
    /// `deadline`; an attempt still running then is cancelled (its
    /// connection closed, [`RetryError::Timeout`]).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let at = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(latchless::RetryPolicy::new(1).until(at).deadline(), Some(at));
    /// ```
    pub const fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// [`until`](Self::until) `timeout` from now.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let p = latchless::RetryPolicy::new(1).timeout(Duration::from_secs(1));
    /// assert!(p.deadline().unwrap() > Instant::now());
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(at) => self.until(at),
            None => Self {
                deadline: None,
                ..self
            },
        }
    }

    /// Attempts allowed after the first.
    ///
    /// ```
    /// assert_eq!(latchless::RetryPolicy::new(5).max_retries(), 5);
    /// ```
    pub const fn max_retries(&self) -> usize {
        self.max_retries
    }

    /// The deadline, if any.
    ///
    /// ```
    /// assert_eq!(latchless::RetryPolicy::new(5).deadline(), None);
    /// ```
    pub const fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Why [`Pool::retry`](crate::Pool::retry) gave up. `E` is the
/// operation's error, `C` the manager's connect error.
///
/// ```
/// use latchless::RetryError;
/// let e: RetryError<std::io::Error, std::io::Error> = RetryError::Lost {
///     attempts: 4,
///     last: std::io::ErrorKind::ConnectionReset.into(),
/// };
/// assert_eq!(e.attempts(), 4);
/// assert!(e.to_string().contains("4 attempts"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RetryError<E, C> {
    /// The operation failed and its connection was not lost (a SQL error,
    /// a constraint, a refusal): not retried, the error as is.
    Failed(E),
    /// Every attempt lost its connection: `1 + max_retries` of them, or
    /// fewer when the deadline came first. The last attempt's error.
    Lost {
        /// Attempts made.
        attempts: usize,
        /// The last attempt's error.
        last: E,
    },
    /// No connection could be had (after `attempts` attempts): the pool's
    /// error, e.g. `Timeout` at the deadline or `Unavailable` while the
    /// backend is down.
    Pool {
        /// Attempts made before.
        attempts: usize,
        /// What `get` returned.
        error: PoolError<C>,
    },
    /// The deadline passed while attempt number `attempts` ran: it was
    /// cancelled and its connection closed.
    Timeout {
        /// Attempts made, the cancelled one included.
        attempts: usize,
    },
}

impl<E, C> RetryError<E, C> {
    /// Attempts made (1 for [`Failed`](Self::Failed)).
    ///
    /// ```
    /// let e: latchless::RetryError<std::io::Error, std::io::Error> =
    ///     latchless::RetryError::Timeout { attempts: 2 };
    /// assert_eq!(e.attempts(), 2);
    /// ```
    pub fn attempts(&self) -> usize {
        match self {
            RetryError::Failed(_) => 1,
            RetryError::Lost { attempts, .. }
            | RetryError::Pool { attempts, .. }
            | RetryError::Timeout { attempts } => *attempts,
        }
    }
}

impl<E: std::fmt::Display, C: std::fmt::Display> std::fmt::Display for RetryError<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryError::Failed(e) => write!(f, "{e}"),
            RetryError::Lost { attempts, last } => write!(
                f,
                "the connection was lost on each of {attempts} attempts; the last: {last}"
            ),
            RetryError::Pool { attempts, error } => {
                write!(f, "no connection after {attempts} attempts: {error}")
            }
            RetryError::Timeout { attempts } => write!(
                f,
                "the deadline passed during attempt {attempts}; it was cancelled"
            ),
        }
    }
}

impl<E, C> std::error::Error for RetryError<E, C>
where
    E: std::error::Error + 'static,
    C: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RetryError::Failed(e) | RetryError::Lost { last: e, .. } => Some(e),
            RetryError::Pool { error, .. } => Some(error),
            RetryError::Timeout { .. } => None,
        }
    }
}

/// A guard the retry loop can judge: `Pooled` and `KeyedPooled`.
pub(crate) trait Lease: DerefMut {
    /// The connection was lost: marked broken by its holder, or the
    /// manager's `is_broken` says so.
    fn is_lost(&mut self) -> bool;
    /// Close it on drop (an attempt cancelled half way).
    fn mark_lost(&mut self);
}

/// The retry loop: a connection from `get` (given the deadline), `op` on
/// it, again on a fresh one while the connection was lost (module
/// invariants).
pub(crate) async fn run<G, T, E, C, Get, GetFut, F>(
    policy: RetryPolicy,
    mut get: Get,
    mut op: F,
) -> Result<T, RetryError<E, C>>
where
    G: Lease,
    Get: FnMut(Option<Instant>) -> GetFut,
    GetFut: Future<Output = Result<G, PoolError<C>>>,
    F: AsyncFnMut(&mut G::Target) -> Result<T, E>,
{
    let mut attempts = 0;
    loop {
        let mut conn = match get(policy.deadline).await {
            Ok(conn) => conn,
            Err(error) => return Err(RetryError::Pool { attempts, error }),
        };
        attempts += 1;
        let result = match policy.deadline {
            None => op(&mut *conn).await,
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                match tokio::time::timeout_at(at, op(&mut *conn)).await {
                    Ok(result) => result,
                    Err(_) => {
                        conn.mark_lost();
                        return Err(RetryError::Timeout { attempts });
                    }
                }
            }
        };
        let last = match result {
            Ok(value) => return Ok(value),
            Err(e) if !conn.is_lost() => return Err(RetryError::Failed(e)),
            Err(e) => e,
        };
        // Closed (it is broken) before the next attempt takes a place.
        drop(conn);
        let late = policy.deadline.is_some_and(|at| Instant::now() >= at);
        if attempts > policy.max_retries || late {
            return Err(RetryError::Lost { attempts, last });
        }
    }
}

/// The time left until `deadline`, or `acquire_timeout` without one.
fn left(deadline: Option<Instant>, acquire_timeout: Duration) -> Duration {
    deadline.map_or(acquire_timeout, |at| {
        at.saturating_duration_since(Instant::now())
    })
}

impl<M: Manager> Lease for Pooled<M> {
    fn is_lost(&mut self) -> bool {
        Pooled::is_lost(self)
    }
    fn mark_lost(&mut self) {
        Pooled::mark_broken(self);
    }
}

impl<K, M: KeyedManager<K>> Lease for KeyedPooled<K, M>
where
    K: Send + Sync + 'static,
{
    fn is_lost(&mut self) -> bool {
        Pooled::is_lost(&mut self.0)
    }
    fn mark_lost(&mut self) {
        KeyedPooled::mark_broken(self);
    }
}

impl<M: Manager> Pool<M> {
    /// Runs an idempotent operation on a connection and, when it fails
    /// because the connection was lost, runs it again on a fresh one: at
    /// most [`RetryPolicy::max_retries`] more times, within the policy's
    /// deadline. An error that did not lose the connection (a SQL error, a
    /// constraint) is returned at once, never retried.
    ///
    /// *Lost* means what the pool's close reason `broken` means: after the
    /// operation failed, the connection was marked broken (the ready-made
    /// managers' connections record it themselves, e.g. through
    /// [`PgConnection::observe`](crate::managers::PgConnection::observe)
    /// or an I/O error on a TCP, TLS or Redis connection), or the
    /// manager's [`is_broken`](Manager::is_broken) says so. The lost
    /// connection is closed before the next attempt takes another one,
    /// which the pool checks as after any broken connection.
    ///
    /// Each attempt waits for a connection at most until the deadline (or
    /// `acquire_timeout` without one); no attempt starts after it, and one
    /// still running at it is cancelled and its connection closed. Only
    /// retry operations that are safe to run twice: a connection lost
    /// mid-request may have run it on the server.
    ///
    /// # Errors
    /// [`RetryError::Failed`] (not a lost connection), [`RetryError::Lost`]
    /// (every attempt lost its connection), [`RetryError::Pool`] (no
    /// connection, e.g. `Timeout` at the deadline), [`RetryError::Timeout`]
    /// (the deadline passed during an attempt).
    ///
    /// ```
    /// # use latchless::{Manager, Pool, RetryError, RetryPolicy};
    /// # use std::time::Duration;
    /// /// A connection the server dropped on the first two requests.
    /// struct Flaky(std::sync::atomic::AtomicU32);
    /// struct Conn { lost: bool, n: u32 }
    /// impl Manager for Flaky {
    ///     type Connection = Conn;
    ///     type Error = std::io::Error;
    ///     async fn connect(&self) -> Result<Conn, std::io::Error> {
    ///         let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         Ok(Conn { lost: false, n })
    ///     }
    ///     fn is_broken(&self, conn: &mut Conn) -> bool { conn.lost }
    /// }
    /// async fn request(conn: &mut Conn) -> Result<u32, std::io::Error> {
    ///     if conn.n < 2 {
    ///         conn.lost = true; // the driver records the lost session
    ///         return Err(std::io::ErrorKind::ConnectionReset.into());
    ///     }
    ///     Ok(conn.n)
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(Flaky(0.into())).build().unwrap();
    /// let policy = RetryPolicy::new(3).timeout(Duration::from_secs(2));
    /// let n = pool.retry(policy, async |conn| request(conn).await).await.unwrap();
    /// assert_eq!(n, 2, "third connection");
    /// assert_eq!(pool.metrics().broken, 2);
    ///
    /// // An error that keeps the connection is not retried.
    /// let e = pool
    ///     .retry(policy, async |_conn| Err::<(), _>(std::io::Error::other("no such table")))
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(e, RetryError::Failed(_)));
    /// # }
    /// ```
    #[track_caller]
    pub fn retry<'a, T, E, F>(
        &'a self,
        policy: RetryPolicy,
        op: F,
    ) -> impl Future<Output = Result<T, RetryError<E, M::Error>>> + 'a
    where
        F: AsyncFnMut(&mut M::Connection) -> Result<T, E> + 'a,
        T: 'a,
        E: 'a,
    {
        let by = Location::caller();
        let timeout = self.config().acquire_timeout;
        run(
            policy,
            move |deadline| self.acquire(left(deadline, timeout), by),
            op,
        )
    }
}

impl<K, M: KeyedManager<K>> KeyedPool<K, M>
where
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
{
    /// [`Pool::retry`] on `key`'s connections: the operation runs on a
    /// connection of `key` and, when that connection was lost, again on a
    /// fresh one of the same key, within the policy's count and deadline.
    ///
    /// # Errors
    /// As [`Pool::retry`].
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, RetryPolicy};
    /// struct Hosts;
    /// impl KeyedManager<u16> for Hosts {
    ///     type Connection = (u16, bool);
    ///     type Error = std::io::Error;
    ///     async fn connect(&self, port: &u16) -> Result<(u16, bool), std::io::Error> {
    ///         Ok((*port, false))
    ///     }
    ///     fn is_broken(&self, _port: &u16, conn: &mut (u16, bool)) -> bool { conn.1 }
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let mut first = true;
    /// let port = pool
    ///     .retry(&443, RetryPolicy::new(1), async move |conn: &mut (u16, bool)| {
    ///         if std::mem::take(&mut first) {
    ///             conn.1 = true; // lost: retried on a fresh connection
    ///             return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    ///         }
    ///         Ok(conn.0)
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(port, 443);
    /// # }
    /// ```
    #[track_caller]
    pub fn retry<'a, T, E, F>(
        &'a self,
        key: &'a K,
        policy: RetryPolicy,
        op: F,
    ) -> impl Future<Output = Result<T, RetryError<E, M::Error>>> + 'a
    where
        F: AsyncFnMut(&mut M::Connection) -> Result<T, E> + 'a,
        T: 'a,
        E: 'a,
    {
        let by = Location::caller();
        let timeout = self.config().acquire_timeout;
        run(
            policy,
            move |deadline| self.acquire(key, left(deadline, timeout), by),
            op,
        )
    }
}
