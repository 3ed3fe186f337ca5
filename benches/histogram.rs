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
//! - `snapshot`: the cold-path read, 1 and 8 stripes.
//!
//! `cargo bench --bench histogram`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
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
    let mut v = 1_000u64;
    g.bench_function("record v", |b| {
        b.iter(|| {
            // Varying values, so that the bucket moves as in real use.
            v = (v * 2_862_933_555_777_941_757 + 3_037_000_493) % 50_000_000;
            h.record_in(black_box(3), v);
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
