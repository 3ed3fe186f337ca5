//! The idle set: per shard, one atomic "hot" word holding the most recently
//! released key, in front of a `CachePadded<ArrayQueue<SlotKey>>`.
//!
//! In front of the shards sits each thread's own parked connection (DESIGN.md,
//! "The thread-affine fast path"): a release reaches the shards only when its
//! thread's cache is taken, and an acquire only when its thread has nothing
//! parked. Parked keys never enter the shards.
//!
//! A thread releases to and acquires from its *home* shard first and steals
//! from the others only when its home is empty, so threads on different
//! cores mostly touch different cache lines. The home shard is the
//! thread's hash (`tid.rs`) mapped onto the shard count with one multiply
//! (Lemire's "fastrange"), costing a thread-local read, not a
//! `sched_getcpu()` system call (whose answer is stale after migration).
//!
//! The hot word is HikariCP's thread-local "last returned" list cut to one
//! entry per shard: a release that finds it empty parks its key there with
//! one CAS, and the next acquire takes it with one swap, skipping the
//! queue's head/tail/stamp protocol (measured with `benches/benches/acquire.rs`
//! when it was added: `try_get`+drop went from 2.1x to 1.4x the time of a
//! bare queue pop+push; see BENCHMARKS.md for today's ratio). It also makes
//! the hottest connection the one reused, so surplus connections queue
//! behind it and can age out under light load, where a pure FIFO would keep
//! every connection warm.
//!
//! # Invariants kept
//!
//! - A current key (one whose slot reads `IDLE(g)`) is in exactly one place:
//!   one hot word or one queue. Stale keys may also sit there; the popper's
//!   claim CAS skips them.
//! - A push never loses a current key: the queues together have room for
//!   more keys than `max_size` (see [`Shards::room_per_shard`]), so when all
//!   are full while the pusher holds one more current key, some queued key
//!   is stale (there are at most `max_size` connections), and
//!   [`Shards::push`] rotates through the queues until it evicts one.
//! - `stale` counts the stale keys in the set, so that [`Shards::idle`]
//!   (keys queued minus stale ones) is exact whenever the pool is quiet.
//!   A key goes stale only when maintenance claims its slot in place
//!   (`Slots::claim_in_place`; a generation wrap after 2^43 idle periods
//!   aside), and maintenance counts it with [`Shards::count_stale`]
//!   *before* that claim (uncounting it if the claim fails), so nobody can
//!   find a key stale before it is counted. Every path that drops a stale
//!   key from the set uncounts it: a popper whose claim fails
//!   ([`Shards::forget_stale`]) and a push that evicts it. The count is
//!   kept in wrapping arithmetic and read as signed, so an uncount that
//!   overtakes its count (no ordering forbids it) reads as -1 for a moment
//!   and is never lost: a saturating count dropped such decrements and
//!   `idle` drifted low for good (issue 10, item 3). All of this is on cold
//!   paths; the uncontended pop and push never touch the count.
//! - Ordering, ours alone: every push ends in a SeqCst operation of this
//!   module's own: the hot word's SeqCst CAS, or, when the key went into a
//!   queue, a SeqCst fence after it ([`queued`]). The pool's lost-wake-up
//!   argument (DESIGN.md, "The lost-wake-up argument") rests on that and on
//!   the waiter's own SeqCst fence in `register` before its pops, never on
//!   `ArrayQueue`'s internal orderings (its SeqCst tail CAS in `push`, the
//!   fence on `pop`'s empty path), which are not crossbeam's API and which
//!   the loom stand-in queue does not model. The fence costs only the
//!   queue branch: the uncontended release parks its key in the empty hot
//!   word, whose CAS is the SeqCst operation.
//! - A pop looks at the queue (`is_empty`: two loads) before popping, so
//!   an empty shard costs no fence of crossbeam's. A look after the
//!   waiter's fence sees every push whose fence came before it in S, so
//!   it reads "empty" only where `pop` would have found nothing too. (The
//!   loom stand-in's look always says "not empty": it keeps a model's
//!   operations what they were.)

