//! [`HttpManager`]: HTTP/1.1 connections over hyper's client connection
//! API, keyed by [`Origin`] (scheme, host, port); and [`send_with_retry`],
//! which sends a request again on another connection when the first was
//! closed before the request was written.
//!
//! Built on the other managers: the [`TcpManager`](super::TcpManager)
//! opens the socket (resolution, connect timeout, socket options) and its
//! `poll(2)` probe tells a socket the server closed; the
//! [`TlsManager`](super::TlsManager)'s builder makes the rustls config
//! (roots, client certificate; ALPN `http/1.1` added here) and its
//! judgement says which TLS errors are permanent. The handshake itself
//! runs here, over a socket shared with the probe (`socket.rs`).
//!
//! Invariants kept: a connection is opened for one origin and only ever
//! judged and used for it; a connection hyper or the server closed, that
//! the server said it closes, that sat idle past the server's keep-alive
//! timeout, or that an exchange failed on, is reported broken and never
//! handed out again (see [`HttpConnection::is_broken`]); a request is sent
//! a second time only when it was certainly not written the first time.
//! A connect error is permanent only when the next attempt would meet it
//! unchanged (the TLS manager's judgement: certificates, shared settings;
//! an origin whose host cannot be a TLS server name).
//!
//! # Example
//!
//! One pool per origin ([`HttpManager::for_origin`]), a request with the
//! retry helper, the body read to its end (which is what frees the
//! connection):
//!
//! ```no_run
//! use latchless::Pool;
//! use latchless::managers::{send_with_retry, HttpManager, Origin};
//! use latchless::{http, http_body_util::BodyExt};
//!
//! # async fn demo(ca_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let manager = HttpManager::builder()
//!     .add_root_pem(ca_pem)
//!     .connect_timeout(std::time::Duration::from_secs(2))
//!     .build()?;
//! let origin: Origin = "https://api.internal:8443".parse()?;
//! let pool = Pool::builder(manager.for_origin(origin)).max_size(32).build()?;
//!
//! let request = http::Request::get("/v1/status").body("")?;
//! let response = send_with_retry(|| pool.get(), request, 3).await?;
//! let status = response.status();
//! let body = response.into_body().collect().await?.to_bytes();
//! println!("{status}: {} bytes", body.len());
//! # Ok(()) }
//! ```
//!
//! The keyed pool takes [`HttpManager`] itself (it implements
//! [`KeyedManager<Origin>`]); the retry helper then gets its connections
//! with `|| pool.get(&origin)`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{TcpManager, TlsBuilder, TlsManager};
use crate::{KeyedManager, Manager};

mod connection;
mod origin;
mod retry;
mod router;
mod socket;

pub use connection::HttpConnection;
pub use origin::{Origin, OriginError};
pub use retry::{RequestError, ResponseBody, send_with_retry};
pub use router::Router;

/// The ALPN protocol offered on every TLS connection.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Opens HTTP/1.1 connections to any [`Origin`]: a [`KeyedManager`] whose
/// key is the origin, for a keyed pool of many upstreams, or, through
/// [`for_origin`](Self::for_origin), a [`Manager`] for a pool of one.
///
/// - `connect(&origin)`: a TCP connect to the origin's host and port (its
///   name resolved afresh, every address tried in turn, each attempt
///   bounded by [`connect_timeout`](HttpBuilder::connect_timeout),
///   `TCP_NODELAY` and TCP keepalive as configured), then for `https` a
///   rustls handshake with the origin's host as server name (SNI and the
///   name the certificate must carry), the roots you gave, and ALPN
///   `http/1.1`; then hyper's HTTP/1.1 handshake, and a task spawned on
///   the current Tokio runtime to drive the connection. Needs a Tokio
///   runtime with I/O and time enabled.
/// - `is_broken`: [`HttpConnection::is_broken`], no round trip: closed
///   (by hyper, or by the server as the kernel reports it), closing by the
///   server's word, idle past the server's keep-alive timeout, an
///   abandoned exchange, or marked. The kernel is asked at hand-out, not
///   as a connection comes back from an exchange that ended just now.
/// - `check` (the pool's pre-ping): `is_broken`, then hyper's `ready`,
///   which fails on a closed connection. No request is sent: HTTP has no
///   ping, and a request would reach the application.
/// - `is_permanent`: see [`KeyedManager::is_permanent`] below.
///
/// No roots are trusted by default: give the CAs of the `https` servers
/// you talk to ([`add_root_pem`](HttpBuilder::add_root_pem)) or a whole
/// rustls config ([`tls_config`](HttpBuilder::tls_config)).
///
/// ```
/// use latchless::managers::HttpManager;
/// let manager = HttpManager::builder()
///     .connect_timeout(std::time::Duration::from_secs(1))
///     .nodelay(true)
///     .build()?;
/// # drop(manager);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct HttpManager {
    settings: Arc<Settings>,
}

