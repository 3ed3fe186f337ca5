//! A small reverse proxy in front of three upstream HTTP/1.1 servers (all
//! in this process, on 127.0.0.1, 127.0.0.2 and 127.0.0.3), measured by its
//! own closed-loop load generator, three ways over the same upstreams:
//!
//! - `keyed`: the upstream connections in a latchless [`KeyedPool`] (one
//!   key per upstream origin), requests sent through a [`Router`];
//! - `hyper-util`: hyper-util's legacy pooled `Client`, the usual choice;
//! - `per-request`: a new upstream connection for every request.
//!
//! For each it prints requests/s and the p50, p99 and p99.9 latency seen
//! by the clients (through the proxy and back), the errors, how many
//! connections the upstreams accepted, and the CPU time of the whole
//! process per request (proxy, upstreams and clients: a figure that other
//! load on the machine disturbs far less than requests/s); then the keyed
//! pool's figures as ratios to the other two. The proxy maps `/u0/...`, `/u1/...`,
//! `/u2/...` to the three upstreams; each client keeps one keep-alive
//! connection to the proxy and sends its next request as soon as the
//! last one is answered, to the three upstreams in turn.
//!
//! The variants run in turn, in rounds (the first of each round rotating,
//! so that a machine whose load drifts favours none of them); each run
//! has half a second of warm-up, then its measured window. The default
//! run takes about 23 s.
//!
//! ```text
//! cargo run --release --features http --example gateway
//! cargo run --release --features http --example gateway -- --clients 128 --seconds 5 --rounds 5
//! cargo run --release --features http --example gateway -- --only keyed
//! ```
//!
//! Options: `--clients N` (default 64), `--seconds S` measured per run
//! (default 2), `--rounds R` (default 3), `--only
//! keyed|hyper-util|per-request`, `--tls` (the upstreams speak HTTPS, with
//! a certificate made at start; every variant trusts its CA, hyper-util's
//! `Client` through a small rustls connector of this example's, since
//! hyper-util has none), `--help`. A mistyped option prints what is wrong
//! and the usage line and exits with status 2.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use latchless::KeyedPool;
use latchless::bytes::Bytes;
use latchless::http::{self, Request, Response, StatusCode};
use latchless::http_body_util::{BodyExt, Full};
use latchless::managers::{HttpManager, Router};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const UPSTREAMS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// What an upstream answers: a small JSON-ish body.
const PAYLOAD: &[u8] = &[b'x'; 256];

/// How the proxy reaches its upstreams.
enum Forward {
    Keyed(Router),
    HyperUtil(Client<HttpConnector, Full<Bytes>>),
    HyperUtilTls(Client<RustlsConnector, Full<Bytes>>),
    PerRequest,
}

impl Forward {
    fn name(&self) -> &'static str {
        match self {
            Self::Keyed(_) => "keyed",
            Self::HyperUtil(_) | Self::HyperUtilTls(_) => "hyper-util",
            Self::PerRequest => "per-request",
        }
    }
}

struct Proxy {
    forward: Forward,
    upstreams: Vec<SocketAddr>,
    /// `Some` when the upstreams speak HTTPS.
    tls: Option<TlsConnector>,
}

/// hyper-util's legacy `Client` over rustls: a TCP connect (no delay), a
/// TLS handshake with the URI's host as server name.
#[derive(Clone)]
struct RustlsConnector(TlsConnector);

impl tower_service::Service<http::Uri> for RustlsConnector {
    type Response = TokioIo<TlsIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let stream = tls_connect(&tls, &host, port).await?;
            Ok(TokioIo::new(TlsIo(stream)))
        })
    }
}

/// A TLS connection to `host:port`, its name checked against `host`.
async fn tls_connect(
    tls: &TlsConnector,
    host: &str,
    port: u16,
) -> io::Result<TlsStream<TcpStream>> {
    let sock = TcpStream::connect((host, port)).await?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tls.connect(name, sock).await
}

/// A client TLS stream as hyper-util's pool wants it (`Connection`).
struct TlsIo(TlsStream<TcpStream>);

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A CA and a certificate for the upstreams' addresses signed by it: the
/// CA's PEM and the server's TLS settings (ALPN `http/1.1`).
fn pki() -> (String, TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
        .expect("the CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let names = UPSTREAMS
        .iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>();
    let cert = CertificateParams::new(names)
        .expect("server parameters")
        .signed_by(&key, &ca)
        .expect("the server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
        .expect("the server's TLS settings");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), TlsAcceptor::from(Arc::new(config)))
}