use crossbeam_utils::CachePadded;

use crate::slots::SlotKey;
use crate::sync::{ArrayQueue, AtomicU64, AtomicUsize, Ordering, fence, mutant};
use crate::tid::home_index;

/// One shard: the hot word (a packed [`SlotKey`], 0 when empty) and the
/// FIFO behind it, each on its own cache lines.
struct Shard {
    hot: CachePadded<AtomicU64>,
    queue: ArrayQueue<SlotKey>,
}

impl Shard {
    #[inline(always)]
    fn pop(&self) -> Option<SlotKey> {
        // Load first: a swap on an empty word would still take the line
        // exclusively. Acquire pairs with the Release of the parking CAS.
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = if mutant("relaxed_handover") {
            Ordering::Relaxed
        } else {
            Ordering::Acquire
        };
        if self.hot.load(Ordering::Relaxed) != 0 {
            if let Some(k) = SlotKey::from_bits(self.hot.swap(0, order)) {
                return Some(k);
            }
        }
        // Look before popping: crossbeam's `pop` ends its empty path with
        // a SeqCst fence, one per empty shard per search, which the
        // lost-wake-up argument does not need (module invariants: the
        // waiter's own fence comes before its search).
        if self.queue.is_empty() {
            return None;
        }
        self.queue.pop()
    }

    fn len(&self) -> usize {
        usize::from(self.hot.load(Ordering::Relaxed) != 0) + self.queue.len()
    }
}

/// Ends a push that went into a queue: a SeqCst fence of ours, so that the
/// releaser's re-check (SeqCst loads of the waiter tokens and `closed`)
/// comes after the key's publication in the total order S whatever the
/// queue does inside (module invariants). On x86-64 one `mfence`, on the
/// queue branch only.
#[inline(always)]
fn queued() {
    fence(Ordering::SeqCst);
}

/// The sharded idle set.
pub(crate) struct Shards {
    shards: Box<[CachePadded<Shard>]>,
    /// Stale keys in the set, as a wrapping signed count (module docs).
    stale: CachePadded<AtomicUsize>,
}

impl Shards {
    /// `shards` queues with room for `per_shard` keys each (both >= 1).
    pub(crate) fn new(shards: usize, per_shard: usize) -> Self {
        Self {
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(Shard {
                        hot: CachePadded::new(AtomicU64::new(0)),
                        queue: ArrayQueue::new(per_shard),
                    })
                })
                .collect(),
            stale: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Room per shard queue for a pool of `max_size` split `shards` ways:
    /// twice a fair share plus slack, but never more than `max_size`, so
    /// memory stays O(`max_size`) however many shards (a fuzzer found
    /// `shards * max_size` keys allocating gigabytes). All queues together
    /// hold more keys than there are connections, which `push_slow` needs.
    pub(crate) fn room_per_shard(max_size: usize, shards: usize) -> usize {
        max_size
            .min(2 * max_size.div_ceil(shards.max(1)) + 16)
            .max(1)
    }

    /// Number of shards.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }

    /// The calling thread's home shard.
    #[inline(always)]
    fn home(&self) -> usize {
        home_index(self.shards.len())
    }

    /// Pops a key, home shard first, then the others in order. The key may
    /// be stale: the caller claims it and skips it if the claim fails.
    #[inline]
    pub(crate) fn pop(&self) -> Option<SlotKey> {
        let home = self.home();
        if let Some(k) = self.shards[home].pop() {
            return Some(k);
        }
        self.steal(home)
    }

    #[cold]
    fn steal(&self, home: usize) -> Option<SlotKey> {
        let n = self.shards.len();
        // The shards after `home`, then those before it (no division).
        (home + 1..n).chain(0..home.min(n)).find_map(|i| {
            let victim = &self.shards[i];
            // loom mutant: steal_without_swap (the hot word taken with a
            // load and a store), see loom-tests/run-mutants.sh
            if mutant("steal_without_swap") {
                let k = SlotKey::from_bits(victim.hot.load(Ordering::Acquire));
                victim.hot.store(0, Ordering::Relaxed);
                return k.or_else(|| victim.queue.pop());
            }
            victim.pop()
        })
    }

