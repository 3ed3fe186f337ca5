//! The reference model of latchless's observable behaviour, and the checks
//! that drive the real pool against it (an unpublished workspace crate,
//! driving only the public API); used by the cargo-fuzz targets in `fuzz/` and, on stable, by
//! `tests/fuzz_corpus.rs`, which replays every corpus file through the same
//! functions.
//!
//! The model is deliberately small and readable. It does not predict
//! *which* idle connection the pool hands out (that depends on shards and
//! the hot word); it says which connections *may* be handed out, what
//! [`State`] must read after every step, and which closes are
//! justified. [`check_pool_ops`] drives a real pool (single-threaded,
//! futures polled by hand, a mock clock, background task off) through an
//! arbitrary sequence of operations and panics on the first divergence:
//!
//! - I1: no connection is held by two guards (or a guard and a check);
//! - I2: never more than `max_size` connections exist;
//! - I3: every connection opened is closed exactly once, for a reason the
//!   model accepts, and none is left once pool and guards are gone;
//! - I6: no connection past `max_lifetime` is handed out, and `try_get`
//!   never hands out one due for a check;
//! - `state()` equals the model's after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use latchless::{Clock, Manager, Pool, PoolError, Pooled, State};

/// What the fuzz manager was told to do, and what it saw.
#[derive(Debug, Default)]
struct World {
    now_ms: u64,
    next_id: u64,
    fail_connects: usize,
    next_check: Option<CheckMode>,
    /// Connections opened and not yet dropped: id -> opened at (ms).
    live: BTreeMap<u64, u64>,
    /// Ids dropped since the model last looked, in order.
    dropped: Vec<u64>,
    /// Checks run since the model last looked: (id, passed).
    checks: Vec<(u64, bool)>,
    /// Ids whose check is hanging right now.
    hanging: BTreeSet<u64>,
    opened: u64,
    closed: u64,
    /// Connects failed since the last one that succeeded.
    failed_in_a_row: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckMode {
    Fail,
    Hang,
}

/// The fuzz manager: connections are numbered; connects and checks
/// complete at once unless told to fail or hang.
#[derive(Debug, Clone)]
struct FuzzManager(Arc<Mutex<World>>);

/// A fuzz connection; its drop is its close.
#[derive(Debug)]
struct FuzzConn {
    id: u64,
    broken: bool,
    world: Arc<Mutex<World>>,
}

impl Drop for FuzzConn {
    fn drop(&mut self) {
        let mut w = lock(&self.world);
        assert!(
            w.live.remove(&self.id).is_some(),
            "connection {} closed twice",
            self.id
        );
        w.dropped.push(self.id);
        w.closed += 1;
    }
}

fn lock(w: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused (fuzz)")
    }
}

impl std::error::Error for Refused {}

/// Marks a hanging check as over when its future is dropped.
struct Hang {
    id: u64,
    world: Arc<Mutex<World>>,
}

impl Drop for Hang {
    fn drop(&mut self) {
        lock(&self.world).hanging.remove(&self.id);
    }
}

impl Manager for FuzzManager {
    type Connection = FuzzConn;
    type Error = Refused;

    async fn connect(&self) -> Result<FuzzConn, Refused> {
        let mut w = lock(&self.0);
        if w.fail_connects > 0 {
            w.fail_connects -= 1;
            w.failed_in_a_row += 1;
            return Err(Refused);
        }
        w.failed_in_a_row = 0;
        let id = w.next_id;
        w.next_id += 1;
        let now = w.now_ms;
        w.live.insert(id, now);
        w.opened += 1;
        Ok(FuzzConn {
            id,
            broken: false,
            world: Arc::clone(&self.0),
        })
    }

