//! `GET /v1/logs/{id}`: one log with its attempts, from the log store.
//! The operator sees every log; a source sees only its organization's (others answer 404, so
//! a log's existence is not revealed across organizations).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use carrier_store::sqlx::postgres::PgRow;
use carrier_store::sqlx::{self, Row};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::AppState;

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The log `id` if the caller may see it: the operator sees every log, a source only its
/// organization's (others get the same 404 as a log that does not exist).
pub(crate) async fn visible_log(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Uuid, PgRow), ApiError> {
    let caller = auth::caller(
        headers,
        &state.tokens,
        state.config.admin_token.as_deref().expect("validated"),
    )?;
    let not_found = || ApiError::not_found(format!("Log {id} not found"));
    let log_id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let row = sqlx::query("SELECT * FROM logs WHERE id = $1")
        .bind(log_id)
        .fetch_optional(&state.log_store)
        .await?
        .ok_or_else(not_found)?;
    if let Caller::Source { organization_id, .. } = &caller {
        if organization_id != &row.get::<Uuid, _>("organization_id").to_string() {
            return Err(not_found());
        }
    }
    Ok((log_id, row))
}

#[utoipa::path(
    get,
    path = "/v1/logs/{id}",
    operation_id = "get_log",
    tag = "Logs",
    params(("id" = String, Path, description = "Log ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The log with its attempts", body = serde_json::Value),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::DataModelError),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::openapi::DataModelError),
    )
)]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (log_id, row) = visible_log(&state, &headers, &id).await?;
    let organization_id: Uuid = row.get("organization_id");
    let attempts = sqlx::query("SELECT * FROM attempts WHERE log_id = $1 ORDER BY number")
        .bind(log_id)
        .fetch_all(&state.log_store)
        .await?;
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|attempt| {
            json!({
                "number": attempt.get::<i32, _>("number"),
                "started_at": rfc3339(attempt.get("started_at")),
                "duration_ms": attempt.get::<i32, _>("duration_ms"),
                "outcome": attempt.get::<String, _>("outcome"),
                "status_code": attempt.get::<Option<i32>, _>("status_code"),
                "error": attempt.get::<Option<String>, _>("error"),
                "response_excerpt": attempt.get::<Option<String>, _>("response_excerpt"),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": log_id.to_string(),
        "message_id": row.get::<Uuid, _>("message_id").to_string(),
        "destination_id": row.get::<Uuid, _>("destination_id").to_string(),
        "source_id": row.get::<Uuid, _>("source_id").to_string(),
        "organization_id": organization_id.to_string(),
        "data_model": row.get::<String, _>("data_model"),
        "event_type": row.get::<String, _>("event_type"),
        "environment": row.get::<String, _>("environment"),
        "test": row.get::<bool, _>("test"),
        "status": row.get::<String, _>("status"),
        "attempt_count": row.get::<i32, _>("attempts"),
        "received_at": rfc3339(row.get("received_at")),
        "updated_at": rfc3339(row.get("updated_at")),
        "attempts": attempts,
    })))
}
