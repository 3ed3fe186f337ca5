//! [`HttpConnection`]: one pooled HTTP/1.1 connection, hyper's
//! `SendRequest` with what the pool must know to judge it.
//!
//! Invariants kept: a connection is reported broken (never reused) once
//! hyper's side of it closed or its driver task ended, once the kernel
//! reports the socket closed or reset by the server, once the server
//! said it closes it (`Connection: close`, HTTP/1.0 without keep-alive, a
//! protocol switch), once it has been idle past the server's advertised
//! keep-alive timeout less a margin, while an exchange started on it has
//! not finished (its future was dropped half-way: hyper closes such a
//! connection), and once marked by the caller or by a failed exchange.
//! A dropped connection is closed on the wire before the drop returns.

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use quanta::Instant;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderMap};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::origin::Origin;
use super::socket::peer_closed;

/// How much of the server's keep-alive timeout is not used: a second, or
/// half the timeout if that is shorter. A request sent just before the
/// server's timer fires races its close and is lost on the wire.
fn keep_alive_margin(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_secs(1))
}

/// How long the pool's hand-out look at the socket vouches for the send
/// that follows it, and the end of an exchange for the pool's judgement
/// of the connection as it comes back: the steps of one task that follow
/// each other without waiting, with room for a loaded scheduler. Asking
/// the kernel again within it learns nothing a look can learn (the close
/// it would catch is the one that lands between any look and the write),
/// and costs a system call on every request.
const VOUCHED_FOR: Duration = Duration::from_millis(1);

/// One HTTP/1.1 connection to an [`Origin`]: hyper's
/// [`SendRequest`] (the request body type is [`Full<Bytes>`]: a whole
/// body in memory, which is what lets a request that was not written be
/// sent again) and the state the pool reads in
/// [`is_broken`](Self::is_broken).
///
/// Send requests through [`send_with_retry`](super::send_with_retry),
/// which keeps this state up to date. To use the sender yourself
/// ([`sender`](Self::sender)), call
/// [`observe_response`](Self::observe_response) on every response, read
/// each response body to its end before the connection goes back to the
/// pool, and [`mark_broken`](Self::mark_broken) when an exchange fails.
///
/// ```no_run
/// # use latchless::http;
/// use latchless::managers::{HttpConnection, HttpManager, Origin};
/// use latchless::{KeyedManager, bytes::Bytes, http_body_util::Full};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let origin: Origin = "http://127.0.0.1:8080".parse()?;
/// let mut conn: HttpConnection = HttpManager::new().connect(&origin).await?;
/// let request = http::Request::get("/health")
///     .header(http::header::HOST, "127.0.0.1:8080")
///     .body(Full::new(Bytes::new()))?;
/// conn.sender().ready().await?;
/// let response = conn.sender().send_request(request).await?;
/// conn.observe_response(&response);
/// println!("{} (reusable: {})", response.status(), !conn.is_broken());
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct HttpConnection {
    origin: Origin,
    sender: SendRequest<Full<Bytes>>,
    /// The task driving hyper's connection future; finished once the
    /// connection is closed, for whatever reason.
    driver: JoinHandle<()>,
    /// The TCP socket underneath, to ask the kernel whether the server
    /// closed it before hyper has noticed (see `socket.rs`).
    socket: Weak<TcpStream>,
    /// Marked by the caller or by an exchange that failed.
    broken: bool,
    /// A request was handed to hyper and its response has not arrived. If
    /// the exchange is abandoned there (its future dropped), hyper closes
    /// the connection, and it must not go back to the idle set meanwhile.
    in_flight: bool,
    /// The server (or the request) said the connection ends after the
    /// current exchange.
    closing: bool,
    /// The server's keep-alive timeout (`Keep-Alive: timeout=N`), if it
    /// advertised one.
    keep_alive: Option<Duration>,
    /// When the connection last became idle: the end of the last response
    /// seen (its body's end when it went through `send_with_retry`), or
    /// the connect.
    idle_since: Instant,
    /// An exchange through `send_with_retry` ended (its body read to the
    /// end) and the pool has not judged the connection since: its
    /// judgement as the connection comes back does not ask the kernel
    /// (the next hand-out does).
    ended_unjudged: bool,
    /// When the pool's judgement last asked the kernel and found the
    /// socket open, if no exchange has started since: the send that
    /// follows a hand-out does not ask again.
    looked_open: Option<Instant>,
}

