//! Hazard slots: a releasing thread's announcement that it still reads a
//! pool's shared core, so that whoever drops the core's last reference
//! waits for it instead of freeing the core under it.
//!
//! # Why
//!
//! A healthy release publishes its connection (into the idle set, or to a
//! waiter) and then re-reads the core (`closed`, the waiter count, the
//! cap) to close the lost-wake-up race. Once published, the connection and
//! the counted reference on the core that it carries may be closed by
//! anyone: a concurrent drop of the last `Pool` can free the core between
//! the publish and the re-check (the loom models
//! `release_races_last_pool_drop` and
//! `release_to_a_waiter_races_last_pool_drop`). A counted reference of the
//! releaser's own covers the window but costs two atomic read-modify-writes
//! on a count every clone and connection shares, per release. A hazard
//! slot costs two plain stores to a cache line only this thread writes
//! (BENCHMARKS.md, "Design decisions", has what that saves an uncontended
//! `try_get`+drop).
//!
//! # Protocol
//!
//! - Each thread's slot is the one indexed by its thread id (`tid.rs`),
//!   claimed the first time it needs one (one CAS, once per thread) and
//!   given back when it exits. There are `HAZARD_SLOTS` (`sync.rs`).
//! - **Releaser**: `Drop for Pooled` opens its window ([`protect`], through
//!   `lifetime::CorePtr::cover`), which stores the core's address
//!   (Release), at the start of the release, while its connection still
//!   keeps the core alive, so *before* publishing the connection. The
//!   publication is a Release (the slot word's store in `make_idle` or
//!   `park`, or the CAS that hands a waiter its grant), and every later
//!   owner of the connection acquires it, so the store happens-before
//!   anything they do: closing the connection, dropping its reference on
//!   the core, and so the final drop (the `Arc`'s decrements form one
//!   release sequence ending in an Acquire fence). Dropping the [`Window`]
//!   (`lifetime::Cover::end`) stores null (Release) after the releaser's
//!   last access, in the same frame, which holds no reference to the core.
//! - **Last owner**: `Drop for Owner` (`lifetime.rs`) calls
//!   [`wait_until_unnamed`] before it makes any `&mut` to the core, which
//!   waits (Acquire loads; spinning, then yielding) until no slot names the
//!   core. It therefore reads the releaser's address or a later value, and
//!   if it reads null, the releaser's accesses happen-before the free.
//!
//! # Invariants kept
//!
//! - A slot names a core only inside a window of its owner thread, and the
//!   core is alive when the window opens (the caller still owns a
//!   connection of it).
//! - A thread has at most one window open: a release nested in another's
//!   window (a connection's `Drop` that drops a `Pooled`) gets `None` and
//!   takes a counted reference instead, as does a thread that found no free
//!   slot or whose thread-locals are being destroyed.
//! - A core named by any slot is not freed (the last owner waits). A
//!   thread that would wait for its own window (a release whose re-checks
//!   drop the core's last reference, which the release path never does)
//!   aborts rather than hang or free memory in use.
//! - A forked child forgets the windows (and thread ids) of the parent's
//!   other threads, which it does not have ([`survive_fork`]), so its last
//!   pool drop does not wait for them forever.
//!
//! Nothing on this path allocates: the registry is a static array.

use crate::sync::{self, AtomicUsize, HAZARD_SLOTS, Ordering};
use crate::tid;

/// One thread's announcement: the address of the core it is reading, or 0.
struct Hazard {
    names: AtomicUsize,
}

sync::global_array! {
    /// The slots, one per thread id (`tid.rs`), each on its own cache line
    /// (only its thread writes it). A plain `static` (no lazy-init check):
    /// `protect` indexes it on every release.
    static REGISTRY: [Hazard; HAZARD_SLOTS] = Hazard {
        names: AtomicUsize::new(0),
    };
}

/// The slot of thread id `id`, as a `'static` reference.
fn registry_slot(id: usize) -> Option<&'static Hazard> {
    let h: &Hazard = REGISTRY.get(id)?;
    // SAFETY: `h` is an element of `REGISTRY`, a `static` that is never
    // dropped, so it lives as long as the program. (Under loom the
    // registry lives for one execution of a model, which outlives every
    // thread of that execution and so every window.)
    Some(unsafe { &*std::ptr::from_ref::<Hazard>(h) })
}

/// An open window: this thread's slot names a core until it is dropped.
#[must_use = "the window closes when dropped"]
pub(crate) struct Window {
    hazard: &'static Hazard,
}

impl Drop for Window {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: every access the window covered happens-before a
        // `wait_until_unnamed` that reads this 0.
        self.hazard.names.store(0, Ordering::Release);
    }
}

/// Opens a window naming `core`, which the caller must still keep alive
/// (it owns one of its connections) and must not yet have published.
/// `None`: no slot (nested window, registry full, thread exiting); the
/// caller then holds a counted reference instead.
#[inline(always)]
pub(crate) fn protect(core: *const ()) -> Option<Window> {
    let hazard = registry_slot(tid::id()?)?;
    if hazard.names.load(Ordering::Relaxed) != 0 {
        return None;
    }
    // Release (a plain store on x86-64): ordered before the publication,
    // which is itself a Release (module docs); stated on the store itself
    // so that no argument rests on the later one.
    hazard.names.store(core.addr(), Ordering::Release);
    Some(Window { hazard })
}

