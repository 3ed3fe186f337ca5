//! The fuzz targets' entry points into private modules: today the timer
//! wheel's differential check ([`wheel_ops`], against a `BTreeMap`
//! reference). Compiled only for the fuzz build (`--cfg fuzzing`, which
//! cargo-fuzz sets) and for this crate's unit tests, which replay the
//! checked-in corpus through it (`cfg(any(test, fuzzing))` in `lib.rs`,
//! hidden from the docs); not part of the API, and nothing in the shipped
//! modules calls it. The pool's and the builder's fuzz targets need no
//! entry here: they drive the public API against the reference model in
//! `model/`.

use crate::wheel::{TimerKey, TimerWheel};

/// The differential check of the `wheel` fuzz target (and of the corpus
/// replay below):
/// interprets `data` as a sequence of operations on a `TimerWheel<u64>` and
/// on a `BTreeMap` reference, and panics on any divergence (an entry fired
/// early, late, twice or never, or out of deadline order).
pub fn wheel_ops(data: &[u8]) {
    use std::collections::BTreeMap;
    let mut wheel = TimerWheel::new(0);
    // (deadline, id) -> key; ids are insertion numbers.
    let mut model: BTreeMap<(u64, u64), TimerKey> = BTreeMap::new();
    let mut keys: Vec<(TimerKey, u64, u64)> = Vec::new(); // (key, deadline, id) incl. dead ones
    let mut next_id = 0u64;
    let mut rest = data;
    // Reads `n` bytes big-endian (zeros past the end).
    let mut take = |n: usize| -> u64 {
        (0..n).fold(0u64, |acc, _| {
            let b = rest.first().copied().unwrap_or(0);
            rest = rest.get(1..).unwrap_or(&[]);
            (acc << 8) | u64::from(b)
        })
    };
    for _ in 0..data.len() {
        let op = take(1);
        let now = wheel.now();
        match op % 6 {
            0 | 1 => {
                // Insert near, far, or very far.
                let delta = match take(1) % 4 {
                    0 => take(1),
                    1 => take(2),
                    2 => take(4),
                    _ => take(8),
                };
                let deadline = if op % 2 == 0 {
                    now.saturating_add(delta)
                } else {
                    now.saturating_sub(delta % 8)
                };
                let id = next_id;
                next_id += 1;
                let key = wheel.insert(deadline, id);
                model.insert((deadline, id), key);
                keys.push((key, deadline, id));
            }
            2 => {
                if let Some(&(key, deadline, id)) = pick(&keys, take(2)) {
                    let expected = model.remove(&(deadline, id)).map(|_| id);
                    assert_eq!(wheel.cancel(key), expected, "cancel of {id}");
                }
            }
            3 => {
                let choice = take(2);
                let new = now.saturating_add(take(3));
                if let Some(pos) = pick_index(keys.len(), choice) {
                    let (key, deadline, id) = keys[pos];
                    let live = model.remove(&(deadline, id)).is_some();
                    assert_eq!(wheel.reschedule(key, new), live, "reschedule of {id}");
                    if live {
                        model.insert((new, id), key);
                        keys[pos].1 = new;
                    }
                }
            }
            _ => {
                let step = match take(1) % 3 {
                    0 => take(1),
                    1 => take(3),
                    _ => take(6),
                };
                let to = now.saturating_add(step);
                let max = match take(1) % 3 {
                    0 => usize::MAX,
                    m => m as usize,
                };
                let mut fired = Vec::new();
                let n = wheel.advance(to, max, |k, d, v| fired.push((k, d, v)));
                assert_eq!(n, fired.len());
                let mut last = 0;
                for (k, d, id) in fired {
                    assert!(d <= to, "entry {id} fired early: deadline {d}, now {to}");
                    assert!(d >= last, "out of order");
                    last = d;
                    assert_eq!(
                        model.remove(&(d, id)),
                        Some(k),
                        "entry {id} fired twice or unknown"
                    );
                }
                // Everything due that did not fire must be what `max` held back.
                let still_due = model.range(..(to.saturating_add(1), 0)).count();
                if max == usize::MAX {
                    assert_eq!(still_due, 0, "a due entry was lost");
                }
            }
        }
        assert_eq!(wheel.len(), model.len());
    }
}

fn pick<T>(v: &[T], choice: u64) -> Option<&T> {
    pick_index(v.len(), choice).map(|i| &v[i])
}

fn pick_index(len: usize, choice: u64) -> Option<usize> {
    (len > 0).then(|| (choice % len as u64) as usize)
}

#[cfg(test)]
mod tests {
    /// Every checked-in `wheel` corpus file (when the source tree has them:
    /// a packaged crate ships none), then deterministic random inputs.
    #[test]
    fn the_wheel_corpus_and_random_inputs_replay_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wheel");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            files.sort();
            assert!(!files.is_empty(), "corpus {} is empty", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap();
                if std::panic::catch_unwind(|| super::wheel_ops(&data)).is_err() {
                    panic!("{} fails", f.display());
                }
            }
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in [0usize, 1, 7, 16, 64, 256] {
            for _ in 0..if cfg!(miri) { 2 } else { 100 } {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                super::wheel_ops(&data);
            }
        }
    }
}
