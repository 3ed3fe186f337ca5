//! The lock-free waiter queue: callers that found nothing idle and no free
//! place park here, and releasers hand them a connection (or a place)
//! directly, oldest first.
//!
//! # Design
//!
//! HikariCP's hand-off (a releaser gives its connection straight to a thread
//! blocked in `borrow`) without its `SynchronousQueue`: a waiter is a small
//! [`Node`] (allocated only on this slow path) with one atomic state word and
//! an [`AtomicWaker`]. Nodes sit in a lock-free FIFO (`SegQueue`), behind
//! live nodes that reclaims moved ahead of it (see *Reclaim*): at most one
//! in `head`, then at most `MAX_FRONT` (15) in `front`. The line is `head`,
//! then `front`, then the queue, each oldest first.
//!
//! One control word, `ctl`, says who may take which node. From the top:
//! the **tokens** (queued nodes not yet claimed, 26 bits), the **fronts**
//! (nodes in `front`, 4 bits), the **poppers** (servers and closers between
//! their claim and their pop, 8 bits), a deposited grant (20 bits), and the
//! flags `FROM_FRONT` and `FROM_HEAD` (where the reclaimer's node came
//! from), `HEAD` (a node in `head`), `CLOSING`, `DEP` (a server deposited a
//! grant for the node a reclaimer holds) and `PEND` (a reclaimer holds a
//! node it has not settled). Every claim is one CAS on `ctl`, so a claim
//! and the state it claims under are one atomic step.
//!
//! - **Tokens.** A waiter pushes its node *then* adds its token; a popper
//!   takes a token (CAS, never below zero) *then* pops, so a token holder
//!   always finds a node, and nobody ever spins on another thread's
//!   progress (a counter bumped before the push livelocked under loom; the
//!   one exception: a 256th concurrent popper waits for a popper count).
//!   Past 66M queued nodes (about 4.7 GB of them: 26 bits of tokens) a
//!   registration fails as if `max_waiters` were reached.
//! - **Serve.** A server claims the oldest node of the line, except that
//!   where a reclaimer's node with no grant for it stands in the line (after
//!   `head` if it came from `head` or `front`, after `front` if it came
//!   from the queue), it deposits its grant for that node instead (setting
//!   `DEP` and the grant: the reclaimer now owns it and passes it on). It
//!   CASes a node `WAITING -> SLOT(i)` or `PLACE(i)`; the first success is
//!   the oldest live waiter (I7). Nodes found dead are dropped, each
//!   consuming its own claim.
//! - **Time out.** The pool's deadline sweeper (`deadlines.rs`) CASes a
//!   node whose deadline passed `WAITING -> TIMED_OUT` and wakes it; like a
//!   cancelled node it stays in line until a popper drops it.
//! - **Cancel.** A waiter leaving (timeout, drop of the `get` future, or a
//!   re-check that found something) CASes its own node `WAITING -> CANCELLED`.
//!   If that fails it was served: what it was given goes back through the
//!   release path, so nothing is lost (I5). The dead node stays in line
//!   until a popper drops it.
//! - **Reclaim** (issue 10.5: dead nodes bounded). `dead` counts nodes made
//!   dead (cancelled, timed out) and not yet dropped by a popper. When a
//!   registration finds `dead > live + RECLAIM_SLACK`, before pushing its
//!   own node it claims and pops, one at a time and up to `RECLAIM_BATCH`
//!   claims, nodes from the head of the line, holding `PEND` for each (one
//!   reclaimer at a time; the others skip): the `head` node (once a pass),
//!   else the oldest in `front` if `head` is empty, else a queued node if
//!   `front` has room. It claims only while no popper is counted: tokens
//!   are counts, not names, so a server that claimed earlier but pops later
//!   would otherwise get a younger node than the reclaimer's and serve it
//!   first. A dead node it drops. A live one it cannot serve (it holds no
//!   grant) and may not push back behind younger nodes (I7): taken from
//!   `head` or `front` it is the oldest, and goes (back) to `head`; taken
//!   from the queue it goes to the back of `front`. Push, then one CAS that
//!   counts it and releases `PEND`. If that CAS finds a deposit, the
//!   reclaimer serves the grant on like any server (the oldest live waiter,
//!   this node or an older one); if it finds `CLOSING`, it closes what
//!   `close_all` may have missed. A reclaimer that dropped a dead node and
//!   finds a deposit also serves the grant on; if no live waiter is left,
//!   the grant is its own caller's, whose node is returned already served
//!   and never queued.
//! - **Lost wake-ups (I4).** A waiter registers (push, SeqCst token add,
//!   SeqCst fence) and *then* re-checks the idle set and the free places; a
//!   releaser that found no waiter ([`any`](Waiters::any): tokens, `HEAD`,
//!   fronts, or `PEND` without `DEP`) puts its connection back (ending in
//!   a SeqCst CAS or fence of the pool's own, `shards.rs`) and *then*
//!   reads `ctl` again (SeqCst). In the
//!   single total order of SeqCst operations one of the two comes second
//!   and sees the other: the waiter finds the connection, or the releaser
//!   finds the waiter, takes something back and serves. This is the race
//!   bb8#122 lost. A reclaimer's claims move a waiter from its token to
//!   `PEND` and then to `HEAD` or a front count (or to a deposit passed on
//!   to it) in read-modify-writes of `ctl`, each of which reads the one
//!   before it, so `any` stays true for a live waiter in every value of
//!   `ctl` after its token's (it turns false only on a claim whose node is
//!   dead or has a grant on its way).
//!
//! # Invariants kept
//!
//! - `tokens` <= nodes in the queue, fronts <= nodes in `front`, `HEAD` =>
//!   one node in `head` (a reclaimer pushes before it counts); every node
//!   is popped at most once. Only the reclaimer holding `PEND` clears it or
//!   `DEP`, sets `HEAD` (when it holds the node of an empty `head`) or adds
//!   to fronts (never above `MAX_FRONT`).
//! - Order (I7): `head` < `front` < queue, each FIFO; the reclaimer's node
//!   comes right after `head` (from `head` or `front`) or right after
//!   `front` (from the queue): it claims only when no popper is between
//!   claim and pop, so it pops the oldest node of its part, and it puts a
//!   live node back at that place. Servers claim in that order, depositing
//!   at the reclaimer's place (until one has). So a grant goes to the
//!   oldest live waiter, as without reclaim.
//! - A node leaves `WAITING` exactly once; whoever moves it decrements `live`.
//! - A grant written into a node is owned by that node until its waiter
//!   takes it, or, if the waiter is gone, until `Drop` of the waiter's guard
//!   gives it back. A deposited grant is owned by the reclaimer holding
//!   `PEND` until it writes it into a node (or its own caller's).
//! - Bounded garbage: `dead` is incremented before the CAS that kills a
//!   node (so a popper's decrement comes after it), and each registration
//!   over the bound drops dead nodes from the head of the line, moving live
//!   ones out of the way, up to `RECLAIM_BATCH` (> 1) claims; a
//!   registration adds at most one dead node. So dead nodes stay within
//!   about `live + RECLAIM_SLACK + RECLAIM_BATCH`: memory is O(live
//!   waiters), and a release skips O(1) dead nodes amortised (each is
//!   dropped once, by one popper). A live waiter at the head of the line
//!   with cancellations behind it does not stop the reclaim. The
//!   exceptions, each lasting until a release, or until the live waiters
//!   in `head` and `front` leave (served, cancelled, or timed out after
//!   `acquire_timeout`): registrations that find another reclaiming (or a
//!   popper counted) skip; dead nodes in `front` behind the live `head`
//!   wait; and with `front` full (15 parked) behind a live `head`, the
//!   reclaim stops.

