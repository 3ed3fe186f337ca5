//! A hierarchical timing wheel: a plain, deterministic data structure (no
//! atomics, no clock, no threads) that the maintenance pass uses to find the
//! connections whose idle or lifetime deadline has come (`maintenance.rs`).
//! Waiter deadlines are not filed here: they live in the waiter nodes and
//! are swept by the background task (`waiters.rs`).
//!
//! # Design
//!
//! Varghese & Lauck's hierarchical timing wheel ("Hashed and Hierarchical
//! Timing Wheels", 1987), laid out as in the Linux kernel and Tokio: four
//! levels of 64 slots; a slot of level `k` spans `64^k` ticks, so the levels
//! cover `64^4` ticks (about 4.7 hours of millisecond ticks). An entry is
//! filed at the level of the highest 6-bit digit in which its deadline
//! differs from the wheel's current time, in the slot named by that digit. When time
//! reaches a slot of level `k > 0`, its entries *cascade*: they are filed
//! again, now at a lower level. A 64-bit occupancy map per level lets
//! [`TimerWheel::advance`] jump straight to the next occupied slot, so
//! advancing over idle time costs nothing.
//!
//! What differs from the textbook and from Tokio: entries live in a slab
//! with generation-checked [`TimerKey`]s (so a stale key can never cancel
//! another entry), deadlines beyond the top level wait in an overflow list
//! that is re-filed when time reaches their window, deadlines already past
//! are due at once, and `advance` is bounded by a `max` count so one
//! maintenance pass does bounded work.
//!
//! # Invariants kept
//!
//! - Every live entry is in exactly one list: a level slot, the overflow
//!   list or the due list.
//! - A level's occupancy bit is set iff its slot's list is non-empty.
//! - An entry in level `k`, slot `s` has a deadline later than `now` that
//!   agrees with `now` in every 6-bit digit above `k` and has digit `s` at
//!   `k`; an entry in the overflow list differs from `now` above the top
//!   level; an entry in the due list has a deadline `<= now`.
//! - O(1) insert and cancel; `advance` touches only entries that fire or
//!   cascade (each entry cascades at most once per level), plus at most one
//!   slot lookup per level per expiration.
//!
//! The fuzz target `wheel` checks the wheel's behaviour (every entry fires
//! once, not early, not late, in deadline order) against a `BTreeMap`
//! reference (`fuzzing.rs`, whose unit test replays the corpus).

/// Bits of a tick number per level.
const BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << BITS;
/// Levels of the wheel.
const LEVELS: usize = 4;
/// No entry (end of a list).
const NIL: u32 = u32::MAX;

/// Handle to a scheduled entry. It goes stale when its entry fires or is
/// cancelled; stale handles are detected by a generation and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

/// Which list an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Free,
    Slot(u8, u8),
    Overflow,
    Due,
}

#[derive(Debug)]
struct Node<T> {
    deadline: u64,
    value: Option<T>,
    generation: u32,
    prev: u32,
    next: u32,
    place: Place,
}

/// A doubly linked list of slab indices.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    len: u32,
}

impl List {
    const EMPTY: List = List { head: NIL, len: 0 };
}

