//! The lock-free waiter queue: callers that found nothing idle and no free
//! place park here, and releasers hand them a connection (or a place)
//! directly, oldest first.
//!
//! # Design
//!
//! HikariCP's hand-off (a releaser gives its connection straight to a thread
//! blocked in `borrow`) without its `SynchronousQueue`: a waiter is a small
//! [`Node`] (allocated only on this slow path) with one atomic state word and
//! an [`AtomicWaker`]. Nodes sit in a lock-free FIFO (`SegQueue`).
//!
//! - **Tokens.** `tokens` counts nodes that are in the queue and not yet
//!   claimed by a popper. A waiter pushes its node *then* adds its token; a
//!   server takes a token (CAS, never below zero) *then* pops, so a token
//!   holder always finds a node, and nobody ever spins on another thread's
//!   progress (a counter bumped before the push livelocked under loom).
//! - **Serve.** A server CASes a node `WAITING -> SLOT(i)` or `PLACE(i)`; the
//!   first success is the oldest live waiter (I7). Nodes found CANCELLED are
//!   dropped, each consuming its own token.
//! - **Time out.** The pool's deadline sweeper (`deadlines.rs`) CASes a
//!   node whose deadline passed `WAITING -> TIMED_OUT` and wakes it; like a
//!   cancelled node it stays queued until a server pops and skips it.
//! - **Cancel.** A waiter leaving (timeout, drop of the `get` future, or a
//!   re-check that found something) CASes its own node `WAITING -> CANCELLED`.
//!   If that fails it was served: what it was given goes back through the
//!   release path, so nothing is lost (I5). The dead node stays queued until
//!   a server pops it.
//! - **Lost wake-ups (I4).** A waiter registers (push, SeqCst token add,
//!   SeqCst fence) and *then* re-checks the idle set and the free places; a
//!   releaser that found no token puts its connection back (ending in a
//!   SeqCst CAS or fence of the pool's own, `shards.rs`) and *then* reads
//!   `tokens` again (SeqCst). In the single
//!   total order of SeqCst operations one of the two comes second and sees
//!   the other: the waiter finds the connection, or the releaser finds the
//!   token, takes something back and serves. This is the race bb8#122 lost.
//!
//! # Invariants kept
//!
//! - `tokens` <= nodes in the queue; every node is popped at most once.
//! - A node leaves `WAITING` exactly once; whoever moves it decrements `live`.
//! - A grant written into a node is owned by that node until its waiter
//!   takes it, or, if the waiter is gone, until `Drop` of the waiter's guard
//!   gives it back.

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicU64, AtomicUsize, AtomicWaker, Ordering, SegQueue, fence, spin_loop};
use std::task::{Context, Poll};

const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const WAITING: u64 = 0;
const CANCELLED: u64 = 1;
const CLOSED: u64 = 2;
const SLOT: u64 = 3;
const PLACE: u64 = 4;
const TIMED_OUT: u64 = 5;

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

/// One parked `get`.
#[derive(Debug)]
pub(crate) struct Node {
    /// `WAITING`, `CANCELLED`, `CLOSED`, or `SLOT`/`PLACE` with the slot
    /// index in the upper bits. Leaves `WAITING` exactly once.
    state: AtomicU64,
    waker: AtomicWaker,
    /// Its deadline in the pool's sweeper's ms (`deadlines.rs`), if tracked.
    deadline: AtomicU64,
}

impl Node {
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
        // `poll`); Acquire on failure lets a canceller see what it was given.
        self.state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
    }
}

/// The FIFO of parked callers.
#[derive(Debug)]
pub(crate) struct Waiters {
    queue: SegQueue<Arc<Node>>,
    /// Queued nodes not yet claimed by a popper (see the module docs).
    tokens: CachePadded<AtomicUsize>,
    /// Nodes still `WAITING`: `State::waiting` and the `max_waiters` bound.
    live: CachePadded<AtomicUsize>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            queue: SegQueue::new(),
            tokens: CachePadded::new(AtomicUsize::new(0)),
            live: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Callers currently waiting.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether a node may be waiting to be served. SeqCst: the releaser's
    /// half of the lost-wake-up argument (module docs).
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        self.tokens.load(Ordering::SeqCst) != 0
    }

    /// Registers a new waiter, or `None` if `max` are already waiting.
    /// The caller must re-check the idle set and free places afterwards.
    pub(crate) fn register(&self, max: Option<usize>) -> Option<Arc<Node>> {
        let before = self.live.fetch_add(1, Ordering::Relaxed);
        if max.is_some_and(|m| before >= m) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let node = Arc::new(Node {
            state: AtomicU64::new(WAITING),
            waker: AtomicWaker::new(),
            deadline: AtomicU64::new(u64::MAX),
        });
        self.queue.push(Arc::clone(&node));
        // SeqCst, then a SeqCst fence before the caller's re-check: the
        // waiter's half of the lost-wake-up argument (module docs).
        self.tokens.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Some(node)
    }

    /// Pops the oldest node if a token can be taken.
    fn take(&self) -> Option<Arc<Node>> {
        let mut t = self.tokens.load(Ordering::Acquire);
        loop {
            if t == 0 {
                return None;
            }
            // Acquire pairs with the token add (after the push), so the pop
            // below sees that node.
            match self
                .tokens
                .compare_exchange_weak(t, t - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => t = now,
            }
        }
        loop {
            if let Some(node) = self.queue.pop() {
                return Some(node);
            }
            // Unreachable while `tokens <= queued nodes` holds; spinning
            // (not failing) keeps the token accounting exact if it ever is.
            spin_loop();
        }
    }

    /// Hands `grant` to the oldest live waiter; gives it back if there is
    /// none.
    pub(crate) fn serve(&self, grant: Grant) -> Result<(), Grant> {
        while let Some(node) = self.take() {
            if node.finish(grant.encode()).is_ok() {
                crate::sync::after_publish();
                self.live.fetch_sub(1, Ordering::Relaxed);
                node.waker.wake();
                return Ok(());
            }
            // Cancelled: drop the dead node and try the next one.
        }
        Err(grant)
    }

    /// Wakes every queued waiter with `Closed`.
    pub(crate) fn close_all(&self) {
        while let Some(node) = self.take() {
            if node.finish(CLOSED).is_ok() {
                self.live.fetch_sub(1, Ordering::Relaxed);
                node.waker.wake();
            }
        }
    }

    /// Times `node` out if it is still waiting (its deadline passed); the
    /// caller then wakes it ([`Node::wake`]). Whatever else happened to it
    /// first stands.
    pub(crate) fn expire(&self, node: &Node) -> bool {
        if node.finish(TIMED_OUT).is_ok() {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Withdraws `node`. `None` if it was still waiting (now cancelled);
    /// otherwise how it was served, which the caller now owns.
    pub(crate) fn cancel(&self, node: &Node) -> Option<Outcome> {
        match node.finish(CANCELLED) {
            Ok(()) => {
                self.live.fetch_sub(1, Ordering::Relaxed);
                None
            }
            Err(word) => decode(word),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
