//! The slot arena: one slot per place in the pool, and the ownership
//! protocol that says who may touch the connection inside it.
//!
//! A pool of `max_size` has exactly `max_size` slots. A *place* (the right to
//! hold one open or connecting connection) **is** a slot: reserving capacity
//! means popping a slot index off the `free` queue (one CAS inside
//! `ArrayQueue::pop`), and giving it back means pushing the index again. So
//! invariant I2 (never more than `max_size` connections, connecting ones
//! included) holds by construction: a connection can only live in a slot.
//!
//! # The state word
//!
//! Each slot has one `AtomicU64`, the single source of truth for who owns it:
//!
//! ```text
//!  63                                   2 1 0
//! +--------------------------------------+---+
//! |            generation (62 bits)      |tag|
//! +--------------------------------------+---+
//! tag: FREE = 0  no connection; the index is in `free` or held by a reserver
//!      IDLE = 1  a connection; exactly one key (index, generation) is live
//!                in the idle set, and whoever CASes IDLE(g) -> BUSY(g) owns it
//!      BUSY = 2  a connection owned by one party: a guard, a waiter hand-off,
//!                a creator, a closer or maintenance
//! ```
//!
//! The generation grows by one on every BUSY -> IDLE transition, so an idle
//! key `(index, g)` is valid exactly while the word reads `IDLE(g)`. A key
//! left behind in an idle queue after its slot moved on (closed in place by
//! maintenance, say) is *stale*: its claim CAS fails and the popper skips it.
//! With 62 bits the generation cannot wrap in the life of a process.
//!
//! # Invariants kept
//!
//! - I1 exclusive: only the party that observed the slot FREE (by popping its
//!   index), or that won the `IDLE(g) -> BUSY(g)` CAS, or that was handed the
//!   index by one of those, reads or writes the connection cell.
//! - The connection cell is `Some` exactly when the tag is IDLE or BUSY.
//! - Every transition that hands the slot to another thread is a Release
//!   store or CAS, paired with the Acquire that takes it (noted at each site).

use crossbeam_utils::CachePadded;

use crate::sync::{ArrayQueue, AtomicU64, Ordering, UnsafeCell};

const TAG_BITS: u32 = 2;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const FREE: u64 = 0;
const IDLE: u64 = 1;
const BUSY: u64 = 2;

const fn pack(generation: u64, tag: u64) -> u64 {
    (generation << TAG_BITS) | tag
}

const fn generation(word: u64) -> u64 {
    word >> TAG_BITS
}

const fn tag(word: u64) -> u64 {
    word & TAG_MASK
}

/// Names an idle connection: the slot index and the generation its slot had
/// when the key was made. Valid while the slot reads `IDLE(generation)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotKey {
    pub(crate) index: u32,
    pub(crate) generation: u64,
}

/// One place in the pool.
struct Slot<C> {
    /// Generation and tag, as described in the module docs.
    state: AtomicU64,
    /// The connection; `Some` iff the tag is IDLE or BUSY. Accessed only by
    /// the slot's current owner (see I1 above).
    conn: UnsafeCell<Option<C>>,
    /// Clock ticks (ms) when the connection was opened. Written by the
    /// creator, read by lifecycle checks.
    created_at: AtomicU64,
    /// Coarse clock ticks (ms) of the last BUSY -> IDLE transition.
    released_at: AtomicU64,
}

// SAFETY: the connection cell is only accessed by the slot's unique owner
// (I1), and ownership moves between threads only through Release/Acquire
// pairs on `state`, the free queue, the idle queues or a waiter node; so
// sharing `&Slot<C>` across threads is sound whenever `C` may be sent.
unsafe impl<C: Send> Sync for Slot<C> {}

/// The arena: `max_size` slots and the queue of free slot indices.
pub(crate) struct Slots<C> {
    slots: Box<[CachePadded<Slot<C>>]>,
    /// Indices of FREE slots nobody has reserved. Capacity `max_size`, so a
    /// push of an index that was popped can never fail.
    free: ArrayQueue<u32>,
}

impl<C> Slots<C> {
    /// `n` free slots; `n` must be in `1..=u32::MAX` (the builder checks).
    pub(crate) fn new(n: usize) -> Self {
        let free = ArrayQueue::new(n);
        let slots = (0..n)
            .map(|i| {
                // Cannot fail: the queue was made with room for `n`.
                let _ = free.push(i as u32);
                CachePadded::new(Slot {
                    state: AtomicU64::new(pack(0, FREE)),
                    conn: UnsafeCell::new(None),
                    created_at: AtomicU64::new(0),
                    released_at: AtomicU64::new(0),
                })
            })
            .collect();
        Self { slots, free }
    }