/// A hierarchical timing wheel of values `T` (see the module docs).
#[derive(Debug)]
pub(crate) struct TimerWheel<T> {
    now: u64,
    nodes: Vec<Node<T>>,
    free: u32,
    slots: [[List; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    overflow: List,
    overflow_min: u64,
    due: List,
    len: usize,
    /// Entries touched (filed, cascaded, re-filed or fired) by `advance`.
    work: u64,
    /// Scratch space for one `advance` (reused: no allocation per tick).
    scratch: Vec<(u64, u32)>,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose time is `now` (in ticks).
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))] // the fuzz check's
    pub(crate) fn new(now: u64) -> Self {
        Self::with_capacity(now, 0)
    }

    /// An empty wheel with room for `cap` entries before it allocates.
    pub(crate) fn with_capacity(now: u64, cap: usize) -> Self {
        Self {
            now,
            nodes: Vec::with_capacity(cap),
            free: NIL,
            slots: [[List::EMPTY; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            overflow: List::EMPTY,
            overflow_min: u64::MAX,
            due: List::EMPTY,
            len: 0,
            work: 0,
            scratch: Vec::new(),
        }
    }

    /// The time up to which the wheel has advanced.
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))] // the fuzz check's
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Entries scheduled.
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))] // the fuzz check's
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is scheduled.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries touched by [`advance`](Self::advance) so far: a measure of
    /// its work, which grows with entries fired or cascaded, not with the
    /// wheel's size or the time advanced.
    #[cfg(test)]
    pub(crate) fn work(&self) -> u64 {
        self.work
    }

    /// Schedules `value` at `deadline`; a deadline not after `now` is due
    /// at the next `advance`.
    pub(crate) fn insert(&mut self, deadline: u64, value: T) -> TimerKey {
        let index = match self.free {
            NIL => {
                self.nodes.push(Node {
                    deadline,
                    value: Some(value),
                    generation: 0,
                    prev: NIL,
                    next: NIL,
                    place: Place::Free,
                });
                (self.nodes.len() - 1) as u32
            }
            i => {
                let n = &mut self.nodes[i as usize];
                self.free = n.next;
                n.deadline = deadline;
                n.value = Some(value);
                i
            }
        };
        self.len += 1;
        self.file(index);
        TimerKey {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Removes the entry and returns its value; `None` if the key is stale.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let i = self.live(key)?;
        self.unlink(i);
        Some(self.release(i))
    }

    /// Moves the entry to a new deadline; `false` if the key is stale. The
    /// key stays valid.
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))] // the fuzz check's
    pub(crate) fn reschedule(&mut self, key: TimerKey, deadline: u64) -> bool {
        let Some(i) = self.live(key) else {
            return false;
        };
        self.unlink(i);
        self.nodes[i as usize].deadline = deadline;
        self.file(i);
        true
    }

    /// The entry's value; `None` if the key is stale.
    #[cfg(test)]
    pub(crate) fn get(&self, key: TimerKey) -> Option<&T> {
        self.live(key)
            .and_then(|i| self.nodes[i as usize].value.as_ref())
    }

    /// The earliest time at which [`advance`](Self::advance) can fire an
    /// entry: exact for entries due or within the next 64 ticks, otherwise
    /// the start of the slot holding the earliest entries (a lower bound).
    /// `None` when empty.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        if self.due.len > 0 {
            return Some(self.now);
        }
        match self.next_expiration() {
            Some((_, _, at)) => Some(at),
            None if self.overflow.len > 0 => Some(self.overflow_min),
            None => None,
        }
    }

    /// Advances time to `now` (never backwards) and fires at most `max` due
    /// entries (deadline `<= now`), calling `f(key, deadline, value)` for
    /// each in nondecreasing deadline order. Entries beyond `max` stay due
    /// for the next call. Returns how many fired.
    pub(crate) fn advance(
        &mut self,
        now: u64,
        max: usize,
        mut f: impl FnMut(TimerKey, u64, T),
    ) -> usize {
        let now = now.max(self.now);
        // Cascade and collect until enough is due or nothing more is.
        while (self.due.len as usize) < max {
            match self.next_expiration() {
                Some((level, slot, at)) if at <= now => {
                    self.now = self.now.max(at);
                    self.expire_slot(level, slot);
                }
                _ => {
                    if self.overflow.len > 0 && self.overflow_min <= now {
                        // Levels are empty up to `now` (overflow entries are
                        // later than any filed entry): jump to the window
                        // of the earliest overflow entry and re-file.
                        let top = BITS * LEVELS as u32;
                        let window = (self.overflow_min >> top) << top;
                        self.now = self.now.max(window);
                        self.refile_overflow();
                        continue;
                    }
                    break;
                }
            }
        }
        if (self.due.len as usize) < max {
            self.now = now;
        }
        // Fire the earliest `max` of the due entries, in deadline order.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut i = self.due.head;
        while i != NIL {
            let n = &self.nodes[i as usize];
            scratch.push((n.deadline, i));
            i = n.next;
        }
        scratch.sort_unstable();
        let mut fired = 0;
        for &(deadline, i) in scratch.iter().take(max) {
            self.unlink(i);
            let key = TimerKey {
                index: i,
                generation: self.nodes[i as usize].generation,
            };
            let value = self.release(i);
            self.work += 1;
            fired += 1;
            f(key, deadline, value);
        }
        self.scratch = scratch;
        fired
    }

    // ----- internals -----

    fn live(&self, key: TimerKey) -> Option<u32> {
        let n = self.nodes.get(key.index as usize)?;
        (n.generation == key.generation && n.place != Place::Free).then_some(key.index)
    }

    /// Frees node `i` (already unlinked) and returns its value.
    fn release(&mut self, i: u32) -> T {
        let n = &mut self.nodes[i as usize];
        n.generation = n.generation.wrapping_add(1);
        n.place = Place::Free;
        n.next = self.free;
        n.prev = NIL;
        self.free = i;
        self.len -= 1;
        // Always `Some` for a live node; `take` keeps this panic-free.
        n.value
            .take()
            .unwrap_or_else(|| unreachable!("live timer entry without a value"))
    }

    /// Files node `i` by its deadline relative to `now`.
    fn file(&mut self, i: u32) {
        let deadline = self.nodes[i as usize].deadline;
        let place = if deadline <= self.now {
            Place::Due
        } else {
            let level = level_for(self.now, deadline);
            if level >= LEVELS {
                self.overflow_min = self.overflow_min.min(deadline);
                Place::Overflow
            } else {
                let slot = (deadline >> (BITS * level as u32)) as usize & (SLOTS - 1);
                Place::Slot(level as u8, slot as u8)
            }
        };
        self.link(i, place);
    }

    fn list(&mut self, place: Place) -> &mut List {
        match place {
            Place::Slot(l, s) => &mut self.slots[l as usize][s as usize],
            Place::Overflow => &mut self.overflow,
            Place::Due => &mut self.due,
            Place::Free => unreachable!("free nodes are in no list"),
        }
    }

    fn link(&mut self, i: u32, place: Place) {
        let head = self.list(place).head;
        {
            let n = &mut self.nodes[i as usize];
            n.place = place;
            n.prev = NIL;
            n.next = head;
        }
        if head != NIL {
            self.nodes[head as usize].prev = i;
        }
        let list = self.list(place);
        list.head = i;
        list.len += 1;
        if let Place::Slot(l, s) = place {
            self.occupied[l as usize] |= 1 << s;
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, place) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next, n.place)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.list(place).head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let list = self.list(place);
        list.len -= 1;
        let empty = list.len == 0;
        if let Place::Slot(l, s) = place {
            if empty {
                self.occupied[l as usize] &= !(1 << s);
            }
        }
        if place == Place::Overflow && empty {
            self.overflow_min = u64::MAX;
        }
        // (A non-empty overflow list keeps a `overflow_min` that may be
        // earlier than its entries: a lower bound, which only makes
        // `advance` look at it early; `refile_overflow` recomputes it.)
    }

    /// The next occupied slot (lowest level first: every entry of a lower
    /// level is earlier than every entry of a higher one) and its start.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS).find_map(|level| {
            let occupied = self.occupied[level];
            if occupied == 0 {
                return None;
            }
            let shift = BITS * level as u32;
            let now_slot = (self.now >> shift) as usize & (SLOTS - 1);
            let slot = (occupied.rotate_right(now_slot as u32).trailing_zeros() as usize
                + now_slot)
                % SLOTS;
            let level_span = 1u64 << (shift + BITS);
            let level_start = self.now & !(level_span - 1);
            let mut at = level_start + ((slot as u64) << shift);
            if at.saturating_add(1 << shift) <= self.now {
                // The slot lies in the next rotation of this level.
                at = at.saturating_add(level_span);
            }
            Some((level, slot, at.max(self.now)))
        })
    }

    /// Moves every entry of a slot whose time has come: due ones to the due
    /// list, the rest (cascading from a higher level) to a lower level.
    fn expire_slot(&mut self, level: usize, slot: usize) {
        self.refile_list(self.slots[level][slot].head);
    }

    fn refile_overflow(&mut self) {
        // Entries that stay in the overflow list set it again in `file`.
        self.overflow_min = u64::MAX;
        self.refile_list(self.overflow.head);
    }

    /// Unlinks every entry of the list starting at `head` and files it
    /// again (due list or a lower level), one unit of work each.
    fn refile_list(&mut self, head: u32) {
        let mut i = head;
        while i != NIL {
            let next = self.nodes[i as usize].next;
            self.unlink(i);
            self.file(i);
            self.work += 1;
            i = next;
        }
    }
}

