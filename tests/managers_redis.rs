//! `RedisManager` against the real Redis on 127.0.0.1:6379 (CI starts it; if
//! it is unreachable these tests fail, they do not skip).
//!
//! Each test names its connections (`CLIENT SETNAME`, unique per test) and
//! kills only those (`CLIENT KILL ID`); the server is never restarted.
//! Every loop is bounded in count and time. Which connect errors are
//! permanent is checked against the real server where it can produce them
//! without a change to its config (a rejected password, `AUTH` with no
//! password configured, a database index out of range), and against an
//! in-test fake server for the rest (`NOAUTH`, `NOPERM`, `LOADING`, a full
//! server).
#![cfg(feature = "redis")]

mod forward;

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use latchless::managers::{RedisConnection, RedisManager};
use latchless::{Manager, Pool, PoolError};
use redis::aio::MultiplexedConnection;

const URL: &str = "redis://127.0.0.1:6379/0";

fn name(test: &str) -> String {
    format!("latchless-{test}-{}", std::process::id())
}

fn manager(name: &str) -> RedisManager {
    RedisManager::new(URL).unwrap().client_name(name)
}

/// A connection outside any pool, to watch and kill the pool's connections.
async fn admin() -> MultiplexedConnection {
    let client = redis::Client::open(URL).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be reachable on 127.0.0.1:6379");
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("latchless-test-admin")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    conn
}

/// Ids of the server's clients named `name` (from `CLIENT LIST`).
async fn ids(admin: &mut MultiplexedConnection, name: &str) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .filter(|line| line.split(' ').any(|f| f == format!("name={name}")))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(|id| id.parse().unwrap())
        .collect()
}

/// `CLIENT KILL ID` every client named `name`; returns how many.
async fn kill_all(admin: &mut MultiplexedConnection, name: &str) -> usize {
    let mut killed = 0;
    for id in ids(admin, name).await {
        let n: usize = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .unwrap();
        killed += n;
    }
    killed
}

async fn client_id(conn: &mut RedisConnection) -> redis::RedisResult<u64> {
    redis::cmd("CLIENT").arg("ID").query_async(conn).await
}

/// Open `n` connections (held at once, then returned idle).
async fn warm(pool: &Pool<RedisManager>, n: usize) -> HashSet<u64> {
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..n {
        let mut conn = pool.get().await.unwrap();
        seen.insert(client_id(&mut conn).await.unwrap());
        held.push(conn);
    }
    assert_eq!(pool.state().size, n);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_never_open_more_than_max_size_connections() {
    const N: usize = 4;
    const M: usize = 200;
    let name = name("cap");
    let mut admin = admin().await;
    let pool = Pool::builder(manager(&name))
        .max_size(N)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, name) = (done.clone(), name.clone());
        tokio::spawn(async move {
            let (mut max, mut samples) = (0usize, 0u32);
            let start = Instant::now();
            while !done.load(SeqCst)
                && start.elapsed() < Duration::from_secs(60)
                && samples < 100_000
            {
                max = max.max(ids(&mut admin, &name).await.len());
                samples += 1;
            }
            (max, samples)
        })
    };
    let key = format!("{name}:counter");
    let mut tasks = Vec::new();
    for _ in 0..M {
        let (pool, key) = (pool.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            let (n,): (i64,) = redis::pipe()
                .incr(&key, 1)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(60_000)
                .ignore()
                .cmd("PING")
                .ignore()
                .query_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(1)).await; // hold it a little
            Ok::<i64, String>(n)
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().unwrap());
    }
    done.store(true, SeqCst);
    let (max, samples) = sampler.await.unwrap();
    seen.sort();
    println!(
        "redis: {M} concurrent requests over a pool of {N}: CLIENT LIST showed at most {max} connections ({samples} samples)"
    );
    assert_eq!(
        seen,
        (1..=M as i64).collect::<Vec<_>>(),
        "every request ran exactly once"
    );
    assert!(max <= N, "server saw {max} connections, max_size is {N}");
    assert!(
        max >= 1 && samples >= 2,
        "the sampler saw the pool's connections"
    );
}

