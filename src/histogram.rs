//! A lock-free log-linear histogram of durations in nanoseconds (crate
//! private), and the plain [`HistogramSnapshot`] it hands out (public: the
//! pool's metrics carry snapshots). The bucket layout, the error bound
//! (1/64 relative) and the cost of a record are documented on
//! [`Histogram`], and for users on [`HistogramSnapshot`]; this is how they
//! are kept.
//!
//! A value's bucket is `(shift << 5) + (v >> shift)` with `shift` the
//! number of bits above the 6th: the identity below 64, then 32 buckets
//! per power of two (`index`, branch-free apart from the range clamp).
//! Bucket bounds and midpoints are computed back from the index, never
//! stored.
//!
//! # Invariants kept
//!
//! - **Snapshots never block recorders**: a snapshot only loads counters;
//!   there is no lock and no retry loop anywhere.
//! - **Counts are monotone**: every counter only grows (the sum wraps at
//!   2^64 ns, 584 years of accumulated time; [`HistogramSnapshot::since`]
//!   subtracts it wrapping, so windows stay right). Successive snapshots
//!   taken by one thread never see a bucket go down.
//! - **No allocation after construction**; a snapshot allocates its own
//!   buckets, [`Histogram::snapshot_into`] reuses a snapshot's.
//! - **Consistency under concurrency**: each counter is read once, so a
//!   snapshot taken while recorders run may miss, or half-see, records in
//!   flight (a bucket counted whose sum is not yet added). It is exact once
//!   recorders are quiescent; its `max` is kept inside its highest bucket.
//!
//! Counters are plain std atomics even in loom builds, like the pool's
//! other counters (`metrics.rs`): they order nothing, and a modelled atomic
//! per bucket, per stripe, would only blow up a model's state space.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Linear sub-buckets per power of two: 2^5 = 32.
const SUB_BITS: u32 = 5;
/// Highest bucketed bit: values below 2^42 ns.
const TOP_BIT: u32 = 41;
/// Buckets per stripe.
const BUCKETS: usize = ((TOP_BIT - SUB_BITS + 2) as usize) << SUB_BITS;
/// The largest value with a bucket of its own range.
const MAX_TRACKED: u64 = (1 << (TOP_BIT + 1)) - 1;
/// The most stripes a histogram has.
const MAX_STRIPES: usize = 64;

/// How many stripes a striped recorder gets for `stripes` asked:
/// rounded up to a power of two (so that a stripe index is masked, not
/// divided), at least 1, at most `MAX_STRIPES`.
pub(crate) fn stripe_count(stripes: usize) -> usize {
    stripes.clamp(1, MAX_STRIPES).next_power_of_two()
}

/// The bucket of `v` (values past `MAX_TRACKED` share the top bucket).
/// Branch-free apart from the clamp: `shift` is how many low bits the
/// bucket ignores (0 below 64).
#[inline(always)]
const fn index(v: u64) -> usize {
    let v = if v > MAX_TRACKED { MAX_TRACKED } else { v };
    let high = 63 - (v | 1).leading_zeros();
    let shift = high.saturating_sub(SUB_BITS);
    ((shift as usize) << SUB_BITS) + (v >> shift) as usize
}

/// How many low bits bucket `i` ignores (its width is `1 << shift`).
#[inline]
const fn shift_of(i: usize) -> u32 {
    ((i >> SUB_BITS) as u32).saturating_sub(1)
}

/// The smallest value in bucket `i`.
#[inline]
const fn lower(i: usize) -> u64 {
    let shift = shift_of(i);
    ((i - ((shift as usize) << SUB_BITS)) as u64) << shift
}

/// The largest value in bucket `i` (the top bucket takes everything above).
#[inline]
const fn upper(i: usize) -> u64 {
    if i == BUCKETS - 1 {
        u64::MAX
    } else {
        lower(i) + (1 << shift_of(i)) - 1
    }
}

/// The value bucket `i` reads back as: its midpoint (exact below 64 ns).
#[inline]
const fn midpoint(i: usize) -> u64 {
    lower(i) + ((1u64 << shift_of(i)) >> 1)
}

