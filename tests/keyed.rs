//! `KeyedPool`: a pool per key, a cap per key, one across keys, and the
//! keys kept bounded; no key starves at the global cap. Against an
//! in-test manager that counts each key's live connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::{LONG, runtime, wait_until};
use latchless::{Clock, KeyedManager, KeyedPool, KeyedPooled, PoolError};

/// Keys are small numbers; `FAILING` refuses every connect.
const KEYS: usize = 16;
const FAILING: u8 = 15;

#[derive(Default)]
struct Track {
    live: [AtomicUsize; KEYS],
    max_live: [AtomicUsize; KEYS],
    total: AtomicUsize,
    max_total: AtomicUsize,
    opened: AtomicU64,
    connect_ms: AtomicU64,
}

struct Hosts(Arc<Track>);

struct Conn {
    key: u8,
    track: Arc<Track>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.key)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.track.live[self.key as usize].fetch_sub(1, SeqCst);
        self.track.total.fetch_sub(1, SeqCst);
    }
}

impl KeyedManager<u8> for Hosts {
    type Connection = Conn;
    type Error = std::io::Error;

    async fn connect(&self, key: &u8) -> Result<Conn, std::io::Error> {
        let t = &self.0;
        let delay = t.connect_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if *key == FAILING {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let k = *key as usize;
        let now = t.live[k].fetch_add(1, SeqCst) + 1;
        t.max_live[k].fetch_max(now, SeqCst);
        let total = t.total.fetch_add(1, SeqCst) + 1;
        t.max_total.fetch_max(total, SeqCst);
        t.opened.fetch_add(1, SeqCst);
        Ok(Conn {
            key: *key,
            track: Arc::clone(t),
        })
    }
}

fn hosts() -> (Hosts, Arc<Track>) {
    let t = Arc::new(Track::default());
    (Hosts(Arc::clone(&t)), t)
}

#[test]
fn each_key_has_its_own_cap_and_the_total_holds_under_load() {
    let (m, t) = hosts();
    t.connect_ms.store(1, SeqCst);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let pool = KeyedPool::builder(m)
        .max_per_key(3)
        .max_total(5)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..10u64 {
                    let key = ((i * 7 + j * 3) % 4) as u8;
                    let c = pool.get(&key).await.expect("served");
                    assert_eq!(KeyedPooled::key(&c), &key);
                    assert_eq!(c.key, key, "a connection of its own key");
                    tokio::task::yield_now().await;
                    drop(c);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    for k in 0..4 {
        let most = t.max_live[k].load(SeqCst);
        assert!((1..=3).contains(&most), "key {k}: {most} open at once");
    }
    assert!(
        t.max_total.load(SeqCst) <= 5,
        "{} open across keys",
        t.max_total.load(SeqCst)
    );
    let s = pool.state();
    assert_eq!((s.in_use, s.waiting), (0, 0));
    assert!(s.size <= 5);
    assert_eq!(pool.metrics().state, s);
}

/// With `max_total` no lower than the keys' caps together, the budget
/// never binds: a key at its own cap waits for its own connections and
/// closes none of another key's (every key reaches its cap, and no
/// connection is ever replaced).
#[test]
fn a_key_at_its_own_cap_takes_nothing_from_other_keys() {
    let (m, t) = hosts();
    t.connect_ms.store(1, SeqCst);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let pool = KeyedPool::builder(m)
        .max_per_key(3)
        .max_total(9)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..5u64 {
                    let key = ((i + j) % 3) as u8;
                    let c = pool.get(&key).await.expect("served");
                    tokio::task::yield_now().await;
                    drop(c);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let m = pool.metrics();
    assert_eq!(
        (t.opened.load(SeqCst), m.closed),
        (9, 0),
        "connections opened and closed"
    );
    assert_eq!(t.max_total.load(SeqCst), 9);
}

#[test]
fn at_the_global_cap_an_idle_connection_of_another_key_makes_room() {
    let (m, t) = hosts();
    let pool = KeyedPool::builder(m)
        .max_per_key(2)
        .max_total(2)
        .build()
        .unwrap();
    runtime().block_on(async {
        let (b1, b2) = (pool.get(&1).await.unwrap(), pool.get(&1).await.unwrap());
        drop((b1, b2));
        assert_eq!(
            pool.state_of(&1).idle,
            2,
            "key 1 holds the whole budget, idle"
        );
        let started = Instant::now();
        let a = pool
            .get_timeout(&0, LONG)
            .await
            .expect("room made from key 1's idle connection");
        assert!(started.elapsed() < LONG);
        assert_eq!(a.key, 0);
        assert_eq!(pool.state_of(&1).size, 1, "one of key 1's closed");
        assert_eq!(t.total.load(SeqCst), 2);
        assert!(t.max_total.load(SeqCst) <= 2, "never above the budget");
        // And the other way round, with key 0's connection in use: key 1
        // still has one idle, key 2 takes its room.
        let c = pool.get_timeout(&2, LONG).await.expect("room from key 1");
        assert_eq!((pool.state_of(&1).size, c.key), (0, 2));
        assert!(t.max_total.load(SeqCst) <= 2);
    });
}

#[test]
fn a_burst_on_one_key_does_not_starve_a_waiter_on_another() {
    let (m, t) = hosts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = KeyedPool::builder(m)
        .max_per_key(2)
        .max_total(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let held = (pool.get(&0).await.unwrap(), pool.get(&0).await.unwrap());
        // The waiter on key 2: starved by the budget, key 0 holding it all.
        let p = pool.clone();
        let served = Arc::new(AtomicUsize::new(0));
        let burst_done = Arc::clone(&served);
        let waiter = tokio::spawn(async move {
            let c = p.get_timeout(&2, LONG).await.expect("served");
            (c.key, burst_done.load(SeqCst))
        });
        wait_until("the waiter on key 2 waits", || {
            pool.state_of(&2).waiting == 1
        })
        .await;
        // The burst on key 0: sixteen tasks, 50 gets each, queued behind the
        // two held connections (key 0 always has a `get` waiting).
        let mut burst = Vec::new();
        for _ in 0..16 {
            let p = pool.clone();
            let served = Arc::clone(&served);
            burst.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let c = p.get_timeout(&0, LONG).await.expect("burst served");
                    tokio::task::yield_now().await;
                    drop(c);
                    served.fetch_add(1, SeqCst);
                }
            }));
        }
        wait_until("the burst queues", || pool.state_of(&0).waiting >= 12).await;
        drop(held);
        let (key, burst_gets_before) = waiter.await.unwrap();
        assert_eq!(key, 2);
        // Key 0's releases give every other connection to the starved
        // waiter: it is served within the first few, not after the burst.
        // What is counted is the burst's gets done by the time the waiter's
        // task runs again, which a loaded machine may schedule a few rounds
        // of the sixteen burst tasks late: hence a quarter of the burst,
        // far below the 800 of a waiter left until the burst ends.
        assert!(
            burst_gets_before < 200,
            "the waiter on key 2 was served after {burst_gets_before} of the 800 burst gets"
        );
        for b in burst {
            b.await.unwrap();
        }
        assert_eq!(served.load(SeqCst), 800, "the burst went on");
        assert!(t.max_total.load(SeqCst) <= 2, "never above the budget");
    });
}

