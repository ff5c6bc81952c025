//! A consumer-group member that commits only finished work. See `design.md` beside this file.
//!
//! One blocking thread owns the librdkafka consumer: it polls, hands each record to the
//! [`PartitionProcessor`] of its partition, pauses partitions that have too much unfinished work,
//! commits what is finished, and on a revoke waits (bounded) for in-flight work before releasing
//! the partition. Processors do the actual work on the tokio runtime and report each finished
//! offset to the partition's [`OffsetTracker`].

mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

pub use tracker::{ActivityGuard, OffsetTracker};

/// One record, owned, as handed to a processor.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Creates the per-partition processors of one consumer.
pub trait Processor: Send + Sync + 'static {
    /// A partition was assigned. The returned processor gets its records in offset order and
    /// lives until the partition is revoked (after the revoke's drain) or the consumer stops.
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor>;
}

/// Receives one partition's records, in order, on the consumer thread: it must not block.
/// It starts the work (e.g. spawns a task) and calls [`OffsetTracker::finish`] when the record's
/// work is final; until then the partition's committed offset stays below it.
pub trait PartitionProcessor: Send {
    fn process(&mut self, record: Record);
}

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub topic: String,
    pub group_id: String,
    pub client_id: String,
    /// Past this many unfinished records in one partition, its fetching pauses until half drain.
    pub max_pending_per_partition: usize,
    /// How long a revoked (or shut down) partition keeps working through the records it already
    /// accepted before it stops starting new work. Finishing them avoids handing the next owner
    /// records whose work was done but not committed (duplicates at a clean rebalance).
    pub handover_timeout: Duration,
    /// Then, how long it waits for work in flight before releasing the partition anyway.
    pub drain_timeout: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
}

struct Slot {
    tracker: Arc<OffsetTracker>,
    processor: Box<dyn PartitionProcessor>,
    committed: Option<i64>,
    paused: bool,
}

struct Shared {
    options: ConsumerOptions,
    processor: Arc<dyn Processor>,
    partitions: Mutex<HashMap<i32, Slot>>,
}

struct CarrierContext {
    shared: Arc<Shared>,
}

impl ClientContext for CarrierContext {}

impl ConsumerContext for CarrierContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<i32> = list
                .elements_for_topic(&self.shared.options.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            tracing::info!(topic = %self.shared.options.topic, ?partitions, "partitions revoked, draining");
            self.shared.release(consumer, &partitions);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let mut slots = self.shared.partitions.lock().expect("partitions lock");
                let mut assigned = Vec::new();
                for element in list.elements_for_topic(&self.shared.options.topic) {
                    let partition = element.partition();
                    assigned.push(partition);
                    slots.entry(partition).or_insert_with(|| {
                        let tracker = Arc::new(OffsetTracker::new(partition));
                        Slot {
                            processor: self.shared.processor.assign(tracker.clone()),
                            tracker,
                            committed: None,
                            paused: false,
                        }
                    });
                }
                tracing::info!(topic = %self.shared.options.topic, partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
    }
}

