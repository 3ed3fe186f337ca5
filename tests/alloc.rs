//! The steady state allocates nothing: `try_get` + drop and an uncontended
//! `get().await` + drop, counted by a global allocator on the thread that
//! runs them (`counting/`). The pool's fast path and its maintenance
//! passes run on the calling thread, so nothing of the pool's escapes the
//! count.

mod counting;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use counting::counted;
use latchless::{KeyedManager, KeyedPool, Manager, Pool};

struct Numbers;
impl Manager for Numbers {
    type Connection = Vec<u8>;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<Vec<u8>, std::io::Error> {
        Ok(vec![0; 64])
    }
}

struct Hosts;
impl KeyedManager<String> for Hosts {
    type Connection = Vec<u8>;
    type Error = std::io::Error;
    async fn connect(&self, _: &String) -> Result<Vec<u8>, std::io::Error> {
        Ok(vec![0; 64])
    }
}

/// A runtime on the calling thread, so that what it runs is counted.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn steady_state_acquire_and_release_allocate_nothing() {
    let pool = Pool::builder(Numbers)
        .max_size(4)
        .shards(2)
        .build()
        .unwrap();
    let rt = current_thread();
    // Warm up: open a connection, initialise this thread's shard.
    rt.block_on(async { drop(pool.get().await.unwrap()) });
    drop(pool.try_get().unwrap());

    // Maintenance passes run among the releases (one is due every 250 ms
    // with the default settings, so a slow machine runs one here anyway):
    // they allocate nothing either, not even the pool's first.
    let n = counted(|| {
        for i in 0..10_000 {
            let c = pool.try_get().expect("idle connection");
            std::hint::black_box(&*c);
            drop(c);
            if i % 2_500 == 0 {
                pool.maintain();
            }
        }
    });
    assert_eq!(n, 0, "try_get + drop and maintenance allocated {n} times");

    // Poll `get()` by hand with a no-op waker so that no executor machinery
    // is counted: the uncontended path must complete on its first poll.
    let n = counted(|| {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000 {
            let mut fut = pin!(pool.get());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(c)) => drop(c),
                other => panic!(
                    "uncontended get did not complete at once: {:?}",
                    other.is_ready()
                ),
            }
        }
    });
    assert_eq!(n, 0, "get().await + drop allocated {n} times");

    // The counter does count: the slow path (a fresh pool connecting) allocates.
    let n = counted(|| {
        let p = Pool::builder(Numbers).build().unwrap();
        rt.block_on(async { drop(p.get().await.unwrap()) });
    });
    assert!(n > 0, "the counting allocator must see allocations");
}

/// `get_blocking` served from the idle set allocates nothing either, on
/// a plain thread with no runtime left.
#[test]
fn get_blocking_from_the_idle_set_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let pool = Pool::builder(Numbers)
            .max_size(2)
            .shards(1)
            .check_after_idle(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        pool
    });
    // No runtime at all any more: the idle set serves without one.
    drop(rt);
    // On a plain thread, as a service's worker would.
    let allocs = std::thread::spawn(move || {
        // Warm the thread's own registrations (thread-locals) first.
        drop(pool.get_blocking(Duration::from_secs(1)).unwrap());
        counted(|| {
            for _ in 0..1000 {
                let c = pool.get_blocking(Duration::from_secs(1)).unwrap();
                assert_eq!(c.len(), 64);
                drop(c);
            }
        })
    })
    .join()
    .unwrap();
    assert_eq!(allocs, 0, "get_blocking + drop from the idle set allocated");
}

/// A `get` or `try_get` on a key with an idle connection allocates
/// nothing: through the map, from the thread's last key, and again once
/// that key was evicted under the thread and made anew.
#[test]
fn a_keyed_hit_allocates_nothing_also_after_its_key_was_evicted() {
    let pool = KeyedPool::builder(Hosts)
        .max_keys(1)
        .shards(2)
        .build()
        .unwrap();
    let rt = current_thread();
    let (a, b) = ("10.0.0.1:80".to_string(), "10.0.0.2:80".to_string());
    let mut cx = Context::from_waker(Waker::noop());
    let mut hits = |key: &String| {
        counted(|| {
            for _ in 0..1_000 {
                let mut fut = pin!(pool.get(key));
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(c)) => drop(c),
                    other => panic!("a hit did not complete at once: {:?}", other.is_ready()),
                }
                drop(pool.try_get(key).expect("its idle connection"));
            }
        })
    };
    rt.block_on(async { drop(pool.get(&a).await.unwrap()) });
    let n = hits(&a);
    assert_eq!(n, 0, "keyed hits allocated {n} times");
    // Key b takes key a's place (max_keys 1), then a takes it back: the
    // thread's last key, a's first pool, is closed.
    rt.block_on(async {
        drop(pool.get(&b).await.unwrap());
        drop(pool.get(&a).await.unwrap());
    });
    assert_eq!(pool.keys_dropped(), (0, 2));
    let n = hits(&a);
    assert_eq!(n, 0, "keyed hits on the key made anew allocated {n} times");
}

/// A keyed pool's maintenance pass notes each key's use from counters it
/// reads in place: with many keys it allocates nothing per key (a full
/// `Metrics` snapshot per key, four histograms, would).
#[test]
fn a_keyed_maintenance_pass_allocates_nothing_per_key() {
    const KEYS: usize = 16;
    let pool = KeyedPool::builder(Hosts).shards(2).build().unwrap();
    let rt = current_thread();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("10.0.1.{i}:80")).collect();
    rt.block_on(async {
        for k in &keys {
            drop(pool.get(k).await.unwrap());
        }
    });
    pool.maintain();
    let n = counted(|| {
        for _ in 0..10 {
            pool.maintain();
        }
    });
    assert_eq!(n, 0, "10 passes over {KEYS} keys allocated {n} times");
    assert_eq!(pool.keys(), KEYS, "every key in use stays");
}

/// A `get` that waits at the cap, served by a release, allocates nothing
/// once this thread has waited before: its waiter node is the one its
/// last wait left (`waiters.rs`, `recycle`), and the background task's
/// sweeper covers its deadline (no timer of its own).
#[test]
fn a_get_that_waits_at_the_cap_allocates_nothing_once_warm() {
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let rt = current_thread();
    let mut cx = Context::from_waker(Waker::noop());
    // One wait, served by a release; then yields, so that the background
    // task (spawned by the first wait) starts sweeping.
    let mut cycle = || {
        let held = match pin!(pool.get()).poll(&mut cx) {
            Poll::Ready(Ok(c)) => c,
            _ => panic!("the idle connection"),
        };
        let mut waiting = pin!(pool.get());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "at the cap");
        drop(held);
        match waiting.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(c)) => drop(c),
            _ => panic!("served by the release"),
        }
    };
    rt.block_on(async {
        drop(pool.get().await.unwrap());
        cycle();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let n = counted(|| {
            for _ in 0..1_000 {
                cycle();
            }
        });
        assert_eq!(n, 0, "1,000 waits allocated {n} times");
        assert_eq!(pool.metrics().waits, 1_001);
    });
}
