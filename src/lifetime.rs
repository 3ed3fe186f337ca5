//! The shared core's lifetime: who keeps it alive, how references to it are
//! counted and settled, and how its last owner waits for releasers still
//! reading it.
//!
//! # Layout: the core outside the `Arc`'s payload
//!
//! The core (`Core`, `core.rs`; generic here: this module knows no core
//! type) lives in a `Box` of its own. The `Arc` that pool handles,
//! connections and tasks count is an `Arc<Owner>`, whose payload is one
//! pointer to that box. Why two allocations: std's `Arc` makes a `&mut` of
//! its payload (`Arc::drop_slow`) as soon as the last count goes, before
//! any `Drop` of ours could wait. A releaser may still read the core at
//! that moment, through `&T`, between publishing its connection and its
//! last re-check (`hazard.rs`). A `&mut` over memory another thread still
//! reads is undefined behaviour: under Stacked Borrows the write retag
//! pops the releaser's tags, under Tree Borrows the releaser's next read
//! is a use after the deallocation that follows. Here the `Arc`'s `&mut`
//! covers only the [`Owner`] (one pointer, which no releaser reads); `Drop
//! for Owner` first waits until no hazard window names the core, and only
//! then turns the raw pointer back into its `Box` (the first `&mut` to the
//! core) and frees it. The cost is one allocation at build and one load
//! more when a release changes a count ([`Counted`]).
//!
//! # One handle per role
//!
//! `Arc<Owner<T>>` is a counted reference (held by the pool's handle,
//! tasks, checks in flight, and borrowed by guards that may settle
//! counts); `&T` is a borrow for one call; [`CorePtr`] is an uncounted
//! pointer for what must stay small (`Pool`'s one-load path to the core, a
//! [`Pooled`](crate::Pooled)), valid only while something else keeps the
//! core alive.
//!
//! # Invariants kept
//!
//! - **Counted references.** The `Arc<Owner>`'s strong count is the number
//!   of pool handles (one `Handle` for all `Pool` clones), open connections
//!   (each takes one when it is opened, [`add_reference`], and hands it
//!   back as a [`Retired`] count when it is closed or detached), tasks and
//!   checks in flight (the ticker only while it runs a round: between
//!   rounds it holds a `Weak`), and releasers without a hazard slot. A
//!   `Pooled` holds none of its own: its connection's keeps the core alive.
//! - **Provenance.** Every raw pointer given to `Arc::increment_strong_count`
//!   or `decrement_strong_count` comes from the `Arc` itself
//!   (`Arc::as_ptr`, `Weak::as_ptr`), never from a reference to the
//!   payload, so it covers the count header it touches.
//! - **No `&mut` while readers may exist.** `&T` is only ever derived
//!   from the box's raw pointer; the one `&mut` to the core is made by
//!   `Drop for Owner` after `hazard::wait_until_unnamed` returned.
//! - **Windows close in a frame without a reference.** A releaser opens
//!   and closes its window in `Drop for Pooled`, which holds only a
//!   [`CorePtr`]; every `&T` it made (function arguments, which carry a
//!   protector for the call) has ended before the window closes.
//! - **Counts are settled by type, last.** A [`Retired`] count is only
//!   ever made by a [`Settle`] (the accumulator of a caller whose own
//!   counted reference keeps the core alive, which drops what it collected
//!   when it is dropped) or by opening a [`Cover`] ([`CorePtr::cover`]
//!   returns the release's `Retired` beside it, and [`Cover::end`] takes
//!   it back and drops it after the window closes). All three types are
//!   `must_use`, and every function that closes a connection adds to its
//!   caller's `Retired`, so no count is forgotten and none is dropped while
//!   the settling code still uses `&T` (the last decrement may free the
//!   core).
//! - **One cover per release.** [`Cover`] is what a release holds across
//!   its window: a hazard window, or a counted reference of its own when
//!   the thread has no slot. This module owns `Retired`, the settling and
//!   the use of the hazard slots; `hazard.rs` is the slots themselves.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

/// The payload of the `Arc` that counts references to a core: a pointer to
/// the core's own allocation, freed by `Drop` once no releaser reads it.
pub(crate) struct Owner<T> {
    /// From `Box::into_raw`; every `&T` is derived from it.
    core: NonNull<T>,
}

// SAFETY: an `Owner` is a unique owning pointer to a `T` that is
// `Send + Sync`; moving or sharing the owner moves or shares only access to
// that core.
unsafe impl<T: Send + Sync> Send for Owner<T> {}
// SAFETY: as above: `&Owner` gives only `&T`, which is `Sync`.
unsafe impl<T: Send + Sync> Sync for Owner<T> {}

