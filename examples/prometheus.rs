//! A pool under a short scripted load, exported as Prometheus text.
//!
//! ```text
//! cargo run --release --example prometheus --features metrics
//! ```
//!
//! Sixteen tasks share a pool of four connections for about a second,
//! each holding its connection 2–8 ms (connects take 5 ms), so most `get`s
//! wait. The pool records into its own atomics; `Pool::export_metrics`
//! hands everything to the `metrics` facade once, before the render, and
//! the Prometheus recorder (metrics-exporter-prometheus, no HTTP server)
//! renders the text printed to stdout: wait-time quantiles
//! (`latchless_acquire_wait_seconds{quantile=…}`), close reasons, alerts,
//! the sizing recommendation. In a service, call `export_metrics` before
//! each scrape (or on a timer) and serve `handle.render()`.

use std::time::Duration;

use latchless::{Manager, Pool};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Connections that take 5 ms to open.
struct Slow;

impl Manager for Slow {
    type Connection = u64;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<u64, std::io::Error> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(0)
    }
}

#[tokio::main]
async fn main() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other recorder is installed");
    let pool = Pool::builder(Slow)
        .name("example")
        .max_size(4)
        .wait_alert(Duration::from_millis(5))
        .build()
        .expect("valid settings");

    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                let mut conn = pool.get().await.expect("a connection");
                *conn += 1;
                let hold = 2 + (task * 7 + i * 3) % 7; // 2–8 ms
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("the task finished");
    }

    pool.export_metrics();
    print!("{}", handle.render());

    let m = pool.metrics();
    let w = &m.acquire_wait;
    eprintln!(
        "{} acquisitions: {} hits, {} waits, {} connects; wait p50 {:?} p99 {:?} max {:?}",
        w.count(),
        m.hits,
        m.waits,
        m.acquire_connects,
        Duration::from_nanos(w.p50()),
        Duration::from_nanos(w.p99()),
        Duration::from_nanos(w.max()),
    );
    eprintln!("health: {:?}", pool.health().alerts);
    eprintln!("sizing: {:?}", pool.sizing());
}
