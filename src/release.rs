//! The release protocol: what happens to a connection or a place when its
//! owner is done with it. A release starts in `Drop for Pooled`
//! (`pooled.rs`) and is read here from start to end; the acquire path is
//! `pool.rs`'s.
//!
//! # One verb per act
//!
//! | verb | act |
//! | --- | --- |
//! | [`release`](Core::release) | a guard gives its connection back: judge it, then `publish` it or `retire` it |
//! | [`publish`](Core::publish) | the common case of `pass_on` for a healthy released connection: put it in the idle set, then re-check |
//! | [`pass_on`](Core::pass_on) | hand a connection or a place to the oldest waiter, else `shelve` it, then re-check |
//! | [`shelve`](Core::shelve) | put a connection into the idle set or a place into the free queue (no re-check) |
//! | [`requeue`](Core::requeue) | put an unchecked idle connection back behind the others (`try_get`, a `get` out of time) |
//! | [`put_back_fresh`](Core::put_back_fresh) | a connection that did not come from a holder (just opened, or just checked for a caller that left) goes idle, stamped fresh |
//! | [`retire`](Core::retire) | close an owned connection, then `pass_on` its place |
//! | [`discard`](Core::discard) | the pool is closed: close and free, serving nobody (and wake a drainer) |
//! | [`close`](Core::close) | stop handing out: reject waiters, close idle connections |
//! | [`resize`](Core::resize) | set the cap on places: trim idle surplus (shrink), serve waiters (grow) |
//!
//! # Invariants kept
//!
//! - I2: a connection returned while more places are taken than the cap
//!   (a shrink) is closed, a place freed then goes to no waiter, and a
//!   releaser re-checks the cap after its shelve, SeqCst, as for a lost
//!   wake-up, so that once connections are back at most the cap are open.
//! - I3: every close path runs [`close_quietly`] once, counts it, and gives
//!   the place on only after.
//! - I4 and I7: a release hands what it holds to the oldest live waiter, or
//!   shelves it and re-reads the waiter count and `closed` (SeqCst): a
//!   waiter that registered meanwhile either found what was shelved in its
//!   own re-check or is seen here (DESIGN.md, "The lost-wake-up argument").
//! - Every close adds the connection's counted reference to the caller's
//!   [`Retired`], which only a `Settle` or a `Cover` holds (`lifetime.rs`):
//!   dropped after the caller's last use of the core.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Manager;
use crate::core::Core;
use crate::lifetime::Retired;
use crate::metrics::bump;
use crate::slots::{Busy, Held, Place};
use crate::sync::{self, Ordering, fence, mutant};
use crate::waiters::Grant;

/// Carries what `held` owns into a waiter node's grant (a number: the
/// ownership travels with the node's serving CAS, `waiters.rs`).
#[inline]
pub(crate) fn into_grant(held: Held) -> Grant {
    match held {
        Held::Busy(busy) => Grant::Slot(busy.into_raw()),
        Held::Place(place) => Grant::Place(place.into_raw()),
    }
}

/// Takes back the ownership a grant carries.
///
/// # Safety
/// `grant` was made by [`into_grant`] from a token of this pool, and the
/// caller is the one party it was given to: the waiter that a node's
/// serving CAS served (and that saw it, `poll` or `cancel`), or the server
/// that `Waiters::serve` gave it back to.
#[inline]
pub(crate) unsafe fn from_grant(grant: Grant) -> Held {
    // SAFETY: per the contract, the caller is the grant's only owner.
    unsafe {
        match grant {
            Grant::Slot(i) => Held::Busy(Busy::from_raw(i)),
            Grant::Place(i) => Held::Place(Place::from_raw(i)),
        }
    }
}

/// Drops a connection, containing a panic in its `Drop` so that a faulty
/// connection type cannot lose a place.
pub(crate) fn close_quietly<C>(conn: Option<C>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(conn)));
}

