//! The thread registry: one thread-local per thread behind everything the
//! pool keeps per thread, in the spirit of sharded-slab's `tid.rs`, so
//! that a release touches one thread-local, not one per concern.
//!
//! - **Thread ids.** A thread that needs one claims the lowest free id of
//!   [`THREAD_IDS`] (one CAS, once per thread) and gives it back when it
//!   exits, so ids stay small and dense: the hazard slots (`hazard.rs`)
//!   are indexed by them. A thread that finds none free has no id (the
//!   hazard code then takes counted references).
//! - **Home.** A per-thread hash, spread by Fibonacci hashing, that picks
//!   the thread's home shard and histogram stripe ([`home_index`]).
//! - **Ops.** Releases on this thread ([`every_64th_op`]): every 64th, a
//!   busy thread reads the real clock and looks whether maintenance is
//!   due.
//! - **Parked.** The thread's cache of one parked connection: a pool id
//!   and a packed key, with a count of releases it turned away
//!   ([`parked`]). What goes in and out of it, and when a cached key is
//!   taken for stale, is the idle set's (`idle.rs`); this module only
//!   stores it. Private: no other thread reads it, so it is a hint, never
//!   the truth (the slot's state word is).
//!
//! # Invariants kept
//!
//! - An id is held by at most one live thread: claimed by a CAS
//!   `false -> true` (Acquire), given back at exit by a Release store, so
//!   the next holder starts after the last use by the previous one. A
//!   forked child gives back every id but the forking thread's
//!   ([`forget_other_threads`]).
//! - `Local` has no destructor, so it is never gone, and each access is a
//!   plain load or store at a fixed offset from the thread pointer, with
//!   no check whether it was registered or destroyed: a release run from
//!   another thread-local's destructor still reads it. Giving the id back
//!   is `Exit`'s destructor (a second thread-local, touched once, when the
//!   id is claimed), which also marks the thread as having none, so such a
//!   late release takes a counted reference, not a hazard slot that may
//!   already be another thread's. (Accesses go through `try_with`, as
//!   loom's thread-locals need, never `with`.)
//!
//! This module imports only `sync.rs`.

use std::cell::Cell;

use crate::sync::{self, AtomicBool, HAZARD_RELEASE_AT_EXIT, HAZARD_SLOTS, Ordering};

/// Thread ids handed out at once; more threads have none.
pub(crate) const THREAD_IDS: usize = HAZARD_SLOTS;

sync::global_array! {
    /// Which ids are held, each flag on its own cache line.
    static IDS: [AtomicBool; THREAD_IDS] = AtomicBool::new(false);
}

/// What a thread knows of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    /// None claimed yet.
    Unclaimed,
    /// Every id was taken when this thread looked, or the thread is
    /// exiting (its id was given back, or it can no longer register the
    /// destructor that would give one back).
    NoneFree,
    /// This thread's id.
    Held(usize),
}

/// Everything the pool keeps per thread: plain cells and no destructor,
/// so that std's `const` thread-local compiles each access to an access
/// at a fixed offset from the thread pointer, with no check whether the
/// thread-local was registered or destroyed. (With a destructor, each of
/// the four accesses of a `try_get`+drop cycle carried that check.) The
/// one thing that needs a destructor, giving the id back, is [`Exit`]'s.
struct Local {
    id: Cell<Id>,
    /// Home hash; 0 until first use.
    home: Cell<u32>,
    /// Releases on this thread.
    ops: Cell<u32>,
    parked: Parked,
}

/// A thread's cache of one parked connection (`idle.rs` decides what goes
/// in and out).
#[derive(Debug)]
pub(crate) struct Parked {
    /// The pool id (never 0) and the packed key of the connection this
    /// thread parked there; key 0: none.
    pub(crate) entry: Cell<(u64, u64)>,
    /// Releases into other pools the cached key turned away since it was
    /// cached.
    pub(crate) refused: Cell<u32>,
}

impl Local {
    const fn new() -> Self {
        Self {
            id: Cell::new(Id::Unclaimed),
            home: Cell::new(0),
            ops: Cell::new(0),
            parked: Parked {
                entry: Cell::new((0, 0)),
                refused: Cell::new(0),
            },
        }
    }

    #[cold]
    fn claim(&self) -> Id {
        // The destructor that gives the id back is registered first: a
        // thread that can no longer register it (its thread-locals are
        // being destroyed) takes no id.
        if !Exit::arm() {
            self.id.set(Id::NoneFree);
            return Id::NoneFree;
        }
        let found = IDS.iter().position(|t| {
            !t.load(Ordering::Relaxed)
                && t.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        });
        let id = found.map_or(Id::NoneFree, Id::Held);
        self.id.set(id);
        id
    }

