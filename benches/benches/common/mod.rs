//! Shared helpers of the benches (`peers.rs` and `tail.rs` use all of it,
//! `acquire.rs`, `lifecycle.rs` and `e2e_tcp.rs` the latchless manager and
//! the criterion settings): the same trivial manager (a connection is a `u64`)
//! for latchless and for each peer (deadpool managed, bb8, mobc, qp,
//! r2d2), a builder for each pool at a given `max_size`, and one uniform
//! acquire interface per pool so that every bench drives every pool with
//! the same code.
//!
//! Besides the pools, three reference entries run through the same
//! interface (none of them is a peer): `LatchlessNoDeadline` (latchless
//! without an acquire deadline, so no timer per wait), `SemaphoreFloor` (a
//! bare fair Tokio semaphore: the park/wake cost alone) and `YieldFloor`
//! (no pool, no waiting: the task loop alone).
//!
//! Not a bench by itself: `mod common;` in the benches that use it.
//!
//! Each peer runs in its fastest configuration for a trivial connection:
//! per-checkout health checks are off where the pool has them (bb8, mobc,
//! r2d2 `test_on_check_out(false)`; qp `acquire_unchecked`), mobc keeps as
//! many idle connections as it may open, and deadpool's `recycle` is a
//! no-op. latchless keeps its defaults (every lifecycle policy on; the
//! pre-ping only runs on connections idle for 500 ms, which never happens
//! in these loops).

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The value every trivial manager hands out.
pub const CONN: u64 = 7;

/// The error type of the trivial managers (they never fail).
pub type Never = std::io::Error;

// ---------------------------------------------------------------------------
// The trivial managers, one per pool crate.

/// latchless: a connection is an integer.
pub struct LlNumbers;

impl latchless::Manager for LlNumbers {
    type Connection = u64;
    type Error = Never;
    async fn connect(&self) -> Result<u64, Never> {
        Ok(CONN)
    }
}

/// deadpool (managed): a connection is an integer; recycling is a no-op.
pub struct DpNumbers;

impl deadpool::managed::Manager for DpNumbers {
    type Type = u64;
    type Error = Never;
    async fn create(&self) -> Result<u64, Never> {
        Ok(CONN)
    }
    async fn recycle(
        &self,
        _conn: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Never> {
        Ok(())
    }
}

/// bb8: a connection is an integer.
pub struct Bb8Numbers;

impl bb8::ManageConnection for Bb8Numbers {
    type Connection = u64;
    type Error = Never;
    async fn connect(&self) -> Result<u64, Never> {
        Ok(CONN)
    }
    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Never> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

/// mobc: a connection is an integer.
pub struct MobcNumbers;

#[mobc::async_trait]
impl mobc::Manager for MobcNumbers {
    type Connection = u64;
    type Error = Never;
    async fn connect(&self) -> Result<u64, Never> {
        Ok(CONN)
    }
    async fn check(&self, conn: u64) -> Result<u64, Never> {
        Ok(conn)
    }
}

/// qp: a resource is an integer.
pub struct QpNumbers;

#[qp::async_trait]
impl qp::resource::Manage for QpNumbers {
    type Output = u64;
    type Error = Infallible;
    async fn try_create(&self) -> Result<u64, Infallible> {
        Ok(CONN)
    }
}

/// r2d2 (synchronous): a connection is an integer.
pub struct R2d2Numbers;

impl r2d2::ManageConnection for R2d2Numbers {
    type Connection = u64;
    type Error = Never;
    fn connect(&self) -> Result<u64, Never> {
        Ok(CONN)
    }
    fn is_valid(&self, _conn: &mut u64) -> Result<(), Never> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// One interface for the async pools.

/// An async pool of integers, built at a given `max_size`, whose
/// `acquire` waits for a connection (connecting if below the cap).
pub trait AsyncPool: Clone + Send + Sync + 'static {
    /// The guard; dropping it returns the connection.
    type Guard<'a>: Deref<Target = u64> + Send
    where
        Self: 'a;

    /// The name used in bench ids, tables and the plot.
    const NAME: &'static str;

