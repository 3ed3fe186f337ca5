//! [`PgManager`]: PostgreSQL connections over tokio-postgres.
//!
//! Invariant kept: a connection whose client reports itself closed (the
//! server ended the session, the socket failed), whose driver task ended,
//! or that was marked broken, is never handed out again; the init hook has
//! run, successfully, on every connection the pool holds.
//!
//! Which connect errors are permanent (`Manager::is_permanent`, returned at
//! once instead of retried until the caller's deadline) is decided in one
//! place, [`PgError::is_permanent`]: what the next attempt would meet
//! unchanged (the credentials, the database name, the startup parameters,
//! the TLS certificates, the init hook's SQL), never what a server that is
//! full, starting or shutting down says.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::BoxFuture;
use crate::Manager;

type InitFn = Arc<
    dyn for<'a> Fn(&'a mut PgConnection) -> BoxFuture<'a, Result<(), tokio_postgres::Error>>
        + Send
        + Sync,
>;

/// Why a [`PgManager`] could not open or check a connection.
///
/// ```
/// use latchless::managers::{PgError, PgManager};
/// let err = PgManager::from_url("postgres://host:notaport/db").unwrap_err();
/// assert!(matches!(err, PgError::Config(_)));
/// assert!(err.to_string().starts_with("invalid PostgreSQL connection string"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub enum PgError {
    /// The connection string or URL did not parse.
    Config(tokio_postgres::Error),
    /// Connecting or authenticating failed (refused, unknown user or
    /// database, bad password, TLS).
    Connect(tokio_postgres::Error),
    /// The init hook failed on a new connection (which was closed).
    Init(tokio_postgres::Error),
    /// The pre-ping round trip failed.
    Check(tokio_postgres::Error),
    /// The clean-up on return ([`PgCleanup`]) failed.
    Cleanup(tokio_postgres::Error),
    /// The connection is closed or was marked broken.
    Closed,
    /// `connect` ran outside a Tokio runtime (the session's driver task
    /// needs one).
    NoRuntime,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid PostgreSQL connection string: {}", Detail(e)),
            Self::Connect(e) => write!(f, "could not connect to PostgreSQL: {}", Detail(e)),
            Self::Init(e) => write!(f, "PostgreSQL connection init hook failed: {}", Detail(e)),
            Self::Check(e) => write!(f, "PostgreSQL liveness check failed: {}", Detail(e)),
            Self::Cleanup(e) => write!(f, "PostgreSQL clean-up on return failed: {}", Detail(e)),
            Self::Closed => f.write_str("PostgreSQL connection is closed or broken"),
            Self::NoRuntime => {
                f.write_str("PgManager::connect needs a Tokio runtime to drive the session")
            }
        }
    }
}

