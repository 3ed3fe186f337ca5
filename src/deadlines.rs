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
//! A fixed array of slots, each holding one strong reference to a parked
//! waiter's node (or nothing), and next to it the deadline as a hint. No
//! per-wait work falls on the background task: a waiter takes a slot and
//! clears it itself when its wait ends.
//!
//! - **Track** ([`Deadlines::track`]): the waiter stores its deadline in
//!   its node, claims an empty slot (CAS to a `CLAIMED` marker), looking
//!   from just after its thread's previous one (its home at first), writes the hint, then publishes its node (SeqCst)
//!   and reads `armed`, the time the sweeper sleeps until (SeqCst). If its
//!   deadline is earlier, it kicks the sweeper. No free slot nearby: it
//!   arms its own Tokio timer instead.
//! - **Untrack** ([`Deadlines::untrack`]): when the wait ends, the waiter
//!   CASes its node out of its slot; if the sweeper took it first, the
//!   sweeper owns that reference.
//! - **Sweep** ([`Deadlines::sweep`], the background task, when the
//!   earliest deadline or the maintenance tick comes): for each slot whose
//!   hint is due, takes the node (CAS to empty, so it owns the reference),
//!   checks the node's own deadline (the hint may belong to a previous
//!   occupant), and times it out (`WAITING -> TIMED_OUT`, see
//!   `waiters.rs`). Then it stores its next wake-up in `armed` (SeqCst)
//!   and reads the slots again (SeqCst): either it sees a waiter that
//!   published meanwhile, or that waiter sees the new `armed`; no
//!   deadline is slept past.
//! - **Stop** ([`Deadlines::stop`], when the background task ends): stores
//!   `armed = OFF`, then (SeqCst) takes and wakes every node in the slots.
//!   A waiter polls its node (registering its waker) *then* checks that
//!   its sweeper still serves; so it either sees `OFF` or is woken after,
//!   and then arms a Tokio timer of its own. A waiter that finds no
//!   sweeper (`background(false)`, no runtime yet) does so from the start.
//!
//! # Invariants kept
//!
//! - A slot's node reference is owned by the slot until exactly one of the
//!   waiter (untrack) or the sweeper takes it with a CAS.
//! - Every waiter with a deadline has exactly one of: a serving sweeper
//!   that will time it out, or its own timer. A node is only ever moved
//!   `WAITING -> TIMED_OUT`, never handed anything (I5).
//! - Memory is fixed: [`SLOTS`] slots per pool, whatever the wait rate.

use std::sync::OnceLock;
use std::task::Context;

use tokio::time::Instant;

use crate::sync::{self, Arc, AtomicBool, AtomicPtr, AtomicU64, AtomicWaker, Ordering};
use crate::tid;
#[cfg(latchless_loom)]
use crate::waiters::{Grant, Outcome};
use crate::waiters::{Node, Waiters};

/// `armed` while no sweeper serves.
const OFF: u64 = 0;
/// Waiters a pool tracks at once; more arm their own timers.
pub(crate) const SLOTS: usize = sync::DEADLINE_SLOTS;
/// Slots a waiter tries, from just after its thread's previous one, before
/// giving up.
const PROBES: usize = if SLOTS < 32 { SLOTS } else { 32 };

/// A slot's node while its claimer is still writing the hint.
fn claimed() -> *mut Node {
    std::ptr::dangling_mut()
}

/// One tracked waiter: its node (a strong reference, or null, or
/// [`claimed`]) and its deadline in ms (a hint, see the module docs).
struct Slot {
    node: AtomicPtr<Node>,
    at: AtomicU64,
}

/// The deadlines of one pool's parked waiters.
pub(crate) struct Deadlines {
    slots: Box<[Slot]>,
    /// When the sweeper wakes next, in whole ms since `base`, plus one
    /// (rounded up); `OFF` while no sweeper serves.
    armed: AtomicU64,
    /// Which sweeper serves (each start takes the next number).
    epoch: AtomicU64,
    /// Set by a waiter that needs the sweeper earlier than `armed`.
    kick: AtomicBool,
    /// The sweeper's task.
    waker: AtomicWaker,
    /// The origin of all ms values, fixed by the first sweeper.
    base: OnceLock<Instant>,
}

