//! Connections kept ready off the request path: keepalive checks of idle
//! connections, replacement before `max_lifetime`, and clean-up on return
//! (`Manager::needs_cleanup` / `Manager::cleanup`). Real time on a
//! multi-threaded runtime, with generous bounds: only a hang trips them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::{LONG, TestManager, ms, runtime, wait_until};
use latchless::{Manager, Pool};

// ---------------------------------------------------------------- keepalive

/// A pool whose connections sat idle for a second serves the next `get`s
/// from connections the keepalive checked meanwhile: no pre-ping and no
/// connect on the request path. Without keepalive the first `get`
/// pre-pings (the contrast).
#[test]
fn keepalive_checks_idle_connections_so_gets_pay_no_pre_ping() {
    let rt = runtime();
    rt.block_on(async {
        for keepalive in [Some(ms(150)), None] {
            let (m, t) = TestManager::new();
            let pool = Pool::builder(m)
                .max_size(4)
                .min_idle(2)
                .keepalive(keepalive)
                .check_after_idle(Some(ms(400)))
                .build()
                .unwrap();
            pool.warm_up().await.unwrap();
            tokio::time::sleep(ms(1_000)).await;
            let before = pool.metrics();
            let checks_before = t.check_calls.load(SeqCst);
            {
                let conn = pool.get().await.unwrap();
                drop(conn);
            }
            let after = pool.metrics();
            if keepalive.is_some() {
                assert!(
                    after.keepalive_checks >= 2,
                    "both idle connections were checked in the background: {after:?}"
                );
                assert_eq!(
                    after.hits,
                    before.hits + 1,
                    "the get took a connection the keepalive had just checked, with no pre-ping"
                );
            } else {
                assert_eq!(after.keepalive_checks, 0);
                assert!(
                    t.check_calls.load(SeqCst) > checks_before,
                    "without keepalive the get pre-pinged a connection idle for a second"
                );
            }
            assert_eq!(
                after.acquire_connects, 0,
                "nothing connected on the request path"
            );
        }
    });
}

