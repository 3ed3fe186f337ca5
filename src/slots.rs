//! The slot arena: one slot per place in the pool, and the ownership
//! protocol that says who may touch the connection inside it.
//!
//! A pool has exactly `max_size_limit` slots (default `max_size`). A *place*
//! (the right to hold one open or connecting connection) **is** a slot:
//! reserving capacity means taking a place on the `places` count (one CAS,
//! only while fewer than the run-time `cap` are taken) and popping a slot
//! index off the `free` queue; giving it back means pushing the index again
//! and then decrementing the count. So invariant I2 (never more than
//! `max_size` connections, connecting ones included) holds by construction
//! for new places: a connection can only live in a slot, and no place is
//! taken at or above the cap. After a shrink (`Pool::set_max_size`) the
//! places already taken above the new cap are given back as their
//! connections return ([`Slots::over_cap`], read by the release protocol
//! in `release.rs`): once they are back, at most `cap` are open.
//!
//! # The state word
//!
//! Each slot has one `AtomicU64`, the single source of truth for who owns it:
//!
//! ```text
//!  63         45 44                                  2 1 0
//! +-------------+-------------------------------------+---+
//! |   (zero)    |     generation (43 bits, wrapping)  |tag|
//! +-------------+-------------------------------------+---+
//! tag: FREE = 0  no connection; the index is in `free` or held by a reserver
//!      IDLE = 1  a connection, waiting in the idle set's shards under the
//!                key (index, generation); whoever CASes IDLE(g) -> BUSY(g)
//!                owns it
//!      BUSY = 2  a connection owned by one party: a guard, a waiter hand-off,
//!                a creator, a closer or maintenance
//!      PARKED = 3  a connection idle *outside* the shards: its key sits in
//!                the private cache of the thread that released it
//!                (`tid.rs`, `idle.rs`), or nowhere; whoever CASes
//!                PARKED(g) -> BUSY(g) owns it, the releasing thread by its
//!                cached key, anyone else by scanning the state words
//!                ([`Slots::claim_any_parked`])
//! ```
//!
//! The generation grows by one (mod 2^43) on every BUSY -> IDLE or BUSY ->
//! PARKED transition, so an idle key `(index, g)` is current exactly while
//! the word reads `IDLE(g)` (or `PARKED(g)` for a thread's cached key). A
//! key left behind in the idle set after its slot moved on (closed in place
//! by maintenance, say) is *stale*: its claim CAS fails and the popper
//! skips it.
//!
//! A [`SlotKey`] packs index and generation into one `u64` (index + 1 in the
//! low 21 bits, so a key is never 0, the generation above), which lets a
//! shard keep its most recent key, and a thread its parked one, in a single
//! word. Should a stale key ever meet its slot again a full generation wrap
//! later, the CAS still lets only one party own the connection: the wrap
//! can cost an idle-count estimate, never exclusivity (I1).
//!
//! # A slot
//!
//! A [`Slot`] is its state word (private to this module), its connection
//! cell, and two concerns of its own: [`Life`], the connection's lifecycle
//! facts (serial, `expires_at`, `released_at`, `fresh_until`,
//! `verified_seq`: what the lifecycle policy judges and maintenance reads),
//! and [`Holding`], the current holding (hand-out stamp, fast-path hits,
//! `marked`, the leak stamps). The owner of a claimed slot reaches both
//! through one borrowed view, [`Slots::of`], and the connection through
//! [`Slots::conn`] / [`Slots::conn_mut`]; nobody else writes them.
//!
//! # Invariants kept
//!
//! - I1 exclusive: only the party that observed the slot FREE (by popping
//!   its index), or that won a claim CAS (`IDLE(g)` or `PARKED(g)` ->
//!   `BUSY(g)`), or that was handed the index by one of those, reads or
//!   writes the connection cell.
//! - The connection cell is `Some` exactly when the tag is IDLE, PARKED or
//!   BUSY.
//! - A PARKED slot's key is never in the idle set's shards (`idle.rs`):
//!   only [`Slots::park`] makes the tag, and the keys it makes go to a
//!   thread's private cache only. The BUSY -> PARKED transition is a
//!   Release store (only the owner writes a BUSY word) followed by the
//!   caller's asymmetric fence (`asym.rs`): the releaser's half of the
//!   lost-wake-up argument for a parked connection (DESIGN.md, "The
//!   thread-affine fast path").
//! - Ownership is a value: a [`Busy`] token for a claimed slot, a [`Place`]
//!   token for a reserved one. Only the transitions that hand a slot to one
//!   party make a token (`reserve`, `fill`, the claims), and the ones that
//!   end the holding consume it (`make_idle`, `park`, `take`,
//!   `unreserve`), so those and the connection accessors are safe: their
//!   signatures carry the proof, and each `unsafe` block here argues from
//!   the token. Because a token names a slot of this arena, [`Slots::of`]
//!   indexes without a bounds check. The one way around the tokens is their
//!   `into_raw` / `from_raw` pair, for the waiter node's state word, whose
//!   `from_raw` is `unsafe` (`release::from_grant`).
//! - `Holding`'s owner-written fields (`handed_at`, `hits`, `marked`) are
//!   written only by the slot's owner, with a plain load and store: the
//!   hand-over of the slot orders one owner's store before the next
//!   owner's load.
//! - `places` never counts fewer places than indices out of the free queue
//!   (incremented before the pop, decremented after the push), and a
//!   reserve takes one only while `places < cap`, so its pop finds an index.
//! - The cap and the flag that says it is below the arena's length are one
//!   word, written by one store, so that racing resizes leave them in
//!   agreement. The word's second flag (idle connections bounded,
//!   `Builder::max_idle`) is fixed at build and kept by every store.
//! - Every transition that hands the slot to another thread is a Release
//!   store or CAS, paired with the Acquire that takes it (noted at each site).

