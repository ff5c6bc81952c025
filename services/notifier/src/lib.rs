//! The notifier: reads `carrier.log-events` and writes the log store.
//!
//! - `log_store`: merges a batch of events per log and upserts logs and attempts in one
//!   transaction. Replaying an event changes nothing (attempts are keyed by log and number;
//!   a status only moves forward by attempt number).
//! - `batches`: one writer per assigned partition, collecting events into batches; offsets are
//!   finished only after their batch is committed in Postgres.
//! - `retention`: the periodic purge of logs older than `log_retention_days`, in short batches.
//!
//! `log_store` and `retention` are public for the end-to-end tests and the benchmark, which
//! write and purge the store exactly as the notifier does.
#![forbid(unsafe_code)]

mod batches;
pub mod log_store;
pub mod retention;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Notifier configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: SocketAddr,
    /// Postgres URL of the log store; the database is created if missing.
    pub database_url: String,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Consumer group of the notifiers.
    pub consumer_group: String,
    /// Most events written in one transaction.
    pub batch_size: usize,
    /// How long a partial batch waits for more events before it is written.
    pub batch_wait_ms: u64,
    /// Logs whose message was received more than this many days ago are deleted, with their
    /// attempts (logs still `queued` are kept until they end). 0 keeps logs forever.
    /// `carrier.deliveries` must retain messages at least this long for manual retry to work
    /// on every stored log.
    pub log_retention_days: u32,
    /// Time between two purges of logs past retention (every notifier replica purges; they
    /// skip each other's rows).
    pub log_purge_interval_secs: u64,
    /// Logs deleted per purge transaction (short transactions, few locks held at once).
    pub log_purge_batch_size: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8083".parse().expect("valid address"),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            kafka: KafkaSettings::default(),
            consumer_group: "carrier-notifier".into(),
            batch_size: 500,
            batch_wait_ms: 20,
            log_retention_days: 30,
            log_purge_interval_secs: 600,
            log_purge_batch_size: 5_000,
        }
    }
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        let config: Config = carrier_config::load()?;
        if config.batch_size == 0 {
            return Err(ConfigError::Invalid("batch_size must be at least 1".into()));
        }
        if config.log_purge_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "log_purge_interval_secs must be at least 1".into(),
            ));
        }
        if config.log_purge_batch_size < 1 {
            return Err(ConfigError::Invalid(
                "log_purge_batch_size must be at least 1".into(),
            ));
        }
        Ok(config)
    }
}

/// Runs the notifier until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let readiness = carrier_telemetry::Readiness::default();
    let probes = axum::serve(listener, carrier_telemetry::probes_router(readiness.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let probes = tokio::spawn(async move { probes.await });
    let pool = carrier_store::connect_and_migrate(&config.database_url, 8, Duration::from_secs(30))
        .await
        .context("postgres")?;
    let consumer = batches::start(&config, pool.clone(), shutdown.clone()).context("kafka consumer")?;
    let purge = tokio::spawn(retention::run(
        pool,
        retention::RetentionSettings {
            retention_days: config.log_retention_days,
            interval: Duration::from_secs(config.log_purge_interval_secs),
            batch_size: config.log_purge_batch_size,
        },
        shutdown.clone(),
    ));
    readiness.set_ready(true);
    tracing::info!("notifier ready");
    shutdown.cancelled().await;
    readiness.set_ready(false);
    consumer.await.context("log event consumer")?;
    purge.await.context("log purge task")?;
    probes
        .await
        .context("probe server task")?
        .context("probe server")?;
    tracing::info!("notifier stopped");
    Ok(())
}
