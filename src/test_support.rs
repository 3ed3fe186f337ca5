//! Support for the unit tests only (compiled under `cfg(test)`): running
//! a check in a forked child process, where what it changes (a seccomp
//! filter, process-wide state) stays; and counting the allocations a
//! thread makes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Runs `f` in a forked child and returns whether it returned `true` there;
/// a child that panics, or that is still running after `limit` (killed
/// then), counts as `false`. `f` runs on the child's only thread.
#[cfg(all(unix, not(miri)))]
pub(crate) fn in_child(limit: Duration, f: impl FnOnce() -> bool) -> bool {
    // SAFETY: `fork` in a multi-threaded process: the child runs only `f`
    // (which the tests keep to atomics, system calls and glibc's
    // fork-safe allocator) and then `_exit`s, never returning into the
    // test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = catch_unwind(AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: ends the child at once, running no destructor or handler
        // of the parent's.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if start.elapsed() > limit {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forwards to the system allocator, counting the `alloc` and `realloc`
/// calls of a thread inside [`allocations`] (the harness's other threads
/// allocate as they please).
struct Counting;

std::thread_local! {
    static COUNTED: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = COUNTED.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: forwards to the system allocator with the caller's arguments,
// only counting calls.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations `f` makes on the calling thread.
pub(crate) fn allocations(f: impl FnOnce()) -> usize {
    COUNTED.with(|c| c.set(Some(0)));
    f();
    COUNTED.with(|c| c.take()).unwrap_or(0)
}
