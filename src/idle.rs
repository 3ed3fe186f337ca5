//! The idle set: every place an idle connection can be, and the one
//! vocabulary to take one out ([`IdleSet::take`]) and put one in
//! ([`IdleSet::put`], [`IdleSet::push`], [`IdleSet::put_back`]).
//!
//! An idle connection is in exactly one of three places:
//!
//! 1. **A thread's cache** (DESIGN.md, "The thread-affine fast path"):
//!    the connection a thread released last, its slot PARKED and its key
//!    in that thread's private cache (`tid.rs` stores the entry; the rules
//!    for it are here). The thread takes it back with one CAS on the
//!    slot's state word; the key is only a hint.
//! 2. **The shards**: per shard, one atomic "hot" word holding the most
//!    recently released key, in front of a `CachePadded<ArrayQueue>` of
//!    keys. A thread pushes to and pops from its *home* shard (its hash,
//!    `tid.rs`, mapped onto the shard count with one multiply, Lemire's
//!    "fastrange") and steals from the others only when its home is
//!    empty. The hot word is HikariCP's "last returned" list cut to one
//!    entry per shard: a push that finds it empty puts its key there with
//!    one CAS, the next pop takes it with one swap; it makes the hottest
//!    connection the one reused, so that surplus connections queue behind
//!    it and can age out under light load.
//! 3. **Parked, with no cache naming it** (parked by another thread, by a
//!    thread that exited, or one whose cache has moved on): found by a scan
//!    of the state words (`Slots::claim_any_parked`), O(capacity), on the
//!    slow path only.
//!
//! [`IdleSet::take`] looks in that order (this thread's cache, the shards,
//! the scan). [`IdleSet::put`], for a healthy connection its holder
//! released, parks it for the thread when the thread's cache is free and
//! pushes it into the shards otherwise; [`IdleSet::push`] (a connection
//! handed on by a party other than its holder) and [`IdleSet::put_back`]
//! (behind the others, keeping its idle time) go to the shards.
//! Maintenance takes an idle connection where it lies
//! ([`IdleSet::claim_in_place`]). The idle set also holds the pool's mode
//! of the asymmetric fence (`asym.rs`), which only a parking release
//! needs: [`IdleSet::fence_heavy`] and [`IdleSet::relax`] are its other
//! side's doors.
//!
//! # Invariants kept
//!
//! - A current key (one whose slot reads `IDLE(g)`) is in exactly one
//!   place: one hot word or one queue. Stale keys may also sit there; the
//!   popper's claim CAS skips them. A PARKED slot's key is never in the
//!   shards: only `put` parks, and the key it makes goes to a thread's
//!   cache.
//! - A push never loses a current key: the queues and hot words together
//!   have room for more keys than there can be connections (see
//!   `Shards::room_per_shard`, which also keeps memory O(`max_size`)
//!   however many shards), so when all are full while the pusher holds one
//!   more current key, some queued key is stale, and `Shards::push`
//!   rotates through the queues until it evicts one.
//! - `stale` counts the stale keys in the shards, so that the idle count
//!   (keys queued minus stale ones, plus parked slots) is exact whenever
//!   the pool is quiet. A key goes stale only when maintenance claims its
//!   slot in place ([`IdleSet::claim_in_place`]; a generation wrap aside),
//!   which counts it *before* that claim (uncounting it if the claim
//!   fails), so nobody can find a key stale before it is counted. Every
//!   path that drops a stale key uncounts it: a popper whose claim fails
//!   and a push that evicts it. The count is kept in wrapping arithmetic
//!   and read as signed, so an uncount that overtakes its count (no
//!   ordering forbids it) reads as -1 for a moment and is never lost. All
//!   of this is on cold paths.
//! - Ordering, ours alone: every `put`, `push` and `put_back` ends in a
//!   SeqCst operation of this module's own: the hot word's SeqCst CAS, a
//!   SeqCst fence after a queue push (`queued`), or, for a parked
//!   connection, the asymmetric fence's light side. The pool's lost-wake-up
//!   argument (DESIGN.md) rests on that and on the waiter's own SeqCst
//!   fence before its re-check, never on `ArrayQueue`'s internal orderings,
//!   which are not crossbeam's API and which the loom stand-in queue does
//!   not model.
//! - A pop looks at a queue (`is_empty`: two loads) before popping it, so
//!   an empty shard costs no fence of crossbeam's. A look after the
//!   waiter's fence sees every push whose fence came before it in S, so it
//!   reads "empty" only where `pop` would have found nothing too. (The loom
//!   stand-in's look always says "not empty": it keeps a model's operations
//!   what they were.)
//! - A thread's cache holds at most one key, of one pool. A release parks
//!   only into a free cache: one holding a key of this pool (its thread
//!   parked a connection and has not taken it back, or not yet found it
//!   stolen) sends the connection to the shards. A key of
//!   another pool is kept while that pool keeps parking there; after
//!   `STALE_AFTER` releases elsewhere with no parking of its own pool
//!   between them it is replaced, so that a key of a pool the thread no
//!   longer uses (dropped on another thread, or its connection stolen)
//!   cannot disable parking for good. Replacing strands nothing: the
//!   connection stays PARKED and a scan finds it. The pool id is a
//!   process-wide counter, never an address, so a later pool at the same
//!   address never mistakes an old key for its own.
//! - With `Builder::max_idle` set, [`IdleCount`] counts the idle
//!   connections: one more *before* a connection goes in (so a taker's
//!   decrement, after its claim, never comes first), one fewer after a
//!   claim that takes one out ([`IdleSet::take`],
//!   [`IdleSet::claim_in_place`]). A release goes in only through
//!   [`IdleSet::admit`], one compare-and-swap that takes a place under the
//!   bound, so racing releases never leave more than `max_idle` idle. The
//!   other ways in (a requeue, a connection no waiter took, a refill) are
//!   counted but not refused. A bounded pool never parks a connection in a
//!   thread's cache ([`IdleSet::put_shared`]), so the acquire's parked
//!   path, the uncontended cycle of an unbounded pool, has nothing to
//!   uncount and reads nothing more; without the bound nothing is counted.