impl<M: Manager> Core<M> {
    /// A guard gives its connection back: close it if it is broken (marked
    /// by its holder, `is_broken`, or a panic unwinding through the guard),
    /// past its lifetime, or surplus to a shrink; otherwise stamp it fresh
    /// and publish it.
    #[inline]
    pub(crate) fn release(&self, mut busy: Busy, retired: &mut Retired) {
        let slot = self.slots.of(&busy);
        // A guard dropped while its thread panics may hold a connection in
        // an unknown state (half a transaction): close it rather than reuse.
        let (broken, dirty) = if slot.holding.is_marked() || std::thread::panicking() {
            (true, false)
        } else {
            self.judge_return(&mut busy)
        };
        if self.lifecycle.ticks.leak != 0 {
            slot.holding.given_back();
        }
        let now = self.now_for_checks();
        let held = slot.holding.held_for(now);
        if held != 0 {
            self.record_hold(&busy, held);
        }
        let last = slot.life.expires_at();
        if broken {
            self.retire_broken(busy, retired);
        } else if now >= last {
            bump(&self.counters.expired);
            self.note_close(&self.counters.closed_lifetime, "lifetime");
            self.retire(busy, retired);
        } else if self.slots.limited() {
            // A shrink is under way, or idle connections are bounded.
            self.release_limited(busy, now, last, dirty, retired);
        } else {
            slot.life
                .set_fresh_until(self.lifecycle.fresh_until(last, now));
            if dirty {
                return self.clean_off_path(busy, retired);
            }
            self.publish(busy, now, retired);
        }
    }

    /// The end of [`release`](Self::release) in a pool with a bound to
    /// look at: surplus to a shrink (`resize`) closes; with `max_idle`, the
    /// oldest waiter is served first, and otherwise the connection goes
    /// idle only if the idle set admits it (`IdleSet::admit`), else it is
    /// closed (reason `overflow`). `dirty`: the manager asked for a
    /// clean-up on return (`Core::judge_return`).
    #[cold]
    #[inline(never)]
    fn release_limited(&self, busy: Busy, now: u64, last: u64, dirty: bool, retired: &mut Retired) {
        if self.slots.over_cap_slow() {
            return self.retire(busy, retired);
        }
        let life = &self.slots.of(&busy).life;
        life.set_fresh_until(self.lifecycle.fresh_until(last, now));
        let capped = self.idle.capped();
        let serve = self.closed.load(Ordering::Relaxed) || self.waiters.any() || self.starving();
        if dirty {
            // Under `max_idle`, one nobody waits for and no idle room would
            // take is closed now rather than cleaned for nothing; a cleaned
            // one asks for admission then (`rejoin_cleaned`).
            if capped && !serve && !self.idle.has_room() {
                return self.close_overflow(busy, retired);
            }
            return self.clean_off_path(busy, retired);
        }
        if !capped {
            return self.publish(busy, now, retired);
        }
        self.admit_or_close(busy, now, retired);
    }

    /// Under `max_idle`: a healthy connection, stamped fresh, goes to the
    /// oldest waiter (or is discarded by a closed pool) as `pass_on` does,
    /// counted if shelved; otherwise into the idle set if it admits it,
    /// else it is closed (reason `overflow`).
    fn admit_or_close(&self, busy: Busy, now: u64, retired: &mut Retired) {
        if self.closed.load(Ordering::Relaxed) || self.waiters.any() || self.starving() {
            return self.pass_on(Held::Busy(busy), retired);
        }
        if !self.idle.admit() {
            return self.close_overflow(busy, retired);
        }
        self.put_and_recheck(busy, now, retired, true);
    }

