//! A pool of plain TCP connections to a line-protocol server, with a user
//! liveness check. Starts its own tiny PING/PONG server on 127.0.0.1, so it
//! runs anywhere:
//!
//! ```text
//! cargo run --example tcp --features tcp
//! ```

use std::io;
use std::time::Duration;

use latchless::Pool;
use latchless::managers::{TcpConnection, TcpManager};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request/response round trip: `PING\n` -> `PONG\n`.
async fn ping(conn: &mut TcpConnection) -> io::Result<()> {
    conn.write_all(b"PING\n").await?;
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).await?; // an error here marks `conn` broken
    if &reply == b"PONG\n" {
        Ok(())
    } else {
        conn.mark_broken(); // out of sync: never reuse it
        Err(io::Error::other("unexpected reply"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: answers every line with PONG.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = sock.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    if write.write_all(b"PONG\n").await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let manager = TcpManager::new([addr.to_string()])
        .connect_timeout(Duration::from_secs(2))
        .keepalive(Some(Duration::from_secs(30)))
        // Pre-ping: a bounded round trip before reusing an idle connection.
        .with_check(|conn| {
            Box::pin(async move {
                tokio::time::timeout(Duration::from_millis(500), ping(conn))
                    .await
                    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no PONG")))
            })
        });
    let pool = Pool::builder(manager)
        .max_size(4)
        .check_after_idle(Some(Duration::from_secs(1)))
        .build()?;

    let mut tasks = Vec::new();
    for _ in 0..32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await?;
            ping(&mut conn).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e as Box<dyn std::error::Error>)?;
    }
    let state = pool.state();
    println!(
        "32 requests served by {} connections ({} idle)",
        state.size, state.idle
    );
    Ok(())
}
