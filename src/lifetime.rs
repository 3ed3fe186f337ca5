//! The shared core's lifetime: who keeps it alive, how references to it are
//! counted, and how its last owner waits for releasers still reading it.
//!
//! # Layout: the core outside the `Arc`'s payload
//!
//! The core ([`Shared`]) lives in a `Box` of its own. The `Arc` that pool
//! handles, connections and the background task count is an `Arc<Owner>`,
//! whose payload is one pointer to that box. Why two allocations: std's
//! `Arc` makes a `&mut` of its payload (`Arc::drop_slow`) as soon as the
//! last count goes, before any `Drop` of ours could wait. A releaser may
//! still read the core at that moment, through `&Shared`, between
//! publishing its connection and its last re-check (`hazard.rs`). A `&mut`
//! over memory another thread still reads is undefined behaviour: under
//! Stacked Borrows the write retag pops the releaser's tags, under Tree
//! Borrows the releaser's next read is a use after the deallocation that
//! follows. Here the `Arc`'s `&mut` covers only the [`Owner`] (one
//! pointer, which no releaser reads); `Drop for Owner` first waits until no
//! hazard window names the core, and only then turns the raw pointer back
//! into its `Box` (the first `&mut` to the core) and frees it. The cost is
//! one allocation at build and one pointer more in each [`Pooled`](crate::Pooled).
//!
//! # Invariants kept
//!
//! - **Counted references.** The `Arc<Owner>`'s strong count is the number
//!   of pool handles (one `Handle` for all `Pool` clones), open connections
//!   (each takes one when it is opened, [`Shared::add_reference`], and
//!   hands it back as a [`Retired`] count when it is closed or detached),
//!   upgrades held by the background task, and releasers without a hazard
//!   slot. A [`Pooled`](crate::Pooled) holds none of its own: its
//!   connection's keeps the core alive.
//! - **Provenance.** Every raw pointer given to `Arc::increment_strong_count`
//!   or `decrement_strong_count` comes from the `Arc` itself
//!   (`Arc::as_ptr`, `Weak::as_ptr`), never from a reference to the
//!   payload, so it covers the count header it touches.
//! - **No `&mut` while readers may exist.** `&Shared` is only ever derived
//!   from the box's raw pointer; the one `&mut Shared` is made by `Drop for
//!   Owner` after [`hazard::wait_until_unnamed`](crate::hazard) returned.
//! - **Windows close in a frame without a reference.** A releaser opens
//!   and closes its window in `Drop for Pooled`, which holds only a
//!   [`CorePtr`]; every `&Shared` it made (function arguments, which carry
//!   a protector for the call) has ended before the window closes.
//! - **Retired references are settled last**, after the settling code's
//!   last use of `&Shared` (the last decrement may free the core).

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::Manager;
use crate::pool::Shared;

/// The payload of the `Arc` that counts references to a core: a pointer to
/// the core's own allocation, freed by `Drop` once no releaser reads it.
pub(crate) struct Owner<M: Manager> {
    /// From `Box::into_raw`; every `&Shared` is derived from it.
    core: NonNull<Shared<M>>,
}

// SAFETY: an `Owner` is a unique owning pointer to a `Shared`, which is
// `Send + Sync` (checked by `_SHARED_IS_SEND_AND_SYNC` below); moving or
// sharing the owner moves or shares only access to that core.
unsafe impl<M: Manager> Send for Owner<M> {}
// SAFETY: as above: `&Owner` gives only `&Shared`, which is `Sync`.
unsafe impl<M: Manager> Sync for Owner<M> {}

/// Proves, for every manager, the property the `unsafe impl`s above rely on.
const _SHARED_IS_SEND_AND_SYNC: () = {
    #[allow(dead_code)]
    fn check<M: Manager>() {
        fn is<T: Send + Sync>() {}
        is::<Shared<M>>();
    }
};

