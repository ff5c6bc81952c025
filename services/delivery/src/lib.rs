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
//! - `control`: the gRPC service operators reach through ingress (pause, resume, skip, retry
//!   now, queue state), answered from the live lanes; only to callers with the internal
//!   service token (`carrier-internal-auth`: `[internal_auth]`, optionally mutual TLS).
//! - `outbound`: outbound safety; which destination addresses may be dialled (the `[outbound]`
//!   settings), checked on the resolved addresses at connect time (the policy is the shared
//!   `carrier-outbound` crate; this module counts delivery's refusals).
//! - `registry`: which partitions this worker owns and where its control service listens.
#![forbid(unsafe_code)]

mod attempt;
mod control;
mod destinations;
mod events;
mod lanes;
mod metrics;
pub mod outbound;
mod parking;
mod registry;
pub mod retry;
mod spans;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings, Profile};
use carrier_internal_auth::{InternalAuth, InternalAuthSettings};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Delivery configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `production` (default) or `dev` (the development service token when none is set).
    pub profile: Profile,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: SocketAddr,
    /// Address of the control service (gRPC `carrier.delivery.v1.DeliveryControl`).
    pub control_addr: SocketAddr,
    /// The URL other services reach this worker's control service at, e.g.
    /// `http://$(POD_IP):50052` on Kubernetes. Defaults to `http://<control_addr>` (`https://`
    /// with mutual TLS; with the bound port when `control_addr` has port 0); required when
    /// `control_addr` listens on all interfaces.
    pub control_advertise_url: Option<String>,
    /// gRPC URL of the router (destination settings).
    pub router_url: String,
    /// The `[internal_auth]` section (`CARRIER_INTERNAL_AUTH__*`): the service token shared
    /// with ingress and the router (sent to the router, required from callers of the control
    /// service), and optional mutual TLS. The token is required in production.
    pub internal_auth: InternalAuthSettings,
    /// Postgres URL of the parking store; the database is created if missing.
    pub database_url: String,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Consumer group of the delivery workers; every replica uses the same one.
    pub consumer_group: String,
    /// Unfinished tasks one partition may hold in memory before its fetching pauses. Past three
    /// quarters of it, the destination with the longest queue parks its new tasks.
    pub max_pending_per_partition: usize,
    /// Tasks one destination may hold in memory; past it (a slow or failing destination of any
    /// environment), its new tasks go to the parking store, so it never holds up the other
    /// destinations of its partition.
    pub max_queued_per_destination: usize,
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
    /// Tracing: an attempt that starts later than this after its task was written is the root of
    /// a new trace linked to the task's, not a child of it (README "Tracing"; default 5 minutes).
    pub trace_continue_within_ms: u64,
    /// The `[retry]` section (`CARRIER_RETRY__*`).
    pub retry: retry::RetryPolicy,
    /// The `[outbound]` section (`CARRIER_OUTBOUND__*`): which destination addresses may be
    /// dialled. By default only public ones; loopback and private networks must be allowed.
    pub outbound: outbound::OutboundSettings,
}

/// Never shows a secret: the database URL without its password, tokens and keys redacted.
impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("profile", &self.profile)
            .field("http_addr", &self.http_addr)
            .field("control_addr", &self.control_addr)
            .field("control_advertise_url", &self.control_advertise_url)
            .field("router_url", &self.router_url)
            .field("internal_auth", &self.internal_auth)
            .field("database_url", &carrier_config::RedactedUrl(&self.database_url))
            .field("kafka", &self.kafka)
            .field("consumer_group", &self.consumer_group)
            .field("max_pending_per_partition", &self.max_pending_per_partition)
            .field("max_queued_per_destination", &self.max_queued_per_destination)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("handover_timeout_ms", &self.handover_timeout_ms)
            .field("destination_cache_ttl_ms", &self.destination_cache_ttl_ms)
            .field("response_excerpt_bytes", &self.response_excerpt_bytes)
            .field("trace_continue_within_ms", &self.trace_continue_within_ms)
            .field("retry", &self.retry)
            .field("outbound", &self.outbound)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            http_addr: "127.0.0.1:8082".parse().expect("valid address"),
            control_addr: "127.0.0.1:50052".parse().expect("valid address"),
            control_advertise_url: None,
            router_url: "http://127.0.0.1:50051".into(),
            internal_auth: InternalAuthSettings::default(),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            kafka: KafkaSettings::default(),
            consumer_group: "carrier-delivery".into(),
            max_pending_per_partition: 2_000,
            max_queued_per_destination: 500,
            drain_timeout_ms: 35_000,
            handover_timeout_ms: 10_000,
            destination_cache_ttl_ms: 1_000,
            response_excerpt_bytes: 1_024,
            trace_continue_within_ms: 300_000,
            retry: retry::RetryPolicy::default(),
            outbound: outbound::OutboundSettings::default(),
        }
    }
}

impl Config {
    /// Loads and validates; fills the dev profile's service token when unset.
    pub fn load() -> Result<Self, ConfigError> {
        carrier_config::load::<Config>()?.validate()
    }

