//! [`Origin`]: the key of the HTTP manager, an HTTP origin (RFC 6454):
//! scheme, host and port, nothing else.
//!
//! Invariants kept: the scheme is `http` or `https`; the host is a valid
//! URI host, lower-cased (DNS names are case-insensitive, so
//! `Example.COM` and `example.com` share one set of connections), with an
//! IPv6 address in brackets; the port is explicit and never 0. Two origins
//! are equal exactly when a connection opened for one can serve the other.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use std::sync::Arc;

use http::Uri;
use http::uri::Authority;

/// An HTTP origin: scheme (`http` or `https`), host and port. The key of
/// [`HttpManager`](super::HttpManager): one set of pooled connections per
/// origin.
///
/// Cheap to clone (the host is shared). Displays as `scheme://host:port`,
/// with the port always written, so the text names one endpoint.
///
/// ```
/// use latchless::managers::Origin;
///
/// let origin = Origin::from_uri(&"https://API.example.com/v1/items?page=2".parse()?)?;
/// assert_eq!(origin.to_string(), "https://api.example.com:443");
/// assert_eq!(origin, "https://api.example.com:443".parse()?);
/// assert_eq!(origin, Origin::https("api.example.com", 443)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct Origin {
    /// `true` for `https`, `false` for `http`.
    https: bool,
    /// The host as it goes into a URI: lower-case, IPv6 in brackets.
    host: Arc<str>,
    /// The port connected to, the scheme's default filled in; never 0.
    port: u16,
}

impl Origin {
    /// The `http` origin of `host` and `port`. `host` is a name or an IP
    /// address (IPv6 with or without brackets).
    ///
    /// ```
    /// use latchless::managers::Origin;
    /// let origin = Origin::http("127.0.0.1", 8080)?;
    /// assert_eq!(origin.to_string(), "http://127.0.0.1:8080");
    /// assert_eq!(Origin::http("::1", 80)?.host(), "[::1]");
    /// assert!(Origin::http("bad host", 80).is_err());
    /// # Ok::<(), latchless::managers::OriginError>(())
    /// ```
    pub fn http(host: &str, port: u16) -> Result<Self, OriginError> {
        Self::new(false, host, port)
    }

    /// The `https` origin of `host` and `port` (see [`http`](Self::http)).
    ///
    /// ```
    /// use latchless::managers::Origin;
    /// let origin = Origin::https("localhost", 8443)?;
    /// assert!(origin.is_https());
    /// assert!(Origin::https("localhost", 0).is_err());
    /// # Ok::<(), latchless::managers::OriginError>(())
    /// ```
    pub fn https(host: &str, port: u16) -> Result<Self, OriginError> {
        Self::new(true, host, port)
    }

    /// The origin a request to `uri` goes to: its scheme (`http` or
    /// `https`), host, and port (80 or 443 when the URI names none). The
    /// path, query and any user information are not part of it.
    ///
    /// ```
    /// use latchless::managers::{Origin, OriginError};
    /// let uri = "http://user@example.com/index.html".parse()?;
    /// assert_eq!(Origin::from_uri(&uri)?.to_string(), "http://example.com:80");
    ///
    /// // A path alone names no origin; nor does another scheme.
    /// assert_eq!(Origin::from_uri(&"/index.html".parse()?), Err(OriginError::NoScheme));
    /// assert!(matches!(
    ///     Origin::from_uri(&"ftp://example.com/".parse()?),
    ///     Err(OriginError::UnsupportedScheme(_))
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_uri(uri: &Uri) -> Result<Self, OriginError> {
        let https = match uri.scheme_str() {
            None => return Err(OriginError::NoScheme),
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(other) => return Err(OriginError::UnsupportedScheme(other.to_owned())),
        };
        let host = uri.host().ok_or(OriginError::NoHost)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // The host of a parsed URI is the host of a well-formed authority
        // already: it needs no second parse.
        Self::with(https, host, port, false)
    }

    fn new(https: bool, host: &str, port: u16) -> Result<Self, OriginError> {
        Self::with(https, host, port, true)
    }

