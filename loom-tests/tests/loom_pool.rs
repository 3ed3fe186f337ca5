//! Loom models of the pool's invariants (DESIGN.md I1–I7), run against the
//! production code path through `latchless`'s loom shim (`src/sync.rs`).
//!
//! ```text
//! RUSTFLAGS="--cfg latchless_loom" cargo test -p loom-tests --release
//! loom-tests/run-mutants.sh
//! ```
//!
//! Each model names the invariant it checks and the injected bug (mutant)
//! it must catch; `run-mutants.sh` proves that it does.
#![cfg(latchless_loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use latchless::{Builder, Manager, Pool, PoolError};

/// Fills freed memory with a pattern and holds it back from reuse for the
/// next few thousand frees. Models 9 and 10 catch a release that reads the
/// pool's core after the last reference freed it by loom reading an
/// atomic's handle out of that memory. Without the quarantine, the freed
/// block was often handed straight back to the next allocation, whose
/// bytes could look like a valid handle: whether a model caught its mutant
/// depended on the allocator (a change in the pool's own allocations once
/// made model 9 miss it). Poisoned and quarantined, the handle is garbage
/// and loom fails on it.
struct Quarantine {
    ring: std::sync::Mutex<QuarantineRing>,
}

struct QuarantineRing {
    blocks: [(usize, usize, usize); QUARANTINED],
    next: usize,
}

const QUARANTINED: usize = 4096;

// SAFETY: defers every allocation and (eventually) every free to `System`
// with the caller's layout; writes only to memory being freed, within it.
// The ring's mutex never allocates (futex-based on Linux).
unsafe impl std::alloc::GlobalAlloc for Quarantine {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes that the
        // caller gives up; nothing reads it afterwards in a correct program.
        unsafe { std::ptr::write_bytes(ptr, 0xA5, layout.size()) };
        let evicted = {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            let i = ring.next;
            ring.next = (i + 1) % QUARANTINED;
            std::mem::replace(
                &mut ring.blocks[i],
                (ptr as usize, layout.size(), layout.align()),
            )
        };
        let (old, size, align) = evicted;
        if old != 0 {
            // SAFETY: a block freed earlier with this size and alignment,
            // held back until now.
            unsafe {
                std::alloc::System.dealloc(
                    old as *mut u8,
                    std::alloc::Layout::from_size_align_unchecked(size, align),
                );
            }
        }
    }
}

#[global_allocator]
static QUARANTINE: Quarantine = Quarantine {
    ring: std::sync::Mutex::new(QuarantineRing {
        blocks: [(0, 0, 0); QUARANTINED],
        next: 0,
    }),
};
use loom::future::block_on;
use loom::thread;

/// A connection: a counter the holder bumps (through the slot's loom
/// `UnsafeCell`, so loom sees every access) and a token that counts it as
/// open until it is dropped.
#[derive(Debug)]
struct Conn {
    uses: u64,
    open: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, SeqCst);
    }
}

/// Opens connections at once; fails the first `fail` connects.
#[derive(Debug, Default)]
struct M {
    fail: AtomicUsize,
    open: Arc<AtomicUsize>,
}

impl Manager for M {
    type Connection = Conn;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Conn, std::io::Error> {
        if self
            .fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(std::io::Error::other("refused"));
        }
        self.open.fetch_add(1, SeqCst);
        Ok(Conn {
            uses: 0,
            open: Arc::clone(&self.open),
        })
    }
}

/// A pool of `max` on a mock clock, lifecycle off unless `f` sets it, no
/// background task (loom runs no tokio).
fn pool(
    max: usize,
    m: M,
    f: impl FnOnce(Builder<M>) -> Builder<M>,
) -> (Pool<M>, latchless::MockClock) {
    let (clock, mock) = latchless::Clock::mock();
    let b = Pool::builder(m)
        .max_size(max)
        .shards(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .fail_fast(true)
        .background(false)
        .clock(clock);
    (f(b).build().expect("valid settings"), mock)
}

/// Opens one connection and returns it to the idle set.
fn with_idle_connection(pool: &Pool<M>) {
    drop(block_on(pool.get()).expect("first connect"));
}

/// A pool of one with `idle_timeout` 1 s whose one idle connection has sat
/// for 2 s (mock clock): due to be closed by the next maintenance pass.
fn pool_with_an_expired_idle_connection() -> (Pool<M>, latchless::MockClock) {
    let (p, mock) = pool(1, M::default(), |b| {
        b.idle_timeout(Some(Duration::from_secs(1)))
    });
    with_idle_connection(&p);
    mock.advance(Duration::from_secs(2));
    (p, mock)
}

fn explore(f: impl Fn() + Sync + Send + 'static) {
    explore_with(None, f);
}

/// [`explore`] with room for `max_branches` branch points per execution
/// (loom's default is 1 000; `LOOM_MAX_BRANCHES` overrides both), for a
/// model whose single executions are long.
fn explore_with(max_branches: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    explore_bounded(5, max_branches, f);
}

/// [`explore_with`] with `preemptions` as the default bound, for a model
/// of three threads whose every execution is long (a probe's whole
/// connect and hand-off against a release and a `get`).
fn explore_bounded(
    preemptions: usize,
    max_branches: Option<usize>,
    f: impl Fn() + Sync + Send + 'static,
) {
    let mut b = loom::model::Builder::new();
    // The bound (see README): `preemptions` unless LOOM_MAX_PREEMPTIONS
    // says otherwise (`Builder::new` reads it).
    if b.preemption_bound.is_none() && std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(preemptions);
    }
    if let Some(n) = max_branches {
        if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
            b.max_branches = n;
        }
    }
    b.check(f);
}