/// A tokio-postgres error with what its `Display` leaves out: the server's
/// severity, SQLSTATE and message, or the underlying cause.
struct Detail<'a>(&'a tokio_postgres::Error);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if let Some(db) = e.as_db_error() {
            return write!(
                f,
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            );
        }
        write!(f, "{e}")?;
        let mut source = e.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl PgError {
    /// Whether retrying cannot help, so that a `get` should fail at once
    /// (what [`PgManager`]'s [`Manager::is_permanent`] answers). Yes for:
    ///
    /// - a server error with a SQLSTATE that names the request, not the
    ///   server's state: class 28 (invalid authorization: unknown role,
    ///   wrong password, no `pg_hba.conf` entry, a role that may not log
    ///   in), 3D000 (unknown database), 3F000 (unknown schema), class 42
    ///   (syntax error or access rule violation: 42501 insufficient
    ///   privilege such as a revoked `CONNECT`, 42704 an unknown parameter
    ///   in `options`, and in the init hook an undefined table, column or
    ///   function) and 22023 (an invalid parameter value), during connect
    ///   or in the init hook ([`PgError::Connect`], [`PgError::Init`]);
    /// - a configuration the client cannot use: no host, a password the
    ///   server asks for and the config lacks, an authentication method
    ///   tokio-postgres does not support, channel binding required but not
    ///   offered, `sslmode=require` against a server without TLS or from
    ///   a manager without `with_tls`; and [`PgError::Config`], a
    ///   connection string that does not parse;
    /// - (feature `postgres-tls`) a TLS handshake that failed on the
    ///   certificates or settings, as `TlsManager::is_permanent` judges
    ///   it: an untrusted or expired certificate, a name mismatch;
    /// - [`PgError::NoRuntime`]: a retry runs in the same place.
    ///
    /// No for everything a retry can fix: 53300 (too many connections) and
    /// the rest of class 53 (insufficient resources), 57P01-57P03 (the
    /// server is shutting down or starting up), class 08 (connection
    /// exception), 55000 (a database not accepting connections for now),
    /// query cancellations and timeouts in the init hook, a refused, reset
    /// or timed-out socket, a name that does not resolve, and a
    /// `target_session_attrs` mismatch (a failover may change it).
    ///
    /// tokio-postgres exposes the kind of a client-side error only through
    /// its `Display` label; `tests/managers_postgres.rs` pins each label
    /// this reads against the errors tokio-postgres really returns.
    ///
    /// ```
    /// use latchless::managers::{PgError, PgManager};
    /// let err = PgManager::from_url("host=h port=notaport").unwrap_err();
    /// assert!(err.is_permanent());
    /// assert!(!PgError::Closed.is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Config(_) | Self::NoRuntime => true,
            Self::Connect(e) => permanent_connect(e),
            Self::Init(e) => e.code().is_some_and(|c| permanent_sqlstate(c.code())),
            Self::Check(_) | Self::Cleanup(_) | Self::Closed => false,
        }
    }
}

/// SQLSTATEs that name the request (who, which database, what SQL), not
/// the server's state: the next attempt sends the same request.
fn permanent_sqlstate(code: &str) -> bool {
    code.starts_with("28") // invalid authorization specification
        || code.starts_with("42") // syntax error or access rule violation
        || matches!(code, "3D000" | "3F000" | "22023") // database, schema, parameter value
}

/// A failed `Config::connect`: see [`PgError::is_permanent`].
fn permanent_connect(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return permanent_sqlstate(code.code());
    }
    // The kind of a client-side error shows only in its `Display`, which
    // is the kind's fixed label (the cause is its `source`).
    match e.to_string().as_str() {
        // No host, "password missing", mismatched host and port lists.
        "invalid configuration" | "invalid connection string" => true,
        // An unsupported method, channel binding refused, a SCRAM exchange
        // that does not verify: the same config meets the same answer.
        "authentication error" => true,
        "error performing TLS handshake" => permanent_tls_cause(e),
        _ => false,
    }
}

/// A TLS step that failed: permanent when it failed before any I/O (a
/// decision on the config: the server has no TLS, no host name to verify,
/// no TLS connector), or on the certificates or settings.
fn permanent_tls_cause(e: &tokio_postgres::Error) -> bool {
    let Some(cause) = e.source() else {
        return false;
    };
    match cause.downcast_ref::<std::io::Error>() {
        // An I/O error: the transport's, unless it carries a TLS verdict.
        Some(io) => permanent_tls_io(io),
        None => true,
    }
}

#[cfg(feature = "postgres-tls")]
fn permanent_tls_io(io: &std::io::Error) -> bool {
    super::tls::is_permanent_tls(io)
}

#[cfg(not(feature = "postgres-tls"))]
fn permanent_tls_io(_: &std::io::Error) -> bool {
    false
}

impl StdError for PgError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Config(e)
            | Self::Connect(e)
            | Self::Init(e)
            | Self::Check(e)
            | Self::Cleanup(e) => Some(e),
            Self::Closed | Self::NoRuntime => None,
        }
    }
}

