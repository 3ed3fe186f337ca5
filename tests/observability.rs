//! Issue 13, observability: exact figures after scripted workloads, with
//! the pool's time on the mock clock (`Clock::mock`, `background(false)`,
//! `Pool::maintain`) and Tokio's time paused (connect and check delays,
//! wait times), so that every figure asserted is deterministic.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{mocked_quiet, ms, paused};
use latchless::{AlertKind, HistogramSnapshot, PoolError, Pooled, SizingVerdict, TimeoutKind};

/// `|read - exact| <= exact / 64`, the histogram's documented error.
fn close_to(read: u64, exact: u64) -> bool {
    (read as f64 - exact as f64).abs() <= exact as f64 * HistogramSnapshot::RELATIVE_ERROR
}

#[test]
fn fast_path_hits_count_as_zero_waits_and_slow_gets_as_measured() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(2));
    t.connect_delay_ms.store(20, SeqCst);
    paused().block_on(async {
        drop(pool.get().await.unwrap()); // connects: waits 20 ms
        for i in 0..99 {
            if i % 2 == 0 {
                drop(pool.try_get().unwrap());
            } else {
                drop(pool.get().await.unwrap());
            }
        }
    });
    let m = pool.metrics();
    assert_eq!(m.hits, 99);
    assert_eq!(m.acquire_connects, 1);
    assert_eq!(m.waits, 0);
    let w = &m.acquire_wait;
    assert_eq!(w.count(), 100);
    assert_eq!((w.p50(), w.p90(), w.p99()), (0, 0, 0));
    assert!(close_to(w.p999(), 20_000_000), "p99.9 {}", w.p999());
    assert!(close_to(w.max(), 20_000_000), "max {}", w.max());
    assert!(close_to(w.sum(), 20_000_000), "sum {}", w.sum());
    assert_eq!(m.connect_time.count(), 1);
    assert!(close_to(m.connect_time.p50(), 20_000_000));
}

#[test]
fn a_get_that_waited_records_its_wait() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(1));
    paused().block_on(async {
        let held = pool.get().await.unwrap();
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.get().await.map(drop) });
        t.pass(ms(30)).await;
        drop(held);
        waiter.await.unwrap().unwrap();
    });
    let m = pool.metrics();
    assert_eq!((m.waits, m.hits, m.acquire_connects), (1, 0, 1));
    assert_eq!(m.acquire_wait.count(), 2);
    assert!(
        close_to(m.acquire_wait.max(), 30_000_000),
        "{:?}",
        m.acquire_wait
    );
}

#[test]
fn hold_time_is_measured_on_the_pool_clock() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(1));
    paused().block_on(async {
        let c = pool.get().await.unwrap();
        mock.advance(ms(250));
        pool.maintain(); // refreshes the cached reading the release uses
        drop(c);
        drop(pool.try_get().unwrap()); // held for no time at all
    });
    let h = pool.metrics().hold_time;
    assert_eq!(h.count(), 2);
    assert_eq!(h.p50(), 0);
    assert!(close_to(h.max(), 250_000_000), "{h:?}");
    assert_eq!(h.sum(), 250_000_000);
}

#[test]
fn closes_are_counted_by_reason() {
    // Idle timeout.
    let (pool, _t, mock) =
        mocked_quiet(|b| b.max_size(4).idle_timeout(Some(Duration::from_secs(60))));
    paused().block_on(async {
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        drop((a, b));
        mock.advance(Duration::from_secs(61));
        pool.maintain();
    });
    let m = pool.metrics();
    assert_eq!((m.closed_idle, m.closed_lifetime, m.closed), (2, 0, 2));

    // Lifetime, broken, pool closed.
    let (pool, _t, mock) =
        mocked_quiet(|b| b.max_size(4).max_lifetime(Some(Duration::from_secs(100))));
    paused().block_on(async {
        drop(pool.get().await.unwrap());
        mock.advance(Duration::from_secs(101));
        pool.maintain();
        let mut c = pool.get().await.unwrap();
        Pooled::mark_broken(&mut c);
        drop(c);
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        drop((a, b));
        pool.close().await;
    });
    let m = pool.metrics();
    assert_eq!(m.closed_lifetime, 1);
    assert_eq!(m.broken, 1);
    assert_eq!(m.closed_pool_closed, 2);
    assert_eq!(m.closed_idle, 0);
    assert_eq!(
        m.closed,
        m.closed_idle
            + m.closed_lifetime
            + m.broken
            + m.check_failures
            + m.closed_check_cancelled
            + m.closed_pool_closed
    );
}