/// What every connect of one manager shares.
struct Settings {
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    /// The rustls config of `https` origins, ALPN `http/1.1` set.
    tls: Arc<ClientConfig>,
    http1: http1::Builder,
}

impl fmt::Debug for HttpManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("HttpManager")
            .field("connect_timeout", &s.connect_timeout)
            .field("nodelay", &s.nodelay)
            .field("keepalive", &s.keepalive)
            .field("alpn", &s.tls.alpn_protocols)
            .field("client_auth", &s.tls.client_auth_cert_resolver.has_certs())
            .finish_non_exhaustive()
    }
}

impl Default for HttpManager {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpManager {
    /// A manager with the defaults of [`builder`](Self::builder) and no
    /// trusted root (enough for `http` origins).
    ///
    /// ```
    /// let manager = latchless::managers::HttpManager::new();
    /// # drop(manager);
    /// ```
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default HTTP manager settings are valid")
    }

    /// Configure a manager. Defaults: connect timeout 5 s per address
    /// tried, `TCP_NODELAY` on, TCP keepalive after 60 s idle, no trusted
    /// root, no client certificate, hyper's default HTTP/1.1 settings.
    ///
    /// ```
    /// use latchless::managers::HttpManager;
    /// let err = HttpManager::builder().add_root_pem(b"not PEM").build().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn builder() -> HttpBuilder {
        HttpBuilder {
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            tls: Tls::Pem(Box::new(tls_builder())),
            http1: http1::Builder::new(),
        }
    }

    /// A [`Manager`] for one origin, for a [`Pool`](crate::Pool) of
    /// connections to a single upstream; it shares this manager's
    /// settings.
    ///
    /// ```
    /// use latchless::Pool;
    /// use latchless::managers::HttpManager;
    /// let origin = "http://127.0.0.1:8080".parse()?;
    /// let pool = Pool::builder(HttpManager::new().for_origin(origin)).build()?;
    /// # drop(pool);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_origin(&self, origin: Origin) -> HttpOriginManager {
        HttpOriginManager {
            manager: self.clone(),
            origin,
        }
    }

    /// The rustls config of `https` connections (ALPN `http/1.1`).
    ///
    /// ```
    /// let manager = latchless::managers::HttpManager::new();
    /// assert_eq!(manager.tls_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    /// ```
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.settings.tls
    }

    /// The TCP manager for one connect to `origin`.
    fn tcp(&self, origin: &Origin) -> TcpManager {
        let s = &self.settings;
        TcpManager::new([origin.address()])
            .connect_timeout(s.connect_timeout)
            .nodelay(s.nodelay)
            .keepalive(s.keepalive)
    }

    /// hyper's handshake over an open stream, and the task that drives the
    /// connection from then on.
    async fn handshake<S>(
        &self,
        origin: &Origin,
        stream: S,
        socket: std::sync::Weak<TcpStream>,
    ) -> Result<HttpConnection, HttpError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = self
            .settings
            .http1
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(HttpError::Handshake)?;
        let name = origin.to_string();
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(origin = %name, error = %e, "latchless: HTTP connection ended");
            }
        });
        Ok(HttpConnection::new(origin.clone(), sender, driver, socket))
    }
}

impl KeyedManager<Origin> for HttpManager {
    type Connection = HttpConnection;
    type Error = HttpError;

