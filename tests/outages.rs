//! Outages (issue 24): errors that retrying cannot fix fail at once, a
//! timeout says what it waited on, connects are serialised while they
//! fail, and the breaker fails `get`s fast while the backend is down, with
//! one probe at a time, until a probe connects.
//!
//! The backend here is a real TCP listener of the test's own on
//! 127.0.0.1 (a port with nothing listening refuses; a listener that
//! accepts and never sends its greeting hangs the connect), reached by a
//! manager that counts its connects.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use latchless::{Manager, Pool, PoolError, TimeoutKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::runtime;

/// What the manager saw.
#[derive(Debug, Default)]
struct Seen {
    /// `connect` calls.
    calls: AtomicU64,
    /// Connects running now.
    in_flight: AtomicU64,
    /// Connects that failed.
    failures: AtomicU64,
    /// When the first failure was returned to the pool.
    first_failure: std::sync::Mutex<Option<Instant>>,
    /// The most connects that ran at once among those started well after
    /// the first failure (20 ms: the pool hears of a failure right after
    /// `connect` returns it, but a thread can be preempted in between).
    most_at_once_after_a_failure: AtomicU64,
    /// Connects started after the first failure, running now.
    in_flight_after_a_failure: AtomicU64,
    /// When each connect started.
    starts: std::sync::Mutex<Vec<Instant>>,
    /// `check` hangs while set.
    check_hangs: AtomicBool,
    /// Every connect error is permanent while set.
    permanent: AtomicBool,
}

/// A TCP connection whose server greets it with one byte.
#[derive(Debug, Clone)]
struct Greeted {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

/// Counts a connect in flight.
struct InFlight<'a>(&'a Seen, bool);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
        if self.1 {
            self.0.in_flight_after_a_failure.fetch_sub(1, SeqCst);
        }
    }
}

impl Manager for Greeted {
    type Connection = TcpStream;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<TcpStream, std::io::Error> {
        let seen = &self.seen;
        seen.calls.fetch_add(1, SeqCst);
        seen.starts.lock().unwrap().push(Instant::now());
        seen.in_flight.fetch_add(1, SeqCst);
        let after_failure = seen
            .first_failure
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() > Duration::from_millis(20));
        if after_failure {
            let n = seen.in_flight_after_a_failure.fetch_add(1, SeqCst) + 1;
            seen.most_at_once_after_a_failure.fetch_max(n, SeqCst);
        }
        let _counted = InFlight(seen, after_failure);
        let result = async {
            let mut s = TcpStream::connect(self.addr).await?;
            let mut greeting = [0u8; 1];
            if s.read(&mut greeting).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(s)
        }
        .await;
        if result.is_err() {
            seen.failures.fetch_add(1, SeqCst);
            seen.first_failure
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
        result
    }

    async fn check(&self, _conn: &mut TcpStream) -> Result<(), std::io::Error> {
        if self.seen.check_hangs.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    fn is_permanent(&self, _error: &std::io::Error) -> bool {
        self.seen.permanent.load(SeqCst)
    }
}

/// A free port on 127.0.0.1 with nothing listening on it (bound, then
/// closed).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A server on `addr` that greets every connection with one byte (or,
/// `mute`, accepts and never answers), until the task is aborted.
async fn serve(addr: SocketAddr, mute: bool) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            if !mute {
                let _ = s.write_all(b"+").await;
            }
            held.push(s);
        }
    })
}

fn manager(addr: SocketAddr) -> (Greeted, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    (
        Greeted {
            addr,
            seen: Arc::clone(&seen),
        },
        seen,
    )
}

/// A connect to a server that accepts and never answers times out as
/// `Timeout(Connecting)`, whose message points at the server, not the
/// pool's size; a pool whose one connection is held, `Timeout(Waiting)`;
/// a check that hangs, `Timeout(Checking)`. The counters agree.
#[test]
fn a_timeout_says_what_the_get_was_doing() {
    runtime().block_on(async {
        let addr = free_port();
        let server = serve(addr, true).await;
        let (m, _seen) = manager(addr);
        let pool = Pool::builder(m).max_size(1).build().unwrap();
        let err = pool
            .get_timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Connecting)),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("connecting") && !text.contains("max_size"),
            "{text}"
        );
        server.abort();

        let addr = free_port();
        let server = serve(addr, false).await;
        let (m, seen) = manager(addr);
        let pool = Pool::builder(m)
            .max_size(1)
            .check_after_idle(Some(Duration::ZERO))
            .build()
            .unwrap();
        let held = pool.get().await.unwrap();
        let err = pool
            .get_timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
            "{err:?}"
        );
        assert!(err.to_string().contains("max_size"), "{err}");
        drop(held);
        seen.check_hangs.store(true, SeqCst);
        let err = pool
            .get_timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Checking)),
            "{err:?}"
        );
        assert!(err.to_string().contains("check_timeout"), "{err}");
        let m = pool.metrics();
        assert_eq!(
            (m.timeouts, m.timeouts_waiting, m.timeouts_checking),
            (2, 1, 1)
        );
        server.abort();
    });
}

