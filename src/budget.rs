//! The budget across the keys of a keyed pool: one count of the places
//! taken by every key's pool (connecting ones included), capped at
//! `max_total`, and the line of `get`s that found their key's pool with
//! room but the budget spent ("starved").
//!
//! # Protocol
//!
//! - **Take** ([`Budget::take`]): a CAS on `used`, only while `used <
//!   max`. A key's pool takes a token *before* it reserves one of its own
//!   places, and gives the token back if it finds none: a place never
//!   exists without its token, and a token held for a moment is handed on
//!   like any other (below).
//! - **Put back** ([`Budget::put_back`]): a place closed or given back
//!   in any key frees a token. It goes to the oldest starved `get` of any
//!   key first (served through `starved`, a [`Waiters`] line whose grant
//!   means "one token"), else back to the count, after which the releaser
//!   looks at `starved` again: a starved `get` registers, then tries to
//!   take a token (both SeqCst), so either it takes the token or the
//!   releaser sees it and takes the token back for it. The same argument
//!   as the pool's own lost wake-ups (`waiters.rs`).
//! - **Starve and evict**: a `get` whose key's pool could not take a token
//!   waits in its key's own line (a connection of its key may come back)
//!   *and* in `starved` (a token may free anywhere), whichever serves it
//!   first; and it asks the keyed pool to close the least recently used
//!   idle connection of another key ([`Budget::evict`]), whose token then
//!   goes to the oldest starved `get`. So no key starves at the global cap
//!   while another key holds idle connections.
//!
//! # Invariants kept
//!
//! - `used` counts the tokens held: one per place taken across the keys
//!   (less the places whose connect is backing off between attempts: such
//!   a connect lends its token back while it sleeps and waits for one
//!   again, like a starved `get`, before its next attempt), plus tokens in
//!   flight between a take and the reservation or release that follows;
//!   it never exceeds `max`. So the servers see at most `max` connections
//!   and connect attempts at once.
//! - A token leaves `used` only through `put_back`; a token served to a
//!   starved `get` stays counted and is its to use or to put back.

use std::sync::OnceLock;
use std::task::{Context, Poll};

use crossbeam_utils::CachePadded;

use crate::clock::NO_DEADLINE;
use crate::sync::{self, Arc, AtomicBool, AtomicUsize, Ordering, mutant};
use crate::waiters::{Grant, Node, Outcome, Waiters};

/// What a starved `get` is served: one token (the index is unused).
pub(crate) const TOKEN: Grant = Grant::Place(0);

/// Closes the least recently used idle connection of some key; whether it
/// found one.
type Evict = Box<dyn Fn() -> bool + Send + Sync>;

