//! The pool's health and sizing advice: [`Health`] (the alerts firing),
//! [`Sizing`] (the connection count the observed load calls for), the
//! `Monitor` that computes both from periodic samples, and the `Watch`
//! that holds the monitor for the pool.
//!
//! # The window
//!
//! The monitor keeps a ring of [`HealthConfig::slots`] slots of
//! [`HealthConfig::slot_ms`] each (default 30 × 1 s = a 30 s window). Each
//! `Monitor::sample(now_ms, &Observed)` call (housekeeping, at most once a
//! second, through `background::sample`; and `Pool::health()` /
//! `Pool::sizing()` before they read) takes the cumulative counters and
//! the acquire-wait histogram, subtracts the previous sample, and adds the
//! difference to the slot of `now_ms` (the pool clock's ticks). The first
//! previous sample is the pool at build, every counter zero, so what
//! happened before the first sample counts. The window is the last
//! `slots` slots, the current one included: what a sample saw leaves the
//! window when the slot `slots` later begins (29 to 30 s later by
//! default). The window's acquire-wait histogram is kept as
//! per-slot bucket deltas (u32) plus their running sum, so neither a
//! sample nor an evaluation allocates: memory is fixed at construction,
//! `slots × 4.75 KiB` plus two 9.5 KiB snapshots (162 KiB by default).
//!
//! # Alerts and their defaults
//!
//! Evaluated after every sample; [`Alert::value`] and
//! [`Alert::threshold`] are in the unit given by [`AlertKind`].
//!
//! | alert | fires when | default |
//! | --- | --- | --- |
//! | [`Utilization`](AlertKind::Utilization) | every sample for at least `sustain_ms` had `in_use / max_size` above the threshold (value: the lowest of them) | above 0.8 for 30 s |
//! | [`AcquireWait`](AlertKind::AcquireWait) | the window's acquire-wait p99 is above the threshold, over at least `wait_min_samples` acquisitions (a p99 of fewer is just their maximum: a cold start's first connect would fire it) | above 100 ms (`Builder::wait_alert`), at least 100 acquisitions |
//! | [`Exhaustion`](AlertKind::Exhaustion) | any `get` in the window failed with `Timeout` or `Exhausted` (value: how many) | any |
//! | [`BackendDown`](AlertKind::BackendDown) | the breaker is open (`Builder::breaker`), or connects failed in the window and none succeeded, or the restart epoch moved (a failed check, a failed probe of a broken connection included); value: the failures plus one per sample that saw the epoch move (at least the consecutive failures that opened the breaker) | any |
//! | [`Churn`](AlertKind::Churn) | connections opened per second over the window are above `max_size / churn_period` (value and threshold: opens per second): the pool opens and closes connections in a loop | `max_size` opens per 10 s (`Builder::churn_alert`) |
//!
//! Utilization is judged on consecutive samples, not on the ring: it
//! fires at the first sample `sustain_ms` after the first of an unbroken
//! run above the threshold, and clears at the first sample at or below it.
//!
//! # Logging
//!
//! Each transition into firing emits one `tracing::warn!` with the pool's
//! name (`pool`), the alert, its value and threshold, at most one per
//! alert kind per window: a kind that fires again within a window of its
//! last warning fires silently. The transition out of firing emits one
//! `tracing::info!` if entering it was logged.
//!
//! # Sizing
//!
//! The rule, Little's law with headroom: connections = acquire rate
//! × mean hold time × 1.5 ([`Sizing::HEADROOM`]), rounded up, at least 1.
//! The rate is the window's acquisitions (each one recorded in the
//! acquire-wait histogram) over the window's whole length, time before the
//! pool was built counting as idle, so that a burst weighs the same for as
//! long as it is in the window; the mean hold is the window's hold-time
//! sum over its count. The monitor computes it in exact integer
//! arithmetic. Worked examples:
//!
//! - 100 req/s × 100 ms × 1.5 = 15 connections.
//! - 2 000 req/s × 5 ms × 1.5 = 15 connections.
//! - 50 req/s × 30 ms × 1.5 = 2.25, so 3 connections.
//!
//! The rule assumes each task holds one connection at a time. Tasks that
//! hold several at once can deadlock a pool that is too small (every task
//! holding some, waiting for one more): with `threads` tasks at once each
//! needing `k` connections, `threads × (k − 1) + 1` connections guarantee
//! that one of them can finish; size to the larger of the two. E.g. 8
//! workers each holding 2 connections need at least 9.
//!
//! # Invariants kept
//!
//! - No allocation per sample or evaluation (only [`Health`]'s alert list,
//!   built when asked for).
//! - The window's totals are exactly the sum of its slots: a slot's
//!   contribution is subtracted when it is reused, never recomputed.
//! - Counters that go backwards (they should not) count as no change;
//!   time that goes backwards counts as no time passing.
//! - The monitor never touches a histogram's counters: it reads snapshots
//!   handed to it, so it never blocks a recorder.
//! - The sampling state (`Watch`) sits behind a mutex that only
//!   housekeeping (`try_lock`, skipped when taken) and `Pool::health` /
//!   `Pool::sizing` take: never `get` or a release. The same sample offers
//!   the asymmetric fence its relax (`asym.rs`) at most once a second,
//!   however often `health()` is called, so that a metrics scrape does not
//!   make the next waiter pay a membarrier.

use std::fmt;
use std::time::Duration;

use crate::histogram::{Histogram, HistogramSnapshot};

const BUCKETS: usize = Histogram::BUCKETS;

/// How many alert kinds there are.
const KINDS: usize = 5;

/// Which condition an [`Alert`] reports, and the unit of its
/// [`value`](Alert::value) and [`threshold`](Alert::threshold).
///
/// ```
/// use latchless::AlertKind;
/// assert_eq!(AlertKind::AcquireWait.to_string(), "acquire_wait");
/// assert_eq!(AlertKind::ALL.len(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// Connections in use over `max_size`, sustained (unit: a fraction,
    /// 0.0–1.0; value: the lowest sample of the sustained run).
    Utilization,
    /// The acquire-wait p99 over the window (unit: seconds).
    AcquireWait,
    /// `get`s that failed with `Timeout` or `Exhausted` in the window
    /// (unit: calls; threshold 0).
    Exhaustion,
    /// Connects failing with none succeeding, or the restart epoch moving,
    /// in the window (unit: events; threshold 0).
    BackendDown,
    /// Connections opened per second over the window, above `max_size`
    /// per [`Builder::churn_alert`](crate::Builder::churn_alert) (unit:
    /// opens per second): the pool opens and closes connections in a loop
    /// (an `idle_timeout` shorter than the traffic's gaps, lifetimes too
    /// short, a middlebox killing sessions).
    Churn,
}

impl AlertKind {
    /// Every kind, in the order [`Health::alerts`] lists them.
    ///
    /// ```
    /// assert_eq!(latchless::AlertKind::ALL[0], latchless::AlertKind::Utilization);
    /// ```
    pub const ALL: [AlertKind; KINDS] = [
        AlertKind::Utilization,
        AlertKind::AcquireWait,
        AlertKind::Exhaustion,
        AlertKind::BackendDown,
        AlertKind::Churn,
    ];