impl<M: Manager> Owner<M> {
    /// Moves `core` into an allocation of its own.
    pub(crate) fn new(core: Shared<M>) -> Self {
        Self {
            // SAFETY: `Box::into_raw` never returns null.
            core: unsafe { NonNull::new_unchecked(Box::into_raw(Box::new(core))) },
        }
    }
}

impl<M: Manager> Deref for Owner<M> {
    type Target = Shared<M>;

    #[inline(always)]
    fn deref(&self) -> &Shared<M> {
        // SAFETY: the core lives until `Drop for Owner`, which cannot run
        // while `&self` does.
        unsafe { self.core.as_ref() }
    }
}

impl<M: Manager> Drop for Owner<M> {
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

impl<M: Manager> Shared<M> {
    /// Takes one counted reference on this core, for a connection being
    /// opened; it comes back as a [`Retired`] count when that connection is
    /// closed or detached.
    pub(crate) fn add_reference(&self) {
        // SAFETY: `weak` points to this core's `Owner`, whose strong count
        // is at least one while `&self` is usable (a caller with `&Shared`
        // holds a counted reference or a connection's). `Weak::as_ptr`
        // keeps the provenance of the whole `Arc` allocation.
        unsafe { Arc::increment_strong_count(self.weak.as_ptr()) };
    }
}

/// Connection references (one per connection closed or detached) that the
/// caller must drop once it no longer uses `&Shared`.
#[must_use = "retired references must be settled"]
#[derive(Debug, Default)]
pub(crate) struct Retired(pub(crate) usize);

/// Drops retired references while the caller still holds a strong `Arc`,
/// so the core cannot be freed under it.
pub(crate) fn settle_held<M: Manager>(owner: &Arc<Owner<M>>, retired: Retired) {
    // SAFETY: `owner` is a live strong reference, so the count stays >= 1
    // and `&Shared` borrows elsewhere stay valid.
    unsafe { CorePtr::new(owner).settle(retired) }
}

/// An uncounted pointer to a core and to its `Owner`: what a guard keeps.
/// Whoever holds one must know the core alive by other means (a counted
/// reference of a connection it owns).
pub(crate) struct CorePtr<M: Manager> {
    /// Into the `Arc` allocation (from `Arc::as_ptr`): for the counts.
    owner: NonNull<Owner<M>>,
    /// The core itself (from the owner's box pointer).
    core: NonNull<Shared<M>>,
}

impl<M: Manager> Clone for CorePtr<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: Manager> Copy for CorePtr<M> {}

impl<M: Manager> CorePtr<M> {
    /// Points at `owner`'s core.
    #[inline(always)]
    pub(crate) fn new(owner: &Arc<Owner<M>>) -> Self {
        Self {
            // SAFETY: `Arc::as_ptr` is never null.
            owner: unsafe { NonNull::new_unchecked(Arc::as_ptr(owner).cast_mut()) },
            core: owner.core,
        }
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
    pub(crate) unsafe fn get<'a>(self) -> &'a Shared<M> {
        // SAFETY: alive by the caller's contract; derived from the box.
        unsafe { self.core.as_ref() }
    }

    /// Takes one counted reference of the caller's own (a releaser without
    /// a hazard slot), to be settled with its other retired ones.
    ///
    /// # Safety
    /// The core must be alive (the caller still owns a connection of it).
    #[inline]
    pub(crate) unsafe fn add_reference(self) {
        // SAFETY: alive per the contract; `owner` came from `Arc::as_ptr`.
        unsafe { Arc::increment_strong_count(self.owner.as_ptr()) };
    }

    /// Drops `retired` counted references.
    ///
    /// # Safety
    /// Each retired count is a strong reference on this core that the
    /// caller owns, and the caller makes no further use of any `&Shared`
    /// (the last decrement may free the core).
    #[inline]
    pub(crate) unsafe fn settle(self, retired: Retired) {
        for _ in 0..retired.0 {
            // SAFETY: one strong reference per retired count, taken by
            // `add_reference`; `owner` came from `Arc::as_ptr`.
            unsafe { Arc::decrement_strong_count(self.owner.as_ptr()) };
        }
    }
}
