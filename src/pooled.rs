//! [`Pooled`]: the guard around a checked-out connection. Its `Drop` is the
//! release path.
//!
//! # Release
//!
//! 1. `is_broken` (or a panic unwinding through the guard)? Close the
//!    connection and pass its place on: to the oldest waiter, who connects,
//!    or back to the free queue.
//! 2. A waiter is registered? Hand the connection straight to the oldest
//!    live one (one CAS on its node).
//! 3. Past its lifetime, or above the cap after a shrink? Close it.
//! 4. Otherwise stamp it fresh (a cached clock reading, not a clock read)
//!    and put it in the idle set: parked for this thread (PARKED, its key
//!    in the thread's cache) when the cache is free, else its key pushed
//!    onto this thread's home shard; then re-check for a waiter that
//!    registered meanwhile (`release.rs`).
//!
//! Invariant kept: the guard owns its claimed slot (a `slots::Busy` token,
//! BUSY) from creation until `Drop` or [`Pooled::detach`], which consume
//! it; neither allocates, and every access to the
//! shared core is covered: by the guard's connection's strong reference
//! until that connection leaves its hands, then (on a healthy release) by
//! the releasing thread's hazard slot, which the core's last owner waits
//! for (`hazard.rs`), or by a reference the releaser takes and drops last.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

use crate::Manager;
use crate::background::cooperative_tick;
use crate::core::Core;
use crate::lifetime::CorePtr;
use crate::metrics::bump;
use crate::slots::{Busy, Held};

/// A connection checked out of a [`Pool`](crate::Pool). Derefs to the
/// connection; dropping it returns the connection to the pool (or closes it
/// if [`Manager::is_broken`] says so, or if the thread is panicking).
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = Vec<u8>; type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(M).build().unwrap();
/// let mut conn = pool.get().await.unwrap();
/// conn.push(1); // DerefMut to the connection
/// drop(conn);
/// assert_eq!(*pool.try_get().unwrap(), vec![1]);
/// # }
/// ```
#[must_use = "dropping a Pooled returns its connection to the pool at once"]
#[clippy::has_significant_drop]
pub struct Pooled<M: Manager> {
    /// Kept alive by this connection's own strong reference
    /// (`lifetime.rs`).
    core: CorePtr<Core<M>>,
    /// The claimed slot this guard owns; taken out once, by `Drop` or
    /// [`Pooled::detach`], whichever ends the guard.
    slot: ManuallyDrop<Busy>,
    _owns: PhantomData<M::Connection>,
}

// SAFETY: a `Pooled` owns its connection exclusively (I1) and the shared core
// is `Sync` (its connections are `Send` and `M: Send + Sync`), so moving the
// guard to another thread moves only a `Send` connection.
unsafe impl<M: Manager> Send for Pooled<M> {}
// SAFETY: `&Pooled` gives only `&M::Connection`, shareable when it is `Sync`.
unsafe impl<M: Manager> Sync for Pooled<M> where M::Connection: Sync {}

impl<M: Manager> Pooled<M> {
    #[inline(always)]
    pub(crate) fn new(core: CorePtr<Core<M>>, slot: Busy) -> Self {
        Self {
            core,
            slot: ManuallyDrop::new(slot),
            _owns: PhantomData,
        }
    }

    #[inline(always)]
    fn core(&self) -> &Core<M> {
        // SAFETY: the core lives while this guard's connection is open.
        unsafe { self.core.get() }
    }

    /// Marks the connection unusable (after an I/O or protocol error):
    /// dropping the guard then closes it, counted in
    /// [`Metrics::broken`](crate::Metrics::broken), and frees its place,
    /// without waiting for [`Manager::is_broken`] to notice. An associated
    /// function, like [`detach`](Self::detach), so that it cannot shadow a
    /// method of the connection.
    ///
    /// One broken connection closes that connection only: the pool does not
    /// treat it as a server restart. It checks one other idle connection
    /// before its next use (unless a check passed within the last
    /// maintenance period); only if that check fails are all idle
    /// connections checked before reuse.
    ///
    /// ```
    /// # use latchless::{Manager, Pool, Pooled};
    /// # struct M; impl Manager for M { type Connection = u8; type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<u8, std::io::Error> { Ok(5) } }
    /// # async fn query(_: &mut u8) -> Result<(), std::io::Error> { Err(std::io::ErrorKind::BrokenPipe.into()) }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let mut conn = pool.get().await.unwrap();
    /// if let Err(_e) = query(&mut conn).await {
    ///     Pooled::mark_broken(&mut conn);
    /// }
    /// drop(conn); // closed, not returned
    /// assert_eq!(pool.state().size, 0);
    /// assert_eq!(pool.metrics().broken, 1);
    /// # }
    /// ```
    pub fn mark_broken(this: &mut Self) {
        this.core().slots.of(&this.slot).holding.mark();
    }

