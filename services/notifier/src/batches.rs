//! Two consumers feed the log store: `carrier.log-events` (delivery's attempts and skips, one
//! event per record) and `carrier.inbound` (ingress's accepted messages: each route is a log
//! created `queued`, so a log is in the store before its task is routed, and no stage writes a
//! creation event to the broker of its own — one write per log fewer). [`Source`] says how a
//! record becomes events.
//!
//! One writer task per assigned partition: events are collected into batches (up to
//! `batch_size`, or whatever arrived within `batch_wait_ms`; a record's events always go into
//! one batch), written in one transaction, and only then are their offsets finished. A failed
//! write is retried; nothing is skipped. The same transaction updates incident state and raises
//! alerts (`incidents`); a batch that raised any wakes the alert dispatcher.
//!
//! One bad event must not hold the batch (and every destination whose events share its
//! partition): when Postgres refuses the batch's data (SQLSTATE class 22, e.g. a NUL byte in
//! text), its events are written one by one, and an event refused on its own is set aside in
//! `dead_letter_events` (counted, logged) instead of being retried forever.

use std::sync::Arc;
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::Topics;
use carrier_proto::records_v1::{InboundMessageHeader, LogEvent};
use carrier_store::sqlx::{self, PgPool};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dispatch::Wakeup;
use crate::log_store;
use crate::metrics::metrics;
use crate::Config;

/// Which topic a consumer reads, and so how its records become log events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `carrier.log-events`: one `LogEvent` per record.
    LogEvents,
    /// `carrier.inbound`: one `queued` creation event per route of the message.
    Inbound,
}

impl Source {
    fn events(self, payload: &[u8]) -> Result<Vec<LogEvent>, prost::DecodeError> {
        Ok(match self {
            Source::LogEvents => vec![LogEvent::decode(payload)?],
            Source::Inbound => {
                // Without the body: prost skips it rather than copying it.
                let message = InboundMessageHeader::decode(payload)?;
                message
                    .routes
                    .iter()
                    .map(|route| LogEvent::queued(&message, route))
                    .collect()
            }
        })
    }
}

struct Batcher {
    source: Source,
    pool: PgPool,
    topic: String,
    group: String,
    failing_after_attempts: i32,
    wakeup: Wakeup,
    batch_size: usize,
    batch_wait: Duration,
    runtime: tokio::runtime::Handle,
}

/// Starts both consumers; they stop with `shutdown`.
pub fn start(
    config: &Config,
    pool: PgPool,
    wakeup: Wakeup,
    shutdown: CancellationToken,
) -> anyhow::Result<[tokio::task::JoinHandle<()>; 2]> {
    let topics = Topics::new(&config.kafka);
    let mut kafka = config.kafka.clone();
    kafka.fetch_wait_max_ms = kafka.fetch_wait_max_ms.max(config.log_fetch_wait_ms);
    let start_one = |source: Source, topic: &str, group: String| -> anyhow::Result<_> {
        let options = ConsumerOptions {
            topic: topic.to_string(),
            group_id: group,
            client_id: "carrier-notifier".into(),
            max_pending_per_partition: config.batch_size * 20,
            handover_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(500),
        };
        let batcher = Batcher {
            source,
            pool: pool.clone(),
            topic: options.topic.clone(),
            group: options.group_id.clone(),
            failing_after_attempts: config.alerts.failing_after_attempts as i32,
            wakeup: wakeup.clone(),
            batch_size: config.batch_size,
            batch_wait: Duration::from_millis(config.batch_wait_ms),
            runtime: tokio::runtime::Handle::current(),
        };
        Ok(consumer::spawn(
            &kafka,
            options,
            Arc::new(batcher),
            &pool,
            shutdown.clone(),
        )?)
    };
    Ok([
        start_one(
            Source::LogEvents,
            &topics.log_events,
            config.consumer_group.clone(),
        )?,
        start_one(
            Source::Inbound,
            &topics.inbound,
            inbound_group(&config.consumer_group),
        )?,
    ])
}

/// The consumer group reading `carrier.inbound` for queued logs: its own, next to the router's,
/// since both read every inbound record.
pub fn inbound_group(consumer_group: &str) -> String {
    format!("{consumer_group}-inbound")
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
            source: self.source,
            sender,
            tracker,
            topic: self.topic.clone(),
            group: self.group.clone(),
        })
    }
}

/// A record's events on their way to the log store, with its offset and its trace (its CONSUMER
/// span's context: the batch's write links to it).
type Queued = (i64, Vec<LogEvent>, carrier_telemetry::trace::Context);

struct PartitionBatcher {
    source: Source,
    /// Unbounded, but the consumer pauses the partition past `max_pending_per_partition`.
    sender: mpsc::UnboundedSender<Queued>,
    tracker: Arc<OffsetTracker>,
    topic: String,
    group: String,
}