    #[cold]
    fn first_home(&self) -> u32 {
        let n = NEXT_THREAD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u32;
        // Golden-ratio spread of consecutive thread numbers over u32; `| 1`
        // keeps it away from the 0 sentinel.
        let v = n.wrapping_mul(0x9E37_79B9) | 1;
        self.home.set(v);
        v
    }
}

/// Gives this thread's id back when the thread exits: a thread-local of
/// its own, registered (touched) once, when the id is claimed, so that
/// [`Local`] needs no destructor.
struct Exit;

impl Exit {
    /// Registers this thread's `Exit`; false if the thread's thread-locals
    /// are being destroyed (or, under loom, never: a model's threads keep
    /// their ids, `HAZARD_RELEASE_AT_EXIT`).
    fn arm() -> bool {
        sync::at_thread_exit(&EXIT)
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        if !HAZARD_RELEASE_AT_EXIT {
            return;
        }
        // From now on this thread has no id: a release run by a later
        // thread-local destructor takes a counted reference instead of a
        // hazard slot (`Local` itself is never destroyed).
        let _ = LOCAL.try_with(|l| {
            if let Id::Held(i) = l.id.replace(Id::NoneFree) {
                // Release: the next holder starts after this thread's last
                // use of the id (its hazard window closed).
                IDS[i].store(false, Ordering::Release);
            }
        });
    }
}

std::thread_local! {
    static EXIT: Exit = const { Exit };
}

sync::thread_local_cell! {
    static LOCAL: Local = Local::new();
}

/// Hands out distinct thread numbers for home hashes. A std atomic even
/// under loom (a `static` needs a `const` constructor, and which shard a
/// thread calls home is no part of the protocol).
static NEXT_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// This thread's id, claimed on first use; `None` if every id is taken or
/// the thread's registry entry is gone (it is exiting).
#[inline(always)]
pub(crate) fn id() -> Option<usize> {
    LOCAL
        .try_with(|l| {
            let id = match l.id.get() {
                Id::Unclaimed => l.claim(),
                id => id,
            };
            match id {
                Id::Held(i) => Some(i),
                Id::Unclaimed | Id::NoneFree => None,
            }
        })
        .ok()
        .flatten()
}

/// This thread's id if it already holds one (claims nothing).
pub(crate) fn held_id() -> Option<usize> {
    LOCAL
        .try_with(|l| match l.id.get() {
            Id::Held(i) => Some(i),
            Id::Unclaimed | Id::NoneFree => None,
        })
        .ok()
        .flatten()
}

/// In a forked child, gives back every id but `own` (the forking
/// thread's): their threads do not exist in the child.
pub(crate) fn forget_other_threads(own: Option<usize>) {
    for (id, held) in IDS.iter().enumerate() {
        if Some(id) != own {
            held.store(false, Ordering::Relaxed);
        }
    }
}

/// This thread's home among `n` places (shards, histogram stripes): its hash
/// scaled to `0..n` with one multiply (Lemire's "fastrange").
#[inline(always)]
pub(crate) fn home_index(n: usize) -> usize {
    let hash = LOCAL
        .try_with(|l| match l.home.get() {
            0 => l.first_home(),
            v => v,
        })
        .unwrap_or(0);
    ((u64::from(hash) * n as u64) >> 32) as usize
}

/// Makes `shard` of `n` this thread's home (a loom model needs the same
/// home in every execution: `Pool::loom_pin_home_shard`).
#[allow(dead_code)] // the loom hooks' only caller (`loom_support.rs`)
pub(crate) fn pin_home(shard: usize, n: usize) {
    assert!(shard < n, "no shard {shard} of {n}");
    let v = ((((shard as u64) << 32) / n as u64) as u32 + 1) | 1;
    let _ = LOCAL.try_with(|l| l.home.set(v));
    debug_assert_eq!(home_index(n), shard);
}

/// Runs `f` on this thread's parked-connection cache; `None` while the
/// thread's thread-locals are being destroyed. One thread-local access.
#[inline(always)]
pub(crate) fn parked<R>(f: impl FnOnce(&Parked) -> R) -> Option<R> {
    LOCAL.try_with(|l| f(&l.parked)).ok()
}

