//! latchless's benches and their report.
//!
//! The benches (`benches/`, run with `cargo bench -p latchless-benches`)
//! measure latchless alone (`acquire`, `lifecycle`) and against its peers
//! (`peers`, `e2e_tcp`, `tail`). This library holds what the tail-latency
//! harness (`benches/tail.rs`) and the report generator
//! (`src/bin/bench-report.rs`, module [`report`]) share: the tail
//! harness's result rows ([`TailRow`], [`TailReport`]) with their JSON
//! form, and where the results live ([`target_dir`], [`results_dir`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod report;

/// The workspace root (the latchless repository), where `Cargo.lock`,
/// `BENCHMARKS.md` and `docs/` are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace root")
        .to_path_buf()
}

/// Cargo's target folder: `$CARGO_TARGET_DIR` (a relative one taken from
/// the workspace root, where `scripts/bench-all.sh` runs cargo), else
/// `target/` in the workspace root. The benches run with their package
/// root (`benches/`) as working directory, so a bare `target` would
/// point elsewhere.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Where the benches write their machine-readable results and notes
/// (`tail.json`, `skipped-<group>.txt`) and `scripts/bench-all.sh` its
/// `env.txt`: `bench-results/` in [`target_dir`]. Created if missing.
pub fn results_dir() -> PathBuf {
    let dir = target_dir().join("bench-results");
    std::fs::create_dir_all(&dir).expect("create the bench-results folder");
    dir
}

/// How many runtime workers the tail harness used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// A fixed count (`--workers N`).
    Count(usize),
    /// As many as tasks in each configuration (`--workers match`); JSON
    /// `"match"`.
    Match,
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Count(n) => write!(f, "{n}"),
            Workers::Match => f.write_str("match"),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Count(n) => s.serialize_u64(*n as u64),
            Workers::Match => s.serialize_str("match"),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Workers::Count(n)),
            Raw::Name(s) if s == "match" => Ok(Workers::Match),
            Raw::Name(s) => Err(serde::de::Error::custom(format!(
                "workers: expected a count or \"match\", got {s:?}"
            ))),
        }
    }
}

/// Acquire-latency percentiles of one configuration, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// One configuration's result in the tail harness (`benches/tail.rs`):
/// a pool, driven by `threads` tasks or OS threads, at one pool size.
/// A row of `tail.json`'s `rows`, which the report turns into tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TailRow {
    /// The pool's name, as in the bench ids and tables (`"latchless"`,
    /// `"bb8"`, `"semaphore floor"`, …).
    pub pool: String,
    /// `"tasks"` (Tokio tasks) or `"threads"` (OS threads).
    pub mode: String,
    /// Tasks (or threads) acquiring at once.
    pub threads: usize,
    /// Runtime workers (for `"threads"` rows: the thread count).
    pub workers: usize,
    /// `"below"` (pool of tasks / 2: tasks wait) or `"above"` (2 x tasks).
    pub size_class: String,
    /// The pool's `max_size`.
    pub size: usize,
    /// The watchdog saw no progress for the stall limit: the run of this
    /// configuration was abandoned and there are no percentiles.
    pub stalled: bool,
    /// Timed acquires (when stalled: acquires done before the stall).
    pub count: u64,
    /// The percentiles; `None` when stalled.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// The tail harness's whole output (`target/bench-results/tail.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TailReport {
    /// Timed acquires per task (`--ops`).
    pub ops_per_task: u64,
    /// Runtime workers (`--workers`).
    pub workers: Workers,
    /// The watchdog's limit (`--stall-secs`).
    pub stall_secs: u64,
    /// One per configuration, in the order run.
    pub rows: Vec<TailRow>,
}

impl TailReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serialisable");
        s.push('\n');
        s
    }

    /// Parse `tail.json`.
    pub fn from_json(text: &str) -> serde_json::Result<TailReport> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_report_round_trips_and_reads_the_old_layout() {
        // The layout benches/tail.rs wrote before the shared type.
        let old = r#"{
  "ops_per_task": 2000,
  "workers": "match",
  "stall_secs": 2,
  "rows": [
    {"pool": "latchless", "mode": "tasks", "threads": 2, "workers": 2, "size_class": "below", "size": 1, "stalled": false, "count": 4000, "p50": 120, "p99": 900, "p999": 4000, "max": 9000, "mean": 150.5},
    {"pool": "qp", "mode": "tasks", "threads": 2, "workers": 2, "size_class": "below", "size": 1, "stalled": true, "count": 17}
  ]
}"#;
        let report = TailReport::from_json(old).unwrap();
        assert_eq!(report.workers, Workers::Match);
        assert_eq!(report.rows[0].latency.unwrap().p999, 4000);
        assert!(report.rows[1].stalled);
        assert_eq!(report.rows[1].latency, None);
        let again = TailReport::from_json(&report.to_json()).unwrap();
        assert_eq!(again, report);
        assert!(!report.to_json().contains("\"p50\": null"));
        let fixed = TailReport {
            workers: Workers::Count(2),
            ..report
        };
        assert!(fixed.to_json().contains("\"workers\": 2"));
    }
}
