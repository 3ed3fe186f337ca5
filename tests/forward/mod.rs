//! A TCP forwarder between a client under test and a real server, for
//! outage tests: it forwards, refuses, hangs, or drops every connection on
//! command, while the server itself is never touched.
//!
//! `Forwarder::start(target)` listens on `127.0.0.1:<ephemeral>`; point the
//! manager under test at [`Forwarder::addr`] instead of the server. Each
//! connection it accepts is handled in the [`Mode`] in force when it was
//! accepted:
//!
//! - [`Mode::Forward`]: a new connection to `target`, bytes copied both
//!   ways until either side closes. If `target` cannot be reached the
//!   client's connection is closed, as a proxy in front of a dead server
//!   would.
//! - [`Mode::Refuse`]: the listening socket is closed, so a connect gets
//!   `ECONNREFUSED`, as from a server that is down; switching back to
//!   `Forward` or `Hang` binds the same port again.
//! - [`Mode::Hang`]: the connection is accepted and nothing is ever sent on
//!   it (what it receives is read and thrown away, so that the client's
//!   writes succeed and its close is seen): a server that is stuck.
//!
//! A mode applies to connections accepted after it is set; the ones already
//! open keep going until [`Forwarder::kill_all`] drops them (both sides,
//! closed as a crashed process's sockets are: FIN, or RST where data was
//! unread). A server that crashes and stays down is `set_mode(Refuse)` then
//! `kill_all()`. [`Forwarder::freeze_all`] stops the ones already open
//! from answering, their sockets left open: a server that stops
//! responding without closing anything.
//!
//! Runs on the caller's Tokio runtime (one accept task, one task per
//! connection). Dropping the `Forwarder` closes its port at once and ends
//! every task at its next poll: each one waits on channels whose sender the
//! `Forwarder` owns, so none outlives it.
//!
//! ```ignore
//! #[path = "forward/mod.rs"] // or `mod forward;` from a file in tests/
//! mod forward;
//! use forward::{Forwarder, Mode};
//!
//! let fwd = Forwarder::start("127.0.0.1:5432".parse().unwrap());
//! let manager = PgManager::from_url(&format!("host=127.0.0.1 port={} user=root dbname=test", fwd.addr().port()))?;
//! let pool = Pool::builder(manager).build()?;
//! drop(pool.get().await?); // through the forwarder
//! fwd.set_mode(Mode::Refuse); // the server is "down"
//! fwd.kill_all(); // and its sessions with it
//! ```
#![allow(dead_code)]

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the forwarder does with the connections it accepts from now on
/// (module docs).
///
/// ```ignore
/// fwd.set_mode(Mode::Hang);
/// assert_eq!(fwd.mode(), Mode::Hang);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copy bytes both ways between the client and the target.
    Forward,
    /// Listen on nothing: connects are refused.
    Refuse,
    /// Accept, then never answer.
    Hang,
}

/// A TCP forwarder on `127.0.0.1` (module docs). Not `Clone`: its drop
/// ends everything it started.
///
/// ```ignore
/// let fwd = Forwarder::start(server_addr);
/// let conn = tokio::net::TcpStream::connect(fwd.addr()).await?;
/// ```
pub struct Forwarder {
    addr: SocketAddr,
    target: SocketAddr,
    runtime: Handle,
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    /// Sent after each mode change, so that the accept loop polls the new
    /// listener (or none); its drop ends the accept loop.
    wake: watch::Sender<()>,
    /// Bumped by `kill_all`; every connection task waits on it, and its
    /// drop (with the forwarder) ends them all.
    kill: watch::Sender<u64>,
    /// Bumped by `freeze_all`; every forwarded connection waits on it.
    freeze: watch::Sender<u64>,
    accept_task: JoinHandle<()>,
}

/// What `set_mode` changes and the accept loop reads, under one lock held
/// only for non-blocking steps (never across an await).
struct State {
    mode: Mode,
    /// `None` exactly while the mode is `Refuse` (or after drop).
    listener: Option<TcpListener>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    active: AtomicUsize,
}

/// Counts one accepted connection as active for as long as its task runs
/// (aborted or not).
struct Active(Arc<Counters>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, SeqCst);
    }
}

