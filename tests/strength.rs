//! Behaviours whose tests the mutation runs (`scripts/mutants.sh`,
//! CONTRIBUTING.md, "Mutation testing") found missing: the restart epoch
//! started by a connect that fails after a success; connect retries whose
//! pauses grow, stay bounded and are spread by jitter, that stop once the
//! breaker opens, and that keep their turns while connects fail; and a
//! keyed pool's budget token, lent while a connect backs off, taken again
//! before its next attempt, and never lost to a cancelled one; keepalive
//! checks that come due on time and drift apart; housekeeping that probes
//! a down backend, refills `min_idle` only with background work on, and
//! restarts the background task in a later runtime; a due pass run by busy
//! releases alone; idle timeouts that stop at `min_idle`; replacement
//! before expiry, once per connection of a pool in use, and retried
//! without a free place until the connection is back; and the background
//! period that `check_after_idle` alone sets. Time is the mock clock's and
//! Tokio's paused clock's: nothing here sleeps.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LONG, TestManager, Tracker, paused, runtime};
use latchless::{
    Builder, Clock, KeyedManager, KeyedPool, KeyedPooled, Manager, MockClock, Pool, PoolError,
};

#[test]
fn a_connect_that_fails_after_a_success_has_idle_connections_checked_before_use() {
    let (m, t) = TestManager::new();
    let (clock, _mock) = Clock::mock();
    // No check after idle: only the restart epoch can cause a check.
    let pool = Pool::builder(m)
        .clock(clock)
        .max_size(2)
        .fail_fast(true)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .build()
        .unwrap();
    runtime().block_on(async {
        let a = pool.get().await.unwrap();
        drop(a);
        let a = pool.get().await.unwrap();
        assert_eq!(
            t.check_calls.load(SeqCst),
            0,
            "nothing said the server went away"
        );
        // "The server restarted": the next connect is refused.
        t.fail_next.store(1, SeqCst);
        let err = pool.get_timeout(LONG).await.unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        drop(a);
        let a = pool.get().await.unwrap();
        assert_eq!(a.id, 0);
        assert_eq!(
            t.check_calls.load(SeqCst),
            1,
            "the connection opened before the failure was checked first"
        );
        drop(a);
        drop(pool.get().await.unwrap());
        assert_eq!(t.check_calls.load(SeqCst), 1, "once");
    });
}

#[test]
fn a_connect_that_fails_before_any_success_checks_nothing_later() {
    let (m, t) = TestManager::new();
    let (clock, _mock) = Clock::mock();
    let pool = Pool::builder(m)
        .clock(clock)
        .max_size(2)
        .fail_fast(true)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .build()
        .unwrap();
    runtime().block_on(async {
        t.fail_next.store(1, SeqCst);
        assert!(pool.get_timeout(LONG).await.is_err());
        for _ in 0..3 {
            drop(pool.get().await.unwrap());
        }
        assert_eq!(t.check_calls.load(SeqCst), 0);
    });
}

/// Fails its first `failures` connects and records when each attempt
/// began, on Tokio's clock.
struct Recorder {
    failures: usize,
    at: Mutex<Vec<tokio::time::Instant>>,
}

struct Shared(Arc<Recorder>);

impl Manager for Shared {
    type Connection = ();
    type Error = std::io::Error;
    async fn connect(&self) -> Result<(), std::io::Error> {
        let mut at = self.0.at.lock().unwrap();
        at.push(tokio::time::Instant::now());
        if at.len() <= self.0.failures {
            return Err(std::io::Error::other("connection refused (test)"));
        }
        Ok(())
    }
}

