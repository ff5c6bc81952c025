//! Durable producers and what their failures mean to a caller.

use std::time::Duration;

use carrier_config::KafkaSettings;
use carrier_proto::ErrorKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::client::{self, Role};

/// How a producer orders its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Up to five requests in flight per broker. Used by ingress, where each request is answered
    /// only after its own write is acknowledged, so two writes whose order matters are never in
    /// flight together.
    PerRequest,
    /// One request in flight per broker. Used where records produced back to back must land in
    /// that order (router tasks of one destination). Kafka keeps order with five in flight when
    /// it dedupes idempotent retries; Tansu does not, so a retried batch could land after a later
    /// one. One in flight keeps order on any broker; batching (`linger.ms`) keeps it fast.
    Strict,
}

/// A producer with `acks=all` (and idempotence, unless the settings turn it off).
pub fn create(
    settings: &KafkaSettings,
    client_id: &str,
    ordering: Ordering,
) -> Result<FutureProducer, KafkaError> {
    // A strict producer never gives up on a record (timeout 0 = retry until the broker takes
    // it): a record that failed while a later one landed would break the destination's order.
    //
    // A per-request producer (ingress) fails a write to a topic the cluster does not have after
    // 2 s (librdkafka's default is 30 s, which would surface as a 504 "no acknowledgement in
    // time"): the sender gets 502 "rejected" at once, and the log says which topic is missing.
    let (in_flight, message_timeout_ms, missing_topic_ms) = match ordering {
        Ordering::PerRequest => ("5", settings.message_timeout_ms, "2000"),
        Ordering::Strict => ("1", 0, "30000"),
    };
    client::builder(settings, Role::Producer)
        .set("client.id", client_id)
        .set("acks", "all")
        // Java-compatible key hashing; `partitioner::partition_for` computes the same mapping.
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", settings.enable_idempotence.to_string())
        .set("max.in.flight.requests.per.connection", in_flight)
        .set("linger.ms", settings.linger_ms.to_string())
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set(
            "message.max.bytes",
            settings.max_record_bytes.min(crate::MAX_RECORD_BYTES).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            settings.producer_queue_kbytes.to_string(),
        )
        .set("queue.buffering.max.messages", "200000")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("topic.metadata.propagation.max.ms", missing_topic_ms)
        .create()
}

/// A produce failure, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("the producer queue is full")]
    QueueFull(#[source] KafkaError),
    #[error("the broker did not acknowledge the write in time")]
    TimedOut(#[source] KafkaError),
    #[error("the broker rejected the write")]
    Rejected(#[source] KafkaError),
}

impl ProduceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProduceError::QueueFull(_) => ErrorKind::Overloaded,
            ProduceError::TimedOut(_) => ErrorKind::Timeout,
            ProduceError::Rejected(_) => ErrorKind::QueueRejected,
        }
    }
}

impl From<KafkaError> for ProduceError {
    fn from(error: KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => ProduceError::QueueFull(error),
            Some(RDKafkaErrorCode::MessageTimedOut) | Some(RDKafkaErrorCode::RequestTimedOut) => {
                ProduceError::TimedOut(error)
            }
            _ => ProduceError::Rejected(error),
        }
    }
}

/// What to do when the producer's local queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Fail at once with [`ProduceError::QueueFull`] (ingress answers 503).
    Fail,
    /// Wait for room.
    Wait,
}

/// `headers` with the W3C trace context of the current span added (`traceparent`,
/// `tracestate`), so the consumer's span continues the producer's trace; `None` stays `None`
/// when there is no context (tracing off).
fn with_trace_context(headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
    let context = carrier_telemetry::trace::current_headers();
    if context.is_empty() {
        return headers;
    }
    let mut headers = headers.unwrap_or_default();
    for (key, value) in &context {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    Some(headers)
}

/// Writes one record and waits for the broker's acknowledgement (acks=all). The record
/// carries the current span's trace context in its headers.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    when_full: WhenFull,
) -> Result<(i32, i64), ProduceError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = with_trace_context(headers) {
        record = record.headers(headers);
    }
    let queue_timeout = match when_full {
        WhenFull::Fail => rdkafka::util::Timeout::After(Duration::ZERO),
        WhenFull::Wait => rdkafka::util::Timeout::Never,
    };
    match producer.send(record, queue_timeout).await {
        Ok(delivery) => {
            crate::doorbell::ring(topic, delivery.partition);
            Ok((delivery.partition, delivery.offset))
        }
        Err((error, _message)) => Err(error.into()),
    }
}

/// Queues one record now, without waiting for its acknowledgement, so that records queued one
/// after the other keep that order. When the local queue is full it waits (briefly, in a loop)
/// for room rather than skipping ahead: call it from a blocking thread, not a tokio worker.
/// The record carries the current span's trace context in its headers.
pub fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<DeliveryFuture, ProduceError> {
    let headers = with_trace_context(None);
    let mut warned = false;
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = &headers {
            record = record.headers(headers.clone());
        }
        match producer.send_result(record) {
            Ok(future) => return Ok(future),
            Err((error, _)) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                if !warned {
                    tracing::warn!(topic, "producer queue full, waiting for room");
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

/// Waits for the acknowledgement of a record queued with [`enqueue`] to `topic`.
pub async fn acknowledged(
    topic: &str,
    queued: Result<DeliveryFuture, ProduceError>,
) -> Result<(i32, i64), ProduceError> {
    match queued?.await {
        Ok(Ok(delivery)) => {
            crate::doorbell::ring(topic, delivery.partition);
            Ok((delivery.partition, delivery.offset))
        }
        Ok(Err((error, _))) => Err(error.into()),
        Err(_cancelled) => Err(ProduceError::Rejected(KafkaError::Canceled)),
    }
}
