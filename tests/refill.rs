//! The `min_idle` refill opens connections through the same connect path as
//! `get` (issue 11, "one connect path"): a refill in flight is counted as
//! connecting, not in use; a refill that closes its new connection counts
//! it opened and closed; and a connection the refill opened is stamped for
//! `check_after_idle` like one a `get` opened and returned.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{TestManager, runtime, wait_until};
use latchless::Pool;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// With `min_idle(2)` and a slow `connect`, `state()` used to report
/// `in_use: 2` while nobody held a connection.
#[test]
fn refill_connects_in_flight_are_not_in_use() {
    let (m, t) = TestManager::new();
    t.connect_delay_ms.store(2_000, SeqCst);
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder(m).max_size(4).min_idle(2).build().unwrap();
        wait_until("both refill connects started", || {
            t.connect_calls.load(SeqCst) == 2
        })
        .await;
        let s = pool.state();
        assert_eq!(s.size, 2, "two places reserved for the refill: {s:?}");
        assert_eq!(s.in_use, 0, "nobody holds a connection: {s:?}");
        assert_eq!(s.idle, 0, "{s:?}");
    });
}

/// A refill whose connect finishes after `close` closes the new connection:
/// it used to skip the `opened` and `closed` counters.
#[test]
fn a_refill_that_closes_its_new_connection_counts_it() {
    let (m, t) = TestManager::new();
    t.connect_delay_ms.store(300, SeqCst);
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder(m).max_size(2).min_idle(1).build().unwrap();
        wait_until("the refill connect started", || {
            t.connect_calls.load(SeqCst) == 1
        })
        .await;
        pool.close().await;
        wait_until("the refill's connection closed", || {
            t.opened() == 1 && t.live() == 0
        })
        .await;
        wait_until("its place is back", || pool.state().size == 0).await;
        let m = pool.metrics();
        assert_eq!(
            (m.opened, m.closed),
            (1, 1),
            "opened by the refill, closed at once: {m:?}"
        );
    });
}

/// A connection the refill opened was never stamped for
/// `check_after_idle`, so it was handed out unchecked however long it sat
/// idle (after a database restart, a dead connection for the first
/// caller); one opened by `get` and idle as long is checked once.
#[test]
fn a_refilled_connection_idle_past_check_after_idle_is_checked() {
    for by_refill in [false, true] {
        let (m, t) = TestManager::new();
        let rt = runtime();
        rt.block_on(async {
            let pool = Pool::builder(m)
                .max_size(2)
                .min_idle(usize::from(by_refill))
                .check_after_idle(Some(ms(100)))
                .build()
                .unwrap();
            if by_refill {
                wait_until("the refill opened one", || pool.state().idle == 1).await;
            } else {
                drop(pool.get().await.unwrap());
            }
            assert_eq!(t.opened(), 1);
            tokio::time::sleep(ms(1_000)).await;
            let c = pool.get().await.unwrap();
            assert_eq!(c.id, 0, "the idle connection, not a new one");
            assert_eq!(
                t.check_calls.load(SeqCst),
                1,
                "idle 1 s with check_after_idle 100 ms: checked once (opened by {})",
                if by_refill { "the refill" } else { "get" }
            );
        });
    }
}

/// `warm_up` and the background refill may run side by side; together they
/// open no more than `min_idle` while nothing is taken. (With a 5 ms
/// connect, `min_idle(4)` + `warm_up()` used to open 7 or 8.)
#[test]
fn warm_up_and_the_refill_together_open_no_more_than_min_idle() {
    for round in 0..5 {
        let (m, t) = TestManager::new();
        t.connect_delay_ms.store(5, SeqCst);
        runtime().block_on(async {
            let pool = Pool::builder(m).max_size(8).min_idle(4).build().unwrap();
            let opened = pool.warm_up().await.unwrap();
            assert!(opened <= 4, "round {round}: warm_up opened {opened}");
            // A few maintenance periods: the refill looks again.
            tokio::time::sleep(ms(800)).await;
            assert_eq!(t.opened(), 4, "round {round}: {:?}", pool.state());
            assert_eq!(pool.state().idle, 4);
        });
    }
}

/// A manager whose `connect` panics makes the `min_idle` refill back off
/// like any failed connect (it used to retry about 8 times a second, a
/// panic message each time).
#[test]
fn a_panicking_connect_makes_the_refill_back_off() {
    let (m, t) = TestManager::new();
    t.panic_next.store(usize::MAX, SeqCst);
    let rt = runtime();
    rt.block_on(async {
        let pool = Pool::builder(m)
            .max_size(4)
            .min_idle(2)
            .connect_backoff(ms(500))
            .max_connect_backoff(ms(1_000))
            .build()
            .unwrap();
        tokio::time::sleep(ms(3_000)).await;
        let calls = t.connect_calls.load(SeqCst);
        // Backing off from 250-500 ms, doubling to 1 s: a handful of
        // attempts in 3 s, not one per maintenance pass.
        assert!(calls >= 1, "the refill tried");
        assert!(calls <= 12, "{calls} connects in 3 s");
        let s = pool.state();
        assert_eq!((s.size, s.in_use), (0, 0), "no place lost: {s:?}");
        // It recovers once connects stop panicking.
        t.panic_next.store(0, SeqCst);
        wait_until("the refill opened min_idle", || pool.state().idle == 2).await;
    });
}
