//! `PgManager` against the real PostgreSQL on 127.0.0.1:5432 (CI starts it;
//! if it is unreachable these tests fail, they do not skip).
//!
//! Each test sets its own `application_name` and kills only the backends
//! that carry it (`pg_terminate_backend`); the server is never restarted.
//! Every loop is bounded in count and time. Which connect errors are
//! permanent is checked against the real server where it can produce them
//! without a change to its config (unknown role, unknown database, unknown
//! startup parameter, failing init SQL, TLS), and against an in-test fake
//! server for the rest (too many connections, starting up, authentication
//! methods, no TLS). What a real server cannot be made to do on demand is
//! staged too: a session that stops answering with its socket open (a
//! forwarder that freezes), and an error that says the session is gone
//! while its socket stays open (a fake server's answer to a query).
#![cfg(feature = "postgres")]

mod forward;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use latchless::managers::{PgError, PgManager};
use latchless::{Manager, Pool, PoolError};
use std::future::Future;
use tokio_postgres::NoTls;

const BASE: &str = "host=127.0.0.1 port=5432 user=root dbname=test";

fn app_name(test: &str) -> String {
    format!("latchless-{test}-{}", std::process::id())
}

fn manager(app: &str) -> PgManager {
    PgManager::from_url(&format!("{BASE} application_name={app} connect_timeout=5")).unwrap()
}

/// A connection outside any pool, to watch and kill the pool's sessions.
async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("{BASE} application_name=latchless-test-admin"),
        NoTls,
    )
    .await
    .expect("PostgreSQL must be reachable on 127.0.0.1:5432 (user root, database test)");
    tokio::spawn(conn);
    client
}

async fn pid(conn: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    conn.query_one("SELECT pg_backend_pid()", &[])
        .await
        .map(|r| r.get(0))
}

/// Open `n` connections (held at once, then returned idle).
async fn warm(pool: &Pool<PgManager>, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    assert_eq!(pool.state().size, n);
}

async fn sessions(admin: &tokio_postgres::Client, app: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

/// Terminate every backend of `app`; returns how many.
async fn kill_all(admin: &tokio_postgres::Client, app: &str) -> usize {
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .len()
}

/// Wait (bounded) until the server has no backend of `app` left.
async fn wait_gone(admin: &tokio_postgres::Client, app: &str) {
    let start = Instant::now();
    while sessions(admin, app).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{app}: backends did not exit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_never_open_more_than_max_size_sessions() {
    const N: usize = 4;
    const M: usize = 200;
    let app = app_name("cap");
    let admin = admin().await;
    let inits = Arc::new(AtomicUsize::new(0));
    let i = inits.clone();
    let manager = manager(&app).with_init(move |conn| {
        i.fetch_add(1, SeqCst);
        Box::pin(async move {
            conn.batch_execute("SET search_path TO latchless_test, public")
                .await
        })
    });
    let pool = Pool::builder(manager)
        .max_size(N)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let (mut max, mut samples) = (0i64, 0u32);
            let start = Instant::now();
            while !done.load(SeqCst)
                && start.elapsed() < Duration::from_secs(60)
                && samples < 100_000
            {
                max = max.max(sessions(&admin, &app).await);
                samples += 1;
            }
            (max, samples)
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..M {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let conn = pool.get().await.map_err(|e| e.to_string())?;
            let row = conn
                .query_one(
                    "SELECT current_setting('search_path'), pg_sleep(0.002)::text",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(row.get(0))
        }));
    }
    for t in tasks {
        let search_path = t.await.unwrap().unwrap();
        assert_eq!(
            search_path, "latchless_test, public",
            "the init hook ran on this connection"
        );
    }
    done.store(true, SeqCst);
    let (max, samples) = sampler.await.unwrap();
    let opened = inits.load(SeqCst);
    println!(
        "postgres: {M} concurrent requests over a pool of {N}: pg_stat_activity showed at most {max} sessions ({samples} samples); {opened} connections opened, init ran once each"
    );
    assert!(
        max <= N as i64,
        "server saw {max} sessions, max_size is {N}"
    );
    assert!(
        max >= 1 && samples >= 2,
        "the sampler saw the pool's sessions"
    );
    assert!(
        opened <= N,
        "init ran {opened} times for at most {N} connections"
    );
    assert_eq!(
        pool.state().size,
        opened,
        "init ran exactly once per connection"
    );
}

