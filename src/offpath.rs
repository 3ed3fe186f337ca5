//! Work on connections off the request path, each in a task of its own on
//! the current Tokio runtime: the clean-up of a returned connection
//! ([`Manager::cleanup`]), keepalive checks of idle connections
//! (`Builder::keepalive`), and the replacement of connections nearing
//! `max_lifetime` (`Builder::replace_before_expiry`). A release starts a
//! clean-up (`release.rs`); a maintenance pass starts the other two when
//! their timer entries fire (`maintenance.rs`), through the core's
//! [`Household`](crate::maintenance::Household) methods.
//!
//! # Invariants kept
//!
//! - A connection worked on here is held by its slot's token (BUSY) from
//!   its claim to the end of the work: it is never handed out meanwhile,
//!   and claims go through `IdleSet::claim_in_place`, the same CAS as any
//!   acquirer's (I1). The token lives in a [`Job`] from the claim on, and
//!   every way out of a task (done, failed, timed out, panicked, dropped
//!   unpolled by a runtime shutting down) either puts the connection back
//!   through the release path's own verbs (`put_back_fresh`, `requeue`:
//!   the oldest waiter first) or closes it and passes its place on
//!   (`retire`): nothing is lost.
//! - A clean-up or a keepalive check is bounded by `check_timeout`; a
//!   replacement connect by `connect_timeout`, and it is admitted by the
//!   breaker like any other connect.
//! - At most [`MAX_KEEPALIVE_CHECKS`] keepalive checks run at once.
//! - A replacement never takes the pool above `max_size`: its successor
//!   takes a free place (`Core::reserve`), or the place of the idle
//!   connection it replaces, held by the task from the claim until the
//!   successor is in it (make before break in both cases: the old
//!   connection is closed only once its successor is open).
//! - Without a runtime nothing is spawned: a connection that needs
//!   cleaning is closed; a keepalive check or a replacement waits for the
//!   next pass inside a runtime.

use std::sync::Arc;

use tokio::time::Instant;

use crate::Manager;
use crate::core::{Core, Owner};
use crate::lifetime::{Retired, Settle};
use crate::maintenance::Started;
use crate::metrics::bump;
use crate::release::close_quietly;
use crate::slots::Busy;
use crate::sync::Ordering;

/// The most keepalive checks in flight at once ("a few at a time").
pub(crate) const MAX_KEEPALIVE_CHECKS: usize = 4;

/// Which work a [`Job`] does: what becomes of its connection if the task
/// ends without deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// A clean-up on return: closed (its state is unknown).
    Cleanup,
    /// A keepalive check: closed (it was not verified).
    Keepalive,
    /// An idle connection set aside while its successor connects: put back
    /// unchanged.
    Replace,
}

/// A slot token owned by a background task, with the core it belongs to.
/// Dropped while it still holds the token, it settles the connection as
/// its [`Work`] says.
struct Job<M: Manager> {
    owner: Arc<Owner<M>>,
    busy: Option<Busy>,
    work: Work,
}

impl<M: Manager> Drop for Job<M> {
    fn drop(&mut self) {
        let core: &Core<M> = &self.owner;
        if self.work == Work::Keepalive {
            core.maintenance.keepalives.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(busy) = self.busy.take() else {
            return;
        };
        let mut retired = Settle::new(&self.owner);
        match self.work {
            Work::Cleanup => {
                core.note_close(&core.counters.closed_cleanup, "cleanup_failed");
                core.retire(busy, &mut retired);
            }
            Work::Keepalive => {
                core.note_close(&core.counters.closed_check_cancelled, "check_cancelled");
                core.retire(busy, &mut retired);
            }
            Work::Replace => core.requeue(busy, &mut retired),
        }
    }
}

impl<M: Manager> Job<M> {
    /// The connection of the token still held, for the task's await.
    fn conn(&mut self) -> Option<&mut M::Connection> {
        let busy = self.busy.as_mut()?;
        Some(self.owner.slots.conn_mut(busy))
    }
}

/// `Some(Ok)` when `fut` finished by `until` without panicking.
async fn run_bounded<F: std::future::Future>(until: Option<Instant>, fut: F) -> Option<F::Output> {
    crate::sync::bounded(until, crate::background::caught(fut))
        .await
        .flatten()
}

impl<M: Manager> Core<M> {
    /// Hands a returned connection that needs cleaning to a task of its
    /// own: the release returns now; the connection rejoins the pool (the
    /// oldest waiter first) only once its clean-up passed. Without a
    /// runtime to clean it on, it is closed.
    #[cold]
    #[inline(never)]
    pub(crate) fn clean_off_path(&self, busy: Busy, retired: &mut Retired) {
        bump(&self.counters.cleanups);
        let rt = tokio::runtime::Handle::try_current();
        match (rt, self.weak.upgrade()) {
            (Ok(rt), Some(owner)) => {
                let job = Job {
                    owner,
                    busy: Some(busy),
                    work: Work::Cleanup,
                };
                rt.spawn(clean(job));
            }
            _ => {
                self.note_close(&self.counters.closed_cleanup, "cleanup_failed");
                self.retire(busy, retired);
            }
        }
    }

