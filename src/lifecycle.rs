//! Judging a connection (I6): whether an idle one may be handed out as it
//! is, must be checked first (idle too long, or verified before the last
//! failure: the server-restart epoch), or is past its lifetime; and the
//! stamps that make that judgement one load and one compare on the hot
//! path (`fresh_until`, set when a connection goes idle).
//!
//! # Invariants kept
//!
//! - No connection is handed out at or past its `expires_at`, which is its
//!   `max_lifetime` less jitter (up to a twentieth of it, so that
//!   connections opened together do not expire together) less the margin
//!   by which the cached clock may lag: jitter only shortens a lifetime.
//! - Every connection that goes idle, whoever opened it, is stamped with
//!   [`Lifecycle::fresh_until`] before it is published, so one idle longer
//!   than `check_after_idle` is judged [`Verdict::Check`].
//! - `restart_epoch` only grows: evidence that the server went away (a
//!   failed check, a failed connect after a successful one) marks every
//!   connection verified before it for a check.
//! - One broken connection is not such evidence: it arms a probe, and the
//!   next acquirer that judges with `probe` checks that one connection
//!   (unless a check passed within the last maintenance period). A failed
//!   probe is a failed check, and starts an epoch.
//!
//! - The hot path pays one load and compare (`fresh_until`) for every
//!   time-based policy, one relaxed load of the epoch, and, with `probe`,
//!   one relaxed load of the probe flag (a swap only when it is armed).
//!
//! This module knows no core type: it judges a connection by its [`Life`]
//! (`slots.rs`), on the pool clock's ticks; the manager's `is_broken`,
//! which comes first, is the core's to call (`Core::judge`).

use std::time::Duration;

use crate::config::Ticks;
use crate::slots::Life;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What an acquirer must do with a claimed idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it out.
    Ready,
    /// Past its lifetime: close it and look again.
    Expired,
    /// Run `Manager::check` first (idle too long, older than the last
    /// failure: the server-restart epoch, or the probe after a broken
    /// connection).
    Check,
    /// `Manager::is_broken` says so: close it and look again (judged by
    /// the core, which owns the manager).
    Broken,
}

/// A pool's lifecycle policy and its event sequence.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Settings turned into clock ticks once, for the hot path.
    pub(crate) ticks: Ticks,
    /// Event sequence: opens, passed checks and failures each take the
    /// next number, so "verified before the last failure" is exact even
    /// within one clock tick.
    seq: AtomicU64,
    /// Sequence number of the latest evidence that the server went away
    /// (0 = none): a failed check, or a failed connect after a successful
    /// one. Connections verified before it are checked before their next
    /// use (the server-restart epoch).
    restart_epoch: AtomicU64,
    /// Set by a broken connection: the next `get` that takes an idle
    /// connection checks that one first (a probe).
    probe: AtomicBool,
    /// Tick until which the server is known alive (a check passed less
    /// than a period before; 0 = not known): a broken connection before
    /// then arms no probe.
    alive_until: AtomicU64,
    /// State of the jitter generator (xorshift; cold paths only).
    rng: AtomicU64,
}