/// The pauses between the connect attempts of a `get` whose first
/// `failures` connects fail, with `backoff` doubling up to `max`, one run
/// in each of `pools` pools, on a paused Tokio clock (sleeps end at once,
/// at their exact time). The pools live side by side, so each seeds its
/// jitter differently.
fn pauses(pools: usize, failures: usize, backoff: Duration, max: Duration) -> Vec<Vec<Duration>> {
    let pools: Vec<_> = (0..pools)
        .map(|_| {
            let rec = Arc::new(Recorder {
                failures,
                at: Mutex::new(Vec::new()),
            });
            let (clock, _mock) = Clock::mock();
            let pool = Pool::builder(Shared(Arc::clone(&rec)))
                .clock(clock)
                .background(false)
                .breaker(None)
                .connect_backoff(backoff)
                .max_connect_backoff(max)
                .build()
                .unwrap();
            (rec, pool)
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    pools
        .iter()
        .map(|(rec, pool)| {
            rt.block_on(async {
                drop(pool.get_timeout(Duration::from_secs(3600)).await.unwrap());
            });
            let at = rec.at.lock().unwrap();
            assert_eq!(at.len(), failures + 1, "retried until it succeeded");
            at.windows(2).map(|w| w[1] - w[0]).collect()
        })
        .collect()
}

#[test]
fn connect_retries_pause_for_a_backoff_that_doubles_up_to_its_bound_jittered() {
    let ms = Duration::from_millis;
    let bounds = [100, 200, 400, 800, 1000, 1000, 1000].map(ms);
    let runs = pauses(20, bounds.len(), ms(100), ms(1000));
    // Where each pause falls in the upper half of its backoff, in quarters.
    let mut quarters = [0u32; 4];
    for run in &runs {
        for (p, b) in run.iter().zip(bounds) {
            // The timer rounds a sleep up to its next millisecond.
            assert!(
                *p >= b / 2 && *p <= b + ms(1),
                "a pause of {p:?} against a backoff of {b:?}: {run:?}"
            );
            let q = (*p - b / 2).as_secs_f64() / (b / 2).as_secs_f64();
            quarters[((q * 4.0) as usize).min(3)] += 1;
        }
    }
    // Jitter spreads the pauses over that half: 140 pauses, each quarter
    // reached (a miss by chance is about 1 in 10^17).
    assert!(quarters.iter().all(|&n| n > 0), "quarters: {quarters:?}");
}

#[test]
fn connects_keep_their_turns_while_connects_fail() {
    // While connects fail, one at a time holds the flight token; each one
    // must hand it on when it ends, or the next waits out its deadline.
    let (m, t) = TestManager::new();
    let pool = Pool::builder(m)
        .fail_fast(true)
        .breaker(None)
        .build()
        .unwrap();
    runtime().block_on(async {
        // Each connect is served at once; one left waiting for a token
        // never handed on would wait until its deadline.
        let deadline = Duration::from_secs(5);
        t.fail_next.store(3, SeqCst);
        for _ in 0..3 {
            let err = pool.get_timeout(deadline).await.unwrap_err();
            assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
        }
        let c = pool.get_timeout(deadline).await;
        drop(c.expect("the backend is back, and this connect had its turn"));
        assert_eq!(t.connect_calls.load(SeqCst), 4);
    });
}

/// Key `k` refuses its first `fails[k]` connects; counts each key's
/// connects and the connections open across keys.
#[derive(Default)]
struct Flaky {
    fails: [AtomicUsize; 4],
    connects: [AtomicUsize; 4],
    open: AtomicUsize,
    max_open: AtomicUsize,
}

struct Hosts(Arc<Flaky>);

struct Link(Arc<Flaky>);

impl Drop for Link {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

impl KeyedManager<usize> for Hosts {
    type Connection = Link;
    type Error = std::io::Error;
    async fn connect(&self, key: &usize) -> Result<Link, std::io::Error> {
        let f = &self.0;
        f.connects[*key].fetch_add(1, SeqCst);
        if f.fails[*key]
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let open = f.open.fetch_add(1, SeqCst) + 1;
        f.max_open.fetch_max(open, SeqCst);
        Ok(Link(Arc::clone(f)))
    }
}

/// A keyed pool with one token across its keys, connects retried after
/// 100 ms (jittered: 50 to 100 ms), and a paused Tokio runtime to drive it.
fn one_token() -> (KeyedPool<usize, Hosts>, Arc<Flaky>, tokio::runtime::Runtime) {
    let f = Arc::new(Flaky::default());
    let pool = KeyedPool::builder(Hosts(Arc::clone(&f)))
        .max_per_key(1)
        .max_total(1)
        .breaker(None)
        .connect_backoff(Duration::from_millis(100))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    (pool, f, rt)
}

/// Runs the other tasks until key `k` has seen `n` connects (no time
/// passes: a task backing off stays asleep).
async fn until_connects(f: &Flaky, k: usize, n: usize) {
    while f.connects[k].load(SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_keyed_connect_retries_until_it_succeeds() {
    let (pool, f, rt) = one_token();
    f.fails[1].store(2, SeqCst);
    rt.block_on(async {
        let c = pool.get_timeout(&1, Duration::from_secs(10)).await;
        assert!(c.is_ok(), "{:?}", c.err());
        assert_eq!(f.connects[1].load(SeqCst), 3);
    });
}

#[test]
fn a_keyed_connect_backing_off_waits_for_a_token_before_its_next_attempt() {
    let (pool, f, rt) = one_token();
    f.fails[1].store(1, SeqCst);
    rt.block_on(async {
        let p = pool.clone();
        let a =
            tokio::spawn(async move { p.get_timeout(&1, Duration::from_secs(10)).await.map(drop) });
        // Key 1's first connect failed: it sleeps, its token lent.
        until_connects(&f, 1, 1).await;
        let mut b = pool.get_timeout(&2, Duration::from_secs(10)).await.unwrap();
        // Past key 1's backoff: it must wait for the token key 2 holds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!a.is_finished(), "key 1 connected past max_total");
        assert_eq!(f.max_open.load(SeqCst), 1);
        // Closed, key 2's connection gives the token back: key 1's turn.
        KeyedPooled::mark_broken(&mut b);
        drop(b);
        a.await.unwrap().expect("key 1 connected with the token");
        assert_eq!(f.max_open.load(SeqCst), 1);
        assert_eq!(f.connects[1].load(SeqCst), 2);
    });
}

#[test]
fn a_keyed_get_cancelled_while_backing_off_leaves_the_budget_whole() {
    let (pool, f, rt) = one_token();
    f.fails[1].store(usize::MAX, SeqCst);
    rt.block_on(async {
        let p = pool.clone();
        let a =
            tokio::spawn(async move { p.get_timeout(&1, Duration::from_secs(10)).await.map(drop) });
        until_connects(&f, 1, 1).await;
        a.abort();
        assert!(a.await.is_err(), "cancelled mid-sleep");
        // One token still: key 3 waits while key 2 holds it.
        let mut b = pool.get_timeout(&2, Duration::from_secs(10)).await.unwrap();
        let p = pool.clone();
        let c =
            tokio::spawn(async move { p.get_timeout(&3, Duration::from_secs(10)).await.map(drop) });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!c.is_finished(), "a second connection within max_total 1");
        assert_eq!(f.max_open.load(SeqCst), 1);
        KeyedPooled::mark_broken(&mut b);
        drop(b);
        c.await
            .unwrap()
            .expect("key 3 served once key 2's token came back");
        assert_eq!(f.max_open.load(SeqCst), 1);
    });
}

#[test]
fn a_get_stops_retrying_when_its_failures_open_the_breaker() {
    let rec = Arc::new(Recorder {
        failures: usize::MAX,
        at: Mutex::new(Vec::new()),
    });
    let (clock, _mock) = Clock::mock();
    let pool = Pool::builder(Shared(Arc::clone(&rec)))
        .clock(clock)
        .background(false)
        .breaker(Some(3))
        .connect_backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let err = pool
            .get_timeout(Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
    });
    assert_eq!(
        rec.at.lock().unwrap().len(),
        3,
        "the third failure opened the breaker: no fourth attempt"
    );
}

#[test]
fn a_detached_check_dropped_with_its_runtime_closes_its_connection_and_frees_its_place() {
    let (m, t) = TestManager::new();
    let (clock, _mock) = Clock::mock();
    let pool = Pool::builder(m)
        .clock(clock)
        .background(false)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        drop(pool.get().await.unwrap());
        // Its check hangs past the caller's deadline: the check goes on
        // without the caller, on a task of this runtime.
        t.check_hang.store(true, SeqCst);
        assert!(pool.get_timeout(Duration::from_secs(1)).await.is_err());
    });
    assert_eq!(t.live(), 1, "the check still holds the connection");
    // The runtime goes, and the unfinished check with it.
    drop(rt);
    assert_eq!(t.live(), 0, "the connection was closed");
    assert_eq!(pool.state().size, 0, "its place was freed");
}

#[test]
fn settings_are_accepted_up_to_their_bounds_and_refused_past_them() {
    use latchless::MAX_POOL_SIZE;
    let ms = Duration::from_millis;
    let builds =
        |f: &dyn Fn(latchless::Builder<TestManager>) -> latchless::Builder<TestManager>| {
            f(Pool::builder(TestManager::new().0)).build().is_ok()
        };
    assert!(builds(&|b| b.max_size(MAX_POOL_SIZE)));
    assert!(!builds(&|b| b.max_size(MAX_POOL_SIZE + 1)));
    assert!(builds(&|b| b.max_size(4).max_size_limit(4)));
    assert!(!builds(&|b| b.max_size(4).max_size_limit(3)));
    assert!(builds(&|b| b.max_size(4).max_size_limit(MAX_POOL_SIZE)));
    assert!(!builds(&|b| b
        .max_size(4)
        .max_size_limit(MAX_POOL_SIZE + 1)));
    assert!(builds(&|b| b
        .connect_backoff(ms(50))
        .max_connect_backoff(ms(50))));
    assert!(!builds(&|b| b
        .connect_backoff(ms(50))
        .max_connect_backoff(ms(49))));
    let b = Pool::builder(TestManager::new().0).max_size(7);
    assert!(format!("{b:?}").contains("max_size: 7"), "{b:?}");
}

#[test]
fn a_pool_is_resized_within_its_limit_and_not_below_min_idle() {
    let pool = Pool::builder(TestManager::new().0)
        .max_size(4)
        .max_size_limit(8)
        .min_idle(2)
        .build()
        .unwrap();
    assert!(pool.set_max_size(0).is_err());
    let err = pool.set_max_size(9).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_size (9) must be in 1..=max_size_limit (8)"
    );
    assert!(pool.set_max_size(1).is_err(), "below min_idle");
    assert_eq!(pool.max_size(), 4, "refused changes change nothing");
    pool.set_max_size(8).unwrap();
    assert_eq!(pool.max_size(), 8);
    pool.set_max_size(2).unwrap();
    assert_eq!(pool.max_size(), 2);
}

