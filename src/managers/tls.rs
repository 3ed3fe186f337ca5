//! [`TlsManager`]: TLS (rustls, ring provider) over the
//! [`TcpManager`](super::TcpManager).
//!
//! Invariants kept: a handshake that fails (untrusted certificate, wrong
//! name, rejected client certificate) is a `connect` error; a connection
//! whose peer closed or reset, or that saw an I/O error, is broken.
//!
//! It also owns the one judgement of which TLS failures are permanent
//! ([`is_permanent_tls`]): those that name the certificates or the
//! configuration on either side (a retry meets the same certificate and
//! the same settings), never those of the transport (a retry meets a new
//! connection). `PgManager` over rustls reuses it.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::BoxFuture;
use super::tcp::{CheckFn, TcpConnection, run_check};
use crate::Manager;

/// A pooled TLS connection: a [`TcpConnection`] over a rustls stream, with
/// the same broken-marking (any I/O error, end of stream, shutdown or
/// [`mark_broken`](TcpConnection::mark_broken)).
///
/// ```no_run
/// # async fn demo(pool: latchless::Pool<latchless::managers::TlsManager>) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncWriteExt;
/// let mut conn = pool.get().await?;
/// conn.write_all(b"PING\r\n").await?;
/// let (_tcp, session) = conn.get_ref().get_ref();
/// println!("negotiated {:?}", session.protocol_version());
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub type TlsConnection = TcpConnection<TlsStream<TcpStream>>;

/// Opens TLS connections: a [`TcpManager`](super::TcpManager) connect, then a rustls handshake
/// with SNI, the roots you give (no system roots are loaded: trust is
/// explicit) and optionally a client certificate.
///
/// - `is_broken`: the same non-blocking socket probe as the TCP manager
///   (peer closed or reset, earlier I/O error, `mark_broken`). Unread bytes
///   do not count: TLS 1.3 servers send session tickets unasked.
/// - `check`: the probe, then the optional user check
///   ([`with_check`](Self::with_check)).
///
/// Errors are `std::io::Error`s; a certificate the roots do not trust is
/// `InvalidData` with rustls's reason (e.g. `UnknownIssuer`), and the
/// `rustls::Error` itself is kept inside (see
/// [`is_permanent`](Self::is_permanent)).
///
/// [`is_permanent`](Manager::is_permanent) (a `get` returns the error at
/// once instead of retrying until its deadline) says yes when the
/// handshake failed on the certificates or on settings that the next
/// attempt would meet unchanged:
///
/// - the server's certificate was rejected, whatever the reason: an
///   unknown issuer (not signed by a trusted root), expired or not yet
///   valid, not valid for the server name, revoked, a bad signature or
///   encoding, the wrong purpose, or refused by a custom verifier;
/// - the server presented no certificate, or the two sides share no
///   protocol version, cipher suite or ALPN protocol;
/// - the server answered with an alert about our certificate or settings:
///   `bad_certificate`, `unsupported_certificate`, `certificate_revoked`,
///   `certificate_expired`, `certificate_unknown`, `unknown_ca`,
///   `access_denied`, `certificate_required`, `decrypt_error` (a signature
///   that does not verify: our certificate's, or our key not matching
///   it), `protocol_version`, `insufficient_security`,
///   `unrecognised_name`, `no_application_protocol`;
/// - the TCP manager's address list cannot work (see
///   [`TcpManager`](super::TcpManager)).
///
/// Everything else is retried: refused, reset and timed-out connections,
/// a peer that closed mid-handshake, garbled, undecryptable or unexpected
/// records (`bad_record_mac`; a middlebox, a server restarting), and a
/// bare `handshake_failure` alert, which says that negotiation failed but
/// not why.
///
/// ```no_run
/// use latchless::Pool;
/// use latchless::managers::{TcpManager, TlsManager};
///
/// # fn demo(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
/// let manager = TlsManager::builder(TcpManager::new(["127.0.0.1:6380"]), "cache.internal")
///     .add_root_pem(ca_pem)
///     .client_cert_pem(cert_pem, key_pem)
///     .build()?;
/// let pool = Pool::builder(manager).max_size(16).build()?;
/// # drop(pool); Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub struct TlsManager {
    tcp: super::TcpManager,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    check: Option<CheckFn<TlsConnection>>,
}

impl fmt::Debug for TlsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsManager")
            .field("tcp", &self.tcp)
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .field(
                "client_auth",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .field("check", &self.check.as_ref().map(|_| "<user check>"))
            .finish_non_exhaustive()
    }
}

