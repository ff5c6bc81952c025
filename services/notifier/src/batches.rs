//! One writer task per assigned partition: events are collected into batches (up to
//! `batch_size`, or whatever arrived within `batch_wait_ms`), written in one transaction, and
//! only then are their offsets finished. A failed write is retried; nothing is skipped. The same
//! transaction updates incident state and raises alerts (`incidents`); a batch that raised any
//! wakes the alert dispatcher.
//!
//! One bad event must not hold the batch (and every destination whose events share its
//! partition): when Postgres refuses the batch's data (SQLSTATE class 22, e.g. a NUL byte in
//! text), its events are written one by one, and an event refused on its own is set aside in
//! `dead_letter_events` (counted, logged) instead of being retried forever.

use std::sync::Arc;
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::Topics;
use carrier_proto::records_v1::LogEvent;
use carrier_store::sqlx::{self, PgPool};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dispatch::Wakeup;
use crate::log_store;
use crate::metrics::metrics;
use crate::Config;

struct Batcher {
    pool: PgPool,
    topic: String,
    group: String,
    failing_after_attempts: i32,
    wakeup: Wakeup,
    batch_size: usize,
    batch_wait: Duration,
    runtime: tokio::runtime::Handle,
}

pub fn start(
    config: &Config,
    pool: PgPool,
    wakeup: Wakeup,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let options = ConsumerOptions {
        topic: Topics::new(&config.kafka).log_events,
        group_id: config.consumer_group.clone(),
        client_id: "carrier-notifier".into(),
        max_pending_per_partition: config.batch_size * 20,
        handover_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        commit_interval: Duration::from_millis(500),
    };
    let batcher = Batcher {
        pool: pool.clone(),
        topic: options.topic.clone(),
        group: options.group_id.clone(),
        failing_after_attempts: config.alerts.failing_after_attempts as i32,
        wakeup,
        batch_size: config.batch_size,
        batch_wait: Duration::from_millis(config.batch_wait_ms),
        runtime: tokio::runtime::Handle::current(),
    };
    Ok(consumer::spawn(
        &config.kafka,
        options,
        Arc::new(batcher),
        &pool,
        shutdown,
    )?)
}

impl Processor for Batcher {
    fn assign(&self, tracker: Arc<OffsetTracker>) -> Box<dyn PartitionProcessor> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.runtime.spawn(write_batches(
            Writer {
                pool: self.pool.clone(),
                topic: self.topic.clone(),
                failing_after_attempts: self.failing_after_attempts,
                wakeup: self.wakeup.clone(),
                tracker: tracker.clone(),
            },
            receiver,
            self.batch_size,
            self.batch_wait,
        ));
        Box::new(PartitionBatcher {
            sender,
            tracker,
            topic: self.topic.clone(),
            group: self.group.clone(),
        })
    }
}

/// An event on its way to the log store, with its trace (its CONSUMER span's context: the
/// batch's write links to it).
type Queued = (i64, LogEvent, carrier_telemetry::trace::Context);

struct PartitionBatcher {
    /// Unbounded, but the consumer pauses the partition past `max_pending_per_partition`.
    sender: mpsc::UnboundedSender<Queued>,
    tracker: Arc<OffsetTracker>,
    topic: String,
    group: String,
}

impl PartitionProcessor for PartitionBatcher {
    fn process(&mut self, record: Record) {
        match LogEvent::decode(record.payload.as_slice()) {
            Ok(event) => {
                // The CONSUMER span (child of the event's writer: router or delivery) ends once
                // the event is queued for its batch.
                let span = carrier_kafka::spans::process_span(&record, &self.topic, &self.group);
                span.record("carrier.log_id", event.log_id.as_str());
                let context = carrier_telemetry::trace::context_of(&span);
                if self.sender.send((record.offset, event, context)).is_err() {
                    tracing::warn!(
                        partition = record.partition,
                        "log writer stopped; event left for the next owner"
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, partition = record.partition, offset = record.offset, "undecodable log event skipped");
                self.tracker.finish(record.offset);
            }
        }
    }
}

/// What a partition's writer task writes with.
struct Writer {
    pool: PgPool,
    topic: String,
    failing_after_attempts: i32,
    wakeup: Wakeup,
    tracker: Arc<OffsetTracker>,
}

/// Postgres refused the data itself (SQLSTATE class 22: a NUL byte in text, a value out of
/// range), not the connection or the moment: retrying the same data cannot succeed.
fn refused_data(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")))
}

impl Writer {
    /// Writes `events` (`write_until_done`), timing the whole write.
    async fn write(&self, events: &[(i64, LogEvent)]) -> bool {
        let started = std::time::Instant::now();
        let written = self.write_until_done(events).await;
        if written {
            metrics()
                .write_seconds
                .with_label_values(&[] as &[&str])
                .observe(started.elapsed().as_secs_f64());
        }
        written
    }