/// Keepalive on the mock clock, one pass a millisecond: an idle
/// connection is checked exactly `keepalive` after its release (a use in
/// between moves the check on), and connections checked together are
/// checked again up to a tenth of `keepalive` early, each by its own
/// amount drawn afresh each round, so that their checks drift apart
/// instead of bunching up, and keep drifting.
#[test]
fn keepalive_checks_come_due_a_keepalive_after_release_and_drift_apart() {
    let (builder, t, mock) = on_mock_clock();
    let pool = builder
        .max_size(4)
        .keepalive(Some(Duration::from_millis(1000)))
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .replace_before_expiry(None)
        .build()
        .unwrap();
    runtime().block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        // Their first keepalive deadlines are filed while they are in use.
        pool.maintain();
        mock.advance(Duration::from_millis(500));
        drop(held);
        // The tick of each check started, one pass per millisecond.
        let mut started = Vec::new();
        for tick in 501..=6600u64 {
            mock.advance(Duration::from_millis(1));
            pool.maintain();
            let checks = pool.metrics().keepalive_checks as usize;
            started.resize(checks, tick);
            // The checks run on this runtime's tasks: let them finish.
            common::wait_until("the checked connections are idle again", || {
                t.check_calls.load(SeqCst) == checks as u64 && pool.state().idle == 4
            })
            .await;
        }
        assert_eq!(started.len(), 24, "six rounds of four checks: {started:?}");
        assert_eq!(
            started[..4],
            [1500; 4],
            "checked a keepalive after their release, not before"
        );
        let again = &started[4..8];
        assert!(
            again.iter().all(|&at| (2400..=2500).contains(&at)),
            "checked again at most a tenth early: {again:?}"
        );
        assert!(
            again.iter().any(|&at| at != again[0]),
            "the second checks are spread apart: {again:?}"
        );
        // No round is the one before it moved on by exactly `keepalive`:
        // each check draws its own lead again.
        for round in started[4..].chunks(4).collect::<Vec<_>>().windows(2) {
            let moved: Vec<u64> = round[0].iter().map(|at| at + 1000).collect();
            assert_ne!(moved, round[1], "the same leads again: {started:?}");
        }
    });
}

