//! `HttpManager` against in-test HTTP/1.1 servers on 127.0.0.1, 127.0.0.2
//! and 127.0.0.3 (hyper's server, plain and over TLS with rcgen
//! certificates, and raw sockets where the test needs a server that
//! misbehaves on cue): requests per origin with connection reuse, a
//! connection the server closed seen as broken, the keep-alive race
//! answered by one more attempt on a new connection, a request that may
//! have been written never sent twice, `Connection: close` and
//! `Keep-Alive: timeout` respected, and which connect errors are
//! permanent.
#![cfg(feature = "http")]

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use latchless::bytes::Bytes;
use latchless::http;
use latchless::http_body_util::{BodyExt, Full};
use latchless::managers::rustls;
use latchless::managers::{
    HttpConnection, HttpError, HttpManager, HttpOriginManager, Origin, RequestError,
    send_with_retry,
};
use latchless::{KeyedManager, Manager, Pool, PoolError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Every test's bound: far above what each needs, so that a hang fails
/// the test instead of the run.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("the test finished within its bound")
}

/// What a server saw: connections accepted, requests read (as text, the
/// head and body of each), ALPN protocols negotiated.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    requests: Mutex<Vec<String>>,
    alpn: Mutex<Vec<Option<Vec<u8>>>>,
}

