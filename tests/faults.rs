//! Faults as a server produces them, with the test manager: a connection
//! marked broken, one broken connection vs a server restart, a `get`
//! cancelled during its pre-ping, `is_broken` at hand-out, and
//! `check_timeout` apart from `connect_timeout`. (The same behaviours
//! against the real PostgreSQL and Redis servers: `tests/faults_real.rs`.)

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{LONG, TestManager, runtime, wait_until};
use latchless::{Clock, Pool, Pooled};

async fn open(pool: &Pool<TestManager>, n: usize) {
    let held: Vec<_> = futures_all(pool, n).await;
    drop(held);
}

async fn futures_all(pool: &Pool<TestManager>, n: usize) -> Vec<Pooled<TestManager>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get_timeout(LONG).await.unwrap());
    }
    v
}

#[test]
fn a_connection_marked_broken_is_closed_and_its_place_freed() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(1).build().unwrap();
    runtime().block_on(async {
        let mut c = pool.get().await.unwrap();
        let first = c.id;
        Pooled::mark_broken(&mut c);
        drop(c);
        assert_eq!(t.closed(), 1, "closed on drop, not returned");
        let m = pool.metrics();
        assert_eq!((m.closed, m.broken, m.state.size), (1, 1, 0));
        let c = pool.get_timeout(LONG).await.unwrap();
        assert_ne!(c.id, first, "the place was free for a new connection");
    });
}

/// One broken return checks (at most) one other connection, not every
/// idle one: it is not evidence that the server went away.
#[test]
fn one_broken_connection_is_not_a_server_restart() {
    let (m, t) = TestManager::new();
    let (clock, mock) = Clock::mock();
    let pool = Pool::builder(m)
        .max_size(4)
        .check_after_idle(Some(Duration::from_secs(3600)))
        .clock(clock)
        .build()
        .unwrap();
    runtime().block_on(async {
        open(&pool, 4).await;
        let mut c = pool.get().await.unwrap();
        Pooled::mark_broken(&mut c);
        drop(c);
        // The next three gets: the first probes one connection, which
        // passes; the others are handed out unchecked.
        let held = futures_all(&pool, 3).await;
        assert_eq!(
            t.check_calls.load(SeqCst),
            1,
            "one probe, not a pool-wide check"
        );
        assert_eq!(pool.metrics().check_failures, 0);
        drop(held);
        // A check passed just now: another broken return within a
        // maintenance period arms no probe at all.
        let mut c = pool.get().await.unwrap();
        Pooled::mark_broken(&mut c);
        drop(c);
        drop(futures_all(&pool, 2).await);
        assert_eq!(
            t.check_calls.load(SeqCst),
            1,
            "the server was just seen alive"
        );
        // Later, a broken return probes again.
        mock.advance(Duration::from_secs(5));
        let mut c = pool.get().await.unwrap();
        Pooled::mark_broken(&mut c);
        drop(c);
        drop(pool.get().await.unwrap());
        assert_eq!(t.check_calls.load(SeqCst), 2);
        assert_eq!(pool.metrics().broken, 3);
    });
}

/// A `get` cancelled while its connection is being checked loses no
/// healthy connection: the check finishes without it, the connection goes
/// back to the idle set, and nothing counts as a failed check.
#[test]
fn a_get_cancelled_during_its_check_keeps_a_healthy_connection() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    runtime().block_on(async {
        open(&pool, 1).await;
        t.check_delay_ms.store(100, SeqCst);
        // Cancelled 20 ms into a 100 ms check.
        let cancelled = tokio::time::timeout(Duration::from_millis(20), pool.get()).await;
        assert!(cancelled.is_err(), "the get was cancelled");
        let m = pool.metrics();
        assert_eq!(m.checks_detached, 1);
        assert_eq!(m.state.in_use, 1, "still being checked");
        wait_until("the check finished and the connection is idle", || {
            pool.state().idle == 1
        })
        .await;
        let m = pool.metrics();
        assert_eq!((m.check_failures, m.closed, m.opened), (0, 0, 1));
        t.check_delay_ms.store(0, SeqCst);
        let c = pool.get_timeout(LONG).await.unwrap();
        assert_eq!(c.id, 0, "the same healthy connection");
    });
}

