//! The waiter queue: callers that found nothing idle and no free place
//! park here, releasers hand them a connection (or a place) directly,
//! oldest first, and the pool's sweeper times them out.
//!
//! # Protocol
//!
//! A waiter is a small [`Node`] (one state word, a waker, its deadline),
//! taken from the thread's spares where it has one ([`recycle`]).
//! Registering pushes it onto `arrivals`, a lock-free stack (one CAS),
//! then counts it live in `ctl` (one add). Everything else happens to the
//! **line**, a private FIFO list that only the holder of the `SERVING` bit
//! of `ctl` reads or writes: whoever holds it moves `arrivals` into the
//! line (one swap, reversed: oldest first) and works on it.
//!
//! - **Serve.** A releaser with a grant takes `SERVING` (one CAS) and
//!   hands the grant to the oldest live node (a CAS of the node's state
//!   `WAITING -> SLOT(i)` or `PLACE(i)`), dropping dead nodes it meets.
//!   If another thread holds `SERVING`, the releaser looks again a
//!   bounded number of times, a spin-loop pause apart (`SERVE_LOOKS`: a
//!   holder lets go within a few cache misses, and a grant served at once
//!   reaches its waiter sooner than a deposit would); then it stops
//!   waiting: it puts its grant in `deposits` and sets `RECHECK`, and the
//!   holder serves every deposit before it lets go. (`SERVING` is never
//!   waited for without bound: a holder descheduled mid-serve delays no
//!   release beyond those looks, and a release always finishes in a
//!   bounded number of its own steps.)
//! - **Let go** ([`Waiters::unlock`]): serve the deposits; clear `RECHECK`
//!   and look again if it is set; close every node if `CLOSE` is set; wake
//!   every node if `WAKE` is set; else clear `SERVING` with a CAS that
//!   fails if any of those bits arrived meanwhile, and that also takes the
//!   node a releaser served off the live count (a serve costs two
//!   read-modify-writes of `ctl`: take and let go) and sets the hint
//!   `HANDED` (the idle set is likely empty: arriving `get`s search no
//!   further than their own thread's connection and shard, until a
//!   re-check finds something); then wake that node.
//! - **Cancel.** A waiter leaving (its `get` dropped, a re-check that found
//!   something, its own timer) takes itself off the live count, then CASes
//!   its node `WAITING -> CANCELLED`. If that fails it was served (the
//!   grant is the leaver's to give back, I5) or timed out, and it counts
//!   itself back; for that moment the count read one low, so the leaver
//!   then re-checks for a waiter a releaser may have missed (`Core::rescue`).
//!   Counting out first means that a releaser never loops on a waiter on
//!   its way out. The dead node stays linked until a holder drops it.
//! - **Compact.** A registration that finds more dead nodes than live ones
//!   (plus `RECLAIM_SLACK`) takes `SERVING` if it is free and drops every
//!   dead node of the line: memory stays O(live waiters), whatever the
//!   pattern of cancellations, a live waiter at the head included.
//! - **Time out.** Deadlines live in the nodes. The sweeper (the pool's
//!   background task) takes `SERVING`, moves `WAITING -> TIMED_OUT` every
//!   node whose deadline passed, and sleeps until the earliest one left
//!   (`armed`). A waiting `get` pays nothing for its deadline unless it is
//!   earlier than `armed`, when it wakes the sweeper. With no sweeper
//!   (`armed == OFF`) a waiter arms a Tokio timer of its own.
//!
//! # Lost wake-ups (I4)
//!
//! A waiter pushes and counts its node (SeqCst), issues a SeqCst fence,
//! and *then* re-checks the idle set and the free places; a releaser that
//! found no waiter ([`any`](Waiters::any)) shelves its connection (ending
//! in a SeqCst operation of the idle set's) and *then* reads `ctl` again
//! (SeqCst). In the total order of SeqCst operations one of the two comes
//! second and sees the other. A node served before its registration
//! counted it makes the count read one low for that moment; its own
//! registration then counts, fences and re-checks, taking (and passing on)
//! anything shelved meanwhile.
//!
//! # Invariants kept
//!
//! - Every node is linked (in `arrivals` or the line) from its push until
//!   a holder unlinks it; each link owns one `Arc` reference. A node is
//!   reused only once its waiter holds the last reference (no link, no
//!   server between its serving CAS and its wake-up), reset, and only by a
//!   registration on the thread that let it go. Only the
//!   `SERVING` holder touches the line or unlinks.
//! - Order (I7): the line is oldest first, `arrivals` newest first, and
//!   every node in the line was pushed before every node in `arrivals`:
//!   a server that takes the first live node of the line (moving
//!   `arrivals` in when the line has none) serves the oldest live waiter.
//! - A node leaves `WAITING` exactly once; whoever moves it takes one off
//!   the live count: a canceller before its CAS (and back on failure), a
//!   releaser's serve when it lets go, every other end at once. So the
//!   count reads high only while the line is held (a releaser then
//!   deposits: it never loops) and one low only around a cancel that lost
//!   its race (which then re-checks). A grant
//!   written into a node is its waiter's until taken or, if the waiter
//!   left, given back by the waiter's guard.
//! - No grant is stranded: a deposit is followed by a `RECHECK` set while
//!   `SERVING` is held (the holder's let-go then serves it), or its
//!   depositor takes `SERVING` itself and serves it.
//! - Every node with a deadline is seen by a serving sweeper: the sweeper
//!   stores `armed` (SeqCst) before it lets go and then reads `arrivals`
//!   (SeqCst), sweeping again if a node arrived; a registration pushes
//!   (SeqCst) and then reads `armed` (SeqCst), waking the sweeper if its
//!   deadline is earlier; a holder that moves nodes into the line after
//!   the sweep wakes it for an earlier deadline too.

use crossbeam_utils::CachePadded;

use crate::clock::NO_DEADLINE;
use crate::sync::{
    self, Arc, ArrayQueue, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, AtomicWaker, Ordering,
    RECLAIM_SLACK, SERVE_LOOKS, UnsafeCell, fence, mutant,
};
use std::ptr;
use std::task::{Context, Poll};

