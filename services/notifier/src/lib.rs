//! The notifier: reads `carrier.log-events` and `carrier.inbound` (each accepted message's
//! routes are its queued logs), writes the log store, detects failing production destinations
//! and alerts their organizations.
//!
//! - `log_store`: merges a batch of events per log and upserts logs and attempts in one
//!   transaction. Replaying an event changes nothing (attempts are keyed by log and number;
//!   a status only moves forward by attempt number).
//! - `incidents`: in that same transaction, counts each destination's consecutive failed
//!   attempts and raises one `failing` alert per incident and one `recovered` alert when it
//!   delivers again (state in `destination_incidents`, alerts in `alerts`, one outbox row per
//!   channel in `alert_deliveries`).
//! - `batches`: the two consumers; one writer per assigned partition, collecting events into
//!   batches; offsets are finished only after their batch is committed in Postgres.
//! - `dispatch`: one task per channel sends the outbox (retried with backoff, at least once).
//! - `channels`: SMTP e-mail, Slack-compatible webhooks (under delivery's outbound policy,
//!   `carrier-outbound`), the `carrier.notifications` topic.
//! - `notification`: the JSON document every channel carries (`docs/schemas/notification.v1.json`).
//! - `retention`: the periodic purge of logs older than `log_retention_days`, in short batches.
//!
//! `log_store` and `retention` are public for the end-to-end tests and the benchmark, which
//! write and purge the store exactly as the notifier does.
#![forbid(unsafe_code)]

mod backlog;
mod batches;
pub mod channels;
mod dispatch;
mod incidents;
pub mod log_store;
mod metrics;
pub mod notification;
pub mod retention;

pub use channels::{SmtpSettings, SmtpTls};

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use carrier_config::{ConfigError, KafkaSettings, Profile};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Notifier configuration. Every field can be set as `CARRIER_<FIELD>`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `production` (default) or `dev`. Production requires a migrated schema
    /// (`carrierctl admin migrate`); dev migrates it at start.
    pub profile: Profile,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: SocketAddr,
    /// Postgres URL of the log store.
    pub database_url: String,
    /// The `[kafka]` section (`CARRIER_KAFKA__*`).
    pub kafka: KafkaSettings,
    /// Consumer group of the notifiers.
    pub consumer_group: String,
    /// Most events written in one transaction.
    pub batch_size: usize,
    /// How long a partial batch waits for more events before it is written.
    pub batch_wait_ms: u64,
    /// The longest a fetch of the notifier's consumers waits for records (their
    /// `fetch.wait.max.ms`; never below `kafka.fetch_wait_max_ms`). The log store is not on the
    /// delivery path: waiting longer than the pipeline's hops costs a log a few tens of ms and
    /// the broker far fewer fetch requests (on Tansu, which holds every fetch for its whole wait,
    /// a fetch every `kafka.fetch_wait_max_ms` per consumer while records flow).
    pub log_fetch_wait_ms: u32,
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
    /// The `[alerts]` section (`CARRIER_ALERTS__*`).
    pub alerts: AlertSettings,
    /// The `[smtp]` section (`CARRIER_SMTP__*`): the server alert e-mails go through.
    pub smtp: SmtpSettings,
    /// The `[outbound]` section (`CARRIER_OUTBOUND__*`, the same settings as delivery's): which
    /// addresses Slack webhooks may be sent to. By default only public ones; loopback and
    /// private networks must be allowed.
    pub outbound: carrier_outbound::OutboundSettings,
}

/// Never shows a secret: the database URL without its password, tokens and keys redacted.
impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("database_url", &carrier_config::RedactedUrl(&self.database_url))
            .field("kafka", &self.kafka)
            .field("consumer_group", &self.consumer_group)
            .field("batch_size", &self.batch_size)
            .field("batch_wait_ms", &self.batch_wait_ms)
            .field("log_fetch_wait_ms", &self.log_fetch_wait_ms)
            .field("log_retention_days", &self.log_retention_days)
            .field("log_purge_interval_secs", &self.log_purge_interval_secs)
            .field("log_purge_batch_size", &self.log_purge_batch_size)
            .field("alerts", &self.alerts)
            .field("smtp", &self.smtp)
            .field("outbound", &self.outbound)
            .finish()
    }
}