/// Bound on re-binding the port when leaving `Refuse`: the port is free
/// then (its old sockets were made with `SO_REUSEADDR`, which std sets on
/// Unix), so a retry only covers a stranger briefly holding it.
const REBIND_TRIES: u32 = 200;
const REBIND_PAUSE: Duration = Duration::from_millis(10);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere while holding it leaves the state consistent (each
    // step is one assignment), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

impl Forwarder {
    /// Listen on `127.0.0.1:<ephemeral>` and forward to `target`, in
    /// [`Mode::Forward`]. Call it inside a Tokio runtime: its tasks run
    /// there.
    ///
    /// ```ignore
    /// let fwd = Forwarder::start("127.0.0.1:6379".parse().unwrap());
    /// assert_eq!(fwd.mode(), Mode::Forward);
    /// ```
    pub fn start(target: SocketAddr) -> Forwarder {
        let runtime = Handle::try_current().expect("Forwarder::start needs a Tokio runtime");
        let listener = listen("127.0.0.1:0".parse().unwrap()).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Forward,
            listener: Some(listener),
        }));
        let counters = Arc::new(Counters::default());
        let (wake, wake_rx) = watch::channel(());
        let (kill, kill_rx) = watch::channel(0);
        let (freeze, freeze_rx) = watch::channel(0);
        let accept_task = runtime.spawn(accept_loop(
            state.clone(),
            counters.clone(),
            target,
            wake_rx,
            [kill_rx, freeze_rx],
        ));
        Forwarder {
            addr,
            target,
            runtime,
            state,
            counters,
            wake,
            kill,
            freeze,
            accept_task,
        }
    }

    /// Where clients connect (the same port in every mode).
    ///
    /// ```ignore
    /// let url = format!("redis://{}/0", fwd.addr());
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `Forward` connects.
    ///
    /// ```ignore
    /// assert_eq!(Forwarder::start(server).target(), server);
    /// ```
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The mode new connections meet.
    ///
    /// ```ignore
    /// assert_eq!(fwd.mode(), Mode::Forward);
    /// ```
    pub fn mode(&self) -> Mode {
        lock(&self.state).mode
    }

    /// Switch what happens to connections accepted from now on. In effect
    /// when it returns: after `set_mode(Refuse)` a connect is refused, after
    /// `set_mode(Forward)` or `set_mode(Hang)` the port listens again.
    /// Connections already open are left as they are (see
    /// [`kill_all`](Self::kill_all)). Panics if the port cannot be bound
    /// again within a couple of seconds.
    ///
    /// ```ignore
    /// fwd.set_mode(Mode::Refuse);
    /// assert!(TcpStream::connect(fwd.addr()).await.is_err());
    /// fwd.set_mode(Mode::Forward);
    /// ```
    pub fn set_mode(&self, mode: Mode) {
        let mut state = lock(&self.state);
        match mode {
            // Dropping the listener closes the socket now, not at the
            // accept loop's next poll.
            Mode::Refuse => state.listener = None,
            Mode::Forward | Mode::Hang if state.listener.is_none() => {
                let _in_runtime = self.runtime.enter();
                state.listener = Some(self.rebind());
            }
            Mode::Forward | Mode::Hang => {}
        }
        state.mode = mode;
        drop(state);
        self.wake.send_replace(());
    }

    fn rebind(&self) -> TcpListener {
        let mut last = None;
        for _ in 0..REBIND_TRIES {
            match listen(self.addr) {
                Ok(listener) => return listener,
                Err(e) => last = Some(e),
            }
            // Blocking, but only in the rare case and bounded; `set_mode`
            // stays synchronous so that it is in effect when it returns.
            std::thread::sleep(REBIND_PAUSE);
        }
        panic!("forwarder: could not bind {} again: {last:?}", self.addr);
    }

    /// Drop every connection accepted so far, both sides (the client's and,
    /// for forwarded ones, the one to the target), as a crashed server
    /// would. Asynchronous: each connection's task closes its sockets at its
    /// next poll, so wait for [`active`](Self::active) to reach 0 if the
    /// test needs them gone. A connection the kernel completed but the
    /// forwarder had not accepted yet when this ran is not dropped.
    ///
    /// ```ignore
    /// fwd.kill_all();
    /// while fwd.active() > 0 { tokio::time::sleep(Duration::from_millis(2)).await; }
    /// ```
    pub fn kill_all(&self) {
        self.kill.send_modify(|epoch| *epoch += 1);
    }

    /// Stop every connection forwarded so far from answering: from now on
    /// what its client sends is read and thrown away and nothing comes
    /// back, both of its sockets left open (a server that hangs with its
    /// sessions established). Asynchronous, as `kill_all`; connections
    /// accepted later forward as the mode says.
    ///
    /// ```ignore
    /// fwd.freeze_all();
    /// ```
    pub fn freeze_all(&self) {
        self.freeze.send_modify(|epoch| *epoch += 1);
    }

    /// Connections accepted so far, in every mode.
    ///
    /// ```ignore
    /// assert_eq!(fwd.accepted(), 1);
    /// ```
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(SeqCst)
    }

    /// Accepted connections still open (forwarded or hung).
    ///
    /// ```ignore
    /// assert_eq!(fwd.active(), 0);
    /// ```
    pub fn active(&self) -> usize {
        self.counters.active.load(SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // The port closes now; the tasks end at their next poll (their
        // channels' senders drop with `self`).
        lock(&self.state).listener = None;
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("mode", &self.mode())
            .field("accepted", &self.accepted())
            .field("active", &self.active())
            .finish()
    }
}

