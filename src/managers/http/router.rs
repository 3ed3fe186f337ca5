//! [`Router`]: keyed pools mounted by scheme or URL prefix; a request's
//! URL picks the pool (the longest matching prefix), its origin the key.
//!
//! Invariants kept: a prefix is a scheme, optionally an origin (host and
//! port, the scheme's default port when none is written) and a path
//! prefix, and matches a URL exactly when the schemes are equal, the
//! origins are equal (host compared as [`Origin`] does, lower-cased) if it
//! names one, and the URL's path starts with its path; of the prefixes that
//! match, the longest wins (one naming an origin is longer than any that
//! does not, then the longer path); one prefix maps to one pool (mounting
//! it again replaces the pool).

use std::fmt;

use bytes::Bytes;
use http::{Request, Response, Uri};

use super::HttpManager;
use super::connection::HttpConnection;
use super::origin::{Origin, OriginError};
use super::retry::{RequestError, ResponseBody, send_with_retry};
use crate::{KeyedManager, KeyedPool, PoolError};

/// Keyed pools of HTTP connections mounted by scheme or URL prefix, as a
/// gateway routes upstreams: `https://` for every `https` URL,
/// `https://api.example.com` for one origin, `https://api.example.com/v2/`
/// for part of it. A request's URL picks the pool of the longest prefix
/// it matches, and the pool's key is the URL's [`Origin`] (scheme, host,
/// port): each pool keeps its connections per origin, with its own
/// `max_per_key`, `max_total` and every other setting.
///
/// A prefix is `scheme://`, `scheme://host[:port]` (the scheme's default
/// port when none is written: `https://api.example.com` does not match
/// `https://api.example.com:8443`) or `scheme://host[:port]/path`, whose
/// path matches URL paths that start with it, character for character
/// (end it with `/` to match whole path segments). Hosts are compared
/// case-insensitively; the query is not part of the match.
///
/// ```no_run
/// use latchless::managers::{HttpManager, Router};
/// use latchless::{KeyedPool, http, http_body_util::BodyExt};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let general = KeyedPool::builder(HttpManager::new()).max_per_key(8).max_total(64).build()?;
/// let api_v2 = KeyedPool::builder(HttpManager::new()).max_per_key(32).build()?;
/// let router = Router::new()
///     .mount("http://", general.clone())
///     .mount("https://", general)
///     .mount("https://api.example.com/v2/", api_v2);
///
/// // The API pool, key https://api.example.com:443.
/// let request = http::Request::get("https://api.example.com/v2/items").body("")?;
/// let response = router.send(request, 2).await?;
/// let body = response.into_body().collect().await?.to_bytes(); // frees the connection
/// # drop(body); Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct Router<M = HttpManager>
where
    M: KeyedManager<Origin, Connection = HttpConnection>,
{
    /// Longest prefix first.
    routes: Vec<(Prefix, KeyedPool<Origin, M>)>,
}

/// A parsed mount prefix.
#[derive(Clone, PartialEq, Eq)]
struct Prefix {
    https: bool,
    /// The origin it names, if any.
    origin: Option<Origin>,
    /// The path prefix; empty matches every path.
    path: String,
}

impl Prefix {
    fn parse(text: &str) -> Result<Self, OriginError> {
        let (scheme, rest) = text.split_once("://").ok_or(OriginError::NoScheme)?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(OriginError::UnsupportedScheme(scheme.to_owned()));
        };
        if rest.contains(['?', '#']) {
            return Err(OriginError::InvalidUri(format!(
                "{text:?}: a prefix has no query or fragment"
            )));
        }
        if rest.is_empty() {
            return Ok(Self {
                https,
                origin: None,
                path: String::new(),
            });
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // The origin as a URI of its own gives it the scheme's default
        // port, and rejects user information and bad hosts.
        if authority.contains('@') {
            return Err(OriginError::InvalidHost(authority.to_owned()));
        }
        let uri: Uri = format!("{scheme}://{authority}/")
            .parse()
            .map_err(|e: http::uri::InvalidUri| OriginError::InvalidUri(e.to_string()))?;
        Ok(Self {
            https,
            origin: Some(Origin::from_uri(&uri)?),
            path: path.to_owned(),
        })
    }

