//! `carrierctl admin`: what an installation or an upgrade runs before the services start — the
//! database migrations (`migrate`, `schema`) and the Kafka topics (`topics ensure|check`).
//!
//! These read the services' own configuration ([`carrier_config::load`]: defaults, the TOML file
//! named by `CARRIER_CONFIG_FILE`, `CARRIER_*` variables), so the Helm chart's Job and the
//! compose file's `carrier-init` give them the same ConfigMap and Secrets as the services.

use std::process::ExitCode;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_kafka::provisioning::{Finding, Provisioner, Report, TopicSettings};
use carrier_store::SchemaStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::CtlError;
use crate::cli::{AdminCommand, TopicsCommand};
use crate::output::{self, Table};

/// What `admin` reads of the services' configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct AdminConfig {
    /// `CARRIER_DATABASE_URL`.
    database_url: Option<String>,
    /// The `[kafka]` section.
    kafka: KafkaSettings,
    /// The `[topics]` section.
    topics: TopicSettings,
}

fn load() -> Result<AdminConfig, CtlError> {
    carrier_config::load::<AdminConfig>().map_err(|error| CtlError::Usage(error.to_string()))
}

fn database_url(config: &AdminConfig) -> Result<&str, CtlError> {
    config.database_url.as_deref().ok_or_else(|| {
        CtlError::Usage("set CARRIER_DATABASE_URL (or database_url in CARRIER_CONFIG_FILE)".into())
    })
}

pub async fn run(command: AdminCommand, as_json: bool) -> Result<ExitCode, CtlError> {
    let config = load()?;
    match command {
        AdminCommand::Migrate { wait_secs } => migrate(&config, wait_secs, as_json).await,
        AdminCommand::Schema => schema(&config, as_json).await,
        AdminCommand::Topics { command } => topics(&config, command, as_json).await,
    }
}

async fn migrate(config: &AdminConfig, wait_secs: u64, as_json: bool) -> Result<ExitCode, CtlError> {
    let (before, after) = carrier_store::migrate(database_url(config)?, Duration::from_secs(wait_secs))
        .await
        .map_err(store_error)?;
    let applied: Vec<i64> = before.pending.clone();
    if as_json {
        output::json(&json!({
            "applied": applied,
            "schema": schema_json(&after),
        }));
    } else if applied.is_empty() {
        output::line(&format!(
            "schema already at version {}: nothing to migrate",
            after.expected
        ));
    } else {
        output::line(&format!(
            "applied {} migration(s) ({}); schema at version {}",
            applied.len(),
            carrier_store::list_versions(&applied),
            after.expected
        ));
    }
    Ok(ExitCode::SUCCESS)
}

async fn schema(config: &AdminConfig, as_json: bool) -> Result<ExitCode, CtlError> {
    let url = database_url(config)?;
    let pool = carrier_store::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|error| CtlError::DatabaseUnreachable(error.to_string()))?;
    let status = carrier_store::schema_status(&pool)
        .await
        .map_err(|error| CtlError::Database(format!("cannot read the schema: {error}")))?;
    if as_json {
        output::json(&schema_json(&status));
    } else {
        match status.refusal("carrierctl") {
            None if status.is_current() => {
                output::line(&format!("schema at version {}: current", status.expected))
            }
            None => output::line(&format!(
                "schema is newer than this carrierctl (version {}): migration {} unknown here, \
                 all additive (this version's services still run on it)",
                status.expected,
                carrier_store::list_versions(&status.unknown)
            )),
            Some(refusal) => output::line(&refusal),
        }
    }
    Ok(if status.is_current() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn schema_json(status: &SchemaStatus) -> serde_json::Value {
    json!({
        "expected": status.expected,
        "current": status.is_current(),
        "applied": status.applied,
        "pending": status.pending,
        "unknown": status.unknown,
        "incompatible": status.incompatible,
        "changed": status.changed,
        "failed": status.failed,
    })
}

async fn topics(config: &AdminConfig, command: TopicsCommand, as_json: bool) -> Result<ExitCode, CtlError> {
    let settings = config.topics.clone().validated().map_err(CtlError::Usage)?;
    carrier_kafka::client::validate(&config.kafka).map_err(|error| CtlError::Usage(error.to_string()))?;
    let provisioner =
        Provisioner::new(&config.kafka, settings).map_err(|error| CtlError::KafkaUnreachable {
            brokers: config.kafka.brokers.clone(),
            reason: error.to_string(),
        })?;
    let unreachable = |error: carrier_kafka::rdkafka::error::KafkaError| CtlError::KafkaUnreachable {
        brokers: config.kafka.brokers.clone(),
        reason: error.to_string(),
    };
    let (report, fails) = match command {
        TopicsCommand::Ensure => {
            let report = provisioner.ensure().await.map_err(unreachable)?;
            let fails = report.has_refusal();
            (report, fails)
        }
        TopicsCommand::Check => {
            let report = provisioner.check().await.map_err(unreachable)?;
            let fails = !report.is_clean();
            (report, fails)
        }
    };
    print_report(&report, as_json);
    Ok(if fails {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(report: &Report, as_json: bool) {
    if as_json {
        let topics: Vec<serde_json::Value> = report
            .topics
            .iter()
            .map(|(topic, findings)| {
                json!({
                    "topic": topic.name,
                    "partitions": topic.partitions,
                    "findings": findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "refused": findings.iter().any(Finding::is_refusal),
                })
            })
            .collect();
        output::json(&json!({ "topics": topics, "clean": report.is_clean() }));
        return;
    }
    let mut table = Table::new(&["topic", "partitions", "state"]);
    for (topic, findings) in &report.topics {
        let state = if findings.is_empty() {
            "as configured".to_string()
        } else {
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        table.row(vec![topic.name.clone(), topic.partitions.to_string(), state]);
    }
    output::line(&table.render());
}

fn store_error(error: carrier_store::StoreError) -> CtlError {
    match error {
        carrier_store::StoreError::Connect(source) => CtlError::DatabaseUnreachable(source.to_string()),
        other => CtlError::Database(other.to_string()),
    }
}