/// Accept the next connection on the current listener, with the mode it
/// is accepted in; pending while there is no listener (`Refuse`).
fn poll_accept(state: &Mutex<State>, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, Mode)>> {
    let state = lock(state);
    match &state.listener {
        Some(listener) => listener
            .poll_accept(cx)
            .map_ok(|(socket, _)| (socket, state.mode)),
        None => Poll::Pending,
    }
}

async fn accept_loop(
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
    target: SocketAddr,
    mut wake: watch::Receiver<()>,
    [kill, freeze]: [watch::Receiver<u64>; 2],
) {
    loop {
        let accepted = tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    return; // the forwarder is gone
                }
                continue; // a new listener, or none: poll that one
            }
            accepted = poll_fn(|cx| poll_accept(&state, cx)) => accepted,
        };
        let (socket, mode) = match accepted {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or the like: pause rather than spin.
                tokio::select! {
                    changed = wake.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
                continue;
            }
        };
        counters.accepted.fetch_add(1, SeqCst);
        counters.active.fetch_add(1, SeqCst);
        let active = Active(counters.clone());
        // Only a `kill_all` (`freeze_all`) after this accept drops
        // (freezes) this connection.
        let mut kill = kill.clone();
        kill.borrow_and_update();
        let mut freeze = freeze.clone();
        freeze.borrow_and_update();
        tokio::spawn(async move {
            let _active = active;
            match mode {
                Mode::Forward => forward(socket, target, kill, freeze).await,
                Mode::Hang => hang(socket, kill).await,
                Mode::Refuse => {} // no listener in this mode: unreachable
            }
        });
    }
}

/// Copy both ways until either side closes, `kill_all`, or the forwarder's
/// drop (`kill` fails); then both sockets close. After `freeze_all`, hang
/// (`hang`) with the connection to the target held open.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut kill: watch::Receiver<u64>,
    mut freeze: watch::Receiver<u64>,
) {
    let upstream = tokio::select! {
        upstream = TcpStream::connect(target) => upstream,
        _ = kill.changed() => return,
    };
    let Ok(mut upstream) = upstream else {
        return; // the client's connection closes: the backend is down
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let frozen = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
        _ = kill.changed() => false,
        changed = freeze.changed() => changed.is_ok(),
    };
    if frozen {
        hang(client, kill).await;
        drop(upstream);
    }
}

/// Read and discard until the client closes, `kill_all`, or the
/// forwarder's drop; never write.
async fn hang(mut client: TcpStream, mut kill: watch::Receiver<u64>) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = kill.changed() => return,
        }
    }
}
