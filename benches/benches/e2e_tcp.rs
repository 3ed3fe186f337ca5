//! End to end on loopback TCP: one request/response (64 bytes each way)
//! to an in-process Tokio echo server on 127.0.0.1, through a latchless
//! pool of TCP connections vs a fresh connection per request.
//!
//! - `e2e_tcp/pooled` and `e2e_tcp/connect_per_request`: one client,
//!   awaited inside one `block_on` of a 2-worker runtime that also runs
//!   the server.
//! - `e2e_tcp_concurrent/pooled/8` and `e2e_tcp_concurrent/connect_per_request/8`:
//!   throughput of 8 client tasks on the same runtime, `OPS` requests
//!   each, through a pool of 4 connections (tasks wait for each other) vs
//!   a connection per request.
//!
//! Sockets use `TCP_NODELAY`. A connection per request is closed with
//! `SO_LINGER` 0 (a reset, no TIME_WAIT), or the run would exhaust the
//! ephemeral ports; a reset is cheaper than a graceful close, so this
//! favours the baseline.
//!
//! ```text
//! cargo bench -p latchless-benches --bench e2e_tcp
//! cargo bench -p latchless-benches --bench e2e_tcp -- --warm-up-time 0.2 --measurement-time 0.5
//! ```

mod common;

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use latchless::{Manager, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request (and response) size in bytes.
const MSG: usize = 64;

/// Requests per task per iteration in the concurrent group.
const OPS: usize = 100;

/// Client tasks and pool size of the concurrent group.
const TASKS: usize = 8;
const POOL_SIZE: usize = 4;

/// Opens TCP connections to the echo server.
struct Tcp {
    addr: SocketAddr,
}

impl Manager for Tcp {
    type Connection = TcpStream;
    type Error = std::io::Error;
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Serve each connection: read `MSG` bytes, write them back, until the
/// client goes away.
async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut buf = [0u8; MSG];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn request(stream: &mut TcpStream) {
    let mut buf = [7u8; MSG];
    stream.write_all(&buf).await.expect("write");
    stream.read_exact(&mut buf).await.expect("read");
    black_box(&buf);
}

async fn pooled(pool: &Pool<Tcp>) {
    let mut conn = pool.get().await.expect("pooled connection");
    request(&mut conn).await;
}

async fn per_request(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_zero_linger().expect("linger");
    request(&mut stream).await;
}

fn e2e(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(echo_server(listener));
        addr
    });
    let pool = {
        let _in_runtime = rt.enter();
        Pool::builder(Tcp { addr })
            .max_size(POOL_SIZE)
            .build()
            .expect("valid settings")
    };

    let mut g = c.benchmark_group("e2e_tcp");
    g.bench_function("pooled", |b| b.to_async(&rt).iter(|| pooled(&pool)));
    g.bench_function("connect_per_request", |b| {
        b.to_async(&rt).iter(|| per_request(addr))
    });
    g.finish();

    let mut g = c.benchmark_group("e2e_tcp_concurrent");
    g.throughput(Throughput::Elements((TASKS * OPS) as u64));
    g.bench_with_input(BenchmarkId::new("pooled", TASKS), &TASKS, |b, &tasks| {
        b.to_async(&rt).iter(|| async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        for _ in 0..OPS {
                            pooled(&pool).await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("client task");
            }
        })
    });
    g.bench_with_input(
        BenchmarkId::new("connect_per_request", TASKS),
        &TASKS,
        |b, &tasks| {
            b.to_async(&rt).iter(|| async {
                let handles: Vec<_> = (0..tasks)
                    .map(|_| {
                        tokio::spawn(async move {
                            for _ in 0..OPS {
                                per_request(addr).await;
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.await.expect("client task");
                }
            })
        },
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = e2e
}
criterion_main!(benches);
