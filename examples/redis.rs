//! A pool of Redis connections: commands, a pipeline, and what a failed
//! request does to its connection.
//!
//! ```text
//! cargo run --example redis --features redis
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example redis --features redis
//! ```

use std::time::Duration;

use latchless::Pool;
use latchless::managers::RedisManager;
use redis::AsyncCommands;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let manager = RedisManager::new(url.as_str())?
        .client_name("latchless-example")
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Some(Duration::from_millis(500)));
    let pool = Pool::builder(manager)
        .max_size(8)
        .check_after_idle(Some(Duration::from_secs(1))) // PING connections idle 1 s+
        .build()?;

    let mut conn = pool.get().await?;
    let () = conn.set_ex("latchless:example:px", 1.0842, 60).await?;
    let px: f64 = conn.get("latchless:example:px").await?;
    let (hits, ttl): (i64, i64) = redis::pipe()
        .incr("latchless:example:hits", 1)
        .expire("latchless:example:hits", 60)
        .ignore()
        .ttl("latchless:example:px")
        .query_async(&mut *conn)
        .await?;
    println!("px {px}, hits {hits}, ttl {ttl} s");

    // A request that fails with an I/O error or a timeout marks the
    // connection broken: dropping it closes it instead of pooling it.
    println!("connection marked broken: {}", conn.is_marked_broken());
    drop(conn);
    println!("pool: {:?}", pool.state());
    Ok(())
}
