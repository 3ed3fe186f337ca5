//! `KeyedPool` over `HttpManager` against three upstream servers of the
//! test's own (hyper servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3, the
//! third over TLS with an rcgen certificate), watched from the servers'
//! side: connections accepted, connections whose serving ended, and, at
//! every accept, how many accepted sockets the client has not closed (the
//! kernel's word, a `poll(2)` of each server-side socket), per server and
//! across the three.
//!
//! What is proven: 1,000 concurrent requests never open more than
//! `max_per_key` connections to one server nor more than `max_total`
//! across them; a key unused for `idle_timeout` is forgotten and the
//! server sees its connections close; past `max_keys` the least recently
//! used idle key goes (its server sees the close, the other keeps its
//! connection); servers closing idle keep-alive connections sooner than
//! the pool would fail no request; a key whose host refuses connects (or
//! does not resolve) fails alone.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use latchless::bytes::Bytes;
use latchless::http;
use latchless::http_body_util::{BodyExt, Full};
use latchless::managers::rustls;
use latchless::managers::{HttpError, HttpManager, Origin, RequestError, send_with_retry};
use latchless::{KeyedPool, PoolError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Every test's bound: far above what each needs, so that a hang fails
/// the test instead of the run.
const BOUND: Duration = Duration::from_secs(90);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("the test finished within its bound")
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after
/// `within`.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the client has closed (or reset) the connection of this
/// server-side socket, as the kernel reports it now; unread bytes do not
/// count (a request, or a TLS alert, may sit before the end).
fn client_closed(socket: &std::net::TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for an open socket (borrowed for the call),
    // timeout 0: returns at once, writes only `revents`.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// What the servers of one test see together: each accepted socket the
/// client has not closed yet (a duplicate of the server's descriptor, held
/// while the server serves it), and the most of them seen at any accept,
/// per server and in all. Connections only ever open at an accept, so the
/// maxima sampled there are the maxima.
#[derive(Default)]
struct Watch {
    open: Mutex<Vec<(usize, u64, std::net::TcpStream)>>,
    max_open: [AtomicUsize; 3],
    max_total: AtomicUsize,
    next_id: AtomicU64,
}

impl Watch {
    /// A socket accepted by server `server`: counts what is open now.
    fn accepted(&self, server: usize, socket: std::net::TcpStream) -> u64 {
        let id = self.next_id.fetch_add(1, SeqCst);
        let mut open = self.open.lock().unwrap();
        open.retain(|(_, _, s)| !client_closed(s));
        open.push((server, id, socket));
        self.max_total.fetch_max(open.len(), SeqCst);
        let mine = open.iter().filter(|(s, _, _)| *s == server).count();
        self.max_open[server].fetch_max(mine, SeqCst);
        id
    }

    /// The server is done with connection `id` (its duplicate goes, so
    /// that the server's own close reaches the client).
    fn ended(&self, id: u64) {
        self.open.lock().unwrap().retain(|(_, i, _)| *i != id);
    }

    fn max_open(&self, server: usize) -> usize {
        self.max_open[server].load(SeqCst)
    }

    fn max_total(&self) -> usize {
        self.max_total.load(SeqCst)
    }
}

/// How a server treats idle keep-alive connections.
#[derive(Clone, Copy)]
enum Idle {
    /// Keeps them for ever.
    Keep,
    /// Closes a connection idle this long, saying nothing about it.
    CloseSilently(Duration),
    /// Closes a connection idle this many seconds, and says so in every
    /// response (`Keep-Alive: timeout=N`).
    CloseAdvertised(u64),
}

/// One upstream server and what it saw.
struct Upstream {
    index: usize,
    origin: Origin,
    label: &'static str,
    accepted: AtomicUsize,
    /// Connections whose serving ended (closed by either side).
    ended: AtomicUsize,
    /// Idle connections the server closed itself.
    closed_idle: AtomicUsize,
    requests: AtomicUsize,
}

impl Upstream {
    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
    fn ended(&self) -> usize {
        self.ended.load(SeqCst)
    }
}

const LABELS: [&str; 3] = ["one", "two", "three"];
const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// A CA and a server certificate for `names` signed by it: (CA PEM,
/// server certificate, server key).
fn pki(names: &[&str]) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "latchless keyed http test CA");
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

fn acceptor(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// The three servers (the third over TLS), each treating idle
/// connections as `idle` says, and a manager that trusts the third's CA.
async fn upstreams(watch: &Arc<Watch>, idle: [Idle; 3]) -> (Vec<Arc<Upstream>>, HttpManager) {
    let (ca_pem, cert, key) = pki(&[IPS[2]]);
    let tls = acceptor(cert, key);
    let mut servers = Vec::new();
    for (index, idle) in idle.into_iter().enumerate() {
        let tls = (index == 2).then(|| tls.clone());
        servers.push(upstream(index, watch.clone(), tls, idle).await);
    }
    let manager = HttpManager::builder()
        .add_root_pem(ca_pem.as_bytes())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    (servers, manager)
}

/// Milliseconds since the first call: the servers' idle clocks.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A hyper HTTP/1.1 server on `IPS[index]` answering every request with
/// its label, counting and watching its connections.
async fn upstream(
    index: usize,
    watch: Arc<Watch>,
    tls: Option<TlsAcceptor>,
    idle: Idle,
) -> Arc<Upstream> {
    let listener = TcpListener::bind((IPS[index], 0)).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let up = Arc::new(Upstream {
        index,
        origin: format!("{scheme}://{addr}").parse().unwrap(),
        label: LABELS[index],
        accepted: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        closed_idle: AtomicUsize::new(0),
        requests: AtomicUsize::new(0),
    });
    let server = up.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let sock = sock.into_std().unwrap();
            let dup = sock.try_clone().expect("dup of an accepted socket");
            let sock = tokio::net::TcpStream::from_std(sock).unwrap();
            server.accepted.fetch_add(1, SeqCst);
            let id = watch.accepted(index, dup);
            let (server, watch, tls) = (server.clone(), watch.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve(TokioIo::new(sock), &server, idle).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(sock).await {
                            serve(TokioIo::new(stream), &server, idle).await;
                        }
                    }
                }
                watch.ended(id);
                server.ended.fetch_add(1, SeqCst);
            });
        }
    });
    up
}

