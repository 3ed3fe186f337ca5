//! What the pool can tell about itself: the [`State`] snapshot, the
//! [`Metrics`] counters and histograms, the `Counters` behind them, and
//! (feature `metrics`) their export through the `metrics` facade, run only
//! when `Pool::export_metrics` is called.
//!
//! Invariants kept:
//! - Shared counters and histograms are bumped only on cold paths
//!   (connect, close, wait, check, error), never on the uncontended
//!   acquire/release path. That path counts its hits in per-slot counters
//!   written only by the slot's owner (plain load + store, `Holding` in
//!   `slots.rs`), summed at snapshot time and folded into the acquire-wait
//!   histogram as zeros (`HistogramSnapshot::add_zeros`).
//! - A holding of one tick (a millisecond of the cached clock) or more is
//!   recorded in the striped hold histogram on release (stripe: the slot
//!   index), a cost next to that much use; shorter ones are derived at
//!   snapshot time (`wait_and_hold_into`), so a release pays one load.
//! - A counter that every waiting `get` bumps (`waits`) is striped like
//!   the histograms ([`Striped`], stripe: the thread's home shard), so
//!   that threads parking at the cap do not share its line.
//! - Every counter only grows; snapshots only load, never blocking a
//!   recorder. Counters are plain std atomics even under loom: they order
//!   nothing.

// Plain std atomics even under loom: counters order nothing, and keeping
// them out of the model keeps its state space to the protocol.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::histogram::{Histogram, HistogramSnapshot};

/// A cheap snapshot of the pool. Exact when the pool is quiescent; under
/// concurrency each field is read separately and may be off by the
/// operations in flight.
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// let pool = Pool::builder(M).build().unwrap();
/// let s = pool.state();
/// assert_eq!((s.size, s.idle, s.in_use, s.waiting), (0, 0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// Places taken: open connections plus connects in flight.
    pub size: usize,
    /// Connections in the idle set.
    pub idle: usize,
    /// Connections handed out (or being handed over or checked).
    pub in_use: usize,
    /// Callers parked in `get`.
    pub waiting: usize,
}

