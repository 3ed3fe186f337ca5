//! Test support: a manager whose connections are counted, tracked for
//! exclusive use, and whose faults (errors, hangs, panics, broken
//! connections) are switched on per test.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use latchless::Manager;

/// Shared counters of everything the manager saw.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Connections (and connects in flight) that exist right now.
    pub live: AtomicUsize,
    /// Highest `live` ever seen.
    pub max_live: AtomicUsize,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub connect_calls: AtomicU64,
    /// Fail this many upcoming connects.
    pub fail_next: AtomicUsize,
    /// Panic in this many upcoming connects.
    pub panic_next: AtomicUsize,
    /// Every connect hangs forever while set.
    pub hang: AtomicBool,
    /// Delay of each connect, in ms.
    pub connect_delay_ms: AtomicU64,
    /// `is_broken` says true for every connection while set.
    pub all_broken: AtomicBool,
    /// `is_broken` panics while set.
    pub panic_in_is_broken: AtomicBool,
    /// `check` calls so far.
    pub check_calls: AtomicU64,
    /// `check` fails for connections with an id below this ("the server
    /// restarted and they are dead").
    pub dead_below: AtomicU64,
    /// `check` hangs forever while set.
    pub check_hang: AtomicBool,
    /// Delay of each `check`, in ms.
    pub check_delay_ms: AtomicU64,
    /// The pool's mock clock, if the pool runs on one: connect and check
    /// delays move it too, so that the pool's time passes as Tokio's does.
    pub mock: std::sync::Mutex<Option<latchless::MockClock>>,
}

impl Tracker {
    /// Lets `d` pass: sleeps on Tokio's time, and moves the pool's mock
    /// clock (if any) by as much once the sleep ends.
    pub async fn pass(&self, d: Duration) {
        tokio::time::sleep(d).await;
        if let Some(mock) = self.mock.lock().unwrap().as_ref() {
            mock.advance(d);
        }
    }

    fn enter(&self) {
        let now = self.live.fetch_add(1, SeqCst) + 1;
        self.max_live.fetch_max(now, SeqCst);
    }
    pub fn live(&self) -> usize {
        self.live.load(SeqCst)
    }
    pub fn max_live(&self) -> usize {
        self.max_live.load(SeqCst)
    }
    pub fn opened(&self) -> u64 {
        self.opened.load(SeqCst)
    }
    pub fn closed(&self) -> u64 {
        self.closed.load(SeqCst)
    }
}

/// Counts a connect in flight or an open connection in `Tracker::live`.
#[derive(Debug)]
struct LiveToken(Arc<Tracker>);

impl LiveToken {
    fn new(t: &Arc<Tracker>) -> Self {
        t.enter();
        Self(Arc::clone(t))
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, SeqCst);
    }
}

/// A connection: an id, a flag set while a test holds it, and a token.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub busy: AtomicBool,
    pub broken: AtomicBool,
    tracker: Arc<Tracker>,
    _live: LiveToken,
}

impl Conn {
    /// Marks the connection held; panics if somebody else holds it (I1).
    pub fn enter(&self) {
        assert!(
            !self.busy.swap(true, SeqCst),
            "connection {} handed to two holders at once",
            self.id
        );
    }
    pub fn leave(&self) {
        self.busy.store(false, SeqCst);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.tracker.closed.fetch_add(1, SeqCst);
    }
}

#[derive(Debug)]
pub struct ConnectError(pub &'static str);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConnectError {}

/// The test manager.
#[derive(Debug, Clone, Default)]
pub struct TestManager {
    pub t: Arc<Tracker>,
}

impl TestManager {
    pub fn new() -> (Self, Arc<Tracker>) {
        let m = Self::default();
        let t = Arc::clone(&m.t);
        (m, t)
    }
}

impl Manager for TestManager {
    type Connection = Conn;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Conn, ConnectError> {
        let t = &self.t;
        let token = LiveToken::new(t);
        t.connect_calls.fetch_add(1, SeqCst);
        let delay = t.connect_delay_ms.load(SeqCst);
        if delay > 0 {
            t.pass(Duration::from_millis(delay)).await;
        }
        if t.hang.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        if take_one(&t.panic_next) {
            panic!("connect panicked (test)");
        }
        if take_one(&t.fail_next) {
            return Err(ConnectError("connection refused (test)"));
        }
        let id = t.opened.fetch_add(1, SeqCst);
        Ok(Conn {
            id,
            busy: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            tracker: Arc::clone(t),
            _live: token,
        })
    }

    async fn check(&self, conn: &mut Conn) -> Result<(), ConnectError> {
        let t = &self.t;
        t.check_calls.fetch_add(1, SeqCst);
        let delay = t.check_delay_ms.load(SeqCst);
        if delay > 0 {
            t.pass(Duration::from_millis(delay)).await;
        }
        if t.check_hang.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        if conn.id < t.dead_below.load(SeqCst) {
            return Err(ConnectError("connection reset by peer (test)"));
        }
        Ok(())
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        if self.t.panic_in_is_broken.load(SeqCst) {
            panic!("is_broken panicked (test)");
        }
        self.t.all_broken.load(SeqCst) || conn.broken.load(SeqCst)
    }
}

fn take_one(c: &AtomicUsize) -> bool {
    c.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// A multi-threaded runtime with two workers and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The bound of every "eventually" in the tests: far beyond what any step
/// needs on a loaded machine, so that only a real hang trips it.
pub const LONG: Duration = Duration::from_secs(20);

/// Polls `f` every 2 ms until it holds; fails the test after [`LONG`].
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A current-thread runtime with paused time: sleeps end exactly.
pub fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A pool on a mock clock, no background task, every time policy off
/// unless `f` sets it (the observability tests' figures are exact).
pub fn mocked_quiet(
    f: impl FnOnce(latchless::Builder<TestManager>) -> latchless::Builder<TestManager>,
) -> (
    latchless::Pool<TestManager>,
    Arc<Tracker>,
    latchless::MockClock,
) {
    let (m, t) = TestManager::new();
    let (clock, mock) = latchless::Clock::mock();
    let b = latchless::Pool::builder(m)
        .clock(clock)
        .background(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .check_after_idle(None)
        .replace_before_expiry(None);
    *t.mock.lock().unwrap() = Some(mock.clone());
    (f(b).build().unwrap(), t, mock)
}

#[path = "../capture/mod.rs"]
mod capture;
pub use capture::Capture;

impl Capture {
    /// Every event's fields, in order.
    pub fn fields(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// The level of the one event whose fields contain every one of
    /// `parts` (panics if more than one does).
    pub fn find(&self, parts: &[&str]) -> Option<tracing::Level> {
        let log = self.0.lock().unwrap();
        let found: Vec<_> = log
            .iter()
            .filter(|(_, f)| parts.iter().all(|p| f.contains(p)))
            .collect();
        assert!(found.len() <= 1, "{parts:?} more than once: {log:?}");
        found.first().map(|(l, _)| *l)
    }

    /// The `held_ms` of each reported leak.
    pub fn held_ms(&self) -> Vec<u64> {
        self.fields()
            .iter()
            .filter_map(|e| e.split("held_ms=").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    }
}
