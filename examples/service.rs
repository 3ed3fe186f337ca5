//! Running a service on a pool: warm it up before taking traffic (refuse
//! to start if the target is unreachable), give each request its own
//! deadline, serve a plain OS thread with `get_blocking`, resize at run
//! time, and drain at shutdown.
//!
//! `cargo run --example service` (an in-memory manager: no server needed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use latchless::{Manager, Pool, PoolError};

/// A stand-in for a database client: connecting takes 5 ms.
struct Database {
    opened: AtomicU64,
}

impl Manager for Database {
    type Connection = u64;
    type Error = std::io::Error;

    async fn connect(&self) -> Result<u64, std::io::Error> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(self.opened.fetch_add(1, Ordering::Relaxed))
    }
}

/// One request with its own deadline (e.g. from a header or the caller's
/// budget), sharing the path of `get_timeout`.
async fn handle(
    pool: &Pool<Database>,
    deadline: Instant,
) -> Result<u64, PoolError<std::io::Error>> {
    let conn = pool.get_until(deadline).await?;
    tokio::time::sleep(Duration::from_millis(2)).await; // the query
    Ok(*conn)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::builder(Database {
        opened: AtomicU64::new(0),
    })
    .max_size(4)
    .max_size_limit(16)
    .min_idle(2)
    .acquire_timeout(Duration::from_secs(2))
    .build()?;

    // 1. Start-up: prove the target is reachable before taking traffic.
    match pool.warm_up().await {
        Ok(opened) => println!("warm: opened {opened}, {:?}", pool.state()),
        Err(e) => {
            eprintln!("refusing to start: {e}");
            return Err(e.into());
        }
    }

    // 2. A plain OS thread (a legacy library, a CPU-bound worker) shares
    //    the pool: it parks in the same FIFO queue as the async requests.
    let for_thread = pool.clone();
    let worker = std::thread::spawn(move || -> Result<u64, PoolError<std::io::Error>> {
        let conn = for_thread.get_blocking(Duration::from_secs(2))?;
        std::thread::sleep(Duration::from_millis(3));
        Ok(*conn)
    });

    // 3. Traffic, each request with its own deadline.
    let requests: Vec<_> = (0..32)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(
                async move { handle(&pool, Instant::now() + Duration::from_millis(500)).await },
            )
        })
        .collect();
    // 4. A traffic peak: grow at run time (waiters connect at once).
    pool.set_max_size(8)?;
    let mut served = 0;
    for r in requests {
        if r.await?.is_ok() {
            served += 1;
        }
    }
    let from_thread = tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| "worker thread panicked")??;
    println!("served {served} requests; the thread got connection {from_thread}");
    // The peak is over: shrink back (idle surplus closes now).
    pool.set_max_size(4)?;
    println!(
        "after the peak: max_size {}, {:?}",
        pool.max_size(),
        pool.state()
    );

    // 5. Shutdown: stop handing out, wait for requests in flight to give
    //    their connections back, bounded.
    let still_out = pool.drain(Duration::from_secs(5)).await;
    println!("drained: {still_out} still out, {:?}", pool.state());
    assert_eq!(still_out, 0);
    Ok(())
}
