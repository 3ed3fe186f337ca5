//! Every error and fault path: each returns a typed error (or closes what it
//! must) and loses no connection, place or waiter.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{LONG, TestManager, runtime, wait_until};
use latchless::{Pool, PoolError, Pooled, TimeoutKind};

fn pool(max: usize) -> (Pool<TestManager>, std::sync::Arc<common::Tracker>) {
    let (m, t) = TestManager::new();
    (Pool::builder(m).max_size(max).build().unwrap(), t)
}

#[test]
fn timeout_at_the_cap_returns_timeout_and_keeps_the_connection() {
    let (pool, _t) = pool(1);
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        let err = pool
            .get_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
            "{err:?}"
        );
        assert_eq!(pool.state().waiting, 0, "the timed-out waiter left");
        assert_eq!(pool.metrics().timeouts, 1);
        drop(held);
        assert_eq!(pool.state().idle, 1);
        assert!(pool.get_timeout(Duration::ZERO).await.is_ok());
    });
}

/// A parked `get` is timed out by the pool's background task (no Tokio
/// timer of its own): not before its deadline, and not long after it.
#[test]
fn the_pool_times_out_parked_waiters_itself() {
    let (pool, _t) = pool(1);
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        // The background task starts with the first `get` and arms its
        // deadline sweep at once; its first maintenance pass comes after.
        wait_until("the background task runs", || {
            pool.metrics().maintenance_passes > 0
        })
        .await;
        for round in 1..=3u64 {
            let timeout = Duration::from_millis(40 * round);
            let started = std::time::Instant::now();
            let err = pool.get_timeout(timeout).await.unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
                "{err:?}"
            );
            assert!(took >= timeout, "timed out early: {took:?} < {timeout:?}");
            assert!(took < LONG, "timed out far too late: {took:?}");
            let m = pool.metrics();
            assert_eq!(m.timeouts, round);
            assert_eq!(m.timeouts_swept, round, "the pool's task timed it out");
            assert_eq!(m.state.waiting, 0);
        }
        drop(held);
        assert!(
            pool.get_timeout(Duration::ZERO).await.is_ok(),
            "nothing lost"
        );
    });
}

/// One time base: a pool on a mock clock times out a parked `get` when the
/// mock passes its deadline, not when Tokio's time does. An hour's
/// deadline passes at once by `advance` and a maintenance pass (the
/// background task's own sweep would come at its next look); nothing
/// sleeps for it.
#[test]
fn a_mocked_clock_moves_a_get_deadline_without_sleeping() {
    let (m, _t) = TestManager::new();
    let (clock, mock) = latchless::Clock::mock();
    let pool = Pool::builder(m).max_size(1).clock(clock).build().unwrap();
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        let p = pool.clone();
        let waiter =
            tokio::spawn(async move { p.get_timeout(Duration::from_secs(3600)).await.map(drop) });
        wait_until("the get is parked", || pool.state().waiting == 1).await;
        let started = std::time::Instant::now();
        mock.advance(Duration::from_secs(3599));
        pool.maintain();
        tokio::task::yield_now().await;
        assert_eq!(pool.state().waiting, 1, "not before its deadline");
        mock.advance(Duration::from_secs(2));
        pool.maintain();
        let err = tokio::time::timeout(LONG, waiter)
            .await
            .expect("timed out by the mock's time")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
            "{err:?}"
        );
        assert!(started.elapsed() < LONG);
        assert_eq!(pool.state().waiting, 0);
        // (An hour on: `held` is past its lifetime and closes on return.)
        drop(held);
        assert!(pool.get().await.is_ok(), "nothing lost");
    });
}