    async fn connect(&self, origin: &Origin) -> Result<HttpConnection, HttpError> {
        // Judged before connecting: no connect can fix the name.
        let server_name = if origin.is_https() {
            let name = ServerName::try_from(origin.server_name().to_owned()).map_err(|_| {
                HttpError::Origin(OriginError::InvalidHost(origin.server_name().to_owned()))
            })?;
            Some(name)
        } else {
            None
        };
        let stream = self.tcp(origin).open().await.map_err(HttpError::Connect)?;
        let (stream, socket) = socket::SharedTcp::new(stream);
        match server_name {
            None => self.handshake(origin, stream, socket).await,
            Some(name) => {
                let connector = TlsConnector::from(self.settings.tls.clone());
                let stream = connector.connect(name, stream).await.map_err(|cause| {
                    let kind = cause.kind();
                    let context = format!("TLS handshake with {origin}");
                    HttpError::Connect(io::Error::new(kind, TlsHandshake { context, cause }))
                })?;
                self.handshake(origin, stream, socket).await
            }
        }
    }

    async fn check(&self, _origin: &Origin, conn: &mut HttpConnection) -> Result<(), HttpError> {
        if conn.is_broken() {
            return Err(HttpError::Closed);
        }
        if conn.sender().ready().await.is_err() {
            conn.mark_broken();
            return Err(HttpError::Closed);
        }
        Ok(())
    }

    fn is_broken(&self, _origin: &Origin, conn: &mut HttpConnection) -> bool {
        conn.judge()
    }

    /// `true` when the next connect would fail the same way: the server's
    /// certificate was rejected (untrusted, expired, not for this host),
    /// the two sides share no TLS version, cipher suite or ALPN protocol
    /// (a server that does not speak `http/1.1` over TLS), the server
    /// rejected our client certificate (the full list is the
    /// [`TlsManager`]'s), or the origin's host is not a valid TLS server
    /// name. A refused, reset or timed-out connect, or a name that does
    /// not resolve, is retried.
    ///
    /// ```
    /// use latchless::KeyedManager;
    /// use latchless::managers::{HttpError, HttpManager, Origin};
    ///
    /// let manager = HttpManager::new();
    /// let origin: Origin = "https://localhost".parse().unwrap();
    /// let refused = HttpError::Connect(std::io::ErrorKind::ConnectionRefused.into());
    /// assert!(!manager.is_permanent(&origin, &refused));
    /// let untrusted = HttpError::Connect(std::io::Error::new(
    ///     std::io::ErrorKind::InvalidData,
    ///     rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
    /// ));
    /// assert!(manager.is_permanent(&origin, &untrusted));
    /// ```
    fn is_permanent(&self, _origin: &Origin, error: &HttpError) -> bool {
        match error {
            HttpError::Origin(_) => true,
            HttpError::Connect(e) => {
                super::tcp::is_bad_address(e) || super::tls::is_permanent_tls(e)
            }
            HttpError::Handshake(_) | HttpError::Closed => false,
        }
    }
}

/// An [`HttpManager`] bound to one [`Origin`]: a [`Manager`], for a
/// [`Pool`](crate::Pool) of connections to a single upstream. Made by
/// [`HttpManager::for_origin`]; every method is the keyed manager's for
/// that origin.
///
/// ```no_run
/// use latchless::Pool;
/// use latchless::managers::{HttpManager, HttpOriginManager};
///
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager: HttpOriginManager = HttpManager::new().for_origin("http://10.0.0.7:9000".parse()?);
/// assert_eq!(manager.origin().port(), 9000);
/// let pool = Pool::builder(manager).max_size(8).build()?;
/// # drop(pool); Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct HttpOriginManager {
    manager: HttpManager,
    origin: Origin,
}

impl HttpOriginManager {
    /// The origin every connection goes to.
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let m = HttpManager::new().for_origin("https://example.com".parse().unwrap());
    /// assert_eq!(m.origin().to_string(), "https://example.com:443");
    /// ```
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The keyed manager underneath (its settings).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let m = HttpManager::new().for_origin("https://example.com".parse().unwrap());
    /// assert!(m.manager().tls_config().alpn_protocols.len() == 1);
    /// ```
    pub fn manager(&self) -> &HttpManager {
        &self.manager
    }
}

impl Manager for HttpOriginManager {
    type Connection = HttpConnection;
    type Error = HttpError;

    fn connect(&self) -> impl Future<Output = Result<HttpConnection, HttpError>> + Send {
        self.manager.connect(&self.origin)
    }