impl<T> Owner<T> {
    /// Moves `core` into an allocation of its own.
    pub(crate) fn new(core: T) -> Self {
        Self {
            // SAFETY: `Box::into_raw` never returns null.
            core: unsafe { NonNull::new_unchecked(Box::into_raw(Box::new(core))) },
        }
    }
}

impl<T> Deref for Owner<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the core lives until `Drop for Owner`, which cannot run
        // while `&self` does.
        unsafe { self.core.as_ref() }
    }
}

impl<T> Drop for Owner<T> {
    /// The last reference is gone: wait for releasers still re-checking the
    /// core (their windows), then free it.
    fn drop(&mut self) {
        let core = self.core.as_ptr();
        crate::hazard::wait_until_unnamed(core.cast_const().cast());
        // SAFETY: `core` came from `Box::into_raw` in `new` and is freed only
        // here, once. No reference into it is live: every counted holder
        // is gone (the count reached zero), every `Pooled` holds one of
        // those counts, and the wait above saw every hazard window that
        // named the core closed, each closed after its owner's last access.
        drop(unsafe { Box::from_raw(core) });
    }
}

/// Takes one counted reference on the core that `weak` points to, for a
/// connection being opened; it comes back as a [`Retired`] count when that
/// connection is closed or detached.
///
/// The caller holds `&T` of that core, so its strong count is at least one
/// (a caller with a reference holds a counted reference or a connection's).
pub(crate) fn add_reference<T>(weak: &Weak<Owner<T>>) {
    // SAFETY: the strong count is at least one (above). `Weak::as_ptr`
    // keeps the provenance of the whole `Arc` allocation.
    unsafe { Arc::increment_strong_count(weak.as_ptr()) };
}

/// Counted references on a core that closes handed back, one per
/// connection closed or detached, to be dropped once the core is no longer
/// read. Only a [`Settle`] (a caller that holds a counted reference of its
/// own) or a [`Cover`] (a releaser) owns one, and each drops what it
/// collected when it ends: functions that close connections add to the
/// caller's, and no count can be forgotten.
#[derive(Debug)]
#[must_use = "retired references must be settled (Settle, Cover::end)"]
pub(crate) struct Retired(usize);

impl Retired {
    /// `n` more connections closed or detached.
    #[inline]
    pub(crate) fn add(&mut self, n: usize) {
        self.0 += n;
    }
}

/// A [`Retired`] accumulator for a caller that holds a counted reference
/// of its own (`owner`): dropped, it drops what it collected (the
/// caller's reference keeps the core alive across those decrements, so it
/// may drop at any point).
#[must_use = "a settlement drops its references when it is dropped"]
pub(crate) struct Settle<'a, T>(&'a Arc<Owner<T>>, Retired);

impl<'a, T> Settle<'a, T> {
    /// Nothing collected yet.
    pub(crate) fn new(owner: &'a Arc<Owner<T>>) -> Self {
        Self(owner, Retired(0))
    }
}

impl<T> Deref for Settle<'_, T> {
    type Target = Retired;
    fn deref(&self) -> &Retired {
        &self.1
    }
}

impl<T> std::ops::DerefMut for Settle<'_, T> {
    fn deref_mut(&mut self) -> &mut Retired {
        &mut self.1
    }
}

impl<T> Drop for Settle<'_, T> {
    fn drop(&mut self) {
        for _ in 0..self.1.0 {
            // SAFETY: one strong reference per retired count, owned by the
            // caller; `self.0` is a live strong reference besides, so the
            // count stays >= 1 and `&T` borrows elsewhere stay valid. The
            // pointer comes from `Arc::as_ptr`.
            unsafe { Arc::decrement_strong_count(Arc::as_ptr(self.0)) };
        }
    }
}

/// A core that knows the `Arc` counting references to it: how a
/// one-pointer [`CorePtr`] reaches the counts.
pub(crate) trait Counted: Sized {
    /// A weak pointer to this core's `Arc<Owner>` (its `as_ptr` keeps the
    /// provenance of the whole allocation).
    fn counts(&self) -> &Weak<Owner<Self>>;
}

/// An uncounted pointer to a core: what a guard keeps. Whoever holds one
/// must know the core alive by other means (a counted reference of a
/// connection it owns).
///
/// One pointer, not two: the counts are reached through the core
/// ([`Counted`]), only when a count changes (a release without a hazard
/// slot, a connection closed), so a [`Pooled`](crate::Pooled) is two words
/// and an `Option<Pooled>` comes back from `try_get` in registers. At
/// three words a guard is returned through memory, and a caller that
/// copies it with one 16-byte load of two 8-byte stores stalls on the
/// failed store forwarding (BENCHMARKS.md, "Design decisions").
pub(crate) struct CorePtr<T> {
    /// The core itself (from the owner's box pointer).
    core: NonNull<T>,
}

