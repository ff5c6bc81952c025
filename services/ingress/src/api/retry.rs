//! `POST /v1/logs/{id}/retry`: a new attempt on an existing log (delivered, failed, test or
//! cancelled), queued behind the destination's waiting messages; the held head of a queue is
//! attempted now instead.
//!
//! The message is read again from its delivery task in `carrier.deliveries` (the log records
//! where it is), so a retry is possible as long as that topic retains it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use carrier_proto::delivery_v1::HeadRequest;
use carrier_proto::records_v1::DeliveryTask;
use carrier_proto::ErrorKind;
use carrier_store::sqlx::Row;
use prost::Message;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/logs/{id}/retry",
    operation_id = "retry_log",
    tag = "Logs",
    params(("id" = String, Path, description = "Log ID")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new attempt is queued", body = serde_json::Value),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::openapi::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::openapi::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::openapi::DataModelError),
        (status = 503, description = "Overloaded (with Retry-After)", body = crate::openapi::DataModelError),
    )
)]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (log_id, row) = super::logs::visible_log(&state, &headers, &id).await?;
    let destination_id: Uuid = row.get("destination_id");

    let destination = destination_id.to_string();
    let queue = super::queues::queue_state(&state, &destination).await?;
    if queue.head_log_id == log_id.to_string() {
        state
            .delivery_control
            .call(&state.log_store, &destination, |mut client| {
                let request = HeadRequest {
                    destination_id: destination.clone(),
                    log_id: log_id.to_string(),
                };
                async move { client.retry_now(request).await }
            })
            .await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "log_id": id, "attempting_now": true })),
        ));
    }

    let (Some(partition), Some(offset)) = (
        row.get::<Option<i32>, _>("task_partition"),
        row.get::<Option<i64>, _>("task_offset"),
    ) else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("Log {id} is not ready for a retry yet; try again shortly"),
        ));
    };
    let payload = carrier_kafka::admin::fetch_one(
        &state.config.kafka,
        &state.topics.deliveries,
        partition,
        offset,
        Duration::from_secs(10),
    )
    .await
    .map_err(|error| {
        tracing::warn!(%error, %log_id, "reading a delivery task for a manual retry failed");
        ApiError::new(
            ErrorKind::QueueRejected,
            "The message could not be read from the queue; retry later",
        )
    })?
    .ok_or_else(|| ApiError::not_found(format!("The message of log {id} is no longer retained")))?;
    let mut task = DeliveryTask::decode(payload.as_slice())
        .map_err(|_| ApiError::internal(format!("The stored message of log {id} is unreadable")))?;
    if task.log_id != log_id.to_string() {
        return Err(ApiError::internal(format!(
            "The queue position recorded for log {id} holds another log"
        )));
    }
    task.previous_attempts = row.get::<i32, _>("attempts").max(0) as u32;
    let retry_id = Uuid::now_v7().to_string();
    task.retry_id = retry_id.clone();
    let payload = task.encode_to_vec();
    carrier_kafka::producer::send(
        &state.producer,
        &state.topics.deliveries,
        &task.destination_id,
        &payload,
        None,
        carrier_kafka::producer::WhenFull::Fail,
    )
    .await
    .map_err(|error| ApiError::new(error.kind(), "The retry could not be queued; nothing changed"))?;
    tracing::info!(%log_id, retry_id, "manual retry queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "log_id": id, "retry_id": retry_id, "attempting_now": false })),
    ))
}