    /// How specific: one naming an origin before any that does not, then
    /// the longer path.
    fn rank(&self) -> (bool, usize) {
        (self.origin.is_some(), self.path.len())
    }

    fn matches(&self, origin: &Origin, path: &str) -> bool {
        self.https == origin.is_https()
            && self.origin.as_ref().is_none_or(|o| o == origin)
            && path.starts_with(&self.path)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{o}{}", self.path),
            None => write!(f, "{}://", if self.https { "https" } else { "http" }),
        }
    }
}

impl<M> Router<M>
where
    M: KeyedManager<Origin, Connection = HttpConnection>,
{
    /// A router with nothing mounted: every request is
    /// [`RequestError::NoRoute`].
    ///
    /// ```
    /// use latchless::managers::Router;
    /// let router: Router = Router::new();
    /// assert!(router.route(&"http://example.com/".parse().unwrap()).is_none());
    /// ```
    pub fn new() -> Self {
        Self { routes: Vec::new() }
    }

    /// Mounts `pool` for URLs that start with `prefix` (see the type's
    /// docs for what a prefix is); a prefix mounted before is given the
    /// new pool.
    ///
    /// # Panics
    /// If `prefix` is not a prefix: a scheme other than `http` or `https`,
    /// no `://`, a bad host or port, user information, a query or a
    /// fragment. [`try_mount`](Self::try_mount) returns the error instead.
    ///
    /// ```
    /// use latchless::KeyedPool;
    /// use latchless::managers::{HttpManager, Router};
    /// let pool = KeyedPool::builder(HttpManager::new()).build().unwrap();
    /// let router = Router::new().mount("https://api.example.com/v2/", pool);
    /// assert!(router.route(&"https://API.example.com/v2/items".parse().unwrap()).is_some());
    /// assert!(router.route(&"https://api.example.com/v1/items".parse().unwrap()).is_none());
    /// ```
    #[track_caller]
    pub fn mount(self, prefix: &str, pool: KeyedPool<Origin, M>) -> Self {
        match self.try_mount(prefix, pool) {
            Ok(router) => router,
            Err(e) => panic!("Router::mount({prefix:?}): {e}"),
        }
    }

    /// [`mount`](Self::mount), returning why `prefix` is not a prefix
    /// instead of panicking.
    ///
    /// ```
    /// use latchless::KeyedPool;
    /// use latchless::managers::{HttpManager, OriginError, Router};
    /// let pool = KeyedPool::builder(HttpManager::new()).build().unwrap();
    /// let err = Router::new().try_mount("ftp://files.example.com/", pool).unwrap_err();
    /// assert_eq!(err, OriginError::UnsupportedScheme("ftp".into()));
    /// ```
    pub fn try_mount(
        mut self,
        prefix: &str,
        pool: KeyedPool<Origin, M>,
    ) -> Result<Self, OriginError> {
        let prefix = Prefix::parse(prefix)?;
        match self.routes.iter_mut().find(|(p, _)| *p == prefix) {
            Some(route) => route.1 = pool,
            None => {
                // Before the first route ranked lower: longest first.
                let at = self
                    .routes
                    .iter()
                    .position(|(p, _)| p.rank() < prefix.rank())
                    .unwrap_or(self.routes.len());
                self.routes.insert(at, (prefix, pool));
            }
        }
        Ok(self)
    }

    /// The pool of the longest prefix `uri` matches; `None` when none
    /// does, or `uri` names no HTTP origin (a bare path, another
    /// scheme). Its key for `uri` is [`Origin::from_uri`].
    ///
    /// ```
    /// use latchless::KeyedPool;
    /// use latchless::managers::{HttpManager, Origin, Router};
    /// let (any, api) = (
    ///     KeyedPool::builder(HttpManager::new()).build().unwrap(),
    ///     KeyedPool::builder(HttpManager::new()).max_per_key(32).build().unwrap(),
    /// );
    /// let router = Router::new().mount("https://", any).mount("https://api.example.com", api);
    /// let uri = "https://api.example.com/items".parse().unwrap();
    /// assert_eq!(router.route(&uri).unwrap().config().max_size, 32);
    /// let uri = "https://www.example.com/".parse().unwrap();
    /// assert_eq!(router.route(&uri).unwrap().config().max_size, 10);
    /// assert!(router.route(&"/relative".parse().unwrap()).is_none());
    /// ```
    pub fn route(&self, uri: &Uri) -> Option<&KeyedPool<Origin, M>> {
        let origin = Origin::from_uri(uri).ok()?;
        self.find(&origin, uri.path())
    }

    fn find(&self, origin: &Origin, path: &str) -> Option<&KeyedPool<Origin, M>> {
        let path = if path.is_empty() { "/" } else { path };
        self.routes
            .iter()
            .find(|(p, _)| p.matches(origin, path))
            .map(|(_, pool)| pool)
    }

    /// Sends `request` (its URI absolute: `https://host/path`) through the
    /// pool its URL routes to, with [`send_with_retry`] on connections to
    /// its origin: retried on another connection, up to `max_retries`
    /// times, only when certainly not written. The response's body holds
    /// the connection until read to its end.
    ///
    /// # Errors
    /// [`RequestError::Uri`] when the URI names no HTTP origin,
    /// [`RequestError::NoRoute`] when no prefix matches it (nothing sent
    /// either way), else as [`send_with_retry`].
    ///
    /// ```no_run
    /// use latchless::managers::{HttpManager, RequestError, Router};
    /// use latchless::{KeyedPool, http};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let router = Router::new().mount("http://", KeyedPool::builder(HttpManager::new()).build()?);
    /// let request = http::Request::get("https://example.com/").body("")?;
    /// assert!(matches!(router.send(request, 1).await, Err(RequestError::NoRoute(_))));
    /// # Ok(()) }
    /// ```
    pub async fn send<B: Into<Bytes>>(
        &self,
        request: Request<B>,
        max_retries: usize,
    ) -> Result<Response<ResponseBody>, RequestError<PoolError<M::Error>>> {
        let origin = Origin::from_uri(request.uri()).map_err(RequestError::Uri)?;
        let Some(pool) = self.find(&origin, request.uri().path()) else {
            return Err(RequestError::NoRoute(request.uri().clone()));
        };
        // Every connection of this key is to `origin`: the request is
        // fitted to it once, not checked against it on every attempt.
        let mut request = request;
        super::connection::fit_to(&mut request, &origin);
        send_with_retry(|| pool.get(&origin), request, max_retries).await
    }
}