/// Counters and time histograms since the pool was built, and the current
/// [`State`].
///
/// `opened == closed + detached + state.size` (connects in flight aside)
/// when the pool is quiescent; `closed` is the sum of the close reasons
/// (`closed_idle + closed_lifetime + broken + check_failures +
/// closed_check_cancelled + closed_pool_closed + closed_cleanup +
/// closed_overflow`). Histograms are in
/// nanoseconds, each value read back within
/// [`HistogramSnapshot::RELATIVE_ERROR`](crate::HistogramSnapshot::RELATIVE_ERROR) (1/64); the hold time is measured on the
/// pool's cached clock, in whole milliseconds. Not `Copy` (the histograms
/// own their buckets).
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(M).build().unwrap();
/// drop(pool.get().await.unwrap());
/// let m = pool.metrics();
/// assert_eq!(m.opened, 1);
/// assert_eq!(m.state.idle, 1);
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The current snapshot.
    pub state: State,
    /// Connections opened by `Manager::connect`.
    pub opened: u64,
    /// Connections closed by the pool (broken, expired, failed a check,
    /// closed pool).
    pub closed: u64,
    /// Connections taken out with [`Pooled::detach`](crate::Pooled::detach).
    pub detached: u64,
    /// `connect` calls that returned an error.
    pub connect_errors: u64,
    /// `connect` calls that exceeded `connect_timeout`.
    pub connect_timeouts: u64,
    /// Of `connect_errors`, those the manager called permanent
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent)): returned
    /// at once, not retried.
    pub permanent_errors: u64,
    /// `get`s that failed fast with
    /// [`PoolError::Unavailable`](crate::PoolError::Unavailable) while the
    /// backend was down.
    pub unavailable: u64,
    /// Probes started while the backend was down, one at a time
    /// ([`Builder::breaker`](crate::Builder::breaker)); a probe that finds
    /// every place taken connects nothing and is tried again later.
    pub probes: u64,
    /// The breaker is open: the backend is down.
    pub backend_down: bool,
    /// How long the backend has been down (zero while it is up).
    pub down_for: std::time::Duration,
    /// `get`s that parked as waiters.
    pub waits: u64,
    /// `get`s that returned `Timeout`.
    pub timeouts: u64,
    /// Of those, parked `get`s timed out by the pool's background task
    /// (no Tokio timer armed). The others ran out of time connecting or
    /// checking, or waited with a timer of their own (`background(false)`,
    /// or before the task's first run).
    pub timeouts_swept: u64,
    /// `get`s refused with `Exhausted`.
    pub exhausted: u64,
    /// Connections closed for `idle_timeout` or `max_lifetime`.
    pub expired: u64,
    /// `Manager::check` calls that failed, hung past `check_timeout` or
    /// panicked (each closed its connection).
    pub check_failures: u64,
    /// Checks whose caller went away (cancelled, or its deadline passed)
    /// before they finished: they finish without it, and a passing
    /// connection goes back to the pool. Not failures.
    pub checks_detached: u64,
    /// Connections closed because they were broken: returned broken
    /// ([`Manager::is_broken`](crate::Manager::is_broken),
    /// [`Pooled::mark_broken`](crate::Pooled::mark_broken), a panic while
    /// held) or found broken by `is_broken` when handed out from the idle
    /// set. One broken connection closes that connection only.
    pub broken: u64,
    /// Connections reported as held past `leak_threshold`, each counted
    /// once however often it is reported again.
    pub leaks: u64,
    /// Maintenance passes run.
    pub maintenance_passes: u64,
    /// Acquisitions served by an idle connection on the fast path
    /// (`try_get`, or a `get` that neither waited, connected nor checked).
    pub hits: u64,
    /// `get`s that opened a connection for themselves.
    pub acquire_connects: u64,
    /// Of `closed`: idle longer than `idle_timeout`.
    pub closed_idle: u64,
    /// Of `closed`: past `max_lifetime`. (`expired` is
    /// `closed_idle + closed_lifetime`.)
    pub closed_lifetime: u64,
    /// Of `closed`: a check whose caller went away could not finish (no
    /// runtime left to run it on).
    pub closed_check_cancelled: u64,
    /// Of `closed`: closed because the pool was closed.
    pub closed_pool_closed: u64,
    /// Of `closed`: returned while `max_idle` connections were idle and
    /// nobody waited ([`Builder::max_idle`](crate::Builder::max_idle)).
    pub closed_overflow: u64,
    /// Of `closed`: a clean-up on return
    /// ([`Manager::cleanup`](crate::Manager::cleanup)) failed, outlasted
    /// `check_timeout`, panicked, or had no runtime to run on.
    pub closed_cleanup: u64,
    /// Clean-ups on return started (each off the caller's path).
    pub cleanups: u64,
    /// Keepalive checks started ([`Builder::keepalive`](crate::Builder::keepalive));
    /// a failed one counts in `check_failures` too.
    pub keepalive_checks: u64,
    /// Connections opened in the background to replace one nearing
    /// `max_lifetime` ([`Builder::replace_before_expiry`](crate::Builder::replace_before_expiry)).
    pub replaced: u64,
    /// Of `timeouts`: timed out waiting for a connection to be returned.
    pub timeouts_waiting: u64,
    /// Of `timeouts`: timed out connecting.
    pub timeouts_connecting: u64,
    /// Of `timeouts`: timed out while a connection was being checked.
    pub timeouts_checking: u64,
    /// Acquire wait time of every successful acquisition, ns: fast-path
    /// hits as 0, the others (waited, connected or checked) as measured.
    pub acquire_wait: HistogramSnapshot,
    /// Time of each successful `Manager::connect`, ns.
    pub connect_time: HistogramSnapshot,
    /// How long each connection was held (hand-out to return), ns, in whole
    /// milliseconds of the pool's cached clock. Its zeros (holdings under a
    /// millisecond) are derived: acquisitions − in use − detached − the
    /// holdings recorded, exact when the pool is quiescent.
    pub hold_time: HistogramSnapshot,
    /// Time of each `Manager::check` that finished (passed or failed), ns.
    pub check_time: HistogramSnapshot,
}

