//! Connections kept ready off the request path, against the real
//! PostgreSQL on 127.0.0.1:5432: keepalive against the server's own
//! `idle_session_timeout`, replacement across `max_lifetime` boundaries
//! under steady load, and clean-up on return (`PgCleanup`).
//!
//! Each test names its sessions (`application_name`); nothing here kills
//! or reconfigures anything but its own sessions. Every loop is bounded.
#![cfg(feature = "postgres")]

use std::time::{Duration, Instant};

use latchless::Pool;
use latchless::managers::{PgCleanup, PgManager};

const BASE: &str = "host=127.0.0.1 port=5432 user=root dbname=test";

fn manager(test: &str) -> PgManager {
    let app = format!("latchless-{test}-{}", std::process::id());
    PgManager::from_url(&format!("{BASE} application_name={app} connect_timeout=5")).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sessions that the server ends after 2 s idle (`idle_session_timeout`,
/// set per session by the init hook), pre-ping off: after 5 s of quiet,
/// 20 requests with keepalive at 1 s fail none and connect nothing on the
/// request path; without keepalive the same run meets dead sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_sessions_alive_past_the_servers_idle_timeout() {
    for keepalive in [Some(Duration::from_secs(1)), None] {
        let m = manager("keepalive")
            .with_init(|conn| Box::pin(conn.batch_execute("SET idle_session_timeout = '2s'")));
        let pool = Pool::builder(m)
            .max_size(4)
            .min_idle(2)
            .keepalive(keepalive)
            .check_after_idle(None)
            .build()
            .unwrap();
        pool.warm_up().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = pool.metrics();
        let mut failed = 0;
        for _ in 0..20 {
            let conn = pool.get().await.unwrap();
            let result = conn.simple_query("SELECT 1").await;
            let result = conn_observe(conn, result);
            if result.is_err() {
                failed += 1;
            }
        }
        let after = pool.metrics();
        let connects = after.acquire_connects - before.acquire_connects;
        println!(
            "keepalive {keepalive:?}: {failed} of 20 requests failed, {connects} request-path connects, {} keepalive checks",
            after.keepalive_checks
        );
        if keepalive.is_some() {
            assert_eq!(failed, 0, "a request met a session the server had ended");
            assert_eq!(connects, 0, "a request connected: {after:?}");
            assert!(after.keepalive_checks >= 4, "{after:?}");
        } else {
            assert!(
                failed + connects > 0,
                "without keepalive the ended sessions cost requests or request-path connects"
            );
        }
    }
}

/// Marks the connection broken if the error lost the session (as callers
/// of `PgConnection::observe` do), then returns it.
fn conn_observe<T>(
    mut conn: latchless::Pooled<PgManager>,
    result: Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    conn.observe(result)
}

/// `max_lifetime` 2 s under steady load for 6 s: with replacement (the
/// default) no `get` connects after warm-up, and the acquire-wait tail at
/// the lifetime boundaries stays at its level between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_across_lifetime_boundaries_connects_nothing() {
    let pool = Pool::builder(manager("lifetime"))
        .max_size(6)
        .min_idle(3)
        .max_lifetime(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    pool.warm_up().await.unwrap();
    let before = pool.metrics();
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            while start.elapsed() < Duration::from_secs(6) {
                let t = Instant::now();
                let conn = pool.get().await.unwrap();
                waits.push((start.elapsed(), t.elapsed()));
                conn.simple_query("SELECT 1").await.unwrap();
                drop(conn);
                tokio::time::sleep(ms(2)).await;
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for w in workers {
        waits.extend(w.await.unwrap());
    }
    let m = pool.metrics();
    // Windows of 200 ms around each 2 s boundary (lifetimes are jittered
    // up to 5% shorter) against the rest.
    let near = |at: Duration| {
        let s = at.as_secs_f64();
        (1..=3).any(|k| (s - 1.9 * k as f64).abs() < 0.2 || (s - 2.0 * k as f64).abs() < 0.2)
    };
    let pct = |mut v: Vec<Duration>, p: f64| {
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let gets = waits.len();
    let (at, between): (Vec<_>, Vec<_>) = waits.into_iter().partition(|(t, _)| near(*t));
    let at: Vec<Duration> = at.into_iter().map(|(_, w)| w).collect();
    let between: Vec<Duration> = between.into_iter().map(|(_, w)| w).collect();
    println!(
        "{} gets; acquire wait p99 / p99.9 near boundaries {:?} / {:?}, between {:?} / {:?}; replaced {}, closed_lifetime {}",
        gets,
        pct(at.clone(), 0.99),
        pct(at.clone(), 0.999),
        pct(between.clone(), 0.99),
        pct(between.clone(), 0.999),
        m.replaced,
        m.closed_lifetime
    );
    assert!(
        m.closed_lifetime >= 3,
        "lifetimes ended during the run: {m:?}"
    );
    assert!(m.replaced >= 3, "{m:?}");
    assert_eq!(
        m.acquire_connects, before.acquire_connects,
        "a get connected on the request path: {m:?}"
    );
    assert!(m.state.size <= 6);
}

async fn in_transaction(conn: &tokio_postgres::Client) -> bool {
    // A savepoint can be set only inside a transaction block.
    match conn.batch_execute("SAVEPOINT latchless_probe").await {
        Ok(()) => {
            conn.batch_execute("RELEASE SAVEPOINT latchless_probe")
                .await
                .unwrap();
            true
        }
        Err(e) => {
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION),
                "{e:?}"
            );
            false
        }
    }
}

async fn setting(conn: &tokio_postgres::Client, name: &str) -> String {
    let row = conn
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .unwrap();
    row.get(0)
}

async fn backend(conn: &tokio_postgres::Client) -> i32 {
    conn.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// One holder leaves a session setting and an open transaction behind;
/// the next holder of the same backend sees no open transaction under
/// `Rollback`, and under `Reset` also no setting (and the init hook's
/// setting again). Without a policy both leak (the contrast). The release
/// itself returns at once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_on_return_rolls_back_and_resets_the_session() {
    for policy in [PgCleanup::None, PgCleanup::Rollback, PgCleanup::Reset] {
        let m = manager("cleanup")
            .with_init(|conn| Box::pin(conn.batch_execute("SET statement_timeout = '7s'")))
            .with_cleanup(policy);
        let pool = Pool::builder(m).max_size(1).build().unwrap();
        let conn = pool.get().await.unwrap();
        let pid = backend(&conn).await;
        conn.batch_execute("SET statement_timeout = '3s'; SET application_name = 'dirty'")
            .await
            .unwrap();
        conn.batch_execute("BEGIN").await.unwrap();
        assert!(in_transaction(&conn).await);
        let t = Instant::now();
        drop(conn);
        let release = t.elapsed();
        let next = pool.get().await.unwrap();
        assert_eq!(backend(&next).await, pid, "the same session");
        let open = in_transaction(&next).await;
        let timeout = setting(&next, "statement_timeout").await;
        println!(
            "{policy:?}: release took {release:?}; next holder: in a transaction {open}, statement_timeout {timeout}"
        );
        match policy {
            PgCleanup::None => {
                assert!(
                    open,
                    "without clean-up the transaction leaks (the contrast)"
                );
            }
            PgCleanup::Rollback => {
                assert!(!open, "the transaction was rolled back");
                assert_eq!(timeout, "3s", "Rollback keeps session settings");
            }
            _ => {
                assert!(!open, "the transaction was rolled back");
                assert_eq!(
                    timeout, "7s",
                    "Reset discarded the setting and re-ran the init hook"
                );
                assert_ne!(setting(&next, "application_name").await, "dirty");
            }
        }
        if policy != PgCleanup::None {
            assert!(
                release < ms(50),
                "the release waited for the clean-up: {release:?}"
            );
        }
        let m = pool.metrics();
        assert_eq!(m.cleanups, u64::from(policy != PgCleanup::None));
        assert_eq!(m.closed_cleanup, 0);
    }
}

/// The statements prepared on this session, as the server sees them.
async fn prepared(conn: &tokio_postgres::Client) -> Vec<String> {
    let rows = conn
        .query(
            "SELECT statement FROM pg_prepared_statements \
             WHERE statement NOT LIKE '%pg_prepared_statements%' ORDER BY statement",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// The statement cache keeps at most its capacity, dropping (and closing
/// on the server) the least recently used; capacity 0 caches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_cache_is_bounded_lru() {
    let pool = Pool::builder(manager("stmt-cache").with_statement_cache(2))
        .max_size(1)
        .build()
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    for sql in ["SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3"] {
        drop(conn.prepare_cached(sql).await.unwrap());
    }
    assert_eq!(conn.cached_statements(), 2);
    // `SELECT 1` was used after `SELECT 2`: `SELECT 2` went.
    assert_eq!(prepared(&conn).await, ["SELECT 1", "SELECT 3"]);
    drop(conn);

    let pool = Pool::builder(manager("stmt-cache-0").with_statement_cache(0))
        .max_size(1)
        .build()
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    for _ in 0..3 {
        drop(conn.prepare_cached("SELECT 1").await.unwrap());
    }
    assert_eq!(conn.cached_statements(), 0);
    assert!(
        prepared(&conn).await.is_empty(),
        "capacity 0 keeps nothing on the server"
    );
}