#[tokio::test]
async fn a_request_that_hits_a_killed_connection_marks_it_broken() {
    let name = name("marked");
    let mut admin = admin().await;
    let pool = Pool::builder(manager(&name))
        .max_size(1)
        .check_after_idle(None)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        redis::cmd("PING")
            .query_async::<()>(&mut *conn)
            .await
            .unwrap();
        assert!(!pool.manager().is_broken(&mut conn));
        assert_eq!(kill_all(&mut admin, &name).await, 1);
        // The failed request is the only sign: the client does not report closed.
        let mut err = None;
        for _ in 0..50 {
            match redis::cmd("PING").query_async::<()>(&mut *conn).await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("a request on the killed connection failed");
        println!("redis, request on a killed connection: {err}");
        assert!(
            conn.is_marked_broken(),
            "the error ({err}) marked the connection broken"
        );
        assert!(pool.manager().is_broken(&mut conn));
    }
    assert_eq!(pool.state().size, 0, "closed on return, not pooled");
    let mut conn = pool.get().await.unwrap();
    redis::cmd("PING")
        .query_async::<()>(&mut *conn)
        .await
        .unwrap();

    // An ordinary command error leaves the connection healthy.
    let wrong: redis::RedisResult<()> = redis::cmd("INCR")
        .arg("a")
        .arg("b")
        .arg("c")
        .query_async(&mut *conn)
        .await;
    assert!(wrong.is_err());
    assert!(
        !conn.is_marked_broken(),
        "a command error is not a broken connection"
    );
    conn.mark_broken();
    drop(conn);
    assert_eq!(pool.state().size, 0);
}

