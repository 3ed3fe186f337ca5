//! The outage tests' TCP forwarder (`forward/mod.rs`) against an in-test
//! echo server: each mode does what its docs say, `kill_all` drops both
//! sides, and dropping the forwarder closes its port and ends its tasks.

mod forward;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use forward::{Forwarder, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The echo server's counters.
#[derive(Default)]
struct Echo {
    accepted: AtomicUsize,
    live: AtomicUsize,
}

/// Echoes every byte back until the client closes.
async fn echo_server() -> (SocketAddr, Arc<Echo>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Arc::new(Echo::default());
    let e = echo.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            e.accepted.fetch_add(1, SeqCst);
            e.live.fetch_add(1, SeqCst);
            let e = e.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = sock.read(&mut buf).await {
                    if sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                e.live.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, echo)
}

/// Far beyond what any step needs on a loaded machine.
const LONG: Duration = Duration::from_secs(10);

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Write `msg` and read it back.
async fn round_trip(conn: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    conn.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(LONG, conn.read_exact(&mut back))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    assert_eq!(back, msg);
    Ok(())
}

/// Whether the connection is closed by the other side (EOF or reset),
/// within [`LONG`].
async fn closed_by_peer(conn: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(LONG, conn.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn forward_refuse_and_forward_again_on_the_same_port() {
    let (server, echo) = echo_server().await;
    let fwd = Forwarder::start(server);
    assert_eq!((fwd.mode(), fwd.target()), (Mode::Forward, server));
    let addr = fwd.addr();
    assert!(addr.ip().is_loopback() && addr.port() != server.port());

    let mut first = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut first, b"hello").await.unwrap();
    assert_eq!((fwd.accepted(), fwd.active()), (1, 1));
    assert_eq!(echo.accepted.load(SeqCst), 1);

    fwd.set_mode(Mode::Refuse);
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    // An open connection is not touched by a mode change.
    round_trip(&mut first, b"still there").await.unwrap();

    fwd.set_mode(Mode::Forward);
    assert_eq!(fwd.addr(), addr, "the same port");
    let mut second = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut second, b"back").await.unwrap();
    assert_eq!(fwd.accepted(), 2, "the refused connect was never accepted");
    assert_eq!(echo.accepted.load(SeqCst), 2);
    eventually("two active", || fwd.active() == 2).await;

    // A client closing its side ends its forwarded connection both ways.
    drop(second);
    eventually("the closed one is gone", || fwd.active() == 1).await;
    eventually("the server saw it close", || echo.live.load(SeqCst) == 1).await;
}

#[tokio::test]
async fn hang_accepts_and_never_answers_nor_reaches_the_target() {
    let (server, echo) = echo_server().await;
    let fwd = Forwarder::start(server);
    fwd.set_mode(Mode::Hang);
    let mut conn = TcpStream::connect(fwd.addr()).await.unwrap();
    conn.write_all(b"anyone?").await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut byte)).await;
    assert!(read.is_err(), "a hung connection answered: {read:?}");
    eventually("accepted", || fwd.accepted() == 1).await;
    assert_eq!(fwd.active(), 1);
    assert_eq!(echo.accepted.load(SeqCst), 0, "nothing reached the target");

    // From Refuse straight to Hang listens again, too.
    fwd.set_mode(Mode::Refuse);
    assert!(TcpStream::connect(fwd.addr()).await.is_err());
    fwd.set_mode(Mode::Hang);
    let _second = TcpStream::connect(fwd.addr()).await.unwrap();
    eventually("both hung", || fwd.active() == 2).await;

    // The client's close is seen.
    drop(conn);
    eventually("the closed one is gone", || fwd.active() == 1).await;
}

#[tokio::test]
async fn a_target_that_is_down_closes_the_client_connection() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let fwd = Forwarder::start(closed);
    let mut conn = TcpStream::connect(fwd.addr()).await.unwrap();
    assert!(closed_by_peer(&mut conn).await);
    eventually("no connection left", || fwd.active() == 0).await;
    assert_eq!(fwd.accepted(), 1);
}

#[tokio::test]
async fn kill_all_drops_every_connection_on_both_sides_and_new_ones_still_work() {
    let (server, echo) = echo_server().await;
    let fwd = Forwarder::start(server);
    let mut forwarded = Vec::new();
    for i in 0..3u8 {
        let mut conn = TcpStream::connect(fwd.addr()).await.unwrap();
        round_trip(&mut conn, &[i]).await.unwrap();
        forwarded.push(conn);
    }
    fwd.set_mode(Mode::Hang);
    let mut hung = TcpStream::connect(fwd.addr()).await.unwrap();
    eventually("four accepted", || fwd.active() == 4).await;
    assert_eq!(echo.live.load(SeqCst), 3);

    fwd.kill_all();
    for conn in forwarded.iter_mut().chain([&mut hung]) {
        assert!(closed_by_peer(conn).await, "a connection survived kill_all");
    }
    eventually("none active", || fwd.active() == 0).await;
    eventually("the server side closed too", || echo.live.load(SeqCst) == 0).await;

    // kill_all is not a mode: the next connection is served.
    fwd.set_mode(Mode::Forward);
    let mut next = TcpStream::connect(fwd.addr()).await.unwrap();
    round_trip(&mut next, b"after").await.unwrap();
    assert_eq!(fwd.accepted(), 5);
}

#[tokio::test]
async fn drop_closes_the_port_and_ends_every_task_and_connection() {
    let (server, echo) = echo_server().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // The echo server's accept task (and this test's own, not counted).
    let before = metrics.num_alive_tasks();
    let fwd = Forwarder::start(server);
    let addr = fwd.addr();
    let mut forwarded = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut forwarded, b"x").await.unwrap();
    fwd.set_mode(Mode::Hang);
    let mut hung = TcpStream::connect(addr).await.unwrap();
    eventually("both accepted", || fwd.active() == 2).await;
    // Accept task, two connection tasks, the echo server's connection task.
    assert_eq!(metrics.num_alive_tasks(), before + 4);

    drop(fwd);
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(closed_by_peer(&mut forwarded).await);
    assert!(closed_by_peer(&mut hung).await);
    eventually("the server side closed", || echo.live.load(SeqCst) == 0).await;
    eventually("every task ended", || metrics.num_alive_tasks() == before).await;
}