#[tokio::test]
async fn a_killed_session_is_broken_without_a_round_trip() {
    let app = app_name("closed");
    let admin = admin().await;
    let pool = Pool::builder(manager(&app))
        .max_size(1)
        .check_after_idle(None)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.simple_query("SELECT 1").await.unwrap();
        assert!(!pool.manager().is_broken(&mut conn));
        assert_eq!(kill_all(&admin, &app).await, 1);
        let start = Instant::now();
        while !pool.manager().is_broken(&mut conn) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "is_broken never saw the kill"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(
        pool.state().size,
        0,
        "the dead session was closed on return, not pooled"
    );
    let conn = pool.get().await.unwrap();
    conn.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_killed_with_pre_ping_and_paced_requests_fails_no_request() {
    const N: usize = 4;
    let app = app_name("paced");
    let admin = admin().await;
    let pool = Pool::builder(manager(&app))
        .max_size(N)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    warm(&pool, N).await;
    let mut old = std::collections::HashSet::new();
    for _ in 0..20 {
        let conn = pool.get().await.unwrap();
        old.insert(pid(&conn).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sessions(&admin, &app).await, N as i64);

    // Kill every backend between two requests, then keep the pace.
    let killed_at = Instant::now();
    assert_eq!(kill_all(&admin, &app).await, N);
    let (mut failures, mut recovered, mut served_new) = (0, None, 0);
    for _ in 0..100 {
        match pool.get().await {
            Ok(mut conn) => match pid(&conn).await {
                Ok(p) => {
                    recovered.get_or_insert(killed_at.elapsed());
                    assert!(!old.contains(&p), "served by a killed backend {p}");
                    served_new += 1;
                }
                Err(e) => {
                    conn.mark_broken();
                    failures += 1;
                    eprintln!("request failed after the kill: {e}");
                }
            },
            Err(e) => panic!("get failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recovered = recovered.expect("no request succeeded after the kill");
    println!(
        "postgres: {N} sessions killed, pre-ping on, paced: {failures} failed requests, first success {recovered:?} after the kill, {served_new} served by new sessions"
    );
    assert_eq!(failures, 0, "pre-ping must catch every killed session");
    assert!(pool.state().size <= N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_killed_in_a_tight_loop_costs_at_most_one_failure_per_connection() {
    const N: usize = 4;
    let app = app_name("tight");
    let admin = admin().await;
    let pool = Pool::builder(manager(&app))
        .max_size(N)
        .check_after_idle(None) // no pre-ping: only is_broken protects the callers
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    warm(&pool, N).await;

    let start = Instant::now();
    let kill_at = Duration::from_millis(300);
    let stop_at = Duration::from_millis(1300);
    let mut workers = Vec::new();
    for _ in 0..N {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            // (time since start, error) of each failure; successes after the kill.
            let (mut failures, mut ok_after_kill, mut n) = (Vec::new(), 0u32, 0u32);
            while start.elapsed() < stop_at && n < 200_000 {
                n += 1;
                let mut conn = match pool.get().await {
                    Ok(c) => c,
                    Err(e) => {
                        failures.push((start.elapsed(), format!("get: {e}"), false));
                        continue;
                    }
                };
                let result = conn.simple_query("SELECT 1").await;
                match conn.observe(result) {
                    Ok(_) if start.elapsed() > kill_at => ok_after_kill += 1,
                    Ok(_) => {}
                    Err(e) => {
                        // A clean, typed error: the session was terminated or closed.
                        let clean = e.is_closed()
                            || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN)
                            || std::error::Error::source(&e)
                                .is_some_and(|s| s.is::<std::io::Error>());
                        failures.push((start.elapsed(), e.to_string(), clean));
                    }
                }
                tokio::task::yield_now().await;
            }
            (failures, ok_after_kill)
        }));
    }
    tokio::time::sleep(kill_at).await;
    let killed_after = start.elapsed();
    let killed = kill_all(&admin, &app).await;
    let (mut failures, mut ok_after) = (Vec::new(), 0);
    for w in workers {
        let (f, ok) = w.await.unwrap();
        failures.extend(f);
        ok_after += ok;
    }
    let last = failures.iter().map(|f| f.0).max();
    println!(
        "postgres: {killed} sessions killed in a tight loop, no pre-ping: {} failed requests (last {:?} after the kill), {ok_after} succeeded after the kill",
        failures.len(),
        last.map(|l| l.saturating_sub(killed_after)),
    );
    for f in &failures {
        assert!(f.2, "not a clean session-lost error: {}", f.1);
    }
    assert_eq!(killed, N);
    assert!(
        failures.len() <= N,
        "{} failures for {N} killed sessions: {failures:?}",
        failures.len()
    );
    assert!(ok_after > 0, "the pool recovered");
    assert!(pool.state().size <= N);
}

#[tokio::test]
async fn connect_errors_are_clear_typed_and_leak_no_place() {
    let app = app_name("errors");
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            "closed port",
            format!("host=127.0.0.1 port={closed_port} user=root dbname=test connect_timeout=2"),
        ),
        (
            "unknown role",
            format!("{BASE} user=latchless_no_such_role application_name={app} connect_timeout=2"),
        ),
        (
            "unknown database",
            format!(
                "host=127.0.0.1 user=root dbname=latchless_no_such_db application_name={app} connect_timeout=2"
            ),
        ),
    ];
    for (what, url) in &cases {
        let pool = Pool::builder(PgManager::from_url(url).unwrap())
            .max_size(2)
            .connect_timeout(Duration::from_secs(2))
            .fail_fast(true)
            .build()
            .unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("postgres, {what}: {err} ({elapsed:?})");
        assert!(
            matches!(err, PoolError::Connect(PgError::Connect(_))),
            "{what}: {err:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "{what}: took {elapsed:?}");
        assert_eq!(pool.state().size, 0, "{what}: a place leaked");
    }
    // Without fail-fast, a refused port is retried until the deadline,
    // then the last error (the unknown role and database are permanent:
    // see `permanent_errors_fail_at_once_with_default_settings`).
    let pool = Pool::builder(PgManager::from_url(&cases[0].1).unwrap())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = pool
        .get_timeout(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PoolError::Connect(PgError::Connect(_))),
        "{err:?}"
    );
    assert_eq!(pool.state().size, 0);

    // A bad URL is a typed error, not a panic.
    assert!(matches!(
        PgManager::from_url("postgres://h:port/x"),
        Err(PgError::Config(_))
    ));
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn tls_with_an_untrusted_server_certificate_is_a_connect_error() {
    use latchless::managers::rustls;
    let app = app_name("tls");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let manager = PgManager::from_url(&format!("{BASE} sslmode=require application_name={app}"))
        .unwrap()
        .with_tls(tls);
    let pool = Pool::builder(manager)
        .fail_fast(true)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    println!(
        "postgres over TLS, untrusted certificate: {err} ({:?})",
        start.elapsed()
    );
    assert!(
        matches!(err, PoolError::Connect(PgError::Connect(_))),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(pool.state().size, 0);
}

#[tokio::test]
async fn a_failing_init_hook_is_an_init_error_and_closes_the_session() {
    let app = app_name("init");
    let admin = admin().await;
    let failing =
        manager(&app).with_init(|conn| Box::pin(conn.batch_execute("SELECT no_such_column")));
    let pool = Pool::builder(failing).fail_fast(true).build().unwrap();
    let err = pool.get().await.unwrap_err();
    assert!(
        matches!(err, PoolError::Connect(PgError::Init(_))),
        "{err:?}"
    );
    assert_eq!(pool.state().size, 0);
    wait_gone(&admin, &app).await;

    // Statements prepared in init are cached per connection.
    let preparing = manager(&app).with_init(|conn| {
        Box::pin(async move { conn.prepare_cached("SELECT $1::int4 + 1").await.map(drop) })
    });
    let pool = Pool::builder(preparing).max_size(1).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    let stmt = conn.prepare_cached("SELECT $1::int4 + 1").await.unwrap();
    let row = conn.query_one(&stmt, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // An ordinary SQL error does not break the connection; a lost session does.
    let bad = conn.simple_query("SELECT no_such_column").await;
    assert!(conn.observe(bad).is_err());
    assert!(
        !conn.is_marked_broken() && !conn.is_closed(),
        "a SQL error leaves the session usable"
    );
}

#[test]
fn debug_never_shows_the_password() {
    let m = PgManager::from_url("postgres://root:hunter2-secret@127.0.0.1/test").unwrap();
    let shown = format!("{m:?} {m:#?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    assert!(shown.contains("root"));
}

/// Acquire p99.9 through the pool next to the `SELECT 1` round trip p50,
/// printed (not asserted: timing depends on the machine).
#[tokio::test]
async fn report_acquire_overhead_next_to_select_1() {
    let app = app_name("overhead");
    let pool = Pool::builder(manager(&app)).max_size(1).build().unwrap();
    let conn = pool.get().await.unwrap();
    let mut rtt = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        conn.simple_query("SELECT 1").await.unwrap();
        rtt.push(t.elapsed());
    }
    drop(conn);
    let mut acq = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        let conn = pool.get().await.unwrap();
        acq.push(t.elapsed());
        drop(conn);
    }
    rtt.sort();
    acq.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let (select_p50, acq_p50, acq_p999) = (p(&rtt, 0.5), p(&acq, 0.5), p(&acq, 0.999));
    let build = if cfg!(debug_assertions) {
        "debug build; for the release figure run `cargo run --release --example postgres --features postgres`"
    } else {
        "release build"
    };
    println!(
        "postgres overhead ({build}): SELECT 1 p50 {select_p50:?}; acquire p50 {acq_p50:?}, p99.9 {acq_p999:?} = {:.2}% of SELECT 1 p50 (target < 1%)",
        100.0 * acq_p999.as_secs_f64() / select_p50.as_secs_f64()
    );
}

#[test]
fn connect_outside_a_tokio_runtime_is_a_typed_error_not_a_panic() {
    let manager = manager(&app_name("noruntime"));
    let mut connect = std::pin::pin!(manager.connect());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match connect.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(PgError::NoRuntime)) => {}
        std::task::Poll::Ready(other) => panic!("expected NoRuntime, got {:?}", other.err()),
        std::task::Poll::Pending => panic!("expected NoRuntime at once"),
    }
}

// ---- Faults (issue 12): one broken connection, idle backends killed,
// a pre-ping whose caller goes away. ----

/// `PgManager` with its checks counted and, optionally, slowed down (to
/// cancel a `get` in the middle of one).
struct Counted {
    inner: PgManager,
    checks: Arc<AtomicUsize>,
    check_delay: Duration,
}

impl Manager for Counted {
    type Connection = <PgManager as Manager>::Connection;
    type Error = PgError;

    fn connect(&self) -> impl Future<Output = Result<Self::Connection, PgError>> + Send {
        self.inner.connect()
    }

    async fn check(&self, conn: &mut Self::Connection) -> Result<(), PgError> {
        self.checks.fetch_add(1, SeqCst);
        let r = self.inner.check(conn).await;
        tokio::time::sleep(self.check_delay).await;
        r
    }

    fn is_broken(&self, conn: &mut Self::Connection) -> bool {
        self.inner.is_broken(conn)
    }
}

fn counted(app: &str, check_delay: Duration) -> (Counted, Arc<AtomicUsize>) {
    let checks = Arc::new(AtomicUsize::new(0));
    let m = Counted {
        inner: manager(app),
        checks: Arc::clone(&checks),
        check_delay,
    };
    (m, checks)
}

/// `Pooled::mark_broken` after a failed request closes that session only;
/// the pool then checks one other connection (a probe), not all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_marked_broken_closes_its_session_and_probes_one_other() {
    let app = app_name("mark-broken");
    let admin = admin().await;
    let (m, checks) = counted(&app, Duration::ZERO);
    let pool = Pool::builder(m)
        .max_size(3)
        .check_after_idle(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.unwrap());
    }
    drop(held);
    assert_eq!(sessions(&admin, &app).await, 3);
    let mut conn = pool.get().await.unwrap();
    // A request fails in a way the application judges fatal for this
    // connection (here: a statement that aborts the session's state).
    let failed = conn.client().simple_query("SELECT 1/0").await;
    assert!(failed.is_err());
    latchless::Pooled::mark_broken(&mut conn);
    drop(conn);
    let start = Instant::now();
    while sessions(&admin, &app).await != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "session not closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    assert_eq!(checks.load(SeqCst), 1, "one probe, not a pool-wide check");
    let m = pool.metrics();
    assert_eq!((m.broken, m.check_failures, m.opened), (1, 0, 3));
    drop((a, b));
}