/// Makes the calling thread's home the same in every execution. The home
/// hash comes from a process-wide counter (`tid.rs`), so an unpinned
/// thread's home differs from one execution to the next, and with it the
/// slot where its scan for parked connections starts (`Slots::steal_parked`
/// starts at `home_index(capacity)`): in a pool of two or more slots the
/// scan's loads then come in another order than in the path loom replays,
/// and loom panics on its own assertion (`mo_i != mo_j`, loom issue #252)
/// or explores an incoherent path. Every thread of a model whose pool has
/// more than one slot calls this before it touches the pool. (Shard 0 of
/// `p`'s shards: the scan of a pool with one shard then starts at slot 0.)
fn pin_home(p: &Pool<M>) {
    p.loom_pin_home_shard(0);
}

/// Fills the calling thread's one-entry cache of parked connections
/// (`tid.rs`) with a connection of `other`, a pool of its own: the
/// thread's releases to any other pool then go to that pool's shards (a
/// cache that holds a key keeps it), and its acquires there find nothing of
/// theirs parked. For models of the shared idle set: since the thread-affine
/// fast path, a release parks its connection in its thread's cache when
/// that is empty, and never reaches the shards. `other` must stay open
/// while the thread uses the model's pool (a close from this thread would
/// take the key back out of its cache).
fn occupy_parked_cache(other: &Pool<M>) {
    drop(block_on(other.get()).expect("the other pool connects"));
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// Model 1 — I1 (exclusive): two threads acquire and release one slot
/// through the shared idle set. Catches `relaxed_handover` (the IDLE
/// store, the claim and the hot word without Release/Acquire: a releaser's
/// writes to the connection race the next holder's).
///
/// Since the thread-affine fast path (issue 16) a release parks its
/// connection in its thread's cache when that is empty, and the handover
/// went through `park` / `claim_parked` / `steal_parked` instead of the
/// idle set. Both threads' caches are now filled first with a connection of
/// a pool of their own ([`occupy_parked_cache`]), so every release and
/// acquire here goes through the shard's hot word and the IDLE state, as
/// before. (The parked handover has its own model, 18.)
#[test]
fn two_threads_acquire_and_release_one_slot() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let (mine, _m1) = pool(1, M::default(), |b| b);
        let (theirs, _m2) = pool(1, M::default(), |b| b);
        occupy_parked_cache(&mine);
        with_idle_connection(&p);
        let p2 = p.clone();
        let t = thread::spawn(move || {
            occupy_parked_cache(&theirs);
            if let Some(mut c) = p2.try_get() {
                c.uses += 1;
            }
            // Closed by the main thread, after this thread's releases.
            theirs
        });
        if let Some(mut c) = p.try_get() {
            c.uses += 1;
        }
        let _theirs = t.join().unwrap();
        let c = p.try_get().expect("the connection is back");
        assert!(c.uses >= 1);
    });
}

/// Model 2 — I2 (bounded): two gets race for the only place; the first
/// connect fails and must give the place back. Catches `leak_place` (a
/// failed connect keeps its place: the other caller waits forever).
#[test]
fn reservation_races_at_the_cap_with_a_failing_connect() {
    explore(|| {
        let m = M::default();
        m.fail.store(1, SeqCst);
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        let p2 = p.clone();
        let t = thread::spawn(move || block_on(p2.get()).map(drop));
        let mine = block_on(p.get()).map(drop);
        let theirs = t.join().unwrap();
        let failed = [&mine, &theirs]
            .iter()
            .filter(|r| matches!(r, Err(PoolError::Connect(_))))
            .count();
        assert_eq!(failed, 1, "exactly the first connect failed");
        assert!(open.load(SeqCst) <= 1, "I2");
        let s = p.state();
        assert_eq!((s.size, s.idle), (1, 1), "the place was not lost");
    });
}

/// Model 3 — I4 (no lost wake-up): a release races a waiter's
/// registration and its re-check (bb8#122). Catches `lost_wakeup` (the
/// releaser skips its re-check after putting the connection back: the
/// waiter sleeps forever next to an idle connection, and loom reports the
/// deadlock). Since the thread-affine fast path (issue 16) the releasing
/// thread's cache is empty, so a release that sees no waiter parks the
/// connection there, and the waiter's re-check must find it by scanning
/// the state words: so this model also catches `recheck_skips_parked`
/// (model 19 is the same race, polled by hand).
#[test]
fn release_races_waiter_registration() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let t = thread::spawn(move || drop(c));
        let got = block_on(p.get());
        assert!(got.is_ok(), "the waiter is served");
        t.join().unwrap();
    });
}