use crossbeam_utils::CachePadded;

use std::panic::Location;

use crate::sync::{
    self, ArrayQueue, AtomicPtr, AtomicU64, AtomicUsize, Ordering, UnsafeCell, mutant,
};

const TAG_BITS: u32 = 2;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const GEN_BITS: u32 = 43;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
const INDEX_BITS: u32 = 64 - GEN_BITS;
const FREE: u64 = 0;
const IDLE: u64 = 1;
const BUSY: u64 = 2;
const PARKED: u64 = 3;

const fn pack(generation: u64, tag: u64) -> u64 {
    ((generation & GEN_MASK) << TAG_BITS) | tag
}

const fn generation(word: u64) -> u64 {
    word >> TAG_BITS
}

const fn tag(word: u64) -> u64 {
    word & TAG_MASK
}

/// Names an idle connection: the slot index and the generation its slot had
/// when the key was made, packed as described in the module docs. Current
/// while the slot reads `IDLE(generation)`. Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotKey(u64);

impl SlotKey {
    pub(crate) const fn new(index: u32, generation: u64) -> Self {
        Self(((generation & GEN_MASK) << INDEX_BITS) | (index as u64 + 1))
    }

    pub(crate) const fn index(self) -> u32 {
        ((self.0 & ((1 << INDEX_BITS) - 1)) - 1) as u32
    }

    pub(crate) const fn generation(self) -> u64 {
        self.0 >> INDEX_BITS
    }

    /// The packed word (never 0).
    pub(crate) const fn to_bits(self) -> u64 {
        self.0
    }

    /// Unpacks a word made by [`SlotKey::to_bits`]; `None` for 0.
    pub(crate) const fn from_bits(bits: u64) -> Option<Self> {
        if bits == 0 { None } else { Some(Self(bits)) }
    }
}

/// Proof of owning a claimed slot: BUSY, holding a connection that only
/// the token's holder may touch (I1). Made only here, by the transitions
/// that hand a slot to one party ([`Slots::fill`], [`Slots::claim`],
/// [`Slots::claim_parked`], [`Slots::claim_any_parked`],
/// [`Slots::claim_in_place`]), and consumed by the ones that end the
/// holding ([`Slots::make_idle`], [`Slots::park`], [`Slots::take`]). Neither `Copy` nor
/// `Clone`: a holder that passes it on cannot touch the slot again.
/// Zero-cost: the slot index, nothing more.
///
/// The index is held in a full word although it fits 32 bits: a guard
/// (`Pooled`: the core pointer and this token) that a caller moves
/// through memory, as the result of `get`'s future merged with the slow
/// path's, would be written with a 4-byte store and read back with an
/// 8-byte load, which the store buffer cannot forward (BENCHMARKS.md,
/// "Design decisions"). The guard is 16 bytes either way.
///
/// A token names a slot of the arena that made it; each pool has one arena
/// and its tokens never leave it.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a claimed slot must be made idle or emptied"]
pub(crate) struct Busy(u64);

/// Proof of owning a reserved place: a FREE slot popped off the free queue,
/// which only the holder may fill ([`Slots::fill`]) or give back
/// ([`Slots::unreserve`]). Neither `Copy` nor `Clone`; zero-cost.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reserved place must be filled or given back"]
pub(crate) struct Place(u32);

/// What one party may own of a slot: a claimed connection or a place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// A claimed slot and its connection.
    Busy(Busy),
    /// A reserved, empty place.
    Place(Place),
}

impl Busy {
    /// The token of slot `index`; only the transitions named above make
    /// one.
    #[inline(always)]
    const fn new(index: u32) -> Self {
        Self(index as u64)
    }

    /// The slot's index.
    #[inline(always)]
    pub(crate) const fn index(&self) -> u32 {
        self.0 as u32
    }

    /// Gives up the token for its index, to carry the ownership through a
    /// channel that stores numbers (a waiter node's state word).
    #[inline(always)]
    pub(crate) const fn into_raw(self) -> u32 {
        self.0 as u32
    }

    /// Takes ownership back from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `index` came from `into_raw` of a token of this arena, and the
    /// caller is the one party the channel gave it to.
    #[inline(always)]
    pub(crate) const unsafe fn from_raw(index: u32) -> Self {
        Self::new(index)
    }
}

impl Place {
    /// The slot's index.
    #[cfg(test)]
    pub(crate) const fn index(&self) -> u32 {
        self.0
    }

    /// As [`Busy::into_raw`].
    #[inline(always)]
    pub(crate) const fn into_raw(self) -> u32 {
        self.0
    }

    /// As [`Busy::from_raw`].
    ///
    /// # Safety
    /// As [`Busy::from_raw`], for a place.
    #[inline(always)]
    pub(crate) const unsafe fn from_raw(index: u32) -> Self {
        Self(index)
    }
}

/// One place in the pool: who owns it (the state word), the connection
/// itself, the connection's lifecycle facts and its current holding. The
/// owner of a claimed slot reaches the last two through one borrowed view,
/// [`Slots::of`].
pub(crate) struct Slot<C> {
    /// Generation and tag, as described in the module docs.
    state: AtomicU64,
    /// The connection; `Some` iff the tag is IDLE, PARKED or BUSY. Accessed
    /// only by the slot's current owner (see I1 above).
    conn: UnsafeCell<Option<C>>,
    /// The connection's lifecycle facts.
    pub(crate) life: Life,
    /// The current holding.
    pub(crate) holding: Holding,
}