#[test]
fn a_key_without_connections_for_idle_timeout_is_forgotten() {
    let (m, t) = hosts();
    let (clock, mock) = Clock::mock();
    let pool = KeyedPool::builder(m)
        .idle_timeout(Some(Duration::from_secs(60)))
        .clock(clock)
        .background(false)
        .build()
        .unwrap();
    runtime().block_on(async {
        drop(pool.get(&1).await.unwrap());
        drop(pool.get(&2).await.unwrap());
        assert_eq!(pool.keys(), 2);
        mock.advance(Duration::from_secs(30));
        drop(pool.get(&2).await.unwrap()); // key 2 stays in use
        mock.advance(Duration::from_secs(31));
        pool.maintain();
        assert_eq!(pool.state_of(&1).size, 0, "key 1's idle connection closed");
        assert_eq!(pool.keys(), 2, "not forgotten yet: empty only now");
        mock.advance(Duration::from_secs(61));
        pool.maintain();
        mock.advance(Duration::from_secs(61));
        pool.maintain();
        assert_eq!(pool.keys(), 0, "both empty for idle_timeout: forgotten");
        assert_eq!(pool.keys_dropped(), (2, 0));
        assert_eq!(t.total.load(SeqCst), 0, "every connection closed");
        // A forgotten key comes back on its next use.
        assert_eq!(pool.get(&1).await.unwrap().key, 1);
        assert_eq!(pool.keys(), 1);
    });
}