    /// Number of slots (`max_size`).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Places taken: slots holding a connection or reserved for a connect.
    pub(crate) fn taken(&self) -> usize {
        self.slots.len().saturating_sub(self.free.len())
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> &Slot<C> {
        &self.slots[index as usize]
    }

    /// Reserves a place: pops a FREE slot, which the caller now owns.
    ///
    /// The pop's CAS is the capacity reservation; `None` means all
    /// `max_size` places are taken.
    #[inline]
    pub(crate) fn reserve(&self) -> Option<u32> {
        self.free.pop()
    }

    /// Gives a reserved, empty place back.
    ///
    /// # Safety
    /// The caller owns slot `index` and it is FREE (never filled, or emptied
    /// with [`Slots::take`]).
    pub(crate) unsafe fn unreserve(&self, index: u32) {
        debug_assert_eq!(tag(self.slot(index).state.load(Ordering::Relaxed)), FREE);
        // The push publishes the emptied cell (Release on the queue's stamp,
        // paired with the Acquire in the next `reserve`'s pop).
        let pushed = self.free.push(index);
        debug_assert!(pushed.is_ok(), "free queue has room for every slot");
    }

    /// Puts a freshly opened connection into a reserved slot, which stays
    /// owned by the caller (BUSY).
    ///
    /// # Safety
    /// The caller owns slot `index` and it is FREE.
    pub(crate) unsafe fn fill(&self, index: u32, conn: C, now: u64) {
        let slot = self.slot(index);
        // SAFETY: the caller owns the FREE slot (I1); nobody else reads the cell.
        slot.conn.with_mut(|c| unsafe { *c = Some(conn) });
        slot.created_at.store(now, Ordering::Relaxed);
        let g = generation(slot.state.load(Ordering::Relaxed));
        // Relaxed: only the owner reads its own BUSY word; the next hand-over
        // (to idle, to a waiter, to the free queue) is the Release.
        slot.state.store(pack(g, BUSY), Ordering::Relaxed);
    }

    /// Takes the connection out of an owned slot, leaving it FREE (still
    /// owned by the caller: give the place on with `unreserve` or a grant).
    ///
    /// # Safety
    /// The caller owns slot `index` and it is BUSY.
    pub(crate) unsafe fn take(&self, index: u32) -> Option<C> {
        let slot = self.slot(index);
        let g = generation(slot.state.load(Ordering::Relaxed));
        // SAFETY: the caller owns the BUSY slot (I1).
        let conn = slot.conn.with_mut(|c| unsafe { (*c).take() });
        slot.state.store(pack(g, FREE), Ordering::Relaxed);
        conn
    }

    /// Marks an owned, filled slot IDLE with a new generation and returns
    /// the key to put in the idle set. The caller no longer owns it.
    ///
    /// # Safety
    /// The caller owns slot `index` and it is BUSY.
    #[inline]
    pub(crate) unsafe fn make_idle(&self, index: u32, now: u64) -> SlotKey {
        let slot = self.slot(index);
        slot.released_at.store(now, Ordering::Relaxed);
        let g = generation(slot.state.load(Ordering::Relaxed)) + 1;
        // Release: publishes the connection's state (and `released_at`) to
        // whoever wins the claim CAS (its Acquire in `claim`).
        slot.state.store(pack(g, IDLE), Ordering::Release);
        SlotKey {
            index,
            generation: g,
        }
    }

    /// Tries to take ownership of the idle connection named by `key`: one
    /// CAS `IDLE(g) -> BUSY(g)`. `false` means the key is stale.
    #[inline]
    pub(crate) fn claim(&self, key: SlotKey) -> bool {
        // Acquire on success pairs with the Release in `make_idle`.
        self.slot(key.index)
            .state
            .compare_exchange(
                pack(key.generation, IDLE),
                pack(key.generation, BUSY),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Whether `key` still names an idle connection (a hint: it may change
    /// right after).
    pub(crate) fn is_live(&self, key: SlotKey) -> bool {
        self.slot(key.index).state.load(Ordering::Relaxed) == pack(key.generation, IDLE)
    }

    /// Shared access to the connection of an owned slot.
    ///
    /// # Safety
    /// The caller owns slot `index`, it is BUSY, and no `&mut` to the
    /// connection is live.
    #[inline(always)]
    pub(crate) unsafe fn conn(&self, index: u32) -> &C {
        // SAFETY: the caller owns the filled slot (I1), so the cell is `Some`
        // and nobody else touches it.
        let conn = self.slot(index).conn.with(|c| unsafe { (*c).as_ref() });
        conn.expect("latchless: an owned busy slot always holds a connection")
    }

    /// Exclusive access to the connection of an owned slot.
    ///
    /// # Safety
    /// The caller owns slot `index`, it is BUSY, and no other reference to
    /// the connection is live.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn conn_mut(&self, index: u32) -> &mut C {
        // SAFETY: as in `conn`, and the caller promises uniqueness.
        let conn = self.slot(index).conn.with_mut(|c| unsafe { (*c).as_mut() });
        conn.expect("latchless: an owned busy slot always holds a connection")
    }
}

impl<C> std::fmt::Debug for Slots<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("capacity", &self.capacity())
            .field("taken", &self.taken())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_fill_idle_claim_take_roundtrip() {
        let slots = Slots::<String>::new(2);
        let a = slots.reserve().unwrap();
        let b = slots.reserve().unwrap();
        assert_ne!(a, b);
        assert!(slots.reserve().is_none(), "two places only");
        assert_eq!(slots.taken(), 2);
        unsafe { slots.fill(a, "a".into(), 5) };
        let key = unsafe { slots.make_idle(a, 7) };
        assert!(slots.is_live(key));
        assert!(slots.claim(key));
        assert!(!slots.claim(key), "a key is claimed once");
        assert_eq!(unsafe { slots.conn(a) }, "a");
        let key2 = unsafe { slots.make_idle(a, 8) };
        assert!(!slots.is_live(key), "old key is stale after a new idle period");
        assert!(!slots.claim(key));
        assert!(slots.claim(key2));
        assert_eq!(unsafe { slots.take(a) }.as_deref(), Some("a"));
        unsafe { slots.unreserve(a) };
        unsafe { slots.unreserve(b) };
        assert_eq!(slots.taken(), 0);
    }
}
