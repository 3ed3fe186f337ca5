//! The embedded server: TCP on 127.0.0.1, a real TLS 1.3 handshake with a
//! self-signed certificate made at start (rcgen, rustls on ring), and a
//! simulated network round-trip time (RTT) charged by the server:
//!
//! | step | round trips |
//! | --- | --- |
//! | TCP handshake | 1 |
//! | TLS 1.3 handshake (real, full: no session resumption) | 1 |
//! | authentication (challenge and response, like SCRAM) | 2 |
//! | one request | 1 |
//!
//! So a connection setup costs [`SETUP_RTTS`] RTTs plus the real work of
//! TCP and TLS on loopback; a request costs one RTT. The server counts the
//! setups it completed, so the demo reports what the server saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchless::Manager;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::compare::{DemoError, Workload};

/// Round trips one connection setup costs (TCP 1 + TLS 1 + auth 2).
pub const SETUP_RTTS: u32 = 4;

const SERVER_NAME: &str = "localhost";

/// A running embedded server (it stops with the runtime).
pub struct SimServer {
    addr: SocketAddr,
    setups: Arc<AtomicU64>,
    connector: TlsConnector,
}

impl SimServer {
    /// Make a certificate, bind 127.0.0.1:0 and start serving.
    pub async fn start(rtt: Duration) -> Result<Self, DemoError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| format!("self-signed certificate: {e}"))?;
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        server.send_tls13_tickets = 0;

        // The client trusts exactly this certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every setup is a full handshake, as a fresh client process pays.
        client.resumption = rustls::client::Resumption::disabled();

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let setups = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(server)),
            rtt,
            setups.clone(),
        ));
        Ok(SimServer {
            addr,
            setups,
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// A manager for this server.
    pub fn manager(&self) -> SimManager {
        SimManager {
            addr: self.addr,
            connector: self.connector.clone(),
            setups: self.setups.clone(),
        }
    }
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, rtt: Duration, setups: Arc<AtomicU64>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of file descriptors, say: the client sees its error.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let (tls, setups) = (tls.clone(), setups.clone());
        tokio::spawn(async move {
            // A failed connection only ends its own task.
            let _ = serve_one(sock, tls, rtt, setups).await;
        });
    }
}

async fn serve_one(
    sock: TcpStream,
    tls: TlsAcceptor,
    rtt: Duration,
    setups: Arc<AtomicU64>,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    // TCP handshake (1 RTT) and the TLS 1.3 flight (1 RTT): the client's
    // ClientHello waits here for them before the real handshake runs.
    tokio::time::sleep(rtt * 2).await;
    let mut io = BufReader::new(tls.accept(sock).await?);
    let mut line = String::new();

    // Authentication: two round trips.
    expect_line(&mut io, &mut line, "AUTH user").await?;
    tokio::time::sleep(rtt).await;
    send(&mut io, "CHALLENGE nonce\n").await?;
    expect_line(&mut io, &mut line, "PROOF nonce").await?;
    tokio::time::sleep(rtt).await;
    setups.fetch_add(1, Ordering::Relaxed);
    send(&mut io, "OK\n").await?;

    // Requests: one round trip each.
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        tokio::time::sleep(rtt).await;
        send(&mut io, "PONG\n").await?;
    }
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, msg: &str) -> std::io::Result<()> {
    io.write_all(msg.as_bytes()).await?;
    io.flush().await
}

async fn expect_line<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    line: &mut String,
    want: &str,
) -> std::io::Result<()> {
    line.clear();
    io.read_line(line).await?;
    if line.trim_end() == want {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected {want:?}, got {:?}", line.trim_end()),
        ))
    }
}

/// One client connection: TLS over TCP, authenticated.
pub struct SimConn {
    io: BufReader<tokio_rustls::client::TlsStream<TcpStream>>,
    line: String,
}

impl SimConn {
    async fn round_trip(&mut self, msg: &str, want: &str) -> std::io::Result<()> {
        send(&mut self.io, msg).await?;
        expect_line(&mut self.io, &mut self.line, want).await
    }
}

/// The demo's manager for the embedded server: TCP connect, TLS handshake
/// (trusting the server's self-signed certificate), authentication.
pub struct SimManager {
    addr: SocketAddr,
    connector: TlsConnector,
    setups: Arc<AtomicU64>,
}

impl Manager for SimManager {
    type Connection = SimConn;
    type Error = std::io::Error;

    async fn connect(&self) -> std::io::Result<SimConn> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
        let tls = self.connector.connect(name, tcp).await?;
        let mut conn = SimConn {
            io: BufReader::new(tls),
            line: String::new(),
        };
        conn.round_trip("AUTH user\n", "CHALLENGE nonce").await?;
        conn.round_trip("PROOF nonce\n", "OK").await?;
        Ok(conn)
    }
}

impl Workload for SimManager {
    fn request_name(&self) -> &'static str {
        "PING"
    }

    async fn request(&self, conn: &mut SimConn) -> std::io::Result<()> {
        conn.round_trip("PING\n", "PONG").await
    }

    fn server_setups(&self) -> Option<u64> {
        Some(self.setups.load(Ordering::Relaxed))
    }
}