    fn check(
        &self,
        conn: &mut HttpConnection,
    ) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.manager.check(&self.origin, conn)
    }

    fn is_broken(&self, conn: &mut HttpConnection) -> bool {
        self.manager.is_broken(&self.origin, conn)
    }

    /// As [`HttpManager`]'s [`is_permanent`](KeyedManager::is_permanent).
    ///
    /// ```
    /// use latchless::Manager;
    /// # use latchless::managers::{HttpError, HttpManager};
    /// let m = HttpManager::new().for_origin("http://127.0.0.1:1".parse().unwrap());
    /// assert!(!m.is_permanent(&HttpError::Closed));
    /// ```
    fn is_permanent(&self, error: &HttpError) -> bool {
        self.manager.is_permanent(&self.origin, error)
    }
}

/// A failed TLS handshake: which origin, and the error as tokio-rustls
/// gave it, kept whole so that the TLS manager's judgement of permanent
/// errors reaches the `rustls::Error` inside.
#[derive(Debug)]
struct TlsHandshake {
    context: String,
    cause: io::Error,
}

impl fmt::Display for TlsHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

impl std::error::Error for TlsHandshake {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Where the rustls config comes from.
enum Tls {
    /// Built at `build` from PEM material, by the TLS manager's builder.
    Pem(Box<TlsBuilder>),
    /// Given whole.
    Config(Arc<ClientConfig>),
}

/// The TLS manager's builder, used for its PEM handling only: the address
/// and server name are placeholders, since each connect names its own.
fn tls_builder() -> TlsBuilder {
    TlsManager::builder(TcpManager::new(Vec::<String>::new()), "localhost")
}

/// Configures an [`HttpManager`]. Errors in PEM material are kept until
/// [`build`](Self::build), which returns the first. `Debug` never shows a
/// private key.
///
/// ```
/// use std::time::Duration;
/// use latchless::managers::HttpManager;
/// let manager = HttpManager::builder()
///     .connect_timeout(Duration::from_millis(500))
///     .keepalive(Some(Duration::from_secs(30)))
///     .build()?;
/// # drop(manager);
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct HttpBuilder {
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    tls: Tls,
    http1: http1::Builder,
}

impl fmt::Debug for HttpBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls: &dyn fmt::Debug = match &self.tls {
            // The TLS builder's own `Debug` redacts the key.
            Tls::Pem(b) => b,
            Tls::Config(c) => &c.alpn_protocols,
        };
        f.debug_struct("HttpBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("nodelay", &self.nodelay)
            .field("keepalive", &self.keepalive)
            .field("tls", tls)
            .field("http1", &self.http1)
            .finish()
    }
}

impl HttpBuilder {
    /// Bound on one TCP connection attempt (one resolved address).
    /// Default 5 s. The pool's own `connect_timeout` bounds the whole
    /// connect, TLS and all.
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let b = HttpManager::builder().connect_timeout(std::time::Duration::from_secs(1));
    /// # drop(b);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Set `TCP_NODELAY` (default `true`: requests are written whole and
    /// waiting to coalesce them only adds latency).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let b = HttpManager::builder().nodelay(false);
    /// # drop(b);
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// TCP keepalive: probe a connection after this long without traffic
    /// (`None`: off). Default `Some(60 s)`.
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let b = HttpManager::builder().keepalive(None);
    /// # drop(b);
    /// ```
    pub fn keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// Trust the CA certificates in this PEM text for `https` origins
    /// (one or more `CERTIFICATE` blocks; none is an error). Replaces a
    /// config given by [`tls_config`](Self::tls_config).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// assert!(HttpManager::builder().add_root_pem(b"").build().is_err());
    /// ```
    pub fn add_root_pem(mut self, pem: &[u8]) -> Self {
        self.tls = Tls::Pem(Box::new(self.pem().add_root_pem(pem)));
        self
    }

    /// Trust one DER CA certificate for `https` origins. Replaces a config
    /// given by [`tls_config`](Self::tls_config).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// let b = HttpManager::builder().add_root_der(rustls::pki_types::CertificateDer::from(vec![0u8; 3]));
    /// assert!(b.build().is_err()); // not a certificate
    /// ```
    pub fn add_root_der(mut self, der: CertificateDer<'static>) -> Self {
        self.tls = Tls::Pem(Box::new(self.pem().add_root_der(der)));
        self
    }

