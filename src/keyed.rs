//! [`KeyedPool`]: one pool per key (a gateway's upstream hosts, shards,
//! replicas), a cap per key, one cap across all keys, and a bound on the
//! keys kept.
//!
//! # Design
//!
//! - **A full pool per key.** Each key's connections live in a [`Pool`] of
//!   their own, built from the keyed builder's settings (so `max_size` is
//!   the cap per key), whose manager is the keyed manager bound to the key
//!   ([`PerKey`]). Every guarantee of `Pool` holds per key: FIFO waiters,
//!   cancel safety, lifecycle, outages (each key has its own breaker: a
//!   dead host fails its own `get`s fast, never another key's), metrics.
//! - **A lock-free map of keys** (`papaya`, with `foldhash`): a `get` on a
//!   key with an idle connection hashes the key, reads the map under an
//!   epoch guard (no lock, no allocation; leaving the guard is one atomic
//!   swap on a word of this thread's, the lookup's only read-modify-write)
//!   and runs that key's fast path; only a miss clones the key's pool handle to wait
//!   or connect. `papaya` is made for read-mostly maps, which a pool's
//!   key set is (keys are added on first use and forgotten rarely);
//!   `dashmap` would take a shard lock on every read.
//! - **A thread's last keys** (`last_key.rs`): a thread served more than
//!   once lately from a key's entry keeps that entry (up to four), and
//!   its next `get` of that key skips the map (a thread-local read and a
//!   key comparison, two where it goes round its keys).
//! - **One budget across keys** (`budget.rs`, `max_total`): every key's
//!   pool takes a token before it reserves a place, so the servers
//!   together never see more than `max_total` connections, connecting ones
//!   included. A `get` that finds its key with room but the budget spent
//!   waits for its key *and* for a token from any key, oldest first across
//!   keys, and has the least recently used idle connection of another key
//!   closed to make room: no key starves while another holds idle
//!   connections.
//! - **Keys come and go.** A key is created by its first `get`. The keyed
//!   pool's own background task looks at every key each maintenance
//!   period: a key that has had no connection for `idle_timeout` is
//!   forgotten (its pool closed and dropped); past `max_keys`, a new key
//!   makes room by closing the least recently used key with nothing in use
//!   and nobody waiting, or its `get` fails with
//!   [`PoolError::Exhausted`] when every key is busy.
//!
//! # Invariants kept
//!
//! - A key maps to at most one open pool; a `get` that finds its key's
//!   pool closed (forgotten or evicted under it) looks the key up again,
//!   and only a closed keyed pool fails a `get` with `Closed`.
//! - `keys` counts the keys in the map and never exceeds `max_keys`: a key
//!   is counted before it is inserted and uncounted when it is removed (or
//!   when its insertion lost to another).
//! - Connections of a forgotten or evicted key still in use are closed
//!   when returned (their pool is closed), and their budget tokens go back.
//! - A thread's last keys are served only while their pools are open; a
//!   closed one is let go and the map asked, as a miss would.

use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::budget::Budget;
use crate::builder::{BuildError, Builder, validate};
use crate::config::Config;
use crate::health::{Health, Sizing, SizingVerdict};
use crate::last_key;
use crate::metrics::{Metrics, State};
use crate::pool::Quick;
use crate::{KeyedManager, Manager, Pool, PoolError, Pooled};

/// The keyed settings of a [`KeyedBuilder`]: the manager and what only a
/// keyed pool has (`max_total`, `max_keys`, a key's label).
pub struct Keyed<K, M> {
    manager: M,
    max_total: Option<usize>,
    max_keys: Option<usize>,
    label: Option<Label<K>>,
    _key: PhantomData<fn(&K)>,
}

/// How a key shows in pool names and exported metrics.
type Label<K> = Arc<dyn Fn(&K) -> String + Send + Sync>;

/// Configures and builds a [`KeyedPool`]: every [`Builder`] setting, applied
/// to each key's pool (`max_size` is the cap per key; `max_per_key` says
/// the same), plus [`max_total`](Builder::max_total),
/// [`max_keys`](Builder::max_keys) and [`key_label`](Builder::key_label).
///
/// ```
/// use latchless::{KeyedManager, KeyedPool};
/// # struct Hosts; impl KeyedManager<String> for Hosts { type Connection = String;
/// #   type Error = std::io::Error;
/// #   async fn connect(&self, h: &String) -> Result<String, std::io::Error> { Ok(h.clone()) } }
/// let pool = KeyedPool::builder(Hosts)
///     .max_per_key(8)
///     .max_total(64)
///     .max_keys(100)
///     .build()?;
/// # Ok::<(), latchless::BuildError>(())
/// ```
pub type KeyedBuilder<K, M> = Builder<Keyed<K, M>>;

