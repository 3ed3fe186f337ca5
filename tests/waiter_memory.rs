//! Cancelled and timed-out waits leave no garbage behind (issue 10, item
//! 5): the waiter queue's dead nodes stay bounded by the live ones, so
//! memory is O(live waiters) and the release that follows a storm of
//! cancellations does a small amount of work.
//!
//! Measured with a counting global allocator (as in `tests/alloc.rs`): the
//! bytes held after the cancellations, and the frees inside the one `Drop`
//! of the release. Its own test binary: the allocator sees every thread of
//! the process, so the tests here take turns (`SERIAL`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use latchless::{Manager, Pool};

struct Counting;

/// Bytes allocated and not yet freed, by the whole process.
static HELD: AtomicIsize = AtomicIsize::new(0);
/// Frees, by the whole process.
static FREES: AtomicUsize = AtomicUsize::new(0);
/// One test at a time (the counters are global).
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, SeqCst);
        FREES.fetch_add(1, SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size as isize - layout.size() as isize, SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Numbers;
impl Manager for Numbers {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(7)
    }
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// Parks `n` waits on the exhausted `pool` and cancels each (drops it after
/// its first poll, which registered it as a waiter).
fn cancel_waits(pool: &Pool<Numbers>, n: usize) {
    for _ in 0..n {
        let mut wait = pin!(pool.get_timeout(Duration::from_secs(3600)));
        assert!(poll_once(wait.as_mut()).is_pending(), "parked as a waiter");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The reproduction: hold the only connection, cancel 200k waits.
/// Before the fix memory grew by ~14 MB (one ~72-byte node per dead wait)
/// and the next release freed all 200k nodes inside its `Drop`.
#[test]
fn cancelled_waits_leave_bounded_garbage_and_a_cheap_release() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let _enter = rt.enter();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let held = rt.block_on(pool.get()).unwrap();

    // Warm up (the deadline sweeper's slots, the queue's first blocks).
    cancel_waits(&pool, 1_000);
    let before = HELD.load(SeqCst);
    cancel_waits(&pool, 200_000);
    let grown = HELD.load(SeqCst) - before;
    assert_eq!(pool.state().waiting, 0);
    let frees = FREES.load(SeqCst);
    drop(held);
    let freed = FREES.load(SeqCst) - frees;
    assert!(
        grown < 256 * 1024 && freed < 1_000,
        "200k cancelled waits still hold {grown} bytes (O(dead), not O(live)), \
         and the next release freed {freed} blocks in its Drop"
    );

    // Nothing lost: the connection is idle again and a wait is served.
    let c = pool.try_get().expect("the connection is back");
    drop(c);
    assert!(rt.block_on(pool.get()).is_ok());
}

/// As above with a live waiter at the head of the line the whole time:
/// the dead nodes queued behind it are reclaimed all the same, and it is
/// still the one served.
#[test]
fn a_live_waiter_at_the_head_does_not_stop_the_reclaim() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let _enter = rt.enter();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let held = rt.block_on(pool.get()).unwrap();
    let mut first = Box::pin(pool.get());
    assert!(poll_once(first.as_mut()).is_pending());

    cancel_waits(&pool, 1_000);
    let before = HELD.load(SeqCst);
    cancel_waits(&pool, 200_000);
    let grown = HELD.load(SeqCst) - before;
    assert_eq!(pool.state().waiting, 1);
    let frees = FREES.load(SeqCst);
    drop(held);
    let freed = FREES.load(SeqCst) - frees;
    assert!(
        grown < 256 * 1024 && freed < 1_000,
        "200k cancelled waits behind a live one still hold {grown} bytes, \
         and the next release freed {freed} blocks in its Drop"
    );
    let Poll::Ready(Ok(c)) = poll_once(first.as_mut()) else {
        panic!("the waiter at the head is served");
    };
    drop(c);
    assert_eq!(pool.state().waiting, 0);
    assert!(pool.try_get().is_some(), "nothing lost");
}

/// Timed-out waits (the pool's deadline sweeper, or each wait's own timer)
/// are dead nodes too: many waits that each time out leave memory bounded.
#[test]
fn timed_out_waits_leave_bounded_garbage() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let held = rt.block_on(pool.get()).unwrap();
    rt.block_on(async {
        for _ in 0..200 {
            let e = pool.get_timeout(Duration::from_millis(1)).await;
            assert!(e.is_err(), "nothing to hand out");
        }
    });
    let before = HELD.load(SeqCst);
    // Paused time: each 1 ms timeout passes at once, without sleeping.
    rt.block_on(async {
        tokio::time::pause();
        for _ in 0..20_000 {
            let e = pool.get_timeout(Duration::from_millis(1)).await;
            assert!(e.is_err(), "nothing to hand out");
        }
        tokio::time::resume();
    });
    let grown = HELD.load(SeqCst) - before;
    assert!(
        grown < 128 * 1024,
        "20k timed-out waits still hold {grown} bytes"
    );
    assert_eq!(pool.state().waiting, 0);
    drop(held);
    assert!(pool.try_get().is_some(), "the connection is back");
}

