//! What a service needs around `get` (issue 15): warm-up, graceful drain,
//! run-time resize, per-request deadlines and the blocking acquire, each
//! under a real multi-threaded runtime.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestManager, runtime};
use latchless::{Pool, PoolError, TimeoutKind};

fn pool(max: usize) -> (Pool<TestManager>, Arc<common::Tracker>) {
    let (m, t) = TestManager::new();
    let p = Pool::builder(m)
        .max_size(max)
        .check_after_idle(None)
        .background(false)
        .build()
        .unwrap();
    (p, t)
}

/// Waits (bounded) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn warm_up_opens_min_idle_connections() {
    runtime().block_on(async {
        let (m, t) = TestManager::new();
        t.connect_delay_ms.store(50, SeqCst);
        let pool = Pool::builder(m)
            .max_size(8)
            .min_idle(6)
            .background(false)
            .build()
            .unwrap();
        let start = Instant::now();
        assert_eq!(pool.warm_up().await.unwrap(), 6);
        assert_eq!(pool.state().idle, 6);
        assert_eq!(t.opened(), 6);
        // Concurrently (4 at a time): two rounds of 50 ms, not six.
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        // Already warm: nothing more to open.
        assert_eq!(pool.warm_up().await.unwrap(), 0);
    });
}

#[test]
fn warm_up_opens_at_least_one() {
    runtime().block_on(async {
        let (pool, t) = pool(4);
        assert_eq!(pool.warm_up().await.unwrap(), 1);
        assert_eq!(t.opened(), 1);
        assert_eq!(pool.state().idle, 1);
    });
}

#[test]
fn warm_up_against_a_failing_manager_returns_connect() {
    runtime().block_on(async {
        let (m, t) = TestManager::new();
        t.fail_next.store(usize::MAX, SeqCst);
        let pool = Pool::builder(m)
            .max_size(4)
            .min_idle(2)
            .fail_fast(true)
            .background(false)
            .build()
            .unwrap();
        let err = pool.warm_up().await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        // Retrying until acquire_timeout, then the last error.
        let (m, t) = TestManager::new();
        t.fail_next.store(usize::MAX, SeqCst);
        let retrying = Pool::builder(m)
            .max_size(4)
            .acquire_timeout(Duration::from_millis(150))
            .background(false)
            .build()
            .unwrap();
        let start = Instant::now();
        let err = retrying.warm_up().await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
        // No place was lost on the error path.
        until(|| pool.state().size == 0 && retrying.state().size == 0).await;
    });
}

#[test]
fn drain_returns_zero_when_every_connection_comes_back_in_time() {
    runtime().block_on(async {
        let (pool, t) = pool(4);
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        drop(pool.get().await.unwrap()); // one idle
        let back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(b);
        });
        let start = Instant::now();
        assert_eq!(pool.drain(Duration::from_secs(20)).await, 0);
        // Woken by the last return, not by the timeout.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(start.elapsed() >= Duration::from_millis(90));
        assert_eq!(t.live(), 0, "every connection closed");
        assert!(pool.is_closed());
        assert!(matches!(pool.get().await, Err(PoolError::Closed)));
        back.await.unwrap();
    });
}

#[test]
fn drain_returns_how_many_are_still_out_and_never_hangs() {
    runtime().block_on(async {
        let (pool, t) = pool(4);
        let held = [pool.get().await.unwrap(), pool.get().await.unwrap()];
        drop(pool.get().await.unwrap()); // idle: closed by the drain
        let start = Instant::now();
        assert_eq!(pool.drain(Duration::from_millis(100)).await, 2);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(5));
        assert_eq!(t.live(), 2);
        drop(held);
        assert_eq!(t.live(), 0, "in-use connections close on return");
        assert_eq!(pool.drain(Duration::from_millis(1)).await, 0);
    });
}