impl<K, M> std::fmt::Debug for Keyed<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("max_total", &self.max_total)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K, M> Builder<Keyed<K, M>>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    M: KeyedManager<K>,
{
    /// The cap on each key's connections, connecting ones included (the
    /// `max_size` of each key's pool). Default 10.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).max_per_key(4).build().unwrap();
    /// assert_eq!(pool.config().max_size, 4);
    /// ```
    pub fn max_per_key(self, n: usize) -> Self {
        self.max_size(n)
    }

    /// The cap on connections across all keys, connecting ones included:
    /// the servers together never see more. `None` (the default): no cap
    /// beyond each key's. Must be at least `max_per_key`.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let err = KeyedPool::builder(Hosts).max_per_key(8).max_total(4).build().unwrap_err();
    /// assert_eq!(err.field(), "max_total");
    /// ```
    pub fn max_total(mut self, n: usize) -> Self {
        self.manager.max_total = Some(n);
        self
    }

    /// The most keys kept at once. Past it, a new key closes the least
    /// recently used key that has nothing in use and nobody waiting, or
    /// its `get` fails with [`PoolError::Exhausted`]. `None` (the default):
    /// no bound (keys are still forgotten after `idle_timeout` without a
    /// connection). Must be at least 1.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// assert_eq!(KeyedPool::builder(Hosts).max_keys(0).build().unwrap_err().field(), "max_keys");
    /// ```
    pub fn max_keys(mut self, n: usize) -> Self {
        self.manager.max_keys = Some(n);
        self
    }

    /// How a key is named: in each key's pool name (`name/label`, the
    /// `pool` field of its `tracing` events) and as the `key` label of
    /// exported per-key metrics. Keep the labels few (they are metric
    /// label values); without a label function only the aggregate is
    /// exported and every key's pool carries the keyed pool's name.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).key_label(|port| format!("port-{port}")).build().unwrap();
    /// ```
    pub fn key_label(mut self, label: impl Fn(&K) -> String + Send + Sync + 'static) -> Self {
        self.manager.label = Some(Arc::new(label));
        self
    }

    /// Checks every setting and builds the keyed pool (no key yet). Works
    /// outside a Tokio runtime; never panics.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first setting that breaks a rule: each
    /// key's pool's rules (as [`Builder::build`]), `max_total >=
    /// max_per_key`, `max_keys >= 1`.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let err = KeyedPool::builder(Hosts).max_per_key(8).max_total(4).build().unwrap_err();
    /// assert_eq!(err.to_string(), "max_total (4) must not be below max_per_key (8)");
    /// ```
    pub fn build(self) -> Result<KeyedPool<K, M>, BuildError> {
        validate(&self.config)?;
        let keyed = self.manager;
        if let Some(total) = keyed.max_total {
            if total < self.config.max_size {
                return Err(BuildError::new(
                    "max_total",
                    format!(
                        "max_total ({total}) must not be below max_per_key ({})",
                        self.config.max_size
                    ),
                ));
            }
        }
        if keyed.max_keys == Some(0) {
            return Err(BuildError::new(
                "max_keys",
                "max_keys must be None (no bound) or at least 1, not 0".into(),
            ));
        }
        let budget = keyed.max_total.map(|n| Arc::new(Budget::new(n)));
        let clock = self.clock.unwrap_or_default().into_inner();
        let shared = Arc::new_cyclic(|weak: &Weak<KeyedShared<K, M>>| {
            if let Some(b) = &budget {
                let weak = weak.clone();
                b.on_evict(Box::new(move || {
                    weak.upgrade().is_some_and(|k| k.evict_idle_connection())
                }));
            }
            KeyedShared {
                origin: clock.now(),
                manager: Arc::new(keyed.manager),
                config: self.config,
                clock,
                map: papaya::HashMap::builder()
                    .hasher(foldhash::fast::RandomState::default())
                    .build(),
                id: crate::last_key::new_id(),
                keys: AtomicUsize::new(0),
                budget,
                max_keys: keyed.max_keys,
                label: keyed.label,
                closed: AtomicBool::new(false),
                ticking: AtomicBool::new(false),
                forgotten: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }
        });
        Ok(KeyedPool { shared })
    }
}

/// The [`Manager`] of one key's pool: the keyed manager, bound to the key.
pub(crate) struct PerKey<K, M> {
    manager: Arc<M>,
    key: K,
}