/// Waiters tracked by a background task whose runtime shuts down fall back
/// to timers of their own: they still time out (they would hang forever if
/// nobody woke them), and a release still reaches them.
#[test]
fn waiters_outlive_the_runtime_of_the_pools_background_task() {
    let (pool, _t) = pool(1);
    let first = runtime();
    let held = first.block_on(async {
        let held = pool.get().await.unwrap();
        wait_until("the background task runs", || {
            pool.metrics().maintenance_passes > 0
        })
        .await;
        held
    });
    let second = runtime();
    let timing_out = {
        let pool = pool.clone();
        second.spawn(async move {
            let started = std::time::Instant::now();
            let r = pool.get_timeout(Duration::from_millis(400)).await.map(drop);
            (r, started.elapsed())
        })
    };
    let served = {
        let pool = pool.clone();
        second.spawn(async move { pool.get_timeout(LONG).await.map(drop) })
    };
    second.block_on(wait_until("both waiters parked", || {
        pool.state().waiting == 2
    }));
    // Shuts the background task down while both wait.
    drop(first);
    let (r, took) = second
        .block_on(async { tokio::time::timeout(LONG, timing_out).await })
        .expect("a waiter of the stopped task was never woken")
        .unwrap();
    assert!(
        matches!(r, Err(PoolError::Timeout(TimeoutKind::Waiting))),
        "{r:?}"
    );
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < LONG, "{took:?}");
    drop(held);
    assert!(
        second.block_on(served).unwrap().is_ok(),
        "served after the fall-back"
    );
    assert_eq!(pool.state().waiting, 0);
}

#[test]
fn max_waiters_fails_fast_with_exhausted() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .max_waiters(Some(1))
        .build()
        .unwrap();
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get_timeout(LONG).await.map(drop) }
        });
        wait_until("one waiter", || pool.state().waiting == 1).await;
        let start = std::time::Instant::now();
        let err = pool.get().await.unwrap_err();
        assert!(matches!(err, PoolError::Exhausted), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "failed at once, not at the deadline"
        );
        drop(held);
        first.await.unwrap().expect("the admitted waiter is served");
        assert_eq!(pool.metrics().exhausted, 1);
    });
}

#[test]
fn max_waiters_zero_never_waits() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .max_waiters(Some(0))
        .build()
        .unwrap();
    runtime().block_on(async {
        let _held = pool.get().await.unwrap();
        assert!(matches!(pool.get().await, Err(PoolError::Exhausted)));
    });
}

#[test]
fn failed_connect_returns_the_managers_error_and_the_place() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .fail_fast(true)
        .build()
        .unwrap();
    t.fail_next.store(1, SeqCst);
    runtime().block_on(async {
        let err = pool.get().await.unwrap_err();
        match &err {
            PoolError::Connect(e) => assert_eq!(e.0, "connection refused (test)"),
            other => panic!("expected Connect, got {other:?}"),
        }
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(pool.state().size, 0, "the place was given back");
        assert_eq!(pool.metrics().connect_errors, 1);
        let c = pool.get().await.expect("the next connect works");
        assert_eq!(c.id, 0);
    });
}

#[test]
fn failed_connect_hands_its_place_to_a_waiter() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .fail_fast(true)
        .build()
        .unwrap();
    t.connect_delay_ms.store(50, SeqCst);
    t.fail_next.store(1, SeqCst);
    runtime().block_on(async {
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        });
        wait_until("the first connect is in flight", || pool.state().size == 1).await;
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(|c| c.id) }
        });
        assert!(matches!(first.await.unwrap(), Err(PoolError::Connect(_))));
        assert_eq!(second.await.unwrap().expect("served the freed place"), 0);
        assert_eq!(t.connect_calls.load(SeqCst), 2);
    });
}

#[test]
fn hung_connect_is_bounded_by_connect_timeout() {
    let (m, t) = TestManager::new();
    t.hang.store(true, SeqCst);
    let pool = Pool::builder(m)
        .max_size(1)
        .connect_timeout(Duration::from_millis(30))
        .fail_fast(true)
        .build()
        .unwrap();
    runtime().block_on(async {
        let err = pool.get().await.unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Connecting)),
            "{err:?}"
        );
        assert!(
            !err.to_string().contains("max_size"),
            "not the pool's size: {err}"
        );
        assert_eq!(pool.metrics().connect_timeouts, 1);
        assert_eq!(pool.state().size, 0);
        assert_eq!(t.live(), 0, "the connect future was dropped");
        t.hang.store(false, SeqCst);
        assert!(pool.get().await.is_ok());
    });
}

#[test]
fn acquire_deadline_bounds_a_hung_connect_too() {
    let (m, t) = TestManager::new();
    t.hang.store(true, SeqCst);
    let pool = Pool::builder(m).max_size(1).build().unwrap();
    runtime().block_on(async {
        let err = pool
            .get_timeout(Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Connecting)),
            "{err:?}"
        );
        assert_eq!(pool.state().size, 0, "the place came back");
    });
}

