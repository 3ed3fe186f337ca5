//! What pooling saves, set-up free:
//!
//! ```text
//! cargo run --release --example demo
//! cargo run --release --example demo -- --rtt-ms 50 --requests 2000 --concurrency 20 --pool-size 10
//! cargo run --release --example demo -- --postgres 'host=127.0.0.1 user=postgres dbname=test'
//! cargo run --release --example demo -- --redis redis://127.0.0.1:6379
//! ```
//!
//! By default the demo starts an embedded loopback server that performs a
//! real TLS handshake (self-signed certificate made at start) and charges a
//! simulated network round-trip time: a connection setup costs 4 RTTs (TCP,
//! TLS, two for authentication), a request 1 (see `sim.rs`). It sends the
//! same requests twice, `--concurrency` at a time: once opening a connection
//! per request, once through a `latchless` pool of `--pool-size`; then it
//! prints connection setups, the time spent in setups (summed over tasks,
//! and as wall time), total time, requests/s and acquire-wait percentiles
//! side by side, and the two ratios.
//!
//! With `--postgres URL` or `--redis URL` the same comparison runs against
//! that server instead (`SELECT 1` or `PING` per request). Passwords in
//! those URLs are never printed.

mod compare;
mod real;
mod redact;
mod sim;
mod table;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use compare::{DemoError, RunConfig, Workload};

/// Default simulated RTT: a 1000-request run takes about 20 s on two cores.
const DEFAULT_RTT_MS: u64 = 25;

/// The modes, listed under the options in `--help`.
const MODES: &str = "\
Modes:
  (default)       an embedded loopback server with a real TLS handshake and a
                  simulated round-trip time (--rtt-ms): setup 4 RTTs, request 1
  --postgres URL  a PostgreSQL server, `SELECT 1` per request
  --redis URL     a Redis server, `PING` per request
  --postgres and --redis together run one comparison after the other.

Each comparison sends --requests requests, --concurrency at a time, first
opening a connection per request, then through a latchless pool of
--pool-size connections, and prints both side by side.";

/// What pooling saves: the same requests sent with a new connection each,
/// then through a latchless pool, timed side by side.
#[derive(Parser, Debug)]
#[command(name = "demo", version, long_about = None, after_help = MODES)]
struct Args {
    /// Simulated network round-trip time of the embedded server, in ms
    /// [default: 25]. A setup costs 4 RTTs, a request 1.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    rtt_ms: Option<u64>,

    /// Requests sent in each phase.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,

    /// Requests in flight at once (tasks), in each phase.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,

    /// The pool's `max_size`.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pool_size: u64,

    /// Run against this PostgreSQL server instead (`SELECT 1` per request),
    /// e.g. 'host=127.0.0.1 user=postgres dbname=test' or postgres://...
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,

    /// Run against this Redis server instead (`PING` per request),
    /// e.g. redis://127.0.0.1:6379
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Bad URLs are usage errors: say so before starting anything.
    let pg = match args
        .postgres
        .as_deref()
        .map(real::PgDemoManager::parse)
        .transpose()
    {
        Ok(pg) => pg,
        Err(e) => return usage_error(e),
    };
    let redis = match args
        .redis
        .as_deref()
        .map(real::RedisDemoManager::parse)
        .transpose()
    {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return runtime_error(format!("tokio runtime: {e}").into()),
    };
    match runtime.block_on(run(&args, pg, redis)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => runtime_error(e),
    }
}

fn usage_error(e: DemoError) -> ExitCode {
    eprintln!("error: {e}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

fn runtime_error(e: DemoError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

async fn run(
    args: &Args,
    pg: Option<real::PgDemoManager>,
    redis: Option<real::RedisDemoManager>,
) -> Result<(), DemoError> {
    let cfg = RunConfig {
        requests: args.requests,
        concurrency: args.concurrency,
        pool_size: usize::try_from(args.pool_size)?,
        progress: true,
    };
    let started = Instant::now();
    let real = pg.is_some() || redis.is_some();
    if real && args.rtt_ms.is_some() {
        eprintln!("note: --rtt-ms applies to the embedded server only; ignored here\n");
    }
    if let Some(pg) = pg {
        let url = redact::redact(args.postgres.as_deref().unwrap_or(""));
        let target = format!("PostgreSQL ({url})");
        run_one(
            pg,
            &target,
            "no simulated RTT: the real network and server",
            cfg,
        )
        .await?;
    }
    if let Some(redis) = redis {
        let url = redact::redact(args.redis.as_deref().unwrap_or(""));
        let target = format!("Redis ({url})");
        run_one(
            redis,
            &target,
            "no simulated RTT: the real network and server",
            cfg,
        )
        .await?;
    }
    if !real {
        let rtt = Duration::from_millis(args.rtt_ms.unwrap_or(DEFAULT_RTT_MS));
        let server = sim::SimServer::start(rtt).await?;
        let target = "the embedded loopback server (real TLS 1.3 handshake, self-signed cert)";
        let cost = format!(
            "simulated RTT {} ms: setup = TCP 1 + TLS 1 + auth 2 = {} RTTs, request = 1 RTT",
            rtt.as_millis(),
            sim::SETUP_RTTS
        );
        run_one(server.manager(), target, &cost, cfg).await?;
    }
    println!("demo wall time: {}", table::fmt_dur(started.elapsed()));
    Ok(())
}

async fn run_one<W: Workload>(
    workload: W,
    target: &str,
    cost: &str,
    cfg: RunConfig,
) -> Result<(), DemoError> {
    println!(
        "latchless demo: {} requests ({} each), {} at a time, pool of {}",
        cfg.requests,
        workload.request_name(),
        cfg.concurrency,
        cfg.pool_size
    );
    println!("against {target}");
    println!("{cost}\n");
    // One connect first, so that an unreachable server is one clear error.
    drop(
        workload
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {}", compare::chain(&e)))?,
    );
    let comparison = compare::run(workload, cfg).await?;
    println!("\n{}", table::render(&comparison));
    Ok(())
}