/// A connection's lifecycle facts, in clock ticks (ms since the pool was
/// built). Atomics, all Relaxed: the state word's Release/Acquire, or the
/// queue or node that hands the slot over, orders them; maintenance reads
/// them for slots it does not own, as hints.
#[derive(Debug)]
pub(crate) struct Life {
    /// The connection in the slot (from 1; 0 = none), so that a timer
    /// entry of a closed connection never touches its successor.
    serial: AtomicU64,
    /// The first tick at which it must not be handed out: opened +
    /// `max_lifetime` − jitter − the clock margin (`u64::MAX` without a
    /// lifetime).
    expires_at: AtomicU64,
    /// When it last went idle (the cached clock).
    released_at: AtomicU64,
    /// Until when an acquirer may hand the idle connection out without a
    /// closer look: the earlier of its lifetime's end and the time it
    /// becomes due for a check. Stamped before it goes idle, so the acquire
    /// path pays one load and one compare for every policy.
    fresh_until: AtomicU64,
    /// When it was last known good (opened, or passed `Manager::check`), as
    /// a number of the pool's event sequence (`lifecycle.rs`).
    verified_seq: AtomicU64,
}

impl Life {
    fn new() -> Self {
        Self {
            serial: AtomicU64::new(0),
            expires_at: AtomicU64::new(u64::MAX),
            released_at: AtomicU64::new(0),
            fresh_until: AtomicU64::new(u64::MAX),
            verified_seq: AtomicU64::new(0),
        }
    }

    /// The connection in the slot (0: none).
    #[inline(always)]
    pub(crate) fn serial(&self) -> u64 {
        self.serial.load(Ordering::Relaxed)
    }

    /// When the connection must be gone (`u64::MAX`: never).
    #[inline(always)]
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// When it last went idle.
    #[inline(always)]
    pub(crate) fn released_at(&self) -> u64 {
        self.released_at.load(Ordering::Relaxed)
    }

    /// Until when it needs no closer look.
    #[inline(always)]
    pub(crate) fn fresh_until(&self) -> u64 {
        self.fresh_until.load(Ordering::Relaxed)
    }

    /// Sets until when it needs no closer look (by its owner, before
    /// passing it on: to the idle set or straight to a waiter).
    #[inline(always)]
    pub(crate) fn set_fresh_until(&self, until: u64) {
        self.fresh_until.store(until, Ordering::Relaxed);
    }

    /// When it was last known good (the event sequence).
    #[inline(always)]
    pub(crate) fn verified_seq(&self) -> u64 {
        self.verified_seq.load(Ordering::Relaxed)
    }

    /// Records that it passed a check.
    pub(crate) fn set_verified(&self, seq: u64) {
        self.verified_seq.store(seq, Ordering::Relaxed);
    }
}

/// The current holding of a connection: when and by whom it was taken,
/// and whether its holder marked it broken. `handed_at`, `hits` and
/// `marked` are written only by the slot's owner, with a plain load and
/// store (no read-modify-write): the hand-over of the slot orders one
/// owner's store before the next owner's load, so nothing is lost;
/// snapshots read them relaxed (exact when quiet). Plain std atomics even
/// under loom: they order nothing. The leak stamps are read by the leak
/// scan for slots it does not own.
#[derive(Debug)]
pub(crate) struct Holding {
    /// When the current holder took the connection (cached clock).
    handed_at: std::sync::atomic::AtomicU64,
    /// Fast-path hand-outs (an idle hit in `try_get` / `get`), cumulative
    /// across the slot's connections.
    hits: std::sync::atomic::AtomicU64,
    /// The holder marked the connection broken (`Pooled::mark_broken`):
    /// its release closes it. In the slot, not the guard, so that the
    /// guard is two words (`lifetime.rs`, `CorePtr`). Cleared by `fill`:
    /// a marked connection never goes idle.
    marked: std::sync::atomic::AtomicBool,
    /// When the current holder took it (leak detection only; the real
    /// clock).
    taken_at: AtomicU64,
    /// Where the current holder took it (leak detection only; null when
    /// off or not held).
    taken_by: AtomicPtr<Location<'static>>,
    /// How long the current holding must have lasted (ticks) for its next
    /// leak report: 0 until the first (due at the threshold), then twice
    /// the time held at the last one, so reports repeat at a growing
    /// interval while it stays held.
    next_report: AtomicU64,
}

impl Holding {
    fn new() -> Self {
        Self {
            handed_at: std::sync::atomic::AtomicU64::new(0),
            hits: std::sync::atomic::AtomicU64::new(0),
            marked: std::sync::atomic::AtomicBool::new(false),
            taken_at: AtomicU64::new(0),
            taken_by: AtomicPtr::new(std::ptr::null_mut()),
            next_report: AtomicU64::new(0),
        }
    }

    /// Stamps a hand-out at `now` and, for a fast-path `hit`, counts it
    /// (owner-only plain stores).
    #[inline(always)]
    pub(crate) fn handed(&self, now: u64, hit: bool) {
        let r = std::sync::atomic::Ordering::Relaxed;
        self.handed_at.store(now, r);
        if hit {
            self.hits.store(self.hits.load(r) + 1, r);
        }
    }

