//! A thread's last keys: the keyed-pool entries that this thread took
//! connections from lately, held so that its next `get` of one of those
//! keys reaches the key's pool without a map lookup (DESIGN.md, "Pools
//! per host").
//!
//! # Why
//!
//! A map lookup (the map's epoch guard, hashing, probing, comparing the
//! key) costs as much as the key's pool's own fast path; a thread that
//! serves a few keys many times (a worker forwarding to a handful of
//! upstreams, a shard's writer) can skip it. Each way of the slot is a
//! strong reference so that nothing has to protect it while it is read:
//! no guard, no fence, no read-modify-write on the hit. What it costs
//! instead: a thread keeps up to [`WAYS`] keys' pools alive until other
//! keys take their ways or the thread exits; a key forgotten or evicted
//! meanwhile is closed (no connection is kept), only its empty pool's
//! memory waits.
//!
//! # Invariants kept
//!
//! - Each way is empty or holds one strong reference (`Arc::into_raw`) to
//!   an entry of the keyed pool whose id is `owner`, with the function that
//!   gives that reference back. Ids are never reused ([`new_id`]), and a
//!   keyed pool stores entries of one type only, so the entry is read back
//!   as the type it was stored as ([`take`]'s caller names it by the id).
//! - No reference stays in a way while it is used, compared included:
//!   [`take`] moves it out before it asks the caller's comparison (user
//!   code: a key's `PartialEq`) and moves it back if it does not match,
//!   and [`put`] moves a used one back. A re-entrant keyed `get` on this
//!   thread (from that comparison, or from a connection's `Drop` run by the
//!   hit) finds the way empty, never a reference that it could give back
//!   under its user. A way filled meanwhile keeps what it holds, and the
//!   reference being put back is dropped.
//! - A way is filled only when a map lookup finds an entry that one of the
//!   thread's last [`WAYS`] map lookups found too ([`seen`]), so a thread
//!   that goes round more keys than there are ways does not trade
//!   references (two read-modify-writes on counts other threads share) on
//!   every `get`, and one that goes round fewer ends with all of them held.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many entries a thread keeps, across all keyed pools: enough for a
/// worker that forwards to a handful of upstreams in turn; every way is
/// compared on a miss of the ways before it.
pub(crate) const WAYS: usize = 4;

/// A way: empty while `owner` is 0, else one strong reference to an
/// entry, type-erased (kept in separate cells so that a miss reads one
/// word).
struct Way {
    owner: Cell<u64>,
    entry: Cell<*const ()>,
    give_back: Cell<GiveBack>,
}

/// Gives back a reference made by `Arc::into_raw` (`give_back::<T>`).
type GiveBack = unsafe fn(*const ());

/// No keyed pool's id.
const EMPTY: u64 = 0;

impl Way {
    const fn new() -> Self {
        Self {
            owner: Cell::new(EMPTY),
            entry: Cell::new(std::ptr::null()),
            give_back: Cell::new(nothing),
        }
    }

    /// Moves the reference out, if any: `(entry, give_back)`.
    fn take(&self) -> Option<(*const (), GiveBack)> {
        if self.owner.replace(EMPTY) == EMPTY {
            return None;
        }
        Some((self.entry.get(), self.give_back.get()))
    }

    fn set(&self, owner: u64, entry: *const (), give_back: GiveBack) {
        self.owner.set(owner);
        self.entry.set(entry);
        self.give_back.set(give_back);
    }
}

/// An empty way's `give_back`, never called.
unsafe fn nothing(_: *const ()) {}

struct Slot {
    ways: [Way; WAYS],
    /// The way a fill takes when none is empty (round robin).
    victim: Cell<usize>,
    /// How many ways were ever filled: fills take the first empty way, so
    /// the ways from here on are empty, and a miss asks none of them (a
    /// thread that filled at most one asks only the way it guessed).
    used: Cell<usize>,
    /// The way of the last hit.
    last_hit: Cell<usize>,
    /// The way asked first: the one that followed the last hit's way the
    /// last time (`after[last_hit]`, read as the hit is made, so that the
    /// next `get` reads one cell before its way).
    next: Cell<usize>,
    /// For each way, the way hit after it the last time: asked first.
    after: [Cell<usize>; WAYS],
    /// The last entries map lookups found (keyed pool id, address), not
    /// counted and never read through: only compared.
    seen: [Cell<(u64, usize)>; WAYS],
    /// Where the next lookup is written in `seen`.
    seen_next: Cell<usize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        for way in &self.ways {
            if let Some((entry, give_back)) = way.take() {
                // SAFETY: stored by `store` with the `give_back` of the
                // type `into_raw` erased, and not given back since (moved
                // out of its way here).
                unsafe { give_back(entry) }
            }
        }
    }
}