/// Model 4 — I5 (cancel-safe) and I1: a waiter is cancelled while a
/// releaser hands it the connection. Catches `cancel_drops_grant` (a
/// cancelled waiter forgets what it was served: the connection is lost).
#[test]
fn waiter_cancelled_while_being_served() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let mut waiting = Box::pin(p.get());
        assert!(
            poll_once(waiting.as_mut()).is_pending(),
            "registered as a waiter"
        );
        let t = thread::spawn(move || drop(c));
        drop(waiting);
        t.join().unwrap();
        assert!(p.try_get().is_some(), "nothing lost");
        assert_eq!(p.state().waiting, 0);
    });
}

/// Model 5 — I3 (conserved): close() races a release and an acquire.
/// Catches `close_no_recheck` (a release that pushes to the idle set
/// after close drained it leaves a connection open for good).
#[test]
fn close_races_acquire_and_release() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        let c = block_on(p.get()).unwrap();
        let t1 = thread::spawn(move || drop(c));
        let p2 = p.clone();
        let t2 = thread::spawn(move || block_on(p2.close()));
        drop(p.try_get());
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(p.is_closed());
        assert_eq!(
            open.load(SeqCst),
            0,
            "every connection closed once the pool is"
        );
    });
}

/// Model 6 — I1 and I6: maintenance expires an idle connection while a
/// thread acquires it. Catches `claim_without_cas` (maintenance takes the
/// slot with a plain store: both sides own the connection).
///
/// Since the thread-affine fast path (issue 16) the idle connection was
/// parked in the acquiring thread's cache (PARKED, taken back with
/// `claim_parked`), no longer IDLE with its key in a shard (popped and
/// claimed, and left stale in the shard by maintenance's claim: the stale
/// count). The model now runs both: first with the acquirer's cache filled
/// beforehand ([`occupy_parked_cache`]), so the connection is IDLE in the
/// shard as before, then with the connection parked.
#[test]
fn maintenance_expires_a_slot_while_a_thread_acquires_it() {
    for parked in [false, true] {
        maintenance_expires_a_slot_while_a_thread_acquires_it_when(parked);
    }
}

fn maintenance_expires_a_slot_while_a_thread_acquires_it_when(parked: bool) {
    explore(move || {
        let (mine, _m) = pool(1, M::default(), |b| b);
        if !parked {
            occupy_parked_cache(&mine);
        }
        let (p, _mock) = pool_with_an_expired_idle_connection();
        assert_eq!(p.state().idle, 1);
        let p2 = p.clone();
        let t = thread::spawn(move || p2.maintain());
        let got = p.try_get().map(|mut c| {
            c.uses += 1;
        });
        t.join().unwrap();
        let s = p.state();
        // Either the acquirer won (and returned it: one connection, idle)
        // or maintenance closed it (none); never both owning it, which
        // loom reports as a race on the connection's cell.
        assert!(s.size <= 1);
        if got.is_none() {
            assert_eq!(s.size, 0, "the acquirer lost: maintenance closed it");
        }
        assert_eq!(s.in_use, 0);
    });
}

/// Model 7 — one maintenance pass at a time: two threads race for the
/// cooperative maintenance flag. Catches `maintenance_no_flag` (both run
/// a pass over the same timer wheel).
#[test]
fn two_threads_race_for_the_maintenance_flag() {
    explore(|| {
        let (p, _mock) = pool_with_an_expired_idle_connection();
        let p2 = p.clone();
        let t = thread::spawn(move || p2.maintain());
        p.maintain();
        t.join().unwrap();
        p.maintain();
        assert_eq!(p.state().size, 0, "the idle connection expired once");
        assert_eq!(p.metrics().expired, 1);
    });
}

/// Model 8 — I7 (fair): two waiters queued in order; a release serves the
/// older. Catches `lifo_waiters` (the newest waiter is served first).
#[test]
fn waiters_are_served_in_arrival_order() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let mut first = Box::pin(p.get());
        let mut second = Box::pin(p.get());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        let t = thread::spawn(move || drop(c));
        t.join().unwrap();
        let served = poll_once(first.as_mut());
        assert!(
            matches!(served, Poll::Ready(Ok(_))),
            "the older waiter first"
        );
        assert!(poll_once(second.as_mut()).is_pending());
    });
}

/// Model 9 — I3 (conserved) and memory safety of the shared core: a guard
/// is released while the last `Pool` is dropped. The release puts the
/// connection (and that connection's reference on the core) into the idle
/// set, then re-checks `closed` and the waiters; the drop closes the idle
/// connection and its reference. Catches `release_without_core_ref` (the
/// releaser re-checks through a core it holds no reference on: loom sees
/// the core's atomics used after the last reference freed them: it
/// panics reading an atomic's handle out of the freed memory), and
/// `drop_ignores_hazards` (the releaser announces its window in its hazard
/// slot, but the last owner frees the core without waiting for it).
#[test]
fn release_races_last_pool_drop() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        let c = block_on(p.get()).unwrap();
        let t = thread::spawn(move || drop(c));
        drop(p);
        t.join().unwrap();
        assert_eq!(open.load(SeqCst), 0, "the connection closed once");
    });
}

/// Model 10 — as model 9, with the release handing its connection straight
/// to a waiter (a pending `get` of a clone) while the last two handles are
/// dropped. Catches `release_without_core_ref` and `drop_ignores_hazards` on
/// the hand-off path.
#[test]
fn release_to_a_waiter_races_last_pool_drop() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        let c = block_on(p.get()).unwrap();
        let p2 = p.clone();
        let mut waiter = Box::pin(async move { p2.get().await.map(drop) });
        assert!(poll_once(waiter.as_mut()).is_pending());
        let t = thread::spawn(move || drop(c));
        drop(p);
        drop(waiter);
        t.join().unwrap();
        assert_eq!(open.load(SeqCst), 0, "the connection closed once");
    });
}

