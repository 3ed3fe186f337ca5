//! [`TcpManager`]: plain TCP connections over tokio's `TcpStream`.
//!
//! Invariants kept: a connection whose peer closed, that saw an I/O error,
//! that was shut down, or (by default) that still has unread bytes waiting
//! when it is returned, is reported broken and never handed out again; a
//! connect error is permanent (`Manager::is_permanent`) only when the
//! address list itself is unusable (empty, or no entry of it well formed),
//! never for what the network or the server did, since a refused or
//! unreachable server may come back.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::BoxFuture;
use crate::Manager;

/// A user liveness check over a connection of type `C`.
pub(crate) type CheckFn<C> =
    Arc<dyn for<'a> Fn(&'a mut C) -> BoxFuture<'a, io::Result<()>> + Send + Sync>;

/// Opens TCP connections to the first reachable address of a list.
///
/// - `connect` tries each address in order (each name resolved afresh at
///   every connect, every resolved address tried), each attempt bounded by
///   [`connect_timeout`](Self::connect_timeout); it sets `TCP_NODELAY` and
///   TCP keepalive as configured.
/// - `is_broken` is a non-blocking `poll(2)` probe of the socket, no round
///   trip: the peer closed or reset (`POLLRDHUP`/`POLLHUP`/`POLLERR`), an
///   earlier I/O error or [`TcpConnection::mark_broken`], or unread bytes
///   (a reply nobody read: the protocol is out of sync; see
///   [`reject_unread`](Self::reject_unread)).
/// - `check` (the pool's pre-ping) runs the same probe, then the optional
///   user check ([`with_check`](Self::with_check)), a real round trip in
///   the protocol spoken over the socket.
///
/// Errors are `std::io::Error`s that name the address that failed.
///
/// [`is_permanent`](Manager::is_permanent) (a `get` returns the error at
/// once instead of retrying until its deadline) says yes only when the
/// address list cannot work whatever the network does: it is empty, or
/// every entry is malformed (no `:port`, a port that is not a number from
/// 0 to 65535, an empty host, a NUL byte). Everything else is retried: a
/// refused connection (the server may be restarting), a reset, a timeout,
/// an unreachable network, and a name that does not resolve (DNS may be
/// down for a moment, or the name not published yet).
///
/// ```no_run
/// use std::time::Duration;
/// use latchless::Pool;
/// use latchless::managers::TcpManager;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = TcpManager::new(["10.0.0.1:7000", "127.0.0.1:7000"])
///     .connect_timeout(Duration::from_secs(2))
///     .keepalive(Some(Duration::from_secs(30)))
///     .with_check(|conn| {
///         Box::pin(async move {
///             conn.write_all(b"PING\n").await?;
///             let mut pong = [0u8; 5];
///             conn.read_exact(&mut pong).await?;
///             if &pong == b"PONG\n" { Ok(()) } else { Err(std::io::Error::other("bad pong")) }
///         })
///     });
/// let pool = Pool::builder(manager)
///     .check_after_idle(Some(Duration::from_secs(1)))
///     .build()?;
/// let mut conn = pool.get().await?;
/// conn.write_all(b"GET key\n").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub struct TcpManager {
    addrs: Vec<String>,
    connect_timeout: Duration,
    nodelay: bool,
    keepalive: Option<Duration>,
    reject_unread: bool,
    check: Option<CheckFn<TcpConnection>>,
}

impl fmt::Debug for TcpManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpManager")
            .field("addrs", &self.addrs)
            .field("connect_timeout", &self.connect_timeout)
            .field("nodelay", &self.nodelay)
            .field("keepalive", &self.keepalive)
            .field("reject_unread", &self.reject_unread)
            .field("check", &self.check.as_ref().map(|_| "<user check>"))
            .finish()
    }
}