/// One stripe: the counters one group of recorders writes.
struct Stripe {
    /// Sum of the values recorded, wrapping.
    sum: AtomicU64,
    /// The largest value recorded.
    max: AtomicU64,
    counts: [AtomicU64; BUCKETS],
}

impl Stripe {
    fn new() -> Self {
        Self {
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            counts: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

/// A lock-free log-linear histogram of durations in nanoseconds.
///
/// **Buckets.** HdrHistogram-style: values below 64 ns have one bucket
/// each (exact); above that, every power-of-two range `[2^h, 2^(h+1))` is
/// split into 32 linear sub-buckets of width `2^(h-5)`, at most 1/32 of
/// the range's start. A value reads back as its bucket's midpoint, so
/// every value read back (quantiles, `min`) is within
/// [`RELATIVE_ERROR`](HistogramSnapshot::RELATIVE_ERROR) = 1/64 (1.5625 %) of the exact
/// one. Values up to [`MAX_TRACKED`](HistogramSnapshot::MAX_TRACKED) = 2^42 − 1 ns
/// (about 73 minutes) are bucketed; larger ones share the top bucket
/// (their sum and the maximum stay exact, their quantiles saturate).
/// That is [`BUCKETS`](Self::BUCKETS) = 1216 counters, 9.5 KiB per stripe.
///
/// **Recording** ([`record_in`](Self::record_in)) is one relaxed
/// `fetch_add` on the value's bucket; a non-zero value adds a relaxed
/// `fetch_add` on the sum and a relaxed load of the maximum, plus a
/// `fetch_max` only for a new maximum. The count is the buckets' sum, added
/// up by snapshots. Nothing allocates after construction.
///
/// **Stripes.** The counters come in a power-of-two number of cache-padded
/// copies; a recorder names its stripe (e.g. its shard), so recorders on
/// different stripes never write the same cache line.
///
/// **Snapshots** ([`snapshot`](Self::snapshot)) only load counters: they
/// never block or retry, and never make a recorder wait. Every counter only
/// grows, so successive snapshots taken by one thread never see a bucket
/// go down; one taken while recorders run may miss records in flight.
pub(crate) struct Histogram {
    stripes: Box<[CachePadded<Stripe>]>,
    /// `stripes.len() - 1` (a power of two minus one).
    mask: usize,
}

impl Histogram {
    /// Counters per stripe (each 8 bytes).
    pub(crate) const BUCKETS: usize = BUCKETS;

    /// A histogram with one stripe, for values recorded on cold paths.
    pub(crate) fn new() -> Self {
        Self::with_stripes(1)
    }

    /// A histogram with `stripes` cache-padded copies of its counters,
    /// rounded up to a power of two and capped at `MAX_STRIPES`
    /// (0 counts as 1). Allocates `stripes × 9.5 KiB` now and nothing later.
    pub(crate) fn with_stripes(stripes: usize) -> Self {
        let n = stripe_count(stripes);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(CachePadded::new(Stripe::new()));
        }
        Self {
            stripes: v.into_boxed_slice(),
            mask: n - 1,
        }
    }

    /// How many stripes the histogram has.
    #[cfg(test)]
    pub(crate) fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// Records `ns` in stripe 0.
    #[inline]
    #[cfg(test)]
    pub(crate) fn record(&self, ns: u64) {
        self.record_in(0, ns);
    }

    /// Records `ns` in stripe `stripe` (taken modulo the stripe count, so
    /// any index works, e.g. a shard index). A zero costs one `fetch_add`.
    #[inline]
    pub(crate) fn record_in(&self, stripe: usize, ns: u64) {
        let s = &self.stripes[stripe & self.mask];
        s.counts[index(ns)].fetch_add(1, Ordering::Relaxed);
        if ns != 0 {
            s.sum.fetch_add(ns, Ordering::Relaxed);
            if ns > s.max.load(Ordering::Relaxed) {
                s.max.fetch_max(ns, Ordering::Relaxed);
            }
        }
    }

    /// Records a [`Duration`] in stripe `stripe` (saturating at `u64::MAX`
    /// nanoseconds).
    #[inline]
    pub(crate) fn record_duration(&self, stripe: usize, d: Duration) {
        self.record_in(stripe, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// A snapshot of everything recorded so far (allocates its buckets;
    /// see [`snapshot_into`](Self::snapshot_into) to reuse a buffer).
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut out = HistogramSnapshot::default();
        self.snapshot_into(&mut out);
        out
    }

    /// Overwrites `out` with a snapshot, allocating nothing (`out` already
    /// has its buckets). Only loads: never blocks or slows a recorder
    /// beyond sharing its cache lines.
    pub(crate) fn snapshot_into(&self, out: &mut HistogramSnapshot) {
        out.counts.fill(0);
        out.sum = 0;
        out.max = 0;
        for s in self.stripes.iter() {
            out.sum = out.sum.wrapping_add(s.sum.load(Ordering::Relaxed));
            out.max = out.max.max(s.max.load(Ordering::Relaxed));
            for (o, c) in out.counts.iter_mut().zip(s.counts.iter()) {
                *o += c.load(Ordering::Relaxed);
            }
        }
        out.count = out.counts.iter().sum();
        // Recorders bump the bucket before the maximum: a snapshot racing
        // one may see the bucket only. Keep `max` inside the highest bucket.
        out.max = match out.highest() {
            Some(top) => out.max.max(lower(top)),
            None => 0,
        };
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

/// A time histogram of the pool's at one moment ([`Metrics`](crate::Metrics)'
/// `acquire_wait`, `connect_time`, `hold_time`, `check_time`): plain
/// numbers, owned, cheap to query. All values are nanoseconds.
///
/// Quantiles use the nearest-rank definition: `quantile(q)` reads back the
/// ⌈q·n⌉-th smallest value recorded (the smallest for `q = 0`), as its
/// bucket's midpoint capped at [`max`](Self::max), so it is within
/// [`RELATIVE_ERROR`](Self::RELATIVE_ERROR) (1/64) of the exact one. `max` is exact
/// for a histogram's own snapshot; for a difference ([`since`](Self::since))
/// it is the upper bound of the highest bucket that grew, capped at the
/// later snapshot's maximum (never below the true maximum of the window,
/// at most 1/32 above it).
///
/// ```
/// # use latchless::{Manager, Pool};
/// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
/// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = Pool::builder(M).build().unwrap();
/// for _ in 0..4 {
///     drop(pool.get().await.unwrap());
/// }
/// let wait = pool.metrics().acquire_wait; // a snapshot, owned
/// assert_eq!(wait.count(), 4);
/// assert!(wait.min() <= wait.p50() && wait.p50() <= wait.max());
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub(crate) counts: Box<[u64]>,
    pub(crate) count: u64,
    pub(crate) sum: u64,
    pub(crate) max: u64,
}

impl Default for HistogramSnapshot {
    /// An empty snapshot (with its buckets allocated).
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl HistogramSnapshot {
    /// The bound on the relative error of every value read back
    /// ([`quantile`](Self::quantile), `min`, the `p*` shortcuts):
    /// `|read − exact| ≤ exact × 1/64`.
    ///
    /// ```
    /// assert_eq!(latchless::HistogramSnapshot::RELATIVE_ERROR, 0.015625);
    /// ```
    pub const RELATIVE_ERROR: f64 = 1.0 / (2u64 << SUB_BITS) as f64;

    /// The largest value (ns) bucketed within the error bound: 2^42 − 1,
    /// about 73 minutes. Larger values share the top bucket (their sum
    /// and the maximum stay exact, their quantiles saturate).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(Duration::from_nanos(latchless::HistogramSnapshot::MAX_TRACKED) > Duration::from_secs(3600));
    /// ```
    pub const MAX_TRACKED: u64 = MAX_TRACKED;

    /// How many values were recorded.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert_eq!(wait.count(), 2);
    /// # }
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing was recorded.
    ///
    /// ```
    /// assert!(latchless::HistogramSnapshot::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sum of the values recorded, exact (wrapping at 2^64 ns).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.sum() >= wait.max());
    /// # }
    /// ```
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The mean value (`sum / count`, rounded down; 0 when empty), exact.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert_eq!(wait.mean(), wait.sum() / 2);
    /// # }
    /// ```
    pub fn mean(&self) -> u64 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }

    /// The smallest value recorded, within the relative error (0 when
    /// empty). Same as `quantile(0.0)`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert_eq!(wait.min(), 0, "the hit");
    /// # }
    /// ```
    pub fn min(&self) -> u64 {
        self.quantile(0.0)
    }

    /// The largest value recorded (0 when empty): exact for a histogram's
    /// snapshot, a tight upper bound for a difference (see the type docs).
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.max() > 0, "the connect");
    /// # }
    /// ```
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q`-quantile (nearest rank, `q` clamped to `0..=1`, NaN read as
    /// 0), within [`RELATIVE_ERROR`](Self::RELATIVE_ERROR) of the exact one; 0 when
    /// empty.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.quantile(0.25) <= wait.quantile(0.75));
    /// # }
    /// ```
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = rank(q, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return midpoint(i).min(self.max);
            }
        }
        self.max
    }

    /// The median, `quantile(0.5)`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert_eq!(wait.p50(), 0, "the smaller of two");
    /// # }
    /// ```
    pub fn p50(&self) -> u64 {
        self.quantile(0.5)
    }

    /// `quantile(0.9)`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.p90() <= wait.max());
    /// # }
    /// ```
    pub fn p90(&self) -> u64 {
        self.quantile(0.9)
    }

    /// `quantile(0.99)`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.p99() <= wait.max());
    /// # }
    /// ```
    pub fn p99(&self) -> u64 {
        self.quantile(0.99)
    }

    /// `quantile(0.999)`.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert!(wait.p999() <= wait.max());
    /// # }
    /// ```
    pub fn p999(&self) -> u64 {
        self.quantile(0.999)
    }

    /// What was recorded after `earlier` (a snapshot of the same histogram
    /// taken before this one): bucket counts and sum subtracted, so
    /// quantiles, count, sum and mean describe just that window.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// let before = pool.metrics().acquire_wait;
    /// drop(pool.get().await.unwrap());
    /// let window = pool.metrics().acquire_wait.since(&before);
    /// assert_eq!(window.count(), 1);
    /// # }
    /// ```
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut out = self.clone();
        for (o, e) in out.counts.iter_mut().zip(earlier.counts.iter()) {
            *o = o.saturating_sub(*e);
        }
        out.count = out.counts.iter().sum();
        out.sum = self.sum.wrapping_sub(earlier.sum);
        out.fix_max(self.max);
        out
    }

