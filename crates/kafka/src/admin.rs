//! Topic creation. Production clusters usually create topics through their own tooling with
//! RF=3 and `min.insync.replicas=2`; this is for development, tests and first start-up.

use std::time::Duration;

use carrier_config::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;

use crate::client::{self, Role};

/// Creates each `(name, partitions)` topic that does not exist yet; existing ones are left as
/// they are (a partition count is never changed: see the deliveries topic's note in the README).
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
    let admin = admin_client(settings)?;
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

/// An admin client of the cluster `settings` names (topic creation and checks).
pub fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    client::builder(settings, Role::Admin).create()
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
    RecordReader::new(settings)?
        .read(topic, partition, offset, timeout)
        .await
}

/// Reads single records by position, without joining a group: one connection for many reads
/// (a bulk retry reads hundreds of messages back; a consumer per read would pay the connection
/// set-up each time).
pub struct RecordReader {
    consumer: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    /// One read at a time: each read replaces the consumer's assignment, so two at once would
    /// take each other's position away and both wait out their timeout. An async lock, taken
    /// before the blocking thread: a read waiting its turn holds no thread of the blocking pool.
    reading: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl RecordReader {
    pub fn new(settings: &KafkaSettings) -> Result<RecordReader, KafkaError> {
        let consumer = client::builder(settings, Role::Consumer)
            .set("group.id", "carrier-fetch-one")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
            .set("fetch.message.max.bytes", crate::MAX_RECORD_BYTES.to_string())
            .create()?;
        Ok(RecordReader {
            consumer: std::sync::Arc::new(consumer),
            reading: std::sync::Arc::default(),
        })
    }

    /// The record at `offset` of `topic`/`partition`. `None` when it no longer exists
    /// (retention) or did not arrive within `timeout`.
    pub async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, KafkaError> {
        let found = self
            .read_with(topic, partition, offset, timeout, |message| {
                message.payload().unwrap_or_default().to_vec()
            })
            .await?;
        Ok(match found {
            ReadAt::Found(payload) => Some(payload),
            ReadAt::Absent | ReadAt::Unknown => None,
        })
    }

    /// What is at `offset`, seen through `view`. Each read assigns the consumer to that one
    /// position anew (librdkafka discards what it fetched for an earlier assignment).
    pub async fn read_with<T: Send + 'static>(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
        view: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T + Send + 'static,
    ) -> Result<ReadAt<T>, KafkaError> {
        use rdkafka::{Offset, TopicPartitionList};

        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        let consumer = self.consumer.clone();
        // Waiting for the turn counts against the timeout too.
        let started = std::time::Instant::now();
        let Ok(one_at_a_time) = tokio::time::timeout(timeout, self.reading.clone().lock_owned()).await else {
            return Ok(ReadAt::Unknown);
        };
        let timeout = timeout.saturating_sub(started.elapsed());
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = one_at_a_time;
            let _assigned = Assigned::to(&consumer, &assignment)?;
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) if message.topic() != topic || message.partition() != partition => {}
                    Some(Ok(message)) if message.offset() == offset => {
                        return Ok(ReadAt::Found(view(&message)))
                    }
                    Some(Ok(message)) if message.offset() > offset => return Ok(ReadAt::Absent),
                    Some(Ok(_)) | None => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, offset, "fetching one record failed");
                        return Ok(ReadAt::Unknown);
                    }
                }
            }
            Ok(ReadAt::Unknown)
        })
        .await
        .unwrap_or(Ok(ReadAt::Unknown))
    }
}

impl RecordReader {
    /// Whether `offset` lies within what `topic`/`partition` retains (its earliest offset up to
    /// its end): tells a record lost to retention from one that could not be read in time.
    pub async fn retains(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<bool, KafkaError> {
        use rdkafka::consumer::Consumer;
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            Ok((low..high).contains(&offset))
        })
        .await
        .unwrap_or(Ok(true))
    }

    /// The records of `topic`/`partition` from `from` (or the partition's earliest, if later)
    /// up to `to` (exclusive), seen through `view`, in offset order; what arrived by `timeout`
    /// if not all of them did.
    pub async fn read_range<T: Send + 'static>(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        timeout: Duration,
        view: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T + Send + 'static,
    ) -> Result<Vec<T>, KafkaError> {
        use rdkafka::consumer::Consumer;
        use rdkafka::{Offset, TopicPartitionList};

        let consumer = self.consumer.clone();
        let one_at_a_time = self.reading.clone().lock_owned().await;
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = one_at_a_time;
            let (low, _) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            let from = from.max(low);
            let mut found = Vec::new();
            if from >= to {
                return Ok(found);
            }
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(&topic, partition, Offset::Offset(from))?;
            let _assigned = Assigned::to(&consumer, &assignment)?;
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) if message.topic() != topic || message.partition() != partition => {}
                    Some(Ok(message)) if message.offset() >= to => break,
                    Some(Ok(message)) if message.offset() >= from => {
                        found.push(view(&message));
                        if message.offset() + 1 >= to {
                            break;
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, from, to, "fetching a range of records failed");
                        break;
                    }
                }
            }
            Ok(found)
        })
        .await
        .unwrap_or(Ok(Vec::new()))
    }
}