impl TcpManager {
    /// A manager for these addresses (`"host:port"`, tried in order).
    /// Defaults: connect timeout 5 s per attempt, `TCP_NODELAY` on,
    /// keepalive after 60 s idle, unread bytes on return mean broken, no
    /// user check. Nothing is resolved or validated here: a bad address
    /// makes `connect` return an `InvalidInput` error that names it (a
    /// permanent one if no entry is well formed, see
    /// [`Manager::is_permanent`]).
    ///
    /// ```
    /// use latchless::managers::TcpManager;
    /// let m = TcpManager::new(["127.0.0.1:6379"]);
    /// assert!(format!("{m:?}").contains("127.0.0.1:6379"));
    /// ```
    pub fn new<I, S>(addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            addrs: addrs.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            reject_unread: true,
            check: None,
        }
    }

    /// Bound on one connection attempt (one resolved address). Default 5 s.
    /// The pool's own `connect_timeout` bounds the whole `connect`.
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// let m = TcpManager::new(["127.0.0.1:7000"]).connect_timeout(std::time::Duration::from_millis(500));
    /// # drop(m);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Set `TCP_NODELAY` on new connections (default `true`: pooled
    /// connections carry small request/response messages).
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// let m = TcpManager::new(["127.0.0.1:7000"]).nodelay(false);
    /// # drop(m);
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// TCP keepalive: probe an idle connection after this long without
    /// traffic (`None`: off). Default `Some(60 s)`.
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// let m = TcpManager::new(["127.0.0.1:7000"]).keepalive(None);
    /// # drop(m);
    /// ```
    pub fn keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// Whether bytes nobody read, waiting on a returned connection, make it
    /// broken (default `true`: a request/response protocol is out of sync
    /// when a reply was left unread). Turn it off for protocols in which
    /// the server may push data unasked.
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// let m = TcpManager::new(["127.0.0.1:7000"]).reject_unread(false);
    /// # drop(m);
    /// ```
    pub fn reject_unread(mut self, on: bool) -> Self {
        self.reject_unread = on;
        self
    }

    /// A user round-trip check run by [`Manager::check`] (the pool's
    /// pre-ping, see `Builder::check_after_idle`) after the socket probe.
    /// A failure marks the connection broken and the pool replaces it.
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// use tokio::io::AsyncWriteExt;
    /// let m = TcpManager::new(["127.0.0.1:7000"])
    ///     .with_check(|conn| Box::pin(async move { conn.write_all(b"\n").await }));
    /// # drop(m);
    /// ```
    pub fn with_check<F>(mut self, check: F) -> Self
    where
        F: for<'a> Fn(&'a mut TcpConnection) -> BoxFuture<'a, io::Result<()>>
            + Send
            + Sync
            + 'static,
    {
        self.check = Some(Arc::new(check));
        self
    }

    /// The addresses, in the order they are tried.
    ///
    /// ```
    /// # use latchless::managers::TcpManager;
    /// assert_eq!(TcpManager::new(["a:1", "b:2"]).addrs(), ["a:1", "b:2"]);
    /// ```
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Open a socket to the first address that answers, configured.
    ///
    /// ```no_run
    /// # async fn demo() -> std::io::Result<()> {
    /// let stream = latchless::managers::TcpManager::new(["127.0.0.1:7000"]).open().await?;
    /// # drop(stream); Ok(()) }
    /// ```
    pub async fn open(&self) -> io::Result<TcpStream> {
        if self.addrs.is_empty() {
            return Err(BadAddress::error(
                "TcpManager has no address to connect to".to_owned(),
            ));
        }
        // A failed attempt says more than a malformed sibling entry, and
        // only a list with no well-formed entry is a permanent error.
        let mut last_attempt: Option<io::Error> = None;
        let mut last_malformed: Option<io::Error> = None;
        for addr in &self.addrs {
            if let Some(reason) = malformed(addr) {
                last_malformed = Some(BadAddress::error(format!("bad address {addr:?}: {reason}")));
                continue;
            }
            let resolved = match tokio::time::timeout(
                self.connect_timeout,
                tokio::net::lookup_host(addr.as_str()),
            )
            .await
            {
                Ok(Ok(found)) => found.collect::<Vec<_>>(),
                Ok(Err(e)) => {
                    last_attempt = Some(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("bad address {addr:?}: {e}"),
                    ));
                    continue;
                }
                Err(_) => {
                    last_attempt = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "resolving {addr:?} took longer than {:?}",
                            self.connect_timeout
                        ),
                    ));
                    continue;
                }
            };
            for sa in resolved {
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(sa)).await {
                    Ok(Ok(stream)) => {
                        self.configure(&stream)?;
                        return Ok(stream);
                    }
                    Ok(Err(e)) => {
                        last_attempt = Some(io::Error::new(
                            e.kind(),
                            format!("connect to {addr} ({sa}): {e}"),
                        ))
                    }
                    Err(_) => {
                        last_attempt = Some(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "connect to {addr} ({sa}) took longer than {:?}",
                                self.connect_timeout
                            ),
                        ))
                    }
                }
            }
        }
        Err(last_attempt.or(last_malformed).unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no address found for {:?}", self.addrs),
            )
        }))
    }

    fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.nodelay)?;
        if let Some(idle) = self.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(idle);
            socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
        }
        Ok(())
    }
}