/// One upstream: answers every request with `PAYLOAD`, keeps connections
/// alive, counts the connections it accepts; over TLS with `tls`.
async fn upstream(ip: &str, accepted: Arc<AtomicUsize>, tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind an upstream");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::Relaxed);
            let _ = sock.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(PAYLOAD))))
                });
                let server = server_http1::Builder::new();
                let _ = match tls {
                    None => server.serve_connection(TokioIo::new(sock), service).await,
                    Some(tls) => match tls.accept(sock).await {
                        Ok(sock) => server.serve_connection(TokioIo::new(sock), service).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    addr
}

/// The proxy: forwards `/u<i>/...` to upstream `i`, answers 502 when the
/// upstream exchange fails.
async fn proxy(proxy: Arc<Proxy>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| forward(proxy.clone(), req));
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), service)
                    .await;
            });
        }
    });
    addr
}

async fn forward(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = req.into_parts();
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let index = path
        .strip_prefix("/u")
        .and_then(|p| p.bytes().next())
        .map(|b| usize::from(b.wrapping_sub(b'0')))
        .filter(|i| *i < proxy.upstreams.len());
    let Some(index) = index else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"no such upstream"),
        ));
    };
    let upstream = proxy.upstreams[index];
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::from(e.to_string()))),
    };
    let scheme = if proxy.tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{upstream}{path}");
    let answer = match &proxy.forward {
        Forward::Keyed(router) => {
            let request = Request::builder()
                .method(head.method)
                .uri(uri)
                .body(body)
                .unwrap();
            match router.send(request, 1).await {
                Ok(response) => read(response).await,
                Err(e) => Err(e.to_string()),
            }
        }
        Forward::HyperUtil(client) => through(client, head.method, uri, body).await,
        Forward::HyperUtilTls(client) => through(client, head.method, uri, body).await,
        Forward::PerRequest => once(upstream, proxy.tls.as_ref(), head.method, path, body).await,
    };
    Ok(match answer {
        Ok((status, body)) => reply(status, body),
        Err(e) => reply(StatusCode::BAD_GATEWAY, Bytes::from(e)),
    })
}

/// One request through hyper-util's pooled `Client`, over either connector.
async fn through<C>(
    client: &Client<C, Full<Bytes>>,
    method: http::Method,
    uri: String,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .unwrap();
    match client.request(request).await {
        Ok(response) => read(response).await,
        Err(e) => Err(e.to_string()),
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// The status and whole body of a response (reading the body to its end
/// is what gives a pooled connection back).
async fn read<B>(response: Response<B>) -> Result<(StatusCode, Bytes), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let status = response.status();
    match response.into_body().collect().await {
        Ok(body) => Ok((status, body.to_bytes())),
        Err(e) => Err(e.to_string()),
    }
}

/// One request on a connection of its own (over TLS with `tls`), closed
/// after the response.
async fn once(
    upstream: SocketAddr,
    tls: Option<&TlsConnector>,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let (mut sender, conn) = match tls {
        None => {
            let sock = TcpStream::connect(upstream)
                .await
                .map_err(|e| e.to_string())?;
            let _ = sock.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
                .await
                .map_err(|e| e.to_string())?;
            (
                sender,
                tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) }),
            )
        }
        Some(tls) => {
            let host = upstream.ip().to_string();
            let sock = tls_connect(tls, &host, upstream.port())
                .await
                .map_err(|e| e.to_string())?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
                .await
                .map_err(|e| e.to_string())?;
            (
                sender,
                tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) }),
            )
        }
    };
    drop(conn); // the task drives the connection until it closes
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, upstream.to_string())
        .body(Full::new(body))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    read(response).await
}

/// What the clients saw in the measured window, and the process's CPU
/// time per request over the whole run (warm-up included).
struct Run {
    latencies_us: Vec<u32>,
    errors: usize,
    window: Duration,
    /// Requests answered, warm-up included.
    answered: usize,
    /// CPU time of the whole process (proxy, upstreams, clients).
    cpu: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.window.as_secs_f64()
    }

    /// CPU microseconds per request answered.
    fn cpu_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.answered.max(1) as f64
    }

    /// The `q` quantile, in ms.
    fn quantile(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_us.len());
        f64::from(self.latencies_us[i - 1]) / 1000.0
    }
}

