//! latchless against its peers (deadpool managed, bb8, mobc, qp, r2d2) and
//! the bare crossbeam `ArrayQueue` pop + push floor, all with the same
//! trivial manager (a connection is an integer, `benches/common/mod.rs`):
//!
//! - `peers_uncontended/*`: one get + drop, nothing else running. Async pools
//!   are awaited inside one `block_on` of a 1-worker Tokio runtime (the
//!   pool was built in it, its background tasks run on the worker);
//!   latchless `try_get`, r2d2 and the floor are plain calls.
//! - `contended_below/<pool>/<tasks>` and `contended_above/<pool>/<tasks>`:
//!   throughput (acquires per second) of 1, 2, 4 and 8 Tokio tasks on a
//!   2-worker runtime, each doing `OPS` acquire, `yield_now()` while
//!   holding, release. Pool size "below" = tasks / 2 (at least 1: tasks
//!   wait for each other), "above" = 2 x tasks (nobody waits). After the
//!   peers, three reference entries that are not peers: "latchless
//!   no-deadline" (`acquire_timeout(Duration::MAX)`: no timer per wait),
//!   "semaphore floor" (a bare fair Tokio semaphore with as many permits as
//!   the pool size) and "yield floor" (no pool: the task loop alone).
//! - `threads_below/*` and `threads_above/*`: the same with OS threads
//!   (`std::thread::yield_now()` while holding) for r2d2, latchless
//!   `try_get` (retried with a thread yield while `None`) and the floor.
//!
//! ```text
//! cargo bench -p latchless-benches --bench peers                       # everything (~5 min on 2 cores)
//! cargo bench -p latchless-benches --bench peers -- peers_uncontended  # one group
//! cargo bench -p latchless-benches --bench peers -- --warm-up-time 0.2 --measurement-time 0.5 peers_uncontended
//! ```
//!
//! `scripts/bench-all.sh` runs it with the other benches and
//! `bench-report` (`src/bin/bench-report.rs`) turns the results into
//! BENCHMARKS.md.

mod common;

use std::hint::black_box;

use common::{
    AsyncPool, Bb8, Deadpool, Floor, Latchless, LatchlessNoDeadline, LatchlessTryGet, Mobc, Qp,
    R2d2, SemaphoreFloor, SyncPool, YieldFloor,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use criterion::{criterion_group, criterion_main};

/// Acquire + release cycles per task (or thread) per iteration.
const OPS: usize = 1_000;

/// Task (and thread) counts of the contended groups.
const TASKS: [usize; 4] = [1, 2, 4, 8];

/// Workers of the contended runtime (the machine has 2 cores).
const WORKERS: usize = 2;

/// Pool size of the uncontended group.
const UNCONTENDED_SIZE: usize = 8;

fn uncontended_async<P: AsyncPool>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
    let rt = common::runtime(1);
    let pool: P = common::build_warm(&rt, UNCONTENDED_SIZE);
    g.bench_function(name, |b| {
        b.to_async(&rt).iter(|| common::cycle(&pool));
    });
}

fn uncontended_sync<P: SyncPool>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
    let pool = P::build(UNCONTENDED_SIZE);
    g.bench_function(name, |b| {
        b.iter(|| {
            let conn = pool.acquire();
            black_box(*conn);
        })
    });
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("peers_uncontended");
    uncontended_sync::<Floor>(&mut g, Floor::NAME);

    // try_get on a pool built inside a live runtime (as in a service: the
    // background task keeps the cached clock fresh), from the bench thread.
    {
        let rt = common::runtime(1);
        let pool: Latchless = common::build_warm(&rt, UNCONTENDED_SIZE);
        g.bench_function("latchless try_get", |b| {
            b.iter(|| {
                let conn = pool.0.try_get().expect("an idle connection");
                black_box(*conn);
            })
        });
    }

    uncontended_async::<Latchless>(&mut g, "latchless get");
    uncontended_async::<Deadpool>(&mut g, Deadpool::NAME);
    uncontended_async::<Bb8>(&mut g, Bb8::NAME);
    uncontended_async::<Mobc>(&mut g, Mobc::NAME);
    uncontended_async::<Qp>(&mut g, Qp::NAME);
    uncontended_sync::<R2d2>(&mut g, R2d2::NAME);
    g.finish();
}

fn contended_async<P: AsyncPool>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    tasks: usize,
    size: usize,
    skipped: &mut Vec<String>,
) {
    if P::STALLS_WHEN_WAITING && size < tasks {
        skipped.push(format!("{}/{tasks}", P::NAME));
        return;
    }
    let pool: P = common::build_warm(rt, size);
    g.bench_with_input(BenchmarkId::new(P::NAME, tasks), &tasks, |b, &tasks| {
        b.to_async(rt).iter(|| common::contend(&pool, tasks, OPS));
    });
}

fn contended_threads<P: SyncPool>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    threads: usize,
    size: usize,
) {
    let pool = P::build(size);
    g.bench_with_input(
        BenchmarkId::new(P::NAME, threads),
        &threads,
        |b, &threads| {
            b.iter(|| common::contend_threads(&pool, threads, OPS));
        },
    );
}

fn contended(c: &mut Criterion) {
    let rt = common::runtime(WORKERS);
    for (label, size_of) in [
        ("below", common::size_below as fn(usize) -> usize),
        ("above", common::size_above),
    ] {
        let group = format!("contended_{label}");
        let mut g = c.benchmark_group(&group);
        let mut skipped = Vec::new();
        for tasks in TASKS {
            let size = size_of(tasks);
            g.throughput(Throughput::Elements((tasks * OPS) as u64));
            let s = &mut skipped;
            contended_async::<Latchless>(&mut g, &rt, tasks, size, s);
            contended_async::<Deadpool>(&mut g, &rt, tasks, size, s);
            contended_async::<Bb8>(&mut g, &rt, tasks, size, s);
            contended_async::<Mobc>(&mut g, &rt, tasks, size, s);
            contended_async::<Qp>(&mut g, &rt, tasks, size, s);
            // Reference entries, not peers (`benches/common/mod.rs`).
            contended_async::<LatchlessNoDeadline>(&mut g, &rt, tasks, size, s);
            contended_async::<SemaphoreFloor>(&mut g, &rt, tasks, size, s);
            contended_async::<YieldFloor>(&mut g, &rt, tasks, size, s);
        }
        g.finish();
        note_skipped(&group, &skipped);

        let mut g = c.benchmark_group(format!("threads_{label}"));
        for threads in TASKS {
            let size = size_of(threads);
            g.throughput(Throughput::Elements((threads * OPS) as u64));
            contended_threads::<LatchlessTryGet>(&mut g, threads, size);
            contended_threads::<R2d2>(&mut g, threads, size);
            contended_threads::<Floor>(&mut g, threads, size);
        }
        g.finish();
    }
}

/// Record (for `bench-report`) and print the configurations a
/// group left out; an empty list removes an older note.
fn note_skipped(group: &str, skipped: &[String]) {
    let path = latchless_benches::results_dir().join(format!("skipped-{group}.txt"));
    if skipped.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    for s in skipped {
        eprintln!("{group}/{s}: left out (the pool stalls when tasks wait for connections)");
    }
    std::fs::write(path, skipped.join("\n") + "\n").expect("write the skipped note");
}

criterion_group! {
    name = benches;
    config = common::criterion_config();
    targets = uncontended, contended
}
criterion_main!(benches);