    /// `true` for a pool known to stop making progress once tasks wait
    /// for connections (more tasks than connections): the criterion
    /// benches leave those configurations out (a stalled iteration would
    /// hang the run); `benches/tail.rs` runs them under a watchdog and
    /// reports the stall.
    const STALLS_WHEN_WAITING: bool = false;

    /// Build the pool; call inside a Tokio runtime's context (bb8 and
    /// mobc spawn their reaper tasks there).
    fn build(max_size: usize) -> Self;

    /// Wait for a connection.
    fn acquire(&self) -> impl Future<Output = Self::Guard<'_>> + Send;
}

#[derive(Clone)]
pub struct Latchless(pub latchless::Pool<LlNumbers>);

impl AsyncPool for Latchless {
    type Guard<'a> = latchless::Pooled<LlNumbers>;
    const NAME: &'static str = "latchless";
    fn build(max_size: usize) -> Self {
        Latchless(
            latchless::Pool::builder(LlNumbers)
                .max_size(max_size)
                .build()
                .expect("valid settings"),
        )
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().await.expect("latchless get")
    }
}

#[derive(Clone)]
pub struct Deadpool(pub deadpool::managed::Pool<DpNumbers>);

impl AsyncPool for Deadpool {
    type Guard<'a> = deadpool::managed::Object<DpNumbers>;
    const NAME: &'static str = "deadpool";
    fn build(max_size: usize) -> Self {
        Deadpool(
            deadpool::managed::Pool::builder(DpNumbers)
                .max_size(max_size)
                .build()
                .expect("valid settings"),
        )
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().await.expect("deadpool get")
    }
}

#[derive(Clone)]
pub struct Bb8(pub bb8::Pool<Bb8Numbers>);

impl AsyncPool for Bb8 {
    type Guard<'a> = bb8::PooledConnection<'a, Bb8Numbers>;
    const NAME: &'static str = "bb8";
    fn build(max_size: usize) -> Self {
        Bb8(bb8::Pool::builder()
            .max_size(max_size as u32)
            .test_on_check_out(false)
            .build_unchecked(Bb8Numbers))
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().await.expect("bb8 get")
    }
}

#[derive(Clone)]
pub struct Mobc(pub mobc::Pool<MobcNumbers>);

impl AsyncPool for Mobc {
    type Guard<'a> = mobc::Connection<MobcNumbers>;
    const NAME: &'static str = "mobc";
    fn build(max_size: usize) -> Self {
        Mobc(
            mobc::Pool::builder()
                .max_open(max_size as u64)
                .max_idle(max_size as u64)
                .test_on_check_out(false)
                .build(MobcNumbers),
        )
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().await.expect("mobc get")
    }
}

#[derive(Clone)]
pub struct Qp(pub qp::Pool<QpNumbers>);

impl AsyncPool for Qp {
    type Guard<'a> = qp::Pooled<'a, QpNumbers>;
    const NAME: &'static str = "qp";
    /// qp 0.2.1's semaphore loses wake-ups: a waiter pushes its waker only
    /// on its first `Pending` poll, without re-trying the permit after
    /// registering (a release between the failed try and the push wakes
    /// nobody), and never registers again if a wake-up's permit was taken
    /// by another task first. In our runs, 2 tasks on a pool of 1 stalled
    /// in some runs within 4,000 acquires, 4 and 8 tasks in every run.
    const STALLS_WHEN_WAITING: bool = true;
    fn build(max_size: usize) -> Self {
        Qp(qp::Pool::new(QpNumbers, max_size))
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        match self.0.acquire_unchecked().await {
            Ok(conn) => conn,
            Err(never) => match never {},
        }
    }
}

/// latchless with `acquire_timeout(Duration::MAX)`, otherwise the same as
/// [`Latchless`]: the deadline `Instant::now() + Duration::MAX` overflows,
/// so a waiting `get` has no deadline and arms no Tokio timer. Shows what
/// the per-wait timer registration costs.
#[derive(Clone)]
pub struct LatchlessNoDeadline(pub latchless::Pool<LlNumbers>);

impl AsyncPool for LatchlessNoDeadline {
    type Guard<'a> = latchless::Pooled<LlNumbers>;
    const NAME: &'static str = "latchless no-deadline";
    fn build(max_size: usize) -> Self {
        LatchlessNoDeadline(
            latchless::Pool::builder(LlNumbers)
                .max_size(max_size)
                .acquire_timeout(Duration::MAX)
                .build()
                .expect("valid settings"),
        )
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().await.expect("latchless get")
    }
}

/// Not a pool: a fair (FIFO) `tokio::sync::Semaphore` with `max_size`
/// permits, whose guard holds a permit and derefs to [`CONN`]. The cost of
/// parking a task and waking it when a permit comes back, which any fair
/// async pool pays once tasks outnumber connections, with no pool around it.
#[derive(Clone)]
pub struct SemaphoreFloor(pub Arc<Semaphore>);

/// The semaphore floor's guard: releases its permit on drop.
pub struct SemaphoreGuard<'a> {
    _permit: SemaphorePermit<'a>,
}

impl Deref for SemaphoreGuard<'_> {
    type Target = u64;
    fn deref(&self) -> &u64 {
        &CONN
    }
}

