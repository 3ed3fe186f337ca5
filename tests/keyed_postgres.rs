//! `KeyedPool` over PostgreSQL databases as keys (`test`, and one each
//! test creates and drops), against the real server on 127.0.0.1:5432
//! (CI starts it; if it is unreachable these tests fail, they do not
//! skip), watched from the server's side through `pg_stat_activity`: the
//! backends of each database never exceed `max_per_key`, all of them never
//! exceed `max_total`, and a forgotten key's backends end.
//!
//! A backend can stay in `pg_stat_activity` a while after the client ends its
//! session (the server process exits on its own schedule), so while the
//! pool replaces connections the watcher leaves out the backends whose
//! session the client has already ended (each connection notes its backend
//! pid when it closes); with no replacement at all (a `max_total` that does
//! not bind) every backend ever seen counts.
//!
//! Each test sets its own `application_name` and watches only the backends
//! that carry it; the server is never restarted; every wait is bounded.
#![cfg(feature = "postgres")]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchless::managers::{PgConnection, PgError, PgManager};
use latchless::{KeyedManager, KeyedPool, Manager};
use tokio_postgres::{Config, NoTls};

const BASE: &str = "host=127.0.0.1 port=5432 user=root connect_timeout=5";

/// Every test's bound: far above what each needs.
const BOUND: Duration = Duration::from_secs(90);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("the test finished within its bound")
}

fn app_name(test: &str) -> String {
    format!("latchless-keyed-{test}-{}", std::process::id())
}

/// A connection outside any pool (database `test`), to create databases
/// and watch the pool's sessions.
async fn admin(app: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("{BASE} dbname=test application_name={app}-admin"),
        NoTls,
    )
    .await
    .expect("PostgreSQL must be reachable on 127.0.0.1:5432 (user root, database test)");
    tokio::spawn(conn);
    client
}

/// A database of the test's own, dropped (its sessions with it) when the
/// value goes.
struct Scratch {
    name: String,
}

impl Scratch {
    async fn create(admin: &tokio_postgres::Client, test: &str) -> Self {
        let name = format!("latchless_keyed_{test}_{}", std::process::id());
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A connection of its own, on a thread of its own: the test's
        // runtime may be gone.
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{BASE} dbname=test"), NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join()
        .unwrap();
    }
}

/// Backend pids whose session the client has ended.
type Ended = Arc<Mutex<HashSet<i32>>>;

/// Connections to any database of the server, keyed by its name; every
/// connection notes its backend's pid.
struct Databases {
    base: Config,
    /// For `check`, `is_broken` and `is_permanent`, which do not depend
    /// on the database.
    judge: PgManager,
    ended: Ended,
    /// Backend pids of every connection opened, by database.
    opened: Arc<Mutex<HashMap<String, Vec<i32>>>>,
}

impl Databases {
    fn new(app: &str) -> Self {
        let base: Config = format!("{BASE} application_name={app}").parse().unwrap();
        Self {
            judge: PgManager::new(base.clone()),
            base,
            ended: Ended::default(),
            opened: Arc::default(),
        }
    }
}

/// A session to one database, and its backend's pid.
struct Session {
    conn: PgConnection,
    pid: i32,
    ended: Ended,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Noted before the client goes: the session ends right after.
        self.ended.lock().unwrap().insert(self.pid);
    }
}

impl KeyedManager<String> for Databases {
    type Connection = Session;
    type Error = PgError;

    async fn connect(&self, database: &String) -> Result<Session, PgError> {
        let mut config = self.base.clone();
        config.dbname(database);
        let conn = PgManager::new(config).connect().await?;
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(PgError::Check)?
            .get(0);
        self.opened
            .lock()
            .unwrap()
            .entry(database.clone())
            .or_default()
            .push(pid);
        Ok(Session {
            conn,
            pid,
            ended: self.ended.clone(),
        })
    }

    async fn check(&self, _database: &String, session: &mut Session) -> Result<(), PgError> {
        self.judge.check(&mut session.conn).await
    }

    fn is_broken(&self, _database: &String, session: &mut Session) -> bool {
        self.judge.is_broken(&mut session.conn)
    }

    fn is_permanent(&self, _database: &String, error: &PgError) -> bool {
        self.judge.is_permanent(error)
    }
}

type Pool = KeyedPool<String, Databases>;

/// The backends of `app` per database, sampled every few milliseconds
/// until stopped: the most seen at once per database and in all (leaving
/// out the backends whose session the client ended).
struct Watcher {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<(HashMap<String, usize>, usize)>,
}