#[test]
fn timeouts_are_counted_by_kind() {
    let (pool, t, mock) = mocked_quiet(|b| b.max_size(1).check_after_idle(Some(ms(100))));
    paused().block_on(async {
        // Waiting: the one place is held.
        let held = pool.get().await.unwrap();
        let e = pool.get_timeout(ms(50)).await.unwrap_err();
        assert!(
            matches!(e, PoolError::Timeout(TimeoutKind::Waiting)),
            "{e:?}"
        );
        drop(held);
        // Checking: the idle connection is due for a check that hangs.
        mock.advance(ms(200));
        t.check_delay_ms.store(1_000, SeqCst);
        let e = pool.get_timeout(ms(50)).await.unwrap_err();
        assert!(
            matches!(e, PoolError::Timeout(TimeoutKind::Checking)),
            "{e:?}"
        );
    });
    let (pool2, t2, _mock2) = mocked_quiet(|b| b.max_size(1));
    t2.connect_delay_ms.store(1_000, SeqCst);
    paused().block_on(async {
        // Connecting.
        let e = pool2.get_timeout(ms(50)).await.unwrap_err();
        assert!(
            matches!(e, PoolError::Timeout(TimeoutKind::Connecting)),
            "{e:?}"
        );
    });
    let m = pool.metrics();
    assert_eq!(
        (
            m.timeouts,
            m.timeouts_waiting,
            m.timeouts_checking,
            m.timeouts_connecting
        ),
        (2, 1, 1, 0)
    );
    let m2 = pool2.metrics();
    assert_eq!((m2.timeouts, m2.timeouts_connecting), (1, 1));
}

#[test]
fn exhaustion_alert_fires_on_a_timeout_and_clears_after_the_window() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(2));
    paused().block_on(async {
        assert!(pool.health().is_healthy(), "the baseline");
        let a = pool.get().await.unwrap();
        let b = pool.get().await.unwrap();
        assert!(pool.get_timeout(ms(10)).await.is_err());
        drop((a, b));
    });
    let h = pool.health();
    let alert = h.alert(AlertKind::Exhaustion).expect("fires");
    assert_eq!(alert.value, 1.0);
    assert_eq!(h.alerts.len(), 1, "{h:?}");
    mock.advance(Duration::from_secs(29));
    assert!(
        pool.health().alert(AlertKind::Exhaustion).is_some(),
        "in the window"
    );
    mock.advance(Duration::from_secs(2));
    assert!(pool.health().is_healthy(), "out of the window");
}

/// The exhaustion alert counts both ways a `get` fails for want of a
/// connection: a timeout, and a rejection at `max_waiters`.
#[test]
fn exhaustion_alert_counts_timeouts_and_gets_rejected_at_max_waiters() {
    let (pool, _t, _mock) = mocked_quiet(|b| b.max_size(1).max_waiters(Some(1)));
    paused().block_on(async {
        let a = pool.get().await.unwrap();
        assert!(matches!(
            pool.get_timeout(ms(10)).await,
            Err(PoolError::Timeout(_))
        ));
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get_timeout(Duration::from_secs(3600)).await.is_ok() }
        });
        while pool.state().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.get_timeout(ms(10)).await,
            Err(PoolError::Exhausted)
        ));
        drop(a);
        assert!(waiter.await.unwrap(), "the waiter was served");
    });
    let h = pool.health();
    let alert = h.alert(AlertKind::Exhaustion).expect("fires");
    assert_eq!(alert.value, 2.0, "one timeout and one rejection: {h:?}");
}

#[test]
fn utilization_alert_fires_after_30s_above_80_percent_and_clears() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(5));
    paused().block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.unwrap());
        }
        // 4 / 5 = 0.8: not above the threshold.
        assert!(pool.health().is_healthy());
        mock.advance(Duration::from_secs(31));
        assert!(pool.health().is_healthy(), "0.8 is not above 0.8");
        held.push(pool.get().await.unwrap());
        assert!(pool.health().is_healthy(), "the run starts");
        mock.advance(Duration::from_secs(29));
        assert!(
            pool.health().alert(AlertKind::Utilization).is_none(),
            "29 s"
        );
        mock.advance(Duration::from_secs(1));
        let h = pool.health();
        let a = h.alert(AlertKind::Utilization).expect("30 s above");
        assert_eq!((a.value, a.threshold), (1.0, 0.8));
        held.pop();
        assert!(
            pool.health().alert(AlertKind::Utilization).is_none(),
            "back to 0.8"
        );
    });
}

