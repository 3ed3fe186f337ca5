//! What the asymmetric fence costs a waiter (`src/asym.rs`): the latency
//! of one `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, the call the
//! first waiter after a quiet second makes before it looks at the slots
//! (later waiters, while the pool is armed, make none).
//!
//! The call interrupts every CPU that runs a thread of this process, so
//! it is measured with 0, 1, `nproc - 1`, `nproc` and `2 x nproc` other
//! threads spinning on stores (releasers in a busy service). Percentiles
//! of 2,000 calls per row, in microseconds. Linux only; elsewhere (and
//! where the kernel refuses the call) it says so and exits.
//!
//! ```text
//! cargo bench -p latchless-benches --bench membarrier
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

#[cfg(target_os = "linux")]
fn membarrier(cmd: libc::c_int) -> libc::c_long {
    let (flags, cpu): (libc::c_uint, libc::c_int) = (0, 0);
    // SAFETY: membarrier(int cmd, unsigned int flags, int cpu_id) touches
    // no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu) }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[cfg(target_os = "linux")]
fn main() {
    const QUERY: libc::c_int = 0;
    const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const REGISTER: libc::c_int = 1 << 4;
    let supported = membarrier(QUERY);
    if supported < 0
        || supported & libc::c_long::from(PRIVATE_EXPEDITED | REGISTER)
            != libc::c_long::from(PRIVATE_EXPEDITED | REGISTER)
        || membarrier(REGISTER) != 0
    {
        println!(
            "membarrier: private expedited not available here; latchless fences every parking release instead"
        );
        return;
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("membarrier(PRIVATE_EXPEDITED) latency, {nproc} CPUs, 2000 calls per row (us)");
    println!(
        "{:>16} {:>8} {:>8} {:>8} {:>8}",
        "spinning threads", "p50", "p99", "p99.9", "max"
    );
    let mut counts = vec![0, 1, nproc.saturating_sub(1), nproc, 2 * nproc];
    counts.dedup();
    for spinners in counts {
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..spinners)
            .map(|_| {
                let (stop, sink) = (stop.clone(), sink.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        sink.store(n, Ordering::Release);
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut us: Vec<f64> = (0..2200)
            .map(|_| {
                let t = Instant::now();
                let r = membarrier(PRIVATE_EXPEDITED);
                assert_eq!(r, 0, "membarrier after registration");
                t.elapsed().as_nanos() as f64 / 1000.0
            })
            .skip(200)
            .collect();
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().expect("spinner"));
        us.sort_by(f64::total_cmp);
        println!(
            "{:>16} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            spinners,
            percentile(&us, 0.5),
            percentile(&us, 0.99),
            percentile(&us, 0.999),
            us[us.len() - 1]
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("membarrier: Linux only; latchless fences every parking release elsewhere");
}