impl<M> Default for Router<M>
where
    M: KeyedManager<Origin, Connection = HttpConnection>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<M> Clone for Router<M>
where
    M: KeyedManager<Origin, Connection = HttpConnection>,
{
    fn clone(&self) -> Self {
        Self {
            routes: self.routes.clone(),
        }
    }
}

impl<M> fmt::Debug for Router<M>
where
    M: KeyedManager<Origin, Connection = HttpConnection>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(p, _)| p.to_string()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_per_key: usize) -> KeyedPool<Origin, HttpManager> {
        KeyedPool::builder(HttpManager::new())
            .max_per_key(max_per_key)
            .background(false)
            .build()
            .unwrap()
    }

    /// The `max_per_key` of the pool `url` routes to: which pool it is.
    fn routed(router: &Router, url: &str) -> Option<usize> {
        router
            .route(&url.parse().unwrap())
            .map(|p| p.config().max_size)
    }

    #[test]
    fn the_longest_matching_prefix_wins_whatever_the_mount_order() {
        let mounts = [
            ("https://api.example.com/v2/", 4),
            ("http://", 1),
            ("https://api.example.com", 3),
            ("https://", 2),
            ("https://api.example.com/v2/admin/", 5),
        ];
        // Every order of mounting gives the same routes.
        for rotation in 0..mounts.len() {
            let mut router = Router::new();
            for i in 0..mounts.len() {
                let (prefix, n) = mounts[(i + rotation) % mounts.len()];
                router = router.mount(prefix, pool(n));
            }
            let cases = [
                ("http://api.example.com/v2/items", Some(1)),
                ("https://www.example.com/", Some(2)),
                ("https://api.example.com/v1/items", Some(3)),
                ("https://api.example.com", Some(3)),
                ("https://api.example.com/v2/items?page=2", Some(4)),
                ("https://API.Example.COM:443/v2/x", Some(4)),
                ("https://api.example.com/v2/admin/users", Some(5)),
                // Another port is another origin: only the scheme matches.
                ("https://api.example.com:8443/v2/items", Some(2)),
                // Path prefixes match character for character.
                ("https://api.example.com/v2", Some(3)),
                ("/v2/items", None),
            ];
            for (url, want) in cases {
                assert_eq!(routed(&router, url), want, "{url} (rotation {rotation})");
            }
        }
    }

    #[test]
    fn nothing_matches_what_no_prefix_covers() {
        let router = Router::new().mount("https://api.example.com/v2/", pool(4));
        assert_eq!(routed(&router, "http://api.example.com/v2/"), None);
        assert_eq!(
            routed(&router, "https://api.example.com.evil.org/v2/"),
            None
        );
        assert_eq!(routed(&router, "https://api.example.com/v3/"), None);
        assert_eq!(routed(&router, "https://api.example.com/v2/x"), Some(4));
    }

    #[test]
    fn mounting_a_prefix_again_replaces_its_pool() {
        let router = Router::new()
            .mount("http://10.0.0.7:8080/", pool(1))
            .mount("HTTP://10.0.0.7:8080/", pool(2));
        assert_eq!(router.routes.len(), 1);
        assert_eq!(routed(&router, "http://10.0.0.7:8080/health"), Some(2));
        assert_eq!(format!("{router:?}"), r#"["http://10.0.0.7:8080/"]"#);
    }

    #[test]
    fn a_default_port_is_the_schemes() {
        let router = Router::new()
            .mount("http://example.com", pool(1))
            .mount("http://example.com:8080", pool(2));
        assert_eq!(routed(&router, "http://example.com:80/"), Some(1));
        assert_eq!(routed(&router, "http://example.com/"), Some(1));
        assert_eq!(routed(&router, "http://example.com:8080/"), Some(2));
        assert_eq!(routed(&router, "http://example.com:8081/"), None);
        let router = Router::new().mount("http://[::1]:9000/", pool(3));
        assert_eq!(routed(&router, "http://[::1]:9000/x"), Some(3));
    }

    #[test]
    fn malformed_prefixes_are_refused_with_the_reason() {
        let bad = [
            ("api.example.com/v2/", OriginError::NoScheme),
            ("ftp://", OriginError::UnsupportedScheme("ftp".into())),
            (
                "https://user@api.example.com/",
                OriginError::InvalidHost("user@api.example.com".into()),
            ),
            ("http://example.com:0/", OriginError::InvalidPort),
        ];
        for (prefix, want) in bad {
            let err = Router::new().try_mount(prefix, pool(1)).unwrap_err();
            assert_eq!(err, want, "{prefix}");
        }
        for prefix in [
            "https://example.com/?q=1",
            "https://example.com/#top",
            "http://exa mple.com/",
        ] {
            assert!(
                Router::new().try_mount(prefix, pool(1)).is_err(),
                "{prefix}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "Router::mount(\"gopher://\")")]
    fn mount_panics_on_a_malformed_prefix() {
        let _ = Router::new().mount("gopher://", pool(1));
    }

    #[tokio::test]
    async fn send_refuses_what_it_cannot_route_and_sends_nothing() {
        let router = Router::new().mount("http://127.0.0.1:9/", pool(1));
        let request = Request::get("https://127.0.0.1:9/").body("").unwrap();
        match router.send(request, 1).await {
            Err(RequestError::NoRoute(uri)) => assert_eq!(uri, "https://127.0.0.1:9/"),
            other => panic!("{other:?}"),
        }
        let request = Request::get("/relative").body("").unwrap();
        assert!(matches!(
            router.send(request, 1).await,
            Err(RequestError::Uri(OriginError::NoScheme))
        ));
        let pool = router
            .route(&"http://127.0.0.1:9/".parse().unwrap())
            .unwrap();
        assert_eq!(pool.keys(), 0, "no connection attempted");
    }
}