/// An error the manager calls permanent is returned at once as `Connect`,
/// with default settings (a 30 s `acquire_timeout`), by `get` and by
/// `warm_up`, and not retried.
#[test]
fn a_permanent_error_is_returned_at_once_and_not_retried() {
    runtime().block_on(async {
        let (m, seen) = manager(free_port());
        seen.permanent.store(true, SeqCst);
        let pool = Pool::builder(m).build().unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(seen.calls.load(SeqCst), 1, "not retried");
        assert_eq!(pool.metrics().permanent_errors, 1);
        assert_eq!(pool.state().size, 0);
    });
    runtime().block_on(async {
        let (m, seen) = manager(free_port());
        seen.permanent.store(true, SeqCst);
        let pool = Pool::builder(m).min_idle(4).breaker(None).build().unwrap();
        let start = Instant::now();
        let err = pool.warm_up().await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // Nothing opened, no place kept. The background refill (`min_idle`)
        // may hold a place for a connect of its own that is still failing
        // when `warm_up` returns (seen on a slow run), so the count is
        // awaited, not read at once.
        let settled = Instant::now() + Duration::from_secs(10);
        while pool.state().size != 0 && Instant::now() < settled {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(pool.state().size, 0, "{:?}", pool.state());
        assert_eq!(pool.state().idle, 0);
    });
}

/// The nearest-rank percentile `p` (0-100) of `v`.
fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// 16 tasks call `get` in a loop against a port with nothing listening:
/// once the breaker opens, every `get` returns `Unavailable` at once,
/// connects run one at a time, and only the probes connect, each after a
/// pause that doubles; then a server comes up on that port and the pool
/// serves again within one backoff interval.
#[test]
fn the_breaker_fails_fast_while_down_and_one_probe_at_a_time_ends_it() {
    let rt = runtime();
    rt.block_on(async {
        let addr = free_port();
        let (m, seen) = manager(addr);
        let pool = Pool::builder(m)
            .connect_backoff(Duration::from_millis(25))
            .max_connect_backoff(Duration::from_millis(400))
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut fast = Vec::new();
                let mut others = 0u32;
                while !stop.load(SeqCst) {
                    let start = Instant::now();
                    match pool.get().await {
                        Err(PoolError::Unavailable(outage)) => {
                            fast.push(start.elapsed());
                            assert!(!outage.last_error().is_empty());
                        }
                        Err(PoolError::Connect(_)) => others += 1,
                        other => panic!("while the port refuses: {other:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                (fast, others)
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, SeqCst);
        let mut fast = Vec::new();
        for t in tasks {
            let (f, _) = t.await.unwrap();
            fast.extend(f);
        }
        let m = pool.metrics();
        assert!(m.backend_down, "{m:?}");
        assert!(fast.len() > 1_000, "{} fast failures", fast.len());
        assert_eq!(m.unavailable, fast.len() as u64);
        let p50 = percentile(&mut fast, 50);
        let p99 = percentile(&mut fast, 99);
        assert!(p50 < Duration::from_millis(1), "p50 {p50:?}");
        assert!(p99 < Duration::from_millis(5), "p99 {p99:?}");
        assert_eq!(
            seen.most_at_once_after_a_failure.load(SeqCst),
            1,
            "one connect at a time once one failed"
        );
        // At most `max_size` (10) at the very start, before any failure is
        // known; then probes 25 ms, 50, 100, 200, 400, 400 ms apart
        // (jittered down to as little as half): at most 9 more in a second.
        let calls = seen.calls.load(SeqCst);
        assert!((5..=22).contains(&calls), "{calls} connects in 1 s");
        assert!(
            pool.health()
                .alert(latchless::AlertKind::BackendDown)
                .is_some()
        );
        // The probes' pauses grow. A probe comes at least half the first
        // backoff (12.5 ms) after the connect before it; the connects of
        // the first burst come together. The pauses double up to a cap and
        // are jittered down to half, and a loaded machine delays any of
        // them, so the growth is read as the longest pause against the
        // shortest: a pause that did not grow, jittered, spans at most 2x.
        let starts = seen.starts.lock().unwrap().clone();
        let gaps: Vec<_> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let probes: Vec<_> = gaps
            .iter()
            .copied()
            .filter(|g| *g >= Duration::from_millis(12))
            .collect();
        assert!(probes.len() >= 3, "{gaps:?}");
        let (shortest, longest) = (probes.iter().min(), probes.iter().max());
        assert!(
            longest.zip(shortest).is_some_and(|(l, s)| *l >= *s * 3),
            "backoff grows between probes: {gaps:?}"
        );

        // The server comes up: the next probe connects, within one backoff
        // interval (400 ms at most) and some slack.
        let server = serve(addr, false).await;
        let up = Instant::now();
        let conn = loop {
            match pool.get().await {
                Ok(c) => break c,
                Err(PoolError::Unavailable { .. }) => {
                    assert!(up.elapsed() < Duration::from_secs(3), "still down");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        drop(conn);
        assert!(!pool.metrics().backend_down);
        // And it serves as usual: several at once again.
        let held: Vec<_> = futures_all(&pool, 4).await;
        assert_eq!(held.len(), 4);
        server.abort();
    });
}

/// `n` connections at once.
async fn futures_all(pool: &Pool<Greeted>, n: usize) -> Vec<latchless::Pooled<Greeted>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get().await.unwrap());
    }
    v
}

/// With the breaker off, connects after a failure still run one at a
/// time: 16 tasks against a refused port never have two connects in
/// flight once one failed, and each gets `Connect` or `Timeout` at its
/// deadline, never `Unavailable`. A place for each task: none waits for
/// one (on a loaded machine a wait for a place can outlast the deadline,
/// a `Timeout(Waiting)` this test is not about).
#[test]
fn connects_are_serialised_while_they_fail_even_without_the_breaker() {
    runtime().block_on(async {
        let (m, seen) = manager(free_port());
        let pool = Pool::builder(m)
            .max_size(16)
            .breaker(None)
            .acquire_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3 {
                    match pool.get().await {
                        Err(
                            PoolError::Connect(_) | PoolError::Timeout(TimeoutKind::Connecting),
                        ) => {}
                        other => panic!("{other:?}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(seen.failures.load(SeqCst) > 0);
        assert_eq!(seen.most_at_once_after_a_failure.load(SeqCst), 1);
        assert!(!pool.metrics().backend_down);
        let s = pool.state();
        assert_eq!((s.size, s.waiting), (0, 0), "nothing left behind: {s:?}");
    });
}

/// While the backend is down, a `get` that finds an idle connection is
/// served as usual; one that would connect fails fast.
#[test]
fn an_idle_connection_is_served_while_the_backend_is_down() {
    runtime().block_on(async {
        let addr = free_port();
        let server = serve(addr, false).await;
        let (m, seen) = manager(addr);
        let pool = Pool::builder(m)
            .max_size(2)
            .breaker(Some(2))
            .check_after_idle(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap()); // one idle connection
        server.abort();
        let _ = server.await;
        // Two connects fail (one `get` retries once): the breaker opens,
        // and that `get` returns its own connect error.
        let held = pool.get().await.unwrap();
        assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
        assert!(pool.metrics().backend_down);
        assert!(matches!(
            pool.get().await,
            Err(PoolError::Unavailable { .. })
        ));
        drop(held); // back to the idle set
        let again = pool.get().await.expect("the idle connection, while down");
        drop(again);
        assert!(seen.calls.load(SeqCst) >= 3);
    });
}

/// A backend that fails once and then recovers never opens the breaker:
/// it counts consecutive failures only.
#[test]
fn one_failure_between_successes_does_not_open_the_breaker() {
    runtime().block_on(async {
        let addr = free_port();
        let (m, seen) = manager(addr);
        let pool = Pool::builder(m)
            .breaker(Some(2))
            .fail_fast(true)
            .build()
            .unwrap();
        for _ in 0..5 {
            let server = serve(addr, false).await;
            // Taken out of the pool, so that the next `get` connects.
            drop(latchless::Pooled::detach(pool.get().await.unwrap()));
            server.abort();
            let _ = server.await;
            let err = pool.get().await.unwrap_err();
            assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        }
        let m = pool.metrics();
        assert!(!m.backend_down && m.unavailable == 0, "{m:?}");
        assert_eq!(seen.failures.load(SeqCst), 5);
    });
}
