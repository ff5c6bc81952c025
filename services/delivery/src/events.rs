//! Log events: one per attempt (and one per operator skip), written to `carrier.log-events`
//! (keyed by destination). Each says where its task is in `carrier.deliveries` (`TaskPosition`):
//! that is how the log store learns it, for a manual retry to read the message again. (The
//! router used to write a `queued` event per task for this; the notifier now creates queued
//! logs from `carrier.inbound` itself: one broker write fewer per log.)

use carrier_config::KafkaSettings;
use carrier_kafka::producer::{self, Ordering, ProduceError};
use carrier_kafka::rdkafka::producer::FutureProducer;
use carrier_kafka::Topics;
use carrier_proto::records_v1::{Attempt, AttemptOutcome, DeliveryTask, LogEvent, LogStatus};
use prost::Message;

use crate::attempt::AttemptResult;

/// Where a task was read: its `carrier.deliveries` partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskPosition {
    pub partition: i32,
    pub offset: i64,
}

impl TaskPosition {
    fn stamp(self, event: &mut LogEvent) {
        event.task_partition = Some(self.partition);
        event.task_offset = Some(self.offset);
    }
}

#[derive(Clone)]
pub struct LogEvents {
    /// Strict: never gives up on an event, so a finished task's event is never lost while its
    /// offset waits for it.
    producer: FutureProducer,
    topic: String,
}

impl LogEvents {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(Self {
            producer: producer::create(settings, "carrier-delivery", Ordering::Strict)?,
            topic: Topics::new(settings).log_events,
        })
    }

    /// The topic the events go to (`carrier.log-events`).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The head was skipped by an operator: the log is cancelled without another attempt.
    /// `sequence` is above every attempt number of the log, so the status moves forward.
    pub async fn skipped(
        &self,
        task: &DeliveryTask,
        position: TaskPosition,
        environment: &str,
        sequence: u32,
    ) -> Result<(), ProduceError> {
        let mut event = LogEvent::for_task(
            task,
            environment,
            LogStatus::Cancelled,
            chrono::Utc::now().timestamp_millis(),
        );
        event.sequence = sequence;
        position.stamp(&mut event);
        self.write(&event).await
    }

    /// Writes the event of one attempt and waits for the broker's acknowledgement.
    pub async fn attempt(
        &self,
        task: &DeliveryTask,
        position: TaskPosition,
        environment: &str,
        number: u32,
        result: &AttemptResult,
        status: LogStatus,
    ) -> Result<(), ProduceError> {
        let finished_at_ms = result.started_at_ms + result.duration.as_millis() as i64;
        let mut event = LogEvent::for_task(task, environment, status, finished_at_ms);
        position.stamp(&mut event);
        event.attempt = Some(Attempt {
            number,
            started_at_ms: result.started_at_ms,
            duration_ms: result.duration.as_millis().min(u32::MAX as u128) as u32,
            outcome: if result.success {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::Failure
            } as i32,
            status_code: u32::from(result.status_code),
            error: result.error.clone(),
            error_summary: result.error_summary.clone(),
            response_excerpt: result.response_excerpt.clone(),
        });
        self.write(&event).await
    }

    async fn write(&self, event: &LogEvent) -> Result<(), ProduceError> {
        let payload = event.encode_to_vec();
        let when_full = producer::WhenFull::Wait;
        producer::send(
            &self.producer,
            &self.topic,
            &event.destination_id,
            &payload,
            None,
            when_full,
        )
        .await?;
        Ok(())
    }
}
