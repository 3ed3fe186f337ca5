//! The guards that hold what an await point owns, so that a cancelled or
//! failed `get` loses nothing (I5): each one's `Drop` gives back what it
//! still holds.
//!
//! | guard | holds | dropped unused |
//! | --- | --- | --- |
//! | [`PlaceGuard`] | a reserved place, across a connect | the place is passed on |
//! | [`Connecting`] | one count of connects in flight | uncounted (`State::in_use`) |
//! | [`WaitGuard`] | a registered waiter, while parked | withdrawn; a grant served meanwhile is passed on |
//! | [`CheckGuard`] | an idle connection awaiting its pre-ping | not started: put back; failed: closed, place passed on; running: the check finishes without the caller |
//!
//! Invariant kept: every guard gives back exactly once: what it holds is
//! taken out (`Option::take`) by whichever of its consuming method or its
//! `Drop` runs first.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::Manager;
use crate::core::{Core, Owner};
use crate::lifetime::Settle;
use crate::metrics::bump;
use crate::release::from_grant;
use crate::slots::{Busy, Held, Place};
use crate::sync::{self, Ordering, mutant};
use crate::waiters::{Node, Outcome};
use tokio::time::Instant;

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
            self.shared
                .pass_on(Held::Place(place), &mut Settle::new(self.shared));
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
    /// Taken only by `drop`, which hands it to `waiters::recycle` (a
    /// panic on the way out would leak it, not free it twice).
    node: ManuallyDrop<sync::Arc<Node>>,
    done: bool,
}

impl<'a, M: Manager> WaitGuard<'a, M> {
    /// Holds the freshly registered `node` of `shared`'s waiter queue.
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, node: sync::Arc<Node>) -> Self {
        Self {
            shared,
            node: ManuallyDrop::new(node),
            done: false,
        }
    }
}

impl<M: Manager> WaitGuard<'_, M> {
    /// Leaves the queue now: `None` if still waiting, else what was served
    /// (now the caller's).
    pub(crate) fn withdraw(&mut self) -> Option<Outcome> {
        self.done = true;
        let outcome = self.shared.waiters.cancel(&self.node);
        if outcome.is_some() {
            // It ended otherwise meanwhile, and the live count read one low
            // for a moment (`waiters.rs`, "Cancel"): serve a waiter that a
            // releaser may have passed by then.
            self.shared.rescue(&mut Settle::new(self.shared));
        }
        outcome
    }
}

impl<M: Manager> WaitGuard<'_, M> {
    /// Polls for the outcome (registering the waker while waiting); once
    /// ready, the outcome is the caller's and the guard withdraws nothing.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let outcome = self.node.poll(cx);
        if outcome.is_ready() {
            self.done = true;
        }
        outcome
    }
}

impl<M: Manager> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        self.leave();
        // SAFETY: taken once, here, and the field is not used after.
        let node = unsafe { ManuallyDrop::take(&mut self.node) };
        crate::waiters::recycle(node);
    }
}

impl<M: Manager> WaitGuard<'_, M> {
    /// Withdraws a wait that did not end, passing on what it was served
    /// meanwhile.
    fn leave(&mut self) {
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
            self.shared.pass_on(held, &mut Settle::new(self.shared));
        }
    }
}

/// A check in flight: `'static` (it owns a strong reference on the core and
/// the slot's token), so that it can finish without its caller. It returns
/// the token with the result. One allocation per check, which is a network
/// round trip anyway; the fast path runs none.
type CheckFuture<E> = Pin<Box<dyn Future<Output = (Result<(), E>, Busy)> + Send>>;

/// Where a [`CheckGuard`]'s check stands.
enum Stage<E> {
    /// Not started: dropped now, the connection goes back unchecked.
    Waiting(Busy),
    /// Running (the future holds the slot's token), with the instant
    /// `check_timeout` ends it.
    Running {
        fut: CheckFuture<E>,
        index: u32,
        until: Option<Instant>,
    },
    /// Failed, outlasted `check_timeout` or panicked: dropped now, the
    /// connection is closed and counted as a failed check.
    Failed(Busy),
    /// Passed: the caller has the slot.
    Done,
}

/// Starts `Manager::check` on the connection of `busy`'s slot.
fn start_check<M: Manager>(owner: Arc<Owner<M>>, mut busy: Busy) -> CheckFuture<M::Error> {
    Box::pin(async move {
        let result = owner.manager.check(owner.slots.conn_mut(&mut busy)).await;
        (result, busy)
    })
}

/// Polls a check, catching a panic in it (`None`).
fn poll_guarded<E>(
    fut: &mut CheckFuture<E>,
    cx: &mut Context<'_>,
) -> Poll<Option<(Result<(), E>, Busy)>> {
    match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(r)) => Poll::Ready(Some(r)),
        Err(_) => Poll::Ready(None),
    }
}

/// The token of slot `index` back from a check future that was dropped (or
/// panicked) without returning it.
///
/// # Safety
/// The future owned the token (`start_check` moved it in) and is gone, so
/// the caller is its only owner.
unsafe fn recover(index: u32) -> Busy {
    // SAFETY: per the contract.
    unsafe { Busy::from_raw(index) }
}

/// An owned idle connection awaiting its pre-ping.
///
/// Dropped before the check starts, the connection goes back unchecked;
/// after a failed check, it is closed and its place passed on; while the
/// check runs (the caller was cancelled or its deadline passed), the same
/// check finishes without the caller on the current runtime, bounded by
/// `check_timeout`, and a passing connection goes back to the pool (a
/// check cut short by its caller is never a failed one). Without a runtime
/// to finish on, the connection is closed (its protocol state is unknown).
pub(crate) struct CheckGuard<'a, M: Manager> {
    shared: &'a Arc<Owner<M>>,
    stage: Stage<M::Error>,
}