    /// How many ticks the connection has been held at `now` (one load).
    #[inline(always)]
    pub(crate) fn held_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.handed_at.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Marks the connection broken: its release closes it.
    pub(crate) fn mark(&self) {
        self.marked
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the holder marked it broken (one load).
    #[inline(always)]
    pub(crate) fn is_marked(&self) -> bool {
        self.marked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records who took the connection, and when (the real clock).
    pub(crate) fn taken(&self, now: u64, by: &'static Location<'static>) {
        self.taken_at.store(now, Ordering::Relaxed);
        self.taken_by
            .store(std::ptr::from_ref(by).cast_mut(), Ordering::Relaxed);
        self.next_report.store(0, Ordering::Relaxed);
    }

    /// Ends a holding for leak detection (a plain store: the next `taken`
    /// resets the report).
    #[inline(always)]
    pub(crate) fn given_back(&self) {
        self.taken_by.store(std::ptr::null_mut(), Ordering::Relaxed);
    }

    /// Clears everything a new connection must not inherit.
    fn reset(&self) {
        // No holder yet: a previous holder that detached its connection
        // left its leak stamp, which a leak scan must not blame on this one.
        self.taken_by.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.marked
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
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
    /// Places taken (reserved or holding a connection): incremented by
    /// `reserve` before its pop, decremented by `unreserve` after its push,
    /// so it never counts fewer places than are out of the free queue.
    places: AtomicUsize,
    /// The run-time cap (`Pool::set_max_size`), at most the arena's length,
    /// with [`LIMITED`] set exactly when it is below that length or idle
    /// connections are bounded: only then can a release find the pool over
    /// its cap or have to ask for admission, so the release path pays one
    /// relaxed load of this read-mostly word (`Slots::limited`).
    /// `reserve` takes a place only while `places < cap`.
    ///
    /// One word, written by one store, so that two resizes racing each
    /// other leave a cap and a flag that agree, whichever store lands last:
    /// written as two, they could interleave into a low cap with the flag
    /// clear, and no release would ever close the surplus.
    ///
    /// The word also carries [`IDLE_CAPPED`], fixed at build, so that the
    /// release path learns from the same one load whether it must look at
    /// either bound ([`Slots::limited`]).
    cap: AtomicUsize,
    /// [`IDLE_CAPPED`] when the pool bounds its idle connections
    /// (`Builder::max_idle`), else 0: or-ed into every cap word written.
    idle_flag: usize,
}

/// The flag bit of [`Slots::cap`]'s word: a release must look at a
/// bound, because the cap is below the arena's length or the pool bounds
/// its idle connections ([`IDLE_CAPPED`]). The sign bit, so that the
/// release's test is one instruction. Above any cap (`MAX_POOL_SIZE` is
/// far smaller).
const LIMITED: usize = 1 << (usize::BITS - 1);

/// The second flag bit of [`Slots::cap`]'s word: the pool bounds its idle
/// connections (`Builder::max_idle`), so a release must ask the idle set
/// for admission. Set at build and never changed; [`LIMITED`] is set with
/// it.
const IDLE_CAPPED: usize = 1 << (usize::BITS - 2);

/// Both flag bits: the cap is the word without them.
const FLAGS: usize = LIMITED | IDLE_CAPPED;

/// The word [`Slots::cap`] holds for `cap` places out of `len`, with
/// `idle_flag` ([`IDLE_CAPPED`] or 0).
const fn cap_word(cap: usize, len: usize, idle_flag: usize) -> usize {
    if cap < len || idle_flag != 0 {
        cap | idle_flag | LIMITED
    } else {
        cap
    }
}

impl<C> Slots<C> {
    /// `n` free slots; `n` must be in `1..=u32::MAX` (the builder checks).
    #[cfg(test)]
    pub(crate) fn new(n: usize) -> Self {
        Self::with_cap(n, n, false)
    }

    /// `n` free slots of which at most `cap` may be taken at once
    /// (`1 <= cap <= n`, the builder checks); `idle_capped`: the pool
    /// bounds its idle connections (`Builder::max_idle`).
    pub(crate) fn with_cap(n: usize, cap: usize, idle_capped: bool) -> Self {
        let idle_flag = if idle_capped { IDLE_CAPPED } else { 0 };
        let free = ArrayQueue::new(n);
        let slots = (0..n)
            .map(|i| {
                // Cannot fail: the queue was made with room for `n`.
                let _ = free.push(i as u32);
                CachePadded::new(Slot {
                    state: AtomicU64::new(pack(0, FREE)),
                    conn: UnsafeCell::new(None),
                    life: Life::new(),
                    holding: Holding::new(),
                })
            })
            .collect();
        Self {
            slots,
            free,
            places: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap_word(cap, n, idle_flag)),
            idle_flag,
        }
    }

    /// The run-time cap on places taken (`Pool::max_size`).
    pub(crate) fn cap(&self) -> usize {
        self.cap.load(Ordering::Relaxed) & !FLAGS
    }

    /// Sets the run-time cap (`1 <= cap <= capacity()`, the caller checks).
    /// Places already taken above it stay taken until given back; from now
    /// on `reserve` takes none while `cap` or more are taken.
    pub(crate) fn set_cap(&self, cap: usize) {
        let word = cap_word(cap, self.slots.len(), self.idle_flag);
        // loom mutant: split_cap_store (the cap and its flag in two
        // writes), see loom-tests/run-mutants.sh
        if mutant("split_cap_store") {
            self.cap.store(cap | self.idle_flag, Ordering::SeqCst);
            if word & LIMITED != 0 {
                self.cap.fetch_or(LIMITED, Ordering::SeqCst);
            } else {
                self.cap.fetch_and(!LIMITED, Ordering::SeqCst);
            }
            return;
        }
        self.cap.store(word, Ordering::SeqCst);
    }

    /// More places are taken than the cap allows (a shrink is under way):
    /// a connection given back now is closed, a place given back is not
    /// handed to a waiter. One relaxed load unless the cap is below the
    /// arena's length (or idle connections are bounded).
    #[inline(always)]
    pub(crate) fn over_cap(&self) -> bool {
        self.cap.load(Ordering::Relaxed) & LIMITED != 0 && self.over_cap_slow()
    }

    /// [`over_cap`](Self::over_cap) with a SeqCst load of the cap: a
    /// releaser's re-check after it shelved a connection, which pairs with
    /// the resizer's `set_cap` + fence (`Core::resize`) the way the
    /// lost-wake-up argument pairs a release with a registration.
    #[inline(always)]
    pub(crate) fn over_cap_sc(&self) -> bool {
        self.cap.load(Ordering::SeqCst) & LIMITED != 0 && self.over_cap_slow()
    }

    /// Whether a release must look at a bound at all: the cap is below the
    /// arena's length, or the pool bounds its idle connections. One relaxed
    /// load of the read-mostly cap word and a test of its sign bit, what
    /// the release paid for [`over_cap`](Self::over_cap) before idle
    /// connections were bounded.
    #[inline(always)]
    pub(crate) fn limited(&self) -> bool {
        self.cap.load(Ordering::Relaxed) & LIMITED != 0
    }

    /// More places are taken than the cap allows (SeqCst loads; the slow
    /// half of [`over_cap`](Self::over_cap)).
    #[cold]
    pub(crate) fn over_cap_slow(&self) -> bool {
        self.places.load(Ordering::SeqCst) > self.cap.load(Ordering::SeqCst) & !FLAGS
    }

    /// Number of slots (`max_size_limit`).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Places taken: slots holding a connection or reserved for a connect.
    pub(crate) fn taken(&self) -> usize {
        self.places.load(Ordering::Relaxed).min(self.slots.len())
    }

    /// Slot `index`, checked: for a slot the caller does not own (a hint,
    /// for maintenance) or one it is about to claim.
    #[inline(always)]
    pub(crate) fn at(&self, index: u32) -> &Slot<C> {
        &self.slots[index as usize]
    }

    /// The slot a token owns: the owner's one view of its connection's
    /// facts and holding. No bounds check (on the hot path each checked
    /// field access paid a compare and a reload).
    #[inline(always)]
    pub(crate) fn of(&self, busy: &Busy) -> &Slot<C> {
        debug_assert!((busy.0 as usize) < self.slots.len());
        // SAFETY: a `Busy` is made only by this arena's transitions, each
        // for an index it just read through the checked `at` (`fill` from
        // a popped free index, the claims from a key or a scan of this
        // arena), or by `from_raw`, whose contract is that the index came
        // from `into_raw` of such a token (the type's docs: a token names
        // a slot of the arena that made it and never leaves it). So the
        // index is below `slots.len()`.
        unsafe { self.slots.get_unchecked(busy.0 as usize) }
    }

    /// Reserves a place: pops a FREE slot, which the caller now owns.
    ///
    /// The CAS on `places` (only while fewer than the cap are taken) is
    /// the capacity reservation; `None` means the cap is reached. The pop
    /// that follows cannot find the queue empty: every index out of it is
    /// held by a party counted in `places` (I2), and `places <= cap <=
    /// capacity()` counting this one.
    #[inline]
    pub(crate) fn reserve(&self) -> Option<Place> {
        let mut taken = self.places.load(Ordering::SeqCst);
        loop {
            if taken >= self.cap.load(Ordering::SeqCst) & !FLAGS {
                return None;
            }
            match self.places.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => taken = now,
            }
        }
        match self.free.pop() {
            Some(index) => Some(Place(index)),
            None => {
                // Unreachable by the counting argument above; give the
                // count back rather than lose a place.
                self.places.fetch_sub(1, Ordering::SeqCst);
                None
            }
        }
    }

    /// Gives a reserved, empty place back (never filled, or emptied with
    /// [`Slots::take`]).
    pub(crate) fn unreserve(&self, place: Place) {
        let index = place.0;
        debug_assert_eq!(tag(self.at(index).state.load(Ordering::Relaxed)), FREE);
        // The push publishes the emptied cell (Release on the queue's stamp,
        // paired with the Acquire in the next `reserve`'s pop).
        let pushed = self.free.push(index);
        debug_assert!(pushed.is_ok(), "free queue has room for every slot");
        // After the push: `places` never undercounts the indices out of
        // the queue (see `reserve`). The caller's SeqCst fence or load
        // that follows orders it for the lost-wake-up argument.
        self.places.fetch_sub(1, Ordering::SeqCst);
    }

    /// Puts a freshly opened connection into a reserved place, which stays
    /// owned by the caller, now BUSY.
    pub(crate) fn fill(
        &self,
        place: Place,
        conn: C,
        serial: u64,
        now: u64,
        expires_at: u64,
        verified_seq: u64,
    ) -> Busy {
        let index = place.0;
        let slot = self.at(index);
        // SAFETY: `place` proves the slot FREE and the caller's (I1): popped
        // off the free queue by `reserve`, whose Acquire saw the cell
        // emptied; nobody else reads the cell.
        slot.conn.with_mut(|c| unsafe { *c = Some(conn) });
        let life = &slot.life;
        life.serial.store(serial, Ordering::Relaxed);
        life.expires_at.store(expires_at, Ordering::Relaxed);
        life.released_at.store(now, Ordering::Relaxed);
        life.verified_seq.store(verified_seq, Ordering::Relaxed);
        // Fresh: no check is due, only its lifetime bounds it.
        life.fresh_until.store(expires_at, Ordering::Relaxed);
        slot.holding.reset();
        let g = generation(slot.state.load(Ordering::Relaxed));
        // Release: a leak scan that sees this BUSY (Acquire) sees the
        // cleared stamp. The next hand-over (to idle, to a waiter, to the
        // free queue) is a Release too.
        slot.state.store(pack(g, BUSY), Ordering::Release);
        Busy::new(index)
    }

    /// Takes the connection out of a claimed slot, leaving it FREE and
    /// still the caller's, as a place (give it on with `unreserve` or to a
    /// waiter).
    pub(crate) fn take(&self, busy: Busy) -> (Option<C>, Place) {
        let index = busy.index();
        let slot = self.at(index);
        let g = generation(slot.state.load(Ordering::Relaxed));
        // SAFETY: `busy` proves the slot BUSY and the caller's (I1): nobody
        // else touches the cell, and the token is consumed here.
        let conn = slot.conn.with_mut(|c| unsafe { (*c).take() });
        slot.life.serial.store(0, Ordering::Relaxed);
        slot.life.expires_at.store(u64::MAX, Ordering::Relaxed);
        slot.state.store(pack(g, FREE), Ordering::Relaxed);
        (conn, Place(index))
    }

    /// Marks a claimed slot IDLE with a new generation and returns the key
    /// to put in the idle set. The token is consumed: the caller no longer
    /// owns the slot.
    #[inline]
    pub(crate) fn make_idle(&self, busy: Busy, now: u64) -> SlotKey {
        let index = busy.index();
        let g = self.next_generation(&busy);
        let slot = self.of(&busy);
        slot.life.released_at.store(now, Ordering::Relaxed);
        // Release: publishes the connection's state (and `released_at`) to
        // whoever wins the claim CAS (its Acquire in `claim`).
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = sync::weakened("relaxed_handover", Ordering::Release);
        slot.state.store(pack(g, IDLE), order);
        SlotKey::new(index, g)
    }

    /// The generation the claimed slot's next idle period will have (read
    /// by its owner: nobody else moves it while it is BUSY).
    #[inline(always)]
    fn next_generation(&self, busy: &Busy) -> u64 {
        generation(self.of(busy).state.load(Ordering::Relaxed)).wrapping_add(1) & GEN_MASK
    }

    /// The key [`park`](Self::park) will make for the claimed slot (read
    /// by its owner: the generation cannot move under it).
    #[inline(always)]
    pub(crate) fn next_key(&self, busy: &Busy) -> SlotKey {
        SlotKey::new(busy.index(), self.next_generation(busy))
    }

    /// Marks a claimed slot PARKED under `key`, the one
    /// [`next_key`](Self::next_key) returned for it (the releasing thread
    /// keeps that key in its private cache, `idle.rs`; passing it back
    /// saves a second load of the state word). The token is consumed.
    ///
    /// One Release store, no read-modify-write: it publishes the
    /// connection to whoever wins the claim CAS. The releaser's half of the
    /// lost-wake-up argument for a parked connection is the caller's
    /// asymmetric fence right after it (`asym.rs`): a waiter that registers
    /// finds the connection in its re-check's scan
    /// ([`claim_any_parked`](Self::claim_any_parked)), or the releaser sees
    /// it.
    #[inline(always)]
    pub(crate) fn park(&self, busy: Busy, key: SlotKey, now: u64) {
        debug_assert_eq!(key, self.next_key(&busy), "park under next_key's key");
        let slot = self.of(&busy);
        slot.life.released_at.store(now, Ordering::Relaxed);
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = sync::weakened("relaxed_handover", Ordering::Release);
        // A plain store: nobody else writes a BUSY slot's word.
        slot.state.store(pack(key.generation(), PARKED), order);
    }

    /// Takes ownership of the idle connection named by `key`: one CAS
    /// `IDLE(g) -> BUSY(g)`. `None` means the key is stale.
    #[inline]
    pub(crate) fn claim(&self, key: SlotKey) -> Option<Busy> {
        // Acquire on success pairs with the Release in `make_idle`.
        self.claim_tagged(key, IDLE)
    }

    /// Takes back the connection this thread parked under `key`: one CAS
    /// `PARKED(g) -> BUSY(g)`. `None`: a stealer or maintenance took it.
    #[inline(always)]
    pub(crate) fn claim_parked(&self, key: SlotKey) -> Option<Busy> {
        // Acquire on success pairs with the Release side of `park`.
        self.claim_tagged(key, PARKED)
    }

    /// The claim CAS `tag(g) -> BUSY(g)` for the slot and generation `key`
    /// names (`tag`: IDLE or PARKED), Acquire on success.
    #[inline(always)]
    fn claim_tagged(&self, key: SlotKey, tag: u64) -> Option<Busy> {
        // loom mutant: relaxed_handover, see loom-tests/run-mutants.sh
        let order = sync::weakened("relaxed_handover", Ordering::Acquire);
        self.at(key.index())
            .state
            .compare_exchange(
                pack(key.generation(), tag),
                pack(key.generation(), BUSY),
                order,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| Busy::new(key.index()))
    }

    /// Claims any PARKED slot, scanning the state words from `start`
    /// (wrapping): how a thread takes a connection parked by another one,
    /// or one whose key nobody holds any more (its thread exited, or
    /// cached another pool's key). O(capacity), on the slow path only.
    #[cold]
    pub(crate) fn claim_any_parked(&self, start: usize) -> Option<Busy> {
        // From `start` to the end, then from the front, each a plain walk
        // over the slice: a waiter's re-check scans every slot when none
        // is parked, so the loop that finds nothing is the one to keep
        // short (a load and a compare per slot).
        let start = start.min(self.slots.len());
        self.claim_parked_in(start, &self.slots[start..])
            .or_else(|| self.claim_parked_in(0, &self.slots[..start]))
    }

    /// [`claim_any_parked`](Self::claim_any_parked) over `range`, the
    /// slots from index `base` on.
    #[inline(always)]
    fn claim_parked_in(&self, base: usize, range: &[CachePadded<Slot<C>>]) -> Option<Busy> {
        for (offset, slot) in range.iter().enumerate() {
            let state = &slot.state;
            let word = state.load(Ordering::Relaxed);
            if tag(word) != PARKED {
                continue;
            }
            let index = (base + offset) as u32;
            // loom mutant: steal_without_cas (a load and a store: the owner
            // and the stealer can both take the connection),
            // see loom-tests/run-mutants.sh
            if mutant("steal_without_cas") {
                state.store(pack(generation(word), BUSY), Ordering::Relaxed);
                return Some(Busy::new(index));
            }
            // Acquire pairs with the Release side of `park`.
            if state
                .compare_exchange(
                    word,
                    pack(generation(word), BUSY),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Some(Busy::new(index));
            }
        }
        None
    }

    /// Slots reading PARKED (exact while nothing is in flight).
    pub(crate) fn parked(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| tag(s.state.load(Ordering::Relaxed)) == PARKED)
            .count()
    }

