//! The harness of `scripts/keyed-ir.sh`: `ITERS=n keyed-ir <keys|pools> K`
//! runs n rounds of `try_get` + drop over K keys of one `KeyedPool` in
//! turn (`keys`), or over K plain `Pool`s in turn (`pools`), every one
//! holding an idle connection, on one thread; under callgrind, two values
//! of n give the instructions per hit.
use std::hint::black_box;

use latchless::{KeyedManager, KeyedPool, Manager, Pool};

struct Keyed;
impl KeyedManager<u16> for Keyed {
    type Connection = u16;
    type Error = std::io::Error;
    async fn connect(&self, key: &u16) -> Result<u16, std::io::Error> {
        Ok(*key)
    }
}

struct Plain;
impl Manager for Plain {
    type Connection = u16;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u16, std::io::Error> {
        Ok(7)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = std::env::var("ITERS").map_or(1000, |s| s.parse().unwrap());
    let k: u16 = args[1].parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in = rt.enter();
    if args[0] == "keys" {
        let pool = KeyedPool::builder(Keyed).build().unwrap();
        rt.block_on(async {
            for key in 0..k {
                drop(pool.get(&key).await.unwrap());
            }
        });
        keys(&pool, k, n);
    } else {
        let pools: Vec<Pool<Plain>> = (0..k)
            .map(|_| Pool::builder(Plain).build().unwrap())
            .collect();
        rt.block_on(async {
            for p in &pools {
                drop(p.get().await.unwrap());
            }
        });
        pools_in_turn(&pools, n);
    }
}

#[inline(never)]
fn keys(pool: &KeyedPool<u16, Keyed>, k: u16, n: usize) {
    for _ in 0..n {
        for key in 0..k {
            black_box(&*pool.try_get(black_box(&key)).unwrap());
        }
    }
}

#[inline(never)]
fn pools_in_turn(pools: &[Pool<Plain>], n: usize) {
    for _ in 0..n {
        for p in pools {
            black_box(&*p.try_get().unwrap());
        }
    }
}