/// A connection under a keepalive check is never handed out: `try_get`
/// finds nothing, and a `get` waits for the check to pass.
#[test]
fn a_connection_being_kept_alive_is_never_handed_out() {
    let rt = runtime();
    rt.block_on(async {
        let (m, t) = TestManager::new();
        let pool = Pool::builder(m)
            .max_size(1)
            .keepalive(Some(ms(100)))
            .check_after_idle(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        t.check_delay_ms.store(400, SeqCst);
        wait_until("a keepalive check runs", || {
            pool.metrics().keepalive_checks >= 1 && pool.state().idle == 0
        })
        .await;
        assert!(
            pool.try_get().is_none(),
            "the connection under check was handed out"
        );
        let conn = pool.get_timeout(LONG).await.unwrap();
        assert!(t.check_calls.load(SeqCst) >= 1);
        let m = pool.metrics();
        assert_eq!(m.opened, 1, "the get waited for the checked connection");
        assert_eq!(m.waits, 1);
        assert_eq!(m.check_failures, 0);
        drop(conn);
    });
}

/// A keepalive check that fails closes the connection (a failed check)
/// and `min_idle` is refilled with new ones.
#[test]
fn a_failed_keepalive_closes_the_connection_and_min_idle_refills() {
    let rt = runtime();
    rt.block_on(async {
        let (m, t) = TestManager::new();
        let pool = Pool::builder(m)
            .max_size(4)
            .min_idle(2)
            .keepalive(Some(ms(100)))
            .check_after_idle(None)
            .build()
            .unwrap();
        pool.warm_up().await.unwrap();
        // "The server restarted": both connections are dead.
        t.dead_below.store(2, SeqCst);
        wait_until("both dead connections are replaced", || {
            let m = pool.metrics();
            m.check_failures >= 2 && m.opened >= 4 && pool.state().idle == 2
        })
        .await;
        assert_eq!(t.live.load(SeqCst), 2, "the dead ones are closed");
        let conn = pool.get().await.unwrap();
        assert!(conn.id >= 2, "a get never meets a dead connection");
    });
}

/// Keepalive does not hold off `idle_timeout`: a connection kept alive
/// still closes once idle that long.
#[test]
fn keepalive_does_not_hold_off_idle_timeout() {
    let rt = runtime();
    rt.block_on(async {
        let (m, _t) = TestManager::new();
        let pool = Pool::builder(m)
            .keepalive(Some(ms(60)))
            .idle_timeout(Some(ms(500)))
            .check_after_idle(None)
            .build()
            .unwrap();
        drop(pool.get().await.unwrap());
        wait_until("the idle connection times out", || pool.state().size == 0).await;
        let m = pool.metrics();
        assert!(
            m.keepalive_checks >= 1,
            "it was kept alive meanwhile: {m:?}"
        );
        assert_eq!(m.closed_idle, 1);
    });
}

// ---------------------------------------------------- replacement before expiry

/// Two workers in a loop across several lifetime boundaries: with
/// replacement (the default) no `get` connects after warm-up; without
/// it, the same run connects on the request path at the boundaries.
#[test]
fn steady_load_across_lifetime_boundaries_connects_nothing_on_the_request_path() {
    let rt = runtime();
    rt.block_on(async {
        for replace in [Some(Duration::from_secs(30)), None] {
            let (m, t) = TestManager::new();
            t.connect_delay_ms.store(10, SeqCst);
            // The lead is a quarter of the lifetime (300 ms): room for a
            // late pass and a slow connect on a loaded machine.
            // No `min_idle`: its refill would replace expired connections
            // in the background too, and hide the contrast.
            let pool = Pool::builder(m)
                .max_size(4)
                .max_lifetime(Some(ms(1_200)))
                .replace_before_expiry(replace)
                .build()
                .unwrap();
            {
                let a = pool.get().await.unwrap();
                let b = pool.get().await.unwrap();
                drop((a, b));
            }
            let before = pool.metrics();
            let until = tokio::time::Instant::now() + ms(3_000);
            let mut workers = Vec::new();
            for _ in 0..2 {
                let pool = pool.clone();
                workers.push(tokio::spawn(async move {
                    while tokio::time::Instant::now() < until {
                        let conn = pool.get().await.unwrap();
                        tokio::time::sleep(ms(2)).await;
                        drop(conn);
                        tokio::time::sleep(ms(1)).await;
                    }
                }));
            }
            for w in workers {
                w.await.unwrap();
            }
            let m = pool.metrics();
            assert!(
                m.closed_lifetime >= 2,
                "lifetimes ended during the run: {m:?}"
            );
            if replace.is_some() {
                assert!(m.replaced >= 2, "expiring connections were replaced: {m:?}");
                assert_eq!(
                    m.acquire_connects, before.acquire_connects,
                    "a get connected on the request path: {m:?}"
                );
                assert!(m.state.size <= 4);
            } else {
                assert_eq!(m.replaced, 0);
                assert!(
                    m.acquire_connects > before.acquire_connects,
                    "without replacement the boundaries cost request-path connects: {m:?}"
                );
            }
        }
    });
}

/// At `max_size`, an idle connection nearing its lifetime is set aside
/// while its successor connects into its place: the pool never goes above
/// `max_size`, and the old connection closes only once its successor is
/// open.
#[test]
fn at_max_size_the_successor_takes_the_old_connections_place() {
    let rt = runtime();
    rt.block_on(async {
        let (m, t) = TestManager::new();
        t.connect_delay_ms.store(50, SeqCst);
        let pool = Pool::builder(m)
            .max_size(1)
            .max_lifetime(Some(ms(800)))
            .replace_before_expiry(Some(ms(400)))
            .build()
            .unwrap();
        // In use, then returned: the pool is in use near the boundary.
        let first = pool.get().await.unwrap().id;
        let until = tokio::time::Instant::now() + ms(1_500);
        while tokio::time::Instant::now() < until {
            drop(pool.get().await.unwrap());
            tokio::time::sleep(ms(5)).await;
        }
        let m = pool.metrics();
        assert!(m.replaced >= 1, "the connection was replaced: {m:?}");
        assert_eq!(
            t.max_live.load(SeqCst),
            2,
            "one successor connecting beside the old one, never two"
        );
        assert!(pool.state().size <= 1);
        let conn = pool.get().await.unwrap();
        assert_ne!(conn.id, first);
        assert_eq!(
            m.acquire_connects, 1,
            "only the very first get connected: {m:?}"
        );
    });
}

// ------------------------------------------------------------- clean-up on return

/// Counts and gates the clean-ups of [`Dirty`] connections.
struct Cleaning {
    started: AtomicU64,
    passed: AtomicU64,
    /// Clean-ups wait for this to open.
    gate: tokio::sync::Semaphore,
    gated: AtomicBool,
    fail: AtomicBool,
    hang: AtomicBool,
    panic: AtomicBool,
    /// `needs_cleanup` panics while set.
    panic_in_needs: AtomicBool,
    opened: AtomicU64,
}

impl Default for Cleaning {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            gate: tokio::sync::Semaphore::new(0),
            gated: AtomicBool::new(false),
            fail: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            panic: AtomicBool::new(false),
            panic_in_needs: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
struct Session {
    id: u64,
    /// What a holder left behind (an open transaction, a setting).
    dirty: bool,
}

struct Dirty(Arc<Cleaning>);

impl Manager for Dirty {
    type Connection = Session;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Session, std::io::Error> {
        Ok(Session {
            id: self.0.opened.fetch_add(1, SeqCst),
            dirty: false,
        })
    }

    fn needs_cleanup(&self, conn: &mut Session) -> bool {
        if self.0.panic_in_needs.load(SeqCst) {
            panic!("needs_cleanup panicked (test)");
        }
        conn.dirty
    }

    async fn cleanup(&self, conn: &mut Session) -> Result<(), std::io::Error> {
        let c = &self.0;
        c.started.fetch_add(1, SeqCst);
        if c.gated.load(SeqCst) {
            c.gate.acquire().await.unwrap().forget();
        }
        if c.hang.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        if c.panic.load(SeqCst) {
            panic!("cleanup panicked (test)");
        }
        if c.fail.load(SeqCst) {
            return Err(std::io::Error::other("rollback failed (test)"));
        }
        conn.dirty = false;
        c.passed.fetch_add(1, SeqCst);
        Ok(())
    }
}

fn dirty_pool(max_size: usize) -> (Pool<Dirty>, Arc<Cleaning>) {
    let c = Arc::new(Cleaning::default());
    let pool = Pool::builder(Dirty(Arc::clone(&c)))
        .max_size(max_size)
        .check_timeout(ms(300))
        .build()
        .unwrap();
    (pool, c)
}

/// A dirty return is cleaned off the caller's path: the release returns
/// while the clean-up is still blocked, the connection is nobody's until
/// it passes, and then it serves the oldest waiter, clean.
#[test]
fn a_dirty_return_is_cleaned_off_the_callers_path_before_anyone_gets_it() {
    let rt = runtime();
    rt.block_on(async {
        let (pool, c) = dirty_pool(1);
        c.gated.store(true, SeqCst);
        let mut conn = pool.get().await.unwrap();
        conn.dirty = true;
        let started = std::time::Instant::now();
        drop(conn); // returns although the clean-up cannot finish yet
        let release = started.elapsed();
        wait_until("the clean-up starts", || c.started.load(SeqCst) == 1).await;
        assert!(
            pool.try_get().is_none(),
            "a connection being cleaned was handed out"
        );
        assert_eq!(
            pool.state().in_use,
            1,
            "a connection being cleaned counts as in use"
        );
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get_timeout(LONG).await.map(|c| c.dirty) })
        };
        tokio::time::sleep(ms(100)).await;
        assert!(
            !waiter.is_finished(),
            "the waiter got the connection before its clean-up passed"
        );
        c.gate.add_permits(1);
        assert!(!waiter.await.unwrap().unwrap(), "the waiter got it clean");
        let m = pool.metrics();
        assert_eq!((m.cleanups, m.closed_cleanup, m.opened), (1, 0, 1));
        println!("release with a clean-up pending took {release:?}");
    });
}

