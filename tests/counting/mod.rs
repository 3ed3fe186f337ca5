//! A counting global allocator for the tests that prove a path allocates
//! nothing (`alloc.rs`). Declaring `mod counting;`
//! installs it as the test binary's allocator, so only those binaries
//! include this module.
//!
//! It counts only the allocations of a thread inside [`counted`], in that
//! thread's own count: the test harness's main thread allocates now and
//! then while a test runs, and the tests of one binary run side by side,
//! each with its own counted sections (a shared count would add one
//! test's allocations to another's, and each section's reset would erase
//! another's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator, counting `alloc` and `realloc` calls
/// made by a counting thread.
pub struct Counting;

std::thread_local! {
    /// This thread's allocations so far, while it is counting.
    static COUNTED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Counts an allocation if this thread is counting.
fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = COUNTED.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
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
    COUNTED.with(|c| c.set(Some(0)));
    f();
    COUNTED.with(Cell::take).unwrap_or(0)
}
