//! The pool's time source as users see it: [`Clock`] (real by default) and
//! [`MockClock`], the handle tests use to move a mock clock's time.
//!
//! Invariant kept: the pool reads time only through the `Clock` it was
//! built with, for connection lifetimes, idle timeouts, leak reports and
//! the deadlines of waiting `get`s alike (`clock.rs`); a mock clock's time
//! moves only when its [`MockClock`] advances it, never backwards, so
//! tests of any of those are exact and need no sleeping.
//!
//! Inside, a `Clock` is a `quanta` clock (a TSC read where the CPU has a
//! stable one); the type is the crate's own so that the time source can
//! change without changing the API. The pool's reading of it (ticks, the
//! cached reading, deadlines) is `clock.rs`'s, a crate-private type of the
//! same name.

use std::sync::Arc;
use std::time::Duration;

/// The time source a pool reads: [`Clock::real`] (the default) or a mock
/// made by [`Clock::mock`] for tests.
///
/// ```
/// use latchless::{Clock, Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).clock(Clock::real()).build().unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct Clock(quanta::Clock);

impl Clock {
    /// The real, monotonic clock (the default).
    ///
    /// ```
    /// let clock = latchless::Clock::real();
    /// # let _ = clock;
    /// ```
    pub fn real() -> Self {
        Self(quanta::Clock::new())
    }

    /// A clock that stands still until its [`MockClock`] moves it.
    ///
    /// ```
    /// use latchless::{Clock, Manager, Pool};
    /// use std::time::Duration;
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// let (clock, mock) = Clock::mock();
    /// let pool = Pool::builder(M).clock(clock).build().unwrap();
    /// mock.advance(Duration::from_secs(60)); // a minute passes at once
    /// ```
    pub fn mock() -> (Self, MockClock) {
        let (clock, mock) = quanta::Clock::mock();
        (Self(clock), MockClock(mock))
    }

    pub(crate) fn into_inner(self) -> quanta::Clock {
        self.0
    }
}

/// Moves the time of a clock made by [`Clock::mock`]. Cheap to clone;
/// clones move the same clock.
///
/// ```
/// let (_clock, mock) = latchless::Clock::mock();
/// mock.advance(std::time::Duration::from_millis(5));
/// ```
#[derive(Clone, Debug)]
pub struct MockClock(Arc<quanta::Mock>);

impl MockClock {
    /// Moves the clock forward by `d`.
    ///
    /// ```
    /// let (_clock, mock) = latchless::Clock::mock();
    /// mock.advance(std::time::Duration::from_secs(1));
    /// ```
    pub fn advance(&self, d: Duration) {
        self.0.increment(d);
    }
}