impl Lifecycle {
    /// A policy for `ticks`, its jitter generator seeded with `seed`.
    pub(crate) fn new(ticks: Ticks, seed: u64) -> Self {
        Self {
            ticks,
            seq: AtomicU64::new(1),
            restart_epoch: AtomicU64::new(0),
            probe: AtomicBool::new(false),
            alive_until: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1),
        }
    }

    /// Judges a claimed idle connection by its facts (I6): one load and
    /// compare for the time-based policies, one for the restart epoch; the
    /// details only when one of them says so. With `probe`, an armed probe
    /// makes this connection the one checked.
    #[inline(always)]
    pub(crate) fn judge(&self, life: &Life, now: u64, probe: bool) -> Verdict {
        if now >= life.fresh_until() {
            return Self::judge_closely(life, now);
        }
        let epoch = self.restart_epoch.load(Ordering::Relaxed);
        if epoch != 0 && life.verified_seq() < epoch {
            return Verdict::Check;
        }
        if probe && self.take_probe() {
            return Verdict::Check;
        }
        Verdict::Ready
    }

    /// A connection was returned (or found) broken at `now`: unless a check
    /// passed within the last period, arm a probe of one idle connection.
    pub(crate) fn suspect(&self, now: u64) {
        if now >= self.alive_until.load(Ordering::Relaxed) {
            self.probe.store(true, Ordering::Relaxed);
        }
    }

    /// Takes the armed probe, if any (one relaxed load when none is).
    #[inline(always)]
    fn take_probe(&self) -> bool {
        self.probe.load(Ordering::Relaxed) && self.probe.swap(false, Ordering::Relaxed)
    }

    /// A check passed at `now`: the server is known alive for a period.
    pub(crate) fn note_alive(&self, now: u64) {
        self.alive_until
            .fetch_max(now.saturating_add(self.ticks.margin), Ordering::Relaxed);
    }

    #[cold]
    fn judge_closely(life: &Life, now: u64) -> Verdict {
        if life.expires_at() <= now {
            return Verdict::Expired;
        }
        Verdict::Check
    }

    /// Until when a healthy connection going idle at `now`, whose lifetime
    /// ends at `last`, may be handed out without a closer look: the end of
    /// its lifetime or when it becomes due for a check, whichever is first.
    #[inline(always)]
    pub(crate) fn fresh_until(&self, last: u64, now: u64) -> u64 {
        last.min(now.saturating_add(self.ticks.check_after_idle))
    }

    /// The first tick at which a connection opened at `now` must not be
    /// handed out: its lifetime less jitter (up to 5%, so connections
    /// opened together do not expire together) less the margin by which
    /// the cached clock may lag. `u64::MAX` without a lifetime.
    pub(crate) fn expires_at(&self, now: u64) -> u64 {
        if self.ticks.lifetime == 0 {
            return u64::MAX;
        }
        let l = self.ticks.lifetime;
        now.saturating_add(l - self.random_below(l / 20 + 1))
            .saturating_sub(self.ticks.margin)
    }

    /// The next event sequence number (for an open or a passed check).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Evidence that the server went away (a failed check, a failed connect
    /// after a successful one): every connection verified before now is
    /// checked before its next use.
    pub(crate) fn note_failure(&self) {
        let s = self.next_seq();
        self.restart_epoch.fetch_max(s, Ordering::Relaxed);
    }

    /// A random duration in `[d/2, d]` (cold paths only).
    pub(crate) fn jitter(&self, d: Duration) -> Duration {
        let half = d / 2;
        half + half.mul_f64(self.random_below(1024) as f64 / 1023.0)
    }

    /// A random number in `0..n` (xorshift; cold paths only).
    fn random_below(&self, n: u64) -> u64 {
        let r = self
            .rng
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Some(x)
            })
            .unwrap_or(1);
        r % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Slots;

    fn ticks(lifetime: u64, check_after_idle: u64, margin: u64) -> Ticks {
        Ticks {
            lifetime,
            check_after_idle,
            leak: 0,
            idle_timeout: None,
            margin,
            uses_clock: true,
        }
    }

    /// One slot holding a connection opened at tick 0 whose lifetime ends
    /// at `expires_at`, verified at the policy's next sequence number, as
    /// `connector::adopt` stamps it. The slot stays claimed: the test
    /// stamps its freshness by hand, as a release would.
    fn opened(lc: &Lifecycle, expires_at: u64) -> (Slots<()>, u32) {
        let slots = Slots::new(1);
        let place = slots.reserve().unwrap();
        let index = slots
            .fill(place, (), 1, 0, expires_at, lc.next_seq())
            .index();
        (slots, index)
    }

    #[test]
    fn an_idle_connection_is_checked_from_the_tick_check_after_idle_ends() {
        let lc = Lifecycle::new(ticks(1000, 100, 10), 7);
        let (slots, i) = opened(&lc, 1000);
        let life = &slots.at(i).life;
        life.set_fresh_until(lc.fresh_until(life.expires_at(), 20));
        assert_eq!(lc.judge(life, 20, false), Verdict::Ready);
        assert_eq!(lc.judge(life, 119, false), Verdict::Ready, "idle 99 ticks");
        assert_eq!(lc.judge(life, 120, false), Verdict::Check, "idle 100 ticks");
        assert_eq!(lc.judge(life, 999, false), Verdict::Check);
    }

    #[test]
    fn no_connection_is_handed_out_from_the_tick_its_lifetime_ends() {
        let lc = Lifecycle::new(ticks(1000, 100, 10), 7);
        let (slots, i) = opened(&lc, 1000);
        let life = &slots.at(i).life;
        // Gone idle late in its life: the lifetime ends before a check is due.
        life.set_fresh_until(lc.fresh_until(life.expires_at(), 950));
        assert_eq!(life.fresh_until(), 1000);
        assert_eq!(lc.judge(life, 999, false), Verdict::Ready);
        assert_eq!(lc.judge(life, 1000, false), Verdict::Expired);
        assert_eq!(lc.judge(life, 5000, false), Verdict::Expired);
        // Due for a check long before: past its lifetime it is expired, not checked.
        life.set_fresh_until(lc.fresh_until(life.expires_at(), 0));
        assert_eq!(lc.judge(life, 999, false), Verdict::Check);
        assert_eq!(lc.judge(life, 1000, false), Verdict::Expired);
    }

    #[test]
    fn a_failure_marks_the_connections_verified_before_it_and_no_later_ones() {
        let lc = Lifecycle::new(ticks(0, u64::MAX, 10), 7);
        let (old, i) = opened(&lc, u64::MAX);
        let old = &old.at(i).life;
        assert_eq!(lc.judge(old, 5, false), Verdict::Ready);
        lc.note_failure();
        let (new, j) = opened(&lc, u64::MAX);
        let new = &new.at(j).life;
        assert_eq!(
            lc.judge(old, 5, false),
            Verdict::Check,
            "older than the failure"
        );
        assert_eq!(lc.judge(new, 5, false), Verdict::Ready, "opened after it");
        old.set_verified(lc.next_seq());
        assert_eq!(lc.judge(old, 5, false), Verdict::Ready, "checked since");
    }

    #[test]
    fn a_broken_connection_arms_one_probe_unless_a_check_just_passed() {
        let lc = Lifecycle::new(ticks(0, u64::MAX, 10), 7);
        let (slots, i) = opened(&lc, u64::MAX);
        let life = &slots.at(i).life;
        lc.note_alive(100);
        lc.suspect(109);
        assert_eq!(
            lc.judge(life, 109, true),
            Verdict::Ready,
            "a check passed within the last period: no probe"
        );
        lc.suspect(110);
        assert_eq!(lc.judge(life, 110, false), Verdict::Ready, "not a prober");
        assert_eq!(lc.judge(life, 110, true), Verdict::Check, "the probe");
        assert_eq!(lc.judge(life, 110, true), Verdict::Ready, "one probe only");
    }

    /// The lifetimes stamped on `n` connections opened at `now`.
    fn lifetimes(lc: &Lifecycle, now: u64, n: usize) -> Vec<u64> {
        (0..n).map(|_| lc.expires_at(now) - now).collect()
    }

    #[test]
    fn jitter_takes_each_lifetime_down_by_up_to_a_twentieth_and_spreads_them() {
        // A 40-tick lifetime: jitter 0, 1 or 2 ticks, every one of them
        // seen, whatever the seed (zero included).
        for seed in [0, 1, 2, 0x9E37_79B9_7F4A_7C15] {
            let lc = Lifecycle::new(ticks(40, u64::MAX, 0), seed);
            let seen: std::collections::BTreeSet<u64> =
                lifetimes(&lc, 1000, 300).into_iter().collect();
            assert_eq!(
                seen,
                [38, 39, 40].into(),
                "seed {seed}: lifetimes within [38, 40], each seen"
            );
        }
        // A long lifetime, less the clock margin: within its range, spread
        // over all of it (ten bands of the 1,001 possible values, each hit).
        let lc = Lifecycle::new(ticks(20_000, u64::MAX, 1000), 99);
        let all = lifetimes(&lc, 5000, 2000);
        let mut bands = [0u32; 10];
        for l in all {
            assert!((18_000..=19_000).contains(&l), "lifetime {l}");
            bands[(((19_000 - l) * 10) / 1001) as usize] += 1;
        }
        assert!(bands.iter().all(|&b| b >= 100), "spread: {bands:?}");
        assert_eq!(Lifecycle::new(ticks(0, 0, 1000), 1).expires_at(5), u64::MAX);
    }

    #[test]
    fn jitter_draws_a_pause_from_the_upper_half_and_spreads_them() {
        for seed in [0, 1, 3, 0x9E37_79B9_7F4A_7C15] {
            let lc = Lifecycle::new(ticks(0, u64::MAX, 10), seed);
            let d = Duration::from_millis(1000);
            let mut bands = [0u32; 10];
            for _ in 0..2000 {
                let p = lc.jitter(d);
                assert!(p >= d / 2 && p <= d, "seed {seed}: pause {p:?}");
                let band = ((p - d / 2).as_micros() * 10 / 500_001) as usize;
                bands[band] += 1;
            }
            assert!(
                bands.iter().all(|&b| b >= 100),
                "seed {seed}: spread {bands:?}"
            );
        }
    }
}