/// A waiter's hold on its slot: which slot, and the address of its node
/// there (only compared, never dereferenced).
#[derive(Debug)]
pub(crate) struct Tracked {
    slot: usize,
    node: usize,
    pub(crate) epoch: u64,
}

/// What the sweeper owns: its epoch, and nodes it could not put back.
pub(crate) struct Sweeper {
    epoch: u64,
    kept: Vec<Arc<Node>>,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    node: AtomicPtr::new(std::ptr::null_mut()),
                    at: AtomicU64::new(0),
                })
                .collect(),
            armed: AtomicU64::new(OFF),
            epoch: AtomicU64::new(0),
            kick: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            base: OnceLock::new(),
        }
    }

    /// `at` in whole ms since `base` plus one (so that no value is `OFF`),
    /// rounded up (deadlines, wake-ups) or down (the current time).
    fn ms(base: Instant, at: Instant, up: bool) -> u64 {
        let d = at.saturating_duration_since(base);
        let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 2);
        if up && d.subsec_nanos() % 1_000_000 != 0 {
            ms = ms.saturating_add(1);
        }
        ms.saturating_add(1).min(u64::MAX - 1)
    }

    /// Hands `node` (just registered, about to park) and its deadline to
    /// the sweeper. `Some`: the sweeper of that epoch will time it out
    /// (call [`untrack`](Self::untrack) when the wait ends); `None`: no
    /// sweeper serves or no slot is free, the caller arms its own timer.
    pub(crate) fn track(&self, deadline: Instant, node: &Arc<Node>) -> Option<Tracked> {
        let base = *self.base.get()?;
        if self.armed.load(Ordering::Relaxed) == OFF {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        // Rounded up: a deadline is due once the floor of the time reaches
        // it, so nobody is timed out before their deadline.
        let at = Self::ms(base, deadline, true);
        node.set_deadline(at);
        // From just after this thread's last slot (its home at first), so
        // that a thread's many waiters spread over the whole array.
        let start = tid::cursor().unwrap_or_else(|| tid::home_index(SLOTS));
        let slot = (0..PROBES)
            .map(|i| (start + i) % SLOTS)
            .find(|&i| self.publish(i, node, at))?;
        tid::set_cursor(Some((slot + 1) % SLOTS));
        let tracked = Tracked {
            slot,
            node: Arc::as_ptr(node).addr(),
            epoch,
        };
        // The waiter's half of the protocol (module docs), after its
        // SeqCst publication in `publish`.
        let armed = self.armed.load(Ordering::SeqCst);
        if armed == OFF || self.epoch.load(Ordering::Acquire) != epoch {
            // Stopped meanwhile: take the node back and use a timer.
            self.untrack(&tracked);
            return None;
        }
        if at < armed {
            self.kick.store(true, Ordering::SeqCst);
            self.waker.wake();
        }
        Some(tracked)
    }

    /// Claims slot `i` if it is empty (CAS to [`claimed`]), writes the
    /// hint `at`, then publishes a strong reference to `node` (SeqCst: the
    /// waiter's half of the protocol; its Release side publishes the hint
    /// and the node's deadline). `false`: the slot was taken.
    fn publish(&self, i: usize, node: &Arc<Node>, at: u64) -> bool {
        let s = &self.slots[i];
        if !s.node.load(Ordering::Relaxed).is_null()
            || s.node
                .compare_exchange(
                    std::ptr::null_mut(),
                    claimed(),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        s.at.store(at, Ordering::Relaxed);
        s.node
            .store(Arc::into_raw(Arc::clone(node)).cast_mut(), Ordering::SeqCst);
        true
    }

    /// Slot `i`'s node, if one is published there (not empty, not being
    /// claimed). A hint: it may be taken right after.
    fn published(&self, i: usize, order: Ordering) -> Option<*mut Node> {
        let p = self.slots[i].node.load(order);
        (!p.is_null() && p != claimed()).then_some(p)
    }

    /// Ends a tracked wait: takes the node's reference out of its slot,
    /// unless the sweeper took it first.
    pub(crate) fn untrack(&self, tracked: &Tracked) {
        // loom mutant: untrack_keeps_slot (leaves the node to the sweeper),
        // see loom-tests/run-mutants.sh
        if sync::mutant("untrack_keeps_slot") {
            return;
        }
        // The address is only compared: the CAS returns the slot's own
        // pointer (with its provenance) if it still names this node.
        drop(self.take(tracked.slot, std::ptr::without_provenance_mut(tracked.node)));
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
            epoch,
            kept: Vec::new(),
        }
    }

    /// Takes slot `i`'s node if it is still `p` (a published node): the
    /// strong reference the slot held is ours.
    fn take(&self, i: usize, p: *mut Node) -> Option<Arc<Node>> {
        self.slots[i]
            .node
            .compare_exchange(p, std::ptr::null_mut(), Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            // SAFETY: a published slot holds a strong reference made by
            // `Arc::into_raw`; the CAS moved it to us.
            .map(|p| unsafe { Arc::from_raw(p) })
    }

    /// One sweep at `now`: times out every tracked waiter whose deadline
    /// passed (counting each in `swept` before its waiter wakes), and arms
    /// the next wake-up, which it returns: the earliest deadline it saw, or
    /// `next_tick` if that is sooner.
    pub(crate) fn sweep(
        &self,
        sweeper: &mut Sweeper,
        waiters: &Waiters,
        now: Instant,
        next_tick: Instant,
        swept: &std::sync::atomic::AtomicU64,
    ) -> Instant {
        let Some(&base) = self.base.get() else {
            return next_tick;
        };
        let now_ms = Self::ms(base, now, false);
        let expire = |node: &Node| {
            if waiters.expire(node) {
                crate::metrics::bump(swept);
                node.wake();
            }
        };
        // Each round handles what the previous one's re-read found; a
        // stream of new due registrations cannot hold the worker: after a
        // few rounds the sweeper comes back in a millisecond instead.
        for _ in 0..4 {
            let mut earliest = Self::ms(base, next_tick, true);
            for i in 0..SLOTS {
                let Some(p) = self.published(i, Ordering::Acquire) else {
                    continue;
                };
                let at = self.slots[i].at.load(Ordering::Relaxed);
                if at > now_ms {
                    earliest = earliest.min(at);
                    continue;
                }
                // loom mutant: sweep_take_without_cas (a plain store, not
                // a CAS from `p`), see loom-tests/run-mutants.sh
                let taken = if sync::mutant("sweep_take_without_cas") {
                    self.slots[i]
                        .node
                        .store(std::ptr::null_mut(), Ordering::Release);
                    // SAFETY: none: the injected bug (mutant builds only);
                    // its waiter may have taken `p`'s reference meanwhile.
                    Some(unsafe { Arc::from_raw(p) })
                } else {
                    self.take(i, p)
                };
                let Some(node) = taken else {
                    continue; // its waiter untracked it meanwhile
                };
                if node.deadline() <= now_ms {
                    expire(&node);
                } else {
                    // The hint was a previous occupant's: put the node
                    // back with its own, as a waiter would, or keep it
                    // here if the slot was taken meanwhile.
                    earliest = earliest.min(node.deadline());
                    if !self.publish(i, &node, node.deadline()) {
                        sweeper.kept.push(node);
                    }
                }
            }
            sweeper.kept.retain(|node| {
                if !node.is_waiting() {
                    return false;
                }
                if node.deadline() <= now_ms {
                    expire(node);
                    return false;
                }
                earliest = earliest.min(node.deadline());
                true
            });
            if self.epoch.load(Ordering::Acquire) == sweeper.epoch {
                self.armed.store(earliest, Ordering::SeqCst);
            }
            // The sweeper's half of the protocol (module docs): a waiter
            // that published before this store's place in the SeqCst order
            // is seen here.
            let missed = (0..SLOTS).any(|i| {
                self.published(i, Ordering::SeqCst).is_some()
                    && self.slots[i].at.load(Ordering::Relaxed) < earliest
            });
            if !missed {
                return base + std::time::Duration::from_millis(earliest.saturating_sub(1));
            }
        }
        now + std::time::Duration::from_millis(1)
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
        for i in 0..SLOTS {
            let node = self
                .published(i, Ordering::SeqCst)
                .and_then(|p| self.take(i, p));
            if let Some(node) = node {
                node.wake();
            }
        }
        for node in sweeper.kept.drain(..) {
            node.wake();
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        for i in 0..SLOTS {
            drop(
                self.published(i, Ordering::Relaxed)
                    .and_then(|p| self.take(i, p)),
            );
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

/// Loom test support (`loom-tests/`, through `Pool::loom_deadline_slots`):
/// a model cannot reach these slots through a `Pool` (it runs no Tokio, so
/// no background task, and the core is private), so it gets the deadline
/// slots and a waiter queue of their own, driven as the pool drives them:
/// `park` (`pool.rs`) and `WaitGuard` (`guards.rs`) for the waiter, the
/// ticker's sweep (`background.rs`) for the sweeper.
#[cfg(latchless_loom)]
pub(crate) fn loom_deadline_slots() -> LoomDeadlines {
    let (deadlines, waiters) = (Deadlines::new(), Waiters::new());
    let mut sweeper = deadlines.start();
    let start = Instant::now();
    // Armed ten days ahead: every waiter's deadline is earlier and
    // kicks it, the same branch in every execution.
    let unused = std::sync::atomic::AtomicU64::new(0);
    deadlines.sweep(
        &mut sweeper,
        &waiters,
        start,
        start + LOOM_DAY * 10,
        &unused,
    );
    LoomDeadlines {
        deadlines,
        waiters,
        epoch: sweeper.epoch,
        start,
    }
}

#[cfg(latchless_loom)]
const LOOM_DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// See `Pool::loom_deadline_slots`.
#[cfg(latchless_loom)]
#[doc(hidden)]
#[derive(Debug)]
pub struct LoomDeadlines {
    deadlines: Deadlines,
    waiters: Waiters,
    epoch: u64,
    start: Instant,
}

/// A parked `get` tracked in a deadline slot (loom only).
#[cfg(latchless_loom)]
#[doc(hidden)]
#[derive(Debug)]
pub struct LoomWaiter {
    node: Arc<Node>,
    tracked: Option<Tracked>,
    done: bool,
}

#[cfg(latchless_loom)]
impl LoomDeadlines {
    /// A `get` parks with a deadline an hour away (`park`): registers, then
    /// tracks its node in a slot, from slot 0 (the thread's home, pinned:
    /// the same slot in every execution).
    pub fn park(&self) -> LoomWaiter {
        let node = self.waiters.register(None).expect("no waiter bound");
        tid::set_cursor(Some(0));
        let tracked = self
            .deadlines
            .track(self.start + LOOM_DAY / 24, &node)
            .expect("a serving sweeper and a free slot");
        LoomWaiter {
            node,
            tracked: Some(tracked),
            done: false,
        }
    }

    /// The background task's sweep a day later (every deadline is due);
    /// returns how many waiters it timed out.
    pub fn sweep(&self) -> u64 {
        let mut sweeper = Sweeper {
            epoch: self.epoch,
            kept: Vec::new(),
        };
        let swept = std::sync::atomic::AtomicU64::new(0);
        let now = self.start + LOOM_DAY;
        let _ = self.deadlines.sweep(
            &mut sweeper,
            &self.waiters,
            now,
            now + LOOM_DAY * 10,
            &swept,
        );
        assert!(sweeper.kept.is_empty(), "every due node timed out");
        swept.into_inner()
    }

    /// A release hands connection `slot` to the oldest waiter
    /// (`Core::pass_on`). `false`: nobody took it, the releaser keeps it
    /// (for the idle set).
    pub fn serve(&self, slot: u32) -> bool {
        self.waiters.serve(Grant::Slot(slot)).is_ok()
    }

    /// Slots holding a node or being claimed.
    pub fn occupied(&self) -> usize {
        self.deadlines
            .slots
            .iter()
            .filter(|s| !s.node.load(Ordering::SeqCst).is_null())
            .count()
    }

    /// Waiters still waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.live()
    }
}

#[cfg(latchless_loom)]
impl LoomWaiter {
    /// Polls the parked `get` (`WaitGuard`): `Ready(Some(slot))`, served
    /// that connection; `Ready(None)`, timed out by the sweeper.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> std::task::Poll<Option<u32>> {
        let outcome = self.node.poll(cx);
        self.done |= outcome.is_ready();
        outcome.map(|o| match o {
            Outcome::Granted(Grant::Slot(i)) => Some(i),
            Outcome::TimedOut => None,
            o => panic!("not in a deadline model: {o:?}"),
        })
    }

    /// The wait ends (`WaitGuard`'s drop: untrack, then, unless polled to
    /// an outcome, withdraw). Returns the connection it was served
    /// meanwhile, which the caller gives back.
    pub fn end(mut self, d: &LoomDeadlines) -> Option<u32> {
        if let Some(tracked) = self.tracked.take() {
            d.deadlines.untrack(&tracked);
        }
        if self.done {
            return None;
        }
        match d.waiters.cancel(&self.node) {
            Some(Outcome::Granted(Grant::Slot(i))) => Some(i),
            None | Some(Outcome::TimedOut) => None,
            Some(o) => panic!("not in a deadline model: {o:?}"),
        }
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
        d.sweep(&mut s, w, Instant::now(), next_tick, &Counter::new(0));
        s
    }

    fn kicked(d: &Deadlines) -> bool {
        d.kicked(&mut Context::from_waker(Waker::noop()))
    }

    fn occupied(d: &Deadlines) -> usize {
        d.slots
            .iter()
            .filter(|s| !s.node.load(Ordering::Relaxed).is_null())
            .count()
    }

    #[test]
    fn no_sweeper_no_tracking() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let node = w.register(None).unwrap();
        assert!(d.track(Instant::now(), &node).is_none());
        assert_eq!(occupied(&d), 0);
    }

    #[test]
    fn only_a_deadline_before_the_armed_wake_up_kicks_the_sweeper() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let _s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let late = w.register(None).unwrap();
        let t = d.track(now + Duration::from_secs(30), &late).unwrap();
        assert!(d.serving(t.epoch));
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
        let g = d.track(now, &gone).unwrap();
        assert_eq!(w.cancel(&gone), None);
        d.untrack(&g);
        assert_eq!(occupied(&d), 2, "an ended wait clears its own slot");
        let swept = Counter::new(0);
        let at = now + Duration::from_millis(2);
        let next = d.sweep(&mut s, &w, at, tick, &swept);
        assert_eq!(
            swept.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the due waiter"
        );
        assert!(!due.is_waiting() && later.is_waiting());
        assert!(
            next >= now + Duration::from_millis(500),
            "never before a deadline"
        );
        assert!(next <= now + Duration::from_millis(502), "{next:?}");
        assert_eq!(occupied(&d), 1);
        let next = d.sweep(&mut s, &w, now + Duration::from_millis(502), tick, &swept);
        assert_eq!(swept.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(next >= tick, "nothing held: the maintenance tick");
        assert_eq!(occupied(&d), 0);
    }

    #[test]
    fn nobody_is_timed_out_before_their_deadline() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let mut s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let n = w.register(None).unwrap();
        let deadline = now + Duration::from_micros(10_300);
        d.track(deadline, &n).unwrap();
        let swept = Counter::new(0);
        let next = d.sweep(
            &mut s,
            &w,
            deadline - Duration::from_micros(1),
            now + Duration::from_secs(1),
            &swept,
        );
        assert!(n.is_waiting(), "not due 1 µs before its deadline");
        assert!(next >= deadline, "the wake-up is not before it either");
        d.sweep(&mut s, &w, next, now + Duration::from_secs(1), &swept);
        assert!(!n.is_waiting(), "due at the armed wake-up");
    }

    #[test]
    fn slots_are_bounded_and_a_full_neighbourhood_falls_back_to_a_timer() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let _s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        // One waiter per fresh thread, each starting at the same slot.
        let nodes: Vec<_> = (0..PROBES + 1).map(|_| w.register(None).unwrap()).collect();
        let tracked: Vec<_> = std::thread::scope(|sc| {
            nodes
                .iter()
                .map(|n| {
                    sc.spawn(|| {
                        tid::set_cursor(Some(5));
                        d.track(now + Duration::from_secs(30), n)
                    })
                    .join()
                    .unwrap()
                })
                .collect()
        });
        assert!(tracked[..PROBES].iter().all(Option::is_some));
        assert!(tracked[PROBES].is_none(), "no free slot within reach");
        assert_eq!(occupied(&d), PROBES);
        for t in tracked.iter().flatten() {
            d.untrack(t);
        }
        assert_eq!(occupied(&d), 0, "every slot given back");
        for n in &nodes {
            assert_eq!(
                Arc::strong_count(n),
                2,
                "the queue's and ours: no reference leaked"
            );
        }
    }

    #[test]
    fn one_threads_waiters_spread_over_the_whole_array() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let _s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let nodes: Vec<_> = (0..SLOTS).map(|_| w.register(None).unwrap()).collect();
        let tracked: Vec<_> = nodes
            .iter()
            .map(|n| d.track(now + Duration::from_secs(30), n))
            .collect();
        assert!(
            tracked.iter().all(Option::is_some),
            "more than {PROBES} waiters of one thread are all tracked"
        );
        assert_eq!(occupied(&d), SLOTS);
        for t in tracked.iter().flatten() {
            d.untrack(t);
        }
    }

    #[test]
    fn stopping_hands_every_waiter_back_to_its_own_timer() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let mut s = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        let n = w.register(None).unwrap();
        let t = d.track(now + Duration::from_secs(30), &n).unwrap();
        d.stop(&mut s);
        assert!(!d.serving(t.epoch));
        assert_eq!(occupied(&d), 0);
        d.untrack(&t);
        assert!(n.is_waiting(), "not timed out: it arms its own timer");
        assert_eq!(Arc::strong_count(&n), 2);
        assert!(d.track(now, &n).is_none(), "no sweeper after the stop");
        let mut s2 = armed_sweeper(&d, &w, now + Duration::from_secs(1));
        assert!(!d.serving(t.epoch), "a new sweeper is not the old one");
        let t2 = d.track(now + Duration::from_secs(30), &n).unwrap();
        assert!(d.serving(t2.epoch));
        d.stop(&mut s2);
    }

    #[test]
    fn a_stale_hint_never_times_out_a_later_occupant() {
        let (d, w) = (Deadlines::new(), Waiters::new());
        let now = Instant::now();
        let tick = now + Duration::from_secs(1);
        let mut s = armed_sweeper(&d, &w, tick);
        let n = w.register(None).unwrap();
        let t = d.track(now + Duration::from_secs(30), &n).unwrap();
        // As if the hint were a previous occupant's, long due.
        d.slots[t.slot].at.store(1, Ordering::Relaxed);
        let swept = Counter::new(0);
        d.sweep(&mut s, &w, now + Duration::from_secs(2), tick, &swept);
        assert!(n.is_waiting(), "its own deadline decides");
        assert_eq!(swept.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(occupied(&d), 1, "put back in its slot");
        d.untrack(&t);
        assert_eq!(occupied(&d), 0);
        assert_eq!(Arc::strong_count(&n), 2);
    }
}