    /// A returned connection whose clean-up on return passed
    /// (`offpath.rs`) rejoins the pool as [`put_back_fresh`](Self::put_back_fresh)
    /// puts it, and under `max_idle` through the same admission as a
    /// release.
    pub(crate) fn rejoin_cleaned(&self, busy: Busy, retired: &mut Retired) {
        if !self.idle.capped() {
            return self.put_back_fresh(busy, retired);
        }
        let now = self.now_for_checks();
        let life = &self.slots.of(&busy).life;
        life.set_fresh_until(self.lifecycle.fresh_until(life.expires_at(), now));
        self.admit_or_close(busy, now, retired);
    }

    /// Closes a returned connection `max_idle` leaves no room for (reason
    /// `overflow`) and passes its place on.
    fn close_overflow(&self, busy: Busy, retired: &mut Retired) {
        self.note_close(&self.counters.closed_overflow, "overflow");
        self.retire(busy, retired);
    }

    /// Records a holding of `ticks` (≥ 1) ms in the hold histogram.
    #[cold]
    #[inline(never)]
    fn record_hold(&self, busy: &Busy, ticks: u64) {
        self.counters
            .hold
            .record_in(busy.index() as usize, ticks.saturating_mul(1_000_000));
    }

    /// The common case of [`pass_on`](Self::pass_on) for a healthy released
    /// connection, small enough to inline into `Drop for Pooled`: no
    /// waiter and the pool open, so the connection goes into the idle set
    /// (parked for this thread when it can be, `idle.rs`), followed by the
    /// re-check.
    #[inline(always)]
    fn publish(&self, busy: Busy, now: u64, retired: &mut Retired) {
        if self.closed.load(Ordering::Relaxed) || self.waiters.any() || self.starving() {
            return self.pass_on(Held::Busy(busy), retired);
        }
        self.put_and_recheck(busy, now, retired, false);
    }

    /// The idle half of [`publish`](Self::publish): the put, then the
    /// re-check. Also the end of a release the idle set admitted under
    /// `max_idle` (`release_limited`, `bounded`), which counted it already
    /// and puts it into the shards, never parked (`IdleSet::put_shared`).
    #[inline(always)]
    fn put_and_recheck(&self, busy: Busy, now: u64, retired: &mut Retired, bounded: bool) {
        // Ends in a SeqCst operation of the idle set's (or the asymmetric
        // fence), which the SeqCst loads below follow.
        if bounded {
            self.idle.put_shared(&self.slots, busy, now);
        } else {
            self.idle.put(&self.slots, busy, now);
        }
        sync::after_publish();
        // loom mutants: close_no_recheck, lost_wakeup (run-mutants.sh)
        let closed = !mutant("close_no_recheck") && self.closed.load(Ordering::SeqCst);
        if closed || (!mutant("lost_wakeup") && self.waiters.any()) || self.starving() {
            return self.after_shelve(retired);
        }
        // loom mutant: shrink_no_recheck (run-mutants.sh)
        if !mutant("shrink_no_recheck") && self.slots.over_cap_sc() {
            self.trim(retired);
        }
    }

    /// In one key's pool of a keyed pool: whether `get`s of other keys are
    /// starved by the budget across keys (the budget spent, and someone
    /// waiting for a token), so that a connection this key can spare is
    /// closed for them (`budget.rs`). Constant false in every other pool.
    #[inline(always)]
    fn starving(&self) -> bool {
        // loom mutant: release_ignores_starved (a connection goes idle
        // while another key's `get` waits for room), see run-mutants.sh
        M::KEYED
            && !mutant("release_ignores_starved")
            && self
                .budget
                .as_ref()
                .is_some_and(|b| b.used() >= b.max() && b.starved.any())
    }

    /// Whether a connection of this key's that would go to this key's next
    /// `get` is closed instead, its token going to the oldest starved
    /// `get` of any key: always when this key has nobody waiting, every
    /// other time when it has (so a burst on one key cannot starve
    /// another) unless it is this key's last connection (so this key's
    /// own waiters are never left with none).
    fn feeds_budget(&self) -> bool {
        if !self.starving() {
            return false;
        }
        if !self.waiters.any() {
            return true;
        }
        self.slots.taken() > 1 && self.budget.as_ref().is_some_and(|b| b.turn())
    }