    /// Claims slot `index` if it is idle (IDLE or PARKED) and holds
    /// connection `serial` (maintenance closing an idle connection in
    /// place). An IDLE slot's key stays in the idle set, now stale, so
    /// `queued` is called with `true` *before* that claim (and `false` if
    /// it then fails), for the stale count (`idle.rs`); a PARKED slot's
    /// key is in no shared structure and nothing is counted.
    pub(crate) fn claim_in_place(
        &self,
        index: u32,
        serial: u64,
        mut queued: impl FnMut(bool),
    ) -> Option<Busy> {
        let slot = self.at(index);
        // Acquire, pairing with the Release in `make_idle` / `park`: the
        // serial read next is then at least the one written before this
        // idle period began (with Relaxed it could be an older connection's
        // serial, and a stale wheel entry could claim the slot's new
        // connection).
        let word = slot.state.load(Ordering::Acquire);
        let idle = tag(word) == IDLE;
        if !(idle || tag(word) == PARKED) || slot.life.serial() != serial {
            return None;
        }
        if idle {
            queued(true);
        }
        // loom mutant: claim_without_cas, see loom-tests/run-mutants.sh
        if mutant("claim_without_cas") {
            slot.state
                .store(pack(generation(word), BUSY), Ordering::Relaxed);
            return Some(Busy::new(index));
        }
        // Acquire pairs with the Release in `make_idle` / `park`. The
        // generation in `word` pins the idle period, so the serial read
        // above is this connection's.
        let claimed = slot
            .state
            .compare_exchange(
                word,
                pack(generation(word), BUSY),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok();
        if !claimed && idle {
            queued(false);
        }
        claimed.then_some(Busy::new(index))
    }

    /// Whether slot `index` holds connection `serial` and is BUSY (a hint).
    pub(crate) fn is_busy_with(&self, index: u32, serial: u64) -> bool {
        let slot = self.at(index);
        tag(slot.state.load(Ordering::Relaxed)) == BUSY && slot.life.serial() == serial
    }

    /// If slot `index` is BUSY, taken at least `threshold` ticks before
    /// `now`, and due for a report (never reported, or held at least twice
    /// as long as at its last report), records the report and returns the
    /// serial, how long it has been held, where it was taken, and whether
    /// this is its first report.
    pub(crate) fn leak(
        &self,
        index: u32,
        now: u64,
        threshold: u64,
    ) -> Option<(u64, u64, &'static Location<'static>, bool)> {
        let s = self.at(index);
        // Acquire: pairs with `fill`'s Release (the stamp is this holder's
        // or cleared, never a detached predecessor's).
        if tag(s.state.load(Ordering::Acquire)) != BUSY {
            return None;
        }
        let h = &s.holding;
        let by = h.taken_by.load(Ordering::Relaxed);
        let held = now.saturating_sub(h.taken_at.load(Ordering::Relaxed));
        let due = h.next_report.load(Ordering::Relaxed);
        // The CAS: one report per due time, whoever scans.
        if by.is_null()
            || held < threshold.max(due)
            || h.next_report
                .compare_exchange(
                    due,
                    held.saturating_mul(2).max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return None;
        }
        // SAFETY: `taken_by` only ever holds null or a `&'static Location`.
        let by = unsafe { &*by };
        Some((s.life.serial(), held, by, due == 0))
    }

    /// The sum over all slots of fast-path hits (relaxed loads; exact
    /// when quiescent).
    pub(crate) fn hits(&self) -> u64 {
        let r = std::sync::atomic::Ordering::Relaxed;
        self.slots.iter().map(|s| s.holding.hits.load(r)).sum()
    }

    /// Whether `key` still names an idle connection (a hint: it may change
    /// right after).
    pub(crate) fn is_live(&self, key: SlotKey) -> bool {
        self.at(key.index()).state.load(Ordering::Relaxed) == pack(key.generation(), IDLE)
    }

    /// Shared access to the connection of a claimed slot, for as long as
    /// the token is borrowed.
    #[inline(always)]
    pub(crate) fn conn<'a>(&'a self, busy: &'a Busy) -> &'a C {
        // SAFETY: `busy` proves the slot BUSY and its holder the only party
        // touching the cell (I1), so the cell is `Some`; the shared borrow
        // of the token excludes `conn_mut` (which needs it `&mut`) while the
        // returned reference lives.
        let conn = self.of(busy).conn.with(|c| unsafe { (*c).as_ref() });
        conn.expect("latchless: an owned busy slot always holds a connection")
    }

    /// Exclusive access to the connection of a claimed slot, for as long as
    /// the token is borrowed mutably.
    #[inline(always)]
    pub(crate) fn conn_mut<'a>(&'a self, busy: &'a mut Busy) -> &'a mut C {
        // SAFETY: as in `conn`; the unique borrow of the token (the only
        // one for the slot) excludes every other reference to the cell.
        let conn = self.of(busy).conn.with_mut(|c| unsafe { (*c).as_mut() });
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
        assert_ne!(a.index(), b.index());
        assert!(slots.reserve().is_none(), "two places only");
        assert_eq!(slots.taken(), 2);
        let ia = a.index();
        let busy = slots.fill(a, "a".into(), 1, 5, u64::MAX, 1);
        assert_eq!(busy.index(), ia);
        assert_eq!(
            slots.at(ia).life.released_at(),
            5,
            "opened counts as released"
        );
        let key = slots.make_idle(busy, 7);
        assert!(slots.is_live(key));
        let mut busy = slots.claim(key).expect("a live key is claimed");
        assert!(slots.claim(key).is_none(), "a key is claimed once");
        assert_eq!(slots.conn(&busy), "a");
        slots.conn_mut(&mut busy).push('!');
        let key2 = slots.make_idle(busy, 8);
        assert!(
            !slots.is_live(key),
            "old key is stale after a new idle period"
        );
        assert!(slots.claim(key).is_none());
        let busy = slots.claim(key2).unwrap();
        let (conn, place) = slots.take(busy);
        assert_eq!(conn.as_deref(), Some("a!"));
        assert_eq!(place.index(), ia);
        slots.unreserve(place);
        slots.unreserve(b);
        assert_eq!(slots.taken(), 0);
    }

    #[test]
    fn the_scan_for_parked_slots_finds_one_from_any_start() {
        for parked_at in 0..4u32 {
            for start in 0..6 {
                let slots = Slots::<String>::new(4);
                let mut held = Vec::new();
                for _ in 0..4 {
                    let place = slots.reserve().unwrap();
                    let busy = slots.fill(place, "c".into(), 1, 0, u64::MAX, 1);
                    if busy.index() == parked_at {
                        let key = slots.next_key(&busy);
                        slots.park(busy, key, 0);
                    } else {
                        held.push(busy);
                    }
                }
                let found = slots
                    .claim_any_parked(start)
                    .unwrap_or_else(|| panic!("slot {parked_at} from {start}"));
                assert_eq!(found.index(), parked_at, "from {start}");
                assert!(slots.claim_any_parked(start).is_none(), "claimed once");
                held.push(found);
                for busy in held {
                    let (_, place) = slots.take(busy);
                    slots.unreserve(place);
                }
                assert_eq!(slots.taken(), 0);
            }
        }
    }

    #[test]
    fn a_parked_connection_goes_to_its_owner_or_one_stealer_never_both() {
        // Under miri (`.ci/run`) the two threads' accesses to the
        // connection cell are checked for races: the winner writes it.
        for _ in 0..if cfg!(miri) { 4 } else { 200 } {
            let slots = std::sync::Arc::new(Slots::<String>::new(2));
            let busy = slots.fill(slots.reserve().unwrap(), "a".into(), 1, 0, u64::MAX, 1);
            let key = slots.next_key(&busy);
            slots.park(busy, key, 3);
            assert_eq!(slots.parked(), 1);
            assert!(!slots.is_live(key), "a parked key is not in the idle set");
            let take = move |s: &Slots<String>, owner: bool| {
                let got = if owner {
                    s.claim_parked(key)
                } else {
                    s.claim_any_parked(1)
                };
                got.map(|mut b| {
                    s.conn_mut(&mut b).push(if owner { 'o' } else { 's' });
                    b
                })
            };
            let stealer = {
                let slots = std::sync::Arc::clone(&slots);
                std::thread::spawn(move || take(&slots, false).map(Busy::into_raw))
            };
            let mine = take(&slots, true);
            // SAFETY: the index came from `into_raw` of this arena's token
            // on the stealer thread, which gave it up.
            let theirs = stealer
                .join()
                .unwrap()
                .map(|i| unsafe { Busy::from_raw(i) });
            let winner = match (mine, theirs) {
                (Some(b), None) | (None, Some(b)) => b,
                (a, b) => panic!("owner {a:?} and stealer {b:?}"),
            };
            assert_eq!(slots.parked(), 0);
            assert!(slots.claim_parked(key).is_none(), "the key is stale now");
            let (conn, place) = slots.take(winner);
            assert!(matches!(conn.as_deref(), Some("ao" | "as")), "{conn:?}");
            slots.unreserve(place);
        }
    }

    #[test]
    fn a_new_connection_is_not_blamed_for_a_detached_holders_leak() {
        let slots = Slots::<String>::new(1);
        let by = std::panic::Location::caller();
        let a = slots.fill(slots.reserve().unwrap(), "a".into(), 1, 0, u64::MAX, 1);
        slots.of(&a).holding.taken(0, by);
        // Detached: taken out without `given_back`, its place given back.
        let (conn, place) = slots.take(a);
        assert!(conn.is_some());
        slots.unreserve(place);
        // Much later a new connection fills the slot; before its hand-out
        // stamps it, a scan must not report the old holder's stamp.
        let b = slots.fill(slots.reserve().unwrap(), "b".into(), 2, 10_000, u64::MAX, 2);
        let i = b.index();
        assert_eq!(slots.leak(i, 10_000, 100), None, "no holder yet");
        slots.of(&b).holding.taken(10_000, by);
        assert_eq!(slots.leak(i, 10_050, 100), None, "held 50 ms");
        assert_eq!(
            slots
                .leak(i, 10_100, 100)
                .map(|(s, held, _, first)| (s, held, first)),
            Some((2, 100, true))
        );
        // Reported again once the holding has doubled, and not before.
        assert_eq!(slots.leak(i, 10_150, 100), None, "held 150 ms");
        assert_eq!(
            slots
                .leak(i, 10_200, 100)
                .map(|(s, held, _, first)| (s, held, first)),
            Some((2, 200, false))
        );
        assert_eq!(slots.leak(i, 10_399, 100), None, "held 399 ms");
        assert_eq!(slots.leak(i, 10_400, 100).map(|r| r.1), Some(400));
        let (_conn, place) = slots.take(b);
        slots.unreserve(place);
    }

    #[test]
    fn keys_pack_index_and_generation_and_are_never_zero() {
        for (i, g) in [(0, 0), (1, 1), ((1 << 20) - 1, GEN_MASK), (7, GEN_MASK + 5)] {
            let k = SlotKey::new(i, g);
            assert_ne!(k.to_bits(), 0);
            assert_eq!(k.index(), i);
            assert_eq!(k.generation(), g & GEN_MASK);
            assert_eq!(SlotKey::from_bits(k.to_bits()), Some(k));
        }
        assert_eq!(SlotKey::from_bits(0), None);
    }
}