/// `clients` closed-loop clients against `proxy`: each sends a request,
/// waits for the whole answer, sends the next; latencies counted after
/// `warmup`, for `measure`.
async fn load(proxy: SocketAddr, clients: usize, warmup: Duration, measure: Duration) -> Run {
    let start = Instant::now() + Duration::from_millis(50);
    let (from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut answered) = (Vec::new(), 0usize, 0usize);
            let sock = TcpStream::connect(proxy)
                .await
                .expect("connect to the proxy");
            let _ = sock.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(sock))
                    .await
                    .expect("handshake with the proxy");
            tokio::spawn(conn);
            tokio::time::sleep_until(start.into()).await;
            let mut n = c;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                n += 1;
                let request = Request::get(format!("/u{}/item/{n}", n % UPSTREAMS.len()))
                    .header(http::header::HOST, "gateway")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await;
                        status == StatusCode::OK && body.is_ok_and(|b| b.to_bytes() == PAYLOAD)
                    }
                    Err(_) => false,
                };
                answered += usize::from(ok);
                if sent >= from {
                    if ok {
                        latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        errors += 1;
                    }
                }
                if !ok && sender.ready().await.is_err() {
                    break;
                }
            }
            (latencies, errors, answered)
        }));
    }
    let mut run = Run {
        latencies_us: Vec::new(),
        errors: 0,
        window: measure,
        answered: 0,
        cpu: Duration::ZERO,
    };
    let cpu = cpu_time();
    for t in tasks {
        let (latencies, errors, answered) = t.await.expect("a client task");
        run.latencies_us.extend(latencies);
        run.errors += errors;
        run.answered += answered;
    }
    run.cpu = cpu_time() - cpu;
    run
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF is valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

struct Options {
    clients: usize,
    millis: u64,
    rounds: usize,
    only: Option<String>,
    tls: bool,
}

const USAGE: &str = "options: --clients N, --seconds S, --rounds R, \
--only keyed|hyper-util|per-request, --tls, --help";

/// The command line's options, or what is wrong with them (then the
/// example prints it with the usage line and exits with status 2: a
/// mistyped option gets a message, not a panic).
fn options() -> Options {
    match parse_options(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            std::process::exit(0)
        }
        Err(problem) => {
            eprintln!("gateway: {problem}\n{USAGE}");
            std::process::exit(2)
        }
    }
}

/// [`options`] from `args`; `None` for `--help`.
fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        clients: 64,
        millis: 2000,
        rounds: 3,
        only: None,
        tls: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls" => {
                o.tls = true;
                continue;
            }
            "--help" | "-h" => return Ok(None),
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        // At least `min` (a count at least 1, a run at least 1 ms).
        let number = |what: &str, min: f64| match value.parse::<f64>() {
            Ok(v) if v >= min && v.is_finite() => Ok(v),
            _ => Err(format!(
                "{what} must be a number of at least {min}, not {value:?}"
            )),
        };
        match arg.as_str() {
            "--clients" => o.clients = number("--clients", 1.0)? as usize,
            "--seconds" => o.millis = (number("--seconds", 0.001)? * 1000.0) as u64,
            "--rounds" => o.rounds = number("--rounds", 1.0)? as usize,
            "--only" => match value.as_str() {
                "keyed" | "hyper-util" | "per-request" => o.only = Some(value),
                _ => return Err(format!("--only: no variant {value:?}")),
            },
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Some(o))
}

