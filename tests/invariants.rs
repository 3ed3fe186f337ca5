//! One test per invariant of DESIGN.md (I1–I5, I7), each under a real
//! multi-threaded Tokio runtime with more tasks than connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LONG, TestManager, Tracker, runtime, wait_until};
use latchless::{Pool, PoolError, Pooled};

/// Tiny deterministic PRNG per task.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Holds a connection exclusively for a moment, asserting nobody else does.
async fn use_conn(conn: &Pooled<TestManager>, yield_first: bool) {
    conn.enter();
    if yield_first {
        tokio::task::yield_now().await;
    }
    conn.leave();
}

/// Runs `tasks` tasks of `iters` get/use/drop cycles (with a mix of
/// `try_get`, broken connections and, if `detach`, detaches) against one
/// pool.
fn churn(pool: &Pool<TestManager>, tasks: u64, iters: u64, detach: bool) {
    let rt = runtime();
    rt.block_on(async {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let pool = pool.clone();
            handles.push(tokio::spawn(async move {
                let mut next = rng(t + 1);
                for _ in 0..iters {
                    let r = next();
                    if r % 5 == 0 {
                        if let Some(c) = pool.try_get() {
                            use_conn(&c, false).await;
                        }
                        continue;
                    }
                    let c = pool.get_timeout(LONG).await.expect("get under churn");
                    use_conn(&c, r % 3 == 0).await;
                    if r % 17 == 0 {
                        c.broken.store(true, SeqCst);
                    }
                    if detach && r % 31 == 0 {
                        drop(Pooled::detach(c));
                    }
                }
            }));
        }
        for h in handles {
            h.await.expect("task finished without panicking");
        }
    });
}

fn assert_quiescent(pool: &Pool<TestManager>, t: &Tracker) {
    let s = pool.state();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.waiting, 0, "{s:?}");
    assert_eq!(s.size, s.idle, "{s:?}");
    assert_eq!(
        t.live(),
        s.size,
        "tracker and pool agree on open connections"
    );
}

#[test]
fn i1_a_connection_is_never_held_twice() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(3).shards(2).build().unwrap();
    churn(&pool, 12, 2_000, true);
    assert_quiescent(&pool, &t);
}

#[test]
fn i2_never_more_than_max_size_open_counting_connects_in_flight() {
    let (m, t) = TestManager::new();
    t.connect_delay_ms.store(1, SeqCst);
    let pool = Pool::builder(m).max_size(4).build().unwrap();
    // No detaches here: a detached connection leaves the pool (and frees
    // its place) before the caller drops it, so the tracker would count it.
    churn(&pool, 16, 400, false);
    assert!(
        t.max_live() <= 4,
        "saw {} connections at once",
        t.max_live()
    );
    assert!(
        t.max_live() >= 2,
        "the test should have reached the cap region"
    );
    assert!(
        pool.metrics().opened > 4,
        "broken/detached connections were replaced"
    );
}

#[test]
fn i3_every_connection_opened_is_closed_exactly_once() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(4).build().unwrap();
    churn(&pool, 8, 1_000, true);
    let metrics = pool.metrics();
    assert_eq!(metrics.opened, t.opened());
    // Every opened connection was closed by the pool, detached (and dropped
    // by the test), or is still open.
    assert_eq!(
        metrics.opened,
        metrics.closed + metrics.detached + metrics.state.size as u64
    );
    drop(pool);
    assert_eq!(
        t.live(),
        0,
        "dropping the pool closed every idle connection"
    );
    assert_eq!(
        t.opened(),
        t.closed(),
        "each closed exactly once (Drop counts)"
    );
}

/// I3 and memory safety: a guard released on one thread while the last
/// `Pool` is dropped on another. The release puts its connection in the idle
/// set and then re-checks the pool; the drop closes that connection. Before
/// the fix (found by the loom model `release_races_last_pool_drop`) the
/// releaser could re-check a core already freed by the drop. Under
/// AddressSanitizer (`.ci/run` runs this test so when nightly is present) a
/// regression is a reported use-after-free; natively it shows as a crash
/// or a wrong count.
#[test]
fn i3_a_guard_released_while_the_last_pool_is_dropped() {
    let rt = runtime();
    // Sweep the two threads' relative start over a few hundred spins so
    // that some iterations overlap the release's re-check window.
    let spin = |n: u64| {
        for i in 0..n {
            std::hint::black_box(i);
        }
    };
    for i in 0..4_000u64 {
        let offset = i % 256;
        let (m, t) = TestManager::new();
        let pool = Pool::builder(m)
            .max_size(1)
            .background(false)
            .build()
            .unwrap();
        let conn = rt.block_on(pool.get()).unwrap();
        let go = Arc::new(std::sync::Barrier::new(2));
        let releaser = {
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                go.wait();
                spin(offset.saturating_sub(128));
                drop(conn);
            })
        };
        go.wait();
        spin(128u64.saturating_sub(offset));
        drop(pool);
        releaser.join().unwrap();
        assert_eq!(t.opened(), 1);
        assert_eq!(t.closed(), 1, "the connection closed exactly once");
        assert_eq!(t.live(), 0);
    }
}

