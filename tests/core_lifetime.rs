//! The shared core's lifetime, in scenarios small enough for miri
//! (`.ci/run` runs this file under Stacked Borrows and under Tree Borrows):
//! a guard outliving its pool, a release racing the last pool drop, a
//! cancelled waiter racing the release that serves it.
//!
//! No Tokio runtime runs: `get()` is polled by hand with a no-op waker
//! (inside a runtime's context only where it connects), the pool has no
//! background task, no deadline (`acquire_timeout(MAX)`) and a
//! mock clock, so every step runs on plain threads that miri can schedule.
//! Under miri, the release path yields right after it publishes its
//! connection (`sync::after_publish`), so the other thread runs inside the
//! releaser's re-check window in every run. Natively the same tests run
//! many rounds and catch what they can with AddressSanitizer (`.ci/run`).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use latchless::{Manager, Pool, Pooled};

/// Rounds per scenario: miri is ~1000x slower than native code.
const ROUNDS: usize = if cfg!(miri) { 3 } else { 2_000 };

/// Connections are numbers; the manager counts opened and closed ones.
#[derive(Debug, Default)]
struct Counted {
    opened: AtomicUsize,
    closed: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Conn(Arc<AtomicUsize>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// The manager: a handle on the shared counts.
#[derive(Debug)]
struct Numbers(Arc<Counted>);

impl Manager for Numbers {
    type Connection = Conn;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Conn, std::io::Error> {
        self.0.opened.fetch_add(1, SeqCst);
        Ok(Conn(Arc::clone(&self.0.closed)))
    }
}

fn pool(max_size: usize) -> (Pool<Numbers>, Arc<Counted>) {
    let counted = Arc::new(Counted::default());
    let (clock, _mock) = latchless::Clock::mock();
    let pool = Pool::builder(Numbers(Arc::clone(&counted)))
        .max_size(max_size)
        .background(false)
        .acquire_timeout(Duration::MAX)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .shards(1)
        .clock(clock)
        .build()
        .unwrap();
    (pool, counted)
}

/// Polls `fut` once with a no-op waker.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// `get()` that must complete on its first poll (an idle connection or a
/// free place; the manager's connect never waits). A connect is bounded by
/// `connect_timeout`, whose timer needs a runtime's context (never
/// driven: the connect is ready at once).
fn get_now(pool: &Pool<Numbers>) -> Pooled<Numbers> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _context = rt.enter();
    match poll_once(pin!(pool.get())) {
        Poll::Ready(Ok(conn)) => conn,
        Poll::Ready(Err(e)) => panic!("get failed: {e}"),
        Poll::Pending => panic!("get waited with a place free"),
    }
}

/// A guard dropped after the last pool: the guard's connection keeps the
/// core alive, and its release frees it. Miri flagged the pointer the
/// guard kept (made from `&Shared`, not from the `Arc`) under both borrow
/// models before the fix.
#[test]
fn a_guard_dropped_after_its_pool_frees_the_core() {
    for _ in 0..ROUNDS {
        let (pool, counted) = pool(2);
        let conn = get_now(&pool);
        let idle = get_now(&pool);
        drop(idle);
        drop(pool);
        assert_eq!(
            counted.closed.load(SeqCst),
            1,
            "the idle one closed with the pool"
        );
        drop(conn);
        assert_eq!(counted.opened.load(SeqCst), 2);
        assert_eq!(
            counted.closed.load(SeqCst),
            2,
            "closed on return to a closed pool"
        );
        assert_eq!(
            Arc::strong_count(&counted),
            1,
            "the core (and its manager) was freed with the last reference"
        );
    }
}

/// A release on one thread racing the last pool drop on another: the
/// releaser publishes its connection, the pool's drop closes it and drops
/// the core's last reference while the releaser still re-checks. The core
/// must not be freed (nor mutably borrowed) before the releaser is done.
#[test]
fn a_release_racing_the_last_pool_drop() {
    for _ in 0..ROUNDS {
        let (pool, counted) = pool(1);
        let conn = get_now(&pool);
        let releaser = std::thread::spawn(move || drop(conn));
        // Drop the pool once the connection is published (under miri the
        // releaser is then parked in its re-check window).
        while pool.state().idle == 0 && !releaser.is_finished() {
            std::thread::yield_now();
        }
        drop(pool);
        releaser.join().unwrap();
        assert_eq!(counted.opened.load(SeqCst), 1);
        assert_eq!(counted.closed.load(SeqCst), 1, "closed exactly once");
        assert_eq!(Arc::strong_count(&counted), 1, "the core was freed");
    }
}

/// A parked `get` cancelled on one thread while a release on another
/// serves it: either the waiter withdrew first (the connection goes to the
/// idle set) or it was served and its cancellation gives the connection
/// back. Nothing is lost either way, and the core outlives both.
#[test]
fn a_cancelled_waiter_racing_the_release_that_serves_it() {
    for round in 0..ROUNDS {
        let (pool, counted) = pool(1);
        let conn = get_now(&pool);
        let go = Arc::new(Barrier::new(2));
        let waiter = {
            let pool = pool.clone();
            let go = Arc::clone(&go);
            std::thread::spawn(move || {
                let mut get = Box::pin(pool.get());
                assert!(poll_once(get.as_mut()).is_pending(), "parked at the cap");
                go.wait();
                // Cancel (drop) the parked get, racing the release.
                drop(get);
            })
        };
        go.wait();
        drop(conn);
        waiter.join().unwrap();
        let state = pool.state();
        assert_eq!(
            (state.size, state.idle, state.waiting),
            (1, 1, 0),
            "round {round}"
        );
        assert!(pool.try_get().is_some(), "the connection is idle again");
        // Last pool dropped on another thread than the one that released.
        std::thread::spawn(move || drop(pool)).join().unwrap();
        assert_eq!(counted.closed.load(SeqCst), 1);
        assert_eq!(Arc::strong_count(&counted), 1, "the core was freed");
    }
}

/// A release that hands its connection to a parked waiter, racing the
/// waiter, which takes it, drops the last pool handle and then the
/// connection: that frees the core while the releaser may still be
/// finishing its hand-off.
#[test]
fn a_release_to_a_waiter_racing_the_last_pool_drop() {
    for _ in 0..ROUNDS {
        let (pool, counted) = pool(1);
        let conn = get_now(&pool);
        // The waiter's future holds the last pool handle.
        let mut get = Box::pin(async move { pool.get().await });
        assert!(poll_once(get.as_mut()).is_pending(), "parked at the cap");
        let releaser = std::thread::spawn(move || drop(conn));
        let served = loop {
            match poll_once(get.as_mut()) {
                Poll::Ready(Ok(served)) => break served,
                Poll::Ready(Err(e)) => panic!("the waiter was not served: {e}"),
                Poll::Pending => std::thread::yield_now(),
            }
        };
        drop(get);
        assert_eq!(
            counted.closed.load(SeqCst),
            0,
            "in use when the pool closed"
        );
        drop(served);
        releaser.join().unwrap();
        assert_eq!(counted.opened.load(SeqCst), 1);
        assert_eq!(counted.closed.load(SeqCst), 1, "closed exactly once");
        assert_eq!(Arc::strong_count(&counted), 1, "the core was freed");
    }
}
