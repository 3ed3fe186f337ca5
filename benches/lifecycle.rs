//! The cost of the lifecycle policies: uncontended `try_get`+drop with
//! every feature off vs on, and one maintenance pass over a pool of 10 vs
//! 10,000 idle connections (nothing due: O(due entries), not O(pool)).
//!
//! `cargo bench --bench lifecycle`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use latchless::{Manager, Pool};

struct Numbers;

impl Manager for Numbers {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(7)
    }
}

fn warm(pool: &Pool<Numbers>, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(pool.get().await.unwrap());
        }
    });
}

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("lifecycle");
    let off = Pool::builder(Numbers)
        .max_size(8)
        .shards(2)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .build()
        .unwrap();
    let on = Pool::builder(Numbers)
        .max_size(8)
        .shards(2)
        .min_idle(2)
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .check_after_idle(Some(Duration::from_secs(5)))
        .leak_threshold(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    warm(&off, 8);
    warm(&on, 8);
    for (name, pool) in [
        ("try_get+drop, lifecycle off", &off),
        ("try_get+drop, lifecycle on", &on),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let c = pool.try_get().unwrap();
                black_box(&*c);
            })
        });
    }
    g.finish();
}

fn maintenance(c: &mut Criterion) {
    let mut g = c.benchmark_group("maintenance pass, nothing due");
    for n in [10usize, 10_000] {
        let pool = Pool::builder(Numbers)
            .max_size(n)
            .shards(2)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .build()
            .unwrap();
        warm(&pool, n);
        pool.maintain(); // files the new connections into the wheel
        assert_eq!(pool.state().idle, n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| pool.maintain())
        });
    }
    g.finish();
}

criterion_group!(benches, hot_path, maintenance);
criterion_main!(benches);
