//! [`send_with_retry`]: send a request on a pooled connection, and send it
//! again on another connection when the first was found closed before a
//! byte of the request was written; [`ResponseBody`], which keeps the
//! connection out of the pool until the response has been read.
//!
//! Invariants kept: a request is sent again only when hyper proves it was
//! not written (it hands the request back, or the connection failed
//! `ready` before the request was queued), never once any of it may have
//! reached the server, whatever its method; every connection an attempt
//! failed on is marked broken, so the pool closes it; a connection goes
//! back to the pool only once its response body has been read to the end
//! (dropped earlier, it is marked broken: the rest of the body is still
//! on the wire).

use std::fmt;
use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::connection::{Attempt, HttpConnection, Mismatch};
use super::origin::{Origin, OriginError};

/// Send `request` on a connection from `get`, again on the next connection
/// from `get` (up to `max_retries` more times) when it was not written,
/// and return the response, whose body holds the connection until it has
/// been read.
///
/// `get` is how a connection is had: `|| pool.get()` on a
/// [`Pool`](crate::Pool) of [`HttpOriginManager`](super::HttpOriginManager),
/// or anything that yields a value dereferencing (mutably) to an
/// [`HttpConnection`] and returning it to its owner on drop (a pool guard;
/// a `Box<HttpConnection>` works too, closing the connection on drop).
/// The request's body is taken whole (`Bytes`, `String`, `Vec<u8>`,
/// `&'static str`...), which is what makes sending it again possible.
///
/// The request may carry an origin-form URI (`/path?query`), sent as is,
/// or an absolute one (`https://host/path`), which must name the
/// connection's origin and is sent in origin-form. A missing `Host`
/// header is filled in from the connection's origin.
///
/// # When it retries
///
/// Only when the request was certainly not written, on the connection at
/// hand:
///
/// - the connection was found closed, or not to be used, just before the
///   request was handed to hyper: hyper's `ready` failed, or
///   [`HttpConnection::is_broken`] said so (the kernel has seen the
///   server's close though hyper has not yet, the server said
///   `Connection: close`, its keep-alive timeout passed), or
/// - hyper handed the request back: the connection closed after the
///   request was queued but before its first byte was written.
///
/// This is the race every HTTP client pool meets: the server closes an
/// idle keep-alive connection just as the pool hands it out. When the
/// server's close reaches this host before the request is written, the
/// request goes on another connection. When it crosses the request on
/// the wire, the request was written and it fails (below): only the
/// caller knows whether sending it again is safe.
///
/// Each such attempt marks its connection broken (the pool closes it) and
/// takes the next connection `get` gives: another idle one the pool
/// judged sound, or a new one. After `1 + max_retries` attempts that all
/// failed that way it returns [`RequestError::NotSent`]: the request
/// never left, so sending it again later is safe.
///
/// It never retries once any part of the request may have been written:
/// a connection reset or closed while the request was being written or
/// while waiting for the response, a malformed response. Then it returns
/// [`RequestError::Failed`] (and marks the connection broken), whatever
/// the method: the server may have acted on the request. Nor does it
/// retry an error from `get` ([`RequestError::Get`]) or a response with an
/// error status, which is a response like any other.
///
/// # The connection and the response
///
/// The connection stays with the response's [`ResponseBody`] until the body
/// has been read to its end, then goes back to its owner (the pool):
/// reading the body is what frees the connection for the next request.
/// A body dropped before its end marks the connection broken. A response
/// that says the server closes the connection (`Connection: close`) marks
/// it too, so the pool does not hand it out again; a server's
/// `Keep-Alive: timeout=N` is remembered for the pool's `is_broken` (see
/// [`HttpConnection::is_broken`]).
///
/// If the future is dropped while a request is in flight, hyper closes
/// that connection and the pool does not reuse it.
///
/// ```no_run
/// use latchless::Pool;
/// use latchless::managers::{send_with_retry, HttpManager, Origin};
/// use latchless::{http, http_body_util::BodyExt};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let origin: Origin = "http://127.0.0.1:8080".parse()?;
/// let pool = Pool::builder(HttpManager::new().for_origin(origin)).max_size(16).build()?;
///
/// let request = http::Request::post("/orders").body(r#"{"item": 7}"#)?;
/// let response = send_with_retry(|| pool.get(), request, 3).await?;
/// println!("{}", response.status());
/// let body = response.into_body().collect().await?.to_bytes(); // frees the connection
/// # drop(body); Ok(()) }
/// ```
pub async fn send_with_retry<F, Fut, G, E, B>(
    mut get: F,
    request: Request<B>,
    max_retries: usize,
) -> Result<Response<ResponseBody>, RequestError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<G, E>>,
    G: DerefMut<Target = HttpConnection> + Send + 'static,
    B: Into<Bytes>,
{
    let mut request = request.map(|body| Full::new(body.into()));
    let mut attempts = 0;
    loop {
        let mut conn = get().await.map_err(RequestError::Get)?;
        attempts += 1;
        if let Err(mismatch) = conn.fit(&mut request) {
            return Err(match mismatch {
                Mismatch::Uri(e) => RequestError::Uri(e),
                Mismatch::Origin(request) => RequestError::OriginMismatch {
                    request,
                    connection: conn.origin().clone(),
                },
            });
        }
        match conn.attempt(request).await {
            Attempt::Response(response) => {
                return Ok(response.map(|body| ResponseBody::new(body, Box::new(conn))));
            }
            Attempt::Failed(error) => return Err(RequestError::Failed(error)),
            Attempt::NotSent(back, error) => {
                if attempts > max_retries {
                    return Err(RequestError::NotSent { attempts, error });
                }
                tracing::debug!(
                    origin = %conn.origin(),
                    attempt = attempts,
                    error = ?error,
                    "latchless: HTTP request not sent (connection closed); retrying on another connection",
                );
                request = back;
            }
        }
    }
}