#[test]
fn drain_wakes_a_waiting_get_with_closed() {
    runtime().block_on(async {
        let (pool, _t) = pool(1);
        let held = pool.get().await.unwrap();
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.get().await.map(drop) });
        until(|| pool.state().waiting == 1).await;
        let drainer = {
            let p = pool.clone();
            tokio::spawn(async move { p.drain(Duration::from_secs(20)).await })
        };
        assert!(matches!(waiter.await.unwrap(), Err(PoolError::Closed)));
        drop(held);
        assert_eq!(drainer.await.unwrap(), 0);
    });
}

#[test]
fn resize_up_wakes_waiters_at_once() {
    runtime().block_on(async {
        let (m, t) = TestManager::new();
        let pool = Pool::builder(m)
            .max_size(1)
            .max_size_limit(3)
            .background(false)
            .build()
            .unwrap();
        let _held = pool.get().await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let p = pool.clone();
                tokio::spawn(async move { p.get_timeout(Duration::from_secs(20)).await })
            })
            .collect();
        until(|| pool.state().waiting == 2).await;
        let start = Instant::now();
        pool.set_max_size(3).unwrap();
        // Each waiter keeps its connection: both connected at once.
        let mut served = Vec::new();
        for w in waiters {
            served.push(w.await.unwrap().unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(pool.max_size(), 3);
        assert_eq!(pool.state().size, 3);
        assert_eq!(pool.state().in_use, 3);
        assert_eq!(t.max_live(), 3);
        drop(served);
    });
}

#[test]
fn resize_down_closes_idle_surplus_now_and_in_use_surplus_on_return() {
    runtime().block_on(async {
        let (pool, t) = pool(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        drop(held.pop()); // one idle
        pool.set_max_size(2).unwrap();
        assert_eq!(pool.max_size(), 2);
        assert_eq!(t.live(), 3, "the idle surplus closed at once");
        assert_eq!(pool.state().size, 3);
        drop(held);
        assert_eq!(t.live(), 2, "never more than the new cap once back");
        assert_eq!(pool.state().size, 2);
        assert_eq!(pool.metrics().state.size, 2);
        // The cap holds for new connects too.
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        assert!(matches!(
            pool.get_timeout(Duration::from_millis(20)).await,
            Err(PoolError::Timeout(_))
        ));
        drop((a, b));
        assert!(t.max_live() <= 4);
        assert_eq!(t.live(), 2);
    });
}

#[test]
fn a_place_freed_above_the_new_cap_goes_to_no_waiter() {
    runtime().block_on(async {
        let (pool, t) = pool(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        let p = pool.clone();
        let waiter =
            tokio::spawn(async move { p.get_timeout(Duration::from_secs(20)).await.map(|c| c.id) });
        until(|| pool.state().waiting == 1).await;
        pool.set_max_size(2).unwrap();
        // Two returns are surplus: closed, and their places serve nobody
        // (no new connection is opened for the waiter above the cap).
        drop(held.pop());
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.state().waiting, 1);
        assert_eq!(t.live(), 2);
        assert_eq!(t.opened(), 4);
        // The third return is within the cap: it goes to the waiter.
        let id = held[1].id;
        drop(held.pop());
        assert_eq!(waiter.await.unwrap().unwrap(), id);
        assert_eq!(t.opened(), 4);
        assert_eq!(t.max_live(), 4);
    });
}

#[test]
fn set_max_size_validates_and_names_the_rule() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(4)
        .max_size_limit(6)
        .min_idle(2)
        .background(false)
        .build()
        .unwrap();
    let e: latchless::ResizeError = pool.set_max_size(0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "max_size (0) must be in 1..=max_size_limit (6)"
    );
    let e = pool.set_max_size(7).unwrap_err();
    assert_eq!(
        e.to_string(),
        "max_size (7) must be in 1..=max_size_limit (6)"
    );
    let e = pool.set_max_size(1).unwrap_err();
    assert_eq!(e.to_string(), "max_size (1) must not be below min_idle (2)");
    assert_eq!(pool.max_size(), 4, "unchanged after an error");
    pool.set_max_size(6).unwrap();
    assert_eq!(pool.max_size(), 6);
    let (m, _t) = TestManager::new();
    let e = Pool::builder(m)
        .max_size(4)
        .max_size_limit(3)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_size_limit");
    assert_eq!(
        e.to_string(),
        "max_size_limit (3) must be in max_size (4)..=65536"
    );
}

