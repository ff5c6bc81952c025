//! Operator control of a destination's queue:
//! `GET /v1/destinations/{id}/queue`, `POST /v1/destinations/{id}/{pause,resume,skip}`.
//!
//! Pause and skip are stored with the destination by the router (the configuration owner), and
//! the delivery worker that owns the destination reads them at send time, so they hold across
//! rebalances and restarts without ingress knowing which worker that is. The queue state comes
//! from what that worker records for held queues, and from the parking store.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use carrier_proto::config_v1::{GetByIdRequest, SetDestinationPausedRequest, SkipHeadRequest};
use carrier_proto::ErrorKind;
use carrier_store::sqlx::{self, Row};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth;
use crate::error::ApiError;
use crate::AppState;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn queue_state(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let destination = state
        .router
        .clone()
        .get_destination(GetByIdRequest { id: id.to_string() })
        .await?
        .into_inner();
    let destination_id =
        Uuid::parse_str(&destination.id).map_err(|_| ApiError::not_found("Unknown destination"))?;
    let held = sqlx::query("SELECT * FROM destination_queues WHERE destination_id = $1")
        .bind(destination_id)
        .fetch_optional(&state.log_store)
        .await?;
    let depth: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_tasks WHERE destination_id = $1")
        .bind(destination_id)
        .fetch_one(&state.log_store)
        .await?;
    let operator_since =
        DateTime::from_timestamp_millis(destination.paused_at_ms).filter(|_| destination.paused_at_ms > 0);
    let (paused_reason, paused_since) = if destination.paused_by_operator {
        (Some("operator"), operator_since.map(rfc3339))
    } else if let Some(row) = &held {
        (Some("failing"), Some(rfc3339(row.get("held_since"))))
    } else {
        (None, None)
    };
    let field = |name: &str| -> Value {
        match &held {
            None => Value::Null,
            Some(row) => match name {
                "head_log_id" => json!(row.get::<Option<Uuid>, _>(name).map(|id| id.to_string())),
                "head_attempts" => json!(row.get::<i32, _>(name)),
                "next_attempt_at" => json!(row.get::<Option<DateTime<Utc>>, _>(name).map(rfc3339)),
                _ => json!(row.get::<Option<String>, _>(name)),
            },
        }
    };
    Ok(json!({
        "destination_id": destination.id,
        "paused": paused_reason.is_some(),
        "paused_reason": paused_reason,
        "paused_since": paused_since,
        "depth": depth,
        "head_log_id": field("head_log_id"),
        "head_attempts": field("head_attempts"),
        "next_attempt_at": field("next_attempt_at"),
        "last_error": field("last_error"),
    }))
}

fn admin_token(state: &AppState) -> &str {
    state.config.admin_token.as_deref().expect("validated")
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth::operator(&headers, admin_token(&state))?;
    Ok(Json(queue_state(&state, &id).await?))
}

async fn set_paused(
    state: &AppState,
    headers: &HeaderMap,
    id: String,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    auth::operator(headers, admin_token(state))?;
    state
        .router
        .clone()
        .set_destination_paused(SetDestinationPausedRequest {
            id: id.clone(),
            paused,
        })
        .await?;
    tracing::info!(destination_id = %id, paused, "operator changed a destination's pause");
    Ok(Json(queue_state(state, &id).await?))
}

pub async fn pause(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &headers, id, true).await
}

pub async fn resume(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &headers, id, false).await
}

/// Cancels the held head of the queue. 409 when no head is held (nothing is failing or paused
/// at a message right now).
pub async fn skip(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth::operator(&headers, admin_token(&state))?;
    let queue = queue_state(&state, &id).await?;
    let Some(head) = queue["head_log_id"].as_str().map(str::to_string) else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("Destination {id} has no held message to skip"),
        ));
    };
    state
        .router
        .clone()
        .skip_head(SkipHeadRequest {
            id: id.clone(),
            log_id: head.clone(),
        })
        .await?;
    tracing::info!(destination_id = %id, log_id = %head, "operator skipped a destination's head");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "destination_id": id, "skipped_log_id": head })),
    ))
}
