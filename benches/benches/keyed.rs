//! A hit on a key of a `KeyedPool` (a key with an idle connection) against
//! `Pool::get` on a pool of one, uncontended, in the same run: what the
//! keyed pool's lookup (hash the key, read the lock-free map) adds to the
//! pool's own fast path. Target: the keyed hit within 2x `Pool::get`.
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
    let mut g = c.benchmark_group("keyed_hit");
    // A pool left alone for most of a second hands nothing to `try_get`
    // until a `get` has run (seen here between benchmarks, while criterion
    // analyses): each benchmark starts with one `get` of each pool, and a
    // `try_get` that finds nothing tries again.
    let rewarm = || {
        drop(rt.block_on(pool.get()).expect("an idle connection"));
        drop(rt.block_on(keyed.get(&key)).expect("an idle connection"));
    };
    rewarm();
    g.bench_function("Pool::try_get+drop", |b| {
        b.iter(|| {
            let c = loop {
                if let Some(c) = pool.try_get() {
                    break c;
                }
            };
            black_box(&*c);
        })
    });
    rewarm();
    g.bench_function("KeyedPool::try_get(&k)+drop", |b| {
        b.iter(|| {
            let c = loop {
                if let Some(c) = keyed.try_get(black_box(&key)) {
                    break c;
                }
            };
            black_box(&*c);
        })
    });
    rewarm();
    let _in_runtime = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
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