use crossbeam_utils::CachePadded;

use crate::sync::{
    Arc, AtomicU64, AtomicUsize, AtomicWaker, Ordering, RECLAIM_SLACK, SegQueue, fence, mutant,
    spin_loop,
};
use std::task::{Context, Poll};

const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const WAITING: u64 = 0;
const CANCELLED: u64 = 1;
const CLOSED: u64 = 2;
const SLOT: u64 = 3;
const PLACE: u64 = 4;
const TIMED_OUT: u64 = 5;

/// `ctl`: a reclaimer holds a claimed node it has not settled.
const PEND: u64 = 1;
/// `ctl`: a server deposited a grant (in `GRANT_BITS`) for that node.
const DEP: u64 = 1 << 1;
/// `ctl`: `close_all` has begun.
const CLOSING: u64 = 1 << 2;
/// `ctl`: one node waits in `head`, older than every other.
const HEAD: u64 = 1 << 3;
/// `ctl`: the reclaimer's node came from `head`.
const FROM_HEAD: u64 = 1 << 4;
/// `ctl`: the reclaimer's node came from `front`.
const FROM_FRONT: u64 = 1 << 5;
/// `ctl`: where a deposited grant is kept (its `encode()`).
const GRANT_SHIFT: u32 = 6;
const GRANT_BITS: u64 = ((1 << 20) - 1) << GRANT_SHIFT;
// Every grant fits: slot indices are below `MAX_POOL_SIZE`.
const _: () =
    assert!(((crate::config::MAX_POOL_SIZE as u64) << TAG_BITS) <= GRANT_BITS >> GRANT_SHIFT);
/// `ctl`: one server or closer between its claim and its pop.
const POPPER: u64 = 1 << 26;
const POPPERS: u64 = ((1 << 8) - 1) << 26;
/// `ctl`: one node parked in `front`.
const FRONT_ONE: u64 = 1 << 34;
const FRONTS: u64 = ((1 << 4) - 1) << 34;
/// Nodes `front` holds at most.
const MAX_FRONT: u64 = FRONTS / FRONT_ONE;
/// `ctl`: one token (the tokens fill the upper 26 bits).
const TOKEN: u64 = 1 << 38;
/// Queued nodes a registration adds to at most (the tokens' range, less a
/// margin for registrations racing past the check).
const MAX_QUEUED: u64 = (1 << 26) - (1 << 20);
/// What a reclaimer clears when it settles its node.
const SETTLE: u64 = PEND | DEP | GRANT_BITS | FROM_HEAD | FROM_FRONT;