/// The connection's own mark (`PgConnection::mark_broken`, for a failure
/// only the caller sees) closes its session on return: the next `get`
/// opens another.
#[tokio::test]
async fn a_session_its_connection_marked_broken_is_closed_on_return() {
    let app = app_name("conn-mark");
    let pool = Pool::builder(manager(&app)).max_size(1).build().unwrap();
    let mut conn = pool.get().await.unwrap();
    let first = pid(conn.client()).await.unwrap();
    assert!(!conn.is_marked_broken());
    conn.mark_broken();
    assert!(conn.is_marked_broken());
    drop(conn);
    let conn = pool.get().await.unwrap();
    assert_ne!(pid(conn.client()).await.unwrap(), first, "a new session");
    let m = pool.metrics();
    assert_eq!((m.broken, m.opened), (1, 2), "{m:?}");
}

/// Backends killed while idle: the client reports them closed, and the
/// pool sees that when it hands them out (`is_broken` at hand-out), so no
/// request fails even with pre-ping off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_killed_are_caught_at_hand_out_and_no_request_fails() {
    let app = app_name("handout");
    let admin = admin().await;
    let (m, checks) = counted(&app, Duration::ZERO);
    let pool = Pool::builder(m)
        .max_size(4)
        .check_after_idle(None)
        .build()
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    drop(held);
    assert_eq!(kill_all(&admin, &app).await, 4);
    wait_gone(&admin, &app).await;
    // Give the clients' connection tasks a moment to read the server's
    // goodbye (they do within milliseconds on loopback; generous here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.state().idle, 4, "still idle: nothing handed out yet");
    for i in 0..8 {
        let conn = pool.get().await.unwrap();
        let r = conn.client().simple_query("SELECT 1").await;
        assert!(r.is_ok(), "request {i} failed: {r:?}");
    }
    let m = pool.metrics();
    assert_eq!(m.broken, 4, "all four found closed at hand-out: {m:?}");
    assert_eq!(
        m.opened, 5,
        "one new session serves the sequential requests"
    );
    // Broken connections arm one probe of a later idle connection, which
    // passed: no pool-wide check.
    assert!(checks.load(SeqCst) <= 1, "{} checks", checks.load(SeqCst));
    assert_eq!(m.check_failures, 0);
}

