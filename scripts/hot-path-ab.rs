//! The hot-path A/B harness of `scripts/hot-path-ab.sh`: two builds of
//! latchless (`la`, `lb`) linked into one binary, each driven on a thread
//! of its own (a thread caches one pool's parked connection), one batch at
//! a time in a random order per round, so that the machine's speed swings
//! hit both alike. Prints ns per `try_get`+drop / `get().await`+drop (min,
//! p25, median of the batches) and, for reference, a bare `ArrayQueue`
//! pop+push.
//!
//! `aget`: `get().await`+drop inside an async fn run by `block_on` (as
//! criterion's `to_async` runs it). `two`: a thread that uses two pools,
//! `try_get` on each, then drops both (ns per cycle of the two).
//!
//! `ITERS=n hot-path-ab <a|b> <try|get|aget|two>` instead runs n cycles of one
//! variant and exits (for instruction counts under callgrind).
use std::future::Future;
use std::hint::black_box;
use std::sync::mpsc;
use std::time::Instant;

macro_rules! variant {
    ($m:ident, $krate:ident) => {
        mod $m {
            use $krate::{Manager, Pool, Pooled};
            pub struct M;
            impl Manager for M {
                type Connection = u64;
                type Error = std::io::Error;
                async fn connect(&self) -> Result<u64, std::io::Error> {
                    Ok(7)
                }
            }
            /// Default settings (every policy on), 8 connections opened and
            /// returned, in a runtime that keeps the background task going.
            pub fn pool(rt: &tokio::runtime::Runtime) -> Pool<M> {
                let p = {
                    let _g = rt.enter();
                    Pool::builder(M).max_size(8).shards(2).build().unwrap()
                };
                rt.block_on(async {
                    let mut v = Vec::new();
                    for _ in 0..8 {
                        v.push(p.get().await.unwrap());
                    }
                    drop(v);
                });
                p
            }
            /// `get().await` inside an async fn, as a request handler (and
            /// criterion's `to_async`) runs it: the future is built in
            /// the caller's state, not pinned on the stack.
            pub async fn cycle_async(p: &Pool<M>) {
                let c = p.get().await.unwrap();
                super::black_box(&*c);
            }
            pub fn batch_async(rt: &tokio::runtime::Runtime, p: &Pool<M>, n: u64) {
                rt.block_on(async {
                    for _ in 0..n {
                        cycle_async(p).await;
                    }
                });
            }
            /// `try_get` on two pools, then drops the second's first. After
            /// a pause longer than `check_after_idle` (callgrind, which runs
            /// one thread at a time, makes seconds-long ones) the
            /// connections in the shards are due for a pre-ping, which
            /// `try_get` leaves to `get`: a miss takes one through `get`.
            pub fn cycle_two(rt: &tokio::runtime::Runtime, p: &Pool<M>, q: &Pool<M>) {
                let x = take(rt, p);
                let y = take(rt, q);
                super::black_box((&*x, &*y));
                drop(y);
                drop(x);
            }
            fn take(rt: &tokio::runtime::Runtime, p: &Pool<M>) -> Pooled<M> {
                p.try_get()
                    .unwrap_or_else(|| rt.block_on(p.get()).expect("the pool connects"))
            }
            pub fn cycle(p: &Pool<M>, get: bool, cx: &mut std::task::Context<'_>) {
                if get { cycle_get(p, cx) } else { cycle_try(p) }
            }
            /// One variant per function: code inlined for one (the get
            /// future's first poll) does not change the other's registers.
            #[inline(never)]
            fn cycle_get(p: &Pool<M>, cx: &mut std::task::Context<'_>) {
                let mut f = std::pin::pin!(p.get());
                match super::Future::poll(f.as_mut(), cx) {
                    std::task::Poll::Ready(c) => {
                        super::black_box(&*c.unwrap());
                    }
                    std::task::Poll::Pending => panic!("an idle connection was expected"),
                }
            }
            #[inline(never)]
            fn cycle_try(p: &Pool<M>) {
                let c = p.try_get().unwrap();
                super::black_box(&*c);
            }
        }
    };
}
variant!(va, la);
variant!(vb, lb);