/// A detached check that passes hands its connection straight to the
/// oldest waiter.
#[test]
fn a_detached_check_serves_a_waiter() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    runtime().block_on(async {
        open(&pool, 1).await;
        t.check_delay_ms.store(100, SeqCst);
        let cancelled = tokio::time::timeout(Duration::from_millis(20), pool.get()).await;
        assert!(cancelled.is_err());
        t.check_delay_ms.store(0, SeqCst);
        // Parks (the only connection is under the detached check), then is
        // served by it, and checks it again itself (check_after_idle 0).
        let c = pool.get_timeout(LONG).await.unwrap();
        assert_eq!(c.id, 0);
        assert_eq!(pool.metrics().check_failures, 0);
        assert_eq!(t.opened(), 1);
    });
}

/// Cancel safety under load: gets cancelled at random points of slow
/// checks, on a multi-threaded runtime; afterwards every connection is
/// accounted for and none was lost.
#[test]
fn cancelled_checks_under_load_lose_nothing() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(3)
        .check_after_idle(Some(Duration::ZERO))
        .check_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    t.check_delay_ms.store(3, SeqCst);
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..60u64 {
                    let cut = Duration::from_millis((task * 7 + i * 3) % 9);
                    if let Ok(Ok(c)) = tokio::time::timeout(cut, pool.get()).await {
                        c.enter();
                        tokio::task::yield_now().await;
                        c.leave();
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        wait_until("detached checks finished", || {
            let s = pool.state();
            s.in_use == 0 && s.waiting == 0
        })
        .await;
        let m = pool.metrics();
        assert!(m.checks_detached > 0, "some checks were cut short: {m:?}");
        assert_eq!(m.check_failures, 0, "no check failed: {m:?}");
        assert_eq!(m.opened, m.closed + m.state.size as u64, "{m:?}");
        assert_eq!(m.state.idle, m.state.size);
        assert!(t.max_live() <= 3);
        t.check_delay_ms.store(0, SeqCst);
        drop(futures_all(&pool, 3).await);
    });
    drop(pool);
    assert_eq!(t.live(), 0, "every connection closed with the pool");
}

/// `is_broken` runs when a connection is handed out from the idle set: a
/// connection that broke while idle (its client saw the peer close) is
/// closed, not handed out, by `try_get` and by `get` alike.
#[test]
fn a_connection_that_broke_while_idle_is_not_handed_out() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(3).build().unwrap();
    runtime().block_on(async {
        open(&pool, 3).await;
        assert_eq!(pool.state().idle, 3);
        // All three break while idle.
        t.all_broken.store(true, SeqCst);
        assert!(pool.try_get().is_none(), "try_get found them broken");
        let m = pool.metrics();
        assert_eq!((m.broken, m.closed, m.state.size), (3, 3, 0));
        t.all_broken.store(false, SeqCst);
        open(&pool, 2).await;
        assert_eq!(pool.state().idle, 2);
        t.all_broken.store(true, SeqCst);
        // `get` closes both broken idle ones, then opens a new one (a fresh
        // connection is handed out as it comes).
        let c = pool.get_timeout(LONG).await.unwrap();
        assert!(c.id >= 5, "a new connection, not a broken idle one");
        let m = pool.metrics();
        assert_eq!((m.broken, m.state.size), (5, 1));
        drop(c);
        assert_eq!(pool.metrics().broken, 6, "and on return");
    });
}

/// `check_timeout` bounds a pre-ping apart from `connect_timeout`: a hung
/// check is given up after it, while connects keep their own bound.
#[test]
fn check_timeout_bounds_a_check_apart_from_connect_timeout() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .connect_timeout(Duration::from_secs(30))
        .check_timeout(Duration::from_millis(40))
        .build()
        .unwrap();
    runtime().block_on(async {
        open(&pool, 1).await;
        t.check_hang.store(true, SeqCst);
        let start = std::time::Instant::now();
        let c = pool.get_timeout(LONG).await.unwrap();
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "bounded by check_timeout, took {took:?}"
        );
        assert_eq!(c.id, 1, "the hung connection was replaced");
        assert_eq!(pool.metrics().check_failures, 1);
    });
}

#[test]
fn check_timeout_must_be_non_zero() {
    let (m, _t) = TestManager::new();
    let err = Pool::builder(m)
        .check_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "check_timeout");
    assert!(err.to_string().contains("check_timeout"), "{err}");
}