/// A clean return runs no clean-up and is idle at once.
#[test]
fn a_clean_return_runs_no_cleanup() {
    let rt = runtime();
    rt.block_on(async {
        let (pool, c) = dirty_pool(1);
        drop(pool.get().await.unwrap());
        assert!(pool.try_get().is_some(), "idle at once");
        assert_eq!(c.started.load(SeqCst), 0);
        assert_eq!(pool.metrics().cleanups, 0);
    });
}

/// A clean-up that fails, or panics, closes the connection (counted) and
/// loses no place: the next `get` connects a new one.
#[test]
fn a_failed_or_panicking_cleanup_closes_the_connection() {
    let rt = runtime();
    rt.block_on(async {
        for flag in ["fail", "panic"] {
            let (pool, c) = dirty_pool(1);
            match flag {
                "fail" => c.fail.store(true, SeqCst),
                _ => c.panic.store(true, SeqCst),
            }
            let mut conn = pool.get().await.unwrap();
            conn.dirty = true;
            drop(conn);
            wait_until("the connection is closed", || {
                pool.metrics().closed_cleanup == 1
            })
            .await;
            let conn = pool.get_timeout(LONG).await.unwrap();
            assert_eq!(conn.id, 1, "{flag}: a new connection in the freed place");
            assert_eq!(pool.metrics().closed, 1);
        }
    });
}

