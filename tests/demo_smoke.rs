//! The demo (`cargo run --release --example demo`) runs: its core, in
//! process, with tiny parameters against the embedded TLS server.

#[allow(dead_code)]
#[path = "../examples/demo/compare.rs"]
mod compare;
#[allow(dead_code)]
#[path = "../examples/demo/redact.rs"]
mod redact;
#[allow(dead_code)]
#[path = "../examples/demo/sim.rs"]
mod sim;
#[allow(dead_code)]
#[path = "../examples/demo/table.rs"]
mod table;

use std::time::{Duration, Instant};

use compare::{RunConfig, percentiles, union_len};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_the_pool_saves_setups() {
    let server = sim::SimServer::start(Duration::from_millis(1))
        .await
        .expect("the embedded server starts");
    let cfg = RunConfig {
        requests: 20,
        concurrency: 4,
        pool_size: 2,
        progress: false,
    };
    let c = tokio::time::timeout(Duration::from_secs(30), compare::run(server.manager(), cfg))
        .await
        .expect("the demo's run finishes")
        .expect("the demo's run succeeds");

    // What the server saw.
    assert!(c.unpooled.setups_seen_by_server && c.pooled.setups_seen_by_server);
    assert_eq!(
        c.unpooled.setups, 20,
        "one setup per request without a pool"
    );
    assert!(
        (1..=2).contains(&c.pooled.setups),
        "at most pool-size setups with the pool, got {}",
        c.pooled.setups
    );
    assert_eq!(c.pooled.setups, c.pool_opened);
    assert_eq!(c.unpooled.client_setups, 20);

    // Setup time summed over tasks may exceed the phase; its wall time
    // may not, nor the summed time.
    for p in [&c.unpooled, &c.pooled] {
        assert!(p.setup_wall <= p.total, "{p:?}");
        assert!(p.setup_wall <= p.setup_summed, "{p:?}");
        assert!(!p.setup_wall.is_zero(), "{p:?}");
    }

    // The ratio, and that the table prints it.
    let ratio = c.setup_ratio();
    assert!(ratio >= 1.0, "setup overhead ratio {ratio}");
    let out = table::render(&c);
    assert!(out.contains("connection setups"), "{out}");
    assert!(
        out.contains(&format!("setup time (2): {} less", table::fmt_ratio(ratio))),
        "{out}"
    );
    assert!(out.contains("acquire wait p99.9"), "{out}");
}

#[test]
fn percentiles_are_nearest_rank() {
    let ms = Duration::from_millis;
    assert_eq!(percentiles(&mut []), compare::Percentiles::default());
    let mut one = [ms(7)];
    let p = percentiles(&mut one);
    assert_eq!((p.p50, p.p99, p.p999), (ms(7), ms(7), ms(7)));
    let mut thousand: Vec<Duration> = (1..=1000).rev().map(ms).collect();
    let p = percentiles(&mut thousand);
    assert_eq!((p.p50, p.p99, p.p999), (ms(500), ms(990), ms(999)));
}

#[test]
fn union_len_counts_overlaps_once() {
    let t = Instant::now();
    let at = |ms| t + Duration::from_millis(ms);
    assert_eq!(union_len(&mut []), Duration::ZERO);
    // 0-10 and 5-20 overlap (20 ms), 30-40 stands alone (10 ms), 32-35
    // lies inside it; given out of order.
    let mut spans = [
        (at(30), at(40)),
        (at(5), at(20)),
        (at(0), at(10)),
        (at(32), at(35)),
    ];
    assert_eq!(union_len(&mut spans), Duration::from_millis(30));
}