impl Watcher {
    async fn start(app: &str, ended: &Ended) -> Self {
        let client = admin(&format!("{app}-watch")).await;
        let (stop, samples) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n, ended, app) = (stop.clone(), samples.clone(), ended.clone(), app.to_owned());
        let task = tokio::spawn(async move {
            let (mut most, mut most_total) = (HashMap::<String, usize>::new(), 0);
            while !s.load(SeqCst) {
                let rows = client
                    .query(
                        "SELECT datname::text, pid FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                    .unwrap();
                // Read after the query: every session ended before it is in.
                let ended = ended.lock().unwrap().clone();
                let mut now = HashMap::<String, usize>::new();
                for row in rows {
                    let (db, pid): (String, i32) = (row.get(0), row.get(1));
                    if !ended.contains(&pid) {
                        *now.entry(db).or_default() += 1;
                    }
                }
                most_total = most_total.max(now.values().sum());
                for (db, count) in now {
                    let m = most.entry(db).or_default();
                    *m = (*m).max(count);
                }
                n.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (most, most_total)
        });
        Self {
            stop,
            samples,
            task,
        }
    }

    async fn stop(self) -> (HashMap<String, usize>, usize, usize) {
        self.stop.store(true, SeqCst);
        let (most, total) = self.task.await.unwrap();
        (most, total, self.samples.load(SeqCst))
    }
}

/// `tasks` tasks, each running `queries` queries on keys in turn, each
/// checking it reached its key's database.
async fn load(pool: &Pool, keys: &[String], tasks: usize, queries: usize) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (pool, keys) = (pool.clone(), keys.to_vec());
        handles.push(tokio::spawn(async move {
            for q in 0..queries {
                let key = &keys[(t + q) % keys.len()];
                let session = pool.get(key).await.expect("a session");
                let row = session
                    .conn
                    .query_one("SELECT current_database()::text", &[])
                    .await
                    .expect("the query runs");
                assert_eq!(&row.get::<_, String>(0), key);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

/// Backends of `app` connected to `database` now (none left out).
async fn backends(admin: &tokio_postgres::Client, app: &str, database: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            &[&app, &database],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_database_stays_within_max_per_key_and_all_within_max_total() {
    bounded(async {
        let app = app_name("caps");
        let admin = admin(&app).await;
        let scratch = Scratch::create(&admin, "caps").await;
        let keys = vec!["test".to_string(), scratch.name.clone()];

        // The total not binding (2 x 3 <= 6): each database sees at most
        // three backends over the whole run, none ever replaced.
        let manager = Databases::new(&app);
        let (ended, opened) = (manager.ended.clone(), manager.opened.clone());
        let pool = KeyedPool::builder(manager)
            .max_per_key(3)
            .max_total(6)
            .acquire_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let watch = Watcher::start(&app, &ended).await;
        load(&pool, &keys, 100, 6).await;
        let (most, most_total, samples) = watch.stop().await;
        assert!(samples > 0);
        for key in &keys {
            let pids = opened.lock().unwrap()[key].clone();
            assert!((1..=3).contains(&pids.len()), "{key}: backends {pids:?}");
            assert!(most.get(key).copied().unwrap_or(0) <= 3, "{key}: {most:?}");
        }
        assert!(most_total <= 6, "{most_total} backends at once");
        assert_eq!(pool.metrics().closed, 0, "no session replaced");
        assert!(ended.lock().unwrap().is_empty());
        pool.close().await;

        // The total binding (4 < 2 x 3): sessions move between databases,
        // and the server never holds more than the caps.
        let app = app_name("caps-binding");
        let manager = Databases::new(&app);
        let (ended, opened) = (manager.ended.clone(), manager.opened.clone());
        let pool = KeyedPool::builder(manager)
            .max_per_key(3)
            .max_total(4)
            .acquire_timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let watch = Watcher::start(&app, &ended).await;
        load(&pool, &keys, 100, 6).await;
        let (most, most_total, samples) = watch.stop().await;
        assert!(samples > 0);
        for key in &keys {
            let m = most.get(key).copied().unwrap_or(0);
            assert!((1..=3).contains(&m), "{key}: {m} backends at once");
        }
        assert!(
            most_total <= 4,
            "{most_total} backends at once (max_total 4)"
        );
        let opened: usize = opened.lock().unwrap().values().map(Vec::len).sum();
        eprintln!("binding total: {opened} sessions opened, most at once {most:?} / {most_total}");
        pool.close().await;
        eventually(&admin, &app, &keys, 0).await;
    })
    .await;
}

/// Waits (bounded) until `app` has exactly `n` backends on each of `keys`.
async fn eventually(admin: &tokio_postgres::Client, app: &str, keys: &[String], n: i64) {
    let until = Instant::now() + Duration::from_secs(10);
    for key in keys {
        loop {
            let now = backends(admin, app, key).await;
            if now == n {
                break;
            }
            assert!(Instant::now() < until, "{key}: {now} backends, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_unused_for_idle_timeout_is_forgotten_and_its_backends_end() {
    bounded(async {
        let app = app_name("forget");
        let admin = admin(&app).await;
        let scratch = Scratch::create(&admin, "forget").await;
        let keys = vec!["test".to_string(), scratch.name.clone()];
        let pool = KeyedPool::builder(Databases::new(&app))
            .max_per_key(2)
            .idle_timeout(Some(Duration::from_millis(600)))
            .build()
            .unwrap();
        load(&pool, &keys, 4, 4).await;
        assert_eq!(pool.keys(), 2);
        assert!(backends(&admin, &app, &scratch.name).await >= 1);
        // The scratch database falls silent; `test` stays in use.
        let started = Instant::now();
        while pool.keys_dropped().0 < 1 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not forgotten: {} keys kept",
                pool.keys()
            );
            load(&pool, &keys[..1], 1, 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.keys(), 1);
        assert_eq!(pool.state_of(&scratch.name).size, 0);
        // Its backends end; `test`'s session stays.
        eventually(&admin, &app, &keys[1..], 0).await;
        assert!(backends(&admin, &app, "test").await >= 1);
        // Used again, the key comes back.
        load(&pool, &keys[1..], 1, 1).await;
        assert_eq!(pool.keys(), 2);
        pool.close().await;
        eventually(&admin, &app, &keys, 0).await;
    })
    .await;
}