/// Model 11 — a waiter's time-out races its service: the sweeper (the
/// pool's background task, run by hand here) times out a waiter whose
/// deadline passed while a release serves the line. Sweeps and serves take
/// turns on the line (`SERVING`), so the waiter ends with one outcome: the
/// connection, or a time-out while the connection goes back idle; nothing
/// is lost. Catches `sweep_unlocked` (the sweeper walks the line without
/// `SERVING`: loom reports the line's cell accessed by two threads at once).
#[test]
fn sweeper_times_out_a_waiter_while_a_release_serves_it() {
    explore(|| {
        let (p, mock) = pool(1, M::default(), |b| b);
        p.loom_start_sweeping();
        let c = block_on(p.get()).unwrap();
        let mut waiter = Box::pin(p.get_timeout(Duration::from_millis(10)));
        assert!(poll_once(waiter.as_mut()).is_pending());
        mock.advance(Duration::from_millis(20));
        let p2 = p.clone();
        let sweeper = thread::spawn(move || p2.loom_sweep());
        drop(c);
        sweeper.join().unwrap();
        match block_on(waiter) {
            Ok(conn) => {
                assert_eq!(p.metrics().timeouts_swept, 0, "served: not also timed out");
                drop(conn);
            }
            Err(e) => {
                assert!(matches!(e, PoolError::Timeout(_)), "{e:?}");
                assert_eq!(p.metrics().timeouts_swept, 1);
            }
        }
        let s = p.state();
        assert_eq!((s.size, s.idle, s.waiting), (1, 1, 0), "nothing lost");
    });
}

/// Model 12 — a waiter's time-out races its cancellation: the sweeper
/// times out a waiter whose `get` is dropped meanwhile. One of the two
/// ends it, once: afterwards a new waiter is counted as the only one.
/// Catches `sweep_without_cas` (the sweeper stores `TIMED_OUT` over a
/// cancellation: the waiter leaves the count twice, and the next one is
/// not counted).
#[test]
fn sweeper_times_out_a_waiter_while_it_is_cancelled() {
    explore(|| {
        let (p, mock) = pool(1, M::default(), |b| b);
        p.loom_start_sweeping();
        let c = block_on(p.get()).unwrap();
        let mut waiter = Box::pin(p.get_timeout(Duration::from_millis(10)));
        assert!(poll_once(waiter.as_mut()).is_pending());
        mock.advance(Duration::from_millis(20));
        let p2 = p.clone();
        let sweeper = thread::spawn(move || p2.loom_sweep());
        drop(waiter);
        sweeper.join().unwrap();
        assert!(p.metrics().timeouts_swept <= 1);
        assert_eq!(p.state().waiting, 0);
        let mut next = Box::pin(p.get());
        assert!(poll_once(next.as_mut()).is_pending());
        assert_eq!(p.state().waiting, 1, "one waiter, counted once");
        drop(c);
        assert!(matches!(poll_once(next.as_mut()), Poll::Ready(Ok(_))));
    });
}

/// Model 12b — two releases at once, two waiters: one release holds the
/// line while the other hands its connection over (a deposit). Both
/// waiters are served. Catches `deposit_unflagged` (a deposit left without
/// telling the holder, who may be letting go: a connection stranded, a
/// waiter never served). A release that finds the line held looks once
/// more before it deposits (`SERVE_LOOKS` is 1 in a model), so the model
/// also reaches a look that finds the line free, and catches
/// `look_skips_lock` (a look that serves without taking the line: both
/// releases work on the line at once).
#[test]
fn two_releases_serve_two_waiters_through_a_deposit() {
    explore(|| {
        let (p, _mock) = pool(2, M::default(), |b| b);
        let (c1, c2) = (block_on(p.get()).unwrap(), block_on(p.get()).unwrap());
        let mut first = Box::pin(p.get());
        assert!(poll_once(first.as_mut()).is_pending());
        let mut second = Box::pin(p.get());
        assert!(poll_once(second.as_mut()).is_pending());
        let t = thread::spawn(move || drop(c1));
        drop(c2);
        t.join().unwrap();
        // Both held at once: neither release of theirs may serve the other.
        let a = poll_once(first.as_mut());
        let b = poll_once(second.as_mut());
        assert!(
            matches!((&a, &b), (Poll::Ready(Ok(_)), Poll::Ready(Ok(_)))),
            "both waiters served"
        );
    });
}