    /// A stable snake_case name, for logs and metric labels.
    ///
    /// ```
    /// assert_eq!(latchless::AlertKind::BackendDown.name(), "backend_down");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Utilization => "utilization",
            AlertKind::AcquireWait => "acquire_wait",
            AlertKind::Exhaustion => "exhaustion",
            AlertKind::BackendDown => "backend_down",
            AlertKind::Churn => "churn",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One firing alert: what fired, what was measured, the threshold it
/// crossed, and since when.
///
/// ```
/// fn page(health: &latchless::Health) {
///     for a in &health.alerts {
///         eprintln!("{} = {} (threshold {}) since {:?}", a.kind, a.value, a.threshold, a.since);
///         assert!(a.value > a.threshold);
///     }
/// }
/// page(&latchless::Health::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Alert {
    /// What fired.
    pub kind: AlertKind,
    /// The measured value, in the kind's unit (always above `threshold`).
    pub value: f64,
    /// The threshold, in the kind's unit.
    pub threshold: f64,
    /// When it started firing, as time since the pool was built.
    pub since: Duration,
}

/// The pool's alerts at one moment: empty when healthy.
///
/// Alerts are evaluated over a sliding window of 30 one-second slots
/// (the current one included, so what a sample saw counts for 29 to 30 s),
/// fed by the pool's periodic samples of its counters and its acquire-wait
/// histogram. [`Alert::value`] and [`Alert::threshold`] are in the unit
/// given by [`AlertKind`].
///
/// | alert | fires when | default |
/// | --- | --- | --- |
/// | [`Utilization`](AlertKind::Utilization) | every sample for at least 30 s had `in_use / max_size` above the threshold (value: the lowest of them); clears at the first sample at or below it | above 0.8 |
/// | [`AcquireWait`](AlertKind::AcquireWait) | the window's acquire-wait p99 is above the threshold, over at least 100 acquisitions (the p99 of fewer is just their maximum: a cold start's first connects would fire it) | above 100 ms (`Builder::wait_alert`) |
/// | [`Exhaustion`](AlertKind::Exhaustion) | any `get` in the window failed with `Timeout` or `Exhausted` (value: how many) | any |
/// | [`BackendDown`](AlertKind::BackendDown) | the breaker is open (`Builder::breaker`), or connects failed in the window and none succeeded, or the restart epoch moved (a failed check or a broken connection); value: the failures, plus one per sample that saw the epoch move (at least the consecutive failures that opened the breaker) | any |
/// | [`Churn`](AlertKind::Churn) | connections opened per second over the window above `max_size` per `churn_alert` (value and threshold in opens per second) | `max_size` opens per 10 s (`Builder::churn_alert`) |
///
/// Each transition into firing logs one `tracing` warning (fields `pool`,
/// `alert`, `value`, `threshold`), at most one per alert kind per window;
/// the transition out logs one info if entering it was logged.
///
/// ```
/// use latchless::{AlertKind, Health};
/// let h = Health::default();
/// assert!(h.is_healthy());
/// assert!(h.alert(AlertKind::Exhaustion).is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// The alerts firing, in [`AlertKind::ALL`] order.
    pub alerts: Vec<Alert>,
    /// When this was evaluated, as time since the pool was built.
    pub at: Duration,
    /// The length of the sliding window the alerts look at.
    pub window: Duration,
}

impl Health {
    /// Whether no alert fires.
    ///
    /// ```
    /// assert!(latchless::Health::default().is_healthy());
    /// ```
    pub fn is_healthy(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The alert of `kind`, if it fires.
    ///
    /// ```
    /// let h = latchless::Health::default();
    /// assert_eq!(h.alert(latchless::AlertKind::Utilization), None);
    /// ```
    pub fn alert(&self, kind: AlertKind) -> Option<&Alert> {
        self.alerts.iter().find(|a| a.kind == kind)
    }

    /// Adds one key's health to a keyed pool's: one alert per kind, the
    /// one with the worst (highest) value; the latest evaluation time.
    pub(crate) fn absorb(&mut self, other: Health) {
        self.at = self.at.max(other.at);
        self.window = self.window.max(other.window);
        for alert in other.alerts {
            match self.alerts.iter_mut().find(|a| a.kind == alert.kind) {
                Some(a) if a.value >= alert.value => {}
                Some(a) => *a = alert,
                None => self.alerts.push(alert),
            }
        }
        self.alerts.sort_by_key(|a| {
            AlertKind::ALL
                .iter()
                .position(|k| *k == a.kind)
                .unwrap_or(usize::MAX)
        });
    }
}

/// How the recommended size compares with the pool's `max_size`.
///
/// ```
/// # use latchless::{Manager, Pool, SizingVerdict};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).build().unwrap();
/// match pool.sizing().verdict {
///     SizingVerdict::TooSmall => eprintln!("expect waits: raise max_size"),
///     SizingVerdict::TooLarge => eprintln!("connections the load does not need"),
///     _ => {}
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizingVerdict {
    /// No acquisition or no release in the window: nothing to go by.
    #[default]
    NoData,
    /// `max_size` is below the recommendation: expect waits.
    TooSmall,
    /// `max_size` is between the recommendation and twice it.
    AboutRight,
    /// `max_size` is more than twice the recommendation: connections the
    /// load does not need (the server pays for each).
    TooLarge,
}

/// The seed's sizing rule applied to the observed window: its inputs, the
/// recommendation, and how `max_size` compares.
///
/// connections = acquire rate × mean hold time × [`HEADROOM`](Self::HEADROOM)
/// (1.5), rounded up, at least 1: Little's law (connections busy on
/// average = arrival rate × time each is held) with 50 % headroom for
/// bursts. Both figures cover the last 30 s: the rate is the window's
/// acquisitions over 30 s (time before the pool was built counts as idle,
/// so a pool's first 30 s under a steady load read low), the hold time is
/// the mean over the connections returned in the window. A burst weighs
/// the same for as long as it is in the window. Worked examples:
///
/// - 100 req/s × 100 ms × 1.5 = 15 connections.
/// - 2 000 req/s × 5 ms × 1.5 = 15 connections.
/// - 50 req/s × 30 ms × 1.5 = 2.25, so 3 connections.
///
/// The rule assumes a task holds one connection at a time. Tasks holding
/// several at once can deadlock a pool that is too small (each holding
/// some, all waiting for one more): with `threads` such tasks at once,
/// each holding up to `k`, `threads × (k − 1) + 1` connections guarantee
/// that one of them can always finish.
/// Size to the larger of the two: e.g. 8 workers holding 2 connections
/// each need at least 9, whatever their rate.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).build().unwrap();
/// let s = pool.sizing();
/// println!(
///     "{:.1} acquires/s x {:?} held x 1.5 = {} connections (max_size {}): {:?}",
///     s.acquire_rate_per_s, s.mean_hold, s.recommended, s.max_size, s.verdict
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Sizing {
    /// Acquisitions per second over the window: its acquisitions divided
    /// by its length.
    pub acquire_rate_per_s: f64,
    /// Mean time a connection was held (hand-out to return).
    pub mean_hold: Duration,
    /// The window the rate and hold time cover (30 s).
    pub observed: Duration,
    /// The recommended number of connections (0 with no data).
    pub recommended: usize,
    /// The pool's `max_size` when sampled.
    pub max_size: usize,
    /// How `max_size` compares with `recommended`.
    pub verdict: SizingVerdict,
}

impl Sizing {
    /// The seed's headroom factor over Little's law.
    ///
    /// ```
    /// assert_eq!(latchless::Sizing::HEADROOM, 1.5);
    /// ```
    pub const HEADROOM: f64 = 1.5;