    async fn check(&self, conn: &mut FuzzConn) -> Result<(), Refused> {
        let mode = lock(&self.0).next_check.take();
        match mode {
            None => {
                lock(&self.0).checks.push((conn.id, true));
                Ok(())
            }
            Some(CheckMode::Fail) => {
                lock(&self.0).checks.push((conn.id, false));
                Err(Refused)
            }
            Some(CheckMode::Hang) => {
                lock(&self.0).hanging.insert(conn.id);
                let _hang = Hang {
                    id: conn.id,
                    world: Arc::clone(&self.0),
                };
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }

    fn is_broken(&self, conn: &mut FuzzConn) -> bool {
        conn.broken
    }
}

/// The reference model: what the pool holds, by connection id.
#[derive(Debug, Default)]
struct Model {
    /// Open connections: id -> (opened at, idle since; `None` while held).
    open: BTreeMap<u64, (u64, Option<u64>)>,
    /// Connections held by the caller's guards.
    held: BTreeSet<u64>,
    /// Connections returned broken (may be closed).
    broken: BTreeSet<u64>,
    /// Connections detached (leave the model when dropped).
    detached: BTreeSet<u64>,
    closed_pool: bool,
}

/// Settings the model needs (in ms; `None` = off).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    max_size: usize,
    lifetime: Option<u64>,
    idle_timeout: Option<u64>,
    check_after_idle: Option<u64>,
    max_waiters: Option<usize>,
    /// Consecutive failed connects that open the breaker.
    breaker: Option<u32>,
}

impl Model {
    /// Whether closing connection `id` at `now` is justified.
    fn may_close(&self, k: &Knobs, id: u64, now: u64, failed_check: bool) -> bool {
        let Some(&(opened, idle_since)) = self.open.get(&id) else {
            return false;
        };
        if self.closed_pool
            || self.broken.contains(&id)
            || failed_check
            || self.detached.contains(&id)
        {
            return true;
        }
        let age = now.saturating_sub(opened);
        // Jitter takes up to 5% of the lifetime; the margin at most 1 s.
        if k.lifetime.is_some_and(|l| (age + 1000) * 20 >= l * 19) {
            return true;
        }
        match (k.idle_timeout, idle_since) {
            (Some(t), Some(since)) => now.saturating_sub(since) >= t,
            _ => false,
        }
    }

    /// The state the pool must report: `(size, idle, in_use, waiting)`.
    fn state(&self, checking: usize, parked: usize) -> (usize, usize, usize, usize) {
        let size = self.open.len();
        let in_use = self.held.len() + checking;
        (size, size - in_use, in_use, parked)
    }
}

/// Reads bytes as operation codes and operands (zeros past the end).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.0.first().copied().unwrap_or(0);
        self.0 = self.0.get(1..).unwrap_or(&[]);
        b
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type PendingGet<'a> =
    Pin<Box<dyn Future<Output = Result<Pooled<FuzzManager>, PoolError<Refused>>> + 'a>>;

/// A waker that records that it was woken: the harness polls a pending
/// `get` again only when the pool woke it, as an executor would, so a lost
/// wake-up (I4) shows up as a state mismatch.
#[derive(Debug, Default)]
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A pending `get` and its waker.
struct Pending<'a> {
    fut: PendingGet<'a>,
    woken: Arc<Flag>,
    /// The connection whose (hanging) check this get runs, if any: checks
    /// start only inside a get's poll, so the hanging set's change across
    /// a poll names it.
    checking: Option<u64>,
}

