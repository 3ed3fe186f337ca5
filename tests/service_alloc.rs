//! `get_blocking` served from the idle set allocates nothing (issue 15),
//! counted by a global allocator on the calling thread only (as in
//! `tests/alloc.rs`: the harness's main thread allocates now and then).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use latchless::{Manager, Pool};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
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

struct Numbers;
impl Manager for Numbers {
    type Connection = Vec<u8>;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<Vec<u8>, std::io::Error> {
        Ok(vec![0; 64])
    }
}

#[test]
fn get_blocking_from_the_idle_set_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let pool = Pool::builder(Numbers)
            .max_size(2)
            .shards(1)
            .check_after_idle(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        pool
    });
    // No runtime at all any more: the idle set serves without one.
    drop(rt);
    // On a plain thread, as a service's worker would.
    let allocs = std::thread::spawn(move || {
        // Warm the thread's own registrations (thread-locals) first.
        drop(pool.get_blocking(Duration::from_secs(1)).unwrap());
        ALLOCS.store(0, SeqCst);
        COUNTING.with(|c| c.set(true));
        for _ in 0..1000 {
            let c = pool.get_blocking(Duration::from_secs(1)).unwrap();
            assert_eq!(c.len(), 64);
            drop(c);
        }
        COUNTING.with(|c| c.set(false));
        ALLOCS.load(SeqCst)
    })
    .join()
    .unwrap();
    assert_eq!(allocs, 0, "get_blocking + drop from the idle set allocated");
}
