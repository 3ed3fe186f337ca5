//! The pool's one time base ([`TimeBase`], made from the public
//! `latchless::Clock` it was built with): [`quanta`] time in whole
//! milliseconds ("ticks") since the pool was built, plus a coarse cached
//! reading for the hot path.
//!
//! Everything the pool times runs on it: connection lifetimes, idle
//! timeouts, leak reports, the breaker's pauses, health samples, and the
//! deadlines of waiting `get`s ([`TimeBase::deadline`], a tick rounded up;
//! [`NO_DEADLINE`] for none), which the background task sweeps from the
//! waiter nodes. A wait's start and length are read in nanoseconds
//! ([`TimeBase::now_ns`]). The clock is the one the pool was built with
//! (`time.rs`), so a mock made by `latchless::Clock::mock()` moves every
//! one of those, `get_timeout`'s deadlines included. Tokio timers bound
//! only I/O: [`TimeBase::instant_at`] turns a deadline into a Tokio instant
//! for a connect or a check, and for a waiter's own timer while no sweeper
//! serves; under a mock, the time left is the mock's.
//!
//! A real clock read costs about as much as a whole idle-queue pop+push
//! (BENCHMARKS.md, "Design decisions"), so while the background task runs
//! the hot path never reads the clock: [`TimeBase::hot_now`] is a relaxed
//! load of the last reading taken by the task, a slow path or maintenance.
//! Without the task it reads the real clock (exact, and the price of
//! having no task).
//!
//! Leak detection needs the true time a connection was handed out: the
//! cached reading can be a whole maintenance period old, and with
//! `leak_threshold` the only time setting nothing refreshes it while the
//! pool is quiet. So the hand-out stamps it with [`TimeBase::exact`], one real
//! read and no write, only while `leak_threshold` is on.
//!
//! Invariants kept: the cached reading never exceeds `now()` and never goes
//! backwards while it is cached; the acquire + release fast path reads the
//! real clock never while the cached reading is kept (the background task
//! runs, or no time-based policy is on), plus once per acquire with
//! `leak_threshold` (checked by the unit test
//! `the_fast_path_reads_the_clock_only_for_leak_detection`); a deadline
//! is rounded up to its tick, so no wait ends before its timeout by the
//! pool's clock.

#[cfg(test)]
use std::cell::Cell;

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

