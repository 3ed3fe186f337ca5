#![doc = include_str!("../README.md")]
//!
//! # Architecture in one page
//!
//! - **Places are slots** (`slots.rs`). A pool owns exactly
//!   `max_size_limit` slots (default `max_size`); reserving capacity takes
//!   a place below the run-time cap (one CAS) and pops a free slot index,
//!   so there can never be more than `max_size` connections, connecting
//!   ones included (after a run-time shrink, once the surplus is back). Each slot has one atomic word, generation + state
//!   (FREE / IDLE / BUSY), the single source of truth for who owns it.
//! - **The idle set is sharded per core** (`shards.rs`): one cache-padded
//!   crossbeam `ArrayQueue` of `(slot, generation)` keys per shard. A thread
//!   pushes to and pops from its home shard and steals when it is empty. A
//!   popped key is claimed with one CAS `IDLE(g) -> BUSY(g)`; a key whose
//!   generation moved on is stale and skipped.
//! - **Waiters take no lock** (`waiters.rs`): at the cap a `get` enqueues a
//!   small node in a lock-free FIFO, re-checks, and parks; a release hands
//!   its connection (or a freed place) straight to the oldest live waiter
//!   with one CAS on the node. Cancelling withdraws the node or gives back
//!   what it was served.
//! - **The release path** starts in `Drop for Pooled` (`pooled.rs`) and
//!   continues in the core's hand-off protocol (`core.rs`); the acquire
//!   path is in `pool.rs`. Neither takes a lock, allocates, or reads a
//!   clock in the steady state; the guard needs no reference count of its
//!   own. Slot ownership travels as non-`Copy` tokens (`slots.rs`).
//! - **Layers** (DESIGN.md, "Layout"): `pool` → `background`, `connector`,
//!   `guards` → `core` → `lifecycle`, `maintenance`, `lifetime` → the data
//!   structures → `config`, `clock`, `metrics`, `error`, `manager`, `tid`,
//!   `sync`; no module imports one that imports it back.
//! - **Time** comes from `quanta` (`clock.rs`), read on slow paths only; the
//!   hot path uses a cached coarse reading.
//!
//! Invariants (see DESIGN.md): I1 a connection has one owner; I2 never more
//! than `max_size` open; I3 every connection opened is closed once; I4 no
//! waiter sleeps while a connection is idle or a place free; I5 a cancelled
//! `get` loses nothing; I7 waiters are served first come, first served.
//! I6 a connection past `max_lifetime` is never handed out, and one idle
//! past `check_after_idle` is checked first.
//!
//! Overtaking (I7): a `get` that finds an idle connection takes it without
//! queueing. That can only happen in the short window in which a releaser
//! saw no waiter and pushed its connection to the idle set, before a waiter
//! that registered meanwhile re-checks; once a waiter is registered,
//! releases serve the queue in order.

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
mod pool;
mod pooled;
mod release;
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
pub use time::{Clock, MockClock};

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use managers::{
    HttpBuilder, HttpConnection, HttpError, HttpManager, HttpOriginManager, Origin, OriginError,
    RequestError, ResponseBody,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use managers::{PgConnection, PgError, PgManager};
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