/// Maintenance samples the pool once a second on its own: a pool in full
/// use for 31 s of passes, whose health nobody asked for meanwhile, has
/// the utilization alert firing at the first `health()`.
#[test]
fn maintenance_samples_utilization_without_health_being_called() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(2));
    paused().block_on(async {
        let held = (pool.get().await.unwrap(), pool.get().await.unwrap());
        for _ in 0..31 {
            mock.advance(Duration::from_secs(1));
            pool.maintain();
        }
        let h = pool.health();
        let a = h.alert(AlertKind::Utilization).expect("31 s in full use");
        assert_eq!(a.value, 1.0, "{h:?}");
        assert_eq!(a.kind.to_string(), "utilization", "printed by its name");
        drop(held);
    });
}

#[test]
fn acquire_wait_alert_fires_above_its_threshold_and_clears() {
    // Each acquisition opens a connection: churn off, this is about waits.
    let (pool, t, mock) =
        mocked_quiet(|b| b.max_size(1).wait_alert(ms(15)).churn_alert(Duration::MAX));
    t.connect_delay_ms.store(20, SeqCst);
    paused().block_on(async {
        assert!(pool.health().is_healthy(), "the baseline");
        // 99 acquisitions that each connect (20 ms): too few to judge.
        for _ in 0..99 {
            drop(Pooled::detach(pool.get().await.unwrap()));
        }
        assert!(pool.health().is_healthy(), "99 < 100 acquisitions");
        drop(Pooled::detach(pool.get().await.unwrap()));
    });
    let h = pool.health();
    let a = h.alert(AlertKind::AcquireWait).expect("p99 20 ms > 15 ms");
    assert!(close_to((a.value * 1e9) as u64, 20_000_000), "{a:?}");
    assert_eq!(a.threshold, 0.015);
    assert_eq!(h.alerts.len(), 1, "{h:?}");
    mock.advance(Duration::from_secs(31));
    assert!(pool.health().is_healthy());

    // 20 ms waits under a 25 ms threshold never fire it.
    let (pool, t, _mock) =
        mocked_quiet(|b| b.max_size(1).wait_alert(ms(25)).churn_alert(Duration::MAX));
    t.connect_delay_ms.store(20, SeqCst);
    paused().block_on(async {
        assert!(pool.health().is_healthy());
        for _ in 0..200 {
            drop(Pooled::detach(pool.get().await.unwrap()));
        }
    });
    assert!(pool.health().is_healthy());
}

#[test]
fn backend_down_alert_fires_when_connects_fail_and_clears() {
    let (pool, t, mock) = mocked_quiet(|b| b.max_size(1).fail_fast(true));
    paused().block_on(async {
        assert!(pool.health().is_healthy(), "the baseline");
        t.fail_next.store(2, SeqCst);
        assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
        assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
    });
    let h = pool.health();
    let a = h.alert(AlertKind::BackendDown).expect("fires");
    assert_eq!(a.value, 2.0);
    mock.advance(Duration::from_secs(31));
    assert!(pool.health().is_healthy());
    assert_eq!(pool.metrics().connect_errors, 2);
}

/// A connect that times out counts towards the backend-down alert as
/// much as one that fails.
#[test]
fn backend_down_alert_counts_connect_errors_and_connect_timeouts() {
    let (pool, t, _mock) = mocked_quiet(|b| b.max_size(1).fail_fast(true).connect_timeout(ms(10)));
    paused().block_on(async {
        t.fail_next.store(1, SeqCst);
        assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
        t.hang.store(true, SeqCst);
        assert!(pool.get().await.is_err());
    });
    let m = pool.metrics();
    assert_eq!((m.connect_errors, m.connect_timeouts), (1, 1), "{m:?}");
    let h = pool.health();
    let a = h.alert(AlertKind::BackendDown).expect("fires");
    assert_eq!(a.value, 2.0, "one error and one timeout: {h:?}");
}

#[test]
fn sizing_applies_rate_times_hold_times_headroom() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(10));
    assert_eq!(pool.sizing().verdict, SizingVerdict::NoData, "nothing yet");
    paused().block_on(async {
        // 30 s (the whole window) of 10 acquisitions a second, each held
        // 100 ms.
        for _ in 0..300 {
            let c = pool.get().await.unwrap();
            mock.advance(ms(100));
            pool.maintain();
            drop(c);
        }
    });
    let s = pool.sizing();
    assert_eq!(s.observed, Duration::from_secs(30));
    assert!((s.acquire_rate_per_s - 10.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s.mean_hold, ms(100));
    // 10/s × 0.1 s × 1.5 = 1.5, rounded up.
    assert_eq!(s.recommended, 2);
    assert_eq!(s.max_size, 10);
    assert_eq!(s.verdict, SizingVerdict::TooLarge);
}