#[derive(Clone)]
enum Tls {
    None,
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Opens PostgreSQL connections with tokio-postgres, plain or (feature
/// `postgres-tls`) over rustls, and runs an optional init hook once on each.
///
/// - `connect`: connect and authenticate, spawn the connection's driver
///   task on the current Tokio runtime, run the init hook.
/// - `check` (pre-ping): an empty simple query, one cheap round trip.
/// - `is_broken`: no round trip: the client's closed state, the driver
///   task's end, or [`PgConnection::mark_broken`].
///
/// Set `application_name` in the config: it is how `pg_stat_activity`
/// tells the pool's sessions apart.
///
/// ```no_run
/// use latchless::Pool;
/// use latchless::managers::PgManager;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = PgManager::from_url("postgres://app@127.0.0.1/orders?application_name=gateway")?
///     .with_init(|conn| {
///         Box::pin(async move {
///             conn.batch_execute("SET search_path TO trading").await?;
///             conn.prepare_cached("SELECT qty FROM positions WHERE id = $1").await?;
///             Ok(())
///         })
///     });
/// let pool = Pool::builder(manager).max_size(16).build()?;
///
/// let mut conn = pool.get().await?;
/// let stmt = conn.prepare_cached("SELECT qty FROM positions WHERE id = $1").await?; // from the cache
/// let row = conn.query_one(&stmt, &[&42i64]).await;
/// let row = conn.observe(row)?; // an error that closed the session marks the connection broken
/// let qty: i64 = row.get(0);
/// # let _ = qty; Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgManager {
    config: Config,
    tls: Tls,
    init: Option<InitFn>,
    cleanup: PgCleanup,
    statement_cache: usize,
}

/// What [`PgManager`] does to a returned connection before anyone else
/// gets it ([`Manager::needs_cleanup`], [`Manager::cleanup`]): off the
/// caller's path (the release returns at once), bounded by the pool's
/// `check_timeout`; a clean-up that fails closes the connection.
///
/// tokio-postgres cannot tell whether a session is inside a transaction
/// or changed a setting, so a policy other than `None` runs on every
/// return: one round trip (`Rollback`) or three and the init hook
/// (`Reset`) during which the connection is in use, not idle.
///
/// ```
/// use latchless::managers::{PgCleanup, PgManager};
/// let m = PgManager::from_url("host=127.0.0.1 user=app").unwrap()
///     .with_cleanup(PgCleanup::Rollback);
/// assert_eq!(m.cleanup_policy(), PgCleanup::Rollback);
/// assert_eq!(PgCleanup::default(), PgCleanup::None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub enum PgCleanup {
    /// Nothing: the next holder gets the session as it was returned. The
    /// default: a [`Transaction`](tokio_postgres::Transaction) from
    /// `transaction()` rolls itself back when dropped uncommitted
    /// (cancellation included), so code that keeps to it and sets no
    /// session state needs nothing, and pays nothing.
    #[default]
    None,
    /// `ROLLBACK`: no transaction left open by a `BEGIN` run by hand
    /// survives its holder. Session settings (`SET` outside a
    /// transaction, `LISTEN`, temporary tables, prepared statements) do.
    Rollback,
    /// `ROLLBACK`, then `DISCARD ALL` (settings, `LISTEN`, temporary
    /// tables, prepared statements and advisory locks all go), then the
    /// init hook again; the statement cache is emptied. The next holder
    /// gets a session as good as new.
    Reset,
}

impl fmt::Debug for PgManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres's Config redacts the password.
        f.debug_struct("PgManager")
            .field("config", &self.config)
            .field(
                "tls",
                &match self.tls {
                    Tls::None => "none",
                    #[cfg(feature = "postgres-tls")]
                    Tls::Rustls(_) => "rustls",
                },
            )
            .field("init", &self.init.as_ref().map(|_| "<init hook>"))
            .field("cleanup", &self.cleanup)
            .field("statement_cache", &self.statement_cache)
            .finish()
    }
}

impl PgManager {
    /// A manager for this config (no TLS, no init hook).
    ///
    /// ```
    /// use latchless::managers::PgManager;
    /// let mut config = tokio_postgres::Config::new();
    /// config.host("127.0.0.1").user("app").dbname("orders").application_name("gateway");
    /// let m = PgManager::new(config);
    /// assert_eq!(m.config().get_application_name(), Some("gateway"));
    /// ```
    pub fn new(config: Config) -> Self {
        Self {
            config,
            tls: Tls::None,
            init: None,
            cleanup: PgCleanup::None,
            statement_cache: DEFAULT_STATEMENT_CACHE,
        }
    }

