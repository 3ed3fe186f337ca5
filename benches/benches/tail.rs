//! Tail latency of acquire under contention: every acquire's latency
//! (from the call to holding the connection) goes into an HDR histogram;
//! p50, p99, p99.9 and max per pool, thread count and pool size.
//!
//! Each of T Tokio tasks on a `--workers`-worker runtime (default 2) does
//! `--ops` cycles of: read the clock, acquire, read the clock, record,
//! `yield_now()` while holding, release. The pool holds T / 2 connections
//! ("below": tasks wait for each other; at least 1) or 2 x T ("above":
//! nobody waits), the same trivial managers as `benches/peers.rs`
//! (`benches/common/mod.rs` in this crate). r2d2, latchless `try_get` (retried with a
//! thread yield while `None`) and the bare `ArrayQueue` floor run the same
//! loop on T OS threads. The reference entries of `benches/peers.rs`
//! ("latchless no-deadline", "semaphore floor", "yield floor"; not peers)
//! run with the Tokio pools. A warm-up pass of `--ops / 10` cycles precedes
//! each measured pass; a watchdog reports a pool that completes no
//! acquire for `--stall-secs` as stalled instead of hanging the run.
//!
//! ```text
//! cargo bench -p latchless-benches --bench tail                                          # 1,2,4,8 tasks
//! cargo bench -p latchless-benches --bench tail -- --threads 1,2,4,8,16 --workers match  # more cores
//! cargo bench -p latchless-benches --bench tail -- --threads 8 --ops 5000 --sizes below --pools latchless,bb8
//! ```
//!
//! Options: `--threads LIST` (default 1,2,4,8), `--ops N` per task
//! (default 20000), `--workers N|match` (runtime workers; `match` = as
//! many as tasks; default 2), `--sizes below,above`, `--pools LIST` (names
//! as printed), `--stall-secs S` (default 2), `--json PATH` (default
//! `target/bench-results/tail.json`). Prints a table (nanoseconds) and
//! writes the JSON (`latchless_benches::TailReport`) that `bench-report` reads.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    AsyncPool, Bb8, Deadpool, Floor, Latchless, LatchlessNoDeadline, LatchlessTryGet, Mobc, Qp,
    R2d2, SemaphoreFloor, SyncPool, YieldFloor,
};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use latchless_benches::{Latency, TailReport, TailRow, Workers};

struct Args {
    threads: Vec<usize>,
    ops: usize,
    /// `None`: as many workers as tasks.
    workers: Option<usize>,
    sizes: Vec<String>,
    pools: Option<Vec<String>>,
    stall: Duration,
    json: PathBuf,
}