/// The budget of a keyed pool (module docs).
pub(crate) struct Budget {
    used: CachePadded<AtomicUsize>,
    max: usize,
    /// `get`s starved by the budget, oldest first.
    pub(crate) starved: Waiters,
    /// Set once by the keyed pool that owns this budget.
    evict: OnceLock<Evict>,
    /// Flips on every [`turn`](Self::turn).
    toggle: AtomicBool,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("used", &self.used())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `max` tokens.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: CachePadded::new(AtomicUsize::new(0)),
            max,
            // Starved `get`s hold no grant of a slot: one deposit slot is
            // enough (a deposit is one token).
            starved: Waiters::new(max),
            evict: OnceLock::new(),
            toggle: AtomicBool::new(false),
        }
    }

    /// Sets how to close another key's idle connection (once).
    pub(crate) fn on_evict(&self, evict: Evict) {
        let _ = self.evict.set(evict);
    }

    /// True every other call: a key's release with its own waiters gives
    /// every other connection to the starved `get`s of other keys.
    pub(crate) fn turn(&self) -> bool {
        self.toggle.fetch_xor(true, Ordering::Relaxed)
    }

    /// Tokens held now. Inlined: every release of a keyed pool reads it
    /// (`Core::starving`).
    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap across keys.
    #[inline]
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Takes a token if fewer than `max` are held.
    pub(crate) fn take(&self) -> bool {
        // loom mutant: budget_unchecked (a token taken past the cap: the
        // servers together see more than `max_total`), see run-mutants.sh
        if mutant("budget_unchecked") {
            self.used.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        let mut used = self.used.load(Ordering::SeqCst);
        while used < self.max {
            // SeqCst: the take is a starved registration's re-check, and a
            // put-back's decrement is followed by its look at `starved`
            // (module docs).
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
        false
    }

    /// Counts a token taken on credit, past the cap if need be: a place
    /// whose connect lent its token and did not get one back is about to
    /// be given back with one (`connector.rs`, `Lent`); no connection
    /// exists for it meanwhile.
    pub(crate) fn credit(&self) {
        self.used.fetch_add(1, Ordering::SeqCst);
    }

    /// Frees one token: to the oldest starved `get`, else to the count.
    pub(crate) fn put_back(&self) {
        let mut tokens = 1usize;
        while tokens > 0 {
            if self.starved.any() {
                // Tokens others deposited meanwhile that nobody took come
                // back to this loop.
                let mut spared = 0;
                let served = self.starved.serve(TOKEN, &mut |_| spared += 1);
                tokens += spared;
                if served.is_ok() {
                    tokens -= 1;
                    continue;
                }
            }
            self.used.fetch_sub(1, Ordering::SeqCst);
            // The look below follows the decrement in S (for loom, which
            // does not order a SeqCst load after a SeqCst RMW).
            crate::sync::sc_load_after_rmw();
            tokens -= 1;
            // A starved `get` that registered after the look above and
            // found no token before the decrement: take it back for it.
            // loom mutant: put_back_no_recheck, see run-mutants.sh
            if !mutant("put_back_no_recheck") && self.starved.any() && self.take() {
                tokens += 1;
            }
        }
    }

    /// Registers a starved `get`; it must then try [`take`](Self::take)
    /// once more (module docs). `None` never happens (no bound on starved
    /// `get`s beyond each key's own `max_waiters`).
    pub(crate) fn starve(&self) -> Option<Arc<Node>> {
        // Tokens a compaction found deposited with nobody to take them are
        // put back once the line is let go.
        let mut spared = 0;
        let node = self
            .starved
            .register(None, NO_DEADLINE, &mut |_| spared += 1);
        for _ in 0..spared {
            self.put_back();
        }
        node
    }

    /// Asks the keyed pool to close the least recently used idle
    /// connection of any key; whether one was closed.
    pub(crate) fn evict(&self) -> bool {
        self.evict.get().is_some_and(|evict| evict())
    }

    /// Takes a token, waiting for one as a starved `get` does (oldest
    /// first, after asking for room) until `deadline`; whether it got one.
    /// A connect backing off between attempts takes its token again here
    /// (`connector.rs`).
    pub(crate) async fn take_within(&self, deadline: Option<tokio::time::Instant>) -> bool {
        if self.take() {
            return true;
        }
        let Some(node) = self.starve() else {
            return false;
        };
        let mut wait = TokenWait::new(self, node);
        if self.take() {
            return true; // `wait` withdraws as it drops
        }
        self.evict();
        let served = sync::bounded(deadline, std::future::poll_fn(|cx| wait.poll(cx))).await;
        matches!(served, Some(Outcome::Granted(_)))
    }
}

/// A wait for a token in the budget's line of starved `get`s. Dropped
/// before its outcome, it withdraws, and puts back a token served
/// meanwhile.
pub(crate) struct TokenWait<'a> {
    pub(crate) budget: &'a Budget,
    node: Arc<Node>,
    done: bool,
}

impl<'a> TokenWait<'a> {
    /// Holds `node`, freshly registered in `budget`'s line.
    pub(crate) fn new(budget: &'a Budget, node: Arc<Node>) -> Self {
        Self {
            budget,
            node,
            done: false,
        }
    }

    /// Polls for a token (registering the waker); once ready, the token is
    /// the caller's.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let outcome = self.node.poll(cx);
        if outcome.is_ready() {
            self.done = true;
        }
        outcome
    }
}

impl Drop for TokenWait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.budget.starved.cancel(&self.node).is_some() {
            // Served a token meanwhile (the budget's line ends nodes no
            // other way): it goes back, to the next starved `get`, and the
            // put-back's own look covers the count read low by the cancel
            // (`waiters.rs`, "Cancel").
            self.budget.put_back();
        }
    }
}