impl Metrics {
    /// Adds one key's counters to a keyed pool's aggregate: counts summed,
    /// histograms merged, the state summed; down if any key is (for the
    /// longest).
    pub(crate) fn absorb(&mut self, o: &Metrics) {
        self.state.size += o.state.size;
        self.state.idle += o.state.idle;
        self.state.in_use += o.state.in_use;
        self.state.waiting += o.state.waiting;
        self.opened += o.opened;
        self.closed += o.closed;
        self.detached += o.detached;
        self.connect_errors += o.connect_errors;
        self.connect_timeouts += o.connect_timeouts;
        self.permanent_errors += o.permanent_errors;
        self.unavailable += o.unavailable;
        self.probes += o.probes;
        self.waits += o.waits;
        self.timeouts += o.timeouts;
        self.timeouts_swept += o.timeouts_swept;
        self.exhausted += o.exhausted;
        self.expired += o.expired;
        self.check_failures += o.check_failures;
        self.checks_detached += o.checks_detached;
        self.broken += o.broken;
        self.leaks += o.leaks;
        self.maintenance_passes += o.maintenance_passes;
        self.hits += o.hits;
        self.acquire_connects += o.acquire_connects;
        self.closed_idle += o.closed_idle;
        self.closed_lifetime += o.closed_lifetime;
        self.closed_check_cancelled += o.closed_check_cancelled;
        self.closed_pool_closed += o.closed_pool_closed;
        self.closed_overflow += o.closed_overflow;
        self.closed_cleanup += o.closed_cleanup;
        self.cleanups += o.cleanups;
        self.keepalive_checks += o.keepalive_checks;
        self.replaced += o.replaced;
        self.timeouts_waiting += o.timeouts_waiting;
        self.timeouts_connecting += o.timeouts_connecting;
        self.timeouts_checking += o.timeouts_checking;
        self.backend_down |= o.backend_down;
        self.down_for = self.down_for.max(o.down_for);
        self.acquire_wait.merge(&o.acquire_wait);
        self.connect_time.merge(&o.connect_time);
        self.hold_time.merge(&o.hold_time);
        self.check_time.merge(&o.check_time);
    }
}

/// The pool's counters (all relaxed: they order nothing).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connecting: AtomicUsize,
    pub(crate) opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) detached: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) connect_timeouts: AtomicU64,
    pub(crate) permanent_errors: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) probes: AtomicU64,
    /// `get`s that parked: bumped by every waiting `get`, so striped.
    pub(crate) waits: Striped,
    pub(crate) timeouts: AtomicU64,
    pub(crate) timeouts_swept: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) check_failures: AtomicU64,
    pub(crate) checks_detached: AtomicU64,
    pub(crate) broken: AtomicU64,
    pub(crate) leaks: AtomicU64,
    pub(crate) acquire_connects: AtomicU64,
    pub(crate) closed_idle: AtomicU64,
    pub(crate) closed_lifetime: AtomicU64,
    pub(crate) closed_check_cancelled: AtomicU64,
    pub(crate) closed_pool_closed: AtomicU64,
    pub(crate) closed_overflow: AtomicU64,
    pub(crate) closed_cleanup: AtomicU64,
    pub(crate) cleanups: AtomicU64,
    pub(crate) keepalive_checks: AtomicU64,
    pub(crate) replaced: AtomicU64,
    pub(crate) timeouts_waiting: AtomicU64,
    pub(crate) timeouts_connecting: AtomicU64,
    pub(crate) timeouts_checking: AtomicU64,
    /// Slow-path acquisitions (waited, connected or checked).
    pub(crate) wait: Histogram,
    pub(crate) connect: Histogram,
    /// Holdings of at least one tick (the others are counted per slot).
    pub(crate) hold: Histogram,
    pub(crate) check: Histogram,
}

/// Bumps a counter by one.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A counter that many threads bump at once: one cache-padded cell per
/// stripe (as many as a histogram's, `histogram::stripe_count`), summed
/// when read. The sum only grows, and is exact while no bump is in flight.
#[derive(Debug)]
pub(crate) struct Striped {
    cells: Box<[CachePadded<AtomicU64>]>,
    /// `cells.len() - 1`.
    mask: usize,
}

impl Striped {
    /// A counter with `stripes` cells (`histogram::stripe_count`).
    pub(crate) fn with_stripes(stripes: usize) -> Self {
        let n = crate::histogram::stripe_count(stripes);
        Self {
            cells: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            mask: n - 1,
        }
    }