/// True on every 64th call on this thread: when a busy thread reads the
/// real clock and looks whether maintenance is due. One thread-local
/// increment otherwise.
#[inline(always)]
pub(crate) fn every_64th_op() -> bool {
    LOCAL
        .try_with(|l| {
            let n = l.ops.get().wrapping_add(1);
            l.ops.set(n);
            n % 64 == 0
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked while another thread of the parent held an id and
    /// had a release's window open: in the child that thread does not
    /// exist, so its id is free again and a pool's last drop there does not
    /// wait for its window (`hazard::survive_fork`).
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_forked_child_gives_back_the_ids_and_windows_of_the_parents_other_threads() {
        use std::sync::mpsc;
        crate::hazard::survive_fork();
        static CORE: u64 = 7;
        let core: *const () = std::ptr::from_ref(&CORE).cast();
        let (held_tx, held) = mpsc::channel();
        let (done, done_rx) = mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let core: *const () = std::ptr::from_ref(&CORE).cast();
            let window = crate::hazard::protect(core).expect("a fresh thread gets a slot");
            held_tx.send(held_id().expect("an id")).unwrap();
            done_rx.recv().unwrap();
            drop(window);
        });
        let theirs = held.recv().unwrap();
        // SAFETY: the child only reads atomics, waits on them (bounded by
        // the alarm) and leaves with `_exit`: no allocation, no lock.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls in the child.
            unsafe { libc::alarm(10) };
            // Returns only if no slot names the core (else SIGALRM).
            crate::hazard::wait_until_unnamed(core);
            let code = i32::from(IDS[theirs].load(Ordering::Relaxed));
            // SAFETY: ends the child without running the parent's
            // destructors or the test harness.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(IDS[theirs].load(Ordering::Relaxed), "the parent's is held");
        done.send(()).unwrap();
        other.join().unwrap();
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status),
            "the child's wait for the other thread's window did not end: {status:#x}"
        );
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the other thread's id is still held in the child"
        );
    }

    #[test]
    fn threads_hold_distinct_ids_and_give_them_back() {
        let mine = id().expect("a fresh thread gets an id");
        assert_eq!(id(), Some(mine), "stable for the thread");
        assert!(IDS[mine].load(Ordering::Relaxed));
        let theirs = std::thread::spawn(|| id().unwrap()).join().unwrap();
        assert_ne!(mine, theirs, "two live threads never share an id");
        assert!(
            !IDS[theirs].load(Ordering::Relaxed),
            "given back when its thread exited"
        );
    }

    #[test]
    fn a_release_after_the_exit_destructor_never_uses_a_given_back_id() {
        use std::sync::mpsc;
        /// Stands for a thread-local holding a `Pooled`: its destructor
        /// runs a release, which asks for this thread's id.
        struct Late(mpsc::Sender<(Option<usize>, bool)>);
        impl Drop for Late {
            fn drop(&mut self) {
                let mine = id();
                let still_held = mine.is_some_and(|i| IDS[i].load(Ordering::Relaxed));
                let _ = self.0.send((mine, still_held));
            }
        }
        std::thread_local! {
            static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) };
        }
        let (tx, rx) = mpsc::channel();
        let held = std::thread::spawn(move || {
            // Registered before `Exit` (armed by the id claim below), so
            // on glibc, which runs thread-local destructors last-registered
            // first, `Late` runs after the id was given back.
            LATE.with(|l| *l.borrow_mut() = Some(Late(tx)));
            id().expect("a fresh thread gets an id")
        })
        .join()
        .unwrap();
        let (late, still_held) = rx.recv().unwrap();
        // std runs a thread's thread-local destructors last-registered
        // first, so the late release came after `Exit`'s: it must see no
        // id (with one, it would use a slot another thread may now hold).
        assert_eq!(
            late, None,
            "no id once the exit destructor ran (id {held} still held: {still_held})"
        );
    }

    #[test]
    fn home_index_is_stable_and_in_range() {
        let a = home_index(7);
        assert!(a < 7);
        assert_eq!(home_index(7), a);
        assert_eq!(home_index(1), 0);
    }

    #[test]
    fn threads_spread_over_their_homes() {
        // Each thread's home hash is its own: 64 threads over 4 places
        // leave none empty (by chance alone, 1 in 10^7; the golden-ratio
        // spread of consecutive thread numbers does better).
        let homes: Vec<usize> = (0..64)
            .map(|_| std::thread::spawn(|| home_index(4)).join().unwrap())
            .collect();
        for place in 0..4 {
            assert!(
                homes.contains(&place),
                "no thread at home {place}: {homes:?}"
            );
        }
    }

    #[test]
    fn a_pinned_home_is_the_home_index_asked_for() {
        // On a thread of its own: the test thread keeps its home.
        std::thread::spawn(|| {
            for n in 1..=9 {
                for shard in 0..n {
                    pin_home(shard, n);
                    assert_eq!(home_index(n), shard, "shard {shard} of {n}");
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn every_64th_op_fires_once_in_64() {
        let fired = (0..640).filter(|_| every_64th_op()).count();
        assert_eq!(fired, 10);
    }
}