impl<'a, M: Manager> CheckGuard<'a, M> {
    pub(crate) fn new(shared: &'a Arc<Owner<M>>, busy: Busy) -> Self {
        Self {
            shared,
            stage: Stage::Waiting(busy),
        }
    }

    /// Runs `Manager::check`, bounded by `check_timeout` and `deadline`.
    /// `Some(busy)` if it passed (the slot is the caller's); `None` if the
    /// connection failed (closed when this guard drops) or the caller's
    /// deadline came first (the check goes on without the caller).
    pub(crate) async fn check(mut self, deadline: Option<Instant>) -> Option<Busy> {
        let shared = self.shared;
        let Stage::Waiting(busy) = std::mem::replace(&mut self.stage, Stage::Done) else {
            return None;
        };
        let index = busy.index();
        let until = Instant::now().checked_add(shared.config.check_timeout);
        // Kept in the guard while it runs: if this future is dropped at the
        // await below, the guard's `Drop` finds it running and detaches it.
        self.stage = Stage::Running {
            fut: start_check(Arc::clone(shared), busy),
            index,
            until,
        };
        let bound = match (until, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stage = &mut self.stage;
        let run = std::future::poll_fn(|cx| match stage {
            Stage::Running { fut, .. } => poll_guarded(fut, cx),
            _ => Poll::Ready(None),
        });
        let started = Instant::now();
        let outcome = crate::sync::bounded(bound, run).await;
        if outcome.is_some() {
            shared.counters.check.record_duration(0, started.elapsed());
        }
        // The caller's deadline came first: `Drop` detaches the check,
        // which goes on without the caller.
        if outcome.is_none() && until.is_none_or(|u| Instant::now() < u) {
            return None;
        }
        // Done with the future: it returned the token, or it is dropped
        // here (it outlasted `check_timeout`, or panicked).
        self.stage = Stage::Done;
        match outcome.flatten() {
            Some((Ok(()), busy)) => {
                shared.passed_check(&busy);
                Some(busy)
            }
            Some((Err(e), busy)) => {
                tracing::warn!(pool = %shared.config.name, error = %e, "connection check failed");
                self.stage = Stage::Failed(busy);
                None
            }
            None => {
                // SAFETY: the future that owned the token is gone (above).
                let busy = unsafe { recover(index) };
                self.stage = Stage::Failed(busy);
                None
            }
        }
    }

    /// Gives the connection back unchecked (the caller ran out of time
    /// before its check could start): behind the other idle ones, keeping
    /// its idle time, or to a waiter, who checks it.
    pub(crate) fn requeue(mut self) {
        if let Stage::Waiting(busy) = std::mem::replace(&mut self.stage, Stage::Done) {
            self.shared.requeue(busy, &mut Settle::new(self.shared));
        }
    }
}

impl<M: Manager> Drop for CheckGuard<'_, M> {
    fn drop(&mut self) {
        let shared = self.shared;
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Done => {}
            Stage::Waiting(busy) => shared.requeue(busy, &mut Settle::new(shared)),
            Stage::Failed(busy) => shared.failed_check(busy, &mut Settle::new(shared)),
            Stage::Running { fut, index, until } => {
                bump(&shared.counters.checks_detached);
                let detached = Detached {
                    owner: Arc::clone(shared),
                    index,
                    fut: Some(fut),
                };
                // No runtime to finish it on: `Detached`'s drop closes the
                // connection, but not as a failed check.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(finish_detached(detached, until));
                }
            }
        }
    }
}

/// A check whose caller went away, owned by the task that finishes it.
/// Dropped unfinished (its runtime shut down before it ran), it closes the
/// connection and passes its place on: nothing is lost.
struct Detached<M: Manager> {
    owner: Arc<Owner<M>>,
    index: u32,
    /// `None` once finished (the token is then handled).
    fut: Option<CheckFuture<M::Error>>,
}

impl<M: Manager> Drop for Detached<M> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            drop(fut);
            // SAFETY: the future that owned the token is gone.
            let busy = unsafe { recover(self.index) };
            self.owner.note_close(
                &self.owner.counters.closed_check_cancelled,
                "check_cancelled",
            );
            self.owner.retire(busy, &mut Settle::new(&self.owner));
        }
    }
}

/// Finishes a check whose caller went away, bounded by `until`.
async fn finish_detached<M: Manager>(mut d: Detached<M>, until: Option<Instant>) {
    let outcome = match d.fut.as_mut() {
        Some(fut) => {
            crate::sync::bounded(until, std::future::poll_fn(|cx| poll_guarded(fut, cx))).await
        }
        None => return,
    };
    // Finished: the future returned the token, or is dropped here.
    let fut = d.fut.take();
    let busy = match outcome.flatten() {
        Some((Ok(()), busy)) => {
            drop(fut);
            d.owner.passed_check(&busy);
            // Fresh again (a passed check restarts its idle clock), then
            // straight to a waiter if one is parked, else idle.
            d.owner.put_back_fresh(busy, &mut Settle::new(&d.owner));
            return;
        }
        Some((Err(_), busy)) => busy,
        None => {
            drop(fut);
            // SAFETY: the future that owned the token is gone.
            unsafe { recover(d.index) }
        }
    };
    d.owner.failed_check(busy, &mut Settle::new(&d.owner));
}
