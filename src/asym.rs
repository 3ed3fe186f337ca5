//! The parking release's asymmetric fence: one read-modify-write per
//! uncontended cycle instead of two.
//!
//! # Why
//!
//! A release that parks its connection (`Slots::park`, DESIGN.md "The
//! thread-affine fast path") must not let a waiter sleep while the
//! connection sits parked: the lost-wake-up argument (`waiters.rs`,
//! DESIGN.md) needs the parking write and the releaser's re-check of the
//! waiter count on one side, the waiter's registration and its re-check
//! of the slots on the other, each pair ordered by a SeqCst operation.
//! Done symmetrically the parking write is a SeqCst swap: on x86-64 a
//! locked instruction, a large share of the uncontended cycle
//! (BENCHMARKS.md, "Design decisions"). Waiters are rare where that
//! cycle matters and common where a microsecond of parking dwarfs it, so
//! the cost is moved to them:
//!
//! - **Light side** (every parking release, [`Asym::light`]): a plain
//!   Release store of the state word, then a compiler fence and one load
//!   of this pool's mode. While the mode is `RELAXED` that is all: no
//!   fence runs, and the processor may still hold the store in its store
//!   buffer when it reads the waiter count.
//! - **Heavy side** (a waiter's registration, `close`, a resize:
//!   [`Asym::heavy`], through `IdleSet::fence_heavy`): after the caller's
//!   SeqCst fence, the first time after a quiet spell,
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every
//!   running thread of the process execute a full barrier before it
//!   returns, and the mode becomes `ARMED`. While the
//!   mode is armed, every releaser fences after its store (a SeqCst
//!   fence), so the next waiters pay nothing extra: a pool that is
//!   queueing runs the symmetric protocol, with a fence where a swap
//!   would be.
//! - **Quiet again** ([`Asym::relax`], offered at most once a second by
//!   the health sample that housekeeping takes, `background::sample`): a
//!   pool with no heavy call since the last look goes back to `RELAXED`.
//!
//! # Why no waiter is lost
//!
//! Releaser R: parking store `P`, compiler fence, load of the mode `L1`,
//! a SeqCst fence if `L1` was not `RELAXED`, loads of `closed`, the
//! waiter count and the cap `L2`. Heavy side H: the write it must not miss
//! (a waiter counted in `ctl`, or `closed`, or the cap) `W`, SeqCst fence,
//! the mode, maybe a membarrier, then its look at the slots.
//!
//! - R read `ARMING`, `ARMED` or `ALWAYS`: both sides run a SeqCst fence
//!   between their write and their reads; in the order of those fences
//!   one comes first, and the other side's reads see its write
//!   (the C++20 fence rules). R sees `W`, or H sees `P`.
//! - R read `RELAXED` and H (or the waiter that armed the mode H found
//!   `ARMED`) ran the membarrier after writing `ARMING`: the barrier it
//!   forced in R's thread came after `L1` (before it, `L1` would have read
//!   `ARMING` or later), so after `P`, and so `P` was visible to all before
//!   the membarrier returned, which is before H looks (H read `ARMED`,
//!   stored after the membarrier returned).
//! - R read a `RELAXED` written by `relax` after H read `ARMED` (H skipped
//!   the membarrier): H's `W` precedes its read of the mode, which precedes
//!   `relax`'s CAS, which precedes `L1`, which precedes `L2`, all SeqCst:
//!   R's `L2` sees `W`, and R serves or re-checks (`after_shelve`).
//!
//! Loom cannot inject a barrier into another thread, as `membarrier`
//! does: the models run the fallback mode, `ALWAYS` (`sync.rs`), in which
//! both sides are SeqCst fences, so they check the protocol around the
//! pair, and the argument above covers the relaxed mode.
//!
//! Without `membarrier` (not Linux, a kernel before 4.14, a seccomp filter
//! that refuses it, miri) the mode is `ALWAYS`: every parking release
//! fences (the symmetric protocol).
//!
//! # Refused
//!
//! A membarrier that worked at registration can be refused later, on one
//! thread: a seccomp filter installed after start-up, as sandboxed
//! services do. The heavy call that finds it refused ran no barrier, so
//! the mode becomes `ALWAYS` for good (every releaser fences from then
//! on, and new pools start in it), and the waiter's re-check goes on as
//! usual. What the failed call could not do is order a releaser that read
//! `RELAXED` just before: its parking store may reach the waiter's scan
//! late. Housekeeping covers that one window: each round looks for a
//! waiter while something is idle or a place is free and serves it
//! (`Core::rescue`, `release.rs`), so such a waiter waits at most one period.
//!
//! # Invariants kept
//!
//! - The mode leaves `RELAXED` only through `ARMING`, and only a caller
//!   that then runs the membarrier before it looks; `ARMED` is written only
//!   after a membarrier returned; `ALWAYS` never changes (a refused
//!   membarrier stores it; every other write is a CAS from a mode that is
//!   not `ALWAYS`).
//! - A releaser that read anything but `RELAXED` fences before its loads.
//!
//! What the swap cost and what a membarrier costs a waiter are in
//! BENCHMARKS.md, "Design decisions"; the design is DESIGN.md's "One
//! read-modify-write: the asymmetric fence".

