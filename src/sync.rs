//! The one switch between the real synchronisation primitives and their
//! model-checked stand-ins, and the one home of the test hooks that the
//! shipped modules carry.
//!
//! Every atomic, cell, queue, waker and thread-local that the pool's
//! concurrency protocol touches, and every timer on a path a model runs
//! (the background task's run only on Tokio), is imported from here and
//! from nowhere else, so that the loom build (`--cfg latchless_loom`, see
//! `loom-tests/`) checks the production code path itself rather than a
//! copy of it. (Counters that order nothing stay plain std atomics in
//! every build.)
//!
//! Invariants kept:
//! - The two branches export the same names with the same signatures.
//! - No other shipped module mentions `cfg(latchless_loom)`: besides this
//!   file, only `lib.rs` does, to compile `loom_support.rs` (the hooks a
//!   model calls in place of the background task) into the loom build
//!   alone.
//! - The protocol's sizes are constants here (`HAZARD_SLOTS`,
//!   `RECLAIM_SLACK`, `HAZARD_RELEASE_AT_EXIT`, `SERVE_LOOKS`), the same
//!   in unit tests as in the product; only the loom build sets its own,
//!   small enough for a model's few threads to reach them.
//!
//! Under loom, crossbeam's queues are replaced by small stand-ins over a
//! loom `Mutex<VecDeque>`: loom cannot see inside crossbeam-queue (its
//! atomics are `core`'s), and the stand-ins give it a scheduling point at
//! every queue operation. They are SeqCst-strong, so the models check the
//! pool's own protocol around the queues (orderings of the slot word, the
//! waiter count, the re-checks), not the queues' internals. Loom models
//! no `membarrier` (it cannot inject a barrier into another thread), so
//! models run the asymmetric fence's fallback mode (`asym.rs`), and time
//! never passes in a model: a waiter's own timer never fires, and the
//! models sweep deadlines by hand.
//!
//! Mutants (`--cfg latchless_mutants`, `loom-tests/run-mutants.sh`): a few
//! deliberately injected bugs, each behind [`mutant`]`("name")` (or
//! [`weakened`], for a dropped ordering), which is a constant `false` in
//! every other build. The one named by the environment variable
//! `LATCHLESS_MUTANT` is switched on, so one build serves every mutant
//! run. For miri and AddressSanitizer, [`after_publish`] opens the
//! release's re-check window wide, so that a core-lifetime race is hit on
//! every run rather than by chance.

pub(crate) use imp::*;

/// A thread-local `Cell` with a constant initialiser: std's `const`
/// thread-local (no lazy-init check on access) or loom's.
#[cfg(not(latchless_loom))]
macro_rules! thread_local_cell {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
    };
}

/// A thread-local `Cell` with a constant initialiser (loom's).
#[cfg(latchless_loom)]
macro_rules! thread_local_cell {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}

pub(crate) use thread_local_cell;