/// Incident detection and alert sending.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertSettings {
    /// The consecutive failed attempt (real messages at a production destination) that raises
    /// a destination's `failing` alert.
    pub failing_after_attempts: u32,
    /// How often each channel looks for due alerts when no new alert woke it.
    pub poll_interval_ms: u64,
    /// Delay before a channel retries a failed send; doubles per failure up to `retry_cap_ms`
    /// (±20 %).
    pub retry_base_ms: u64,
    /// The longest delay between retries of a failed send.
    pub retry_cap_ms: u64,
    /// The longest one send may take (SMTP conversation, webhook POST, Kafka acknowledgement).
    pub send_timeout_ms: u64,
    /// How long a notifier keeps an alert it is sending to itself; if it dies, another notifier
    /// sends the alert after this. Must exceed `send_timeout_ms`.
    pub lease_ms: u64,
    /// Backlog alerts (docs/notifications.md): the defaults of organizations that set none. A
    /// production destination whose held head is older than `backlog_after_secs`, or with more
    /// than `backlog_depth` tasks parked, raises one; 0 turns that criterion off.
    pub backlog_after_secs: u32,
    pub backlog_depth: u32,
    /// How often the queues are looked at for backlogs (one notifier replica at a time).
    pub backlog_check_interval_ms: u64,
    /// The operator's recipients of backlog alerts, besides the organization's (and the topic).
    pub operator_emails: Vec<String>,
    pub operator_slack_webhook_url: Option<String>,
}

/// The operator's Slack webhook URL carries its token: shown redacted.
impl std::fmt::Debug for AlertSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AlertSettings")
            .field("failing_after_attempts", &self.failing_after_attempts)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("retry_cap_ms", &self.retry_cap_ms)
            .field("send_timeout_ms", &self.send_timeout_ms)
            .field("lease_ms", &self.lease_ms)
            .field("backlog_after_secs", &self.backlog_after_secs)
            .field("backlog_depth", &self.backlog_depth)
            .field("backlog_check_interval_ms", &self.backlog_check_interval_ms)
            .field("operator_emails", &self.operator_emails)
            .field(
                "operator_slack_webhook_url",
                &carrier_config::RedactedOption(&self.operator_slack_webhook_url),
            )
            .finish()
    }
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            failing_after_attempts: 3,
            poll_interval_ms: 1_000,
            retry_base_ms: 1_000,
            retry_cap_ms: 300_000,
            send_timeout_ms: 10_000,
            lease_ms: 60_000,
            backlog_after_secs: 900,
            backlog_depth: 10_000,
            backlog_check_interval_ms: 30_000,
            operator_emails: Vec::new(),
            operator_slack_webhook_url: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Production,
            http_addr: "127.0.0.1:8083".parse().expect("valid address"),
            database_url: "postgres://postgres@127.0.0.1:5432/carrier".into(),
            kafka: KafkaSettings::default(),
            consumer_group: "carrier-notifier".into(),
            batch_size: 500,
            batch_wait_ms: 20,
            log_fetch_wait_ms: 100,
            alerts: AlertSettings::default(),
            smtp: SmtpSettings::default(),
            outbound: carrier_outbound::OutboundSettings::default(),
            log_retention_days: 30,
            log_purge_interval_secs: 600,
            log_purge_batch_size: 5_000,
        }
    }
}

impl Config {
    /// Loads and validates.
    pub fn load() -> Result<Self, ConfigError> {
        carrier_config::load::<Config>()?.validate()
    }