    /// Starts a keepalive check of connection `serial` in slot `index` if
    /// it is still idle there (claimed in place, so no acquirer can take it
    /// meanwhile).
    pub(crate) fn start_keepalive(&self, index: u32, serial: u64) -> Started {
        if self.closed.load(Ordering::Relaxed) {
            return Started::No;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Started::Later;
        };
        let Some(owner) = self.weak.upgrade() else {
            return Started::No;
        };
        let running = &self.maintenance.keepalives;
        if running.fetch_add(1, Ordering::Relaxed) >= MAX_KEEPALIVE_CHECKS {
            running.fetch_sub(1, Ordering::Relaxed);
            return Started::Later;
        }
        // From here the job gives the count back, whatever happens.
        let mut job = Job {
            owner,
            busy: None,
            work: Work::Keepalive,
        };
        job.busy = self.idle.claim_in_place(&self.slots, index, serial);
        if job.busy.is_none() {
            return Started::NotIdle;
        }
        bump(&self.counters.keepalive_checks);
        rt.spawn(keepalive(job));
        Started::Yes
    }

    /// Replaces connection `serial` in slot `index`, which expires soon,
    /// if the pool is in use (`used`: the connection is in use or was
    /// returned within the lead): with a free place, a successor opens
    /// into it; otherwise an idle old connection is set aside while its
    /// successor connects into its place.
    pub(crate) fn start_replacement(&self, index: u32, serial: u64, used: bool) -> Started {
        if self.closed.load(Ordering::Relaxed) || self.breaker.is_down() || !used {
            return Started::No;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Started::Later;
        };
        let Some(owner) = self.weak.upgrade() else {
            return Started::No;
        };
        // A free place, read, not reserved: the task reserves its own (a
        // place carried into a task that a runtime drops unpolled would be
        // lost, and one reserved and given back here would skip the
        // waiter re-check that a place going back needs). A `get` that
        // takes it meanwhile connects for itself, which is what this would
        // have spared it.
        let budget_left = self.budget.as_ref().is_none_or(|b| b.used() < b.max());
        if self.slots.taken() < self.slots.cap() && budget_left {
            rt.spawn(open_successor(owner));
            return Started::Yes;
        }
        let Some(busy) = self.idle.claim_in_place(&self.slots, index, serial) else {
            return Started::Later;
        };
        let job = Job {
            owner,
            busy: Some(busy),
            work: Work::Replace,
        };
        rt.spawn(swap_successor(job));
        Started::Yes
    }