impl Manager for TcpManager {
    type Connection = TcpConnection;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<TcpConnection> {
        self.open().await.map(TcpConnection::new)
    }

    async fn check(&self, conn: &mut TcpConnection) -> io::Result<()> {
        if self.is_broken(conn) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection is broken (peer closed, I/O error or unread bytes)",
            ));
        }
        run_check(self.check.as_ref(), conn).await
    }

    fn is_broken(&self, conn: &mut TcpConnection) -> bool {
        conn.probe_broken(self.reject_unread, |s| s)
    }

    /// `true` only for an address list that cannot work: empty, or no
    /// entry of it well formed (see the type's docs). A refused, reset,
    /// timed-out or unresolved connect is retried.
    ///
    /// ```
    /// use latchless::Manager;
    /// use latchless::managers::TcpManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let empty = TcpManager::new(Vec::<String>::new());
    /// let err = empty.connect().await.unwrap_err();
    /// assert!(empty.is_permanent(&err));
    ///
    /// let malformed = TcpManager::new(["no port here"]);
    /// let err = malformed.connect().await.unwrap_err();
    /// assert!(malformed.is_permanent(&err));
    ///
    /// // A refused connection may succeed later: not permanent.
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// assert!(!TcpManager::new(["127.0.0.1:1"]).is_permanent(&refused));
    /// # }
    /// ```
    fn is_permanent(&self, error: &io::Error) -> bool {
        is_bad_address(error)
    }
}

/// The payload of the errors [`TcpManager::open`] returns when its address
/// list cannot work (see [`is_bad_address`]): a type of its own, so that
/// `is_permanent` recognises them without reading messages.
#[derive(Debug)]
struct BadAddress(String);

impl BadAddress {
    fn error(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, Self(message))
    }
}

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadAddress {}

/// The error says the address list is empty or has no well-formed entry
/// (made by [`TcpManager::open`]), which no retry can fix.
pub(crate) fn is_bad_address(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<BadAddress>())
}

/// Why `addr` can never resolve, judged from its text alone (what
/// `ToSocketAddrs` rejects before asking DNS, plus an empty host, which
/// no resolver answers); `None` if it is well formed.
fn malformed(addr: &str) -> Option<&'static str> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some("expected host:port");
    };
    if host.is_empty() {
        return Some("empty host name");
    }
    if host.contains('\0') {
        return Some("NUL byte in the host name");
    }
    if port.parse::<u16>().is_err() {
        return Some("the port is not a number from 0 to 65535");
    }
    None
}

/// Run the user check, marking the connection broken if it fails.
pub(crate) async fn run_check<S>(
    check: Option<&CheckFn<TcpConnection<S>>>,
    conn: &mut TcpConnection<S>,
) -> io::Result<()> {
    match check {
        None => Ok(()),
        Some(check) => {
            let result = check(conn).await;
            if result.is_err() {
                conn.broken = true;
            }
            result
        }
    }
}

/// A pooled byte stream that records its own brokenness: any I/O error,
/// an end of stream while reading, or a shutdown marks it broken, and so
/// does [`mark_broken`](Self::mark_broken). The managers read the mark in
/// [`Manager::is_broken`], so a connection that failed mid-request is
/// closed rather than handed to the next caller out of sync.
///
/// Implements tokio's `AsyncRead` and `AsyncWrite`; use it through
/// `AsyncReadExt`/`AsyncWriteExt` (on a `Pooled` it derefs to this).
///
/// ```no_run
/// use latchless::managers::{TcpConnection, TcpManager};
/// use tokio::io::AsyncWriteExt;
/// # async fn demo() -> std::io::Result<()> {
/// let stream = TcpManager::new(["127.0.0.1:7000"]).open().await?;
/// let mut conn = TcpConnection::new(stream);
/// if conn.write_all(b"hello").await.is_err() {
///     assert!(conn.is_marked_broken());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub struct TcpConnection<S = TcpStream> {
    stream: S,
    broken: bool,
}