use crossbeam_utils::CachePadded;

use crate::asym::Asym;
use crate::slots::{Busy, SlotKey, Slots};
use crate::sync::{self, ArrayQueue, AtomicU64, AtomicUsize, Ordering, fence, mutant};
use crate::tid::{self, home_index};

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
        let order = sync::weakened("relaxed_handover", Ordering::Acquire);
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
/// releaser's re-check (SeqCst loads of the waiter count and `closed`)
/// comes after the key's publication in the total order S whatever the
/// queue does inside (module invariants). On x86-64 one `mfence`, on the
/// queue branch only.
#[inline(always)]
fn queued() {
    fence(Ordering::SeqCst);
}

/// The shared part of the idle set: the shards and the stale count.
struct Shards {
    shards: Box<[CachePadded<Shard>]>,
    /// Stale keys in the set, as a wrapping signed count (module docs).
    stale: CachePadded<AtomicUsize>,
}

impl Shards {
    /// `shards` queues with room for `per_shard` keys each (both >= 1).
    fn new(shards: usize, per_shard: usize) -> Self {
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
    fn room_per_shard(max_size: usize, shards: usize) -> usize {
        max_size
            .min(2 * max_size.div_ceil(shards.max(1)) + 16)
            .max(1)
    }

    /// Number of shards.
    fn count(&self) -> usize {
        self.shards.len()
    }

    /// The calling thread's home shard.
    #[inline(always)]
    fn home(&self) -> usize {
        home_index(self.shards.len())
    }

    /// Pops a key, home shard first, then the others in order (the unit
    /// tests' way in; `IdleSet::take_shared` does the same in two steps).
    #[cfg(test)]
    fn pop(&self) -> Option<SlotKey> {
        let home = self.home();
        if let Some(k) = self.shards[home].pop() {
            return Some(k);
        }
        self.steal(home)
    }

    /// Pops a key from the shards after `home`, then those before it. The
    /// key may be stale: the caller claims it and skips it if the claim
    /// fails.
    #[cold]
    fn steal(&self, home: usize) -> Option<SlotKey> {
        let n = self.shards.len();
        // The shards after `home`, then those before it (no division; a
        // plain loop: a waiter's re-check runs it on an empty set).
        let mut i = home;
        for _ in 1..n {
            i = if i + 1 == n { 0 } else { i + 1 };
            let victim = &self.shards[i];
            // loom mutant: steal_without_swap (the hot word taken with a
            // load and a store), see loom-tests/run-mutants.sh
            if mutant("steal_without_swap") {
                let k = SlotKey::from_bits(victim.hot.load(Ordering::Acquire));
                victim.hot.store(0, Ordering::Relaxed);
                if let Some(k) = k.or_else(|| victim.queue.pop()) {
                    return Some(k);
                }
                continue;
            }
            if let Some(k) = victim.pop() {
                return Some(k);
            }
        }
        None
    }

    /// Pushes a live key, home shard first. `is_live` tells stale keys from
    /// live ones for the rare case in which every shard is full.
    #[inline]
    fn push(&self, key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let home = self.home();
        let shard = &self.shards[home];
        // SeqCst: this RMW is the releaser's half of the lost-wake-up
        // argument (module docs); its Release side publishes the slot to the
        // swap in `Shard::pop`.
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = sync::weakened("relaxed_handover", Ordering::SeqCst);
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
    fn push_back(&self, key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
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
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Counts a key that is about to go stale: call it before the claim
    /// that makes the key stale, and [`uncount_stale`](Self::uncount_stale)
    /// if that claim fails.
    fn count_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a [`count_stale`](Self::count_stale) whose claim failed.
    fn uncount_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Uncounts a stale key a popper found (its claim failed) and dropped.
    /// Wrapping: it may come before the count (module invariants).
    fn forget_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Idle connections: keys queued minus stale keys. Exact while nothing
    /// is in flight; otherwise off by the operations in flight, never below
    /// zero.
    fn idle(&self) -> usize {
        // Wrapping count read as signed: -1 while an uncount is ahead of
        // its count, which reads as none stale.
        let stale = usize::try_from(self.stale.load(Ordering::Relaxed) as isize).unwrap_or(0);
        self.len().saturating_sub(stale)
    }
}

/// The next [`IdleSet`]'s pool id (0 is never used: an empty cache).
static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A cached key of another pool is taken for stale after it has turned
/// away this many releases in a row with no parking of its own pool in
/// between (module invariants).
const STALE_AFTER: u32 = 16;

/// One pool's idle connections (module docs).
pub(crate) struct IdleSet {
    /// This pool's identity in the threads' caches: unique in the process,
    /// never reused.
    id: u64,
    /// The bound on idle connections (`Builder::max_idle`), `usize::MAX`
    /// when there is none; beside `id`, which every acquire reads.
    max_idle: usize,
    shards: Shards,
    /// Idle connections, counted only under a bound (module invariants).
    count: IdleCount,
    /// The parking release's asymmetric fence (`asym.rs`): whether
    /// releasers fence after parking; armed by waiters, `close` and
    /// shrinks.
    asym: Asym,
}

impl IdleSet {
    /// An empty idle set of `shards` shards for a pool of up to `max_size`
    /// connections; `membarrier`: whether parking may skip its fence
    /// (`Config::membarrier`).
    pub(crate) fn new(
        shards: usize,
        max_size: usize,
        membarrier: bool,
        max_idle: Option<usize>,
    ) -> Self {
        Self {
            id: NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            max_idle: max_idle.unwrap_or(usize::MAX),
            shards: Shards::new(shards, Shards::room_per_shard(max_size, shards)),
            count: IdleCount::new(),
            asym: Asym::new(membarrier),
        }
    }

    /// Whether idle connections are bounded (`Builder::max_idle`).
    #[inline(always)]
    pub(crate) fn capped(&self) -> bool {
        self.max_idle != usize::MAX
    }

    /// Takes a place under the bound for a released connection about to go
    /// in (then [`put`](Self::put) it); false when `max_idle` are idle
    /// already, and the caller closes it instead. Only under a bound.
    pub(crate) fn admit(&self) -> bool {
        self.count.admit(self.max_idle)
    }

    /// Whether fewer than `max_idle` are counted idle now (a look, no
    /// admission). Only under a bound.
    pub(crate) fn has_room(&self) -> bool {
        self.count.get() < self.max_idle
    }

    /// Counts a connection about to go in by a way that is not refused (a
    /// connection no waiter took, a refill; [`put_back`](Self::put_back)
    /// counts itself); call before the push. Nothing without a bound.
    #[inline(always)]
    pub(crate) fn entering(&self) {
        if self.capped() {
            self.count.add();
        }
    }

    /// Uncounts a connection a claim took out. Nothing without a bound.
    #[inline(always)]
    fn left(&self) {
        if self.capped() {
            self.count.sub();
        }
    }

    /// Idle connections as counted under a bound (0 without one).
    #[cfg(test)]
    pub(crate) fn counted(&self) -> usize {
        self.count.get()
    }

    /// Takes an idle connection: this thread's parked one if it is still
    /// there (one CAS), else a key from the shards whose claim succeeds
    /// (stale keys skipped), else one parked by another thread (a scan).
    #[inline(always)]
    pub(crate) fn take<C>(&self, slots: &Slots<C>) -> Option<Busy> {
        self.take_unless(slots, || false)
    }

    /// [`take`](Self::take), except that it looks no further than this
    /// thread's parked connection if `near_only()` says so when that is
    /// gone (a `get` arriving while others wait: it would search an empty
    /// set, and its re-check after registering searches everything).
    #[inline(always)]
    pub(crate) fn take_unless<C>(
        &self,
        slots: &Slots<C>,
        near_only: impl Fn() -> bool,
    ) -> Option<Busy> {
        if let Some(key) = self.unpark() {
            if let Some(busy) = slots.claim_parked(key) {
                // Never a bounded pool's: it does not park (`put_shared`),
                // so nothing to uncount on this path.
                return Some(busy);
            }
        }
        if near_only() {
            return None;
        }
        self.take_shared(slots)
    }

    /// [`take`](Self::take) past this thread's parked connection.
    #[inline(never)]
    fn take_shared<C>(&self, slots: &Slots<C>) -> Option<Busy> {
        let home = self.shards.home();
        loop {
            let key = match self.shards.shards[home].pop() {
                Some(key) => key,
                None => match self.shards.steal(home) {
                    Some(key) => key,
                    None => break,
                },
            };
            if let Some(busy) = slots.claim(key) {
                self.left();
                return Some(busy);
            }
            self.shards.forget_stale();
        }
        let stolen = self.steal_parked(slots);
        if stolen.is_some() {
            self.left();
        }
        stolen
    }

    /// The scan for connections parked by other threads (each thread starts
    /// at its own point, so that stealers spread out; a model at 0, the
    /// same in every execution).
    #[cold]
    #[inline(never)]
    fn steal_parked<C>(&self, slots: &Slots<C>) -> Option<Busy> {
        // loom mutant: recheck_skips_parked (a taker, a waiter's re-check
        // among them, misses parked connections), see
        // loom-tests/run-mutants.sh
        if mutant("recheck_skips_parked") {
            return None;
        }
        let start = if sync::IN_MODEL {
            0
        } else {
            home_index(slots.capacity())
        };
        slots.claim_any_parked(start)
    }

    /// Puts a released, healthy connection where this thread's next
    /// acquire looks first: parked in its cache if the cache is free (one
    /// Release store and the asymmetric fence's light side), else into the
    /// shards. Either way it ends in a SeqCst operation of this module's
    /// (module invariants), after which the releaser re-checks.
    #[inline(always)]
    pub(crate) fn put<C>(&self, slots: &Slots<C>, busy: Busy, now: u64) {
        // The cache is private: only the slot's state word is shared, so
        // the order of the two writes does not matter.
        let key = slots.next_key(&busy);
        if self.park(key) {
            slots.park(busy, key, now);
            // loom mutant: park_without_fence (run-mutants.sh)
            if !mutant("park_without_fence") {
                self.asym.light();
            }
        } else {
            self.push(slots, busy, now);
            // The push ended in a SeqCst operation; the releaser's SeqCst
            // loads follow it (`sync::sc_load_after_rmw` tells loom).
            sync::sc_load_after_rmw();
        }
    }

    /// [`put`](Self::put) for a pool that bounds its idle connections:
    /// always into the shards, never parked, so that the acquire's parked
    /// path needs no uncount (module invariants). Ends in a SeqCst
    /// operation of ours.
    pub(crate) fn put_shared<C>(&self, slots: &Slots<C>, busy: Busy, now: u64) {
        self.push(slots, busy, now);
        sync::sc_load_after_rmw();
    }

    /// Puts a connection into the shards (never this thread's cache: the
    /// caller is not the one who will take it back), stamped as released
    /// at `now`. Ends in a SeqCst operation of ours.
    #[inline]
    pub(crate) fn push<C>(&self, slots: &Slots<C>, busy: Busy, now: u64) {
        let key = slots.make_idle(busy, now);
        self.shards.push(key, |k| slots.is_live(k));
    }

    /// Puts an unchecked idle connection back behind the others, keeping
    /// the time it went idle (`try_get` may not hand it out: it is due for
    /// a check). Ends in a SeqCst fence of ours.
    pub(crate) fn put_back<C>(&self, slots: &Slots<C>, busy: Busy) {
        self.entering();
        let since = slots.of(&busy).life.released_at();
        let key = slots.make_idle(busy, since);
        self.shards.push_back(key, |k| slots.is_live(k));
    }

    /// Idle connections: keys queued minus stale ones, plus parked slots (a
    /// scan of the state words: O(capacity), off the hot path). Exact when
    /// quiet.
    pub(crate) fn count<C>(&self, slots: &Slots<C>) -> usize {
        self.shards.idle() + slots.parked()
    }

    /// Claims the idle connection `serial` of slot `index` where it lies
    /// (maintenance), counting the key it leaves stale in the shards.
    pub(crate) fn claim_in_place<C>(
        &self,
        slots: &Slots<C>,
        index: u32,
        serial: u64,
    ) -> Option<Busy> {
        let claimed = slots.claim_in_place(index, serial, |queued| {
            if queued {
                self.shards.count_stale();
            } else {
                self.shards.uncount_stale();
            }
        });
        if claimed.is_some() {
            self.left();
        }
        claimed
    }

    /// The other side of the parking release's fence, after a write that
    /// a releaser must see (a waiter token, `closed`, the cap) and the
    /// caller's SeqCst fence after it (`asym.rs`).
    pub(crate) fn fence_heavy(&self) {
        self.asym.heavy();
    }

    /// Lets parking releases skip their fence again if no heavy side ran
    /// since the last look (maintenance, at most once a second).
    pub(crate) fn relax(&self) {
        self.asym.relax();
    }

    /// Whether parking releases fence now.
    #[cfg(test)]
    pub(crate) fn releasers_fence(&self) -> bool {
        self.asym.releasers_fence()
    }

    /// Takes this thread's cached key for this pool, if any (it may be
    /// stale: the caller's claim CAS tells). One thread-local access.
    #[inline(always)]
    fn unpark(&self) -> Option<SlotKey> {
        tid::parked(|p| {
            let (pool, bits) = p.entry.get();
            if pool != self.id || bits == 0 {
                return None;
            }
            p.entry.set((pool, 0));
            SlotKey::from_bits(bits)
        })
        .flatten()
    }

    /// Caches `key` as this thread's parked connection; false if the cache
    /// keeps what it holds (module invariants), and the caller pushes the
    /// connection into the shards instead.
    #[inline(always)]
    fn park(&self, key: SlotKey) -> bool {
        tid::parked(|p| {
            let (pool, bits) = p.entry.get();
            if bits != 0 && (pool == self.id || !turned_away(p)) {
                return false;
            }
            p.entry.set((self.id, key.to_bits()));
            p.refused.set(0);
            true
        })
        .unwrap_or(false)
    }
}

/// The count of idle connections under `Builder::max_idle` (module
/// invariants), on a line of its own: releases and acquires of a bounded
/// pool write it.
struct IdleCount {
    n: CachePadded<AtomicUsize>,
}

impl IdleCount {
    fn new() -> Self {
        Self {
            n: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// One more if fewer than `max` are counted: the compare-and-swap makes
    /// the look and the increment one step, so two releases cannot both
    /// take the last place.
    fn admit(&self, max: usize) -> bool {
        // loom mutant: idle_check_then_add (a look, then an add: two
        // racing releases both see room and both go idle), see
        // loom-tests/run-mutants.sh
        if mutant("idle_check_then_add") {
            if self.n.load(Ordering::SeqCst) >= max {
                return false;
            }
            self.n.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        let mut n = self.n.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return false;
            }
            match self
                .n
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    fn add(&self) {
        self.n.fetch_add(1, Ordering::Relaxed);
    }

    fn sub(&self) {
        self.n.fetch_sub(1, Ordering::Relaxed);
    }

    fn get(&self) -> usize {
        self.n.load(Ordering::Relaxed)
    }
}

/// Counts one more release turned away by the cached key of another pool;
/// true once the key is taken for stale.
#[cold]
fn turned_away(p: &tid::Parked) -> bool {
    let n = p.refused.get() + 1;
    p.refused.set(n);
    n > STALE_AFTER
}

impl std::fmt::Debug for IdleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleSet")
            .field("id", &self.id)
            .field("shards", &self.shards.count())
            .field("queued", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32, generation: u64) -> SlotKey {
        SlotKey::new(index, generation)
    }

    #[test]
    fn admission_stops_at_max_idle_and_counts_every_way_in_and_out() {
        let slots: Slots<u8> = Slots::new(4);
        let set = IdleSet::new(1, 4, false, Some(2));
        assert!(set.capped());
        assert!(set.admit() && set.admit());
        assert!(!set.admit(), "two idle: the third is refused");
        assert_eq!(set.counted(), 2);
        set.entering(); // a connection no waiter took is counted, not refused
        assert_eq!(set.counted(), 3);
        assert!(!set.has_room());
        // A claim that takes a connection out uncounts it.
        let place = slots.reserve().unwrap();
        let busy = slots.fill(place, 7, 1, 0, u64::MAX, 0);
        set.put_shared(&slots, busy, 0);
        assert!(set.take(&slots).is_some());
        assert_eq!(set.counted(), 2);
        let unbounded = IdleSet::new(1, 4, false, None);
        assert!(!unbounded.capped());
        unbounded.entering();
        assert_eq!(unbounded.counted(), 0, "nothing counted without a bound");
    }

    #[test]
    fn an_arrival_told_to_stay_near_takes_its_own_parked_connection_only() {
        let slots: Slots<u8> = Slots::new(4);
        let set = IdleSet::new(8, 4, false, None);
        let ours = crate::tid::home_index(8);
        let busy = || {
            let place = slots.reserve().unwrap();
            slots.fill(place, 7, 1, 0, u64::MAX, 0)
        };
        // Shelved by a thread whose home shard is another one.
        std::thread::scope(|sc| {
            while !sc
                .spawn(|| {
                    crate::tid::home_index(8) != ours && (set.put_shared(&slots, busy(), 0), true).1
                })
                .join()
                .unwrap()
            {}
        });
        assert!(set.take_unless(&slots, || true).is_none(), "not searched");
        let far = set.take_unless(&slots, || false).expect("searched");
        // In this thread's own shard: not searched either (the re-check
        // after registering pops it).
        set.put_shared(&slots, busy(), 0);
        assert!(set.take_unless(&slots, || true).is_none(), "its shard");
        let shard = set.take_unless(&slots, || false).expect("searched");
        // Parked for this thread: taken.
        set.put(&slots, busy(), 0);
        assert!(set.take_unless(&slots, || true).is_some(), "its own");
        drop((far, shard));
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
    #[test]
    fn a_cached_key_of_a_pool_no_longer_used_here_is_replaced() {
        std::thread::spawn(|| {
            let (a, b) = (
                IdleSet::new(1, 4, false, None),
                IdleSet::new(1, 4, false, None),
            );
            assert!(a.park(key(0, 1)));
            assert!(!a.park(key(1, 1)), "one key per thread");
            for i in 0..STALE_AFTER {
                assert!(!b.park(key(2, 1)), "refusal {i}: A's key kept");
            }
            assert!(b.park(key(2, 1)), "A's key taken for stale");
            assert_eq!(a.unpark(), None);
            assert_eq!(b.unpark(), Some(key(2, 1)));
            // A pool that keeps parking its own keeps its place however
            // often another is turned away in between.
            for _ in 0..4 * STALE_AFTER {
                assert!(a.park(key(0, 2)));
                for _ in 0..STALE_AFTER / 2 {
                    assert!(!b.park(key(2, 2)));
                }
                assert_eq!(a.unpark(), Some(key(0, 2)));
            }
        })
        .join()
        .unwrap();
    }
}
