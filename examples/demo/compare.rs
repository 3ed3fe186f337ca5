//! The comparison itself: the same `requests` requests, `concurrency` at a
//! time, once opening a connection per request and once through a
//! `latchless` pool, timing every connection setup and every acquire.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use latchless::{Manager, Pool};
use tokio::task::JoinSet;

/// Every error the demo reports: printed, never unwrapped.
pub type DemoError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `e` and its causes, `: `-separated (drivers often keep the useful part,
/// "connection refused", in a source).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A [`Manager`] the demo can send requests through.
pub trait Workload: Manager {
    /// One request, for the header (`"SELECT 1"`).
    fn request_name(&self) -> &'static str;

    /// Send one request and read its reply (one round trip).
    fn request(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Connection setups the server has completed so far, where the demo
    /// can ask the server (its embedded one); `None` for real servers,
    /// whose setups the demo counts as it opens them.
    fn server_setups(&self) -> Option<u64> {
        None
    }
}

/// The size of a run.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    pub requests: u64,
    pub concurrency: u64,
    pub pool_size: usize,
    /// Draw indicatif bars (they hide themselves when stderr is no terminal).
    pub progress: bool,
}

/// What one phase measured.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub requests: u64,
    /// Connection setups: the server's count where it has one, else the
    /// demo's.
    pub setups: u64,
    /// Whether `setups` is what the server saw.
    pub setups_seen_by_server: bool,
    /// Connection setups the demo made (and timed).
    pub client_setups: u64,
    /// Sum of the measured durations of every connection setup, over all
    /// tasks: with several tasks connecting at once it can exceed `total`.
    pub setup_summed: Duration,
    /// Wall time during which at least one connection setup was in flight
    /// (never more than `total`).
    pub setup_wall: Duration,
    /// Wall time of the whole phase.
    pub total: Duration,
    /// Time to get a usable connection, per request: the connect without a
    /// pool, `pool.get().await` with one.
    pub acquire: Percentiles,
}

impl Phase {
    pub fn mean_setup(&self) -> Option<Duration> {
        let n = u32::try_from(self.client_setups).ok().filter(|&n| n > 0)?;
        Some(self.setup_summed / n)
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.total.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Both phases of one run.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub unpooled: Phase,
    pub pooled: Phase,
    /// The pool's own count of connections it opened (`Metrics::opened`).
    pub pool_opened: u64,
}

impl Comparison {
    /// How many times less setup time, summed over tasks, the pool paid
    /// (`inf` if none).
    pub fn setup_ratio(&self) -> f64 {
        ratio(self.unpooled.setup_summed, self.pooled.setup_summed)
    }