/// Model 13 — the steal path across two shards (I1, nothing lost): both
/// idle connections sit in shard 1, one in its hot word, one in its queue;
/// its owner thread (home 1) pops one, uses it and releases it there while
/// a thread whose home (shard 0) is empty steals. No connection has two
/// holders (loom checks each connection's cell), and afterwards both are
/// idle, each key in a shard exactly once. Catches `steal_without_swap`
/// (the stealer takes the victim's hot word with a load and a store: a key
/// its owner parked in between is wiped, and that idle connection is lost
/// to the pool).
///
/// Since the thread-affine fast path (issue 16) the first release parked
/// `c1` in the main thread's cache (not shard 1's hot word), the main
/// thread's acquire took it back from there and the owner's release parked
/// its connection in its own cache: no shard was stolen from. Both threads'
/// caches are now filled first with a connection of a pool of their own
/// ([`occupy_parked_cache`]), so the releases and the steal go through the
/// shards as before.
#[test]
fn a_thread_with_an_empty_home_steals_while_the_owner_pops_and_pushes() {
    explore(|| {
        let (p, _mock) = pool(2, M::default(), |b| b.shards(2));
        let (mine, _m1) = pool(1, M::default(), |b| b);
        let (theirs, _m2) = pool(1, M::default(), |b| b);
        occupy_parked_cache(&mine);
        p.loom_pin_home_shard(1);
        let (c1, c2) = (block_on(p.get()).unwrap(), block_on(p.get()).unwrap());
        drop(c1); // to shard 1's hot word
        drop(c2); // to shard 1's queue
        let p2 = p.clone();
        let owner = thread::spawn(move || {
            occupy_parked_cache(&theirs);
            p2.loom_pin_home_shard(1);
            // `theirs` is closed by the main thread, after this release.
            (p2.try_get().map(|mut c| c.uses += 1).is_some(), theirs)
        });
        p.loom_pin_home_shard(0);
        let stole = p.try_get().map(|mut c| c.uses += 1).is_some();
        let (owned, _theirs) = owner.join().unwrap();
        assert!(stole && owned, "two idle connections, one for each");
        let s = p.state();
        assert_eq!((s.size, s.idle, s.in_use), (2, 2, 0), "counts right");
        let a = p.try_get().expect("no key lost");
        let b = p.try_get().expect("no key lost");
        assert_eq!(a.uses + b.uses, 2, "each used once, by one holder");
        assert!(p.try_get().is_none(), "no key twice");
    });
}

/// Model 14 — I4 and I5 with compaction: a registration that compacts
/// the line (the loom build tolerates no dead node beyond the live ones)
/// races the release that serves it. The release may drop the dead node
/// itself, or find the line held by the compaction and deposit its
/// connection; the compaction then finds nobody alive and shelves it, and
/// the registration's own re-check takes it. Either way the new waiter
/// gets the connection and nothing is lost. Catches `lost_wakeup`.
#[test]
fn release_races_a_registration_that_compacts_a_dead_waiter() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        let c = block_on(p.get()).unwrap();
        let mut cancelled = Box::pin(p.get());
        assert!(poll_once(cancelled.as_mut()).is_pending());
        drop(cancelled);
        let t = thread::spawn(move || drop(c));
        let got = block_on(p.get());
        assert!(got.is_ok(), "the new waiter is served");
        drop(got);
        t.join().unwrap();
        let s = p.state();
        assert_eq!((s.size, s.idle, s.waiting), (1, 1, 0), "nothing lost");
        assert_eq!(open.load(SeqCst), 1);
    });
}

/// Model 15 — I7 with compaction: two live waiters queued ahead of three
/// cancelled ones; a new registration compacts the line while a release
/// races it: the oldest waiter gets the connection, the others still wait.
/// Catches `compact_drops_live` (a compaction that unlinks live waiters
/// with the dead ones: the oldest is never served).
#[test]
fn a_compaction_keeps_the_order_against_a_racing_release() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let mut first = Box::pin(p.get());
        assert!(poll_once(first.as_mut()).is_pending());
        let mut second = Box::pin(p.get());
        assert!(poll_once(second.as_mut()).is_pending());
        for _ in 0..3 {
            let mut cancelled = Box::pin(p.get());
            assert!(poll_once(cancelled.as_mut()).is_pending());
        }
        let t = thread::spawn(move || drop(c));
        let mut third = Box::pin(p.get());
        assert!(poll_once(third.as_mut()).is_pending());
        t.join().unwrap();
        let served = poll_once(first.as_mut());
        assert!(
            matches!(served, Poll::Ready(Ok(_))),
            "the oldest waiter first"
        );
        assert!(poll_once(second.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending());
    });
}

/// Model 16 — I7 across several compactions: waiters registered among
/// cancelled ones, each registration compacting the line, the last while
/// a release races it: the oldest waiter is served first, never one
/// behind it. Catches `compact_drops_live`.
///
/// Every registration's re-check also scans the state words for parked
/// connections: a single execution takes more than loom's default 1 000
/// branch points, so this model allows 2 000.
#[test]
fn a_waiter_at_the_head_keeps_its_turn_against_a_racing_release() {
    explore_with(Some(2_000), || {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let cancel = |n: usize| {
            for _ in 0..n {
                let mut cancelled = Box::pin(p.get());
                assert!(poll_once(cancelled.as_mut()).is_pending());
            }
        };
        let mut first = Box::pin(p.get());
        assert!(poll_once(first.as_mut()).is_pending());
        cancel(2);
        let mut second = Box::pin(p.get());
        assert!(poll_once(second.as_mut()).is_pending());
        cancel(3);
        let mut third = Box::pin(p.get());
        assert!(poll_once(third.as_mut()).is_pending());
        cancel(3);
        let t = thread::spawn(move || drop(c));
        let mut fourth = Box::pin(p.get());
        assert!(poll_once(fourth.as_mut()).is_pending());
        t.join().unwrap();
        let served = poll_once(first.as_mut());
        assert!(
            matches!(served, Poll::Ready(Ok(_))),
            "the oldest waiter first"
        );
        for later in [&mut second, &mut third, &mut fourth] {
            assert!(poll_once(later.as_mut()).is_pending());
        }
    });
}

