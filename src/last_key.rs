//! A thread's last key: the keyed pool's entry that this thread took a
//! connection from in its last gets, held so that its next `get` of the
//! same key reaches the key's pool without a map lookup (DESIGN.md, "Pools
//! per host").
//!
//! # Why
//!
//! A map lookup (the map's epoch guard, hashing, probing, comparing the
//! key) costs as much as the key's pool's own fast path; a thread that
//! serves one key many times in a row (a connection per worker to its
//! upstream, a shard's writer) can skip it. The slot is a strong reference
//! so that nothing has to protect it while it is read: no guard, no fence,
//! no read-modify-write on the hit. What it costs instead: a thread keeps
//! one key's pool alive until it asks for another key of that keyed pool
//! twice in a row, asks another keyed pool, or exits; a key forgotten or
//! evicted meanwhile is closed (no connection is kept), only its empty
//! pool's memory waits.
//!
//! # Invariants kept
//!
//! - The slot is empty or holds one strong reference (`Arc::into_raw`) to
//!   an entry of the keyed pool whose id is `owner`, with the function that
//!   gives that reference back. Ids are never reused ([`new_id`]), and a
//!   keyed pool stores entries of one type only, so the entry is read back
//!   as the type it was stored as ([`take`]'s caller names it by the id).
//! - No reference stays in the slot while it is used: [`take`] moves it
//!   out and [`put`] moves it back, so a re-entrant keyed `get` on this
//!   thread (a connection's `Drop` run by the hit) finds the slot empty,
//!   never a reference that it could give back under its user.
//! - The slot is filled only after two lookups in a row on the map missed
//!   it for the same entry ([`seen`]), so a thread that alternates keys
//!   does not trade references (two read-modify-writes on counts other
//!   threads share) on every `get`.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A strong reference to an entry, type-erased.
#[derive(Clone, Copy)]
struct Held {
    owner: u64,
    entry: *const (),
    give_back: unsafe fn(*const ()),
}

struct Slot {
    held: Cell<Option<Held>>,
    /// The last entry a map lookup found (keyed pool id, address), not
    /// counted and never read through: only compared.
    seen: Cell<(u64, usize)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            // SAFETY: `h` was stored by `put`, with the `give_back` of the
            // type `into_raw` erased, and has not been given back since
            // (taken out of the slot here, as by `take`).
            unsafe { (h.give_back)(h.entry) }
        }
    }
}

std::thread_local! {
    static SLOT: Slot = const {
        Slot {
            held: Cell::new(None),
            seen: Cell::new((0, 0)),
        }
    };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A keyed pool's id, never given to another.
pub(crate) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Drops a reference made by `Arc::into_raw::<T>`.
///
/// # Safety
///
/// `entry` came from `Arc::<T>::into_raw` and is given back once.
unsafe fn give_back<T>(entry: *const ()) {
    // SAFETY: the caller's contract.
    drop(unsafe { Arc::from_raw(entry.cast::<T>()) });
}

/// This thread's entry of keyed pool `owner`, moved out of the slot, if it
/// holds one. `T` must be the entry type of that keyed pool.
#[inline(always)]
pub(crate) fn take<T>(owner: u64) -> Option<Arc<T>> {
    SLOT.try_with(|s| {
        let h = s.held.get().filter(|h| h.owner == owner)?;
        s.held.set(None);
        // SAFETY: the slot held a reference of keyed pool `owner`, made by
        // `Arc::<T>::into_raw` in `put` with that pool's entry type, which
        // is `T` (the caller's contract; ids are never reused); it is moved
        // out of the slot here, so it is given back once.
        Some(unsafe { Arc::from_raw(h.entry.cast::<T>()) })
    })
    .ok()
    .flatten()
}

/// Moves `entry` (of keyed pool `owner`) into this thread's slot, giving
/// back what the slot held; drops it instead where a re-entrant `get`
/// filled the slot meanwhile or the thread is exiting.
#[inline(always)]
pub(crate) fn put<T: Send + Sync + 'static>(owner: u64, entry: Arc<T>) {
    let _ = SLOT.try_with(move |s| store(s, owner, entry));
}

