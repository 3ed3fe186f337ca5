//! The thread-affine fast path (issue 16; DESIGN.md, "The thread-affine
//! fast path"): a release with no waiter parks its connection for the
//! releasing thread, outside the shared idle set. These tests show that a
//! parked connection is still an idle connection in every respect: the
//! thread takes it back first, other threads steal it (also after its
//! thread exited), `state()` counts it, maintenance expires it, `close`
//! closes it, and two pools on one thread do not mix their connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{mocked_quiet, paused};

/// Two connections, both idle: `first` released last (parked for this
/// thread), `second` before it (pushed to the idle set: the thread's cache
/// was taken). Returns their ids.
fn two_idle(pool: &latchless::Pool<common::TestManager>) -> (u64, u64) {
    paused().block_on(async {
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        let (ida, idb) = (a.id, b.id);
        drop(b); // parked: the thread's cache was empty
        drop(a); // the cache holds b's key: into the idle set
        (idb, ida)
    })
}

#[test]
fn the_thread_takes_back_the_connection_it_parked_first() {
    let (pool, _t, _mock) = mocked_quiet(|b| b.max_size(2));
    let (parked, shared) = two_idle(&pool);
    let s = pool.state();
    assert_eq!((s.size, s.idle, s.in_use), (2, 2, 0), "both count as idle");
    let c = pool.try_get().unwrap();
    assert_eq!(c.id, parked, "the thread's parked connection comes first");
    let d = pool.try_get().unwrap();
    assert_eq!(d.id, shared, "then the shared idle set");
    assert!(pool.try_get().is_none());
}

#[test]
fn a_connection_parked_by_a_thread_that_exited_is_stolen_by_another() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(1));
    let conn = paused().block_on(pool.get()).unwrap();
    let id = conn.id;
    // Released (and parked) on a thread that then exits.
    std::thread::spawn(move || drop(conn)).join().unwrap();
    let s = pool.state();
    assert_eq!((s.size, s.idle, s.in_use), (1, 1, 0), "{s:?}");
    let c = pool
        .try_get()
        .expect("the parked connection is found by a scan");
    assert_eq!(c.id, id);
    assert_eq!(t.opened(), 1, "no second connection was opened");
    drop(c);
    // And a waiter on another thread is served by a parked connection.
    let c = pool.try_get().unwrap();
    let waiter = std::thread::spawn({
        let pool = pool.clone();
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(pool.get_timeout(Duration::from_secs(3600)))
                .map(|c| c.id)
        }
    });
    while pool.state().waiting == 0 {
        std::thread::yield_now();
    }
    drop(c);
    assert_eq!(waiter.join().unwrap().unwrap(), id);
}

/// After a hand-off to a waiter, a `get` that misses its own thread's
/// connection and shard goes straight to registering, on the hint that
/// the idle set is empty (`waiters.rs`, `HANDED`). A connection idle
/// elsewhere (here parked by a thread that exited) is still found: by a
/// `try_get`, which does not take the hint, and by a `get`, whose re-check
/// after registering finds it, and which is not counted as a wait.
#[test]
fn after_a_hand_off_a_connection_idle_elsewhere_is_still_found() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(1));
    let held = paused().block_on(pool.get()).unwrap();
    let id = held.id;
    let waiter = std::thread::spawn({
        let pool = pool.clone();
        move || {
            let c = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(pool.get_timeout(Duration::from_secs(3600)));
            // Dropped here: parked for this thread, which then exits.
            c.map(|c| c.id)
        }
    });
    while pool.state().waiting == 0 && !waiter.is_finished() {
        std::thread::yield_now();
    }
    drop(held); // handed to the waiter
    assert_eq!(waiter.join().unwrap().unwrap(), id);
    let s = pool.state();
    assert_eq!((s.size, s.idle, s.waiting), (1, 1, 0), "{s:?}");
    assert_eq!(pool.metrics().waits, 1);
    let c = pool
        .try_get()
        .expect("try_get searches past the hint: the parked connection");
    assert_eq!(c.id, id);
    std::thread::spawn(move || drop(c)).join().unwrap();
    let c = paused()
        .block_on(pool.get_timeout(Duration::from_secs(3600)))
        .expect("get finds it in its re-check");
    assert_eq!(c.id, id);
    assert_eq!(
        pool.metrics().waits,
        1,
        "a re-check that found it is no wait"
    );
    assert_eq!(t.opened(), 1);
}