/// First come, first served across reclamation: waiters parked among many
/// cancelled ones are served in the order they arrived.
#[test]
fn waiters_among_cancelled_ones_are_served_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let _enter = rt.enter();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let held = rt.block_on(pool.get()).unwrap();

    let mut first = Box::pin(pool.get());
    assert!(poll_once(first.as_mut()).is_pending());
    cancel_waits(&pool, 1_000);
    let mut second = Box::pin(pool.get());
    assert!(poll_once(second.as_mut()).is_pending());
    cancel_waits(&pool, 1_000);
    let mut third = Box::pin(pool.get());
    assert!(poll_once(third.as_mut()).is_pending());
    cancel_waits(&pool, 1_000);
    assert_eq!(pool.state().waiting, 3);

    drop(held);
    let Poll::Ready(Ok(c)) = poll_once(first.as_mut()) else {
        panic!("the oldest waiter is served first");
    };
    assert!(poll_once(second.as_mut()).is_pending());
    assert!(poll_once(third.as_mut()).is_pending());
    drop(c);
    let Poll::Ready(Ok(c)) = poll_once(second.as_mut()) else {
        panic!("then the second");
    };
    assert!(poll_once(third.as_mut()).is_pending());
    drop(c);
    let Poll::Ready(Ok(c)) = poll_once(third.as_mut()) else {
        panic!("then the third");
    };
    drop(c);
    assert_eq!(pool.state().waiting, 0);
    assert!(pool.try_get().is_some(), "nothing lost");
}

/// Reclaim under real concurrency: tasks on several threads cancel waits
/// in bursts (so registrations keep reclaiming dead nodes) while others are
/// served and release. Nothing is lost: every served wait gets the one
/// connection alone, and at the end it is idle with nobody queued.
#[test]
fn reclaiming_registrations_race_releases_and_lose_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let pool = Pool::builder(Numbers).max_size(1).build().unwrap();
    let holders = std::sync::Arc::new(AtomicUsize::new(0));
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let pool = pool.clone();
            let holders = std::sync::Arc::clone(&holders);
            let served = std::sync::Arc::clone(&served);
            tasks.push(tokio::spawn(async move {
                for i in 0..400u64 {
                    if t % 2 == 0 {
                        // A burst of waits, each cancelled after one poll
                        // (unless served at once, then released).
                        for _ in 0..100 {
                            let mut wait = pin!(pool.get());
                            let polled =
                                std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx)));
                            drop(polled.await);
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let c = pool
                        .get_timeout(Duration::from_secs(60))
                        .await
                        .expect("served");
                    assert_eq!(holders.fetch_add(1, SeqCst), 0, "held once");
                    for _ in 0..(i + t) % 4 {
                        tokio::task::yield_now().await;
                    }
                    holders.fetch_sub(1, SeqCst);
                    served.fetch_add(1, SeqCst);
                    drop(c);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(
        served.load(SeqCst),
        4 * 400,
        "every wait not cancelled is served"
    );
    let s = pool.state();
    assert_eq!((s.size, s.idle, s.waiting), (1, 1, 0), "nothing lost");
    assert!(pool.try_get().is_some());
}