impl Pending<'_> {
    fn poll(
        &mut self,
        world: &Mutex<World>,
    ) -> Poll<Result<Pooled<FuzzManager>, PoolError<Refused>>> {
        self.woken
            .0
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(&self.woken));
        let before = lock(world).hanging.clone();
        let r = self.fut.as_mut().poll(&mut Context::from_waker(&waker));
        let w = lock(world);
        if let Some(&id) = w.hanging.difference(&before).next() {
            self.checking = Some(id);
        }
        if self.checking.is_some_and(|id| !w.hanging.contains(&id)) {
            self.checking = None;
        }
        r
    }
    fn woken(&self) -> bool {
        self.woken.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Drives a real pool through the operations encoded in `data` and checks
/// it against the reference model after every step; panics on a divergence.
/// Never panics otherwise, whatever the bytes.
///
/// ```
/// latchless_model::check_pool_ops(&[3, 1, 0, 2, 0, 8, 200, 9, 1, 1, 11, 0]);
/// ```
pub fn check_pool_ops(data: &[u8]) {
    let mut b = Bytes(data);
    let knobs = Knobs {
        max_size: 1 + usize::from(b.u8() % 4),
        lifetime: match b.u8() % 3 {
            0 => None,
            n => Some(u64::from(n) * 4_000),
        },
        idle_timeout: match b.u8() % 3 {
            0 => None,
            n => Some(u64::from(n) * 1_500),
        },
        check_after_idle: match b.u8() % 4 {
            0 => None,
            n => Some(u64::from(n - 1) * 500),
        },
        max_waiters: match b.u8() % 4 {
            3 => None,
            n => Some(usize::from(n)),
        },
        breaker: None,
    };
    // One byte: the shard count in its low bit, the breaker's threshold
    // in the two above (0: off).
    let byte = b.u8();
    let shards = 1 + usize::from(byte % 2);
    let knobs = Knobs {
        breaker: match (byte / 2) % 4 {
            0 => None,
            n => Some(u32::from(n)),
        },
        ..knobs
    };
    let world = Arc::new(Mutex::new(World::default()));
    let (clock, mock) = Clock::mock();
    let ms = Duration::from_millis;
    let pool = Pool::builder(FuzzManager(Arc::clone(&world)))
        .max_size(knobs.max_size)
        .shards(shards)
        .max_lifetime(knobs.lifetime.map(ms))
        .idle_timeout(knobs.idle_timeout.map(ms))
        .check_after_idle(knobs.check_after_idle.map(ms))
        // Replacement before expiry opens connections off the request
        // path, which the model does not follow (tests/offpath.rs does).
        .replace_before_expiry(None)
        .max_waiters(knobs.max_waiters)
        .breaker(knobs.breaker)
        .fail_fast(true)
        .background(false)
        .clock(clock)
        .build()
        .unwrap_or_else(|e| panic!("valid fuzz settings refused: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("no runtime: {e}"));
    let _in_runtime = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut model = Model::default();
    let mut held: Vec<Pooled<FuzzManager>> = Vec::new();
    let mut pending: Vec<Pending<'_>> = Vec::new();

    while !b.is_empty() {
        let op = b.u8() % 13;
        let arg = b.u8();
        let (now, was_hanging) = {
            let w = lock(&world);
            (w.now_ms, w.hanging.clone())
        };
        let mut outcomes = Vec::new();
        match op {
            0 => {
                if let Some(g) = pool.try_get() {
                    hand_out(&knobs, &mut model, &world, &g, now, true);
                    held.push(g);
                }
            }
            1 => {
                let mut p = Pending {
                    fut: Box::pin(pool.get_timeout(Duration::from_secs(3600))),
                    woken: Arc::default(),
                    checking: None,
                };
                match p.poll(&world) {
                    Poll::Ready(r) => outcomes.push(r),
                    Poll::Pending => pending.push(p),
                }
            }
            2..=4 if !held.is_empty() => {
                let g = held.remove(usize::from(arg) % held.len());
                model.held.remove(&g.id);
                match op {
                    2 => {
                        if let Some(e) = model.open.get_mut(&g.id) {
                            e.1 = Some(now);
                        }
                        drop(g);
                    }
                    3 => {
                        let mut g = g;
                        g.broken = true;
                        model.broken.insert(g.id);
                        drop(g);
                    }
                    _ => {
                        model.detached.insert(g.id);
                        drop(Pooled::detach(g));
                    }
                }
            }
            5 => lock(&world).fail_connects += 1,
            6 => lock(&world).next_check = Some(CheckMode::Fail),
            7 => lock(&world).next_check = Some(CheckMode::Hang),
            8 => {
                let step = u64::from(arg) * 37;
                lock(&world).now_ms += step;
                mock.advance(ms(step));
            }
            9 => pool.maintain(),
            10 => {
                model.closed_pool = true;
                let mut close = Box::pin(pool.close());
                assert!(
                    close.as_mut().poll(&mut cx).is_ready(),
                    "close() must not wait"
                );
            }
            11 if !pending.is_empty() => {
                // Cancel a pending get (drop its future). A check it was
                // running goes on without it (held by a task of the
                // runtime, which this model never drives): its connection
                // stays in use, and closes when the runtime is dropped.
                drop(pending.remove(usize::from(arg) % pending.len()));
            }
            _ => {}
        }
        // Poll the pending gets the pool woke, until none is woken, as an
        // executor would.
        let mut polls = 0;
        while let Some(i) = pending.iter().position(Pending::woken) {
            polls += 1;
            assert!(
                polls < 100_000,
                "pending gets keep waking each other (livelock)"
            );
            if let Poll::Ready(r) = pending[i].poll(&world) {
                drop(pending.remove(i));
                outcomes.push(r);
            }
        }
        let now = lock(&world).now_ms;
        // Opens, checks and closes the manager saw during this step.
        let (checks, dropped, live) = {
            let mut w = lock(&world);
            let live: Vec<(u64, u64)> = w.live.iter().map(|(&a, &b)| (a, b)).collect();
            (
                std::mem::take(&mut w.checks),
                std::mem::take(&mut w.dropped),
                live,
            )
        };
        for &(id, opened) in &live {
            model.open.entry(id).or_insert((opened, Some(opened)));
        }
        let failed: BTreeSet<u64> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        for id in dropped {
            if model.detached.remove(&id) {
                model.open.remove(&id);
                continue;
            }
            // A connection whose check hung may be closed (a detached
            // check ends with its runtime).
            let hung = was_hanging.contains(&id);
            assert!(
                model.may_close(&knobs, id, now, failed.contains(&id) || hung),
                "connection {id} closed without a reason at {now} ms: {model:?}"
            );
            assert!(
                !model.held.contains(&id),
                "connection {id} closed while held"
            );
            model.open.remove(&id);
            model.broken.remove(&id);
        }
        for r in outcomes {
            match r {
                Ok(g) => {
                    let checked = checks.iter().any(|&(id, ok)| ok && id == g.id);
                    hand_out(&knobs, &mut model, &world, &g, now, !checked);
                    held.push(g);
                }
                Err(PoolError::Closed) => assert!(model.closed_pool, "Closed from an open pool"),
                Err(PoolError::Connect(_)) => {}
                Err(PoolError::Exhausted) => {
                    assert!(knobs.max_waiters.is_some(), "Exhausted without max_waiters")
                }
                Err(PoolError::Unavailable { .. }) => {
                    let in_a_row = lock(&world).failed_in_a_row;
                    assert!(
                        knobs.breaker.is_some_and(|k| in_a_row >= u64::from(k)),
                        "Unavailable after {in_a_row} failed connects in a row, breaker {:?}",
                        knobs.breaker
                    )
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        // I2, and the exact state.
        let hanging = lock(&world).hanging.len();
        if std::env::var_os("LATCHLESS_MODEL_TRACE").is_some() {
            eprintln!(
                "op {op} arg {arg}: state {:?}, held {:?}, pending {}, open {:?}",
                pool.state(),
                model.held,
                pending.len(),
                model.open
            );
        }
        let checking_gets = pending.iter().filter(|p| p.checking.is_some()).count();
        let parked = pending.len() - checking_gets;
        let state = pool.state();
        assert!(
            lock(&world).live.len() <= knobs.max_size,
            "I2: too many connections"
        );
        let open_in_model: usize = model.open.len();
        assert_eq!(
            fields(state),
            model.state(hanging, parked),
            "state after op {op}: model has {open_in_model} open, {} held, {hanging} checking, {parked} parked",
            model.held.len()
        );
        if let Some(m) = knobs.max_waiters {
            assert!(state.waiting <= m, "more waiters than max_waiters");
        }
        // I3, by the pool's own accounting: every connection it opened is
        // closed, detached, or still open.
        let m = pool.metrics();
        assert_eq!(
            m.opened,
            m.closed + m.detached + state.size as u64,
            "I3: opened != closed + detached + open"
        );
        let w = lock(&world);
        assert_eq!(
            w.opened,
            w.closed + w.live.len() as u64,
            "I3 (manager's count)"
        );
        drop(w);
    }
    // I3: with everything dropped, every connection is closed exactly once.
    drop(held);
    drop(pending);
    drop(pool);
    // Checks that went on without their cancelled gets end with the
    // runtime that holds them, closing their connections.
    drop(_in_runtime);
    drop(rt);
    let w = lock(&world);
    assert!(w.live.is_empty(), "connections left open: {:?}", w.live);
    assert_eq!(w.opened, w.closed);
}

/// Checks a hand-out (I1, I6) and records it in the model.
fn hand_out(
    k: &Knobs,
    model: &mut Model,
    world: &Mutex<World>,
    g: &Pooled<FuzzManager>,
    now: u64,
    unchecked: bool,
) {
    let id = g.id;
    assert!(
        !model.held.contains(&id),
        "I1: connection {id} handed out twice"
    );
    assert!(
        !lock(world).hanging.contains(&id),
        "I1: connection {id} is under a check"
    );
    let (opened, idle_since) = *model
        .open
        .get(&id)
        .unwrap_or_else(|| panic!("connection {id} is not open"));
    if let Some(l) = k.lifetime {
        assert!(
            now - opened < l,
            "I6: connection {id} aged {} ms > max_lifetime {l} ms",
            now - opened
        );
    }
    let fresh = opened == now && idle_since == Some(opened);
    if let (Some(c), Some(since), true, false) = (k.check_after_idle, idle_since, unchecked, fresh)
    {
        assert!(
            now - since < c,
            "I6: connection {id} idle {} ms handed out without a check (check_after_idle {c} ms)",
            now - since
        );
    }
    model.held.insert(id);
    if let Some(e) = model.open.get_mut(&id) {
        e.1 = None;
    }
}

/// Builder check used by the fuzz target: arbitrary values for every
/// setter; `build()` must never panic, refuse exactly the invalid
/// combinations, and name the field it refuses.
///
/// ```
/// latchless_model::check_builder(&[0; 64]);
/// ```
pub fn check_builder(data: &[u8]) {
    let mut b = Bytes(data);
    let u64_ = |b: &mut Bytes<'_>| (0..8).fold(0u64, |a, _| (a << 8) | u64::from(b.u8()));
    let size = |b: &mut Bytes<'_>, v: u64| match b.u8() % 4 {
        0 => 0,
        1 => (v % 8) as usize,
        2 => (v % 5000) as usize,
        _ => v as usize,
    };
    let dur = |b: &mut Bytes<'_>, v: u64| match b.u8() % 4 {
        0 => Duration::ZERO,
        1 => Duration::from_millis(v % 10_000),
        2 => Duration::from_nanos(v),
        _ => Duration::MAX,
    };
    let v = u64_(&mut b);
    let max_size = size(&mut b, v);
    let v = u64_(&mut b);
    let min_idle = size(&mut b, v);
    let v = u64_(&mut b);
    let shards = size(&mut b, v);
    let mut d = [Duration::ZERO; 8];
    for slot in &mut d {
        let v = u64_(&mut b);
        *slot = dur(&mut b, v);
    }
    let opt = |b: &mut Bytes<'_>, d: Duration| (b.u8() % 2 == 0).then_some(d);
    let idle = opt(&mut b, d[2]);
    let life = opt(&mut b, d[3]);
    let check = opt(&mut b, d[4]);
    let leak = opt(&mut b, d[5]);
    let v = u64_(&mut b);
    let waiters = (b.u8() % 2 == 0).then_some(v as usize);
    // Read last, so that older corpus files keep their meaning (an
    // exhausted input reads zeros: the default check_timeout).
    let v = u64_(&mut b);
    let check_timeout = (b.u8() % 2 == 1).then(|| dur(&mut b, v));
    // Read after it, for the same reason (zeros: no max_size_limit).
    let v = u64_(&mut b);
    let limit = (b.u8() % 2 == 1).then(|| size(&mut b, v));
    let world = Arc::new(Mutex::new(World::default()));
    let mut builder = Pool::builder(FuzzManager(world));
    if let Some(t) = check_timeout {
        builder = builder.check_timeout(t);
    }
    if let Some(l) = limit {
        builder = builder.max_size_limit(l);
    }
    let result = builder
        .max_size(max_size)
        .min_idle(min_idle)
        .shards(shards)
        .acquire_timeout(d[0])
        .connect_timeout(d[1])
        .idle_timeout(idle)
        .max_lifetime(life)
        .check_after_idle(check)
        .leak_threshold(leak)
        .max_waiters(waiters)
        .connect_backoff(d[6])
        .max_connect_backoff(d[7])
        .background(false)
        .build();
    let zero_opt = |o: Option<Duration>| o.is_some_and(|d| d.is_zero());
    let expected_field = if max_size == 0 || max_size > latchless::MAX_POOL_SIZE {
        Some("max_size")
    } else if limit.is_some_and(|l| l < max_size || l > latchless::MAX_POOL_SIZE) {
        Some("max_size_limit")
    } else if min_idle > max_size {
        Some("min_idle")
    } else if shards == 0 || shards > 1024 {
        Some("shards")
    } else if d[0].is_zero() {
        Some("acquire_timeout")
    } else if d[1].is_zero() {
        Some("connect_timeout")
    } else if check_timeout.is_some_and(|t| t.is_zero()) {
        Some("check_timeout")
    } else if d[6].is_zero() {
        Some("connect_backoff")
    } else if d[7] < d[6] {
        Some("max_connect_backoff")
    } else if zero_opt(idle) {
        Some("idle_timeout")
    } else if zero_opt(life) {
        Some("max_lifetime")
    } else if zero_opt(leak) {
        Some("leak_threshold")
    } else {
        None
    };
    match (result, expected_field) {
        (Ok(pool), None) => {
            assert_eq!(pool.config().max_size, max_size);
            assert_eq!(pool.max_size(), max_size);
            assert_eq!(fields(pool.state()), (0, 0, 0, 0));
        }
        (Err(e), Some(field)) => {
            assert_eq!(e.field(), field, "{e}");
            assert!(
                e.to_string().contains(field),
                "message names the field: {e}"
            );
        }
        (Ok(_), Some(field)) => panic!("invalid {field} accepted"),
        (Err(e), None) => panic!("valid settings refused: {e}"),
    }
}

/// A [`State`]'s fields as a tuple, to compare with the model's.
fn fields(s: State) -> (usize, usize, usize, usize) {
    (s.size, s.idle, s.in_use, s.waiting)
}