    /// Bumps the cell of `stripe` (taken modulo the stripe count).
    #[inline]
    pub(crate) fn bump_in(&self, stripe: usize) {
        self.cells[stripe & self.mask].fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of the cells.
    pub(crate) fn get(&self) -> u64 {
        self.cells
            .iter()
            .fold(0, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

impl Default for Striped {
    fn default() -> Self {
        Self::with_stripes(1)
    }
}

impl Counters {
    /// Counters with `stripes` stripes (at most 8: each histogram stripe
    /// is 9.5 KiB, and all are recorded on slow paths only) for what many
    /// threads record at once (acquire wait, hold time, waits).
    pub(crate) fn new(stripes: usize) -> Self {
        let stripes = stripes.min(8);
        Self {
            wait: Histogram::with_stripes(stripes),
            hold: Histogram::with_stripes(stripes),
            waits: Striped::with_stripes(stripes),
            ..Self::default()
        }
    }

    /// `snapshot`'s histograms, into reused buffers (allocating nothing):
    /// the acquire-wait one, with the `hits` zeros folded in, and the hold
    /// one, with the holdings under one tick as zeros. Those are not
    /// counted anywhere (a release pays one load); they are derived: every
    /// acquisition (the wait histogram's count) is returned, detached or
    /// still held (`in_use`), and a return of a tick or more is in the
    /// hold histogram. Exact when quiescent; under load off by the
    /// acquisitions in flight.
    pub(crate) fn wait_and_hold_into(
        &self,
        hits: u64,
        in_use: usize,
        wait: &mut HistogramSnapshot,
        hold: &mut HistogramSnapshot,
    ) {
        self.hold.snapshot_into(hold);
        self.wait.snapshot_into(wait);
        wait.add_zeros(hits);
        let returned = wait
            .count()
            .saturating_sub(in_use as u64)
            .saturating_sub(self.detached.load(Ordering::Relaxed));
        hold.add_zeros(returned.saturating_sub(hold.count()));
    }

    /// The pool's metrics; `hits`: the per-slot sum.
    pub(crate) fn snapshot(&self, state: State, passes: u64, hits: u64) -> Metrics {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut acquire_wait = HistogramSnapshot::default();
        let mut hold_time = HistogramSnapshot::default();
        self.wait_and_hold_into(hits, state.in_use, &mut acquire_wait, &mut hold_time);
        Metrics {
            hits,
            acquire_connects: r(&self.acquire_connects),
            closed_idle: r(&self.closed_idle),
            closed_lifetime: r(&self.closed_lifetime),
            closed_check_cancelled: r(&self.closed_check_cancelled),
            closed_pool_closed: r(&self.closed_pool_closed),
            closed_overflow: r(&self.closed_overflow),
            closed_cleanup: r(&self.closed_cleanup),
            cleanups: r(&self.cleanups),
            keepalive_checks: r(&self.keepalive_checks),
            replaced: r(&self.replaced),
            timeouts_waiting: r(&self.timeouts_waiting),
            timeouts_connecting: r(&self.timeouts_connecting),
            timeouts_checking: r(&self.timeouts_checking),
            acquire_wait,
            connect_time: self.connect.snapshot(),
            hold_time,
            check_time: self.check.snapshot(),
            state,
            opened: r(&self.opened),
            closed: r(&self.closed),
            detached: r(&self.detached),
            connect_errors: r(&self.connect_errors),
            connect_timeouts: r(&self.connect_timeouts),
            permanent_errors: r(&self.permanent_errors),
            unavailable: r(&self.unavailable),
            probes: r(&self.probes),
            backend_down: false,
            down_for: std::time::Duration::ZERO,
            waits: self.waits.get(),
            timeouts: r(&self.timeouts),
            timeouts_swept: r(&self.timeouts_swept),
            exhausted: r(&self.exhausted),
            expired: r(&self.expired),
            check_failures: r(&self.check_failures),
            checks_detached: r(&self.checks_detached),
            broken: r(&self.broken),
            leaks: r(&self.leaks),
            maintenance_passes: passes,
        }
    }
}

/// Exports `m` (and the pool's health and sizing) through the `metrics`
/// facade under stable names, each with a `pool` label (`Pool::export_metrics`;
/// names and meanings in the README, "Monitoring"). Counters are set to their
/// absolute values, so exporting twice counts nothing twice. Histograms
/// are exported as summaries: a gauge per quantile (`quantile` label: 0.5,
/// 0.9, 0.99, 0.999, and 1 for the maximum), in seconds, with `_sum`
/// (seconds) and `_count`.
#[cfg(feature = "metrics")]
pub(crate) fn export(
    pool: &str,
    m: &Metrics,
    health: &crate::health::Health,
    sizing: &crate::health::Sizing,
    max_size: usize,
) {
    let name = pool.to_owned();
    let counter = |key: &'static str, v: u64| {
        ::metrics::counter!(key, "pool" => name.clone()).absolute(v);
    };
    counter("latchless_connections_opened_total", m.opened);
    counter("latchless_connections_detached_total", m.detached);
    counter("latchless_connect_errors_total", m.connect_errors);
    counter("latchless_connect_timeouts_total", m.connect_timeouts);
    counter("latchless_acquire_hits_total", m.hits);
    counter("latchless_acquire_waits_total", m.waits);
    counter("latchless_acquire_connects_total", m.acquire_connects);
    counter("latchless_acquire_exhausted_total", m.exhausted);
    counter("latchless_checks_detached_total", m.checks_detached);
    counter("latchless_leaks_total", m.leaks);
    counter("latchless_maintenance_passes_total", m.maintenance_passes);
    counter(
        "latchless_connect_permanent_errors_total",
        m.permanent_errors,
    );
    counter("latchless_acquire_unavailable_total", m.unavailable);
    counter("latchless_connect_probes_total", m.probes);
    counter("latchless_cleanups_total", m.cleanups);
    counter("latchless_keepalive_checks_total", m.keepalive_checks);
    counter("latchless_connections_replaced_total", m.replaced);
    for (reason, v) in [
        ("idle_timeout", m.closed_idle),
        ("lifetime", m.closed_lifetime),
        ("broken", m.broken),
        ("check_failed", m.check_failures),
        ("check_cancelled", m.closed_check_cancelled),
        ("pool_closed", m.closed_pool_closed),
        ("overflow", m.closed_overflow),
        ("cleanup_failed", m.closed_cleanup),
    ] {
        ::metrics::counter!("latchless_connections_closed_total", "pool" => name.clone(), "reason" => reason)
            .absolute(v);
    }
    for (kind, v) in [
        ("waiting", m.timeouts_waiting),
        ("connecting", m.timeouts_connecting),
        ("checking", m.timeouts_checking),
    ] {
        ::metrics::counter!("latchless_acquire_timeouts_total", "pool" => name.clone(), "kind" => kind)
            .absolute(v);
    }
    let gauge = |key: &'static str, v: f64| {
        ::metrics::gauge!(key, "pool" => name.clone()).set(v);
    };
    gauge("latchless_connections", m.state.size as f64);
    gauge("latchless_connections_idle", m.state.idle as f64);
    gauge("latchless_connections_in_use", m.state.in_use as f64);
    gauge("latchless_waiters", m.state.waiting as f64);
    gauge("latchless_max_size", max_size as f64);
    gauge(
        "latchless_backend_down",
        f64::from(u8::from(m.backend_down)),
    );
    gauge("latchless_backend_down_seconds", m.down_for.as_secs_f64());
    gauge(
        "latchless_sizing_recommended_connections",
        sizing.recommended as f64,
    );
    gauge(
        "latchless_acquire_rate_per_second",
        sizing.acquire_rate_per_s,
    );
    for kind in crate::health::AlertKind::ALL {
        let firing = f64::from(u8::from(health.alert(kind).is_some()));
        ::metrics::gauge!("latchless_alert_firing", "pool" => name.clone(), "alert" => kind.name())
            .set(firing);
    }
    for (keys, h) in [
        (
            [
                "latchless_acquire_wait_seconds",
                "latchless_acquire_wait_seconds_sum",
                "latchless_acquire_wait_seconds_count",
            ],
            &m.acquire_wait,
        ),
        (
            [
                "latchless_connect_seconds",
                "latchless_connect_seconds_sum",
                "latchless_connect_seconds_count",
            ],
            &m.connect_time,
        ),
        (
            [
                "latchless_hold_seconds",
                "latchless_hold_seconds_sum",
                "latchless_hold_seconds_count",
            ],
            &m.hold_time,
        ),
        (
            [
                "latchless_check_seconds",
                "latchless_check_seconds_sum",
                "latchless_check_seconds_count",
            ],
            &m.check_time,
        ),
    ] {
        summary(&name, keys, h);
    }
}

/// One histogram as a summary: quantile gauges, `_sum` and `_count`
/// (`keys`: the three names).
#[cfg(feature = "metrics")]
fn summary(pool: &str, keys: [&'static str; 3], h: &HistogramSnapshot) {
    let [key, sum, count] = keys;
    let secs = |ns: u64| ns as f64 / 1e9;
    for (q, v) in [
        ("0.5", h.p50()),
        ("0.9", h.p90()),
        ("0.99", h.p99()),
        ("0.999", h.p999()),
        ("1", h.max()),
    ] {
        ::metrics::gauge!(key, "pool" => pool.to_owned(), "quantile" => q).set(secs(v));
    }
    ::metrics::gauge!(sum, "pool" => pool.to_owned()).set(secs(h.sum()));
    ::metrics::counter!(count, "pool" => pool.to_owned()).absolute(h.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_striped_counter_sums_every_stripes_bumps_and_wraps_its_index() {
        let c = Striped::with_stripes(3);
        assert_eq!(c.cells.len(), 4, "rounded up to a power of two");
        for stripe in 0..9 {
            c.bump_in(stripe);
        }
        assert_eq!(c.get(), 9);
        assert_eq!(c.cells[0].load(Ordering::Relaxed), 3, "0, 4 and 8");
        assert_eq!(Counters::new(64).waits.cells.len(), 8, "the counters' cap");
        assert_eq!(Striped::default().cells.len(), 1);
    }

    /// Metrics whose every count is `f` of its place (1, 2, …), with one
    /// time of `ns` in each histogram.
    fn filled(f: impl Fn(u64) -> u64, ns: u64, down: bool, down_for: Duration) -> Metrics {
        let mut i = 0;
        let mut next = || {
            i += 1;
            f(i)
        };
        let h = |ns: u64| {
            let h = Histogram::new();
            h.record(ns);
            h.snapshot()
        };
        Metrics {
            state: State {
                size: next() as usize,
                idle: next() as usize,
                in_use: next() as usize,
                waiting: next() as usize,
            },
            opened: next(),
            closed: next(),
            detached: next(),
            connect_errors: next(),
            connect_timeouts: next(),
            permanent_errors: next(),
            unavailable: next(),
            probes: next(),
            backend_down: down,
            down_for,
            waits: next(),
            timeouts: next(),
            timeouts_swept: next(),
            exhausted: next(),
            expired: next(),
            check_failures: next(),
            checks_detached: next(),
            broken: next(),
            leaks: next(),
            maintenance_passes: next(),
            hits: next(),
            acquire_connects: next(),
            closed_idle: next(),
            closed_lifetime: next(),
            closed_check_cancelled: next(),
            closed_pool_closed: next(),
            closed_overflow: next(),
            closed_cleanup: next(),
            cleanups: next(),
            keepalive_checks: next(),
            replaced: next(),
            timeouts_waiting: next(),
            timeouts_connecting: next(),
            timeouts_checking: next(),
            acquire_wait: h(ns),
            connect_time: h(ns),
            hold_time: h(ns),
            check_time: h(ns),
        }
    }

    /// A keyed pool's metrics are its keys' together: every count and
    /// the state summed, every histogram holding both keys' times, down
    /// if any key is, for the longest.
    #[test]
    fn an_aggregate_sums_every_count_and_merges_every_histogram() {
        let one = filled(|i| i, 1_000, false, Duration::from_secs(3));
        let two = filled(|i| 2 * i + 3, 5_000, true, Duration::from_secs(5));
        let mut all = Metrics::default();
        all.absorb(&one);
        all.absorb(&two);
        let mut want = filled(|i| 3 * i + 3, 0, true, Duration::from_secs(5));
        for h in [
            &all.acquire_wait,
            &all.connect_time,
            &all.hold_time,
            &all.check_time,
        ] {
            assert_eq!(h.count(), 2, "{all:?}");
            // Each read back within the histograms' relative error.
            assert!(h.min().abs_diff(1_000) <= 1_000 / 32, "{h:?}");
            assert!(h.max().abs_diff(5_000) <= 5_000 / 32, "{h:?}");
        }
        want.acquire_wait = all.acquire_wait.clone();
        want.connect_time = all.connect_time.clone();
        want.hold_time = all.hold_time.clone();
        want.check_time = all.check_time.clone();
        assert_eq!(all, want);
        // Down if any key is, whichever comes first.
        let mut all = Metrics::default();
        all.absorb(&two);
        all.absorb(&one);
        assert!(all.backend_down);
        assert_eq!(all.down_for, Duration::from_secs(5));
    }
}