/// A reader's assignment for one read, dropped when the read ends: an assignment left in place
/// would have librdkafka fetch that partition every `fetch_wait_max_ms` until the next read,
/// forever (against Tansu, a third of an idle broker's CPU).
struct Assigned<'a>(&'a rdkafka::consumer::BaseConsumer);

impl<'a> Assigned<'a> {
    fn to(
        consumer: &'a rdkafka::consumer::BaseConsumer,
        assignment: &rdkafka::TopicPartitionList,
    ) -> Result<Self, KafkaError> {
        use rdkafka::consumer::Consumer;
        consumer.assign(assignment)?;
        Ok(Self(consumer))
    }
}

impl Drop for Assigned<'_> {
    fn drop(&mut self) {
        use rdkafka::consumer::Consumer;
        if let Err(error) = self.0.unassign() {
            tracing::debug!(%error, "unassigning a reader failed");
        }
    }
}

/// The outcome of reading one position.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAt<T> {
    Found(T),
    /// The partition goes on past the position, without a record at it.
    Absent,
    /// Nothing arrived in time, or the fetch failed (out of range included).
    Unknown,
}

/// Why the brokers could not be reached: the request's error and, when librdkafka reported
/// one, its reason (e.g. `SSL handshake failed: ... certificate verify failed`).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.reason.as_deref().map(str::to_string).unwrap_or_else(|| self.error.to_string()))]
pub struct ConnectionError {
    #[source]
    pub error: KafkaError,
    /// librdkafka's last reported error for the client.
    pub reason: Option<String>,
}

/// Asks the cluster for its metadata through the connection `settings` describe (TLS, SASL):
/// the number of brokers it has, or why it could not be reached within `timeout`.
pub async fn check_connection(settings: &KafkaSettings, timeout: Duration) -> Result<usize, ConnectionError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let context = client::LastError::default();
    let consumer: BaseConsumer<client::LastError> = client::builder(settings, Role::Admin)
        .create_with_context(context.clone())
        .map_err(|error| ConnectionError { error, reason: None })?;
    let answer = tokio::task::spawn_blocking(move || {
        // librdkafka's log lines (where it says why a connection failed) reach the context
        // only while its queue is polled: poll beside the blocking metadata request.
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = consumer.poll(Duration::from_millis(20));
                }
            });
            let answer = consumer
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len());
            if answer.is_err() {
                // The failure's log line may still be queued.
                let _ = consumer.poll(Duration::from_millis(200));
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            answer
        })
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled));
    answer.map_err(|error| ConnectionError {
        error,
        reason: context.last(),
    })
}

/// The number of partitions of `topic`.
pub async fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<usize, KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client::builder(settings, Role::Admin).create()?;
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

#[cfg(test)]
mod tests {
    //! Against the real broker of the tests (`CARRIER_TEST_BROKERS`, as `make test` sets).

    use super::*;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// New owners of several partitions check their anchors at once through one reader: each
    /// read must find its record (they used to replace each other's assignment and time out).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reads_through_one_reader_each_find_their_record() {
        let brokers = std::env::var("CARRIER_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
        let settings = KafkaSettings {
            brokers,
            ..Default::default()
        };
        let topic = format!("reader-{}", uuid::Uuid::new_v4().simple());
        ensure_topics(&settings, &[(&topic, 4)]).await.unwrap();
        let producer: FutureProducer = client::builder(&settings, Role::Producer).create().unwrap();
        for partition in 0..4 {
            for n in 0..3 {
                let payload = format!("p{partition}-{n}");
                producer
                    .send(
                        FutureRecord::<(), _>::to(&topic)
                            .payload(&payload)
                            .partition(partition),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
        }
        let reader = std::sync::Arc::new(RecordReader::new(&settings).unwrap());
        let mut reads = tokio::task::JoinSet::new();
        for partition in 0..4 {
            let (reader, topic) = (reader.clone(), topic.clone());
            reads.spawn(async move {
                let read = reader
                    .read(&topic, partition, 1, Duration::from_secs(10))
                    .await
                    .unwrap();
                (partition, read)
            });
        }
        for (partition, read) in reads.join_all().await {
            assert_eq!(
                read.as_deref(),
                Some(format!("p{partition}-1").as_bytes()),
                "partition {partition}"
            );
        }
        // Nothing stays assigned: the reader does not fetch between reads.
        use rdkafka::consumer::Consumer;
        assert_eq!(reader.consumer.assignment().unwrap().count(), 0);
        let range = reader
            .read_range(&topic, 0, 0, 3, Duration::from_secs(10), |message| {
                message.offset()
            })
            .await
            .unwrap();
        assert_eq!(range, vec![0, 1, 2]);
        assert_eq!(reader.consumer.assignment().unwrap().count(), 0);
    }
}
