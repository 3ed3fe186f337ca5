//! `Pool::retry` against the real PostgreSQL on 127.0.0.1:5432 (user
//! `postgres`, database `test`; if it is unreachable these tests fail, they
//! do not skip).
//!
//! A backend is lost the way a server restart or an operator loses it: the
//! test terminates it (`pg_terminate_backend`) from a connection of its
//! own, between two uses of the pooled session. Each test sets its own
//! `application_name`; only its own backends are ever terminated.
#![cfg(feature = "postgres")]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use latchless::managers::{PgConnection, PgManager};
use latchless::{Pool, RetryError, RetryPolicy};
use tokio_postgres::NoTls;

const BASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn app_name(test: &str) -> String {
    format!("latchless-retry-{test}-{}", std::process::id())
}

/// A pool of `app`'s sessions; no pre-ping, so that a dead session is met
/// by the operation, as it is when the server drops it mid-request.
fn pool(app: &str) -> Pool<PgManager> {
    let manager =
        PgManager::from_url(&format!("{BASE} application_name={app} connect_timeout=5")).unwrap();
    Pool::builder(manager)
        .max_size(4)
        .check_after_idle(None)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A connection outside any pool, to kill the pool's sessions.
async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("{BASE} application_name=latchless-retry-admin"),
        NoTls,
    )
    .await
    .expect("PostgreSQL must be reachable on 127.0.0.1:5432 (user postgres, database test)");
    tokio::spawn(conn);
    client
}

/// The session's backend pid (the first use).
async fn pid(conn: &mut PgConnection) -> i32 {
    let row = conn.query_one("SELECT pg_backend_pid()", &[]).await;
    conn.observe(row).expect("the first use succeeds").get(0)
}

/// Terminates backend `pid` and waits (bounded) until it is gone.
async fn kill(admin: &tokio_postgres::Client, pid: i32) {
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed, "backend {pid} terminated");
    let start = Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backend {pid} still there"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The second use: a query whose failure `observe` judges (a lost session
/// marks the connection broken).
async fn answer(conn: &mut PgConnection) -> Result<i32, tokio_postgres::Error> {
    let row = conn.query_one("SELECT 41 + 1", &[]).await;
    conn.observe(row).map(|r| r.get(0))
}

/// A backend killed between two uses of its session: the second use fails
/// on the lost session, and the retry runs the operation again on a fresh
/// connection (another backend), which succeeds. The dead one is closed
/// (counted broken), never handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_between_two_uses_is_retried_on_a_fresh_connection() {
    let app = app_name("killed");
    let pool = pool(&app);
    let admin = admin().await;
    let attempts = AtomicUsize::new(0);
    let pids = std::sync::Mutex::new(Vec::new());
    let policy = RetryPolicy::new(2).timeout(Duration::from_secs(20));
    let answer = pool
        .retry(policy, async |conn| {
            let me = pid(conn).await;
            pids.lock().unwrap().push(me);
            if attempts.fetch_add(1, SeqCst) == 0 {
                kill(&admin, me).await;
            }
            answer(conn).await
        })
        .await
        .expect("retried on a fresh connection");
    assert_eq!(answer, 42);
    assert_eq!(attempts.load(SeqCst), 2, "one retry");
    let pids = pids.into_inner().unwrap();
    assert_ne!(pids[0], pids[1], "the retry ran on another backend");
    let m = pool.metrics();
    assert_eq!(m.broken, 1, "the lost connection was closed");
    assert_eq!(m.opened, 2);
}

/// The same through `tokio::spawn`: the retry future is `Send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_future_runs_on_a_spawned_task() {
    let app = app_name("spawned");
    let pool = pool(&app);
    let admin = std::sync::Arc::new(admin().await);
    let task = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut first = true;
            pool.retry(RetryPolicy::new(1), async move |conn: &mut PgConnection| {
                let me = pid(conn).await;
                if std::mem::take(&mut first) {
                    kill(&admin, me).await;
                }
                answer(conn).await
            })
            .await
            .map_err(|e| e.to_string())
        }
    });
    assert_eq!(task.await.unwrap(), Ok(42));
    assert_eq!(pool.metrics().broken, 1);
}