impl Slot {
    /// A hit on way `i`: the next `get` asks first the way that followed
    /// `i` the last time.
    #[inline(always)]
    fn hit(&self, i: usize) {
        self.last_hit.set(i);
        self.next.set(self.after[i].get());
    }
}

std::thread_local! {
    static SLOT: Slot = const {
        Slot {
            ways: [const { Way::new() }; WAYS],
            victim: Cell::new(0),
            used: Cell::new(0),
            last_hit: Cell::new(0),
            next: Cell::new(0),
            after: [const { Cell::new(0) }; WAYS],
            seen: [const { Cell::new((0, 0)) }; WAYS],
            seen_next: Cell::new(0),
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

/// This thread's entry of keyed pool `owner` that `matches`, moved out of
/// its way, with the way's index for [`put`]. `T` must be the entry type
/// of that keyed pool. The way that followed the last hit's way the last
/// time is asked first (the same way for a thread that repeats a key, the
/// next key's for one that goes round a few), then the others.
#[inline(always)]
pub(crate) fn take<T>(owner: u64, matches: impl Fn(&T) -> bool) -> Option<(Arc<T>, usize)> {
    SLOT.try_with(|s| {
        let guess = s.next.get() % WAYS;
        // SAFETY: `T` is keyed pool `owner`'s entry type (the caller's
        // contract).
        if let Some(e) = unsafe { take_from(s, guess, owner, &matches) } {
            s.hit(guess);
            return Some((e, guess));
        }
        if s.used.get() <= 1 {
            // No way but `guess` (0) was ever filled.
            return None;
        }
        scan(s, guess, owner, &matches)
    })
    .ok()
    .flatten()
}

/// The ways other than `guess`, for [`take`], from the one after it; a
/// hit is learnt as the way that follows the last hit's.
#[cold]
#[inline(never)]
fn scan<T>(
    s: &Slot,
    guess: usize,
    owner: u64,
    matches: &dyn Fn(&T) -> bool,
) -> Option<(Arc<T>, usize)> {
    let used = s.used.get();
    for k in 1..WAYS {
        let i = (guess + k) % WAYS;
        if i >= used {
            continue;
        }
        // SAFETY: as in `take`.
        if let Some(e) = unsafe { take_from(s, i, owner, matches) } {
            s.after[s.last_hit.get() % WAYS].set(i);
            s.hit(i);
            return Some((e, i));
        }
    }
    None
}

/// Way `i`'s entry if it is keyed pool `owner`'s and `matches`, moved out.
///
/// # Safety
///
/// `T` is keyed pool `owner`'s entry type.
#[inline(always)]
unsafe fn take_from<T, F: Fn(&T) -> bool + ?Sized>(
    s: &Slot,
    i: usize,
    owner: u64,
    matches: &F,
) -> Option<Arc<T>> {
    let way = &s.ways[i];
    if way.owner.get() != owner {
        return None;
    }
    way.owner.set(EMPTY);
    let (entry, give_back) = (way.entry.get(), way.give_back.get());
    // SAFETY: the way held a reference of keyed pool `owner`, made by
    // `Arc::<T>::into_raw` in `store` with that pool's entry type, which is
    // `T` (the caller's contract; ids are never reused); moved out of the
    // way here, it stays alive while it is borrowed, whatever `matches`
    // does.
    if matches(unsafe { &*entry.cast::<T>() }) {
        // SAFETY: as above; the reference moves to the caller.
        return Some(unsafe { Arc::from_raw(entry.cast::<T>()) });
    }
    if way.owner.get() == EMPTY {
        way.set(owner, entry, give_back);
    } else {
        // SAFETY: moved out of its way above and filled meanwhile by a
        // re-entrant `get`: given back once, here.
        unsafe { give_back(entry) }
    }
    None
}

/// Moves `entry` (of keyed pool `owner`, taken by [`take`] from way
/// `way`) back; drops it instead where a re-entrant `get` filled the way
/// meanwhile or the thread is exiting.
#[inline(always)]
pub(crate) fn put<T: Send + Sync + 'static>(owner: u64, entry: Arc<T>, way: usize) {
    let left = SLOT.try_with(|s| {
        let way = &s.ways[way % WAYS];
        if way.owner.get() != EMPTY {
            return Some(entry);
        }
        way.set(owner, Arc::into_raw(entry).cast(), give_back::<T>);
        None
    });
    // Dropped out here, so that the thread-local access stays small enough
    // to be inlined into the hit.
    drop(left);
}

#[inline(always)]
fn store<T: Send + Sync + 'static>(way: &Way, owner: u64, entry: Arc<T>) {
    if way.owner.get() != EMPTY {
        drop(entry);
        return;
    }
    way.set(owner, Arc::into_raw(entry).cast(), give_back::<T>);
}

/// A map lookup found `entry` of keyed pool `owner`: a way takes it if one
/// of the thread's last [`WAYS`] lookups found it too (module invariants).
#[inline]
pub(crate) fn seen<T: Send + Sync + 'static>(owner: u64, entry: &Arc<T>) {
    let at = (owner, Arc::as_ptr(entry).addr());
    let again = SLOT
        .try_with(|s| {
            if s.seen.iter().any(|c| c.get() == at) {
                return true;
            }
            let n = s.seen_next.get();
            s.seen[n].set(at);
            s.seen_next.set((n + 1) % WAYS);
            false
        })
        .unwrap_or(false);
    if again {
        fill(owner, Arc::clone(entry));
    }
}

