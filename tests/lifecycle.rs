//! Lifecycle policies and their interplay, with time driven by the
//! mock clock and `Pool::maintain()` (no sleeps), plus a few real-time
//! tests with generous margins.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{Capture, LONG, TestManager, Tracker, runtime, wait_until};
use latchless::{Builder, Pool, PoolError, TimeoutKind};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A pool on a mock clock with every lifecycle feature off unless set.
fn mocked(
    f: impl FnOnce(Builder<TestManager>) -> Builder<TestManager>,
) -> (Pool<TestManager>, Arc<Tracker>, latchless::MockClock) {
    let (m, t) = TestManager::new();
    let (clock, mock) = latchless::Clock::mock();
    let b = Pool::builder(m)
        .clock(clock)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        // Successors opened ahead of a lifetime's end would change the
        // counts these tests follow (tests/offpath.rs tests them).
        .replace_before_expiry(None);
    (f(b).build().unwrap(), t, mock)
}

/// Opens `n` connections and returns them all to the idle set.
async fn open(pool: &Pool<TestManager>, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
}

#[test]
fn idle_timeout_closes_idle_connections_after_the_timeout() {
    let (pool, t, mock) = mocked(|b| b.max_size(4).idle_timeout(Some(secs(60))));
    runtime().block_on(async {
        open(&pool, 3).await;
        mock.advance(secs(59));
        pool.maintain();
        assert_eq!(pool.state().idle, 3, "not yet");
        mock.advance(secs(2));
        pool.maintain();
        assert_eq!(pool.state().size, 0);
        assert_eq!(t.live(), 0);
        assert_eq!(pool.metrics().expired, 3);
    });
}

#[test]
fn idle_timeout_counts_from_the_last_use() {
    let (pool, _t, mock) = mocked(|b| b.max_size(2).idle_timeout(Some(secs(60))));
    runtime().block_on(async {
        open(&pool, 1).await;
        mock.advance(secs(40));
        pool.maintain(); // refreshes the pool's clock reading
        drop(pool.try_get().unwrap()); // used at t = 40
        mock.advance(secs(30)); // t = 70: the first deadline passes
        pool.maintain();
        assert_eq!(pool.state().idle, 1, "used 30 s ago: kept, deadline moved");
        mock.advance(secs(31)); // t = 101
        pool.maintain();
        assert_eq!(pool.state().size, 0);
    });
}

#[test]
fn idle_timeout_never_goes_below_min_idle() {
    let (pool, _t, mock) = mocked(|b| b.max_size(4).min_idle(2).idle_timeout(Some(secs(60))));
    runtime().block_on(async {
        open(&pool, 4).await;
        mock.advance(secs(61));
        pool.maintain();
        assert_eq!(pool.state().idle, 2, "two kept for min_idle");
        mock.advance(secs(600));
        pool.maintain();
        assert_eq!(pool.state().idle, 2);
    });
}

#[test]
fn min_idle_is_filled_after_build_and_after_closes() {
    let (m, t) = TestManager::new();
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder(m).max_size(4).min_idle(3).build().unwrap();
        wait_until("three idle after build", || pool.state().idle == 3).await;
        let c = pool.get().await.unwrap();
        c.broken.store(true, SeqCst);
        drop(c);
        wait_until("refilled after a close", || pool.state().idle == 3).await;
        assert!(t.max_live() <= 4);
        assert_eq!(pool.metrics().closed, 1);
    });
}

#[test]
fn max_lifetime_is_enforced_on_acquire_even_without_maintenance() {
    let (pool, t, mock) = mocked(|b| b.max_size(2).max_lifetime(Some(secs(100))));
    // Open one connection on a runtime, then drop the runtime: no background
    // task runs, nobody calls `maintain`, and acquires read the clock.
    runtime().block_on(open(&pool, 1));
    mock.advance(secs(90)); // jitter takes at most 5%, the margin 1 s
    assert!(pool.try_get().is_some());
    mock.advance(secs(10)); // t = 100: past any lifetime
    assert!(
        pool.try_get().is_none(),
        "an over-age connection is never handed out"
    );
    assert_eq!(t.live(), 0, "it was closed on the way");
    assert_eq!(pool.metrics().expired, 1);
    assert_eq!(
        pool.metrics().maintenance_passes,
        0,
        "no maintenance pass ran"
    );
}