impl TlsManager {
    /// A manager with a ready rustls config (full control: your verifier,
    /// provider, resumption...). `server_name` is sent as SNI and checked
    /// against the certificate; an invalid one is an `InvalidInput` error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use latchless::managers::{TcpManager, TlsManager};
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions().unwrap()
    ///     .with_root_certificates(rustls::RootCertStore::empty())
    ///     .with_no_client_auth();
    /// let m = TlsManager::new(TcpManager::new(["127.0.0.1:443"]), "localhost", Arc::new(config)).unwrap();
    /// assert!(TlsManager::new(TcpManager::new(["x:1"]), "", m.config().clone()).is_err());
    /// ```
    pub fn new(
        tcp: super::TcpManager,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<Self> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {server_name:?}: {e}"),
            )
        })?;
        Ok(Self {
            tcp,
            server_name,
            config,
            check: None,
        })
    }

    /// Build a config from PEM roots and an optional client certificate
    /// (ring provider, TLS 1.2 and 1.3).
    ///
    /// ```
    /// use latchless::managers::{TcpManager, TlsManager};
    /// let m = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").build();
    /// assert!(m.is_ok()); // no roots: every server is untrusted, but it builds
    /// ```
    pub fn builder(tcp: super::TcpManager, server_name: &str) -> TlsBuilder {
        TlsBuilder {
            tcp,
            server_name: server_name.to_owned(),
            roots: RootCertStore::empty(),
            client: None,
            alpn: Vec::new(),
            error: None,
        }
    }

    /// A user round-trip check run by [`Manager::check`] after the socket
    /// probe; a failure marks the connection broken.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// use tokio::io::AsyncWriteExt;
    /// let m = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").build().unwrap()
    ///     .with_check(|conn| Box::pin(async move { conn.write_all(b"\n").await }));
    /// # drop(m);
    /// ```
    pub fn with_check<F>(mut self, check: F) -> Self
    where
        F: for<'a> Fn(&'a mut TlsConnection) -> BoxFuture<'a, io::Result<()>>
            + Send
            + Sync
            + 'static,
    {
        self.check = Some(Arc::new(check));
        self
    }

    /// The rustls config in use.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// let m = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").alpn(["h2"]).build().unwrap();
    /// assert_eq!(m.config().alpn_protocols, vec![b"h2".to_vec()]);
    /// ```
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl Manager for TlsManager {
    type Connection = TlsConnection;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<TlsConnection> {
        let tcp = self.tcp.open().await?;
        let connector = TlsConnector::from(self.config.clone());
        let stream = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                let context = format!(
                    "TLS handshake with {:?} ({:?})",
                    self.tcp.addrs(),
                    self.server_name
                );
                io::Error::new(e.kind(), Handshake { context, cause: e })
            })?;
        Ok(TcpConnection::new(stream))
    }

    async fn check(&self, conn: &mut TlsConnection) -> io::Result<()> {
        if self.is_broken(conn) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "TLS connection is broken (peer closed or I/O error)",
            ));
        }
        run_check(self.check.as_ref(), conn).await
    }

    fn is_broken(&self, conn: &mut TlsConnection) -> bool {
        conn.probe_broken(false, |s| s.get_ref().0)
    }

    /// `true` for a certificate or configuration failure that the next
    /// attempt would meet again (the list is in the type's docs); `false`
    /// for the transport's failures.
    ///
    /// ```
    /// use latchless::Manager;
    /// use latchless::managers::{TcpManager, TlsManager};
    /// use rustls::{CertificateError, Error};
    ///
    /// let m = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").build().unwrap();
    /// // How tokio-rustls reports a rustls error: InvalidData around it.
    /// let untrusted = std::io::Error::new(
    ///     std::io::ErrorKind::InvalidData,
    ///     Error::InvalidCertificate(CertificateError::UnknownIssuer),
    /// );
    /// assert!(m.is_permanent(&untrusted));
    /// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    /// assert!(!m.is_permanent(&reset));
    /// ```
    fn is_permanent(&self, error: &io::Error) -> bool {
        super::tcp::is_bad_address(error) || is_permanent_tls(error)
    }
}

/// A failed handshake: what was being opened, and the error as tokio-rustls
/// gave it, kept whole (not flattened into text) so that
/// [`is_permanent_tls`] can reach the `rustls::Error` inside.
#[derive(Debug)]
struct Handshake {
    context: String,
    cause: io::Error,
}

impl fmt::Display for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

impl std::error::Error for Handshake {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Whether `error`, or an error it wraps, is a TLS failure no retry can fix
/// ([`permanent_rustls`], or a server name that is not a valid DNS name).
///
/// Walks the `source` chain and looks inside every `io::Error` on the way:
/// `io::Error::source` skips the error it wraps, and tokio-rustls wraps
/// its `rustls::Error` in one.
pub(crate) fn is_permanent_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    // Deep enough for every wrapper in this crate and its drivers; a bound
    // all the same, since `source` chains are user-extensible.
    const MAX_DEPTH: usize = 16;
    fn walk(error: &(dyn std::error::Error + 'static), depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        if let Some(e) = error.downcast_ref::<rustls::Error>() {
            return permanent_rustls(e);
        }
        if error.is::<rustls_pki_types::InvalidDnsNameError>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            // Its `source` is the wrapped error's `source`: look at the
            // wrapped error itself instead.
            return io.get_ref().is_some_and(|inner| walk(inner, depth + 1));
        }
        error.source().is_some_and(|next| walk(next, depth + 1))
    }
    walk(error, 0)
}

