//! The backend's health as the connect path sees it: consecutive failed
//! connects, the single flight that serialises connects while they fail,
//! and the breaker that fails `get`s fast once the backend is known down.
//!
//! # States
//!
//! - **Up**: the last connect succeeded (or none has run). Connects run
//!   side by side, as many as places allow.
//! - **Failing**: the last connect failed. A connect needs the *flight*
//!   token first, so at most one connect runs against the failure at a
//!   time (`max_size` concurrent connects would all meet the same refused
//!   port); the others wait for it to end (`connector.rs`). The first
//!   success makes the backend up again.
//! - **Down** (the breaker is open): `threshold` consecutive failed
//!   connects, or one permanent error (`Manager::is_permanent`), with the
//!   breaker on. A `get` that would connect fails at once with
//!   `PoolError::Unavailable`; one *probe* connect at a time runs in the
//!   background, each after a jittered backoff that doubles from
//!   `connect_backoff` to `max_connect_backoff`; the first success makes
//!   the backend up again.
//!
//! This module keeps the state and its transitions and logs them; it
//! knows neither the core nor the manager. Times are the pool's clock
//! ticks.
//!
//! # Invariants kept
//!
//! - At most one party holds the flight token (a CAS claims it); at most
//!   one probe is claimed at a time (a CAS on `probing`), and a probe also
//!   holds the flight token while it connects.
//! - `down_since` is set only by the failure that opens the breaker and
//!   cleared only by a success, each transition logged once.
//! - Nothing here is touched while the backend is up but one relaxed load
//!   on the connect path (`failing`): the breaker costs a healthy pool's
//!   acquire and release nothing.
//! - The last failure's text, which every fast failure reads for
//!   `PoolError::Unavailable`, is read without a lock: a sequence lock
//!   over atomic words (`ErrorText`) whose writers skip a write that would
//!   meet another in progress, and whose readers retry a few times, then
//!   report the text as unavailable.

use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// `down_since` while the backend is not down.
const UP: u64 = u64::MAX;

/// One pool's view of its backend (module docs).
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Consecutive failed connects needed to open the breaker; 0: off.
    threshold: u64,
    /// Consecutive failed connects since the last success.
    failures: AtomicU64,
    /// The one connect allowed while failing is in flight.
    flight: AtomicBool,
    /// When the breaker opened (ticks), or [`UP`].
    down_since: AtomicU64,
    /// A probe is claimed (spawned, or running).
    probing: AtomicBool,
    /// When the next probe may start (ticks).
    next_probe: AtomicU64,
    /// The probe backoff now (ms): doubles per failed probe.
    backoff: AtomicU64,
    /// The latest failure's text, for `PoolError::Unavailable`.
    last_error: ErrorText,
}

/// What a connect may do now ([`Breaker::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go: the backend is up (no token needed), or this caller now holds
    /// the flight token (`true`), which [`Breaker::land`] gives back.
    Go(bool),
    /// Another connect is in flight against a failure: wait for it.
    Wait,
    /// The backend is down: fail fast.
    Down,
}

/// What a probe claim found ([`Breaker::claim_probe`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// This caller runs the probe (it holds `probing` and the flight).
    Run,
    /// Not due, not down, or another probe runs.
    No,
}

impl Breaker {
    /// A breaker that opens after `threshold` consecutive failures
    /// (`None`: never), probing from `backoff_ms`.
    pub(crate) fn new(threshold: Option<u32>, backoff_ms: u64) -> Self {
        Self {
            threshold: threshold.map_or(0, u64::from),
            failures: AtomicU64::new(0),
            flight: AtomicBool::new(false),
            down_since: AtomicU64::new(UP),
            probing: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            backoff: AtomicU64::new(backoff_ms),
            last_error: ErrorText::new(),
        }
    }

    /// The last connect failed (one relaxed load: the connect path's only
    /// cost while the backend is up).
    #[inline]
    pub(crate) fn failing(&self) -> bool {
        self.failures.load(Ordering::Relaxed) != 0
    }

    /// The breaker is open.
    #[inline]
    pub(crate) fn is_down(&self) -> bool {
        self.down_since.load(Ordering::Acquire) != UP
    }