#[cfg(test)]
thread_local! {
    /// Real clock reads on this thread (unit tests count them).
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// What `recent` holds while nothing keeps it fresh: read the real clock.
const UNCACHED: u64 = u64::MAX;

/// Millisecond clock with a cached coarse reading.
pub(crate) struct TimeBase {
    clock: quanta::Clock,
    origin: quanta::Instant,
    /// The latest `now()` any thread took, in ticks (only grows), or
    /// `UNCACHED` while no background task keeps it fresh and the pool
    /// needs exact time. One relaxed load tells the hot path which.
    recent: AtomicU64,
}

impl TimeBase {
    /// A clock whose hot-path reading starts uncached if `exact` (the pool
    /// has time-based policies), cached otherwise (time does not matter).
    pub(crate) fn new(clock: quanta::Clock, exact: bool) -> Self {
        let origin = clock.now();
        Self {
            clock,
            origin,
            recent: AtomicU64::new(if exact { UNCACHED } else { 0 }),
        }
    }

    fn read(&self) -> u64 {
        #[cfg(test)]
        READS.with(|r| r.set(r.get() + 1));
        let ms = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_millis();
        u64::try_from(ms).unwrap_or(UNCACHED - 1).min(UNCACHED - 1)
    }

    /// Starts (`true`, the background task runs) or stops caching the
    /// reading for the hot path.
    pub(crate) fn cache(&self, on: bool) {
        let v = if on { self.read() } else { UNCACHED };
        self.recent.store(v, Ordering::Relaxed);
    }

    /// The time for the hot path: the cached reading while it is kept
    /// fresh (one relaxed load), the real clock otherwise.
    #[inline(always)]
    pub(crate) fn hot_now(&self) -> u64 {
        match self.recent.load(Ordering::Relaxed) {
            UNCACHED => self.now(),
            cached => cached,
        }
    }

    /// Reads the real clock without refreshing the cached reading: no write
    /// to memory other threads read, for a stamp taken on every acquire
    /// (leak detection).
    #[inline]
    pub(crate) fn exact(&self) -> u64 {
        self.read()
    }

    /// Reads the real clock (ticks since the pool was built) and refreshes
    /// the cached reading.
    pub(crate) fn now(&self) -> u64 {
        let ms = self.read();
        // A no-op while uncached (`UNCACHED` is the maximum).
        self.recent.fetch_max(ms, Ordering::Relaxed);
        ms
    }
}

impl TimeBase {
    /// Nanoseconds since the pool was built: one real read, no write (the
    /// wait path: a wait's start, its deadline and its length).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        #[cfg(test)]
        READS.with(|r| r.set(r.get() + 1));
        let ns = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The tick by which a wait begun at `begun` (ns) for `timeout` ends,
    /// rounded up; [`NO_DEADLINE`] for `Duration::MAX` (or past the
    /// clock's range).
    pub(crate) fn deadline(begun: u64, timeout: Duration) -> u64 {
        let Ok(ns) = u64::try_from(timeout.as_nanos()) else {
            return NO_DEADLINE;
        };
        match begun.checked_add(ns) {
            Some(end) => end.div_ceil(NS_PER_TICK).min(NO_DEADLINE - 1),
            None => NO_DEADLINE,
        }
    }

    /// `deadline` (a tick) as a Tokio instant, for I/O bounded by it; `None`
    /// for [`NO_DEADLINE`]. Under a mocked clock the time left is the
    /// mock's.
    pub(crate) fn instant_at(&self, deadline: u64) -> Option<tokio::time::Instant> {
        if deadline == NO_DEADLINE {
            return None;
        }
        let left = deadline
            .saturating_mul(NS_PER_TICK)
            .saturating_sub(self.now_ns());
        Some(tokio::time::Instant::now() + Duration::from_nanos(left))
    }
}

/// A tick is a millisecond.
const NS_PER_TICK: u64 = 1_000_000;

/// A deadline (a tick) that never comes: a wait without one.
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

impl std::fmt::Debug for TimeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeBase")
            .field("recent", &self.recent.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mock_time_moves_now_and_recent_follows() {
        let (clock, mock) = quanta::Clock::mock();
        let c = TimeBase::new(clock, true);
        mock.increment(Duration::from_millis(10));
        assert_eq!(c.hot_now(), 10, "uncached: the real clock");
        c.cache(true);
        mock.increment(Duration::from_millis(1500));
        assert_eq!(c.hot_now(), 10, "cached: refreshed only by now()");
        assert_eq!(c.now(), 1510);
        assert_eq!(c.hot_now(), 1510);
        c.cache(false);
        mock.increment(Duration::from_millis(1));
        assert_eq!(c.hot_now(), 1511);
    }

    #[test]
    fn exact_reads_the_clock_and_leaves_the_cached_reading() {
        let (clock, mock) = quanta::Clock::mock();
        let c = TimeBase::new(clock, false);
        mock.increment(Duration::from_millis(70));
        assert_eq!(c.exact(), 70);
        assert_eq!(c.hot_now(), 0, "cached reading untouched");
    }

    #[test]
    fn a_deadline_is_the_tick_a_wait_ends_rounded_up() {
        let ms = Duration::from_millis;
        assert_eq!(TimeBase::deadline(0, ms(1)), 1);
        assert_eq!(TimeBase::deadline(0, ms(250)), 250);
        // Begun a nanosecond into tick 0: the wait ends a nanosecond into
        // tick 250, so no wait ends before its timeout.
        assert_eq!(TimeBase::deadline(1, ms(250)), 251);
        assert_eq!(TimeBase::deadline(3_000_000, Duration::from_nanos(1)), 4);
        assert_eq!(TimeBase::deadline(0, Duration::MAX), NO_DEADLINE);
        assert_eq!(TimeBase::deadline(u64::MAX - 1, ms(1)), NO_DEADLINE);
    }

    #[test]
    fn a_deadline_as_a_tokio_instant_is_the_mocked_time_left() {
        let (clock, mock) = quanta::Clock::mock();
        let c = TimeBase::new(clock, true);
        mock.increment(Duration::from_millis(10));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let now = tokio::time::Instant::now();
            assert_eq!(c.instant_at(15), Some(now + Duration::from_millis(5)));
            assert_eq!(c.instant_at(7), Some(now), "already passed");
            assert_eq!(c.instant_at(NO_DEADLINE), None);
        });
    }

    struct Unit;
    impl crate::Manager for Unit {
        type Connection = ();
        type Error = std::io::Error;
        async fn connect(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
    }

    /// A runtime on the test's thread, whose clock reads `READS` counts.
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Real clock reads on this thread while `f` runs.
    fn reads(f: impl FnOnce()) -> u64 {
        let before = READS.with(Cell::get);
        f();
        READS.with(Cell::get) - before
    }

    /// A `get` that waits at the cap and is served by a release reads the
    /// real clock twice (when it began, when it ended: the wait histogram),
    /// not a third time to judge the connection handed to it: that read
    /// would also write the cached reading every waiting thread reads. The
    /// releases add their one read in 64 (maintenance due?); the
    /// background task never runs here (the loop never yields to it).
    #[test]
    fn a_served_wait_reads_the_clock_for_its_length_only() {
        const WAITS: u64 = 100;
        let (clock, _mock) = crate::Clock::mock();
        let pool = crate::Pool::builder(Unit)
            .max_size(1)
            .acquire_timeout(Duration::MAX)
            .clock(clock)
            .build()
            .unwrap();
        current_thread().block_on(async {
            let mut held = pool.get().await.unwrap();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let before = READS.with(Cell::get);
            for _ in 0..WAITS {
                let mut waiter = std::pin::pin!(pool.get());
                assert!(waiter.as_mut().poll(&mut cx).is_pending());
                drop(held);
                match waiter.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(Ok(c)) => held = c,
                    _ => panic!("the release served the waiter"),
                }
            }
            let n = READS.with(Cell::get) - before;
            assert_eq!(
                n,
                2 * WAITS + WAITS / 64,
                "{n} clock reads in {WAITS} waits"
            );
        });
    }

    /// `try_get` + drop reads the real clock once per acquire with leak
    /// detection on (the hand-out's stamp), never with it off; apart from
    /// that, one release in 64 reads it to look whether maintenance is due.
    #[test]
    fn the_fast_path_reads_the_clock_only_for_leak_detection() {
        const OPS: u64 = 640;
        for (leak, per_acquire) in [(None, 0), (Some(Duration::from_secs(1)), 1)] {
            let (clock, _mock) = crate::Clock::mock();
            let pool = crate::Pool::builder(Unit)
                .max_size(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .check_after_idle(None)
                .leak_threshold(leak)
                .background(false)
                .clock(clock)
                .build()
                .unwrap();
            drop(current_thread().block_on(pool.get()).unwrap());
            let n = reads(|| {
                for _ in 0..OPS {
                    drop(pool.try_get().unwrap());
                }
            });
            assert_eq!(
                n,
                OPS * per_acquire + OPS / 64,
                "leak_threshold {leak:?}: {n} clock reads in {OPS} acquires"
            );
        }
    }
}