impl fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnection")
            .field("origin", &self.origin)
            .field("closed", &self.is_closed())
            .field("broken", &self.broken)
            .field("in_flight", &self.in_flight)
            .field("closing", &self.closing)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// How one attempt to send a request ended.
pub(super) enum Attempt {
    /// The response head arrived.
    Response(Response<Incoming>),
    /// The request was not written, not a byte of it: the connection was
    /// found closed before the request was handed to hyper (no hyper
    /// error then), or hyper handed it back. It can go on another
    /// connection.
    NotSent(Request<Full<Bytes>>, Option<hyper::Error>),
    /// The request may have been written, in part or whole.
    Failed(hyper::Error),
}

impl HttpConnection {
    pub(super) fn new(
        origin: Origin,
        sender: SendRequest<Full<Bytes>>,
        driver: JoinHandle<()>,
        socket: Weak<TcpStream>,
    ) -> Self {
        Self {
            origin,
            sender,
            driver,
            socket,
            broken: false,
            in_flight: false,
            closing: false,
            keep_alive: None,
            idle_since: Instant::now(),
            ended_unjudged: false,
            looked_open: None,
        }
    }

    /// The origin this connection was opened for.
    ///
    /// ```no_run
    /// # use latchless::managers::{HttpManager, Origin};
    /// # use latchless::KeyedManager;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let origin: Origin = "http://127.0.0.1:8080".parse()?;
    /// let conn = HttpManager::new().connect(&origin).await?;
    /// assert_eq!(conn.origin(), &origin);
    /// # Ok(()) }
    /// ```
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// hyper's sender, to send requests yourself. Its requests must carry
    /// a `Host` header and an origin-form URI (`/path?query`); see the
    /// type's docs for what the pool then needs from you.
    ///
    /// ```no_run
    /// # use latchless::hyper;
    /// # async fn demo(mut conn: latchless::managers::HttpConnection) -> Result<(), hyper::Error> {
    /// conn.sender().ready().await?;
    /// assert!(conn.sender().is_ready());
    /// # Ok(()) }
    /// ```
    pub fn sender(&mut self) -> &mut SendRequest<Full<Bytes>> {
        &mut self.sender
    }