    /// Present this client certificate chain (PEM, leaf first) with its
    /// private key (PEM PKCS#8, PKCS#1 or SEC1) to `https` servers that
    /// ask for one. Replaces a config given by
    /// [`tls_config`](Self::tls_config).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// assert!(HttpManager::builder().client_cert_pem(b"", b"").build().is_err());
    /// ```
    pub fn client_cert_pem(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Self {
        self.tls = Tls::Pem(Box::new(self.pem().client_cert_pem(chain_pem, key_pem)));
        self
    }

    /// Use this rustls config for `https` origins (your verifier,
    /// provider, resumption, system roots...), instead of the roots and
    /// client certificate above. Its ALPN list is replaced by `http/1.1`:
    /// these connections speak nothing else.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use latchless::managers::HttpManager;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions().unwrap()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let manager = HttpManager::builder().tls_config(Arc::new(config)).build()?;
    /// assert_eq!(manager.tls_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls = Tls::Config(config);
        self
    }

    /// hyper's HTTP/1.1 settings for every connection (buffer sizes,
    /// header case, lenient parsing of odd servers...). Default: hyper's.
    ///
    /// ```
    /// use latchless::hyper;
    /// use latchless::managers::HttpManager;
    /// let mut http1 = hyper::client::conn::http1::Builder::new();
    /// http1.title_case_headers(true).max_buf_size(64 * 1024);
    /// let manager = HttpManager::builder().http1(http1).build()?;
    /// # drop(manager);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn http1(mut self, builder: http1::Builder) -> Self {
        self.http1 = builder;
        self
    }

    /// The PEM builder, started afresh if a whole config was given.
    fn pem(&mut self) -> TlsBuilder {
        match std::mem::replace(&mut self.tls, Tls::Pem(Box::new(tls_builder()))) {
            Tls::Pem(b) => *b,
            Tls::Config(_) => tls_builder(),
        }
    }

    /// The manager, or the first error in the PEM material
    /// (`InvalidInput`).
    ///
    /// ```
    /// # use latchless::managers::HttpManager;
    /// assert!(HttpManager::builder().build().is_ok());
    /// ```
    pub fn build(self) -> io::Result<HttpManager> {
        let base = match self.tls {
            Tls::Pem(b) => b.build()?.config().clone(),
            Tls::Config(c) => c,
        };
        let mut tls = ClientConfig::clone(&base);
        tls.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(HttpManager {
            settings: Arc::new(Settings {
                connect_timeout: self.connect_timeout,
                nodelay: self.nodelay,
                keepalive: self.keepalive,
                tls: Arc::new(tls),
                http1: self.http1,
            }),
        })
    }
}

/// Why [`HttpManager`] opened no connection, or why its pre-ping failed.
/// `Display` says what to look at.
///
/// ```
/// use latchless::managers::HttpError;
/// let err = HttpError::Connect(std::io::ErrorKind::ConnectionRefused.into());
/// assert!(err.to_string().contains("connect"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub enum HttpError {
    /// The origin cannot be connected to: its host is not a valid TLS
    /// server name. Permanent.
    Origin(OriginError),
    /// The TCP connect or the TLS handshake failed. The `io::Error` names
    /// the address, and for TLS keeps rustls's error inside (see
    /// [`KeyedManager::is_permanent`] for which are permanent).
    Connect(io::Error),
    /// hyper's HTTP/1.1 handshake failed.
    Handshake(hyper::Error),
    /// The pre-ping found the connection closed or unusable (see
    /// [`HttpConnection::is_broken`]); the pool opens another.
    Closed,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Origin(e) => write!(f, "cannot connect to this origin: {e}"),
            Self::Connect(e) => write!(
                f,
                "HTTP connect failed: {e} (check that the server is up, and for https its certificate and the roots given)"
            ),
            Self::Handshake(e) => write!(f, "HTTP/1.1 handshake failed: {e}"),
            Self::Closed => f.write_str(
                "the HTTP connection is closed or closing (by the server, its keep-alive timeout, or an error); the pool replaces it",
            ),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Origin(e) => Some(e),
            Self::Connect(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Closed => None,
        }
    }
}