#[test]
fn past_max_keys_the_least_recently_used_idle_key_goes() {
    let (m, t) = hosts();
    let pool = KeyedPool::builder(m).max_keys(2).build().unwrap();
    runtime().block_on(async {
        drop(pool.get(&1).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(pool.get(&2).await.unwrap());
        let c3 = pool.get(&3).await.expect("room made");
        assert_eq!(pool.keys(), 2);
        assert_eq!(
            pool.state_of(&1).size,
            0,
            "key 1, the least recently used, went"
        );
        assert_eq!(pool.state_of(&2).size, 1, "key 2 stays");
        assert_eq!(pool.keys_dropped(), (0, 1));
        // Every key kept busy: a new key is refused, not let in.
        let c2 = pool.get(&2).await.unwrap();
        let err = pool.get(&4).await.unwrap_err();
        assert!(matches!(err, PoolError::Exhausted), "{err:?}");
        assert_eq!(pool.keys(), 2);
        drop((c2, c3));
        assert_eq!(
            pool.get(&4).await.unwrap().key,
            4,
            "room once a key is idle"
        );
        assert!(t.live[1].load(SeqCst) == 0);
    });
}

#[test]
fn bad_keyed_settings_are_refused_at_build() {
    let (m, _) = hosts();
    let err = KeyedPool::builder(m)
        .max_per_key(4)
        .max_total(3)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_total");
    assert_eq!(
        err.to_string(),
        "max_total (3) must not be below max_per_key (4)"
    );
    let (m, _) = hosts();
    let err = KeyedPool::builder(m).max_keys(0).build().unwrap_err();
    assert_eq!(err.field(), "max_keys");
    let (m, _) = hosts();
    let err = KeyedPool::builder(m).max_per_key(0).build().unwrap_err();
    assert_eq!(err.field(), "max_size");
}

#[test]
fn a_failing_key_fails_alone_and_gives_its_budget_back() {
    let (m, t) = hosts();
    let pool = KeyedPool::builder(m)
        .max_per_key(2)
        .max_total(2)
        .acquire_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    runtime().block_on(async {
        for _ in 0..5 {
            let err = pool.get(&FAILING).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    PoolError::Connect(_) | PoolError::Unavailable(_) | PoolError::Timeout(_)
                ),
                "{err:?}"
            );
        }
        // The failed connects held no token afterwards: the whole budget is
        // there for the other keys.
        let (a, b) = (pool.get(&1).await.unwrap(), pool.get(&2).await.unwrap());
        assert_eq!((a.key, b.key), (1, 2));
        assert_eq!(t.total.load(SeqCst), 2);
        // A detached connection and a broken one give their tokens back.
        let _kept: Conn = KeyedPooled::detach(a);
        let mut b = b;
        KeyedPooled::mark_broken(&mut b);
        drop(b);
        let (c, d) = (pool.get(&3).await.unwrap(), pool.get(&4).await.unwrap());
        assert_eq!((c.key, d.key), (3, 4));
    });
}