    /// The non-empty buckets, lowest first, as `(low, high, count)`: every
    /// value counted lies in `low..=high` (ns). For exporters.
    ///
    /// ```
    /// # use latchless::{Manager, Pool};
    /// # struct M; impl Manager for M { type Connection = (); type Error = std::io::Error;
    /// #   async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = Pool::builder(M).build().unwrap();
    /// drop(pool.get().await.unwrap()); // a connect: one measured wait
    /// drop(pool.get().await.unwrap()); // an idle hit: a wait of zero
    /// let wait = pool.metrics().acquire_wait;
    /// assert_eq!(wait.buckets().map(|(_, _, n)| n).sum::<u64>(), 2);
    /// # }
    /// ```
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c != 0)
            .map(|(i, &c)| (lower(i), upper(i), c))
    }

    /// Adds `n` records of zero, counted elsewhere: e.g. fast-path hits
    /// that the pool counts per slot, by the slot's owner (a plain load and
    /// store instead of a shared `fetch_add`), and folds in when it takes a
    /// snapshot.
    /// Adds `other`'s values to these (a keyed pool's aggregate).
    pub(crate) fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    pub(crate) fn add_zeros(&mut self, n: u64) {
        self.counts[0] += n;
        self.count += n;
    }

    /// The highest non-empty bucket.
    fn highest(&self) -> Option<usize> {
        self.counts.iter().rposition(|&c| c != 0)
    }

    /// Sets `max` to the upper bound of the highest non-empty bucket,
    /// capped at `cap` (0 when empty).
    pub(crate) fn fix_max(&mut self, cap: u64) {
        self.max = match self.highest() {
            Some(i) => upper(i).min(cap),
            None => 0,
        };
    }
}