impl<K: std::fmt::Debug, M> std::fmt::Debug for PerKey<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<K, M> Manager for PerKey<K, M>
where
    K: Send + Sync + 'static,
    M: KeyedManager<K>,
{
    type Connection = M::Connection;
    type Error = M::Error;

    fn connect(&self) -> impl Future<Output = Result<M::Connection, M::Error>> + Send {
        self.manager.connect(&self.key)
    }

    fn check(&self, conn: &mut M::Connection) -> impl Future<Output = Result<(), M::Error>> + Send {
        self.manager.check(&self.key, conn)
    }

    fn is_broken(&self, conn: &mut M::Connection) -> bool {
        self.manager.is_broken(&self.key, conn)
    }

    fn is_permanent(&self, error: &M::Error) -> bool {
        self.manager.is_permanent(&self.key, error)
    }

    #[inline(always)]
    fn needs_cleanup(&self, conn: &mut M::Connection) -> bool {
        self.manager.needs_cleanup(&self.key, conn)
    }

    fn cleanup(
        &self,
        conn: &mut M::Connection,
    ) -> impl Future<Output = Result<(), M::Error>> + Send {
        self.manager.cleanup(&self.key, conn)
    }

    const KEYED: bool = true;
}

/// One key in the map.
struct Entry<K, M: KeyedManager<K>>
where
    K: Send + Sync + 'static,
{
    /// The key, compared by a thread's last-key hit (`last_key.rs`).
    key: K,
    pool: Pool<PerKey<K, M>>,
    /// When the key was last seen in use (the keyed pool's clock, ms): its
    /// pool's acquisitions moved, or a `get` had to wait or connect.
    used: AtomicU64,
    /// Its pool's acquisitions when last looked at.
    seen: AtomicU64,
    /// Since when it has had no connection (ms), or `u64::MAX`.
    empty_since: AtomicU64,
}

/// What all clones of a [`KeyedPool`] share.
struct KeyedShared<K, M: KeyedManager<K>>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    manager: Arc<M>,
    /// Every key's pool's settings.
    config: Config,
    clock: quanta::Clock,
    origin: quanta::Instant,
    /// Entries are counted (`Arc`) so that a thread's last key
    /// (`last_key.rs`) can hold one past the map's guard.
    map: papaya::HashMap<K, Arc<Entry<K, M>>, foldhash::fast::RandomState>,
    /// This keyed pool's id in threads' last-key slots (`last_key.rs`).
    id: u64,
    /// Keys in the map (module invariants).
    keys: AtomicUsize,
    budget: Option<Arc<Budget>>,
    max_keys: Option<usize>,
    label: Option<Label<K>>,
    closed: AtomicBool,
    /// Whether the keyed pool's background task runs.
    ticking: AtomicBool,
    forgotten: AtomicU64,
    evicted: AtomicU64,
}

/// A pool per key, with a cap per key, one across keys, and a bound on the
/// keys kept (the README, "Pools per host"). Cheap to clone: clones share
/// one keyed pool.
///
/// ```
/// use latchless::{KeyedManager, KeyedPool};
///
/// /// One "connection" per upstream host.
/// struct Hosts;
/// impl KeyedManager<String> for Hosts {
///     type Connection = String;
///     type Error = std::io::Error;
///     async fn connect(&self, host: &String) -> Result<String, std::io::Error> {
///         Ok(format!("connected to {host}"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = KeyedPool::builder(Hosts).max_per_key(4).max_total(16).build().unwrap();
/// let a = "a.internal:80".to_string();
/// let conn = pool.get(&a).await.unwrap();
/// assert_eq!(*conn, "connected to a.internal:80");
/// assert_eq!(pool.state_of(&a).in_use, 1);
/// drop(conn);
/// assert_eq!(pool.state().idle, 1);
/// # }
/// ```
pub struct KeyedPool<K, M: KeyedManager<K>>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    shared: Arc<KeyedShared<K, M>>,
}

impl<K, M: KeyedManager<K>> Clone for KeyedPool<K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, M: KeyedManager<K>> std::fmt::Debug for KeyedPool<K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPool")
            .field("keys", &self.keys())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A connection of one key, checked out of a [`KeyedPool`]; returned (or
/// closed if broken) when dropped. As [`Pooled`], with the key.
#[must_use = "dropping it returns the connection at once"]
pub struct KeyedPooled<K, M: KeyedManager<K>>(pub(crate) Pooled<PerKey<K, M>>)
where
    K: Send + Sync + 'static;

impl<K, M: KeyedManager<K>> KeyedPooled<K, M>
where
    K: Send + Sync + 'static,
{
    /// The key this connection belongs to.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, KeyedPooled};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let conn = pool.get(&5432).await.unwrap();
    /// assert_eq!(*KeyedPooled::key(&conn), 5432);
    /// # }
    /// ```
    pub fn key(this: &Self) -> &K {
        &Pooled::manager(&this.0).key
    }

    /// Takes the connection out of the pool for good, freeing its place
    /// (and its share of `max_total`); see [`Pooled::detach`].
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, KeyedPooled};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let conn: u16 = KeyedPooled::detach(pool.get(&1).await.unwrap());
    /// assert_eq!(pool.state_of(&1).size, 0);
    /// # }
    /// ```
    pub fn detach(this: Self) -> M::Connection {
        Pooled::detach(this.0)
    }

    /// Makes the drop close the connection (counted as broken); see
    /// [`Pooled::mark_broken`].
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, KeyedPooled};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let mut conn = pool.get(&1).await.unwrap();
    /// KeyedPooled::mark_broken(&mut conn);
    /// drop(conn);
    /// assert_eq!(pool.state_of(&1).size, 0);
    /// # }
    /// ```
    pub fn mark_broken(this: &mut Self) {
        Pooled::mark_broken(&mut this.0);
    }

    /// Whether [`mark_broken`](Self::mark_broken) was called.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, KeyedPooled};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let conn = pool.get(&1).await.unwrap();
    /// assert!(!KeyedPooled::is_marked_broken(&conn));
    /// # }
    /// ```
    pub fn is_marked_broken(this: &Self) -> bool {
        Pooled::is_marked_broken(&this.0)
    }
}