/// Puts back an entry taken by [`take`] that served this `get`: the next
/// map miss of the same entry starts counting again.
#[inline(always)]
pub(crate) fn put_after_hit<T: Send + Sync + 'static>(owner: u64, entry: Arc<T>) {
    let _ = SLOT.try_with(move |s| {
        s.seen.set((0, 0));
        store(s, owner, entry);
    });
}

#[inline(always)]
fn store<T: Send + Sync + 'static>(s: &Slot, owner: u64, entry: Arc<T>) {
    if s.held.get().is_some() {
        drop(entry);
        return;
    }
    s.held.set(Some(Held {
        owner,
        entry: Arc::into_raw(entry).cast(),
        give_back: give_back::<T>,
    }));
}

/// A map lookup found `entry` of keyed pool `owner`: the slot takes it if
/// the lookup before found it too (module invariants), giving back what
/// it held.
#[inline]
pub(crate) fn seen<T: Send + Sync + 'static>(owner: u64, entry: &Arc<T>) {
    let at = (owner, Arc::as_ptr(entry).addr());
    let again = SLOT.try_with(|s| s.seen.replace(at) == at).unwrap_or(false);
    if again {
        fill(owner, Arc::clone(entry));
    }
}

#[cold]
fn fill<T: Send + Sync + 'static>(owner: u64, entry: Arc<T>) {
    let old = SLOT.try_with(|s| s.held.take()).ok().flatten();
    if let Some(h) = old {
        // SAFETY: stored by `put` with its own `give_back`, and moved out
        // of the slot just now, so given back once.
        unsafe { (h.give_back)(h.entry) }
    }
    put(owner, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counted(Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_slot_fills_on_the_second_lookup_in_a_row_and_serves_its_owner_only() {
        let (a, b) = (new_id(), new_id());
        let drops = Arc::new(AtomicU64::new(0));
        let e = Arc::new(Counted(Arc::clone(&drops)));
        seen(a, &e);
        assert!(take::<Counted>(a).is_none(), "one lookup does not fill");
        seen(a, &e);
        assert_eq!(Arc::strong_count(&e), 2, "the second fills");
        assert!(take::<Counted>(b).is_none(), "another keyed pool's get");
        let got = take::<Counted>(a).expect("its owner's get");
        assert!(Arc::ptr_eq(&got, &e));
        assert!(take::<Counted>(a).is_none(), "moved out while in use");
        put_after_hit(a, got);
        // A hit clears the count: one more lookup of another entry, then
        // this one, does not trade the slot's reference.
        let f = Arc::new(Counted(Arc::clone(&drops)));
        seen(a, &f);
        seen(a, &e);
        assert_eq!(Arc::strong_count(&f), 1);
        seen(a, &f);
        seen(a, &f);
        assert_eq!(Arc::strong_count(&f), 2, "f took the slot");
        assert_eq!(Arc::strong_count(&e), 1, "e was given back");
        drop(e);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(f);
        assert_eq!(drops.load(Ordering::Relaxed), 1, "the slot keeps f");
    }

    #[test]
    fn a_put_into_a_slot_filled_meanwhile_drops_its_entry() {
        let a = new_id();
        let drops = Arc::new(AtomicU64::new(0));
        let e = Arc::new(Counted(Arc::clone(&drops)));
        seen(a, &e);
        seen(a, &e);
        let got = take::<Counted>(a).expect("filled");
        // A re-entrant get fills the slot while `got` is in use.
        let f = Arc::new(Counted(Arc::clone(&drops)));
        seen(a, &f);
        seen(a, &f);
        put(a, got);
        assert_eq!(Arc::strong_count(&e), 1, "the slot kept f, gave e back");
        assert_eq!(Arc::strong_count(&f), 2);
    }

    #[test]
    fn a_thread_gives_its_entry_back_when_it_exits() {
        let drops = Arc::new(AtomicU64::new(0));
        let e = Arc::new(Counted(Arc::clone(&drops)));
        let in_thread = Arc::clone(&e);
        std::thread::spawn(move || {
            let a = new_id();
            seen(a, &in_thread);
            seen(a, &in_thread);
        })
        .join()
        .unwrap();
        assert_eq!(Arc::strong_count(&e), 1);
    }
}