use crate::sync::{self, AtomicBool, AtomicUsize, Ordering, fence};

/// Releasers may skip their fence: every earlier heavy call ran its
/// membarrier.
const RELAXED: usize = 0;
/// A heavy call is running its membarrier: releasers fence, and a heavy
/// call that finds this mode runs a membarrier of its own.
const ARMING: usize = 1;
/// Releasers fence; heavy calls skip the membarrier.
const ARMED: usize = 2;
/// No membarrier in this process: releasers always fence.
const ALWAYS: usize = 3;

/// One pool's mode of the asymmetric fence (module docs).
#[derive(Debug)]
pub(crate) struct Asym {
    mode: AtomicUsize,
    /// A heavy call since the last [`relax`](Self::relax).
    recent: AtomicBool,
}

impl Asym {
    /// `RELAXED` where the pool may (`Config::membarrier`) and the process
    /// can run membarriers (registering for them the first time), else
    /// `ALWAYS`.
    pub(crate) fn new(membarrier: bool) -> Self {
        let mode = if membarrier && sync::heavy_barrier_available() {
            RELAXED
        } else {
            ALWAYS
        };
        Self {
            mode: AtomicUsize::new(mode),
            recent: AtomicBool::new(false),
        }
    }

    /// A releaser's side, right after its parking store and before its
    /// re-check's loads: a compiler fence, and a SeqCst fence unless the
    /// mode is `RELAXED`.
    #[inline(always)]
    pub(crate) fn light(&self) {
        sync::light_barrier();
        if self.mode.load(Ordering::SeqCst) != RELAXED {
            fence(Ordering::SeqCst);
        }
    }

    /// The other side, after the write a releaser must see (a waiter
    /// token, `closed`, the cap) and the caller's SeqCst fence after it
    /// (`Waiters::register`, `Core::close`, `Core::resize` each run one),
    /// before looking at the slots: a membarrier unless the mode is armed
    /// already.
    pub(crate) fn heavy(&self) {
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == ALWAYS {
            return;
        }
        if !self.recent.load(Ordering::Relaxed) {
            self.recent.store(true, Ordering::Relaxed);
        }
        if mode != ARMED {
            self.arm(mode);
        }
    }