#[test]
fn no_connection_is_handed_out_past_max_lifetime_jitter_only_shortens() {
    let (pool, _t, mock) = mocked(|b| b.max_size(32).max_lifetime(Some(secs(1000))));
    runtime().block_on(async {
        open(&pool, 32).await;
        let mut expiries = std::collections::BTreeSet::new();
        // Step through the last 6% of the lifetime, 1 s at a time.
        mock.advance(secs(940));
        for t in 940..=1000 {
            let before = pool.metrics().expired;
            pool.maintain();
            // Every connection still handed out is younger than its lifetime.
            let held: Vec<_> = std::iter::from_fn(|| pool.try_get()).collect();
            assert!(
                t < 1000 || held.is_empty(),
                "t = {t}: over-age connection handed out"
            );
            drop(held);
            pool.maintain();
            if pool.metrics().expired > before {
                expiries.insert(t);
            }
            mock.advance(secs(1));
        }
        assert_eq!(pool.metrics().expired, 32);
        assert!(
            expiries.len() >= 4,
            "jitter spreads expiry over time: {expiries:?}"
        );
    });
}

#[test]
fn a_connection_in_use_past_its_lifetime_closes_on_return() {
    let (pool, t, mock) = mocked(|b| b.max_size(2).max_lifetime(Some(secs(100))));
    runtime().block_on(async {
        let c = pool.get().await.unwrap();
        mock.advance(secs(200));
        pool.maintain(); // its lifetime entry fires while it is in use
        assert_eq!(t.live(), 1, "not taken from its holder");
        drop(c);
        assert_eq!(t.live(), 0, "closed on return");
        assert_eq!(pool.state().size, 0);
    });
}

#[test]
fn maintenance_expires_idle_connections_without_traffic() {
    let (pool, t, mock) = mocked(|b| b.max_size(3).max_lifetime(Some(secs(100))));
    runtime().block_on(async {
        open(&pool, 3).await;
        mock.advance(secs(101));
        pool.maintain();
        assert_eq!(t.live(), 0);
        assert_eq!(pool.state(), latchless::State::default());
    });
}

#[test]
fn check_after_idle_checks_only_connections_idle_that_long() {
    let (pool, t, mock) = mocked(|b| {
        b.max_size(2)
            .check_after_idle(Some(Duration::from_millis(500)))
    });
    runtime().block_on(async {
        // `maintain()` after each step stands in for the background task,
        // which refreshes the pool's clock reading as real time passes.
        open(&pool, 1).await;
        mock.advance(Duration::from_millis(100));
        pool.maintain();
        drop(pool.get().await.unwrap());
        assert_eq!(t.check_calls.load(SeqCst), 0, "idle 100 ms: no check");
        mock.advance(Duration::from_millis(600));
        pool.maintain();
        let c = pool.get().await.unwrap();
        assert_eq!(t.check_calls.load(SeqCst), 1, "idle 600 ms: checked");
        assert_eq!(c.id, 0, "and it passed");
        drop(c);
        // try_get never runs an async check: it leaves the connection for get.
        mock.advance(Duration::from_millis(600));
        pool.maintain();
        assert!(pool.try_get().is_none());
        assert_eq!(pool.state().idle, 1, "still there for get");
    });
}

#[test]
fn failed_check_closes_the_connection_and_the_caller_gets_another() {
    let (pool, t, mock) = mocked(|b| b.max_size(3).check_after_idle(Some(Duration::ZERO)));
    runtime().block_on(async {
        open(&pool, 2).await;
        t.dead_below.store(1, SeqCst); // connection 0 is dead
        mock.advance(secs(1));
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        let mut ids = [a.id, b.id];
        ids.sort();
        assert_eq!(ids, [1, 2], "0 failed its check and was replaced");
        assert_eq!(pool.metrics().check_failures, 1);
        assert_eq!(t.live(), 2);
    });
}

#[test]
fn a_hung_check_is_bounded_and_costs_nothing() {
    let (pool, t, _mock) = mocked(|b| {
        b.max_size(2)
            .check_after_idle(Some(Duration::ZERO))
            .check_timeout(Duration::from_millis(50))
    });
    runtime().block_on(async {
        open(&pool, 1).await;
        t.check_hang.store(true, SeqCst);
        let c = pool
            .get_timeout(LONG)
            .await
            .expect("hung check bounded by check_timeout");
        assert_eq!(c.id, 1, "the hung connection was closed, a new one opened");
        assert_eq!(pool.metrics().check_failures, 1);
        drop(c);
        // A deadline shorter than check_timeout bounds the caller: it gets
        // Timeout (connects hang as well), and the check goes on without
        // it until check_timeout, then fails and closes its connection.
        t.hang.store(true, SeqCst);
        let err = pool.get_timeout(Duration::from_millis(20)).await;
        assert!(
            matches!(err, Err(PoolError::Timeout(TimeoutKind::Checking))),
            "{err:?}"
        );
        assert_eq!(pool.metrics().checks_detached, 1);
        wait_until("the detached check failed", || {
            pool.metrics().check_failures == 2
        })
        .await;
        wait_until("closed, place free", || pool.state().size == 0).await;
        assert_eq!(t.live(), 0);
    });
}