    /// Whether [`mark_broken`](Self::mark_broken) was called on this guard.
    ///
    /// ```
    /// # use latchless::{Manager, Pool, Pooled};
    /// # struct M; impl Manager for M { type Connection = u8; type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<u8, std::io::Error> { Ok(5) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// let mut conn = pool.get().await.unwrap();
    /// assert!(!Pooled::is_marked_broken(&conn));
    /// Pooled::mark_broken(&mut conn);
    /// assert!(Pooled::is_marked_broken(&conn));
    /// # }
    /// ```
    pub fn is_marked_broken(this: &Self) -> bool {
        this.core().slots.of(&this.slot).holding.is_marked()
    }

    /// Whether the connection is lost: marked broken by its holder, or
    /// the manager's `is_broken` says so (a panic in it counts as lost).
    /// What a release would judge, asked early (`Pool::retry`).
    pub(crate) fn is_lost(this: &mut Self) -> bool {
        if Self::is_marked_broken(this) {
            return true;
        }
        // SAFETY: the core lives while this guard's connection is open
        // (as in `core`), and the borrow of the core does not overlap
        // the guard's own token, borrowed mutably below.
        let core = unsafe { this.core.get() };
        core.is_broken(&mut this.slot)
    }

    /// The manager of the pool this connection came from (a keyed pool's
    /// names the key).
    pub(crate) fn manager(this: &Self) -> &M {
        &this.core().manager
    }

    /// Takes the connection out of the pool for good and frees its place
    /// (a waiter may connect in its stead).
    ///
    /// ```
    /// # use latchless::{Manager, Pool, Pooled};
    /// # struct M; impl Manager for M { type Connection = u8; type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<u8, std::io::Error> { Ok(5) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).max_size(1).build().unwrap();
    /// let conn: u8 = Pooled::detach(pool.get().await.unwrap());
    /// assert_eq!(conn, 5);
    /// assert_eq!(pool.state().size, 0, "its place is free again");
    /// # }
    /// ```
    pub fn detach(this: Self) -> M::Connection {
        let mut this = ManuallyDrop::new(this);
        // SAFETY: this guard's connection, not yet given up, keeps the core
        // alive.
        let (cover, mut retired) = unsafe { this.core.cover() };
        // SAFETY: the guard ends here without its `Drop`, so the slot is
        // taken out once and the field never read again.
        let busy = unsafe { ManuallyDrop::take(&mut this.slot) };
        let conn = {
            let core = this.core();
            let (conn, place) = core.slots.take(busy);
            let conn = conn.expect("latchless: a claimed slot always holds a connection");
            bump(&core.counters.detached);
            // The detached connection's reference on the core is the
            // caller's to drop now, with whatever the hand-off closed.
            retired.add(1);
            core.pass_on(Held::Place(place), &mut retired);
            conn
        };
        // SAFETY: no borrow of the core is live (the block above ended it).
        unsafe { cover.end(retired) };
        conn
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    #[inline]
    fn deref(&self) -> &M::Connection {
        self.core().slots.conn(&self.slot)
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut M::Connection {
        // SAFETY: the core lives while this guard's connection is open; the
        // borrow is tied to `&mut self`, which excludes every other use of
        // the guard.
        let core = unsafe { self.core.get() };
        core.slots.conn_mut(&mut self.slot)
    }
}

impl<M: Manager> Drop for Pooled<M> {
    /// The release path (module docs), covered from start to end: once its
    /// connection is published, this guard no longer owns the reference
    /// that kept the core alive, so its thread's hazard window (two plain
    /// stores, `hazard.rs`) covers the re-checks that follow, or, without
    /// a slot, a counted reference of its own. The window opens and closes
    /// here, in a frame that holds no `&Core` (`lifetime.rs`).
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard's connection, not yet published, keeps the
        // core alive.
        let (cover, mut retired) = unsafe { self.core.cover() };
        // SAFETY: `drop` runs once and never reads the field again.
        let busy = unsafe { ManuallyDrop::take(&mut self.slot) };
        {
            // SAFETY: alive until the connection is published; from then
            // on, the cover keeps it alive. The borrow ends with this block.
            let core = unsafe { self.core.get() };
            // First, while this guard's connection still keeps the core
            // alive: every 64th release on a thread looks whether
            // maintenance is due.
            if crate::tid::every_64th_op() {
                cooperative_tick(core, &mut retired);
            }
            core.release(busy, &mut retired);
        }
        // SAFETY: no borrow of the core is live (the block above ended it).
        unsafe { cover.end(retired) };
    }
}

impl<M: Manager> std::fmt::Debug for Pooled<M>
where
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pooled").field(&**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Big;
    impl Manager for Big {
        type Connection = [u8; 4096];
        type Error = std::io::Error;
        async fn connect(&self) -> Result<[u8; 4096], std::io::Error> {
            Ok([0; 4096])
        }
    }

