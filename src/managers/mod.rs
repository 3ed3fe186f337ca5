//! Ready-made [`Manager`](crate::Manager)s for the servers services talk to,
//! each behind a cargo feature (all off by default, so the core crate stays
//! light):
//!
//! | feature | manager | connection |
//! | --- | --- | --- |
//! | `tcp` | `TcpManager` | `TcpConnection` over tokio's `TcpStream` |
//! | `tls` | `TlsManager` | `TlsConnection`: rustls over the TCP manager |
//! | `postgres` | `PgManager` | `PgConnection` over tokio-postgres |
//! | `postgres-tls` | `PgManager::with_tls` | the same, over rustls |
//! | `redis` | `RedisManager` | `RedisConnection` over the redis crate |
//! | `http` | `HttpManager` (a `KeyedManager` keyed by `Origin`; `for_origin` for one upstream) | `HttpConnection`: hyper's HTTP/1.1 client connection over the TCP and TLS managers |
//!
//! With `http`, `send_with_retry` sends a request and sends it again on
//! another connection only when it was certainly not written, and a
//! `Router` mounts keyed pools by scheme or URL prefix (the longest
//! prefix wins) and routes each request by its URL:
//!
//! ```no_run
//! # #[cfg(feature = "http")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use latchless::KeyedPool;
//! use latchless::managers::{HttpManager, Router};
//!
//! let upstreams = KeyedPool::builder(HttpManager::new()).max_per_key(32).max_total(256).build()?;
//! let router = Router::new().mount("http://", upstreams);
//! let request = latchless::http::Request::get("http://10.0.0.7:8080/health").body("")?;
//! let response = router.send(request, 2).await?;
//! println!("{}", response.status());
//! # Ok(()) }
//! ```
//!
//! # One failed request costs one connection
//!
//! Every connection type here records its own brokenness: a request through
//! it that fails with an I/O error (or the client reporting itself closed)
//! sets a flag, and each has a `mark_broken` method for the cases only the
//! caller can see (a request cancelled half-way through a byte protocol, a
//! reply that makes no sense). The manager's
//! [`is_broken`](crate::Manager::is_broken) reads that flag when the
//! connection is returned, so the pool closes it instead of handing it to
//! the next caller: one failed request costs one connection, never two.
//! The managers' [`check`](crate::Manager::check) (the pre-ping, see
//! `Builder::check_after_idle`) catches connections that died while idle.
//!
//! No manager's `Debug` output shows a password, a token or a private key.
//!
//! # Permanent errors fail at once
//!
//! Each manager implements [`is_permanent`](crate::Manager::is_permanent):
//! a connect error that the next attempt would meet unchanged is returned
//! by `get` and `warm_up` at once, as `PoolError::Connect`, instead of
//! being retried with backoff until the caller's deadline, whatever
//! `fail_fast` says, and counted in `Metrics::permanent_errors`. The rule
//! is the same everywhere: an error that names what the client sends
//! (credentials, database, certificates, settings) is permanent; one that
//! names the state of the network or the server (refused, reset, timed
//! out, full, starting, shutting down) is retried, since that state
//! passes.
//!
//! | manager | permanent |
//! | --- | --- |
//! | `TcpManager` | an empty address list, or no well-formed `host:port` in it |
//! | `TlsManager` | a rejected certificate (unknown issuer, expired, name mismatch, ...), no shared version, cipher suite or ALPN protocol, an alert about our certificate; and the TCP manager's |
//! | `PgManager` | SQLSTATE class 28 (role, password, `pg_hba.conf`), 3D000 (database), class 42 (privilege, unknown parameter, the init hook's SQL), 3F000, 22023; a config the client cannot use; a rejected TLS certificate |
//! | `RedisManager` | `AUTH` refused (`WRONGPASS`, no password configured), `NOAUTH`, `NOPERM`, a database index out of range, an unusable config |
//! | `HttpManager` | an origin whose host cannot be a TLS server name; the TLS and TCP managers' |
//!
//! Each manager's docs give the full list and what stays retried.
//!
//! ```no_run
//! # #[cfg(feature = "tcp")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use latchless::Pool;
//! use latchless::managers::TcpManager;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let pool = Pool::builder(TcpManager::new(["127.0.0.1:7000"])).max_size(8).build()?;
//! let mut conn = pool.get().await?;
//! conn.write_all(b"PING\r\n").await?;
//! let mut reply = [0u8; 7];
//! conn.read_exact(&mut reply).await?; // an error here marks `conn` broken
//! # Ok(()) }
//! ```
#![cfg(any(feature = "tcp", feature = "postgres", feature = "redis"))]

use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future borrowing for `'a`: what the user hooks
/// (`TcpManager::with_check`, `PgManager::with_init`, ...) return.
///
/// ```
/// use latchless::managers::BoxFuture;
/// let f: BoxFuture<'_, u32> = Box::pin(async { 7 });
/// # drop(f);
/// ```
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "tcp", feature = "postgres", feature = "redis")))
)]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[cfg(feature = "tcp")]
mod tcp;
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use tcp::{TcpConnection, TcpManager};

#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{TlsBuilder, TlsConnection, TlsManager};

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::{
    HttpBuilder, HttpConnection, HttpError, HttpManager, HttpOriginManager, Origin, OriginError,
    RequestError, ResponseBody, Router, send_with_retry,
};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PgCleanup, PgConnection, PgError, PgManager};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisConnection, RedisManager};

/// The rustls crate this module is built against (for
/// `TlsManager::new` and `PgManager::with_tls` configs).
///
/// ```
/// let provider = latchless::managers::rustls::crypto::ring::default_provider();
/// # drop(provider);
/// ```
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;
