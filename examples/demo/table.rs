//! The comparison as a table, with the two ratios under it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::compare::{Comparison, Phase};

/// The table and the ratios, ready to print.
pub fn render(c: &Comparison) -> String {
    let (a, b) = (&c.unpooled, &c.pooled);
    let mut out = String::new();
    let mut row = |label: &str, f: &dyn Fn(&Phase) -> String| {
        let _ = writeln!(out, "{label:<24}{:>24}{:>18}", f(a), f(b));
    };
    row("", &|p| p.name.to_string());
    row("connection setups (1)", &|p| p.setups.to_string());
    row("setup time, mean", &|p| {
        p.mean_setup().map_or_else(|| "-".into(), fmt_dur)
    });
    row("setup time, summed (2)", &|p| fmt_dur(p.setup_summed));
    row("wall time in setups (3)", &|p| fmt_dur(p.setup_wall));
    row("total time", &|p| fmt_dur(p.total));
    row("requests/s", &|p| format!("{:.1}", p.requests_per_sec()));
    row("acquire wait p50 (4)", &|p| fmt_dur(p.acquire.p50));
    row("acquire wait p99 (4)", &|p| fmt_dur(p.acquire.p99));
    row("acquire wait p99.9 (4)", &|p| fmt_dur(p.acquire.p999));
    let _ = writeln!(
        out,
        "\nsetup time (2): {} less with the pool ({} -> {})",
        fmt_ratio(c.setup_ratio()),
        fmt_dur(a.setup_summed),
        fmt_dur(b.setup_summed),
    );
    let _ = writeln!(
        out,
        "total time:     {} faster with the pool ({} -> {})",
        fmt_ratio(c.speedup()),
        fmt_dur(a.total),
        fmt_dur(b.total),
    );
    out.push('\n');
    if a.setups_seen_by_server && b.setups_seen_by_server {
        out.push_str("(1) as counted by the server\n");
    } else {
        out.push_str("(1) as counted by the demo when each connect returned\n");
    }
    out.push_str(
        "(2) every setup's duration added up over all tasks: with several tasks \
         connecting at once it can exceed the total time\n",
    );
    out.push_str("(3) wall time during which at least one setup was in flight\n");
    let _ = writeln!(
        out,
        "(4) time to a usable connection: a connect without a pool, `pool.get().await` with one \
         (the pool opened {} connections)",
        c.pool_opened
    );
    out
}

/// `12.3x`, or `inf` when the pool paid nothing.
pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.1}x")
    } else {
        "infx".to_string()
    }
}

/// A duration with 3–4 significant digits and a unit a reader scans fast.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{} ns", d.as_nanos())
    }
}
