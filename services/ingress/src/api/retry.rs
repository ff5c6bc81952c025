//! Manual retry.
//!
//! - `POST /v1/logs/{id}/retry`: a new attempt on an existing log (delivered, failed, test or
//!   cancelled), queued behind the destination's waiting messages; the held head of a queue is
//!   attempted now instead.
//! - `POST /v1/logs/retry?<search filters>`: the same for every log a search finds (`failed`
//!   ones unless `status` says otherwise), oldest first, one page of at most `limit` per request.
//!
//! Both go through [`requeue`]: the message is read again from its delivery task in
//! `carrier.deliveries` (the log records where it is) and produced to that topic once more,
//! keyed by destination, as a task with a `retry_id`. So a retry is possible as long as that
//! topic retains the message. Carrier keeps no second copy of bodies in Postgres: bodies are up
//! to 10 MiB, and copying every one into the log store would double what the notifier writes
//! for a rare operation. Instead the topic's retention must cover the log retention
//! (`log_retention_days` of the notifier, 30 days by default; see README "Kafka in
//! production"). A log whose message is gone answers 404 `The message of log <id> is no
//! longer retained`.
//!
//! Order: a bulk retry requeues the logs oldest first, each write acknowledged before the next
//! is sent, so each destination gets its retries in the order its messages were received.
//!
//! Cost: every retry reads the broker, so a replica runs at most `limits.max_retries_in_flight`
//! retry requests at once (503 with `Retry-After` past it), all through one shared reader
//! (`AppState::task_reader`). A bulk retry stops requeueing after `limits.bulk_retry_budget_ms`
//! and answers with what it did and a `next_cursor` to continue from.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use carrier_kafka::admin::ReadAt;
use carrier_kafka::rdkafka::Message as _;
use carrier_proto::delivery_v1::HeadRequest;
use carrier_proto::records_v1::DeliveryTask;
use carrier_proto::ErrorKind;
use carrier_store::sqlx::postgres::PgRow;
use carrier_store::sqlx::Row;
use prost::Message;
use serde::Serialize;
use tracing::Instrument as _;
use utoipa::ToSchema;
use uuid::Uuid;

use super::log_search::{Limits, LogFilter, Order};
use crate::error::ApiError;
use crate::AppState;

/// The answer of `POST /v1/logs/{id}/retry`.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    log_id: String,
    /// The new attempt's task: absent when the log is its queue's held head, attempted now.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_id: Option<String>,
    /// The log was its queue's held head: the delivery worker attempts it now instead of
    /// queueing a new task.
    attempting_now: bool,
}

/// The answer of `POST /v1/logs/retry`.
#[derive(Serialize, ToSchema)]
pub struct BulkRetried {
    /// How many logs were queued again (the length of `log_ids`).
    retried: usize,
    /// The logs queued again, oldest first.
    log_ids: Vec<String>,
    /// Logs this request could not retry, and why.
    not_retried: Vec<NotRetried>,
    /// More logs match: call again with this `cursor` to continue; `null` when done.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NotRetried {
    log_id: String,
    error: String,
}

/// How long a retry waits for its message to be read back from `carrier.deliveries`.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[utoipa::path(
    post,
    path = "/v1/logs/{id}/retry",
    operation_id = "retry_log",
    tag = "Logs",
    params(("id" = String, Path, description = "Log ID")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new attempt is queued", body = Retried),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    let (log_id, row) = super::log_access::visible_log(&state, &headers, &id).await?;
    let destination_id: Uuid = row.get("destination_id");

    let destination = destination_id.to_string();
    let queue = state
        .delivery_control
        .queue_state(&state.log_store, &destination)
        .await?;
    if queue.head_log_id == log_id.to_string() {
        state
            .delivery_control
            .call(&state.log_store, &destination, "RetryNow", |mut client| {
                let request = HeadRequest {
                    destination_id: destination.clone(),
                    log_id: log_id.to_string(),
                };
                async move { client.retry_now(request).await }
            })
            .await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(Retried {
                log_id: id,
                retry_id: None,
                attempting_now: true,
            }),
        ));
    }

    let _slot = state.gate.retry_slot()?;
    let retry_id = requeue(&state, log_id, &row).await?;
    tracing::info!(%log_id, retry_id, "manual retry queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            log_id: id,
            retry_id: Some(retry_id),
            attempting_now: false,
        }),
    ))
}

