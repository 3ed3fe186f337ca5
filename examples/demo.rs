//! What pooling saves: the same workload against a loopback server that
//! simulates a network round trip, once opening a connection per request
//! and once through a `latchless` pool.
//!
//! Opening a connection costs `SETUP_ROUND_TRIPS` round trips (TCP, TLS and
//! auth, simulated by the server's delay); a request costs one. With a
//! 100 ms RTT, 1000 requests cost 1000 x 4 x 100 ms = 400 s of latency
//! without a pool, and only 10 setups with a pool of 10.
//!
//! ```text
//! cargo run --release --example demo -- [--rtt-ms 20] [--requests 400] [--concurrency 10]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use latchless::{Manager, Pool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SETUP_ROUND_TRIPS: u32 = 3;

/// A loopback server that answers every line after one simulated RTT.
async fn serve(listener: TcpListener, rtt: Duration) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tokio::time::sleep(rtt).await;
                if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One client connection: a buffered socket.
struct Conn {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn round_trip(&mut self, msg: &str) -> std::io::Result<String> {
        self.w.write_all(format!("{msg}\n").as_bytes()).await?;
        self.lines
            .next_line()
            .await?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"))
    }

    /// TCP connect plus the simulated TLS and auth exchanges.
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let (r, w) = TcpStream::connect(addr).await?.into_split();
        let mut c = Conn {
            lines: BufReader::new(r).lines(),
            w,
        };
        for step in 0..SETUP_ROUND_TRIPS {
            c.round_trip(&format!("handshake {step}")).await?;
        }
        Ok(c)
    }
}

struct Tcp {
    addr: SocketAddr,
}

impl Manager for Tcp {
    type Connection = Conn;
    type Error = std::io::Error;

    async fn connect(&self) -> std::io::Result<Conn> {
        Conn::open(self.addr).await
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rtt = Duration::from_millis(arg("--rtt-ms", 20));
    let requests = arg("--requests", 400);
    let concurrency = arg("--concurrency", 10).max(1);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, rtt));

    println!(
        "{requests} requests, {concurrency} at a time, simulated RTT {rtt:?}, \
         connection setup = {SETUP_ROUND_TRIPS} round trips\n"
    );

    // Without a pool: every request opens (and drops) its own connection.
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            tokio::spawn(async move {
                for i in (t..requests).step_by(concurrency as usize) {
                    let mut c = Conn::open(addr).await?;
                    c.round_trip(&format!("request {i}")).await?;
                }
                Ok::<_, std::io::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let unpooled = start.elapsed();
    println!("connection per request : {unpooled:>10.2?}  ({requests} connections opened)");

    // With a pool of `concurrency` connections.
    let pool = Pool::builder(Tcp { addr })
        .max_size(concurrency as usize)
        .build()?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in (t..requests).step_by(concurrency as usize) {
                    let mut c = pool.get().await.map_err(std::io::Error::other)?;
                    c.round_trip(&format!("request {i}")).await?;
                }
                Ok::<_, std::io::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let pooled = start.elapsed();
    let m = pool.metrics();
    println!(
        "latchless pool          : {pooled:>10.2?}  ({} connections opened, {} waits)",
        m.opened, m.waits
    );
    println!(
        "\npooling saved {:.2?} ({:.1}x faster)",
        unpooled.saturating_sub(pooled),
        unpooled.as_secs_f64() / pooled.as_secs_f64()
    );
    pool.close().await;
    Ok(())
}
