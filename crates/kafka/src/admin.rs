//! Topic creation. Production clusters usually create topics through their own tooling with
//! RF=3 and `min.insync.replicas=2`; this is for development, tests and first start-up.

use std::time::Duration;

use carrier_config::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates each `(name, partitions)` topic that does not exist yet; existing ones are left as
/// they are (a partition count is never changed: see the deliveries topic's note in the README).
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "topic could not be created");
                })
            }
        }
    }
    Ok(())
}

/// Reads the record at `offset` of `topic`/`partition`, without joining a group. `None` when it
/// no longer exists (retention) or did not arrive within `timeout`.
pub async fn fetch_one(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", "carrier-fetch-one")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("fetch.message.max.bytes", crate::MAX_RECORD_BYTES.to_string())
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.offset() == offset => {
                    return Ok(Some(message.payload().unwrap_or_default().to_vec()))
                }
                Some(Ok(message)) if message.offset() > offset => return Ok(None),
                Some(Ok(_)) | None => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, offset, "fetching one record failed");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    })
    .await
    .unwrap_or(Ok(None))
}

/// The number of partitions of `topic`.
pub async fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<usize, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0))
    })
    .await
    .unwrap_or(Ok(0))
}