    /// `RELAXED` -> `ARMING`, membarrier, `ARMING` -> `ARMED` (or, found
    /// `ARMING`, a membarrier of this caller's own). A refused membarrier
    /// makes the mode `ALWAYS` for good (module docs, "Refused").
    #[cold]
    #[inline(never)]
    fn arm(&self, mode: usize) {
        if mode == RELAXED {
            // Lost to another heavy call: it wrote `ARMING` (or more), and
            // this caller's membarrier below covers it just the same.
            let _ = self
                .mode
                .compare_exchange(RELAXED, ARMING, Ordering::SeqCst, Ordering::SeqCst);
        }
        if !sync::heavy_barrier() {
            // Every other transition is a CAS from a state that is not
            // `ALWAYS`, so this store is final.
            self.mode.store(ALWAYS, Ordering::SeqCst);
            return;
        }
        let _ = self
            .mode
            .compare_exchange(ARMING, ARMED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Maintenance, at most once a second: back to `RELAXED` if no heavy
    /// call came since the last look.
    pub(crate) fn relax(&self) {
        if self.recent.swap(false, Ordering::Relaxed) {
            return;
        }
        let _ = self
            .mode
            .compare_exchange(ARMED, RELAXED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether releasers fence now.
    #[cfg(test)]
    pub(crate) fn releasers_fence(&self) -> bool {
        self.mode.load(Ordering::SeqCst) != RELAXED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installs a seccomp filter on the calling thread that refuses
    /// `membarrier(2)` with `EPERM` and allows everything else, as a
    /// sandboxed service might after start-up.
    #[cfg(all(target_os = "linux", not(miri)))]
    fn refuse_membarrier_on_this_thread() -> bool {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let mut jump = stmt(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            libc::SYS_membarrier as u32,
        );
        jump.jf = 1;
        let filter = [
            // The system call number: offset 0 of `struct seccomp_data`.
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
            jump,
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prctl` with the documented arguments; `program` and the
        // filter it points to outlive the call, which copies them.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                && libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const program,
                ) == 0
        }
    }

    /// A membarrier refused after registration falls back for good to
    /// fencing releases, for this pool and for pools built after, without
    /// a panic: a mode whose barrier no longer runs must not stay relaxed.
    /// In a child process: the filter and the process-wide fallback stay
    /// there.
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_refused_membarrier_falls_back_to_fencing_for_good() {
        if Asym::new(true).mode.load(Ordering::SeqCst) == ALWAYS {
            return; // no membarrier on this machine: nothing to refuse
        }
        let fell_back = crate::test_support::in_child(std::time::Duration::from_secs(10), || {
            let a = Asym::new(true);
            let relaxed = a.mode.load(Ordering::SeqCst) == RELAXED;
            if !refuse_membarrier_on_this_thread() {
                return false;
            }
            a.heavy();
            let always = a.mode.load(Ordering::SeqCst) == ALWAYS;
            a.relax();
            a.relax();
            a.heavy();
            relaxed
                && always
                && a.mode.load(Ordering::SeqCst) == ALWAYS
                && Asym::new(true).mode.load(Ordering::SeqCst) == ALWAYS
        });
        assert!(fell_back);
    }

    #[test]
    fn a_heavy_call_arms_and_two_quiet_looks_relax() {
        let off = Asym::new(false);
        assert!(off.releasers_fence(), "membarrier(false): always fence");
        off.heavy();
        off.relax();
        off.relax();
        assert!(off.releasers_fence(), "and it never relaxes");
        let a = Asym::new(true);
        if a.mode.load(Ordering::SeqCst) == ALWAYS {
            // No membarrier here (miri, another OS): releasers always fence.
            assert!(a.releasers_fence());
            a.heavy();
            a.relax();
            a.relax();
            assert!(a.releasers_fence(), "ALWAYS never changes");
            return;
        }
        assert!(!a.releasers_fence(), "a new pool starts relaxed");
        a.heavy();
        assert!(a.releasers_fence(), "a heavy call arms");
        a.relax();
        assert!(a.releasers_fence(), "a heavy call since the last look");
        a.heavy();
        a.relax();
        assert!(a.releasers_fence(), "still waiters");
        a.relax();
        assert!(!a.releasers_fence(), "a quiet look relaxes");
        a.heavy();
        assert!(a.releasers_fence(), "and the next heavy call arms again");
    }
}