#[test]
fn maintenance_expires_a_parked_connection_and_the_stale_key_is_skipped() {
    let (pool, t, mock) =
        mocked_quiet(|b| b.max_size(2).idle_timeout(Some(Duration::from_secs(10))));
    let (parked, _shared) = two_idle(&pool);
    mock.advance(Duration::from_secs(11));
    pool.maintain();
    assert_eq!(
        t.closed(),
        2,
        "both idle connections were past the idle timeout"
    );
    let s = pool.state();
    assert_eq!((s.size, s.idle, s.in_use), (0, 0, 0), "{s:?}");
    // This thread still caches the closed connection's key: it is stale,
    // skipped, and the pool connects anew.
    assert!(pool.try_get().is_none());
    let c = paused().block_on(pool.get()).unwrap();
    assert_ne!(c.id, parked);
    assert_eq!(t.opened(), 3);
}

#[test]
fn close_closes_parked_connections() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(2));
    two_idle(&pool);
    paused().block_on(pool.close());
    assert_eq!(t.closed(), 2);
    assert_eq!(t.live(), 0);
    assert_eq!(pool.state().size, 0);
}

#[test]
fn two_pools_on_one_thread_keep_their_connections_apart() {
    let (a, ta, _m1) = mocked_quiet(|b| b.max_size(1));
    let (b, tb, _m2) = mocked_quiet(|b| b.max_size(1));
    let rt = paused();
    let (ca, cb) = rt.block_on(async { (a.get().await.unwrap(), b.get().await.unwrap()) });
    drop(ca); // parked for this thread, in pool a
    drop(cb); // the cache holds a's key: into b's idle set
    assert_eq!((a.state().idle, b.state().idle), (1, 1));
    // Each pool hands out only its own connection.
    let (ga, gb) = (b.try_get().unwrap(), a.try_get().unwrap());
    assert_eq!((ga.id, gb.id), (0, 0));
    assert!(a.try_get().is_none() && b.try_get().is_none());
    drop((ga, gb));
    assert_eq!((ta.opened(), tb.opened()), (1, 1));
    assert_eq!((a.state().idle, b.state().idle), (1, 1));
}

