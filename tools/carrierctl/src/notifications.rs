//! `carrierctl notifications tail`: prints the alerts the notifier publishes on
//! `{prefix}notifications` (schema `docs/schemas/notification.v1.json` when present) as they come.
//!
//! The consumer assigns itself every partition instead of joining a consumer group: a tail
//! must not take records away from the deployment's real consumers, leaves no group or
//! committed offsets behind, and starts at once (no rebalance to wait for). "From the end" is
//! resolved to each partition's high watermark before the tail reports itself ready on stderr,
//! so every alert published after that line is printed.
//!
//! Records are read as JSON values, not as a typed struct: the fields people need (kind,
//! destination, since, attempts, last error, head log) are printed when present, and a newer
//! schema with more fields still prints (`--json` prints each record whole).

use std::process::ExitCode;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_kafka::client::Role;
use carrier_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use carrier_kafka::rdkafka::message::Message;
use carrier_kafka::rdkafka::{Offset, TopicPartitionList};
use carrier_kafka::Topics;
use serde_json::Value;

use crate::api::CtlError;
use crate::cli::{NotificationsCommand, TailArgs};
use crate::output::{self, cell};

/// The `[kafka]` section of the deployment's configuration.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct KafkaSection {
    kafka: KafkaSettings,
}

/// Longest wait for the brokers' metadata and watermarks at start.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(command: NotificationsCommand, as_json: bool) -> Result<ExitCode, CtlError> {
    match command {
        NotificationsCommand::Tail(args) => tail(args, as_json).await,
    }
}