// SAFETY: the only access through a `CorePtr` is `get`, which gives `&T`
// (and is unsafe: the holder must know the core alive), so sending or
// sharing one shares no more than `&T` does, which `T: Sync` allows.
unsafe impl<T: Sync> Send for CorePtr<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for CorePtr<T> {}

impl<T> Clone for CorePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CorePtr<T> {}

impl<T> CorePtr<T> {
    /// Points at `owner`'s core.
    #[inline(always)]
    pub(crate) fn new(owner: &Arc<Owner<T>>) -> Self {
        Self { core: owner.core }
    }

    /// The core's address, as hazard windows name it.
    #[inline(always)]
    pub(crate) fn address(self) -> *const () {
        self.core.as_ptr().cast_const().cast()
    }

    /// The core.
    ///
    /// # Safety
    /// The core must stay alive while the returned reference is used.
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self) -> &'a T {
        // SAFETY: alive by the caller's contract; derived from the box.
        unsafe { self.core.as_ref() }
    }
}

impl<T: Counted> CorePtr<T> {
    /// Takes one counted reference of the caller's own (a releaser without
    /// a hazard slot), to be settled with its other retired ones.
    ///
    /// # Safety
    /// The core must be alive (the caller still owns a connection of it).
    #[inline]
    pub(crate) unsafe fn add_reference(self) {
        // SAFETY: alive per the contract.
        let counts = unsafe { self.get() }.counts();
        // SAFETY: the strong count is at least one (the caller's
        // connection's); `Weak::as_ptr` keeps the allocation's provenance.
        unsafe { Arc::increment_strong_count(counts.as_ptr()) };
    }

    /// Drops `n` counted references.
    ///
    /// # Safety
    /// Each is a strong reference on this core that the caller owns, and
    /// the caller makes no further use of any `&T` (the last decrement may
    /// free the core).
    #[inline]
    unsafe fn settle(self, n: usize) {
        if n == 0 {
            return;
        }
        // Read before the first decrement, while the caller's counts keep
        // the core alive.
        // SAFETY: alive: the caller owns at least one strong reference.
        let owner = unsafe { self.get() }.counts().as_ptr();
        for _ in 0..n {
            // SAFETY: one strong reference per count, owned by the caller;
            // `owner` came from `Weak::as_ptr`.
            unsafe { Arc::decrement_strong_count(owner) };
        }
    }
}

/// What keeps a core alive through a release once its connection is
/// published (and no longer keeps it alive): this thread's hazard window
/// (`hazard.rs`), or, without one, a counted reference of the releaser's
/// own. Opened and ended by `Drop for Pooled`, in a frame that holds no
/// reference to the core.
///
/// Why a window and not always a reference: the window costs two plain
/// stores to a cache line only this thread writes, the reference two
/// atomic read-modify-writes on the count every pool clone and connection
/// shares (BENCHMARKS.md, "Design decisions").
#[must_use = "a cover must be ended with `end`"]
pub(crate) struct Cover<T> {
    core: CorePtr<T>,
    window: Option<crate::hazard::Window>,
}

impl<T: Counted> CorePtr<T> {
    /// Opens a cover for a release of one of this core's connections, and
    /// the release's [`Retired`] count (1 if the cover took a counted
    /// reference of its own), which [`Cover::end`] drops. The two travel
    /// apart so that the count stays in a register on the path that closes
    /// nothing.
    ///
    /// # Safety
    /// The core must be alive: the caller still owns one of its
    /// connections, not yet published.
    #[inline(always)]
    pub(crate) unsafe fn cover(self) -> (Cover<T>, Retired) {
        // loom and ASan mutant: release_without_core_ref (run-mutants.sh, .ci/run)
        let uncovered = crate::sync::mutant("release_without_core_ref");
        let window = if uncovered {
            None
        } else {
            crate::hazard::protect(self.address())
        };
        let own = usize::from(window.is_none() && !uncovered);
        if own == 1 {
            // SAFETY: alive per the contract.
            unsafe { self.add_reference() };
        }
        (Cover { core: self, window }, Retired(own))
    }
}

impl<T: Counted> Cover<T> {
    /// Closes the window (the release's last access to the core is behind
    /// it), then drops `retired`: what the release's closes handed back
    /// and the cover's own reference, if any.
    ///
    /// # Safety
    /// No reference to the core is live; `retired` is the count `cover`
    /// returned with this cover, added to only by the release's closes.
    #[inline(always)]
    pub(crate) unsafe fn end(self, retired: Retired) {
        drop(self.window);
        // SAFETY: per the contract; each count is a reference this release
        // owns (retired by its closes, or taken by `cover`).
        unsafe { self.core.settle(retired.0) };
    }
}