    /// How `max_size` compares with a recommendation (0: no data).
    pub(crate) fn verdict_for(recommended: usize, max_size: usize) -> SizingVerdict {
        if recommended == 0 {
            SizingVerdict::NoData
        } else if max_size < recommended {
            SizingVerdict::TooSmall
        } else if max_size > recommended.saturating_mul(2) {
            SizingVerdict::TooLarge
        } else {
            SizingVerdict::AboutRight
        }
    }
}

/// The monitor's thresholds and window (defaults in the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HealthConfig {
    /// Length of one slot of the ring (ms, at least 1).
    pub(crate) slot_ms: u64,
    /// Slots in the ring (at least 1): the window is `slots × slot_ms`.
    pub(crate) slots: usize,
    /// Utilization (in use / max size) above which the alert can fire.
    pub(crate) utilization: f64,
    /// How long utilization must stay above it (ms).
    pub(crate) sustain_ms: u64,
    /// Acquire-wait p99 above which the alert fires (ns); `None`: off.
    pub(crate) wait_p99_ns: Option<u64>,
    /// Acquisitions the window needs before its p99 is judged.
    pub(crate) wait_min_samples: u64,
    /// The time in which opening `max_size` connections fires the churn
    /// alert (ms); `None`: off.
    pub(crate) churn_period_ms: Option<u64>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            slot_ms: 1_000,
            slots: 30,
            utilization: 0.8,
            sustain_ms: 30_000,
            wait_p99_ns: Some(100_000_000),
            wait_min_samples: 100,
            churn_period_ms: Some(10_000),
        }
    }
}

/// What the pool hands a sample: its state now and its cumulative
/// counters (all since the pool was built; the monitor takes differences).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observed<'a> {
    /// Connections handed out now.
    pub(crate) in_use: usize,
    /// The pool's `max_size` now.
    pub(crate) max_size: usize,
    /// The acquire-wait histogram: one record per acquisition.
    pub(crate) wait: &'a HistogramSnapshot,
    /// Connections returned (the hold-time histogram's count).
    pub(crate) hold_count: u64,
    /// Their total hold time, ns (the hold-time histogram's sum).
    pub(crate) hold_sum_ns: u64,
    /// `get`s that failed with `Timeout` or `Exhausted`.
    pub(crate) failed_acquires: u64,
    /// Connects that succeeded.
    pub(crate) connects: u64,
    /// Connects that failed or timed out.
    pub(crate) connect_failures: u64,
    /// The server-restart epoch (moves on a failed check or a broken
    /// connection).
    pub(crate) restart_epoch: u64,
    /// The breaker is open, after this many consecutive failed connects
    /// (0: it is closed).
    pub(crate) down_after: u64,
}

/// Maintenance samples the monitor at most this often, and the asymmetric
/// fence is offered a relax at most this often (ticks).
const SAMPLE_EVERY_MS: u64 = 1_000;

/// A pool's monitor and what a sample reads into (no allocation per
/// sample), behind a mutex that only maintenance (`try_lock`) and
/// `Pool::health` / `Pool::sizing` take, never `get` or a release.
#[derive(Debug)]
pub(crate) struct Watch {
    sampling: std::sync::Mutex<Sampling>,
    /// When maintenance last sampled (ticks; `u64::MAX`: never).
    last_sample: std::sync::atomic::AtomicU64,
}

/// The state a sample works on.
#[derive(Debug)]
pub(crate) struct Sampling {
    pub(crate) monitor: Monitor,
    pub(crate) wait: HistogramSnapshot,
    pub(crate) hold: HistogramSnapshot,
    /// When the asymmetric fence was last offered a relax (ticks).
    relaxed_at: u64,
}

impl Watch {
    /// The watch of a pool named `name`, built at `now`, whose wait alert
    /// fires above `wait_alert` and whose churn alert fires when it opens
    /// `max_size` connections faster than `churn_alert` (`Duration::MAX`:
    /// off).
    pub(crate) fn new(name: &str, wait_alert: Duration, churn_alert: Duration, now: u64) -> Self {
        let cfg = HealthConfig {
            wait_p99_ns: Some(u64::try_from(wait_alert.as_nanos()).unwrap_or(u64::MAX)),
            churn_period_ms: (churn_alert != Duration::MAX).then(|| {
                u64::try_from(churn_alert.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1)
            }),
            ..HealthConfig::default()
        };
        Self {
            sampling: std::sync::Mutex::new(Sampling {
                monitor: Monitor::new(name, cfg, now),
                wait: HistogramSnapshot::default(),
                hold: HistogramSnapshot::default(),
                relaxed_at: now,
            }),
            last_sample: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// The sampling state for a sample at `now`: when `force`d (`health()`,
    /// `sizing()`), waiting for the lock; else (maintenance) at most once a
    /// second and only if the lock is free.
    pub(crate) fn lock(
        &self,
        now: u64,
        force: bool,
    ) -> Option<std::sync::MutexGuard<'_, Sampling>> {
        use std::sync::atomic::Ordering as O;
        let sampling = if force {
            // A panic while sampling leaves nothing half-done that matters.
            self.sampling.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            let last = self.last_sample.load(O::Relaxed);
            if last != u64::MAX && now.saturating_sub(last) < SAMPLE_EVERY_MS {
                return None;
            }
            self.sampling.try_lock().ok()?
        };
        self.last_sample.store(now, O::Relaxed);
        Some(sampling)
    }
}

impl Sampling {
    /// Whether the asymmetric fence may be offered a relax at `now`: at
    /// most once a second, however often `health()` / `sizing()` are
    /// called, so that a metrics scrape does not make the next waiter pay
    /// a membarrier (`asym.rs`).
    pub(crate) fn relax_due(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.relaxed_at) < SAMPLE_EVERY_MS {
            return false;
        }
        self.relaxed_at = now;
        true
    }
}

/// Per-slot (and whole-window) sums of the sampled differences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    acquires: u64,
    hold_count: u64,
    hold_sum: u64,
    failed_acquires: u64,
    connects: u64,
    connect_failures: u64,
    epoch_trips: u64,
}