    /// What to do to a returned connection before reuse (default
    /// [`PgCleanup::None`]; see [`PgCleanup`] for the cost of each).
    ///
    /// ```
    /// use latchless::managers::{PgCleanup, PgManager};
    /// let m = PgManager::from_url("host=127.0.0.1 user=app").unwrap().with_cleanup(PgCleanup::Reset);
    /// assert_eq!(m.cleanup_policy(), PgCleanup::Reset);
    /// ```
    pub fn with_cleanup(mut self, policy: PgCleanup) -> Self {
        self.cleanup = policy;
        self
    }

    /// The clean-up policy set by [`with_cleanup`](Self::with_cleanup).
    ///
    /// ```
    /// use latchless::managers::{PgCleanup, PgManager};
    /// assert_eq!(PgManager::from_url("host=127.0.0.1").unwrap().cleanup_policy(), PgCleanup::None);
    /// ```
    pub fn cleanup_policy(&self) -> PgCleanup {
        self.cleanup
    }

    /// How many statements [`PgConnection::prepare_cached`] keeps per
    /// connection (default 256); past that, the least recently used one
    /// is dropped (and closed on the server). `0` caches nothing: every
    /// `prepare_cached` prepares afresh, as PgBouncer in transaction mode
    /// needs (a statement prepared on one server session is unknown to the
    /// next).
    ///
    /// ```
    /// use latchless::managers::PgManager;
    /// let m = PgManager::from_url("host=127.0.0.1").unwrap().with_statement_cache(0);
    /// assert_eq!(m.statement_cache(), 0);
    /// ```
    pub fn with_statement_cache(mut self, capacity: usize) -> Self {
        self.statement_cache = capacity;
        self
    }

    /// The statement cache's capacity per connection.
    ///
    /// ```
    /// use latchless::managers::PgManager;
    /// assert_eq!(PgManager::from_url("host=127.0.0.1").unwrap().statement_cache(), 256);
    /// ```
    pub fn statement_cache(&self) -> usize {
        self.statement_cache
    }