/// A clean-up that hangs is cut off by `check_timeout` and closes its
/// connection; a waiter is served meanwhile by another connection.
#[test]
fn a_hanging_cleanup_is_bounded_and_a_waiter_is_served_meanwhile() {
    let rt = runtime();
    rt.block_on(async {
        let (pool, c) = dirty_pool(2);
        c.hang.store(true, SeqCst);
        let mut a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        a.dirty = true;
        drop(a); // hangs in its clean-up
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get_timeout(LONG).await.map(|c| c.id) })
        };
        wait_until("the waiter parks", || pool.state().waiting == 1).await;
        let b_id = b.id;
        drop(b);
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            b_id,
            "served by the other connection"
        );
        wait_until("the hanging clean-up is cut off", || {
            pool.metrics().closed_cleanup == 1
        })
        .await;
        assert_eq!(
            pool.state().size,
            1,
            "its connection is closed and its place free"
        );
    });
}

/// Returned outside any runtime, a connection that needs cleaning cannot
/// be cleaned: it is closed, not handed on dirty.
#[test]
fn without_a_runtime_a_dirty_connection_is_closed() {
    let (pool, c) = {
        let rt = runtime();
        rt.block_on(async { dirty_pool(1) })
    };
    let rt = runtime();
    let mut conn = rt.block_on(pool.get()).unwrap();
    drop(rt);
    conn.dirty = true;
    drop(conn);
    let m = pool.metrics();
    assert_eq!((m.cleanups, m.closed_cleanup, m.state.size), (1, 1, 0));
    assert_eq!(c.started.load(SeqCst), 0);
}

/// A panic in `needs_cleanup` closes the returned connection (counted as
/// broken) and loses no place.
#[test]
fn a_panic_in_needs_cleanup_closes_the_connection() {
    let rt = runtime();
    rt.block_on(async {
        let (pool, c) = dirty_pool(1);
        c.panic_in_needs.store(true, SeqCst);
        drop(pool.get().await.unwrap());
        let m = pool.metrics();
        assert_eq!((m.broken, m.cleanups, m.state.size), (1, 0, 0));
        c.panic_in_needs.store(false, SeqCst);
        assert_eq!(pool.get_timeout(LONG).await.unwrap().id, 1);
    });
}