impl<K, M: KeyedManager<K>> std::ops::Deref for KeyedPooled<K, M>
where
    K: Send + Sync + 'static,
{
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.0
    }
}

impl<K, M: KeyedManager<K>> std::ops::DerefMut for KeyedPooled<K, M>
where
    K: Send + Sync + 'static,
{
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.0
    }
}

impl<K, M: KeyedManager<K>> std::fmt::Debug for KeyedPooled<K, M>
where
    K: Send + Sync + std::fmt::Debug + 'static,
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPooled")
            .field("key", Self::key(self))
            .field("conn", &**self)
            .finish()
    }
}

/// The slow part of a keyed `get`: the key's pool's own `get`, on a clone
/// of its handle.
type SlowGet<K, M> = Pin<
    Box<
        dyn Future<Output = Result<Pooled<PerKey<K, M>>, PoolError<<M as KeyedManager<K>>::Error>>>
            + Send,
    >,
>;

/// How many times a `get` looks its key up again after finding the key's
/// pool closed under it (forgotten or evicted meanwhile).
const LOOKUPS: usize = 4;

impl<K, M: KeyedManager<K>> KeyedPool<K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    /// Starts configuring a keyed pool for `manager` (a [`KeyedBuilder`]).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).max_per_key(2).build().unwrap();
    /// ```
    pub fn builder(manager: M) -> KeyedBuilder<K, M> {
        Builder::new(Keyed {
            manager,
            max_total: None,
            max_keys: None,
            label: None,
            _key: PhantomData,
        })
    }

    /// A connection of `key`, waiting at most `acquire_timeout` (see
    /// [`Pool::get`]). A hit takes no lock and allocates nothing; the
    /// first `get` of a key creates its pool.
    ///
    /// # Errors
    /// As [`Pool::get`]; also [`PoolError::Exhausted`] when `key` is new,
    /// `max_keys` keys are kept and none of them is idle.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert_eq!(*pool.get(&443).await.unwrap(), 443);
    /// # }
    /// ```
    #[track_caller]
    pub fn get<'a>(
        &'a self,
        key: &'a K,
    ) -> impl Future<Output = Result<KeyedPooled<K, M>, PoolError<M::Error>>> + Send + 'a {
        self.acquire(key, self.shared.config.acquire_timeout, Location::caller())
    }

    /// [`get`](Self::get) waiting at most `timeout` instead of
    /// `acquire_timeout`.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # use std::time::Duration;
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).max_per_key(1).build().unwrap();
    /// let held = pool.get(&1).await.unwrap();
    /// assert!(pool.get_timeout(&1, Duration::from_millis(10)).await.is_err());
    /// assert!(pool.get_timeout(&2, Duration::from_millis(10)).await.is_ok(), "another key");
    /// # }
    /// ```
    #[track_caller]
    pub fn get_timeout<'a>(
        &'a self,
        key: &'a K,
        timeout: Duration,
    ) -> impl Future<Output = Result<KeyedPooled<K, M>, PoolError<M::Error>>> + Send + 'a {
        self.acquire(key, timeout, Location::caller())
    }

    /// [`get`](Self::get) with an absolute deadline.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # use std::time::{Duration, Instant};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// assert!(pool.get_until(&1, deadline).await.is_ok());
    /// # }
    /// ```
    #[track_caller]
    pub fn get_until<'a>(
        &'a self,
        key: &'a K,
        deadline: std::time::Instant,
    ) -> impl Future<Output = Result<KeyedPooled<K, M>, PoolError<M::Error>>> + Send + 'a {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.acquire(key, left, Location::caller())
    }

    /// An idle connection of `key` now, or `None`: no wait, no connect, no
    /// new key (see [`Pool::try_get`]).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert!(pool.try_get(&1).is_none());
    /// drop(pool.get(&1).await.unwrap());
    /// assert!(pool.try_get(&1).is_some());
    /// # }
    /// ```
    #[track_caller]
    pub fn try_get(&self, key: &K) -> Option<KeyedPooled<K, M>> {
        let by = Location::caller();
        self.fast(key, |pool| pool.try_get_by(by)).map(KeyedPooled)
    }

    pub(crate) fn acquire<'a>(
        &'a self,
        key: &'a K,
        timeout: Duration,
        by: &'static Location<'static>,
    ) -> impl Future<Output = Result<KeyedPooled<K, M>, PoolError<M::Error>>> + Send + 'a {
        KeyedAcquire {
            keyed: self,
            key,
            timeout,
            by,
            lookups: 0,
            slow: None,
        }
    }

    /// The fast path of `key`'s pool (`try_get` or a `get`'s first poll),
    /// reached through the thread's last key (`last_key.rs`) or the map;
    /// `None` where the key is not kept or `fast` found nothing.
    #[inline(always)]
    fn fast<R>(&self, key: &K, fast: impl FnOnce(&Pool<PerKey<K, M>>) -> Option<R>) -> Option<R> {
        let last = self.last(key);
        let map;
        // One call of `fast`, wherever the entry came from, so that it is
        // inlined once.
        let e = match &last {
            Some((e, _)) => e,
            None => {
                map = self.shared.map.pin();
                map.get(key)?
            }
        };
        let got = fast(&e.pool);
        match last {
            Some((e, way)) => last_key::put(self.shared.id, e, way),
            None if got.is_some() => last_key::seen(self.shared.id, e),
            None => {}
        }
        got
    }

    /// This thread's entry of `key` (`last_key.rs`), taken out of its way,
    /// if it holds one and its pool is open; a closed one (its key
    /// forgotten or evicted) is let go, and the map asked.
    #[inline(always)]
    fn last(&self, key: &K) -> Option<(Arc<Entry<K, M>>, usize)> {
        let (e, way) = last_key::take::<Entry<K, M>>(self.shared.id, |e| e.key == *key)?;
        (!e.pool.is_closed()).then_some((e, way))
    }

    /// The pool of `key`, created if new (making room past `max_keys`),
    /// for a `get` that must wait or connect.
    #[cold]
    fn pool_for(&self, key: &K) -> Result<Pool<PerKey<K, M>>, PoolError<M::Error>> {
        let shared = &self.shared;
        shared.start_background();
        let map = shared.map.pin();
        if let Some(e) = map.get(key) {
            if !e.pool.is_closed() {
                e.used.store(shared.now(), Ordering::Relaxed);
                return Ok(e.pool.clone());
            }
            // Forgotten or evicted under us: replace it.
            if map
                .remove_if(key, |_, e| e.pool.is_closed())
                .is_ok_and(|r| r.is_some())
            {
                shared.keys.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(PoolError::Closed);
        }
        if !shared.count_key() {
            return Err(PoolError::Exhausted);
        }
        match map.try_insert_with(key.clone(), || shared.entry(key)) {
            Ok(e) => Ok(e.pool.clone()),
            // Another `get` created it first.
            Err(e) => {
                shared.keys.fetch_sub(1, Ordering::AcqRel);
                Ok(e.pool.clone())
            }
        }
    }

    /// The sizes and waiters of `key`'s pool (all zero for a key not kept).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let c = pool.get(&7).await.unwrap();
    /// assert_eq!(pool.state_of(&7).in_use, 1);
    /// assert_eq!(pool.state_of(&8).size, 0);
    /// # }
    /// ```
    pub fn state_of(&self, key: &K) -> State {
        let map = self.shared.map.pin();
        map.get(key).map(|e| e.pool.state()).unwrap_or_default()
    }

    /// The sizes and waiters of every key's pool, summed.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// let (a, b) = (pool.get(&1).await.unwrap(), pool.get(&2).await.unwrap());
    /// assert_eq!(pool.state().in_use, 2);
    /// # }
    /// ```
    pub fn state(&self) -> State {
        let map = self.shared.map.pin();
        map.values().fold(State::default(), |mut s, e| {
            let k = e.pool.state();
            s.size += k.size;
            s.idle += k.idle;
            s.in_use += k.in_use;
            s.waiting += k.waiting;
            s
        })
    }

    /// The counters of `key`'s pool, if the key is kept.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// drop(pool.get(&1).await.unwrap());
    /// assert_eq!(pool.metrics_of(&1).unwrap().opened, 1);
    /// assert!(pool.metrics_of(&2).is_none());
    /// # }
    /// ```
    pub fn metrics_of(&self, key: &K) -> Option<Metrics> {
        let map = self.shared.map.pin();
        map.get(key).map(|e| e.pool.metrics())
    }

    /// The counters of every key's pool, summed (histograms merged), for
    /// the keys kept now: a forgotten key's counts leave with it.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// drop(pool.get(&1).await.unwrap());
    /// drop(pool.get(&2).await.unwrap());
    /// assert_eq!(pool.metrics().opened, 2);
    /// # }
    /// ```
    pub fn metrics(&self) -> Metrics {
        let map = self.shared.map.pin();
        let mut all = Metrics::default();
        for e in map.values() {
            all.absorb(&e.pool.metrics());
        }
        all
    }

    /// The health of `key`'s pool (see [`Pool::health`]); healthy for a key
    /// not kept.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert!(pool.health_of(&1).is_healthy());
    /// ```
    pub fn health_of(&self, key: &K) -> Health {
        let map = self.shared.map.pin();
        map.get(key).map(|e| e.pool.health()).unwrap_or_default()
    }

    /// The health of the whole keyed pool: every alert firing on any key
    /// (one per kind, the worst value; [`health_of`](Self::health_of) tells
    /// which key).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert!(pool.health().is_healthy());
    /// ```
    pub fn health(&self) -> Health {
        let map = self.shared.map.pin();
        let mut all = Health::default();
        for e in map.values() {
            all.absorb(e.pool.health());
        }
        all
    }

    /// Sizing advice for `key`'s pool (see [`Pool::sizing`]).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, SizingVerdict};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert_eq!(pool.sizing_of(&1).verdict, SizingVerdict::NoData);
    /// ```
    pub fn sizing_of(&self, key: &K) -> Sizing {
        let map = self.shared.map.pin();
        map.get(key).map(|e| e.pool.sizing()).unwrap_or_default()
    }

    /// Sizing advice for the whole keyed pool: the keys' recommendations
    /// summed, judged against `max_total` (or, without it, the keys' caps
    /// summed).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, SizingVerdict};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert_eq!(pool.sizing().verdict, SizingVerdict::NoData);
    /// ```
    pub fn sizing(&self) -> Sizing {
        let map = self.shared.map.pin();
        let mut all = Sizing::default();
        let mut caps = 0;
        let mut data = false;
        for e in map.values() {
            let s = e.pool.sizing();
            caps += s.max_size;
            if s.verdict != SizingVerdict::NoData {
                data = true;
                all.acquire_rate_per_s += s.acquire_rate_per_s;
                all.recommended += s.recommended;
                all.observed = all.observed.max(s.observed);
                all.mean_hold = all.mean_hold.max(s.mean_hold);
            }
        }
        all.max_size = self.shared.budget.as_ref().map_or(caps, |b| b.max());
        all.verdict = if data {
            Sizing::verdict_for(all.recommended, all.max_size)
        } else {
            SizingVerdict::NoData
        };
        all
    }

    /// Keys kept now.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// drop(pool.get(&1).await.unwrap());
    /// assert_eq!(pool.keys(), 1);
    /// # }
    /// ```
    pub fn keys(&self) -> usize {
        self.shared.keys.load(Ordering::Acquire)
    }

    /// Keys forgotten (no connection for `idle_timeout`) and keys evicted
    /// (to make room past `max_keys`) so far.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// assert_eq!(pool.keys_dropped(), (0, 0));
    /// ```
    pub fn keys_dropped(&self) -> (u64, u64) {
        (
            self.shared.forgotten.load(Ordering::Relaxed),
            self.shared.evicted.load(Ordering::Relaxed),
        )
    }

    /// The settings every key's pool was built with (`max_size` is the cap
    /// per key).
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).max_per_key(3).build().unwrap();
    /// assert_eq!(pool.config().max_size, 3);
    /// ```
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs one maintenance pass of every key's pool now, then forgets the
    /// keys that have had no connection for `idle_timeout` (see
    /// [`Pool::maintain`]; the keyed pool does this on its own while a
    /// Tokio runtime runs it).
    ///
    /// ```
    /// # use latchless::{Clock, KeyedManager, KeyedPool};
    /// # use std::time::Duration;
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (clock, mock) = Clock::mock();
    /// let pool = KeyedPool::builder(Hosts)
    ///     .idle_timeout(Some(Duration::from_secs(60)))
    ///     .clock(clock)
    ///     .build()
    ///     .unwrap();
    /// drop(pool.get(&1).await.unwrap());
    /// mock.advance(Duration::from_secs(61));
    /// pool.maintain(); // the idle connection closes; the key is now empty
    /// mock.advance(Duration::from_secs(61));
    /// pool.maintain(); // and forgotten
    /// assert_eq!(pool.keys(), 0);
    /// # }
    /// ```
    pub fn maintain(&self) {
        self.shared.maintain();
    }

    /// Closes every key's pool (see [`Pool::close`]): waiters get
    /// [`PoolError::Closed`], idle connections close now, in-use ones when
    /// returned, and no key is created any more. Idempotent.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool, PoolError};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// pool.close().await;
    /// assert!(matches!(pool.get(&1).await, Err(PoolError::Closed)));
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.close_all();
    }

    /// Closes the keyed pool, then waits until every connection of every
    /// key has come back and been closed, or `timeout` passed (see
    /// [`Pool::drain`]). Returns how many places were still taken then.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # use std::time::Duration;
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = KeyedPool::builder(Hosts).build().unwrap();
    /// drop(pool.get(&1).await.unwrap());
    /// assert_eq!(pool.drain(Duration::from_secs(1)).await, 0);
    /// # }
    /// ```
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.shared.close_all();
        let pools: Vec<_> = {
            let map = self.shared.map.pin();
            map.values().map(|e| e.pool.clone()).collect()
        };
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let mut left = 0;
        for pool in pools {
            let rest = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(tokio::time::Instant::now())
            });
            left += pool.drain(rest).await;
        }
        left
    }

    /// Exports the aggregate through the `metrics` facade as
    /// [`Pool::export_metrics`] does (label `pool`), and, with a
    /// [`key_label`](Builder::key_label), each key's own under its label
    /// (`pool` and `key`). Feature `metrics`.
    ///
    /// ```
    /// # use latchless::{KeyedManager, KeyedPool};
    /// # struct Hosts; impl KeyedManager<u16> for Hosts { type Connection = u16;
    /// #   type Error = std::io::Error;
    /// #   async fn connect(&self, p: &u16) -> Result<u16, std::io::Error> { Ok(*p) } }
    /// let pool = KeyedPool::builder(Hosts).key_label(|p| p.to_string()).build().unwrap();
    /// pool.export_metrics(); // a no-op without an installed recorder
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export_metrics(&self) {
        let shared = &self.shared;
        let max = shared
            .budget
            .as_ref()
            .map_or(shared.config.max_size, |b| b.max());
        crate::metrics::export(
            &shared.config.name,
            &self.metrics(),
            &self.health(),
            &self.sizing(),
            max,
        );
        if shared.label.is_some() {
            let map = shared.map.pin();
            for e in map.values() {
                e.pool.export_metrics();
            }
        }
    }
}

