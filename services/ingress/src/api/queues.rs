//! Operator control of a destination's queue:
//! `GET /v1/destinations/{id}/queue`, `POST /v1/destinations/{id}/{pause,resume,skip}`.
//!
//! Each request goes over gRPC to the delivery worker that owns the destination's lane
//! (`delivery_control`), which answers from the live lane and acts at once.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use carrier_proto::delivery_v1::{HeadRequest, QueueRequest, QueueState};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

fn rfc3339(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// A destination's queue, as the delivery worker that owns it sees it.
#[derive(Serialize, ToSchema)]
pub struct Queue {
    destination_id: String,
    /// Held, by a failing head or by an operator.
    paused: bool,
    /// `failing` or `operator`; `null` when not paused.
    paused_reason: Option<String>,
    #[schema(format = DateTime)]
    paused_since: Option<String>,
    /// Messages waiting for the destination, the held head included.
    depth: i64,
    /// The held head; `null` when nothing is held.
    head_log_id: Option<String>,
    /// Attempts of the held head so far; `null` when nothing is held.
    head_attempts: Option<u32>,
    /// When the held head is attempted again; `null` when no retry is scheduled.
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    /// The partition of `carrier.deliveries` the destination's tasks are in.
    partition: i32,
    /// The worker that answered from its live lane; `null` when the answer comes from the
    /// stored state.
    owner_worker_id: Option<String>,
}

impl From<&QueueState> for Queue {
    fn from(queue: &QueueState) -> Self {
        let held = !queue.head_log_id.is_empty();
        Queue {
            destination_id: queue.destination_id.clone(),
            paused: queue.paused,
            paused_reason: text(&queue.paused_reason),
            paused_since: rfc3339(queue.paused_since_ms),
            depth: queue.depth,
            head_log_id: text(&queue.head_log_id),
            head_attempts: held.then_some(queue.head_attempts),
            next_attempt_at: rfc3339(queue.next_attempt_at_ms),
            last_error: text(&queue.last_error),
            partition: queue.partition,
            owner_worker_id: text(&queue.owner_worker_id),
        }
    }
}

/// The answer of `POST /v1/destinations/{id}/skip`.
#[derive(Serialize, ToSchema)]
pub struct Skipped {
    destination_id: String,
    /// The held head that was cancelled.
    skipped_log_id: String,
}

fn admin_token(state: &AppState) -> &str {
    state.config.admin_token.as_deref().expect("validated")
}

fn queue_request(id: &str) -> QueueRequest {
    QueueRequest {
        destination_id: id.to_string(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/destinations/{id}/queue",
    operation_id = "get_destination_queue",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queue state", body = Queue),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    auth::operator(&headers, admin_token(&state))?;
    let queue = state.delivery_control.queue_state(&state.log_store, &id).await?;
    Ok(Json(Queue::from(&queue)))
}

async fn set_paused(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    paused: bool,
) -> Result<Json<Queue>, ApiError> {
    auth::operator(headers, admin_token(state))?;
    let queue = state
        .delivery_control
        .call(
            &state.log_store,
            &id,
            if paused { "Pause" } else { "Resume" },
            |mut client| {
                let request = queue_request(&id);
                async move {
                    if paused {
                        client.pause(request).await
                    } else {
                        client.resume(request).await
                    }
                }
            },
        )
        .await?;
    Ok(Json(Queue::from(&queue)))
}

#[utoipa::path(
    post,
    path = "/v1/destinations/{id}/pause",
    operation_id = "pause_destination",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Paused: the queue state", body = Queue),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    set_paused(&state, &headers, id, true).await
}

#[utoipa::path(
    post,
    path = "/v1/destinations/{id}/resume",
    operation_id = "resume_destination",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Resumed: the queue state", body = Queue),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    set_paused(&state, &headers, id, false).await
}

/// `POST /v1/destinations/{id}/skip`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SkipQuery {
    /// Skip only if this log is still the held head (409 otherwise): what a confirmation named
    /// is what gets cancelled, even if the head changed since the queue was read.
    log_id: Option<String>,
}

/// Cancels the held head of the queue. 409 when no head is held (nothing is failing or paused
/// at a message right now), or when `log_id` names another log than the head.
#[utoipa::path(
    post,
    path = "/v1/destinations/{id}/skip",
    operation_id = "skip_destination_head",
    tag = "Admin",
    params(("id" = String, Path, description = "Destination ID"), SkipQuery),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The held head was cancelled", body = Skipped),
        (status = 400, description = "A query parameter is unknown or malformed (the text names it)", body = crate::error::DataModelError),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::DataModelError),
        (status = 403, description = "Not allowed", body = crate::error::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::DataModelError),
        (status = 409, description = "Conflicts with the current state", body = crate::error::DataModelError),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::DataModelError),
        crate::openapi::EveryRouteErrors,
    )
)]
pub async fn skip(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<SkipQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Skipped>), ApiError> {
    auth::operator(&headers, admin_token(&state))?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let expected_head = query.log_id.unwrap_or_default();
    let reply = state
        .delivery_control
        .call(&state.log_store, &id, "Skip", |mut client| {
            let request = HeadRequest {
                destination_id: id.clone(),
                log_id: expected_head.clone(),
            };
            async move { client.skip(request).await }
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Skipped {
            destination_id: id,
            skipped_log_id: reply.log_id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::assert_matches_schema;

    /// What the queue routes send is what the document says they send: a queue that holds
    /// nothing (its nulls) and one held at a failing head.
    #[test]
    fn every_queue_answer_matches_its_documented_schema() {
        assert_matches_schema("Queue", &Queue::from(&QueueState::default()));
        let held = QueueState {
            destination_id: "d1".into(),
            paused: true,
            paused_reason: "failing".into(),
            paused_since_ms: 1_764_000_000_000,
            depth: 3,
            head_log_id: "l1".into(),
            head_attempts: 4,
            next_attempt_at_ms: 1_764_000_060_000,
            last_error: "HTTP 500".into(),
            partition: 2,
            owner_worker_id: "w1".into(),
            ..Default::default()
        };
        assert_matches_schema("Queue", &Queue::from(&held));
        let skipped = Skipped {
            destination_id: "d1".into(),
            skipped_log_id: "l1".into(),
        };
        assert_matches_schema("Skipped", &skipped);
    }
}