/// The nearest rank of quantile `q` among `n > 0` values: ⌈q·n⌉ in `1..=n`.
fn rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    // `as` saturates; n is far below 2^53 in practice.
    ((q * n as f64).ceil() as u64).clamp(1, n)
}

impl fmt::Debug for HistogramSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramSnapshot")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min())
            .field("p50", &self.p50())
            .field("p99", &self.p99())
            .field("max", &self.max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recording on the slow paths and refreshing a snapshot in place
    /// allocate nothing (counted on this thread only).
    #[test]
    fn recording_and_snapshot_into_allocate_nothing() {
        let h = Histogram::with_stripes(4);
        let mut snap = HistogramSnapshot::default();
        let n = crate::test_support::allocations(|| {
            for i in 0..10_000u64 {
                h.record_in(i as usize, i * 7_919);
                h.record_in(i as usize, 0);
                h.record_duration(i as usize, std::time::Duration::from_micros(i));
            }
            h.snapshot_into(&mut snap);
            std::hint::black_box(snap.p99());
        });
        assert_eq!(n, 0, "{n} allocations");
        // The counter works: a snapshot allocates its buckets.
        let n = crate::test_support::allocations(|| drop(std::hint::black_box(h.snapshot())));
        assert!(n > 0);
        assert_eq!(snap.count(), 30_000);
    }

    /// The read-back arithmetic of every snapshot method, on exact values.
    #[test]
    fn snapshot_methods_read_back_what_was_recorded() {
        // count
        {
            let h = Histogram::new();
            h.record(0);
            assert_eq!(h.snapshot().count(), 1);
        }
        // sum
        {
            let h = Histogram::new();
            h.record(1_000_000_007);
            h.record(3);
            assert_eq!(h.snapshot().sum(), 1_000_000_010);
        }
        // mean
        {
            let h = Histogram::new();
            h.record(100);
            h.record(201);
            assert_eq!(h.snapshot().mean(), 150);
        }
        // min
        {
            let h = Histogram::new();
            h.record(5);
            h.record(9);
            assert_eq!(h.snapshot().min(), 5);
        }
        // max
        {
            let h = Histogram::new();
            h.record(123_456_789);
            assert_eq!(h.snapshot().max(), 123_456_789);
        }
        // quantile
        {
            let h = Histogram::new();
            for v in 1..=1000u64 {
                h.record(v * 1000);
            }
            let s = h.snapshot();
            let exact = 900_000.0; // the 900th smallest
            assert!((s.quantile(0.9) as f64 - exact).abs() <= exact / 64.0);
        }
        // p50
        {
            let h = Histogram::new();
            [1, 2, 3].iter().for_each(|&v| h.record(v));
            assert_eq!(h.snapshot().p50(), 2);
        }
        // p90
        {
            let h = Histogram::new();
            (1..=10).for_each(|v| h.record(v));
            assert_eq!(h.snapshot().p90(), 9);
        }
        // p99
        {
            let h = Histogram::new();
            (1..=50).for_each(|v| h.record(v));
            assert_eq!(h.snapshot().p99(), 50);
        }
        // p999
        {
            let h = Histogram::new();
            (0..999).for_each(|_| h.record(1));
            h.record(60);
            assert_eq!(h.snapshot().p999(), 1);
        }
        // since
        {
            let h = Histogram::new();
            h.record(1_000_000);
            let t0 = h.snapshot();
            h.record(40);
            h.record(50);
            let w = h.snapshot().since(&t0);
            assert_eq!((w.count(), w.sum(), w.max()), (2, 90, 50));
        }
        // buckets
        {
            let h = Histogram::new();
            h.record(100);
            let b: Vec<_> = h.snapshot().buckets().collect();
            assert_eq!(b, [(100, 101, 1)]);
        }
        // add_zeros
        {
            let h = Histogram::new();
            h.record(2_000_000);
            let mut s = h.snapshot();
            s.add_zeros(99);
            assert_eq!(
                (s.count(), s.sum(), s.p50(), s.max()),
                (100, 2_000_000, 0, 2_000_000)
            );
        }
    }

    /// xorshift64*: a small deterministic generator for property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Log-uniform over `1..2^bits`.
        fn log_uniform(&mut self, bits: u32) -> u64 {
            let b = 1 + self.next() % u64::from(bits);
            (self.next() >> (64 - b)).max(1)
        }
    }

    #[test]
    fn bucket_bounds_are_exact() {
        // One bucket per value below 64.
        for v in 0..64 {
            assert_eq!(index(v), v as usize);
            assert_eq!((lower(v as usize), upper(v as usize)), (v, v));
        }
        // 64..128: width 2; 128..256: width 4.
        assert_eq!((index(64), index(65), index(66)), (64, 64, 65));
        assert_eq!((lower(64), upper(64)), (64, 65));
        assert_eq!(
            (index(127), index(128), index(131), index(132)),
            (95, 96, 96, 97)
        );
        assert_eq!((lower(96), upper(96), midpoint(96)), (128, 131, 130));
        // 1 ms = 1_000_000 ns: 2^19 <= v < 2^20, width 2^14.
        let i = index(1_000_000);
        assert_eq!((lower(i), upper(i)), (999_424, 1_015_807));
        assert_eq!(index(HistogramSnapshot::MAX_TRACKED), BUCKETS - 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(BUCKETS, 1216);
        // Buckets tile 0..=MAX_TRACKED without gaps, each within 1/32.
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(lower(i)), i, "lower({i})");
            assert_eq!(index(upper(i)), i, "upper({i})");
            assert_eq!(lower(i + 1), upper(i) + 1, "bucket {i} meets {}", i + 1);
            let width = upper(i) - lower(i) + 1;
            assert!(width == 1 || width * 32 <= lower(i), "bucket {i} too wide");
            // The midpoint reads back within 1/64 of anything in the bucket.
            for v in [lower(i), upper(i)] {
                assert!(v.abs_diff(midpoint(i)) * 64 <= v, "bucket {i}, value {v}");
            }
        }
        assert_eq!(lower(BUCKETS - 1), (1 << 42) - (1 << 36));
    }

    /// Every quantile of a snapshot is within 1/64 of the exact
    /// nearest-rank quantile of the multiset recorded.
    #[test]
    fn quantiles_are_within_the_relative_error_of_the_exact_ones() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let h = Histogram::with_stripes(4);
            let n = 1 + (rng.next() % 3000) as usize;
            let mut values = Vec::with_capacity(n);
            for k in 0..n {
                let v = match round % 4 {
                    0 => rng.log_uniform(42),
                    1 => 1_000_000 + rng.next() % 100_000, // a tight cluster
                    2 => rng.next() % 200,                 // the exact range and just above
                    _ => rng.log_uniform(30) * (1 + (k as u64 % 3)),
                };
                values.push(v);
                h.record_in(k, v);
            }
            values.sort_unstable();
            let s = h.snapshot();
            assert_eq!(s.count(), n as u64);
            assert_eq!(s.sum(), values.iter().sum::<u64>());
            assert_eq!(s.max(), *values.last().unwrap());
            let mut qs = vec![0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0];
            qs.extend((0..20).map(|_| (rng.next() % 10_001) as f64 / 10_000.0));
            for q in qs {
                let exact = values[rank(q, n as u64) as usize - 1];
                let got = s.quantile(q);
                assert!(
                    got.abs_diff(exact) as f64 <= exact as f64 * HistogramSnapshot::RELATIVE_ERROR,
                    "round {round}, n {n}, q {q}: got {got}, exact {exact}"
                );
            }
            assert_eq!(s.min(), s.quantile(0.0));
            assert!(s.min().abs_diff(values[0]) * 64 <= values[0]);
        }
    }

    #[test]
    fn a_snapshot_without_samples_reads_zero() {
        let s = Histogram::new().snapshot();
        assert_eq!(
            (s.count(), s.sum(), s.mean(), s.min(), s.max(), s.p99()),
            (0, 0, 0, 0, 0, 0)
        );
        assert_eq!(s.buckets().count(), 0);
    }

    #[test]
    fn zeros_count_and_add_nothing_else() {
        let h = Histogram::with_stripes(2);
        for k in 0..10 {
            h.record_in(k, 0);
        }
        let s = h.snapshot();
        assert_eq!((s.count(), s.sum(), s.max(), s.p999()), (10, 0, 0, 0));
        for st in h.stripes.iter() {
            assert_eq!(st.sum.load(Ordering::Relaxed), 0);
            assert_eq!(st.max.load(Ordering::Relaxed), 0);
            assert_eq!(st.counts[0].load(Ordering::Relaxed), 5);
        }
    }

    #[test]
    fn stripes_round_up_and_wrap_their_index() {
        assert_eq!(Histogram::with_stripes(0).stripes(), 1);
        assert_eq!(Histogram::with_stripes(3).stripes(), 4);
        assert_eq!(Histogram::with_stripes(65).stripes(), 64);
        let h = Histogram::with_stripes(2);
        h.record_in(5, 7); // stripe 1
        assert_eq!(h.stripes[1].counts[7].load(Ordering::Relaxed), 1);
        assert_eq!(h.stripes[0].counts[7].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn values_past_the_range_saturate_with_exact_sum_and_max() {
        let h = Histogram::new();
        let big = 10 * 3_600_000_000_000; // 10 h
        h.record(big);
        h.record(1);
        let s = h.snapshot();
        assert_eq!((s.sum(), s.max()), (big + 1, big));
        // In the top bucket, read back as its midpoint (capped at max).
        assert_eq!(s.quantile(1.0), midpoint(BUCKETS - 1));
        assert_eq!(s.buckets().last(), Some((lower(BUCKETS - 1), u64::MAX, 1)));
    }

    #[test]
    fn since_describes_the_window_only() {
        let h = Histogram::new();
        for _ in 0..100 {
            h.record(5_000_000); // 5 ms
        }
        let t0 = h.snapshot();
        for _ in 0..10 {
            h.record(1_000);
        }
        let w = h.snapshot().since(&t0);
        assert_eq!((w.count(), w.sum(), w.mean()), (10, 10_000, 1_000));
        // 1000 is in bucket [992, 1007]: max is its upper bound.
        assert_eq!(w.max(), 1_007);
        assert_eq!(w.p99(), 1_000);
        let empty = t0.since(&t0);
        assert_eq!((empty.count(), empty.max(), empty.p50()), (0, 0, 0));
    }

    #[test]
    fn concurrent_recorders_lose_nothing() {
        let h = Histogram::with_stripes(4);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let h = &h;
                scope.spawn(move || {
                    for v in 0..5_000u64 {
                        h.record_in(t as usize, v * (t + 1));
                    }
                });
            }
        });
        let s = h.snapshot();
        assert_eq!(s.count(), 20_000);
        let expected: u64 = (1..=4u64).map(|m| m * (0..5_000u64).sum::<u64>()).sum();
        assert_eq!(s.sum(), expected);
        assert_eq!(s.max(), 4 * 4_999);
    }

    #[test]
    fn snapshot_into_reuses_its_buffer() {
        let h = Histogram::new();
        let mut s = HistogramSnapshot::default();
        h.record(9);
        h.snapshot_into(&mut s);
        let ptr = s.counts.as_ptr();
        h.record(11);
        h.snapshot_into(&mut s);
        assert_eq!(s.counts.as_ptr(), ptr);
        assert_eq!((s.count(), s.sum()), (2, 20));
    }
}
