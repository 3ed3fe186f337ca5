//! The [`Manager`] trait: how the pool opens, checks and recognises broken
//! connections.
//!
//! Invariant kept: the pool calls `connect` only while it holds a reserved
//! place (so at most `max_size` connects and connections exist at once), and
//! calls `is_broken` (then `needs_cleanup`) on every connection returned to
//! it, and hands a connection that needs cleaning to nobody before its
//! `cleanup` passed. A manager that
//! errors, hangs (bounded by `connect_timeout`) or panics costs the caller an
//! error, never a place or a connection.

use std::future::Future;

/// How the pool opens, checks and recognises broken connections.
///
/// Implementors may write `async fn connect(&self) -> Result<..>`.
///
/// ```
/// use latchless::Manager;
///
/// struct Numbers;
///
/// impl Manager for Numbers {
///     type Connection = u64;
///     type Error = std::io::Error;
///
///     async fn connect(&self) -> Result<u64, std::io::Error> {
///         Ok(42)
///     }
///
///     fn is_broken(&self, conn: &mut u64) -> bool {
///         *conn == 0
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// The pooled connection.
    type Connection: Send + 'static;
    /// The error `connect` and `check` return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Open a new connection (TCP + TLS + auth: the expensive part).
    ///
    /// Bounded by the pool's `connect_timeout`; a future dropped on timeout
    /// or cancellation must not leave anything behind.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Round-trip liveness check ("pre-ping"), run before a connection that
    /// has sat idle for at least `check_after_idle` is handed out.
    /// A failure closes that connection; the caller gets another one.
    fn check(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Cheap, synchronous test run when a connection is returned.
    /// `true` closes it instead of putting it back in the idle set.
    ///
    /// A panic here is caught and treated as `true`.
    fn is_broken(&self, conn: &mut Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Cheap, synchronous test run on a healthy connection when it is
    /// returned: `true` has [`cleanup`](Self::cleanup) run on it before
    /// anyone else gets it. The release returns at once; the clean-up runs
    /// off the caller's path, on the current Tokio runtime (without one,
    /// the connection is closed instead), bounded by `check_timeout`, and
    /// only a connection that passed it rejoins the idle set or serves the
    /// oldest waiter. A connection being cleaned counts as in use.
    ///
    /// Default `false`, which compiles to nothing on the release path.
    /// A panic here is caught and closes the connection.
    ///
    /// ```
    /// use latchless::Manager;
    ///
    /// struct Session {
    ///     in_transaction: bool,
    /// }
    ///
    /// struct Db;
    ///
    /// impl Manager for Db {
    ///     type Connection = Session;
    ///     type Error = std::io::Error;
    ///
    ///     async fn connect(&self) -> Result<Session, std::io::Error> {
    ///         Ok(Session { in_transaction: false })
    ///     }
    ///
    ///     fn needs_cleanup(&self, conn: &mut Session) -> bool {
    ///         conn.in_transaction
    ///     }
    ///
    ///     async fn cleanup(&self, conn: &mut Session) -> Result<(), std::io::Error> {
    ///         conn.in_transaction = false; // a ROLLBACK, say
    ///         Ok(())
    ///     }
    /// }
    /// ```
    #[inline(always)]
    fn needs_cleanup(&self, conn: &mut Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Cleans a returned connection that [`needs_cleanup`](Self::needs_cleanup)
    /// flagged (a `ROLLBACK`, a `DISCARD ALL`), off the caller's path. An
    /// error, a panic or outlasting `check_timeout` closes the connection
    /// (counted in `Metrics::closed_cleanup`). Default: nothing to do.
    ///
    /// ```
    /// use latchless::Manager;
    ///
    /// struct Db;
    ///
    /// impl Manager for Db {
    ///     type Connection = Vec<String>;
    ///     type Error = std::io::Error;
    ///
    ///     async fn connect(&self) -> Result<Vec<String>, std::io::Error> {
    ///         Ok(Vec::new())
    ///     }
    ///
    ///     fn needs_cleanup(&self, settings: &mut Vec<String>) -> bool {
    ///         !settings.is_empty()
    ///     }
    ///
    ///     async fn cleanup(&self, settings: &mut Vec<String>) -> Result<(), std::io::Error> {
    ///         settings.clear(); // RESET ALL, say
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn cleanup(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// `true` when retrying cannot help (bad credentials, unknown
    /// database, certificate rejected): `get` returns
    /// [`PoolError::Connect`](crate::PoolError::Connect) with this error at
    /// once instead of retrying until its deadline, whatever `fail_fast`
    /// says, and the pool counts the backend as down (`Builder::breaker`).
    /// Default `false`: every error is retried.
    ///
    /// A panic here is caught and treated as `false`.
    ///
    /// ```
    /// use latchless::Manager;
    ///
    /// struct Db;
    ///
    /// impl Manager for Db {
    ///     type Connection = ();
    ///     type Error = std::io::Error;
    ///
    ///     async fn connect(&self) -> Result<(), std::io::Error> {
    ///         Err(std::io::ErrorKind::PermissionDenied.into())
    ///     }
    ///
    ///     fn is_permanent(&self, error: &std::io::Error) -> bool {
    ///         error.kind() == std::io::ErrorKind::PermissionDenied
    ///     }
    /// }
    /// ```
    fn is_permanent(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Set by the manager of one key's pool inside a keyed pool, and by
    /// nothing else: it compiles the keyed pool's budget checks into that
    /// pool's release path and out of every other pool's.
    #[doc(hidden)]
    const KEYED: bool = false;
}