impl AsyncPool for SemaphoreFloor {
    type Guard<'a> = SemaphoreGuard<'a>;
    const NAME: &'static str = "semaphore floor";
    fn build(max_size: usize) -> Self {
        SemaphoreFloor(Arc::new(Semaphore::new(max_size)))
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        let permit = self.0.acquire().await.expect("never closed");
        SemaphoreGuard { _permit: permit }
    }
}

/// Not a pool: `acquire` returns at once with a guard that derefs to
/// [`CONN`]; nobody ever waits. What remains is the runtime's cost of the
/// task loop itself (spawn, `yield_now()`, join): the upper bound of any
/// pool's throughput in the contended benches.
#[derive(Clone)]
pub struct YieldFloor;

/// The yield floor's guard: a constant.
pub struct YieldGuard;

impl Deref for YieldGuard {
    type Target = u64;
    fn deref(&self) -> &u64 {
        &CONN
    }
}

impl AsyncPool for YieldFloor {
    type Guard<'a> = YieldGuard;
    const NAME: &'static str = "yield floor";
    fn build(_max_size: usize) -> Self {
        YieldFloor
    }
    async fn acquire(&self) -> Self::Guard<'_> {
        YieldGuard
    }
}

/// One acquire + release, touching the connection.
pub async fn cycle<P: AsyncPool>(pool: &P) {
    let conn = pool.acquire().await;
    black_box(*conn);
}

/// One acquire + release holding the connection across one
/// `tokio::task::yield_now()`: the stand-in for a request's I/O that lets
/// the other tasks run (and find the pool empty when it is smaller than
/// the number of tasks).
pub async fn cycle_holding<P: AsyncPool>(pool: &P) {
    let conn = pool.acquire().await;
    black_box(*conn);
    tokio::task::yield_now().await;
    drop(conn);
}

/// `tasks` tasks, spawned on the current runtime, each doing `ops`
/// holding cycles; returns when all have finished.
pub async fn contend<P: AsyncPool>(pool: &P, tasks: usize, ops: usize) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..ops {
                    cycle_holding(&pool).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
}

/// Open `n` connections (all at once) so that the measured loops start
/// warm; in a runtime's context.
pub async fn warm<P: AsyncPool>(pool: &P, n: usize) {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(pool.acquire().await);
    }
    drop(held);
}

// ---------------------------------------------------------------------------
// One interface for the pools driven from plain OS threads.

/// A pool used from OS threads: `acquire` blocks (r2d2) or spins with
/// `std::thread::yield_now()` until a connection is idle (latchless
/// `try_get`, the bare `ArrayQueue`).
pub trait SyncPool: Clone + Send + Sync + 'static {
    type Guard<'a>: Deref<Target = u64>
    where
        Self: 'a;
    const NAME: &'static str;
    fn build(max_size: usize) -> Self;
    fn acquire(&self) -> Self::Guard<'_>;
}

#[derive(Clone)]
pub struct R2d2(pub r2d2::Pool<R2d2Numbers>);

