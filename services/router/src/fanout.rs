//! Fan-out: one inbound message becomes one delivery task per destination.
//!
//! Records of a partition are processed in offset order and their writes are issued in that
//! order on a strict producer (one request in flight, never giving up), so the tasks of one
//! destination land in `carrier.deliveries` in the order ingress accepted the messages. An inbound
//! offset is finished once all its tasks are acknowledged; a crash before that re-reads the
//! message and writes its tasks again (same log IDs, which delivery dedupes).
//!
//! The router writes no log events: the notifier creates each `queued` log from the inbound
//! message's routes itself, and delivery's events say where each task landed. One broker write
//! per log fewer (`carrier-bench records` counts them).
//!
//! A write that fails for good (the strict producer retries everything retriable forever, so
//! this is a refusal: a missing topic, an authorization error) **halts the partition**: no later
//! message of it is routed, since its tasks would land ahead of the failed one's and overtake it
//! at their destinations. The partition waits, unrouted and uncommitted, and resumes from the
//! failed message when it is assigned again (fix the cause, then restart the router).

use std::sync::Arc;
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::producer::{self, Ordering};
use carrier_kafka::rdkafka::producer::FutureProducer;
use carrier_kafka::Topics;
use carrier_proto::records_v1::{DeliveryTask, InboundMessage};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::metrics::metrics;
use crate::Config;

struct FanOut {
    producer: FutureProducer,
    topics: Topics,
    group: String,
    runtime: tokio::runtime::Handle,
}

