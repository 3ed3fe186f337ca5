//! The waiting-path A/B harness of `scripts/wait-ab.sh`: two builds of
//! latchless (`la`, `lb`) and the fair-semaphore floor (a bare
//! `tokio::sync::Semaphore`, the reference of `benches/benches/tail.rs`)
//! in one binary. Each of T tasks on a W-worker Tokio runtime loops:
//! read the clock, acquire, read the clock, record, `yield_now()` while
//! holding, release. With a pool of T / 2 every acquire after the first
//! few parks and is served by a release: the waiting cycle. Rounds run the
//! three variants in a random order, so that the machine's swings hit
//! them alike; prints p50, p99 and p99.9 (ns) of the acquire latency per
//! variant, pooled over rounds, and the median of the rounds' p50s.
//!
//! `ITERS=n wait-ab <a|b|floor|floor-timer>` instead runs n acquires per
//! task on a current-thread runtime (same loop, no clock reads) and exits:
//! for instructions per acquire under callgrind, which do not swing.
//! `floor-timer` is the floor with one Tokio timer pending in the runtime,
//! as the pool's runtime has one (its background task's).
//!
//! `wait-ab TASKS/POOL ROUNDS [OPS]`, e.g. `wait-ab 4/2 20 5000`.
use std::sync::Arc;
use std::time::Instant;

macro_rules! variant {
    ($m:ident, $krate:ident) => {
        mod $m {
            use $krate::{Manager, Pool};
            pub struct M;
            impl Manager for M {
                type Connection = u64;
                type Error = std::io::Error;
                async fn connect(&self) -> Result<u64, std::io::Error> {
                    Ok(7)
                }
            }
            pub fn pool(rt: &tokio::runtime::Runtime, size: usize) -> Pool<M> {
                let p = {
                    let _g = rt.enter();
                    Pool::builder(M).max_size(size).shards(2).build().unwrap()
                };
                rt.block_on(async {
                    let mut v = Vec::new();
                    for _ in 0..size {
                        v.push(p.get().await.unwrap());
                    }
                });
                p
            }
            /// `ops` acquires; each latency in ns into `out` (if any).
            pub async fn task(p: Pool<M>, ops: usize, mut out: Option<Vec<u64>>) -> Option<Vec<u64>> {
                for _ in 0..ops {
                    let t = out.as_ref().map(|_| std::time::Instant::now());
                    let c = p.get().await.unwrap();
                    if let (Some(t), Some(o)) = (t, out.as_mut()) {
                        o.push(t.elapsed().as_nanos() as u64);
                    }
                    std::hint::black_box(&*c);
                    tokio::task::yield_now().await;
                    drop(c);
                }
                out
            }
        }
    };
}
variant!(va, la);
variant!(vb, lb);

/// The floor: a fair semaphore's acquire and release around the same loop.
async fn floor_task(
    s: Arc<tokio::sync::Semaphore>,
    ops: usize,
    mut out: Option<Vec<u64>>,
) -> Option<Vec<u64>> {
    for _ in 0..ops {
        let t = out.as_ref().map(|_| Instant::now());
        let permit = s.acquire().await.unwrap();
        if let (Some(t), Some(o)) = (t, out.as_mut()) {
            o.push(t.elapsed().as_nanos() as u64);
        }
        std::hint::black_box(&permit);
        tokio::task::yield_now().await;
        drop(permit);
    }
    out
}

/// Runs `tasks` tasks of `ops` acquires of variant `k` on `rt`; the
/// latencies if `record`.
fn run(
    rt: &tokio::runtime::Runtime,
    k: usize,
    tasks: usize,
    size: usize,
    ops: usize,
    record: bool,
) -> Vec<u64> {
    let (pa, pb, sem) = match k {
        0 => (None, None, Some(Arc::new(tokio::sync::Semaphore::new(size)))),
        1 => (Some(va::pool(rt, size)), None, None),
        _ => (None, Some(vb::pool(rt, size)), None),
    };
    rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let out = record.then(|| Vec::with_capacity(ops));
            handles.push(match (&pa, &pb, &sem) {
                (Some(p), ..) => tokio::spawn(va::task(p.clone(), ops, out)),
                (_, Some(p), _) => tokio::spawn(vb::task(p.clone(), ops, out)),
                (.., Some(s)) => tokio::spawn(floor_task(Arc::clone(s), ops, out)),
                _ => unreachable!(),
            });
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap().unwrap_or_default());
        }
        all
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |s: &str| -> (usize, usize) {
        let (t, p) = s.split_once('/').expect("TASKS/POOL");
        (t.parse().unwrap(), p.parse().unwrap())
    };
    if let Ok(n) = std::env::var("ITERS") {
        let n: usize = n.parse().unwrap();
        let k = match args[0].as_str() {
            "floor" | "floor-timer" => 0,
            "a" => 1,
            _ => 2,
        };
        let (tasks, size) = args.get(1).map_or((4, 2), |s| parse(s));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        if args[0] == "floor-timer" {
            // The floor in a runtime with one timer pending, as a pool's
            // runtime has (its background task's) and a service's has.
            rt.spawn(async { tokio::time::sleep(std::time::Duration::from_secs(3600)).await });
        }
        run(&rt, k, tasks, size, n, false);
        return;
    }
    let (tasks, size) = args.first().map_or((4, 2), |s| parse(s));
    let rounds: usize = args.get(1).map_or(20, |s| s.parse().unwrap());
    let ops: usize = args.get(2).map_or(5000, |s| s.parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names = ["floor", "A", "B"];
    let mut all: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let mut p50s: Vec<Vec<u64>> = vec![Vec::new(); 3];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..rounds {
        let mut order = [0usize, 1, 2];
        for i in (1..3).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for k in order {
            run(&rt, k, tasks, size, ops / 10, false); // warm-up
            let mut v = run(&rt, k, tasks, size, ops, true);
            v.sort_unstable();
            p50s[k].push(v[v.len() / 2]);
            all[k].extend(v);
        }
    }
    println!("{tasks} tasks on a pool of {size}, 2 workers, {rounds} rounds of {ops} acquires per task");
    for k in 0..3 {
        let v = &mut all[k];
        v.sort_unstable();
        let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        p50s[k].sort_unstable();
        println!(
            "{:5}  p50 {:6}  p99 {:6}  p99.9 {:7}  max {:9}  median of round p50s {:6}",
            names[k],
            q(0.5),
            q(0.99),
            q(0.999),
            v[v.len() - 1],
            p50s[k][p50s[k].len() / 2]
        );
    }
}