/// I3 with more releasing threads alive at once than the hazard registry
/// has slots (256): the rest cover their re-checks with a counted reference
/// of their own. Every connection still closes once and the core is freed
/// (its manager dropped) with the last handle: no reference leaked or lost.
#[test]
fn i3_more_releasing_threads_than_hazard_slots() {
    const THREADS: usize = 300;
    let rt = runtime();
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .max_size(8)
        .background(false)
        .build()
        .unwrap();
    rt.block_on(async {
        let warm: Vec<_> = futures_lite_join(&pool, 8).await;
        drop(warm);
    });
    let all_alive = Arc::new(std::sync::Barrier::new(THREADS));
    let all_done = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let pool = pool.clone();
            let (all_alive, all_done) = (Arc::clone(&all_alive), Arc::clone(&all_done));
            std::thread::spawn(move || {
                all_alive.wait();
                for _ in 0..20 {
                    loop {
                        if let Some(c) = pool.try_get() {
                            drop(c);
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                // Keep this thread's hazard slot until every thread released.
                all_done.wait();
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_quiescent(&pool, &t);
    assert_eq!(t.opened(), 8, "no connection was closed on the way");
    drop(pool);
    assert_eq!(t.closed(), 8, "every connection closed with the pool");
    assert_eq!(
        Arc::strong_count(&t),
        1,
        "the core (and its manager) was freed with the last handle"
    );
}

#[test]
fn i4_no_waiter_sleeps_while_a_connection_is_returned() {
    // One connection, many tasks: every acquisition beyond the first waits
    // for a release. A lost wake-up leaves a waiter parked with the
    // connection idle, and it would hit the generous deadline.
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(1).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        for round in 0..200u64 {
            let held = pool.get().await.unwrap();
            let tasks: Vec<_> = (0..6)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        for _ in 0..5 {
                            let c = pool.get_timeout(LONG).await.expect("no lost wake-up");
                            use_conn(&c, false).await;
                        }
                    })
                })
                .collect();
            if round % 2 == 0 {
                tokio::task::yield_now().await;
            }
            drop(held);
            for h in tasks {
                h.await.unwrap();
            }
            assert_eq!(pool.state().waiting, 0);
        }
    });
    assert_quiescent(&pool, &t);
    assert_eq!(t.opened(), 1, "one connection served everyone");
}

#[test]
fn i4_a_freed_place_wakes_a_waiter_who_connects() {
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m).max_size(1).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let held = pool.get().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get_timeout(LONG).await.map(|c| c.id) }
        });
        wait_until("the waiter parks", || pool.state().waiting == 1).await;
        held.broken.store(true, SeqCst);
        drop(held);
        let id = waiter
            .await
            .unwrap()
            .expect("served with a place, then connected");
        assert_eq!(id, 1, "a new connection");
    });
    assert_eq!(t.opened(), 2);
}

#[test]
fn i5_cancelled_gets_lose_nothing() {
    let (m, t) = TestManager::new();
    t.connect_delay_ms.store(1, SeqCst);
    let pool = Pool::builder(m).max_size(3).build().unwrap();
    let rt = runtime();
    let completed = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut handles = Vec::new();
        for task in 0..12u64 {
            let pool = pool.clone();
            let completed = Arc::clone(&completed);
            handles.push(tokio::spawn(async move {
                let mut next = rng(task + 100);
                for _ in 0..300 {
                    // Cancel at a random point: before connecting, while
                    // connecting, while parked, or while being served.
                    let budget = Duration::from_micros(next() % 1500);
                    match tokio::time::timeout(budget, pool.get()).await {
                        Ok(Ok(c)) => {
                            use_conn(&c, next() % 2 == 0).await;
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => panic!("unexpected error {e}"),
                        Err(_cancelled) => {}
                    }
                    if next() % 7 == 0 {
                        // An aborted task drops its future mid-poll too.
                        let p = pool.clone();
                        let h = tokio::spawn(async move { p.get().await.map(drop) });
                        tokio::task::yield_now().await;
                        h.abort();
                        let _ = h.await;
                    }
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        // Nothing is lost: no waiter left, and all three places can be
        // taken at once again.
        wait_until("connects in flight settle", || pool.state().in_use == 0).await;
        let s = pool.state();
        assert_eq!(s.waiting, 0, "{s:?}");
        let all: Vec<_> = futures_lite_join(&pool, 3).await;
        assert_eq!(all.len(), 3);
        assert!(pool.try_get().is_none());
    });
    assert!(completed.load(Ordering::Relaxed) > 0);
    assert!(t.max_live() <= 3);
    drop(pool);
    assert_eq!(
        t.live(),
        0,
        "every connection closed after the pool is gone"
    );
}

/// Takes `n` connections at once (each within the generous deadline).
async fn futures_lite_join(pool: &Pool<TestManager>, n: usize) -> Vec<Pooled<TestManager>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get_timeout(LONG).await.expect("a place was lost"));
    }
    held
}

#[test]
fn i7_waiters_are_served_in_arrival_order() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m).max_size(1).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let held = pool.get().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..10 {
            let p = pool.clone();
            let order = Arc::clone(&order);
            handles.push(tokio::spawn(async move {
                let c = p.get_timeout(LONG).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
                drop(c);
            }));
            // The next waiter arrives only after this one is queued.
            wait_until("waiter queued", || pool.state().waiting == i + 1).await;
        }
        drop(held);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    });
}

#[test]
fn i7_no_task_starves_under_contention() {
    let (m, _t) = TestManager::new();
    let pool = Pool::builder(m).max_size(2).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        let c = pool.get_timeout(LONG).await;
                        let c = c.unwrap_or_else(|e: PoolError<_>| panic!("starved: {e}"));
                        use_conn(&c, true).await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
}