/// Serves one connection; closes it once idle as `idle` says.
async fn serve<I>(io: TokioIo<I>, server: &Arc<Upstream>, idle: Idle)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(AtomicU64::new(now_ms()));
    let busy = Arc::new(AtomicUsize::new(0));
    let (s, l, b) = (server.clone(), last.clone(), busy.clone());
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (s, l, b) = (s.clone(), l.clone(), b.clone());
        b.fetch_add(1, SeqCst);
        async move {
            let _ = req.into_body().collect().await;
            s.requests.fetch_add(1, SeqCst);
            let mut response = http::Response::new(Full::new(Bytes::from(s.label)));
            if let Idle::CloseAdvertised(secs) = idle {
                response.headers_mut().insert(
                    "keep-alive",
                    http::HeaderValue::from_str(&format!("timeout={secs}")).unwrap(),
                );
            }
            l.store(now_ms(), SeqCst);
            b.fetch_sub(1, SeqCst);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = server_http1::Builder::new().serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let after = match idle {
        Idle::Keep => None,
        Idle::CloseSilently(d) => Some(d),
        Idle::CloseAdvertised(secs) => Some(Duration::from_secs(secs)),
    };
    let Some(after) = after else {
        let _ = conn.await;
        return;
    };
    let after = after.as_millis() as u64;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                let idle_for = now_ms().saturating_sub(last.load(SeqCst));
                if busy.load(SeqCst) == 0 && idle_for >= after {
                    server.closed_idle.fetch_add(1, SeqCst);
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                    return;
                }
            }
        }
    }
}

type Keyed = KeyedPool<Origin, HttpManager>;

/// One request to `up` through the keyed pool; the body read to its end.
async fn request(
    pool: &Keyed,
    up: &Upstream,
) -> Result<String, RequestError<PoolError<HttpError>>> {
    let uri = format!("{}/item", up.origin);
    let request = http::Request::get(uri).body("").unwrap();
    let response = send_with_retry(|| pool.get(&up.origin), request, 2).await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.expect("whole body");
    Ok(String::from_utf8(body.to_bytes().to_vec()).unwrap())
}