/// The rustls errors that a new connection to the same server, with the
/// same config, would meet again: certificates, and settings the two sides
/// do not share (the list and the reasons are in [`TlsManager`]'s docs).
pub(crate) fn permanent_rustls(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(_)
        | E::InvalidCertRevocationList(_)
        | E::NoCertificatesPresented
        | E::UnsupportedNameType
        | E::PeerIncompatible(_)
        | E::NoApplicationProtocol
        | E::InconsistentKeys(_) => true,
        E::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::DecryptError
                | A::ProtocolVersion
                | A::InsufficientSecurity
                | A::UnrecognisedName
                | A::NoApplicationProtocol
        ),
        _ => false,
    }
}

/// Builds a [`TlsManager`] from PEM material. Errors (bad PEM, a key that
/// does not fit) are kept until [`build`](Self::build), which returns the
/// first as an `InvalidInput` error. `Debug` never shows the private key.
///
/// ```
/// use latchless::managers::{TcpManager, TlsManager};
/// let err = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost")
///     .add_root_pem(b"not a certificate")
///     .build()
///     .unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub struct TlsBuilder {
    tcp: super::TcpManager,
    server_name: String,
    roots: RootCertStore,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
    error: Option<io::Error>,
}

impl fmt::Debug for TlsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsBuilder")
            .field("tcp", &self.tcp)
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .field(
                "client_cert",
                &self
                    .client
                    .as_ref()
                    .map(|(chain, _)| format!("{} certificate(s), key <redacted>", chain.len())),
            )
            .field("alpn", &self.alpn)
            .field("error", &self.error)
            .finish()
    }
}

fn invalid(what: &str, e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
}

impl TlsBuilder {
    fn fail(&mut self, e: io::Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Trust the certificates in this PEM text (one or more
    /// `CERTIFICATE` blocks). No PEM certificate in it is an error.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// let b = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").add_root_pem(b"");
    /// assert!(b.build().is_err());
    /// ```
    pub fn add_root_pem(mut self, pem: &[u8]) -> Self {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            match cert {
                Ok(cert) => {
                    if let Err(e) = self.roots.add(cert) {
                        self.fail(invalid("bad root certificate", e));
                    }
                    added += 1;
                }
                Err(e) => self.fail(invalid("bad root certificate PEM", e)),
            }
        }
        if added == 0 {
            self.fail(invalid("root PEM", "no CERTIFICATE block found"));
        }
        self
    }

    /// Trust one DER certificate.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// let b = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost")
    ///     .add_root_der(rustls_pki_types::CertificateDer::from(vec![0u8; 3]));
    /// assert!(b.build().is_err()); // not a certificate
    /// ```
    pub fn add_root_der(mut self, der: CertificateDer<'static>) -> Self {
        if let Err(e) = self.roots.add(der) {
            self.fail(invalid("bad root certificate", e));
        }
        self
    }

    /// Present this client certificate chain (PEM `CERTIFICATE` blocks,
    /// leaf first) with its private key (PEM PKCS#8, PKCS#1 or SEC1).
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// let b = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost")
    ///     .client_cert_pem(b"", b"");
    /// assert!(b.build().is_err());
    /// ```
    pub fn client_cert_pem(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Self {
        let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(chain_pem).collect();
        let chain = match chain {
            Ok(chain) if !chain.is_empty() => chain,
            Ok(_) => {
                self.fail(invalid(
                    "client certificate PEM",
                    "no CERTIFICATE block found",
                ));
                return self;
            }
            Err(e) => {
                self.fail(invalid("bad client certificate PEM", e));
                return self;
            }
        };
        match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => self.client = Some((chain, key)),
            // The key's text is never echoed, only the kind of error.
            Err(e) => self.fail(invalid("bad client key PEM", e)),
        }
        self
    }

    /// ALPN protocols to offer, most preferred first.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// let b = TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").alpn(["h2", "http/1.1"]);
    /// # drop(b);
    /// ```
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// The manager, or the first error met while building.
    ///
    /// ```
    /// # use latchless::managers::{TcpManager, TlsManager};
    /// assert!(TlsManager::builder(TcpManager::new(["127.0.0.1:443"]), "localhost").build().is_ok());
    /// ```
    pub fn build(self) -> io::Result<TlsManager> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS protocol versions", e))?
            .with_root_certificates(self.roots);
        let mut config = match self.client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid("client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        TlsManager::new(self.tcp, &self.server_name, Arc::new(config))
    }
}