/// A `get` cancelled during its pre-ping keeps the healthy backend: the
/// check finishes without it and the same session serves the next `get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_cancelled_during_its_pre_ping_keeps_the_session() {
    let app = app_name("cancel-check");
    let admin = admin().await;
    let (m, checks) = counted(&app, Duration::from_millis(150));
    let pool = Pool::builder(m)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    let before = {
        let c = pool.get().await.unwrap();
        pid(c.client()).await.unwrap()
    };
    let cut = tokio::time::timeout(Duration::from_millis(30), pool.get()).await;
    assert!(cut.is_err(), "cancelled in the middle of its check");
    assert_eq!(pool.metrics().checks_detached, 1);
    let start = Instant::now();
    while pool.state().idle != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = pool.get().await.unwrap();
    assert_eq!(pid(c.client()).await.unwrap(), before, "the same session");
    let m = pool.metrics();
    assert_eq!((m.check_failures, m.opened, m.closed), (0, 1, 0));
    // The first get connected (no check); the cancelled one and this one
    // each checked.
    assert_eq!(checks.load(SeqCst), 2);
    assert_eq!(sessions(&admin, &app).await, 1);
}

// ---- Permanent connect errors: what the next attempt would send unchanged. ----

/// Runs `get` then `warm_up` on a pool with default settings (a 30 s
/// acquire timeout, retries with backoff): both must fail at once with
/// `Connect`, count as permanent, and leave nothing open. Returns the
/// error's text.
async fn assert_fails_at_once(what: &str, manager: PgManager) -> String {
    let pool = Pool::builder(manager.clone()).build().unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    println!("postgres, {what}: {err} ({elapsed:?})");
    let PoolError::Connect(e) = &err else {
        panic!("{what}: expected Connect, got {err:?}");
    };
    assert!(e.is_permanent(), "{what}: {e}");
    assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
    let metrics = pool.metrics();
    assert_eq!(metrics.permanent_errors, 1, "{what}: {metrics:?}");
    assert_eq!(metrics.connect_errors, 1, "{what}: retried: {metrics:?}");
    // One permanent error opens the breaker: the next `get` that would
    // connect fails fast, carrying the error's text.
    assert!(metrics.backend_down, "{what}: {metrics:?}");
    let again = pool.get().await.unwrap_err();
    assert!(
        matches!(&again, PoolError::Unavailable(o) if !o.last_error().is_empty()),
        "{what}: {again:?}"
    );
    assert_eq!(pool.state().size, 0, "{what}: a place leaked");
    // `warm_up` on a pool of its own: the same error, at once.
    let pool = Pool::builder(manager).build().unwrap();
    let start = Instant::now();
    let warm = pool.warm_up().await;
    assert!(
        matches!(warm, Err(PoolError::Connect(_))),
        "{what}: {warm:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{what}: warm_up took {:?}",
        start.elapsed()
    );
    assert_eq!(pool.state().size, 0, "{what}: a place leaked");
    assert_eq!(pool.metrics().connect_errors, 1, "{what}: retried");
    err.to_string()
}