/// Nodes a registration reclaims at most (more than the one dead node a
/// registration can add, so the dead nodes shrink back under the bound).
const RECLAIM_BATCH: usize = 4;

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
    /// Its deadline passed (the pool's deadline sweeper, `deadlines.rs`).
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

/// Decodes a state word that is no longer `WAITING`. `None` for CANCELLED.
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

/// The grant deposited in a `ctl` word that has `DEP` set.
fn deposited(ctl: u64) -> Grant {
    let word = (ctl & GRANT_BITS) >> GRANT_SHIFT;
    let i = (word >> TAG_BITS) as u32;
    if word & TAG_MASK == PLACE {
        Grant::Place(i)
    } else {
        Grant::Slot(i)
    }
}

/// Whether a `ctl` word shows a waiter to serve: tokens, a parked `front`
/// node, or a reclaimer's node with no grant for it.
#[inline]
fn wants_service(ctl: u64) -> bool {
    ctl >= TOKEN || ctl & (HEAD | FRONTS) != 0 || ctl & (PEND | DEP) == PEND
}

/// Nodes parked in `front`, by a `ctl` word.
fn fronts(ctl: u64) -> u64 {
    (ctl & FRONTS) / FRONT_ONE
}

/// One parked `get`.
#[derive(Debug)]
pub(crate) struct Node {
    /// `WAITING`, `CANCELLED`, `CLOSED`, `TIMED_OUT`, or `SLOT`/`PLACE` with
    /// the slot index in the upper bits. Leaves `WAITING` exactly once.
    state: AtomicU64,
    waker: AtomicWaker,
    /// Its deadline in the pool's sweeper's ms (`deadlines.rs`), if tracked.
    deadline: AtomicU64,
}

impl Node {
    fn new(state: u64) -> Self {
        Self {
            state: AtomicU64::new(state),
            waker: AtomicWaker::new(),
            deadline: AtomicU64::new(u64::MAX),
        }
    }

    /// Records the deadline a sweeper tracks it by (before publishing it).
    pub(crate) fn set_deadline(&self, ms: u64) {
        self.deadline.store(ms, Ordering::Relaxed);
    }

    /// The deadline set by [`set_deadline`](Self::set_deadline).
    pub(crate) fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Relaxed)
    }

    /// Polls for the outcome, registering the waker while still waiting.
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

    /// Whether nobody has served, cancelled, closed or timed it out yet.
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WAITING
    }

    /// Wakes its waiter's task (to re-poll, without a change of state).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Moves `WAITING -> to`; on failure returns the word found.
    fn finish(&self, to: u64) -> Result<(), u64> {
        // Release publishes the grant's slot to the waiter (its Acquire in
        // `poll`); Acquire on failure lets a canceller see what it was given
        // (and a popper the canceller's count in `dead`).
        self.state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }
}

/// Who claims (see [`Waiters::claim`]).
#[derive(Clone, Copy)]
enum Claimer {
    /// A releaser with a grant to hand out.
    Server(Grant),
    /// `close_all`.
    Closer,
    /// A registration reclaiming dead nodes: claims under `PEND` the node
    /// in `head` (only if `try_head`), else the oldest in `front`, else a
    /// queued one.
    Reclaimer { try_head: bool },
}

/// Where a claimed node came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Head,
    Front,
    Queue,
}

/// What a claim got.
enum Claimed {
    /// The oldest node, now the claimer's to finish or drop.
    Node(Arc<Node>, Src),
    /// The server's grant now belongs to the reclaimer holding `PEND`.
    Deposited,
}

/// How a reclaimer left the node it claimed.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// Dropped (dead), or its grant passed on to a live waiter: go on.
    Next,
    /// Live: put back in `head` (`head: true`), or parked at the back of
    /// `front`: go on.
    Parked { head: bool },
    /// The pool is closing: stop.
    Stop,
    /// Holding a grant that no live waiter took: its caller's.
    Spare(Grant),
}