/// A caller whose deadline passes while a check hangs gets `Timeout` and
/// costs the pool nothing: the check goes on without it (bounded by
/// `check_timeout`), and the caller does not go on to start (and at once
/// abandon) a check on every other idle connection.
#[test]
fn a_deadline_that_passes_during_a_check_closes_one_connection_not_all() {
    let (pool, t, _mock) = mocked(|b| {
        b.max_size(4)
            .check_after_idle(Some(Duration::ZERO))
            .check_timeout(Duration::from_millis(300))
    });
    runtime().block_on(async {
        open(&pool, 4).await;
        t.check_hang.store(true, SeqCst);
        let err = pool.get_timeout(Duration::from_millis(30)).await;
        assert!(
            matches!(err, Err(PoolError::Timeout(TimeoutKind::Checking))),
            "{err:?}"
        );
        let m = pool.metrics();
        assert_eq!(
            m.check_failures, 0,
            "a check cut short by the caller is not failed"
        );
        assert_eq!(m.checks_detached, 1, "it goes on without the caller");
        assert_eq!(m.closed, 0);
        assert_eq!(m.state.idle, 3, "the others stay idle, unchecked");
        // No time at all: the connection due for a check is not checked
        // (which would cut the check short), it stays idle.
        let err = pool.get_timeout(Duration::ZERO).await;
        assert!(matches!(err, Err(PoolError::Timeout(_))), "{err:?}");
        assert_eq!(pool.metrics().closed, 0);
        assert_eq!(pool.state().idle, 3);
        // The detached check hangs past check_timeout: one failure, one
        // connection closed, and no more.
        wait_until("the detached check timed out", || {
            pool.metrics().check_failures == 1
        })
        .await;
        assert_eq!(pool.metrics().closed, 1);
        t.check_hang.store(false, SeqCst);
        assert!(pool.get_timeout(LONG).await.is_ok());
    });
}

#[test]
fn a_server_restart_costs_one_failed_check_per_dead_connection_not_a_timeout() {
    // Checks after idle are off (1 h), so only the restart epoch triggers them.
    let (pool, t, _mock) = mocked(|b| b.max_size(4).check_after_idle(Some(secs(3600))));
    runtime().block_on(async {
        open(&pool, 3).await;
        t.dead_below.store(3, SeqCst); // "the server restarted": 0, 1, 2 are dead
        let a = pool.get().await.unwrap();
        assert!(
            a.id < 3,
            "handed out unchecked: nothing said the server went away"
        );
        // The user finds it dead and returns it broken: that arms a probe
        // of one other connection, whose failed check starts an epoch.
        a.broken.store(true, SeqCst);
        drop(a);
        let b = pool.get_timeout(LONG).await.unwrap();
        assert_eq!(
            b.id, 3,
            "both remaining old connections failed a check; a new one was opened"
        );
        assert_eq!(t.check_calls.load(SeqCst), 2);
        assert_eq!(pool.metrics().check_failures, 2);
        assert_eq!(pool.metrics().timeouts, 0);
        drop(b);
        // A connection opened after the epoch is not checked.
        drop(pool.get().await.unwrap());
        assert_eq!(t.check_calls.load(SeqCst), 2);
    });
}

#[test]
fn connect_failures_are_retried_with_backoff_until_success() {
    let (m, t) = TestManager::new();
    t.fail_next.store(3, SeqCst);
    let pool = Pool::builder(m)
        .connect_backoff(Duration::from_millis(2))
        .build()
        .unwrap();
    runtime().block_on(async {
        let c = pool.get_timeout(LONG).await.expect("retried");
        assert_eq!(c.id, 0);
        assert_eq!(t.connect_calls.load(SeqCst), 4);
        assert_eq!(pool.metrics().connect_errors, 3);
    });
}