impl PartitionProcessor for PartitionBatcher {
    fn process(&mut self, record: Record) {
        match self.source.events(record.payload.as_slice()) {
            Ok(events) if events.is_empty() => self.tracker.finish(record.offset),
            Ok(events) => {
                // The CONSUMER span (child of the record's writer: ingress or delivery) ends once
                // the events are queued for their batch.
                let span = carrier_kafka::spans::process_span(&record, &self.topic, &self.group);
                if let [event] = events.as_slice() {
                    span.record("carrier.log_id", event.log_id.as_str());
                }
                let context = carrier_telemetry::trace::context_of(&span);
                if self.sender.send((record.offset, events, context)).is_err() {
                    tracing::warn!(
                        partition = record.partition,
                        "log writer stopped; event left for the next owner"
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, topic = %self.topic, partition = record.partition, offset = record.offset, "undecodable record skipped by the log store");
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

/// The records taken into a batch so far.
#[derive(Default)]
struct Pending {
    events: Vec<(i64, LogEvent)>,
    offsets: Vec<i64>,
    traces: Vec<carrier_telemetry::trace::Context>,
}

impl Pending {
    fn take(&mut self, (offset, events, trace): Queued) {
        self.events
            .extend(events.into_iter().map(|event| (offset, event)));
        self.offsets.push(offset);
        self.traces.push(trace);
    }
}

async fn write_batches(
    writer: Writer,
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    batch_size: usize,
    batch_wait: Duration,
) {
    let released = writer.tracker.released_token().clone();
    loop {
        let mut batch = Pending::default();
        tokio::select! {
            received = receiver.recv() => match received {
                Some(queued) => batch.take(queued),
                None => return,
            },
            _ = released.cancelled() => return,
        }
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.events.len() < batch_size {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(queued)) => batch.take(queued),
                Ok(None) | Err(_) => break,
            }
        }
        let _activity = writer.tracker.activity();
        // One span for the batch's write, linked to each record's trace (a batch mixes many).
        let span = log_write_span(batch.events.len());
        for trace in &batch.traces {
            carrier_telemetry::trace::add_link(&span, trace);
        }
        if !writer.write(&batch.events).instrument(span).await {
            return;
        }
        for offset in batch.offsets {
            writer.tracker.finish(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carrier_proto::records_v1::{InboundMessage, LogStatus, Route};

    fn inbound(routes: &[(&str, &str)]) -> InboundMessage {
        InboundMessage {
            message_id: "m-1".into(),
            received_at_ms: 1_700_000_000_000,
            organization_id: "o-1".into(),
            source_id: "s-1".into(),
            environment: "production".into(),
            data_model: "Results".into(),
            event_type: "New".into(),
            test: true,
            body: b"{}".to_vec(),
            routes: routes
                .iter()
                .map(|(log_id, destination_id)| Route {
                    log_id: log_id.to_string(),
                    destination_id: destination_id.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_inbound_message_is_one_queued_log_per_route() {
        let message = inbound(&[("l-1", "d-1"), ("l-2", "d-2")]);
        let events = Source::Inbound.events(&message.encode_to_vec()).expect("decodes");
        assert_eq!(events.len(), 2);
        for (event, (log_id, destination_id)) in events.iter().zip([("l-1", "d-1"), ("l-2", "d-2")]) {
            assert_eq!(
                (event.log_id.as_str(), event.destination_id.as_str()),
                (log_id, destination_id)
            );
            assert_eq!(event.status, LogStatus::Queued as i32);
            assert_eq!(event.message_id, "m-1");
            assert_eq!(
                (event.organization_id.as_str(), event.source_id.as_str()),
                ("o-1", "s-1")
            );
            assert_eq!(
                (event.data_model.as_str(), event.event_type.as_str()),
                ("Results", "New")
            );
            assert_eq!(event.environment, "production");
            assert!(event.test);
            assert_eq!(
                (event.received_at_ms, event.at_ms),
                (1_700_000_000_000, 1_700_000_000_000)
            );
            assert_eq!(
                (event.attempt.clone(), event.sequence),
                (None, 0),
                "a creation, below every attempt"
            );
            assert_eq!(
                (event.task_partition, event.task_offset),
                (None, None),
                "delivery's events say where the task is"
            );
        }
    }

    #[test]
    fn a_message_without_routes_is_no_log_and_a_log_event_is_itself() {
        assert!(Source::Inbound
            .events(&inbound(&[]).encode_to_vec())
            .expect("decodes")
            .is_empty());
        let event = LogEvent::queued(&InboundMessageHeader::default(), &Route::default());
        assert_eq!(
            Source::LogEvents.events(&event.encode_to_vec()).expect("decodes"),
            vec![event]
        );
        assert!(
            Source::Inbound.events(b"\xff\xff\xff").is_err(),
            "not a record of ours"
        );
        assert!(Source::LogEvents.events(b"\xff\xff\xff").is_err());
    }
}