    /// Writes `events` in one transaction: true when written (or set aside), false when the
    /// partition was released meanwhile. Retries what can succeed later; a batch whose data
    /// Postgres refuses is written one event at a time, and an event refused alone is set aside.
    async fn write_until_done(&self, events: &[(i64, LogEvent)]) -> bool {
        let released = self.tracker.released_token();
        let mut failures = 0u32;
        loop {
            let batch: Vec<&LogEvent> = events.iter().map(|(_, event)| event).collect();
            let error = match log_store::write(&self.pool, &batch, self.failing_after_attempts).await {
                Ok(raised) => {
                    if raised > 0 {
                        metrics().alerts_raised.inc_by(raised as u64);
                        self.wakeup.wake_all();
                    }
                    return true;
                }
                Err(error) => error,
            };
            if refused_data(&error) {
                if let [(offset, event)] = events {
                    return self.set_aside(*offset, event, &error).await;
                }
                tracing::warn!(%error, events = events.len(), "the log store refused a batch's data; writing its events one by one");
                for event in events {
                    if !Box::pin(self.write_until_done(std::slice::from_ref(event))).await {
                        return false;
                    }
                }
                return true;
            }
            failures += 1;
            tracing::warn!(%error, events = events.len(), failures, "writing log events failed, retrying");
            let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = released.cancelled() => return false,
            }
        }
    }

    /// Stores an event the log store refuses in `dead_letter_events` (retried until stored:
    /// its offset is finished only then).
    async fn set_aside(&self, offset: i64, event: &LogEvent, refused: &sqlx::Error) -> bool {
        let partition = self.tracker.partition();
        tracing::error!(
            error = %refused,
            log_id = %event.log_id,
            destination_id = %event.destination_id,
            partition,
            offset,
            "the log store refuses a log event; it is set aside in dead_letter_events and the partition's other events go on"
        );
        let mut failures = 0u32;
        loop {
            let stored = sqlx::query(
                "INSERT INTO dead_letter_events (topic, partition, record_offset, log_id, destination_id, event, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&self.topic)
            .bind(partition)
            .bind(offset)
            .bind(clean(&event.log_id))
            .bind(clean(&event.destination_id))
            .bind(event.encode_to_vec())
            .bind(clean(&refused.to_string()))
            .execute(&self.pool)
            .await;
            match stored {
                Ok(_) => {
                    metrics().dead_letters.inc();
                    return true;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, failures, "setting a refused log event aside failed, retrying");
                    let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.tracker.released_token().cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// Text Postgres takes (the fields of a refused event may hold the very bytes it refused).
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The span of one batch written to the log store (OpenTelemetry's database conventions).
fn log_write_span(events: usize) -> tracing::Span {
    if !carrier_telemetry::trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "log write",
        otel.name = "log write",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "upsert",
        db.operation.batch.size = events,
    )
}

async fn write_batches(
    writer: Writer,
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    batch_size: usize,
    batch_wait: Duration,
) {
    let released = writer.tracker.released_token().clone();
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        let mut traces = Vec::new();
        tokio::select! {
            received = receiver.recv() => match received {
                Some((offset, event, trace)) => {
                    batch.push((offset, event));
                    traces.push(trace);
                }
                None => return,
            },
            _ = released.cancelled() => return,
        }
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some((offset, event, trace))) => {
                    batch.push((offset, event));
                    traces.push(trace);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let _activity = writer.tracker.activity();
        // One span for the batch's write, linked to each event's trace (a batch mixes many).
        let span = log_write_span(batch.len());
        for trace in &traces {
            carrier_telemetry::trace::add_link(&span, trace);
        }
        drop(traces);
        if !writer.write(&batch).instrument(span).await {
            return;
        }
        for (offset, _) in &batch {
            writer.tracker.finish(*offset);
        }
    }
}