#[test]
fn retries_stop_at_the_deadline_with_the_last_connect_error() {
    let (m, t) = TestManager::new();
    t.fail_next.store(usize::MAX, SeqCst);
    let pool = Pool::builder(m)
        .connect_backoff(Duration::from_millis(5))
        .max_connect_backoff(Duration::from_millis(20))
        .build()
        .unwrap();
    runtime().block_on(async {
        let start = std::time::Instant::now();
        let err = pool
            .get_timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        assert!(t.connect_calls.load(SeqCst) >= 3, "retried several times");
        assert!(start.elapsed() < LONG);
        assert_eq!(pool.state().size, 0);
    });
}

#[test]
fn fail_fast_returns_the_first_connect_error_at_once() {
    let (m, t) = TestManager::new();
    t.fail_next.store(usize::MAX, SeqCst);
    let pool = Pool::builder(m).fail_fast(true).build().unwrap();
    runtime().block_on(async {
        let err = pool.get_timeout(LONG).await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)));
        assert_eq!(t.connect_calls.load(SeqCst), 1);
    });
}

#[test]
fn a_leak_is_reported_once_with_the_location_of_the_get() {
    let (pool, _t, mock) = mocked(|b| {
        b.max_size(2)
            .leak_threshold(Some(Duration::from_millis(100)))
    });
    let capture = Capture::default();
    let rt = runtime();
    let line = line!() + 1;
    let leaked = rt.block_on(pool.get()).unwrap();
    let kept = rt.block_on(pool.get()).unwrap();
    drop(kept); // returned in time: never reported
    tracing::subscriber::with_default(capture.clone(), || {
        mock.advance(Duration::from_millis(50));
        pool.maintain();
        assert_eq!(pool.metrics().leaks, 0, "not yet");
        mock.advance(Duration::from_millis(200));
        pool.maintain();
        mock.advance(Duration::from_millis(200));
        pool.maintain();
    });
    assert_eq!(pool.metrics().leaks, 1, "reported once");
    let events = capture.fields();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains(&format!("lifecycle.rs:{line}")),
        "names the call site: {events:?}"
    );
    drop(leaked);
}

#[test]
fn the_background_task_expires_idle_connections_without_traffic() {
    let (m, t) = TestManager::new();
    runtime().block_on(async {
        let pool = Pool::builder(m)
            .idle_timeout(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        open(&pool, 2).await;
        assert_eq!(pool.state().idle, 2);
        wait_until("idle connections time out by themselves", || t.live() == 0).await;
        assert!(pool.metrics().maintenance_passes > 0);
    });
}

/// Regression (found by the `pool_ops` fuzz target): a connection handed
/// straight from a releaser to a waiter was judged by a stale "fresh until"
/// stamp, so `check_after_idle(Some(ZERO))` ("always check") skipped it.
#[test]
fn a_connection_handed_straight_to_a_waiter_is_judged_like_any_other() {
    let (pool, t, _mock) = mocked(|b| b.max_size(1).check_after_idle(Some(Duration::ZERO)));
    runtime().block_on(async {
        let held = pool.get().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get_timeout(LONG).await.map(|c| c.id) }
        });
        wait_until("the waiter parks", || pool.state().waiting == 1).await;
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
        assert_eq!(t.check_calls.load(SeqCst), 1, "checked before the hand-out");
    });
}

/// A check whose caller's deadline passed goes on without it; when it
/// passes, the connection goes idle stamped fresh, so the next `get` takes
/// it without a second check. (It used to go idle still due: every `get`
/// with a deadline shorter than one check checked it again, timed out and
/// detached again, while `state()` showed it idle.)
#[test]
fn a_detached_check_that_passes_leaves_the_connection_fresh() {
    let (pool, t, mock) = mocked(|b| {
        b.max_size(1)
            .check_after_idle(Some(secs(2)))
            .background(false)
    });
    runtime().block_on(async {
        open(&pool, 1).await;
        mock.advance(secs(3));
        t.check_delay_ms.store(100, SeqCst);
        let err = pool.get_timeout(Duration::from_millis(50)).await;
        assert!(
            matches!(err, Err(PoolError::Timeout(TimeoutKind::Checking))),
            "{err:?}"
        );
        assert_eq!(pool.metrics().checks_detached, 1);
        wait_until("the detached check passed", || pool.state().idle == 1).await;
        for i in 0..5 {
            let c = pool.get_timeout(Duration::from_millis(50)).await;
            assert!(c.is_ok(), "get {i} after the passed check: {c:?}");
        }
        assert_eq!(t.check_calls.load(SeqCst), 1, "checked once, not again");
        assert_eq!(t.opened(), 1);
    });
}