#[test]
fn panicking_connect_reaches_the_caller_and_frees_the_place() {
    let (pool, t) = pool(1);
    t.panic_next.store(1, SeqCst);
    runtime().block_on(async {
        let joined = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(pool.state().size, 0);
        assert!(pool.get().await.is_ok());
    });
}

#[test]
fn broken_connection_is_closed_on_return() {
    let (pool, t) = pool(2);
    runtime().block_on(async {
        let c = pool.get().await.unwrap();
        c.broken.store(true, SeqCst);
        drop(c);
        assert_eq!(t.closed(), 1);
        assert_eq!(pool.state().size, 0);
        assert_eq!(pool.metrics().closed, 1);
    });
}

#[test]
fn panicking_is_broken_counts_as_broken() {
    let (pool, t) = pool(1);
    runtime().block_on(async {
        let c = pool.get().await.unwrap();
        t.panic_in_is_broken.store(true, SeqCst);
        drop(c);
        assert_eq!(t.closed(), 1);
        assert_eq!(pool.state().size, 0);
        t.panic_in_is_broken.store(false, SeqCst);
        assert!(pool.get().await.is_ok());
    });
}

#[test]
fn a_panic_while_holding_closes_the_connection() {
    let (pool, t) = pool(1);
    runtime().block_on(async {
        let joined = tokio::spawn({
            let pool = pool.clone();
            async move {
                let _c = pool.get().await.unwrap();
                panic!("user code panicked while holding a connection");
            }
        })
        .await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(t.closed(), 1, "closed, not reused");
        assert_eq!(pool.state().size, 0, "its place is free");
        assert!(pool.get().await.is_ok());
    });
}

#[test]
fn detach_frees_the_place_and_wakes_a_waiter() {
    let (pool, t) = pool(1);
    runtime().block_on(async {
        let c = pool.get().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get_timeout(LONG).await.map(|c| c.id) }
        });
        wait_until("waiter parked", || pool.state().waiting == 1).await;
        let conn = Pooled::detach(c);
        assert_eq!(conn.id, 0);
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            1,
            "the waiter connected anew"
        );
        assert_eq!(pool.metrics().detached, 1);
        drop(conn);
        assert_eq!(t.closed(), 1);
    });
}

#[test]
fn close_rejects_waiters_and_closes_in_use_connections_on_return() {
    let (pool, t) = pool(2);
    runtime().block_on(async {
        // Waiters park only while nothing is idle (I4): hold both.
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.get_timeout(LONG).await.map(drop) })
            })
            .collect();
        wait_until("both waiters park", || pool.state().waiting == 2).await;
        pool.close().await;
        assert!(pool.is_closed());
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Err(PoolError::Closed)));
        }
        assert_eq!(pool.state().waiting, 0);
        assert_eq!(t.live(), 2, "in-use connections stay open until returned");
        assert!(matches!(pool.get().await, Err(PoolError::Closed)));
        assert!(pool.try_get().is_none());
        drop(a);
        drop(b);
        assert_eq!(t.live(), 0, "closed on return");
        assert_eq!(pool.state().size, 0);
        pool.close().await; // idempotent
    });
}

#[test]
fn close_closes_idle_connections_at_once() {
    let (pool, t) = pool(2);
    runtime().block_on(async {
        drop((pool.get().await.unwrap(), pool.get().await.unwrap()));
        assert_eq!(pool.state().idle, 2);
        pool.close().await;
        assert_eq!(t.live(), 0);
        assert_eq!(t.closed(), 2);
        assert_eq!(pool.state(), latchless::State::default());
    });
}

#[test]
fn dropping_the_last_pool_handle_while_guards_live_is_safe() {
    let (pool, t) = pool(2);
    let rt = runtime();
    let (a, b) = rt.block_on(async { (pool.get().await.unwrap(), pool.get().await.unwrap()) });
    drop(b);
    drop(pool);
    assert_eq!(t.live(), 1, "idle closed when the last handle went");
    a.enter();
    a.leave();
    // Returned from a plain thread, outside any runtime.
    std::thread::spawn(move || drop(a)).join().unwrap();
    assert_eq!(t.live(), 0);
    assert_eq!(t.opened(), t.closed());
}