/// Queues a new attempt of the log in `row` behind its destination's waiting messages: reads its
/// delivery task back from `carrier.deliveries` and produces it again with a new `retry_id`.
/// Answers the `retry_id` once the broker has acknowledged the write.
async fn requeue(state: &AppState, log_id: Uuid, row: &PgRow) -> Result<String, ApiError> {
    let (Some(partition), Some(offset)) = (
        row.get::<Option<i32>, _>("task_partition"),
        row.get::<Option<i64>, _>("task_offset"),
    ) else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            // The log store learns where a task is from its first attempt's event: until then
            // the log is still queued, and its own turn comes without a retry.
            format!("Log {log_id} has not been attempted yet: it is still queued and will be attempted in its turn"),
        ));
    };
    let topic = &state.topics.deliveries;
    let read_failed = || {
        ApiError::new(
            ErrorKind::QueueRejected,
            "The message could not be read from the queue; retry later",
        )
    };
    let not_retained = || {
        crate::metrics::metrics()
            .manual_retry_failures
            .with_label_values(&["not_retained"])
            .inc();
        ApiError::not_found(format!("The message of log {log_id} is no longer retained"))
    };
    let found = state
        .task_reader
        .read_with(topic, partition, offset, READ_TIMEOUT, |message| {
            (
                message.payload().unwrap_or_default().to_vec(),
                trace_context_of(message),
            )
        })
        .await
        .map_err(|error| {
            tracing::warn!(%error, %log_id, "reading a delivery task for a manual retry failed");
            read_failed()
        })?;
    let (payload, original_trace) = match found {
        ReadAt::Found(found) => found,
        ReadAt::Absent => return Err(not_retained()),
        // Nothing came back: lost to retention, or the broker is slow or away (then say so,
        // instead of calling a retained message gone).
        ReadAt::Unknown => match state
            .task_reader
            .retains(topic, partition, offset, READ_TIMEOUT)
            .await
        {
            Ok(false) => return Err(not_retained()),
            Ok(true) | Err(_) => {
                crate::metrics::metrics()
                    .manual_retry_failures
                    .with_label_values(&["unreadable"])
                    .inc();
                tracing::warn!(%log_id, partition, offset, "a delivery task could not be read in time for a manual retry");
                return Err(read_failed());
            }
        },
    };
    let mut task = DeliveryTask::decode(payload.as_slice())
        .map_err(|_| ApiError::internal(format!("The stored message of log {log_id} is unreadable")))?;
    if task.log_id != log_id.to_string() {
        return Err(ApiError::internal(format!(
            "The queue position recorded for log {log_id} holds another log"
        )));
    }
    task.previous_attempts = row.get::<i32, _>("attempts").max(0) as u32;
    let retry_id = Uuid::now_v7().to_string();
    task.retry_id = retry_id.clone();
    let payload = task.encode_to_vec();
    // A manual retry is work of its own (the retry request's trace), linked to the trace of the
    // log's original delivery (README "Tracing").
    let span = carrier_kafka::spans::send_span(&state.topics.deliveries, Some(&task.destination_id));
    span.record("carrier.log_id", task.log_id.as_str());
    span.record("carrier.message_id", task.message_id.as_str());
    carrier_telemetry::trace::add_link(&span, &original_trace);
    let sent = carrier_kafka::producer::send(
        &state.producer,
        &state.topics.deliveries,
        &task.destination_id,
        &payload,
        None,
        carrier_kafka::producer::WhenFull::Fail,
    )
    .instrument(span.clone())
    .await;
    carrier_kafka::spans::record_sent(&span, &sent);
    sent.map_err(|error| {
        crate::metrics::metrics()
            .manual_retry_failures
            .with_label_values(&["queue"])
            .inc();
        ApiError::new(error.kind(), "The retry could not be queued; nothing changed")
    })?;
    Ok(retry_id)
}

/// The W3C trace context in a record's headers (empty when tracing is off).
fn trace_context_of(
    message: &carrier_kafka::rdkafka::message::BorrowedMessage<'_>,
) -> carrier_telemetry::trace::Context {
    use carrier_kafka::rdkafka::message::Headers as _;
    if !carrier_telemetry::trace::enabled() {
        return carrier_telemetry::trace::Context::new();
    }
    let Some(headers) = message.headers() else {
        return carrier_telemetry::trace::Context::new();
    };
    let pairs: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|header| (header.key.to_string(), header.value.unwrap_or_default().to_vec()))
        .collect();
    carrier_telemetry::trace::extract_from_pairs(&pairs)
}

/// Page sizes of `POST /v1/logs/retry`: each log is read back and written once more, in turn.
const BULK_LIMITS: Limits = Limits {
    default: 100,
    max: 1_000,
};

