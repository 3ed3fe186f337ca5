//! Recording in a `Histogram` and refreshing a snapshot in place allocate
//! nothing, counted by a global allocator on the thread that does them.
//! (Only that thread: the test harness's main thread allocates now and
//! then while a test runs, which failed this test on a loaded machine.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use latchless::{Histogram, HistogramSnapshot};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// Counts an allocation if this thread is counting.
fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, SeqCst);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(SeqCst)
}

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
