//! Support for the unit tests only (compiled under `cfg(test)`): running
//! a check in a forked child process, where what it changes (a seccomp
//! filter, process-wide state) stays.

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
