//! Carrier's Postgres database: one schema, owned here, migrated by every service that uses it
//! at start-up (sqlx takes an advisory lock, so replicas starting together are safe).
//!
//! Tables: `organizations`, `sources`, `destinations`, `subscriptions` (configuration, written by
//! the router) and `logs`, `attempts` (the log store, written by the notifier, read by ingress);
//! `parked_tasks`, `destination_queues` (held backlogs and their state) and `delivery_workers`
//! (which worker owns which partitions), written by delivery; `consumer_members`,
//! `partition_leases` (which member of each stage works on which partition, and its committed
//! offset, [`leases`]), written by every consumer; `destination_incidents`, `alerts`
//! and `alert_deliveries` (incident state and the alert outbox), written by the notifier;
//! `idempotency_keys` (ingress) and `message_bodies` (large bodies kept out of Kafka, [`bodies`]).
#![forbid(unsafe_code)]

pub mod bodies;
pub mod leases;
pub mod scratch;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub use sqlx;

/// A delivery worker whose `delivery_workers` row is older than this is taken for gone (rows
/// are refreshed every 2 s).
pub const LIVE_WORKER_SECS: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach or create the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Runs `batch` (one short DELETE transaction) until one deletes fewer than `full` rows, and
/// returns how many rows all of them deleted. Purges delete in batches so that none holds many
/// row locks or a long transaction while the services keep writing.
pub async fn in_batches<F, Fut>(full: u64, mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < full {
            return Ok(total);
        }
    }
}

/// Runs `pass` (a purge returning how many rows it deleted) every `every` until `shutdown`,
/// logging what it deleted (`what`) or why it failed; a failed pass is retried at the next tick.
pub async fn purge_every<F, Fut>(
    what: &'static str,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match pass().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, what, "purged"),
            Err(error) => tracing::warn!(%error, what, "purge failed; retried at the next tick"),
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects (creating the database if it does not exist) and applies pending migrations.
/// Retries for up to `wait` while Postgres is not answering yet, then gives up.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    wait: Duration,
) -> Result<PgPool, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match try_connect(url, max_connections).await {
            Ok(pool) => {
                MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
                return Ok(pool);
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "postgres not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn try_connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    if !sqlx::Postgres::database_exists(url)
        .await
        .map_err(StoreError::Connect)?
    {
        // Two services may race to create it; the loser's error is harmless.
        if let Err(error) = sqlx::Postgres::create_database(url).await {
            if !sqlx::Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(StoreError::Connect(error));
            }
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(StoreError::Connect)
}