    /// A manager from a URL (`postgres://user:pass@host:port/db?opts`) or a
    /// `key=value` connection string. A string that does not parse is
    /// [`PgError::Config`], never a panic.
    ///
    /// ```
    /// use latchless::managers::PgManager;
    /// let m = PgManager::from_url("host=127.0.0.1 user=app password=hunter2 dbname=orders").unwrap();
    /// assert!(!format!("{m:?}").contains("hunter2"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self, PgError> {
        Config::from_str(url)
            .map(Self::new)
            .map_err(PgError::Config)
    }

    /// Run `init` once on every new connection, before the pool hands it
    /// out (session setup: `SET search_path`, `SET statement_timeout`,
    /// [`PgConnection::prepare_cached`] statements). If it fails, the
    /// connection is closed and `connect` returns [`PgError::Init`].
    ///
    /// ```
    /// # use latchless::managers::PgManager;
    /// let m = PgManager::from_url("host=127.0.0.1 user=app").unwrap()
    ///     .with_init(|conn| Box::pin(conn.batch_execute("SET statement_timeout = '2s'")));
    /// # drop(m);
    /// ```
    pub fn with_init<F>(mut self, init: F) -> Self
    where
        F: for<'a> Fn(&'a mut PgConnection) -> BoxFuture<'a, Result<(), tokio_postgres::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.init = Some(Arc::new(init));
        self
    }

    /// Connect over TLS with this rustls config (feature `postgres-tls`).
    /// With `sslmode=require` in the config, a server without TLS is a
    /// [`PgError::Connect`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use latchless::managers::PgManager;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let tls = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions().unwrap()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let m = PgManager::from_url("host=db.internal user=app sslmode=require").unwrap().with_tls(tls);
    /// # drop(m);
    /// ```
    #[cfg(feature = "postgres-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres-tls")))]
    pub fn with_tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config));
        self
    }

    /// The connection config.
    ///
    /// ```
    /// # use latchless::managers::PgManager;
    /// let m = PgManager::from_url("host=127.0.0.1 user=app dbname=orders").unwrap();
    /// assert_eq!(m.config().get_dbname(), Some("orders"));
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Manager for PgManager {
    type Connection = PgConnection;
    type Error = PgError;

    async fn connect(&self) -> Result<PgConnection, PgError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PgError::NoRuntime)?;
        let (client, driver) = match &self.tls {
            Tls::None => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(PgError::Connect)?;
                (client, runtime.spawn(drive(connection)))
            }
            #[cfg(feature = "postgres-tls")]
            Tls::Rustls(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(PgError::Connect)?;
                (client, runtime.spawn(drive(connection)))
            }
        };
        let mut conn = PgConnection {
            client,
            broken: false,
            statements: HashMap::new(),
            capacity: self.statement_cache,
            uses: 0,
            driver,
        };
        if let Some(init) = &self.init {
            init(&mut conn).await.map_err(PgError::Init)?;
        }
        Ok(conn)
    }

    async fn check(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        if self.is_broken(conn) {
            return Err(PgError::Closed);
        }
        match conn.client.simple_query("").await {
            Ok(_) => Ok(()),
            Err(e) => {
                conn.broken = true;
                Err(PgError::Check(e))
            }
        }
    }

    fn is_broken(&self, conn: &mut PgConnection) -> bool {
        conn.is_marked_broken() || conn.is_closed()
    }

    /// Whether a [`PgCleanup`] policy is set: one load.
    #[inline]
    fn needs_cleanup(&self, _conn: &mut PgConnection) -> bool {
        self.cleanup != PgCleanup::None
    }

    /// Runs the [`PgCleanup`] policy: `ROLLBACK`, and for `Reset`
    /// `DISCARD ALL` (a statement of its own: it may not run inside a
    /// transaction block) and the init hook on an emptied statement cache.
    async fn cleanup(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        if self.cleanup == PgCleanup::None {
            return Ok(());
        }
        let rolled_back = conn.client.batch_execute("ROLLBACK").await;
        conn.observe(rolled_back).map_err(PgError::Cleanup)?;
        if self.cleanup == PgCleanup::Reset {
            let discarded = conn.client.batch_execute("DISCARD ALL").await;
            conn.observe(discarded).map_err(PgError::Cleanup)?;
            conn.statements.clear();
            if let Some(init) = &self.init {
                init(conn).await.map_err(PgError::Init)?;
            }
        }
        Ok(())
    }

    /// [`PgError::is_permanent`]: bad credentials, an unknown database, a
    /// config the client cannot use, a rejected certificate, an init hook
    /// whose SQL fails on its own terms; not a server that is full,
    /// starting or stopping, nor a network failure.
    ///
    /// ```
    /// use latchless::Manager;
    /// use latchless::managers::{PgError, PgManager};
    /// let m = PgManager::from_url("host=127.0.0.1 user=app").unwrap();
    /// assert!(m.is_permanent(&PgError::NoRuntime));
    /// assert!(!m.is_permanent(&PgError::Closed));
    /// ```
    fn is_permanent(&self, error: &PgError) -> bool {
        error.is_permanent()
    }
}

/// The connection's driver task: ends when the session ends.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "latchless: PostgreSQL connection ended with an error");
    }
}

/// A pooled PostgreSQL session: derefs to the tokio-postgres [`Client`],
/// keeps a per-connection prepared-statement cache, and records its own
/// brokenness ([`mark_broken`](Self::mark_broken), [`observe`](Self::observe)).
///
/// Dropping it drops the client, which ends the session (the driver task
/// sends `Terminate` and exits).
///
/// ```no_run
/// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
/// let mut conn = pool.get().await?;
/// let rows = conn.query("SELECT 1", &[]).await;
/// let rows = conn.observe(rows)?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgConnection {
    client: Client,
    broken: bool,
    /// Cached statements with the use count at their last use (the least
    /// recently used goes first when the cache is full).
    statements: HashMap<String, (Statement, u64)>,
    /// The cache's capacity (`PgManager::with_statement_cache`).
    capacity: usize,
    /// `prepare_cached` calls so far: the cache's clock.
    uses: u64,
    driver: JoinHandle<()>,
}