impl<S> TcpConnection<S> {
    /// Wrap an open stream (not marked broken).
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// let conn = TcpConnection::new(std::io::Cursor::new(Vec::<u8>::new()));
    /// assert!(!conn.is_marked_broken());
    /// ```
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            broken: false,
        }
    }

    /// Mark the connection broken: the pool closes it when it is returned
    /// (or when a pre-ping runs) instead of reusing it. Use it when the
    /// protocol is out of sync in a way no I/O error shows, e.g. a request
    /// cancelled between writing the request and reading the reply.
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// let mut conn = TcpConnection::new(std::io::Cursor::new(Vec::<u8>::new()));
    /// conn.mark_broken();
    /// assert!(conn.is_marked_broken());
    /// ```
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether an I/O error, an end of stream, a shutdown or
    /// [`mark_broken`](Self::mark_broken) marked this connection.
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// assert!(!TcpConnection::new(std::io::Cursor::new(Vec::<u8>::new())).is_marked_broken());
    /// ```
    pub fn is_marked_broken(&self) -> bool {
        self.broken
    }

    /// The stream. Reads and writes straight on it are not tracked.
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// let conn = TcpConnection::new(std::io::Cursor::new(vec![1u8]));
    /// assert_eq!(conn.get_ref().get_ref(), &[1]);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably. Reads and writes straight on it are not
    /// tracked: call [`mark_broken`](Self::mark_broken) on failure.
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// let mut conn = TcpConnection::new(std::io::Cursor::new(vec![1u8]));
    /// conn.get_mut().set_position(1);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, unwrapped (e.g. after `Pooled::detach`).
    ///
    /// ```
    /// # use latchless::managers::TcpConnection;
    /// let cursor = TcpConnection::new(std::io::Cursor::new(vec![1u8])).into_inner();
    /// assert_eq!(cursor.into_inner(), vec![1]);
    /// ```
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Marked broken, or the socket under `tcp` says the peer is gone.
    pub(crate) fn probe_broken(
        &mut self,
        reject_unread: bool,
        tcp: impl FnOnce(&S) -> &TcpStream,
    ) -> bool {
        if self.broken {
            return true;
        }
        if socket_broken(tcp(&self.stream), reject_unread) {
            self.broken = true;
        }
        self.broken
    }
}

/// Non-blocking probe: the peer closed or reset the connection, or (with
/// `reject_unread`) bytes are waiting that nobody read. No round trip.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn socket_broken(stream: &TcpStream, reject_unread: bool) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, exclusively borrowed pollfd for an open
    // socket (the stream is borrowed for the call); a zero timeout makes
    // `poll` return at once; it only writes `revents`.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ready < 0 {
        // EINTR/ENOMEM: no verdict; the pre-ping will tell.
        return false;
    }
    let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    if pfd.revents & gone != 0 {
        return true;
    }
    reject_unread && pfd.revents & libc::POLLIN != 0
}

/// Non-blocking probe (portable fallback): peek one byte.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn socket_broken(stream: &TcpStream, reject_unread: bool) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut buf) {
        Ok(0) => true,
        Ok(_) => reject_unread,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TcpConnection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wanted = buf.remaining();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        match &result {
            Poll::Ready(Err(_)) => this.broken = true,
            // End of stream: the peer closed; nothing more comes.
            Poll::Ready(Ok(())) if wanted > 0 && buf.filled().len() == before => this.broken = true,
            _ => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TcpConnection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        match &result {
            Poll::Ready(Err(_)) => this.broken = true,
            Poll::Ready(Ok(0)) if !buf.is_empty() => this.broken = true,
            _ => {}
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &result {
            this.broken = true;
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A shut-down stream can never be reused.
        this.broken = true;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(_)) = &result {
            this.broken = true;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
