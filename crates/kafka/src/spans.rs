//! The spans of Kafka writes and reads, by OpenTelemetry's messaging conventions
//! (`messaging.system=kafka`, `messaging.destination.name`, `messaging.operation.type`,
//! `messaging.consumer.group.name`, partition, offset and key). A PRODUCER span is current while
//! [`crate::producer::send`] or [`crate::producer::enqueue`] runs, so its context is what the
//! record's `traceparent` header carries; a CONSUMER span is the child of that context. Tracing
//! off, both are disabled spans (`Span::none()`): nothing is recorded.

use tracing::field::Empty;
use tracing::Span;

use crate::consumer::Record;
use crate::producer::ProduceError;

/// The PRODUCER span of a write to `topic` (`send <topic>`), keyed by `key` (`None` for a
/// batch of records with several keys: record `messaging.batch.message_count` instead).
pub fn send_span(topic: &str, key: Option<&str>) -> Span {
    if !carrier_telemetry::trace::enabled() {
        return Span::none();
    }
    tracing::info_span!(
        "kafka.send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.kafka.message.key = key,
        messaging.batch.message_count = Empty,
        carrier.message_id = Empty,
        carrier.log_id = Empty,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Records where a write landed, or why it failed, on its span.
pub fn record_sent(span: &Span, result: &Result<(i32, i64), ProduceError>) {
    match result {
        Ok((partition, offset)) => {
            span.record("messaging.destination.partition.id", partition.to_string());
            span.record("messaging.kafka.offset", offset);
        }
        Err(error) => record_send_error(span, error),
    }
}

/// Marks `span` failed by `error` (`error.type`: `queue_full`, `timed_out`, `rejected`).
pub fn record_send_error(span: &Span, error: &ProduceError) {
    let kind = match error {
        ProduceError::QueueFull(_) => "queue_full",
        ProduceError::TimedOut(_) => "timed_out",
        ProduceError::Rejected(_) => "rejected",
    };
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
}

/// The CONSUMER span of processing `record` of `topic` in consumer group `group`
/// (`process <topic>`), the child of the context its producer sent.
pub fn process_span(record: &Record, topic: &str, group: &str) -> Span {
    if !carrier_telemetry::trace::enabled() {
        return Span::none();
    }
    let key = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = %format_args!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.destination.partition.id = %record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = %key,
        carrier.message_id = Empty,
        carrier.log_id = Empty,
        otel.status_code = Empty,
    );
    carrier_telemetry::trace::set_parent(&span, record.trace_context());
    span
}