/// Model 17 — I2 under a run-time shrink (`Pool::set_max_size`): two
/// releases race a shrink from 2 to 1. Once both connections are back, at
/// most one is open: either the shrink's trim pops a connection shelved
/// before it, or that release's re-check after its shelve sees the new cap
/// and trims itself. Catches `shrink_no_recheck` (the release skips that
/// re-check: both connections stay idle above the cap).
///
/// Since the thread-affine fast path (issue 16) each release parks its
/// connection in its thread's cache rather than pushing it to a shard, and
/// the trim finds it by scanning the state words; the re-check after the
/// park is the same. Every thread pins its home ([`pin_home`]): this pool
/// has two slots, and an unpinned scan starts at a different slot in
/// different executions.
#[test]
fn releases_race_a_shrink() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(2, m, |b| b);
        pin_home(&p);
        let c1 = block_on(p.get()).unwrap();
        let c2 = block_on(p.get()).unwrap();
        let (p1, p2) = (p.clone(), p.clone());
        let t1 = thread::spawn(move || {
            pin_home(&p1);
            drop(c1);
        });
        let t2 = thread::spawn(move || {
            pin_home(&p2);
            drop(c2);
        });
        p.set_max_size(1).unwrap();
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(open.load(SeqCst) <= 1, "I2: more open than the new cap");
        assert!(p.state().size <= 1);
        assert_eq!(p.max_size(), 1);
        // The cap holds for new connects too.
        let c = block_on(p.get()).unwrap();
        assert!(p.try_get().is_none());
        drop(c);
    });
}

/// Two resizes race each other and the releases of a full pool: one sets
/// the cap to 2 (the arena's length), the other to 1. Whichever store
/// lands last, `max_size()` and the flag that makes releases close surplus
/// agree, so once both connections are back at most `max_size()` are open,
/// and the cap holds for new connects. Catches `split_cap_store` (the cap
/// and the flag written by two stores: the resizes interleave into cap 1
/// with the flag clear, and both connections stay open for good).
#[test]
fn two_resizes_race_releases() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(2, m, |b| b);
        pin_home(&p);
        let c1 = block_on(p.get()).unwrap();
        let c2 = block_on(p.get()).unwrap();
        let (p1, p2) = (p.clone(), p.clone());
        let grow = thread::spawn(move || {
            pin_home(&p1);
            p1.set_max_size(2).unwrap();
            drop(c1);
        });
        let shrink = thread::spawn(move || {
            pin_home(&p2);
            p2.set_max_size(1).unwrap();
            drop(c2);
        });
        grow.join().unwrap();
        shrink.join().unwrap();
        let cap = p.max_size();
        assert!(cap == 1 || cap == 2, "{cap}");
        assert!(
            open.load(SeqCst) <= cap,
            "I2: {} open above max_size {cap} with every connection back",
            open.load(SeqCst)
        );
        assert!(p.state().size <= cap);
        // Traffic after the race keeps to the cap.
        let held: Vec<_> = (0..cap).map(|_| block_on(p.get()).unwrap()).collect();
        assert!(p.try_get().is_none());
        drop(held);
        assert!(open.load(SeqCst) <= cap);
    });
}

/// `Builder::max_idle`: two releases race with room for one idle
/// connection. Once both are back exactly one is open and idle, the other
/// closed as overflow; the bound holds for later traffic. Catches
/// `idle_check_then_add` (admission as a look, then an add: both releases
/// see room and both go idle).
#[test]
fn two_releases_race_for_the_last_idle_place() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(2, m, |b| b.max_idle(Some(1)));
        pin_home(&p);
        let c1 = block_on(p.get()).unwrap();
        let c2 = block_on(p.get()).unwrap();
        let (p1, p2) = (p.clone(), p.clone());
        let t1 = thread::spawn(move || {
            pin_home(&p1);
            drop(c1);
        });
        let t2 = thread::spawn(move || {
            pin_home(&p2);
            drop(c2);
        });
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(
            open.load(SeqCst),
            1,
            "max_idle: {} connections kept idle with room for one",
            open.load(SeqCst)
        );
        let m = p.metrics();
        assert_eq!(m.closed_overflow, 1);
        assert_eq!(m.state.idle, 1);
        // The one kept is reused; returned again, it stays.
        let c = block_on(p.get()).unwrap();
        drop(c);
        assert_eq!(open.load(SeqCst), 1);
        assert_eq!(p.metrics().closed_overflow, 1);
    });
}