#[tokio::test]
async fn permanent_errors_fail_at_once_with_default_settings() {
    let app = app_name("permanent");
    let url = |extra: &str| format!("host=127.0.0.1 port=5432 application_name={app} {extra}");
    let cases = [
        (
            "unknown role",
            url("user=no_such_role_latchless dbname=test"),
            &["28000", "no_such_role_latchless", "does not exist"][..],
        ),
        (
            "unknown database",
            url("user=root dbname=no_such_db_latchless"),
            &["3D000", "no_such_db_latchless", "does not exist"],
        ),
        (
            "unknown startup parameter",
            url("user=root dbname=test options='-c no_such_parameter=1'"),
            &["42704", "no_such_parameter"],
        ),
        (
            "sslmode=require without a TLS config",
            url("user=root dbname=test sslmode=require"),
            &["TLS"],
        ),
    ];
    for (what, url, needles) in cases {
        let shown = assert_fails_at_once(what, PgManager::from_url(&url).unwrap()).await;
        for needle in needles {
            assert!(
                shown.contains(needle),
                "{what}: {needle:?} not in {shown:?}"
            );
        }
    }
    // The init hook's SQL fails the same way on every new session.
    let failing =
        manager(&app).with_init(|conn| Box::pin(conn.batch_execute("SELECT no_such_column")));
    let shown = assert_fails_at_once("init hook SQL error", failing).await;
    assert!(shown.contains("42703"), "{shown}");
}