const N: u32 = 2000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = std::sync::Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let waker = std::task::Waker::noop();
    if let Ok(n) = std::env::var("ITERS") {
        let n: u64 = n.parse().unwrap();
        let get = args[1] == "get";
        let in_async = args[1] == "aget";
        let two = args[1] == "two";
        let mut cx = std::task::Context::from_waker(waker);
        if args[0] == "a" {
            let p = va::pool(&rt);
            if two {
                let q = va::pool(&rt);
                (0..n).for_each(|_| va::cycle_two(&rt, &p, &q));
            } else if in_async {
                va::batch_async(&rt, &p, n);
            } else {
                (0..n).for_each(|_| va::cycle(&p, get, &mut cx));
            }
        } else {
            let p = vb::pool(&rt);
            if two {
                let q = vb::pool(&rt);
                (0..n).for_each(|_| vb::cycle_two(&rt, &p, &q));
            } else if in_async {
                vb::batch_async(&rt, &p, n);
            } else {
                (0..n).for_each(|_| vb::cycle(&p, get, &mut cx));
            }
        }
        return;
    }
    let get = args.first().is_some_and(|a| a == "get");
    let in_async = args.first().is_some_and(|a| a == "aget");
    let two = args.first().is_some_and(|a| a == "two");
    let rounds: usize = args.get(1).map_or(3000, |s| s.parse().unwrap());
    let names = ["floor", "A", "B"];
    let (back_tx, back) = mpsc::channel::<(usize, f64)>();
    let mut to = Vec::new();
    for k in 0..names.len() {
        let (tx, rx) = mpsc::channel::<bool>();
        to.push(tx);
        let (back_tx, rt) = (back_tx.clone(), std::sync::Arc::clone(&rt));
        std::thread::spawn(move || {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let q = crossbeam_queue::ArrayQueue::new(8);
            (0..8u64).for_each(|i| q.push(i).unwrap());
            let (pa, pb) = match k {
                1 => (Some(va::pool(&rt)), None),
                2 => (None, Some(vb::pool(&rt))),
                _ => (None, None),
            };
            // The second pool of `two` (the floor does two pop+push).
            let (qa, qb) = match k {
                1 if two => (Some(va::pool(&rt)), None),
                2 if two => (None, Some(vb::pool(&rt))),
                _ => (None, None),
            };
            while rx.recv().unwrap() {
                let t = Instant::now();
                match (&pa, &pb) {
                    (Some(p), _) if in_async => va::batch_async(&rt, p, u64::from(N)),
                    (_, Some(p)) if in_async => vb::batch_async(&rt, p, u64::from(N)),
                    _ => {}
                }
                for _ in 0..if in_async && k != 0 { 0 } else { N } {
                    match (&pa, &pb, &qa, &qb) {
                        (Some(p), _, Some(q2), _) => va::cycle_two(&rt, p, q2),
                        (_, Some(p), _, Some(q2)) => vb::cycle_two(&rt, p, q2),
                        (Some(p), ..) => va::cycle(p, get, &mut cx),
                        (_, Some(p), ..) => vb::cycle(p, get, &mut cx),
                        _ => {
                            for _ in 0..if two { 2 } else { 1 } {
                                let x = q.pop().unwrap();
                                q.push(black_box(x)).unwrap();
                            }
                        }
                    }
                }
                back_tx
                    .send((k, t.elapsed().as_nanos() as f64 / f64::from(N)))
                    .unwrap();
            }
        });
    }
    let mut r: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..rounds {
        let mut order: Vec<usize> = (0..names.len()).collect();
        for i in (1..order.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for k in order {
            to[k].send(true).unwrap();
            let (kk, v) = back.recv().unwrap();
            r[kk].push(v);
        }
    }
    let what = if two {
        "two pools try_get"
    } else if in_async {
        "async fn get"
    } else if get {
        "get().await+drop"
    } else {
        "try_get+drop"
    };
    for (name, v) in names.iter().zip(r.iter_mut()) {
        v.sort_by(f64::total_cmp);
        println!(
            "{what:17} {name:5} min {:6.2}  p25 {:6.2}  median {:6.2} ns",
            v[0],
            v[v.len() / 4],
            v[v.len() / 2]
        );
    }
    for t in &to {
        let _ = t.send(false);
    }
}
