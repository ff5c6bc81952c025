//! One writer task per assigned partition: events are collected into batches (up to
//! `batch_size`, or whatever arrived within `batch_wait_ms`), written in one transaction, and
//! only then are their offsets finished. A failed write is retried; nothing is skipped. The same
//! transaction updates incident state and raises alerts (`incidents`); a batch that raised any
//! wakes the alert dispatcher.

use std::sync::Arc;
use std::time::Duration;

use carrier_kafka::consumer::{self, ConsumerOptions, OffsetTracker, PartitionProcessor, Processor, Record};
use carrier_kafka::Topics;
use carrier_proto::records_v1::LogEvent;
use carrier_store::sqlx::PgPool;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Wakeup;
use crate::log_store;
use crate::Config;

fn alerts_raised() -> &'static carrier_telemetry::prometheus::IntCounterVec {
    static METRIC: std::sync::OnceLock<carrier_telemetry::prometheus::IntCounterVec> =
        std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        carrier_telemetry::counter_vec(
            "carrier_notifier_alerts_raised_total",
            "Incident alerts raised (one failing and one recovered per incident)",
            &[],
        )
    })
}

struct Batcher {
    pool: PgPool,
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
            self.pool.clone(),
            self.failing_after_attempts,
            self.wakeup.clone(),
            tracker.clone(),
            receiver,
            self.batch_size,
            self.batch_wait,
        ));
        Box::new(PartitionBatcher { sender, tracker })
    }
}

struct PartitionBatcher {
    /// Unbounded, but the consumer pauses the partition past `max_pending_per_partition`.
    sender: mpsc::UnboundedSender<(i64, LogEvent)>,
    tracker: Arc<OffsetTracker>,
}

impl PartitionProcessor for PartitionBatcher {
    fn process(&mut self, record: Record) {
        match LogEvent::decode(record.payload.as_slice()) {
            Ok(event) => {
                if self.sender.send((record.offset, event)).is_err() {
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

async fn write_batches(
    pool: PgPool,
    failing_after_attempts: i32,
    wakeup: Wakeup,
    tracker: Arc<OffsetTracker>,
    mut receiver: mpsc::UnboundedReceiver<(i64, LogEvent)>,
    batch_size: usize,
    batch_wait: Duration,
) {
    let released = tracker.released_token().clone();
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        tokio::select! {
            received = receiver.recv() => match received {
                Some(item) => batch.push(item),
                None => return,
            },
            _ = released.cancelled() => return,
        }
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let _activity = tracker.activity();
        let mut failures = 0u32;
        loop {
            let events: Vec<&LogEvent> = batch.iter().map(|(_, event)| event).collect();
            match log_store::write(&pool, &events, failing_after_attempts).await {
                Ok(raised) => {
                    if raised > 0 {
                        alerts_raised()
                            .with_label_values::<&str>(&[])
                            .inc_by(raised as u64);
                        wakeup.wake_all();
                    }
                    break;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, events = batch.len(), failures, "writing log events failed, retrying");
                    let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = released.cancelled() => return,
                    }
                }
            }
        }
        for (offset, _) in &batch {
            tracker.finish(*offset);
        }
    }
}