    /// Pushes a live key, home shard first. `is_live` tells stale keys from
    /// live ones for the rare case in which every shard is full.
    #[inline]
    pub(crate) fn push(&self, key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let home = self.home();
        let shard = &self.shards[home];
        // SeqCst: this RMW is the releaser's half of the lost-wake-up
        // argument (module docs); its Release side publishes the slot to the
        // swap in `Shard::pop`.
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = if mutant("relaxed_handover") {
            Ordering::Relaxed
        } else {
            Ordering::SeqCst
        };
        if shard.hot.load(Ordering::Relaxed) == 0
            && shard
                .hot
                .compare_exchange(0, key.to_bits(), order, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        if let Err(key) = shard.queue.push(key) {
            self.push_slow(home, key, is_live);
        }
        queued();
    }

    /// Pushes a live key to the back of the home queue, bypassing the hot
    /// word (for a connection that should not be the next one out). Ends in
    /// a SeqCst fence of ours, as [`push`](Self::push) does.
    pub(crate) fn push_back(&self, key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let home = self.home();
        if let Err(key) = self.shards[home].queue.push(key) {
            self.push_slow(home, key, is_live);
        }
        queued();
    }

    #[cold]
    fn push_slow(&self, home: usize, mut key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let n = self.shards.len();
        for i in 1..n {
            match self.shards[(home + i) % n].queue.push(key) {
                Ok(()) => return,
                Err(k) => key = k,
            }
        }
        // Every shard is full, so the queues hold stale keys (they have
        // room for more keys than there are connections; see the module
        // invariants). Rotate through them: push at the back, evicting the
        // front, until what falls out is stale.
        let mut i = home;
        loop {
            match self.shards[i].queue.force_push(key) {
                None => return,
                Some(out) if !is_live(out) => {
                    // A stale key left the set (module invariants).
                    self.forget_stale();
                    return;
                }
                Some(out) => {
                    key = out;
                    i = (i + 1) % n;
                }
            }
        }
    }

    /// Keys currently queued, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Counts a key that is about to go stale: call it before the claim
    /// that makes the key stale, and [`uncount_stale`](Self::uncount_stale)
    /// if that claim fails.
    pub(crate) fn count_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a [`count_stale`](Self::count_stale) whose claim failed.
    pub(crate) fn uncount_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Uncounts a stale key a popper found (its claim failed) and dropped.
    /// Wrapping: it may come before the count (module invariants).
    pub(crate) fn forget_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Idle connections: keys queued minus stale keys. Exact while nothing
    /// is in flight; otherwise off by the operations in flight, never below
    /// zero.
    pub(crate) fn idle(&self) -> usize {
        // Wrapping count read as signed: -1 while an uncount is ahead of
        // its count, which reads as none stale.
        let stale = usize::try_from(self.stale.load(Ordering::Relaxed) as isize).unwrap_or(0);
        self.len().saturating_sub(stale)
    }
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("shards", &self.count())
            .field("queued", &self.len())
            .field("idle", &self.idle())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32, generation: u64) -> SlotKey {
        SlotKey::new(index, generation)
    }

