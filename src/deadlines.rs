//! Pool-owned deadlines for parked `get`s: the pool's background task
//! times out waiters whose deadline passed, instead of each wait arming a
//! Tokio timer of its own.
//!
//! # Why
//!
//! A Tokio timer costs a parked `get` a registration and a removal under
//! the timer driver's lock, contended by every worker: in the contended
//! benchmark with fewer connections than tasks it was about a third of
//! the time. Most waits end long before their deadline, so the pool keeps
//! the deadlines itself and looks at them only when the earliest is due.
//!
//! # Protocol
//!
//! - **Register** ([`Deadlines::track`]): a parked waiter pushes its node
//!   and deadline into a lock-free inbox, then (SeqCst fence) reads
//!   `armed`, the time the sweeper sleeps until. If its deadline is
//!   earlier, it kicks the sweeper. Every 1024th registration on a thread
//!   kicks it too, so the inbox is drained at a bounded size.
//! - **Sweep** ([`Deadlines::sweep`], the background task): drains the
//!   inbox into a heap it owns (32 registrations at a time, yielding to
//!   the runtime in between, so that a sweep never holds a worker for
//!   long; most nodes are already served and are dropped, not kept), times
//!   out every node whose deadline passed (`WAITING -> TIMED_OUT`, see
//!   `waiters.rs`), drops nodes that ended otherwise, stores its next
//!   wake-up in `armed`, then (SeqCst fence) looks at the inbox again.
//!   Either the sweeper sees a registration, or the registrant sees the
//!   new `armed`: no deadline is slept past.
//! - **Stop** ([`Deadlines::stop`], when the background task ends): stores
//!   `armed = OFF`, then (SeqCst fence) wakes every node it holds or finds
//!   in the inbox. A waiter polls its node (registering its waker) *then*
//!   checks that its sweeper still serves; so it either sees `OFF` or is
//!   woken after, and then arms a Tokio timer of its own. A waiter that
//!   finds no sweeper at registration (`background(false)`, no runtime
//!   yet) does so from the start.
//!
//! # Invariants kept
//!
//! - A tracked node that is still waiting is in the inbox or the heap until
//!   its deadline passes or the sweeper stops (I5: it is only ever moved
//!   `WAITING -> TIMED_OUT`, never handed anything).
//! - Every waiter with a deadline has exactly one of: a serving sweeper
//!   that will time it out, or its own timer.
//! - The heap holds at most twice the live waiters plus a constant, and the
//!   inbox at most about 1024 entries per registering thread between two
//!   sweeps: memory is bounded by the waiters, not by the wait rate.

use std::cmp::Ordering as Order;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::task::Context;

use crossbeam_utils::CachePadded;
use tokio::time::Instant;

use crate::sync::{self, Arc, AtomicBool, AtomicU64, AtomicWaker, Ordering, SegQueue, fence};
use crate::waiters::{Node, Waiters};

/// `armed` while no sweeper serves.
const OFF: u64 = 0;
/// Registrations on one thread between two kicks (bounds the inbox).
const KICK_EVERY: u32 = 1024;
/// Registrations one sweep drains before it yields to other tasks.
const DRAIN_PER_SWEEP: usize = 32;
/// Heap size below which finished nodes are not pruned.
const PRUNE_AT: usize = 1024;

