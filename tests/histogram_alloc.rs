//! Recording in a `Histogram` and refreshing a snapshot in place allocate
//! nothing, counted by a global allocator on the thread that does them
//! (`counting/`).

mod counting;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use counting::counted;
use latchless::{Histogram, HistogramSnapshot};

#[test]
fn recording_and_snapshot_into_allocate_nothing() {
    let h = Histogram::with_stripes(4);
    let mut snap = HistogramSnapshot::default();
    // Another thread allocating all along, as the harness's may: not
    // counted.
    let (stop, running) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let noise = {
        let (stop, running) = (Arc::clone(&stop), Arc::clone(&running));
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                drop(std::hint::black_box(vec![0u8; 64]));
                running.store(true, SeqCst);
            }
        })
    };
    while !running.load(SeqCst) {
        std::thread::yield_now();
    }
    let n = counted(|| {
        for i in 0..10_000u64 {
            h.record_in(i as usize, i * 7_919);
            h.record_in(i as usize, 0);
            h.record_duration(i as usize, Duration::from_micros(i));
        }
        h.snapshot_into(&mut snap);
        std::hint::black_box(snap.p99());
    });
    stop.store(true, SeqCst);
    noise.join().unwrap();
    assert_eq!(n, 0, "{n} allocations");
    // The counter works (a snapshot allocates its buckets).
    assert!(counted(|| drop(std::hint::black_box(h.snapshot()))) > 0);
    assert_eq!(snap.count(), 30_000);
}