const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const WAITING: u64 = 0;
const CANCELLED: u64 = 1;
const CLOSED: u64 = 2;
const SLOT: u64 = 3;
const PLACE: u64 = 4;
const TIMED_OUT: u64 = 5;

/// `ctl`: one thread holds the line.
const SERVING: u64 = 1;
/// `ctl`: a grant was deposited while the line was held.
const RECHECK: u64 = 1 << 1;
/// `ctl`: `close_all` asks the holder to close every node.
const CLOSE: u64 = 1 << 2;
/// `ctl`: the sweeper stopped: wake every node (to arm its own timer).
const WAKE: u64 = 1 << 3;
/// `ctl`: a hint, read by no part of the protocol. The last serve handed
/// its grant to a waiter, so the idle set is likely empty: a `get` that
/// misses its own thread's connection and shard goes straight to
/// registering (whose re-check searches everything) instead of searching
/// the empty set twice. Set by a serve's let-go CAS (no write of its own);
/// cleared by a re-check that finds something ([`Waiters::found`]).
const HANDED: u64 = 1 << 4;
/// `ctl`: one live waiter (the count fills the bits above the flags; it
/// wraps, and is read as signed: see the module docs on a node served
/// before it was counted).
const LIVE: u64 = 1 << 8;

/// `armed` while no sweeper serves.
const OFF: u64 = u64::MAX;
/// `armed` while a sweeper serves and no deadline is due.
const UNARMED: u64 = u64::MAX - 1;

/// What a releaser passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A BUSY slot holding a connection, now owned by the receiver.
    Slot(u32),
    /// A reserved, empty slot: permission to connect.
    Place(u32),
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Served with a grant.
    Granted(Grant),
    /// The pool closed.
    Closed,
    /// Its deadline passed.
    TimedOut,
}

impl Grant {
    fn encode(self) -> u64 {
        match self {
            Grant::Slot(i) => (u64::from(i) << TAG_BITS) | SLOT,
            Grant::Place(i) => (u64::from(i) << TAG_BITS) | PLACE,
        }
    }
}

/// Decodes a state word that is no longer `WAITING`; `None` for
/// `CANCELLED`.
fn decode(word: u64) -> Option<Outcome> {
    let i = (word >> TAG_BITS) as u32;
    match word & TAG_MASK {
        SLOT => Some(Outcome::Granted(Grant::Slot(i))),
        PLACE => Some(Outcome::Granted(Grant::Place(i))),
        CLOSED => Some(Outcome::Closed),
        TIMED_OUT => Some(Outcome::TimedOut),
        _ => None,
    }
}

/// A deposited grant (an `encode()`d word).
fn deposited(word: u64) -> Grant {
    match decode(word) {
        Some(Outcome::Granted(g)) => g,
        _ => unreachable!("only grants are deposited"),
    }
}

/// One parked `get`.
#[derive(Debug)]
pub(crate) struct Node {
    /// `WAITING`, `CANCELLED`, `CLOSED`, `TIMED_OUT`, or `SLOT`/`PLACE`
    /// with the slot index in the upper bits. Leaves `WAITING` once.
    state: AtomicU64,
    waker: AtomicWaker,
    /// In the pool clock's ticks; `NO_DEADLINE` if none. Written by the
    /// registration that takes the node (new, or this thread's spare)
    /// before its push publishes it (a SeqCst CAS), and read only by those
    /// who took it from `arrivals` after that push: Relaxed suffices.
    /// std's atomic under loom too: it orders nothing, and a spare node is
    /// never reused in a model.
    deadline: std::sync::atomic::AtomicU64,
    /// The next node: towards older ones in `arrivals`, younger ones in
    /// the line.
    next: AtomicPtr<Node>,
}

impl Node {
    fn new(deadline: u64) -> Self {
        Self {
            state: AtomicU64::new(WAITING),
            waker: AtomicWaker::new(),
            deadline: std::sync::atomic::AtomicU64::new(deadline),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed)
    }

    /// Polls for the outcome, registering the waker while still waiting.
    #[inline]
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        // Acquire pairs with the Release of the serving CAS, so the slot's
        // connection (or emptiness) is visible to the waiter.
        if let Some(o) = decode(self.state.load(Ordering::Acquire)) {
            return Poll::Ready(o);
        }
        self.waker.register(cx.waker());
        // Re-read after registering: a server that finished in between woke
        // the old waker (or none); this read sees its CAS.
        match decode(self.state.load(Ordering::Acquire)) {
            Some(o) => Poll::Ready(o),
            None => Poll::Pending,
        }
    }

    /// Moves `WAITING -> to`; on failure returns the word found.
    fn finish(&self, to: u64) -> Result<(), u64> {
        // Release publishes the grant's slot to the waiter (its Acquire in
        // `poll`); Acquire on failure lets a canceller see what it was given.
        self.state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }

    fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }
}

/// Spare nodes a thread keeps: as many as the waits it has at once in a
/// queueing pool, within reason (a runtime worker runs several).
#[cfg(not(latchless_loom))]
const SPARES: usize = 4;

/// A thread's spare nodes: nodes whose waiters held them alone when they
/// finished, reset for the next registrations on this thread.
#[cfg(not(latchless_loom))]
struct Spares {
    nodes: [std::cell::Cell<Option<Arc<Node>>>; SPARES],
    /// `nodes[..len]` are `Some`.
    len: std::cell::Cell<usize>,
}

#[cfg(not(latchless_loom))]
std::thread_local! {
    static SPARE: Spares = const {
        Spares {
            nodes: [const { std::cell::Cell::new(None) }; SPARES],
            len: std::cell::Cell::new(0),
        }
    };
}

/// A node for a new registration: one of this thread's spares, or a new
/// one.
fn fresh(deadline: u64) -> Arc<Node> {
    #[cfg(not(latchless_loom))]
    if let Ok(Some(node)) = SPARE.try_with(|s| {
        let n = s.len.get().checked_sub(1)?;
        s.len.set(n);
        s.nodes[n % SPARES].take()
    }) {
        node.deadline.store(deadline, Ordering::Relaxed);
        return node;
    }
    Arc::new(Node::new(deadline))
}