sync::thread_local_cell! {
    /// Registrations on this thread since its last kick.
    static SINCE_KICK: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// A parked waiter and its deadline, ordered earliest first.
struct Parked {
    deadline: Instant,
    node: Arc<Node>,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Parked {}
impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}
impl Ord for Parked {
    /// Reversed: `BinaryHeap` is a max-heap, the earliest must come first.
    fn cmp(&self, other: &Self) -> Order {
        other.deadline.cmp(&self.deadline)
    }
}

/// The deadlines of one pool's parked waiters.
pub(crate) struct Deadlines {
    inbox: SegQueue<Parked>,
    /// When the sweeper wakes next, in whole ms since `base`, plus one
    /// (rounded up); `OFF` while no sweeper serves.
    armed: CachePadded<AtomicU64>,
    /// Which sweeper serves (each start takes the next number).
    epoch: AtomicU64,
    /// Set by a registrant that needs the sweeper earlier than `armed`.
    kick: AtomicBool,
    /// The sweeper's task.
    waker: AtomicWaker,
    /// The origin of `armed`, fixed by the first sweeper.
    base: OnceLock<Instant>,
}

/// What the sweeper owns: its heap and its epoch.
pub(crate) struct Sweeper {
    heap: BinaryHeap<Parked>,
    epoch: u64,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Self {
            inbox: SegQueue::new(),
            armed: CachePadded::new(AtomicU64::new(OFF)),
            epoch: AtomicU64::new(0),
            kick: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            base: OnceLock::new(),
        }
    }

    /// `at` in whole ms since `base` plus one, rounded up or down.
    fn ms(base: Instant, at: Instant, up: bool) -> u64 {
        let d = at.saturating_duration_since(base);
        let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 2);
        if up && d.subsec_nanos() % 1_000_000 != 0 {
            ms = ms.saturating_add(1);
        }
        ms.saturating_add(1).min(u64::MAX - 1)
    }

    /// Hands `node` (just registered, about to park) and its deadline to
    /// the sweeper. `Some(epoch)`: the sweeper of that epoch will time it
    /// out; `None`: no sweeper serves, the caller arms its own timer.
    pub(crate) fn track(&self, deadline: Instant, node: &Arc<Node>) -> Option<u64> {
        let base = *self.base.get()?;
        if self.armed.load(Ordering::Relaxed) == OFF {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        self.inbox.push(Parked {
            deadline,
            node: Arc::clone(node),
        });
        // The registrant's half of the protocol (module docs).
        fence(Ordering::SeqCst);
        let armed = self.armed.load(Ordering::SeqCst);
        if armed == OFF || self.epoch.load(Ordering::Acquire) != epoch {
            return None; // stopped meanwhile; the entry is harmless
        }
        let early = Self::ms(base, deadline, false) < armed;
        let batch = SINCE_KICK
            .try_with(|n| {
                let v = n.get() + 1;
                n.set(if v >= KICK_EVERY { 0 } else { v });
                v >= KICK_EVERY
            })
            .unwrap_or(false);
        if early || batch {
            self.kick.store(true, Ordering::SeqCst);
            self.waker.wake();
        }
        Some(epoch)
    }

    /// Whether the sweeper of `epoch` still serves (checked by a tracked
    /// waiter after each poll of its node).
    pub(crate) fn serving(&self, epoch: u64) -> bool {
        self.armed.load(Ordering::SeqCst) != OFF && self.epoch.load(Ordering::Acquire) == epoch
    }

    /// Starts serving (the background task, once at its start).
    pub(crate) fn start(&self) -> Sweeper {
        let _ = self.base.get_or_init(Instant::now);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        Sweeper {
            heap: BinaryHeap::new(),
            epoch,
        }
    }

    /// One sweep at `now`: drains up to [`DRAIN_PER_SWEEP`] registrations
    /// (dropping those whose waiter was served or left meanwhile, most of
    /// them), times out what is due (counting each in `swept` before its
    /// waiter wakes), and arms the next wake-up, which it returns: the
    /// earliest deadline it holds, or `next_tick` if that is sooner.
    /// `None`: more registrations wait; yield to the runtime's other tasks
    /// and sweep again (a sweep never holds a worker for long).
    pub(crate) fn sweep(
        &self,
        sweeper: &mut Sweeper,
        waiters: &Waiters,
        now: Instant,
        next_tick: Instant,
        swept: &std::sync::atomic::AtomicU64,
    ) -> Option<Instant> {
        let Some(&base) = self.base.get() else {
            return Some(next_tick);
        };
        let heap = &mut sweeper.heap;
        let mut budget = DRAIN_PER_SWEEP;
        loop {
            while budget > 0 {
                let Some(p) = self.inbox.pop() else { break };
                budget -= 1;
                if p.node.is_waiting() {
                    heap.push(p);
                }
            }
            while let Some(top) = heap.peek() {
                if top.node.is_waiting() && top.deadline > now {
                    break;
                }
                if let Some(p) = heap.pop() {
                    if waiters.expire(&p.node) {
                        crate::metrics::bump(swept);
                        p.node.wake();
                    }
                }
            }
            if heap.len() > PRUNE_AT && heap.len() > 2 * waiters.live() {
                heap.retain(|p| p.node.is_waiting());
            }
            if budget == 0 && !self.inbox.is_empty() {
                return None;
            }
            let target = heap.peek().map_or(next_tick, |p| p.deadline.min(next_tick));
            if self.epoch.load(Ordering::Acquire) == sweeper.epoch {
                self.armed
                    .store(Self::ms(base, target, true), Ordering::SeqCst);
            }
            // The sweeper's half of the protocol (module docs).
            fence(Ordering::SeqCst);
            if self.inbox.is_empty() {
                return Some(target);
            }
        }
    }

    /// Registers the sweeper's task and takes a pending kick.
    pub(crate) fn kicked(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.kick.swap(false, Ordering::SeqCst)
    }

    /// Stops serving: every waiter it tracks is woken to arm its own timer.
    pub(crate) fn stop(&self, sweeper: &mut Sweeper) {
        if self.epoch.load(Ordering::Acquire) == sweeper.epoch {
            self.armed.store(OFF, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        while let Some(p) = self.inbox.pop() {
            sweeper.heap.push(p);
        }
        for p in sweeper.heap.drain() {
            p.node.wake();
        }
    }
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines")
            .field("armed", &self.armed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64 as Counter;
    use std::task::Waker;
    use std::time::Duration;

    fn armed_sweeper(d: &Deadlines, w: &Waiters, next_tick: Instant) -> Sweeper {
        let mut s = d.start();
        let swept = Counter::new(0);
        d.sweep(&mut s, w, Instant::now(), next_tick, &swept)
            .unwrap();
        s
    }

    fn kicked(d: &Deadlines) -> bool {
        d.kicked(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn no_sweeper_no_tracking() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let node = w.register(None).unwrap();
        assert_eq!(d.track(Instant::now(), &node), None);
    }

    #[test]
    fn only_a_deadline_before_the_armed_wake_up_kicks_the_sweeper() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let _s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let late = w.register(None).unwrap();
        let epoch = d.track(now + Duration::from_secs(30), &late).unwrap();
        assert!(d.serving(epoch));
        assert!(!kicked(&d), "a later deadline waits for the armed wake-up");
        let early = w.register(None).unwrap();
        d.track(now + Duration::from_millis(10), &early).unwrap();
        assert!(kicked(&d), "an earlier deadline wakes the sweeper");
        assert!(!kicked(&d), "a kick is taken once");
    }

    #[test]
    fn a_sweep_times_out_what_is_due_and_arms_the_next_deadline() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let tick = now + Duration::from_secs(1);
        let mut s = armed_sweeper(&d, &w, tick);
        let (due, later, gone) = (
            w.register(None).unwrap(),
            w.register(None).unwrap(),
            w.register(None).unwrap(),
        );
        d.track(now, &due).unwrap();
        d.track(now + Duration::from_millis(500), &later).unwrap();
        d.track(now, &gone).unwrap();
        assert_eq!(w.cancel(&gone), None);
        let swept = Counter::new(0);
        let next = d.sweep(&mut s, &w, now, tick, &swept).unwrap();
        assert_eq!(
            swept.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the due waiter"
        );
        assert!(!due.is_waiting() && later.is_waiting());
        assert_eq!(next, now + Duration::from_millis(500));
        assert_eq!(s.heap.len(), 1, "finished nodes are dropped");
        let next = d
            .sweep(&mut s, &w, now + Duration::from_millis(500), tick, &swept)
            .unwrap();
        assert_eq!(swept.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(next, tick, "nothing held: the maintenance tick");
    }

    #[test]
    fn memory_is_bounded_by_the_waiters_not_the_wait_rate() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let mut s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let oldest = w.register(None).unwrap();
        d.track(now + Duration::from_secs(5), &oldest).unwrap();
        let mut kicks = 0;
        for _ in 0..3 * KICK_EVERY {
            let n = w.register(None).unwrap();
            d.track(now + Duration::from_secs(30), &n).unwrap();
            assert_eq!(w.cancel(&n), None, "served or left long before");
            kicks += usize::from(kicked(&d));
        }
        assert!(
            kicks >= 2,
            "every {KICK_EVERY} registrations kick the sweeper"
        );
        let swept = Counter::new(0);
        let mut sweeps = 1;
        while d
            .sweep(&mut s, &w, now, now + Duration::from_secs(1), &swept)
            .is_none()
        {
            sweeps += 1;
        }
        assert!(sweeps > 1, "a sweep drains a bounded batch, then yields");
        assert_eq!(s.heap.len(), 1, "only the live waiter is kept");
        assert!(d.inbox.is_empty());
    }

    #[test]
    fn stopping_hands_every_waiter_back_to_its_own_timer() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let mut s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let n = w.register(None).unwrap();
        let epoch = d.track(now + Duration::from_secs(30), &n).unwrap();
        d.stop(&mut s);
        assert!(!d.serving(epoch));
        assert!(s.heap.is_empty() && d.inbox.is_empty());
        assert!(n.is_waiting(), "not timed out: it arms its own timer");
        assert_eq!(d.track(now, &n), None, "no sweeper after the stop");
        let mut s2 = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        assert!(!d.serving(epoch), "a new sweeper is not the old one");
        assert!(d.track(now + Duration::from_secs(30), &n).is_some());
        d.stop(&mut s2);
    }
}