/// Once the breaker is open, housekeeping (`Pool::maintain` here, the
/// background task otherwise) ends the outage without traffic: no probe
/// before the probe is due, one probe connect once it is, and none from a
/// pool closed meanwhile.
#[test]
fn housekeeping_probes_a_down_backend_once_the_probe_is_due_and_not_after_close() {
    let rt = paused();
    for close in [false, true] {
        let rec = Arc::new(Recorder {
            failures: 3,
            at: Mutex::new(Vec::new()),
        });
        let (clock, mock) = Clock::mock();
        let pool = Pool::builder(Shared(Arc::clone(&rec)))
            .clock(clock)
            .background(false)
            .breaker(Some(3))
            .connect_backoff(Duration::from_millis(10))
            .build()
            .unwrap();
        let connects = || rec.at.lock().unwrap().len();
        rt.block_on(async {
            let err = pool
                .get_timeout(Duration::from_secs(3600))
                .await
                .unwrap_err();
            assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
            assert_eq!(connects(), 3, "the third failure opened the breaker");
            pool.maintain();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(connects(), 3, "no probe before it is due");
            if close {
                pool.close().await;
            }
            mock.advance(Duration::from_secs(3600));
            pool.maintain();
            // A probe runs on a task of this runtime (paused: the sleeps
            // end at once).
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let probes = pool.metrics().probes;
            if close {
                assert_eq!(connects(), 3, "a closed pool probes nothing");
                assert_eq!(probes, 0, "nor starts a probe");
            } else {
                assert_eq!(connects(), 4, "one probe connected");
                assert_eq!(probes, 1);
            }
        });
    }
}