/// Puts `entry` into an empty way, or in place of the next victim's,
/// which is given back.
#[cold]
fn fill<T: Send + Sync + 'static>(owner: u64, entry: Arc<T>) {
    let old = SLOT
        .try_with(move |s| {
            let way = match s.ways.iter().position(|w| w.owner.get() == EMPTY) {
                Some(i) => i,
                None => {
                    let v = s.victim.get();
                    s.victim.set((v + 1) % WAYS);
                    v
                }
            };
            s.used.set(s.used.get().max(way + 1));
            let old = s.ways[way].take();
            store(&s.ways[way], owner, entry);
            old
        })
        .ok()
        .flatten();
    if let Some((entry, give_back)) = old {
        // SAFETY: stored by `store` with its own `give_back`, and moved
        // out of its way just now, so given back once.
        unsafe { give_back(entry) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counted(u32, Arc<AtomicU64>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn entries(n: u32) -> (Vec<Arc<Counted>>, Arc<AtomicU64>) {
        let drops = Arc::new(AtomicU64::new(0));
        let es = (0..n)
            .map(|k| Arc::new(Counted(k, Arc::clone(&drops))))
            .collect();
        (es, drops)
    }

    fn key(k: u32) -> impl Fn(&Counted) -> bool {
        move |c| c.0 == k
    }

    #[test]
    fn a_way_fills_on_a_second_lookup_and_serves_its_owner_and_key_only() {
        let (a, b) = (new_id(), new_id());
        let (es, _) = entries(2);
        seen(a, &es[0]);
        assert!(take(a, key(0)).is_none(), "one lookup does not fill");
        seen(a, &es[1]);
        seen(a, &es[0]);
        assert_eq!(Arc::strong_count(&es[0]), 2, "found again: filled");
        assert_eq!(Arc::strong_count(&es[1]), 1, "found once");
        assert!(take::<Counted>(b, key(0)).is_none(), "another keyed pool");
        assert!(take(a, key(1)).is_none(), "another key");
        let (got, way) = take(a, key(0)).expect("its key");
        assert!(Arc::ptr_eq(&got, &es[0]));
        assert!(take(a, key(0)).is_none(), "moved out while in use");
        put(a, got, way);
        assert_eq!(Arc::strong_count(&es[0]), 2, "back in its way");
        seen(a, &es[1]);
        let (got, way) = take(a, key(1)).expect("the second key's way");
        put(a, got, way);
        assert!(take(a, key(0)).is_some_and(|(e, w)| {
            put(a, e, w);
            true
        }));
    }

    #[test]
    fn a_thread_that_goes_round_more_keys_than_ways_trades_no_references() {
        let a = new_id();
        let (es, _) = entries(WAYS as u32 + 1);
        for _ in 0..3 {
            for e in &es {
                seen(a, e);
            }
        }
        assert!(es.iter().all(|e| Arc::strong_count(e) == 1));
        // Round fewer keys than ways: each is held after its second look.
        for _ in 0..2 {
            for e in &es[..WAYS] {
                seen(a, e);
            }
        }
        assert!(es[..WAYS].iter().all(|e| Arc::strong_count(e) == 2));
    }

    #[test]
    fn a_thread_that_goes_round_its_keys_compares_one_key_per_hit() {
        let a = new_id();
        let (es, _) = entries(WAYS as u32);
        for e in &es {
            seen(a, e);
            seen(a, e);
        }
        let compared = Cell::new(0);
        let round = |first: bool| {
            for k in 0..WAYS as u32 {
                compared.set(0);
                let (e, way) = take(a, |c: &Counted| {
                    compared.set(compared.get() + 1);
                    c.0 == k
                })
                .expect("held in a way");
                assert_eq!(e.0, k);
                put(a, e, way);
                if !first {
                    assert_eq!(compared.get(), 1, "key {k}: the next way first");
                }
            }
        };
        // The first round learns the order; every way is found and put
        // back in place.
        round(true);
        round(false);
        round(false);
        // One key again and again: its own way first.
        for _ in 0..3 {
            compared.set(0);
            let (e, way) = take(a, |c: &Counted| {
                compared.set(compared.get() + 1);
                c.0 == 2
            })
            .expect("held");
            put(a, e, way);
        }
        assert_eq!(compared.get(), 1, "the same way again");
        assert!(es.iter().all(|e| Arc::strong_count(e) == 2));
    }

    #[test]
    fn a_fill_with_every_way_taken_gives_a_victim_back() {
        let a = new_id();
        let (es, drops) = entries(WAYS as u32 + 1);
        for e in &es[..WAYS] {
            seen(a, e);
            seen(a, e);
        }
        assert!(es[..WAYS].iter().all(|e| Arc::strong_count(e) == 2));
        let last = &es[WAYS];
        seen(a, last);
        seen(a, last);
        assert_eq!(Arc::strong_count(last), 2, "filled");
        let held: usize = es.iter().map(|e| Arc::strong_count(e) - 1).sum();
        assert_eq!(held, WAYS, "one victim given back");
        assert_eq!(drops.load(Ordering::Relaxed), 0, "only a reference");
    }

    #[test]
    fn fills_past_the_ways_take_the_ways_in_turn() {
        let a = new_id();
        let (es, _) = entries(2 * WAYS as u32);
        for e in &es {
            seen(a, e);
            seen(a, e);
        }
        // Each fill past the first four gave back the oldest way's entry.
        assert!(es[..WAYS].iter().all(|e| Arc::strong_count(e) == 1));
        assert!(es[WAYS..].iter().all(|e| Arc::strong_count(e) == 2));
    }

    #[test]
    fn a_put_into_a_way_filled_meanwhile_drops_its_entry() {
        let a = new_id();
        let (es, _) = entries(2);
        seen(a, &es[0]);
        seen(a, &es[0]);
        let (got, way) = take(a, key(0)).expect("filled");
        // A re-entrant get fills the emptied way while `got` is in use.
        seen(a, &es[1]);
        seen(a, &es[1]);
        put(a, got, way);
        assert_eq!(Arc::strong_count(&es[0]), 1, "dropped, not kept");
        assert_eq!(Arc::strong_count(&es[1]), 2);
    }

    #[test]
    fn a_comparison_that_asks_again_finds_the_way_empty() {
        let a = new_id();
        let (es, _) = entries(1);
        seen(a, &es[0]);
        seen(a, &es[0]);
        let inner = Cell::new(None);
        let got = take(a, |c: &Counted| {
            inner.set(Some(take(a, key(c.0)).is_some()));
            c.0 == 0
        });
        assert_eq!(inner.get(), Some(false), "the way was empty meanwhile");
        let (got, way) = got.expect("matched");
        put(a, got, way);
        assert_eq!(Arc::strong_count(&es[0]), 2);
    }

    #[test]
    fn a_thread_gives_its_entries_back_when_it_exits() {
        let (es, _) = entries(WAYS as u32);
        let in_thread = es.clone();
        std::thread::spawn(move || {
            let a = new_id();
            for e in &in_thread {
                seen(a, e);
                seen(a, e);
            }
            assert!(in_thread.iter().all(|e| Arc::strong_count(e) == 3));
        })
        .join()
        .unwrap();
        assert!(es.iter().all(|e| Arc::strong_count(e) == 1));
    }
}
