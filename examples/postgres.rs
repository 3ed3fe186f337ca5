//! A pool of PostgreSQL connections with an init hook, and the pool's
//! overhead next to the server's: acquire p99.9 through the pool against
//! the `SELECT 1` round trip p50 on the same machine. Build it optimised:
//! in a debug build the acquire figures mean nothing.
//!
//! ```text
//! cargo run --release --example postgres --features postgres
//! DATABASE_URL="host=127.0.0.1 user=postgres dbname=test" cargo run --release --example postgres --features postgres
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --release --example postgres --features postgres
//! ```

use std::time::{Duration, Instant};

use latchless::Pool;
use latchless::managers::PgManager;
use latchless::tokio_postgres::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A `key=value` string or a `postgres://` URL: parsed, not pasted
    // together, so that either form works.
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned());
    let mut config: Config = url.parse()?;
    // How `pg_stat_activity` names the pool's sessions, unless
    // DATABASE_URL already names them.
    if config.get_application_name().is_none() {
        config.application_name("latchless-example");
    }
    let manager = PgManager::new(config).with_init(|conn| {
        Box::pin(async move {
            // Session setup, once per new connection.
            conn.batch_execute("SET statement_timeout = '5s'").await?;
            conn.prepare_cached("SELECT $1::int8 * 2").await?;
            Ok(())
        })
    });
    let pool = Pool::builder(manager)
        .max_size(4)
        .check_after_idle(Some(Duration::from_secs(1))) // pre-ping connections idle 1 s+
        .build()?;

    // A request: the statement comes from the connection's cache.
    {
        let mut conn = pool.get().await?;
        let stmt = conn.prepare_cached("SELECT $1::int8 * 2").await?;
        let row = conn.query_one(&stmt, &[&21i64]).await;
        let row = conn.observe(row)?; // marks the connection broken if the session is lost
        println!("21 * 2 = {}", row.get::<_, i64>(0));
    }

    // The server round trip, on a pooled connection.
    let conn = pool.get().await?;
    let mut rtt = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let t = Instant::now();
        conn.simple_query("SELECT 1").await?;
        rtt.push(t.elapsed());
    }
    drop(conn);

    // The pool's part: get (an idle connection) and give it back.
    let mut acquire = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let t = Instant::now();
        let conn = pool.get().await?;
        acquire.push(t.elapsed());
        drop(conn);
    }

    rtt.sort();
    acquire.sort();
    let at = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let select_p50 = at(&rtt, 0.50);
    let (acq_p50, acq_p999) = (at(&acquire, 0.50), at(&acquire, 0.999));
    println!("SELECT 1 round trip: p50 {select_p50:?}");
    println!("acquire through the pool: p50 {acq_p50:?}, p99.9 {acq_p999:?}");
    println!(
        "acquire p99.9 = {:.3}% of SELECT 1 p50 (target: under 1%)",
        100.0 * acq_p999.as_secs_f64() / select_p50.as_secs_f64()
    );
    Ok(())
}