    /// Checks the configuration and fills what the profile supplies (called by both `load` and
    /// `run`, so a configuration built in code is checked too).
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let config = &self;
        config.retry.validate().map_err(ConfigError::Invalid)?;
        config.outbound.networks()?;
        if config.max_pending_per_partition == 0 || config.max_queued_per_destination == 0 {
            return Err(ConfigError::Invalid(
                "max_pending_per_partition and max_queued_per_destination must be at least 1".into(),
            ));
        }
        if config.control_addr.ip().is_unspecified() && config.control_advertise_url.is_none() {
            return Err(ConfigError::Invalid(
                "control_advertise_url (CARRIER_CONTROL_ADVERTISE_URL) is required when control_addr listens on all interfaces".into(),
            ));
        }
        carrier_kafka::client::validate(&self.kafka)?;
        self.internal_auth = self
            .internal_auth
            .validated(self.profile)
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        Ok(self)
    }
}

/// Delivery's bound sockets (tests bind `127.0.0.1:0`).
pub struct Listeners {
    pub http: TcpListener,
    pub control: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            http: carrier_telemetry::bind(config.http_addr).await?,
            control: carrier_telemetry::bind(config.control_addr).await?,
        })
    }
}

/// Runs delivery until `shutdown` is cancelled; in-flight requests finish and their offsets are
/// committed before it returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = config.validate()?;
    let internal_auth =
        InternalAuth::new("delivery", &config.internal_auth, config.profile).context("internal_auth")?;
    let readiness = carrier_telemetry::Readiness::default();
    let probes = tokio::spawn(carrier_telemetry::serve_probes(
        "delivery",
        listeners.http,
        readiness.clone(),
        shutdown.clone(),
    ));

    let destinations = Arc::new(destinations::Destinations::new(
        &internal_auth,
        &config.router_url,
        Duration::from_millis(config.destination_cache_ttl_ms),
    )?);
    let events = events::LogEvents::new(&config.kafka).context("kafka producer")?;
    let pool = carrier_store::connect(
        "carrier-delivery",
        &config.database_url,
        8,
        Duration::from_secs(30),
        carrier_store::Schema::at_start(config.profile),
    )
    .await
    .context("postgres")?;
    // Its log events wake the notifier's idle partitions (Tansu only: kafka.idle_after_ms).
    carrier_kafka::doorbell::install(&config.kafka, &pool);
    let parking = parking::ParkingStore::new(pool.clone());
    let directory = Arc::new(lanes::LaneDirectory::default());
    let partition_count = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let worker_id = registry::worker_id();

    let control_addr = listeners.control.local_addr().context("control listener")?;
    let control_url = config
        .control_advertise_url
        .clone()
        .unwrap_or_else(|| format!("{}://{control_addr}", internal_auth.scheme()));
    let control = control::server(control::ControlService {
        worker_id: worker_id.clone(),
        destinations: destinations.clone(),
        parking: parking.clone(),
        directory: directory.clone(),
        partition_count: partition_count.clone(),
    });
    let control_incoming = tokio_stream::wrappers::TcpListenerStream::new(listeners.control);
    let control_shutdown = shutdown.clone();
    let mut control_server = internal_auth.server().context("internal_auth")?;
    let control = tokio::spawn(async move {
        control_server
            .add_service(control)
            .serve_with_incoming_shutdown(control_incoming, control_shutdown.cancelled_owned())
            .await
    });

    let consumer = lanes::start(
        &config,
        destinations,
        events,
        parking,
        directory.clone(),
        shutdown.clone(),
    )
    .context("kafka consumer")?;
    let registry = registry::Registry {
        pool,
        worker_id: worker_id.clone(),
        control_url: control_url.clone(),
        directory,
        partition_count,
        kafka: config.kafka.clone(),
        deliveries_topic: carrier_kafka::Topics::new(&config.kafka).deliveries,
    };
    let registry = tokio::spawn(registry.run(shutdown.clone()));
    readiness.set_ready(true);
    tracing::info!(%worker_id, %control_url, "delivery ready");

    shutdown.cancelled().await;
    readiness.set_ready(false);
    consumer.await.context("delivery consumer")?;
    registry.await.context("registry task")?;
    control
        .await
        .context("control server task")?
        .context("control server")?;
    probes
        .await
        .context("probe server task")?
        .context("probe server")?;
    tracing::info!("delivery stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration printed with `{:?}` shows none of its secrets.
    #[test]
    fn debug_output_shows_no_secret() {
        let config = Config {
            database_url: carrier_config::redaction_check::DATABASE_URL.into(),
            internal_auth: InternalAuthSettings {
                service_token: Some("internal-s3cr3t-token-0123456789abcdef".into()),
                ..Default::default()
            },
            kafka: carrier_config::redaction_check::kafka_with_secrets(),
            ..Config::default()
        };
        let printed = format!("{config:?}");
        carrier_config::redaction_check::assert_no_secret(&printed);
    }
}