/// A SQL error (syntax) leaves the session alive: it is returned as is,
/// after one attempt, and the connection goes back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_syntax_error_is_not_retried() {
    let app = app_name("syntax");
    let pool = pool(&app);
    let attempts = AtomicUsize::new(0);
    let err = pool
        .retry(RetryPolicy::new(3), async |conn| {
            attempts.fetch_add(1, SeqCst);
            let rows = conn.query("SELEC 1", &[]).await;
            conn.observe(rows)
        })
        .await
        .unwrap_err();
    assert_eq!(attempts.load(SeqCst), 1, "not retried");
    assert_eq!(err.attempts(), 1);
    let RetryError::Failed(e) = err else {
        panic!("a SQL error is returned as is: {err:?}");
    };
    assert_eq!(e.code().map(|c| c.code()), Some("42601"), "{e}");
    let m = pool.metrics();
    assert_eq!(m.broken, 0, "the session survived");
    assert_eq!(m.state.idle, 1, "back in the pool");
}

/// Every attempt loses its backend: `max_retries` bounds the attempts
/// (1 + 2), and the last error is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_bounds_the_attempts() {
    let app = app_name("count");
    let pool = pool(&app);
    let admin = admin().await;
    let attempts = AtomicUsize::new(0);
    let err = pool
        .retry(RetryPolicy::new(2), async |conn| {
            let n = attempts.fetch_add(1, SeqCst) + 1;
            assert!(n <= 10, "attempt {n}: the count does not bound them");
            let me = pid(conn).await;
            kill(&admin, me).await;
            answer(conn).await
        })
        .await
        .unwrap_err();
    assert_eq!(attempts.load(SeqCst), 3);
    let RetryError::Lost { attempts: n, last } = err else {
        panic!("every attempt lost its connection: {err:?}");
    };
    assert_eq!(n, 3);
    let code = last.code().map(|c| c.code().to_owned());
    assert!(
        last.is_closed() || code.as_deref() == Some("57P01"),
        "the last error is the lost session's: {last}"
    );
    assert_eq!(pool.metrics().broken, 3);
}

/// Every attempt loses its backend and takes at least 100 ms: with a
/// deadline of 350 ms and room for 1,000 retries, no attempt starts after
/// the deadline, so at most four run; one still running at the deadline
/// is cancelled and its connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_the_attempts() {
    let app = app_name("deadline");
    let pool = pool(&app);
    let admin = admin().await;
    let attempts = AtomicUsize::new(0);
    let start = Instant::now();
    let err = pool
        .retry(
            RetryPolicy::new(1_000).timeout(Duration::from_millis(350)),
            async |conn| {
                let n = attempts.fetch_add(1, SeqCst) + 1;
                assert!(n <= 10, "attempt {n}: the deadline does not bound them");
                let me = pid(conn).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                kill(&admin, me).await;
                answer(conn).await
            },
        )
        .await
        .unwrap_err();
    let n = attempts.load(SeqCst);
    assert!(
        (1..=4).contains(&n),
        "{n} attempts in 350 ms of 100 ms each"
    );
    assert_eq!(err.attempts(), n);
    assert!(
        matches!(
            err,
            RetryError::Lost { .. } | RetryError::Timeout { .. } | RetryError::Pool { .. }
        ),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "returned at about the deadline, not after 1,000 attempts"
    );
    // Every connection an attempt used was closed: lost, or cancelled.
    let m = pool.metrics();
    assert_eq!(m.closed, m.opened, "{m:?}");

    // An attempt that outlives the deadline is cancelled, its connection
    // closed (its state is unknown).
    let err = pool
        .retry(
            RetryPolicy::new(3).timeout(Duration::from_millis(100)),
            async |conn| {
                let rows = conn.query("SELECT pg_sleep(5)", &[]).await;
                conn.observe(rows).map(|_| ())
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::Timeout { attempts: 1 }),
        "{err:?}"
    );
    let m = pool.metrics();
    assert_eq!(m.state.size, 0, "the cancelled attempt's connection closed");
}