#[tokio::test]
async fn errors_a_retry_can_fix_are_retried_until_the_deadline() {
    let app = app_name("transient");
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            "refused port",
            PgManager::from_url(&format!(
                "host=127.0.0.1 port={closed_port} user=root dbname=test"
            ))
            .unwrap(),
            None,
        ),
        (
            "init hook cancelled by statement_timeout",
            manager(&app).with_init(|conn| {
                Box::pin(conn.batch_execute("SET statement_timeout = 1; SELECT pg_sleep(1)"))
            }),
            Some("57014"),
        ),
    ];
    for (what, manager, code) in cases {
        let pool = Pool::builder(manager)
            .acquire_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("postgres, {what}: {err} ({elapsed:?})");
        let PoolError::Connect(e) = &err else {
            panic!("{what}: expected Connect, got {err:?}");
        };
        assert!(!e.is_permanent(), "{what}: {e}");
        if let Some(code) = code {
            assert!(e.to_string().contains(code), "{what}: {e}");
        }
        // Backoff pauses of 12-25, 25-50, 50-100, 100-200 ms: retries stop
        // when the next pause would pass the deadline, after 100 ms at least.
        assert!(
            elapsed >= Duration::from_millis(100),
            "{what}: not retried: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{what}: {elapsed:?}");
        let metrics = pool.metrics();
        assert!(metrics.connect_errors >= 3, "{what}: {metrics:?}");
        assert_eq!(metrics.permanent_errors, 0, "{what}");
        assert_eq!(pool.state().size, 0, "{what}");
    }
}

#[tokio::test]
async fn a_get_started_while_the_server_refuses_succeeds_once_it_listens_again() {
    let app = app_name("comeback");
    let fwd = forward::Forwarder::start("127.0.0.1:5432".parse().unwrap());
    fwd.set_mode(forward::Mode::Refuse);
    let manager = PgManager::from_url(&format!(
        "host=127.0.0.1 port={} user=root dbname=test application_name={app}",
        fwd.addr().port()
    ))
    .unwrap();
    let pool = Pool::builder(manager).build().unwrap();
    let get = tokio::spawn({
        let pool = pool.clone();
        async move {
            let conn = pool.get().await.map_err(|e| e.to_string())?;
            let row = conn
                .query_one("SELECT 1::int4", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<i32, String>(row.get(0))
        }
    });
    let start = Instant::now();
    while pool.metrics().connect_errors == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no connect tried"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fwd.set_mode(forward::Mode::Forward);
    let one = tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("the get ended")
        .unwrap()
        .unwrap();
    assert_eq!(one, 1);
    assert_eq!(fwd.accepted(), 1);
    assert_eq!(pool.metrics().permanent_errors, 0);
}

#[cfg(feature = "postgres-tls")]
#[tokio::test]
async fn an_untrusted_server_certificate_is_permanent() {
    use latchless::managers::rustls;
    let app = app_name("tls-permanent");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let manager = PgManager::from_url(&format!("{BASE} sslmode=require application_name={app}"))
        .unwrap()
        .with_tls(tls);
    let shown = assert_fails_at_once("TLS, untrusted certificate", manager).await;
    assert!(shown.contains("UnknownIssuer"), "{shown}");
}

/// A fake PostgreSQL server: declines TLS (`N`) when asked, then answers
/// the startup message with `answer` (raw protocol bytes) and holds the
/// connection until the client closes it. Returns its port.
async fn fake_server(answer: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80877103;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                loop {
                    // Untyped messages: length (itself included), code.
                    let Ok(len) = sock.read_u32().await else {
                        return;
                    };
                    let mut body = vec![0u8; (len as usize).saturating_sub(4)];
                    if sock.read_exact(&mut body).await.is_err() || body.len() < 4 {
                        return;
                    }
                    let code = u32::from_be_bytes(body[..4].try_into().unwrap());
                    if code == SSL_REQUEST {
                        if sock.write_all(b"N").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    break;
                }
                if sock.write_all(&answer).await.is_err() {
                    return;
                }
                let mut rest = Vec::new();
                let _ = sock.read_to_end(&mut rest).await;
            });
        }
    });
    port
}

/// A FATAL `ErrorResponse` with this SQLSTATE and message.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    msg.extend_from_slice(&fields);
    msg
}

/// An authentication request of this kind (2: Kerberos V5, 3: cleartext
/// password).
fn auth_request(kind: u32) -> Vec<u8> {
    let mut msg = vec![b'R'];
    msg.extend_from_slice(&8u32.to_be_bytes());
    msg.extend_from_slice(&kind.to_be_bytes());
    msg
}