/// A key whose connects fail backs off between attempts without holding
/// other keys' share of `max_total`: its connects lend their tokens while
/// they sleep (the breaker off, so they keep retrying until their
/// deadline), and a live key is served meanwhile.
#[test]
fn a_key_whose_connects_fail_lends_its_budget_while_it_backs_off() {
    let (m, t) = hosts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = KeyedPool::builder(m)
        .max_per_key(2)
        .max_total(2)
        .breaker(None)
        .connect_backoff(Duration::from_millis(50))
        .max_connect_backoff(Duration::from_millis(200))
        .build()
        .unwrap();
    rt.block_on(async {
        let mut dead = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            dead.push(tokio::spawn(async move {
                pool.get_timeout(&FAILING, Duration::from_secs(4))
                    .await
                    .map(drop)
            }));
        }
        wait_until("the failing key's gets hold their places", || {
            pool.state_of(&FAILING).size == 2
        })
        .await;
        let live = pool.get_timeout(&1, Duration::from_secs(3)).await;
        assert!(live.is_ok(), "the live key starved: {:?}", live.err());
        drop(live);
        for d in dead {
            assert!(d.await.unwrap().is_err());
        }
        assert!(t.max_total.load(SeqCst) <= 2);
        // Every token came back: the whole budget serves two live keys.
        let (a, b) = (pool.get(&2).await.unwrap(), pool.get(&3).await.unwrap());
        assert_eq!((a.key, b.key), (2, 3));
    });
}

/// A thread that takes the same key again and again is served from its
/// last key (no map lookup); once that key is evicted and made again, its
/// gets and `try_get`s reach the new key's pool, never the closed one.
#[test]
fn a_threads_last_key_serves_it_and_never_outlives_the_keys_pool() {
    let (m, t) = hosts();
    let pool = KeyedPool::builder(m).max_keys(1).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..4 {
            drop(pool.get(&1).await.unwrap());
        }
        for _ in 0..4 {
            drop(pool.try_get(&1).expect("its idle connection"));
        }
        assert_eq!(t.opened.load(SeqCst), 1, "one connection, served again");
        let c = pool.get(&1).await.unwrap();
        assert_eq!(pool.state_of(&1).in_use, 1);
        assert!(pool.try_get(&1).is_none(), "nothing idle: no second");
        drop(c);
    });
    // Another thread evicts key 1 (max_keys 1) and makes it again, with
    // an idle connection of the new pool.
    std::thread::scope(|s| {
        s.spawn(|| {
            runtime().block_on(async {
                drop(pool.get(&2).await.unwrap());
                assert_eq!(pool.keys_dropped(), (0, 1), "key 1 evicted");
                drop(pool.get(&1).await.unwrap());
            })
        });
    });
    assert_eq!(t.live[1].load(SeqCst), 1, "the new pool's connection");
    let c = pool.try_get(&1).expect("the new pool's idle connection");
    assert_eq!(
        pool.state_of(&1).in_use,
        1,
        "taken from the pool in the map"
    );
    drop(c);
    rt.block_on(async {
        let c = pool.get(&1).await.unwrap();
        assert_eq!(pool.state_of(&1).in_use, 1);
        drop(c);
    });
    assert_eq!(t.opened.load(SeqCst), 3, "keys 1, 2 and 1 again: no more");
}

/// A thread that goes round two keys is served from its last keys for
/// both; once they are evicted under it and one is made again, every hit
/// reaches the pool in the map, never a closed one.
#[test]
fn keys_taken_in_turn_are_served_from_the_threads_last_keys_and_never_outlive_their_pools() {
    let (m, t) = hosts();
    let pool = KeyedPool::builder(m).max_keys(2).build().unwrap();
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..4 {
            drop(pool.get(&1).await.unwrap());
            drop(pool.get(&2).await.unwrap());
        }
    });
    for _ in 0..4 {
        drop(pool.try_get(&1).expect("key 1's idle connection"));
        drop(pool.try_get(&2).expect("key 2's idle connection"));
    }
    assert_eq!(t.opened.load(SeqCst), 2, "one connection per key");
    // Another thread makes key 3 (evicting one of 1 and 2), then the
    // evicted one again (evicting another).
    std::thread::scope(|s| {
        s.spawn(|| {
            runtime().block_on(async {
                drop(pool.get(&3).await.unwrap());
                let gone = [1, 2].into_iter().find(|k| pool.state_of(k).idle == 0);
                drop(pool.get(&gone.expect("one evicted")).await.unwrap());
            })
        });
    });
    assert_eq!(pool.keys_dropped(), (0, 2));
    assert_eq!(t.opened.load(SeqCst), 4);
    for k in [1, 2] {
        // Each hit must be one of the map's pools' connections.
        if let Some(c) = pool.try_get(&k) {
            assert_eq!(pool.state_of(&k).in_use, 1, "key {k}: from the map's pool");
            drop(c);
        } else {
            assert_eq!(pool.state_of(&k).idle, 0, "key {k}: idle, yet missed");
        }
    }
    rt.block_on(async {
        for k in [1, 2] {
            let c = pool.get(&k).await.unwrap();
            assert_eq!(pool.state_of(&k).in_use, 1, "key {k}: from the map's pool");
            drop(c);
        }
    });
}

