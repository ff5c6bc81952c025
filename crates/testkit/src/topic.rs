//! Reading a whole topic, as an internal team consuming Carrier's topics would.

use std::collections::HashMap;
use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_kafka::client::Role;
use carrier_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use carrier_kafka::rdkafka::message::Message;
use carrier_kafka::rdkafka::{Offset, TopicPartitionList};

/// One record: its key and value.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Every record of `topic` written so far (up to each partition's high watermark when called),
/// in partition then offset order.
pub async fn read_all(kafka: &KafkaSettings, topic: &str) -> Vec<Record> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_all_blocking(&kafka, &topic))
        .await
        .expect("topic reader")
}

fn read_all_blocking(kafka: &KafkaSettings, topic: &str) -> Vec<Record> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = carrier_kafka::client::builder(kafka, Role::Consumer)
        .set("group.id", crate::unique("carrier-test-reader-"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
        .collect();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, timeout)
            .expect("watermarks");
        if high > low {
            remaining.insert(*partition, high);
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(low))
                .expect("assignment");
        }
    }
    let mut records: Vec<(i32, i64, Record)> = Vec::new();
    if remaining.is_empty() {
        return Vec::new();
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} took over 60 s"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(high) = remaining.get(&partition).copied() else {
                    continue;
                };
                if message.offset() < high {
                    records.push((
                        partition,
                        message.offset(),
                        Record {
                            key: message.key().unwrap_or_default().to_vec(),
                            payload: message.payload().unwrap_or_default().to_vec(),
                        },
                    ));
                }
                if message.offset() + 1 >= high {
                    remaining.remove(&partition);
                }
            }
            Some(Err(error)) => tracing::debug!(%error, topic, "reading a record failed; polling again"),
            None => {}
        }
    }
    records.sort_by_key(|(partition, offset, _)| (*partition, *offset));
    records.into_iter().map(|(_, _, record)| record).collect()
}