/// Why [`send_with_retry`] returned no response. `E` is the error of the
/// `get` it was given (`PoolError<HttpError>` for a pool).
///
/// ```no_run
/// # use latchless::http;
/// use latchless::managers::{send_with_retry, RequestError};
/// # async fn demo(pool: latchless::Pool<latchless::managers::HttpOriginManager>) {
/// match send_with_retry(|| pool.get(), http::Request::get("/").body("").unwrap(), 3).await {
///     Ok(response) => println!("{}", response.status()),
///     Err(RequestError::NotSent { .. }) => println!("never sent: safe to try again later"),
///     Err(RequestError::Failed(e)) => println!("may have reached the server: {e}"),
///     Err(e) => println!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub enum RequestError<E> {
    /// `get` gave no connection (for a pool: a timeout, the pool closed,
    /// the backend down...). Nothing was sent.
    Get(E),
    /// The request's absolute URI names no HTTP origin. Nothing was sent.
    Uri(OriginError),
    /// No prefix mounted on the [`Router`](super::Router) matches the
    /// request's URL. Nothing was sent.
    NoRoute(http::Uri),
    /// The request's absolute URI names another origin than the
    /// connection's: the wrong pool (or key) was used. Nothing was sent.
    OriginMismatch {
        /// The origin the request names.
        request: Origin,
        /// The origin of the connection it was about to go on.
        connection: Origin,
    },
    /// Every attempt met a connection that closed before the request was
    /// written: the request never left, and may be sent again.
    NotSent {
        /// Connections tried (`1 + max_retries`).
        attempts: usize,
        /// hyper's error on the last of them; `None` when that connection
        /// was found closed before the request was handed to hyper.
        error: Option<hyper::Error>,
    },
    /// The request failed once it may have been written, in part or whole
    /// (the connection closed or reset before a whole response came, or
    /// the response was malformed). Not retried: the server may have
    /// acted on it.
    Failed(hyper::Error),
}

impl<E: fmt::Display> fmt::Display for RequestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get(e) => write!(f, "no connection to send the request on: {e}"),
            Self::Uri(e) => write!(f, "the request's URI: {e}"),
            Self::NoRoute(uri) => write!(
                f,
                "no pool is mounted for {uri}: mount one for its scheme, origin or a prefix of it"
            ),
            Self::OriginMismatch {
                request,
                connection,
            } => write!(
                f,
                "the request is for {request} but the connection is to {connection}: \
                 get the connection for the request's origin"
            ),
            Self::NotSent { attempts, error } => {
                write!(
                    f,
                    "the request was not sent: {attempts} connection(s) closed before it was written"
                )?;
                if let Some(error) = error {
                    write!(f, " (last: {error})")?;
                }
                f.write_str("; it is safe to send again")
            }
            Self::Failed(e) => write!(
                f,
                "the request failed after it may have reached the server, so it was not retried \
                 (it may have taken effect): {e}"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RequestError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Get(e) => Some(e),
            Self::Uri(e) => Some(e),
            Self::NoRoute(_) | Self::OriginMismatch { .. } => None,
            Self::NotSent { error, .. } => error.as_ref().map(|e| e as _),
            Self::Failed(error) => Some(error),
        }
    }
}

/// The connection a [`ResponseBody`] holds until its end, whatever owns
/// it (a pool guard, a box).
type Held = Box<dyn DerefMut<Target = HttpConnection> + Send>;

/// The body of a response from [`send_with_retry`]: hyper's [`Incoming`]
/// body, holding the connection it arrives on until its end. Read to the
/// end (or once [`is_end_stream`](Body::is_end_stream)), it lets the
/// connection go back to its owner; dropped before, it marks the
/// connection broken, since the rest of the body is still on the wire.
///
/// Read it with `http_body_util::BodyExt` (`collect`, `frame`).
///
/// ```no_run
/// # use latchless::http;
/// # use latchless::hyper;
/// use latchless::http_body_util::BodyExt;
/// # async fn demo(response: http::Response<latchless::managers::ResponseBody>) -> Result<(), hyper::Error> {
/// let bytes = response.into_body().collect().await?.to_bytes();
/// println!("{} bytes", bytes.len());
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct ResponseBody {
    inner: Incoming,
    /// `Some` until the body ended (or failed).
    conn: Option<Held>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("connection", &self.connection())
            .finish()
    }
}

impl ResponseBody {
    fn new(inner: Incoming, conn: Held) -> Self {
        let mut body = Self {
            inner,
            conn: Some(conn),
        };
        // An empty body (HEAD, 204, 304, `content-length: 0`) has ended
        // already: the connection is free now.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The connection the body is arriving on, until the body has ended.
    ///
    /// ```no_run
    /// # use latchless::http;
    /// # fn demo(response: &http::Response<latchless::managers::ResponseBody>) {
    /// if let Some(conn) = response.body().connection() {
    ///     println!("served by {} (kept: {})", conn.origin(), !conn.is_broken());
    /// }
    /// # }
    /// ```
    pub fn connection(&self) -> Option<&HttpConnection> {
        self.conn.as_deref().map(|c| &**c)
    }

    /// The body ended: the connection is idle from now and goes back.
    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.idle_from_now();
        }
    }

    /// The body failed or was abandoned: the connection cannot be reused.
    fn abandon(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.mark_broken();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Err(_)) => this.abandon(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        } else {
            self.abandon();
        }
    }
}