    /// `validate`: whether `host` must still be shown to be the host of a
    /// well-formed authority (it was not taken from a parsed URI).
    fn with(https: bool, host: &str, port: u16, validate: bool) -> Result<Self, OriginError> {
        if host.is_empty() {
            return Err(OriginError::NoHost);
        }
        if port == 0 {
            return Err(OriginError::InvalidPort);
        }
        // A bare IPv6 address takes its brackets, as in a URI.
        let host = match host.parse::<Ipv6Addr>() {
            Ok(ip) => format!("[{ip}]"),
            Err(_) => host.to_ascii_lowercase(),
        };
        // The host must be exactly the host of a well-formed authority: no
        // user information, port or path smuggled in, no character a URI
        // cannot carry.
        let well_formed = !validate
            || Authority::from_str(&format!("{host}:{port}"))
                .is_ok_and(|a| a.host() == host && a.port_u16() == Some(port));
        if !well_formed {
            return Err(OriginError::InvalidHost(host));
        }
        Ok(Self {
            https,
            host: host.into(),
            port,
        })
    }

    /// `"http"` or `"https"`.
    ///
    /// ```
    /// # use latchless::managers::Origin;
    /// assert_eq!(Origin::http("example.com", 80)?.scheme(), "http");
    /// # Ok::<(), latchless::managers::OriginError>(())
    /// ```
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// Whether connections to this origin use TLS.
    ///
    /// ```
    /// # use latchless::managers::Origin;
    /// assert!(!Origin::http("example.com", 443)?.is_https());
    /// # Ok::<(), latchless::managers::OriginError>(())
    /// ```
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lower-cased; an IPv6 address in brackets.
    ///
    /// ```
    /// # use latchless::managers::Origin;
    /// assert_eq!(Origin::https("Example.COM", 443)?.host(), "example.com");
    /// # Ok::<(), latchless::managers::OriginError>(())
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (the scheme's default when the URI named none).
    ///
    /// ```
    /// # use latchless::managers::Origin;
    /// assert_eq!(Origin::from_uri(&"https://example.com".parse()?)?.port(), 443);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, as the TCP manager resolves it.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets: the TLS server name (SNI, and the
    /// name the certificate must carry).
    pub(crate) fn server_name(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The `Host` header of a request to this origin: the port is left
    /// out when it is the scheme's default (RFC 9110, 7.2).
    pub(crate) fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.to_string()
        } else {
            self.address()
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme(), self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

/// Parses a URI (`https://example.com`, `http://10.0.0.1:8080/path`) and
/// takes its origin, as [`Origin::from_uri`].
///
/// ```
/// use latchless::managers::Origin;
/// let origin: Origin = "http://[::1]:8080/health".parse()?;
/// assert_eq!(origin.to_string(), "http://[::1]:8080");
/// assert!("not a uri".parse::<Origin>().is_err());
/// # Ok::<(), latchless::managers::OriginError>(())
/// ```
impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, OriginError> {
        let uri: Uri = s
            .parse()
            .map_err(|e: http::uri::InvalidUri| OriginError::InvalidUri(e.to_string()))?;
        Self::from_uri(&uri)
    }
}

/// Why a URI, host or port names no HTTP origin. Each variant's `Display`
/// says what to write instead. No retry can fix it: a connect that meets
/// one is a permanent error.
///
/// ```
/// use latchless::managers::{Origin, OriginError};
/// let err = "mailto:someone@example.com".parse::<Origin>().unwrap_err();
/// println!("{err}");
/// assert!(matches!(err, OriginError::NoScheme | OriginError::InvalidUri(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub enum OriginError {
    /// The text is not a URI.
    InvalidUri(String),
    /// The URI has no scheme (a bare path, or `host:port` alone).
    NoScheme,
    /// The scheme is neither `http` nor `https`.
    UnsupportedScheme(String),
    /// The URI has no host.
    NoHost,
    /// The host is not a valid URI host (spaces, `@`, `/`, ...), or not
    /// a valid TLS server name for an `https` origin.
    InvalidHost(String),
    /// Port 0, which no server listens on.
    InvalidPort,
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUri(e) => write!(
                f,
                "not a URI ({e}): write an origin as http://host[:port] or https://host[:port]"
            ),
            Self::NoScheme => f.write_str(
                "the URI has no scheme: write an origin as http://host[:port] or https://host[:port]",
            ),
            Self::UnsupportedScheme(s) => write!(
                f,
                "scheme {s:?} is not HTTP: an origin starts with http:// or https://"
            ),
            Self::NoHost => f.write_str("the URI has no host: write http://host[:port]"),
            Self::InvalidHost(h) => write!(
                f,
                "{h:?} is not a valid host: give a DNS name or an IP address, nothing else"
            ),
            Self::InvalidPort => f.write_str("port 0 is not a port a server listens on"),
        }
    }
}

impl std::error::Error for OriginError {}