/// A request that outlasts the connection's response timeout marks the
/// connection broken (its reply may still come), so the pool closes it
/// on return instead of handing it out again.
#[tokio::test]
async fn a_request_that_times_out_marks_the_connection_broken() {
    let pool = Pool::builder(manager(&name("timeout")))
        .max_size(1)
        .build()
        .unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        conn.get_mut()
            .set_response_timeout(Duration::from_millis(20));
        let slow: redis::RedisResult<()> = redis::cmd("BLPOP")
            .arg("latchless-test-never-pushed")
            .arg(1)
            .query_async(&mut *conn)
            .await;
        let err = slow.expect_err("the response timeout ended it");
        assert!(err.is_timeout(), "{err}");
        assert!(conn.is_marked_broken(), "a timeout marks it: {err}");
    }
    assert_eq!(pool.state().size, 0, "closed on return, not pooled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_killed_with_pre_ping_and_paced_requests_fails_no_request() {
    const N: usize = 4;
    let name = name("paced");
    let mut admin = admin().await;
    let pool = Pool::builder(manager(&name))
        .max_size(N)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    let old = warm(&pool, N).await;
    let killed_at = Instant::now();
    assert_eq!(kill_all(&mut admin, &name).await, N);
    let (mut failures, mut recovered) = (0, None);
    for _ in 0..100 {
        let mut conn = pool
            .get()
            .await
            .unwrap_or_else(|e| panic!("get failed: {e}"));
        match client_id(&mut conn).await {
            Ok(id) => {
                recovered.get_or_insert(killed_at.elapsed());
                assert!(!old.contains(&id), "served by killed connection {id}");
            }
            Err(e) => {
                failures += 1;
                eprintln!("request failed after the kill: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recovered = recovered.expect("no request succeeded after the kill");
    println!(
        "redis: {N} connections killed, pre-ping on, paced: {failures} failed requests, first success {recovered:?} after the kill"
    );
    assert_eq!(
        failures, 0,
        "pre-ping (PING) must catch every killed connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_killed_in_a_tight_loop_costs_at_most_one_failure_per_connection() {
    const N: usize = 4;
    let name = name("tight");
    let mut admin = admin().await;
    let pool = Pool::builder(manager(&name))
        .max_size(N)
        .check_after_idle(None) // no pre-ping: only the broken mark protects the callers
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
                match redis::cmd("PING").query_async::<()>(&mut *conn).await {
                    Ok(()) if start.elapsed() > kill_at => ok_after_kill += 1,
                    Ok(()) => {}
                    Err(e) => {
                        let clean = e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_timeout()
                            || e.is_unrecoverable_error();
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
    let killed = kill_all(&mut admin, &name).await;
    let (mut failures, mut ok_after) = (Vec::new(), 0);
    for w in workers {
        let (f, ok) = w.await.unwrap();
        failures.extend(f);
        ok_after += ok;
    }
    let last = failures.iter().map(|f| f.0).max();
    println!(
        "redis: {killed} connections killed in a tight loop, no pre-ping: {} failed requests (last {:?} after the kill), {ok_after} succeeded after the kill",
        failures.len(),
        last.map(|l| l.saturating_sub(killed_after)),
    );
    for f in &failures {
        assert!(f.2, "not a clean connection-lost error: {}", f.1);
    }
    assert_eq!(killed, N);
    assert!(
        failures.len() <= N,
        "{} failures for {N} killed connections: {failures:?}",
        failures.len()
    );
    assert!(ok_after > 0, "the pool recovered");
}

#[tokio::test]
async fn connect_errors_are_clear_typed_and_leak_no_place() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        ("closed port", format!("redis://127.0.0.1:{closed_port}/0")),
        (
            "wrong credentials",
            "redis://latchless_no_user:wrong-password@127.0.0.1:6379/0".to_owned(),
        ),
    ];
    for (what, url) in &cases {
        let manager = RedisManager::new(url.as_str())
            .unwrap()
            .connect_timeout(Duration::from_secs(1));
        let pool = Pool::builder(manager)
            .max_size(2)
            .fail_fast(true)
            .build()
            .unwrap();
        let start = Instant::now();
        let err = pool.get().await.unwrap_err();
        let elapsed = start.elapsed();
        println!("redis, {what}: {err} ({elapsed:?})");
        assert!(matches!(err, PoolError::Connect(_)), "{what}: {err:?}");
        assert!(
            elapsed < Duration::from_secs(1) + Duration::from_millis(500),
            "{what}: took {elapsed:?}"
        );
        assert_eq!(pool.state().size, 0, "{what}: a place leaked");
        assert!(!err.to_string().contains("wrong-password"), "{err}");
    }
    if let Some(PoolError::Connect(e)) =
        Pool::builder(RedisManager::new(cases[0].1.as_str()).unwrap())
            .fail_fast(true)
            .build()
            .unwrap()
            .get()
            .await
            .err()
    {
        assert!(e.is_connection_refusal(), "{e}");
    } else {
        panic!("closed port: expected a Connect error");
    }
    // A bad URL is a typed error, not a panic.
    assert!(RedisManager::new("http://127.0.0.1").is_err());
    assert!(RedisManager::new("redis://127.0.0.1:notaport").is_err());
}

#[test]
fn debug_never_shows_the_password() {
    let m = RedisManager::new("redis://app:s3cret-token@127.0.0.1:6379/1").unwrap();
    let shown = format!("{m:?} {m:#?}");
    assert!(!shown.contains("s3cret-token"), "{shown}");
    assert!(shown.contains("app"));
}

// ---- Faults (issue 12) on the real Redis. ----

/// `RedisManager` with its checks counted and slowed down, to cancel a
/// `get` in the middle of its pre-ping.
struct SlowCheck {
    inner: RedisManager,
    checks: Arc<std::sync::atomic::AtomicUsize>,
}

impl Manager for SlowCheck {
    type Connection = RedisConnection;
    type Error = <RedisManager as Manager>::Error;

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<RedisConnection, Self::Error>> + Send {
        self.inner.connect()
    }

    async fn check(&self, conn: &mut RedisConnection) -> Result<(), Self::Error> {
        self.checks.fetch_add(1, SeqCst);
        let r = self.inner.check(conn).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        r
    }

    fn is_broken(&self, conn: &mut RedisConnection) -> bool {
        self.inner.is_broken(conn)
    }
}

/// `Pooled::mark_broken` closes that client only: the server sees one
/// client of ours fewer, and the other stays in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_marked_broken_closes_its_client_only() {
    let name = name("mark-broken");
    let mut admin = admin().await;
    let pool = Pool::builder(manager(&name)).max_size(2).build().unwrap();
    let before = warm(&pool, 2).await;
    assert_eq!(before.len(), 2);
    let mut conn = pool.get().await.unwrap();
    let gone = client_id(&mut conn).await.unwrap();
    latchless::Pooled::mark_broken(&mut conn);
    drop(conn);
    let start = Instant::now();
    loop {
        let now: HashSet<u64> = ids(&mut admin, &name).await.into_iter().collect();
        if !now.contains(&gone) {
            assert_eq!(now.len(), 1, "the other client stays: {now:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "client not closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = pool.metrics();
    assert_eq!((m.broken, m.closed, m.state.size), (1, 1, 1));
}

/// A `get` cancelled during its pre-ping keeps the healthy client: the
/// check finishes without it, and the same client serves the next `get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_cancelled_during_its_pre_ping_keeps_the_client() {
    let name = name("cancel-check");
    let mut admin = admin().await;
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = SlowCheck {
        inner: manager(&name),
        checks: Arc::clone(&checks),
    };
    let pool = Pool::builder(m)
        .max_size(1)
        .check_after_idle(Some(Duration::ZERO))
        .build()
        .unwrap();
    let first = {
        let mut c = pool.get().await.unwrap();
        client_id(&mut c).await.unwrap()
    };
    let cut = tokio::time::timeout(Duration::from_millis(30), pool.get()).await;
    assert!(cut.is_err(), "cancelled in the middle of its check");
    let start = Instant::now();
    while pool.state().idle != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = pool.get().await.unwrap();
    assert_eq!(client_id(&mut c).await.unwrap(), first, "the same client");
    let m = pool.metrics();
    assert_eq!((m.check_failures, m.checks_detached, m.opened), (0, 1, 1));
    assert_eq!(checks.load(SeqCst), 2);
    assert_eq!(ids(&mut admin, &name).await.len(), 1);
}

// ---- Permanent connect errors: credentials and config, not the server's state. ----

/// Runs `get` then `warm_up` on a pool with default settings (a 30 s
/// acquire timeout, retries with backoff): both must fail at once with
/// `Connect`, count as permanent, and leave nothing open. Returns the
/// error's text.
async fn assert_fails_at_once(what: &str, manager: RedisManager) -> String {
    let pool = Pool::builder(manager.clone()).build().unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    println!("redis, {what}: {err} ({elapsed:?})");
    let PoolError::Connect(e) = &err else {
        panic!("{what}: expected Connect, got {err:?}");
    };
    assert!(pool.manager().is_permanent(e), "{what}: {e}");
    assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
    let metrics = pool.metrics();
    assert_eq!(metrics.permanent_errors, 1, "{what}: {metrics:?}");
    assert_eq!(metrics.connect_errors, 1, "{what}: retried: {metrics:?}");
    // One permanent error opens the breaker: the next `get` that would
    // connect fails fast, with the error's text.
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
async fn rejected_credentials_and_a_bad_database_fail_at_once_with_default_settings() {
    let cases = [
        (
            "WRONGPASS",
            "redis://latchless_no_user:wrong-password@127.0.0.1:6379/0",
            "authentication failed",
        ),
        (
            "AUTH with no password configured",
            "redis://:no-password-is-configured@127.0.0.1:6379/0",
            "authentication failed",
        ),
        (
            "WRONGPASS over RESP3 (HELLO)",
            "redis://latchless_no_user:wrong-password@127.0.0.1:6379/0?protocol=resp3",
            "WRONGPASS",
        ),
        (
            "database index out of range",
            "redis://127.0.0.1:6379/99999",
            "DB index is out of range",
        ),
    ];
    for (what, url, needle) in cases {
        let shown = assert_fails_at_once(what, RedisManager::new(url).unwrap()).await;
        assert!(
            shown.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: {needle:?} not in {shown:?}"
        );
        assert!(!shown.contains("wrong-password"), "{shown}");
    }
}

#[tokio::test]
async fn a_refused_port_is_retried_and_a_get_succeeds_once_it_listens_again() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool =
        Pool::builder(RedisManager::new(format!("redis://127.0.0.1:{closed_port}/0")).unwrap())
            .acquire_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
    let start = Instant::now();
    let err = pool.get().await.unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        PoolError::Connect(e) => {
            assert!(e.is_connection_refusal(), "{e}");
            assert!(!pool.manager().is_permanent(e), "{e}");
        }
        other => panic!("expected Connect(refused), got {other:?}"),
    }
    // Backoff pauses of 12-25, 25-50, 50-100, 100-200 ms: retries stop
    // when the next pause would pass the deadline, after 100 ms at least.
    assert!(
        elapsed >= Duration::from_millis(100),
        "not retried: {elapsed:?}"
    );
    assert!(pool.metrics().connect_errors >= 3);
    assert_eq!(pool.metrics().permanent_errors, 0);

    // With default settings, a get that starts while the port refuses
    // ends with a connection once it listens again.
    let fwd = forward::Forwarder::start("127.0.0.1:6379".parse().unwrap());
    fwd.set_mode(forward::Mode::Refuse);
    let url = format!("redis://{}/0", fwd.addr());
    let pool = Pool::builder(
        RedisManager::new(url)
            .unwrap()
            .client_name(&name("comeback")),
    )
    .build()
    .unwrap();
    let get = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            client_id(&mut conn).await.map_err(|e| e.to_string())
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
    tokio::time::timeout(Duration::from_secs(20), get)
        .await
        .expect("the get ended")
        .unwrap()
        .unwrap();
    assert_eq!(fwd.accepted(), 1);
    assert_eq!(pool.metrics().permanent_errors, 0);
}

/// A fake Redis server: sends `greeting` on accept, if any, and then
/// closes; otherwise answers each command with `reply(command)` (raw RESP;
/// the command's words upper-cased, space-separated), and `None` closes
/// the connection.
async fn fake_server(
    greeting: Option<&'static [u8]>,
    reply: fn(&str) -> Option<&'static [u8]>,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sock = BufReader::new(sock);
                if let Some(greeting) = greeting {
                    let _ = sock.get_mut().write_all(greeting).await;
                    return;
                }
                let mut line = String::new();
                loop {
                    // A request: `*<n>`, then n bulk strings `$<len>` + data.
                    line.clear();
                    if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Ok(n) = line.trim().trim_start_matches('*').parse::<usize>() else {
                        return;
                    };
                    let mut words = Vec::with_capacity(n);
                    for _ in 0..n {
                        line.clear();
                        if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let Ok(len) = line.trim().trim_start_matches('$').parse::<usize>() else {
                            return;
                        };
                        let mut data = vec![0u8; len + 2];
                        if sock.read_exact(&mut data).await.is_err() {
                            return;
                        }
                        words.push(String::from_utf8_lossy(&data[..len]).to_uppercase());
                    }
                    let Some(answer) = reply(&words.join(" ")) else {
                        return;
                    };
                    if sock.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("redis://{addr}/0")
}

#[tokio::test]
async fn noauth_and_noperm_at_connect_are_permanent_loading_and_a_full_server_are_not() {
    // A server with a password, and a URL without one: the redis crate's
    // own setup commands' replies are ignored, so it is the manager's
    // confirming command (PING, or CLIENT SETNAME) that meets NOAUTH.
    let noauth = fake_server(None, |_| Some(b"-NOAUTH Authentication required.\r\n")).await;
    let shown = assert_fails_at_once("NOAUTH", RedisManager::new(noauth.as_str()).unwrap()).await;
    assert!(shown.contains("NOAUTH"), "{shown}");
    let named = RedisManager::new(noauth.as_str())
        .unwrap()
        .client_name("latchless-named");
    assert_fails_at_once("NOAUTH at CLIENT SETNAME", named).await;

    let noperm = fake_server(None, |cmd| {
        if cmd.starts_with("PING") {
            Some(b"-NOPERM User app has no permissions to run the 'ping' command\r\n")
        } else {
            Some(b"+OK\r\n")
        }
    })
    .await;
    assert_fails_at_once("NOPERM", RedisManager::new(noperm.as_str()).unwrap()).await;

    // Passing states: retried.
    let loading = fake_server(None, |cmd| {
        if cmd.starts_with("PING") {
            Some(b"-LOADING Redis is loading the dataset in memory\r\n")
        } else {
            Some(b"+OK\r\n")
        }
    })
    .await;
    let full = fake_server(Some(b"-ERR max number of clients reached\r\n"), |_| None).await;
    let hang_up = fake_server(None, |_| None).await;
    for (what, url) in [
        ("LOADING", loading),
        ("max number of clients reached", full.clone()),
        // The error reply lands where the AUTH reply is expected; the
        // hang-up after it must still win over "authentication failed".
        (
            "max number of clients reached, with a password",
            full.replace("redis://", "redis://:pw@"),
        ),
        ("the server hangs up", hang_up),
    ] {
        let manager = RedisManager::new(url.as_str()).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), manager.connect())
            .await
            .expect("the fake server answers at once")
            .unwrap_err();
        println!("redis, {what}: {err}");
        assert!(!manager.is_permanent(&err), "{what}: {err}");
    }
}

#[test]
fn is_permanent_judges_redis_errors_by_kind_code_and_refused_select() {
    use redis::{ErrorKind, RedisError};
    let manager = RedisManager::new(URL).unwrap();
    let reply = |resp: &str| {
        redis::parse_redis_value(resp.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    };
    let refused_select = |detail: &str| {
        RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "Redis server refused to switch database",
            detail.to_owned(),
        ))
    };
    let permanent = [
        RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        )),
        RedisError::from((ErrorKind::InvalidClientConfig, "Invalid database number")),
        RedisError::from((ErrorKind::RESP3NotSupported, "no HELLO")),
        reply("-NOAUTH Authentication required.\r\n"),
        reply("-WRONGPASS invalid username-password pair or user is disabled.\r\n"),
        reply("-NOPERM User app has no permissions to run the 'client|setname' command\r\n"),
        // How the redis crate reports a refused SELECT: the message only.
        refused_select("DB index is out of range"),
        refused_select("SELECT is not allowed in cluster mode"),
        refused_select("Authentication required."),
        refused_select("User app has no permissions to run the 'select' command"),
    ];
    for e in &permanent {
        assert!(manager.is_permanent(e), "{e} must be permanent");
    }
    let transient = [
        RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused)),
        RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset)),
        RedisError::from(io::Error::from(io::ErrorKind::TimedOut)),
        RedisError::from(io::Error::from(io::ErrorKind::UnexpectedEof)),
        reply("-LOADING Redis is loading the dataset in memory\r\n"),
        reply("-MASTERDOWN Link with MASTER is down\r\n"),
        reply("-CLUSTERDOWN The cluster is down\r\n"),
        reply("-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
        reply("-BUSY Redis is busy running a script\r\n"),
        reply("-ERR max number of clients reached\r\n"),
        reply("-ERR unknown command 'FOO'\r\n"),
        refused_select("Redis is loading the dataset in memory"),
    ];
    for e in &transient {
        assert!(!manager.is_permanent(e), "{e} must be retried");
    }
}
