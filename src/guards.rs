//! The guards that hold what an await point owns, so that a cancelled or
//! failed `get` loses nothing (I5): each one's `Drop` gives back what it
//! still holds.
//!
//! | guard | holds | dropped unused |
//! | --- | --- | --- |
//! | [`PlaceGuard`] | a reserved place, across a connect | the place is passed on |
//! | [`Connecting`] | one count of connects in flight | uncounted (`State::in_use`) |
//! | [`WaitGuard`] | a registered waiter, while parked | withdrawn; a grant served meanwhile is passed on |
//! | [`CheckGuard`] | an idle connection awaiting its pre-ping | closed (its state is unknown) and its place passed on |
//!
//! Invariant kept: every guard gives back exactly once: what it holds is
//! taken out (`Option::take`) by whichever of its consuming method or its
//! `Drop` runs first.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::Manager;
use crate::core::{Core, Owner, from_grant};
use crate::lifetime::settle_held;
use crate::metrics::bump;
use crate::slots::{Busy, Held, Place};
use crate::sync::{self, Ordering, mutant};
use crate::waiters::{Node, Outcome};

/// A reserved place held across the connect's await: dropped unused, it is
/// given back (to a waiter, or to the free queue).
pub(crate) struct PlaceGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    place: Option<Place>,
}

impl<'a, M: Manager> PlaceGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, place: Place) -> Self {
        Self {
            shared,
            place: Some(place),
        }
    }

    /// The place, for the connection just opened into it.
    pub(crate) fn into_place(mut self) -> Place {
        match self.place.take() {
            Some(place) => place,
            // Only this and `Drop` take it, and each runs once.
            None => unreachable!("a place guard is consumed once"),
        }
    }
}

impl<M: Manager> Drop for PlaceGuard<'_, M> {
    fn drop(&mut self) {
        // loom mutant: leak_place, see loom-tests/run-mutants.sh
        if mutant("leak_place") {
            return;
        }
        if let Some(place) = self.place.take() {
            settle_held(self.shared, self.shared.pass_on(Held::Place(place)));
        }
    }
}

/// Counts a connect in flight for `State::in_use`.
pub(crate) struct Connecting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Connecting<'a> {
    pub(crate) fn new<M: Manager>(shared: &'a Core<M>) -> Self {
        shared.counters.connecting.fetch_add(1, Ordering::Relaxed);
        Self(&shared.counters.connecting)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registered waiter. Polling it waits for the outcome; dropping it
/// before that withdraws the node and gives back anything it was served.
pub(crate) struct WaitGuard<'a, M: Manager> {
    pub(crate) shared: &'a Arc<Owner<M>>,
    pub(crate) node: sync::Arc<Node>,
    done: bool,
    /// Its slot with the pool's deadline sweeper, if it took one.
    pub(crate) tracked: Option<crate::deadlines::Tracked>,
}

impl<'a, M: Manager> WaitGuard<'a, M> {
    /// Holds the freshly registered `node` of `shared`'s waiter queue.
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, node: sync::Arc<Node>) -> Self {
        Self {
            shared,
            node,
            done: false,
            tracked: None,
        }
    }
}

impl<M: Manager> WaitGuard<'_, M> {
    /// Leaves the queue now: `None` if still waiting, else what was served
    /// (now the caller's).
    pub(crate) fn withdraw(&mut self) -> Option<Outcome> {
        self.done = true;
        self.shared.waiters.cancel(&self.node)
    }
}

impl<M: Manager> Future for WaitGuard<'_, M> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let outcome = self.node.poll(cx);
        if outcome.is_ready() {
            self.done = true;
        }
        outcome
    }
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(tracked) = self.tracked.take() {
            self.shared.deadlines.untrack(&tracked);
        }
        if self.done {
            return;
        }
        if let Some(Outcome::Granted(grant)) = self.withdraw() {
            // loom mutant: cancel_drops_grant, see loom-tests/run-mutants.sh
            if mutant("cancel_drops_grant") {
                return;
            }
            // SAFETY: `withdraw` found the node served: the grant is this
            // waiter's, and nobody else's (`waiters.rs`).
            let held = unsafe { from_grant(grant) };
            settle_held(self.shared, self.shared.pass_on(held));
        }
    }
}

/// An owned idle connection awaiting its pre-ping. Dropped without a
/// successful check, it closes the connection and passes its place on.
pub(crate) struct CheckGuard<'a, M: Manager> {
    pub(crate) shared: &'a Arc<Owner<M>>,
    busy: Option<Busy>,
}

impl<'a, M: Manager> CheckGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, busy: Busy) -> Self {
        Self {
            shared,
            busy: Some(busy),
        }
    }

    /// The connection under check (this guard's claimed slot).
    pub(crate) fn conn_mut(&mut self) -> Option<&mut M::Connection> {
        let shared: &'a Owner<M> = self.shared;
        self.busy.as_mut().map(|busy| shared.slots.conn_mut(busy))
    }

    /// The check passed: records it and hands the slot to the caller.
    pub(crate) fn passed(mut self) -> Option<Busy> {
        let busy = self.busy.take()?;
        let shared = self.shared;
        shared
            .slots
            .set_verified(&busy, shared.lifecycle.next_seq());
        Some(busy)
    }
}

impl<M: Manager> CheckGuard<'_, M> {
    /// Gives the connection back unchecked (the caller ran out of time
    /// before its check could start): behind the other idle ones, keeping
    /// its idle time, or to a waiter, who checks it.
    pub(crate) fn requeue(mut self) {
        if let Some(busy) = self.busy.take() {
            settle_held(self.shared, self.shared.requeue(busy));
        }
    }
}

impl<M: Manager> Drop for CheckGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(busy) = self.busy.take() {
            let shared = self.shared;
            bump(&shared.counters.check_failures);
            // One failed check marks every connection opened before now
            // for a check: after a server restart that costs one failed
            // check, not one timeout per connection.
            shared.lifecycle.note_failure();
            // Contain a panic from the connection's `Drop` (retire does).
            let retired = catch_unwind(AssertUnwindSafe(|| shared.retire(busy)));
            if let Ok(r) = retired {
                settle_held(shared, r);
            }
        }
    }
}