    /// Checks the configuration (called by both `load` and `run`, so a configuration built in
    /// code is checked too).
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::Invalid("batch_size must be at least 1".into()));
        }
        if self.log_fetch_wait_ms > 10_000 {
            return Err(ConfigError::Invalid(
                "log_fetch_wait_ms must be at most 10000 (a fetch waiting longer delays shutdown and hand-overs)".into(),
            ));
        }
        if self.log_purge_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "log_purge_interval_secs must be at least 1".into(),
            ));
        }
        if self.log_purge_batch_size < 1 {
            return Err(ConfigError::Invalid(
                "log_purge_batch_size must be at least 1".into(),
            ));
        }
        let alerts = &self.alerts;
        if alerts.failing_after_attempts == 0 || alerts.failing_after_attempts > i32::MAX as u32 {
            return Err(ConfigError::Invalid(
                "alerts.failing_after_attempts must be at least 1".into(),
            ));
        }
        if alerts.retry_base_ms == 0 || alerts.retry_cap_ms < alerts.retry_base_ms {
            return Err(ConfigError::Invalid(
                "alerts.retry_base_ms must be positive and at most alerts.retry_cap_ms".into(),
            ));
        }
        if alerts.poll_interval_ms == 0 || alerts.send_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "alerts.poll_interval_ms and alerts.send_timeout_ms must be positive".into(),
            ));
        }
        if alerts.backlog_check_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "alerts.backlog_check_interval_ms must be positive".into(),
            ));
        }
        if alerts.lease_ms <= alerts.send_timeout_ms + 1_000 {
            return Err(ConfigError::Invalid(
                "alerts.lease_ms must exceed alerts.send_timeout_ms by more than 1000".into(),
            ));
        }
        self.outbound.networks()?;
        carrier_kafka::client::validate(&self.kafka)?;
        self.smtp.validate()?;
        Ok(self)
    }
}

/// Runs the notifier until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let readiness = carrier_telemetry::Readiness::default();
    let probes = tokio::spawn(carrier_telemetry::serve_probes(
        "notifier",
        listener,
        readiness.clone(),
        shutdown.clone(),
    ));
    let config = config.validate()?;
    let pool = carrier_store::connect(
        "carrier-notifier",
        &config.database_url,
        8,
        Duration::from_secs(30),
        carrier_store::Schema::at_start(config.profile),
    )
    .await
    .context("postgres")?;
    let channels = channels::Channels::new(
        &config.smtp,
        &config.kafka,
        &config.outbound,
        Duration::from_millis(config.alerts.send_timeout_ms),
    )
    .context("alert channels")?;
    let wakeup = dispatch::Wakeup::default();
    let dispatchers = dispatch::start(
        pool.clone(),
        channels,
        config.alerts.clone(),
        wakeup.clone(),
        shutdown.clone(),
    );
    let consumers =
        batches::start(&config, pool.clone(), wakeup.clone(), shutdown.clone()).context("kafka consumer")?;
    let purge = tokio::spawn(retention::run(
        pool.clone(),
        retention::RetentionSettings {
            retention_days: config.log_retention_days,
            interval: Duration::from_secs(config.log_purge_interval_secs),
            batch_size: config.log_purge_batch_size,
        },
        shutdown.clone(),
    ));
    let backlog = tokio::spawn(backlog::run(
        pool,
        config.alerts.clone(),
        wakeup.clone(),
        shutdown.clone(),
    ));
    readiness.set_ready(true);
    tracing::info!("notifier ready");
    shutdown.cancelled().await;
    readiness.set_ready(false);
    for consumer in consumers {
        consumer.await.context("log store consumer")?;
    }
    for dispatcher in dispatchers {
        dispatcher.await.context("alert dispatcher")?;
    }
    purge.await.context("log purge task")?;
    backlog.await.context("backlog check task")?;
    probes
        .await
        .context("probe server task")?
        .context("probe server")?;
    tracing::info!("notifier stopped");
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
            smtp: SmtpSettings {
                host: Some("smtp.example.org".into()),
                username: Some("alerts".into()),
                password: Some("smtp-s3cr3t".into()),
                ..Default::default()
            },
            kafka: carrier_config::redaction_check::kafka_with_secrets(),
            alerts: AlertSettings {
                operator_slack_webhook_url: Some(
                    "https://hooks.example.org/services/T0/B0/smtp-s3cr3t".into(),
                ),
                ..Default::default()
            },
            ..Config::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("smtp.example.org"), "{printed}");
    }

    #[test]
    fn defaults_are_valid_and_inconsistent_alert_settings_are_refused() {
        Config::default().validate().expect("defaults are valid");
        let mut config = Config::default();
        config.alerts.lease_ms = config.alerts.send_timeout_ms;
        assert!(config.validate().is_err(), "a lease shorter than a send");
        let mut config = Config::default();
        config.alerts.failing_after_attempts = 0;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.smtp.from = "not an address".into();
        assert!(config.validate().is_err());
        let smtp: SmtpSettings =
            serde_json::from_value(serde_json::json!({ "host": "mail", "tls": "none", "port": 2525 }))
                .expect("tls modes are lowercase");
        assert_eq!(smtp.tls, SmtpTls::None);
    }
}