    /// Whether the connection itself is closed: hyper's sender says so,
    /// the task driving the connection ended (the server closed it, the
    /// connection failed, or it shut down after `Connection: close`), or
    /// the kernel says the server closed or reset the socket (a
    /// non-blocking `poll(2)`, no round trip), which it knows before
    /// hyper does.
    ///
    /// ```no_run
    /// # fn demo(conn: &latchless::managers::HttpConnection) {
    /// if conn.is_closed() {
    ///     println!("{} closed the connection", conn.origin());
    /// }
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed() || self.driver.is_finished() || peer_closed(&self.socket)
    }

    /// Whether the pool must not reuse this connection: it
    /// [is closed](Self::is_closed), the server said it closes it
    /// ([`server_will_close`](Self::server_will_close)), it has been idle
    /// longer than the server keeps idle connections (its
    /// `Keep-Alive: timeout=N`, less a second, or less half of it if that
    /// is shorter), an exchange on it was abandoned before its response,
    /// or it was [marked broken](Self::mark_broken). This is what
    /// `HttpManager`'s `is_broken` returns; it costs one non-blocking
    /// `poll(2)` of the socket, no round trip (the pool's judgement skips
    /// that look as a connection comes back from an exchange that ended
    /// just now, and `send_with_retry` right after a hand-out that made
    /// it: one look per request).
    ///
    /// A connection that is merely not ready yet (hyper has not yet taken
    /// in the end of the previous exchange) is not broken: the next
    /// request waits for it.
    ///
    /// ```no_run
    /// # fn demo(conn: &latchless::managers::HttpConnection) {
    /// println!("reusable: {}", !conn.is_broken());
    /// # }
    /// ```
    pub fn is_broken(&self) -> bool {
        self.broken_by_state() || peer_closed(&self.socket)
    }

    /// [`is_broken`](Self::is_broken) without asking the kernel.
    fn broken_by_state(&self) -> bool {
        self.broken
            || self.in_flight
            || self.closing
            || self.sender.is_closed()
            || self.driver.is_finished()
            || self
                .keep_alive
                .is_some_and(|t| self.idle_since.elapsed() >= t - keep_alive_margin(t))
    }

    /// The pool's judgement (`HttpManager`'s `is_broken`), when the
    /// connection comes back and when it is handed out:
    /// [`is_broken`](Self::is_broken), except that the kernel is not
    /// asked as the connection comes back from an exchange that ended
    /// just now (the hand-out asks it). A look that finds the socket open
    /// vouches for the send that follows at once.
    pub(super) fn judge(&mut self) -> bool {
        let just_ended =
            std::mem::take(&mut self.ended_unjudged) && self.idle_since.elapsed() < VOUCHED_FOR;
        if self.broken_by_state() {
            return true;
        }
        if just_ended {
            return false;
        }
        if peer_closed(&self.socket) {
            return true;
        }
        self.looked_open = Some(Instant::now());
        false
    }

    /// Make the pool close this connection when it is returned, instead of
    /// reusing it: for failures only the caller sees (a response that
    /// makes no sense, a body abandoned half-read).
    ///
    /// ```no_run
    /// # fn demo(mut conn: latchless::managers::HttpConnection) {
    /// conn.mark_broken();
    /// assert!(conn.is_marked_broken() && conn.is_broken());
    /// # }
    /// ```
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether [`mark_broken`](Self::mark_broken), or a failed exchange
    /// through `send_with_retry`, marked this connection.
    ///
    /// ```no_run
    /// # fn demo(conn: &latchless::managers::HttpConnection) {
    /// assert!(!conn.is_marked_broken() || conn.is_broken());
    /// # }
    /// ```
    pub fn is_marked_broken(&self) -> bool {
        self.broken
    }

    /// Whether the server (or the last request) said this connection ends
    /// after the current exchange: `Connection: close`, an HTTP/1.0
    /// response without `Connection: keep-alive`, or `101 Switching
    /// Protocols`.
    ///
    /// ```no_run
    /// # fn demo(conn: &latchless::managers::HttpConnection) {
    /// if conn.server_will_close() {
    ///     assert!(conn.is_broken());
    /// }
    /// # }
    /// ```
    pub fn server_will_close(&self) -> bool {
        self.closing
    }

    /// The idle timeout the server advertised in its last
    /// `Keep-Alive: timeout=N` header, if any.
    ///
    /// ```no_run
    /// # fn demo(conn: &latchless::managers::HttpConnection) {
    /// if let Some(timeout) = conn.keep_alive_timeout() {
    ///     println!("the server closes idle connections after {timeout:?}");
    /// }
    /// # }
    /// ```
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// Record what a response says about the connection's future (it is
    /// closing, the server's keep-alive timeout) and restart the idle
    /// clock. `send_with_retry` does this for its responses; call it on
    /// every response you receive through [`sender`](Self::sender).
    ///
    /// ```no_run
    /// # use latchless::http;
    /// # use latchless::hyper;
    /// # async fn demo(mut conn: latchless::managers::HttpConnection, request: http::Request<latchless::http_body_util::Full<latchless::bytes::Bytes>>) -> Result<(), hyper::Error> {
    /// let response = conn.sender().send_request(request).await?;
    /// conn.observe_response(&response);
    /// # Ok(()) }
    /// ```
    pub fn observe_response<B>(&mut self, response: &Response<B>) {
        self.observe_head(response.headers(), response.version(), response.status());
        self.idle_since = Instant::now();
    }

    /// What a response's head says about the connection; the idle time is
    /// stamped by the caller.
    fn observe_head(&mut self, headers: &HeaderMap, version: Version, status: StatusCode) {
        let keep_alive_asked = has_token(headers, "keep-alive");
        if has_token(headers, "close")
            || (version <= Version::HTTP_10 && !keep_alive_asked)
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            self.closing = true;
        }
        if let Some(timeout) = keep_alive_timeout(headers) {
            self.keep_alive = Some(timeout);
        }
        self.looked_open = None;
    }

    /// The connection went idle now (a response body was read to its end).
    pub(super) fn idle_from_now(&mut self) {
        self.idle_since = Instant::now();
        self.ended_unjudged = true;
    }

    /// Give the request the `Host` header and origin-form URI hyper's
    /// connection API expects, if it has not got them: an absolute URI
    /// must name this connection's origin.
    pub(super) fn fit(&self, request: &mut Request<Full<Bytes>>) -> Result<(), Mismatch> {
        if request.uri().scheme().is_some() || request.uri().authority().is_some() {
            let target = Origin::from_uri(request.uri()).map_err(Mismatch::Uri)?;
            if target != self.origin {
                return Err(Mismatch::Origin(target));
            }
        }
        fit_to(request, &self.origin);
        Ok(())
    }

    /// Send `request` once, recording what the exchange shows about the
    /// connection. A request hyper hands back was not written at all
    /// (hyper returns it only when it failed before serialising it).
    pub(super) async fn attempt(&mut self, request: Request<Full<Bytes>>) -> Attempt {
        // A connection hyper knows is closed fails `ready`.
        if let Err(e) = self.sender.ready().await {
            self.broken = true;
            return Attempt::NotSent(request, Some(e));
        }
        // The last look before the request is queued: a close the kernel
        // has seen and hyper not yet (unless the pool's hand-out has just
        // asked), the server's word, its keep-alive timeout.
        let vouched = self
            .looked_open
            .take()
            .is_some_and(|at| at.elapsed() < VOUCHED_FOR);
        if self.broken_by_state() || (!vouched && peer_closed(&self.socket)) {
            self.broken = true;
            return Attempt::NotSent(request, None);
        }
        let closes_after = has_token(request.headers(), "close");
        // Cleared below; left set if this future is dropped before the
        // response arrives, so that the pool does not reuse a connection
        // hyper is closing.
        self.in_flight = true;
        let result = self.sender.try_send_request(request).await;
        self.in_flight = false;
        match result {
            Ok(response) => {
                self.closing |= closes_after;
                // The idle time starts when the body has been read to its
                // end (`ResponseBody`), which stamps it.
                self.observe_head(response.headers(), response.version(), response.status());
                Attempt::Response(response)
            }
            Err(mut e) => {
                self.broken = true;
                match e.take_message() {
                    Some(request) => Attempt::NotSent(request, Some(e.into_error())),
                    None => Attempt::Failed(e.into_error()),
                }
            }
        }
    }
}