/// Dropping a keyed pool closes its connections at once, though a thread
/// still holds its last key; the thread lets the rest go when it exits.
#[test]
fn a_dropped_keyed_pool_closes_its_connections_though_a_thread_holds_its_last_key() {
    struct Counted(Hosts, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, SeqCst);
        }
    }
    impl KeyedManager<u8> for Counted {
        type Connection = Conn;
        type Error = std::io::Error;
        async fn connect(&self, key: &u8) -> Result<Conn, std::io::Error> {
            self.0.connect(key).await
        }
    }
    let (m, t) = hosts();
    let dropped = Arc::new(AtomicUsize::new(0));
    let manager = Counted(m, Arc::clone(&dropped));
    std::thread::scope(|s| {
        s.spawn(|| {
            let pool = KeyedPool::builder(manager).build().unwrap();
            runtime().block_on(async {
                for _ in 0..4 {
                    drop(pool.get(&3).await.unwrap());
                }
            });
            assert_eq!(t.live[3].load(SeqCst), 1);
            drop(pool);
            assert_eq!(t.total.load(SeqCst), 0, "closed with the pool");
        });
    });
    // The keyed pool's and the key's pool's tasks end on the runtime's
    // threads, which may outlive this thread by a moment.
    let start = Instant::now();
    while dropped.load(SeqCst) == 0 && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        dropped.load(SeqCst),
        1,
        "the manager, once the thread exited"
    );
}

/// A connection whose `Drop` asks the same keyed pool again, run by the
/// hit that finds it broken: the re-entrant `try_get`s on this thread
/// find their way, and the outer `get` connects anew.
#[test]
fn a_broken_connections_drop_may_ask_the_keyed_pool_again() {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicBool;
    static POOL: OnceLock<KeyedPool<u8, Reentrant>> = OnceLock::new();
    static BROKEN: AtomicBool = AtomicBool::new(false);
    static ASKED: AtomicUsize = AtomicUsize::new(0);
    struct Reentrant;
    struct Ask(u8);
    impl Drop for Ask {
        fn drop(&mut self) {
            let pool = POOL.get().expect("built");
            for key in [self.0, 9] {
                if let Some(c) = pool.try_get(&key) {
                    ASKED.fetch_add(1, SeqCst);
                    drop(c);
                }
            }
        }
    }
    impl KeyedManager<u8> for Reentrant {
        type Connection = Ask;
        type Error = std::io::Error;
        async fn connect(&self, key: &u8) -> Result<Ask, std::io::Error> {
            Ok(Ask(*key))
        }
        fn is_broken(&self, key: &u8, _: &mut Ask) -> bool {
            *key == 4 && BROKEN.load(SeqCst)
        }
    }
    let pool = POOL.get_or_init(|| KeyedPool::builder(Reentrant).build().unwrap());
    runtime().block_on(async {
        let other = pool.get(&9).await.unwrap();
        drop(other);
        for _ in 0..4 {
            drop(pool.get(&4).await.unwrap());
        }
        BROKEN.store(true, SeqCst);
        let c = pool.get(&4).await.expect("a new connection");
        BROKEN.store(false, SeqCst);
        assert_eq!(c.0, 4);
        assert_eq!(pool.state_of(&4).in_use, 1);
        drop(c);
        assert_eq!(pool.state_of(&4).idle, 1);
        assert_eq!(pool.state_of(&9).idle, 1, "key 9's connection back");
    });
    assert!(ASKED.load(SeqCst) >= 1, "the drop found key 9's connection");
}