    #[test]
    fn pop_steals_from_other_shards() {
        let s = Shards::new(4, 4);
        // Push from another thread, whose home shard may differ from ours.
        std::thread::scope(|sc| {
            sc.spawn(|| s.push(key(1, 1), |_| true));
        });
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop(), Some(key(1, 1)));
        assert_eq!(s.pop(), None);
    }

    #[test]
    fn full_shards_evict_a_stale_key_not_a_live_one() {
        let s = Shards::new(1, 2);
        s.push(key(9, 1), |_| true); // parks in the hot word
        s.push(key(0, 1), |_| true);
        s.push(key(1, 1), |_| true);
        assert_eq!(s.len(), 3);
        // Key (0, 1) is stale, the others live: pushing (2, 1) must evict (0, 1).
        s.push(key(2, 1), |k| k.index() != 0);
        let mut left = vec![s.pop().unwrap(), s.pop().unwrap(), s.pop().unwrap()];
        left.sort_by_key(|k| k.index());
        assert_eq!(left, vec![key(1, 1), key(2, 1), key(9, 1)]);
        assert_eq!(s.pop(), None);
    }

    #[test]
    fn evicting_a_stale_key_uncounts_it() {
        let s = Shards::new(1, 2);
        for i in 0..3 {
            s.push(key(i, 1), |_| true);
        }
        // Maintenance closes 0 and 1 in place: counted, keys still queued.
        s.count_stale();
        s.count_stale();
        assert_eq!((s.len(), s.idle()), (3, 1));
        // Key 0 sits in the hot word, 1 and 2 fill the queue: a new key
        // evicts stale key 1, which is uncounted; stale key 0 stays.
        s.push(key(3, 1), |k| k.index() >= 2);
        assert_eq!((s.len(), s.idle()), (3, 2), "1 evicted, 0 still queued");
        // A popper drops the other stale key when its claim fails.
        let mut live = 0;
        while let Some(k) = s.pop() {
            if k.index() < 2 {
                s.forget_stale();
            } else {
                live += 1;
            }
        }
        assert_eq!(live, 2);
        assert_eq!((s.len(), s.idle()), (0, 0));
        s.push(key(2, 2), |_| true);
        assert_eq!(s.idle(), 1, "no stale count left over");
    }

    #[test]
    fn an_uncount_that_overtakes_its_count_is_not_lost() {
        let s = Shards::new(1, 4);
        s.push(key(0, 1), |_| true);
        s.push(key(1, 1), |_| true);
        // A popper finds key 0 stale and drops it before maintenance,
        // which claimed it in place, gets to count it.
        assert_eq!(s.pop(), Some(key(0, 1)));
        s.forget_stale();
        assert_eq!(s.idle(), 1, "-1 stale for a moment reads as none");
        s.count_stale();
        assert_eq!((s.len(), s.idle()), (1, 1), "exact once both are in");
        // A count taken back after a failed claim leaves no trace either.
        s.count_stale();
        s.uncount_stale();
        assert_eq!(s.idle(), 1);
    }

    #[test]
    fn a_stale_key_in_another_shard_is_found_when_every_queue_is_full() {
        let s = Shards::new(2, 1);
        // From one thread: key 0 parks in the home hot word, key 1 fills
        // the home queue, key 2 overflows into the other shard's queue.
        for i in 0..3 {
            s.push(key(i, 1), |_| true);
        }
        assert_eq!(s.len(), 3);
        // Only key 2, in the other shard, is stale: pushing key 9 rotates
        // key 1 out of the home queue into the other, evicting key 2.
        s.push(key(9, 1), |k| k.index() != 2);
        let mut left: Vec<u32> = std::iter::from_fn(|| s.pop()).map(|k| k.index()).collect();
        left.sort();
        assert_eq!(left, vec![0, 1, 9]);
    }

    #[test]
    fn room_per_shard_keeps_memory_linear_in_max_size() {
        assert_eq!(Shards::room_per_shard(8, 1), 8);
        assert_eq!(Shards::room_per_shard(10, 2), 10);
        let room = Shards::room_per_shard(65_536, 1024);
        assert!(room * 1024 < 4 * 65_536, "{room}");
        assert!(room * 1024 > 65_536, "more room than connections");
    }

    #[test]
    fn the_hot_word_serves_the_most_recent_release_first() {
        let s = Shards::new(1, 4);
        s.push(key(0, 1), |_| true);
        s.push(key(1, 1), |_| true);
        s.push(key(2, 1), |_| true);
        // (0) parked in the hot word; (1), (2) queued in order.
        assert_eq!(s.pop(), Some(key(0, 1)));
        s.push(key(0, 2), |_| true);
        assert_eq!(
            s.pop(),
            Some(key(0, 2)),
            "the just-released key comes back first"
        );
        assert_eq!(s.pop(), Some(key(1, 1)));
        assert_eq!(s.pop(), Some(key(2, 1)));
    }
}