    /// May a connect start now (module docs, "States")?
    pub(crate) fn admit(&self) -> Admit {
        if self.is_down() {
            return Admit::Down;
        }
        if !self.failing() {
            return Admit::Go(false);
        }
        // Acquire pairs with `land`'s Release: the next flight starts
        // after the last one's bookkeeping.
        match self
            .flight
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Admit::Go(true),
            Err(_) => Admit::Wait,
        }
    }

    /// Gives the flight token back (`admit` said `Go(true)`, or a probe
    /// ran).
    pub(crate) fn land(&self) {
        self.flight.store(false, Ordering::Release);
    }

    /// A connect succeeded: the backend is up. `now`: ticks, for the log.
    pub(crate) fn succeeded(&self, pool: &str, now: u64) {
        if self.failures.swap(0, Ordering::AcqRel) == 0 && !self.is_down() {
            return;
        }
        let since = self.down_since.swap(UP, Ordering::AcqRel);
        if since != UP {
            tracing::info!(
                pool,
                down_ms = now.saturating_sub(since),
                "backend up again: the breaker closed"
            );
        }
    }

    /// A connect failed with `error` (its text) at `now`; `permanent`:
    /// the manager says retrying cannot help. Opens the breaker (when it
    /// is on) at the threshold or on a permanent error; `backoff_ms` is
    /// the first probe's pause (jittered by the caller). True if this
    /// failure opened it.
    pub(crate) fn failed(
        &self,
        pool: &str,
        error: &str,
        permanent: bool,
        now: u64,
        backoff_ms: u64,
    ) -> bool {
        self.last_error.store(error);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if self.threshold == 0 || (failures < self.threshold && !permanent) {
            return false;
        }
        if self
            .down_since
            .compare_exchange(UP, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.next_probe
            .store(now.saturating_add(backoff_ms), Ordering::Relaxed);
        tracing::warn!(
            pool,
            failures,
            permanent,
            error,
            first_probe_in_ms = backoff_ms,
            "backend down: the breaker opened; gets that would connect fail fast until a probe connects"
        );
        true
    }

    /// Claims the next probe if the backend is down, the probe is due at
    /// `now` and none runs; the winner also takes the flight token.
    pub(crate) fn claim_probe(&self, now: u64) -> Probe {
        if !self.is_down() || now < self.next_probe.load(Ordering::Relaxed) {
            return Probe::No;
        }
        // loom mutant: two_probes (the claim with a load and a store),
        // see loom-tests/run-mutants.sh
        if crate::sync::mutant("two_probes") {
            if self.probing.load(Ordering::Acquire) {
                return Probe::No;
            }
            self.probing.store(true, Ordering::Release);
        } else if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Probe::No;
        }
        // No other flight runs while down (`admit` says `Down`) but one
        // that began before the breaker opened may still land.
        if self
            .flight
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
            && !crate::sync::mutant("two_probes")
        {
            self.probing.store(false, Ordering::Release);
            return Probe::No;
        }
        // A probe that connected may have ended the outage between the
        // look above and the claim (it closes the breaker before it lets
        // go of `probing`, which this claim acquired).
        if !self.is_down() && !crate::sync::mutant("two_probes") {
            self.land();
            self.probing.store(false, Ordering::Release);
            return Probe::No;
        }
        Probe::Run
    }

    /// A claimed probe ended: `ok` if it connected (the caller reports
    /// the success with [`succeeded`](Self::succeeded) first). A failed
    /// one pushes the next probe out by a backoff that doubles up to
    /// `max_ms`; `jitter` draws the actual pause from it.
    pub(crate) fn probe_ended(
        &self,
        ok: bool,
        now: u64,
        max_ms: u64,
        jitter: impl Fn(u64) -> u64,
        first_ms: u64,
    ) {
        if ok {
            self.backoff.store(first_ms, Ordering::Relaxed);
        } else {
            let b = self.backoff.load(Ordering::Relaxed);
            let next = b.saturating_mul(2).min(max_ms);
            self.backoff.store(next, Ordering::Relaxed);
            self.next_probe
                .store(now.saturating_add(jitter(next)), Ordering::Relaxed);
        }
        self.land();
        self.probing.store(false, Ordering::Release);
    }

    /// How long the breaker has been open at `now`, and until when the
    /// next probe waits; `None` while it is closed.
    pub(crate) fn outage(&self, now: u64) -> Option<(u64, u64)> {
        let since = self.down_since.load(Ordering::Acquire);
        if since == UP {
            return None;
        }
        let next = self.next_probe.load(Ordering::Relaxed);
        Some((now.saturating_sub(since), next.saturating_sub(now)))
    }

    /// Consecutive failed connects since the last success.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The latest failure's text (truncated to [`ErrorText::CAPACITY`]).
    pub(crate) fn last_error(&self) -> String {
        self.last_error.load()
    }
}

/// The text of the latest connect failure, readable by any number of
/// threads at once without a lock: a sequence lock over atomic words.
/// Writers that find another one writing skip their write (the other's
/// text is as recent); readers retry while a write is under way, a few
/// times, then report the text as unavailable.
///
/// Plain std atomics even under loom: the text orders nothing.
struct ErrorText {
    /// Even: stable; odd: a write is under way.
    seq: std::sync::atomic::AtomicU64,
    len: std::sync::atomic::AtomicUsize,
    words: [std::sync::atomic::AtomicU64; ErrorText::WORDS],
}