    /// How many times faster the pooled phase finished.
    pub fn speedup(&self) -> f64 {
        ratio(self.unpooled.total, self.pooled.total)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

// ---------------------------------------------------------------------------
// Acquire-wait percentiles, measured by the demo around each acquire.
//
// LEAD: the pool's own wait-time histogram (`Pool::metrics()`, the
// observability issue) does not exist yet. When it lands, fill the pooled
// phase's `acquire` from `pool.metrics()` instead of `percentiles(&mut waits)`
// in `pooled_phase` below; the unpooled phase keeps measuring its connects.
// ---------------------------------------------------------------------------

/// p50, p99 and p99.9 of a set of waits (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

/// Nearest-rank percentiles; all zero for no samples. Sorts `waits`.
pub fn percentiles(waits: &mut [Duration]) -> Percentiles {
    if waits.is_empty() {
        return Percentiles::default();
    }
    waits.sort_unstable();
    let at = |q: f64| {
        let rank = (q * waits.len() as f64).ceil() as usize;
        waits[rank.clamp(1, waits.len()) - 1]
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// The total length covered by `spans` (overlaps counted once). Sorts
/// `spans`.
pub fn union_len(spans: &mut [(Instant, Instant)]) -> Duration {
    spans.sort_unstable();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for &(start, end) in spans.iter() {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

// ---------------------------------------------------------------------------

/// Counts and times every connection setup made through it.
#[derive(Default)]
struct SetupStats {
    count: AtomicU64,
    nanos: AtomicU64,
    /// When each setup started and ended, for the wall time they covered
    /// (one push per setup, off the timed path).
    spans: Mutex<Vec<(Instant, Instant)>>,
}

impl SetupStats {
    fn record(&self, start: Instant, end: Instant) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((start, end));
    }

    /// The length of the union of the setups' spans.
    fn wall(&self) -> Duration {
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        union_len(&mut spans)
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A manager wrapper that times each `connect`.
struct Timed<W> {
    inner: Arc<W>,
    stats: Arc<SetupStats>,
}

impl<W: Workload> Manager for Timed<W> {
    type Connection = W::Connection;
    type Error = W::Error;

    async fn connect(&self) -> Result<W::Connection, W::Error> {
        let start = Instant::now();
        let conn = self.inner.connect().await?;
        self.stats.record(start, Instant::now());
        Ok(conn)
    }

    fn check(&self, conn: &mut W::Connection) -> impl Future<Output = Result<(), W::Error>> + Send {
        self.inner.check(conn)
    }

    fn is_broken(&self, conn: &mut W::Connection) -> bool {
        self.inner.is_broken(conn)
    }
}

/// Run both phases against `workload`.
pub async fn run<W: Workload>(workload: W, cfg: RunConfig) -> Result<Comparison, DemoError> {
    let workload = Arc::new(workload);
    let unpooled = unpooled_phase(&workload, cfg).await?;
    let (pooled, pool_opened) = pooled_phase(&workload, cfg).await?;
    Ok(Comparison {
        unpooled,
        pooled,
        pool_opened,
    })
}

/// Without a pool: every request opens (and drops) its own connection.
async fn unpooled_phase<W: Workload>(
    workload: &Arc<W>,
    cfg: RunConfig,
) -> Result<Phase, DemoError> {
    let timed = Arc::new(Timed {
        inner: workload.clone(),
        stats: Arc::default(),
    });
    let server_before = workload.server_setups();
    let t = timed.clone();
    let (total, mut waits) = drive("connection per request", cfg, move || {
        let t = t.clone();
        async move {
            let start = Instant::now();
            let mut conn = t
                .connect()
                .await
                .map_err(|e| format!("connect: {}", chain(&e)))?;
            let waited = start.elapsed();
            t.inner
                .request(&mut conn)
                .await
                .map_err(|e| format!("request: {}", chain(&e)))?;
            Ok(waited)
        }
    })
    .await?;
    Ok(phase(
        "connection per request",
        &**workload,
        server_before,
        &timed.stats,
        cfg.requests,
        total,
        percentiles(&mut waits),
    ))
}

/// Through a `latchless` pool of `pool_size` connections.
async fn pooled_phase<W: Workload>(
    workload: &Arc<W>,
    cfg: RunConfig,
) -> Result<(Phase, u64), DemoError> {
    let stats = Arc::new(SetupStats::default());
    let pool = Pool::builder(Timed {
        inner: workload.clone(),
        stats: stats.clone(),
    })
    .max_size(cfg.pool_size)
    // The demo measures waits; it never wants one to time out.
    .acquire_timeout(Duration::from_secs(3600))
    .build()
    .map_err(|e| format!("pool settings: {e}"))?;
    let server_before = workload.server_setups();
    let (p, w) = (pool.clone(), workload.clone());
    let result = drive("latchless pool", cfg, move || {
        let (pool, workload) = (p.clone(), w.clone());
        async move {
            let start = Instant::now();
            let mut conn = pool
                .get()
                .await
                .map_err(|e| format!("pool.get: {}", chain(&e)))?;
            let waited = start.elapsed();
            workload
                .request(&mut conn)
                .await
                .map_err(|e| format!("request: {}", chain(&e)))?;
            Ok(waited)
        }
    })
    .await;
    let opened = pool.metrics().opened;
    pool.close().await;
    let (total, mut waits) = result?;
    let phase = phase(
        "latchless pool",
        &**workload,
        server_before,
        &stats,
        cfg.requests,
        total,
        percentiles(&mut waits), // LEAD: from pool.metrics() once it has them
    );
    Ok((phase, opened))
}

fn phase<W: Workload>(
    name: &'static str,
    workload: &W,
    server_before: Option<u64>,
    stats: &SetupStats,
    requests: u64,
    total: Duration,
    acquire: Percentiles,
) -> Phase {
    let server = server_before
        .zip(workload.server_setups())
        .map(|(before, after)| after.saturating_sub(before));
    Phase {
        name,
        requests,
        setups: server.unwrap_or_else(|| stats.count()),
        setups_seen_by_server: server.is_some(),
        client_setups: stats.count(),
        setup_summed: stats.total(),
        setup_wall: stats.wall(),
        total,
        acquire,
    }
}

/// Run `cfg.requests` calls of `one` on `cfg.concurrency` tasks, with a
/// progress bar; returns the wall time and each call's acquire wait.
async fn drive<F, Fut>(
    name: &'static str,
    cfg: RunConfig,
    one: F,
) -> Result<(Duration, Vec<Duration>), DemoError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Duration, DemoError>> + Send,
{
    let bar = if cfg.progress {
        ProgressBar::new(cfg.requests)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>22} [{bar:32}] {pos}/{len} {elapsed_precise} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name);

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..cfg.concurrency.min(cfg.requests) {
        let (one, next, bar) = (one.clone(), next.clone(), bar.clone());
        let n = cfg.requests;
        tasks.spawn(async move {
            let mut waits = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                waits.push(one().await?);
                bar.inc(1);
            }
            Ok::<_, DemoError>(waits)
        });
    }
    let mut all = Vec::with_capacity(usize::try_from(cfg.requests).unwrap_or(0));
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(waits)) => all.extend(waits),
            Ok(Err(e)) => {
                bar.abandon();
                return Err(format!("{name}: {e}").into());
            }
            Err(e) => {
                bar.abandon();
                return Err(format!("{name}: a worker task failed: {e}").into());
            }
        }
    }
    let total = start.elapsed();
    bar.finish();
    Ok((total, all))
}