/// The level at which `deadline` (> `now`) is filed: the 6-bit digit of the
/// highest bit in which they differ. `LEVELS` or more means overflow.
fn level_for(now: u64, deadline: u64) -> usize {
    let diff = (now ^ deadline) | (SLOTS as u64 - 1);
    ((63 - diff.leading_zeros()) / BITS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn fires_at_the_deadline_never_before() {
        let mut w = TimerWheel::new(0);
        w.insert(100, 1);
        assert_eq!(w.advance(99, usize::MAX, |_, _, _| {}), 0);
        assert_eq!(w.advance(100, usize::MAX, |_, _, _| {}), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_beyond_the_top_level_and_at_the_end_of_time() {
        let mut w = TimerWheel::new(5);
        w.insert(u64::MAX, "max");
        w.insert(5 + (1 << 40), "far");
        w.insert(5 + (1 << 24) + 3, "just past the top level");
        let mut out = Vec::new();
        w.advance(5 + (1 << 24) + 2, usize::MAX, |_, _, v| out.push(v));
        assert!(out.is_empty());
        w.advance(5 + (1 << 40), usize::MAX, |_, _, v| out.push(v));
        assert_eq!(out, ["just past the top level", "far"]);
        w.advance(u64::MAX, usize::MAX, |_, _, v| out.push(v));
        assert_eq!(out.len(), 3);
        assert!(w.is_empty());
    }

    #[test]
    fn stale_keys_never_touch_a_reused_entry() {
        let mut w = TimerWheel::new(0);
        let a = w.insert(10, 'a');
        assert_eq!(w.cancel(a), Some('a'));
        let b = w.insert(20, 'b'); // reuses a's slab index
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(a, 1));
        assert_eq!(w.get(b), Some(&'b'));
    }

    #[test]
    fn advancing_a_huge_span_over_an_empty_or_far_wheel_does_no_work() {
        let mut w = TimerWheel::new(0);
        w.advance(1_000_000_000, usize::MAX, |_, _, _: ()| {});
        assert_eq!(w.work(), 0);
        for i in 0..10_000u64 {
            w.insert(1_000_000_000 + 10_000_000 + i, ());
        }
        let before = w.work();
        for t in 1..100 {
            w.advance(1_000_000_000 + t, usize::MAX, |_, _, _| {});
        }
        assert_eq!(
            w.work(),
            before,
            "far entries are not touched by small steps"
        );
    }

    #[test]
    fn work_is_proportional_to_entries_fired_and_cascaded() {
        let mut w = TimerWheel::new(0);
        for i in 0..1000u64 {
            w.insert(100_000 + i, ());
        }
        let n = w.advance(200_000, usize::MAX, |_, _, _| {});
        assert_eq!(n, 1000);
        // Each entry cascades at most once per level and fires once.
        assert!(w.work() <= 1000 * (LEVELS as u64 + 1), "work {}", w.work());
    }

    #[test]
    fn matches_a_btreemap_reference_on_random_operations() {
        for seed in 1..300u64 {
            let mut rng = xorshift(seed);
            let mut w = TimerWheel::new(rng() % 1000);
            let mut model: BTreeMap<(u64, u64), TimerKey> = BTreeMap::new();
            let mut keys = Vec::new();
            for id in 0..400u64 {
                let now = w.now();
                match rng() % 8 {
                    0..=2 => {
                        let d = match rng() % 4 {
                            0 => now + rng() % 64,
                            1 => now + rng() % 5000,
                            2 => now + rng() % (1 << 30),
                            _ => now.saturating_sub(rng() % 10),
                        };
                        let k = w.insert(d, id);
                        model.insert((d, id), k);
                        keys.push((k, d, id));
                    }
                    3 if !keys.is_empty() => {
                        let (k, d, id) = keys[(rng() % keys.len() as u64) as usize];
                        assert_eq!(w.cancel(k), model.remove(&(d, id)).map(|_| id));
                    }
                    4 if !keys.is_empty() => {
                        let pos = (rng() % keys.len() as u64) as usize;
                        let (k, d, id) = keys[pos];
                        let nd = now + rng() % 100_000;
                        let live = model.remove(&(d, id)).is_some();
                        assert_eq!(w.reschedule(k, nd), live);
                        if live {
                            model.insert((nd, id), k);
                            keys[pos].1 = nd;
                        }
                    }
                    _ => {
                        let to = now
                            + [rng() % 10, rng() % 10_000, rng() % (1 << 31)][(rng() % 3) as usize];
                        let max = if rng() % 2 == 0 {
                            usize::MAX
                        } else {
                            1 + (rng() % 5) as usize
                        };
                        let mut last = 0;
                        w.advance(to, max, |k, d, v| {
                            assert!(d <= to);
                            assert!(d >= last);
                            last = d;
                            assert_eq!(model.remove(&(d, v)), Some(k));
                        });
                        if max == usize::MAX {
                            assert!(
                                model.range(..(to + 1, 0)).next().is_none(),
                                "seed {seed}: lost"
                            );
                        }
                    }
                }
                assert_eq!(w.len(), model.len());
            }
            // Drain: everything fires exactly once.
            w.advance(u64::MAX, usize::MAX, |k, d, v| {
                assert_eq!(model.remove(&(d, v)), Some(k));
            });
            assert!(model.is_empty() && w.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn check_ops_accepts_arbitrary_bytes() {
        let mut rng = xorshift(7);
        for len in [0, 1, 5, 64, 1024] {
            for _ in 0..50 {
                let data: Vec<u8> = (0..len).map(|_| rng() as u8).collect();
                crate::fuzzing::wheel_ops(&data);
            }
        }
    }
}
