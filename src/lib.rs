#![doc = include_str!("../README.md")]
//!
//! # Architecture in one page
//!
//! How the pool is built, for readers of the source; `DESIGN.md` has the
//! whole argument, and each module's header the invariants it keeps.
//!
//! - **Places are slots** (`slots.rs`). A pool owns exactly
//!   `max_size_limit` slots (default `max_size`); reserving capacity takes
//!   a place below the run-time cap (one CAS) and pops a free slot index,
//!   so there are never more than `max_size` connections, connecting ones
//!   included (after a run-time shrink, once the surplus is back). Each
//!   slot has one atomic state word, generation + tag (FREE / IDLE /
//!   PARKED / BUSY), the single source of truth for who owns it. Ownership
//!   travels as non-`Copy` tokens (`Busy`, `Place`), and the owner of a
//!   claimed slot reaches its connection's facts and its holding through
//!   one borrowed view.
//! - **The idle set** (`idle.rs`) is every place an idle connection can
//!   be, looked at in this order. This thread's cache: a release with no
//!   waiter parks its connection for its thread (the slot PARKED with one
//!   Release store, its key in the thread's private cache, `tid.rs`), and
//!   the thread's next acquire takes it back with one CAS. The shards: per
//!   shard a hot word and a crossbeam `ArrayQueue` of `(slot, generation)`
//!   keys, the thread's home shard first, the others when it is empty; a
//!   popped key is claimed with one CAS `IDLE(g) -> BUSY(g)`, and a key
//!   whose generation moved on is stale and skipped. Last, a scan for
//!   connections other threads parked.
//! - **The parking release pays no read-modify-write** (`asym.rs`): the
//!   ordering a waiter needs is paid by the waiter, with one `membarrier`
//!   after a quiet spell; while waiters keep coming, releases fence.
//! - **Waiters take no lock** (`waiters.rs`): at the cap a `get` pushes a
//!   small node (one its thread's last waits left, where it has one: a
//!   queueing pool allocates nothing per wait) onto a lock-free stack, counts itself, re-checks, and
//!   parks. A releaser takes the waiter line with one CAS and hands its
//!   connection (or a freed place) straight to the oldest live waiter; if
//!   another thread holds the line, it looks again a bounded number of
//!   times, then leaves the grant for that thread to serve and moves on:
//!   nobody waits for the line beyond those looks. Cancelling
//!   withdraws the node or passes on what it was served. Deadlines live in
//!   the nodes and are swept by the pool's background task.
//! - **The release path** starts in `Drop for Pooled` (`pooled.rs`) and
//!   reads from start to end in `release.rs`; the acquire path, `get`'s
//!   future included, is `pool.rs`'s; `core.rs` holds the state they
//!   share. Neither path takes a lock, allocates, or reads a clock in the
//!   steady state; the guard needs no reference count of its own (its
//!   thread's hazard window covers the release's re-check: `hazard.rs`,
//!   `lifetime.rs`).
//! - **One time base** (`clock.rs`): connection lifetimes, idle timeouts
//!   and waiter deadlines all run on the pool's `quanta` clock, so
//!   [`Clock::mock`] moves every one of them ([`Pool::maintain`] sweeps
//!   what is due); Tokio timers bound only I/O. While the background task
//!   runs, the hot path reads a cached coarse reading instead of the clock.
//! - **Layers** (DESIGN.md, "Layout"): handles (`builder`, `pool`,
//!   `pooled`), tasks (`background`, `connector`, `guards`), the release
//!   protocol (`release`), the shared state (`core`), its parts (`idle`,
//!   `waiters`, `lifecycle`, `maintenance`, `lifetime`, `breaker`,
//!   `metrics`), leaves (`health`, `histogram`, `slots`, `hazard`,
//!   `asym`, `wheel`), the base (`tid`, `clock`, `time`, `config`,
//!   `error`, `manager`) and, under everything, `sync`. Imports point down
//!   this list; DESIGN.md names the one that does not yet.
//! - **Test scaffolding stays out**: the loom switch is `sync.rs` and the
//!   loom hooks `loom_support.rs` (loom builds only); injected bugs for the
//!   mutation runs are one function, `sync::mutant`; the fuzz checker is
//!   `fuzzing.rs`, compiled only for tests and the fuzz build.
//!
//! Invariants (see DESIGN.md): I1 a connection has one owner; I2 never more
//! than `max_size` open; I3 every connection opened is closed once; I4 no
//! waiter sleeps while a connection is idle or a place free; I5 a cancelled
//! `get` loses nothing; I6 a connection past `max_lifetime` is never handed
//! out, and one idle past `check_after_idle` is checked first; I7 waiters
//! are served first come, first served.
//!
//! Overtaking (I7): a `get` that finds an idle connection takes it without
//! queueing. That can only happen in the short window in which a releaser
//! saw no waiter and put its connection in the idle set, before a waiter
//! that registered meanwhile re-checks; once a waiter is registered,
//! releases serve the line in order.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