pub fn start(
    config: &Config,
    pool: &carrier_store::sqlx::PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let topics = Topics::new(&config.kafka);
    let producer = producer::create(&config.kafka, "carrier-router", Ordering::Strict)?;
    // Its tasks wake delivery's idle partitions (Tansu only: kafka.idle_after_ms).
    carrier_kafka::doorbell::install(&config.kafka, pool);
    let options = ConsumerOptions {
        topic: topics.inbound.clone(),
        group_id: config.consumer_group.clone(),
        client_id: "carrier-router".into(),
        max_pending_per_partition: config.max_pending_per_partition,
        handover_timeout: Duration::from_millis(config.handover_timeout_ms),
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        commit_interval: Duration::from_millis(200),
    };
    let processor = Arc::new(FanOut {
        producer,
        topics,
        group: config.consumer_group.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    Ok(consumer::spawn(
        &config.kafka,
        options,
        processor,
        pool,
        shutdown,
    )?)
}

impl Processor for FanOut {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        Box::new(PartitionFanOut {
            producer: self.producer.clone(),
            topics: self.topics.clone(),
            group: self.group.clone(),
            runtime: self.runtime.clone(),
            tracker,
            halt: Arc::new(Halt::default()),
        })
    }
}

struct PartitionFanOut {
    producer: FutureProducer,
    topics: Topics,
    group: String,
    runtime: tokio::runtime::Handle,
    tracker: Arc<OffsetTracker>,
    halt: Arc<Halt>,
}

/// Set when a write of the partition failed for good: later messages are not routed.
#[derive(Default)]
struct Halt(std::sync::atomic::AtomicBool);

impl Halt {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Halts the partition (logged and counted once).
    fn set(&self, partition: i32, offset: i64, error: &dyn std::error::Error) {
        if !self.0.swap(true, std::sync::atomic::Ordering::AcqRel) {
            metrics().halted_partitions.inc();
            // The cause says which refusal it was (e.g. `Message size too large`).
            let cause = error
                .source()
                .map(|source| source.to_string())
                .unwrap_or_default();
            tracing::error!(
                %error,
                %cause,
                partition,
                offset,
                "a delivery task could not be written; routing of this partition is halted so later messages cannot overtake it (fix the cause and restart the router: it resumes from this message)"
            );
        }
    }
}

impl Drop for PartitionFanOut {
    fn drop(&mut self) {
        if self.halt.is_set() {
            metrics().halted_partitions.dec();
        }
    }
}

impl PartitionProcessor for PartitionFanOut {
    fn process(&mut self, record: Record) {
        let offset = record.offset;
        if self.halt.is_set() {
            // Left unfinished: read again, after the failed message, by the next assignment.
            return;
        }
        let message = match InboundMessage::decode(record.payload.as_slice()) {
            Ok(message) => message,
            Err(error) => {
                // Not ours (or corrupt): nothing can be delivered from it. Skipping keeps the
                // partition moving; the log line is the operator's trace of it.
                tracing::error!(%error, partition = record.partition, offset, "undecodable inbound record skipped");
                metrics().records.with_label_values(&["undecodable"]).inc();
                self.tracker.finish(offset);
                return;
            }
        };
        // The CONSUMER span (child of ingress's durable write) lasts until the message is
        // routed; the PRODUCER span of the fan-out write is current while the tasks are queued,
        // so each task record carries its context.
        let process_span = carrier_kafka::spans::process_span(&record, &self.topics.inbound, &self.group);
        process_span.record("carrier.message_id", message.message_id.as_str());
        let fanout_span = {
            let _process = process_span.enter();
            carrier_kafka::spans::send_span(&self.topics.deliveries, None)
        };
        fanout_span.record("messaging.batch.message_count", message.routes.len());
        fanout_span.record("carrier.message_id", message.message_id.as_str());
        let fanout_entered = fanout_span.enter();
        let guard = self.tracker.activity();
        let started = std::time::Instant::now();
        // Issue every task write now, in order, on this (the consumer) thread: the producer
        // queues them in call order. Waiting for acknowledgements happens in a task.
        let mut task_acks = Vec::with_capacity(message.routes.len());
        for route in &message.routes {
            let task = DeliveryTask {
                log_id: route.log_id.clone(),
                message_id: message.message_id.clone(),
                destination_id: route.destination_id.clone(),
                organization_id: message.organization_id.clone(),
                source_id: message.source_id.clone(),
                data_model: message.data_model.clone(),
                event_type: message.event_type.clone(),
                test: message.test,
                received_at_ms: message.received_at_ms,
                content_type: message.content_type.clone(),
                body: message.body.clone(),
                body_stored: message.body_stored,
                previous_attempts: 0,
                retry_id: String::new(),
                // The record's headers carry the trace context (set here only when parked).
                traceparent: String::new(),
                tracestate: String::new(),
                written_at_ms: 0,
            };
            let ack = producer::enqueue(
                &self.producer,
                &self.topics.deliveries,
                &route.destination_id,
                &task.encode_to_vec(),
            );
            if let Err(error) = &ack {
                // Refused before it was queued: the next record must not be routed either.
                self.halt.set(record.partition, offset, error);
            }
            task_acks.push(ack);
        }
        drop(fanout_entered);
        let deliveries = self.topics.deliveries.clone();
        let tracker = self.tracker.clone();
        let halt = self.halt.clone();
        let partition = record.partition;
        self.runtime.spawn(
            async move {
                let mut failed = false;
                for ack in task_acks {
                    if let Err(error) = producer::acknowledged(&deliveries, ack).await {
                        carrier_kafka::spans::record_send_error(&fanout_span, &error);
                        failed = true;
                        halt.set(partition, offset, &error);
                    }
                }
                drop(fanout_span);
                if failed {
                    // Leave the offset unfinished: the commit stays below it and the message is
                    // routed again by whoever consumes the partition next.
                    metrics().records.with_label_values(&["failed"]).inc();
                } else {
                    metrics().records.with_label_values(&["routed"]).inc();
                    metrics()
                        .write_seconds
                        .with_label_values(&[] as &[&str])
                        .observe(started.elapsed().as_secs_f64());
                    tracing::debug!(offset, routes = message.routes.len(), "message routed");
                    tracker.finish(offset);
                }
                drop(guard);
            }
            .instrument(process_span),
        );
    }
}