/// The breaker (`breaker.rs`): the backend is down (one failed connect
/// with a threshold of one) and a probe is due; two probes race each
/// other and the main thread's release and `get`. Two places are free, so
/// neither probe is ever turned away for want of one: exactly one probe
/// runs (the second finds the first running, or the backend up after it);
/// the `get` is served the connection it released, down or not; nothing is
/// lost. Catches `two_probes` (the probe claimed with a load and a store:
/// both run, and both connect).
#[test]
fn two_probes_race_a_release_and_a_get_while_the_backend_is_down() {
    // Two preemptions: enough for the two claims to interleave (the
    // mutant needs one), and for either to meet the release or the `get`
    // anywhere in the other's run.
    explore_bounded(2, None, || {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, mock) = pool(4, m, |b| b.breaker(Some(1)).fail_fast(true));
        pin_home(&p);
        let c1 = block_on(p.get()).unwrap();
        let c2 = block_on(p.get()).unwrap();
        p.manager().fail.store(1, SeqCst);
        assert!(matches!(block_on(p.get()), Err(PoolError::Connect(_))));
        assert!(p.metrics().backend_down);
        mock.advance(Duration::from_secs(10)); // the first probe is due
        let probes: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    pin_home(&p);
                    block_on(p.loom_probe());
                })
            })
            .collect();
        drop(c2);
        let got = block_on(p.get());
        assert!(got.is_ok(), "an idle connection, down or not: {got:?}");
        drop(got);
        for t in probes {
            t.join().unwrap();
        }
        let m = p.metrics();
        assert_eq!(m.probes, 1, "one probe, and only one: {m:?}");
        assert!(!m.backend_down, "the probe connected: {m:?}");
        drop(c1);
        let s = p.state();
        assert_eq!(s.size, open.load(SeqCst), "nothing lost: {s:?}");
        assert_eq!((s.size, s.in_use), (3, 0), "{s:?}");
    });
}

/// Model 18 — I1 (exclusive) and nothing lost on the thread-affine fast
/// path (issue 16): the main thread releases the pool's one connection,
/// which parks in its cache (PARKED, key cached), then takes it back (its
/// cached key, one CAS `PARKED -> BUSY`) while another thread, whose cache
/// and shards are empty, acquires by scanning the state words
/// (`steal_parked`). At most one holds the connection at a time (loom
/// checks the connection's cell, which each holder writes), at least one
/// gets it, and afterwards it is idle and accounted for. Catches
/// `steal_without_cas` (the stealer takes the PARKED slot with a load and
/// a store: the owner's CAS succeeds in between and both hold the
/// connection). The pool has one slot, so the scan starts at slot 0 in
/// every execution (no [`pin_home`] needed).
#[test]
fn an_owner_takes_back_its_parked_connection_while_another_thread_steals_it() {
    explore(|| {
        let m = M::default();
        let open = Arc::clone(&m.open);
        let (p, _mock) = pool(1, m, |b| b);
        with_idle_connection(&p); // parked in this thread's cache
        assert_eq!(p.state().idle, 1);
        let p2 = p.clone();
        let stealer = thread::spawn(move || p2.try_get().map(|mut c| c.uses += 1).is_some());
        let owned = p.try_get().map(|mut c| c.uses += 1).is_some();
        let stole = stealer.join().unwrap();
        assert!(owned || stole, "one idle connection, never missed by both");
        let s = p.state();
        assert_eq!((s.size, s.idle, s.in_use), (1, 1, 0), "nothing lost");
        assert_eq!(open.load(SeqCst), 1, "no connection opened or closed");
        let c = p.try_get().expect("the connection is idle");
        assert_eq!(
            c.uses,
            u64::from(owned) + u64::from(stole),
            "each use by one holder"
        );
        assert!(p.try_get().is_none(), "one connection, handed out once");
    });
}

/// A waker that records that it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

/// Model 19 — I4 (no lost wake-up) on the thread-affine fast path (issue
/// 16): the pool's one connection is held on another thread, which drops
/// it while the main thread's `get` polls once (fast path, then it
/// registers as a waiter and re-checks). The releasing thread's cache is
/// empty, so unless it sees the waiter its release parks the connection
/// there (PARKED, its key in no shared structure) and re-checks the
/// waiters. Either the first poll is served, or the waiter is woken and
/// its next poll is: a waiter whose poll returned `Pending` and that is
/// never woken would never be polled again. Catches
/// `recheck_skips_parked` (a taker, the waiter's re-check among them,
/// misses parked connections: the waiter sleeps while the connection sits
/// parked) and `lost_wakeup` (the releaser skips its re-check after
/// parking).
#[test]
fn a_parked_release_races_waiter_registration() {
    explore(|| {
        let (p, _mock) = pool(1, M::default(), |b| b);
        let c = block_on(p.get()).unwrap();
        let releaser = thread::spawn(move || drop(c));
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut waiting = Box::pin(p.get());
        let first = waiting.as_mut().poll(&mut cx);
        releaser.join().unwrap();
        let got = match first {
            Poll::Ready(got) => got,
            Poll::Pending => {
                assert!(
                    flag.0.load(SeqCst),
                    "the waiter was left pending and never woken, its wakeup lost"
                );
                match waiting.as_mut().poll(&mut cx) {
                    Poll::Ready(got) => got,
                    Poll::Pending => panic!("woken, but not served"),
                }
            }
        };
        let mut c = got.expect("the waiter is served");
        c.uses += 1;
        drop(c);
        let s = p.state();
        assert_eq!((s.size, s.idle, s.waiting), (1, 1, 0), "nothing lost");
    });
}