/// Lets go of a waiter's node once its wait is over: kept, reset, as this
/// thread's spare if nothing else holds it (no link of the line or of
/// `arrivals`, no server on its way to wake it) and the thread keeps fewer
/// than [`SPARES`], so that a pool that queues allocates nothing per wait;
/// dropped otherwise. Spares are freed when their thread exits.
#[cfg(not(latchless_loom))]
pub(crate) fn recycle(mut node: Arc<Node>) {
    // `get_mut` succeeds only for the last reference (its Acquire orders
    // every other holder's use before the reset).
    let Some(n) = Arc::get_mut(&mut node) else {
        return;
    };
    *n.state.get_mut() = WAITING;
    *n.next.get_mut() = ptr::null_mut();
    // A waker registered after the server's wake took the one before.
    let stale = std::mem::replace(&mut n.waker, AtomicWaker::new());
    // A full set, or a thread on its way out, drops the node (outside the
    // thread-local: a waker's drop may run a task's).
    let left = SPARE.try_with(|s| {
        let n = s.len.get();
        if n >= SPARES {
            return Some(node);
        }
        s.nodes[n].set(Some(node));
        s.len.set(n + 1);
        None
    });
    drop(stale);
    drop(left);
}

/// Loom's models see every node allocated anew.
#[cfg(latchless_loom)]
pub(crate) fn recycle(node: Arc<Node>) {
    drop(node);
}

/// The line: the `SERVING` holder's FIFO of nodes, oldest first. Each
/// pointer owns one `Arc` reference.
struct Line {
    head: *const Node,
    tail: *const Node,
    /// Whether the deadlines along the line never decrease (then a sweep
    /// stops at the first live node not yet due).
    sorted: bool,
    /// The latest deadline linked in.
    last: u64,
}

impl Line {
    const EMPTY: Self = Self {
        head: ptr::null(),
        tail: ptr::null(),
        sorted: true,
        last: 0,
    };

    /// Links `raw` (a node whose reference the line takes) at the back.
    fn append(&mut self, raw: *const Node) {
        // SAFETY: a node the caller owns a reference to, now the line's.
        let deadline = unsafe { &*raw }.deadline();
        self.sorted &= deadline >= self.last;
        self.last = self.last.max(deadline);
        if self.tail.is_null() {
            self.head = raw;
        } else {
            // SAFETY: the line's last node, ours.
            unsafe { &*self.tail }
                .next
                .store(raw.cast_mut(), Ordering::Relaxed);
        }
        self.tail = raw;
    }

    /// Unlinks the front node, whose reference the caller now owns.
    fn unlink_front(&mut self) -> Option<Arc<Node>> {
        let head = self.head;
        if head.is_null() {
            return None;
        }
        // SAFETY: a linked node, owned by the line's reference.
        self.head = unsafe { &*head }.next.load(Ordering::Relaxed);
        if self.head.is_null() {
            *self = Self::EMPTY;
        }
        // SAFETY: the line's reference, unlinked: now ours.
        Some(unsafe { Arc::from_raw(head) })
    }
}

/// What every registration and every serve writes, in one cache line: a
/// registration pushes onto `arrivals` and counts in `ctl`; a serve takes
/// `ctl`, moves `arrivals` into the line and works on the line. Apart,
/// a waiting cycle would move three lines between cores instead of one.
/// Nobody writes it while nobody waits, so a release's look at `ctl`
/// stays a read of a shared line.
#[repr(C)]
struct Hot {
    /// Flags and the live count (module docs).
    ctl: AtomicU64,
    /// Nodes pushed and not yet moved into the line, newest first.
    arrivals: AtomicPtr<Node>,
    line: UnsafeCell<Line>,
}

// One line of 64 bytes holds it (a loom model's types are larger).
#[cfg(not(latchless_loom))]
const _: () = assert!(std::mem::size_of::<Hot>() <= 64);

/// The FIFO of parked callers.
pub(crate) struct Waiters {
    hot: CachePadded<Hot>,
    /// Grants handed over while another thread held the line. Never
    /// full: there are no more grants than slots.
    deposits: ArrayQueue<u64>,
    /// Nodes cancelled and still linked: the compaction's trigger.
    dead: AtomicUsize,
    /// When the sweeper looks next (pool clock ticks), `UNARMED`, or `OFF`.
    armed: AtomicU64,
    /// A waiter or holder wants the sweeper earlier than `armed`.
    kicked: AtomicBool,
    sweeper: AtomicWaker,
    /// How many more looks a releaser takes at a held line before it
    /// deposits ([`looks_for`]).
    looks: u32,
}

/// [`SERVE_LOOKS`] on a machine with more than one CPU; none on one,
/// where a holder is on the same CPU as the releaser looking, and cannot
/// let go until the releaser stops.
fn looks_for(cpus: usize) -> u32 {
    if cpus > 1 { SERVE_LOOKS } else { 0 }
}

// SAFETY: the raw pointers in `line` and `arrivals` are `Arc<Node>`
// references (and `Node` is `Send + Sync`); the line is only touched by
// the holder of `SERVING`, whose CAS (Acquire) and release (Release)
// order every holder's accesses after the previous one's.
unsafe impl Send for Waiters {}
// SAFETY: as above.
unsafe impl Sync for Waiters {}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("live", &self.live())
            .finish()
    }
}