/// With `background(false)` a pass spawns nothing, not even the `min_idle`
/// refill; with it on, the same pass inside a runtime refills `min_idle`.
#[test]
fn a_pass_refills_min_idle_only_with_background_work_on() {
    let rt = paused();
    for background in [false, true] {
        let (m, t) = TestManager::new();
        let (clock, _mock) = Clock::mock();
        let pool = Pool::builder(m)
            .clock(clock)
            .background(background)
            .max_size(4)
            .min_idle(2)
            .build()
            .unwrap();
        rt.block_on(async {
            pool.maintain();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let opened = t.connect_calls.load(SeqCst);
        if background {
            assert_eq!(opened, 2, "the refill opened min_idle");
            assert_eq!(pool.state().idle, 2);
        } else {
            assert_eq!(opened, 0, "nothing was spawned");
        }
    }
}

/// The background task dies with the runtime it ran on; a pass inside a
/// later runtime starts it again there, so idle connections keep timing
/// out without traffic.
#[test]
fn a_pass_in_a_later_runtime_restarts_the_background_task() {
    let (m, t) = TestManager::new();
    let (clock, mock) = Clock::mock();
    let first = paused();
    let pool = first.block_on(async {
        let pool = Pool::builder(m)
            .clock(clock)
            .idle_timeout(Some(Duration::from_millis(100)))
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        pool
    });
    drop(first);
    assert_eq!(t.live(), 1);
    paused().block_on(async {
        pool.maintain();
        mock.advance(Duration::from_millis(200));
        // Nothing but the background task runs a pass from here.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(t.live(), 0, "the idle connection timed out by itself");
    });
}

/// Without the background task and without `Pool::maintain`, a busy
/// thread's releases run the maintenance pass once one is due: a
/// connection held past `leak_threshold` is reported by traffic alone.
#[test]
fn busy_releases_run_a_due_pass_without_the_background_task() {
    let (builder, _t, mock) = on_mock_clock();
    let pool = builder
        .max_size(2)
        .leak_threshold(Some(Duration::from_millis(100)))
        .check_after_idle(None)
        .idle_timeout(None)
        .max_lifetime(None)
        .build()
        .unwrap();
    let held = runtime().block_on(async {
        let held = pool.get().await.unwrap();
        drop(pool.get().await.unwrap());
        held
    });
    mock.advance(Duration::from_millis(1000));
    assert_eq!(pool.metrics().leaks, 0, "no pass has run yet");
    for _ in 0..200 {
        drop(pool.try_get().expect("the other connection is idle"));
    }
    let m = pool.metrics();
    assert!(m.maintenance_passes > 0, "{m:?}");
    assert_eq!(m.leaks, 1, "the held connection was reported: {m:?}");
    drop(held);
}

/// Idle timeouts never take the pool below `min_idle`: of two idle
/// connections past their timeout, the passes close one and keep the
/// other, however many passes run.
#[test]
fn idle_timeouts_stop_at_min_idle() {
    let (builder, t, mock) = on_mock_clock();
    let pool = builder
        .max_size(2)
        .min_idle(1)
        .idle_timeout(Some(Duration::from_millis(100)))
        .max_lifetime(None)
        .check_after_idle(None)
        .build()
        .unwrap();
    runtime().block_on(async {
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        drop((a, b));
    });
    assert_eq!(pool.state().idle, 2);
    for _ in 0..5 {
        mock.advance(Duration::from_millis(200));
        pool.maintain();
    }
    assert_eq!(pool.state().idle, 1, "one kept for min_idle");
    assert_eq!(t.live(), 1);
}

/// Passes every 100 ms on the mock clock through the lifetime of the
/// connections opened at its start, each followed by a moment for the
/// tasks they spawn; `release_at`: when `held` goes back to the pool.
async fn passes_until(
    pool: &Pool<TestManager>,
    mock: &latchless::MockClock,
    until_ms: u64,
    mut held: Option<(u64, latchless::Pooled<TestManager>)>,
) {
    for now in (100..=until_ms).step_by(100) {
        mock.advance(Duration::from_millis(100));
        if held.as_ref().is_some_and(|(at, _)| now >= *at) {
            held = None;
        }
        pool.maintain();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A builder of a `TestManager` pool on a mock clock with no background
/// task (the tests run its passes by hand), its tracker and the clock.
fn on_mock_clock() -> (Builder<TestManager>, Arc<Tracker>, MockClock) {
    let (m, t) = TestManager::new();
    let (clock, mock) = Clock::mock();
    (Pool::builder(m).clock(clock).background(false), t, mock)
}

/// A pool of `max_size` on a mock clock, its passes run by hand, whose
/// connections live 10 s and are replaced from 2 s before they expire,
/// with no other timer (idle timeout, check after idle, keepalive).
fn replacing_pool(max_size: usize) -> (Pool<TestManager>, Arc<Tracker>, MockClock) {
    let (builder, t, mock) = on_mock_clock();
    let pool = builder
        .max_size(max_size)
        .max_lifetime(Some(Duration::from_secs(10)))
        .replace_before_expiry(Some(Duration::from_secs(2)))
        .idle_timeout(None)
        .check_after_idle(None)
        .keepalive(None)
        .build()
        .unwrap();
    (pool, t, mock)
}

/// A pool in use replaces each of its connections once before it
/// expires, the one in use and the one idle since long before the lead
/// alike (the pool is in use: its idle connections will be wanted); the
/// passes that follow through the lead replace nothing more.
#[test]
fn a_pool_in_use_replaces_each_expiring_connection_once() {
    let (pool, t, mock) = replacing_pool(4);
    paused().block_on(async {
        let held = pool.get().await.unwrap();
        drop(pool.get().await.unwrap());
        // Lifetimes end between 9 and 9.5 s (jitter, and the margin of the
        // maintenance period); the leads start 2 s before.
        passes_until(&pool, &mock, 8_900, None).await;
        let m = pool.metrics();
        assert_eq!(
            m.replaced, 2,
            "the held and the idle connection were replaced, once each: {m:?}"
        );
        assert_eq!(t.connect_calls.load(SeqCst), 4, "{m:?}");
        drop(held);
    });
}

/// At `max_size`, with its only connection in use when its replacement
/// comes due, the pool has no place for a successor: it looks again each
/// period, and replaces the connection once it is back, before it
/// expires.
#[test]
fn a_replacement_without_a_place_is_retried_until_the_connection_is_back() {
    let (pool, t, mock) = replacing_pool(1);
    paused().block_on(async {
        let held = pool.get().await.unwrap();
        let first = held.id;
        // The lead starts between 7 and 7.5 s; it is back at 8 s.
        passes_until(&pool, &mock, 8_900, Some((8_000, held))).await;
        let m = pool.metrics();
        assert_eq!(m.replaced, 1, "replaced once it was back: {m:?}");
        assert_eq!(t.connect_calls.load(SeqCst), 2);
        assert_ne!(pool.get().await.unwrap().id, first);
    });
}

/// With `check_after_idle` the only time setting, the background task
/// still refreshes the pool's clock often enough (every half of it): a
/// connection idle a little longer than `check_after_idle` is checked
/// before the next `get` hands it out, with no traffic in between.
#[test]
fn a_connection_idle_past_check_after_idle_is_checked_with_only_that_setting() {
    let (m, t) = TestManager::new();
    let (clock, mock) = Clock::mock();
    paused().block_on(async {
        let pool = Pool::builder(m)
            .clock(clock)
            .check_after_idle(Some(Duration::from_millis(200)))
            .idle_timeout(None)
            .max_lifetime(None)
            .keepalive(None)
            .replace_before_expiry(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        assert_eq!(t.check_calls.load(SeqCst), 0);
        // Both clocks move on together, 400 ms in 10 ms steps.
        for _ in 0..40 {
            mock.advance(Duration::from_millis(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(pool.get().await.unwrap());
        assert_eq!(
            t.check_calls.load(SeqCst),
            1,
            "checked before use: {:?}",
            pool.metrics()
        );
    });
}