/// `health()` and `sizing()` count what happened before their first call:
/// the baseline is the pool at build, all zeros. (The first call used to
/// be the baseline: 10 timeouts, then `health()` showed no exhaustion;
/// 2,000 gets, then `sizing()` said `NoData`.)
#[test]
fn health_and_sizing_count_what_happened_before_their_first_call() {
    let (pool, _t, _mock) = mocked_quiet(|b| b.max_size(1));
    paused().block_on(async {
        let held = pool.get().await.unwrap();
        for _ in 0..10 {
            assert!(pool.get_timeout(ms(1)).await.is_err());
        }
        drop(held);
    });
    let h = pool.health();
    let a = h
        .alert(AlertKind::Exhaustion)
        .expect("10 timeouts: exhaustion");
    assert_eq!(a.value, 10.0, "{h:?}");

    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(10));
    paused().block_on(async {
        for _ in 0..2_000 {
            let c = pool.get().await.unwrap();
            mock.advance(ms(1));
            drop(c);
        }
    });
    let s = pool.sizing();
    assert_ne!(s.verdict, SizingVerdict::NoData, "{s:?}");
    assert_eq!(s.observed, Duration::from_secs(30), "the window");
    assert!(
        (s.acquire_rate_per_s - 2_000.0 / 30.0).abs() < 1e-9,
        "{s:?}"
    );
}

/// Sizing judges the window, not the time since build: a burst counts for
/// as long as it is in the window, so the verdict does not flip within
/// seconds of the burst ending (it went from `TooSmall` to `TooLarge`
/// within 3 s, as the rate was averaged over a growing span).
#[test]
fn a_bursts_sizing_verdict_holds_while_the_burst_is_in_the_window() {
    let (pool, _t, mock) = mocked_quiet(|b| b.max_size(4));
    paused().block_on(async {
        // 2 s of a burst: 4 connections at once, each held 20 ms, 400
        // acquisitions in all.
        for _ in 0..100 {
            let held: Vec<_> = four_at_once(&pool).await;
            mock.advance(ms(20));
            pool.maintain();
            drop(held);
        }
    });
    let at_end = pool.sizing();
    mock.advance(Duration::from_secs(3));
    pool.maintain();
    let later = pool.sizing();
    assert_eq!(at_end.verdict, later.verdict, "{at_end:?} then {later:?}");
    assert_eq!(at_end.recommended, later.recommended);
    assert_eq!(at_end.acquire_rate_per_s, later.acquire_rate_per_s);
    // Out of the window: nothing to go by.
    mock.advance(Duration::from_secs(30));
    assert_eq!(pool.sizing().verdict, SizingVerdict::NoData);
}

/// Four connections at once.
async fn four_at_once(
    pool: &latchless::Pool<common::TestManager>,
) -> Vec<latchless::Pooled<common::TestManager>> {
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.get().await.unwrap());
    }
    held
}

/// `export_metrics` hands every figure to the installed recorder under
/// its stable name, with the `pool` label (rendered as Prometheus text).
#[cfg(feature = "metrics")]
#[test]
fn export_metrics_renders_stable_names_with_the_pool_label() {
    let (pool, t, _mock) = mocked_quiet(|b| b.name("orders").max_size(2));
    t.connect_delay_ms.store(20, SeqCst);
    paused().block_on(async {
        drop(pool.get().await.unwrap());
        for _ in 0..9 {
            drop(pool.try_get().unwrap());
        }
    });
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || pool.export_metrics());
    let text = handle.render();
    for line in [
        "latchless_acquire_hits_total{pool=\"orders\"} 9",
        "latchless_acquire_connects_total{pool=\"orders\"} 1",
        "latchless_acquire_wait_seconds_count{pool=\"orders\"} 10",
        "latchless_acquire_wait_seconds{pool=\"orders\",quantile=\"0.5\"} 0",
        "latchless_connections_opened_total{pool=\"orders\"} 1",
        "latchless_connections_closed_total{pool=\"orders\",reason=\"broken\"} 0",
        "latchless_acquire_timeouts_total{pool=\"orders\",kind=\"waiting\"} 0",
        "latchless_connections_idle{pool=\"orders\"} 1",
        "latchless_max_size{pool=\"orders\"} 2",
        "latchless_alert_firing{pool=\"orders\",alert=\"exhaustion\"} 0",
        "latchless_backend_down{pool=\"orders\"} 0",
        "latchless_backend_down_seconds{pool=\"orders\"} 0",
        "latchless_acquire_unavailable_total{pool=\"orders\"} 0",
        "latchless_connect_probes_total{pool=\"orders\"} 0",
        "latchless_connect_permanent_errors_total{pool=\"orders\"} 0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    let max = text
        .lines()
        .find(|l| l.starts_with("latchless_acquire_wait_seconds{pool=\"orders\",quantile=\"1\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the maximum is exported");
    assert!(
        (max - 0.020).abs() <= 0.020 * HistogramSnapshot::RELATIVE_ERROR,
        "{max}"
    );
}
