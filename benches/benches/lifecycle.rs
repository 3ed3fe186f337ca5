//! The cost of the lifecycle policies: uncontended `try_get`+drop with
//! every feature off vs on, and one maintenance pass over a pool of 10 vs
//! 10,000 idle connections (nothing due: O(due entries), not O(pool)).
//!
//! The release with a clean-up on return (`Manager::needs_cleanup`): a
//! clean return, and the release of a dirty one (the clean-up itself runs
//! in a task of its own, off the timed path).
//!
//! `cargo bench -p latchless-benches --bench lifecycle`

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::LlNumbers as Numbers;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use latchless::Pool;

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

fn lifecycle_on() -> latchless::Builder<Numbers> {
    Pool::builder(Numbers)
        .max_size(8)
        .shards(2)
        .min_idle(2)
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        // Longer than the whole run, so that `try_get` never meets a
        // connection due for a check (it would leave it for `get`).
        .check_after_idle(Some(Duration::from_secs(3600)))
}

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("lifecycle");
    // Built inside a live runtime, as in a service: the background task
    // keeps the cached clock fresh.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (off, on, on_leak) = {
        let _in_runtime = rt.enter();
        let off = Pool::builder(Numbers)
            .max_size(8)
            .shards(2)
            .idle_timeout(None)
            .max_lifetime(None)
            .check_after_idle(None)
            .build()
            .unwrap();
        let on = lifecycle_on().build().unwrap();
        let on_leak = lifecycle_on()
            .leak_threshold(Some(Duration::from_secs(60)))
            .build()
            .unwrap();
        (off, on, on_leak)
    };
    // The same settings without a runtime: every acquire and release reads
    // the clock (exact, and the price of having no background task).
    let no_rt = std::thread::spawn(|| lifecycle_on().build().unwrap())
        .join()
        .unwrap();
    rt.block_on(async {
        for pool in [&off, &on, &on_leak] {
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(pool.get().await.unwrap());
            }
        }
    });
    warm(&no_rt, 8);
    for (name, pool) in [
        ("try_get+drop, lifecycle off", &off),
        ("try_get+drop, lifecycle on", &on),
        ("try_get+drop, lifecycle on + leak detection", &on_leak),
        ("try_get+drop, lifecycle on, no runtime", &no_rt),
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

/// A connection that says whether its holder left something to clean.
struct Session {
    dirty: bool,
}

/// A manager with a clean-up on return that has nothing to wait for.
struct Cleaned;

impl latchless::Manager for Cleaned {
    type Connection = Session;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Session, std::io::Error> {
        Ok(Session { dirty: false })
    }

    fn needs_cleanup(&self, conn: &mut Session) -> bool {
        conn.dirty
    }

    async fn cleanup(&self, conn: &mut Session) -> Result<(), std::io::Error> {
        conn.dirty = false;
        Ok(())
    }
}

fn cleanup(c: &mut Criterion) {
    let mut g = c.benchmark_group("release with clean-up");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = {
        let _in_runtime = rt.enter();
        Pool::builder(Cleaned)
            .max_size(64)
            .shards(2)
            .idle_timeout(None)
            .max_lifetime(None)
            .check_after_idle(None)
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(pool.get().await.unwrap());
        }
    });
    let _in_runtime = rt.enter();
    g.bench_function("try_get+drop, clean return", |b| {
        b.iter(|| {
            let c = pool.try_get().unwrap();
            black_box(&*c);
        })
    });
    // Only the drop is timed, on the runtime's worker thread as a
    // releasing task's would be: the spawned clean-up goes to that
    // worker's own queue and runs when the loop yields for a connection.
    g.bench_function("drop of a dirty connection (clean-up spawned)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                tokio::spawn(async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut c = loop {
                            if let Some(c) = pool.try_get() {
                                break c;
                            }
                            tokio::task::yield_now().await;
                        };
                        c.dirty = true;
                        let start = std::time::Instant::now();
                        drop(c);
                        total += start.elapsed();
                    }
                    total
                })
                .await
                .unwrap()
            }
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path, maintenance, cleanup);
criterion_main!(benches);
