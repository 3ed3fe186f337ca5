//! Replays every checked-in fuzz corpus and regression file through the
//! same check functions the cargo-fuzz targets call, so `cargo test` on
//! stable exercises the targets without nightly. (The `wheel` corpus is
//! replayed by the crate's own unit tests, `src/fuzzing.rs`: the wheel is
//! private.)

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let name = f.display().to_string();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: {msg}");
        }
    }
    eprintln!("{target}: replayed {} files", files.len());
}

#[test]
fn pool_ops_corpus_replays_clean() {
    replay("pool_ops", latchless_model::check_pool_ops);
}

#[test]
fn builder_corpus_replays_clean() {
    replay("builder", latchless_model::check_builder);
}

/// Random inputs beyond the corpus, deterministic per run.
#[test]
fn pool_ops_survive_random_inputs() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for len in [0usize, 1, 7, 16, 64, 256] {
        for _ in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            latchless_model::check_pool_ops(&data);
            latchless_model::check_builder(&data);
        }
    }
}
