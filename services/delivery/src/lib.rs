//! Delivery: the last hop, from `carrier.deliveries` to each destination's URL.
//!
//! Where a task goes next, by module:
//! - `lanes`: one consumer-group member; each assigned partition is split into one FIFO lane
//!   per destination, so destinations sharing a partition never wait on each other
//!   (`lanes/design.md` explains lanes, offset commits and rebalances).
//! - `attempt`: one HTTP POST with Carrier's and Standard Webhooks' headers, judged a success
//!   or a failure.
//! - `retry`: what happens after a failure, by environment and test flag (backoff maths).
//! - `destinations`: destination settings, read from the router at send time.
//! - `events`: one log event per attempt to `carrier.log-events`.
//! - `parking`: the backlog of a held destination, in Postgres, out of worker memory.
#![forbid(unsafe_code)]

mod attempt;
mod destinations;
mod events;
mod lanes;
mod parking;
pub mod retry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Delivery configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: SocketAddr,
    /// gRPC URL of the router (destination settings).
    pub router_url: String,
    /// Postgres URL of the parking store; the database is created if missing.
    pub database_url: String,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Consumer group of the delivery workers; every replica uses the same one.
    pub consumer_group: String,
    /// Unfinished tasks one partition may hold in memory before its fetching pauses.
    pub max_pending_per_partition: usize,
    /// How long a revoked partition waits for in-flight requests before it is released. Must
    /// exceed the largest destination timeout (30 s), so a request never outlives its partition.
    pub drain_timeout_ms: u64,
    /// How long a revoked partition keeps working through the tasks it already accepted before
    /// it stops (finishing them avoids duplicates when partitions move at a clean rebalance).
    pub handover_timeout_ms: u64,
    /// How long destination settings are reused before the router is asked again.
    pub destination_cache_ttl_ms: u64,
    /// Bytes of a destination's response kept in the log.
    pub response_excerpt_bytes: usize,
    /// The `[retry]` section (`CARRIER_RETRY__*`).
    pub retry: retry::RetryPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8082".parse().expect("valid address"),
            router_url: "http://127.0.0.1:50051".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            kafka: KafkaSettings::default(),
            consumer_group: "carrier-delivery".into(),
            max_pending_per_partition: 2_000,
            drain_timeout_ms: 35_000,
            handover_timeout_ms: 10_000,
            destination_cache_ttl_ms: 1_000,
            response_excerpt_bytes: 1_024,
            retry: retry::RetryPolicy::default(),
        }
    }
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        let config: Config = carrier_config::load()?;
        config.retry.validate().map_err(ConfigError::Invalid)?;
        if config.max_pending_per_partition == 0 {
            return Err(ConfigError::Invalid(
                "max_pending_per_partition must be at least 1".into(),
            ));
        }
        Ok(config)
    }
}

/// Runs delivery until `shutdown` is cancelled; in-flight requests finish and their offsets are
/// committed before it returns.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let readiness = carrier_telemetry::Readiness::default();
    let probes = axum::serve(listener, carrier_telemetry::probes_router(readiness.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let probes = tokio::spawn(async move { probes.await });

    let destinations = Arc::new(destinations::Destinations::new(
        &config.router_url,
        Duration::from_millis(config.destination_cache_ttl_ms),
    )?);
    let events = events::LogEvents::new(&config.kafka).context("kafka producer")?;
    let pool = carrier_store::connect_and_migrate(&config.database_url, 8, Duration::from_secs(30))
        .await
        .context("postgres")?;
    let parking = parking::ParkingStore::new(pool);
    let consumer =
        lanes::start(&config, destinations, events, parking, shutdown.clone()).context("kafka consumer")?;
    readiness.set_ready(true);
    tracing::info!("delivery ready");

    shutdown.cancelled().await;
    readiness.set_ready(false);
    consumer.await.context("delivery consumer")?;
    probes
        .await
        .context("probe server task")?
        .context("probe server")?;
    tracing::info!("delivery stopped");
    Ok(())
}