/// The judgement on every error kind tokio-postgres reports at connect,
/// from a fake server: also pins the kind labels `PgError::is_permanent`
/// reads, so that a tokio-postgres release that renames one fails here.
#[tokio::test]
async fn is_permanent_judges_each_kind_of_connect_error() {
    let cases: [(&str, Vec<u8>, &str, &str, bool); 9] = [
        (
            "too many connections",
            error_response("53300", "sorry, too many clients already"),
            "",
            "db error",
            false,
        ),
        (
            "starting up",
            error_response("57P03", "the database system is starting up"),
            "",
            "db error",
            false,
        ),
        (
            "shutting down",
            error_response(
                "57P01",
                "terminating connection due to administrator command",
            ),
            "",
            "db error",
            false,
        ),
        (
            "protocol violation",
            error_response("08P01", "invalid startup packet layout"),
            "",
            "db error",
            false,
        ),
        (
            "wrong password",
            error_response("28P01", "password authentication failed for user \"root\""),
            "",
            "db error",
            true,
        ),
        (
            "no pg_hba.conf entry",
            error_response("28000", "no pg_hba.conf entry for host"),
            "",
            "db error",
            true,
        ),
        (
            "unsupported authentication method",
            auth_request(2),
            "",
            "authentication error",
            true,
        ),
        (
            "password asked, none configured",
            auth_request(3),
            "",
            "invalid configuration",
            true,
        ),
        (
            "server without TLS, sslmode=require",
            Vec::new(),
            "sslmode=require",
            "error performing TLS handshake",
            true,
        ),
    ];
    for (what, answer, extra, label, permanent) in cases {
        let port = fake_server(answer).await;
        let manager = PgManager::from_url(&format!(
            "host=127.0.0.1 port={port} user=root dbname=test connect_timeout=5 {extra}"
        ))
        .unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), manager.connect())
            .await
            .expect("the fake server answers at once")
            .unwrap_err();
        let PgError::Connect(inner) = &err else {
            panic!("{what}: expected PgError::Connect, got {err:?}");
        };
        assert_eq!(inner.to_string(), label, "{what}: {err}");
        assert_eq!(manager.is_permanent(&err), permanent, "{what}: {err}");
    }

    // A server that closes without answering: retried.
    let hang_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hang_up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = hang_up.accept().await {
            drop(sock);
        }
    });
    let closing = PgManager::from_url(&format!("host=127.0.0.1 port={port} user=root")).unwrap();
    let err = closing.connect().await.unwrap_err();
    assert!(!closing.is_permanent(&err), "{err}");

    // No host at all: a config error found before any I/O.
    let no_host = PgManager::new(tokio_postgres::Config::new());
    let err = no_host.connect().await.unwrap_err();
    assert!(no_host.is_permanent(&err), "{err}");
    assert!(matches!(&err, PgError::Connect(e) if e.to_string() == "invalid configuration"));

    // The variants that never reach the server.
    assert!(no_host.is_permanent(&PgError::NoRuntime));
    assert!(!no_host.is_permanent(&PgError::Closed));
    let config = PgManager::from_url("host=h port=notaport").unwrap_err();
    assert!(no_host.is_permanent(&config));
}