async fn tail(args: TailArgs, as_json: bool) -> Result<ExitCode, CtlError> {
    // The rest of the deployment's `[kafka]` section (TLS, SASL, raw properties) from the same
    // `CARRIER_CONFIG_FILE` and `CARRIER_KAFKA__*` variables (or `_FILE`s) the services read.
    let deployment: KafkaSection =
        carrier_config::load().map_err(|error| CtlError::Usage(error.to_string()))?;
    let settings = KafkaSettings {
        brokers: args.brokers.clone(),
        topic_prefix: args.topic_prefix.clone(),
        ..deployment.kafka
    };
    carrier_kafka::client::validate(&settings).map_err(|error| CtlError::Usage(error.to_string()))?;
    let topic = Topics::new(&settings).notifications;
    // Say why the brokers cannot be reached (a refused TLS handshake or login) before anything
    // else waits on them.
    carrier_kafka::admin::check_connection(&settings, METADATA_TIMEOUT)
        .await
        .map_err(|error| CtlError::KafkaUnreachable {
            brokers: settings.brokers.clone(),
            reason: error.to_string(),
        })?;
    let consumer: StreamConsumer = carrier_kafka::client::builder(&settings, Role::Consumer)
        // Required by the client, never used to join: partitions are assigned, nothing committed.
        .set("group.id", format!("carrierctl-tail-{}", uuid::Uuid::new_v4()))
        .set("client.id", "carrierctl")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set(
            "fetch.message.max.bytes",
            carrier_kafka::MAX_RECORD_BYTES.to_string(),
        )
        .create()
        .map_err(|error| CtlError::Kafka(format!("cannot create a consumer: {error}")))?;
    let from_beginning = args.from_beginning;
    let assigned_topic = topic.clone();
    // Metadata and watermark requests block: off the runtime's threads.
    let (consumer, partitions) = tokio::task::spawn_blocking(move || {
        let partitions = assign(&consumer, &settings, &assigned_topic, from_beginning)?;
        Ok::<_, CtlError>((consumer, partitions))
    })
    .await
    .map_err(|error| CtlError::Kafka(format!("assigning partitions failed: {error}")))??;
    eprintln!(
        "tailing {topic} ({partitions} partition(s)) from the {}; Ctrl-C stops",
        if from_beginning { "beginning" } else { "end" }
    );

    let mut printed = 0u64;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    while args.max.is_none_or(|max| printed < max) {
        let record = tokio::select! {
            _ = &mut shutdown => break,
            record = consumer.recv() => record,
        };
        match record {
            Ok(record) => {
                let payload = record.payload().unwrap_or_default();
                match serde_json::from_slice::<Value>(payload) {
                    Ok(alert) if as_json => output::json_line(&alert),
                    Ok(alert) => output::line(&alert_line(&alert)),
                    Err(_) => {
                        eprintln!(
                            "skipped a record that is not JSON (partition {}, offset {})",
                            record.partition(),
                            record.offset()
                        );
                        continue;
                    }
                }
                printed += 1;
            }
            // The client reconnects by itself; say what happens meanwhile.
            Err(error) => eprintln!("kafka: {error}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Assigns every partition of `topic` at its start or its current end; answers how many.
fn assign(
    consumer: &StreamConsumer,
    settings: &KafkaSettings,
    topic: &str,
    from_beginning: bool,
) -> Result<usize, CtlError> {
    let unreachable = |error: carrier_kafka::rdkafka::error::KafkaError| CtlError::KafkaUnreachable {
        brokers: settings.brokers.clone(),
        reason: error.to_string(),
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(unreachable)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic && found.error().is_none())
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .collect();
    if partitions.is_empty() {
        return Err(CtlError::Kafka(format!(
            "topic {topic} does not exist on {} (is --topic-prefix / CARRIER_KAFKA__TOPIC_PREFIX the deployment's?)",
            settings.brokers
        )));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        let offset = if from_beginning {
            Offset::Beginning
        } else {
            let (_, high) = consumer
                .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
                .map_err(unreachable)?;
            Offset::Offset(high)
        };
        assignment
            .add_partition_offset(topic, *partition, offset)
            .map_err(|error| CtlError::Kafka(error.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| CtlError::Kafka(format!("cannot assign {topic}: {error}")))?;
    Ok(partitions.len())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One alert as one line for people, with the fields it has.
fn alert_line(alert: &Value) -> String {
    let mut parts = Vec::new();
    for time in ["occurred_at", "since"] {
        if let Some(at) = alert[time].as_str() {
            parts.push(at.to_string());
            break;
        }
    }
    if let Some(kind) = alert["kind"].as_str() {
        parts.push(format!("{:<9}", kind.to_uppercase()));
    }
    let name = alert["destination_name"].as_str().filter(|name| !name.is_empty());
    match (name, alert["destination_id"].as_str()) {
        (Some(name), Some(id)) => parts.push(format!("{name} ({id})")),
        (Some(name), None) => parts.push(name.to_string()),
        (None, Some(id)) => parts.push(id.to_string()),
        (None, None) => {}
    }
    for (label, field) in [
        ("attempts", "attempts"),
        ("since", "since"),
        ("head_log", "head_log_id"),
        ("last_error", "last_error"),
    ] {
        if !alert[field].is_null() {
            let value = cell(&alert[field]);
            if value.contains(' ') {
                parts.push(format!("{label}={value:?}"));
            } else {
                parts.push(format!("{label}={value}"));
            }
        }
    }
    if parts.is_empty() {
        return alert.to_string();
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_alert_prints_its_known_fields_on_one_line() {
        let line = alert_line(&json!({
            "schema": "carrier.notification.v1",
            "kind": "failing",
            "destination_id": "d1",
            "destination_name": "ADT feed",
            "since": "2026-11-26T10:00:00.000Z",
            "occurred_at": "2026-11-26T10:00:07.000Z",
            "attempts": 3,
            "last_error": "destination answered HTTP 500",
            "head_log_id": "l1",
        }));
        assert_eq!(
            line,
            "2026-11-26T10:00:07.000Z  FAILING    ADT feed (d1)  attempts=3  since=2026-11-26T10:00:00.000Z  head_log=l1  last_error=\"destination answered HTTP 500\""
        );
    }

    #[test]
    fn records_without_the_known_fields_still_print() {
        assert_eq!(
            alert_line(&json!({"kind": "recovered", "destination_id": "d2"})),
            "RECOVERED  d2"
        );
        assert_eq!(alert_line(&json!({"other": 1})), r#"{"other":1}"#);
    }
}