impl Seen {
    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A CA and a server certificate for `names` (DNS names or IP
/// addresses) signed by it: (CA PEM, server certificate, server key).
fn pki(names: &[&str]) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("latchless http test CA {names:?}"),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (ca.pem(), cert.der().clone(), key)
}

/// A TLS acceptor for `cert`, offering these ALPN protocols.
fn acceptor(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

/// A hyper HTTP/1.1 server on `ip` (over TLS with `tls`) answering every
/// request with `label method path host=<Host header> body=<body>`,
/// keeping connections alive.
async fn hyper_server(
    ip: &str,
    label: &'static str,
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (s, tls) = (s.clone(), tls.clone());
            tokio::spawn(async move {
                let log = s.clone();
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = log.clone();
                    async move {
                        let (head, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let host = head
                            .headers
                            .get(http::header::HOST)
                            .map(|h| h.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let text = format!(
                            "{label} {} {} host={host} body={}",
                            head.method,
                            head.uri,
                            String::from_utf8_lossy(&body)
                        );
                        s.requests.lock().unwrap().push(text.clone());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    }
                });
                match tls {
                    None => {
                        s.accepted.fetch_add(1, SeqCst);
                        let _ = server_http1::Builder::new()
                            .serve_connection(TokioIo::new(sock), service)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(sock).await else {
                            return;
                        };
                        s.accepted.fetch_add(1, SeqCst);
                        s.alpn
                            .lock()
                            .unwrap()
                            .push(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                        let _ = server_http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Read one request (head, and a body of `content-length` bytes) as text;
/// `None` at the end of the stream.
async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    sock.read_exact(&mut body).await.ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// A raw HTTP/1.1 server on `ip`: each accepted connection is handed to
/// `serve` with its index (0 for the first).
async fn raw_server<F, Fut>(ip: &str, serve: F) -> (SocketAddr, Arc<Seen>)
where
    F: Fn(TcpStream, usize, Arc<Seen>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let index = s.accepted.fetch_add(1, SeqCst);
            tokio::spawn(serve(sock, index, s.clone()));
        }
    });
    (addr, seen)
}

/// Read a request, record it, and write `response` (a whole HTTP/1.1
/// response); `false` at the end of the stream.
async fn answer(sock: &mut TcpStream, seen: &Seen, response: &str) -> bool {
    let Some(request) = read_request(sock).await else {
        return false;
    };
    seen.requests.lock().unwrap().push(request);
    sock.write_all(response.as_bytes()).await.is_ok()
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn origin(scheme: &str, addr: SocketAddr) -> Origin {
    format!("{scheme}://{addr}").parse().unwrap()
}

fn pool(manager: HttpOriginManager) -> Pool<HttpOriginManager> {
    Pool::builder(manager)
        .max_size(2)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// What `pool.get()` gives.
type Got = Result<latchless::Pooled<HttpOriginManager>, PoolError<HttpError>>;

/// A `get` for `send_with_retry` that counts its calls.
fn counting_get(
    pool: &Pool<HttpOriginManager>,
    gets: &Arc<AtomicUsize>,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Got> + Send>> {
    let (pool, gets) = (pool.clone(), gets.clone());
    move || {
        gets.fetch_add(1, SeqCst);
        let pool = pool.clone();
        Box::pin(async move { pool.get().await })
    }
}

async fn body_text(response: http::Response<latchless::managers::ResponseBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn get(uri: &str) -> http::Request<&'static str> {
    http::Request::get(uri).body("").unwrap()
}

/// A guard over a connection that records, when dropped, whether the
/// connection was marked broken by then, and puts an unmarked one back
/// in `home` if it has one (a pool that checks nothing).
struct Probe {
    conn: Option<HttpConnection>,
    marked: Arc<Mutex<Vec<bool>>>,
    home: Option<Arc<Mutex<Vec<HttpConnection>>>>,
}

impl Probe {
    fn new(conn: HttpConnection, marked: &Arc<Mutex<Vec<bool>>>) -> Self {
        Self {
            conn: Some(conn),
            marked: marked.clone(),
            home: None,
        }
    }
}

impl Deref for Probe {
    type Target = HttpConnection;
    fn deref(&self) -> &HttpConnection {
        self.conn.as_ref().unwrap()
    }
}

impl DerefMut for Probe {
    fn deref_mut(&mut self) -> &mut HttpConnection {
        self.conn.as_mut().unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let conn = self.conn.take().unwrap();
        let marked = conn.is_marked_broken();
        self.marked.lock().unwrap().push(marked);
        if let (false, Some(home)) = (marked, &self.home) {
            home.lock().unwrap().push(conn);
        }
    }
}

#[tokio::test]
async fn requests_reach_each_origin_over_http_and_https_on_reused_connections() {
    bounded(async {
        let (ca_pem, cert, key) = pki(&["127.0.0.3"]);
        let (a, seen_a) = hyper_server("127.0.0.1", "one", None).await;
        let (b, seen_b) = hyper_server("127.0.0.2", "two", None).await;
        let tls = acceptor(cert, key, &[b"http/1.1"]);
        let (c, seen_c) = hyper_server("127.0.0.3", "three", Some(tls)).await;
        let manager = HttpManager::builder()
            .add_root_pem(ca_pem.as_bytes())
            .build()
            .unwrap();

        let cases = [
            (origin("http", a), "one", &seen_a),
            (origin("http", b), "two", &seen_b),
            (origin("https", c), "three", &seen_c),
        ];
        for (origin, label, seen) in &cases {
            let pool = pool(manager.for_origin(origin.clone()));
            for i in 0..3 {
                // Origin-form and absolute-form URIs alike.
                let uri = if i % 2 == 0 {
                    format!("/item/{i}")
                } else {
                    format!("{origin}/item/{i}")
                };
                let request = http::Request::post(uri).body(format!("n{i}")).unwrap();
                let response = send_with_retry(|| pool.get(), request, 3).await.unwrap();
                assert_eq!(response.status(), 200);
                let conn = response
                    .body()
                    .connection()
                    .expect("held until the body ends");
                assert_eq!(conn.origin(), origin);
                let text = body_text(response).await;
                let host = format!("{}:{}", origin.host(), origin.port());
                assert_eq!(
                    text,
                    format!("{label} POST /item/{i} host={host} body=n{i}")
                );
            }
            assert_eq!(
                seen.accepted(),
                1,
                "{origin}: one connection served every request"
            );
            assert_eq!(seen.requests().len(), 3);
            assert_eq!(
                pool.state().idle,
                1,
                "{origin}: the connection went back to the pool"
            );
        }
        assert_eq!(
            *seen_c.alpn.lock().unwrap(),
            vec![Some(b"http/1.1".to_vec())],
            "ALPN http/1.1 negotiated"
        );

        // The keyed manager opens a connection to whichever origin it is
        // asked for.
        for (origin, _, _) in &cases {
            let conn = manager.connect(origin).await.unwrap();
            assert_eq!(conn.origin(), origin);
            assert!(!conn.is_broken());
        }

        // A request naming another origin is not sent on this one.
        let pool_a = pool(manager.for_origin(cases[0].0.clone()));
        let stray = get(&format!("http://{b}/elsewhere"));
        match send_with_retry(|| pool_a.get(), stray, 3).await {
            Err(RequestError::OriginMismatch {
                request,
                connection,
            }) => {
                assert_eq!(request, cases[1].0);
                assert_eq!(connection, cases[0].0);
            }
            other => panic!("expected an origin mismatch, got {other:?}"),
        }
        assert_eq!(
            seen_b.requests().len(),
            3,
            "nothing more reached the other origin"
        );
    })
    .await;
}

#[test]
fn origins_are_equal_keys_whatever_the_spelling() {
    let spellings = [
        "http://Example.COM",
        "http://example.com:80/",
        "HTTP://example.com/path?q=1",
        "http://user@example.com",
    ];
    let keys: HashSet<Origin> = spellings.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let https: Origin = "https://example.com".parse().unwrap();
    assert!(!keys.contains(&https));
    assert_eq!(https.to_string(), "https://example.com:443");
    let v6: Origin = "http://[::1]:8080".parse().unwrap();
    assert_eq!((v6.host(), v6.port()), ("[::1]", 8080));
    assert!("ftp://example.com".parse::<Origin>().is_err());
    assert!("/just/a/path".parse::<Origin>().is_err());
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_broken_and_replaced() {
    bounded(async {
        // Closes a connection idle for 100 ms.
        let (addr, seen) = raw_server("127.0.0.2", |mut sock, _, seen| async move {
            while let Ok(true) =
                tokio::time::timeout(Duration::from_millis(100), answer(&mut sock, &seen, OK)).await
            {
            }
        })
        .await;
        let origin = origin("http", addr);
        let manager = HttpManager::new();

        let mut conn = manager.connect(&origin).await.unwrap();
        let request = http::Request::get("/")
            .header(http::header::HOST, origin.host())
            .body(Full::new(Bytes::new()))
            .unwrap();
        conn.sender().ready().await.unwrap();
        let response = conn.sender().send_request(request).await.unwrap();
        conn.observe_response(&response);
        response.into_body().collect().await.unwrap();
        assert!(
            !manager.is_broken(&origin, &mut conn),
            "open right after its response"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(conn.is_closed());
        assert!(
            manager.is_broken(&origin, &mut conn),
            "broken once the server closed it"
        );
        assert!(matches!(
            manager.check(&origin, &mut conn).await,
            Err(HttpError::Closed)
        ));

        // Through a pool: the next `get` sees the idle connection broken
        // and opens another; the request goes out once.
        let pool = pool(manager.for_origin(origin.clone()));
        let gets = Arc::new(AtomicUsize::new(0));
        let response = send_with_retry(counting_get(&pool, &gets), get("/a"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let response = send_with_retry(counting_get(&pool, &gets), get("/b"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(gets.load(SeqCst), 2, "no attempt met the closed connection");
        assert_eq!(seen.accepted(), 3);
        assert_eq!(seen.requests().len(), 3);
        assert!(
            pool.metrics().broken >= 1,
            "the closed connection was discarded"
        );
    })
    .await;
}

/// A server on its own thread (so that it runs while the test's runtime
/// is blocked) for the keep-alive race: its first connection answers one
/// request, then is closed, unannounced, when `close` is sent; the second
/// answers until the client hangs up. It records each request's first
/// line with the index of its connection.
struct RaceServer {
    addr: SocketAddr,
    close: std::sync::mpsc::Sender<()>,
    requests: Arc<Mutex<Vec<(usize, String)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl RaceServer {
    fn start(ip: &str) -> Self {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, close_rx) = std::sync::mpsc::channel::<()>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let r = requests.clone();
        let thread = std::thread::spawn(move || {
            for index in 0..2 {
                let (mut sock, _) = listener.accept().unwrap();
                sock.set_read_timeout(Some(BOUND)).unwrap();
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match sock.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => break,
                        }
                    }
                    if !head.ends_with(b"\r\n\r\n") {
                        break;
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap()
                        .to_owned();
                    r.lock().unwrap().push((index, line));
                    sock.write_all(OK.as_bytes()).unwrap();
                    if index == 0 {
                        close_rx.recv().unwrap();
                        break;
                    }
                }
            }
        });
        Self {
            addr,
            close,
            requests,
            thread,
        }
    }

    /// Close the first connection, and give the close time to reach the
    /// client while this thread, the test runtime's only one, is blocked:
    /// the kernel then knows of the close and hyper's connection task,
    /// which cannot run, does not.
    fn close_first_connection_unseen(&self) {
        self.close.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    fn requests(&self) -> Vec<(usize, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait for the server to finish, the runtime running meanwhile (the
    /// client's connection tasks close the sockets the server waits on).
    async fn join(self) {
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
    }
}

fn first_and_second() -> Vec<(usize, String)> {
    vec![
        (0, "GET /first HTTP/1.1".to_owned()),
        (1, "GET /second HTTP/1.1".to_owned()),
    ]
}

/// The race through a pool: the server closes a keep-alive connection
/// (without having said it would) just before the pool hands it out
/// again; the pool sees the close (the kernel's word) and opens another.
#[tokio::test(flavor = "current_thread")]
async fn the_keep_alive_race_costs_the_pool_a_connection_not_the_request() {
    bounded(async {
        let server = RaceServer::start("127.0.0.3");
        let pool = Pool::builder(HttpManager::new().for_origin(origin("http", server.addr)))
            .max_size(2)
            .check_after_idle(None)
            .build()
            .unwrap();
        let gets = Arc::new(AtomicUsize::new(0));
        let response = send_with_retry(counting_get(&pool, &gets), get("/first"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        // Let the connection task settle into idle first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.close_first_connection_unseen();

        let response = send_with_retry(counting_get(&pool, &gets), get("/second"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(
            gets.load(SeqCst),
            2,
            "the pool handed out a sound connection"
        );
        assert_eq!(
            server.requests(),
            first_and_second(),
            "the second request went once, on a new connection"
        );
        assert_eq!(
            pool.metrics().broken,
            1,
            "the closed connection was discarded"
        );
        drop(pool);
        server.join().await;
    })
    .await;
}

/// The race inside `send_with_retry`: its `get` hands out, unchecked, the
/// connection the server has just closed (as a pool does when the close
/// arrives between its check and the send). The request is not written
/// on it, and goes on a new connection.
#[tokio::test(flavor = "current_thread")]
async fn the_keep_alive_race_sends_the_request_again_on_a_new_connection() {
    bounded(async {
        let server = RaceServer::start("127.0.0.1");
        let origin = origin("http", server.addr);
        let manager = HttpManager::new();
        // A pool without checks: connections come back here on drop,
        // unless marked broken.
        let idle = Arc::new(Mutex::new(Vec::<HttpConnection>::new()));
        let marked = Arc::new(Mutex::new(Vec::new()));
        let gets = Arc::new(AtomicUsize::new(0));
        let unchecked_get = || {
            gets.fetch_add(1, SeqCst);
            let stale = idle.lock().unwrap().pop();
            let (m, o, mk, home) = (
                manager.clone(),
                origin.clone(),
                marked.clone(),
                idle.clone(),
            );
            async move {
                let conn = match stale {
                    Some(conn) => conn,
                    None => m.connect(&o).await?,
                };
                Ok::<_, HttpError>(Probe {
                    conn: Some(conn),
                    marked: mk,
                    home: Some(home),
                })
            }
        };
        let response = send_with_retry(unchecked_get, get("/first"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(idle.lock().unwrap().len(), 1, "the connection came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.close_first_connection_unseen();

        let response = send_with_retry(unchecked_get, get("/second"), 3)
            .await
            .unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(
            gets.load(SeqCst),
            3,
            "the second request took two connections"
        );
        assert_eq!(
            *marked.lock().unwrap(),
            [false, true, false],
            "the stale one was marked"
        );
        assert_eq!(
            server.requests(),
            first_and_second(),
            "the second request was written once, on the new connection"
        );
        idle.lock().unwrap().clear();
        server.join().await;
    })
    .await;
}

#[tokio::test]
async fn a_connection_found_closed_before_sending_is_replaced_and_the_retries_are_bounded() {
    bounded(async {
        // Answers one request per connection, then closes it unannounced.
        let (addr, seen) = raw_server("127.0.0.1", |mut sock, _, seen| async move {
            answer(&mut sock, &seen, OK).await;
        })
        .await;
        let origin = origin("http", addr);
        let manager = HttpManager::new();
        // Connections the server has closed, as a stale idle set would hold.
        let mut stale = Vec::new();
        for _ in 0..3 {
            let mut conn = manager.connect(&origin).await.unwrap();
            conn.sender().ready().await.unwrap();
            let request = http::Request::get("/warm")
                .header(http::header::HOST, origin.host())
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = conn.sender().send_request(request).await.unwrap();
            response.into_body().collect().await.unwrap();
            stale.push(conn);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while stale.iter().any(|c| !c.is_closed()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let marked = Arc::new(Mutex::new(Vec::new()));

        // Two stale connections, then a fresh one: two retries suffice.
        let mut queue = vec![stale.pop().unwrap(), stale.pop().unwrap()];
        let (m, o, mk) = (manager.clone(), origin.clone(), marked.clone());
        let response = send_with_retry(
            || {
                let next = queue.pop();
                let (m, o, mk) = (m.clone(), o.clone(), mk.clone());
                async move {
                    let conn = match next {
                        Some(conn) => conn,
                        None => m.connect(&o).await?,
                    };
                    Ok::<_, HttpError>(Probe::new(conn, &mk))
                }
            },
            get("/after-two-stale"),
            2,
        )
        .await
        .unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(
            *marked.lock().unwrap(),
            [true, true, false],
            "the stale ones were marked"
        );
        assert_eq!(
            seen.requests().len(),
            4,
            "three warm-ups and the request, once"
        );

        // No retry allowed: the stale connection's failure is returned,
        // as a request that was never sent.
        let mut last = Some(stale.pop().unwrap());
        match send_with_retry(
            || {
                let conn = last.take();
                async move { conn.map(Box::new).ok_or("no more connections") }
            },
            get("/never"),
            0,
        )
        .await
        {
            Err(RequestError::NotSent { attempts, .. }) => assert_eq!(attempts, 1),
            other => panic!("expected NotSent, got {other:?}"),
        }
        assert_eq!(seen.requests().len(), 4, "nothing was written");
    })
    .await;
}

#[tokio::test]
async fn a_request_that_may_have_been_written_is_never_sent_again() {
    bounded(async {
        // Reads the request whole, then hangs up without a word.
        let (addr, seen) = raw_server("127.0.0.2", |mut sock, _, seen| async move {
            if let Some(request) = read_request(&mut sock).await {
                seen.requests.lock().unwrap().push(request);
            }
        })
        .await;
        let pool = pool(HttpManager::new().for_origin(origin("http", addr)));
        let gets = Arc::new(AtomicUsize::new(0));
        let request = http::Request::post("/orders").body("item=7").unwrap();
        match send_with_retry(counting_get(&pool, &gets), request, 3).await {
            Err(RequestError::Failed(e)) => assert!(e.is_incomplete_message(), "{e}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(gets.load(SeqCst), 1, "no second attempt");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(seen.accepted(), 1);
        let requests = seen.requests();
        assert_eq!(requests.len(), 1, "the POST reached the server once");
        assert!(requests[0].starts_with("POST /orders") && requests[0].ends_with("item=7"));
        assert_eq!(pool.metrics().broken, 1, "the failed connection was closed");
    })
    .await;
}

#[tokio::test]
async fn connection_close_from_the_server_keeps_the_connection_out_of_the_pool() {
    bounded(async {
        // Says `Connection: close`, but leaves the closing to the client.
        let (addr, seen) = raw_server("127.0.0.3", |mut sock, _, seen| async move {
            let response = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
            if answer(&mut sock, &seen, response).await {
                tokio::time::sleep(BOUND).await;
            }
        })
        .await;
        let pool = pool(HttpManager::new().for_origin(origin("http", addr)));
        let gets = Arc::new(AtomicUsize::new(0));
        for path in ["/one", "/two"] {
            let response = send_with_retry(counting_get(&pool, &gets), get(path), 3)
                .await
                .unwrap();
            let conn = response.body().connection().unwrap();
            assert!(conn.server_will_close() && conn.is_broken());
            assert_eq!(body_text(response).await, "ok");
        }
        assert_eq!(
            gets.load(SeqCst),
            2,
            "each request on the first connection it got"
        );
        assert_eq!(seen.accepted(), 2, "a connection per request");
        assert_eq!(pool.metrics().broken, 2);
        assert_eq!(pool.state().idle, 0);
    })
    .await;
}

#[tokio::test]
async fn the_servers_keep_alive_timeout_retires_an_idle_connection_before_the_server_does() {
    bounded(async {
        // Advertises a 2 s idle timeout and never closes.
        let (addr, seen) = raw_server("127.0.0.1", |mut sock, _, seen| async move {
            let response =
                "HTTP/1.1 200 OK\r\nkeep-alive: timeout=2, max=100\r\ncontent-length: 2\r\n\r\nok";
            while answer(&mut sock, &seen, response).await {}
        })
        .await;
        let pool = pool(HttpManager::new().for_origin(origin("http", addr)));
        let response = send_with_retry(|| pool.get(), get("/"), 3).await.unwrap();
        let timeout = response.body().connection().unwrap().keep_alive_timeout();
        assert_eq!(timeout, Some(Duration::from_secs(2)));
        assert_eq!(body_text(response).await, "ok");

        // Reused well within the timeout...
        let response = send_with_retry(|| pool.get(), get("/"), 3).await.unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(seen.accepted(), 1);
        // ...not once the timeout less its margin (1 s) has passed, though
        // the server has not closed it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut conn = pool.try_get();
        assert!(conn.is_none(), "the idle connection was retired");
        let response = send_with_retry(|| pool.get(), get("/"), 3).await.unwrap();
        assert_eq!(body_text(response).await, "ok");
        assert_eq!(seen.accepted(), 2);
        assert_eq!(pool.metrics().broken, 1);
        conn.take();
    })
    .await;
}

#[tokio::test]
async fn a_body_dropped_before_its_end_marks_the_connection_broken() {
    bounded(async {
        // Promises ten bytes, sends five, and waits.
        let (addr, _seen) = raw_server("127.0.0.2", |mut sock, _, seen| async move {
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
            if answer(&mut sock, &seen, response).await {
                tokio::time::sleep(BOUND).await;
            }
        })
        .await;
        let origin = origin("http", addr);
        let manager = HttpManager::new();
        let marked = Arc::new(Mutex::new(Vec::new()));
        let response = send_with_retry(
            || {
                let (m, o, mk) = (manager.clone(), origin.clone(), marked.clone());
                async move { Ok::<_, HttpError>(Probe::new(m.connect(&o).await?, &mk)) }
            },
            get("/partial"),
            0,
        )
        .await
        .unwrap();
        assert!(marked.lock().unwrap().is_empty(), "held by the body");
        drop(response);
        assert_eq!(*marked.lock().unwrap(), [true]);
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_permanent() {
    bounded(async {
        let (ca_pem, cert, key) = pki(&["localhost"]);
        let (addr, _) = hyper_server(
            "127.0.0.1",
            "tls",
            Some(acceptor(cert, key, &[b"http/1.1"])),
        )
        .await;
        let (other_ca, _, _) = pki(&["localhost"]);

        // Signed by a CA the manager does not trust.
        let untrusted = HttpManager::builder()
            .add_root_pem(other_ca.as_bytes())
            .build()
            .unwrap();
        let by_name: Origin = format!("https://localhost:{}", addr.port())
            .parse()
            .unwrap();
        let err = untrusted.connect(&by_name).await.unwrap_err();
        assert!(matches!(err, HttpError::Connect(_)), "{err}");
        assert!(untrusted.is_permanent(&by_name, &err), "{err}");

        // Trusted, but not issued for the address connected to.
        let trusted = HttpManager::builder()
            .add_root_pem(ca_pem.as_bytes())
            .build()
            .unwrap();
        let by_ip = origin("https", addr);
        let err = trusted.connect(&by_ip).await.unwrap_err();
        assert!(trusted.is_permanent(&by_ip, &err), "{err}");
        // ...while the name it was issued for works.
        trusted.connect(&by_name).await.unwrap();

        // A pool returns the permanent error at once, not after its
        // acquire timeout.
        let pool = Pool::builder(untrusted.for_origin(by_name))
            .acquire_timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let started = Instant::now();
        assert!(matches!(
            pool.get().await,
            Err(PoolError::Connect(HttpError::Connect(_)))
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await;
}

#[tokio::test]
async fn a_tls_server_that_does_not_speak_http11_is_permanent() {
    bounded(async {
        let (ca_pem, cert, key) = pki(&["127.0.0.2"]);
        let (addr, _) =
            hyper_server("127.0.0.2", "h2 only", Some(acceptor(cert, key, &[b"h2"]))).await;
        let manager = HttpManager::builder()
            .add_root_pem(ca_pem.as_bytes())
            .build()
            .unwrap();
        let origin = origin("https", addr);
        let err = manager.connect(&origin).await.unwrap_err();
        assert!(manager.is_permanent(&origin, &err), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_connect_is_not_permanent() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let manager = HttpManager::new();
        for origin in [origin("http", addr), origin("https", addr)] {
            let err = manager.connect(&origin).await.unwrap_err();
            match &err {
                HttpError::Connect(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}")
                }
                other => panic!("expected a connect error, got {other:?}"),
            }
            assert!(!manager.is_permanent(&origin, &err));
            assert!(!manager.for_origin(origin).is_permanent(&err));
        }
    })
    .await;
}

/// Through a `Router`, a request with an absolute URI reaches the server
/// in origin form (`/path?query`) with the origin's `Host`, or with the
/// `Host` the caller set; a URI without a path asks for `/`.
#[tokio::test]
async fn the_router_sends_origin_form_and_the_host_of_the_origin() {
    bounded(async {
        let (addr, seen) = raw_server("127.0.0.2", |mut sock, _, seen| async move {
            while answer(&mut sock, &seen, OK).await {}
        })
        .await;
        let router = latchless::managers::Router::new().mount(
            "http://",
            latchless::KeyedPool::builder(HttpManager::new())
                .build()
                .unwrap(),
        );
        let sent = [
            get(&format!("http://{addr}/items/7?fields=a%20b")),
            get(&format!("http://{addr}")),
            http::Request::get(format!("http://{addr}/named"))
                .header(http::header::HOST, "api.example")
                .body("")
                .unwrap(),
        ];
        for request in sent {
            let response = router.send(request, 1).await.unwrap();
            assert_eq!(body_text(response).await, "ok");
        }
        let heads: Vec<(String, String)> = seen
            .requests()
            .iter()
            .map(|r| {
                let line = r.lines().next().unwrap().to_owned();
                let host = r
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap();
                (line, host)
            })
            .collect();
        let host = addr.to_string();
        assert_eq!(
            heads,
            [
                (
                    "GET /items/7?fields=a%20b HTTP/1.1".to_owned(),
                    host.clone()
                ),
                ("GET / HTTP/1.1".to_owned(), host),
                ("GET /named HTTP/1.1".to_owned(), "api.example".to_owned()),
            ]
        );
        assert_eq!(seen.accepted(), 1, "one connection served all three");
    })
    .await;
}