impl SyncPool for R2d2 {
    type Guard<'a> = r2d2::PooledConnection<R2d2Numbers>;
    const NAME: &'static str = "r2d2";
    fn build(max_size: usize) -> Self {
        R2d2(
            r2d2::Pool::builder()
                .max_size(max_size as u32)
                .test_on_check_out(false)
                .build(R2d2Numbers)
                .expect("r2d2 build"),
        )
    }
    fn acquire(&self) -> Self::Guard<'_> {
        self.0.get().expect("r2d2 get")
    }
}

/// latchless `try_get`, retried (yielding the thread) until it succeeds.
/// Built outside any runtime: no background task, the hot path reads the
/// clock itself.
#[derive(Clone)]
pub struct LatchlessTryGet(pub latchless::Pool<LlNumbers>);

impl SyncPool for LatchlessTryGet {
    type Guard<'a> = latchless::Pooled<LlNumbers>;
    const NAME: &'static str = "latchless try_get";
    fn build(max_size: usize) -> Self {
        let pool = latchless::Pool::builder(LlNumbers)
            .max_size(max_size)
            .build()
            .expect("valid settings");
        // `try_get` never connects: open every connection first.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut held = Vec::with_capacity(max_size);
            for _ in 0..max_size {
                held.push(pool.get().await.expect("latchless get"));
            }
        });
        LatchlessTryGet(pool)
    }
    fn acquire(&self) -> Self::Guard<'_> {
        loop {
            if let Some(conn) = self.0.try_get() {
                return conn;
            }
            std::thread::yield_now();
        }
    }
}

/// The floor: a bare crossbeam `ArrayQueue` of integers (pop = acquire,
/// push = release), no capacity accounting, no waiting, no lifecycle.
#[derive(Clone)]
pub struct Floor(pub Arc<ArrayQueue<u64>>);

/// The floor's guard: pushes the integer back on drop.
pub struct FloorGuard<'a> {
    queue: &'a ArrayQueue<u64>,
    value: u64,
}

impl Deref for FloorGuard<'_> {
    type Target = u64;
    fn deref(&self) -> &u64 {
        &self.value
    }
}

impl Drop for FloorGuard<'_> {
    fn drop(&mut self) {
        let _ = self.queue.push(self.value);
    }
}

impl SyncPool for Floor {
    type Guard<'a> = FloorGuard<'a>;
    const NAME: &'static str = "floor";
    fn build(max_size: usize) -> Self {
        let queue = ArrayQueue::new(max_size);
        for _ in 0..max_size {
            queue.push(CONN).expect("within capacity");
        }
        Floor(Arc::new(queue))
    }
    fn acquire(&self) -> FloorGuard<'_> {
        loop {
            if let Some(value) = self.0.pop() {
                return FloorGuard {
                    queue: &self.0,
                    value,
                };
            }
            std::thread::yield_now();
        }
    }
}

/// One acquire + release from a thread, holding the connection across one
/// `std::thread::yield_now()` (the thread analogue of `cycle_holding`).
pub fn thread_cycle_holding<P: SyncPool>(pool: &P) {
    let conn = pool.acquire();
    black_box(*conn);
    std::thread::yield_now();
    drop(conn);
}

/// `threads` scoped OS threads, each doing `ops` holding cycles.
pub fn contend_threads<P: SyncPool>(pool: &P, threads: usize, ops: usize) {
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..ops {
                    thread_cycle_holding(pool);
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Sizes and runtimes.

/// Pool size "below" the number of tasks: half of them (at least 1), so
/// that tasks wait for each other.
pub fn size_below(tasks: usize) -> usize {
    (tasks / 2).max(1)
}

/// Pool size "above" the number of tasks: twice as many, so that no task
/// ever waits for a connection.
pub fn size_above(tasks: usize) -> usize {
    tasks * 2
}

/// A multi-threaded Tokio runtime with `workers` worker threads and every
/// driver enabled.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Build `P` at `max_size` inside `rt`'s context and open `max_size`
/// connections.
pub fn build_warm<P: AsyncPool>(rt: &tokio::runtime::Runtime, max_size: usize) -> P {
    let pool = {
        let _in_runtime = rt.enter();
        P::build(max_size)
    };
    rt.block_on(warm(&pool, max_size));
    pool
}

/// The criterion settings every comparison bench uses (see BENCHMARKS.md,
/// "Method"); command-line options still override them.
pub fn criterion_config() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}