impl Totals {
    fn add(&mut self, d: &Totals) {
        self.acquires += d.acquires;
        self.hold_count += d.hold_count;
        self.hold_sum = self.hold_sum.wrapping_add(d.hold_sum);
        self.failed_acquires += d.failed_acquires;
        self.connects += d.connects;
        self.connect_failures += d.connect_failures;
        self.epoch_trips += d.epoch_trips;
    }

    fn sub(&mut self, d: &Totals) {
        self.acquires -= d.acquires;
        self.hold_count -= d.hold_count;
        self.hold_sum = self.hold_sum.wrapping_sub(d.hold_sum);
        self.failed_acquires -= d.failed_acquires;
        self.connects -= d.connects;
        self.connect_failures -= d.connect_failures;
        self.epoch_trips -= d.epoch_trips;
    }
}

/// One slot of the ring.
#[derive(Clone, Copy, Debug)]
struct Slot {
    totals: Totals,
    /// Whether its wait deltas hold anything.
    has_waits: bool,
}

const EMPTY: Slot = Slot {
    totals: Totals {
        acquires: 0,
        hold_count: 0,
        hold_sum: 0,
        failed_acquires: 0,
        connects: 0,
        connect_failures: 0,
        epoch_trips: 0,
    },
    has_waits: false,
};

/// The previous sample's scalars.
#[derive(Clone, Copy, Debug)]
struct Prev {
    ms: u64,
    hold_count: u64,
    hold_sum: u64,
    failed_acquires: u64,
    connects: u64,
    connect_failures: u64,
    restart_epoch: u64,
}

/// One alert kind's firing state and log rate limit.
#[derive(Clone, Copy, Debug, Default)]
struct KindState {
    /// `(since_ms, value, threshold)` while firing.
    firing: Option<(u64, f64, f64)>,
    /// When its last warning was logged.
    last_warn: Option<u64>,
    /// Whether entering the current firing was logged.
    logged: bool,
}

/// Computes [`Health`] and [`Sizing`] from periodic samples (module docs).
/// Needs `&mut` to sample: the pool keeps it behind a mutex taken only by
/// maintenance and `health()` / `sizing()`, never by `get` or a release.
pub(crate) struct Monitor {
    name: Box<str>,
    cfg: HealthConfig,
    slots: Box<[Slot]>,
    /// `slots × BUCKETS` acquire-wait bucket deltas, slot-major.
    waits: Box<[u32]>,
    /// Index (time / slot_ms) of the newest slot.
    cur: u64,
    /// Sums over the live slots.
    totals: Totals,
    /// The window's acquire-wait histogram (counts; max fixed on use).
    window_wait: HistogramSnapshot,
    /// The latest cumulative acquire-wait snapshot.
    prev_wait: HistogramSnapshot,
    /// The latest sample's scalars (at build: all zero).
    prev: Prev,
    /// `max_size` at the latest sample.
    max_size: usize,
    /// `Observed::down_after` at the latest sample.
    down_after: u64,
    /// Start and lowest value of the current run of samples above the
    /// utilization threshold.
    util_run: Option<(u64, f64)>,
    kinds: [KindState; KINDS],
    /// Warnings logged per kind (tests read these).
    pub(crate) warnings: [u64; KINDS],
    /// Recoveries logged per kind.
    pub(crate) recoveries: [u64; KINDS],
}

impl Monitor {
    /// A monitor for the pool named `name`, built at `start_ms`: the
    /// baseline is the pool at build, every counter zero, so the first
    /// sample counts everything since then. Allocates its window now.
    pub(crate) fn new(name: &str, cfg: HealthConfig, start_ms: u64) -> Self {
        let cfg = HealthConfig {
            slot_ms: cfg.slot_ms.max(1),
            slots: cfg.slots.max(1),
            ..cfg
        };
        Self {
            name: name.into(),
            slots: vec![EMPTY; cfg.slots].into_boxed_slice(),
            waits: vec![0; cfg.slots * BUCKETS].into_boxed_slice(),
            cur: start_ms / cfg.slot_ms,
            cfg,
            totals: Totals::default(),
            window_wait: HistogramSnapshot::default(),
            prev_wait: HistogramSnapshot::default(),
            prev: Prev {
                ms: start_ms,
                hold_count: 0,
                hold_sum: 0,
                failed_acquires: 0,
                connects: 0,
                connect_failures: 0,
                restart_epoch: 0,
            },
            max_size: 0,
            down_after: 0,
            util_run: None,
            kinds: [KindState::default(); KINDS],
            warnings: [0; KINDS],
            recoveries: [0; KINDS],
        }
    }

    fn window_ms(&self) -> u64 {
        self.cfg.slot_ms.saturating_mul(self.cfg.slots as u64)
    }

    /// Takes a sample at `now_ms` (pool ticks), then re-evaluates the
    /// alerts, logging transitions.
    pub(crate) fn sample(&mut self, now_ms: u64, o: &Observed<'_>) {
        let p = self.prev;
        let now = now_ms.max(p.ms);
        let slot_id = now / self.cfg.slot_ms;
        self.advance(slot_id);
        let d = Totals {
            acquires: o.wait.count.saturating_sub(self.prev_wait.count),
            hold_count: o.hold_count.saturating_sub(p.hold_count),
            hold_sum: o.hold_sum_ns.wrapping_sub(p.hold_sum),
            failed_acquires: o.failed_acquires.saturating_sub(p.failed_acquires),
            connects: o.connects.saturating_sub(p.connects),
            connect_failures: o.connect_failures.saturating_sub(p.connect_failures),
            epoch_trips: u64::from(o.restart_epoch > p.restart_epoch),
        };
        let n = self.slots.len();
        let idx = (slot_id % n as u64) as usize;
        let slot = &mut self.slots[idx];
        slot.totals.add(&d);
        self.totals.add(&d);
        if d.acquires != 0 {
            let deltas = &mut self.waits[idx * BUCKETS..(idx + 1) * BUCKETS];
            for (i, w) in deltas.iter_mut().enumerate() {
                let grew = o.wait.counts[i].saturating_sub(self.prev_wait.counts[i]);
                if grew != 0 {
                    // Clamped so that the slot and the window agree.
                    let add = grew.min(u64::from(u32::MAX - *w)) as u32;
                    *w += add;
                    self.window_wait.counts[i] += u64::from(add);
                    self.window_wait.count += u64::from(add);
                    slot.has_waits = true;
                }
            }
        }
        self.prev_wait.counts.copy_from_slice(&o.wait.counts);
        self.prev_wait.count = o.wait.count;
        self.prev_wait.sum = o.wait.sum;
        self.prev_wait.max = o.wait.max;
        self.prev = Prev {
            ms: now,
            hold_count: o.hold_count,
            hold_sum: o.hold_sum_ns,
            failed_acquires: o.failed_acquires,
            connects: o.connects,
            connect_failures: o.connect_failures,
            restart_epoch: o.restart_epoch,
        };
        self.max_size = o.max_size;
        self.down_after = o.down_after;
        let util = o.in_use as f64 / o.max_size.max(1) as f64;
        self.util_run = if util > self.cfg.utilization {
            Some(self.util_run.map_or((now, util), |(s, m)| (s, m.min(util))))
        } else {
            None
        };
        self.evaluate(now);
    }