/// `n` concurrent requests spread over `servers`, each expected to
/// succeed with its server's label.
async fn burst(pool: &Keyed, servers: &[Arc<Upstream>], n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (pool, up) = (pool.clone(), servers[i % servers.len()].clone());
        tasks.push(tokio::spawn(async move {
            let body = request(&pool, &up).await;
            match body {
                Ok(body) => assert_eq!(body, up.label, "the answer of {}", up.origin),
                Err(e) => panic!("request {i} to {} failed: {e:?}", up.origin),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_never_open_more_than_each_cap() {
    bounded(async {
        // The total not binding (3 x 4 <= 12): each server accepts at most
        // max_per_key connections over the whole run, none ever replaced.
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        let pool = KeyedPool::builder(manager)
            .max_per_key(4)
            .max_total(12)
            .acquire_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        burst(&pool, &servers, 1000).await;
        assert_eq!(pool.metrics().closed, 0, "no connection replaced");
        for up in &servers {
            assert!(
                (1..=4).contains(&up.accepted()),
                "{} accepted {} connections (max_per_key 4)",
                up.origin,
                up.accepted()
            );
            assert_eq!(
                up.requests.load(SeqCst),
                1000 / 3 + usize::from(up.index < 1)
            );
        }
        let sum: usize = servers.iter().map(|s| s.accepted()).sum();
        assert!(sum <= 12, "{sum} accepted in all (max_total 12)");
        assert_eq!(pool.state().in_use, 0);

        // The total binding (6 < 3 x 4): connections move between keys,
        // and at no accept do the servers hold more than the caps.
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        let pool = KeyedPool::builder(manager)
            .max_per_key(4)
            .max_total(6)
            .acquire_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        burst(&pool, &servers, 1000).await;
        for up in &servers {
            let most = watch.max_open(up.index);
            assert!(
                (1..=4).contains(&most),
                "{} had {most} connections open at once (max_per_key 4)",
                up.origin
            );
        }
        let most = watch.max_total();
        assert!(
            most <= 6,
            "{most} connections open at once in all (max_total 6)"
        );
        let accepted: Vec<usize> = servers.iter().map(|s| s.accepted()).collect();
        let state = pool.state();
        assert!(state.size <= 6 && state.in_use == 0, "{state:?}");
        eprintln!(
            "binding total: accepted {accepted:?}, most open at once {:?} / {most}",
            [watch.max_open(0), watch.max_open(1), watch.max_open(2)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_unused_for_idle_timeout_is_forgotten_and_its_server_sees_the_close() {
    bounded(async {
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        let pool = KeyedPool::builder(manager)
            .max_per_key(3)
            .idle_timeout(Some(Duration::from_millis(600)))
            .build()
            .unwrap();
        // Three connections to each of the first two servers, one to the
        // TLS one.
        burst(&pool, &servers[..2], 60).await;
        request(&pool, &servers[2]).await.unwrap();
        assert_eq!(pool.keys(), 3);
        let (one, two, three) = (&servers[0], &servers[1], &servers[2]);
        assert!(one.accepted() >= 1 && three.accepted() == 1);
        // Keys one and three fall silent; key two stays in use.
        let started = Instant::now();
        while pool.keys_dropped().0 < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "keys not forgotten: {} kept",
                pool.keys()
            );
            request(&pool, two).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.keys(), 1, "only the key in use is kept");
        assert_eq!(pool.state_of(&one.origin).size, 0);
        assert_eq!(pool.state_of(&three.origin).size, 0);
        // The servers of the forgotten keys saw every connection close.
        eventually(
            "the forgotten keys' servers see the closes",
            Duration::from_secs(5),
            || one.ended() == one.accepted() && three.ended() == three.accepted(),
        )
        .await;
        assert!(
            two.ended() < two.accepted(),
            "the key in use keeps its connection"
        );
        // A forgotten key comes back on its next use, on a new connection.
        let before = one.accepted();
        assert_eq!(request(&pool, one).await.unwrap(), "one");
        assert_eq!(one.accepted(), before + 1);
        assert_eq!(pool.keys(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_keys_the_least_recently_used_idle_key_goes() {
    bounded(async {
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        let pool = KeyedPool::builder(manager).max_keys(2).build().unwrap();
        let (one, two, three) = (&servers[0], &servers[1], &servers[2]);
        request(&pool, one).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        request(&pool, two).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(pool.keys(), 2);
        // A third key: the least recently used (one) goes, its connection
        // closed; two keeps its own.
        assert_eq!(request(&pool, three).await.unwrap(), "three");
        assert_eq!(pool.keys(), 2);
        assert_eq!(pool.keys_dropped(), (0, 1));
        assert_eq!(pool.state_of(&one.origin).size, 0);
        assert_eq!(pool.state_of(&two.origin).size, 1);
        eventually(
            "server one sees its connection close",
            Duration::from_secs(5),
            || one.ended() == 1,
        )
        .await;
        assert_eq!((two.accepted(), two.ended()), (1, 0), "key two untouched");
        // Key two, used again, still on its first connection.
        assert_eq!(request(&pool, two).await.unwrap(), "two");
        assert_eq!(two.accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_closing_idle_connections_sooner_than_the_pool_fail_no_request() {
    bounded(async {
        let watch = Arc::new(Watch::default());
        // The first two close idle connections after 300 ms without a word;
        // the TLS one after a second, and says so (`Keep-Alive:
        // timeout=1`). The pool would keep them ten minutes.
        let silent = Idle::CloseSilently(Duration::from_millis(300));
        let idle = [silent, silent, Idle::CloseAdvertised(1)];
        let (servers, manager) = upstreams(&watch, idle).await;
        let pool = KeyedPool::builder(manager)
            .max_per_key(3)
            .idle_timeout(Some(Duration::from_secs(600)))
            .build()
            .unwrap();
        // Bursts apart by pauses far from the silent servers' 300 ms (a
        // connection is either in steady use or idle well past it), some
        // shorter than the TLS server's second (the pool drops those
        // itself, half a second before the server would), some longer
        // (the server closes them first).
        for pause_ms in [700, 1300, 600, 1500, 800, 1200] {
            burst(&pool, &servers, 45).await;
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        burst(&pool, &servers, 45).await;
        for up in &servers {
            assert_eq!(up.requests.load(SeqCst), 7 * 15, "{}", up.origin);
            assert!(
                up.closed_idle.load(SeqCst) >= 1,
                "{} never closed an idle connection",
                up.origin
            );
            assert!(up.accepted() > 3, "{}: connections replaced", up.origin);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_host_refuses_connects_fails_alone() {
    bounded(async {
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        // A port nobody listens on (bound, then released), and a host
        // that does not resolve.
        let refused: Origin = {
            let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
                .parse()
                .unwrap()
        };
        let unknown: Origin = "http://no-such-host.invalid:8080".parse().unwrap();
        let pool = KeyedPool::builder(manager)
            .max_per_key(2)
            .max_total(4)
            .acquire_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut dead = Vec::new();
        for i in 0..20 {
            let pool = pool.clone();
            let origin = if i % 2 == 0 {
                refused.clone()
            } else {
                unknown.clone()
            };
            dead.push(tokio::spawn(async move {
                let uri = format!("{origin}/");
                let request = http::Request::get(uri).body("").unwrap();
                send_with_retry(|| pool.get(&origin), request, 2)
                    .await
                    .map(drop)
            }));
        }
        // Meanwhile the live keys serve every request, within the same
        // max_total the dead keys' connects draw on.
        burst(&pool, &servers, 300).await;
        for d in dead {
            match d.await.unwrap() {
                Err(RequestError::Get(
                    PoolError::Connect(_) | PoolError::Unavailable(_) | PoolError::Timeout(_),
                )) => {}
                other => panic!("a dead key's request: {other:?}"),
            }
        }
        for up in &servers {
            assert_eq!(up.requests.load(SeqCst), 100);
        }
        assert!(watch.max_total() <= 4, "{} open at once", watch.max_total());
        // The dead keys are still dead; the live ones still live.
        assert!(pool.get(&refused).await.is_err());
        assert_eq!(request(&pool, &servers[0]).await.unwrap(), "one");
    })
    .await;
}

/// A connection the pool closes is closed on the wire before its place
/// and budget token go to anyone else: the server sees the end of the
/// stream before the runtime has run again (here a current-thread
/// runtime, blocked meanwhile), not when the task driving the connection
/// next runs. Without that, a key at its cap (or a pool at `max_total`)
/// could have one connection more open than the cap, the old one not yet
/// closed and its replacement already accepted.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_closed_by_the_pool_is_closed_on_the_wire_at_once() {
    bounded(async {
        let watch = Arc::new(Watch::default());
        let (servers, manager) = upstreams(&watch, [Idle::Keep; 3]).await;
        let pool = KeyedPool::builder(manager).max_per_key(1).build().unwrap();
        for up in &servers {
            assert_eq!(request(&pool, up).await.unwrap(), up.label);
            eventually(
                "the server watches its socket",
                Duration::from_secs(5),
                || {
                    watch
                        .open
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|(s, _, _)| *s == up.index)
                },
            )
            .await;
            let mut conn = pool.get(&up.origin).await.unwrap();
            latchless::KeyedPooled::mark_broken(&mut conn);
            drop(conn); // closed by the pool: no await from here on
            let open = watch.open.lock().unwrap();
            let (_, _, socket) = open.iter().find(|(s, _, _)| *s == up.index).unwrap();
            let until = Instant::now() + Duration::from_secs(2);
            while !client_closed(socket) {
                assert!(
                    Instant::now() < until,
                    "{}: the server did not see the close while the runtime was blocked",
                    up.origin
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
    .await;
}
