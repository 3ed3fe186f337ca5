//! The one switch between the real synchronisation primitives and their
//! model-checked stand-ins.
//!
//! Every atomic, cell, queue, waker and thread-local that the pool's
//! concurrency protocol touches is imported from here and from nowhere else,
//! so that the loom build (`--cfg latchless_loom`, see `loom-tests/`) checks
//! the production code path itself rather than a copy of it.
//!
//! Invariant kept: the two branches export the same names with the same
//! signatures; no other module mentions `cfg(latchless_loom)`.

pub(crate) use imp::*;

#[cfg(not(latchless_loom))]
mod imp {
    pub(crate) use atomic_waker::AtomicWaker;
    pub(crate) use crossbeam_queue::{ArrayQueue, SegQueue};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
    };
    pub(crate) use std::thread_local;

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
}