    /// Moves the newest slot to `to`, emptying the slots it passes over.
    fn advance(&mut self, to: u64) {
        if to <= self.cur {
            return;
        }
        let n = self.slots.len() as u64;
        let steps = (to - self.cur).min(n);
        for id in to - steps + 1..=to {
            let idx = (id % n) as usize;
            let slot = self.slots[idx];
            self.totals.sub(&slot.totals);
            if slot.has_waits {
                let deltas = &mut self.waits[idx * BUCKETS..(idx + 1) * BUCKETS];
                for (i, w) in deltas.iter_mut().enumerate() {
                    self.window_wait.counts[i] -= u64::from(*w);
                    self.window_wait.count -= u64::from(*w);
                    *w = 0;
                }
            }
            self.slots[idx] = EMPTY;
        }
        self.cur = to;
    }

    /// The window's acquire-wait p99 (ns) and how many acquisitions it
    /// covers.
    fn window_p99(&mut self) -> (u64, u64) {
        self.window_wait.fix_max(self.prev_wait.max);
        (self.window_wait.p99(), self.window_wait.count)
    }

    /// Which alerts fire now: `(value, threshold)` per kind.
    fn judge(&mut self, now: u64) -> [Option<(f64, f64)>; KINDS] {
        let mut out = [None; KINDS];
        if let Some((start, lowest)) = self.util_run {
            if now - start >= self.cfg.sustain_ms {
                out[AlertKind::Utilization.idx()] = Some((lowest, self.cfg.utilization));
            }
        }
        if let Some(threshold) = self.cfg.wait_p99_ns {
            let (p99, n) = self.window_p99();
            if n >= self.cfg.wait_min_samples && p99 > threshold {
                out[AlertKind::AcquireWait.idx()] =
                    Some((p99 as f64 / 1e9, threshold as f64 / 1e9));
            }
        }
        let t = self.totals;
        if t.failed_acquires > 0 {
            out[AlertKind::Exhaustion.idx()] = Some((t.failed_acquires as f64, 0.0));
        }
        if (t.connect_failures > 0 && t.connects == 0) || t.epoch_trips > 0 || self.down_after > 0 {
            let events = (t.connect_failures + t.epoch_trips).max(self.down_after);
            out[AlertKind::BackendDown.idx()] = Some((events as f64, 0.0));
        }
        if let Some(period) = self.cfg.churn_period_ms {
            // Opens over the window above max_size per period, compared
            // exactly: opens × period > max_size × window.
            let window = self.window_ms();
            let opens = u128::from(t.connects) * u128::from(period);
            if self.max_size > 0 && opens > self.max_size as u128 * u128::from(window) {
                out[AlertKind::Churn.idx()] = Some((
                    t.connects as f64 * 1000.0 / window as f64,
                    self.max_size as f64 * 1000.0 / period as f64,
                ));
            }
        }
        out
    }

