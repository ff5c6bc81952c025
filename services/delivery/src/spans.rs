//! Delivery's spans and the trace a task's attempts belong to.
//!
//! - `process carrier.deliveries` (CONSUMER, `carrier-kafka`'s span): a task read from its
//!   partition, the child of the router's fan-out write; it ends once the task is in its lane.
//! - `POST` (CLIENT, one per attempt): OpenTelemetry's HTTP client conventions
//!   (`http.request.method`, `url.full` without query or credentials, `server.address`,
//!   `server.port`, `http.response.status_code`, `error.type`) and Carrier's IDs. Its context
//!   goes to the receiver in `traceparent` / `tracestate`.
//! - `send carrier.log-events` (PRODUCER): an attempt's log event, under the attempt.
//! - `park` (INTERNAL): a backlog written to the parking store.
//!
//! The rule for late attempts (`trace_continue_within_ms`, 5 minutes by default): an attempt that starts within it of
//! its task's write is a child of the task's consumer span (one trace from the sender to the
//! receiver); a later one — a retry after a long hold, a parked task drained later — is the
//! root of a new trace with a span link to the task's original context, so no trace is one
//! endless span. A manual retry is a task written by ingress in the retry request's trace,
//! and that write links to the log's original trace; its attempts follow the same rule.

use std::time::Duration;

use carrier_proto::records_v1::DeliveryTask;
use carrier_telemetry::trace::{self, Context};
use tracing::field::Empty;
use tracing::Span;

/// The trace a queued task belongs to.
#[derive(Clone, Default)]
pub struct TaskTrace {
    /// The task's consumer span (or, for a parked task, the context its record carried).
    pub context: Context,
    /// When its record was written (ms since the epoch; 0 when unknown).
    pub written_at_ms: i64,
    /// The context of its latest attempt: its log events are written under it.
    pub last_attempt: Option<Context>,
}

impl TaskTrace {
    /// The trace of a task read back from the parking store (what [`TaskTrace::stamp`] kept).
    pub fn of_parked(task: &DeliveryTask) -> Self {
        Self {
            context: trace::extract_from_text(&task.traceparent, &task.tracestate),
            written_at_ms: task.written_at_ms,
            last_attempt: None,
        }
    }

    /// Keeps the trace with `task` as it is parked.
    pub fn stamp(&self, task: &mut DeliveryTask) {
        for (key, value) in trace::headers_of(&self.context) {
            match key {
                trace::TRACEPARENT => task.traceparent = value,
                trace::TRACESTATE => task.tracestate = value,
                _ => {}
            }
        }
        task.written_at_ms = self.written_at_ms;
    }

    /// What an attempt under this trace should continue: the latest attempt's context, else the
    /// task's.
    pub fn current(&self) -> &Context {
        self.last_attempt.as_ref().unwrap_or(&self.context)
    }
}

/// The CLIENT span of attempt `number` of `task`, placed by the rule above: in the task's trace
/// while the task is younger than `continue_within`.
pub fn attempt_span(task: &DeliveryTask, trace: &TaskTrace, number: u32, continue_within: Duration) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "http.client",
        otel.name = "POST",
        otel.kind = "client",
        http.request.method = "POST",
        url.full = Empty,
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        carrier.log_id = task.log_id.as_str(),
        carrier.message_id = task.message_id.as_str(),
        carrier.destination_id = task.destination_id.as_str(),
        carrier.attempt = number,
        carrier.retry_id = task.retry_id.as_str(),
    );
    let age_ms = (chrono::Utc::now().timestamp_millis() - trace.written_at_ms).max(0) as u64;
    let how = if trace.written_at_ms == 0 {
        trace::Continuation::NewTraceLinked
    } else {
        trace::continuation(Duration::from_millis(age_ms), continue_within)
    };
    trace::continue_or_link(&span, &trace.context, &how);
    span
}

/// The PRODUCER span of a log event written for `trace`'s task (under its latest attempt).
pub fn event_span(topic: &str, task: &DeliveryTask, trace: &TaskTrace) -> Span {
    let span = carrier_kafka::spans::send_span(topic, Some(&task.destination_id));
    span.record("carrier.log_id", task.log_id.as_str());
    trace::set_parent(&span, trace.current().clone());
    span
}

/// The span of parking `tasks` tasks of a partition.
pub fn park_span(partition: i32, tasks: usize) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    tracing::info_span!("park", carrier.partition = partition, carrier.tasks = tasks)
}
