//! Behaviours whose tests the mutation runs (`scripts/mutants.sh`,
//! CONTRIBUTING.md, "Mutation testing") found missing: the restart epoch
//! started by a connect that fails after a success, and connect retries
//! whose pauses grow, stay bounded and are spread by jitter. Time is the
//! mock clock's and Tokio's paused clock's: nothing here sleeps.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LONG, TestManager, runtime};
use latchless::{Clock, Manager, Pool, PoolError};

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
