//! The idle set: one `CachePadded<ArrayQueue<SlotKey>>` per shard.
//!
//! A thread releases to and acquires from its *home* shard first and steals
//! from the others only when its home is empty, so threads on different
//! cores mostly touch different cache lines. The home shard is a per-thread
//! random number mapped onto the shard count with one multiply
//! (Lemire's "fastrange"), costing a thread-local read (~0.3 ns), not a
//! `sched_getcpu()` call (~2.5 ns, stale after migration).
//!
//! Each queue holds keys in FIFO order (so the oldest idle connection of a
//! shard is handed out first) and has room for `max_size` keys.
//!
//! # Invariants kept
//!
//! - A live key (one whose slot reads `IDLE(g)`) is in exactly one queue.
//!   Stale keys may also sit in queues; they are skipped on pop.
//! - A push never loses a live key: a shard holding `max_size` keys while
//!   the pusher holds one more live key must hold a stale key (there are at
//!   most `max_size` connections), which [`Shards::push`] evicts.
//! - Ordering: `push` ends in a SeqCst CAS on the queue's tail and `pop`
//!   reads the tail after a SeqCst fence when it finds the queue empty
//!   (crossbeam-queue 0.3's `ArrayQueue`). The pool's lost-wake-up argument
//!   (see `waiters.rs`) rests on exactly this.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::slots::SlotKey;
use crate::sync::{ArrayQueue, AtomicUsize, Ordering, thread_local};

thread_local! {
    /// This thread's shard hash; 0 until first use.
    static HOME: Cell<u32> = const { Cell::new(0) };
}

/// Hands out distinct thread numbers, spread by Fibonacci hashing.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(1);

#[inline(always)]
fn home_hash() -> u32 {
    HOME.with(|h| {
        let v = h.get();
        if v != 0 {
            return v;
        }
        let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) as u32;
        // Golden-ratio spread of consecutive thread numbers over u32; `| 1`
        // keeps it away from the 0 sentinel.
        let v = n.wrapping_mul(0x9E37_79B9) | 1;
        h.set(v);
        v
    })
}

/// The sharded idle set.
pub(crate) struct Shards {
    queues: Box<[CachePadded<ArrayQueue<SlotKey>>]>,
}

impl Shards {
    /// `shards` queues with room for `per_shard` keys each (both >= 1).
    pub(crate) fn new(shards: usize, per_shard: usize) -> Self {
        Self {
            queues: (0..shards)
                .map(|_| CachePadded::new(ArrayQueue::new(per_shard)))
                .collect(),
        }
    }

    /// Number of shards.
    pub(crate) fn count(&self) -> usize {
        self.queues.len()
    }

    /// The calling thread's home shard.
    #[inline(always)]
    fn home(&self) -> usize {
        ((home_hash() as u64 * self.queues.len() as u64) >> 32) as usize
    }

    /// Pops a key, home shard first, then the others in order. The key may
    /// be stale: the caller claims it and skips it if the claim fails.
    #[inline]
    pub(crate) fn pop(&self) -> Option<SlotKey> {
        let home = self.home();
        if let Some(k) = self.queues[home].pop() {
            return Some(k);
        }
        self.steal(home)
    }

    #[cold]
    fn steal(&self, home: usize) -> Option<SlotKey> {
        let n = self.queues.len();
        (1..n).find_map(|i| self.queues[(home + i) % n].pop())
    }

    /// Pushes a live key, home shard first. `is_live` tells stale keys from
    /// live ones for the rare case in which every shard is full.
    #[inline]
    pub(crate) fn push(&self, key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let home = self.home();
        if let Err(key) = self.queues[home].push(key) {
            self.push_slow(home, key, is_live);
        }
    }

    #[cold]
    fn push_slow(&self, home: usize, mut key: SlotKey, is_live: impl Fn(SlotKey) -> bool) {
        let n = self.queues.len();
        for i in 1..n {
            match self.queues[(home + i) % n].push(key) {
                Ok(()) => return,
                Err(k) => key = k,
            }
        }
        // Every shard is full, so the home shard holds at least one stale
        // key (see the module invariants). Rotate it: push at the back,
        // evicting the front, until what falls out is stale.
        loop {
            match self.queues[home].force_push(key) {
                None => return,
                Some(out) if !is_live(out) => return,
                Some(out) => key = out,
            }
        }
    }

    /// Keys currently queued, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("shards", &self.count())
            .field("queued", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32, generation: u64) -> SlotKey {
        SlotKey { index, generation }
    }

    #[test]
    fn pop_steals_from_other_shards() {
        let s = Shards::new(4, 4);
        // Push from another thread, whose home shard may differ from ours.
        std::thread::scope(|sc| {
            sc.spawn(|| s.push(key(1, 1), |_| true));
        });
        assert_eq!(s.len(), 1);
        assert_eq!(s.pop(), Some(key(1, 1)));
        assert_eq!(s.pop(), None);
    }

    #[test]
    fn full_shards_evict_a_stale_key_not_a_live_one() {
        let s = Shards::new(1, 2);
        s.push(key(0, 1), |_| true);
        s.push(key(1, 1), |_| true);
        // Key (0, 1) is stale, (1, 1) live: pushing (2, 1) must evict (0, 1).
        s.push(key(2, 1), |k| k.index != 0);
        let mut left = vec![s.pop().unwrap(), s.pop().unwrap()];
        left.sort_by_key(|k| k.index);
        assert_eq!(left, vec![key(1, 1), key(2, 1)]);
        assert_eq!(s.pop(), None);
    }
}