    #[test]
    fn a_guard_is_two_words_and_an_optional_one_too() {
        // Two words come back from a call in registers; a third sends the
        // guard through memory (`lifetime.rs`, `CorePtr`). The connection's
        // size does not count: it lives in the slot.
        let two = 2 * std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<Pooled<Big>>(), two);
        assert_eq!(std::mem::size_of::<Option<Pooled<Big>>>(), two);
    }

    struct Five;
    impl Manager for Five {
        type Connection = u8;
        type Error = std::io::Error;
        async fn connect(&self) -> Result<u8, std::io::Error> {
            Ok(5)
        }
    }

    /// Runs `f` on a runtime of this thread's.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_guard_shows_its_connection_and_whether_it_was_marked_broken() {
        block_on(async {
            // A mock clock: the real one asks the CPU (`cpuid`), which miri
            // cannot run.
            let (clock, _mock) = crate::Clock::mock();
            let pool = crate::Pool::builder(Five).clock(clock).build().unwrap();
            let mut c = pool.get().await.unwrap();
            assert_eq!(format!("{c:?}"), "Pooled(5)");
            assert!(!Pooled::is_marked_broken(&c));
            Pooled::mark_broken(&mut c);
            assert!(Pooled::is_marked_broken(&c));
            drop(c);
            assert_eq!(pool.state().size, 0, "closed, not returned");
        });
    }

    /// Broken when its value is odd; a panic for 13.
    struct Odd;
    impl Manager for Odd {
        type Connection = u8;
        type Error = std::io::Error;
        async fn connect(&self) -> Result<u8, std::io::Error> {
            Ok(2)
        }
        fn is_broken(&self, conn: &mut u8) -> bool {
            assert_ne!(*conn, 13, "a manager that panics");
            *conn % 2 == 1
        }
    }

    /// `is_lost` (what `Pool::retry` asks) reaches the manager through the
    /// guard's core pointer, the unsafe access miri checks here: marked,
    /// judged broken, or a panicking judgement all count as lost.
    #[test]
    fn a_guard_is_lost_when_marked_or_judged_broken() {
        block_on(async {
            let (clock, _mock) = crate::Clock::mock();
            let pool = crate::Pool::builder(Odd).clock(clock).build().unwrap();
            let mut c = pool.get().await.unwrap();
            assert!(!Pooled::is_lost(&mut c), "2 is sound");
            *c = 3;
            assert!(Pooled::is_lost(&mut c), "judged broken");
            *c = 13;
            assert!(Pooled::is_lost(&mut c), "a panic counts as lost");
            *c = 4;
            assert!(!Pooled::is_lost(&mut c));
            Pooled::mark_broken(&mut c);
            assert!(Pooled::is_lost(&mut c), "marked");
        });
    }
}