impl Waiters {
    /// A queue for a pool of `slots` slots (the most grants at once).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            hot: CachePadded::new(Hot {
                ctl: AtomicU64::new(0),
                arrivals: AtomicPtr::new(ptr::null_mut()),
                line: UnsafeCell::new(Line::EMPTY),
            }),
            deposits: ArrayQueue::new(slots.max(1)),
            dead: AtomicUsize::new(0),
            armed: AtomicU64::new(OFF),
            kicked: AtomicBool::new(false),
            sweeper: AtomicWaker::new(),
            looks: looks_for(sync::cpus()),
        }
    }

    /// Callers currently waiting.
    pub(crate) fn live(&self) -> usize {
        usize::try_from((self.hot.ctl.load(Ordering::Relaxed) as i64) >> 8).unwrap_or(0)
    }

    /// Whether a waiter may want serving. SeqCst: the releaser's half of
    /// the lost-wake-up argument (module docs). One load; 0 with no waiter.
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        self.hot.ctl.load(Ordering::SeqCst) as i64 >= LIVE as i64
    }

    /// Whether a `get` should search no further than its own thread's
    /// connection and shard: others wait (a release serves them before it
    /// shelves), or the last serve went to a waiter (`HANDED`). One load,
    /// of the word [`any`](Self::any) reads; a hint only, since the
    /// re-check after registering searches everything.
    #[inline(always)]
    pub(crate) fn near_only(&self) -> bool {
        // The live count sits above `HANDED` (and the other flags below):
        // a count of one or more, or `HANDED` with none, compares at or
        // above it; a count read one low (a cancel's moment) below.
        self.hot.ctl.load(Ordering::Relaxed) as i64 >= HANDED as i64
    }

    /// A re-check after registering found an idle connection or a free
    /// place: the pool is not saturated, so `get`s search all of the idle
    /// set again. Writes only when `HANDED` was set.
    pub(crate) fn found(&self) {
        if self.hot.ctl.load(Ordering::Relaxed) & HANDED != 0 {
            self.hot.ctl.fetch_and(!HANDED, Ordering::Relaxed);
        }
    }

    /// Registers a new waiter with `deadline` (pool clock ticks, or
    /// `NO_DEADLINE`), or `None` if `max` are already waiting. The caller
    /// must re-check the idle set and free places afterwards. `spare`
    /// takes grants a compaction found deposited and nobody waiting for.
    pub(crate) fn register(
        &self,
        max: Option<usize>,
        deadline: u64,
        spare: &mut dyn FnMut(Grant),
    ) -> Option<Arc<Node>> {
        let live = self.live();
        if max.is_some_and(|m| live >= m) {
            return None;
        }
        if self.dead.load(Ordering::Relaxed) > live.saturating_add(RECLAIM_SLACK) {
            self.compact(spare);
        }
        let node = fresh(deadline);
        let raw = Arc::into_raw(Arc::clone(&node)).cast_mut();
        let mut top = self.hot.arrivals.load(Ordering::Relaxed);
        loop {
            // SAFETY: `raw` is ours until the CAS publishes it.
            unsafe { &*raw }.next.store(top, Ordering::Relaxed);
            // SeqCst: the push is the registration's half of the sweeper's
            // argument (module invariants); Release publishes the node.
            match self.hot.arrivals.compare_exchange_weak(
                top,
                raw,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => top = now,
            }
        }
        // Counted after the push, so that a releaser that sees the count
        // finds the node (module docs).
        let mut ctl = self.hot.ctl.load(Ordering::Relaxed);
        loop {
            if max.is_some_and(|m| (ctl as i64 >> 8) >= m as i64) {
                // Over the bound after all: withdraw the node just pushed.
                return match self.cancel(&node) {
                    None => None,
                    // Served before it was counted: count it and keep it.
                    Some(_) => {
                        self.hot.ctl.fetch_add(LIVE, Ordering::SeqCst);
                        fence(Ordering::SeqCst);
                        Some(node)
                    }
                };
            }
            // SeqCst, then a SeqCst fence before the caller's re-check: the
            // waiter's half of the lost-wake-up argument (module docs).
            match self.hot.ctl.compare_exchange_weak(
                ctl,
                ctl.wrapping_add(LIVE),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => ctl = now,
            }
        }
        fence(Ordering::SeqCst);
        Some(node)
    }

    /// Whether a sweeper will time out a node with `deadline` (waking it
    /// now if the deadline is earlier than it planned); `false` if no
    /// sweeper serves, and the waiter must arm a timer of its own. Call
    /// after registering, and again after each wake-up.
    #[inline]
    pub(crate) fn swept(&self, deadline: u64) -> bool {
        // SeqCst: after the push (module invariants).
        let armed = self.armed.load(Ordering::SeqCst);
        if armed == OFF {
            return false;
        }
        if deadline < armed {
            self.kick();
        }
        true
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.sweeper.wake();
    }

    /// The sweeper's wake-up check: registers its waker, then whether a
    /// kick came since the last call.
    pub(crate) fn kicked(&self, cx: &mut Context<'_>) -> bool {
        self.sweeper.register(cx.waker());
        self.kicked.swap(false, Ordering::AcqRel)
    }

    /// Takes `SERVING` if nobody holds it.
    fn try_lock(&self) -> bool {
        let mut ctl = self.hot.ctl.load(Ordering::Relaxed);
        while ctl & SERVING == 0 {
            match self.hot.ctl.compare_exchange_weak(
                ctl,
                ctl | SERVING,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => ctl = now,
            }
        }
        false
    }

    /// Takes `SERVING` within `looks` more looks, a spin-loop pause
    /// apart (a bounded wait: the caller deposits if it fails). A
    /// holder lets go within a few cache misses, and a grant served by its
    /// releaser reaches its waiter then, woken from the releaser's thread;
    /// a deposit waits for the holder's let-go, and its waiter is woken
    /// from the holder's thread, behind the holder's own.
    #[cold]
    #[inline(never)]
    fn look_again(&self) -> bool {
        for _ in 0..self.looks {
            sync::spin_loop();
            // loom mutant: look_skips_lock (a second look that serves
            // without taking the line), see loom-tests/run-mutants.sh
            if mutant("look_skips_lock") || self.try_lock() {
                return true;
            }
        }
        false
    }

    /// Sets `bit` for the holder to act on, or takes `SERVING` (then the
    /// caller acts, in `unlock`). True if the caller holds the line.
    fn request(&self, bit: u64) -> bool {
        let mut ctl = self.hot.ctl.load(Ordering::Relaxed);
        loop {
            let (next, locked) = if ctl & SERVING == 0 {
                (ctl | SERVING | bit, true)
            } else {
                (ctl | bit, false)
            };
            // AcqRel: Release hands a deposit to the holder that clears the
            // bit; Acquire orders a new holder after the previous one.
            match self
                .hot
                .ctl
                .compare_exchange_weak(ctl, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return locked,
                Err(now) => ctl = now,
            }
        }
    }

    /// Hands `grant` to the oldest live waiter; gives it back if there is
    /// none. Grants that other releasers deposited while this one held the
    /// line and that nobody takes go to `spare`.
    pub(crate) fn serve(&self, grant: Grant, spare: &mut dyn FnMut(Grant)) -> Result<(), Grant> {
        if self.try_lock() || self.look_again() {
            let mine = self.hand(grant);
            self.unlock(u64::from(mine.is_ok()), spare);
            // Woken once counted out and the line let go: the waiter, on
            // its way at once, neither reads a stale count nor meets the
            // line held.
            return mine.map(|node| node.waker.wake());
        }
        // Held: deposit, then make sure a holder serves the deposit.
        if let Err(word) = self.deposits.push(grant.encode()) {
            // Unreachable (one grant per slot); not losing it if it were.
            return Err(deposited(word));
        }
        // loom mutant: deposit_unflagged (a deposit left for a holder that
        // may already be letting go), see loom-tests/run-mutants.sh
        if mutant("deposit_unflagged") {
            return Ok(());
        }
        if self.request(RECHECK) {
            self.unlock(0, spare);
        }
        Ok(())
    }

    /// Hands `grant` to the oldest live node of the line and returns it,
    /// to be counted out and woken by the caller (who holds `SERVING`).
    fn hand(&self, grant: Grant) -> Result<Arc<Node>, Grant> {
        loop {
            let Some(node) = self.pop_oldest() else {
                return Err(grant);
            };
            if node.finish(grant.encode()).is_ok() {
                sync::after_publish();
                return Ok(node);
            }
            self.dead.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Lets go of `SERVING`: serves the deposits, and acts on `CLOSE`
    /// and `WAKE`, until none is left at the moment of letting go; takes
    /// the `left` nodes the caller served off the live count in the same
    /// CAS (no read-modify-write of their own).
    fn unlock(&self, left: u64, spare: &mut dyn FnMut(Grant)) {
        loop {
            while let Some(word) = self.deposits.pop() {
                match self.hand(deposited(word)) {
                    Ok(node) => {
                        self.leave();
                        node.waker.wake();
                    }
                    Err(g) => spare(g),
                }
            }
            let ctl = self.hot.ctl.load(Ordering::Acquire);
            if ctl & (RECHECK | CLOSE | WAKE) != 0 {
                // Acquire: a depositor's push (before its RECHECK) is seen
                // by the pops of the next round.
                let bits = self
                    .hot
                    .ctl
                    .fetch_and(!(RECHECK | CLOSE | WAKE), Ordering::AcqRel);
                if bits & (CLOSE | WAKE) != 0 {
                    self.each_node(bits & CLOSE != 0);
                }
                continue;
            }
            // Release: the next holder sees the line as this one left it.
            // A node served sets the hint `HANDED` in the same CAS.
            let handed = if left != 0 { HANDED } else { 0 };
            let next = (ctl & !SERVING | handed).wrapping_sub(left.wrapping_mul(LIVE));
            if self
                .hot
                .ctl
                .compare_exchange(ctl, next, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Takes a node off the line's front, moving `arrivals` in when the
    /// line is empty.
    fn pop_oldest(&self) -> Option<Arc<Node>> {
        self.hot.line.with_mut(|line| {
            // SAFETY: the caller holds `SERVING`: the line is ours.
            let line = unsafe { &mut *line };
            if line.head.is_null() {
                self.take_arrivals(line, false);
            }
            line.unlink_front()
        })
    }

    /// Moves every node of `arrivals` to the line's back, oldest first;
    /// wakes the sweeper for a deadline earlier than it planned for (unless
    /// the sweeper itself is the caller).
    fn take_arrivals(&self, line: &mut Line, sweeping: bool) {
        // SeqCst: ordered with the registrations' pushes (module invariants).
        let mut top = self.hot.arrivals.swap(ptr::null_mut(), Ordering::SeqCst);
        if top.is_null() {
            return;
        }
        // Reverse the stack in place (newest first -> oldest first).
        let newest = top.cast_const();
        let mut oldest: *const Node = ptr::null();
        while !top.is_null() {
            // SAFETY: a node just taken from `arrivals`: ours.
            let node = unsafe { &*top };
            let older = node.next.load(Ordering::Relaxed);
            // loom mutant: lifo_waiters (the stack appended unreversed),
            // see loom-tests/run-mutants.sh
            if !mutant("lifo_waiters") {
                node.next.store(oldest.cast_mut(), Ordering::Relaxed);
            }
            oldest = top;
            top = older;
        }
        let mut p = if mutant("lifo_waiters") {
            newest
        } else {
            oldest
        };
        let mut earliest = NO_DEADLINE;
        while !p.is_null() {
            // SAFETY: taken from `arrivals` above: ours until linked.
            let node = unsafe { &*p };
            earliest = earliest.min(node.deadline());
            line.append(p);
            p = node.next.load(Ordering::Relaxed);
        }
        if earliest != NO_DEADLINE && !sweeping {
            let armed = self.armed.load(Ordering::SeqCst);
            if armed != OFF && earliest < armed {
                self.kick();
            }
        }
    }

    /// Walks the whole line (after moving `arrivals` in): drops dead
    /// nodes, and finishes each live one with `CLOSED` (`close`) or, if
    /// not closing, wakes it.
    fn each_node(&self, close: bool) {
        self.retain(|node| {
            if close {
                if node.finish(CLOSED).is_ok() {
                    self.leave();
                    node.waker.wake();
                    return false;
                }
            } else if node.is_waiting() {
                node.waker.wake();
            }
            node.is_waiting()
        });
    }

    /// Keeps the nodes of the line (after moving `arrivals` in) for which
    /// `keep` is true, dropping dead ones (`keep` is not asked about
    /// those); recomputes the line's order. The caller holds `SERVING`.
    fn retain(&self, mut keep: impl FnMut(&Node) -> bool) {
        self.hot.line.with_mut(|line| {
            // SAFETY: the caller holds `SERVING`: the line is ours.
            let line = unsafe { &mut *line };
            self.take_arrivals(line, false);
            let mut p = std::mem::replace(line, Line::EMPTY).head;
            while !p.is_null() {
                // SAFETY: a node of the line, unlinked here: its reference
                // is ours until it is linked back or dropped.
                let node = unsafe { Arc::from_raw(p) };
                p = node.next.load(Ordering::Relaxed);
                let waiting = node.is_waiting();
                if !waiting {
                    // Cancelled: every other end unlinks its node at once.
                    self.dead.fetch_sub(1, Ordering::Relaxed);
                }
                if !(waiting && keep(&node)) {
                    continue;
                }
                node.next.store(ptr::null_mut(), Ordering::Relaxed);
                line.append(Arc::into_raw(node));
            }
        });
    }

    /// Drops every dead node, if the line is free (module docs: Compact).
    fn compact(&self, spare: &mut dyn FnMut(Grant)) {
        if self.try_lock() {
            // loom mutant: compact_drops_live (live nodes unlinked with the
            // dead: their waiters are never served), see run-mutants.sh
            self.retain(|_| !mutant("compact_drops_live"));
            self.unlock(0, spare);
        }
    }

    /// Wakes every queued waiter with `Closed` (now, or when the thread
    /// that holds the line lets go).
    pub(crate) fn close_all(&self, spare: &mut dyn FnMut(Grant)) {
        if self.request(CLOSE) {
            self.unlock(0, spare);
        }
    }

    /// One node left `WAITING`.
    fn leave(&self) {
        self.hot.ctl.fetch_sub(LIVE, Ordering::Relaxed);
    }

    /// Withdraws `node`. `None` if it was still waiting (now cancelled);
    /// otherwise how it ended, which the caller now owns.
    pub(crate) fn cancel(&self, node: &Node) -> Option<Outcome> {
        // Dead before the CAS that makes it dead, so that a holder that
        // drops it (and uncounts it) comes after; out of the live count
        // before it too, so that no releaser ever loops on a waiter that
        // is on its way out (module docs, "Cancel").
        self.dead.fetch_add(1, Ordering::Relaxed);
        // loom mutant: cancel_counted_late (spins a releaser), see
        // loom-tests/run-mutants.sh
        let late = mutant("cancel_counted_late");
        if !late {
            self.leave();
        }
        match node.finish(CANCELLED) {
            Ok(()) => {
                if late {
                    self.leave();
                }
                None
            }
            Err(word) => {
                self.dead.fetch_sub(1, Ordering::Relaxed);
                if !late {
                    // It ended otherwise, which uncounted it already.
                    self.hot.ctl.fetch_add(LIVE, Ordering::SeqCst);
                }
                decode(word)
            }
        }
    }

    /// A sweeper starts serving (the background task).
    pub(crate) fn start_sweeping(&self) {
        self.armed.store(UNARMED, Ordering::SeqCst);
    }

    /// The sweeper stops: waiters arm their own timers from now on (every
    /// node is woken to look).
    pub(crate) fn stop_sweeping(&self, spare: &mut dyn FnMut(Grant)) {
        self.armed.store(OFF, Ordering::SeqCst);
        if self.request(WAKE) {
            self.unlock(0, spare);
        }
    }

    /// Times out every node whose deadline is at or before `now`, counting
    /// each in `swept` before waking it; returns the earliest deadline
    /// left (`NO_DEADLINE` if none), or `None` if another thread holds the
    /// line (try again shortly). With `arm`, the caller is the sweeper,
    /// which sleeps until that deadline (`armed`); without, a one-off pass
    /// (`Pool::maintain`) that leaves `armed` alone.
    pub(crate) fn sweep(
        &self,
        now: u64,
        swept: &std::sync::atomic::AtomicU64,
        arm: bool,
        spare: &mut dyn FnMut(Grant),
    ) -> Option<u64> {
        // loom mutant: sweep_unlocked (the line walked without `SERVING`,
        // racing a server), see loom-tests/run-mutants.sh
        let unlocked = mutant("sweep_unlocked");
        if !unlocked && !self.try_lock() {
            return None;
        }
        let next = loop {
            let mut next = NO_DEADLINE;
            let expire = |node: &Node| {
                // loom mutant: sweep_without_cas (a served node is also
                // timed out), see loom-tests/run-mutants.sh
                if mutant("sweep_without_cas") {
                    node.state.store(TIMED_OUT, Ordering::Release);
                } else if node.finish(TIMED_OUT).is_err() {
                    return;
                }
                self.leave();
                swept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                node.waker.wake();
            };
            let sorted = self.hot.line.with_mut(|line| {
                // SAFETY: we hold `SERVING`: the line is ours.
                let line = unsafe { &mut *line };
                self.take_arrivals(line, true);
                line.sorted
            });
            if sorted {
                // Due nodes are at the front: stop at the first live one
                // not due (dead ones met on the way are dropped).
                while let Some(node) = self.front(now, &mut next) {
                    expire(&node);
                }
            } else {
                self.retain(|node| {
                    if node.deadline() > now {
                        next = next.min(node.deadline());
                        return true;
                    }
                    expire(node);
                    false
                });
            }
            if !arm {
                break next;
            }
            self.armed.store(
                if next == NO_DEADLINE { UNARMED } else { next },
                Ordering::SeqCst,
            );
            // A node pushed after the walk either shows here or read the
            // new `armed` (module invariants).
            if self.hot.arrivals.load(Ordering::SeqCst).is_null() {
                break next;
            }
        };
        if !unlocked {
            self.unlock(0, spare);
        }
        Some(next)
    }

    /// Unlinks the line's front node if it is due by `now` (dropping dead
    /// nodes before it); else records its deadline in `next` and returns
    /// `None`. The caller holds `SERVING`.
    fn front(&self, now: u64, next: &mut u64) -> Option<Arc<Node>> {
        self.hot.line.with_mut(|line| {
            // SAFETY: the caller holds `SERVING`: the line is ours.
            let line = unsafe { &mut *line };
            loop {
                // SAFETY: a linked node, owned by the line's reference.
                let head = unsafe { line.head.as_ref() }?;
                let waiting = head.is_waiting();
                if waiting && head.deadline() > now {
                    *next = head.deadline();
                    return None;
                }
                let node = line.unlink_front()?;
                if waiting {
                    return Some(node);
                }
                self.dead.fetch_sub(1, Ordering::Relaxed);
            }
        })
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        // After the last holder's let-go (Release): the core's count orders
        // this drop after it, but loom cannot see std's `Arc`; this
        // read-modify-write (it reads the latest value) is the edge loom
        // checks.
        self.hot.ctl.fetch_or(0, Ordering::Acquire);
        // Unlinks (and drops the links' references to) every node left.
        self.retain(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Cancellations per churn test (miri runs a few hundred).
    const CHURN: usize = if cfg!(miri) { 300 } else { 10_000 };

    fn granted(node: &Node) -> Poll<Outcome> {
        node.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn nothing(_: Grant) {
        panic!("no spare grant expected");
    }

    fn reg(w: &Waiters) -> Arc<Node> {
        w.register(None, NO_DEADLINE, &mut nothing).unwrap()
    }

    /// Nodes linked (in `arrivals` or the line).
    fn linked(w: &Waiters) -> usize {
        assert!(w.try_lock());
        let mut n = 0;
        w.retain(|_| {
            n += 1;
            true
        });
        let dead = w.dead.load(Ordering::Relaxed);
        w.unlock(0, &mut nothing);
        n + dead
    }

    #[test]
    fn serves_oldest_live_waiter_first_and_skips_cancelled() {
        let w = Waiters::new(4);
        let a = reg(&w);
        let b = reg(&w);
        let c = reg(&w);
        assert_eq!(w.live(), 3);
        assert_eq!(w.cancel(&a), None);
        assert_eq!(w.serve(Grant::Slot(7), &mut nothing), Ok(()));
        assert_eq!(granted(&b), Poll::Ready(Outcome::Granted(Grant::Slot(7))));
        assert_eq!(granted(&c), Poll::Pending);
        assert_eq!(w.live(), 1);
        // A served node cannot be cancelled: the canceller learns the grant.
        assert_eq!(w.serve(Grant::Place(2), &mut nothing), Ok(()));
        assert_eq!(w.cancel(&c), Some(Outcome::Granted(Grant::Place(2))));
        assert_eq!(w.serve(Grant::Slot(1), &mut nothing), Err(Grant::Slot(1)));
        assert!(!w.any());
        assert_eq!(w.dead.load(Ordering::Relaxed), 0);
    }

    /// A waker that counts its wake-ups; its `Arc` counts who holds it.
    struct Counting(AtomicUsize);
    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(not(latchless_loom))]
    #[test]
    fn a_node_its_waiter_held_alone_is_the_next_registrations_and_a_linked_one_is_not() {
        let w = Waiters::new(4);
        let a = w.register(None, 5, &mut nothing).unwrap();
        assert_eq!(w.serve(Grant::Slot(0), &mut nothing), Ok(()));
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(0))));
        // A waker registered after the server's wake: the reset drops it.
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        a.waker.register(&Waker::from(Arc::clone(&counting)));
        let at = Arc::as_ptr(&a);
        recycle(a);
        assert_eq!(Arc::strong_count(&counting), 1, "the stale waker dropped");
        let b = w.register(None, 9, &mut nothing).unwrap();
        assert_eq!(Arc::as_ptr(&b), at, "the spare node");
        assert!(b.is_waiting());
        assert_eq!(b.deadline(), 9);
        assert!(b.next.load(Ordering::Relaxed).is_null());
        // Cancelled, `b` stays linked: not reused, and freed by the line.
        assert_eq!(w.cancel(&b), None);
        let at = Arc::as_ptr(&b);
        recycle(b);
        let c = w.register(None, NO_DEADLINE, &mut nothing).unwrap();
        assert_ne!(Arc::as_ptr(&c), at, "a linked node is not reused");
        assert_eq!(w.serve(Grant::Place(1), &mut nothing), Ok(()));
        assert_eq!(granted(&c), Poll::Ready(Outcome::Granted(Grant::Place(1))));
        assert_eq!(linked(&w), 0);
        assert_eq!(counting.0.load(Ordering::Relaxed), 0);
    }

    #[cfg(not(latchless_loom))]
    #[test]
    fn a_thread_keeps_several_spare_nodes_and_its_registrations_take_each() {
        let w = Waiters::new(4);
        let nodes: Vec<_> = (0..3).map(|_| reg(&w)).collect();
        for i in 0..3 {
            assert_eq!(w.serve(Grant::Slot(i), &mut nothing), Ok(()));
        }
        let mut spare: Vec<_> = nodes.iter().map(Arc::as_ptr).collect();
        for n in nodes {
            assert!(granted(&n).is_ready());
            recycle(n);
        }
        let again: Vec<_> = (0..3).map(|_| reg(&w)).collect();
        let mut reused: Vec<_> = again.iter().map(Arc::as_ptr).collect();
        spare.sort();
        reused.sort();
        assert_eq!(reused, spare, "every spare taken, none allocated");
        for n in &again {
            assert_eq!(w.cancel(n), None);
        }
    }

    #[test]
    fn max_waiters_bounds_registration() {
        let w = Waiters::new(1);
        let a = w.register(Some(1), NO_DEADLINE, &mut nothing).unwrap();
        assert!(w.register(Some(1), NO_DEADLINE, &mut nothing).is_none());
        assert_eq!(w.live(), 1);
        w.close_all(&mut nothing);
        assert_eq!(granted(&a), Poll::Ready(Outcome::Closed));
        assert_eq!(w.live(), 0);
        assert!(w.register(Some(0), NO_DEADLINE, &mut nothing).is_none());
    }

    #[test]
    fn cancelled_nodes_are_compacted_by_registrations() {
        let w = Waiters::new(1);
        for _ in 0..CHURN {
            let n = reg(&w);
            assert_eq!(w.cancel(&n), None);
        }
        let bound = RECLAIM_SLACK + 2;
        assert!(linked(&w) <= bound, "{} nodes linked", linked(&w));
        // A live waiter at the head does not stop it.
        let a = reg(&w);
        for _ in 0..CHURN {
            let n = reg(&w);
            w.cancel(&n);
        }
        assert!(linked(&w) <= bound + 2, "{} nodes linked", linked(&w));
        assert_eq!(w.serve(Grant::Slot(3), &mut nothing), Ok(()));
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(3))));
        assert_eq!(w.serve(Grant::Slot(1), &mut nothing), Err(Grant::Slot(1)));
        assert_eq!((linked(&w), w.live()), (0, 0));
    }

    #[test]
    fn waiters_among_cancelled_ones_keep_their_order() {
        let w = Waiters::new(64);
        let mut live = Vec::new();
        for _ in 0..40 {
            live.push(reg(&w));
            for _ in 0..3 {
                let n = reg(&w);
                w.cancel(&n);
            }
        }
        for (i, node) in live.iter().enumerate() {
            assert_eq!(w.serve(Grant::Slot(i as u32), &mut nothing), Ok(()));
            assert_eq!(
                granted(node),
                Poll::Ready(Outcome::Granted(Grant::Slot(i as u32))),
                "waiter {i} is served in its turn"
            );
        }
        assert_eq!(w.serve(Grant::Slot(99), &mut nothing), Err(Grant::Slot(99)));
        assert_eq!(
            w.hot.ctl.load(Ordering::SeqCst),
            HANDED,
            "no waiter, only the hint"
        );
        assert_eq!(linked(&w), 0);
    }

    #[test]
    fn a_serve_to_a_waiter_leaves_the_hint_until_a_recheck_finds_something() {
        let w = Waiters::new(4);
        assert!(!w.near_only(), "a new pool searches everything");
        assert_eq!(w.serve(Grant::Slot(0), &mut nothing), Err(Grant::Slot(0)));
        assert!(!w.near_only(), "a grant nobody took sets no hint");
        let a = reg(&w);
        assert!(w.near_only() && w.any(), "someone waits");
        assert_eq!(w.serve(Grant::Slot(1), &mut nothing), Ok(()));
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(1))));
        assert!(!w.any(), "nobody waits now");
        assert!(w.near_only(), "but the last grant went to a waiter");
        let b = reg(&w);
        w.found();
        w.cancel(&b);
        assert!(!w.near_only(), "a re-check that found something clears it");
        assert_eq!(w.hot.ctl.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_releaser_looks_again_at_a_held_line_only_with_another_cpu_to_let_it_go() {
        assert_eq!(looks_for(1), 0, "one CPU: the holder cannot run meanwhile");
        assert_eq!(looks_for(2), SERVE_LOOKS);
    }

    #[test]
    fn a_grant_served_while_the_line_is_held_is_deposited_and_served_at_let_go() {
        let w = Waiters::new(4);
        let a = reg(&w);
        let b = reg(&w);
        assert!(w.try_lock(), "as if another releaser held the line");
        assert_eq!(w.serve(Grant::Slot(5), &mut nothing), Ok(()), "deposited");
        assert_eq!(granted(&a), Poll::Pending, "not yet");
        assert_ne!(w.hot.ctl.load(Ordering::SeqCst) & RECHECK, 0);
        w.unlock(0, &mut nothing);
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(5))));
        assert_eq!(granted(&b), Poll::Pending);
        // A deposit nobody waits for goes to `spare`.
        w.cancel(&b);
        assert!(w.try_lock());
        assert_eq!(w.serve(Grant::Place(6), &mut nothing), Ok(()));
        let mut spared = Vec::new();
        w.unlock(0, &mut |g| spared.push(g));
        assert_eq!(spared, [Grant::Place(6)]);
        assert_eq!(w.hot.ctl.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn close_all_waits_for_the_holder_and_closes_every_node() {
        let w = Waiters::new(2);
        let a = reg(&w);
        let b = reg(&w);
        assert!(w.try_lock());
        w.close_all(&mut nothing);
        assert_eq!(granted(&a), Poll::Pending, "the holder closes at let-go");
        w.unlock(0, &mut nothing);
        for n in [&a, &b] {
            assert_eq!(granted(n), Poll::Ready(Outcome::Closed));
        }
        assert_eq!((w.live(), linked(&w)), (0, 0));
        assert!(!w.any());
    }

    #[test]
    fn the_sweeper_times_out_due_nodes_and_reports_the_next_deadline() {
        let w = Waiters::new(1);
        let n = std::sync::atomic::AtomicU64::new(0);
        let sweep = |now| {
            let before = n.load(std::sync::atomic::Ordering::Relaxed);
            w.sweep(now, &n, true, &mut nothing)
                .map(|next| (n.load(std::sync::atomic::Ordering::Relaxed) - before, next))
        };
        w.start_sweeping();
        let a = w.register(None, 10, &mut nothing).unwrap();
        let b = w.register(None, 20, &mut nothing).unwrap();
        let c = w.register(None, NO_DEADLINE, &mut nothing).unwrap();
        assert!(w.swept(30), "a sweeper serves");
        assert_eq!(sweep(5), Some((0, 10)));
        assert_eq!(sweep(15), Some((1, 20)));
        assert_eq!(granted(&a), Poll::Ready(Outcome::TimedOut));
        assert_eq!(granted(&b), Poll::Pending);
        // A served node is not timed out; an unsorted line is walked whole.
        let d = w.register(None, 12, &mut nothing).unwrap();
        assert_eq!(w.serve(Grant::Slot(0), &mut nothing), Ok(()));
        assert_eq!(granted(&b), Poll::Ready(Outcome::Granted(Grant::Slot(0))));
        assert_eq!(sweep(13), Some((1, NO_DEADLINE)));
        assert_eq!(granted(&d), Poll::Ready(Outcome::TimedOut));
        assert_eq!(granted(&c), Poll::Pending);
        assert_eq!(w.live(), 1);
        // The line held: try again later.
        assert!(w.try_lock());
        assert_eq!(sweep(99), None);
        w.unlock(0, &mut nothing);
        w.stop_sweeping(&mut nothing);
        assert!(!w.swept(1), "no sweeper: arm a timer");
        assert_eq!(w.cancel(&c), None);
    }

    #[test]
    fn an_earlier_deadline_than_planned_kicks_the_sweeper() {
        let w = Waiters::new(1);
        w.start_sweeping();
        let _a = w.register(None, 100, &mut nothing).unwrap();
        let n = std::sync::atomic::AtomicU64::new(0);
        assert_eq!(w.sweep(0, &n, true, &mut nothing), Some(100));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(!w.kicked(&mut cx));
        assert!(w.swept(200));
        assert!(!w.kicked(&mut cx), "a later deadline: no kick");
        let _b = w.register(None, 50, &mut nothing).unwrap();
        assert!(w.swept(50));
        assert!(w.kicked(&mut cx), "an earlier one kicks");
    }
}