#[utoipa::path(
    post,
    path = "/v1/logs/retry",
    operation_id = "retry_logs",
    tag = "Logs",
    params(
        ("organization_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only this organization's logs (a source's token retries only its own organization's logs of its own environment anyway)"),
        ("destination_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only logs of this destination"),
        ("source_id" = Option<String>, Query, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Only logs of messages from this source"),
        ("status" = Option<String>, Query, pattern = "^(delivered|failed|cancelled)$", description = "failed (default), cancelled or delivered; queued logs are still being delivered and are refused"),
        ("data_model" = Option<String>, Query, pattern = "\\S", description = "Only this data model"),
        ("test" = Option<bool>, Query, description = "true: only test messages; false: only real ones"),
        ("since" = Option<String>, Query, format = DateTime, description = "Received at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Received before this time (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Most logs retried by this request, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "The next_cursor of the previous bulk retry, to continue after it"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "What was retried, what could not be, and where to continue", body = BulkRetried),
        (status = 400, description = "A query parameter is unknown or malformed (the text names it)", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn retry_matching(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<(StatusCode, Json<BulkRetried>), ApiError> {
    let scope = super::log_access::caller_scope(&state, &headers)?;
    let _slot = state.gate.retry_slot()?;
    let budget = Duration::from_millis(state.gate.limits().bulk_retry_budget_ms);
    let started = tokio::time::Instant::now();
    let mut filter = LogFilter::parse(query, Order::OldestFirst, BULK_LIMITS)?;
    match filter.status {
        None => filter.status = Some("failed"),
        Some("queued") => {
            return Err(ApiError::bad_request(
                "Query parameter status=queued cannot be retried in bulk: queued logs are still being \
                 delivered (a held head is retried with POST /v1/logs/{id}/retry)",
            ))
        }
        Some(_) => {}
    }
    let (rows, mut next) = filter
        .page(&state.log_store, scope.as_ref(), Order::OldestFirst)
        .await?;
    let mut retried = Vec::new();
    let mut not_retried = Vec::new();
    if !rows.is_empty() {
        for (index, row) in rows.iter().enumerate() {
            let log_id: Uuid = row.get("id");
            // Out of time: answer what was done; the caller continues after the last log seen.
            if index > 0 && started.elapsed() >= budget {
                tracing::info!(done = index, page = rows.len(), "bulk retry used its time budget");
                next = Some(super::log_search::Cursor::of_row(&rows[index - 1]));
                break;
            }
            match requeue(&state, log_id, row).await {
                Ok(_) => retried.push(log_id.to_string()),
                // This log cannot be retried; the others still can (their order is kept).
                Err(error)
                    if matches!(
                        error.kind,
                        ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal
                    ) =>
                {
                    not_retried.push(NotRetried {
                        log_id: log_id.to_string(),
                        error: error.text,
                    });
                }
                // The queue is failing: stop here, and let the caller continue from this log.
                Err(error) if retried.is_empty() && not_retried.is_empty() => return Err(error),
                Err(error) => {
                    tracing::warn!(error = %error.text, %log_id, "bulk retry stopped by a queue failure");
                    not_retried.push(NotRetried {
                        log_id: log_id.to_string(),
                        error: error.text,
                    });
                    next = (index > 0).then(|| super::log_search::Cursor::of_row(&rows[index - 1]));
                    break;
                }
            }
        }
    }
    tracing::info!(
        retried = retried.len(),
        not_retried = not_retried.len(),
        more = next.is_some(),
        "bulk retry queued"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(BulkRetried {
            retried: retried.len(),
            log_ids: retried,
            not_retried,
            next_cursor: next.map(|cursor| cursor.encode(Order::OldestFirst)),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::assert_matches_schema;

    /// What the retry routes send is what the document says they send.
    #[test]
    fn every_retry_answer_matches_its_documented_schema() {
        for (retry_id, attempting_now) in [(None, true), (Some("r1".to_string()), false)] {
            let retried = Retried {
                log_id: "l1".into(),
                retry_id,
                attempting_now,
            };
            assert_matches_schema("Retried", &retried);
        }
        let bulk = BulkRetried {
            retried: 1,
            log_ids: vec!["l1".into()],
            not_retried: vec![NotRetried {
                log_id: "l2".into(),
                error: "Log l2 has not been attempted yet".into(),
            }],
            next_cursor: None,
        };
        assert_matches_schema("BulkRetried", &bulk);
    }
}
