//! `Builder::build` validation: every rule, named in the error; no panic
//! on any value.

mod common;

use std::time::Duration;

use common::TestManager;
use latchless::{BuildError, MAX_POOL_SIZE, Pool};

/// The largest `shards` the builder accepts (its documented bound).
const MAX_SHARDS: usize = 1024;

fn build(
    f: impl FnOnce(latchless::Builder<TestManager>) -> latchless::Builder<TestManager>,
) -> Result<(), BuildError> {
    f(Pool::builder(TestManager::default())).build().map(drop)
}

fn refused(
    f: impl FnOnce(latchless::Builder<TestManager>) -> latchless::Builder<TestManager>,
    field: &str,
    message: &str,
) {
    let err = build(f).expect_err("must be refused");
    assert_eq!(err.field(), field);
    assert_eq!(err.to_string(), message);
}

#[test]
fn defaults_build_and_match_the_documented_values() {
    let pool = Pool::builder(TestManager::default()).build().unwrap();
    let c = pool.config();
    assert_eq!(c.max_size, 10);
    assert_eq!(c.min_idle, 0);
    assert_eq!(c.acquire_timeout, Duration::from_secs(30));
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(c.max_lifetime, Some(Duration::from_secs(1800)));
    assert_eq!(c.check_after_idle, Some(Duration::from_millis(500)));
    assert_eq!(c.leak_threshold, None);
    assert_eq!(c.max_waiters, None);
    assert_eq!(
        c.shards,
        std::thread::available_parallelism().unwrap().get()
    );
}

#[test]
fn every_rule_is_enforced_and_named() {
    refused(
        |b| b.max_size(0),
        "max_size",
        "max_size (0) must be at least 1",
    );
    refused(
        |b| b.max_size(MAX_POOL_SIZE + 1),
        "max_size",
        &format!(
            "max_size ({}) must not exceed {MAX_POOL_SIZE}",
            MAX_POOL_SIZE + 1
        ),
    );
    refused(
        |b| b.max_size(4).min_idle(5),
        "min_idle",
        "min_idle (5) must not exceed max_size (4)",
    );
    refused(
        |b| b.shards(0),
        "shards",
        &format!("shards (0) must be in 1..={MAX_SHARDS}"),
    );
    refused(
        |b| b.shards(MAX_SHARDS + 1),
        "shards",
        &format!("shards ({}) must be in 1..={MAX_SHARDS}", MAX_SHARDS + 1),
    );
    refused(
        |b| b.acquire_timeout(Duration::ZERO),
        "acquire_timeout",
        "acquire_timeout must be non-zero (use try_get() not to wait)",
    );
    refused(
        |b| b.connect_timeout(Duration::ZERO),
        "connect_timeout",
        "connect_timeout must be non-zero",
    );
    type B = latchless::Builder<TestManager>;
    type Rule = (&'static str, fn(B) -> B);
    let zero_rules: [Rule; 3] = [
        ("idle_timeout", |b| b.idle_timeout(Some(Duration::ZERO))),
        ("max_lifetime", |b| b.max_lifetime(Some(Duration::ZERO))),
        ("leak_threshold", |b| b.leak_threshold(Some(Duration::ZERO))),
    ];
    for (field, f) in zero_rules {
        refused(
            f,
            field,
            &format!("{field} must be None (off) or non-zero, not Some(0)"),
        );
    }
}

#[test]
fn edge_values_that_make_sense_are_accepted() {
    build(|b| b.max_size(1).min_idle(1).shards(1)).unwrap();
    build(|b| b.max_size(MAX_POOL_SIZE.min(4096)).shards(MAX_SHARDS)).unwrap();
    build(|b| b.check_after_idle(Some(Duration::ZERO))).unwrap();
    build(|b| {
        b.check_after_idle(None)
            .idle_timeout(None)
            .max_lifetime(None)
    })
    .unwrap();
    build(|b| b.max_waiters(Some(0))).unwrap();
    build(|b| {
        b.acquire_timeout(Duration::MAX)
            .connect_timeout(Duration::MAX)
            .idle_timeout(Some(Duration::MAX))
            .max_lifetime(Some(Duration::MAX))
            .leak_threshold(Some(Duration::MAX))
            .max_waiters(Some(usize::MAX))
    })
    .unwrap();
}

#[test]
fn build_works_outside_a_runtime() {
    std::thread::spawn(|| {
        let pool = Pool::builder(TestManager::default()).build().unwrap();
        assert!(pool.try_get().is_none());
    })
    .join()
    .unwrap();
}

#[test]
fn public_types_are_send_and_sync_as_the_api_promises() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Pool<TestManager>>();
    sync::<Pool<TestManager>>();
    send::<latchless::Pooled<TestManager>>();
    send::<latchless::PoolError<common::ConnectError>>();
    // The future of `get` can be spawned on a multi-threaded runtime.
    fn send_future<F: std::future::Future + Send>(_: F) {}
    let pool = Pool::builder(TestManager::default()).build().unwrap();
    send_future(pool.get());
}