mod asym;
mod background;
mod breaker;
mod budget;
mod builder;
mod clock;
mod config;
mod connector;
mod core;
mod error;
mod guards;
mod hazard;
mod health;
mod histogram;
mod idle;
mod keyed;
mod keyed_manager;
mod last_key;
mod lifecycle;
mod lifetime;
#[cfg(latchless_loom)]
mod loom_support;
#[cfg(latchless_loom)]
#[doc(hidden)]
pub use loom_support::LoomBudget;
mod maintenance;
mod manager;
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "tcp", feature = "postgres", feature = "redis")))
)]
pub mod managers;
mod metrics;
mod offpath;
mod pool;
mod pooled;
mod release;
mod retry;
mod slots;
mod sync;
#[cfg(test)]
mod test_support;
mod tid;
mod time;
mod waiters;
mod wheel;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

pub use builder::{BuildError, Builder, ResizeError};
pub use config::{Config, MAX_POOL_SIZE};
pub use error::{Outage, PoolError, TimeoutKind};
pub use health::{Alert, AlertKind, Health, Sizing, SizingVerdict};
pub use histogram::HistogramSnapshot;
pub use keyed::{Keyed, KeyedBuilder, KeyedPool, KeyedPooled};
pub use keyed_manager::KeyedManager;
pub use manager::Manager;
pub use metrics::{Metrics, State};
pub use pool::Pool;
pub use pooled::Pooled;
pub use retry::{RetryError, RetryPolicy};
pub use time::{Clock, MockClock};

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use managers::{
    HttpBuilder, HttpConnection, HttpError, HttpManager, HttpOriginManager, Origin, OriginError,
    RequestError, ResponseBody, Router,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use managers::{PgCleanup, PgConnection, PgError, PgManager};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use managers::{RedisConnection, RedisManager};
#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub use managers::{TcpConnection, TcpManager};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use managers::{TlsBuilder, TlsConnection, TlsManager};

// The drivers whose types the managers take and hand out, so that a user
// names them through latchless and never has to keep a second dependency
// on the same crate at a matching version.

/// The tokio-postgres crate [`PgManager`] is built on: its `Config`,
/// `Client` methods, `Row` and `Error` are the ones [`PgConnection`] uses.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use tokio_postgres;

/// The redis crate [`RedisManager`] is built on: its commands
/// (`redis::AsyncCommands`, `redis::cmd`, `redis::pipe`) and `RedisError`
/// are the ones [`RedisConnection`] uses.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;

/// The rustls crate [`TlsManager`] (and `PgManager::with_tls`) takes its
/// `ClientConfig`, certificates and keys from (also at
/// `latchless::managers::rustls`).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;

/// The hyper crate [`HttpManager`] is built on: its client connection
/// API (`hyper::client::conn::http1`), the `Incoming` body under
/// [`ResponseBody`], and `hyper::Error`.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use hyper;

/// The http crate whose `Request`, `Response`, `Uri` and headers
/// [`HttpManager`] and `managers::send_with_retry` take and return.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http;

/// The bytes crate: the `Bytes` of request and response bodies.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use bytes;

/// The http-body-util crate: `Full` (the request body of an
/// [`HttpConnection`]) and `BodyExt` (to read a [`ResponseBody`]).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http_body_util;

/// The tokio-rustls crate whose `client::TlsStream` a [`TlsConnection`]
/// wraps (`conn.get_ref()`).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tokio_rustls;
