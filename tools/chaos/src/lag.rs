//! Evidence from the broker for a failed scenario: each consumer group's committed offset next
//! to the high watermark, per partition (a partition nobody reads shows a committed offset
//! that stopped). Reads offsets without joining the groups.

use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_kafka::client::Role;
use carrier_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use carrier_kafka::rdkafka::{Offset, TopicPartitionList};

use crate::stack::TOPIC_PREFIX;

/// (consumer group, topic) of each stage, with the services' default group names.
const STAGES: &[(&str, &str)] = &[
    ("carrier-router", "inbound"),
    ("carrier-delivery", "deliveries"),
    ("carrier-notifier", "log-events"),
];

/// One line per stage: `group topic: p0 committed/high, p1 ...`.
pub async fn lag_lines(kafka: &KafkaSettings) -> Vec<String> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        STAGES
            .iter()
            .map(|(group, topic)| {
                let topic = format!("{TOPIC_PREFIX}{topic}");
                match stage_lag(&kafka, group, &topic) {
                    Ok(partitions) => format!("{group} on {topic}: {}", partitions.join(", ")),
                    Err(error) => format!("{group} on {topic}: cannot read offsets: {error}"),
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn stage_lag(kafka: &KafkaSettings, group: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = carrier_kafka::client::builder(kafka, Role::Consumer)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
        partitions.add_partition(topic, partition.id());
    }
    let committed = consumer.committed_offsets(partitions, timeout)?;
    let mut lines = Vec::new();
    for element in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(topic, element.partition(), timeout)?;
        let committed = match element.offset() {
            Offset::Offset(offset) => offset.to_string(),
            _ => "none".into(),
        };
        lines.push(format!("p{} {committed}/{high}", element.partition()));
    }
    Ok(lines)
}