#[test]
fn try_get_and_release_work_outside_a_runtime() {
    let (pool, _t) = pool(1);
    runtime().block_on(async { drop(pool.get().await.unwrap()) });
    let p = pool.clone();
    std::thread::spawn(move || {
        let c = p.try_get().expect("idle connection");
        assert!(p.try_get().is_none());
        drop(c);
        assert!(p.try_get().is_some());
    })
    .join()
    .unwrap();
}

#[test]
fn extreme_timeouts_do_not_panic() {
    let (pool, _t) = pool(1);
    runtime().block_on(async {
        let c = pool.get_timeout(Duration::MAX).await.unwrap();
        let err = pool.get_timeout(Duration::ZERO).await.unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
            "{err:?}"
        );
        drop(c);
        assert!(pool.get_timeout(Duration::ZERO).await.is_ok());
    });
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m)
        .acquire_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .build()
        .unwrap();
    runtime().block_on(async { assert!(pool.get().await.is_ok()) });
}

/// `acquire_timeout(Duration::MAX)` is "no deadline" (no timer armed): a
/// waiter is served by a release, and `close()` still ends its wait.
#[test]
fn no_deadline_waiters_are_served_and_closed() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(1)
        .acquire_timeout(Duration::MAX)
        .build()
        .unwrap();
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        });
        wait_until("the waiter parks", || pool.state().waiting == 1).await;
        drop(held);
        assert!(waiter.await.unwrap().is_ok(), "served by the release");

        let held = pool.get().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(drop) }
        });
        wait_until("the waiter parks", || pool.state().waiting == 1).await;
        pool.close().await;
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Closed), "{err:?}");
        drop(held);
        assert_eq!(pool.state().size, 0);
    });
}

#[test]
fn error_messages_say_what_to_do() {
    let e: PoolError<std::io::Error> = PoolError::Exhausted;
    assert!(e.to_string().contains("max_waiters"));
    let e: PoolError<std::io::Error> = PoolError::Timeout(TimeoutKind::Waiting);
    assert!(e.to_string().contains("max_size"));
    // A connect or a check that timed out points at the server, not at
    // the pool's size.
    let e: PoolError<std::io::Error> = PoolError::Timeout(TimeoutKind::Connecting);
    assert!(e.to_string().contains("connect_timeout") && !e.to_string().contains("max_size"));
    let e: PoolError<std::io::Error> = PoolError::Timeout(TimeoutKind::Checking);
    assert!(e.to_string().contains("check_timeout") && !e.to_string().contains("max_size"));
    let e: PoolError<std::io::Error> = PoolError::Connect(std::io::Error::other("refused"));
    assert_eq!(e.to_string(), "could not open a connection: refused");
}

/// `get`'s future is lazy: while it exists unpolled it holds nothing (no
/// idle connection, no place, no connect, no waiter), and dropping it
/// changes nothing.
#[test]
fn a_get_future_dropped_before_its_first_poll_takes_nothing() {
    let (pool, t) = pool(1);
    runtime().block_on(async {
        drop(pool.get().await.unwrap());
        let fut = pool.get();
        let s = pool.state();
        assert_eq!(
            (s.idle, s.in_use, s.waiting),
            (1, 0, 0),
            "the idle one stays idle"
        );
        drop(fut);
        // At the cap with nothing idle, an unpolled future does not queue.
        let held = pool.try_get().expect("the idle connection");
        let fut = pool.get();
        let s = pool.state();
        assert_eq!((s.in_use, s.waiting), (1, 0), "no waiter registered");
        drop(fut);
        drop(held);
        assert_eq!(t.opened(), 1, "no connect was started");
        assert!(pool.try_get().is_some(), "the connection is still there");
    });
}

/// Polling `get`'s future after it returned its connection is a caller's
/// bug, as for any `async fn`: it panics with a message that says so
/// rather than hand out a second connection.
#[test]
#[should_panic(expected = "`get`'s future polled after it completed")]
fn a_get_future_polled_after_completion_panics() {
    let (pool, _t) = pool(2);
    runtime().block_on(async {
        drop(pool.get().await.unwrap());
        let mut fut = std::pin::pin!(pool.get());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let first = std::future::Future::poll(fut.as_mut(), &mut cx);
        assert!(
            matches!(first, std::task::Poll::Ready(Ok(_))),
            "the idle one, at once"
        );
        drop(first);
        let _ = std::future::Future::poll(fut.as_mut(), &mut cx);
    });
}
