//! The pool's clock: [`quanta`] time in whole milliseconds ("ticks") since
//! the pool was built, plus a coarse cached reading for the hot path.
//!
//! A real clock read costs ~10 ns here (quanta) against a ~8 ns floor for a
//! whole idle-queue pop+push, so the release path never reads the clock: it
//! stores [`Clock::recent`], a relaxed load of the last reading taken by a
//! slow path (connect, wait) or by maintenance. Tests drive time with
//! `quanta::Clock::mock()`.
//!
//! Invariant kept: `recent()` never exceeds `now()` and never goes backwards.

use std::cell::Cell;

use crate::sync::{AtomicU64, Ordering, thread_local_cell};

thread_local_cell! {
    /// Releases on this thread, for [`every_64th_op`].
    static OPS: Cell<u32> = Cell::new(0);
}

/// True on every 64th call on this thread: when a busy thread reads the
/// real clock and looks whether maintenance is due. One thread-local
/// increment otherwise.
#[inline(always)]
pub(crate) fn every_64th_op() -> bool {
    OPS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n % 64 == 0
    })
}

/// Millisecond clock with a cached coarse reading.
pub(crate) struct Clock {
    clock: quanta::Clock,
    origin: quanta::Instant,
    /// The latest `now()` any thread took, in ticks. Only grows.
    recent: AtomicU64,
}

impl Clock {
    pub(crate) fn new(clock: quanta::Clock) -> Self {
        let origin = clock.now();
        Self {
            clock,
            origin,
            recent: AtomicU64::new(0),
        }
    }

    /// Reads the real clock (ticks since the pool was built) and refreshes
    /// the cached reading.
    pub(crate) fn now(&self) -> u64 {
        let ms = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        self.recent.fetch_max(ms, Ordering::Relaxed);
        ms
    }

    /// The cached reading: one relaxed load, possibly a little behind.
    #[inline(always)]
    pub(crate) fn recent(&self) -> u64 {
        self.recent.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("recent", &self.recent())
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
        let c = Clock::new(clock);
        assert_eq!(c.now(), 0);
        mock.increment(Duration::from_millis(1500));
        assert_eq!(c.recent(), 0, "recent is refreshed only by now()");
        assert_eq!(c.now(), 1500);
        assert_eq!(c.recent(), 1500);
    }
}