/// A global array of `$n` cache-padded `$t`, each `$init`: a plain
/// `static`, constant-initialised (no lazy-init check on access, so the hot
/// path may index it), or loom's `lazy_static`, afresh in every execution.
/// `$init` must be a constant expression in the std build.
#[cfg(not(latchless_loom))]
macro_rules! global_array {
    ($(#[$attr:meta])* static $name:ident: [$t:ty; $n:expr] = $init:expr;) => {
        $(#[$attr])*
        static $name: [crossbeam_utils::CachePadded<$t>; $n] =
            [const { crossbeam_utils::CachePadded::new($init) }; $n];
    };
}

/// A global array of cache-padded values (loom's `lazy_static`).
#[cfg(latchless_loom)]
macro_rules! global_array {
    ($(#[$attr:meta])* static $name:ident: [$t:ty; $n:expr] = $init:expr;) => {
        loom::lazy_static! {
            $(#[$attr])*
            static ref $name: Box<[crossbeam_utils::CachePadded<$t>]> =
                (0..$n).map(|_| crossbeam_utils::CachePadded::new($init)).collect();
        }
    };
}

pub(crate) use global_array;

/// Whether the named injected bug is on (only in `latchless_mutants`
/// builds, for `loom-tests/run-mutants.sh`).
#[cfg(not(latchless_mutants))]
#[inline(always)]
pub(crate) const fn mutant(_name: &str) -> bool {
    false
}

/// Whether the named injected bug is on (only in `latchless_mutants`
/// builds, for `loom-tests/run-mutants.sh`).
#[cfg(latchless_mutants)]
pub(crate) fn mutant(name: &str) -> bool {
    std::env::var("LATCHLESS_MUTANT").is_ok_and(|m| m == name)
}

/// `order`, or `Relaxed` while the named mutant is on: the one way an
/// injected bug drops an ordering.
#[inline(always)]
pub(crate) fn weakened(name: &str, order: Ordering) -> Ordering {
    if mutant(name) {
        Ordering::Relaxed
    } else {
        order
    }
}

/// Whether this build runs under loom: a model replays each path many
/// times, so whatever differs between threads from run to run (a
/// thread's home, from a process-wide counter) is fixed in a model.
pub(crate) const IN_MODEL: bool = cfg!(latchless_loom);

/// The light side of the asymmetric fence (`asym.rs`): a compiler fence
/// only (loom does not model it). It keeps the compiler from moving the
/// parking store below the re-check's loads; the processor's reordering is
/// undone, when it matters, by `heavy_barrier` on the other side.
#[inline(always)]
pub(crate) fn light_barrier() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Marks a SeqCst load that follows a SeqCst read-modify-write (the
/// releaser's re-check after its put-back, see `release.rs`). In the C++20
/// memory model (Rust's), the pair already orders the load after the RMW in
/// the single total order S, which the lost-wake-up argument needs. Loom
/// models SeqCst loads as Acquire (a documented limitation) and so cannot
/// see that; under loom this is a SeqCst fence, which loom models exactly and
/// which gives the same order in S. Elsewhere it compiles to nothing.
#[inline(always)]
pub(crate) fn sc_load_after_rmw() {
    #[cfg(latchless_loom)]
    fence(Ordering::SeqCst);
}

/// A scheduling point right after a releaser publishes its connection,
/// for miri and AddressSanitizer only (`.ci/run`): miri's scheduler then
/// runs the other threads of a core-lifetime scenario inside the release's
/// re-check window every time, instead of by chance; a `latchless_mutants`
/// build run with `LATCHLESS_WIDEN` set sleeps there (see `widen`).
/// Elsewhere it compiles to nothing (loom has its own scheduling points).
#[inline(always)]
pub(crate) fn after_publish() {
    #[cfg(miri)]
    std::thread::yield_now();
    #[cfg(all(latchless_mutants, not(latchless_loom), not(miri)))]
    widen();
}

/// Holds the release's re-check window open for a millisecond when the
/// environment variable `LATCHLESS_WIDEN` is set (`latchless_mutants`
/// builds only). A pool dropped by another thread meanwhile then frees its
/// core inside the window whenever a core-lifetime mutant lets it, so the
/// ASan step catches each mutant on its first run instead of by a
/// nanosecond-wide chance (a CI run once missed one in ten tries), and the
/// unmutated code is shown to survive the same widened window.
#[cfg(all(latchless_mutants, not(latchless_loom), not(miri)))]
#[cold]
#[inline(never)]
fn widen() {
    if std::env::var_os("LATCHLESS_WIDEN").is_some() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Bounds `fut` by `deadline` (tokio's timer). Under loom, which cannot
/// run tokio, time never passes: the future just runs to completion.
#[cfg(not(latchless_loom))]
pub(crate) async fn timeout_at<F: std::future::Future>(
    deadline: tokio::time::Instant,
    fut: F,
) -> Result<F::Output, ()> {
    tokio::time::timeout_at(deadline, fut).await.map_err(drop)
}

/// Bounds `fut` by `deadline`; under loom time never passes.
#[cfg(latchless_loom)]
pub(crate) async fn timeout_at<F: std::future::Future>(
    _deadline: tokio::time::Instant,
    fut: F,
) -> Result<F::Output, ()> {
    Ok(fut.await)
}

/// Runs `fut` until `at` (forever if `None`); `None` if it timed out.
/// The one bound on a check or a connect by a caller's deadline.
pub(crate) async fn bounded<F: std::future::Future>(
    at: Option<tokio::time::Instant>,
    fut: F,
) -> Option<F::Output> {
    match at {
        Some(at) => timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// A waiter's own timer (tokio's).
#[cfg(not(latchless_loom))]
pub(crate) type Sleep = tokio::time::Sleep;

/// A waiter's own timer until `at`.
#[cfg(not(latchless_loom))]
pub(crate) fn sleep_until(at: tokio::time::Instant) -> Sleep {
    tokio::time::sleep_until(at)
}

/// Under loom time never passes: a waiter's own timer never fires.
#[cfg(latchless_loom)]
pub(crate) type Sleep = std::future::Pending<()>;

/// A timer that never fires (loom).
#[cfg(latchless_loom)]
pub(crate) fn sleep_until(_at: tokio::time::Instant) -> Sleep {
    std::future::pending()
}

/// Sleeps (tokio's timer); under loom, yields once instead.
#[cfg(not(latchless_loom))]
pub(crate) async fn sleep(d: std::time::Duration) {
    tokio::time::sleep(d).await;
}

/// Sleeps; under loom, returns at once.
#[cfg(latchless_loom)]
pub(crate) async fn sleep(_d: std::time::Duration) {}

#[cfg(not(latchless_loom))]
mod imp {
    pub(crate) use atomic_waker::AtomicWaker;
    pub(crate) use crossbeam_queue::ArrayQueue;
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
    };

    /// `std::cell::UnsafeCell` behind the closure-based interface of
    /// `loom::cell::UnsafeCell`, so call sites compile unchanged under loom
    /// (the sharded-slab convention).
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a unique raw pointer to the contents.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// A busy-wait hint (a scheduler yield under loom).
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop();
    }

    /// Gives the processor away while waiting for another thread.
    pub(crate) fn yield_now() {
        std::thread::yield_now();
    }

    /// Whether [`heavy_barrier`] works in this process (registers for it
    /// the first time; `asym.rs`).
    pub(crate) fn heavy_barrier_available() -> bool {
        membarrier::available()
    }

    /// The heavy side of the asymmetric fence: every thread of this
    /// process that is running executes a full memory barrier before this
    /// returns (Linux `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`).
    /// Only called after [`heavy_barrier_available`] said yes. `false`: the
    /// call was refused (a seccomp filter installed since, on this thread),
    /// no barrier ran, and from now on the process counts as without one.
    #[cold]
    #[must_use]
    pub(crate) fn heavy_barrier() -> bool {
        membarrier::barrier()
    }

    /// Linux's `membarrier(2)`, private expedited: an inter-processor
    /// interrupt to each CPU that runs one of this process's threads, whose
    /// handler is a full barrier; a thread not running passes one when it
    /// is scheduled. Registration is once per process, irreversible.
    #[cfg(all(target_os = "linux", not(miri)))]
    mod membarrier {
        use std::sync::atomic::{AtomicU8, Ordering};

        const QUERY: libc::c_int = 0;
        const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

        /// 0: not asked yet; 1: registered; 2: not available (an older
        /// kernel, or a seccomp filter that refuses the call).
        static STATE: AtomicU8 = AtomicU8::new(0);

        fn call(cmd: libc::c_int) -> libc::c_long {
            let (flags, cpu): (libc::c_uint, libc::c_int) = (0, 0);
            // SAFETY: membarrier(int cmd, unsigned int flags, int cpu_id)
            // reads and writes no memory of ours; the arguments have the
            // types the kernel expects.
            unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu) }
        }

        pub(super) fn available() -> bool {
            match STATE.load(Ordering::Acquire) {
                1 => true,
                2 => false,
                _ => {
                    // Two pools built at once may both register: the
                    // kernel takes a second registration as a no-op.
                    let both = libc::c_long::from(PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED);
                    let supported = call(QUERY);
                    let ok = supported >= 0
                        && supported & both == both
                        && call(REGISTER_PRIVATE_EXPEDITED) == 0;
                    STATE.store(if ok { 1 } else { 2 }, Ordering::Release);
                    ok
                }
            }
        }

        pub(super) fn barrier() -> bool {
            // Registered, it fails only where something refuses the call
            // since: a seccomp filter installed after start-up, per
            // thread, as sandboxed services do.
            if call(PRIVATE_EXPEDITED) == 0 {
                return true;
            }
            STATE.store(2, Ordering::Release);
            false
        }
    }

    /// No heavy barrier here (not Linux, or miri): releasers always fence.
    #[cfg(not(all(target_os = "linux", not(miri))))]
    mod membarrier {
        pub(super) fn available() -> bool {
            false
        }
        pub(super) fn barrier() -> bool {
            false
        }
    }

    /// Runs `child` in the child process after every `fork()` from now on
    /// (`pthread_atfork`), once per process however often it is called.
    /// `child` runs on the forking thread, the only thread the child has,
    /// before `fork` returns there. Not under miri, which has no
    /// `pthread_atfork`, nor outside Unix.
    pub(crate) fn on_fork_in_child(child: extern "C" fn()) {
        #[cfg(all(unix, not(miri)))]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                // SAFETY: registers a handler that takes no arguments and
                // touches only this crate's statics and the forking
                // thread's own thread-locals; no prepare or parent hook.
                unsafe { libc::pthread_atfork(None, None, Some(child)) };
            });
        }
        #[cfg(not(all(unix, not(miri))))]
        let _ = child;
    }

    /// Registers this thread's `exit` thread-local (touches it), so that
    /// its destructor runs when the thread exits; false if the thread's
    /// thread-locals are being destroyed (`tid.rs`).
    pub(crate) fn at_thread_exit<T: 'static>(exit: &'static std::thread::LocalKey<T>) -> bool {
        exit.try_with(|_| ()).is_ok()
    }

    /// Threads that can hold a hazard slot at once (see `hazard.rs`); more
    /// fall back to counted references.
    pub(crate) const HAZARD_SLOTS: usize = 256;

    /// Whether a thread gives its hazard slot back when it exits.
    pub(crate) const HAZARD_RELEASE_AT_EXIT: bool = true;

    /// Dead waiter nodes tolerated beyond the live ones before a
    /// registration compacts the line (see `waiters.rs`).
    pub(crate) const RECLAIM_SLACK: usize = 64;

    /// How many more looks, a spin-loop pause apart, a releaser that finds
    /// the waiter line held takes before it deposits its grant (see
    /// `waiters.rs`, "Serve"): a holder lets go within a few cache misses
    /// unless it was descheduled.
    pub(crate) const SERVE_LOOKS: u32 = 64;

    /// The CPUs this process may run on (1 if unknown), asked once: the
    /// question reads files (cgroup quotas), and a keyed pool builds a
    /// pool (its default `shards` and its waiter queue's looks) on a key's
    /// first request.
    pub(crate) fn cpus() -> usize {
        static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[cfg(latchless_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
    };

    use std::collections::VecDeque;
    use std::task::Waker;

    /// `loom::future::AtomicWaker` under the names the pool uses.
    #[derive(Debug)]
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            Self(loom::future::AtomicWaker::new())
        }
        pub(crate) fn register(&self, waker: &Waker) {
            self.0.register_by_ref(waker);
        }
        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }

    /// Stand-in for `crossbeam_queue::ArrayQueue` (see the module docs).
    #[derive(Debug)]
    pub(crate) struct ArrayQueue<T> {
        cap: usize,
        q: loom::sync::Mutex<VecDeque<T>>,
    }

    impl<T> ArrayQueue<T> {
        pub(crate) fn new(cap: usize) -> Self {
            Self {
                cap,
                q: loom::sync::Mutex::new(VecDeque::new()),
            }
        }
        fn lock(&self) -> loom::sync::MutexGuard<'_, VecDeque<T>> {
            self.q.lock().unwrap_or_else(|e| e.into_inner())
        }
        pub(crate) fn push(&self, v: T) -> Result<(), T> {
            let mut q = self.lock();
            if q.len() == self.cap {
                return Err(v);
            }
            q.push_back(v);
            Ok(())
        }
        pub(crate) fn force_push(&self, v: T) -> Option<T> {
            let mut q = self.lock();
            let out = if q.len() == self.cap {
                q.pop_front()
            } else {
                None
            };
            q.push_back(v);
            out
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.lock().pop_front()
        }
        /// Never true: a look that `pop` then repeats. The real queue's
        /// answer is a hint too (two loads, no fence); the stand-in keeps
        /// a model's operations what they were.
        pub(crate) fn is_empty(&self) -> bool {
            false
        }
        pub(crate) fn len(&self) -> usize {
            self.lock().len()
        }
    }

    /// A busy-wait hint: a scheduler yield under loom.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    /// Gives the processor away while waiting for another thread.
    pub(crate) fn yield_now() {
        loom::thread::yield_now();
    }

    /// No membarrier in a model: loom cannot inject a barrier into another
    /// thread, as `membarrier` does, so models run the fallback mode
    /// (`ALWAYS`: releasers run a SeqCst fence after the light side,
    /// `asym.rs`).
    pub(crate) fn heavy_barrier_available() -> bool {
        false
    }

    /// Never called in a model (the mode is `ALWAYS`); a SeqCst fence.
    pub(crate) fn heavy_barrier() -> bool {
        fence(Ordering::SeqCst);
        true
    }

    /// Models never fork.
    pub(crate) fn on_fork_in_child(_child: extern "C" fn()) {}

    /// A model's threads keep their ids (`HAZARD_RELEASE_AT_EXIT`): no
    /// exit hook to register.
    pub(crate) fn at_thread_exit<T: 'static>(_exit: &'static std::thread::LocalKey<T>) -> bool {
        true
    }

    /// Hazard slots in a model: enough for its threads.
    pub(crate) const HAZARD_SLOTS: usize = 3;

    /// Loom drops its globals before the main thread's thread-locals, so a
    /// model's threads keep their slots (a model has no more threads than
    /// slots, and every execution starts with a fresh registry).
    pub(crate) const HAZARD_RELEASE_AT_EXIT: bool = false;

    /// No slack in a model: one dead node more than the live ones starts a
    /// compaction (see `waiters.rs`), so a few threads reach it.
    pub(crate) const RECLAIM_SLACK: usize = 0;

    /// One more look in a model (a look that finds the line held changes
    /// nothing, so more would only be one look at the time of the last):
    /// a model reaches both a second look that finds the line free and a
    /// deposit after it.
    pub(crate) const SERVE_LOOKS: u32 = 1;

    /// A model's threads run side by side, whatever the machine (and a
    /// model's default `shards` is the same on every machine).
    pub(crate) fn cpus() -> usize {
        2
    }
}
