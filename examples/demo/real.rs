//! The comparison against real servers: PostgreSQL (`SELECT 1` per
//! request) and Redis (`PING` per request).
//!
//! LEAD: these two managers are the demo's own, kept minimal. Once the
//! crate's managers land (`latchless::managers`, behind the `postgres` and
//! `redis` features), swap them in here: `Workload` only adds the request
//! and can be implemented for the crate's types in this file.

use std::str::FromStr;

use latchless::Manager;

use crate::compare::{DemoError, Workload};
use crate::redact::redact;

/// PostgreSQL over plain TCP (or a Unix socket), no TLS.
pub struct PgDemoManager {
    config: tokio_postgres::Config,
}

impl PgDemoManager {
    /// Parse a `postgres://` URL or a `key=value` string; no I/O.
    pub fn parse(url: &str) -> Result<Self, DemoError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("invalid --postgres URL {:?}: {e}", redact(url)))?;
        Ok(PgDemoManager { config })
    }
}

impl Manager for PgDemoManager {
    type Connection = tokio_postgres::Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
        // The connection's I/O runs on its own task until the client drops.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn check(&self, conn: &mut tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        conn.simple_query("").await.map(drop)
    }

    fn is_broken(&self, conn: &mut tokio_postgres::Client) -> bool {
        conn.is_closed()
    }
}

impl Workload for PgDemoManager {
    fn request_name(&self) -> &'static str {
        "SELECT 1"
    }

    async fn request(
        &self,
        conn: &mut tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        conn.simple_query("SELECT 1").await.map(drop)
    }
}

/// Redis over the redis crate's multiplexed async connection (one TCP
/// connection per `connect`).
pub struct RedisDemoManager {
    client: redis::Client,
}

impl RedisDemoManager {
    /// Parse a `redis://` URL; no I/O.
    pub fn parse(url: &str) -> Result<Self, DemoError> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid --redis URL {:?}: {e}", redact(url)))?;
        Ok(RedisDemoManager { client })
    }
}

impl Manager for RedisDemoManager {
    type Connection = redis::aio::MultiplexedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, redis::RedisError> {
        self.client.get_multiplexed_async_connection().await
    }

    async fn check(&self, conn: &mut Self::Connection) -> Result<(), redis::RedisError> {
        self.request(conn).await
    }
}

impl Workload for RedisDemoManager {
    fn request_name(&self) -> &'static str {
        "PING"
    }

    async fn request(&self, conn: &mut Self::Connection) -> Result<(), redis::RedisError> {
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "PING did not answer PONG",
                pong,
            )))
        }
    }
}
