//! A counting global allocator for the tests that prove a path allocates
//! nothing (`alloc.rs`, `histogram_alloc.rs`). Declaring `mod counting;`
//! installs it as the test binary's allocator, so only those binaries
//! include this module.
//!
//! It counts only the allocations of a thread inside [`counted`]: the test
//! harness's main thread allocates now and then while a test runs, which
//! made process-wide counts fail on a loaded machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Forwards to the system allocator, counting `alloc` and `realloc` calls
/// made by a counting thread.
pub struct Counting;

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

/// The allocations `f` makes on the calling thread.
pub fn counted(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(SeqCst)
}
