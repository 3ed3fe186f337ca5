//! [`RedisManager`]: Redis connections over the redis crate's multiplexed
//! async connection (one socket per pooled connection).
//!
//! Invariant kept: a connection on which a request failed with an I/O
//! error, a dropped connection, a timeout or another error after which the
//! redis crate says to reconnect is never handed out again (the client
//! does not report itself closed, so the wrapper records it).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    Value,
};

use crate::Manager;

/// Opens Redis connections.
///
/// - `connect`: one multiplexed connection (its own socket and driver
///   task), bounded by [`connect_timeout`](Self::connect_timeout), then
///   `CLIENT SETNAME` if a [`client_name`](Self::client_name) is set.
/// - `check` (pre-ping): `PING`.
/// - `is_broken`: the connection's broken mark, set by any request through
///   it that failed with an I/O, dropped-connection or timeout error (or
///   [`RedisConnection::mark_broken`]). No round trip.
///
/// ```no_run
/// use latchless::Pool;
/// use latchless::managers::RedisManager;
/// use redis::AsyncCommands;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = RedisManager::new("redis://127.0.0.1:6379/0")?.client_name("gateway");
/// let pool = Pool::builder(manager).max_size(8).build()?;
/// let mut conn = pool.get().await?;
/// let () = conn.set("px:EURUSD", 1.0842).await?;
/// let px: f64 = conn.get("px:EURUSD").await?;
/// # let _ = px; Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisManager {
    client: Client,
    client_name: Option<String>,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.client.get_connection_info();
        f.debug_struct("RedisManager")
            .field("addr", info.addr())
            .field("db", &info.redis_settings().db())
            .field("username", &info.redis_settings().username())
            .field(
                "password",
                &info.redis_settings().password().map(|_| "<redacted>"),
            )
            .field("client_name", &self.client_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisManager {
    /// A manager for this server: a URL (`redis://[user:pass@]host:port/db`)
    /// or any `IntoConnectionInfo`. A bad URL is an error, never a panic.
    /// Defaults: connect timeout 1 s, response timeout 500 ms.
    ///
    /// ```
    /// use latchless::managers::RedisManager;
    /// assert!(RedisManager::new("not a url").is_err());
    /// let m = RedisManager::new("redis://app:s3cret@127.0.0.1:6379/2").unwrap();
    /// assert!(!format!("{m:?}").contains("s3cret"));
    /// ```
    pub fn new<T: IntoConnectionInfo>(info: T) -> Result<Self, RedisError> {
        Ok(Self {
            client: Client::open(info)?,
            client_name: None,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Some(Duration::from_millis(500)),
        })
    }

    /// `CLIENT SETNAME` on every new connection: how `CLIENT LIST` tells the
    /// pool's connections apart.
    ///
    /// ```
    /// # use latchless::managers::RedisManager;
    /// let m = RedisManager::new("redis://127.0.0.1").unwrap().client_name("gateway");
    /// # drop(m);
    /// ```
    pub fn client_name(mut self, name: &str) -> Self {
        self.client_name = Some(name.to_owned());
        self
    }

    /// Bound on opening one connection (TCP, handshake, auth). Default 1 s.
    ///
    /// ```
    /// # use latchless::managers::RedisManager;
    /// let m = RedisManager::new("redis://127.0.0.1").unwrap().connect_timeout(std::time::Duration::from_secs(2));
    /// # drop(m);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on one request's reply (`None`: none). Default 500 ms. A
    /// request that times out marks its connection broken.
    ///
    /// ```
    /// # use latchless::managers::RedisManager;
    /// let m = RedisManager::new("redis://127.0.0.1").unwrap().response_timeout(None);
    /// # drop(m);
    /// ```
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The redis client (connection info).
    ///
    /// ```
    /// # use latchless::managers::RedisManager;
    /// let m = RedisManager::new("redis://127.0.0.1/3").unwrap();
    /// assert_eq!(m.client().get_connection_info().redis_settings().db(), 3);
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Manager for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(self.response_timeout);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut conn = RedisConnection {
            conn,
            broken: false,
        };
        if let Some(name) = &self.client_name {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(conn)
    }

    async fn check(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn is_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken
    }
}

/// A pooled Redis connection: implements the redis crate's
/// [`ConnectionLike`], so `redis::AsyncCommands`, `Cmd::query_async` and
/// `Pipeline::query_async` work on it, and every request through it that
/// fails in a way that leaves the connection unusable marks it broken.
///
/// ```no_run
/// # async fn demo(pool: latchless::Pool<latchless::managers::RedisManager>) -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn = pool.get().await?;
/// let n: i64 = redis::cmd("INCR").arg("orders:seq").query_async(&mut *conn).await?;
/// let (a, b): (i64, i64) = redis::pipe().get("a").get("b").query_async(&mut *conn).await?;
/// # let _ = (n, a, b); Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisConnection {
    conn: MultiplexedConnection,
    broken: bool,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Mark the connection broken: the pool closes it when it is returned.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::RedisManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// conn.mark_broken();
    /// assert!(conn.is_marked_broken());
    /// # Ok(()) }
    /// ```
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether a failed request or [`mark_broken`](Self::mark_broken)
    /// marked this connection.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::RedisManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = pool.get().await?;
    /// assert!(!conn.is_marked_broken());
    /// # Ok(()) }
    /// ```
    pub fn is_marked_broken(&self) -> bool {
        self.broken
    }

    /// The underlying multiplexed connection. Requests sent straight on it
    /// (or on a clone of it) are not tracked.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::RedisManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// conn.get_mut().set_response_timeout(std::time::Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    pub fn get_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }

    fn note<T>(&mut self, result: &Result<T, RedisError>) {
        if let Err(e) = result {
            if connection_lost(e) {
                self.broken = true;
            }
        }
    }
}

/// After this error the connection must not be reused.
fn connection_lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.note(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(cmd, offset, count).await;
            self.note(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
