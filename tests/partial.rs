//! Issue 29: overflow connections closed on return (`Builder::max_idle`),
//! the `churn` health alert, and leak reports repeated while a connection
//! stays held. Time is the mock clock's (`Clock::mock`) and passes only
//! when a test moves it; maintenance runs by hand (`Pool::maintain`).
//! Request retries against a real server are in `retry_postgres.rs`.

mod common;


use common::{LONG, mocked_quiet, runtime, wait_until};
use latchless::Pool;

// ---------------------------------------------------------------- max_idle

/// Eight holders of a pool of eight with `max_idle(2)` return their
/// connections: the first two go idle, the other six are closed at once
/// (reason `overflow`), and what stays open is what is idle.
#[test]
fn a_burst_returns_to_max_idle_at_once() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(8).max_idle(Some(2)));
    let rt = runtime();
    let held: Vec<_> = (0..8).map(|_| rt.block_on(pool.get()).unwrap()).collect();
    assert_eq!(t.live(), 8);
    drop(held);
    let m = pool.metrics();
    assert_eq!(m.state.idle, 2, "{:?}", m.state);
    assert_eq!(m.state.size, 2, "{:?}", m.state);
    assert_eq!(m.closed_overflow, 6);
    assert_eq!(m.closed, 6, "every close is an overflow close");
    assert_eq!(t.live(), 2, "six connections closed, not kept idle");
    // The two kept are reused, and returned again they stay.
    let again: Vec<_> = (0..2).map(|_| pool.try_get().unwrap()).collect();
    drop(again);
    assert_eq!(pool.metrics().closed_overflow, 6);
    assert_eq!(pool.state().idle, 2);
}

/// The same burst returned from many threads at once: never more than
/// `max_idle` stay idle, and every connection is either idle or closed.
#[test]
fn concurrent_returns_never_leave_more_than_max_idle() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(8).max_idle(Some(2)));
    let rt = runtime();
    for round in 0..20 {
        let held: Vec<_> = (0..8).map(|_| rt.block_on(pool.get()).unwrap()).collect();
        std::thread::scope(|s| {
            for c in held {
                s.spawn(move || drop(c));
            }
        });
        let st = pool.state();
        assert_eq!(st.idle, 2, "round {round}: {st:?}");
        assert_eq!(t.live(), 2, "round {round}");
    }
    assert_eq!(pool.metrics().closed_overflow, 20 * 6);
}

/// With `max_idle` connections idle (here none) and a `get` parked at the
/// cap, a return goes to the waiter: no overflow close, no new connect.
#[test]
fn a_return_at_max_idle_serves_a_parked_get() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(2).max_idle(Some(0)));
    let rt = runtime();
    rt.block_on(async {
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        let (a_id, b_id) = (a.id, b.id);
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get_timeout(LONG).await.map(|c| c.id) })
        };
        wait_until("the get waits", || pool.state().waiting == 1).await;
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), a_id, "the waiter got it");
        let m = pool.metrics();
        assert_eq!(m.closed_overflow, 1, "closed when the waiter returned it");
        assert_eq!(m.opened, 2, "no connect for the waiter");
        // Nobody waits now: the next return closes (max_idle 0).
        drop(b);
        let m = pool.metrics();
        assert_eq!(m.closed_overflow, 2, "{b_id} closed");
        assert_eq!(m.state.idle, 0);
        assert_eq!(t.live(), 0);
    });
}

/// Without `max_idle` (the default) every return stays idle, as before.
#[test]
fn without_max_idle_every_return_stays_idle() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(8));
    let rt = runtime();
    let held: Vec<_> = (0..8).map(|_| rt.block_on(pool.get()).unwrap()).collect();
    drop(held);
    assert_eq!(pool.state().idle, 8);
    assert_eq!(pool.metrics().closed_overflow, 0);
    assert_eq!(t.live(), 8);
}

/// `min_idle <= max_idle <= max_size` is checked at build, with the rule
/// in the message; `set_max_size` below `max_idle` is allowed.
#[test]
fn max_idle_outside_min_idle_and_max_size_is_refused_at_build() {
    let (m, _t) = common::TestManager::new();
    let err = Pool::builder(m.clone())
        .max_size(4)
        .max_idle(Some(5))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_idle");
    assert_eq!(
        err.to_string(),
        "max_idle (5) must be in min_idle (0)..=max_size (4)"
    );
    let err = Pool::builder(m.clone())
        .max_size(4)
        .min_idle(3)
        .max_idle(Some(2))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_idle");
    assert_eq!(
        err.to_string(),
        "max_idle (2) must be in min_idle (3)..=max_size (4)"
    );
    let pool = Pool::builder(m)
        .max_size(4)
        .max_size_limit(8)
        .min_idle(1)
        .max_idle(Some(4))
        .background(false)
        .build()
        .unwrap();
    pool.set_max_size(2).unwrap();
    assert_eq!(pool.max_size(), 2);
    pool.set_max_size(8).unwrap();
    assert_eq!(pool.config().max_idle, Some(4));
}

/// A shrink and `max_idle` together: surplus above the new cap closes as
/// before (not counted as overflow), then `max_idle` bounds what stays.
#[test]
fn a_shrink_with_max_idle_closes_surplus_then_bounds_idle() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(6).max_idle(Some(3)));
    let rt = runtime();
    let held: Vec<_> = (0..6).map(|_| rt.block_on(pool.get()).unwrap()).collect();
    pool.set_max_size(4).unwrap();
    drop(held);
    let m = pool.metrics();
    assert_eq!(m.state.idle, 3, "{:?}", m.state);
    assert_eq!(m.closed, 3);
    assert_eq!(m.closed_overflow, 1, "two closed for the shrink, one overflow");
    assert_eq!(t.live(), 3);
}