    /// Puts back an idle connection that passed a keepalive check: fresh
    /// again, keeping its idle time (keepalive does not hold off
    /// `idle_timeout`), behind the others or to the oldest waiter.
    pub(crate) fn put_back_checked(&self, busy: Busy, retired: &mut Retired) {
        let now = self.now_for_checks();
        let life = &self.slots.of(&busy).life;
        life.set_fresh_until(self.lifecycle.fresh_until(life.expires_at(), now));
        // loom mutant: keepalive_put_back_blind (back into the idle set
        // without looking for waiters or `closed`), see run-mutants.sh
        if crate::sync::mutant("keepalive_put_back_blind") {
            return self.idle.put_back(&self.slots, busy);
        }
        self.requeue(busy, retired);
    }
}

/// Runs `Manager::cleanup` on a returned connection, bounded by
/// `check_timeout`: passed, the connection rejoins the pool; otherwise it
/// is closed (the job's drop).
async fn clean<M: Manager>(mut job: Job<M>) {
    let owner = Arc::clone(&job.owner);
    let until = Instant::now().checked_add(owner.config.check_timeout);
    let outcome = match job.conn() {
        Some(conn) => run_bounded(until, owner.manager.cleanup(conn)).await,
        None => return,
    };
    match outcome {
        Some(Ok(())) => {
            if let Some(busy) = job.busy.take() {
                owner.rejoin_cleaned(busy, &mut Settle::new(&owner));
            }
        }
        Some(Err(e)) => {
            tracing::warn!(pool = %owner.config.name, error = %e, "clean-up on return failed; connection closed");
        }
        None => {
            tracing::warn!(pool = %owner.config.name, "clean-up on return timed out or panicked; connection closed");
        }
    }
}

/// Runs `Manager::check` on an idle connection, bounded by
/// `check_timeout` and counted in `check_time`: passed, the connection is
/// put back fresh; failed, it is closed as a failed check and `min_idle`
/// refilled.
async fn keepalive<M: Manager>(mut job: Job<M>) {
    let owner = Arc::clone(&job.owner);
    let started = Instant::now();
    let until = started.checked_add(owner.config.check_timeout);
    let outcome = match job.conn() {
        Some(conn) => run_bounded(until, owner.manager.check(conn)).await,
        None => return,
    };
    let Some(busy) = job.busy.take() else {
        return;
    };
    let mut retired = Settle::new(&owner);
    match outcome {
        Some(Ok(())) => {
            owner.counters.check.record_duration(0, started.elapsed());
            owner.passed_check(&busy);
            owner.put_back_checked(busy, &mut retired);
        }
        failed => {
            if let Some(Err(e)) = failed {
                owner.counters.check.record_duration(0, started.elapsed());
                tracing::warn!(pool = %owner.config.name, error = %e, "keepalive check failed");
            }
            owner.failed_check(busy, &mut retired);
            crate::background::refill(&owner);
        }
    }
}

/// Opens a successor into a free place, ahead of an expiring connection;
/// nothing if no place is free by now or the connect fails (the old one
/// then expires as it would have).
async fn open_successor<M: Manager>(owner: Arc<Owner<M>>) {
    let core: &Core<M> = &owner;
    let Ok(flight) = crate::connector::admit(core) else {
        return;
    };
    let Some(place) = core.reserve() else {
        return;
    };
    let place = crate::guards::PlaceGuard::new(&owner, place);
    let deadline = Instant::now().checked_add(core.config.connect_timeout);
    let opened = crate::background::caught(crate::connector::open(
        &owner,
        place,
        Some(flight),
        deadline,
    ))
    .await;
    if let Some(Ok(busy)) = opened {
        bump(&core.counters.replaced);
        core.put_back_fresh(busy, &mut Settle::new(&owner));
    }
}

/// Connects a successor for the idle connection the job holds, then
/// closes the old one and puts the successor into its place. If the
/// connect fails the old connection goes back unchanged (the job's drop)
/// and expires as it would have.
async fn swap_successor<M: Manager>(mut job: Job<M>) {
    let owner = Arc::clone(&job.owner);
    let core: &Core<M> = &owner;
    let conn = {
        let Ok(_flight) = crate::connector::admit(core) else {
            return;
        };
        let _connecting = crate::guards::Connecting::new(core);
        let deadline = Instant::now().checked_add(core.config.connect_timeout);
        match crate::background::caught(crate::connector::attempt(core, deadline)).await {
            Some(Ok(conn)) => conn,
            _ => return,
        }
    };
    let Some(old) = job.busy.take() else {
        close_quietly(Some(conn));
        return;
    };
    let mut retired = Settle::new(&owner);
    let (old_conn, place) = core.slots.take(old);
    close_quietly(old_conn);
    bump(&core.counters.closed);
    bump(&core.counters.expired);
    core.note_close(&core.counters.closed_lifetime, "lifetime");
    retired.add(1);
    let busy = crate::connector::adopt(core, place, conn);
    bump(&core.counters.replaced);
    core.put_back_fresh(busy, &mut retired);
}