/// Threads taking and returning connections of a small pool on a mix of
/// paths (`try_get`, `get_blocking`, async `get`), so parks, own takes,
/// steals and hand-offs to waiters interleave: no connection is ever held
/// twice (`Conn::enter` asserts it), none is lost, and the pool never
/// opens more than `max_size`.
#[test]
fn parks_steals_and_hand_offs_interleave_without_losing_or_sharing() {
    let (m, t) = common::TestManager::new();
    let rt = common::runtime();
    let pool = {
        let _in = rt.enter();
        latchless::Pool::builder(m).max_size(3).build().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let (pool, stop, done) = (pool.clone(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(SeqCst) && i < 20_000 {
                    let c = match (n + i) % 3 {
                        0 => pool.try_get(),
                        1 => pool.get_blocking(Duration::from_secs(30)).ok(),
                        _ => rt.block_on(pool.get()).ok(),
                    };
                    if let Some(c) = c {
                        c.enter();
                        std::hint::black_box(c.id);
                        c.leave();
                    }
                    i += 1;
                }
                done.fetch_add(1, SeqCst);
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(SeqCst) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, SeqCst);
    for th in threads {
        th.join().unwrap();
    }
    assert!(
        t.max_live() <= 3,
        "more than max_size open: {}",
        t.max_live()
    );
    let s = pool.state();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.idle, s.size, "every open connection is idle: {s:?}");
    assert_eq!(s.size, t.live(), "{s:?}");
}

/// The asymmetric fence (`src/asym.rs`): a release that parks while the
/// pool is relaxed (no waiter for a while: its releases run no fence)
/// races a `get` that registers as a waiter and arms the pool with a
/// `membarrier`. Each round relaxes the pool first (`health()` samples
/// maintenance's monitor, and two samples without a waiter in between
/// relax it), then lets one thread drop the only connection while
/// another waits for it: the waiter must get it, handed over or found
/// parked by its re-check, never sleep until its deadline beside it.
#[test]
fn a_waiter_racing_a_release_that_parks_without_a_fence_is_served() {
    waiters_race_parking_releases(true);
}

/// The same race with `membarrier(false)`: every parking release fences.
#[test]
fn a_waiter_racing_a_release_that_parks_and_fences_is_served() {
    waiters_race_parking_releases(false);
}

fn waiters_race_parking_releases(membarrier: bool) {
    let (m, t) = common::TestManager::new();
    let rt = common::runtime();
    let pool = {
        let _in = rt.enter();
        latchless::Pool::builder(m)
            .max_size(1)
            .acquire_timeout(Duration::from_secs(10))
            .membarrier(membarrier)
            .build()
            .unwrap()
    };
    for round in 0..300 {
        drop(pool.health());
        drop(pool.health());
        let conn = pool
            .try_get()
            .or_else(|| pool.get_blocking(Duration::from_secs(10)).ok())
            .unwrap_or_else(|| panic!("round {round}: the connection is idle"));
        let go = Arc::new(std::sync::Barrier::new(2));
        let releaser = {
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                go.wait();
                drop(conn);
            })
        };
        go.wait();
        let started = std::time::Instant::now();
        let got = rt.block_on(pool.get());
        let waited = started.elapsed();
        releaser.join().unwrap();
        let c = got.unwrap_or_else(|e| panic!("round {round}: {e} after {waited:?}"));
        assert!(
            waited < Duration::from_secs(5),
            "round {round}: served only after {waited:?}"
        );
        drop(c);
    }
    assert_eq!(t.opened(), 1, "one connection served every round");
}

/// A thread's cache entry for a pool that went away (a config reload,
/// the pool dropped on another thread) does not stop the thread from
/// parking in its other pools for good: the stale entry is replaced once
/// the thread keeps releasing elsewhere. (The entry used to stay until the
/// same pool took it back, which never happened.)
///
/// Seen from outside: a thread releases `x` then `y` into pool B. If `x`
/// parks in the thread's cache, `y` goes to the shared idle set and another
/// thread's `try_get` takes `y`; if the cache is stuck, both go to the
/// shared set, `x` first, and another thread takes `x`.
#[test]
fn a_stale_cache_entry_is_replaced_and_the_thread_parks_again() {
    use std::sync::mpsc::channel;
    let (b, _t, _mock) = mocked_quiet(|b| b.max_size(2));
    let (a, _ta, _ma) = mocked_quiet(|b| b.max_size(1));
    let (parked_tx, parked_rx) = channel();
    let (gone_tx, gone_rx) = channel::<()>();
    let (a2, b2) = (a.clone(), b.clone());
    let user = std::thread::spawn(move || {
        // Parked in this thread's cache; then pool A goes away elsewhere.
        drop(paused().block_on(a2.get()).unwrap());
        drop(a2);
        parked_tx.send(()).unwrap();
        gone_rx.recv().unwrap();
        // The thread keeps using pool B.
        for _ in 0..100 {
            drop(paused().block_on(b2.get()).unwrap());
        }
        let x = b2.try_get().expect("B's connection");
        let y = paused().block_on(b2.get()).unwrap();
        let ids = (x.id, y.id);
        drop(x);
        drop(y);
        ids
    });
    parked_rx.recv().unwrap();
    drop(a); // the last handle: closed on this thread
    gone_tx.send(()).unwrap();
    let (x, y) = user.join().unwrap();
    let taken = b.try_get().expect("one idle in the shared set");
    assert_eq!(taken.id, y, "x ({x}) parked in the thread's cache");
}