/// Gives `request` the origin-form URI (`/path?query`) and, if it has
/// none, the `Host` header of `origin`, which hyper's connection API
/// expects: the caller has checked that its URI, if absolute, names
/// `origin`.
pub(super) fn fit_to<B>(request: &mut Request<B>, origin: &Origin) {
    let uri = request.uri_mut();
    if uri.scheme().is_some() || uri.authority().is_some() {
        let mut parts = std::mem::take(uri).into_parts();
        parts.scheme = None;
        parts.authority = None;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        // Always valid: a path and query without scheme or authority.
        *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    }
    if !request.headers().contains_key(http::header::HOST) {
        // Always valid: an origin's host is a valid URI host.
        if let Ok(host) = HeaderValue::try_from(origin.host_header()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
    }
}

/// A request that cannot go on a connection (see `RequestError`).
pub(super) enum Mismatch {
    /// Its absolute URI names no HTTP origin.
    Uri(super::OriginError),
    /// Its absolute URI names another origin.
    Origin(Origin),
}

/// Whether a `Connection` header lists `token` (case-insensitive; the
/// header may repeat and each value is a comma-separated list).
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `timeout=N` (seconds) of a `Keep-Alive` header, if present.
fn keep_alive_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("keep-alive")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("timeout"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Dropping a connection closes it on the wire at once (both directions
/// of the TCP connection shut down), not when the task driving it next
/// runs: the pool counts a connection gone, and gives its place and
/// budget token to the next `get`, as soon as it has dropped it, so the
/// server must see it gone by then too, or it could see one connection
/// more than the pool's caps.
impl Drop for HttpConnection {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.upgrade() {
            // Fails only on a socket already shut down or reset: closed.
            let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn connection_tokens_are_found_in_any_value_and_case() {
        assert!(has_token(&headers(&[("connection", "Close")]), "close"));
        assert!(has_token(
            &headers(&[("connection", "upgrade"), ("connection", "te, CLOSE")]),
            "close"
        ));
        assert!(!has_token(&headers(&[("connection", "closed")]), "close"));
        assert!(!has_token(&headers(&[]), "close"));
    }

    #[test]
    fn keep_alive_timeout_is_read_in_seconds() {
        let h = headers(&[("keep-alive", "max=100, Timeout=5")]);
        assert_eq!(keep_alive_timeout(&h), Some(Duration::from_secs(5)));
        assert_eq!(
            keep_alive_timeout(&headers(&[("keep-alive", "max=3")])),
            None
        );
        assert_eq!(
            keep_alive_timeout(&headers(&[("keep-alive", "timeout=x")])),
            None
        );
    }

    #[test]
    fn the_margin_is_a_second_or_half_the_timeout() {
        assert_eq!(
            keep_alive_margin(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            keep_alive_margin(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(keep_alive_margin(Duration::ZERO), Duration::ZERO);
    }

    /// A connection to a listener of its own, and the server's end of it.
    /// The test runtime has one thread and the test never awaits after
    /// this, so hyper's connection task never runs: what the pool learns
    /// of a close, it learns from the kernel.
    async fn connected() -> (HttpConnection, std::net::TcpStream) {
        use crate::KeyedManager;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin: Origin = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let conn = super::super::HttpManager::new()
            .connect(&origin)
            .await
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        (conn, server)
    }

    /// Closes the server's end and gives the close time to reach the
    /// client's kernel, the runtime blocked meanwhile.
    fn close_unseen(server: std::net::TcpStream) {
        drop(server);
        std::thread::sleep(Duration::from_millis(100));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_judgement_as_a_connection_comes_back_leaves_the_kernel_to_the_hand_out() {
        let (mut conn, server) = connected().await;
        close_unseen(server);
        conn.idle_from_now();
        assert!(!conn.judge(), "coming back from an exchange just ended");
        assert!(conn.judge(), "the hand-out asks the kernel");
        assert!(conn.is_broken(), "`is_broken` always asks");

        // Without an exchange just ended, the first judgement asks.
        let (mut conn, server) = connected().await;
        assert!(!conn.judge());
        close_unseen(server);
        assert!(conn.judge());

        // An exchange that ended longer ago than it vouches for, too.
        let (mut conn, server) = connected().await;
        conn.idle_from_now();
        close_unseen(server);
        assert!(conn.judge());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_look_vouches_only_for_the_send_that_follows_at_once() {
        let (mut conn, server) = connected().await;
        assert!(!conn.judge(), "open at hand-out");
        close_unseen(server);
        let request = Request::get("/")
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(
            matches!(conn.attempt(request).await, Attempt::NotSent(_, None)),
            "a look older than it vouches for is taken again before writing"
        );
        assert!(conn.is_marked_broken());
    }
}
