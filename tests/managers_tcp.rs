//! `TcpManager` against an in-test TCP server on 127.0.0.1: reuse, the
//! non-blocking broken probe (peer closed, unread bytes), I/O errors marking
//! a connection broken, the user check, address lists, connect errors, and
//! the server never seeing more than `max_size` connections, and which
//! connect errors are permanent (an unusable address list) or retried (a
//! refused port, through the outage forwarder).
#![cfg(feature = "tcp")]

mod forward;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use latchless::managers::{TcpConnection, TcpManager};
use latchless::{Manager, Pool, PoolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters of the test server.
#[derive(Default)]
struct Server {
    accepted: AtomicUsize,
    live: AtomicUsize,
    max_live: AtomicUsize,
}

/// A line server, 5-byte commands: `PING\n` -> `PONG\n` (after a 1 ms
/// pause if `slow`), `CLOSE` -> closes the socket, `JUNK\n` -> `PONG\n` and
/// an extra line nobody asked for, `MUTE\n` -> no more replies.
async fn server() -> (SocketAddr, Arc<Server>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Server::default());
    let s = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            s.accepted.fetch_add(1, SeqCst);
            let now = s.live.fetch_add(1, SeqCst) + 1;
            s.max_live.fetch_max(now, SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut cmd = [0u8; 5];
                let mut mute = false;
                while sock.read_exact(&mut cmd).await.is_ok() {
                    let reply: &[u8] = match &cmd {
                        b"PING\n" => b"PONG\n",
                        b"SLOW\n" => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            b"PONG\n"
                        }
                        b"JUNK\n" => b"PONG\nEXTRA\n",
                        b"MUTE\n" => {
                            mute = true;
                            b"PONG\n"
                        }
                        _ => break, // CLOSE or garbage: hang up
                    };
                    if mute && &cmd != b"MUTE\n" {
                        continue;
                    }
                    if sock.write_all(reply).await.is_err() {
                        break;
                    }
                }
                drop(sock);
                s.live.fetch_sub(1, SeqCst);
            });
        }
    });
    (addr, stats)
}

async fn ping(conn: &mut TcpConnection) -> io::Result<()> {
    conn.write_all(b"PING\n").await?;
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).await?;
    if &reply == b"PONG\n" {
        Ok(())
    } else {
        Err(io::Error::other("bad reply"))
    }
}

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn a_healthy_connection_is_reused() {
    let (addr, srv) = server().await;
    let pool = Pool::builder(TcpManager::new([addr.to_string()]))
        .max_size(1)
        .build()
        .unwrap();
    for _ in 0..50 {
        let mut conn = pool.get().await.unwrap();
        ping(&mut conn).await.unwrap();
    }
    assert_eq!(
        srv.accepted.load(SeqCst),
        1,
        "one connection served all requests"
    );
    let mut conn = pool.get().await.unwrap();
    assert!(!pool.manager().is_broken(&mut conn));
    assert!(!conn.is_marked_broken(), "nothing marked it");
    let conn = &mut *conn;
    assert!(conn.get_ref().nodelay().unwrap(), "TCP_NODELAY is set");
}

#[tokio::test]
async fn a_peer_closed_connection_is_broken_without_a_round_trip() {
    let (addr, srv) = server().await;
    let pool = Pool::builder(TcpManager::new([addr.to_string()]))
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        ping(&mut conn).await.unwrap();
        conn.write_all(b"CLOSE").await.unwrap();
        // The probe alone (no read, no write) sees the FIN.
        eventually("server closed its side", || srv.live.load(SeqCst) == 0).await;
        let start = Instant::now();
        let mut seen = false;
        while start.elapsed() < Duration::from_secs(2) {
            if pool.manager().is_broken(&mut conn) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(seen, "is_broken must see a peer-closed socket");
    }
    // Returned broken: closed, its place freed.
    assert_eq!(
        pool.state().size,
        0,
        "the broken connection was closed on return"
    );
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(srv.accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn an_unread_reply_means_out_of_sync_and_closes_the_connection() {
    let (addr, srv) = server().await;
    let pool = Pool::builder(TcpManager::new([addr.to_string()]))
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.write_all(b"JUNK\n").await.unwrap();
        let mut reply = [0u8; 5];
        conn.read_exact(&mut reply).await.unwrap();
        // "EXTRA\n" is left unread; wait until it has arrived.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let mut b = [0u8; 1];
            if conn.get_ref().peek(&mut b).await.unwrap() > 0 {
                break;
            }
        }
    }
    assert_eq!(pool.state().size, 0, "out-of-sync connection was closed");
    eventually("server saw the close", || srv.live.load(SeqCst) == 0).await;

    // With reject_unread(false) the same connection is kept.
    let pool = Pool::builder(TcpManager::new([addr.to_string()]).reject_unread(false))
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.write_all(b"JUNK\n").await.unwrap();
        let mut reply = [0u8; 11];
        conn.read_exact(&mut reply[..5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.state().size, 1);
}

#[tokio::test]
async fn a_failed_request_marks_the_connection_broken_and_costs_one_connection() {
    let (addr, srv) = server().await;
    let pool = Pool::builder(TcpManager::new([addr.to_string()]))
        .max_size(1)
        .check_after_idle(None)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.write_all(b"CLOSE").await.unwrap();
        let mut reply = [0u8; 5];
        let err = conn.read_exact(&mut reply).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(conn.is_marked_broken(), "an I/O error marks the connection");
    }
    assert_eq!(pool.state().size, 0);
    // The next request gets a fresh, working connection: one failure only.
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(srv.accepted.load(SeqCst), 2);

    // mark_broken by hand does the same.
    conn.mark_broken();
    drop(conn);
    assert_eq!(pool.state().size, 0);
}