impl Shared {
    /// Stops new work on `partitions`, waits (bounded) for their in-flight work, commits what
    /// finished, and drops their processors.
    fn release(&self, consumer: &BaseConsumer<CarrierContext>, partitions: &[i32]) {
        let released: Vec<(i32, Slot)> = {
            let mut slots = self.partitions.lock().expect("partitions lock");
            partitions
                .iter()
                .filter_map(|p| slots.remove(p).map(|slot| (*p, slot)))
                .collect()
        };
        // 1. Hand-over: nothing new is dispatched (the slots are gone); accepted work goes on.
        let handover_deadline = Instant::now() + self.options.handover_timeout;
        for (partition, slot) in &released {
            if !slot.tracker.wait_drained_until(handover_deadline) {
                tracing::info!(
                    topic = %self.options.topic,
                    partition,
                    unfinished = slot.tracker.pending(),
                    "accepted records not finished within the hand-over timeout; the next owner reads them again"
                );
            }
        }
        // 2. Stop starting work; wait for what is in flight (the late-request trap).
        for (_, slot) in &released {
            slot.tracker.release();
        }
        let deadline = Instant::now() + self.options.drain_timeout;
        for (partition, slot) in &released {
            if !slot.tracker.wait_idle_until(deadline) {
                tracing::warn!(
                    topic = %self.options.topic,
                    partition,
                    in_flight = slot.tracker.active(),
                    "in-flight work did not finish within the drain timeout; releasing the partition anyway"
                );
            }
        }
        let mut list = TopicPartitionList::new();
        for (partition, slot) in &released {
            if let Some(offset) = slot.tracker.committable() {
                if slot.committed != Some(offset) {
                    let _ =
                        list.add_partition_offset(&self.options.topic, *partition, Offset::Offset(offset));
                }
            }
        }
        if list.count() > 0 {
            if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
                tracing::warn!(%error, topic = %self.options.topic, "final commit of released partitions failed; their records will be read again");
            }
        }
    }

    fn dispatch(&self, record: Record) {
        let mut slots = self.partitions.lock().expect("partitions lock");
        match slots.get_mut(&record.partition) {
            Some(slot) => {
                if slot.tracker.accept(record.offset) {
                    slot.processor.process(record);
                }
            }
            None => tracing::debug!(
                partition = record.partition,
                "record of an unassigned partition ignored"
            ),
        }
    }

    /// Pauses partitions over their cap, resumes those drained to half of it.
    fn apply_backpressure(&self, consumer: &BaseConsumer<CarrierContext>) {
        let cap = self.options.max_pending_per_partition;
        let mut slots = self.partitions.lock().expect("partitions lock");
        for (partition, slot) in slots.iter_mut() {
            let pending = slot.tracker.pending();
            let change = if !slot.paused && pending >= cap {
                Some(true)
            } else if slot.paused && pending <= cap / 2 {
                Some(false)
            } else {
                None
            };
            let Some(pause) = change else { continue };
            let mut list = TopicPartitionList::new();
            list.add_partition(&self.options.topic, *partition);
            let result = if pause {
                consumer.pause(&list)
            } else {
                consumer.resume(&list)
            };
            match result {
                Ok(()) => {
                    slot.paused = pause;
                    tracing::debug!(partition, pending, paused = pause, "partition fetching changed");
                }
                Err(error) => tracing::warn!(%error, partition, "pausing or resuming a partition failed"),
            }
        }
    }

    fn commit_finished(&self, consumer: &BaseConsumer<CarrierContext>) {
        let mut list = TopicPartitionList::new();
        let mut slots = self.partitions.lock().expect("partitions lock");
        for (partition, slot) in slots.iter_mut() {
            if let Some(offset) = slot.tracker.committable() {
                if slot.committed != Some(offset) {
                    let _ =
                        list.add_partition_offset(&self.options.topic, *partition, Offset::Offset(offset));
                    slot.committed = Some(offset);
                }
            }
        }
        drop(slots);
        if list.count() > 0 {
            if let Err(error) = consumer.commit(&list, CommitMode::Async) {
                tracing::warn!(%error, topic = %self.options.topic, "offset commit failed; will retry");
            }
        }
    }
}

/// Starts a consumer on a dedicated blocking thread. It runs until `shutdown` is cancelled, then
/// drains and commits every partition it holds and leaves the group.
pub fn spawn(
    settings: &KafkaSettings,
    options: ConsumerOptions,
    processor: Arc<dyn Processor>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let shared = Arc::new(Shared {
        options: options.clone(),
        processor,
        partitions: Mutex::new(HashMap::new()),
    });
    let consumer: BaseConsumer<CarrierContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &options.group_id)
        .set("client.id", &options.client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms / 4).max(100).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (options.drain_timeout.as_millis() as u64 * 2 + 60_000).to_string(),
        )
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("fetch.message.max.bytes", crate::MAX_RECORD_BYTES.to_string())
        // Prefetch is memory the worker holds beyond its own caps: keep it to about one
        // largest record per fetch and a few MiB queued in librdkafka.
        .set(
            "fetch.max.bytes",
            (crate::MAX_RECORD_BYTES + 1024 * 1024).to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            settings.consumer_queue_kbytes.to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create_with_context(CarrierContext {
            shared: shared.clone(),
        })?;
    consumer.subscribe(&[&options.topic])?;
    Ok(tokio::task::spawn_blocking(move || {
        poll_until_shutdown(consumer, shared, shutdown)
    }))
}

fn poll_until_shutdown(
    consumer: BaseConsumer<CarrierContext>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut last_commit = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec()).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                let record = Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(|k| k.to_vec()),
                    payload: message.payload().map(|p| p.to_vec()).unwrap_or_default(),
                    headers,
                };
                drop(message);
                shared.dispatch(record);
            }
            // A broker outage produces one error per poll; say it once every few seconds.
            Some(Err(error)) if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) => {
                tracing::warn!(%error, topic = %shared.options.topic, "consumer error");
                last_error_log = Some(Instant::now());
            }
            Some(Err(_)) => {}
        }
        shared.apply_backpressure(&consumer);
        if last_commit.elapsed() >= shared.options.commit_interval {
            shared.commit_finished(&consumer);
            last_commit = Instant::now();
        }
    }
    let partitions: Vec<i32> = shared
        .partitions
        .lock()
        .expect("partitions lock")
        .keys()
        .copied()
        .collect();
    tracing::info!(topic = %shared.options.topic, ?partitions, "consumer stopping, draining partitions");
    shared.release(&consumer, &partitions);
    consumer.unsubscribe();
}