/// PostgreSQL goes away and comes back (a forwarder in front of it refuses
/// and drops every session, then forwards again): once the pool has seen
/// it down, no request waits out its deadline. Each `get` is served, or
/// fails fast (`Unavailable` once the breaker is open; `Connect` for the
/// few that meet the failures that open it); only one probe connect at a
/// time runs; and within one backoff interval of the server's return, the
/// pool serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_known_down_costs_no_request_its_deadline() {
    use forward::{Forwarder, Mode};
    let fwd = Forwarder::start("127.0.0.1:5432".parse().unwrap());
    let app = app_name("outage");
    let url = format!(
        "host=127.0.0.1 port={} user=root dbname=test application_name={app}",
        fwd.addr().port()
    );
    let deadline = Duration::from_secs(5);
    let pool = Pool::builder(PgManager::from_url(&url).unwrap())
        .max_size(4)
        .acquire_timeout(deadline)
        .connect_backoff(Duration::from_millis(25))
        .max_connect_backoff(Duration::from_millis(400))
        .build()
        .unwrap();
    {
        let c = pool.get().await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
    }
    fwd.set_mode(Mode::Refuse);
    fwd.kill_all();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut fast_failures = Vec::new();
            while !stop.load(SeqCst) {
                let start = Instant::now();
                let got = pool.get().await;
                let took = start.elapsed();
                slowest = slowest.max(took);
                match got {
                    Ok(mut c) => {
                        // A session dropped with the server: the query
                        // fails and marks the connection broken.
                        let r = c.simple_query("SELECT 1").await;
                        let _ = c.observe(r);
                    }
                    Err(PoolError::Unavailable { .. }) => fast_failures.push(took),
                    Err(PoolError::Connect(_)) => {}
                    Err(e) => panic!("while the server is down: {e:?}"),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (slowest, fast_failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, SeqCst);
    let (mut slowest, mut fast) = (Duration::ZERO, Vec::new());
    for t in tasks {
        let (s, f) = t.await.unwrap();
        slowest = slowest.max(s);
        fast.extend(f);
    }
    fast.sort();
    let p99 = fast.get(fast.len() * 99 / 100).copied().unwrap_or_default();
    let m = pool.metrics();
    println!(
        "postgres down 1.5 s: slowest get {slowest:?}, Unavailable p99 {p99:?} of {}, {} connect errors, {} probes",
        fast.len(),
        m.connect_errors,
        m.probes
    );
    assert!(m.backend_down, "{m:?}");
    assert!(fast.len() > 100, "{}", fast.len());
    // Generous bounds (a loaded 2-core machine preempts tasks for tens of
    // milliseconds): nowhere near the deadline.
    assert!(
        slowest < deadline / 2,
        "a request waited {slowest:?} of its {deadline:?} deadline"
    );
    assert!(p99 < Duration::from_millis(50), "Unavailable p99 {p99:?}");
    // Probes 25 ms, 50, 100, 200, 400, 400 ms apart (jittered down to as
    // little as half): a handful, not one per request.
    assert!(m.connect_errors <= 30, "{m:?}");
    assert_eq!(m.timeouts, 0, "{m:?}");

    fwd.set_mode(Mode::Forward);
    let back = Instant::now();
    loop {
        match pool.get().await {
            Ok(c) => {
                c.simple_query("SELECT 1").await.unwrap();
                break;
            }
            Err(PoolError::Unavailable { .. }) => {
                assert!(back.elapsed() < Duration::from_secs(3), "still down");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    println!("postgres back: served again after {:?}", back.elapsed());
    assert!(!pool.metrics().backend_down);
}

/// A session that stops answering with its socket open (a hung server, a
/// middlebox that froze it) fails the pre-ping the pool runs after idle
/// and is replaced: the `get` is served by a new session that answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stops_answering_fails_its_pre_ping_and_is_replaced() {
    let fwd = forward::Forwarder::start("127.0.0.1:5432".parse().unwrap());
    let app = app_name("frozen");
    let url = format!(
        "host=127.0.0.1 port={} user=root dbname=test application_name={app} connect_timeout=5",
        fwd.addr().port()
    );
    let pool = Pool::builder(PgManager::from_url(&url).unwrap())
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .check_timeout(Duration::from_millis(300))
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = {
        let c = pool.get().await.unwrap();
        pid(&c).await.unwrap()
    };
    fwd.freeze_all();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = pool.get().await.expect("a new session");
    let second = tokio::time::timeout(Duration::from_secs(5), pid(&c))
        .await
        .expect("the session handed out answers")
        .unwrap();
    assert_ne!(first, second, "a new backend");
    assert_eq!(fwd.accepted(), 2, "the frozen session, then one more");
}

/// A fake PostgreSQL server whose sessions open (`AuthenticationOk`,
/// `ReadyForQuery`) and answer every simple query with `on_query` (raw
/// protocol bytes), their sockets left open. Returns its port.
async fn fake_session_server(on_query: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ready = auth_request(0);
    ready.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (ready, on_query) = (ready.clone(), on_query.clone());
            tokio::spawn(async move {
                // The startup message (untyped; no TLS asked: sslmode
                // disable), then typed messages.
                let Ok(len) = sock.read_u32().await else {
                    return;
                };
                let mut body = vec![0u8; (len as usize).saturating_sub(4)];
                if sock.read_exact(&mut body).await.is_err()
                    || sock.write_all(&ready).await.is_err()
                {
                    return;
                }
                loop {
                    let Ok(kind) = sock.read_u8().await else {
                        return;
                    };
                    let Ok(len) = sock.read_u32().await else {
                        return;
                    };
                    let mut body = vec![0u8; (len as usize).saturating_sub(4)];
                    if sock.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if kind == b'Q' && sock.write_all(&on_query).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// An error that says the session is gone (the server terminating it,
/// SQLSTATE 57P01) marks the connection broken though its socket is still
/// open; an error of the statement (an unknown table) leaves it usable.
#[tokio::test]
async fn an_error_that_says_the_session_is_gone_marks_it_broken_with_its_socket_open() {
    let cases = [
        (
            "57P01",
            "terminating connection due to administrator command",
            true,
        ),
        ("42P01", "relation \"nowhere\" does not exist", false),
    ];
    for (code, message, lost) in cases {
        let mut answer = error_response(code, message);
        answer.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        let port = fake_session_server(answer).await;
        let manager = PgManager::from_url(&format!(
            "host=127.0.0.1 port={port} user=root dbname=test connect_timeout=5 sslmode=disable"
        ))
        .unwrap();
        let mut conn = tokio::time::timeout(Duration::from_secs(10), manager.connect())
            .await
            .expect("the fake server answers at once")
            .expect("a session");
        let r = tokio::time::timeout(Duration::from_secs(10), conn.simple_query("SELECT 1"))
            .await
            .expect("the fake server answers at once");
        let err = conn.observe(r).unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some(code));
        assert!(!conn.is_closed(), "{code}: the socket is still open");
        assert_eq!(conn.is_marked_broken(), lost, "{code}: {err}");
        assert_eq!(manager.is_broken(&mut conn), lost, "{code}");
    }
}
