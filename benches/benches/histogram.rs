//! What recording in a [`latchless::Histogram`] costs, against the
//! uncontended `try_get` + drop it will ride on once the pool records
//! acquire waits and hold times (issue 13).
//!
//! - `record 0`: a fast-path hit's record (one relaxed `fetch_add`).
//! - `record v`: a record that waited (bucket + sum, a load of the max).
//! - `try_get+drop`: today's uncontended acquire + release.
//! - `try_get+drop + 2 records`: the same plus what the wired pool adds on
//!   that path: a zero wait on acquire, a hold time on release (each in the
//!   thread's stripe).
//! - `owned bump`, `try_get+drop + 2 owned bumps`: the alternative for the
//!   fast path, counters only the slot's owner writes (load + store).
//! - `snapshot`: the cold-path read, 1 and 8 stripes.
//!
//! `cargo bench --bench histogram`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_utils::CachePadded;
use latchless::{Histogram, Manager, Pool};

struct Unit;
impl Manager for Unit {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(7)
    }
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");

    let h = Histogram::with_stripes(8);
    g.bench_function("record 0", |b| {
        b.iter(|| h.record_in(black_box(3), black_box(0)))
    });
    let mut x = 1u64;
    g.bench_function("record v", |b| {
        b.iter(|| {
            // Varying values below 2^26 ns (67 ms), so that the bucket
            // moves as in real use: one multiply-add and a shift.
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            h.record_in(black_box(3), x >> 38);
        })
    });

    let pool = Pool::builder(Unit).max_size(1).shards(2).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    drop(rt.block_on(pool.get()).unwrap());
    g.bench_function("try_get+drop", |b| {
        b.iter(|| {
            let c = pool.try_get().unwrap();
            black_box(&*c);
        })
    });
    let wait = Histogram::with_stripes(2);
    let hold = Histogram::with_stripes(2);
    g.bench_function("try_get+drop + 2 records", |b| {
        b.iter(|| {
            let c = pool.try_get().unwrap();
            wait.record_in(black_box(1), 0);
            black_box(&*c);
            drop(c);
            hold.record_in(black_box(1), black_box(1_000_000));
        })
    });

    // The alternative for the fast path: counters written only by the
    // slot's owner (a relaxed load and store, no locked instruction),
    // summed by snapshots: a hit count and a hold-time sum.
    let owned = [
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
    ];
    let bump = |c: &AtomicU64, by: u64| c.store(c.load(Relaxed) + by, Relaxed);
    g.bench_function("owned bump", |b| b.iter(|| bump(&owned[0], black_box(1))));
    g.bench_function("try_get+drop + 2 owned bumps", |b| {
        b.iter(|| {
            let c = pool.try_get().unwrap();
            bump(&owned[0], 1);
            black_box(&*c);
            drop(c);
            bump(&owned[1], black_box(0));
        })
    });

    for stripes in [1, 8] {
        let h = Histogram::with_stripes(stripes);
        for i in 0..10_000u64 {
            h.record_in(i as usize, i * 997);
        }
        g.bench_function(format!("snapshot, {stripes} stripes"), |b| {
            b.iter(|| black_box(h.snapshot().p99()))
        });
    }
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