/// A key's manager in the budget models: counts connections open across
/// both keys, and fails the model the moment they exceed the budget.
struct KeyM {
    open: Arc<AtomicUsize>,
    budget: usize,
}

impl Manager for KeyM {
    type Connection = Conn;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<Conn, std::io::Error> {
        let now = self.open.fetch_add(1, SeqCst) + 1;
        assert!(
            now <= self.budget,
            "the total exceeded: {now} open across keys"
        );
        Ok(Conn {
            uses: 0,
            open: Arc::clone(&self.open),
        })
    }

    const KEYED: bool = true;
}

/// Model 22 — the budget across keys of a keyed pool (`budget.rs`): two
/// keys' pools share a budget of one. Key B holds the one connection and
/// releases it while a `get` on key A, starved, registers for a token and
/// asks for room (the model's eviction closes B's idle connection, as the
/// keyed pool's does). The `get` on A is served (B's connection closed
/// for it, at its release or by the eviction), and the two keys together
/// never hold more than one connection. Catches `budget_unchecked` (a
/// token taken past the cap: the total exceeded) and
/// `release_ignores_starved` (B's release keeps its connection idle while
/// A waits: A sleeps while another key holds an idle connection).
#[test]
fn a_starved_get_on_one_key_is_served_by_a_release_on_another() {
    explore(|| {
        let open = Arc::new(AtomicUsize::new(0));
        let budget = latchless::LoomBudget::new(1);
        let key = |b: &latchless::LoomBudget| {
            let (clock, _mock) = latchless::Clock::mock();
            Pool::builder(KeyM {
                open: Arc::clone(&open),
                budget: 1,
            })
            .max_size(1)
            .shards(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .check_after_idle(None)
            .fail_fast(true)
            .background(false)
            .clock(clock)
            .loom_build_in(b)
        };
        let (a, b) = (key(&budget), key(&budget));
        let b2 = b.clone();
        budget.on_evict(move || b2.loom_close_one_idle());
        let held = block_on(b.get()).unwrap();
        let t = thread::spawn(move || drop(held));
        let got = block_on(a.get());
        assert!(got.is_ok(), "the starved get on key A is served");
        drop(got);
        t.join().unwrap();
        assert!(open.load(SeqCst) <= 1);
        assert_eq!(a.state().waiting + b.state().waiting, 0);
    });
}

/// Model 23 — a token freed while a `get` starves (`budget.rs`, "Put
/// back"): key B holds the budget's one connection and closes it (marked
/// broken: its place and token go back) while a `get` on key A registers
/// as starved
/// and looks for a token once more. The `get` is served: it finds the
/// token, or the put-back sees it and serves it the token. Catches
/// `put_back_no_recheck` (the put-back looks for starved `get`s only
/// before its decrement: a `get` that registered between the look and the
/// decrement sleeps with a token free).
#[test]
fn a_token_freed_while_a_get_starves_reaches_it() {
    explore(|| {
        let open = Arc::new(AtomicUsize::new(0));
        let budget = latchless::LoomBudget::new(1);
        let key = |b: &latchless::LoomBudget| {
            let (clock, _mock) = latchless::Clock::mock();
            Pool::builder(KeyM {
                open: Arc::clone(&open),
                budget: 1,
            })
            .max_size(1)
            .shards(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .check_after_idle(None)
            .fail_fast(true)
            .background(false)
            .clock(clock)
            .loom_build_in(b)
        };
        let (a, b) = (key(&budget), key(&budget));
        let held = block_on(b.get()).unwrap();
        let t = thread::spawn(move || {
            let mut held = held;
            latchless::Pooled::mark_broken(&mut held);
            drop(held);
        });
        let got = block_on(a.get());
        assert!(got.is_ok(), "the starved get on key A is served");
        drop(got);
        t.join().unwrap();
    });
}

/// Model 24 — I1, I3 and I4 off the request path (`offpath.rs`): a
/// keepalive check claims the one idle connection in place and puts it
/// back (passed) while a `get` races for it, and, in a second run, while
/// the pool is closed. The `get` is served (it takes the connection first,
/// or waits and is handed it by the put-back), never beside the check
/// (loom would report the race on the connection's cell); a close leaves
/// nothing open. Catches `keepalive_put_back_blind` (the put-back skips
/// the waiter and `closed` re-check: the `get` sleeps beside an idle
/// connection, or a closed pool keeps it open) and `claim_without_cas`.
#[test]
fn a_keepalive_check_races_a_get_and_a_close() {
    for close in [false, true] {
        explore(move || {
            let m = M::default();
            let open = Arc::clone(&m.open);
            let (p, _mock) = pool(1, m, |b| b);
            with_idle_connection(&p);
            let p2 = p.clone();
            let t = thread::spawn(move || p2.loom_keepalive(0));
            if close {
                block_on(p.close());
            } else {
                let got = block_on(p.get()).map(|mut c| c.uses += 1);
                assert!(got.is_ok(), "the get is served");
            }
            t.join().unwrap();
            let s = p.state();
            if close {
                assert_eq!(
                    open.load(SeqCst),
                    0,
                    "the closed pool keeps a connection open"
                );
                assert_eq!(s.size, 0);
            } else {
                assert_eq!((s.size, s.in_use, s.waiting), (1, 0, 0));
                assert_eq!(open.load(SeqCst), 1);
            }
        });
    }
}
