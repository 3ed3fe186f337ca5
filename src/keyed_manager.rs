//! The [`KeyedManager`] trait: how a keyed pool opens, checks and
//! recognises broken connections for one of many endpoints (a gateway's
//! upstream hosts, shards, replicas). The same shape as [`Manager`], each
//! method taking the key.
//!
//! Invariant kept: the pool calls every method with the key of the
//! connection at hand (a connection opened for one key is never checked,
//! judged or handed out under another).
//!
//! [`Manager`]: crate::Manager

use std::future::Future;

/// How a keyed pool opens, checks and recognises broken connections, per
/// key. Implementors may write `async fn connect(&self, key: &K) -> ..`.
///
/// ```
/// use latchless::KeyedManager;
///
/// /// Connections to several upstream hosts, named by address.
/// struct Upstreams;
///
/// impl KeyedManager<String> for Upstreams {
///     type Connection = String;
///     type Error = std::io::Error;
///
///     async fn connect(&self, host: &String) -> Result<String, std::io::Error> {
///         Ok(format!("connected to {host}"))
///     }
/// }
/// ```
pub trait KeyedManager<K>: Send + Sync + 'static {
    /// The pooled connection.
    type Connection: Send + 'static;
    /// The error `connect` and `check` return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection to `key`'s endpoint.
    fn connect(
        &self,
        key: &K,
    ) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Round-trip liveness check of a connection to `key` that sat idle
    /// (see [`Manager::check`](crate::Manager::check)).
    fn check(
        &self,
        key: &K,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (key, conn);
        async { Ok(()) }
    }

    /// Cheap, synchronous test of a connection to `key`, when it is
    /// returned and when it is handed out (see
    /// [`Manager::is_broken`](crate::Manager::is_broken)).
    fn is_broken(&self, key: &K, conn: &mut Self::Connection) -> bool {
        let _ = (key, conn);
        false
    }

    /// Whether a returned connection to `key` needs cleaning before
    /// reuse (see [`Manager::needs_cleanup`](crate::Manager::needs_cleanup)).
    #[inline(always)]
    fn needs_cleanup(&self, key: &K, conn: &mut Self::Connection) -> bool {
        let _ = (key, conn);
        false
    }

    /// Cleans a returned connection to `key`, off the caller's path (see
    /// [`Manager::cleanup`](crate::Manager::cleanup)).
    fn cleanup(
        &self,
        key: &K,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (key, conn);
        async { Ok(()) }
    }

    /// Whether retrying cannot fix `error` from `key`'s endpoint (see
    /// [`Manager::is_permanent`](crate::Manager::is_permanent)).
    fn is_permanent(&self, key: &K, error: &Self::Error) -> bool {
        let _ = (key, error);
        false
    }
}
