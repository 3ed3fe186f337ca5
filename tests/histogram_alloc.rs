//! Recording in a `Histogram` and refreshing a snapshot in place allocate
//! nothing, counted by a global allocator. (Its own test binary: the
//! counting allocator sees every thread of the process.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use latchless::{Histogram, HistogramSnapshot};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(SeqCst) {
            ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(SeqCst) {
            ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, SeqCst);
    COUNTING.store(true, SeqCst);
    f();
    COUNTING.store(false, SeqCst);
    ALLOCS.load(SeqCst)
}

#[test]
fn recording_and_snapshot_into_allocate_nothing() {
    let h = Histogram::with_stripes(4);
    let mut snap = HistogramSnapshot::default();
    let n = counted(|| {
        for i in 0..10_000u64 {
            h.record_in(i as usize, i * 7_919);
            h.record_in(i as usize, 0);
            h.record_duration(i as usize, Duration::from_micros(i));
        }
        h.snapshot_into(&mut snap);
        std::hint::black_box(snap.p99());
    });
    assert_eq!(n, 0, "{n} allocations");
    // The counter works (a snapshot allocates its buckets).
    assert!(counted(|| drop(std::hint::black_box(h.snapshot()))) > 0);
    assert_eq!(snap.count(), 30_000);
}
