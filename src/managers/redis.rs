//! [`RedisManager`]: Redis connections over the redis crate's multiplexed
//! async connection (one socket per pooled connection).
//!
//! Invariant kept: a connection on which a request failed with an I/O
//! error, a dropped connection, a timeout or another error after which the
//! redis crate says to reconnect is never handed out again (the client
//! does not report itself closed, so the wrapper records it); a connect
//! error is permanent (`Manager::is_permanent`) only when it names the
//! credentials or the config, which the next attempt would send unchanged.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, ServerErrorKind, Value,
};

use crate::Manager;

/// Opens Redis connections.
///
/// - `connect`: one multiplexed connection (its own socket and driver
///   task), bounded by [`connect_timeout`](Self::connect_timeout), then
///   `CLIENT SETNAME` if a [`client_name`](Self::client_name) is set, or
///   else `PING`: one round trip that proves the session usable, so that
///   a server demanding credentials the URL lacks (`NOAUTH`) fails the
///   connect rather than every request on the connection.
/// - `check` (pre-ping): `PING`.
/// - `is_broken`: the connection's broken mark, set by any request through
///   it that failed with an I/O, dropped-connection or timeout error (or
///   [`RedisConnection::mark_broken`]). No round trip.
///
/// [`is_permanent`](Manager::is_permanent) (a `get` returns the error at
/// once instead of retrying until its deadline) says yes for:
///
/// - rejected or missing credentials: every error reply to `AUTH` (the
///   redis crate reports them all as `AuthenticationFailed`: `WRONGPASS`,
///   and `AUTH <password>` sent to a server with no password configured),
///   and the server's `WRONGPASS`, `NOAUTH` (a password is required and
///   the URL has none) and `NOPERM` (the user may not run `HELLO`,
///   `CLIENT SETNAME`, `PING` or `SELECT`) replies;
/// - a `SELECT` the server refuses for good: a database index out of range,
///   or any `SELECT` on a cluster node;
/// - a config the client cannot use (`InvalidClientConfig`) and RESP3
///   asked of a server without `HELLO`.
///
/// Everything else is retried: a refused, reset or timed-out connection, a
/// server that drops new clients (`max number of clients reached`), one
/// loading its dataset (`LOADING`), a replica or cluster that is not ready
/// (`MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`).
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
        // The redis crate ignores the replies to its own setup commands, so
        // a missing password shows only at the first command of ours.
        let confirm = match &self.client_name {
            Some(name) => {
                let mut setname = redis::cmd("CLIENT");
                setname.arg("SETNAME").arg(name);
                setname
            }
            None => redis::cmd("PING"),
        };
        confirm.query_async::<()>(&mut conn).await?;
        Ok(conn)
    }

    async fn check(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn is_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken
    }

    /// `true` for rejected or missing credentials, a database index the
    /// server refuses, and an unusable config (the list is in the type's
    /// docs); `false` for the network's and the server's passing states.
    ///
    /// ```
    /// use latchless::Manager;
    /// use latchless::managers::RedisManager;
    /// let m = RedisManager::new("redis://127.0.0.1").unwrap();
    /// let reply = |resp: &[u8]| redis::parse_redis_value(resp).unwrap().extract_error().unwrap_err();
    /// assert!(m.is_permanent(&reply(b"-NOAUTH Authentication required.\r\n")));
    /// assert!(!m.is_permanent(&reply(b"-LOADING Redis is loading the dataset in memory\r\n")));
    /// let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    /// assert!(!m.is_permanent(&refused));
    /// ```
    fn is_permanent(&self, error: &RedisError) -> bool {
        permanent(error)
    }
}

/// See [`RedisManager`]'s docs for the list and the reasons.
fn permanent(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::RESP3NotSupported => return true,
        _ => {}
    }
    if matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM")) {
        return true;
    }
    // A refused `SELECT` keeps only the server's message, not its code.
    e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError)
        && e.detail().is_some_and(|d| {
            d.contains("DB index is out of range")
                || d.contains("SELECT is not allowed in cluster mode")
                || d.starts_with("Authentication required") // NOAUTH
                || d.contains("has no permissions to run") // NOPERM
        })
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
