//! Uncontended acquire + release against the floor: a bare crossbeam
//! `ArrayQueue` pop + push, measured in the same run.
//!
//! `cargo bench -p latchless-benches --bench acquire`

mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::LlNumbers as Numbers;
use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use latchless::Pool;

/// A pool with the default settings (every lifecycle policy on), built
/// inside a live multi-threaded runtime that keeps running its background
/// task, as in a service. The runtime is returned to keep it alive.
fn warm_pool(shards: usize) -> (Pool<Numbers>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = {
        let _in_runtime = rt.enter();
        Pool::builder(Numbers)
            .max_size(8)
            .shards(shards)
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let held: Vec<_> = futures(&pool, 8).await;
        drop(held);
    });
    (pool, rt)
}

async fn futures(pool: &Pool<Numbers>, n: usize) -> Vec<latchless::Pooled<Numbers>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get().await.unwrap());
    }
    v
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");

    let q = ArrayQueue::new(8);
    for i in 0..8u64 {
        q.push(i).unwrap();
    }
    g.bench_function("floor: ArrayQueue pop+push", |b| {
        b.iter(|| {
            let v = q.pop().unwrap();
            q.push(black_box(v)).unwrap();
        })
    });

    let (pool, _rt) = warm_pool(2);
    g.bench_function("latchless try_get+drop", |b| {
        b.iter(|| {
            let c = pool.try_get().unwrap();
            black_box(&*c);
        })
    });

    // Served from the idle set on a plain thread, no runtime involved (the
    // target: within 10% of `try_get`).
    g.bench_function("latchless get_blocking+drop", |b| {
        b.iter(|| {
            let c = pool
                .get_blocking(std::time::Duration::from_secs(1))
                .expect("an idle connection");
            black_box(&*c);
        })
    });

    // Inside the runtime's context, as a task would be: a connection that
    // sat idle past `check_after_idle` while criterion paused between
    // benchmarks is checked (asynchronously) once, which needs the timer.
    let _in_runtime = _rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("latchless get().await+drop", |b| {
        b.iter(|| match pin!(pool.get()).poll(&mut cx) {
            Poll::Ready(Ok(c)) => {
                black_box(&*c);
            }
            _ => unreachable!("uncontended get completes on its first poll"),
        })
    });
    g.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
