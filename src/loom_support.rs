//! Hooks for the loom models (`loom-tests/`), compiled only into the loom
//! build (`--cfg latchless_loom`): a model runs no Tokio, so what the
//! pool's background task would do on it, a model does by hand through
//! these. Reached through `Pool` because the modules behind it are
//! private; hidden from the docs.
//!
//! Invariant kept: each hook runs the production code path (the same
//! functions the background task calls), never a copy of it.

use std::sync::Arc;

use crate::{Manager, Pool};

impl<M: Manager> Pool<M> {
    /// Pins the calling thread's home to `shard` of the pool's shards (a
    /// model needs the same home in every execution).
    #[doc(hidden)]
    pub fn loom_pin_home_shard(&self, shard: usize) {
        crate::tid::pin_home(shard, self.config().shards);
    }

    /// Runs the next probe now, in this thread, if the backend is down and
    /// a probe is due.
    #[doc(hidden)]
    pub async fn loom_probe(&self) {
        let core = self.core();
        if core.breaker.claim_probe(core.clock.now()) == crate::breaker::Probe::Run {
            crate::connector::probe(Arc::clone(self.shared())).await;
        }
    }

    /// Starts serving waiter deadlines, as the background task's first
    /// round does (waiters then leave their time-outs to the sweep).
    #[doc(hidden)]
    pub fn loom_start_sweeping(&self) {
        self.core().waiters.start_sweeping();
    }

    /// One sweep of waiter deadlines at the pool clock's time, as the
    /// background task runs it; false if another thread held the line.
    #[doc(hidden)]
    pub fn loom_sweep(&self) -> bool {
        let shared = self.shared();
        crate::background::sweep(shared, true, &mut crate::lifetime::Settle::new(shared)).is_some()
    }
}

/// A keyed pool's budget across keys (`budget.rs`), for a model that
/// builds its keys' pools by hand (a model cannot run the keyed pool's
/// map).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct LoomBudget(Arc<crate::budget::Budget>);

impl LoomBudget {
    /// A budget of `max` tokens.
    #[doc(hidden)]
    pub fn new(max: usize) -> Self {
        Self(Arc::new(crate::budget::Budget::new(max)))
    }

    /// How the budget makes room: the model's stand-in for the keyed
    /// pool's least-recently-used idle connection.
    #[doc(hidden)]
    pub fn on_evict(&self, evict: impl Fn() -> bool + Send + Sync + 'static) {
        self.0.on_evict(Box::new(evict));
    }
}

impl<M: Manager> crate::Builder<M> {
    /// Builds the pool as one key's pool of a keyed pool with `budget`.
    #[doc(hidden)]
    pub fn loom_build_in(self, budget: &LoomBudget) -> Pool<M> {
        crate::builder::validate(&self.config).expect("valid settings");
        Pool::new_in(
            self.manager,
            self.config,
            self.clock.unwrap_or_default().into_inner(),
            Some(Arc::clone(&budget.0)),
        )
    }
}

impl<M: Manager> Pool<M> {
    /// A keepalive check of the connection in slot `index` as a
    /// maintenance pass starts it (claimed in place, `offpath.rs`), whose
    /// check passes at once (a model runs no Tokio): then put back fresh,
    /// as the check's task does. False if it was not idle.
    #[doc(hidden)]
    pub fn loom_keepalive(&self, index: u32) -> bool {
        let core = self.core();
        let serial = core.slots.at(index).life.serial();
        let Some(busy) = core.idle.claim_in_place(&core.slots, index, serial) else {
            return false;
        };
        core.passed_check(&busy);
        core.put_back_checked(busy, &mut crate::lifetime::Settle::new(self.shared()));
        true
    }

    /// Closes one idle connection, as the keyed pool's eviction does.
    #[doc(hidden)]
    pub fn loom_close_one_idle(&self) -> bool {
        self.close_one_idle()
    }
}