/// `open <= max_size_limit` always, and `open <= n` once the connections of
/// a concurrent shrink to `n` are back (the stress counterpart of a loom
/// model: the shrink races releases, connects and waiters).
#[test]
fn concurrent_shrink_never_exceeds_the_cap_once_connections_are_back() {
    runtime().block_on(async {
        for round in 0..20 {
            let (m, t) = TestManager::new();
            let pool = Pool::builder(m)
                .max_size(4)
                .max_size_limit(6)
                .check_after_idle(None)
                .background(false)
                .build()
                .unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let served = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let (p, stop, served) = (pool.clone(), stop.clone(), served.clone());
                    tokio::spawn(async move {
                        while !stop.load(SeqCst) {
                            if let Ok(c) = p.get_timeout(Duration::from_secs(10)).await {
                                c.enter();
                                tokio::task::yield_now().await;
                                c.leave();
                                served.fetch_add(1, SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for n in [6, 1, 5, 2, 6, 1] {
                pool.set_max_size(n).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(t.live() <= 6, "round {round}: {} open", t.live());
            }
            let final_cap = 1 + round % 3;
            pool.set_max_size(final_cap).unwrap();
            stop.store(true, SeqCst);
            for w in workers {
                w.await.unwrap();
            }
            assert!(served.load(SeqCst) > 0);
            assert!(t.max_live() <= 6);
            assert!(
                t.live() <= final_cap,
                "round {round}: {} open above the cap {final_cap}",
                t.live()
            );
            assert!(pool.state().size <= final_cap);
        }
    });
}

#[test]
fn get_until_shares_the_get_timeout_path() {
    runtime().block_on(async {
        let (pool, _t) = pool(1);
        let held = pool.get().await.unwrap();
        let start = Instant::now();
        let err = pool
            .get_until(Instant::now() + Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Timeout(_)));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(95) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // A deadline already past tries once without waiting.
        let start = Instant::now();
        let past = Instant::now() - Duration::from_secs(1);
        assert!(matches!(
            pool.get_until(past).await,
            Err(PoolError::Timeout(_))
        ));
        assert!(start.elapsed() < Duration::from_millis(500));
        // A tokio Instant converts.
        drop(held);
        let d = tokio::time::Instant::now() + Duration::from_secs(1);
        assert!(pool.get_until(d.into_std()).await.is_ok());
    });
}

/// 4 plain threads and 4 async tasks share a pool of 2: each is served in
/// the order it queued, none is lost.
#[test]
fn get_blocking_and_async_waiters_are_served_in_fifo_order() {
    let rt = runtime();
    let (pool, t) = rt.block_on(async { pool(2) });
    let (a, b) = rt.block_on(async { (pool.get().await.unwrap(), pool.get().await.unwrap()) });
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (p, order) = (pool.clone(), order.clone());
        if i % 2 == 0 {
            threads.push(std::thread::spawn(move || {
                let c = p.get_blocking(Duration::from_secs(20)).unwrap();
                c.enter();
                order.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(5));
                c.leave();
            }));
        } else {
            tasks.push(rt.spawn(async move {
                let c = p.get_timeout(Duration::from_secs(20)).await.unwrap();
                c.enter();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                c.leave();
            }));
        }
        rt.block_on(until(|| pool.state().waiting == i + 1));
    }
    // One connection circulates: waiter k is served only after k - 1
    // returned it, so the record order is the service order.
    drop(a);
    for th in threads {
        th.join().unwrap();
    }
    rt.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    drop(b);
    assert_eq!(t.opened(), 2, "no connection lost or reopened");
    assert_eq!(pool.state().idle, 2);
}

#[test]
fn get_blocking_times_out_at_its_deadline() {
    let rt = runtime();
    let (pool, _t) = rt.block_on(async { pool(1) });
    let held = rt.block_on(pool.get()).unwrap();
    let p = pool.clone();
    let took = std::thread::spawn(move || {
        let start = Instant::now();
        let err = p.get_blocking(Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(err, PoolError::Timeout(TimeoutKind::Waiting)),
            "{err:?}"
        );
        start.elapsed()
    })
    .join()
    .unwrap();
    assert!(
        took >= Duration::from_millis(95) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(pool.state().waiting, 0);
    drop(held);
}

#[test]
fn get_blocking_serves_from_the_idle_set_and_connects_on_the_build_runtime() {
    let rt = runtime();
    let (pool, t) = rt.block_on(async { pool(2) });
    let p = pool.clone();
    // Connects (on the build runtime) from a plain thread.
    std::thread::spawn(move || drop(p.get_blocking(Duration::from_secs(5)).unwrap()))
        .join()
        .unwrap();
    assert_eq!(t.opened(), 1);
    drop(rt); // no runtime any more: the idle set still serves
    let c = pool.get_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(c.id, 0);
    drop(c);
    assert_eq!(pool.state().idle, 1);
}

#[test]
fn get_blocking_without_a_runtime_or_inside_one_is_a_typed_error() {
    let (outside, _t) = pool(1);
    let err = outside.get_blocking(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, PoolError::NoRuntime), "{err:?}");
    assert!(err.to_string().contains("outside a Tokio runtime"));
    runtime().block_on(async {
        let (inside, _t) = pool(1);
        let pool = inside;
        let err = pool.get_blocking(Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, PoolError::BlockingInRuntime), "{err:?}");
        assert!(err.to_string().contains("use get().await"));
        // Served from the idle set, it works inside a runtime too.
        drop(pool.get().await.unwrap());
        assert!(pool.get_blocking(Duration::from_secs(1)).is_ok());
    });
}

/// Once the runtime the pool was built in has shut down, `get_blocking`
/// still serves from the idle set, and where it would have to wait or
/// connect it returns `NoRuntime` (it used to panic inside Tokio: "A Tokio
/// 1.x context was found, but it is being shutdown").
#[test]
fn get_blocking_after_the_build_runtime_shut_down_is_a_typed_error() {
    let rt = runtime();
    let (pool, t) = rt.block_on(async { pool(2) });
    let idle = rt.block_on(pool.get()).unwrap();
    let held = rt.block_on(pool.get()).unwrap();
    drop(idle);
    drop(rt);
    let p = pool.clone();
    let (served, err) = std::thread::spawn(move || {
        let served = p.get_blocking(Duration::from_secs(5)).map(|c| c.id);
        // The pool is now full and nothing is idle: it would have to wait.
        let held_too = p.get_blocking(Duration::from_secs(5));
        let err = p.get_blocking(Duration::from_millis(200)).map(drop);
        drop(held_too);
        (served, err)
    })
    .join()
    .expect("get_blocking must not panic");
    assert_eq!(served.unwrap(), 0, "the idle connection");
    let err = err.unwrap_err();
    assert!(matches!(err, PoolError::NoRuntime), "{err:?}");
    drop(held);
    // And to connect: nothing idle, places free.
    while let Some(c) = pool.try_get() {
        drop(latchless::Pooled::detach(c));
    }
    let p = pool.clone();
    let err = std::thread::spawn(move || p.get_blocking(Duration::from_secs(5)).map(drop))
        .join()
        .expect("get_blocking must not panic");
    assert!(matches!(err, Err(PoolError::NoRuntime)), "{err:?}");
    let s = pool.state();
    assert_eq!((s.size, s.waiting), (0, 0), "nothing left behind: {s:?}");
    assert_eq!(t.opened(), 2);
}
