//! The router: the configuration owner and the fan-out stage.
//!
//! - `config_store` keeps organizations, sources, destinations and subscriptions in Postgres and
//!   answers "where does this message go?" (`resolve`).
//! - `client_assertion` checks `private_key_jwt` client assertions (RFC 7523) against the
//!   public key registered on a source.
//! - `grpc` serves that store to ingress (admin API, token checks, resolve) and delivery
//!   (destination settings at send time); only to callers with the internal service token
//!   (`carrier-internal-auth`: `[internal_auth]`, optionally mutual TLS).
//! - `fanout` consumes `carrier.inbound` and writes one task per destination to
//!   `carrier.deliveries`, keyed by destination (its queued logs are the notifier's to create).
#![forbid(unsafe_code)]

mod client_assertion;
mod config_store;
mod fanout;
mod grpc;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings, Profile};
use carrier_internal_auth::{InternalAuth, InternalAuthSettings};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config_store::{ConfigStore, StoreError};

/// The router's configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `production` (default) or `dev` (the development service token when none is set).
    pub profile: Profile,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: SocketAddr,
    /// Address of the gRPC configuration service.
    pub grpc_addr: SocketAddr,
    /// The `[internal_auth]` section (`CARRIER_INTERNAL_AUTH__*`): the service token callers of
    /// the gRPC service must present (shared with ingress and delivery), and optional mutual
    /// TLS. The token is required in production.
    pub internal_auth: InternalAuthSettings,
    /// Postgres URL; the database is created if missing.
    pub database_url: String,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Consumer group of the fan-out stage.
    pub consumer_group: String,
    /// Unfinished inbound records per partition before its fetching pauses.
    pub max_pending_per_partition: usize,
    /// How long a revoked partition waits for its in-flight writes.
    pub drain_timeout_ms: u64,
    /// How long a revoked partition keeps working through the tasks it already accepted before
    /// it stops (finishing them avoids duplicates when partitions move at a clean rebalance).
    pub handover_timeout_ms: u64,
    /// Default timeout of a destination that does not set one.
    pub default_destination_timeout_ms: u32,
}

/// Never shows a secret: the database URL without its password, tokens and keys redacted.
impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("profile", &self.profile)
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("internal_auth", &self.internal_auth)
            .field("database_url", &carrier_config::RedactedUrl(&self.database_url))
            .field("kafka", &self.kafka)
            .field("consumer_group", &self.consumer_group)
            .field("max_pending_per_partition", &self.max_pending_per_partition)
            .field("drain_timeout_ms", &self.drain_timeout_ms)
            .field("handover_timeout_ms", &self.handover_timeout_ms)
            .field(
                "default_destination_timeout_ms",
                &self.default_destination_timeout_ms,
            )
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            http_addr: "127.0.0.1:8081".parse().expect("valid address"),
            grpc_addr: "127.0.0.1:50051".parse().expect("valid address"),
            internal_auth: InternalAuthSettings::default(),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            kafka: KafkaSettings::default(),
            consumer_group: "carrier-router".into(),
            max_pending_per_partition: 10_000,
            drain_timeout_ms: 15_000,
            handover_timeout_ms: 10_000,
            default_destination_timeout_ms: 10_000,
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
        if self.max_pending_per_partition == 0 {
            return Err(ConfigError::Invalid(
                "max_pending_per_partition must be at least 1".into(),
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

/// The router's bound sockets (tests bind `127.0.0.1:0`).
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            http: carrier_telemetry::bind(config.http_addr).await?,
            grpc: carrier_telemetry::bind(config.grpc_addr).await?,
        })
    }
}

/// How often the IDs of used client assertions past their expiry are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// Runs the router until `shutdown` is cancelled, then drains the fan-out and returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = config.validate()?;
    let internal_auth =
        InternalAuth::new("router", &config.internal_auth, config.profile).context("internal_auth")?;
    let readiness = carrier_telemetry::Readiness::default();
    let probes = tokio::spawn(carrier_telemetry::serve_probes(
        "router",
        listeners.http,
        readiness.clone(),
        shutdown.clone(),
    ));

    let pool = carrier_store::connect(
        "carrier-router",
        &config.database_url,
        16,
        Duration::from_secs(30),
        carrier_store::Schema::at_start(config.profile),
    )
    .await
    .context("postgres")?;
    let store = Arc::new(ConfigStore::new(
        pool.clone(),
        config.default_destination_timeout_ms,
    ));

    let grpc_service = grpc::service(store.clone());
    let grpc_shutdown = shutdown.clone();
    let grpc_addr = listeners.grpc.local_addr().context("grpc listener")?;
    let grpc_incoming = tokio_stream::wrappers::TcpListenerStream::new(listeners.grpc);
    let mut grpc_server = internal_auth.server().context("internal_auth")?;
    let grpc = tokio::spawn(async move {
        grpc_server
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(grpc_incoming, grpc_shutdown.cancelled_owned())
            .await
    });

    let purge = tokio::spawn(carrier_store::purge_every(
        "client_assertion_ids",
        PURGE_EVERY,
        shutdown.clone(),
        {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.purge_used_assertion_ids().await }
            }
        },
    ));
    let consumer = fanout::start(&config, &pool, shutdown.clone()).context("kafka")?;
    readiness.set_ready(true);
    tracing::info!(%grpc_addr, tls = internal_auth.tls_enabled(), "router ready");

    shutdown.cancelled().await;
    readiness.set_ready(false);
    consumer.await.context("fan-out consumer")?;
    purge.await.context("purge task")?;
    grpc.await.context("grpc server task")?.context("grpc server")?;
    probes
        .await
        .context("probe server task")?
        .context("probe server")?;
    tracing::info!("router stopped");
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

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn production_refuses_to_start_without_the_internal_service_token() {
        figment::Jail::expect_with(|jail| {
            let error = Config::load().unwrap_err().to_string();
            assert!(error.contains("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN"), "{error}");
            jail.set_env("CARRIER_INTERNAL_AUTH__SERVICE_TOKEN", "too-short");
            let error = Config::load().unwrap_err().to_string();
            assert!(error.contains("at least 32 bytes"), "{error}");
            jail.set_env(
                "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN",
                carrier_internal_auth::DEV_SERVICE_TOKEN,
            );
            let error = Config::load().unwrap_err().to_string();
            assert!(error.contains("public development token"), "{error}");
            jail.set_env("CARRIER_PROFILE", "dev");
            let dev = Config::load().map_err(|error| error.to_string())?;
            assert_eq!(dev.profile, Profile::Dev);
            jail.set_env(
                "CARRIER_INTERNAL_AUTH__SERVICE_TOKEN",
                "a-production-token-of-at-least-32-bytes",
            );
            jail.set_env("CARRIER_PROFILE", "production");
            let production = Config::load().map_err(|error| error.to_string())?;
            assert_eq!(
                production.internal_auth.service_token.as_deref(),
                Some("a-production-token-of-at-least-32-bytes")
            );
            Ok(())
        });
    }
}