impl<K, M: KeyedManager<K>> KeyedShared<K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    /// The keyed pool's time, ms since it was built.
    fn now(&self) -> u64 {
        let ms = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1)
    }

    /// A new key's entry: its pool built from the shared settings.
    fn entry(&self, key: &K) -> Arc<Entry<K, M>> {
        let mut config = self.config.clone();
        if let Some(label) = &self.label {
            config.name = format!("{}/{}", config.name, label(key));
        }
        let manager = PerKey {
            manager: Arc::clone(&self.manager),
            key: key.clone(),
        };
        let pool = Pool::new_in(manager, config, self.clock.clone(), self.budget.clone());
        let now = self.now();
        Arc::new(Entry {
            key: key.clone(),
            pool,
            used: AtomicU64::new(now),
            seen: AtomicU64::new(0),
            empty_since: AtomicU64::new(u64::MAX),
        })
    }

    /// Counts a key about to be inserted, making room past `max_keys` by
    /// evicting the least recently used key with nothing in use and nobody
    /// waiting. False if there is no room.
    fn count_key(&self) -> bool {
        let Some(max) = self.max_keys else {
            self.keys.fetch_add(1, Ordering::AcqRel);
            return true;
        };
        loop {
            let n = self.keys.load(Ordering::Acquire);
            if n < max {
                if self
                    .keys
                    .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if !self.evict_idle_key() {
                return false;
            }
        }
    }

    /// Removes the least recently used key with nothing in use and nobody
    /// waiting (its pool closed); whether it found one.
    fn evict_idle_key(&self) -> bool {
        let map = self.map.pin();
        let victim = map
            .iter()
            .filter(|(_, e)| {
                let s = e.pool.state();
                s.in_use == 0 && s.waiting == 0
            })
            .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone());
        let Some(key) = victim else {
            return false;
        };
        if self.remove(&map, &key, |e| {
            let s = e.pool.state();
            s.in_use == 0 && s.waiting == 0
        }) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        // Removed by us or by another: either way there may be room now.
        true
    }

    /// Removes `key` if `unused` still holds, closing its pool.
    fn remove(
        &self,
        map: &papaya::HashMapRef<
            '_,
            K,
            Arc<Entry<K, M>>,
            foldhash::fast::RandomState,
            impl papaya::Guard,
        >,
        key: &K,
        unused: impl Fn(&Entry<K, M>) -> bool,
    ) -> bool {
        match map.remove_if(key, |_, e| unused(e)) {
            Ok(Some((_, e))) => {
                e.pool.close_now();
                self.keys.fetch_sub(1, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// Closes the least recently used idle connection of any key, to free
    /// its budget token for a starved `get` (`budget.rs`); whether it found
    /// one.
    fn evict_idle_connection(&self) -> bool {
        let map = self.map.pin();
        let mut by_age: Vec<_> = map
            .values()
            .filter(|e| e.pool.state().idle > 0)
            .map(|e| (e.used.load(Ordering::Relaxed), &e.pool))
            .collect();
        by_age.sort_unstable_by_key(|(used, _)| *used);
        by_age.into_iter().any(|(_, pool)| pool.close_one_idle())
    }

    /// Every key: notes use, and forgets a key that has had no connection
    /// for `idle_timeout` (then runs each remaining key's pass).
    fn maintain(&self) {
        let now = self.now();
        let forget_after = self
            .config
            .idle_timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let map = self.map.pin();
        let mut gone = Vec::new();
        for (key, e) in map.iter() {
            e.pool.maintain();
            let uses = e.pool.uses();
            if e.seen.swap(uses, Ordering::Relaxed) != uses {
                e.used.store(now, Ordering::Relaxed);
            }
            let state = e.pool.state();
            if state.size > 0 || state.waiting > 0 {
                e.empty_since.store(u64::MAX, Ordering::Relaxed);
                continue;
            }
            let since = match e.empty_since.load(Ordering::Relaxed) {
                u64::MAX => {
                    e.empty_since.store(now, Ordering::Relaxed);
                    now
                }
                t => t,
            };
            let idle_for = now.saturating_sub(since.max(e.used.load(Ordering::Relaxed)));
            if forget_after.is_some_and(|after| idle_for >= after) {
                gone.push(key.clone());
            }
        }
        for key in gone {
            if self.remove(&map, &key, |e| {
                let s = e.pool.state();
                s.size == 0 && s.waiting == 0
            }) {
                self.forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Closes every key's pool; no key is created after.
    fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        let map = self.map.pin();
        for e in map.values() {
            e.pool.close_now();
        }
    }

    /// Starts the keyed pool's background task (key maintenance every
    /// maintenance period) on the current Tokio runtime, if none runs.
    fn start_background(self: &Arc<Self>) {
        if self.ticking.load(Ordering::Relaxed) || !self.config.background {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let period = crate::config::maintenance_period(&self.config);
        handle.spawn(async move {
            // Gives `ticking` back if the runtime drops the task.
            struct Ticking<K, M: KeyedManager<K>>(Weak<KeyedShared<K, M>>)
            where
                K: Eq + Hash + Clone + Send + Sync + 'static;
            impl<K, M: KeyedManager<K>> Drop for Ticking<K, M>
            where
                K: Eq + Hash + Clone + Send + Sync + 'static,
            {
                fn drop(&mut self) {
                    if let Some(k) = self.0.upgrade() {
                        k.ticking.store(false, Ordering::Release);
                    }
                }
            }
            let ticking = Ticking(weak);
            loop {
                crate::sync::sleep(period).await;
                let Some(shared) = ticking.0.upgrade() else {
                    return;
                };
                if shared.closed.load(Ordering::Acquire) {
                    return;
                }
                shared.maintain();
            }
        });
    }
}

impl<K, M: KeyedManager<K>> Drop for KeyedShared<K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.close_all();
    }
}

/// The future of a keyed `get`: the key's fast path under the map's guard
/// on its first poll; a miss goes on with the key's own pool (`SlowGet`).
struct KeyedAcquire<'a, K, M: KeyedManager<K>>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    keyed: &'a KeyedPool<K, M>,
    key: &'a K,
    timeout: Duration,
    by: &'static Location<'static>,
    lookups: usize,
    slow: Option<SlowGet<K, M>>,
}

impl<K, M: KeyedManager<K>> Future for KeyedAcquire<'_, K, M>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
{
    type Output = Result<KeyedPooled<K, M>, PoolError<M::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(slow) = this.slow.as_mut() {
                let done = std::task::ready!(slow.as_mut().poll(cx));
                this.slow = None;
                match done {
                    Ok(conn) => return Poll::Ready(Ok(KeyedPooled(conn))),
                    // The key's pool closed under it (forgotten or evicted):
                    // look the key up again, unless the keyed pool closed.
                    Err(PoolError::Closed)
                        if !this.keyed.shared.closed.load(Ordering::Acquire)
                            && this.lookups < LOOKUPS => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            } else if this.lookups == 0 {
                // The hit: no lock, no allocation (module docs).
                let by = this.by;
                let hit = this.keyed.fast(this.key, |pool| match pool.quick(by) {
                    Quick::Hit(conn) => Some(conn),
                    // Closed: its key forgotten or evicted just now; the
                    // slow path looks the key up again.
                    Quick::Miss | Quick::Closed => None,
                });
                if let Some(conn) = hit {
                    return Poll::Ready(Ok(KeyedPooled(conn)));
                }
            }
            this.lookups += 1;
            let pool = match this.keyed.pool_for(this.key) {
                Ok(pool) => pool,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let (timeout, by) = (this.timeout, this.by);
            this.slow = Some(Box::pin(async move { pool.acquire(timeout, by).await }));
        }
    }
}