    /// Closes a connection this key can spare for the budget's starved
    /// `get`s and gives its place back (the token goes to the oldest
    /// starved `get`, `budget.rs`), then re-checks as after any shelve;
    /// what to pass on next, if anything.
    #[cold]
    fn feed(&self, busy: Busy, retired: &mut Retired) -> Option<Held> {
        let (conn, place) = self.slots.take(busy);
        close_quietly(conn);
        bump(&self.counters.closed);
        self.note_close(&self.counters.closed_idle, "evicted");
        retired.add(1);
        self.shelve(Held::Place(place), self.now_for_checks());
        sync::after_publish();
        sync::sc_load_after_rmw();
        if self.closed.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
            self.close_idle(retired);
            return None;
        }
        if !self.waiters.any() {
            return None;
        }
        self.take_any()
    }

    /// Serves a waiter that sleeps while a connection is idle or a place is
    /// free. The lost-wake-up argument rules that out, except in two
    /// windows: a membarrier refused after registration leaves a releaser
    /// that read the relaxed mode just before unordered with the waiter
    /// (`asym.rs`, "Refused"), and a cancel that lost its race read the
    /// live count one low for a moment (`waiters.rs`, "Cancel"); the
    /// maintenance pass, and such a cancel, look. One load when no waiter
    /// is registered.
    pub(crate) fn rescue(&self, retired: &mut Retired) {
        if !self.waiters.any() || self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(held) = self.take_any() {
            self.pass_on(held, retired);
        }
    }

    /// Closes the connection of an owned BUSY slot and passes its place on.
    pub(crate) fn retire(&self, busy: Busy, retired: &mut Retired) {
        let (conn, place) = self.slots.take(busy);
        close_quietly(conn);
        bump(&self.counters.closed);
        retired.add(1);
        // The connection is gone before its place goes to anyone else.
        self.pass_on(Held::Place(place), retired);
    }

    /// `retire` for a broken connection: closes it (counted in
    /// `Metrics::broken`) and arms a probe of one other idle connection,
    /// not a pool-wide check: one broken connection is not evidence that
    /// the server went away (`lifecycle.rs`).
    #[cold]
    pub(crate) fn retire_broken(&self, busy: Busy, retired: &mut Retired) {
        self.note_close(&self.counters.broken, "broken");
        self.lifecycle.suspect(self.clock.now());
        self.retire(busy, retired);
    }

    /// A check of `busy`'s connection failed: close it; and since a failed
    /// check is evidence that the server went away, every connection
    /// verified before now is checked before its next use (after a server
    /// restart that costs one failed check per connection, not one failed
    /// request or timeout per connection).
    pub(crate) fn failed_check(&self, busy: Busy, retired: &mut Retired) {
        self.note_close(&self.counters.check_failures, "check_failed");
        self.lifecycle.note_failure();
        self.retire(busy, retired);
    }

    /// Puts an owned healthy connection that did not come from a holder
    /// (just opened by warm-up, the refill or a probe, or just passed a
    /// check whose caller left) where the next taker finds it: stamped
    /// fresh until its lifetime ends or its next check is due, then passed
    /// on, to the oldest waiter or the idle set. A release stamps in
    /// [`release`](Self::release); every other way into the idle set goes
    /// through here, so no connection goes idle with a stale stamp.
    pub(crate) fn put_back_fresh(&self, busy: Busy, retired: &mut Retired) {
        let now = self.now_for_checks();
        let life = &self.slots.of(&busy).life;
        life.set_fresh_until(self.lifecycle.fresh_until(life.expires_at(), now));
        self.pass_on(Held::Busy(busy), retired);
    }

    /// Hands `held` to the oldest live waiter, or shelves it: into the idle
    /// set (a connection) or the free queue (a place).
    ///
    /// After shelving, re-reads the waiter count (SeqCst): a waiter that
    /// registered meanwhile either found what was shelved in its own
    /// re-check or is seen here, and then something is taken back for it.
    /// Each further round serves a waiter or ends, so the loop is bounded
    /// by the number of registrations it races with.
    #[inline(never)]
    pub(crate) fn pass_on(&self, mut held: Held, retired: &mut Retired) {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return self.discard(held, retired);
            }
            // In a keyed pool at its budget: a connection this key can
            // spare is closed for another key's starved `get`.
            if M::KEYED {
                if let Held::Busy(busy) = held {
                    if self.feeds_budget() {
                        match self.feed(busy, retired) {
                            Some(next) => {
                                held = next;
                                continue;
                            }
                            None => return,
                        }
                    }
                    held = Held::Busy(busy);
                }
            }
            // A place above the cap (a shrink under way) goes to no waiter:
            // it is shelved, and the re-check below reserves through the
            // cap (`Slots::reserve`).
            let surplus = matches!(held, Held::Place(_)) && self.slots.over_cap();
            let mut spared = false;
            let own = if !surplus && self.waiters.any() {
                // Grants other releasers deposited while this one served,
                // that no waiter took, are shelved like its own.
                let mut spare = |g| {
                    // SAFETY: a deposited grant nobody took: the serving
                    // thread's to dispose of (`waiters.rs`).
                    self.shelve(unsafe { from_grant(g) }, self.now_for_checks());
                    spared = true;
                };
                match self.waiters.serve(into_grant(held), &mut spare) {
                    Ok(()) if !spared => return,
                    Ok(()) => None,
                    // SAFETY: `serve` gave back the grant made just above,
                    // which no waiter took.
                    Err(back) => Some(unsafe { from_grant(back) }),
                }
            } else {
                Some(held)
            };
            let shelved_busy = match own {
                Some(held) => {
                    let busy = matches!(held, Held::Busy(_));
                    self.shelve(held, self.now_for_checks());
                    busy
                }
                None => spared,
            };
            sync::after_publish();
            // The shelve ended in a SeqCst operation of ours: these SeqCst
            // loads follow it in S and pair with `register`'s count +
            // fence and with `close`'s store + fence (DESIGN.md, "The
            // lost-wake-up argument").
            sync::sc_load_after_rmw();
            if self.closed.load(Ordering::SeqCst) {
                self.drained.notify_waiters();
                return self.close_idle(retired);
            }
            if shelved_busy && self.slots.over_cap_sc() {
                return self.trim(retired);
            }
            if !self.waiters.any() {
                return;
            }
            match self.take_any() {
                Some(next) => held = next,
                None => return,
            }
        }
    }

    /// The end of a release's round after a shelve that raced with a
    /// waiter's registration or with `close`.
    #[cold]
    #[inline(never)]
    fn after_shelve(&self, retired: &mut Retired) {
        if self.closed.load(Ordering::SeqCst) {
            return self.close_idle(retired);
        }
        if let Some(next) = self.take_any() {
            self.pass_on(next, retired);
        }
    }

    /// Puts `held` where the next taker looks: a connection into the idle
    /// set's shards (stamped as released at `now`), a place into the free
    /// queue. Serves nobody and re-checks nothing (see `pass_on`). Ends in a
    /// SeqCst operation of ours: the idle set's push does (`idle.rs`); a
    /// place's push onto the free queue is crossbeam's, whose orderings are
    /// not ours to rely on, so a SeqCst fence follows it.
    #[inline]
    pub(crate) fn shelve(&self, held: Held, now: u64) {
        match held {
            Held::Busy(busy) => {
                self.idle.entering();
                self.idle.push(&self.slots, busy, now);
            }
            Held::Place(place) => {
                self.unreserve(place);
                fence(Ordering::SeqCst);
            }
        }
    }

    /// Puts an owned idle connection that `try_get` may not hand out (it is
    /// due for a check) back behind the others, keeping its idle time; a
    /// waiter, if any, gets it instead (and checks it).
    pub(crate) fn requeue(&self, busy: Busy, retired: &mut Retired) {
        if self.waiters.any() || self.closed.load(Ordering::Relaxed) {
            return self.pass_on(Held::Busy(busy), retired);
        }
        // The same re-check as `publish` (the put ends in our fence).
        self.idle.put_back(&self.slots, busy);
        sync::sc_load_after_rmw();
        if self.closed.load(Ordering::SeqCst) || self.waiters.any() {
            self.after_shelve(retired);
        }
    }

    /// Closes what `held` holds and frees its place, serving nobody (the
    /// pool is closed).
    fn discard(&self, held: Held, retired: &mut Retired) {
        let place = match held {
            Held::Busy(busy) => {
                // Emptied (closed) first, then its place freed.
                let (conn, place) = self.slots.take(busy);
                close_quietly(conn);
                bump(&self.counters.closed);
                self.note_close(&self.counters.closed_pool_closed, "pool_closed");
                retired.add(1);
                place
            }
            Held::Place(place) => place,
        };
        self.unreserve(place);
        self.drained.notify_waiters();
    }

    /// Closes every idle connection (the pool is closed).
    fn close_idle(&self, retired: &mut Retired) {
        while let Some(busy) = self.take_idle() {
            self.discard(Held::Busy(busy), retired);
        }
    }

    /// Stops handing out: rejects waiters, closes idle connections.
    pub(crate) fn close(&self, retired: &mut Retired) {
        self.closed.store(true, Ordering::SeqCst);
        // Pairs with the SeqCst fence in `register` and the SeqCst loads in
        // `pass_on`: a waiter or an idle connection that arrives after this
        // is seen by its own side's re-check of `closed`.
        fence(Ordering::SeqCst);
        // And with a parking releaser's light side (`asym.rs`).
        self.idle.fence_heavy();
        self.waiters.close_all(&mut |g| {
            // SAFETY: a deposited grant nobody took is the serving thread's
            // to dispose of (`waiters.rs`).
            let held = unsafe { from_grant(g) };
            self.discard(held, retired);
        });
        self.close_idle(retired);
    }

    /// `Pool::set_max_size`: sets the cap on places (`1 <= n <= limit`,
    /// `n >= min_idle`, checked by the caller). Growing serves parked
    /// waiters with the new places at once; shrinking closes idle
    /// connections above the new cap now (in-use ones close on return,
    /// `release`, and freed places above it go to no waiter, `pass_on`).
    pub(crate) fn resize(&self, n: usize, retired: &mut Retired) {
        self.slots.set_cap(n);
        // Pairs with a releaser's shelve + `over_cap_sc` re-check
        // (`publish`, `pass_on`), as in the lost-wake-up argument: either
        // the trim below pops the connection it shelved, or its re-check
        // sees the new cap and trims itself.
        fence(Ordering::SeqCst);
        // And with a parking releaser's light side (`asym.rs`).
        self.idle.fence_heavy();
        self.trim(retired);
        // Grow: parked waiters connect at once. Bounded by the new cap
        // (each round takes a place; `pass_on` re-checks on its own).
        for _ in 0..n {
            if !self.waiters.any() || self.closed.load(Ordering::Acquire) {
                break;
            }
            let Some(place) = self.reserve() else {
                break;
            };
            self.pass_on(Held::Place(place), retired);
        }
    }

    /// Closes idle connections while more places are taken than the cap
    /// (a shrink, `resize`). Bounded: each round closes one connection,
    /// and it stops when the idle set is empty.
    #[cold]
    fn trim(&self, retired: &mut Retired) {
        while self.slots.over_cap() {
            let Some(busy) = self.take_idle() else { break };
            self.retire(busy, retired);
        }
    }
}