#[tokio::test]
async fn the_user_check_replaces_a_connection_that_stopped_answering() {
    let (addr, srv) = server().await;
    let checks = Arc::new(AtomicUsize::new(0));
    let c = checks.clone();
    let manager = TcpManager::new([addr.to_string()]).with_check(move |conn| {
        c.fetch_add(1, SeqCst);
        // Bound the round trip (the pool has no check timeout of its own yet).
        Box::pin(async move {
            tokio::time::timeout(Duration::from_millis(200), ping(conn))
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no PONG")))
        })
    });
    let pool = Pool::builder(manager)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.write_all(b"MUTE\n").await.unwrap();
        let mut reply = [0u8; 5];
        conn.read_exact(&mut reply).await.unwrap();
    }
    // The idle connection no longer answers: the pre-ping fails (timeout),
    // the pool opens a new one, the caller never sees the dead one.
    let mut conn = pool.get_timeout(Duration::from_secs(5)).await.unwrap();
    ping(&mut conn).await.unwrap();
    assert!(checks.load(SeqCst) >= 1, "the user check ran");
    assert_eq!(
        srv.accepted.load(SeqCst),
        2,
        "the muted connection was replaced"
    );
}

#[tokio::test]
async fn the_address_list_falls_through_to_a_live_address() {
    let (addr, srv) = server().await;
    let manager = TcpManager::new([closed_port().to_string(), addr.to_string()]);
    let pool = Pool::builder(manager).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    ping(&mut conn).await.unwrap();
    assert_eq!(conn.get_ref().peer_addr().unwrap(), addr);
    assert_eq!(srv.accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn closed_port_and_bad_address_are_typed_connect_errors_without_a_leaked_place() {
    for (addr, kind) in [
        (closed_port().to_string(), io::ErrorKind::ConnectionRefused),
        ("not an address".to_string(), io::ErrorKind::InvalidInput),
        ("127.0.0.1:99999".to_string(), io::ErrorKind::InvalidInput),
    ] {
        let pool =
            Pool::builder(TcpManager::new([addr.clone()]).connect_timeout(Duration::from_secs(1)))
                .max_size(2)
                .fail_fast(true)
                .build()
                .unwrap();
        let start = Instant::now();
        let err = pool.get_timeout(Duration::from_secs(3)).await.unwrap_err();
        let elapsed = start.elapsed();
        match &err {
            PoolError::Connect(e) => {
                assert_eq!(e.kind(), kind, "{addr}: {e}");
                assert!(
                    e.to_string().contains(addr.as_str()),
                    "the error names the address: {e}"
                );
            }
            other => panic!("{addr}: expected Connect, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "{addr}: took {elapsed:?}");
        assert_eq!(pool.state().size, 0, "{addr}: no place leaked");
    }
    // An empty list too.
    let pool = Pool::builder(TcpManager::new(Vec::<String>::new()))
        .fail_fast(true)
        .build()
        .unwrap();
    assert!(
        matches!(pool.get().await, Err(PoolError::Connect(e)) if e.kind() == io::ErrorKind::InvalidInput)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_never_open_more_than_max_size() {
    const N: usize = 4;
    const M: usize = 200;
    let (addr, srv) = server().await;
    let pool = Pool::builder(TcpManager::new([addr.to_string()]))
        .max_size(N)
        .acquire_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..M {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            conn.write_all(b"SLOW\n").await.map_err(|e| e.to_string())?;
            let mut reply = [0u8; 5];
            conn.read_exact(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let max = srv.max_live.load(SeqCst);
    println!(
        "tcp: {M} concurrent requests over a pool of {N}: server saw at most {max} connections"
    );
    assert!(max <= N, "server saw {max} connections, max_size is {N}");
    assert!(max >= 2, "the load was concurrent");
}

#[cfg(target_os = "linux")] // relies on Linux dropping SYNs to a full accept queue
#[tokio::test]
async fn a_connect_that_hangs_is_a_timed_out_connect_error_within_the_connect_timeout() {
    // A listener whose accept queue is full (backlog 0, never accepting):
    // Linux drops further SYNs, so a connect hangs in SYN_SENT.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    let manager = TcpManager::new([addr.to_string()]).connect_timeout(Duration::from_millis(300));
    let pool = Pool::builder(manager).fail_fast(true).build().unwrap();
    let start = Instant::now();
    let err = pool.get_timeout(Duration::from_secs(5)).await.unwrap_err();
    let elapsed = start.elapsed();
    println!("tcp, connect to a full listener: {err} ({elapsed:?})");
    match &err {
        PoolError::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}"),
        other => panic!("expected Connect(TimedOut), got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(pool.state().size, 0, "no place leaked");
    drop((fillers, socket));
}

// ---- Permanent connect errors: only an address list that cannot work. ----

#[tokio::test]
async fn an_unusable_address_list_is_permanent_and_fails_at_once_with_default_settings() {
    for addrs in [
        Vec::<String>::new(),
        vec!["no port here".to_owned()],
        vec!["127.0.0.1:99999".to_owned(), ":80".to_owned()],
    ] {
        let manager = TcpManager::new(addrs.clone());
        let err = manager.connect().await.unwrap_err();
        assert!(manager.is_permanent(&err), "{addrs:?}: {err}");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{addrs:?}: {err}");

        // Default settings: a 30 s acquire timeout, retries with backoff.
        let pool = Pool::builder(manager).build().unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("tcp, {addrs:?}: {err} ({elapsed:?})");
        assert!(matches!(err, PoolError::Connect(_)), "{addrs:?}: {err:?}");
        assert!(
            elapsed < Duration::from_secs(1),
            "{addrs:?}: took {elapsed:?}"
        );
        assert_eq!(pool.metrics().permanent_errors, 1, "{addrs:?}");
        // The permanent error opened the breaker: the next get fails fast.
        let again = pool.get().await.unwrap_err();
        assert!(matches!(again, PoolError::Unavailable { .. }), "{again:?}");
        // `warm_up` on a pool of its own: the same error, at once.
        let pool = Pool::builder(TcpManager::new(addrs.clone()))
            .build()
            .unwrap();
        let start = Instant::now();
        let warm = pool.warm_up().await;
        assert!(matches!(warm, Err(PoolError::Connect(_))), "{warm:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(pool.state().size, 0);
        assert_eq!(pool.metrics().permanent_errors, 1, "{addrs:?}");
    }
}

#[tokio::test]
async fn refused_unresolved_and_partly_malformed_lists_are_not_permanent() {
    let refused = closed_port().to_string();
    for addrs in [
        vec![refused.clone()],
        // One malformed entry does not condemn a list whose other entry
        // may come back.
        vec!["no port here".to_owned(), refused.clone()],
        vec![refused.clone(), "no port here".to_owned()],
        // DNS may be down for a moment, or the name not published yet.
        vec!["no-such-host.invalid:80".to_owned()],
    ] {
        let manager = TcpManager::new(addrs.clone()).connect_timeout(Duration::from_secs(2));
        let err = manager.connect().await.unwrap_err();
        assert!(!manager.is_permanent(&err), "{addrs:?}: {err}");
    }
    // Retried until the deadline, not returned at once.
    let pool = Pool::builder(TcpManager::new([refused]))
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        PoolError::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        other => panic!("expected Connect(refused), got {other:?}"),
    }
    // Backoff pauses of 12-25, 25-50, 50-100, 100-200 ms: retries stop
    // when the next pause would pass the deadline, after 100 ms at least.
    assert!(
        elapsed >= Duration::from_millis(100),
        "not retried: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let metrics = pool.metrics();
    assert!(metrics.connect_errors >= 3, "retried: {metrics:?}");
    assert_eq!(metrics.permanent_errors, 0);
}

#[tokio::test]
async fn a_get_started_while_the_port_refuses_succeeds_once_it_listens_again() {
    let (addr, srv) = server().await;
    let fwd = forward::Forwarder::start(addr);
    fwd.set_mode(forward::Mode::Refuse);
    let pool = Pool::builder(TcpManager::new([fwd.addr().to_string()]))
        .build()
        .unwrap();
    let get = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await?;
            ping(&mut conn).await.map_err(PoolError::Connect)?;
            Ok::<_, PoolError<io::Error>>(())
        }
    });
    eventually("a refused connect", || pool.metrics().connect_errors >= 1).await;
    fwd.set_mode(forward::Mode::Forward);
    tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("the get ended")
        .unwrap()
        .unwrap();
    assert_eq!(srv.accepted.load(SeqCst), 1);
    assert_eq!(pool.metrics().permanent_errors, 0);
}