fn usage(msg: &str) -> ! {
    eprintln!("tail: {msg}");
    eprintln!(
        "usage: cargo bench -p latchless-benches --bench tail -- [--threads 1,2,4,8] [--ops N] \
         [--workers N|match] [--sizes below,above] [--pools a,b] [--stall-secs S] [--json PATH]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        threads: vec![1, 2, 4, 8],
        ops: 20_000,
        workers: Some(2),
        sizes: vec!["below".into(), "above".into()],
        pools: None,
        stall: Duration::from_secs(2),
        json: latchless_benches::results_dir().join("tail.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: &str| -> usize {
            v.trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage(&format!("{flag}: not a positive integer: {v}")))
        };
        match flag.as_str() {
            "--threads" => args.threads = value().split(',').map(number).collect(),
            "--ops" => args.ops = number(&value()),
            "--workers" => {
                let v = value();
                args.workers = if v == "match" { None } else { Some(number(&v)) };
            }
            "--sizes" => {
                args.sizes = value().split(',').map(str::to_owned).collect();
                if let Some(bad) = args.sizes.iter().find(|s| *s != "below" && *s != "above") {
                    usage(&format!("--sizes: {bad} is neither below nor above"));
                }
            }
            "--pools" => args.pools = Some(value().split(',').map(str::to_owned).collect()),
            "--stall-secs" => args.stall = Duration::from_secs(number(&value()) as u64),
            "--json" => args.json = PathBuf::from(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

/// One configuration's result as the report reads it; `outcome` is
/// `Err(acquires done)` when the watchdog saw no progress.
fn row(
    pool: &str,
    mode: &str,
    (threads, workers): (usize, usize),
    (size_class, size): (String, usize),
    outcome: Result<Histogram<u64>, u64>,
) -> TailRow {
    let (stalled, count, latency) = match outcome {
        Ok(h) => (
            false,
            h.len(),
            Some(Latency {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: h.mean(),
            }),
        ),
        Err(done) => (true, done, None),
    };
    TailRow {
        pool: pool.to_owned(),
        mode: mode.to_owned(),
        threads,
        workers,
        size_class,
        size,
        stalled,
        count,
        latency,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn elapsed_ns(since: Instant) -> u64 {
    (since.elapsed().as_nanos() as u64).max(1)
}

/// T tasks doing `ops` timed holding cycles each; `Err(done)` if no task
/// completed an acquire for `stall`.
async fn run_tasks<P: AsyncPool>(
    pool: &P,
    tasks: usize,
    ops: usize,
    stall: Duration,
) -> Result<Histogram<u64>, u64> {
    let progress: Arc<Vec<CachePadded<AtomicU64>>> = Arc::new(
        (0..tasks)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
    );
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let pool = pool.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                for n in 1..=ops as u64 {
                    let start = Instant::now();
                    let conn = pool.acquire().await;
                    h.record(elapsed_ns(start)).expect("within bounds");
                    black_box(*conn);
                    tokio::task::yield_now().await;
                    drop(conn);
                    progress[i].store(n, Ordering::Relaxed);
                }
                h
            })
        })
        .collect();
    let done = || {
        progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (mut last, mut last_change) = (0, Instant::now());
    while !handles.iter().all(|h| h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = done();
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() >= stall {
            for h in &handles {
                h.abort();
            }
            return Err(now);
        }
    }
    let mut all = histogram();
    for h in handles {
        all.add(h.await.expect("bench task")).expect("same bounds");
    }
    Ok(all)
}

fn run_async<P: AsyncPool>(args: &Args, rows: &mut Vec<TailRow>) {
    if !selected(args, P::NAME) {
        return;
    }
    for &threads in &args.threads {
        let workers = args.workers.unwrap_or(threads);
        let rt = common::runtime(workers);
        for (size_class, size) in sizes(args, threads) {
            let pool: P = common::build_warm(&rt, size);
            let warm = rt.block_on(run_tasks(
                &pool,
                threads,
                (args.ops / 10).max(1),
                args.stall,
            ));
            let outcome = match warm {
                Ok(_) => rt.block_on(run_tasks(&pool, threads, args.ops, args.stall)),
                Err(done) => Err(done),
            };
            let row = row(
                P::NAME,
                "tasks",
                (threads, workers),
                (size_class, size),
                outcome,
            );
            print_row(&row);
            rows.push(row);
        }
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

fn run_threads<P: SyncPool>(args: &Args, rows: &mut Vec<TailRow>) {
    if !selected(args, P::NAME) {
        return;
    }
    for &threads in &args.threads {
        for (size_class, size) in sizes(args, threads) {
            let pool = P::build(size);
            let run = |ops: usize| {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                let mut h = histogram();
                                for _ in 0..ops {
                                    let start = Instant::now();
                                    let conn = pool.acquire();
                                    h.record(elapsed_ns(start)).expect("within bounds");
                                    black_box(*conn);
                                    std::thread::yield_now();
                                    drop(conn);
                                }
                                h
                            })
                        })
                        .collect();
                    let mut all = histogram();
                    for h in handles {
                        all.add(h.join().expect("bench thread"))
                            .expect("same bounds");
                    }
                    all
                })
            };
            run((args.ops / 10).max(1));
            let outcome = Ok(run(args.ops));
            let row = row(
                P::NAME,
                "threads",
                (threads, threads),
                (size_class, size),
                outcome,
            );
            print_row(&row);
            rows.push(row);
        }
    }
}

fn selected(args: &Args, name: &str) -> bool {
    args.pools
        .as_ref()
        .is_none_or(|pools| pools.iter().any(|p| p == name))
}

fn sizes(args: &Args, threads: usize) -> Vec<(String, usize)> {
    args.sizes
        .iter()
        .map(|class| {
            let size = if class == "below" {
                common::size_below(threads)
            } else {
                common::size_above(threads)
            };
            (class.clone(), size)
        })
        .collect()
}

fn print_header() {
    println!(
        "{:<22} {:<7} {:>3} {:>4} {:>7} {:>10} {:>9} {:>9} {:>9} {:>11}",
        "pool", "mode", "T", "size", "size", "count", "p50 ns", "p99 ns", "p99.9 ns", "max ns"
    );
}

fn print_row(r: &TailRow) {
    let head = format!(
        "{:<22} {:<7} {:>3} {:>4} {:>7}",
        r.pool, r.mode, r.threads, r.size, r.size_class
    );
    match &r.latency {
        Some(l) if !r.stalled => println!(
            "{head} {:>10} {:>9} {:>9} {:>9} {:>11}",
            r.count, l.p50, l.p99, l.p999, l.max
        ),
        _ => println!(
            "{head} STALLED: no acquire completed for the stall limit after {} acquires",
            r.count
        ),
    }
}

fn main() {
    let args = parse_args();
    let mut rows = Vec::new();
    print_header();
    run_async::<Latchless>(&args, &mut rows);
    run_async::<Deadpool>(&args, &mut rows);
    run_async::<Bb8>(&args, &mut rows);
    run_async::<Mobc>(&args, &mut rows);
    run_async::<Qp>(&args, &mut rows);
    run_async::<LatchlessNoDeadline>(&args, &mut rows);
    run_async::<SemaphoreFloor>(&args, &mut rows);
    run_async::<YieldFloor>(&args, &mut rows);
    run_threads::<LatchlessTryGet>(&args, &mut rows);
    run_threads::<R2d2>(&args, &mut rows);
    run_threads::<Floor>(&args, &mut rows);
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).expect("create the JSON's folder");
    }
    let report = TailReport {
        ops_per_task: args.ops as u64,
        workers: args.workers.map_or(Workers::Match, Workers::Count),
        stall_secs: args.stall.as_secs(),
        rows,
    };
    std::fs::write(&args.json, report.to_json()).expect("write the JSON");
    println!("wrote {}", args.json.display());
}