/// The FIFO of parked callers.
#[derive(Debug)]
pub(crate) struct Waiters {
    queue: SegQueue<Arc<Node>>,
    /// At most one node (`HEAD`), older than every other, put there (live)
    /// by a reclaimer.
    head: SegQueue<Arc<Node>>,
    /// Up to `MAX_FRONT` nodes, older than every queued one, parked there
    /// (live) by reclaimers, in order.
    front: SegQueue<Arc<Node>>,
    /// Tokens and flags (see the module docs).
    ctl: CachePadded<AtomicU64>,
    /// Nodes still `WAITING`: `State::waiting` and the `max_waiters` bound.
    live: CachePadded<AtomicUsize>,
    /// Nodes made dead (cancelled, timed out) and not yet dropped by a
    /// popper: the reclaim's trigger.
    dead: CachePadded<AtomicUsize>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            queue: SegQueue::new(),
            head: SegQueue::new(),
            front: SegQueue::new(),
            ctl: CachePadded::new(AtomicU64::new(0)),
            live: CachePadded::new(AtomicUsize::new(0)),
            dead: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Callers currently waiting.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether a node may be waiting to be served. SeqCst: the releaser's
    /// half of the lost-wake-up argument (module docs). One load; with no
    /// waiter (and the pool open) the word is 0 and that is the only test.
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        let ctl = self.ctl.load(Ordering::SeqCst);
        ctl != 0 && wants_service(ctl)
    }

    /// Registers a new waiter, or `None` if `max` are already waiting.
    /// The caller must re-check the idle set and free places afterwards.
    pub(crate) fn register(&self, max: Option<usize>) -> Option<Arc<Node>> {
        let before = self.live.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| before >= m) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        if self.dead.load(Ordering::Relaxed) > before.saturating_add(RECLAIM_SLACK) {
            if let Some(grant) = self.reclaim() {
                // No older live waiter took it: it is this caller's, in a
                // node nobody else sees (never queued, never live).
                self.live.fetch_sub(1, Ordering::Relaxed);
                return Some(Arc::new(Node::new(grant.encode())));
            }
        }
        if self.ctl.load(Ordering::Relaxed) / TOKEN >= MAX_QUEUED {
            // 66M queued nodes (module docs): as if `max` were reached.
            self.live.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let node = Arc::new(Node::new(WAITING));
        self.queue.push(Arc::clone(&node));
        // SeqCst, then a SeqCst fence before the caller's re-check: the
        // waiter's half of the lost-wake-up argument (module docs).
        self.ctl.fetch_add(TOKEN, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Some(node)
    }

    /// Claims the oldest node for `by` (or, for a server, a deposit), in
    /// one CAS on `ctl`; then pops the node claimed.
    fn claim(&self, by: Claimer) -> Option<Claimed> {
        let mut ctl = self.ctl.load(Ordering::Acquire);
        let src = loop {
            let reclaimer_hand = ctl & (FROM_HEAD | FROM_FRONT) != 0;
            let (next, src) = match by {
                // Not while another reclaims, nor while a popper may still
                // pop a node older than the one this claim would pop.
                // loom mutant: reclaim_ignores_poppers, see loom model 12
                Claimer::Reclaimer { .. }
                    if ctl & PEND != 0
                        || (ctl & POPPERS != 0 && !mutant("reclaim_ignores_poppers")) =>
                {
                    return None;
                }
                Claimer::Reclaimer { try_head: true } if ctl & HEAD != 0 => {
                    ((ctl & !HEAD) | PEND | FROM_HEAD, Some(Src::Head))
                }
                // The oldest parked node: if live, it goes to `head`.
                Claimer::Reclaimer { .. } if ctl & HEAD == 0 && ctl & FRONTS != 0 => {
                    ((ctl - FRONT_ONE) | PEND | FROM_FRONT, Some(Src::Front))
                }
                // A queued node, if there is room to park it.
                Claimer::Reclaimer { .. } if ctl >= TOKEN && fronts(ctl) < MAX_FRONT => {
                    ((ctl - TOKEN) | PEND, Some(Src::Queue))
                }
                Claimer::Reclaimer { .. } => return None,
                // 255 poppers between claim and pop at once: wait for one.
                _ if ctl & POPPERS == POPPERS => {
                    spin_loop();
                    ctl = self.ctl.load(Ordering::Acquire);
                    continue;
                }
                _ if ctl & HEAD != 0 => ((ctl & !HEAD) + POPPER, Some(Src::Head)),
                // A reclaimer's node from `head` or `front` comes before the
                // rest of `front`, one from the queue after it.
                // loom mutants: reclaim_overtaken (a server pops past a
                // reclaimer's live node), see loom models 12 and 13;
                // head_behind_front (past one from `head` or `front`), 13
                Claimer::Server(grant)
                    if reclaimer_hand
                        && ctl & (PEND | DEP | CLOSING) == PEND
                        && !mutant("reclaim_overtaken")
                        && !mutant("head_behind_front") =>
                {
                    (ctl | DEP | (grant.encode() << GRANT_SHIFT), None)
                }
                _ if ctl & FRONTS != 0 => (ctl - FRONT_ONE + POPPER, Some(Src::Front)),
                Claimer::Server(grant)
                    if ctl & (PEND | DEP | CLOSING) == PEND && !mutant("reclaim_overtaken") =>
                {
                    (ctl | DEP | (grant.encode() << GRANT_SHIFT), None)
                }
                _ if ctl >= TOKEN => (ctl - TOKEN + POPPER, Some(Src::Queue)),
                _ => return None,
            };
            // Acquire pairs with the token add after the push (or the
            // `HEAD` flag or front count after the push there), so the pop
            // below sees that node; Release hands a deposited grant over.
            match self
                .ctl
                .compare_exchange_weak(ctl, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break src,
                Err(now) => ctl = now,
            }
        };
        let Some(src) = src else {
            return Some(Claimed::Deposited);
        };
        let queue = match src {
            Src::Head => &self.head,
            Src::Front => &self.front,
            Src::Queue => &self.queue,
        };
        let node = loop {
            if let Some(node) = queue.pop() {
                break node;
            }
            // Unreachable while the claims match the nodes (invariants);
            // spinning (not failing) keeps the accounting exact if it ever is.
            spin_loop();
        };
        if !matches!(by, Claimer::Reclaimer { .. }) {
            // Release: a reclaimer that sees no popper (Acquire, its claim)
            // pops after this pop.
            self.ctl.fetch_sub(POPPER, Ordering::Release);
        }
        Some(Claimed::Node(node, src))
    }

    /// A popper drops a dead node it claimed.
    fn drop_dead(&self) {
        self.dead.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands `grant` to the oldest live waiter; gives it back if there is
    /// none.
    pub(crate) fn serve(&self, grant: Grant) -> Result<(), Grant> {
        loop {
            match self.claim(Claimer::Server(grant)) {
                None => return Err(grant),
                Some(Claimed::Deposited) => return Ok(()),
                Some(Claimed::Node(node, _)) => {
                    if node.finish(grant.encode()).is_ok() {
                        crate::sync::after_publish();
                        self.live.fetch_sub(1, Ordering::Relaxed);
                        node.waker.wake();
                        return Ok(());
                    }
                    // Dead: drop it and try the next one.
                    self.drop_dead();
                }
            }
        }
    }

    /// Wakes every queued waiter with `Closed`.
    pub(crate) fn close_all(&self) {
        // From here on servers deposit nothing, and a reclaimer closes the
        // node it holds instead of parking it in `front`.
        self.ctl.fetch_or(CLOSING, Ordering::AcqRel);
        self.close_claimed();
    }

    /// Closes every node `front` and the queue hold.
    fn close_claimed(&self) {
        while let Some(claimed) = self.claim(Claimer::Closer) {
            if let Claimed::Node(node, _) = claimed {
                self.close(&node);
            }
        }
    }

    /// Finishes a claimed node with `Closed`, or drops it if dead.
    fn close(&self, node: &Node) {
        if node.finish(CLOSED).is_ok() {
            self.live.fetch_sub(1, Ordering::Relaxed);
            node.waker.wake();
        } else {
            self.drop_dead();
        }
    }

    /// Drops dead nodes from the head of the line, up to `RECLAIM_BATCH`
    /// claims, moving live ones to `head` or `front` (module docs:
    /// *Reclaim*). Returns a grant it was left holding that no live waiter
    /// took.
    fn reclaim(&self) -> Option<Grant> {
        let mut try_head = true;
        for _ in 0..RECLAIM_BATCH {
            let Some(Claimed::Node(node, src)) = self.claim(Claimer::Reclaimer { try_head }) else {
                return None;
            };
            match self.settle(node, src) {
                Settled::Next | Settled::Parked { head: false } => {}
                // `head` holds a live node now: look behind it.
                Settled::Parked { head: true } => try_head = false,
                Settled::Stop => return None,
                Settled::Spare(grant) => return Some(grant),
            }
        }
        None
    }

    /// Settles the node a reclaimer claimed from `src` (it holds `PEND`).
    fn settle(&self, node: Arc<Node>, src: Src) -> Settled {
        // Acquire: a canceller's `dead` increment happens before the drop's
        // decrement.
        if node.state.load(Ordering::Acquire) != WAITING {
            self.drop_dead();
            // Only this reclaimer clears PEND and DEP (servers only set DEP).
            let ctl = self.ctl.fetch_and(!SETTLE, Ordering::AcqRel);
            // loom mutant: reclaim_drops_deposit, see loom model 11
            if ctl & DEP != 0 && !mutant("reclaim_drops_deposit") {
                return self.pass_on(deposited(ctl));
            }
            return Settled::Next;
        }
        // Live. From `head` or `front` it is the oldest node: (back) to
        // `head`, which is empty (only a reclaimer fills it, and it claimed
        // from `front` only with `head` empty). From the queue: to the back
        // of `front` (behind older nodes, ahead of every queued one). Push,
        // then, in one CAS, count it, release PEND and take any deposit
        // (the CAS's Release publishes the push).
        let to_head = src != Src::Queue;
        if to_head {
            self.head.push(node);
        } else {
            self.front.push(node);
        }
        let mut ctl = self.ctl.load(Ordering::Acquire);
        loop {
            debug_assert!(ctl & HEAD == 0 || !to_head, "head was empty");
            let next = if to_head {
                (ctl & !SETTLE) | HEAD
            } else {
                (ctl & !SETTLE) + FRONT_ONE
            };
            match self
                .ctl
                .compare_exchange_weak(ctl, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => ctl = now,
            }
        }
        let mut settled = Settled::Parked { head: to_head };
        if ctl & DEP != 0 {
            // Deposited for the node now parked: serve the oldest (this one
            // or, from the queue, an older parked one).
            settled = self.pass_on(deposited(ctl));
        }
        if ctl & CLOSING != 0 {
            // `close_all` may have finished before the node was parked.
            self.close_claimed();
            if !matches!(settled, Settled::Spare(_)) {
                settled = Settled::Stop;
            }
        }
        settled
    }

    /// A reclaimer holding a grant serves it like a releaser would.
    fn pass_on(&self, grant: Grant) -> Settled {
        match self.serve(grant) {
            Ok(()) => Settled::Next,
            Err(grant) => Settled::Spare(grant),
        }
    }

    /// Times `node` out if it is still waiting (its deadline passed); the
    /// caller then wakes it ([`Node::wake`]). Whatever else happened to it
    /// first stands.
    pub(crate) fn expire(&self, node: &Node) -> bool {
        // Counted before the CAS that makes it dead (module docs).
        self.dead.fetch_add(1, Ordering::Relaxed);
        if node.finish(TIMED_OUT).is_ok() {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        self.dead.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Withdraws `node`. `None` if it was still waiting (now cancelled);
    /// otherwise how it was served, which the caller now owns.
    pub(crate) fn cancel(&self, node: &Node) -> Option<Outcome> {
        // Counted before the CAS that makes it dead (module docs).
        self.dead.fetch_add(1, Ordering::Relaxed);
        match node.finish(CANCELLED) {
            Ok(()) => {
                self.live.fetch_sub(1, Ordering::Relaxed);
                None
            }
            Err(word) => {
                self.dead.fetch_sub(1, Ordering::Relaxed);
                decode(word)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cancellations per churn test (miri runs a few hundred: enough for
    /// many reclaim rounds, at its speed).
    const CHURN: usize = if cfg!(miri) { 300 } else { 10_000 };
    use std::task::Waker;

    #[test]
    fn serves_oldest_live_waiter_first_and_skips_cancelled() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        let c = w.register(None).unwrap();
        assert_eq!(w.live(), 3);
        assert_eq!(w.cancel(&a), None);
        assert_eq!(w.serve(Grant::Slot(7)), Ok(()));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(
            b.poll(&mut cx),
            Poll::Ready(Outcome::Granted(Grant::Slot(7)))
        );
        assert_eq!(c.poll(&mut cx), Poll::Pending);
        assert_eq!(w.live(), 1);
        // A served node cannot be cancelled: the canceller learns the grant.
        assert_eq!(w.serve(Grant::Place(2)), Ok(()));
        assert_eq!(w.cancel(&c), Some(Outcome::Granted(Grant::Place(2))));
        assert_eq!(w.serve(Grant::Slot(1)), Err(Grant::Slot(1)));
        assert!(!w.any());
    }

    #[test]
    fn max_waiters_bounds_registration() {
        let w = Waiters::new();
        let a = w.register(Some(1)).unwrap();
        assert!(w.register(Some(1)).is_none());
        assert_eq!(w.live(), 1);
        w.close_all();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(a.poll(&mut cx), Poll::Ready(Outcome::Closed));
        assert_eq!(w.live(), 0);
        assert!(w.register(Some(0)).is_none());
    }

    fn granted(node: &Node) -> Poll<Outcome> {
        node.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn queued(w: &Waiters) -> usize {
        (w.ctl.load(Ordering::SeqCst) / TOKEN) as usize
    }

    /// Claims the oldest node as a reclaimer would (under `PEND`).
    fn claim_as_reclaimer(w: &Waiters) -> (Arc<Node>, Src) {
        match w.claim(Claimer::Reclaimer { try_head: true }) {
            Some(Claimed::Node(n, src)) => (n, src),
            _ => panic!("a node to claim"),
        }
    }

    #[test]
    fn cancelled_nodes_are_reclaimed_by_registrations() {
        let w = Waiters::new();
        for _ in 0..CHURN {
            let n = w.register(None).unwrap();
            assert_eq!(w.cancel(&n), None);
        }
        let bound = RECLAIM_SLACK + RECLAIM_BATCH + 1;
        assert!(queued(&w) <= bound, "{} dead nodes queued", queued(&w));
        assert_eq!(w.queue.len(), queued(&w), "tokens match the queue");
        assert!(w.dead.load(Ordering::Relaxed) <= bound);
        assert_eq!(w.live(), 0);
        // Timed-out nodes count as dead too.
        for _ in 0..CHURN {
            let n = w.register(None).unwrap();
            assert!(w.expire(&n));
        }
        assert!(queued(&w) <= bound, "{} dead nodes queued", queued(&w));
        // A release drops the few left and finds nobody.
        assert_eq!(w.serve(Grant::Slot(1)), Err(Grant::Slot(1)));
        assert_eq!((queued(&w), w.queue.len()), (0, 0));
        assert_eq!(w.dead.load(Ordering::Relaxed), 0);
        assert!(!w.any());
    }

    #[test]
    fn a_live_head_is_parked_in_front_and_keeps_its_turn() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        for _ in 0..10 {
            let n = w.register(None).unwrap();
            w.cancel(&n);
        }
        // The reclaim reached `a`, could not serve it and parked it (in
        // `front`, then, the oldest, in `head`).
        assert_ne!(w.ctl.load(Ordering::SeqCst) & HEAD, 0, "a is in head");
        assert!(w.any(), "a parked waiter is seen by releasers");
        let b = w.register(None).unwrap();
        for _ in 0..10 {
            let n = w.register(None).unwrap();
            w.cancel(&n);
        }
        let c = w.register(None).unwrap();
        assert_eq!(w.live(), 3);
        for (i, node) in [&a, &b, &c].into_iter().enumerate() {
            assert_eq!(w.serve(Grant::Slot(i as u32)), Ok(()));
            assert_eq!(
                granted(node),
                Poll::Ready(Outcome::Granted(Grant::Slot(i as u32))),
                "waiter {i} is served in its turn"
            );
        }
        assert_eq!(w.live(), 0);
        assert!(!w.any());
    }

    #[test]
    fn a_live_head_does_not_stop_the_reclaim_behind_it() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        for _ in 0..CHURN {
            let n = w.register(None).unwrap();
            w.cancel(&n);
        }
        let bound = RECLAIM_SLACK + RECLAIM_BATCH + 2;
        assert!(queued(&w) <= bound, "{} dead nodes queued", queued(&w));
        assert_eq!(w.ctl.load(Ordering::SeqCst) & (HEAD | FRONTS), HEAD);
        // Once `a` leaves, the parked dead node goes too.
        assert_eq!(w.cancel(&a), None);
        for _ in 0..10 {
            let n = w.register(None).unwrap();
            w.cancel(&n);
        }
        assert_eq!(w.ctl.load(Ordering::SeqCst) & (HEAD | FRONTS), 0);
        assert!(queued(&w) <= bound, "{} dead nodes queued", queued(&w));
        let b = w.register(None).unwrap();
        assert_eq!(w.serve(Grant::Place(4)), Ok(()));
        assert_eq!(granted(&b), Poll::Ready(Outcome::Granted(Grant::Place(4))));
    }

    #[test]
    fn live_nodes_reached_by_reclaims_are_parked_in_order_up_to_the_limit() {
        let w = Waiters::new();
        let mut live = Vec::new();
        for _ in 0..40 {
            live.push(w.register(None).unwrap());
            for _ in 0..3 {
                let n = w.register(None).unwrap();
                w.cancel(&n);
            }
        }
        let ctl = w.ctl.load(Ordering::SeqCst);
        let parked = fronts(ctl) + u64::from(ctl & HEAD != 0);
        assert!(parked > 1 && parked <= MAX_FRONT + 1, "{parked} parked");
        assert_eq!((w.front.len() + w.head.len()) as u64, parked);
        for (i, node) in live.iter().enumerate() {
            assert_eq!(w.serve(Grant::Slot(i as u32)), Ok(()));
            assert_eq!(
                granted(node),
                Poll::Ready(Outcome::Granted(Grant::Slot(i as u32))),
                "waiter {i} is served in its turn"
            );
        }
        assert_eq!(w.serve(Grant::Slot(99)), Err(Grant::Slot(99)));
        assert_eq!(w.ctl.load(Ordering::SeqCst), 0);
        assert_eq!((w.live(), w.dead.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn parked_waiters_that_time_out_let_the_reclaim_drain_them() {
        // No release at all (an outage): parked waiters time out, and the
        // reclaim drops them from `head` and `front`, then goes on.
        let w = Waiters::new();
        let mut live = Vec::new();
        for _ in 0..40 {
            live.push(w.register(None).unwrap());
            for _ in 0..3 {
                let n = w.register(None).unwrap();
                w.cancel(&n);
            }
        }
        assert_ne!(w.ctl.load(Ordering::SeqCst) & (HEAD | FRONTS), 0);
        for n in &live {
            assert!(w.expire(n));
        }
        for _ in 0..CHURN {
            let n = w.register(None).unwrap();
            w.cancel(&n);
        }
        let bound = RECLAIM_SLACK + RECLAIM_BATCH + 2;
        assert!(queued(&w) <= bound, "{} dead nodes queued", queued(&w));
        assert_eq!(w.ctl.load(Ordering::SeqCst) & (HEAD | FRONTS), 0);
        assert_eq!((w.head.len(), w.front.len()), (0, 0));
        assert_eq!(w.live(), 0);
    }

    #[test]
    fn a_grant_deposited_for_a_reclaimed_node_serves_it() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let (held, src) = claim_as_reclaimer(&w);
        assert!(w.any(), "a claimed node with no grant still wants one");
        // A releaser meanwhile may not overtake it: it deposits.
        assert_eq!(w.serve(Grant::Slot(5)), Ok(()));
        assert!(!w.any(), "the deposit covers it");
        assert_eq!(w.settle(held, src), Settled::Next);
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(5))));
        // Its waiter, cancelling now, learns the grant and gives it back.
        assert_eq!(w.cancel(&a), Some(Outcome::Granted(Grant::Slot(5))));
        assert_eq!(w.ctl.load(Ordering::SeqCst), 0);
        assert_eq!(w.live(), 0);
    }

    #[test]
    fn a_deposit_for_a_node_cancelled_meanwhile_goes_to_the_next() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(w.serve(Grant::Slot(5)), Ok(()));
        // Cancelled while a grant was on its way: the grant is not lost.
        assert_eq!(w.cancel(&a), None);
        assert_eq!(w.settle(held, src), Settled::Next);
        assert_eq!(granted(&b), Poll::Ready(Outcome::Granted(Grant::Slot(5))));
        assert_eq!((w.live(), w.dead.load(Ordering::Relaxed)), (0, 0));
        // With nobody left, the reclaimer keeps it (for its own caller).
        let c = w.register(None).unwrap();
        assert_eq!(w.cancel(&c), None);
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(w.serve(Grant::Place(6)), Ok(()));
        assert_eq!(w.settle(held, src), Settled::Spare(Grant::Place(6)));
        assert_eq!(w.ctl.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_claimed_node_with_no_deposit_is_parked_then_served_first() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(w.settle(held, src), Settled::Parked { head: false });
        assert_eq!(w.ctl.load(Ordering::SeqCst), TOKEN | FRONT_ONE);
        assert_eq!(w.serve(Grant::Slot(1)), Ok(()));
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(1))));
        assert_eq!(granted(&b), Poll::Pending);
    }

    #[test]
    fn a_reclaimer_holding_the_head_gets_the_grant_before_front_is_served() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        // `a` to `front`, then to `head`; `b` to `front`.
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(w.settle(held, src), Settled::Parked { head: false });
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(src, Src::Front);
        assert_eq!(w.settle(held, src), Settled::Parked { head: true });
        let (held, src) = match w.claim(Claimer::Reclaimer { try_head: false }) {
            Some(Claimed::Node(n, src)) => (n, src),
            _ => panic!("b to claim"),
        };
        assert_eq!(src, Src::Queue);
        assert_eq!(w.settle(held, src), Settled::Parked { head: false });
        assert_eq!(w.ctl.load(Ordering::SeqCst), HEAD | FRONT_ONE);
        // Holding `a` again, from `head`: a release deposits (it may not
        // serve `b`, in `front`, first), and `a` gets the grant.
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(src, Src::Head);
        assert_eq!(w.serve(Grant::Slot(8)), Ok(()));
        assert_eq!(granted(&b), Poll::Pending);
        assert_eq!(w.settle(held, src), Settled::Next);
        assert_eq!(granted(&a), Poll::Ready(Outcome::Granted(Grant::Slot(8))));
        assert_eq!(w.serve(Grant::Slot(9)), Ok(()));
        assert_eq!(granted(&b), Poll::Ready(Outcome::Granted(Grant::Slot(9))));
        assert_eq!(w.ctl.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn close_all_closes_parked_and_claimed_nodes() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        let c = w.register(None).unwrap();
        let (held, src) = claim_as_reclaimer(&w);
        assert_eq!(w.settle(held, src), Settled::Parked { head: false });
        let (held, src) = claim_as_reclaimer(&w); // `a` again, from `front`
        w.close_all();
        // The reclaimer parks it, sees the pool closing, and closes it.
        assert_eq!(w.settle(held, src), Settled::Stop);
        for n in [&a, &b, &c] {
            assert_eq!(granted(n), Poll::Ready(Outcome::Closed));
        }
        assert_eq!(w.live(), 0);
        assert!(!w.any());
    }

    #[test]
    fn registration_fails_cleanly_when_the_tokens_would_overflow() {
        let w = Waiters::new();
        w.ctl.store(MAX_QUEUED * TOKEN, Ordering::SeqCst);
        assert!(w.register(None).is_none(), "as if max_waiters were reached");
        assert_eq!(w.live(), 0);
        w.ctl.store((MAX_QUEUED - 1) * TOKEN, Ordering::SeqCst);
        let n = w.register(None).unwrap();
        assert_eq!(w.ctl.load(Ordering::SeqCst), MAX_QUEUED * TOKEN);
        assert_eq!(w.cancel(&n), None);
    }

    #[test]
    fn an_expired_waiter_times_out_and_is_skipped_by_servers() {
        let w = Waiters::new();
        let a = w.register(None).unwrap();
        let b = w.register(None).unwrap();
        assert!(w.expire(&a));
        assert!(!w.expire(&a), "a node leaves WAITING once");
        assert!(!a.is_waiting());
        assert_eq!(w.live(), 1);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(a.poll(&mut cx), Poll::Ready(Outcome::TimedOut));
        assert_eq!(
            w.cancel(&a),
            Some(Outcome::TimedOut),
            "nothing to give back"
        );
        assert_eq!(w.serve(Grant::Slot(3)), Ok(()));
        assert_eq!(
            b.poll(&mut cx),
            Poll::Ready(Outcome::Granted(Grant::Slot(3)))
        );
        assert!(!w.expire(&b), "a served node keeps its grant");
    }
}