    /// Re-evaluates the alerts at `now` and logs transitions.
    fn evaluate(&mut self, now: u64) {
        let judged = self.judge(now);
        let window = self.window_ms();
        for kind in AlertKind::ALL {
            let i = kind.idx();
            let st = &mut self.kinds[i];
            match (st.firing, judged[i]) {
                (None, Some((value, threshold))) => {
                    st.firing = Some((now, value, threshold));
                    st.logged = st.last_warn.is_none_or(|w| now - w >= window);
                    if st.logged {
                        st.last_warn = Some(now);
                        self.warnings[i] += 1;
                        tracing::warn!(
                            pool = %self.name,
                            alert = kind.name(),
                            value,
                            threshold,
                            "connection pool alert firing"
                        );
                    }
                }
                (Some((since, _, _)), Some((value, threshold))) => {
                    st.firing = Some((since, value, threshold));
                }
                (Some((since, _, _)), None) => {
                    st.firing = None;
                    if st.logged {
                        self.recoveries[i] += 1;
                        tracing::info!(
                            pool = %self.name,
                            alert = kind.name(),
                            firing_ms = now - since,
                            "connection pool alert cleared"
                        );
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// The alerts as of the latest sample.
    pub(crate) fn health(&self) -> Health {
        let alerts = AlertKind::ALL
            .iter()
            .filter_map(|&kind| {
                let (since, value, threshold) = self.kinds[kind.idx()].firing?;
                Some(Alert {
                    kind,
                    value,
                    threshold,
                    since: Duration::from_millis(since),
                })
            })
            .collect();
        Health {
            alerts,
            at: Duration::from_millis(self.prev.ms),
            window: Duration::from_millis(self.window_ms()),
        }
    }

    /// The sizing rule over the window, as of the latest sample: the
    /// window's acquisitions over its whole length (time before the pool
    /// was built counts as idle), so a burst weighs the same for as long
    /// as it stays in the window.
    pub(crate) fn sizing(&self) -> Sizing {
        let span_ms = self.window_ms();
        let t = self.totals;
        let observed = Duration::from_millis(span_ms);
        if t.acquires == 0 || t.hold_count == 0 {
            return Sizing {
                observed,
                max_size: self.max_size,
                ..Sizing::default()
            };
        }
        // ⌈acquires / span × hold_sum / hold_count × 3/2⌉, exactly.
        let num = u128::from(t.acquires) * u128::from(t.hold_sum) * 3;
        let den = u128::from(span_ms) * 1_000_000 * u128::from(t.hold_count) * 2;
        let recommended = usize::try_from(num.div_ceil(den))
            .unwrap_or(usize::MAX)
            .max(1);
        Sizing {
            acquire_rate_per_s: t.acquires as f64 * 1000.0 / span_ms as f64,
            mean_hold: Duration::from_nanos(t.hold_sum / t.hold_count),
            observed,
            recommended,
            max_size: self.max_size,
            verdict: Sizing::verdict_for(recommended, self.max_size),
        }
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .field("cur", &self.cur)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

/// The integration tests' event collector (`tests/capture`), for the alert
/// log's unit test: one definition for both.
#[cfg(test)]
#[path = "../tests/capture/mod.rs"]
#[allow(unreachable_pub)]
mod test_capture;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A pool's cumulative counters, fed to a monitor by hand.
    struct Feed {
        wait: Histogram,
        snap: HistogramSnapshot,
        in_use: usize,
        max_size: usize,
        hold_count: u64,
        hold_sum: u64,
        failed: u64,
        connects: u64,
        connect_failures: u64,
        epoch: u64,
        /// The breaker's opening failures while it is open (0: closed).
        down_after: u64,
    }

    impl Feed {
        fn new(max_size: usize) -> Self {
            Self {
                wait: Histogram::new(),
                snap: HistogramSnapshot::default(),
                in_use: 0,
                max_size,
                hold_count: 0,
                hold_sum: 0,
                failed: 0,
                connects: 0,
                connect_failures: 0,
                epoch: 0,
                down_after: 0,
            }
        }

        /// `n` acquisitions that waited `wait_ns` each.
        fn waits(&mut self, n: u64, wait_ns: u64) {
            for _ in 0..n {
                self.wait.record(wait_ns);
            }
        }

        fn sample(&mut self, m: &mut Monitor, now_ms: u64) {
            self.wait.snapshot_into(&mut self.snap);
            m.sample(
                now_ms,
                &Observed {
                    in_use: self.in_use,
                    max_size: self.max_size,
                    wait: &self.snap,
                    hold_count: self.hold_count,
                    hold_sum_ns: self.hold_sum,
                    failed_acquires: self.failed,
                    connects: self.connects,
                    connect_failures: self.connect_failures,
                    restart_epoch: self.epoch,
                    down_after: self.down_after,
                },
            );
        }
    }

    fn monitor() -> Monitor {
        Monitor::new("db", HealthConfig::default(), 0)
    }

    /// A monitor whose wait alert fires on one wait past a microsecond.
    fn alerting_on_any_wait() -> Monitor {
        let cfg = HealthConfig {
            wait_p99_ns: Some(1_000),
            wait_min_samples: 1,
            ..HealthConfig::default()
        };
        Monitor::new("db", cfg, 0)
    }

    /// A monitor and a feed of a pool of `max_size`, the first sample
    /// taken at time 0.
    fn started(max_size: usize) -> (Monitor, Feed) {
        let mut m = monitor();
        let mut f = Feed::new(max_size);
        f.sample(&mut m, 0);
        (m, f)
    }

    fn firing(m: &Monitor, kind: AlertKind) -> Option<Alert> {
        m.health().alert(kind).copied()
    }

    /// A keyed pool's health is its keys' together: one alert per kind,
    /// the one with the worst value whichever key reported it first, in
    /// `AlertKind::ALL` order, at the latest evaluation.
    #[test]
    fn a_keyed_pools_health_keeps_each_kinds_worst_alert_in_order() {
        let alert = |kind, value| Alert {
            kind,
            value,
            threshold: 0.0,
            since: Duration::ZERO,
        };
        let health = |alerts, at| Health {
            alerts,
            at: Duration::from_secs(at),
            window: Duration::from_secs(30),
        };
        let one = health(
            vec![
                alert(AlertKind::AcquireWait, 0.5),
                alert(AlertKind::Exhaustion, 3.0),
                alert(AlertKind::Churn, 9.0),
            ],
            7,
        );
        let two = health(
            vec![
                alert(AlertKind::Utilization, 0.9),
                alert(AlertKind::Exhaustion, 7.0),
                alert(AlertKind::BackendDown, 1.0),
                alert(AlertKind::Churn, 2.0),
            ],
            5,
        );
        let mut all = Health::default();
        all.absorb(one);
        all.absorb(two);
        assert_eq!(
            all,
            health(
                vec![
                    alert(AlertKind::Utilization, 0.9),
                    alert(AlertKind::AcquireWait, 0.5),
                    alert(AlertKind::Exhaustion, 7.0),
                    alert(AlertKind::BackendDown, 1.0),
                    alert(AlertKind::Churn, 9.0),
                ],
                7,
            )
        );
        assert!(!all.is_healthy());
    }

    #[test]
    fn utilization_fires_after_30_s_above_80_percent_and_clears_at_it() {
        let mut m = monitor();
        let mut f = Feed::new(10);
        f.in_use = 10;
        f.sample(&mut m, 0);
        f.in_use = 9;
        for t in 1..30 {
            f.sample(&mut m, t * 1000);
            assert_eq!(firing(&m, AlertKind::Utilization), None, "at {t} s");
        }
        f.sample(&mut m, 30_000);
        let a = firing(&m, AlertKind::Utilization).expect("30 s above 0.8");
        assert_eq!(
            (a.value, a.threshold),
            (9.0 / 10.0, 0.8),
            "the lowest sample"
        );
        assert_eq!(a.since, Duration::from_secs(30));
        assert!(!m.health().is_healthy());
        f.in_use = 8; // exactly 0.8: not above
        f.sample(&mut m, 31_000);
        assert_eq!(firing(&m, AlertKind::Utilization), None);
        assert!(m.health().is_healthy());
        // A new run starts from scratch: one dip resets the 30 s.
        f.in_use = 9;
        f.sample(&mut m, 32_000);
        f.sample(&mut m, 61_999);
        assert_eq!(firing(&m, AlertKind::Utilization), None);
        f.sample(&mut m, 62_000);
        assert!(firing(&m, AlertKind::Utilization).is_some());
        let i = AlertKind::Utilization.idx();
        assert_eq!((m.warnings[i], m.recoveries[i]), (2, 1));
    }

    #[test]
    fn wait_alert_fires_above_the_p99_threshold_over_enough_acquisitions() {
        let (mut m, mut f) = started(10);
        f.waits(97, 0);
        f.waits(2, 200 * MS);
        f.sample(&mut m, 1_000);
        assert_eq!(firing(&m, AlertKind::AcquireWait), None, "99 acquisitions");
        f.waits(1, 0);
        f.sample(&mut m, 2_000);
        // p99 of 100 = the 99th smallest: 200 ms, read back as its
        // bucket's midpoint [197_132_288, 201_326_591] -> 199_229_440.
        let a = firing(&m, AlertKind::AcquireWait).expect("p99 200 ms > 100 ms");
        assert_eq!((a.value, a.threshold), (199_229_440.0 / 1e9, 0.1));
        assert_eq!(a.since, Duration::from_secs(2));
        // 199 acquisitions: rank 198 is still slow; 200: rank 198 is fast.
        f.waits(99, 0);
        f.sample(&mut m, 3_000);
        assert!(firing(&m, AlertKind::AcquireWait).is_some());
        f.waits(1, 0);
        f.sample(&mut m, 4_000);
        assert_eq!(firing(&m, AlertKind::AcquireWait), None);
    }

    #[test]
    fn wait_alert_threshold_is_strict_and_can_be_turned_off() {
        for (threshold, fires) in [
            (Some(199_229_439), true),
            (Some(199_229_440), false),
            (None, false),
        ] {
            let cfg = HealthConfig {
                wait_p99_ns: threshold,
                ..HealthConfig::default()
            };
            let mut m = Monitor::new("db", cfg, 0);
            let mut f = Feed::new(10);
            f.sample(&mut m, 0);
            f.waits(100, 200 * MS);
            f.sample(&mut m, 1_000);
            assert_eq!(
                firing(&m, AlertKind::AcquireWait).is_some(),
                fires,
                "threshold {threshold:?}"
            );
        }
    }

    #[test]
    fn wait_alert_clears_when_the_slow_acquisitions_leave_the_window() {
        let (mut m, mut f) = started(10);
        f.waits(100, 150 * MS);
        f.sample(&mut m, 1_500); // slot 1
        assert!(firing(&m, AlertKind::AcquireWait).is_some());
        f.sample(&mut m, 30_999); // slot 30: slots 1..=30 live
        assert!(firing(&m, AlertKind::AcquireWait).is_some());
        assert_eq!(m.window_wait.count, 100);
        f.sample(&mut m, 31_000); // slot 31: slot 1 leaves
        assert_eq!(firing(&m, AlertKind::AcquireWait), None);
        assert_eq!(m.window_wait.count, 0);
        assert!(m.waits.iter().all(|&w| w == 0));
    }

    #[test]
    fn exhaustion_fires_on_any_failure_in_the_window_and_clears_when_it_leaves() {
        let (mut m, mut f) = started(10);
        f.sample(&mut m, 4_000);
        assert_eq!(firing(&m, AlertKind::Exhaustion), None);
        f.failed += 1;
        f.sample(&mut m, 5_000);
        let a = firing(&m, AlertKind::Exhaustion).expect("one timeout");
        assert_eq!(
            (a.value, a.threshold, a.since),
            (1.0, 0.0, Duration::from_secs(5))
        );
        f.failed += 2;
        f.sample(&mut m, 10_000);
        assert_eq!(firing(&m, AlertKind::Exhaustion).unwrap().value, 3.0);
        f.sample(&mut m, 34_999);
        assert_eq!(firing(&m, AlertKind::Exhaustion).unwrap().value, 3.0);
        f.sample(&mut m, 35_000);
        let a = firing(&m, AlertKind::Exhaustion).expect("the later two remain");
        assert_eq!((a.value, a.since), (2.0, Duration::from_secs(5)));
        f.sample(&mut m, 39_999);
        assert!(firing(&m, AlertKind::Exhaustion).is_some());
        f.sample(&mut m, 40_000);
        assert_eq!(firing(&m, AlertKind::Exhaustion), None);
        // A long gap empties the whole window at once; time going back
        // counts as no time passing.
        f.failed += 1;
        f.sample(&mut m, 41_000);
        f.sample(&mut m, 20_000);
        assert!(firing(&m, AlertKind::Exhaustion).is_some());
        assert_eq!(m.health().at, Duration::from_secs(41));
        f.sample(&mut m, 1_000_000);
        assert_eq!(firing(&m, AlertKind::Exhaustion), None);
        assert_eq!(m.totals, Totals::default());
    }

    #[test]
    fn backend_down_fires_on_failing_connects_without_success_or_an_epoch_trip() {
        let (mut m, mut f) = started(10);
        f.connect_failures += 2;
        f.sample(&mut m, 1_000);
        let a = firing(&m, AlertKind::BackendDown).expect("2 failures, no success");
        assert_eq!((a.value, a.threshold), (2.0, 0.0));
        f.connects += 1;
        f.sample(&mut m, 2_000);
        assert_eq!(
            firing(&m, AlertKind::BackendDown),
            None,
            "a connect succeeded"
        );
        f.connect_failures += 5;
        f.sample(&mut m, 3_000);
        assert_eq!(
            firing(&m, AlertKind::BackendDown),
            None,
            "the success is in the window"
        );
        // The success (slot 2) leaves at 32 s; the failures stay until 33 s.
        f.sample(&mut m, 31_999);
        assert_eq!(firing(&m, AlertKind::BackendDown), None);
        f.sample(&mut m, 32_000);
        assert_eq!(firing(&m, AlertKind::BackendDown).unwrap().value, 5.0);
        f.sample(&mut m, 33_000);
        assert_eq!(firing(&m, AlertKind::BackendDown), None);
        // The restart epoch moving fires it on its own, for one window.
        f.epoch = 17;
        f.sample(&mut m, 40_000);
        assert_eq!(firing(&m, AlertKind::BackendDown).unwrap().value, 1.0);
        f.sample(&mut m, 69_999);
        assert!(firing(&m, AlertKind::BackendDown).is_some());
        f.sample(&mut m, 70_000);
        assert_eq!(firing(&m, AlertKind::BackendDown), None);
    }

    /// An open breaker keeps the alert firing after its failures have left
    /// the window (no connect is tried while it waits to probe), with the
    /// failures that opened it as the value; it clears when the breaker
    /// closes.
    #[test]
    fn backend_down_fires_while_the_breaker_is_open_without_connects_in_the_window() {
        let (mut m, mut f) = started(10);
        f.down_after = 3;
        f.sample(&mut m, 60_000);
        let a = firing(&m, AlertKind::BackendDown).expect("the breaker is open");
        assert_eq!((a.value, a.threshold), (3.0, 0.0));
        f.down_after = 0;
        f.sample(&mut m, 61_000);
        assert_eq!(firing(&m, AlertKind::BackendDown), None, "closed again");
    }

    /// Acquisitions none of which has come back yet give no mean hold
    /// time: no recommendation, but the window and `max_size` are told.
    #[test]
    fn sizing_before_any_return_has_no_data() {
        let (mut m, mut f) = started(10);
        f.waits(5, 0);
        f.in_use = 5;
        f.sample(&mut m, 1_000);
        let s = m.sizing();
        assert_eq!(s.verdict, SizingVerdict::NoData, "{s:?}");
        assert_eq!(s.recommended, 0, "{s:?}");
        assert_eq!(s.max_size, 10, "{s:?}");
        assert_eq!(s.observed, Duration::from_secs(30), "{s:?}");
    }

    #[test]
    fn sizing_for_100_per_s_held_100_ms_is_15() {
        let (mut m, mut f) = started(10);
        assert_eq!(m.sizing().verdict, SizingVerdict::NoData);
        for t in 1..=30 {
            f.waits(100, 0);
            f.hold_count += 100;
            f.hold_sum += 100 * 100 * MS;
            f.sample(&mut m, t * 1000);
            if t == 10 {
                // A third of the window: the window's rate is a third.
                let s = m.sizing();
                assert_eq!((s.acquire_rate_per_s, s.recommended), (1000.0 / 30.0, 5));
                assert_eq!(s.observed, Duration::from_secs(30));
            }
        }
        let s = m.sizing();
        assert_eq!(s.acquire_rate_per_s, 100.0);
        assert_eq!(s.mean_hold, Duration::from_millis(100));
        assert_eq!(s.observed, Duration::from_secs(30));
        assert_eq!((s.recommended, s.max_size), (15, 10));
        assert_eq!(s.verdict, SizingVerdict::TooSmall);
        // The window slides: 31 s of the same load reads the same.
        f.waits(100, 0);
        f.hold_count += 100;
        f.hold_sum += 100 * 100 * MS;
        f.max_size = 20;
        f.sample(&mut m, 31_000);
        let s = m.sizing();
        assert_eq!(
            (s.acquire_rate_per_s, s.observed),
            (100.0, Duration::from_secs(30))
        );
        assert_eq!((s.recommended, s.verdict), (15, SizingVerdict::AboutRight));
        f.max_size = 31;
        f.sample(&mut m, 31_500);
        assert_eq!(m.sizing().verdict, SizingVerdict::TooLarge);
        // Rounded up: 50/s x 30 ms x 1.5 = 2.25 -> 3.
        let (mut m, mut f) = started(3);
        f.waits(1_500, 0);
        f.hold_count += 1_500;
        f.hold_sum += 1_500 * 30 * MS;
        f.sample(&mut m, 2_000);
        let s = m.sizing();
        assert_eq!((s.acquire_rate_per_s, s.recommended), (50.0, 3));
        assert_eq!(s.verdict, SizingVerdict::AboutRight);
        // Quiet for a window: nothing to go by.
        f.sample(&mut m, 40_000);
        assert_eq!(
            (m.sizing().recommended, m.sizing().verdict),
            (0, SizingVerdict::NoData)
        );
    }

    #[test]
    fn the_verdict_follows_the_documented_bands() {
        assert_eq!(Sizing::verdict_for(0, 10), SizingVerdict::NoData);
        assert_eq!(Sizing::verdict_for(15, 10), SizingVerdict::TooSmall);
        assert_eq!(Sizing::verdict_for(15, 30), SizingVerdict::AboutRight);
        assert_eq!(Sizing::verdict_for(15, 31), SizingVerdict::TooLarge);
        assert_eq!(Sizing::verdict_for(1, 0), SizingVerdict::TooSmall);
        assert_eq!(Sizing::verdict_for(1, 2), SizingVerdict::AboutRight);
        assert_eq!(Sizing::verdict_for(1, 3), SizingVerdict::TooLarge);
    }

    use super::test_capture::Capture;

    /// One warning per transition into firing, at most one per kind per
    /// window; one info per logged firing that clears.
    #[test]
    fn transitions_log_rate_limited_warnings_and_recoveries() {
        let capture = Capture::default();
        let mut m = alerting_on_any_wait();
        let mut f = Feed::new(10);
        let i = AlertKind::AcquireWait.idx();
        tracing::subscriber::with_default(capture.clone(), || {
            // Other tests of this binary may have hit these callsites
            // first, with no subscriber: make them ask ours again.
            tracing::callsite::rebuild_interest_cache();
            f.sample(&mut m, 0);
            f.waits(1, 5_000);
            f.sample(&mut m, 1_000);
            assert_eq!((m.warnings[i], m.recoveries[i]), (1, 0), "fires: logged");
            f.waits(200, 0);
            f.sample(&mut m, 2_000);
            assert_eq!((m.warnings[i], m.recoveries[i]), (1, 1), "clears: logged");
            f.waits(10, 5_000); // 11 slow in 211: rank 209 is slow
            f.sample(&mut m, 3_000);
            assert!(firing(&m, AlertKind::AcquireWait).is_some());
            assert_eq!(m.warnings[i], 1, "fires again within the window: silent");
            f.waits(2_000, 0);
            f.sample(&mut m, 4_000);
            assert_eq!(firing(&m, AlertKind::AcquireWait), None);
            assert_eq!(m.recoveries[i], 1, "its firing was not logged");
            f.waits(1, 5_000);
            f.sample(&mut m, 40_000);
            assert_eq!(m.warnings[i], 2, "a window after the last warning: logged");
        });
        let log = capture.0.lock().unwrap();
        let levels: Vec<_> = log.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            levels,
            [
                tracing::Level::WARN,
                tracing::Level::INFO,
                tracing::Level::WARN
            ]
        );
        for (_, fields) in log.iter() {
            assert!(fields.contains("pool=db "), "{fields}");
            assert!(fields.contains("alert=\"acquire_wait\""), "{fields}");
        }
        assert!(log[0].1.contains("threshold=1e-6"), "{}", log[0].1);
    }

    /// The warning of an alert that fires again less than a window after
    /// its last warning stays silent, however late in the pool's life.
    #[test]
    fn a_second_firing_within_a_window_of_the_warning_is_silent_late_too() {
        let mut m = alerting_on_any_wait();
        let mut f = Feed::new(10);
        let i = AlertKind::AcquireWait.idx();
        f.sample(&mut m, 100_000);
        f.waits(1, 5_000);
        f.sample(&mut m, 101_000);
        assert_eq!(m.warnings[i], 1, "fires: logged");
        f.waits(200, 0);
        f.sample(&mut m, 102_000);
        assert!(firing(&m, AlertKind::AcquireWait).is_none());
        f.waits(10, 5_000);
        f.sample(&mut m, 103_000);
        assert!(firing(&m, AlertKind::AcquireWait).is_some());
        assert_eq!(m.warnings[i], 1, "fires again within the window: silent");
    }

    /// Churn fires above `max_size` opens per `churn_alert` over the
    /// window, not at it: the first feed is exactly at the threshold and
    /// quiet, one open more fires, and the value is in opens per second.
    #[test]
    fn churn_fires_above_max_size_opens_per_period_not_at_it() {
        let (mut m, mut f) = started(2);
        f.connects += 6;
        f.sample(&mut m, 1_000);
        assert_eq!(firing(&m, AlertKind::Churn), None, "at the threshold");
        f.connects += 1;
        f.sample(&mut m, 2_000);
        let a = firing(&m, AlertKind::Churn).expect("above it");
        assert!((a.value - 7.0 / 30.0).abs() < 1e-9, "{a:?}");
        assert!((a.threshold - 0.2).abs() < 1e-9, "{a:?}");
    }

    /// What a second saw leaves the window with it, every figure alike:
    /// once a busy second has left, health and sizing read only what the
    /// window still holds.
    #[test]
    fn every_figure_leaves_the_window_with_its_second() {
        let (mut m, mut f) = started(10);
        // A busy second at the start of the window.
        f.waits(100, 0);
        f.hold_count += 100;
        f.hold_sum += 100 * 50 * MS;
        f.failed += 4;
        f.connects += 20;
        f.connect_failures += 3;
        f.epoch = 1;
        f.sample(&mut m, 1_000);
        // A quieter one at its end: fewer and shorter holds, failed gets
        // and failed connects, and no connect that succeeded.
        f.waits(10, 0);
        f.hold_count += 10;
        f.hold_sum += 10 * 20 * MS;
        f.failed += 2;
        f.connect_failures += 5;
        f.sample(&mut m, 40_000);
        let s = m.sizing();
        assert_eq!(s.acquire_rate_per_s, 10.0 / 30.0, "{s:?}");
        assert_eq!(s.mean_hold, Duration::from_millis(20), "{s:?}");
        let h = m.health();
        assert_eq!(
            firing(&m, AlertKind::Exhaustion).unwrap().value,
            2.0,
            "{h:?}"
        );
        assert_eq!(
            firing(&m, AlertKind::BackendDown).unwrap().value,
            5.0,
            "{h:?}"
        );
        assert_eq!(firing(&m, AlertKind::Churn), None, "{h:?}");
    }

    /// Two samples within one second add up: the window's acquire waits
    /// count both, in the same slot.
    #[test]
    fn two_samples_in_one_second_add_up() {
        let (mut m, mut f) = started(10);
        f.waits(5, 0);
        f.sample(&mut m, 1_000);
        f.waits(5, 0);
        f.sample(&mut m, 1_500);
        assert_eq!(m.window_p99(), (0, 10));
    }
}