/// Waits until no thread's window names `core` (called by the core's
/// `Drop`, before any of its fields is dropped).
///
/// A window of the calling thread itself naming `core` cannot close while
/// this thread waits; it would take a release whose own re-checks drop the
/// core's last reference, which the release path never does (it returns
/// the references it drops to its caller, settled after the window). The
/// process aborts there rather than hang or free memory in use.
pub(crate) fn wait_until_unnamed(core: *const ()) {
    // loom mutant: drop_ignores_hazards, see loom-tests/run-mutants.sh
    if sync::mutant("drop_ignores_hazards") {
        return;
    }
    let core = core.addr();
    let own = tid::held_id().and_then(registry_slot);
    for hazard in REGISTRY.iter() {
        let hazard: &Hazard = hazard;
        let mut spins = 0u32;
        while hazard.names.load(Ordering::Acquire) == core {
            if own.is_some_and(|mine| std::ptr::eq(mine, hazard)) {
                eprintln!("latchless: a pool's core was dropped inside its own release");
                std::process::abort();
            }
            spins = spins.saturating_add(1);
            if spins < 64 {
                sync::spin_loop();
            } else {
                sync::yield_now();
            }
        }
    }
}

/// Makes a forked child safe to drop the pools it inherited: from now on,
/// the child of every `fork()` forgets the windows (and thread ids) of the
/// parent's other threads, which the child does not have. Without that, a
/// fork taken while another thread was inside a release's window would
/// leave the child's last pool drop waiting for that window forever.
/// Called when a pool is built; registers once per process.
pub(crate) fn survive_fork() {
    sync::on_fork_in_child(forget_other_threads);
}

/// The child side of `fork()`: only the forking thread exists, so every
/// window but its own is one that will never close.
extern "C" fn forget_other_threads() {
    let own = tid::held_id();
    for (id, hazard) in REGISTRY.iter().enumerate() {
        if Some(id) != own {
            hazard.names.store(0, Ordering::Relaxed);
        }
    }
    tid::forget_other_threads(own);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool as StdBool;

    fn core_address(v: &u64) -> *const () {
        std::ptr::from_ref(v).cast()
    }

    fn slot_of_this_thread() -> Option<usize> {
        tid::held_id()
    }

    #[test]
    fn a_window_names_its_core_until_dropped_and_does_not_nest() {
        let core = 7u64;
        let window = protect(core_address(&core)).expect("a fresh thread gets a slot");
        let hazard = window.hazard;
        assert_eq!(
            hazard.names.load(Ordering::Relaxed),
            core_address(&core).addr()
        );
        assert!(
            protect(core_address(&core)).is_none(),
            "a nested release must take a counted reference"
        );
        drop(window);
        assert_eq!(hazard.names.load(Ordering::Relaxed), 0);
        assert!(
            protect(core_address(&core)).is_some(),
            "reusable once closed"
        );
    }

    #[test]
    fn threads_hold_distinct_slots() {
        let core = 1u64;
        drop(protect(core_address(&core)));
        let mine = slot_of_this_thread();
        let theirs = std::thread::spawn(|| {
            let core = 2u64;
            drop(protect(core_address(&core)));
            slot_of_this_thread()
        })
        .join()
        .unwrap();
        assert!(mine.is_some() && theirs.is_some());
        assert_ne!(mine, theirs, "two live threads never share a slot");
    }

    /// A child forked while another thread holds a window open does not
    /// wait for it (the child has no such thread): its last pool drop
    /// returns. Without the fork hook the child hung.
    #[cfg(all(unix, not(miri)))]
    #[test]
    fn a_forked_child_does_not_wait_for_the_parents_other_threads() {
        survive_fork();
        let core = 9u64;
        let address = core_address(&core).addr();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let window = protect(std::ptr::without_provenance(address)).unwrap();
            opened_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            drop(window);
        });
        opened_rx.recv().unwrap();
        let returned = crate::test_support::in_child(std::time::Duration::from_secs(10), || {
            wait_until_unnamed(std::ptr::without_provenance(address));
            true
        });
        go_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(
            returned,
            "the child waited for a window of a thread it does not have"
        );
    }

    #[test]
    fn the_last_owner_waits_for_an_open_window_on_another_thread() {
        let core = Arc::new(3u64);
        let address = core_address(&core).addr();
        let done = Arc::new(StdBool::new(false));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let window = protect(std::ptr::without_provenance(address)).unwrap();
                opened_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                // The releaser's last access, which the waiter must see.
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                drop(window);
            })
        };
        opened_rx.recv().unwrap();
        go_tx.send(()).unwrap();
        wait_until_unnamed(std::ptr::without_provenance(address));
        assert!(
            done.load(std::sync::atomic::Ordering::Relaxed),
            "wait_until_unnamed returned while the window was open"
        );
        t.join().unwrap();
    }
}
