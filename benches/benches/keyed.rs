//! A hit on a key of a `KeyedPool` (a key with an idle connection) against
//! `Pool::get` on a pool of one, uncontended, in the same run: what the
//! keyed pool's lookup (the thread's last key, or the lock-free map) adds
//! to the pool's own fast path. Target: the keyed hit within 2x
//! `Pool::get`. Two more groups take keys in turn against as many pools
//! in turn: two keys (each held by the thread's last keys) and six (more
//! than a thread holds: every hit through the map).
//!
//! `cargo bench -p latchless-benches --bench keyed`

mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::LlNumbers as Numbers;
use criterion::{Criterion, criterion_group, criterion_main};
use latchless::{KeyedManager, KeyedPool, Pool};

/// Keys are upstream names; a connection is a number.
struct Hosts;

impl KeyedManager<String> for Hosts {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self, host: &String) -> Result<u64, std::io::Error> {
        Ok(host.len() as u64)
    }
}

/// Keys a gateway might use: `host:port` strings.
fn keys() -> Vec<String> {
    (0..16).map(|i| format!("10.0.{i}.7:8080")).collect()
}

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (pool, keyed) = {
        let _in_runtime = rt.enter();
        let pool = Pool::builder(Numbers)
            .max_size(8)
            .shards(2)
            .build()
            .unwrap();
        let keyed = KeyedPool::builder(Hosts)
            .max_per_key(8)
            .max_total(128)
            .shards(2)
            .build()
            .unwrap();
        (pool, keyed)
    };
    let keys = keys();
    rt.block_on(async {
        let held: Vec<_> = futures_of(&pool, 8).await;
        drop(held);
        for key in &keys {
            let held: Vec<_> = {
                let mut v = Vec::new();
                for _ in 0..8 {
                    v.push(keyed.get(key).await.unwrap());
                }
                v
            };
            drop(held);
        }
    });
    let key = keys[5].clone();
    // A thread caches the connection it returned last, of one pool only
    // (DESIGN.md, "The thread-affine fast path"). Each benchmark first
    // gives that cache to the pool it measures, or, in the second group,
    // to the other one: both idle connections taken (whichever was cached
    // is claimed, which frees the cache), the one to cache returned first.
    // Through `get`: a pool left alone for most of a second hands nothing
    // to `try_get` until a `get` has run (seen here between benchmarks,
    // while criterion analyses); a `try_get` that finds nothing tries
    // again.
    let cache_to_pool = |to_pool: bool| {
        let k = rt.block_on(keyed.get(&key)).expect("an idle connection");
        let p = rt.block_on(pool.get()).expect("an idle connection");
        if to_pool {
            drop(p);
            drop(k);
        } else {
            drop(k);
            drop(p);
        }
    };
    let try_pool = |b: &mut criterion::Bencher<'_>| {
        b.iter(|| {
            let c = loop {
                if let Some(c) = pool.try_get() {
                    break c;
                }
            };
            black_box(&*c);
        })
    };
    let try_keyed = |b: &mut criterion::Bencher<'_>| {
        b.iter(|| {
            let c = loop {
                if let Some(c) = keyed.try_get(black_box(&key)) {
                    break c;
                }
            };
            black_box(&*c);
        })
    };
    let mut g = c.benchmark_group("keyed_hit");
    cache_to_pool(true);
    g.bench_function("Pool::try_get+drop", try_pool);
    cache_to_pool(false);
    g.bench_function("KeyedPool::try_get(&k)+drop", try_keyed);
    let _in_runtime = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    cache_to_pool(true);
    g.bench_function("Pool::get().await+drop", |b| {
        b.iter(|| {
            let mut get = pin!(pool.get());
            let c = loop {
                if let Poll::Ready(c) = get.as_mut().poll(&mut cx) {
                    break c.expect("an idle connection");
                }
            };
            black_box(&*c);
        })
    });
    cache_to_pool(false);
    g.bench_function("KeyedPool::get(&k).await+drop", |b| {
        b.iter(|| {
            let mut get = pin!(keyed.get(black_box(&key)));
            let c = loop {
                if let Poll::Ready(c) = get.as_mut().poll(&mut cx) {
                    break c.expect("an idle connection");
                }
            };
            black_box(&*c);
        })
    });
    g.finish();
    // The thread's cache holding the other pool's connection: what a
    // thread that serves several pools or keys meets on all but one.
    let mut g = c.benchmark_group("keyed_hit_cache_elsewhere");
    cache_to_pool(false);
    g.bench_function("Pool::try_get+drop", try_pool);
    cache_to_pool(true);
    g.bench_function("KeyedPool::try_get(&k)+drop", try_keyed);
    g.finish();
    // Keys in turn against pools in turn: a thread that serves several
    // upstreams. Two keys are both held by the thread's last keys
    // (`last_key.rs`); six and twelve are more than it holds, so every hit
    // goes through the map. Pools of their own without
    // `check_after_idle`: `try_get` leaves connections due for a check to
    // `get`, and with two pools the thread's cache cannot hold a fresh one
    // of each, so the loops below could spin on stale ones between
    // benchmarks.
    let (pools, keyed) = {
        let _in_runtime = rt.enter();
        let p = || {
            Pool::builder(Numbers)
                .max_size(8)
                .shards(2)
                .check_after_idle(None)
                .build()
                .unwrap()
        };
        let keyed = KeyedPool::builder(Hosts)
            .max_per_key(8)
            .shards(2)
            .check_after_idle(None)
            .build()
            .unwrap();
        ((0..12).map(|_| p()).collect::<Vec<_>>(), keyed)
    };
    let in_turn: Vec<String> = keys[4..16].to_vec();
    rt.block_on(async {
        for p in &pools {
            drop(futures_of(p, 8).await);
        }
        for k in &in_turn {
            let mut v = Vec::new();
            for _ in 0..8 {
                v.push(keyed.get(k).await.unwrap());
            }
        }
    });
    for n in [2, 6, 12] {
        in_turn_group(c, n, &pools[..n], &keyed, &in_turn[..n]);
    }
}

/// `n` keys in turn against `n` pools in turn.
fn in_turn_group(
    c: &mut Criterion,
    n: usize,
    pools: &[Pool<Numbers>],
    keyed: &KeyedPool<String, Hosts>,
    keys: &[String],
) {
    let mut g = c.benchmark_group(format!("keyed_hit_{n}_in_turn"));
    g.bench_function(format!("Pool::try_get+drop, {n} pools"), |b| {
        b.iter(|| {
            for p in pools {
                let c = loop {
                    if let Some(c) = p.try_get() {
                        break c;
                    }
                };
                black_box(&*c);
            }
        })
    });
    g.bench_function(format!("KeyedPool::try_get(&k)+drop, {n} keys"), |b| {
        b.iter(|| {
            for k in keys {
                let c = loop {
                    if let Some(c) = keyed.try_get(black_box(k)) {
                        break c;
                    }
                };
                black_box(&*c);
            }
        })
    });
    g.finish();
}

async fn futures_of(pool: &Pool<Numbers>, n: usize) -> Vec<latchless::Pooled<Numbers>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get().await.unwrap());
    }
    v
}

criterion_group!(benches, hit);
criterion_main!(benches);