impl ErrorText {
    const WORDS: usize = 32;
    /// The longest text kept, in bytes; longer ones are cut at a
    /// character boundary.
    const CAPACITY: usize = Self::WORDS * 8;

    fn new() -> Self {
        Self {
            seq: std::sync::atomic::AtomicU64::new(0),
            len: std::sync::atomic::AtomicUsize::new(0),
            words: [const { std::sync::atomic::AtomicU64::new(0) }; Self::WORDS],
        }
    }

    fn store(&self, text: &str) {
        use std::sync::atomic::Ordering as O;
        let seq = self.seq.load(O::Relaxed);
        if seq % 2 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, O::Acquire, O::Relaxed)
                .is_err()
        {
            return;
        }
        let mut end = text.len().min(Self::CAPACITY);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &text.as_bytes()[..end];
        for (i, word) in self.words.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let from = (i * 8).min(end);
            let to = (from + 8).min(end);
            chunk[..to - from].copy_from_slice(&bytes[from..to]);
            word.store(u64::from_le_bytes(chunk), O::Relaxed);
        }
        self.len.store(end, O::Relaxed);
        // Release: a reader that sees this even value sees the words.
        self.seq.store(seq + 2, O::Release);
    }

    fn load(&self) -> String {
        use std::sync::atomic::Ordering as O;
        for _ in 0..8 {
            let before = self.seq.load(O::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = self.len.load(O::Relaxed).min(Self::CAPACITY);
            let mut bytes = Vec::with_capacity(len);
            for word in &self.words {
                bytes.extend_from_slice(&word.load(O::Relaxed).to_le_bytes());
            }
            bytes.truncate(len);
            // Acquire: the words read above come before the second look.
            std::sync::atomic::fence(O::Acquire);
            if self.seq.load(O::Relaxed) == before {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        String::from("(the error was being replaced)")
    }
}

impl std::fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ErrorText").field(&self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_round_trips_and_cuts_long_texts_at_a_character() {
        let t = ErrorText::new();
        assert_eq!(t.load(), "");
        t.store("connection refused");
        assert_eq!(t.load(), "connection refused");
        let long = "é".repeat(200); // 400 bytes
        t.store(&long);
        let read = t.load();
        assert!(read.len() <= ErrorText::CAPACITY && long.starts_with(&read));
        assert_eq!(read.chars().count(), ErrorText::CAPACITY / 2);
        t.store("short");
        assert_eq!(t.load(), "short", "no bytes of the longer text remain");
    }

    #[test]
    fn readers_never_see_a_torn_text() {
        let t = std::sync::Arc::new(ErrorText::new());
        let texts = [
            "aaaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        ];
        t.store(texts[0]);
        let writer = {
            let t = std::sync::Arc::clone(&t);
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    t.store(texts[i % 2]);
                }
            })
        };
        for _ in 0..20_000 {
            let read = t.load();
            assert!(
                texts.contains(&read.as_str()) || read.starts_with('('),
                "torn: {read}"
            );
        }
        writer.join().unwrap();
    }

    #[test]
    fn the_threshold_opens_it_a_success_closes_it() {
        let b = Breaker::new(Some(3), 25);
        assert_eq!(b.admit(), Admit::Go(false));
        assert!(!b.failed("p", "refused", false, 10, 25));
        assert!(b.failing());
        assert_eq!(b.admit(), Admit::Go(true), "one flight while failing");
        assert_eq!(b.admit(), Admit::Wait);
        assert!(!b.failed("p", "refused", false, 11, 25));
        b.land();
        assert!(b.failed("p", "refused again", false, 12, 25), "third: down");
        assert!(b.is_down());
        assert_eq!(b.admit(), Admit::Down);
        assert_eq!(b.outage(20), Some((8, 17)));
        assert_eq!(b.last_error(), "refused again");
        assert_eq!(b.claim_probe(30), Probe::No, "not due before 37");
        assert_eq!(b.claim_probe(37), Probe::Run);
        assert_eq!(b.claim_probe(37), Probe::No, "one probe at a time");
        b.probe_ended(false, 40, 1_000, |ms| ms, 25);
        assert_eq!(b.outage(40), Some((28, 50)), "backoff doubled to 50");
        assert_eq!(b.claim_probe(90), Probe::Run);
        b.succeeded("p", 95);
        b.probe_ended(true, 95, 1_000, |ms| ms, 25);
        assert!(!b.is_down() && !b.failing());
        assert_eq!(b.admit(), Admit::Go(false));
    }

    #[test]
    fn a_permanent_error_opens_it_at_once_and_off_never_opens() {
        let b = Breaker::new(Some(5), 25);
        assert!(b.failed("p", "bad password", true, 0, 25));
        assert!(b.is_down());
        let off = Breaker::new(None, 25);
        for _ in 0..100 {
            assert!(!off.failed("p", "refused", true, 0, 25));
        }
        assert!(!off.is_down() && off.failing());
    }
}