/// The statement cache's default capacity per connection.
const DEFAULT_STATEMENT_CACHE: usize = 256;

impl fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnection")
            .field("closed", &self.client.is_closed())
            .field("broken", &self.broken)
            .field("cached_statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

impl Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl PgConnection {
    /// The tokio-postgres client (also reachable through `Deref`).
    ///
    /// ```no_run
    /// # async fn demo(conn: &latchless::managers::PgConnection) -> Result<(), tokio_postgres::Error> {
    /// conn.client().batch_execute("SELECT 1").await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Mark the connection broken: the pool closes it when it is returned.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// conn.mark_broken();
    /// assert!(conn.is_marked_broken());
    /// # Ok(()) }
    /// ```
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether a failed request ([`observe`](Self::observe)) or
    /// [`mark_broken`](Self::mark_broken) marked this connection, as on
    /// the other managers' connections.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = pool.get().await?;
    /// assert!(!conn.is_marked_broken());
    /// # Ok(()) }
    /// ```
    pub fn is_marked_broken(&self) -> bool {
        self.broken
    }

    /// Whether the session is gone: the client says it closed, or its
    /// driver task ended. No round trip. The manager's `is_broken` is
    /// this or [`is_marked_broken`](Self::is_marked_broken).
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = pool.get().await?;
    /// assert!(!conn.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.driver.is_finished()
    }

    /// Pass a request's result through, marking the connection broken if
    /// the error means the session is gone or unusable: the client closed,
    /// an I/O error, or a server error of class 08 (connection exception)
    /// or 57P01-57P03 (the server is shutting the session down). An
    /// ordinary SQL error (syntax, constraint) leaves it healthy.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// let n = conn.execute("UPDATE t SET x = 1", &[]).await;
    /// let n = conn.observe(n)?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub fn observe<T>(
        &mut self,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        if let Err(e) = &result {
            if session_lost(e) || self.client.is_closed() {
                self.broken = true;
            }
        }
        result
    }

    /// Prepare `sql` once per connection and cache the statement (init
    /// hooks can warm the cache), keeping at most
    /// [`PgManager::with_statement_cache`] statements: the least recently
    /// used goes first. A failure that lost the session marks the
    /// connection broken.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// let stmt = conn.prepare_cached("SELECT $1::int4 + 1").await?;
    /// let row = conn.query_one(&stmt, &[&41i32]).await?;
    /// assert_eq!(row.get::<_, i32>(0), 42);
    /// # Ok(()) }
    /// ```
    pub async fn prepare_cached(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        self.uses += 1;
        let now = self.uses;
        if let Some((stmt, used)) = self.statements.get_mut(sql) {
            *used = now;
            return Ok(stmt.clone());
        }
        let prepared = self.client.prepare(sql).await;
        let stmt = self.observe(prepared)?;
        if self.capacity == 0 {
            return Ok(stmt);
        }
        if self.statements.len() >= self.capacity {
            // A miss prepares on the server anyway: a scan of the cache
            // beside that round trip costs nothing worth a second index.
            let oldest = self
                .statements
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(sql, _)| sql.clone());
            if let Some(oldest) = oldest {
                self.statements.remove(&oldest);
            }
        }
        self.statements.insert(sql.to_owned(), (stmt.clone(), now));
        Ok(stmt)
    }

    /// How many statements the cache holds now.
    ///
    /// ```no_run
    /// # async fn demo(pool: latchless::Pool<latchless::managers::PgManager>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = pool.get().await?;
    /// conn.prepare_cached("SELECT 1").await?;
    /// assert!(conn.cached_statements() >= 1);
    /// # Ok(()) }
    /// ```
    pub fn cached_statements(&self) -> usize {
        self.statements.len()
    }
}

/// The error means the session is gone (or going).
fn session_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    // No SQLSTATE: a transport or protocol error.
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}