/// One variant's proxy and what its rounds measured.
struct Measured {
    name: &'static str,
    proxy: SocketAddr,
    run: Run,
    upstream_conns: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (ca_pem, acceptor) = pki();
    let mut upstreams = Vec::new();
    for ip in UPSTREAMS {
        let tls = o.tls.then(|| acceptor.clone());
        upstreams.push(upstream(ip, accepted.clone(), tls).await);
    }
    let manager = HttpManager::builder()
        .add_root_pem(ca_pem.as_bytes())
        .build()?;
    // The same client TLS settings (the CA, ALPN `http/1.1`) for all.
    let tls = o
        .tls
        .then(|| TlsConnector::from(manager.tls_config().clone()));
    let keyed = KeyedPool::builder(manager)
        .max_per_key(o.clients)
        .max_total(o.clients * UPSTREAMS.len())
        .build()?;
    let scheme = if o.tls { "https://" } else { "http://" };
    let hyper_util = match &tls {
        None => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Forward::HyperUtil(Client::builder(TokioExecutor::new()).build(connector))
        }
        Some(tls) => Forward::HyperUtilTls(
            Client::builder(TokioExecutor::new()).build(RustlsConnector(tls.clone())),
        ),
    };
    let variants = [
        Forward::Keyed(Router::new().mount(scheme, keyed)),
        hyper_util,
        Forward::PerRequest,
    ];
    let mut measured = Vec::new();
    for forward in variants {
        let name = forward.name();
        if o.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let proxy = proxy(Arc::new(Proxy {
            forward,
            upstreams: upstreams.clone(),
            tls: tls.clone(),
        }))
        .await;
        measured.push(Measured {
            name,
            proxy,
            run: Run {
                latencies_us: Vec::new(),
                errors: 0,
                window: Duration::ZERO,
                answered: 0,
                cpu: Duration::ZERO,
            },
            upstream_conns: 0,
        });
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (warmup, window) = (Duration::from_millis(500), Duration::from_millis(o.millis));
    println!(
        "gateway: {} {} upstreams, {} closed-loop clients, {} rounds of {:?} warm-up + {:?} measured \
         per variant (variants in turn, the first rotating), {workers} worker threads \
         (proxy, upstreams and clients share them)",
        upstreams.len(),
        if o.tls { "HTTPS" } else { "HTTP" },
        o.clients,
        o.rounds,
        warmup,
        window
    );
    let variants = measured.len();
    for round in 0..o.rounds {
        for k in 0..variants {
            let m = &mut measured[(round + k) % variants];
            let before = accepted.load(Ordering::Relaxed);
            let run = load(m.proxy, o.clients, warmup, window).await;
            m.upstream_conns += accepted.load(Ordering::Relaxed) - before;
            m.run.latencies_us.extend(run.latencies_us);
            m.run.errors += run.errors;
            m.run.window += run.window;
            m.run.answered += run.answered;
            m.run.cpu += run.cpu;
        }
    }
    println!(
        "{:<12} {:>11} {:>9} {:>9} {:>9} {:>7} {:>15} {:>12}",
        "variant",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "upstream conns",
        "CPU us/req"
    );
    for m in &mut measured {
        m.run.latencies_us.sort_unstable();
        let run = &m.run;
        println!(
            "{:<12} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>15} {:>12.1}",
            m.name,
            run.rate(),
            run.quantile(0.50),
            run.quantile(0.99),
            run.quantile(0.999),
            run.errors,
            m.upstream_conns,
            run.cpu_per_request()
        );
    }
    let find = |n: &str| measured.iter().find(|m| m.name == n).map(|m| &m.run);
    if let Some(keyed) = find("keyed") {
        for (other, label) in [
            ("hyper-util", "hyper-util: "),
            ("per-request", "per-request:"),
        ] {
            if let Some(r) = find(other) {
                println!(
                    "keyed vs {label} requests/s {:.2}x, p50 {:.2}x, p99 {:.2}x, p99.9 {:.2}x, CPU/request {:.2}x (below 1 is better but for requests/s)",
                    keyed.rate() / r.rate(),
                    keyed.quantile(0.5) / r.quantile(0.5),
                    keyed.quantile(0.99) / r.quantile(0.99),
                    keyed.quantile(0.999) / r.quantile(0.999),
                    keyed.cpu_per_request() / r.cpu_per_request(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<Options>, String> {
        parse_options(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn options_are_read_and_defaulted() {
        let o = parse("--clients 16 --seconds 0.5 --rounds 2 --only keyed --tls")
            .unwrap()
            .unwrap();
        let got = (o.clients, o.millis, o.rounds, o.only.as_deref(), o.tls);
        assert_eq!(got, (16, 500, 2, Some("keyed"), true));
        let o = parse("").unwrap().unwrap();
        assert_eq!(
            (o.clients, o.millis, o.rounds, o.only, o.tls),
            (64, 2000, 3, None, false)
        );
        assert!(parse("--help").unwrap().is_none());
    }

    #[test]
    fn a_mistyped_option_is_an_error_not_a_panic() {
        for (line, says) in [
            ("--rounds", "--rounds needs a value"),
            ("--rounds x", "--rounds must be a number"),
            ("--clients 0", "--clients must be a number"),
            ("--seconds -1", "--seconds must be a number"),
            ("--only foo", "no variant \"foo\""),
            ("--verbose 1", "unknown option --verbose"),
        ] {
            let err = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line:?} was taken"));
            assert!(err.contains(says), "{line:?}: {err}");
        }
    }
}
